//! Leases (`Store::try_lease`) on both backends: exclusive across stores on one database, free
//! again when the holder releases, drops or loses it, and independent per name (and, on
//! PostgreSQL, per schema). SQLite always runs (a fresh file per test); PostgreSQL runs when
//! `GIAMSAT_TEST_POSTGRES_URL` is set (a fresh schema per test). Under `CI=true` a missing
//! PostgreSQL URL is a failure, not a skip.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use giamsat_store::{Store, StoreError, StoreOptions};
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
    /// The SQLite file, or the PostgreSQL schema.
    file: Option<PathBuf>,
    schema: Option<String>,
    _dir: Option<tempfile::TempDir>,
}

fn postgres_base() -> Option<String> {
    match std::env::var("GIAMSAT_TEST_POSTGRES_URL") {
        Ok(url) => Some(url),
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "GIAMSAT_TEST_POSTGRES_URL must be set in CI"
            );
            eprintln!("skipping: GIAMSAT_TEST_POSTGRES_URL is not set");
            None
        }
    }
}

impl TestDb {
    fn fresh(kind: Kind) -> Option<TestDb> {
        match kind {
            Kind::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let file = dir.path().join("events.db");
                Some(TestDb {
                    kind,
                    url: format!("sqlite://{}", file.display()),
                    file: Some(file),
                    schema: None,
                    _dir: Some(dir),
                })
            }
            Kind::Postgres => {
                let base = postgres_base()?;
                let schema = format!("t_{}", Uuid::new_v4().simple());
                let sep = if base.contains('?') { '&' } else { '?' };
                Some(TestDb {
                    kind,
                    url: format!("{base}{sep}schema={schema}"),
                    file: None,
                    schema: Some(schema),
                    _dir: None,
                })
            }
        }
    }

    async fn open(&self) -> Store {
        Store::open(&self.url, StoreOptions::default())
            .await
            .expect("open store")
    }

    async fn drop_schema(&self) {
        if let (Some(schema), Some(base)) = (&self.schema, postgres_base()) {
            let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect");
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&mut conn)
            .await
            .expect("drop schema");
        }
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::TestDb::fresh(super::Kind::Sqlite).expect("sqlite");
                    super::$name(&db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(db) = super::TestDb::fresh(super::Kind::Postgres) {
                        super::$name(&db).await;
                        db.drop_schema().await;
                    }
                }
            )*
        }
    };
}

both!(
    a_lease_has_one_holder_until_it_is_released,
    names_are_independent_and_an_empty_name_is_refused,
    a_lost_lease_is_reported_and_taken_over,
);

async fn a_lease_has_one_holder_until_it_is_released(db: &TestDb) {
    // Two stores on one database, as two daemons would have (here in one process: the lease
    // must exclude a second holder in the same process as well).
    let a = db.open().await;
    let b = db.open().await;
    let mut held = a
        .try_lease("scheduler")
        .await
        .expect("try")
        .expect("the first try takes a free lease");
    assert_eq!(held.name(), "scheduler");
    held.check().await.expect("held");
    assert!(b.try_lease("scheduler").await.expect("try").is_none());
    // Not re-entrant: the holder's own store cannot take it twice either.
    assert!(a.try_lease("scheduler").await.expect("try").is_none());

    // Released explicitly: the other store takes it at once.
    held.release().await;
    let taken = b
        .try_lease("scheduler")
        .await
        .expect("try")
        .expect("a released lease is free");
    assert!(a.try_lease("scheduler").await.expect("try").is_none());

    // Dropped: free as well.
    drop(taken);
    let again = a
        .try_lease("scheduler")
        .await
        .expect("try")
        .expect("a dropped lease is free");
    drop(again);
    a.close().await;
    b.close().await;
}

async fn names_are_independent_and_an_empty_name_is_refused(db: &TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    let scheduler = a.try_lease("scheduler").await.expect("try").expect("free");
    let documents = b
        .try_lease("exporter/documents")
        .await
        .expect("try")
        .expect("another name is another lease");
    let jsonl = a
        .try_lease("exporter/events-file")
        .await
        .expect("try")
        .expect("free");
    assert!(
        b.try_lease("exporter/events-file")
            .await
            .expect("try")
            .is_none()
    );
    assert!(
        a.try_lease("exporter/documents")
            .await
            .expect("try")
            .is_none()
    );
    match a.try_lease("").await {
        Err(StoreError::Lease { .. }) => {}
        other => panic!("an empty name must be refused, got {other:?}"),
    }
    if db.kind == Kind::Sqlite {
        // The lock files sit next to the database, one per name.
        let file = db.file.as_deref().expect("file");
        let canonical = std::fs::canonicalize(file).expect("canonical");
        assert!(giamsat_store::lock_file(&canonical, "exporter/documents").is_file());
        assert!(
            canonical
                .with_file_name("events.db-lease-exporter%2Fdocuments")
                .is_file()
        );
    }
    drop((scheduler, documents, jsonl));
    a.close().await;
    b.close().await;
}

