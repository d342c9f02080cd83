//! The conformance suite every store backend must pass. SQLite always runs (a fresh file per
//! test); PostgreSQL runs when `GIAMSAT_TEST_POSTGRES_URL` is set (a fresh schema per test, so
//! tests run in parallel). Under `CI=true` a missing PostgreSQL URL is a failure, not a skip.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use giamsat_store::{Direction, EventFilter, Store, StoreError, StoreOptions, VerifyProblemKind};
use giamsat_types::{ExpectedVersion, NewEvent, StreamId, ValidationError};
use serde_json::json;
use sqlx::Connection;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
}

/// A fresh, empty database for one test.
struct TestDb {
    kind: Kind,
    url: String,
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    fn fresh(kind: Kind) -> Option<TestDb> {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("events.db").display());
                Some(TestDb {
                    kind,
                    url,
                    schema: None,
                    _dir: Some(dir),
                })
            }
            Kind::Postgres => {
                let Ok(base) = std::env::var("GIAMSAT_TEST_POSTGRES_URL") else {
                    assert!(
                        std::env::var("CI").is_err(),
                        "GIAMSAT_TEST_POSTGRES_URL must be set in CI"
                    );
                    eprintln!("skipping: GIAMSAT_TEST_POSTGRES_URL is not set");
                    return None;
                };
                let schema = format!("t_{}", Uuid::new_v4().simple());
                let sep = if base.contains('?') { '&' } else { '?' };
                Some(TestDb {
                    kind,
                    url: format!("{base}{sep}schema={schema}"),
                    schema: Some(schema),
                    _dir: None,
                })
            }
        }
    }

    async fn open(&self) -> Store {
        self.open_with(StoreOptions::default()).await
    }

    async fn open_with(&self, options: StoreOptions) -> Store {
        Store::open(&self.url, options).await.expect("open store")
    }

    /// Runs raw SQL behind the store's back, as an attacker or a careless admin would.
    async fn raw(&self, statements: &[&str]) {
        match self.kind {
            Kind::Sqlite => {
                let mut conn = sqlx::SqliteConnection::connect(&self.url)
                    .await
                    .expect("raw connection");
                for sql in statements {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                        .execute(&mut conn)
                        .await
                        .expect("raw sql");
                }
            }
            Kind::Postgres => {
                let base = std::env::var("GIAMSAT_TEST_POSTGRES_URL").expect("postgres url");
                let mut conn = sqlx::PgConnection::connect(&base)
                    .await
                    .expect("raw connection");
                let schema = self.schema.as_deref().expect("schema");
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET search_path TO {schema}")))
                    .execute(&mut conn)
                    .await
                    .expect("search path");
                for sql in statements {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_string()))
                        .execute(&mut conn)
                        .await
                        .expect("raw sql");
                }
            }
        }
    }

    /// The statements that switch off the append-only triggers (only raw SQL can do this).
    fn disable_guards(&self) -> &'static [&'static str] {
        match self.kind {
            Kind::Sqlite => &[
                "DROP TRIGGER events_no_update",
                "DROP TRIGGER events_no_delete",
            ],
            Kind::Postgres => &["ALTER TABLE events DISABLE TRIGGER USER"],
        }
    }
}

fn stream(id: &str) -> StreamId {
    StreamId::new(id).expect("valid stream id")
}

fn event(kind: &str, n: u64) -> NewEvent {
    NewEvent::new(kind, &json!({ "n": n, "đơn_vị": "Phòng Nội vụ" }))
}

async fn append_one(store: &Store, s: &str, n: u64) -> u64 {
    store
        .append(&stream(s), ExpectedVersion::Any, vec![event("Tested", n)])
        .await
        .expect("append")
        .last_position
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let db = super::TestDb::fresh(super::Kind::Sqlite).expect("sqlite");
                    super::$name(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    if let Some(db) = super::TestDb::fresh(super::Kind::Postgres) {
                        super::$name(db).await;
                    }
                }
            )*
        }
    };
}

