//! What the fuzz targets share: the workspace's counting global allocator installed, so that a
//! decoder taking more heap than its input justifies is a crash like any other, and the bounds
//! it is held to.
//!
//! The bounds are those of `crates/protocol/tests/allocation.rs` (which explains them); keep
//! the two in step.

use counting_alloc::{CountingAllocator, measure};

/// Room for fixed-size extras: an error box and its short message, a small first buffer.
const SLACK: usize = 1024;

/// How much heap a decoder may request for an input of n bytes.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    /// Decoders that borrow from their input.
    Nothing,
    /// `Frame::decode`: the room name and payload it copies out, at most n.
    Input,
    /// JSON the server reads from untrusted peers: serde_json's scratch buffer (up to 2n)
    /// plus the strings copied out of it.
    UntrustedJson,
    /// Version-2 server messages: 24-byte `String`s listed 3 JSON bytes apart, in a `Vec`
    /// that grows to at most twice its length.
    ServerJson,
}

impl Bound {
    fn bytes(self, n: usize) -> usize {
        match self {
            Self::Nothing => 0,
            Self::Input => n,
            Self::UntrustedJson => 3 * n + SLACK,
            Self::ServerJson => 16 * n + SLACK,
        }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs `decode` on `input` and panics (a finding) when it requested more heap than `bound`
/// allows for the input's length.
pub fn within<R>(what: &str, input: &[u8], bound: Bound, decode: impl FnOnce() -> R) -> R {
    let (result, allocated) = measure(decode);
    let allocated = allocated.bytes;
    let limit = bound.bytes(input.len());
    assert!(
        allocated <= limit,
        "{what} allocated {allocated} bytes for {} input bytes; {bound:?} allows {limit}",
        input.len()
    );
    result
}
