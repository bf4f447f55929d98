//! Everything that can end a client run, and the process exit code each one maps to.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use chat_protocol::names::NameError;
use thiserror::Error;

/// Exit code for a normal end: `/quit`, end of input, or the room closed by its host.
pub const EXIT_OK: u8 = 0;
/// Exit code for any error without a more specific code.
pub const EXIT_FAILURE: u8 = 1;
/// Exit code for a usage error: bad arguments (clap uses it too) or an invalid name.
pub const EXIT_USAGE: u8 = 2;
/// Exit code when the server refused the handshake.
pub const EXIT_REFUSED: u8 = 3;
/// Exit code when the server cannot be reached or does not answer.
pub const EXIT_UNREACHABLE: u8 = 4;
/// Exit code when the server's identity is not trusted (unknown or changed certificate,
/// a `--fingerprint` that does not match) or encryption was expected and not offered;
/// nothing was sent to it.
pub const EXIT_UNTRUSTED: u8 = 5;

/// Why a client run failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// The room name breaks the contract's naming rules; caught before connecting.
    #[error("the room name {name:?} is not valid: {source}")]
    InvalidRoomName {
        /// The name as given.
        name: String,
        /// The rule it breaks.
        #[source]
        source: NameError,
    },
    /// The username breaks the contract's naming rules; caught before connecting.
    #[error("the username {name:?} is not valid: {source}")]
    InvalidUsername {
        /// The name as given.
        name: String,
        /// The rule it breaks.
        #[source]
        source: NameError,
    },
    /// The request cannot be framed; validated names never cause this.
    #[error("cannot encode the handshake request: {0}")]
    Request(#[source] chat_protocol::tcrp::TcrpError),
    /// The server's host name could not be resolved.
    #[error("cannot resolve the server name {host:?}: {source}")]
    Resolve {
        /// The host name as given.
        host: String,
        /// Why resolution failed.
        #[source]
        source: io::Error,
    },
    /// The server's host name resolved to no address, or resolving it took too long.
    #[error("the server name {host:?} did not resolve to any address")]
    NoAddress {
        /// The host name as given.
        host: String,
    },
    /// The TCP connection to the server failed (refused, unreachable network...).
    #[error("cannot connect to the server at {addr}: {source}")]
    Connect {
        /// The address tried last.
        addr: SocketAddr,
        /// Why the connection failed.
        #[source]
        source: io::Error,
    },
    /// The TCP connection to the server did not complete in time.
    #[error("cannot connect to the server at {addr}: no answer within {} s", timeout.as_secs_f32())]
    ConnectTimeout {
        /// The address tried last.
        addr: SocketAddr,
        /// How long the attempt was given.
        timeout: Duration,
    },
    /// Sending the request or reading the replies failed at the socket level.
    #[error("the connection to the server broke during the handshake: {0}")]
    HandshakeIo(#[source] io::Error),
    /// The server closed the connection before sending both replies.
    #[error("the server closed the connection before completing the handshake")]
    ClosedEarly,
    /// The server did not send both replies within the handshake time limit.
    #[error("the server did not answer the handshake within {} s", .0.as_secs_f32())]
    HandshakeTimeout(Duration),
    /// The server's replies do not follow the wire contract.
    #[error("the server sent an invalid handshake reply: {0}")]
    InvalidReply(String),
    /// The server refused the request; `code` is the contract's error code.
    #[error("refused: {code}: {message}")]
    Refused {
        /// The error code from the compliance reply, e.g. `name_taken`.
        code: String,
        /// The server's sentence for the user.
        message: String,
    },
    /// The server was reached but cannot list rooms (a version-1-only server closes the
    /// connection on the list operation; ours would refuse it as unsupported).
    #[error(
        "the server does not support listing rooms (a version-1-only server, such as the \
         reference server, has no room list); join a room by its name instead"
    )]
    ListUnsupported,
    /// A private room was asked of a server that speaks only version 1, which has no
    /// passwords; the membership it granted was left at once.
    #[error(
        "the server speaks only version 1 of the chat protocol, which has no private rooms: \
         nothing was kept; try again without --password"
    )]
    V1OnlyPrivate,
    /// The UDP socket for the data plane could not be opened or connected.
    #[error("cannot open a UDP socket towards {addr}: {source}")]
    UdpSetup {
        /// The server's UDP address.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// Sending or receiving a datagram failed.
    #[error("the UDP exchange with the server at {addr} failed: {source}")]
    Udp {
        /// The server's UDP address.
        addr: SocketAddr,
        /// Why it failed.
        #[source]
        source: io::Error,
    },
    /// A datagram could not be framed (a room or token longer than the envelope allows).
    #[error("cannot frame a datagram: {0}")]
    Framing(#[source] chat_protocol::ucrp::UcrpError),
    /// No datagram came back from the server after registering repeatedly.
    #[error(
        "the server at {addr} did not answer on UDP after {attempts} registration attempts; \
         is the UDP port right?"
    )]
    RegistrationUnanswered {
        /// The server's UDP address.
        addr: SocketAddr,
        /// How many `__REGISTER__` datagrams were sent.
        attempts: u32,
    },
    /// The server stopped answering for longer than the client waits.
    #[error(
        "the server at {addr} has not answered for {} s; giving up",
        silent_for.as_secs()
    )]
    ServerSilent {
        /// The server's UDP address.
        addr: SocketAddr,
        /// How long it had been silent.
        silent_for: Duration,
    },
    /// The line editor could not take over the terminal.
    #[error("cannot use the terminal: {0}")]
    Terminal(String),
    /// The password prompt failed (no terminal to ask on, or reading it failed).
    #[error("cannot read the password: {0}")]
    Password(#[source] io::Error),
    /// Standard input could not be read.
    #[error("cannot read standard input: {0}")]
    Input(#[source] io::Error),
    /// Standard output could not be written (closed pipe, full disk...).
    #[error("cannot write to standard output: {0}")]
    Output(#[source] io::Error),
    /// The TLS handshake with a server that speaks TLS failed (an alert, a bad signature).
    #[error("the encrypted connection to the server failed: {0}")]
    Tls(String),
    /// The server is not trusted, or would be talked to in plaintext against the user's
    /// wishes; the sentence says what happened and how to proceed. Nothing was sent.
    #[error("{0}")]
    Untrusted(String),
    /// The async runtime could not be started.
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
}

impl ClientError {
    /// The process exit code for this error:
    ///
    /// - 1 ([`EXIT_FAILURE`]): any error not listed below;
    /// - 2 ([`EXIT_USAGE`]): an invalid room name or username (clap also exits 2 on bad
    ///   arguments);
    /// - 3 ([`EXIT_REFUSED`]): the server refused the handshake, cannot list rooms, or speaks
    ///   only version 1 when a private room was asked for;
    /// - 4 ([`EXIT_UNREACHABLE`]): the server cannot be reached (name not resolved, connection
    ///   refused or timed out, connection closed or silent before replying, no answer on UDP,
    ///   or silent on UDP for minutes in the middle of a chat);
    /// - 5 ([`EXIT_UNTRUSTED`]): the server's certificate is unknown (and nothing said to
    ///   trust it), changed, or not the `--fingerprint` given; or it offers no encryption
    ///   while it did before or `--require-encryption` was given.
    ///
    /// A normal end exits 0 ([`EXIT_OK`]) and is not an error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::InvalidRoomName { .. } | Self::InvalidUsername { .. } => EXIT_USAGE,
            Self::Refused { .. } | Self::ListUnsupported | Self::V1OnlyPrivate => EXIT_REFUSED,
            Self::Resolve { .. }
            | Self::NoAddress { .. }
            | Self::Connect { .. }
            | Self::ConnectTimeout { .. }
            | Self::HandshakeIo(_)
            | Self::ClosedEarly
            | Self::HandshakeTimeout(_)
            | Self::RegistrationUnanswered { .. }
            | Self::ServerSilent { .. } => EXIT_UNREACHABLE,
            Self::Untrusted(_) => EXIT_UNTRUSTED,
            Self::Request(_)
            | Self::InvalidReply(_)
            | Self::UdpSetup { .. }
            | Self::Udp { .. }
            | Self::Framing(_)
            | Self::Input(_)
            | Self::Output(_)
            | Self::Terminal(_)
            | Self::Password(_)
            | Self::Tls(_)
            | Self::Runtime(_) => EXIT_FAILURE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_error() -> io::Error {
        io::Error::from(io::ErrorKind::ConnectionRefused)
    }

    fn localhost() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 9090))
    }

    #[test]
    fn refusals_exit_3_and_show_code_and_message() {
        let refused = ClientError::Refused {
            code: "name_taken".into(),
            message: "the name \"bob\" is taken in \"lobby\"".into(),
        };
        assert_eq!(refused.exit_code(), 3);
        assert_eq!(
            refused.to_string(),
            "refused: name_taken: the name \"bob\" is taken in \"lobby\""
        );
    }

    #[test]
    fn unreachable_server_exits_4() {
        let unreachable = [
            ClientError::Connect {
                addr: localhost(),
                source: io_error(),
            },
            ClientError::ConnectTimeout {
                addr: localhost(),
                timeout: Duration::from_secs(5),
            },
            ClientError::ClosedEarly,
            ClientError::HandshakeTimeout(Duration::from_secs(10)),
            ClientError::HandshakeIo(io_error()),
            ClientError::NoAddress {
                host: "nowhere".into(),
            },
            ClientError::RegistrationUnanswered {
                addr: localhost(),
                attempts: 5,
            },
            ClientError::ServerSilent {
                addr: localhost(),
                silent_for: Duration::from_secs(300),
            },
        ];
        for error in unreachable {
            assert_eq!(error.exit_code(), 4, "{error}");
        }
    }

    #[test]
    fn invalid_names_are_usage_errors() {
        let error = ClientError::InvalidUsername {
            name: " bob".into(),
            source: NameError::SurroundingWhitespace,
        };
        assert_eq!(error.exit_code(), 2);
        assert_eq!(
            error.to_string(),
            "the username \" bob\" is not valid: the name starts or ends with whitespace"
        );
    }

    #[test]
    fn other_failures_exit_1() {
        let others = [
            ClientError::InvalidReply("garbage".into()),
            ClientError::Udp {
                addr: localhost(),
                source: io_error(),
            },
            ClientError::Input(io_error()),
            ClientError::Output(io_error()),
        ];
        for error in others {
            assert_eq!(error.exit_code(), 1, "{error}");
        }
    }
}
