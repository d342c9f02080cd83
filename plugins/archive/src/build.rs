//! Assembling a case's package from the log and the documents output, and writing it into place.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use giamsat_cases::{CaseError, load_case_until};
use giamsat_documents::exporter::{
    FileRecord, GENERATED_EVENT, Generated, RecordsError, documents_stream, read_records,
};
use giamsat_engine::{CaseEventData, CaseState};
use giamsat_store::{Direction, Store};
use giamsat_types::{Hash, RecordedEvent, StreamId};
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use unicode_normalization::UnicodeNormalization as _;

use crate::bag::{Bag, Packing, SealedBag, sync_dir, unsafe_path_reason};
use crate::metadata::{
    CaseMetadata, DigitalFile, DocumentMetadata, FileMetadata, LABELS, METADATA_SCHEMA, Metadata,
    PAGE_COUNT_METHOD, Pages, SignerInfo, docx_pages, html_pages,
};
use crate::{ArchiveError, verify};

/// The event that archives a case (command `archive_case`), with input `archived_on` and
/// `file_code`.
pub const ARCHIVED_EVENT: &str = "CaseArchived";

fn default_output() -> PathBuf {
    PathBuf::from("archive")
}

fn default_documents_output() -> PathBuf {
    PathBuf::from("documents")
}

fn default_documents_exporter() -> String {
    "documents".to_owned()
}

/// `[[exporters]]` keys of `type = "archive"`; `giamsat archive build` reads the same table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ArchiveConfig {
    /// Where packages go (default `archive`).
    #[serde(default = "default_output")]
    pub output: PathBuf,
    /// The documents exporter's `output` folder, where the documents are read from (default
    /// `documents`).
    #[serde(default = "default_documents_output")]
    pub documents_output: PathBuf,
    /// Thời hạn bảo quản (Maintenance): `permanent`, `vĩnh viễn`, or a number of years (`20 năm`,
    /// `20 years`). Required: the period of a supervision file is set by the agency's file list.
    pub retention: String,
    /// Chế độ sử dụng (Rights), e.g. `restricted` or `public`. Required.
    pub access: String,
    /// `Source-Organization` of `bag-info.txt`; default: the case's issuing body.
    #[serde(default)]
    pub source_organization: Option<String>,
    /// `folder` (default), `zip` or `tar`.
    #[serde(default)]
    pub packing: Packing,
    /// The id of the documents exporter whose checkpoint must have passed the archive event
    /// before the package is built (so every document is rendered); `""` to not wait.
    #[serde(default = "default_documents_exporter")]
    pub documents_exporter: String,
}

impl ArchiveConfig {
    /// Reads and checks the configuration table; errors name the key.
    pub fn from_table(table: Value) -> Result<ArchiveConfig, String> {
        let mut config: ArchiveConfig = serde_json::from_value(table).map_err(|e| e.to_string())?;
        config.retention = config.retention.trim().nfc().collect();
        config.access = config.access.trim().nfc().collect();
        if !retention_is_valid(&config.retention) {
            return Err(format!(
                "retention: {:?} is not \"permanent\", \"vĩnh viễn\" or a number of years such as \
                 \"20 năm\" or \"20 years\"",
                config.retention
            ));
        }
        if config.access.is_empty() {
            return Err(
                "access: give the access regime (chế độ sử dụng), e.g. \"restricted\" or \"public\""
                    .to_owned(),
            );
        }
        if config
            .source_organization
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return Err(
                "source-organization: empty; leave the key out to use the case's issuing body"
                    .to_owned(),
            );
        }
        Ok(config)
    }
}

fn retention_is_valid(text: &str) -> bool {
    let lower = text.to_lowercase();
    if lower == "permanent" || lower == "vĩnh viễn" {
        return true;
    }
    let Some((n, unit)) = lower.split_once(' ') else {
        return false;
    };
    n.parse::<u32>().is_ok_and(|n| n > 0) && matches!(unit.trim(), "năm" | "year" | "years")
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub case: String,
    /// The case's stream version the package ends at (the archive event); `None`: the case as
    /// it is now.
    pub until: Option<u64>,
    /// Now, for the Bagging-Date of a case that is not archived (an archived case's package is
    /// dated by its archive event, so building it again gives the same bytes).
    pub now: DateTime<Utc>,
    /// The folder the package goes into.
    pub output: PathBuf,
    pub packing: Packing,
}

