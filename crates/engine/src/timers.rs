//! Timers: when a workflow's declared timers come due for a case. Pure: the due times are derived
//! from the case state, the definition and the working-day calendar, so the scheduler can rebuild
//! every timer from the log after a restart, and a changed date (a rescheduled visit) changes the
//! timer with it. What has fired is recorded in the case's own events ([`TimerRecord`]).
//!
//! An offset is a sum of terms such as `-3 working days`, `+1 year -30 days`, `+$findings_due_days
//! days` (a workflow parameter), `0 days`, `+2 hours`. Units: minute(s), hour(s), day(s), working
//! day(s), month(s), year(s). `at` is a time of day (`HH:MM`), `end-of-day` (the midnight that
//! ends the day, so a deadline day is over when the timer fires) or a JSON pointer to an `HH:MM`
//! value of the case.

use chrono::{
    DateTime, Days, FixedOffset, Months, NaiveDate, NaiveDateTime, NaiveTime, TimeDelta,
    TimeZone as _,
};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::calendar::Calendar;
use crate::case::CaseState;
use crate::context::Context;
use crate::definition::{LatePolicy, Operand, TimerDecl};
use crate::load::Workflow;

/// The role timers act as; a command a timer runs must allow it.
pub const SYSTEM_ROLE: &str = "system";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetUnit {
    Minutes,
    Hours,
    Days,
    WorkingDays,
    Months,
    Years,
}

/// A number in an offset: a literal or a workflow parameter (`$name`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Amount {
    Literal(i64),
    Parameter { name: String, negative: bool },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetTerm {
    pub amount: Amount,
    pub unit: OffsetUnit,
}

/// A parsed `offset`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Offset(pub Vec<OffsetTerm>);

impl Offset {
    pub fn parse(text: &str) -> Result<Offset, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let mut terms = Vec::new();
        let mut i = 0;
        if words.is_empty() {
            return Err("an offset needs at least one term such as \"+1 day\"".to_owned());
        }
        while i < words.len() {
            let number = words[i];
            let (negative, digits) = match number.as_bytes().first() {
                Some(b'-') => (true, &number[1..]),
                Some(b'+') => (false, &number[1..]),
                _ => (false, number),
            };
            let amount = if let Some(name) = digits.strip_prefix('$') {
                if name.is_empty() {
                    return Err(format!("{number:?} names no parameter"));
                }
                Amount::Parameter {
                    name: name.to_owned(),
                    negative,
                }
            } else {
                let n: i64 = digits.parse().map_err(|_| {
                    format!("{number:?} is not a number or a $parameter (in {text:?})")
                })?;
                Amount::Literal(if negative { -n } else { n })
            };
            i += 1;
            let unit = match words.get(i).copied() {
                Some("working") => {
                    i += 1;
                    match words.get(i).copied() {
                        Some("day" | "days") => OffsetUnit::WorkingDays,
                        other => {
                            return Err(format!(
                                "expected \"days\" after \"working\" in {text:?}, found {other:?}"
                            ));
                        }
                    }
                }
                Some("minute" | "minutes") => OffsetUnit::Minutes,
                Some("hour" | "hours") => OffsetUnit::Hours,
                Some("day" | "days") => OffsetUnit::Days,
                Some("month" | "months") => OffsetUnit::Months,
                Some("year" | "years") => OffsetUnit::Years,
                other => {
                    return Err(format!(
                        "expected a unit (minutes, hours, days, working days, months, years) \
                         after {number:?} in {text:?}, found {other:?}"
                    ));
                }
            };
            i += 1;
            terms.push(OffsetTerm { amount, unit });
        }
        Ok(Offset(terms))
    }

    /// The parameters the offset names.
    pub fn parameters(&self) -> impl Iterator<Item = &str> {
        self.0.iter().filter_map(|t| match &t.amount {
            Amount::Parameter { name, .. } => Some(name.as_str()),
            Amount::Literal(_) => None,
        })
    }
}

/// A parsed `at`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    Time(NaiveTime),
    EndOfDay,
    Pointer(String),
}

impl At {
    pub fn parse(text: &str) -> Result<At, String> {
        if text == "end-of-day" {
            return Ok(At::EndOfDay);
        }
        if text.starts_with('/') {
            return Ok(At::Pointer(text.to_owned()));
        }
        parse_time_of_day(text)
            .map(At::Time)
            .ok_or_else(|| format!("{text:?} is not HH:MM, end-of-day or a JSON pointer"))
    }
}

