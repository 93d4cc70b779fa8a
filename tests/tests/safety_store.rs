//! Schema version 5 (SEMANTICS.md §7.5): a database written by version 4 is upgraded in
//! place, keeps every snapshot and its journal entry (plans journaled before `expires` and
//! `pinned` existed still read), and then stores expiry, pins and a retention policy that
//! another connection reads back.

use snaptree_engine::store::{MIGRATIONS, SCHEMA_VERSION};
use snaptree_engine::{Connection, NoProgress, Policy, Uuid};
use snaptree_tests::null_domain;

#[test]
fn a_version_4_database_is_upgraded_and_then_keeps_expiry_pins_and_policy() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    std::fs::create_dir(&dir).unwrap();
    let u = |n: u128| Uuid::from_u128(n);
    let (dom, a, b, c) = (u(100), u(1), u(2), u(3));
    // A plan as version 4 journaled it: its snapshot has no `expires` or `pinned`.
    let plan_v4 = format!(
        r#"{{"operation":{{"Create":{{"name":"c"}}}},"steps":[{{"Create":{{"snapshot":"{c}","parent":"{b}","name":"c","description":""}}}}],"edits":[{{"Add":{{"snapshot":{{"uuid":"{c}","name":"c","description":"","creation_date":1700000300,"state":"shutoff"}},"parent":"{b}"}}}},{{"SetCurrent":{{"current":"{c}"}}}}]}}"#
    );
    {
        let db = rusqlite::Connection::open(dir.join("snaptree.db")).unwrap();
        for sql in &MIGRATIONS[..4] {
            db.execute_batch(sql).unwrap();
        }
        db.pragma_update(None, "user_version", 4).unwrap();
        db.execute(
            "INSERT INTO domains (uuid, name, type, xml, current_uuid, generation) VALUES (?1, 'old', 'null', ?2, ?3, 3)",
            rusqlite::params![dom.to_string(), null_domain("old"), b.to_string()],
        )
        .unwrap();
        for (seq, s, parent, name, date) in [
            (1, a, None, "a", 1_700_000_000),
            (2, b, Some(a), "b", 1_700_000_100),
        ] {
            db.execute(
                "INSERT INTO snapshots (seq, domain_id, uuid, name, parent_uuid, description, creation_date, state) \
                 VALUES (?1, 1, ?2, ?3, ?4, '', ?5, 'shutoff')",
                rusqlite::params![seq, s.to_string(), name, parent.map(|p: Uuid| p.to_string()), date],
            )
            .unwrap();
        }
        db.execute(
            "INSERT INTO journal (domain_id, plan, steps_done) VALUES (1, ?1, 0)",
            [plan_v4],
        )
        .unwrap();
    }
    let conn = Connection::open(Some(&dir)).unwrap();
    let version: i64 = rusqlite::Connection::open(dir.join("snaptree.db"))
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    const { assert!(SCHEMA_VERSION >= 5, "expected schema version 5") };
    let mut d = conn.open_domain("old").unwrap();
    // The version 4 journal entry was read and rolled forward.
    assert_eq!(
        d.recoveries().len(),
        1,
        "expected the v4 plan rolled forward"
    );
    let t = d.tree().unwrap();
    assert_eq!(t.len(), 3);
    assert_eq!(t.current().map(|s| s.uuid), Some(c));
    for s in t.iter() {
        assert_eq!((s.expires, s.pinned), (None, false), "{}", s.name);
    }
    assert_eq!(d.retention_policy().unwrap(), None);
    // Version 5's new columns and table, written and read back by a fresh connection.
    d.create_snapshot(
        "<domainsnapshot><name>e</name><expires>1900000000</expires></domainsnapshot>",
    )
    .unwrap();
    d.set_pinned(&a, true).unwrap();
    let policy = Policy {
        last: 2,
        monthly: 3,
        ..Policy::default()
    };
    d.set_retention_policy(Some(&policy)).unwrap();
    drop(d);
    drop(conn);
    let conn = Connection::open(Some(&dir)).unwrap();
    let mut d = conn.open_domain("old").unwrap();
    assert_eq!(d.retention_policy().unwrap(), Some(policy));
    let t = d.tree().unwrap();
    assert!(t.get(&a).unwrap().pinned);
    assert!(!t.get(&b).unwrap().pinned);
    assert_eq!(t.by_name("e").unwrap().expires, Some(1_900_000_000));
    // Prune with last=2: a is pinned, e current, c among the last two: b goes.
    let pruned = d.prune(&mut NoProgress).unwrap();
    let names: Vec<&str> = pruned.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["b"]);
    d.set_retention_policy(None).unwrap();
    assert_eq!(d.retention_policy().unwrap(), None);
    // Undefine removes the policy row with the domain (ON DELETE CASCADE).
    d.set_retention_policy(Some(&policy)).unwrap();
    drop(d);
    conn.undefine_domain("old", true).unwrap();
    let rows: i64 = rusqlite::Connection::open(dir.join("snaptree.db"))
        .unwrap()
        .query_row("SELECT count(*) FROM retention", [], |r| r.get(0))
        .unwrap();
    assert_eq!(rows, 0);
}
