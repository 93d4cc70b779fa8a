//! The change signal (the counter in each domain's lock file that reads trust instead of
//! asking SQLite) never hides a commit, even one whose writer was SIGKILLed right after
//! it: writers in child processes are stopped at every point of a commit
//! (`snaptree_engine::testing::CommitPoint`) and killed there, and killed at random moments
//! while committing, while reader processes compare their long-lived handle's tree with
//! what SQLite holds (read by plain SQL, no engine code) in a tight loop.
//!
//! Without the odd value around the commit (a signal moved only after it), the kill at
//! `committed` leaves readers trusting a tree one commit old: they report `MISSED`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use snaptree_engine::testing::{CommitPoint, STALL_MARKER};

const WORKER: &str = env!("CARGO_BIN_EXE_store-worker");
const DOMAIN: &str = "vm";
const READERS: usize = 2;

fn spawn(args: &[&str]) -> Child {
    Command::new(WORKER)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the store worker")
}

/// Waits for the stall marker on the child's stdout; returns the point it names.
fn wait_for_stall(child: &mut Child) -> String {
    let out = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(out).lines();
    for line in lines.by_ref() {
        let line = line.expect("read the writer's stdout");
        if let Some(point) = line.strip_prefix(STALL_MARKER) {
            return point.trim().to_string();
        }
    }
    let status = child.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        std::io::Read::read_to_string(&mut e, &mut err).unwrap();
    }
    panic!("the writer ended ({status}) without stalling: {err}");
}

/// (generation, snapshots) from the store, by plain SQL.
fn oracle(dir: &Path) -> (u64, usize) {
    snaptree_tests::Oracle::open(dir).generation_and_count(DOMAIN)
}

snaptree_tests::both_stores! {
    /// On PostgreSQL there is no signal: the points of a commit are the same moments
    /// around its transaction, and readers ask the generation before every read.
    fn a_writer_killed_at_any_point_of_a_commit_never_hides_it_from_readers(dir) {
        let dir = dir.to_path_buf();
        let tmp = tempfile::tempdir().unwrap();
        let conn = snaptree_tests::connect(&dir);
        conn.define_domain(&snaptree_tests::null_domain(DOMAIN))
            .unwrap();
        // A long-lived handle in this process too, checked after each kill.
        let mut mine = conn.open_domain(DOMAIN).unwrap();
        let dir_s = dir.to_str().unwrap();
        let stop = tmp.path().join("stop");
        let stop_s = stop.to_str().unwrap();
        let readers: Vec<Child> = (0..READERS)
            .map(|_| spawn(&["signal-reader", dir_s, DOMAIN, stop_s]))
            .collect();

        let check_mine = |mine: &mut snaptree_engine::Domain, when: &str| {
            let (generation, count) = oracle(&dir);
            let len = mine.tree().unwrap().len();
            assert!(
                mine.generation().unwrap() >= generation && len == count,
                "{when}: SQLite has generation {generation} with {count} snapshots, this \
                 process's handle {:?} with {len}",
                mine.generation()
            );
        };

        // Every point of a commit, at the first commit of a writer and at a later one.
        let mut round = 0;
        for point in CommitPoint::ALL {
            for skip in [0usize, 3] {
                round += 1;
                let prefix = format!("k{round}");
                let mut writer = spawn(&[
                    "signal-writer",
                    dir_s,
                    DOMAIN,
                    &prefix,
                    "10",
                    point.name(),
                    &skip.to_string(),
                ]);
                assert_eq!(wait_for_stall(&mut writer), point.name());
                // Readers run while the writer is stopped there, then it dies there.
                std::thread::sleep(Duration::from_millis(30));
                writer.kill().unwrap(); // SIGKILL
                writer.wait().unwrap();
                std::thread::sleep(Duration::from_millis(20));
                check_mine(&mut mine, &format!("after a kill at '{}'", point.name()));
            }
        }

        // Kills at random moments of a stream of commits (inside SQLite's own commit too).
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..20 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let prefix = format!("r{i}");
            let mut writer = spawn(&[
                "signal-writer",
                dir_s,
                DOMAIN,
                &prefix,
                "100000",
                "none",
                "0",
            ]);
            std::thread::sleep(Duration::from_micros(2_000 + seed % 20_000));
            writer.kill().unwrap();
            writer.wait().unwrap();
            check_mine(&mut mine, &format!("after random kill {i}"));
        }

        // A clean writer settles a signal a kill left odd; readers follow it.
        let out = spawn(&["signal-writer", dir_s, DOMAIN, "last", "5", "none", "0"])
            .wait_with_output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        check_mine(&mut mine, "after a clean writer");
        if !snaptree_tests::on_postgres(&dir) {
            let lock = snaptree_engine::store::DomainLock::open(
                &dir,
                &conn.lookup_domain(DOMAIN).unwrap().uuid,
                DOMAIN,
                Duration::from_secs(1),
            )
            .unwrap();
            assert_eq!(lock.change_signal() % 2, 0, "settled by the clean writer");
        }
        std::thread::sleep(Duration::from_millis(20));

        std::fs::write(&stop, b"").unwrap();
        for r in readers {
            let out = r.wait_with_output().unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "a reader failed: {stdout}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let n: u64 = stdout
                .trim()
                .strip_prefix("OK ")
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("unexpected reader output: {stdout}"));
            assert!(n > 100, "a reader checked only {n} times: {stdout}");
        }
        let (_, count) = oracle(&dir);
        assert!(count > 10, "writers committed only {count} snapshots");
    }
}
