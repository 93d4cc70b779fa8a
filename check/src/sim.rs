//! An in-memory backend that stores every snapshot physically as a delta over its parent,
//! as qcow2 overlay chains do, so that a planner mistake shows up as corrupted content
//! rather than only as a wrong tree.
//!
//! The disk is a map from block index to value (0 and absent mean the same). There is a
//! base layer, one layer per snapshot (including retired ones), and the live layer. Every
//! change to a layer first makes each physical dependent keep its own content, the way
//! `qemu-img rebase` in safe mode does; removing a layer re-parents its dependents the
//! same way.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use snaptree_engine::{
    Adoption, Backend, BackendProvider, Capabilities, ContentRef, Error, PhysicalTree, PowerState,
    Progress, Result, Step, TestHooks, Uuid, xml::DomainXml,
};

/// Block index to value.
pub type Blocks = BTreeMap<u32, u64>;

/// A layer's physical parent: a snapshot layer, or `None` for the base.
type Parent = Option<Uuid>;

#[derive(Debug, Clone, Default)]
struct Layer {
    parent: Parent,
    delta: Blocks,
}

/// Who depends on a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dependent {
    Snapshot(Uuid),
    Live,
}

/// The simulator. Cloning it clones the whole simulated disk.
#[derive(Debug, Clone)]
pub struct SimBackend {
    base: Blocks,
    layers: HashMap<Uuid, Layer>,
    live: Layer,
    /// Layers announced by `forget`: retired snapshots whose data stays.
    retired: BTreeSet<Uuid>,
    power: PowerState,
    caps: Capabilities,
}

impl Default for SimBackend {
    fn default() -> Self {
        SimBackend::new()
    }
}

impl SimBackend {
    /// An empty disk, domain shut off, every step allowed in every power state.
    pub fn new() -> SimBackend {
        SimBackend {
            base: Blocks::new(),
            layers: HashMap::new(),
            live: Layer::default(),
            retired: BTreeSet::new(),
            power: PowerState::Shutoff,
            caps: Capabilities::ALL,
        }
    }

    /// The same simulator advertising other capabilities.
    pub fn with_capabilities(mut self, caps: Capabilities) -> SimBackend {
        self.caps = caps;
        self
    }

    /// Sets the live power state, as a guest starting or stopping would.
    pub fn set_power_state(&mut self, state: PowerState) {
        self.power = state;
    }

    /// Number of blocks stored in all layers: what the simulated disk occupies.
    pub fn blocks_held(&self) -> usize {
        self.base.len()
            + self.live.delta.len()
            + self.layers.values().map(|l| l.delta.len()).sum::<usize>()
    }

    /// The uuids of every snapshot layer held.
    pub fn layers(&self) -> BTreeSet<Uuid> {
        self.layers.keys().copied().collect()
    }

    /// The content of a layer (`None`: the base), folded from the base up.
    fn content(&self, of: Parent) -> Blocks {
        let mut chain = Vec::new();
        let mut at = of;
        while let Some(u) = at {
            let layer = &self.layers[&u];
            chain.push(&layer.delta);
            at = layer.parent;
        }
        let mut out = self.base.clone();
        for delta in chain.into_iter().rev() {
            out.extend(delta.iter().map(|(k, v)| (*k, *v)));
        }
        out
    }

    /// The content of the live state.
    pub fn live_content(&self) -> Blocks {
        let mut out = self.content(self.live.parent);
        out.extend(self.live.delta.iter().map(|(k, v)| (*k, *v)));
        out
    }

    /// The content of a snapshot, if held.
    pub fn snapshot_content(&self, uuid: &Uuid) -> Option<Blocks> {
        self.layers
            .contains_key(uuid)
            .then(|| self.content(Some(*uuid)))
    }

    fn dependents(&self, of: Parent) -> Vec<Dependent> {
        let mut out: Vec<Dependent> = self
            .layers
            .iter()
            .filter(|(_, l)| l.parent == of)
            .map(|(u, _)| Dependent::Snapshot(*u))
            .collect();
        out.sort_by_key(|d| match d {
            Dependent::Snapshot(u) => *u,
            Dependent::Live => Uuid::nil(),
        });
        if self.live.parent == of {
            out.push(Dependent::Live);
        }
        out
    }

