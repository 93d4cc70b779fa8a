//! Internal snapshots with memory: the `snapshot-save`, `snapshot-load` and
//! `snapshot-delete` jobs (QMP's successors of HMP `savevm` / `loadvm` / `delvm`).
//!
//! Measured on QEMU 10.0: the three jobs are manually dismissed; `snapshot-save` refuses a
//! tag that exists on any of the devices ("already exists"), unlike `qemu-img snapshot -c`;
//! the VM is stopped around the save and the load and resumed afterwards only if it was
//! running. A failed load leaves the VM stopped in `restore-vm` (see [`Qmp::snapshot_load`]).

use std::time::Duration;

use serde_json::{Value, json};

use crate::client::Qmp;
use crate::error::Result;
use crate::job::Until;
use crate::status::RunState;

/// Which internal snapshot, and where.
#[derive(Debug, Clone, Copy)]
pub struct InternalSnapshotSpec<'a> {
    /// The job id.
    pub job_id: &'a str,
    /// The snapshot's tag (key it by a unique id: the snapshot uuid).
    pub tag: &'a str,
    /// The node that holds (or receives) the VM state; must be one of `devices`. Ignored by
    /// [`Qmp::snapshot_delete`].
    pub vmstate: &'a str,
    /// Every node the snapshot covers (writable qcow2 nodes: the devices' active nodes).
    pub devices: &'a [&'a str],
}

impl InternalSnapshotSpec<'_> {
    /// The arguments of `snapshot-save` and `snapshot-load`.
    fn with_vmstate(&self) -> Value {
        json!({
            "job-id": self.job_id,
            "tag": self.tag,
            "vmstate": self.vmstate,
            "devices": self.devices,
        })
    }
}

impl Qmp {
    /// Runs one snapshot job (`command` with `args`) to its end.
    fn snapshot_job(
        &mut self,
        command: &str,
        args: Value,
        job_id: &str,
        progress: &mut dyn FnMut(f64) -> bool,
        timeout: Duration,
    ) -> Result<()> {
        self.execute(command, args)?;
        self.wait_job(job_id, Until::Concluded, progress, timeout)
            .map(drop)
    }

    /// `snapshot-save`: saves the disks of `devices` and the VM state (memory, devices)
    /// into `vmstate`, as an internal snapshot tagged `tag`, and waits for the job.
    pub fn snapshot_save(
        &mut self,
        spec: &InternalSnapshotSpec<'_>,
        progress: &mut dyn FnMut(f64) -> bool,
        timeout: Duration,
    ) -> Result<()> {
        self.snapshot_job(
            "snapshot-save",
            spec.with_vmstate(),
            spec.job_id,
            progress,
            timeout,
        )
    }

    /// `snapshot-load`: reverts the disks of `devices` and the VM state to the snapshot
    /// `tag`, and waits for the job. The VM runs afterwards if it ran before.
    ///
    /// QEMU leaves the VM stopped in `restore-vm` when the load fails (a missing tag, a
    /// disk-only snapshot); this function then resumes it if it was running, so that an
    /// error changes nothing. QEMU checks that every device has the tag before it touches
    /// any, so a failure on that ground leaves the disks intact.
    pub fn snapshot_load(
        &mut self,
        spec: &InternalSnapshotSpec<'_>,
        progress: &mut dyn FnMut(f64) -> bool,
        timeout: Duration,
    ) -> Result<()> {
        let was_running = self.query_status()?.running;
        let loaded = self.snapshot_job(
            "snapshot-load",
            spec.with_vmstate(),
            spec.job_id,
            progress,
            timeout,
        );
        // Restoring the run state must not hide the load's own error: only resume when
        // QEMU says it is sitting in restore-vm.
        if let Err(e) = &loaded
            && was_running
            && !e.is_process_died()
            && self
                .query_status()
                .is_ok_and(|s| s.state == RunState::RestoreVm)
        {
            self.cont()?;
        }
        loaded
    }

    /// `snapshot-delete`: removes the snapshot `tag` from every node of `devices` and waits
    /// for the job.
    pub fn snapshot_delete(
        &mut self,
        spec: &InternalSnapshotSpec<'_>,
        progress: &mut dyn FnMut(f64) -> bool,
        timeout: Duration,
    ) -> Result<()> {
        self.snapshot_job(
            "snapshot-delete",
            json!({ "job-id": spec.job_id, "tag": spec.tag, "devices": spec.devices }),
            spec.job_id,
            progress,
            timeout,
        )
    }
}
