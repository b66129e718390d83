//! Retention policies: which snapshots `cairn forget` keeps.
//!
//! [`plan`] is a pure function. It takes the snapshots, a [`Policy`], a
//! [`GroupBy`], the current time and a time zone, and returns a [`Plan`] that
//! records for every snapshot whether it is kept and which rules keep it. It
//! reads and deletes nothing; [`Repository::forget`](crate::Repository::forget)
//! deletes the snapshot objects the plan removes.
//!
//! The rules follow restic and borg. Snapshots are split into groups (by
//! default host plus entry names), and each group is handled on its own:
//!
//! - `keep_last N` keeps the N newest snapshots.
//! - `keep_hourly`, `keep_daily`, `keep_weekly`, `keep_monthly` and
//!   `keep_yearly N` walk the snapshots newest first and keep the newest
//!   snapshot of each bucket until N buckets are kept. Buckets are calendar
//!   units in the given time zone (local date and hour, local date, ISO 8601
//!   week, year and month, year), not fixed windows of 24 hours. So a change
//!   of daylight saving time neither splits nor merges a day.
//! - `keep_within D` keeps every snapshot taken at or after `now - D`, with
//!   `D` subtracted on the calendar of the time zone.
//! - `keep_tags` keeps every snapshot that has one of the tags.
//!
//! Snapshots dated more than [`FUTURE_TOLERANCE`] after `now` are always
//! kept, take no part in the other rules and produce a warning. The newest
//! remaining snapshot of each group is kept even when no rule keeps it,
//! unless the policy sets `keep_last` to 0.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use jiff::civil::Date;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp, Zoned};
use serde::{Serialize, Serializer};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::snapshot::{self, Snapshot};

/// How far a snapshot may be dated after `now` before it counts as dated in
/// the future. The margin absorbs small clock differences between hosts.
pub const FUTURE_TOLERANCE: SignedDuration = SignedDuration::from_mins(1);

/// The fields of a snapshot that retention looks at.
#[derive(Debug, Clone, PartialEq)]
pub struct SnapshotInfo {
    /// Snapshot id.
    pub id: Id,
    /// Start time of the backup.
    pub time: Timestamp,
    /// Host that made the snapshot.
    pub host: String,
    /// Entry names, in any order.
    pub entries: Vec<String>,
    /// Tags, in any order.
    pub tags: Vec<String>,
}

impl SnapshotInfo {
    /// Extracts the retention fields of a manifest.
    ///
    /// Fails with [`Error::Corrupt`] when the manifest's time is not an RFC
    /// 3339 timestamp, since such a snapshot cannot be placed in a bucket.
    pub fn from_snapshot(id: Id, snapshot: &Snapshot) -> Result<SnapshotInfo> {
        let time = parse_timestamp(&snapshot.time).map_err(|_| {
            Error::corrupt(
                snapshot::snapshot_path(&id),
                format!("time {:?} is not an RFC 3339 timestamp", snapshot.time),
            )
        })?;
        Ok(SnapshotInfo {
            id,
            time,
            host: snapshot.host.clone(),
            entries: snapshot.entries.iter().map(|e| e.name.clone()).collect(),
            tags: snapshot.tags.clone(),
        })
    }
}

/// Parses an RFC 3339 timestamp with an offset, such as
/// `2026-12-03T02:00:00Z` or `2026-12-03T03:00:00+01:00`.
pub fn parse_timestamp(text: &str) -> Result<Timestamp> {
    text.trim().parse::<Timestamp>().map_err(|e| {
        Error::Invalid(format!(
            "{text:?} is not an RFC 3339 timestamp such as 2026-12-03T02:00:00Z: {e}"
        ))
    })
}

/// Maps a local time to the calendar bucket of one rule.
type BucketOf = fn(&Zoned) -> Reason;

/// A retention policy. Every rule that is `Some` (or a non-empty tag list)
/// keeps snapshots, and a snapshot is kept when at least one rule keeps it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Policy {
    /// Keep the N newest snapshots. `Some(0)` also lifts the guarantee that
    /// the newest snapshot of each group is kept.
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N local hours that have one.
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N local dates that have one.
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO 8601 weeks that have one.
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have one.
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have one.
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken within this duration before `now`.
    pub keep_within: Option<KeepWithin>,
    /// Keep every snapshot that has one of these tags.
    pub keep_tags: Vec<String>,
}

impl Policy {
    /// Returns true when the policy has no rule at all.
    pub fn is_empty(&self) -> bool {
        self.keep_last.is_none()
            && self.keep_hourly.is_none()
            && self.keep_daily.is_none()
            && self.keep_weekly.is_none()
            && self.keep_monthly.is_none()
            && self.keep_yearly.is_none()
            && self.keep_within.is_none()
            && self.keep_tags.is_empty()
    }