/// A package written into place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub path: PathBuf,
    pub packing: Packing,
    /// SHA-256 of the packed file, or of `tagmanifest-sha256.txt` for a folder.
    pub sha256: String,
    /// `package` or `tagmanifest-sha256.txt`.
    pub checksum_of: String,
    pub payload_oxum: String,
    pub bagging_date: NaiveDate,
    pub file_code: Option<String>,
    pub chain_head: Hash,
    pub chain_head_position: u64,
    pub documents: usize,
    pub payload_files: usize,
}

/// A package assembled in memory, not written yet.
#[derive(Debug, Clone)]
pub struct Assembled {
    pub bag: SealedBag,
    pub metadata: Metadata,
    pub bagging_date: NaiveDate,
    pub file_code: Option<String>,
    pub chain_head: Hash,
    pub chain_head_position: u64,
}

/// The folder name of a case's package: `<case>-<file code>` (`<case>-<case>` before the case is
/// archived), NFC, with characters that are unsafe in file names on any system (`/ \ : * ? " < >
/// |` and controls) replaced by `-` and no leading dot.
pub fn package_name(case: &str, file_code: Option<&str>) -> String {
    let raw = format!("{case}-{}", file_code.unwrap_or(case));
    let cleaned: String = raw
        .nfc()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '-',
            c if c.is_control() => '-',
            c => c,
        })
        .collect();
    let cleaned = cleaned.trim_start_matches(['.', ' ']).trim_end().to_owned();
    if cleaned.is_empty() {
        "package".to_owned()
    } else {
        cleaned
    }
}

/// Where a recorded document file goes in the payload: `documents/<name>` for
/// `<case>/<name>` (the documents exporter's layout), `documents/<path>` otherwise.
pub(crate) fn payload_path_of(case: &str, path: &str) -> String {
    let inner = path.strip_prefix(&format!("{case}/")).unwrap_or(path);
    format!("documents/{inner}")
}

fn nfc(text: &str) -> String {
    text.nfc().collect()
}

fn from_case(case: &str, e: CaseError) -> ArchiveError {
    ArchiveError::Case {
        case: case.to_owned(),
        retryable: matches!(e, CaseError::Store(_)),
        message: e.to_string(),
    }
}

async fn read_stream_all(
    store: &Store,
    case: &str,
    stream: &StreamId,
) -> Result<Vec<RecordedEvent>, ArchiveError> {
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let page = store
            .read_stream(stream, Direction::Forward, Some(from), 1000)
            .await
            .map_err(|e| ArchiveError::Case {
                case: case.to_owned(),
                message: format!("reading {stream}: {e}"),
                retryable: true,
            })?;
        let done = page.len() < 1000;
        from += page.len() as u64;
        out.extend(page);
        if done {
            return Ok(out);
        }
    }
}

fn jsonl(events: &[RecordedEvent]) -> Result<Vec<u8>, ArchiveError> {
    let mut out = String::new();
    for e in events {
        let line = serde_json::to_string(e).map_err(|err| {
            ArchiveError::Pack(format!(
                "event at position {} cannot be written as JSON: {err}",
                e.position
            ))
        })?;
        out.push_str(&line);
        out.push('\n');
    }
    Ok(out.into_bytes())
}

fn text_at(state: &CaseState, pointer: &str) -> Option<String> {
    state
        .data
        .pointer(pointer)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(nfc)
}

/// The issuing body as the documents name it: `parent / name`.
fn issuing_body(state: &CaseState) -> Option<String> {
    match (
        text_at(state, "/issuing_body/parent"),
        text_at(state, "/issuing_body/name"),
    ) {
        (Some(p), Some(n)) => Some(format!("{p} / {n}")),
        (Some(one), None) | (None, Some(one)) => Some(one),
        (None, None) => None,
    }
}

