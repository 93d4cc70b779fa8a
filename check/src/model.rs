//! The reference model: SEMANTICS.md §2 written the most obvious way, with a `Vec` of
//! snapshots and abstract content tokens. Deliberately naive: no petgraph, no indexes,
//! recursion and linear scans everywhere, so that it is easy to believe.
//!
//! It shares no logic with the engine. Flag words are decoded here from the numbers of
//! `include/snaptree.h` written as literals, names are validated by this module's own reading
//! of the documented rules, error codes are the header's numbers, and the physical steps of
//! SEMANTICS.md §4 are predicted here from the model's own tree. Only plain data types
//! (`Uuid`, `PowerState`) are borrowed from the engine.

use snaptree_engine::{PowerState, Uuid};

/// A content value. Contents are compared by token; the system under test maps each token
/// to the digest it observed when the content was made.
pub type Token = u64;

/// The stable error codes of SEMANTICS.md §6 and §7.1, as numbered in `include/snaptree.h`
/// (`SNAPTREE_ERR_*`).
pub mod code {
    /// `SNAPTREE_ERR_INVALID_ARG`.
    pub const INVALID_ARG: i32 = 1;
    /// `SNAPTREE_ERR_XML_ERROR`.
    pub const XML_ERROR: i32 = 2;
    /// `SNAPTREE_ERR_NO_SNAPSHOT`.
    pub const NO_SNAPSHOT: i32 = 4;
    /// `SNAPTREE_ERR_SNAPSHOT_EXISTS`.
    pub const SNAPSHOT_EXISTS: i32 = 5;
    /// `SNAPTREE_ERR_WOULD_DISCARD`.
    pub const WOULD_DISCARD: i32 = 6;
    /// `SNAPTREE_ERR_OPERATION_INVALID`.
    pub const OPERATION_INVALID: i32 = 7;
    /// `SNAPTREE_ERR_BACKEND`.
    pub const BACKEND: i32 = 8;
    /// `INCOMPLETE` (SEMANTICS.md §7.1: the next free number after `INTERNAL` = 12).
    pub const INCOMPLETE: i32 = 13;

    /// The code's name, for messages.
    pub fn name(code: i32) -> &'static str {
        match code {
            1 => "INVALID_ARG",
            2 => "XML_ERROR",
            3 => "NO_DOMAIN",
            4 => "NO_SNAPSHOT",
            5 => "SNAPSHOT_EXISTS",
            6 => "WOULD_DISCARD",
            7 => "OPERATION_INVALID",
            8 => "BACKEND",
            9 => "PLUGIN",
            10 => "STORAGE",
            11 => "BUSY",
            12 => "INTERNAL",
            13 => "INCOMPLETE",
            _ => "an unknown code",
        }
    }
}

/// The delete flags of `include/snaptree.h` (`SNAPTREE_SNAPSHOT_DELETE_*`), as literals.
pub mod delete_flag {
    /// MERGE.
    pub const MERGE: u32 = 1;
    /// MERGE_FORCE.
    pub const MERGE_FORCE: u32 = 2;
    /// DISCARD.
    pub const DISCARD: u32 = 4;
    /// DISCARD_FORCE.
    pub const DISCARD_FORCE: u32 = 8;
    /// CONSOLIDATE.
    pub const CONSOLIDATE: u32 = 16;
    /// CHILDREN_ONLY.
    pub const CHILDREN_ONLY: u32 = 32;
}

/// The create flags of `include/snaptree.h` (`SNAPTREE_SNAPSHOT_CREATE_*`), as literals.
pub mod create_flag {
    /// REDEFINE (SEMANTICS.md §7.3).
    pub const REDEFINE: u32 = 1;
    /// CURRENT (with REDEFINE only).
    pub const CURRENT: u32 = 2;
}

/// The revert flags of `include/snaptree.h` (`SNAPTREE_SNAPSHOT_REVERT_*`), as literals.
pub mod revert_flag {
    /// RUNNING.
    pub const RUNNING: u32 = 1;
    /// PAUSED.
    pub const PAUSED: u32 = 2;
    /// SHUTOFF.
    pub const SHUTOFF: u32 = 4;
}

/// A delete mode as the model understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// No flag.
    Retire,
    /// MERGE.
    Merge,
    /// MERGE_FORCE.
    MergeForce,
    /// DISCARD.
    Discard,
    /// DISCARD_FORCE.
    DiscardForce,
    /// CONSOLIDATE.
    Consolidate,
    /// CHILDREN_ONLY.
    ChildrenOnly,
}

/// The model's own decoding of a delete flag word: unknown bits or two flags at once are
/// `None` (`INVALID_ARG`).
pub fn decode_delete(word: u32) -> Option<Mode> {
    use delete_flag::*;
    if word & !(MERGE | MERGE_FORCE | DISCARD | DISCARD_FORCE | CONSOLIDATE | CHILDREN_ONLY) != 0 {
        return None;
    }
    match word {
        0 => Some(Mode::Retire),
        MERGE => Some(Mode::Merge),
        MERGE_FORCE => Some(Mode::MergeForce),
        DISCARD => Some(Mode::Discard),
        DISCARD_FORCE => Some(Mode::DiscardForce),
        CONSOLIDATE => Some(Mode::Consolidate),
        CHILDREN_ONLY => Some(Mode::ChildrenOnly),
        _ => None,
    }
}

/// The model's own decoding of a revert flag word: `Some(None)` keeps the snapshot's
/// state, `Some(Some(s))` forces `s`, `None` is `INVALID_ARG`.
pub fn decode_revert(word: u32) -> Option<Option<PowerState>> {
    match word {
        0 => Some(None),
        revert_flag::RUNNING => Some(Some(PowerState::Running)),
        revert_flag::PAUSED => Some(Some(PowerState::Paused)),
        revert_flag::SHUTOFF => Some(Some(PowerState::Shutoff)),
        _ => None,
    }
}

