//! The planner: pure functions from (tree, request) to a [`Plan`] or an error.
//!
//! Every FORCE check and every piece of tree reasoning happens here, before any physical
//! step, so that an operation is refused before it starts rather than half done.

use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::{PowerState, Snapshot};
use crate::name::{shown, validate_name};
use crate::physical;
pub use crate::plan::apply_edits;
use crate::plan::{DeleteMode, Edit, Operation, Plan, Step};
use crate::tree::SnapshotTree;
use crate::xml::SnapshotXml;

/// What a create needs besides the tree and the document, passed in so planning stays pure.
#[derive(Debug, Clone, Copy)]
pub struct CreateContext {
    /// The live power state, recorded as the snapshot's state.
    pub live_state: PowerState,
    /// Now, in Unix seconds.
    pub now: i64,
    /// A fresh random uuid, used when the document gives none.
    pub fresh_uuid: Uuid,
}

/// Plans a create from a parsed `<domainsnapshot>` (only name, uuid, description used).
pub fn plan_create(
    tree: &SnapshotTree,
    domain: &str,
    xml: &SnapshotXml,
    ctx: CreateContext,
) -> Result<Plan> {
    let uuid = match xml.uuid {
        Some(u) => {
            if let Some(s) = tree.get(&u) {
                return Err(Error::SnapshotExists(format!(
                    "domain '{domain}' already has a snapshot with uuid {u} (named {})",
                    shown(&s.name)
                )));
            }
            if tree.retired().contains(&u) {
                return Err(Error::SnapshotExists(format!(
                    "uuid {u} belongs to a retired snapshot of domain '{domain}' whose data is kept"
                )));
            }
            u
        }
        None => {
            let mut u = ctx.fresh_uuid;
            while tree.contains(&u) || tree.retired().contains(&u) {
                u = Uuid::new_v4();
            }
            u
        }
    };
    let name = match &xml.name {
        Some(n) => {
            validate_name("snapshot", n)?;
            if tree.by_name(n).is_some() {
                return Err(Error::SnapshotExists(format!(
                    "domain '{domain}' already has a snapshot named {}",
                    shown(n)
                )));
            }
            n.clone()
        }
        None => generated_name(tree, ctx.now),
    };
    let parent = tree.current().map(|c| c.uuid);
    let snapshot = Snapshot {
        uuid,
        name: name.clone(),
        description: xml.description.clone().unwrap_or_default(),
        creation_date: ctx.now,
        state: ctx.live_state,
        expires: xml.expires,
        pinned: false,
    };
    physical::complete(
        tree,
        Plan {
            operation: Operation::Create { name: name.clone() },
            steps: vec![Step::Create {
                snapshot: uuid,
                parent,
                name,
                description: snapshot.description.clone(),
            }],
            edits: vec![
                Edit::Add { snapshot, parent },
                Edit::SetCurrent {
                    current: Some(uuid),
                },
            ],
        },
    )
}

/// What a REDEFINE needs besides the tree and the document.
#[derive(Debug, Clone, Copy)]
pub struct RedefineContext {
    /// The domain's uuid, from which a snapshot without `<uuid>` gets its own
    /// ([`derived_uuid`]).
    pub domain_uuid: Uuid,
    /// Now, in Unix seconds: the creation date of a document without one.
    pub now: i64,
    /// The CURRENT flag: the snapshot becomes current.
    pub current: bool,
}