/// `HH:MM` (24-hour).
pub fn parse_time_of_day(text: &str) -> Option<NaiveTime> {
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    NaiveTime::from_hms_opt(h.parse().ok()?, m.parse().ok()?, 0)
}

/// A timer declaration with its offset and time of day parsed (done once, when loading).
#[derive(Debug, Clone)]
pub struct CompiledTimer {
    pub decl: TimerDecl,
    pub offset: Offset,
    pub at: Option<At>,
}

/// What happened when a timer came due, as recorded in the case's event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimerOutcome {
    /// The command was accepted; the event carrying this record is the command's.
    Fired,
    /// The command no longer applied (the workflow refused it); nothing changed.
    Rejected,
    /// It came due while the scheduler was down and its policy is to skip late timers.
    Skipped,
}

/// The record of a timer instance that came due, kept in the case's event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerRecord {
    pub timer: String,
    pub instance: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    pub command: String,
    /// When it was due (RFC 3339, workflow zone).
    pub due: String,
    /// When the scheduler acted on it.
    pub fired_at: String,
    /// How late it acted, in milliseconds.
    pub late_ms: i64,
    /// Acted on more than a second after its due time (for example after a restart).
    pub late: bool,
    pub outcome: TimerOutcome,
    /// The rejection code, when rejected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Where a timer instance stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "state", content = "record")]
pub enum TimerState {
    /// Waiting for its due time, and its command applies to the case as it is now.
    Pending,
    /// Its command does not apply now (wrong stage or entity state); it fires if that changes.
    Inactive,
    /// It came due and was acted on.
    Done(TimerRecord),
}

/// One timer for one case (and entity, for per-entity timers).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TimerInstance {
    pub case: String,
    pub timer: String,
    pub label: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Unique within the case: timer, entity key and due time.
    pub instance: String,
    pub due: DateTime<FixedOffset>,
    pub command: String,
    pub input: Value,
    pub when_late: LatePolicy,
    #[serde(flatten)]
    pub state: TimerState,
}

impl TimerInstance {
    pub fn is_pending(&self) -> bool {
        self.state == TimerState::Pending
    }

    /// The record to keep when it is acted on at `fired_at`.
    pub fn record(
        &self,
        fired_at: DateTime<FixedOffset>,
        outcome: TimerOutcome,
        code: Option<String>,
    ) -> TimerRecord {
        let late_ms = (fired_at - self.due).num_milliseconds();
        TimerRecord {
            timer: self.timer.clone(),
            instance: self.instance.clone(),
            key: self.key.clone(),
            command: self.command.clone(),
            due: self.due.to_rfc3339(),
            fired_at: fired_at.to_rfc3339(),
            late_ms,
            late: late_ms > 1000,
            outcome,
            code,
        }
    }
}

/// The workflow's time zone (validated when the definition was loaded).
pub fn zone(workflow: &Workflow) -> Tz {
    workflow
        .definition
        .time_zone
        .parse()
        .unwrap_or(chrono_tz::Asia::Ho_Chi_Minh)
}

/// A local date and time in `tz` as an instant; a time skipped by a daylight-saving change moves
/// to the first valid time after it.
pub fn local(tz: Tz, at: NaiveDateTime) -> DateTime<FixedOffset> {
    let mut probe = at;
    for _ in 0..180 {
        if let Some(dt) = tz.from_local_datetime(&probe).earliest() {
            return dt.fixed_offset();
        }
        probe += TimeDelta::minutes(1);
    }
    tz.from_utc_datetime(&at).fixed_offset()
}

