//! The SQLite backend: one file, WAL journal, `synchronous=FULL`, a busy timeout, and
//! `BEGIN IMMEDIATE` for every write so that two processes on one file serialize their appends.

use std::collections::HashSet;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use giamsat_types::{ExpectedVersion, Hash, NewEvent, Position, RecordedEvent, StreamId};
use sqlx::migrate::Migrator;
use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, Sqlite};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::appender::{self, AppendHandle, Snapshot, WriteBackend, WriteTx};
use crate::common::{
    self, AppenderSlot, head_from_row, refuse_newer_schema, stored_hash, to_i64, to_u64,
};
use crate::lease::{self, Lease};
use crate::{
    AppendResult, BackendKind, Direction, EventFilter, EventStore, Head, StoreError, StoreOptions,
    StreamInfo, prefix_upper_bound, redact_url, validate_append,
};

const COLUMNS: &str = "position, stream_id, stream_version, event_id, event_type, \
     schema_version, data, metadata, recorded_at_us, prev_hash, hash";

/// Most bound parameters per statement (SQLite allows 32766).
const MAX_PARAMS: usize = 30_000;

fn migrator() -> Migrator {
    common::migrator(&[(
        1,
        "events",
        include_str!("../migrations/sqlite/0001_events.sql"),
    )])
}

/// An event store in one SQLite file.
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    appender: AppenderSlot,
    commits: watch::Receiver<Position>,
    options: StoreOptions,
    /// Where leases are kept: lock files next to this database file, or, for a database in
    /// memory, the set of names held.
    leases: Leases,
}

#[derive(Debug)]
enum Leases {
    Files(PathBuf),
    Memory(Arc<Mutex<HashSet<String>>>),
}

impl SqliteStore {
    /// Opens (creating when absent) the file a `sqlite://PATH` URL names and migrates it.
    pub async fn open(url: &str, options: StoreOptions) -> Result<SqliteStore, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidUrl {
                url: redact_url(url),
                reason: e.to_string(),
            })?
            .create_if_missing(true)
            // Smaller pages for new databases: an append batch of many streams dirties one index
            // page per stream, each written whole to the WAL before the commit's fsync (16
            // writers: about 21,000 events/s at 2 KiB against 19,000 at 4 KiB; reads stay above
            // 250,000 events/s). An existing database keeps the page size it was created with.
            .page_size(2048)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true)
            // Checkpoint every 4,000 WAL pages (8 MiB at 2 KiB pages) instead of SQLite's 1,000.
            // A checkpoint runs inside the commit that crosses the threshold; the hot pages (the
            // right edges of the indexes) are rewritten many times between checkpoints, so fewer,
            // larger checkpoints write less in all (16 writers: 1.07 ms per commit at 1,000 pages
            // of 4 KiB, 0.55 ms at 10,000), but each one stalls its commit longer (up to 300 ms at
            // 10,000 pages of 4 KiB). 4,000 keeps most of the throughput with append p99 near 2 ms
            // at 1,000 events/s; 8,192 measured no better. A background checkpointer was tried and
            // rejected: its fsyncs of the database file slowed every commit.
            .pragma("wal_autocheckpoint", "4000");
        // The appender's own connection gets a large page cache (a negative size is in KiB):
        // with the default 2 MiB, appends to many concurrent streams re-read index pages from
        // the OS (measured: 12,700 events/s with 16 writers at 2 MiB, 16,000 at 16 MiB). Read
        // connections keep the default, so a long scan such as verify stays small.
        let writer_connect = connect.clone().pragma(
            "cache_size",
            format!("-{}", (options.sqlite_cache_bytes / 1024).max(64)),
        );
        // No ping before each acquire: it is a round trip to the connection's worker thread on
        // every append, and a local file has no connection to lose.
        let writer = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .connect_with(writer_connect)
            .await
            .map_err(StoreError::db("opening the SQLite database"))?;
        check_schema(&writer).await?;
        migrator().run(&writer).await?;
        // After the writer has created the file, so that its absolute path resolves.
        let leases = lease_place(url, &connect);
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(options.max_connections.max(2))
            .connect_with(connect)
            .await
            .map_err(StoreError::db("opening the SQLite database"))?;

        let head = {
            let mut conn = pool
                .acquire()
                .await
                .map_err(StoreError::db("reading the head"))?;
            read_head(&mut conn).await?.0
        };
        let (commits_tx, commits) = watch::channel(head);
        let (sender, queue) = mpsc::channel(options.queue_capacity.max(1));
        let task = tokio::spawn(appender::run(
            Backend { pool: writer },
            queue,
            commits_tx,
            options.max_batch.max(1),
        ));
        Ok(SqliteStore {
            pool,
            appender: AppenderSlot::new(AppendHandle::new(sender), task),
            commits,
            options,
            leases,
        })
    }

    /// The connection pool, for tests and benchmarks that need raw SQL.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

