//! The SQLite backend: one file, WAL journal, `synchronous=FULL`, a busy timeout, and
//! `BEGIN IMMEDIATE` for every write so that two processes on one file serialize their appends.

use std::collections::HashMap;
use std::str::FromStr;

use async_trait::async_trait;
use giamsat_types::{ExpectedVersion, Hash, NewEvent, Position, RecordedEvent, StreamId};
use sqlx::migrate::Migrator;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Row, Sqlite, Transaction};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use crate::appender::{self, AppendHandle, WriteBackend, WriteTx};
use crate::common::{
    self, AppenderSlot, head_from_row, refuse_newer_schema, stored_hash, to_i64, to_u64,
};
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
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .connect_with(connect)
            .await
            .map_err(StoreError::db("opening the SQLite database"))?;

        check_schema(&pool).await?;
        migrator().run(&pool).await?;

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
            Backend { pool: pool.clone() },
            queue,
            commits_tx,
            options.max_batch.max(1),
        ));
        Ok(SqliteStore {
            pool,
            appender: AppenderSlot::new(AppendHandle::new(sender), task),
            commits,
            options,
        })
    }

    /// The connection pool, for tests and benchmarks that need raw SQL.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
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

fn decode(row: &SqliteRow) -> Result<RecordedEvent, StoreError> {
    let position = to_u64(
        row.try_get::<i64, _>(0)
            .map_err(StoreError::db("decoding an event"))?,
    );
    let corrupt = |reason: String| StoreError::Corrupt { position, reason };
    let get_err = |e: sqlx::Error| corrupt(e.to_string());
    let id_bytes: Vec<u8> = row.try_get(3).map_err(get_err)?;
    let event_id = Uuid::from_slice(&id_bytes)
        .map_err(|_| corrupt(format!("event id is {} bytes, expected 16", id_bytes.len())))?;
    let prev: Vec<u8> = row.try_get(9).map_err(get_err)?;
    let hash: Vec<u8> = row.try_get(10).map_err(get_err)?;
    Ok(RecordedEvent {
        position,
        stream_id: row.try_get(1).map_err(get_err)?,
        stream_version: to_u64(row.try_get(2).map_err(get_err)?),
        event_id,
        event_type: row.try_get(4).map_err(get_err)?,
        schema_version: u32::try_from(row.try_get::<i64, _>(5).map_err(get_err)?)
            .map_err(|_| corrupt("schema version out of range".into()))?,
        data: row.try_get(6).map_err(get_err)?,
        metadata: row.try_get(7).map_err(get_err)?,
        recorded_at_micros: row.try_get(8).map_err(get_err)?,
        prev_hash: stored_hash(position, "previous hash", &prev)?,
        hash: stored_hash(position, "hash", &hash)?,
    })
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

struct Tx {
    tx: Transaction<'static, Sqlite>,
}

#[async_trait]
impl WriteBackend for Backend {
    type Tx = Tx;
    async fn begin(&self) -> Result<Tx, StoreError> {
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(StoreError::db("beginning an append transaction"))?;
        Ok(Tx { tx })
    }
}

#[async_trait]
impl WriteTx for Tx {
    async fn head(&mut self) -> Result<(Position, Hash), StoreError> {
        read_head(&mut self.tx).await
    }

    async fn stream_versions(
        &mut self,
        streams: &[&str],
    ) -> Result<HashMap<String, u64>, StoreError> {
        let mut out = HashMap::with_capacity(streams.len());
        for chunk in streams.chunks(MAX_PARAMS) {
            let sql = format!(
                "SELECT stream_id, MAX(stream_version) FROM events WHERE stream_id IN ({}) GROUP BY stream_id",
                placeholders(chunk.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for s in chunk {
                query = query.bind(*s);
            }
            let rows = query
                .fetch_all(&mut *self.tx)
                .await
                .map_err(StoreError::db("reading stream versions"))?;
            for row in rows {
                out.insert(row.get::<String, _>(0), to_u64(row.get::<i64, _>(1)));
            }
        }
        Ok(out)
    }

    async fn existing_events(&mut self, ids: &[Uuid]) -> Result<Vec<RecordedEvent>, StoreError> {
        let mut out = Vec::new();
        for chunk in ids.chunks(MAX_PARAMS) {
            let sql = format!(
                "SELECT {COLUMNS} FROM events WHERE event_id IN ({})",
                placeholders(chunk.len())
            );
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for id in chunk {
                query = query.bind(id.as_bytes().as_slice());
            }
            let rows = query
                .fetch_all(&mut *self.tx)
                .await
                .map_err(StoreError::db("looking up event ids"))?;
            for row in &rows {
                out.push(decode(row)?);
            }
        }
        Ok(out)
    }

    async fn insert(&mut self, rows: &[RecordedEvent]) -> Result<(), StoreError> {
        const COLS: usize = 11;
        for chunk in rows.chunks(MAX_PARAMS / COLS) {
            let mut sql = format!("INSERT INTO events ({COLUMNS}) VALUES ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push_str("(?,?,?,?,?,?,?,?,?,?,?)");
            }
            let mut query = sqlx::query(AssertSqlSafe(sql));
            for e in chunk {
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
                .execute(&mut *self.tx)
                .await
                .map_err(StoreError::db("inserting events"))?;
        }
        Ok(())
    }

    async fn commit(self, _head: Position) -> Result<(), StoreError> {
        self.tx
            .commit()
            .await
            .map_err(StoreError::db("committing an append"))
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
        rows.iter().map(decode).collect()
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
        rows.iter().map(decode).collect()
    }

    async fn stream_version(&self, stream: &StreamId) -> Result<Option<u64>, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT MAX(stream_version) FROM events WHERE stream_id = ?")
                .bind(stream.as_str())
                .fetch_one(&self.pool)
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

    async fn close(&self) {
        self.appender.shutdown().await;
        self.pool.close().await;
    }
}
