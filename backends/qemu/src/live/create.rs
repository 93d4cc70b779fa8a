//! Live create(N) on external disks, all disks in one `transaction`: per disk, (1) the live
//! file gets the second name `layer(N)`; (2) QEMU's active node is re-homed onto that name
//! (it will be reopened read-only *by name* when frozen); (3) a new empty overlay on
//! `layer(N)` is renamed over the disk path; (4) it is opened as a node, and one
//! `transaction` of `blockdev-snapshot` actions moves every disk onto its overlay at once.
//! The guest keeps writing into `layer(N)` until (4): that data is N's. If QEMU dies
//! anywhere, the disk path holds the newest data (before (3) the live file itself, after
//! (3) an empty overlay on it), and a re-run of the step finishes from whatever it finds.
//! If QEMU was started again between two disks' renames, the disks already switched give
//! their layer back first, so that N is one point in time on every disk.
//!
//! A module of its own (the layout had it in `external`): the create shares
//! nothing with the steps that reshape a chain but the step context.

use snaptree_engine::Uuid;
use snaptree_qmp::{self as qmp, Action, Backing as NodeBacking};

use super::chain::{chains, forget_node, node_name};
use super::external::free;
use super::session::same_path;
use super::step::{ChainStep, OnDisk};
use crate::disk::Disk;
use crate::error::{QemuError, Result, error};
use crate::offline::header;
use crate::offline::ops::same_file;
use crate::offline::scan::Scan;

/// Create(N) on every disk, one transaction for all; see the module documentation.
///
/// Restart, per disk: QEMU already on an overlay of `layer(N)` → done; QEMU's active
/// file already `layer(N)` → re-homed; the disk path already backed by `layer(N)` →
/// renamed. The transaction covers the disks not yet switched.
pub(crate) fn create(live: &mut ChainStep<'_>, disks: &[Disk], snapshot: Uuid) -> Result<()> {
    let mut chains = chains(live.session, disks)?;
    // QEMU on an overlay of N's layer on some disks but not on all: the transaction
    // never ran (it switches all or none), so QEMU was started again after dying
    // between two disks' renames. Those disks hold N as it was when QEMU died; the
    // others can only give N as it is now. For one point in time on every disk, the
    // early ones give their layer back (its data stays in the live image), and N is
    // taken again on all disks.
    let switched: Vec<bool> = disks
        .iter()
        .zip(&chains)
        .map(|(d, c)| c.on_overlay_of(d, &d.layer(&snapshot)))
        .collect();
    if switched.contains(&true) && switched.contains(&false) {
        for (index, disk) in disks.iter().enumerate().filter(|(i, _)| switched[*i]) {
            let scan = Scan::load(disk)?;
            let on = OnDisk {
                index,
                disk,
                chain: &chains[index],
                scan: &scan,
            };
            free(live, on, snapshot)?;
        }
        chains = super::chain::chains(live.session, disks)?;
    }
    if let Some((d, _)) = disks
        .iter()
        .zip(&chains)
        .find(|(_, c)| c.active.starts_with('#'))
    {
        return Err(QemuError::OperationInvalid(format!(
            "the qemu backend cannot snapshot {} live: its node in the running VM has no name (attach disks with -blockdev and a node-name, as libvirt does)",
            d.describe()
        )));
    }
    let mut actions = Vec::new();
    let mut added = Vec::new();
    for (index, (disk, chain)) in disks.iter().zip(&chains).enumerate() {
        let layer = disk.layer(&snapshot);
        if chain.on_overlay_of(disk, &layer) {
            continue;
        }
        if same_path(&chain.active_file, &disk.live) {
            if !layer.exists() {
                live.ctx.create_dir(&disk.dir())?;
                live.ctx.link(&disk.live, &layer)?;
            } else if !same_file(&layer, &disk.live) {
                return Err(error(format!(
                    "{}: {} already exists but is not the live image",
                    disk.describe(),
                    layer.display()
                )));
            }
            let file_node = node_name('f', &snapshot, index);
            forget_node(live.session, &file_node);
            live.ctx
                .mutation(|| format!("re-home node {} onto {}", chain.active, layer.display()))?;
            live.session
                .with("re-home the live image onto its new layer", |q| {
                    q.rehome_active(
                        &chain.active,
                        &file_node,
                        &layer,
                        chain.backing_node(),
                        false,
                        disk.discard.as_deref(),
                    )
                })?;
        } else if !same_path(&chain.active_file, &layer) {
            return Err(error(format!(
                "{}: the running VM writes into {}, which is neither the disk nor the new layer {}",
                disk.describe(),
                chain.active_file.display(),
                layer.display()
            )));
        }
        if same_file(&layer, &disk.live) {
            let fresh = disk.fresh();
            live.ctx.remove(&fresh)?;
            live.ctx
                .install_overlay(&disk.live, &fresh, &layer, Some(chain.size), || Ok(()))?;
        } else {
            let backing = header::read(&disk.live)?.backing;
            if !backing.as_deref().is_some_and(|b| same_path(b, &layer)) {
                return Err(error(format!(
                    "{}: the live image is not an overlay on {}",
                    disk.describe(),
                    layer.display()
                )));
            }
        }
        let overlay = node_name('y', &snapshot, index);
        forget_node(live.session, &overlay);
        live.ctx
            .mutation(|| format!("open {} as node {overlay}", disk.live.display()))?;
        // With the I/O options of the node it goes on top of (cache mode,
        // detect-zeroes), which the guest's disk had.
        live.session.with("open the new live overlay", |q| {
            let mut io = q.io_options(&chain.active)?;
            io.discard = disk.discard.clone();
            let mut spec = qmp::qcow2_node(&overlay, &disk.live, NodeBacking::None);
            io.apply_to_format(&mut spec);
            io.apply_to_file(&mut spec["file"]);
            q.blockdev_add(spec)
        })?;
        added.push(overlay.clone());
        actions.push(Action::Snapshot {
            node: chain.active.clone(),
            overlay,
        });
    }
    if actions.is_empty() {
        return Ok(());
    }
    // The new names must be durable before QEMU writes into the overlays.
    live.ctx.sync_dirty()?;
    live.ctx
        .mutation(|| format!("transaction of {} snapshots", actions.len()))?;
    if let Err(e) = live
        .session
        .with("switch the disks onto their new overlays", |q| {
            q.transaction(&actions)
        })
    {
        for node in added {
            forget_node(live.session, &node);
        }
        return Err(e.then("running the step again (or with the domain shut off) finishes it"));
    }
    Ok(())
}