conformance!(
    appends_and_reads_streams,
    expected_version_rules,
    concurrent_writers_conflict_and_none_is_lost,
    failing_request_fails_alone_in_a_batch,
    idempotent_retries,
    subscriber_sees_every_event_once_in_order_with_eight_writers,
    subscription_filters_and_stays_bounded,
    reopen_continues_positions_and_chain,
    verify_finds_tampered_rows,
    bad_input_is_rejected_and_writes_nothing,
    checkpoints_are_stored,
    newer_schema_is_refused,
    read_all_filters_and_limits,
    one_append_larger_than_statement_limits,
    database_failure_fails_only_its_own_request,
);

async fn appends_and_reads_streams(db: TestDb) {
    let store = db.open().await;
    assert_eq!(store.head().await.expect("head"), None);
    let s = stream("case/2024/tuan-giao");
    let events: Vec<NewEvent> = (1..=5).map(|n| event("ReportReceived", n)).collect();
    let ids: Vec<Uuid> = events.iter().map(NewEvent::event_id).collect();
    let r = store
        .append(&s, ExpectedVersion::NoStream, events)
        .await
        .expect("append");
    assert_eq!(
        (r.first_position, r.last_position, r.stream_version),
        (1, 5, 5)
    );
    assert!(!r.duplicate);
    append_one(&store, "case/2024/other", 9).await;

    let forward = store
        .read_stream(&s, Direction::Forward, None, 100)
        .await
        .expect("read");
    assert_eq!(forward.iter().map(|e| e.event_id).collect::<Vec<_>>(), ids);
    assert_eq!(
        forward.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    assert_eq!(forward[0].data, r#"{"n":1,"đơn_vị":"Phòng Nội vụ"}"#);
    let from3 = store
        .read_stream(&s, Direction::Forward, Some(3), 2)
        .await
        .expect("read");
    assert_eq!(
        from3.iter().map(|e| e.stream_version).collect::<Vec<_>>(),
        vec![3, 4]
    );
    let backward = store
        .read_stream(&s, Direction::Backward, None, 2)
        .await
        .expect("read");
    assert_eq!(
        backward
            .iter()
            .map(|e| e.stream_version)
            .collect::<Vec<_>>(),
        vec![5, 4]
    );
    let back_from2 = store
        .read_stream(&s, Direction::Backward, Some(2), 10)
        .await
        .expect("read");
    assert_eq!(
        back_from2
            .iter()
            .map(|e| e.stream_version)
            .collect::<Vec<_>>(),
        vec![2, 1]
    );

    assert_eq!(store.stream_version(&s).await.expect("version"), Some(5));
    assert_eq!(
        store
            .stream_version(&stream("nope"))
            .await
            .expect("version"),
        None
    );
    let streams = store
        .list_streams("case/2024/", None, 10)
        .await
        .expect("list");
    assert_eq!(
        streams
            .iter()
            .map(|s| (s.stream_id.as_str(), s.version))
            .collect::<Vec<_>>(),
        vec![("case/2024/other", 1), ("case/2024/tuan-giao", 5)]
    );
    let page2 = store
        .list_streams("case/", Some("case/2024/other"), 10)
        .await
        .expect("list");
    assert_eq!(page2.len(), 1);
    assert!(
        store
            .list_streams("x", None, 10)
            .await
            .expect("list")
            .is_empty()
    );

    let head = store.head().await.expect("head").expect("non-empty");
    assert_eq!(head.position, 6);
    let all = store
        .read_all(1, None, 100, &EventFilter::all())
        .await
        .expect("read all");
    assert_eq!(all.len(), 6);
    assert_eq!(all[5].hash, head.hash);
    assert_eq!(all[0].prev_hash, giamsat_types::GENESIS_HASH);
    for pair in all.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash);
        assert_eq!(pair[1].position, pair[0].position + 1);
    }
    let now = chrono::Utc::now().timestamp_micros();
    assert!((now - all[0].recorded_at_micros).abs() < 60_000_000);
    store.close().await;
}

