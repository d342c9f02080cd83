//! The scenarios. Each one makes its own fresh database, measures, checks that the log holds what
//! it should (a fast wrong answer is not a result), cleans up, and returns one JSON object.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use giamsat_store::{EventFilter, Store};
use giamsat_types::{ExpectedVersion, GENESIS_HASH, Hash, RecordedEvent, StreamId};
use serde_json::{Value, json};
use sqlx::{Connection, PgConnection, SqliteConnection};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

use crate::db::{Backend, DbArgs, Fresh};
use crate::measure::{ms, payload, percentile, proc_status_mib, rate, round3};

pub fn report(scenario: &str, db: &DbArgs, params: Value, results: Value) -> Value {
    json!({
        "scenario": scenario,
        "backend": db.backend.name(),
        "params": params,
        "results": results,
    })
}

async fn head(store: &Store) -> anyhow::Result<u64> {
    Ok(store.head().await?.map_or(0, |h| h.position))
}

/// `writers` tasks, each appending its share of `events` to its own stream, one event per call,
/// waiting for each append (so each writer has at most one request in the group-commit queue).
pub async fn append(db: &DbArgs, writers: usize, events: usize) -> anyhow::Result<Value> {
    ensure!(writers > 0, "--writers must be at least 1");
    let fresh = Fresh::new(db)?;
    let store = fresh.open_store().await?;

    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for w in 0..writers {
        let store = store.clone();
        let share = events / writers + usize::from(w < events % writers);
        tasks.spawn(async move {
            let stream = StreamId::new(format!("bench-writer-{w}"))?;
            let mut latencies = Vec::with_capacity(share);
            for seq in 0..share {
                let event = payload(w, seq);
                let called = Instant::now();
                store
                    .append(&stream, ExpectedVersion::Any, vec![event])
                    .await?;
                latencies.push(ms(called.elapsed()));
            }
            anyhow::Ok(latencies)
        });
    }
    let mut latencies = Vec::with_capacity(events);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done??);
    }
    let seconds = start.elapsed().as_secs_f64();
    ensure!(
        head(&store).await? == events as u64,
        "the log does not hold {events} events"
    );

    // A cheap profile of group commit: the appender stamps every event of one transaction with
    // the same `recorded_at`, so distinct stamps count (a lower bound of) the transactions.
    let transactions = count_recorded_at_stamps(&store).await?;
    store.close().await;
    fresh.cleanup().await?;

    Ok(report(
        "append",
        db,
        json!({ "writers": writers, "events": events, "events_per_append": 1 }),
        json!({
            "events": events,
            "writers": writers,
            "seconds": round3(seconds),
            "events_per_sec": rate(events, seconds),
            "append_p50_ms": percentile(&mut latencies, 50.0),
            "append_p99_ms": percentile(&mut latencies, 99.0),
            "transactions_est": transactions,
            "events_per_transaction_est": round3(events as f64 / transactions.max(1) as f64),
        }),
    ))
}

async fn count_recorded_at_stamps(store: &Store) -> anyhow::Result<usize> {
    let mut stamps = HashSet::new();
    let mut from = 1;
    loop {
        let page = store
            .read_all(from, None, 1000, &EventFilter::all())
            .await?;
        let Some(last) = page.last() else {
            return Ok(stamps.len());
        };
        from = last.position + 1;
        stamps.extend(page.iter().map(|e| e.recorded_at_micros));
    }
}

/// Rows shaped like the store's: same columns, a realistic stream spread, and a real hash chain.
struct Rows {
    position: u64,
    prev_hash: Hash,
}

impl Rows {
    fn next_row(&mut self) -> RecordedEvent {
        self.position += 1;
        let event = payload(0, self.position as usize);
        let mut row = RecordedEvent {
            position: self.position,
            stream_id: format!("bench-writer-{}", self.position % 16),
            stream_version: self.position / 16 + 1,
            event_id: event.event_id(),
            event_type: event.event_type().to_owned(),
            schema_version: event.schema_version(),
            data: event.data().to_owned(),
            metadata: event.metadata().to_owned(),
            recorded_at_micros: 1_700_000_000_000_000 + self.position as i64,
            prev_hash: self.prev_hash,
            hash: self.prev_hash,
        };
        row.hash = row.computed_hash();
        self.prev_hash = row.hash;
        row
    }
}

