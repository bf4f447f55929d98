//! The tunnel: the membership's TLS connection, kept open after the handshake, carrying
//! sealed datagrams as u16-length frames both ways. A task owns it: it forwards frames
//! from the conversation, reports the frames it reads, and when the connection breaks
//! (a server restart) connects again with backoff and attaches, which gives fresh keys.
//!
//! Frames to write are tagged with the generation of the keys they were sealed under, so
//! that none sealed under old keys goes out on a new connection.

use std::time::Duration;

use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::sealed::{KeyMaterial, TunnelFrame, decode_tunnel_frame};
use chat_protocol::tcrp::ErrorCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::tls::{ControlStream, Reattach};
use crate::error::ClientError;

/// Frames waiting to be written; beyond this the caller's frame is dropped (UDP-like: the
/// conversation retransmits what is not acked).
pub const OUTGOING_CAPACITY: usize = 256;
/// Events waiting for the conversation; the reader waits when it is full.
pub const EVENT_CAPACITY: usize = 256;
/// The first wait before connecting again; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// The longest wait between attempts.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long closing waits for queued frames (a `leave`) to be written.
pub const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// What the tunnel task reports.
#[derive(Debug)]
pub enum TunnelEvent {
    /// A sealed datagram read off the tunnel.
    Datagram(Vec<u8>),
    /// The connection broke; the task is connecting again.
    Lost(String),
    /// Connected and attached again: fresh keys, counters from 1. Frames are written only
    /// when sent with this generation.
    Attached {
        /// The new keys.
        keys: KeyMaterial,
        /// The key id (the same membership's).
        key_id: u32,
        /// Tag for frames sealed under these keys.
        generation: u64,
    },
    /// The server no longer knows the membership (its room is gone).
    Gone,
    /// Connecting again is pointless or unsafe (a changed certificate); the task ended.
    Failed(ClientError),
}

/// The handle the data plane keeps.
#[derive(Debug)]
pub struct Tunnel {
    outgoing: Option<mpsc::Sender<(u64, Vec<u8>)>>,
    /// What the task reports.
    pub events: mpsc::Receiver<TunnelEvent>,
    task: JoinHandle<()>,
}

impl Tunnel {
    /// Starts the task on the handshake's connection (generation 0).
    pub fn spawn(stream: Box<ControlStream>, leftover: Vec<u8>, reattach: Reattach) -> Self {
        let (outgoing, to_write) = mpsc::channel(OUTGOING_CAPACITY);
        let (report, events) = mpsc::channel(EVENT_CAPACITY);
        let task = tokio::spawn(run(stream, leftover, reattach, to_write, report));
        Self {
            outgoing: Some(outgoing),
            events,
            task,
        }
    }

    /// Queues a frame (already framed) sealed under `generation`'s keys; `false` when it
    /// was dropped (queue full, or the task ended).
    pub fn send(&self, generation: u64, frame: Vec<u8>) -> bool {
        self.outgoing
            .as_ref()
            .is_some_and(|outgoing| outgoing.try_send((generation, frame)).is_ok())
    }

    /// Lets the task write what is queued and close the connection, waiting at most
    /// [`CLOSE_WAIT`].
    pub async fn close(&mut self) {
        self.outgoing = None;
        if tokio::time::timeout(CLOSE_WAIT, &mut self.task)
            .await
            .is_err()
        {
            self.task.abort();
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// How one connection's life ended.
enum Ended {
    /// The conversation closed the tunnel.
    Closed,
    /// The connection broke.
    Broken(String),
}

async fn run(
    stream: Box<ControlStream>,
    leftover: Vec<u8>,
    reattach: Reattach,
    mut to_write: mpsc::Receiver<(u64, Vec<u8>)>,
    report: mpsc::Sender<TunnelEvent>,
) {
    let mut stream = stream;
    let mut leftover = leftover;
    let mut generation = 0;
    loop {
        match carry(stream, leftover, generation, &mut to_write, &report).await {
            Ended::Closed => return,
            Ended::Broken(reason) => {
                tracing::info!(%reason, "the tunnel broke; connecting again");
                if report.send(TunnelEvent::Lost(reason)).await.is_err() {
                    return;
                }
            }
        }
        let mut backoff = FIRST_BACKOFF;
        let secured = loop {
            // Frames queued meanwhile were sealed under keys that are about to change.
            let wait = tokio::time::sleep(backoff);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    () = &mut wait => break,
                    frame = to_write.recv() => if frame.is_none() { return },
                }
            }
            match reattach.attach().await {
                Ok(secured) => break secured,
                Err(ClientError::Refused { code, .. })
                    if code == ErrorCode::RoomNotFound.as_str() =>
                {
                    let _ = report.send(TunnelEvent::Gone).await;
                    return;
                }
                Err(error @ ClientError::Untrusted(_)) => {
                    let _ = report.send(TunnelEvent::Failed(error)).await;
                    return;
                }
                Err(error) => {
                    tracing::info!(%error, "cannot attach yet");
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        };
        generation += 1;
        let Some(key_id) = secured.membership.grant.key_id else {
            return;
        };
        let attached = TunnelEvent::Attached {
            keys: secured.keys,
            key_id,
            generation,
        };
        if report.send(attached).await.is_err() {
            return;
        }
        stream = secured.stream;
        leftover = secured.leftover;
    }
}

/// Carries frames on one connection until it breaks or the conversation closes it.
async fn carry(
    stream: Box<ControlStream>,
    mut received: Vec<u8>,
    generation: u64,
    to_write: &mut mpsc::Receiver<(u64, Vec<u8>)>,
    report: &mpsc::Sender<TunnelEvent>,
) -> Ended {
    let (mut reader, mut writer) = tokio::io::split(*stream);
    let mut chunk = vec![0u8; MAX_DATAGRAM + 2];
    loop {
        // Every complete frame received so far goes up first.
        loop {
            match decode_tunnel_frame(&received) {
                Ok(Some((frame, used))) => {
                    if let TunnelFrame::Datagram(datagram) = frame
                        && report
                            .send(TunnelEvent::Datagram(datagram.to_vec()))
                            .await
                            .is_err()
                    {
                        return Ended::Closed;
                    }
                    received.drain(..used);
                }
                Ok(None) => break,
                Err(error) => return Ended::Broken(error.to_string()),
            }
        }
        tokio::select! {
            read = reader.read(&mut chunk) => match read {
                Ok(0) => return Ended::Broken("the server closed the connection".into()),
                Ok(len) => received.extend_from_slice(&chunk[..len]),
                Err(error) => return Ended::Broken(error.to_string()),
            },
            frame = to_write.recv() => match frame {
                Some((tag, frame)) if tag == generation => {
                    if let Err(error) = writer.write_all(&frame).await {
                        return Ended::Broken(error.to_string());
                    }
                    if let Err(error) = writer.flush().await {
                        return Ended::Broken(error.to_string());
                    }
                }
                Some(_) => tracing::debug!("dropping a frame sealed under old keys"),
                None => {
                    // Closing: what was queued is written; tell the server we are done.
                    let _ = writer.shutdown().await;
                    return Ended::Closed;
                }
            },
        }
    }
}
