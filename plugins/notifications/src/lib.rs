//! The notifications exporter (`type = "notifications"`): e-mail for the notifications a
//! workflow declares, calendar invitations, the daily digest, and signed webhooks.
//!
//! - **E-mail.** When a case event is committed whose type a declaration of the case's pinned
//!   definition lists in `on`, one message goes to each recipient (`to`: roles and
//!   `collection:<id>`), its body and subject rendered from the workflow's plain-text handlebars
//!   templates, with the declared documents attached as DOCX and HTML (the same bytes the
//!   documents exporter writes) and the declared calendar entries as an RFC 5545 `.ics` file.
//!   Messages go over SMTP (`[smtp]`), or, with no `[smtp]`, as `.eml` files into the outbox
//!   folder (`<outbox>/<case>/`), so the default setup works with nothing installed.
//! - **Digest.** Each `CronRan` of the digest's schedule (`cron/daily-digest`) sends the roles of
//!   `[digest] to` every open case with its stage and next deadline, as the log stood at the run.
//! - **Webhooks.** Each configured webhook receives the events it asks for, POSTed as JSON and
//!   signed (see [`webhook`]).
//!
//! Every delivery is recorded as a `NotificationSent` event in `notifications/<case>` (or
//! `notifications/cron` for the digest): the notification, the channel (`email`, `outbox`,
//! `webhook`), each message with its Message-ID, recipient, subject and attachment names, the
//! recipients skipped (no address in the case data, no address configured) with the reason, the
//! recipients the server refused, and every attachment's SHA-256. Its id is derived from
//! (notification, event, channel), so a second delivery of the same event records nothing.
//!
//! **At most one repeat after a crash.** Sending and recording are two steps, and no mail server
//! takes part in the log's transaction. Before sending, the exporter looks for the record of
//! this (notification, event, channel) and sends nothing if it is there; while it runs, it
//! remembers which messages the server accepted, so a retry after a failure halfway through a
//! notification (the server went down after three of nine messages) sends only the rest. Only a
//! crash (or a stop) after a message was accepted and before its record was appended loses that
//! memory: the event is delivered again after the restart and those messages are sent a second
//! time, once. They carry the same Message-ID as the first time, so a mail client or a receiving
//! server recognises the repeat. Webhooks behave the same way and carry `X-Giamsat-Event-Id`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, NaiveTime, TimeDelta, Utc};
use giamsat_cases::{CaseError, Definitions, LoadedCase, load_case_until};
use giamsat_documents::Templates;
use giamsat_documents::exporter::{DocumentsExporter, OutputFormat, base_context};
use giamsat_engine::{
    Calendar, CalendarDecl, CalendarMethod, CaseEventData, NotificationDecl, Workflow,
};
use giamsat_exporter::{ExportError, Exporter, Filter, Outcome};
use giamsat_store::{Direction, Store};
use giamsat_types::{NewEvent, RecordedEvent, StreamId};
use lettre::message::Mailbox;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use unicode_normalization::UnicodeNormalization;
use uuid::Uuid;

pub mod config;
mod digest;
pub mod ics;
pub mod mail;
pub mod recipients;
pub mod webhook;

pub use config::NotificationsConfig;
use mail::{Attachment, Delivery, Draft, Fate};
use recipients::{Recipient, RoleBook, Skipped};
use webhook::Webhook;

/// Event type recording a delivery.
pub const SENT_EVENT: &str = "NotificationSent";

/// The stream of a case's (or the digest's: `cron`) delivery records.
pub fn notifications_stream(scope: &str) -> Result<StreamId, String> {
    StreamId::new(format!("notifications/{scope}")).map_err(|e| e.to_string())
}

/// Where an event's deliveries are recorded: its case, or the first part of its stream.
pub fn scope_of(stream_id: &str) -> String {
    for prefix in ["case/", "documents/"] {
        if let Some(case) = stream_id.strip_prefix(prefix) {
            return case.to_owned();
        }
    }
    stream_id.split('/').next().unwrap_or(stream_id).to_owned()
}

