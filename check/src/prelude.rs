//! A prelude: a snapshot tree another tool made before snaptree was installed, which a
//! conformance run adopts (REDEFINE, SEMANTICS.md §7.3) before its random sequence, so that
//! every later step runs on data the backend names its own way (libvirt's tags and overlay
//! files, not snaptree's uuids).
//!
//! The kit describes the tree here, independently of any backend: the snapshots (names,
//! uuids, parents), the snapshot the live state derives from, and the order in which
//! another tool would have made it ([`Prelude::build`]: guest writes, snapshots taken,
//! reverts). The backend's test factory runs those steps with the other tool (qemu-img,
//! say) and measures each content's digest with the backend's own `content_digest` hook
//! while that content is live. The model starts from the same tree as data no metadata
//! knows ([`RefModel::orphans`]); the kit redefines it parents first, each step checked as
//! usual, and the random sequence starts from the adopted tree.

use snaptree_engine::Uuid;

use crate::model::{Redefinition, RefModel, Target, Token, create_flag};

/// One snapshot of a prelude.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreludeSnapshot {
    /// Its name (what the other tool tagged or named its data with).
    pub name: String,
    /// The uuid the import gives it (the other tool's metadata, libvirt's `<uuid>`).
    pub uuid: Uuid,
    /// Its parent, an index into [`Prelude::snapshots`] of an earlier snapshot.
    pub parent: Option<usize>,
}

/// A tree made outside snaptree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prelude {
    /// The snapshots, parents first, in the order the other tool took them and the kit
    /// redefines them. Where a snapshot has several children, the one on the live state's
    /// path comes first (a backend that keeps no parent links, such as qcow2 internal
    /// snapshots, infers where the live state is from the order of adoption).
    pub snapshots: Vec<PreludeSnapshot>,
    /// The snapshot the live state derives from (libvirt's current), an index.
    pub live: usize,
}

/// One step another tool runs to make a prelude.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Build {
    /// The guest writes into the live state (the backend's `write_guest(seed)` hook), which
    /// then holds content `token`: measure its digest.
    Write {
        /// The content the live state holds afterwards.
        token: Token,
        /// The seed for `write_guest`.
        seed: u64,
    },
    /// The other tool snapshots the live state under this name.
    Snapshot {
        /// The snapshot's name.
        name: String,
    },
    /// The other tool reverts the live state to the snapshot of this name.
    Revert {
        /// The snapshot's name.
        name: String,
    },
}

/// The uuids a prelude's snapshots take: apart from the generator's fresh ones (`5eed…`)
/// and from placeholders of generated ones.
pub const PRELUDE_UUID_TAG: u128 = 0x1b7e_0000_0000_0000_0000_0000_0000_0000;

/// What [`Prelude::build`] leads to.
struct Contents {
    steps: Vec<Build>,
    /// Each snapshot's content.
    snapshots: Vec<Token>,
    /// The live content at the end.
    live: Token,
}

impl Prelude {
    /// A chain: each snapshot the child of the one before, the live state on the last (what
    /// an external overlay chain can hold: only the live image's backing chain is found).
    pub fn chain(names: &[&str]) -> Prelude {
        Prelude {
            snapshots: names
                .iter()
                .enumerate()
                .map(|(i, n)| PreludeSnapshot {
                    name: (*n).to_string(),
                    uuid: Uuid::from_u128(PRELUDE_UUID_TAG | (i as u128 + 1)),
                    parent: i.checked_sub(1),
                })
                .collect(),
            live: names.len().saturating_sub(1),
        }
    }

    /// A chain with a second child of its first snapshot (a branch), added last; the live
    /// state stays on the chain's last snapshot.
    pub fn branched(chain: &[&str], branch: &str) -> Prelude {
        let mut p = Prelude::chain(chain);
        let n = p.snapshots.len();
        p.snapshots.push(PreludeSnapshot {
            name: branch.to_string(),
            uuid: Uuid::from_u128(PRELUDE_UUID_TAG | (n as u128 + 1)),
            parent: Some(0),
        });
        p
    }