/// Every timer instance of a case: those derivable from its current state (pending, inactive or
/// done) and those recorded in its events whose dates have since changed (done).
pub fn timers(workflow: &Workflow, state: &CaseState, calendar: &Calendar) -> Vec<TimerInstance> {
    let mut out = Vec::new();
    if !state.is_started() {
        return out;
    }
    let tz = zone(workflow);
    let mut params = Map::new();
    for p in &workflow.definition.parameters {
        if let Some(v) = workflow.parameter(&p.id.value, &state.data) {
            params.insert(p.id.value.clone(), v);
        }
    }
    let stage_since = state
        .stages
        .last()
        .map_or(state.started_at.clone(), |s| s.at.clone());
    let mut members = Map::new();
    members.insert("case_id".to_owned(), Value::String(state.id.clone()));
    members.insert("stage".to_owned(), Value::String(state.stage.clone()));
    members.insert("stage_since".to_owned(), Value::String(stage_since));
    members.insert(
        "started_at".to_owned(),
        Value::String(state.started_at.clone()),
    );
    members.insert("params".to_owned(), Value::Object(params.clone()));
    let base = Context::new(&state.data, members);
    // One context for every timer and entity: only `target` and `due` change between them, so
    // the case data is never copied.
    let mut context = base;
    for timer in workflow.timers.iter() {
        let decl = &timer.decl;
        let command = workflow.command(&decl.command.value);
        let stage_ok = command.is_some_and(|c| c.stages.iter().any(|s| s.value == state.stage));
        let mut targets: Vec<(Option<String>, Value, bool)> = Vec::new();
        match &decl.each {
            None => targets.push((None, Value::Null, true)),
            Some(each) => {
                let Some(entities) = state.entities.get(&each.value) else {
                    continue;
                };
                for (key, entity) in entities {
                    let mut data = entity.data.clone();
                    if let Value::Object(map) = &mut data {
                        map.insert("key".to_owned(), Value::String(key.clone()));
                        map.insert("state".to_owned(), Value::String(entity.state.clone()));
                    }
                    let entity_ok = command
                        .and_then(|c| c.target.as_ref())
                        .filter(|t| t.collection.value == each.value)
                        .is_none_or(|t| {
                            t.states.is_empty() || t.states.iter().any(|s| s.value == entity.state)
                        });
                    targets.push((Some(key.clone()), data, entity_ok));
                }
            }
        }
        for (key, target, entity_ok) in targets {
            context.set("target", target);
            context.set("due", Value::Null);
            let Some(due) = due_time(timer, &context, &params, calendar, tz) else {
                continue;
            };
            context.set("due", Value::String(due.to_rfc3339()));
            let instance = format!(
                "{}:{}@{}",
                decl.id.value,
                key.as_deref().unwrap_or("-"),
                due.to_rfc3339()
            );
            let mut input = Map::new();
            for (field, operand) in &decl.input {
                let value = match operand {
                    Operand::Pointer(p) => context.pointer(p.as_str()).cloned(),
                    Operand::Literal { value } => Some(value.clone()),
                };
                if let Some(value) = value {
                    input.insert(field.clone(), value);
                }
            }
            let timer_state = match state.timers.get(&instance) {
                Some(record) => TimerState::Done(record.clone()),
                None if stage_ok && entity_ok => TimerState::Pending,
                None => TimerState::Inactive,
            };
            out.push(TimerInstance {
                case: state.id.clone(),
                timer: decl.id.value.clone(),
                label: decl.label.clone(),
                key,
                instance,
                due,
                command: decl.command.value.clone(),
                input: Value::Object(input),
                when_late: decl.when_late,
                state: timer_state,
            });
        }
    }
    // Recorded instances that the current dates no longer produce (a visit moved after its
    // reminder was sent) stay in the list as done.
    for (instance, record) in &state.timers {
        if out.iter().any(|t| &t.instance == instance) {
            continue;
        }
        let Ok(due) = DateTime::parse_from_rfc3339(&record.due) else {
            continue;
        };
        let decl = workflow
            .timers
            .iter()
            .find(|t| t.decl.id.value == record.timer);
        out.push(TimerInstance {
            case: state.id.clone(),
            timer: record.timer.clone(),
            label: decl.map(|t| t.decl.label.clone()).unwrap_or_default(),
            key: record.key.clone(),
            instance: instance.clone(),
            due,
            command: record.command.clone(),
            input: Value::Null,
            when_late: decl.map(|t| t.decl.when_late).unwrap_or_default(),
            state: TimerState::Done(record.clone()),
        });
    }
    out.sort_by(|a, b| a.due.cmp(&b.due).then_with(|| a.instance.cmp(&b.instance)));
    out
}

