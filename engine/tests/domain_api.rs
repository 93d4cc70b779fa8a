//! The `Domain` handle's own answers (name, uuid, XML, generation, debug form, the cached
//! tree) through a real SQLite state directory, and the agreement check of SEMANTICS.md
//! §3.7 against hand-made physical trees. Written to kill mutants cargo-mutants showed
//! surviving the semantic tests (docs/model-checker.md, "Mutation testing").

use std::collections::BTreeMap;

use snaptree_engine::{
    Connection, DeleteMode, Domain, NoProgress, NullBackend, PhysicalTree, Uuid, domain::agreement,
};

const DOMAIN_UUID: &str = "8d3f3a3e-6f2b-4c55-9c1e-2b0c3f4e5a61";

fn xml() -> String {
    format!("<domain type='null'><name>vm</name><uuid>{DOMAIN_UUID}</uuid></domain>")
}

fn snap(d: &mut Domain, name: &str) -> Uuid {
    d.create_snapshot(&format!(
        "<domainsnapshot><name>{name}</name></domainsnapshot>"
    ))
    .unwrap()
}

#[test]
fn a_stored_domain_answers_its_name_uuid_xml_and_generation() {
    let dir = tempfile::tempdir().unwrap();
    let conn = Connection::open(Some(dir.path())).unwrap();
    conn.define_domain(&xml()).unwrap();
    let mut d = conn.open_domain("vm").unwrap();
    assert_eq!(d.name(), "vm", "expected the domain's own name");
    assert_eq!(
        d.uuid(),
        Uuid::parse_str(DOMAIN_UUID).unwrap(),
        "expected the uuid of the domain XML"
    );
    assert_eq!(d.xml_text(), xml(), "expected the XML as defined");
    let debug = format!("{d:?}");
    assert!(
        debug.contains("vm") && debug.contains(DOMAIN_UUID),
        "expected the debug form to name the domain: {debug}"
    );

    let before = d.generation().expect("a stored domain has a generation");
    let a = snap(&mut d, "a");
    let after_one = d.generation().expect("a stored domain has a generation");
    snap(&mut d, "b");
    let after_two = d.generation().expect("a stored domain has a generation");
    assert!(
        before < after_one && after_one < after_two,
        "expected every commit to raise the generation: {before}, {after_one}, {after_two}"
    );
    assert_eq!(
        d.cached_tree().len(),
        2,
        "expected the cached tree to hold both snapshots"
    );
    assert!(
        d.cached_tree().get(&a).is_some(),
        "expected the cached tree to know snapshot a"
    );
    assert!(
        d.recoveries().is_empty(),
        "expected no recovery on a domain that never crashed"
    );
}

/// A domain with two retired snapshots a (a root) and b (on a), and c, current, on b.
fn retired_pair() -> (Domain, Uuid, Uuid, Uuid) {
    let mut d = Domain::ephemeral(&xml(), Box::new(NullBackend::new())).unwrap();
    let a = snap(&mut d, "a");
    let b = snap(&mut d, "b");
    let c = snap(&mut d, "c");
    d.delete(&a, DeleteMode::Retire, &mut NoProgress).unwrap();
    d.delete(&b, DeleteMode::Retire, &mut NoProgress).unwrap();
    (d, a, b, c)
}

fn physical(parents: &[(Uuid, Option<Uuid>)], live: Option<Uuid>) -> PhysicalTree {
    PhysicalTree {
        parents: parents.iter().copied().collect::<BTreeMap<_, _>>(),
        live_parent: live,
    }
}

#[test]
fn agreement_sees_through_retired_layers_and_names_each_difference() {
    let (mut d, a, b, c) = retired_pair();
    let tree = d.tree().unwrap().clone();
    // The layout as the backend holds it: c on b on a, the live state on c.
    let good = physical(&[(a, None), (b, Some(a)), (c, Some(b))], Some(c));
    assert_eq!(agreement(&tree, &good), Ok(()), "expected agreement");

    let missing = physical(&[(a, None), (b, Some(a))], Some(c));
    let e = agreement(&tree, &missing).expect_err("expected c's missing data to be found");
    assert!(e.contains("no physical data"), "{e}");

    let stray = Uuid::new_v4();
    let unknown = physical(
        &[(a, None), (b, Some(a)), (c, Some(b)), (stray, None)],
        Some(c),
    );
    let e = agreement(&tree, &unknown).expect_err("expected the unknown layer to be found");
    assert!(e.contains("unknown snapshot"), "{e}");

    let live_elsewhere = physical(&[(a, None), (b, Some(a)), (c, Some(b))], Some(b));
    let e = agreement(&tree, &live_elsewhere)
        .expect_err("expected a live state on a retired layer below current to be found");
    assert!(e.contains("live state"), "{e}");

    let vanished = physical(&[(a, None), (c, Some(b))], Some(c));
    let e = agreement(&tree, &vanished).expect_err("expected the vanished retired layer");
    assert!(e.contains("vanished"), "{e}");
}

