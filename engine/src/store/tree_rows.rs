//! [`TreeBuilder`]: a domain's tree built from its stored rows, the same way for both
//! stores, one row at a time (a million rows are never held twice).

use std::sync::mpsc;

use uuid::Uuid;

use crate::model::Snapshot;
use crate::tree::SnapshotTree;

/// One stored row of a snapshot.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    /// The snapshot.
    pub(crate) snapshot: Snapshot,
    /// Its metadata parent (None: a root).
    pub(crate) parent: Option<Uuid>,
    /// The retired layer it is stored on, if not directly on its parent.
    pub(crate) on_retired: Option<Uuid>,
    /// Its key in the store, as stored: creation order, and what a commit addresses the
    /// row by (a negative one makes the rows inconsistent).
    pub(crate) seq: i64,
}

/// Domains with at least this many snapshots are built on a second thread while the
/// calling one reads and decodes rows: below it a thread costs more than it saves.
const PIPELINE_FROM: i64 = 50_000;

/// Rows handed to the building thread at a time.
const CHUNK: usize = 1024;

/// Collects the rows of a domain's snapshots in `seq` (creation) order, so the tree's
/// sibling order is the stored one. A parent is always older than its children in
/// practice; a row whose parent comes later is attached once every row is in.
pub(crate) struct TreeBuilder {
    tree: SnapshotTree,
    late: Vec<(Uuid, Uuid)>,
    on_retired: Vec<(Uuid, Uuid)>,
    last_seq: Option<u64>,
    bad: Option<String>,
}

impl TreeBuilder {
    /// A builder for `count` snapshots (so the tree's indexes never grow while loading).
    pub(crate) fn with_capacity(count: i64) -> TreeBuilder {
        TreeBuilder {
            tree: SnapshotTree::with_capacity(usize::try_from(count).unwrap_or(0)),
            late: Vec::new(),
            on_retired: Vec::new(),
            last_seq: None,
            bad: None,
        }
    }

