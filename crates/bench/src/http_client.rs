//! The HTTP half of a WebSocket member's life (docs/http-api.md): `POST /api/rooms` and
//! `POST /api/rooms/{room}/join` for a token. A minimal HTTP/1.1 client on tokio, one request
//! per connection (`Connection: close`), the reply read to its end (bounded in size and time)
//! and parsed with httparse; chunked bodies are decoded too.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::error::{BenchError, Result};

/// The most bytes of a reply this client reads: the API's bodies are at most 16 KiB.
const MAX_REPLY_BYTES: usize = 64 * 1024;
/// The most headers a reply may carry.
const MAX_HEADERS: usize = 32;
/// How long to wait before asking again after `server_busy`.
const BUSY_BACKOFF: Duration = Duration::from_millis(50);
/// The error code the server answers when it cannot write its state right now.
const SERVER_BUSY: &str = "server_busy";

/// One HTTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The status code.
    pub status: u16,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

/// Sends `POST path` with a JSON `body` to `addr` and reads the reply, all before `deadline`.
pub async fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &str,
    deadline: Instant,
) -> Result<Reply> {
    let io =
        |what: &str, error: std::io::Error| BenchError::Http(format!("{what} {addr}: {error}"));
    let late = || BenchError::Http(format!("POST {path} to {addr} did not finish in time"));
    let mut stream = timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| late())?
        .map_err(|e| io("connecting to", e))?;
    stream
        .set_nodelay(true)
        .map_err(|e| io("configuring a socket to", e))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    timeout_at(deadline, stream.write_all(request.as_bytes()))
        .await
        .map_err(|_| late())?
        .map_err(|e| io("writing to", e))?;
    let mut raw = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let read = timeout_at(deadline, stream.read(&mut chunk))
            .await
            .map_err(|_| late())?
            .map_err(|e| io("reading from", e))?;
        if read == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..read]);
        if raw.len() > MAX_REPLY_BYTES {
            return Err(BenchError::Http(format!(
                "the reply to POST {path} is over {MAX_REPLY_BYTES} bytes"
            )));
        }
        // A complete reply with a length needs no wait for the server to close.
        if let Ok(Some(reply)) = parse_reply(&raw, false) {
            return Ok(reply);
        }
    }
    parse_reply(&raw, true)?
        .ok_or_else(|| BenchError::Http(format!("POST {path}: the reply ended early")))
}

/// Parses a reply; `Ok(None)` while it is incomplete. At `eof`, a body without a length runs
/// to the end.
pub fn parse_reply(raw: &[u8], eof: bool) -> Result<Option<Reply>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let head_len = match response.parse(raw) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(error) => return Err(BenchError::Http(format!("an invalid HTTP reply: {error}"))),
    };
    let status = response
        .code
        .ok_or_else(|| BenchError::Http("an HTTP reply without a status".to_owned()))?;
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|header| header.name.eq_ignore_ascii_case(name))
            .and_then(|header| std::str::from_utf8(header.value).ok())
            .map(str::trim)
    };
    let rest = &raw[head_len..];
    if header("transfer-encoding").is_some_and(|value| value.eq_ignore_ascii_case("chunked")) {
        return Ok(dechunk(rest)?.map(|body| Reply { status, body }));
    }
    if let Some(length) = header("content-length") {
        let length: usize = length
            .parse()
            .map_err(|_| BenchError::Http(format!("an invalid Content-Length {length:?}")))?;
        return Ok((rest.len() >= length).then(|| Reply {
            status,
            body: rest[..length].to_vec(),
        }));
    }
    // 204 and 304 have no body; anything else without a length ends at the close.
    if status == 204 || status == 304 || eof {
        let body = if status == 204 || status == 304 {
            Vec::new()
        } else {
            rest.to_vec()
        };
        return Ok(Some(Reply { status, body }));
    }
    Ok(None)
}

