//! Version 3: sealed datagrams. The version-2 messages, encrypted and authenticated with
//! ChaCha20-Poly1305 under per-member keys that both ends derive from the TLS session of the
//! handshake (the TLS exporter), so that neither keys nor the token ever travel on the wire.
//!
//! ```text
//! byte 0       0xFE, the marker (a version-1/2 datagram starts with its room name's size, 1-64)
//! bytes 1-4    key id (u32): which member's keys, assigned by the server in the grant
//! bytes 5-12   counter (u64): never repeats under one key; the nonce is 4 zero bytes and it
//! then         the sealed message (a version-2 message, 0xFF + JSON) and a 16-byte tag
//! ```
//!
//! The 13-byte header is the associated data: a changed id or counter fails the tag. Each
//! direction has its own key, so the two ends' counters never collide. A receiver drops a
//! counter it has seen, or one too far behind the newest ([`ReplayWindow`]).
//!
//! Over TCP (the tunnel, when UDP does not get through) each sealed datagram is one frame:
//! a u16 length, then the bytes; a zero length is a keepalive.

use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, UnboundKey};

use crate::limits::MAX_DATAGRAM;

/// First byte of a sealed datagram.
pub const SEALED_MARKER: u8 = 0xFE;
/// Marker, key id and counter.
pub const HEADER_LEN: usize = 13;
/// The Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Bytes of one direction's key.
pub const KEY_LEN: usize = 32;
/// Bytes taken from the TLS exporter: the client-to-server key, then the server-to-client key.
pub const KEY_MATERIAL_LEN: usize = 2 * KEY_LEN;
/// The exporter label (RFC 8446 section 7.5); the context is empty.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-chat-sealed-datagrams-v3";
/// Most bytes of message one sealed datagram carries.
pub const MAX_SEALED_MESSAGE: usize = MAX_DATAGRAM - HEADER_LEN - TAG_LEN;
const _: () = assert!(MAX_SEALED_MESSAGE == crate::limits::MAX_SERVER_MESSAGE);
/// Length prefix of a tunnel frame.
pub const TUNNEL_PREFIX_LEN: usize = 2;
/// Counters seen out of order that a receiver still accepts: 2,048 behind the newest, as
/// WireGuard keeps (RFC 6479's window).
pub const REPLAY_WINDOW: u64 = 2048;

/// Why a sealed datagram could not be made or opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// Shorter than a header and a tag, or not starting with the marker.
    #[error("not a sealed datagram")]
    NotSealed,
    /// The message would make the datagram larger than 4096 bytes.
    #[error("a sealed message is at most {MAX_SEALED_MESSAGE} bytes")]
    TooLarge,
    /// The tag did not verify: forged, corrupted, or sealed under another key.
    #[error("the datagram does not authenticate")]
    Forged,
    /// The counter was seen already, or is too far behind the newest.
    #[error("the datagram was received before")]
    Replayed,
    /// Counter 0 is never sent.
    #[error("counter 0 is not valid")]
    ZeroCounter,
}

/// The clear header of a sealed datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Whose keys: the id the grant gave.
    pub key_id: u32,
    /// The nonce's counter.
    pub counter: u64,
}

impl Header {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut bytes = [0; HEADER_LEN];
        bytes[0] = SEALED_MARKER;
        bytes[1..5].copy_from_slice(&self.key_id.to_be_bytes());
        bytes[5..13].copy_from_slice(&self.counter.to_be_bytes());
        bytes
    }

    /// Reads the header of a datagram that may be sealed; `None` when it is not one (wrong
    /// marker, or too short to hold a header and a tag).
    pub fn peek(datagram: &[u8]) -> Option<Self> {
        if datagram.len() < HEADER_LEN + TAG_LEN || datagram[0] != SEALED_MARKER {
            return None;
        }
        let mut id = [0; 4];
        id.copy_from_slice(&datagram[1..5]);
        let mut counter = [0; 8];
        counter.copy_from_slice(&datagram[5..13]);
        Some(Self {
            key_id: u32::from_be_bytes(id),
            counter: u64::from_be_bytes(counter),
        })
    }
}

/// Whether a datagram is sealed (by its first byte alone).
pub fn is_sealed(datagram: &[u8]) -> bool {
    datagram.first() == Some(&SEALED_MARKER)
}

/// The 64 bytes both ends export from the handshake's TLS session. Never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyMaterial(pub [u8; KEY_MATERIAL_LEN]);

