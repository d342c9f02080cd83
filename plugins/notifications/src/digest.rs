//! The daily digest: on each run of its cron schedule (`CronRan` in `cron/<schedule>`), every
//! open case with its stage and next deadline, to the roles of `[digest] to`. The cases are read
//! as the log stood at the run (events up to the run's position), so delivering the run again
//! writes the same digest. A case is open until it reaches the last stage its workflow declares.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use giamsat_cases::load_case;
use giamsat_engine::{CaseEventData, CaseState};
use giamsat_exporter::{ExportError, Outcome};
use giamsat_types::RecordedEvent;
use serde_json::{Value, json};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

use crate::mail::{self, Draft};
use crate::{
    NotificationsExporter, SentRecord, attachment_records, from_case, outcome, permanent,
    record_id, source,
};

const TEMPLATE: &str = include_str!("../templates/ban-tin-hang-ngay.hbs");
const SUBJECT: &str =
    "Bản tin giám sát ngày {{vn_date digest.date}}: {{count}} hồ sơ đang theo dõi";

impl NotificationsExporter {
    pub(crate) async fn digest(
        &self,
        event: &RecordedEvent,
        recorded: &mut Option<HashSet<Uuid>>,
    ) -> Result<Vec<Outcome>, ExportError> {
        let schedule = &self.config.digest.schedule;
        let notification = format!("digest:{schedule}");
        let id = record_id(&notification, event.event_id, self.delivery.channel());
        if recorded.is_none() {
            *recorded = Some(self.recorded("cron").await?);
        }
        if recorded.as_ref().is_some_and(|r| r.contains(&id)) {
            return Ok(Vec::new());
        }
        let named = |e: ExportError| match e {
            ExportError::Retryable(m) => {
                ExportError::Retryable(format!("digest of cron/{schedule}: {m}"))
            }
            ExportError::Permanent(m) => {
                ExportError::Permanent(format!("digest of cron/{schedule}: {m}"))
            }
        };
        let run = event.data_value();
        let at: DateTime<Utc> = run["scheduled_for"]
            .as_str()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or_else(|| event.recorded_at(), |t| t.with_timezone(&Utc));
        let local = run["scheduled_for_local"]
            .as_str()
            .map_or_else(|| at.to_rfc3339(), str::to_owned);
        let (cases, labels) = self.open_cases(event.position, at).await.map_err(named)?;
        let mut recipients = Vec::new();
        let mut skipped = Vec::new();
        for role in &self.config.digest.to {
            let label = labels
                .iter()
                .find(|(r, _)| r == role)
                .map_or(role.as_str(), |(_, l)| l.as_str());
            self.roles
                .recipients(role, label, None, &mut recipients, &mut skipped);
        }
        let recipients = crate::recipients::dedupe(recipients);
        let mut templates = giamsat_documents::Templates::plain();
        templates
            .add("ban-tin-hang-ngay.hbs", TEMPLATE)
            .and_then(|()| templates.add("subject", SUBJECT))
            .map_err(|e| named(permanent(e)))?;
        let context = json!({
            "digest": {
                "schedule": schedule,
                "description": run["description"].as_str().unwrap_or_default(),
                "date": local.get(..10).unwrap_or_default(),
                "at": local,
            },
            "count": cases.len(),
            "cases": cases,
        });
        let mut drafts = Vec::new();
        for r in &recipients {
            let mut ctx = context.clone();
            ctx["recipient"] = r.context();
            let render = |name: &str| {
                templates
                    .render(name, &ctx)
                    .map_err(|e| named(permanent(e)))
            };
            let subject = render("subject")?;
            let body = render("ban-tin-hang-ngay.hbs")?;
            drafts.push((
                r.clone(),
                Draft {
                    message_id: mail::message_id(
                        &notification,
                        &event.event_id.to_string(),
                        &r.address,
                        self.from.email.domain(),
                    ),
                    from: self.from.clone(),
                    to: r.mailbox().map_err(|e| named(permanent(e)))?,
                    subject: mail::tidy_line(&subject).nfc().collect(),
                    body: mail::tidy_body(&body.nfc().collect::<String>()),
                    date: at,
                    attachments: Vec::new(),
                    trace: vec![
                        ("Notification", notification.clone()),
                        ("Event-Id", event.event_id.to_string()),
                    ],
                },
            ));
        }
        let attachments = attachment_records(drafts.iter().map(|(_, d)| d));
        let folder = format!("cron/{:08}-digest", event.position);
        let (messages, rejected) = self.send(&folder, drafts).await.map_err(named)?;
        let record = SentRecord {
            notification,
            channel: self.delivery.channel().to_owned(),
            case: None,
            workflow: None,
            source: source(event),
            messages,
            rejected,
            skipped,
            attachments,
        };
        Ok(vec![outcome("cron", id, &record)?])
    }

