//! Opening control connections the way the command line asks: version 3 (TLS, the server
//! trusted by its pinned fingerprint) by default, plaintext with `--v1`/`--v2`, and the
//! fallback to plaintext for a server that does not offer TLS, unless that would be a
//! downgrade (the server is pinned) or `--require-encryption` forbids it.
//!
//! The first connection of a run settles which it is; every later one (an attach, `/next`)
//! must be the same, with the same certificate.

use std::cell::Cell;
use std::io::BufRead;
use std::io::IsTerminal;
use std::net::SocketAddr;

use chat_protocol::fingerprint::Fingerprint;
use chat_protocol::tcrp::{ErrorCode, Frame, Operation, RoomList, State};

use super::known_servers::{Distrust, KnownServers, Verdict, decide, server_key};
use super::tls::{self, Attempt, ControlStream, Secured, attach_frame};
use crate::cli::Cli;
use crate::entering::handshake::replies::{exchange_on, parse_json};
use crate::entering::handshake::{self, Membership, Request, Timeouts};
use crate::error::ClientError;
use crate::ui::screen::print_problem;

/// The one line a plaintext fallback prints.
pub const NOT_ENCRYPTED: &str =
    "* the server does not offer encryption; this conversation is not encrypted";

/// What the first connection settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    /// TLS with the server whose certificate has this fingerprint.
    Tls(Fingerprint),
    /// Plaintext TCRP.
    Plain,
}

/// A handshake's outcome, in either version.
#[derive(Debug)]
pub enum Entered {
    /// Plaintext (`--v1`, `--v2`, or a server without TLS).
    Plain(Membership),
    /// Version 3: sealed datagrams and the tunnel.
    Secure(Box<Secured>),
}

impl Entered {
    /// The membership granted.
    pub fn membership(&self) -> &Membership {
        match self {
            Self::Plain(membership) => membership,
            Self::Secure(secured) => &secured.membership,
        }
    }
}

/// Opens control connections for one run.
#[derive(Debug)]
pub struct Connector {
    host: String,
    port: u16,
    timeouts: Timeouts,
    encrypt: bool,
    require: bool,
    pin: Option<Fingerprint>,
    trust_new: bool,
    interactive: bool,
    known: Option<KnownServers>,
    settled: Cell<Option<Settled>>,
}

impl Connector {
    /// As the command line says, with the user's `known_servers`.
    pub fn new(cli: &Cli) -> Self {
        Self {
            host: cli.server.clone(),
            port: cli.tcp_port,
            timeouts: Timeouts::default(),
            encrypt: !cli.v1 && !cli.v2,
            require: cli.require_encryption,
            pin: cli.fingerprint,
            trust_new: cli.trust_new_server,
            interactive: std::io::stdin().is_terminal(),
            known: KnownServers::for_user(),
            settled: Cell::new(None),
        }
    }

    /// The same with another `known_servers` and no terminal (tests).
    pub fn with_known(mut self, known: Option<KnownServers>, interactive: bool) -> Self {
        self.known = known;
        self.interactive = interactive;
        self
    }

    /// Whether version 3 is asked for (not `--v1` or `--v2`).
    pub fn encrypts(&self) -> bool {
        self.encrypt
    }

    /// The server's `host:port`, as `known_servers` keys it.
    pub fn server_key(&self) -> String {
        server_key(&self.host, self.port)
    }

    /// The server's certificate fingerprint, once a TLS connection settled it.
    pub fn fingerprint(&self) -> Option<Fingerprint> {
        match self.settled.get() {
            Some(Settled::Tls(fingerprint)) => Some(fingerprint),
            _ => None,
        }
    }

    /// Whether the conversation is encrypted: connects once to find out if nothing has yet.
    pub async fn is_encrypted(&self) -> Result<bool, ClientError> {
        if self.settled.get().is_none() {
            // The connection is closed unused: it only settles the question.
            drop(self.open().await?);
        }
        Ok(matches!(self.settled.get(), Some(Settled::Tls(_))))
    }

    /// Creates, joins or pairs.
    pub async fn handshake(&self, request: &Request) -> Result<Entered, ClientError> {
        match self.open().await? {
            Some((stream, server, fingerprint)) => {
                let frame = request.encode()?;
                let secured =
                    tls::request(stream, server, fingerprint, &frame, self.timeouts).await?;
                tracing::debug!(%server, room = ?secured.membership.grant.room, "granted over TLS");
                Ok(Entered::Secure(Box::new(secured)))
            }
            None => handshake::perform(&self.host, self.port, request, self.timeouts)
                .await
                .map(Entered::Plain),
        }
    }

