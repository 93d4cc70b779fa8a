//! Live mode: the domain XML names QEMU's QMP socket (`<qmp socket='PATH'/>` in `<domain>`)
//! and the VM runs or is paused. Internal-mode disks then take snapshots with memory
//! through QMP (`snapshot-save` / `-load` / `-delete` jobs, tagged with the snapshot uuid,
//! the VM state stored on the first disk), and keep the same `<disk>.snaptree.json` record
//! as offline internal mode, so the physical tree reads the same in both modes.
//!
//! When nothing listens on the socket the VM is shut off and the offline backend does the
//! work with `qemu-img`. A QMP error, a failed job or a QEMU that dies mid-job is a
//! `BACKEND` error carrying QMP's message; the session is dropped when QEMU died, and the
//! next call connects again (to a restarted QEMU, or finds the domain shut off).
//!
//! Restart: every step changes the images first and the record after, each guarded by
//! what is already there (a tag present on every disk, a uuid recorded), exactly as in
//! offline internal mode, so a step re-run after a crash finishes the job.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sha2::{Digest, Sha256};
use snaptree_engine::xml::dom::Document;
use snaptree_engine::{ContentRef, Error, PhysicalTree, PowerState, Progress, Result, Step, Uuid};
use snaptree_qmp::{self as qmp, InternalSnapshotSpec, Qmp};

use crate::ctx::{Ctx, error, message};
use crate::disk::{Disk, Mode};
use crate::hooks::{GUEST_WRITE, guest_writes, hex};
use crate::internal::{physical_of, tag};
use crate::meta::Meta;
use crate::ops::MERGE_STASH;

/// How long one snapshot job may take.
const JOB_TIMEOUT: Duration = Duration::from_secs(120);

/// The QMP socket a domain document names, if any: `<domain><qmp socket='PATH'/>`.
pub(crate) fn qmp_socket(xml: &str) -> Result<Option<PathBuf>> {
    let doc = Document::parse(xml)?;
    let mut found = doc.root.children_named("qmp");
    let Some(el) = found.next() else {
        return Ok(None);
    };
    if found.next().is_some() {
        return Err(error("the domain names more than one <qmp> socket"));
    }
    let Some(socket) = el.attribute("socket") else {
        return Err(error("<qmp> has no 'socket' attribute"));
    };
    let path = PathBuf::from(socket);
    if !path.is_absolute() {
        return Err(error(format!(
            "<qmp socket='{socket}'> is not an absolute path"
        )));
    }
    Ok(Some(path))
}

/// Each `<devices><disk>`'s `<driver discard=...>`, in document order (libvirt's
/// `unmap` or `ignore`).
pub(crate) fn discard_modes(xml: &str) -> Result<Vec<Option<String>>> {
    let doc = Document::parse(xml)?;
    let mut out = Vec::new();
    for devices in doc.root.children_named("devices") {
        for disk in devices.children_named("disk") {
            let discard = disk
                .children_named("driver")
                .next()
                .and_then(|d| d.attribute("discard"));
            match discard {
                None => out.push(None),
                Some(v @ ("unmap" | "ignore")) => out.push(Some(v.to_owned())),
                Some(other) => {
                    return Err(error(format!(
                        "disk #{} has <driver discard='{other}'>: expected 'unmap' or 'ignore'",
                        out.len() + 1
                    )));
                }
            }
        }
    }
    Ok(out)
}

/// The record of a live create in progress, beside the first disk: the tag being saved.
/// A create that fails because QEMU died cannot remove the snapshot it may have left; the
/// engine then forgets the create, and the next step finds this record and removes it.
pub(crate) fn create_intent(disks: &[Disk]) -> PathBuf {
    let mut name = disks[0].live.as_os_str().to_os_string();
    name.push(".snaptree-live-create");
    PathBuf::from(name)
}

/// The record of a live merge in progress, beside the first disk: whether the VM ran
/// before the merge stopped it.
pub(crate) fn merge_intent(disks: &[Disk]) -> PathBuf {
    let mut name = disks[0].live.as_os_str().to_os_string();
    name.push(".snaptree-live-merge");
    PathBuf::from(name)
}

/// The text of a record file, `None` when there is none.
pub(crate) fn read_text(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(error(format!("cannot read {}: {e}", path.display()))),
    }
}

