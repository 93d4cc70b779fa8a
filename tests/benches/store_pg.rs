//! The store on PostgreSQL next to SQLite, in one run: per-operation microseconds for
//! create, lookup and list on one domain of the null backend at 10,000 snapshots (other
//! sizes with `SNAPTREE_BENCH_SIZES=1000,10000`), the open (loading the tree) and the
//! per-read check for other hosts' commits (SQLite: the change signal, one memory load;
//! PostgreSQL: one query of the generation). PostgreSQL is the rig's private server on a
//! Unix socket (`fsync=off`: the numbers are the protocol and the queries, not the disk).
//! Not a timed test: it prints numbers.
//!
//! ```text
//! cargo bench -p snaptree-tests --bench store_pg
//! ```

use std::path::Path;
use std::time::{Duration, Instant};

use snaptree_engine::{Connection, Filter};
use snaptree_tests::pg_rig::PgRig;

const DOMAIN: &str = "bench";

fn us(d: Duration, n: usize) -> f64 {
    d.as_secs_f64() * 1e6 / n as f64
}

/// (create, lookup, list per snapshot listed, check, open ms) for `n` snapshots.
fn run(store: &str, n: usize) -> [f64; 5] {
    let c = Connection::open(Some(Path::new(store))).unwrap();
    c.define_domain(&format!(
        "<domain type='null'><name>{DOMAIN}</name></domain>"
    ))
    .unwrap();
    let mut d = c.open_domain(DOMAIN).unwrap();
    let t = Instant::now();
    for i in 0..n {
        d.create_snapshot(&format!(
            "<domainsnapshot><name>s{i}</name></domainsnapshot>"
        ))
        .unwrap();
    }
    let create = us(t.elapsed(), n);
    let lookups = 2000.min(n);
    let t = Instant::now();
    for i in 0..lookups {
        let name = format!("s{}", (i * 7919) % n);
        assert!(d.tree().unwrap().by_name(&name).is_some());
    }
    let lookup = us(t.elapsed(), lookups);
    let lists = 20;
    let t = Instant::now();
    for _ in 0..lists {
        let names: Vec<&str> = d
            .tree()
            .unwrap()
            .list(Filter::default())
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        assert_eq!(names.len(), n);
    }
    let list = us(t.elapsed(), lists * n);
    let checks = 5000;
    let t = Instant::now();
    for _ in 0..checks {
        d.tree().unwrap();
    }
    let check = us(t.elapsed(), checks);
    let t = Instant::now();
    drop(c.open_domain(DOMAIN).unwrap());
    let open = t.elapsed().as_secs_f64() * 1e3;
    [create, lookup, list, check, open]
}

fn main() {
    let sizes: Vec<usize> = std::env::var("SNAPTREE_BENCH_SIZES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10_000]);
    let Some(rig) = PgRig::start("the PostgreSQL store benchmark") else {
        return;
    };
    println!(
        "| snapshots | store | create µs | lookup µs | list µs/snapshot | check before a read µs | open ms |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: |");
    for n in sizes {
        let tmp = tempfile::tempdir().unwrap();
        let sqlite = tmp.path().join("state");
        let uri = rig.fresh_db();
        for (name, store) in [("SQLite", sqlite.to_str().unwrap()), ("PostgreSQL", &uri)] {
            let r = run(store, n);
            println!(
                "| {n} | {name} | {:.1} | {:.2} | {:.3} | {:.2} | {:.1} |",
                r[0], r[1], r[2], r[3], r[4]
            );
        }
    }
}