async fn expected_version_rules(db: TestDb) {
    let store = db.open().await;
    let s = stream("case-1");
    let err = store
        .append(&s, ExpectedVersion::Exists, vec![event("A", 1)])
        .await
        .expect_err("stream does not exist");
    assert_eq!(
        err.to_string(),
        "wrong expected version for stream \"case-1\": expected exists, actual no stream"
    );
    let err = store
        .append(&s, ExpectedVersion::Exact(1), vec![event("A", 1)])
        .await
        .expect_err("stream does not exist");
    assert!(matches!(
        err,
        StoreError::WrongExpectedVersion {
            actual: 0,
            expected: ExpectedVersion::Exact(1),
            ..
        }
    ));
    store
        .append(
            &s,
            ExpectedVersion::NoStream,
            vec![event("A", 1), event("A", 2)],
        )
        .await
        .expect("first append");
    let err = store
        .append(&s, ExpectedVersion::NoStream, vec![event("A", 3)])
        .await
        .expect_err("stream exists");
    assert!(matches!(
        err,
        StoreError::WrongExpectedVersion { actual: 2, .. }
    ));
    let err = store
        .append(&s, ExpectedVersion::Exact(1), vec![event("A", 3)])
        .await
        .expect_err("stale version");
    assert_eq!(
        err.to_string(),
        "wrong expected version for stream \"case-1\": expected 1, actual 2"
    );
    let r = store
        .append(&s, ExpectedVersion::Exact(2), vec![event("A", 3)])
        .await
        .expect("exact");
    assert_eq!(r.stream_version, 3);
    let r = store
        .append(&s, ExpectedVersion::Exists, vec![event("A", 4)])
        .await
        .expect("exists");
    assert_eq!(r.stream_version, 4);
    let r = store
        .append(&s, ExpectedVersion::Any, vec![event("A", 5)])
        .await
        .expect("any");
    assert_eq!((r.stream_version, r.last_position), (5, 5));
    store.close().await;
}

