//! Offline mode: the domain is shut off (or names no QMP socket), and every step is
//! planned from what the files hold and run with `qemu-img` through [`Ctx`](crate::ctx::Ctx).
//!
//! [`external`] and [`internal`] plan a step per disk (from [`scan`], [`header`] and
//! [`meta`]) as physical operations ([`ops`]); [`exec`] runs them on all disks: lock check
//! first, reversible operations next (undone on failure), then the rest. Every step can be
//! re-run after a crash at any point and finishes the job; each planner documents why.

pub(crate) mod exec;
pub(crate) mod external;
pub(crate) mod header;
pub(crate) mod internal;
pub(crate) mod meta;
pub(crate) mod ops;
pub(crate) mod scan;
pub(crate) mod space;