    /// Checks the shape: parents before children, one root, the live snapshot present.
    pub fn validate(&self) -> Result<(), String> {
        if self.snapshots.is_empty() || self.live >= self.snapshots.len() {
            return Err(format!(
                "expected a prelude with snapshots and the live state on one of them, got {} snapshots, live on #{}",
                self.snapshots.len(),
                self.live
            ));
        }
        for (i, s) in self.snapshots.iter().enumerate() {
            match s.parent {
                None if i > 0 => {
                    return Err(format!(
                        "expected one root (the first snapshot), '{}' is another",
                        s.name
                    ));
                }
                Some(p) if p >= i => {
                    return Err(format!(
                        "expected '{}' after its parent (#{p}), it is #{i}",
                        s.name
                    ));
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn contents(&self) -> Contents {
        let mut steps = Vec::new();
        let mut tokens: Vec<Token> = Vec::new();
        let mut next: Token = 1;
        // The live state starts on the empty disk (content 0) and derives from nothing.
        let mut on: Option<usize> = None;
        let write = |steps: &mut Vec<Build>, next: &mut Token| {
            let token = *next;
            *next += 1;
            steps.push(Build::Write {
                token,
                seed: 0x0b7e_5eed_0000_0000 | token,
            });
            token
        };
        for (i, s) in self.snapshots.iter().enumerate() {
            if s.parent != on
                && let Some(p) = s.parent
            {
                steps.push(Build::Revert {
                    name: self.snapshots[p].name.clone(),
                });
            }
            let token = write(&mut steps, &mut next);
            tokens.push(token);
            steps.push(Build::Snapshot {
                name: s.name.clone(),
            });
            on = Some(i);
        }
        if on != Some(self.live) {
            steps.push(Build::Revert {
                name: self.snapshots[self.live].name.clone(),
            });
        }
        let live = write(&mut steps, &mut next);
        Contents {
            steps,
            snapshots: tokens,
            live,
        }
    }

    /// The steps another tool runs to make the tree on an empty disk: for each snapshot in
    /// order, a revert to its parent when the live state is elsewhere, a guest write and the
    /// snapshot; then a revert to the live snapshot if needed and a last guest write.
    pub fn build(&self) -> Vec<Build> {
        self.contents().steps
    }

    /// `base` (capabilities, power state, what the backend can do) holding this tree as
    /// data no metadata knows: what the model starts from.
    pub fn orphan_model(&self, base: RefModel) -> RefModel {
        let c = self.contents();
        let uuid = |i: usize| self.snapshots[i].uuid;
        RefModel {
            orphans: (0..self.snapshots.len())
                .map(|i| (uuid(i), c.snapshots[i]))
                .collect(),
            layers: self
                .snapshots
                .iter()
                .map(|s| (s.uuid, s.parent.map(uuid)))
                .collect(),
            live_on: Some(uuid(self.live)),
            live: c.live,
            next_token: c.live + 1,
            ..base
        }
    }

    /// The REDEFINE of each snapshot, parents first (parent by uuid, as libvirt's XML from
    /// `virsh snapshot-dumpxml` gives it by name: both are resolved by the engine), the
    /// live one with CURRENT; each is a `Transition::Redefine` for the kit.
    pub fn import(&self) -> Vec<Redefinition> {
        self.snapshots
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let current = if i == self.live {
                    create_flag::CURRENT
                } else {
                    0
                };
                Redefinition {
                    name: s.name.clone(),
                    uuid: s.uuid,
                    parent: s.parent.map(|p| {
                        if p % 2 == 0 {
                            Target::Name(self.snapshots[p].name.clone())
                        } else {
                            Target::Uuid(self.snapshots[p].uuid)
                        }
                    }),
                    description: Some(format!("made outside snaptree as '{}'", s.name)),
                    created: Some(1_700_000_000 + i as i64 * 100),
                    state: None,
                    flags: create_flag::REDEFINE | current,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Expected;

    #[test]
    fn a_branched_prelude_is_built_parents_first_and_imported_whole() {
        let p = Prelude::branched(&["s1", "1700000100", "s3"], "alt");
        p.validate().unwrap();
        let w = |token| Build::Write {
            token,
            seed: 0x0b7e_5eed_0000_0000 | token,
        };
        let snap = |n: &str| Build::Snapshot { name: n.into() };
        let revert = |n: &str| Build::Revert { name: n.into() };
        assert_eq!(
            p.build(),
            vec![
                w(1),
                snap("s1"),
                w(2),
                snap("1700000100"),
                w(3),
                snap("s3"),
                revert("s1"),
                w(4),
                snap("alt"),
                revert("s3"),
                w(5),
            ],
            "expected the steps another tool runs to make the tree"
        );
        let mut m = p.orphan_model(RefModel::default());
        assert_eq!(m.orphans.len(), 4, "expected every snapshot's data unknown");
        for r in p.import() {
            m.begin();
            m.redefine(&r);
            assert_eq!(m.last, Expected::Ok, "expected {} to adopt", r.name);
        }
        assert!(m.orphans.is_empty(), "expected everything adopted");
        assert_eq!(
            m.current,
            Some(p.snapshots[2].uuid),
            "expected current on s3"
        );
        assert!(m.live_agrees(), "expected the live state on current");
        let content: Vec<Token> = m.snapshots.iter().map(|s| s.content).collect();
        assert_eq!(
            content,
            vec![1, 2, 3, 4],
            "expected each snapshot's content"
        );
        assert_eq!(m.live, 5, "expected the live content of the last write");
    }

    #[test]
    fn a_second_root_is_refused() {
        let mut p = Prelude::chain(&["a", "b"]);
        p.snapshots[1].parent = None;
        assert!(p.validate().is_err(), "expected a second root refused");
    }
}
