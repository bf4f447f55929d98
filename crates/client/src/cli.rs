//! Command-line arguments.

use chat_protocol::fingerprint::Fingerprint;
use clap::{Args, Parser, Subcommand};

use crate::logging::parse_log_level;

/// Server address used when `--server` is not given.
pub const DEFAULT_SERVER: &str = "127.0.0.1";
/// TCP (handshake) port used when `--tcp-port` is not given.
pub const DEFAULT_TCP_PORT: u16 = 9090;
/// UDP (chat) port used when neither `--udp-port` nor the server's grant names one.
pub const DEFAULT_UDP_PORT: u16 = 9091;

const EXIT_CODES_HELP: &str = "\
Lines typed on standard input are sent to the room, one message per line. In the chat:
  /who  /me  /msg  /topic  /away  /ignore  /history [N]  /status  /next (pair rooms)
  /help  /quit (end of input leaves too); the host also has /kick, /ban and /host

Encryption (version 3, the default): the server is pinned by its certificate's fingerprint
in ~/.local/share/chat-client/known_servers, as SSH pins hosts. On first contact a terminal
asks; otherwise pass --fingerprint SHA256:... (what `chat-server fingerprint` prints) or
--trust-new-server. A server without encryption is used in plaintext with a warning, unless
it is pinned (a downgrade) or --require-encryption is given.

Exit codes:
  0  normal end: /quit, end of input, or the room was closed
  1  any other error
  2  usage error: bad arguments, or an invalid room name or username
  3  the server refused the request (its error code and message are printed)
  4  cannot reach the server: connection refused or timed out, no reply, no answer on UDP
  5  the server is not trusted (unknown or changed certificate, --fingerprint not matching)
     or offers no encryption when it must; nothing was sent";

/// Terminal client for the chat messenger: creates, joins or pairs into a room and chats in
/// it, or lists the rooms.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
#[command(name = "chat-client", version, about, after_help = EXIT_CODES_HELP)]
pub struct Cli {
    /// Server host name or IP address; for a service of several nodes, a comma-separated
    /// list of `HOST[:TCP_PORT[:UDP_PORT]]`, tried in order: when the node in use stops
    /// answering, the client moves to the next one and keeps its membership.
    #[arg(long, global = true, value_name = "HOST", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// The other nodes of `--server`, for failover (filled from it, not a flag).
    #[arg(skip)]
    pub failover: Vec<crate::failover::Node>,
    /// TCP port of the server's handshake service.
    #[arg(long, global = true, value_name = "N", default_value_t = DEFAULT_TCP_PORT)]
    pub tcp_port: u16,
    /// UDP port of the server's chat service [default: the port the server announces, else
    /// 9091].
    #[arg(long, global = true, value_name = "N")]
    pub udp_port: Option<u16>,
    /// Diagnostics on stderr: off, error, warn, info, debug, trace, or a filter such as
    /// `chat_client=debug` [default: RUST_LOG when set, else warn].
    #[arg(long, global = true, value_name = "LEVEL", value_parser = parse_log_level)]
    pub log_level: Option<String>,
    /// Speak version 1 of the chat protocol (for the reference server): no acks, no
    /// history, no typing indicators; /who, /history and /next need version 2. The default
    /// client falls back to version 1 by itself on a version-1-only server.
    #[arg(long, global = true, conflicts_with = "v2")]
    pub v1: bool,
    /// Speak version 2 in plaintext (no TLS, datagrams not sealed): the room and token go
    /// in clear. The default is version 3, encrypted.
    #[arg(long, global = true)]
    pub v2: bool,
    /// Trust the server only if its certificate has this fingerprint (as
    /// `chat-server fingerprint` prints it); it is then remembered in known_servers. Also
    /// how to accept a server whose certificate changed, once checked.
    #[arg(long, global = true, value_name = "SHA256:HEX", value_parser = parse_fingerprint)]
    pub fingerprint: Option<Fingerprint>,
    /// Trust a server met for the first time without asking, and remember its
    /// fingerprint (a changed certificate is still refused).
    #[arg(long, global = true)]
    pub trust_new_server: bool,
    /// Send the chat over the encrypted TCP connection from the start instead of UDP (by
    /// default this happens by itself when UDP gets no answer).
    #[arg(long, global = true, conflicts_with_all = ["v1", "v2"])]
    pub tcp: bool,
    /// Refuse to continue when the server does not offer encryption (no plaintext
    /// fallback).
    #[arg(long, global = true, conflicts_with_all = ["v1", "v2"])]
    pub require_encryption: bool,
    /// In a terminal, do not ring the bell when a message names you (it is still
    /// highlighted). In the configuration file: `bell = false`.
    #[arg(long, global = true)]
    pub no_bell: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

fn parse_fingerprint(text: &str) -> Result<Fingerprint, String> {
    text.parse()
        .map_err(|error: chat_protocol::fingerprint::BadFingerprint| error.to_string())
}

/// The handshake operation to perform.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Create a room and join it as its host; the room closes when you leave.
    Create(RoomArgs),
    /// Join an existing room.
    Join(RoomArgs),
    /// Meet a random partner in a two-person room; /next finds another one.
    Pair(PairArgs),
    /// List the rooms on the server and exit.
    Rooms,
}

impl Command {
    /// The username, for every operation that joins a room.
    pub fn username(&self) -> Option<&str> {
        match self {
            Self::Create(args) | Self::Join(args) => Some(&args.name),
            Self::Pair(args) => Some(&args.name),
            Self::Rooms => None,
        }
    }
}

