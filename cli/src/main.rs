//! `snaptree`: the proposal's virsh snapshot commands over the snaptree engine.

// `print!` panics when the reader of a pipe has gone; everything goes through `out`.
#![deny(clippy::print_stdout, clippy::print_stderr)]

mod adopt;
mod args;
mod export;
mod import;
mod info;
mod list;
mod out;
mod output;
mod pending;
mod progress;
mod qemu_domain;
mod reclaim;
mod safety;
mod when;

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{CommandFactory, Parser};
use snaptree_engine::conn::Connection;
use snaptree_engine::{DeleteMode, Domain, Error, Plan, PowerState, flags};
use snaptree_host::PluginHost;

use args::{Cli, Command, DeleteModeArgs, RevertStateArgs, StoreCommand};
use out::{errln, out, outln};

/// A failure of the command: an engine error, a file named on the command line or stdout,
/// a refused command line, or a reader that closed the pipe (not an error: a quiet exit).
pub(crate) enum Failure {
    Engine(Error),
    /// An engine error and a hint printed after it (NO_SPACE: what to delete first).
    Hinted(Error, String),
    Io(String),
    Usage(String),
    ClosedPipe,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Engine(e)
    }
}

/// The exit code of an engine error: 10 plus its stable code (see `--help`). A file that
/// cannot be read is 3, below that range, so no future engine code can collide with it.
fn exit_code(f: &Failure) -> u8 {
    match f {
        Failure::Engine(e) | Failure::Hinted(e, _) => 10 + e.code() as u8,
        Failure::Io(_) => 3,
        Failure::Usage(_) => 2,
        Failure::ClosedPipe => 0,
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        // The reader stopped reading: the work is done, the rest of the output unwanted.
        Ok(()) | Err(Failure::ClosedPipe) => ExitCode::SUCCESS,
        Err(f) => {
            let text = match &f {
                Failure::Engine(e) => e.full_message(),
                Failure::Hinted(e, hint) => format!("{}\n{hint}", e.full_message()),
                Failure::Io(s) | Failure::Usage(s) => s.clone(),
                Failure::ClosedPipe => String::new(),
            };
            errln!("error: {text}");
            ExitCode::from(exit_code(&f))
        }
    }
}

fn read_file(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::Io(format!("cannot read {}: {e}", path.display())))
}

fn open(cli: &Cli) -> Result<(Connection, Arc<PluginHost>), Failure> {
    let mut host = PluginHost::new();
    for p in &cli.backend_path {
        host.add_path(p)?;
    }
    let host = Arc::new(host);
    let store = cli.store.as_deref().map(Path::new);
    let conn = Connection::open(store.or(cli.state_dir.as_deref()))?;
    let resolver_host = Arc::clone(&host);
    conn.set_resolver(Box::new(move |t| resolver_host.provider_for(t)));
    Ok((conn, host))
}

/// `snaptree store migrate`: copies a state directory into a PostgreSQL store.
fn store_migrate(from: &Path, to: &str, timeout: std::time::Duration) -> Result<(), Failure> {
    if !matches!(
        snaptree_engine::store::StoreLocation::parse(to),
        snaptree_engine::store::StoreLocation::Postgres(_)
    ) {
        return Err(Failure::Usage(format!(
            "--to '{to}' is not a postgresql:// URI"
        )));
    }
    if !from.join(snaptree_engine::store::DB_FILE).is_file() {
        return Err(Failure::Usage(format!(
            "--from {} is not a snaptree state directory (it has no {})",
            from.display(),
            snaptree_engine::store::DB_FILE
        )));
    }
    let names = snaptree_engine::store::postgres::copy_from_sqlite(from, to, timeout)?;
    outln!(
        "migrated {} domain{} into {}: {}",
        names.len(),
        if names.len() == 1 { "" } else { "s" },
        snaptree_engine::store::redact(to),
        names.join(", ")
    );
    Ok(())
}

