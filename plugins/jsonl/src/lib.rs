//! The `jsonl` exporter: appends each committed event it receives to a JSON Lines file (one
//! event, as the log stores it, per line), so other systems can follow the log without a
//! database connection. Delivery is at-least-once: after a crash between the write and the
//! checkpoint the same event is written again; each line carries its `position` and `event_id`,
//! by which a reader drops the repeat.
//!
//! Configuration (`[[exporters]]` with `type = "jsonl"`): `path` (the file, created with its
//! folder), optional `event-types` and `stream-prefixes` lists. Unknown keys are refused.

use std::io::Write as _;
use std::path::PathBuf;

use async_trait::async_trait;
use giamsat_exporter::{ExportError, Exporter, Filter, Outcome};
use giamsat_types::RecordedEvent;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct JsonlConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub event_types: Vec<String>,
    #[serde(default)]
    pub stream_prefixes: Vec<String>,
}

#[derive(Debug)]
pub struct JsonlExporter {
    config: JsonlConfig,
}

impl JsonlExporter {
    /// Builds the exporter from its configuration table; an unknown or missing key is an error
    /// that names it.
    pub fn from_config(table: serde_json::Value) -> Result<JsonlExporter, String> {
        let config: JsonlConfig = serde_json::from_value(table).map_err(|e| e.to_string())?;
        Ok(JsonlExporter { config })
    }
}

#[async_trait]
impl Exporter for JsonlExporter {
    fn filter(&self) -> Filter {
        Filter {
            event_types: self.config.event_types.clone(),
            stream_prefixes: self.config.stream_prefixes.clone(),
        }
    }

    async fn export(&self, event: &RecordedEvent) -> Result<Vec<Outcome>, ExportError> {
        let path = &self.config.path;
        let mut line = serde_json::to_string(event)
            .map_err(|e| ExportError::Permanent(format!("cannot encode the event: {e}")))?;
        line.push('\n');
        let write = || -> std::io::Result<()> {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)?;
            file.write_all(line.as_bytes())?;
            // Durable before the runner saves its checkpoint.
            file.sync_data()
        };
        write().map_err(|e| ExportError::Retryable(format!("{}: {e}", path.display())))?;
        Ok(Vec::new())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_missing_keys_are_named() {
        let err = JsonlExporter::from_config(serde_json::json!({"path": "x", "pathh": "y"}))
            .expect_err("unknown");
        assert!(err.contains("pathh"), "{err}");
        let err = JsonlExporter::from_config(serde_json::json!({})).expect_err("missing");
        assert!(err.contains("path"), "{err}");
        let ok = JsonlExporter::from_config(
            serde_json::json!({"path": "out/e.jsonl", "event-types": ["NoticeIssued"]}),
        )
        .expect("valid");
        assert_eq!(ok.filter().event_types, vec!["NoticeIssued".to_owned()]);
    }
}
