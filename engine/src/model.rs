//! The plain data of a snapshot and of a power state.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};

/// A VM power state: the live state of a domain, or the state a snapshot was taken in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    /// The guest is running.
    Running,
    /// The guest is paused.
    Paused,
    /// The guest is shut off.
    Shutoff,
}

impl PowerState {
    /// Every power state.
    pub const ALL: [PowerState; 3] = [PowerState::Running, PowerState::Paused, PowerState::Shutoff];

    /// The lowercase name used in XML and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            PowerState::Running => "running",
            PowerState::Paused => "paused",
            PowerState::Shutoff => "shutoff",
        }
    }

    /// Parses a state name, case-insensitively.
    pub fn parse(text: &str) -> Result<PowerState> {
        PowerState::ALL
            .into_iter()
            .find(|s| s.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| {
                Error::InvalidArg(format!(
                    "unknown power state '{}': expected running, paused or shutoff",
                    text.escape_default()
                ))
            })
    }

    /// The bit of this state in a [`PowerMask`].
    pub fn bit(self) -> PowerMask {
        PowerMask(match self {
            PowerState::Running => 1,
            PowerState::Paused => 2,
            PowerState::Shutoff => 4,
        })
    }
}

impl std::fmt::Display for PowerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of power states (bit 0 running, bit 1 paused, bit 2 shut off), as the plugin ABI
/// encodes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct PowerMask(pub u8);

impl PowerMask {
    /// Every state.
    pub const ANY: PowerMask = PowerMask(7);
    /// No state at all.
    pub const NONE: PowerMask = PowerMask(0);

    /// Whether `state` is in the set.
    pub fn contains(self, state: PowerState) -> bool {
        self.0 & state.bit().0 != 0
    }

    /// The set as words: "shut off", "running or paused".
    pub fn describe(self) -> String {
        let words: Vec<&str> = PowerState::ALL
            .into_iter()
            .filter(|s| self.contains(*s))
            .map(|s| {
                if s == PowerState::Shutoff {
                    "shut off"
                } else {
                    s.as_str()
                }
            })
            .collect();
        match words.len() {
            0 => "in no power state at all".to_string(),
            _ => words.join(" or "),
        }
    }
}

/// One snapshot's own metadata. Its place in the tree (parent, children) lives in
/// [`crate::SnapshotTree`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Unique within the domain and stable for the snapshot's whole life.
    pub uuid: Uuid,
    /// Unique within the domain; may change by rename.
    pub name: String,
    /// Free text, possibly empty.
    pub description: String,
    /// Unix seconds when the snapshot was taken.
    pub creation_date: i64,
    /// The power state the domain was in when the snapshot was taken.
    pub state: PowerState,
    /// When the snapshot expires, Unix seconds (SEMANTICS.md §7.5): `prune` deletes it
    /// from then on. None: never.
    #[serde(default)]
    pub expires: Option<i64>,
    /// Pinned: `prune` never deletes it, whatever the retention policy says.
    #[serde(default)]
    pub pinned: bool,
}
