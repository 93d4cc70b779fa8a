//! The disks of a domain as the backend sees them: where the live state is, how the disk keeps
//! its snapshots, and the names of every file the backend keeps for it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use snaptree_engine::Uuid;

/// How one disk keeps its snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// One read-only qcow2 layer per snapshot in the snapshot directory; the live file is an
    /// overlay on the layer it derives from.
    External,
    /// qcow2 internal snapshots inside the live file, tagged with the snapshot uuid.
    Internal,
}

/// One `<disk>` of the domain.
#[derive(Debug, Clone)]
pub(crate) struct Disk {
    /// How messages name the disk: its target device, else its position.
    pub(crate) label: String,
    /// The file named in the domain XML. It always holds the live state, so the domain's
    /// configuration never changes whatever the snapshots do.
    pub(crate) live: PathBuf,
    /// The storage mode.
    pub(crate) mode: Mode,
    /// `<driver discard=...>` (`unmap` or `ignore`): what a live node replacing the disk's
    /// must repeat, since QEMU does not report it.
    pub(crate) discard: Option<String>,
    /// Adopted snapshots and what holds their data (the tag or the file), as the disk's
    /// metadata file records them ([`Disk::meta`]); read again before every step.
    pub(crate) names: BTreeMap<Uuid, String>,
}

/// Temporary file names inside the snapshot directory. They start with a dot, so they can
/// never be mistaken for a layer (`<uuid>.qcow2`).
const FRESH: &str = ".fresh.qcow2";
const STASH: &str = ".stash.qcow2";

impl Disk {
    /// `<dir>/<file>.snapshots`: the per-disk directory of frozen layers (external mode).
    pub(crate) fn dir(&self) -> PathBuf {
        self.beside(".snapshots")
    }

    /// The layer holding snapshot `uuid`: the file it was adopted with, else its own,
    /// named by uuid, never by the user's name, so a rename never moves data.
    pub(crate) fn layer(&self, uuid: &Uuid) -> PathBuf {
        match self.names.get(uuid) {
            Some(file) => PathBuf::from(file),
            None => self.dir().join(format!("{uuid}.qcow2")),
        }
    }

    /// The internal snapshot tag of snapshot `uuid`: the tag it was adopted with, else its
    /// uuid, never the user's name (qemu-img accepts duplicate tags).
    pub(crate) fn tag(&self, uuid: &Uuid) -> String {
        match self.names.get(uuid) {
            Some(tag) => tag.clone(),
            None => uuid.to_string(),
        }
    }

    /// Where a new overlay is built before it is renamed into place.
    pub(crate) fn fresh(&self) -> PathBuf {
        self.dir().join(FRESH)
    }

    /// Where a revert keeps the old live file until the step can no longer be undone.
    pub(crate) fn stash(&self) -> PathBuf {
        self.dir().join(STASH)
    }

    /// `<dir>/<file>.snaptree.json`: the physical tree of an internal-mode disk, which qemu
    /// does not record.
    pub(crate) fn meta(&self) -> PathBuf {
        self.beside(".snaptree.json")
    }

    /// The snapshot whose layer `path` is, if it is one: an adopted file, or a
    /// `<uuid>.qcow2` in our directory.
    pub(crate) fn layer_uuid(&self, path: &Path) -> Option<Uuid> {
        if self.mode == Mode::External
            && let Some((u, _)) = self.names.iter().find(|(_, f)| Path::new(f) == path)
        {
            return Some(*u);
        }
        if path.parent()? != self.dir() {
            return None;
        }
        layer_name_uuid(path.file_name()?.to_str()?)
    }

    /// The disk as messages name it: `disk 'vda' (/vm/a.qcow2)`.
    pub(crate) fn describe(&self) -> String {
        format!("disk '{}' ({})", self.label, self.live.display())
    }

    /// A name beside the disk file: the file name with `suffix` appended.
    pub(crate) fn beside(&self, suffix: &str) -> PathBuf {
        let mut name = self.live.file_name().unwrap_or_default().to_os_string();
        name.push(suffix);
        self.live.with_file_name(name)
    }
}

/// The marker of the restart record `RefcountUpdate` (`records.rs`) for
/// internal-mode image `image`: `<image>.snaptree-refcounts` beside it.
pub(crate) fn refcount_marker(image: &Path) -> PathBuf {
    let mut name = image.file_name().unwrap_or_default().to_os_string();
    name.push(".snaptree-refcounts");
    image.with_file_name(name)
}

/// The uuid in a layer file name `<uuid>.qcow2`, written the way [`Disk::layer`] writes it.
pub(crate) fn layer_name_uuid(name: &str) -> Option<Uuid> {
    let stem = name.strip_suffix(".qcow2")?;
    let uuid = Uuid::parse_str(stem).ok()?;
    (uuid.to_string() == stem).then_some(uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disk(live: &str) -> Disk {
        Disk {
            label: "vda".into(),
            live: PathBuf::from(live),
            mode: Mode::External,
            discard: None,
            names: BTreeMap::new(),
        }
    }

    #[test]
    fn names_every_file_beside_the_disk() {
        let d = &disk("/vm/a.qcow2");
        let u = Uuid::from_u128(7);
        assert_eq!(d.dir(), Path::new("/vm/a.qcow2.snapshots"));
        assert_eq!(
            d.layer(&u),
            Path::new("/vm/a.qcow2.snapshots/00000000-0000-0000-0000-000000000007.qcow2")
        );
        assert_eq!(d.layer_uuid(&d.layer(&u)), Some(u));
        assert_eq!(d.layer_uuid(&d.fresh()), None);
        assert_eq!(
            d.layer_uuid(Path::new(
                "/elsewhere/00000000-0000-0000-0000-000000000007.qcow2"
            )),
            None
        );
        assert_eq!(d.meta(), Path::new("/vm/a.qcow2.snaptree.json"));
        assert_eq!(d.mode, Mode::External);
    }

    #[test]
    fn only_canonical_uuid_names_are_layers() {
        assert!(layer_name_uuid("00000000-0000-0000-0000-000000000007.qcow2").is_some());
        assert!(layer_name_uuid("00000000000000000000000000000007.qcow2").is_none());
        assert!(layer_name_uuid(".fresh.qcow2").is_none());
    }
}
