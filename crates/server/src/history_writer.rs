//! The history thread: the only code that touches the history database once the server runs.
//!
//! Chat arrives over a channel in id order (the engine's [`HistoryJob`]s); the thread stores
//! whatever has queued up in one transaction, and only then hands the batch back to the engine
//! ([`Engine::committed`](crate::engine::Engine::committed)), whose acks and relays it sends
//! through the same [`BatchSender`] path as the relay. This is
//! classic group commit: an idle thread commits the first message at once (a quiet room pays
//! one commit of latency), and what arrives while a commit is in flight waits for the next one,
//! so a busy room's batches grow with its rate and no time window is ever slept out for a
//! message somebody waits on. Version-1 chat among version-1 members was relayed before it
//! reached this thread and nobody waits for its commit, so a batch of only such messages waits
//! up to [`UNAWAITED_GATHER`] for company: one commit for many instead of one each.
//! Replays that reach back beyond the in-memory cache, and `history` pages, are read here too,
//! so the relay loop never waits for the disk.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use chat_protocol::limits::MAX_SERVER_MESSAGE;
use chat_protocol::ucrp;
use chat_protocol::v2::{ChatMessage, ServerV2};

use crate::cluster::{Cluster, Link as RedisLink, messages};
use crate::engine::{Effects, HistoryJob, Outbox, PendingMessage, StoredMessage};
use crate::history::HistoryStore;
use crate::send::{BatchSender, Transports};
use crate::shared::{SharedEngine, lock};
use crate::stats::RelayStats;

/// Most messages stored in one transaction.
const MAX_BATCH: usize = 1024;
/// How often the write-ahead log is copied into the database, off the commit path.
const CHECKPOINT_PERIOD: Duration = Duration::from_millis(50);
/// Frames (pages) of write-ahead log beyond which the checkpoint restarts it (SQLite's own
/// automatic checkpoint comes at 1,000).
const CHECKPOINT_RESTART_FRAMES: u64 = 1000;
/// Frames beyond which a commit checkpoints itself, should the checkpoint thread fall behind
/// (16 MiB of log).
const CHECKPOINT_BACKSTOP_FRAMES: u32 = 4096;
/// Longest a commit waits for a checkpoint's restart, and a restart for a gap between commits.
const CHECKPOINT_WAIT: Duration = Duration::from_secs(2);
/// Longest a batch that nobody waits on gathers before it is committed.
const UNAWAITED_GATHER: Duration = Duration::from_millis(20);
/// How long the history thread waits for work before it indexes what was stored for search.
const INDEX_WHEN_IDLE: Duration = Duration::from_millis(100);
/// Longest wait between retries of a failed commit (disk full, I/O error).
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Starts the history thread. It sends through `transports`, with the same batching path as
/// the relay, and counts what it sends in `stats`. Once
/// `stopping` is set, a failing commit is no longer retried, so that a full disk cannot hold
/// up shutdown; the thread's result is how many accepted messages it could not store.
///
/// `checkpoints`, a second connection to the same database, copies the write-ahead log into
/// it on a thread of its own, so that commits (and the acks behind them) never wait for that
/// `fsync`, except for the short restart that keeps the log bounded under constant load.
#[expect(
    clippy::too_many_arguments,
    reason = "the stores, the engine, the transports, the flags and, with --redis, the cluster"
)]
pub fn spawn(
    store: HistoryStore,
    checkpoints: HistoryStore,
    retention: u64,
    engine: SharedEngine,
    transports: Arc<Transports>,
    stopping: Arc<AtomicBool>,
    stats: Arc<RelayStats>,
    cluster: Option<Arc<Cluster>>,
) -> std::io::Result<(Sender<HistoryJob>, JoinHandle<u64>)> {
    let (jobs, queue) = mpsc::channel();
    let checkpointer = match store.checkpoint_elsewhere(CHECKPOINT_BACKSTOP_FRAMES, CHECKPOINT_WAIT)
    {
        Ok(()) => {
            let (stop, stopped) = mpsc::channel::<()>();
            let thread = thread::Builder::new()
                .name("checkpoint".into())
                .spawn(move || checkpoint_until_stopped(&checkpoints, &stopped))?;
            Some((stop, thread))
        }
        Err(error) => {
            tracing::warn!(%error, "history: checkpoints stay on the commit path");
            None
        }
    };
    let thread = thread::Builder::new()
        .name("history".into())
        .spawn(move || {
            let link = Link {
                transports: &transports,
                sender: BatchSender::default(),
                stats: &stats,
                fx: Effects::default(),
            };
            let redis = cluster.map(RedisLink::new);
            let not_stored = run(store, retention, &engine, link, &queue, &stopping, redis);
            if let Some((stop, thread)) = checkpointer {
                drop(stop);
                let _ = thread.join();
            }
            not_stored
        })?;
    Ok((jobs, thread))
}

