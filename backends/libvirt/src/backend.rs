//! One libvirt domain under snaptree: each step done through libvirt's own snapshot API,
//! so libvirt's snapshot metadata always mirrors snaptree's physical tree.
//!
//! **Metadata.** Every snapshot snaptree holds data for (live or retired) is one libvirt
//! snapshot named by its uuid (the name snaptree shows can change; the uuid cannot, and a
//! retired snapshot's name may be reused), with the snaptree name as its description;
//! parents are snaptree's physical parents and libvirt's current snapshot is what the live
//! state derives from. libvirt's own revert of any entry is therefore correct, and
//! `list_physical` reads the tree straight from libvirt.
//!
//! **Steps.** A domain's disks are all internal (qcow2 internal snapshots, with memory while
//! running) or all external (disk-only overlays, created ATOMIC). Freeing is libvirt's
//! delete, which keeps every other content (for an external snapshot it block-commits the
//! overlay taken at the snapshot into the snapshot's own image, with QEMU running or
//! qemu-img offline): that is `discard_leaf` and `consolidate`. An external merge of S into
//! P deletes P (its image absorbs the changes up to S, so it now holds Σ(S)) and gives S's
//! entry P's uuid (libvirt's REDEFINE), then re-parents S's children onto it. libvirt cannot
//! merge internal snapshots, and revert to external snapshots only from libvirt 9.7.

use snaptree_engine::{PowerMask, StepKind};
use snaptree_sdk::{
    Capabilities, PhysicalTree, PluginError, PluginResult, PowerState, Progress, Step, Uuid,
};

use crate::api::{Connection, Domain, LibvirtError, Snapshot};
use crate::config::{self, Disk, Mode, SnapshotDef, Target};
use crate::sys;

/// The first libvirt version that reverts to external snapshots (9.7.0).
pub const EXTERNAL_REVERT_SINCE: u64 = 9_007_000;

impl From<LibvirtError> for PluginError {
    fn from(e: LibvirtError) -> PluginError {
        PluginError::backend(e.to_string())
    }
}

/// A libvirt version number as text ("9.0.0").
pub fn version_text(v: u64) -> String {
    format!("{}.{}.{}", v / 1_000_000, v / 1000 % 1000, v % 1000)
}

/// One open domain.
#[derive(Debug)]
pub struct LibvirtBackend {
    // Declared before the connection: dropped first.
    dom: Domain,
    conn: Connection,
    mode: Mode,
    version: u64,
    bandwidth: u64,
}

impl LibvirtBackend {
    /// Connects to libvirt and opens the domain the snaptree domain XML names.
    pub fn open(domain_xml: &str) -> PluginResult<LibvirtBackend> {
        let target = Target::parse(domain_xml)?;
        let conn = Connection::open(&target.uri).map_err(PluginError::backend)?;
        let version = conn.lib_version()?;
        let dom = conn.domain(&target.domain)?;
        let disks = config::disks(&dom.xml(sys::XML_INACTIVE)?)?;
        let mode = match disks.first() {
            None => {
                return Err(PluginError::backend(format!(
                    "libvirt domain '{}' has no disk that takes snapshots",
                    target.domain
                )));
            }
            Some(d) => d.mode,
        };
        if disks.iter().any(|d| d.mode != mode) {
            return Err(PluginError::backend(format!(
                "libvirt domain '{}' mixes internal and external disks; this backend needs one mode",
                target.domain
            )));
        }
        Ok(LibvirtBackend {
            dom,
            conn,
            mode,
            version,
            bandwidth: target.bandwidth,
        })
    }

    /// The union of every domain's capabilities (the plugin's static table).
    pub fn any_domain_capabilities() -> Capabilities {
        Capabilities::ALL
    }

    /// This domain's capabilities: by disk mode and libvirt version, in every power state.
    pub fn domain_capabilities(&self) -> Capabilities {
        capabilities(self.mode, self.version)
    }

    /// The disks' snapshot mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The daemon's libvirt version (`major * 1_000_000 + minor * 1000 + release`).
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The libvirt domain.
    pub fn domain(&self) -> &Domain {
        &self.dom
    }

    /// The block jobs' bandwidth limit in bytes per second (0: none).
    pub fn bandwidth(&self) -> u64 {
        self.bandwidth
    }

    /// The connection's URI.
    pub fn uri(&self) -> &str {
        self.conn.uri()
    }

