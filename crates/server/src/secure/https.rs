//! HTTPS and WSS on the HTTP port, beside plain HTTP: each connection is told apart by its
//! first bytes (`detect`), TLS ones are accepted with the server's certificate, and axum
//! serves both kinds alike. With `--require-encryption` a plain request gets a short refusal.
//!
//! TLS handshakes run in their own tasks (at most [`HANDSHAKES_AT_ONCE`]), so a client that
//! stalls in its handshake holds nobody else's.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use super::detect::{self, Opening};

/// TLS handshakes (and first-byte waits) in progress at once; more connections wait.
pub const HANDSHAKES_AT_ONCE: usize = 256;
/// How long a connection has to send its first bytes and finish a TLS handshake.
const OPENING_LIMIT: Duration = Duration::from_secs(10);

/// A connection of the HTTP listener, in the clear or inside TLS.
#[derive(Debug)]
pub enum HttpStream {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS.
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for HttpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for HttpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The HTTP listener as axum sees it: connections come out ready, TLS already accepted.
#[derive(Debug)]
pub struct DualListener {
    ready: mpsc::Receiver<(HttpStream, SocketAddr)>,
    local: Option<SocketAddr>,
    accepting: tokio::task::JoinHandle<()>,
}

impl DualListener {
    /// Starts accepting on `listener`: TLS with `tls`, plain HTTP unless `require_tls`.
    pub fn new(listener: TcpListener, tls: Arc<rustls::ServerConfig>, require_tls: bool) -> Self {
        let local = listener.local_addr().ok();
        let (ready_tx, ready) = mpsc::channel(64);
        let accepting = tokio::spawn(accept(
            listener,
            TlsAcceptor::from(tls),
            require_tls,
            ready_tx,
        ));
        Self {
            ready,
            local,
            accepting,
        }
    }
}

impl Drop for DualListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for DualListener {
    type Io = HttpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(ready) => ready,
            // The accepting task ended (the listener failed for good): nothing more comes.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.local
            .ok_or_else(|| io::Error::other("the HTTP listener has no local address"))
    }
}

async fn accept(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    require_tls: bool,
    ready: mpsc::Sender<(HttpStream, SocketAddr)>,
) {
    let openings = Arc::new(Semaphore::new(HANDSHAKES_AT_ONCE));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Typically out of file descriptors: back off instead of spinning.
                tracing::warn!(%error, "accepting an HTTP connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Every event is its own small frame: with Nagle's algorithm on, a frame written
        // while the previous one is unacknowledged waits for the peer's delayed ACK.
        let _ = stream.set_nodelay(true);
        let Ok(permit) = Arc::clone(&openings).acquire_owned().await else {
            return;
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            let opened = open(stream, peer, &acceptor, require_tls).await;
            drop(permit);
            if let Some(stream) = opened {
                let _ = ready.send((stream, peer)).await;
            }
        });
    }
}

async fn open(
    mut stream: TcpStream,
    peer: SocketAddr,
    acceptor: &TlsAcceptor,
    require_tls: bool,
) -> Option<HttpStream> {
    match detect::opening(&stream, OPENING_LIMIT).await {
        Opening::Nothing => None,
        Opening::Plain if require_tls => {
            let refusal = "HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\n\
                           content-length: 46\r\nconnection: close\r\n\r\n\
                           this server accepts only HTTPS connections.\r\n\r\n";
            let _ = tokio::time::timeout(OPENING_LIMIT, stream.write_all(refusal.as_bytes())).await;
            None
        }
        Opening::Plain => Some(HttpStream::Plain(stream)),
        Opening::Tls => match tokio::time::timeout(OPENING_LIMIT, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => Some(HttpStream::Tls(Box::new(stream))),
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "HTTPS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "HTTPS handshake not done before the time limit");
                None
            }
        },
    }
}