/// The id of the record of one notification for one event on one channel.
pub fn record_id(notification: &str, event: Uuid, channel: &str) -> Uuid {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("giamsat:notification:{notification}:{event}:{channel}").as_bytes(),
    )
}

/// The event a delivery was for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRecord {
    pub event_id: Uuid,
    pub event_type: String,
    pub stream_id: String,
    pub position: u64,
}

/// One message (or webhook call) that went out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    pub message_id: String,
    pub to: Recipient,
    pub subject: String,
    #[serde(default)]
    pub attachments: Vec<String>,
    /// The `.eml` file, relative to the outbox (channel `outbox`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    /// The HTTP status (channel `webhook`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// A recipient the server refused for good.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedRecord {
    pub message_id: String,
    pub to: Recipient,
    pub reason: String,
}

/// An attached file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRecord {
    pub name: String,
    pub content_type: String,
    pub sha256: String,
    pub bytes: u64,
}

/// The data of a `NotificationSent` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SentRecord {
    pub notification: String,
    pub channel: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    pub source: SourceRecord,
    pub messages: Vec<MessageRecord>,
    #[serde(default)]
    pub rejected: Vec<RejectedRecord>,
    #[serde(default)]
    pub skipped: Vec<Skipped>,
    #[serde(default)]
    pub attachments: Vec<AttachmentRecord>,
}

/// Every `NotificationSent` record of a scope (a case, or `cron`), in order.
pub async fn read_sent(store: &Store, scope: &str) -> Result<Vec<SentRecord>, String> {
    let stream = notifications_stream(scope)?;
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let page = store
            .read_stream(&stream, Direction::Forward, Some(from), 1000)
            .await
            .map_err(|e| e.to_string())?;
        let done = page.len() < 1000;
        from += page.len() as u64;
        for e in page.iter().filter(|e| e.event_type == SENT_EVENT) {
            out.push(
                serde_json::from_str(&e.data)
                    .map_err(|err| format!("{stream} event {}: {err}", e.stream_version))?,
            );
        }
        if done {
            break;
        }
    }
    Ok(out)
}

/// What the exporter remembers of deliveries whose record is not appended yet (see the crate
/// documentation): message id → fate, webhook record id → status.
#[derive(Debug, Default)]
struct Memo {
    messages: HashMap<String, Fate>,
    webhooks: HashMap<Uuid, u16>,
}

/// Entries of the memo past which it is cleared (older entries belong to events long recorded).
const MEMO_LIMIT: usize = 100_000;

/// The exporter.
pub struct NotificationsExporter {
    config: NotificationsConfig,
    store: Store,
    from: Mailbox,
    roles: RoleBook,
    delivery: Delivery,
    webhooks: Vec<Webhook>,
    http: Option<reqwest::Client>,
    renderer: DocumentsExporter,
    definitions: Definitions,
    calendar: Calendar,
    /// Case id → the event types its definition notifies on.
    triggers: Mutex<BTreeMap<String, Vec<String>>>,
    memo: Mutex<Memo>,
}

impl std::fmt::Debug for NotificationsExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotificationsExporter")
            .field("from", &self.from.to_string())
            .field("delivery", &self.delivery)
            .field("webhooks", &self.webhooks)
            .finish_non_exhaustive()
    }
}

fn permanent(e: impl std::fmt::Display) -> ExportError {
    ExportError::Permanent(e.to_string())
}

fn from_case(e: CaseError) -> ExportError {
    match e {
        CaseError::Store(s) => ExportError::Retryable(s.to_string()),
        other => ExportError::Permanent(other.to_string()),
    }
}

/// A calendar entry with who gets it.
#[derive(Debug, Clone)]
struct PlannedEntry {
    entry: ics::Entry,
    /// The notification's `to` entries that get it; empty: all.
    audience: Vec<String>,
    /// For collection recipients: only the one with this key.
    recipient_key: Option<String>,
}

