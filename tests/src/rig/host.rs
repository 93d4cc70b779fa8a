//! What the host offers the rig: the QEMU binary, KVM or TCG, and `setpriv`.

use std::env;
use std::fs::OpenOptions;
use std::path::PathBuf;

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation through `/dev/kvm`.
    Kvm,
    /// QEMU's own translator, available everywhere.
    Tcg,
}

impl Accel {
    /// KVM when `/dev/kvm` can be opened read-write by this process (existing is not
    /// enough: a container may show the node without granting it), TCG otherwise.
    /// `SNAPTREE_QEMU_ACCEL=tcg` (or `kvm`) overrides, to test the fallback on a KVM host.
    pub fn detect() -> Accel {
        match env::var("SNAPTREE_QEMU_ACCEL").as_deref() {
            Ok("tcg") => return Accel::Tcg,
            Ok("kvm") => return Accel::Kvm,
            _ => {}
        }
        let usable = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok();
        if usable { Accel::Kvm } else { Accel::Tcg }
    }

    /// The value of QEMU's `-accel` option.
    pub fn as_arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// The QEMU binary: `SNAPTREE_QEMU_SYSTEM` if set, else `qemu-system-x86_64` on `PATH`.
pub fn qemu_binary() -> PathBuf {
    env::var_os("SNAPTREE_QEMU_SYSTEM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("qemu-system-x86_64"))
}

/// True when the QEMU binary, `qemu-img` and `qemu-io` can all be found, so tests can skip
/// (or, under CI, fail) when they cannot.
pub fn qemu_available() -> bool {
    find_in_path(&qemu_binary()).is_some()
        && find_in_path(&PathBuf::from("qemu-img")).is_some()
        && find_in_path(&PathBuf::from("qemu-io")).is_some()
}

/// The full path of `program`: itself when it names a directory, else found on `PATH`.
pub(crate) fn find_in_path(program: &PathBuf) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.clone());
    }
    env::split_paths(&env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}
