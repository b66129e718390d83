//! Job schedules: cron expressions in the local time zone, or a fixed
//! interval.
//!
//! A cron expression has five fields, `minute hour day-of-month month
//! day-of-week`. Each is `*`, a number, a range `a-b`, a list `a,b` or a
//! step `*/n` or `a-b/n`, and months and weekdays may be written as `jan`
//! or `mon`.
//! When both day fields are restricted, a day matching either one counts,
//! as in Vixie cron. `@hourly`, `@daily`, `@weekly`, `@monthly` and
//! `@yearly` are shorthands. A local time skipped by a change to daylight
//! saving time does not run; a local time that occurs twice runs once.

use std::time::Duration;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};

/// When a job runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    /// A cron expression.
    Cron(Cron),
    /// A fixed interval after the start of the previous run.
    Every(Duration),
}

/// A parsed cron expression: the allowed values of each field.
#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    days_restricted: bool,
    weekdays_restricted: bool,
    text: String,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn parse_value(text: &str, names: &[&str], base: u32) -> Result<u32, String> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        return Ok(i as u32 + base);
    }
    text.parse().map_err(|_| {
        format!(
            "{text:?} is not a number{}",
            if names.is_empty() { "" } else { " or a name" }
        )
    })
}

/// Parses one field into a table of `max + 1` flags.
fn parse_field(
    text: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<Vec<bool>, String> {
    let mut allowed = vec![false; max as usize + 1];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .map_err(|_| format!("step {step:?} is not a number"))?;
                if step == 0 {
                    return Err("a step of 0 never matches".into());
                }
                (range, step)
            }
            None => (part, 1),
        };
        let (low, high) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (
                parse_value(a, names, name_base)?,
                parse_value(b, names, name_base)?,
            )
        } else {
            let value = parse_value(range, names, name_base)?;
            // `5/10` means from 5 to the end in steps of 10.
            (value, if step > 1 { max } else { value })
        };
        if low < min || high > max || low > high {
            return Err(format!("{range:?} is outside {min}-{max}"));
        }
        let mut value = low;
        while value <= high {
            allowed[value as usize] = true;
            value += step;
        }
    }
    Ok(allowed)
}

impl Schedule {
    /// Parses a cron expression or shorthand.
    pub fn parse_cron(text: &str) -> Result<Schedule, String> {
        let expanded = match text.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let [minute, hour, day, month, weekday] = fields.as_slice() else {
            return Err(format!(
                "{text:?} needs five fields: minute hour day-of-month month day-of-week, such as \"30 2 * * *\""
            ));
        };
        let field = |name: &str, result: Result<Vec<bool>, String>| {
            result.map_err(|e| format!("{text:?}: {name}: {e}"))
        };
        let mut weekdays = field("day of week", parse_field(weekday, 0, 7, &WEEKDAYS, 0))?;
        // 7 is Sunday too.
        if weekdays[7] {
            weekdays[0] = true;
        }
        Ok(Schedule::Cron(Cron {
            minutes: field("minute", parse_field(minute, 0, 59, &[], 0))?,
            hours: field("hour", parse_field(hour, 0, 23, &[], 0))?,
            days: field("day of month", parse_field(day, 1, 31, &[], 0))?,
            months: field("month", parse_field(month, 1, 12, &MONTHS, 1))?,
            weekdays,
            days_restricted: *day != "*",
            weekdays_restricted: *weekday != "*",
            text: text.trim().to_string(),
        }))
    }

    /// Returns the first run time strictly after `after`. For an interval it
    /// is the previous start `last` plus the interval, or `after` itself when
    /// there was no previous start.
    pub fn next_after(
        &self,
        after: Timestamp,
        last: Option<Timestamp>,
        tz: &TimeZone,
    ) -> Option<Timestamp> {
        match self {
            Schedule::Every(interval) => {
                let interval = jiff::SignedDuration::try_from(*interval).ok()?;
                match last {
                    Some(last) => last.checked_add(interval).ok(),
                    None => Some(after),
                }
            }
            Schedule::Cron(cron) => cron.next_after(after, tz),
        }
    }