fn lookup(d: &mut Domain, name: &str) -> Result<snaptree_engine::Uuid, Failure> {
    let dom = d.name().to_string();
    Ok(d.tree()?.require_name(name, &dom)?.uuid)
}

fn delete_mode(m: DeleteModeArgs) -> DeleteMode {
    let word = [
        (m.merge, flags::DELETE_MERGE),
        (m.mergeforce, flags::DELETE_MERGE_FORCE),
        (m.delete, flags::DELETE_DISCARD),
        (m.deleteforce, flags::DELETE_DISCARD_FORCE),
        (m.consolidate, flags::DELETE_CONSOLIDATE),
        (m.children_only, flags::DELETE_CHILDREN_ONLY),
    ]
    .iter()
    .filter(|(on, _)| *on)
    .fold(0, |acc, (_, f)| acc | f);
    // clap's group admits at most one flag, so the word always decodes.
    flags::delete_mode(word).unwrap_or(DeleteMode::Retire)
}

fn revert_state(s: RevertStateArgs) -> Option<PowerState> {
    if s.running {
        Some(PowerState::Running)
    } else if s.paused {
        Some(PowerState::Paused)
    } else if s.shutoff {
        Some(PowerState::Shutoff)
    } else {
        None
    }
}

fn print_plan(d: &mut Domain, plan: &Plan) -> Result<(), Failure> {
    out!("{}", output::describe_plan(d.tree()?, plan));
    if !plan.steps.is_empty() {
        let estimate = d.estimate_space(plan)?;
        let backend = d.backend().name().to_string();
        out!("{}", output::describe_space(&backend, estimate.as_ref()));
    }
    Ok(())
}

/// Adds to a NO_SPACE refusal which snapshots to delete first: those whose CONSOLIDATE
/// delete frees most on the file system that is short (at most three, and only ones that
/// free something there), leaving out `busy`, the snapshot the refused operation was about.
fn hint_space(d: &mut Domain, e: Error, busy: Option<snaptree_engine::Uuid>) -> Failure {
    let Error::NoSpace {
        needed, free, path, ..
    } = &e
    else {
        return Failure::Engine(e);
    };
    let short = needed.saturating_sub(*free);
    let Ok(tree) = d.tree() else {
        return Failure::Engine(e);
    };
    let snaps: Vec<(snaptree_engine::Uuid, String)> = tree
        .topological()
        .into_iter()
        // A pinned snapshot is one the user keeps on purpose: never suggested.
        .filter(|s| Some(s.uuid) != busy && !s.pinned)
        .map(|s| (s.uuid, s.name.clone()))
        .collect();
    // What a delete frees elsewhere does not help: only the short file system counts.
    let frees_there = |d: &mut Domain, u: &snaptree_engine::Uuid| -> Option<u64> {
        let plan = d.plan_delete(u, DeleteMode::Consolidate).ok()?;
        let estimate = d.estimate_space(&plan).ok()??;
        let fs = estimate.file_systems.iter().find(|f| f.path == *path)?;
        Some(fs.freed.saturating_sub(fs.written))
    };
    let mut frees: Vec<(u64, String)> = snaps
        .into_iter()
        .filter_map(|(u, name)| match frees_there(d, &u) {
            Some(n) if n > 0 => Some((n, name)),
            _ => None,
        })
        .collect();
    frees.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    frees.truncate(3);
    if frees.is_empty() {
        return Failure::Engine(e);
    }
    let list = frees
        .iter()
        .map(|(n, name)| format!("'{name}' (frees {n} bytes there)"))
        .collect::<Vec<_>>()
        .join(", ");
    let hint = format!(
        "hint: {short} more bytes are needed on {path}; deleting these snapshots with --consolidate frees most there: {list}"
    );
    Failure::Hinted(e, hint)
}

