//! The header compiles cleanly on its own as C99 and as C++.

use std::path::PathBuf;
use std::process::Command;

fn include_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../include")
}

/// Compiles a translation unit that includes only the header, and fails with the
/// compiler's complaints.
fn syntax_check(compiler: &str, args: &[&str], lang: &str) {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("only_header.c");
    // Use every type so a broken typedef cannot hide behind being unused.
    std::fs::write(
        &src,
        "#include <snaptree_backend.h>\n\
         static const snaptree_backend_vtable table = { SNAPTREE_BACKEND_ABI_VERSION, sizeof(snaptree_backend_vtable), \"x\",\n\
             SNAPTREE_CAP(SNAPTREE_STEP_CREATE, SNAPTREE_POWER_MASK_ANY), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };\n\
         const snaptree_backend_vtable *snaptree_backend_entry(void) { return &table; }\n\
         int use_types(snaptree_backend_error *e, snaptree_uuid *u, snaptree_progress_fn p, snaptree_layer_fn l, snaptree_backend_entry_fn f);\n",
    )
    .unwrap();
    let out = Command::new(compiler)
        .args(args)
        .arg("-I")
        .arg(include_dir())
        .arg(&src)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the {lang} compiler '{compiler}': {e}"));
    assert!(
        out.status.success(),
        "expected include/snaptree_backend.h to compile cleanly as {lang} with {compiler} {args:?}, got:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn header_is_clean_c99() {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    syntax_check(
        &cc,
        &[
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
        ],
        "C99",
    );
}

#[test]
fn header_is_clean_cxx() {
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    syntax_check(
        &cxx,
        &[
            "-x",
            "c++",
            "-std=c++11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
        ],
        "C++",
    );
}
