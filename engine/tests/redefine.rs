//! REDEFINE (SEMANTICS.md §7.3) through the Rust API: libvirt's own XML as it is, parents
//! by uuid or name, the replace rule, every clash, current only with CURRENT, adoption
//! refused by a backend that cannot adopt, and the store keeping what was redefined.

use snaptree_engine::{
    Adoption, Backend, Capabilities, Connection, Domain, ErrorCode, NoProgress, NullBackend,
    PhysicalTree, PowerState, Progress, Result, Step, Uuid, planner::derived_uuid,
};

const DOMAIN_UUID: &str = "c7a5fdbd-edaf-9455-926a-d65c16db1809";

fn domain_xml() -> String {
    format!("<domain type='null'><name>vm</name><uuid>{DOMAIN_UUID}</uuid></domain>")
}

fn null_domain() -> Domain {
    Domain::ephemeral(&domain_xml(), Box::new(NullBackend::new())).unwrap()
}

fn corpus(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/corpus/libvirt-snapshot-xml")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn doc(name: &str, extra: &str) -> String {
    format!("<domainsnapshot><name>{name}</name>{extra}</domainsnapshot>")
}

fn parent_of(d: &mut Domain, name: &str) -> Option<String> {
    let t = d.tree().unwrap();
    let s = t
        .by_name(name)
        .unwrap_or_else(|| panic!("no snapshot {name}"));
    t.parent(&s.uuid).map(|p| p.name.clone())
}

/// Everything a redefine could change: every snapshot with its parent, current, retired.
fn everything(d: &mut Domain) -> String {
    let t = d.tree().unwrap();
    let rows: Vec<String> = t
        .topological()
        .iter()
        .map(|s| format!("{s:?} under {:?}", t.parent(&s.uuid).map(|p| p.uuid)))
        .collect();
    format!(
        "{rows:?} current {:?} retired {:?}",
        t.current().map(|c| c.uuid),
        t.retired()
    )
}

fn current(d: &mut Domain) -> Option<String> {
    d.tree().unwrap().current().map(|c| c.name.clone())
}

#[test]
fn every_libvirt_corpus_document_is_redefined_as_it_is() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/corpus/libvirt-snapshot-xml");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "xml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut d = null_domain();
        // Most documents name the parent 'earlier_snap': it must exist first.
        d.redefine_snapshot(&doc("earlier_snap", ""), false)
            .unwrap();
        let u = d
            .redefine_snapshot(&text, false)
            .unwrap_or_else(|e| panic!("expected {} redefined: {e}", path.display()));
        let parsed = snaptree_engine::xml::SnapshotXml::parse_for_redefine(&text).unwrap();
        let s = d.tree().unwrap().get(&u).unwrap().clone();
        assert_eq!(Some(&s.name), parsed.name.as_ref(), "{}", path.display());
        assert_eq!(
            s.description,
            parsed.description.clone().unwrap_or_default()
        );
        if let Some(date) = parsed.creation_date {
            assert_eq!(s.creation_date, date, "{}", path.display());
        }
        assert_eq!(
            s.state,
            parsed.state.unwrap_or(PowerState::Shutoff),
            "{}",
            path.display()
        );
        assert_eq!(
            parent_of(&mut d, &s.name),
            parsed.parent_name.clone(),
            "{}",
            path.display()
        );
        assert_eq!(current(&mut d), None, "without CURRENT, current stays");
        n += 1;
    }
    assert!(n >= 8, "expected the whole corpus, read {n} documents");
}

#[test]
fn libvirt_fields_are_taken_whole_and_libvirt_states_mapped() {
    let mut d = null_domain();
    d.redefine_snapshot(&doc("earlier_snap", ""), false)
        .unwrap();
    let u = d
        .redefine_snapshot(&corpus("disk_snapshot_redefine.xml"), true)
        .unwrap();
    let s = d.tree().unwrap().get(&u).unwrap().clone();
    assert_eq!(s.name, "my snap name");
    assert_eq!(s.description, "!@#$%^");
    assert_eq!(s.creation_date, 1_272_917_631);
    assert_eq!(
        s.state,
        PowerState::Shutoff,
        "libvirt's disk-snapshot has no memory: shut off"
    );
    assert_eq!(
        u,
        derived_uuid(&Uuid::parse_str(DOMAIN_UUID).unwrap(), "my snap name"),
        "a document without <uuid> gets the uuid derived from domain and name"
    );
    assert_eq!(current(&mut d).as_deref(), Some("my snap name"));
}