/// Plans a REDEFINE (SEMANTICS.md §7.3) from a document read by
/// [`SnapshotXml::parse_for_redefine`].
///
/// - `<name>` is required. `<uuid>` is optional because libvirt's snapshots have none:
///   without it, a snapshot of that name already in the tree is the one meant (so feeding
///   the same libvirt XML twice replaces rather than clashes), and a new one gets
///   [`derived_uuid`], the same for the same domain and name in any state directory.
/// - The parent is found by `<parent><uuid>`, else by `<parent><name>`; it must exist
///   (`NO_SNAPSHOT`). When both are given they must name the same snapshot.
/// - A missing `<creationdate>` is now; a missing `<state>` is `shutoff` (nothing claims
///   there is memory to resume).
/// - The same name, uuid and parent as an existing snapshot replaces its description,
///   creation date and state, with no physical step; any other clash of name or uuid
///   (with a snapshot or with retired data) is `SNAPSHOT_EXISTS`.
/// - A new snapshot is added under its parent after the backend adopts its data
///   ([`Plan::adoption`]). `current` moves to the snapshot only with CURRENT.
pub fn plan_redefine(
    tree: &SnapshotTree,
    domain: &str,
    xml: &SnapshotXml,
    ctx: RedefineContext,
) -> Result<Plan> {
    let Some(name) = &xml.name else {
        return Err(Error::InvalidArg(format!(
            "a snapshot redefined on domain '{domain}' needs a <name>"
        )));
    };
    validate_name("snapshot", name)?;
    let parent = match (xml.parent_uuid, &xml.parent_name) {
        (Some(u), named) => {
            let p = tree.get(&u).ok_or_else(|| {
                Error::NoSnapshot(format!(
                    "the parent {u} of snapshot {} is not a snapshot of domain '{domain}'; redefine parents first",
                    shown(name)
                ))
            })?;
            if let Some(n) = named
                && *n != p.name
            {
                return Err(Error::InvalidArg(format!(
                    "the parent of snapshot {} is given as uuid {u}, which is named {}, and as name {}",
                    shown(name),
                    shown(&p.name),
                    shown(n)
                )));
            }
            Some(u)
        }
        (None, Some(n)) => Some(
            tree.by_name(n)
                .ok_or_else(|| {
                    Error::NoSnapshot(format!(
                        "the parent {} of snapshot {} is not a snapshot of domain '{domain}'; redefine parents first",
                        shown(n),
                        shown(name)
                    ))
                })?
                .uuid,
        ),
        (None, None) => None,
    };
    let by_name = tree.by_name(name);
    let uuid = xml
        .uuid
        .or(by_name.map(|s| s.uuid))
        .unwrap_or_else(|| derived_uuid(&ctx.domain_uuid, name));
    let existing = tree.get(&uuid);
    let state = xml.state.unwrap_or(PowerState::Shutoff);
    // A snapshot that already exists can only be replaced (any other clash is refused
    // below): a date the document does not give stays, since "now" is no date of an
    // existing snapshot and would reorder retention's keep-last (libvirt's documents
    // always carry one). A new snapshot without one is dated now.
    let creation_date = xml
        .creation_date
        .or(existing.map(|e| e.creation_date))
        .unwrap_or(ctx.now);
    let description = xml.description.clone().unwrap_or_default();
    let replace = match (existing, by_name) {
        (Some(e), Some(n)) if e.uuid == n.uuid => {
            let old_parent = tree.parent(&uuid).map(|p| p.uuid);
            if old_parent != parent {
                let said = |p: Option<Uuid>| match p.and_then(|p| tree.get(&p)) {
                    Some(p) => format!("under {}", shown(&p.name)),
                    None => "as a root".to_string(),
                };
                return Err(Error::SnapshotExists(format!(
                    "domain '{domain}' already has snapshot {} {}; the document puts it {}",
                    shown(name),
                    said(old_parent),
                    said(parent)
                )));
            }
            true
        }
        (Some(e), _) => {
            return Err(Error::SnapshotExists(format!(
                "domain '{domain}' already has a snapshot with uuid {uuid} (named {})",
                shown(&e.name)
            )));
        }
        (None, Some(n)) => {
            return Err(Error::SnapshotExists(format!(
                "domain '{domain}' already has a snapshot named {} (uuid {}, not {uuid})",
                shown(name),
                n.uuid
            )));
        }
        (None, None) => {
            if tree.retired().contains(&uuid) {
                return Err(Error::SnapshotExists(format!(
                    "uuid {uuid} belongs to a retired snapshot of domain '{domain}' whose data is kept"
                )));
            }
            false
        }
    };
    let mut edits = if replace {
        vec![Edit::Redefine {
            snapshot: uuid,
            description,
            creation_date,
            state,
        }]
    } else {
        vec![Edit::Add {
            snapshot: Snapshot {
                uuid,
                name: name.clone(),
                description,
                creation_date,
                state,
                expires: xml.expires,
                pinned: false,
            },
            parent,
        }]
    };
    if ctx.current && tree.current().map(|c| c.uuid) != Some(uuid) {
        edits.push(Edit::SetCurrent {
            current: Some(uuid),
        });
    }
    physical::complete(
        tree,
        Plan {
            operation: Operation::Redefine {
                snapshot: uuid,
                name: name.clone(),
                parent,
                adopt: !replace,
                current: ctx.current,
            },
            steps: Vec::new(),
            edits,
        },
    )
}

