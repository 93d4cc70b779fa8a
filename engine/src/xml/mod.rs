//! XML in both directions: `<domainsnapshot>` and `<domain>` documents.

pub mod dom;
pub mod domain;
pub mod export;
pub mod snapshot;

pub use domain::{DiskSnapshotMode, DiskXml, DomainXml};
pub use snapshot::{SnapshotXml, libvirt_state, parse_uuid};
