//! Adoption (REDEFINE, SEMANTICS.md §7.3) of trees other tools made on real qcow2 images:
//! internal snapshots tagged by name with `qemu-img snapshot -c NAME` (as libvirt tags
//! them), and external overlay chains named as libvirt names them (`<stem>.<name>`, the
//! name being the creation seconds) or anything at all. Each tree is redefined from
//! libvirt-format snapshot XML, as `virsh snapshot-dumpxml` writes it; then every delete
//! mode and revert runs on it, and every surviving snapshot's data is read back with
//! `qemu-io read -P` after reverting to it.
//!
//! The oracle builds the trees and reads the data with the `qemu-img`/`qemu-io` commands
//! directly, sharing no code with the backend.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use snaptree_backend_qemu::QemuBackend;
use snaptree_engine::{DeleteMode, Domain, ErrorCode, NoProgress, Uuid};

const SIZE: &str = "4M";
const CHUNK: u64 = 64 * 1024;

fn tools_present() -> bool {
    let ok = |t: &str| Command::new(t).arg("--version").output().is_ok();
    if ok("qemu-img") && ok("qemu-io") {
        return true;
    }
    snaptree_tests::skip::cannot_run("adoption on real qcow2", "qemu-img or qemu-io is missing");
    false
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Writes `pattern` into 64 KiB slot `slot` of `file`.
fn write(file: &Path, slot: u64, pattern: u8) {
    let cmd = format!("write -P {pattern:#x} {} {CHUNK}", slot * CHUNK);
    run("qemu-io", &["-f", "qcow2", "-c", &cmd, p(file)]);
}

/// Slot → pattern; slots 0..5 not listed read zeroes.
type Layout = BTreeMap<u64, u8>;

/// The snapshots a delete leaves, with their data.
type Survivors<'a> = Vec<(&'a str, Layout)>;