/// The model's own reading of the name rules documented for snapshot names (README,
/// `include/snaptree.h` and the engine's documented contract): 1 to 255 bytes of UTF-8,
/// no `/`, no control character (Unicode category Cc), not `.` or `..`, no white space
/// (Unicode `White_Space`) at either end.
pub fn valid_name(name: &str) -> bool {
    fn control(c: char) -> bool {
        let c = c as u32;
        c <= 0x1f || (0x7f..=0x9f).contains(&c)
    }
    fn white(c: char) -> bool {
        matches!(c as u32,
            0x09..=0x0d | 0x20 | 0x85 | 0xa0 | 0x1680 | 0x2000..=0x200a | 0x2028 | 0x2029
            | 0x202f | 0x205f | 0x3000)
    }
    let first = name.chars().next();
    let last = name.chars().last();
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.chars().any(control)
        && !first.is_some_and(white)
        && !last.is_some_and(white)
}

/// What a REDEFINE call carries (SEMANTICS.md §7.3): the document's fields and the create
/// flag word.
#[derive(Clone, PartialEq, Eq)]
pub struct Redefinition {
    /// `<name>` (may be invalid).
    pub name: String,
    /// `<uuid>` (§7.3: required, so always given).
    pub uuid: Uuid,
    /// `<parent>`, by `<uuid>` or by `<name>`, or none (a root).
    pub parent: Option<Target>,
    /// `<description>`, or none (empty).
    pub description: Option<String>,
    /// `<creationdate>`, or none (now).
    pub created: Option<i64>,
    /// `<state>`, or none (shut off).
    pub state: Option<PowerState>,
    /// The create flag word (REDEFINE, CURRENT, perhaps more bits).
    pub flags: u32,
}

/// The model's own decoding of a create flag word for a REDEFINE call: `Some(current)`, or
/// `None` (`INVALID_ARG`) for unknown bits or CURRENT without REDEFINE. A word without
/// REDEFINE is a plain create, which this transition never sends.
pub fn decode_redefine(word: u32) -> Option<bool> {
    use create_flag::*;
    if word & !(REDEFINE | CURRENT) != 0 || word & REDEFINE == 0 {
        return None;
    }
    Some(word & CURRENT != 0)
}

/// The physical step kinds of SEMANTICS.md §4, in the order of the capability table.
pub const STEP_KINDS: [&str; 7] = [
    "create",
    "revert",
    "discard_leaf",
    "merge_into_parent",
    "consolidate",
    "detach_live",
    "forget",
];

/// Power state bits of a capability mask (running 1, paused 2, shut off 4).
pub fn power_bit(s: PowerState) -> u8 {
    match s {
        PowerState::Running => 1,
        PowerState::Paused => 2,
        PowerState::Shutoff => 4,
    }
}

/// One predicted physical step: its kind (an index into [`STEP_KINDS`]), the snapshot it
/// is about, and for `revert` the power state it leaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PStep {
    /// Index into [`STEP_KINDS`].
    pub kind: usize,
    /// The snapshot, if the step names one.
    pub uuid: Option<Uuid>,
    /// For `revert`: the power state left.
    pub state: Option<PowerState>,
}

impl PStep {
    fn on(kind: usize, uuid: Uuid) -> PStep {
        PStep {
            kind,
            uuid: Some(uuid),
            state: None,
        }
    }
}

const CREATE: usize = 0;
const REVERT: usize = 1;
const DISCARD_LEAF: usize = 2;
const MERGE_INTO_PARENT: usize = 3;
const CONSOLIDATE: usize = 4;
const DETACH_LIVE: usize = 5;
const FORGET: usize = 6;
/// `adopt(S, parent)` of a REDEFINE (§7.3): run first, not a §4 step and not gated by the
/// per-power-state capabilities (only by whether the backend can adopt at all).
pub const ADOPT: usize = 7;

/// One snapshot in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefSnapshot {
    /// Its uuid (a placeholder when the engine generated it; the kit maps it).
    pub uuid: Uuid,
    /// Its name (a placeholder when the engine generated it).
    pub name: String,
    /// Its parent.
    pub parent: Option<Uuid>,
    /// Its recorded power state.
    pub state: PowerState,
    /// Its content.
    pub content: Token,
    /// Its description.
    pub description: String,
    /// Its creation date when a REDEFINE document gave one (Unix seconds); `None`: the
    /// engine's clock at the call that made (or last redefined) it.
    pub created: Option<i64>,
}

/// What the model expects an operation to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Success.
    Ok,
    /// This error code (see [`code`]); for `WOULD_DISCARD`, also exactly these victims in
    /// the model's topological order (any topological order of the same set is right).
    Err(i32, Vec<String>),
}

/// Where a generated uuid placeholder starts: the kit maps these to what the engine chose.
pub const GENERATED_UUID_TAG: u128 = 0x6e6e_0000_0000_0000_0000_0000_0000_0000;

/// Whether a model uuid is a placeholder for one the engine generated.
pub fn is_generated_uuid(u: &Uuid) -> bool {
    u.as_u128() >> 112 == GENERATED_UUID_TAG >> 112
}

/// The placeholder of the `n`th generated name.
pub fn generated_name(n: u64) -> String {
    format!("<generated #{n}>")
}

/// An injected fault, as the model predicts its effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FaultAt {
    /// The 0-based index of the failing step in the operation's plan.
    pub at: usize,
    /// Whether the step ran before failing.
    pub after: bool,
}

