//! The backend conformance kit: random operation sequences run against the reference
//! model and an engine `Domain` over any backend that offers the two test hooks, checking
//! every invariant of SEMANTICS.md §3 after every step.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use proptest::test_runner::{TestCaseError, TestError, TestRunner};
use proptest_state_machine::ReferenceStateMachine;
use snaptree_engine::xml::dom::escape;
use snaptree_engine::{Backend, ContentRef, Domain, Error, Filter, NoProgress, Uuid, flags};

use crate::model::{Expected, RefModel, Token};
use crate::transition::{RefMachine, RefState, Transition, Tuning, set_tuning};

/// A fresh domain to test: its XML and its backend, opened on an empty disk.
pub struct Subject {
    /// The `<domain>` document.
    pub domain_xml: String,
    /// The backend opened for it.
    pub backend: Box<dyn Backend>,
}

/// How many sequences to run and how.
#[derive(Debug, Clone)]
pub struct Config {
    /// Number of sequences.
    pub cases: u32,
    /// Longest sequence.
    pub max_steps: usize,
    /// Generator tuning for the backend's abilities.
    pub tuning: Tuning,
    /// Upper bound on shrink iterations when a case fails.
    pub max_shrink_iters: u32,
}

impl Config {
    /// `default_cases` sequences of up to 40 steps, or `$PROPTEST_CASES` when set.
    pub fn from_env(default_cases: u32) -> Config {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default_cases);
        Config {
            cases,
            max_steps: 40,
            tuning: Tuning::default(),
            max_shrink_iters: 4096,
        }
    }
}

/// What a passing run did.
#[derive(Debug, Clone, Copy, Default)]
pub struct Report {
    /// Sequences run (including those tried while shrinking none).
    pub cases: u32,
    /// Steps executed in total.
    pub steps: usize,
}

/// A domain under test plus the digest each content token was observed to have.
struct System {
    domain: Domain,
    digests: HashMap<Token, String>,
}

fn hook_err(e: Error) -> String {
    format!("test hook failed: {}", e.full_message())
}

impl System {
    fn new(subject: Subject) -> Result<System, String> {
        let mut domain = Domain::ephemeral(&subject.domain_xml, subject.backend)
            .map_err(|e| e.full_message())?;
        let live = digest(&mut domain, ContentRef::Live)?;
        Ok(System {
            domain,
            digests: HashMap::from([(0, live)]),
        })
    }

    fn lookup(&mut self, name: &str) -> Result<Uuid, Error> {
        let dom = self.domain.name().to_string();
        Ok(self.domain.tree()?.require_name(name, &dom)?.uuid)
    }

    fn apply(&mut self, t: &Transition, after: &RefModel) -> Result<(), String> {
        let outcome: Result<(), Error> = match t {
            Transition::Create { name, uuid } => self
                .domain
                .create_snapshot(&format!(
                    "<domainsnapshot><name>{}</name><uuid>{uuid}</uuid></domainsnapshot>",
                    escape(name)
                ))
                .map(drop),
            Transition::Write { seed } => {
                let hooks = self
                    .domain
                    .backend()
                    .test_hooks()
                    .ok_or("the backend offers no test hooks")?;
                hooks.write_guest(*seed).map_err(hook_err)?;
                let d = digest(&mut self.domain, ContentRef::Live)?;
                self.digests.insert(after.live, d);
                Ok(())
            }
            Transition::Revert { name, flags: f } => flags::revert_state(*f)
                .and_then(|force| Ok((force, self.lookup(name)?)))
                .and_then(|(force, u)| self.domain.revert(&u, force, &mut NoProgress).map(drop)),
            Transition::Rename { name, new_name } => self
                .lookup(name)
                .and_then(|u| self.domain.rename(&u, new_name).map(drop)),
            Transition::Delete { name, flags: f } => flags::delete_mode(*f)
                .and_then(|mode| Ok((mode, self.lookup(name)?)))
                .and_then(|(mode, u)| self.domain.delete(&u, mode, &mut NoProgress).map(drop)),
            Transition::DeleteAll => self.domain.delete_all(&mut NoProgress).map(drop),
        };
        compare_outcome(&outcome, &after.last)?;
        self.check(after)
    }

