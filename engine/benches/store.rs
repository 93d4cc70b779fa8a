//! The durable store on the null backend at 10,000 and 100,000 snapshots (and 1,000,000 with
//! `SNAPTREE_BENCH_SIZES=10000,100000,1000000`, which `scripts/bench` sets): per-operation
//! microseconds for create, lookup, list, rename and delete, the time to open a domain, and
//! the memory a loaded snapshot costs. Not a timed test: it prints numbers.
//!
//! ```text
//! cargo bench -p snaptree-engine --bench store
//! SNAPTREE_BENCH_SIZES=1000,10000 cargo bench -p snaptree-engine --bench store
//! ```
//!
//! The open and memory figures come from a fresh child process (this binary run again),
//! so they are not polluted by building the tree.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use snaptree_engine::{
    Backend, Capabilities, Connection, DeleteMode, Filter, NoProgress, NullBackend, PhysicalTree,
    PowerState, Progress, Result, Step, Uuid,
};

const CHILD_ENV: &str = "SNAPTREE_BENCH_OPEN_CHILD";
const DOMAIN: &str = "bench";

/// /proc/self/status fields, in KiB.
fn status_kib(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// (on-CPU ns, run-queue wait ns) of this thread so far, from /proc/thread-self/schedstat.
fn schedstat() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap_or_default();
    let mut f = text
        .split_whitespace()
        .map(|v| v.parse::<u64>().unwrap_or(0));
    (f.next().unwrap_or(0), f.next().unwrap_or(0))
}

/// Wall time, time on a CPU, and time spent waiting for a CPU (other processes' load) of
/// a phase. `wall - queued` is what the phase takes on an idle machine (CPU + I/O waits).
#[derive(Clone, Copy)]
struct Phase {
    wall: Duration,
    cpu: Duration,
    queued: Duration,
}

struct Timer(Instant, (u64, u64));
impl Timer {
    fn start() -> Timer {
        Timer(Instant::now(), schedstat())
    }
    fn stop(&self) -> Phase {
        let wall = self.0.elapsed();
        let (cpu, queued) = schedstat();
        Phase {
            wall,
            cpu: Duration::from_nanos(cpu - (self.1).0),
            queued: Duration::from_nanos(queued - (self.1).1),
        }
    }
}

impl Phase {
    /// "wall µs | idle-machine µs | CPU µs" per operation.
    fn per(&self, n: usize, digits: usize) -> String {
        let idle = self.wall.saturating_sub(self.queued);
        format!(
            "{:.*} | {:.*} | {:.*}",
            digits,
            us(self.wall, n),
            digits,
            us(idle, n),
            digits,
            us(self.cpu, n)
        )
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

/// The null backend, but not metadata-only: the engine journals every plan around it, so
/// this measures the journal (with its synchronous write) on top of the commit.
struct Journaled(NullBackend);
impl Backend for Journaled {
    fn name(&self) -> &str {
        "null"
    }
    fn capabilities(&self) -> Capabilities {
        self.0.capabilities()
    }
    fn power_state(&mut self) -> Result<PowerState> {
        self.0.power_state()
    }
    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> Result<()> {
        self.0.execute(step, progress)
    }
    fn list_physical(&mut self) -> Result<PhysicalTree> {
        self.0.list_physical()
    }
}

/// Child: open the domain in a fresh process; print time and memory.
fn child(dir: &Path) {
    let rss_before = status_kib("VmRSS:");
    let t = Timer::start();
    let conn = Connection::open(Some(dir)).expect("open state dir");
    let d = conn.open_domain(DOMAIN).expect("open domain");
    let open = t.stop();
    let n = d.cached_tree().len();
    let rss_after = status_kib("VmRSS:");
    let hwm_after = status_kib("VmHWM:");
    println!(
        "OPEN {n} {} {} {} {rss_before} {rss_after} {hwm_after}",
        open.wall.as_micros(),
        open.wall.saturating_sub(open.queued).as_micros(),
        open.cpu.as_micros()
    );
    drop(d);
}

fn bench(n: usize) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("state");
    let conn = Connection::open(Some(&dir)).expect("open");
    conn.define_domain(&format!(
        "<domain type='null'><name>{DOMAIN}</name></domain>"
    ))
    .expect("define");
    let mut d = conn.open_domain(DOMAIN).expect("open domain");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);

