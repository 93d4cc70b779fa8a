//! Benchmark (not a timed test): `cargo bench -p snaptree-backend-qemu`.
//!
//! 1. The engine's own time on top of the qemu-img / qemu-io commands it runs: each
//!    operation's wall time against the time spent waiting for those subprocesses, through
//!    the durable store (SQLite journal) and through an in-memory domain, and the engine's
//!    time per operation. Target (issue 20): ≤ 3 %.
//! 2. Bytes moved by consolidate with the per-disk choice (cheapest) against always
//!    committing and always rebasing, on trees where the choice matters.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snaptree_backend_qemu::{ConsolidatePolicy, QemuBackend, QemuHandle, QemuProvider};
use snaptree_engine::conn::Connection;
use snaptree_engine::{DeleteMode, Domain, NoProgress, Uuid};
use snaptree_qemu_img as qi;

const MIB: u64 = 1024 * 1024;

fn disks(dir: &Path, size: u64) -> (Vec<PathBuf>, String) {
    let modes = ["external", "internal"];
    let mut xml = String::from("<domain type='qemu'><name>bench</name><devices>");
    let mut paths = Vec::new();
    for (i, m) in modes.iter().enumerate() {
        let p = dir.join(format!("d{i}.qcow2"));
        qi::create(&p, size).unwrap();
        xml.push_str(&format!(
            "<disk snapshot='{m}'><source file='{}'/><target dev='vd{i}'/></disk>",
            p.display()
        ));
        paths.push(p);
    }
    xml.push_str("</devices></domain>");
    (paths, xml)
}

/// Per operation kind: runs, wall time, time in qemu-img/qemu-io, time in the backend's own
/// file-system calls — renames, deletions of freed layers, fsyncs (part of the engine's time).
#[derive(Default)]
struct Tally {
    rows: Vec<(String, u32, Duration, Duration, Duration)>,
}

impl Tally {
    fn time(&mut self, what: &str, h: &QemuHandle, f: impl FnOnce()) {
        let before = h.stats();
        let t0 = Instant::now();
        f();
        let wall = t0.elapsed();
        let after = h.stats();
        let qemu = after.qemu_time - before.qemu_time;
        let sync = after.fs_time - before.fs_time;
        match self.rows.iter_mut().find(|r| r.0 == what) {
            Some(r) => {
                r.1 += 1;
                r.2 += wall;
                r.3 += qemu;
                r.4 += sync;
            }
            None => self.rows.push((what.to_string(), 1, wall, qemu, sync)),
        }
    }

    fn print(&self, title: &str) {
        println!("\n{title}");
        println!(
            "{:<22} {:>5} {:>10} {:>10} {:>10} {:>9} {:>10} {:>11}",
            "operation",
            "runs",
            "wall ms",
            "qemu ms",
            "engine ms",
            "engine %",
            "(fs ms)",
            "engine/run"
        );
        let (mut w, mut q, mut f) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
        for (what, n, wall, qemu, sync) in &self.rows {
            row(what, *n, *wall, *qemu, *sync);
            w += *wall;
            q += *qemu;
            f += *sync;
        }
        row("TOTAL", self.rows.iter().map(|r| r.1).sum(), w, q, f);
    }
}

fn row(what: &str, n: u32, wall: Duration, qemu: Duration, sync: Duration) {
    let engine = wall.saturating_sub(qemu);
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    // The share falls as the engine gets faster and rises as qemu-img does: the engine's
    // time per operation is printed beside it, in ms.
    println!(
        "{what:<22} {n:>5} {:>10.1} {:>10.1} {:>10.2} {:>8.2}% {:>10.2} {:>11.2}",
        ms(wall),
        ms(qemu),
        ms(engine),
        100.0 * engine.as_secs_f64() / wall.as_secs_f64(),
        ms(sync),
        ms(engine) / f64::from(n.max(1))
    );
}

/// A realistic session: snapshots with guest data between them, reverts, and every kind of
/// delete, on a 64 MiB external disk and a 64 MiB internal disk.
fn session(d: &mut Domain, h: &QemuHandle, disks: &[PathBuf], t: &mut Tally) {
    let write = |n: u64| {
        for disk in disks {
            qi::io_write_pattern(disk, (n % 250) as u8 + 1, (n % 8) * 4 * MIB, 4 * MIB).unwrap();
        }
    };
    let mut names = Vec::new();
    for i in 0..8u64 {
        write(i);
        let name = format!("s{i}");
        t.time("create", h, || {
            d.create_snapshot(&format!(
                "<domainsnapshot><name>{name}</name></domainsnapshot>"
            ))
            .unwrap();
        });
        names.push(name);
        if i == 4 {
            let u = uuid(d, "s2");
            t.time("revert", h, || {
                drop(d.revert(&u, None, &mut NoProgress).unwrap())
            });
        }
    }
    write(100);
    for (name, mode) in [
        ("s1", DeleteMode::Retire),
        ("s7", DeleteMode::Discard),
        ("s3", DeleteMode::Consolidate),
        ("s6", DeleteMode::Merge),
        ("s2", DeleteMode::ChildrenOnly),
        ("s5", DeleteMode::Consolidate),
    ] {
        if d.tree().unwrap().by_name(name).is_none() {
            continue;
        }
        let u = uuid(d, name);
        t.time(&format!("delete {}", mode.flag_name()), h, || {
            drop(d.delete(&u, mode, &mut NoProgress).unwrap())
        });
    }
    let u = uuid(d, "s0");
    t.time("revert", h, || {
        drop(d.revert(&u, None, &mut NoProgress).unwrap())
    });
    t.time("delete-all", h, || {
        drop(d.delete_all(&mut NoProgress).unwrap())
    });
}

