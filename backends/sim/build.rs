//! Builds the C sources in `csrc/` into the plugin `libsnaptree_backend_sim.so`.
//!
//! The cc crate builds static archives, so this script asks it only for the compiler (with
//! cargo's target, optimisation and PIC flags) and links the shared object itself. The
//! result goes to OUT_DIR, its path to the crate as `SNAPTREE_SIM_PLUGIN`, and a copy next
//! to the workspace's binaries in `target/<profile>/`, where the plugin host looks (the
//! directory of the running executable) so a freshly built `snaptree` finds it.

use std::path::{Path, PathBuf};

const PLUGIN: &str = "libsnaptree_backend_sim.so";
const SOURCES: [&str; 7] = [
    "sim.c", "chain.c", "store.c", "map.c", "layer.c", "domain.c", "error.c",
];

fn main() {
    let manifest =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let include = manifest.join("../../include");
    let csrc = manifest.join("csrc");
    println!(
        "cargo:rerun-if-changed={}",
        include.join("snaptree_backend.h").display()
    );
    println!("cargo:rerun-if-changed={}", csrc.display());
    for s in SOURCES {
        println!("cargo:rerun-if-changed={}", csrc.join(s).display());
    }
    println!("cargo:rerun-if-changed={}", csrc.join("sim.h").display());

    let compiler = cc::Build::new().pic(true).get_compiler();
    let plugin = out_dir.join(PLUGIN);
    let mut cmd = compiler.to_command();
    cmd.args([
        "-std=c99",
        "-Wall",
        "-Wextra",
        "-Werror",
        "-pedantic",
        "-fvisibility=hidden",
        "-shared",
    ])
    .arg("-I")
    .arg(&include)
    .arg("-o")
    .arg(&plugin)
    .args(SOURCES.iter().map(|s| csrc.join(s)));
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {:?}: {e}", compiler.path()));
    assert!(
        status.success(),
        "the C compiler failed to build {PLUGIN}: {cmd:?}"
    );
    println!("cargo:rustc-env=SNAPTREE_SIM_PLUGIN={}", plugin.display());

    if let Some(bin_dir) = binaries_dir(&out_dir) {
        install(&plugin, &bin_dir.join(PLUGIN));
    } else {
        println!(
            "cargo:warning=cannot tell the binaries directory from {}; {PLUGIN} is not copied",
            out_dir.display()
        );
    }
}

/// `target/<profile>` from `target/<profile>/build/<pkg>-<hash>/out`.
fn binaries_dir(out_dir: &Path) -> Option<PathBuf> {
    let build = out_dir.parent()?.parent()?;
    (build.file_name()? == "build")
        .then(|| build.parent().map(Path::to_path_buf))
        .flatten()
}

/// Copies through a temporary file and a rename: a running process that has the old
/// plugin mapped keeps its inode, where overwriting it in place would crash the process.
fn install(from: &Path, to: &Path) {
    let tmp = to.with_file_name(format!(".{PLUGIN}.{}.tmp", std::process::id()));
    std::fs::copy(from, &tmp)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), tmp.display()));
    std::fs::rename(&tmp, to)
        .unwrap_or_else(|e| panic!("cannot rename {} to {}: {e}", tmp.display(), to.display()));
}
