//! Running `qemu-img` / `qemu-io` and turning their failures into [`Error`]s.

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;

use crate::error::{Error, Result};
use crate::progress::{ProgressSplitter, report_final};

/// The disk image utility.
pub(crate) const QEMU_IMG: &str = "qemu-img";
/// The disk exerciser, used to write and verify guest data without a VM.
pub(crate) const QEMU_IO: &str = "qemu-io";

/// Captured result of a finished command.
pub(crate) struct Output {
    pub(crate) status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

/// One invocation: program, arguments, and what to call it in errors.
pub(crate) struct Cmd {
    program: &'static str,
    label: String,
    image: PathBuf,
    args: Vec<OsString>,
}

impl Cmd {
    /// `qemu-img SUBCOMMAND …` acting on `image`.
    pub(crate) fn qemu_img(subcommand: &str, image: &Path) -> Self {
        Cmd {
            program: QEMU_IMG,
            label: format!("{QEMU_IMG} {subcommand} {}", image.display()),
            image: image.to_path_buf(),
            args: vec![subcommand.into()],
        }
    }

    /// `qemu-io …` acting on `image`; `what` names the operation in errors.
    pub(crate) fn qemu_io(what: &str, image: &Path) -> Self {
        Cmd {
            program: QEMU_IO,
            label: format!("{QEMU_IO} {what} {}", image.display()),
            image: image.to_path_buf(),
            args: Vec::new(),
        }
    }

    /// Appends a literal argument.
    pub(crate) fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_os_string());
        self
    }

    /// Appends a file name, protected against qemu's own parsing of it.
    pub(crate) fn path(self, path: &Path) -> Self {
        let arg = qemu_path(path);
        self.arg(arg)
    }

    /// The subcommand and image path, for error messages.
    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    fn command(&self) -> Command {
        let mut command = Command::new(self.program);
        command.args(&self.args).stdin(Stdio::null());
        command
    }

    fn spawn_error(&self, source: std::io::Error) -> Error {
        Error::Spawn {
            program: self.program.to_owned(),
            command: self.label.clone(),
            source,
        }
    }

    /// Runs to completion and returns the output whatever the exit status.
    pub(crate) fn output(&self) -> Result<Output> {
        let out = self.command().output().map_err(|e| self.spawn_error(e))?;
        Ok(Output {
            status: out.status,
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs to completion; a non-zero exit becomes an error.
    pub(crate) fn run(&self) -> Result<Output> {
        let out = self.output()?;
        if out.status.success() {
            Ok(out)
        } else {
            Err(self.failure(&out))
        }
    }

    /// Runs with `-p` records on stdout forwarded to `progress` as they arrive.
    ///
    /// stdout is read incrementally on this thread (so `progress` need not be `Send`) while a
    /// helper thread drains stderr, so that neither pipe can fill up and stall qemu-img.
    pub(crate) fn run_with_progress(&self, progress: &mut dyn FnMut(f64)) -> Result<Output> {
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| self.spawn_error(e))?;
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let stderr_reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut stderr) = stderr {
                // A read error only loses part of the message; the exit status still decides.
                let _ = stderr.read_to_end(&mut buf);
            }
            buf
        });
        let mut running = Running {
            child,
            stdout,
            stderr_reader: Some(stderr_reader),
            finished: false,
        };

        let mut splitter = ProgressSplitter::default();
        let mut stdout_bytes = Vec::new();
        if let Some(stdout) = running.stdout.as_mut() {
            let mut chunk = [0u8; 4096];
            loop {
                match stdout.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => {
                        stdout_bytes.extend_from_slice(&chunk[..n]);
                        splitter.feed(&chunk[..n], progress);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // Progress is advisory: stop listening and let the exit status decide.
                    Err(_) => break,
                }
            }
        }
        let (status, stderr) = running.finish().map_err(|e| self.spawn_error(e))?;
        let out = Output {
            status,
            stdout: String::from_utf8_lossy(&stdout_bytes).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        };
        if out.status.success() {
            report_final(&splitter, progress);
            Ok(out)
        } else {
            Err(self.failure(&out))
        }
    }

    /// The error for a finished command that exited non-zero.
    pub(crate) fn failure(&self, out: &Output) -> Error {
        // qemu-io reports failed commands (e.g. "read failed: …") on stdout, not stderr.
        let message = match out.stderr.trim() {
            "" => out.stdout.trim(),
            stderr => stderr,
        };
        let message = if message.is_empty() {
            format!("exited with {}", out.status)
        } else {
            message.to_owned()
        };
        match locked_image(&message) {
            Some(named) => Error::Locked {
                image: named
                    .map(PathBuf::from)
                    .unwrap_or_else(|| self.image.clone()),
                message,
            },
            None => Error::Failed {
                command: self.label.clone(),
                message,
            },
        }
    }
}