impl NotificationsExporter {
    /// Builds the exporter from its configuration table, reading secrets from the process
    /// environment; an unknown or missing key, a bad address or an unset variable is an error
    /// that names it.
    pub fn from_config(table: Value, store: Store) -> Result<NotificationsExporter, String> {
        Self::from_config_with_env(table, store, &|name| std::env::var(name).ok())
    }

    /// As [`from_config`](Self::from_config), with the environment given (tests).
    pub fn from_config_with_env(
        table: Value,
        store: Store,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<NotificationsExporter, String> {
        let config: NotificationsConfig =
            serde_json::from_value(table).map_err(|e| e.to_string())?;
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| format!("from: {:?} is not an address: {e}", config.from))?;
        let roles = RoleBook::new(&config.roles, &config.role_members)?;
        let delivery = match &config.smtp {
            Some(smtp) => Delivery::smtp(smtp, &from, env)?,
            None => Delivery::Outbox(config.outbox.clone()),
        };
        let mut ids = HashSet::new();
        let mut webhooks = Vec::new();
        for w in &config.webhooks {
            if !ids.insert(w.id.clone()) {
                return Err(format!("webhooks: id {:?} appears twice", w.id));
            }
            webhooks.push(Webhook::new(w.clone(), env)?);
        }
        let http = if webhooks.is_empty() {
            None
        } else {
            Some(webhook::client()?)
        };
        let calendar = giamsat_cases::read_calendar_dir(&config.calendar_dir)
            .map_err(|e| format!("calendar-dir: {e}"))?;
        Ok(NotificationsExporter {
            renderer: DocumentsExporter::renderer(
                store.clone(),
                vec![OutputFormat::Docx, OutputFormat::Html],
            ),
            config,
            store,
            from,
            roles,
            delivery,
            webhooks,
            http,
            definitions: Definitions::new(),
            calendar,
            triggers: Mutex::new(BTreeMap::new()),
            memo: Mutex::new(Memo::default()),
        })
    }

