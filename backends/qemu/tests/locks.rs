//! An image held by another process (a running VM; here a background `qemu-io`) makes every
//! step fail with a `BACKEND` error naming the file, before anything changes: same files,
//! same sizes and times, same tree.

mod common;

use common::{LockHolder, Vm, snap, uuid, write};
use snaptree_engine::{DeleteMode, Domain, ErrorCode, NoProgress, Result, Uuid};

/// An operation attempted on the domain.
type Attempt = fn(&mut Domain) -> Result<()>;

/// The tree as comparable data: every (snapshot, name, parent), and current.
type Shape = (Vec<(Uuid, String, Option<Uuid>)>, Option<Uuid>);

/// Every kind of operation, by name, on the tree A → B (current B).
fn attempts() -> Vec<(&'static str, Attempt)> {
    vec![
        ("create", |d| {
            d.create_snapshot("<domainsnapshot><name>N</name></domainsnapshot>")
                .map(drop)
        }),
        ("revert", |d| {
            let u = uuid(d, "A");
            d.revert(&u, None, &mut NoProgress).map(drop)
        }),
        ("discard", |d| {
            let u = uuid(d, "B");
            d.delete(&u, DeleteMode::Discard, &mut NoProgress).map(drop)
        }),
        ("consolidate", |d| {
            let u = uuid(d, "A");
            d.delete(&u, DeleteMode::Consolidate, &mut NoProgress)
                .map(drop)
        }),
        ("merge", |d| {
            let u = uuid(d, "B");
            d.delete(&u, DeleteMode::Merge, &mut NoProgress).map(drop)
        }),
        ("merge into base", |d| {
            let u = uuid(d, "A");
            d.delete(&u, DeleteMode::Merge, &mut NoProgress).map(drop)
        }),
        ("delete-all", |d| d.delete_all(&mut NoProgress).map(drop)),
    ]
}

/// The tree as comparable data: every snapshot with its parent, and current.
fn shape(d: &mut Domain) -> Shape {
    let t = d.tree().unwrap();
    let mut all: Vec<_> = t
        .iter()
        .map(|s| (s.uuid, s.name.clone(), t.parent(&s.uuid).map(|p| p.uuid)))
        .collect();
    all.sort();
    (all, t.current().map(|c| c.uuid))
}

fn locked_image_changes_nothing(
    modes: &[&'static str],
    lock: impl Fn(&Vm, &mut Domain) -> std::path::PathBuf,
) {
    let vm = Vm::new(modes);
    let (mut d, _) = vm.domain();
    write(&vm, 0, 1);
    snap(&mut d, "A");
    write(&vm, 1, 2);
    snap(&mut d, "B");
    write(&vm, 2, 3);
    let held = lock(&vm, &mut d);
    for (what, attempt) in attempts() {
        let files = vm.files();
        let tree = shape(&mut d);
        let holder = LockHolder::hold(&held);
        let e = attempt(&mut d).expect_err(what);
        drop(holder);
        assert_eq!(e.code(), ErrorCode::Backend, "{what}: {e}");
        let text = e.to_string();
        assert!(
            text.contains(&held.display().to_string()),
            "{what}: expected the error to name {}: {text}",
            held.display()
        );
        assert!(
            text.contains("in use by another process") && text.contains("nothing was changed"),
            "{what}: {text}"
        );
        assert_eq!(vm.files(), files, "{what}: files changed");
        assert_eq!(shape(&mut d), tree, "{what}: tree changed");
        d.check_agreement().unwrap();
    }
    // Released, every operation goes through again.
    let u = uuid(&mut d, "A");
    d.delete(&u, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap();
    d.delete_all(&mut NoProgress).unwrap();
    common::assert_standalone(&vm);
}

#[test]
fn a_running_vm_on_an_external_disk_blocks_every_step() {
    locked_image_changes_nothing(&["external", "external"], |vm, _| vm.disks[1].clone());
}

#[test]
fn a_running_vm_on_an_internal_disk_blocks_every_step() {
    locked_image_changes_nothing(&["external", "internal"], |vm, _| vm.disks[1].clone());
}

#[test]
fn a_process_holding_a_frozen_layer_blocks_every_step_that_writes_it() {
    // The layer of A on the first disk: held read-write, which blocks even opening the
    // live image (its backing chain) for a lock check.
    locked_image_changes_nothing(&["external", "internal"], |vm, d| {
        let a = uuid(d, "A");
        vm.dir
            .path()
            .join("d0.qcow2.snapshots")
            .join(format!("{a}.qcow2"))
    });
}
