//! snaptree's model checker and backend conformance kit.
//!
//! - [`model`]: the deliberately naive reference model of SEMANTICS.md §2;
//! - [`sim`]: an in-memory backend that stores snapshots as deltas, like qcow2 chains;
//! - [`transition`]: the one `Transition` type driving model and system, and its generator;
//! - [`conformance`]: the runner that checks every invariant after every step, usable
//!   against any backend that offers the two test hooks (or, without them, at tree level);
//! - [`harness`]: the kit's shared handle on a backend (step log, capability mode, faults);
//! - [`oracle`]: the kit's own physical, plan and victim-order checks;
//! - [`prelude`]: a tree another tool made, which a run adopts before its sequence.

pub mod conformance;
pub mod harness;
pub mod model;
pub mod oracle;
pub mod prelude;
pub mod sim;
pub mod transition;

pub use conformance::{
    Adopted, Config, Coverage, Decoders, Report, Subject, run, run_adopted, run_sequence,
    run_sequence_from, run_sequence_with,
};
pub use prelude::{Build, Prelude, PreludeSnapshot};
pub use sim::{SimBackend, SimProvider};
pub use transition::{Reach, Transition, Tuning, transitions_from_bytes};