async fn a_lost_lease_is_reported_and_taken_over(db: &TestDb) {
    let a = db.open().await;
    let b = db.open().await;
    let mut held = a.try_lease("scheduler").await.expect("try").expect("free");
    assert!(b.try_lease("scheduler").await.expect("try").is_none());
    match db.kind {
        Kind::Postgres => {
            // The holder's session ends behind its back (a crash, a network cut, an admin):
            // PostgreSQL frees the lock, and the holder's next check says so.
            let base = postgres_base().expect("postgres");
            let mut admin = sqlx::PgConnection::connect(&base).await.expect("connect");
            let ended: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_locks \
                 WHERE locktype = 'advisory' AND granted AND pid <> pg_backend_pid() \
                 AND ((classid::bigint << 32) | objid::bigint) = $1",
            )
            .bind(lease_key_of(db, "scheduler"))
            .fetch_all(&mut admin)
            .await
            .expect("terminate");
            assert_eq!(ended, vec![true], "exactly one session holds the lease");
        }
        Kind::Sqlite => {
            // Removing the lock file under a running holder lets another one lock a new file
            // of the same name; the holder's check notices.
            let canonical =
                std::fs::canonicalize(db.file.as_deref().expect("file")).expect("canonical");
            std::fs::remove_file(giamsat_store::lock_file(&canonical, "scheduler"))
                .expect("remove the lock file");
        }
    }
    let taken = wait_for_lease(&b, "scheduler").await;
    let err = held
        .check()
        .await
        .expect_err("the holder must learn it lost the lease");
    assert!(err.to_string().contains("lease \"scheduler\""), "{err}");
    drop(held);
    drop(taken);
    a.close().await;
    b.close().await;
}

/// PostgreSQL frees a terminated session's locks as the backend exits, a moment after the
/// termination is signalled.
async fn wait_for_lease(store: &Store, name: &str) -> giamsat_store::Lease {
    for _ in 0..200 {
        if let Some(lease) = store.try_lease(name).await.expect("try") {
            return lease;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("lease {name} was not freed within 10 s");
}

/// The advisory-lock key the store uses, found from `pg_locks` while a lease is held in a
/// schema of its own (the key is internal; the test needs it only to end the session).
fn lease_key_of(db: &TestDb, name: &str) -> i64 {
    let schema = db.schema.as_deref().expect("schema");
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("giamsat:{schema}:lease:{name}").as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_leases_of_different_schemas_do_not_contend() {
    let (Some(one), Some(two)) = (TestDb::fresh(Kind::Postgres), TestDb::fresh(Kind::Postgres))
    else {
        return;
    };
    let a = one.open().await;
    let b = two.open().await;
    let x = a.try_lease("scheduler").await.expect("try").expect("free");
    let y = b
        .try_lease("scheduler")
        .await
        .expect("try")
        .expect("the same name in another schema is another lease");
    drop((x, y));
    a.close().await;
    b.close().await;
    one.drop_schema().await;
    two.drop_schema().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_lease_held_by_another_process_is_free_when_it_exits() {
    let db = TestDb::fresh(Kind::Sqlite).expect("sqlite");
    let store = db.open().await;
    let canonical = std::fs::canonicalize(db.file.as_deref().expect("file")).expect("canonical");
    let lock = giamsat_store::lock_file(&canonical, "scheduler");
    // util-linux flock(1) takes the same flock(2) lock on the file as a daemon in another
    // process would, and holds it (with its child `sleep`) while its command runs. In a process
    // group of its own, so that both can be killed together.
    let mut child = match std::process::Command::new("flock")
        .arg("--exclusive")
        .arg(&lock)
        .args(["sleep", "60"])
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("skipping: flock(1) is not available: {e}");
            return;
        }
    };
    // Until flock(1) has the lock, the store may still take it; wait for the file and the lock.
    let mut blocked = false;
    for _ in 0..200 {
        match store.try_lease("scheduler").await.expect("try") {
            None => {
                blocked = true;
                break;
            }
            Some(lease) => {
                drop(lease);
                tokio::time::sleep(std::time::Duration::from_millis(25)).await;
            }
        }
    }
    assert!(blocked, "flock(1) never took the lock");
    // The other process dies (flock and its child, which shares the locked file): the lock
    // goes with them.
    let group = format!("-{}", child.id());
    let killed = std::process::Command::new("kill")
        .args(["-KILL", "--", &group])
        .status()
        .expect("kill");
    assert!(killed.success());
    child.wait().expect("wait");
    let lease = wait_for_lease(&store, "scheduler").await;
    drop(lease);
    store.close().await;
}
