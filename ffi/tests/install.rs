//! `scripts/install-capi` installs the library, the header and `snaptree.pc` under a prefix,
//! and a C program builds against the result with nothing but `pkg-config`: linked with the
//! shared library (`--cflags --libs`), and with the static one (`--static`, which brings
//! the system libraries a Rust static library needs).
//!
//! The libraries installed are the ones this test build made (`--lib-dir`), so the test does
//! not build a release copy.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The directory with this build's `libsnaptree.so` and `libsnaptree.a`.
fn lib_dir() -> PathBuf {
    let deps = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .to_path_buf();
    for dir in [deps.clone(), deps.parent().unwrap().to_path_buf()] {
        if dir.join("libsnaptree.so").is_file() && dir.join("libsnaptree.a").is_file() {
            return dir;
        }
    }
    panic!(
        "libsnaptree.so and libsnaptree.a are not in {} or its parent",
        deps.display()
    );
}

fn ok(what: &str, out: Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn pkg_config(prefix: &Path, args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("snaptree")
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig"))
        .env_remove("PKG_CONFIG_LIBDIR")
        .env_remove("PKG_CONFIG_SYSROOT_DIR")
        .output()
        .expect("pkg-config runs");
    ok(&format!("pkg-config {args:?} snaptree"), out)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn run_smoke(exe: &Path, state: &Path) {
    let out = Command::new(exe)
        .arg(state)
        .env_remove("LD_LIBRARY_PATH")
        .output()
        .unwrap();
    let stdout = ok(&format!("{}", exe.display()), out);
    assert_eq!(stdout, "snapshot first\nuuid length 36\nok\n");
}

#[test]
fn installs_under_a_prefix_and_builds_with_pkg_config() {
    let tmp = tempfile::Builder::new()
        .prefix("install-capi-")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let prefix = tmp.path().join("prefix");
    let out = Command::new("sh")
        .arg(workspace().join("scripts/install-capi"))
        .arg("--lib-dir")
        .arg(lib_dir())
        .arg(&prefix)
        .output()
        .unwrap();
    ok("scripts/install-capi", out);
    for f in [
        "lib/libsnaptree.so",
        "lib/libsnaptree.a",
        "include/snaptree.h",
        "lib/pkgconfig/snaptree.pc",
    ] {
        assert!(
            prefix.join(f).is_file(),
            "{f} was not installed under {}",
            prefix.display()
        );
    }
    let installed = std::fs::read_to_string(prefix.join("include/snaptree.h")).unwrap();
    assert_eq!(
        installed,
        std::fs::read_to_string(workspace().join("include/snaptree.h")).unwrap()
    );

    let version = pkg_config(&prefix, &["--modversion"]);
    assert_eq!(version, [env!("CARGO_PKG_VERSION")]);
    let cflags = pkg_config(&prefix, &["--cflags"]);
    assert_eq!(cflags, [format!("-I{}", prefix.join("include").display())]);
    let libs = pkg_config(&prefix, &["--libs"]);
    assert_eq!(
        libs,
        [
            format!("-L{}", prefix.join("lib").display()),
            "-lsnaptree".to_string()
        ]
    );

    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let src = workspace().join("tests/c/pkgconfig_smoke.c");
    let strict = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"];

    // Shared: exactly what pkg-config says, plus an rpath to find the library at run time.
    let shared = tmp.path().join("smoke-shared");
    let out = Command::new(&cc)
        .args(strict)
        .arg(&src)
        .args(&cflags)
        .args(&libs)
        .arg(format!("-Wl,-rpath,{}", prefix.join("lib").display()))
        .arg("-o")
        .arg(&shared)
        .output()
        .unwrap();
    ok(
        "compiling tests/c/pkgconfig_smoke.c against the shared library",
        out,
    );
    run_smoke(&shared, &tmp.path().join("state-shared"));

    // Static: the archive, then the system libraries of `--static --libs`.
    let static_libs: Vec<String> = pkg_config(&prefix, &["--static", "--libs"])
        .into_iter()
        .filter(|f| f != "-lsnaptree" && !f.starts_with("-L"))
        .collect();
    assert!(
        static_libs.iter().any(|l| l == "-lpthread"),
        "Libs.private lacks -lpthread: {static_libs:?}"
    );
    let statik = tmp.path().join("smoke-static");
    let out = Command::new(&cc)
        .args(strict)
        .arg(&src)
        .args(&cflags)
        .arg(prefix.join("lib/libsnaptree.a"))
        .args(&static_libs)
        .arg("-o")
        .arg(&statik)
        .output()
        .unwrap();
    ok(
        "compiling tests/c/pkgconfig_smoke.c against the static library",
        out,
    );
    run_smoke(&statik, &tmp.path().join("state-static"));
    // The static program does not need the shared library.
    let needed = Command::new("sh")
        .arg("-c")
        .arg(format!("ldd '{}'", statik.display()))
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&needed.stdout).contains("libsnaptree"),
        "the static program links libsnaptree.so"
    );
}
