//! Everything the command prints goes through here, so that a reader that stops reading
//! (`snaptree snapshot-list vm | head -1`) ends the command quietly, as it ends `ls`,
//! instead of a panic: Rust ignores SIGPIPE, so a write to a closed pipe fails with
//! `BrokenPipe`, and `print!` turns that failure into a panic. SIGPIPE itself stays
//! ignored: a backend writing to a QEMU that died must see an error, not kill the process
//! in the middle of a step.

use std::fmt::Arguments;
use std::io::{self, Write};

use crate::Failure;

/// Writes formatted text to stdout. A closed pipe is `Failure::ClosedPipe` (a quiet exit);
/// any other write error is reported.
pub fn stdout(text: Arguments<'_>) -> Result<(), Failure> {
    write_stdout(|out| out.write_fmt(text))
}

/// Writes bytes to stdout, like [`stdout`].
pub fn stdout_bytes(bytes: &[u8]) -> Result<(), Failure> {
    write_stdout(|out| out.write_all(bytes))
}

fn write_stdout(
    write: impl FnOnce(&mut io::StdoutLock<'static>) -> io::Result<()>,
) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| match e.kind() {
            io::ErrorKind::BrokenPipe => Failure::ClosedPipe,
            _ => Failure::Io(format!("cannot write to stdout: {e}")),
        })
}

/// Writes a line to stderr. Nothing is left to tell about a stderr that cannot be
/// written, so its failure is ignored rather than turned into a panic.
pub fn stderr_line(text: Arguments<'_>) {
    let mut err = io::stderr().lock();
    let _ = err.write_fmt(text).and_then(|()| err.write_all(b"\n"));
}

/// `print!` through [`stdout`]: returns `Failure::ClosedPipe` from the calling function
/// when the reader has gone.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::stdout(format_args!($($arg)*))?
    };
}

/// `println!` through [`stdout`].
macro_rules! outln {
    () => {
        $crate::out::stdout(format_args!("\n"))?
    };
    ($($arg:tt)*) => {
        $crate::out::stdout(format_args!("{}\n", format_args!($($arg)*)))?
    };
}

/// `eprintln!` through [`stderr_line`].
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::out::stderr_line(format_args!($($arg)*))
    };
}

pub(crate) use {errln, out, outln};
