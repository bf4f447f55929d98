//! The room model: rooms and their members, as the engine keeps them in memory.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::endpoint::Endpoint;
use super::seq_window::SeqWindow;
use crate::flood::{FloodPolicy, TokenBucket};
use crate::token::Token;

/// Identifies a room for the lifetime of the process (names can be reused after a close).
pub type RoomId = u64;
/// Identifies a member within the process; increases with every join, so it orders members.
pub type MemberId = u64;

/// What kind of room, which decides who may join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RoomKind {
    /// Anyone who knows the name may join; listed by operation 4.
    Public,
    /// Joining needs the password; only its salted slow hash is kept.
    Private {
        /// PHC-format argon2 hash of the password.
        password_hash: String,
    },
    /// A random 1:1 room made by operation 3; holds at most two members.
    Pair,
}

/// Which wire format a member asked for by how it registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WireVersion {
    /// The reference client's format.
    V1,
    /// `0xFF` + JSON, with acks and replay.
    V2,
}

/// One member of a room.
#[derive(Debug)]
pub struct Member {
    /// Process-local id.
    pub id: MemberId,
    /// Stable id, kept in the state file; history rows name their sender by it.
    pub uid: u64,
    /// The member's secret.
    pub token: Token,
    /// Display name, unique in the room case-insensitively.
    pub username: String,
    /// Where datagrams for this member go, once it registered.
    pub addr: Option<Endpoint>,
    /// Wire format chosen at registration.
    pub version: WireVersion,
    /// Last datagram received from this member (or when it joined).
    pub last_seen: Instant,
    /// Flood control state.
    pub flood: TokenBucket,
    /// Last time this member was told it was rate limited (so the warning itself cannot flood).
    pub warned_at: Option<Instant>,
    /// Recent version-2 sequence numbers, for deduplication.
    pub seqs: SeqWindow,
    /// How many stored messages may still be replayed to this member (see [`REPLAY_BUDGET`]).
    pub replay_budget: TokenBucket,
    /// Registers and pings: a bucket of its own, the size of the chat one, so that neither
    /// starves the other.
    pub probes: TokenBucket,
    /// The address that made the TCP handshake (not kept across restarts): a version-1
    /// client cannot answer a challenge, so it may register only from this IP.
    pub home_ip: Option<IpAddr>,
    /// Challenges sent to addresses that asked to be bound and have not echoed yet, oldest
    /// first, at most [`MAX_CHALLENGES`].
    pub challenges: VecDeque<Challenge>,
    /// Why the member is away (`/away`; empty: no reason given), at most `MAX_AWAY` bytes;
    /// `None` while present. Not kept across restarts.
    pub away: Option<String>,
    /// What kind of message each held-back `seq` is, for those that are not plain lines
    /// (actions, direct messages); bounded like the held messages themselves.
    pub held_kinds: BTreeMap<u64, Said>,
    /// A version-3 member's key id and keys; its datagrams must be sealed.
    pub sealing: Option<super::sealing::Sealing>,
    /// Scale-out: the member is served by another node (it joined or registered there), so
    /// this node neither relays to it nor times it out; see [`super::cluster`].
    pub remote: bool,
    /// Scale-out: a remote member that has registered somewhere, so the room heard it join.
    pub remote_registered: bool,
}

/// What kind of chat message a member sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Said {
    /// A line for the whole room.
    Line,
    /// An action (`/me`), shown as `* name text`.
    Action,
    /// A direct message to the member of that name (as typed).
    Direct(String),
}

/// A nonce sent to an address that asked to be bound to a token.
#[derive(Debug, Clone)]
pub struct Challenge {
    /// Where it went; the echo must come from there.
    pub addr: Endpoint,
    /// 32 lowercase hex characters from the OS CSPRNG.
    pub nonce: String,
    /// The `last_id` of the register that asked, for the replay once proven.
    pub last_id: Option<u64>,
    /// When it was sent; it expires after [`CHALLENGE_LIFETIME`].
    pub sent_at: Instant,
}

/// Pending challenges per member: a few addresses may be trying at once (a roaming client
/// and its retransmissions), and more cannot pile up.
pub const MAX_CHALLENGES: usize = 4;
/// How long a challenge can be echoed.
pub const CHALLENGE_LIFETIME: Duration = Duration::from_secs(30);

/// Replays per member, in messages: enough to catch up after minutes away at once, yet a
/// token holder that registers someone else's address cannot aim an unbounded stream at it.
pub const REPLAY_BUDGET: FloodPolicy = FloodPolicy {
    burst: 1024,
    rate: 256.0,
};

/// A registered member's address, as the relay needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recipient {
    /// Which member, so that the sender can be skipped.
    pub member: MemberId,
    /// Where to send.
    pub addr: Endpoint,
}

/// A stored message kept in memory for replay, already encoded as a version-2 `msg` event.
#[derive(Debug, Clone)]
pub struct CachedMessage {
    /// Room message id.
    pub id: u64,
    /// `0xFF` + the `msg` JSON.
    pub v2_frame: Arc<[u8]>,
    /// A direct message's (sender, recipient) stable ids: only they are replayed it.
    pub audience: Option<(u64, u64)>,
}

/// How many recent messages each room keeps in memory for replay; older ones are read from
/// the history database on the history thread.
pub const REPLAY_CACHE: usize = 256;