    /// The channel e-mail goes out on: `email` (SMTP) or `outbox`.
    pub fn channel(&self) -> &'static str {
        self.delivery.channel()
    }

    /// The outbox folder, when messages go there.
    pub fn outbox(&self) -> Option<PathBuf> {
        match &self.delivery {
            Delivery::Outbox(dir) => Some(dir.clone()),
            Delivery::Smtp { .. } => None,
        }
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, Memo> {
        self.memo
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn lock_triggers(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<String>>> {
        self.triggers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Ids of the records already in a scope's stream.
    async fn recorded(&self, scope: &str) -> Result<HashSet<Uuid>, ExportError> {
        let stream = notifications_stream(scope).map_err(permanent)?;
        let mut ids = HashSet::new();
        let mut from = 1;
        loop {
            let page = self
                .store
                .read_stream(&stream, Direction::Forward, Some(from), 1000)
                .await
                .map_err(|e| ExportError::Retryable(format!("reading {stream}: {e}")))?;
            let done = page.len() < 1000;
            from += page.len() as u64;
            ids.extend(page.iter().map(|e| e.event_id));
            if done {
                break;
            }
        }
        Ok(ids)
    }

    async fn case_at(
        &self,
        case: &str,
        version: u64,
    ) -> Result<(LoadedCase, Workflow), ExportError> {
        let loaded = load_case_until(&self.store, case, version)
            .await
            .map_err(from_case)?
            .ok_or_else(|| permanent(format!("case {case:?} has no events")))?;
        let workflow = self
            .definitions
            .get(&self.store, &loaded.state)
            .await
            .map_err(from_case)?;
        Ok((loaded, workflow))
    }

    /// The notifications of a case event.
    async fn on_case_event(
        &self,
        event: &RecordedEvent,
        case: &str,
        recorded: &mut Option<HashSet<Uuid>>,
    ) -> Result<Vec<Outcome>, ExportError> {
        let known = self.lock_triggers().get(case).cloned();
        if let Some(types) = &known
            && !types.contains(&event.event_type)
        {
            return Ok(Vec::new());
        }
        let (loaded, workflow) = self.case_at(case, event.stream_version).await?;
        let types: Vec<String> = workflow
            .definition
            .notifications
            .iter()
            .flat_map(|n| n.on.iter().map(|e| e.value.clone()))
            .collect();
        self.lock_triggers().insert(case.to_owned(), types);
        let decls: Vec<&NotificationDecl> = workflow
            .definition
            .notifications
            .iter()
            .filter(|n| n.on.iter().any(|e| e.value == event.event_type))
            .collect();
        if decls.is_empty() {
            return Ok(Vec::new());
        }
        let data: CaseEventData = serde_json::from_str(&event.data).map_err(permanent)?;
        let context = Value::Object(base_context(&loaded.state, &workflow, event, &data));
        let channel = self.delivery.channel();
        let mut outcomes = Vec::new();
        for decl in decls {
            let id = record_id(&decl.id.value, event.event_id, channel);
            if recorded.is_none() {
                *recorded = Some(self.recorded(case).await?);
            }
            if recorded.as_ref().is_some_and(|r| r.contains(&id)) {
                continue;
            }
            let record = self
                .notify(decl, event, &loaded, &workflow, &data, &context)
                .await
                .map_err(|e| match e {
                    ExportError::Retryable(m) => ExportError::Retryable(format!(
                        "notification {} of case {case}: {m}",
                        decl.id.value
                    )),
                    ExportError::Permanent(m) => ExportError::Permanent(format!(
                        "notification {} of case {case}: {m}",
                        decl.id.value
                    )),
                })?;
            outcomes.push(outcome(case, id, &record)?);
        }
        Ok(outcomes)
    }

    /// Renders and delivers one notification for one case event.
    async fn notify(
        &self,
        decl: &NotificationDecl,
        event: &RecordedEvent,
        loaded: &LoadedCase,
        workflow: &Workflow,
        data: &CaseEventData,
        context: &Value,
    ) -> Result<SentRecord, ExportError> {
        let (recipients, skipped) =
            recipients::resolve(decl, workflow, context, data, &self.roles).map_err(permanent)?;
        // The documents, rendered once for every recipient.
        let mut documents = Vec::new();
        for kind in &decl.attach {
            let rendered = self
                .renderer
                .render_in_memory(event, &kind.value)
                .await?
                .ok_or_else(|| {
                    permanent(format!(
                        "document {} is not rendered on {}",
                        kind.value, event.event_type
                    ))
                })?;
            for file in rendered.files {
                documents.push(Attachment {
                    content_type: match file.format {
                        OutputFormat::Docx => "application/vnd.openxmlformats-officedocument.wordprocessingml.document".to_owned(),
                        OutputFormat::Html => "text/html; charset=utf-8".to_owned(),
                        OutputFormat::Md => "text/markdown; charset=utf-8".to_owned(),
                    },
                    name: file.name,
                    bytes: file.bytes,
                });
            }
        }
        let templates = self.templates(decl, workflow)?;
        let entries = self.entries(decl, event, loaded, workflow, data, context, &templates)?;
        let stamp = event_time(data, event);
        let case = loaded.state.id.as_str();
        let mut drafts = Vec::new();
        for r in &recipients {
            let mut ctx = context.clone();
            ctx["recipient"] = r.context();
            ctx["notification"] = json!({"id": decl.id.value});
            let mine: Vec<ics::Entry> = entries
                .iter()
                .filter(|p| {
                    (p.audience.is_empty() || p.audience.contains(&r.to))
                        && (p.recipient_key.is_none()
                            || !r.to.starts_with("collection:")
                            || p.recipient_key == r.key)
                })
                .map(|p| p.entry.clone())
                .collect();
            let mut attachments = documents.clone();
            if !mine.is_empty() {
                let method = ics::method_of(&mine);
                let organizer = ics::Party {
                    name: self.from.name.clone().unwrap_or_default(),
                    address: self.from.email.to_string(),
                };
                let attendee = ics::Party {
                    name: r.name.clone(),
                    address: r.address.clone(),
                };
                attachments.push(Attachment {
                    name: if method == "CANCEL" {
                        "huy-lich.ics".to_owned()
                    } else {
                        "lich-lam-viec.ics".to_owned()
                    },
                    content_type: format!("text/calendar; charset=utf-8; method={method}"),
                    bytes: ics::calendar(&mine, &organizer, &attendee, stamp).into_bytes(),
                });
            }
            ctx["attachments"] = json!(attachments.iter().map(|a| &a.name).collect::<Vec<_>>());
            let subject = templates
                .render(SUBJECT, &ctx)
                .map_err(|e| permanent(format!("{}/{e}", workflow.name())))?;
            let body = templates
                .render(&decl.template, &ctx)
                .map_err(|e| permanent(format!("{}/{e}", workflow.name())))?;
            drafts.push((
                r.clone(),
                Draft {
                    message_id: mail::message_id(
                        &decl.id.value,
                        &event.event_id.to_string(),
                        &r.address,
                        self.from.email.domain(),
                    ),
                    from: self.from.clone(),
                    to: r.mailbox().map_err(permanent)?,
                    subject: mail::tidy_line(&subject).nfc().collect(),
                    body: mail::tidy_body(&body.nfc().collect::<String>()),
                    date: stamp,
                    attachments,
                    trace: vec![
                        ("Notification", decl.id.value.clone()),
                        ("Case", case.to_owned()),
                        ("Event-Id", event.event_id.to_string()),
                    ],
                },
            ));
        }
        let attachments = attachment_records(drafts.iter().map(|(_, d)| d));
        let folder = format!("{case}/{:08}-{}", event.position, decl.id.value);
        let (messages, rejected) = self.send(&folder, drafts).await?;
        Ok(SentRecord {
            notification: decl.id.value.clone(),
            channel: self.delivery.channel().to_owned(),
            case: Some(case.to_owned()),
            workflow: Some(workflow.name().to_owned()),
            source: source(event),
            attachments,
            messages,
            rejected,
            skipped,
        })
    }

    /// The templates of a notification: body, subject and calendar summaries.
    fn templates(
        &self,
        decl: &NotificationDecl,
        workflow: &Workflow,
    ) -> Result<Templates, ExportError> {
        let mut templates = Templates::plain();
        let located =
            |e: giamsat_documents::TemplateError| permanent(format!("{}/{e}", workflow.name()));
        let text = workflow.bundle.files.get(&decl.template).ok_or_else(|| {
            permanent(format!(
                "template {:?} is not in the definition",
                decl.template
            ))
        })?;
        templates.add(&decl.template, text).map_err(located)?;
        let subject = decl.subject.as_deref().unwrap_or("{{event.label}}");
        templates.add(SUBJECT, subject).map_err(|e| {
            permanent(format!(
                "{}: subject of notification {}: {e}",
                workflow.name(),
                decl.id.value
            ))
        })?;
        for c in &decl.calendar {
            templates.add(&summary_name(c), &c.summary).map_err(|e| {
                permanent(format!(
                    "{}: summary of calendar entry {} of notification {}: {e}",
                    workflow.name(),
                    c.uid.value,
                    decl.id.value
                ))
            })?;
        }
        Ok(templates)
    }

    /// The calendar entries of a notification for an event.
    #[allow(clippy::too_many_arguments)]
    fn entries(
        &self,
        decl: &NotificationDecl,
        event: &RecordedEvent,
        loaded: &LoadedCase,
        workflow: &Workflow,
        data: &CaseEventData,
        context: &Value,
        templates: &Templates,
    ) -> Result<Vec<PlannedEntry>, ExportError> {
        let tz = giamsat_engine::zone(workflow);
        let case = loaded.state.id.as_str();
        let mut out = Vec::new();
        for c in &decl.calendar {
            let what = |m: String| {
                permanent(format!(
                    "calendar entry {} ({}): {m}",
                    c.uid.value, decl.id.value
                ))
            };
            // (key, item) pairs: the entities, or the case itself.
            let items: Vec<(Option<String>, Value)> = match &c.each {
                Some(collection) => {
                    let collection = collection.value.as_str();
                    let acted = recipients::acted_on(data, collection);
                    let keys: Vec<String> = if acted.is_empty() {
                        context["lists"][collection]
                            .as_array()
                            .map(|l| {
                                l.iter()
                                    .filter_map(|e| e["key"].as_str().map(str::to_owned))
                                    .collect()
                            })
                            .unwrap_or_default()
                    } else {
                        acted
                    };
                    keys.into_iter()
                        .filter_map(|k| {
                            let item = context["entities"][collection][&k].clone();
                            (!item.is_null()).then_some((Some(k), item))
                        })
                        .filter(|(_, item)| {
                            c.states.is_empty()
                                || c.states.iter().any(|s| item["state"] == s.value.as_str())
                        })
                        .collect()
                }
                None => vec![(None, context.clone())],
            };
            for (key, item) in items {
                let text = |pointer: &str| -> Result<String, ExportError> {
                    item.pointer(pointer)
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            what(format!(
                                "{pointer} is not a text{}",
                                key.as_ref()
                                    .map(|k| format!(" in entity {k}"))
                                    .unwrap_or_default()
                            ))
                        })
                };
                let date = text(&c.date)?;
                let time = text(&c.time)?;
                let date = NaiveDate::parse_from_str(date.get(..10).unwrap_or(&date), "%Y-%m-%d")
                    .map_err(|e| what(format!("{}: {date:?}: {e}", c.date)))?;
                let time = NaiveTime::parse_from_str(&time, "%H:%M")
                    .map_err(|e| what(format!("{}: {time:?}: {e}", c.time)))?;
                let start = giamsat_engine::local(tz, date.and_time(time)).with_timezone(&Utc);
                let location = match &c.place {
                    Some(p) => item.pointer(p).and_then(Value::as_str).map(str::to_owned),
                    None => None,
                };
                let mut ctx = context.clone();
                ctx["item"] = item.clone();
                let summary = templates
                    .render(&summary_name(c), &ctx)
                    .map_err(|e| what(e.to_string()))?;
                let changes = sequence(c, loaded, key.as_deref(), event.stream_version);
                let recipient_key = match (&c.recipient_key, &c.each) {
                    (Some(p), Some(_)) => {
                        item.pointer(p).and_then(Value::as_str).map(str::to_owned)
                    }
                    _ => None,
                };
                let uid = match &key {
                    Some(k) => format!("{case}-{}-{k}@giamsat", c.uid.value),
                    None => format!("{case}-{}@giamsat", c.uid.value),
                };
                out.push(PlannedEntry {
                    entry: ics::Entry {
                        uid,
                        sequence: changes + u32::from(c.method == CalendarMethod::Cancel),
                        start,
                        end: start + TimeDelta::minutes(i64::from(c.minutes)),
                        summary: mail::tidy_line(&summary).nfc().collect(),
                        location: location.map(|l| l.nfc().collect()),
                        description: None,
                        method: c.method,
                    },
                    audience: c.to.clone(),
                    recipient_key,
                });
            }
        }
        Ok(out)
    }

    /// Delivers drafts, skipping those the memo knows were delivered; a retryable failure stops
    /// at once (what was delivered before it is remembered).
    async fn send(
        &self,
        folder: &str,
        drafts: Vec<(Recipient, Draft)>,
    ) -> Result<(Vec<MessageRecord>, Vec<RejectedRecord>), ExportError> {
        let mut messages = Vec::new();
        let mut rejected = Vec::new();
        for (recipient, draft) in drafts {
            let known = self.memo().messages.get(&draft.message_id).cloned();
            let fate = match known {
                Some(fate) => fate,
                None => {
                    let message = mail::build(&draft).map_err(|e| {
                        permanent(format!(
                            "message to {} <{}>: {e}",
                            recipient.name, recipient.address
                        ))
                    })?;
                    let file = format!("{folder}-{}.eml", &draft.message_id[..16]);
                    let fate = mail::deliver(&self.delivery, &message, &file)
                        .await
                        .map_err(|e| match e {
                            ExportError::Retryable(m) => ExportError::Retryable(format!(
                                "to {} <{}>: {m}",
                                recipient.name, recipient.address
                            )),
                            ExportError::Permanent(m) => ExportError::Permanent(format!(
                                "to {} <{}>: {m}",
                                recipient.name, recipient.address
                            )),
                        })?;
                    let mut memo = self.memo();
                    if memo.messages.len() > MEMO_LIMIT {
                        memo.messages.clear();
                    }
                    memo.messages.insert(draft.message_id.clone(), fate.clone());
                    fate
                }
            };
            match fate {
                Fate::Delivered { file } => messages.push(MessageRecord {
                    message_id: draft.message_id.clone(),
                    to: recipient,
                    subject: draft.subject.clone(),
                    attachments: draft.attachments.iter().map(|a| a.name.clone()).collect(),
                    file,
                    status: None,
                }),
                Fate::Rejected(reason) => rejected.push(RejectedRecord {
                    message_id: draft.message_id.clone(),
                    to: recipient,
                    reason,
                }),
            }
        }
        Ok((messages, rejected))
    }
}

const SUBJECT: &str = "subject";

/// Compiles every notification template of a workflow (bodies, subjects, calendar summaries);
/// each problem names the file (or the notification), the line and the column. For
/// `giamsat workflow check`, next to the documents' check.
pub fn check_templates(workflow: &Workflow) -> Vec<giamsat_documents::TemplateError> {
    let mut problems = Vec::new();
    for n in &workflow.definition.notifications {
        let mut templates = Templates::plain();
        if let Some(text) = workflow.bundle.files.get(&n.template)
            && let Err(e) = templates.add(&n.template, text)
        {
            problems.push(e);
        }
        let inline = n
            .subject
            .iter()
            .map(|s| (format!("notification {} subject", n.id.value), s))
            .chain(n.calendar.iter().map(|c| {
                (
                    format!(
                        "notification {} calendar {} summary",
                        n.id.value, c.uid.value
                    ),
                    &c.summary,
                )
            }));
        for (name, text) in inline {
            if let Err(e) = templates.add(&name, text) {
                problems.push(e);
            }
        }
    }
    problems
}

/// The cron run event type (`CronRan` of `giamsat-scheduler`, which exporters do not depend on).
pub const CRON_RAN_EVENT: &str = "CronRan";

/// Every distinct attachment of a set of messages (by name and content), in order.
fn attachment_records<'d>(drafts: impl Iterator<Item = &'d Draft>) -> Vec<AttachmentRecord> {
    let mut out: Vec<AttachmentRecord> = Vec::new();
    for d in drafts {
        for a in &d.attachments {
            let sha256 = a.sha256();
            if !out.iter().any(|r| r.name == a.name && r.sha256 == sha256) {
                out.push(AttachmentRecord {
                    name: a.name.clone(),
                    content_type: a.content_type.clone(),
                    sha256,
                    bytes: a.bytes.len() as u64,
                });
            }
        }
    }
    out
}

