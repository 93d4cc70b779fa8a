//! An example backend written with the SDK, type `memory`: every snapshot is a full copy
//! of the disk (a map block -> value), kept in memory for the life of the process, keyed
//! by the domain's name, so a domain survives being closed and reopened.
//!
//! For tests, `<memory fail='STEP'/>` in the domain XML makes that step (`create`,
//! `revert`, ...) fail with a BACKEND error before it changes anything.
//!
//! Built as `libsnaptree_backend_memory.so` by `cargo test -p snaptree-sdk`.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use snaptree_engine::xml::DomainXml;
use snaptree_sdk::{
    Capabilities, ContentRef, PhysicalTree, PluginError, PluginResult, PowerState, Progress,
    SnaptreeBackend, Step, Uuid,
};

type Disk = BTreeMap<u32, u64>;

/// One domain's data.
#[derive(Debug, Clone)]
struct Data {
    power: PowerState,
    live: Disk,
    live_parent: Option<Uuid>,
    /// Each snapshot's physical parent and full content.
    snapshots: BTreeMap<Uuid, (Option<Uuid>, Disk)>,
}

static DOMAINS: Mutex<BTreeMap<String, Data>> = Mutex::new(BTreeMap::new());

struct Memory {
    domain: String,
    fail: Option<String>,
}

impl Memory {
    /// Runs `f` on this domain's data; the data changes only when `f` succeeds.
    fn with<T>(&self, f: impl FnOnce(&mut Data) -> PluginResult<T>) -> PluginResult<T> {
        let mut domains = DOMAINS.lock().unwrap_or_else(PoisonError::into_inner);
        let data = domains
            .get_mut(&self.domain)
            .ok_or_else(|| PluginError::backend("the domain's data is gone"))?;
        let mut copy = data.clone();
        let out = f(&mut copy)?;
        *data = copy;
        Ok(out)
    }
}

fn missing(s: &Uuid) -> PluginError {
    PluginError::backend(format!("snapshot {s} has no data"))
}

/// Removes a snapshot; its dependents move to its parent (full copies need no data move).
fn remove(d: &mut Data, s: &Uuid, new_parent: Option<Uuid>) {
    if d.snapshots.remove(s).is_none() {
        return; // removed already: steps are restartable
    }
    for (parent, _) in d.snapshots.values_mut() {
        if *parent == Some(*s) {
            *parent = new_parent;
        }
    }
    if d.live_parent == Some(*s) {
        d.live_parent = new_parent;
    }
}

fn digest(disk: &Disk) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (block, value) in disk.iter().filter(|(_, v)| **v != 0) {
        for byte in block.to_le_bytes().into_iter().chain(value.to_le_bytes()) {
            h ^= u64::from(byte);
            h = h.wrapping_mul(0x100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

impl SnaptreeBackend for Memory {
    const NAME: &'static std::ffi::CStr = c"memory";
    const TEST_HOOKS: bool = true;

    fn capabilities() -> Capabilities {
        Capabilities::ALL
    }

    fn open(domain_xml: &str) -> PluginResult<Self> {
        let domain = DomainXml::parse(domain_xml)?;
        let fail = domain_xml
            .split("<memory fail='")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .map(str::to_string);
        let mut domains = DOMAINS.lock().unwrap_or_else(PoisonError::into_inner);
        domains.entry(domain.name.clone()).or_insert_with(|| Data {
            power: PowerState::Shutoff,
            live: Disk::new(),
            live_parent: None,
            snapshots: BTreeMap::new(),
        });
        Ok(Memory {
            domain: domain.name,
            fail,
        })
    }

    fn power_state(&mut self) -> PluginResult<PowerState> {
        self.with(|d| Ok(d.power))
    }

    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> PluginResult<()> {
        if self.fail.as_deref() == Some(step.kind().name()) {
            return Err(PluginError::backend(format!(
                "injected failure in {}",
                step.kind().name()
            )));
        }
        if !progress.report(0.0) {
            return Err(PluginError::backend(format!(
                "{} was cancelled",
                step.kind().name()
            )));
        }
        self.with(|d| {
            match step {
                Step::Create { snapshot, .. } => {
                    if d.live_parent != Some(*snapshot) {
                        d.snapshots
                            .insert(*snapshot, (d.live_parent, d.live.clone()));
                        d.live_parent = Some(*snapshot);
                    }
                }
                Step::Revert { snapshot, state } => {
                    d.live = d
                        .snapshots
                        .get(snapshot)
                        .ok_or_else(|| missing(snapshot))?
                        .1
                        .clone();
                    d.live_parent = Some(*snapshot);
                    d.power = *state;
                }
                Step::DiscardLeaf { snapshot } | Step::Consolidate { snapshot } => {
                    let parent = d.snapshots.get(snapshot).and_then(|(p, _)| *p);
                    remove(d, snapshot, parent);
                }
                Step::MergeIntoParent { snapshot, parent } => {
                    if let Some((_, content)) = d.snapshots.get(snapshot).cloned() {
                        if let Some(p) = parent {
                            d.snapshots.get_mut(p).ok_or_else(|| missing(p))?.1 = content;
                        }
                        remove(d, snapshot, *parent);
                    }
                }
                Step::DetachLive => d.live_parent = None,
                Step::Forget { .. } => {}
            }
            Ok(())
        })?;
        progress.report(1.0);
        Ok(())
    }

    fn list_physical(&mut self) -> PluginResult<PhysicalTree> {
        self.with(|d| {
            Ok(PhysicalTree {
                parents: d.snapshots.iter().map(|(u, (p, _))| (*u, *p)).collect(),
                live_parent: d.live_parent,
            })
        })
    }

    fn content_digest(&mut self, of: ContentRef) -> PluginResult<String> {
        self.with(|d| match of {
            ContentRef::Live => Ok(digest(&d.live)),
            ContentRef::Snapshot(s) => {
                Ok(digest(&d.snapshots.get(&s).ok_or_else(|| missing(&s))?.1))
            }
        })
    }

    fn write_guest(&mut self, seed: u64) -> PluginResult<()> {
        self.with(|d| {
            // The sim's generator, so both backends write the same data for a seed.
            let mut x = seed;
            for _ in 0..4 {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let block = (x >> 58) as u32;
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                d.live.insert(block, (x >> 1) | 1);
            }
            Ok(())
        })
    }
}

snaptree_sdk::export_backend!(Memory);