/// The store's `events` table without its triggers (they only fire on UPDATE and DELETE): the
/// same columns, primary key and unique indexes, so the baseline does the same physical writes.
const SQLITE_TABLE: &str = "
CREATE TABLE bench_baseline (
    position INTEGER PRIMARY KEY CHECK (position > 0), stream_id TEXT NOT NULL,
    stream_version INTEGER NOT NULL CHECK (stream_version > 0),
    event_id BLOB NOT NULL CHECK (length(event_id) = 16), event_type TEXT NOT NULL,
    schema_version INTEGER NOT NULL CHECK (schema_version > 0), data TEXT NOT NULL,
    metadata TEXT NOT NULL, recorded_at_us INTEGER NOT NULL, prev_hash BLOB NOT NULL,
    hash BLOB NOT NULL
) STRICT;
CREATE UNIQUE INDEX bench_baseline_stream_version ON bench_baseline (stream_id, stream_version);
CREATE UNIQUE INDEX bench_baseline_event_id ON bench_baseline (event_id);";

const POSTGRES_TABLE: &str = "
CREATE TABLE bench_baseline (
    position BIGINT PRIMARY KEY CHECK (position > 0), stream_id TEXT COLLATE \"C\" NOT NULL,
    stream_version BIGINT NOT NULL CHECK (stream_version > 0), event_id UUID NOT NULL,
    event_type TEXT NOT NULL, schema_version INTEGER NOT NULL CHECK (schema_version > 0),
    data TEXT NOT NULL, metadata TEXT NOT NULL, recorded_at_us BIGINT NOT NULL,
    prev_hash BYTEA NOT NULL, hash BYTEA NOT NULL
);
CREATE UNIQUE INDEX bench_baseline_stream_version ON bench_baseline (stream_id, stream_version);
CREATE UNIQUE INDEX bench_baseline_event_id ON bench_baseline (event_id);";

const INSERT_SQLITE: &str = "INSERT INTO bench_baseline (position, stream_id, stream_version, \
    event_id, event_type, schema_version, data, metadata, recorded_at_us, prev_hash, hash) \
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";

const INSERT_POSTGRES: &str = "INSERT INTO bench_baseline (position, stream_id, stream_version, \
    event_id, event_type, schema_version, data, metadata, recorded_at_us, prev_hash, hash) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

async fn insert_sqlite(conn: &mut SqliteConnection, r: &RecordedEvent) -> sqlx::Result<()> {
    sqlx::query(INSERT_SQLITE)
        .bind(r.position as i64)
        .bind(r.stream_id.as_str())
        .bind(r.stream_version as i64)
        .bind(r.event_id.as_bytes().as_slice())
        .bind(r.event_type.as_str())
        .bind(i64::from(r.schema_version))
        .bind(r.data.as_str())
        .bind(r.metadata.as_str())
        .bind(r.recorded_at_micros)
        .bind(r.prev_hash.as_bytes().as_slice())
        .bind(r.hash.as_bytes().as_slice())
        .execute(conn)
        .await
        .map(drop)
}

async fn insert_postgres(conn: &mut PgConnection, r: &RecordedEvent) -> sqlx::Result<()> {
    sqlx::query(INSERT_POSTGRES)
        .bind(r.position as i64)
        .bind(r.stream_id.as_str())
        .bind(r.stream_version as i64)
        .bind(r.event_id)
        .bind(r.event_type.as_str())
        .bind(r.schema_version as i32)
        .bind(r.data.as_str())
        .bind(r.metadata.as_str())
        .bind(r.recorded_at_micros)
        .bind(r.prev_hash.as_bytes().as_slice())
        .bind(r.hash.as_bytes().as_slice())
        .execute(conn)
        .await
        .map(drop)
}