fn summary_name(c: &CalendarDecl) -> String {
    format!("calendar/{}/summary", c.uid.value)
}

/// How many events that change an entry were recorded for it up to the event's version.
fn sequence(c: &CalendarDecl, loaded: &LoadedCase, key: Option<&str>, until: u64) -> u32 {
    let mut n = 0;
    for e in loaded.events.iter().filter(|e| e.stream_version <= until) {
        if !c.changed_on.iter().any(|t| t.value == e.event_type) {
            continue;
        }
        let counts = match (key, &c.each) {
            (Some(k), Some(collection)) => serde_json::from_str::<CaseEventData>(&e.data)
                .map(|d| {
                    recipients::acted_on(&d, &collection.value)
                        .iter()
                        .any(|a| a == k)
                })
                .unwrap_or(false),
            _ => true,
        };
        if counts {
            n += 1;
        }
    }
    n
}

/// When the event happened (its command's time), else when it was recorded.
fn event_time(data: &CaseEventData, event: &RecordedEvent) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&data.at)
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or_else(|_| event.recorded_at())
}

fn source(event: &RecordedEvent) -> SourceRecord {
    SourceRecord {
        event_id: event.event_id,
        event_type: event.event_type.clone(),
        stream_id: event.stream_id.clone(),
        position: event.position,
    }
}

