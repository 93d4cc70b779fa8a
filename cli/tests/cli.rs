//! End-to-end tests of the `snaptree` binary, run as a user would, on the `null` backend
//! and the C `sim` plugin (found beside the binary with no configuration).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

struct Session {
    state: tempfile::TempDir,
    files: tempfile::TempDir,
}

impl Session {
    fn new() -> Session {
        Session {
            state: tempfile::tempdir().unwrap(),
            files: tempfile::tempdir().unwrap(),
        }
    }

    fn run(&self, args: &[&str]) -> Output {
        common::run(self.state.path(), args)
    }

    /// Runs and expects success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        common::ok(self.state.path(), args)
    }

    /// Runs and expects exit code `code`; returns stderr.
    fn fails(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(
            out.status.code(),
            Some(code),
            "expected `snaptree {}` to exit {code}; stderr: {stderr}",
            args.join(" ")
        );
        assert!(
            stderr.starts_with("error: "),
            "expected `error: SENTENCE` on stderr, got {stderr:?}"
        );
        stderr
    }

    fn file(&self, name: &str, text: &str) -> PathBuf {
        let p = self.files.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn define(&self, name: &str, backend: &str, extra: &str) {
        let p = self.file(
            &format!("{name}.xml"),
            &format!("<domain type='{backend}'><name>{name}</name>{extra}</domain>"),
        );
        self.ok(&["define", p.to_str().unwrap()]);
    }

    fn json(&self, dom: &str) -> serde_json::Value {
        serde_json::from_str(&self.ok(&["snapshot-list", dom, "--json"]))
            .expect("snapshot-list --json is JSON")
    }

    fn names(&self, dom: &str, flag: &str) -> Vec<String> {
        let v: serde_json::Value =
            serde_json::from_str(&self.ok(&["snapshot-list", dom, flag, "--json"])).unwrap();
        v["snapshots"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    }
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// a ── b ── c, a ── d; current d.
fn standard(s: &Session, dom: &str) {
    s.ok(&[
        "snapshot-create-as",
        dom,
        "--name",
        "a",
        "--description",
        "first",
    ]);
    s.ok(&["snapshot-create-as", dom, "--name", "b"]);
    s.ok(&["snapshot-create-as", dom, "--name", "c"]);
    s.ok(&["start-with-snapshot", dom, "a"]);
    s.ok(&["snapshot-create-as", dom, "--name", "d"]);
}

#[test]
fn a_whole_session_on_the_null_backend() {
    let s = Session::new();
    s.define("vm", "null", "");
    assert!(s.ok(&["list"]).contains("vm"));
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["list", "--json"])).unwrap();
    assert_eq!(list[0]["backend"], "null");
    standard(&s, "vm");
    let table = s.ok(&["snapshot-list", "vm", "--parent"]);
    assert!(
        table.starts_with(" Name   Creation Time               State     Parent\n")
            && table.contains("   shutoff   b\n"),
        "expected virsh's table with a Parent column:\n{table}"
    );
    let tree = s.ok(&["snapshot-list", "vm", "--tree"]);
    assert_eq!(
        tree, "a\n  |\n  +- b\n  |   |\n  |   +- c\n  |     \n  +- d\n    \n\n",
        "tree view:\n{tree}"
    );
    assert_eq!(s.names("vm", "--roots"), ["a"]);
    assert_eq!(s.names("vm", "--leaves"), ["c", "d"]);
    assert_eq!(s.names("vm", "--topological"), ["a", "b", "c", "d"]);
    let v = s.json("vm");
    let a = &v["snapshots"][0];
    assert_eq!(
        (
            a["name"].as_str(),
            a["description"].as_str(),
            a["children"].as_u64()
        ),
        (Some("a"), Some("first"), Some(2))
    );
    assert_eq!(a["parent"], serde_json::Value::Null);
    assert_eq!(v["snapshots"][3]["current"], true);
    for field in ["uuid", "parent_uuid", "creation_date", "state"] {
        assert!(
            a.get(field).is_some(),
            "expected field {field} in --json output"
        );
    }
    assert_eq!(s.ok(&["snapshot-current", "vm", "--name"]), "d\n");
    assert!(s.ok(&["snapshot-current", "vm"]).contains("<name>d</name>"));
    assert_eq!(s.ok(&["snapshot-parent", "vm", "c"]), "b\n");
    let xml = s.ok(&["snapshot-dumpxml", "vm", "c"]);
    assert!(
        xml.contains("<name>c</name>") && xml.contains("<parent>"),
        "{xml}"
    );
    // Create from a file, and from nothing.
    let f = s.file(
        "snap.xml",
        "<domainsnapshot><name>e</name><description>from file</description></domainsnapshot>",
    );
    s.ok(&["snapshot-create", "vm", p(&f)]);
    assert!(s.ok(&["snapshot-create", "vm"]).contains("created"));
    s.ok(&["snapshot-rename", "vm", "e", "e2"]);
    s.ok(&["snapshot-revert", "vm", "b", "--paused"]);
    // Every delete mode.
    s.ok(&["snapshot-delete", "vm", "e2"]);
    s.ok(&["snapshot-delete", "vm", "c", "--delete"]);
    s.ok(&["snapshot-delete", "vm", "b", "--mergeforce"]);
    assert_eq!(
        s.names("vm", "--topological"),
        ["a"],
        "expected d discarded as b's sibling"
    );
    s.ok(&["snapshot-create-as", "vm", "--name", "x"]);
    s.ok(&["snapshot-delete", "vm", "x", "--consolidate"]);
    s.ok(&["snapshot-create-as", "vm", "--name", "y"]);
    s.ok(&["snapshot-delete", "vm", "a", "--children-only"]);
    assert_eq!(s.names("vm", "--topological"), ["a"]);
    s.ok(&["snapshot-create-as", "vm", "--name", "z"]);
    s.ok(&["snapshot-delete", "vm", "z", "--merge"]);
    s.ok(&["snapshot-create-as", "vm", "--name", "w"]);
    s.ok(&["start-with-snapshot", "vm", "a"]);
    s.ok(&["snapshot-create-as", "vm", "--name", "v"]);
    s.ok(&["snapshot-delete", "vm", "v", "--mergeforce"]);
    assert_eq!(s.names("vm", "--topological"), ["a"]);
    s.ok(&["snapshot-delete", "vm", "a", "--deleteforce"]);
    assert!(s.json("vm")["snapshots"].as_array().unwrap().is_empty());
    standard(&s, "vm");
    assert!(s.ok(&["snapshot-delete-all", "vm"]).contains("Deleted 4"));
    s.ok(&["undefine", "vm"]);
    s.fails(&["snapshot-list", "vm"], 13);
}

