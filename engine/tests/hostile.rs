//! Hostile input at the Rust API: each case gets the right error code, a message naming
//! the problem, and changes nothing (the stored tree is compared before and after).

use snaptree_engine::{Connection, DeleteMode, Domain, ErrorCode, NoProgress, Uuid, flags};

struct Fixture {
    _dir: tempfile::TempDir,
    conn: Connection,
}

fn fixture() -> (Fixture, Domain) {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(Some(dir.path())).unwrap();
    conn.define_domain("<domain type='null'><name>vm</name></domain>")
        .unwrap();
    let mut d = conn.open_domain("vm").unwrap();
    d.create_snapshot("<domainsnapshot><name>a</name></domainsnapshot>")
        .unwrap();
    d.create_snapshot("<domainsnapshot><name>b</name></domainsnapshot>")
        .unwrap();
    (Fixture { _dir: dir, conn }, d)
}

/// The stored tree as text, read through a fresh handle so nothing cached can hide a change.
fn stored(f: &Fixture) -> String {
    let mut d = f.conn.open_domain("vm").unwrap();
    let t = d.tree().unwrap();
    let mut out: Vec<String> = t
        .iter()
        .map(|s| {
            format!(
                "{}|{}|{:?}|{}",
                s.name,
                s.uuid,
                t.parent(&s.uuid).map(|p| p.uuid),
                s.description
            )
        })
        .collect();
    out.push(format!(
        "current={:?} retired={:?}",
        t.current().map(|c| c.uuid),
        t.retired()
    ));
    out.join("\n")
}

fn refused(f: &Fixture, d: &mut Domain, xml: &str, code: ErrorCode, needle: &str) {
    let before = stored(f);
    let e = d
        .create_snapshot(xml)
        .expect_err(&xml.chars().take(80).collect::<String>());
    assert_eq!(
        e.code(),
        code,
        "for {:?}: {e}",
        xml.chars().take(80).collect::<String>()
    );
    assert!(
        e.to_string().contains(needle),
        "expected {needle:?} in: {e}"
    );
    assert_eq!(
        stored(f),
        before,
        "expected the refused create to change nothing"
    );
}

#[test]
fn hostile_names_are_refused_with_their_reason() {
    let (f, mut d) = fixture();
    let long = "n".repeat(10_000);
    for (name, reason) in [
        ("a/b", "contains '/'"),
        ("..", "path component"),
        (".", "path component"),
        ("../../etc/x", "contains '/'"),
        ("tab\there", "U+0009"),
        ("esc\u{1b}[31m", "U+001B"),
        ("     ", "white space"),
        (long.as_str(), "10000 bytes"),
    ] {
        let xml = format!("<domainsnapshot><name>{name}</name></domainsnapshot>");
        refused(&f, &mut d, &xml, ErrorCode::XmlError, reason);
        let b = d.tree().unwrap().by_name("b").unwrap().uuid;
        let before = stored(&f);
        let e = d.rename(&b, name).unwrap_err();
        assert_eq!(e.code(), ErrorCode::InvalidArg, "rename to {name:?}: {e}");
        assert!(e.to_string().contains(reason), "expected {reason:?} in {e}");
        assert_eq!(stored(&f), before);
    }
    // A NUL cannot be written in XML at all (not even as &#0;).
    refused(
        &f,
        &mut d,
        "<domainsnapshot><name>a&#0;b</name></domainsnapshot>",
        ErrorCode::XmlError,
        "character reference",
    );
    let b = d.tree().unwrap().by_name("b").unwrap().uuid;
    assert_eq!(
        d.rename(&b, "a\0b").unwrap_err().code(),
        ErrorCode::InvalidArg
    );
}

#[test]
fn hostile_documents_are_refused_and_change_nothing() {
    let (f, mut d) = fixture();
    let cases: Vec<(String, &str)> = vec![
        ("<!DOCTYPE domainsnapshot [<!ENTITY x 'boom'>]><domainsnapshot><name>&x;</name></domainsnapshot>".into(), "DOCTYPE"),
        ("<!DOCTYPE d SYSTEM 'file:///etc/passwd'><domainsnapshot/>".into(), "DOCTYPE"),
        ("<domainsnapshot><name>&xxe;</name></domainsnapshot>".into(), "undefined entity"),
        (
            "<!DOCTYPE l [<!ENTITY a '&b;'><!ENTITY b '&a;'>]><domainsnapshot><name>&a;</name></domainsnapshot>".into(),
            "DOCTYPE",
        ),
        (
            "<!DOCTYPE l [<!ENTITY a 'aaaaaaaaaa'><!ENTITY b '&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;'>]><domainsnapshot/>".into(),
            "DOCTYPE",
        ),
        (format!("<domainsnapshot><description>{}</description></domainsnapshot>", "x".repeat(100 << 20)), "limit"),
        (format!("<domainsnapshot>{}", "<a>".repeat(10_000)), "nested deeper"),
        ("<domain><name>x</name></domain>".into(), "expected <domainsnapshot>"),
        ("<domainsnapshot><name>x</name><name>y</name></domainsnapshot>".into(), "appears twice"),
        ("<domainsnapshot><uuid>not-a-uuid</uuid></domainsnapshot>".into(), "not a valid uuid"),
        ("<domainsnapshot><uuid>1</uuid><uuid>2</uuid></domainsnapshot>".into(), "appears twice"),
        ("<domainsnapshot><name>x</name>".into(), "not closed"),
        ("<domainsnapshot></wrong>".into(), "malformed"),
        ("".into(), "no root element"),
    ];
    for (xml, needle) in &cases {
        refused(&f, &mut d, xml, ErrorCode::XmlError, needle);
    }
    // Fields a create ignores are still validated by a full parse (import, round trip).
    for (xml, needle) in [
        (
            "<domainsnapshot><state>exploded</state></domainsnapshot>",
            "unknown power state",
        ),
        (
            "<domainsnapshot><creationdate>-5</creationdate></domainsnapshot>",
            "non-negative",
        ),
        (
            "<domainsnapshot><creationdate>99999999999999999999999</creationdate></domainsnapshot>",
            "too large",
        ),
    ] {
        let e = snaptree_engine::xml::SnapshotXml::parse(xml).unwrap_err();
        assert_eq!(e.code(), ErrorCode::XmlError);
        assert!(e.to_string().contains(needle), "{e}");
    }
}