async fn concurrent_writers_conflict_and_none_is_lost(db: TestDb) {
    let store = db.open().await;
    // Many tasks race to create one stream: exactly one wins.
    let mut racers = Vec::new();
    for n in 0..24 {
        let store = store.clone();
        racers.push(tokio::spawn(async move {
            store
                .append(
                    &stream("race"),
                    ExpectedVersion::NoStream,
                    vec![event("Created", n)],
                )
                .await
        }));
    }
    let mut won = 0;
    for r in racers {
        match r.await.expect("join") {
            Ok(_) => won += 1,
            Err(StoreError::WrongExpectedVersion { actual: 1, .. }) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(won, 1);

    // Optimistic read-modify-write loops on one stream: every increment lands exactly once.
    let tasks = 16;
    let per_task = 10;
    let mut workers = Vec::new();
    for t in 0..tasks {
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let s = stream("counter");
            let mut conflicts = 0u32;
            for i in 0..per_task {
                loop {
                    let v = store
                        .stream_version(&s)
                        .await
                        .expect("version")
                        .unwrap_or(0);
                    let expected = if v == 0 {
                        ExpectedVersion::NoStream
                    } else {
                        ExpectedVersion::Exact(v)
                    };
                    match store
                        .append(&s, expected, vec![event("Incremented", t * 1000 + i)])
                        .await
                    {
                        Ok(r) => {
                            assert_eq!(r.stream_version, v + 1);
                            break;
                        }
                        Err(StoreError::WrongExpectedVersion { .. }) => conflicts += 1,
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for w in workers {
        conflicts += w.await.expect("join");
    }
    let events = store
        .read_stream(&stream("counter"), Direction::Forward, None, 10_000)
        .await
        .expect("read");
    assert_eq!(events.len() as u64, tasks * per_task);
    let payloads: HashSet<String> = events.iter().map(|e| e.data.clone()).collect();
    assert_eq!(
        payloads.len() as u64,
        tasks * per_task,
        "no increment lost or doubled"
    );
    assert!(conflicts > 0, "the race should have produced conflicts");
    assert!(store.verify().await.expect("verify").is_intact());
    store.close().await;
}

async fn failing_request_fails_alone_in_a_batch(db: TestDb) {
    let store = db.open().await;
    for i in 0..40 {
        append_one(&store, &format!("s-{i}"), 0).await;
    }
    // Fire 40 appends at once (they share batches); every fourth expects a wrong version.
    let mut tasks = Vec::new();
    for i in 0..40u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let expected = if i % 4 == 0 {
                ExpectedVersion::Exact(7)
            } else {
                ExpectedVersion::Exact(1)
            };
            (
                i,
                store
                    .append(
                        &stream(&format!("s-{i}")),
                        expected,
                        vec![event("Second", i)],
                    )
                    .await,
            )
        }));
    }
    for t in tasks {
        let (i, result) = t.await.expect("join");
        if i % 4 == 0 {
            assert!(
                matches!(result, Err(StoreError::WrongExpectedVersion { .. })),
                "{i}"
            );
            let v = store
                .stream_version(&stream(&format!("s-{i}")))
                .await
                .expect("version");
            assert_eq!(v, Some(1), "a failed request writes nothing");
        } else {
            assert_eq!(result.expect("append").stream_version, 2);
        }
    }
    let head = store.head().await.expect("head").expect("head");
    assert_eq!(head.position, 40 + 30);
    assert!(store.verify().await.expect("verify").is_intact());
    store.close().await;
}

async fn idempotent_retries(db: TestDb) {
    let store = db.open().await;
    append_one(&store, "before", 0).await;
    let s = stream("case-idem");
    let batch: Vec<NewEvent> = (0..3).map(|n| event("Noted", n)).collect();
    let first = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("first");
    // A retry, even with a now-stale expected version, returns the original positions.
    let again = store
        .append(&s, ExpectedVersion::NoStream, batch.clone())
        .await
        .expect("retry");
    assert_eq!(
        (
            again.first_position,
            again.last_position,
            again.stream_version
        ),
        (
            first.first_position,
            first.last_position,
            first.stream_version
        )
    );
    assert!(again.duplicate);
    assert_eq!(store.head().await.expect("head").expect("head").position, 4);

    // Concurrent retries of one request: one copy stored, everyone gets the same positions.
    let racing: Vec<NewEvent> = (0..2).map(|n| event("Raced", n)).collect();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        let racing = racing.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(&stream("case-race"), ExpectedVersion::Any, racing)
                .await
                .expect("append")
        }));
    }
    let mut positions = HashSet::new();
    for t in tasks {
        let r = t.await.expect("join");
        positions.insert((r.first_position, r.last_position));
    }
    assert_eq!(positions.len(), 1);
    assert_eq!(
        store
            .stream_version(&stream("case-race"))
            .await
            .expect("version"),
        Some(2)
    );

    // The same id with different content is refused and names the id and position.
    let altered = NewEvent::new("Noted", &json!({"n": 99})).with_id(batch[0].event_id());
    let err = store
        .append(&s, ExpectedVersion::Any, vec![altered])
        .await
        .expect_err("different content");
    match err {
        StoreError::EventIdConflict {
            event_id, position, ..
        } => {
            assert_eq!(event_id, batch[0].event_id());
            assert_eq!(position, 2);
        }
        other => panic!("unexpected {other}"),
    }
    // The same id in another stream is a conflict too.
    let err = store
        .append(
            &stream("elsewhere"),
            ExpectedVersion::Any,
            vec![batch[1].clone()],
        )
        .await
        .expect_err("other stream");
    assert!(matches!(err, StoreError::EventIdConflict { .. }));
    // Old ids mixed with new ones are refused.
    let mixed = vec![batch[2].clone(), event("Noted", 7)];
    let err = store
        .append(&s, ExpectedVersion::Any, mixed)
        .await
        .expect_err("partial");
    assert!(matches!(err, StoreError::PartialDuplicate { .. }));
    assert_eq!(store.head().await.expect("head").expect("head").position, 6);
    store.close().await;
}

