//! Freeing an external snapshot while QEMU runs the domain, by driving libvirt's block
//! commit directly instead of `virDomainSnapshotDelete` (which does the same commit but
//! blocks without progress and cannot be cancelled), then editing libvirt's snapshot
//! metadata the way its delete would.
//!
//! For snapshot S, per disk: S's overlay Y (the changes after S) is committed into the
//! image X that S froze (Σ(S)) — an intermediate commit when an image above Y exists, an
//! active commit ending in a pivot onto X when Y is the active image. Then the child's
//! entry is told X instead of Y, Y's file goes, and S's entry goes last (metadata only:
//! libvirt re-parents its child and moves "current" to its parent).
//!
//! **Restart.** Before anything changes, the backend records the work in the domain's
//! own `<metadata>` (namespace [`RECORD_URI`], live and persistent definitions, so it
//! survives a libvirtd restart and a QEMU crash), then drops S's entry (metadata only) —
//! from then on the engine sees S gone, so any failure leaves the operation in its journal
//! — then does the data work and removes the record last. Every step first finishes a
//! record it finds. Each disk's stage is read from what QEMU runs (the live
//! `<backingStore>` chain) and the job libvirt reports: Y no longer in the chain → done; a
//! commit job on the disk (an interrupted attempt's, still running in QEMU after libvirtd
//! restarted) → taken over; else the commit starts again (QEMU killed mid-commit leaves the
//! chain as it was, and committing Y's clusters again is harmless). Finishing needs QEMU
//! running; a record found with the domain shut off asks for it to be started.
//!
//! **Cancel.** A cancel before S's entry goes changes nothing. A cancel during a commit
//! aborts the job at once (`virDomainBlockJobAbort`): the chain still reads every content
//! right (Y lies over X), S is already gone from libvirt's list (X, its content, is partly
//! overwritten, so its entry must not stay), and the step fails past its point of no
//! return: the engine keeps the operation in its journal and the next use finishes it.

use std::path::PathBuf;
use std::time::Duration;

use snaptree_engine::xml::dom::{Document, escape};
use snaptree_sdk::{PluginError, PluginResult, Progress};

use crate::api::Snapshot;
use crate::backend::LibvirtBackend;
use crate::config;
use crate::files::remove;
use crate::sys;

/// How often a running job is polled for progress.
const POLL: Duration = Duration::from_millis(20);

/// The namespace of the backend's record in the domain's `<metadata>`.
pub const RECORD_URI: &str = "https://snaptree.invalid/libvirt/freeing";

/// A freeing under way: S's name, its child's, and each disk's part.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    snapshot: String,
    child: Option<String>,
    parts: Vec<Part>,
}

impl Record {
    fn to_xml(&self) -> String {
        let mut xml = format!("<freeing snapshot='{}'", escape(&self.snapshot));
        if let Some(c) = &self.child {
            xml.push_str(&format!(" child='{}'", escape(c)));
        }
        xml.push('>');
        for p in &self.parts {
            xml.push_str(&format!(
                "<disk target='{}' overlay='{}' base='{}'/>",
                escape(&p.target),
                escape(&p.overlay.to_string_lossy()),
                escape(&p.base.to_string_lossy())
            ));
        }
        xml.push_str("</freeing>");
        xml
    }

    fn parse(xml: &str) -> PluginResult<Record> {
        let bad = |why: &str| {
            PluginError::backend(format!(
                "snaptree's record in the domain's <metadata> cannot be read: {why}"
            ))
        };
        let doc = Document::parse(xml).map_err(|e| bad(&e.to_string()))?;
        let attr = |el: &snaptree_engine::xml::dom::Element, name: &str| {
            el.attribute(name)
                .map(str::to_owned)
                .ok_or_else(|| bad(&format!("<{}> has no '{name}'", el.name)))
        };
        let mut parts = Vec::new();
        for d in doc.root.children_named("disk") {
            parts.push(Part {
                target: attr(d, "target")?,
                overlay: PathBuf::from(attr(d, "overlay")?),
                base: PathBuf::from(attr(d, "base")?),
            });
        }
        Ok(Record {
            snapshot: attr(&doc.root, "snapshot")?,
            child: doc.root.attribute("child").map(str::to_owned),
            parts,
        })
    }
}

