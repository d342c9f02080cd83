//! The documents exporter: renders the documents a workflow declares when their events are
//! committed, writes each in every configured format to `<output>/<case>/`, and records a
//! `DocumentGenerated` event (with each file's SHA-256) in the case's document stream
//! `documents/<case>`.
//!
//! What it handles:
//! - a case event whose type a document declares in `on`: the draft (version 1, "Số:    /TB-ĐGS");
//! - `DocumentRegistered` in a register series (`register/...`, see [`crate::register`]): the
//!   same document rendered again with its number;
//! - `DocumentCorrectionRequested` in `documents/<case>`: the next version, a draft again.
//!
//! A document renders the case as it was at its source event (the case folded up to that event)
//! with the templates the case is pinned to, so rendering again gives the same bytes. An issued
//! (numbered) file is never overwritten: if rendering again would change it, the event is parked
//! with an error that says to request a correction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, FixedOffset};
use giamsat_cases::{CaseError, Definitions, load_case_until};
use giamsat_engine::{AppliedEffect, CaseEventData, CaseState, DocumentDecl, Workflow, vn};
use giamsat_exporter::{ExportError, Exporter, Filter, Outcome};
use giamsat_store::{Direction, Store};
use giamsat_types::{NewEvent, RecordedEvent, StreamId};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::markup::{self, Document};
use crate::{Templates, docx, html};

/// Event type of a rendered document.
pub const GENERATED_EVENT: &str = "DocumentGenerated";
/// Event type asking for a corrected version of a document.
pub const CORRECTION_EVENT: &str = "DocumentCorrectionRequested";
/// Event type of a number taken in a register series.
pub const REGISTERED_EVENT: &str = "DocumentRegistered";

/// The output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Html,
    Md,
    Docx,
}

impl OutputFormat {
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Html => "html",
            OutputFormat::Md => "md",
            OutputFormat::Docx => "docx",
        }
    }
}

fn all_formats() -> Vec<OutputFormat> {
    vec![OutputFormat::Html, OutputFormat::Md, OutputFormat::Docx]
}

/// `[[exporters]]` keys of `type = "documents"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DocumentsConfig {
    /// Where the documents go, one folder per case.
    pub output: PathBuf,
    #[serde(default = "all_formats")]
    pub formats: Vec<OutputFormat>,
}

/// The stream of a case's document records.
pub fn documents_stream(case: &str) -> Result<StreamId, String> {
    StreamId::new(format!("documents/{case}")).map_err(|e| e.to_string())
}

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub format: OutputFormat,
    /// Relative to the output folder: `<case>/<name>`.
    pub path: String,
    pub sha256: String,
    pub bytes: u64,
}

/// Where a document came from: the case event it renders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub event_id: Uuid,
    pub event_type: String,
    pub position: u64,
    pub stream_version: u64,
}

/// The data of a `DocumentGenerated` event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    pub case: String,
    pub document: String,
    pub kind: String,
    pub label: String,
    pub type_code: String,
    pub version: u32,
    pub number: Option<u32>,
    pub symbol: Option<String>,
    pub date: String,
    pub secret: bool,
    /// The issuing body ("HĐND HUYỆN TUẦN GIÁO / ĐOÀN GIÁM SÁT") and its code ("ĐGS").
    pub issuer: String,
    pub issuer_code: String,
    /// The register fields the template declared (`::: meta`): type name, excerpt, signer...
    #[serde(default)]
    pub meta: BTreeMap<String, String>,
    pub source: Source,
    /// The case's stream version the document renders (the source event, or later for a
    /// correction).
    pub case_version: u64,
    pub files: Vec<FileRecord>,
}

/// One rendered file, in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub format: OutputFormat,
    /// `<document>.<du-thao|so-NN-...>.v<N>.<ext>`.
    pub name: String,
    pub bytes: Vec<u8>,
}

struct Produced {
    meta: BTreeMap<String, String>,
    files: Vec<RenderedFile>,
}

