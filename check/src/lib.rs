//! snaptree's model checker and backend conformance kit.
//!
//! - [`model`]: the deliberately naive reference model of SEMANTICS.md §2;
//! - [`sim`]: an in-memory backend that stores snapshots as deltas, like qcow2 chains;
//! - [`transition`]: the one `Transition` type driving model and system, and its generator;
//! - [`conformance`]: the runner that checks every invariant after every step, usable
//!   against any backend that offers the two test hooks.

pub mod conformance;
pub mod model;
pub mod sim;
pub mod transition;

pub use conformance::{Config, Report, Subject, run, run_sequence};
pub use sim::{SimBackend, SimProvider};
pub use transition::{Transition, Tuning, transitions_from_bytes};