#[test]
fn the_parent_is_found_by_uuid_else_by_name_and_must_exist() {
    let mut d = null_domain();
    let a = Uuid::new_v4();
    d.redefine_snapshot(&doc("a", &format!("<uuid>{a}</uuid>")), false)
        .unwrap();
    d.redefine_snapshot(
        &doc("b", &format!("<parent><uuid>{a}</uuid></parent>")),
        false,
    )
    .unwrap();
    d.redefine_snapshot(&doc("c", "<parent><name>b</name></parent>"), false)
        .unwrap();
    assert_eq!(parent_of(&mut d, "b").as_deref(), Some("a"));
    assert_eq!(parent_of(&mut d, "c").as_deref(), Some("b"));

    let before = everything(&mut d);
    let e = d
        .redefine_snapshot(&doc("x", "<parent><name>nope</name></parent>"), false)
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoSnapshot, "{e}");
    assert!(e.to_string().contains("'nope'"), "{e}");
    let e = d
        .redefine_snapshot(
            &doc(
                "x",
                &format!("<parent><uuid>{}</uuid></parent>", Uuid::new_v4()),
            ),
            false,
        )
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NoSnapshot, "{e}");
    let e = d
        .redefine_snapshot(
            &doc(
                "x",
                &format!("<parent><uuid>{a}</uuid><name>b</name></parent>"),
            ),
            false,
        )
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArg, "{e}");
    let e = d.redefine_snapshot("<domainsnapshot/>", false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidArg, "{e}");
    assert!(e.to_string().contains("needs a <name>"), "{e}");
    assert_eq!(
        everything(&mut d),
        before,
        "a refused redefine changes nothing"
    );
}

#[test]
fn the_same_name_uuid_and_parent_replaces_description_date_and_state_only() {
    let mut d = null_domain();
    let a = d
        .redefine_snapshot(
            &doc(
                "a",
                "<description>old</description><creationTime>10</creationTime><state>running</state>",
            ),
            false,
        )
        .unwrap();
    d.redefine_snapshot(&doc("b", "<parent><name>a</name></parent>"), true)
        .unwrap();
    // Again, without <uuid>: the name says which snapshot is meant.
    let again = d
        .redefine_snapshot(
            &doc(
                "a",
                "<description>new</description><creationTime>20</creationTime><state>paused</state>",
            ),
            false,
        )
        .unwrap();
    assert_eq!(again, a);
    let t = d.tree().unwrap();
    let s = t.get(&a).unwrap();
    assert_eq!(
        (s.description.as_str(), s.creation_date, s.state),
        ("new", 20, PowerState::Paused)
    );
    assert_eq!(t.len(), 2);
    assert_eq!(
        current(&mut d).as_deref(),
        Some("b"),
        "current stays without CURRENT"
    );
    // With CURRENT, current moves to the replaced snapshot. A document without a date
    // keeps the snapshot's: "now" would make it the newest for retention's keep-last
    // (found by the ESX kit: a prune that kept the wrong snapshot).
    d.redefine_snapshot(&doc("a", &format!("<uuid>{a}</uuid>")), true)
        .unwrap();
    assert_eq!(current(&mut d).as_deref(), Some("a"));
    assert_eq!(
        d.tree().unwrap().get(&a).map(|s| s.creation_date),
        Some(20),
        "expected the date kept by a replace without one"
    );
}

#[test]
fn every_other_clash_is_snapshot_exists_and_changes_nothing() {
    let mut d = null_domain();
    let a = d.redefine_snapshot(&doc("a", ""), false).unwrap();
    let b = d
        .redefine_snapshot(&doc("b", "<parent><name>a</name></parent>"), false)
        .unwrap();
    // A retired snapshot's data stays while something is stored on it.
    let r = d.redefine_snapshot(&doc("r", ""), false).unwrap();
    d.redefine_snapshot(&doc("rc", "<parent><name>r</name></parent>"), false)
        .unwrap();
    d.delete(&r, snaptree_engine::DeleteMode::Retire, &mut NoProgress)
        .unwrap();
    assert!(d.tree().unwrap().retired().contains(&r));
    let before = everything(&mut d);
    let clashes = [
        // same name, another uuid
        doc("a", &format!("<uuid>{}</uuid>", Uuid::new_v4())),
        // same uuid, another name
        doc("z", &format!("<uuid>{a}</uuid>")),
        // same name and uuid, another parent
        doc("b", &format!("<uuid>{b}</uuid>")),
        // a root made a child
        doc("a", "<parent><name>b</name></parent>"),
        // a retired snapshot's uuid
        doc("r2", &format!("<uuid>{r}</uuid>")),
    ];
    for xml in clashes {
        let e = d.redefine_snapshot(&xml, true).expect_err(&xml);
        assert_eq!(e.code(), ErrorCode::SnapshotExists, "{xml}: {e}");
        assert_eq!(everything(&mut d), before, "{xml} changed the tree");
    }
}

