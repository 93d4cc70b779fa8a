//! `snaptree-conformance PLUGIN.so [--cases N] [--steps N] [--domain-xml FILE] [--setup CMD] [--offline] [--kit-power] [--no-faults] [--tree-only]`
//!
//! Runs the conformance kit against a backend plugin file: random operation sequences on
//! fresh domains, every invariant of SEMANTICS.md §3 checked after every step through the
//! plugin's test hooks. Each case gets a fresh scratch directory; `{dir}` in the domain XML
//! template and in the setup command stands for it (the setup command runs through
//! `sh -c` before each case, e.g. to create disk images). With `--tree-only`, a plugin
//! without test hooks is checked at tree level (no guest writes, no content comparison).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use snaptree_check::{Config, Subject, Tuning, run};
use snaptree_engine::flags;
use snaptree_host::Plugin;

const USAGE: &str = "usage: snaptree-conformance PLUGIN.so [--cases N] [--steps N] [--domain-xml FILE] [--setup CMD] [--offline] [--kit-power] [--no-faults] [--tree-only]
  --cases N        sequences to run (default 200, or $PROPTEST_CASES)
  --steps N        longest sequence (default 40)
  --domain-xml F   domain XML template; {dir} is the case's scratch directory
                   (default: <domain type='TYPE'><name>conformance</name><sim dir='{dir}'/></domain>)
  --setup CMD      shell command run before each case; {dir} as above
  --offline        the backend cannot start guests: reverts only keep or force shutoff
  --kit-power      the backend's power state is bookkeeping: the kit starts and stops the guest
  --no-faults      inject no faults (the kit fails a step before or after it runs, by default)
  --tree-only      no test hooks needed: tree, current, error codes, refusals, plans and
                   agreement are checked, contents are not";

struct Args {
    plugin: PathBuf,
    cases: Option<u32>,
    steps: usize,
    template: Option<String>,
    setup: Option<String>,
    offline: bool,
    kit_power: bool,
    faults: bool,
    tree_only: bool,
}

fn parse() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    let mut args = Args {
        plugin: PathBuf::new(),
        cases: None,
        steps: 40,
        template: None,
        setup: None,
        offline: false,
        kit_power: false,
        faults: true,
        tree_only: false,
    };
    let mut plugin = None;
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--cases" => {
                args.cases = Some(
                    value("--cases")?
                        .parse()
                        .map_err(|e| format!("--cases: {e}"))?,
                )
            }
            "--steps" => {
                args.steps = value("--steps")?
                    .parse()
                    .map_err(|e| format!("--steps: {e}"))?
            }
            "--domain-xml" => {
                let f = value("--domain-xml")?;
                args.template =
                    Some(std::fs::read_to_string(&f).map_err(|e| format!("cannot read {f}: {e}"))?);
            }
            "--setup" => args.setup = Some(value("--setup")?),
            "--offline" => args.offline = true,
            "--kit-power" => args.kit_power = true,
            "--no-faults" => args.faults = false,
            "--tree-only" => args.tree_only = true,
            "-h" | "--help" => return Err(String::new()),
            other if plugin.is_none() && !other.starts_with('-') => {
                plugin = Some(PathBuf::from(other))
            }
            other => return Err(format!("unexpected argument '{other}'")),
        }
    }
    args.plugin = plugin.ok_or("no plugin file given")?;
    Ok(args)
}

static CASE: AtomicU64 = AtomicU64::new(0);

fn scratch() -> Result<PathBuf, String> {
    let n = CASE.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("snaptree-conformance-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let plugin = match Plugin::load(&args.plugin) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {}", e.full_message());
            return ExitCode::from(1);
        }
    };
    if !args.tree_only && !plugin.has_test_hooks() {
        eprintln!(
            "error: plugin {} offers no test hooks (content_digest, write_guest); --tree-only checks it without them",
            args.plugin.display()
        );
        return ExitCode::from(1);
    }
    let template = args.template.clone().unwrap_or_else(|| {
        format!(
            "<domain type='{}'><name>conformance</name><sim dir='{{dir}}'/></domain>",
            plugin.name()
        )
    });
    let previous: std::cell::RefCell<Option<PathBuf>> = std::cell::RefCell::new(None);
    let factory = || -> Result<Subject, String> {
        if let Some(old) = previous.borrow_mut().take() {
            let _ = std::fs::remove_dir_all(old);
        }
        let dir = scratch()?;
        let d = dir.to_string_lossy().to_string();
        if let Some(cmd) = &args.setup {
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd.replace("{dir}", &d))
                .status()
                .map_err(|e| format!("setup command failed to start: {e}"))?;
            if !status.success() {
                return Err(format!("setup command failed: {status}"));
            }
        }
        let xml = template.replace("{dir}", &d);
        let backend = plugin.open_domain(&xml).map_err(|e| e.full_message())?;
        *previous.borrow_mut() = Some(dir);
        Ok(Subject {
            domain_xml: xml,
            backend: Box::new(backend),
        })
    };
    let mut config = Config::from_env(args.cases.unwrap_or(200));
    if let Some(c) = args.cases {
        config.cases = c;
    }
    config.max_steps = args.steps;
    if args.offline {
        config.tuning = Tuning {
            revert_flags: vec![0, flags::REVERT_SHUTOFF],
            ..Tuning::default()
        };
    }
    config.tree_only = args.tree_only;
    config.reach.kit_power = args.kit_power;
    config.reach.faults = args.faults;
    // The generator must know whether the plugin holds data and adopts it: asked of one
    // domain opened before the run.
    match factory() {
        Ok(probe) => {
            config.reach.metadata_only = probe.backend.is_metadata_only();
            config.reach.adopts = probe.backend.can_adopt();
        }
        Err(e) => {
            eprintln!(
                "cannot open a domain on {}: {e}",
                Path::new(&args.plugin).display()
            );
            return ExitCode::from(1);
        }
    }
    let started = std::time::Instant::now();
    let result = run(&config, &factory);
    if let Some(old) = previous.borrow_mut().take() {
        let _ = std::fs::remove_dir_all(old);
    }
    match result {
        Ok(report) => {
            println!(
                "{}: conformance passed: {} sequences, {} steps, {:.1?}",
                Path::new(&args.plugin).display(),
                report.cases,
                report.steps,
                started.elapsed()
            );
            ExitCode::SUCCESS
        }
        Err(failure) => {
            eprintln!("{failure}");
            ExitCode::from(1)
        }
    }
}
