//! The register of outgoing documents (Sổ đăng ký văn bản đi) and document numbers.
//!
//! Numbers run per issuing body and calendar year from 01 (Nghị định 30/2020), secret documents
//! in a series of their own. A series is a stream, `register/<issuer>/<year>` or
//! `register/<issuer>/<year>/mat`, of `DocumentRegistered` events; the next number is the
//! stream's length plus one, appended with the stream's expected version, so two secretaries
//! numbering at once get different numbers (the loser reads again and takes the next). The
//! event's id derives from the case, document and version, so numbering the same version again
//! returns the number it already has. The documents exporter then renders the document again
//! with its number; a correction is a new version, numbered on its own.

use chrono::{DateTime, Datelike, FixedOffset, NaiveDate};
use giamsat_store::{Direction, Store, StoreError};
use giamsat_types::{ExpectedVersion, NewEvent, StreamId};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::exporter::{
    CORRECTION_EVENT, Generated, REGISTERED_EVENT, RecordsError, ascii_slug, documents_stream,
    read_records,
};

#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("case {case:?} has no document {document:?} (its documents: {known})")]
    UnknownDocument {
        case: String,
        document: String,
        known: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the register series {0} kept changing while numbering; try again")]
    Contended(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<RecordsError> for RegisterError {
    fn from(e: RecordsError) -> RegisterError {
        RegisterError::Invalid(e.to_string())
    }
}

/// One entry of the register: a numbered document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registered {
    pub year: i32,
    pub number: u32,
    /// `12/TB-ĐGS`.
    pub symbol: String,
    pub secret: bool,
    pub case: String,
    pub document: String,
    pub version: u32,
    pub kind: String,
    /// Tên loại (THÔNG BÁO, BIÊN BẢN...; empty for a công văn).
    pub type_name: String,
    /// The document's date (YYYY-MM-DD).
    pub date: String,
    /// Trích yếu.
    pub excerpt: String,
    pub issuer: String,
    pub signer: String,
    pub recipients: String,
    /// Who numbered it and when.
    pub actor: String,
    pub at: String,
}

/// The series stream of an issuer's numbers in a year.
fn series(issuer: &str, year: i32, secret: bool) -> Result<StreamId, RegisterError> {
    let slug = ascii_slug(issuer).to_lowercase();
    let name = if secret {
        format!("register/{slug}/{year}/mat")
    } else {
        format!("register/{slug}/{year}")
    };
    StreamId::new(name).map_err(|e| RegisterError::Invalid(e.to_string()))
}

async fn read_series(store: &Store, stream: &StreamId) -> Result<Vec<Registered>, RegisterError> {
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let page = store
            .read_stream(stream, Direction::Forward, Some(from), 1000)
            .await?;
        let done = page.len() < 1000;
        from += page.len() as u64;
        for e in page.iter().filter(|e| e.event_type == REGISTERED_EVENT) {
            out.push(serde_json::from_str(&e.data).map_err(|err| {
                RegisterError::Invalid(format!("{stream} event {}: {err}", e.stream_version))
            })?);
        }
        if done {
            break;
        }
    }
    Ok(out)
}

/// The latest version of a document, as generated (its draft record).
async fn latest(store: &Store, case: &str, document: &str) -> Result<Generated, RegisterError> {
    let records = read_records(store, case).await?;
    let newest = records
        .iter()
        .filter(|r| r.document == document)
        .map(|r| r.version)
        .max();
    match newest {
        // Its latest rendering as a draft (the one that was signed), else its numbered one.
        Some(v) => {
            let of_version = |r: &&Generated| r.document == document && r.version == v;
            let draft = records
                .iter()
                .rfind(|r| of_version(r) && r.number.is_none())
                .cloned();
            Ok(draft
                .or_else(|| records.iter().rfind(of_version).cloned())
                .expect("a record of the newest version"))
        }
        None => {
            let mut known: Vec<String> = records.iter().map(|r| r.document.clone()).collect();
            known.dedup();
            Err(RegisterError::UnknownDocument {
                case: case.to_owned(),
                document: document.to_owned(),
                known: if known.is_empty() {
                    "none generated yet; run the documents exporter".to_owned()
                } else {
                    known.join(", ")
                },
            })
        }
    }
}

