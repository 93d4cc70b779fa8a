//! The backend conformance kit: random operation sequences run against the reference
//! model and an engine `Domain` over any backend that offers the two test hooks, checking
//! every invariant of SEMANTICS.md §3 after every step.
//!
//! The kit drives the engine as a caller would (flags decoded by the engine's decoder,
//! names looked up by a read) and judges it only by the model and its own checks
//! ([`crate::oracle`]): nothing the engine computes is trusted to check the engine.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use proptest::test_runner::{TestCaseError, TestError, TestRunner};
use proptest_state_machine::ReferenceStateMachine;
use snaptree_engine::xml::DomainXml;
use snaptree_engine::xml::dom::escape;
use snaptree_engine::{
    Backend, Connection, ContentRef, DeleteMode, Domain, Error, NoProgress, PowerState, Uuid, flags,
};

use crate::harness::{Fault, KitBackend, KitProvider};
use crate::model::{self, Expected, RefModel, Target, Token, code};
use crate::oracle;
use crate::transition::{
    Reach, RefMachine, RefState, Transition, Tuning, apply_model, set_reach, set_tuning,
};

/// A fresh domain to test: its XML and its backend, opened on an empty disk.
pub struct Subject {
    /// The `<domain>` document.
    pub domain_xml: String,
    /// The backend opened for it.
    pub backend: Box<dyn Backend>,
}

/// A fresh domain holding the data of a prelude ([`crate::transition::Reach::prelude`])
/// that another tool made, with no snaptree metadata.
pub struct Adopted {
    /// The domain, its backend opened on the prelude's live state.
    pub subject: Subject,
    /// The digest of each content of the prelude ([`crate::prelude::Build::Write`]'s
    /// token), measured with the backend's `content_digest` hook while it was live.
    pub digests: Vec<(Token, String)>,
}

/// How the system under test turns flag words into engine requests. The kit uses the
/// engine's own decoders (they are part of what is checked); a test swaps in a broken
/// decoder to show the model catches it.
#[derive(Debug, Clone, Copy)]
pub struct Decoders {
    /// Delete flag word to mode.
    pub delete: fn(u32) -> snaptree_engine::Result<DeleteMode>,
    /// Revert flag word to forced power state.
    pub revert: fn(u32) -> snaptree_engine::Result<Option<PowerState>>,
}

impl Default for Decoders {
    fn default() -> Self {
        Decoders {
            delete: flags::delete_mode,
            revert: flags::revert_state,
        }
    }
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
    /// The generator's arms beyond plain operations.
    pub reach: Reach,
    /// Upper bound on shrink iterations when a case fails.
    pub max_shrink_iters: u32,
    /// The flag decoders of the system under test.
    pub decoders: Decoders,
    /// Tree level only, for a backend without test hooks (ESX against vcsim): guest writes
    /// are not run and contents are not compared; the tree, current, retired set, power
    /// state, error codes, refusals, plans and the physical agreement still are, after
    /// every step.
    pub tree_only: bool,
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
            reach: Reach::default(),
            max_shrink_iters: 4096,
            decoders: Decoders::default(),
            tree_only: false,
        }
    }

    /// As [`Config::from_env`], but under `CI=true` at least `ci_cases` sequences: the
    /// number CI promises for this backend (docs/model-checker.md), whatever the default
    /// or `$PROPTEST_CASES` says.
    pub fn from_env_or_ci(default_cases: u32, ci_cases: u32) -> Config {
        let mut c = Config::from_env(default_cases);
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            c.cases = c.cases.max(ci_cases);
        }
        c
    }
}

/// How often each generator arm and each expected outcome was reached.
pub type Coverage = BTreeMap<String, usize>;

/// What a passing run did.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Sequences run.
    pub cases: u32,
    /// Steps executed in total.
    pub steps: usize,
    /// Coverage counts (over every sequence tried).
    pub coverage: Coverage,
}

/// A SQLite state directory for one sequence, removed afterwards.
struct Durable {
    conn: Connection,
    domain: String,
    dir: PathBuf,
}

