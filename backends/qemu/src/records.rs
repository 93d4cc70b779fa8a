//! Every restart record the backend keeps: one [`Record`] per kind of unfinished work, one
//! file format (a JSON object tagged `record`, written atomically), and [`all`] of a disk for
//! the clean-up after each step.
//!
//! A record is written before the work it describes and removed after it, so a step re-run
//! after a crash (or the next step) finds what to finish or undo. The per-disk records lie
//! in the disk's snapshot directory and are not layers (their names start with a dot), so
//! while one exists the physical tree does not read, and the engine keeps its journal entry
//! rather than forgetting a half-done step. The two domain-wide records of live internal
//! mode lie beside the first disk.
//!
//! Reading also accepts the shapes older builds wrote (a bare JSON object for the rebase,
//! an empty file, plain `S P` words), since an unfinished step of an older build may be
//! finished by this one.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use snaptree_engine::Uuid;

use crate::ctx::Ctx;
use crate::disk::Disk;
use crate::error::{Result, error};

/// A piece of unfinished work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "kebab-case")]
pub(crate) enum Record {
    /// A safe rebase of `file` away from `from` (`None`: no backing) that may not have
    /// completed.
    ///
    /// `qemu-img rebase` (safe mode) copies clusters into the image, rewrites the backing
    /// name in the header, and only then flushes its cached cluster tables, when it closes
    /// the image. Measured: killed between the two, the image names its new backing but
    /// has lost track of clusters it copied, so it shows the wrong data (see the kill
    /// test). The copied clusters themselves hold the old backing's view, so pointing the
    /// image back at the old backing (an unsafe rebase, which only writes the header)
    /// restores exactly its content before the rebase; the next step on the disk does so
    /// first.
    Rebase {
        /// The image being rebased.
        file: PathBuf,
        /// Its backing file before the rebase.
        from: Option<PathBuf>,
    },
    /// A step that changes a layer's content in place (an offline commit) has not
    /// finished: the physical tree must not look unchanged meanwhile.
    Unfinished,
    /// A live commit of `snapshot` into `parent` is under way on the disk.
    LiveCommit {
        /// The snapshot committed.
        snapshot: Uuid,
        /// The snapshot it is committed into.
        parent: Uuid,
    },
    /// An active commit of the live image into `snapshot`'s layer is under way: QEMU
    /// writing into that layer is a pivot to finish (not a create), and the guest, paused
    /// from the pivot to the rename, is resumed after it if it `running` before.
    LivePivot {
        /// The snapshot whose layer takes the live image's data.
        snapshot: Uuid,
        /// Whether the guest ran before the step.
        running: bool,
    },
    /// A live create (internal mode) is saving `snapshot`: if QEMU dies mid-save, the
    /// engine forgets the create and the next step removes what the save left.
    LiveCreate {
        /// The snapshot being saved.
        snapshot: Uuid,
    },
    /// A live merge (internal mode) of `snapshot` into `parent` is under way, with the VM
    /// stopped: it is resumed afterwards if it `running` before.
    LiveMerge {
        /// The snapshot merged.
        snapshot: Uuid,
        /// The snapshot it is merged into.
        parent: Uuid,
        /// Whether the VM ran before the merge stopped it.
        running: bool,
    },
    /// `qemu-img snapshot -a` or `-d` may have been interrupted in the disk's image
    /// (internal mode) between lowering reference counts and setting the COPIED flags: the
    /// image needs `qemu-img check -r all` before anything else
    /// ([`snaptree_qemu_img::repair_after_interrupted_snapshot_op`]). An empty file.
    RefcountUpdate,
}

/// The kinds of record, each with its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// [`Record::Rebase`], in the disk's snapshot directory.
    Rebase,
    /// [`Record::Unfinished`], in the disk's snapshot directory.
    Unfinished,
    /// [`Record::LiveCommit`], in the disk's snapshot directory.
    LiveCommit,
    /// [`Record::LivePivot`], in the disk's snapshot directory.
    LivePivot,
    /// [`Record::LiveCreate`], beside the domain's first disk.
    LiveCreate,
    /// [`Record::LiveMerge`], beside the domain's first disk.
    LiveMerge,
    /// [`Record::RefcountUpdate`], beside the disk's image.
    RefcountUpdate,
}

impl Kind {
    /// The record's file for `disk` (for the domain-wide kinds: the domain's first disk).
    pub(crate) fn path(self, disk: &Disk) -> PathBuf {
        match self {
            Kind::LiveCreate => disk.beside(".snaptree-live-create"),
            Kind::LiveMerge => disk.beside(".snaptree-live-merge"),
            Kind::RefcountUpdate => crate::disk::refcount_marker(&disk.live),
            _ => self.in_dir(&disk.dir()),
        }
    }

    /// A per-disk record's file in snapshot directory `dir`.
    pub(crate) fn in_dir(self, dir: &Path) -> PathBuf {
        dir.join(match self {
            Kind::Rebase => ".rebase.json",
            Kind::Unfinished => ".unfinished",
            Kind::LiveCommit => ".live-commit",
            Kind::LivePivot => ".live-pivot",
            Kind::LiveCreate | Kind::LiveMerge | Kind::RefcountUpdate => {
                unreachable!("records beside an image")
            }
        })
    }

