//! Benchmark (not a timed test): `cargo bench -p snaptree-backend-qemu --bench live_chain`.
//!
//! Live external (disk-only) snapshots of a running VM with two 64 MiB qcow2 disks: the
//! wall time of each operation and how long the guest was stopped during it, read from
//! QEMU's own `STOP` / `RESUME` events (its clock). Needs `qemu-system-x86_64`; says
//! `SKIPPED:` and exits when it is missing (fails under CI).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use snaptree_backend_qemu::{ConsolidatePolicy, QemuBackend, QemuHandle};
use snaptree_engine::{DeleteMode, Domain, NoProgress, Uuid};
use snaptree_qemu_img as qi;
use snaptree_tests::rig::{self, Rig};

const MIB: u64 = 1024 * 1024;
const SIZE: u64 = 64 * MIB;
const ROUNDS: usize = 5;

struct Vm {
    rig: Rig,
    qoms: Vec<String>,
}

impl Vm {
    /// `mib` MiB of `pattern` at `offset_mib` on every disk, flushed.
    fn write(&mut self, pattern: u8, offset_mib: u64, mib: u64) {
        for q in &self.qoms {
            let qmp = self.rig.qmp();
            qmp.qemu_io(
                q,
                &format!("write -P {pattern} {} {}", offset_mib * MIB, mib * MIB),
            )
            .unwrap();
            qmp.qemu_io(q, "flush").unwrap();
        }
    }

    /// Microseconds the guest was stopped since the last call (STOP→RESUME pairs).
    fn stopped_us(&mut self) -> u64 {
        // Any command pumps the events that arrived meanwhile.
        self.rig.qmp().query_status().unwrap();
        let mut total = 0;
        let mut since = None;
        for e in self.rig.qmp().take_events() {
            match e.name.as_str() {
                "STOP" => since = Some(e.timestamp_us),
                "RESUME" => {
                    if let Some(s) = since.take() {
                        total += e.timestamp_us.saturating_sub(s);
                    }
                }
                _ => {}
            }
        }
        total
    }
}

/// Runs `op`, printing its wall time and the guest's stopped time.
fn measure(vm: &mut Vm, what: &str, op: impl FnOnce()) -> (Duration, u64) {
    vm.stopped_us();
    let started = Instant::now();
    op();
    let wall = started.elapsed();
    let stopped = vm.stopped_us();
    println!(
        "{what:<48} {:>8.1} ms   guest stopped {:>6} µs",
        wall.as_secs_f64() * 1e3,
        stopped
    );
    (wall, stopped)
}

fn domain(disks: &[PathBuf], socket: &Path) -> (Domain, QemuHandle) {
    let mut xml = String::from("<domain type='qemu'><name>bench</name><devices>");
    for (i, p) in disks.iter().enumerate() {
        xml.push_str(&format!(
            "<disk snapshot='external'><source file='{}'/><target dev='vd{i}'/></disk>",
            p.display()
        ));
    }
    xml.push_str(&format!(
        "</devices><qmp socket='{}'/></domain>",
        socket.display()
    ));
    let backend = QemuBackend::open_xml(&xml).unwrap();
    let handle = backend.handle();
    (Domain::ephemeral(&xml, Box::new(backend)).unwrap(), handle)
}

fn snap(d: &mut Domain, name: &str) -> Uuid {
    d.create_snapshot(&format!(
        "<domainsnapshot><name>{name}</name></domainsnapshot>"
    ))
    .unwrap()
}

fn main() {
    if !rig::qemu_available() {
        snaptree_tests::skip::cannot_run(
            "the live_chain benchmark",
            "qemu-system-x86_64, qemu-img or qemu-io is not on PATH",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disks: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("d{i}.qcow2")))
        .collect();
    let mut b = Rig::builder(dir.path());
    for (i, p) in disks.iter().enumerate() {
        qi::create(p, SIZE).unwrap();
        b = b.disk(&format!("vd{i}"), p);
    }
    let rig = b.start().unwrap();
    let qoms = rig.disks().iter().map(|d| d.qom_path()).collect();
    let mut vm = Vm { rig, qoms };
    println!("accelerator: {:?}", vm.rig.accel());
    let (mut d, handle) = domain(&disks, vm.rig.spare_socket());
    vm.write(0x10, 0, 16);

    let mut creates = Vec::new();
    let mut snaps = Vec::new();
    for r in 0..ROUNDS {
        vm.write(0x20 + r as u8, 16 + 4 * r as u64, 4);
        let mut u = Uuid::nil();
        creates.push(measure(
            &mut vm,
            &format!("create (2 disks, round {r})"),
            || {
                u = snap(&mut d, &format!("s{r}"));
            },
        ));
        snaps.push(u);
    }
    let mean = creates.iter().map(|c| c.0.as_secs_f64()).sum::<f64>() / ROUNDS as f64;
    println!("create: mean {:.1} ms over {ROUNDS}", mean * 1e3);

    // Merge the newest into its parent (intermediate commit of 4 MiB per disk).
    vm.write(0x50, 40, 4);
    let top = snaps.pop().unwrap();
    measure(
        &mut vm,
        "merge, intermediate commit (4 MiB per disk)",
        || {
            d.delete(&top, DeleteMode::Merge, &mut NoProgress).unwrap();
        },
    );

    // Consolidate the current layer under 8 MiB of live data: stream, then pivot.
    vm.write(0x60, 44, 8);
    let cur = snaps.pop().unwrap();
    handle.set_consolidate_policy(ConsolidatePolicy::AlwaysRebase);
    measure(
        &mut vm,
        "consolidate, stream (layer 8 MiB per disk)",
        || {
            d.delete(&cur, DeleteMode::Consolidate, &mut NoProgress)
                .unwrap();
        },
    );
    let fresh = snap(&mut d, "p");
    vm.write(0x70, 52, 8);
    handle.set_consolidate_policy(ConsolidatePolicy::AlwaysCommit);
    measure(
        &mut vm,
        "consolidate, active commit + pivot (live 8 MiB)",
        || {
            d.delete(&fresh, DeleteMode::Consolidate, &mut NoProgress)
                .unwrap();
        },
    );
    handle.set_consolidate_policy(ConsolidatePolicy::Cheapest);
    measure(&mut vm, "delete-all, detach stream (whole chain)", || {
        d.delete_all(&mut NoProgress).unwrap();
    });
}