impl KeyMaterial {
    /// The client's sending key (the server opens with it).
    pub fn to_server(&self) -> [u8; KEY_LEN] {
        let mut key = [0; KEY_LEN];
        key.copy_from_slice(&self.0[..KEY_LEN]);
        key
    }

    /// The server's sending key (the client opens with it).
    pub fn to_client(&self) -> [u8; KEY_LEN] {
        let mut key = [0; KEY_LEN];
        key.copy_from_slice(&self.0[KEY_LEN..]);
        key
    }

    /// Lowercase hex, for the server's state file (mode 0600).
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The material written by [`KeyMaterial::to_hex`]; `None` for anything else.
    pub fn from_hex(text: &str) -> Option<Self> {
        if text.len() != 2 * KEY_MATERIAL_LEN || !text.is_ascii() {
            return None;
        }
        let mut bytes = [0; KEY_MATERIAL_LEN];
        for (byte, pair) in bytes.iter_mut().zip(text.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Self(bytes))
    }
}

impl std::fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyMaterial(..)")
    }
}

fn nonce(counter: u64) -> Nonce {
    let mut bytes = [0; 12];
    bytes[4..].copy_from_slice(&counter.to_be_bytes());
    Nonce::assume_unique_for_key(bytes)
}

fn aead_key(key: &[u8; KEY_LEN]) -> LessSafeKey {
    // A 32-byte key is exactly what ChaCha20-Poly1305 takes, so this cannot fail.
    #[allow(clippy::expect_used)]
    LessSafeKey::new(UnboundKey::new(&CHACHA20_POLY1305, key).expect("a 32-byte key"))
}

/// One direction's sending half: seals messages under one key. The caller supplies counters
/// that never repeat for this key.
pub struct Sealer {
    key: LessSafeKey,
}

impl Sealer {
    /// A sealer for this key.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self { key: aead_key(key) }
    }

    /// Appends the sealed datagram for `message` to `out` (cleared first).
    pub fn seal_into(
        &self,
        header: Header,
        message: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SealError> {
        if message.len() > MAX_SEALED_MESSAGE {
            return Err(SealError::TooLarge);
        }
        if header.counter == 0 {
            return Err(SealError::ZeroCounter);
        }
        let clear = header.encode();
        out.clear();
        out.reserve(HEADER_LEN + message.len() + TAG_LEN);
        out.extend_from_slice(&clear);
        out.extend_from_slice(message);
        let tag = self
            .key
            .seal_in_place_separate_tag(
                nonce(header.counter),
                Aad::from(clear),
                &mut out[HEADER_LEN..],
            )
            .map_err(|_| SealError::TooLarge)?;
        out.extend_from_slice(tag.as_ref());
        Ok(())
    }

    /// The sealed datagram for `message`.
    pub fn seal(&self, header: Header, message: &[u8]) -> Result<Vec<u8>, SealError> {
        let mut out = Vec::new();
        self.seal_into(header, message, &mut out)?;
        Ok(out)
    }
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

/// One direction's receiving half: opens datagrams sealed under one key.
pub struct Opener {
    key: LessSafeKey,
}

impl Opener {
    /// An opener for this key.
    pub fn new(key: &[u8; KEY_LEN]) -> Self {
        Self { key: aead_key(key) }
    }

    /// Opens `datagram` in place and returns its header and message. The caller checks the
    /// counter against its [`ReplayWindow`] first (cheap) and records it only after this
    /// succeeded, so a forged datagram cannot move the window.
    pub fn open<'a>(&self, datagram: &'a mut [u8]) -> Result<(Header, &'a [u8]), SealError> {
        let header = Header::peek(datagram).ok_or(SealError::NotSealed)?;
        if header.counter == 0 {
            return Err(SealError::ZeroCounter);
        }
        let (clear, sealed) = datagram.split_at_mut(HEADER_LEN);
        let message = self
            .key
            .open_in_place(nonce(header.counter), Aad::from(&*clear), sealed)
            .map_err(|_| SealError::Forged)?;
        Ok((header, message))
    }
}

impl std::fmt::Debug for Opener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Opener(..)")
    }
}

const WORD_BITS: u64 = 64;
/// The bitmap is one word longer than the window, so that sliding forward clears whole words
/// (RFC 6479, section 2).
const WORDS: usize = (REPLAY_WINDOW / WORD_BITS) as usize + 1;

/// Which counters were received lately: a counter is accepted once, and only while it is no
/// more than [`REPLAY_WINDOW`] behind the newest. Fixed size, no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayWindow {
    newest: u64,
    bitmap: [u64; WORDS],
}

