//! The sealing of one membership's datagrams, without I/O: version-2 messages out, sealed
//! under the client's key with a counter from 1; sealed datagrams in, opened with the
//! server's key once they pass the replay window. Anything else is dropped.

use chat_protocol::sealed::{
    Header, KeyMaterial, MAX_SEALED_MESSAGE, Opener, ReplayWindow, SealError, Sealer,
};
use chat_protocol::ucrp::{ServerDatagram, V2_MARKER};
use chat_protocol::v2::{ClientV2, ServerV2};

/// The keys of one TLS session (an attach gives new ones) and the counters under them.
#[derive(Debug)]
pub struct SealedLink {
    key_id: u32,
    sealer: Sealer,
    opener: Opener,
    /// The last counter used; a counter never repeats under these keys.
    sent: u64,
    window: ReplayWindow,
}

impl SealedLink {
    /// Fresh keys: counters start again at 1 both ways.
    pub fn new(key_id: u32, keys: &KeyMaterial) -> Self {
        Self {
            key_id,
            sealer: Sealer::new(&keys.to_server()),
            opener: Opener::new(&keys.to_client()),
            sent: 0,
            window: ReplayWindow::new(),
        }
    }

    /// The key id the grant gave.
    pub fn key_id(&self) -> u32 {
        self.key_id
    }

    /// Most bytes of version-2 message (`0xFF` and JSON) one sealed datagram carries.
    pub fn message_capacity() -> usize {
        MAX_SEALED_MESSAGE
    }

    /// Seals a version-2 message: no room, no token, the key id says who.
    pub fn seal_v2(&mut self, message: &ClientV2) -> Result<Vec<u8>, SealError> {
        let mut body = vec![V2_MARKER];
        // Serializing these plain enums into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut body, message);
        self.seal(&body)
    }

    /// Seals a message body under the next counter.
    pub fn seal(&mut self, body: &[u8]) -> Result<Vec<u8>, SealError> {
        let counter = self.sent + 1;
        let sealed = self.sealer.seal(
            Header {
                key_id: self.key_id,
                counter,
            },
            body,
        )?;
        self.sent = counter;
        Ok(sealed)
    }

    /// Opens a datagram from the server: its version-2 message, or why it was dropped.
    pub fn open(&mut self, datagram: &[u8]) -> Result<ServerV2, Dropped> {
        let header = Header::peek(datagram).ok_or(Dropped::NotSealed)?;
        if header.key_id != self.key_id {
            return Err(Dropped::OtherKey);
        }
        self.window.check(header.counter).map_err(Dropped::Seal)?;
        let mut copy = datagram.to_vec();
        let (header, message) = self.opener.open(&mut copy).map_err(Dropped::Seal)?;
        // Only an authentic datagram moves the window.
        self.window.accept(header.counter).map_err(Dropped::Seal)?;
        match ServerDatagram::decode(message) {
            Ok(ServerDatagram::V2(message)) => Ok(message),
            Ok(_) => Err(Dropped::NotV2),
            Err(_) => Err(Dropped::Undecodable),
        }
    }
}

/// Why a received datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    /// Not a sealed datagram (plaintext, or too short).
    #[error("not sealed")]
    NotSealed,
    /// Sealed for another member's key id.
    #[error("sealed for another key id")]
    OtherKey,
    /// Forged, corrupted, replayed or too old.
    #[error("{0}")]
    Seal(SealError),
    /// Authentic, but not a version-2 message.
    #[error("authentic but not a version-2 message")]
    NotV2,
    /// Authentic, but its JSON does not decode.
    #[error("authentic but undecodable")]
    Undecodable,
}

#[cfg(test)]
mod tests {
    use chat_protocol::sealed::KEY_MATERIAL_LEN;

    use super::*;