    /// A builder holding every row `read` hands to its sink, in the order given. For a
    /// large domain the rows are inserted on a second thread while `read` goes on: decoding
    /// rows (the store's reads, uuid parsing, string copies) and inserting them into the
    /// indexes each take a large share of an open, so on two CPUs the open takes about
    /// the longer of the two instead of their sum (a million snapshots: BENCHMARKS.md).
    /// Without a second thread (none could be started) the rows are inserted in turn.
    pub(crate) fn fill<E>(
        count: i64,
        read: impl FnOnce(&mut dyn FnMut(Row)) -> Result<(), E>,
    ) -> Result<TreeBuilder, E> {
        if count < PIPELINE_FROM {
            let mut builder = TreeBuilder::with_capacity(count);
            read(&mut |row| builder.add(row))?;
            return Ok(builder);
        }
        std::thread::scope(|scope| {
            // A few chunks in flight: the reader runs ahead without holding the domain twice.
            let (to_builder, rows) = mpsc::sync_channel::<Vec<Row>>(4);
            let worker = std::thread::Builder::new()
                .name("snaptree-load".into())
                .spawn_scoped(scope, move || {
                    let mut builder = TreeBuilder::with_capacity(count);
                    for chunk in rows {
                        for row in chunk {
                            builder.add(row);
                        }
                    }
                    builder
                });
            let Ok(worker) = worker else {
                let mut builder = TreeBuilder::with_capacity(count);
                read(&mut |row| builder.add(row))?;
                return Ok(builder);
            };
            let mut chunk = Vec::with_capacity(CHUNK);
            let read = read(&mut |row| {
                chunk.push(row);
                if chunk.len() == CHUNK {
                    // The receiver lives until every chunk is in: a send cannot fail.
                    let _ =
                        to_builder.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)));
                }
            });
            if !chunk.is_empty() {
                let _ = to_builder.send(chunk);
            }
            drop(to_builder);
            let builder = worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            read.map(|()| builder)
        })
    }

    /// One row; rows come in increasing `seq` order.
    pub(crate) fn add(&mut self, row: Row) {
        let Row {
            snapshot,
            parent,
            on_retired,
            seq,
        } = row;
        let Ok(seq) = u64::try_from(seq) else {
            self.bad.get_or_insert_with(|| {
                format!(
                    "snapshot '{}' has a negative sequence number {seq}",
                    snapshot.name
                )
            });
            return;
        };
        // The store's key is unique and the rows are read in its order: anything else is
        // not what the store holds.
        if self.last_seq.is_some_and(|last| seq <= last) {
            self.bad.get_or_insert_with(|| {
                format!(
                    "snapshot '{}' has sequence number {seq}, not after the row before it",
                    snapshot.name
                )
            });
        }
        self.last_seq = Some(seq);
        if let Some(r) = on_retired {
            self.on_retired.push((snapshot.uuid, r));
        }
        let mut parent = parent;
        if let Some(p) = parent
            && !self.tree.contains(&p)
        {
            self.late.push((snapshot.uuid, p));
            parent = None;
        }
        if let Err(e) = self.tree.insert_unordered(snapshot, parent, seq) {
            self.bad.get_or_insert_with(|| e.to_string());
        }
    }

    /// The tree, with its current snapshot, retired uuids (with their physical parent
    /// when known) and the retired layer the live state is on; or why the rows are
    /// inconsistent.
    pub(crate) fn finish(
        self,
        current: Option<Uuid>,
        retired: Vec<(Uuid, Option<Option<Uuid>>)>,
        live_on: Option<Uuid>,
    ) -> Result<SnapshotTree, String> {
        let mut tree = self.tree;
        if let Some(why) = self.bad {
            return Err(why);
        }
        tree.index_orders();
        for (child, parent) in self.late {
            if !tree.contains(&parent) {
                return Err(format!(
                    "snapshot {child} has parent {parent}, which does not exist"
                ));
            }
            tree.set_parent(&child, Some(parent))
                .map_err(|e| e.to_string())?;
        }
        if let Some(c) = current {
            tree.set_current(Some(c))
                .map_err(|_| format!("the current snapshot {c} does not exist"))?;
        }
        for (r, _) in &retired {
            tree.add_retired(*r);
        }
        for (r, parent) in retired {
            if let Some(p) = parent {
                tree.set_retired_parent(r, p).map_err(|e| e.to_string())?;
            }
        }
        for (s, r) in self.on_retired {
            tree.set_on_retired(s, Some(r)).map_err(|e| e.to_string())?;
        }
        tree.set_live_on_retired(live_on);
        Ok(tree)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PowerState;
    use crate::tree::Filter;

    fn snap(i: usize) -> Snapshot {
        Snapshot {
            uuid: Uuid::from_u128(0x5eed_0000 + i as u128),
            name: format!("s{i}"),
            description: String::new(),
            creation_date: i as i64,
            state: PowerState::Shutoff,
            expires: None,
            pinned: false,
        }
    }

    /// Rows of a branched forest: two roots, a long chain, fans, and one child stored
    /// before its parent (a leaf, attached late), as `seq` order can show after a redefine.
    fn rows(n: usize) -> Vec<Row> {
        let mut out: Vec<Row> = Vec::with_capacity(n);
        for i in 0..n {
            let parent = match i {
                0 | 1 => None,
                // The child of the last snapshot, stored first.
                2 => Some(snap(n - 1).uuid),
                3 => Some(snap(1).uuid),
                _ if i % 7 == 0 => Some(snap(i / 2).uuid),
                _ => Some(snap(i - 1).uuid),
            };
            out.push(row(i, parent));
        }
        out
    }

    fn row(i: usize, parent: Option<Uuid>) -> Row {
        Row {
            snapshot: snap(i),
            parent,
            on_retired: None,
            seq: 10 + 3 * i as i64,
        }
    }

    /// Every way the tree answers, as names: what a caller can see.
    fn shape(t: &SnapshotTree) -> Vec<Vec<String>> {
        let names = |v: Vec<&Snapshot>| v.iter().map(|s| s.name.clone()).collect::<Vec<_>>();
        let mut out = vec![
            names(t.list(Filter::All)),
            names(t.list(Filter::Roots)),
            names(t.list(Filter::Leaves)),
            names(t.list(Filter::Topological)),
            vec![
                t.len().to_string(),
                t.current().map_or(String::new(), |c| c.name.clone()),
            ],
        ];
        for s in t.iter() {
            let mut row = vec![s.name.clone()];
            row.extend(t.parent(&s.uuid).map(|p| p.name.clone()));
            row.extend(t.children(&s.uuid).iter().map(|c| c.name.clone()));
            out.push(row);
        }
        out
    }

    /// The same tree as inserting the rows one by one with `SnapshotTree::insert`, the
    /// late child attached last.
    fn expected(rows: &[Row], current: Uuid) -> SnapshotTree {
        let mut t = SnapshotTree::new();
        let mut late = Vec::new();
        for Row {
            snapshot: s,
            parent: p,
            ..
        } in rows
        {
            match p {
                Some(p) if !t.contains(p) => {
                    late.push((s.uuid, *p));
                    t.insert(s.clone(), None).expect("insert");
                }
                _ => t.insert(s.clone(), *p).expect("insert"),
            }
        }
        for (c, p) in late {
            t.set_parent(&c, Some(p)).expect("late parent");
        }
        t.set_current(Some(current)).expect("current");
        t
    }

    /// The tree built from `rows`, or why they are inconsistent.
    fn build(rows: Vec<Row>, current: Option<Uuid>) -> Result<SnapshotTree, String> {
        let n = rows.len() as i64;
        TreeBuilder::fill(n, |sink| {
            for r in rows {
                sink(r);
            }
            Ok::<(), ()>(())
        })
        .expect("no read error")
        .finish(current, Vec::new(), None)
    }

    fn built(rows: Vec<Row>, current: Uuid) -> SnapshotTree {
        build(rows, Some(current)).expect("consistent rows")
    }

    #[test]
    fn a_small_domain_is_built_as_inserting_each_row() {
        let rows = rows(500);
        let current = rows[250].snapshot.uuid;
        let want = shape(&expected(&rows, current));
        assert_eq!(shape(&built(rows, current)), want, "500 rows, one thread");
    }

    #[test]
    fn a_large_domain_built_on_a_second_thread_is_the_same_tree() {
        let n = PIPELINE_FROM as usize + 3 * CHUNK + 17;
        let rows = rows(n);
        let current = rows[n / 3].snapshot.uuid;
        let want = shape(&expected(&rows, current));
        let got = built(rows, current);
        assert_eq!(got.len(), n, "every row is in the tree");
        assert_eq!(shape(&got), want, "{n} rows through the loading thread");
    }

    #[test]
    fn a_read_error_part_way_is_returned_and_nothing_is_built() {
        for n in [100, PIPELINE_FROM as usize + 10] {
            let rows = rows(n);
            let got = TreeBuilder::fill(n as i64, |sink| {
                for (i, r) in rows.into_iter().enumerate() {
                    if i == n - 5 {
                        return Err("row cannot be read");
                    }
                    sink(r);
                }
                Ok(())
            });
            assert_eq!(
                got.err(),
                Some("row cannot be read"),
                "{n} rows: the reader's error"
            );
        }
    }

    #[test]
    fn a_duplicate_row_makes_the_rows_inconsistent_on_either_path() {
        for n in [100, PIPELINE_FROM as usize + 10] {
            let mut rows = rows(n);
            let mut again = row(7, None);
            again.seq = 10 + 3 * n as i64;
            rows.push(again);
            let why = build(rows, None).expect_err("a snapshot stored twice");
            assert!(
                why.contains("s7"),
                "{n} rows: the error names the snapshot: {why}"
            );
        }
    }

    #[test]
    fn stored_sequence_numbers_are_kept_and_new_snapshots_come_after_them() {
        let rows = rows(40);
        let last = rows.last().expect("rows").seq as u64;
        let seqs: Vec<(Uuid, u64)> = rows
            .iter()
            .map(|r| (r.snapshot.uuid, r.seq as u64))
            .collect();
        let mut t = built(rows, snap(3).uuid);
        for (uuid, seq) in seqs {
            assert_eq!(
                t.creation_seq(&uuid),
                Some(seq),
                "the stored number of {uuid}"
            );
        }
        assert_eq!(
            t.next_seq(),
            last + 1,
            "the next number follows the largest stored"
        );
        t.insert(snap(1000), None).expect("insert");
        assert_eq!(
            t.creation_seq(&snap(1000).uuid),
            Some(last + 1),
            "a new snapshot's number"
        );
    }

    #[test]
    fn rows_out_of_sequence_order_are_inconsistent() {
        for n in [100, PIPELINE_FROM as usize + 10] {
            let mut rows = rows(n);
            rows[n / 2].seq = rows[n / 2 - 1].seq;
            let name = rows[n / 2].snapshot.name.clone();
            let why = build(rows, None).expect_err("two rows with one sequence number");
            assert!(
                why.contains(&name) && why.contains("sequence number"),
                "{n} rows: the error names the snapshot and its number: {why}"
            );
        }
    }
}