/// The uuid a redefined snapshot without `<uuid>` gets: a version 8 uuid made of the
/// 128-bit FNV-1a hash of the domain's uuid and the snapshot's name, so importing the
/// same libvirt metadata again, into any state directory, names the same data the same
/// way. Not a security boundary: a clash is refused like any other (`SNAPSHOT_EXISTS`).
pub fn derived_uuid(domain: &Uuid, name: &str) -> Uuid {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut hash = OFFSET;
    let bytes = b"snaptree-redefine\0"
        .iter()
        .chain(domain.as_bytes())
        .chain(name.as_bytes());
    for b in bytes {
        hash ^= u128::from(*b);
        hash = hash.wrapping_mul(PRIME);
    }
    uuid::Builder::from_custom_bytes(hash.to_be_bytes()).into_uuid()
}

/// libvirt names an unnamed snapshot by its creation time; a suffix keeps it unique.
fn generated_name(tree: &SnapshotTree, now: i64) -> String {
    unique_name(tree, &now.to_string())
}

/// Plans a revert to `snapshot`.
pub fn plan_revert(
    tree: &SnapshotTree,
    domain: &str,
    snapshot: &Uuid,
    force_state: Option<PowerState>,
) -> Result<Plan> {
    let s = tree.require(snapshot, domain)?;
    let state = force_state.unwrap_or(s.state);
    physical::complete(
        tree,
        Plan {
            operation: Operation::Revert {
                snapshot: *snapshot,
                force_state,
            },
            steps: vec![Step::Revert {
                snapshot: *snapshot,
                state,
            }],
            edits: vec![Edit::SetCurrent {
                current: Some(*snapshot),
            }],
        },
    )
}

/// Plans a KEEP_LIVE revert (SEMANTICS.md §7.4): create K from the live state exactly as
/// [`plan_create`] would (name `keep_name`, else `pre-revert-<now>`, made unique), then
/// revert to `snapshot`, in one plan. Every check of both halves runs before anything does.
pub fn plan_revert_keep_live(
    tree: &SnapshotTree,
    domain: &str,
    snapshot: &Uuid,
    force_state: Option<PowerState>,
    keep_name: Option<&str>,
    ctx: CreateContext,
) -> Result<Plan> {
    tree.require(snapshot, domain)?;
    let name = match keep_name {
        Some(n) => n.to_string(),
        None => unique_name(tree, &format!("pre-revert-{}", ctx.now)),
    };
    let keep = SnapshotXml {
        name: Some(name.clone()),
        ..SnapshotXml::default()
    };
    let create = plan_create(tree, domain, &keep, ctx)?;
    let Some(Step::Create { snapshot: k, .. }) = create.steps.first() else {
        return Err(Error::Internal("a create plan has no create step".into()));
    };
    let k = *k;
    let mut after_create = tree.clone();
    apply_edits(&mut after_create, &create.edits)?;
    let revert = plan_revert(&after_create, domain, snapshot, force_state)?;
    let mut steps = create.steps;
    steps.extend(revert.steps);
    let mut edits = create.edits;
    edits.extend(revert.edits);
    // Completed against the tree before the plan, as every plan is: the layout edits of
    // the two halves' plans would each describe only their own half.
    physical::complete(
        tree,
        Plan {
            operation: Operation::RevertKeepLive {
                snapshot: *snapshot,
                force_state,
                keep: k,
                keep_name: name,
            },
            steps: steps
                .into_iter()
                .filter(|s| matches!(s, Step::Create { .. } | Step::Revert { .. }))
                .collect(),
            edits: edits
                .into_iter()
                .filter(|e| matches!(e, Edit::Add { .. } | Edit::SetCurrent { .. }))
                .collect(),
        },
    )
}