#[test]
fn dry_run_prints_the_plan_and_changes_nothing() {
    let s = Session::new();
    s.define("vm", "null", "");
    standard(&s, "vm");
    let before = s.ok(&["snapshot-list", "vm", "--json"]);
    let plan = s.ok(&["snapshot-delete", "vm", "b", "--mergeforce", "--dry-run"]);
    assert!(
        plan.contains("merge 'b' into 'a'") && plan.contains("discard 'd'"),
        "{plan}"
    );
    assert!(plan.contains("removes: 'd', 'b'"), "{plan}");
    assert!(plan.contains("current: 'd' -> 'a'"), "{plan}");
    let plan = s.ok(&["snapshot-delete-all", "vm", "--dry-run"]);
    assert!(plan.contains("detach the live state"), "{plan}");
    s.ok(&["snapshot-create-as", "vm", "--name", "n", "--dry-run"]);
    s.ok(&["snapshot-rename", "vm", "a", "aa", "--dry-run"]);
    s.ok(&["start-with-snapshot", "vm", "b", "--dry-run"]);
    s.ok(&["snapshot-delete", "vm", "c", "--delete", "--dry-run"]);
    assert_eq!(
        s.ok(&["snapshot-list", "vm", "--json"]),
        before,
        "expected --dry-run to change nothing"
    );
}

