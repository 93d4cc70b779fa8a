//! A reader that closes the pipe early (`snaptree snapshot-list vm --json | head -1`) ends
//! every command quietly, as it ends `ls`: no panic, no backtrace, exit code 0, and the
//! command's work done.

use std::path::Path;
use std::process::{Command, Output, Stdio};

fn snaptree(state: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_snaptree"));
    c.arg("--state-dir")
        .arg(state)
        .env_remove("SNAPTREE_BACKEND_PATH")
        .env("RUST_BACKTRACE", "1");
    c
}

/// Runs with stdout a pipe that has no reader left: its read end is closed before the
/// command starts, so the command's first write fails with EPIPE, every time.
fn closed_pipe(state: &Path, args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().expect("a pipe");
    drop(reader);
    let child = snaptree(state)
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .expect("snaptree runs");
    child.wait_with_output().expect("snaptree ends")
}

/// Runs with stdout captured; expects success.
fn ok(state: &Path, args: &[&str]) -> String {
    let out = snaptree(state).args(args).output().expect("snaptree runs");
    assert!(
        out.status.success(),
        "expected `snaptree {}` to succeed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn assert_quiet(args: &[&str], out: &Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("panicked")
            && !stderr.contains("Broken pipe")
            && !stderr.contains("backtrace"),
        "expected `snaptree {}` to end quietly on a closed pipe, stderr: {stderr}",
        args.join(" ")
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "expected `snaptree {}` to exit 0 on a closed pipe, stderr: {stderr}",
        args.join(" ")
    );
}

/// The subcommands `snaptree --help` lists.
fn subcommands(state: &Path) -> Vec<String> {
    let help = ok(state, &["--help"]);
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_command_ends_quietly_when_the_reader_closes_the_pipe() {
    let state = tempfile::tempdir().unwrap();
    let s = state.path();
    let files = tempfile::tempdir().unwrap();
    let xml = files.path().join("vm.xml");
    std::fs::write(&xml, "<domain type='null'><name>vm</name></domain>").unwrap();
    let snap = files.path().join("snap.xml");
    std::fs::write(&snap, "<domainsnapshot><name>f</name></domainsnapshot>").unwrap();
    let rdef = files.path().join("redefine.xml");
    std::fs::write(&rdef, "<domainsnapshot><name>g</name></domainsnapshot>").unwrap();
    let rdef = rdef.to_str().unwrap();
    let lv = files.path().join("libvirt.xml");
    std::fs::write(&lv, "<domain type='kvm'><name>vm</name></domain>").unwrap();
    let xml = xml.to_str().unwrap();
    let snap = snap.to_str().unwrap();
    let lv = lv.to_str().unwrap();
    // A QEMU domain with a manifest beside its disk, made in another state directory, for
    // `adopt --dry-run` here.
    let disk = files.path().join("q.qcow2");
    let made = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&disk)
        .arg("1M")
        .status()
        .expect("qemu-img (installed by scripts/setup) runs");
    assert!(made.success());
    let qxml = files.path().join("q.xml");
    std::fs::write(
        &qxml,
        format!(
            "<domain type='qemu'><name>q</name><devices><disk type='file' device='disk' snapshot='external'>\
             <source file='{}'/><target dev='vda'/></disk></devices></domain>",
            disk.display()
        ),
    )
    .unwrap();
    let qxml = qxml.to_str().unwrap();
    let other = tempfile::tempdir().unwrap();
    ok(other.path(), &["define", qxml]);
    ok(other.path(), &["snapshot-create-as", "q", "--name", "m"]);
    ok(s, &["define", xml]);
    for n in ["a", "b", "c"] {
        ok(s, &["snapshot-create-as", "vm", "--name", n]);
    }
    // Each command with its arguments; mutating ones must still have done their work.
    // `store migrate` needs a PostgreSQL to copy into (the rig reports when it cannot start).
    let rig = snaptree_tests::pg_rig::PgRig::shared("store migrate under a closed pipe");
    let uri = rig.as_ref().map(|r| r.fresh_db()).unwrap_or_default();
    let s_text = s.to_str().unwrap().to_string();
    let migrate: &[&str] = &["store", "migrate", "--from", &s_text, "--to", &uri];
    let fixed: &[&[&str]] = &[
        &["--help"],
        &["--version"],
        &["completions", "bash"],
        &["define", xml],
        &["list"],
        &["list", "--json"],
        &["backends"],
        &["backends", "--json"],
        &["snapshot-create-as", "vm", "--name", "d"],
        &["snapshot-create-as", "vm", "--name", "x", "--dry-run"],
        &["snapshot-create", "vm", snap],
        &["snapshot-create", "vm", rdef, "--redefine", "--dry-run"],
        &["export", "vm"],
        &["import-libvirt", lv, rdef, "--dry-run"],
        &["adopt", qxml, "--dry-run"],
        &["snapshot-list", "vm"],
        &["snapshot-list", "vm", "--json"],
        &["snapshot-list", "vm", "--tree"],
        &["snapshot-list", "vm", "--name"],
        &["snapshot-list", "vm", "--parent", "--topological"],
        &["snapshot-info", "vm", "a"],
        &["snapshot-dumpxml", "vm", "a"],
        &["snapshot-current", "vm"],
        &["snapshot-current", "vm", "--name"],
        &["snapshot-parent", "vm", "b"],
        &["start-with-snapshot", "vm", "a"],
        &["snapshot-rename", "vm", "d", "e"],
        &["snapshot-delete", "vm", "f", "--delete"],
        &["recover", "vm"],
        &["reclaim", "vm", "--dry-run"],
        &["reclaim", "vm"],
        &[
            "start-with-snapshot",
            "vm",
            "a",
            "--keep-live=kept",
            "--dry-run",
        ],
        &["start-with-snapshot", "vm", "a", "--keep-live"],
        &["snapshot-create-as", "vm", "--auto", "--expires", "@1"],
        &["snapshot-auto", "vm", "--expires", "7d"],
        &["snapshot-pin", "vm", "a"],
        &["policy", "vm", "last=2"],
        &["policy", "vm", "--json"],
        &["prune", "vm", "--dry-run"],
        &["prune", "--all"],
        &["snapshot-delete-all", "vm", "--dry-run"],
        &["snapshot-delete-all", "vm"],
    ];
    let mut runs: Vec<&[&str]> = fixed.to_vec();
    if rig.is_some() {
        runs.push(migrate);
    }
    runs.push(&["undefine", "vm"]);
    let runs = &runs;
    for args in runs {
        assert_quiet(args, &closed_pipe(s, args));
    }
    let mut covered: Vec<&str> = runs.iter().map(|a| a[0]).collect();
    if rig.is_none() {
        covered.push("store"); // reported as not run above
    }
    for command in subcommands(s) {
        assert!(
            covered.contains(&command.as_str()),
            "expected the closed-pipe test to run `snaptree {command}` too"
        );
    }
    // The work was done although nobody read about it.
    let out = snaptree(s).args(["list"]).output().unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("vm"),
        "expected vm undefined under a closed pipe"
    );
    ok(s, &["define", xml]);
    assert_quiet(
        &["snapshot-create-as"],
        &closed_pipe(s, &["snapshot-create-as", "vm", "--name", "kept"]),
    );
    assert_eq!(ok(s, &["snapshot-list", "vm", "--name"]), "kept\n");
}

#[test]
fn an_error_under_a_closed_pipe_still_says_what_failed() {
    let state = tempfile::tempdir().unwrap();
    let out = closed_pipe(state.path(), &["snapshot-list", "nodom"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(13), "stderr: {stderr}");
    assert!(
        stderr.starts_with("error: ") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
