use proptest::prelude::*;

use super::*;

fn ts(text: &str) -> Timestamp {
    text.parse()
        .unwrap_or_else(|e| panic!("bad test timestamp {text}: {e}"))
}

fn id(n: usize) -> Id {
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&(n as u64).to_be_bytes());
    Id(bytes)
}

fn snapshot(n: usize, time: Timestamp) -> SnapshotInfo {
    SnapshotInfo {
        id: id(n),
        time,
        host: "db1".into(),
        entries: vec!["app.dump".into()],
        tags: Vec::new(),
    }
}

/// Builds one snapshot per step from `start` (inclusive) to `end` (exclusive).
fn series(start: &str, end: &str, step: SignedDuration) -> Vec<SnapshotInfo> {
    let (mut time, end) = (ts(start), ts(end));
    let mut out = Vec::new();
    while time < end {
        out.push(snapshot(out.len(), time));
        time = time.checked_add(step).expect("time in range");
    }
    out
}

fn berlin() -> TimeZone {
    TimeZone::get("Europe/Berlin").expect("Europe/Berlin is in the bundled time zone database")
}

fn daily(n: u32) -> Policy {
    Policy {
        keep_daily: Some(n),
        ..Policy::default()
    }
}

fn single_group(plan: &Plan) -> &GroupPlan {
    assert_eq!(plan.groups.len(), 1, "expected one group: {plan:?}");
    &plan.groups[0]
}

/// Times of the kept snapshots, newest first.
fn kept_times(plan: &Plan) -> Vec<Timestamp> {
    single_group(plan)
        .decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.time)
        .collect()
}

