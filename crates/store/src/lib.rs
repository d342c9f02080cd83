//! The event store: one append-only, gap-free, hash-chained log of events, on SQLite (the
//! default) or PostgreSQL. Appends are serialized through one group-commit appender per process
//! (plus the database's own writer lock across processes), so position order is commit order and a
//! reader that asks for "everything after my checkpoint" never skips a late commit.
//!
//! Nothing in this crate knows about workflows; it stores typed, versioned JSON events by stream.

mod appender;
mod common;
mod error;
mod lease;
mod postgres;
mod sqlite;
mod subscription;
mod verify;

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use giamsat_types::{ExpectedVersion, Hash, NewEvent, Position, RecordedEvent, StreamId};
use tokio::sync::watch;

pub use error::StoreError;
pub use lease::{Lease, lock_file};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use subscription::Subscription;
pub use verify::{VerifyProblem, VerifyProblemKind, VerifyReport};

/// The database URL used when none is given.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://giamsat.db";

/// Tunables of a store. Every field has a default that matches `config/giamsat.toml`.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Largest accepted event, counting data and metadata text, in bytes.
    pub max_event_bytes: usize,
    /// Most append requests the appender commits in one transaction.
    pub max_batch: usize,
    /// Capacity of the appender's request queue; callers wait when it is full.
    pub queue_capacity: usize,
    /// How long a SQLite writer waits for another process's write lock.
    pub busy_timeout: Duration,
    /// Connections in the read pool.
    pub max_connections: u32,
    /// How often an idle subscription re-checks the log when no wake-up arrives (other processes
    /// on SQLite, a lost PostgreSQL notification).
    pub poll_interval: Duration,
    /// Events a subscription fetches per read; also the most it holds in memory.
    pub subscription_batch: usize,
    /// SQLite page cache per connection, in bytes.
    pub sqlite_cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            max_event_bytes: 1024 * 1024,
            max_batch: 512,
            queue_capacity: 4096,
            busy_timeout: Duration::from_secs(10),
            max_connections: 8,
            poll_interval: Duration::from_millis(500),
            subscription_batch: 512,
            sqlite_cache_bytes: 16 * 1024 * 1024,
        }
    }
}

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    Sqlite,
    Postgres,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Sqlite => "sqlite",
            BackendKind::Postgres => "postgres",
        })
    }
}

/// What a successful append returns. For an idempotent retry these are the original positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    pub first_position: Position,
    pub last_position: Position,
    /// The stream's version after the append (the version of its last event).
    pub stream_version: u64,
    /// True when every event was already stored with the same content and nothing was written.
    pub duplicate: bool,
}

impl AppendResult {
    pub fn positions(&self) -> std::ops::RangeInclusive<Position> {
        self.first_position..=self.last_position
    }
}

/// Direction of a stream read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

/// Which events of the whole log a read or a subscription returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Only these event types; empty means every type.
    pub event_types: Vec<String>,
    /// Only streams whose id starts with this; empty means every stream.
    pub stream_prefix: String,
}

impl EventFilter {
    pub fn all() -> EventFilter {
        EventFilter::default()
    }

    pub fn is_all(&self) -> bool {
        self.event_types.is_empty() && self.stream_prefix.is_empty()
    }

    pub fn matches(&self, event: &RecordedEvent) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && event.stream_id.starts_with(&self.stream_prefix)
    }
}

/// A stream and its last version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamInfo {
    pub stream_id: String,
    pub version: u64,
}

/// The newest event of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub position: Position,
    pub hash: Hash,
}

/// The operations every backend provides. There is deliberately no update and no delete.
#[async_trait]
pub trait EventStore: Send + Sync + fmt::Debug {
    fn backend(&self) -> BackendKind;

    /// Appends `events` to `stream` if its version satisfies `expected`. Returns only once the
    /// events are durable. Retrying with the same event ids and content returns the original
    /// positions and writes nothing.
    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError>;

