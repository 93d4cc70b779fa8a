//! How listings, trees, plans and JSON are printed.

use serde::Serialize;
use snaptree_engine::{Plan, SnapshotTree, SpaceEstimate, Step, Uuid};

/// A UTC timestamp as `YYYY-MM-DD HH:MM:SS +0000`, without a date library.
pub fn format_time(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// One snapshot in `snapshot-list --json`. These field names are stable.
#[derive(Debug, Serialize)]
pub struct SnapshotJson {
    /// The name.
    pub name: String,
    /// The uuid.
    pub uuid: Uuid,
    /// The parent's name, or null for a root.
    pub parent: Option<String>,
    /// The parent's uuid, or null.
    pub parent_uuid: Option<Uuid>,
    /// Unix seconds.
    pub creation_date: i64,
    /// running, paused or shutoff.
    pub state: String,
    /// The description.
    pub description: String,
    /// Whether this is the current snapshot.
    pub current: bool,
    /// Number of children.
    pub children: usize,
}

/// The JSON of one snapshot.
pub fn snapshot_json(tree: &SnapshotTree, s: &snaptree_engine::Snapshot) -> SnapshotJson {
    let parent = tree.parent(&s.uuid);
    SnapshotJson {
        name: s.name.clone(),
        uuid: s.uuid,
        parent: parent.map(|p| p.name.clone()),
        parent_uuid: parent.map(|p| p.uuid),
        creation_date: s.creation_date,
        state: s.state.to_string(),
        description: s.description.clone(),
        current: tree.current().is_some_and(|c| c.uuid == s.uuid),
        children: tree.num_children(&s.uuid),
    }
}

/// A plan in words, for `--dry-run`.
pub fn describe_plan(tree: &SnapshotTree, plan: &Plan) -> String {
    let name = |u: &Uuid| {
        tree.get(u)
            .map_or_else(|| format!("{u} (retired)"), |s| format!("'{}'", s.name))
    };
    let mut out = String::from("plan (dry run, nothing changed):\n");
    let adoption = plan.adoption();
    if plan.steps.is_empty() && adoption.is_none() {
        out.push_str("  no physical steps (metadata only)\n");
    }
    if let Some(a) = &adoption {
        out.push_str(&format!(
            "  step 1: adopt the existing data of '{}', child of {} (no data changes)\n",
            a.name,
            a.parent.as_ref().map_or("nothing".into(), &name)
        ));
    }
    if let snaptree_engine::Operation::Redefine {
        name: n,
        adopt: false,
        ..
    } = &plan.operation
    {
        out.push_str(&format!(
            "  replaces the description, creation date and state of '{n}'\n"
        ));
    }
    let first = usize::from(adoption.is_some());
    for (i, step) in plan.steps.iter().enumerate() {
        let text = match step {
            Step::Create {
                name: n, parent, ..
            } => {
                format!(
                    "create '{n}' from the live state, child of {}",
                    parent.as_ref().map_or("nothing".into(), &name)
                )
            }
            Step::Revert { snapshot, state } => format!(
                "revert the live state to {}, leave it {state}",
                name(snapshot)
            ),
            Step::DiscardLeaf { snapshot } => format!("discard {}", name(snapshot)),
            Step::MergeIntoParent { snapshot, parent } => format!(
                "merge {} into {}",
                name(snapshot),
                parent.as_ref().map_or("the base image".into(), &name)
            ),
            Step::Consolidate { snapshot } => {
                format!("consolidate {} into its dependents", name(snapshot))
            }
            Step::DetachLive => "detach the live state from every snapshot".into(),
            Step::Forget { snapshot } => format!("retire {} (its data stays)", name(snapshot)),
        };
        out.push_str(&format!("  step {}: {text}\n", first + i + 1));
    }
    let removed = plan.removed();
    if !removed.is_empty() {
        out.push_str(&format!(
            "  removes: {}\n",
            removed.iter().map(&name).collect::<Vec<_>>().join(", ")
        ));
    }
    for e in &plan.edits {
        if let snaptree_engine::Edit::Rename { snapshot, name: n } = e {
            out.push_str(&format!("  renames {} to '{n}'\n", name(snapshot)));
        }
    }
    let before = tree.current().map(|c| format!("'{}'", c.name));
    match plan.new_current() {
        Some(after) => {
            let after = after.map(|u| {
                tree.get(&u).map_or_else(
                    || {
                        plan.edits
                            .iter()
                            .find_map(|e| match e {
                                snaptree_engine::Edit::Add { snapshot, .. }
                                    if snapshot.uuid == u =>
                                {
                                    Some(format!("'{}'", snapshot.name))
                                }
                                _ => None,
                            })
                            .unwrap_or_else(|| u.to_string())
                    },
                    |s| format!("'{}'", s.name),
                )
            });
            out.push_str(&format!(
                "  current: {} -> {}\n",
                before.unwrap_or_else(|| "none".into()),
                after.unwrap_or_else(|| "none".into())
            ));
        }
        None => out.push_str(&format!(
            "  current stays {}\n",
            before.unwrap_or_else(|| "none".into())
        )),
    }
    out
}

/// The space lines of `--dry-run` (SEMANTICS.md §7.7): per file system, the bytes the plan
/// writes and frees and the free space before and after; or that the backend cannot
/// estimate.
pub fn describe_space(backend: &str, estimate: Option<&SpaceEstimate>) -> String {
    let Some(estimate) = estimate else {
        return format!("  space: not estimated (backend '{backend}' cannot estimate its steps)\n");
    };
    if estimate.file_systems.is_empty() {
        return "  space: writes and frees nothing\n".into();
    }
    let mut out = String::new();
    for fs in &estimate.file_systems {
        out.push_str(&format!(
            "  space on {}: writes {}, frees {}, free {} -> {}{}\n",
            fs.path,
            fs.written,
            fs.freed,
            fs.free_before,
            fs.free_after(),
            if fs.fits() {
                ""
            } else {
                " (does not fit: the operation would be refused with NO_SPACE)"
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 +0000");
        assert_eq!(format_time(1_272_917_631), "2010-05-03 20:13:51 +0000");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 +0000");
    }
}