/// One document of the file: a version of a document, its last draft rendering and its last
/// numbered one.
struct Entry<'a> {
    document: String,
    version: u32,
    draft: Option<&'a Generated>,
    issued: Option<&'a Generated>,
    /// Files whose latest record is a rendering of this version, with that record.
    files: Vec<(&'a Generated, &'a FileRecord)>,
}

/// Reads the case and its documents and assembles its package in memory.
pub async fn assemble(
    store: &Store,
    config: &ArchiveConfig,
    case: &str,
    until: Option<u64>,
    now: DateTime<Utc>,
) -> Result<Assembled, ArchiveError> {
    let loaded = load_case_until(store, case, until.unwrap_or(u64::MAX))
        .await
        .map_err(|e| from_case(case, e))?
        .ok_or_else(|| ArchiveError::CaseNotFound(case.to_owned()))?;
    let workflow = giamsat_cases::pinned(store, &loaded.state)
        .await
        .map_err(|e| from_case(case, e))?;
    let tz = giamsat_engine::zone(&workflow);
    let mut datas = Vec::with_capacity(loaded.events.len());
    for e in &loaded.events {
        let d: CaseEventData = serde_json::from_str(&e.data).map_err(|err| ArchiveError::Case {
            case: case.to_owned(),
            message: format!(
                "event at position {} is not a case event: {err}",
                e.position
            ),
            retryable: false,
        })?;
        datas.push(d);
    }
    let local_date = |e: &RecordedEvent, d: &CaseEventData| -> NaiveDate {
        DateTime::parse_from_rfc3339(&d.at)
            .map(|t| t.with_timezone(&tz).date_naive())
            .unwrap_or_else(|_| e.recorded_at().with_timezone(&tz).date_naive())
    };
    let archived = loaded
        .events
        .iter()
        .zip(&datas)
        .rev()
        .find(|(e, _)| e.event_type == ARCHIVED_EVENT);
    let file_code = archived.and_then(|(_, d)| {
        d.input
            .get("file_code")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(nfc)
    });
    let archived_on = archived.map(|(e, d)| {
        d.input
            .get("archived_on")
            .and_then(Value::as_str)
            .and_then(|t| NaiveDate::parse_from_str(t, "%Y-%m-%d").ok())
            .unwrap_or_else(|| local_date(e, d))
    });
    let bagging_date = archived_on.unwrap_or_else(|| now.with_timezone(&tz).date_naive());
    let creator = archived.map(|(_, d)| format!("{}:{}", d.actor.role, d.actor.id));
    let (Some(first), Some(last)) = (loaded.events.first(), loaded.events.last()) else {
        return Err(ArchiveError::CaseNotFound(case.to_owned()));
    };
    let start_date = local_date(first, &datas[0]);
    let end_date = local_date(last, &datas[datas.len() - 1]);

    let (records, doc_events) = read_documents(store, case).await?;

    let mut entries = group(&records);
    let (latest, contents) = read_files(&records, &mut entries, &config.documents_output)?;
    let (documents, page_total, page_minimum) = describe(&entries, &contents, file_code.as_deref());

    let organ = config
        .source_organization
        .as_deref()
        .map(|s| nfc(s.trim()))
        .or_else(|| issuing_body(&loaded.state));
    let title = text_at(&loaded.state, "/topic")
        .or_else(|| text_at(&loaded.state, "/title"))
        .unwrap_or_else(|| case.to_owned());
    let case_stream = format!("case/{case}");
    let metadata = Metadata {
        schema: METADATA_SCHEMA.to_owned(),
        file: FileMetadata {
            file_code: file_code.clone(),
            title: title.clone(),
            maintenance: config.retention.clone(),
            rights: config.access.clone(),
            creator,
            organ_name: organ.clone(),
            language: "vi".to_owned(),
            start_date: Some(start_date.to_string()),
            end_date: Some(end_date.to_string()),
            doc_total: documents.len(),
            page_total,
            page_total_minimum: page_minimum,
            page_count_method: PAGE_COUNT_METHOD.to_owned(),
        },
        case: CaseMetadata {
            case_id: case.to_owned(),
            workflow: loaded.state.workflow.clone(),
            definition_hash: loaded.state.definition_hash.clone(),
            stage: loaded.state.stage.clone(),
            archived_on: archived_on.map(|d| d.to_string()),
            case_stream: case_stream.clone(),
            event_count: loaded.events.len(),
            chain_head: last.hash.to_hex(),
            chain_head_position: last.position,
            documents_stream: format!("documents/{case}"),
            document_event_count: doc_events.len(),
        },
        documents,
        labels: LABELS
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    };

    let mut bag = Bag::new(package_name(case, file_code.as_deref()));
    for (path, bytes) in contents {
        let record = latest.get(path).map_or(case, |r| r.case.as_str());
        bag.add_payload(&payload_path_of(record, path), bytes)?;
    }
    bag.add_payload("events.jsonl", jsonl(&loaded.events)?)?;
    bag.add_payload("document-events.jsonl", jsonl(&doc_events)?)?;
    bag.add_payload("metadata.json", metadata.to_json())?;
    bag.add_payload("metadata.xml", metadata.to_xml())?;
    if let Some(org) = &organ {
        bag.add_info("Source-Organization", org)?;
    }
    bag.add_info("Bagging-Date", &bagging_date.to_string())?;
    if let Some(code) = &file_code {
        bag.add_info("External-Identifier", code)?;
    }
    bag.add_info("External-Identifier", case)?;
    bag.add_info("External-Description", &title)?;
    bag.add_info(
        "Bag-Software-Agent",
        concat!("giamsat-archive ", env!("CARGO_PKG_VERSION")),
    )?;
    bag.add_info(verify::INFO_CASE_ID, case)?;
    bag.add_info(verify::INFO_CASE_VERSION, &last.stream_version.to_string())?;
    bag.add_info(verify::INFO_CASE_HEAD, &last.hash.to_hex())?;
    bag.add_info(verify::INFO_CASE_HEAD_POSITION, &last.position.to_string())?;
    if let Some(d) = doc_events.last() {
        bag.add_info(verify::INFO_DOCUMENTS_HEAD, &d.hash.to_hex())?;
        bag.add_info(
            verify::INFO_DOCUMENTS_HEAD_POSITION,
            &d.position.to_string(),
        )?;
    }
    Ok(Assembled {
        bag: bag.seal(),
        metadata,
        bagging_date,
        file_code,
        chain_head: last.hash,
        chain_head_position: last.position,
    })
}