#[test]
fn errors_have_a_sentence_and_a_stable_exit_code() {
    let s = Session::new();
    s.define("vm", "null", "");
    standard(&s, "vm");
    let e = s.fails(&["snapshot-delete", "vm", "b", "--merge"], 16);
    assert!(e.contains("would discard 1 snapshot: 'd'"), "{e}");
    let e = s.fails(&["snapshot-delete", "vm", "a", "--delete"], 16);
    assert!(e.contains("'b', 'c', 'd'"), "{e}");
    s.fails(&["snapshot-dumpxml", "vm", "nope"], 14);
    s.fails(&["snapshot-list", "nodom"], 13);
    s.fails(&["snapshot-create-as", "vm", "--name", "a"], 15);
    s.fails(&["snapshot-create-as", "vm", "--name", "../x"], 12);
    s.fails(&["snapshot-rename", "vm", "a", "bad/name"], 11);
    let bad = s.file("bad.xml", "<domainsnapshot><name>x</name>");
    let e = s.fails(&["snapshot-create", "vm", p(&bad)], 12);
    assert!(e.contains("line 1"), "expected a position: {e}");
    // 3, not 23: 23 is 10 + INCOMPLETE.
    let e = s.fails(&["snapshot-create", "vm", "/nonexistent/file.xml"], 3);
    assert!(e.contains("cannot read /nonexistent/file.xml"), "{e}");
    let unknown = s.file("u.xml", "<domain type='nosuch'><name>u</name></domain>");
    let e = s.fails(&["define", p(&unknown)], 19);
    assert!(e.contains("nosuch"), "expected the backend type named: {e}");
    // Two mode flags at once is a usage error.
    let out = s.run(&["snapshot-delete", "vm", "a", "--merge", "--delete"]);
    assert_eq!(out.status.code(), Some(2));
    // Undefine refuses a domain with snapshots unless told.
    s.fails(&["undefine", "vm"], 17);
    s.ok(&["undefine", "vm", "--delete-snapshots"]);
}

#[test]
fn the_c_sim_plugin_is_found_beside_the_binary() {
    let s = Session::new();
    let backends = s.ok(&["backends"]);
    assert!(
        backends.contains("sim")
            && backends.contains("ABI 1.3")
            && backends.contains("forget, adopt  "),
        "expected the sim plugin listed:\n{backends}"
    );
    let json: serde_json::Value = serde_json::from_str(&s.ok(&["backends", "--json"])).unwrap();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .any(|b| b["type"] == "sim" && b["error"].is_null())
    );
    let dir = s.files.path().join("disk");
    s.define("simvm", "sim", &format!("<sim dir='{}'/>", dir.display()));
    standard(&s, "simvm");
    s.ok(&["snapshot-delete", "simvm", "c", "--merge"]);
    s.ok(&["snapshot-delete", "simvm", "d", "--delete"]);
    assert_eq!(s.names("simvm", "--topological"), ["a", "b"]);
    s.ok(&["snapshot-delete-all", "simvm"]);
}