async fn subscriber_sees_every_event_once_in_order_with_eight_writers(db: TestDb) {
    let writers_per_store: Vec<Store> = match db.kind {
        // On PostgreSQL, writers use two separate stores (separate pools and appenders), as two
        // processes would; the reader uses a third.
        Kind::Postgres => vec![db.open().await, db.open().await],
        Kind::Sqlite => vec![db.open().await],
    };
    let reader = db.open().await;
    let mut subscription = reader.subscribe(0, EventFilter::all());
    let writers = 8u64;
    let per_writer = 150u64;
    let total = writers * per_writer;

    let collector = tokio::spawn(async move {
        let mut seen = Vec::with_capacity(total as usize);
        while (seen.len() as u64) < total {
            let e = tokio::time::timeout(Duration::from_secs(30), subscription.next())
                .await
                .expect("subscription stalled")
                .expect("next");
            seen.push(e);
        }
        // Nothing more arrives after the last commit.
        let extra = tokio::time::timeout(Duration::from_millis(300), subscription.next()).await;
        assert!(extra.is_err(), "an event was delivered twice or invented");
        seen
    });

    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = writers_per_store[(w as usize) % writers_per_store.len()].clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..per_writer {
                let s = stream(&format!("writer-{w}"));
                store
                    .append(
                        &s,
                        ExpectedVersion::Any,
                        vec![event("Written", w * 10_000 + i)],
                    )
                    .await
                    .expect("append");
            }
        }));
    }
    for t in tasks {
        t.await.expect("writer");
    }
    let seen = collector.await.expect("collector");
    let positions: Vec<u64> = seen.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=total).collect::<Vec<_>>());
    let ids: HashSet<Uuid> = seen.iter().map(|e| e.event_id).collect();
    assert_eq!(ids.len() as u64, total);
    for w in 0..writers {
        let versions: Vec<u64> = seen
            .iter()
            .filter(|e| e.stream_id == format!("writer-{w}"))
            .map(|e| e.stream_version)
            .collect();
        assert_eq!(versions, (1..=per_writer).collect::<Vec<_>>());
    }
    assert!(reader.verify().await.expect("verify").is_intact());
    for s in writers_per_store {
        s.close().await;
    }
    reader.close().await;
}

