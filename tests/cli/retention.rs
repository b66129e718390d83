//! `cairn forget`: retention rules applied through the binary, with the test
//! clocks `backup --time` and `forget --now`.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::Value;

use crate::harness::{
    Output, Repo, array_field, assert_same_bytes, files_under, random_bytes, run_command, short_id,
    snapshot_id, string_field, u64_field,
};

const DUMP_SIZE: usize = 256 * 1024;

/// Runs `cairn ARGS...` with the TZ environment variable set, or unset.
fn run_in_zone(repo: &Repo, args: &[&str], tz: Option<&str>) -> Output {
    let mut command = repo.command(args);
    if let Some(tz) = tz {
        command.env("TZ", tz);
    }
    run_command(
        command,
        &format!("TZ={tz:?} cairn {}", args.join(" ")),
        None,
    )
}

/// Midnight-plus-`hour` UTC of day `day` counted from 1 October 2026.
fn day_time(day: u32, hour: u32) -> String {
    let (month, day_of_month) = match day {
        0..=30 => (10, day + 1),
        31..=60 => (11, day - 30),
        _ => (12, day - 60),
    };
    format!("2026-{month:02}-{day_of_month:02}T{hour:02}:00:00Z")
}

/// Overwrites about 1% of `data` in four places.
fn change_one_percent(data: &mut [u8], rng: &mut StdRng) {
    let piece = data.len() / 400;
    for _ in 0..4 {
        let start = rng.random_range(0..data.len() - piece);
        rng.fill_bytes(&mut data[start..start + piece]);
    }
}

/// Backs up `data` as entry `name`, dated `time`; returns the snapshot id.
fn backup_at(repo: &Repo, name: &str, data: &[u8], time: &str) -> String {
    snapshot_id(&repo.backup_stdin_with(name, data, &["--time", time]))
}

/// Maps snapshot id to its `time` field.
fn snapshot_times(repo: &Repo) -> BTreeMap<String, String> {
    repo.snapshots()
        .iter()
        .map(|s| (string_field(s, "id"), string_field(s, "time")))
        .collect()
}