#[test]
fn hostile_domain_documents_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(Some(dir.path())).unwrap();
    for (xml, code, needle) in [
        (
            "<domain type='null'><name>../evil</name></domain>",
            ErrorCode::XmlError,
            "contains '/'",
        ),
        (
            "<domain type='../../lib/x'><name>a</name></domain>",
            ErrorCode::XmlError,
            "backend type",
        ),
        (
            "<domain type='null'><name>a</name><uuid>zzz</uuid></domain>",
            ErrorCode::XmlError,
            "not a valid uuid",
        ),
        (
            "<!DOCTYPE domain [<!ENTITY e 'x'>]><domain type='null'><name>&e;</name></domain>",
            ErrorCode::XmlError,
            "DOCTYPE",
        ),
        (
            "<domain type='nosuchbackend'><name>a</name></domain>",
            ErrorCode::InvalidArg,
            "nosuchbackend",
        ),
    ] {
        let e = conn.define_domain(xml).expect_err(xml);
        assert_eq!(e.code(), code, "{xml}: {e}");
        assert!(e.to_string().contains(needle), "expected {needle:?} in {e}");
    }
    assert!(
        conn.list_domains().unwrap().is_empty(),
        "expected no domain defined"
    );
}

#[test]
fn unknown_flag_bits_are_refused() {
    for (what, r) in [
        ("delete", flags::delete_mode(1 << 31).map(drop)),
        ("list", flags::list_filter(1 << 9).map(drop)),
        ("revert", flags::revert_state(1 << 3).map(drop)),
    ] {
        let e = r.expect_err(what);
        assert_eq!(e.code(), ErrorCode::InvalidArg);
        assert!(e.to_string().contains("unknown"), "{what}: {e}");
    }
}

#[test]
fn a_snapshot_used_after_delete_is_no_snapshot() {
    let (f, mut d) = fixture();
    let b = d.tree().unwrap().by_name("b").unwrap().uuid;
    d.delete(&b, DeleteMode::Discard, &mut NoProgress).unwrap();
    let before = stored(&f);
    for r in [
        d.revert(&b, None, &mut NoProgress).map(drop),
        d.rename(&b, "again").map(drop),
        d.delete(&b, DeleteMode::Merge, &mut NoProgress).map(drop),
        d.snapshot_xml(&b).map(drop),
    ] {
        let e = r.unwrap_err();
        assert_eq!(e.code(), ErrorCode::NoSnapshot, "{e}");
        assert!(
            e.to_string().contains(&b.to_string()),
            "expected the uuid named: {e}"
        );
    }
    assert_eq!(stored(&f), before);
    let _ = Uuid::nil();
}

#[test]
fn the_same_domain_from_two_threads() {
    let (f, _d) = fixture();
    let conn = std::sync::Arc::new(f.conn);
    let threads: Vec<_> = (0..2)
        .map(|t| {
            let conn = std::sync::Arc::clone(&conn);
            std::thread::spawn(move || {
                let mut d = conn.open_domain("vm").unwrap();
                for i in 0..50 {
                    let name = format!("t{t}-{i}");
                    d.create_snapshot(&format!(
                        "<domainsnapshot><name>{name}</name></domainsnapshot>"
                    ))
                    .unwrap();
                    if i % 3 == 0 {
                        let u = d.tree().unwrap().by_name(&name).unwrap().uuid;
                        d.delete(&u, DeleteMode::Retire, &mut NoProgress).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("expected no thread to panic");
    }
    let mut d = conn.open_domain("vm").unwrap();
    let t = d.tree().unwrap();
    assert_eq!(
        t.len(),
        2 + 2 * (50 - 17),
        "expected every acknowledged create and delete reflected once"
    );
    assert_eq!(t.retired().len(), 2 * 17);
}
