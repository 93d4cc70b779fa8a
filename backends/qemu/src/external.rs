//! External mode: every snapshot is a qcow2 layer `<uuid>.qcow2` in the disk's snapshot
//! directory, holding its content as a delta over its physical parent (its backing file); the
//! live file is an overlay on the layer it derives from. A root layer has no backing file (or
//! the backing file the disk had before snaptree, which is never written).
//!
//! Planning reads the backing links of every layer, then plans the step by the rule of the
//! model checker's simulator: whenever a layer's content changes or it is removed, every
//! physical dependent first keeps its own content. Because planning starts from what is on
//! disk and every operation keeps every content (see `ops`), planning the step again after a
//! crash at any point finishes it.

use std::collections::BTreeMap;
use std::path::PathBuf;

use snaptree_engine::{PhysicalTree, Result, Step, Uuid};

use crate::ctx::{Ctx, error};
use crate::disk::{Disk, layer_name_uuid};
use crate::exec::DiskPlan;
use crate::header;
use crate::intent::RebaseIntent;
use crate::ops::{Op, same_file};
use crate::stats::{Choice, ConsolidatePolicy, ConsolidateRecord};

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
    /// A safe rebase that may have been interrupted. The backing links above are as they
    /// will be once it is undone, which the plan of any step does first.
    pub(crate) intent: Option<RebaseIntent>,
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
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(error(format!("cannot list {}: {e}", dir.display()))),
        }
        let mut live = if disk.live.exists() {
            Some(classify(disk, header::read(&disk.live)?.backing))
        } else {
            None
        };
        let intent = RebaseIntent::load(&disk.rebase_intent())?;
        if let Some(i) = &intent {
            let from = classify(disk, i.from.clone());
            if i.file == disk.live {
                live = live.map(|_| from);
            } else if let Some(b) = disk.layer_uuid(&i.file).and_then(|u| layers.get_mut(&u)) {
                *b = from;
            }
        }
        Ok(Scan {
            layers,
            live,
            strays,
            intent,
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
    fn bottom(&self, b: &Backing) -> Backing {
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

fn classify(disk: &Disk, backing: Option<PathBuf>) -> Backing {
    match backing {
        None => Backing::None,
        Some(p) => match disk.layer_uuid(&p) {
            Some(u) => Backing::Layer(u),
            None => Backing::Outside(p),
        },
    }
}

fn missing_live(disk: &Disk) -> snaptree_engine::Error {
    error(format!(
        "{}: the live image {} is missing",
        disk.describe(),
        disk.live.display()
    ))
}

/// The file a backing link names (`None`: no backing file).
fn backing_path(disk: &Disk, b: &Backing) -> Option<PathBuf> {
    match b {
        Backing::None => None,
        Backing::Layer(u) => Some(disk.layer(u)),
        Backing::Outside(p) => Some(p.clone()),
    }
}

fn dep_path(disk: &Disk, d: Dep) -> PathBuf {
    match d {
        Dep::Layer(u) => disk.layer(&u),
        Dep::Live => disk.live.clone(),
    }
}

/// Plans one step on one external-mode disk.
pub(crate) fn plan(
    ctx: Ctx<'_>,
    disk: &Disk,
    step: &Step,
    policy: ConsolidatePolicy,
) -> Result<DiskPlan> {
    let scan = Scan::load(disk)?;
    let mut plan = plan_scanned(ctx, disk, &scan, step, policy)?;
    if let Some(i) = scan.intent {
        plan.reversible.insert(
            0,
            Op::RestoreBacking {
                file: i.file,
                from: i.from,
                intent: disk.rebase_intent(),
            },
        );
    }
    Ok(plan)
}

fn plan_scanned(
    ctx: Ctx<'_>,
    disk: &Disk,
    scan: &Scan,
    step: &Step,
    policy: ConsolidatePolicy,
) -> Result<DiskPlan> {
    match step {
        Step::Create { snapshot, .. } => create(disk, scan, *snapshot),
        Step::Revert { snapshot, .. } => revert(disk, scan, *snapshot),
        Step::DiscardLeaf { snapshot } | Step::Consolidate { snapshot } => {
            free(ctx, disk, scan, *snapshot, policy)
        }
        // The base is not observable: absorbing S into it is freeing S with its dependents
        // keeping their content, and S's children become roots.
        Step::MergeIntoParent {
            snapshot,
            parent: None,
        } => free(ctx, disk, scan, *snapshot, policy),
        Step::MergeIntoParent {
            snapshot,
            parent: Some(p),
        } => merge(disk, scan, *snapshot, *p),
        Step::DetachLive => detach(disk, scan),
        Step::Forget { .. } => Ok(DiskPlan::default()),
    }
}

/// Create(N): the live file becomes N's layer, a new empty overlay on it the live file.
///
/// Restart: N's layer absent → start; N's layer is the live file itself (same inode: linked,
/// not yet replaced) → finish the freeze; the live file is backed by N's layer → done.
fn create(disk: &Disk, scan: &Scan, n: Uuid) -> Result<DiskPlan> {
    let live = scan.live.as_ref().ok_or_else(|| missing_live(disk))?;
    let layer = disk.layer(&n);
    let freeze = Op::Freeze {
        live: disk.live.clone(),
        layer: layer.clone(),
        fresh: disk.fresh(),
    };
    if !scan.layers.contains_key(&n) {
        return Ok(DiskPlan {
            reversible: vec![freeze],
            ..DiskPlan::default()
        });
    }
    if same_file(&layer, &disk.live) {
        return Ok(DiskPlan {
            reversible: vec![freeze],
            ..DiskPlan::default()
        });
    }
    if *live == Backing::Layer(n) {
        return Ok(DiskPlan::default());
    }
    Err(error(format!(
        "{}: {} already exists but the live image does not derive from it",
        disk.describe(),
        layer.display()
    )))
}

/// Revert(S): a new empty overlay on S's layer replaces the live file; the old one is kept
/// aside until the step is past undoing, then deleted.
///
/// Restart: the live state before a revert is discarded by definition, so a re-run simply
/// reverts again (leftovers of the interrupted attempt are removed first).
fn revert(disk: &Disk, scan: &Scan, s: Uuid) -> Result<DiskPlan> {
    scan.live.as_ref().ok_or_else(|| missing_live(disk))?;
    if !scan.layers.contains_key(&s) {
        return Err(error(format!(
            "{}: snapshot {s} has no layer {}",
            disk.describe(),
            disk.layer(&s).display()
        )));
    }
    Ok(DiskPlan {
        reversible: vec![Op::SwapLive {
            live: disk.live.clone(),
            backing: disk.layer(&s),
            fresh: disk.fresh(),
            stash: disk.stash(),
        }],
        last: vec![Op::Remove { file: disk.stash() }],
        records: Vec::new(),
    })
}

/// Frees S's layer (discard, consolidate, merge into the base), keeping the content of every
/// file that depends on it. Per disk, the cheaper of:
///
/// - *rebase*: each dependent is rebased (safe) onto S's backing, copying at most S's own
///   data into each; then S's layer is deleted. Reversible until the deletion.
/// - *commit* (only with a single dependent X, since S's content changes): X is committed
///   down into S's layer, which then takes X's name. Copies X's own data once.
///
/// Restart: no layer → done (it is deleted last, or renamed over X last). Otherwise plan
/// again from the dependents found: a dependent already rebased no longer depends on S; a
/// dependent already committed holds nothing, so committing it is now the cheap choice; and
/// either choice is correct from any intermediate state because each operation keeps every
/// dependent's content.
fn free(
    ctx: Ctx<'_>,
    disk: &Disk,
    scan: &Scan,
    s: Uuid,
    policy: ConsolidatePolicy,
) -> Result<DiskPlan> {
    let Some(below) = scan.layers.get(&s) else {
        return Ok(DiskPlan::default());
    };
    let layer = disk.layer(&s);
    let deps = scan.dependents(s);
    let mut record = ConsolidateRecord {
        snapshot: s,
        disk: disk.label.clone(),
        dependents: deps.len(),
        choice: Choice::Nothing,
        commit_estimate: None,
        rebase_estimate: 0,
        bytes_moved: 0,
    };
    if deps.is_empty() {
        return Ok(DiskPlan {
            last: vec![Op::Remove { file: layer }],
            records: vec![record],
            ..DiskPlan::default()
        });
    }
    let own = ctx.allocated(&layer)?;
    record.rebase_estimate = own * deps.len() as u64;
    if let [only] = deps.as_slice() {
        record.commit_estimate = Some(ctx.allocated(&dep_path(disk, *only))?);
    }
    let commit = match (policy, record.commit_estimate) {
        (_, None) | (ConsolidatePolicy::AlwaysRebase, _) => false,
        (ConsolidatePolicy::AlwaysCommit, Some(_)) => true,
        (ConsolidatePolicy::Cheapest, Some(c)) => c < record.rebase_estimate,
    };
    if commit {
        let x = dep_path(disk, deps[0]);
        record.choice = Choice::Commit;
        return Ok(DiskPlan {
            reversible: Vec::new(),
            last: vec![
                Op::Commit {
                    top: x.clone(),
                    into: layer.clone(),
                    measure: Some(0),
                },
                Op::Replace {
                    source: layer,
                    target: x,
                },
            ],
            records: vec![record],
        });
    }
    record.choice = Choice::Rebase;
    let onto = backing_path(disk, below);
    Ok(DiskPlan {
        reversible: deps
            .iter()
            .map(|d| Op::SafeRebase {
                file: dep_path(disk, *d),
                from: Some(layer.clone()),
                onto: onto.clone(),
                intent: disk.rebase_intent(),
                measure: Some(0),
            })
            .collect(),
        last: vec![Op::Remove { file: layer }],
        records: vec![record],
    })
}

/// Merge(S into P): P's layer takes S's content, S's layer is freed, and every other file
/// keeps its content: S's dependents and P's other dependents (the live file, retired
/// layers) end up on P's layer.
///
/// 1. (reversible) If S is not directly on P (retired layers between), rebase S onto P.
///    Rebase every other dependent of P onto S: it keeps its content and no longer sees P,
///    so P's layer has S as its only dependent.
/// 2. Commit S into P: P now holds S's content and S's layer is empty.
/// 3. Rebase (unsafe: P and S now show the same content) every dependent of S onto P;
///    delete S's layer.
///
/// Restart: no S layer → done. Otherwise plan again: dependents moved back onto P in (3)
/// count as "other dependents" again and are rebased onto S, which copies nothing since P
/// and S show the same content by then; the commit of an empty layer changes nothing.
fn merge(disk: &Disk, scan: &Scan, s: Uuid, p: Uuid) -> Result<DiskPlan> {
    let Some(s_backing) = scan.layers.get(&s) else {
        return Ok(DiskPlan::default());
    };
    if !scan.layers.contains_key(&p) {
        return Err(error(format!(
            "{}: snapshot {p} has no layer {}",
            disk.describe(),
            disk.layer(&p).display()
        )));
    }
    let (fs, fp) = (disk.layer(&s), disk.layer(&p));
    let mut plan = DiskPlan::default();
    if *s_backing != Backing::Layer(p) {
        plan.reversible.push(Op::SafeRebase {
            file: fs.clone(),
            from: backing_path(disk, s_backing),
            onto: Some(fp.clone()),
            intent: disk.rebase_intent(),
            measure: None,
        });
    }
    let others: Vec<Dep> = scan
        .dependents(p)
        .into_iter()
        .filter(|d| *d != Dep::Layer(s))
        .collect();
    for d in &others {
        plan.reversible.push(Op::SafeRebase {
            file: dep_path(disk, *d),
            from: Some(fp.clone()),
            onto: Some(fs.clone()),
            intent: disk.rebase_intent(),
            measure: None,
        });
    }
    plan.last.push(Op::Commit {
        top: fs.clone(),
        into: fp.clone(),
        measure: None,
    });
    for d in scan.dependents(s).into_iter().chain(others) {
        plan.last.push(Op::UnsafeRebase {
            file: dep_path(disk, d),
            onto: Some(fp.clone()),
        });
    }
    plan.last.push(Op::Remove { file: fs });
    Ok(plan)
}

/// Detach: the live file stops depending on any layer (rebased, safe, onto the bottom of its
/// chain — nothing, or the disk's original backing). Restart: a re-run rebases whatever is
/// still to rebase; a finished one finds the live file already off every layer.
fn detach(disk: &Disk, scan: &Scan) -> Result<DiskPlan> {
    let live = scan.live.as_ref().ok_or_else(|| missing_live(disk))?;
    if !matches!(live, Backing::Layer(_)) {
        return Ok(DiskPlan::default());
    }
    let bottom = scan.bottom(live);
    if matches!(bottom, Backing::Layer(_)) {
        return Err(error(format!(
            "{}: the backing chain of the live image is broken",
            disk.describe()
        )));
    }
    Ok(DiskPlan {
        reversible: vec![Op::SafeRebase {
            file: disk.live.clone(),
            from: backing_path(disk, live),
            onto: backing_path(disk, &bottom),
            intent: disk.rebase_intent(),
            measure: None,
        }],
        ..DiskPlan::default()
    })
}
