//! Version 3's decoders: a sealed datagram's header, opening it (any bytes, under a fixed key),
//! tunnel frames, and the replay window fed the counters the input spells.
#![no_main]

use chat_protocol::sealed::{
    Header, KEY_MATERIAL_LEN, KeyMaterial, Opener, ReplayWindow, SealError, Sealer,
    decode_tunnel_frame,
};
use chat_protocol_fuzz::{Bound, within};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys = KeyMaterial([7; KEY_MATERIAL_LEN]);
    if let Some(header) = within("Header::peek", data, Bound::Nothing, || Header::peek(data)) {
        assert_eq!(&header.encode()[..], &data[..13]);
        // Random bytes never authenticate; what opens must be what was sealed.
        let mut copy = data.to_vec();
        match Opener::new(&keys.to_server()).open(&mut copy) {
            Ok((_, message)) => {
                let resealed = Sealer::new(&keys.to_server())
                    .seal(header, message)
                    .expect("what opened reseals");
                assert_eq!(resealed, data);
            }
            Err(SealError::Forged | SealError::ZeroCounter) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let mut rest = data;
    for _ in 0..64 {
        match within("decode_tunnel_frame", rest, Bound::Nothing, || {
            decode_tunnel_frame(rest)
        }) {
            Ok(Some((_, used))) => {
                assert!(used >= 2 && used <= rest.len());
                rest = &rest[used..];
            }
            Ok(None) | Err(_) => break,
        }
    }
    // The window against a plain set of what it accepted.
    let mut window = ReplayWindow::new();
    let mut accepted = std::collections::BTreeSet::new();
    for chunk in data.chunks_exact(8).take(512) {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(chunk);
        let counter = u64::from_be_bytes(bytes) % (1 << 20);
        let newest = window.newest();
        let fresh = counter != 0
            && !accepted.contains(&counter)
            && (counter > newest || newest - counter < chat_protocol::sealed::REPLAY_WINDOW);
        assert_eq!(window.accept(counter).is_ok(), fresh, "counter {counter}");
        if fresh {
            accepted.insert(counter);
        }
    }
});