/// A document rendered in memory for another exporter (an e-mail attachment): the same bytes the
/// documents exporter writes for the draft of that event.
#[derive(Debug, Clone)]
pub struct RenderedDocument {
    pub document: String,
    pub kind: String,
    pub label: String,
    pub date: String,
    /// The `::: meta` fields (type name, excerpt, signer...).
    pub meta: BTreeMap<String, String>,
    pub files: Vec<RenderedFile>,
}

/// A case event seen as templates see it: the case folded up to the event, its pinned
/// definition, and the template context without the `document` part.
#[derive(Debug, Clone)]
pub struct EventView {
    pub workflow: Workflow,
    pub state: CaseState,
    pub data: CaseEventData,
    pub context: Value,
}

/// The exporter.
pub struct DocumentsExporter {
    config: DocumentsConfig,
    store: Store,
    definitions: Definitions,
    /// Case id → the document event types of its definition (saves folding a case for events
    /// that make no document).
    triggers: Mutex<BTreeMap<String, Vec<String>>>,
}

impl std::fmt::Debug for DocumentsExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DocumentsExporter")
            .field("config", &self.config)
            .finish()
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

/// What to render: one version of one document.
struct Job<'a> {
    state: &'a CaseState,
    workflow: &'a Workflow,
    decl: &'a DocumentDecl,
    event: &'a RecordedEvent,
    data: &'a CaseEventData,
    document: String,
    version: u32,
    number: Option<u32>,
}

impl DocumentsExporter {
    /// Builds the exporter from its configuration table; an unknown or missing key is an error
    /// that names it.
    pub fn from_config(table: Value, store: Store) -> Result<DocumentsExporter, String> {
        let config: DocumentsConfig = serde_json::from_value(table).map_err(|e| e.to_string())?;
        if config.formats.is_empty() {
            return Err("formats: give at least one of \"html\", \"md\", \"docx\"".to_owned());
        }
        Ok(DocumentsExporter {
            config,
            store,
            definitions: Definitions::new(),
            triggers: Mutex::new(BTreeMap::new()),
        })
    }

    /// A renderer for other exporters: renders in memory, in `formats`, and writes nothing.
    pub fn renderer(store: Store, formats: Vec<OutputFormat>) -> DocumentsExporter {
        DocumentsExporter {
            config: DocumentsConfig {
                output: PathBuf::new(),
                formats,
            },
            store,
            definitions: Definitions::new(),
            triggers: Mutex::new(BTreeMap::new()),
        }
    }

    /// A case event as templates see it (`None` for an event outside `case/...`).
    pub async fn view(&self, event: &RecordedEvent) -> Result<Option<EventView>, ExportError> {
        let Some(case) = event.stream_id.strip_prefix("case/") else {
            return Ok(None);
        };
        let (loaded, workflow) = self.case_at(case, event.stream_version).await?;
        let data: CaseEventData = serde_json::from_str(&event.data).map_err(permanent)?;
        let context = base_context(&loaded.state, &workflow, event, &data);
        Ok(Some(EventView {
            workflow,
            state: loaded.state,
            data,
            context: Value::Object(context),
        }))
    }

    /// Renders, in memory, the draft of the document of `kind` that a case event produces
    /// (`None` when the event produces no document of that kind).
    pub async fn render_in_memory(
        &self,
        event: &RecordedEvent,
        kind: &str,
    ) -> Result<Option<RenderedDocument>, ExportError> {
        let Some(case) = event.stream_id.strip_prefix("case/") else {
            return Ok(None);
        };
        let (loaded, workflow) = self.case_at(case, event.stream_version).await?;
        let Some(decl) = workflow
            .definition
            .documents
            .iter()
            .find(|d| d.id.value == kind && d.on.iter().any(|e| e.value == event.event_type))
        else {
            return Ok(None);
        };
        let data: CaseEventData = serde_json::from_str(&event.data).map_err(permanent)?;
        let document = document_id(decl, &data, &loaded.events, event)?;
        let job = Job {
            state: &loaded.state,
            workflow: &workflow,
            decl,
            event,
            data: &data,
            document: document.clone(),
            version: 1,
            number: None,
        };
        let produced = self.produce(&job)?;
        Ok(Some(RenderedDocument {
            document,
            kind: kind.to_owned(),
            label: decl.label.clone(),
            date: document_date(&job),
            meta: produced.meta,
            files: produced.files,
        }))
    }