    fn layer_mut(&mut self, d: Dependent) -> &mut Layer {
        match d {
            Dependent::Snapshot(u) => self.layers.get_mut(&u).expect("dependent layer exists"),
            Dependent::Live => &mut self.live,
        }
    }

    /// Before the content of `of` changes from `old` to `new`, copies into each dependent
    /// the old value of every block it does not override and that changes.
    fn preserve_dependents(&mut self, of: Parent, old: &Blocks, new: &Blocks) {
        let changed: Vec<u32> = old
            .keys()
            .chain(new.keys())
            .copied()
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .filter(|b| old.get(b).copied().unwrap_or(0) != new.get(b).copied().unwrap_or(0))
            .collect();
        for d in self.dependents(of) {
            let layer = self.layer_mut(d);
            for b in &changed {
                layer
                    .delta
                    .entry(*b)
                    .or_insert_with(|| old.get(b).copied().unwrap_or(0));
            }
        }
    }

    /// Moves a dependent onto a new parent keeping its content (a safe rebase).
    fn rebase(&mut self, d: Dependent, new_parent: Parent) {
        let old_parent = match d {
            Dependent::Snapshot(u) => self.layers[&u].parent,
            Dependent::Live => self.live.parent,
        };
        let old = self.content(old_parent);
        let new = self.content(new_parent);
        let layer = self.layer_mut(d);
        for b in old
            .keys()
            .chain(new.keys())
            .copied()
            .collect::<BTreeSet<u32>>()
        {
            let (o, n) = (
                old.get(&b).copied().unwrap_or(0),
                new.get(&b).copied().unwrap_or(0),
            );
            if o != n {
                layer.delta.entry(b).or_insert(o);
            }
        }
        layer.parent = new_parent;
    }

    /// Replaces the content of a layer, keeping every dependent's content.
    fn set_content(&mut self, of: Parent, new: Blocks) {
        let old = self.content(of);
        self.preserve_dependents(of, &old, &new);
        match of {
            None => self.base = new,
            Some(u) => {
                let below = self.content(self.layers[&u].parent);
                let delta = diff(&new, &below);
                self.layers.get_mut(&u).expect("layer exists").delta = delta;
            }
        }
    }

    /// Removes a snapshot layer, keeping every dependent's content.
    fn remove_layer(&mut self, uuid: Uuid) {
        let Some(parent) = self.layers.get(&uuid).map(|l| l.parent) else {
            return; // already removed: the step is being re-run
        };
        for d in self.dependents(Some(uuid)) {
            self.rebase(d, parent);
        }
        self.layers.remove(&uuid);
    }

    /// The snapshot layers (not retired, not live) whose nearest non-retired physical
    /// ancestor is `of`: the snapshot's children as the engine sees them.
    fn visible_children(&self, of: Parent) -> Vec<Uuid> {
        let mut out = Vec::new();
        let mut todo = vec![of];
        while let Some(at) = todo.pop() {
            for d in self.dependents(at) {
                if let Dependent::Snapshot(u) = d {
                    if self.retired.contains(&u) {
                        todo.push(Some(u));
                    } else {
                        out.push(u);
                    }
                }
            }
        }
        out
    }

    /// Refuses a step whose precondition (SEMANTICS.md §4) the engine failed to make true:
    /// the simulator is strict so that planner mistakes cannot hide behind its
    /// robustness.
    fn violated(&self, step: &Step, why: String) -> Result<()> {
        Err(Error::Backend {
            backend: "sim".into(),
            message: format!("precondition of {} violated: {why}", step.kind().name()),
        })
    }

    fn step(&mut self, step: &Step) -> Result<()> {
        match step {
            Step::DiscardLeaf { snapshot } if self.layers.contains_key(snapshot) => {
                // Retired or not: only the live state may be stored on a discarded layer
                // (the step keeps it valid); any other layer on it means the engine freed
                // data something depends on, or in the wrong order.
                let on: Vec<Uuid> = self
                    .dependents(Some(*snapshot))
                    .into_iter()
                    .filter_map(|d| match d {
                        Dependent::Snapshot(u) => Some(u),
                        Dependent::Live => None,
                    })
                    .collect();
                if !on.is_empty() {
                    let what = if self.retired.contains(snapshot) {
                        "retired layer"
                    } else {
                        "layer"
                    };
                    return self.violated(
                        step,
                        format!("{what} {snapshot} still has layers stored on it: {on:?}"),
                    );
                }
            }
            Step::MergeIntoParent { snapshot, parent } if self.layers.contains_key(snapshot) => {
                let siblings: Vec<Uuid> = self
                    .visible_children(*parent)
                    .into_iter()
                    .filter(|u| u != snapshot)
                    .collect();
                if !siblings.is_empty() {
                    return self.violated(step, format!("{snapshot} has siblings {siblings:?}"));
                }
            }
            _ => {}
        }
        self.apply_step(step)
    }

