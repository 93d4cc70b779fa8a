//! The block jobs that reshape a live backing chain: `block-commit` (active and
//! intermediate) and `block-stream`, each run to its end.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::client::Qmp;
use crate::error::Result;
use crate::job::{JobStatus, Until};

/// What a `block-commit` merges.
///
/// QEMU's defaults are a trap: without `base_node` the data goes into the **bottom-most**
/// image of the chain, not the one below `top` (field notes). Name both ends unless that is
/// what you mean.
#[derive(Debug, Clone, Copy, Default)]
pub struct Commit<'a> {
    /// The job id (unique among QEMU's current jobs).
    pub job_id: &'a str,
    /// The root (active) node of the chain, or a legacy drive name.
    pub device: &'a str,
    /// The highest node whose data moves down; `None` is the active node (active commit).
    pub top_node: Option<&'a str>,
    /// The node that receives the data; `None` is the bottom-most image.
    pub base_node: Option<&'a str>,
    /// For an intermediate commit, the backing file string written into the overlay of
    /// `top` (QEMU otherwise writes the base node's file name as QEMU knows it). Refused by
    /// QEMU for an active commit.
    pub backing_file: Option<&'a str>,
    /// A rate limit in bytes per second (`None`: as fast as possible).
    pub speed: Option<u64>,
}

/// What a `block-stream` copies.
#[derive(Debug, Clone, Copy, Default)]
pub struct Stream<'a> {
    /// The job id.
    pub job_id: &'a str,
    /// The node that receives the data (the active node, or an intermediate one).
    pub node: &'a str,
    /// The node that stays its backing; `None` flattens the whole chain into `node`.
    pub base_node: Option<&'a str>,
    /// The backing file string written into `node` (QEMU otherwise writes the base node's
    /// file name as QEMU knows it).
    pub backing_file: Option<&'a str>,
    /// A rate limit in bytes per second (`None`: as fast as possible).
    pub speed: Option<u64>,
}

impl Qmp {
    /// Starts `block-commit` (not waiting), manually dismissed.
    pub fn block_commit_start(&mut self, commit: &Commit<'_>) -> Result<()> {
        let mut args = json!({
            "job-id": commit.job_id,
            "device": commit.device,
            "auto-dismiss": false,
            // An I/O error, ENOSPC included, ends the job with an error instead of pausing
            // it ("stop"/"enospc"): nothing of snaptree's is left waiting, and the guest's
            // own devices keep their error policy (SEMANTICS.md §7.7).
            "on-error": "report",
        });
        set_opt(&mut args, "top-node", commit.top_node);
        set_opt(&mut args, "base-node", commit.base_node);
        set_opt(&mut args, "backing-file", commit.backing_file);
        if let Some(speed) = commit.speed {
            args["speed"] = json!(speed);
        }
        self.execute("block-commit", args).map(drop)
    }

    /// Runs `block-commit` to its end. An active commit (top is the active node) becomes
    /// ready once base and top agree; it is then completed with `job-complete`, which
    /// pivots the device onto the base. An intermediate commit just concludes, QEMU then
    /// dropping the committed layers from the chain. `progress` is as in [`Qmp::wait_job`].
    pub fn block_commit(
        &mut self,
        commit: &Commit<'_>,
        progress: &mut dyn FnMut(f64) -> bool,
        timeout: Duration,
    ) -> Result<()> {
        self.block_commit_start(commit)?;
        self.finish_block_job(commit.job_id, progress, timeout)
    }

    /// Starts `block-stream` (not waiting), manually dismissed.
    pub fn block_stream_start(&mut self, stream: &Stream<'_>) -> Result<()> {
        let mut args = json!({
            "job-id": stream.job_id,
            "device": stream.node,
            "auto-dismiss": false,
            // As for block-commit: an I/O error (ENOSPC) ends the job, never pauses it.
            "on-error": "report",
        });
        set_opt(&mut args, "base-node", stream.base_node);
        set_opt(&mut args, "backing-file", stream.backing_file);
        if let Some(speed) = stream.speed {
            args["speed"] = json!(speed);
        }
        self.execute("block-stream", args).map(drop)
    }

    /// Runs `block-stream` to its end: the data of the layers between `node` and the base
    /// is copied into `node`, and those layers leave the chain.
    pub fn block_stream(
        &mut self,
        stream: &Stream<'_>,
        progress: &mut dyn FnMut(f64) -> bool,
        timeout: Duration,
    ) -> Result<()> {
        self.block_stream_start(stream)?;
        self.finish_block_job(stream.job_id, progress, timeout)
    }

    /// Waits for a block job; completes it when it becomes ready (mirror-like jobs), then
    /// waits for its conclusion. One timeout covers the whole job.
    fn finish_block_job(
        &mut self,
        id: &str,
        progress: &mut dyn FnMut(f64) -> bool,
        timeout: Duration,
    ) -> Result<()> {
        let started = Instant::now();
        // The two waits each report from scratch: keep the caller's fractions monotonic.
        let mut best = 0.0_f64;
        let mut monotonic = |f: f64| {
            if f < best {
                return true;
            }
            best = f;
            progress(f)
        };
        let info = self.wait_job(id, Until::ReadyOrConcluded, &mut monotonic, timeout)?;
        if info.status == JobStatus::Ready {
            self.job_complete(id)?;
            let left = timeout.saturating_sub(started.elapsed());
            self.wait_job(id, Until::Concluded, &mut monotonic, left)?;
        }
        Ok(())
    }
}

fn set_opt(args: &mut Value, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        args[key] = json!(v);
    }
}