/// The whole modelled domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefModel {
    /// Snapshots in creation order.
    pub snapshots: Vec<RefSnapshot>,
    /// The current snapshot.
    pub current: Option<Uuid>,
    /// The live content.
    pub live: Token,
    /// The live power state.
    pub live_state: PowerState,
    /// Retired uuids.
    pub retired: Vec<Uuid>,
    /// Where data is stored: every snapshot's and retired snapshot's physical parent
    /// (None: the base).
    pub layers: Vec<(Uuid, Option<Uuid>)>,
    /// The layer the live state is stored on.
    pub live_on: Option<Uuid>,
    /// The next content token to hand out.
    pub next_token: Token,
    /// What the last operation was expected to return.
    pub last: Expected,
    /// The steps the last successful operation was expected to run (before reclaim).
    pub last_plan: Vec<PStep>,
    /// Whether the last operation reached the domain (and so rolled a pending one forward).
    pub last_reached: bool,
    /// Capabilities: for each of [`STEP_KINDS`], the power states it is allowed in.
    pub caps: [u8; 7],
    /// An operation interrupted part-way (§7.1): the state it leads to once finished.
    pub pending: Option<Box<RefModel>>,
    /// How many steps of the pending operation are still to run (the failed one again
    /// included: a step that failed is re-run).
    pub pending_steps: usize,
    /// The pending operation's whole plan, and how many of its steps ran physically: a
    /// guest write before the roll-forward is frozen by a create still to run and
    /// overwritten by a revert still to run (a KEEP_LIVE revert stopped part-way, §7.4).
    pub pending_plan: Vec<PStep>,
    /// See `pending_plan`.
    pub pending_ran: usize,
    /// Generated names and uuids handed out.
    pub generated: u64,
    /// The backend holds no data (null): a REDEFINE adopts anything (§7.3). Otherwise a
    /// new snapshot is adopted only where [`RefModel::layers`] holds its data on the
    /// parent the document names.
    pub metadata_only: bool,
    /// The backend offers `adopt` (§7.3). One that does not (ESX, libvirt) refuses every
    /// REDEFINE of a new snapshot up front, before anything runs; a metadata-only backend
    /// adopts anything.
    pub adopts: bool,
    /// Data the backend holds that no metadata knows (a lost store, §7.3's import case):
    /// each layer's uuid and content. Only a REDEFINE with the layer's physical parent
    /// adopts one; adopted ones leave this list.
    pub orphans: Vec<(Uuid, Token)>,
    /// The content of each retired snapshot's data, kept for adoption after a lost store
    /// (the latest entry for a uuid wins).
    pub retired_content: Vec<(Uuid, Token)>,
    /// The retention policy's keep-last count (§7.5), if the domain has a policy.
    pub keep_last: Option<usize>,
}

impl Default for RefModel {
    fn default() -> Self {
        RefModel {
            snapshots: Vec::new(),
            current: None,
            live: 0,
            live_state: PowerState::Shutoff,
            retired: Vec::new(),
            layers: Vec::new(),
            live_on: None,
            next_token: 1,
            last: Expected::Ok,
            last_plan: Vec::new(),
            last_reached: false,
            caps: [7; 7],
            pending: None,
            pending_steps: 0,
            pending_plan: Vec::new(),
            pending_ran: 0,
            generated: 0,
            metadata_only: false,
            adopts: true,
            orphans: Vec::new(),
            retired_content: Vec::new(),
            keep_last: None,
        }
    }
}

fn err(code: i32) -> Expected {
    Expected::Err(code, Vec::new())
}

/// What names a snapshot in a call: a name (looked up by a read first) or a uuid.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// By name.
    Name(String),
    /// By uuid.
    Uuid(Uuid),
}

impl RefModel {
    /// The snapshot with this name.
    pub fn find(&self, name: &str) -> Option<&RefSnapshot> {
        self.snapshots.iter().find(|s| s.name == name)
    }

    /// The snapshot with this uuid.
    pub fn by_uuid(&self, uuid: &Uuid) -> Option<&RefSnapshot> {
        self.snapshots.iter().find(|s| s.uuid == *uuid)
    }

    fn get(&self, uuid: Uuid) -> &RefSnapshot {
        self.by_uuid(&uuid).expect("model snapshot exists")
    }

    fn get_mut(&mut self, uuid: Uuid) -> &mut RefSnapshot {
        self.snapshots
            .iter_mut()
            .find(|s| s.uuid == uuid)
            .expect("model snapshot exists")
    }

    /// The children of a snapshot (roots for `None`), oldest first.
    pub fn children(&self, uuid: Option<Uuid>) -> Vec<Uuid> {
        self.snapshots
            .iter()
            .filter(|s| s.parent == uuid)
            .map(|s| s.uuid)
            .collect()
    }

    /// Every descendant, parents before children (pre-order, children oldest first).
    pub fn descendants(&self, uuid: Uuid) -> Vec<Uuid> {
        let mut out = Vec::new();
        for c in self.children(Some(uuid)) {
            out.push(c);
            out.extend(self.descendants(c));
        }
        out
    }

    /// Every snapshot, parents before children.
    pub fn topological(&self) -> Vec<Uuid> {
        let mut out = Vec::new();
        for r in self.children(None) {
            out.push(r);
            out.extend(self.descendants(r));
        }
        out
    }

    fn names(&self, uuids: &[Uuid]) -> Vec<String> {
        uuids.iter().map(|u| self.get(*u).name.clone()).collect()
    }

    fn remove_all(&mut self, uuids: &[Uuid]) {
        self.snapshots.retain(|s| !uuids.contains(&s.uuid));
    }

    fn allowed(&self, kind: usize, state: PowerState) -> bool {
        self.caps[kind] & power_bit(state) != 0
    }

    /// Drops the optional steps the backend does not implement, then refuses the plan
    /// unless every step is allowed in the live power state (SEMANTICS.md §4).
    fn fit(&self, mut steps: Vec<PStep>) -> Result<Vec<PStep>, Expected> {
        steps.retain(|s| !matches!(s.kind, DETACH_LIVE | FORGET) || self.caps[s.kind] != 0);
        for s in steps.iter().filter(|s| s.kind != ADOPT) {
            if !self.allowed(s.kind, self.live_state) {
                return Err(err(code::OPERATION_INVALID));
            }
            if let Some(left) = s.state
                && !self.allowed(s.kind, left)
            {
                return Err(err(code::OPERATION_INVALID));
            }
        }
        Ok(steps)
    }

    fn done(&mut self, plan: Vec<PStep>) {
        self.last = Expected::Ok;
        self.last_plan = plan;
    }

    fn fail(&mut self, e: Expected) {
        self.last = e;
        self.last_plan = Vec::new();
    }

    /// The call reaches the domain: a pending operation is finished first (§7.1).
    pub fn reach(&mut self) {
        self.last_reached = true;
        if let Some(p) = self.pending.take() {
            let keep = (self.next_token, self.generated, self.caps);
            *self = *p;
            (self.next_token, self.generated, self.caps) = keep;
            self.pending = None;
            self.pending_steps = 0;
            self.pending_plan = Vec::new();
            self.pending_ran = 0;
            self.last_reached = true;
        }
    }

    /// Starts an operation: clears the last outcome.
    pub fn begin(&mut self) {
        self.last_reached = false;
        self.last = Expected::Ok;
        self.last_plan = Vec::new();
    }

