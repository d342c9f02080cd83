//! The schedule of a case — the delegation meeting and the visits — and its calendar files.
//!
//! The entries are the calendar entries the workflow declares for its notifications
//! (`notifications[].calendar`), read the way the notifications exporter reads them: the same
//! dates, times, places and summaries, the same UIDs (`<case>-<uid>[-<key>]@giamsat`) and the same
//! SEQUENCE (one per recorded change, one more for a cancellation). A calendar that received the
//! e-mailed invitation therefore updates the same entry from a downloaded file. Downloads are
//! published calendars (`METHOD:PUBLISH`): no organizer or attendees, a cancelled visit as
//! `STATUS:CANCELLED`.
//!
//! The RFC 5545 text is written here rather than with the notifications plugin's builder: the
//! daemon knows no concrete exporter plugin (ARCHITECTURE.md), and that builder writes
//! invitations for mail (an organizer's and attendee's address, `METHOD:REQUEST` for one entry).

use axum::extract::{Path, State};
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use giamsat_cases::LoadedCase;
use giamsat_engine::{
    AppliedEffect, CalendarDecl, CalendarMethod, CaseEventData, NotificationDecl, Workflow,
};
use giamsat_notifications::ics;
use serde_json::Value;

use super::{PageError, Pages, User, view};
use crate::cases::load_visible;
use crate::scope::Scope;

/// One entry of the schedule.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// `hop-doan`, `giam-sat-xa-quai-to`: the UID's part after the case, and the file's name.
    pub id: String,
    pub uid: String,
    pub summary: String,
    pub date: NaiveDate,
    pub time: NaiveTime,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub place: Option<String>,
    pub state_label: String,
    pub cancelled: bool,
    pub sequence: u32,
    pub previous_date: Option<String>,
    pub change_reason: Option<String>,
    pub cancel_reason: Option<String>,
}

fn acted_on(data: &CaseEventData, collection: &str, key: &str) -> bool {
    data.effects.iter().any(|e| match e {
        AppliedEffect::Entity {
            collection: c,
            key: k,
            ..
        }
        | AppliedEffect::Create {
            collection: c,
            key: k,
            ..
        } => c == collection && k == key,
        _ => false,
    })
}

fn text_at(value: &Value, pointer: &str) -> Option<String> {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::to_owned)
}

fn tidy(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The schedule of a case as `scope` may see it, in time order.
pub(crate) fn entries(
    workflow: &Workflow,
    case: &LoadedCase,
    scope: &Scope,
    now: DateTime<Utc>,
) -> Vec<Entry> {
    let state = &case.state;
    let events: Vec<(String, CaseEventData)> = case
        .events
        .iter()
        .filter_map(|e| {
            serde_json::from_str::<CaseEventData>(&e.data)
                .ok()
                .map(|d| (e.event_type.clone(), d))
        })
        .collect();
    let (Some(last), Some((_, last_data))) = (case.events.last(), events.last()) else {
        return Vec::new();
    };
    let context = Value::Object(giamsat_documents::exporter::base_context(
        state, workflow, last, last_data,
    ));
    // Declarations by UID, in the order they first appear.
    let mut groups: Vec<(String, Vec<(&NotificationDecl, &CalendarDecl)>)> = Vec::new();
    for n in &workflow.definition.notifications {
        for c in &n.calendar {
            match groups.iter_mut().find(|(uid, _)| *uid == c.uid.value) {
                Some((_, list)) => list.push((n, c)),
                None => groups.push((c.uid.value.clone(), vec![(n, c)])),
            }
        }
    }
    let tz = giamsat_engine::zone(workflow);
    let mut templates = giamsat_documents::Templates::plain();
    let mut out = Vec::new();
    for (uid, decls) in &groups {
        let Some(&(_, base)) = decls
            .iter()
            .find(|(_, c)| c.method == CalendarMethod::Request)
            .or_else(|| decls.first())
        else {
            continue;
        };
        let summary_name = format!("summary/{uid}");
        let has_summary = templates.add(&summary_name, &base.summary).is_ok();
        let changed_on: Vec<&str> = decls
            .iter()
            .flat_map(|(_, c)| c.changed_on.iter().map(|t| t.value.as_str()))
            .collect();
        let cancels: Vec<&str> = decls
            .iter()
            .filter(|(_, c)| c.method == CalendarMethod::Cancel)
            .flat_map(|(n, _)| n.on.iter().map(|t| t.value.as_str()))
            .collect();
        // (key, item): each entity of the collection, or the case itself.
        let items: Vec<(Option<String>, Value)> = match &base.each {
            Some(collection) => state
                .entities
                .get(&collection.value)
                .into_iter()
                .flatten()
                .filter(|(key, e)| scope.entity_visible(key, &e.data))
                .map(|(key, _)| {
                    (
                        Some(key.clone()),
                        context["entities"][&collection.value][key].clone(),
                    )
                })
                .collect(),
            None => vec![(None, context.clone())],
        };
        for (key, item) in items {
            let (Some(date), Some(time)) = (text_at(&item, &base.date), text_at(&item, &base.time))
            else {
                continue;
            };
            let (Some(date), Ok(time)) = (
                date.get(..10)
                    .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok()),
                NaiveTime::parse_from_str(&time, "%H:%M"),
            ) else {
                continue;
            };
            let start = giamsat_engine::local(tz, date.and_time(time)).with_timezone(&Utc);
            let end = start + TimeDelta::minutes(i64::from(base.minutes));
            let concerns = |d: &CaseEventData| match (&key, &base.each) {
                (Some(k), Some(collection)) => acted_on(d, &collection.value, k),
                _ => true,
            };
            let cancelled = events
                .iter()
                .any(|(t, d)| cancels.contains(&t.as_str()) && concerns(d));
            let changes = events
                .iter()
                .filter(|(t, d)| changed_on.contains(&t.as_str()) && concerns(d))
                .count() as u32;
            let mut ctx = context.clone();
            ctx["item"] = item.clone();
            let summary = has_summary
                .then(|| templates.render(&summary_name, &ctx).ok())
                .flatten()
                .map(|s| tidy(&s))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| match &base.each {
                    Some(c) => format!(
                        "{} {}",
                        view::collection_label(workflow, &c.value),
                        key.as_deref().unwrap_or_default()
                    ),
                    None => uid.clone(),
                });
            let state_label = match (&key, item.get("state_label").and_then(Value::as_str)) {
                (Some(_), Some(label)) => label.to_owned(),
                _ if cancelled => "Đã hủy".to_owned(),
                _ if start <= now => "Đã diễn ra".to_owned(),
                _ => "Đã lên lịch".to_owned(),
            };
            let id = match &key {
                Some(k) => format!("{uid}-{k}"),
                None => uid.clone(),
            };
            out.push(Entry {
                uid: format!("{}-{id}@giamsat", state.id),
                id,
                summary,
                date,
                time,
                start,
                end,
                place: base.place.as_deref().and_then(|p| text_at(&item, p)),
                state_label,
                cancelled,
                sequence: changes + u32::from(cancelled),
                previous_date: key.as_ref().and_then(|_| text_at(&item, "/previous_date")),
                change_reason: key.as_ref().and_then(|_| text_at(&item, "/change_reason")),
                cancel_reason: key.as_ref().and_then(|_| text_at(&item, "/cancel_reason")),
            });
        }
    }
    out.sort_by(|a, b| (a.start, &a.id).cmp(&(b.start, &b.id)));
    out
}

