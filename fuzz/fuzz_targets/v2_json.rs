//! Version-2 JSON, read as both a client and a server message.
#![no_main]

use chat_protocol::v2::{ClientV2, ServerV2};
use chat_protocol_fuzz::{Bound, within};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let client = within("ClientV2 from JSON", data, Bound::UntrustedJson, || {
        serde_json::from_slice::<ClientV2>(data)
    });
    if let Ok(message) = client {
        let json = serde_json::to_vec(&message).expect("plain values serialize");
        assert_eq!(
            serde_json::from_slice::<ClientV2>(&json).ok(),
            Some(message)
        );
    }
    let server = within("ServerV2 from JSON", data, Bound::ServerJson, || {
        serde_json::from_slice::<ServerV2>(data)
    });
    if let Ok(message) = server {
        let json = serde_json::to_vec(&message).expect("plain values serialize");
        assert_eq!(
            serde_json::from_slice::<ServerV2>(&json).ok(),
            Some(message)
        );
    }
});
