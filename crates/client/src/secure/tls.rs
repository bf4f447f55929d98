//! The TLS control connection of version 3: TLS 1.3 on the `ring` provider, the server's
//! certificate checked by its fingerprint (pinning, not names), the TCRP exchange inside,
//! and the 64 bytes of key material exported from the session.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chat_protocol::fingerprint::Fingerprint;
use chat_protocol::pinning::{self, PinVerifier};
use chat_protocol::sealed::{EXPORTER_LABEL, KEY_MATERIAL_LEN, KeyMaterial};
use chat_protocol::tcrp::{AttachRequest, Frame, Operation, State, to_json_payload};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::entering::handshake::replies::exchange_on;
use crate::entering::handshake::{self, Membership, Timeouts};
use crate::error::ClientError;

/// How long the TLS handshake may take. A server that does not speak TLS answers a
/// ClientHello at once (ours with a refusal frame, the reference server by closing), so
/// this only bounds a stalled network.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// The TLS connection of one membership, once its handshake was granted.
pub type ControlStream = TlsStream<TcpStream>;

/// What a TLS attempt found.
pub enum Attempt {
    /// A TLS 1.3 session with a server whose certificate has this fingerprint (not yet
    /// trusted: the caller decides before sending anything).
    Secure {
        /// The connection.
        stream: Box<ControlStream>,
        /// The end-entity certificate's fingerprint.
        presented: Fingerprint,
        /// The server's address.
        server: SocketAddr,
    },
    /// The certificate is not the expected one; the handshake was aborted.
    Mismatch {
        /// What it presented.
        presented: Fingerprint,
    },
    /// The server answered, but not in TLS (a plaintext-only server).
    NotTls,
}

/// A TLS 1.3-only client configuration that pins `expected` (or records any certificate).
pub(crate) fn config(
    expected: Option<Fingerprint>,
    presented: Arc<Mutex<Option<Fingerprint>>>,
) -> Result<rustls::ClientConfig, ClientError> {
    pinning::client_config(PinVerifier::new(expected, false, presented))
        .map_err(|error| ClientError::Tls(error.to_string()))
}

/// The name sent in the ClientHello: the host when it is a valid name or address; the
/// certificate is pinned, so nothing is checked against it.
pub(crate) fn server_name(host: &str) -> ServerName<'static> {
    ServerName::try_from(host.to_owned()).unwrap_or_else(|_| {
        ServerName::try_from("chat-server")
            .map(|name| name.to_owned())
            .unwrap_or(ServerName::IpAddress(
                std::net::IpAddr::from([127, 0, 0, 1]).into(),
            ))
    })
}

/// Connects to `host:port` and tries a TLS 1.3 handshake.
pub async fn attempt(
    host: &str,
    port: u16,
    expected: Option<Fingerprint>,
    timeouts: Timeouts,
) -> Result<Attempt, ClientError> {
    let tcp = handshake::connect(host, port, timeouts.connect).await?;
    // The handshake's flights and the tunnel's frames are small writes back to back: without
    // this each waits for the server's delayed ACK.
    let _ = tcp.set_nodelay(true);
    let server = tcp.peer_addr().map_err(ClientError::HandshakeIo)?;
    let presented = Arc::new(Mutex::new(None));
    let connector = TlsConnector::from(Arc::new(config(expected, Arc::clone(&presented))?));
    let handshake = connector.connect(server_name(host), tcp);
    let result = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, handshake)
        .await
        .map_err(|_| ClientError::HandshakeTimeout(TLS_HANDSHAKE_TIMEOUT))?;
    let seen = *presented.lock().unwrap_or_else(PoisonError::into_inner);
    match result {
        Ok(stream) => {
            let presented = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|certs| certs.first())
                .map(|cert| Fingerprint::of_certificate(cert.as_ref()))
                .or(seen)
                .ok_or_else(|| ClientError::Tls("the server sent no certificate".into()))?;
            Ok(Attempt::Secure {
                stream: Box::new(stream),
                presented,
                server,
            })
        }
        Err(error) => match (seen, expected) {
            (Some(presented), Some(expected)) if presented != expected => {
                Ok(Attempt::Mismatch { presented })
            }
            _ if is_not_tls(&error) => {
                tracing::debug!(%error, "the server does not speak TLS");
                Ok(Attempt::NotTls)
            }
            _ => Err(ClientError::Tls(error.to_string())),
        },
    }
}