    /// Rejects a policy without rules, which would keep nothing but the
    /// newest snapshot of each group.
    pub fn validate(&self) -> Result<()> {
        if self.is_empty() {
            return Err(Error::Invalid(
                "no keep rule given; nothing would be kept. Pass at least one of --keep-last, \
                 --keep-hourly, --keep-daily, --keep-weekly, --keep-monthly, --keep-yearly, \
                 --keep-within or --keep-tag"
                    .into(),
            ));
        }
        Ok(())
    }

    fn calendar_rules(&self) -> [(Option<u32>, BucketOf); 5] {
        [
            (self.keep_hourly, |t| Reason::Hourly {
                date: t.date(),
                hour: t.hour(),
            }),
            (self.keep_daily, |t| Reason::Daily(t.date())),
            (self.keep_weekly, |t| {
                let week = t.date().iso_week_date();
                Reason::Weekly {
                    year: week.year(),
                    week: week.week(),
                }
            }),
            (self.keep_monthly, |t| Reason::Monthly {
                year: t.year(),
                month: t.month(),
            }),
            (self.keep_yearly, |t| Reason::Yearly(t.year())),
        ]
    }
}

/// The duration of `keep_within`: a sum of years (`y`), months (`m`), weeks
/// (`w`), days (`d`) and hours (`h`), such as `30d`, `12h`, `2w` or `1y2m`.
///
/// Years, months and days are calendar units: `1m` before 31 March is the
/// last day of February, and `1d` before a change of daylight saving time
/// is 23 or 25 hours. Minutes are not a unit, because `m` means months.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeepWithin {
    years: u32,
    months: u32,
    weeks: u32,
    days: u32,
    hours: u32,
    text: String,
}

impl KeepWithin {
    /// Returns the duration as the user wrote it, without surrounding spaces.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn span(&self) -> Result<Span, jiff::Error> {
        Span::new()
            .try_years(self.years)?
            .try_months(self.months)?
            .try_weeks(self.weeks)?
            .try_days(self.days)?
            .try_hours(self.hours)
    }

    /// Returns the oldest time that the rule keeps: `now` minus the
    /// duration, on the calendar of `tz`. A duration that reaches before the
    /// earliest representable time keeps everything.
    pub fn cutoff(&self, now: Timestamp, tz: &TimeZone) -> Timestamp {
        self.span()
            .and_then(|span| now.to_zoned(tz.clone()).checked_sub(span))
            .map(|zoned| zoned.timestamp())
            .unwrap_or(Timestamp::MIN)
    }
}

impl FromStr for KeepWithin {
    type Err = Error;

    fn from_str(text: &str) -> Result<KeepWithin> {
        let trimmed = text.trim();
        let invalid = |reason: &str| {
            Error::Invalid(format!(
                "duration {text:?} is invalid: {reason}. Write numbers with the units y (years), \
                 m (months), w (weeks), d (days) or h (hours), such as 30d, 12h or 1y2m"
            ))
        };
        let mut within = KeepWithin {
            years: 0,
            months: 0,
            weeks: 0,
            days: 0,
            hours: 0,
            text: trimmed.to_string(),
        };
        if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        }

        let mut seen = String::new();
        let mut rest = trimmed;
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                return Err(invalid("each unit needs a number before it"));
            }
            let number: u32 = rest[..digits]
                .parse()
                .map_err(|_| invalid("a number is too large"))?;
            let Some(unit) = rest[digits..].chars().next() else {
                return Err(invalid("the last number has no unit"));
            };
            if seen.contains(unit) {
                return Err(invalid(&format!("the unit {unit} is given twice")));
            }
            seen.push(unit);
            let field = match unit {
                'y' => &mut within.years,
                'm' => &mut within.months,
                'w' => &mut within.weeks,
                'd' => &mut within.days,
                'h' => &mut within.hours,
                other => return Err(invalid(&format!("{other:?} is not a unit"))),
            };
            *field = number;
            rest = &rest[digits + unit.len_utf8()..];
        }

        if within.span().is_err() {
            return Err(invalid("it is longer than the calendar supports"));
        }
        if [
            within.years,
            within.months,
            within.weeks,
            within.days,
            within.hours,
        ]
        .iter()
        .all(|&n| n == 0)
        {
            return Err(invalid("it is zero"));
        }
        Ok(within)
    }
}

impl fmt::Display for KeepWithin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Snapshot fields that form a group. Rules apply to each group on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupBy {
    /// Group by host name.
    pub host: bool,
    /// Group by the sorted set of entry names.
    pub entries: bool,
    /// Group by the sorted set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    /// Host plus entry names: the backups of one database on one machine.
    fn default() -> Self {
        GroupBy {
            host: true,
            entries: true,
            tags: false,
        }
    }
}