/// Asserts that `file` (qemu-io through its whole backing chain) reads `layout`.
fn assert_reads(file: &Path, layout: &Layout, what: &str) {
    for slot in 0..5 {
        let pattern = layout.get(&slot).copied().unwrap_or(0);
        let cmd = format!("read -P {pattern:#x} {} {CHUNK}", slot * CHUNK);
        let out = Command::new("qemu-io")
            .args(["-f", "qcow2", "-r", "-U", "-c", &cmd, p(file)])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && !text.contains("verification failed"),
            "{what}: {} slot {slot} should read {pattern:#x}: {text}{}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn layout(slots: &[(u64, u8)]) -> Layout {
    slots.iter().copied().collect()
}

/// The per-disk variant of a pattern, so that two disks never hold the same data.
fn on(disk: usize, l: &Layout) -> Layout {
    l.iter()
        .map(|(s, v)| (*s, v.wrapping_add(0x40 * disk as u8)))
        .collect()
}

/// libvirt's `snapshot-dumpxml` of a shut-off disk-only snapshot.
fn snapshot_xml(name: &str, parent: Option<&str>, disks: &[(&str, &str)]) -> String {
    let parent = parent.map_or(String::new(), |p| {
        format!("  <parent>\n    <name>{p}</name>\n  </parent>\n")
    });
    let mut disk_xml = String::new();
    for (target, mode) in disks {
        disk_xml.push_str(&format!("    <disk name='{target}' snapshot='{mode}'/>\n"));
    }
    format!(
        "<domainsnapshot>\n  <name>{name}</name>\n  <state>shutoff</state>\n{parent}  <creationTime>1700000{}</creationTime>\n  <memory snapshot='no'/>\n  <disks>\n{disk_xml}  </disks>\n  <domain type='kvm'>\n    <name>vm</name>\n    <memory unit='KiB'>65536</memory>\n    <os><type arch='x86_64' machine='pc'>hvm</type></os>\n  </domain>\n</domainsnapshot>\n",
        name.len()
    )
}

/// A tree made outside snaptree: s1 → s2 → s3 (current), the live state on s3.
/// Layouts of s1, s2, s3 and the live state, per disk.
struct Tree {
    dir: tempfile::TempDir,
    /// The live image of each disk (what the domain XML names).
    lives: Vec<PathBuf>,
    mode: &'static str,
    /// The snapshots' names, parents first.
    names: [&'static str; 3],
}

fn expected(name_index: usize) -> Layout {
    match name_index {
        0 => layout(&[(0, 0x11)]),
        1 => layout(&[(0, 0x11), (1, 0x22)]),
        2 => layout(&[(0, 0x11), (1, 0x22), (2, 0x33)]),
        _ => layout(&[(0, 0x11), (1, 0x22), (2, 0x33), (3, 0x44)]),
    }
}

const LIVE: usize = 3;

impl Tree {
    /// Two disks, each with internal snapshots tagged by name by `qemu-img snapshot -c`
    /// (s2 by its creation seconds, libvirt's default name: an all-digit tag), and a
    /// foreign tag `keep` that is no snapshot of the domain.
    fn internal() -> Tree {
        let names = ["s1", "1700000100", "s3"];
        let dir = tempfile::tempdir().unwrap();
        let mut lives = Vec::new();
        for d in 0..2 {
            let f = dir.path().join(format!("d{d}.qcow2"));
            run("qemu-img", &["create", "-q", "-f", "qcow2", p(&f), SIZE]);
            run("qemu-img", &["snapshot", "-c", "keep", p(&f)]);
            for (i, (slot, pattern)) in [(0, 0x11u8), (1, 0x22), (2, 0x33)].iter().enumerate() {
                write(&f, *slot, pattern.wrapping_add(0x40 * d as u8));
                run("qemu-img", &["snapshot", "-c", names[i], p(&f)]);
            }
            write(&f, 3, 0x44u8.wrapping_add(0x40 * d as u8));
            lives.push(f);
        }
        Tree {
            dir,
            lives,
            mode: "internal",
            names,
        }
    }

    /// Two disks, each an external chain as libvirt makes one: `d.qcow2` (s1's data) ←
    /// `d.s1` (s2's, libvirt's `<stem>.<name>`) ← `d.1700000100` (s3's; s2 was named by
    /// its creation seconds) ← `top-any.img` (the live image, a script's name: found by
    /// its backing link alone).
    fn external() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let mut lives = Vec::new();
        for d in 0..2 {
            let base = dir.path().join(format!("d{d}.qcow2"));
            run("qemu-img", &["create", "-q", "-f", "qcow2", p(&base), SIZE]);
            let files = [
                base.clone(),
                dir.path().join(format!("d{d}.s1")),
                dir.path().join(format!("d{d}.1700000100")),
                dir.path().join(format!("top-any-{d}.img")),
            ];
            for (i, (slot, pattern)) in [(0, 0x11u8), (1, 0x22), (2, 0x33), (3, 0x44)]
                .iter()
                .enumerate()
            {
                if i > 0 {
                    run(
                        "qemu-img",
                        &[
                            "create",
                            "-q",
                            "-f",
                            "qcow2",
                            "-F",
                            "qcow2",
                            "-b",
                            p(&files[i - 1]),
                            p(&files[i]),
                        ],
                    );
                }
                write(&files[i], *slot, pattern.wrapping_add(0x40 * d as u8));
            }
            lives.push(files[3].clone());
        }
        Tree {
            dir,
            lives,
            mode: "external",
            names: ["s1", "1700000100", "s3"],
        }
    }

    fn domain_xml(&self) -> String {
        let mut xml = String::from("<domain type='qemu'><name>vm</name><devices>");
        for (i, f) in self.lives.iter().enumerate() {
            xml.push_str(&format!(
                "<disk type='file' device='disk' snapshot='{}'><source file='{}'/><target dev='vd{}'/></disk>",
                self.mode,
                f.display(),
                (b'a' + i as u8) as char
            ));
        }
        xml.push_str("</devices></domain>");
        xml
    }

    /// The libvirt documents, parents first.
    fn snapshot_docs(&self) -> Vec<String> {
        let disks = [("vda", self.mode), ("vdb", self.mode)];
        (0..3)
            .map(|i| {
                let parent = (i > 0).then(|| self.names[i - 1]);
                snapshot_xml(self.names[i], parent, &disks)
            })
            .collect()
    }

    /// An engine domain over the tree with every snapshot redefined (adopted), s3 current.
    fn import(&self) -> Domain {
        let xml = self.domain_xml();
        let backend = QemuBackend::open(&xml).unwrap();
        let mut d = Domain::ephemeral(&xml, Box::new(backend)).unwrap();
        for (i, doc) in self.snapshot_docs().iter().enumerate() {
            d.redefine_snapshot(doc, i == 2).unwrap();
        }
        d.check_agreement().unwrap();
        d
    }

    fn assert_live(&self, l: &Layout, what: &str) {
        for (i, f) in self.lives.iter().enumerate() {
            assert_reads(f, &on(i, l), what);
        }
    }
}

fn uuid(d: &mut Domain, name: &str) -> Uuid {
    d.tree().unwrap().require_name(name, "vm").unwrap().uuid
}

fn names(d: &mut Domain) -> Vec<String> {
    let mut n: Vec<String> = d.tree().unwrap().iter().map(|s| s.name.clone()).collect();
    n.sort();
    n
}

/// Reverts to every snapshot in `survivors` (name, layout) and reads its data back.
fn check_survivors(t: &Tree, d: &mut Domain, survivors: &[(&str, Layout)], what: &str) {
    let mut want: Vec<String> = survivors.iter().map(|(n, _)| n.to_string()).collect();
    want.sort();
    assert_eq!(names(d), want, "{what}");
    d.check_agreement().unwrap();
    for (name, l) in survivors {
        let u = uuid(d, name);
        d.revert(&u, None, &mut NoProgress).unwrap();
        t.assert_live(l, &format!("{what}: after reverting to {name}"));
        d.check_agreement().unwrap();
    }
}

fn every_delete_mode(make: fn() -> Tree) {
    if !tools_present() {
        return;
    }
    // Imported, nothing changed: the live state reads as before, then every snapshot
    // reverts to its data.
    let t = make();
    let mut d = t.import();
    t.assert_live(&expected(LIVE), "after the import");
    let [a, b, c] = t.names;
    assert_eq!(d.tree().unwrap().current().unwrap().name, c);
    check_survivors(
        &t,
        &mut d,
        &[(c, expected(2)), (a, expected(0)), (b, expected(1))],
        "imported",
    );

    // Each delete mode on a fresh import: (mode, target, survivors).
    let cases: [(DeleteMode, &str, Survivors<'_>); 7] = [
        (
            DeleteMode::Retire,
            b,
            vec![(a, expected(0)), (c, expected(2))],
        ),
        (
            DeleteMode::Merge,
            b,
            vec![(a, expected(1)), (c, expected(2))],
        ),
        (
            DeleteMode::MergeForce,
            c,
            vec![(a, expected(0)), (b, expected(2))],
        ),
        (
            DeleteMode::Discard,
            c,
            vec![(a, expected(0)), (b, expected(1))],
        ),
        (DeleteMode::DiscardForce, b, vec![(a, expected(0))]),
        (
            DeleteMode::Consolidate,
            a,
            vec![(b, expected(1)), (c, expected(2))],
        ),
        (DeleteMode::ChildrenOnly, a, vec![(a, expected(0))]),
    ];
    for (mode, target, survivors) in cases {
        let t = make();
        let mut d = t.import();
        let what = format!("{} {mode:?} of {target}", t.mode);
        let u = uuid(&mut d, target);
        d.delete(&u, mode, &mut NoProgress)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        // A delete never changes the live state.
        t.assert_live(&expected(LIVE), &what);
        check_survivors(&t, &mut d, &survivors, &what);
        // And delete-all leaves the live image standalone with its data.
        d.delete_all(&mut NoProgress).unwrap();
        assert!(names(&mut d).is_empty());
        d.check_agreement().unwrap();
        let last = survivors.last().unwrap().1.clone();
        t.assert_live(&last, &format!("{what}, then delete-all"));
        drop(d);
        let left: Vec<String> = std::fs::read_dir(t.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.') || n.contains("snaptree") || n.ends_with(".snapshots"))
            .collect();
        assert!(left.is_empty(), "{what}: delete-all left {left:?}");
    }
}

#[test]
fn internal_snapshots_tagged_by_name_are_adopted_and_every_delete_mode_and_revert_works() {
    every_delete_mode(Tree::internal);
    if !tools_present() {
        return;
    }
    // The foreign tag was never touched, even after delete-all.
    let t = Tree::internal();
    let mut d = t.import();
    d.delete_all(&mut NoProgress).unwrap();
    for f in &t.lives {
        let tags = run("qemu-img", &["snapshot", "-l", p(f)]);
        assert!(tags.contains("keep"), "{tags}");
        assert!(
            !tags.contains("s1") && !tags.contains("1700000100") && !tags.contains("s3"),
            "{tags}"
        );
    }
}

#[test]
fn libvirt_style_external_overlays_are_adopted_and_every_delete_mode_and_revert_works() {
    every_delete_mode(Tree::external);
}

#[test]
fn new_snapshots_on_an_adopted_tree_use_snaptree_names_beside_the_adopted_ones() {
    if !tools_present() {
        return;
    }
    for make in [Tree::internal as fn() -> Tree, Tree::external] {
        let t = make();
        let mut d = t.import();
        let n = d
            .create_snapshot("<domainsnapshot><name>n</name></domainsnapshot>")
            .unwrap();
        for (i, f) in t.lives.iter().enumerate() {
            write(f, 4, 0x55u8.wrapping_add(0x40 * i as u8));
        }
        let c = uuid(&mut d, t.names[2]);
        // Merging the adopted s3 into... its child n is not a merge; consolidate s3 away.
        d.delete(&c, DeleteMode::Consolidate, &mut NoProgress)
            .unwrap();
        d.revert(&n, None, &mut NoProgress).unwrap();
        t.assert_live(&expected(LIVE), &format!("{}: n", t.mode));
        let a = uuid(&mut d, t.names[0]);
        d.revert(&a, None, &mut NoProgress).unwrap();
        t.assert_live(&expected(0), &format!("{}: s1", t.mode));
        d.check_agreement().unwrap();
    }
}

#[test]
fn adopting_data_that_is_not_there_is_refused_naming_it_and_changes_nothing() {
    if !tools_present() {
        return;
    }
    for make in [Tree::internal as fn() -> Tree, Tree::external] {
        let t = make();
        let xml = t.domain_xml();
        let mut d = Domain::ephemeral(&xml, Box::new(QemuBackend::open(&xml).unwrap())).unwrap();
        let before = listing(t.dir.path());
        let disks = [("vda", t.mode), ("vdb", t.mode)];
        let docs = t.snapshot_docs();
        let refused = |d: &mut Domain, doc: &str, want: &str| {
            let e = d.redefine_snapshot(doc, false).unwrap_err();
            assert_eq!(e.code(), ErrorCode::OperationInvalid, "{}: {e}", t.mode);
            assert!(e.to_string().contains(want), "{}: {want:?} in {e}", t.mode);
        };
        match t.mode {
            "internal" => {
                // No internal snapshot tagged so.
                refused(&mut d, &snapshot_xml("nowhere", None, &disks), "'nowhere'");
                for doc in &docs {
                    d.redefine_snapshot(doc, false).unwrap();
                }
            }
            _ => {
                d.redefine_snapshot(&docs[0], false).unwrap();
                d.redefine_snapshot(&docs[1], false).unwrap();
                // s3 on s1: the file stored on s1's data holds s2 already.
                refused(
                    &mut d,
                    &snapshot_xml(t.names[2], Some(t.names[0]), &disks),
                    "already holds snapshot",
                );
                d.redefine_snapshot(&docs[2], true).unwrap();
                // Nothing but the live image is stored on s3's data.
                refused(
                    &mut d,
                    &snapshot_xml("extra", Some(t.names[2]), &disks),
                    "no file of the backing chain",
                );
            }
        }
        let mut want: Vec<String> = t.names.iter().map(|n| n.to_string()).collect();
        want.sort();
        assert_eq!(names(&mut d), want, "{}", t.mode);
        let after = listing(t.dir.path());
        // Only the adoption records and the manifests were added; no image changed.
        let added: Vec<&String> = after.keys().filter(|k| !before.contains_key(*k)).collect();
        assert!(
            added.iter().any(|n| n.ends_with(".snaptree.json"))
                && added
                    .iter()
                    .all(|n| n.ends_with(".snaptree.json") || n.ends_with(".snaptree-manifest.xml")),
            "{}: {added:?}",
            t.mode
        );
        for (name, len) in &before {
            assert_eq!(after.get(name), Some(len), "{}: {name} changed", t.mode);
        }
    }
}

/// Every file of `dir` with its size (qcow2 images grow on any write).
fn listing(dir: &Path) -> BTreeMap<String, u64> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect()
}
