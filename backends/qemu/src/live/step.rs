//! The context of one live step on external disks ([`ChainStep`]) and of one disk in it
//! ([`OnDisk`]), passed to the step functions of `external`, `create` and `pivot` instead
//! of long argument lists.

use snaptree_engine::Progress;

use super::chain::Chain;
use super::session::Session;
use crate::ctx::Ctx;
use crate::disk::Disk;
use crate::offline::scan::Scan;
use crate::stats::ConsolidatePolicy;

/// One live step on a domain whose disks are all external: the session, the door to the
/// disk, the consolidate policy and the step's progress.
pub(crate) struct ChainStep<'a> {
    /// The connection to the running QEMU.
    pub(crate) session: &'a mut Session,
    /// The door to the disk.
    pub(crate) ctx: Ctx<'a>,
    /// How freed layers hand their data on.
    pub(crate) policy: ConsolidatePolicy,
    /// The step's progress.
    pub(crate) progress: &'a mut dyn Progress,
}

/// One disk of a step with what QEMU and the files say of it.
#[derive(Clone, Copy)]
pub(crate) struct OnDisk<'d> {
    /// The disk's position in the domain (part of the names of its nodes and jobs).
    pub(crate) index: usize,
    /// The disk.
    pub(crate) disk: &'d Disk,
    /// Its chain in QEMU.
    pub(crate) chain: &'d Chain,
    /// Its files.
    pub(crate) scan: &'d Scan,
}