    /// Returns the expression as written, for messages.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Cron(cron) => cron.text.clone(),
            Schedule::Every(interval) => format!("every {}", humantime::format_duration(*interval)),
        }
    }
}

impl Cron {
    fn matches(&self, time: DateTime) -> bool {
        let day_ok = self.days[time.day() as usize];
        let weekday_ok = self.weekdays[time.weekday().to_sunday_zero_offset() as usize];
        let date_ok = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day_ok || weekday_ok,
            (true, false) => day_ok,
            (false, true) => weekday_ok,
            (false, false) => true,
        };
        date_ok
            && self.minutes[time.minute() as usize]
            && self.hours[time.hour() as usize]
            && self.months[time.month() as usize]
    }

    /// Walks forward minute by minute in absolute time, for at most about
    /// four years, and returns the first minute whose local time matches.
    /// A local minute that repeats after a DST change matches only its
    /// first occurrence, because the candidate must be later in local time
    /// than `after`.
    fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start: Zoned = after.to_zoned(tz.clone());
        let floor = start.datetime();
        let mut candidate = start
            .round(
                jiff::ZonedRound::new()
                    .smallest(jiff::Unit::Minute)
                    .mode(jiff::RoundMode::Trunc),
            )
            .ok()?;
        let mut latest_local = floor;
        for _ in 0..(4 * 366 * 24 * 60) {
            candidate = candidate.checked_add(1.minute()).ok()?;
            let local = candidate.datetime();
            if local <= latest_local {
                continue;
            }
            latest_local = local;
            if self.matches(local) {
                return Some(candidate.timestamp());
            }
        }
        None
    }
}

