//! The `sim` backend: snaptree's delta-chain simulator, written in C (`csrc/`) and built
//! by this crate's build script into the plugin `libsnaptree_backend_sim.so`.
//!
//! The crate itself holds no code of the backend: it tells Rust tests where the freshly
//! built plugin is, and how to write a domain for it. The build also copies the plugin
//! next to the workspace's binaries, so a freshly built `snaptree` finds it.
//!
//! The sim keeps each layer as a file in the directory named by the domain XML's
//! `<sim dir='/absolute/path'/>` element; see `docs/backend-authors.md`.

use std::path::Path;

use snaptree_engine::xml::dom::escape;

/// The absolute path of the plugin this build produced.
pub const PLUGIN_PATH: &str = env!("SNAPTREE_SIM_PLUGIN");

/// The backend's type, as in `<domain type='sim'>`.
pub const TYPE: &str = "sim";

/// [`PLUGIN_PATH`] as a path.
pub fn plugin_path() -> &'static Path {
    Path::new(PLUGIN_PATH)
}

/// A domain document for the sim backend keeping its layers in `dir` (an absolute path;
/// the directory is created on first use when its parent exists).
pub fn domain_xml(name: &str, dir: &Path) -> String {
    format!(
        "<domain type='{TYPE}'><name>{}</name><sim dir='{}'/></domain>",
        escape(name),
        escape(&dir.to_string_lossy())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_plugin_was_built() {
        assert!(
            plugin_path().is_file(),
            "expected the built plugin at {PLUGIN_PATH}"
        );
        assert!(
            PLUGIN_PATH.ends_with("/libsnaptree_backend_sim.so"),
            "unexpected plugin name {PLUGIN_PATH}"
        );
    }

    #[test]
    fn the_plugin_was_copied_next_to_the_binaries() {
        // OUT_DIR is target/<profile>/build/<pkg>-<hash>/out.
        let bin_dir = plugin_path().ancestors().nth(4).unwrap();
        let copy = bin_dir.join("libsnaptree_backend_sim.so");
        assert_eq!(
            std::fs::read(&copy).ok(),
            std::fs::read(plugin_path()).ok(),
            "expected an identical copy of the plugin at {}",
            copy.display()
        );
    }

    #[test]
    fn domain_xml_escapes_the_directory() {
        let xml = domain_xml("vm", Path::new("/tmp/a'b&c"));
        assert_eq!(
            xml,
            "<domain type='sim'><name>vm</name><sim dir='/tmp/a&apos;b&amp;c'/></domain>"
        );
    }
}
