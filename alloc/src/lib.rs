//! The memory allocator of every Trellis process (controller, workers, and
//! the bench's ceiling, so that the ceiling runs on the same stack as the
//! router it measures): mimalloc.
//!
//! The `mimalloc` crate hands every allocation to `mi_malloc_aligned`, with
//! the layout's alignment. In mimalloc 3 that call takes its fast path only
//! while the size class's free list has a block; when the list runs dry (a
//! few times per WAMP message in the router) it takes the generic aligned
//! path, and for a size class that is not a power of two (24, 40, 48, 80,
//! … bytes) that path over-allocates by the alignment and aligns by hand:
//! about 200 instructions instead of 20, in a larger size class. Every
//! mimalloc block is at least word-aligned, so a layout that asks for no
//! more than a word's alignment goes to the plain `mi_malloc` family, and
//! only the rare larger alignment to the aligned one.
//!
//! (The same finding, for the `mimalloc` crate: purpleprotocol/mimalloc_rust
//! pull request 170.)
#![allow(unsafe_code)] // a global allocator is an `unsafe` interface

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// mimalloc as the global allocator:
/// `#[global_allocator] static ALLOCATOR: trellis_alloc::Allocator = trellis_alloc::Allocator;`
#[derive(Debug, Clone, Copy, Default)]
pub struct Allocator;

/// The alignment every mimalloc block has (its blocks are whole words).
const WORD: usize = std::mem::size_of::<usize>();

/// Whether the plain entry points satisfy `layout`'s alignment.
#[inline]
fn plain(layout: &Layout) -> bool {
    layout.align() <= WORD
}

// SAFETY: every block comes from mimalloc and goes back to it (`mi_free`
// frees blocks of the plain and the aligned entry points alike); plain
// blocks are word-aligned, which `plain` requires of the layout, and the
// aligned entry points are given the layout's alignment.
unsafe impl GlobalAlloc for Allocator {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: mimalloc's allocation functions take any size.
        unsafe {
            if plain(&layout) {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if plain(&layout) {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator, so from mimalloc.
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`; the new
        // block keeps its alignment.
        unsafe {
            if plain(&layout) {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of every size and alignment a Rust program asks for come back
    /// aligned, keep their contents through `realloc`, and zeroed when
    /// asked.
    #[test]
    fn blocks_are_aligned_zeroed_and_kept_through_realloc() {
        let a = Allocator;
        for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
            for size in [
                1usize, 3, 8, 24, 40, 48, 80, 100, 232, 1000, 1025, 5000, 70_000,
            ] {
                let Ok(layout) = Layout::from_size_align(size.max(align), align) else {
                    continue;
                };
                // Many at once, so that size classes run dry and the slow
                // paths are taken too.
                let blocks: Vec<*mut u8> = (0..64)
                    .map(|i| {
                        // SAFETY: a non-zero size.
                        let p = unsafe {
                            if i % 2 == 0 {
                                a.alloc(layout)
                            } else {
                                a.alloc_zeroed(layout)
                            }
                        };
                        assert!(!p.is_null());
                        assert_eq!(p as usize % align, 0, "size {size}, align {align}");
                        if i % 2 == 1 {
                            // SAFETY: `layout.size()` bytes were allocated.
                            let s = unsafe { std::slice::from_raw_parts(p, layout.size()) };
                            assert!(s.iter().all(|&b| b == 0), "zeroed, size {size}");
                        }
                        // SAFETY: as above.
                        unsafe { p.write_bytes(0xA5, layout.size()) };
                        p
                    })
                    .collect();
                for p in blocks {
                    let grown = layout.size() * 3;
                    // SAFETY: `p` is this allocator's, with `layout`.
                    let q = unsafe { a.realloc(p, layout, grown) };
                    assert!(!q.is_null());
                    assert_eq!(q as usize % align, 0, "realloc, size {size}, align {align}");
                    // SAFETY: the old contents are kept up to the old size.
                    let s = unsafe { std::slice::from_raw_parts(q, layout.size()) };
                    assert!(s.iter().all(|&b| b == 0xA5), "contents kept, size {size}");
                    let Ok(new_layout) = Layout::from_size_align(grown, align) else {
                        panic!("a valid layout");
                    };
                    // SAFETY: `q` is this allocator's, with `new_layout`.
                    unsafe { a.dealloc(q, new_layout) };
                }
            }
        }
    }
}
