//! `snapshot-list`: the snapshots virsh's options select, in virsh's order, printed in the
//! formats of `virsh snapshot-list` (libvirt 9.0): its table, its tree, its name list.

use std::cmp::Ordering;
use std::collections::HashMap;

use snaptree_engine::{Error, Snapshot, SnapshotSize, SnapshotTree};

use crate::args::ListOpts;
use crate::output::format_time;

/// What `snapshot-list` shows: the selected snapshots in order, and the snapshot that
/// `--from`/`--current` started from (the root of a `--tree` under it).
pub struct Selection<'t> {
    /// The selected snapshots, by name or (with `--topological`) parents first.
    pub rows: Vec<&'t Snapshot>,
    /// The `--from` or `--current` snapshot.
    pub start: Option<&'t Snapshot>,
}

/// virsh's name order: ASCII case-insensitive (`g_ascii_strcasecmp`); names equal but for
/// case by bytes, so the order is total.
pub fn by_name(a: &Snapshot, b: &Snapshot) -> Ordering {
    let fold = |s: &str| {
        s.bytes()
            .map(|c| c.to_ascii_lowercase())
            .collect::<Vec<u8>>()
    };
    fold(&a.name)
        .cmp(&fold(&b.name))
        .then_with(|| a.name.cmp(&b.name))
}

/// Selects as virsh does: the children of `--from`/`--current` (every descendant with
/// `--descendants`) or every snapshot, then `--roots`, `--leaves`, `--no-leaves` (both: none).
pub fn select<'t>(
    tree: &'t SnapshotTree,
    opts: &ListOpts,
    domain: &str,
) -> Result<Selection<'t>, Error> {
    let start = match (&opts.from, opts.current) {
        (Some(name), _) => Some(tree.require_name(name, domain)?),
        (None, true) => Some(tree.current().ok_or_else(|| {
            Error::NoSnapshot(format!("domain '{domain}' has no current snapshot"))
        })?),
        (None, false) => None,
    };
    let candidates = match start {
        Some(s) if opts.descendants => tree.descendants(&s.uuid),
        Some(s) => tree.children(&s.uuid),
        None => tree.topological(),
    };
    let mut rows: Vec<&Snapshot> = candidates
        .into_iter()
        .filter(|s| !opts.roots || tree.parent(&s.uuid).is_none())
        .filter(|s| !opts.leaves || tree.num_children(&s.uuid) == 0)
        .filter(|s| !opts.no_leaves || tree.num_children(&s.uuid) > 0)
        .collect();
    if !opts.topological {
        rows.sort_by(|a, b| by_name(a, b));
    }
    Ok(Selection { rows, start })
}

/// Names only, one a line (virsh adds an empty line after them, as after every listing;
/// snaptree does not, so the output is exactly the names, as `virsh -q` prints them).
pub fn names(sel: &Selection<'_>) -> String {
    sel.rows.iter().map(|s| format!("{}\n", s.name)).collect()
}

/// The table: Name, Creation Time, State, Parent with `--parent`, and with `--size` Held
/// and Frees (`sizes`, one per row; `-` where the backend cannot estimate).
pub fn table(
    tree: &SnapshotTree,
    sel: &Selection<'_>,
    parent: bool,
    sizes: Option<&[Option<SnapshotSize>]>,
) -> String {
    let mut header = vec!["Name", "Creation Time", "State"];
    if parent {
        header.push("Parent");
    }
    if sizes.is_some() {
        header.extend(["Held", "Frees"]);
    }
    let rows = sel
        .rows
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut row = vec![
                s.name.clone(),
                format_time(s.creation_date),
                s.state.as_str().to_string(),
            ];
            if parent {
                row.push(
                    tree.parent(&s.uuid)
                        .map_or(String::new(), |p| p.name.clone()),
                );
            }
            if let Some(sizes) = sizes {
                match sizes.get(i).copied().flatten() {
                    Some(z) => row.extend([z.held.to_string(), z.frees.to_string()]),
                    None => row.extend(["-".to_string(), "-".to_string()]),
                }
            }
            row
        })
        .collect::<Vec<_>>();
    let mut out = virsh_table(&header, &rows);
    out.push('\n');
    out
}

