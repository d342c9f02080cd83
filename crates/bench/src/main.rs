//! `giamsat-bench`: throughput and latency of the giamsat event store on SQLite and PostgreSQL.
//!
//! Every scenario runs on a fresh database and prints exactly one JSON object on one line of
//! stdout (scenario, backend, params, results); progress goes to stderr. `baseline` measures raw
//! sqlx inserts of store-shaped rows on the same kind of database, the physical reference the
//! append rate is compared with. Build with `--release`: debug builds measure the compiler.

mod db;
mod measure;
mod scenarios;

use clap::{Parser, Subcommand};
use serde_json::Value;

use crate::db::DbArgs;

#[derive(Debug, Parser)]
#[command(name = "giamsat-bench", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// N concurrent writers, each appending one durable event per call to its own stream.
    Append {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, default_value_t = 16)]
        writers: usize,
        #[arg(long, default_value_t = 20_000)]
        events: usize,
    },
    /// Raw inserts of the same rows: one transaction per row, then one transaction for all.
    Baseline {
        #[command(flatten)]
        db: DbArgs,
        /// Rows inserted in one transaction.
        #[arg(long, default_value_t = 20_000)]
        events: usize,
        /// Rows inserted one transaction each (default: --events).
        #[arg(long)]
        per_row_events: Option<usize>,
    },
    /// Fills the log, then reads it all with `read_all` pages of 1000.
    ReadAll {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, default_value_t = 200_000)]
        events: usize,
    },
    /// Fills the log, then times `verify` and its peak resident memory.
    Verify {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, default_value_t = 1_000_000)]
        events: usize,
    },
    /// Lag from commit to a subscriber while one writer appends at a fixed rate.
    SubscribeLag {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long, default_value_t = 10)]
        seconds: u32,
    },
    /// Internal: verify an existing store in this process and report its peak memory.
    #[command(hide = true)]
    VerifyProcess {
        #[arg(long)]
        url: String,
    },
    /// The standard suite with the targets' parameters.
    All {
        #[command(flatten)]
        db: DbArgs,
        /// Ten times smaller sizes (and a one-second lag run), for a smoke test.
        #[arg(long)]
        quick: bool,
    },
}

fn emit(line: &Value) {
    println!("{line}");
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Append {
            db,
            writers,
            events,
        } => {
            emit(&scenarios::append(&db, writers, events).await?);
        }
        Command::Baseline {
            db,
            events,
            per_row_events,
        } => emit(&scenarios::baseline(&db, per_row_events.unwrap_or(events), events).await?),
        Command::ReadAll { db, events } => emit(&scenarios::read_all(&db, events).await?),
        Command::Verify { db, events } => emit(&scenarios::verify(&db, events).await?),
        Command::VerifyProcess { url } => emit(&scenarios::verify_process(&url).await?),
        Command::SubscribeLag { db, rate, seconds } => {
            emit(&scenarios::subscribe_lag(&db, rate, seconds).await?);
        }
        Command::All { db, quick } => {
            let n = |full: usize| if quick { full / 10 } else { full };
            let lag_seconds = if quick { 1 } else { 10 };
            // Each line is printed as soon as its scenario ends, so a late failure keeps the rest.
            for writers in [1, 16] {
                eprintln!("append, {writers} writer(s)...");
                emit(&scenarios::append(&db, writers, n(20_000)).await?);
            }
            eprintln!("baseline...");
            emit(&scenarios::baseline(&db, n(2_000), n(20_000)).await?);
            eprintln!("read-all...");
            emit(&scenarios::read_all(&db, n(200_000)).await?);
            eprintln!("verify...");
            emit(&scenarios::verify(&db, n(1_000_000)).await?);
            eprintln!("subscribe-lag...");
            emit(&scenarios::subscribe_lag(&db, 1000, lag_seconds).await?);
        }
    }
    Ok(())
}
