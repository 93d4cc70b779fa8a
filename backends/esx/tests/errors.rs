//! Errors from vSphere, reported as sentences a user can act on: a missing VM, bad
//! credentials, an endpoint that is not vSphere, TLS trouble, and snapshots changed behind
//! the engine's back (removed, made by another tool, or the VM reverted elsewhere).

#[macro_use]
mod common;

use common::VcsimExt;
use snaptree_backend_esx::vim;
use snaptree_engine::{DeleteMode, Domain, ErrorCode, NoProgress, PowerState, Uuid};

fn open_err(xml: &str) -> snaptree_engine::Error {
    common::plugin()
        .open_domain(xml)
        .expect_err("open_domain must fail")
}

fn snap(d: &mut Domain, name: &str) -> Uuid {
    d.create_snapshot(&format!(
        "<domainsnapshot><name>{name}</name></domainsnapshot>"
    ))
    .unwrap()
}

#[test]
fn a_missing_vm_is_reported_when_the_domain_opens() {
    let sim = vcsim_or_skip!();
    let e = open_err(&sim.domain_xml("no-such-vm", ""));
    assert_eq!(e.code(), ErrorCode::Backend);
    let msg = e.full_message();
    assert!(
        msg.contains("has no virtual machine named 'no-such-vm'") && msg.contains(&sim.url),
        "{msg}"
    );

    let xml = format!(
        "<domain type='esx'><name>x</name><esx url='{}' moid='vm-99999' credentials='{}'/></domain>",
        sim.url,
        sim.credentials().display()
    );
    let msg = open_err(&xml).full_message();
    assert!(
        msg.contains("no virtual machine with moid 'vm-99999'"),
        "{msg}"
    );

    // By moid, and by moid and name that disagree.
    let vm = sim.vm().clone();
    let by_moid = xml.replace("vm-99999", &vm.moid);
    let mut d = Domain::ephemeral(
        &by_moid,
        Box::new(common::plugin().open_domain(&by_moid).unwrap()),
    )
    .unwrap();
    snap(&mut d, "s");
    d.check_agreement().unwrap();
    let other = &sim.vms[1].name;
    let both = by_moid.replace(" moid=", &format!(" vm='{other}' moid="));
    let msg = open_err(&both).full_message();
    assert!(
        msg.contains(&format!("is named '{}', not '{other}'", vm.name)),
        "{msg}"
    );
}

#[test]
fn bad_credentials_are_reported_without_the_password() {
    let sim = vcsim_or_skip!();
    let bad = sim.path("bad-credentials");
    common::write_private(
        &bad,
        &format!("user={}\npassword=wrong-hunter2\n", common::USER),
    );
    let xml = sim.domain_xml(&sim.vm().name, "").replace(
        &sim.credentials().display().to_string(),
        &bad.display().to_string(),
    );
    let e = open_err(&xml);
    assert_eq!(e.code(), ErrorCode::Backend);
    let msg = e.full_message();
    assert!(
        msg.contains(&format!(
            "refused the user name or password of user '{}'",
            common::USER
        )),
        "{msg}"
    );
    assert!(
        !msg.contains("hunter2") && !msg.contains(&sim.password),
        "{msg}"
    );

    let msg =
        open_err(&xml.replace(&format!(" credentials='{}'", bad.display()), "")).full_message();
    assert!(
        msg.contains("SNAPTREE_ESX_USER") || msg.contains("SNAPTREE_ESX_PASSWORD"),
        "{msg}"
    );
}

#[test]
fn an_endpoint_that_is_not_vsphere_is_named() {
    let sim = vcsim_or_skip!();
    let vm = sim.vm().name.clone();
    // vcsim's /about answers JSON, not SOAP.
    let about = sim.url.replace("/sdk", "/about");
    let msg = open_err(&sim.domain_xml(&vm, "").replace(&sim.url, &about)).full_message();
    assert!(msg.contains(&about) && msg.contains("vSphere"), "{msg}");
    // A closed port.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}/sdk", listener.local_addr().unwrap());
    drop(listener);
    let msg = open_err(&sim.domain_xml(&vm, "").replace(&sim.url, &closed)).full_message();
    assert!(
        msg.contains(&format!("cannot connect to {closed}")),
        "{msg}"
    );
}

