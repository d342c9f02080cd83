//! Errors of the store. Each names the stream, the versions, the position or the URL involved.

use giamsat_types::{ExpectedVersion, Position, ValidationError};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid input: {0}")]
    Invalid(#[from] ValidationError),

    #[error(
        "wrong expected version for stream {stream:?}: expected {expected}, actual {}",
        describe_version(*actual)
    )]
    WrongExpectedVersion {
        stream: String,
        expected: ExpectedVersion,
        /// The stream's last version; 0 when the stream does not exist.
        actual: u64,
    },

    #[error(
        "event id {event_id} is already recorded at position {position} in stream {stream:?} with different content"
    )]
    EventIdConflict {
        event_id: Uuid,
        position: Position,
        stream: String,
    },

    #[error(
        "append to stream {stream:?} repeats some event ids of an earlier append but not all of them (first repeated id {event_id})"
    )]
    PartialDuplicate { stream: String, event_id: Uuid },

    #[error(
        "database schema version {found} is newer than this binary supports ({supported}); upgrade giamsat"
    )]
    SchemaTooNew { found: i64, supported: i64 },

    #[error("invalid database url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("stored event at position {position} is unreadable: {reason}")]
    Corrupt { position: Position, reason: String },

    #[error("database error while {context}: {source}")]
    Database {
        context: &'static str,
        #[source]
        source: sqlx::Error,
    },

    #[error("migrating the database schema failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),

    #[error("the store is closed")]
    Closed,

    #[error("lease {name:?}: {reason}")]
    Lease { name: String, reason: String },
}

fn describe_version(version: u64) -> String {
    if version == 0 {
        "no stream".to_owned()
    } else {
        version.to_string()
    }
}

impl StoreError {
    pub(crate) fn db(context: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
        move |source| StoreError::Database { context, source }
    }

    /// True for errors a caller may retry as they are (a lost connection, a busy database).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            StoreError::Database {
                source: sqlx::Error::Io(_)
                    | sqlx::Error::PoolTimedOut
                    | sqlx::Error::PoolClosed
                    | sqlx::Error::WorkerCrashed,
                ..
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_message_names_stream_and_versions() {
        let e = StoreError::WrongExpectedVersion {
            stream: "case-1".into(),
            expected: ExpectedVersion::Exact(3),
            actual: 5,
        };
        assert_eq!(
            e.to_string(),
            "wrong expected version for stream \"case-1\": expected 3, actual 5"
        );
        let e = StoreError::WrongExpectedVersion {
            stream: "case-2".into(),
            expected: ExpectedVersion::Exists,
            actual: 0,
        };
        assert!(e.to_string().ends_with("expected exists, actual no stream"));
    }
}
