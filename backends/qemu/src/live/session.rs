//! [`Session`]: the connection to a domain's QEMU over its QMP socket, opened on demand.
//!
//! When nothing listens on the socket the VM is shut off and the offline backend does the
//! work with `qemu-img`. A QMP error, a failed job or a QEMU that dies mid-job is a
//! `BACKEND` error carrying QMP's message; the session is dropped when QEMU died, and the
//! next call connects again (to a restarted QEMU, or finds the domain shut off).

use std::path::{Path, PathBuf};
use std::time::Duration;

use snaptree_engine::PowerState;
use snaptree_qmp::{self as qmp, Qmp};

use crate::error::{QemuError, Result};

/// How long one QMP job (a snapshot save, load or delete, a stream, a commit) may take.
pub(crate) const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// The connection to a domain's QEMU.
#[derive(Debug)]
pub(crate) struct Session {
    socket: PathBuf,
    qmp: Option<Qmp>,
    jobs: u64,
}

impl Session {
    /// A session on `socket`, not connected yet.
    pub(crate) fn new(socket: PathBuf) -> Session {
        Session {
            socket,
            qmp: None,
            jobs: 0,
        }
    }

    /// The current connection, if one is open (no connecting).
    pub(crate) fn qmp_mut(&mut self) -> Option<&mut Qmp> {
        self.qmp.as_mut()
    }

    /// The connection, connecting first if needed; `None` when no QEMU listens (shut off).
    fn connection(&mut self) -> Result<Option<&mut Qmp>> {
        if self.qmp.is_none() {
            match Qmp::connect(&self.socket) {
                Ok(q) => self.qmp = Some(q),
                Err(qmp::Error::Connect { .. }) => return Ok(None),
                Err(source) => {
                    return Err(QemuError::QmpSocket {
                        socket: self.socket.clone(),
                        source,
                    });
                }
            }
        }
        Ok(self.qmp.as_mut())
    }

    /// Runs `f` on the connection; a dead QEMU drops the connection, and every error says
    /// what could not be done, with QMP's message.
    pub(crate) fn with<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Qmp) -> qmp::Result<T>,
    ) -> Result<T> {
        let socket = self.socket.clone();
        let Some(q) = self.connection()? else {
            return Err(QemuError::NoQemu {
                what: what.to_owned(),
                socket,
            });
        };
        f(q).map_err(|source| {
            if died(&source) {
                self.qmp = None;
            }
            QemuError::Qmp {
                what: what.to_owned(),
                source,
            }
        })
    }

    /// The VM's power state: shut off when no QEMU listens (or it just died).
    pub(crate) fn power_state(&mut self) -> Result<PowerState> {
        // A connection to a QEMU that died since is retried once on a fresh one.
        for _ in 0..2 {
            let Some(q) = self.connection()? else {
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
                Err(e) if died(&e) => self.qmp = None,
                Err(e) => return Err(QemuError::QueryStatus(e)),
            }
        }
        Ok(PowerState::Shutoff)
    }

    /// Whether the guest runs (not paused), asked of QEMU.
    pub(crate) fn running(&mut self) -> Result<bool> {
        Ok(self
            .with("query the run state", |q| q.query_status())?
            .running)
    }

    /// A job id of this process, unique within the session.
    pub(crate) fn job_id(&mut self, kind: &str) -> String {
        self.jobs += 1;
        format!("snaptree-{kind}-{}-{}", std::process::id(), self.jobs)
    }
}

/// Whether a QMP error means the connection is gone (QEMU died, or the socket broke).
fn died(e: &qmp::Error) -> bool {
    e.is_process_died() || matches!(e, qmp::Error::Io { .. })
}

/// A path with its links resolved, as QEMU reports file names; the path itself when it
/// cannot be resolved (a file that is gone).
pub(crate) fn canonical(p: &Path) -> PathBuf {
    p.canonicalize().unwrap_or_else(|_| p.to_path_buf())
}

/// Whether two paths name the same file as QEMU and the backend name it.
pub(crate) fn same_path(a: &Path, b: &Path) -> bool {
    a == b || canonical(a) == canonical(b)
}
