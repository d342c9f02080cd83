//! The scheduler as a user runs it: `giamsat simulate` takes the seed case through its dates,
//! `giamsat timers list` shows them, and `giamsat scheduler run` fires timers on time, survives
//! `kill -9`, and catches up once at the next start.

use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::Sandbox;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A sandbox with the shipped calendar files in `config/calendars` and the seed case started
/// on 20/3/2024 with its notice issued on 25/3/2024.
fn seed_sandbox() -> Sandbox {
    let s = Sandbox::sqlite();
    for year in ["2024", "2025", "2026"] {
        let text = std::fs::read_to_string(repo().join(format!("config/calendars/{year}.toml")))
            .expect("calendar file");
        s.write(&format!("config/calendars/{year}.toml"), &text);
    }
    let seed = repo()
        .join("workflows/giam-sat-chuyen-de/examples/tuan-giao-2024.yaml")
        .display()
        .to_string();
    gs(
        &s,
        &[
            "case",
            "start",
            "giam-sat-chuyen-de",
            "--data",
            &seed,
            "--id",
            "tg",
            "--as",
            "secretariat:huyen",
            "--at",
            "2024-03-20T08:00:00+07:00",
        ],
    );
    gs(
        &s,
        &[
            "case",
            "do",
            "tg",
            "issue_notice",
            "--set",
            "issued_on=2024-03-25",
            "--set",
            "document=thong-bao-lich",
            "--as",
            "secretariat:huyen",
            "--at",
            "2024-03-25T08:00:00+07:00",
        ],
    );
    s
}

/// `simulate` from the notice (25/3/2024) to the start of 27/4/2024, as JSON Lines.
const SIMULATE_TO_27_4: &[&str] = &[
    "--clock",
    "sim:2024-03-25T08:00:00+07:00",
    "simulate",
    "--until",
    "2024-04-27T00:00:00+07:00",
    "--json",
];

fn workflows_arg() -> String {
    repo().join("workflows").display().to_string()
}

/// Runs `giamsat --workflows <repo>/workflows ARGS` and insists on success.
fn gs(s: &Sandbox, args: &[&str]) -> crate::support::Run {
    let w = workflows_arg();
    let mut all = vec!["--workflows", w.as_str()];
    all.extend_from_slice(args);
    s.ok(&all)
}

/// An event's type and data, from its `--json` form (data may be stored as JSON text).
fn typed_data(e: &Value) -> (String, Value) {
    let data = match &e["data"] {
        Value::String(text) => serde_json::from_str(text).expect("data"),
        other => other.clone(),
    };
    (
        e["event_type"].as_str().unwrap_or_default().to_owned(),
        data,
    )
}

/// The data of every event of a case, with its type.
fn history(s: &Sandbox) -> Vec<(String, Value)> {
    gs(s, &["case", "history", "tg", "--json"])
        .json_lines()
        .into_iter()
        .map(|e| typed_data(&e))
        .collect()
}

fn timer_events(s: &Sandbox) -> Vec<(String, Value)> {
    history(s)
        .into_iter()
        .filter(|(_, d)| d.get("timer").is_some())
        .map(|(t, d)| (t, d["timer"].clone()))
        .collect()
}

