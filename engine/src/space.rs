//! Space (SEMANTICS.md §7.7): what a backend estimates a step will write and free on each
//! file system, summed over a plan, and the check that refuses a plan that cannot fit
//! before anything runs.

use serde::{Deserialize, Serialize};

/// One step's use of one file system, as the backend estimates it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceUse {
    /// The file system's identity (its device number): equal for every file on it.
    pub fs: u64,
    /// A path naming it in messages (its mount point).
    pub path: String,
    /// Bytes the step newly allocates there.
    pub written: u64,
    /// Bytes the step frees there once it succeeds.
    pub freed: u64,
    /// Bytes free there now.
    pub free: u64,
}

/// A plan's use of one file system: its steps' estimates summed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSystemSpace {
    /// The file system's identity (its device number).
    pub fs: u64,
    /// A path naming it (its mount point).
    pub path: String,
    /// Bytes the plan writes there.
    pub written: u64,
    /// Bytes the plan frees there.
    pub freed: u64,
    /// Bytes free there before the plan.
    pub free_before: u64,
}

impl FileSystemSpace {
    /// Bytes free there after the plan, as estimated.
    pub fn free_after(&self) -> u64 {
        (self.free_before + self.freed).saturating_sub(self.written)
    }

    /// Whether the plan's writes fit. Frees are not counted against them: a step frees
    /// only once it is done, after its writes.
    pub fn fits(&self) -> bool {
        self.written <= self.free_before
    }
}

/// A plan's estimated use of every file system it touches, in the order first met.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpaceEstimate {
    /// One entry per file system.
    pub file_systems: Vec<FileSystemSpace>,
}

impl SpaceEstimate {
    /// Adds one step's estimate.
    pub fn add(&mut self, uses: &[SpaceUse]) {
        for u in uses {
            match self.file_systems.iter_mut().find(|f| f.fs == u.fs) {
                Some(f) => {
                    f.written += u.written;
                    f.freed += u.freed;
                }
                None => self.file_systems.push(FileSystemSpace {
                    fs: u.fs,
                    path: u.path.clone(),
                    written: u.written,
                    freed: u.freed,
                    free_before: u.free,
                }),
            }
        }
    }

    /// The first file system the plan does not fit on, if any.
    pub fn shortfall(&self) -> Option<&FileSystemSpace> {
        self.file_systems.iter().find(|f| !f.fits())
    }
}

/// What one snapshot holds (ZFS's `used` for snapshot trees), as its backend estimates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotSize {
    /// Bytes held only by this snapshot's own data (what freeing its data releases before
    /// anything is copied out of it).
    pub held: u64,
    /// Bytes a CONSOLIDATE delete of it would free: what it holds less what its
    /// dependents must take over (0 when they take over more than it frees).
    pub frees: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on(fs: u64, written: u64, freed: u64, free: u64) -> SpaceUse {
        SpaceUse {
            fs,
            path: format!("/fs{fs}"),
            written,
            freed,
            free,
        }
    }

    #[test]
    fn steps_sum_per_file_system_and_the_first_free_reading_counts() {
        let mut e = SpaceEstimate::default();
        e.add(&[on(1, 10, 0, 100), on(2, 5, 3, 7)]);
        e.add(&[on(1, 20, 40, 90)]);
        assert_eq!(e.file_systems.len(), 2);
        let a = &e.file_systems[0];
        assert_eq!(
            (a.written, a.freed, a.free_before, a.free_after()),
            (30, 40, 100, 110)
        );
        assert!(e.shortfall().is_none());
        e.add(&[on(2, 3, 0, 7)]);
        // 8 bytes written on a file system with 7 free; frees do not count before the end.
        assert_eq!(e.shortfall().map(|f| f.fs), Some(2));
    }
}
