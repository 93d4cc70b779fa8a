//! Strings handed to C: allocated with the C library's `malloc`, so that `snaptree_free`
//! (which is `free`) releases them and tools like valgrind pair them correctly.

use std::ffi::{c_char, c_void};

use snaptree_engine::{Error, Result};

// SAFETY: the C library's allocator, with its standard signatures; std links it on
// every platform this crate builds for.
unsafe extern "C" {
    fn malloc(size: usize) -> *mut c_void;
    fn free(ptr: *mut c_void);
}

/// Copies `text` into a new NUL-terminated C string owned by the caller.
pub(crate) fn to_c(text: &str) -> Result<*mut c_char> {
    if text.as_bytes().contains(&0) {
        return Err(Error::Internal(format!(
            "a string for C contains a NUL character: {}",
            text.escape_default()
        )));
    }
    let n = text.len();
    // SAFETY: malloc may be called with any size; NULL is handled below.
    let p = unsafe { malloc(n + 1) }.cast::<u8>();
    if p.is_null() {
        return Err(Error::Internal(format!(
            "out of memory allocating a string of {} bytes",
            n + 1
        )));
    }
    // SAFETY: `p` is a fresh allocation of n + 1 bytes, disjoint from `text`.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr(), p, n);
        p.add(n).write(0);
    }
    Ok(p.cast())
}

/// Frees memory that [`to_c`] returned (NULL is a no-op, as for `free`).
///
/// # Safety
/// `ptr` is NULL or a pointer returned by [`to_c`] and not freed since.
pub(crate) unsafe fn release(ptr: *mut c_void) {
    // SAFETY: the caller passes NULL or a live malloc'ed pointer, exactly what free takes.
    unsafe { free(ptr) }
}

/// Writes up to `slots` of `names` into `out` as new C strings and returns how many were
/// written. Nothing is written unless every string could be allocated.
///
/// The strings are made first and kept in a per-thread scratch list that keeps its
/// capacity: a fresh list of tens of thousands of pointers on every call would be a large
/// allocation, which makes the C allocator consolidate the small blocks the caller just
/// freed (a listing loop then pays for that on every call).
///
/// # Safety
/// `out` must be valid for writing `slots` pointers.
pub(crate) unsafe fn write_names<'a>(
    out: *mut *mut c_char,
    slots: usize,
    names: impl Iterator<Item = &'a str>,
) -> Result<usize> {
    thread_local! {
        static SCRATCH: std::cell::RefCell<Vec<*mut c_char>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    let mut own = Vec::new();
    SCRATCH.with(|scratch| {
        // Re-entered only if a name's allocation called back here, which it cannot; a
        // fresh list then is still correct.
        let mut borrowed = scratch.try_borrow_mut();
        let made = match borrowed.as_deref_mut() {
            Ok(v) => v,
            Err(_) => &mut own,
        };
        made.clear();
        for name in names.take(slots) {
            match to_c(name) {
                Ok(p) => made.push(p),
                Err(e) => {
                    for p in made.drain(..) {
                        // SAFETY: each was just returned by `to_c` and is not shared.
                        unsafe { release(p.cast()) };
                    }
                    return Err(e);
                }
            }
        }
        for (i, p) in made.iter().enumerate() {
            // SAFETY: i < made.len() <= slots, and the caller made `out` valid for `slots`
            // writes.
            unsafe { out.add(i).write(*p) };
        }
        let n = made.len();
        made.clear();
        Ok(n)
    })
}
