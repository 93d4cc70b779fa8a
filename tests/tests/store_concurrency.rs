//! Several processes mutating one domain at once.
//!
//! Every worker logs each acknowledged operation with the generation its commit produced
//! and its exact metadata edits. Since every commit of the domain bumps the generation by
//! one under the domain lock, the logged generations of all workers together must be
//! exactly 1..=G (G the final generation): a missing number is a commit nobody acknowledged
//! (or a lost one), a repeated number an operation applied twice. Replaying the logged
//! edits in generation order on an empty tree must then give exactly the stored tree —
//! names, parents, sibling order, current, retired — so no acknowledged operation was lost
//! and none had an effect it did not report.

use std::collections::BTreeSet;
use std::process::Command;

use snaptree_engine::planner::apply_edits;
use snaptree_engine::{Edit, SnapshotTree, Uuid};
use snaptree_tests::{Canon, both_stores, check_invariants, fresh};

const WORKER: &str = env!("CARGO_BIN_EXE_store-worker");
const WORKERS: usize = 6;
const OPS_EACH: usize = 300;

#[derive(serde::Deserialize)]
struct Logged {
    #[serde(rename = "gen")]
    generation: u64,
    edits: Vec<Edit>,
    #[serde(skip)]
    worker: usize,
}

both_stores! {
    fn processes_mutating_one_domain_lose_and_duplicate_nothing(dir) {
        mutate_and_replay(dir, WORKERS, OPS_EACH, false);
    }
}

/// Several hosts on one PostgreSQL database: processes with their own state directories
/// (each redirected to the same database) and their own names, 4 x 50 random operations.
#[test]
fn hosts_sharing_one_postgresql_lose_and_duplicate_nothing() {
    let Some(rig) = snaptree_tests::pg_rig::PgRig::shared("hosts sharing one PostgreSQL") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(snaptree_tests::redirect_file(&dir), rig.fresh_db()).unwrap();
    mutate_and_replay(&dir, 4, 50, true);
}

/// `workers` processes run `ops` random operations each on one domain of `dir`'s store
/// (each from a state directory of its own when `hosts`), then their logs are replayed.
fn mutate_and_replay(dir: &std::path::Path, workers: usize, ops: usize, hosts: bool) {
    let logs = tempfile::tempdir().unwrap();
    let c = fresh(dir, "shared");
    let children: Vec<_> = (0..workers)
        .map(|i| {
            let log = logs.path().join(format!("log-{i}.jsonl"));
            let own = if hosts {
                // A host of its own: its own state directory, the shared store.
                let own = logs.path().join(format!("host-{i}"));
                std::fs::create_dir_all(&own).unwrap();
                std::fs::copy(
                    snaptree_tests::redirect_file(dir),
                    snaptree_tests::redirect_file(&own),
                )
                .unwrap();
                own
            } else {
                dir.to_path_buf()
            };
            let child = Command::new(WORKER)
                .args([
                    "random",
                    own.to_str().unwrap(),
                    "shared",
                    &i.to_string(),
                    &ops.to_string(),
                    &(0x5eed_0000 + i as u64 * 7919).to_string(),
                    log.to_str().unwrap(),
                ])
                .spawn()
                .unwrap();
            (child, log)
        })
        .collect();
    let mut logged: Vec<Logged> = Vec::new();
    for (worker, (mut child, log)) in children.into_iter().enumerate() {
        let status = child.wait().unwrap();
        assert!(status.success(), "a worker failed: {status:?}");
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        for line in text.lines() {
            let mut l: Logged = serde_json::from_str(line).unwrap();
            l.worker = worker;
            logged.push(l);
        }
    }
    let mut d = c.open_domain("shared").unwrap();
    let stored = d.tree().unwrap().clone();
    check_invariants(&stored).unwrap();
    let final_generation = d.generation().unwrap();

    // Every commit acknowledged exactly once.
    logged.sort_by_key(|l| l.generation);
    let gens: Vec<u64> = logged.iter().map(|l| l.generation).collect();
    assert_eq!(
        gens,
        (1..=final_generation).collect::<Vec<_>>(),
        "commits and acknowledgements differ"
    );
    assert!(
        logged.len() > workers * ops / 2,
        "only {} operations succeeded",
        logged.len()
    );
    // The workers really ran at the same time: commits of different workers interleave.
    // Workers run one after another would switch `workers - 1` times; more than `workers`
    // switches is interleaving (how much depends on the machine's load: on a shared
    // PostgreSQL under load, 14 switches in 176 commits were seen).
    let switches = logged
        .windows(2)
        .filter(|w| w[0].worker != w[1].worker)
        .count();
    eprintln!(
        "{} commits, {switches} switches between workers",
        logged.len()
    );
    assert!(
        switches > workers,
        "the workers barely overlapped ({switches} switches)"
    );

    // Replaying the acknowledged edits in commit order gives exactly the stored tree.
    let mut replay = SnapshotTree::new();
    for l in &logged {
        apply_edits(&mut replay, &l.edits)
            .unwrap_or_else(|e| panic!("replay of generation {}: {e}", l.generation));
    }
    assert_eq!(Canon::of(&replay), Canon::of(&stored));

    // And the simple accounting: acknowledged creates minus acknowledged removals.
    let mut created = BTreeSet::new();
    let mut removed = BTreeSet::new();
    for e in logged.iter().flat_map(|l| &l.edits) {
        match e {
            Edit::Add { snapshot, .. } => assert!(created.insert(snapshot.uuid), "created twice"),
            Edit::Remove { snapshot } => assert!(removed.insert(*snapshot), "removed twice"),
            _ => {}
        }
    }
    let present: BTreeSet<Uuid> = stored.iter().map(|s| s.uuid).collect();
    assert_eq!(
        present,
        created
            .difference(&removed)
            .copied()
            .collect::<BTreeSet<_>>()
    );
    // Every worker's snapshots carry its prefix: all of them took part.
    for i in 0..workers {
        let prefix = format!("p{i}-");
        assert!(
            logged.iter().flat_map(|l| &l.edits).any(
                |e| matches!(e, Edit::Add { snapshot, .. } if snapshot.name.starts_with(&prefix))
            ),
            "worker {i} created nothing"
        );
    }
}