/// Checkpoints every [`CHECKPOINT_PERIOD`], restarting the log once it is long, until the
/// history thread drops `stop`. A failure (a full disk, a long backup holding a snapshot) is
/// tried again next period; the log keeps every commit meanwhile.
fn checkpoint_until_stopped(store: &HistoryStore, stop: &Receiver<()>) {
    let mut restart = false;
    loop {
        let stopped = matches!(
            stop.recv_timeout(CHECKPOINT_PERIOD),
            Err(mpsc::RecvTimeoutError::Disconnected)
        );
        if stopped {
            // Closing the last connection checkpoints what is left.
            return;
        }
        match store.checkpoint(restart, CHECKPOINT_WAIT) {
            Ok(frames) => restart = frames > CHECKPOINT_RESTART_FRAMES,
            Err(error) => tracing::debug!(%error, "history checkpoint failed; the log keeps it"),
        }
    }
}

/// Where the history thread's datagrams go out: the relay's batching path, on a clone of its
/// socket.
struct Link<'a> {
    transports: &'a Transports,
    sender: BatchSender,
    stats: &'a RelayStats,
    fx: Effects,
}

impl Link<'_> {
    /// Sends every datagram queued and empties the queue.
    fn flush(&mut self) {
        self.sender
            .send_all(self.transports, &self.fx.datagrams, self.stats);
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
    mut redis: Option<RedisLink>,
) -> u64 {
    let mut not_stored = 0;
    // Jobs the engine asked for while it took a commit: this thread is their history thread.
    let mut own: VecDeque<HistoryJob> = VecDeque::new();
    loop {
        let first = match own.pop_front() {
            Some(job) => job,
            // Idle with messages the search index does not have: index them now, in one
            // batch, off the commit path.
            None if store.index_pending().0 => match queue.recv_timeout(INDEX_WHEN_IDLE) {
                Ok(job) => job,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    catch_up_index(&mut store);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            },
            None => match queue.recv() {
                Ok(job) => job,
                Err(_) => break,
            },
        };
        let mut batch = Vec::new();
        let mut mirrors = Vec::new();
        let mut reads = Vec::new();
        let mut stopping = false;
        let mut awaited = false;
        let mut gather_until = None;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                HistoryJob::Store(pending) => {
                    awaited |= pending.awaited;
                    batch.push(pending);
                }
                HistoryJob::Mirror(stored) => mirrors.push(stored),
                HistoryJob::Stop => stopping = true,
                other => reads.push(other),
            }
            if stopping || batch.len() >= MAX_BATCH {
                break;
            }
            next = own.pop_front().or_else(|| queue.try_recv().ok());
            if next.is_none() && !awaited && reads.is_empty() {
                // Only unawaited chat so far: wait a little for more to share its commit.
                let until = *gather_until.get_or_insert_with(|| Instant::now() + UNAWAITED_GATHER);
                let left = until.saturating_duration_since(Instant::now());
                next = queue.recv_timeout(left).ok();
            }
        }
        if !batch.is_empty() {
            let started = Instant::now();
            let published = match redis.as_mut() {
                Some(redis) => publish(redis, &mut batch, retention, shutting_down),
                None => true,
            };
            let stored = published && commit(&mut store, &batch, retention, shutting_down);
            link.stats
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            if stored {
                lock(engine).committed(&batch, &mut link.fx);
                own.extend(link.fx.history.drain(..));
                // HTTP requests waiting for their message to be stored read the outcome now.
                link.transports.web.committed();
            } else {
                not_stored += batch.len() as u64;
            }
            if store.index_pending().1 {
                // Stores never pause long enough: index the backlog between two commits.
                catch_up_index(&mut store);
            }
        }
        if !mirrors.is_empty()
            && let Err(error) = store.store(mirrors.iter(), retention)
        {
            // Redis has them: the local copy serves pages and search, and is caught up
            // from the stream when the node serves the room again.
            tracing::warn!(%error, messages = mirrors.len(), "history: storing other nodes' messages failed");
        }
        for job in reads {
            serve_read(&mut store, job, &mut link.fx.datagrams);
        }
        link.flush();
        if stopping {
            break;
        }
    }
    not_stored
}