#[test]
fn a_backend_that_cannot_adopt_is_refused_before_anything_runs() {
    /// A backend with data that has no adopt.
    struct NoAdopt(usize);
    impl Backend for NoAdopt {
        fn name(&self) -> &str {
            "noadopt"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::ALL
        }
        fn power_state(&mut self) -> Result<PowerState> {
            Ok(PowerState::Shutoff)
        }
        fn execute(&mut self, _: &Step, _: &mut dyn Progress) -> Result<()> {
            self.0 += 1;
            Ok(())
        }
        fn list_physical(&mut self) -> Result<PhysicalTree> {
            Ok(PhysicalTree::default())
        }
    }
    let mut d = Domain::ephemeral(&domain_xml(), Box::new(NoAdopt(0))).unwrap();
    let e = d.redefine_snapshot(&doc("a", ""), false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
    assert!(
        e.to_string().contains("cannot adopt") && e.to_string().contains("'a'"),
        "{e}"
    );
    assert!(d.tree().unwrap().is_empty());
    let e = d.plan_redefine(&doc("a", ""), false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
}

#[test]
fn the_backend_adopts_with_the_parent_and_its_refusal_changes_nothing() {
    /// Holds data for the snapshots named in `held`, with their parents.
    struct Holding {
        held: Vec<(String, Option<Uuid>)>,
        adopted: std::sync::Arc<std::sync::Mutex<Vec<Adoption>>>,
    }
    impl Backend for Holding {
        fn name(&self) -> &str {
            "holding"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::ALL
        }
        fn power_state(&mut self) -> Result<PowerState> {
            Ok(PowerState::Shutoff)
        }
        fn execute(&mut self, step: &Step, _: &mut dyn Progress) -> Result<()> {
            panic!("a redefine runs no step: {step:?}")
        }
        fn list_physical(&mut self) -> Result<PhysicalTree> {
            let mut t = PhysicalTree::default();
            for a in self.adopted.lock().unwrap().iter() {
                t.parents.insert(a.snapshot, a.parent);
            }
            Ok(t)
        }
        fn can_adopt(&self) -> bool {
            true
        }
        fn adopt(&mut self, a: &Adoption, _: &mut dyn Progress) -> Result<()> {
            if !self.held.contains(&(a.name.clone(), a.parent)) {
                return Err(snaptree_engine::Error::OperationInvalid(format!(
                    "no data for snapshot '{}' on parent {:?}",
                    a.name, a.parent
                )));
            }
            self.adopted.lock().unwrap().push(a.clone());
            Ok(())
        }
    }
    let domain = Uuid::parse_str(DOMAIN_UUID).unwrap();
    let a = derived_uuid(&domain, "a");
    let adopted = std::sync::Arc::default();
    let backend = Holding {
        held: vec![("a".into(), None), ("b".into(), Some(a))],
        adopted: std::sync::Arc::clone(&adopted),
    };
    let mut d = Domain::ephemeral(&domain_xml(), Box::new(backend)).unwrap();
    d.redefine_snapshot(&doc("a", ""), false).unwrap();
    let e = d.redefine_snapshot(&doc("c", ""), false).unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
    assert!(e.to_string().contains("no data for snapshot 'c'"), "{e}");
    assert_eq!(
        d.tree().unwrap().len(),
        1,
        "a refused adoption adds nothing"
    );
    assert!(
        d.pending().unwrap().is_none(),
        "and leaves no journal entry"
    );
    d.redefine_snapshot(&doc("b", "<parent><name>a</name></parent>"), false)
        .unwrap();
    let log = adopted.lock().unwrap().clone();
    assert_eq!(
        log.iter()
            .map(|x| (x.name.as_str(), x.parent))
            .collect::<Vec<_>>(),
        [("a", None), ("b", Some(a))],
        "the backend is asked to adopt each new snapshot with its parent"
    );
    // Replacing runs no adoption.
    d.redefine_snapshot(
        &doc(
            "b",
            "<description>x</description><parent><name>a</name></parent>",
        ),
        false,
    )
    .unwrap();
    assert_eq!(adopted.lock().unwrap().len(), 2);
}

#[test]
fn redefined_metadata_is_stored_and_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(Some(dir.path())).unwrap();
    conn.define_domain(&domain_xml()).unwrap();
    {
        let mut d = conn.open_domain("vm").unwrap();
        d.redefine_snapshot(
            &doc("a", "<creationTime>5</creationTime><state>running</state>"),
            false,
        )
        .unwrap();
        d.redefine_snapshot(
            &doc(
                "b",
                "<parent><name>a</name></parent><creationTime>6</creationTime>",
            ),
            true,
        )
        .unwrap();
        d.redefine_snapshot(
            &doc("a", "<description>again</description><creationTime>7</creationTime><state>paused</state>"),
            false,
        )
        .unwrap();
    }
    let mut d = conn.open_domain("vm").unwrap();
    let t = d.tree().unwrap();
    let a = t.by_name("a").unwrap();
    assert_eq!(
        (a.description.as_str(), a.creation_date, a.state),
        ("again", 7, PowerState::Paused)
    );
    let b = t.by_name("b").unwrap();
    assert_eq!((b.creation_date, b.state), (6, PowerState::Shutoff));
    assert_eq!(t.current().map(|c| c.name.as_str()), Some("b"));
    assert_eq!(t.parent(&b.uuid).map(|p| p.name.as_str()), Some("a"));
}