/// Where the leases of the database `url` are kept: lock files next to its file (by absolute
/// path, so processes started in other folders find the same files), or in memory for a
/// database that lives in memory.
fn lease_place(url: &str, connect: &SqliteConnectOptions) -> Leases {
    let file = connect.get_filename();
    let in_memory = url.contains(":memory:")
        || url.contains("mode=memory")
        || file.to_string_lossy().starts_with("file:sqlx-in-memory");
    if in_memory {
        return Leases::Memory(Arc::default());
    }
    let absolute = std::fs::canonicalize(file).unwrap_or_else(|_| file.to_path_buf());
    Leases::Files(absolute)
}

/// Refuses a database migrated by a newer binary.
async fn check_schema(pool: &SqlitePool) -> Result<(), StoreError> {
    let exists: Option<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations'",
    )
    .fetch_optional(pool)
    .await
    .map_err(StoreError::db("checking the schema version"))?;
    if exists.is_none() {
        return Ok(());
    }
    let found: Option<i64> = sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
        .fetch_one(pool)
        .await
        .map_err(StoreError::db("checking the schema version"))?;
    refuse_newer_schema(found, &migrator())
}

async fn read_head(conn: &mut sqlx::SqliteConnection) -> Result<(Position, Hash), StoreError> {
    let row: Option<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1")
            .fetch_optional(conn)
            .await
            .map_err(StoreError::db("reading the head"))?;
    head_from_row(row)
}

/// Decodes the event columns (in `COLUMNS` order) starting at column `at`.
fn decode(row: &SqliteRow, at: usize) -> Result<RecordedEvent, StoreError> {
    let position = to_u64(
        row.try_get::<i64, _>(at)
            .map_err(StoreError::db("decoding an event"))?,
    );
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    let get_err = |e: sqlx::Error| corrupt(e.to_string());
    let id_bytes: Vec<u8> = row.try_get(at + 3).map_err(get_err)?;
    let event_id = Uuid::from_slice(&id_bytes)
        .map_err(|_| corrupt(format!("event id is {} bytes, expected 16", id_bytes.len())))?;
    let prev: Vec<u8> = row.try_get(at + 9).map_err(get_err)?;
    let hash: Vec<u8> = row.try_get(at + 10).map_err(get_err)?;
    Ok(RecordedEvent {
        position,
        stream_id: row.try_get(at + 1).map_err(get_err)?,
        stream_version: to_u64(row.try_get(at + 2).map_err(get_err)?),
        event_id,
        event_type: row.try_get(at + 4).map_err(get_err)?,
        schema_version: u32::try_from(row.try_get::<i64, _>(at + 5).map_err(get_err)?)
            .map_err(|_| corrupt("schema version out of range".into()))?,
        data: row.try_get(at + 6).map_err(get_err)?,
        metadata: row.try_get(at + 7).map_err(get_err)?,
        recorded_at_micros: row.try_get(at + 8).map_err(get_err)?,
        prev_hash: stored_hash(position, "previous hash", &prev)?,
        hash: stored_hash(position, "hash", &hash)?,
    })
}

/// The head, the last version of each stream (one index seek each: `GROUP BY` over `IN (...)`
/// would walk every index entry of the streams) and the stored events among `ids`, as one
/// `UNION ALL` whose first column says which part a row belongs to; the first of an append's
/// snapshot statements also begins its write transaction.
fn snapshot_query<'q>(
    begin: bool,
    streams: &'q [&'q str],
    ids: &'q [Uuid],
) -> sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments> {
    let mut sql = String::from(if begin { "BEGIN IMMEDIATE; " } else { "" });
    sql.push_str(
        "SELECT * FROM (SELECT 0, position, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
         NULL, hash FROM events ORDER BY position DESC LIMIT 1)",
    );
    if !streams.is_empty() {
        let values = vec!["(?)"; streams.len()].join(",");
        sql.push_str(&format!(
            " UNION ALL SELECT 1, NULL, column1, (SELECT stream_version FROM events \
             WHERE stream_id = column1 ORDER BY stream_version DESC LIMIT 1), NULL, NULL, NULL, \
             NULL, NULL, NULL, NULL, NULL FROM (VALUES {values})"
        ));
    }
    if !ids.is_empty() {
        sql.push_str(&format!(
            " UNION ALL SELECT 2, {COLUMNS} FROM events WHERE event_id IN ({})",
            placeholders(ids.len())
        ));
    }
    let mut query = sqlx::query(AssertSqlSafe(sql));
    for s in streams {
        query = query.bind(*s);
    }
    for id in ids {
        query = query.bind(id.as_bytes().as_slice());
    }
    query
}