#[test]
fn agreement_refuses_a_cycle_of_retired_layers() {
    let (mut d, a, b, c) = retired_pair();
    let tree = d.tree().unwrap().clone();
    let cycle = physical(&[(a, Some(b)), (b, Some(a)), (c, Some(b))], Some(c));
    let e = agreement(&tree, &cycle).expect_err("expected the cycle to be refused");
    assert!(e.contains("cycle"), "{e}");
}

#[test]
fn agreement_follows_a_chain_through_every_physical_layer() {
    // Both snapshots retired: the live state sits on b, on a, and nothing else is held, so
    // the walk from the live state passes every physical layer once; that is no cycle.
    let mut d = Domain::ephemeral(&xml(), Box::new(NullBackend::new())).unwrap();
    let a = snap(&mut d, "a");
    let b = snap(&mut d, "b");
    d.delete(&a, DeleteMode::Retire, &mut NoProgress).unwrap();
    d.delete(&b, DeleteMode::Retire, &mut NoProgress).unwrap();
    let tree = d.tree().unwrap().clone();
    assert!(tree.current().is_none(), "expected no current snapshot");
    let chain = physical(&[(a, None), (b, Some(a))], Some(b));
    assert_eq!(
        agreement(&tree, &chain),
        Ok(()),
        "expected a chain of retired layers under the live state to agree with no current"
    );
}

#[test]
fn a_generated_uuid_never_takes_a_live_or_retired_one() {
    use snaptree_engine::planner::{CreateContext, plan_create};
    use snaptree_engine::xml::SnapshotXml;
    use snaptree_engine::{PowerState, Step};

    let mut d = Domain::ephemeral(&xml(), Box::new(NullBackend::new())).unwrap();
    let kept = snap(&mut d, "kept");
    let retired = snap(&mut d, "retired");
    d.delete(&retired, DeleteMode::Retire, &mut NoProgress)
        .unwrap();
    let tree = d.tree().unwrap().clone();
    let doc = SnapshotXml::parse_for_create("<domainsnapshot/>").unwrap();
    for taken in [kept, retired] {
        // The random uuid handed to the planner happens to be taken: it must draw another.
        let ctx = CreateContext {
            live_state: PowerState::Shutoff,
            now: 0,
            fresh_uuid: taken,
        };
        let plan = plan_create(&tree, "vm", &doc, ctx).unwrap();
        let made = plan
            .steps
            .first()
            .and_then(Step::snapshot)
            .expect("expected a create step");
        assert_ne!(made, taken, "expected a generated uuid other than {taken}");
    }
}

fn node(name: &str) -> snaptree_engine::Snapshot {
    snaptree_engine::Snapshot {
        uuid: Uuid::new_v4(),
        name: name.to_string(),
        description: String::new(),
        creation_date: 0,
        state: snaptree_engine::PowerState::Shutoff,
        expires: None,
        pinned: false,
    }
}

#[test]
fn the_tree_refuses_a_second_snapshot_with_a_taken_name_or_uuid() {
    let mut tree = snaptree_engine::SnapshotTree::new();
    let a = node("a");
    tree.insert(a.clone(), None).unwrap();
    let same_name = node("a");
    assert!(
        tree.insert(same_name, None).is_err(),
        "expected a second 'a' to be refused"
    );
    let mut same_uuid = node("b");
    same_uuid.uuid = a.uuid;
    assert!(
        tree.insert(same_uuid, None).is_err(),
        "expected a second snapshot with a's uuid to be refused"
    );
    assert_eq!(tree.len(), 1, "expected only a in the tree");
}

#[test]
fn the_tree_refuses_to_move_a_snapshot_under_itself_or_its_descendant() {
    let mut tree = snaptree_engine::SnapshotTree::new();
    let (a, b, c) = (node("a"), node("b"), node("c"));
    tree.insert(a.clone(), None).unwrap();
    tree.insert(b.clone(), Some(a.uuid)).unwrap();
    tree.insert(c.clone(), Some(b.uuid)).unwrap();
    assert!(
        tree.set_parent(&a.uuid, Some(c.uuid)).is_err(),
        "expected moving a under its descendant c to be refused"
    );
    assert!(
        tree.set_parent(&b.uuid, Some(b.uuid)).is_err(),
        "expected moving b under itself to be refused"
    );
    assert_eq!(
        tree.parent(&b.uuid).map(|p| p.uuid),
        Some(a.uuid),
        "expected b still under a"
    );
}