/// The two uuids `S P` of a record, after `skip` leading words.
pub(crate) fn uuid_pair(path: &Path, text: &str, skip: usize) -> Result<(Uuid, Uuid)> {
    let words: Vec<&str> = text.split_whitespace().skip(skip).collect();
    match words[..] {
        [s, p] => match (Uuid::parse_str(s), Uuid::parse_str(p)) {
            (Ok(s), Ok(p)) => Ok((s, p)),
            _ => Err(error(format!("{} is not a merge record", path.display()))),
        },
        _ => Err(error(format!("{} is not a merge record", path.display()))),
    }
}

/// The merge a merge intent (`running|paused S P`) names, if there is one.
pub(crate) fn read_merge_intent(path: &Path) -> Result<Option<(Uuid, Uuid)>> {
    let Some(text) = read_text(path)? else {
        return Ok(None);
    };
    uuid_pair(path, &text, 1).map(Some)
}

/// The snapshot a create intent names, if there is one.
pub(crate) fn read_intent(path: &Path) -> Result<Option<Uuid>> {
    let Some(text) = read_text(path)? else {
        return Ok(None);
    };
    Uuid::parse_str(text.trim())
        .map(Some)
        .map_err(|e| error(format!("{} is not a create intent: {e}", path.display())))
}

/// One disk as the running QEMU sees it.
#[derive(Debug, Clone)]
struct Device {
    /// The active node: what the snapshot jobs name.
    node: String,
    /// The device's block backend QOM path, for HMP `qemu-io`.
    qdev: String,
    /// Internal snapshots of the active image.
    snapshots: Vec<qmp::InternalSnapshot>,
    /// Guest-visible size.
    size: u64,
}

impl Device {
    fn has(&self, t: &str) -> bool {
        self.snapshots.iter().any(|s| s.name == t)
    }
}

/// The internal snapshot jobs.
#[derive(Debug, Clone, Copy)]
enum SnapshotJob {
    Save,
    Load,
    Delete,
}

/// The connection to a domain's QEMU.
#[derive(Debug)]
pub(crate) struct Live {
    socket: PathBuf,
    qmp: Option<Qmp>,
    jobs: u64,
}

