//! Space (SEMANTICS.md §7.7) on a real small file system: a 40 MiB tmpfs mounted by the
//! test (as root) holding a qcow2 disk with a three-snapshot chain. For create and every
//! physical delete mode, in both storage modes: with less free space than the backend's
//! estimate the operation is refused with NO_SPACE before anything runs (every file's
//! bytes and the free space unchanged); with exactly the estimate free it succeeds and every
//! snapshot keeps its content.
//!
//! The oracles are outside the code under test: free space from `stat -f`, file contents
//! hashed here, snapshot contents from the test hooks' digests (qemu-io reads).

mod common;

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{MIB, create_disks, domain_xml};
use snaptree_backend_qemu::QemuBackend;
use snaptree_engine::{ContentRef, DeleteMode, Domain, ErrorCode, NoProgress, Plan};
use snaptree_qemu_img as qi;

/// A tmpfs of a fixed size mounted on a temporary directory, unmounted when dropped.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    /// Mounts one, or says loudly why it cannot (`cannot_run`) and returns `None`.
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(o) if o.status.success() => Some(SmallFs { dir }),
            Ok(o) => {
                snaptree_tests::skip::cannot_run(
                    "space tests on a small file system",
                    &format!(
                        "mount -t tmpfs failed (root is needed): {}",
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                );
                None
            }
            Err(e) => {
                snaptree_tests::skip::cannot_run(
                    "space tests on a small file system",
                    &format!("mount cannot run: {e}"),
                );
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Free bytes as `stat -f` reports them (available blocks times the block size).
    fn free(&self) -> u64 {
        let out = Command::new("stat")
            .args(["-f", "-c", "%a %S"])
            .arg(self.path())
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        let mut it = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        it.next().unwrap() * it.next().unwrap()
    }

    fn filler(&self) -> PathBuf {
        self.path().join("filler")
    }

    /// Writes a filler file so that exactly `left` bytes (a multiple of the page size)
    /// stay free.
    fn leave_free(&self, left: u64) {
        let _ = std::fs::remove_file(self.filler());
        let free = self.free();
        assert!(left <= free, "cannot leave {left} free: only {free} is");
        let mut f = std::fs::File::create(self.filler()).unwrap();
        let chunk = vec![0x5au8; MIB as usize];
        let mut todo = free - left;
        while todo > 0 {
            let n = todo.min(MIB) as usize;
            f.write_all(&chunk[..n]).unwrap();
            todo -= n as u64;
        }
        f.sync_all().unwrap();
        assert_eq!(self.free(), left, "the filler leaves {left} bytes free");
    }

    /// Another writer: writes until the file system is full (racing whatever else writes).
    fn fill_up(&self) {
        let mut f = std::fs::File::create(self.filler()).unwrap();
        let chunk = vec![0x5au8; 64 * 1024];
        while f.write_all(&chunk).is_ok() {}
        // Flushing what the page cache holds may fail too; the disk is full either way.
        let _ = f.sync_all();
    }

    fn unfill(&self) {
        let _ = std::fs::remove_file(self.filler());
    }

    /// Every file but the filler, with a hash of its bytes.
    fn files(&self) -> BTreeMap<PathBuf, (u64, u64)> {
        let mut out = BTreeMap::new();
        walk(self.path(), &self.filler(), &mut out);
        out
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn walk(dir: &Path, skip: &Path, out: &mut BTreeMap<PathBuf, (u64, u64)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p == skip {
            continue;
        }
        if p.is_dir() {
            walk(&p, skip, out);
        } else {
            let bytes = std::fs::read(&p).unwrap();
            let mut h = std::collections::hash_map::DefaultHasher::new();
            bytes.hash(&mut h);
            out.insert(p, (bytes.len() as u64, h.finish()));
        }
    }
}

/// The disk's virtual size.
const DISK: u64 = 16 * MIB;

/// A domain on one disk in `mode` on the small file system, with the chain A → B → C
/// (current C) and live data on top; each layer holds MiBs of its own pattern.
fn chain(fs: &SmallFs, mode: &'static str) -> Domain {
    let disks = create_disks(fs.path(), &[mode], DISK);
    let xml = domain_xml(&disks, &[mode]);
    let mut d = Domain::ephemeral(&xml, Box::new(QemuBackend::open(&xml).unwrap())).unwrap();
    let disk = &disks[0];
    for (name, pattern, at, len) in [
        (Some("A"), 0xa1, 0, 6 * MIB),
        (Some("B"), 0xb2, 4 * MIB, 5 * MIB),
        (Some("C"), 0xc3, 8 * MIB, 3 * MIB),
        (None, 0xd4, 10 * MIB, 3 * MIB),
    ] {
        qi::io_write_pattern(disk, pattern, at, len).unwrap();
        if let Some(name) = name {
            d.create_snapshot(&format!(
                "<domainsnapshot><name>{name}</name></domainsnapshot>"
            ))
            .unwrap();
        }
    }
    d
}

/// Every snapshot's content digest by name, and the live state's under "live".
fn contents(d: &mut Domain) -> BTreeMap<String, String> {
    let snaps: Vec<(String, snaptree_engine::Uuid)> = d
        .tree()
        .unwrap()
        .topological()
        .into_iter()
        .map(|s| (s.name.clone(), s.uuid))
        .collect();
    let hooks = d.backend().test_hooks().expect("test hooks");
    let mut out: BTreeMap<String, String> = snaps
        .into_iter()
        .map(|(n, u)| (n, hooks.content_digest(ContentRef::Snapshot(u)).unwrap()))
        .collect();
    out.insert(
        "live".into(),
        hooks.content_digest(ContentRef::Live).unwrap(),
    );
    out
}

/// One operation under test.
#[derive(Clone, Copy, Debug)]
enum Op {
    Create,
    Delete(&'static str, DeleteMode),
}

impl Op {
    fn plan(self, d: &mut Domain) -> Plan {
        match self {
            Op::Create => d
                .plan_create("<domainsnapshot><name>N</name></domainsnapshot>")
                .unwrap(),
            Op::Delete(name, mode) => {
                let u = common::uuid(d, name);
                d.plan_delete(&u, mode).unwrap()
            }
        }
    }

    fn run(self, d: &mut Domain) -> snaptree_engine::Result<()> {
        match self {
            Op::Create => d
                .create_snapshot("<domainsnapshot><name>N</name></domainsnapshot>")
                .map(drop),
            Op::Delete(name, mode) => {
                let u = common::uuid(d, name);
                d.delete(&u, mode, &mut NoProgress).map(drop)
            }
        }
    }

    /// The contents expected after the operation: MERGE gives the parent the merged
    /// snapshot's content; create adds N with the live content; the others keep every
    /// survivor's.
    fn expected(self, before: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut want = before.clone();
        match self {
            Op::Create => {
                want.insert("N".into(), before["live"].clone());
            }
            Op::Delete(name, DeleteMode::Merge | DeleteMode::MergeForce) => {
                want.insert("A".into(), before[name].clone());
            }
            _ => {}
        }
        want
    }
}

const OPS: [Op; 7] = [
    Op::Create,
    Op::Delete("B", DeleteMode::Merge),
    Op::Delete("B", DeleteMode::MergeForce),
    Op::Delete("C", DeleteMode::Discard),
    Op::Delete("B", DeleteMode::DiscardForce),
    Op::Delete("B", DeleteMode::Consolidate),
    Op::Delete("A", DeleteMode::ChildrenOnly),
];

/// The estimate of `op` on the small file system: bytes written there.
fn written(d: &mut Domain, fs: &SmallFs, op: Op) -> u64 {
    let plan = op.plan(d);
    let estimate = d
        .estimate_space(&plan)
        .unwrap()
        .expect("the qemu backend estimates offline steps");
    let mount = fs.path().display().to_string();
    let here: Vec<_> = estimate
        .file_systems
        .iter()
        .filter(|f| f.path == mount)
        .collect();
    assert!(
        estimate.file_systems.len() == here.len(),
        "{op:?}: every file is on the small file system {mount}: {estimate:?}"
    );
    here.first().map_or(0, |f| f.written)
}

fn refused_then_fits(mode: &'static str, op: Op) {
    let Some(fs) = SmallFs::mount("40m") else {
        return;
    };
    let mut d = chain(&fs, mode);
    let before = contents(&mut d);
    let names_before = before.keys().cloned().collect::<Vec<_>>();
    let need = written(&mut d, &fs, op);
    let page = 4096;
    assert!(
        need >= page,
        "{mode} {op:?}: every operation here writes: {need}"
    );
    {
        // One page short: refused, nothing changed.
        let short = need.div_ceil(page) * page - page;
        fs.leave_free(short);
        let files = fs.files();
        let err = op.run(&mut d).expect_err("must not fit");
        assert_eq!(err.code(), ErrorCode::NoSpace, "{mode} {op:?}: {err}");
        let text = err.to_string();
        assert!(
            text.contains(&fs.path().display().to_string())
                && text.contains(&format!("needs {need} bytes"))
                && text.contains(&format!("only {short} bytes")),
            "{mode} {op:?}: the message names the file system, the need and the free: {text}"
        );
        assert_eq!(fs.free(), short, "{mode} {op:?}: free space unchanged");
        assert_eq!(fs.files(), files, "{mode} {op:?}: every byte unchanged");
        assert_eq!(
            contents(&mut d),
            before,
            "{mode} {op:?}: contents unchanged"
        );
    }
    // Exactly the estimate free (page-rounded): it runs.
    fs.leave_free(need.div_ceil(page) * page);
    op.run(&mut d)
        .unwrap_or_else(|e| panic!("{mode} {op:?} with {need} bytes free: {e}"));
    fs.unfill();
    let after = contents(&mut d);
    let want: BTreeMap<String, String> = op
        .expected(&before)
        .into_iter()
        .filter(|(n, _)| after.contains_key(n))
        .collect();
    assert_eq!(
        after, want,
        "{mode} {op:?}: survivors' contents ({names_before:?} before)"
    );
    d.check_agreement().unwrap();
}

#[test]
fn external_every_operation_is_refused_when_short_and_runs_when_it_fits() {
    for op in OPS {
        refused_then_fits("external", op);
    }
}

#[test]
fn internal_every_operation_is_refused_when_short_and_runs_when_it_fits() {
    for op in OPS {
        refused_then_fits("internal", op);
    }
}

/// A forced mid-step ENOSPC: another writer fills the file system as soon as a consolidate
/// (by safe rebase, copying 20 MiB into the dependent) reports its first progress. The
/// step fails and is undone with nothing changed, the clusters the rebase had copied are
/// given back (free space as before, measured with the other writer's file removed), every
/// content is intact, and once the space is free again the same delete succeeds.
#[test]
fn a_rebase_that_runs_out_of_space_mid_way_gives_the_space_back() {
    let Some(fs) = SmallFs::mount("64m") else {
        return;
    };
    let disks = create_disks(fs.path(), &["external"], 32 * MIB);
    let xml = domain_xml(&disks, &["external"]);
    let backend = QemuBackend::open(&xml).unwrap();
    let handle = backend.handle();
    handle.set_consolidate_policy(snaptree_backend_qemu::ConsolidatePolicy::AlwaysRebase);
    let mut d = Domain::ephemeral(&xml, Box::new(backend)).unwrap();
    for (name, pattern, at, len) in [
        (Some("A"), 0xa1, 0, 2 * MIB),
        (Some("B"), 0xb2, 2 * MIB, 20 * MIB),
        (Some("C"), 0xc3, 30 * MIB, MIB),
        (None, 0xd4, 31 * MIB, MIB),
    ] {
        qi::io_write_pattern(&disks[0], pattern, at, len).unwrap();
        if let Some(name) = name {
            d.create_snapshot(&format!(
                "<domainsnapshot><name>{name}</name></domainsnapshot>"
            ))
            .unwrap();
        }
    }
    let before = contents(&mut d);
    let free_before = fs.free();
    let op = Op::Delete("B", DeleteMode::Consolidate);
    let need = written(&mut d, &fs, op);
    assert!(
        need >= 20 * MIB && need < free_before,
        "{need} of {free_before}"
    );
    let b = common::uuid(&mut d, "B");
    let mut filled = false;
    let err = d
        .delete(&b, DeleteMode::Consolidate, &mut |_f: f64| {
            if !filled {
                filled = true;
                fs.fill_up();
            }
            true
        })
        .expect_err("the rebase runs out of space");
    assert!(filled, "the step reported progress");
    assert_eq!(err.code(), ErrorCode::Backend, "{err}");
    let text = err.full_message();
    assert!(
        text.contains("No space left on device") && text.contains("nothing was changed"),
        "{text}"
    );
    fs.unfill();
    // The give-back clears what the rebase copied and cuts the file at its image end; when
    // qemu-img had placed a metadata cluster after copied data (it depends on how far the
    // copy got, which depends on timing: seen under load in CI, 1.7-2.0 MB), the copied
    // clusters below it stay allocated in the file (no hole is punched): known gap,
    // ARCHITECTURE.md. Without any give-back the whole copy (about 20 MiB here) would stay.
    let kept = free_before.saturating_sub(fs.free());
    assert!(
        kept <= 4 * MIB,
        "expected the failed step to give back what it took, within 4 MiB of clusters qemu-img placed below its metadata; {kept} bytes are still taken"
    );
    assert_eq!(contents(&mut d), before, "every content intact");
    d.check_agreement().unwrap();
    op.run(&mut d).unwrap();
    let after = contents(&mut d);
    let want: BTreeMap<String, String> = op
        .expected(&before)
        .into_iter()
        .filter(|(n, _)| after.contains_key(n))
        .collect();
    assert_eq!(after, want);
}