    /// Ends a modelled operation whose metadata effect is applied to `self` (`before` is
    /// the state it started from, `steps` its physical steps before reclaim, `folded` the
    /// layer a merge or consolidate pushes into its dependents): the physical layout
    /// follows, retired data nothing depends on any more is freed by the same plan
    /// (§7.2), and the whole plan is checked against the capabilities in the power state
    /// before the operation — a refusal restores `before`.
    fn settle(&mut self, before: &RefModel, mut steps: Vec<PStep>, folded: Option<Uuid>) {
        let known = |m: &RefModel, u: &Uuid| m.by_uuid(u).is_some() || m.retired.contains(u);
        let gone: Vec<Uuid> = before
            .snapshots
            .iter()
            .map(|x| x.uuid)
            .filter(|u| !known(self, u))
            .collect();
        {
            self.drop_layers(&gone, folded);
            self.free_idle_retired();
            let freed: Vec<Uuid> = before
                .snapshots
                .iter()
                .map(|x| x.uuid)
                .chain(before.retired.iter().copied())
                .filter(|u| !known(self, u))
                .filter(|u| {
                    !steps.iter().any(|s| {
                        s.uuid == Some(*u)
                            && matches!(s.kind, DISCARD_LEAF | MERGE_INTO_PARENT | CONSOLIDATE)
                    })
                })
                .collect();
            steps.extend(freed.into_iter().map(|u| PStep::on(DISCARD_LEAF, u)));
        }
        match before.fit(steps) {
            Ok(plan) => self.done(plan),
            Err(e) => {
                let (next_token, generated) = (self.next_token, self.generated);
                *self = before.clone();
                (self.next_token, self.generated) = (next_token, generated);
                self.fail(e);
            }
        }
    }

    /// Whether a create of `u` takes over data a lost store left under that uuid: the
    /// live state sits on it directly, which a backend cannot tell from its own finished
    /// earlier run of the create step (see `create`).
    pub fn takes_over(&self, u: Uuid) -> bool {
        !self.metadata_only && self.live_on == Some(u) && self.orphans.iter().any(|(o, _)| *o == u)
    }

    /// A create; `None` name or uuid means the engine generates one.
    pub fn create(&mut self, name: Option<&str>, uuid: Option<Uuid>, description: Option<&str>) {
        if let Some(n) = name
            && !valid_name(n)
        {
            return self.fail(err(code::XML_ERROR));
        }
        self.reach();
        if name.is_some_and(|n| self.find(n).is_some())
            || uuid.is_some_and(|u| self.by_uuid(&u).is_some() || self.retired.contains(&u))
        {
            return self.fail(err(code::SNAPSHOT_EXISTS));
        }
        let before = self.clone();
        let n = self.generated + 1;
        let uuid = uuid.unwrap_or(Uuid::from_u128(GENERATED_UUID_TAG | u128::from(n)));
        self.generated = n;
        // Data a lost store left under this very uuid (a backend without `adopt` keeps it
        // beside the new tree). A create step is restartable: a backend takes data of the
        // new uuid that the live state sits on directly as its own earlier run, finished;
        // any other data of that uuid is not this snapshot's, and the step refuses.
        let orphan = (!self.metadata_only)
            .then(|| self.orphans.iter().find(|(o, _)| *o == uuid).copied())
            .flatten();
        let taken_over = orphan.filter(|(o, _)| self.takes_over(*o));
        self.snapshots.push(RefSnapshot {
            uuid,
            name: name.map_or_else(|| generated_name(n), str::to_string),
            parent: self.current,
            state: self.live_state,
            content: taken_over.map_or(self.live, |(_, token)| token),
            description: description.unwrap_or_default().to_string(),
            created: None,
        });
        self.current = Some(uuid);
        if taken_over.is_some() {
            self.orphans.retain(|(o, _)| *o != uuid);
        } else {
            self.layers.push((uuid, self.live_on));
            self.live_on = Some(uuid);
        }
        self.settle(&before, vec![PStep::on(CREATE, uuid)], None);
        if self.last != Expected::Ok {
            self.generated = before.generated;
        } else if orphan.is_some() && taken_over.is_none() {
            // The plan fits; its create step refuses: nothing changes (a fault injected
            // at that step fails it before it runs: BACKEND too).
            let (next_token, generated) = (self.next_token, before.generated);
            let plan = std::mem::take(&mut self.last_plan);
            *self = before;
            (self.next_token, self.generated) = (next_token, generated);
            self.last = err(code::BACKEND);
            self.last_plan = plan;
        }
    }

