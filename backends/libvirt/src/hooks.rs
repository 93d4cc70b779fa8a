//! The conformance kit's test hooks, built only with the `test-hooks` feature (the tests
//! turn it on; the shipped plugin has none): guest writes (qemu-io on the disk files while the
//! domain is shut off, HMP `qemu-io` through libvirt's monitor while it runs) and content
//! digests (through `snaptree-qemu-img`; while QEMU runs the domain and holds its images'
//! write locks, each disk is flushed through HMP `qemu-io ... flush` and the image, or its
//! internal snapshot, is first copied with force-share, `qemu-img convert -U`, so the
//! digest covers the same guest bytes either way).

use snaptree_sdk::{ContentRef, PluginError, PluginResult, PowerState};

use crate::backend::LibvirtBackend;
use crate::config::{self, Mode};

/// Where and what `write_guest(seed)` writes on disk `index`: a 64 KiB block somewhere in
/// the first 64 MiB, filled with a nonzero byte.
pub fn guest_write(seed: u64, index: usize) -> (u8, u64, u64) {
    const BLOCK: u64 = 64 * 1024;
    let pattern = (seed % 251) as u8 + 1;
    let slot = (seed.wrapping_mul(7).wrapping_add(index as u64 * 13)) % 1024;
    (pattern, slot * BLOCK, BLOCK)
}

fn img(e: snaptree_qemu_img::Error) -> PluginError {
    PluginError::backend(e.to_string())
}

impl LibvirtBackend {
    /// Test hook: writes guest data derived from `seed` into every disk's live state.
    pub fn write_guest(&mut self, seed: u64) -> PluginResult<()> {
        let running = self.power_state()? != PowerState::Shutoff;
        for (i, disk) in self.disks()?.iter().enumerate() {
            let (pattern, offset, len) = guest_write(seed, i);
            if running {
                let alias = disk.alias.as_deref().ok_or_else(|| {
                    PluginError::backend(format!("disk {} has no alias while running", disk.target))
                })?;
                // qemu-io prints to QEMU's stdout, not the reply: the reply says nothing.
                let dev = format!("/machine/peripheral/{alias}/virtio-backend");
                self.domain().monitor_command(
                    &format!("qemu-io -d {dev} \"write -P {pattern:#04x} {offset} {len}\""),
                    true,
                )?;
                self.domain()
                    .monitor_command(&format!("qemu-io -d {dev} flush"), true)?;
            } else {
                snaptree_qemu_img::io_write_pattern(&disk.source, pattern, offset, len)
                    .map_err(img)?;
            }
        }
        Ok(())
    }

    /// Test hook: a digest of the live state's or a snapshot's content, every disk.
    pub fn content_digest(&mut self, of: ContentRef) -> PluginResult<String> {
        let running = self.power_state()? != PowerState::Shutoff;
        let disks = self.disks()?;
        if running {
            for d in &disks {
                let alias = d.alias.as_deref().ok_or_else(|| {
                    PluginError::backend(format!("disk {} has no alias while running", d.target))
                })?;
                self.domain().monitor_command(
                    &format!("qemu-io -d /machine/peripheral/{alias}/virtio-backend flush"),
                    true,
                )?;
            }
        }
        let digest = |image: &std::path::Path, tag: Option<&str>| -> PluginResult<String> {
            if running {
                shared_digest(image, tag)
            } else {
                snaptree_qemu_img::content_digest(image, tag, &mut |_| {}).map_err(img)
            }
        };
        let mut parts = Vec::new();
        match of {
            ContentRef::Live => {
                for d in &disks {
                    parts.push(digest(&d.source, None)?);
                }
            }
            ContentRef::Snapshot(u) => {
                let snap = self
                    .domain()
                    .snapshot(&u.to_string())?
                    .ok_or_else(|| PluginError::backend(format!("no snapshot {u}")))?;
                match self.mode() {
                    Mode::Internal => {
                        let tag = u.to_string();
                        for d in &disks {
                            parts.push(digest(&d.source, Some(&tag))?);
                        }
                    }
                    Mode::External => {
                        // Σ(S) is the backing chain of the overlay S was taken with.
                        let def = config::snapshot_def(&snap.xml()?)?;
                        for d in &disks {
                            let overlay = def
                                .sources
                                .iter()
                                .find(|(n, _)| *n == d.target)
                                .and_then(|(_, s)| s.clone())
                                .ok_or_else(|| {
                                    PluginError::backend(format!(
                                        "snapshot {u} has no overlay for disk {}",
                                        d.target
                                    ))
                                })?;
                            let info =
                                snaptree_qemu_img::info_force_share(&overlay).map_err(img)?;
                            let backing = info.full_backing_filename.ok_or_else(|| {
                                PluginError::backend(format!(
                                    "{} has no backing file",
                                    overlay.display()
                                ))
                            })?;
                            parts.push(digest(&backing, None)?);
                        }
                    }
                }
            }
        }
        // One 64-hex digest per disk; more than three would pass the 255-byte limit.
        if parts.len() > 3 {
            return Err(PluginError::operation_invalid(
                "content digests cover at most three disks",
            ));
        }
        Ok(parts.join(":"))
    }
}

/// The digest of an image a running QEMU holds (or of its internal snapshot `tag`): a
/// force-share copy of its content into a scratch qcow2, digested like any image.
fn shared_digest(image: &std::path::Path, tag: Option<&str>) -> PluginResult<String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let scratch = std::env::temp_dir().join(format!(
        "snaptree-libvirt-digest-{}-{}.qcow2",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let mut cmd = std::process::Command::new("qemu-img");
    cmd.args(["convert", "-U", "-f", "qcow2", "-O", "qcow2"]);
    if let Some(tag) = tag {
        cmd.arg("-l")
            .arg(format!("snapshot.name={}", tag.replace(',', ",,")));
    }
    let out = cmd.arg(image).arg(&scratch).output().map_err(|e| {
        PluginError::backend(format!(
            "cannot run qemu-img to copy {}: {e}",
            image.display()
        ))
    })?;
    let result = if out.status.success() {
        snaptree_qemu_img::content_digest(&scratch, None, &mut |_| {}).map_err(img)
    } else {
        Err(PluginError::backend(format!(
            "qemu-img cannot copy {} while QEMU runs it: {}",
            image.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    };
    let _ = std::fs::remove_file(&scratch);
    result
}