/// SEMANTICS.md §7.1 through the command: a real failed write of the C sim plugin at
/// step 2 of 3 (a directory where it writes the live layer's temporary file) is exit code
/// 23 (INCOMPLETE), the listings show the pending operation and the state before it,
/// `recover` fails again while the fault lasts and then finishes it.
#[test]
fn an_operation_stopped_part_way_is_incomplete_listed_and_recovered() {
    let s = Session::new();
    let dir = s.files.path().join("disk");
    s.define("simvm", "sim", &format!("<sim dir='{}'/>", dir.display()));
    for name in ["a", "b", "c", "d"] {
        s.ok(&["snapshot-create-as", "simvm", "--name", name]);
    }
    s.ok(&["start-with-snapshot", "simvm", "c"]);
    let blocker = dir.join(".live.layer.tmp");
    std::fs::create_dir(&blocker).unwrap();

    let e = s.fails(&["snapshot-delete", "simvm", "b", "--deleteforce"], 23);
    assert!(
        e.contains("delete (DISCARD_FORCE) of snapshot 'b' on domain 'simvm' stopped at step 2 of 3 (discard_leaf)")
            && e.contains("the next call on the domain finishes it")
            && e.contains(".live.layer.tmp"),
        "expected the operation, the step and the plugin's reason: {e}"
    );

    // Listings: the state before, and the pending operation.
    let json = s.json("simvm");
    let names: Vec<_> = json["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["a", "b", "c", "d"]);
    assert_eq!(
        json["pending"],
        serde_json::json!({"operation": "delete (DISCARD_FORCE) of snapshot 'b'", "steps_done": 1, "steps": 3})
    );
    let text = s.ok(&["snapshot-list", "simvm"]);
    assert!(
        text.contains(
            "Pending on domain 'simvm': delete (DISCARD_FORCE) of snapshot 'b', 1 of 3 steps done"
        ),
        "{text}"
    );
    assert_eq!(s.ok(&["snapshot-current", "simvm", "--name"]).trim(), "c");
    let list = s.ok(&["list"]);
    assert!(list.contains("Pending on domain 'simvm'"), "{list}");
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["list", "--json"])).unwrap();
    assert_eq!(list[0]["pending"]["steps"], 3);

    // recover fails again while the fault lasts, and changes nothing.
    let e = s.fails(&["recover", "simvm"], 23);
    assert!(e.contains("step 2 of 3"), "{e}");
    assert_eq!(s.json("simvm")["pending"]["steps_done"], 1);

    std::fs::remove_dir(&blocker).unwrap();
    let out = s.ok(&["recover", "simvm"]);
    assert_eq!(
        out.trim(),
        "Domain 'simvm': finished delete (DISCARD_FORCE) of snapshot 'b' (1 of 3 steps had been done)"
    );
    assert_eq!(
        s.ok(&["recover", "simvm"]).trim(),
        "Domain 'simvm' has no pending operation"
    );
    let json = s.json("simvm");
    assert!(json["pending"].is_null(), "{json}");
    assert_eq!(s.names("simvm", "--topological"), ["a"]);
    assert!(!s.ok(&["snapshot-list", "simvm"]).contains("Pending"));
    let list: serde_json::Value = serde_json::from_str(&s.ok(&["list", "--json"])).unwrap();
    assert!(list[0]["pending"].is_null());
}

#[test]
fn a_broken_plugin_is_listed_with_its_error_and_hides_nothing() {
    let s = Session::new();
    let dir = s.files.path().join("plugins");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(
        dir.join("libsnaptree_backend_broken.so"),
        b"not an ELF file",
    )
    .unwrap();
    let out = s.ok(&["--backend-path", p(&dir), "backends"]);
    assert!(
        out.contains("broken") && out.contains("cannot load"),
        "{out}"
    );
    assert!(
        out.contains("sim "),
        "expected the good plugin still listed:\n{out}"
    );
}

#[test]
fn completions_and_help() {
    let s = Session::new();
    let bash = s.ok(&["completions", "bash"]);
    for word in [
        "snapshot-delete",
        "snapshot-info",
        "--no-leaves",
        "--descendants",
        "--from",
    ] {
        assert!(
            bash.contains(word),
            "expected {word} in the bash completions"
        );
    }
    let help = s.ok(&["--help"]);
    assert!(
        help.contains("Exit codes") && help.contains("WOULD_DISCARD"),
        "{help}"
    );
}