/// Plans a pin or unpin (metadata only).
pub fn plan_pin(tree: &SnapshotTree, domain: &str, snapshot: &Uuid, pinned: bool) -> Result<Plan> {
    tree.require(snapshot, domain)?;
    Ok(Plan {
        operation: Operation::Pin {
            snapshot: *snapshot,
            pinned,
        },
        steps: Vec::new(),
        edits: vec![Edit::SetPinned {
            snapshot: *snapshot,
            pinned,
        }],
    })
}

/// `base`, or `base-2`, `base-3`, … : the first that no snapshot is named.
pub fn unique_name(tree: &SnapshotTree, base: &str) -> String {
    if tree.by_name(base).is_none() {
        return base.to_string();
    }
    (2u64..)
        .map(|n| format!("{base}-{n}"))
        .find(|n| tree.by_name(n).is_none())
        .unwrap_or_else(|| base.to_string())
}

/// Plans a rename. Metadata only: physical data is keyed by uuid.
pub fn plan_rename(
    tree: &SnapshotTree,
    domain: &str,
    snapshot: &Uuid,
    new_name: &str,
) -> Result<Plan> {
    let s = tree.require(snapshot, domain)?;
    validate_name("snapshot", new_name)?;
    if let Some(other) = tree.by_name(new_name)
        && other.uuid != s.uuid
    {
        return Err(Error::SnapshotExists(format!(
            "domain '{domain}' already has a snapshot named {}",
            shown(new_name)
        )));
    }
    Ok(Plan {
        operation: Operation::Rename {
            snapshot: *snapshot,
            new_name: new_name.to_string(),
        },
        steps: Vec::new(),
        edits: vec![Edit::Rename {
            snapshot: *snapshot,
            name: new_name.to_string(),
        }],
    })
}

/// Plans a delete of `snapshot` in `mode`.
pub fn plan_delete(
    tree: &SnapshotTree,
    domain: &str,
    snapshot: &Uuid,
    mode: DeleteMode,
) -> Result<Plan> {
    let s = tree.require(snapshot, domain)?;
    let uuid = s.uuid;
    let parent = tree.parent(&uuid).map(|p| p.uuid);
    let current = tree.current().map(|c| c.uuid);
    let children: Vec<Uuid> = tree.children(&uuid).iter().map(|c| c.uuid).collect();
    let mut steps = Vec::new();
    let mut edits = Vec::new();
    // Which snapshots leave the tree, so `current` can be moved if it was among them.
    let mut gone: Vec<Uuid> = Vec::new();
    let mut current_target = parent;

    match mode {
        DeleteMode::Retire => {
            reparent(&mut edits, &children, parent);
            edits.push(Edit::Remove { snapshot: uuid });
            edits.push(Edit::Retire { snapshot: uuid });
            steps.push(Step::Forget { snapshot: uuid });
            gone.push(uuid);
        }
        DeleteMode::Discard | DeleteMode::DiscardForce => {
            let below: Vec<Uuid> = tree.descendants(&uuid).iter().map(|d| d.uuid).collect();
            if mode == DeleteMode::Discard && !below.is_empty() {
                return Err(would_discard(tree, s, "DISCARD", "DISCARD_FORCE", &below));
            }
            let mut subtree = vec![uuid];
            subtree.extend(below);
            discard_leaves_first(&mut steps, &mut edits, &subtree);
            gone = subtree;
        }
        DeleteMode::Merge | DeleteMode::MergeForce => {
            let siblings: Vec<Uuid> = match parent {
                Some(p) => tree
                    .children(&p)
                    .iter()
                    .map(|c| c.uuid)
                    .filter(|c| *c != uuid)
                    .collect(),
                None => tree
                    .roots()
                    .map(|r| r.uuid)
                    .filter(|r| *r != uuid)
                    .collect(),
            };
            let mut victims = Vec::new();
            for sib in &siblings {
                victims.push(*sib);
                victims.extend(tree.descendants(sib).iter().map(|d| d.uuid));
            }
            if mode == DeleteMode::Merge && !victims.is_empty() {
                return Err(would_discard(tree, s, "MERGE", "MERGE_FORCE", &victims));
            }
            discard_leaves_first(&mut steps, &mut edits, &victims);
            gone.extend(victims);
            steps.push(Step::MergeIntoParent {
                snapshot: uuid,
                parent,
            });
            reparent(&mut edits, &children, parent);
            if let Some(p) = parent {
                edits.push(Edit::SetState {
                    snapshot: p,
                    state: s.state,
                });
            }
            edits.push(Edit::Remove { snapshot: uuid });
            gone.push(uuid);
        }
        DeleteMode::Consolidate => {
            steps.push(Step::Consolidate { snapshot: uuid });
            reparent(&mut edits, &children, parent);
            edits.push(Edit::Remove { snapshot: uuid });
            gone.push(uuid);
        }
        DeleteMode::ChildrenOnly => {
            let below: Vec<Uuid> = tree.descendants(&uuid).iter().map(|d| d.uuid).collect();
            discard_leaves_first(&mut steps, &mut edits, &below);
            gone = below;
            current_target = Some(uuid);
        }
    }
    // `current` moves before anything is removed: removing the current snapshot is a bug
    // the tree refuses.
    if let Some(c) = current
        && gone.contains(&c)
    {
        edits.insert(
            0,
            Edit::SetCurrent {
                current: current_target,
            },
        );
    }
    physical::complete(
        tree,
        Plan {
            operation: Operation::Delete {
                snapshot: uuid,
                mode,
            },
            steps,
            edits,
        },
    )
}