async fn subscription_filters_and_stays_bounded(db: TestDb) {
    let options = StoreOptions {
        subscription_batch: 16,
        ..StoreOptions::default()
    };
    let store = db.open_with(options).await;
    for i in 0..300 {
        let (s, kind) = if i % 3 == 0 {
            ("case/a", "ReportReceived")
        } else {
            ("unit/b", "VisitHeld")
        };
        store
            .append(&stream(s), ExpectedVersion::Any, vec![event(kind, i)])
            .await
            .expect("append");
    }
    // Catch up from the middle, with a filter, then go live.
    let filter = EventFilter {
        event_types: vec!["ReportReceived".into()],
        stream_prefix: "case/".into(),
    };
    let mut sub = store.subscribe(150, filter);
    let mut got = Vec::new();
    while got.len() < 50 {
        let e = tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("stalled")
            .expect("next");
        assert!(sub.buffered() < 16, "buffer exceeded the batch size");
        got.push(e);
    }
    assert!(
        got.iter()
            .all(|e| e.event_type == "ReportReceived" && e.position > 150)
    );
    assert_eq!(sub.position(), got.last().map(|e| e.position).unwrap_or(0));
    // Live: an event that matches wakes the subscriber; one that does not is skipped.
    let waiter = tokio::spawn(async move {
        tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("live event")
            .expect("next")
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    append_one(&store, "case/a", 1000).await; // type "Tested": filtered out
    store
        .append(
            &stream("case/z"),
            ExpectedVersion::Any,
            vec![event("ReportReceived", 1001)],
        )
        .await
        .expect("append");
    let live = waiter.await.expect("join");
    assert_eq!(live.stream_id, "case/z");
    assert_eq!(live.position, 302);
    store.close().await;
}

async fn reopen_continues_positions_and_chain(db: TestDb) {
    let store = db.open().await;
    for i in 0..5 {
        append_one(&store, "case-r", i).await;
    }
    let head = store.head().await.expect("head").expect("head");
    store.close().await;
    assert!(matches!(
        store
            .append(&stream("case-r"), ExpectedVersion::Any, vec![event("A", 1)])
            .await,
        Err(StoreError::Closed)
    ));

    let store = db.open().await;
    assert_eq!(store.head().await.expect("head"), Some(head));
    let r = store
        .append(
            &stream("case-r"),
            ExpectedVersion::Exact(5),
            vec![event("A", 6)],
        )
        .await
        .expect("append after reopen");
    assert_eq!((r.last_position, r.stream_version), (6, 6));
    let sixth = store
        .read_all(6, None, 1, &EventFilter::all())
        .await
        .expect("read");
    assert_eq!(sixth[0].prev_hash, head.hash);
    let report = store.verify().await.expect("verify");
    assert!(report.is_intact());
    assert_eq!((report.events_checked, report.last_position), (6, 6));
    store.close().await;
}

async fn verify_finds_tampered_rows(db: TestDb) {
    let store = db.open().await;
    for i in 0..10 {
        append_one(&store, "case-t", i).await;
    }
    let intact = store.verify().await.expect("verify");
    assert!(intact.is_intact());
    assert_eq!(intact.events_checked, 10);
    store.close().await;

    // The database itself refuses updates and deletes.
    let store = db.open().await;
    let sql = "UPDATE events SET data = '{\"n\":42}' WHERE position = 5";
    match db.kind {
        Kind::Sqlite => {
            let mut conn = sqlx::SqliteConnection::connect(&db.url)
                .await
                .expect("conn");
            let err = sqlx::raw_sql(sql)
                .execute(&mut conn)
                .await
                .expect_err("guarded");
            assert!(err.to_string().contains("append-only"), "{err}");
        }
        Kind::Postgres => {
            let base = std::env::var("GIAMSAT_TEST_POSTGRES_URL").expect("url");
            let mut conn = sqlx::PgConnection::connect(&base).await.expect("conn");
            let schema = db.schema.as_deref().expect("schema");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!("SET search_path TO {schema}")))
                .execute(&mut conn)
                .await
                .expect("path");
            let err = sqlx::raw_sql(sql)
                .execute(&mut conn)
                .await
                .expect_err("guarded");
            assert!(err.to_string().contains("append-only"), "{err}");
        }
    }

    // With the guards removed, a changed row is found at its position.
    db.raw(db.disable_guards()).await;
    db.raw(&[sql]).await;
    let report = store.verify().await.expect("verify");
    let problem = report.problem.expect("tampering found");
    assert_eq!(problem.position, 5);
    assert!(matches!(
        problem.kind,
        VerifyProblemKind::ContentChanged { .. }
    ));
    assert_eq!(report.events_checked, 5);

    // Recomputing the row's hash only moves the break to the next link.
    let row = store
        .read_all(5, Some(5), 1, &EventFilter::all())
        .await
        .expect("read")
        .remove(0);
    let fixed = row.computed_hash().to_hex();
    let update = match db.kind {
        Kind::Sqlite => format!("UPDATE events SET hash = X'{fixed}' WHERE position = 5"),
        Kind::Postgres => {
            format!("UPDATE events SET hash = '\\x{fixed}'::bytea WHERE position = 5")
        }
    };
    db.raw(&[update.as_str()]).await;
    let problem = store
        .verify()
        .await
        .expect("verify")
        .problem
        .expect("found");
    assert_eq!(problem.position, 6);
    assert!(matches!(problem.kind, VerifyProblemKind::BrokenLink { .. }));
    assert!(problem.to_string().starts_with("position 6: previous hash"));

    // A deleted row is a gap.
    db.raw(&["DELETE FROM events WHERE position >= 3 AND position <= 4"])
        .await;
    let problem = store
        .verify()
        .await
        .expect("verify")
        .problem
        .expect("found");
    assert_eq!(problem.position, 5);
    assert_eq!(problem.kind, VerifyProblemKind::Gap { expected: 3 });

    // A row whose hash is not even 32 bytes is reported at its position, not an error.
    let short = match db.kind {
        Kind::Sqlite => "UPDATE events SET hash = X'00' WHERE position = 1",
        Kind::Postgres => "UPDATE events SET hash = '\\x00'::bytea WHERE position = 1",
    };
    db.raw(&[short]).await;
    let problem = store
        .verify()
        .await
        .expect("verify")
        .problem
        .expect("found");
    assert_eq!(problem.position, 1);
    assert!(matches!(problem.kind, VerifyProblemKind::Unreadable { .. }));
    store.close().await;
}

