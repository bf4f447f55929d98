//! The unacked queue: chat messages sent reliably over UDP, without I/O. Every message gets a
//! sequence number, stays queued until the server acks it, and is retransmitted with
//! exponential backoff in the meantime. The caller supplies the clock and does the sending.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::pace::{MAX_PACE_INTERVAL, Pacer};

/// First retransmission delay after a message is sent.
pub const FIRST_RETRANSMIT: Duration = Duration::from_millis(300);
/// The backoff doubles up to this delay and stays there.
pub const MAX_RETRANSMIT: Duration = Duration::from_secs(3);
/// Most unacked messages kept; beyond this new lines are refused.
pub const MAX_PENDING: usize = 1_000;

/// The delays between retransmissions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Delay before the first retransmission.
    pub first: Duration,
    /// Largest delay between two retransmissions.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            first: FIRST_RETRANSMIT,
            max: MAX_RETRANSMIT,
        }
    }
}

impl Backoff {
    /// The delay that follows `current`: doubled, capped at [`Backoff::max`].
    pub fn after(&self, current: Duration) -> Duration {
        current.saturating_mul(2).min(self.max)
    }
}

/// A new message was refused because too many are still unacked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueFull {
    /// How many messages are waiting for an ack.
    pub pending: usize,
}

/// A message waiting for its ack.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Pending {
    text: String,
    /// Whether it went out at least once (only first sends are paced).
    sent: bool,
    /// When to send it (again).
    next_send: Instant,
    /// The delay to wait after that send.
    interval: Duration,
}

/// The sender side of version-2 reliability for one token: sequence numbers from 1, pending
/// messages, their retransmission schedule.
#[derive(Debug, Clone)]
pub struct UnackedQueue {
    next_seq: u64,
    pending: BTreeMap<u64, Pending>,
    capacity: usize,
    backoff: Backoff,
    pacer: Option<Pacer>,
}

impl Default for UnackedQueue {
    fn default() -> Self {
        Self::new(MAX_PENDING, Backoff::default())
    }
}

impl UnackedQueue {
    /// An empty queue whose first message gets seq 1.
    pub fn new(capacity: usize, backoff: Backoff) -> Self {
        Self {
            next_seq: 1,
            pending: BTreeMap::new(),
            capacity,
            backoff,
            pacer: None,
        }
    }

    /// Paces first sends from now on (retransmissions are not paced: the server does not
    /// count a seq it already has).
    pub fn pace(&mut self, pacer: Pacer) {
        self.pacer = Some(pacer);
    }

    /// Takes the right to send one other flood-counted message (typing, /who, /history)
    /// now; always `true` without a pacer.
    pub fn try_spend(&mut self, now: Instant) -> bool {
        self.pacer.as_mut().is_none_or(|pacer| pacer.try_take(now))
    }

    /// Queues `text` under the next seq, to be sent at once: [`UnackedQueue::due`] returns it for
    /// any `now` from this one on.
    pub fn submit(&mut self, text: String, now: Instant) -> Result<u64, QueueFull> {
        if self.pending.len() >= self.capacity {
            return Err(QueueFull {
                pending: self.pending.len(),
            });
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.pending.insert(
            seq,
            Pending {
                text,
                sent: false,
                next_send: now,
                interval: self.backoff.first,
            },
        );
        Ok(seq)
    }

    /// The messages to send now, oldest first, each rescheduled with a longer delay.
    /// First sends wait for the pacer, in seq order: once one has to wait, later ones do too.
    pub fn due(&mut self, now: Instant) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let mut first_sends_wait = false;
        for (&seq, pending) in &mut self.pending {
            if pending.next_send > now {
                continue;
            }
            if !pending.sent {
                let allowed = !first_sends_wait
                    && self.pacer.as_mut().is_none_or(|pacer| pacer.try_take(now));
                if !allowed {
                    first_sends_wait = true;
                    continue;
                }
                pending.sent = true;
            }
            out.push((seq, pending.text.clone()));
            pending.next_send = now + pending.interval;
            pending.interval = self.backoff.after(pending.interval);
        }
        out
    }

    /// Makes every pending message due at `now`, e.g. once the server answers again after a
    /// silence, instead of waiting out long backoffs.
    pub fn hurry(&mut self, now: Instant) {
        for pending in self.pending.values_mut() {
            pending.next_send = pending.next_send.min(now);
        }
    }

    /// The server stored the message: it leaves the queue. Returns its text the first time,
    /// `None` for a seq that is not pending (a duplicate ack).
    pub fn acked(&mut self, seq: u64) -> Option<String> {
        self.pending.remove(&seq).map(|pending| pending.text)
    }

    /// The server refused the message for good (rate limited, too large, invalid): it is not
    /// retransmitted. Returns its text, `None` when it was not pending.
    pub fn refused(&mut self, seq: u64) -> Option<String> {
        self.acked(seq)
    }

    /// When the next (re)transmission is due, if any message is pending.
    pub fn next_due(&self) -> Option<Instant> {
        let paced = self.pacer.as_ref().map(Pacer::ready_at);
        let mut first_unsent = true;
        self.pending
            .values()
            .map(|pending| {
                if pending.sent {
                    return pending.next_send;
                }
                let at = match paced {
                    // Only the oldest unsent message can be next; the rest follow it.
                    Some(ready) if first_unsent => pending.next_send.max(ready),
                    Some(_) => Instant::now().max(pending.next_send) + MAX_PACE_INTERVAL,
                    None => pending.next_send,
                };
                first_unsent = false;
                at
            })
            .min()
    }

