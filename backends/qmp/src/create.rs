//! Creating images from inside QEMU (`blockdev-create`), so a live snapshot's overlay needs
//! no `qemu-img` next to a running VM: QEMU writes the file under its own image locks.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::block::{Backing, qcow2_node};
use crate::client::Qmp;
use crate::error::Result;
use crate::job::Until;

/// A qcow2 overlay to create and open as a node, ready to be the `overlay` of a
/// `blockdev-snapshot` action.
#[derive(Debug, Clone, Copy)]
pub struct NewOverlay<'a> {
    /// The node name to give it (its protocol child is `<node_name>-file`).
    pub node_name: &'a str,
    /// Where the file goes; an existing file is truncated.
    pub path: &'a Path,
    /// The guest-visible size in bytes: the size of the disk it will cover.
    pub size: u64,
    /// The backing file string written into the header (format `qcow2`). It is what a
    /// later `qemu-img` or a restarted QEMU follows, so write the path the layout wants
    /// recorded (absolute, or relative to the overlay's directory).
    pub backing_file: Option<&'a str>,
}

impl Qmp {
    /// Runs one `blockdev-create` job to its end (job id `job_id`, `options` as QMP's
    /// `BlockdevCreateOptions`).
    pub fn blockdev_create(
        &mut self,
        job_id: &str,
        options: Value,
        timeout: Duration,
    ) -> Result<()> {
        self.execute(
            "blockdev-create",
            json!({ "job-id": job_id, "options": options }),
        )?;
        self.wait_job(job_id, Until::Concluded, &mut |_| true, timeout)
            .map(drop)
    }

    /// Creates the file and the qcow2 image of `overlay` and opens it with
    /// `"backing": null`. The node is not attached to anything yet: until a
    /// `blockdev-snapshot` puts it on top of a device's chain, `blockdev-del` removes it.
    /// On failure, nodes opened so far are closed again; the file may remain.
    pub fn create_overlay(&mut self, overlay: &NewOverlay<'_>, timeout: Duration) -> Result<()> {
        let started = Instant::now();
        let left = || timeout.saturating_sub(started.elapsed());
        let name = overlay.node_name;
        let file_node = format!("{name}-file");
        let filename = overlay.path.to_string_lossy();
        self.blockdev_create(
            &format!("{name}-create-file"),
            json!({ "driver": "file", "filename": filename, "size": 0 }),
            left(),
        )?;
        // qcow2 creation needs the file opened as a node; it is closed again below so the
        // final node can own it inline (and be removed with one blockdev-del).
        self.blockdev_add(
            json!({ "driver": "file", "filename": filename, "node-name": file_node }),
        )?;
        let mut options = json!({ "driver": "qcow2", "file": file_node, "size": overlay.size });
        if let Some(backing) = overlay.backing_file {
            options["backing-file"] = json!(backing);
            options["backing-fmt"] = json!("qcow2");
        }
        let formatted = self.blockdev_create(&format!("{name}-create-fmt"), options, left());
        self.blockdev_del(&file_node)?;
        formatted?;
        self.blockdev_add(qcow2_node(name, overlay.path, Backing::None))
    }
}