fn placeholders(n: usize) -> String {
    let mut s = String::with_capacity(n * 2);
    for i in 0..n {
        if i > 0 {
            s.push(',');
        }
        s.push('?');
    }
    s
}

struct Backend {
    pool: SqlitePool,
}

/// The appender's transaction on its own connection. It is managed by hand rather than with
/// sqlx's `Transaction` so that `BEGIN IMMEDIATE` travels with the snapshot read and `COMMIT` with
/// the insert: two round trips to SQLite's worker thread per commit instead of four.
struct Tx {
    conn: PoolConnection<Sqlite>,
    open: bool,
}

impl Drop for Tx {
    fn drop(&mut self) {
        // A transaction left open (the task was cancelled mid-way) must not be reused.
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

#[async_trait]
impl WriteBackend for Backend {
    type Tx = Tx;
    async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> Result<Tx, StoreError> {
        let conn = self
            .pool
            .acquire()
            .await
            .map_err(StoreError::db("beginning an append transaction"))?;
        Ok(Tx { conn, open: false })
    }
}

#[async_trait]
impl WriteTx for Tx {
    async fn snapshot(&mut self, streams: &[&str], ids: &[Uuid]) -> Result<Snapshot, StoreError> {
        let mut snapshot = Snapshot::default();
        // Usually one statement; only an append of tens of thousands of events takes several.
        let mut streams = streams.chunks(MAX_PARAMS / 2);
        let mut ids = ids.chunks(MAX_PARAMS / 2);
        loop {
            let (s, i) = (streams.next().unwrap_or(&[]), ids.next().unwrap_or(&[]));
            let begin = !self.open;
            self.open = true;
            let rows = snapshot_query(begin, s, i)
                .fetch_all(&mut *self.conn)
                .await
                .map_err(StoreError::db(
                    "reading the head, stream versions and event ids",
                ))?;
            for row in &rows {
                match row.get::<i64, _>(0) {
                    0 => {
                        let head = Some((row.get::<i64, _>(1), row.get::<Vec<u8>, _>(11)));
                        (snapshot.head, snapshot.hash) = head_from_row(head)?;
                    }
                    1 => {
                        if let Some(version) = row.get::<Option<i64>, _>(3) {
                            snapshot.versions.insert(row.get(2), to_u64(version));
                        }
                    }
                    _ => snapshot.existing.push(decode(row, 1)?),
                }
            }
            if s.len() < MAX_PARAMS / 2 && i.len() < MAX_PARAMS / 2 {
                return Ok(snapshot);
            }
        }
    }

    async fn commit(&mut self, rows: &[RecordedEvent]) -> Result<(), StoreError> {
        const COLS: usize = 11;
        let chunks: Vec<&[RecordedEvent]> = rows.chunks(MAX_PARAMS / COLS).collect();
        if chunks.is_empty() {
            sqlx::query("COMMIT")
                .execute(&mut *self.conn)
                .await
                .map_err(StoreError::db("committing an append"))?;
        }
        for (n, chunk) in chunks.iter().enumerate() {
            let mut sql = format!("INSERT INTO events ({COLUMNS}) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str("(?,?,?,?,?,?,?,?,?,?,?)");
            }
            if n + 1 == chunks.len() {
                sql.push_str("; COMMIT");
            }
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for e in *chunk {
                query = query
                    .bind(to_i64(e.position))
                    .bind(e.stream_id.as_str())
                    .bind(to_i64(e.stream_version))
                    .bind(e.event_id.as_bytes().as_slice())
                    .bind(e.event_type.as_str())
                    .bind(i64::from(e.schema_version))
                    .bind(e.data.as_str())
                    .bind(e.metadata.as_str())
                    .bind(e.recorded_at_micros)
                    .bind(e.prev_hash.as_bytes().as_slice())
                    .bind(e.hash.as_bytes().as_slice());
            }
            query
                .execute(&mut *self.conn)
                .await
                .map_err(StoreError::db("inserting and committing events"))?;
        }
        self.open = false;
        Ok(())
    }

    async fn rollback(mut self) {
        if self.open {
            // Fails harmlessly when SQLite has already rolled back (or never began).
            let _ = sqlx::query("ROLLBACK").execute(&mut *self.conn).await;
            self.open = false;
        }
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    fn backend(&self) -> BackendKind {
        BackendKind::Sqlite
    }

    async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        validate_append(&events, &self.options)?;
        self.appender
            .handle()?
            .append(stream, expected, events)
            .await
    }

    async fn read_stream(
        &self,
        stream: &StreamId,
        direction: Direction,
        from_version: Option<u64>,
        limit: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let sql = match direction {
            Direction::Forward => format!(
                "SELECT {COLUMNS} FROM events WHERE stream_id = ? AND stream_version >= ? \
                 ORDER BY stream_version ASC LIMIT ?"
            ),
            Direction::Backward => format!(
                "SELECT {COLUMNS} FROM events WHERE stream_id = ? AND stream_version <= ? \
                 ORDER BY stream_version DESC LIMIT ?"
            ),
        };
        let from = match direction {
            Direction::Forward => from_version.unwrap_or(1),
            Direction::Backward => from_version.unwrap_or(u64::MAX),
        };
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(stream.as_str())
            .bind(to_i64(from))
            .bind(to_i64(limit as u64))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("reading a stream"))?;
        rows.iter().map(|r| decode(r, 0)).collect()
    }

    async fn read_all(
        &self,
        from: Position,
        until: Option<Position>,
        limit: usize,
        filter: &EventFilter,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut sql = format!("SELECT {COLUMNS} FROM events WHERE position >= ? AND position <= ?");
        if !filter.event_types.is_empty() {
            sql.push_str(&format!(
                " AND event_type IN ({})",
                placeholders(filter.event_types.len())
            ));
        }
        if !filter.stream_prefix.is_empty() {
            sql.push_str(" AND stream_id >= ? AND stream_id < ?");
        }
        sql.push_str(" ORDER BY position ASC LIMIT ?");
        let mut query = sqlx::query(AssertSqlSafe(sql))
            .bind(to_i64(from))
            .bind(to_i64(until.unwrap_or(u64::MAX)));
        for t in &filter.event_types {
            query = query.bind(t.as_str());
        }
        if !filter.stream_prefix.is_empty() {
            query = query
                .bind(filter.stream_prefix.clone())
                .bind(prefix_upper_bound(&filter.stream_prefix));
        }
        let rows = query
            .bind(to_i64(limit as u64))
            .fetch_all(&self.pool)
            .await
            .map_err(StoreError::db("reading the log"))?;
        rows.iter().map(|r| decode(r, 0)).collect()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>, StoreError> {
        let v: Option<i64> = sqlx::query_scalar(
            "SELECT stream_version FROM events WHERE stream_id = ? \
                 ORDER BY stream_version DESC LIMIT 1",
        )
        .bind(stream.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::db("reading a stream version"))?;
        Ok(v.map(to_u64))
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<StreamInfo>, StoreError> {
        let rows = sqlx::query(
            "SELECT stream_id, MAX(stream_version) FROM events \
             WHERE stream_id >= ? AND stream_id < ? AND stream_id > ? \
             GROUP BY stream_id ORDER BY stream_id LIMIT ?",
        )
        .bind(prefix)
        .bind(prefix_upper_bound(prefix))
        .bind(after.unwrap_or(""))
        .bind(to_i64(limit as u64))
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::db("listing streams"))?;
        Ok(rows
            .iter()
            .map(|r| StreamInfo {
                stream_id: r.get(0),
                version: to_u64(r.get(1)),
            })
            .collect())
    }

    async fn head(&self) -> Result<Option<Head>, StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(StoreError::db("reading the head"))?;
        let (position, hash) = read_head(&mut conn).await?;
        Ok((position > 0).then_some(Head { position, hash }))
    }

    fn commits(&self) -> watch::Receiver<Position> {
        self.commits.clone()
    }

    async fn load_checkpoint(&self, name: &str) -> Result<Option<Position>, StoreError> {
        let v: Option<i64> = sqlx::query_scalar("SELECT position FROM checkpoints WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(StoreError::db("loading a checkpoint"))?;
        Ok(v.map(to_u64))
    }

    async fn save_checkpoint(&self, name: &str, position: Position) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO checkpoints (name, position, updated_at_us) VALUES (?, ?, ?) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position, \
             updated_at_us = excluded.updated_at_us",
        )
        .bind(name)
        .bind(to_i64(position))
        .bind(chrono::Utc::now().timestamp_micros())
        .execute(&self.pool)
        .await
        .map_err(StoreError::db("saving a checkpoint"))?;
        Ok(())
    }

    fn options(&self) -> &StoreOptions {
        &self.options
    }

    async fn try_lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        lease::check_name(name)?;
        match &self.leases {
            Leases::Files(database) => Lease::try_file(name, database),
            Leases::Memory(held) => Ok(Lease::try_local(name, held)),
        }
    }

    async fn close(&self) {
        self.appender.shutdown().await;
        self.pool.close().await;
    }
}
