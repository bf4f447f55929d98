//! What the fuzz targets share: a counting global allocator, so that a decoder taking more heap
//! than its input justifies is a crash like any other, and the bounds it is held to.
//!
//! The bounds are those of `crates/protocol/tests/allocation.rs` (which explains them); keep
//! the two in step.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

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

thread_local! {
    // `const` initialisers without destructors: reading these never allocates, which matters
    // inside the allocator itself.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static BYTES: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, with a count of what the current thread asks for while counting.
struct CountingAllocator;

// SAFETY: every method passes its arguments unchanged to `System` and returns what `System`
// returned, so `System`'s guarantees carry over; the bookkeeping only touches thread-locals.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` (every allocation goes through this type).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size.saturating_sub(layout.size()));
        // SAFETY: as for `dealloc`; `new_size` is the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn record(bytes: usize) {
    if COUNTING.get() {
        BYTES.set(BYTES.get() + bytes);
    }
}

/// Runs `decode` on `input` and panics (a finding) when it requested more heap than `bound`
/// allows for the input's length.
pub fn within<R>(what: &str, input: &[u8], bound: Bound, decode: impl FnOnce() -> R) -> R {
    BYTES.set(0);
    COUNTING.set(true);
    let result = std::hint::black_box(decode());
    COUNTING.set(false);
    let allocated = BYTES.get();
    let limit = bound.bytes(input.len());
    assert!(
        allocated <= limit,
        "{what} allocated {allocated} bytes for {} input bytes; {bound:?} allows {limit}",
        input.len()
    );
    result
}