/// Decodes a chunked body; `Ok(None)` while the last chunk has not arrived.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>> {
    let mut body = Vec::new();
    // Bounded: every turn consumes at least a size line, and `rest` is at most 64 KiB.
    loop {
        let Some(line_end) = rest.windows(2).position(|pair| pair == b"\r\n") else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&rest[..line_end])
            .map_err(|_| BenchError::Http("a chunk size that is not text".to_owned()))?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| BenchError::Http(format!("an invalid chunk size {size_text:?}")))?;
        rest = &rest[line_end + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// Creates `room` with `username` as host (`POST /api/rooms`); the grant's token.
pub async fn create_room(
    addr: SocketAddr,
    room: &str,
    username: &str,
    deadline: Instant,
) -> Result<String> {
    let body = json!({ "room": room, "username": username }).to_string();
    grant(
        addr,
        "create",
        "/api/rooms".to_owned(),
        room,
        &body,
        deadline,
    )
    .await
}

/// Joins `room` as `username` (`POST /api/rooms/{room}/join`); the grant's token.
pub async fn join_room(
    addr: SocketAddr,
    room: &str,
    username: &str,
    deadline: Instant,
) -> Result<String> {
    if !room
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
    {
        return Err(BenchError::InvalidArguments(format!(
            "room {room:?} does not fit in a URL path as it is"
        )));
    }
    let body = json!({ "username": username }).to_string();
    let path = format!("/api/rooms/{room}/join");
    grant(addr, "join", path, room, &body, deadline).await
}

/// Posts a create or join until it is granted, refused for good, or `deadline` passed;
/// `server_busy` is asked again after a short pause.
async fn grant(
    addr: SocketAddr,
    operation: &'static str,
    path: String,
    room: &str,
    body: &str,
    deadline: Instant,
) -> Result<String> {
    loop {
        let reply = post_json(addr, &path, body, deadline).await?;
        let value: Value = serde_json::from_slice(&reply.body).map_err(|e| {
            BenchError::Http(format!(
                "POST {path} answered {} with a body that is not JSON: {e}",
                reply.status
            ))
        })?;
        if (200..300).contains(&reply.status) {
            return value["token"]
                .as_str()
                .filter(|token| !token.is_empty())
                .map(str::to_owned)
                .ok_or_else(|| {
                    BenchError::Http(format!(
                        "POST {path} answered {} without a token",
                        reply.status
                    ))
                });
        }
        let code = value["error"].as_str().unwrap_or("unknown").to_owned();
        if code == SERVER_BUSY && Instant::now() + BUSY_BACKOFF < deadline {
            tracing::debug!(room, "server busy; asking again");
            tokio::time::sleep(BUSY_BACKOFF).await;
            continue;
        }
        return Err(BenchError::Refused {
            operation,
            room: room.to_owned(),
            code,
            message: value["message"].as_str().unwrap_or_default().to_owned(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_with_a_length_is_complete_once_the_body_is_there() {
        let raw = b"HTTP/1.1 201 Created\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"token\":1}";
        assert_eq!(parse_reply(&raw[..raw.len() - 1], false).unwrap(), None);
        let reply = parse_reply(raw, false).unwrap().unwrap();
        assert_eq!(reply.status, 201);
        assert_eq!(reply.body, b"{\"token\":1}");
        assert_eq!(
            parse_reply(b"HTTP/1.1 200 OK\r\nconte", false).unwrap(),
            None
        );
    }

    #[test]
    fn chunked_and_unbounded_bodies_are_read() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n3;x=y\r\n:1}\r\n0\r\n\r\n";
        assert_eq!(parse_reply(raw, false).unwrap().unwrap().body, b"{\"a\":1}");
        assert_eq!(parse_reply(&raw[..raw.len() - 7], false).unwrap(), None);
        let raw = b"HTTP/1.1 409 Conflict\r\n\r\n{}";
        assert_eq!(parse_reply(raw, false).unwrap(), None);
        assert_eq!(parse_reply(raw, true).unwrap().unwrap().body, b"{}");
        assert!(parse_reply(b"NOT HTTP\r\n\r\n", true).is_err());
        assert!(
            parse_reply(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                true
            )
            .is_err()
        );
    }
}