impl FromStr for GroupBy {
    type Err = Error;

    /// Parses a comma list of `host`, `entries` and `tags`. An empty string
    /// puts all snapshots in one group.
    fn from_str(text: &str) -> Result<GroupBy> {
        let mut group_by = GroupBy {
            host: false,
            entries: false,
            tags: false,
        };
        for field in text.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            match field {
                "host" => group_by.host = true,
                "entries" => group_by.entries = true,
                "tags" => group_by.tags = true,
                other => {
                    return Err(Error::Invalid(format!(
                        "{other:?} is not a grouping field; use a comma list of host, entries \
                         and tags, or an empty string for one group of all snapshots"
                    )));
                }
            }
        }
        Ok(group_by)
    }
}

/// The values that identify a group. A field is `None` when the grouping
/// does not use it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct GroupKey {
    /// Host name.
    pub host: Option<String>,
    /// Entry names, sorted, without duplicates.
    pub entries: Option<Vec<String>>,
    /// Tags, sorted, without duplicates.
    pub tags: Option<Vec<String>>,
}

fn sorted_set(items: &[String]) -> Vec<String> {
    let mut sorted = items.to_vec();
    sorted.sort();
    sorted.dedup();
    sorted
}

impl GroupKey {
    /// Returns the group of `snapshot` under `group_by`.
    pub fn of(snapshot: &SnapshotInfo, group_by: GroupBy) -> GroupKey {
        GroupKey {
            host: group_by.host.then(|| snapshot.host.clone()),
            entries: group_by.entries.then(|| sorted_set(&snapshot.entries)),
            tags: group_by.tags.then(|| sorted_set(&snapshot.tags)),
        }
    }
}

impl fmt::Display for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        if let Some(host) = &self.host {
            parts.push(format!("host {host}"));
        }
        if let Some(entries) = &self.entries {
            parts.push(format!("entries [{}]", entries.join(", ")));
        }
        if let Some(tags) = &self.tags {
            parts.push(format!("tags [{}]", tags.join(", ")));
        }
        if parts.is_empty() {
            f.write_str("all snapshots")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// Rule that keeps a snapshot. Calendar reasons name their bucket.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Among the `keep_last` newest, with its rank (1 for the newest).
    Last(u32),
    /// Newest of a local hour.
    Hourly {
        /// Local date.
        date: Date,
        /// Local hour, 0 to 23.
        hour: i8,
    },
    /// Newest of a local date.
    Daily(Date),
    /// Newest of an ISO 8601 week.
    Weekly {
        /// ISO week-numbering year, which differs from the calendar year
        /// for some days around 1 January.
        year: i16,
        /// Week, 1 to 53.
        week: i8,
    },
    /// Newest of a month.
    Monthly {
        /// Year.
        year: i16,
        /// Month, 1 to 12.
        month: i8,
    },
    /// Newest of a year.
    Yearly(i16),
    /// Taken within the `keep_within` duration, as written by the user.
    Within(String),
    /// Has a tag listed in `keep_tags`.
    Tag(String),
    /// The newest snapshot of its group, kept although no rule keeps it.
    NewestOfGroup,
    /// Dated more than [`FUTURE_TOLERANCE`] after `now`.
    Future,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Last(rank) => write!(f, "last {rank}"),
            Reason::Hourly { date, hour } => write!(f, "hourly {date} {hour:02}:00"),
            Reason::Daily(date) => write!(f, "daily {date}"),
            Reason::Weekly { year, week } => write!(f, "weekly {year:04}-W{week:02}"),
            Reason::Monthly { year, month } => write!(f, "monthly {year:04}-{month:02}"),
            Reason::Yearly(year) => write!(f, "yearly {year:04}"),
            Reason::Within(duration) => write!(f, "within {duration}"),
            Reason::Tag(tag) => write!(f, "tag {tag}"),
            Reason::NewestOfGroup => f.write_str("newest of group"),
            Reason::Future => f.write_str("dated in the future"),
        }
    }
}

impl Serialize for Reason {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// The outcome for one snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// Snapshot id.
    pub id: Id,
    /// Start time of the backup.
    pub time: Timestamp,
    /// Whether the snapshot is kept.
    pub keep: bool,
    /// The rules that keep it. It is empty exactly when the snapshot is removed.
    pub reasons: Vec<Reason>,
}

/// The decisions for one group, newest snapshot first.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPlan {
    /// The values shared by the group's snapshots.
    pub key: GroupKey,
    /// One decision per snapshot, newest first.
    pub decisions: Vec<Decision>,
}

