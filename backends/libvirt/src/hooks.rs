//! The conformance kit's test hooks: guest writes (qemu-io on the disk files while the
//! domain is shut off, HMP `qemu-io` through libvirt's monitor while it runs) and content
//! digests (through `snaptree-qemu-img`, with the domain shut off: a running QEMU holds
//! its images' write locks).

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
        if self.power_state()? != PowerState::Shutoff {
            return Err(PluginError::operation_invalid(
                "content digests need the domain shut off (QEMU holds its images' locks)",
            ));
        }
        let disks = self.disks()?;
        let mut parts = Vec::new();
        match of {
            ContentRef::Live => {
                for d in &disks {
                    parts.push(
                        snaptree_qemu_img::content_digest(&d.source, None, &mut |_| {})
                            .map_err(img)?,
                    );
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
                            parts.push(
                                snaptree_qemu_img::content_digest(
                                    &d.source,
                                    Some(&tag),
                                    &mut |_| {},
                                )
                                .map_err(img)?,
                            );
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
                            let info = snaptree_qemu_img::info(&overlay).map_err(img)?;
                            let backing = info.full_backing_filename.ok_or_else(|| {
                                PluginError::backend(format!(
                                    "{} has no backing file",
                                    overlay.display()
                                ))
                            })?;
                            parts.push(
                                snaptree_qemu_img::content_digest(&backing, None, &mut |_| {})
                                    .map_err(img)?,
                            );
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
