//! Retention (SEMANTICS.md §7.5): a domain's policy, and which snapshots `prune` deletes.
//!
//! The policy follows restic's `forget` and sanoid: keep the newest `last` snapshots, and
//! for each period kind (hour, day, ISO week, month, year, in UTC) the newest snapshot of
//! each of the `n` most recent periods that have a snapshot. A snapshot kept by any rule
//! is kept. Expired snapshots (`expires <= now`) are pruned whatever the policy says;
//! pinned snapshots and the current snapshot never are.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::model::Snapshot;
use crate::tree::SnapshotTree;

/// A domain's retention policy. A count of 0 turns its rule off; a policy whose every
/// count is 0 keeps nothing by itself (only pins and the current snapshot survive).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Keep the newest N snapshots.
    #[serde(default)]
    pub last: u32,
    /// Keep the newest snapshot of each of the N most recent hours that have one.
    #[serde(default)]
    pub hourly: u32,
    /// … days.
    #[serde(default)]
    pub daily: u32,
    /// … ISO weeks (Monday to Sunday).
    #[serde(default)]
    pub weekly: u32,
    /// … calendar months.
    #[serde(default)]
    pub monthly: u32,
    /// … calendar years.
    #[serde(default)]
    pub yearly: u32,
}

/// A period kind of a [`Policy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    /// A UTC hour.
    Hour,
    /// A UTC day.
    Day,
    /// An ISO week, Monday to Sunday, UTC.
    Week,
    /// A calendar month, UTC.
    Month,
    /// A calendar year, UTC.
    Year,
}

impl Period {
    /// Which period of this kind holds `t` (Unix seconds), as a number that grows with time.
    pub fn bucket(self, t: i64) -> i64 {
        let days = t.div_euclid(86_400);
        match self {
            Period::Hour => t.div_euclid(3_600),
            Period::Day => days,
            // 1970-01-01 was a Thursday: shifting by 3 days starts weeks on Mondays.
            Period::Week => (days + 3).div_euclid(7),
            Period::Month => {
                let (y, m, _) = civil_from_days(days);
                y * 12 + i64::from(m) - 1
            }
            Period::Year => civil_from_days(days).0,
        }
    }
}

impl Policy {
    /// The rules as (period, count), `last` excluded.
    pub fn periods(&self) -> [(Period, u32); 5] {
        [
            (Period::Hour, self.hourly),
            (Period::Day, self.daily),
            (Period::Week, self.weekly),
            (Period::Month, self.monthly),
            (Period::Year, self.yearly),
        ]
    }

    /// The policy in words, as `snaptree policy` shows it: "last=3 daily=7".
    pub fn describe(&self) -> String {
        let parts: Vec<String> = [
            ("last", self.last),
            ("hourly", self.hourly),
            ("daily", self.daily),
            ("weekly", self.weekly),
            ("monthly", self.monthly),
            ("yearly", self.yearly),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
        if parts.is_empty() {
            "keep nothing but pinned snapshots and the current one".to_string()
        } else {
            parts.join(" ")
        }
    }

    /// The snapshots the policy keeps, from every snapshot of a domain in creation order.
    pub fn kept(&self, snapshots: &[&Snapshot]) -> BTreeSet<Uuid> {
        // Newest first; of two with the same date, the later created is the newer (a
        // stable sort of the reversed creation order).
        let mut newest_first: Vec<&Snapshot> = snapshots.iter().rev().copied().collect();
        newest_first.sort_by_key(|s| std::cmp::Reverse(s.creation_date));
        let mut kept: BTreeSet<Uuid> = newest_first
            .iter()
            .take(self.last as usize)
            .map(|s| s.uuid)
            .collect();
        for (period, count) in self.periods() {
            let mut seen: BTreeSet<i64> = BTreeSet::new();
            for s in &newest_first {
                if seen.len() >= count as usize {
                    break;
                }
                if seen.insert(period.bucket(s.creation_date)) {
                    kept.insert(s.uuid);
                }
            }
        }
        kept
    }
}

/// Why `prune` deletes a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PruneReason {
    /// Its `<expires>` has passed.
    Expired,
    /// The retention policy does not keep it.
    OutsidePolicy,
}

impl PruneReason {
    /// The reason in words.
    pub fn as_str(self) -> &'static str {
        match self {
            PruneReason::Expired => "expired",
            PruneReason::OutsidePolicy => "outside the retention policy",
        }
    }
}

/// The snapshots `prune` deletes, oldest first (of the same date, the earlier created
/// first), each with its reason: every expired one
/// and, under a policy, every one the policy does not keep; never the current snapshot,
/// never a pinned one.
pub fn prune_victims(
    tree: &SnapshotTree,
    policy: Option<&Policy>,
    now: i64,
) -> Vec<(Uuid, PruneReason)> {
    let all: Vec<&Snapshot> = tree.iter().collect();
    let kept = policy.map(|p| p.kept(&all));
    let current = tree.current().map(|c| c.uuid);
    let mut victims: Vec<(&Snapshot, PruneReason)> = all
        .iter()
        .filter(|s| !s.pinned && Some(s.uuid) != current)
        .filter_map(|s| {
            if s.expires.is_some_and(|e| e <= now) {
                Some((*s, PruneReason::Expired))
            } else if kept.as_ref().is_some_and(|k| !k.contains(&s.uuid)) {
                Some((*s, PruneReason::OutsidePolicy))
            } else {
                None
            }
        })
        .collect();
    // `tree.iter()` is creation order, which the stable sort keeps among equal dates.
    victims.sort_by_key(|(s, _)| s.creation_date);
    victims.into_iter().map(|(s, r)| (s.uuid, r)).collect()
}

