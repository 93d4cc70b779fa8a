//! `snaptree reclaim DOMAIN`: frees the data of every retired snapshot (SEMANTICS.md §7.2).

use snaptree_engine::{Domain, Plan, Result, Step, Uuid};

/// The retired snapshots whose data a reclaim plan frees, in the order it frees them.
fn freed(plan: &Plan) -> Vec<Uuid> {
    plan.steps
        .iter()
        .filter_map(|s| match s {
            Step::Consolidate { snapshot } | Step::DiscardLeaf { snapshot } => Some(*snapshot),
            _ => None,
        })
        .collect()
}

/// Runs (or with `dry_run` plans) a reclaim and returns what to print. Backends do not
/// report bytes, so the report names the retired snapshots whose data was freed.
pub fn reclaim(d: &mut Domain, dry_run: bool) -> Result<String> {
    if dry_run {
        let plan = d.plan_reclaim()?;
        return Ok(crate::output::describe_plan(d.tree()?, &plan));
    }
    let mut bar = crate::progress::bar("reclaim");
    let plan = d.reclaim(&mut bar)?;
    bar.finish();
    let uuids = freed(&plan);
    Ok(if uuids.is_empty() {
        format!("Domain '{}' has no retired data to reclaim\n", d.name())
    } else {
        format!(
            "Reclaimed the data of {} retired snapshot{} of domain '{}': {}\n",
            uuids.len(),
            if uuids.len() == 1 { "" } else { "s" },
            d.name(),
            uuids
                .iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}
