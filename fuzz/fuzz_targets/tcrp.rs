//! The TCRP decoders: header, frame, and the request payload inside a frame.
#![no_main]

use chat_protocol::limits::{MAX_TCRP_PAYLOAD, TCRP_HEADER_LEN};
use chat_protocol::tcrp::{Frame, Header, UserRequest};
use chat_protocol_fuzz::{Bound, within};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let header = within("Header::decode", data, Bound::Nothing, || {
        Header::decode(data)
    });
    if let Ok(Some(header)) = header {
        assert!(header.payload_len <= MAX_TCRP_PAYLOAD);
    }
    match within("Frame::decode", data, Bound::Input, || Frame::decode(data)) {
        Ok(Some((frame, used))) => {
            assert!(frame.payload.len() <= MAX_TCRP_PAYLOAD);
            // A decoded frame re-encodes to exactly the bytes it was decoded from.
            let encoded = frame
                .encode()
                .expect("a decoded frame is within the limits");
            assert_eq!(encoded, data[..used]);
            // Shorter input is incomplete, never an error or another frame.
            for cut in [0, TCRP_HEADER_LEN - 1, TCRP_HEADER_LEN, used - 1] {
                if cut < used {
                    assert_eq!(Frame::decode(&data[..cut]), Ok(None), "cut at {cut}");
                }
            }
            check_user_request(&frame.payload);
        }
        Ok(None) => assert!(data.len() < TCRP_HEADER_LEN + 255 + MAX_TCRP_PAYLOAD),
        Err(_) => assert!(data.len() >= TCRP_HEADER_LEN),
    }
    // The server only parses payloads of at most 16 KiB, but the parser must cope with any.
    check_user_request(data);
});

fn check_user_request(payload: &[u8]) {
    let parsed = within("UserRequest::parse", payload, Bound::UntrustedJson, || {
        UserRequest::parse(payload)
    });
    if let Ok(request) = parsed {
        assert_eq!(UserRequest::parse(&request.to_payload()), Ok(request));
    }
}