fn print_recoveries(d: &Domain) {
    for r in d.recoveries() {
        errln!(
            "note: domain '{}' had an interrupted operation; it was completed: {}",
            d.name(),
            r.describe()
        );
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Completions { shell } = &cli.command {
        // Into memory first: `generate` panics when it cannot write.
        let mut script = Vec::new();
        clap_complete::generate(*shell, &mut Cli::command(), "snaptree", &mut script);
        return out::stdout_bytes(&script);
    }
    if let Command::Store {
        action: StoreCommand::Migrate { from, to },
    } = &cli.command
    {
        // Opens its two stores itself: no default store is touched.
        return store_migrate(from, to, snaptree_engine::store::lock_timeout_from_env()?);
    }
    let (conn, host) = open(&cli)?;
    let open_domain = |name: &str| -> Result<Domain, Failure> {
        let d = conn.open_domain(name)?;
        print_recoveries(&d);
        Ok(d)
    };
    match &cli.command {
        Command::Completions { .. } => {}
        Command::Define { file } => {
            let info = conn.define_domain(&read_file(file)?)?;
            // Open it once so an unknown backend type is reported now, not later.
            open_domain(&info.name)?;
            outln!(
                "Domain '{}' defined ({}, backend '{}')",
                info.name,
                info.uuid,
                info.backend_type
            );
        }
        Command::Undefine {
            domain,
            delete_snapshots,
        } => {
            conn.undefine_domain(domain, *delete_snapshots)?;
            outln!("Domain '{domain}' undefined");
        }
        Command::List { json } => {
            let domains = conn.list_domains()?;
            let pending = domains
                .iter()
                .map(|d| conn.pending_operation(&d.name))
                .collect::<Result<Vec<_>, _>>()?;
            if *json {
                let v: Vec<_> = domains
                    .iter()
                    .zip(&pending)
                    .map(|(d, p)| serde_json::json!({"name": d.name, "uuid": d.uuid, "backend": d.backend_type, "pending": pending::json(p.as_ref())}))
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            } else {
                outln!(" {:<20} {:<38} Backend", "Name", "UUID");
                outln!("{}", "-".repeat(70));
                for d in &domains {
                    outln!(" {:<20} {:<38} {}", d.name, d.uuid, d.backend_type);
                }
                for (d, p) in domains.iter().zip(&pending) {
                    if let Some(p) = p {
                        outln!("{}", pending::note(&d.name, p));
                    }
                }
            }
        }
        Command::Recover { domain } => pending::recover(&mut conn.open_domain(domain)?)?,
        Command::Backends { json } => backends(&host, *json)?,
        Command::Store { .. } => {}
        Command::SnapshotCreate {
            domain,
            file,
            redefine,
            current,
            dry,
        } => {
            let xml = match file {
                Some(f) => read_file(f)?,
                None => "<domainsnapshot/>".to_string(),
            };
            let mut d = open_domain(domain)?;
            if *redefine {
                redefine_one(&mut d, &xml, *current, dry.dry_run)?;
            } else {
                create(&mut d, &xml, dry.dry_run)?;
            }
        }
        Command::SnapshotCreateAs {
            domain,
            name,
            description,
            expires,
            pin,
            auto,
            dry,
        } => {
            let now = unix_now();
            let expires = expires
                .as_deref()
                .map(|e| when::parse_expires(e, now))
                .transpose()?;
            let mut d = open_domain(domain)?;
            let name = match auto {
                true => Some(safety::auto_name(&mut d, now)?),
                false => name.clone(),
            };
            let xml = safety::create_xml(name.as_deref(), description.as_deref(), expires);
            if let Some(u) = create(&mut d, &xml, dry.dry_run)?
                && *pin
            {
                d.set_pinned(&u, true)?;
            }
        }
        Command::SnapshotAuto { domain, expires } => {
            let now = unix_now();
            let expires = expires
                .as_deref()
                .map(|e| when::parse_expires(e, now))
                .transpose()?;
            let mut d = open_domain(domain)?;
            let name = safety::auto_name(&mut d, now)?;
            create(
                &mut d,
                &safety::create_xml(Some(&name), None, expires),
                false,
            )?;
        }
        Command::SnapshotPin {
            domain,
            name,
            unpin,
        } => {
            let mut d = open_domain(domain)?;
            let u = lookup(&mut d, name)?;
            d.set_pinned(&u, !*unpin)?;
            outln!(
                "Snapshot '{name}' {}",
                if *unpin { "unpinned" } else { "pinned" }
            );
        }
        Command::Policy {
            domain,
            rules,
            clear,
            json,
        } => {
            let mut d = open_domain(domain)?;
            out!("{}", safety::policy(&mut d, rules, *clear, *json)?);
        }
        Command::Prune { domain, all, dry } => match (domain, all) {
            (Some(domain), false) => {
                let mut d = open_domain(domain)?;
                out!("{}", safety::prune(&mut d, dry.dry_run)?);
            }
            _ => safety::prune_all(&conn, dry.dry_run, |text| {
                out!("{text}");
                Ok(())
            })?,
        },
        Command::SnapshotList { domain, opts } => {
            let mut d = open_domain(domain)?;
            let dom = d.name().to_string();
            let pending = d.pending()?;
            let sizes = if opts.size {
                let uuids: Vec<_> = list::select(d.tree()?, opts, &dom)?
                    .rows
                    .iter()
                    .map(|s| s.uuid)
                    .collect();
                let mut out = Vec::new();
                for u in &uuids {
                    out.push(d.snapshot_size(u)?);
                }
                Some(out)
            } else {
                None
            };
            let tree = d.tree()?;
            let sel = list::select(tree, opts, &dom)?;
            if opts.json {
                let v: Vec<_> = sel
                    .rows
                    .iter()
                    .enumerate()
                    .map(|(i, s)| {
                        let mut j = serde_json::to_value(output::snapshot_json(tree, s))
                            .unwrap_or_default();
                        if let (Some(sizes), Some(o)) = (&sizes, j.as_object_mut()) {
                            let z = sizes.get(i).copied().flatten();
                            o.insert("held_bytes".into(), z.map(|z| z.held).into());
                            o.insert("frees_bytes".into(), z.map(|z| z.frees).into());
                        }
                        j
                    })
                    .collect();
                let doc = serde_json::json!({"domain": dom, "snapshots": v, "pending": pending::json(pending.as_ref())});
                outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
            } else if opts.tree {
                out!("{}", list::tree_view(tree, &sel));
            } else if opts.name {
                out!("{}", list::names(&sel));
            } else {
                out!("{}", list::table(tree, &sel, opts.parent, sizes.as_deref()));
            }
            if let (false, Some(p)) = (opts.json, &pending) {
                outln!("\n{}", pending::note(d.name(), p));
            }
        }
        Command::SnapshotDumpxml { domain, name } => {
            let mut d = open_domain(domain)?;
            let u = lookup(&mut d, name)?;
            out!("{}", d.snapshot_xml(&u)?);
        }
        Command::SnapshotInfo {
            domain,
            name,
            current: _,
        } => {
            out!(
                "{}",
                info::info(&mut open_domain(domain)?, name.as_deref())?
            );
        }
        Command::SnapshotCurrent {
            domain,
            name,
            snapshotname,
        } => {
            if let Some(s) = snapshotname {
                return Err(Failure::Usage(format!(
                    "snaptree does not make snapshot '{s}' current without reverting to it: the current snapshot is the one the live state derives from (SEMANTICS.md §1), so only `snaptree snapshot-revert {domain} {s}` moves it (and discards unsaved live changes)"
                )));
            }
            let mut d = open_domain(domain)?;
            let dom = d.name().to_string();
            let current = info::which(d.tree()?, None, &dom)?;
            if *name {
                outln!("{}", current.name);
            } else {
                let u = current.uuid;
                out!("{}", d.snapshot_xml(&u)?);
            }
        }
        Command::SnapshotParent { domain, name } => {
            let mut d = open_domain(domain)?;
            let u = lookup(&mut d, name)?;
            let dom = d.name().to_string();
            match d.tree()?.parent(&u) {
                Some(p) => outln!("{}", p.name),
                None => {
                    return Err(Error::NoSnapshot(format!(
                        "snapshot '{name}' of domain '{dom}' has no parent"
                    ))
                    .into());
                }
            }
        }
        Command::StartWithSnapshot {
            domain,
            name,
            state,
            keep_live,
            dry,
        } => {
            let mut d = open_domain(domain)?;
            let u = lookup(&mut d, name)?;
            let force = revert_state(*state);
            // `--keep-live` alone gives "": the engine names the kept snapshot.
            let keep_name = keep_live.as_deref().filter(|n| !n.is_empty());
            if keep_live.is_some() {
                if dry.dry_run {
                    let plan = d.plan_revert_keep_live(&u, force, keep_name)?;
                    print_plan(&mut d, &plan)?;
                } else {
                    let mut bar = progress::bar("revert");
                    let plan = d.revert_keep_live(&u, force, keep_name, &mut bar)?;
                    bar.finish();
                    let kept = match &plan.operation {
                        snaptree_engine::Operation::RevertKeepLive { keep_name, .. } => {
                            keep_name.clone()
                        }
                        _ => String::new(),
                    };
                    outln!(
                        "Domain '{domain}' reverted to snapshot '{name}' ({}); the live state before it is snapshot '{kept}'",
                        d.power_state()?
                    );
                }
            } else if dry.dry_run {
                let plan = d.plan_revert(&u, force)?;
                print_plan(&mut d, &plan)?;
            } else {
                let mut bar = progress::bar("revert");
                d.revert(&u, force, &mut bar)?;
                bar.finish();
                outln!(
                    "Domain '{domain}' reverted to snapshot '{name}' ({})",
                    d.power_state()?
                );
            }
        }
        Command::SnapshotRename {
            domain,
            name,
            new_name,
            dry,
        } => {
            let mut d = open_domain(domain)?;
            let u = lookup(&mut d, name)?;
            if dry.dry_run {
                let plan = d.plan_rename(&u, new_name)?;
                print_plan(&mut d, &plan)?;
            } else {
                d.rename(&u, new_name)?;
                outln!("Snapshot '{name}' renamed to '{new_name}'");
            }
        }
        Command::SnapshotDelete {
            domain,
            name,
            mode,
            dry,
        } => {
            let mut d = open_domain(domain)?;
            let u = lookup(&mut d, name)?;
            let mode = delete_mode(*mode);
            if dry.dry_run {
                let plan = d.plan_delete(&u, mode)?;
                print_plan(&mut d, &plan)?;
            } else {
                let mut bar = progress::bar("delete");
                let plan = match d.delete(&u, mode, &mut bar) {
                    Ok(plan) => plan,
                    Err(e) => return Err(hint_space(&mut d, e, Some(u))),
                };
                bar.finish();
                let removed = plan.removed().len();
                outln!(
                    "Snapshot '{name}' deleted ({}){}",
                    mode.flag_name().to_lowercase().replace('_', "-"),
                    if removed > 1 {
                        format!(", {removed} snapshots removed")
                    } else {
                        String::new()
                    }
                );
            }
        }
        Command::SnapshotDeleteAll { domain, dry } => {
            let mut d = open_domain(domain)?;
            if dry.dry_run {
                let plan = d.plan_delete_all()?;
                print_plan(&mut d, &plan)?;
            } else {
                let mut bar = progress::bar("delete-all");
                let plan = d.delete_all(&mut bar)?;
                bar.finish();
                outln!(
                    "Deleted {} snapshots of domain '{domain}'",
                    plan.removed().len()
                );
            }
        }
        Command::Export {
            domain,
            domain_xml,
            dir,
        } => {
            let libvirt = domain_xml.as_deref().map(read_file).transpose()?;
            let mut d = open_domain(domain)?;
            for text in export::export(&mut d, libvirt.as_deref(), dir.as_deref())? {
                out!("{text}");
            }
        }
        Command::Adopt { domain_xml, dry } => {
            out!("{}", adopt::adopt(&conn, domain_xml, dry.dry_run)?);
        }
        Command::ImportLibvirt {
            domain_xml,
            snapshots,
            backend,
            current,
            qmp_socket,
            dry,
        } => {
            out!(
                "{}",
                import::import(
                    &conn,
                    domain_xml,
                    snapshots,
                    backend.as_deref(),
                    current.as_deref(),
                    qmp_socket.as_deref(),
                    dry.dry_run
                )?
            );
        }
        Command::Reclaim { domain, dry } => {
            let mut d = open_domain(domain)?;
            out!("{}", reclaim::reclaim(&mut d, dry.dry_run)?);
        }
    }
    Ok(())
}

/// Unix seconds now.
fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Creates (or with `dry_run` plans) a snapshot; returns its uuid when created.
fn create(
    d: &mut Domain,
    xml: &str,
    dry_run: bool,
) -> Result<Option<snaptree_engine::Uuid>, Failure> {
    if dry_run {
        let plan = d.plan_create(xml)?;
        print_plan(d, &plan)?;
        return Ok(None);
    }
    let u = match d.create_snapshot(xml) {
        Ok(u) => u,
        Err(e) => return Err(hint_space(d, e, None)),
    };
    let name = d
        .tree()?
        .get(&u)
        .map(|s| s.name.clone())
        .unwrap_or_default();
    outln!("Domain snapshot '{name}' created");
    Ok(Some(u))
}

fn redefine_one(d: &mut Domain, xml: &str, current: bool, dry_run: bool) -> Result<(), Failure> {
    if dry_run {
        let plan = d.plan_redefine(xml, current)?;
        return print_plan(d, &plan);
    }
    let u = d.redefine_snapshot(xml, current)?;
    let name = d
        .tree()?
        .get(&u)
        .map(|s| s.name.clone())
        .unwrap_or_default();
    outln!("Snapshot '{name}' redefined");
    Ok(())
}

fn backends(host: &PluginHost, json: bool) -> Result<(), Failure> {
    let list = host.list();
    if json {
        let v: Vec<_> = list
            .iter()
            .map(|s| match &s.plugin {
                Ok(p) => serde_json::json!({
                    "path": s.path, "type": p.name(), "abi_version": format!("{}.{}", p.abi_version() >> 16, p.abi_version() & 0xffff),
                    "capabilities": capabilities(&p.capabilities()), "test_hooks": p.has_test_hooks(), "adopt": p.can_adopt(), "manifest": p.keeps_manifest(), "estimate": p.can_estimate(), "active": s.active, "error": null,
                }),
                Err(e) => serde_json::json!({"path": s.path, "type": s.file_type, "error": e.full_message(), "active": false}),
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return Ok(());
    }
    outln!("null     built in, metadata only, every step in every power state, adopt");
    for s in list {
        match &s.plugin {
            Ok(p) => outln!(
                "{:<8} ABI {}.{}  {}{}{}{}{}  {}",
                p.name(),
                p.abi_version() >> 16,
                p.abi_version() & 0xffff,
                capabilities(&p.capabilities()).join(", "),
                if p.can_adopt() { ", adopt" } else { "" },
                if p.keeps_manifest() { ", manifest" } else { "" },
                if p.can_estimate() { ", estimate" } else { "" },
                if s.active { "" } else { "  (shadowed)" },
                s.path.display()
            ),
            Err(e) => outln!(
                "{:<8} cannot load: {}",
                s.file_type.as_deref().unwrap_or("?"),
                e.full_message()
            ),
        }
    }
    Ok(())
}

fn capabilities(c: &snaptree_engine::Capabilities) -> Vec<String> {
    snaptree_engine::StepKind::ALL
        .into_iter()
        .filter(|k| c.supports(*k))
        .map(|k| {
            let m = c.power_states(k);
            if m == snaptree_engine::PowerMask::ANY {
                k.name().to_string()
            } else {
                format!("{} (when {})", k.name(), m.describe())
            }
        })
        .collect()
}
