//! The block graph: what `query-block` and `query-named-block-nodes` report, and adding or
//! removing nodes (`blockdev-add`, `blockdev-del`).

use std::path::Path;

use serde::Deserialize;
use serde_json::{Value, json};
use snaptree_qemu_img::ImageInfo;

use crate::client::Qmp;
use crate::error::{Error, Result};

/// One entry of `query-block`: a block backend, usually a guest device's.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct BlockDevice {
    /// The legacy drive name; empty for devices attached with `-blockdev` + `-device`.
    #[serde(default)]
    pub device: String,
    /// The device's QOM path, e.g. `/machine/peripheral/vd0/virtio-backend`.
    #[serde(default)]
    pub qdev: Option<String>,
    /// The medium, absent for an empty drive.
    #[serde(default)]
    pub inserted: Option<Inserted>,
}

impl BlockDevice {
    /// True when this backend belongs to the device with id `id` (`-device …,id=ID`): its
    /// QOM path is `/machine/peripheral/ID` or below (virtio devices add `/virtio-backend`).
    pub fn belongs_to(&self, id: &str) -> bool {
        let Some(qdev) = &self.qdev else {
            return self.device == id;
        };
        let prefix = format!("/machine/peripheral/{id}");
        qdev == &prefix || qdev.starts_with(&(prefix + "/")) || self.device == id
    }
}

/// The medium of a [`BlockDevice`]: its top (active) node.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct Inserted {
    /// The active node's name: the node a snapshot, commit or stream names as `device`.
    pub node_name: String,
    /// The active image's file name, as QEMU knows it.
    pub file: String,
    /// The format driver, e.g. `qcow2`.
    pub drv: String,
    /// Read-only.
    #[serde(default)]
    pub ro: bool,
    /// How many backing files lie below the active image.
    // One of QMP's few snake_case members.
    #[serde(default, rename = "backing_file_depth")]
    pub backing_file_depth: u32,
    /// The image, with its backing chain nested in `backing_image`.
    pub image: ImageInfo,
}

/// One node of `query-named-block-nodes`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct BlockNode {
    /// The node name (auto-generated ones start with `#block`).
    pub node_name: String,
    /// The driver, e.g. `qcow2` or `file`.
    pub drv: String,
    /// The file name QEMU knows the node by.
    pub file: String,
    /// Read-only.
    #[serde(default)]
    pub ro: bool,
    /// The backing file name recorded in the image, if any.
    #[serde(default, rename = "backing_file")]
    pub backing_file: Option<String>,
    /// The image (its backing chain is omitted when queried with `flat`).
    pub image: ImageInfo,
    /// The cache mode.
    #[serde(default)]
    pub cache: Option<CacheInfo>,
    /// `off`, `on` or `unmap`.
    #[serde(default, rename = "detect_zeroes")]
    pub detect_zeroes: Option<String>,
}

/// `BlockdevCacheInfo`: how a node caches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub struct CacheInfo {
    /// Writeback caching (always true for nodes added with `blockdev-add`).
    pub writeback: bool,
    /// `O_DIRECT`.
    pub direct: bool,
    /// Flushes ignored.
    pub no_flush: bool,
}

/// The I/O options of a node that a node replacing it must repeat: `blockdev-add` and
/// `blockdev-reopen` reset every option they are not given. QEMU does not report
/// `discard`: the caller sets it from its own configuration; left unset it is `unmap` when
/// `detect-zeroes` is `unmap` (which requires it), QEMU's default otherwise.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoOptions {
    /// The cache mode, if reported.
    pub cache: Option<CacheInfo>,
    /// `detect-zeroes`, if not `off`.
    pub detect_zeroes: Option<String>,
    /// `discard` (`unmap` or `ignore`), if known.
    pub discard: Option<String>,
}