fn spawn_scheduler(s: &Sandbox, clock: &str) -> Child {
    let w = workflows_arg();
    s.command(&["--workflows", &w, "--clock", clock, "scheduler", "run"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the scheduler")
}

/// Waits (up to 30 s) until the case has `n` events recorded by timers.
fn wait_for_timer_events(s: &Sandbox, n: usize) -> Vec<(String, Value)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let events = timer_events(s);
        if events.len() >= n {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {n} timer events after 30 s: {events:?}",
            events.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn simulate_takes_the_seed_case_through_reports_due_and_visits_on_the_calendars_dates() {
    let s = seed_sandbox();
    let run = gs(&s, SIMULATE_TO_27_4);
    let lines = run.json_lines();
    let rows: Vec<(String, String, String, String)> = lines
        .iter()
        .map(|l| {
            (
                l["due"].as_str().unwrap_or_default().to_owned(),
                l["timer"].as_str().unwrap_or_default().to_owned(),
                l["key"].as_str().unwrap_or("-").to_owned(),
                l["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let at = |timer: &str| -> Vec<&str> {
        rows.iter()
            .filter(|r| r.1 == timer)
            .map(|r| r.0.as_str())
            .collect()
    };
    // Deadline Saturday 20/4/2024: three working days before it skip Giỗ Tổ on Thursday 18/4.
    assert_eq!(
        at("report_reminder_before"),
        vec!["2024-04-16T01:00:00+00:00"; 9]
    );
    assert_eq!(
        at("report_reminder_on_day"),
        vec!["2024-04-20T01:00:00+00:00"; 9]
    );
    assert_eq!(at("reports_overdue"), vec!["2024-04-20T17:00:00+00:00"]);
    assert_eq!(at("visits_begin"), vec!["2024-04-24T00:30:00+00:00"]);
    // The working day before each visit up to 26/4; 29/4/2024 was a day off, so the reminders
    // for the visits on 29/4 and 2/5 both come on Friday 26/4.
    let visits: Vec<(&str, &str)> = rows
        .iter()
        .filter(|r| r.1 == "visit_reminder")
        .map(|r| (r.0.as_str(), r.2.as_str()))
        .collect();
    assert_eq!(
        visits,
        vec![
            ("2024-04-24T01:00:00+00:00", "thi-tran-tuan-giao"),
            ("2024-04-25T01:00:00+00:00", "xa-quai-to"),
            ("2024-04-26T01:00:00+00:00", "xa-quai-cang"),
            ("2024-04-26T01:00:00+00:00", "xa-quai-nua"),
        ]
    );
    assert!(rows.iter().all(|r| r.3 == "fired"), "{rows:?}");
    let overdue = lines
        .iter()
        .find(|l| l["timer"] == "reports_overdue")
        .expect("overdue");
    assert!(
        overdue["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("stage notified → reports_due"),
        "{overdue}"
    );

    let case = gs(&s, &["case", "show", "tg", "--json"])
        .json_lines()
        .remove(0);
    assert_eq!(case["stage"], "visits");
    assert_eq!(case["entities"]["units"]["xa-ta-ma"]["state"], "overdue");
    let warnings: Vec<String> = case["warnings"]
        .as_array()
        .expect("warnings")
        .iter()
        .map(|w| {
            format!(
                "{} {}",
                w["code"].as_str().unwrap_or(""),
                w["entity"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        warnings.contains(&"visit_on_non_working_day visits/xa-quai-cang".to_owned()),
        "{warnings:?}"
    );
    assert!(
        warnings.contains(&"report_deadline_on_non_working_day ".to_owned()),
        "{warnings:?}"
    );

    // timers list: what fired, what is pending (the later visit reminders), in due order.
    let timers = gs(
        &s,
        &[
            "--clock",
            "sim:2024-04-27T00:00:00+07:00",
            "timers",
            "list",
            "--case",
            "tg",
            "--json",
        ],
    )
    .json_lines();
    let fired = timers.iter().filter(|t| t["state"] == "done").count();
    let pending: Vec<&str> = timers
        .iter()
        .filter(|t| t["state"] == "pending")
        .map(|t| t["key"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(fired, rows.len());
    assert_eq!(
        pending,
        vec![
            "xa-quai-na-tong",
            "xa-phinh-sang",
            "xa-ta-ma",
            "phong-noi-vu",
            "ubnd-huyen"
        ]
    );
    let first_pending = timers
        .iter()
        .find(|t| t["state"] == "pending")
        .expect("pending");
    assert_eq!(first_pending["due"], "2024-05-02T08:00:00+07:00");
    assert_eq!(first_pending["command"], "send_visit_reminder");

    // A second simulation over the same period fires nothing again.
    let again = gs(&s, SIMULATE_TO_27_4);
    assert!(again.stdout.is_empty(), "{}", again.stdout);
}

#[test]
fn the_scheduler_fires_on_time_survives_kill_9_and_catches_up_once() {
    let s = seed_sandbox();
    // A simulated clock five seconds before the 16/4 reminders, running at real speed.
    let mut first = spawn_scheduler(&s, "sim:2024-04-16T07:59:55+07:00");
    let fired = wait_for_timer_events(&s, 9);
    for (event_type, record) in &fired {
        assert_eq!(event_type, "ReportReminderSent");
        let late = record["late_ms"].as_i64().expect("late_ms");
        assert!(
            (0..1000).contains(&late),
            "fired {late} ms after its due time"
        );
        assert_eq!(record["late"], false);
    }
    // kill -9: no shutdown at all.
    first.kill().expect("kill -9");
    first.wait().expect("reap");

    // Back on 22/4 at 09:00: the reminders of 20/4 and the overdue mark of 21/4 came due while
    // it was down. They fire once, at start, in due order, recorded as late.
    let mut second = spawn_scheduler(&s, "sim:2024-04-22T09:00:00+07:00");
    let all = wait_for_timer_events(&s, 9 + 9 + 1);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success());
    let exit = second.wait().expect("wait");
    assert!(exit.success(), "graceful stop on SIGTERM: {exit:?}");
    let types: Vec<&str> = all.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(types[..18], ["ReportReminderSent"; 18]);
    assert_eq!(types[18], "ReportsMarkedOverdue");
    assert_eq!(all.len(), 19, "nothing fired twice: {types:?}");
    for (_, record) in &all[9..] {
        assert_eq!(record["late"], true, "{record}");
    }
    let dues: Vec<&str> = all
        .iter()
        .map(|(_, r)| r["due"].as_str().unwrap_or(""))
        .collect();
    let mut sorted = dues.clone();
    sorted.sort();
    assert_eq!(dues, sorted, "fired in due order");

    // The daily digest (default configuration): registered by the first run on 16/4, then on
    // 22/4 the runs of 17–21/4 are older than the 6-hour catch-up window and recorded as
    // skipped, and the run of 07:00 on 22/4 happens once, late.
    let cron: Vec<(String, Value)> = s
        .ok(&["events", "read", "cron/daily-digest", "--json"])
        .json_lines()
        .into_iter()
        .map(|e| typed_data(&e))
        .collect();
    let kinds: Vec<&str> = cron.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["CronScheduleRegistered", "CronRunsSkipped", "CronRan"]
    );
    assert_eq!(cron[1].1["count"], 5);
    assert_eq!(
        cron[2].1["scheduled_for_local"],
        "2024-04-22T07:00:00+07:00"
    );
}

#[test]
fn sighup_reloads_the_calendar_moving_working_day_timers_and_printing_new_warnings() {
    let s = seed_sandbox();
    // The running scheduler starts without holiday files: weekends only.
    let hidden = s.path("calendars-later");
    std::fs::rename(s.path("config/calendars"), &hidden).expect("hide the calendar files");
    let log = std::fs::File::create(s.path("scheduler.log")).expect("log file");
    let w = workflows_arg();
    // Ten seconds before 08:00 on 16/4/2024, which is three working days before the deadline
    // only once Giỗ Tổ (18/4) is known; with weekends only that reminder is due on 17/4.
    let mut child = s
        .command(&[
            "--workflows",
            &w,
            "--clock",
            "sim:2024-04-16T07:59:50+07:00",
            "scheduler",
            "run",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start the scheduler");
    let read_log = || std::fs::read_to_string(s.path("scheduler.log")).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(8);
    while !read_log().contains("scheduler running") {
        assert!(
            Instant::now() < deadline,
            "scheduler did not start: {}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // The 2024 arrangement is published while it runs.
    std::fs::rename(&hidden, s.path("config/calendars")).expect("publish the calendar files");
    let status = std::process::Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(status.success());
    let fired = wait_for_timer_events(&s, 9);
    let _ = child.kill();
    child.wait().expect("reap");
    for (event_type, record) in &fired {
        assert_eq!(event_type, "ReportReminderSent");
        assert_eq!(record["due"], "2024-04-16T08:00:00+07:00");
    }
    let log = read_log();
    assert!(log.contains("calendar reloaded"), "{log}");
    assert!(
        log.contains("calendar change: case tg: visit_on_non_working_day visits/xa-quai-cang: Buổi giám sát tại xa-quai-cang vào ngày 29/4/2024 không phải ngày làm việc"),
        "{log}"
    );
    // Nothing in the case moved.
    let case = gs(&s, &["case", "show", "tg", "--json"])
        .json_lines()
        .remove(0);
    assert_eq!(
        case["entities"]["visits"]["xa-quai-cang"]["data"]["date"],
        "2024-04-29"
    );
}

#[test]
fn case_commands_take_their_time_from_the_clock() {
    let s = seed_sandbox();
    // On the system clock (2026 and later) the deadline of 20/4/2024 has long passed; on a
    // simulated clock of 19/4/2024 it has not, and the workflow refuses the overdue mark.
    let w = workflows_arg();
    let early = s.run(&[
        "--workflows",
        &w,
        "--clock",
        "sim:2024-04-19T10:00:00+07:00",
        "case",
        "do",
        "tg",
        "mark_reports_overdue",
        "--as",
        "secretariat:huyen",
    ]);
    assert_eq!(early.code, 2, "{}", early.stderr);
    assert!(
        early.stderr.contains("deadline_not_passed"),
        "{}",
        early.stderr
    );
    gs(
        &s,
        &[
            "--clock",
            "sim:2024-04-21T00:00:05+07:00",
            "case",
            "do",
            "tg",
            "mark_reports_overdue",
            "--as",
            "secretariat:huyen",
        ],
    );
    let (_, last) = history(&s).pop().expect("event");
    assert!(
        last["at"]
            .as_str()
            .unwrap_or_default()
            .starts_with("2024-04-21T00:00:0"),
        "{last}"
    );
}
