//! Changing the shape of a backing chain: commit and rebase.

use std::path::Path;

use crate::cmd::Cmd;
use crate::error::Result;

/// Merges `top` into its immediate backing file and empties `top`, which stays in the chain.
///
/// Runs `qemu-img commit -f qcow2 -p TOP` without `-b`: with `-b` qemu-img commits several
/// layers at once and leaves the layers in between invalid. Emptying `top` (no `-d`) keeps the
/// chain correct whether the caller then drops `top` or keeps using it. Every other image backed
/// by the same backing file sees its content change: that is the caller's to prevent.
///
/// To remove a layer MID from the middle of BASE ← MID ← TOP, commit MID then
/// `rebase_unsafe(TOP, Some(BASE))`: after the commit BASE holds what MID held, so TOP's view
/// is unchanged.
pub fn commit(top: &Path, progress: &mut dyn FnMut(f64)) -> Result<()> {
    Cmd::qemu_img("commit", top)
        .arg("-f")
        .arg("qcow2")
        .arg("-p")
        .path(top)
        .run_with_progress(progress)?;
    Ok(())
}

/// Moves `top` onto `new_backing` (or onto nothing, flattening it) keeping its guest view.
///
/// qemu-img copies into `top` every cluster where the old and new backing differ, so the data
/// is preserved; both backings must be readable. With `None` (`-b ''`) `top` becomes a
/// standalone image holding the whole content.
pub fn rebase_safe(
    top: &Path,
    new_backing: Option<&Path>,
    progress: &mut dyn FnMut(f64),
) -> Result<()> {
    backing_args(Cmd::qemu_img("rebase", top).arg("-p"), top, new_backing)
        .run_with_progress(progress)?;
    Ok(())
}

/// Rewrites the backing file name in `top`'s header without copying anything (`-u`).
///
/// Only correct when `new_backing` has the same content as the old backing where `top` is not
/// allocated (e.g. after committing the old backing into the new one). With `None` the old
/// backing's data is simply lost to `top`.
pub fn rebase_unsafe(top: &Path, new_backing: Option<&Path>) -> Result<()> {
    backing_args(Cmd::qemu_img("rebase", top).arg("-u"), top, new_backing).run()?;
    Ok(())
}

fn backing_args(cmd: Cmd, top: &Path, new_backing: Option<&Path>) -> Cmd {
    let cmd = cmd.arg("-f").arg("qcow2");
    let cmd = match new_backing {
        Some(backing) => cmd.arg("-b").path(backing).arg("-F").arg("qcow2"),
        None => cmd.arg("-b").arg(""),
    };
    cmd.path(top)
}