/// Which room, as whom.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RoomArgs {
    /// The room's name (1 to 64 bytes).
    #[arg(value_name = "ROOM")]
    pub room: String,
    /// Your username in the room (1 to 32 bytes, unique in the room).
    #[arg(long, value_name = "NAME")]
    pub name: String,
    /// On create: makes the room private. On join: the room's password (asked for when
    /// needed and missing, if standard input is a terminal).
    #[arg(long, value_name = "PW")]
    pub password: Option<Password>,
}

/// As whom to pair.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct PairArgs {
    /// Your username (1 to 32 bytes).
    #[arg(long, value_name = "NAME")]
    pub name: String,
}

/// A room password; its `Debug` form hides it so that it never reaches a log.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// The password itself, for the handshake request only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl From<String> for Password {
    fn from(password: String) -> Self {
        Self(password)
    }
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_contract_ports() {
        let cli = Cli::try_parse_from(["chat-client", "join", "lobby", "--name", "bob"]).unwrap();
        assert_eq!(cli.server, "127.0.0.1");
        assert_eq!(cli.tcp_port, 9090);
        assert_eq!(cli.udp_port, None);
        assert_eq!(cli.log_level, None);
        assert_eq!(
            cli.command,
            Command::Join(RoomArgs {
                room: "lobby".into(),
                name: "bob".into(),
                password: None,
            })
        );
        assert!(!cli.v1);
        assert!(!cli.v2 && !cli.tcp && !cli.trust_new_server && !cli.require_encryption);
        assert_eq!(cli.fingerprint, None);
    }

    #[test]
    fn encryption_flags_parse_and_conflict_with_plaintext() {
        let print = format!("SHA256:{}", "ab".repeat(32));
        let cli = Cli::try_parse_from([
            "chat-client",
            "--fingerprint",
            &print,
            "--tcp",
            "--require-encryption",
            "--trust-new-server",
            "join",
            "lobby",
            "--name",
            "bob",
        ])
        .unwrap();
        assert_eq!(cli.fingerprint.map(|f| f.to_string()), Some(print));
        assert!(cli.tcp && cli.require_encryption && cli.trust_new_server);
        let bad = Cli::try_parse_from(["chat-client", "--fingerprint", "MD5:00", "rooms"]);
        assert_eq!(bad.unwrap_err().exit_code(), 2);
        for conflict in [
            ["--v1", "--v2"],
            ["--v2", "--require-encryption"],
            ["--v1", "--tcp"],
        ] {
            let mut args = vec!["chat-client"];
            args.extend(conflict);
            args.push("rooms");
            assert!(Cli::try_parse_from(args).is_err(), "{conflict:?}");
        }
        let help = Cli::try_parse_from(["chat-client", "--help"])
            .unwrap_err()
            .to_string();
        for flag in [
            "--fingerprint",
            "--trust-new-server",
            "--tcp",
            "--v2",
            "--require-encryption",
            "/status",
        ] {
            assert!(help.contains(flag), "{flag}: {help}");
        }
    }

    #[test]
    fn pair_rooms_and_v1_parse() {
        let cli = Cli::try_parse_from(["chat-client", "--v1", "pair", "--name", "bob"]).unwrap();
        assert!(cli.v1);
        assert_eq!(cli.command.username(), Some("bob"));
        assert!(!matches!(
            cli.command,
            Command::Create(_) | Command::Join(_)
        ));
        let cli = Cli::try_parse_from(["chat-client", "rooms", "--v1"]).unwrap();
        assert_eq!(cli.command, Command::Rooms);
        assert!(cli.v1);
    }

    #[test]
    fn passwords_parse_and_never_show_in_debug_output() {
        let cli = Cli::try_parse_from([
            "chat-client",
            "join",
            "den",
            "--name",
            "bob",
            "--password",
            "hunter2",
        ])
        .unwrap();
        let Command::Join(args) = &cli.command else {
            panic!("a join: {:?}", cli.command);
        };
        assert_eq!(
            args.password.as_ref().map(Password::expose),
            Some("hunter2")
        );
        assert!(!format!("{cli:?}").contains("hunter2"));
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        let cli = Cli::try_parse_from([
            "chat-client",
            "--server",
            "localhost",
            "--tcp-port",
            "7000",
            "create",
            "lobby",
            "--name",
            "alice",
            "--udp-port",
            "7001",
            "--log-level",
            "debug",
        ])
        .unwrap();
        assert_eq!(cli.server, "localhost");
        assert_eq!(cli.tcp_port, 7000);
        assert_eq!(cli.udp_port, Some(7001));
        assert_eq!(cli.log_level.as_deref(), Some("debug"));
        assert!(matches!(cli.command, Command::Create(_)));
    }

    #[test]
    fn usage_errors_exit_2() {
        let missing_name = Cli::try_parse_from(["chat-client", "join", "lobby"]).unwrap_err();
        assert_eq!(missing_name.exit_code(), 2);
        let bad_port = Cli::try_parse_from([
            "chat-client",
            "--tcp-port",
            "99999",
            "join",
            "x",
            "--name",
            "y",
        ])
        .unwrap_err();
        assert_eq!(bad_port.exit_code(), 2);
    }

    #[test]
    fn help_documents_exit_codes() {
        let help = Cli::try_parse_from(["chat-client", "--help"])
            .unwrap_err()
            .to_string();
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(help.contains("3  the server refused"), "{help}");
    }
}