/// Scale-out: has Redis assign each message its id and publish it, in order, retrying with
/// backoff while Redis is unavailable (nothing is acked meanwhile; the engine's backlog limit
/// stops taking chat once it is long). The ids replace the engine's provisional ones, in the
/// stored message and its encoded frame. At shutdown a failure is final, as for SQLite.
fn publish(
    redis: &mut RedisLink,
    batch: &mut [PendingMessage],
    retention: u64,
    shutting_down: &AtomicBool,
) -> bool {
    let node = redis.cluster().node_id.clone();
    let mut delay = Duration::from_millis(50);
    let ids = loop {
        let messages: Vec<(&StoredMessage, bool)> = batch
            .iter()
            .map(|pending| (&pending.stored, pending.v1_relayed))
            .collect();
        match redis.call(|con| messages::publish(con, &node, &messages, retention)) {
            Ok(ids) => break ids,
            Err(error) if shutting_down.load(Ordering::Relaxed) => {
                tracing::error!(%error, messages = batch.len(), "redis unavailable during shutdown; these messages were never acknowledged");
                return false;
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?delay, "publishing to redis failed; retrying");
                thread::sleep(delay);
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    };
    for (pending, (id, _dup)) in batch.iter_mut().zip(ids) {
        if pending.stored.message.id != id {
            pending.stored.message.id = id;
            let mut frame = Vec::with_capacity(pending.v2_frame.len() + 8);
            ucrp::encode_v2_msg(&pending.stored.message, &mut frame);
            pending.v2_frame = frame.into();
        }
    }
    true
}

/// Brings the search index up to date; a failure is tried again next time (a search catches
/// its room up itself).
fn catch_up_index(store: &mut HistoryStore) {
    if let Err(error) = store.catch_up_index() {
        tracing::warn!(%error, "indexing messages for search failed; will try again");
    }
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

fn serve_read(store: &mut HistoryStore, job: HistoryJob, out: &mut Outbox) {
    match job {
        HistoryJob::Replay {
            room_uid,
            after,
            upto,
            to,
            reader_uid,
        } => match store.range(room_uid, after, upto, usize::MAX) {
            Ok(messages) => {
                for stored in messages {
                    let readable = stored
                        .recipient_uid
                        .is_none_or(|to| to == reader_uid || stored.member_uid == reader_uid);
                    out.unicast(to, |buf| {
                        if readable {
                            ucrp::encode_v2_msg(&stored.message, buf);
                        } else {
                            // A direct message between two others: its id is used, nothing more.
                            crate::engine::direct::skip_frame(stored.message.id, buf);
                        }
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
            reader_uid,
        } => match store.page_for(room_uid, before, limit, Some(reader_uid)) {
            Ok((messages, more)) => {
                let frame = history_frame(messages, more);
                out.unicast(to, |buf| {
                    buf.extend_from_slice(&frame);
                    Ok(())
                });
            }
            Err(error) => tracing::warn!(%error, "history page failed"),
        },
        HistoryJob::Search {
            room_uid,
            words,
            before,
            limit,
            to,
            reader_uid,
        } => match store.search(room_uid, &words, before, limit, reader_uid) {
            Ok((messages, more)) => {
                let frame = page_frame(messages, more, |messages, more| ServerV2::Found {
                    words: words.clone(),
                    messages,
                    more,
                });
                out.unicast(to, |buf| {
                    buf.extend_from_slice(&frame);
                    Ok(())
                });
            }
            Err(error) => tracing::warn!(%error, "search failed"),
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
        HistoryJob::Store(_) | HistoryJob::Mirror(_) | HistoryJob::Stop => {}
    }
}

/// One `history` datagram: the newest messages of the page that fit in a datagram, and at
/// least one, so that paging back always makes progress (a message stored before stored
/// messages were bounded to fit a page is shortened to fit).
fn history_frame(stored: Vec<StoredMessage>, more: bool) -> Vec<u8> {
    page_frame(stored, more, |messages, more| ServerV2::History {
        messages,
        more,
    })
}

/// A page of messages in one datagram, as [`history_frame`] makes it, in the event `page`
/// makes of the messages and `more`.
fn page_frame(
    stored: Vec<StoredMessage>,
    more: bool,
    page: impl Fn(Vec<ChatMessage>, bool) -> ServerV2,
) -> Vec<u8> {
    let mut messages: Vec<ChatMessage> = stored.into_iter().map(|s| s.message).collect();
    let mut more = more;
    loop {
        let mut frame = Vec::new();
        ucrp::encode_v2(&page(messages.clone(), more), &mut frame);
        if frame.len() <= MAX_SERVER_MESSAGE || messages.is_empty() {
            return frame;
        }
        if let [only] = &mut messages[..] {
            let excess = frame.len() - MAX_SERVER_MESSAGE;
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
                recipient_uid: None,
                room_uid: 1,
                member_uid: 1,
                seq: None,
                message: ChatMessage {
                    id,
                    from: "someone".into(),
                    text: "x".repeat(200),
                    ts: 0,
                    me: false,
                    to: None,
                },
            })
            .collect();
        let frame = history_frame(stored, false);
        assert!(frame.len() <= MAX_SERVER_MESSAGE);
        let ServerV2::History { messages, more } = serde_json::from_slice(&frame[1..]).unwrap()
        else {
            panic!("not a history frame");
        };
        assert!(more, "older messages remain after trimming");
        assert_eq!(messages.last().unwrap().id, 100, "the newest are kept");
        assert!(messages.len() > 10);
    }
}
