//! StackStorm's timers: `core.st2.IntervalTimer`, `core.st2.DateTimer` and
//! `core.st2.CronTimer`. One tokio task per distinct (tenant, type,
//! parameters) among enabled rules; reconciled whenever rules change.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use serde_json::{Map, Value, json};
use squall_core::TenantId;
use squall_core::trigger::{CRON_TIMER, DATE_TIMER, INTERVAL_TIMER};
use tokio::task::JoinHandle;

/// Is `trigger_type` one of the timers?
pub fn is_timer(trigger_type: &str) -> bool {
    matches!(trigger_type, INTERVAL_TIMER | DATE_TIMER | CRON_TIMER)
}

/// When a timer fires.
#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    At(DateTime<Utc>),
    Cron(Box<Cron>, Tz),
}

/// Turn a timer trigger's parameters into a schedule; `Err` says which
/// parameter is wrong.
pub fn schedule(trigger_type: &str, params: &Map<String, Value>) -> Result<Schedule, String> {
    let tz = match params.get("timezone").and_then(Value::as_str) {
        None => Tz::UTC,
        Some(name) => name
            .parse::<Tz>()
            .map_err(|_| format!("unknown timezone '{name}'"))?,
    };
    match trigger_type {
        INTERVAL_TIMER => {
            let delta = params
                .get("delta")
                .and_then(Value::as_u64)
                .filter(|d| *d > 0)
                .ok_or("'delta' must be an integer >= 1")?;
            let unit = match params.get("unit").and_then(Value::as_str) {
                Some("seconds") => 1,
                Some("minutes") => 60,
                Some("hours") => 3600,
                Some("days") => 86_400,
                Some("weeks") => 604_800,
                other => {
                    return Err(format!(
                        "unknown 'unit' {other:?} (expected weeks, days, hours, minutes or seconds)"
                    ));
                }
            };
            Ok(Schedule::Every(Duration::from_secs(
                delta.saturating_mul(unit),
            )))
        }
        DATE_TIMER => {
            let text = params
                .get("date")
                .and_then(Value::as_str)
                .ok_or("'date' is required")?;
            let at = parse_date(text, tz).ok_or_else(|| {
                format!("'date' {text:?} is not a date-time (e.g. 2026-12-01 10:00:00)")
            })?;
            Ok(Schedule::At(at))
        }
        CRON_TIMER => Ok(Schedule::Cron(Box::new(cron_from_fields(params)?), tz)),
        other => Err(format!("'{other}' is not a timer")),
    }
}

fn parse_date(text: &str, tz: Tz) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Some(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(naive) = chrono::NaiveDateTime::parse_from_str(text, format) {
            return tz
                .from_local_datetime(&naive)
                .single()
                .map(|t| t.with_timezone(&Utc));
        }
    }
    None
}

/// APScheduler's cron fields (StackStorm's `core.st2.CronTimer`) as a cron
/// pattern with seconds. Fields more significant than the least significant
/// one given default to `*`, less significant ones to their minimum, as in
/// APScheduler. `day_of_week` counts from Monday = 0 there.
fn cron_from_fields(params: &Map<String, Value>) -> Result<Cron, String> {
    let text = |name: &str| -> Result<Option<String>, String> {
        match params.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_owned())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(format!(
                "'{name}' must be a string or an integer, found {other}"
            )),
        }
    };
    for unsupported in ["year", "week"] {
        if let Some(v) = text(unsupported)?
            && v != "*"
        {
            return Err(format!(
                "'{unsupported}' is not supported by Squall's cron timer (only '*')"
            ));
        }
    }
    // Order from most to least significant, with APScheduler's minimums.
    let order = [
        ("month", "1"),
        ("day", "1"),
        ("day_of_week", "*"),
        ("hour", "0"),
        ("minute", "0"),
        ("second", "0"),
    ];
    let given: Vec<Option<String>> = order
        .iter()
        .map(|(n, _)| text(n))
        .collect::<Result<_, _>>()?;
    let last = given.iter().rposition(Option::is_some);
    let mut fields = Vec::new();
    for (i, ((name, min), value)) in order.iter().zip(&given).enumerate() {
        let value = match value {
            Some(v) if *name == "day_of_week" => day_of_week(v)?,
            Some(v) => v.clone(),
            None if last.is_some_and(|l| i < l) => "*".to_owned(),
            None => (*min).to_owned(),
        };
        fields.push(value);
    }
    let [month, day, dow, hour, minute, second] =
        <[String; 6]>::try_from(fields).expect("six fields");
    let pattern = format!("{second} {minute} {hour} {day} {month} {dow}");
    CronParser::builder()
        .seconds(Seconds::Required)
        .build()
        .parse(&pattern)
        .map_err(|e| format!("invalid cron fields ({pattern}): {e}"))
}

