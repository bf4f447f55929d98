//! How much heap a decoder may take for an input of n bytes, measured with a counting global
//! allocator. "Allocated" means every byte requested from the allocator during one decoder
//! call (fresh allocations plus the growth of reallocations; frees are not subtracted), so it
//! bounds the peak too.
//!
//! - The binary decoders allocate nothing except the frame they return: `Header`, `Datagram`,
//!   version-1 `ClientMessage` and `ServerDatagram` allocate 0 bytes and `Frame` at most n, so
//!   a declared size can never buy more heap than the bytes actually sent.
//! - JSON decoding cannot be held to n + a constant with serde_json: its scratch buffer for
//!   an escaped string grows by doubling (up to 2n) and the decoded string is then copied
//!   out of it (n more). `UserRequest::parse` and version-2 `ClientMessage`, which the server
//!   runs on untrusted input, are held to 3n + a constant.
//! - Version-2 `ServerDatagram` (the client reading the server) is held to 16n + a constant:
//!   `{"t":"members","names":["","",...]}` is 3 bytes of JSON per 24-byte `String`, and a
//!   `Vec` grows to at most twice its length.
//!
//! Everything runs in one `#[test]` and the counters are thread-local, so neither the test
//! harness nor other tests can disturb the figures.

use chat_protocol::limits::{MAX_DATAGRAM, MAX_TCRP_PAYLOAD, TCRP_HEADER_LEN};
use chat_protocol::tcrp::{Frame, Header, TcrpError, UserRequest};
use chat_protocol::ucrp::{ClientMessage, Datagram, ServerDatagram, V2_MARKER};
use counting_alloc::{Allocated, CountingAllocator, measure};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// Room for fixed-size extras: an error box and its short message, a small first buffer.
const SLACK: usize = 1024;
/// Heap per input byte allowed to the JSON decoders the server runs on untrusted input.
const UNTRUSTED_JSON_FACTOR: usize = 3;
/// Heap per input byte allowed to decoding version-2 server messages.
const SERVER_JSON_FACTOR: usize = 16;

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Heap requested while running `decode` (its result is dropped after counting stops).
fn allocated_by<R>(decode: impl FnOnce() -> R) -> Allocated {
    measure(decode).1
}

fn assert_at_most(what: &str, input: &[u8], allocated: Allocated, bound: usize) {
    assert!(
        allocated.bytes <= bound,
        "{what} allocated {} bytes in {} calls for {} input bytes (bound {bound}); input: {:?}",
        allocated.bytes,
        allocated.calls,
        input.len(),
        String::from_utf8_lossy(&input[..input.len().min(80)]),
    );
}

/// Runs every decoder on `input` and checks each against its bound.
fn check(input: &[u8]) {
    let n = input.len();
    assert_at_most(
        "Header::decode",
        input,
        allocated_by(|| Header::decode(input)),
        0,
    );
    assert_at_most(
        "Frame::decode",
        input,
        allocated_by(|| Frame::decode(input)),
        n,
    );
    assert_at_most(
        "Datagram::decode",
        input,
        allocated_by(|| Datagram::decode(input)),
        0,
    );
    let untrusted_json = UNTRUSTED_JSON_FACTOR * n + SLACK;
    assert_at_most(
        "UserRequest::parse",
        input,
        allocated_by(|| UserRequest::parse(input)),
        untrusted_json,
    );
    let is_v2 = input.first() == Some(&V2_MARKER);
    assert_at_most(
        "ClientMessage::decode",
        input,
        allocated_by(|| ClientMessage::decode(input)),
        if is_v2 { untrusted_json } else { 0 },
    );
    assert_at_most(
        "ServerDatagram::decode",
        input,
        allocated_by(|| ServerDatagram::decode(input)),
        if is_v2 {
            SERVER_JSON_FACTOR * n + SLACK
        } else {
            0
        },
    );
}

/// Inputs made to be expensive: a prefix that puts the decoder in some position (an unknown
/// field, a list, a string, a number field), a unit repeated to fill a datagram or a payload,
/// and a closing suffix.
fn amplifier() -> impl Strategy<Value = Vec<u8>> {
    const PREFIXES: &[&[u8]] = &[
        b"",
        b"\xff",
        b"\"",
        b"\xff\"",
        b"[",
        b"{\"username\":",
        b"{\"username\":\"",
        b"{\"x\":[",
        b"\xff{\"t\":\"who\",\"x\":[",
        b"\xff{\"t\":\"who\",\"x\":",
        b"\xff{\"t\":\"msg\",\"seq\":1,\"text\":\"",
        b"\xff{\"t\":\"msg\",\"seq\":\"",
        b"\xff{\"t\":\"",
        b"\xff{\"t\":\"members\",\"host\":\"\",\"names\":[",
        b"\xff{\"t\":\"history\",\"more\":true,\"messages\":[",
        b"\xff{\"t\":\"history\",\"more\":\"",
        b"\xff{\"t\":\"left\",\"name\":\"\",\"reason\":\"",
    ];
    const UNITS: &[&[u8]] = &[
        b"0,",
        b"\"\",",
        b"\"a\",",
        b"[],",
        b"{},",
        b"{\"\":0},",
        b"[",
        b"{\"a\":",
        b"\\n",
        b"\\u00e9",
        b"\x7f",
        b"\xc2\x80",
        b"a",
        b"{\"id\":0,\"from\":\"\",\"text\":\"\",\"ts\":0},",
        b"{\"id\":\"\x7f\x7f\x7f\x7f\"},",
    ];
    const SUFFIXES: &[&[u8]] = &[b"", b"0]}", b"\"}", b"\\n\"}", b"]", b"\"]}", b"\\n"];
    (
        proptest::sample::select(PREFIXES),
        proptest::sample::select(UNITS),
        0usize..=MAX_TCRP_PAYLOAD,
        proptest::sample::select(SUFFIXES),
        any::<bool>(),
    )
        .prop_map(|(prefix, unit, len, suffix, datagram_sized)| {
            // Half of them fit a datagram, where the version-2 decoders are reached at all.
            let len = if datagram_sized {
                len % MAX_DATAGRAM
            } else {
                len
            };
            let mut out = prefix.to_vec();
            while out.len() + unit.len() + suffix.len() <= len.max(prefix.len()) {
                out.extend_from_slice(unit);
            }
            out.extend_from_slice(suffix);
            out
        })
}

