//! Live mode for external-mode disks: disk-only snapshots of a running VM as qcow2 overlay
//! chains, with the same files and names as offline external mode (`external`), so the
//! domain can be shut down, reverted offline and started again at any point.
//!
//! QEMU holds the *chain* of each disk: the live file (the active node, written by the
//! guest) and the layers below it. Those files are changed only through QMP; every other
//! layer of the disk is not open in QEMU and is changed offline with `qemu-img`, exactly
//! as in offline mode. So a step whose snapshot is outside the chain is the offline plan
//! as is, and only steps that touch the chain need QMP:
//!
//! - **create(N)**, all disks in one `transaction`: per disk, (1) the live file gets the
//!   second name `layer(N)`; (2) QEMU's active node is re-homed onto that name (it will be
//!   reopened read-only *by name* when frozen); (3) a new empty overlay on `layer(N)` is
//!   renamed over the disk path; (4) it is opened as a node, and one `transaction` of
//!   `blockdev-snapshot` actions moves every disk onto its overlay at once. The guest keeps
//!   writing into `layer(N)` until (4): that data is N's. If QEMU dies anywhere, the disk
//!   path holds the newest data (before (3) the live file itself, after (3) an empty
//!   overlay on it), and a re-run of the step finishes from whatever it finds. If QEMU was
//!   started again between two disks' renames, the disks already switched give their
//!   layer back first, so that N is one point in time on every disk.
//! - **discard / consolidate / merge into the base** of a layer in the chain: its
//!   dependent in the chain gets its data by `block-stream` (the layer leaves the chain),
//!   the others by offline rebase; then the layer is deleted. When the live image is the
//!   only dependent and the consolidate policy says committing its data down is cheaper,
//!   an active `block-commit` does it instead, with a pivot (see `commit_active`).
//! - **merge(S into P)** with S in the chain: S is committed into P by an intermediate
//!   `block-commit`, which also moves S's overlay in the chain onto P; S's other
//!   dependents are rebased offline (safe onto S before the commit, unsafe onto P after).
//!   A record beside the disk says the commit has run, so a re-run does not mistake the
//!   moved overlay for one of P's other dependents.
//! - **detach**: `block-stream` of the whole chain into the live file.
//! - **revert** is not possible while the guest runs (a disk-only snapshot has no memory to
//!   go with its disks): the capabilities say so and the engine refuses it.
//!
//! Every QMP call that changes something counts as a change for the restart tests'
//! simulated crashes, like every file operation does.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use snaptree_engine::{Error, Progress, Result, Step, Uuid};
use snaptree_qmp::{self as qmp, Action, Backing as NodeBacking, Commit, Stream};

use crate::ctx::{Ctx, error, message};
use crate::disk::Disk;
use crate::exec;
use crate::external;
use crate::header;
use crate::live::{Live, read_text, uuid_pair};
use crate::ops::{Op, same_file};
use crate::scan::{Backing, Dep, Scan, backing_path, dep_path};
use crate::stats::ConsolidatePolicy;

/// How long one block job may take.
const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// Prefix of the job id of an active commit: with [`node_name`]'s suffix, one id per
/// snapshot and disk, so that a re-run finds the job of an interrupted attempt.
const PIVOT_JOB: &str = "snaptree-pivot-";

/// Prefix of every node snaptree adds to QEMU, so that leftovers can be told apart.
const NODE_PREFIX: &str = "snaptree-";

/// One disk's chain as the running QEMU holds it.
#[derive(Debug, Clone)]
struct Chain {
    /// The active node (the device's top node).
    active: String,
    /// The active node's file as QEMU names it.
    active_file: PathBuf,
    /// The images below the active one, top down: file and node name.
    below: Vec<(PathBuf, String)>,
    /// Guest-visible size.
    size: u64,
}

impl Chain {
    /// The node holding `file`: the active node for the live file, else a backing node.
    fn node_of(&self, disk: &Disk, file: &Path) -> Option<&str> {
        if same_path(file, &disk.live) && same_path(&self.active_file, &disk.live) {
            return Some(&self.active);
        }
        self.below
            .iter()
            .find(|(f, _)| same_path(f, file))
            .map(|(_, n)| n.as_str())
    }

    /// Whether QEMU holds `file` in this chain (so only QMP may change it).
    fn holds(&self, disk: &Disk, file: &Path) -> bool {
        self.node_of(disk, file).is_some()
    }

    /// The node directly below the active one.
    fn backing_node(&self) -> Option<&str> {
        self.below.first().map(|(_, n)| n.as_str())
    }
}