/// Whether a failed handshake means the peer is not a TLS server: it closed or reset the
/// connection on our ClientHello (the reference server), or answered with bytes that are
/// not TLS records (a plaintext TCRP refusal frame). An alert or a bad signature comes from
/// a TLS server, and is an error.
fn is_not_tls(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    if let Some(tls) = error
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        return matches!(
            tls,
            rustls::Error::InvalidMessage(_)
                | rustls::Error::InappropriateMessage { .. }
                | rustls::Error::InappropriateHandshakeMessage { .. }
        );
    }
    matches!(
        error.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::InvalidData
    )
}

/// The 64 bytes of key material both ends take from the session.
pub fn export_keys(stream: &ControlStream) -> Result<KeyMaterial, ClientError> {
    let mut bytes = [0; KEY_MATERIAL_LEN];
    stream
        .get_ref()
        .1
        .export_keying_material(&mut bytes, EXPORTER_LABEL, None)
        .map_err(|error| ClientError::Tls(format!("cannot export the datagram keys: {error}")))?;
    Ok(KeyMaterial(bytes))
}

/// A membership granted over TLS, with what its data plane needs.
pub struct Secured {
    /// The membership (its grant has a key id).
    pub membership: Membership,
    /// The connection, kept as the tunnel.
    pub stream: Box<ControlStream>,
    /// Bytes already read past the replies (tunnel frames).
    pub leftover: Vec<u8>,
    /// The datagram keys of this session.
    pub keys: KeyMaterial,
    /// The server's certificate.
    pub fingerprint: Fingerprint,
}

impl std::fmt::Debug for Secured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Secured")
            .field("membership", &self.membership)
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// Sends one request frame over a trusted TLS connection and takes the grant, the keys and
/// the connection (as the tunnel). Within the exchange timeout.
pub async fn request(
    stream: Box<ControlStream>,
    server: SocketAddr,
    fingerprint: Fingerprint,
    frame: &[u8],
    timeouts: Timeouts,
) -> Result<Secured, ClientError> {
    let (payload, stream, leftover) =
        tokio::time::timeout(timeouts.exchange, exchange_on(*stream, frame))
            .await
            .map_err(|_| ClientError::HandshakeTimeout(timeouts.exchange))??;
    let membership = handshake::granted(server, &payload)?;
    if membership.grant.key_id.is_none() {
        return Err(ClientError::InvalidReply(
            "a grant over TLS has no key_id".into(),
        ));
    }
    let keys = export_keys(&stream)?;
    Ok(Secured {
        membership,
        stream: Box::new(stream),
        leftover,
        keys,
        fingerprint,
    })
}

/// The attach frame (operation 5): the room, and the token as `{"token":...}`.
pub fn attach_frame(room: &str, token: &str) -> Result<Vec<u8>, ClientError> {
    let payload = to_json_payload(&AttachRequest {
        token: token.to_owned(),
    });
    Frame::new(Operation::Attach as u8, State::Request, room, payload)
        .encode()
        .map_err(ClientError::Request)
}

/// Where a membership's control connection goes again (a tunnel that broke): the same
/// server, whose certificate must be the one it had.
#[derive(Debug, Clone)]
pub struct Reattach {
    /// `--server`.
    pub host: String,
    /// `--tcp-port`.
    pub port: u16,
    /// The certificate's fingerprint.
    pub fingerprint: Fingerprint,
    /// The room, as the grant named it.
    pub room: String,
    /// The membership's token (sent inside TLS only).
    pub token: String,
    /// Time limits.
    pub timeouts: Timeouts,
    /// The `known_servers` file, for the sentence a changed certificate gets.
    pub known_servers: String,
}

