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
/// # Safety
/// `out` must be valid for writing `slots` pointers.
pub(crate) unsafe fn write_names(
    out: *mut *mut c_char,
    slots: usize,
    names: &[String],
) -> Result<usize> {
    let mut made: Vec<*mut c_char> = Vec::with_capacity(slots.min(names.len()));
    for name in names.iter().take(slots) {
        match to_c(name) {
            Ok(p) => made.push(p),
            Err(e) => {
                for p in made {
                    // SAFETY: each was just returned by `to_c` and is not shared.
                    unsafe { release(p.cast()) };
                }
                return Err(e);
            }
        }
    }
    for (i, p) in made.iter().enumerate() {
        // SAFETY: i < made.len() <= slots, and the caller made `out` valid for `slots` writes.
        unsafe { out.add(i).write(*p) };
    }
    Ok(made.len())
}