/// Header-shaped input whose size field runs from small to absurd, with or without a body.
fn header_like() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<[u8; 3]>(),
        any::<u64>(),
        0u8..4,
        proptest::collection::vec(any::<u8>(), 0..=MAX_TCRP_PAYLOAD + 300),
    )
        .prop_map(|(start, size, shift, body)| {
            let mut out = start.to_vec();
            out[2] %= 3;
            let mut field = [0u8; 29];
            field[21..].copy_from_slice(&(size >> (shift * 16)).to_be_bytes());
            out.extend_from_slice(&field);
            out.extend_from_slice(&body);
            out
        })
}

fn run(cases: u32, strategy: impl Strategy<Value = Vec<u8>>) {
    let config = if std::env::var_os("PROPTEST_CASES").is_some() {
        Config::default()
    } else {
        Config::with_cases(cases)
    };
    let mut runner = TestRunner::new(config);
    let outcome = runner.run(&strategy, |input| {
        check(&input);
        Ok(())
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
}

#[test]
fn decoders_allocate_in_proportion_to_their_input() {
    // A header declaring 2^200 bytes is refused without touching the heap.
    let mut absurd = [0u8; TCRP_HEADER_LEN];
    absurd[1] = 1;
    absurd[31 - 25] = 1;
    let allocated = allocated_by(|| Frame::decode(&absurd));
    assert_eq!(allocated.calls, 0, "{allocated:?}");
    assert_eq!(
        Frame::decode(&absurd),
        Err(TcrpError::PayloadTooLarge {
            limit: MAX_TCRP_PAYLOAD
        })
    );

    // A frame at the limit costs exactly its room name and payload.
    let frame = Frame::new(
        2,
        chat_protocol::tcrp::State::Request,
        "lobby",
        vec![7; 16384],
    );
    let encoded = frame.encode().expect("a frame at the limit encodes");
    let allocated = allocated_by(|| Frame::decode(&encoded));
    assert_eq!(allocated.bytes, 5 + 16384, "{allocated:?}");

    // What this test found, each of which once cost several times its bound.
    let repeated = |prefix: &[u8], unit: &[u8], suffix: &[u8], len: usize| {
        let mut out = prefix.to_vec();
        while out.len() + unit.len() + suffix.len() <= len {
            out.extend_from_slice(unit);
        }
        out.extend_from_slice(suffix);
        out
    };
    let findings = [
        // `UserRequest::parse` built a `serde_json::Value` tree: 16 to 32 bytes per byte.
        repeated(b"[", b"0,", b"0]", MAX_TCRP_PAYLOAD),
        // Serde's derived decoder for internally tagged enums buffered unknown fields into a
        // tree before reading `t`: 16 to 32 bytes per byte (its `Vec`s double as they grow).
        repeated(b"\xff{\"t\":\"who\",\"x\":[", b"0,", b"0]}", MAX_DATAGRAM),
        repeated(
            b"\xff{\"t\":\"pong\",\"id\":1,\"x\":[",
            b"0,",
            b"0]}",
            MAX_DATAGRAM,
        ),
        // serde_json quoted a string found in a number field, Debug-escaped (DEL becomes
        // `\u{7f}`), into its error message.
        repeated(
            b"\xff{\"t\":\"msg\",\"text\":\"\",\"seq\":\"",
            b"\x7f",
            b"\"}",
            MAX_DATAGRAM,
        ),
        // `UserRequest::parse` copied a JSON string followed by junk twice: once as a string,
        // then as bare text, besides serde_json's scratch copy (found by the run below).
        repeated(b"\"", b"0,", b"\\n\"}", MAX_TCRP_PAYLOAD),
        // Found by fuzzing (ucrp and v2_json targets): the same quoting when the whole message
        // is a string instead of an object.
        repeated(b"\xff\"p", b"\x7f", b"\"", 206),
        repeated(b"\xff\"", b"\x7f", b"\"", MAX_DATAGRAM),
        // The derived decoder quoted an unknown `t`, kept alongside serde_json's copy of it.
        repeated(b"\xff{\"t\":\"", b"a", b"\\n\"}", MAX_DATAGRAM),
    ];
    for input in &findings {
        check(input);
    }

    run(512, amplifier());
    run(128, header_like());
    run(128, proptest::collection::vec(any::<u8>(), 0..=20 * 1024));
}
