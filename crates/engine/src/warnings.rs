//! Warnings on a case: things that are not errors but that a person should look at (a visit on a
//! day off, a notice sent too late). They are computed from the state, never stored.

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate};
use serde::Serialize;
use serde_json::Value;

use crate::calendar::Calendar;
use crate::case::CaseState;
use crate::context::Context;
use crate::definition::{Operand, WarningKind, WarningRule};
use crate::load::Workflow;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    pub message: String,
    pub message_en: String,
}

/// Reads `YYYY-MM-DD`, also as the start of a date-time.
fn date_at(context: &Context<'_>, pointer: &str) -> Option<NaiveDate> {
    let text = context.pointer(pointer)?.as_str()?;
    NaiveDate::parse_from_str(text.get(..10)?, "%Y-%m-%d").ok()
}

fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in values {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// Every warning the definition's rules raise for this case, with working days from `calendar`.
/// A date in a year the calendar does not cover is judged by weekends only, and one more warning
/// (`calendar_year_missing`) says so.
pub fn warnings(workflow: &Workflow, state: &CaseState, calendar: &Calendar) -> Vec<Warning> {
    let mut params = serde_json::Map::new();
    for p in &workflow.definition.parameters {
        if let Some(v) = workflow.parameter(&p.id.value, &state.data) {
            params.insert(p.id.value.clone(), v);
        }
    }
    // The case data is borrowed, not copied into the context.
    let mut members = serde_json::Map::new();
    members.insert("stage".to_owned(), Value::String(state.stage.clone()));
    members.insert("params".to_owned(), Value::Object(params));
    let mut base = Context::new(&state.data, members);
    let mut out = Vec::new();
    let mut uncovered = BTreeSet::new();
    for rule in &workflow.definition.warnings {
        if !rule.stages.is_empty() && !rule.stages.iter().any(|s| s.value == state.stage) {
            continue;
        }
        match &rule.each {
            None => out.extend(check(rule, &base, None, calendar, &mut uncovered)),
            Some(collection) => {
                // One context for every entity, its `target` replaced each time: copying the
                // case data for each entity and rule cost more than the checks.
                for (key, entity) in state.entities.get(&collection.value).into_iter().flatten() {
                    let mut target = entity.data.clone();
                    if let Value::Object(map) = &mut target {
                        map.insert("key".to_owned(), Value::String(key.clone()));
                        map.insert("state".to_owned(), Value::String(entity.state.clone()));
                    }
                    base.set("target", target);
                    let entity = Some(format!("{}/{key}", collection.value));
                    out.extend(check(rule, &base, entity, calendar, &mut uncovered));
                }
                base.remove("target");
            }
        }
    }
    for year in uncovered {
        out.push(Warning {
            code: "calendar_year_missing".to_owned(),
            entity: None,
            message: format!(
                "Lịch ngày nghỉ chưa có dữ liệu năm {year}: chỉ tính Thứ Bảy, Chủ nhật là ngày nghỉ"
            ),
            message_en: format!(
                "the holiday calendar has no data for {year}: only Saturdays and Sundays count as days off"
            ),
        });
    }
    out
}

fn check(
    rule: &WarningRule,
    context: &Context<'_>,
    entity: Option<String>,
    calendar: &Calendar,
    uncovered: &mut BTreeSet<i32>,
) -> Option<Warning> {
    let key = context
        .pointer("/target/key")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let values = match &rule.rule {
        WarningKind::NotWorkingDay { date } => {
            let day = date_at(context, date)?;
            if !calendar.covers(day) {
                uncovered.insert(day.year());
            }
            let reason = calendar.day_off_reason(day)?;
            vec![
                ("date", crate::vn::date_short(day)),
                ("key", key),
                ("reason", reason),
            ]
        }
        WarningKind::MinDaysBetween { from, to, days } => {
            let (a, b) = (date_at(context, from)?, date_at(context, to)?);
            let minimum = match days {
                Operand::Pointer(p) => context.pointer(p)?.as_i64()?,
                Operand::Literal { value } => value.as_i64()?,
            };
            let actual = (b - a).num_days();
            if actual >= minimum {
                return None;
            }
            vec![
                ("from", crate::vn::date_short(a)),
                ("to", crate::vn::date_short(b)),
                ("days", actual.to_string()),
                ("minimum", minimum.to_string()),
                ("key", key),
            ]
        }
    };
    Some(Warning {
        code: rule.code.clone(),
        entity,
        message: fill(&rule.message.vi, &values),
        message_en: fill(&rule.message.en, &values),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn dates_are_read_from_date_times_too() {
        let document = json!({"a": "2024-04-24T07:30:00+07:00", "b": "2024-04-25"});
        let c = Context::of(&document);
        assert_eq!(date_at(&c, "/a"), NaiveDate::from_ymd_opt(2024, 4, 24));
        assert_eq!(date_at(&c, "/b"), NaiveDate::from_ymd_opt(2024, 4, 25));
        assert_eq!(date_at(&c, "/missing"), None);
    }
}
