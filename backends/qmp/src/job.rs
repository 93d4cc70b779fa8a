//! QEMU's generic jobs: `query-jobs`, the verbs that drive a job (`job-complete`,
//! `job-cancel`, `job-dismiss`) and waiting for one with a progress callback.
//!
//! Every job this crate starts is manually dismissed (block jobs with `auto-dismiss: false`;
//! `snapshot-*` and `blockdev-create` jobs always are), so a job that concluded stays in
//! `query-jobs` with its `error` until [`Qmp::wait_job`] has read it. A job that
//! auto-dismissed is only known by its `BLOCK_JOB_*` events, which are the fallback.

use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::Qmp;
use crate::error::{Error, Result};
use crate::message::Event;

/// How often a waiting client asks `query-jobs` for progress. Status changes wake it
/// earlier: it sleeps by reading events.
const POLL: Duration = Duration::from_millis(25);

/// A job's `status` (QEMU's `JobStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum JobStatus {
    /// Not yet a job.
    Undefined,
    /// Created, not started.
    Created,
    /// Working.
    Running,
    /// Paused by `job-pause` or an error policy.
    Paused,
    /// Mirror-like jobs (active commit): source and target are in sync; waits for
    /// `job-complete` (pivot) or `job-cancel`.
    Ready,
    /// Ready, but paused.
    Standby,
    /// Done, waiting for the other jobs of its transaction.
    Waiting,
    /// Waiting for `job-finalize` (only with `auto-finalize: false`).
    Pending,
    /// Failing or being cancelled.
    Aborting,
    /// Finished; the result (`error`) is readable until `job-dismiss`.
    Concluded,
    /// Gone.
    Null,
    /// A status this client does not know (a newer QEMU); waited through like `Running`.
    #[serde(other)]
    Unknown,
}

/// One entry of `query-jobs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct JobInfo {
    /// The job id.
    pub id: String,
    /// The job type, e.g. `commit`, `stream`, `snapshot-save`, `create`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Where the job is.
    pub status: JobStatus,
    /// Work done, in units of `total_progress`.
    pub current_progress: u64,
    /// Work estimated (may grow while the guest writes).
    pub total_progress: u64,
    /// Why the job failed, once it concluded with an error.
    #[serde(default)]
    pub error: Option<String>,
}

impl JobInfo {
    /// Progress as a fraction in `0.0..=1.0` (0 while the total is unknown).
    pub fn fraction(&self) -> f64 {
        if self.total_progress == 0 {
            0.0
        } else {
            (self.current_progress as f64 / self.total_progress as f64).clamp(0.0, 1.0)
        }
    }
}

/// Where [`Qmp::wait_job`] stops waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// The job concluded; it is then dismissed, and an error it had is returned as
    /// [`Error::Job`].
    Concluded,
    /// The job is ready (or concluded, if it never becomes ready: an error or a job type
    /// without a ready phase is handled as for `Concluded`).
    ReadyOrConcluded,
}

impl Qmp {
    /// `query-jobs`: every job QEMU knows.
    pub fn query_jobs(&mut self) -> Result<Vec<JobInfo>> {
        self.execute_as("query-jobs", Value::Null)
    }

    /// The job named `id`, if QEMU still knows it.
    pub fn query_job(&mut self, id: &str) -> Result<Option<JobInfo>> {
        Ok(self.query_jobs()?.into_iter().find(|j| j.id == id))
    }

    /// `job-complete`: tells a ready job to finish (an active commit pivots to its base).
    pub fn job_complete(&mut self, id: &str) -> Result<()> {
        self.execute("job-complete", json!({ "id": id })).map(drop)
    }

    /// `job-cancel`. A ready active commit concludes without pivoting and without error;
    /// other jobs conclude with an error or are reported cancelled.
    pub fn job_cancel(&mut self, id: &str) -> Result<()> {
        self.execute("job-cancel", json!({ "id": id })).map(drop)
    }

    /// `job-dismiss`: forgets a concluded job.
    pub fn job_dismiss(&mut self, id: &str) -> Result<()> {
        self.execute("job-dismiss", json!({ "id": id })).map(drop)
    }

