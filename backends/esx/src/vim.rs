//! The vSphere calls the backend makes, typed: finding the VM, reading its properties,
//! starting snapshot and power tasks and waiting for them.
//!
//! Properties are read with `RetrievePropertiesEx`, never `Fetch`: vcsim crashes on a
//! `Fetch` of an unset property (a VM without snapshots has no `snapshot`), where the
//! property collector simply leaves it out.

use std::thread::sleep;
use std::time::Duration;

use snaptree_engine::{PowerState, Progress};
use snaptree_sdk::{PluginError, PluginResult};

use crate::config::VmSelector;
use crate::soap::{CallError, Fault, MoRef, Session};
use crate::tree::SnapshotInfo;
use crate::xml::{Element, SoapElement, escape};

/// The VM a domain is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vm {
    /// Its reference.
    pub moref: MoRef,
    /// Its inventory name, for messages.
    pub name: String,
}

impl std::fmt::Display for Vm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VM '{}' ({})", self.name, self.moref.value)
    }
}

/// vSphere's power states (`VirtualMachinePowerState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmPower {
    /// `poweredOn`.
    On,
    /// `poweredOff`.
    Off,
    /// `suspended`: the guest's memory saved to disk.
    Suspended,
}

impl VmPower {
    /// snaptree's state for it, as libvirt's ESX driver maps them (suspended is paused).
    pub fn to_snaptree(self) -> PowerState {
        match self {
            VmPower::On => PowerState::Running,
            VmPower::Off => PowerState::Shutoff,
            VmPower::Suspended => PowerState::Paused,
        }
    }

    fn parse(text: &str) -> Option<VmPower> {
        match text.trim() {
            "poweredOn" => Some(VmPower::On),
            "poweredOff" => Some(VmPower::Off),
            "suspended" => Some(VmPower::Suspended),
            _ => None,
        }
    }
}

/// Reads properties of one object: `(name, value)` pairs of the set ones. None when the
/// object does not exist.
pub fn retrieve(
    session: &mut Session,
    obj: &MoRef,
    paths: &[&str],
) -> Result<Option<Vec<(String, Element)>>, CallError> {
    let path_set: String = paths
        .iter()
        .map(|p| format!("<pathSet>{}</pathSet>", escape(p)))
        .collect();
    let spec = format!(
        "<specSet><propSet><type>{}</type>{path_set}</propSet><objectSet>{}<skip>false</skip></objectSet></specSet><options/>",
        escape(&obj.kind),
        obj.to_xml("obj")
    );
    let pc = session.content().property_collector.clone();
    match session.call("RetrievePropertiesEx", &pc, &spec) {
        Ok(reply) => {
            let objects = reply
                .child("returnval")
                .map(|rv| rv.children_named("objects").cloned().collect::<Vec<_>>())
                .unwrap_or_default();
            objects.first().map(prop_set).transpose()
        }
        Err(CallError::Fault(f)) if f.kind == "ManagedObjectNotFound" => Ok(None),
        Err(e) => Err(e),
    }
}

/// The `propSet` of an `objects` element as `(name, val)` pairs. A property the server
/// could not read (`missingSet`: no permission, say) is an error, never an absent value:
/// an unreadable `snapshot` must not look like a VM without snapshots.
fn prop_set(objects: &Element) -> Result<Vec<(String, Element)>, CallError> {
    if let Some(missing) = objects.child("missingSet") {
        let path = missing.child_text("path").unwrap_or("?");
        let fault = missing.child("fault");
        let kind = fault
            .and_then(|f| f.child("fault"))
            .and_then(Element::xsi_type)
            .unwrap_or("unknown fault");
        let message = fault
            .and_then(|f| f.child_text("localizedMessage"))
            .unwrap_or_default();
        return Err(CallError::Fault(Fault {
            kind: kind.to_string(),
            message: format!("cannot read property '{path}' {message}")
                .trim_end()
                .to_string(),
        }));
    }
    Ok(objects
        .children_named("propSet")
        .filter_map(|p| Some((p.child_text("name")?.to_string(), p.child("val")?.clone())))
        .collect())
}

