//! The `timers` scenario: many cases with per-entity timers, scheduled by the real scheduler
//! (its due index rebuilt from the log) and fired on the system clock through the normal command
//! path (`giamsat_cases::fire_timer`).
//!
//! The parent process makes the cases; the scheduler runs in a child process of its own
//! (`timers-process`), so that its peak resident memory is the scheduler's and not the case
//! creation's. The parent then reads the case events back and computes the lateness of every
//! firing from the timer record the engine stored in it.
//!
//! Two latenesses are reported: `lateness_*` is the record's `late_ms`, from the due time to the
//! moment the scheduler took the timer up (before it loaded the case, decided and appended);
//! `commit_lateness_*` runs to the event's `recorded_at`, i.e. includes the append. The due
//! times are written into the cases, so they are fixed before the cases exist: the first one is
//! `--lead-seconds` after creation starts, and a run whose scheduler was not ready by then is
//! refused rather than reported.

use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, ensure};
use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use giamsat_engine::{Actor, Bundle, CaseEventData, TimerOutcome, Workflow};
use giamsat_scheduler::{Clock, Scheduler, SchedulerOptions};
use giamsat_store::{EventFilter, Store, StoreOptions};
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::db::{DbArgs, Fresh};
use crate::measure::{
    host_cpu_busy_seconds, percentile, proc_status_mib, process_cpu_seconds, rate, round3,
};
use crate::scenarios::report;

/// A minimal workflow: each case holds `items`, each with a due time; a timer per item runs the
/// system command `ping` at that time, which moves the item from `waiting` to `done`.
const WORKFLOW: &str = r#"
name: bench-timers
version: 1
label: Đo hẹn giờ
time_zone: Asia/Ho_Chi_Minh
roles:
  - { id: system, label: Hệ thống (hẹn giờ) }
start:
  event: CaseOpened
  stage: open
  schema:
    type: object
    additionalProperties: false
    required: [items]
    properties:
      items:
        type: array
        items:
          type: object
          additionalProperties: false
          required: [id, due]
          properties:
            id: { type: string }
            due: { type: string, format: date-time }
  entities:
    - { collection: items, from: /input/items, key: /id, state: waiting }
stages:
  - { id: open, label: Đang mở }
entities:
  - id: items
    label: Mục hẹn giờ
    states:
      - { id: waiting, label: Chờ đến hạn }
      - { id: done, label: Đã đến hạn }
events:
  - { type: CaseOpened, label: Mở hồ sơ }
  - { type: ItemPinged, label: Mục đã đến hạn }
commands:
  - id: ping
    label: Đến hạn
    roles: [system]
    stages: [open]
    input:
      type: object
      additionalProperties: false
      required: [id]
      properties:
        id: { type: string }
    target: { collection: items, key: /id, states: [waiting] }
    emit: ItemPinged
    effects:
      - target_state: done
timers:
  - id: due
    label: Mục đến hạn
    relative_to: /target/due
    each: items
    offset: 0 days
    command: ping
    input: { id: /target/key }
"#;

/// Cases started at the same time while the log is filled.
const CREATORS: usize = 32;

/// The scenario's sizes.
#[derive(Debug, Clone)]
pub struct TimersArgs {
    pub cases: usize,
    pub timers_per_case: usize,
    /// Due times are spread uniformly over this many seconds.
    pub window_seconds: f64,
    /// Seconds from the start of case creation to the first due time: case creation, starting
    /// the scheduler process and rebuilding its index must fit in it.
    pub lead_seconds: f64,
    /// Cases the scheduler fires at the same time (`SchedulerOptions::concurrency`).
    pub concurrency: usize,
}

pub fn workflow() -> anyhow::Result<Workflow> {
    giamsat_engine::load(Bundle {
        origin: "bench-timers/workflow.yaml".to_owned(),
        text: WORKFLOW.to_owned(),
        files: BTreeMap::new(),
    })
    .map_err(|p| anyhow!("the benchmark workflow does not load:\n{p}"))
}

/// The due time of item `item` of case `case`: the timers are numbered item-major
/// (`item * cases + case`) and spread evenly over the window, so consecutive firings belong to
/// different cases and each case's own timers are `window / timers_per_case` apart.
fn due_of(args: &TimersArgs, first_due: DateTime<Utc>, case: usize, item: usize) -> DateTime<Utc> {
    let total = args.cases * args.timers_per_case;
    let g = item * args.cases + case;
    let micros = (args.window_seconds * 1e6 * g as f64 / total as f64).round() as i64;
    first_due + TimeDelta::microseconds(micros)
}

