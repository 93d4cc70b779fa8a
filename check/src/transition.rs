//! The one `Transition` type that drives both the reference model and the system, and the
//! reference state machine that generates sequences of them.

use proptest::prelude::*;
use proptest_state_machine::ReferenceStateMachine;
use snaptree_engine::{Uuid, flags};

use crate::model::RefModel;

/// One step of a test sequence.
#[derive(Clone, PartialEq, Eq)]
pub enum Transition {
    /// Create a snapshot with this name and uuid (duplicates and bad names included).
    Create {
        /// The name (may collide or be invalid).
        name: String,
        /// The uuid.
        uuid: Uuid,
    },
    /// The guest writes data into the live state.
    Write {
        /// Which data.
        seed: u64,
    },
    /// Revert to a snapshot by name (may be missing), with revert flags.
    Revert {
        /// The snapshot name.
        name: String,
        /// Revert flags (including invalid combinations).
        flags: u32,
    },
    /// Rename a snapshot.
    Rename {
        /// The snapshot name.
        name: String,
        /// The new name.
        new_name: String,
    },
    /// Delete with a delete flag word (including two flags at once).
    Delete {
        /// The snapshot name.
        name: String,
        /// Delete flags.
        flags: u32,
    },
    /// Delete every snapshot.
    DeleteAll,
}

fn flag_names(word: u32) -> String {
    let names = [
        (flags::DELETE_MERGE, "MERGE"),
        (flags::DELETE_MERGE_FORCE, "MERGE_FORCE"),
        (flags::DELETE_DISCARD, "DISCARD"),
        (flags::DELETE_DISCARD_FORCE, "DISCARD_FORCE"),
        (flags::DELETE_CONSOLIDATE, "CONSOLIDATE"),
        (flags::DELETE_CHILDREN_ONLY, "CHILDREN_ONLY"),
    ];
    let set: Vec<&str> = names
        .iter()
        .filter(|(f, _)| word & f != 0)
        .map(|(_, n)| *n)
        .collect();
    if set.is_empty() {
        "retire".into()
    } else {
        set.join("|")
    }
}

impl std::fmt::Debug for Transition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Transition::Create { name, uuid } => {
                write!(f, "create {name:?} (uuid …{:x})", uuid.as_u128() & 0xffff)
            }
            Transition::Write { seed } => write!(f, "guest write seed={seed}"),
            Transition::Revert { name, flags } => write!(f, "revert {name:?} flags={flags:#x}"),
            Transition::Rename { name, new_name } => write!(f, "rename {name:?} -> {new_name:?}"),
            Transition::Delete { name, flags } => {
                write!(f, "delete {name:?} {}", flag_names(*flags))
            }
            Transition::DeleteAll => write!(f, "delete-all"),
        }
    }
}

/// How the generator is tuned for a backend.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Revert flag words to draw from (offline backends cannot start a guest).
    pub revert_flags: Vec<u32>,
    /// Delete flag words to draw from.
    pub delete_flags: Vec<u32>,
}

impl Default for Tuning {
    fn default() -> Self {
        Tuning {
            revert_flags: vec![
                0,
                0,
                flags::REVERT_RUNNING,
                flags::REVERT_PAUSED,
                flags::REVERT_SHUTOFF,
                flags::REVERT_RUNNING | flags::REVERT_PAUSED,
            ],
            delete_flags: vec![
                0,
                flags::DELETE_MERGE,
                flags::DELETE_MERGE_FORCE,
                flags::DELETE_DISCARD,
                flags::DELETE_DISCARD_FORCE,
                flags::DELETE_CONSOLIDATE,
                flags::DELETE_CHILDREN_ONLY,
                flags::DELETE_MERGE | flags::DELETE_DISCARD,
            ],
        }
    }
}

thread_local! {
    static TUNING: std::cell::RefCell<Tuning> = std::cell::RefCell::new(Tuning::default());
}

/// Sets the tuning the generator uses on this thread.
pub fn set_tuning(t: Tuning) {
    TUNING.with(|cell| *cell.borrow_mut() = t);
}

/// The model's state plus the counter that hands out fresh uuids.
#[derive(Debug, Clone, Default)]
pub struct RefState {
    /// The model.
    pub model: RefModel,
    /// Uuids handed out so far.
    pub uuids: u128,
}

/// The reference state machine over [`RefModel`].
#[derive(Debug)]
pub struct RefMachine;