    /// How many messages wait for an ack.
    pub fn len(&self) -> usize {
        self.pending.len()
    }

    /// Whether every message was acked or refused.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn seqs_count_from_one() {
        let now = Instant::now();
        let mut queue = UnackedQueue::default();
        assert_eq!(queue.submit("a".into(), now), Ok(1));
        assert_eq!(queue.submit("b".into(), now), Ok(2));
        assert_eq!(queue.acked(1).as_deref(), Some("a"));
        // Acked seqs are never reused.
        assert_eq!(queue.submit("c".into(), now), Ok(3));
    }

    #[test]
    fn retransmissions_back_off_from_300_ms_doubling_to_3_s() {
        let start = Instant::now();
        let mut queue = UnackedQueue::default();
        queue.submit("hello".into(), start).unwrap();
        let mut sends = Vec::new();
        let mut now = start;
        while now <= start + Duration::from_secs(12) {
            if !queue.due(now).is_empty() {
                sends.push(now - start);
            }
            now += ms(10);
        }
        let expected: Vec<Duration> = [0, 300, 900, 2100, 4500, 7500, 10500]
            .into_iter()
            .map(ms)
            .collect();
        assert_eq!(sends, expected);
    }

    #[test]
    fn due_returns_each_message_once_per_slot_in_seq_order() {
        let now = Instant::now();
        let mut queue = UnackedQueue::default();
        queue.submit("one".into(), now).unwrap();
        queue.submit("two".into(), now).unwrap();
        assert_eq!(
            queue.due(now),
            vec![(1, "one".to_owned()), (2, "two".to_owned())]
        );
        assert!(queue.due(now).is_empty());
        assert!(queue.due(now + ms(299)).is_empty());
        assert_eq!(queue.due(now + ms(300)).len(), 2);
    }

    #[test]
    fn acked_messages_stop_being_retransmitted() {
        let now = Instant::now();
        let mut queue = UnackedQueue::default();
        queue.submit("one".into(), now).unwrap();
        queue.due(now);
        assert_eq!(queue.acked(1).as_deref(), Some("one"));
        assert_eq!(queue.acked(1), None, "a duplicate ack changes nothing");
        assert!(queue.due(now + Duration::from_secs(60)).is_empty());
        assert!(queue.is_empty());
        assert_eq!(queue.next_due(), None);
    }

    #[test]
    fn refused_messages_stop_being_retransmitted() {
        let now = Instant::now();
        let mut queue = UnackedQueue::default();
        queue.submit("spam".into(), now).unwrap();
        queue.submit("ok".into(), now).unwrap();
        queue.due(now);
        assert_eq!(queue.refused(1).as_deref(), Some("spam"));
        assert_eq!(queue.due(now + ms(300)), vec![(2, "ok".to_owned())]);
    }

    #[test]
    fn a_full_queue_refuses_new_lines() {
        let now = Instant::now();
        let mut queue = UnackedQueue::new(2, Backoff::default());
        queue.submit("a".into(), now).unwrap();
        queue.submit("b".into(), now).unwrap();
        assert_eq!(queue.submit("c".into(), now), Err(QueueFull { pending: 2 }));
        queue.acked(1);
        assert_eq!(queue.submit("c".into(), now), Ok(3));
    }

    #[test]
    fn a_paced_queue_sends_the_burst_then_one_per_interval_without_refusing() {
        let start = Instant::now();
        let mut queue = UnackedQueue::default();
        // The server allows 10 at once, then one per 200 ms: we send 9, then one per 220 ms.
        queue.pace(Pacer::new(10, ms(200), start));
        for line in 0..15 {
            queue.submit(format!("line {line}"), start).unwrap();
        }
        let first: Vec<u64> = queue.due(start).into_iter().map(|(seq, _)| seq).collect();
        assert_eq!(first, (1..=9).collect::<Vec<_>>());
        for seq in first {
            queue.acked(seq);
        }
        assert_eq!(queue.next_due(), Some(start + ms(220)));
        assert!(queue.due(start + ms(219)).is_empty());
        let mut sent_at = Vec::new();
        let mut now = start;
        while now <= start + Duration::from_secs(3) {
            for (seq, _) in queue.due(now) {
                if seq > 9 {
                    sent_at.push((seq, now - start));
                }
                queue.acked(seq);
            }
            now += ms(10);
        }
        let expected: Vec<(u64, Duration)> =
            (10..=15).map(|seq| (seq, ms(220 * (seq - 9)))).collect();
        assert_eq!(sent_at, expected);
    }

    #[test]
    fn hurry_makes_waiting_messages_due_now() {
        let now = Instant::now();
        let mut queue = UnackedQueue::default();
        queue.submit("a".into(), now).unwrap();
        queue.due(now);
        let later = now + ms(100);
        assert!(queue.due(later).is_empty());
        queue.hurry(later);
        assert_eq!(queue.next_due(), Some(later));
        assert_eq!(queue.due(later).len(), 1);
    }
}