/// The issuer and the series stream of a rendered document version.
fn series_of(doc: &Generated) -> Result<(String, i32, StreamId), RegisterError> {
    let date = NaiveDate::parse_from_str(&doc.date, "%Y-%m-%d")
        .map_err(|e| RegisterError::Invalid(format!("document date {:?}: {e}", doc.date)))?;
    let year = date.year();
    let issuer = if doc.issuer.is_empty() {
        doc.issuer_code.clone()
    } else {
        doc.issuer.clone()
    };
    let stream = series(&issuer, year, doc.secret)?;
    Ok((issuer, year, stream))
}

/// Whether this version of the document has an entry in its series of the register.
async fn in_register(store: &Store, case: &str, doc: &Generated) -> Result<bool, RegisterError> {
    let (_, _, stream) = series_of(doc)?;
    Ok(read_series(store, &stream)
        .await?
        .iter()
        .any(|e| e.case == case && e.document == doc.document && e.version == doc.version))
}

/// Numbers the latest version of a document after signature (the `assign_document_number`
/// command): the next number in its issuer's series for the document's year. Numbering a
/// version that already has a number returns that number.
pub async fn assign_number(
    store: &Store,
    case: &str,
    document: &str,
    actor: &str,
    at: DateTime<FixedOffset>,
) -> Result<Registered, RegisterError> {
    let doc = latest(store, case, document).await?;
    let issuer_code = doc.issuer_code.clone();
    let (issuer, year, stream) = series_of(&doc)?;
    let id = Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("giamsat:register:{case}/{document}/v{}", doc.version).as_bytes(),
    );
    for attempt in 0..50u64 {
        let entries = read_series(store, &stream).await?;
        if let Some(existing) = entries
            .iter()
            .find(|e| e.case == case && e.document == document && e.version == doc.version)
        {
            return Ok(existing.clone());
        }
        let number = u32::try_from(entries.len() + 1)
            .map_err(|_| RegisterError::Invalid("the series is full".to_owned()))?;
        let code = if doc.type_code.is_empty() {
            issuer_code.clone()
        } else {
            format!("{}-{issuer_code}", doc.type_code)
        };
        let entry = Registered {
            year,
            number,
            symbol: format!("{number:02}/{code}"),
            secret: doc.secret,
            case: case.to_owned(),
            document: document.to_owned(),
            version: doc.version,
            kind: doc.kind.clone(),
            type_name: doc.meta.get("type_name").cloned().unwrap_or_default(),
            date: doc.date.clone(),
            excerpt: doc
                .meta
                .get("excerpt")
                .cloned()
                .unwrap_or_else(|| doc.label.clone()),
            issuer: issuer.clone(),
            signer: doc.meta.get("signer").cloned().unwrap_or_default(),
            recipients: doc.meta.get("recipients").cloned().unwrap_or_default(),
            actor: actor.to_owned(),
            at: at.to_rfc3339(),
        };
        let value = serde_json::to_value(&entry)
            .map_err(|e| RegisterError::Invalid(format!("encoding the entry: {e}")))?;
        let event = NewEvent::new(REGISTERED_EVENT, &value).with_id(id);
        match store
            .append(
                &stream,
                ExpectedVersion::Exact(entries.len() as u64),
                vec![event],
            )
            .await
        {
            Ok(_) => return Ok(entry),
            Err(StoreError::WrongExpectedVersion { .. }) => {
                let pause = (attempt.min(10) * 2) + u64::from(id.as_bytes()[15] % 5);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(RegisterError::Contended(stream.to_string()))
}

/// Asks for a corrected version of an issued document: the exporter renders version N+1 from
/// the case as it is now; the issued version stays as it was.
pub async fn request_correction(
    store: &Store,
    case: &str,
    document: &str,
    reason: &str,
    actor: &str,
    at: DateTime<FixedOffset>,
) -> Result<u32, RegisterError> {
    let doc = latest(store, case, document).await?;
    // Numbered: rendered with its number, or (before the exporter has rendered it again)
    // entered in its series of the register.
    let rendered_numbered = read_records(store, case)
        .await?
        .iter()
        .any(|r| r.document == document && r.version == doc.version && r.number.is_some());
    if doc.number.is_none() && !rendered_numbered && !in_register(store, case, &doc).await? {
        return Err(RegisterError::Invalid(format!(
            "document {document} v{} of case {case} is a draft (not numbered): correct the case \
             data instead, a draft is rendered again",
            doc.version
        )));
    }
    let case_version = store
        .read_stream(
            &StreamId::new(format!("case/{case}"))
                .map_err(|e| RegisterError::Invalid(e.to_string()))?,
            Direction::Backward,
            None,
            1,
        )
        .await?
        .first()
        .map_or(0, |e| e.stream_version);
    let version = doc.version + 1;
    let data = serde_json::json!({
        "document": document,
        "version": version,
        "reason": reason,
        "case_version": case_version,
        "actor": actor,
        "at": at.to_rfc3339(),
    });
    let id = Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("giamsat:correction:{case}/{document}/v{version}").as_bytes(),
    );
    let stream = documents_stream(case).map_err(RegisterError::Invalid)?;
    store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::new(CORRECTION_EVENT, &data).with_id(id)],
        )
        .await?;
    Ok(version)
}