#[test]
fn hostile_names_and_documents_are_refused_and_change_nothing() {
    let s = Session::new();
    s.define("vm", "null", "");
    s.ok(&["snapshot-create-as", "vm", "--name", "kept"]);
    let before = s.ok(&["snapshot-list", "vm", "--json"]);
    let long = "n".repeat(10_000);
    for (name, reason) in [
        ("a/b", "'/'"),
        ("..", "path component"),
        ("../../etc/x", "'/'"),
        ("esc\u{1b}[31m", "U+001B"),
        ("   ", "white space"),
        (long.as_str(), "10000 bytes"),
    ] {
        let e = s.fails(&["snapshot-create-as", "vm", "--name", name], 12);
        assert!(e.contains(reason), "expected {reason:?} in {e}");
        assert!(
            !e.contains('\u{1b}'),
            "expected control characters escaped in the message: {e:?}"
        );
        let e = s.fails(&["snapshot-rename", "vm", "kept", name], 11);
        assert!(e.contains(reason), "expected {reason:?} in {e}");
    }
    for (doc, reason) in [
        (
            "<!DOCTYPE d [<!ENTITY x 'boom'>]><domainsnapshot><name>&x;</name></domainsnapshot>",
            "DOCTYPE",
        ),
        (
            "<domainsnapshot><name>&xxe;</name></domainsnapshot>",
            "undefined entity",
        ),
        (
            "<domainsnapshot><name>a</name><name>b</name></domainsnapshot>",
            "appears twice",
        ),
        ("<domain/>", "expected <domainsnapshot>"),
    ] {
        let f = s.file("hostile.xml", doc);
        let e = s.fails(&["snapshot-create", "vm", p(&f)], 12);
        assert!(e.contains(reason), "expected {reason:?} in {e}");
    }
    let big = s.file(
        "big.xml",
        &format!("<domainsnapshot>{}</domainsnapshot>", " ".repeat(2 << 20)),
    );
    assert!(
        s.fails(&["snapshot-create", "vm", p(&big)], 12)
            .contains("limit")
    );
    let evil_domain = s.file("evil.xml", "<domain type='../../x'><name>e</name></domain>");
    s.fails(&["define", p(&evil_domain)], 12);
    assert_eq!(
        s.ok(&["snapshot-list", "vm", "--json"]),
        before,
        "expected the refusals to change nothing"
    );
}

#[test]
fn reclaim_frees_retired_data_and_says_which() {
    let s = Session::new();
    let dir = s.files.path().join("disk");
    s.define("rvm", "sim", &format!("<sim dir='{}'/>", dir.display()));
    s.ok(&["snapshot-create-as", "rvm", "--name", "a"]);
    s.ok(&["snapshot-create-as", "rvm", "--name", "b"]);
    s.ok(&["snapshot-create-as", "rvm", "--name", "c"]);
    let none = s.ok(&["reclaim", "rvm"]);
    assert!(none.contains("no retired data"), "{none}");
    // b retired: c is stored on it, so its data stays until reclaimed.
    s.ok(&["snapshot-delete", "rvm", "b"]);
    let plan = s.ok(&["reclaim", "rvm", "--dry-run"]);
    assert!(
        plan.contains("consolidate") && plan.contains("(retired)"),
        "expected the dry run to name the consolidate of the retired snapshot:\n{plan}"
    );
    let done = s.ok(&["reclaim", "rvm"]);
    assert!(
        done.contains("Reclaimed the data of 1 retired snapshot of domain 'rvm'"),
        "{done}"
    );
    assert!(s.ok(&["reclaim", "rvm"]).contains("no retired data"));
    assert_eq!(s.names("rvm", "--topological"), ["a", "c"]);
}

