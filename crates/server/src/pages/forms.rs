//! Forms: reading a posted body (`application/x-www-form-urlencoded` or `multipart/form-data`),
//! and building a command's form from its input JSON Schema — strings, dates, date-times,
//! times, enums, integers, lists of texts (one a line), a few repeated rows for a list of
//! objects, and the Phụ lục 03 grid (year × field: total and on time) — then turning what was
//! entered back into the command's input, with Vietnamese messages that name the field.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::http::header::CONTENT_TYPE;
use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, NaiveTime};
use chrono_tz::Tz;
use giamsat_engine::{Command, Workflow};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::PageError;
use super::view;

/// A file sent with a form.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    pub name: String,
    pub filename: String,
    pub bytes: Bytes,
}

/// A posted form: its fields in order, and its files.
#[derive(Debug, Default)]
pub(crate) struct FormData {
    pub fields: Vec<(String, String)>,
    pub files: Vec<Upload>,
}

impl FormData {
    /// Reads a body as the form its `Content-Type` says it is.
    pub fn parse(headers: &HeaderMap, body: &[u8]) -> Result<FormData, PageError> {
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/x-www-form-urlencoded" | "" => Ok(FormData {
                fields: parse_urlencoded(body),
                files: Vec::new(),
            }),
            "multipart/form-data" => {
                let boundary = parameters(content_type)
                    .into_iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case("boundary"))
                    .map(|(_, v)| v)
                    .filter(|b| !b.is_empty() && b.len() <= 70)
                    .ok_or_else(|| {
                        PageError::bad_request("Biểu mẫu gửi lên thiếu ranh giới (boundary).")
                    })?;
                parse_multipart(body, &boundary)
            }
            _ => Err(PageError::bad_request(
                "Biểu mẫu phải được gửi dưới dạng application/x-www-form-urlencoded hoặc \
                 multipart/form-data.",
            )),
        }
    }

    /// The first value of a field.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A file that was chosen (a named, non-empty part).
    pub fn file(&self, name: &str) -> Option<&Upload> {
        self.files
            .iter()
            .find(|f| f.name == name && !f.filename.is_empty() && !f.bytes.is_empty())
    }

    pub fn has(&self, name: &str) -> bool {
        self.fields.iter().any(|(k, _)| k == name)
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(text: &[u8]) -> String {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < text.len() => match (hex_value(text[i + 1]), hex_value(text[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a=1&b=x+y` as pairs, in order.
pub(crate) fn parse_urlencoded(body: &[u8]) -> Vec<(String, String)> {
    body.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut it = pair.splitn(2, |b| *b == b'=');
            let name = percent_decode(it.next().unwrap_or_default());
            let value = percent_decode(it.next().unwrap_or_default());
            (name, value)
        })
        .collect()
}

/// The `; key=value` parameters of a header value (quoted values unquoted).
fn parameters(header: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = header.chars().peekable();
    // Skip the value before the first ';'.
    for c in chars.by_ref() {
        if c == ';' {
            break;
        }
    }
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace() || *c == ';') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ';' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        c => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ';' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
            }
        }
        out.push((key.trim().to_owned(), value.trim().to_owned()));
    }
    out
}

fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || from > haystack.len() {
        return None;
    }
    haystack[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// A `multipart/form-data` body (RFC 7578): text parts become fields, parts with a filename
/// become files.
pub(crate) fn parse_multipart(body: &[u8], boundary: &str) -> Result<FormData, PageError> {
    let malformed = || PageError::bad_request("Không đọc được biểu mẫu gửi lên (multipart).");
    let delimiter = format!("--{boundary}").into_bytes();
    let next_delimiter = format!("\r\n--{boundary}").into_bytes();
    let mut form = FormData::default();
    let mut pos = find(body, &delimiter, 0).ok_or_else(malformed)? + delimiter.len();
    loop {
        if body[pos..].starts_with(b"--") {
            return Ok(form);
        }
        if !body[pos..].starts_with(b"\r\n") {
            return Err(malformed());
        }
        pos += 2;
        let headers_end = find(body, b"\r\n\r\n", pos).ok_or_else(malformed)?;
        let headers = String::from_utf8_lossy(&body[pos..headers_end]).into_owned();
        let content_start = headers_end + 4;
        let content_end = find(body, &next_delimiter, content_start).ok_or_else(malformed)?;
        let content = &body[content_start..content_end];
        let mut name = None;
        let mut filename = None;
        for line in headers.split("\r\n") {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if key.trim().eq_ignore_ascii_case("content-disposition") {
                for (k, v) in parameters(value) {
                    match k.to_ascii_lowercase().as_str() {
                        "name" => name = Some(v),
                        "filename" => filename = Some(v),
                        _ => {}
                    }
                }
            }
        }
        let name = name.ok_or_else(malformed)?;
        match filename {
            Some(filename) => form.files.push(Upload {
                name,
                // A browser may send a whole path; only its last part is the name.
                filename: filename
                    .rsplit(['/', '\\'])
                    .next()
                    .unwrap_or_default()
                    .to_owned(),
                bytes: Bytes::copy_from_slice(content),
            }),
            None => form
                .fields
                .push((name, String::from_utf8_lossy(content).into_owned())),
        }
        pos = content_end + next_delimiter.len();
    }
}

/// The kind of control a field of a command's input gets.
#[derive(Debug, Clone)]
enum Kind {
    Text,
    LongText,
    Date,
    DateTime,
    Time,
    Integer {
        minimum: Option<i64>,
    },
    Number,
    Choice(Vec<(String, String)>),
    /// A list of texts, one a line.
    Lines,
    /// A list of objects: a few rows of the item's fields.
    Rows {
        fields: Vec<Prop>,
        min_items: usize,
    },
    /// The Phụ lục 03 figures: `[{year, field, total, on_time}]` as a grid.
    Figures {
        years: Vec<i64>,
        fields: Vec<(String, String)>,
    },
    /// A file upload whose SHA-256 becomes the value.
    File,
    /// Set by the page, not entered: the unit of a unit's page, the time of a unit's command.
    Fixed(Value),
    /// Anything else: JSON typed in.
    Json,
}

#[derive(Debug, Clone)]
struct Prop {
    name: String,
    label: String,
    required: bool,
    kind: Kind,
    /// The value a new form starts with.
    default: Option<String>,
}

/// What a form is built against: the case as the user sees it and the time of the command.
pub(crate) struct FormContext<'a> {
    pub workflow: &'a Workflow,
    /// The case's entities as the user may see them (collection → key → entity).
    pub entities: &'a Value,
    /// The case data as the user may see it.
    pub data: &'a Value,
    pub now: DateTime<FixedOffset>,
    pub tz: Tz,
    /// Fields the page sets itself (name → value); not shown, not entered.
    pub fixed: BTreeMap<String, Value>,
    /// Date-time fields are the command's time and not entered (a unit cannot date its own
    /// report).
    pub times_are_now: bool,
    /// Whether files can be uploaded.
    pub uploads: bool,
}

impl FormContext<'_> {
    fn unit_name(&self, code: &str) -> Option<String> {
        self.entities
            .as_object()?
            .values()
            .filter_map(|c| c.get(code))
            .find_map(|e| e.pointer("/data/name").and_then(Value::as_str))
            .map(str::to_owned)
            .or_else(|| {
                self.data
                    .get("units")?
                    .as_array()?
                    .iter()
                    .find(|u| u.get("code").and_then(Value::as_str) == Some(code))?
                    .get("name")?
                    .as_str()
                    .map(str::to_owned)
            })
    }
}

/// A command's form: the fields, built from its input schema.
#[derive(Debug, Clone)]
pub(crate) struct CommandForm {
    props: Vec<Prop>,
}

/// What a field looks like to the template.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Field {
    pub name: String,
    pub id: String,
    pub label: String,
    pub control: &'static str,
    pub input_type: &'static str,
    pub required: bool,
    pub value: String,
    pub options: Vec<Choice>,
    pub error: Option<String>,
    pub hint: Option<String>,
    pub min: Option<String>,
    /// In a row of a table: the label is for screen readers only.
    pub compact: bool,
    /// Rows of a list of objects: the column labels and each row's fields.
    pub columns: Vec<String>,
    pub rows: Vec<Row>,
    /// The Phụ lục 03 grid.
    pub years: Vec<i64>,
    pub figures: Vec<FigureRow>,
    pub is_input: bool,
    pub is_textarea: bool,
    pub is_select: bool,
    pub is_rows: bool,
    pub is_figures: bool,
    pub is_file: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Row {
    pub number: usize,
    pub fields: Vec<Field>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FigureRow {
    pub label: String,
    pub cells: Vec<FigureCell>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FigureCell {
    pub year: i64,
    pub total_name: String,
    pub total: String,
    pub on_time_name: String,
    pub on_time: String,
    pub rate_id: String,
    pub rate: String,
    pub error: Option<String>,
}

/// Values entered, by field name (`issued_on`, `recommendations.0.id`,
/// `phu_luc_03-2023-all-total`), and how many rows each list of objects shows.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entered {
    values: HashMap<String, String>,
    rows: HashMap<String, usize>,
}

/// Problems with what was entered: by field name, and for the form as a whole.
#[derive(Debug, Clone, Default)]
pub(crate) struct Problems {
    pub fields: HashMap<String, String>,
    pub form: Vec<String>,
}

impl Problems {
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.form.is_empty()
    }

    /// Every message, the form's first.
    pub fn messages(&self) -> Vec<String> {
        let mut out = self.form.clone();
        let mut fields: Vec<_> = self.fields.values().cloned().collect();
        fields.sort();
        out.extend(fields);
        out
    }
}

/// How many rows a list of objects shows at first.
const DEFAULT_ROWS: usize = 3;
/// The most rows a list of objects may grow to.
const MAX_ROWS: usize = 50;
/// The prefix of the button that adds a row to a list of objects.
pub(crate) const ADD_ROW: &str = "them-dong:";

fn schema_type(schema: &Value) -> Option<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => Some(t.as_str()),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| *t != "null"),
        _ => None,
    }
}

fn is_time_pattern(schema: &Value) -> bool {
    schema
        .get("pattern")
        .and_then(Value::as_str)
        .is_some_and(|p| p.contains(":[0-5][0-9]"))
}

const LONG_TEXTS: &[&str] = &[
    "text",
    "summary",
    "minutes_summary",
    "notes",
    "note",
    "evidence",
    "reason",
    "content",
    "answer",
];

/// Whether an array's items are the Phụ lục 03 figures: `{year, field, total, on_time}`.
fn is_figures(items: &Value) -> bool {
    let Some(props) = items.get("properties").and_then(Value::as_object) else {
        return false;
    };
    ["year", "field", "total", "on_time"]
        .iter()
        .all(|k| props.contains_key(*k))
        && props.len() == 4
}

/// The years of the Phụ lục 03 grid: the years of the appendix columns in the case data, else
/// the years of its data period, else last year.
fn figure_years(ctx: &FormContext<'_>) -> Vec<i64> {
    let mut years: Vec<i64> = ctx
        .data
        .get("appendices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|a| {
            a.get("columns")
                .and_then(Value::as_array)
                .is_some_and(|c| c.iter().any(|col| col.get("year").is_some()))
        })
        .take(1)
        .flat_map(|a| {
            a["columns"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c.get("year").and_then(Value::as_i64))
                .collect::<Vec<_>>()
        })
        .collect();
    if years.is_empty() {
        let year_of = |p: &str| {
            ctx.data
                .pointer(p)
                .and_then(Value::as_str)
                .and_then(|t| t.get(..4)?.parse::<i64>().ok())
        };
        if let (Some(from), Some(to)) = (year_of("/data_period/from"), year_of("/data_period/to"))
            && from <= to
            && to - from < 10
        {
            years = (from..=to).collect();
        }
    }
    if years.is_empty() {
        years.push(i64::from(chrono::Datelike::year(&ctx.now)) - 1);
    }
    years.sort_unstable();
    years.dedup();
    years
}

/// The rows of the Phụ lục 03 grid: the enum of `field`, labelled by the appendix's rows when
/// it has one per value.
fn figure_fields(items: &Value, ctx: &FormContext<'_>) -> Vec<(String, String)> {
    let values: Vec<String> = items
        .pointer("/properties/field/enum")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    let appendix_rows: Vec<String> = ctx
        .data
        .get("appendices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|a| {
            a.get("columns")
                .and_then(Value::as_array)
                .is_some_and(|c| c.iter().any(|col| col.get("year").is_some()))
        })
        .and_then(|a| a.get("rows").and_then(Value::as_array))
        .map(|rows| {
            rows.iter()
                .filter_map(|r| r.get("label").and_then(Value::as_str).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let label = if appendix_rows.len() == values.len() {
                appendix_rows[i].clone()
            } else {
                view::choice_label("field", v)
            };
            (v.clone(), label)
        })
        .collect()
}

/// The entities a target field may name: those of the collection in the states the command
/// accepts, labelled by name.
fn target_choices(
    command: &Command,
    ctx: &FormContext<'_>,
) -> Option<(String, Vec<(String, String)>)> {
    let target = command.target.as_ref()?;
    let field = target.key.strip_prefix('/')?.to_owned();
    if field.contains('/') {
        return None;
    }
    let collection = &target.collection.value;
    let entities = ctx.entities.get(collection)?.as_object()?;
    let unit_name = |code: &str| ctx.unit_name(code);
    // In the order the start data lists them (the schedule's order for visits), then the rest.
    let listed: Vec<&str> = ctx
        .data
        .get(collection)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|item| {
            ["code", "unit", "id"]
                .iter()
                .find_map(|k| item.get(*k).and_then(Value::as_str))
        })
        .collect();
    let mut ordered: Vec<(&String, &Value)> = entities.iter().collect();
    ordered.sort_by_key(|(key, _)| {
        listed
            .iter()
            .position(|k| *k == key.as_str())
            .unwrap_or(usize::MAX)
    });
    let choices = ordered
        .into_iter()
        .filter(|(_, e)| {
            target.states.is_empty()
                || target
                    .states
                    .iter()
                    .any(|s| e.get("state").and_then(Value::as_str) == Some(s.value.as_str()))
        })
        .map(|(key, e)| {
            let data = e.get("data").unwrap_or(&Value::Null);
            let state = e.get("state").and_then(Value::as_str).unwrap_or_default();
            let name = view::entity_name(key, data, &unit_name);
            let label = format!(
                "{name} — {}",
                view::state_label(ctx.workflow, collection, state)
            );
            (key.clone(), label)
        })
        .collect();
    Some((field, choices))
}

/// The id a document takes when the command's event renders a declared document keyed by this
/// field (`thong-bao-lich` for `issue_notice`'s `document`).
fn document_default(command: &Command, workflow: &Workflow, field: &str) -> Option<String> {
    let key = format!("/input/{field}");
    workflow
        .definition
        .documents
        .iter()
        .find(|d| {
            d.key.as_deref() == Some(key.as_str())
                && d.on.iter().any(|e| e.value == command.emit.value)
        })
        .map(|d| d.id.value.clone())
}

impl CommandForm {
    /// The form of `command` (no fields when it takes no input).
    pub fn new(command: &Command, schema: Option<&Value>, ctx: &FormContext<'_>) -> CommandForm {
        let Some(schema) = schema else {
            return CommandForm { props: Vec::new() };
        };
        let required: Vec<String> = schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let properties = schema
            .get("properties")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let target = target_choices(command, ctx);
        // The target field first, then the required fields in the schema's order, then the
        // others.
        let mut names: Vec<String> = Vec::new();
        if let Some((field, _)) = &target
            && properties.contains_key(field)
        {
            names.push(field.clone());
        }
        for r in &required {
            if properties.contains_key(r) && !names.contains(r) {
                names.push(r.clone());
            }
        }
        for k in properties.keys() {
            if !names.contains(k) {
                names.push(k.clone());
            }
        }
        let mut props = Vec::new();
        for name in names {
            let prop_schema = &properties[&name];
            let is_required = required.contains(&name);
            let kind = if let Some(value) = ctx.fixed.get(&name) {
                Kind::Fixed(value.clone())
            } else if let Some((field, choices)) = &target
                && *field == name
            {
                Kind::Choice(choices.clone())
            } else {
                match kind_of(&name, prop_schema, command, ctx) {
                    // A unit does not date what it sends: the time is the command's.
                    Kind::DateTime if ctx.times_are_now => Kind::Fixed(json!(ctx.now.to_rfc3339())),
                    kind => kind,
                }
            };
            if matches!(kind, Kind::File) && !ctx.uploads {
                continue;
            }
            let default = match &kind {
                // The day something is issued, closed or archived is most often today; other
                // dates (a new visit date, a deadline) are not guessed.
                Kind::Date if name.ends_with("_on") && !name.starts_with("due") => Some(
                    ctx.now
                        .with_timezone(&ctx.tz)
                        .format("%Y-%m-%d")
                        .to_string(),
                ),
                Kind::DateTime => Some(view::local_input(ctx.now, ctx.tz)),
                Kind::Text => document_default(command, ctx.workflow, &name),
                _ => None,
            };
            props.push(Prop {
                label: view::field_label(&name, prop_schema),
                name,
                required: is_required,
                kind,
                default,
            });
        }
        CommandForm { props }
    }

    pub fn is_empty(&self) -> bool {
        self.props.iter().all(|p| matches!(p.kind, Kind::Fixed(_)))
    }

    /// Whether the form sends a file (and must be `multipart/form-data`).
    pub fn has_file(&self) -> bool {
        self.props.iter().any(|p| matches!(p.kind, Kind::File))
    }

    /// The name of the file field, if any.
    pub fn file_field(&self) -> Option<&str> {
        self.props
            .iter()
            .find(|p| matches!(p.kind, Kind::File))
            .map(|p| p.name.as_str())
    }

    /// A new form's values.
    pub fn defaults(&self) -> Entered {
        let mut entered = Entered::default();
        for p in &self.props {
            if let Some(d) = &p.default {
                entered.values.insert(p.name.clone(), d.clone());
            }
            if matches!(p.kind, Kind::Rows { .. }) {
                entered.rows.insert(p.name.clone(), DEFAULT_ROWS);
            }
        }
        entered
    }

    /// What a posted form holds for these fields; a press of "add a row" adds one.
    pub fn entered(&self, form: &FormData) -> Entered {
        let mut entered = Entered::default();
        for (k, v) in &form.fields {
            entered.values.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for p in &self.props {
            if let Kind::Rows { .. } = p.kind {
                let prefix = format!("{}.", p.name);
                let highest = form
                    .fields
                    .iter()
                    .filter_map(|(k, _)| k.strip_prefix(&prefix))
                    .filter_map(|rest| rest.split('.').next()?.parse::<usize>().ok())
                    .max()
                    .map_or(0, |i| i + 1);
                let mut rows = highest.max(DEFAULT_ROWS);
                if form.has(&format!("{ADD_ROW}{}", p.name)) {
                    rows += 1;
                }
                entered.rows.insert(p.name.clone(), rows.min(MAX_ROWS));
            }
        }
        entered
    }

    /// Whether the post was a press of "add a row" rather than a submission.
    pub fn adds_row(&self, form: &FormData) -> bool {
        form.fields.iter().any(|(k, _)| k.starts_with(ADD_ROW))
    }

    /// The command's input from what was entered; `file` is the SHA-256 of a file already
    /// stored for the file field.
    pub fn input(
        &self,
        entered: &Entered,
        file: Option<&str>,
        ctx: &FormContext<'_>,
    ) -> Result<Value, Problems> {
        let mut problems = Problems::default();
        let mut input = Map::new();
        for p in &self.props {
            match &p.kind {
                Kind::Fixed(v) => {
                    input.insert(p.name.clone(), v.clone());
                }
                Kind::File => {
                    if let Some(sha) = file {
                        input.insert(p.name.clone(), json!(sha));
                    } else if p.required {
                        problems.fields.insert(
                            p.name.clone(),
                            format!("Vui lòng chọn “{}” để tải lên.", p.label),
                        );
                    }
                }
                Kind::Rows { fields, min_items } => {
                    let rows = entered.rows.get(&p.name).copied().unwrap_or(DEFAULT_ROWS);
                    let mut items = Vec::new();
                    for i in 0..rows {
                        let name_of = |f: &Prop| format!("{}.{i}.{}", p.name, f.name);
                        let blank = fields.iter().all(|f| {
                            entered
                                .values
                                .get(&name_of(f))
                                .is_none_or(|v| v.trim().is_empty())
                        });
                        if blank {
                            continue;
                        }
                        let mut item = Map::new();
                        for f in fields {
                            let name = name_of(f);
                            let raw = entered.values.get(&name).map_or("", |v| v.trim());
                            match convert(f, raw, ctx) {
                                Ok(Some(v)) => {
                                    item.insert(f.name.clone(), v);
                                }
                                Ok(None) => {}
                                Err(message) => {
                                    problems
                                        .fields
                                        .insert(name, format!("Dòng {}: {message}", i + 1));
                                }
                            }
                        }
                        items.push(Value::Object(item));
                    }
                    if items.len() < *min_items || (p.required && items.is_empty()) {
                        problems.fields.insert(
                            p.name.clone(),
                            format!(
                                "Vui lòng nhập ít nhất {} dòng “{}”.",
                                (*min_items).max(1),
                                p.label
                            ),
                        );
                    } else if !items.is_empty() || p.required {
                        input.insert(p.name.clone(), Value::Array(items));
                    }
                }
                Kind::Figures { years, fields } => {
                    let mut items = Vec::new();
                    for year in years {
                        for (field, label) in fields {
                            let total_name = figure_name(&p.name, *year, field, "total");
                            let on_time_name = figure_name(&p.name, *year, field, "on_time");
                            let total = entered.values.get(&total_name).map_or("", |v| v.trim());
                            let on_time =
                                entered.values.get(&on_time_name).map_or("", |v| v.trim());
                            match figure(total, on_time) {
                                Ok(None) => {}
                                Ok(Some((t, o))) => items.push(json!({
                                    "year": year, "field": field, "total": t, "on_time": o,
                                })),
                                Err(message) => {
                                    problems.fields.insert(
                                        total_name,
                                        format!("Năm {year}, {label}: {message}"),
                                    );
                                }
                            }
                        }
                    }
                    if !items.is_empty() {
                        input.insert(p.name.clone(), Value::Array(items));
                    } else if p.required {
                        problems.fields.insert(
                            p.name.clone(),
                            format!("Vui lòng nhập số liệu “{}”.", p.label),
                        );
                    }
                }
                _ => {
                    let raw = entered.values.get(&p.name).map_or("", |v| v.trim());
                    match convert(p, raw, ctx) {
                        Ok(Some(v)) => {
                            input.insert(p.name.clone(), v);
                        }
                        Ok(None) => {}
                        Err(message) => {
                            problems.fields.insert(p.name.clone(), message);
                        }
                    }
                }
            }
        }
        if problems.is_empty() {
            Ok(Value::Object(input))
        } else {
            Err(problems)
        }
    }

    /// The fields as the template shows them, with what was entered and the problems.
    pub fn fields(&self, entered: &Entered, problems: &Problems) -> Vec<Field> {
        self.props
            .iter()
            .filter(|p| !matches!(p.kind, Kind::Fixed(_)))
            .map(|p| field(p, &p.name, entered, problems))
            .collect()
    }

    /// The label of a field named by a JSON pointer into the input (`/recommendations/0/id`),
    /// and the form field it is.
    pub fn locate(&self, pointer: &str) -> Option<(String, String)> {
        let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
        let prop = self.props.iter().find(|p| p.name == parts[0])?;
        match (&prop.kind, parts.as_slice()) {
            (Kind::Rows { fields, .. }, [_, index, sub, ..]) => {
                let f = fields.iter().find(|f| f.name == *sub)?;
                let row = index.parse::<usize>().ok()? + 1;
                Some((
                    format!("“{}” (dòng {row} của “{}”)", f.label, prop.label),
                    format!("{}.{index}.{sub}", prop.name),
                ))
            }
            _ => Some((format!("“{}”", prop.label), prop.name.clone())),
        }
    }
}

fn figure_name(prop: &str, year: i64, field: &str, part: &str) -> String {
    format!("{prop}-{year}-{field}-{part}")
}

/// A pair of Phụ lục 03 figures: both blank (nothing), or two non-negative integers with the
/// on-time count at most the total.
fn figure(total: &str, on_time: &str) -> Result<Option<(u64, u64)>, String> {
    if total.is_empty() && on_time.is_empty() {
        return Ok(None);
    }
    if total.is_empty() || on_time.is_empty() {
        return Err("nhập cả tổng số và số giải quyết đúng hạn.".to_owned());
    }
    let parse = |t: &str, what: &str| {
        t.replace(['.', ' '], "")
            .parse::<u64>()
            .map_err(|_| format!("{what} phải là số nguyên không âm."))
    };
    let t = parse(total, "tổng số")?;
    let o = parse(on_time, "số giải quyết đúng hạn")?;
    if o > t {
        return Err(format!(
            "số giải quyết đúng hạn ({o}) không được lớn hơn tổng số ({t})."
        ));
    }
    Ok(Some((t, o)))
}

fn kind_of(name: &str, schema: &Value, command: &Command, ctx: &FormContext<'_>) -> Kind {
    if let Some(values) = schema.get("enum").and_then(Value::as_array) {
        let collection = command.target.as_ref().map(|t| t.collection.value.as_str());
        let choices = values
            .iter()
            .map(|v| {
                let value = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                let label = collection
                    .map(|c| view::state_label(ctx.workflow, c, &value))
                    .filter(|l| *l != value)
                    .unwrap_or_else(|| view::choice_label(name, &value));
                (value, label)
            })
            .collect();
        return Kind::Choice(choices);
    }
    match schema_type(schema) {
        Some("string") => match schema.get("format").and_then(Value::as_str) {
            Some("date") => Kind::Date,
            Some("date-time") => Kind::DateTime,
            _ if is_time_pattern(schema) => Kind::Time,
            _ if name == "file" => Kind::File,
            _ if LONG_TEXTS.contains(&name) => Kind::LongText,
            _ => Kind::Text,
        },
        Some("integer") => Kind::Integer {
            minimum: schema.get("minimum").and_then(Value::as_i64),
        },
        Some("number") => Kind::Number,
        Some("array") => {
            let items = schema.get("items").unwrap_or(&Value::Null);
            match schema_type(items) {
                Some("string") => Kind::Lines,
                Some("object") if is_figures(items) => Kind::Figures {
                    years: figure_years(ctx),
                    fields: figure_fields(items, ctx),
                },
                Some("object") => {
                    let required: Vec<&str> = items
                        .get("required")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(Value::as_str)
                        .collect();
                    let properties = items
                        .get("properties")
                        .and_then(Value::as_object)
                        .cloned()
                        .unwrap_or_default();
                    let mut names: Vec<String> = required
                        .iter()
                        .filter(|r| properties.contains_key(**r))
                        .map(|r| (*r).to_owned())
                        .collect();
                    for k in properties.keys() {
                        if !names.contains(k) {
                            names.push(k.clone());
                        }
                    }
                    let fields = names
                        .into_iter()
                        .map(|n| {
                            let s = &properties[&n];
                            let kind = match kind_of(&n, s, command, ctx) {
                                // Rows do not nest; a nested list is typed as JSON.
                                Kind::Rows { .. } | Kind::Figures { .. } | Kind::File => Kind::Json,
                                Kind::LongText => Kind::Text,
                                k => k,
                            };
                            Prop {
                                label: view::field_label(&n, s),
                                required: required.contains(&n.as_str()),
                                name: n,
                                kind,
                                default: None,
                            }
                        })
                        .collect();
                    Kind::Rows {
                        fields,
                        min_items: schema.get("minItems").and_then(Value::as_u64).unwrap_or(0)
                            as usize,
                    }
                }
                _ => Kind::Json,
            }
        }
        _ => Kind::Json,
    }
}

fn parse_date(text: &str) -> Option<NaiveDate> {
    NaiveDate::parse_from_str(text, "%Y-%m-%d")
        .or_else(|_| NaiveDate::parse_from_str(text, "%d/%m/%Y"))
        .ok()
}

fn parse_date_time(text: &str, tz: Tz) -> Option<DateTime<FixedOffset>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Some(at);
    }
    let text = text.replace(' ', "T");
    let naive = ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%d/%m/%YT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(&text, f).ok())?;
    Some(giamsat_engine::local(tz, naive))
}

/// One entered value as the input's JSON: `Ok(None)` for a blank optional field.
fn convert(p: &Prop, raw: &str, ctx: &FormContext<'_>) -> Result<Option<Value>, String> {
    if raw.is_empty() {
        if p.required && !matches!(p.kind, Kind::Lines) {
            return Err(format!("Vui lòng nhập “{}”.", p.label));
        }
        if !matches!(p.kind, Kind::Lines) {
            return Ok(None);
        }
    }
    let label = &p.label;
    match &p.kind {
        Kind::Text | Kind::LongText => Ok(Some(json!(raw.replace("\r\n", "\n")))),
        Kind::Date => parse_date(raw)
            .map(|d| Some(json!(d.format("%Y-%m-%d").to_string())))
            .ok_or_else(|| format!("“{label}” phải là một ngày (ngày/tháng/năm).")),
        Kind::DateTime => parse_date_time(raw, ctx.tz)
            .map(|at| Some(json!(at.to_rfc3339())))
            .ok_or_else(|| format!("“{label}” phải là ngày và giờ (ví dụ 18/4/2024 09:00).")),
        Kind::Time => NaiveTime::parse_from_str(raw, "%H:%M")
            .or_else(|_| NaiveTime::parse_from_str(raw, "%H:%M:%S"))
            .map(|t| Some(json!(t.format("%H:%M").to_string())))
            .map_err(|_| format!("“{label}” phải là giờ dạng 08:00.")),
        Kind::Integer { minimum } => {
            let n: i64 = raw
                .parse()
                .map_err(|_| format!("“{label}” phải là số nguyên."))?;
            if let Some(min) = minimum
                && n < *min
            {
                return Err(format!("“{label}” không được nhỏ hơn {min}."));
            }
            Ok(Some(json!(n)))
        }
        Kind::Number => raw
            .replace(',', ".")
            .parse::<f64>()
            .ok()
            .and_then(|n| serde_json::Number::from_f64(n).map(Value::Number))
            .map(Some)
            .ok_or_else(|| format!("“{label}” phải là một số.")),
        Kind::Choice(choices) => choices
            .iter()
            .find(|(v, _)| v == raw)
            .map(|(v, _)| Some(json!(v)))
            .ok_or_else(|| format!("“{label}”: lựa chọn không hợp lệ.")),
        Kind::Lines => {
            let lines: Vec<Value> = raw
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(|l| json!(l))
                .collect();
            if lines.is_empty() {
                if p.required {
                    return Err(format!("Vui lòng nhập “{label}”."));
                }
                return Ok(None);
            }
            Ok(Some(Value::Array(lines)))
        }
        Kind::Json => serde_json::from_str(raw)
            .map(Some)
            .or_else(|_| Ok(Some(json!(raw)))),
        Kind::Fixed(v) => Ok(Some(v.clone())),
        Kind::File | Kind::Rows { .. } | Kind::Figures { .. } => Ok(None),
    }
}

fn html_id(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn field(p: &Prop, name: &str, entered: &Entered, problems: &Problems) -> Field {
    let value = entered.values.get(name).cloned().unwrap_or_default();
    let mut f = Field {
        name: name.to_owned(),
        id: html_id(name),
        label: p.label.clone(),
        control: "input",
        input_type: "text",
        required: p.required,
        options: Vec::new(),
        error: problems.fields.get(name).cloned(),
        hint: None,
        min: None,
        compact: false,
        columns: Vec::new(),
        rows: Vec::new(),
        years: Vec::new(),
        figures: Vec::new(),
        is_input: false,
        is_textarea: false,
        is_select: false,
        is_rows: false,
        is_figures: false,
        is_file: false,
        value,
    };
    match &p.kind {
        Kind::Text | Kind::Json | Kind::Fixed(_) => {}
        Kind::LongText | Kind::Lines => f.control = "textarea",
        Kind::Date => f.input_type = "date",
        Kind::DateTime => f.input_type = "datetime-local",
        Kind::Time => f.input_type = "time",
        Kind::Integer { minimum } => {
            f.input_type = "number";
            f.min = minimum.map(|m| m.to_string());
        }
        Kind::Number => f.input_type = "text",
        Kind::Choice(choices) => {
            f.control = "select";
            f.options = choices
                .iter()
                .map(|(v, l)| Choice {
                    selected: *v == f.value,
                    value: v.clone(),
                    label: l.clone(),
                })
                .collect();
        }
        Kind::File => {
            f.control = "file";
            f.input_type = "file";
        }
        Kind::Rows { fields, .. } => {
            f.control = "rows";
            f.columns = fields.iter().map(|c| c.label.clone()).collect();
            let rows = entered.rows.get(&p.name).copied().unwrap_or(DEFAULT_ROWS);
            f.rows = (0..rows)
                .map(|i| Row {
                    number: i + 1,
                    fields: fields
                        .iter()
                        .map(|c| {
                            let mut sub =
                                field(c, &format!("{name}.{i}.{}", c.name), entered, problems);
                            // A row is optional as a whole; its fields are checked when it is
                            // filled in.
                            sub.required = false;
                            sub.compact = true;
                            sub
                        })
                        .collect(),
                })
                .collect();
        }
        Kind::Figures { years, fields } => {
            f.control = "figures";
            f.years = years.clone();
            f.figures = fields
                .iter()
                .map(|(field, label)| FigureRow {
                    label: label.clone(),
                    cells: years
                        .iter()
                        .map(|year| {
                            let total_name = figure_name(name, *year, field, "total");
                            let on_time_name = figure_name(name, *year, field, "on_time");
                            let total =
                                entered.values.get(&total_name).cloned().unwrap_or_default();
                            let on_time = entered
                                .values
                                .get(&on_time_name)
                                .cloned()
                                .unwrap_or_default();
                            let rate = match figure(total.trim(), on_time.trim()) {
                                Ok(Some((t, o))) => view::rate_text(o, t).unwrap_or_default(),
                                _ => String::new(),
                            };
                            FigureCell {
                                year: *year,
                                error: problems.fields.get(&total_name).cloned(),
                                rate_id: figure_name(name, *year, field, "rate"),
                                total_name,
                                total,
                                on_time_name,
                                on_time,
                                rate,
                            }
                        })
                        .collect(),
                })
                .collect();
        }
    }
    f.is_input = f.control == "input";
    f.is_textarea = f.control == "textarea";
    f.is_select = f.control == "select";
    f.is_rows = f.control == "rows";
    f.is_figures = f.control == "figures";
    f.is_file = f.control == "file";
    if matches!(p.kind, Kind::Lines) {
        f.hint = Some("Mỗi dòng một mục.".to_owned());
    }
    if matches!(p.kind, Kind::Json) {
        f.hint = Some("Nhập theo dạng JSON.".to_owned());
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_bodies_decode_utf8_plus_and_percent() {
        let pairs = parse_urlencoded(b"a=1&ten=Tr%E1%BA%A7n+B%C3%ACnh&x=%&y");
        assert_eq!(
            pairs,
            vec![
                ("a".to_owned(), "1".to_owned()),
                ("ten".to_owned(), "Trần Bình".to_owned()),
                ("x".to_owned(), "%".to_owned()),
                ("y".to_owned(), String::new()),
            ]
        );
    }

    #[test]
    fn multipart_bodies_give_fields_and_files() {
        let body = b"--XyZ\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\nabc\r\n\
--XyZ\r\nContent-Disposition: form-data; name=\"tep\"; filename=\"C:\\\\bao cao; 1.pdf\"\r\n\
Content-Type: application/pdf\r\n\r\n%PDF\r\n--X\r\n--XyZ--\r\n";
        let form = parse_multipart(body, "XyZ").expect("a form");
        assert_eq!(form.get("csrf"), Some("abc"));
        let file = form.file("tep").expect("a file");
        assert_eq!(file.filename, "bao cao; 1.pdf");
        assert_eq!(&file.bytes[..], b"%PDF\r\n--X");
        assert!(parse_multipart(b"--XyZ\r\nbroken", "XyZ").is_err());
    }

    #[test]
    fn figures_are_whole_non_negative_and_on_time_at_most_total() {
        assert_eq!(figure("", ""), Ok(None));
        assert_eq!(figure("120", "118"), Ok(Some((120, 118))));
        assert_eq!(figure("1.200", "1.180"), Ok(Some((1200, 1180))));
        assert!(figure("10", "").is_err());
        assert!(figure("-1", "0").is_err());
        assert!(figure("2,5", "1").is_err());
        assert!(
            figure("10", "11")
                .unwrap_err()
                .contains("không được lớn hơn")
        );
    }
}