/// Plans a delete of every snapshot and of the data of retired ones, dependents first
/// (SEMANTICS.md §7.2).
pub fn plan_delete_all(tree: &SnapshotTree) -> Result<Plan> {
    let mut steps = Vec::new();
    let mut edits = Vec::new();
    if !tree.is_empty() || !tree.retired().is_empty() {
        steps.push(Step::DetachLive);
    }
    if tree.current().is_some() {
        edits.push(Edit::SetCurrent { current: None });
    }
    let all: Vec<Uuid> = tree.topological().iter().map(|s| s.uuid).collect();
    // The retired layers join this run of discards in `physical::complete`.
    discard_leaves_first(&mut steps, &mut edits, &all);
    if !tree.retired().is_empty() {
        edits.push(Edit::ClearRetired);
    }
    physical::complete(
        tree,
        Plan {
            operation: Operation::DeleteAll,
            steps,
            edits,
        },
    )
}

/// Plans a reclaim (SEMANTICS.md §7.2): every retired snapshot's data is consolidated
/// into what is stored on it (or discarded, should nothing be), topmost first, so every
/// survivor's content and the live state stay as they are.
pub fn plan_reclaim(tree: &SnapshotTree) -> Result<Plan> {
    let layout = physical::Layout::of(tree)?;
    let steps = layout
        .dependents_first(tree.retired())
        .into_iter()
        .map(|snapshot| Step::Consolidate { snapshot })
        .collect();
    let edits = if tree.retired().is_empty() {
        Vec::new()
    } else {
        vec![Edit::ClearRetired]
    };
    physical::complete(
        tree,
        Plan {
            operation: Operation::Reclaim,
            steps,
            edits,
        },
    )
}

fn reparent(edits: &mut Vec<Edit>, children: &[Uuid], parent: Option<Uuid>) {
    edits.extend(children.iter().map(|c| Edit::SetParent {
        snapshot: *c,
        parent,
    }));
}

/// `topological` lists parents before children, so its reverse frees leaves first.
fn discard_leaves_first(steps: &mut Vec<Step>, edits: &mut Vec<Edit>, topological: &[Uuid]) {
    for u in topological.iter().rev() {
        steps.push(Step::DiscardLeaf { snapshot: *u });
        edits.push(Edit::Remove { snapshot: *u });
    }
}

fn would_discard(
    tree: &SnapshotTree,
    s: &Snapshot,
    mode: &'static str,
    force: &'static str,
    victims: &[Uuid],
) -> Error {
    Error::WouldDiscard {
        snapshot: s.name.clone(),
        mode,
        force,
        victims: victims
            .iter()
            .filter_map(|v| tree.get(v))
            .map(|v| v.name.clone())
            .collect(),
    }
}