    /// The live power state.
    pub fn power_state(&mut self) -> PluginResult<PowerState> {
        Ok(match self.dom.state()? {
            sys::state::PAUSED | sys::state::PMSUSPENDED => PowerState::Paused,
            sys::state::RUNNING | sys::state::BLOCKED | 4 => PowerState::Running,
            _ => PowerState::Shutoff,
        })
    }

    /// The domain's snapshot-capable disks as libvirt runs them now.
    pub fn disks(&self) -> PluginResult<Vec<Disk>> {
        config::disks(&self.dom.xml(0)?)
    }

    /// Executes one step (each restartable: it starts by checking whether its effect is
    /// already there). Block commits report their progress and stop on a cancel (see
    /// `commit`); the other steps are single libvirt calls, cancelled only before they
    /// start.
    pub fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> PluginResult<()> {
        if !progress.report(0.0) {
            return Err(PluginError::backend(format!(
                "{} was cancelled before it started",
                step.kind().name()
            )));
        }
        // Work an interrupted step left (a freeing past its point of no return) first.
        self.finish_pending(progress)?;
        match step {
            Step::Create {
                snapshot,
                name,
                description,
                ..
            } => self.create(*snapshot, name, description),
            Step::Revert { snapshot, state } => self.revert(*snapshot, *state),
            Step::DiscardLeaf { snapshot } | Step::Consolidate { snapshot } => {
                self.delete(*snapshot, progress)
            }
            Step::MergeIntoParent { snapshot, parent } => self.merge(*snapshot, *parent, progress),
            // Internal snapshots share clusters by reference count: the live state never
            // depends on their data. Retiring changes no data; the entry stays, as the
            // physical tree's.
            Step::DetachLive | Step::Forget { .. } => Ok(()),
        }
    }

    fn create(&mut self, u: Uuid, name: &str, description: &str) -> PluginResult<()> {
        if self.dom.snapshot(&u.to_string())?.is_some() {
            // A re-run after libvirt made it: it is then libvirt's current snapshot. One
            // that is not holds other data (left by a lost snaptree state store, or named
            // so by another tool); taking it would make the new snapshot's data an old one's.
            if self
                .dom
                .current()?
                .is_some_and(|c| c.name() == u.to_string())
            {
                return Ok(());
            }
            return Err(PluginError::backend(format!(
                "domain '{}' already has a libvirt snapshot named {u} that is not its current one: it holds other data than the live state (left by a lost snaptree state store, or made by another tool); delete it with virsh, or create the snapshot with another uuid",
                self.dom.name()
            )));
        }
        let disks = self.disks()?;
        let shown = if description.is_empty() {
            name.to_owned()
        } else {
            format!("{name}: {description}")
        };
        let mut xml = format!(
            "<domainsnapshot><name>{u}</name><description>{}</description><disks>",
            snaptree_engine::xml::dom::escape(&shown)
        );
        for d in &disks {
            xml.push_str(&format!(
                "<disk name='{}' snapshot='{}'/>",
                snaptree_engine::xml::dom::escape(&d.target),
                self.mode.as_str()
            ));
        }
        xml.push_str("</disks></domainsnapshot>");
        let mut flags = sys::CREATE_ATOMIC;
        if self.mode == Mode::External {
            flags |= sys::CREATE_DISK_ONLY;
        }
        self.dom
            .create_snapshot(&xml, flags, &format!("create snapshot {u}"))?;
        Ok(())
    }

    fn revert(&mut self, u: Uuid, state: PowerState) -> PluginResult<()> {
        if self.mode == Mode::External && self.version < EXTERNAL_REVERT_SINCE {
            return Err(self.cannot("revert to external snapshots", "9.7"));
        }
        let snap = self.need(u)?;
        let flags = match state {
            PowerState::Running => sys::REVERT_RUNNING,
            PowerState::Paused => sys::REVERT_PAUSED,
            PowerState::Shutoff => 0,
        };
        snap.revert(flags)?;
        // A snapshot taken running comes back running unless told otherwise, and libvirt
        // has no "leave it shut off" flag: stop it (its disks are the snapshot's).
        if state == PowerState::Shutoff && self.power_state()? != PowerState::Shutoff {
            self.dom.destroy()?;
        }
        Ok(())
    }

    fn delete(&mut self, u: Uuid, progress: &mut dyn Progress) -> PluginResult<()> {
        let Some(snap) = self.dom.snapshot(&u.to_string())? else {
            return Ok(());
        };
        self.delete_entry(&snap, progress)
    }

