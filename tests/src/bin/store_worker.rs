//! Child process of the store tests. Usage: `store-worker MODE ARGS...`
//!
//! - `random DIR DOMAIN ID OPS SEED LOG`: OPS random operations; every acknowledged one is
//!   appended to LOG as a JSON line `{"gen": G, "edits": [...]}` (the generation its commit
//!   produced and its exact metadata edits).
//! - `crash DIR DOMAIN OP K AFTER ACTION`: runs OP (see `snaptree_tests::OPS`) through a
//!   `FaultyBackend` around the null backend armed at step K (AFTER: 1 = after the step ran),
//!   ACTION `abort` or `stall` (print the marker and wait to be killed).
//! - `create DIR DOMAIN NAME`: takes a snapshot; prints `GEN g`.
//! - `names DIR DOMAIN`: prints `GEN g`, then every snapshot name in creation order.
//! - `hold-lock DIR DOMAIN MS`: holds the domain's lock for MS ms (prints `LOCKED` once held).
//! - `try-create DIR DOMAIN NAME`: prints `OK` or `ERR CODE MESSAGE`.
//! - `setup DIR DOMAIN`: opens DIR, defines DOMAIN (null) and takes one snapshot.
//! - `crash-sim DIR DOMAIN OP K AFTER`: as `crash ... stall`, but on the domain's C sim
//!   plugin backend (its layer files survive the kill): runs OP (without the guest write
//!   of `create`) through a `FaultyBackend` around the plugin armed at step K; prints the
//!   stall marker and waits to be killed.
//! - `run-sim DIR DOMAIN OP`: opens the domain on the C sim plugin, prints `START`, runs OP
//!   (without the guest write of `create`), prints `DONE n` (n: the plan's steps).
//! - `signal-writer DIR DOMAIN PREFIX N POINT SKIP`: takes N snapshots named PREFIX-i; with
//!   POINT a commit point (`snaptree_engine::testing::CommitPoint::name`, or `none`), the
//!   (SKIP+1)-th commit stalls there (prints the stall marker and the point) to be killed.
//!   Prints `DONE` at the end.
//! - `signal-reader DIR DOMAIN STOPFILE`: until STOPFILE exists, reads the domain's
//!   generation and snapshot count straight from SQLite (its own connection, no engine
//!   code), then the tree through one long-lived engine handle, and checks the handle is
//!   at least as new. Prints `OK iterations` or `MISSED ...` (exit status 1).

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use snaptree_engine::testing::{CommitPoint, Fault, FaultAction, FaultSwitch, FaultyBackend};
use snaptree_engine::{
    Connection, DeleteMode, Edit, ErrorCode, NoProgress, NullBackend, PowerState, Uuid,
};

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

fn open(dir: &str) -> Connection {
    Connection::open(Some(&snaptree_tests::store_of(Path::new(dir))))
        .unwrap_or_else(|e| panic!("open {dir}: {}", e.full_message()))
}

