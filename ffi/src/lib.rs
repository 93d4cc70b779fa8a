//! libsnaptree: the C API of the snaptree engine.
//!
//! This crate builds `libsnaptree.so` and `libsnaptree.a`; cbindgen generates their header
//! `include/snaptree.h` from it (`SNAPTREE_REGEN=1 cargo test -p snaptree-ffi --test
//! header` rewrites the committed header; the same test fails when it is stale).
//!
//! The conventions are libvirt's: opaque handles, `-1` or `NULL` on error with a
//! thread-local last error (code and message), a `*_free` for every handle, and strings
//! returned to the caller freed with [`snaptree_free`]. Every exported function goes
//! through one boundary (`boundary.rs`): NULL and invalid-UTF-8 arguments are
//! `SNAPTREE_ERR_INVALID_ARG` naming the argument, unknown flag bits are
//! `SNAPTREE_ERR_INVALID_ARG`, a panic is caught and reported as `SNAPTREE_ERR_INTERNAL`,
//! and out-parameters are written only on success. The ownership and thread model of the
//! handles is described in `handles.rs` and in the header's preamble.

#![allow(non_camel_case_types)]

mod boundary;
mod fork;
mod handles;
mod strings;

pub mod api;
pub mod constants;

pub use api::*;
pub use constants::*;
pub use handles::{snaptree_conn, snaptree_domain, snaptree_snapshot};