    fn apply_step(&mut self, step: &Step) -> Result<()> {
        match step {
            Step::Create { snapshot, .. } => {
                if self.layers.contains_key(snapshot) {
                    return Ok(());
                }
                let frozen = std::mem::take(&mut self.live);
                self.layers.insert(*snapshot, frozen);
                self.live = Layer {
                    parent: Some(*snapshot),
                    delta: Blocks::new(),
                };
            }
            Step::Revert { snapshot, state } => {
                self.require(snapshot)?;
                self.live = Layer {
                    parent: Some(*snapshot),
                    delta: Blocks::new(),
                };
                self.power = *state;
            }
            Step::DiscardLeaf { snapshot } | Step::Consolidate { snapshot } => {
                self.remove_layer(*snapshot);
                self.retired.remove(snapshot);
            }
            Step::MergeIntoParent { snapshot, parent } => {
                if !self.layers.contains_key(snapshot) {
                    return Ok(());
                }
                if let Some(p) = parent {
                    self.require(p)?;
                }
                let merged = self.content(Some(*snapshot));
                self.set_content(*parent, merged);
                self.remove_layer(*snapshot);
            }
            Step::DetachLive => {
                let full = self.live_content();
                let base = self.content(None);
                self.live = Layer {
                    parent: None,
                    delta: diff(&full, &base),
                };
            }
            Step::Forget { snapshot } => {
                self.retired.insert(*snapshot);
            }
        }
        Ok(())
    }

    fn require(&self, uuid: &Uuid) -> Result<()> {
        if self.layers.contains_key(uuid) {
            Ok(())
        } else {
            Err(Error::Backend {
                backend: "sim".into(),
                message: format!("no layer for snapshot {uuid}"),
            })
        }
    }
}

/// The blocks of `new` that differ from `below` (zeros written where `below` has data).
fn diff(new: &Blocks, below: &Blocks) -> Blocks {
    let mut out = Blocks::new();
    for b in new
        .keys()
        .chain(below.keys())
        .copied()
        .collect::<BTreeSet<u32>>()
    {
        let (n, o) = (
            new.get(&b).copied().unwrap_or(0),
            below.get(&b).copied().unwrap_or(0),
        );
        if n != o {
            out.insert(b, n);
        }
    }
    out
}

/// A digest of content that ignores zero blocks, so equal guest-visible content gives
/// equal digests whatever the layering (FNV-1a, 64 bits).
pub fn digest(blocks: &Blocks) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (b, v) in blocks.iter().filter(|(_, v)| **v != 0) {
        for byte in b.to_le_bytes().into_iter().chain(v.to_le_bytes()) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// The blocks and values a guest write with `seed` touches: a few pseudo-random blocks
/// in 0..64, so writes overlap and shadow each other across layers.
pub fn guest_write(seed: u64) -> Vec<(u32, u64)> {
    let mut x = seed
        .wrapping_mul(6_364_136_223_846_793_005)
        .wrapping_add(1_442_695_040_888_963_407);
    let n = 1 + (x >> 60) as usize % 4;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            ((x >> 33) as u32 % 64, (x >> 7) | 1)
        })
        .collect()
}

impl Backend for SimBackend {
    fn name(&self) -> &str {
        "sim"
    }

    fn capabilities(&self) -> Capabilities {
        self.caps
    }

    fn power_state(&mut self) -> Result<PowerState> {
        Ok(self.power)
    }

    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> Result<()> {
        self.step(step)?;
        progress.report(1.0);
        Ok(())
    }

    fn list_physical(&mut self) -> Result<PhysicalTree> {
        Ok(PhysicalTree {
            parents: self.layers.iter().map(|(u, l)| (*u, l.parent)).collect(),
            live_parent: self.live.parent,
        })
    }

