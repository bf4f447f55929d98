//! Datagrams the room manager decided to send, collected while its lock is held and sent after
//! the lock is released.
//!
//! The relay loop owns one `Outbox` and reuses it, so relaying a chat message encodes its frame
//! once into `bytes` and allocates nothing per datagram or per recipient.

use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;

use chat_protocol::ucrp::UcrpError;

use crate::room::{MemberId, Recipient};

/// Who receives one encoded frame.
#[derive(Debug)]
enum Target {
    One(SocketAddr),
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

    /// Queues one frame, written by `write`, for one address. A frame that fails to encode is
    /// not queued.
    pub fn unicast(
        &mut self,
        to: SocketAddr,
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

    /// Moves everything queued in `other` to the end of this outbox.
    pub fn append(&mut self, other: &mut Outbox) {
        let offset = self.bytes.len();
        self.bytes.append(&mut other.bytes);
        self.sends.extend(
            other
                .sends
                .drain(..)
                .map(|(range, target)| (range.start + offset..range.end + offset, target)),
        );
    }

    /// Every (frame, address) pair to send, in the order queued.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], SocketAddr)> + '_ {
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

/// The addresses of one queued frame; an enum rather than a boxed iterator so that walking the
/// outbox allocates nothing.
enum Addresses<'a> {
    One(Option<SocketAddr>),
    Fanout(std::slice::Iter<'a, Recipient>, Option<MemberId>),
}

impl Iterator for Addresses<'_> {
    type Item = SocketAddr;

    fn next(&mut self) -> Option<SocketAddr> {
        match self {
            Self::One(addr) => addr.take(),
            Self::Fanout(recipients, skip) => recipients
                .find(|recipient| Some(recipient.member) != *skip)
                .map(|recipient| recipient.addr),
        }
    }
}