/// Reasons of the kept snapshots as text, newest first.
fn kept_reasons(plan: &Plan) -> Vec<String> {
    single_group(plan)
        .decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| {
            d.reasons
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect()
}

fn run(snapshots: &[SnapshotInfo], policy: &Policy, now: &str, tz: &TimeZone) -> Plan {
    plan(snapshots, policy, GroupBy::default(), ts(now), tz).expect("plan")
}

#[test]
fn several_backups_a_day_keep_newest_per_day() {
    // Four backups a day, 1 to 5 December, at 01:00, 07:00, 13:00, 19:00 UTC.
    let snapshots = series(
        "2026-12-01T01:00:00Z",
        "2026-12-06T00:00:00Z",
        SignedDuration::from_hours(6),
    );
    assert_eq!(snapshots.len(), 20);
    let plan = run(
        &snapshots,
        &daily(3),
        "2026-12-06T00:00:00Z",
        &TimeZone::UTC,
    );
    assert_eq!(
        kept_times(&plan),
        vec![
            ts("2026-12-05T19:00:00Z"),
            ts("2026-12-04T19:00:00Z"),
            ts("2026-12-03T19:00:00Z"),
        ]
    );
    assert_eq!(
        kept_reasons(&plan),
        vec!["daily 2026-12-05", "daily 2026-12-04", "daily 2026-12-03"]
    );
    assert_eq!(plan.removed().len(), 17);
    assert_eq!(plan.kept_count(), 3);
    assert!(plan.warnings.is_empty(), "warnings: {:?}", plan.warnings);
}

#[test]
fn daily_counts_days_that_have_snapshots() {
    let snapshots: Vec<SnapshotInfo> = [
        "2026-12-01T10:00:00Z",
        "2026-12-02T10:00:00Z",
        "2026-12-05T10:00:00Z",
        "2026-12-09T10:00:00Z",
    ]
    .iter()
    .enumerate()
    .map(|(n, t)| snapshot(n, ts(t)))
    .collect();
    let plan = run(
        &snapshots,
        &daily(3),
        "2026-12-10T00:00:00Z",
        &TimeZone::UTC,
    );
    assert_eq!(
        kept_times(&plan),
        vec![
            ts("2026-12-09T10:00:00Z"),
            ts("2026-12-05T10:00:00Z"),
            ts("2026-12-02T10:00:00Z"),
        ]
    );
}

/// Checks that each local date of the snapshots has exactly one kept
/// snapshot, the newest of that date, kept for that date.
fn assert_one_per_local_date(snapshots: &[SnapshotInfo], plan: &Plan, tz: &TimeZone) {
    let mut newest_per_date: BTreeMap<Date, Timestamp> = BTreeMap::new();
    for s in snapshots {
        let date = s.time.to_zoned(tz.clone()).date();
        let newest = newest_per_date.entry(date).or_insert(s.time);
        *newest = (*newest).max(s.time);
    }
    let group = single_group(plan);
    for (date, newest) in &newest_per_date {
        let kept: Vec<&Decision> = group
            .decisions
            .iter()
            .filter(|d| d.keep && d.time.to_zoned(tz.clone()).date() == *date)
            .collect();
        assert_eq!(kept.len(), 1, "local date {date}: kept {kept:?}");
        assert_eq!(kept[0].time, *newest, "local date {date}");
        assert_eq!(
            kept[0].reasons,
            vec![Reason::Daily(*date)],
            "local date {date}"
        );
    }
    assert_eq!(plan.kept_count(), newest_per_date.len());
}

#[test]
fn daily_across_autumn_dst_change_in_berlin() {
    // Berlin leaves summer time on Sunday 25 October 2026: 03:00 CEST
    // becomes 02:00 CET, so that local date has 25 hours.
    let tz = berlin();
    let snapshots = series(
        "2026-10-22T00:00:00Z",
        "2026-10-28T00:00:00Z",
        SignedDuration::from_hours(1),
    );
    let plan = run(&snapshots, &daily(30), "2026-10-28T00:00:00Z", &tz);
    assert_one_per_local_date(&snapshots, &plan, &tz);
    let kept = kept_times(&plan);
    // 23:00 local on each side of the change.
    assert!(kept.contains(&ts("2026-10-24T21:00:00Z")), "{kept:?}");
    assert!(kept.contains(&ts("2026-10-25T22:00:00Z")), "{kept:?}");
    assert!(kept.contains(&ts("2026-10-26T22:00:00Z")), "{kept:?}");
    // 22 October from 02:00 CEST to 28 October 01:00 CET: seven dates.
    assert_eq!(kept.len(), 7);
}

#[test]
fn daily_across_spring_dst_change_in_berlin() {
    // Berlin starts summer time on Sunday 29 March 2026: 02:00 CET becomes
    // 03:00 CEST, so that local date has 23 hours.
    let tz = berlin();
    let snapshots = series(
        "2026-03-27T00:00:00Z",
        "2026-03-31T00:00:00Z",
        SignedDuration::from_hours(1),
    );
    let plan = run(&snapshots, &daily(30), "2026-03-31T00:00:00Z", &tz);
    assert_one_per_local_date(&snapshots, &plan, &tz);
    let kept = kept_times(&plan);
    assert!(kept.contains(&ts("2026-03-28T22:00:00Z")), "{kept:?}");
    assert!(kept.contains(&ts("2026-03-29T21:00:00Z")), "{kept:?}");
    assert_eq!(kept.len(), 5);
}

#[test]
fn daily_local_schedule_keeps_every_day_across_dst() {
    // A job scheduled at 00:30 local time runs 23 or 25 hours apart around
    // the changes. Each run is still the only one of its local date.
    let tz = berlin();
    for (first, days) in [("2026-10-20", 10), ("2026-03-25", 10)] {
        let start: Date = first.parse().expect("date");
        let snapshots: Vec<SnapshotInfo> = (0..days)
            .map(|n| {
                let date = start.checked_add(Span::new().days(n)).expect("date");
                let local = date
                    .at(0, 30, 0, 0)
                    .to_zoned(tz.clone())
                    .expect("local time");
                snapshot(n as usize, local.timestamp())
            })
            .collect();
        let plan = run(&snapshots, &daily(days as u32), "2027-01-01T00:00:00Z", &tz);
        assert_eq!(plan.kept_count(), days as usize, "series from {first}");
        assert_one_per_local_date(&snapshots, &plan, &tz);
    }
}

#[test]
fn hourly_repeated_hour_is_one_bucket() {
    // Every 30 minutes around the autumn change; 02:00 to 02:59 local time
    // happens twice (CEST, then CET) and forms one bucket.
    let tz = berlin();
    let snapshots = series(
        "2026-10-24T22:00:00Z",
        "2026-10-25T04:30:00Z",
        SignedDuration::from_mins(30),
    );
    assert_eq!(snapshots.len(), 13);
    let policy = Policy {
        keep_hourly: Some(100),
        ..Policy::default()
    };
    let plan = run(&snapshots, &policy, "2026-10-26T00:00:00Z", &tz);
    assert_eq!(
        kept_reasons(&plan),
        vec![
            "hourly 2026-10-25 05:00",
            "hourly 2026-10-25 04:00",
            "hourly 2026-10-25 03:00",
            "hourly 2026-10-25 02:00",
            "hourly 2026-10-25 01:00",
            "hourly 2026-10-25 00:00",
        ]
    );
    // The newest snapshot of the repeated hour is 02:30 CET.
    assert_eq!(kept_times(&plan)[3], ts("2026-10-25T01:30:00Z"));
}

#[test]
fn hourly_skipped_hour_has_no_bucket() {
    let tz = berlin();
    let snapshots = series(
        "2026-03-29T00:00:00Z",
        "2026-03-29T03:30:00Z",
        SignedDuration::from_mins(30),
    );
    let policy = Policy {
        keep_hourly: Some(100),
        ..Policy::default()
    };
    let plan = run(&snapshots, &policy, "2026-03-30T00:00:00Z", &tz);
    assert_eq!(
        kept_reasons(&plan),
        vec![
            "hourly 2026-03-29 05:00",
            "hourly 2026-03-29 04:00",
            "hourly 2026-03-29 03:00",
            "hourly 2026-03-29 01:00",
        ]
    );
}

#[test]
fn weekly_uses_iso_weeks_across_new_year() {
    // 28 December 2026 to 3 January 2027 is ISO week 2026-W53.
    let times = [
        "2026-12-27T12:00:00Z", // Sunday of 2026-W52
        "2026-12-29T12:00:00Z",
        "2026-12-31T12:00:00Z",
        "2027-01-02T12:00:00Z", // Saturday of 2026-W53
        "2027-01-04T12:00:00Z", // Monday of 2027-W01
    ];
    let snapshots: Vec<SnapshotInfo> = times
        .iter()
        .enumerate()
        .map(|(n, t)| snapshot(n, ts(t)))
        .collect();
    let policy = Policy {
        keep_weekly: Some(3),
        ..Policy::default()
    };
    let plan = run(&snapshots, &policy, "2027-01-05T00:00:00Z", &TimeZone::UTC);
    assert_eq!(
        kept_times(&plan),
        vec![
            ts("2027-01-04T12:00:00Z"),
            ts("2027-01-02T12:00:00Z"),
            ts("2026-12-27T12:00:00Z"),
        ]
    );
    assert_eq!(
        kept_reasons(&plan),
        vec!["weekly 2027-W01", "weekly 2026-W53", "weekly 2026-W52"]
    );
}

#[test]
fn monthly_and_yearly_buckets() {
    let times = [
        "2025-06-15T12:00:00Z",
        "2025-12-31T12:00:00Z",
        "2026-01-10T12:00:00Z",
        "2026-01-20T12:00:00Z",
        "2026-02-05T12:00:00Z",
    ];
    let snapshots: Vec<SnapshotInfo> = times
        .iter()
        .enumerate()
        .map(|(n, t)| snapshot(n, ts(t)))
        .collect();
    let policy = Policy {
        keep_monthly: Some(2),
        keep_yearly: Some(5),
        ..Policy::default()
    };
    let plan = run(&snapshots, &policy, "2026-03-01T00:00:00Z", &TimeZone::UTC);
    assert_eq!(
        kept_reasons(&plan),
        vec![
            "monthly 2026-02, yearly 2026",
            "monthly 2026-01",
            "yearly 2025",
        ]
    );
    assert_eq!(
        kept_times(&plan),
        vec![
            ts("2026-02-05T12:00:00Z"),
            ts("2026-01-20T12:00:00Z"),
            ts("2025-12-31T12:00:00Z"),
        ]
    );
}

#[test]
fn daily_bucket_depends_on_time_zone() {
    // 23:30 UTC on 1 December is 00:30 on 2 December in Berlin.
    let snapshots = vec![
        snapshot(0, ts("2026-12-01T20:00:00Z")),
        snapshot(1, ts("2026-12-01T23:30:00Z")),
    ];
    let utc = run(
        &snapshots,
        &daily(5),
        "2026-12-03T00:00:00Z",
        &TimeZone::UTC,
    );
    assert_eq!(kept_reasons(&utc), vec!["daily 2026-12-01"]);
    let local = run(&snapshots, &daily(5), "2026-12-03T00:00:00Z", &berlin());
    assert_eq!(
        kept_reasons(&local),
        vec!["daily 2026-12-02", "daily 2026-12-01"]
    );
}

#[test]
fn keep_last_ranks_newest_first() {
    let snapshots = series(
        "2026-12-01T00:00:00Z",
        "2026-12-01T05:00:00Z",
        SignedDuration::from_hours(1),
    );
    let policy = Policy {
        keep_last: Some(2),
        ..Policy::default()
    };
    let plan = run(&snapshots, &policy, "2026-12-02T00:00:00Z", &TimeZone::UTC);
    assert_eq!(kept_reasons(&plan), vec!["last 1", "last 2"]);
    assert_eq!(
        kept_times(&plan),
        vec![ts("2026-12-01T04:00:00Z"), ts("2026-12-01T03:00:00Z")]
    );
}

#[test]
fn keep_within_is_inclusive_and_counts_from_now() {
    let snapshots = series(
        "2026-12-01T12:00:00Z",
        "2026-12-11T12:00:00Z",
        SignedDuration::from_hours(24),
    );
    let policy = Policy {
        keep_within: Some("3d".parse().expect("duration")),
        ..Policy::default()
    };
    // `now` lies well after the newest snapshot: the window is measured from
    // `now`, so only the newest is kept, by the newest-of-group guarantee.
    let late = run(&snapshots, &policy, "2026-12-20T00:00:00Z", &TimeZone::UTC);
    assert_eq!(kept_reasons(&late), vec!["newest of group"]);
    // Cutoff 2026-12-07T12:00:00Z exactly: that snapshot is kept.
    let plan = run(&snapshots, &policy, "2026-12-10T12:00:00Z", &TimeZone::UTC);
    assert_eq!(
        kept_times(&plan),
        vec![
            ts("2026-12-10T12:00:00Z"),
            ts("2026-12-09T12:00:00Z"),
            ts("2026-12-08T12:00:00Z"),
            ts("2026-12-07T12:00:00Z"),
        ]
    );
    assert!(kept_reasons(&plan).iter().all(|r| r == "within 3d"));
}

#[test]
fn keep_within_uses_calendar_units() {
    let month: KeepWithin = "1m".parse().expect("duration");
    assert_eq!(
        month.cutoff(ts("2026-03-31T12:00:00Z"), &TimeZone::UTC),
        ts("2026-02-28T12:00:00Z"),
        "one month before 31 March is the last day of February"
    );
    // One local day before noon on 29 March in Berlin is noon on 28 March,
    // 23 hours earlier, because the clocks moved forward that night.
    let day: KeepWithin = "1d".parse().expect("duration");
    assert_eq!(
        day.cutoff(ts("2026-03-29T10:00:00Z"), &berlin()),
        ts("2026-03-28T11:00:00Z")
    );
    let mixed: KeepWithin = "1y2m3w4d5h".parse().expect("duration");
    assert_eq!(
        mixed.cutoff(ts("2027-06-30T12:00:00Z"), &TimeZone::UTC),
        ts("2026-04-05T07:00:00Z")
    );
}

#[test]
fn keep_within_parses_units_and_rejects_bad_input() {
    for good in ["30d", "12h", "2w", "1y2m", " 7d ", "1y2m3w4d5h", "0y1d"] {
        let parsed: Result<KeepWithin> = good.parse();
        assert!(parsed.is_ok(), "{good:?} rejected: {parsed:?}");
    }
    assert_eq!(
        " 7d ".parse::<KeepWithin>().expect("duration").as_str(),
        "7d"
    );
    for bad in [
        "",
        "d",
        "30",
        "30x",
        "3 d",
        "1d1d",
        "0d",
        "-1d",
        "30min",
        "1.5d",
        "99999999999d",
        "20000y",
    ] {
        let parsed: Result<KeepWithin> = bad.parse();
        let Err(Error::Invalid(message)) = parsed else {
            panic!("{bad:?} accepted or wrong error: {parsed:?}");
        };
        assert!(message.contains("units y (years)"), "{bad:?}: {message}");
    }
}

#[test]
fn future_snapshot_warns_and_is_kept() {
    let mut snapshots = series(
        "2026-12-01T12:00:00Z",
        "2026-12-11T12:00:00Z",
        SignedDuration::from_hours(24),
    );
    snapshots.push(snapshot(100, ts("2030-01-01T00:00:00Z")));
    let now = "2026-12-10T13:00:00Z";

    let last = Policy {
        keep_last: Some(1),
        ..Policy::default()
    };
    let plan = run(&snapshots, &last, now, &TimeZone::UTC);
    assert_eq!(
        kept_reasons(&plan),
        vec!["dated in the future", "last 1"],
        "the future snapshot must not take the place of the newest"
    );
    assert_eq!(plan.warnings.len(), 1);
    assert!(
        plan.warnings[0].contains(&id(100).short()),
        "{:?}",
        plan.warnings
    );
    assert!(plan.warnings[0].contains("2030-01-01T00:00:00Z"));

    let within = Policy {
        keep_within: Some("2d".parse().expect("duration")),
        ..Policy::default()
    };
    let plan = run(&snapshots, &within, now, &TimeZone::UTC);
    assert_eq!(
        kept_times(&plan),
        vec![
            ts("2030-01-01T00:00:00Z"),
            ts("2026-12-10T12:00:00Z"),
            ts("2026-12-09T12:00:00Z"),
        ]
    );

    let plan = run(&snapshots, &daily(3), now, &TimeZone::UTC);
    assert_eq!(
        kept_reasons(&plan),
        vec![
            "dated in the future",
            "daily 2026-12-10",
            "daily 2026-12-09",
            "daily 2026-12-08",
        ]
    );
}

#[test]
fn future_tolerance_is_one_minute() {
    let snapshots = vec![
        snapshot(0, ts("2026-12-10T12:00:30Z")),
        snapshot(1, ts("2026-12-10T12:01:01Z")),
    ];
    let plan = run(
        &snapshots,
        &daily(1),
        "2026-12-10T12:00:00Z",
        &TimeZone::UTC,
    );
    assert_eq!(
        kept_reasons(&plan),
        vec!["dated in the future", "daily 2026-12-10"]
    );
    assert_eq!(plan.warnings.len(), 1);
}

#[test]
fn empty_policy_is_rejected() {
    let snapshots = vec![snapshot(0, ts("2026-12-01T00:00:00Z"))];
    let result = plan(
        &snapshots,
        &Policy::default(),
        GroupBy::default(),
        ts("2026-12-02T00:00:00Z"),
        &TimeZone::UTC,
    );
    let Err(Error::Invalid(message)) = result else {
        panic!("empty policy accepted: {result:?}");
    };
    assert!(message.starts_with("no keep rule given; nothing would be kept"));
}

#[test]
fn empty_repository_gives_empty_plan() {
    let plan = run(&[], &daily(7), "2026-12-02T00:00:00Z", &TimeZone::UTC);
    assert!(plan.groups.is_empty());
    assert!(plan.removed().is_empty());
    assert_eq!(plan.kept_count(), 0);
}

#[test]
fn newest_kept_unless_keep_last_zero() {
    let snapshots = series(
        "2026-12-01T00:00:00Z",
        "2026-12-04T00:00:00Z",
        SignedDuration::from_hours(24),
    );
    let unmatched_tag = Policy {
        keep_tags: vec!["keep".into()],
        ..Policy::default()
    };
    let plan = run(
        &snapshots,
        &unmatched_tag,
        "2026-12-05T00:00:00Z",
        &TimeZone::UTC,
    );
    assert_eq!(kept_reasons(&plan), vec!["newest of group"]);
    assert_eq!(kept_times(&plan), vec![ts("2026-12-03T00:00:00Z")]);

    let zero_daily = daily(0);
    let plan = run(
        &snapshots,
        &zero_daily,
        "2026-12-05T00:00:00Z",
        &TimeZone::UTC,
    );
    assert_eq!(kept_reasons(&plan), vec!["newest of group"]);

    let zero_last = Policy {
        keep_last: Some(0),
        ..Policy::default()
    };
    let plan = run(
        &snapshots,
        &zero_last,
        "2026-12-05T00:00:00Z",
        &TimeZone::UTC,
    );
    assert_eq!(plan.kept_count(), 0);
    assert_eq!(plan.removed().len(), 3);
}

#[test]
fn keep_tags_keeps_tagged_snapshots() {
    let mut snapshots = series(
        "2026-12-01T00:00:00Z",
        "2026-12-06T00:00:00Z",
        SignedDuration::from_hours(24),
    );
    snapshots[1].tags = vec!["monthly".into(), "keep".into()];
    snapshots[2].tags = vec!["other".into()];
    let policy = Policy {
        keep_last: Some(1),
        keep_tags: vec!["keep".into(), "release".into()],
        ..Policy::default()
    };
    let plan = plan(
        &snapshots,
        &policy,
        GroupBy::default(),
        ts("2026-12-07T00:00:00Z"),
        &TimeZone::UTC,
    )
    .expect("plan");
    assert_eq!(kept_reasons(&plan), vec!["last 1", "tag keep"]);
    assert_eq!(
        kept_times(&plan),
        vec![ts("2026-12-05T00:00:00Z"), ts("2026-12-02T00:00:00Z")]
    );
}

fn grouped_snapshots() -> Vec<SnapshotInfo> {
    let mut snapshots = Vec::new();
    let layouts: [(&str, &[&str], &[&str]); 4] = [
        ("db1", &["app.dump", "globals.sql"], &["daily"]),
        ("db1", &["globals.sql", "app.dump"], &[]),
        ("db2", &["app.dump", "globals.sql"], &["daily"]),
        ("db1", &["other.dump"], &[]),
    ];
    for day in 0..3 {
        for (host, entries, tags) in layouts {
            let time = ts("2026-12-01T00:00:00Z")
                .checked_add(SignedDuration::from_hours(
                    24 * day + snapshots.len() as i64,
                ))
                .expect("time");
            snapshots.push(SnapshotInfo {
                id: id(snapshots.len()),
                time,
                host: host.into(),
                entries: entries.iter().map(|e| e.to_string()).collect(),
                tags: tags.iter().map(|t| t.to_string()).collect(),
            });
        }
    }
    snapshots
}

#[test]
fn default_grouping_is_host_and_entry_names() {
    let snapshots = grouped_snapshots();
    let policy = Policy {
        keep_last: Some(1),
        ..Policy::default()
    };
    let plan = plan(
        &snapshots,
        &policy,
        GroupBy::default(),
        ts("2027-01-01T00:00:00Z"),
        &TimeZone::UTC,
    )
    .expect("plan");
    let names: Vec<String> = plan.groups.iter().map(|g| g.key.to_string()).collect();
    assert_eq!(
        names,
        vec![
            "host db1, entries [app.dump, globals.sql]",
            "host db1, entries [other.dump]",
            "host db2, entries [app.dump, globals.sql]",
        ]
    );
    let sizes: Vec<usize> = plan.groups.iter().map(|g| g.decisions.len()).collect();
    assert_eq!(sizes, vec![6, 3, 3]);
    assert_eq!(plan.kept_count(), 3, "one per group");
    for group in &plan.groups {
        assert!(group.decisions[0].keep, "{}: newest not kept", group.key);
    }
}

#[test]
fn group_by_tags_and_single_group() {
    let snapshots = grouped_snapshots();
    let policy = Policy {
        keep_last: Some(1),
        ..Policy::default()
    };
    let now = ts("2027-01-01T00:00:00Z");
    let by_tags = plan(
        &snapshots,
        &policy,
        "tags".parse().expect("group by"),
        now,
        &TimeZone::UTC,
    )
    .expect("plan");
    let names: Vec<String> = by_tags.groups.iter().map(|g| g.key.to_string()).collect();
    assert_eq!(names, vec!["tags []", "tags [daily]"]);

    let one = plan(
        &snapshots,
        &policy,
        "".parse().expect("group by"),
        now,
        &TimeZone::UTC,
    )
    .expect("plan");
    assert_eq!(one.groups.len(), 1);
    assert_eq!(one.groups[0].key.to_string(), "all snapshots");
    assert_eq!(one.kept_count(), 1);
    assert_eq!(one.groups[0].decisions[0].time, snapshots[11].time);
}

#[test]
fn group_by_parses_field_lists() {
    let parsed: GroupBy = " host , tags ".parse().expect("group by");
    assert_eq!(
        parsed,
        GroupBy {
            host: true,
            entries: false,
            tags: true
        }
    );
    let all: GroupBy = "host,entries,tags".parse().expect("group by");
    assert!(all.host, "host missing: {all:?}");
    assert!(all.entries, "entries missing: {all:?}");
    assert!(all.tags, "tags missing: {all:?}");
    let bad: Result<GroupBy> = "host,paths".parse();
    let Err(Error::Invalid(message)) = bad else {
        panic!("unknown field accepted: {bad:?}");
    };
    assert!(message.contains("\"paths\""), "{message}");
}

#[test]
fn unreadable_snapshot_time_is_corrupt() {
    let manifest = Snapshot {
        format_version: snapshot::SNAPSHOT_VERSION,
        time: "yesterday".into(),
        finished: "yesterday".into(),
        host: "db1".into(),
        user: "u".into(),
        tags: Vec::new(),
        command: None,
        cairn_version: "0".into(),
        entries: Vec::new(),
        damaged: None,
        postgres: None,
    };
    let result = SnapshotInfo::from_snapshot(id(1), &manifest);
    assert!(
        matches!(result, Err(Error::Corrupt { .. })),
        "unexpected result: {result:?}"
    );
}

fn arbitrary_policy() -> impl Strategy<Value = Policy> {
    let count = || proptest::option::of(0u32..6);
    (
        (count(), count(), count(), count(), count(), count()),
        proptest::option::of(1u32..60),
        any::<bool>(),
    )
        .prop_map(
            |((last, hourly, daily, weekly, monthly, yearly), within, tags)| Policy {
                keep_last: last,
                keep_hourly: hourly,
                keep_daily: daily,
                keep_weekly: weekly,
                keep_monthly: monthly,
                keep_yearly: yearly,
                keep_within: within.map(|days| KeepWithin {
                    years: 0,
                    months: 0,
                    weeks: 0,
                    days,
                    hours: 0,
                    text: format!("{days}d"),
                }),
                keep_tags: if tags {
                    vec!["keep".into()]
                } else {
                    Vec::new()
                },
            },
        )
}

/// Snapshots spread over two years from 2025 on, some tagged, on two hosts
/// and two entry layouts.
fn arbitrary_snapshots() -> impl Strategy<Value = Vec<SnapshotInfo>> {
    proptest::collection::vec(
        (0i64..2 * 366 * 24 * 60, 0usize..2, 0usize..2, any::<bool>()),
        0..40,
    )
    .prop_map(|rows| {
        rows.into_iter()
            .enumerate()
            .map(|(n, (minutes, host, layout, tagged))| SnapshotInfo {
                id: id(n),
                time: ts("2025-01-01T00:00:00Z")
                    .checked_add(SignedDuration::from_mins(minutes))
                    .expect("time"),
                host: ["db1", "db2"][host].into(),
                entries: [vec!["app.dump".into()], vec!["b".into(), "a".into()]][layout].clone(),
                tags: if tagged {
                    vec!["keep".into()]
                } else {
                    Vec::new()
                },
            })
            .collect()
    })
}

proptest! {
    #[test]
    fn plan_keeps_newest_and_only_input(
        snapshots in arbitrary_snapshots(),
        policy in arbitrary_policy(),
        now_minutes in 0i64..2 * 366 * 24 * 60,
    ) {
        prop_assume!(!policy.is_empty());
        let tz = berlin();
        let now = ts("2025-01-01T00:00:00Z")
            .checked_add(SignedDuration::from_mins(now_minutes))
            .expect("time");
        let result = plan(&snapshots, &policy, GroupBy::default(), now, &tz).expect("plan");

        // Every input snapshot appears exactly once, and nothing else.
        let mut seen: Vec<Id> = result.groups.iter().flat_map(|g| g.decisions.iter().map(|d| d.id)).collect();
        seen.sort();
        let mut input: Vec<Id> = snapshots.iter().map(|s| s.id).collect();
        input.sort();
        prop_assert_eq!(seen, input);

        let future_limit = now.checked_add(FUTURE_TOLERANCE).expect("time");
        for group in &result.groups {
            for decision in &group.decisions {
                prop_assert_eq!(decision.keep, !decision.reasons.is_empty());
                if decision.time > future_limit {
                    prop_assert!(decision.keep, "future snapshot removed");
                }
            }
        }

        // The newest snapshot of each group (computed here independently),
        // ignoring those dated in the future, is kept.
        let mut newest: BTreeMap<(String, Vec<String>), &SnapshotInfo> = BTreeMap::new();
        for s in snapshots.iter().filter(|s| s.time <= future_limit) {
            let key = (s.host.clone(), sorted_set(&s.entries));
            let slot = newest.entry(key).or_insert(s);
            if (s.time, s.id) > (slot.time, slot.id) {
                *slot = s;
            }
        }
        let kept: HashSet<Id> = result.groups.iter()
            .flat_map(|g| g.decisions.iter().filter(|d| d.keep).map(|d| d.id))
            .collect();
        if policy.keep_last != Some(0) {
            for s in newest.values() {
                prop_assert!(kept.contains(&s.id), "newest {} of its group removed", s.id.short());
            }
        }
    }
}
