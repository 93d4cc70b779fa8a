//! The reference model: SEMANTICS.md §2 written the most obvious way, with a `Vec` of
//! snapshots and abstract content tokens. Deliberately naive: no petgraph, no indexes,
//! recursion and linear scans everywhere, so that it is easy to believe.

use snaptree_engine::{DeleteMode, ErrorCode, PowerState, Uuid, flags};

/// A content value. Contents are compared by token; the system under test maps each token
/// to the digest it observed when the content was made.
pub type Token = u64;

/// One snapshot in the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefSnapshot {
    /// Its uuid.
    pub uuid: Uuid,
    /// Its name.
    pub name: String,
    /// Its parent.
    pub parent: Option<Uuid>,
    /// Its recorded power state.
    pub state: PowerState,
    /// Its content.
    pub content: Token,
}

/// What the model expects an operation to return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expected {
    /// Success.
    Ok,
    /// This error code; for `WOULD_DISCARD`, also exactly these victims (sorted).
    Err(ErrorCode, Vec<String>),
}

/// The whole modelled domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefModel {
    /// Snapshots in creation order.
    pub snapshots: Vec<RefSnapshot>,
    /// The current snapshot.
    pub current: Option<Uuid>,
    /// The live content.
    pub live: Token,
    /// The live power state.
    pub live_state: PowerState,
    /// Retired uuids.
    pub retired: Vec<Uuid>,
    /// The next content token to hand out.
    pub next_token: Token,
    /// What the last operation was expected to return.
    pub last: Expected,
}

impl Default for RefModel {
    fn default() -> Self {
        RefModel {
            snapshots: Vec::new(),
            current: None,
            live: 0,
            live_state: PowerState::Shutoff,
            retired: Vec::new(),
            next_token: 1,
            last: Expected::Ok,
        }
    }
}

fn err(code: ErrorCode) -> Expected {
    Expected::Err(code, Vec::new())
}

fn valid_name(name: &str) -> bool {
    snaptree_engine::name::validate_name("snapshot", name).is_ok()
}

impl RefModel {
    /// The snapshot with this name.
    pub fn find(&self, name: &str) -> Option<&RefSnapshot> {
        self.snapshots.iter().find(|s| s.name == name)
    }

    fn get(&self, uuid: Uuid) -> &RefSnapshot {
        self.snapshots
            .iter()
            .find(|s| s.uuid == uuid)
            .expect("model snapshot exists")
    }

    fn get_mut(&mut self, uuid: Uuid) -> &mut RefSnapshot {
        self.snapshots
            .iter_mut()
            .find(|s| s.uuid == uuid)
            .expect("model snapshot exists")
    }

    fn children(&self, uuid: Option<Uuid>) -> Vec<Uuid> {
        self.snapshots
            .iter()
            .filter(|s| s.parent == uuid)
            .map(|s| s.uuid)
            .collect()
    }

    fn descendants(&self, uuid: Uuid) -> Vec<Uuid> {
        let mut out = Vec::new();
        for c in self.children(Some(uuid)) {
            out.push(c);
            out.extend(self.descendants(c));
        }
        out
    }

    fn names(&self, uuids: &[Uuid]) -> Vec<String> {
        let mut v: Vec<String> = uuids.iter().map(|u| self.get(*u).name.clone()).collect();
        v.sort();
        v
    }

    fn remove_all(&mut self, uuids: &[Uuid]) {
        self.snapshots.retain(|s| !uuids.contains(&s.uuid));
    }

    /// A create named `name` with uuid `uuid`.
    pub fn create(&mut self, name: &str, uuid: Uuid) {
        self.last = if !valid_name(name) {
            err(ErrorCode::XmlError)
        } else if self.find(name).is_some()
            || self.snapshots.iter().any(|s| s.uuid == uuid)
            || self.retired.contains(&uuid)
        {
            err(ErrorCode::SnapshotExists)
        } else {
            self.snapshots.push(RefSnapshot {
                uuid,
                name: name.to_string(),
                parent: self.current,
                state: self.live_state,
                content: self.live,
            });
            self.current = Some(uuid);
            Expected::Ok
        };
    }

