//! The client against a scripted QMP peer (no QEMU needed): replies matched by id, late
//! replies skipped, events buffered, lines split across reads, timeouts, errors, and end of
//! file as a dead process.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::{Value, json};
use snaptree_qmp::{Error, Qmp};

/// A peer that greets, accepts `qmp_capabilities`, then runs `script`.
struct Peer {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Peer {
    /// Reads the next command and returns (name, id).
    fn command(&mut self) -> (String, Value) {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap();
        (v["execute"].as_str().unwrap().to_owned(), v["id"].clone())
    }

    fn send(&mut self, raw: &str) {
        self.writer.write_all(raw.as_bytes()).unwrap();
        self.writer.flush().unwrap();
    }

    fn reply(&mut self, id: &Value, ret: Value) {
        self.send(&format!("{}\r\n", json!({ "return": ret, "id": id })));
    }
}

fn serve(
    script: impl FnOnce(&mut Peer) + Send + 'static,
) -> (Qmp, JoinHandle<()>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("qmp.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let server = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut peer = Peer {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
        };
        peer.send(
            "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 2, \"minor\": 0, \"major\": 10}}, \
             \"capabilities\": [\"oob\"]}}\r\n",
        );
        let (name, id) = peer.command();
        assert_eq!(name, "qmp_capabilities");
        peer.reply(&id, json!({}));
        script(&mut peer);
    });
    let qmp = Qmp::connect(&path).unwrap();
    (qmp, server, dir)
}

#[test]
fn replies_events_and_split_lines() {
    let (mut qmp, server, _dir) = serve(|peer| {
        let (name, id) = peer.command();
        assert_eq!(name, "query-status");
        peer.send(
            "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\r\n",
        );
        peer.send("{\"return\": \"stale\", \"id\": 999}\r\n");
        // One reply in two pieces, with a pause between them.
        let reply =
            json!({ "return": { "status": "paused", "running": false }, "id": id }).to_string();
        let (a, b) = reply.split_at(reply.len() / 2);
        peer.send(a);
        thread::sleep(Duration::from_millis(50));
        peer.send(&format!("{b}\r\n"));
    });
    assert_eq!(qmp.version(), Some((10, 0, 2)));
    let status = qmp.query_status().unwrap();
    assert!(!status.running);
    let events = qmp.take_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, "STOP");
    assert_eq!(events[0].timestamp_us, 1_000_002);
    server.join().unwrap();
}

#[test]
fn error_class_and_desc() {
    let (mut qmp, server, _dir) = serve(|peer| {
        let (_, id) = peer.command();
        peer.send(&format!(
            "{}\r\n",
            json!({ "error": { "class": "DeviceNotFound", "desc": "no vd9" }, "id": id })
        ));
    });
    match qmp.execute("blockdev-del", json!({ "node-name": "vd9" })) {
        Err(Error::Command {
            command,
            class,
            desc,
        }) => {
            assert_eq!(
                (command.as_str(), class.as_str(), desc.as_str()),
                ("blockdev-del", "DeviceNotFound", "no vd9")
            );
        }
        other => panic!("{other:?}"),
    }
    server.join().unwrap();
}

#[test]
fn a_late_reply_is_not_taken_for_the_next_one() {
    let (mut qmp, server, _dir) = serve(|peer| {
        let (_, slow) = peer.command();
        thread::sleep(Duration::from_millis(300));
        peer.reply(&slow, json!("late"));
        let (_, next) = peer.command();
        peer.reply(&next, json!("mine"));
    });
    let slow = qmp.execute_with_timeout("slow", Value::Null, Duration::from_millis(100));
    assert!(matches!(slow, Err(Error::Timeout { .. })), "{slow:?}");
    assert_eq!(qmp.execute("next", Value::Null).unwrap(), json!("mine"));
    server.join().unwrap();
}

#[test]
fn end_of_file_is_process_died() {
    let (mut qmp, server, _dir) = serve(|peer| {
        let _ = peer.command();
        // Returning drops the socket: QEMU "died" with the command pending.
    });
    let died = qmp.execute("query-jobs", Value::Null);
    assert!(died.as_ref().is_err_and(Error::is_process_died), "{died:?}");
    server.join().unwrap();
    let again = qmp.execute("query-jobs", Value::Null);
    assert!(again.is_err_and(|e| e.is_process_died()));
}

#[test]
fn wait_event_buffers_the_others() {
    let (mut qmp, server, _dir) = serve(|peer| {
        peer.send("{\"event\": \"RESUME\"}\r\n");
        thread::sleep(Duration::from_millis(50));
        peer.send(
            "{\"event\": \"BLOCK_JOB_READY\", \"data\": {\"device\": \"j1\", \"len\": 4}}\r\n",
        );
        thread::sleep(Duration::from_millis(200));
    });
    let ready = qmp
        .wait_event(|e| e.job_id() == Some("j1"), Duration::from_secs(5))
        .unwrap();
    assert_eq!(ready.name, "BLOCK_JOB_READY");
    assert_eq!(
        qmp.events().map(|e| e.name.as_str()).collect::<Vec<_>>(),
        ["RESUME"]
    );
    let none = qmp.wait_event(|e| e.name == "STOP", Duration::from_millis(50));
    assert!(matches!(none, Err(Error::Timeout { .. })), "{none:?}");
    server.join().unwrap();
}
