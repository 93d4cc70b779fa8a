//! The safety nets of SEMANTICS.md §7.4-7.5 on the command line: `snapshot-auto`,
//! `snapshot-pin`, `policy` and `prune`.

use snaptree_engine::conn::Connection;
use snaptree_engine::retention::{Pruned, compact_utc, parse_policy};
use snaptree_engine::{Domain, Result, Step, planner, xml::dom::escape};

/// The XML of a create: name, description and `<expires>`.
pub fn create_xml(name: Option<&str>, description: Option<&str>, expires: Option<i64>) -> String {
    let mut xml = String::from("<domainsnapshot>");
    if let Some(n) = name {
        xml.push_str(&format!("<name>{}</name>", escape(n)));
    }
    if let Some(d) = description {
        xml.push_str(&format!("<description>{}</description>", escape(d)));
    }
    if let Some(e) = expires {
        xml.push_str(&format!("<expires>{e}</expires>"));
    }
    xml.push_str("</domainsnapshot>");
    xml
}

/// A name from the time no snapshot of the domain has: `auto-20261205T031500Z`, with a
/// suffix when two are taken in one second.
pub fn auto_name(d: &mut Domain, now: i64) -> Result<String> {
    let base = format!("auto-{}", compact_utc(now));
    Ok(planner::unique_name(d.tree()?, &base))
}

/// `snaptree policy DOMAIN [RULES] [--clear]`: sets when given rules or --clear, then
/// shows the policy.
pub fn policy(d: &mut Domain, rules: &[String], clear: bool, json: bool) -> Result<String> {
    if clear {
        d.set_retention_policy(None)?;
    } else if !rules.is_empty() {
        let words: Vec<&str> = rules.iter().map(String::as_str).collect();
        d.set_retention_policy(Some(&parse_policy(&words)?))?;
    }
    let policy = d.retention_policy()?;
    if json {
        return Ok(format!(
            "{}\n",
            serde_json::json!({"domain": d.name(), "policy": policy})
        ));
    }
    Ok(match policy {
        Some(p) => format!(
            "Retention policy of domain '{}': {}\n",
            d.name(),
            p.describe()
        ),
        None => format!(
            "Domain '{}' has no retention policy: prune deletes only expired snapshots\n",
            d.name()
        ),
    })
}

/// `snaptree prune DOMAIN [--dry-run]`: what it removes (or would), one line each.
pub fn prune(d: &mut Domain, dry_run: bool) -> Result<String> {
    let list: Vec<Pruned> = if dry_run {
        d.plan_prune()?
    } else {
        let mut bar = crate::progress::bar("prune");
        let list = d.prune(&mut bar)?;
        bar.finish();
        list
    };
    Ok(report(d.name(), &list, dry_run))
}

/// The report of a prune: a line per snapshot (with the bytes the backend estimates its
/// delete frees, where it can tell), then a summary.
pub fn report(domain: &str, list: &[Pruned], dry_run: bool) -> String {
    let verb = if dry_run { "would remove" } else { "removed" };
    let mut out = String::new();
    if dry_run {
        out.push_str("prune (dry run, nothing changed):\n");
    }
    for p in list {
        let consolidated = p
            .plan
            .steps
            .iter()
            .filter(|s| matches!(s, Step::Consolidate { .. } | Step::DiscardLeaf { .. }))
            .count();
        let freed = match p.freed {
            Some(b) => format!("; frees {b} bytes"),
            None => String::new(),
        };
        out.push_str(&format!(
            "  {verb} '{}' ({}; {consolidated} physical step{}{freed})\n",
            p.name,
            p.reason.as_str(),
            if consolidated == 1 { "" } else { "s" }
        ));
    }
    let known: Vec<u64> = list.iter().filter_map(|p| p.freed).collect();
    let freed = if list.is_empty() {
        "bytes freed: 0".to_string()
    } else if known.is_empty() {
        "bytes freed: not reported by the backend".to_string()
    } else {
        let total: u64 = known.iter().sum();
        let missing = list.len() - known.len();
        let unknown = match missing {
            0 => String::new(),
            n => format!(
                ", {n} delete{} not estimated",
                if n == 1 { "" } else { "s" }
            ),
        };
        let verb = if dry_run { "would free" } else { "freed" };
        format!("bytes {verb}: {total}, as the backend estimates{unknown}")
    };
    out.push_str(&format!(
        "Domain '{domain}': {} snapshot{} {}; {freed}\n",
        list.len(),
        if list.len() == 1 { "" } else { "s" },
        if dry_run {
            "would be removed"
        } else {
            "removed"
        }
    ));
    out
}

/// `snaptree prune --all`: every domain in turn, each report handed to `emit` as it is
/// done. A domain that fails does not stop the others (a timer pruning a host must not
/// leave every domain after a broken one unpruned); the failure returned at the end
/// carries the first error's code and names every domain that failed.
pub fn prune_all(
    conn: &Connection,
    dry_run: bool,
    mut emit: impl FnMut(&str) -> std::result::Result<(), crate::Failure>,
) -> std::result::Result<(), crate::Failure> {
    let domains = conn.list_domains()?;
    let mut failed: Vec<(String, snaptree_engine::Error)> = Vec::new();
    for info in &domains {
        match conn
            .open_domain(&info.name)
            .and_then(|mut d| prune(&mut d, dry_run))
        {
            Ok(text) => emit(&text)?,
            Err(e) => failed.push((info.name.clone(), e)),
        }
    }
    let mut failed = failed.into_iter();
    let Some((first_domain, first)) = failed.next() else {
        return Ok(());
    };
    let mut hint = String::new();
    for (domain, e) in failed {
        hint.push_str(&format!(
            "error: prune of domain '{domain}': {}\n",
            e.full_message()
        ));
    }
    hint.push_str(&format!(
        "prune --all: the first failure was domain '{first_domain}'; every other domain was pruned as reported"
    ));
    Err(crate::Failure::Hinted(first, hint))
}