/// Raw inserts of store-shaped rows on one connection: first `per_row` rows with one transaction
/// each (the durable-commit floor a one-event-per-transaction store would hit), then `one_tx` rows
/// in a single transaction (the insert cost with commits amortised away).
pub async fn baseline(db: &DbArgs, per_row: usize, one_tx: usize) -> anyhow::Result<Value> {
    let fresh = Fresh::new(db)?;
    let mut rows = Rows {
        position: 0,
        prev_hash: GENESIS_HASH,
    };
    let (per_row_seconds, one_tx_seconds) = match db.backend {
        Backend::Sqlite => {
            let mut conn = fresh.sqlite_connection().await?;
            sqlx::raw_sql(SQLITE_TABLE).execute(&mut conn).await?;
            let start = Instant::now();
            for _ in 0..per_row {
                // IMMEDIATE, as the store's appender does, so both take the write lock up front.
                let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
                insert_sqlite(&mut tx, &rows.next_row()).await?;
                tx.commit().await?;
            }
            let per_row_seconds = start.elapsed().as_secs_f64();
            let start = Instant::now();
            let mut tx = conn.begin_with("BEGIN IMMEDIATE").await?;
            for _ in 0..one_tx {
                insert_sqlite(&mut tx, &rows.next_row()).await?;
            }
            tx.commit().await?;
            let one_tx_seconds = start.elapsed().as_secs_f64();
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bench_baseline")
                .fetch_one(&mut conn)
                .await?;
            ensure!(
                count as usize == per_row + one_tx,
                "baseline row count is {count}"
            );
            conn.close().await?;
            (per_row_seconds, one_tx_seconds)
        }
        Backend::Postgres => {
            let mut conn = fresh.postgres_connection().await?;
            sqlx::raw_sql(POSTGRES_TABLE).execute(&mut conn).await?;
            let start = Instant::now();
            for _ in 0..per_row {
                let mut tx = conn.begin().await?;
                insert_postgres(&mut tx, &rows.next_row()).await?;
                tx.commit().await?;
            }
            let per_row_seconds = start.elapsed().as_secs_f64();
            let start = Instant::now();
            let mut tx = conn.begin().await?;
            for _ in 0..one_tx {
                insert_postgres(&mut tx, &rows.next_row()).await?;
            }
            tx.commit().await?;
            let one_tx_seconds = start.elapsed().as_secs_f64();
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM bench_baseline")
                .fetch_one(&mut conn)
                .await?;
            ensure!(
                count as usize == per_row + one_tx,
                "baseline row count is {count}"
            );
            conn.close().await?;
            (per_row_seconds, one_tx_seconds)
        }
    };
    fresh.cleanup().await?;
    Ok(report(
        "baseline",
        db,
        json!({ "per_row_events": per_row, "one_tx_events": one_tx }),
        json!({
            "per_row_seconds": round3(per_row_seconds),
            "per_row_events_per_sec": rate(per_row, per_row_seconds),
            "one_tx_seconds": round3(one_tx_seconds),
            "one_tx_events_per_sec": rate(one_tx, one_tx_seconds),
        }),
    ))
}

