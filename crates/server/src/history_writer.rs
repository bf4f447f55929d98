//! The history thread: the only code that touches the history database once the server runs.
//!
//! Chat arrives over a channel in id order (the engine's [`HistoryJob`]s); the thread stores
//! whatever has queued up in one transaction, and only then hands the batch back to the engine
//! ([`Engine::committed`](crate::engine::Engine::committed)), whose acks and relays it sends
//! through the same [`BatchSender`] path as the relay. This is
//! classic group commit: an idle thread commits the first message at once (a quiet room pays
//! one commit of latency), and what arrives while a commit is in flight waits for the next one,
//! so a busy room's batches grow with its rate and no time window is ever slept out.
//! Replays that reach back beyond the in-memory cache, and `history` pages, are read here too,
//! so the relay loop never waits for the disk.

use std::collections::VecDeque;
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::ucrp;
use chat_protocol::v2::{ChatMessage, ServerV2};

use crate::engine::{Effects, HistoryJob, Outbox, PendingMessage, StoredMessage};
use crate::history::HistoryStore;
use crate::send::BatchSender;
use crate::shared::{SharedEngine, lock};
use crate::stats::RelayStats;

/// Most messages stored in one transaction.
const MAX_BATCH: usize = 1024;
/// Longest wait between retries of a failed commit (disk full, I/O error).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Starts the history thread. It sends from `socket`, a clone of the data-plane socket,
/// through the same batching path as the relay, and counts what it sends in `stats`. Once
/// `stopping` is set, a failing commit is no longer retried, so that a full disk cannot hold
/// up shutdown; the thread's result is how many accepted messages it could not store.
pub fn spawn(
    store: HistoryStore,
    retention: u64,
    engine: SharedEngine,
    socket: UdpSocket,
    stopping: Arc<AtomicBool>,
    stats: Arc<RelayStats>,
) -> std::io::Result<(Sender<HistoryJob>, JoinHandle<u64>)> {
    let (jobs, queue) = mpsc::channel();
    let thread = thread::Builder::new()
        .name("history".into())
        .spawn(move || {
            let link = Link {
                socket: &socket,
                sender: BatchSender::default(),
                stats: &stats,
                fx: Effects::default(),
            };
            run(store, retention, &engine, link, &queue, &stopping)
        })?;
    Ok((jobs, thread))
}

/// Where the history thread's datagrams go out: the relay's batching path, on a clone of its
/// socket.
struct Link<'a> {
    socket: &'a UdpSocket,
    sender: BatchSender,
    stats: &'a RelayStats,
    fx: Effects,
}

impl Link<'_> {
    /// Sends every datagram queued and empties the queue.
    fn flush(&mut self) {
        self.sender
            .send_all(self.socket, &self.fx.datagrams, self.stats);
        self.fx.datagrams.clear();
    }
}

fn run(
    mut store: HistoryStore,
    retention: u64,
    engine: &SharedEngine,
    mut link: Link<'_>,
    queue: &Receiver<HistoryJob>,
    shutting_down: &AtomicBool,
) -> u64 {
    let mut not_stored = 0;
    // Jobs the engine asked for while it took a commit: this thread is their history thread.
    let mut own: VecDeque<HistoryJob> = VecDeque::new();
    while let Some(first) = own.pop_front().or_else(|| queue.recv().ok()) {
        let mut batch = Vec::new();
        let mut reads = Vec::new();
        let mut stopping = false;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                HistoryJob::Store(pending) => batch.push(pending),
                HistoryJob::Stop => stopping = true,
                other => reads.push(other),
            }
            if stopping || batch.len() >= MAX_BATCH {
                break;
            }
            next = own.pop_front().or_else(|| queue.try_recv().ok());
        }
        if !batch.is_empty() {
            if commit(&mut store, &batch, retention, shutting_down) {
                lock(engine).committed(&batch, &mut link.fx);
                own.extend(link.fx.history.drain(..));
            } else {
                not_stored += batch.len() as u64;
            }
        }
        for job in reads {
            serve_read(&store, job, &mut link.fx.datagrams);
        }
        link.flush();
        if stopping {
            break;
        }
    }
    not_stored
}

