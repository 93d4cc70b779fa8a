//! Compiles the C programs of `tests/c/` against `include/snaptree.h` with
//! `cc -std=c99 -Wall -Wextra -Werror -pedantic`, links them with the `libsnaptree.so` this
//! build produced, and runs them under valgrind (`--leak-check=full`, definite leaks and
//! every memory error fail) on each backend:
//!
//! - `null`, built into the engine;
//! - `sim`, the C plugin `libsnaptree_backend_sim.so` (its path from the
//!   `snaptree-backend-sim` crate, loaded with `snaptree_conn_load_backend`);
//! - `qemu`, when `libsnaptree_backend_qemu.so` exists next to this build's binaries (or at
//!   `$SNAPTREE_QEMU_PLUGIN`) and `qemu-img` runs; otherwise the test prints a `SKIPPED:`
//!   line, or fails under CI or with `SNAPTREE_REQUIRE_QEMU=1`.
//!
//! Where the library is: the test executable lives in `target/<profile>/deps/`, which is
//! where cargo puts `libsnaptree.so` when it builds this package's tests (it is copied to
//! `target/<profile>/` by `cargo build`, which may be older); this works for any
//! `CARGO_TARGET_DIR`. The programs get an rpath to that directory, and run with
//! `LD_LIBRARY_PATH` set to it alone (cargo's own value would find the older copy first).
//!
//! Without valgrind, or with `SNAPTREE_NO_VALGRIND=1`, the programs run directly after a
//! `SKIPPED:` line for valgrind's checks; under CI that is a failure (`snaptree_tests::skip`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use snaptree_tests::skip;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `target/<profile>/deps`, where this test runs from.
fn deps_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    exe.parent()
        .expect("the test executable is in a directory")
        .to_path_buf()
}

/// The directory holding the freshly built `libsnaptree.so`.
fn lib_dir() -> PathBuf {
    let deps = deps_dir();
    for dir in [
        deps.clone(),
        deps.parent().map(Path::to_path_buf).unwrap_or_default(),
    ] {
        if dir.join("libsnaptree.so").is_file() {
            return dir;
        }
    }
    panic!(
        "libsnaptree.so is neither in {} nor in its parent: was the cdylib built?",
        deps.display()
    );
}

fn scratch_root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("snaptree-ffi-c");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn compiler() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".into())
}

/// Compiles `tests/c/<name>.c` once per test process and returns the program.
fn program(name: &'static str) -> PathBuf {
    program_in("tests/c", name, &[])
}

/// Compiles `<dir>/<name>.c` (dir relative to the workspace) once per test process, with
/// `extra` arguments after the library, and returns the program.
fn program_in(dir: &str, name: &'static str, extra: &[String]) -> PathBuf {
    static BUILT: Mutex<Vec<(&'static str, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some((_, p)) = built.iter().find(|(n, _)| *n == name) {
        return p.clone();
    }
    let src = workspace().join(dir).join(format!("{name}.c"));
    // Built under a private name, then renamed: another test process running the program
    // keeps its own copy.
    let out = scratch_root().join(name);
    let tmp = scratch_root().join(format!(".{name}-{}", std::process::id()));
    let lib = lib_dir();
    let mut cmd = Command::new(compiler());
    cmd.args([
        "-std=c99",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
        "-g",
        "-O1",
        "-pthread",
    ])
    .arg("-I")
    .arg(workspace().join("include"))
    .arg("-I")
    .arg(workspace().join("tests/c"))
    .arg(&src)
    .arg("-o")
    .arg(&tmp)
    .arg(format!("-L{}", lib.display()))
    // DT_RPATH, not RUNPATH: it wins over an inherited LD_LIBRARY_PATH.
    .arg("-Wl,--disable-new-dtags")
    .arg(format!("-Wl,-rpath,{}", lib.display()))
    .arg("-lsnaptree")
    .args(extra);
    let result = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {}: {e}", compiler()));
    assert!(
        result.status.success(),
        "expected {dir}/{name}.c to compile cleanly with {cmd:?}, got:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::rename(&tmp, &out)
        .unwrap_or_else(|e| panic!("cannot rename {} to {}: {e}", tmp.display(), out.display()));
    built.push((name, out.clone()));
    out
}

/// `valgrind`, or None (after saying so; under CI it fails instead) when it is not
/// installed or `SNAPTREE_NO_VALGRIND=1` turns it off.
fn valgrind() -> Option<&'static str> {
    static FOUND: OnceLock<bool> = OnceLock::new();
    let found = *FOUND.get_or_init(|| {
        Command::new("valgrind")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    });
    let why = if std::env::var_os("SNAPTREE_NO_VALGRIND").is_some_and(|v| v == "1") {
        "SNAPTREE_NO_VALGRIND=1 turns valgrind off, so the programs run without it"
    } else if !found {
        "valgrind is not installed, so the programs run without it"
    } else {
        return Some("valgrind");
    };
    skip::cannot_run("valgrind's checks of the C API programs", why);
    None
}

