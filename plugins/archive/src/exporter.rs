//! The `archive` exporter: on `CaseArchived`, builds the case's package into its `output` folder
//! and records `ArchivePackageBuilt` in `archive/<case>`.
//!
//! At-least-once: the record's id derives from the case and the archive event, and the package
//! is dated by the archive event, so a second delivery finds the package it built before
//! (checked with [`crate::verify_bag`]) and returns the same record, which the store then
//! ignores. A package is never overwritten: one that exists but fails verification parks the
//! event with its problems.

use std::path::PathBuf;

use async_trait::async_trait;
use giamsat_engine::CaseEventData;
use giamsat_exporter::{ExportError, Exporter, Filter, Outcome, checkpoint_name};
use giamsat_store::Store;
use giamsat_types::{NewEvent, RecordedEvent, StreamId};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::build::{ARCHIVED_EVENT, ArchiveConfig, BuildRequest, build_package, package_name};
use crate::verify::{INFO_CASE_HEAD, INFO_CASE_HEAD_POSITION};
use crate::{ArchiveError, verify_bag};

/// Event type of a package built by the exporter.
pub const PACKAGE_BUILT_EVENT: &str = "ArchivePackageBuilt";

/// The stream of a case's package records.
pub fn archive_stream(case: &str) -> Result<StreamId, String> {
    StreamId::new(format!("archive/{case}")).map_err(|e| e.to_string())
}

/// The exporter.
#[derive(Debug)]
pub struct ArchiveExporter {
    config: ArchiveConfig,
    store: Store,
}

fn permanent(e: impl std::fmt::Display) -> ExportError {
    ExportError::Permanent(e.to_string())
}

fn export_error(e: ArchiveError) -> ExportError {
    if e.is_retryable() {
        ExportError::Retryable(e.to_string())
    } else {
        ExportError::Permanent(e.to_string())
    }
}

impl ArchiveExporter {
    /// Builds the exporter from its configuration table; an unknown, missing or invalid key is
    /// an error that names it.
    pub fn from_config(table: Value, store: Store) -> Result<ArchiveExporter, String> {
        Ok(ArchiveExporter {
            config: ArchiveConfig::from_table(table)?,
            store,
        })
    }

    pub fn config(&self) -> &ArchiveConfig {
        &self.config
    }

    /// Waits (by failing as retryable) until the documents exporter has handled the archive
    /// event, so that every document of the case is rendered and recorded.
    async fn documents_ready(&self, event: &RecordedEvent) -> Result<(), ExportError> {
        let id = &self.config.documents_exporter;
        if id.is_empty() {
            return Ok(());
        }
        let reached = self
            .store
            .load_checkpoint(&checkpoint_name(id))
            .await
            .map_err(|e| ExportError::Retryable(e.to_string()))?
            .unwrap_or(0);
        if reached < event.position {
            return Err(ExportError::Retryable(format!(
                "waiting for the documents exporter {id:?} to reach position {} (it is at \
                 {reached}); \
                 the package must hold every document of the case",
                event.position
            )));
        }
        Ok(())
    }
}

#[async_trait]
impl Exporter for ArchiveExporter {
    fn filter(&self) -> Filter {
        Filter {
            event_types: vec![ARCHIVED_EVENT.to_owned()],
            stream_prefixes: vec!["case/".to_owned()],
        }
    }

    async fn export(&self, event: &RecordedEvent) -> Result<Vec<Outcome>, ExportError> {
        let Some(case) = event.stream_id.strip_prefix("case/") else {
            return Ok(Vec::new());
        };
        if event.event_type != ARCHIVED_EVENT {
            return Ok(Vec::new());
        }
        let data: CaseEventData = serde_json::from_str(&event.data).map_err(|e| {
            permanent(format!(
                "{ARCHIVED_EVENT} at position {} is not a case event: {e}",
                event.position
            ))
        })?;
        let file_code = data
            .input
            .get("file_code")
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty());
        let name = package_name(case, file_code);
        let packing = self.config.packing;
        let file_name = match packing.extension() {
            Some(ext) => format!("{name}.{ext}"),
            None => name.clone(),
        };
        let path: PathBuf = self.config.output.join(&file_name);
        if path.symlink_metadata().is_err() {
            self.documents_ready(event).await?;
            let request = BuildRequest {
                case: case.to_owned(),
                until: Some(event.stream_version),
                now: event.recorded_at(),
                output: self.config.output.clone(),
                packing,
            };
            match build_package(&self.store, &self.config, &request).await {
                Ok(package) => {
                    tracing::info!(
                        case,
                        path = %package.path.display(),
                        sha256 = %package.sha256,
                        "archive package built"
                    );
                }
                // Built by a delivery that crashed before its checkpoint, or by another process:
                // checked below like any existing package.
                Err(ArchiveError::Exists { .. }) => {}
                Err(e) => return Err(export_error(e)),
            }
        }
        let report = verify_bag(&path).map_err(export_error)?;
        if !report.is_valid() {
            let problems: Vec<String> = report.problems.iter().map(ToString::to_string).collect();
            return Err(permanent(format!(
                "the package {} exists but is not valid ({}); it is never overwritten: move it \
                 away and retry the parked event to build it again",
                path.display(),
                problems.join("; ")
            )));
        }
        let record = json!({
            "case": case,
            "file_code": file_code,
            "package": name,
            "path": path.display().to_string(),
            "packing": packing.name(),
            "sha256": report.sha256,
            "checksum_of": report.checksum_of,
            "payload_oxum": report.payload_oxum(),
            "bagging_date": report.info("Bagging-Date"),
            "chain_head": report.info(INFO_CASE_HEAD),
            "chain_head_position": report
                .info(INFO_CASE_HEAD_POSITION)
                .and_then(|p| p.parse::<u64>().ok()),
            "source": {
                "event_id": event.event_id,
                "position": event.position,
                "stream_version": event.stream_version,
            },
        });
        // One record per archive event, whatever happens to the package afterwards.
        let id = Uuid::new_v5(
            &Uuid::NAMESPACE_OID,
            format!("giamsat:archive:{case}/{}", event.event_id).as_bytes(),
        );
        Ok(vec![Outcome {
            stream: archive_stream(case).map_err(permanent)?,
            event: NewEvent::new(PACKAGE_BUILT_EVENT, &record).with_id(id),
        }])
    }
}