fn random(
    dir: &str,
    domain: &str,
    id: &str,
    ops: usize,
    seed: u64,
    log: &str,
) -> Result<(), String> {
    let conn = open(dir);
    let mut d = conn.open_domain(domain).map_err(|e| e.full_message())?;
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| e.to_string())?;
    let mut rng = Rng(seed | 1);
    let mut mine: Vec<Uuid> = Vec::new();
    let mut created = 0;
    for _ in 0..ops {
        let view: Vec<Uuid> = d
            .tree()
            .map_err(|e| e.full_message())?
            .iter()
            .map(|s| s.uuid)
            .collect();
        let roll = rng.below(100);
        let result: snaptree_engine::Result<Vec<Edit>> = if roll < 40 || view.is_empty() {
            let name = format!("p{id}-{created}");
            created += 1;
            d.create_snapshot(&format!(
                "<domainsnapshot><name>{name}</name></domainsnapshot>"
            ))
            .map(|u| {
                // This handle's tree is exactly the one the commit produced: no refresh
                // happened since.
                let t = d.cached_tree();
                let snapshot = t.get(&u).expect("created snapshot in the tree").clone();
                let parent = t.parent(&u).map(|p| p.uuid);
                mine.push(u);
                vec![
                    Edit::Add { snapshot, parent },
                    Edit::SetCurrent { current: Some(u) },
                ]
            })
        } else if roll < 55 && !mine.is_empty() {
            let u = mine[rng.below(mine.len())];
            d.rename(&u, &format!("p{id}-r{}", rng.next() % 1_000_000))
                .map(|p| p.edits)
        } else if roll < 70 {
            let u = view[rng.below(view.len())];
            let force = [None, Some(PowerState::Running), Some(PowerState::Paused)][rng.below(3)];
            d.revert(&u, force, &mut NoProgress).map(|p| p.edits)
        } else {
            let u = view[rng.below(view.len())];
            let mode = DeleteMode::ALL[rng.below(DeleteMode::ALL.len())];
            d.delete(&u, mode, &mut NoProgress).map(|p| p.edits)
        };
        match result {
            Ok(edits) => {
                let generation = d.generation().ok_or("no generation")?;
                let line = serde_json::json!({ "gen": generation, "edits": edits });
                writeln!(log, "{line}").map_err(|e| e.to_string())?;
            }
            Err(e) if matches!(e.code(), ErrorCode::NoSnapshot | ErrorCode::WouldDiscard) => {}
            Err(e) => return Err(format!("worker {id}: {}", e.full_message())),
        }
        if let Err(why) = snaptree_tests::check_invariants(d.cached_tree()) {
            return Err(format!("worker {id}: invariant broken: {why}"));
        }
    }
    log.flush().map_err(|e| e.to_string())
}

fn crash(
    dir: &str,
    domain: &str,
    op: &str,
    k: usize,
    after: bool,
    action: &str,
) -> Result<(), String> {
    let conn = open(dir);
    let switch = FaultSwitch::new();
    let mut d = conn
        .open_domain_with_backend(
            domain,
            Box::new(FaultyBackend::new(
                Box::new(NullBackend::new()),
                switch.clone(),
            )),
        )
        .map_err(|e| e.full_message())?;
    let action = match action {
        "abort" => FaultAction::Abort,
        "stall" => FaultAction::Stall,
        other => return Err(format!("unknown action {other}")),
    };
    switch.arm(Fault {
        at_step: k,
        action,
        after_step: after,
    });
    let r = snaptree_tests::run_op(&mut d, op);
    Err(format!(
        "the operation {op} was not interrupted at step {k}: {:?}",
        r.map(|p| p.steps.len())
    ))
}

fn crash_sim(dir: &str, domain: &str, op: &str, k: usize, after: bool) -> Result<(), String> {
    let conn = snaptree_tests::sim_connection(Path::new(dir));
    let xml = conn.domain_xml(domain).map_err(|e| e.full_message())?;
    let plugin = snaptree_tests::sim_plugin()
        .open_domain(&xml)
        .map_err(|e| e.full_message())?;
    let switch = FaultSwitch::new();
    let mut d = conn
        .open_domain_with_backend(
            domain,
            Box::new(FaultyBackend::new(Box::new(plugin), switch.clone())),
        )
        .map_err(|e| e.full_message())?;
    switch.arm(Fault {
        at_step: k,
        action: FaultAction::Stall,
        after_step: after,
    });
    let r = snaptree_tests::run_op_without_writes(&mut d, op);
    Err(format!(
        "the operation {op} was not interrupted at step {k}: {:?}",
        r.map(|p| p.steps.len()).map_err(|e| e.full_message())
    ))
}

fn run_sim(dir: &str, domain: &str, op: &str) -> Result<(), String> {
    let conn = snaptree_tests::sim_connection(Path::new(dir));
    let mut d = conn.open_domain(domain).map_err(|e| e.full_message())?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "START").map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())?;
    let plan = snaptree_tests::run_op_without_writes(&mut d, op).map_err(|e| e.full_message())?;
    writeln!(out, "DONE {}", plan.steps.len()).map_err(|e| e.to_string())?;
    out.flush().map_err(|e| e.to_string())
}

