//! snaptree through the libvirt backend against the same libvirt operation by `virsh`, on
//! the same running VM, in one run, side by side: each operation's wall time and how long
//! the guest was stopped during it (QEMU's `STOP` / `RESUME` events, as libvirt relays them
//! to `virsh qemu-monitor-event --timestamp`: millisecond resolution).
//!
//! `cargo bench -p snaptree-backend-libvirt --bench vs_virsh` (root; starts a private
//! libvirtd like the tests). `SNAPTREE_BENCH_ROUNDS` sets the rounds (default 5); the
//! medians are printed. The two sides alternate within each round, and each side removes
//! what it made before the other runs, so snaptree's tree never sees virsh's entries.

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Seek};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use snaptree_engine::{DeleteMode, Domain, NoProgress, Uuid};

const MIB: u64 = common::MIB;

/// The guest's STOP/RESUME events, read from a `virsh qemu-monitor-event` process.
struct Events {
    child: Child,
    file: std::fs::File,
    offset: u64,
}

impl Events {
    fn watch(rig: &common::Rig, name: &str, log: &Path) -> Events {
        let out = std::fs::File::create(log).unwrap();
        let child = Command::new("virsh")
            .args(["-q", "-c", &rig.uri, "qemu-monitor-event", name])
            .args(["--loop", "--timestamp"])
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        Events {
            child,
            file: std::fs::File::open(log).unwrap(),
            offset: 0,
        }
    }