/// One backend's settings for the C programs.
struct Backend {
    name: &'static str,
    plugin: Option<PathBuf>,
    domain_xml: Option<&'static str>,
    bad_xml: Option<&'static str>,
    prepare: Option<&'static str>,
    offline: bool,
}

fn null() -> Backend {
    Backend {
        name: "null",
        plugin: None,
        domain_xml: None,
        bad_xml: None,
        prepare: None,
        offline: false,
    }
}

fn sim() -> Backend {
    Backend {
        name: "sim",
        plugin: Some(snaptree_backend_sim::plugin_path().to_path_buf()),
        domain_xml: Some(
            "<domain type='sim'><name>@NAME@</name><sim dir='@DIR@/layers'/></domain>",
        ),
        // No <sim dir>: defined fine, but the plugin refuses to open it.
        bad_xml: Some("<domain type='sim'><name>@NAME@</name></domain>"),
        prepare: None,
        offline: false,
    }
}

/// The qemu backend when its plugin and qemu-img are here.
fn qemu() -> Option<Backend> {
    // `cargo build` leaves it in target/<profile>/, a build of the qemu crate as a
    // dependency in deps/: take the newer.
    let plugin = std::env::var_os("SNAPTREE_QEMU_PLUGIN")
        .map(PathBuf::from)
        .or_else(|| {
            let deps = deps_dir();
            [
                deps.parent().map(|p| p.join("libsnaptree_backend_qemu.so")),
                Some(deps.join("libsnaptree_backend_qemu.so")),
            ]
            .into_iter()
            .flatten()
            .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
            .max()
            .map(|(_, p)| p)
        });
    let have_qemu_img = Command::new("qemu-img")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let why = match (&plugin, have_qemu_img) {
        (Some(p), true) if p.is_file() => None,
        (Some(p), true) => Some(format!("{} does not exist", p.display())),
        (None, _) => Some(format!(
            "libsnaptree_backend_qemu.so is not built next to {}",
            deps_dir().display()
        )),
        (Some(_), false) => Some("qemu-img cannot be run".to_string()),
    };
    if let Some(why) = why {
        let what = "the C API test on the qemu backend";
        assert!(
            std::env::var_os("SNAPTREE_REQUIRE_QEMU").is_none_or(|v| v != "1"),
            "{what} cannot run: {why}, and SNAPTREE_REQUIRE_QEMU=1"
        );
        skip::cannot_run(what, &why);
        return None;
    }
    Some(Backend {
        name: "qemu",
        plugin,
        domain_xml: Some(
            "<domain type='qemu'><name>@NAME@</name><devices><disk><source file='@DIR@/disk.qcow2'/>\
             <target dev='vda'/></disk></devices></domain>",
        ),
        bad_xml: Some("<domain type='qemu'><name>@NAME@</name></domain>"),
        prepare: Some("qemu-img create -q -f qcow2 '@DIR@/disk.qcow2' 1M"),
        offline: true,
    })
}

/// Runs a C program on a backend (under valgrind when there is one) and fails with its
/// output unless it exits 0.
fn run(name: &'static str, backend: &Backend, extra_env: &[(&str, &str)]) {
    run_under(name, backend, extra_env, valgrind());
}

