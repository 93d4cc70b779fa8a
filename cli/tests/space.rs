//! Space through the CLI on a real 40 MiB tmpfs (mounted by the test, as root): the
//! `--dry-run` space lines, `snapshot-list --size` (table and JSON), a NO_SPACE refusal
//! (exit 24) with its hint of what to delete first, and `--size`'s Frees of a leaf matching
//! what a DISCARD of it then frees by `stat -f` (df) before and after, on a branched tree.
//!
//! Needs the QEMU plugin beside the `snaptree` binary (`cargo build -p
//! snaptree-backend-qemu`), qemu-img and qemu-io.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

const MIB: u64 = 1 << 20;

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

struct Tmpfs(tempfile::TempDir);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

fn mount() -> Option<Tmpfs> {
    let dir = tempfile::tempdir().unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=40m", "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        snaptree_tests::skip::cannot_run(
            "CLI space on a tmpfs",
            "mount -t tmpfs failed (root is needed)",
        );
        return None;
    }
    Some(Tmpfs(dir))
}

fn ready() -> bool {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_snaptree"));
    let plugin = exe.with_file_name("libsnaptree_backend_qemu.so");
    let tools = ["qemu-img", "qemu-io"]
        .iter()
        .all(|t| Command::new(t).arg("--version").output().is_ok());
    if plugin.is_file() && tools {
        return true;
    }
    snaptree_tests::skip::cannot_run(
        "CLI space tests",
        "needs qemu-img, qemu-io and the qemu plugin beside the snaptree binary (cargo build -p snaptree-backend-qemu)",
    );
    false
}

/// Free bytes by `stat -f` (available blocks times the block size).
fn free(dir: &Path) -> u64 {
    let out = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut it = text.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    it.next().unwrap() * it.next().unwrap()
}

