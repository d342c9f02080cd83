//! A case's archive packages: the records the archive exporter wrote (`ArchivePackageBuilt` in
//! `archive/<case>`), each checked again on disk when listed, and the package itself for
//! download (a `.zip` or `.tar` as built; a folder package packed into a `.tar` on the way).
//!
//! A package holds every unit's reports and the whole history of the case, so unit tokens may
//! not list or download it (403); the other roles may.

use std::path::{Path, PathBuf};

use axum::Json;
use axum::extract::State;
use axum::http::HeaderValue;
use axum::http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, ETAG};
use axum::response::{IntoResponse, Response};
use giamsat_archive::{PACKAGE_BUILT_EVENT, archive_stream, verify_bag};
use giamsat_store::Direction;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::auth::{Principal, Role};
use crate::cases::load_visible;
use crate::error::ApiError;
use crate::extract::P;
use crate::{App, AppState};

/// The roles that may see a case's archive packages.
const READERS: &[Role] = &[Role::Secretariat, Role::Delegation, Role::Viewer];

/// The package records of a case, oldest first.
pub(crate) async fn records(app: &App, case: &str) -> Result<Vec<Value>, ApiError> {
    let stream = archive_stream(case).map_err(ApiError::internal)?;
    let mut out = Vec::new();
    let mut from = 1;
    loop {
        let page = app
            .store
            .read_stream(&stream, Direction::Forward, Some(from), 256)
            .await?;
        let Some(last) = page.last() else { break };
        from = last.stream_version + 1;
        let full = page.len() == 256;
        for event in page {
            if event.event_type != PACKAGE_BUILT_EVENT {
                continue;
            }
            let record: Value = serde_json::from_str(&event.data).map_err(|e| {
                ApiError::internal(format!(
                    "the archive record at position {} is not JSON: {e}",
                    event.position
                ))
            })?;
            out.push(record);
        }
        if !full {
            break;
        }
    }
    Ok(out)
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for a path segment or an
/// RFC 5987 file name.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The download path of a package of a case.
pub(crate) fn download_path(case: &str, package: &str) -> String {
    format!("/api/cases/{}/archive/{}", percent(case), percent(package))
}

/// The record with its download path and what a fresh check of the package on disk finds.
async fn with_check(case: &str, mut record: Value) -> Value {
    let package = record["package"].as_str().unwrap_or_default().to_owned();
    let path = PathBuf::from(record["path"].as_str().unwrap_or_default());
    let check = tokio::task::spawn_blocking(move || match verify_bag(&path) {
        Ok(report) => json!({
            "valid": report.is_valid(),
            "problems": report.problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }),
        Err(e) => json!({"valid": false, "problems": [e.to_string()]}),
    })
    .await
    .unwrap_or_else(|e| json!({"valid": false, "problems": [e.to_string()]}));
    record["download"] = json!(download_path(case, &package));
    record["check"] = check;
    record
}

/// `GET /api/cases/{id}/archive`: the case's archive packages, each checked again on disk.
pub async fn list(
    State(app): State<AppState>,
    principal: Principal,
    P(id): P<String>,
) -> Result<Json<Value>, ApiError> {
    principal.require(READERS, "see a case's archive packages")?;
    load_visible(&app, &principal, &id).await?;
    let mut out = Vec::new();
    for record in records(&app, &id).await? {
        out.push(with_check(&id, record).await);
    }
    Ok(Json(Value::Array(out)))
}

/// Every file under a folder package, by its path under the package's name, sorted.
fn folder_entries(root: &Path, name: &str) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) -> std::io::Result<()> {
        let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let file_name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            let kind = entry.file_type()?;
            if kind.is_dir() {
                walk(&path, &format!("{prefix}/{file_name}"), out)?;
            } else if kind.is_file() {
                out.push((format!("{prefix}/{file_name}"), std::fs::read(&path)?));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(root, name, &mut out)?;
    Ok(out)
}

/// `GET /api/cases/{id}/archive/{package}`: the package as built (`.zip`, `.tar`), or a folder
/// package packed into a `.tar` of the same layout; the ETag is the SHA-256 of what is sent.
pub async fn download(
    State(app): State<AppState>,
    principal: Principal,
    P((id, package)): P<(String, String)>,
) -> Result<Response, ApiError> {
    principal.require(READERS, "download a case's archive packages")?;
    load_visible(&app, &principal, &id).await?;
    let record = records(&app, &id)
        .await?
        .into_iter()
        .rev()
        .find(|r| r["package"] == package.as_str())
        .ok_or_else(|| {
            ApiError::not_found(
                "package_not_found",
                format!("case {id} has no archive package {package:?}"),
            )
        })?;
    let path = PathBuf::from(record["path"].as_str().unwrap_or_default());
    let packing = record["packing"].as_str().unwrap_or_default().to_owned();
    let missing = |e: std::io::Error| {
        ApiError::not_found(
            "package_missing",
            format!("the package {} cannot be read: {e}", path.display()),
        )
    };
    let (bytes, content_type, extension) = match packing.as_str() {
        "zip" => (
            tokio::fs::read(&path).await.map_err(missing)?,
            "application/zip",
            "zip",
        ),
        "tar" => (
            tokio::fs::read(&path).await.map_err(missing)?,
            "application/x-tar",
            "tar",
        ),
        _ => {
            let (root, name) = (path.clone(), package.clone());
            let entries = tokio::task::spawn_blocking(move || folder_entries(&root, &name))
                .await
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_err(missing)?;
            let refs: Vec<(String, &[u8])> = entries
                .iter()
                .map(|(p, b)| (p.clone(), b.as_slice()))
                .collect();
            let mtime = record["bagging_date"]
                .as_str()
                .and_then(|d| chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").ok())
                .and_then(|d| d.and_hms_opt(0, 0, 0))
                .map_or(0, |t| t.and_utc().timestamp().max(0) as u64);
            (
                giamsat_archive::tar::write(&refs, mtime),
                "application/x-tar",
                "tar",
            )
        }
    };
    let sha = hex::encode(Sha256::digest(&bytes));
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Ok(value) = HeaderValue::from_str(&format!("\"{sha}\"")) {
        headers.insert(ETAG, value);
    }
    // The package name is ASCII-safe (it is also a folder name); say it in RFC 5987 form too.
    let file_name = format!("{package}.{extension}");
    let ascii: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded = percent(&file_name);
    if let Ok(value) = HeaderValue::from_str(&format!(
        "attachment; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    )) {
        headers.insert(CONTENT_DISPOSITION, value);
    }
    Ok(response)
}
