//! `transaction`: several snapshot actions applied atomically — all of them or none, with
//! the guest paused for no longer than the switch itself.

use serde_json::{Value, json};

use crate::client::Qmp;
use crate::error::Result;

/// One action of a `transaction`.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Action {
    /// `blockdev-snapshot`: `overlay` (an opened node with no backing, see
    /// [`Qmp::create_overlay`]) goes on top of `node`, which becomes its read-only backing.
    /// Every device using `node` then writes into `overlay`.
    Snapshot {
        /// The node to freeze: a device's active node.
        node: String,
        /// The overlay node.
        overlay: String,
    },
    /// `blockdev-snapshot-sync`: QEMU creates the overlay file itself (qcow2, backing file
    /// string = `node`'s file name as QEMU knows it) and opens it as `overlay_node`.
    SnapshotSync {
        /// The node to freeze.
        node: String,
        /// The overlay file to create.
        file: String,
        /// The node name of the new overlay.
        overlay_node: String,
    },
    /// `blockdev-snapshot-internal-sync`: an internal disk-only snapshot named `name`.
    InternalSnapshot {
        /// The node or device.
        device: String,
        /// The snapshot name (tag).
        name: String,
    },
}

impl Action {
    fn to_json(&self) -> Value {
        match self {
            Action::Snapshot { node, overlay } => json!({
                "type": "blockdev-snapshot",
                "data": { "node": node, "overlay": overlay },
            }),
            Action::SnapshotSync {
                node,
                file,
                overlay_node,
            } => json!({
                "type": "blockdev-snapshot-sync",
                "data": {
                    "node-name": node,
                    "snapshot-file": file,
                    "snapshot-node-name": overlay_node,
                    "format": "qcow2",
                    "mode": "absolute-paths",
                },
            }),
            Action::InternalSnapshot { device, name } => json!({
                "type": "blockdev-snapshot-internal-sync",
                "data": { "device": device, "name": name },
            }),
        }
    }
}

impl Qmp {
    /// `transaction` of `actions`: QEMU prepares every action, then commits them all, or
    /// aborts them all if one fails (the error names the first failure).
    pub fn transaction(&mut self, actions: &[Action]) -> Result<()> {
        let actions: Vec<Value> = actions.iter().map(Action::to_json).collect();
        self.execute("transaction", json!({ "actions": actions }))
            .map(drop)
    }
}