fn uuid(d: &mut Domain, name: &str) -> Uuid {
    d.tree().unwrap().by_name(name).unwrap().uuid
}

fn overhead() {
    const ROUNDS: usize = 3;
    let mut durable = Tally::default();
    let mut memory = Tally::default();
    for _ in 0..ROUNDS {
        // Through the durable store: the SQLite intent journal and commit are engine time.
        let dir = tempfile::tempdir().unwrap();
        let (paths, xml) = disks(dir.path(), 64 * MIB);
        let conn = Connection::open(Some(&dir.path().join("state"))).unwrap();
        conn.register_provider("qemu", Arc::new(QemuProvider));
        conn.define_domain(&xml).unwrap();
        let backend = QemuBackend::open(&xml).unwrap();
        let h = backend.handle();
        let mut d = conn
            .open_domain_with_backend("bench", Box::new(backend))
            .unwrap();
        session(&mut d, &h, &paths, &mut durable);

        let dir = tempfile::tempdir().unwrap();
        let (paths, xml) = disks(dir.path(), 64 * MIB);
        let backend = QemuBackend::open(&xml).unwrap();
        let h = backend.handle();
        let mut d = Domain::ephemeral(&xml, Box::new(backend)).unwrap();
        session(&mut d, &h, &paths, &mut memory);
    }
    durable.print(&format!(
        "engine overhead, durable SQLite store ({ROUNDS} sessions, 2 disks of 64 MiB)"
    ));
    memory.print(&format!(
        "engine overhead, in-memory domain ({ROUNDS} sessions)"
    ));
}

/// A chain root → child with `root_mib` and `child_mib` of own data on one external disk;
/// consolidating the root moves either the child's data (commit) or the root's (rebase).
fn consolidate_bytes(policy: ConsolidatePolicy, trees: &[(u64, u64)]) -> (u64, Duration) {
    let mut moved = 0;
    let mut time = Duration::ZERO;
    for (root_mib, child_mib) in trees {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("d.qcow2");
        qi::create(&disk, 128 * MIB).unwrap();
        let xml = format!(
            "<domain type='qemu'><name>c</name><devices><disk><source file='{}'/></disk></devices></domain>",
            disk.display()
        );
        let backend = QemuBackend::open(&xml).unwrap();
        let h = backend.handle();
        h.set_consolidate_policy(policy);
        h.set_measure_moved_bytes(true);
        let mut d = Domain::ephemeral(&xml, Box::new(backend)).unwrap();
        qi::io_write_pattern(&disk, 0x11, 0, root_mib * MIB).unwrap();
        let root = d
            .create_snapshot("<domainsnapshot><name>root</name></domainsnapshot>")
            .unwrap();
        qi::io_write_pattern(&disk, 0x22, 64 * MIB, child_mib * MIB).unwrap();
        d.create_snapshot("<domainsnapshot><name>child</name></domainsnapshot>")
            .unwrap();
        qi::io_write_pattern(&disk, 0x33, 127 * MIB, MIB).unwrap();
        h.reset_stats();
        let t0 = Instant::now();
        d.delete(&root, DeleteMode::Consolidate, &mut NoProgress)
            .unwrap();
        time += t0.elapsed();
        moved += h.stats().bytes_moved();
    }
    (moved, time)
}

fn bytes_moved() {
    let trees = [(48, 1), (1, 48), (32, 2), (2, 32)];
    println!("\nconsolidate of a root with one child, trees (root MiB, child MiB) = {trees:?}");
    println!("{:<16} {:>14} {:>10}", "policy", "MiB moved", "ms");
    for policy in [
        ConsolidatePolicy::Cheapest,
        ConsolidatePolicy::AlwaysCommit,
        ConsolidatePolicy::AlwaysRebase,
    ] {
        let (moved, time) = consolidate_bytes(policy, &trees);
        println!(
            "{:<16} {:>14.1} {:>10.1}",
            format!("{policy:?}"),
            moved as f64 / MIB as f64,
            time.as_secs_f64() * 1e3
        );
    }
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too: keep it short then.
    if std::env::args().any(|a| a == "--bench") {
        overhead();
        bytes_moved();
    } else {
        println!("run with `cargo bench -p snaptree-backend-qemu`");
    }
}
