//! Operations interrupted part-way (SEMANTICS.md §7.1): `snaptree recover`, and how the
//! listings show an operation that is journaled and not finished.

use snaptree_engine::{Domain, Pending};

use crate::out::outln;

/// `snaptree recover DOMAIN`: finishes a pending operation and says what was finished
/// (also what opening the domain already finished). A finish that fails again is the
/// engine's `INCOMPLETE`.
pub fn recover(d: &mut Domain) -> Result<(), crate::Failure> {
    let done = d.recover()?;
    if done.is_empty() {
        outln!("Domain '{}' has no pending operation", d.name());
    }
    for r in done {
        outln!("Domain '{}': finished {}", d.name(), r.describe());
    }
    Ok(())
}

/// The line the text listings print under a domain with a pending operation.
pub fn note(domain: &str, p: &Pending) -> String {
    format!(
        "Pending on domain '{domain}': {}, {} of {} steps done; the next command on the domain or `snaptree recover {domain}` finishes it",
        p.operation,
        p.entry.steps_done,
        p.entry.plan.step_count()
    )
}

/// The `"pending"` field of the JSON listings: null, or the operation in words and how far
/// it got.
pub fn json(p: Option<&Pending>) -> serde_json::Value {
    match p {
        None => serde_json::Value::Null,
        Some(p) => serde_json::json!({
            "operation": p.operation,
            "steps_done": p.entry.steps_done,
            "steps": p.entry.plan.step_count(),
        }),
    }
}