    /// Waits for job `id` to reach `until`, reporting its progress fraction to `progress`
    /// (non-decreasing, ending with 1.0 when the job concluded successfully). When
    /// `progress` returns false the job is cancelled and, once it concluded,
    /// [`Error::Cancelled`] is returned. Gives up with [`Error::Timeout`] after `timeout`,
    /// leaving the job running: the caller decides whether to cancel it.
    pub fn wait_job(
        &mut self,
        id: &str,
        until: Until,
        progress: &mut dyn FnMut(f64) -> bool,
        timeout: Duration,
    ) -> Result<JobInfo> {
        let deadline = Instant::now() + timeout;
        let mut reported = -1.0_f64;
        let mut cancelled = false;
        loop {
            let Some(info) = self.query_job(id)? else {
                return self.vanished(id);
            };
            let fraction = info.fraction();
            if fraction > reported && info.status != JobStatus::Concluded {
                reported = fraction;
                if !progress(fraction) && !cancelled {
                    cancelled = true;
                    self.cancel_quietly(id)?;
                }
            }
            match info.status {
                JobStatus::Concluded => {
                    self.job_dismiss(id)?;
                    return match (&info.error, cancelled) {
                        (_, true) => Err(Error::Cancelled { id: id.to_owned() }),
                        (Some(desc), false) => Err(Error::Job {
                            id: id.to_owned(),
                            kind: info.kind.clone(),
                            desc: desc.clone(),
                        }),
                        (None, false) => {
                            progress(1.0);
                            Ok(info)
                        }
                    };
                }
                JobStatus::Ready if until == Until::ReadyOrConcluded && !cancelled => {
                    return Ok(info);
                }
                _ => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    waiting_for: format!("job {id} ({}) in state {:?}", info.kind, info.status),
                    after: timeout,
                });
            }
            self.sleep_on_events(id, (now + POLL).min(deadline))?;
        }
    }

    /// Cancels a job that may have concluded meanwhile: then QEMU refuses, which is fine.
    fn cancel_quietly(&mut self, id: &str) -> Result<()> {
        match self.job_cancel(id) {
            Ok(()) | Err(Error::Command { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Reads events until `until`, returning early when one concerns job `id`. Every event
    /// is buffered for the caller.
    fn sleep_on_events(&mut self, id: &str, until: Instant) -> Result<()> {
        while let Some(event) = self.pump(until, &format!("job {id}"))? {
            let ours = event.job_id() == Some(id);
            self.buffer(event);
            if ours {
                break;
            }
        }
        Ok(())
    }

    /// A job missing from `query-jobs` dismissed itself; its `BLOCK_JOB_*` events are all
    /// that tells how it ended.
    fn vanished(&mut self, id: &str) -> Result<JobInfo> {
        let last = self
            .events()
            .filter(|e| e.job_id() == Some(id) && e.name.starts_with("BLOCK_JOB_"))
            .last()
            .cloned();
        match last {
            Some(e) if e.name == "BLOCK_JOB_CANCELLED" => Err(Error::Cancelled { id: id.into() }),
            Some(e) if e.name == "BLOCK_JOB_COMPLETED" => match e.data_str("error") {
                Some(desc) => Err(Error::Job {
                    id: id.into(),
                    kind: e.data_str("type").unwrap_or_default().into(),
                    desc: desc.into(),
                }),
                None => Ok(concluded_from(&e, id)),
            },
            _ => Err(Error::protocol(format!(
                "job {id} is unknown to QEMU and left no completion event"
            ))),
        }
    }
}

fn concluded_from(e: &Event, id: &str) -> JobInfo {
    let n = |k: &str| e.data.get(k).and_then(Value::as_u64).unwrap_or(0);
    JobInfo {
        id: id.to_owned(),
        kind: e.data_str("type").unwrap_or_default().to_owned(),
        status: JobStatus::Concluded,
        current_progress: n("offset"),
        total_progress: n("len"),
        error: None,
    }
}