#[test]
fn snapshot_create_redefine_imports_libvirt_xml_and_moves_current_only_when_asked() {
    let s = Session::new();
    s.define("vm", "null", "");
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/corpus/libvirt-snapshot-xml");
    let root = s.file(
        "root.xml",
        "<domainsnapshot><name>earlier_snap</name><state>paused</state>\
         <creationTime>1000</creationTime><description>root</description></domainsnapshot>",
    );
    let plan = s.ok(&["snapshot-create", "vm", p(&root), "--redefine", "--dry-run"]);
    assert!(
        plan.contains("adopt the existing data of 'earlier_snap', child of nothing"),
        "{plan}"
    );
    assert!(plan.contains("current stays none"), "{plan}");
    assert_eq!(s.ok(&["snapshot-list", "vm", "--name"]), "");
    let out = s.ok(&["snapshot-create", "vm", p(&root), "--redefine"]);
    assert_eq!(out, "Snapshot 'earlier_snap' redefined\n");
    let child = corpus.join("disk_snapshot_redefine.xml");
    s.ok(&[
        "snapshot-create",
        "vm",
        p(&child),
        "--redefine",
        "--current",
    ]);
    assert_eq!(
        s.ok(&["snapshot-current", "vm", "--name"]),
        "my snap name\n"
    );
    assert_eq!(
        s.ok(&["snapshot-parent", "vm", "my snap name"]),
        "earlier_snap\n"
    );
    let info = s.ok(&["snapshot-info", "vm", "earlier_snap"]);
    assert!(info.contains("paused"), "{info}");
    // Again: the same name and parent replaces; --dry-run says so.
    let plan = s.ok(&["snapshot-create", "vm", p(&root), "--redefine", "--dry-run"]);
    assert!(
        plan.contains("replaces the description, creation date and state of 'earlier_snap'"),
        "{plan}"
    );
    // A missing parent, and --current without --redefine.
    let orphan = s.file(
        "orphan.xml",
        "<domainsnapshot><name>o</name><parent><name>gone</name></parent></domainsnapshot>",
    );
    let e = s.fails(&["snapshot-create", "vm", p(&orphan), "--redefine"], 14);
    assert!(e.contains("'gone'"), "{e}");
    let out = s.run(&["snapshot-create", "vm", p(&orphan), "--current"]);
    assert_eq!(out.status.code(), Some(2), "--current needs --redefine");
    let out = s.run(&["snapshot-create", "vm", "--redefine"]);
    assert_eq!(out.status.code(), Some(2), "--redefine needs a file");
}

#[test]
fn import_libvirt_orders_parents_first_sets_current_and_refuses_what_it_cannot_do() {
    let s = Session::new();
    let kvm = s.file(
        "kvm.xml",
        "<domain type='kvm'><name>guest</name><uuid>c7a5fdbd-edaf-9455-926a-d65c16db1809</uuid></domain>",
    );
    let root = s.file(
        "root.xml",
        "<domainsnapshot><name>root</name><creationTime>5</creationTime><state>running</state></domainsnapshot>",
    );
    let child = s.file(
        "child.xml",
        "<domainsnapshot><name>child</name><parent><name>root</name></parent>\
         <creationTime>6</creationTime><state>disk-snapshot</state><active>1</active></domainsnapshot>",
    );
    // A kvm domain goes to the qemu backend, which needs a qcow2 disk: INVALID_ARG,
    // nothing defined.
    let e = s.fails(&["import-libvirt", p(&kvm), p(&child), p(&root)], 11);
    assert!(e.contains("has no qcow2 disk to snapshot"), "{e}");
    assert!(!s.ok(&["list"]).contains("guest"));
    // A parent in neither the files nor the domain: NO_SNAPSHOT before anything runs.
    let e = s.fails(
        &["import-libvirt", p(&kvm), p(&child), "--backend", "null"],
        14,
    );
    assert!(e.contains("'root'"), "{e}");
    assert!(!s.ok(&["list"]).contains("guest"));
    // The metadata alone on the null backend; children first on the command line.
    let dry = s.ok(&[
        "import-libvirt",
        p(&kvm),
        p(&child),
        p(&root),
        "--backend",
        "null",
        "--dry-run",
    ]);
    assert!(dry.contains("current: 'child'"), "{dry}");
    assert!(
        !s.ok(&["list"]).contains("guest"),
        "--dry-run defines nothing"
    );
    let out = s.ok(&[
        "import-libvirt",
        p(&kvm),
        p(&child),
        p(&root),
        "--backend",
        "null",
    ]);
    assert!(
        out.contains("Imported 2 snapshots into domain 'guest', current 'child'"),
        "{out}"
    );
    assert_eq!(s.ok(&["snapshot-parent", "guest", "child"]), "root\n");
    assert_eq!(s.ok(&["snapshot-current", "guest", "--name"]), "child\n");
    // Again: every snapshot is replaced in place, nothing clashes.
    s.ok(&["import-libvirt", p(&kvm), p(&child), p(&root)]);
    assert_eq!(s.ok(&["snapshot-list", "guest", "--name"]), "child\nroot\n");
    // Export gives back documents import-libvirt and --redefine read.
    let exported = s.ok(&["export", "guest"]);
    assert!(
        exported.contains("<creationTime>6</creationTime>"),
        "{exported}"
    );
    assert!(
        exported.find("<name>root</name>").unwrap() < exported.find("<name>child</name>").unwrap()
    );
    assert_eq!(exported.matches("<active>1</active>").count(), 1);
}