    /// REDEFINE (SEMANTICS.md §7.3), read the obvious way: the parent (by uuid, else by
    /// name) must exist; the same name, uuid and parent replace description, creation date
    /// and state; any other clash (a name or uuid in use, retired uuids included, or the
    /// same pair under another parent) is `SNAPSHOT_EXISTS`; a new snapshot is adopted —
    /// anything on a metadata-only backend, nothing on one without `adopt` (refused up
    /// front), else only data the backend holds for that
    /// uuid stored on that parent (`OPERATION_INVALID` otherwise); current moves (and the
    /// live state is taken to derive from S) only with CURRENT.
    pub fn redefine(&mut self, r: &Redefinition) {
        let Some(current) = decode_redefine(r.flags) else {
            return self.fail(err(code::INVALID_ARG));
        };
        let bad_parent_name = matches!(&r.parent, Some(Target::Name(n)) if !valid_name(n));
        if !valid_name(&r.name) || bad_parent_name {
            return self.fail(err(code::XML_ERROR));
        }
        self.reach();
        let parent = match &r.parent {
            None => None,
            Some(Target::Uuid(u)) => match self.by_uuid(u) {
                Some(p) => Some(p.uuid),
                None => return self.fail(err(code::NO_SNAPSHOT)),
            },
            Some(Target::Name(n)) => match self.find(n) {
                Some(p) => Some(p.uuid),
                None => return self.fail(err(code::NO_SNAPSHOT)),
            },
        };
        let same = self.by_uuid(&r.uuid).cloned();
        let named = self.find(&r.name).map(|s| s.uuid);
        let replace = match (&same, named) {
            (Some(s), Some(n)) if s.uuid == n && s.parent == parent => true,
            (None, None) if !self.retired.contains(&r.uuid) => false,
            _ => return self.fail(err(code::SNAPSHOT_EXISTS)),
        };
        if !replace && !self.metadata_only && !self.adopts {
            return self.fail(err(code::OPERATION_INVALID));
        }
        let before = self.clone();
        let state = r.state.unwrap_or(PowerState::Shutoff);
        let description = r.description.clone().unwrap_or_default();
        let mut steps = Vec::new();
        let mut adoptable = true;
        if replace {
            let s = self.get_mut(r.uuid);
            s.description = description;
            s.state = state;
            // A replace without a date keeps the snapshot's.
            if r.created.is_some() {
                s.created = r.created;
            }
        } else {
            let orphan = self.orphans.iter().find(|(u, _)| *u == r.uuid).copied();
            let content = if self.metadata_only {
                0 // no data to hold
            } else {
                match orphan {
                    Some((u, token)) if self.layer_parent(u) == parent => token,
                    _ => {
                        adoptable = false;
                        0
                    }
                }
            };
            self.orphans.retain(|(u, _)| *u != r.uuid);
            self.snapshots.push(RefSnapshot {
                uuid: r.uuid,
                name: r.name.clone(),
                parent,
                state,
                content,
                description,
                created: r.created,
            });
            if !self.layers.iter().any(|(l, _)| *l == r.uuid) {
                self.layers.push((r.uuid, parent));
            }
            steps.push(PStep::on(ADOPT, r.uuid));
        }
        if current {
            self.current = Some(r.uuid);
            // The engine takes the live state to sit on S from now on; retired data
            // between them is then freed (settle), so physically too. Anything else
            // between them (data no metadata knows yet, another snapshot) stays, and so
            // does the live state.
            // On a metadata-only backend where data "is" is only the engine's
            // bookkeeping, which now says S.
            if self.metadata_only || self.live_over_retired_to(r.uuid) {
                self.live_on = Some(r.uuid);
            }
        }
        self.settle(&before, steps, None);
        if self.last == Expected::Ok && !adoptable {
            // The plan fits; its first action, the backend's adopt, refuses: nothing
            // changes. The plan is kept so that a fault injected at the adopt (which
            // fails before it runs) is predicted as BACKEND instead.
            let (next_token, generated) = (self.next_token, self.generated);
            let plan = std::mem::take(&mut self.last_plan);
            *self = before;
            (self.next_token, self.generated) = (next_token, generated);
            self.last = err(code::OPERATION_INVALID);
            self.last_plan = plan;
        }
    }

    /// Whether the live state is stored on `u`'s data, directly or through retired data
    /// and data no metadata knows: what a REDEFINE with CURRENT claims (§7.3), and what
    /// invariant 7 then needs on a backend with data.
    pub fn live_derives_from(&self, u: Uuid) -> bool {
        let mut at = self.live_on;
        let mut hops = 0;
        while let Some(l) = at {
            if l == u {
                return true;
            }
            let transparent =
                self.retired.contains(&l) || self.orphans.iter().any(|(o, _)| *o == l);
            if !transparent || hops > self.layers.len() {
                return false;
            }
            at = self.layer_parent(l);
            hops += 1;
        }
        false
    }

    /// Whether the live state is stored on `u`'s data directly or through retired data
    /// only.
    fn live_over_retired_to(&self, u: Uuid) -> bool {
        let mut at = self.live_on;
        let mut hops = 0;
        while let Some(l) = at {
            if l == u {
                return true;
            }
            if !self.retired.contains(&l) || hops > self.layers.len() {
                return false;
            }
            at = self.layer_parent(l);
            hops += 1;
        }
        false
    }

    /// Whether the live state derives from `current` (invariant 7 as the model sees it):
    /// the first layer below it that is neither retired nor unknown to the metadata.
    pub fn live_agrees(&self) -> bool {
        let mut at = self.live_on;
        let mut hops = 0;
        while let Some(l) = at {
            let transparent =
                self.retired.contains(&l) || self.orphans.iter().any(|(o, _)| *o == l);
            if !transparent || hops > self.layers.len() {
                break;
            }
            at = self.layer_parent(l);
            hops += 1;
        }
        at == self.current
    }

    /// The metadata is lost (a new, empty store over the same disks): every layer the
    /// backend holds becomes data no metadata knows, for REDEFINE to adopt.
    pub fn lose_metadata(&mut self) {
        let content = |m: &RefModel, u: Uuid| {
            m.by_uuid(&u).map(|s| s.content).or_else(|| {
                m.retired_content
                    .iter()
                    .rev()
                    .find(|(r, _)| *r == u)
                    .map(|(_, t)| *t)
            })
        };
        let mut orphans = self.orphans.clone();
        if self.metadata_only {
            // No data: what the engine knew of where data "is" was only its own
            // bookkeeping, lost with the store (a new store starts on the base).
            orphans.extend(self.snapshots.iter().map(|s| (s.uuid, 0)));
            orphans.extend(self.retired.iter().map(|r| (*r, 0)));
            self.layers.clear();
            self.live_on = None;
        } else {
            for (u, _) in &self.layers {
                if let Some(t) = content(self, *u) {
                    orphans.push((*u, t));
                }
            }
        }
        self.orphans = orphans;
        self.snapshots.clear();
        self.retired.clear();
        self.current = None;
        // The retention policy lived in the store too.
        self.keep_last = None;
        self.last = Expected::Ok;
        self.last_plan = Vec::new();
    }

    /// The guest writes: the live content becomes new (also in a pending operation's end
    /// state: the guest runs on whatever the live state is).
    pub fn write(&mut self) {
        self.live = self.next_token;
        let reverts = self.pending_rerun().iter().any(|s| s.kind == REVERT);
        if let Some(p) = &mut self.pending {
            let unrun = self
                .pending_plan
                .get(self.pending_ran..)
                .unwrap_or_default();
            for s in unrun {
                if s.kind == CREATE
                    && let Some(k) = s.uuid
                    && let Some(snap) = p.snapshots.iter_mut().find(|x| x.uuid == k)
                {
                    snap.content = self.next_token;
                }
            }
            if !reverts {
                p.live = self.next_token;
            }
        }
        self.next_token += 1;
        self.last = Expected::Ok;
        self.last_plan = Vec::new();
    }

    /// The steps of the pending operation its roll-forward runs: those not recorded as
    /// done, the failed one again included (a revert that ran is run again).
    fn pending_rerun(&self) -> &[PStep] {
        let first = self.pending_plan.len().saturating_sub(self.pending_steps);
        self.pending_plan.get(first..).unwrap_or_default()
    }