async fn bad_input_is_rejected_and_writes_nothing(db: TestDb) {
    let options = StoreOptions {
        max_event_bytes: 1000,
        ..StoreOptions::default()
    };
    let store = db.open_with(options).await;
    append_one(&store, "case-b", 0).await;
    let s = stream("case-b");

    assert_eq!(StreamId::new(""), Err(ValidationError::EmptyStreamId));
    assert!(matches!(
        StreamId::new("x".repeat(300)),
        Err(ValidationError::StreamIdTooLong { len: 300, max: 256 })
    ));
    assert!(matches!(
        NewEvent::from_json_text("A", "{not json"),
        Err(ValidationError::InvalidJson { field: "data", .. })
    ));

    let big = NewEvent::new("Big", &json!({ "x": "a".repeat(2000) }));
    let err = store
        .append(&s, ExpectedVersion::Any, vec![event("Fine", 1), big])
        .await
        .expect_err("too large");
    assert!(
        err.to_string().contains("the limit is 1000"),
        "names the limit: {err}"
    );
    let err = store
        .append(&s, ExpectedVersion::Any, vec![])
        .await
        .expect_err("empty");
    assert!(matches!(
        err,
        StoreError::Invalid(ValidationError::NoEvents)
    ));
    let dup = event("A", 1);
    let err = store
        .append(&s, ExpectedVersion::Any, vec![dup.clone(), dup])
        .await
        .expect_err("duplicate id");
    assert!(matches!(
        err,
        StoreError::Invalid(ValidationError::DuplicateIdInAppend { .. })
    ));
    let err = store
        .append(&s, ExpectedVersion::Any, vec![event("", 1)])
        .await
        .expect_err("empty type");
    assert!(matches!(
        err,
        StoreError::Invalid(ValidationError::EmptyEventType)
    ));
    let err = store
        .append(&s, ExpectedVersion::Any, vec![event(&"T".repeat(200), 1)])
        .await
        .expect_err("long type");
    assert!(matches!(
        err,
        StoreError::Invalid(ValidationError::EventTypeTooLong { .. })
    ));
    let err = store
        .append(
            &s,
            ExpectedVersion::Any,
            vec![event("A", 1).with_schema_version(0)],
        )
        .await
        .expect_err("schema version 0");
    assert!(matches!(
        err,
        StoreError::Invalid(ValidationError::ZeroSchemaVersion)
    ));

    assert_eq!(store.head().await.expect("head").expect("head").position, 1);
    assert_eq!(store.stream_version(&s).await.expect("version"), Some(1));

    let bad_url = Store::open("mysql://x", StoreOptions::default())
        .await
        .expect_err("unsupported url");
    assert!(
        bad_url
            .to_string()
            .contains("expected sqlite://PATH or postgres://")
    );
    store.close().await;
}

async fn checkpoints_are_stored(db: TestDb) {
    let store = db.open().await;
    assert_eq!(
        store.load_checkpoint("documents").await.expect("load"),
        None
    );
    store.save_checkpoint("documents", 12).await.expect("save");
    store.save_checkpoint("archive", 3).await.expect("save");
    store.save_checkpoint("documents", 40).await.expect("save");
    store.close().await;
    let store = db.open().await;
    assert_eq!(
        store.load_checkpoint("documents").await.expect("load"),
        Some(40)
    );
    assert_eq!(
        store.load_checkpoint("archive").await.expect("load"),
        Some(3)
    );
    store.close().await;
}

async fn newer_schema_is_refused(db: TestDb) {
    let store = db.open().await;
    store.close().await;
    let checksum = match db.kind {
        Kind::Sqlite => "X'00'",
        Kind::Postgres => "decode('00', 'hex')",
    };
    let insert = format!(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', true, {checksum}, 0)"
    );
    db.raw(&[insert.as_str()]).await;
    let err = Store::open(&db.url, StoreOptions::default())
        .await
        .expect_err("newer schema");
    assert!(matches!(
        err,
        StoreError::SchemaTooNew {
            found: 9999,
            supported: 1
        }
    ));
    assert!(err.to_string().contains("newer than this binary"), "{err}");
}

