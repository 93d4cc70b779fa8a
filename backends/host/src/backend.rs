//! An open domain of a plugin: the engine's [`Backend`] over the vtable.

use std::ffi::{CStr, CString};

use snaptree_engine::xml::DomainXml;
use snaptree_engine::{
    Adoption, Backend, BackendProvider, Capabilities, ContentRef, Error, PhysicalTree, PowerState,
    Progress, Result, Step, TestHooks,
};

use crate::plugin::Plugin;
use crate::vtable::{Handle, Vtable};

/// A domain opened by a plugin. Closing happens on drop.
pub struct PluginBackend {
    plugin: Plugin,
    handle: Handle,
    capabilities: Capabilities,
}

// SAFETY: the handle is used only through `&mut self` (or `&self` for nothing that calls
// the plugin), so calls on it are serialised, and the ABI lets them come from any thread.
unsafe impl Send for PluginBackend {}

impl std::fmt::Debug for PluginBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginBackend")
            .field("plugin", &self.plugin)
            .finish()
    }
}

fn c_string(what: &str, text: &str) -> Result<CString> {
    CString::new(text).map_err(|_| {
        Error::InvalidArg(format!(
            "the {what} '{}' contains a NUL character",
            text.escape_default()
        ))
    })
}

impl PluginBackend {
    pub(crate) fn open(plugin: Plugin, xml: &CStr) -> Result<PluginBackend> {
        let handle = plugin.vtable().open_domain(xml)?;
        // Built before asking for the capabilities, so a failure there still closes.
        let mut backend = PluginBackend {
            plugin,
            handle,
            capabilities: Capabilities::NONE,
        };
        backend.capabilities = plugin.vtable().domain_capabilities(handle)?;
        Ok(backend)
    }

    /// The plugin this domain was opened with.
    pub fn plugin(&self) -> Plugin {
        self.plugin
    }

    fn vt(&self) -> &'static Vtable {
        self.plugin.vtable()
    }
}

impl Drop for PluginBackend {
    fn drop(&mut self) {
        // Nothing can act on a failure to close; the plugin frees the handle regardless.
        let _ = self.vt().close_domain(self.handle);
    }
}

impl Backend for PluginBackend {
    fn name(&self) -> &str {
        self.plugin.name()
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn power_state(&mut self) -> Result<PowerState> {
        self.vt().power_state(self.handle)
    }

    fn execute(&mut self, step: &Step, progress: &mut dyn Progress) -> Result<()> {
        let (vt, h) = (self.vt(), self.handle);
        match step {
            Step::Create {
                snapshot,
                parent,
                name,
                description,
            } => {
                let (name, description) = (
                    c_string("snapshot name", name)?,
                    c_string("description", description)?,
                );
                vt.create(h, snapshot, parent.as_ref(), &name, &description, progress)
            }
            Step::Revert { snapshot, state } => vt.revert(h, snapshot, *state, progress),
            Step::DiscardLeaf { snapshot } => vt.discard_leaf(h, snapshot, progress),
            Step::MergeIntoParent { snapshot, parent } => {
                vt.merge_into_parent(h, snapshot, parent.as_ref(), progress)
            }
            Step::Consolidate { snapshot } => vt.consolidate(h, snapshot, progress),
            Step::DetachLive => vt.detach_live(h, progress),
            Step::Forget { snapshot } => vt.forget(h, snapshot),
        }
    }

    fn list_physical(&mut self) -> Result<PhysicalTree> {
        let (layers, live_parent) = self.vt().list_physical(self.handle)?;
        let fail = |message: String| Error::Backend {
            backend: self.name().to_string(),
            message,
        };
        if layers.null_snapshot {
            return Err(fail(
                "list_physical reported a layer with a NULL uuid".into(),
            ));
        }
        let mut tree = PhysicalTree {
            live_parent,
            ..PhysicalTree::default()
        };
        for (uuid, parent) in layers.layers {
            if tree.parents.insert(uuid, parent).is_some() {
                return Err(fail(format!("list_physical reported layer {uuid} twice")));
            }
        }
        Ok(tree)
    }

    fn can_adopt(&self) -> bool {
        self.vt().can_adopt()
    }

    fn adopt(&mut self, adoption: &Adoption, _progress: &mut dyn Progress) -> Result<()> {
        let name = c_string("snapshot name", &adoption.name)?;
        self.vt().adopt(
            self.handle,
            &adoption.snapshot,
            adoption.parent.as_ref(),
            &name,
        )
    }

    fn keeps_manifest(&self) -> bool {
        self.vt().keeps_manifest()
    }

    fn save_manifest(&mut self, manifest: &str) -> Result<()> {
        let text = c_string("manifest", manifest)?;
        self.vt().save_manifest(self.handle, &text)
    }

    fn load_manifest(&mut self) -> Result<Option<String>> {
        let text = self.vt().load_manifest(self.handle)?;
        let fail = |message: &str| Error::Backend {
            backend: self.name().to_string(),
            message: message.to_string(),
        };
        if text.null_text {
            return Err(fail(
                "load_manifest passed a NULL text with a nonzero length",
            ));
        }
        text.bytes
            .map(|b| {
                String::from_utf8(b)
                    .map_err(|_| fail("load_manifest passed a text that is not UTF-8"))
            })
            .transpose()
    }

    fn estimate(&mut self, step: &Step) -> Result<Option<Vec<snaptree_engine::SpaceUse>>> {
        let parent = match step {
            Step::Create { parent, .. } | Step::MergeIntoParent { parent, .. } => parent.as_ref(),
            _ => None,
        };
        self.vt()
            .estimate(self.handle, step.kind(), step.snapshot().as_ref(), parent)
    }

    fn test_hooks(&mut self) -> Option<&mut dyn TestHooks> {
        if self.vt().has_test_hooks() {
            Some(self)
        } else {
            None
        }
    }
}

impl TestHooks for PluginBackend {
    fn content_digest(&mut self, of: ContentRef) -> Result<String> {
        let snapshot = match of {
            ContentRef::Live => None,
            ContentRef::Snapshot(u) => Some(u),
        };
        self.vt().content_digest(self.handle, snapshot.as_ref())
    }

    fn write_guest(&mut self, seed: u64) -> Result<()> {
        self.vt().write_guest(self.handle, seed)
    }
}

/// Opening a domain belongs with the backend it opens, so that `plugin.rs` (the loaded
/// library) does not depend on this module.
impl Plugin {
    /// Opens a domain, given its whole XML document.
    pub fn open_domain(&self, xml: &str) -> Result<PluginBackend> {
        let text = CString::new(xml).map_err(|_| {
            Error::InvalidArg(format!(
                "the domain XML for backend '{}' contains a NUL character",
                self.name()
            ))
        })?;
        PluginBackend::open(*self, &text)
    }
}

impl BackendProvider for Plugin {
    fn open(&self, domain: &DomainXml, xml: &str) -> Result<Box<dyn Backend>> {
        if domain.backend_type != self.name() {
            return Err(Error::InvalidArg(format!(
                "domain '{}' has type '{}', but plugin {} is backend '{}'",
                domain.name,
                domain.backend_type,
                self.path().display(),
                self.name()
            )));
        }
        Ok(Box::new(self.open_domain(xml)?))
    }
}
