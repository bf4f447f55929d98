//! The key table: each version-3 member's keys, by key id, for the loops that open what
//! arrives (the relay thread, tunnels) and the sender that seals what leaves. The engine keeps
//! the keys durably; this is the working copy, built from it at start and kept up to date by
//! the handshakes (grant, attach) and the tick (departed members are swept out).

use std::collections::HashMap;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use chat_protocol::sealed::{Header, KeyMaterial, Opener, ReplayWindow, SealError, Sealer};

use crate::engine::DropReason;
use crate::engine::sealing::SealedMember;
use crate::token::Token;

/// The server's counter under one key is its boot number times 2^40 plus a count: 2^40
/// datagrams to one member in one run is beyond any real use, and boot numbers below 2^24
/// keep the sum inside 64 bits.
const BOOT_SHIFT: u32 = 40;

/// One member's keys, and the state of both directions.
#[derive(Debug)]
pub struct MemberKeys {
    /// Its key id.
    pub key_id: u32,
    /// Its room's name, as stored: the engine checks datagrams by room and token.
    pub room: String,
    /// Its token, hex, as a datagram would carry it.
    pub token_hex: String,
    /// Its token.
    pub token: Token,
    opener: Opener,
    sealer: Sealer,
    window: Mutex<ReplayWindow>,
    sent: AtomicU64,
    counter_base: u64,
}

impl MemberKeys {
    /// Seals `message` for this member into `out`, with the next counter.
    pub fn seal(&self, message: &[u8], out: &mut Vec<u8>) -> Result<(), SealError> {
        let count = self.sent.fetch_add(1, Ordering::Relaxed) + 1;
        let header = Header {
            key_id: self.key_id,
            counter: self.counter_base | (count & ((1 << BOOT_SHIFT) - 1)),
        };
        self.sealer.seal_into(header, message, out)
    }

    /// Opens a datagram sealed by this member, in place: checks the replay window, then the
    /// tag, and only then records the counter.
    fn open(&self, datagram: &mut [u8], counter: u64) -> Result<Range<usize>, DropReason> {
        let mut window = self.window.lock().unwrap_or_else(PoisonError::into_inner);
        window.check(counter).map_err(|_| DropReason::Replayed)?;
        let len = self
            .opener
            .open(datagram)
            .map_err(|_| DropReason::Forged)?
            .1
            .len();
        window.accept(counter).map_err(|_| DropReason::Replayed)?;
        Ok(chat_protocol::sealed::HEADER_LEN..chat_protocol::sealed::HEADER_LEN + len)
    }
}

/// Every version-3 member's keys, by key id.
#[derive(Debug)]
pub struct KeyTable {
    members: RwLock<HashMap<u32, Arc<MemberKeys>>>,
    counter_base: u64,
}

impl KeyTable {
    /// An empty table for this start of the server (`boot`, from the state file).
    pub fn new(boot: u64) -> Self {
        Self {
            members: RwLock::new(HashMap::new()),
            counter_base: (boot & 0xFF_FFFF) << BOOT_SHIFT,
        }
    }

    /// Sets a member's keys (new, or renewed by an attach: the old ones stop working now).
    pub fn insert(&self, key_id: u32, room: &str, token: &Token, keys: &KeyMaterial) {
        let entry = Arc::new(MemberKeys {
            key_id,
            room: room.to_owned(),
            token_hex: token.to_hex(),
            token: *token,
            opener: Opener::new(&keys.to_server()),
            sealer: Sealer::new(&keys.to_client()),
            window: Mutex::new(ReplayWindow::new()),
            sent: AtomicU64::new(0),
            counter_base: self.counter_base,
        });
        self.write().insert(key_id, entry);
    }

    /// Loads every sealed member the engine restored.
    pub fn load(&self, members: &[SealedMember]) {
        for member in members {
            self.insert(
                member.sealing.key_id,
                &member.room,
                &member.token,
                &member.sealing.keys,
            );
        }
    }

    /// A member's keys.
    pub fn get(&self, key_id: u32) -> Option<Arc<MemberKeys>> {
        self.members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key_id)
            .cloned()
    }

    /// Opens a sealed datagram in place: whose it is, and where its message lies in
    /// `datagram`. `only` restricts it to one key id (a tunnel carries its member's only).
    pub fn open(
        &self,
        datagram: &mut [u8],
        only: Option<u32>,
    ) -> Result<(Arc<MemberKeys>, Range<usize>), DropReason> {
        let header = Header::peek(datagram).ok_or(DropReason::Malformed)?;
        if only.is_some_and(|id| id != header.key_id) {
            return Err(DropReason::UnknownKey);
        }
        let keys = self.get(header.key_id).ok_or(DropReason::UnknownKey)?;
        let message = keys.open(datagram, header.counter)?;
        Ok((keys, message))
    }

    /// Keeps only the members for which `live` holds (the tick sweeps out departed ones).
    pub fn retain(&self, mut live: impl FnMut(&MemberKeys) -> bool) {
        self.write().retain(|_, keys| live(keys));
    }

    /// How many members have keys.
    pub fn len(&self) -> usize {
        self.members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether no member has keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u32, Arc<MemberKeys>>> {
        self.members.write().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_protocol::sealed::{HEADER_LEN, Opener};

    fn material(seed: u8) -> KeyMaterial {
        KeyMaterial([seed; chat_protocol::sealed::KEY_MATERIAL_LEN])
    }

    #[test]
    fn what_a_member_seals_opens_once_and_what_the_server_seals_counts_from_the_boot() {
        let table = KeyTable::new(3);
        let token = Token::generate().unwrap();
        let keys = material(9);
        table.insert(77, "lobby", &token, &keys);
        let client = Sealer::new(&keys.to_server());
        let mut datagram = client
            .seal(
                Header {
                    key_id: 77,
                    counter: 1,
                },
                b"\xff{}",
            )
            .unwrap();
        let replay = datagram.clone();
        let (member, range) = table.open(&mut datagram, None).unwrap();
        assert_eq!(&datagram[range], b"\xff{}");
        assert_eq!(member.token_hex, token.to_hex());
        assert_eq!(
            table.open(&mut replay.clone(), None).unwrap_err(),
            DropReason::Replayed
        );
        assert_eq!(
            table.open(&mut replay.clone(), Some(78)).unwrap_err(),
            DropReason::UnknownKey
        );
        let mut forged = replay;
        forged[HEADER_LEN] ^= 1;
        forged[12] = 2;
        assert_eq!(
            table.open(&mut forged, None).unwrap_err(),
            DropReason::Forged
        );
        let mut out = Vec::new();
        member.seal(b"hello", &mut out).unwrap();
        let header = Header::peek(&out).unwrap();
        assert_eq!(header.counter, (3 << 40) + 1);
        let (_, message) = Opener::new(&keys.to_client()).open(&mut out).unwrap();
        assert_eq!(message, b"hello");
    }
}
