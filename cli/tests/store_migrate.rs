//! `snaptree store migrate --from DIR --to URI`, and `--store`/`SNAPTREE_STORE` selecting
//! the PostgreSQL store: a host's state moved, then read back through the URI.

use std::process::{Command, Output};

use snaptree_tests::pg_rig::PgRig;

fn snaptree(args: &[&str], env: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_snaptree"));
    c.args(args)
        .env_remove("SNAPTREE_STATE_DIR")
        .env_remove("SNAPTREE_STORE");
    if let Some(uri) = env {
        c.env("SNAPTREE_STORE", uri);
    }
    c.output().expect("snaptree runs")
}

fn ok(args: &[&str], env: Option<&str>) -> String {
    let out = snaptree(args, env);
    assert!(
        out.status.success(),
        "expected `snaptree {}` to succeed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_hosts_state_moves_into_postgresql_and_reads_back_the_same() {
    let Some(rig) = PgRig::shared("store migrate") else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = tmp.path().join("state");
    let s = s.to_str().unwrap();
    let xml = tmp.path().join("vm.xml");
    std::fs::write(&xml, "<domain type='null'><name>vm</name></domain>").unwrap();
    ok(&["--state-dir", s, "define", xml.to_str().unwrap()], None);
    for n in ["a", "b", "c"] {
        ok(
            &["--state-dir", s, "snapshot-create-as", "vm", "--name", n],
            None,
        );
    }
    ok(&["--state-dir", s, "snapshot-revert", "vm", "a"], None);
    ok(
        &[
            "--state-dir",
            s,
            "snapshot-create-as",
            "vm",
            "--name",
            "d",
            "--expires",
            "@1000",
        ],
        None,
    );
    // Pins, expiry dates and the retention policy move too (schema version 5).
    ok(&["--state-dir", s, "snapshot-pin", "vm", "a"], None);
    ok(&["--state-dir", s, "policy", "vm", "last=1"], None);
    // Retired: b has c stored on it.
    ok(&["--state-dir", s, "snapshot-delete", "vm", "b"], None);
    let listing = ["snapshot-list", "vm", "--tree"];
    let json = ["snapshot-list", "vm", "--json"];
    let before = ok(&[&["--state-dir", s][..], &listing[..]].concat(), None);
    let before_json = ok(&[&["--state-dir", s][..], &json[..]].concat(), None);
    let uri = rig.fresh_db();
    let out = ok(&["store", "migrate", "--from", s, "--to", &uri], None);
    assert!(
        out.starts_with("migrated 1 domain into postgresql://"),
        "{out}"
    );
    // Through --store and through SNAPTREE_STORE: the same tree, current and all.
    assert_eq!(
        ok(&[&["--store", &uri][..], &listing[..]].concat(), None),
        before
    );
    assert_eq!(ok(&json, Some(&uri)), before_json);
    for safety in [
        &["policy", "vm"][..],
        &["prune", "vm", "--dry-run"][..],
        &["snapshot-dumpxml", "vm", "d"][..],
    ] {
        let here = ok(&[&["--state-dir", s][..], safety].concat(), None);
        assert!(
            here.contains("last=1")
                || here.contains("would remove")
                || here.contains("<expires>1000"),
            "{here}"
        );
        assert_eq!(
            ok(safety, Some(&uri)),
            here,
            "{safety:?} after the migration"
        );
    }
    // And it works there.
    ok(&["snapshot-create-as", "vm", "--name", "e"], Some(&uri));
    // A second migration into the same store is refused, naming the domain; nothing changes.
    let again = snaptree(&["store", "migrate", "--from", s, "--to", &uri], None);
    assert_eq!(again.status.code(), Some(11), "INVALID_ARG");
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(err.contains("domain 'vm'"), "{err}");
    assert!(
        ok(
            &[
                &["--store", &uri][..],
                &["snapshot-list", "vm", "--name"][..]
            ]
            .concat(),
            None
        )
        .contains('e')
    );
    // Not a URI: a usage error.
    let bad = snaptree(&["store", "migrate", "--from", s, "--to", "/tmp/x"], None);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}
