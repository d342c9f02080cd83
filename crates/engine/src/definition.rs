//! The workflow definition format: what a YAML file under `workflows/<name>/` declares. Every
//! identifier that other parts refer to is kept with its place in the file, so that validation
//! can say where a wrong reference is.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_saphyr::Spanned;

/// A place in a definition file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Place {
    pub line: u64,
    pub column: u64,
}

impl Place {
    pub fn of<T>(spanned: &Spanned<T>) -> Place {
        Place {
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
        }
    }
}

/// Text in both languages of the project: Vietnamese for users, English for logs and engineers.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Message {
    pub en: String,
    pub vi: String,
}

/// A whole workflow definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Definition {
    /// Folder-style name, e.g. `giam-sat-chuyen-de`.
    pub name: Spanned<String>,
    /// Increased whenever the definition changes meaning; cases pin the version they started on.
    pub version: u32,
    /// Vietnamese name shown to users.
    pub label: String,
    #[serde(default)]
    pub description: String,
    /// IANA time zone of the workflow's dates and times.
    #[serde(default = "default_time_zone")]
    pub time_zone: String,
    /// Roles that may appear in `commands[].roles`, with their labels.
    pub roles: Vec<Labelled>,
    /// Named figures (deadlines, minimum notice) with defaults; a case may override them in its
    /// start data under `parameters`.
    #[serde(default)]
    pub parameters: Vec<Parameter>,
    pub start: Start,
    pub stages: Vec<Labelled>,
    #[serde(default)]
    pub entities: Vec<Collection>,
    pub events: Vec<EventDecl>,
    pub commands: Vec<Command>,
    /// Stage changes that happen by themselves after any command, when their condition holds.
    #[serde(default)]
    pub transitions: Vec<AutoTransition>,
    #[serde(default)]
    pub warnings: Vec<WarningRule>,
    /// Declared now; run by the scheduler.
    #[serde(default)]
    pub timers: Vec<TimerDecl>,
    /// Document kinds, rendered by the documents exporter from their templates.
    #[serde(default)]
    pub documents: Vec<DocumentDecl>,
    /// Template files shared by the documents (`{{> name}}`, named by their file stem).
    #[serde(default)]
    pub partials: Vec<String>,
    /// Declared now; sent by the notifications exporter.
    #[serde(default)]
    pub notifications: Vec<NotificationDecl>,
}

fn default_time_zone() -> String {
    "Asia/Ho_Chi_Minh".to_owned()
}

/// An identifier with a Vietnamese label.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Labelled {
    pub id: Spanned<String>,
    pub label: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    pub id: Spanned<String>,
    pub label: String,
    pub default: Value,
    /// True when the figure could not be confirmed in law and must stay configurable.
    #[serde(default)]
    pub unconfirmed: bool,
}

/// How a case begins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    /// The event type recorded when a case starts.
    pub event: Spanned<String>,
    pub stage: Spanned<String>,
    /// JSON Schema of the start data, inline or as a path relative to the definition file.
    pub schema: SchemaRef,
    /// Entities created from the start data.
    #[serde(default)]
    pub entities: Vec<EntitySource>,
}

/// A JSON Schema given inline or by file.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SchemaRef {
    File(String),
    Inline(Value),
}

/// Creates one entity per item of an array (or one from an object) found in the context; for the
/// start event the start data is at `/input`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitySource {
    pub collection: Spanned<String>,
    /// JSON pointer into the context, e.g. `/input/units`.
    pub from: String,
    /// JSON pointer within each item to its key, e.g. `/code`.
    pub key: String,
    pub state: Spanned<String>,
}

/// A collection of entities inside a case, each with its own state.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Collection {
    pub id: Spanned<String>,
    pub label: String,
    pub states: Vec<Labelled>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventDecl {
    #[serde(rename = "type")]
    pub event_type: Spanned<String>,
    #[serde(default = "one")]
    pub schema_version: u32,
    pub label: String,
}

fn one() -> u32 {
    1
}

/// Something a role can do to a case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    pub id: Spanned<String>,
    pub label: String,
    pub roles: Vec<Spanned<String>>,
    /// Stages in which the command may run.
    pub stages: Vec<Spanned<String>>,
    /// JSON Schema of the input (default: an object with no required fields).
    #[serde(default)]
    pub input: Option<SchemaRef>,
    /// The entity the command acts on, found by a key in the input.
    #[serde(default)]
    pub target: Option<Target>,
    /// Conditions that must hold, each with its rejection code and messages.
    #[serde(default)]
    pub checks: Vec<Check>,
    /// The event recorded when the command is accepted.
    pub emit: Spanned<String>,
    #[serde(default)]
    pub effects: Vec<Effect>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub collection: Spanned<String>,
    /// JSON pointer into the input naming the entity's key, e.g. `/unit`.
    pub key: String,
    /// States the entity must be in (empty: any).
    #[serde(default)]
    pub states: Vec<Spanned<String>>,
    /// When true, an actor scoped to a unit may only target the entity whose key is that unit.
    #[serde(default)]
    pub scoped_to_unit: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Check {
    pub code: String,
    pub message: Message,
    pub require: Condition,
}