impl Default for ReplayWindow {
    fn default() -> Self {
        Self::new()
    }
}

impl ReplayWindow {
    /// A window that has seen nothing (every counter from 1 up is new).
    pub fn new() -> Self {
        Self {
            newest: 0,
            bitmap: [0; WORDS],
        }
    }

    /// The newest counter accepted so far (0 before any).
    pub fn newest(&self) -> u64 {
        self.newest
    }

    fn position(counter: u64) -> (usize, u64) {
        let word = ((counter / WORD_BITS) % WORDS as u64) as usize;
        (word, 1 << (counter % WORD_BITS))
    }

    /// Whether `counter` would be accepted; changes nothing.
    pub fn check(&self, counter: u64) -> Result<(), SealError> {
        if counter == 0 {
            return Err(SealError::ZeroCounter);
        }
        if counter > self.newest {
            return Ok(());
        }
        if self.newest - counter >= REPLAY_WINDOW {
            return Err(SealError::Replayed);
        }
        let (word, bit) = Self::position(counter);
        if self.bitmap[word] & bit != 0 {
            return Err(SealError::Replayed);
        }
        Ok(())
    }

    /// Records `counter` as received, after its datagram authenticated.
    pub fn accept(&mut self, counter: u64) -> Result<(), SealError> {
        self.check(counter)?;
        if counter > self.newest {
            let newest_word = self.newest / WORD_BITS;
            let counter_word = counter / WORD_BITS;
            // Clear the words the window slides over (all of them after a long jump).
            let slide = (counter_word - newest_word).min(WORDS as u64);
            for step in 1..=slide {
                let word = ((newest_word + step) % WORDS as u64) as usize;
                self.bitmap[word] = 0;
            }
            self.newest = counter;
        }
        let (word, bit) = Self::position(counter);
        self.bitmap[word] |= bit;
        Ok(())
    }
}