    /// Milliseconds the guest was stopped in the events since the last call.
    fn stopped_ms(&mut self) -> f64 {
        // libvirt relays events asynchronously: give the last ones a moment.
        std::thread::sleep(Duration::from_millis(100));
        self.file
            .seek(std::io::SeekFrom::Start(self.offset))
            .unwrap();
        let mut reader = BufReader::new(&mut self.file);
        let (mut total, mut since) = (0.0, None);
        let mut line = String::new();
        while reader.read_line(&mut line).unwrap() > 0 {
            if !line.ends_with('\n') {
                break;
            }
            self.offset += line.len() as u64;
            let ms = line.get(11..23).and_then(clock_ms);
            if let Some(ms) = ms {
                if line.contains("event STOP ") {
                    since = Some(ms);
                } else if line.contains("event RESUME ")
                    && let Some(s) = since.take()
                {
                    total += ms - s;
                }
            }
            line.clear();
        }
        total
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        // Our own child, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// "HH:MM:SS.mmm" as milliseconds of the day.
fn clock_ms(t: &str) -> Option<f64> {
    let mut it = t.split(':');
    let h: f64 = it.next()?.parse().ok()?;
    let m: f64 = it.next()?.parse().ok()?;
    let s: f64 = it.next()?.parse().ok()?;
    Some(((h * 60.0 + m) * 60.0 + s) * 1000.0)
}

/// One measured operation: wall ms and stopped ms.
fn measure(ev: &mut Events, op: impl FnOnce()) -> (f64, f64) {
    ev.stopped_ms();
    let t = Instant::now();
    op();
    let wall = t.elapsed().as_secs_f64() * 1000.0;
    (wall, ev.stopped_ms())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[derive(Default)]
struct Row {
    snaptree: (Vec<f64>, Vec<f64>),
    virsh: (Vec<f64>, Vec<f64>),
}

impl Row {
    fn add(&mut self, snaptree: bool, (wall, stopped): (f64, f64)) {
        let side = if snaptree {
            &mut self.snaptree
        } else {
            &mut self.virsh
        };
        side.0.push(wall);
        side.1.push(stopped);
    }

    fn print(&mut self, what: &str) {
        println!(
            "{what:<44} {:>9.1} {:>9.1} {:>9.1} {:>9.1}",
            median(&mut self.snaptree.0),
            median(&mut self.virsh.0),
            median(&mut self.snaptree.1),
            median(&mut self.virsh.1)
        );
    }
}

fn create(dom: &mut Domain, name: &str) -> Uuid {
    dom.create_snapshot(&format!(
        "<domainsnapshot><name>{name}</name></domainsnapshot>"
    ))
    .unwrap()
}

fn main() {
    let Some(rig) = common::Rig::start(Path::new(env!("CARGO_TARGET_TMPDIR"))) else {
        return;
    };
    let rounds: usize = std::env::var("SNAPTREE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "libvirt {} · QEMU {} · {rounds} rounds · load average at start: {}",
        rig.virsh(&["version", "--daemon"])
            .lines()
            .find(|l| l.contains("Running against daemon"))
            .unwrap_or("?")
            .trim(),
        if Path::new("/dev/kvm").exists() {
            "KVM"
        } else {
            "TCG"
        },
        load.trim()
    );
    println!(
        "{:<44} {:>9} {:>9} {:>9} {:>9}",
        "operation (running VM, 64 MiB qcow2 disk)", "snaptree", "virsh", "st stop", "vs stop"
    );
    println!("{:<44} {:>9} {:>9} {:>9} {:>9}", "", "ms", "ms", "ms", "ms");

    // Internal: snapshots with memory.
    {
        let d = rig.define("bench-int", 1, "internal");
        rig.virsh(&["start", &d.name]);
        let mut ev = Events::watch(&rig, &d.name, &rig.dir().join("int-events"));
        let state = tempfile::tempdir().unwrap();
        let conn = common::connection(state.path());
        conn.define_domain(&d.snaptree_xml).unwrap();
        let mut dom = conn.open_domain(&d.name).unwrap();
        let (mut c, mut r, mut x) = (Row::default(), Row::default(), Row::default());
        for i in 0..rounds {
            rig.guest_write(&d.name, 0, 0x11, 0, MIB);
            let mut a = Uuid::nil();
            c.add(
                true,
                measure(&mut ev, || a = create(&mut dom, &format!("a{i}"))),
            );
            rig.guest_write(&d.name, 0, 0x22, 0, MIB);
            let b = create(&mut dom, &format!("b{i}"));
            r.add(
                true,
                measure(&mut ev, || {
                    dom.revert(&a, None, &mut NoProgress).unwrap();
                }),
            );
            dom.delete(&b, DeleteMode::Discard, &mut NoProgress)
                .unwrap();
            x.add(
                true,
                measure(&mut ev, || {
                    dom.delete(&a, DeleteMode::Discard, &mut NoProgress)
                        .unwrap();
                }),
            );

            rig.guest_write(&d.name, 0, 0x11, 0, MIB);
            c.add(
                false,
                measure(&mut ev, || {
                    rig.virsh(&["snapshot-create-as", &d.name, "va"]);
                }),
            );
            rig.guest_write(&d.name, 0, 0x22, 0, MIB);
            rig.virsh(&["snapshot-create-as", &d.name, "vb"]);
            r.add(
                false,
                measure(&mut ev, || {
                    rig.virsh(&["snapshot-revert", &d.name, "va", "--running"]);
                }),
            );
            rig.virsh(&["snapshot-delete", &d.name, "vb"]);
            x.add(
                false,
                measure(&mut ev, || {
                    rig.virsh(&["snapshot-delete", &d.name, "va"]);
                }),
            );
        }
        c.print("create internal (with memory)");
        r.print("revert internal, running");
        x.print("delete internal (leaf)");
        drop(dom);
        rig.undefine(&d.name);
    }

    // External: disk-only overlays; delete is a block commit.
    {
        let d = rig.define("bench-ext", 1, "external");
        rig.virsh(&["start", &d.name]);
        let mut ev = Events::watch(&rig, &d.name, &rig.dir().join("ext-events"));
        let state = tempfile::tempdir().unwrap();
        let conn = common::connection(state.path());
        conn.define_domain(&d.snaptree_xml).unwrap();
        let mut dom = conn.open_domain(&d.name).unwrap();
        let (mut c, mut m, mut x) = (Row::default(), Row::default(), Row::default());
        for i in 0..rounds {
            let mut a = Uuid::nil();
            c.add(
                true,
                measure(&mut ev, || a = create(&mut dom, &format!("a{i}"))),
            );
            rig.guest_write(&d.name, 0, 0x33, 0, 8 * MIB);
            let b = create(&mut dom, &format!("b{i}"));
            rig.guest_write(&d.name, 0, 0x44, 8 * MIB, 8 * MIB);
            // Intermediate commit (a's overlay into the base), then active commit with pivot.
            m.add(
                true,
                measure(&mut ev, || {
                    dom.delete(&a, DeleteMode::Consolidate, &mut NoProgress)
                        .unwrap();
                }),
            );
            x.add(
                true,
                measure(&mut ev, || {
                    dom.delete(&b, DeleteMode::Discard, &mut NoProgress)
                        .unwrap();
                }),
            );

            c.add(
                false,
                measure(&mut ev, || {
                    rig.virsh(&[
                        "snapshot-create-as",
                        &d.name,
                        "va",
                        "--disk-only",
                        "--atomic",
                    ]);
                }),
            );
            rig.guest_write(&d.name, 0, 0x33, 0, 8 * MIB);
            rig.virsh(&[
                "snapshot-create-as",
                &d.name,
                "vb",
                "--disk-only",
                "--atomic",
            ]);
            rig.guest_write(&d.name, 0, 0x44, 8 * MIB, 8 * MIB);
            m.add(
                false,
                measure(&mut ev, || {
                    rig.virsh(&["snapshot-delete", &d.name, "va"]);
                }),
            );
            x.add(
                false,
                measure(&mut ev, || {
                    rig.virsh(&["snapshot-delete", &d.name, "vb"]);
                }),
            );
        }
        c.print("create external disk-only (ATOMIC)");
        m.print("delete external, intermediate commit 8 MiB");
        x.print("delete external, active commit 8 MiB + pivot");
        drop(dom);
        rig.undefine(&d.name);
    }
    println!(
        "load average at end: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
}