fn outcome(scope: &str, id: Uuid, record: &SentRecord) -> Result<Outcome, ExportError> {
    let value = serde_json::to_value(record).map_err(permanent)?;
    Ok(Outcome {
        stream: notifications_stream(scope).map_err(permanent)?,
        event: NewEvent::new(SENT_EVENT, &value).with_id(id),
    })
}

#[async_trait]
impl Exporter for NotificationsExporter {
    fn filter(&self) -> Filter {
        let mut prefixes = vec!["case/".to_owned(), "cron/".to_owned()];
        for w in &self.webhooks {
            for p in &w.config.stream_prefixes {
                if !prefixes.iter().any(|q| p.starts_with(q.as_str())) {
                    prefixes.push(p.clone());
                }
            }
        }
        Filter {
            event_types: Vec::new(),
            stream_prefixes: prefixes,
        }
    }

    async fn export(&self, event: &RecordedEvent) -> Result<Vec<Outcome>, ExportError> {
        let scope = scope_of(&event.stream_id);
        let mut recorded: Option<HashSet<Uuid>> = None;
        let mut outcomes = Vec::new();
        if self.config.email {
            if let Some(case) = event.stream_id.strip_prefix("case/") {
                outcomes.extend(self.on_case_event(event, case, &mut recorded).await?);
            } else if self.config.digest.enabled
                && event.event_type == CRON_RAN_EVENT
                && event.stream_id == format!("cron/{}", self.config.digest.schedule)
            {
                outcomes.extend(self.digest(event, &mut recorded).await?);
            }
        }
        for w in self.webhooks.iter().filter(|w| w.wants(event)) {
            let id = record_id(
                &format!("webhook:{}", w.config.id),
                event.event_id,
                "webhook",
            );
            if recorded.is_none() {
                recorded = Some(self.recorded(&scope).await?);
            }
            if recorded.as_ref().is_some_and(|r| r.contains(&id)) {
                continue;
            }
            let known = self.memo().webhooks.get(&id).copied();
            let status = match known {
                Some(s) => s,
                None => {
                    let client = self.http.as_ref().ok_or_else(|| {
                        permanent("webhooks: no HTTP client (no webhook was configured)")
                    })?;
                    let s = w.post(client, event).await?;
                    let mut memo = self.memo();
                    if memo.webhooks.len() > MEMO_LIMIT {
                        memo.webhooks.clear();
                    }
                    memo.webhooks.insert(id, s);
                    s
                }
            };
            let record = SentRecord {
                notification: format!("webhook:{}", w.config.id),
                channel: "webhook".to_owned(),
                case: event.stream_id.strip_prefix("case/").map(str::to_owned),
                workflow: None,
                source: source(event),
                messages: vec![MessageRecord {
                    message_id: event.event_id.to_string(),
                    to: Recipient {
                        name: w.config.id.clone(),
                        address: w.config.url.clone(),
                        to: "webhook".to_owned(),
                        key: None,
                    },
                    subject: event.event_type.clone(),
                    attachments: Vec::new(),
                    file: None,
                    status: Some(status),
                }],
                rejected: Vec::new(),
                skipped: Vec::new(),
                attachments: Vec::new(),
            };
            outcomes.push(outcome(&scope, id, &record)?);
        }
        Ok(outcomes)
    }
}
