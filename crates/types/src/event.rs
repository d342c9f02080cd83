//! The event envelope: what a caller appends (`NewEvent`) and what the log returns
//! (`RecordedEvent`), with the validation every store applies before anything is written.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::hash::{ChainFields, Hash, chain_hash};

/// Longest accepted stream id, in bytes.
pub const MAX_STREAM_ID_BYTES: usize = 256;
/// Longest accepted event type, in bytes.
pub const MAX_EVENT_TYPE_BYTES: usize = 128;

/// Why an append or a read was refused before it reached the database.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    #[error("stream id is empty")]
    EmptyStreamId,
    #[error("stream id is {len} bytes long, the limit is {max}")]
    StreamIdTooLong { len: usize, max: usize },
    #[error("stream id {id:?} contains a control character")]
    StreamIdControlChar { id: String },
    #[error("event type is empty")]
    EmptyEventType,
    #[error("event type {event_type:?} is {len} bytes long, the limit is {max}")]
    EventTypeTooLong {
        event_type: String,
        len: usize,
        max: usize,
    },
    #[error("event type {event_type:?} contains whitespace or a control character")]
    EventTypeInvalidChar { event_type: String },
    #[error("{field} is not valid JSON: {message}")]
    InvalidJson {
        field: &'static str,
        message: String,
    },
    #[error("metadata must be a JSON object, got {got}")]
    MetadataNotObject { got: String },
    #[error("event {event_id} is {size} bytes (data and metadata), the limit is {max}")]
    EventTooLarge {
        event_id: Uuid,
        size: usize,
        max: usize,
    },
    #[error("an append needs at least one event")]
    NoEvents,
    #[error("event id {event_id} appears twice in one append")]
    DuplicateIdInAppend { event_id: Uuid },
    #[error("schema version must be at least 1")]
    ZeroSchemaVersion,
}

/// A validated stream id: non-empty, at most [`MAX_STREAM_ID_BYTES`] bytes, no control characters.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct StreamId(String);

impl StreamId {
    pub fn new(id: impl Into<String>) -> Result<StreamId, ValidationError> {
        let id = id.into();
        if id.is_empty() {
            return Err(ValidationError::EmptyStreamId);
        }
        if id.len() > MAX_STREAM_ID_BYTES {
            return Err(ValidationError::StreamIdTooLong {
                len: id.len(),
                max: MAX_STREAM_ID_BYTES,
            });
        }
        if id.chars().any(char::is_control) {
            return Err(ValidationError::StreamIdControlChar { id });
        }
        Ok(StreamId(id))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StreamId({:?})", self.0)
    }
}

impl AsRef<str> for StreamId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

/// The optimistic-concurrency condition of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version is.
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream must already have at least one event.
    Exists,
    /// The stream's last version must be exactly this (versions start at 1).
    Exact(u64),
}

impl ExpectedVersion {
    /// Whether a stream whose last version is `actual` (0 for no stream) satisfies the condition.
    pub fn accepts(self, actual: u64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => actual == 0,
            ExpectedVersion::Exists => actual > 0,
            ExpectedVersion::Exact(n) => actual == n,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedVersion::Any => f.write_str("any"),
            ExpectedVersion::NoStream => f.write_str("no-stream"),
            ExpectedVersion::Exists => f.write_str("exists"),
            ExpectedVersion::Exact(n) => write!(f, "{n}"),
        }
    }
}

impl std::str::FromStr for ExpectedVersion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "any" => Ok(ExpectedVersion::Any),
            "no-stream" => Ok(ExpectedVersion::NoStream),
            "exists" => Ok(ExpectedVersion::Exists),
            n => n.parse::<u64>().map(ExpectedVersion::Exact).map_err(|_| {
                format!("expected version {n:?} is not any, no-stream, exists or a number")
            }),
        }
    }
}

/// Who and what caused an event. Unknown keys are kept (sorted) so callers can add context.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EventMetadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// Parses JSON text and prints it back compactly with object keys sorted, so that the stored
/// text (and therefore the hash and the idempotency comparison) does not depend on whitespace or
/// key order in the caller's input.
pub fn canonical_json(field: &'static str, text: &str) -> Result<String, ValidationError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| ValidationError::InvalidJson {
            field,
            message: e.to_string(),
        })?;
    Ok(canonical_value(&value))
}