#[test]
fn daily_forget_over_sixty_days() {
    let repo = Repo::init();
    let mut rng = StdRng::seed_from_u64(20261001);
    let mut data = random_bytes(DUMP_SIZE, 1001);
    let mut backed_up: Vec<(String, Vec<u8>)> = Vec::new();
    let mut sizes: Vec<u64> = Vec::new();
    // Packs and chunks per day, printed to explain a failure.
    let mut counts: Vec<(u64, u64)> = Vec::new();
    let mut needed: Vec<u64> = Vec::new();

    // Berlin leaves summer time on 25 October, inside the simulated period.
    for day in 0..60 {
        if day > 0 {
            change_one_percent(&mut data, &mut rng);
        }
        let id = backup_at(&repo, "app.dump", &data, &day_time(day, 2));
        backed_up.push((id, data.clone()));

        let now = day_time(day, 3);
        let output = run_in_zone(
            &repo,
            &[
                "--json",
                "forget",
                "--keep-daily",
                "30",
                "--prune",
                "--now",
                &now,
            ],
            Some("Europe/Berlin"),
        )
        .expect_success(&format!("forget on day {day}"));
        let report = output.json();
        let expected_removed = u64::from(day >= 30);
        assert_eq!(
            u64_field(&report, "removed"),
            expected_removed,
            "snapshots removed on day {day}"
        );
        assert_eq!(
            u64_field(&report, "kept"),
            u64::from(day.min(29) + 1),
            "snapshots kept on day {day}"
        );
        let stats = repo.stats();
        sizes.push(u64_field(&stats, "stored_bytes"));
        counts.push((u64_field(&stats, "packs"), u64_field(&stats, "chunks")));
        // What the repository would hold if every unused byte were
        // reclaimed: the data the kept snapshots need.
        let tight = repo
            .run(&["--json", "prune", "--dry-run", "--max-unused", "0"])
            .expect_success(&format!("prune --dry-run on day {day}"))
            .json();
        needed.push(u64_field(&tight, "bytes_after"));
    }

    // The repository tracks the data it keeps: once days are forgotten,
    // it stores little more than the kept snapshots need. A bound relative
    // to the size on day 30 failed once in CI (1.38 times), because how
    // much data 30 days of edits leave depends on where the keyed chunker
    // cuts. In 23 local runs the size peaked at 1.00 to 1.23 times day
    // 30's, and in the two runs that also measured what the snapshots
    // need, the repository held at most 1% more than that.
    eprintln!("repository size per day (bytes): {sizes:?}");
    eprintln!("packs and chunks per day: {counts:?}");
    eprintln!("bytes the kept snapshots need per day: {needed:?}");
    for day in 30..sizes.len() {
        assert!(
            sizes[day] * 100 <= needed[day] * 115,
            "day {day}: repository of {} bytes, more than 1.15 times the {} bytes its snapshots need",
            sizes[day],
            needed[day]
        );
    }

    let remaining = snapshot_times(&repo);
    assert_eq!(remaining.len(), 30, "snapshots left after 60 days");
    for (day, (id, data)) in backed_up.iter().enumerate() {
        let day = day as u32;
        if day < 30 {
            assert!(
                !remaining.contains_key(id),
                "snapshot {} of day {day} should have been forgotten",
                short_id(id)
            );
            continue;
        }
        let time = remaining
            .get(id)
            .unwrap_or_else(|| panic!("snapshot {} of day {day} was forgotten", short_id(id)));
        assert!(
            time.starts_with(&day_time(day, 2)[..19]),
            "snapshot {} of day {day} has time {time}",
            short_id(id)
        );
        let restored = repo.restore_stdout(id);
        assert_same_bytes(&restored, data, &format!("snapshot of day {day}"));
    }

    let check = repo.run(&["check", "--read-data"]);
    assert_eq!(
        check.code(),
        Some(0),
        "check after forgetting should find no damage\n{}",
        check.describe()
    );
}

/// Backs up three small dumps on 1, 2 and 3 December 2026 at 02:00 UTC.
fn three_days(repo: &Repo) -> Vec<String> {
    (1..=3)
        .map(|day| {
            let time = format!("2026-12-{day:02}T02:00:00Z");
            backup_at(repo, "app.dump", &random_bytes(10_000, day), &time)
        })
        .collect()
}

#[test]
fn dry_run_changes_nothing() {
    let repo = Repo::init();
    let ids = three_days(&repo);
    let files_before = files_under(&repo.path);

    let output = repo
        .run(&[
            "forget",
            "--keep-last",
            "1",
            "--dry-run",
            "--utc",
            "--now",
            "2026-12-04T00:00:00Z",
        ])
        .expect_success("forget --dry-run");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("dry run: would remove 2 snapshot(s) and keep 1; nothing was changed"),
        "stdout:\n{text}"
    );
    assert!(text.contains("remove"), "stdout:\n{text}");
    assert_eq!(
        files_under(&repo.path),
        files_before,
        "files in the repository changed"
    );
    assert_eq!(snapshot_times(&repo).len(), ids.len());
}

#[test]
fn no_rule_exits_2_and_deletes_nothing() {
    let repo = Repo::init();
    let ids = three_days(&repo);
    let output = repo.run(&["forget", "--now", "2026-12-04T00:00:00Z"]);
    assert_eq!(output.code(), Some(2), "{}", output.describe());
    assert!(
        output
            .stderr
            .contains("no keep rule given; nothing would be kept"),
        "{}",
        output.describe()
    );
    assert_eq!(snapshot_times(&repo).len(), ids.len());
}