    fn lock_triggers(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<String>>> {
        self.triggers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn case_at(
        &self,
        case: &str,
        version: u64,
    ) -> Result<(giamsat_cases::LoadedCase, Workflow), ExportError> {
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

    async fn on_case_event(&self, event: &RecordedEvent) -> Result<Vec<Outcome>, ExportError> {
        let Some(case) = event.stream_id.strip_prefix("case/") else {
            return Ok(Vec::new());
        };
        let known = self.lock_triggers().get(case).cloned();
        if let Some(types) = &known
            && !types.contains(&event.event_type)
        {
            return Ok(Vec::new());
        }
        let (loaded, workflow) = self.case_at(case, event.stream_version).await?;
        let types: Vec<String> = workflow
            .definition
            .documents
            .iter()
            .flat_map(|d| d.on.iter().map(|e| e.value.clone()))
            .collect();
        self.lock_triggers().insert(case.to_owned(), types);
        let decls: Vec<&DocumentDecl> = workflow
            .definition
            .documents
            .iter()
            .filter(|d| d.on.iter().any(|e| e.value == event.event_type))
            .collect();
        if decls.is_empty() {
            return Ok(Vec::new());
        }
        let data: CaseEventData = serde_json::from_str(&event.data).map_err(permanent)?;
        let records = self.records(case).await?;
        let mut outcomes = Vec::new();
        for decl in decls {
            let document = document_id(decl, &data, &loaded.events, event)?;
            // Already rendered from another event (a document named twice): leave it.
            if records.iter().any(|r| {
                r.document == document && r.version == 1 && r.source.event_id != event.event_id
            }) {
                tracing::warn!(
                    case,
                    document,
                    "document already exists; not rendered again"
                );
                continue;
            }
            let job = Job {
                state: &loaded.state,
                workflow: &workflow,
                decl,
                event,
                data: &data,
                document,
                version: 1,
                number: None,
            };
            outcomes.push(self.render(&job)?);
        }
        Ok(outcomes)
    }

    /// Renders the version a record names again, with a number or as a new version.
    async fn rerender(
        &self,
        case: &str,
        base: &Generated,
        version: u32,
        number: Option<u32>,
        until: u64,
    ) -> Result<Outcome, ExportError> {
        let until = until.max(base.source.stream_version);
        let (loaded, workflow) = self.case_at(case, until).await?;
        let event = loaded
            .events
            .iter()
            .find(|e| e.event_id == base.source.event_id)
            .ok_or_else(|| {
                permanent(format!(
                    "the source event {} of document {} is not in case {case}",
                    base.source.event_id, base.document
                ))
            })?;
        let decl = workflow
            .definition
            .documents
            .iter()
            .find(|d| d.id.value == base.kind)
            .ok_or_else(|| {
                permanent(format!(
                    "the definition of case {case} no longer declares document kind {:?}",
                    base.kind
                ))
            })?;
        let data: CaseEventData = serde_json::from_str(&event.data).map_err(permanent)?;
        let job = Job {
            state: &loaded.state,
            workflow: &workflow,
            decl,
            event,
            data: &data,
            document: base.document.clone(),
            version,
            number,
        };
        self.render(&job)
    }

    /// The case's `DocumentGenerated` records, in order.
    async fn records(&self, case: &str) -> Result<Vec<Generated>, ExportError> {
        read_records(&self.store, case).await.map_err(|e| match e {
            RecordsError::Store(s) => ExportError::Retryable(s),
            RecordsError::Bad(s) => ExportError::Permanent(s),
        })
    }

    /// Whether a recorded file is on disk with the content it was recorded with.
    fn intact(&self, file: &FileRecord) -> bool {
        std::fs::read(self.config.output.join(&file.path))
            .is_ok_and(|bytes| hex::encode(Sha256::digest(&bytes)) == file.sha256)
    }

    /// Renders a job in every configured format, in memory.
    fn produce(&self, job: &Job<'_>) -> Result<Produced, ExportError> {
        let context = context(job);
        let mut templates = Templates::new();
        let files = &job.workflow.bundle.files;
        for p in &job.workflow.definition.partials {
            let text = files
                .get(p)
                .ok_or_else(|| permanent(format!("partial {p:?} is not in the definition")))?;
            let name = Path::new(p)
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or(p);
            templates.add_partial(name, text).map_err(|e| {
                permanent(format!(
                    "{}/{}",
                    job.workflow.name(),
                    e.to_string().replacen(name, p, 1)
                ))
            })?;
        }
        let template = &job.decl.template;
        let text = files
            .get(template)
            .ok_or_else(|| permanent(format!("template {template:?} is not in the definition")))?;
        let located = |e: crate::TemplateError| permanent(format!("{}/{e}", job.workflow.name()));
        templates.add(template, text).map_err(located)?;
        let rendered = templates.render(template, &context).map_err(located)?;
        let doc = markup::parse(&rendered).map_err(|e| {
            permanent(format!(
                "{}/{template}: the rendered markup, {e}",
                job.workflow.name()
            ))
        })?;
        let title = format!("{} {}", job.decl.label, job.document);
        let number_part = match job.number {
            Some(n) => format!("so-{}", ascii_slug(&symbol(job, n))),
            None => "du-thao".to_owned(),
        };
        let stem = format!("{}.{number_part}.v{}", job.document, job.version);
        let mut out = Vec::new();
        for format in &self.config.formats {
            let bytes = encode(*format, &doc, &title, job)?;
            out.push(RenderedFile {
                format: *format,
                name: format!("{stem}.{}", format.extension()),
                bytes,
            });
        }
        Ok(Produced {
            meta: doc.meta,
            files: out,
        })
    }

    fn render(&self, job: &Job<'_>) -> Result<Outcome, ExportError> {
        let case = job.state.id.as_str();
        let produced = self.produce(job)?;
        let mut records = Vec::new();
        for file in &produced.files {
            let relative = format!("{case}/{}", file.name);
            let path = self.config.output.join(&relative);
            write_file(&path, &file.bytes, job.number.is_some())?;
            records.push(FileRecord {
                format: file.format,
                path: relative,
                sha256: hex::encode(Sha256::digest(&file.bytes)),
                bytes: file.bytes.len() as u64,
            });
        }
        let generated = Generated {
            case: case.to_owned(),
            document: job.document.clone(),
            kind: job.decl.id.value.clone(),
            label: job.decl.label.clone(),
            type_code: job.decl.type_code.clone(),
            version: job.version,
            number: job.number,
            symbol: job.number.map(|n| symbol(job, n)),
            date: document_date(job),
            secret: job.decl.secret,
            issuer: issuer_name(job.state),
            issuer_code: issuer_code(job.state),
            meta: produced.meta,
            source: Source {
                event_id: job.event.event_id,
                event_type: job.event.event_type.clone(),
                position: job.event.position,
                stream_version: job.event.stream_version,
            },
            case_version: job.state.stream_version,
            files: records,
        };
        // The id covers the files' hashes: delivering the event again records nothing new, and
        // a draft rendered differently (new templates or writers) is recorded as what it now is.
        let hashes: Vec<&str> = generated.files.iter().map(|f| f.sha256.as_str()).collect();
        let id = Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!(
                "giamsat:document:{case}/{}/v{}/{}/{}",
                job.document,
                job.version,
                job.number.map_or("draft".to_owned(), |n| n.to_string()),
                hashes.join(",")
            )
            .as_bytes(),
        );
        let value = serde_json::to_value(&generated).map_err(permanent)?;
        Ok(Outcome {
            stream: documents_stream(case).map_err(permanent)?,
            event: NewEvent::new(GENERATED_EVENT, &value).with_id(id),
        })
    }
}

fn encode(
    format: OutputFormat,
    doc: &Document,
    title: &str,
    job: &Job<'_>,
) -> Result<Vec<u8>, ExportError> {
    Ok(match format {
        OutputFormat::Md => markup::to_markdown(doc).into_bytes(),
        OutputFormat::Html => html::to_html(doc, title).into_bytes(),
        OutputFormat::Docx => {
            let meta = docx::DocxMeta {
                title: title.to_owned(),
                subject: doc
                    .meta
                    .get("excerpt")
                    .cloned()
                    .unwrap_or_else(|| job.decl.label.clone()),
                creator: job
                    .state
                    .data
                    .pointer("/issuing_body/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
            };
            docx::to_docx(doc, &meta).map_err(permanent)?
        }
    })
}

/// Writes a file atomically. An issued (numbered) file that exists with other content is never
/// replaced.
fn write_file(path: &Path, bytes: &[u8], issued: bool) -> Result<(), ExportError> {
    let io = |e: std::io::Error| ExportError::Retryable(format!("{}: {e}", path.display()));
    if let Ok(existing) = std::fs::read(path) {
        if existing == bytes {
            return Ok(());
        }
        if issued {
            return Err(ExportError::Permanent(format!(
                "{}: the issued document would change on rendering again; an issued document is \
                 never overwritten (request a correction: giamsat documents correct)",
                path.display()
            )));
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let tmp = path.with_extension(format!(
        "{}.tmp",
        path.extension().and_then(|e| e.to_str()).unwrap_or("")
    ));
    {
        use std::io::Write as _;
        let mut file = std::fs::File::create(&tmp).map_err(io)?;
        file.write_all(bytes).map_err(io)?;
        file.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// `12/TB-ĐGS`: number, type code and issuer code (a công văn has no type code).
fn symbol(job: &Job<'_>, number: u32) -> String {
    let issuer = issuer_code(job.state);
    vn::number_line(Some(number), Some(&job.decl.type_code), &issuer)
        .trim_start_matches("Số: ")
        .to_owned()
}

fn issuer_name(state: &CaseState) -> String {
    let part = |p: &str| {
        state
            .data
            .pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let (parent, name) = (part("/issuing_body/parent"), part("/issuing_body/name"));
    match (parent.is_empty(), name.is_empty()) {
        (false, false) => format!("{parent} / {name}"),
        (true, _) => name,
        (_, true) => parent,
    }
}

fn issuer_code(state: &CaseState) -> String {
    state
        .data
        .pointer("/issuing_body/code")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// File-name form of a symbol: `12/TB-ĐGS` → `12-TB-DGS`.
pub fn ascii_slug(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let c = match c {
            'Đ' => 'D',
            'đ' => 'd',
            c if c.is_ascii_alphanumeric() => c,
            _ => {
                let folded = fold(c);
                if folded.is_ascii_alphanumeric() {
                    folded
                } else {
                    '-'
                }
            }
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end_matches('-').to_owned()
}

/// A Vietnamese letter without its marks (for file names only).
fn fold(c: char) -> char {
    const GROUPS: &[(&str, char)] = &[
        ("àáảãạăằắẳẵặâầấẩẫậ", 'a'),
        ("ÀÁẢÃẠĂẰẮẲẴẶÂẦẤẨẪẬ", 'A'),
        ("èéẻẽẹêềếểễệ", 'e'),
        ("ÈÉẺẼẸÊỀẾỂỄỆ", 'E'),
        ("ìíỉĩị", 'i'),
        ("ÌÍỈĨỊ", 'I'),
        ("òóỏõọôồốổỗộơờớởỡợ", 'o'),
        ("ÒÓỎÕỌÔỒỐỔỖỘƠỜỚỞỠỢ", 'O'),
        ("ùúủũụưừứửữự", 'u'),
        ("ÙÚỦŨỤƯỪỨỬỮỰ", 'U'),
        ("ỳýỷỹỵ", 'y'),
        ("ỲÝỶỸỴ", 'Y'),
    ];
    GROUPS
        .iter()
        .find(|(set, _)| set.contains(c))
        .map_or(c, |(_, base)| *base)
}

/// The document's date: the input field the declaration names (`date`), else the input's
/// `issued_on`, else the event's local date.
fn document_date(job: &Job<'_>) -> String {
    let pointer = job
        .decl
        .date
        .as_deref()
        .map_or("/issued_on", |p| p.trim_start_matches("/input"));
    job.data
        .input
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|t| t.get(..10))
        .map(str::to_owned)
        .unwrap_or_else(|| local_at(job).format("%Y-%m-%d").to_string())
}

fn local_at(job: &Job<'_>) -> DateTime<FixedOffset> {
    local_at_of(job.workflow, job.data, job.event)
}

/// When the event happened (its command's time), in the workflow's time zone.
fn local_at_of(
    workflow: &Workflow,
    data: &CaseEventData,
    event: &RecordedEvent,
) -> DateTime<FixedOffset> {
    let tz = giamsat_engine::zone(workflow);
    DateTime::parse_from_rfc3339(&data.at)
        .map(|t| t.with_timezone(&tz).fixed_offset())
        .unwrap_or_else(|_| event.recorded_at().with_timezone(&tz).fixed_offset())
}

/// The entity an event acted on: its first entity effect.
fn target_of(data: &CaseEventData) -> Option<(String, String)> {
    data.effects.iter().find_map(|e| match e {
        AppliedEffect::Entity {
            collection, key, ..
        } => Some((collection.clone(), key.clone())),
        _ => None,
    })
}

/// The document's id: from the declared key pointer, else the kind, the target's key, and a
/// sequence number from the second document of the kind for the same target.
fn document_id(
    decl: &DocumentDecl,
    data: &CaseEventData,
    events: &[RecordedEvent],
    event: &RecordedEvent,
) -> Result<String, ExportError> {
    if let Some(key) = &decl.key {
        let pointer = key.trim_start_matches("/input");
        return data
            .input
            .pointer(pointer)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| {
                permanent(format!(
                    "document {:?}: the event's input has no text at {key}",
                    decl.id.value
                ))
            });
    }
    let target = target_of(data);
    let base = match &target {
        Some((_, key)) => format!("{}-{key}", decl.id.value),
        None => decl.id.value.clone(),
    };
    let mut n = 0;
    for e in events
        .iter()
        .filter(|e| e.stream_version <= event.stream_version)
    {
        if !decl.on.iter().any(|o| o.value == e.event_type) {
            continue;
        }
        let Ok(d) = serde_json::from_str::<CaseEventData>(&e.data) else {
            continue;
        };
        if target_of(&d) == target {
            n += 1;
        }
    }
    Ok(if n > 1 { format!("{base}-{n}") } else { base })
}

fn entity_json(
    workflow: &Workflow,
    collection: &str,
    key: &str,
    e: &giamsat_engine::Entity,
) -> Value {
    let mut object = match &e.data {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    object.insert("key".to_owned(), json!(key));
    object.insert("collection".to_owned(), json!(collection));
    object.insert("state".to_owned(), json!(e.state));
    object.insert(
        "state_label".to_owned(),
        json!(state_label(workflow, collection, &e.state)),
    );
    object.insert("updated_at".to_owned(), json!(e.updated_at));
    Value::Object(object)
}

fn state_label(workflow: &Workflow, collection: &str, state: &str) -> String {
    workflow
        .definition
        .entities
        .iter()
        .find(|e| e.id.value == collection)
        .and_then(|e| e.states.iter().find(|s| s.id.value == state))
        .map_or_else(|| state.to_owned(), |s| s.label.clone())
}

/// The template context of a case event without the `document` part (its contract is in the
/// workflow's templates README): also what notification templates see.
pub fn base_context(
    state: &CaseState,
    workflow: &Workflow,
    event: &RecordedEvent,
    data: &CaseEventData,
) -> Map<String, Value> {
    let mut entities = Map::new();
    let mut lists = Map::new();
    for (collection, items) in &state.entities {
        let mut by_key = Map::new();
        for (key, e) in items {
            by_key.insert(key.clone(), entity_json(workflow, collection, key, e));
        }
        // Start-data order where the start data lists the collection (units, visits).
        let order: Vec<String> = state
            .data
            .get(collection)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|item| {
                        item.get("code")
                            .or_else(|| item.get("unit"))
                            .or_else(|| item.get("id"))
                            .and_then(Value::as_str)
                            .map(str::to_owned)
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut list: Vec<Value> = order
            .iter()
            .filter_map(|k| by_key.get(k).cloned())
            .collect();
        for (k, v) in &by_key {
            if !order.contains(k) {
                list.push(v.clone());
            }
        }
        if collection == "visits" {
            // The schedule in date order (a rescheduled visit moves).
            let mut by_date = list.clone();
            by_date.sort_by_key(|v| {
                (
                    v["date"].as_str().unwrap_or_default().to_owned(),
                    v["start_time"].as_str().unwrap_or_default().to_owned(),
                )
            });
            lists.insert("visits_by_date".to_owned(), Value::Array(by_date));
        }
        lists.insert(collection.clone(), Value::Array(list));
        entities.insert(collection.clone(), Value::Object(by_key));
    }
    let target = target_of(data).and_then(|(collection, key)| {
        state
            .entity(&collection, &key)
            .map(|e| entity_json(workflow, &collection, &key, e))
    });
    let unit_code = target.as_ref().and_then(|t| {
        if t["collection"] == "units" {
            t["key"].as_str().map(str::to_owned)
        } else {
            t.get("unit").and_then(Value::as_str).map(str::to_owned)
        }
    });
    let target_unit = unit_code
        .and_then(|code| {
            state
                .data
                .get("units")
                .and_then(Value::as_array)
                .and_then(|units| units.iter().find(|u| u["code"] == code.as_str()).cloned())
        })
        .unwrap_or(Value::Null);
    let at = local_at_of(workflow, data, event);
    let label = workflow
        .definition
        .events
        .iter()
        .find(|e| e.event_type.value == event.event_type)
        .map_or("", |e| e.label.as_str());
    let mut parameters = Map::new();
    for p in &workflow.definition.parameters {
        if let Some(v) = workflow.parameter(&p.id.value, &state.data) {
            parameters.insert(p.id.value.clone(), v);
        }
    }
    let context = json!({
        "case": {"id": state.id, "workflow": state.workflow, "stage": state.stage},
        "data": state.data,
        "entities": entities,
        "lists": lists,
        "event": {
            "type": event.event_type,
            "label": label,
            "id": event.event_id,
            "position": event.position,
            "at": at.to_rfc3339(),
            "date": at.format("%Y-%m-%d").to_string(),
            "time": at.format("%H:%M").to_string(),
            "input": data.input,
            "actor": {"id": data.actor.id, "role": data.actor.role},
        },
        "target": target.unwrap_or(Value::Null),
        "target_unit": target_unit,
        "parameters": parameters,
    });
    match context {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// The template context of a document.
fn context(job: &Job<'_>) -> Value {
    let mut context = base_context(job.state, job.workflow, job.event, job.data);
    let type_code = (!job.decl.type_code.is_empty()).then_some(job.decl.type_code.as_str());
    let issuer = issuer_code(job.state);
    context.insert(
        "document".to_owned(),
        json!({
            "id": job.document,
            "kind": job.decl.id.value,
            "label": job.decl.label,
            "type_code": job.decl.type_code,
            "number": job.number,
            "symbol": job.number.map(|n| symbol(job, n)),
            "number_line": vn::number_line(job.number, type_code, &issuer),
            "version": job.version,
            "date": document_date(job),
            "draft": job.number.is_none(),
        }),
    );
    Value::Object(context)
}

/// Why the document records could not be read.
#[derive(Debug)]
pub enum RecordsError {
    Store(String),
    Bad(String),
}

impl std::fmt::Display for RecordsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RecordsError::Store(s) | RecordsError::Bad(s) => f.write_str(s),
        }
    }
}

/// A case's `DocumentGenerated` records, in the order they were recorded.
pub async fn read_records(store: &Store, case: &str) -> Result<Vec<Generated>, RecordsError> {
    let stream = documents_stream(case).map_err(RecordsError::Bad)?;
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let page = store
            .read_stream(&stream, Direction::Forward, Some(from), 1000)
            .await
            .map_err(|e| RecordsError::Store(e.to_string()))?;
        let done = page.len() < 1000;
        from += page.len() as u64;
        for e in page.iter().filter(|e| e.event_type == GENERATED_EVENT) {
            let g: Generated = serde_json::from_str(&e.data).map_err(|err| {
                RecordsError::Bad(format!("{stream} event {}: {err}", e.stream_version))
            })?;
            out.push(g);
        }
        if done {
            break;
        }
    }
    Ok(out)
}

#[async_trait]
impl Exporter for DocumentsExporter {
    fn filter(&self) -> Filter {
        Filter {
            event_types: Vec::new(),
            stream_prefixes: vec![
                "case/".to_owned(),
                "register/".to_owned(),
                "documents/".to_owned(),
            ],
        }
    }

    async fn export(&self, event: &RecordedEvent) -> Result<Vec<Outcome>, ExportError> {
        if event.stream_id.starts_with("case/") {
            return self.on_case_event(event).await;
        }
        match event.event_type.as_str() {
            REGISTERED_EVENT => {
                let d = event.data_value();
                let (Some(case), Some(document), Some(version), Some(number)) = (
                    d["case"].as_str(),
                    d["document"].as_str(),
                    d["version"].as_u64(),
                    d["number"].as_u64(),
                ) else {
                    return Err(permanent(format!(
                        "{} in {} lacks case, document, version or number",
                        REGISTERED_EVENT, event.stream_id
                    )));
                };
                let records = self.records(case).await?;
                // The version's latest rendering as a draft: what was signed.
                let base = records
                    .iter()
                    .rev()
                    .find(|r| {
                        r.document == document
                            && u64::from(r.version) == version
                            && r.number.is_none()
                    })
                    .ok_or_else(|| {
                        permanent(format!(
                            "document {document} v{version} of case {case} was never generated"
                        ))
                    })?
                    .clone();
                let number = u32::try_from(number).map_err(permanent)?;
                // Issued and intact on disk: an issued document is never rendered again (a
                // replay after an upgrade leaves it as it was issued).
                let issued = records.iter().rev().find(|r| {
                    r.document == document && r.version == base.version && r.number == Some(number)
                });
                if let Some(issued) = issued
                    && issued.files.iter().all(|f| self.intact(f))
                {
                    return Ok(Vec::new());
                }
                // The numbered document is the draft that was signed: the same case state.
                let until = base.case_version;
                Ok(vec![
                    self.rerender(case, &base, base.version, Some(number), until)
                        .await?,
                ])
            }
            CORRECTION_EVENT => {
                let d = event.data_value();
                let case = event.stream_id.trim_start_matches("documents/");
                let document = d["document"].as_str().unwrap_or_default();
                let version = d["version"].as_u64().unwrap_or_default();
                let records = self.records(case).await?;
                let base = records
                    .iter()
                    .filter(|r| r.document == document)
                    .min_by_key(|r| r.version)
                    .ok_or_else(|| {
                        permanent(format!("document {document} of case {case} does not exist"))
                    })?
                    .clone();
                let version = u32::try_from(version).map_err(permanent)?;
                // A correction renders the case as it is when the correction was asked for.
                let until = d["case_version"].as_u64().unwrap_or(u64::MAX);
                Ok(vec![
                    self.rerender(case, &base, version, None, until).await?,
                ])
            }
            _ => Ok(Vec::new()),
        }
    }
}
