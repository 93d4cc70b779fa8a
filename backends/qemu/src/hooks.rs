//! The conformance kit's test hooks on real images, built only with the `test-hooks`
//! feature (the tests turn it on; the shipped plugin has no hooks): content digests through
//! `qemu-img convert`, guest writes through `qemu-io`; in live mode, guest writes through
//! HMP `qemu-io` inside the running QEMU, and digests read with `-U` after a flush.

use std::path::Path;
use std::process::Command;

use sha2::{Digest, Sha256};
use snaptree_engine::{ContentRef, TestHooks};
use snaptree_qemu_img as qi;

use crate::backend::QemuBackend;
use crate::disk::{Disk, Mode};
use crate::error::{Result, error};
use crate::guest::{GUEST_WRITE, guest_writes, hex};
use crate::live::internal::devices;
use crate::live::session::Session;
use crate::offline::header;

impl TestHooks for QemuBackend {
    /// A digest of every disk's content in order; equal contents give equal digests
    /// however they are layered.
    fn content_digest(&mut self, of: ContentRef) -> snaptree_engine::Result<String> {
        Ok(self.digest(of)?)
    }

    /// Writes 2 to 4 chunks of 64 KiB, at offsets and with non-zero pattern bytes derived
    /// from the seed and the disk's position, into the first 4 MiB of every disk's live
    /// state with qemu-io.
    fn write_guest(&mut self, seed: u64) -> snaptree_engine::Result<()> {
        Ok(self.write(seed)?)
    }
}

impl QemuBackend {
    fn digest(&mut self, of: ContentRef) -> Result<String> {
        let disks = self.disks().to_vec();
        if let Some(session) = self.live_now()? {
            return live_digest(session, &disks, of);
        }
        let ctx = self.ctx();
        let mut hasher = Sha256::new();
        hasher.update(b"snaptree-qemu domain content v1\0");
        for d in self.disks() {
            let digest = match (of, d.mode) {
                (ContentRef::Live, _) => {
                    ctx.qemu(|| qi::content_digest(&d.live, None, &mut |_| {}))?
                }
                (ContentRef::Snapshot(u), Mode::External) => {
                    let layer = d.layer(&u);
                    if !layer.exists() {
                        return Err(error(format!(
                            "{}: snapshot {u} has no layer {}",
                            d.describe(),
                            layer.display()
                        )));
                    }
                    ctx.qemu(|| qi::content_digest(&layer, None, &mut |_| {}))?
                }
                (ContentRef::Snapshot(u), Mode::Internal) => {
                    // The tag it was adopted with, else its uuid (as the live path reads).
                    ctx.qemu(|| qi::content_digest(&d.live, Some(&d.tag(&u)), &mut |_| {}))?
                }
            };
            hasher.update(digest.as_bytes());
            hasher.update(b"\0");
        }
        Ok(hex(&hasher.finalize()))
    }

    fn write(&mut self, seed: u64) -> Result<()> {
        let disks = self.disks().to_vec();
        if let Some(session) = self.live_now()? {
            return live_write(session, &disks, seed);
        }
        let ctx = self.ctx();
        for (i, d) in self.disks().iter().enumerate() {
            let size = header::read(&d.live)?.size;
            for (offset, pattern) in guest_writes(seed, i, size) {
                ctx.qemu(|| qi::io_write_pattern(&d.live, pattern, offset, GUEST_WRITE.min(size)))?;
            }
        }
        Ok(())
    }
}

/// A digest of every disk's content, read from outside QEMU after a flush
/// (`qemu-img convert -U`, of an internal snapshot with `-l snapshot.name=`).
fn live_digest(session: &mut Session, disks: &[Disk], of: ContentRef) -> Result<String> {
    let devs = devices(session, disks)?;
    let mut hasher = Sha256::new();
    hasher.update(b"snaptree-qemu live content v1\0");
    for (d, dev) in disks.iter().zip(&devs) {
        session.with("flush a disk", |q| q.qemu_io(&dev.qdev, "flush"))?;
        let digest = match (of, d.mode) {
            (ContentRef::Live, _) => export_digest(&d.live, None)?,
            (ContentRef::Snapshot(u), Mode::Internal) => export_digest(&d.live, Some(&d.tag(&u)))?,
            (ContentRef::Snapshot(u), Mode::External) => export_digest(&d.layer(&u), None)?,
        };
        hasher.update(digest.as_bytes());
        hasher.update(b"\0");
    }
    Ok(hex(&hasher.finalize()))
}

/// The offline guest writes, as guest I/O through HMP `qemu-io`.
fn live_write(session: &mut Session, disks: &[Disk], seed: u64) -> Result<()> {
    let devs = devices(session, disks)?;
    for (i, dev) in devs.iter().enumerate() {
        for (offset, pattern) in guest_writes(seed, i, dev.size) {
            let len = GUEST_WRITE.min(dev.size);
            session.with("write guest data", |q| {
                q.qemu_io(&dev.qdev, &format!("write -P {pattern} {offset} {len}"))
            })?;
        }
        session.with("flush a disk", |q| q.qemu_io(&dev.qdev, "flush"))?;
    }
    Ok(())
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
