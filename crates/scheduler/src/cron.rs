//! Cron schedules (standard 5-field patterns, in a time zone). Each schedule keeps its history in
//! the stream `cron/<id>`: when it was first registered, every run, and every range of runs it
//! skipped. The last of these is the high-water mark, so a restart neither repeats a run nor
//! silently skips one: runs missed within the catch-up window run once (one run stands for all
//! of them, and says how many), older ones are recorded as skipped. Appends carry the stream's
//! expected version and deterministic ids, so two schedulers on one database record each run once.
//!
//! A run is an event (`CronRan`); what it does (the daily digest, the monthly follow-up review)
//! belongs to the exporters that consume it, like every other event.

use std::str::FromStr as _;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use giamsat_store::{Direction, Store, StoreError};
use giamsat_types::{ExpectedVersion, NewEvent, StreamId};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::watch;
use uuid::Uuid;

use crate::Clock;

pub const CRON_REGISTERED_EVENT: &str = "CronScheduleRegistered";
pub const CRON_RAN_EVENT: &str = "CronRan";
pub const CRON_SKIPPED_EVENT: &str = "CronRunsSkipped";
/// No schedule looks further back than this many occurrences when counting missed runs.
const MAX_COUNTED: u64 = 1_000_000;

#[derive(Debug, thiserror::Error)]
pub enum CronError {
    #[error("cron schedule {id:?}: {message}")]
    Invalid { id: String, message: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A cron schedule from the configuration.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    pub id: String,
    pub pattern: String,
    pub time_zone: Tz,
    /// Missed runs newer than this run once at start; older ones are recorded as skipped.
    pub catch_up: TimeDelta,
    pub description: String,
    cron: Arc<Cron>,
}

impl CronSchedule {
    pub fn new(
        id: &str,
        pattern: &str,
        time_zone: &str,
        catch_up: TimeDelta,
        description: &str,
    ) -> Result<CronSchedule, CronError> {
        let invalid = |message: String| CronError::Invalid {
            id: id.to_owned(),
            message,
        };
        StreamId::new(format!("cron/{id}")).map_err(|e| invalid(e.to_string()))?;
        if pattern.split_whitespace().count() != 5 {
            return Err(invalid(format!(
                "{pattern:?} must have 5 fields: minute hour day-of-month month day-of-week"
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|e| invalid(format!("{pattern:?}: {e}")))?;
        let time_zone = Tz::from_str(time_zone)
            .map_err(|_| invalid(format!("{time_zone:?} is not an IANA time zone name")))?;
        Ok(CronSchedule {
            id: id.to_owned(),
            pattern: pattern.to_owned(),
            time_zone,
            catch_up,
            description: description.to_owned(),
            cron: Arc::new(cron),
        })
    }

    fn stream(&self) -> StreamId {
        StreamId::new(format!("cron/{}", self.id)).unwrap_or_else(|_| unreachable_stream())
    }

    /// The first occurrence strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let local = after.with_timezone(&self.time_zone);
        self.cron
            .find_next_occurrence(&local, false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }
}

fn unreachable_stream() -> StreamId {
    // `new` validated the stream id; this cannot be reached, but a fallback beats a panic.
    StreamId::new("cron/invalid".to_owned()).expect("a valid literal stream id")
}

/// What a schedule's stream says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronState {
    /// Every occurrence up to here has run or been recorded as skipped.
    pub high_water: DateTime<Utc>,
    pub version: u64,
}

/// One step of a schedule: what was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CronRun {
    /// First start: the schedule counts from here.
    Registered { since: DateTime<Utc> },
    /// One run, standing for `coalesced` + 1 missed occurrences within the catch-up window.
    Ran {
        scheduled_for: DateTime<Utc>,
        ran_at: DateTime<Utc>,
        coalesced: u64,
    },
    /// Occurrences older than the catch-up window.
    Skipped {
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        count: u64,
    },
}

/// Reads a schedule's high-water mark from its stream (`None`: never registered).
pub async fn cron_state(
    store: &Store,
    schedule: &CronSchedule,
) -> Result<Option<CronState>, CronError> {
    let last = store
        .read_stream(&schedule.stream(), Direction::Backward, None, 1)
        .await?;
    let Some(event) = last.first() else {
        return Ok(None);
    };
    let data: serde_json::Value = serde_json::from_str(&event.data).unwrap_or_default();
    let field = match event.event_type.as_str() {
        CRON_REGISTERED_EVENT => "since",
        CRON_RAN_EVENT => "scheduled_for",
        _ => "to",
    };
    let high_water = data[field]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .ok_or_else(|| CronError::Invalid {
            id: schedule.id.clone(),
            message: format!(
                "event {} of cron/{} has no {field} time",
                event.position, schedule.id
            ),
        })?;
    Ok(Some(CronState {
        high_water,
        version: event.stream_version,
    }))
}

/// Brings one schedule up to `now`: registers it on first use, records skipped occurrences older
/// than the catch-up window, and runs once for those within it. Returns what it recorded (empty
/// when nothing was due, or when another scheduler recorded it first).
pub async fn run_cron(
    store: &Store,
    schedule: &CronSchedule,
    now: DateTime<Utc>,
) -> Result<Vec<CronRun>, CronError> {
    let stream = schedule.stream();
    let id_for = |what: &str| {
        Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("giamsat:cron:{}:{what}", schedule.id).as_bytes(),
        )
    };
    let Some(state) = cron_state(store, schedule).await? else {
        let event = NewEvent::new(
            CRON_REGISTERED_EVENT,
            &json!({
                "schedule": schedule.id,
                "pattern": schedule.pattern,
                "time_zone": schedule.time_zone.name(),
                "since": now.to_rfc3339(),
            }),
        )
        .with_id(id_for("registered"));
        return match store
            .append(&stream, ExpectedVersion::NoStream, vec![event])
            .await
        {
            Ok(_) => Ok(vec![CronRun::Registered { since: now }]),
            Err(StoreError::WrongExpectedVersion { .. } | StoreError::EventIdConflict { .. }) => {
                Ok(Vec::new())
            }
            Err(e) => Err(e.into()),
        };
    };
    let window_start = now - schedule.catch_up;
    let mut skipped: Option<(DateTime<Utc>, DateTime<Utc>, u64)> = None;
    let mut within: Option<(DateTime<Utc>, u64)> = None;
    let mut cursor = state.high_water;
    let mut counted = 0;
    while let Some(next) = schedule.next_after(cursor) {
        if next > now || counted >= MAX_COUNTED {
            break;
        }
        counted += 1;
        if next < window_start {
            let entry = skipped.get_or_insert((next, next, 0));
            entry.1 = next;
            entry.2 += 1;
        } else {
            let entry = within.get_or_insert((next, 0));
            entry.0 = next;
            entry.1 += 1;
        }
        cursor = next;
    }
    let mut events = Vec::new();
    let mut runs = Vec::new();
    if let Some((from, to, count)) = skipped {
        events.push(
            NewEvent::new(
                CRON_SKIPPED_EVENT,
                &json!({
                    "schedule": schedule.id,
                    "from": from.to_rfc3339(),
                    "to": to.to_rfc3339(),
                    "count": count,
                    "reason": "older than the catch-up window",
                    "recorded_at": now.to_rfc3339(),
                }),
            )
            .with_id(id_for(&format!("skipped:{}", to.to_rfc3339()))),
        );
        runs.push(CronRun::Skipped { from, to, count });
    }
    if let Some((scheduled_for, count)) = within {
        let late_ms = (now - scheduled_for).num_milliseconds();
        events.push(
            NewEvent::new(
                CRON_RAN_EVENT,
                &json!({
                    "schedule": schedule.id,
                    "description": schedule.description,
                    "scheduled_for": scheduled_for.to_rfc3339(),
                    "scheduled_for_local": scheduled_for.with_timezone(&schedule.time_zone).to_rfc3339(),
                    "ran_at": now.to_rfc3339(),
                    "late_ms": late_ms,
                    "late": late_ms > 1000,
                    "coalesced": count - 1,
                }),
            )
            .with_id(id_for(&format!("ran:{}", scheduled_for.to_rfc3339()))),
        );
        runs.push(CronRun::Ran {
            scheduled_for,
            ran_at: now,
            coalesced: count - 1,
        });
    }
    if events.is_empty() {
        return Ok(Vec::new());
    }
    match store
        .append(&stream, ExpectedVersion::Exact(state.version), events)
        .await
    {
        Ok(_) => Ok(runs),
        // Another scheduler recorded these occurrences first.
        Err(StoreError::WrongExpectedVersion { .. } | StoreError::EventIdConflict { .. }) => {
            Ok(Vec::new())
        }
        Err(e) => Err(e.into()),
    }
}

/// Runs every schedule until `shutdown` turns true.
pub async fn run_crons(
    store: Store,
    clock: Clock,
    schedules: Vec<CronSchedule>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), CronError> {
    if schedules.is_empty() {
        return Ok(());
    }
    loop {
        if *shutdown.borrow() {
            return Ok(());
        }
        let now = clock.now();
        let mut next: Option<DateTime<Utc>> = None;
        for schedule in &schedules {
            for run in run_cron(&store, schedule, now).await? {
                tracing::info!(schedule = %schedule.id, ?run, "cron");
            }
            if let Some(at) = schedule.next_after(now) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        let Some(next) = next else { return Ok(()) };
        tokio::select! {
            _ = async {
                while clock.now() < next {
                    clock.sleep_until(next).await;
                }
            } => {}
            _ = shutdown.changed() => {}
        }
    }
}