/// A spawned child that is always waited for, even if the progress callback panics.
struct Running {
    child: Child,
    stdout: Option<ChildStdout>,
    stderr_reader: Option<JoinHandle<Vec<u8>>>,
    finished: bool,
}

impl Running {
    fn finish(&mut self) -> std::io::Result<(ExitStatus, Vec<u8>)> {
        let status = self.child.wait()?;
        self.finished = true;
        let stderr = self
            .stderr_reader
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        Ok((status, stderr))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        // Closing stdout would kill qemu-img with SIGPIPE half-way through a commit or rebase,
        // leaving the backing file half-written; letting it finish is the safer outcome.
        if let Some(stdout) = self.stdout.as_mut() {
            let _ = std::io::copy(stdout, &mut std::io::sink());
        }
        let _ = self.finish();
    }
}

/// If `message` is one of qemu's lock failures, the image it names (when it names one).
///
/// qemu says `Failed to get "write" lock` (we wanted to write, someone reads or writes) or
/// `Failed to get shared "write" lock` (we wanted to read, someone writes), followed by
/// `Is another process using the image [PATH]?`, where PATH may be a backing file.
fn locked_image(message: &str) -> Option<Option<&str>> {
    let is_lock = message.lines().any(|line| {
        line.find("Failed to get ")
            .map(|at| &line[at..])
            .is_some_and(|rest| rest.contains("\" lock"))
    });
    if !is_lock {
        return None;
    }
    const MARK: &str = "Is another process using the image [";
    let named = message.find(MARK).and_then(|at| {
        let rest = &message[at + MARK.len()..];
        rest.rfind("]?").map(|end| &rest[..end])
    });
    Some(named)
}

/// A file name as qemu must receive it to take it literally.
///
/// qemu reads `proto:rest` as a protocol when a `:` comes before the first `/`, and a leading `-`
/// would be an option: prefixing `./` to such relative names defuses both without changing
/// which file is meant. Absolute paths are always literal.
pub(crate) fn qemu_path(path: &Path) -> OsString {
    if path.is_absolute() {
        return path.as_os_str().to_os_string();
    }
    let bytes = path.as_os_str().as_encoded_bytes();
    let dash = bytes.first() == Some(&b'-');
    let colon = bytes.iter().take_while(|&&b| b != b'/').any(|&b| b == b':');
    if dash || colon {
        let mut prefixed = OsString::from("./");
        prefixed.push(path);
        prefixed
    } else {
        path.as_os_str().to_os_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_both_lock_messages() {
        let write = "qemu-io: can't open device base.qcow2: Failed to get \"write\" lock\n\
                     Is another process using the image [base.qcow2]?";
        assert_eq!(locked_image(write), Some(Some("base.qcow2")));
        let shared = "qemu-img: Could not open 'top.qcow2': Could not open backing file: \
                      Failed to get shared \"write\" lock\n\
                      Is another process using the image [/tmp/x/base.qcow2]?";
        assert_eq!(locked_image(shared), Some(Some("/tmp/x/base.qcow2")));
        assert_eq!(
            locked_image("qemu-img: Could not open 'x': No such file"),
            None
        );
    }

    #[test]
    fn defuses_protocol_and_option_lookalikes() {
        assert_eq!(qemu_path(Path::new("/a:b/c")), OsString::from("/a:b/c"));
        assert_eq!(qemu_path(Path::new("nbd:x")), OsString::from("./nbd:x"));
        assert_eq!(
            qemu_path(Path::new("-x.qcow2")),
            OsString::from("./-x.qcow2")
        );
        assert_eq!(qemu_path(Path::new("d/a:b")), OsString::from("d/a:b"));
    }
}
