//! What QEMU sends: the greeting, replies to commands (success or error) and asynchronous
//! events. Classifying a raw JSON object is all this module does.

use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// An asynchronous QMP event, e.g. `JOB_STATUS_CHANGE`, `BLOCK_JOB_READY`, `STOP`.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event name, e.g. `BLOCK_JOB_COMPLETED`.
    pub name: String,
    /// The event's `data` member (`Value::Null` when it has none, as for `STOP`).
    pub data: Value,
    /// When QEMU emitted it, in microseconds since the Unix epoch (QEMU's host clock).
    pub timestamp_us: u64,
}

impl Event {
    /// A string member of `data`, e.g. `id` of `JOB_STATUS_CHANGE` or `device` of the
    /// `BLOCK_JOB_*` events (which is the job id for jobs started with a `job-id`).
    pub fn data_str(&self, key: &str) -> Option<&str> {
        self.data.get(key).and_then(Value::as_str)
    }

    /// The job this event is about, for the job and block-job events.
    pub fn job_id(&self) -> Option<&str> {
        match self.name.as_str() {
            "JOB_STATUS_CHANGE" => self.data_str("id"),
            name if name.starts_with("BLOCK_JOB_") => self.data_str("device"),
            _ => None,
        }
    }
}

/// One message from QEMU.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// The greeting (`{"QMP": {...}}`), sent once when a client connects.
    Greeting(Value),
    /// A successful reply; `id` echoes the command's id.
    Return { id: Option<Value>, value: Value },
    /// A failed reply.
    Error {
        id: Option<Value>,
        class: String,
        desc: String,
    },
    /// An asynchronous event.
    Event(Event),
}

impl Incoming {
    pub(crate) fn parse(value: Value) -> Result<Incoming> {
        let Value::Object(mut object) = value else {
            return Err(Error::protocol(format!("not a JSON object: {value}")));
        };
        if let Some(greeting) = object.remove("QMP") {
            return Ok(Incoming::Greeting(greeting));
        }
        let id = object.remove("id");
        if let Some(value) = object.remove("return") {
            return Ok(Incoming::Return { id, value });
        }
        if let Some(error) = object.remove("error") {
            let field = |key: &str| {
                error
                    .get(key)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            return Ok(Incoming::Error {
                id,
                class: field("class"),
                desc: field("desc"),
            });
        }
        if let Some(Value::String(name)) = object.remove("event") {
            return Ok(Incoming::Event(Event {
                name,
                data: object.remove("data").unwrap_or(Value::Null),
                timestamp_us: timestamp_us(&object),
            }));
        }
        Err(Error::protocol(format!(
            "neither greeting, reply nor event: {}",
            Value::Object(object)
        )))
    }
}

fn timestamp_us(object: &Map<String, Value>) -> u64 {
    let part = |key: &str| {
        object
            .get("timestamp")
            .and_then(|t| t.get(key))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    part("seconds")
        .saturating_mul(1_000_000)
        .saturating_add(part("microseconds"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn classifies_every_kind() {
        let greeting = json!({"QMP": {"version": {}, "capabilities": ["oob"]}});
        assert!(matches!(
            Incoming::parse(greeting).unwrap(),
            Incoming::Greeting(_)
        ));
        let ret = json!({"return": {}, "id": 3});
        assert!(matches!(
            Incoming::parse(ret).unwrap(),
            Incoming::Return { id: Some(_), .. }
        ));
        let err = json!({"error": {"class": "GenericError", "desc": "nope"}});
        match Incoming::parse(err).unwrap() {
            Incoming::Error { class, desc, id } => {
                assert_eq!(
                    (class.as_str(), desc.as_str(), id),
                    ("GenericError", "nope", None)
                );
            }
            other => panic!("{other:?}"),
        }
        let event = json!({"event": "JOB_STATUS_CHANGE", "data": {"id": "j", "status": "ready"},
            "timestamp": {"seconds": 2, "microseconds": 5}});
        match Incoming::parse(event).unwrap() {
            Incoming::Event(e) => {
                assert_eq!(e.job_id(), Some("j"));
                assert_eq!(e.timestamp_us, 2_000_005);
            }
            other => panic!("{other:?}"),
        }
        let ready = json!({"event": "BLOCK_JOB_READY", "data": {"device": "c0"}});
        match Incoming::parse(ready).unwrap() {
            Incoming::Event(e) => assert_eq!(e.job_id(), Some("c0")),
            other => panic!("{other:?}"),
        }
        assert!(Incoming::parse(json!([1])).is_err());
        assert!(Incoming::parse(json!({"what": 1})).is_err());
    }
}