/// libvirt's `vshTable` layout: each cell is a space and the text, padded to its column's
/// width plus two (the last cell unpadded); under the header, `width + 3` dashes per column.
fn virsh_table(header: &[&str], rows: &[Vec<String>]) -> String {
    let width = |s: &str| s.chars().count();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| width(&r[i]))
                .chain([width(header[i])])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            out.push(' ');
            out.push_str(cell);
            if i + 1 < widths.len() {
                out.push_str(&" ".repeat(widths[i] - width(cell) + 2));
            }
        }
        out.push('\n');
        out
    };
    let mut out = line(&mut header.iter().copied());
    out.push_str(&"-".repeat(widths.iter().map(|w| w + 3).sum()));
    out.push('\n');
    for r in rows {
        out.push_str(&line(&mut r.iter().map(String::as_str)));
    }
    out
}

/// The tree, drawn as libvirt's `vshTreePrint` draws it, blank lines included: each root
/// of the selection (the `--from`/`--current` snapshot when given), its children in the
/// selection's order. An explicit stack instead of virsh's recursion, so no depth of
/// tree can overflow the call stack.
pub fn tree_view(tree: &SnapshotTree, sel: &Selection<'_>) -> String {
    let mut entries: Vec<&Snapshot> = sel.rows.clone();
    if let Some(s) = sel.start {
        entries.push(s);
    }
    let parent_of = |s: &Snapshot| -> Option<String> {
        if sel.start.is_some_and(|st| st.uuid == s.uuid) {
            None
        } else {
            tree.parent(&s.uuid).map(|p| p.name.clone())
        }
    };
    let mut kids: HashMap<String, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, s) in entries.iter().enumerate() {
        match parent_of(s) {
            Some(p) => kids.entry(p).or_default().push(i),
            None => roots.push(i),
        }
    }
    if sel.start.is_some() {
        // The start snapshot, appended last, is the only root; virsh sorts it in among
        // the others, which changes nothing as it is printed alone.
        roots.retain(|i| *i == entries.len() - 1);
    }
    enum Task {
        Enter { i: usize, last: bool, root: bool },
        Leave { last: bool, root: bool, leaf: bool },
    }
    let none = Vec::new();
    let mut out = String::new();
    let mut indent = String::new();
    for root in roots {
        let mut stack = vec![Task::Enter {
            i: root,
            last: true,
            root: true,
        }];
        while let Some(task) = stack.pop() {
            match task {
                Task::Enter { i, last, root } => {
                    let s = entries[i];
                    out.push_str(&indent);
                    out.push_str(if root { "" } else { "+- " });
                    out.push_str(&s.name);
                    out.push('\n');
                    if !root {
                        indent.push_str(if last { "  " } else { "| " });
                    }
                    let children = kids.get(&s.name).unwrap_or(&none);
                    if !children.is_empty() {
                        out.push_str(&indent);
                        out.push_str("  |\n");
                    }
                    indent.push_str("  ");
                    stack.push(Task::Leave {
                        last,
                        root,
                        leaf: children.is_empty(),
                    });
                    for (k, c) in children.iter().enumerate().rev() {
                        stack.push(Task::Enter {
                            i: *c,
                            last: k + 1 == children.len(),
                            root: false,
                        });
                    }
                }
                Task::Leave { last, root, leaf } => {
                    indent.truncate(indent.len() - 2);
                    if leaf && last {
                        out.push_str(&indent);
                        out.push('\n');
                    }
                    if !root {
                        indent.truncate(indent.len() - 2);
                    }
                }
            }
        }
    }
    out.push('\n');
    out
}
