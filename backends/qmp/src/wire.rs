//! QMP framing: one JSON object per line over a Unix stream socket, with deadlines.
//!
//! QEMU ends every message with `\r\n` and accepts one JSON object per line from us. Reads
//! use the socket's receive timeout, recomputed from a deadline before every read, so a
//! stalled QEMU turns into [`Error::Timeout`] instead of a hang. Bytes of a line that
//! arrived before a timeout are kept in `partial`, so a later read continues the same line
//! rather than parsing half a message.

use std::io::{self, BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{Error, Result};

/// Longest line accepted from QEMU. Replies such as `query-named-block-nodes` on a long chain
/// are large, but a line without end means a broken peer, not a reply to wait for.
const MAX_LINE: usize = 64 * 1024 * 1024;

/// A connected QMP socket that sends and receives JSON lines.
#[derive(Debug)]
pub(crate) struct Wire {
    reader: BufReader<UnixStream>,
    partial: Vec<u8>,
}

impl Wire {
    pub(crate) fn new(stream: UnixStream) -> Self {
        Wire {
            reader: BufReader::new(stream),
            partial: Vec::new(),
        }
    }

    /// Sends one message. `during` names the exchange in errors.
    pub(crate) fn send(&mut self, message: &Value, during: &str, timeout: Duration) -> Result<()> {
        let mut line = serde_json::to_vec(message)
            .map_err(|e| Error::protocol(format!("cannot encode {during}: {e}")))?;
        line.push(b'\n');
        let mut stream = self.reader.get_ref();
        stream
            .set_write_timeout(Some(timeout.max(Duration::from_millis(1))))
            .map_err(|source| io_error(source, during))?;
        match stream.write_all(&line).and_then(|()| stream.flush()) {
            Ok(()) => Ok(()),
            Err(e) if is_timeout(&e) => Err(Error::Timeout {
                waiting_for: format!("QEMU to accept {during}"),
                after: timeout,
            }),
            Err(e) => Err(io_error(e, during)),
        }
    }

    /// Receives the next message, waiting until `deadline` at most.
    pub(crate) fn recv(&mut self, deadline: Instant, during: &str) -> Result<Value> {
        let started = Instant::now();
        loop {
            let now = Instant::now();
            // A zero timeout means "block forever" to the socket, so never pass one.
            let left = deadline
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            self.reader
                .get_ref()
                .set_read_timeout(Some(left))
                .map_err(|source| io_error(source, during))?;
            match self.reader.read_until(b'\n', &mut self.partial) {
                Ok(0) => {
                    return Err(Error::ProcessDied {
                        during: during.to_owned(),
                    });
                }
                Ok(_) if self.partial.ends_with(b"\n") => {
                    let line = std::mem::take(&mut self.partial);
                    let text = String::from_utf8_lossy(&line);
                    if text.trim().is_empty() {
                        continue;
                    }
                    return serde_json::from_slice(&line).map_err(|e| {
                        Error::protocol(format!("invalid JSON from QEMU ({e}): {}", text.trim()))
                    });
                }
                // read_until returned without a newline: end of file mid-line; the next
                // call reads 0 and reports the death.
                Ok(_) => continue,
                Err(e) if is_timeout(&e) => {
                    if self.partial.len() > MAX_LINE {
                        return Err(Error::protocol("a QMP line longer than 64 MiB"));
                    }
                    if Instant::now() >= deadline {
                        return Err(Error::Timeout {
                            waiting_for: during.to_owned(),
                            after: deadline.saturating_duration_since(started),
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(e, during)),
            }
        }
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

/// A peer that vanished shows up as a reset or a broken pipe rather than end of file when
/// we were writing: that is the same death as EOF.
fn io_error(source: io::Error, during: &str) -> Error {
    match source.kind() {
        ErrorKind::BrokenPipe | ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted => {
            Error::ProcessDied {
                during: during.to_owned(),
            }
        }
        _ => Error::Io {
            during: during.to_owned(),
            source,
        },
    }
}