/// Stores a batch, retrying until it succeeds: the ids in it are already promised, so giving
/// up would leave a gap every member waits on. Once the server is shutting down, a failure is
/// final (the senders were never acked and will retransmit to the restarted server), and the
/// batch is reported as not stored.
fn commit(
    store: &mut HistoryStore,
    batch: &[PendingMessage],
    retention: u64,
    shutting_down: &AtomicBool,
) -> bool {
    let mut delay = Duration::from_millis(50);
    loop {
        match store.store(batch.iter().map(|pending| &pending.stored), retention) {
            Ok(()) => return true,
            Err(error) if shutting_down.load(Ordering::Relaxed) => {
                tracing::error!(%error, messages = batch.len(), "history write failed during shutdown; these messages were never acknowledged and are not stored");
                return false;
            }
            Err(error) => {
                tracing::error!(%error, retry_in = ?delay, "history write failed; retrying");
                thread::sleep(delay);
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}

fn serve_read(store: &HistoryStore, job: HistoryJob, out: &mut Outbox) {
    match job {
        HistoryJob::Replay {
            room_uid,
            after,
            upto,
            to,
        } => match store.range(room_uid, after, upto, usize::MAX) {
            Ok(messages) => {
                for stored in messages {
                    out.unicast(to, |buf| {
                        ucrp::encode_v2_msg(&stored.message, buf);
                        Ok(())
                    });
                }
            }
            Err(error) => tracing::warn!(%error, "replay from history failed"),
        },
        HistoryJob::Page {
            room_uid,
            before,
            limit,
            to,
        } => match store.page(room_uid, before, limit) {
            Ok((messages, more)) => {
                let frame = history_frame(messages, more);
                out.unicast(to, |buf| {
                    buf.extend_from_slice(&frame);
                    Ok(())
                });
            }
            Err(error) => tracing::warn!(%error, "history page failed"),
        },
        HistoryJob::DeleteRoom(room_uid) => {
            if let Err(error) = store.delete_room(room_uid) {
                tracing::warn!(%error, "deleting a closed room's history failed");
            }
        }
        HistoryJob::Forget { room_uid, upto } => {
            if let Err(error) = store.delete_up_to(room_uid, upto) {
                tracing::warn!(%error, "forgetting a pair room's conversation failed");
            }
        }
        HistoryJob::Store(_) | HistoryJob::Stop => {}
    }
}

/// One `history` datagram: the newest messages of the page that fit in a datagram, and at
/// least one, so that paging back always makes progress (a message stored before stored
/// messages were bounded to fit a page is shortened to fit).
fn history_frame(stored: Vec<StoredMessage>, more: bool) -> Vec<u8> {
    let mut messages: Vec<ChatMessage> = stored.into_iter().map(|s| s.message).collect();
    let mut more = more;
    loop {
        let mut frame = Vec::new();
        ucrp::encode_v2(
            &ServerV2::History {
                messages: messages.clone(),
                more,
            },
            &mut frame,
        );
        if frame.len() <= MAX_DATAGRAM || messages.is_empty() {
            return frame;
        }
        if let [only] = &mut messages[..] {
            let excess = frame.len() - MAX_DATAGRAM;
            let budget = ucrp::json_escaped_len(&only.text).saturating_sub(excess + 3);
            let kept = ucrp::split_escaped(&only.text, budget.max(1))[0].to_owned();
            only.text = kept + "…";
            continue;
        }
        // Drop the oldest: the client asks again with `before` set to what it got.
        messages.remove(0);
        more = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_pages_always_fit_in_a_datagram() {
        let stored: Vec<StoredMessage> = (1..=100)
            .map(|id| StoredMessage {
                room_uid: 1,
                member_uid: 1,
                seq: None,
                message: ChatMessage {
                    id,
                    from: "someone".into(),
                    text: "x".repeat(200),
                    ts: 0,
                },
            })
            .collect();
        let frame = history_frame(stored, false);
        assert!(frame.len() <= MAX_DATAGRAM);
        let ServerV2::History { messages, more } = serde_json::from_slice(&frame[1..]).unwrap()
        else {
            panic!("not a history frame");
        };
        assert!(more, "older messages remain after trimming");
        assert_eq!(messages.last().unwrap().id, 100, "the newest are kept");
        assert!(messages.len() > 10);
    }
}