    /// Frees one snapshot: an internal one through libvirt's delete; an external one, QEMU
    /// running, by driving the block commit (`commit`); shut off, the current one through
    /// libvirt's delete, any other (libvirt 9.0 refuses those: "could not find base disk
    /// source") through qemu-img and libvirt's metadata.
    fn delete_entry(&self, snap: &Snapshot, progress: &mut dyn Progress) -> PluginResult<()> {
        if self.mode == Mode::Internal {
            snap.delete(0)?;
            return Ok(());
        }
        self.refuse_hidden_internal(snap)?;
        let name = snap.name();
        let current = self.dom.current()?.is_some_and(|c| c.name() == name);
        let shut_off = matches!(
            self.dom.state()?,
            s if s != sys::state::RUNNING && s != sys::state::BLOCKED && s != sys::state::PAUSED
                && s != sys::state::PMSUSPENDED && s != 4
        );
        if !shut_off {
            return self.delete_running(snap, progress);
        }
        if current {
            snap.delete(0)?;
            return Ok(());
        }
        self.delete_offline(snap)
    }

    /// An external snapshot S that is not current, domain shut off. Per disk: S's overlay Y
    /// (the changes up to S's child C) is committed into Σ(S)'s image X, C's overlay is
    /// re-pointed at X, then C's entry is told X instead of Y, Y is removed, and S's entry
    /// goes last (metadata only). Each part is skipped when already done, so a re-run
    /// finishes the job.
    fn delete_offline(&self, snap: &Snapshot) -> PluginResult<()> {
        let name = snap.name();
        let def = config::snapshot_def(&snap.xml()?)?;
        let child = self.only_child(&name)?.ok_or_else(|| {
            PluginError::backend(format!(
                "snapshot {name} is neither current nor has a child"
            ))
        })?;
        let child_def = config::snapshot_def(&child.xml()?)?;
        let img = |e: snaptree_qemu_img::Error| PluginError::backend(e.to_string());
        let mut moves = Vec::new();
        for (target, overlay) in &def.sources {
            let Some(y) = overlay else { continue };
            let x = def.frozen_image(&name, target)?;
            let z = child_def
                .sources
                .iter()
                .find(|(t, _)| t == target)
                .and_then(|(_, f)| f.clone())
                .ok_or_else(|| {
                    PluginError::backend(format!(
                        "snapshot {} has no overlay for disk {target}",
                        child.name()
                    ))
                })?;
            if y.exists() {
                let backing = snaptree_qemu_img::info(&z)
                    .map_err(img)?
                    .full_backing_filename;
                if backing.as_deref() == Some(y.as_path()) {
                    snaptree_qemu_img::commit(y, &mut |_| {}).map_err(img)?;
                    snaptree_qemu_img::rebase_unsafe(&z, Some(&x)).map_err(img)?;
                }
            }
            moves.push((y.clone(), x));
        }
        let old = child.xml()?;
        let mut xml = old.clone();
        for (y, x) in &moves {
            xml = config::repointed(&xml, y, x);
        }
        if xml != old {
            self.dom.create_snapshot(
                &xml,
                sys::CREATE_REDEFINE,
                &format!("point snapshot {} at the merged images", child.name()),
            )?;
        }
        for (y, _) in &moves {
            crate::files::remove(y)?;
        }
        snap.delete(sys::DELETE_METADATA_ONLY)?;
        Ok(())
    }

    /// Refuses to let libvirt merge away an overlay that holds internal snapshots: its
    /// delete would destroy them silently and leave entries whose revert fails.
    fn refuse_hidden_internal(&self, snap: &Snapshot) -> PluginResult<()> {
        let def = config::snapshot_def(&snap.xml()?)?;
        for (disk, source) in &def.sources {
            let Some(overlay) = source else { continue };
            let info = snaptree_qemu_img::info_force_share(overlay).map_err(|e| {
                PluginError::backend(format!(
                    "cannot inspect {} of snapshot {}: {e}",
                    overlay.display(),
                    snap.name()
                ))
            })?;
            if !info.snapshots.is_empty() {
                let tags: Vec<&str> = info.snapshots.iter().map(|s| s.name.as_str()).collect();
                return Err(PluginError::operation_invalid(format!(
                    "deleting snapshot {} would merge away {} (disk {disk}), which holds internal snapshots {tags:?} that libvirt would destroy; delete those first",
                    snap.name(),
                    overlay.display()
                )));
            }
        }
        Ok(())
    }