/// Every entry of the register in `year` (all issuers, the open series then the secret ones),
/// in number order.
pub async fn register(store: &Store, year: i32) -> Result<Vec<Registered>, RegisterError> {
    let mut streams = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_streams("register/", after.as_deref(), 1000)
            .await?;
        let done = page.len() < 1000;
        after = page.last().map(|s| s.stream_id.clone());
        streams.extend(page.into_iter().map(|s| s.stream_id));
        if done {
            break;
        }
    }
    let mut out = Vec::new();
    for name in streams {
        let parts: Vec<&str> = name.split('/').collect();
        if parts.get(2) != Some(&year.to_string().as_str()) {
            continue;
        }
        let stream =
            StreamId::new(name.clone()).map_err(|e| RegisterError::Invalid(e.to_string()))?;
        out.extend(read_series(store, &stream).await?);
    }
    out.sort_by(|a, b| {
        (a.issuer.as_str(), a.secret, a.number).cmp(&(b.issuer.as_str(), b.secret, b.number))
    });
    Ok(out)
}

/// A case's documents: each version with its draft and numbered files (also as the daemon's API
/// lists them, which adds download links that reading leaves out).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct DocumentVersion {
    pub document: String,
    pub kind: String,
    pub label: String,
    pub version: u32,
    pub date: String,
    pub number: Option<u32>,
    pub symbol: Option<String>,
    pub excerpt: String,
    pub files: Vec<crate::exporter::FileRecord>,
    /// The draft's files, when the version has been numbered since.
    pub draft_files: Vec<crate::exporter::FileRecord>,
}

/// The documents of a case, one row per version (numbered ones with their number); where a
/// version was rendered more than once, its latest rendering.
pub async fn list(store: &Store, case: &str) -> Result<Vec<DocumentVersion>, RegisterError> {
    let records = read_records(store, case).await?;
    let mut out: Vec<DocumentVersion> = Vec::new();
    for r in records {
        let excerpt = r.meta.get("excerpt").cloned().unwrap_or_default();
        let row = match out
            .iter()
            .position(|v| v.document == r.document && v.version == r.version)
        {
            Some(i) => &mut out[i],
            None => {
                out.push(DocumentVersion {
                    document: r.document.clone(),
                    kind: r.kind.clone(),
                    label: r.label.clone(),
                    version: r.version,
                    date: r.date.clone(),
                    number: None,
                    symbol: None,
                    excerpt: String::new(),
                    files: Vec::new(),
                    draft_files: Vec::new(),
                });
                out.last_mut().expect("just pushed")
            }
        };
        match r.number {
            Some(_) => {
                if row.number.is_none() {
                    row.draft_files = std::mem::take(&mut row.files);
                }
                row.number = r.number;
                row.symbol = r.symbol;
                row.files = r.files;
                row.excerpt = excerpt;
            }
            None if row.number.is_some() => row.draft_files = r.files,
            None => {
                row.files = r.files;
                row.excerpt = excerpt;
            }
        }
    }
    Ok(out)
}

/// The data value of a register entry, for JSON output.
pub fn to_json(entry: &Registered) -> Value {
    serde_json::to_value(entry).unwrap_or(Value::Null)
}