fn signal_writer(
    dir: &str,
    domain: &str,
    prefix: &str,
    n: usize,
    point: &str,
    skip: usize,
) -> Result<(), String> {
    if point != "none" {
        let p = CommitPoint::ALL
            .into_iter()
            .find(|p| p.name() == point)
            .ok_or_else(|| format!("no commit point '{point}'"))?;
        snaptree_engine::testing::stall_at_commit_point(p, skip);
    }
    let conn = open(dir);
    let mut d = conn.open_domain(domain).map_err(|e| e.full_message())?;
    for i in 0..n {
        d.create_snapshot(&format!(
            "<domainsnapshot><name>{prefix}-{i}</name></domainsnapshot>"
        ))
        .map_err(|e| e.full_message())?;
    }
    println!("DONE");
    Ok(())
}

fn signal_reader(dir: &str, domain: &str, stop: &str) -> Result<(), String> {
    let conn = open(dir);
    let mut d = conn.open_domain(domain).map_err(|e| e.full_message())?;
    let mut oracle = snaptree_tests::Oracle::open(Path::new(dir));
    let mut iterations = 0u64;
    while !Path::new(stop).exists() {
        // First what is committed now, then the handle: a handle that shows anything older
        // missed a commit.
        let (generation, count) = oracle.generation_and_count(domain);
        let len = d.tree().map_err(|e| e.full_message())?.len();
        let seen = d.generation().unwrap_or(0);
        if seen < generation || (seen == generation && len != count) || len < count {
            println!(
                "MISSED: the store has generation {generation} with {count} snapshots, the handle \
                 generation {seen} with {len}, after {iterations} reads"
            );
            return Err("a reader missed a commit".into());
        }
        iterations += 1;
    }
    println!("OK {iterations}");
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = |i: usize| {
        args.get(i)
            .map(String::as_str)
            .unwrap_or_else(|| panic!("missing argument {i}: {args:?}"))
    };
    let result = match a(0) {
        "random" => random(
            a(1),
            a(2),
            a(3),
            a(4).parse().unwrap(),
            a(5).parse().unwrap(),
            a(6),
        ),
        "crash" => crash(a(1), a(2), a(3), a(4).parse().unwrap(), a(5) == "1", a(6)),
        "crash-sim" => crash_sim(a(1), a(2), a(3), a(4).parse().unwrap(), a(5) == "1"),
        "run-sim" => run_sim(a(1), a(2), a(3)),
        "signal-writer" => signal_writer(
            a(1),
            a(2),
            a(3),
            a(4).parse().unwrap(),
            a(5),
            a(6).parse().unwrap(),
        ),
        "signal-reader" => signal_reader(a(1), a(2), a(3)),
        "create" => {
            let conn = open(a(1));
            let mut d = conn.open_domain(a(2)).unwrap();
            d.create_snapshot(&format!(
                "<domainsnapshot><name>{}</name></domainsnapshot>",
                a(3)
            ))
            .unwrap();
            println!("GEN {}", d.generation().unwrap());
            Ok(())
        }
        "names" => {
            let conn = open(a(1));
            let mut d = conn.open_domain(a(2)).unwrap();
            let t = d.tree().unwrap();
            let names: Vec<String> = t.iter().map(|s| s.name.clone()).collect();
            println!("GEN {}", d.generation().unwrap());
            for n in names {
                println!("{n}");
            }
            Ok(())
        }
        "hold-lock" => {
            let _lock = snaptree_tests::hold_lock(Path::new(a(1)), a(2));
            println!("LOCKED");
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_millis(a(3).parse().unwrap()));
            Ok(())
        }
        "try-create" => {
            let conn = open(a(1));
            let mut d = conn.open_domain(a(2)).unwrap();
            match d.create_snapshot(&format!(
                "<domainsnapshot><name>{}</name></domainsnapshot>",
                a(3)
            )) {
                Ok(_) => println!("OK"),
                Err(e) => println!("ERR {} {}", e.code().name(), e),
            }
            Ok(())
        }
        "setup" => {
            let conn = open(a(1));
            conn.define_domain(&snaptree_tests::null_domain(a(2)))
                .unwrap();
            let mut d = conn.open_domain(a(2)).unwrap();
            d.create_snapshot("<domainsnapshot><name>first</name></domainsnapshot>")
                .unwrap();
            Ok(())
        }
        other => Err(format!("unknown mode {other}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