fn utc(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

/// A published calendar of `entries`.
pub(crate) fn calendar(name: &str, entries: &[&Entry], stamp: DateTime<Utc>) -> String {
    let mut lines = vec![
        "BEGIN:VCALENDAR".to_owned(),
        "VERSION:2.0".to_owned(),
        "PRODID:-//giamsat//pages//VI".to_owned(),
        "CALSCALE:GREGORIAN".to_owned(),
        "METHOD:PUBLISH".to_owned(),
        format!("X-WR-CALNAME:{}", ics::text(name)),
    ];
    for e in entries {
        lines.push("BEGIN:VEVENT".to_owned());
        lines.push(format!("UID:{}", e.uid));
        lines.push(format!("DTSTAMP:{}", utc(stamp)));
        lines.push(format!("DTSTART:{}", utc(e.start)));
        lines.push(format!("DTEND:{}", utc(e.end)));
        lines.push(format!("SEQUENCE:{}", e.sequence));
        lines.push(format!("SUMMARY:{}", ics::text(&e.summary)));
        if let Some(place) = &e.place {
            lines.push(format!("LOCATION:{}", ics::text(place)));
        }
        let mut notes = Vec::new();
        if let Some(previous) = &e.previous_date {
            notes.push(format!(
                "Đổi lịch từ ngày {}",
                view::date_text(previous).unwrap_or_else(|| previous.clone())
            ));
        }
        if let Some(reason) = &e.change_reason {
            notes.push(format!("Lý do điều chỉnh: {reason}"));
        }
        if let Some(reason) = &e.cancel_reason {
            notes.push(format!("Lý do hủy: {reason}"));
        }
        if !notes.is_empty() {
            lines.push(format!("DESCRIPTION:{}", ics::text(&notes.join("\n"))));
        }
        lines.push(format!(
            "STATUS:{}",
            if e.cancelled {
                "CANCELLED"
            } else {
                "CONFIRMED"
            }
        ));
        lines.push("TRANSP:OPAQUE".to_owned());
        lines.push("END:VEVENT".to_owned());
    }
    lines.push("END:VCALENDAR".to_owned());
    lines.iter().map(|l| ics::fold(l)).collect()
}

fn ics_response(file_name: &str, body: String) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/calendar; charset=utf-8"),
    );
    let safe: String = file_name
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        headers.insert(CONTENT_DISPOSITION, v);
    }
    (headers, body).into_response()
}

async fn case_entries(
    pages: &Pages,
    user: &User,
    id: &str,
) -> Result<(Vec<Entry>, String), PageError> {
    let (case, workflow, scope) = load_visible(&pages.app, &user.principal, id).await?;
    let now = pages.app.clock.now();
    let title = case
        .state
        .data
        .get("topic")
        .and_then(Value::as_str)
        .map_or_else(|| workflow.definition.label.clone(), str::to_owned);
    Ok((entries(&workflow, &case, &scope, now), title))
}