    /// Every invariant of SEMANTICS.md §3 against the model.
    fn check(&mut self, m: &RefModel) -> Result<(), String> {
        let dom = self.domain.name().to_string();
        let tree = self.domain.tree().map_err(|e| e.full_message())?.clone();
        // 1, 2: the same forest, names, uuids, states and current as the model.
        if tree.len() != m.snapshots.len() {
            return Err(format!(
                "expected {} snapshots, the engine has {}",
                m.snapshots.len(),
                tree.len()
            ));
        }
        for s in &m.snapshots {
            let got = tree
                .get(&s.uuid)
                .ok_or_else(|| format!("expected snapshot '{}' to exist", s.name))?;
            if got.name != s.name || got.state != s.state {
                return Err(format!(
                    "expected snapshot {} named '{}' in state {}, found '{}' in state {}",
                    s.uuid, s.name, s.state, got.name, got.state
                ));
            }
            let parent = tree.parent(&s.uuid).map(|p| p.uuid);
            if parent != s.parent {
                return Err(format!(
                    "expected '{}' to have parent {:?}, found {:?}",
                    s.name, s.parent, parent
                ));
            }
            if tree.require_name(&s.name, &dom).map(|x| x.uuid).ok() != Some(s.uuid) {
                return Err(format!("expected the name index to find '{}'", s.name));
            }
        }
        if tree.current().map(|c| c.uuid) != m.current {
            return Err(format!(
                "expected current {:?}, found {:?}",
                m.current,
                tree.current().map(|c| &c.name)
            ));
        }
        let retired: BTreeSet<Uuid> = m.retired.iter().copied().collect();
        if *tree.retired() != retired {
            return Err(format!(
                "expected retired uuids {retired:?}, found {:?}",
                tree.retired()
            ));
        }
        // The cached roots/leaves agree with the structure, and topological order is sound.
        let roots = m.snapshots.iter().filter(|s| s.parent.is_none()).count();
        let leaves = m
            .snapshots
            .iter()
            .filter(|s| !m.snapshots.iter().any(|c| c.parent == Some(s.uuid)))
            .count();
        if tree.count(Filter::Roots) != roots || tree.count(Filter::Leaves) != leaves {
            return Err(format!(
                "expected {roots} roots and {leaves} leaves, the engine counts {} and {}",
                tree.count(Filter::Roots),
                tree.count(Filter::Leaves)
            ));
        }
        let mut seen = BTreeSet::new();
        for s in tree.topological() {
            if let Some(p) = tree.parent(&s.uuid)
                && !seen.contains(&p.uuid)
            {
                return Err(format!(
                    "expected parent '{}' before child '{}' in topological order",
                    p.name, s.name
                ));
            }
            seen.insert(s.uuid);
        }
        // 3: the live content is what the model says.
        self.check_content(ContentRef::Live, m.live, "the live state")?;
        // 4: every surviving snapshot keeps its content (P under MERGE takes S's).
        for s in &m.snapshots {
            self.check_content(
                ContentRef::Snapshot(s.uuid),
                s.content,
                &format!("snapshot '{}'", s.name),
            )?;
        }
        // 5, 7: the backend holds data for exactly the known snapshots, in the same shape.
        self.domain.check_agreement().map_err(|e| e.full_message())
    }

    fn check_content(&mut self, of: ContentRef, token: Token, what: &str) -> Result<(), String> {
        let want = self
            .digests
            .get(&token)
            .cloned()
            .ok_or_else(|| format!("no digest recorded for content {token}"))?;
        let got = digest(&mut self.domain, of)?;
        if got != want {
            return Err(format!(
                "expected {what} to hold content #{token} (digest {want}), found digest {got}"
            ));
        }
        Ok(())
    }
}