/// A case's `DocumentGenerated` records, and the events of its document stream cut to the
/// records read (the stream may grow between the two reads).
async fn read_documents(
    store: &Store,
    case: &str,
) -> Result<(Vec<Generated>, Vec<RecordedEvent>), ArchiveError> {
    let records = read_records(store, case).await.map_err(|e| match e {
        RecordsError::Store(message) => ArchiveError::Records {
            case: case.to_owned(),
            message,
            retryable: true,
        },
        RecordsError::Bad(message) => ArchiveError::Records {
            case: case.to_owned(),
            message,
            retryable: false,
        },
    })?;
    let doc_stream = documents_stream(case).map_err(ArchiveError::Config)?;
    let mut doc_events = read_stream_all(store, case, &doc_stream).await?;
    let mut generated = 0;
    if let Some(cut) = doc_events.iter().position(|e| {
        if e.event_type == GENERATED_EVENT {
            generated += 1;
        }
        generated > records.len()
    }) {
        doc_events.truncate(cut);
    }
    Ok((records, doc_events))
}

/// The records grouped by document version, in the order they first appear.
fn group(records: &[Generated]) -> Vec<Entry<'_>> {
    let mut entries: Vec<Entry<'_>> = Vec::new();
    for r in records {
        let index = match entries
            .iter()
            .position(|e| e.document == r.document && e.version == r.version)
        {
            Some(i) => i,
            None => {
                entries.push(Entry {
                    document: r.document.clone(),
                    version: r.version,
                    draft: None,
                    issued: None,
                    files: Vec::new(),
                });
                entries.len() - 1
            }
        };
        let entry = &mut entries[index];
        if r.number.is_some() {
            entry.issued = Some(r);
        } else {
            entry.draft = Some(r);
        }
    }
    entries
}