/// [`run`], under `valgrind` when it is Some, else directly.
fn run_under(
    name: &'static str,
    backend: &Backend,
    extra_env: &[(&str, &str)],
    valgrind: Option<&'static str>,
) {
    let exe = program(name);
    let scratch = tempfile::Builder::new()
        .prefix(&format!("{name}-{}-", backend.name))
        .tempdir_in(scratch_root())
        .unwrap();
    let not_plugin = scratch.path().join("not-a-plugin.so");
    std::fs::write(&not_plugin, "this is not a shared library\n").unwrap();

    let mut cmd = match valgrind {
        Some(v) => {
            let mut c = Command::new(v);
            c.args([
                "--quiet",
                "--error-exitcode=99",
                "--leak-check=full",
                "--errors-for-leak-kinds=definite",
                "--show-leak-kinds=definite",
                "--track-origins=yes",
            ])
            .arg(format!(
                "--suppressions={}",
                workspace().join("tests/c/valgrind.supp").display()
            ))
            .arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.env("SNAPTREE_TEST_DIR", scratch.path())
        .env("SNAPTREE_TEST_BACKEND", backend.name)
        .env("SNAPTREE_TEST_NOT_PLUGIN", &not_plugin)
        .env("SNAPTREE_STATE_DIR", scratch.path().join("default-state"))
        .env(
            "SNAPTREE_TEST_OFFLINE",
            if backend.offline { "1" } else { "0" },
        )
        // cargo's LD_LIBRARY_PATH may list target/<profile> first, whose libsnaptree.so is
        // whatever `cargo build` last copied there: use exactly this build's library.
        .env("LD_LIBRARY_PATH", lib_dir())
        .env_remove("SNAPTREE_BACKEND_PATH")
        .env_remove("SNAPTREE_LOCK_TIMEOUT_MS");
    for (key, value) in [
        ("SNAPTREE_TEST_DOMAIN_XML", backend.domain_xml),
        ("SNAPTREE_TEST_BAD_XML", backend.bad_xml),
        ("SNAPTREE_TEST_PREPARE", backend.prepare),
    ] {
        match value {
            Some(v) => cmd.env(key, v),
            None => cmd.env_remove(key),
        };
    }
    match &backend.plugin {
        Some(p) => cmd.env("SNAPTREE_TEST_PLUGIN", p),
        None => cmd.env_remove("SNAPTREE_TEST_PLUGIN"),
    };
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let started = std::time::Instant::now();
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    print!("{stdout}");
    let how = if valgrind.is_some() {
        "under valgrind"
    } else {
        "without valgrind"
    };
    assert!(
        out.status.success(),
        "tests/c/{name}.c on the {} backend failed {how} ({}; 99 is valgrind's verdict):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        backend.name,
        out.status
    );
    println!(
        "tests/c/{name}.c on {}: passed {how} in {:.1?}",
        backend.name,
        started.elapsed()
    );
}

#[test]
fn api_on_null_backend() {
    run("api_test", &null(), &[]);
}

#[test]
fn api_on_sim_plugin() {
    run("api_test", &sim(), &[]);
}

#[test]
fn api_on_qemu_plugin() {
    if let Some(b) = qemu() {
        run("api_test", &b, &[]);
    }
}

/// SNAPTREE_ERR_INCOMPLETE and snaptree_domain_recover: the fault is a real failed write
/// of the C sim plugin, so this runs on the sim plugin only.
#[test]
fn recover_on_sim_plugin() {
    run("recover_test", &sim(), &[]);
}

/// The C API on a PostgreSQL store: `snaptree_conn_open` given a `postgresql://` URI.
#[test]
fn recover_on_sim_plugin_and_postgresql() {
    let Some(rig) = snaptree_tests::pg_rig::PgRig::start("the C API on PostgreSQL") else {
        return;
    };
    let uri = rig.fresh_db();
    run("recover_test", &sim(), &[("SNAPTREE_TEST_STORE", &uri)]);
}

#[test]
fn fork_on_null_backend() {
    run("fork_test", &null(), &[]);
}

#[test]
fn fork_on_qemu_plugin() {
    if let Some(qemu) = qemu() {
        run("fork_test", &qemu, &[]);
    }
}

/// The child forks while the QEMU backend's thread that closes removed layers is alive
/// (a layer was freed just before): freeing the inherited handles must not wait for, or
/// join, a thread the child does not have. Not under valgrind: the child deliberately
/// leaks what the parent's thread holds, which valgrind's leak check in the child counts
/// as lost (the other fork tests run under it).
#[test]
fn fork_with_a_backend_thread_running_on_qemu_plugin() {
    if let Some(qemu) = qemu() {
        run_under(
            "fork_test",
            &qemu,
            &[("SNAPTREE_TEST_FORK_BUSY", "1")],
            None,
        );
    }
}

#[test]
fn threads_on_null_backend() {
    run("thread_test", &null(), &[("SNAPTREE_TEST_ROUNDS", "12")]);
}

#[test]
fn threads_on_sim_plugin() {
    run("thread_test", &sim(), &[("SNAPTREE_TEST_ROUNDS", "9")]);
}

#[test]
fn threads_on_qemu_plugin() {
    if let Some(b) = qemu() {
        run("thread_test", &b, &[("SNAPTREE_TEST_ROUNDS", "3")]);
    }
}

/// The side-by-side benchmark against libvirt's test driver (`benches/c/side_by_side.c`,
/// run at full size by `scripts/bench`) compiles with this build's header and library, and
/// runs end to end at a small size, so it cannot rot between benchmark runs.
#[test]
fn side_by_side_benchmark_builds_and_runs_at_a_small_size() {
    let flags = Command::new("pkg-config")
        .args(["--cflags", "--libs", "libvirt"])
        .output();
    let flags = match flags {
        Ok(o) if o.status.success() => String::from_utf8(o.stdout).unwrap(),
        _ => {
            skip::cannot_run(
                "the side-by-side benchmark's build",
                "pkg-config finds no libvirt (libvirt-dev, installed by scripts/setup)",
            );
            return;
        }
    };
    let extra: Vec<String> = flags.split_whitespace().map(String::from).collect();
    let exe = program_in("benches/c", "side_by_side", &extra);
    let scratch = tempfile::tempdir_in(scratch_root()).unwrap();
    let out = Command::new(&exe)
        .args(["--lookups", "200", "--state-dir"])
        .arg(scratch.path())
        .args(["50", "1200"])
        .env("LD_LIBRARY_PATH", lib_dir())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the side-by-side benchmark failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    for expected in [
        "1200 snapshots",
        "| lookup by name |",
        "| delete subtree, per snapshot |",
        "list names, the floor",
    ] {
        assert!(stdout.contains(expected), "no '{expected}' in:\n{stdout}");
    }
}