    /// The guest starts, pauses or stops.
    pub fn set_power(&mut self, state: PowerState) {
        self.live_state = state;
        let reverts = self.pending_rerun().iter().any(|s| s.kind == REVERT);
        if let Some(p) = &mut self.pending {
            // As for a guest write: a create still to run records the state then, a
            // revert still to run sets its own.
            let unrun = self
                .pending_plan
                .get(self.pending_ran..)
                .unwrap_or_default();
            for s in unrun {
                if s.kind == CREATE
                    && let Some(k) = s.uuid
                    && let Some(snap) = p.snapshots.iter_mut().find(|x| x.uuid == k)
                {
                    snap.state = state;
                }
            }
            if !reverts {
                p.live_state = state;
            }
        }
        self.last = Expected::Ok;
        self.last_plan = Vec::new();
    }

    /// Resolves a target as the kit does: a name through a read of the state shown now
    /// (no roll-forward), then the call reaches the domain and the uuid must still exist.
    fn resolve(&mut self, target: &Target) -> Result<Uuid, Expected> {
        let uuid = match target {
            Target::Name(n) => match self.find(n) {
                Some(s) => s.uuid,
                None => return Err(err(code::NO_SNAPSHOT)),
            },
            Target::Uuid(u) => *u,
        };
        self.reach();
        if self.by_uuid(&uuid).is_none() {
            return Err(err(code::NO_SNAPSHOT));
        }
        Ok(uuid)
    }

    /// A revert, with a revert flag word.
    pub fn revert(&mut self, target: &Target, revert_flags: u32) {
        let Some(force) = decode_revert(revert_flags) else {
            return self.fail(err(code::INVALID_ARG));
        };
        let uuid = match self.resolve(target) {
            Ok(u) => u,
            Err(e) => return self.fail(e),
        };
        let before = self.clone();
        let s = self.get(uuid).clone();
        let left = force.unwrap_or(s.state);
        self.live = s.content;
        self.current = Some(s.uuid);
        self.live_state = left;
        self.live_on = Some(s.uuid);
        let step = PStep {
            kind: REVERT,
            uuid: Some(uuid),
            state: Some(left),
        };
        self.settle(&before, vec![step], None);
    }

    /// A KEEP_LIVE revert (§7.4), with a revert flag word: a create of K (named `keep`,
    /// else a generated name) from the live state, then the revert, as one plan.
    pub fn revert_keep(&mut self, target: &Target, revert_flags: u32, keep: Option<&str>) {
        let Some(force) = decode_revert(revert_flags) else {
            return self.fail(err(code::INVALID_ARG));
        };
        let uuid = match self.resolve(target) {
            Ok(u) => u,
            Err(e) => return self.fail(e),
        };
        if let Some(n) = keep {
            if !valid_name(n) {
                return self.fail(err(code::INVALID_ARG));
            }
            if self.find(n).is_some() {
                return self.fail(err(code::SNAPSHOT_EXISTS));
            }
        }
        let before = self.clone();
        let n = self.generated + 1;
        let k = Uuid::from_u128(GENERATED_UUID_TAG | u128::from(n));
        self.generated = n;
        self.snapshots.push(RefSnapshot {
            uuid: k,
            name: keep.map_or_else(|| generated_name(n), str::to_string),
            parent: self.current,
            state: self.live_state,
            content: self.live,
            description: String::new(),
            created: None,
        });
        self.layers.push((k, self.live_on));
        let s = self.get(uuid).clone();
        let left = force.unwrap_or(s.state);
        self.live = s.content;
        self.current = Some(uuid);
        self.live_state = left;
        self.live_on = Some(uuid);
        let revert = PStep {
            kind: REVERT,
            uuid: Some(uuid),
            state: Some(left),
        };
        self.settle(&before, vec![PStep::on(CREATE, k), revert], None);
        if self.last != Expected::Ok {
            self.generated = before.generated;
        }
    }

    /// Sets (or with None removes) a keep-last retention policy (§7.5); metadata of the
    /// domain, not of its tree.
    pub fn set_keep_last(&mut self, last: Option<usize>) {
        self.reach();
        self.keep_last = last;
        self.done(Vec::new());
    }

    /// Prune (§7.5) under a keep-last policy, as this model reads it: every snapshot but
    /// the newest `last` (snapshots are created in date order here), the current one never,
    /// deleted with CONSOLIDATE one by one, oldest first. Every delete is checked against
    /// the capabilities before any runs: one the backend cannot run in the power state
    /// refuses the whole prune, nothing deleted. Otherwise the first delete that fails
    /// ends the prune with its error; the ones before stay done.
    pub fn prune(&mut self) {
        self.reach();
        let before = self.clone();
        let Some(last) = self.keep_last else {
            return self.done(Vec::new());
        };
        // Oldest first by creation date, ties by creation order. A date a REDEFINE gave
        // lies in the past (the generator's are before 2024); every other snapshot was
        // made at the clock's "now", later than those, in the order it was made.
        let mut by_age: Vec<(i64, usize, Uuid)> = self
            .snapshots
            .iter()
            .enumerate()
            .map(|(i, s)| (s.created.unwrap_or(i64::MAX), i, s.uuid))
            .collect();
        by_age.sort();
        let n = by_age.len();
        let victims: Vec<Uuid> = by_age[..n.saturating_sub(last)]
            .iter()
            .map(|(_, _, u)| *u)
            .filter(|u| Some(*u) != self.current)
            .collect();
        let mut plan = Vec::new();
        for v in victims {
            self.delete(&Target::Uuid(v), delete_flag::CONSOLIDATE);
            if matches!(&self.last, Expected::Err(c, _) if *c == code::OPERATION_INVALID) {
                let (next_token, generated, last) =
                    (self.next_token, self.generated, self.last.clone());
                *self = before;
                (self.next_token, self.generated) = (next_token, generated);
                return self.fail(last);
            }
            if self.last != Expected::Ok {
                return;
            }
            plan.append(&mut self.last_plan);
        }
        self.done(plan);
    }

    /// A rename.
    pub fn rename(&mut self, target: &Target, new_name: &str) {
        let uuid = match self.resolve(target) {
            Ok(u) => u,
            Err(e) => return self.fail(e),
        };
        if !valid_name(new_name) {
            return self.fail(err(code::INVALID_ARG));
        }
        if self.find(new_name).is_some_and(|o| o.uuid != uuid) {
            return self.fail(err(code::SNAPSHOT_EXISTS));
        }
        self.get_mut(uuid).name = new_name.to_string();
        self.done(Vec::new());
    }

