//! The QMP client: handshake, commands with matched replies, and the event buffer.

use std::collections::VecDeque;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::message::{Event, Incoming};
use crate::wire::Wire;

/// Events kept when nobody collects them. QEMU emits a handful per job; a client that
/// never drains them must not grow without bound, so the oldest are dropped beyond this.
const MAX_BUFFERED_EVENTS: usize = 4096;

/// A connected QMP session, in command mode (capabilities negotiated).
///
/// One command at a time: [`Qmp::execute`] sends it and reads until its reply, buffering
/// every event that arrives meanwhile; [`Qmp::wait_event`] and [`Qmp::take_events`] give
/// them back. Each command carries a fresh `id`, so a late reply to a command that timed
/// out is recognised and skipped instead of being taken for the next command's reply.
#[derive(Debug)]
pub struct Qmp {
    wire: Wire,
    events: VecDeque<Event>,
    next_id: u64,
    timeout: Duration,
    greeting: Value,
}

impl Qmp {
    /// How long a command waits for its reply unless [`Qmp::set_timeout`] says otherwise.
    /// Generous because `snapshot-save` commands return quickly but synchronous ones like
    /// `transaction` may flush caches on a slow disk.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

    /// Connects to QEMU's QMP socket at `path`, reads the greeting and negotiates
    /// capabilities (`qmp_capabilities`).
    pub fn connect(path: impl AsRef<Path>) -> Result<Qmp> {
        let path = path.as_ref();
        let stream = UnixStream::connect(path).map_err(|source| Error::Connect {
            path: path.to_owned(),
            source,
        })?;
        Qmp::handshake(stream, Qmp::DEFAULT_TIMEOUT)
    }

    /// Runs the handshake on an already connected socket: reads the greeting, then enters
    /// command mode. `timeout` becomes the session's command timeout.
    pub fn handshake(stream: UnixStream, timeout: Duration) -> Result<Qmp> {
        let mut wire = Wire::new(stream);
        let deadline = Instant::now() + timeout;
        let greeting = match Incoming::parse(wire.recv(deadline, "the QMP greeting")?)? {
            Incoming::Greeting(g) => g,
            other => {
                return Err(Error::protocol(format!(
                    "expected the QMP greeting, got {other:?}"
                )));
            }
        };
        let mut qmp = Qmp {
            wire,
            events: VecDeque::new(),
            next_id: 1,
            timeout,
            greeting,
        };
        qmp.execute("qmp_capabilities", Value::Null)?;
        Ok(qmp)
    }

    /// The command timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sets the command timeout: how long [`Qmp::execute`] waits for a reply.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The greeting's `QMP` member (`version`, `capabilities`).
    pub fn greeting(&self) -> &Value {
        &self.greeting
    }

    /// QEMU's version `(major, minor, micro)` from the greeting.
    pub fn version(&self) -> Option<(u64, u64, u64)> {
        let v = self.greeting.get("version")?.get("qemu")?;
        let part = |k: &str| v.get(k).and_then(Value::as_u64);
        Some((part("major")?, part("minor")?, part("micro")?))
    }

    /// Runs `command` with `args` (`Value::Null` for none) and returns its `return` value.
    /// A QMP error reply becomes [`Error::Command`] with QEMU's `class` and `desc`.
    pub fn execute(&mut self, command: &str, args: Value) -> Result<Value> {
        let timeout = self.timeout;
        self.execute_with_timeout(command, args, timeout)
    }

    /// As [`Qmp::execute`], with a timeout for this command only.
    pub fn execute_with_timeout(
        &mut self,
        command: &str,
        args: Value,
        timeout: Duration,
    ) -> Result<Value> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({ "execute": command, "id": id });
        if !args.is_null() {
            message["arguments"] = args;
        }
        self.wire.send(&message, command, timeout)?;
        let deadline = Instant::now() + timeout;
        loop {
            match Incoming::parse(self.wire.recv(deadline, command)?)? {
                Incoming::Event(event) => self.buffer(event),
                // QEMU answers without an id only when it could not parse the command, and
                // then the error is ours.
                Incoming::Return { id: rid, value } if is_ours(&rid, id) => return Ok(value),
                Incoming::Error {
                    id: rid,
                    class,
                    desc,
                } if is_ours(&rid, id) => {
                    return Err(Error::Command {
                        command: command.to_owned(),
                        class,
                        desc,
                    });
                }
                // A late reply to an earlier command that timed out.
                Incoming::Return { .. } | Incoming::Error { .. } => {}
                Incoming::Greeting(_) => {
                    return Err(Error::protocol("a second QMP greeting mid-session"));
                }
            }
        }
    }

    /// As [`Qmp::execute`], decoding the reply into `T`.
    pub fn execute_as<T: DeserializeOwned>(&mut self, command: &str, args: Value) -> Result<T> {
        let value = self.execute(command, args)?;
        serde_json::from_value(value.clone()).map_err(|e| {
            Error::protocol(format!("reply to {command} does not decode ({e}): {value}"))
        })
    }

    /// The buffered events, oldest first, without removing them.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.events.iter()
    }

    /// Removes and returns every buffered event, oldest first.
    pub fn take_events(&mut self) -> Vec<Event> {
        self.events.drain(..).collect()
    }

    /// Returns the first buffered event `matches` accepts, or reads from QEMU until one
    /// arrives, for `timeout` at most. The event is removed from the buffer; others stay.
    pub fn wait_event(
        &mut self,
        mut matches: impl FnMut(&Event) -> bool,
        timeout: Duration,
    ) -> Result<Event> {
        if let Some(i) = self.events.iter().position(&mut matches) {
            return Ok(self.events.remove(i).expect("position is in range"));
        }
        let deadline = Instant::now() + timeout;
        loop {
            match self.pump(deadline, "an event")? {
                Some(event) if matches(&event) => return Ok(event),
                Some(event) => self.buffer(event),
                None if Instant::now() >= deadline => {
                    return Err(Error::Timeout {
                        waiting_for: "a QMP event".to_owned(),
                        after: timeout,
                    });
                }
                None => {}
            }
        }
    }

    /// Reads one message if one arrives before `deadline`; returns the event it was, or
    /// `None` for a timeout or a stray reply. Used to sleep while staying responsive to
    /// events (job waits) without sending anything.
    pub(crate) fn pump(&mut self, deadline: Instant, during: &str) -> Result<Option<Event>> {
        match self.wire.recv(deadline, during) {
            Ok(value) => match Incoming::parse(value)? {
                Incoming::Event(event) => Ok(Some(event)),
                _ => Ok(None),
            },
            Err(Error::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub(crate) fn buffer(&mut self, event: Event) {
        if self.events.len() == MAX_BUFFERED_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(event);
    }
}

fn is_ours(reply_id: &Option<Value>, id: u64) -> bool {
    match reply_id {
        None => true,
        Some(v) => v.as_u64() == Some(id),
    }
}