/// A condition over the command's context document:
/// `{input, case, target, stage, now, today, actor, params, item}`. `now` is the command's time
/// (RFC 3339, in the caller's offset, which the CLI sets to the workflow's zone); `today` is its
/// date (`YYYY-MM-DD`), the one to compare with date fields such as deadlines.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Condition {
    /// The case is in this stage.
    Stage(Spanned<String>),
    /// The case is in one of these stages.
    StageIn(Vec<Spanned<String>>),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
    /// Every entity of the collection is in one of the states (and there is at least one).
    Every(EntityStates),
    /// At least one entity of the collection is in one of the states.
    Some(EntityStates),
    /// No entity of the collection is in one of the states.
    None(EntityStates),
    /// The value at a pointer is present and not null.
    Exists(String),
    /// Compares two values: numbers numerically, strings (ISO dates) in order.
    Compare(Comparison),
    /// Every item of the array at `in` satisfies `require` (with the item at `/item`).
    Each(EachItem),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityStates {
    pub collection: Spanned<String>,
    pub states: Vec<Spanned<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    pub left: Operand,
    pub op: CompareOp,
    pub right: Operand,
}

/// A JSON pointer into the context (`/input/total`) or a literal (`{value: 5}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Operand {
    Pointer(String),
    Literal { value: Value },
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EachItem {
    #[serde(rename = "in")]
    pub array: String,
    pub require: Box<Condition>,
}

/// What an accepted command changes. Effects are resolved into concrete values when the command
/// is decided and recorded in the event, so replaying the event never needs the definition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Effect {
    /// Only when this holds.
    #[serde(default)]
    pub when: Option<Condition>,
    /// Move the case to this stage.
    #[serde(default)]
    pub stage: Option<Spanned<String>>,
    /// Move the target entity to this state.
    #[serde(default)]
    pub target_state: Option<Spanned<String>>,
    /// Set fields of the target entity: field name → JSON pointer into the context.
    #[serde(default)]
    pub set_target: BTreeMap<String, String>,
    /// Set fields of the case data: field name → JSON pointer into the context.
    #[serde(default)]
    pub set_case: BTreeMap<String, String>,
    /// Move every entity of a collection in some states to another state.
    #[serde(default)]
    pub move_all: Option<MoveAll>,
    /// Create entities from an array in the context.
    #[serde(default)]
    pub create: Option<EntitySource>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoveAll {
    pub collection: Spanned<String>,
    pub states: Vec<Spanned<String>>,
    pub to: Spanned<String>,
    /// Set fields of each moved entity: field name → JSON pointer into the context.
    #[serde(default)]
    pub set: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoTransition {
    pub from: Spanned<String>,
    pub to: Spanned<String>,
    pub when: Condition,
}

/// A warning shown on a case: not an error, but something a person should look at.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarningRule {
    pub code: String,
    /// Check each entity of a collection (the entity is at `/target`, its key at `/key`).
    #[serde(default)]
    pub each: Option<Spanned<String>>,
    /// Only in these stages (empty: all).
    #[serde(default)]
    pub stages: Vec<Spanned<String>>,
    pub rule: WarningKind,
    /// Placeholders `{name}` are replaced by the values the rule names.
    pub message: Message,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum WarningKind {
    /// The date at `date` (YYYY-MM-DD) is not a working day. Placeholders: `{date}`, `{key}`,
    /// `{reason}` (the holiday's name, or the weekday).
    NotWorkingDay { date: String },
    /// Fewer than `days` calendar days from `from` to `to`. Placeholders: `{from}`, `{to}`,
    /// `{days}`, `{minimum}`.
    MinDaysBetween {
        from: String,
        to: String,
        days: Operand,
    },
}

/// A timer, run by the scheduler: when due, it issues `command` through the normal path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimerDecl {
    pub id: Spanned<String>,
    pub label: String,
    /// JSON pointer to the date or time the timer is relative to.
    pub relative_to: String,
    /// Per entity of this collection (the pointer is then into the entity).
    #[serde(default)]
    pub each: Option<Spanned<String>>,
    /// Offset, e.g. `-3 working days`, `+5 days`, `0 days`, `-1 working day`.
    #[serde(default)]
    pub offset: Option<String>,
    /// Time of day (`HH:MM`) or `end-of-day`.
    #[serde(default)]
    pub at: Option<String>,
    pub command: Spanned<String>,
    /// Input of the command: field → JSON pointer into the context (`{case, target, stage,
    /// stage_since, started_at, params, due}`) or a literal (`{value: ...}`).
    #[serde(default)]
    pub input: BTreeMap<String, Operand>,
    /// What to do with a timer that came due while the scheduler was down.
    #[serde(default)]
    pub when_late: LatePolicy,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LatePolicy {
    #[default]
    Fire,
    Skip,
}

/// A document kind, rendered from a template when one of `on` is recorded.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentDecl {
    pub id: Spanned<String>,
    pub label: String,
    /// Type code of Nghị định 30/2020 (TB, KH, BB, ...), empty for a công văn.
    #[serde(default)]
    pub type_code: String,
    /// The template file (handlebars writing the document markup), relative to the definition.
    pub template: String,
    pub on: Vec<Spanned<String>>,
    /// Where the document's id comes from, as a pointer into the event's input (e.g.
    /// `/input/document` when the command names the document); without it the id is the kind,
    /// followed by the key of the entity the event acted on, and a sequence number from the
    /// second document of that kind for the same entity.
    #[serde(default)]
    pub key: Option<String>,
    /// Where the document's date comes from, as a pointer into the event's input (e.g.
    /// `/input/sent_on`); without it, the input's `issued_on`, else the event's local date.
    #[serde(default)]
    pub date: Option<String>,
    /// Numbered in the issuing body's secret series (Nghị định 30/2020: secret documents are
    /// numbered apart).
    #[serde(default)]
    pub secret: bool,
}

