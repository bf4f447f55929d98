//! Reading the two reply frames of a handshake: incrementally, within the contract's size
//! limits, and turning a refusal into a typed error.

use chat_protocol::limits::{MAX_TCRP_PAYLOAD, TCRP_HEADER_LEN};
use chat_protocol::tcrp::{Frame, State};
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::error::ClientError;
use crate::ui::format::sanitize;

/// Largest reply frame the contract allows: header, a room name of at most 255 bytes (its size
/// field is one byte) and the payload limit.
const MAX_REPLY_FRAME: usize = TCRP_HEADER_LEN + u8::MAX as usize + MAX_TCRP_PAYLOAD;
/// Both replies together never need more than this; the receive buffer stops growing here.
const MAX_REPLY_BUFFER: usize = 2 * MAX_REPLY_FRAME;

/// The State 1 reply, read leniently so that a refusal with a code this client does not know
/// still reaches the user as the server worded it.
#[derive(Debug, Deserialize)]
struct ComplianceReply {
    success: u8,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

/// Sends `request` and returns the payload of the accepted request's second reply.
pub(super) async fn exchange(stream: TcpStream, request: &[u8]) -> Result<Vec<u8>, ClientError> {
    exchange_on(stream, request)
        .await
        .map(|(payload, _, _)| payload)
}

/// [`exchange`] on any stream (TLS too), giving the stream back with whatever it had
/// already received after the replies, so that it can go on as a version-3 tunnel.
pub(crate) async fn exchange_on<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
) -> Result<(Vec<u8>, S, Vec<u8>), ClientError> {
    stream
        .write_all(request)
        .await
        .map_err(ClientError::HandshakeIo)?;
    stream.flush().await.map_err(ClientError::HandshakeIo)?;
    let mut replies = ReplyReader::new(stream);

    let compliance_frame = replies.next_frame().await?;
    expect_state(&compliance_frame, State::Compliance)?;
    let compliance: ComplianceReply = parse_json(&compliance_frame.payload, "compliance")?;
    if compliance.success != 1 {
        // The second frame only carries an empty token; the refusal is complete without it.
        return Err(ClientError::Refused {
            code: sanitize(compliance.error.as_deref().unwrap_or("unknown")).into_owned(),
            message: sanitize(
                compliance
                    .message
                    .as_deref()
                    .unwrap_or("the server gave no reason"),
            )
            .into_owned(),
        });
    }

    let complete_frame = replies.next_frame().await?;
    expect_state(&complete_frame, State::Complete)?;
    Ok((complete_frame.payload, replies.stream, replies.buffer))
}

fn expect_state(frame: &Frame, expected: State) -> Result<(), ClientError> {
    if frame.state == expected {
        Ok(())
    } else {
        Err(ClientError::InvalidReply(format!(
            "expected a frame in state {}, got state {}",
            expected as u8, frame.state as u8
        )))
    }
}

pub(crate) fn parse_json<T: for<'de> Deserialize<'de>>(
    payload: &[u8],
    what: &str,
) -> Result<T, ClientError> {
    serde_json::from_slice(payload)
        .map_err(|error| ClientError::InvalidReply(format!("the {what} payload: {error}")))
}

/// Reads reply frames incrementally from a byte stream, never buffering more than two
/// maximum-size frames.
struct ReplyReader<R> {
    stream: R,
    buffer: Vec<u8>,
}

impl<R: AsyncRead + Unpin> ReplyReader<R> {
    fn new(stream: R) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
        }
    }

    async fn next_frame(&mut self) -> Result<Frame, ClientError> {
        let mut chunk = [0u8; 4096];
        loop {
            match Frame::decode(&self.buffer) {
                Ok(Some((frame, used))) => {
                    self.buffer.drain(..used);
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(error) => return Err(ClientError::InvalidReply(error.to_string())),
            }
            let room = MAX_REPLY_BUFFER.saturating_sub(self.buffer.len());
            if room == 0 {
                return Err(ClientError::InvalidReply(
                    "the replies are larger than the contract allows".into(),
                ));
            }
            let limit = room.min(chunk.len());
            let read = self
                .stream
                .read(&mut chunk[..limit])
                .await
                .map_err(ClientError::HandshakeIo)?;
            if read == 0 {
                return Err(ClientError::ClosedEarly);
            }
            self.buffer.extend_from_slice(&chunk[..read]);
        }
    }
}