/// A room.
#[derive(Debug)]
pub struct Room {
    /// Process-local id.
    pub id: RoomId,
    /// Stable id, kept in the state file; history rows belong to it.
    pub uid: u64,
    /// The name members use.
    pub name: String,
    /// Who may join.
    pub kind: RoomKind,
    /// Unix milliseconds when the room was created.
    pub created_at_ms: u64,
    /// The host's member id; the room closes when the host goes.
    pub host: MemberId,
    /// Members in join order.
    pub members: BTreeMap<MemberId, Member>,
    /// Registered version-1 members, rebuilt on every membership change rather than per
    /// datagram, and shared with the relay without copying.
    pub v1_recipients: Arc<[Recipient]>,
    /// Registered version-2 members, likewise.
    pub v2_recipients: Arc<[Recipient]>,
    /// For pair rooms: when the room started waiting for a partner, for oldest-first pairing.
    pub waiting_since: u64,
    /// For pair rooms: who left lately (username key, when), so that `/next` does not pair
    /// someone straight back with the partner they just walked away from.
    pub left_lately: VecDeque<(String, Instant)>,
    /// Newest message id handed out (stored or being stored).
    pub last_id: u64,
    /// Newest message id known to be stored.
    pub committed_id: u64,
    /// Ids up to here are reserved in the durable state (see `StateChange::IdsReserved`).
    pub ids_reserved: u64,
    /// The most recent stored messages, oldest first, contiguous ids.
    pub recent: VecDeque<CachedMessage>,
    /// For pair rooms: messages up to this id belong to an earlier conversation, whose
    /// partner has left; nobody is shown them again.
    pub forgotten_upto: u64,
    /// For pair rooms: members with this id or above joined after the last conversation
    /// ended, so the earlier conversation's late commits are not relayed to them.
    pub new_members_from: MemberId,
    /// The topic any member may set (`/topic`), at most `MAX_TOPIC` bytes.
    pub topic: Option<String>,
    /// Addresses the host banned (`/ban`), canonical, oldest first, at most `MAX_BANS`.
    pub bans: Vec<IpAddr>,
}

impl Room {
    /// Recomputes the recipient lists after a member joined, left, registered or moved.
    pub fn rebuild_recipients(&mut self) {
        let registered = |version| {
            self.members
                .values()
                .filter(|member| member.version == version)
                .filter_map(|member| {
                    member.addr.map(|addr| Recipient {
                        member: member.id,
                        addr,
                    })
                })
                .collect::<Arc<[Recipient]>>()
        };
        self.v1_recipients = registered(WireVersion::V1);
        self.v2_recipients = registered(WireVersion::V2);
    }

    /// Finds a member by username, case-insensitively.
    pub fn member_named(&self, username_key: &str) -> Option<&Member> {
        self.members
            .values()
            .find(|member| chat_protocol::names::username_key(&member.username) == username_key)
    }

    /// The host's username.
    pub fn host_name(&self) -> &str {
        self.members
            .get(&self.host)
            .map_or("", |member| member.username.as_str())
    }

    /// Remembers a stored message for replay, forgetting the oldest beyond the cache size;
    /// returns the bytes forgotten.
    pub fn cache(&mut self, message: CachedMessage) -> usize {
        self.recent.push_back(message);
        let mut freed = 0;
        while self.recent.len() > REPLAY_CACHE {
            freed += self.recent.pop_front().map_or(0, |m| m.v2_frame.len());
        }
        freed
    }

    /// Bytes of encoded messages in the replay cache.
    pub fn cached_bytes(&self) -> usize {
        self.recent.iter().map(|m| m.v2_frame.len()).sum()
    }

    /// Bytes of messages its members hold back for an earlier `seq`.
    pub fn held_bytes(&self) -> usize {
        self.members.values().map(|m| m.seqs.held_bytes()).sum()
    }

    /// Ends a pair room's conversation: what was said so far stays between the two who said
    /// it, and whoever joins next starts afresh. `next_member` is the next member id to be
    /// handed out. Returns the newest forgotten id, for deleting it from the history, and the
    /// bytes the replay cache freed.
    pub fn end_conversation(&mut self, next_member: MemberId) -> (u64, usize) {
        self.forgotten_upto = self.last_id;
        self.new_members_from = next_member;
        let freed = self.cached_bytes();
        self.recent.clear();
        (self.forgotten_upto, freed)
    }

    /// Whether someone of this name left this room less than `window` ago.
    pub fn left_lately(&self, username_key: &str, now: Instant, window: Duration) -> bool {
        self.left_lately
            .iter()
            .any(|(key, at)| key == username_key && now.saturating_duration_since(*at) < window)
    }

    /// Usernames in join order.
    pub fn usernames(&self) -> Vec<String> {
        self.members
            .values()
            .map(|member| member.username.clone())
            .collect()
    }
}

impl Member {
    /// A member that has not registered a UDP address yet.
    pub fn new(
        id: MemberId,
        uid: u64,
        token: Token,
        username: String,
        policy: &FloodPolicy,
        now: Instant,
    ) -> Self {
        Self {
            id,
            uid,
            token,
            username,
            addr: None,
            version: WireVersion::V1,
            last_seen: now,
            flood: TokenBucket::new(policy, now),
            warned_at: None,
            seqs: SeqWindow::default(),
            replay_budget: TokenBucket::new(&REPLAY_BUDGET, now),
            probes: TokenBucket::new(policy, now),
            home_ip: None,
            challenges: VecDeque::new(),
            held_kinds: BTreeMap::new(),
            away: None,
            sealing: None,
            remote: false,
            remote_registered: false,
        }
    }
}