/// APScheduler numbers weekdays from Monday = 0; cron from Sunday = 0.
fn day_of_week(v: &str) -> Result<String, String> {
    let shift = |n: &str| -> Result<String, String> {
        match n.parse::<u32>() {
            Ok(d) if d <= 6 => Ok(((d + 1) % 7).to_string()),
            Ok(_) => Err(format!(
                "'day_of_week' {n} is out of range 0-6 (Monday = 0)"
            )),
            Err(_) => Ok(n.to_owned()),
        }
    };
    let mut out = Vec::new();
    for part in v.split(',') {
        match part.split_once('-') {
            Some((a, b)) if a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok() => {
                let (a, b) = (a.parse::<u32>().unwrap_or(0), b.parse::<u32>().unwrap_or(0));
                for d in a..=b {
                    out.push(shift(&d.to_string())?);
                }
            }
            _ => out.push(shift(part)?),
        }
    }
    Ok(out.join(","))
}

impl Schedule {
    /// The first firing strictly after `after`; `None` when it never fires
    /// again. An interval timer counts from `after` (its previous tick, or
    /// its start), unless `aligned`: then it fires on the multiples of its
    /// period since the Unix epoch, the same instants on every node, so
    /// that nodes taking turns at it name each tick alike.
    pub fn next_fire(&self, after: DateTime<Utc>, aligned: bool) -> Option<DateTime<Utc>> {
        match self {
            Self::Every(d) => {
                let period = chrono::Duration::from_std(*d).ok()?;
                if !aligned {
                    return after.checked_add_signed(period);
                }
                let period_ms = period.num_milliseconds().max(1);
                let ticks = after.timestamp_millis().div_euclid(period_ms) + 1;
                DateTime::from_timestamp_millis(ticks.checked_mul(period_ms)?)
            }
            Self::At(at) => (*at > after).then_some(*at),
            Self::Cron(cron, tz) => {
                let local = after.with_timezone(tz);
                let next = cron.find_next_occurrence(&local, false).ok()?;
                Some(next.with_timezone(&Utc))
            }
        }
    }
}

/// How late a tick may still fire: one due longer ago (its task was held
/// up) is skipped.
pub const LATE: chrono::TimeDelta = chrono::TimeDelta::seconds(2);

/// A timer's identity: the same trigger in several rules fires once.
pub type TimerKey = (TenantId, String, String);

/// Running timer tasks.
#[derive(Debug, Default)]
pub struct Timers {
    running: HashMap<TimerKey, JoinHandle<()>>,
}

impl Timers {
    /// Keep exactly the timers in `wanted` running; `spawn` starts one.
    pub fn reconcile(
        &mut self,
        wanted: HashMap<TimerKey, Schedule>,
        mut spawn: impl FnMut(&TimerKey, Schedule) -> JoinHandle<()>,
    ) {
        self.running.retain(|key, handle| {
            let keep = wanted.contains_key(key) && !handle.is_finished();
            if !keep {
                handle.abort();
            }
            keep
        });
        for (key, schedule) in wanted {
            if let std::collections::hash_map::Entry::Vacant(slot) = self.running.entry(key) {
                let handle = spawn(slot.key(), schedule);
                slot.insert(handle);
            }
        }
    }

    pub fn stop(&mut self) {
        for (_, handle) in self.running.drain() {
            handle.abort();
        }
    }
}

