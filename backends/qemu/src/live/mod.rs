//! Live mode: the domain XML names QEMU's QMP socket (`<qmp socket='PATH'/>` in `<domain>`)
//! and the VM runs or is paused. [`session`] is the connection; a domain whose disks are all
//! internal takes snapshots with memory ([`internal`]), one whose disks are all external
//! takes disk-only snapshots as overlay chains ([`external`], with [`create`], the active
//! commit in [`pivot`], and QEMU's view of each chain in [`chain`]). A domain mixing the
//! modes has no live mode: its capabilities keep every step shut off.

pub(crate) mod chain;
pub(crate) mod create;
pub(crate) mod external;
pub(crate) mod internal;
pub(crate) mod pivot;
pub(crate) mod session;
pub(crate) mod step;

use snaptree_engine::Step;

use self::chain::{drop_stale_nodes, settle_jobs};
use self::step::ChainStep;
use crate::disk::Disk;
use crate::error::{QemuError, Result};

/// Runs one step while the VM runs or is paused, on a domain whose disks are all external.
pub(crate) fn execute_chains(live: &mut ChainStep<'_>, disks: &[Disk], step: &Step) -> Result<()> {
    settle_jobs(live.session)?;
    let result = match step {
        Step::Forget { .. } => Ok(()),
        Step::Create { snapshot, .. } => create::create(live, disks, *snapshot),
        Step::Revert { snapshot, .. } => Err(QemuError::OperationInvalid(format!(
            "the qemu backend cannot revert a running VM to snapshot {snapshot}: its disks are external, and a disk-only snapshot holds no memory to resume from (shut the domain down first)"
        ))),
        _ => external::reshape(live, disks, step),
    };
    // Nodes of layers that left the chain, even after a failure.
    let tidied = drop_stale_nodes(live.session, disks);
    result.and(tidied)
}
