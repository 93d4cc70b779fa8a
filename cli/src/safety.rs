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

/// The report of a prune: a line per snapshot, then a summary. Backends do not report
/// the bytes a step frees, so none are claimed.
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
        out.push_str(&format!(
            "  {verb} '{}' ({}; {consolidated} physical step{})\n",
            p.name,
            p.reason.as_str(),
            if consolidated == 1 { "" } else { "s" }
        ));
    }
    out.push_str(&format!(
        "Domain '{domain}': {} snapshot{} {}; bytes freed: not reported by the backend\n",
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

/// `snaptree prune --all`: every domain in turn; the first failure stops it.
pub fn prune_all(conn: &Connection, dry_run: bool) -> Result<String> {
    let mut out = String::new();
    for info in conn.list_domains()? {
        let mut d = conn.open_domain(&info.name)?;
        out.push_str(&prune(&mut d, dry_run)?);
    }
    Ok(out)
}
