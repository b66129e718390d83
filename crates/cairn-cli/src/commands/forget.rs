//! `cairn forget`.

use anyhow::Result;
use cairn_core::retention::{self, Decision, GroupBy, KeepWithin, Plan, Policy, SnapshotInfo};
use clap::Args;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use serde::Serialize;

use crate::GlobalArgs;

/// Arguments of `cairn forget`.
#[derive(Args, Debug)]
#[command(after_help = "Examples:\n  \
    cairn forget --keep-daily 30\n  \
    cairn forget --keep-daily 7 --keep-weekly 4 --keep-monthly 12 --dry-run\n\n\
Each rule keeps snapshots on its own; a snapshot is kept when any rule keeps it. Rules apply to \
each group (by default the snapshots of one host with the same entry names). The newest snapshot \
of each group is always kept, unless --keep-last 0 is given. forget deletes only snapshot \
objects; `cairn prune` then reclaims the space of data no snapshot needs.")]
pub struct ForgetArgs {
    /// Keep the N newest snapshots of each group; 0 also allows removing the newest.
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest snapshot of each of the last N hours that have snapshots.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest snapshot of each of the last N days that have snapshots.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest snapshot of each of the last N ISO weeks that have snapshots.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest snapshot of each of the last N months that have snapshots.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Keep the newest snapshot of each of the last N years that have snapshots.
    #[arg(long, value_name = "N")]
    pub keep_yearly: Option<u32>,
    /// Keep every snapshot taken within DURATION before now: numbers with the units
    /// y (years), m (months), w (weeks), d (days) or h (hours), such as 30d or 1y6m.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<KeepWithin>,
    /// Keep every snapshot that has this tag; repeat for several.
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Snapshot fields that form a group, as a comma list of host, entries and tags;
    /// an empty value puts all snapshots in one group.
    #[arg(long, value_name = "LIST", default_value = "host,entries")]
    pub group_by: GroupBy,
    /// Count hours, days, weeks, months and years in UTC instead of the local time zone.
    #[arg(long)]
    pub utc: bool,
    /// Print what would be removed and change nothing.
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run `cairn prune` right after forgetting, with its default settings.
    #[arg(long)]
    pub prune: bool,
    /// Current time to apply the rules at, RFC 3339; for tests.
    #[arg(long, hide = true, value_name = "RFC3339", value_parser = parse_now)]
    pub now: Option<Timestamp>,
}

fn parse_now(text: &str) -> Result<Timestamp, String> {
    retention::parse_timestamp(text).map_err(|e| e.to_string())
}

impl ForgetArgs {
    fn policy(&self) -> Policy {
        Policy {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            keep_yearly: self.keep_yearly,
            keep_within: self.keep_within.clone(),
            keep_tags: self.keep_tags.clone(),
        }
    }
}

/// Chooses the time zone of the calendar buckets and returns it with the
/// name to show for it.
fn choose_time_zone(utc: bool) -> (TimeZone, String) {
    if utc {
        return (TimeZone::UTC, "UTC".into());
    }
    match TimeZone::try_system() {
        Ok(tz) => {
            let name = match (tz.iana_name(), std::env::var("TZ")) {
                (Some(name), _) => name.to_string(),
                (None, Ok(value)) if !value.is_empty() => format!("TZ={value}"),
                (None, _) => "of the system (unnamed)".into(),
            };
            (tz, name)
        }
        Err(e) => {
            eprintln!(
                "cairn: warning: cannot determine the local time zone ({e}); using UTC. Set TZ, such as TZ=Europe/Berlin, or pass --utc"
            );
            (TimeZone::UTC, "UTC".into())
        }
    }
}

#[derive(Serialize)]
struct SnapshotRow {
    id: String,
    time: String,
    local_time: String,
    keep: bool,
    reasons: Vec<String>,
}

#[derive(Serialize)]
struct GroupRow {
    key: retention::GroupKey,
    snapshots: Vec<SnapshotRow>,
}

#[derive(Serialize)]
struct ForgetReport {
    dry_run: bool,
    time_zone: String,
    now: String,
    warnings: Vec<String>,
    groups: Vec<GroupRow>,
    kept: usize,
    removed: usize,
    removed_ids: Vec<String>,
}

fn local_time(decision: &Decision, tz: &TimeZone) -> String {
    decision
        .time
        .to_zoned(tz.clone())
        .strftime("%Y-%m-%d %H:%M:%S %:z")
        .to_string()
}