fn canonical_value(value: &serde_json::Value) -> String {
    // serde_json's default map is a BTreeMap, so `to_string` already sorts keys; sort explicitly
    // anyway so that enabling `preserve_order` elsewhere in the build cannot change stored bytes.
    fn sorted(v: &serde_json::Value) -> serde_json::Value {
        match v {
            serde_json::Value::Object(map) => {
                let ordered: BTreeMap<&String, serde_json::Value> =
                    map.iter().map(|(k, v)| (k, sorted(v))).collect();
                serde_json::Value::Object(
                    ordered.into_iter().map(|(k, v)| (k.clone(), v)).collect(),
                )
            }
            serde_json::Value::Array(items) => {
                serde_json::Value::Array(items.iter().map(sorted).collect())
            }
            other => other.clone(),
        }
    }
    sorted(value).to_string()
}

/// An event to append. Its data and metadata are canonical JSON text by construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    event_id: Uuid,
    event_type: String,
    schema_version: u32,
    data: String,
    metadata: String,
}

impl NewEvent {
    /// An event with a generated id, schema version 1 and empty metadata. Generated ids are
    /// UUIDv7 (time-ordered), so the event-id index grows at its right edge instead of touching a
    /// random page on every insert.
    pub fn new(event_type: impl Into<String>, data: &serde_json::Value) -> NewEvent {
        NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            data: canonical_value(data),
            metadata: "{}".to_owned(),
        }
    }

    /// An event whose data is given as JSON text (validated and canonicalised).
    pub fn from_json_text(
        event_type: impl Into<String>,
        data: &str,
    ) -> Result<NewEvent, ValidationError> {
        Ok(NewEvent {
            event_id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version: 1,
            data: canonical_json("data", data)?,
            metadata: "{}".to_owned(),
        })
    }

    pub fn with_id(mut self, event_id: Uuid) -> NewEvent {
        self.event_id = event_id;
        self
    }

    pub fn with_schema_version(mut self, schema_version: u32) -> NewEvent {
        self.schema_version = schema_version;
        self
    }

    pub fn with_metadata(mut self, metadata: &EventMetadata) -> NewEvent {
        let value = serde_json::to_value(metadata).unwrap_or_default();
        self.metadata = canonical_value(&value);
        self
    }

    /// Metadata given as JSON text; it must be an object.
    pub fn with_metadata_text(mut self, metadata: &str) -> Result<NewEvent, ValidationError> {
        let canonical = canonical_json("metadata", metadata)?;
        if !canonical.starts_with('{') {
            return Err(ValidationError::MetadataNotObject { got: canonical });
        }
        self.metadata = canonical;
        Ok(self)
    }

    pub fn event_id(&self) -> Uuid {
        self.event_id
    }
    pub fn event_type(&self) -> &str {
        &self.event_type
    }
    pub fn schema_version(&self) -> u32 {
        self.schema_version
    }
    pub fn data(&self) -> &str {
        &self.data
    }
    pub fn metadata(&self) -> &str {
        &self.metadata
    }

    /// Checks the type and the size; `max_bytes` bounds data plus metadata.
    pub fn validate(&self, max_bytes: usize) -> Result<(), ValidationError> {
        if self.event_type.is_empty() {
            return Err(ValidationError::EmptyEventType);
        }
        if self.event_type.len() > MAX_EVENT_TYPE_BYTES {
            return Err(ValidationError::EventTypeTooLong {
                event_type: self.event_type.chars().take(40).collect(),
                len: self.event_type.len(),
                max: MAX_EVENT_TYPE_BYTES,
            });
        }
        if self
            .event_type
            .chars()
            .any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(ValidationError::EventTypeInvalidChar {
                event_type: self.event_type.clone(),
            });
        }
        if self.schema_version == 0 {
            return Err(ValidationError::ZeroSchemaVersion);
        }
        let size = self.data.len() + self.metadata.len();
        if size > max_bytes {
            return Err(ValidationError::EventTooLarge {
                event_id: self.event_id,
                size,
                max: max_bytes,
            });
        }
        Ok(())
    }

    /// Whether a recorded event holds exactly this content (used for idempotent retries).
    pub fn same_content_as(&self, stream_id: &str, recorded: &RecordedEvent) -> bool {
        recorded.event_id == self.event_id
            && recorded.stream_id == stream_id
            && recorded.event_type == self.event_type
            && recorded.schema_version == self.schema_version
            && recorded.data == self.data
            && recorded.metadata == self.metadata
    }
}

/// An event as the log holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub position: u64,
    pub stream_id: String,
    pub stream_version: u64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: u32,
    /// The exact JSON text that was hashed.
    pub data: String,
    /// The exact JSON text that was hashed.
    pub metadata: String,
    /// Microseconds since the Unix epoch, UTC.
    pub recorded_at_micros: i64,
    pub prev_hash: Hash,
    pub hash: Hash,
}