    /// Takes a membership this client holds onto a new TLS connection (fresh keys).
    pub async fn attach(&self, room: &str, token: &str) -> Result<Secured, ClientError> {
        match self.open().await? {
            Some((stream, server, fingerprint)) => {
                let frame = attach_frame(room, token)?;
                tls::request(stream, server, fingerprint, &frame, self.timeouts).await
            }
            None => Err(self.downgrade()),
        }
    }

    /// Lists the rooms.
    pub async fn list(&self) -> Result<RoomList, ClientError> {
        match self.open().await? {
            Some((stream, _, _)) => {
                let frame = Frame::new(Operation::List as u8, State::Request, "", Vec::new())
                    .encode()
                    .map_err(ClientError::Request)?;
                let exchanged =
                    tokio::time::timeout(self.timeouts.exchange, exchange_on(*stream, &frame))
                        .await
                        .map_err(|_| ClientError::HandshakeTimeout(self.timeouts.exchange))?;
                match exchanged {
                    Ok((payload, _, _)) => parse_json(&payload, "room list"),
                    Err(ClientError::Refused { code, .. })
                        if code == ErrorCode::UnsupportedOperation.as_str() =>
                    {
                        Err(ClientError::ListUnsupported)
                    }
                    Err(other) => Err(other),
                }
            }
            None => handshake::list_rooms(&self.host, self.port, self.timeouts).await,
        }
    }

    /// What a tunnel needs to connect again on its own.
    pub fn reattach(&self, room: &str, token: &str, fingerprint: Fingerprint) -> tls::Reattach {
        tls::Reattach {
            host: self.host.clone(),
            port: self.port,
            fingerprint,
            room: room.to_owned(),
            token: token.to_owned(),
            timeouts: self.timeouts,
            known_servers: self.known_path(),
        }
    }

    /// A trusted TLS connection, or `None` for plaintext (asked for, or a fallback allowed).
    async fn open(
        &self,
    ) -> Result<Option<(Box<ControlStream>, SocketAddr, Fingerprint)>, ClientError> {
        if !self.encrypt || self.settled.get() == Some(Settled::Plain) {
            return Ok(None);
        }
        let key = self.server_key();
        let known = match self.settled.get() {
            Some(Settled::Tls(fingerprint)) => Some(fingerprint),
            _ => self.known.as_ref().and_then(|known| known.find(&key)),
        };
        let expected = self.pin.or(known);
        match tls::attempt(&self.host, self.port, expected, self.timeouts).await? {
            Attempt::NotTls => {
                self.may_fall_back(known)?;
                print_problem(NOT_ENCRYPTED);
                self.settled.set(Some(Settled::Plain));
                Ok(None)
            }
            Attempt::Mismatch { presented } => Err(self.refuse(known, presented)),
            Attempt::Secure {
                stream,
                presented,
                server,
            } => {
                self.trust(known, presented).await?;
                self.settled.set(Some(Settled::Tls(presented)));
                Ok(Some((stream, server, presented)))
            }
        }
    }

    /// The TLS server's certificate, decided like SSH decides a host key.
    async fn trust(
        &self,
        known: Option<Fingerprint>,
        presented: Fingerprint,
    ) -> Result<(), ClientError> {
        let (pin_it, asked) =
            match decide(known, self.pin, presented, self.trust_new, self.interactive) {
                Verdict::Known => (false, false),
                Verdict::Pin => (true, false),
                Verdict::Ask => {
                    if ask(&self.server_key(), presented).await? {
                        (true, true)
                    } else {
                        return Err(self.distrust(Distrust::Declined));
                    }
                }
                Verdict::Refuse(why) => return Err(self.distrust(why)),
            };
        if !pin_it {
            return Ok(());
        }
        let key = self.server_key();
        match &self.known {
            Some(known) => match known.pin(&key, presented) {
                // Said aloud only to whoever answered the question; with a flag the user
                // chose it already (and the transcript of scripts stays as it was).
                Ok(()) if asked => print_problem(&format!(
                    "* added {key} to the trusted servers in {}",
                    known.path().display()
                )),
                Ok(()) => tracing::info!(server = %key, %presented, "pinned the server"),
                Err(error) => print_problem(&format!(
                    "* cannot save the server's fingerprint in {}: {error}",
                    known.path().display()
                )),
            },
            None => tracing::warn!(
                "no data directory to remember the server's fingerprint in (set HOME or XDG_DATA_HOME)"
            ),
        }
        Ok(())
    }

    fn refuse(&self, known: Option<Fingerprint>, presented: Fingerprint) -> ClientError {
        match (self.pin, known) {
            (Some(pin), _) => self.distrust(Distrust::NotThePin { pin, presented }),
            (None, Some(known)) => self.distrust(Distrust::Changed { known, presented }),
            (None, None) => self.distrust(Distrust::Unknown { presented }),
        }
    }

    /// The `known_servers` file, as the sentences name it.
    fn known_path(&self) -> String {
        self.known.as_ref().map_or_else(
            || "known_servers".to_owned(),
            |known| known.path().display().to_string(),
        )
    }