impl IoOptions {
    /// Adds the options to a format node's arguments.
    pub fn apply_to_format(&self, spec: &mut Value) {
        self.apply_cache(spec);
        if let Some(dz) = &self.detect_zeroes {
            spec["detect-zeroes"] = json!(dz);
        }
        match (&self.discard, self.detect_zeroes.as_deref()) {
            (Some(d), _) => spec["discard"] = json!(d),
            (None, Some("unmap")) => spec["discard"] = json!("unmap"),
            (None, _) => {}
        }
    }

    /// Adds the options to a protocol (`file`) node's arguments.
    pub fn apply_to_file(&self, spec: &mut Value) {
        self.apply_cache(spec);
    }

    fn apply_cache(&self, spec: &mut Value) {
        if let Some(c) = self.cache {
            spec["cache"] = json!({ "direct": c.direct, "no-flush": c.no_flush });
        }
    }
}

/// How a qcow2 node added with [`qcow2_node`] finds its backing chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing<'a> {
    /// Open the backing file the image header names (QEMU's default).
    FromHeader,
    /// No backing at all (`"backing": null`): required for the overlay of
    /// `blockdev-snapshot`, which attaches the snapshotted node as its backing.
    None,
    /// An existing node, by name.
    Node(&'a str),
}

/// The `blockdev-add` arguments for a qcow2 image at `path` named `node_name`, with its
/// protocol child inline and named `<node_name>-file` (so both show up by name in
/// `query-named-block-nodes`; the child goes away with the node).
pub fn qcow2_node(node_name: &str, path: &Path, backing: Backing<'_>) -> Value {
    let mut spec = json!({
        "driver": "qcow2",
        "node-name": node_name,
        "file": {
            "driver": "file",
            "filename": path.to_string_lossy(),
            "node-name": format!("{node_name}-file"),
        },
    });
    match backing {
        Backing::FromHeader => {}
        Backing::None => spec["backing"] = Value::Null,
        Backing::Node(node) => spec["backing"] = json!(node),
    }
    spec
}

impl Qmp {
    /// `query-block`: every block backend with its active node.
    pub fn query_block(&mut self) -> Result<Vec<BlockDevice>> {
        self.execute_as("query-block", Value::Null)
    }

    /// `query-named-block-nodes` with `flat: true`: every node once, chains not nested.
    pub fn query_named_block_nodes(&mut self) -> Result<Vec<BlockNode>> {
        self.execute_as("query-named-block-nodes", json!({ "flat": true }))
    }

    /// The active node name of the device whose id (`-device …,id=ID`) is `device_id`:
    /// the node a live snapshot or an active commit of that disk names.
    pub fn active_node(&mut self, device_id: &str) -> Result<String> {
        self.query_block()?
            .into_iter()
            .find(|d| d.belongs_to(device_id))
            .and_then(|d| d.inserted)
            .map(|i| i.node_name)
            .ok_or_else(|| Error::Command {
                command: "query-block".to_owned(),
                class: "DeviceNotFound".to_owned(),
                desc: format!("no device {device_id} with a medium"),
            })
    }

    /// The I/O options of node `node_name` (see [`IoOptions`]).
    pub fn io_options(&mut self, node_name: &str) -> Result<IoOptions> {
        let node = self
            .query_named_block_nodes()?
            .into_iter()
            .find(|n| n.node_name == node_name)
            .ok_or_else(|| Error::Command {
                command: "query-named-block-nodes".to_owned(),
                class: "DeviceNotFound".to_owned(),
                desc: format!("no node named {node_name}"),
            })?;
        Ok(IoOptions {
            cache: node.cache,
            detect_zeroes: node.detect_zeroes.filter(|d| d != "off"),
            discard: None,
        })
    }

    /// `blockdev-add` with `spec` (see [`qcow2_node`]).
    pub fn blockdev_add(&mut self, spec: Value) -> Result<()> {
        self.execute("blockdev-add", spec).map(drop)
    }

