//! XML in both directions: `<domainsnapshot>` and `<domain>` documents.

pub mod dom;
pub mod domain;
pub mod snapshot;

pub use domain::{DomainXml, SnapshotLocation};
pub use snapshot::{SnapshotXml, parse_uuid};
