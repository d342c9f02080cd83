//! A fresh, empty database per scenario, so that no run sees another's rows, indexes or cache:
//! SQLite gets a new file in a new directory on a real disk (not tmpfs, so `fsync` costs what it
//! costs in production); PostgreSQL gets a new schema that is dropped afterwards.

use std::path::PathBuf;

use anyhow::Context;
use giamsat_store::{Store, StoreOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{AssertSqlSafe, Connection, PgConnection, SqliteConnection};
use tempfile::TempDir;

/// The database a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Where the fresh databases are made.
#[derive(Debug, Clone, clap::Args)]
pub struct DbArgs {
    #[arg(long, value_enum)]
    pub backend: Backend,
    /// Parent directory of the fresh SQLite directories. Keep it on a real disk.
    #[arg(long, default_value = "target/bench-tmp")]
    pub dir: PathBuf,
    /// PostgreSQL server; every scenario adds its own `schema=bench_...` parameter.
    #[arg(
        long,
        env = "GIAMSAT_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/test"
    )]
    pub postgres_url: String,
}

/// One fresh database. Call [`Fresh::cleanup`] when done (the SQLite directory is also removed
/// on drop; a PostgreSQL schema is not, since dropping it needs a connection).
#[derive(Debug)]
pub enum Fresh {
    Sqlite { dir: TempDir },
    Postgres { base_url: String, schema: String },
}

impl Fresh {
    pub fn new(args: &DbArgs) -> anyhow::Result<Fresh> {
        match args.backend {
            Backend::Sqlite => {
                std::fs::create_dir_all(&args.dir)
                    .with_context(|| format!("creating {}", args.dir.display()))?;
                // Absolute, so that the `sqlite://` URL does not depend on how sqlx resolves it.
                let parent = std::fs::canonicalize(&args.dir)?;
                let dir = tempfile::Builder::new()
                    .prefix("bench-")
                    .tempdir_in(parent)?;
                Ok(Fresh::Sqlite { dir })
            }
            Backend::Postgres => Ok(Fresh::Postgres {
                base_url: args.postgres_url.clone(),
                schema: format!("bench_{}", uuid::Uuid::new_v4().simple()),
            }),
        }
    }

    /// The store's URL; the store creates the file or the schema.
    pub fn store_url(&self) -> String {
        match self {
            Fresh::Sqlite { dir } => format!("sqlite://{}", dir.path().join("events.db").display()),
            Fresh::Postgres { base_url, schema } => {
                let sep = if base_url.contains('?') { '&' } else { '?' };
                format!("{base_url}{sep}schema={schema}")
            }
        }
    }

    pub async fn open_store(&self) -> anyhow::Result<Store> {
        Store::open(&self.store_url(), StoreOptions::default())
            .await
            .context("opening the store")
    }

    /// A raw SQLite connection with the store's pragmas, on a file next to the store's.
    pub async fn sqlite_connection(&self) -> anyhow::Result<SqliteConnection> {
        let Fresh::Sqlite { dir } = self else {
            anyhow::bail!("not a SQLite target");
        };
        let options = SqliteConnectOptions::new()
            .filename(dir.path().join("baseline.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full);
        Ok(SqliteConnection::connect_with(&options).await?)
    }

    /// A raw PostgreSQL connection whose `search_path` is the fresh schema (created here).
    pub async fn postgres_connection(&self) -> anyhow::Result<PgConnection> {
        let Fresh::Postgres { base_url, schema } = self else {
            anyhow::bail!("not a PostgreSQL target");
        };
        let mut conn = PgConnection::connect(base_url).await?;
        sqlx::raw_sql(AssertSqlSafe(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{schema}\"; SET search_path TO \"{schema}\""
        )))
        .execute(&mut conn)
        .await?;
        Ok(conn)
    }

    pub async fn cleanup(self) -> anyhow::Result<()> {
        match self {
            Fresh::Sqlite { dir } => dir.close().context("removing the SQLite directory"),
            Fresh::Postgres { base_url, schema } => {
                let mut conn = PgConnection::connect(&base_url).await?;
                sqlx::query(AssertSqlSafe(format!(
                    "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
                )))
                .execute(&mut conn)
                .await
                .with_context(|| format!("dropping schema {schema}"))?;
                conn.close().await?;
                Ok(())
            }
        }
    }
}