impl Reattach {
    /// A new TLS connection to the same server, attached to the membership: fresh keys.
    pub async fn attach(&self) -> Result<Secured, ClientError> {
        match attempt(&self.host, self.port, Some(self.fingerprint), self.timeouts).await? {
            Attempt::Secure {
                stream,
                presented,
                server,
            } => {
                let frame = attach_frame(&self.room, &self.token)?;
                request(stream, server, presented, &frame, self.timeouts).await
            }
            Attempt::Mismatch { presented } => {
                Err(ClientError::Untrusted(super::connector::distrust_message(
                    &super::known_servers::server_key(&self.host, self.port),
                    super::known_servers::Distrust::Changed {
                        known: self.fingerprint,
                        presented,
                    },
                    &self.known_servers,
                )))
            }
            Attempt::NotTls => Err(ClientError::Untrusted(
                "the server stopped offering encryption during the conversation; not \
                 reconnecting in plaintext"
                    .into(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A one-connection TLS 1.3 server with a fresh self-signed certificate; it keeps the
    /// connection until the client closes it.
    async fn tls_server() -> (u16, Fingerprint) {
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let der = certified.cert.der().clone();
        let fingerprint = Fingerprint::of_certificate(der.as_ref());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            certified.signing_key.serialize_der(),
        ));
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![der], key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            if let Ok(mut tls) = acceptor.accept(stream).await {
                let mut byte = [0u8; 1];
                let _ = tls.read(&mut byte).await;
            }
        });
        (port, fingerprint)
    }

    /// A plaintext server that answers anything with `reply` and closes.
    async fn plain_server(reply: Vec<u8>) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut header = [0u8; 32];
            let _ = stream.read_exact(&mut header).await;
            let _ = stream.write_all(&reply).await;
        });
        port
    }

    #[tokio::test]
    async fn a_tls_server_is_seen_with_its_fingerprint_and_a_pin_is_enforced() {
        let (port, fingerprint) = tls_server().await;
        let Attempt::Secure {
            stream, presented, ..
        } = attempt("127.0.0.1", port, None, Timeouts::default())
            .await
            .unwrap()
        else {
            panic!("a TLS session");
        };
        assert_eq!(presented, fingerprint);
        // Both ends can export the datagram keys from it.
        assert!(export_keys(&stream).is_ok());

        let (port, fingerprint) = tls_server().await;
        let pinned = attempt("127.0.0.1", port, Some(fingerprint), Timeouts::default())
            .await
            .unwrap();
        assert!(matches!(pinned, Attempt::Secure { .. }));

        let (port, fingerprint) = tls_server().await;
        let other = Fingerprint([7; 32]);
        match attempt("127.0.0.1", port, Some(other), Timeouts::default())
            .await
            .unwrap()
        {
            Attempt::Mismatch { presented } => assert_eq!(presented, fingerprint),
            _ => panic!("a mismatch"),
        }
    }

    #[tokio::test]
    async fn a_server_that_closes_or_answers_in_plaintext_is_not_tls() {
        // The reference server: reads, fails to parse, closes.
        let port = plain_server(Vec::new()).await;
        assert!(matches!(
            attempt("127.0.0.1", port, None, Timeouts::default())
                .await
                .unwrap(),
            Attempt::NotTls
        ));
        // A plaintext TCRP server: a refusal frame.
        let refusal = Frame::new(
            3,
            State::Compliance,
            "",
            br#"{"success":0,"error":"invalid_request"}"#.to_vec(),
        )
        .encode()
        .unwrap();
        let port = plain_server(refusal).await;
        assert!(matches!(
            attempt("127.0.0.1", port, None, Timeouts::default())
                .await
                .unwrap(),
            Attempt::NotTls
        ));
    }

    #[test]
    fn attach_frames_carry_the_room_and_the_token() {
        let frame = attach_frame("lobby", "ab").unwrap();
        let (decoded, _) = Frame::decode(&frame).unwrap().unwrap();
        assert_eq!(decoded.operation, Operation::Attach as u8);
        assert_eq!(decoded.room_name, "lobby");
        assert_eq!(AttachRequest::parse(&decoded.payload).unwrap().token, "ab");
    }
}