/// Starts every case, `CREATORS` at a time.
async fn create_cases(
    store: &Store,
    workflow: &Workflow,
    args: &TimersArgs,
    first_due: DateTime<Utc>,
) -> anyhow::Result<()> {
    let workflow = Arc::new(workflow.clone());
    let args = Arc::new(args.clone());
    let next = Arc::new(AtomicUsize::new(0));
    let tz = giamsat_engine::zone(&workflow);
    let mut tasks = JoinSet::new();
    for _ in 0..CREATORS {
        let (store, workflow, args, next) =
            (store.clone(), workflow.clone(), args.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let case = next.fetch_add(1, Ordering::Relaxed);
                if case >= args.cases {
                    return anyhow::Ok(());
                }
                let items: Vec<Value> = (0..args.timers_per_case)
                    .map(|item| {
                        let due = due_of(&args, first_due, case, item);
                        json!({
                            "id": format!("item-{item:03}"),
                            "due": due.to_rfc3339_opts(SecondsFormat::Millis, true),
                        })
                    })
                    .collect();
                let id = format!("bench-{case:06}");
                let at = Utc::now().with_timezone(&tz).fixed_offset();
                let command = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, id.as_bytes());
                giamsat_cases::start_case(
                    &store,
                    &workflow,
                    &id,
                    json!({ "items": items }),
                    Actor {
                        id: "bench".to_owned(),
                        role: "system".to_owned(),
                        unit: None,
                    },
                    at,
                    command,
                )
                .await
                .with_context(|| format!("starting case {id}"))?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    Ok(())
}

/// What the events of the run say about the firings.
#[derive(Debug, Default)]
struct Firings {
    late_ms: Vec<f64>,
    commit_late_ms: Vec<f64>,
    outcomes: HashMap<String, usize>,
    first_due: Option<i64>,
    last_commit: Option<i64>,
}

async fn read_firings(store: &Store) -> anyhow::Result<Firings> {
    let filter = EventFilter {
        event_types: Vec::new(),
        stream_prefix: "case/".to_owned(),
    };
    let mut out = Firings::default();
    let mut from = 1;
    loop {
        let page = store.read_all(from, None, 2048, &filter).await?;
        let Some(last) = page.last() else { break };
        from = last.position + 1;
        for event in page {
            let data: CaseEventData = serde_json::from_str(&event.data)
                .with_context(|| format!("event {} is not a case event", event.position))?;
            let Some(timer) = data.timer else { continue };
            let due = DateTime::parse_from_rfc3339(&timer.due)
                .with_context(|| format!("timer due {:?}", timer.due))?
                .timestamp_micros();
            out.late_ms.push(timer.late_ms as f64);
            out.commit_late_ms
                .push((event.recorded_at_micros - due) as f64 / 1000.0);
            let outcome = match timer.outcome {
                TimerOutcome::Fired => "fired",
                TimerOutcome::Rejected => "rejected",
                TimerOutcome::Skipped => "skipped",
            };
            *out.outcomes.entry(outcome.to_owned()).or_default() += 1;
            out.first_due = Some(out.first_due.map_or(due, |d| d.min(due)));
            out.last_commit = Some(out.last_commit.map_or(event.recorded_at_micros, |c| {
                c.max(event.recorded_at_micros)
            }));
        }
    }
    Ok(out)
}

/// Creates `cases` cases of `timers_per_case` timers due over `window_seconds`, then runs the
/// scheduler in a child process until every timer has fired, and reports the scheduling rate
/// (timers derived into the due index per second by `Scheduler::rebuild`), the lateness of the
/// firings and the scheduler process's peak resident memory.
pub async fn timers(db: &DbArgs, args: &TimersArgs) -> anyhow::Result<Value> {
    ensure!(
        args.cases > 0 && args.timers_per_case > 0,
        "--cases and --timers-per-case must be positive"
    );
    ensure!(
        args.window_seconds >= 0.0 && args.lead_seconds >= 0.0,
        "--window-seconds and --lead-seconds must not be negative"
    );
    let total = args.cases * args.timers_per_case;
    let workflow = workflow()?;
    let fresh = Fresh::new(db)?;
    let store = fresh.open_store().await?;

    // The due times are part of the cases' data, so they are fixed before the cases are made:
    // the first is `--lead-seconds` after creation starts. The child process checks that its
    // scheduler was ready before then.
    let started = Instant::now();
    let first_due = Utc::now() + TimeDelta::from_std(Duration::from_secs_f64(args.lead_seconds))?;
    eprintln!(
        "timers: creating {} cases of {} timers, first due at {first_due}",
        args.cases, args.timers_per_case
    );
    create_cases(&store, &workflow, args, first_due).await?;
    let create_seconds = started.elapsed().as_secs_f64();
    let head = store.head().await?.map_or(0, |h| h.position);
    ensure!(
        head == args.cases as u64 + 1,
        "the log holds {head} events, expected {} cases and the definition",
        args.cases
    );
    store.close().await;
    let lead_left = (first_due - Utc::now()).as_seconds_f64();
    eprintln!("timers: created in {create_seconds:.1} s; {lead_left:.1} s to the first due time");
    ensure!(
        lead_left > 1.0,
        "case creation took {create_seconds:.1} s and ended {:.1} s before the first due time; \
         raise --lead-seconds",
        lead_left
    );

    let deadline = lead_left + args.window_seconds + 300.0;
    let output = std::process::Command::new(std::env::current_exe()?)
        .args([
            "timers-process",
            "--url",
            &fresh.store_url(),
            "--timers",
            &total.to_string(),
            "--concurrency",
            &args.concurrency.to_string(),
            "--deadline-seconds",
            &deadline.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()?;
    ensure!(output.status.success(), "the scheduler process failed");
    let child: Value = serde_json::from_slice(&output.stdout)
        .with_context(|| String::from_utf8_lossy(&output.stdout).into_owned())?;

    let store = fresh.open_store().await?;
    let mut firings = read_firings(&store).await?;
    let pinged = count_type(&store, "ItemPinged").await?;
    store.close().await;
    fresh.cleanup().await?;
    let fired = firings.late_ms.len();
    ensure!(
        fired == total && pinged == total && firings.outcomes.get("fired") == Some(&total),
        "expected {total} timers fired, found {fired} timer records ({:?}) and {pinged} \
         ItemPinged events",
        firings.outcomes
    );
    let margin = child["ready_before_first_due_seconds"]
        .as_f64()
        .unwrap_or(f64::NAN);
    ensure!(
        margin > 0.0,
        "the scheduler was ready only {margin} s before the first due time, so early timers \
         waited for it; raise --lead-seconds"
    );
    let rebuild_seconds = child["rebuild_seconds"].as_f64().unwrap_or(f64::NAN);
    let span = match (firings.first_due, firings.last_commit) {
        (Some(d), Some(c)) => (c - d) as f64 / 1e6,
        _ => f64::NAN,
    };
    let late = &mut firings.late_ms;
    let commit = &mut firings.commit_late_ms;
    Ok(report(
        "timers",
        db,
        json!({
            "cases": args.cases,
            "timers_per_case": args.timers_per_case,
            "timers": total,
            "window_seconds": args.window_seconds,
            "lead_seconds": args.lead_seconds,
            "concurrency": args.concurrency,
            "clock": "system",
        }),
        json!({
            "timers": total,
            "create_cases_seconds": round3(create_seconds),
            "cases_per_sec": rate(args.cases, create_seconds),
            "rebuild_seconds": round3(rebuild_seconds),
            "scheduling_timers_per_sec": rate(total, rebuild_seconds),
            "ready_before_first_due_seconds": child["ready_before_first_due_seconds"],
            "offered_timers_per_sec": (args.window_seconds > 0.0)
                .then(|| rate(total, args.window_seconds)),
            "firing_seconds": round3(span),
            "firing_timers_per_sec": rate(total, span),
            "lateness_p50_ms": percentile(late, 50.0),
            "lateness_p99_ms": percentile(late, 99.0),
            "lateness_max_ms": percentile(late, 100.0),
            "late_over_1s": late.iter().filter(|l| **l > 1000.0).count(),
            "commit_lateness_p50_ms": percentile(commit, 50.0),
            "commit_lateness_p99_ms": percentile(commit, 99.0),
            "commit_lateness_max_ms": percentile(commit, 100.0),
            "firing_cpu_seconds": child["firing_cpu_seconds"].as_f64().map(round3),
            "firing_cpu_ms_per_timer": child["firing_cpu_seconds"]
                .as_f64()
                .map(|s| round3(s * 1000.0 / total as f64)),
            // Every process's CPU time over the same interval: well above `firing_cpu_seconds`
            // means something else competed for the cores during the run.
            "host_cpu_seconds": child["host_cpu_seconds"].as_f64().map(round3),
            "scheduler_peak_rss_mib": child["vmhwm_mib"],
            "rebuild_peak_rss_mib": child["rebuild_vmhwm_mib"],
        }),
    ))
}

async fn count_type(store: &Store, event_type: &str) -> anyhow::Result<usize> {
    let filter = EventFilter {
        event_types: vec![event_type.to_owned()],
        stream_prefix: "case/".to_owned(),
    };
    let (mut from, mut count) = (1, 0);
    loop {
        let page = store.read_all(from, None, 2048, &filter).await?;
        let Some(last) = page.last() else {
            return Ok(count);
        };
        from = last.position + 1;
        count += page.len();
    }
}

/// The child side of `timers`: runs a scheduler on the filled log on the system clock until its
/// index is empty, and prints one JSON object: how long the rebuild of the index took, how far
/// ahead of the first due time it was ready, the CPU time of the firing phase (this process's
/// and other processes'), and this process's peak resident memory (at the end of the rebuild and
/// overall).
pub async fn timers_process(
    url: &str,
    timers: usize,
    concurrency: usize,
    deadline_seconds: f64,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs_f64(deadline_seconds);
    let store = Store::open(url, StoreOptions::default()).await?;
    let options = SchedulerOptions {
        concurrency,
        ..SchedulerOptions::default()
    };
    let calendar = giamsat_engine::Calendar::weekends_only();

    // One scheduler, run as a daemon runs it: `run` first rebuilds the index from the log (the
    // scheduling phase) and fires nothing before that returns, so the index is complete, and the
    // rebuild over, when it holds every timer. Timing `rebuild` by polling the index (every
    // millisecond) rather than calling it separately keeps the process to one rebuild, as in
    // production: a second one would add its own peak and heap fragmentation.
    let scheduler = Scheduler::new(store.clone(), Clock::System, calendar, options);
    let (shutdown, watch) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let runner = tokio::spawn(scheduler.clone().run(watch));
    while scheduler.pending() < timers {
        ensure!(!runner.is_finished(), "the scheduler stopped");
        ensure!(Instant::now() < deadline, "the scheduler did not start");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rebuild_seconds = started.elapsed().as_secs_f64();
    let ready = Utc::now();
    let rebuild_vmhwm = proc_status_mib("VmHWM");
    let scheduled = scheduler.pending();
    ensure!(
        scheduled == timers,
        "rebuild scheduled {scheduled} timers, expected {timers}"
    );
    let first_due = scheduler.next_due().context("no timer is pending")?;
    let ready_margin = (first_due - ready).as_seconds_f64();
    eprintln!(
        "timers: index rebuilt with {scheduled} timers in {rebuild_seconds:.2} s, \
         {ready_margin:.1} s before the first due time"
    );
    let cpu_at_ready = process_cpu_seconds();
    let host_at_ready = host_cpu_busy_seconds();
    let mut reported = Instant::now();
    loop {
        let pending = scheduler.pending();
        if pending == 0 {
            break;
        }
        ensure!(!runner.is_finished(), "the scheduler stopped");
        ensure!(
            Instant::now() < deadline,
            "{pending} timers still pending at the deadline"
        );
        if reported.elapsed() > Duration::from_secs(10) {
            reported = Instant::now();
            eprintln!(
                "timers: {pending} pending, resident {} MiB",
                proc_status_mib("VmRSS").unwrap_or(f64::NAN)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let firing_cpu = process_cpu_seconds()
        .zip(cpu_at_ready)
        .map(|(end, start)| end - start);
    let host_cpu = host_cpu_busy_seconds()
        .zip(host_at_ready)
        .map(|(end, start)| end - start);
    let _ = shutdown.send(true);
    runner.await??;
    store.close().await;
    Ok(json!({
        "timers": scheduled,
        "rebuild_seconds": rebuild_seconds,
        "ready_before_first_due_seconds": round3(ready_margin),
        "rebuild_vmhwm_mib": rebuild_vmhwm,
        "vmhwm_mib": proc_status_mib("VmHWM"),
        "firing_cpu_seconds": firing_cpu,
        "host_cpu_seconds": host_cpu,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workflow_loads_and_has_one_timer_per_item() {
        let workflow = workflow().expect("workflow");
        assert_eq!(workflow.timers.len(), 1);
    }

    #[test]
    fn due_times_cover_the_window_evenly() {
        let args = TimersArgs {
            cases: 4,
            timers_per_case: 3,
            window_seconds: 12.0,
            lead_seconds: 0.0,
            concurrency: 1,
        };
        let t0 = DateTime::UNIX_EPOCH;
        let mut dues: Vec<i64> = (0..4)
            .flat_map(|c| (0..3).map(move |i| (c, i)))
            .map(|(c, i)| (due_of(&args, t0, c, i) - t0).num_seconds())
            .collect();
        dues.sort_unstable();
        assert_eq!(dues, (0..12).collect::<Vec<i64>>());
        assert_eq!((due_of(&args, t0, 1, 2) - t0).num_seconds(), 9);
    }
}