    /// The guest writes: the live content becomes new.
    pub fn write(&mut self) {
        self.live = self.next_token;
        self.next_token += 1;
        self.last = Expected::Ok;
    }

    /// A revert, with a revert flag word.
    pub fn revert(&mut self, name: &str, revert_flags: u32) {
        let Ok(force) = flags::revert_state(revert_flags) else {
            self.last = err(ErrorCode::InvalidArg);
            return;
        };
        let Some(s) = self.find(name).cloned() else {
            self.last = err(ErrorCode::NoSnapshot);
            return;
        };
        self.live = s.content;
        self.current = Some(s.uuid);
        self.live_state = force.unwrap_or(s.state);
        self.last = Expected::Ok;
    }

    /// A rename.
    pub fn rename(&mut self, name: &str, new_name: &str) {
        let Some(s) = self.find(name).cloned() else {
            self.last = err(ErrorCode::NoSnapshot);
            return;
        };
        self.last = if !valid_name(new_name) {
            err(ErrorCode::InvalidArg)
        } else if self.find(new_name).is_some_and(|o| o.uuid != s.uuid) {
            err(ErrorCode::SnapshotExists)
        } else {
            self.get_mut(s.uuid).name = new_name.to_string();
            Expected::Ok
        };
    }

    /// A delete with a delete flag word.
    pub fn delete(&mut self, name: &str, delete_flags: u32) {
        let Ok(mode) = flags::delete_mode(delete_flags) else {
            self.last = err(ErrorCode::InvalidArg);
            return;
        };
        let Some(s) = self.find(name).cloned() else {
            self.last = err(ErrorCode::NoSnapshot);
            return;
        };
        let p = s.parent;
        let children = self.children(Some(s.uuid));
        let current_in = |m: &RefModel, set: &[Uuid]| m.current.is_some_and(|c| set.contains(&c));
        match mode {
            DeleteMode::Retire | DeleteMode::Consolidate => {
                for c in children {
                    self.get_mut(c).parent = p;
                }
                if current_in(self, &[s.uuid]) {
                    self.current = p;
                }
                self.remove_all(&[s.uuid]);
                if mode == DeleteMode::Retire {
                    self.retired.push(s.uuid);
                }
            }
            DeleteMode::Discard | DeleteMode::DiscardForce => {
                let below = self.descendants(s.uuid);
                if mode == DeleteMode::Discard && !below.is_empty() {
                    self.last = Expected::Err(ErrorCode::WouldDiscard, self.names(&below));
                    return;
                }
                let mut gone = below;
                gone.push(s.uuid);
                if current_in(self, &gone) {
                    self.current = p;
                }
                self.remove_all(&gone);
            }
            DeleteMode::Merge | DeleteMode::MergeForce => {
                let mut victims = Vec::new();
                for sib in self.children(p).into_iter().filter(|u| *u != s.uuid) {
                    victims.push(sib);
                    victims.extend(self.descendants(sib));
                }
                if mode == DeleteMode::Merge && !victims.is_empty() {
                    self.last = Expected::Err(ErrorCode::WouldDiscard, self.names(&victims));
                    return;
                }
                if current_in(self, &victims) || current_in(self, &[s.uuid]) {
                    self.current = p;
                }
                self.remove_all(&victims);
                if let Some(p) = p {
                    let parent = self.get_mut(p);
                    parent.content = s.content;
                    parent.state = s.state;
                }
                for c in children {
                    self.get_mut(c).parent = p;
                }
                self.remove_all(&[s.uuid]);
            }
            DeleteMode::ChildrenOnly => {
                let below = self.descendants(s.uuid);
                if current_in(self, &below) {
                    self.current = Some(s.uuid);
                }
                self.remove_all(&below);
            }
        }
        self.last = Expected::Ok;
    }

    /// A delete-all.
    pub fn delete_all(&mut self) {
        self.snapshots.clear();
        self.retired.clear();
        self.current = None;
        self.last = Expected::Ok;
    }
}