async fn read_all_filters_and_limits(db: TestDb) {
    let store = Arc::new(db.open().await);
    for i in 0..20 {
        let (s, kind) = match i % 4 {
            0 => ("case/1", "A"),
            1 => ("case/2", "B"),
            2 => ("unit/1", "A"),
            _ => ("caseX", "C"),
        };
        store
            .append(&stream(s), ExpectedVersion::Any, vec![event(kind, i)])
            .await
            .expect("append");
    }
    let page = store
        .read_all(5, None, 3, &EventFilter::all())
        .await
        .expect("read");
    assert_eq!(
        page.iter().map(|e| e.position).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
    let bounded = store
        .read_all(5, Some(6), 10, &EventFilter::all())
        .await
        .expect("read");
    assert_eq!(bounded.len(), 2);
    let only_a = EventFilter {
        event_types: vec!["A".into()],
        stream_prefix: String::new(),
    };
    let a = store.read_all(1, None, 100, &only_a).await.expect("read");
    assert_eq!(a.len(), 10);
    assert!(a.iter().all(|e| e.event_type == "A"));
    let prefix = EventFilter {
        event_types: vec![],
        stream_prefix: "case/".into(),
    };
    let p = store.read_all(1, None, 100, &prefix).await.expect("read");
    assert_eq!(p.len(), 10);
    assert!(p.iter().all(|e| e.stream_id.starts_with("case/")));
    let both = EventFilter {
        event_types: vec!["A".into(), "C".into()],
        stream_prefix: "case".into(),
    };
    let b = store.read_all(1, None, 100, &both).await.expect("read");
    assert_eq!(b.len(), 10);
    assert!(b.iter().all(|e| both.matches(e)));
    store.close().await;
}

async fn one_append_larger_than_statement_limits(db: TestDb) {
    // More ids than one SQLite statement may bind: the appender must split its reads and writes.
    let store = db.open().await;
    append_one(&store, "first", 0).await;
    let events: Vec<NewEvent> = (0..20_000).map(|n| event("Bulk", n)).collect();
    let s = stream("bulk");
    let r = store
        .append(&s, ExpectedVersion::NoStream, events.clone())
        .await
        .expect("bulk append");
    assert_eq!(
        (r.first_position, r.last_position, r.stream_version),
        (2, 20_001, 20_000)
    );
    let again = store
        .append(&s, ExpectedVersion::NoStream, events)
        .await
        .expect("idempotent bulk retry");
    assert!(again.duplicate);
    assert_eq!((again.first_position, again.last_position), (2, 20_001));
    let report = store.verify().await.expect("verify");
    assert!(report.is_intact());
    assert_eq!(report.events_checked, 20_001);
    store.close().await;
}

async fn database_failure_fails_only_its_own_request(db: TestDb) {
    let store = db.open().await;
    append_one(&store, "before", 0).await;
    // A trigger (installed behind the store's back) makes the database refuse one event type, so
    // a batch containing it fails inside the transaction, after the snapshot was read.
    let boom: &[&str] = match db.kind {
        Kind::Sqlite => &[
            "CREATE TRIGGER boom BEFORE INSERT ON events WHEN NEW.event_type = 'Boom' \
             BEGIN SELECT RAISE(ABORT, 'boom refused'); END",
        ],
        Kind::Postgres => &[
            "CREATE FUNCTION boom() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             IF NEW.event_type = 'Boom' THEN RAISE EXCEPTION 'boom refused'; END IF; \
             RETURN NEW; END $$",
            "CREATE TRIGGER boom BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION boom()",
        ],
    };
    db.raw(boom).await;
    let mut tasks = Vec::new();
    for i in 0..24u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let kind = if i == 11 { "Boom" } else { "Fine" };
            let s = stream(&format!("s-{i}"));
            (
                i,
                store
                    .append(&s, ExpectedVersion::NoStream, vec![event(kind, i)])
                    .await,
            )
        }));
    }
    for t in tasks {
        let (i, result) = t.await.expect("join");
        if i == 11 {
            let err = result.expect_err("refused by the database");
            assert!(err.to_string().contains("boom refused"), "{err}");
        } else {
            result.expect("the other appends of the batch commit");
        }
    }
    // The writer connection is not left inside a transaction: later appends work.
    let r = store
        .append(
            &stream("after"),
            ExpectedVersion::NoStream,
            vec![event("Fine", 99)],
        )
        .await
        .expect("append after a failed batch");
    assert_eq!(r.last_position, 25);
    assert!(store.verify().await.expect("verify").is_intact());
    store.close().await;
}