    fn test_hooks(&mut self) -> Option<&mut dyn TestHooks> {
        Some(self)
    }

    fn can_adopt(&self) -> bool {
        true
    }

    /// Adopts a layer it holds stored directly on `adoption.parent` (SEMANTICS.md §7.3);
    /// changes no data. A layer announced retired is a snapshot again once adopted.
    fn adopt(&mut self, adoption: &Adoption, _progress: &mut dyn Progress) -> Result<()> {
        let Some(layer) = self.layers.get(&adoption.snapshot) else {
            return Err(Error::OperationInvalid(format!(
                "the sim holds no data for snapshot '{}' ({}) to adopt",
                adoption.name, adoption.snapshot
            )));
        };
        if layer.parent != adoption.parent {
            let on = |p: Parent| p.map_or("the base".to_string(), |u| u.to_string());
            return Err(Error::OperationInvalid(format!(
                "the sim holds the data of snapshot '{}' on {}, not on {}",
                adoption.name,
                on(layer.parent),
                on(adoption.parent)
            )));
        }
        self.retired.remove(&adoption.snapshot);
        Ok(())
    }
}

impl TestHooks for SimBackend {
    fn content_digest(&mut self, of: ContentRef) -> Result<String> {
        match of {
            ContentRef::Live => Ok(digest(&self.live_content())),
            ContentRef::Snapshot(u) => {
                self.require(&u)?;
                Ok(digest(&self.content(Some(u))))
            }
        }
    }

    fn write_guest(&mut self, seed: u64) -> Result<()> {
        for (b, v) in guest_write(seed) {
            self.live.delta.insert(b, v);
        }
        Ok(())
    }
}

/// Opens a fresh [`SimBackend`] for every domain (in memory: nothing survives the process).
#[derive(Debug, Default)]
pub struct SimProvider;

impl BackendProvider for SimProvider {
    fn open(&self, _domain: &DomainXml, _xml: &str) -> Result<Box<dyn Backend>> {
        Ok(Box::new(SimBackend::new()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use snaptree_engine::NoProgress;

    fn run(sim: &mut SimBackend, step: Step) {
        sim.execute(&step, &mut NoProgress).unwrap();
    }

    #[test]
    fn merge_folds_the_child_into_the_parent_and_keeps_dependents() {
        let mut sim = SimBackend::new();
        let (p, s) = (Uuid::from_u128(1), Uuid::from_u128(2));
        sim.live.delta.insert(1, 10);
        run(
            &mut sim,
            Step::Create {
                snapshot: p,
                parent: None,
                name: "p".into(),
                description: String::new(),
            },
        );
        sim.live.delta.insert(1, 20);
        sim.live.delta.insert(2, 30);
        run(
            &mut sim,
            Step::Create {
                snapshot: s,
                parent: Some(p),
                name: "s".into(),
                description: String::new(),
            },
        );
        sim.live.delta.insert(3, 40);
        let live = sim.live_content();
        let s_content = sim.snapshot_content(&s).unwrap();
        run(
            &mut sim,
            Step::MergeIntoParent {
                snapshot: s,
                parent: Some(p),
            },
        );
        assert_eq!(
            sim.snapshot_content(&p).unwrap(),
            s_content,
            "expected P to hold S's content"
        );
        assert_eq!(
            sim.live_content(),
            live,
            "expected the live content unchanged"
        );
        assert!(sim.snapshot_content(&s).is_none(), "expected S freed");
        run(
            &mut sim,
            Step::MergeIntoParent {
                snapshot: s,
                parent: Some(p),
            },
        );
        assert_eq!(
            sim.live_content(),
            live,
            "expected a re-run merge to change nothing"
        );
    }

    #[test]
    fn discard_of_a_layer_the_live_state_uses_keeps_the_live_content() {
        let mut sim = SimBackend::new();
        let a = Uuid::from_u128(1);
        sim.live.delta.insert(5, 1);
        run(
            &mut sim,
            Step::Create {
                snapshot: a,
                parent: None,
                name: "a".into(),
                description: String::new(),
            },
        );
        let live = sim.live_content();
        run(&mut sim, Step::DiscardLeaf { snapshot: a });
        assert_eq!(sim.live_content(), live);
        assert_eq!(
            sim.blocks_held(),
            1,
            "expected only the live copy of the block to remain"
        );
    }
}