fn report(
    plan: &Plan,
    args: &ForgetArgs,
    tz: &TimeZone,
    name: &str,
    now: Timestamp,
) -> ForgetReport {
    let removed = plan.removed();
    ForgetReport {
        dry_run: args.dry_run,
        time_zone: name.to_string(),
        now: now.to_string(),
        warnings: plan.warnings.clone(),
        groups: plan
            .groups
            .iter()
            .map(|group| GroupRow {
                key: group.key.clone(),
                snapshots: group
                    .decisions
                    .iter()
                    .map(|d| SnapshotRow {
                        id: d.id.to_hex(),
                        time: d.time.to_string(),
                        local_time: local_time(d, tz),
                        keep: d.keep,
                        reasons: d.reasons.iter().map(ToString::to_string).collect(),
                    })
                    .collect(),
            })
            .collect(),
        kept: plan.kept_count(),
        removed: removed.len(),
        removed_ids: removed.iter().map(|id| id.to_hex()).collect(),
    }
}

/// Returns whether `tz` has an offset other than UTC's at `now` or at any
/// snapshot time of the plan, that is, whether `--utc` would change any
/// calendar bucket.
fn differs_from_utc(plan: &Plan, tz: &TimeZone, now: Timestamp) -> bool {
    let snapshot_times = plan
        .groups
        .iter()
        .flat_map(|group| group.decisions.iter().map(|decision| decision.time));
    std::iter::once(now)
        .chain(snapshot_times)
        .any(|time| tz.to_offset(time) != jiff::tz::Offset::UTC)
}

fn print_plan(plan: &Plan, tz: &TimeZone, name: &str, now: Timestamp) -> Result<()> {
    if name == "UTC" {
        crate::say!("calendar buckets in UTC");
    } else if differs_from_utc(plan, tz, now) {
        crate::say!("calendar buckets in time zone {name}; pass --utc for UTC");
    } else {
        crate::say!("calendar buckets in time zone {name} (the same as UTC for these snapshots)");
    }
    if plan.groups.is_empty() {
        crate::say!("no snapshots");
    }
    for group in &plan.groups {
        let kept = group.decisions.iter().filter(|d| d.keep).count();
        crate::say!(
            "{}: keeping {kept} of {} snapshot(s)",
            group.key,
            group.decisions.len()
        );
        for decision in &group.decisions {
            let reasons: Vec<String> = decision.reasons.iter().map(ToString::to_string).collect();
            let line = format!(
                "  {:<6}  {}  {}  {}",
                if decision.keep { "keep" } else { "remove" },
                decision.id.short(),
                local_time(decision, tz),
                reasons.join(", ")
            );
            crate::say!("{}", line.trim_end());
        }
    }
    Ok(())
}

/// Applies the retention policy and deletes the snapshots it removes.
pub fn run(global: &GlobalArgs, args: &ForgetArgs) -> Result<()> {
    let policy = args.policy();
    policy.validate()?;
    let (tz, tz_name) = choose_time_zone(args.utc);
    let now = args.now.unwrap_or_else(Timestamp::now);

    let mut repository = super::open_repository(global)?;
    let all = repository.index.snapshots()?;
    // Snapshots marked damaged by `repair snapshots` are kept for inspection
    // and take no part in the rules: they must not count as a day's backup.
    let damaged = all.iter().filter(|(_, s)| s.damaged.is_some()).count();
    if damaged > 0 {
        eprintln!(
            "cairn: warning: {damaged} snapshot(s) marked damaged are kept and not counted by the rules"
        );
    }
    let snapshots = all
        .iter()
        .filter(|(_, snapshot)| snapshot.damaged.is_none())
        .map(|(id, snapshot)| SnapshotInfo::from_snapshot(*id, snapshot))
        .collect::<cairn_core::Result<Vec<_>>>()?;
    let plan = retention::plan(&snapshots, &policy, args.group_by, now, &tz)?;
    for warning in &plan.warnings {
        eprintln!("cairn: warning: {warning}");
    }
    let removed = plan.removed();

    if !global.json {
        print_plan(&plan, &tz, &tz_name, now)?;
    }
    if !args.dry_run && !removed.is_empty() {
        repository.forget(&removed)?;
        for id in &removed {
            crate::audit::note_snapshot(&id.to_hex());
        }
    }
    if global.json {
        let mut value = serde_json::to_value(report(&plan, args, &tz, &tz_name, now))?;
        if args.prune && !args.dry_run {
            let pruned = repository.prune(Default::default())?;
            if let Some(object) = value.as_object_mut() {
                object.insert("prune".into(), serde_json::to_value(pruned)?);
            }
        }
        return super::print_json(&value);
    }
    if args.dry_run {
        crate::say!(
            "dry run: would remove {} snapshot(s) and keep {}; nothing was changed",
            removed.len(),
            plan.kept_count()
        );
    } else if removed.is_empty() {
        crate::say!(
            "kept all {} snapshot(s); nothing removed",
            plan.kept_count()
        );
    } else {
        crate::say!(
            "removed {} snapshot(s), kept {}{}",
            removed.len(),
            plan.kept_count(),
            if args.prune {
                ""
            } else {
                "; run `cairn prune` to reclaim the space they used"
            }
        );
    }
    if args.prune && !args.dry_run {
        super::prune::prune_and_report(global, &mut repository, Default::default())?;
    }
    Ok(())
}