/// The outcome of a policy for a set of snapshots.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// Groups in the order of their keys.
    pub groups: Vec<GroupPlan>,
    /// Messages for the operator, such as snapshots dated in the future.
    pub warnings: Vec<String>,
}

impl Plan {
    /// Ids of the snapshots the plan removes.
    pub fn removed(&self) -> Vec<Id> {
        self.decisions().filter(|d| !d.keep).map(|d| d.id).collect()
    }

    /// Number of snapshots the plan keeps.
    pub fn kept_count(&self) -> usize {
        self.decisions().filter(|d| d.keep).count()
    }

    fn decisions(&self) -> impl Iterator<Item = &Decision> {
        self.groups.iter().flat_map(|g| g.decisions.iter())
    }
}

/// Applies `policy` to `snapshots`, grouped by `group_by`, with calendar
/// buckets in `tz`. `now` is the reference for `keep_within` and for
/// detecting snapshots dated in the future.
///
/// Fails only when the policy has no rule ([`Policy::validate`]).
pub fn plan(
    snapshots: &[SnapshotInfo],
    policy: &Policy,
    group_by: GroupBy,
    now: Timestamp,
    tz: &TimeZone,
) -> Result<Plan> {
    policy.validate()?;
    let mut groups: BTreeMap<GroupKey, Vec<&SnapshotInfo>> = BTreeMap::new();
    for snapshot in snapshots {
        groups
            .entry(GroupKey::of(snapshot, group_by))
            .or_default()
            .push(snapshot);
    }
    let mut result = Plan::default();
    for (key, mut members) in groups {
        members.sort_by(|a, b| b.time.cmp(&a.time).then(b.id.cmp(&a.id)));
        let decisions = decide_group(&members, policy, now, tz, &mut result.warnings);
        result.groups.push(GroupPlan { key, decisions });
    }
    Ok(result)
}

/// Decides for one group whose members are sorted newest first.
fn decide_group(
    members: &[&SnapshotInfo],
    policy: &Policy,
    now: Timestamp,
    tz: &TimeZone,
    warnings: &mut Vec<String>,
) -> Vec<Decision> {
    let future_limit = now.checked_add(FUTURE_TOLERANCE).unwrap_or(Timestamp::MAX);
    let mut reasons: Vec<Vec<Reason>> = vec![Vec::new(); members.len()];

    // Snapshots dated in the future are kept and left out of every other
    // rule, so that a wrong clock cannot push real snapshots out of the
    // counted buckets or stand in for the newest one.
    let mut eligible = Vec::new();
    for (i, snapshot) in members.iter().enumerate() {
        if snapshot.time > future_limit {
            reasons[i].push(Reason::Future);
            warnings.push(format!(
                "snapshot {} of host {} is dated {}, later than the current time {}; it is \
                 kept. Check the clock of that host",
                snapshot.id.short(),
                snapshot.host,
                snapshot.time,
                now
            ));
        } else {
            eligible.push(i);
        }
    }

    if let Some(count) = policy.keep_last {
        for (rank, &i) in (1..=count).zip(&eligible) {
            reasons[i].push(Reason::Last(rank));
        }
    }

    let local: Vec<Zoned> = members
        .iter()
        .map(|s| s.time.to_zoned(tz.clone()))
        .collect();
    for (count, bucket_of) in policy.calendar_rules() {
        let Some(mut remaining) = count else {
            continue;
        };
        let mut seen = HashSet::new();
        for &i in &eligible {
            if remaining == 0 {
                break;
            }
            let bucket = bucket_of(&local[i]);
            // Newest first, so the first snapshot met in a bucket is its newest.
            if seen.insert(bucket.clone()) {
                reasons[i].push(bucket);
                remaining -= 1;
            }
        }
    }

    if let Some(within) = &policy.keep_within {
        let cutoff = within.cutoff(now, tz);
        for &i in &eligible {
            if members[i].time >= cutoff {
                reasons[i].push(Reason::Within(within.as_str().to_string()));
            }
        }
    }

    if !policy.keep_tags.is_empty() {
        for (i, snapshot) in members.iter().enumerate() {
            for tag in sorted_set(&snapshot.tags) {
                if policy.keep_tags.contains(&tag) {
                    reasons[i].push(Reason::Tag(tag));
                }
            }
        }
    }

    if policy.keep_last != Some(0)
        && let Some(&newest) = eligible.first()
        && reasons[newest].is_empty()
    {
        reasons[newest].push(Reason::NewestOfGroup);
    }

    members
        .iter()
        .zip(reasons)
        .map(|(snapshot, reasons)| Decision {
            id: snapshot.id,
            time: snapshot.time,
            keep: !reasons.is_empty(),
            reasons,
        })
        .collect()
}

#[cfg(test)]
mod tests;