    fn material(seed: u8) -> KeyMaterial {
        let mut bytes = [0; KEY_MATERIAL_LEN];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = seed.wrapping_add(i as u8);
        }
        KeyMaterial(bytes)
    }

    /// What the server would send: sealed under the server's key with this member's id.
    fn from_server(keys: &KeyMaterial, key_id: u32, counter: u64, message: &ServerV2) -> Vec<u8> {
        let mut body = vec![V2_MARKER];
        serde_json::to_writer(&mut body, message).unwrap();
        Sealer::new(&keys.to_client())
            .seal(Header { key_id, counter }, &body)
            .unwrap()
    }

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn messages_are_sealed_with_counters_from_1_and_carry_no_room_or_token() {
        let keys = material(1);
        let mut link = SealedLink::new(7, &keys);
        let first = link
            .seal_v2(&ClientV2::Register { last_id: Some(3) })
            .unwrap();
        let second = link
            .seal_v2(&ClientV2::Msg {
                seq: 1,
                text: "lobby secret".into(),
            })
            .unwrap();
        for (datagram, counter) in [(&first, 1), (&second, 2)] {
            assert_eq!(Header::peek(datagram), Some(Header { key_id: 7, counter }));
            for needle in [
                b"lobby".as_slice(),
                b"secret",
                TOKEN.as_bytes(),
                b"register",
            ] {
                assert!(!datagram.windows(needle.len()).any(|w| w == needle));
            }
        }
        // The server opens it with the client's key.
        let mut copy = second.clone();
        let (_, body) = Opener::new(&keys.to_server()).open(&mut copy).unwrap();
        let mut expected = vec![V2_MARKER];
        expected.extend_from_slice(br#"{"t":"msg","seq":1,"text":"lobby secret"}"#);
        assert_eq!(body, expected.as_slice());
    }

    #[test]
    fn server_datagrams_open_once() {
        let keys = material(2);
        let mut link = SealedLink::new(7, &keys);
        let pong = ServerV2::Pong { id: 4 };
        let datagram = from_server(&keys, 7, 1 << 40, &pong);
        assert_eq!(link.open(&datagram), Ok(pong.clone()));
        assert_eq!(
            link.open(&datagram),
            Err(Dropped::Seal(SealError::Replayed))
        );
        // Late but within the window: accepted once.
        let late = from_server(&keys, 7, (1 << 40) - 5, &pong);
        assert_eq!(link.open(&late), Ok(pong.clone()));
        assert!(link.open(&late).is_err());
    }

    #[test]
    fn plaintext_forged_and_foreign_datagrams_are_dropped() {
        let keys = material(3);
        let mut link = SealedLink::new(7, &keys);
        // A version-2 datagram in clear, as a LAN attacker would send.
        let mut plain = vec![V2_MARKER];
        plain.extend_from_slice(br#"{"t":"pong","id":9}"#);
        assert_eq!(link.open(&plain), Err(Dropped::NotSealed));
        // Sealed under other keys.
        let other = from_server(&material(9), 7, 1, &ServerV2::Pong { id: 1 });
        assert_eq!(link.open(&other), Err(Dropped::Seal(SealError::Forged)));
        // Another member's id.
        let foreign = from_server(&keys, 8, 1, &ServerV2::Pong { id: 1 });
        assert_eq!(link.open(&foreign), Err(Dropped::OtherKey));
        // A flipped bit.
        let mut flipped = from_server(&keys, 7, 2, &ServerV2::Pong { id: 1 });
        let last = flipped.len() - 1;
        flipped[last] ^= 1;
        assert_eq!(link.open(&flipped), Err(Dropped::Seal(SealError::Forged)));
        // None of them moved the window: the genuine counter 2 still opens.
        let genuine = from_server(&keys, 7, 2, &ServerV2::Pong { id: 1 });
        assert!(link.open(&genuine).is_ok());
    }

    #[test]
    fn fresh_keys_restart_the_counters() {
        let mut link = SealedLink::new(7, &material(4));
        link.seal(b"\xff{}").unwrap();
        link.seal(b"\xff{}").unwrap();
        let mut link = SealedLink::new(7, &material(5));
        let sealed = link.seal(b"\xff{}").unwrap();
        assert_eq!(Header::peek(&sealed).map(|h| h.counter), Some(1));
    }
}