/// Frames a sealed datagram for the tunnel: its length as a u16, then the bytes.
pub fn tunnel_frame(datagram: &[u8]) -> Result<Vec<u8>, SealError> {
    let len = u16::try_from(datagram.len()).map_err(|_| SealError::TooLarge)?;
    if datagram.len() > MAX_DATAGRAM {
        return Err(SealError::TooLarge);
    }
    let mut frame = Vec::with_capacity(TUNNEL_PREFIX_LEN + datagram.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(datagram);
    Ok(frame)
}

/// The tunnel's keepalive: an empty frame.
pub const TUNNEL_KEEPALIVE: [u8; TUNNEL_PREFIX_LEN] = [0, 0];

/// One frame read off a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelFrame<'a> {
    /// A sealed datagram.
    Datagram(&'a [u8]),
    /// The other end is alive.
    Keepalive,
}

/// A tunnel frame's length prefix announced more than a datagram may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a tunnel frame of {0} bytes is over the 4096-byte datagram limit")]
pub struct TunnelFrameTooLarge(pub usize);

/// Splits the first frame off `buf`: `Ok(None)` until it is complete, then the frame and how
/// many bytes it took. The length is checked before anything waits for the body.
pub fn decode_tunnel_frame(
    buf: &[u8],
) -> Result<Option<(TunnelFrame<'_>, usize)>, TunnelFrameTooLarge> {
    let Some(prefix) = buf.get(..TUNNEL_PREFIX_LEN) else {
        return Ok(None);
    };
    let len = usize::from(u16::from_be_bytes([prefix[0], prefix[1]]));
    if len > MAX_DATAGRAM {
        return Err(TunnelFrameTooLarge(len));
    }
    let Some(body) = buf.get(TUNNEL_PREFIX_LEN..TUNNEL_PREFIX_LEN + len) else {
        return Ok(None);
    };
    let frame = if len == 0 {
        TunnelFrame::Keepalive
    } else {
        TunnelFrame::Datagram(body)
    };
    Ok(Some((frame, TUNNEL_PREFIX_LEN + len)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material() -> KeyMaterial {
        let mut bytes = [0; KEY_MATERIAL_LEN];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = i as u8;
        }
        KeyMaterial(bytes)
    }

    #[test]
    fn a_sealed_message_opens_with_the_same_key_only() {
        let keys = material();
        let sealer = Sealer::new(&keys.to_server());
        let header = Header {
            key_id: 7,
            counter: 1,
        };
        let mut datagram = sealer.seal(header, b"\xff{\"t\":\"ping\"}").unwrap();
        assert_eq!(datagram.len(), HEADER_LEN + 13 + TAG_LEN);
        assert!(!datagram.windows(4).any(|w| w == b"ping"));
        let mut copy = datagram.clone();
        let (got, message) = Opener::new(&keys.to_server()).open(&mut datagram).unwrap();
        assert_eq!(got, header);
        assert_eq!(message, b"\xff{\"t\":\"ping\"}");
        // The other direction's key does not open it.
        assert_eq!(
            Opener::new(&keys.to_client()).open(&mut copy).unwrap_err(),
            SealError::Forged
        );
    }

    #[test]
    fn any_flipped_bit_fails_the_tag() {
        let keys = material();
        let sealer = Sealer::new(&keys.to_client());
        let opener = Opener::new(&keys.to_client());
        let sealed = sealer
            .seal(
                Header {
                    key_id: 1,
                    counter: 99,
                },
                b"hello",
            )
            .unwrap();
        for bit in 8..sealed.len() * 8 {
            let mut flipped = sealed.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(opener.open(&mut flipped).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn over_long_messages_and_counter_zero_are_refused() {
        let sealer = Sealer::new(&material().to_server());
        let header = Header {
            key_id: 1,
            counter: 1,
        };
        assert!(sealer.seal(header, &[0; MAX_SEALED_MESSAGE]).is_ok());
        assert_eq!(
            sealer.seal(header, &[0; MAX_SEALED_MESSAGE + 1]),
            Err(SealError::TooLarge)
        );
        assert_eq!(
            sealer.seal(
                Header {
                    counter: 0,
                    ..header
                },
                b"x"
            ),
            Err(SealError::ZeroCounter)
        );
    }

    #[test]
    fn the_replay_window_accepts_each_counter_once() {
        let mut window = ReplayWindow::new();
        for counter in [1, 3, 2, 10, 9, 4000] {
            window.accept(counter).unwrap();
        }
        for counter in [1, 3, 2, 10, 9, 4000] {
            assert_eq!(window.accept(counter), Err(SealError::Replayed));
        }
        // Within the window and unseen: accepted late.
        window.accept(4000 - 100).unwrap();
        // Too far behind the newest.
        assert_eq!(window.check(4000 - REPLAY_WINDOW), Err(SealError::Replayed));
        assert_eq!(window.check(0), Err(SealError::ZeroCounter));
        // A jump far ahead forgets the old bits but not the rule.
        window.accept(1 << 40).unwrap();
        assert_eq!(window.accept(1 << 40), Err(SealError::Replayed));
        window.accept((1 << 40) - 1).unwrap();
    }

    #[test]
    fn the_replay_window_matches_a_set_over_random_orders() {
        use std::collections::BTreeSet;
        let mut window = ReplayWindow::new();
        let mut seen = BTreeSet::new();
        let mut newest = 0u64;
        // A small deterministic generator: counters mostly rising, some late, some repeats.
        let mut x = 12345u64;
        for _ in 0..20_000 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let step = (x >> 33) % 200;
            let counter = (newest + 100).saturating_sub(step).max(1);
            let expected =
                !seen.contains(&counter) && newest.saturating_sub(counter) < REPLAY_WINDOW;
            assert_eq!(
                window.accept(counter).is_ok(),
                expected,
                "counter {counter}"
            );
            if expected {
                seen.insert(counter);
                newest = newest.max(counter);
            }
        }
    }

    #[test]
    fn tunnel_frames_round_trip_and_bound_their_length() {
        let frame = tunnel_frame(b"abc").unwrap();
        assert_eq!(frame, b"\x00\x03abc");
        assert_eq!(decode_tunnel_frame(&frame[..4]), Ok(None));
        assert_eq!(
            decode_tunnel_frame(&frame),
            Ok(Some((TunnelFrame::Datagram(b"abc"), 5)))
        );
        assert_eq!(
            decode_tunnel_frame(&TUNNEL_KEEPALIVE),
            Ok(Some((TunnelFrame::Keepalive, 2)))
        );
        assert_eq!(
            decode_tunnel_frame(&[0x10, 0x01]),
            Err(TunnelFrameTooLarge(4097))
        );
        assert!(tunnel_frame(&[0; MAX_DATAGRAM + 1]).is_err());
    }

    #[test]
    fn key_material_round_trips_through_hex_and_is_not_printed() {
        let keys = material();
        assert_eq!(KeyMaterial::from_hex(&keys.to_hex()), Some(keys.clone()));
        assert_eq!(KeyMaterial::from_hex("zz"), None);
        assert_eq!(format!("{keys:?}"), "KeyMaterial(..)");
    }
}
