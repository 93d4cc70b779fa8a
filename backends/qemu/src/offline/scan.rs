//! What an external-mode disk holds, as found on disk: its layers and the backing link of
//! each (read from the qcow2 headers), the live file's backing, and any intent record of an
//! interrupted rebase. Reading only; the planners in `external` decide from it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use snaptree_engine::{PhysicalTree, Uuid};

use super::header;
use crate::disk::{Disk, layer_name_uuid};
use crate::error::{QemuError, Result, error};
use crate::records::{Kind, Record};

/// What a qcow2 file is backed by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Backing {
    /// Nothing: a standalone image.
    None,
    /// A snapshot layer of this disk.
    Layer(Uuid),
    /// A file outside the snapshot directory (the disk's own backing from before snaptree):
    /// the bottom of the chain, read but never written.
    Outside(PathBuf),
}

/// A file that depends on a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dep {
    /// Another layer (a child snapshot, or a retired one).
    Layer(Uuid),
    /// The live file.
    Live,
}

/// The layers of one disk and their backing links, as found on disk.
#[derive(Debug, Clone)]
pub(crate) struct Scan {
    /// Every layer with its backing.
    pub(crate) layers: BTreeMap<Uuid, Backing>,
    /// The live file's backing; `None` when the live file is missing.
    pub(crate) live: Option<Backing>,
    /// Other files in the snapshot directory (leftovers of an interrupted step).
    pub(crate) strays: Vec<PathBuf>,
    /// A safe rebase that may have been interrupted ([`Record::Rebase`]). The backing
    /// links above are as they will be once it is undone, which the plan of any step does
    /// first.
    pub(crate) rebase: Option<Record>,
}

impl Scan {
    /// Reads the snapshot directory and every header in it.
    pub(crate) fn load(disk: &Disk) -> Result<Scan> {
        let mut layers = BTreeMap::new();
        let mut strays = Vec::new();
        let dir = disk.dir();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for entry in entries {
                    let entry =
                        entry.map_err(|e| error(format!("cannot list {}: {e}", dir.display())))?;
                    let path = entry.path();
                    match entry.file_name().to_str().and_then(layer_name_uuid) {
                        Some(u) => {
                            layers.insert(u, classify(disk, header::read(&path)?.backing));
                        }
                        None => strays.push(path),
                    }
                }
            }
            // Something else in the directory's place holds no layer either: the disk has no
            // snapshot (and a create fails on it, changing nothing).
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) => {}
            Err(e) => return Err(error(format!("cannot list {}: {e}", dir.display()))),
        }
        // Adopted layers: files another tool made, wherever they are. One that is gone was
        // freed by a step (deleted, or renamed over its one dependent).
        for (u, file) in &disk.names {
            let file = std::path::Path::new(file);
            if file.exists() {
                layers.insert(*u, classify(disk, header::read(file)?.backing));
            }
        }
        let mut live = if disk.live.exists() {
            Some(classify(disk, header::read(&disk.live)?.backing))
        } else {
            None
        };
        let rebase = Kind::Rebase.load(&Kind::Rebase.path(disk))?;
        if let Some(Record::Rebase { file, from }) = &rebase {
            let from = classify(disk, from.clone());
            if *file == disk.live {
                live = live.map(|_| from);
            } else if let Some(b) = disk.layer_uuid(file).and_then(|u| layers.get_mut(&u)) {
                *b = from;
            }
        }
        Ok(Scan {
            layers,
            live,
            strays,
            rebase,
        })
    }

    /// The files backed by layer `of`: layers in uuid order, then the live file.
    pub(crate) fn dependents(&self, of: Uuid) -> Vec<Dep> {
        let mut out: Vec<Dep> = self
            .layers
            .iter()
            .filter(|(_, b)| **b == Backing::Layer(of))
            .map(|(u, _)| Dep::Layer(*u))
            .collect();
        if self.live == Some(Backing::Layer(of)) {
            out.push(Dep::Live);
        }
        out
    }

    /// The bottom of the chain below `b`: nothing, or the disk's original backing.
    pub(crate) fn bottom(&self, b: &Backing) -> Backing {
        let mut at = b.clone();
        for _ in 0..=self.layers.len() {
            match &at {
                Backing::Layer(u) => match self.layers.get(u) {
                    Some(next) => at = next.clone(),
                    None => return at,
                },
                _ => return at,
            }
        }
        at
    }

    /// The physical tree, refusing anything a finished step cannot leave behind.
    pub(crate) fn physical(&self, disk: &Disk) -> Result<PhysicalTree> {
        if let Some(stray) = self.strays.first() {
            return Err(error(format!(
                "{}: {} is not a snapshot layer (left by an interrupted step?)",
                disk.describe(),
                stray.display()
            )));
        }
        let parent = |b: &Backing, of: &str| -> Result<Option<Uuid>> {
            match b {
                Backing::Layer(u) if self.layers.contains_key(u) => Ok(Some(*u)),
                Backing::Layer(u) => Err(error(format!(
                    "{}: {of} is backed by {}, which does not exist",
                    disk.describe(),
                    disk.layer(u).display()
                ))),
                Backing::None | Backing::Outside(_) => Ok(None),
            }
        };
        let mut parents = BTreeMap::new();
        for (u, b) in &self.layers {
            parents.insert(*u, parent(b, &disk.layer(u).display().to_string())?);
        }
        let live = self.live.as_ref().ok_or_else(|| missing_live(disk))?;
        Ok(PhysicalTree {
            parents,
            live_parent: parent(live, "the live file")?,
        })
    }
}

pub(crate) fn classify(disk: &Disk, backing: Option<PathBuf>) -> Backing {
    match backing {
        None => Backing::None,
        Some(p) => match disk.layer_uuid(&p) {
            Some(u) => Backing::Layer(u),
            None => Backing::Outside(p),
        },
    }
}

pub(crate) fn missing_live(disk: &Disk) -> QemuError {
    error(format!(
        "{}: the live image {} is missing",
        disk.describe(),
        disk.live.display()
    ))
}

/// The file a backing link names (`None`: no backing file).
pub(crate) fn backing_path(disk: &Disk, b: &Backing) -> Option<PathBuf> {
    match b {
        Backing::None => None,
        Backing::Layer(u) => Some(disk.layer(u)),
        Backing::Outside(p) => Some(p.clone()),
    }
}

pub(crate) fn dep_path(disk: &Disk, d: Dep) -> PathBuf {
    match d {
        Dep::Layer(u) => disk.layer(&u),
        Dep::Live => disk.live.clone(),
    }
}