/// One disk's part of the delete: S's overlay and the image it is committed into.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Part {
    target: String,
    overlay: PathBuf,
    base: PathBuf,
}

impl LibvirtBackend {
    /// Frees external snapshot `snap` while QEMU runs the domain (see the module docs).
    pub(crate) fn delete_running(
        &self,
        snap: &Snapshot,
        progress: &mut dyn Progress,
    ) -> PluginResult<()> {
        let name = snap.name();
        let def = config::snapshot_def(&snap.xml()?)?;
        let child = self.only_child(&name)?.map(|c| c.name());
        let mut parts = Vec::new();
        for (target, overlay) in &def.sources {
            let Some(overlay) = overlay else { continue };
            let base = def.frozen_image(&name, target)?;
            parts.push(Part {
                target: target.clone(),
                overlay: overlay.clone(),
                base,
            });
        }
        let record = Record {
            snapshot: name,
            child,
            parts,
        };
        self.save_record(Some(&record))?;
        snap.delete(sys::DELETE_METADATA_ONLY)?;
        self.finish(&record, progress)
    }

    /// Finishes the freeing a record describes, if the domain has one (each step starts
    /// here, so work an interrupted step left is done before anything new).
    pub(crate) fn finish_pending(&self, progress: &mut dyn Progress) -> PluginResult<()> {
        match self.record()? {
            Some(r) => self.finish(&r, progress),
            None => Ok(()),
        }
    }

    fn finish(&self, record: &Record, progress: &mut dyn Progress) -> PluginResult<()> {
        if !self.running()? {
            return Err(PluginError::backend(format!(
                "freeing snapshot {} of domain '{}' was interrupted in the middle of a block commit; start the domain to let snaptree finish it",
                record.snapshot,
                self.domain().name()
            )));
        }
        let n = record.parts.len().max(1) as f64;
        for (i, part) in record.parts.iter().enumerate() {
            let mut report = |f: f64| progress.report((i as f64 + f) / n);
            self.commit_part(part, &mut report)?;
        }
        if let Some(child) = &record.child
            && let Some(child) = self.domain().snapshot(child)?
        {
            let old = child.xml()?;
            let mut xml = old.clone();
            for p in &record.parts {
                xml = config::repointed(&xml, &p.overlay, &p.base);
            }
            if xml != old {
                self.domain().create_snapshot(
                    &xml,
                    sys::CREATE_REDEFINE,
                    &format!("point snapshot {} at the merged images", child.name()),
                )?;
            }
        }
        for p in &record.parts {
            remove(&p.overlay)?;
        }
        self.save_record(None)?;
        progress.report(1.0);
        Ok(())
    }

    fn running(&self) -> PluginResult<bool> {
        Ok(matches!(
            self.domain().state()?,
            sys::state::RUNNING
                | sys::state::BLOCKED
                | sys::state::PAUSED
                | sys::state::PMSUSPENDED
                | 4
        ))
    }

    fn save_record(&self, record: Option<&Record>) -> PluginResult<()> {
        let mut flags = sys::AFFECT_CONFIG;
        if self.running()? {
            flags |= sys::AFFECT_LIVE;
        }
        let xml = record.map(Record::to_xml);
        self.domain()
            .set_metadata(xml.as_deref(), "snaptree", RECORD_URI, flags)?;
        Ok(())
    }

    fn record(&self) -> PluginResult<Option<Record>> {
        let flags = if self.running()? {
            sys::AFFECT_LIVE
        } else {
            sys::AFFECT_CONFIG
        };
        match self.domain().metadata(RECORD_URI, flags)? {
            Some(xml) => Record::parse(&xml).map(Some),
            None => Ok(None),
        }
    }