/// A notification, sent by the notifications exporter when one of `on` is recorded: one message
/// per recipient, its body rendered from `template` (plain text, handlebars) and its subject from
/// `subject`, with the documents of `attach` and the calendar entries of `calendar`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationDecl {
    pub id: Spanned<String>,
    pub on: Vec<Spanned<String>>,
    /// Who receives it: role names (addresses from the exporter's configuration, and the
    /// members' own addresses in the case data for a role with a member list), or
    /// `collection:<id>` for the case's entities (each entity's `email`).
    pub to: Vec<String>,
    /// The body's template file, relative to the definition (part of the pinned bundle).
    pub template: String,
    /// The subject line: a one-line handlebars template with the body's context; without it, the
    /// event's label.
    #[serde(default)]
    pub subject: Option<String>,
    /// Documents attached (rendered as DOCX and HTML), by id; each must be declared `on` every
    /// event of the notification.
    #[serde(default)]
    pub attach: Vec<Spanned<String>>,
    /// For `collection:` recipients: a pointer (`/target/...` or `/input/...`) to the key of the
    /// one entity the event concerns (a visit's unit). Without it: the entities of the collection
    /// the event acted on, or all of them when it acted on none.
    #[serde(default)]
    pub recipient_key: Option<String>,
    /// For `collection:` recipients: only the entities the event acted on; when it acted on none,
    /// nobody of the collection (an overdue notice never goes to a unit that has reported).
    #[serde(default)]
    pub only_acted_on: bool,
    /// Calendar entries attached as one RFC 5545 `.ics` file per message.
    #[serde(default)]
    pub calendar: Vec<CalendarDecl>,
}

/// What a calendar attachment asks of the recipient's calendar.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CalendarMethod {
    /// A new or changed entry (`METHOD:REQUEST`; several entries in one file: `PUBLISH`).
    #[default]
    Request,
    /// The entry is cancelled (`METHOD:CANCEL`, `STATUS:CANCELLED`).
    Cancel,
}

/// Calendar entries of a notification: one per entity of `each`, or one from the case.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalendarDecl {
    /// Names the entries in their UIDs, which stay the same across changes:
    /// `<case>-<uid>@giamsat`, or `<case>-<uid>-<entity key>@giamsat` with `each`.
    pub uid: Spanned<String>,
    #[serde(default)]
    pub method: CalendarMethod,
    /// One entry per entity of this collection: the entities the event acted on when it acted on
    /// some, else every entity (in `states`, when given).
    #[serde(default)]
    pub each: Option<Spanned<String>>,
    /// Only entities in these states.
    #[serde(default)]
    pub states: Vec<Spanned<String>>,
    /// Pointers to the entry's date (`YYYY-MM-DD`), start time (`HH:MM`) and place: into the
    /// entity with `each`, else into the template context (`/data/meeting/date`).
    pub date: String,
    pub time: String,
    #[serde(default)]
    pub place: Option<String>,
    /// Length of the entry.
    #[serde(default = "default_calendar_minutes")]
    pub minutes: u32,
    /// The entry's title: a one-line handlebars template with the body's context plus `item`
    /// (the entity, with `each`).
    pub summary: String,
    /// Only these recipients of the notification's `to` get the entry (all when empty).
    #[serde(default)]
    pub to: Vec<String>,
    /// With `each`, for `collection:` recipients: a pointer into the entity to the key of the
    /// recipient it concerns (a unit gets only its own visit). Without it, every recipient gets
    /// every entry.
    #[serde(default)]
    pub recipient_key: Option<String>,
    /// Events that change the entry (a rescheduled visit): each one recorded for the entity (or
    /// the case, without `each`) up to the notified event raises the entry's `SEQUENCE`.
    #[serde(default)]
    pub changed_on: Vec<Spanned<String>>,
}

fn default_calendar_minutes() -> u32 {
    240
}