    fn merge(&mut self, s: Uuid, p: Option<Uuid>, progress: &mut dyn Progress) -> PluginResult<()> {
        if self.mode == Mode::Internal {
            return Err(self.cannot("merge internal snapshots", "no version"));
        }
        let s_name = s.to_string();
        let Some(snap) = self.dom.snapshot(&s_name)? else {
            // S's entry goes last: without it the merge is complete.
            return Ok(());
        };
        let Some(p) = p else {
            // Σ(S) is the image S froze, the base of the chain: the base already holds it.
            // Only the entry goes; S's overlay stays, under S's children and the live state.
            self.refuse_hidden_internal(&snap)?;
            snap.delete(sys::DELETE_METADATA_ONLY)?;
            return Ok(());
        };
        let p_name = p.to_string();
        let s_parent = snap.parent()?.map(|x| x.name());
        let p_snap = self.dom.snapshot(&p_name)?;
        // Stage 1: P still S's parent: delete P. libvirt commits P's overlay (the changes
        // up to S) into P's image, which then holds Σ(S), under S's overlay.
        let mut p_def = None;
        if let Some(p_snap) = &p_snap
            && s_parent.as_deref() == Some(p_name.as_str())
        {
            p_def = Some(config::snapshot_def(&p_snap.xml()?)?);
            self.delete_entry(p_snap, progress)?;
        }
        // Stage 2: S's entry again as P (REDEFINE under P's uuid), current if S was.
        let s_xml = snap.xml()?;
        if self.dom.snapshot(&p_name)?.is_none() {
            let p_def = p_def.unwrap_or_default();
            let xml = renamed(&s_xml, &s_name, &p_name, &p_def)?;
            let current = self.dom.current()?.is_some_and(|c| c.name() == s_name);
            let mut flags = sys::CREATE_REDEFINE;
            if current {
                flags |= sys::CREATE_CURRENT;
            }
            self.dom
                .create_snapshot(&xml, flags, &format!("give snapshot {s} the uuid {p}"))?;
        }
        // Stage 3: S's children onto P, then S's entry away (metadata only: its data is P's).
        for child in self.dom.snapshots()? {
            if child.parent()?.is_some_and(|x| x.name() == s_name) {
                let xml = reparented(&child.xml()?, &s_name, &p_name)?;
                self.dom.create_snapshot(
                    &xml,
                    sys::CREATE_REDEFINE,
                    &format!("re-parent snapshot {} onto {p}", child.name()),
                )?;
            }
        }
        snap.delete(sys::DELETE_METADATA_ONLY)?;
        Ok(())
    }

    fn need(&self, u: Uuid) -> PluginResult<Snapshot> {
        self.dom.snapshot(&u.to_string())?.ok_or_else(|| {
            PluginError::backend(format!(
                "libvirt domain '{}' has no snapshot {u}",
                self.dom.name()
            ))
        })
    }

    fn cannot(&self, what: &str, since: &str) -> PluginError {
        let since = if since == "no version" {
            " (no version can)".to_owned()
        } else {
            format!(" ({since} can)")
        };
        PluginError::operation_invalid(format!(
            "libvirt {} cannot {what}{since}",
            version_text(self.version)
        ))
    }

    /// The physical tree: libvirt's snapshot entries and its current snapshot.
    pub fn list_physical(&mut self) -> PluginResult<PhysicalTree> {
        let mut tree = PhysicalTree::default();
        for snap in self.dom.snapshots()? {
            let u = own(&snap.name(), self.dom.name())?;
            let parent = match snap.parent()? {
                Some(p) => Some(own(&p.name(), self.dom.name())?),
                None => None,
            };
            tree.parents.insert(u, parent);
        }
        tree.live_parent = match self.dom.current()? {
            Some(c) => Some(own(&c.name(), self.dom.name())?),
            None => None,
        };
        Ok(tree)
    }
}