    /// `blockdev-reopen` of several nodes at once, each given by its full options (options
    /// left out go back to their defaults, so name `backing` explicitly).
    pub fn blockdev_reopen(&mut self, options: &[Value]) -> Result<()> {
        self.execute("blockdev-reopen", json!({ "options": options }))
            .map(drop)
    }

    /// Re-homes the read-only qcow2 node `node` onto a new protocol node `file_node` that
    /// opens `path` (which must be a name of the same file), keeping `backing` (a node
    /// name, or `None` for a base image).
    ///
    /// Why: QEMU reopens a node's file **by name** whenever it switches it between read-only
    /// and read-write (freezing it under a snapshot overlay, committing into it). After the
    /// file was renamed or its name given to another file, that name leads to the wrong
    /// inode and a commit writes into the wrong image (measured). Pointing the node at a
    /// name that stays put (a hard link made beforehand) keeps every later reopen right.
    /// The new file node is opened read-write so that a later commit into `node` can
    /// upgrade it; the old file child, if implicit, goes away. `file_node` is the
    /// monitor's: once the layer leaves the chain, `blockdev-del` `node`, then `file_node`,
    /// or QEMU keeps the file open.
    pub fn rehome_file(
        &mut self,
        node: &str,
        file_node: &str,
        path: &Path,
        backing: Option<&str>,
    ) -> Result<()> {
        self.blockdev_add(json!({
            "driver": "file",
            "node-name": file_node,
            "filename": path.to_string_lossy(),
        }))?;
        let reopened = self.blockdev_reopen(&[json!({
            "driver": "qcow2",
            "node-name": node,
            "file": file_node,
            "read-only": true,
            "backing": backing,
        })]);
        if reopened.is_err() {
            // Leave no orphan node behind; the reopen's error is the one that matters.
            let _ = self.blockdev_del(file_node);
        }
        reopened
    }

    /// Re-homes the read-write qcow2 node `node` (a device's active node) onto a new
    /// protocol node `file_node` that opens `path`, another name of the same file, keeping
    /// `backing` (a node name, or `None`). The guest keeps writing throughout.
    ///
    /// Why: the active node is about to be frozen under an overlay, which reopens its file
    /// read-only **by name**; the disk path will by then name the overlay (see
    /// [`Qmp::rehome_file`]). The new file node has image locking off: its twin file node
    /// still holds the inode's write lock while the reopen switches over, and the two would
    /// conflict (measured: "Failed to get \"write\" lock"). The overlay, which takes the
    /// disk path, keeps the locks that keep other writers out. `locking` asks for image
    /// locks on the new file node, possible when the current one holds none (a node
    /// re-homed before). The node's cache mode and `detect-zeroes` are kept; `discard`,
    /// which QEMU does not report, is the caller's.
    pub fn rehome_active(
        &mut self,
        node: &str,
        file_node: &str,
        path: &Path,
        backing: Option<&str>,
        locking: bool,
        discard: Option<&str>,
    ) -> Result<()> {
        let mut io = self.io_options(node)?;
        io.discard = discard.map(str::to_owned);
        let mut file = json!({
            "driver": "file",
            "node-name": file_node,
            "filename": path.to_string_lossy(),
            "locking": if locking { "on" } else { "off" },
        });
        io.apply_to_file(&mut file);
        self.blockdev_add(file)?;
        let mut format = json!({
            "driver": "qcow2",
            "node-name": node,
            "file": file_node,
            "read-only": false,
            "backing": backing,
        });
        io.apply_to_format(&mut format);
        let reopened = self.blockdev_reopen(&[format]);
        if reopened.is_err() {
            let _ = self.blockdev_del(file_node);
        }
        reopened
    }

    /// `blockdev-del`: removes a node added with `blockdev-add` that nothing uses any more.
    pub fn blockdev_del(&mut self, node_name: &str) -> Result<()> {
        self.execute("blockdev-del", json!({ "node-name": node_name }))
            .map(drop)
    }
}
