//! The version-1 conversation of a membership: register the token's address, send chat,
//! receive what the server relays, leave. The socket itself is a [`Link`].

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::Duration;

use chat_protocol::ucrp::{LEAVE, REGISTER, ROOM_CLOSED};
use thiserror::Error;
use tokio::time::Instant;

use super::incoming::Incoming;
use crate::error::ClientError;
use crate::transport::{Link, receive_buffer};
use crate::ui::screen::print_problem;

/// How many `__REGISTER__` datagrams are sent before giving up.
pub const REGISTER_ATTEMPTS: u32 = 5;
/// How long to wait for an answer before sending `__REGISTER__` again.
pub const REGISTER_INTERVAL: Duration = Duration::from_secs(1);

/// `__REGISTER__` copies sent to a server that never confirms a registration.
pub const BLIND_REGISTER_COPIES: u32 = 2;
/// Spacing of those copies.
pub const BLIND_REGISTER_SPACING: Duration = Duration::from_millis(50);

/// Texts that the server acts on instead of relaying; sending one as chat would, for example,
/// drop the member from the room without the client knowing.
const RESERVED_TEXTS: [&[u8]; 3] = [REGISTER, LEAVE, ROOM_CLOSED];

/// Why a line of input was not sent.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ChatRejection {
    /// The text does not fit in one datagram beside the room name and token.
    #[error("message not sent: it is {len} bytes long and at most {max} fit in one datagram")]
    TooLong {
        /// Length of the text, in bytes.
        len: usize,
        /// Most bytes of text a datagram can carry for this membership.
        max: usize,
    },
    /// The text is one of the protocol's control words.
    #[error("message not sent: {0:?} is reserved by the protocol (type /quit to leave)")]
    Reserved(String),
}

/// How persistently to register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterPolicy {
    /// How many `__REGISTER__` datagrams to send at most.
    pub attempts: u32,
    /// How long to wait for an answer after each one.
    pub interval: Duration,
}

impl Default for RegisterPolicy {
    fn default() -> Self {
        Self {
            attempts: REGISTER_ATTEMPTS,
            interval: REGISTER_INTERVAL,
        }
    }
}

/// A member's version-1 UDP conversation with the server.
#[derive(Debug)]
pub struct Session {
    link: Link,
    /// Whether the user was told that the server's port is closed.
    told_unreachable: AtomicBool,
}

