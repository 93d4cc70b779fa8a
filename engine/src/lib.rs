//! snaptree's engine: the snapshot tree of a domain, the exact semantics of every
//! operation (SEMANTICS.md), the planner that turns an operation into physical steps, the
//! executor and intent journal around a [`Backend`], XML in both directions, and the
//! durable SQLite store.
//!
//! The engine decides; backends execute. Nothing below the engine decides policy.

#![forbid(unsafe_code)]

pub mod backend;
pub mod conn;
pub mod domain;
pub mod error;
pub mod flags;
pub mod journal;
pub mod model;
pub mod name;
mod name_index;
pub mod null;
pub mod physical;
pub mod plan;
pub mod planner;
pub mod retention;
pub mod space;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tree;
pub mod xml;

pub use backend::{
    Backend, BackendProvider, Capabilities, ContentRef, NoProgress, PhysicalTree, Progress,
    TestHooks,
};
pub use conn::{Connection, DomainInfo, Resolver};
pub use domain::{Domain, Recovery};
pub use error::{Error, ErrorCode, Result};
pub use journal::{DomainStore, JournalEntry, MemoryStore, Pending};
pub use model::{PowerMask, PowerState, Snapshot};
pub use null::{NULL_BACKEND, NullBackend, NullProvider};
pub use plan::{Adoption, DeleteMode, Edit, Operation, Plan, Step, StepKind};
pub use retention::{Policy, PruneReason};
pub use space::{FileSystemSpace, SnapshotSize, SpaceEstimate, SpaceUse};
pub use tree::{Filter, SnapshotTree};
pub use uuid::Uuid;