#[test]
fn import_libvirt_into_a_sim_domain_adopts_the_layers_it_holds() {
    let s = Session::new();
    let layers = s.files.path().join("layers");
    std::fs::create_dir_all(&layers).unwrap();
    let sim = format!("<sim dir='{}'/>", layers.display());
    s.define("vm", "sim", &sim);
    s.ok(&["snapshot-create-as", "vm", "--name", "a"]);
    s.ok(&["snapshot-create-as", "vm", "--name", "b"]);
    let dir = s.files.path().join("exported");
    s.ok(&["export", "vm", "--dir", p(&dir)]);
    // The state is lost; a new one is defined on the same layers.
    let s2 = Session::new();
    s2.define("vm", "sim", &sim);
    let domain = s.file(
        "libvirt-vm.xml",
        "<domain type='kvm'><name>vm</name></domain>",
    );
    let out = s2.ok(&["import-libvirt", p(&domain), p(&dir)]);
    assert!(
        out.contains("Imported 2 snapshots into domain 'vm', current 'b'"),
        "{out}"
    );
    assert_eq!(s2.ok(&["snapshot-parent", "vm", "b"]), "a\n");
    // A snapshot the sim holds no layer for is refused, naming it.
    let ghost = s.file(
        "ghost.xml",
        "<domainsnapshot><name>ghost</name><parent><name>b</name></parent></domainsnapshot>",
    );
    let e = s2.fails(&["import-libvirt", p(&domain), p(&ghost)], 17);
    assert!(e.contains("no layer for snapshot 'ghost'"), "{e}");
}