    /// The one child of snapshot `name`, if any (libvirt keeps external chains linear).
    pub(crate) fn only_child(&self, name: &str) -> PluginResult<Option<Snapshot>> {
        let mut child = None;
        for c in self.domain().snapshots()? {
            if c.parent()?.is_some_and(|p| p.name() == name) {
                if child.is_some() {
                    return Err(PluginError::backend(format!(
                        "snapshot {name} has several children; libvirt keeps external chains linear"
                    )));
                }
                child = Some(c);
            }
        }
        Ok(child)
    }

    /// Commits one disk's overlay into its base unless that is done already; see the
    /// module docs for restart and cancel.
    fn commit_part(&self, part: &Part, report: &mut dyn FnMut(f64) -> bool) -> PluginResult<()> {
        let Part {
            target,
            overlay,
            base,
        } = part;
        let dom = self.domain();
        let chain = config::chain(&dom.xml(0)?, target)?;
        let Some(at) = chain.iter().position(|f| f == overlay) else {
            return Ok(());
        };
        if chain.get(at + 1) != Some(base) {
            return Err(PluginError::backend(format!(
                "disk {target} runs on {} over {}, not over {}; libvirt's metadata and the images disagree",
                overlay.display(),
                chain
                    .get(at + 1)
                    .map_or("nothing".into(), |f| f.display().to_string()),
                base.display(),
            )));
        }
        let active = at == 0;
        match dom.block_job(target)? {
            // An interrupted attempt's job, still running in QEMU: taken over.
            Some(j) if j.kind == sys::job::COMMIT || j.kind == sys::job::ACTIVE_COMMIT => {}
            Some(j) => {
                return Err(PluginError::backend(format!(
                    "disk {target} of domain '{}' runs another block job (type {}); wait for it or abort it",
                    dom.name(),
                    j.kind
                )));
            }
            None => {
                if !report(0.0) {
                    return Err(PluginError::backend(format!(
                        "the commit of {} was cancelled before it started",
                        overlay.display()
                    )));
                }
                dom.block_commit(target, base, overlay, self.bandwidth(), active)?;
            }
        }
        while let Some(job) = dom.block_job(target)? {
            let f = if job.end == 0 {
                0.0
            } else {
                job.cur as f64 / job.end as f64
            };
            if !report(f.min(1.0)) {
                return Err(self.cancelled(part));
            }
            // libvirt reports cur == end for an active commit only once QEMU says it is
            // ready; a pivot refused as not ready yet is tried again on the next poll.
            if active && job.cur == job.end && dom.block_job_abort(target, true).is_ok() {
                break;
            }
            std::thread::sleep(POLL);
        }
        let chain = config::chain(&dom.xml(0)?, target)?;
        if chain.contains(overlay) {
            return Err(PluginError::backend(format!(
                "the commit of {} into {} on disk {target} ended without finishing (see libvirt's log)",
                overlay.display(),
                base.display()
            )));
        }
        Ok(())
    }

    /// A cancel during a commit: the job stops now; the record stays, so the next use of
    /// the domain finishes the freeing.
    fn cancelled(&self, part: &Part) -> PluginError {
        let mut msg = format!(
            "the commit of {} into {} (disk {}) was cancelled part-way; snaptree finishes it on the next use of the domain",
            part.overlay.display(),
            part.base.display(),
            part.target
        );
        if let Err(e) = self.domain().block_job_abort(&part.target, false) {
            msg.push_str(&format!(", and stopping it failed: {e}"));
        }
        PluginError::backend(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written() {
        let r = Record {
            snapshot: "s".into(),
            child: Some("c".into()),
            parts: vec![Part {
                target: "vda".into(),
                overlay: PathBuf::from("/v/d0.s's"),
                base: PathBuf::from("/v/d0.p"),
            }],
        };
        assert_eq!(Record::parse(&r.to_xml()).unwrap(), r);
        let none = Record {
            child: None,
            ..r.clone()
        };
        assert_eq!(Record::parse(&none.to_xml()).unwrap(), none);
        let e = Record::parse("<freeing><disk target='vda'/></freeing>").unwrap_err();
        assert!(e.message().contains("'overlay'"), "{}", e.message());
    }
}