/// The file of an image as QEMU names it: a path, or a `json:{…}` pseudo file name (a
/// node whose backing was set by option rather than by its header), whose protocol
/// node's `filename` is the file.
fn image_path(name: &str) -> PathBuf {
    let Some(json) = name.strip_prefix("json:") else {
        return PathBuf::from(name);
    };
    let found = serde_json::from_str::<serde_json::Value>(json)
        .ok()
        .and_then(|v| {
            v.get("file")
                .and_then(|f| f.get("filename"))
                .and_then(|f| f.as_str())
                .map(PathBuf::from)
        });
    found.unwrap_or_else(|| PathBuf::from(name))
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

fn same_path(a: &Path, b: &Path) -> bool {
    a == b || canonical(a) == canonical(b)
}

/// A node name of at most 31 characters with its `-file` child (QEMU's limit): prefix,
/// kind, 12 hex digits of a hash of the whole uuid (time-based uuids share their tail),
/// the disk's index.
fn node_name(kind: char, uuid: &Uuid, disk: usize) -> String {
    // FNV-1a, 64 bits: stable across processes and releases, unlike std's hasher.
    let hash = uuid
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{NODE_PREFIX}{kind}{:012x}-{disk}", hash >> 16)
}

/// The record of a live commit in progress on a disk: `S P`, written before the commit
/// of S into P starts. It lies in the snapshot directory and is not a layer, so the
/// physical tree does not read while P's content is being replaced: a failed commit then
/// keeps the engine's journal entry, and the step is finished, not forgotten.
fn commit_intent(disk: &Disk) -> PathBuf {
    disk.dir().join(".live-commit")
}

/// The record of an active commit in progress on a disk: `S running|paused`, written
/// before the commit of the live image into S's layer starts. It tells a re-run that QEMU
/// writing into S's layer is a pivot to finish (not a create), and whether to resume the
/// guest, which is paused from the pivot to the rename.
fn pivot_record(disk: &Disk) -> PathBuf {
    disk.dir().join(".live-pivot")
}

/// The records live steps keep on a disk.
pub(crate) fn records(disk: &Disk) -> [PathBuf; 2] {
    [commit_intent(disk), pivot_record(disk)]
}

/// Removes the records of live steps a QEMU died in, once the step was finished offline.
pub(crate) fn clear_records(ctx: Ctx<'_>, disks: &[Disk]) -> Result<()> {
    for record in disks.iter().flat_map(records) {
        ctx.remove(&record)?;
    }
    Ok(())
}

/// The snapshot an active commit record names and whether the guest ran before it.
fn read_pivot_record(d: &Disk) -> Result<Option<(Uuid, bool)>> {
    let path = pivot_record(d);
    let Some(text) = read_text(&path)? else {
        return Ok(None);
    };
    let words: Vec<&str> = text.split_whitespace().collect();
    match words[..] {
        [s, state @ ("running" | "paused")] => Uuid::parse_str(s)
            .map(|s| Some((s, state == "running")))
            .map_err(|_| error(format!("{} is not a pivot record", path.display()))),
        _ => Err(error(format!("{} is not a pivot record", path.display()))),
    }
}

impl Live {
    /// Every disk's chain in the running QEMU. A disk is found by its active image: the
    /// disk path, or a layer of its snapshot directory (mid-create, QEMU writes into the
    /// new layer until the transaction).
    fn chains(&mut self, disks: &[Disk]) -> Result<Vec<Chain>> {
        let block = self.with("query the block devices", |q| q.query_block())?;
        let nodes = self.with("query the block nodes", |q| q.query_named_block_nodes())?;
        disks
            .iter()
            .map(|d| {
                let dir = canonical(&d.dir());
                let ins = block
                    .iter()
                    .filter_map(|b| b.inserted.as_ref())
                    .find(|i| {
                        let f = image_path(&i.image.filename);
                        same_path(&f, &d.live) || f.parent().is_some_and(|p| canonical(p) == dir)
                    })
                    .ok_or_else(|| {
                        error(format!(
                            "{} is not the active image of any device of the running VM",
                            d.describe()
                        ))
                    })?;
                let mut below = Vec::new();
                let mut at = ins.image.backing_image.as_deref();
                while let Some(img) = at {
                    let file = image_path(&img.filename);
                    let node = nodes
                        .iter()
                        .find(|n| n.drv != "file" && same_path(&image_path(&n.file), &file))
                        .ok_or_else(|| {
                            error(format!(
                                "{}: the running VM holds {} but names no node for it",
                                d.describe(),
                                file.display()
                            ))
                        })?;
                    below.push((file, node.node_name.clone()));
                    at = img.backing_image.as_deref();
                }
                Ok(Chain {
                    active: ins.node_name.clone(),
                    active_file: image_path(&ins.image.filename),
                    below,
                    size: ins.image.virtual_size,
                })
            })
            .collect()
    }

    /// Waits for the block jobs an earlier (interrupted) snaptree process left in QEMU and
    /// dismisses them, so their nodes are free again.
    fn settle_jobs(&mut self) -> Result<()> {
        let jobs = self.with("query the jobs", |q| q.query_jobs())?;
        // An unfinished active commit is taken over by the pivot it belongs to (it may run
        // for longer than one step's patience): cancelling it would start the copy again.
        let adoptable =
            |j: &qmp::JobInfo| j.id.starts_with(PIVOT_JOB) && j.status != qmp::JobStatus::Concluded;
        for job in jobs
            .iter()
            .filter(|j| j.id.starts_with("snaptree-") && !adoptable(j))
        {
            let id = job.id.clone();
            // The earlier job's own outcome was its step's: a re-run plans from what the
            // images hold now, so a failed job does not fail this step.
            self.with("finish an earlier job", |q| {
                match q.wait_job(
                    &id,
                    qmp::Until::ReadyOrConcluded,
                    &mut |_| true,
                    JOB_TIMEOUT,
                ) {
                    Ok(info) if info.status == qmp::JobStatus::Ready => {
                        // A job nobody completes any more: cancelling keeps the chain.
                        q.job_cancel(&id)?;
                        match q.wait_job(&id, qmp::Until::Concluded, &mut |_| true, JOB_TIMEOUT) {
                            Err(qmp::Error::Job { .. }) | Ok(_) => Ok(()),
                            Err(e) => Err(e),
                        }
                    }
                    Err(qmp::Error::Job { .. }) | Ok(_) => Ok(()),
                    Err(e) => Err(e),
                }
            })?;
        }
        Ok(())
    }

    /// Runs one step while the VM runs or is paused, on a domain whose disks are all in
    /// external mode.
    pub(crate) fn execute_chains(
        &mut self,
        ctx: Ctx<'_>,
        disks: &[Disk],
        step: &Step,
        policy: ConsolidatePolicy,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        self.settle_jobs()?;
        let result = match step {
            Step::Forget { .. } => Ok(()),
            Step::Create { snapshot, .. } => {
                self.create_chain(ctx, disks, *snapshot, policy, progress)
            }
            Step::Revert { snapshot, .. } => Err(Error::OperationInvalid(format!(
                "the qemu backend cannot revert a running VM to snapshot {snapshot}: its disks are external, and a disk-only snapshot holds no memory to resume from (shut the domain down first)"
            ))),
            _ => self.reshape(ctx, disks, step, policy, progress),
        };
        // Nodes of layers that left the chain, even after a failure.
        let tidied = self.drop_stale_nodes(disks);
        result.and(tidied)
    }

    /// Create(N) on every disk, one transaction for all; see the module documentation.
    ///
    /// Restart, per disk: QEMU already on an overlay of `layer(N)` → done; QEMU's active
    /// file already `layer(N)` → re-homed; the disk path already backed by `layer(N)` →
    /// renamed. The transaction covers the disks not yet switched.
    fn create_chain(
        &mut self,
        ctx: Ctx<'_>,
        disks: &[Disk],
        n: Uuid,
        policy: ConsolidatePolicy,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let mut chains = self.chains(disks)?;
        // QEMU on an overlay of N's layer on some disks but not on all: the transaction
        // never ran (it switches all or none), so QEMU was started again after dying
        // between two disks' renames. Those disks hold N as it was when QEMU died; the
        // others can only give N as it is now. For one point in time on every disk, the
        // early ones give their layer back (its data stays in the live image), and N is
        // taken again on all disks.
        let switched: Vec<bool> = disks
            .iter()
            .zip(&chains)
            .map(|(d, c)| {
                same_path(&c.active_file, &d.live)
                    && c.below
                        .first()
                        .is_some_and(|(f, _)| same_path(f, &d.layer(&n)))
            })
            .collect();
        if switched.contains(&true) && switched.contains(&false) {
            for (i, d) in disks.iter().enumerate().filter(|(i, _)| switched[*i]) {
                let scan = Scan::load(d)?;
                self.free_chain(ctx, (i, d), &chains[i], &scan, n, policy, progress)?;
            }
            chains = self.chains(disks)?;
        }
        if let Some((d, _)) = disks
            .iter()
            .zip(&chains)
            .find(|(_, c)| c.active.starts_with('#'))
        {
            return Err(Error::OperationInvalid(format!(
                "the qemu backend cannot snapshot {} live: its node in the running VM has no name (attach disks with -blockdev and a node-name, as libvirt does)",
                d.describe()
            )));
        }
        let mut actions = Vec::new();
        let mut added = Vec::new();
        for (i, (d, c)) in disks.iter().zip(&chains).enumerate() {
            let layer = d.layer(&n);
            if same_path(&c.active_file, &d.live)
                && c.below.first().is_some_and(|(f, _)| same_path(f, &layer))
            {
                continue;
            }
            if same_path(&c.active_file, &d.live) {
                if !layer.exists() {
                    ctx.create_dir(&d.dir())?;
                    ctx.link(&d.live, &layer)?;
                } else if !same_file(&layer, &d.live) {
                    return Err(error(format!(
                        "{}: {} already exists but is not the live image",
                        d.describe(),
                        layer.display()
                    )));
                }
                let file_node = node_name('f', &n, i);
                self.forget_node(&file_node);
                ctx.mutation(|| format!("re-home node {} onto {}", c.active, layer.display()))?;
                self.with("re-home the live image onto its new layer", |q| {
                    q.rehome_active(
                        &c.active,
                        &file_node,
                        &layer,
                        c.backing_node(),
                        false,
                        d.discard.as_deref(),
                    )
                })?;
            } else if !same_path(&c.active_file, &layer) {
                return Err(error(format!(
                    "{}: the running VM writes into {}, which is neither the disk nor the new layer {}",
                    d.describe(),
                    c.active_file.display(),
                    layer.display()
                )));
            }
            if same_file(&layer, &d.live) {
                let fresh = d.fresh();
                ctx.remove(&fresh)?;
                ctx.create_overlay_unopened(&fresh, &layer, c.size)?;
                ctx.copy_permissions(&d.live, &fresh)?;
                ctx.rename(&fresh, &d.live)?;
            } else {
                let backing = header::read(&d.live)?.backing;
                if !backing.as_deref().is_some_and(|b| same_path(b, &layer)) {
                    return Err(error(format!(
                        "{}: the live image is not an overlay on {}",
                        d.describe(),
                        layer.display()
                    )));
                }
            }
            let overlay = node_name('y', &n, i);
            self.forget_node(&overlay);
            ctx.mutation(|| format!("open {} as node {overlay}", d.live.display()))?;
            // With the I/O options of the node it goes on top of (cache mode,
            // detect-zeroes), which the guest's disk had.
            self.with("open the new live overlay", |q| {
                let mut io = q.io_options(&c.active)?;
                io.discard = d.discard.clone();
                let mut spec = qmp::qcow2_node(&overlay, &d.live, NodeBacking::None);
                io.apply_to_format(&mut spec);
                io.apply_to_file(&mut spec["file"]);
                q.blockdev_add(spec)
            })?;
            added.push(overlay.clone());
            actions.push(Action::Snapshot {
                node: c.active.clone(),
                overlay,
            });
        }
        if actions.is_empty() {
            return Ok(());
        }
        // The new names must be durable before QEMU writes into the overlays.
        ctx.sync_dirty()?;
        ctx.mutation(|| format!("transaction of {} snapshots", actions.len()))?;
        if let Err(e) = self.with("switch the disks onto their new overlays", |q| {
            q.transaction(&actions)
        }) {
            for node in added {
                self.forget_node(&node);
            }
            return Err(error(format!(
                "{}; running the step again (or with the domain shut off) finishes it",
                message(&e)
            )));
        }
        Ok(())
    }

    /// Cancels and dismisses job `id` if QEMU still has it (a ready active commit cancelled
    /// keeps the chain as it is).
    fn drop_job(&mut self, id: &str) -> Result<()> {
        let Some(job) = self.with("query the jobs", |q| q.query_job(id))? else {
            return Ok(());
        };
        self.with("drop an earlier job", |q| {
            if job.status != qmp::JobStatus::Concluded {
                let _ = q.job_cancel(id);
            }
            match q.wait_job(id, qmp::Until::Concluded, &mut |_| true, JOB_TIMEOUT) {
                Err(qmp::Error::Job { .. }) | Ok(_) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    /// Removes a node of ours if QEMU has it and nothing uses it (a leftover of an earlier
    /// attempt); anything else is left alone.
    fn forget_node(&mut self, node: &str) {
        if let Some(q) = self.qmp_mut() {
            let _ = q.blockdev_del(node);
        }
    }

    /// Removes the nodes snaptree added whose files are no longer in any chain: QEMU keeps
    /// monitor-owned nodes (and their files) open until they are deleted.
    fn drop_stale_nodes(&mut self, disks: &[Disk]) -> Result<()> {
        let Ok(chains) = self.chains(disks) else {
            return Ok(());
        };
        let mut held: BTreeSet<String> = BTreeSet::new();
        for c in &chains {
            held.insert(c.active.clone());
            held.extend(c.below.iter().map(|(_, n)| n.clone()));
        }
        let nodes = self.with("query the block nodes", |q| q.query_named_block_nodes())?;
        // By name (a node whose backing changed reports a `json:` file name), or by file.
        let ours = |n: &qmp::BlockNode| {
            let f = &image_path(&n.file);
            n.node_name.starts_with(NODE_PREFIX)
                || disks.iter().any(|d| {
                    same_path(f, &d.live) || f.parent().is_some_and(|p| same_path(p, &d.dir()))
                })
        };
        // Format nodes first: their file children are in use until they go.
        for drv_first in [true, false] {
            for n in nodes
                .iter()
                .filter(|n| (n.drv == "qcow2") == drv_first && ours(n))
                .filter(|n| !held.contains(&n.node_name))
            {
                // In use (e.g. the file node of a held layer) → QEMU refuses: fine.
                self.forget_node(&n.node_name);
            }
        }
        Ok(())
    }

    /// Discard, consolidate, merge and detach: offline for disks whose snapshot QEMU does
    /// not hold, through block jobs where it does.
    fn reshape(
        &mut self,
        ctx: Ctx<'_>,
        disks: &[Disk],
        step: &Step,
        policy: ConsolidatePolicy,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let chains = self.chains(disks)?;
        let scans: Vec<Scan> = disks.iter().map(Scan::load).collect::<Result<_>>()?;
        // Refuse before changing anything: a merge whose parent QEMU holds but whose
        // snapshot it does not would rewrite the running disk onto another branch.
        if let Step::MergeIntoParent {
            snapshot,
            parent: Some(p),
        } = step
        {
            for (d, c) in disks.iter().zip(&chains) {
                if !c.holds(d, &d.layer(snapshot)) && c.holds(d, &d.layer(p)) {
                    return Err(Error::OperationInvalid(format!(
                        "the qemu backend cannot merge snapshot {snapshot} into {p} while the VM runs on {p}'s branch: the running {} would have to move onto {snapshot}'s branch (shut the domain down first)",
                        d.describe()
                    )));
                }
            }
        }
        let mut offline = Vec::new();
        let mut live = Vec::new();
        for (i, d) in disks.iter().enumerate() {
            let target = match step {
                Step::DiscardLeaf { snapshot }
                | Step::Consolidate { snapshot }
                | Step::MergeIntoParent { snapshot, .. } => Some(*snapshot),
                _ => None,
            };
            // QEMU writing into the layer itself (an interrupted pivot) counts too.
            let in_chain = match target {
                Some(s) => {
                    chains[i].holds(d, &d.layer(&s))
                        || same_path(&chains[i].active_file, &d.layer(&s))
                }
                None => true,
            };
            let resumed = match step {
                Step::MergeIntoParent {
                    snapshot,
                    parent: Some(p),
                } => read_commit_intent(d)? == Some((*snapshot, *p)),
                _ => target.is_some() && read_pivot_record(d)?.map(|r| r.0) == target,
            };
            if in_chain || resumed {
                live.push(i);
            } else {
                offline.push(external::plan(ctx, d, step, policy)?);
            }
        }
        if !offline.is_empty() {
            // The live images are QEMU's (locked): only the files the plans write are
            // checked free, and none of them is in a chain.
            exec::execute(ctx, step.kind(), &[], &offline, progress)?;
        }
        for i in live {
            let (d, c, scan) = (&disks[i], &chains[i], &scans[i]);
            if let Some(intent) = &scan.intent {
                if c.holds(d, &intent.file) {
                    return Err(error(format!(
                        "{}: an offline rebase of {} was interrupted; finish it with the domain shut off",
                        d.describe(),
                        intent.file.display()
                    )));
                }
                Op::RestoreBacking {
                    file: intent.file.clone(),
                    from: intent.from.clone(),
                    intent: d.rebase_intent(),
                }
                .run(ctx, &mut |_| {}, &mut |_, _| {})?;
            }
            let scan = Scan::load(d)?;
            match step {
                Step::DiscardLeaf { snapshot }
                | Step::Consolidate { snapshot }
                | Step::MergeIntoParent {
                    snapshot,
                    parent: None,
                } => self.free_chain(ctx, (i, d), c, &scan, *snapshot, policy, progress)?,
                Step::MergeIntoParent {
                    snapshot,
                    parent: Some(p),
                } => self.merge_chain(ctx, d, c, &scan, *snapshot, *p, progress)?,
                Step::DetachLive => self.detach_chain(ctx, d, c, &scan, progress)?,
                Step::Create { .. } | Step::Revert { .. } | Step::Forget { .. } => {}
            }
        }
        ctx.sync_dirty()
    }

    /// Streams into `file` (held by QEMU) everything above `onto`, which becomes its
    /// backing: a safe rebase of a file QEMU holds.
    fn stream(
        &mut self,
        ctx: Ctx<'_>,
        d: &Disk,
        c: &Chain,
        file: &Path,
        onto: Option<&Path>,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let node = c.node_of(d, file).ok_or_else(|| {
            error(format!(
                "{}: the running VM does not hold {}",
                d.describe(),
                file.display()
            ))
        })?;
        let base = match onto {
            Some(b) => Some(c.node_of(d, b).ok_or_else(|| {
                error(format!(
                    "{}: the running VM does not hold {}",
                    d.describe(),
                    b.display()
                ))
            })?),
            None => None,
        };
        let backing = onto.map(|p| p.to_string_lossy().into_owned());
        let id = self.job_id("stream");
        ctx.mutation(|| format!("stream into {}", file.display()))?;
        self.with("stream a layer into its dependent", |q| {
            q.block_stream(
                &Stream {
                    job_id: &id,
                    node,
                    base_node: base,
                    backing_file: backing.as_deref(),
                    speed: ctx.job_speed(),
                },
                &mut |f| progress.report(f),
                JOB_TIMEOUT,
            )
        })
    }

    /// Frees S's layer, QEMU holding it: each dependent keeps its content (the one in the
    /// chain by stream, the others by offline rebase), then the layer goes. Restart: a
    /// dependent already moved no longer depends on S; no layer → done.
    #[allow(clippy::too_many_arguments)]
    fn free_chain(
        &mut self,
        ctx: Ctx<'_>,
        (i, d): (usize, &Disk),
        c: &Chain,
        scan: &Scan,
        s: Uuid,
        policy: ConsolidatePolicy,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        if read_pivot_record(d)?.is_some_and(|r| r.0 == s)
            && self.commit_active(ctx, (i, d), s, progress)?
        {
            return Ok(());
        }
        let Some(below) = scan.layers.get(&s) else {
            return Ok(());
        };
        let onto = backing_path(d, below);
        let layer = d.layer(&s);
        let deps = scan.dependents(s);
        if deps == [Dep::Live] {
            let commit = match policy {
                ConsolidatePolicy::AlwaysRebase => false,
                ConsolidatePolicy::AlwaysCommit => true,
                // Commit copies the live image's own data, stream the layer's.
                ConsolidatePolicy::Cheapest => ctx.allocated(&d.live)? < ctx.allocated(&layer)?,
            };
            if commit && self.commit_active(ctx, (i, d), s, progress)? {
                return Ok(());
            }
        }
        for dep in scan.dependents(s) {
            let file = dep_path(d, dep);
            if c.holds(d, &file) {
                self.stream(ctx, d, c, &file, onto.as_deref(), progress)?;
            } else {
                self.rebase_offline(ctx, d, &file, Some(&layer), onto.as_deref(), progress)?;
            }
        }
        ctx.remove(&layer)
    }

    /// Frees S's layer, the live image its only dependent, by an active commit: the live
    /// image's data goes down into S's layer, QEMU pivots onto it, and it takes the disk
    /// path. The guest is paused from the pivot to the rename: with no write in between, a
    /// QEMU dying there restarts on the old overlay over S's layer, which shows the same
    /// data. Returns false, having changed nothing, when a stream must do it instead.
    ///
    /// The record (a non-layer file in the snapshot directory, so that the physical tree
    /// does not read as unchanged while S's content is being replaced) says the step is
    /// under way and whether the guest ran. Restart, by what QEMU runs on: the old overlay
    /// on S's layer → commit again (a ready commit left by a dead process was cancelled
    /// without pivoting); S's layer → rename it over the disk path; a name that is gone →
    /// re-home onto the disk path; no layer any more → only the resume is left. Then the
    /// guest is resumed if it ran, and the record dropped. A record that matches none of
    /// these (S's layer there, QEMU not on it nor on its overlay) is stale and dropped.
    fn commit_active(
        &mut self,
        ctx: Ctx<'_>,
        (i, d): (usize, &Disk),
        s: Uuid,
        progress: &mut dyn Progress,
    ) -> Result<bool> {
        let layer = d.layer(&s);
        let record = pivot_record(d);
        let id = format!("{PIVOT_JOB}{}", &node_name('j', &s, i)[NODE_PREFIX.len()..]);
        let mut c = self.chains(std::slice::from_ref(d))?.remove(0);
        let on_overlay = same_path(&c.active_file, &d.live)
            && c.below.first().is_some_and(|(f, _)| same_path(f, &layer));
        let pivoted = same_path(&c.active_file, &layer);
        // Renamed (perhaps re-homed too, only the resume left).
        let renamed = !layer.exists();
        // After the pivot the node is re-homed, and QEMU reopens only nodes with a name of
        // its own (not the `#block…` names of images it opened from a header).
        let unnamed = on_overlay && c.below[0].1.starts_with('#');
        if (!on_overlay && !pivoted && !renamed) || unnamed {
            self.drop_job(&id)?;
            ctx.remove(&record)?;
            return Ok(false);
        }
        if on_overlay {
            let mut wrote = false;
            if read_pivot_record(d)?.map(|r| r.0) != Some(s) {
                let running = self
                    .with("query the run state", |q| q.query_status())?
                    .running;
                let state = if running { "running" } else { "paused" };
                ctx.write_atomic(&record, format!("{s} {state}\n").as_bytes())?;
                ctx.sync_dirty()?;
                wrote = true;
            }
            let base = c.below[0].1.clone();
            let device = c.active.clone();
            let speed = ctx.job_speed();
            let unfinished = self
                .with("query the jobs", |q| q.query_job(&id))?
                .filter(|j| j.status != qmp::JobStatus::Concluded);
            // An unfinished commit of an interrupted attempt is taken over, not restarted.
            if unfinished.is_none() {
                self.drop_job(&id)?;
                ctx.mutation(|| format!("commit {} into {}", d.live.display(), layer.display()))?;
                let started = self.with("commit the live image into its layer", |q| {
                    q.block_commit_start(&Commit {
                        job_id: &id,
                        device: &device,
                        top_node: None,
                        base_node: Some(&base),
                        backing_file: None,
                        speed,
                    })
                });
                if let Err(e) = started {
                    // Refused (another job on the disk…): nothing changed, and the record
                    // must not keep the engine re-running a step that did nothing.
                    if wrote {
                        ctx.remove(&record)?;
                    }
                    return Err(e);
                }
            }
            // Not cancellable: S's layer already takes data; only finishing frees it.
            self.with("commit the live image into its layer", |q| {
                q.wait_job(
                    &id,
                    qmp::Until::ReadyOrConcluded,
                    &mut |f| {
                        progress.report(f);
                        true
                    },
                    JOB_TIMEOUT,
                )
                .map(drop)
            })?;
            ctx.mutation(|| "pause the guest for the pivot".to_string())?;
            self.with("pause the guest for the pivot", |q| q.stop())?;
            ctx.mutation(|| format!("pivot onto {}", layer.display()))?;
            self.with("pivot onto the layer", |q| {
                q.job_complete(&id)?;
                q.wait_job(&id, qmp::Until::Concluded, &mut |_| true, JOB_TIMEOUT)
                    .map(drop)
            })
            .map_err(paused)?;
            c = self
                .chains(std::slice::from_ref(d))
                .map_err(paused)?
                .remove(0);
        }
        if same_path(&c.active_file, &layer) && layer.exists() {
            ctx.rename(&layer, &d.live).map_err(paused)?;
            ctx.sync_dirty().map_err(paused)?;
        }
        if !same_path(&c.active_file, &d.live) {
            let file_node = node_name('p', &s, i);
            self.forget_node(&file_node);
            ctx.mutation(|| format!("re-home node {} onto {}", c.active, d.live.display()))
                .map_err(paused)?;
            // With image locks again when the layer's file node held none (it was re-homed
            // when frozen); without, if its current file node still holds them.
            let discard = d.discard.as_deref();
            self.with("re-home the pivoted image onto the disk path", |q| {
                q.rehome_active(
                    &c.active,
                    &file_node,
                    &d.live,
                    c.backing_node(),
                    true,
                    discard,
                )
                .or_else(|_| {
                    q.rehome_active(
                        &c.active,
                        &file_node,
                        &d.live,
                        c.backing_node(),
                        false,
                        discard,
                    )
                })
            })
            .map_err(paused)?;
        }
        if let Some((_, running)) = read_pivot_record(d)? {
            // Only a guest this step paused: a QEMU started again meanwhile may wait, on
            // purpose, in `prelaunch` or for an incoming migration.
            let stopped = self
                .with("query the run state", |q| q.query_status())?
                .state
                == qmp::RunState::Paused;
            if running && stopped {
                ctx.mutation(|| "resume the guest".to_string())?;
                self.with("resume the guest after the pivot", |q| q.cont())
                    .map_err(paused)?;
            }
            ctx.remove(&record)?;
        }
        Ok(true)
    }

    fn rebase_offline(
        &mut self,
        ctx: Ctx<'_>,
        d: &Disk,
        file: &Path,
        from: Option<&Path>,
        onto: Option<&Path>,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        Op::SafeRebase {
            file: file.to_path_buf(),
            from: from.map(Path::to_path_buf),
            onto: onto.map(Path::to_path_buf),
            intent: d.rebase_intent(),
            measure: None,
        }
        .run(
            ctx,
            &mut |f| {
                progress.report(f);
            },
            &mut |_, _| {},
        )
    }

    /// Merge(S into P), QEMU holding S: see the module documentation.
    #[allow(clippy::too_many_arguments)]
    fn merge_chain(
        &mut self,
        ctx: Ctx<'_>,
        d: &Disk,
        c: &Chain,
        scan: &Scan,
        s: Uuid,
        p: Uuid,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let (fs, fp) = (d.layer(&s), d.layer(&p));
        let intent = commit_intent(d);
        let Some(s_backing) = scan.layers.get(&s).cloned() else {
            return ctx.remove(&intent);
        };
        if !scan.layers.contains_key(&p) {
            return Err(error(format!(
                "{}: snapshot {p} has no layer {}",
                d.describe(),
                fp.display()
            )));
        }
        let committed = read_commit_intent(d)? == Some((s, p)) && !c.holds(d, &fs);
        if !committed {
            if s_backing != Backing::Layer(p) {
                self.stream(ctx, d, c, &fs, Some(&fp), progress)?;
            }
            for dep in scan.dependents(p) {
                let file = dep_path(d, dep);
                if dep != Dep::Layer(s) {
                    self.rebase_offline(ctx, d, &file, Some(&fp), Some(&fs), progress)?;
                }
            }
            ctx.write_atomic(&intent, format!("{s} {p}\n").as_bytes())?;
            ctx.sync_dirty()?;
            // Read again: the stream above may have changed the chain.
            let c = self.chains(std::slice::from_ref(d))?.remove(0);
            let top = c.node_of(d, &fs).map(str::to_owned);
            let base = c.node_of(d, &fp).map(str::to_owned);
            let (Some(top), Some(base)) = (top, base) else {
                return Err(error(format!(
                    "{}: the running VM does not hold both {} and {}",
                    d.describe(),
                    fs.display(),
                    fp.display()
                )));
            };
            let id = self.job_id("commit");
            let backing = fp.to_string_lossy().into_owned();
            ctx.mutation(|| format!("commit {} into {}", fs.display(), fp.display()))?;
            let device = c.active.clone();
            self.with("commit a snapshot into its parent", |q| {
                q.block_commit(
                    &Commit {
                        job_id: &id,
                        device: &device,
                        top_node: Some(&top),
                        base_node: Some(&base),
                        backing_file: Some(&backing),
                        speed: ctx.job_speed(),
                    },
                    // Not cancellable: P already takes data; only finishing frees it.
                    &mut |f| {
                        progress.report(f);
                        true
                    },
                    JOB_TIMEOUT,
                )
            })?;
        }
        // S and P now show the same content: S's other dependents move onto P by name.
        let scan = Scan::load(d)?;
        for dep in scan.dependents(s) {
            let file = dep_path(d, dep);
            ctx.rebase_unsafe(&file, Some(&fp))?;
        }
        ctx.remove(&fs)?;
        ctx.remove(&intent)
    }

    /// Detach: the whole chain streamed into the live file, which keeps only the disk's
    /// original backing (if any).
    fn detach_chain(
        &mut self,
        ctx: Ctx<'_>,
        d: &Disk,
        c: &Chain,
        scan: &Scan,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let Some(live) = scan.live.as_ref() else {
            return Ok(());
        };
        if !matches!(live, Backing::Layer(_)) {
            return Ok(());
        }
        let bottom = backing_path(d, &scan.bottom(live));
        self.stream(ctx, d, c, &d.live.clone(), bottom.as_deref(), progress)
    }
}

/// The merge a disk's commit record names, if any.
fn read_commit_intent(d: &Disk) -> Result<Option<(Uuid, Uuid)>> {
    let path = commit_intent(d);
    let Some(text) = read_text(&path)? else {
        return Ok(None);
    };
    uuid_pair(&path, &text, 0).map(Some)
}

/// An error after the guest was paused for a pivot: it stays paused (resuming it before
/// the rename would let it write where the disk path does not lead) until a re-run.
fn paused(e: Error) -> Error {
    error(format!(
        "{}; the guest stays paused until the step is run again, which finishes it and resumes the guest",
        message(&e)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_paths_are_read_from_json_pseudo_file_names() {
        assert_eq!(image_path("/vm/a.qcow2"), PathBuf::from("/vm/a.qcow2"));
        let json = r#"json:{"backing": {"driver": "qcow2", "file": {"driver": "file", "filename": "/vm/a.qcow2.snapshots/x.qcow2"}}, "driver": "qcow2", "file": {"driver": "file", "filename": "/vm/a.qcow2"}}"#;
        assert_eq!(image_path(json), PathBuf::from("/vm/a.qcow2"));
        assert_eq!(image_path("json:{broken"), PathBuf::from("json:{broken"));
    }

    #[test]
    fn node_names_fit_qemus_limit_and_differ_by_uuid_and_disk() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let name = node_name('y', &a, 999);
        assert!(format!("{name}-file").len() <= 31, "{name}");
        assert_ne!(node_name('y', &a, 0), node_name('y', &b, 0));
        assert_ne!(node_name('y', &a, 0), node_name('y', &a, 1));
        // Time-based uuids share their tail: the name must not.
        let t1 = Uuid::parse_str("6ba7b810-9dad-11d1-80b4-00c04fd430c8").unwrap();
        let t2 = Uuid::parse_str("6ba7b811-9dad-11d1-80b4-00c04fd430c8").unwrap();
        assert_ne!(node_name('y', &t1, 0), node_name('y', &t2, 0));
    }
}