    /// The record at `path`, if there is one.
    pub(crate) fn load(self, path: &Path) -> Result<Option<Record>> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            // No snapshot directory (or something else in its place): no record either.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                return Ok(None);
            }
            Err(e) => return Err(error(format!("cannot read {}: {e}", path.display()))),
        };
        let record = serde_json::from_str::<Record>(&text)
            .ok()
            .or_else(|| self.legacy(&text))
            .filter(|r| r.kind() == self)
            .ok_or_else(|| error(format!("{} is not a {}", path.display(), self.noun())))?;
        Ok(Some(record))
    }

    /// The shape an older build wrote.
    fn legacy(self, text: &str) -> Option<Record> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let uuid = |w: &str| Uuid::parse_str(w).ok();
        let running = |w: &str| match w {
            "running" => Some(true),
            "paused" => Some(false),
            _ => None,
        };
        match (self, &words[..]) {
            (Kind::Rebase, _) => {
                #[derive(Deserialize)]
                struct Bare {
                    file: PathBuf,
                    from: Option<PathBuf>,
                }
                let b: Bare = serde_json::from_str(text).ok()?;
                Some(Record::Rebase {
                    file: b.file,
                    from: b.from,
                })
            }
            (Kind::Unfinished, []) => Some(Record::Unfinished),
            (Kind::RefcountUpdate, []) => Some(Record::RefcountUpdate),
            (Kind::LiveCommit, [s, p]) => Some(Record::LiveCommit {
                snapshot: uuid(s)?,
                parent: uuid(p)?,
            }),
            (Kind::LivePivot, [s, state]) => Some(Record::LivePivot {
                snapshot: uuid(s)?,
                running: running(state)?,
            }),
            (Kind::LiveCreate, [s]) => Some(Record::LiveCreate { snapshot: uuid(s)? }),
            (Kind::LiveMerge, [state, s, p]) => Some(Record::LiveMerge {
                snapshot: uuid(s)?,
                parent: uuid(p)?,
                running: running(state)?,
            }),
            _ => None,
        }
    }

    /// How messages name the record.
    fn noun(self) -> &'static str {
        match self {
            Kind::Rebase => "snaptree rebase record",
            Kind::Unfinished => "snaptree unfinished-step record",
            Kind::LiveCommit => "merge record",
            Kind::LivePivot => "pivot record",
            Kind::LiveCreate => "create intent",
            Kind::LiveMerge => "merge record",
            Kind::RefcountUpdate => "snaptree refcount-update record",
        }
    }
}

impl Record {
    /// The record's kind.
    pub(crate) fn kind(&self) -> Kind {
        match self {
            Record::Rebase { .. } => Kind::Rebase,
            Record::Unfinished => Kind::Unfinished,
            Record::LiveCommit { .. } => Kind::LiveCommit,
            Record::LivePivot { .. } => Kind::LivePivot,
            Record::LiveCreate { .. } => Kind::LiveCreate,
            Record::LiveMerge { .. } => Kind::LiveMerge,
            Record::RefcountUpdate => Kind::RefcountUpdate,
        }
    }

    /// Writes the record to `path` atomically and durably in content; its name is durable
    /// with the directory's next sync (callers sync before the work it describes). The
    /// directory is made when missing: a disk whose snapshots are all adopted files has no
    /// snapshot directory of its own.
    pub(crate) fn store(&self, ctx: Ctx<'_>, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            ctx.create_dir(dir)?;
        }
        let mut text = serde_json::to_vec(self)
            .map_err(|e| error(format!("cannot encode {}: {e}", path.display())))?;
        text.push(b'\n');
        ctx.write_atomic(path, &text)
    }
}

/// Every per-disk record of `disk`: what the clean-up after each step looks at.
pub(crate) fn all(disk: &Disk) -> [PathBuf; 4] {
    [
        Kind::Rebase,
        Kind::Unfinished,
        Kind::LiveCommit,
        Kind::LivePivot,
    ]
    .map(|k| k.path(disk))
}

/// The records of live external steps (commit, pivot) on `disk`: a step finished offline
/// has finished them too.
pub(crate) fn live_chain(disk: &Disk) -> [PathBuf; 2] {
    [Kind::LiveCommit.path(disk), Kind::LivePivot.path(disk)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_it_writes_and_what_older_builds_wrote() {
        let (s, p) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let dir = tempfile::tempdir().unwrap();
        let at = dir.path().join("r");
        let cases = [
            (
                Kind::Rebase,
                r#"{"file":"/a","from":null}"#,
                Record::Rebase {
                    file: "/a".into(),
                    from: None,
                },
            ),
            (Kind::Unfinished, "", Record::Unfinished),
            (Kind::RefcountUpdate, "", Record::RefcountUpdate),
            (
                Kind::LiveCommit,
                &format!("{s} {p}\n"),
                Record::LiveCommit {
                    snapshot: s,
                    parent: p,
                },
            ),
            (
                Kind::LivePivot,
                &format!("{s} paused\n"),
                Record::LivePivot {
                    snapshot: s,
                    running: false,
                },
            ),
            (
                Kind::LiveCreate,
                &format!("{s}"),
                Record::LiveCreate { snapshot: s },
            ),
            (
                Kind::LiveMerge,
                &format!("running {s} {p}\n"),
                Record::LiveMerge {
                    snapshot: s,
                    parent: p,
                    running: true,
                },
            ),
        ];
        for (kind, old, record) in cases {
            std::fs::write(&at, old).unwrap();
            assert_eq!(kind.load(&at).unwrap(), Some(record.clone()), "{kind:?}");
            std::fs::write(&at, serde_json::to_vec(&record).unwrap()).unwrap();
            assert_eq!(kind.load(&at).unwrap(), Some(record), "{kind:?}");
        }
        // Another kind's record, or garbage, is refused naming the file.
        std::fs::write(&at, format!("{s} {p}")).unwrap();
        let e = Kind::LivePivot.load(&at).unwrap_err().to_string();
        assert!(e.contains("is not a pivot record"), "{e}");
        assert_eq!(
            Kind::LivePivot.load(&dir.path().join("none")).unwrap(),
            None
        );
    }
}
