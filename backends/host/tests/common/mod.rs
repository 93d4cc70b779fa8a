//! Helpers shared by the host's tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use snaptree_engine::{Error, ErrorCode};

/// Compiles `tests/plugins/hostile.c` with `-D<variant>` into `dir/libsnaptree_backend_<name>.so`.
pub fn compile_hostile(dir: &Path, name: &str, variant: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = dir.join(format!("libsnaptree_backend_{name}.so"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let result = Command::new(&cc)
        .args([
            "-std=c99",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-Wno-unused-function",
            "-Wno-unused-const-variable",
        ])
        .args(["-shared", "-fPIC"])
        .arg(format!("-D{variant}"))
        .arg(format!("-DNAME=\"{name}\""))
        .arg("-I")
        .arg(root.join("../../include"))
        .arg("-o")
        .arg(&out)
        .arg(root.join("tests/plugins/hostile.c"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler '{cc}': {e}"));
    assert!(
        result.status.success(),
        "expected the hostile plugin variant {variant} to compile, got:\n{}",
        String::from_utf8_lossy(&result.stderr)
    );
    out
}

/// Asserts `e` is a PLUGIN error about `file` whose reason contains `why`.
pub fn assert_plugin_error(e: &Error, file: &Path, why: &str) {
    assert_eq!(
        e.code(),
        ErrorCode::Plugin,
        "expected a PLUGIN error, got {e}"
    );
    let Error::Plugin { path, reason } = e else {
        unreachable!()
    };
    let file = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    assert_eq!(
        path,
        &file,
        "expected the error to name {}, got {e}",
        file.display()
    );
    assert!(
        reason.contains(why),
        "expected the reason to contain {why:?}, got {reason:?}"
    );
    assert!(
        e.to_string().contains(&file.display().to_string()),
        "expected the message to name the file: {e}"
    );
}