#[test]
fn a_snapshot_removed_behind_the_engines_back_is_reported_and_can_be_cleaned_up() {
    let sim = vcsim_or_skip!();
    let vm = sim.vm().name.clone();
    let mut d = sim.domain(&vm);
    let s1 = snap(&mut d, "s1");
    let s2 = snap(&mut d, "s2");

    // Another vSphere client removes s1 (vSphere re-parents s2).
    let mut direct = sim.direct(&vm);
    let vmref = direct.vm().clone();
    let (_, info) = vim::vm_state(direct.session(), &vmref).unwrap();
    let s1_ref = info.find(&s1).unwrap().moref.clone();
    let params = "<removeChildren>false</removeChildren>";
    vim::run_task(
        direct.session(),
        "RemoveSnapshot_Task",
        &s1_ref,
        params,
        "remove s1",
        &mut NoProgress,
    )
    .unwrap();

    let e = d.check_agreement().unwrap_err();
    assert_eq!(e.code(), ErrorCode::Backend);
    let msg = e.full_message();
    assert!(
        msg.contains("disagree") && msg.contains("'s1'") && msg.contains("no physical data"),
        "{msg}"
    );

    let e = d.revert(&s1, None, &mut NoProgress).unwrap_err();
    let msg = e.full_message();
    assert!(
        msg.contains(&format!(
            "has no vSphere snapshot {s1}: it was removed outside snaptree"
        )),
        "{msg}"
    );

    // Deleting it in the engine finds nothing left to remove and brings the trees back together.
    d.delete(&s1, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap();
    d.check_agreement().unwrap();
    assert_eq!(d.tree().unwrap().parent(&s2).map(|p| p.uuid), None);
}

#[test]
fn a_snapshot_made_behind_the_engines_back_is_reported() {
    let sim = vcsim_or_skip!();
    let vm = sim.vm().name.clone();
    let mut d = sim.domain(&vm);
    snap(&mut d, "s1");
    let mut direct = sim.direct(&vm);
    let vmref = direct.vm().clone();
    vim::create_snapshot(
        direct.session(),
        &vmref,
        "before upgrade",
        "",
        false,
        false,
        &mut NoProgress,
    )
    .unwrap();
    let msg = d.check_agreement().unwrap_err().full_message();
    assert!(
        msg.contains("'before upgrade'") && msg.contains("not made by snaptree"),
        "{msg}"
    );
}

#[test]
fn create_refuses_when_vsphere_is_at_another_snapshot() {
    let sim = vcsim_or_skip!();
    let vm = sim.vm().name.clone();
    let mut d = sim.domain(&vm);
    let s1 = snap(&mut d, "s1");
    let s2 = snap(&mut d, "s2");
    // Another client reverts the VM to s1.
    let mut direct = sim.direct(&vm);
    let vmref = direct.vm().clone();
    let (_, info) = vim::vm_state(direct.session(), &vmref).unwrap();
    let s1_ref = info.find(&s1).unwrap().moref.clone();
    vim::revert_to_snapshot(
        direct.session(),
        &vmref,
        &s1_ref,
        "s1",
        false,
        &mut NoProgress,
    )
    .unwrap();

    let e = d
        .create_snapshot("<domainsnapshot><name>s3</name></domainsnapshot>")
        .unwrap_err();
    let msg = e.full_message();
    assert!(
        msg.contains(&format!("is not at snapshot {s2}")) && msg.contains(&format!("'{s1}'")),
        "{msg}"
    );
    assert_eq!(d.tree().unwrap().len(), 2, "nothing was created");
    // A revert through the engine puts both back in step.
    d.revert(&s2, Some(PowerState::Running), &mut NoProgress)
        .unwrap();
    snap(&mut d, "s3");
    d.check_agreement().unwrap();
}

#[test]
fn https_with_the_servers_certificate_or_without_verification() {
    let sim = vcsim_or_skip!("-tls");
    assert!(sim.url.starts_with("https://"), "{}", sim.url);
    let vm = sim.vm().name.clone();
    let cert = sim.cert.clone().expect("vcsim wrote its certificate");

    // The simulator's certificate is self-signed: unknown to the system's store.
    let msg = open_err(&sim.domain_xml(&vm, "")).full_message();
    assert!(msg.contains("TLS") && msg.contains("certificate"), "{msg}");

    for extra in [
        format!("cacert='{}'", cert.display()),
        "verify='no'".to_string(),
    ] {
        let xml = sim.domain_xml(&vm, &extra);
        let mut d =
            Domain::ephemeral(&xml, Box::new(common::plugin().open_domain(&xml).unwrap())).unwrap();
        let s = snap(&mut d, &format!("over-tls-{}", extra.len()));
        d.check_agreement().unwrap();
        d.delete(&s, DeleteMode::Discard, &mut NoProgress).unwrap();
        d.check_agreement().unwrap();
    }
}

#[test]
fn a_standalone_esx_host_works_like_a_vcenter() {
    let sim = vcsim_or_skip!("-esx");
    let vm = sim.vm().name.clone();
    let mut d = sim.domain(&vm);
    let a = snap(&mut d, "a");
    let b = snap(&mut d, "b");
    d.revert(&a, None, &mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    d.delete(&b, DeleteMode::Consolidate, &mut NoProgress)
        .unwrap();
    d.check_agreement().unwrap();
    d.delete(&a, DeleteMode::Discard, &mut NoProgress).unwrap();
    d.check_agreement().unwrap();
    assert!(d.tree().unwrap().is_empty());
}