#[test]
fn keep_live_expiry_pins_policy_and_prune_on_the_null_backend() {
    let s = Session::new();
    s.define("vm", "null", "");
    standard(&s, "vm");
    // KEEP_LIVE: K under the current d, then current a.
    let out = s.ok(&["start-with-snapshot", "vm", "a", "--keep-live=k"]);
    assert!(
        out.contains("the live state before it is snapshot 'k'"),
        "{out}"
    );
    let v = s.json("vm");
    let k = v["snapshots"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "k")
        .expect("k listed")
        .clone();
    assert_eq!(k["parent"], "d", "{k}");
    assert_eq!(s.ok(&["snapshot-current", "vm", "--name"]), "a\n");
    let before = s.ok(&["snapshot-list", "vm", "--json"]);
    let e = s.fails(&["start-with-snapshot", "vm", "b", "--keep-live=c"], 15);
    assert!(e.contains("'c'"), "{e}");
    assert_eq!(s.ok(&["snapshot-list", "vm", "--json"]), before);
    // --expires in the XML and dumpxml; a bad one is refused naming it.
    s.ok(&[
        "snapshot-create-as",
        "vm",
        "--name",
        "e",
        "--expires",
        "@1",
        "--pin",
    ]);
    assert!(
        s.ok(&["snapshot-dumpxml", "vm", "e"])
            .contains("<expires>1</expires>")
    );
    let e = s.fails(
        &[
            "snapshot-create-as",
            "vm",
            "--name",
            "x",
            "--expires",
            "soon",
        ],
        11,
    );
    assert!(e.contains("--expires 'soon'"), "{e}");
    s.ok(&["snapshot-pin", "vm", "e", "--unpin"]);
    s.ok(&["snapshot-pin", "vm", "a"]);
    // No policy: prune removes only what expired, never the current snapshot (e).
    let plan = s.ok(&["prune", "vm", "--dry-run"]);
    assert!(plan.contains("0 snapshots would be removed"), "{plan}");
    s.ok(&["start-with-snapshot", "vm", "c"]);
    let plan = s.ok(&["prune", "vm", "--dry-run"]);
    assert!(plan.contains("would remove 'e' (expired;"), "{plan}");
    assert!(plan.contains("1 snapshot would be removed"), "{plan}");
    // A policy that keeps nothing itself: everything but the pinned a and current c.
    s.ok(&["policy", "vm", "last=0"]);
    let shown: serde_json::Value =
        serde_json::from_str(&s.ok(&["policy", "vm", "--json"])).unwrap();
    assert_eq!(shown["policy"]["last"], 0);
    let e = s.fails(&["policy", "vm", "fortnightly=2"], 11);
    assert!(e.contains("'fortnightly'"), "{e}");
    let before = s.ok(&["snapshot-list", "vm", "--json"]);
    let plan = s.ok(&["prune", "vm", "--dry-run"]);
    for n in ["b", "d", "k"] {
        assert!(
            plan.contains(&format!(
                "would remove '{n}' (outside the retention policy;"
            )),
            "{plan}"
        );
    }
    assert!(plan.contains("would remove 'e' (expired;"), "{plan}");
    assert!(!plan.contains("'a'") && !plan.contains("'c' ("), "{plan}");
    assert_eq!(s.ok(&["snapshot-list", "vm", "--json"]), before, "dry run");
    let out = s.ok(&["prune", "--all"]);
    assert!(out.contains("4 snapshots removed"), "{out}");
    assert_eq!(s.names("vm", "--topological"), ["a", "c"]);
    s.ok(&["policy", "vm", "--clear"]);
    assert!(s.ok(&["policy", "vm"]).contains("no retention policy"));
    // snapshot-auto names from the time.
    let out = s.ok(&["snapshot-auto", "vm"]);
    assert!(out.contains("'auto-2"), "{out}");
}

/// `prune --all` goes on past a domain it cannot prune (here: another process holds its
/// lock): the others are pruned and reported, and the command fails with the first
/// error's exit code (BUSY, 21), naming the domain, which is left as it was.
#[test]
fn prune_all_prunes_every_other_domain_when_one_fails() {
    let s = Session::new();
    for dom in ["held", "zulu"] {
        s.define(dom, "null", "");
        s.ok(&[
            "snapshot-create-as",
            dom,
            "--name",
            "old",
            "--expires",
            "@1",
        ]);
        s.ok(&["snapshot-create-as", dom, "--name", "now"]);
    }
    let lock = snaptree_tests::hold_lock(s.state.path(), "held");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_snaptree"))
        .arg("--state-dir")
        .arg(s.state.path())
        .args(["prune", "--all"])
        .env_remove("SNAPTREE_BACKEND_PATH")
        .env("SNAPTREE_LOCK_TIMEOUT_MS", "200")
        .output()
        .unwrap();
    drop(lock);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(21),
        "BUSY's exit code; stderr: {stderr}"
    );
    assert!(
        stdout.contains("removed 'old' (expired;")
            && stdout.contains("Domain 'zulu': 1 snapshot removed"),
        "zulu pruned and reported: {stdout}"
    );
    assert!(
        stderr.starts_with("error: ") && stderr.contains("'held'"),
        "the held domain named: {stderr}"
    );
    assert_eq!(
        s.names("held", "--topological"),
        ["old", "now"],
        "held unchanged"
    );
    assert_eq!(
        s.names("zulu", "--topological"),
        ["now"],
        "zulu pruned (listed after the failing one)"
    );
}