/// The payload StackStorm's timers emit for the tick due at `tick`.
pub fn payload(tick: DateTime<Utc>) -> Value {
    json!({"executed_at": tick.format("%Y-%m-%d %H:%M:%S%.6f+00:00").to_string(), "schedule": null})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    /// How long from `now` until `s` fires next, counted from now.
    fn delay(s: &Schedule, now: DateTime<Utc>) -> Option<Duration> {
        s.next_fire(now, false)
            .map(|t| (t - now).to_std().expect("in the future"))
    }

    #[test]
    fn interval_units() {
        let s = schedule(
            INTERVAL_TIMER,
            &params(json!({"unit": "minutes", "delta": 5})),
        )
        .expect("valid");
        assert_eq!(delay(&s, Utc::now()), Some(Duration::from_secs(300)));
        assert!(
            schedule(
                INTERVAL_TIMER,
                &params(json!({"unit": "fortnights", "delta": 1}))
            )
            .is_err()
        );
        assert!(
            schedule(
                INTERVAL_TIMER,
                &params(json!({"unit": "seconds", "delta": 0}))
            )
            .is_err()
        );
    }

    #[test]
    fn aligned_intervals_tick_on_the_same_instants_whenever_counted_from() {
        let s = schedule(
            INTERVAL_TIMER,
            &params(json!({"unit": "seconds", "delta": 5})),
        )
        .expect("valid");
        let at = |secs: i64, ms: u32| {
            Utc.with_ymd_and_hms(2026, 12, 5, 10, 0, 0)
                .single()
                .expect("valid time")
                + chrono::Duration::seconds(secs)
                + chrono::Duration::milliseconds(i64::from(ms))
        };
        assert_eq!(s.next_fire(at(3, 200), true), Some(at(5, 0)));
        assert_eq!(s.next_fire(at(4, 999), true), Some(at(5, 0)));
        // A tick's successor is the next one, never itself.
        assert_eq!(s.next_fire(at(5, 0), true), Some(at(10, 0)));
        // Unaligned, it counts from where it is asked.
        assert_eq!(s.next_fire(at(3, 200), false), Some(at(8, 200)));
    }

    #[test]
    fn date_timer_fires_once_in_the_future_only() {
        let now = Utc::now();
        let future = (now + chrono::Duration::seconds(90)).to_rfc3339();
        let s = schedule(DATE_TIMER, &params(json!({"date": future}))).expect("valid");
        let d = delay(&s, now).expect("in the future");
        assert!(
            d <= Duration::from_secs(90) && d >= Duration::from_secs(89),
            "{d:?}"
        );
        let past =
            schedule(DATE_TIMER, &params(json!({"date": "2001-01-01 00:00:00"}))).expect("valid");
        assert_eq!(delay(&past, now), None, "past dates are not scheduled");
        assert!(schedule(DATE_TIMER, &params(json!({"date": "soon"}))).is_err());
    }

    #[test]
    fn cron_fields_follow_apscheduler_defaults() {
        let at = |h, m, s| {
            Utc.with_ymd_and_hms(2026, 11, 23, h, m, s)
                .single()
                .expect("valid time")
        };
        // Every 5 minutes at second 0.
        let s = schedule(CRON_TIMER, &params(json!({"minute": "*/5"}))).expect("valid");
        assert_eq!(
            delay(&s, at(10, 1, 30)),
            Some(Duration::from_secs(3 * 60 + 30))
        );
        // hour: 3 → 03:00:00 every day.
        let s = schedule(CRON_TIMER, &params(json!({"hour": 3}))).expect("valid");
        assert_eq!(delay(&s, at(2, 0, 0)), Some(Duration::from_secs(3600)));
        // Every second.
        let s = schedule(CRON_TIMER, &params(json!({"second": "*"}))).expect("valid");
        assert_eq!(delay(&s, at(2, 0, 0)), Some(Duration::from_secs(1)));
        // Monday = 0 in StackStorm: 2026-11-23 is a Monday.
        let s =
            schedule(CRON_TIMER, &params(json!({"day_of_week": 0, "hour": 12}))).expect("valid");
        assert_eq!(delay(&s, at(11, 0, 0)), Some(Duration::from_secs(3600)));
        // Time zones shift the wall clock.
        let s = schedule(
            CRON_TIMER,
            &params(json!({"hour": 12, "timezone": "Europe/Paris"})),
        )
        .expect("valid");
        assert_eq!(delay(&s, at(10, 0, 0)), Some(Duration::from_secs(3600)));
        assert!(schedule(CRON_TIMER, &params(json!({"week": 3}))).is_err());
        assert!(schedule(CRON_TIMER, &params(json!({"hour": 99}))).is_err());
        assert!(schedule(CRON_TIMER, &params(json!({"timezone": "Mars/Base"}))).is_err());
    }
}