/// Each document file's path and the record it belongs to.
type Owners<'a> = BTreeMap<&'a str, &'a Generated>;
/// Each document file's path and its bytes.
type Contents<'a> = BTreeMap<&'a str, Vec<u8>>;

/// Reads every recorded file from the documents output, checked against its record's SHA-256,
/// and gives each to its document version. A path rendered more than once belongs to its latest
/// record. Returns each path's record and the files' contents.
fn read_files<'a>(
    records: &'a [Generated],
    entries: &mut [Entry<'a>],
    dir: &Path,
) -> Result<(Owners<'a>, Contents<'a>), ArchiveError> {
    // Each path's latest record owns the file (a draft rendered again replaces its files).
    let mut latest: BTreeMap<&str, (&Generated, &FileRecord)> = BTreeMap::new();
    for r in records {
        for f in &r.files {
            latest.insert(f.path.as_str(), (r, f));
        }
    }
    let mut contents: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    for (path, (record, file)) in &latest {
        if let Some(reason) = unsafe_path_reason(path) {
            return Err(ArchiveError::UnsafePath {
                path: (*path).to_owned(),
                reason,
            });
        }
        let full = dir.join(path);
        let bytes = std::fs::read(&full).map_err(|e| ArchiveError::DocumentMissing {
            path: full.clone(),
            document: record.document.clone(),
            version: record.version,
            reason: e.to_string(),
        })?;
        let actual = hex::encode(Sha256::digest(&bytes));
        if !actual.eq_ignore_ascii_case(&file.sha256) {
            return Err(ArchiveError::DocumentChanged {
                path: full,
                document: record.document.clone(),
                version: record.version,
                expected: file.sha256.clone(),
                actual,
            });
        }
        if let Some(entry) = entries
            .iter_mut()
            .find(|e| e.document == record.document && e.version == record.version)
        {
            entry.files.push((record, file));
        }
        contents.insert(path, bytes);
    }
    Ok((
        latest.into_iter().map(|(path, (r, _))| (path, r)).collect(),
        contents,
    ))
}

