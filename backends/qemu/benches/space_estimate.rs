//! Benchmark (numbers, not pass/fail): how close `--dry-run`'s space estimate
//! (SEMANTICS.md §7.7) comes to what each operation then wrote, on mixed random trees in
//! both storage modes. `cargo bench -p snaptree-backend-qemu --bench space_estimate`
//! (`SNAPTREE_SPACE_TREES` trees per mode, default 12).
//!
//! What an operation wrote is measured outside the code under test: every inode in the
//! domain's directory before and after (`st_blocks`), summing each inode's growth (a new
//! one grows from 0; a file renamed over another keeps its inode, so a commit's target is
//! seen growing, not appearing). The target: within 10 % of that, plus one cluster
//! (64 KiB) per layer of the domain.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use snaptree_backend_qemu::QemuBackend;
use snaptree_engine::{DeleteMode, Domain, NoProgress, Plan};
use snaptree_qemu_img as qi;

const MIB: u64 = 1024 * 1024;
const CLUSTER: u64 = 64 * 1024;
const DISK: u64 = 64 * MIB;

/// A small deterministic generator (xorshift), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Blocks per inode of every file under `dir`.
fn inodes(dir: &Path, out: &mut BTreeMap<u64, u64>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = std::fs::symlink_metadata(&p).unwrap();
        if m.is_dir() {
            inodes(&p, out);
        } else {
            out.insert(m.ino(), m.blocks() * 512);
        }
    }
}

fn grown(before: &BTreeMap<u64, u64>, after: &BTreeMap<u64, u64>) -> u64 {
    after
        .iter()
        .map(|(ino, b)| b.saturating_sub(*before.get(ino).unwrap_or(&0)))
        .sum()
}

/// A random tree: 3–7 snapshots, 1–3 random writes of 1–6 MiB before each, a revert to a
/// random earlier snapshot (a branch) one time in three.
fn tree(rng: &mut Rng, disk: &Path, d: &mut Domain) -> Vec<String> {
    let mut names = Vec::new();
    let n = 3 + rng.below(5);
    for i in 0..n {
        for _ in 0..1 + rng.below(3) {
            let len = (1 + rng.below(6)) * MIB;
            let at = rng.below((DISK - len) / CLUSTER) * CLUSTER;
            let pattern = 1 + rng.below(250) as u8;
            qi::io_write_pattern(disk, pattern, at, len).unwrap();
        }
        let name = format!("s{i}");
        d.create_snapshot(&format!(
            "<domainsnapshot><name>{name}</name></domainsnapshot>"
        ))
        .unwrap();
        names.push(name);
        if rng.below(3) == 0 && names.len() > 1 {
            let back = &names[rng.below(names.len() as u64 - 1) as usize];
            let u = uuid(d, back);
            d.revert(&u, None, &mut NoProgress).unwrap();
        }
    }
    // Live data on top.
    qi::io_write_pattern(disk, 0xee, rng.below(32) * MIB, MIB).unwrap();
    names
}

fn uuid(d: &mut Domain, name: &str) -> snaptree_engine::Uuid {
    let dom = d.name().to_string();
    d.tree().unwrap().require_name(name, &dom).unwrap().uuid
}

/// Operation `k` (create, then each physical delete mode in turn) on a random snapshot,
/// planned; `None` when it does not apply to that snapshot.
fn pick(k: usize, rng: &mut Rng, d: &mut Domain, names: &[String]) -> Option<(String, Plan)> {
    let modes = [
        DeleteMode::Merge,
        DeleteMode::MergeForce,
        DeleteMode::Discard,
        DeleteMode::DiscardForce,
        DeleteMode::Consolidate,
        DeleteMode::ChildrenOnly,
    ];
    let k = k % (modes.len() + 1);
    if k == modes.len() {
        let plan = d
            .plan_create("<domainsnapshot><name>n</name></domainsnapshot>")
            .ok()?;
        return Some(("create".into(), plan));
    }
    let name = &names[rng.below(names.len() as u64) as usize];
    let u = uuid(d, name);
    let plan = d.plan_delete(&u, modes[k]).ok()?;
    Some((format!("delete {} {name}", modes[k].flag_name()), plan))
}

fn run(d: &mut Domain, what: &str, plan: &Plan) {
    match plan.operation {
        snaptree_engine::Operation::Create { .. } => {
            d.create_snapshot("<domainsnapshot><name>n</name></domainsnapshot>")
                .unwrap();
        }
        snaptree_engine::Operation::Delete { snapshot, mode } => {
            d.delete(&snapshot, mode, &mut NoProgress).unwrap();
        }
        _ => panic!("unexpected plan for {what}"),
    }
}

fn main() {
    let trees: u64 = std::env::var("SNAPTREE_SPACE_TREES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    println!("space estimate vs written (bytes), {trees} random trees per mode");
    println!(
        "{:<9} {:<28} {:>6} {:>11} {:>11} {:>8} {:>6}",
        "mode", "operation", "layers", "estimate", "written", "error", "within"
    );
    for mode in ["external", "internal"] {
        let mut rng = Rng(0x5eed_0000 + mode.len() as u64);
        let (mut n, mut ok, mut worst) = (0, 0, 0.0f64);
        for t in 0..trees {
            let dir = tempfile::tempdir().unwrap();
            let disk = dir.path().join("d.qcow2");
            qi::create(&disk, DISK).unwrap();
            let xml = format!(
                "<domain type='qemu'><name>b</name><devices><disk snapshot='{mode}'><source file='{}'/><target dev='vda'/></disk></devices></domain>",
                disk.display()
            );
            let mut d =
                Domain::ephemeral(&xml, Box::new(QemuBackend::open(&xml).unwrap())).unwrap();
            let names = tree(&mut rng, &disk, &mut d);
            let Some((what, plan)) =
                (0..8).find_map(|_| pick(t as usize, &mut rng, &mut d, &names))
            else {
                continue;
            };
            let estimate: u64 = d
                .estimate_space(&plan)
                .unwrap()
                .expect("offline steps are estimated")
                .file_systems
                .iter()
                .map(|f| f.written)
                .sum();
            let layers = names.len() as u64 + 1;
            let mut before = BTreeMap::new();
            inodes(dir.path(), &mut before);
            run(&mut d, &what, &plan);
            let mut after = BTreeMap::new();
            inodes(dir.path(), &mut after);
            let written = grown(&before, &after);
            let allowed = written / 10 + CLUSTER * layers;
            let within = estimate.abs_diff(written) <= allowed;
            let error = if written == 0 {
                0.0
            } else {
                (estimate as f64 - written as f64) / written as f64 * 100.0
            };
            n += 1;
            ok += usize::from(within);
            if written >= MIB {
                worst = worst.max(error.abs());
            }
            println!(
                "{mode:<9} {what:<28} {layers:>6} {estimate:>11} {written:>11} {error:>7.1}% {:>6}",
                if within { "yes" } else { "NO" }
            );
        }
        println!(
            "{mode}: {ok}/{n} within 10 % + 1 cluster per layer; worst error where >= 1 MiB was written: {worst:.1} %"
        );
    }
}
