//! The one door through which the backend touches the disk: every qemu-img call and every
//! file-system change goes through [`Ctx`], which times the subprocesses, turns failures into
//! errors carrying qemu's own message, makes directory changes durable, and can simulate a
//! crash before any change (for the restart tests).

use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use snaptree_qemu_img as qi;

use crate::error::{QemuError, Result};
use crate::handle::Shared;

fn io_error(what: String, source: std::io::Error) -> QemuError {
    QemuError::Io { what, source }
}

/// Access to the disk for one backend.
#[derive(Clone, Copy)]
pub(crate) struct Ctx<'a> {
    pub(crate) shared: &'a Shared,
}

impl Ctx<'_> {
    /// Runs one qemu-img / qemu-io call, timing it.
    pub(crate) fn qemu<T>(&self, f: impl FnOnce() -> qi::Result<T>) -> Result<T> {
        let started = Instant::now();
        let result = f();
        let elapsed = started.elapsed();
        let mut stats = self.shared.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.qemu_time += elapsed;
        stats.qemu_calls += 1;
        drop(stats);
        result.map_err(QemuError::from)
    }

    /// The rate limit of live block jobs (see `QemuHandle::set_block_job_speed`).
    pub(crate) fn job_speed(&self) -> Option<u64> {
        *self
            .shared
            .job_speed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Whether consolidate measures the bytes it moves (see
    /// `QemuHandle::set_measure_moved_bytes`).
    pub(crate) fn measuring_moved(&self) -> bool {
        self.shared.measure_moved.load(Ordering::Relaxed)
    }

    /// Called before every change to the disk: fails like a crash would when the restart
    /// tests armed a crash at this change.
    pub(crate) fn mutation(&self, what: impl FnOnce() -> String) -> Result<()> {
        let mut left = self
            .shared
            .crash_in
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match *left {
            Some(0) => {
                *left = None;
                self.shared.crashes.fetch_add(1, Ordering::SeqCst);
                Err(QemuError::SimulatedCrash { before: what() })
            }
            Some(n) => {
                *left = Some(n - 1);
                Ok(())
            }
            None => Ok(()),
        }
    }

    // ---- file system ----

    /// Remembers that the directory holding `of` has an entry change to make durable.
    fn dirty(&self, of: &Path) {
        let dir = of.parent().unwrap_or(Path::new("/")).to_path_buf();
        self.shared
            .dirty
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir);
    }

    /// Makes the directory entry changes so far durable (one fsync per directory).
    ///
    /// Every intermediate state of a step is one a re-run recovers from, so entry changes
    /// need not be durable one by one; they must be before the engine records the step as
    /// done (the end of the step), and before qemu-img changes an existing image, whose own
    /// writes could otherwise become durable first (an intent record must be durable
    /// before the rebase it describes).
    pub(crate) fn sync_dirty(&self) -> Result<()> {
        let dirs =
            std::mem::take(&mut *self.shared.dirty.lock().unwrap_or_else(|p| p.into_inner()));
        let started = Instant::now();
        let result = dirs.iter().try_for_each(|dir| match File::open(dir) {
            Ok(d) => d
                .sync_all()
                .map_err(|e| io_error(format!("cannot sync directory {}", dir.display()), e)),
            // Removed since (an emptied snapshot directory): its parent, marked when it was
            // removed, records that.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(
                format!("cannot sync directory {}", dir.display()),
                e,
            )),
        });
        self.add_fs_time(started);
        result
    }

    fn add_fs_time(&self, started: Instant) {
        let mut stats = self.shared.stats.lock().unwrap_or_else(|p| p.into_inner());
        stats.fs_time += started.elapsed();
    }

    /// Runs one file-system call, timing it.
    fn fs<T>(&self, f: impl FnOnce() -> std::io::Result<T>) -> std::io::Result<T> {
        let started = Instant::now();
        let result = f();
        self.add_fs_time(started);
        result
    }

    /// Creates a directory (and its parents) if missing.
    pub(crate) fn create_dir(&self, dir: &Path) -> Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        self.mutation(|| format!("mkdir {}", dir.display()))?;
        self.fs(|| fs::create_dir_all(dir))
            .map_err(|e| io_error(format!("cannot create directory {}", dir.display()), e))?;
        self.dirty(dir);
        Ok(())
    }

    /// Removes a directory if it exists and is empty.
    pub(crate) fn remove_dir_if_empty(&self, dir: &Path) -> Result<()> {
        let empty = match fs::read_dir(dir) {
            Ok(mut entries) => entries.next().is_none(),
            Err(_) => false,
        };
        if !empty {
            return Ok(());
        }
        self.mutation(|| format!("rmdir {}", dir.display()))?;
        self.fs(|| fs::remove_dir(dir))
            .map_err(|e| io_error(format!("cannot remove directory {}", dir.display()), e))?;
        self.dirty(dir);
        Ok(())
    }

    /// Atomically gives `from`'s file the name `to`, replacing what `to` named.
    pub(crate) fn rename(&self, from: &Path, to: &Path) -> Result<()> {
        self.mutation(|| format!("rename {} to {}", from.display(), to.display()))?;
        self.fs(|| fs::rename(from, to)).map_err(|e| {
            io_error(
                format!("cannot rename {} to {}", from.display(), to.display()),
                e,
            )
        })?;
        self.dirty(to);
        self.dirty(from);
        Ok(())
    }

    /// Gives the file `existing` a second name `new`.
    pub(crate) fn link(&self, existing: &Path, new: &Path) -> Result<()> {
        self.mutation(|| format!("link {} as {}", existing.display(), new.display()))?;
        self.fs(|| fs::hard_link(existing, new)).map_err(|e| {
            io_error(
                format!("cannot link {} as {}", existing.display(), new.display()),
                e,
            )
        })?;
        self.dirty(new);
        Ok(())
    }

    /// Removes a file if it exists.
    pub(crate) fn remove(&self, file: &Path) -> Result<()> {
        if file.symlink_metadata().is_err() {
            return Ok(());
        }
        self.mutation(|| format!("remove {}", file.display()))?;
        self.fs(|| fs::remove_file(file))
            .map_err(|e| io_error(format!("cannot remove {}", file.display()), e))?;
        self.dirty(file);
        Ok(())
    }

    /// Removes a layer no snapshot and no live state reaches any more, as [`Ctx::remove`]
    /// does, but leaves giving its blocks back to the reaper's thread ([`crate::reaper`]):
    /// the name goes now, the space a moment later.
    pub(crate) fn free_layer(&self, file: &Path) -> Result<()> {
        if !file.symlink_metadata().is_ok_and(|m| m.is_file()) {
            return self.remove(file);
        }
        self.mutation(|| format!("remove {}", file.display()))?;
        let started = Instant::now();
        // Without a descriptor (unreadable), or where an open file's name cannot simply go
        // (network and FUSE file systems hide it under another name until the last
        // close), the unlink frees the blocks itself.
        let held = File::open(file).ok().filter(qi::unlinks_open_files);
        let removed = fs::remove_file(file);
        let deferred = match (removed.is_ok(), held) {
            (true, Some(held)) => self.shared.reaper.take(held),
            _ => false,
        };
        self.add_fs_time(started);
        removed.map_err(|e| io_error(format!("cannot remove {}", file.display()), e))?;
        if deferred {
            let mut stats = self.shared.stats.lock().unwrap_or_else(|p| p.into_inner());
            stats.deferred_frees += 1;
        }
        self.dirty(file);
        Ok(())
    }

    /// Waits until the blocks of every layer [`Ctx::free_layer`] removed are free, so that
    /// what the file systems report as free is what the steps so far left.
    pub(crate) fn settle_frees(&self) {
        let started = Instant::now();
        self.shared.reaper.settle();
        self.add_fs_time(started);
    }

    /// Gives `to` the permission bits and owner of `from`, so a file that takes another's
    /// place (a new live overlay) is as accessible to the VM as the one it replaces. The
    /// owner is copied when allowed (as root); otherwise the file stays ours, as the files
    /// we could modify already are.
    pub(crate) fn copy_permissions(&self, from: &Path, to: &Path) -> Result<()> {
        let meta = fs::metadata(from).map_err(|e| {
            io_error(
                format!("cannot read the permissions of {}", from.display()),
                e,
            )
        })?;
        fs::set_permissions(to, meta.permissions())
            .map_err(|e| io_error(format!("cannot set the permissions of {}", to.display()), e))?;
        match std::os::unix::fs::chown(to, Some(meta.uid()), Some(meta.gid())) {
            Err(e) if e.kind() != std::io::ErrorKind::PermissionDenied => Err(io_error(
                format!("cannot set the owner of {}", to.display()),
                e,
            )),
            _ => Ok(()),
        }
    }

    /// Replaces `path` with `bytes` atomically: write a temporary file, flush it, rename.
    pub(crate) fn write_atomic(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        let mut tmp = path.as_os_str().to_os_string();
        tmp.push(".tmp");
        let tmp = Path::new(&tmp);
        self.mutation(|| format!("write {}", tmp.display()))?;
        let started = Instant::now();
        // The content must be durable before the name points at it.
        let written = File::create(tmp).and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        });
        self.add_fs_time(started);
        written.map_err(|e| io_error(format!("cannot write {}", tmp.display()), e))?;
        self.rename(tmp, path)
    }

    /// Creates `path` as an empty file (or empties it): a record whose presence is its whole
    /// content. Nothing to flush — a crash can leave it only empty or absent — so only
    /// the directory entry needs making durable ([`Ctx::sync_dirty`]), one fsync fewer than
    /// [`Ctx::write_atomic`].
    pub(crate) fn create_marker(&self, path: &Path) -> Result<()> {
        self.mutation(|| format!("create {}", path.display()))?;
        self.fs(|| File::create(path).map(drop))
            .map_err(|e| io_error(format!("cannot create {}", path.display()), e))?;
        self.dirty(path);
        Ok(())
    }

    /// Builds a new empty overlay `fresh` on `backing` with `live`'s permissions, runs
    /// `before_rename`, and renames the overlay over `live`: the live name never disappears,
    /// and a crash leaves either the old live file or the new overlay there. With `size`,
    /// the backing is not opened (a running QEMU holds it).
    pub(crate) fn install_overlay(
        &self,
        live: &Path,
        fresh: &Path,
        backing: &Path,
        size: Option<u64>,
        before_rename: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        match size {
            None => self.create_overlay(fresh, backing)?,
            Some(size) => self.create_overlay_unopened(fresh, backing, size)?,
        }
        self.copy_permissions(live, fresh)?;
        before_rename()?;
        // The rename is what a crash may keep, so everything the renamed file depends on
        // must be durable first: the overlay's own content (qemu-img does not flush it, and
        // only some file systems flush on a replacing rename), and the new names its backing
        // chain reaches through (the live file's link into the snapshot directory, made just
        // before). POSIX orders none of this across directories.
        self.sync_file(fresh)?;
        self.sync_dirty()?;
        self.rename(fresh, live)
    }

    /// Flushes one file's content and metadata to disk.
    fn sync_file(&self, file: &Path) -> Result<()> {
        self.fs(|| File::open(file).and_then(|f| f.sync_all()))
            .map_err(|e| io_error(format!("cannot flush {}", file.display()), e))
    }

    // ---- qemu-img changes ----

    /// What `qemu-img create -b BACKING -F qcow2 PATH` writes, written in process (qemu-img
    /// only for what that cannot write): the engine's own file-system time, not qemu's.
    fn create_overlay(&self, path: &Path, backing: &Path) -> Result<()> {
        self.mutation(|| format!("create overlay {} on {}", path.display(), backing.display()))?;
        self.in_process(|| qi::create_overlay(path, backing))
    }

    /// The same with the guest-visible size given, the backing not opened (a running QEMU
    /// holds it): `qemu-img create -u -b BACKING -F qcow2 PATH SIZE`.
    fn create_overlay_unopened(&self, path: &Path, backing: &Path, size: u64) -> Result<()> {
        self.mutation(|| format!("create overlay {} on {}", path.display(), backing.display()))?;
        self.in_process(|| qi::create_overlay_unopened(path, backing, size))
    }

    /// Runs one call of the qemu-img crate that does its work in process, timing it as the
    /// engine's own file-system time.
    fn in_process<T>(&self, f: impl FnOnce() -> qi::Result<T>) -> Result<T> {
        let started = Instant::now();
        let result = f();
        self.add_fs_time(started);
        result.map_err(QemuError::from)
    }

    /// `qemu-img rebase` (safe): `file` keeps its content on the new backing.
    pub(crate) fn rebase_safe(
        &self,
        file: &Path,
        onto: Option<&Path>,
        progress: &mut dyn FnMut(f64),
    ) -> Result<()> {
        self.mutation(|| format!("rebase {} onto {}", file.display(), shown(onto)))?;
        self.sync_dirty()?;
        self.qemu(|| qi::rebase_safe(file, onto, progress))
    }

    /// `qemu-img rebase -u`: rewrites the backing name only.
    pub(crate) fn rebase_unsafe(&self, file: &Path, onto: Option<&Path>) -> Result<()> {
        self.mutation(|| format!("rebase -u {} onto {}", file.display(), shown(onto)))?;
        self.sync_dirty()?;
        self.qemu(|| qi::rebase_unsafe(file, onto))
    }

    /// `qemu-img commit TOP`: TOP's data into its backing file, TOP emptied.
    pub(crate) fn commit(&self, top: &Path, progress: &mut dyn FnMut(f64)) -> Result<()> {
        self.mutation(|| format!("commit {}", top.display()))?;
        self.sync_dirty()?;
        self.qemu(|| qi::commit(top, progress))
    }

    /// `qemu-img snapshot -c TAG`.
    pub(crate) fn snapshot_create(&self, image: &Path, tag: &str) -> Result<()> {
        self.mutation(|| format!("snapshot -c {tag} {}", image.display()))?;
        self.sync_dirty()?;
        self.qemu(|| qi::snapshot_create(image, tag))
    }

    /// `qemu-img snapshot -a TAG`.
    pub(crate) fn snapshot_apply(&self, image: &Path, tag: &str) -> Result<()> {
        self.mutation(|| format!("snapshot -a {tag} {}", image.display()))?;
        self.mark_refcount_update(image)?;
        self.sync_dirty()?;
        self.qemu(|| qi::snapshot_apply(image, tag))
    }

    /// `qemu-img snapshot -d TAG`.
    pub(crate) fn snapshot_delete(&self, image: &Path, tag: &str) -> Result<()> {
        self.mutation(|| format!("snapshot -d {tag} {}", image.display()))?;
        self.mark_refcount_update(image)?;
        self.sync_dirty()?;
        self.qemu(|| qi::snapshot_delete(image, tag))
    }

    /// Leaves the refcount-update marker ([`crate::disk::refcount_marker`], the record kind
    /// `RefcountUpdate`)
    /// beside `image` (durable with the caller's next [`Ctx::sync_dirty`]) unless it is
    /// there: the step's end removes it, a re-run after a crash repairs the image first.
    fn mark_refcount_update(&self, image: &Path) -> Result<()> {
        let marker = crate::disk::refcount_marker(image);
        if !marker.exists() {
            self.create_marker(&marker)?;
        }
        Ok(())
    }

    /// Repairs `image` after an interrupted `qemu-img snapshot -a`/`-d`
    /// (`qemu-img check -r all`).
    pub(crate) fn repair_after_interrupted_snapshot_op(&self, image: &Path) -> Result<()> {
        self.mutation(|| format!("check -r all {}", image.display()))?;
        self.qemu(|| qi::repair_after_interrupted_snapshot_op(image))
    }

    // ---- reading ----

    /// The internal snapshot tags of `image`, read in process (`qemu-img info` only for
    /// what that cannot read): the engine's own time, not qemu's.
    pub(crate) fn tags(&self, image: &Path) -> Result<Vec<String>> {
        Ok(qi::snapshot_list(image)?
            .into_iter()
            .map(|s| s.name)
            .collect())
    }

    /// Bytes of data `file` holds itself.
    pub(crate) fn allocated(&self, file: &Path) -> Result<u64> {
        self.qemu(|| qi::allocated_bytes(file))
    }

    /// Fails, naming the file, if another process holds `file` or its backing chain. The
    /// test is made in process, timed as the engine's own time; qemu-io, timed as qemu's,
    /// only for a file that test cannot answer for.
    pub(crate) fn check_writable(&self, file: &Path) -> Result<()> {
        let started = Instant::now();
        let answer = qi::check_writable_in_process(file);
        self.add_fs_time(started);
        match answer {
            Some(answer) => answer.map_err(QemuError::from),
            None => self.qemu(|| qi::check_writable_by_qemu_io(file)),
        }
    }
}

/// A backing file as messages show it.
fn shown(p: Option<&Path>) -> String {
    p.map_or_else(
        || "nothing (standalone)".to_string(),
        |p| p.display().to_string(),
    )
}