    /// Reads up to `limit` events of one stream. Forward reads start at `from_version` (default
    /// 1) and go up; backward reads start at `from_version` (default the last) and go down.
    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: Direction,
        from_version: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// Reads up to `limit` events of the whole log with `from <= position <= until` (no upper
    /// bound when `until` is `None`) that match `filter`, in position order.
    async fn read_all(
        &self,
        from: Position,
        until: Option<Position>,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The last version of a stream, `None` when it has no events.
    async fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>, StoreError>;

    /// Streams whose id starts with `prefix`, in id order, after `after` (for paging).
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError>;

    /// The newest event's position and hash, `None` for an empty log.
    async fn head(&self) -> Result<Option<Head>, StoreError>;

    /// A receiver of the newest committed position known to this process: updated by this
    /// process's appender and, on PostgreSQL, by notifications from other processes.
    fn commits(&self) -> watch::Receiver<Position>;

    /// The position stored under a checkpoint name, `None` when never saved.
    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError>;

    /// Stores a checkpoint (the last position a consumer has fully handled).
    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError>;

    fn options(&self) -> &StoreOptions;

    /// Takes the lease `name` if no one holds it, without waiting: `Ok(None)` when another
    /// holder (this process or another) has it. The lease is held until the returned value is
    /// dropped or released, or its holder dies; see [`Lease`] for what it is on each backend
    /// (a PostgreSQL session advisory lock on a connection of its own, an `flock`ed file next to
    /// a SQLite database).
    async fn try_lease(&self, name: &str) -> Result<Option<Lease>, StoreError>;

    /// Stops the appender after the requests already queued, and closes the connections.
    async fn close(&self);
}

/// A cheap, cloneable handle to a store of either backend.
#[derive(Debug, Clone)]
pub struct Store(Arc<dyn EventStore>);

impl Deref for Store {
    type Target = dyn EventStore;
    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

impl Store {
    pub fn new(inner: Arc<dyn EventStore>) -> Store {
        Store(inner)
    }

    /// Whether both handles are clones of one store (one database, one appender).
    pub fn same_store(&self, other: &Store) -> bool {
        std::ptr::addr_eq(Arc::as_ptr(&self.0), Arc::as_ptr(&other.0))
    }

    /// Opens the store a URL names: `sqlite://PATH` (created when absent) or `postgres://...`
    /// (an optional `schema=NAME` query parameter selects and creates a schema). Migrations are
    /// applied; a database whose schema is newer than this binary is refused.
    pub async fn open(url: &str, options: StoreOptions) -> Result<Store, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Store(Arc::new(SqliteStore::open(url, options).await?)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Store(Arc::new(PostgresStore::open(url, options).await?)))
        } else {
            Err(StoreError::InvalidUrl {
                url: redact_url(url),
                reason: "expected sqlite://PATH or postgres://...".to_owned(),
            })
        }
    }

    /// A subscription to the whole log after `after` (0 for the beginning): it catches up, then
    /// waits for new commits. It holds at most `subscription_batch` events in memory.
    pub fn subscribe(&self, after: Position, filter: EventFilter) -> Subscription {
        Subscription::new(self.clone(), after, filter)
    }

    /// Walks the whole log in pages, recomputing every hash; memory does not grow with the log.
    pub async fn verify(&self) -> Result<VerifyReport, StoreError> {
        verify::verify(self, |_| {}).await
    }

    /// As [`Store::verify`], calling `progress` with the number of events checked after each page.
    pub async fn verify_with_progress(
        &self,
        progress: impl FnMut(u64),
    ) -> Result<VerifyReport, StoreError> {
        verify::verify(self, progress).await
    }
}

/// A URL with its password replaced, for error messages and logs.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme_end + 3],
                    &userinfo[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Checks everything about an append that does not need the database.
pub(crate) fn validate_append(
    events: &[NewEvent],
    options: &StoreOptions,
) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(giamsat_types::ValidationError::NoEvents.into());
    }
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    for event in events {
        event.validate(options.max_event_bytes)?;
        if !seen.insert(event.event_id()) {
            return Err(giamsat_types::ValidationError::DuplicateIdInAppend {
                event_id: event.event_id(),
            }
            .into());
        }
    }
    Ok(())
}

/// The exclusive upper bound of the ids that start with `prefix` under bytewise comparison.
pub(crate) fn prefix_upper_bound(prefix: &str) -> String {
    let mut upper = prefix.to_owned();
    upper.push(char::MAX);
    upper
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords() {
        assert_eq!(
            redact_url("postgres://bob:secret@db:5432/x"),
            "postgres://bob:***@db:5432/x"
        );
        assert_eq!(redact_url("postgres://bob@db/x"), "postgres://bob@db/x");
        assert_eq!(redact_url("sqlite://a.db"), "sqlite://a.db");
    }
}