const NAMES: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];
const BAD_NAMES: [&str; 3] = ["../x", " pad", "."];

fn any_name(state: &RefState) -> BoxedStrategy<String> {
    let existing: Vec<String> = state
        .model
        .snapshots
        .iter()
        .map(|s| s.name.clone())
        .collect();
    let pool = proptest::sample::select(NAMES.to_vec()).prop_map(str::to_string);
    if existing.is_empty() {
        pool.boxed()
    } else {
        prop_oneof![4 => proptest::sample::select(existing), 1 => pool].boxed()
    }
}

impl ReferenceStateMachine for RefMachine {
    type State = RefState;
    type Transition = Transition;

    fn init_state() -> BoxedStrategy<RefState> {
        Just(RefState::default()).boxed()
    }

    fn transitions(state: &RefState) -> BoxedStrategy<Transition> {
        let tuning = TUNING.with(|t| t.borrow().clone());
        let next_uuid =
            Uuid::from_u128(0x5eed_0000_0000_0000_0000_0000_0000_0000 | (state.uuids + 1));
        let create_name = prop_oneof![
            12 => proptest::sample::select(NAMES.to_vec()).prop_map(str::to_string),
            1 => proptest::sample::select(BAD_NAMES.to_vec()).prop_map(str::to_string),
        ];
        let new_name = prop_oneof![
            8 => proptest::sample::select(NAMES.to_vec()).prop_map(str::to_string),
            1 => proptest::sample::select(BAD_NAMES.to_vec()).prop_map(str::to_string),
        ];
        prop_oneof![
            6 => create_name.prop_map(move |name| Transition::Create { name, uuid: next_uuid }),
            4 => any::<u64>().prop_map(|seed| Transition::Write { seed }),
            3 => (any_name(state), proptest::sample::select(tuning.revert_flags))
                .prop_map(|(name, flags)| Transition::Revert { name, flags }),
            1 => (any_name(state), new_name).prop_map(|(name, new_name)| Transition::Rename { name, new_name }),
            6 => (any_name(state), proptest::sample::select(tuning.delete_flags))
                .prop_map(|(name, flags)| Transition::Delete { name, flags }),
            1 => Just(Transition::DeleteAll),
        ]
        .boxed()
    }

    fn apply(mut state: RefState, t: &Transition) -> RefState {
        let m = &mut state.model;
        match t {
            Transition::Create { name, uuid } => {
                state.uuids += 1;
                m.create(name, *uuid);
            }
            Transition::Write { .. } => m.write(),
            Transition::Revert { name, flags } => m.revert(name, *flags),
            Transition::Rename { name, new_name } => m.rename(name, new_name),
            Transition::Delete { name, flags } => m.delete(name, *flags),
            Transition::DeleteAll => m.delete_all(),
        }
        state
    }
}

/// Decodes arbitrary bytes into a sequence of transitions (for fuzzing): three bytes a
/// step, names drawn from the same pools as the generator, so fuzzers reach deep trees.
pub fn transitions_from_bytes(data: &[u8]) -> Vec<Transition> {
    let tuning = Tuning::default();
    let mut out = Vec::new();
    let mut uuids: u128 = 0;
    let name = |b: u8| -> String {
        let all: Vec<&str> = NAMES.iter().chain(BAD_NAMES.iter()).copied().collect();
        all[b as usize % all.len()].to_string()
    };
    for chunk in data.chunks_exact(3) {
        let (op, a, b) = (chunk[0], chunk[1], chunk[2]);
        let t = match op % 16 {
            0..=3 => {
                uuids += 1;
                Transition::Create {
                    name: name(a),
                    uuid: Uuid::from_u128(0xf022_0000_0000_0000_0000_0000_0000_0000 | uuids),
                }
            }
            4..=6 => Transition::Write {
                seed: u64::from(a) << 8 | u64::from(b),
            },
            7..=8 => Transition::Revert {
                name: name(a),
                flags: tuning.revert_flags[b as usize % tuning.revert_flags.len()],
            },
            9 => Transition::Rename {
                name: name(a),
                new_name: name(b),
            },
            10..=14 => Transition::Delete {
                name: name(a),
                flags: tuning.delete_flags[b as usize % tuning.delete_flags.len()],
            },
            _ => Transition::DeleteAll,
        };
        out.push(t);
    }
    out
}