/// Fills the log with `total` events quickly: several tasks append batches of `BATCH` events, so
/// the appender commits a few thousand events per transaction. Each batch is built just before it
/// is appended, so the fill holds only a few batches in memory at a time. Each batch goes to a
/// new stream because the store's stream-version lookup costs time proportional to the length of
/// the streams in a transaction (see the README figures); short streams keep the fill linear.
async fn fill(store: &Store, total: usize) -> anyhow::Result<f64> {
    const TASKS: usize = 4;
    const BATCH: usize = 500;
    let start = Instant::now();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for t in 0..TASKS {
        let (store, next) = (store.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let first = next.fetch_add(BATCH, Ordering::Relaxed);
                if first >= total {
                    return anyhow::Ok(());
                }
                let stream = StreamId::new(format!("bench-fill-{}", first / BATCH))?;
                let events = (first..(first + BATCH).min(total))
                    .map(|seq| payload(t, seq))
                    .collect();
                store.append(&stream, ExpectedVersion::Any, events).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    ensure!(
        head(store).await? == total as u64,
        "the fill did not write {total} events"
    );
    Ok(start.elapsed().as_secs_f64())
}

/// Reads the whole log in pages of 1000, each starting after the last position of the previous.
pub async fn read_all(db: &DbArgs, events: usize) -> anyhow::Result<Value> {
    const PAGE: usize = 1000;
    let fresh = Fresh::new(db)?;
    let store = fresh.open_store().await?;
    let fill_seconds = fill(&store, events).await?;

    let start = Instant::now();
    let (mut from, mut read) = (1, 0);
    loop {
        let page = store
            .read_all(from, None, PAGE, &EventFilter::all())
            .await?;
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        read += page.len();
    }
    let seconds = start.elapsed().as_secs_f64();
    ensure!(read == events, "read {read} events, expected {events}");
    store.close().await;
    fresh.cleanup().await?;

    Ok(report(
        "read-all",
        db,
        json!({ "events": events, "page": PAGE }),
        json!({
            "events": read,
            "seconds": round3(seconds),
            "events_per_sec": rate(read, seconds),
            "fill_seconds": round3(fill_seconds),
        }),
    ))
}

/// Times `Store::verify` over a filled log and its peak resident memory. VmHWM is a process-wide
/// high-water mark, so it is read before verify (covering the fill), then reset to the current RSS,
/// and read again after: the second figure is the peak while verify ran.
pub async fn verify(db: &DbArgs, events: usize) -> anyhow::Result<Value> {
    let fresh = Fresh::new(db)?;
    let store = fresh.open_store().await?;
    let fill_seconds = fill(&store, events).await?;
    store.close().await;

    // Verify in a process of its own, so that its peak resident memory is verify's alone and not
    // the fill's (page caches, allocator arenas).
    let output = std::process::Command::new(std::env::current_exe()?)
        .args(["verify-process", "--url", &fresh.store_url()])
        .output()?;
    ensure!(
        output.status.success(),
        "verify process failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let child: Value = serde_json::from_slice(&output.stdout)?;
    fresh.cleanup().await?;
    ensure!(
        child["intact"] == json!(true) && child["events_checked"] == json!(events),
        "verify did not check {events} intact events: {child}"
    );
    let seconds = child["seconds"].as_f64().unwrap_or(f64::NAN);
    Ok(report(
        "verify",
        db,
        json!({ "events": events }),
        json!({
            "events": events,
            "seconds": round3(seconds),
            "events_per_sec": rate(events, seconds),
            "fill_seconds": round3(fill_seconds),
            "verify_process_peak_rss_mib": child["vmhwm_mib"],
        }),
    ))
}

/// The child side of `verify`: opens the store, verifies it, and prints one JSON object with the
/// time taken and this process's peak resident memory.
pub async fn verify_process(url: &str) -> anyhow::Result<Value> {
    let store = Store::open(url, giamsat_store::StoreOptions::default()).await?;
    let start = Instant::now();
    let report = store.verify().await?;
    let seconds = start.elapsed().as_secs_f64();
    store.close().await;
    Ok(json!({
        "intact": report.is_intact(),
        "events_checked": report.events_checked,
        "seconds": seconds,
        "vmhwm_mib": proc_status_mib("VmHWM"),
    }))
}

/// One subscriber following the log while one writer appends one event per call at `rate`/s.
///
/// The writer is open-loop: each append is issued on its schedule whether or not the previous one
/// has returned, so a slow commit does not quietly lower the offered rate (coordinated omission);
/// concurrent appends are then group-committed. The subscriber stamps each event when `next`
/// returns it; the lag is measured from the append call and from its return (the commit
/// acknowledgement). The latter can be negative: the appender wakes subscribers before it answers.
pub async fn subscribe_lag(db: &DbArgs, rate_per_sec: u32, secs: u32) -> anyhow::Result<Value> {
    ensure!(
        rate_per_sec > 0 && secs > 0,
        "--rate and --seconds must be positive"
    );
    let total = rate_per_sec as usize * secs as usize;
    let fresh = Fresh::new(db)?;
    let store = fresh.open_store().await?;

    let mut subscription = store.subscribe(0, EventFilter::all());
    let subscriber = tokio::spawn(async move {
        let mut received = HashMap::with_capacity(total);
        while received.len() < total {
            let event = subscription.next().await?;
            received.insert(event.position, Instant::now());
        }
        anyhow::Ok(received)
    });

    let stream = StreamId::new("bench-lag")?;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate_per_sec)));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let mut appends = JoinSet::new();
    for seq in 0..total {
        ticker.tick().await;
        let (store, stream, event) = (store.clone(), stream.clone(), payload(0, seq));
        appends.spawn(async move {
            let called = Instant::now();
            let done = store
                .append(&stream, ExpectedVersion::Any, vec![event])
                .await?;
            anyhow::Ok((done.first_position, called, Instant::now()))
        });
    }
    let mut acks = Vec::with_capacity(total);
    while let Some(done) = appends.join_next().await {
        acks.push(done??);
    }
    let received = tokio::time::timeout(Duration::from_secs(30), subscriber)
        .await
        .context("the subscriber did not receive every event within 30 s")???;

    let first_call = acks.iter().map(|a| a.1).min().context("no appends")?;
    let last_ack = acks.iter().map(|a| a.2).max().context("no appends")?;
    let seconds = (last_ack - first_call).as_secs_f64();
    let (mut from_call, mut from_ack, mut append_ms) = (vec![], vec![], vec![]);
    for (position, called, acked) in &acks {
        let got = received
            .get(position)
            .with_context(|| format!("position {position} was never delivered"))?;
        from_call.push(ms(got.saturating_duration_since(*called)));
        from_ack.push(if got >= acked {
            ms(*got - *acked)
        } else {
            -ms(*acked - *got)
        });
        append_ms.push(ms(*acked - *called));
    }
    store.close().await;
    fresh.cleanup().await?;

    Ok(report(
        "subscribe-lag",
        db,
        json!({ "rate": rate_per_sec, "seconds": secs, "writer": "open-loop" }),
        json!({
            "events": total,
            "seconds": round3(seconds),
            "achieved_rate": rate(total, seconds),
            "commit_to_subscriber_p50_ms": percentile(&mut from_ack, 50.0),
            "commit_to_subscriber_p99_ms": percentile(&mut from_ack, 99.0),
            "commit_to_subscriber_max_ms": percentile(&mut from_ack, 100.0),
            "call_to_subscriber_p50_ms": percentile(&mut from_call, 50.0),
            "call_to_subscriber_p99_ms": percentile(&mut from_call, 99.0),
            "call_to_subscriber_max_ms": percentile(&mut from_call, 100.0),
            "append_p50_ms": percentile(&mut append_ms, 50.0),
            "append_p99_ms": percentile(&mut append_ms, 99.0),
        }),
    ))
}