    /// The open cases as the log stood at `position`, in id order, each with its next deadline
    /// after `at` (the earliest pending timer due then or later), and the labels of the roles
    /// their workflows declare.
    async fn open_cases(
        &self,
        position: u64,
        at: DateTime<Utc>,
    ) -> Result<(Vec<Value>, Vec<(String, String)>), ExportError> {
        let ids = giamsat_cases::list_cases(&self.store)
            .await
            .map_err(from_case)?;
        let mut out = Vec::new();
        let mut labels: Vec<(String, String)> = Vec::new();
        for id in ids {
            let Some(loaded) = load_case(&self.store, &id).await.map_err(from_case)? else {
                continue;
            };
            let mut state = CaseState {
                id: id.clone(),
                ..CaseState::default()
            };
            for e in loaded.events.iter().filter(|e| e.position <= position) {
                let data: CaseEventData = serde_json::from_str(&e.data).map_err(|err| {
                    permanent(format!(
                        "case {id}, event at position {}: {err}",
                        e.position
                    ))
                })?;
                state.evolve(&data, e.stream_version);
            }
            if !state.is_started() {
                continue;
            }
            let workflow = self
                .definitions
                .get(&self.store, &state)
                .await
                .map_err(from_case)?;
            let def = &workflow.definition;
            for r in &def.roles {
                if !labels.iter().any(|(id, _)| *id == r.id.value) {
                    labels.push((r.id.value.clone(), r.label.clone()));
                }
            }
            if def.stages.last().is_some_and(|s| s.id.value == state.stage) {
                continue;
            }
            let stage_label = def
                .stages
                .iter()
                .find(|s| s.id.value == state.stage)
                .map_or(state.stage.as_str(), |s| s.label.as_str());
            let since = state
                .stages
                .last()
                .map_or(state.started_at.as_str(), |s| s.at.as_str());
            let next = giamsat_engine::timers(&workflow, &state, &self.calendar)
                .into_iter()
                .filter(|t| t.is_pending() && t.due >= at)
                .min_by_key(|t| t.due)
                .map(|t| {
                    json!({
                        "label": t.label,
                        "timer": t.timer,
                        "due": t.due.to_rfc3339(),
                        "date": t.due.format("%Y-%m-%d").to_string(),
                        "time": t.due.format("%H:%M").to_string(),
                    })
                });
            let warnings: Vec<String> = giamsat_engine::warnings(&workflow, &state, &self.calendar)
                .into_iter()
                .map(|w| w.message)
                .collect();
            out.push(json!({
                "id": id,
                "workflow": state.workflow,
                "workflow_label": def.label,
                "title": state.data["topic"].as_str().unwrap_or(def.label.as_str()),
                "stage": state.stage,
                "stage_label": stage_label,
                "stage_since": since.get(..10).unwrap_or_default(),
                "next": next,
                "warnings": warnings,
            }));
        }
        Ok((out, labels))
    }
}