    /// Discard steps for `set`, leaves first: a member is discarded after all of its
    /// descendants that are in the set.
    fn leaves_first(&self, set: &[Uuid]) -> Vec<PStep> {
        let mut out = Vec::new();
        let mut left: Vec<Uuid> = set.to_vec();
        while !left.is_empty() {
            let leaf = *left
                .iter()
                .find(|u| !self.descendants(**u).iter().any(|d| left.contains(d)))
                .expect("a forest has leaves");
            out.push(PStep::on(DISCARD_LEAF, leaf));
            left.retain(|u| *u != leaf);
        }
        out
    }

    /// A delete with a delete flag word.
    pub fn delete(&mut self, target: &Target, delete_flags: u32) {
        let Some(mode) = decode_delete(delete_flags) else {
            return self.fail(err(code::INVALID_ARG));
        };
        let uuid = match self.resolve(target) {
            Ok(u) => u,
            Err(e) => return self.fail(e),
        };
        let before = self.clone();
        let s = self.get(uuid).clone();
        let p = s.parent;
        let children = self.children(Some(s.uuid));
        let current_in = |m: &RefModel, set: &[Uuid]| m.current.is_some_and(|c| set.contains(&c));
        let (steps, folded) = match mode {
            Mode::Retire | Mode::Consolidate => {
                for c in children {
                    self.get_mut(c).parent = p;
                }
                if current_in(self, &[s.uuid]) {
                    self.current = p;
                }
                self.remove_all(&[s.uuid]);
                if mode == Mode::Retire {
                    self.retired.push(s.uuid);
                    self.retired_content.push((s.uuid, s.content));
                    (vec![PStep::on(FORGET, uuid)], None)
                } else {
                    (vec![PStep::on(CONSOLIDATE, uuid)], Some(uuid))
                }
            }
            Mode::Discard | Mode::DiscardForce => {
                let below = self.descendants(s.uuid);
                if mode == Mode::Discard && !below.is_empty() {
                    return self.fail(Expected::Err(code::WOULD_DISCARD, self.names(&below)));
                }
                let mut gone = vec![s.uuid];
                gone.extend(below);
                let steps = self.leaves_first(&gone);
                if current_in(self, &gone) {
                    self.current = p;
                }
                self.remove_all(&gone);
                (steps, None)
            }
            Mode::Merge | Mode::MergeForce => {
                let mut victims = Vec::new();
                for sib in self.children(p).into_iter().filter(|u| *u != s.uuid) {
                    victims.push(sib);
                    victims.extend(self.descendants(sib));
                }
                if mode == Mode::Merge && !victims.is_empty() {
                    return self.fail(Expected::Err(code::WOULD_DISCARD, self.names(&victims)));
                }
                let mut steps = self.leaves_first(&victims);
                steps.push(PStep::on(MERGE_INTO_PARENT, s.uuid));
                if current_in(self, &victims) || current_in(self, &[s.uuid]) {
                    self.current = p;
                }
                self.remove_all(&victims);
                if let Some(p) = p {
                    let parent = self.get_mut(p);
                    parent.content = s.content;
                    parent.state = s.state;
                }
                for c in children {
                    self.get_mut(c).parent = p;
                }
                self.remove_all(&[s.uuid]);
                (steps, Some(uuid))
            }
            Mode::ChildrenOnly => {
                let below = self.descendants(s.uuid);
                let steps = self.leaves_first(&below);
                if current_in(self, &below) {
                    self.current = Some(s.uuid);
                }
                self.remove_all(&below);
                (steps, None)
            }
        };
        self.settle(&before, steps, folded);
    }

    /// A delete-all: detach the live state, then free every snapshot leaves first, then
    /// every retired snapshot's data (the kit checks the physical order of those).
    pub fn delete_all(&mut self) {
        self.reach();
        let before = self.clone();
        let mut steps = Vec::new();
        if !self.snapshots.is_empty() || !self.retired.is_empty() {
            steps.push(PStep {
                kind: DETACH_LIVE,
                uuid: None,
                state: None,
            });
        }
        steps.extend(self.leaves_first(&self.topological()));
        steps.extend(self.retired.iter().map(|r| PStep::on(DISCARD_LEAF, *r)));
        // Data no metadata knows is not the engine's to delete: it stays, and the live
        // state ends on the nearest of it below (none once the layers are gone).
        let orphan = |l: Uuid| before.orphans.iter().any(|(o, _)| *o == l);
        let mut at = self.live_on;
        while let Some(u) = at.filter(|u| !orphan(*u)) {
            at = self.layer_parent(u);
        }
        self.live_on = at;
        self.layers.retain(|(l, _)| orphan(*l));
        self.snapshots.clear();
        self.retired.clear();
        self.current = None;
        self.settle(&before, steps, None);
    }

    /// A reclaim (§7.2): every retired snapshot's data is consolidated into what is
    /// stored on it; every content stays.
    pub fn reclaim(&mut self) {
        self.reach();
        let before = self.clone();
        let steps: Vec<PStep> = self
            .retired
            .iter()
            .map(|r| PStep::on(CONSOLIDATE, *r))
            .collect();
        for r in self.retired.clone() {
            self.drop_layers(&[r], Some(r));
        }
        self.retired.clear();
        self.settle(&before, steps, None);
    }

    // ---- where data is stored (SEMANTICS.md §7.2), naively ----

    fn layer_parent(&self, u: Uuid) -> Option<Uuid> {
        self.layers
            .iter()
            .find(|(l, _)| *l == u)
            .and_then(|(_, p)| *p)
    }