fn write(disk: &Path, pattern: u8, at: u64, len: u64) {
    let cmd = format!("write -P {pattern:#x} {at} {len}");
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", &cmd, p(disk)])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The bytes a `--dry-run` says the plan writes on the file system mounted at `mount`.
fn space_need(dry: &str, mount: &str) -> u64 {
    let line = dry
        .lines()
        .find(|l| l.contains(&format!("space on {mount}:")))
        .unwrap_or_else(|| panic!("no space line for {mount}:\n{dry}"));
    line.split("writes ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap()
        .parse()
        .unwrap()
}

/// Fills the file system at `dir` with a file until `left` bytes are free; the file.
fn leave_free(dir: &Path, left: u64) -> PathBuf {
    let filler = dir.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    f.write_all(&vec![1u8; (free(dir) - left) as usize])
        .unwrap();
    f.sync_all().unwrap();
    filler
}

/// The row of `name` in a `snapshot-list --size` table: (Held, Frees).
fn size_row(table: &str, name: &str) -> (u64, u64) {
    let line = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no row {name} in\n{table}"));
    let cols: Vec<&str> = line.split_whitespace().collect();
    let n = cols.len();
    (cols[n - 2].parse().unwrap(), cols[n - 1].parse().unwrap())
}

#[test]
fn dry_run_size_refusal_and_discard_on_a_small_file_system() {
    if !ready() {
        return;
    }
    let Some(fs) = mount() else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| common::run(state.path(), args);
    let ok = |args: &[&str]| common::ok(state.path(), args);
    let disk = fs.0.path().join("vm.qcow2");
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", p(&disk), "16M"])
        .status()
        .unwrap();
    assert!(out.success());
    let xml = state.path().join("vm.xml");
    std::fs::write(
        &xml,
        format!(
            "<domain type='qemu'><name>vm</name><devices><disk type='file' device='disk' snapshot='external'>\
             <source file='{}'/><target dev='vda'/></disk></devices></domain>",
            disk.display()
        ),
    )
    .unwrap();
    let listing = ok(&["backends"]);
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("qemu") && l.contains(", estimate")),
        "the qemu plugin estimates: {listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("sim") && !l.contains("estimate")),
        "the sim does not: {listing}"
    );
    ok(&["define", p(&xml)]);
    // a → b, a → c (live on c): a branched tree.
    write(&disk, 0xa1, 0, 4 * MIB);
    ok(&["snapshot-create-as", "vm", "--name", "a"]);
    write(&disk, 0xb2, 4 * MIB, 5 * MIB);
    ok(&["snapshot-create-as", "vm", "--name", "b"]);
    ok(&["snapshot-revert", "vm", "a"]);
    write(&disk, 0xc3, 8 * MIB, 3 * MIB);
    ok(&["snapshot-create-as", "vm", "--name", "c"]);
    write(&disk, 0xd4, 12 * MIB, MIB);

    let mount = fs.0.path().display().to_string();
    let dry = ok(&["snapshot-delete", "vm", "a", "--consolidate", "--dry-run"]);
    let need = space_need(&dry, &mount);
    assert!(need > MIB, "{dry}");

    let table = ok(&["snapshot-list", "vm", "--size"]);
    assert!(table.contains("Held") && table.contains("Frees"), "{table}");
    let (b_held, b_frees) = size_row(&table, "b");
    // b is a leaf nothing depends on: freeing it copies nothing; only the manifest
    // rewritten beside the disk counts (its old block in Held, a new one larger in
    // what is written).
    assert!(b_frees <= b_held && b_held - b_frees <= 8192, "{table}");
    assert!(b_frees >= 5 * MIB, "{table}");
    let json = ok(&["snapshot-list", "vm", "--size", "--json"]);
    let doc: serde_json::Value = serde_json::from_str(&json).unwrap();
    let b = doc["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "b")
        .unwrap();
    assert_eq!(b["frees_bytes"], b_frees, "{json}");
    assert_eq!(b["held_bytes"], b_held, "{json}");

    // Leave one page less than the consolidate needs: NO_SPACE, exit 10 + 14, a hint.
    let left = need.div_ceil(4096) * 4096 - 4096;
    let filler = leave_free(fs.0.path(), left);
    assert_eq!(free(fs.0.path()), left);
    let refused = run(&["snapshot-delete", "vm", "a", "--consolidate"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(24), "{err}");
    assert!(
        err.contains(&format!("needs {need} bytes"))
            && err.contains(&format!(
                "on the file system at {mount} but only {left} bytes"
            )),
        "{err}"
    );
    assert!(err.contains("hint:") && err.contains("'b' (frees"), "{err}");
    assert_eq!(free(fs.0.path()), left, "nothing ran");
    std::fs::remove_file(&filler).unwrap();

    // DISCARD of b frees what --size said, by stat -f before and after.
    let before = free(fs.0.path());
    ok(&["snapshot-delete", "vm", "b", "--delete"]);
    let after = free(fs.0.path());
    // The manifest beside the disk is estimated a block larger than it becomes.
    assert!(
        (b_frees..=b_frees + 4096).contains(&(after - before)),
        "--size said {b_frees}; df before {before}, after {after}"
    );
}

/// The hint after a NO_SPACE refusal counts only what each delete frees on the file system
/// that is short: with one disk on each of two tmpfs, the snapshot whose data sits on the
/// other file system is not offered for what it frees there.
#[test]
fn the_no_space_hint_counts_the_short_file_system_only() {
    if !ready() {
        return;
    }
    let (Some(fs_a), Some(fs_b)) = (mount(), mount()) else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| common::run(state.path(), args);
    let ok = |args: &[&str]| common::ok(state.path(), args);
    let disk_a = fs_a.0.path().join("a.qcow2");
    let disk_b = fs_b.0.path().join("b.qcow2");
    for disk in [&disk_a, &disk_b] {
        let made = Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", p(disk), "16M"])
            .status()
            .unwrap();
        assert!(made.success());
    }
    let xml = state.path().join("vm.xml");
    std::fs::write(
        &xml,
        format!(
            "<domain type='qemu'><name>vm</name><devices>\
             <disk type='file' device='disk' snapshot='external'><source file='{}'/><target dev='vda'/></disk>\
             <disk type='file' device='disk' snapshot='external'><source file='{}'/><target dev='vdb'/></disk>\
             </devices></domain>",
            disk_a.display(),
            disk_b.display()
        ),
    )
    .unwrap();
    ok(&["define", p(&xml)]);
    // root → on_a (6 MiB of its own on disk a), root → on_b (6 MiB on disk b),
    // root → live (live state on it).
    write(&disk_a, 0x11, 0, 4 * MIB);
    write(&disk_b, 0x11, 0, 4 * MIB);
    ok(&["snapshot-create-as", "vm", "--name", "root"]);
    write(&disk_a, 0xa1, 4 * MIB, 6 * MIB);
    ok(&["snapshot-create-as", "vm", "--name", "on_a"]);
    ok(&["snapshot-revert", "vm", "root"]);
    write(&disk_b, 0xb1, 4 * MIB, 6 * MIB);
    ok(&["snapshot-create-as", "vm", "--name", "on_b"]);
    ok(&["snapshot-revert", "vm", "root"]);
    ok(&["snapshot-create-as", "vm", "--name", "live"]);
    write(&disk_a, 0xc1, 12 * MIB, MIB);
    write(&disk_b, 0xc1, 12 * MIB, MIB);

    // Consolidating root writes its data into its children on both file systems: leave
    // file system b one page short.
    let mount_b = fs_b.0.path().display().to_string();
    let dry = ok(&[
        "snapshot-delete",
        "vm",
        "root",
        "--consolidate",
        "--dry-run",
    ]);
    let need = space_need(&dry, &mount_b);
    let left = need.div_ceil(4096) * 4096 - 4096;
    leave_free(fs_b.0.path(), left);
    let refused = run(&["snapshot-delete", "vm", "root", "--consolidate"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(24), "expected NO_SPACE: {err}");
    assert!(
        err.contains(&format!("on the file system at {mount_b}")),
        "{err}"
    );
    let hint = err
        .lines()
        .find(|l| l.starts_with("hint:"))
        .unwrap_or_else(|| panic!("expected a hint: {err}"));
    assert!(
        hint.contains(&format!("needed on {mount_b}")) && hint.contains("'on_b' (frees "),
        "expected on_b, whose data is on the short file system, offered: {hint}"
    );
    // on_a's 6 MiB are on the other file system: at most its empty overlay on b counts.
    if let Some(rest) = hint.split("'on_a' (frees ").nth(1) {
        let n: u64 = rest.split(' ').next().unwrap().parse().unwrap();
        assert!(
            n < MIB,
            "expected on_a offered only for what it frees on {mount_b}, not {n} bytes: {hint}"
        );
    }
}
