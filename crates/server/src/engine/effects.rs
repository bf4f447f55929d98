//! What the engine decided, for the I/O layer to carry out: datagrams to send ([`Outbox`])
//! and work for the history thread ([`HistoryJob`]), gathered in [`Effects`]. State changes
//! for the journal are taken separately ([`Engine::take_changes`](super::Engine::take_changes)),
//! because the state writer batches them on its own schedule.
//!
//! Each I/O loop owns one `Effects` and reuses it, so relaying a chat message encodes its
//! frame once into the outbox's buffer and allocates nothing per datagram or per recipient.

use std::ops::Range;
use std::sync::Arc;

use chat_protocol::ucrp::UcrpError;
use chat_protocol::v2::ChatMessage;

use super::endpoint::Endpoint;
use super::room::{MemberId, Recipient, RoomId};

/// Everything one input to the engine asks the outside world to do.
#[derive(Debug, Default)]
pub struct Effects {
    /// Datagrams to send, all through the one batching sender.
    pub datagrams: Outbox,
    /// Work for the history thread, in the order decided (chat to store in id order).
    pub history: Vec<HistoryJob>,
    /// Messages replayed to members who caught up (from memory, or asked of the history
    /// thread), for the metrics.
    pub replayed: u64,
}

impl Effects {
    /// Forgets everything, keeping the buffers' capacity.
    pub fn clear(&mut self) {
        self.datagrams.clear();
        self.history.clear();
        self.replayed = 0;
    }

    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.datagrams.is_empty() && self.history.is_empty()
    }
}

/// One stored message with what deduplication needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The room it belongs to.
    pub room_uid: u64,
    /// Who sent it (stable across restarts, unlike process-local member ids).
    pub member_uid: u64,
    /// The sender's sequence number, for version-2 senders.
    pub seq: Option<u64>,
    /// A direct message's recipient (its stable id); `None` for the whole room. Only the
    /// sender and the recipient may read it.
    pub recipient_uid: Option<u64>,
    /// The message as members see it.
    pub message: ChatMessage,
}

/// A message accepted by the engine and waiting to be stored; handed back to
/// [`Engine::committed`](super::Engine::committed) once it is.
#[derive(Debug, Clone)]
pub struct PendingMessage {
    /// The room (process-local id).
    pub room_id: RoomId,
    /// The sender (process-local id), who is acked and skipped by the relay.
    pub sender: MemberId,
    /// A direct message's recipient (process-local id), the only member it is relayed to.
    pub recipient: Option<MemberId>,
    /// Whether version-1 members already got it (version-1 chat is relayed at once).
    pub v1_relayed: bool,
    /// Whether anyone waits for the commit: the sender's ack, or the relay to version-2
    /// members (and to version-1 ones when a version-2 member sent it). Version-1 chat among
    /// version-1 members only was relayed already, so its commit may wait to share a batch.
    pub awaited: bool,
    /// The version-2 `msg` event, encoded once.
    pub v2_frame: Arc<[u8]>,
    /// What goes in the database.
    pub stored: StoredMessage,
}

/// Work for the history thread.
#[derive(Debug)]
pub enum HistoryJob {
    /// Store a message, then report it committed.
    Store(PendingMessage),
    /// Scale-out: store a message another node committed (idempotently by room and id);
    /// nobody waits on it.
    Mirror(StoredMessage),
    /// Send `to` the stored messages with `after < id <= upto`.
    Replay {
        /// The room.
        room_uid: u64,
        /// Newest id the member has.
        after: u64,
        /// Newest id to send.
        upto: u64,
        /// The member's address.
        to: Endpoint,
        /// The member's stable id: direct messages between others are sent as `skip`.
        reader_uid: u64,
    },
    /// Answer a `history` request.
    Page {
        /// The room.
        room_uid: u64,
        /// Only messages older than this id.
        before: Option<u64>,
        /// At most this many.
        limit: usize,
        /// The member's address.
        to: Endpoint,
        /// The member's stable id: direct messages between others are left out.
        reader_uid: u64,
    },
    /// Answer a `search` request.
    Search {
        /// The room.
        room_uid: u64,
        /// The words, as sent (checked: not empty, at most `MAX_SEARCH` bytes).
        words: String,
        /// Only messages older than this id.
        before: Option<u64>,
        /// At most this many.
        limit: usize,
        /// The member's address.
        to: Endpoint,
        /// The member's stable id: direct messages between others are left out.
        reader_uid: u64,
    },
    /// A room closed: forget its messages.
    DeleteRoom(u64),
    /// A pair room's conversation ended: forget its messages up to `upto`.
    Forget {
        /// The room.
        room_uid: u64,
        /// Newest id to forget.
        upto: u64,
    },
    /// Finish what came before and stop.
    Stop,
}

/// Who receives one encoded frame.
#[derive(Debug)]
enum Target {
    One(Endpoint),
    /// Every recipient in the list except `skip` (the sender).
    Fanout {
        to: Arc<[Recipient]>,
        skip: Option<MemberId>,
    },
}

/// Frames to send, and to whom.
#[derive(Debug, Default)]
pub struct Outbox {
    bytes: Vec<u8>,
    sends: Vec<(Range<usize>, Target)>,
}

impl Outbox {
    /// Forgets everything queued, keeping the buffers' capacity.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.sends.clear();
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.sends.is_empty()
    }

    /// Queues one frame, written by `write`, for one endpoint. A frame that fails to encode is
    /// not queued.
    pub fn unicast(
        &mut self,
        to: Endpoint,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), UcrpError>,
    ) {
        if let Some(range) = self.write(write) {
            self.sends.push((range, Target::One(to)));
        }
    }

    /// Queues one frame, written once by `write`, for every recipient but `skip`.
    pub fn fanout(
        &mut self,
        to: &Arc<[Recipient]>,
        skip: Option<MemberId>,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), UcrpError>,
    ) {
        if to.iter().all(|recipient| Some(recipient.member) == skip) {
            return;
        }
        let Some(range) = self.write(write) else {
            return;
        };
        self.sends.push((
            range,
            Target::Fanout {
                to: Arc::clone(to),
                skip,
            },
        ));
    }

    fn write(
        &mut self,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), UcrpError>,
    ) -> Option<Range<usize>> {
        let start = self.bytes.len();
        match write(&mut self.bytes) {
            Ok(()) => Some(start..self.bytes.len()),
            Err(error) => {
                tracing::debug!(%error, "frame not sent");
                self.bytes.truncate(start);
                None
            }
        }
    }

    /// Every (frame, endpoint) pair to send, in the order queued.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], Endpoint)> + '_ {
        self.sends.iter().flat_map(move |(range, target)| {
            let frame = &self.bytes[range.clone()];
            let addresses = match target {
                Target::One(addr) => Addresses::One(Some(*addr)),
                Target::Fanout { to, skip } => Addresses::Fanout(to.iter(), *skip),
            };
            addresses.map(move |addr| (frame, addr))
        })
    }
}

/// The endpoints of one queued frame; an enum rather than a boxed iterator so that walking the
/// outbox allocates nothing.
enum Addresses<'a> {
    One(Option<Endpoint>),
    Fanout(std::slice::Iter<'a, Recipient>, Option<MemberId>),
}

impl Iterator for Addresses<'_> {
    type Item = Endpoint;

    fn next(&mut self) -> Option<Endpoint> {
        match self {
            Self::One(addr) => addr.take(),
            Self::Fanout(recipients, skip) => recipients
                .find(|recipient| Some(recipient.member) != *skip)
                .map(|recipient| recipient.addr),
        }
    }
}
