//! The plugin `libsnaptree_backend_qemu.so` (this crate's cdylib, built by `cargo test -p
//! snaptree-backend-qemu`) loaded through the plugin host: it declares itself, refuses what
//! it cannot manage, and passes the conformance kit on real images through the C ABI.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;

use common::Vm;
use snaptree_check::{Config, Subject, Tuning, run};
use snaptree_engine::{Domain, ErrorCode, PowerState, StepKind, flags};
use snaptree_host::{Plugin, PluginHost};

/// `target/<profile>/libsnaptree_backend_qemu.so`, beside the test binary's `deps`.
fn plugin() -> Plugin {
    let exe = std::env::current_exe().unwrap();
    let dir: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .unwrap()
        .to_path_buf();
    let file = dir.join("libsnaptree_backend_qemu.so");
    assert!(
        file.is_file(),
        "expected the plugin at {}; `cargo test -p snaptree-backend-qemu` builds it",
        file.display()
    );
    let mut host = PluginHost::isolated();
    host.add_path(&file).unwrap();
    host.plugin("qemu").unwrap()
}

#[test]
fn the_plugin_declares_offline_and_live_capabilities_per_domain() {
    use snaptree_engine::Backend;
    let p = plugin();
    assert_eq!(p.name(), "qemu");
    assert!(p.has_test_hooks());
    // Before any domain: the union of offline and live.
    for k in StepKind::ALL {
        assert!(p.capabilities().allows(k, PowerState::Shutoff), "{k:?}");
    }
    let vm = Vm::new(&["internal", "external"]);
    // A domain without a QMP socket is offline: every step, only while shut off.
    let offline = p.open_domain(&vm.xml).unwrap();
    for k in StepKind::ALL {
        assert!(
            offline.capabilities().allows(k, PowerState::Shutoff),
            "{k:?}"
        );
        assert!(
            !offline.capabilities().allows(k, PowerState::Running),
            "{k:?}"
        );
    }
    // Naming a QMP socket with an external disk changes nothing: live steps need
    // internal-mode disks.
    let with_qmp =
        |xml: &str| xml.replace("</domain>", "<qmp socket='/nonexistent/q.sock'/></domain>");
    let mixed = p.open_domain(&with_qmp(&vm.xml)).unwrap();
    assert!(
        !mixed
            .capabilities()
            .allows(StepKind::Create, PowerState::Running)
    );
    // All internal, with a socket: every step also while running or paused.
    let internal = Vm::new(&["internal", "internal"]);
    let live = p.open_domain(&with_qmp(&internal.xml)).unwrap();
    for k in StepKind::ALL {
        let caps = live.capabilities();
        for s in PowerState::ALL {
            assert!(caps.allows(k, s), "{k:?} {s:?}");
        }
    }
}

#[test]
fn the_plugin_refuses_a_disk_without_an_absolute_file() {
    let e = plugin()
        .open_domain("<domain type='qemu'><name>x</name><devices><disk><source file='rel.qcow2'/><target dev='vdz'/></disk></devices></domain>")
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Backend, "{e}");
    assert!(
        e.to_string().contains("disk 'vdz'") && e.to_string().contains("absolute"),
        "{e}"
    );
}

#[test]
fn the_plugin_runs_a_revert_through_the_engine() {
    let vm = Vm::new(&["external", "internal"]);
    let p = plugin();
    let mut d = Domain::ephemeral(&vm.xml, Box::new(p.open_domain(&vm.xml).unwrap())).unwrap();
    common::write(&vm, 0, 1);
    common::snap(&mut d, "A");
    common::write(&vm, 0, 2);
    common::revert(&mut d, "A");
    common::assert_live(&vm, &common::Layout::from([(0, 1)]), "after the revert");
    d.check_agreement().unwrap();
    let u = common::uuid(&mut d, "A");
    let e = d
        .revert(
            &u,
            Some(PowerState::Running),
            &mut snaptree_engine::NoProgress,
        )
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationInvalid, "{e}");
}

#[test]
fn the_plugin_conforms() {
    let p = plugin();
    let root = tempfile::tempdir().unwrap();
    let n = Mutex::new(0);
    let factory = || -> Result<Subject, String> {
        let mut n = n.lock().unwrap();
        *n += 1;
        let dir = root.path().join(format!("case-{n}"));
        std::fs::create_dir(&dir).map_err(|e| e.to_string())?;
        let modes = ["external", "internal"];
        let disks = common::create_disks(&dir, &modes, 4 * common::MIB);
        let domain_xml = common::domain_xml(&disks, &modes);
        let backend = p.open_domain(&domain_xml).map_err(|e| e.full_message())?;
        Ok(Subject {
            domain_xml,
            backend: Box::new(backend),
        })
    };
    let mut config = Config::from_env(8);
    config.max_steps = 12;
    config.max_shrink_iters = 100;
    config.tuning = Tuning {
        revert_flags: vec![0, flags::REVERT_SHUTOFF],
        ..Tuning::default()
    };
    match run(&config, &factory) {
        Ok(r) => eprintln!(
            "qemu plugin conformance: {} sequences, {} steps",
            r.cases, r.steps
        ),
        Err(failure) => panic!("{failure}"),
    }
}
