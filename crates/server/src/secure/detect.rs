//! TLS and the plain protocols share their ports: a TLS connection starts with a handshake
//! record, `0x16 0x03 0x0N`. As a TCRP header that would be a frame of state N (1 to 4), which
//! no client sends (requests are state 0); no HTTP request starts with byte 0x16 either.

use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::timeout;

/// How the first bytes of a connection read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// A TLS handshake.
    Tls,
    /// Anything else: plain TCRP, or plain HTTP.
    Plain,
    /// Closed, or silent until the deadline, before three bytes arrived.
    Nothing,
}

/// Whether these first bytes open a TLS handshake.
pub fn is_tls(first: &[u8]) -> bool {
    matches!(first, [0x16, 0x03, 1..=4, ..])
}

/// Peeks at the first three bytes without taking them, within `limit`.
pub async fn opening(stream: &TcpStream, limit: Duration) -> Opening {
    let mut first = [0u8; 3];
    let peeked = timeout(limit, async {
        // `peek` returns what is there; wait until all three bytes are (a slow client may send
        // them one at a time). Bounded by the timeout around it.
        loop {
            match stream.peek(&mut first).await {
                Ok(0) | Err(_) => return 0,
                Ok(n) if n >= first.len() => return n,
                Ok(n) if first[..n] != [0x16, 0x03][..n.min(2)] => return n,
                Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    })
    .await;
    match peeked {
        Ok(0) => Opening::Nothing,
        Ok(n) if is_tls(&first[..n]) => Opening::Tls,
        Ok(_) => Opening::Plain,
        // Silent: whatever comes later is not TLS's opening; the plain path has its own
        // deadline for a whole request.
        Err(_) => Opening::Plain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_record_is_told_from_tcrp_and_http() {
        assert!(is_tls(&[0x16, 0x03, 0x01]));
        assert!(is_tls(&[0x16, 0x03, 0x03, 0x00]));
        // A TCRP request for a 22-byte room name: operation 3, state 0.
        assert!(!is_tls(&[0x16, 0x03, 0x00]));
        assert!(!is_tls(b"GET"));
        assert!(!is_tls(&[0x16]));
    }
}