impl Drop for Durable {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn scratch_root() -> PathBuf {
    let shm = PathBuf::from("/dev/shm");
    if shm.is_dir() {
        shm
    } else {
        std::env::temp_dir()
    }
}

static STORES: AtomicUsize = AtomicUsize::new(0);

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A domain under test, the kit's handle on its backend, and what the kit learned.
struct System {
    kit: KitBackend,
    domain: Option<Domain>,
    durable: Option<Durable>,
    decoders: Decoders,
    /// The digest each content token was observed to have.
    digests: HashMap<Token, String>,
    /// Model placeholders of engine-generated uuids and names, mapped to the engine's.
    uuids: HashMap<Uuid, Uuid>,
    names: HashMap<String, String>,
    /// Creation dates seen, which never change.
    dates: HashMap<Uuid, i64>,
    started: i64,
    metadata_only: bool,
    tree_only: bool,
    domain_xml: String,
}

fn fail(e: Error) -> String {
    e.full_message()
}

impl System {
    /// `generated`: the sequence came from the generator, whose model must know whether
    /// the backend adopts; a hand-written one learns it from the backend.
    fn new(
        subject: Subject,
        state: &mut RefState,
        config: &Config,
        generated: bool,
    ) -> Result<System, String> {
        let kit = KitBackend::new(subject.backend, state.model.caps, config.reach.kit_power)
            .map_err(fail)?;
        // The model starts from what the backend can do and the power state it is in.
        state.model.caps = kit.caps();
        state.model.live_state = kit.clone().power_state().map_err(fail)?;
        if !generated {
            state.model.adopts = kit.can_adopt();
        } else if kit.can_adopt() != state.model.adopts {
            return Err(format!(
                "expected a backend that {} (Reach::adopts), '{}' {}",
                if state.model.adopts {
                    "adopts data"
                } else {
                    "cannot adopt"
                },
                kit.name(),
                if state.model.adopts {
                    "cannot adopt"
                } else {
                    "adopts data"
                }
            ));
        }
        let metadata_only = kit.is_metadata_only();
        if metadata_only != state.model.metadata_only {
            return Err(format!(
                "expected a backend that {} data (Reach::metadata_only), '{}' {}",
                if state.model.metadata_only {
                    "holds no"
                } else {
                    "holds"
                },
                kit.name(),
                if metadata_only {
                    "holds none"
                } else {
                    "holds data"
                }
            ));
        }
        let (domain, durable) = if state.durable {
            let dir = scratch_root().join(format!(
                "snaptree-kit-{}-{}",
                std::process::id(),
                STORES.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            let conn = Connection::open(Some(&dir)).map_err(fail)?;
            let xml = DomainXml::parse(&subject.domain_xml).map_err(fail)?;
            conn.register_provider(&xml.backend_type, Arc::new(KitProvider(kit.clone())));
            let info = conn.define_domain(&subject.domain_xml).map_err(fail)?;
            let durable = Durable {
                conn,
                domain: info.name,
                dir,
            };
            let domain = durable.conn.open_domain(&durable.domain).map_err(fail)?;
            (domain, Some(durable))
        } else {
            let domain =
                Domain::ephemeral(&subject.domain_xml, Box::new(kit.clone())).map_err(fail)?;
            (domain, None)
        };
        let mut digests = HashMap::new();
        if !config.tree_only {
            digests.insert(0, kit.hooks(|h| h.content_digest(ContentRef::Live))?);
        }
        Ok(System {
            kit,
            domain: Some(domain),
            durable,
            decoders: config.decoders,
            digests,
            uuids: HashMap::new(),
            names: HashMap::new(),
            dates: HashMap::new(),
            started: now(),
            metadata_only,
            tree_only: config.tree_only,
            domain_xml: subject.domain_xml.clone(),
        })
    }

    /// Takes the digests of a prelude's contents: one for each content the model holds,
    /// each different (else a content check could not tell two contents apart).
    fn learn_prelude(&mut self, m: &RefModel, digests: Vec<(Token, String)>) -> Result<(), String> {
        if self.tree_only {
            return Ok(());
        }
        self.digests.clear();
        for (token, digest) in digests {
            if let Some((other, _)) = self.digests.iter().find(|(_, d)| **d == digest) {
                return Err(format!(
                    "expected each content of the prelude to differ, #{token} has the digest {digest} of #{other}"
                ));
            }
            self.digests.insert(token, digest);
        }
        let tokens = m.orphans.iter().map(|(_, t)| *t).chain([m.live]);
        for t in tokens {
            if !self.digests.contains_key(&t) {
                return Err(format!(
                    "expected a digest of the prelude's content #{t}, the factory measured {:?}",
                    self.digests.keys().collect::<BTreeSet<_>>()
                ));
            }
        }
        Ok(())
    }

    fn domain(&mut self) -> &mut Domain {
        self.domain.as_mut().expect("the domain is open")
    }

    fn uuid(&self, model: Uuid) -> Uuid {
        self.uuids.get(&model).copied().unwrap_or(model)
    }

    fn name(&self, model: &str) -> String {
        self.names
            .get(model)
            .cloned()
            .unwrap_or_else(|| model.to_string())
    }

    fn open_again(&self) -> Result<Domain, String> {
        let d = self
            .durable
            .as_ref()
            .ok_or("reopen needs a durable store")?;
        d.conn.open_domain(&d.domain).map_err(fail)
    }

    /// A new, empty store for the same domain over the same backend (the metadata is
    /// lost; the backend's data stays): a new state directory, or a new in-memory domain.
    fn new_store(&mut self) -> Result<(), String> {
        self.domain = None;
        let xml = self.domain_xml.clone();
        if let Some(old) = self.durable.take() {
            drop(old); // the lost store, removed
            let dir = scratch_root().join(format!(
                "snaptree-kit-{}-{}",
                std::process::id(),
                STORES.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&dir);
            let conn = Connection::open(Some(&dir)).map_err(fail)?;
            let parsed = DomainXml::parse(&xml).map_err(fail)?;
            conn.register_provider(
                &parsed.backend_type,
                Arc::new(KitProvider(self.kit.clone())),
            );
            let info = conn.define_domain(&xml).map_err(fail)?;
            let durable = Durable {
                conn,
                domain: info.name,
                dir,
            };
            self.domain = Some(durable.conn.open_domain(&durable.domain).map_err(fail)?);
            self.durable = Some(durable);
        } else {
            self.domain = Some(Domain::ephemeral(&xml, Box::new(self.kit.clone())).map_err(fail)?);
        }
        // Uuid placeholders stay bound: the data keeps its uuids for adoption.
        self.dates.clear();
        Ok(())
    }

    /// Runs one mutation on `dom` the way a caller would. Returns the created uuid.
    fn call(&self, dom: &mut Domain, t: &Transition) -> Result<Option<Uuid>, Error> {
        let general = t.general();
        let t = &*general;
        let lookup = |dom: &mut Domain, target: &Target| -> Result<Uuid, Error> {
            match target {
                Target::Name(n) => {
                    let name = self.name(n);
                    let d = dom.name().to_string();
                    Ok(dom.tree()?.require_name(&name, &d)?.uuid)
                }
                Target::Uuid(u) => Ok(self.uuid(*u)),
            }
        };
        match t {
            Transition::CreateWith {
                name,
                uuid,
                description,
            } => {
                let mut xml = String::from("<domainsnapshot>");
                if let Some(n) = name {
                    xml.push_str(&format!("<name>{}</name>", escape(n)));
                }
                if let Some(u) = uuid {
                    xml.push_str(&format!("<uuid>{}</uuid>", self.uuid(*u)));
                }
                if let Some(d) = description {
                    xml.push_str(&format!("<description>{}</description>", escape(d)));
                }
                xml.push_str("</domainsnapshot>");
                dom.create_snapshot(&xml).map(Some)
            }
            Transition::Redefine(r) => {
                let current = match flags::create_mode(r.flags)? {
                    flags::CreateMode::Redefine { current } => current,
                    flags::CreateMode::Create => {
                        return Err(Error::Internal("the kit sends REDEFINE words only".into()));
                    }
                };
                let mut xml = format!(
                    "<domainsnapshot><name>{}</name><uuid>{}</uuid>",
                    escape(&self.name(&r.name)),
                    self.uuid(r.uuid)
                );
                if let Some(d) = &r.description {
                    xml.push_str(&format!("<description>{}</description>", escape(d)));
                }
                if let Some(c) = r.created {
                    xml.push_str(&format!("<creationdate>{c}</creationdate>"));
                }
                if let Some(st) = r.state {
                    xml.push_str(&format!("<state>{st}</state>"));
                }
                match &r.parent {
                    Some(Target::Uuid(u)) => {
                        xml.push_str(&format!("<parent><uuid>{}</uuid></parent>", self.uuid(*u)))
                    }
                    Some(Target::Name(n)) => xml.push_str(&format!(
                        "<parent><name>{}</name></parent>",
                        escape(&self.name(n))
                    )),
                    None => {}
                }
                xml.push_str("</domainsnapshot>");
                dom.redefine_snapshot(&xml, current).map(|_| None)
            }
            Transition::RevertTo { target, flags } => {
                let force = (self.decoders.revert)(*flags)?;
                let u = lookup(dom, target)?;
                dom.revert(&u, force, &mut NoProgress).map(|_| None)
            }
            Transition::RevertKeep {
                target,
                flags,
                keep,
            } => {
                let force = (self.decoders.revert)(*flags)?;
                let u = lookup(dom, target)?;
                let plan = dom.revert_keep_live(&u, force, keep.as_deref(), &mut NoProgress)?;
                match plan.operation {
                    snaptree_engine::Operation::RevertKeepLive { keep, .. } => Ok(Some(keep)),
                    other => Err(Error::Internal(format!(
                        "a KEEP_LIVE revert planned {other:?}"
                    ))),
                }
            }
            Transition::Rename { target, new_name } => {
                let u = lookup(dom, target)?;
                dom.rename(&u, new_name).map(|_| None)
            }
            Transition::Delete { target, flags } => {
                let mode = (self.decoders.delete)(*flags)?;
                let u = lookup(dom, target)?;
                dom.delete(&u, mode, &mut NoProgress).map(|_| None)
            }
            Transition::DeleteAll => dom.delete_all(&mut NoProgress).map(|_| None),
            Transition::SetKeepLast { last } => {
                let policy = last.map(|n| snaptree_engine::Policy {
                    last: u32::from(n),
                    ..Default::default()
                });
                dom.set_retention_policy(policy.as_ref()).map(|()| None)
            }
            Transition::Prune => dom.prune(&mut NoProgress).map(|_| None),
            Transition::Recover => dom.recover().map(|_| None),
            Transition::Reclaim => dom.reclaim(&mut NoProgress).map(|_| None),
            other => Err(Error::Internal(format!("{other:?} is not a domain call"))),
        }
    }

    /// Runs a transition; `Ok(Some(outcome))` for a domain call.
    fn run(
        &mut self,
        t: &Transition,
        before: &RefModel,
        after: &RefModel,
    ) -> Result<Option<Result<Option<Uuid>, Error>>, String> {
        self.kit.arm(None);
        match t {
            Transition::Write { .. } if self.tree_only => Ok(None),
            Transition::Write { seed } => {
                let seed = seed.wrapping_add(after.live.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                self.kit.hooks(|h| h.write_guest(seed))?;
                let d = self.kit.hooks(|h| h.content_digest(ContentRef::Live))?;
                // A write must make content that differs from every content seen before,
                // else a write_guest that does nothing would pass every content check.
                if let Some((tok, _)) = self.digests.iter().find(|(_, v)| **v == d) {
                    return Err(format!(
                        "expected a guest write to give new content, its digest {d} is that of content #{tok}"
                    ));
                }
                self.digests.insert(after.live, d);
                Ok(None)
            }
            Transition::SetPower { state } => {
                self.kit.set_power(*state)?;
                Ok(None)
            }
            Transition::LoseMetadata => {
                self.new_store()?;
                Ok(None)
            }
            Transition::Reopen => {
                self.domain = None;
                let d = self.open_again()?;
                let pending = before.pending.is_some();
                let recovered = !d.recoveries().is_empty();
                if pending != recovered {
                    return Err(format!(
                        "expected the reopened domain to {} an interrupted operation, it reports {} recoveries",
                        if pending { "roll forward" } else { "find no" },
                        d.recoveries().len()
                    ));
                }
                self.domain = Some(d);
                Ok(None)
            }
            Transition::SecondHandle(op) => {
                let mut second = self.open_again()?;
                let out = self.call(&mut second, op);
                Ok(Some(out))
            }
            Transition::Faulted { at, after: ran, op } => {
                self.kit.arm(Some(Fault {
                    at: usize::from(*at),
                    after: *ran,
                }));
                let mut dom = self.domain.take().expect("the domain is open");
                let out = self.call(&mut dom, op);
                self.domain = Some(dom);
                self.kit.disarm();
                Ok(Some(out))
            }
            op => {
                let mut dom = self.domain.take().expect("the domain is open");
                let out = self.call(&mut dom, op);
                self.domain = Some(dom);
                Ok(Some(out))
            }
        }
    }

    fn apply(&mut self, t: &Transition, before: &RefModel, after: &RefModel) -> Result<(), String> {
        let phys_before = if before.pending.is_none() && !self.metadata_only {
            Some(self.kit.with(|b| b.list_physical()).map_err(fail)?)
        } else {
            None
        };
        let window = (now(), 0);
        let outcome = self.run(t, before, after)?;
        let window = (window.0, now());
        let log = self.kit.log();
        let adopted = self.kit.adopted();
        if let Some(outcome) = outcome {
            self.compare_outcome(&outcome, after)?;
            self.compare_adoptions(&adopted, before, after)?;
            // A REDEFINE sets the creation date: from the document, else the call's clock.
            // One left pending (INCOMPLETE) sets it when a later call rolls it forward.
            if let Some(Transition::Redefine(r)) = redefinition(t)
                && (outcome.is_ok() || after.pending.is_some())
            {
                let u = self.uuid(r.uuid);
                // A replace without a date keeps the snapshot's (checked as any kept date).
                let kept = r.created.is_none() && before.by_uuid(&r.uuid).is_some();
                if !kept {
                    self.dates.remove(&u);
                }
                if outcome.is_ok() && r.created.is_none() && !kept {
                    let got = self
                        .domain()
                        .tree()
                        .map_err(fail)?
                        .get(&u)
                        .map(|s| s.creation_date);
                    if got.is_some_and(|d| d < window.0 || d > now()) {
                        return Err(format!(
                            "expected the creation date of the redefined {u} between {} and the end of the call, found {got:?}",
                            window.0
                        ));
                    }
                }
            }
            if let Ok(Some(created)) = outcome {
                // A new snapshot may take the uuid of one this very call removed (a
                // roll-forward first): its date is its own, checked against the window.
                self.dates.remove(&created);
                self.bind(created, after, window)?;
            }
            if outcome.is_ok()
                && let Some(phys) = &phys_before
                && !(before.pending.is_some() && after.last_reached)
            {
                let alias = |u: Uuid| self.uuid(u);
                oracle::compare_plan(&log, &after.last_plan, phys, &alias)?;
            }
        }
        // A placeholder names a generated name only while the model has it: the engine
        // may generate the same name again once that snapshot is gone.
        self.names
            .retain(|placeholder, _| after.find(placeholder).is_some());
        self.bind_by_name(after)?;
        self.check(after)
    }

    /// The engine must ask the backend to adopt exactly what the model adopts (a REDEFINE
    /// of a new snapshot, with its parent), once, and nothing else: a refusal before the
    /// adoption (a clash, a missing parent, a capability) asks nothing.
    fn compare_adoptions(
        &self,
        got: &[snaptree_engine::Adoption],
        before: &RefModel,
        after: &RefModel,
    ) -> Result<(), String> {
        let got: Vec<(Uuid, Option<Uuid>)> = got.iter().map(|a| (a.snapshot, a.parent)).collect();
        let want: Vec<(Uuid, Option<Uuid>)> = after
            .snapshots
            .iter()
            .filter(|s| before.by_uuid(&s.uuid).is_none())
            .filter(|s| {
                after.last == Expected::Ok
                    && after
                        .last_plan
                        .iter()
                        .any(|p| p.kind == model::ADOPT && p.uuid == Some(s.uuid))
            })
            .map(|s| (self.uuid(s.uuid), s.parent.map(|p| self.uuid(p))))
            .collect();
        if after.last == Expected::Ok && got != want {
            return Err(format!(
                "expected the backend asked to adopt {want:?} (snapshot, parent), the engine asked {got:?}"
            ));
        }
        Ok(())
    }

    /// Binds generated uuids the call did not return, of snapshots with a given name: the
    /// kept snapshot of a KEEP_LIVE revert that stopped part-way appears only when a later
    /// call rolls it forward.
    fn bind_by_name(&mut self, after: &RefModel) -> Result<(), String> {
        let unbound: Vec<(Uuid, String)> = after
            .snapshots
            .iter()
            .filter(|s| model::is_generated_uuid(&s.uuid) && !self.uuids.contains_key(&s.uuid))
            .filter(|s| !s.name.starts_with("<generated"))
            .map(|s| (s.uuid, s.name.clone()))
            .collect();
        if unbound.is_empty() {
            return Ok(());
        }
        let tree = self.domain().tree().map_err(fail)?.clone();
        for (placeholder, name) in unbound {
            if let Some(got) = tree.by_name(&name) {
                self.uuids.insert(placeholder, got.uuid);
            }
        }
        Ok(())
    }

    /// Binds the engine's generated uuid and name to the model's placeholders.
    fn bind(&mut self, created: Uuid, after: &RefModel, window: (i64, i64)) -> Result<(), String> {
        let s = after
            .snapshots
            .last()
            .ok_or("expected the model to have the created snapshot")?;
        if model::is_generated_uuid(&s.uuid) {
            self.uuids.insert(s.uuid, created);
        } else if s.uuid != created {
            return Err(format!(
                "expected the create to return {}, it returned {created}",
                s.uuid
            ));
        }
        let tree = self.domain().tree().map_err(fail)?.clone();
        let got = tree
            .get(&created)
            .ok_or_else(|| format!("expected the created snapshot {created} in the tree"))?;
        if s.name.starts_with("<generated") {
            if !model::valid_name(&got.name) {
                return Err(format!(
                    "expected a valid generated name, got {:?}",
                    got.name
                ));
            }
            self.names.insert(s.name.clone(), got.name.clone());
        }
        if got.creation_date < window.0 || got.creation_date > window.1 {
            return Err(format!(
                "expected the creation date of '{}' between {} and {}, found {}",
                got.name, window.0, window.1, got.creation_date
            ));
        }
        Ok(())
    }

    fn compare_outcome(
        &self,
        got: &Result<Option<Uuid>, Error>,
        after: &RefModel,
    ) -> Result<(), String> {
        match (got, &after.last) {
            (Ok(_), Expected::Ok) => Ok(()),
            (Err(e), Expected::Err(want, victims)) if e.code() as i32 == *want => {
                if let Error::WouldDiscard { victims: named, .. } = e {
                    let back: HashMap<&String, &String> =
                        self.names.iter().map(|(m, g)| (g, m)).collect();
                    let named: Vec<String> = named
                        .iter()
                        .map(|n| back.get(n).map_or_else(|| n.clone(), |m| (*m).clone()))
                        .collect();
                    oracle::compare_victims(&named, victims, after)?;
                }
                Ok(())
            }
            (Ok(_), Expected::Err(want, _)) => Err(format!(
                "expected error {}, the operation succeeded",
                code::name(*want)
            )),
            (Err(e), Expected::Ok) => Err(format!(
                "expected success, got {}: {}",
                code::name(e.code() as i32),
                e.full_message()
            )),
            (Err(e), Expected::Err(want, _)) => Err(format!(
                "expected error {}, got {}: {}",
                code::name(*want),
                code::name(e.code() as i32),
                e.full_message()
            )),
        }
    }

    /// Every invariant of SEMANTICS.md §3 against the model (while an operation is
    /// pending, §7.1: the state before it, and the live state).
    fn check(&mut self, m: &RefModel) -> Result<(), String> {
        let dom_name = self.domain().name().to_string();
        let tree = self.domain().tree().map_err(fail)?.clone();
        // 1, 2: the same forest, names, uuids, states, descriptions and current.
        if tree.len() != m.snapshots.len() {
            return Err(format!(
                "expected {} snapshots, the engine has {}",
                m.snapshots.len(),
                tree.len()
            ));
        }
        // A removed snapshot's uuid may be taken again by a new snapshot with its own
        // date: forget the dates of uuids the model no longer has.
        let present: Vec<Uuid> = m.snapshots.iter().map(|s| self.uuid(s.uuid)).collect();
        self.dates.retain(|u, _| present.contains(u));
        for s in &m.snapshots {
            let u = self.uuid(s.uuid);
            let name = self.name(&s.name);
            let got = tree
                .get(&u)
                .ok_or_else(|| format!("expected snapshot '{name}' ({u}) to exist"))?;
            if got.name != name || got.state != s.state || got.description != s.description {
                return Err(format!(
                    "expected snapshot {u} named '{name}' in state {} described {:?}, found '{}' in state {} described {:?}",
                    s.state, s.description, got.name, got.state, got.description
                ));
            }
            if !model::valid_name(&got.name) {
                return Err(format!("expected a valid name, found {:?}", got.name));
            }
            if let Some(d) = s.created
                && got.creation_date != d
            {
                return Err(format!(
                    "expected the creation date of '{name}' to be the redefined {d}, found {}",
                    got.creation_date
                ));
            }
            // A date the model holds was checked above, whoever set it (a roll-forward
            // too); only the others must stay as first seen.
            match self.dates.get(&u).filter(|_| s.created.is_none()) {
                Some(d) if *d != got.creation_date => {
                    return Err(format!(
                        "expected the creation date of '{name}' to stay {d}, found {}",
                        got.creation_date
                    ));
                }
                Some(_) => {}
                None => {
                    if s.created.is_none()
                        && (got.creation_date < self.started || got.creation_date > now())
                    {
                        return Err(format!(
                            "expected the creation date of '{name}' within the run, found {}",
                            got.creation_date
                        ));
                    }
                    // Not while an operation is pending: a REDEFINE it holds sets the
                    // date when rolled forward.
                    if m.pending.is_none() {
                        self.dates.insert(u, got.creation_date);
                    }
                }
            }
            let parent = tree.parent(&u).map(|p| p.uuid);
            let want = s.parent.map(|p| self.uuid(p));
            if parent != want {
                return Err(format!(
                    "expected '{name}' to have parent {want:?}, found {parent:?}"
                ));
            }
            if tree.require_name(&name, &dom_name).map(|x| x.uuid).ok() != Some(u) {
                return Err(format!("expected the name index to find '{name}'"));
            }
        }
        let current = m.current.map(|c| self.uuid(c));
        if tree.current().map(|c| c.uuid) != current {
            return Err(format!(
                "expected current {current:?}, found {:?}",
                tree.current().map(|c| (&c.name, c.uuid))
            ));
        }
        let retired: BTreeSet<Uuid> = m.retired.iter().map(|u| self.uuid(*u)).collect();
        if *tree.retired() != retired {
            return Err(format!(
                "expected retired uuids {retired:?}, found {:?}",
                tree.retired()
            ));
        }
        // Listings: creation order, parents before children.
        let order: Vec<Uuid> = m.snapshots.iter().map(|s| self.uuid(s.uuid)).collect();
        let listed: Vec<Uuid> = tree.iter().map(|s| s.uuid).collect();
        if listed != order {
            return Err(format!(
                "expected the listing in creation order {order:?}, found {listed:?}"
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
        // The live power state.
        let power = self.domain().power_state().map_err(fail)?;
        if power != m.live_state {
            return Err(format!(
                "expected the domain {}, it is {power}",
                m.live_state
            ));
        }
        // §7.1: a pending operation is shown, with the steps still to run.
        let pending = self.domain().pending().map_err(fail)?;
        let left = pending
            .as_ref()
            .map(|p| p.entry.plan.step_count() - p.entry.steps_done);
        let want = m.pending.as_ref().map(|_| m.pending_steps);
        if left != want {
            return Err(format!(
                "expected {} pending, the domain shows {}",
                want.map_or("no operation".to_string(), |n| format!(
                    "an operation with {n} steps to run"
                )),
                pending.map_or("none".to_string(), |p| format!(
                    "'{}' with {} steps to run",
                    p.operation,
                    p.entry.plan.step_count() - p.entry.steps_done
                ))
            ));
        }
        // 3: the live content is what the model says.
        if !self.tree_only {
            self.check_content(ContentRef::Live, m.live, "the live state")?;
        }
        if m.pending.is_some() {
            // The physical state is mid-plan until the next call finishes it.
            return Ok(());
        }
        // 4: every surviving snapshot keeps its content (P under MERGE takes S's).
        let contents = if self.tree_only {
            &[][..]
        } else {
            &m.snapshots[..]
        };
        for s in contents {
            let what = format!("snapshot '{}'", self.name(&s.name));
            self.check_content(ContentRef::Snapshot(self.uuid(s.uuid)), s.content, &what)?;
        }
        // 5, 7 (and §7.2): the kit's own agreement of the physical tree with the model.
        if !self.metadata_only {
            let phys = self.kit.with(|b| b.list_physical()).map_err(fail)?;
            let alias = |u: Uuid| self.uuid(u);
            oracle::agreement(&phys, m, &alias)?;
        }
        Ok(())
    }

    fn check_content(&mut self, of: ContentRef, token: Token, what: &str) -> Result<(), String> {
        let want = self
            .digests
            .get(&token)
            .cloned()
            .ok_or_else(|| format!("no digest recorded for content {token}"))?;
        let got = self.kit.hooks(|h| h.content_digest(of))?;
        if got != want {
            return Err(format!(
                "expected {what} to hold content #{token} (digest {want}), found digest {got}"
            ));
        }
        Ok(())
    }
}

/// The REDEFINE a transition runs, if any (plain, through a second handle, faulted).
fn redefinition(t: &Transition) -> Option<&Transition> {
    match t {
        Transition::Redefine(_) => Some(t),
        Transition::SecondHandle(op) | Transition::Faulted { op, .. } => redefinition(op),
        _ => None,
    }
}

/// The coverage labels of one step: its kind, the arm of the generator it came from and
/// the outcome the model expected.
fn labels(t: &Transition, before: &RefModel, after: &RefModel, durable: bool) -> Vec<String> {
    let mut out = vec![format!("transition: {}", t.label())];
    let general;
    let op = match t {
        Transition::SecondHandle(op) | Transition::Faulted { op, .. } => {
            out.push(format!("transition: {} {}", t.label(), op.label()));
            general = op.general();
            &*general
        }
        other => {
            general = other.general();
            &*general
        }
    };
    let target_label = |target: &Target| match target {
        Target::Name(n) if !model::valid_name(n) => Some("target: invalid name"),
        Target::Name(n) if before.find(n).is_none() => Some("target: unknown name"),
        Target::Uuid(u) if before.retired.contains(u) => Some("target: uuid of a retired snapshot"),
        Target::Uuid(u) if before.by_uuid(u).is_none() => Some("target: unknown uuid"),
        Target::Uuid(_) => Some("target: uuid"),
        Target::Name(_) => None,
    };
    match op {
        Transition::CreateWith {
            name,
            uuid,
            description,
        } => {
            if name.is_none() {
                out.push("create: generated name".into());
            }
            match uuid {
                None => out.push("create: generated uuid".into()),
                Some(u) if before.retired.contains(u) => out.push("create: retired uuid".into()),
                Some(u) if before.by_uuid(u).is_some() => out.push("create: taken uuid".into()),
                Some(u) if before.orphans.iter().any(|(o, _)| o == u) => out.push(
                    if before.takes_over(*u) {
                        "create: uuid of data a lost store left, the live state on it"
                    } else {
                        "create: uuid of data a lost store left"
                    }
                    .into(),
                ),
                Some(_) => {}
            }
            if description.is_some() {
                out.push("create: description".into());
            }
            if let Some(n) = name
                && !model::valid_name(n)
            {
                out.push("create: invalid name".into());
            }
        }
        Transition::RevertTo { target, flags } | Transition::Delete { target, flags } => {
            let known = if matches!(op, Transition::RevertTo { .. }) {
                7
            } else {
                63
            };
            if flags & !known != 0 {
                out.push("flags: unknown bit".into());
            } else if (flags & known).count_ones() > 1 {
                out.push("flags: two or more at once".into());
            }
            out.extend(target_label(target).map(str::to_string));
        }
        Transition::Redefine(r) => {
            let replace = before.by_uuid(&r.uuid).is_some_and(|s| s.name == r.name);
            let orphan = before.orphans.iter().any(|(u, _)| *u == r.uuid);
            out.push(match (replace, orphan) {
                (true, _) => "redefine: existing snapshot".into(),
                (false, true) => "redefine: data no metadata knows".into(),
                (false, false) => "redefine: new snapshot".into(),
            });
            out.push(match &r.parent {
                None => "redefine: root".into(),
                Some(Target::Uuid(_)) => "redefine: parent by uuid".into(),
                Some(Target::Name(_)) => "redefine: parent by name".into(),
            });
            if r.flags & model::create_flag::CURRENT != 0 {
                out.push("redefine: CURRENT".into());
            }
            if r.created.is_some() {
                out.push("redefine: creationdate".into());
            }
            // The rule of §7.3 the model applied.
            let rule = match &after.last {
                Expected::Ok if replace => Some("redefine: replaced description, date, state"),
                Expected::Ok if after.current != before.current => {
                    Some("redefine: adopted, current moved")
                }
                Expected::Ok => Some("redefine: adopted"),
                Expected::Err(c, _) if *c == code::SNAPSHOT_EXISTS => Some("redefine: clash"),
                Expected::Err(c, _) if *c == code::NO_SNAPSHOT => Some("redefine: missing parent"),
                Expected::Err(c, _) if *c == code::OPERATION_INVALID && !before.adopts => {
                    Some("redefine: refused, the backend cannot adopt")
                }
                Expected::Err(c, _) if *c == code::OPERATION_INVALID && !before.metadata_only => {
                    Some("redefine: adoption refused (no such data on that parent)")
                }
                _ => None,
            };
            out.extend(rule.map(str::to_string));
        }
        Transition::Rename { target, new_name } => {
            if !model::valid_name(new_name) {
                out.push("rename: invalid new name".into());
            }
            out.extend(target_label(target).map(str::to_string));
        }
        _ => {}
    }
    match &after.last {
        Expected::Ok => out.push("expected: success".into()),
        Expected::Err(c, _) => out.push(format!("expected: {}", code::name(*c))),
    }
    if before.pending.is_some() && after.pending.is_none() {
        out.push(format!("roll-forward: by {}", t.label()));
    }
    if before.pending.is_some()
        && after.pending.is_some()
        && after.last == Expected::Err(code::INCOMPLETE, Vec::new())
    {
        out.push("roll-forward: failed again".into());
    }
    if before.caps != [7; 7] {
        out.push("run: restricted capabilities".into());
    }
    if durable {
        out.push("run: SQLite store".into());
    }
    out
}

/// Runs one sequence from an initial state; the error says which step broke what.
pub fn run_sequence_from(
    subject: Subject,
    initial: RefState,
    transitions: &[Transition],
    config: &Config,
    coverage: Option<&Mutex<Coverage>>,
    seen: Option<&AtomicUsize>,
) -> Result<usize, String> {
    let tally = Tally {
        coverage,
        seen,
        generated: false,
    };
    run_sequence_inner(subject, None, initial, transitions, config, &tally)
}

/// What a run counts, and whether its sequence came from the generator.
#[derive(Clone, Copy)]
struct Tally<'a> {
    coverage: Option<&'a Mutex<Coverage>>,
    seen: Option<&'a AtomicUsize>,
    /// Generated: a step whose generator rule fails on the run's model is not run.
    generated: bool,
}

/// Runs one sequence; with a prelude ([`crate::transition::Reach::prelude`]) the subject
/// holds its data, with `digests` measured while it was made, and the kit adopts it first.
fn run_sequence_inner(
    subject: Subject,
    digests: Option<Vec<(Token, String)>>,
    initial: RefState,
    transitions: &[Transition],
    config: &Config,
    tally: &Tally<'_>,
) -> Result<usize, String> {
    let Tally {
        coverage,
        seen,
        generated,
    } = *tally;
    let mut state = initial;
    let prelude = config.reach.prelude.clone();
    if let Some(p) = &prelude {
        // The sequence was generated from the tree adopted: start from it unknown.
        let base = RefModel {
            caps: state.model.caps,
            metadata_only: state.model.metadata_only,
            ..RefModel::default()
        };
        state.model = p.orphan_model(base);
    }
    let mut sys = System::new(subject, &mut state, config, generated)?;
    let mut run = 0;
    if let Some(p) = &prelude {
        let digests = digests.ok_or("expected the digests of the prelude's contents")?;
        sys.learn_prelude(&state.model, digests)?;
        sys.check(&state.model)
            .map_err(|e| format!("before the prelude's import: {e}"))?;
        for (i, t) in p.import().into_iter().map(Transition::Redefine).enumerate() {
            let t = &t;
            let before = state.model.clone();
            apply_model(&mut state.model, t);
            if state.model.last != Expected::Ok {
                return Err(format!(
                    "expected the model to adopt the prelude's step {} ({t:?}), it expects {:?}",
                    i + 1,
                    state.model.last
                ));
            }
            if let Some(c) = coverage {
                let mut c = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                for l in labels(t, &before, &state.model, state.durable) {
                    *c.entry(format!("prelude {l}")).or_default() += 1;
                }
            }
            sys.apply(t, &before, &state.model)
                .map_err(|e| format!("prelude import step {} ({t:?}): {e}", i + 1))?;
            run += 1;
        }
        if !state.model.orphans.is_empty() {
            return Err(format!(
                "expected the prelude adopted whole, data of {:?} is left",
                state.model.orphans
            ));
        }
    } else {
        sys.check(&state.model)
            .map_err(|e| format!("before the first step: {e}"))?;
    }
    for (i, t) in transitions.iter().enumerate() {
        // The shrinker drops the steps after the one that failed.
        if let Some(seen) = seen {
            seen.fetch_add(1, Ordering::SeqCst);
        }
        // The generator's model did not know the backend (its capabilities, whether it
        // adopts), so a generated step may break a rule the generator keeps (an import
        // first, invariant 7 after a REDEFINE) once the backend refused an earlier step
        // the generator took as done: such a step is not run.
        if generated && !RefMachine::preconditions(&state, t) {
            if let Some(c) = coverage {
                let mut c = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                *c.entry("skipped: generator's rule fails on the backend".into())
                    .or_default() += 1;
            }
            continue;
        }
        let before = state.model.clone();
        apply_model(&mut state.model, t);
        if let Some(c) = coverage {
            let mut c = c.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for l in labels(t, &before, &state.model, state.durable) {
                *c.entry(l).or_default() += 1;
            }
        }
        sys.apply(t, &before, &state.model)
            .map_err(|e| format!("step {} ({t:?}): {e}", i + 1))?;
        if !(config.tree_only && matches!(t, Transition::Write { .. })) {
            run += 1;
        }
    }
    Ok(run)
}

/// Runs one sequence on a fresh in-memory domain with the backend's declared
/// capabilities.
pub fn run_sequence(
    subject: Subject,
    transitions: &[Transition],
    seen: Option<&AtomicUsize>,
) -> Result<usize, String> {
    run_sequence_with(subject, transitions, seen, false)
}

/// As [`run_sequence`]; `tree_only` as in [`Config::tree_only`]. Returns the steps run on
/// the system (guest writes, skipped at tree level, not counted).
pub fn run_sequence_with(
    subject: Subject,
    transitions: &[Transition],
    seen: Option<&AtomicUsize>,
    tree_only: bool,
) -> Result<usize, String> {
    let config = Config {
        tree_only,
        ..Config::from_env(1)
    };
    run_sequence_from(
        subject,
        RefState::default(),
        transitions,
        &config,
        None,
        seen,
    )
}

/// Runs `config.cases` random sequences against fresh subjects from `factory`. On failure
/// the error holds the shrunk sequence, one step per line, and what broke.
pub fn run(
    config: &Config,
    factory: &dyn Fn() -> Result<Subject, String>,
) -> Result<Report, String> {
    if config.reach.prelude.is_some() {
        return Err("a run with a prelude needs its digests: use run_adopted".into());
    }
    run_any(config, &|| factory().map(|s| (s, None)))
}

/// As [`run`], for a run with a prelude ([`crate::transition::Reach::prelude`]): `factory`
/// makes each fresh domain's data with the other tool and measures its contents; every
/// sequence adopts it first.
pub fn run_adopted(
    config: &Config,
    factory: &dyn Fn() -> Result<Adopted, String>,
) -> Result<Report, String> {
    let prelude = config
        .reach
        .prelude
        .as_ref()
        .ok_or("run_adopted needs Reach::prelude")?;
    prelude.validate()?;
    run_any(config, &|| factory().map(|a| (a.subject, Some(a.digests))))
}

type Made = (Subject, Option<Vec<(Token, String)>>);

fn run_any(config: &Config, factory: &dyn Fn() -> Result<Made, String>) -> Result<Report, String> {
    set_tuning(config.tuning.clone());
    set_reach(config.reach.clone());
    let mut runner = TestRunner::new(proptest::test_runner::Config {
        cases: config.cases,
        failure_persistence: None,
        max_shrink_iters: config.max_shrink_iters,
        ..proptest::test_runner::Config::default()
    });
    let steps = AtomicUsize::new(0);
    let cases = AtomicUsize::new(0);
    let coverage = Mutex::new(Coverage::new());
    let strategy = RefMachine::sequential_strategy(1..=config.max_steps);
    let result = runner.run(
        &strategy,
        |(initial, transitions, seen): (RefState, Vec<Transition>, Option<Arc<AtomicUsize>>)| {
            let (subject, digests) = factory().map_err(TestCaseError::fail)?;
            let n = run_sequence_inner(
                subject,
                digests,
                initial,
                &transitions,
                config,
                &Tally {
                    coverage: Some(&coverage),
                    seen: seen.as_deref(),
                    generated: true,
                },
            )
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
            coverage: coverage
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        }),
        Err(TestError::Fail(reason, (initial, transitions, _))) => {
            let mut text = format!(
                "conformance failure: {reason}\nrun: capabilities {:?}, {}\n",
                initial.model.caps,
                if initial.durable {
                    "SQLite store"
                } else {
                    "in-memory store"
                },
            );
            if let Some(p) = &config.reach.prelude {
                text.push_str("prelude made outside snaptree, adopted first:\n");
                for r in p.import() {
                    text.push_str(&format!("      {:?}\n", Transition::Redefine(r)));
                }
            }
            text.push_str(&format!("shrunk sequence ({} steps):\n", transitions.len()));
            for (i, t) in transitions.iter().enumerate() {
                text.push_str(&format!("  {:>2}. {t:?}\n", i + 1));
            }
            Err(text)
        }
        Err(TestError::Abort(reason)) => Err(format!("conformance run aborted: {reason}")),
    }
}
