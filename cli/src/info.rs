//! `snapshot-info`: the fields `virsh snapshot-info` prints (libvirt 9.0), in its layout.

use snaptree_engine::xml::SnapshotLocation;
use snaptree_engine::{Domain, Error, Snapshot};

/// Where a domain's snapshots keep their data, in virsh's words: `external` when a disk
/// keeps them as layer files beside it (`<disk snapshot='external'>`, the default of a
/// `<disk>`), `internal` when every disk keeps them inside its image
/// (`snapshot='internal'`) or when the domain names no disks and the backend keeps the
/// data itself (esx, sim); `none` for a metadata-only backend (`null`), which keeps no
/// data at all, only the tree.
pub fn location(d: &mut Domain) -> &'static str {
    if d.backend().is_metadata_only() {
        "none"
    } else if d.xml().snapshot_location == SnapshotLocation::External {
        "external"
    } else {
        "internal"
    }
}

/// The snapshot `NAME | --current` names.
pub fn which<'t>(
    tree: &'t snaptree_engine::SnapshotTree,
    name: Option<&str>,
    domain: &str,
) -> Result<&'t Snapshot, Error> {
    match name {
        Some(n) => tree.require_name(n, domain),
        None => tree
            .current()
            .ok_or_else(|| Error::NoSnapshot(format!("domain '{domain}' has no current snapshot"))),
    }
}

/// The info block: `%-15s %s` lines, then an empty line, as virsh prints it. Metadata is
/// always yes: snaptree keeps every snapshot's metadata.
pub fn info(d: &mut Domain, name: Option<&str>) -> Result<String, Error> {
    let location = location(d);
    let domain = d.name().to_string();
    let tree = d.tree()?;
    let s = which(tree, name, &domain)?;
    let yes_no = |b: bool| if b { "yes" } else { "no" };
    let fields = [
        ("Name:", s.name.clone()),
        ("Domain:", domain.clone()),
        (
            "Current:",
            yes_no(tree.current().is_some_and(|c| c.uuid == s.uuid)).to_string(),
        ),
        ("State:", s.state.as_str().to_string()),
        ("Location:", location.to_string()),
        (
            "Parent:",
            tree.parent(&s.uuid)
                .map_or("-".to_string(), |p| p.name.clone()),
        ),
        ("Children:", tree.num_children(&s.uuid).to_string()),
        ("Descendants:", tree.descendants(&s.uuid).len().to_string()),
        ("Metadata:", "yes".to_string()),
    ];
    let mut out: String = fields
        .iter()
        .map(|(k, v)| format!("{k:<15} {v}\n"))
        .collect();
    out.push('\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use snaptree_engine::{
        Backend, Capabilities, NullBackend, PhysicalTree, PowerState, Progress, Step,
    };

    /// A backend that keeps data (so not metadata-only) and does nothing.
    struct Holding;

    impl Backend for Holding {
        fn name(&self) -> &str {
            "holding"
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::ALL
        }
        fn power_state(&mut self) -> snaptree_engine::Result<PowerState> {
            Ok(PowerState::Shutoff)
        }
        fn execute(&mut self, _: &Step, _: &mut dyn Progress) -> snaptree_engine::Result<()> {
            Ok(())
        }
        fn list_physical(&mut self) -> snaptree_engine::Result<PhysicalTree> {
            Ok(PhysicalTree::default())
        }
    }

    fn location_of(disks: &str, backend: Box<dyn Backend>) -> &'static str {
        let xml = format!("<domain type='qemu'><name>vm</name><devices>{disks}</devices></domain>");
        location(&mut Domain::ephemeral(&xml, backend).unwrap())
    }

    #[test]
    fn location_follows_the_disks_snapshot_mode_and_the_backend() {
        let ext = "<disk><source file='/a'/></disk>";
        let int = "<disk snapshot='internal'><source file='/b'/></disk>";
        assert_eq!(location_of(ext, Box::new(Holding)), "external");
        assert_eq!(location_of(int, Box::new(Holding)), "internal");
        assert_eq!(
            location_of(&format!("{int}{ext}"), Box::new(Holding)),
            "external"
        );
        assert_eq!(location_of("", Box::new(Holding)), "internal");
        assert_eq!(location_of(ext, Box::new(NullBackend::new())), "none");
    }
}