/// The due time of a timer in a context, or `None` when its reference date is absent.
fn due_time(
    timer: &CompiledTimer,
    context: &Context<'_>,
    params: &Map<String, Value>,
    calendar: &Calendar,
    tz: Tz,
) -> Option<DateTime<FixedOffset>> {
    let reference = context.pointer(&timer.decl.relative_to)?.as_str()?;
    let mut local_time: NaiveDateTime = match DateTime::parse_from_rfc3339(reference) {
        Ok(instant) => instant.with_timezone(&tz).naive_local(),
        Err(_) => NaiveDate::parse_from_str(reference, "%Y-%m-%d")
            .ok()?
            .and_time(NaiveTime::MIN),
    };
    for term in &timer.offset.0 {
        let n = match &term.amount {
            Amount::Literal(n) => *n,
            Amount::Parameter { name, negative } => {
                let v = params.get(name)?.as_i64()?;
                if *negative { -v } else { v }
            }
        };
        local_time = apply(local_time, n, term.unit, calendar)?;
    }
    let local_time = match &timer.at {
        None => local_time,
        Some(At::Time(t)) => local_time.date().and_time(*t),
        Some(At::EndOfDay) => (local_time.date() + Days::new(1)).and_time(NaiveTime::MIN),
        Some(At::Pointer(p)) => {
            let text = context.pointer(p)?.as_str()?;
            local_time.date().and_time(parse_time_of_day(text)?)
        }
    };
    Some(local(tz, local_time))
}

fn apply(
    at: NaiveDateTime,
    n: i64,
    unit: OffsetUnit,
    calendar: &Calendar,
) -> Option<NaiveDateTime> {
    let months = |m: i64| -> Option<NaiveDateTime> {
        let abs = Months::new(u32::try_from(m.unsigned_abs()).ok()?);
        if m >= 0 {
            at.checked_add_months(abs)
        } else {
            at.checked_sub_months(abs)
        }
    };
    match unit {
        OffsetUnit::Minutes => at.checked_add_signed(TimeDelta::try_minutes(n)?),
        OffsetUnit::Hours => at.checked_add_signed(TimeDelta::try_hours(n)?),
        OffsetUnit::Days => {
            let days = Days::new(n.unsigned_abs());
            if n >= 0 {
                at.checked_add_days(days)
            } else {
                at.checked_sub_days(days)
            }
        }
        OffsetUnit::WorkingDays => {
            Some(calendar.add_working_days(at.date(), n).and_time(at.time()))
        }
        OffsetUnit::Months => months(n),
        OffsetUnit::Years => months(n.checked_mul(12)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_parse() {
        assert_eq!(
            Offset::parse("-3 working days"),
            Ok(Offset(vec![OffsetTerm {
                amount: Amount::Literal(-3),
                unit: OffsetUnit::WorkingDays
            }]))
        );
        let o = Offset::parse("+1 year -30 days").expect("offset");
        assert_eq!(o.0.len(), 2);
        assert_eq!(o.0[1].amount, Amount::Literal(-30));
        let p = Offset::parse("+$findings_due_days days").expect("offset");
        assert_eq!(
            p.parameters().collect::<Vec<_>>(),
            vec!["findings_due_days"]
        );
        assert!(
            Offset::parse("3 weeks")
                .unwrap_err()
                .contains("expected a unit")
        );
        assert!(Offset::parse("soon").unwrap_err().contains("not a number"));
        assert!(
            Offset::parse("-3 working")
                .unwrap_err()
                .contains("\"days\"")
        );
        assert!(Offset::parse("").is_err());
    }

    #[test]
    fn times_of_day_parse() {
        assert_eq!(
            At::parse("07:30"),
            Ok(At::Time(NaiveTime::from_hms_opt(7, 30, 0).expect("time")))
        );
        assert_eq!(At::parse("end-of-day"), Ok(At::EndOfDay));
        assert_eq!(
            At::parse("/case/meeting/time"),
            Ok(At::Pointer("/case/meeting/time".to_owned()))
        );
        assert!(At::parse("7:30").is_err());
        assert!(At::parse("25:00").is_err());
    }

    #[test]
    fn months_clamp_and_skipped_local_times_move_forward() {
        let calendar = Calendar::weekends_only();
        let jan31 = NaiveDate::from_ymd_opt(2025, 1, 31)
            .expect("date")
            .and_time(NaiveTime::MIN);
        assert_eq!(
            apply(jan31, 1, OffsetUnit::Months, &calendar).map(|d| d.date().to_string()),
            Some("2025-02-28".to_owned())
        );
        // 02:30 on 9/3/2025 does not exist in New York (clocks jump from 02:00 to 03:00).
        let ny: Tz = "America/New_York".parse().expect("zone");
        let gap = NaiveDate::from_ymd_opt(2025, 3, 9)
            .expect("date")
            .and_hms_opt(2, 30, 0)
            .expect("time");
        assert_eq!(local(ny, gap).to_rfc3339(), "2025-03-09T03:00:00-04:00");
    }
}