    fn distrust(&self, why: Distrust) -> ClientError {
        ClientError::Untrusted(distrust_message(
            &self.server_key(),
            why,
            &self.known_path(),
        ))
    }

    /// Whether plaintext may be used with a server that did not answer in TLS.
    fn may_fall_back(&self, known: Option<Fingerprint>) -> Result<(), ClientError> {
        if self.require {
            return Err(ClientError::Untrusted(format!(
                "the server {} does not offer encryption, and --require-encryption was given; \
                 nothing was sent",
                self.server_key()
            )));
        }
        if known.is_some() || self.pin.is_some() {
            return Err(self.downgrade());
        }
        Ok(())
    }

    fn downgrade(&self) -> ClientError {
        let path = self.known_path();
        ClientError::Untrusted(format!(
            "the server {key} did not offer encryption, but it is known to (it is pinned in \
             {path}, or --fingerprint was given): refusing to continue in plaintext, since \
             someone may be downgrading the connection; nothing was sent. If the server \
             really stopped offering encryption, remove its line from {path}, or use --v2",
            key = self.server_key()
        ))
    }
}

/// The loud sentence for a server that is not trusted, with how to proceed.
pub fn distrust_message(server: &str, why: Distrust, path: &str) -> String {
    match why {
        Distrust::Changed { known, presented } => format!(
            "@@@ WARNING: THE SERVER'S CERTIFICATE HAS CHANGED @@@\n\
             The server {server} presented a different certificate from the one trusted before:\n  \
             known:     {known}\n  presented: {presented}\n\
             Someone may be intercepting the connection, or the server's certificate was \
             replaced. Nothing was sent.\n\
             To proceed: check the fingerprint with `chat-server fingerprint` on the server; \
             if it is {presented}, remove the line for {server} from {path}, or pass \
             --fingerprint {presented}"
        ),
        Distrust::NotThePin { pin, presented } => format!(
            "the server {server} presented the certificate {presented}, not the one \
             --fingerprint names ({pin}); nothing was sent. Check the fingerprint with \
             `chat-server fingerprint` on the server"
        ),
        Distrust::Unknown { presented } => format!(
            "the server {server} is not known yet (its certificate's fingerprint is \
             {presented}) and there is no terminal to ask on; nothing was sent. Check it with \
             `chat-server fingerprint` on the server, then pass --fingerprint {presented}, or \
             --trust-new-server to trust it on first contact"
        ),
        Distrust::Declined => {
            format!("the server {server} was not trusted; nothing was sent")
        }
    }
}

/// How often an answer other than yes or no is asked again.
const ASK_TRIES: usize = 3;

/// Asks on the terminal whether to trust a server met for the first time, as SSH does.
async fn ask(server: &str, presented: Fingerprint) -> Result<bool, ClientError> {
    print_problem(&format!(
        "The authenticity of the server {server} cannot be established (first contact).\n\
         Its certificate's fingerprint is {presented}.\n\
         Compare it with what `chat-server fingerprint` prints on the server."
    ));
    tokio::task::spawn_blocking(|| {
        let mut stdin = std::io::stdin().lock();
        for try_number in 0..ASK_TRIES {
            let prompt = if try_number == 0 {
                "Trust it and continue connecting (yes/no)? "
            } else {
                "Please type 'yes' or 'no': "
            };
            eprint!("{prompt}");
            let mut answer = String::new();
            // End of input is a no.
            if stdin.read_line(&mut answer).map_err(ClientError::Input)? == 0 {
                return Ok(false);
            }
            match answer.trim().to_ascii_lowercase().as_str() {
                "yes" | "y" => return Ok(true),
                "no" | "n" => return Ok(false),
                _ => {}
            }
        }
        Ok(false)
    })
    .await
    .map_err(|error| ClientError::Input(std::io::Error::other(error.to_string())))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_changed_key_message_says_what_changed_and_how_to_proceed() {
        let known = Fingerprint([1; 32]);
        let presented = Fingerprint([2; 32]);
        let text = distrust_message(
            "127.0.0.1:9090",
            Distrust::Changed { known, presented },
            "/home/u/.local/share/chat-client/known_servers",
        );
        assert!(text.contains("WARNING"), "{text}");
        assert!(text.contains(&known.to_string()), "{text}");
        assert!(text.contains(&presented.to_string()), "{text}");
        assert!(text.contains("chat-server fingerprint"), "{text}");
        assert!(text.contains("--fingerprint"), "{text}");
        assert!(text.contains("known_servers"), "{text}");
        let text = distrust_message("h:1", Distrust::Unknown { presented }, "k");
        assert!(text.contains("--trust-new-server"), "{text}");
        assert!(text.contains("--fingerprint"), "{text}");
    }
}
