//! The UCRP decoders: the client envelope, the message inside it, and what clients receive.
#![no_main]

use chat_protocol::limits::MAX_DATAGRAM;
use chat_protocol::ucrp::{
    ClientMessage, Datagram, ROOM_CLOSED, ServerDatagram, V2_MARKER, encode_v1_chat, encode_v2,
};
use chat_protocol_fuzz::{Bound, within};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(datagram) = within("Datagram::decode", data, Bound::Nothing, || {
        Datagram::decode(data)
    }) {
        // A decoded envelope re-encodes to exactly the datagram.
        assert_eq!(datagram.encode().expect("a decoded datagram fits"), data);
        check_client_message(datagram.message);
    }
    check_client_message(data);

    let bound = if data.first() == Some(&V2_MARKER) {
        Bound::ServerJson
    } else {
        Bound::Nothing
    };
    match within("ServerDatagram::decode", data, bound, || {
        ServerDatagram::decode(data)
    }) {
        Ok(ServerDatagram::Chat { sender, text }) => {
            let mut encoded = Vec::new();
            encode_v1_chat(sender, text, &mut encoded).expect("a decoded chat frame fits");
            assert_eq!(encoded, data);
        }
        Ok(ServerDatagram::RoomClosed) => assert_eq!(data, ROOM_CLOSED),
        Ok(ServerDatagram::V2(message)) => {
            let mut encoded = Vec::new();
            encode_v2(&message, &mut encoded);
            if encoded.len() <= MAX_DATAGRAM {
                let decoded = ServerDatagram::decode(&encoded).expect("what we encode decodes");
                assert_eq!(decoded, ServerDatagram::V2(message));
            }
        }
        Err(_) => {}
    }
});

fn check_client_message(message: &[u8]) {
    let bound = if message.first() == Some(&V2_MARKER) {
        Bound::UntrustedJson
    } else {
        Bound::Nothing
    };
    let decoded = within("ClientMessage::decode", message, bound, || {
        ClientMessage::decode(message)
    });
    match decoded {
        Ok(ClientMessage::Chat(text)) => assert_eq!(text.as_bytes(), message),
        Ok(ClientMessage::V2(parsed)) => {
            let mut encoded = vec![V2_MARKER];
            serde_json::to_writer(&mut encoded, &parsed).expect("plain values serialize");
            assert_eq!(
                ClientMessage::decode(&encoded).ok(),
                Some(ClientMessage::V2(parsed))
            );
        }
        Ok(ClientMessage::Register | ClientMessage::Leave) | Err(_) => {}
    }
}