/// One snapshot `prune` deleted, or with `--dry-run` would delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pruned {
    /// The snapshot's uuid.
    pub uuid: Uuid,
    /// Its name.
    pub name: String,
    /// Why it goes.
    pub reason: PruneReason,
    /// Its CONSOLIDATE delete, planned on the tree the earlier deletes leave.
    pub plan: crate::plan::Plan,
    /// The bytes the backend estimates the delete frees, net of what it writes, summed
    /// over every file system (SEMANTICS.md §7.7); None when the backend cannot estimate.
    pub freed: Option<u64>,
}

/// Parses a policy from `key=count` words ("last=5 daily=7"), as `snaptree policy` and
/// the C API take it. Unknown keys and bad counts are `INVALID_ARG` naming them.
pub fn parse_policy(words: &[&str]) -> Result<Policy> {
    let mut p = Policy::default();
    for word in words {
        let (key, value) = word.split_once('=').ok_or_else(|| {
            Error::InvalidArg(format!(
                "retention rule '{}' is not KEY=COUNT",
                word.escape_default()
            ))
        })?;
        let n: u32 = value.trim().parse().map_err(|_| {
            Error::InvalidArg(format!(
                "retention rule '{}' needs a whole number",
                word.escape_default()
            ))
        })?;
        let slot = match key.trim() {
            "last" => &mut p.last,
            "hourly" => &mut p.hourly,
            "daily" => &mut p.daily,
            "weekly" => &mut p.weekly,
            "monthly" => &mut p.monthly,
            "yearly" => &mut p.yearly,
            other => {
                return Err(Error::InvalidArg(format!(
                    "unknown retention rule '{}': expected last, hourly, daily, weekly, monthly or yearly",
                    other.escape_default()
                )));
            }
        };
        *slot = n;
    }
    Ok(p)
}

/// The proleptic Gregorian (year, month 1-12, day 1-31) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The day count since 1970-01-01 of a proleptic Gregorian date (Hinnant's
/// `days_from_civil`).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A Unix time as `YYYYMMDDTHHMMSSZ`, for names made from the time.
pub fn compact_utc(t: i64) -> String {
    let (y, m, d) = civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3_600,
        s / 60 % 60,
        s % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::PowerState;

    fn snap(t: i64) -> Snapshot {
        Snapshot {
            uuid: Uuid::new_v4(),
            name: t.to_string(),
            description: String::new(),
            creation_date: t,
            state: PowerState::Shutoff,
            expires: None,
            pinned: false,
        }
    }

    #[test]
    fn civil_dates_round_trip_and_match_known_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        // 2000-03-01 is day 11017; 2024-02-29 is day 19782.
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        for d in (-800_000..800_000).step_by(997) {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(compact_utc(1_700_000_000), "20231114T221320Z");
    }

    #[test]
    fn weeks_start_on_monday() {
        // 2024-01-07 was a Sunday, 2024-01-08 a Monday.
        let sunday = days_from_civil(2024, 1, 7) * 86_400;
        let monday = days_from_civil(2024, 1, 8) * 86_400;
        assert_eq!(
            Period::Week.bucket(sunday - 86_400 * 6),
            Period::Week.bucket(sunday)
        );
        assert_ne!(Period::Week.bucket(sunday), Period::Week.bucket(monday));
    }

    #[test]
    fn keeps_the_newest_of_each_recent_period_and_the_last_n() {
        let day = 86_400;
        // Two snapshots a day for five days.
        let snaps: Vec<Snapshot> = (0..10).map(|i| snap(day * 100 + i * day / 2)).collect();
        let refs: Vec<&Snapshot> = snaps.iter().collect();
        let p = Policy {
            daily: 3,
            ..Policy::default()
        };
        let kept = p.kept(&refs);
        let want: BTreeSet<Uuid> = [9, 7, 5].iter().map(|i| snaps[*i].uuid).collect();
        assert_eq!(kept, want);
        let p = Policy {
            last: 2,
            daily: 1,
            ..Policy::default()
        };
        let want: BTreeSet<Uuid> = [9, 8].iter().map(|i| snaps[*i].uuid).collect();
        assert_eq!(p.kept(&refs), want);
    }

    #[test]
    fn parses_rules_and_names_a_bad_one() {
        let p = parse_policy(&["last=3", "monthly=6"]).unwrap();
        assert_eq!((p.last, p.monthly), (3, 6));
        assert_eq!(p.describe(), "last=3 monthly=6");
        let e = parse_policy(&["fortnightly=2"]).unwrap_err();
        assert!(e.to_string().contains("'fortnightly'"), "{e}");
        assert!(parse_policy(&["daily=x"]).is_err());
        assert!(parse_policy(&["daily"]).is_err());
    }
}