    // create: a chain of n snapshots (each a child of the previous: current moves).
    let mut names = Vec::with_capacity(n);
    let mut uuids: Vec<Uuid> = Vec::with_capacity(n);
    let tail = 1000.min(n / 2);
    let t = Timer::start();
    let mut t_tail = None;
    let mut create_head = None;
    for i in 0..n {
        if i == tail {
            create_head = Some(t.stop());
        }
        if i == n - tail {
            t_tail = Some(Timer::start());
        }
        let name = format!("snapshot-{i:06}");
        let u = d
            .create_snapshot(&format!("<domainsnapshot><name>{name}</name><description>bench</description></domainsnapshot>"))
            .expect("create");
        names.push(name);
        uuids.push(u);
    }
    let create_all = t.stop();
    if std::env::var_os("SNAPTREE_BENCH_CREATE_ONLY").is_some() {
        println!("create: {} µs (wall | idle | CPU)", create_all.per(n, 1));
        return;
    }
    let create_tail = t_tail.expect("tail timer").stop();

    // lookup by name through a Domain read (change check + hash lookup).
    let lookups = 1_000_000;
    let picks: Vec<usize> = (0..4096).map(|_| rng.below(n)).collect();
    let t = Timer::start();
    let mut found = 0usize;
    for i in 0..lookups {
        let tree = d.tree().expect("tree");
        found += tree.by_name(&names[picks[i % picks.len()]]).is_some() as usize;
    }
    let lookup = t.stop();
    assert_eq!(found, lookups);
    // The same without the change check, to show what the check costs.
    let t = Timer::start();
    found = 0;
    for i in 0..lookups {
        found += d
            .cached_tree()
            .by_name(&names[picks[i % picks.len()]])
            .is_some() as usize;
    }
    let lookup_cached = t.stop();
    assert_eq!(found, lookups);

    // list: every snapshot, creation order, through a Domain read.
    let lists = (5_000_000 / n).max(5);
    let t = Timer::start();
    for _ in 0..lists {
        assert_eq!(d.tree().expect("tree").list(Filter::All).len(), n);
    }
    let list = t.stop();

    // rename: random snapshots to fresh names.
    let renames = 1000;
    let t = Timer::start();
    for i in 0..renames {
        let k = rng.below(n);
        d.rename(&uuids[k], &format!("renamed-{i}-{k}"))
            .expect("rename");
    }
    let rename = t.stop();

    // delete, DISCARD of the leaf (current moves to its parent).
    let deletes = 1000.min(n / 4);
    let t = Timer::start();
    for _ in 0..deletes {
        let u = uuids.pop().expect("a snapshot");
        d.delete(&u, DeleteMode::Discard, &mut NoProgress)
            .expect("delete");
    }
    let delete_leaf = t.stop();

    // delete, RETIRE of a random snapshot in the middle (children re-parented).
    let retires = 1000.min(n / 4);
    let t = Timer::start();
    for _ in 0..retires {
        let k = rng.below(uuids.len());
        let u = uuids.swap_remove(k);
        d.delete(&u, DeleteMode::Retire, &mut NoProgress)
            .expect("retire");
    }
    let retire = t.stop();

    // create through a journaled (non-metadata) backend: journal with a full sync + commit.
    let journaled = 200;
    let mut dj = conn
        .open_domain_with_backend(DOMAIN, Box::new(Journaled(NullBackend::new())))
        .expect("open");
    let t = Timer::start();
    for i in 0..journaled {
        dj.create_snapshot(&format!(
            "<domainsnapshot><name>journaled-{i}</name></domainsnapshot>"
        ))
        .expect("create");
    }
    let create_journaled = t.stop();
    drop(dj);

