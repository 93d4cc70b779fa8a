//! snaptree against virsh itself: the same scenario through `virsh -c test:///default`
//! (libvirt's test driver, no daemon) and through `snaptree` on a `null` domain, compared
//! after every step — the tree, the current snapshot and every `snapshot-list` variant
//! (names, order, parents, virsh's table and tree layouts), and `snapshot-info` — and which
//! option combinations each accepts. virsh is the oracle: nothing here shares code with
//! snaptree's formatting.
//!
//! The test driver is a fresh in-memory driver per invocation, so the whole virsh side of a
//! scenario runs in one invocation, each answer after an `echo` marker.
//!
//! Without virsh the tests print a visible `SKIPPED:` line and pass, except under CI, where
//! a missing virsh is a failure (`scripts/setup` installs `libvirt-clients`).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};

/// True when virsh can run its test driver; otherwise says so visibly (and fails under CI).
fn virsh_available() -> bool {
    let ok = Command::new("virsh")
        .args(["-c", "test:///default", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        snaptree_tests::skip::cannot_run(
            "the virsh comparison",
            "virsh is missing (Debian package libvirt-clients)",
        );
    }
    ok
}

/// Runs one virsh invocation of `;`-separated commands on a fresh test driver.
fn virsh(script: &str) -> Output {
    Command::new("virsh")
        .args(["-c", "test:///default", script])
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .output()
        .expect("virsh runs")
}

struct Snaptree {
    state: tempfile::TempDir,
}

impl Snaptree {
    fn new() -> Snaptree {
        let s = Snaptree {
            state: tempfile::tempdir().unwrap(),
        };
        let xml = s.state.path().join("vm.xml");
        std::fs::write(&xml, "<domain type='null'><name>vm</name></domain>").unwrap();
        s.ok(&["define", xml.to_str().unwrap()]);
        s
    }

    fn run(&self, args: &[&str]) -> Output {
        common::run(self.state.path(), args)
    }

    fn ok(&self, args: &[&str]) -> String {
        common::ok(self.state.path(), args)
    }
}

/// One step of the scenario, in virsh's words; `snaptree_args` says it in snaptree's.
#[derive(Clone, Copy)]
enum Step {
    Create(&'static str),
    Revert(&'static str),
    /// No flag: the snapshot leaves, its children move to its parent (snaptree's retire).
    Delete(&'static str),
    /// `--children`: the snapshot and its subtree (snaptree's `--deleteforce`).
    DeleteChildren(&'static str),
    /// `--children-only` (the same word in both).
    DeleteChildrenOnly(&'static str),
}

impl Step {
    fn virsh(self) -> String {
        match self {
            Step::Create(n) => format!("snapshot-create-as test {n}"),
            Step::Revert(n) => format!("snapshot-revert test {n}"),
            Step::Delete(n) => format!("snapshot-delete test {n}"),
            Step::DeleteChildren(n) => format!("snapshot-delete test {n} --children"),
            Step::DeleteChildrenOnly(n) => format!("snapshot-delete test {n} --children-only"),
        }
    }

    fn snaptree_args(self) -> Vec<&'static str> {
        match self {
            Step::Create(n) => vec!["snapshot-create-as", "vm", "--name", n],
            Step::Revert(n) => vec!["snapshot-revert", "vm", n],
            Step::Delete(n) => vec!["snapshot-delete", "vm", n],
            Step::DeleteChildren(n) => vec!["snapshot-delete", "vm", n, "--deleteforce"],
            Step::DeleteChildrenOnly(n) => vec!["snapshot-delete", "vm", n, "--children-only"],
        }
    }
}

/// How two answers are compared.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Compare {
    /// Byte for byte, creation times masked.
    Exact,
    /// virsh's name list ends with an empty line that snaptree leaves out.
    Names,
    /// `--topological`: the same names, each after its parent; the order among siblings is
    /// each implementation's own (libvirt lists the newest child first, snaptree the oldest).
    Topological,
    /// `snapshot-info`: equal but for the Domain line (test vs vm) and Location (the test
    /// driver says internal; the null backend keeps no data and says none).
    Info,
}

struct Query {
    args: Vec<String>,
    compare: Compare,
}

impl Query {
    fn new(args: &str, compare: Compare) -> Query {
        Query {
            args: args.split_whitespace().map(str::to_string).collect(),
            compare,
        }
    }
}

/// Every question asked after each step, given the snapshot names that exist.
fn queries(names: &[String]) -> Vec<Query> {
    let mut q = vec![
        Query::new("snapshot-current --name", Compare::Exact),
        Query::new("snapshot-list", Compare::Exact),
        Query::new("snapshot-list --parent", Compare::Exact),
        Query::new("snapshot-list --tree", Compare::Exact),
        Query::new("snapshot-list --name", Compare::Names),
        Query::new("snapshot-list --roots --name", Compare::Names),
        Query::new("snapshot-list --leaves --name", Compare::Names),
        Query::new("snapshot-list --no-leaves --name", Compare::Names),
        Query::new("snapshot-list --roots --no-leaves --name", Compare::Names),
        Query::new("snapshot-list --leaves --parent", Compare::Exact),
        Query::new("snapshot-list --current --name", Compare::Names),
        Query::new(
            "snapshot-list --current --descendants --parent",
            Compare::Exact,
        ),
        Query::new("snapshot-list --current --tree", Compare::Exact),
        Query::new("snapshot-list --topological --name", Compare::Topological),
    ];
    for n in names {
        q.push(Query::new(&format!("snapshot-info {n}"), Compare::Info));
        q.push(Query::new(
            &format!("snapshot-list --from {n} --name"),
            Compare::Names,
        ));
        q.push(Query::new(
            &format!("snapshot-list --from {n} --descendants --name"),
            Compare::Names,
        ));
        q.push(Query::new(
            &format!("snapshot-list --from {n} --tree"),
            Compare::Exact,
        ));
        q.push(Query::new(
            &format!("snapshot-list --from {n} --descendants --tree"),
            Compare::Exact,
        ));
        q.push(Query::new(
            &format!("snapshot-list --from {n} --descendants --leaves --parent"),
            Compare::Exact,
        ));
        q.push(Query::new(
            &format!("snapshot-list --from {n} --descendants --topological --name"),
            Compare::Topological,
        ));
    }
    q
}

/// `YYYY-MM-DD HH:MM:SS +ZZZZ`, the only thing that differs between two runs.
fn mask_times(text: &str) -> String {
    let b = text.as_bytes();
    let shape = b"dddd-dd-dd dd:dd:dd +dddd";
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        let fits = b.len() - i >= shape.len()
            && shape.iter().zip(&b[i..]).all(|(s, c)| match s {
                b'd' => c.is_ascii_digit(),
                b'+' => *c == b'+' || *c == b'-',
                s => s == c,
            });
        if fits {
            out.push_str("<time>");
            i += shape.len();
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Parent of each name, from a `snapshot-list --parent` table.
fn parents(table: &str) -> BTreeMap<String, String> {
    table
        .lines()
        .skip(2)
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            // Name, date, time, zone, state[, parent]
            (
                cells[0].to_string(),
                cells.get(5).unwrap_or(&"").to_string(),
            )
        })
        .collect()
}

fn check_topological(who: &str, order: &[&str], parent: &BTreeMap<String, String>) {
    for (i, n) in order.iter().enumerate() {
        let p = &parent[*n];
        if let Some(j) = order.iter().position(|m| m == p) {
            assert!(
                j < i,
                "expected {who}'s --topological order to put {p} before its child {n}: {order:?}"
            );
        }
    }
}

fn compare(step: &str, q: &Query, virsh: &str, snaptree: &str, parent: &BTreeMap<String, String>) {
    let what = format!("after `{step}`, `{}`", q.args.join(" "));
    match q.compare {
        Compare::Exact => assert_eq!(
            mask_times(snaptree),
            mask_times(virsh),
            "{what}: expected snaptree to print what virsh prints\nvirsh:\n{virsh}\nsnaptree:\n{snaptree}"
        ),
        Compare::Names => {
            let virsh = virsh.strip_suffix('\n').unwrap_or(virsh);
            assert_eq!(
                snaptree, virsh,
                "{what}: expected the same names in the same order"
            );
        }
        Compare::Topological => {
            let v: Vec<&str> = virsh.lines().filter(|l| !l.is_empty()).collect();
            let s: Vec<&str> = snaptree.lines().collect();
            assert_eq!(
                v.iter().collect::<BTreeSet<_>>(),
                s.iter().collect::<BTreeSet<_>>(),
                "{what}: expected the same names"
            );
            check_topological("virsh", &v, parent);
            check_topological("snaptree", &s, parent);
        }
        Compare::Info => {
            let norm = |text: &str, location: &str| -> String {
                text.lines()
                    .map(|l| {
                        if l.starts_with("Domain:") {
                            "Domain: <domain>".to_string()
                        } else if l.starts_with("Location:") {
                            assert_eq!(
                                l,
                                format!("{:<15} {location}", "Location:"),
                                "{what}: expected Location {location}"
                            );
                            "Location: <location>".to_string()
                        } else {
                            l.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
                    + if text.ends_with("\n\n") { "\n\n" } else { "\n" }
            };
            assert_eq!(
                norm(snaptree, "none"),
                norm(virsh, "internal"),
                "{what}: expected snapshot-info's fields as virsh prints them"
            );
        }
    }
}

/// Runs `steps` through both and compares every answer after every step.
fn scenario(steps: &[Step]) {
    let snaptree = Snaptree::new();
    // The test domain runs; shut off, its snapshots are `shutoff` like the null domain's.
    let mut script = vec!["destroy test".to_string()];
    let mut asked: Vec<(String, Query, Option<String>)> = Vec::new();
    for step in steps {
        snaptree.ok(&step.snaptree_args());
        script.push(format!("echo @@step {}", asked.len()));
        script.push(step.virsh());
        let names: Vec<String> = snaptree
            .ok(&["snapshot-list", "vm", "--name"])
            .lines()
            .map(str::to_string)
            .collect();
        for q in queries(&names) {
            let mut args: Vec<&str> = vec![q.args[0].as_str(), "vm"];
            args.extend(q.args[1..].iter().map(String::as_str));
            let out = snaptree.run(&args);
            let answer = if out.status.success() {
                Some(String::from_utf8(out.stdout).unwrap())
            } else {
                // Only the current snapshot can be missing: NO_SNAPSHOT, nothing printed.
                assert_eq!(
                    (out.status.code(), out.stdout.as_slice()),
                    (Some(14), &b""[..]),
                    "`snaptree {}`: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                );
                None
            };
            script.push(format!("echo @@query {}", asked.len()));
            script.push(format!("{} test {}", q.args[0], q.args[1..].join(" ")));
            asked.push((step.virsh(), q, answer));
        }
    }
    script.push("echo @@end".to_string());
    let out = virsh(&script.join("; "));
    let stdout = String::from_utf8(out.stdout).unwrap();
    // Split virsh's output at the markers: the section after `@@query N` answers query N.
    let mut sections: BTreeMap<usize, String> = BTreeMap::new();
    let mut open: Option<usize> = None;
    for line in stdout.split_inclusive('\n') {
        if let Some(rest) = line.strip_prefix("@@") {
            open = rest
                .trim()
                .strip_prefix("query ")
                .map(|n| n.parse().unwrap());
            sections.entry(open.unwrap_or(usize::MAX)).or_default();
            continue;
        }
        if let Some(k) = open {
            sections.entry(k).or_default().push_str(line);
        }
    }
    assert!(stdout.contains("@@end"), "virsh stopped early:\n{stdout}");
    // The parents virsh reports after each step, for the topological checks.
    let mut parent = BTreeMap::new();
    for (k, (step, q, answer)) in asked.iter().enumerate() {
        let v = sections.get(&k).map_or("", String::as_str);
        let Some(answer) = answer else {
            // After an error virsh prints only an empty line on stdout.
            assert_eq!(
                v,
                "\n",
                "after `{step}`, `{}`: snaptree found no current snapshot, virsh answered",
                q.args.join(" ")
            );
            continue;
        };
        if q.args.join(" ") == "snapshot-list --parent" {
            parent = parents(v);
            assert_eq!(
                parents(answer),
                parent,
                "after `{step}`: expected the same parents"
            );
        }
        compare(step, q, v, answer, &parent);
    }
}

#[test]
fn the_same_scenario_gives_the_same_tree_current_and_listings_as_virsh() {
    if !virsh_available() {
        return;
    }
    use Step::*;
    scenario(&[
        // Name order differs from creation order from the second snapshot on.
        Create("c"),
        Create("a"),
        Create("e"),
        Revert("c"),
        Create("b"),
        Create("zz"),
        Revert("c"),
        Create("d"),
        Revert("a"),
        // Case-insensitive name order: a, Ab, b, ...
        Create("Ab"),
        // a leaves: e and Ab move to c, current moves to c.
        Delete("a"),
        Revert("zz"),
        // b and zz go; current was zz, so it moves to c.
        DeleteChildren("b"),
        Create("f"),
        // The root leaves: its children become roots, a forest of five trees.
        Delete("c"),
        Revert("e"),
        Create("g"),
        Create("h"),
        Revert("g"),
        // g and h go; current was g, so it moves to e.
        DeleteChildrenOnly("e"),
        // The current snapshot leaves: no parent, so no current snapshot.
        Delete("e"),
        Create("i"),
    ]);
}

/// Every `snapshot-list` option alone and every pair: snaptree accepts exactly what virsh
/// accepts, and refuses the rest as a usage error (exit 2).
#[test]
fn snapshot_list_accepts_and_refuses_the_option_combinations_virsh_does() {
    if !virsh_available() {
        return;
    }
    let snaptree = Snaptree::new();
    for n in ["c", "a"] {
        snaptree.ok(&["snapshot-create-as", "vm", "--name", n]);
    }
    let options = [
        "--parent",
        "--roots",
        "--leaves",
        "--no-leaves",
        "--tree",
        "--from c",
        "--current",
        "--descendants",
        "--name",
        "--topological",
    ];
    let mut combos: Vec<String> = options.iter().map(|o| o.to_string()).collect();
    for (i, a) in options.iter().enumerate() {
        for b in &options[i + 1..] {
            combos.push(format!("{a} {b}"));
        }
    }
    combos.push("--from c --descendants --tree --topological".into());
    combos.push("--current --descendants --leaves --no-leaves --name".into());
    let mut refused = Vec::new();
    for combo in &combos {
        let v = virsh(&format!(
            "snapshot-create-as test c; snapshot-create-as test a; snapshot-list test {combo}"
        ));
        let mut args = vec!["snapshot-list", "vm"];
        args.extend(combo.split_whitespace());
        let s = snaptree.run(&args);
        let stderr = String::from_utf8_lossy(&s.stderr);
        if v.status.success() {
            assert!(
                s.status.success(),
                "expected snaptree to accept `snapshot-list {combo}` as virsh does: {stderr}"
            );
        } else {
            assert_eq!(
                s.status.code(),
                Some(2),
                "expected snaptree to refuse `snapshot-list {combo}` as virsh does ({}), as a usage error: {stderr}",
                String::from_utf8_lossy(&v.stderr).trim()
            );
            assert!(stderr.starts_with("error: "), "{stderr}");
            refused.push(combo.as_str());
        }
    }
    // What virsh 9.0 refuses, so a change in either shows here.
    assert_eq!(
        refused,
        [
            "--descendants",
            "--parent --roots",
            "--parent --tree",
            "--parent --descendants",
            "--roots --tree",
            "--roots --from c",
            "--roots --current",
            "--roots --descendants",
            "--leaves --tree",
            "--leaves --descendants",
            "--no-leaves --tree",
            "--no-leaves --descendants",
            "--tree --descendants",
            "--tree --name",
            "--from c --current",
            "--descendants --name",
            "--descendants --topological",
        ]
    );
}

/// snapshot-info needs exactly one of NAME and --current; snapshot-current's --name and a
/// snapshot name exclude each other in virsh, and snaptree refuses to set current at all.
#[test]
fn snapshot_info_and_current_refuse_what_virsh_refuses() {
    if !virsh_available() {
        return;
    }
    let snaptree = Snaptree::new();
    snaptree.ok(&["snapshot-create-as", "vm", "--name", "a"]);
    for (v, s) in [
        ("snapshot-info test", vec!["snapshot-info", "vm"]),
        (
            "snapshot-info test a --current",
            vec!["snapshot-info", "vm", "a", "--current"],
        ),
        (
            "snapshot-current test --name a",
            vec!["snapshot-current", "vm", "--name", "a"],
        ),
    ] {
        let out = virsh(&format!("snapshot-create-as test a; {v}"));
        assert!(!out.status.success(), "expected virsh to refuse `{v}`");
        let out = snaptree.run(&s);
        assert_eq!(
            out.status.code(),
            Some(2),
            "expected snaptree to refuse `{}`",
            s.join(" ")
        );
    }
    // virsh sets current without reverting; snaptree says why it does not.
    let out = virsh(
        "snapshot-create-as test a; snapshot-create-as test b; snapshot-current test a; snapshot-current test --name",
    );
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("a\n"));
    let out = snaptree.run(&["snapshot-current", "vm", "a"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("the current snapshot is the one the live state derives from")
            && stderr.contains("snapshot-revert vm a"),
        "expected the refusal to say why and what to do instead: {stderr}"
    );
    // The XML of the current snapshot, as virsh prints it without --name.
    let xml = snaptree.ok(&["snapshot-current", "vm"]);
    assert!(
        xml.starts_with("<domainsnapshot>") && xml.contains("<name>a</name>"),
        "{xml}"
    );
}

/// What a `<domainsnapshot>` document says, read by plain text search (no snaptree code):
/// name, parent, description, creation time and state.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fields {
    name: String,
    parent: Option<String>,
    description: String,
    created: String,
    state: String,
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn element(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(unescape(xml[start..end].trim()))
}

fn fields(xml: &str, created_tag: &str) -> Fields {
    let parent = xml
        .find("<parent>")
        .map(|i| element(&xml[i..], "name").expect("a <parent> has a <name>"));
    Fields {
        name: element(xml, "name").expect("a snapshot has a <name>"),
        parent,
        description: element(xml, "description").unwrap_or_default(),
        created: element(xml, created_tag).expect("a creation time"),
        state: element(xml, "state").expect("a state"),
    }
}

/// Splits a virsh transcript at `echo ==KEY` markers.
fn sections(out: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut key: Option<String> = None;
    for line in out.lines() {
        if let Some(k) = line.strip_prefix("==") {
            key = Some(k.to_string());
            map.insert(k.to_string(), String::new());
        } else if let Some(k) = &key {
            let text = map.get_mut(k).unwrap();
            text.push_str(line);
            text.push('\n');
        }
    }
    map
}

/// The fields of every snapshot and the current one, as a virsh session ends.
fn virsh_state(prefix: &str, names: &[&str]) -> (String, BTreeMap<String, Fields>) {
    let mut script = String::from(prefix);
    script.push_str("echo ==CURRENT; snapshot-current test --name; echo ==DOMAIN; dumpxml test; ");
    for n in names {
        script.push_str(&format!("echo =={n}; snapshot-dumpxml test {n}; "));
    }
    let out = virsh(&script);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "virsh failed: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = sections(&text);
    let snaps = names
        .iter()
        .map(|n| (n.to_string(), fields(&s[*n], "creationTime")))
        .collect();
    let mut current = s["CURRENT"].trim().to_string();
    current.push('\n');
    current.push_str(&s["DOMAIN"]);
    (current, snaps)
}

fn snaptree_state(st: &Snaptree, dom: &str, names: &[&str]) -> (String, BTreeMap<String, Fields>) {
    let current = st
        .ok(&["snapshot-current", dom, "--name"])
        .trim()
        .to_string();
    let snaps = names
        .iter()
        .map(|n| {
            let xml = st.ok(&["snapshot-dumpxml", dom, n]);
            (n.to_string(), fields(&xml, "creationdate"))
        })
        .collect();
    (current, snaps)
}

/// A tree built in libvirt's test driver (branched, three power states, a current that is
/// not the newest), dumped with `snapshot-dumpxml`, imported into snaptree (by `snapshot-
/// create --redefine` into a `null` domain and by `import-libvirt`), compared field by
/// field; then exported from snaptree and redefined into a fresh test driver with `virsh
/// snapshot-create --redefine`, and compared again: the same tree.
#[test]
fn a_libvirt_tree_round_trips_through_snaptree_redefine_and_export() {
    if !virsh_available() {
        return;
    }
    let build = "snapshot-create-as test a --description \"first & <one>\"; suspend test; \
                 snapshot-create-as test b --description b; resume test; destroy test; \
                 snapshot-create-as test c; snapshot-revert test a; \
                 snapshot-create-as test d --description \"d's\"; snapshot-revert test b; ";
    let names = ["a", "b", "c", "d"];
    let (virsh_current, original) = virsh_state(build, &names);
    let (current, domain_xml) = virsh_current.split_once('\n').unwrap();
    assert_eq!(current, "b");
    let states: Vec<&str> = names.iter().map(|n| original[*n].state.as_str()).collect();
    assert_eq!(states, ["running", "paused", "shutoff", "running"]);

    // The documents exactly as virsh wrote them.
    let out = virsh(&format!(
        "{build}{}",
        names
            .iter()
            .map(|n| format!("echo =={n}; snapshot-dumpxml test {n}; "))
            .collect::<String>()
    ));
    let docs = sections(&String::from_utf8_lossy(&out.stdout));
    let st = Snaptree::new();
    let files = st.state.path().join("libvirt");
    std::fs::create_dir_all(&files).unwrap();
    let domain_file = files.join("test-domain.xml");
    std::fs::write(&domain_file, domain_xml).unwrap();
    let mut paths = Vec::new();
    for n in names {
        let p = files.join(format!("{n}.xml"));
        std::fs::write(&p, &docs[n]).unwrap();
        paths.push(p);
    }

    // 1. snapshot-create --redefine into the null domain 'vm', parents first.
    for (n, p) in names.iter().zip(&paths) {
        let mut args = vec!["snapshot-create", "vm", p.to_str().unwrap(), "--redefine"];
        if *n == current {
            args.push("--current");
        }
        st.ok(&args);
    }
    let (got_current, got) = snaptree_state(&st, "vm", &names);
    assert_eq!(got_current, current);
    for n in names {
        assert_eq!(
            got[n], original[n],
            "snapshot {n} after snapshot-create --redefine"
        );
    }

    // 2. import-libvirt: the test driver's domain becomes a null domain named 'test'.
    let mut args = vec!["import-libvirt", domain_file.to_str().unwrap()];
    // In reverse, to show the import orders parents first itself.
    for p in paths.iter().rev() {
        args.push(p.to_str().unwrap());
    }
    args.extend(["--current", current]);
    let dry = st.ok(&[args.clone(), vec!["--dry-run"]].concat());
    assert!(
        dry.contains("define domain 'test' on backend 'null'"),
        "{dry}"
    );
    assert!(
        dry.find("redefine 'a'").unwrap() < dry.find("redefine 'b'").unwrap()
            && dry.find("redefine 'b'").unwrap() < dry.find("redefine 'c'").unwrap(),
        "{dry}"
    );
    st.ok(&args);
    let (got_current, got) = snaptree_state(&st, "test", &names);
    assert_eq!(got_current, current);
    for n in names {
        assert_eq!(got[n], original[n], "snapshot {n} after import-libvirt");
    }

    // 3. Export and redefine back into a fresh test driver.
    let out_dir = st.state.path().join("export");
    let listed = st.ok(&[
        "export",
        "test",
        "--domain-xml",
        domain_file.to_str().unwrap(),
        "--dir",
        out_dir.to_str().unwrap(),
    ]);
    let exported: Vec<&str> = listed.lines().collect();
    assert_eq!(exported.len(), names.len(), "{listed}");
    let mut script = String::new();
    for f in &exported {
        let text = std::fs::read_to_string(f).unwrap();
        let current_flag = if text.contains("<active>1</active>") {
            " --current"
        } else {
            ""
        };
        script.push_str(&format!(
            "snapshot-create test {f} --redefine{current_flag}; "
        ));
    }
    let (virsh_current, back) = virsh_state(&script, &names);
    assert_eq!(virsh_current.split_once('\n').unwrap().0, current);
    for n in names {
        assert_eq!(
            back[n], original[n],
            "snapshot {n} redefined back into libvirt"
        );
    }
}
