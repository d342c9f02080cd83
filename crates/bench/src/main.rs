//! `giamsat-bench`: throughput and latency of the giamsat event store, and of the timer scheduler
//! on top of it, on SQLite and PostgreSQL.
//!
//! Every scenario runs on a fresh database and prints exactly one JSON object on one line of
//! stdout (scenario, backend, params, results); progress goes to stderr. `baseline` measures raw
//! sqlx inserts of store-shaped rows on the same kind of database, the physical reference the
//! append rate is compared with. `timers` runs the real scheduler on the system clock (see
//! `timers.rs`). Build with `--release`: debug builds measure the compiler.

mod db;
mod http;
mod measure;
mod scenarios;
mod timers;

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
    /// Schedules timers on many cases (the scheduler rebuilds its due index from the log) and
    /// fires them on the system clock: scheduling rate, firing lateness, scheduler peak memory.
    Timers {
        #[command(flatten)]
        db: DbArgs,
        #[arg(long, default_value_t = 10_000)]
        cases: usize,
        #[arg(long, default_value_t = 10)]
        timers_per_case: usize,
        /// The due times are spread evenly over this many seconds.
        #[arg(long, default_value_t = 120.0)]
        window_seconds: f64,
        /// Seconds from the start of case creation to the first due time; creating the cases,
        /// starting the scheduler process and rebuilding its index must fit in it
        /// (default: 10 s plus 2.5 ms per case).
        #[arg(long)]
        lead_seconds: Option<f64>,
        /// Cases the scheduler fires at the same time.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
    },
    /// The daemon's HTTP API under N concurrent clients (in this process, on 127.0.0.1): the
    /// most commands/s and reads/s, their latency, and the command latency at half that rate.
    Http(http::HttpArgs),
    /// Internal: run the scheduler on an existing store until every timer has fired.
    #[command(hide = true)]
    TimersProcess {
        #[arg(long)]
        url: String,
        #[arg(long)]
        timers: usize,
        #[arg(long)]
        concurrency: usize,
        #[arg(long)]
        deadline_seconds: f64,
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
        /// Ten times smaller sizes (a one-second lag run; 10,000 timers over 12 s), for a smoke
        /// test.
        #[arg(long)]
        quick: bool,
    },
}

/// Time for creating `cases` cases and starting the scheduler before the first timer is due.
fn default_lead(cases: usize) -> f64 {
    10.0 + cases as f64 * 0.0025
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
        Command::Timers {
            db,
            cases,
            timers_per_case,
            window_seconds,
            lead_seconds,
            concurrency,
        } => {
            let args = timers::TimersArgs {
                cases,
                timers_per_case,
                window_seconds,
                lead_seconds: lead_seconds.unwrap_or_else(|| default_lead(cases)),
                concurrency,
            };
            emit(&timers::timers(&db, &args).await?);
        }
        Command::TimersProcess {
            url,
            timers,
            concurrency,
            deadline_seconds,
        } => emit(&timers::timers_process(&url, timers, concurrency, deadline_seconds).await?),
        Command::Http(args) => emit(&http::http(&args).await?),
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
            eprintln!("timers...");
            let cases = n(10_000);
            let args = timers::TimersArgs {
                cases,
                timers_per_case: 10,
                window_seconds: if quick { 12.0 } else { 120.0 },
                lead_seconds: default_lead(cases),
                concurrency: 16,
            };
            emit(&timers::timers(&db, &args).await?);
        }
    }
    Ok(())
}