/// The metadata of each document version, and the page total (when every count is known) and
/// its minimum.
fn describe(
    entries: &[Entry<'_>],
    contents: &BTreeMap<&str, Vec<u8>>,
    file_code: Option<&str>,
) -> (Vec<DocumentMetadata>, Option<u32>, u32) {
    let mut documents = Vec::new();
    let (mut page_total, mut page_minimum) = (Some(0u32), 0u32);
    for entry in entries {
        let Some(main) = entry.issued.or(entry.draft) else {
            continue;
        };
        let state_of = |r: &Generated| {
            if r.number.is_some() {
                "issued"
            } else {
                "draft"
            }
        };
        let pick = |ext: &str| {
            entry
                .files
                .iter()
                .filter(|(_, f)| f.format.extension() == ext)
                .max_by_key(|(r, _)| r.number.is_some())
                .and_then(|(_, f)| contents.get(f.path.as_str()))
        };
        let pages = match (pick("docx"), pick("html")) {
            (Some(docx), _) => docx_pages(docx),
            (None, Some(html)) => html_pages(html),
            (None, None) => Pages::Unknown,
        };
        page_total = page_total
            .zip(pages.exact())
            .map(|(a, b)| a.saturating_add(b));
        page_minimum = page_minimum.saturating_add(pages.minimum().unwrap_or(0));
        let meta = |key: &str| {
            main.meta
                .get(key)
                .map(|s| nfc(s.trim()))
                .filter(|s| !s.is_empty())
        };
        let (code_number, code_notation) = match (&main.symbol, main.number) {
            (Some(symbol), _) => match symbol.split_once('/') {
                Some((n, notation)) => (Some(nfc(n)), Some(nfc(notation))),
                None => (Some(nfc(symbol)), None),
            },
            (None, Some(n)) => (Some(format!("{n:02}")), None),
            (None, None) => (None, None),
        };
        let mut files: Vec<DigitalFile> = entry
            .files
            .iter()
            .map(|(r, f)| DigitalFile {
                path: format!("data/{}", payload_path_of(&r.case, &f.path)),
                format: f.format.extension().to_owned(),
                state: state_of(r).to_owned(),
                sha256: f.sha256.to_ascii_lowercase(),
                bytes: f.bytes,
            })
            .collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        documents.push(DocumentMetadata {
            doc_ordinal: documents.len() + 1,
            file_code: file_code.map(str::to_owned),
            document_id: entry.document.clone(),
            kind: main.kind.clone(),
            label: nfc(&main.label),
            version: entry.version,
            status: state_of(main).to_owned(),
            type_name: meta("type_name"),
            code_number,
            code_notation,
            issued_date: main.date.clone(),
            organ_name: nfc(&main.issuer),
            subject: meta("excerpt"),
            language: "vi".to_owned(),
            page_amount: pages.exact(),
            page_amount_minimum: pages.minimum(),
            signer_info: SignerInfo {
                position: meta("signer_position"),
                full_name: meta("signer"),
            },
            to: meta("recipients")
                .map(|r| {
                    r.split(';')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            secret: main.secret,
            files,
        });
    }
    if documents.is_empty() {
        page_total = Some(0);
    }
    (documents, page_total, page_minimum)
}

/// Writes a sealed bag into `output` as `<name>` (folder) or `<name>.zip` / `<name>.tar`: into a
/// hidden temporary entry first, synced, then moved into place (a folder is renamed; a file is
/// hard-linked, which fails rather than replace a file that appeared meanwhile). Returns the
/// path and the package's SHA-256 (of the packed file, or of `tagmanifest-sha256.txt`).
pub fn write_package(
    bag: &SealedBag,
    output: &Path,
    packing: Packing,
    date: NaiveDate,
) -> Result<(PathBuf, String, String), ArchiveError> {
    std::fs::create_dir_all(output).map_err(|e| ArchiveError::io(output, e))?;
    let file_name = match packing.extension() {
        Some(ext) => format!("{}.{ext}", bag.name()),
        None => bag.name().to_owned(),
    };
    let dest = output.join(&file_name);
    if dest.symlink_metadata().is_ok() {
        return Err(ArchiveError::Exists { path: dest });
    }
    let tmp = output.join(format!(
        ".{file_name}.tmp-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let packed = |bytes: Vec<u8>| {
        write_file_into_place(&tmp, &dest, &bytes)
            .map(|()| (hex::encode(Sha256::digest(&bytes)), "package"))
    };
    let result = match packing {
        Packing::Folder => bag.write_dir(&tmp).and_then(|()| {
            std::fs::rename(&tmp, &dest)
                .map(|()| (bag.tagmanifest_sha256(), "tagmanifest-sha256.txt"))
                .map_err(|e| {
                    if dest.exists() {
                        ArchiveError::Exists { path: dest.clone() }
                    } else {
                        ArchiveError::io(&dest, e)
                    }
                })
        }),
        Packing::Zip => bag.to_zip(date).and_then(packed),
        Packing::Tar => packed(bag.to_tar(date)),
    };
    let (sha256, of) = match result {
        Ok(done) => done,
        Err(e) => {
            let _ = if tmp.is_dir() {
                std::fs::remove_dir_all(&tmp)
            } else {
                std::fs::remove_file(&tmp)
            };
            return Err(e);
        }
    };
    sync_dir(output)?;
    Ok((dest, sha256, of.to_owned()))
}

fn write_file_into_place(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<(), ArchiveError> {
    use std::io::Write as _;
    {
        let mut file = std::fs::File::create_new(tmp).map_err(|e| ArchiveError::io(tmp, e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| ArchiveError::io(tmp, e))?;
    }
    match std::fs::hard_link(tmp, dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let _ = std::fs::remove_file(tmp);
            return Err(ArchiveError::Exists {
                path: dest.to_path_buf(),
            });
        }
        // A file system without hard links: a rename (the existence check came just before).
        Err(_) => {
            return std::fs::rename(tmp, dest).map_err(|e| ArchiveError::io(dest, e));
        }
    }
    std::fs::remove_file(tmp).map_err(|e| ArchiveError::io(tmp, e))
}

/// Assembles a case's package and writes it into place.
pub async fn build_package(
    store: &Store,
    config: &ArchiveConfig,
    request: &BuildRequest,
) -> Result<Package, ArchiveError> {
    let assembled = assemble(store, config, &request.case, request.until, request.now).await?;
    let (path, sha256, checksum_of) = write_package(
        &assembled.bag,
        &request.output,
        request.packing,
        assembled.bagging_date,
    )?;
    Ok(Package {
        name: assembled.bag.name().to_owned(),
        path,
        packing: request.packing,
        sha256,
        checksum_of,
        payload_oxum: assembled.bag.payload_oxum().to_owned(),
        bagging_date: assembled.bagging_date,
        file_code: assembled.file_code,
        chain_head: assembled.chain_head,
        chain_head_position: assembled.chain_head_position,
        documents: assembled.metadata.documents.len(),
        payload_files: assembled.bag.payload_files(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_keep_vietnamese_and_drop_unsafe_characters() {
        assert_eq!(
            package_name("tg2024", Some("HĐND-TG.2024.GS01")),
            "tg2024-HĐND-TG.2024.GS01"
        );
        assert_eq!(package_name("tg2024", None), "tg2024-tg2024");
        assert_eq!(package_name("a", Some("01/HS:\n*")), "a-01-HS---");
        assert_eq!(package_name("..x", Some("y")), "x-y");
    }

    #[test]
    fn configuration_is_checked_and_names_the_key() {
        let ok = ArchiveConfig::from_table(serde_json::json!({
            "retention": " 20 năm ", "access": "restricted"
        }))
        .expect("valid");
        assert_eq!(ok.retention, "20 năm");
        assert_eq!(ok.output, PathBuf::from("archive"));
        assert_eq!(ok.documents_output, PathBuf::from("documents"));
        assert_eq!(ok.packing, Packing::Folder);
        for (table, key) in [
            (serde_json::json!({"access": "restricted"}), "retention"),
            (serde_json::json!({"retention": "permanent"}), "access"),
            (
                serde_json::json!({"retention": "mãi mãi", "access": "x"}),
                "retention",
            ),
            (
                serde_json::json!({"retention": "permanent", "access": " "}),
                "access",
            ),
            (
                serde_json::json!({"retention": "permanent", "access": "x", "outputt": "a"}),
                "outputt",
            ),
            (
                serde_json::json!({"retention": "permanent", "access": "x", "packing": "rar"}),
                "rar",
            ),
        ] {
            let err = ArchiveConfig::from_table(table).expect_err(key);
            assert!(err.contains(key), "{err}");
        }
        for good in ["permanent", "Vĩnh viễn", "10 năm", "70 years", "1 year"] {
            assert!(retention_is_valid(good), "{good}");
        }
        for bad in ["0 năm", "năm", "ten years", ""] {
            assert!(!retention_is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn document_paths_move_under_documents() {
        assert_eq!(
            payload_path_of("tg2024", "tg2024/ke-hoach.du-thao.v1.md"),
            "documents/ke-hoach.du-thao.v1.md"
        );
        assert_eq!(
            payload_path_of("tg2024", "other/x.md"),
            "documents/other/x.md"
        );
    }
}