/// The capabilities of a domain whose disks are in `mode`, under libvirt `version`.
pub fn capabilities(mode: Mode, version: u64) -> Capabilities {
    let any = PowerMask::ANY;
    let base = Capabilities::NONE
        .with(StepKind::Create, any)
        .with(StepKind::DiscardLeaf, any)
        .with(StepKind::Consolidate, any)
        .with(StepKind::Forget, any);
    match mode {
        Mode::Internal => base
            .with(StepKind::Revert, any)
            .with(StepKind::DetachLive, any),
        Mode::External => base.with(StepKind::MergeIntoParent, any).with(
            StepKind::Revert,
            if version >= EXTERNAL_REVERT_SINCE {
                any
            } else {
                PowerMask::NONE
            },
        ),
    }
}

/// The uuid a snapshot entry of ours is named by; any other entry was made by someone else.
fn own(name: &str, domain: &str) -> PluginResult<Uuid> {
    Uuid::parse_str(name)
        .ok()
        .filter(|u| u.to_string() == name)
        .ok_or_else(|| {
            PluginError::backend(format!(
                "libvirt domain '{domain}' has snapshot '{name}', which snaptree did not make; remove it or manage it with virsh only"
            ))
        })
}

/// S's snapshot XML under P's name, with P's description and creation time when known.
fn renamed(xml: &str, from: &str, to: &str, p: &SnapshotDef) -> PluginResult<String> {
    let mut out = replace_once(
        xml,
        &format!("<name>{from}</name>"),
        &format!("<name>{to}</name>"),
    )?;
    if !p.creation_time.is_empty()
        && let (Some(a), Some(b)) = (out.find("<creationTime>"), out.find("</creationTime>"))
    {
        out.replace_range(a + "<creationTime>".len()..b, &p.creation_time);
    }
    if !p.description.is_empty()
        && let (Some(a), Some(b)) = (out.find("<description>"), out.find("</description>"))
    {
        out.replace_range(
            a + "<description>".len()..b,
            &snaptree_engine::xml::dom::escape(&p.description),
        );
    }
    Ok(out)
}

/// A snapshot XML whose `<parent><name>` is `from`, with `to` instead.
fn reparented(xml: &str, from: &str, to: &str) -> PluginResult<String> {
    let old = format!("<parent>\n    <name>{from}</name>");
    if xml.contains(&old) {
        return replace_once(xml, &old, &format!("<parent>\n    <name>{to}</name>"));
    }
    replace_once(
        xml,
        &format!("<parent><name>{from}</name>"),
        &format!("<parent><name>{to}</name>"),
    )
}

fn replace_once(xml: &str, old: &str, new: &str) -> PluginResult<String> {
    // The snapshot's own <name> is the first; the domain definitions inside come later.
    let Some(at) = xml.find(old) else {
        return Err(PluginError::backend(format!(
            "libvirt's snapshot definition has no {old}"
        )));
    };
    let mut out = xml.to_owned();
    out.replace_range(at..at + old.len(), new);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_follow_mode_and_version() {
        let int = capabilities(Mode::Internal, 9_000_000);
        assert!(int.supports(StepKind::Revert));
        assert!(!int.supports(StepKind::MergeIntoParent));
        let ext = capabilities(Mode::External, 9_000_000);
        assert!(!ext.supports(StepKind::Revert));
        assert!(ext.supports(StepKind::MergeIntoParent));
        assert!(!ext.supports(StepKind::DetachLive));
        assert!(capabilities(Mode::External, 9_007_000).supports(StepKind::Revert));
        assert_eq!(version_text(9_007_002), "9.7.2");
    }

    #[test]
    fn renaming_touches_the_snapshot_name_and_not_the_domain_inside() {
        let xml = "<domainsnapshot>\n  <name>s</name>\n  <description>x</description>\n  <creationTime>5</creationTime>\n  <parent>\n    <name>q</name>\n  </parent>\n  <domain><name>s</name></domain>\n</domainsnapshot>";
        let p = SnapshotDef {
            description: "P's".into(),
            creation_time: "3".into(),
            sources: vec![],
            frozen: vec![],
        };
        let out = renamed(xml, "s", "p", &p).unwrap();
        assert!(
            out.contains("<name>p</name>\n  <description>P&apos;s</description>")
                || out.contains("<name>p</name>\n  <description>P's</description>"),
            "{out}"
        );
        assert!(out.contains("<creationTime>3</creationTime>"));
        assert!(out.contains("<domain><name>s</name></domain>"));
        let out = reparented(xml, "q", "r").unwrap();
        assert!(out.contains("<parent>\n    <name>r</name>"), "{out}");
        assert!(reparented(xml, "zz", "r").is_err());
    }
}