/// Finds the VM the domain names. By moid: that object, which must exist (and carry the
/// name, when one is given too). By name: every VM in the inventory, through a container
/// view; exactly one must have the name.
pub fn find_vm(session: &mut Session, selector: &VmSelector) -> PluginResult<Vm> {
    let where_ = session.endpoint().to_string();
    if let Some(moid) = &selector.moid {
        let moref = MoRef::new("VirtualMachine", moid.clone());
        let props = retrieve(session, &moref, &["name"])
            .map_err(|e| e.into_plugin("RetrievePropertiesEx"))?;
        let name = props
            .as_ref()
            .and_then(|p| p.iter().find(|(n, _)| n == "name"))
            .map(|(_, v)| v.text.clone())
            .ok_or_else(|| {
                PluginError::backend(format!(
                    "{where_} has no virtual machine with moid '{moid}'"
                ))
            })?;
        if let Some(want) = &selector.name
            && *want != name
        {
            return Err(PluginError::backend(format!(
                "{where_}: virtual machine {moid} is named '{name}', not '{want}' as the domain says"
            )));
        }
        return Ok(Vm { moref, name });
    }
    let Some(name) = &selector.name else {
        return Err(PluginError::invalid_arg("the domain names no VM"));
    };
    let matches: Vec<MoRef> = all_vm_names(session)?
        .into_iter()
        .filter(|(_, n)| n == name)
        .map(|(m, _)| m)
        .collect();
    match matches.as_slice() {
        [one] => Ok(Vm {
            moref: one.clone(),
            name: name.clone(),
        }),
        [] => Err(PluginError::backend(format!(
            "{where_} has no virtual machine named '{name}'"
        ))),
        many => Err(PluginError::backend(format!(
            "{where_} has {} virtual machines named '{name}' ({}); name one with <esx moid='…'>",
            many.len(),
            many.iter()
                .map(|m| m.value.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Every VM's reference and name, read through a container view of the whole inventory.
fn all_vm_names(session: &mut Session) -> PluginResult<Vec<(MoRef, String)>> {
    let content = session.content().clone();
    let params = format!(
        "{}<type>VirtualMachine</type><recursive>true</recursive>",
        content.root_folder.to_xml("container")
    );
    let reply = session.invoke("CreateContainerView", &content.view_manager, &params)?;
    let view = reply
        .child("returnval")
        .and_then(MoRef::from_node)
        .ok_or_else(|| PluginError::backend("CreateContainerView returned no view"))?;
    let spec = format!(
        "<specSet><propSet><type>VirtualMachine</type><pathSet>name</pathSet></propSet><objectSet>{}<skip>true</skip><selectSet xsi:type=\"TraversalSpec\"><name>view</name><type>ContainerView</type><path>view</path><skip>false</skip></selectSet></objectSet></specSet><options/>",
        view.to_xml("obj")
    );
    let result = retrieve_all(session, &spec);
    // The view lives in the session until destroyed; a failure here only leaks it until logout.
    let _ = session.call("DestroyView", &view, "");
    let objects = result?;
    Ok(objects
        .iter()
        .filter_map(|o| {
            let moref = o.child("obj").and_then(MoRef::from_node)?;
            // A VM whose name this user may not read is not one the domain can mean.
            let name = prop_set(o)
                .ok()?
                .into_iter()
                .find(|(n, _)| n == "name")?
                .1
                .text;
            Some((moref, name))
        })
        .collect())
}

/// Runs `RetrievePropertiesEx` and follows its continuation tokens; returns every `objects`.
fn retrieve_all(session: &mut Session, spec: &str) -> PluginResult<Vec<Element>> {
    let pc = session.content().property_collector.clone();
    let mut reply = session.invoke("RetrievePropertiesEx", &pc, spec)?;
    let mut objects = Vec::new();
    loop {
        let Some(rv) = reply.child("returnval") else {
            return Ok(objects);
        };
        objects.extend(rv.children_named("objects").cloned());
        let Some(token) = rv.child_text("token").map(str::to_string) else {
            return Ok(objects);
        };
        reply = session.invoke(
            "ContinueRetrievePropertiesEx",
            &pc,
            &format!("<token>{}</token>", escape(&token)),
        )?;
    }
}

/// The VM's power state and snapshot tree, in one call.
pub fn vm_state(session: &mut Session, vm: &Vm) -> PluginResult<(VmPower, SnapshotInfo)> {
    let props = retrieve(session, &vm.moref, &["runtime.powerState", "snapshot"])
        .map_err(|e| e.into_plugin("RetrievePropertiesEx"))?
        .ok_or_else(|| PluginError::backend(format!("{vm} no longer exists")))?;
    let mut power = None;
    let mut info = SnapshotInfo::default();
    for (name, val) in &props {
        match name.as_str() {
            "runtime.powerState" => power = VmPower::parse(&val.text),
            "snapshot" => {
                info = SnapshotInfo::parse(val)
                    .map_err(|e| PluginError::backend(format!("{vm}: {e}")))?
            }
            _ => {}
        }
    }
    let power =
        power.ok_or_else(|| PluginError::backend(format!("{vm} reports no known power state")))?;
    Ok((power, info))
}

/// The VM's power state alone (the engine asks before every operation; the snapshot tree
/// need not travel each time).
pub fn power(session: &mut Session, vm: &Vm) -> PluginResult<VmPower> {
    let props = retrieve(session, &vm.moref, &["runtime.powerState"])
        .map_err(|e| e.into_plugin("RetrievePropertiesEx"))?
        .ok_or_else(|| PluginError::backend(format!("{vm} no longer exists")))?;
    props
        .iter()
        .find(|(n, _)| n == "runtime.powerState")
        .and_then(|(_, v)| VmPower::parse(&v.text))
        .ok_or_else(|| PluginError::backend(format!("{vm} reports no known power state")))
}

/// Starts a task: calls a `…_Task` method and returns the task's reference.
pub fn start_task(
    session: &mut Session,
    method: &str,
    this: &MoRef,
    params: &str,
) -> PluginResult<MoRef> {
    let reply = session.invoke(method, this, params)?;
    reply
        .child("returnval")
        .and_then(MoRef::from_node)
        .ok_or_else(|| PluginError::backend(format!("{method} returned no task")))
}

/// Polls a task through the property collector until it ends, reporting its progress.
/// vcsim's snapshot tasks name the snapshot, not the VM, as their entity, so nothing here
/// relies on `info.entity`. Cancelling is not offered once a task runs: vSphere cannot
/// take most snapshot work back, and the engine re-runs an interrupted step anyway.
pub fn wait_task(
    session: &mut Session,
    task: &MoRef,
    what: &str,
    progress: &mut dyn Progress,
) -> PluginResult<()> {
    let mut pause = Duration::from_millis(10);
    loop {
        let props = retrieve(
            session,
            task,
            &["info.state", "info.error", "info.progress"],
        )
        .map_err(|e| {
            PluginError::backend(format!(
                "cannot follow the vSphere task of {what} ({}): {}",
                task.value,
                e.describe("RetrievePropertiesEx")
            ))
        })?
        .ok_or_else(|| {
            PluginError::backend(format!(
                "the vSphere task of {what} ({}) vanished before it ended",
                task.value
            ))
        })?;
        let get = |n: &str| props.iter().find(|(name, _)| name == n).map(|(_, v)| v);
        match get("info.state").map(|v| v.text.trim()) {
            Some("success") => {
                progress.report(1.0);
                return Ok(());
            }
            Some("error") => {
                let (kind, message) = get("info.error")
                    .map(task_fault)
                    .unwrap_or_else(|| ("unknown fault".into(), String::new()));
                return Err(PluginError::backend(
                    if message.is_empty() || message.ends_with(&kind) {
                        // vcsim's message is only the Go type name of the fault.
                        format!("vSphere could not {what}: {kind}")
                    } else {
                        format!("vSphere could not {what}: {message} ({kind})")
                    },
                ));
            }
            Some("queued" | "running") => {
                if let Some(p) =
                    get("info.progress").and_then(|v| v.text.trim().parse::<f64>().ok())
                {
                    // The return value (cancel) is ignored: see above.
                    progress.report((p / 100.0).clamp(0.0, 0.99));
                }
            }
            other => {
                return Err(PluginError::backend(format!(
                    "the vSphere task of {what} ({}) is in an unknown state {other:?}",
                    task.value
                )));
            }
        }
        sleep(pause);
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

/// A task's `LocalizedMethodFault`: the fault type and the localized message.
fn task_fault(error: &Element) -> (String, String) {
    let fault = error.child("fault");
    let kind = fault
        .and_then(|f| {
            f.xsi_type()
                .map(str::to_string)
                .or_else(|| Some(f.name.clone()))
                .filter(|k| k != "fault")
        })
        .unwrap_or_else(|| "unknown fault".into());
    let message = error
        .child_text("localizedMessage")
        .unwrap_or_default()
        .trim()
        .to_string();
    (kind, message)
}

/// Runs a task to its end.
pub fn run_task(
    session: &mut Session,
    method: &str,
    this: &MoRef,
    params: &str,
    what: &str,
    progress: &mut dyn Progress,
) -> PluginResult<()> {
    let task = start_task(session, method, this, params)?;
    wait_task(session, &task, what, progress)
}

/// Creates a snapshot of the VM under its current snapshot.
pub fn create_snapshot(
    session: &mut Session,
    vm: &Vm,
    name: &str,
    description: &str,
    memory: bool,
    quiesce: bool,
    progress: &mut dyn Progress,
) -> PluginResult<()> {
    let params = format!(
        "<name>{}</name><description>{}</description><memory>{memory}</memory><quiesce>{quiesce}</quiesce>",
        escape(name),
        escape(description)
    );
    run_task(
        session,
        "CreateSnapshot_Task",
        &vm.moref,
        &params,
        &format!("create snapshot {name} of {vm}"),
        progress,
    )
}

/// Reverts the VM to a snapshot; `suppress_power_on` keeps it from powering on.
pub fn revert_to_snapshot(
    session: &mut Session,
    vm: &Vm,
    snapshot: &MoRef,
    name: &str,
    suppress_power_on: bool,
    progress: &mut dyn Progress,
) -> PluginResult<()> {
    let params = format!("<suppressPowerOn>{suppress_power_on}</suppressPowerOn>");
    run_task(
        session,
        "RevertToSnapshot_Task",
        snapshot,
        &params,
        &format!("revert {vm} to snapshot {name}"),
        progress,
    )
}

/// Removes one snapshot, keeping its children (vSphere re-parents them and consolidates
/// the snapshot's data into whatever depended on it).
pub fn remove_snapshot(
    session: &mut Session,
    vm: &Vm,
    snapshot: &MoRef,
    name: &str,
    progress: &mut dyn Progress,
) -> PluginResult<()> {
    let params = "<removeChildren>false</removeChildren><consolidate>true</consolidate>";
    run_task(
        session,
        "RemoveSnapshot_Task",
        snapshot,
        params,
        &format!("remove snapshot {name} of {vm}"),
        progress,
    )
}

/// Changes the VM's power state with `PowerOnVM_Task`, `PowerOffVM_Task` or `SuspendVM_Task`.
pub fn set_power(
    session: &mut Session,
    vm: &Vm,
    to: VmPower,
    progress: &mut dyn Progress,
) -> PluginResult<()> {
    let (method, verb) = match to {
        VmPower::On => ("PowerOnVM_Task", "power on"),
        VmPower::Off => ("PowerOffVM_Task", "power off"),
        VmPower::Suspended => ("SuspendVM_Task", "suspend"),
    };
    run_task(
        session,
        method,
        &vm.moref,
        "",
        &format!("{verb} {vm}"),
        progress,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml;

    #[test]
    fn an_unreadable_property_is_an_error_not_an_absent_value() {
        let objects = xml::parse(
            r#"<objects><obj type="VirtualMachine">vm-1</obj><missingSet><path>snapshot</path><fault><fault xmlns:x="i" x:type="NoPermission"/><localizedMessage>Permission to perform this operation was denied.</localizedMessage></fault></missingSet></objects>"#,
        )
        .unwrap();
        let e = prop_set(&objects).unwrap_err();
        assert_eq!(
            e.describe("RetrievePropertiesEx"),
            "vSphere refused RetrievePropertiesEx: cannot read property 'snapshot' Permission to perform this operation was denied. (NoPermission)"
        );
    }

    #[test]
    fn a_task_fault_gives_its_type_and_message() {
        let error = xml::parse(
            r#"<val><fault xmlns:x="i" x:type="InvalidPowerState"><requestedState>poweredOn</requestedState></fault><localizedMessage>*types.InvalidPowerState</localizedMessage></val>"#,
        )
        .unwrap();
        assert_eq!(
            task_fault(&error),
            (
                "InvalidPowerState".to_string(),
                "*types.InvalidPowerState".to_string()
            )
        );
    }
}