fn digest(domain: &mut Domain, of: ContentRef) -> Result<String, String> {
    let hooks = domain
        .backend()
        .test_hooks()
        .ok_or("the backend offers no test hooks")?;
    hooks.content_digest(of).map_err(hook_err)
}

fn compare_outcome(got: &Result<(), Error>, want: &Expected) -> Result<(), String> {
    match (got, want) {
        (Ok(()), Expected::Ok) => Ok(()),
        (Err(e), Expected::Err(code, victims)) if e.code() == *code => {
            if let Error::WouldDiscard {
                victims: got_victims,
                ..
            } = e
            {
                let mut g = got_victims.clone();
                g.sort();
                if g != *victims {
                    return Err(format!(
                        "expected WOULD_DISCARD naming {victims:?}, it named {g:?}"
                    ));
                }
            }
            Ok(())
        }
        (Ok(()), Expected::Err(code, _)) => Err(format!(
            "expected error {}, the operation succeeded",
            code.name()
        )),
        (Err(e), Expected::Ok) => Err(format!(
            "expected success, got {}: {}",
            e.code().name(),
            e.full_message()
        )),
        (Err(e), Expected::Err(code, _)) => Err(format!(
            "expected error {}, got {}: {}",
            code.name(),
            e.code().name(),
            e.full_message()
        )),
    }
}

/// Runs one sequence; the error says which step broke what.
pub fn run_sequence(
    subject: Subject,
    transitions: &[Transition],
    seen: Option<&AtomicUsize>,
) -> Result<usize, String> {
    let mut sys = System::new(subject)?;
    let mut state = RefState::default();
    sys.check(&state.model)
        .map_err(|e| format!("before the first step: {e}"))?;
    for (i, t) in transitions.iter().enumerate() {
        if let Some(seen) = seen {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        state = RefMachine::apply(state, t);
        sys.apply(t, &state.model)
            .map_err(|e| format!("step {} ({t:?}): {e}", i + 1))?;
    }
    Ok(transitions.len())
}

/// Runs `config.cases` random sequences against fresh subjects from `factory`. On failure
/// the error holds the shrunk sequence, one step per line, and what broke.
pub fn run(
    config: &Config,
    factory: &dyn Fn() -> Result<Subject, String>,
) -> Result<Report, String> {
    set_tuning(config.tuning.clone());
    let mut runner = TestRunner::new(proptest::test_runner::Config {
        cases: config.cases,
        failure_persistence: None,
        max_shrink_iters: config.max_shrink_iters,
        ..proptest::test_runner::Config::default()
    });
    let steps = AtomicUsize::new(0);
    let cases = AtomicUsize::new(0);
    let strategy = RefMachine::sequential_strategy(1..=config.max_steps);
    let result = runner.run(
        &strategy,
        |(_, transitions, seen): (RefState, Vec<Transition>, Option<Arc<AtomicUsize>>)| {
            let subject = factory().map_err(TestCaseError::fail)?;
            let n = run_sequence(subject, &transitions, seen.as_deref())
                .map_err(TestCaseError::fail)?;
            steps.fetch_add(n, Ordering::Relaxed);
            cases.fetch_add(1, Ordering::Relaxed);
            Ok(())
        },
    );
    match result {
        Ok(()) => Ok(Report {
            cases: cases.load(Ordering::Relaxed) as u32,
            steps: steps.load(Ordering::Relaxed),
        }),
        Err(TestError::Fail(reason, (_, transitions, _))) => {
            let mut text = format!(
                "conformance failure: {reason}\nshrunk sequence ({} steps):\n",
                transitions.len()
            );
            for (i, t) in transitions.iter().enumerate() {
                text.push_str(&format!("  {:>2}. {t:?}\n", i + 1));
            }
            Err(text)
        }
        Err(TestError::Abort(reason)) => Err(format!("conformance run aborted: {reason}")),
    }
}
