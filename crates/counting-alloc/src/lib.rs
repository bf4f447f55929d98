//! A global allocator that counts the heap the current thread requests while a closure runs:
//! every byte asked of the allocator (fresh allocations plus the growth of reallocations; frees
//! are not subtracted, so the figure bounds the peak too) and the number of calls.
//!
//! The binary that measures installs it itself, which is safe code:
//!
//! ```
//! use counting_alloc::{CountingAllocator, measure};
//!
//! #[global_allocator]
//! static ALLOCATOR: CountingAllocator = CountingAllocator;
//!
//! fn main() {
//!     let (_, allocated) = measure(|| vec![0u8; 64]);
//!     assert_eq!(allocated.bytes, 64);
//! }
//! ```
//!
//! The counters are thread-local, so other threads (a test harness, other tests) cannot
//! disturb the figures.

// Implementing `GlobalAlloc` is `unsafe`; this crate exists so that the workspace does it once.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // `const` initialisers without destructors: reading these never allocates, which matters
    // inside the allocator itself.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static BYTES: Cell<usize> = const { Cell::new(0) };
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

/// The system allocator, with a count of what the current thread asks for inside
/// [`measure`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CountingAllocator;

// SAFETY: every method passes its arguments unchanged to `System` and returns what `System`
// returned, so `System`'s guarantees carry over; the bookkeeping only touches thread-locals.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded with the caller's (valid, non-zero-size) layout.
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

fn record(bytes: usize) {
    if COUNTING.get() {
        BYTES.set(BYTES.get() + bytes);
        CALLS.set(CALLS.get() + 1);
    }
}

/// Heap the current thread requested during one [`measure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allocated {
    /// Bytes requested.
    pub bytes: usize,
    /// Allocator calls that requested them.
    pub calls: usize,
}

/// Runs `f` and returns its result with what it requested from the heap. Only counts when
/// [`CountingAllocator`] is the global allocator; otherwise the figures stay 0.
pub fn measure<R>(f: impl FnOnce() -> R) -> (R, Allocated) {
    BYTES.set(0);
    CALLS.set(0);
    COUNTING.set(true);
    let result = std::hint::black_box(f());
    COUNTING.set(false);
    let allocated = Allocated {
        bytes: BYTES.get(),
        calls: CALLS.get(),
    };
    (result, allocated)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static ALLOCATOR: CountingAllocator = CountingAllocator;

    #[test]
    fn counts_requests_and_growth_but_not_frees() {
        let (buffer, allocated) = measure(|| {
            let mut buffer = Vec::<u8>::with_capacity(100);
            buffer.reserve_exact(150);
            drop(vec![0u8; 10]);
            buffer
        });
        assert_eq!(buffer.capacity(), 150);
        assert_eq!(
            allocated,
            Allocated {
                bytes: 160,
                calls: 3
            }
        );
        // Outside `measure` nothing is counted.
        let (_, nothing) = measure(|| ());
        assert_eq!(nothing, Allocated { bytes: 0, calls: 0 });
    }
}