/// `GET /ho-so/{id}/lich.ics`: the whole schedule.
pub(crate) async fn whole_ics(
    State(pages): State<Pages>,
    user: User,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let (entries, title) = case_entries(&pages, &user, &id).await?;
    let all: Vec<&Entry> = entries.iter().collect();
    let body = calendar(
        &format!("Lịch giám sát {id}: {title}"),
        &all,
        pages.app.clock.now(),
    );
    Ok(ics_response(&format!("{id}-lich-giam-sat.ics"), body))
}

/// `GET /ho-so/{id}/lich/{entry}.ics`: one entry (a visit, the meeting).
pub(crate) async fn entry_ics(
    State(pages): State<Pages>,
    user: User,
    Path((id, entry)): Path<(String, String)>,
) -> Result<Response, PageError> {
    let wanted = entry.strip_suffix(".ics").unwrap_or(&entry);
    let (entries, _) = case_entries(&pages, &user, &id).await?;
    let found = entries
        .iter()
        .find(|e| e.id == wanted)
        .ok_or_else(PageError::not_found)?;
    let body = calendar(&found.summary, &[found], pages.app.clock.now());
    Ok(ics_response(&format!("{id}-{wanted}.ics"), body))
}

/// The schedule as the case page shows it.
pub(crate) fn view(id: &str, entries: &[Entry]) -> Value {
    let rows: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut changes = Vec::new();
            if let Some(previous) = &e.previous_date {
                changes.push(format!(
                    "Đổi từ ngày {}",
                    view::date_text(previous).unwrap_or_else(|| previous.clone())
                ));
            }
            if let Some(reason) = &e.change_reason {
                changes.push(format!("Lý do điều chỉnh: {reason}"));
            }
            if let Some(reason) = &e.cancel_reason {
                changes.push(format!("Lý do hủy: {reason}"));
            }
            serde_json::json!({
                "id": e.id,
                "summary": e.summary,
                "date": view::weekday_date_text(&e.date.format("%Y-%m-%d").to_string()),
                "time": e.time.format("%H:%M").to_string(),
                "place": e.place,
                "state_label": e.state_label,
                "cancelled": e.cancelled,
                "changes": changes,
                "ics_url": format!("/ho-so/{}/lich/{}.ics", view::encode_segment(id), view::encode_segment(&e.id)),
            })
        })
        .collect();
    serde_json::json!({
        "entries": rows,
        "ics_url": format!("/ho-so/{}/lich.ics", view::encode_segment(id)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn entry(id: &str, summary: &str) -> Entry {
        let start = Utc
            .with_ymd_and_hms(2024, 4, 26, 1, 0, 0)
            .single()
            .expect("a time");
        Entry {
            id: id.to_owned(),
            uid: format!("tg2024-{id}@giamsat"),
            summary: summary.to_owned(),
            date: start.date_naive(),
            time: NaiveTime::from_hms_opt(8, 0, 0).expect("a time"),
            start,
            end: start + TimeDelta::hours(4),
            place: Some("Phòng họp; tầng 2, trụ sở".to_owned()),
            state_label: "Đã lên lịch".to_owned(),
            cancelled: false,
            sequence: 1,
            previous_date: Some("2024-04-25".to_owned()),
            change_reason: Some("Trùng lịch".to_owned()),
            cancel_reason: None,
        }
    }

    #[test]
    fn a_calendar_is_rfc_5545_text() {
        let a = entry(
            "giam-sat-xa-quai-to",
            &"Đoàn giám sát HĐND huyện làm việc tại xã Quài Tở, ".repeat(3),
        );
        let b = Entry {
            cancelled: true,
            ..entry("giam-sat-xa-ta-ma", "Ta Ma")
        };
        let stamp = a.start;
        let text = calendar("Lịch", &[&a, &b], stamp);
        assert!(text.starts_with("BEGIN:VCALENDAR\r\n"));
        assert!(text.ends_with("END:VCALENDAR\r\n"));
        for line in text.split("\r\n") {
            assert!(line.len() <= 75, "{line:?}");
        }
        let unfolded = text.replace("\r\n ", "");
        assert!(unfolded.contains("UID:tg2024-giam-sat-xa-quai-to@giamsat\r\n"));
        assert!(unfolded.contains("DTSTART:20240426T010000Z\r\n"));
        assert!(unfolded.contains("LOCATION:Phòng họp\\; tầng 2\\, trụ sở\r\n"));
        assert!(
            unfolded.contains(
                "DESCRIPTION:Đổi lịch từ ngày 25/4/2024\\nLý do điều chỉnh: Trùng lịch\r\n"
            )
        );
        assert!(unfolded.contains("STATUS:CANCELLED\r\n"));
        assert_eq!(unfolded.matches("BEGIN:VEVENT").count(), 2);
        assert_eq!(unfolded.matches("END:VEVENT").count(), 2);
    }
}