impl RecordedEvent {
    pub fn chain_fields(&self) -> ChainFields<'_> {
        ChainFields {
            position: self.position,
            stream_id: &self.stream_id,
            stream_version: self.stream_version,
            event_id: &self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            data: &self.data,
            metadata: &self.metadata,
            recorded_at_micros: self.recorded_at_micros,
        }
    }

    /// The hash this event should carry given its stored previous hash.
    pub fn computed_hash(&self) -> Hash {
        chain_hash(&self.prev_hash, &self.chain_fields())
    }

    pub fn recorded_at(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.recorded_at_micros).unwrap_or_default()
    }

    pub fn data_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null)
    }

    pub fn metadata_value(&self) -> EventMetadata {
        serde_json::from_str(&self.metadata).unwrap_or_default()
    }
}

/// The JSON form used by the CLI and, later, the API: data and metadata embedded verbatim.
impl Serialize for RecordedEvent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            position: u64,
            stream_id: &'a str,
            stream_version: u64,
            event_id: &'a Uuid,
            event_type: &'a str,
            schema_version: u32,
            data: &'a RawValue,
            metadata: &'a RawValue,
            recorded_at: String,
            prev_hash: &'a Hash,
            hash: &'a Hash,
        }
        fn raw<E: serde::ser::Error>(text: &str) -> Result<&RawValue, E> {
            serde_json::from_str(text).map_err(E::custom)
        }
        Wire {
            position: self.position,
            stream_id: &self.stream_id,
            stream_version: self.stream_version,
            event_id: &self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            data: raw::<S::Error>(&self.data)?,
            metadata: raw::<S::Error>(&self.metadata)?,
            recorded_at: self
                .recorded_at()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            prev_hash: &self.prev_hash,
            hash: &self.hash,
        }
        .serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_id_limits() {
        assert_eq!(StreamId::new(""), Err(ValidationError::EmptyStreamId));
        assert!(matches!(
            StreamId::new("x".repeat(MAX_STREAM_ID_BYTES + 1)),
            Err(ValidationError::StreamIdTooLong { len: 257, max: 256 })
        ));
        assert!(StreamId::new("x".repeat(MAX_STREAM_ID_BYTES)).is_ok());
        assert!(matches!(
            StreamId::new("a\nb"),
            Err(ValidationError::StreamIdControlChar { .. })
        ));
        assert!(StreamId::new("giám-sát/2024-01").is_ok());
    }

    #[test]
    fn canonical_json_sorts_keys_and_drops_whitespace() {
        let a = canonical_json(
            "data",
            r#"{ "b": 1, "a": {"d": [1, 2], "c": "Tuần Giáo"} }"#,
        );
        assert_eq!(
            a.as_deref(),
            Ok(r#"{"a":{"c":"Tuần Giáo","d":[1,2]},"b":1}"#)
        );
        let err = canonical_json("data", "{oops").unwrap_err();
        assert!(
            err.to_string().starts_with("data is not valid JSON"),
            "{err}"
        );
    }

    #[test]
    fn metadata_must_be_an_object() {
        let e = NewEvent::new("T", &serde_json::json!({})).with_metadata_text("[1]");
        assert!(matches!(e, Err(ValidationError::MetadataNotObject { .. })));
    }

    #[test]
    fn size_limit_counts_data_and_metadata() {
        let e = NewEvent::new("T", &serde_json::json!({"x": "a".repeat(100)}));
        assert!(e.validate(1000).is_ok());
        assert!(matches!(
            e.validate(50),
            Err(ValidationError::EventTooLarge { max: 50, .. })
        ));
        let bad = NewEvent::new("Bad Type", &serde_json::json!(null));
        assert!(matches!(
            bad.validate(1000),
            Err(ValidationError::EventTypeInvalidChar { .. })
        ));
    }

    #[test]
    fn expected_version_parsing_and_acceptance() {
        assert_eq!("any".parse(), Ok(ExpectedVersion::Any));
        assert_eq!("7".parse(), Ok(ExpectedVersion::Exact(7)));
        assert!("seven".parse::<ExpectedVersion>().is_err());
        assert!(ExpectedVersion::NoStream.accepts(0));
        assert!(!ExpectedVersion::NoStream.accepts(1));
        assert!(ExpectedVersion::Exists.accepts(3));
        assert!(!ExpectedVersion::Exists.accepts(0));
        assert!(ExpectedVersion::Exact(2).accepts(2));
    }
}