impl Session {
    /// Opens a UDP socket of the server's address family, connected to `server`.
    pub async fn open(
        server: SocketAddr,
        room: String,
        token: String,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            link: Link::open(server, room, token).await?,
            told_unreachable: AtomicBool::new(false),
        })
    }

    /// The server's UDP address.
    pub fn server(&self) -> SocketAddr {
        self.link.server()
    }

    /// The room this session belongs to.
    pub fn room(&self) -> &str {
        self.link.room()
    }

    /// Most bytes of chat text one datagram can carry for this room and token.
    pub fn message_capacity(&self) -> usize {
        self.link.message_capacity()
    }

    /// Sends `__REGISTER__` until the server sends anything back, and returns what it sent
    /// (normally the welcome notice) so that it is shown like any other incoming datagram.
    pub async fn register(&self, policy: RegisterPolicy) -> Result<Option<Incoming>, ClientError> {
        let register = self.link.envelope(REGISTER)?;
        let mut buffer = receive_buffer();
        for attempt in 1..=policy.attempts {
            tracing::debug!(attempt, server = %self.server(), "registering");
            self.send_datagram(&register).await?;
            let deadline = Instant::now() + policy.interval;
            while let Ok(received) =
                tokio::time::timeout_at(deadline, self.link.receive(&mut buffer)).await
            {
                match received? {
                    Some(len) => return Ok(buffer.get(..len).and_then(Incoming::decode)),
                    // Nothing listens on the port (an ICMP error came back): wait out the
                    // interval instead of spinning on the error.
                    None => {
                        tracing::debug!(server = %self.server(), "registration was not received");
                        tokio::time::sleep_until(deadline).await;
                    }
                }
            }
        }
        Err(ClientError::RegistrationUnanswered {
            addr: self.server(),
            attempts: policy.attempts,
        })
    }

    /// Registers with a server that never answers a registration (the reference server):
    /// `__REGISTER__` is sent [`BLIND_REGISTER_COPIES`] times, spaced a little, since UDP may
    /// drop one, and nothing is waited for.
    pub async fn register_blind(&self) -> Result<(), ClientError> {
        let register = self.link.envelope(REGISTER)?;
        for copy in 0..BLIND_REGISTER_COPIES {
            if copy > 0 {
                tokio::time::sleep(BLIND_REGISTER_SPACING).await;
            }
            self.send_datagram(&register).await?;
        }
        Ok(())
    }

    /// Frames `text` as a chat datagram, or says why it cannot be sent.
    pub fn encode_chat(&self, text: &str) -> Result<Vec<u8>, ChatRejection> {
        if RESERVED_TEXTS.contains(&text.as_bytes()) {
            return Err(ChatRejection::Reserved(text.to_owned()));
        }
        let max = self.message_capacity();
        if text.len() > max {
            return Err(ChatRejection::TooLong {
                len: text.len(),
                max,
            });
        }
        self.link
            .envelope(text.as_bytes())
            .map_err(|_| ChatRejection::TooLong {
                len: text.len(),
                max,
            })
    }

    /// Sends a datagram built by [`Session::encode_chat`].
    pub async fn send_datagram(&self, datagram: &[u8]) -> Result<(), ClientError> {
        if self.link.send_reporting_refusal(datagram).await? {
            self.tell_unreachable();
        }
        Ok(())
    }

    /// Tells the user, once, that nothing listens at the server's address: a sentence, not a
    /// log line in the middle of the chat. The kernel reports it to whichever socket call comes
    /// next, a send or a receive, so both paths end here.
    fn tell_unreachable(&self) {
        if !self.told_unreachable.swap(true, AtomicOrdering::Relaxed) {
            print_problem(&format!(
                "* nothing is listening at {} any more; the server may have stopped",
                self.server()
            ));
        }
    }

    /// Tells the server this member leaves (which closes the room when it is the host).
    pub async fn leave(&self) -> Result<(), ClientError> {
        let leave = self.link.envelope(LEAVE)?;
        self.send_datagram(&leave).await
    }

    /// Waits for the next datagram from the server that this client understands.
    pub async fn receive(&self) -> Result<Incoming, ClientError> {
        let mut buffer = receive_buffer();
        loop {
            match self.link.receive(&mut buffer).await? {
                Some(len) => {
                    if let Some(incoming) = buffer.get(..len).and_then(Incoming::decode) {
                        return Ok(incoming);
                    }
                }
                None => self.tell_unreachable(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use chat_protocol::ucrp::{Datagram, NOTICE_SENDER, encode_v1_chat};
    use tokio::net::UdpSocket;

    use super::*;

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    async fn fake_server() -> UdpSocket {
        UdpSocket::bind("127.0.0.1:0").await.unwrap()
    }

    async fn session_with(server: &UdpSocket) -> Session {
        Session::open(server.local_addr().unwrap(), "lobby".into(), TOKEN.into())
            .await
            .unwrap()
    }

    fn notice(text: &str) -> Vec<u8> {
        let mut out = Vec::new();
        encode_v1_chat(NOTICE_SENDER, text, &mut out).unwrap();
        out
    }

    #[tokio::test]
    async fn register_is_resent_until_the_server_answers() {
        let server = fake_server().await;
        let session = session_with(&server).await;
        let policy = RegisterPolicy {
            attempts: 50,
            interval: Duration::from_millis(50),
        };
        let fake = async {
            let mut buffer = [0u8; 8192];
            let mut registers = 0;
            loop {
                let (len, from) = server.recv_from(&mut buffer).await.unwrap();
                let datagram = Datagram::decode(&buffer[..len]).unwrap();
                assert_eq!(datagram.room, "lobby");
                assert_eq!(datagram.token, TOKEN.as_bytes());
                assert_eq!(datagram.message, REGISTER);
                registers += 1;
                // The first register is ignored as if it were lost; the second is answered.
                if registers == 2 {
                    let welcome = notice("welcome to lobby, bob");
                    server.send_to(&welcome, from).await.unwrap();
                    return registers;
                }
            }
        };
        let fake = tokio::time::timeout(Duration::from_secs(30), fake);
        let (registered, registers) = tokio::join!(session.register(policy), fake);
        assert_eq!(registers.unwrap(), 2);
        assert_eq!(
            registered.unwrap(),
            Some(Incoming::Notice("welcome to lobby, bob".into()))
        );
    }

    #[tokio::test]
    async fn silent_server_makes_registration_fail() {
        let server = fake_server().await;
        let session = session_with(&server).await;
        let policy = RegisterPolicy {
            attempts: 3,
            interval: Duration::from_millis(20),
        };
        let error = session.register(policy).await.unwrap_err();
        assert!(
            matches!(
                error,
                ClientError::RegistrationUnanswered { attempts: 3, .. }
            ),
            "{error:?}"
        );
        assert_eq!(error.exit_code(), 4);
        let mut buffer = [0u8; 8192];
        for _ in 0..3 {
            let (len, _) = server.recv_from(&mut buffer).await.unwrap();
            assert_eq!(Datagram::decode(&buffer[..len]).unwrap().message, REGISTER);
        }
    }

    #[tokio::test]
    async fn chat_and_leave_are_framed_in_the_envelope() {
        let server = fake_server().await;
        let session = session_with(&server).await;
        let chat = session.encode_chat("hello").unwrap();
        session.send_datagram(&chat).await.unwrap();
        session.leave().await.unwrap();
        let mut buffer = [0u8; 8192];
        let (len, _) = server.recv_from(&mut buffer).await.unwrap();
        assert_eq!(Datagram::decode(&buffer[..len]).unwrap().message, b"hello");
        let (len, _) = server.recv_from(&mut buffer).await.unwrap();
        assert_eq!(Datagram::decode(&buffer[..len]).unwrap().message, LEAVE);
    }

    #[tokio::test]
    async fn text_too_long_for_a_datagram_is_rejected() {
        let server = fake_server().await;
        let session = session_with(&server).await;
        let max = 4096 - 2 - "lobby".len() - TOKEN.len();
        assert_eq!(session.message_capacity(), max);
        assert!(session.encode_chat(&"x".repeat(max)).is_ok());
        assert_eq!(
            session.encode_chat(&"x".repeat(max + 1)),
            Err(ChatRejection::TooLong { len: max + 1, max })
        );
    }

    #[tokio::test]
    async fn control_words_are_not_sent_as_chat() {
        let server = fake_server().await;
        let session = session_with(&server).await;
        assert!(matches!(
            session.encode_chat("__LEAVE__"),
            Err(ChatRejection::Reserved(_))
        ));
        assert!(matches!(
            session.encode_chat("__REGISTER__"),
            Err(ChatRejection::Reserved(_))
        ));
        assert!(session.encode_chat("__LEAVE__ now").is_ok());
    }

    #[tokio::test]
    async fn receive_skips_what_it_cannot_decode() {
        let server = fake_server().await;
        let session = session_with(&server).await;
        let client = server_peer(&server, &session).await;
        server.send_to(&[5, b'a'], client).await.unwrap(); // truncated sender
        server.send_to(b"\xffnot json", client).await.unwrap();
        let mut chat = Vec::new();
        encode_v1_chat("alice", "hi bob", &mut chat).unwrap();
        server.send_to(&chat, client).await.unwrap();
        server.send_to(ROOM_CLOSED, client).await.unwrap();
        assert_eq!(
            session.receive().await.unwrap(),
            Incoming::Chat {
                sender: "alice".into(),
                text: "hi bob".into()
            }
        );
        assert_eq!(session.receive().await.unwrap(), Incoming::RoomClosed);
    }

    /// Learns the session's address the way the real server does: from a datagram it sent.
    async fn server_peer(server: &UdpSocket, session: &Session) -> SocketAddr {
        session.leave().await.unwrap();
        let mut buffer = [0u8; 8192];
        server.recv_from(&mut buffer).await.unwrap().1
    }
}