fn qmp_text(e: &qmp::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

impl Live {
    pub(crate) fn new(socket: PathBuf) -> Live {
        Live {
            socket,
            qmp: None,
            jobs: 0,
        }
    }

    /// The current session, if one is open (no connecting).
    pub(crate) fn qmp_mut(&mut self) -> Option<&mut Qmp> {
        self.qmp.as_mut()
    }

    /// The session, connecting first if needed; `None` when no QEMU listens (shut off).
    fn session(&mut self) -> Result<Option<&mut Qmp>> {
        if self.qmp.is_none() {
            match Qmp::connect(&self.socket) {
                Ok(q) => self.qmp = Some(q),
                Err(qmp::Error::Connect { .. }) => return Ok(None),
                Err(e) => {
                    return Err(error(format!(
                        "QMP socket {}: {}",
                        self.socket.display(),
                        qmp_text(&e)
                    )));
                }
            }
        }
        Ok(self.qmp.as_mut())
    }

    /// Runs `f` on the session; a dead QEMU drops the session, and every error becomes a
    /// `BACKEND` error with QMP's message.
    pub(crate) fn with<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Qmp) -> qmp::Result<T>,
    ) -> Result<T> {
        let socket = self.socket.clone();
        let Some(q) = self.session()? else {
            return Err(error(format!(
                "cannot {what}: no QEMU listens on {}",
                socket.display()
            )));
        };
        match f(q) {
            Ok(v) => Ok(v),
            Err(e) => {
                if e.is_process_died() || matches!(e, qmp::Error::Io { .. }) {
                    self.qmp = None;
                }
                Err(error(format!("cannot {what}: {}", qmp_text(&e))))
            }
        }
    }

    /// The VM's power state: shut off when no QEMU listens (or it just died).
    pub(crate) fn power_state(&mut self) -> Result<PowerState> {
        // A session to a QEMU that died since is retried once on a fresh connection.
        for _ in 0..2 {
            let Some(q) = self.session()? else {
                return Ok(PowerState::Shutoff);
            };
            match q.query_status() {
                Ok(s) => {
                    return Ok(match s.state.power_state() {
                        qmp::PowerState::Running => PowerState::Running,
                        qmp::PowerState::Paused => PowerState::Paused,
                        qmp::PowerState::Shutoff => PowerState::Shutoff,
                    });
                }
                Err(e) if e.is_process_died() || matches!(e, qmp::Error::Io { .. }) => {
                    self.qmp = None;
                }
                Err(e) => return Err(error(format!("query-status: {}", qmp_text(&e)))),
            }
        }
        Ok(PowerState::Shutoff)
    }

    /// Every disk's device in the running QEMU, found by its image file.
    fn devices(&mut self, disks: &[Disk]) -> Result<Vec<Device>> {
        let block = self.with("query the block devices", |q| q.query_block())?;
        disks
            .iter()
            .map(|d| {
                let want = canonical(&d.live);
                block
                    .iter()
                    .find_map(|b| {
                        let i = b.inserted.as_ref()?;
                        (canonical(Path::new(&i.image.filename)) == want).then(|| Device {
                            node: i.node_name.clone(),
                            qdev: b.qdev.clone().unwrap_or_else(|| b.device.clone()),
                            snapshots: i.image.snapshots.clone(),
                            size: i.image.virtual_size,
                        })
                    })
                    .ok_or_else(|| {
                        error(format!(
                            "{} is not the active image of any device of the running VM",
                            d.describe()
                        ))
                    })
            })
            .collect()
    }

    pub(crate) fn job_id(&mut self, kind: &str) -> String {
        self.jobs += 1;
        format!("snaptree-{kind}-{}-{}", std::process::id(), self.jobs)
    }

    /// Runs one snapshot job for tag `t` on `nodes`, the VM state on the first.
    fn snapshot_job(
        &mut self,
        job: SnapshotJob,
        t: &str,
        nodes: &[&str],
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let (kind, what) = match job {
            SnapshotJob::Save => ("save", "save a live snapshot"),
            SnapshotJob::Load => ("load", "load a live snapshot"),
            SnapshotJob::Delete => ("delete", "delete a live snapshot"),
        };
        let id = self.job_id(kind);
        let spec = InternalSnapshotSpec {
            job_id: &id,
            tag: t,
            vmstate: nodes[0],
            devices: nodes,
        };
        self.with(what, |q| {
            let progress = &mut |f| progress.report(f);
            match job {
                SnapshotJob::Save => q.snapshot_save(&spec, progress, JOB_TIMEOUT),
                SnapshotJob::Load => q.snapshot_load(&spec, progress, JOB_TIMEOUT),
                SnapshotJob::Delete => q.snapshot_delete(&spec, progress, JOB_TIMEOUT),
            }
        })
    }

    /// `snapshot-save` of `t` on every disk, the VM state on the first.
    fn save(&mut self, t: &str, devs: &[Device], progress: &mut dyn Progress) -> Result<()> {
        let nodes: Vec<&str> = devs.iter().map(|d| d.node.as_str()).collect();
        self.snapshot_job(SnapshotJob::Save, t, &nodes, progress)
    }

    /// `snapshot-delete` of `t` on every disk that has it.
    fn delete(&mut self, t: &str, devs: &[Device], progress: &mut dyn Progress) -> Result<()> {
        let nodes: Vec<&str> = devs
            .iter()
            .filter(|d| d.has(t))
            .map(|d| d.node.as_str())
            .collect();
        if nodes.is_empty() {
            return Ok(());
        }
        self.snapshot_job(SnapshotJob::Delete, t, &nodes, progress)
    }

    /// Runs one step while the VM runs or is paused, on a domain whose disks are all in
    /// internal mode (all-external domains go to `live_chain`; the capabilities keep a
    /// mixed domain shut off).
    pub(crate) fn execute(
        &mut self,
        ctx: Ctx<'_>,
        disks: &[Disk],
        step: &Step,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        if let Some(d) = disks.iter().find(|d| d.mode != Mode::Internal) {
            return Err(Error::OperationInvalid(format!(
                "the qemu backend snapshots {} only while the domain is shut off: a running domain's disks must all be internal (snapshots with memory) or all external (disk-only)",
                d.describe()
            )));
        }
        let write = |f: &dyn Fn(&Meta) -> Meta| -> Result<()> {
            for d in disks {
                let path = d.meta();
                let meta = Meta::load(&path)?;
                let next = f(&meta);
                if next != meta {
                    next.store(ctx, &path)?;
                }
            }
            Ok(())
        };
        match step {
            Step::Forget { .. } => Ok(()),
            Step::DetachLive => write(&|m| m.with_live(None)),
            // Restart: saved only if some disk lacks the tag (a partial one is removed
            // first: snapshot-save refuses an existing tag), recorded only if unrecorded.
            // A failure before the record undoes the save, so the step changes nothing.
            Step::Create { snapshot, .. } => {
                let t = tag(snapshot);
                let devs = self.devices(disks)?;
                let fresh = !devs.iter().all(|d| d.has(&t));
                let intent = create_intent(disks);
                if fresh {
                    // Written first: if QEMU dies mid-save, the engine forgets the create and
                    // the next step removes what the save left (see `QemuBackend::settle`).
                    ctx.write_atomic(&intent, t.as_bytes())?;
                    ctx.sync_dirty()?;
                    self.delete(&t, &devs, &mut snaptree_engine::NoProgress)?;
                    if let Err(e) = self.save(&t, &devs, progress) {
                        return Err(self.undo_save(ctx, &t, disks, e));
                    }
                }
                if let Err(e) = write(&|m| m.created(*snapshot)) {
                    return Err(if fresh {
                        self.undo_save(ctx, &t, disks, e)
                    } else {
                        e
                    });
                }
                ctx.remove(&intent)
            }
            Step::Revert { snapshot, state } => {
                if *state == PowerState::Shutoff {
                    return Err(Error::OperationInvalid(format!(
                        "the qemu backend cannot shut the guest off: while the VM runs or is paused it reverts to snapshot {snapshot} only running or paused (revert with the RUNNING or PAUSED flag, or shut the domain down first)"
                    )));
                }
                let t = tag(snapshot);
                let devs = self.devices(disks)?;
                if let Some((d, _)) = disks.iter().zip(&devs).find(|(_, dev)| !dev.has(&t)) {
                    return Err(error(format!(
                        "{}: no internal snapshot tagged {snapshot}",
                        d.describe()
                    )));
                }
                let memory = devs[0]
                    .snapshots
                    .iter()
                    .any(|s| s.name == t && s.vm_state_size > 0);
                if !memory {
                    return Err(Error::OperationInvalid(format!(
                        "snapshot {snapshot} holds no memory state (it was taken while the domain was shut off): the qemu backend can revert to it only with the domain shut off"
                    )));
                }
                self.load(&t, &devs, progress)?;
                let want = *state;
                self.with("set the power state after the revert", |q| {
                    let running = q.query_status()?.running;
                    match want {
                        PowerState::Running if !running => q.cont(),
                        PowerState::Paused if running => q.stop(),
                        _ => Ok(()),
                    }
                })?;
                write(&|m| m.with_live(Some(*snapshot)))
            }
            // Internal snapshots are independent of each other: freeing one, with its
            // dependents given to its parent, is a plain delete.
            Step::DiscardLeaf { snapshot }
            | Step::Consolidate { snapshot }
            | Step::MergeIntoParent {
                snapshot,
                parent: None,
            } => {
                let devs = self.devices(disks)?;
                self.delete(&tag(snapshot), &devs, progress)?;
                write(&|m| {
                    let heir = m.parents.get(snapshot).copied().flatten();
                    m.removed(*snapshot, heir)
                })
            }
            Step::MergeIntoParent {
                snapshot,
                parent: Some(p),
            } => {
                self.merge(ctx, disks, *snapshot, *p, progress)?;
                write(&|m| m.removed(*snapshot, Some(*p)))
            }
        }
    }

    /// Live internal merge: snapshot `p` takes `s`'s disks and memory, `s` is deleted, and
    /// the live state (disks, memory, run state) is what it was.
    ///
    /// As offline (`ops::merge_internal`), the live state is borrowed, with the VM stopped
    /// throughout so the guest cannot change the borrowed state: (0) record whether the VM
    /// ran in the merge intent and stop it, (1) save the live state as [`MERGE_STASH`],
    /// (2) load `s`, (3) delete `p`, (4) save `p`, (5) load the stash, (6) delete `s`,
    /// (7) delete the stash, (8) resume the VM if it ran and remove the intent.
    ///
    /// Restart: as offline — no `s` means (1)-(6) are done (the stash may be left to
    /// delete); an existing stash holds the true live state and is never saved again;
    /// otherwise the live state is the true one and the sequence starts over. The intent
    /// keeps the run state across a restart.
    fn merge(
        &mut self,
        ctx: Ctx<'_>,
        disks: &[Disk],
        s: Uuid,
        p: Uuid,
        progress: &mut dyn Progress,
    ) -> Result<()> {
        let (st, pt) = (tag(&s), tag(&p));
        let intent = merge_intent(disks);
        let devs = self.devices(disks)?;
        if devs.iter().any(|d| d.has(&st)) {
            if !intent.exists() {
                let running = self
                    .with("query the run state", |q| q.query_status())?
                    .running;
                let state = if running { "running" } else { "paused" };
                ctx.write_atomic(&intent, format!("{state} {s} {p}\n").as_bytes())?;
                ctx.sync_dirty()?;
            }
            self.with("stop the VM for a merge", |q| q.stop())?;
            if !devs.iter().all(|d| d.has(MERGE_STASH)) {
                self.delete(MERGE_STASH, &devs, &mut snaptree_engine::NoProgress)?;
                self.save(MERGE_STASH, &devs, &mut |f: f64| progress.report(f / 7.0))?;
            }
            self.load(&st, &devs, &mut |f: f64| progress.report((1.0 + f) / 7.0))?;
            self.delete(&pt, &devs, &mut |f: f64| progress.report((2.0 + f) / 7.0))?;
            self.save(&pt, &devs, &mut |f: f64| progress.report((3.0 + f) / 7.0))?;
            let devs = self.devices(disks)?;
            self.load(MERGE_STASH, &devs, &mut |f: f64| {
                progress.report((4.0 + f) / 7.0)
            })?;
            self.delete(&st, &devs, &mut |f: f64| progress.report((5.0 + f) / 7.0))?;
        }
        // Last, so that some tag shows the step under way until it is finished (see
        // `ops::merge_internal`).
        let devs = self.devices(disks)?;
        self.delete(MERGE_STASH, &devs, &mut |f: f64| {
            progress.report((6.0 + f) / 7.0)
        })?;
        if let Some(text) = read_text(&intent)? {
            if text.split_whitespace().next() == Some("running") {
                self.with("resume the VM after a merge", |q| q.cont())?;
            }
            ctx.remove(&intent)?;
        }
        Ok(())
    }

    /// `snapshot-load` of `t` on every disk, the VM state from the first.
    fn load(&mut self, t: &str, devs: &[Device], progress: &mut dyn Progress) -> Result<()> {
        let nodes: Vec<&str> = devs.iter().map(|d| d.node.as_str()).collect();
        self.snapshot_job(SnapshotJob::Load, t, &nodes, progress)
    }

    /// Removes a tag a failed create may have left, so that the step changed nothing. When
    /// that fails too (QEMU died), the create intent stays for `QemuBackend::settle`.
    fn undo_save(&mut self, ctx: Ctx<'_>, t: &str, disks: &[Disk], cause: Error) -> Error {
        let undone = self
            .devices(disks)
            .and_then(|devs| self.delete(t, &devs, &mut snaptree_engine::NoProgress))
            .and_then(|()| ctx.remove(&create_intent(disks)));
        match undone {
            Ok(()) => error(format!("{}; nothing was changed", message(&cause))),
            Err(e) => error(format!(
                "{}; removing the partial snapshot {t} also failed ({}): the next step removes it",
                message(&cause),
                message(&e)
            )),
        }
    }

    /// Deletes the tag `t` from every disk that has it (no progress).
    pub(crate) fn delete_tag(&mut self, disks: &[Disk], t: &str) -> Result<()> {
        let devs = self.devices(disks)?;
        self.delete(t, &devs, &mut snaptree_engine::NoProgress)
    }

    /// The tree the disks hold, with the tags read from QEMU.
    /// `None` for an external-mode disk, whose tree its files' headers tell.
    pub(crate) fn physical(&mut self, disks: &[Disk]) -> Result<Vec<Option<PhysicalTree>>> {
        let devs = self.devices(disks)?;
        disks
            .iter()
            .zip(&devs)
            .map(|(d, dev)| {
                if d.mode != Mode::Internal {
                    return Ok(None);
                }
                let tags: Vec<String> = dev.snapshots.iter().map(|s| s.name.clone()).collect();
                physical_of(d, &tags).map(Some)
            })
            .collect()
    }

    /// Test hook: a digest of every disk's content, read from outside QEMU after a flush
    /// (`qemu-img convert -U`, of an internal snapshot with `-l snapshot.name=`).
    pub(crate) fn content_digest(&mut self, disks: &[Disk], of: ContentRef) -> Result<String> {
        let devs = self.devices(disks)?;
        let mut hasher = Sha256::new();
        hasher.update(b"snaptree-qemu live content v1\0");
        for (d, dev) in disks.iter().zip(&devs) {
            self.with("flush a disk", |q| q.qemu_io(&dev.qdev, "flush"))?;
            let digest = match (of, d.mode) {
                (ContentRef::Live, _) => export_digest(&d.live, None)?,
                (ContentRef::Snapshot(u), Mode::Internal) => {
                    export_digest(&d.live, Some(&tag(&u)))?
                }
                (ContentRef::Snapshot(u), Mode::External) => export_digest(&d.layer(&u), None)?,
            };
            hasher.update(digest.as_bytes());
            hasher.update(b"\0");
        }
        Ok(hex(&hasher.finalize()))
    }

    /// Test hook: the offline backend's guest writes, as guest I/O through HMP `qemu-io`.
    pub(crate) fn write_guest(&mut self, disks: &[Disk], seed: u64) -> Result<()> {
        let devs = self.devices(disks)?;
        for (i, dev) in devs.iter().enumerate() {
            for (offset, pattern) in guest_writes(seed, i, dev.size) {
                let len = GUEST_WRITE.min(dev.size);
                self.with("write guest data", |q| {
                    q.qemu_io(&dev.qdev, &format!("write -P {pattern} {offset} {len}"))
                })?;
            }
            self.with("flush a disk", |q| q.qemu_io(&dev.qdev, "flush"))?;
        }
        Ok(())
    }
}

fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// SHA-256 of the raw guest view of `image` (or of its internal snapshot `snapshot`), read
/// while a running QEMU holds the image (`-U`).
fn export_digest(image: &Path, snapshot: Option<&str>) -> Result<String> {
    let dir = image.parent().unwrap_or(Path::new("/"));
    let scratch = dir.join(format!(
        ".snaptree-digest-{}-{}.raw",
        std::process::id(),
        image.file_name().unwrap_or_default().to_string_lossy()
    ));
    let mut cmd = Command::new("qemu-img");
    cmd.args(["convert", "-U", "-f", "qcow2", "-O", "raw"]);
    if let Some(s) = snapshot {
        cmd.arg("-l").arg(format!("snapshot.name={s}"));
    }
    cmd.arg(image).arg(&scratch);
    let out = cmd
        .output()
        .map_err(|e| error(format!("cannot run qemu-img convert: {e}")))?;
    if !out.status.success() {
        let _ = std::fs::remove_file(&scratch);
        return Err(error(format!(
            "qemu-img convert of {}{} failed: {}",
            image.display(),
            snapshot
                .map(|s| format!(" snapshot {s}"))
                .unwrap_or_default(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let bytes = std::fs::read(&scratch);
    let _ = std::fs::remove_file(&scratch);
    let bytes = bytes.map_err(|e| error(format!("cannot read {}: {e}", scratch.display())))?;
    Ok(hex(&Sha256::digest(&bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_modes_follow_the_disks_and_refuse_unknown_values() {
        let xml = "<domain type='qemu'><name>vm</name><devices>\
             <disk><driver name='qemu' discard='unmap'/><source file='/a'/></disk>\
             <disk><source file='/b'/></disk>\
             <disk><driver discard='ignore'/><source file='/c'/></disk>\
             </devices></domain>";
        assert_eq!(
            discard_modes(xml).unwrap(),
            vec![Some("unmap".to_owned()), None, Some("ignore".to_owned())]
        );
        let bad = xml.replace("'ignore'", "'trim'");
        let e = discard_modes(&bad).unwrap_err().full_message();
        assert!(e.contains("disk #3") && e.contains("'trim'"), "{e}");
    }
}