    // in-process reopen (warm page cache).
    drop(d);
    let t = Timer::start();
    let d = conn.open_domain(DOMAIN).expect("reopen");
    let reopen = t.stop();
    let total = d.cached_tree().len();
    drop(d);
    drop(conn);

    let db_bytes: u64 = ["snaptree.db", "snaptree.db-wal"]
        .iter()
        .map(|f| std::fs::metadata(dir.join(f)).map_or(0, |m| m.len()))
        .sum();

    // open + memory in a fresh process.
    let out = Command::new(std::env::current_exe().expect("exe"))
        .env(CHILD_ENV, &dir)
        .output()
        .expect("run child");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("OPEN "))
        .unwrap_or_else(|| panic!("child said {text:?} {:?}", out.status));
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().expect("number"))
        .collect();
    let (loaded, open_wall, open_idle, open_cpu, rss_before, rss_after, hwm_after) =
        (f[0], f[1], f[2], f[3], f[4], f[5], f[6]);
    assert_eq!(loaded as usize, total);

    println!("## {n} snapshots (a chain; {total} after the run)");
    println!();
    println!("| operation | wall | idle machine (wall − CPU queueing) | on CPU |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| create, µs, average over building 0 → {n} | {} |",
        create_all.per(n, 1)
    );
    if let Some(head) = create_head {
        println!(
            "| create, µs, first {tail} (at ~0: compare with the last, O(1) per create) | {} |",
            head.per(tail, 1)
        );
    }
    println!(
        "| create, µs, last {tail} (at ~{n}) | {} |",
        create_tail.per(tail, 1)
    );
    println!(
        "| lookup by name through `Domain::tree()` (change check + hash), µs | {} |",
        lookup.per(lookups, 2)
    );
    println!(
        "| lookup by name on the cached tree (no change check), µs | {} |",
        lookup_cached.per(lookups, 3)
    );
    println!(
        "| list all {n} through `Domain::tree()`, µs per list | {} |",
        list.per(lists, 0)
    );
    println!(
        "| rename (random snapshot), µs | {} |",
        rename.per(renames, 1)
    );
    println!(
        "| delete DISCARD (the leaf), µs | {} |",
        delete_leaf.per(deletes, 1)
    );
    println!(
        "| delete RETIRE (random snapshot, children re-parented), µs | {} |",
        retire.per(retires, 1)
    );
    println!(
        "| create through a journaled backend (journal synced + commit), µs | {} |",
        create_journaled.per(journaled, 1)
    );
    println!(
        "| open domain, fresh process, ms | {:.1} | {:.1} | {:.1} |",
        open_wall as f64 / 1000.0,
        open_idle as f64 / 1000.0,
        open_cpu as f64 / 1000.0
    );
    println!(
        "| open domain, same process (warm), ms | {} |",
        reopen.per(1000, 1)
    );
    println!();
    println!(
        "Memory per snapshot, fresh process: {:.0} bytes resident after open (VmRSS {rss_before} → {rss_after} KiB), \
         {:.0} bytes at the peak during open (VmHWM {hwm_after} KiB). Database on disk: {:.0} bytes per snapshot.",
        (rss_after.saturating_sub(rss_before)) as f64 * 1024.0 / loaded as f64,
        (hwm_after.saturating_sub(rss_before)) as f64 * 1024.0 / loaded as f64,
        db_bytes as f64 / loaded as f64
    );
    println!();
}

fn main() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        child(Path::new(&dir));
        return;
    }
    // `cargo test --benches` runs bench binaries with `--test`-ish arguments; do a small run.
    let quick = std::env::args().any(|a| a == "--test" || a == "--list");
    let sizes: Vec<usize> = match std::env::var("SNAPTREE_BENCH_SIZES") {
        Ok(v) => v.split(',').filter_map(|s| s.trim().parse().ok()).collect(),
        Err(_) if quick => vec![200],
        Err(_) => vec![10_000, 100_000],
    };
    for n in sizes {
        bench(n);
    }
}
