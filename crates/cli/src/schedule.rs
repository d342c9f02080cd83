//! `giamsat timers list`, `giamsat simulate` and `giamsat scheduler run`: the scheduler from the
//! command line.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Utc};
use clap::{Args, Subcommand};
use giamsat_cases::{FireOutcome, list_cases, load_case, pinned};
use giamsat_engine::{AppliedEffect, TimerInstance, TimerOutcome, TimerState, timers, zone};
use giamsat_scheduler::{Clock, Firing, ManualClock, Scheduler, run_crons};
use giamsat_store::Store;
use serde_json::json;

use crate::config::{Config, load_calendar};
use crate::output;

#[derive(Debug, Subcommand)]
pub enum TimersCommand {
    /// List timers: due time, what each will do, and its state (pending, due, inactive, fired,
    /// rejected, skipped)
    List(ListArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this case
    #[arg(long, value_name = "CASE")]
    case: Option<String>,
    /// Also timers whose command does not apply to the case as it is now
    #[arg(long)]
    all: bool,
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Fire everything due up to this time (RFC 3339, e.g. 2024-05-14T00:00:00+07:00)
    #[arg(long, value_name = "TIME")]
    until: String,
    /// Only this case
    #[arg(long, value_name = "CASE")]
    case: Option<String>,
    /// Start of the simulated time [default: the start of a --clock sim:TIME, else the earliest
    /// pending timer]; timers due before it fire late, at this time
    #[arg(long, value_name = "TIME")]
    from: Option<String>,
    /// One JSON object per line
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
pub enum SchedulerCommand {
    /// Run the timers and cron schedules until interrupted (Ctrl-C, SIGTERM)
    Run,
}

fn parse_time(text: &str, what: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .with_context(|| format!("{what} {text:?} is not an RFC 3339 time"))
}

fn state_text(timer: &TimerInstance, now: DateTime<Utc>) -> String {
    match &timer.state {
        TimerState::Pending if timer.due <= now => "due".to_owned(),
        TimerState::Pending => "pending".to_owned(),
        TimerState::Inactive => "inactive".to_owned(),
        TimerState::Done(record) => {
            let late = if record.late { " late" } else { "" };
            match record.outcome {
                TimerOutcome::Fired => format!("fired{late} {}", record.fired_at),
                TimerOutcome::Rejected => format!(
                    "rejected{late} {} ({})",
                    record.fired_at,
                    record.code.as_deref().unwrap_or("-")
                ),
                TimerOutcome::Skipped => format!("skipped{late} {}", record.fired_at),
            }
        }
    }
}

pub async fn list(
    store: &Store,
    config: &Config,
    clock: &Clock,
    args: ListArgs,
) -> Result<ExitCode> {
    let calendar = load_calendar(&config.calendar.dir)?;
    let cases = match &args.case {
        Some(case) => vec![case.clone()],
        None => list_cases(store).await?,
    };
    let now = clock.now();
    let mut rows = Vec::new();
    for id in cases {
        let Some(case) = load_case(store, &id).await? else {
            bail!("case {id:?} does not exist");
        };
        let workflow = pinned(store, &case.state).await?;
        let tz = zone(&workflow);
        for timer in timers(&workflow, &case.state, &calendar) {
            if timer.state == TimerState::Inactive && !args.all {
                continue;
            }
            rows.push((timer.due.with_timezone(&tz).fixed_offset(), timer));
        }
    }
    rows.sort_by(|a, b| (a.0, &a.1.case, &a.1.instance).cmp(&(b.0, &b.1.case, &b.1.instance)));
    for (due, timer) in &rows {
        if args.json {
            let mut value = serde_json::to_value(timer)?;
            value["state_text"] = json!(state_text(timer, now));
            output::line(&serde_json::to_string(&value)?)?;
        } else {
            output::line(&format!(
                "{}\t{}\t{}\t{}\t{} {}\t{}",
                due.format("%Y-%m-%d %H:%M %:z"),
                timer.case,
                timer.timer,
                timer.key.as_deref().unwrap_or("-"),
                timer.command,
                timer.input,
                state_text(timer, now)
            ))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn describe(firing: &Firing) -> (String, String) {
    match &firing.outcome {
        FireOutcome::Fired(events) => {
            let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
            let stages: Vec<String> = events
                .iter()
                .flat_map(|e| &e.data.effects)
                .filter_map(|effect| match effect {
                    AppliedEffect::Stage { from, to } => Some(format!("stage {from} → {to}")),
                    _ => None,
                })
                .collect();
            let mut text = types.join(", ");
            if !stages.is_empty() {
                text = format!("{text}; {}", stages.join(", "));
            }
            ("fired".to_owned(), text)
        }
        FireOutcome::Rejected(r) => (
            "rejected".to_owned(),
            format!("{}: {}", r.code, r.message_en),
        ),
        FireOutcome::Skipped => (
            "skipped".to_owned(),
            "late; its policy skips late timers".to_owned(),
        ),
        FireOutcome::AlreadyDone(_) => ("already-done".to_owned(), String::new()),
        FireOutcome::NotDue => (
            "not-due".to_owned(),
            "its date changed or it no longer applies".to_owned(),
        ),
    }
}

pub async fn simulate(
    store: &Store,
    config: &Config,
    clock: &Clock,
    args: SimulateArgs,
) -> Result<ExitCode> {
    let calendar = load_calendar(&config.calendar.dir)?;
    let until = parse_time(&args.until, "--until")?;
    let from = match (&args.from, clock) {
        (Some(text), _) => Some(parse_time(text, "--from")?),
        (None, Clock::Simulated(_)) => Some(clock.now()),
        (None, _) => None,
    };
    let start = from.unwrap_or(DateTime::<Utc>::MIN_UTC);
    let manual = ManualClock::new(start);
    let options = config.scheduler.options();
    let scheduler = match &args.case {
        Some(case) => {
            if load_case(store, case).await?.is_none() {
                bail!("case {case:?} does not exist");
            }
            Scheduler::for_case(
                store.clone(),
                Clock::Manual(manual.clone()),
                calendar,
                options,
                case,
            )
        }
        None => Scheduler::new(
            store.clone(),
            Clock::Manual(manual.clone()),
            calendar,
            options,
        ),
    };
    scheduler.rebuild().await?;
    if from.is_none()
        && let Some(first) = scheduler.next_due()
    {
        manual.set(first);
    }
    if until < manual.now() {
        bail!(
            "--until {} is before the simulation's start {}",
            args.until,
            manual.now().to_rfc3339()
        );
    }
    let firings = scheduler.advance_to(&manual, until).await?;
    // Times are printed in each case's workflow zone.
    let mut zones: std::collections::HashMap<String, chrono_tz::Tz> = Default::default();
    for firing in &firings {
        if !zones.contains_key(&firing.case)
            && let Some(case) = load_case(store, &firing.case).await?
        {
            let workflow = pinned(store, &case.state).await?;
            zones.insert(firing.case.clone(), zone(&workflow));
        }
    }
    let tz_of = |case: &str| {
        zones
            .get(case)
            .copied()
            .unwrap_or(chrono_tz::Asia::Ho_Chi_Minh)
    };
    for firing in &firings {
        let tz = tz_of(&firing.case);
        let (outcome, detail) = describe(firing);
        if args.json {
            output::line(&serde_json::to_string(&json!({
                "case": firing.case,
                "timer": firing.timer(),
                "key": firing.key(),
                "instance": firing.instance,
                "due": firing.due.to_rfc3339(),
                "fired_at": firing.fired_at.to_rfc3339(),
                "outcome": outcome,
                "detail": detail,
            }))?)?;
        } else {
            output::line(&format!(
                "{}\t{}\t{}\t{}\t{}\t{}",
                firing.due.with_timezone(&tz).format("%Y-%m-%d %H:%M %:z"),
                firing.case,
                firing.timer(),
                firing.key().unwrap_or("-"),
                outcome,
                detail
            ))?;
        }
    }
    if !args.json {
        eprintln!(
            "{} timer(s) acted on up to {}; {} pending after it",
            firings.len(),
            until.to_rfc3339(),
            scheduler.pending()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs the scheduler and the cron schedules until SIGINT or SIGTERM.
pub async fn run(
    store: &Store,
    config: &Config,
    clock: Clock,
    calendar_dir: &Path,
) -> Result<ExitCode> {
    let calendar = load_calendar(calendar_dir)?;
    let schedules = config
        .cron
        .iter()
        .map(|c| c.schedule())
        .collect::<Result<Vec<_>>>()?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    // One scheduler per store: a daemon (or another `scheduler run`) that runs it holds the
    // lease; this one waits for it, so timers are not fired twice over.
    let interrupted = async {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    let Some(mut lease) = giamsat_server::lease::wait_for_lease(
        store,
        giamsat_server::lease::SCHEDULER,
        || {
            eprintln!(
                "waiting: another process (a daemon or `giamsat scheduler run`) runs the scheduler \
                 on this store; this one starts when it stops (Ctrl-C gives up)"
            )
        },
        interrupted,
    )
    .await?
    else {
        eprintln!("stopped before the scheduler lease was free");
        return Ok(ExitCode::SUCCESS);
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let scheduler = Scheduler::new(
        store.clone(),
        clock.clone(),
        calendar,
        config.scheduler.options(),
    );
    let timers = tokio::spawn(scheduler.clone().run(shutdown.clone()));
    let crons = tokio::spawn(run_crons(store.clone(), clock.clone(), schedules, shutdown));
    eprintln!(
        "scheduler running on the {} clock; Ctrl-C stops it",
        clock.describe()
    );
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    let mut timers = timers;
    let mut crons = crons;
    let mut crons_done = false;
    let mut check = tokio::time::interval(giamsat_server::lease::CHECK);
    let mut lost = None;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = hangup.recv() => reload_calendar(store, &scheduler, calendar_dir).await,
            _ = check.tick() => {
                if let Err(e) = lease.check().await {
                    lost = Some(e);
                    break;
                }
            }
            result = &mut timers => {
                result.context("scheduler task")??;
                bail!("the scheduler stopped unexpectedly");
            }
            result = &mut crons, if !crons_done => {
                result.context("cron task")??;
                crons_done = true;
            }
        }
    }
    eprintln!("stopping the scheduler");
    let _ = stop.send(true);
    if !timers.is_finished() {
        timers.await.context("scheduler task")??;
    }
    if !crons_done {
        crons.await.context("cron task")??;
    }
    if let Some(e) = lost {
        bail!("{e}; the scheduler stopped so that another process can run it");
    }
    lease.release().await;
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP: reads the calendar files again. Working-day timers follow the new calendar; the
/// cases' own dates never move, and every warning the new calendar adds is printed.
async fn reload_calendar(store: &Store, scheduler: &Scheduler, dir: &Path) {
    let new = match load_calendar(dir) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("calendar not reloaded: {e:#}");
            return;
        }
    };
    let old = scheduler.calendar();
    match calendar_warnings(store, &old, &new).await {
        Ok(lines) => {
            for line in lines {
                eprintln!("{line}");
            }
        }
        Err(e) => eprintln!("cannot compare the cases' warnings: {e:#}"),
    }
    match scheduler.set_calendar(new).await {
        Ok(()) => eprintln!("calendar reloaded from {}", dir.display()),
        Err(e) => eprintln!("calendar reloaded, but rescheduling failed: {e}"),
    }
}

/// The warnings each case has under `new` and did not have under `old`.
async fn calendar_warnings(
    store: &Store,
    old: &giamsat_engine::Calendar,
    new: &giamsat_engine::Calendar,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for id in list_cases(store).await? {
        let Some(case) = load_case(store, &id).await? else {
            continue;
        };
        let workflow = pinned(store, &case.state).await?;
        let before = giamsat_engine::warnings(&workflow, &case.state, old);
        for w in giamsat_engine::warnings(&workflow, &case.state, new) {
            if !before.contains(&w) {
                out.push(format!(
                    "calendar change: case {id}: {} {}: {}",
                    w.code,
                    w.entity.as_deref().unwrap_or("-"),
                    w.message
                ));
            }
        }
    }
    Ok(out)
}
