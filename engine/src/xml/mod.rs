//! XML in both directions: `<domainsnapshot>` and `<domain>` documents.

pub mod dom;
pub mod domain;
pub mod export;
pub mod manifest;
pub mod snapshot;

pub use domain::{DomainXml, SnapshotLocation};
pub use snapshot::{SnapshotXml, libvirt_state, parse_uuid};