#[test]
fn forget_prune_reclaims_space() {
    let repo = Repo::init();
    three_days(&repo);
    let output = repo.run(&[
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--now",
        "2026-12-04T00:00:00Z",
    ]);
    assert_eq!(output.code(), Some(0), "{}", output.describe());
    assert_eq!(
        snapshot_times(&repo).len(),
        1,
        "forget --keep-last 1 left other snapshots"
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("freed"),
        "forget --prune printed no prune report:\n{stdout}"
    );
    let check = repo.run(&["check", "--read-data"]);
    assert_eq!(check.code(), Some(0), "{}", check.describe());
}

#[test]
fn future_snapshot_warns_and_survives() {
    let repo = Repo::init();
    let ids = three_days(&repo);
    let future = backup_at(
        &repo,
        "app.dump",
        b"from a wrong clock",
        "2030-01-01T00:00:00Z",
    );

    let output = repo
        .run(&[
            "forget",
            "--keep-last",
            "1",
            "--utc",
            "--now",
            "2026-12-04T00:00:00Z",
        ])
        .expect_success("forget with a future snapshot");
    assert!(
        output.stderr.contains("cairn: warning: snapshot")
            && output.stderr.contains(short_id(&future))
            && output.stderr.contains("later than the current time"),
        "expected a warning about {}\n{}",
        short_id(&future),
        output.describe()
    );
    let remaining = snapshot_times(&repo);
    assert!(remaining.contains_key(&future), "future snapshot removed");
    assert!(
        remaining.contains_key(&ids[2]),
        "the newest real snapshot was removed"
    );
    assert_eq!(remaining.len(), 2);
}

#[test]
fn json_output_describes_every_snapshot() {
    let repo = Repo::init();
    let ids = three_days(&repo);
    let report = repo
        .run(&[
            "--json",
            "forget",
            "--keep-last",
            "2",
            "--utc",
            "--now",
            "2026-12-04T00:00:00Z",
        ])
        .expect_success("forget --json")
        .json();
    assert_eq!(string_field(&report, "time_zone"), "UTC");
    assert_eq!(report.get("dry_run"), Some(&Value::Bool(false)));
    assert_eq!(u64_field(&report, "kept"), 2);
    assert_eq!(u64_field(&report, "removed"), 1);
    let removed: Vec<&str> = array_field(&report, "removed_ids")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(removed, vec![ids[0].as_str()]);

    let groups = array_field(&report, "groups");
    assert_eq!(groups.len(), 1);
    let key = groups[0].get("key").expect("group key");
    assert_eq!(
        key.get("host").and_then(Value::as_str).map(str::is_empty),
        Some(false)
    );
    assert_eq!(key.get("entries"), Some(&serde_json::json!(["app.dump"])));
    let rows = array_field(&groups[0], "snapshots");
    let listed: Vec<String> = rows.iter().map(|r| string_field(r, "id")).collect();
    assert_eq!(
        listed,
        vec![ids[2].clone(), ids[1].clone(), ids[0].clone()],
        "newest first"
    );
    assert_eq!(rows[0].get("reasons"), Some(&serde_json::json!(["last 1"])));
    assert_eq!(rows[2].get("keep"), Some(&Value::Bool(false)));
    assert_eq!(string_field(&rows[2], "time"), "2026-12-01T02:00:00Z");
    assert_eq!(
        string_field(&rows[2], "local_time"),
        "2026-12-01 02:00:00 +00:00"
    );
    assert_eq!(snapshot_times(&repo).len(), 2);
}