/// Converts a cron expression to a systemd `OnCalendar=` value. Returns
/// `None` where systemd's calendar syntax cannot express it: a range with a
/// step, or both day fields restricted, because cron combines those with OR
/// and systemd with AND.
pub fn to_on_calendar(text: &str) -> Option<String> {
    let expanded = match text.trim() {
        "@hourly" => "0 * * * *",
        "@daily" | "@midnight" => "0 0 * * *",
        "@weekly" => "0 0 * * 0",
        "@monthly" => "0 0 1 * *",
        "@yearly" | "@annually" => "0 0 1 1 *",
        other => other,
    };
    let fields: Vec<&str> = expanded.split_whitespace().collect();
    let [minute, hour, day, month, weekday] = fields.as_slice() else {
        return None;
    };
    if *day != "*" && *weekday != "*" {
        return None;
    }
    let numeric = |field: &str, names: &[&str], base: u32, step_start: &str| -> Option<String> {
        let mut parts = Vec::new();
        for part in field.split(',') {
            let converted = match part.split_once('/') {
                Some(("*", step)) => format!("{step_start}/{step}"),
                Some((start, step)) if !start.contains('-') => {
                    format!("{}/{step}", parse_value(start, names, base).ok()?)
                }
                Some(_) => return None,
                None if part == "*" => "*".to_string(),
                None => match part.split_once('-') {
                    Some((a, b)) => format!(
                        "{}..{}",
                        parse_value(a, names, base).ok()?,
                        parse_value(b, names, base).ok()?
                    ),
                    None => parse_value(part, names, base).ok()?.to_string(),
                },
            };
            parts.push(converted);
        }
        Some(parts.join(","))
    };
    let weekday_name = |value: u32| -> Option<String> {
        let name = WEEKDAYS.get((value % 7) as usize)?;
        let mut name = name.to_string();
        name[..1].make_ascii_uppercase();
        Some(name)
    };
    let weekdays = if *weekday == "*" {
        None
    } else {
        let mut parts = Vec::new();
        for part in weekday.split(',') {
            if part.contains('/') {
                return None;
            }
            match part.split_once('-') {
                Some((a, b)) => parts.push(format!(
                    "{}..{}",
                    weekday_name(parse_value(a, &WEEKDAYS, 0).ok()?)?,
                    weekday_name(parse_value(b, &WEEKDAYS, 0).ok()?)?
                )),
                None => parts.push(weekday_name(parse_value(part, &WEEKDAYS, 0).ok()?)?),
            }
        }
        Some(parts.join(","))
    };
    let date = format!(
        "*-{}-{}",
        numeric(month, &MONTHS, 1, "1")?,
        numeric(day, &[], 0, "1")?
    );
    let time = format!(
        "{}:{}:00",
        numeric(hour, &[], 0, "0")?,
        numeric(minute, &[], 0, "0")?
    );
    Some(match weekdays {
        Some(days) => format!("{days} {date} {time}"),
        None => format!("{date} {time}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("timestamp")
    }

    fn next(expression: &str, after: &str, zone: &str) -> String {
        let tz = TimeZone::get(zone).expect("zone");
        let schedule = Schedule::parse_cron(expression).expect("parse");
        schedule
            .next_after(at(after), None, &tz)
            .expect("next")
            .to_zoned(tz)
            .to_string()
    }

    #[test]
    fn daily_and_steps() {
        assert_eq!(
            next("30 2 * * *", "2026-12-04T10:00:00Z", "UTC"),
            "2026-12-05T02:30:00+00:00[UTC]"
        );
        assert_eq!(
            next("*/15 * * * *", "2026-12-04T10:07:10Z", "UTC"),
            "2026-12-04T10:15:00+00:00[UTC]"
        );
        assert_eq!(
            next("0 9 * * mon-fri", "2026-12-05T10:00:00Z", "UTC"),
            "2026-12-07T09:00:00+00:00[UTC]"
        );
        assert_eq!(
            next("@monthly", "2026-12-04T10:00:00Z", "UTC"),
            "2027-01-01T00:00:00+00:00[UTC]"
        );
    }

    #[test]
    fn day_fields_match_either() {
        // The 13th, or any Friday.
        assert_eq!(
            next("0 0 13 * fri", "2026-12-01T00:00:00Z", "UTC"),
            "2026-12-04T00:00:00+00:00[UTC]"
        );
    }

    #[test]
    fn daylight_saving_changes() {
        // 02:30 does not exist in Berlin on 2026-03-29: the next run is the
        // day after.
        assert_eq!(
            next("30 2 * * *", "2026-03-28T12:00:00Z", "Europe/Berlin"),
            "2026-03-30T02:30:00+02:00[Europe/Berlin]"
        );
        // 02:30 occurs twice on 2026-10-25: it runs at the first one only.
        let first = next("30 2 * * *", "2026-10-24T12:00:00Z", "Europe/Berlin");
        assert_eq!(first, "2026-10-25T02:30:00+02:00[Europe/Berlin]");
        let after_first = next("30 2 * * *", "2026-10-25T00:30:00Z", "Europe/Berlin");
        assert_eq!(after_first, "2026-10-26T02:30:00+01:00[Europe/Berlin]");
    }

    #[test]
    fn systemd_calendar() {
        assert_eq!(
            to_on_calendar("30 2 * * *").as_deref(),
            Some("*-*-* 2:30:00")
        );
        assert_eq!(
            to_on_calendar("*/15 9-17 * * mon-fri").as_deref(),
            Some("Mon..Fri *-*-* 9..17:0/15:00")
        );
        assert_eq!(to_on_calendar("@monthly").as_deref(), Some("*-*-1 0:0:00"));
        assert_eq!(to_on_calendar("0 0 13 * fri"), None);
        assert_eq!(to_on_calendar("0 1-5/2 * * *"), None);
    }

    #[test]
    fn invalid_expressions() {
        for bad in [
            "61 * * * *",
            "* * *",
            "*/0 * * * *",
            "0 0 32 * *",
            "0 0 * foo *",
        ] {
            assert!(Schedule::parse_cron(bad).is_err(), "{bad} accepted");
        }
    }
}