    /// Layers `gone` leave. A discarded layer takes the retired layers stacked on it (their
    /// chain, through retired layers only, reaches it: nothing but discarded layers or the
    /// live state can be stored there) with it; `folded` (merged or consolidated) does not.
    /// Whatever was stored on a layer that went is then stored on its first surviving
    /// ancestor.
    fn drop_layers(&mut self, gone: &[Uuid], folded: Option<Uuid>) {
        let mut all: Vec<Uuid> = gone.to_vec();
        for r in self.retired.clone() {
            let mut at = self.layer_parent(r);
            while let Some(u) = at {
                if gone.contains(&u) && Some(u) != folded {
                    all.push(r);
                    break;
                }
                if !self.retired.contains(&u) {
                    break;
                }
                at = self.layer_parent(u);
            }
        }
        let survivor = |m: &RefModel, mut at: Option<Uuid>| {
            while let Some(u) = at {
                if !all.contains(&u) {
                    break;
                }
                at = m.layer_parent(u);
            }
            at
        };
        let moved: Vec<(Uuid, Option<Uuid>)> = self
            .layers
            .iter()
            .filter(|(l, _)| !all.contains(l))
            .map(|(l, p)| (*l, survivor(self, *p)))
            .collect();
        self.live_on = survivor(self, self.live_on);
        self.layers = moved;
        self.retired.retain(|r| !all.contains(r));
    }

    /// Retired data with no dependent — no layer stored on it, not the live state — is
    /// freed by the operation that left it so.
    fn free_idle_retired(&mut self) {
        loop {
            let idle: Vec<Uuid> = self
                .retired
                .iter()
                .filter(|r| {
                    self.live_on != Some(**r) && !self.layers.iter().any(|(_, p)| *p == Some(**r))
                })
                .copied()
                .collect();
            if idle.is_empty() {
                return;
            }
            self.retired.retain(|r| !idle.contains(r));
            self.layers.retain(|(l, _)| !idle.contains(l));
        }
    }

    /// A domain opened again (from the store, or a second handle): opening finishes a
    /// pending operation.
    pub fn reopen(&mut self) {
        self.reach();
        self.last = Expected::Ok;
        self.last_plan = Vec::new();
    }

    /// Applies an injected fault to the operation just modelled (`before` is the state
    /// before it; the fault counts every step the call sends, a roll-forward's first).
    ///
    /// A roll-forward that fails again is `INCOMPLETE` and changes nothing more. Otherwise,
    /// in the operation's own plan: a failing first step that changed nothing is `BACKEND`
    /// and no change; any later failure (or a first step that failed after changing the
    /// physical tree) is `INCOMPLETE`, shows the state before, and leaves the end state
    /// pending. Steps that change no layer (revert, forget, detach_live) fail before they
    /// run, as a backend undoes a failed step.
    pub fn fault(&mut self, before: &RefModel, fault: FaultAt) {
        if !self.last_reached {
            return; // refused before reaching the domain: no step ran
        }
        let mut at = fault.at;
        let mut base = before.clone();
        base.last_reached = true;
        base.next_token = self.next_token;
        base.generated = self.generated;
        if before.pending.is_some() {
            if at < before.pending_steps {
                base.last = err(code::INCOMPLETE);
                base.last_plan = Vec::new();
                base.pending_steps = before.pending_steps - at;
                let first = before.pending_plan.len() - before.pending_steps;
                base.pending_ran = before
                    .pending_ran
                    .max(first + at + usize::from(fault.after));
                *self = base;
                return;
            }
            at -= before.pending_steps;
            base.reach();
            base.next_token = self.next_token;
            base.generated = self.generated;
        }
        if at == 0
            && self.last == err(code::OPERATION_INVALID)
            && self.last_plan.first().is_some_and(|s| s.kind == ADOPT)
        {
            // The fault fails the adopt before the backend could refuse it.
            base.last = err(code::BACKEND);
            base.last_plan = Vec::new();
            *self = base;
            return;
        }
        if self.last != Expected::Ok || at >= self.last_plan.len() {
            return; // refused before any step, or the fault never fires
        }
        // A create that takes over data a lost store left under the live state (see
        // `create`) changes no layer either.
        let step = &self.last_plan[at];
        let taken_over = step.kind == CREATE && step.uuid.is_some_and(|u| base.takes_over(u));
        let quiet = taken_over || matches!(step.kind, REVERT | FORGET | DETACH_LIVE | ADOPT);
        if at == 0 && (!fault.after || quiet) {
            base.last = err(code::BACKEND);
            base.last_plan = Vec::new();
        } else {
            let mut end = self.clone();
            end.last = Expected::Ok;
            // A revert step that already ran has changed the live state (a revert's plan
            // may go on to free retired data): reads of the metadata show the state
            // before, the live content and power state are the revert's.
            if self.last_plan[..at].iter().any(|s| s.kind == REVERT) {
                base.live = self.live;
                base.live_state = self.live_state;
            }
            base.last = err(code::INCOMPLETE);
            base.pending_steps = end.last_plan.len() - at;
            base.pending_plan = end.last_plan.clone();
            base.pending_ran = at + usize::from(fault.after);
            base.last_plan = std::mem::take(&mut end.last_plan);
            base.pending = Some(Box::new(end));
        }
        *self = base;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_each_flag_and_refuses_pairs_and_unknown_bits() {
        assert_eq!(decode_delete(0), Some(Mode::Retire));
        assert_eq!(decode_delete(1), Some(Mode::Merge));
        assert_eq!(decode_delete(2), Some(Mode::MergeForce));
        assert_eq!(decode_delete(4), Some(Mode::Discard));
        assert_eq!(decode_delete(8), Some(Mode::DiscardForce));
        assert_eq!(decode_delete(16), Some(Mode::Consolidate));
        assert_eq!(decode_delete(32), Some(Mode::ChildrenOnly));
        for a in 0..6 {
            for b in 0..6 {
                if a != b {
                    assert_eq!(decode_delete(1 << a | 1 << b), None, "bits {a} and {b}");
                }
            }
        }
        assert_eq!(decode_delete(64), None);
        assert_eq!(decode_delete(1 << 31 | 1), None);
        assert_eq!(decode_revert(0), Some(None));
        assert_eq!(decode_revert(2), Some(Some(PowerState::Paused)));
        assert_eq!(decode_revert(3), None);
        assert_eq!(decode_revert(8), None);
    }

    #[test]
    fn name_rules() {
        for ok in [
            "a",
            "my snap",
            "é",
            "a.b",
            "...",
            &"x".repeat(255),
            "1733350000",
        ] {
            assert!(valid_name(ok), "expected {ok:?} valid");
        }
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "a\0b",
            "a\u{7f}",
            "a\u{85}b",
            " a",
            "a ",
            "\u{a0}a",
            "a\u{3000}",
            &"y".repeat(256),
        ] {
            assert!(!valid_name(bad), "expected {bad:?} invalid");
        }
    }
}