#[test]
fn output_names_the_time_zone() {
    let repo = Repo::init();
    three_days(&repo);
    let output = run_in_zone(
        &repo,
        &[
            "forget",
            "--keep-daily",
            "7",
            "--dry-run",
            "--now",
            "2026-12-04T00:00:00Z",
        ],
        Some("Europe/Berlin"),
    )
    .expect_success("forget in Europe/Berlin");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains("calendar buckets in time zone Europe/Berlin; pass --utc for UTC"),
        "stdout:\n{text}"
    );
    assert!(
        text.contains("2026-12-03 03:00:00 +01:00"),
        "stdout:\n{text}"
    );
    assert!(text.contains("daily 2026-12-03"), "stdout:\n{text}");

    let utc = run_in_zone(
        &repo,
        &[
            "forget",
            "--keep-daily",
            "7",
            "--dry-run",
            "--utc",
            "--now",
            "2026-12-04T00:00:00Z",
        ],
        Some("Europe/Berlin"),
    )
    .expect_success("forget --utc");
    let text = String::from_utf8_lossy(&utc.stdout);
    assert!(text.contains("calendar buckets in UTC"), "stdout:\n{text}");
    assert!(
        text.contains("2026-12-03 02:00:00 +00:00"),
        "stdout:\n{text}"
    );

    // Where the local time zone has the UTC offset at every snapshot time
    // (London in December), --utc would change nothing and is not offered.
    for zone in ["Etc/UTC", "Europe/London"] {
        let same = run_in_zone(
            &repo,
            &[
                "forget",
                "--keep-daily",
                "7",
                "--dry-run",
                "--now",
                "2026-12-04T00:00:00Z",
            ],
            Some(zone),
        )
        .expect_success(&format!("forget in {zone}"));
        let text = String::from_utf8_lossy(&same.stdout);
        assert!(
            text.contains(&format!(
                "calendar buckets in time zone {zone} (the same as UTC for these snapshots)"
            )),
            "forget in {zone} should name the zone, stdout:\n{text}"
        );
        assert!(
            !text.contains("--utc"),
            "forget in {zone} should not suggest --utc, which changes nothing, stdout:\n{text}"
        );
    }
}

#[test]
fn groups_follow_entry_names() {
    let repo = Repo::init();
    for day in 1..=3 {
        let time = format!("2026-12-{day:02}T02:00:00Z");
        backup_at(&repo, "a.dump", &random_bytes(5_000, day), &time);
        backup_at(&repo, "b.dump", &random_bytes(5_000, day + 10), &time);
    }
    let now = "2026-12-04T00:00:00Z";
    repo.run(&["forget", "--keep-last", "1", "--utc", "--now", now])
        .expect_success("forget by entry");
    let mut entries: Vec<String> = repo
        .snapshots()
        .iter()
        .map(|s| string_field(&array_field(s, "entries")[0], "name"))
        .collect();
    entries.sort();
    assert_eq!(
        entries,
        vec!["a.dump", "b.dump"],
        "one snapshot per entry name"
    );

    repo.run(&[
        "forget",
        "--keep-last",
        "1",
        "--group-by",
        "",
        "--utc",
        "--now",
        now,
    ])
    .expect_success("forget as one group");
    assert_eq!(repo.snapshots().len(), 1);

    let bad = repo.run(&[
        "forget",
        "--keep-last",
        "1",
        "--group-by",
        "path",
        "--now",
        now,
    ]);
    assert_eq!(bad.code(), Some(2), "{}", bad.describe());
}

#[test]
fn invalid_times_exit_2() {
    let repo = Repo::init();
    let backup = repo.run_input(
        &["backup", "--name", "a", "--stdin", "--time", "yesterday"],
        b"data",
    );
    assert_eq!(backup.code(), Some(2), "{}", backup.describe());
    assert!(backup.stderr.contains("RFC 3339"), "{}", backup.describe());
    assert!(
        repo.snapshots().is_empty(),
        "a rejected backup wrote a snapshot"
    );

    let forget = repo.run(&["forget", "--keep-last", "1", "--now", "tomorrow"]);
    assert_eq!(forget.code(), Some(2), "{}", forget.describe());
    let within = repo.run(&["forget", "--keep-within", "30 days"]);
    assert_eq!(within.code(), Some(2), "{}", within.describe());
}
