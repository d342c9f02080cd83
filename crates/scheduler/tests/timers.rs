//! The scheduler on real stores and a manual clock (no sleeps): the supervision workflow's
//! timers fire on the dates the 2024 calendar gives, late timers fire once after a restart (or
//! are skipped by policy), two schedulers on one database act on each timer once, a calendar
//! change moves only working-day timers and never a case's dates, and cron keeps its high-water
//! mark across restarts.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use giamsat_cases::{
    FireOutcome, load_case, read_calendar_dir, read_workflow_dir, run_command, start_case,
};
use giamsat_engine::{
    Actor, Calendar, CaseEventData, CommandRequest, TimerOutcome, TimerState, Workflow, load,
    warnings,
};
use giamsat_scheduler::{
    Clock, CronRun, CronSchedule, Firing, ManualClock, Scheduler, SchedulerOptions, run_cron,
};
use giamsat_store::{Direction, Store, StoreOptions};
use giamsat_types::StreamId;
use serde_json::{Value, json};
use uuid::Uuid;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn workflow_with(edit: impl Fn(String) -> String) -> Workflow {
    let mut bundle =
        read_workflow_dir(&root().join("workflows/giam-sat-chuyen-de")).expect("read workflow");
    bundle.text = edit(bundle.text);
    load(bundle).expect("valid workflow")
}

fn workflow() -> Workflow {
    workflow_with(|t| t)
}

fn calendar() -> Calendar {
    read_calendar_dir(&root().join("config/calendars")).expect("calendars")
}

fn seed() -> Value {
    let path = root().join("workflows/giam-sat-chuyen-de/examples/tuan-giao-2024.yaml");
    serde_saphyr::from_str(&std::fs::read_to_string(path).expect("example")).expect("yaml")
}

fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("time")
        .with_timezone(&Utc)
}

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let store = Store::open(&url, StoreOptions::default())
        .await
        .expect("open");
    (store, dir)
}

fn postgres_url() -> Option<String> {
    match std::env::var("GIAMSAT_TEST_POSTGRES_URL") {
        Ok(base) => {
            let sep = if base.contains('?') { '&' } else { '?' };
            Some(format!(
                "{base}{sep}schema=sched_{}",
                Uuid::new_v4().simple()
            ))
        }
        Err(_) => {
            assert!(
                std::env::var("CI").is_err(),
                "GIAMSAT_TEST_POSTGRES_URL must be set in CI"
            );
            None
        }
    }
}

async fn command(store: &Store, case: &str, name: &str, actor: &str, at: &str, input: Value) {
    let request = CommandRequest {
        id: Uuid::new_v4(),
        name: name.to_owned(),
        input,
        actor: Actor::parse(actor).expect("actor"),
        at: DateTime::parse_from_rfc3339(at).expect("time"),
    };
    if let Err(e) = run_command(store, case, request).await {
        panic!("{name} at {at}: {e}");
    }
}

/// Starts the seed case on 20/3/2024 and issues its notice on 25/3/2024.
async fn seed_case(store: &Store, wf: &Workflow, id: &str) {
    let at = DateTime::parse_from_rfc3339("2024-03-20T08:00:00+07:00").expect("time");
    start_case(
        store,
        wf,
        id,
        seed(),
        Actor::parse("secretariat:huyen").expect("actor"),
        at,
        Uuid::new_v4(),
    )
    .await
    .expect("start");
    command(
        store,
        id,
        "issue_notice",
        "secretariat:huyen",
        "2024-03-25T08:00:00+07:00",
        json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
    )
    .await;
}

async fn report(store: &Store, case: &str, unit: &str, at: &str) {
    command(
        store,
        case,
        "receive_report",
        &format!("unit:vt@{unit}"),
        at,
        json!({"unit": unit, "received_at": at, "channel": "email"}),
    )
    .await;
}

fn scheduler(store: &Store, clock: &ManualClock, calendar: Calendar) -> Arc<Scheduler> {
    Scheduler::new(
        store.clone(),
        Clock::Manual(clock.clone()),
        calendar,
        SchedulerOptions::default(),
    )
}

/// `(local due time, timer, key, event type)` of each firing, for comparing with what the
/// calendar says.
fn summary(firings: &[Firing]) -> Vec<(String, String, String, String)> {
    firings
        .iter()
        .map(|f| {
            let due = f
                .due
                .with_timezone(&chrono_tz::Asia::Ho_Chi_Minh)
                .format("%Y-%m-%d %H:%M")
                .to_string();
            let what = match &f.outcome {
                FireOutcome::Fired(events) => events[0].event_type.clone(),
                FireOutcome::Rejected(r) => format!("rejected:{}", r.code),
                FireOutcome::Skipped => "skipped".to_owned(),
                FireOutcome::AlreadyDone(_) => "already-done".to_owned(),
                FireOutcome::NotDue => "not-due".to_owned(),
            };
            (
                due,
                f.timer().to_owned(),
                f.key().unwrap_or("-").to_owned(),
                what,
            )
        })
        .collect()
}

fn row(due: &str, timer: &str, key: &str, what: &str) -> (String, String, String, String) {
    (due.into(), timer.into(), key.into(), what.into())
}

async fn case_events(store: &Store, case: &str) -> Vec<(String, CaseEventData)> {
    let stream = StreamId::new(format!("case/{case}")).expect("stream");
    store
        .read_stream(&stream, Direction::Forward, Some(1), 10_000)
        .await
        .expect("read")
        .into_iter()
        .map(|e| {
            let data: CaseEventData = serde_json::from_str(&e.data).expect("case event");
            (e.event_type, data)
        })
        .collect()
}

const UNREPORTED_AFTER_16_4: [&str; 6] = [
    "thi-tran-tuan-giao",
    "xa-phinh-sang",
    "xa-quai-cang",
    "xa-quai-na-tong",
    "xa-quai-nua",
    "xa-quai-to",
];

/// The done-when of the scheduler issue: the seed case from 25/3/2024 to 14/5/2024.
#[tokio::test]
async fn the_seed_case_moves_through_reports_due_and_visits_on_the_calendars_dates() {
    let (store, _dir) = sqlite().await;
    let wf = workflow();
    seed_case(&store, &wf, "tg").await;
    // Two units report early, one between the two reminders.
    report(&store, "tg", "ubnd-huyen", "2024-04-10T09:00:00+07:00").await;
    report(&store, "tg", "phong-noi-vu", "2024-04-10T10:00:00+07:00").await;

    let clock = ManualClock::new(t("2024-03-25T08:00:00+07:00"));
    let sched = scheduler(&store, &clock, calendar());
    sched.rebuild().await.expect("rebuild");
    let mut fired = sched
        .advance_to(&clock, t("2024-04-17T00:00:00+07:00"))
        .await
        .expect("advance");
    report(&store, "tg", "xa-ta-ma", "2024-04-18T09:00:00+07:00").await;
    sched.refresh_case("tg").await.expect("refresh");
    fired.extend(
        sched
            .advance_to(&clock, t("2024-05-14T00:00:00+07:00"))
            .await
            .expect("advance"),
    );

    // Deadline Saturday 20/4/2024; three working days before it skip Giỗ Tổ (Thursday 18/4).
    let mut expected = Vec::new();
    for unit in [
        "thi-tran-tuan-giao",
        "xa-phinh-sang",
        "xa-quai-cang",
        "xa-quai-na-tong",
        "xa-quai-nua",
        "xa-quai-to",
        "xa-ta-ma",
    ] {
        expected.push(row(
            "2024-04-16 08:00",
            "report_reminder_before",
            unit,
            "ReportReminderSent",
        ));
    }
    for unit in UNREPORTED_AFTER_16_4 {
        expected.push(row(
            "2024-04-20 08:00",
            "report_reminder_on_day",
            unit,
            "ReportReminderSent",
        ));
    }
    expected.push(row(
        "2024-04-21 00:00",
        "reports_overdue",
        "-",
        "ReportsMarkedOverdue",
    ));
    expected.push(row(
        "2024-04-24 07:30",
        "visits_begin",
        "-",
        "VisitsStarted",
    ));
    // The working day before each visit; 27/4–1/5/2024 are days off (29/4 swapped for 4/5).
    for (due, unit) in [
        ("2024-04-24 08:00", "thi-tran-tuan-giao"),
        ("2024-04-25 08:00", "xa-quai-to"),
        ("2024-04-26 08:00", "xa-quai-cang"),
        ("2024-04-26 08:00", "xa-quai-nua"),
        ("2024-05-02 08:00", "xa-quai-na-tong"),
        ("2024-05-07 08:00", "xa-phinh-sang"),
        ("2024-05-08 08:00", "xa-ta-ma"),
        ("2024-05-09 08:00", "phong-noi-vu"),
        ("2024-05-10 08:00", "ubnd-huyen"),
    ] {
        expected.push(row(due, "visit_reminder", unit, "VisitReminderSent"));
    }
    assert_eq!(summary(&fired), expected);

    let case = load_case(&store, "tg").await.expect("load").expect("case");
    assert_eq!(case.state.stage, "visits");
    let stages: Vec<(&str, &str)> = case
        .state
        .stages
        .iter()
        .map(|s| (s.stage.as_str(), &s.at[..16]))
        .collect();
    assert_eq!(
        stages,
        vec![
            ("established", "2024-03-20T08:00"),
            ("notified", "2024-03-25T08:00"),
            ("reports_due", "2024-04-21T00:00"),
            ("visits", "2024-04-24T07:30"),
        ]
    );
    for unit in UNREPORTED_AFTER_16_4 {
        assert_eq!(
            case.state.entity("units", unit).expect("unit").state,
            "overdue"
        );
    }
    assert_eq!(
        case.state.entity("units", "xa-ta-ma").expect("unit").state,
        "received"
    );
    // Every timer event says which timer fired it, and none was late.
    let records: Vec<_> = case_events(&store, "tg")
        .await
        .into_iter()
        .filter_map(|(_, d)| d.timer)
        .collect();
    assert_eq!(records.len(), expected.len());
    assert!(
        records
            .iter()
            .all(|r| !r.late && r.outcome == TimerOutcome::Fired)
    );

    // The calendar's warnings: the deadline is a Saturday; 29/4/2024 is a day off.
    let codes: Vec<(String, Option<String>)> = warnings(&wf, &case.state, &calendar())
        .into_iter()
        .map(|w| (w.code, w.entity))
        .collect();
    assert!(codes.contains(&("report_deadline_on_non_working_day".to_owned(), None)));
    assert!(codes.contains(&(
        "visit_on_non_working_day".to_owned(),
        Some("visits/xa-quai-cang".to_owned())
    )));
    assert_eq!(
        codes
            .iter()
            .filter(|(c, _)| c == "visit_on_non_working_day")
            .count(),
        1
    );
    // Nothing is left to fire before the visits are recorded.
    assert_eq!(sched.pending(), 0);
}

/// The rest of the supervision's timers: findings due after the last visit, the three
/// recommendation reminders and the overdue mark, and the archive-due warning.
#[tokio::test]
async fn findings_recommendation_and_archive_timers_fire_on_their_dates() {
    let (store, _dir) = sqlite().await;
    let wf = workflow();
    seed_case(&store, &wf, "tg").await;
    let clock = ManualClock::new(t("2024-03-25T08:00:00+07:00"));
    let sched = scheduler(&store, &clock, calendar());
    sched.rebuild().await.expect("rebuild");
    sched
        .advance_to(&clock, t("2024-04-24T07:45:00+07:00"))
        .await
        .expect("advance");
    let visits = [
        ("thi-tran-tuan-giao", "2024-04-25"),
        ("xa-quai-to", "2024-04-26"),
        ("xa-quai-cang", "2024-04-29"),
        ("xa-quai-nua", "2024-05-02"),
        ("xa-quai-na-tong", "2024-05-03"),
        ("xa-phinh-sang", "2024-05-08"),
        ("xa-ta-ma", "2024-05-09"),
        ("phong-noi-vu", "2024-05-10"),
        ("ubnd-huyen", "2024-05-13"),
    ];
    for (unit, date) in visits {
        let at = format!("{date}T11:00:00+07:00");
        command(
            &store,
            "tg",
            "record_visit",
            "delegation:trong",
            &at,
            json!({"unit": unit, "held_at": at, "attendees": ["Trần Bình Trọng"], "minutes_summary": "Đã làm việc"}),
        )
        .await;
    }
    sched.refresh_case("tg").await.expect("refresh");
    let findings = sched
        .advance_to(&clock, t("2024-05-20T00:00:00+07:00"))
        .await
        .expect("advance");
    // The last visit was held on 13/5; members' findings are due by the end of 18/5.
    assert_eq!(
        summary(&findings)
            .into_iter()
            .filter(|r| r.1 == "findings_due")
            .collect::<Vec<_>>(),
        vec![row("2024-05-19 00:00", "findings_due", "-", "FindingsDue")]
    );
    command(&store, "tg", "record_finding", "delegation:trong", "2024-05-20T08:00:00+07:00",
        json!({"id": "f1", "member": "Trần Bình Trọng", "text": "Cần đẩy mạnh dịch vụ công trực tuyến"})).await;
    command(&store, "tg", "issue_findings_report", "secretariat:huyen", "2024-05-28T08:00:00+07:00",
        json!({"issued_on": "2024-05-28", "summary": "Báo cáo kết quả", "recommendations": [{"id": "k1", "text": "Đẩy mạnh", "to": "UBND huyện"}]})).await;
    command(&store, "tg", "adopt_resolution", "secretariat:huyen", "2024-07-10T08:00:00+07:00",
        json!({"number": "12/NQ-HĐND", "date": "2024-07-10", "recommendations": [
            {"id": "k1", "text": "Đẩy mạnh dịch vụ công trực tuyến", "responsible": "UBND huyện", "deliverable": "Báo cáo kết quả", "deadline": "2024-09-30"},
            {"id": "k2", "text": "Rà soát thủ tục hành chính", "responsible": "Phòng Nội vụ", "deliverable": "Danh mục thủ tục", "deadline": "2024-10-31"}
        ]})).await;
    // k2 is completed early: its later reminders and its overdue mark no longer apply.
    command(&store, "tg", "report_recommendation_progress", "secretariat:huyen", "2024-10-10T08:00:00+07:00",
        json!({"recommendation": "k2", "status": "completed", "reported_at": "2024-10-10T08:00:00+07:00"})).await;
    sched.refresh_case("tg").await.expect("refresh");
    let follow_up = sched
        .advance_to(&clock, t("2024-11-30T00:00:00+07:00"))
        .await
        .expect("advance");
    let rows = summary(&follow_up);
    let expected = vec![
        row(
            "2024-09-15 08:00",
            "recommendation_reminder_first",
            "k1",
            "RecommendationReminderSent",
        ),
        row(
            "2024-09-23 08:00",
            "recommendation_reminder_second",
            "k1",
            "RecommendationReminderSent",
        ),
        row(
            "2024-09-27 08:00",
            "recommendation_reminder_third",
            "k1",
            "RecommendationReminderSent",
        ),
        row(
            "2024-10-01 00:00",
            "recommendation_overdue",
            "k1",
            "RecommendationOverdue",
        ),
    ];
    assert_eq!(rows, expected);

    command(&store, "tg", "report_recommendation_progress", "secretariat:huyen", "2024-12-02T08:00:00+07:00",
        json!({"recommendation": "k1", "status": "completed", "reported_at": "2024-12-02T08:00:00+07:00"})).await;
    command(
        &store,
        "tg",
        "close_case",
        "secretariat:huyen",
        "2024-12-05T08:00:00+07:00",
        json!({"closed_on": "2024-12-05"}),
    )
    .await;
    sched.refresh_case("tg").await.expect("refresh");
    let archive = sched
        .advance_to(&clock, t("2026-01-01T00:00:00+07:00"))
        .await
        .expect("advance");
    // One year after closure is 5/12/2025; the warning comes 30 days before.
    assert_eq!(
        summary(&archive),
        vec![row(
            "2025-11-05 08:00",
            "archive_due_warning",
            "-",
            "ArchiveDueWarning"
        )]
    );
}

/// A pending timer whose command the workflow refuses when it comes due is recorded as rejected
/// and changes nothing.
#[tokio::test]
async fn a_timer_whose_command_no_longer_applies_is_recorded_as_rejected() {
    let (store, _dir) = sqlite().await;
    let wf = workflow();
    seed_case(&store, &wf, "tg").await;
    let clock = ManualClock::new(t("2024-04-24T07:30:00+07:00"));
    let sched = scheduler(&store, &clock, calendar());
    sched.rebuild().await.expect("rebuild");
    sched.fire_due(clock.now()).await;
    for (unit, date) in [("thi-tran-tuan-giao", "2024-04-25")] {
        let at = format!("{date}T11:00:00+07:00");
        command(
            &store,
            "tg",
            "record_visit",
            "delegation:trong",
            &at,
            json!({"unit": unit, "held_at": at, "attendees": ["A"], "minutes_summary": "x"}),
        )
        .await;
    }
    for unit in [
        "xa-quai-to",
        "xa-quai-cang",
        "xa-quai-nua",
        "xa-quai-na-tong",
        "xa-phinh-sang",
        "xa-ta-ma",
        "phong-noi-vu",
        "ubnd-huyen",
    ] {
        command(
            &store,
            "tg",
            "cancel_visit",
            "secretariat:huyen",
            "2024-04-25T12:00:00+07:00",
            json!({"unit": unit, "reason": "Đơn vị đã báo cáo đầy đủ"}),
        )
        .await;
    }
    // The findings report is issued before the members' deadline passes.
    command(
        &store,
        "tg",
        "record_finding",
        "delegation:trong",
        "2024-04-26T08:00:00+07:00",
        json!({"id": "f1", "member": "A", "text": "x"}),
    )
    .await;
    command(
        &store,
        "tg",
        "issue_findings_report",
        "secretariat:huyen",
        "2024-04-26T09:00:00+07:00",
        json!({"issued_on": "2024-04-26", "summary": "x", "recommendations": []}),
    )
    .await;
    sched.refresh_case("tg").await.expect("refresh");
    let before = load_case(&store, "tg").await.expect("load").expect("case");
    let fired = sched
        .advance_to(&clock, t("2024-05-01T00:00:00+07:00"))
        .await
        .expect("advance");
    assert_eq!(
        summary(&fired),
        vec![row(
            "2024-05-01 00:00",
            "findings_due",
            "-",
            "rejected:findings_report_already_issued"
        )]
    );
    let after = load_case(&store, "tg").await.expect("load").expect("case");
    assert_eq!(after.state.data, before.state.data);
    assert_eq!(after.state.stream_version, before.state.stream_version + 1);
    let (event_type, data) = case_events(&store, "tg").await.pop().expect("event");
    assert_eq!(event_type, "TimerRejected");
    assert!(data.effects.is_empty());
    let record = data.timer.expect("timer record");
    assert_eq!(record.outcome, TimerOutcome::Rejected);
    assert_eq!(
        record.code.as_deref(),
        Some("findings_report_already_issued")
    );
    // It is done: it does not fire again.
    assert_eq!(sched.pending(), 0);
    assert!(
        sched
            .fire_due(t("2024-06-01T00:00:00+07:00"))
            .await
            .is_empty()
    );
}

/// Timers that came due while no scheduler ran fire once at start, in due order, recorded as
/// late; a timer whose policy is `skip` is recorded as skipped instead.
#[tokio::test]
async fn after_a_restart_missed_timers_fire_once_in_order_or_are_skipped_by_policy() {
    let (store, _dir) = sqlite().await;
    // The same workflow, with the on-the-day reminder set to skip when late.
    let wf = workflow_with(|text| {
        text.replace(
            "    input: { unit: /target/key, reason: { value: deadline_day } }\n",
            "    input: { unit: /target/key, reason: { value: deadline_day } }\n    when_late: skip\n",
        )
    });
    seed_case(&store, &wf, "tg").await;
    for unit in [
        "ubnd-huyen",
        "phong-noi-vu",
        "xa-ta-ma",
        "xa-phinh-sang",
        "xa-quai-na-tong",
        "xa-quai-nua",
    ] {
        report(&store, "tg", unit, "2024-04-01T09:00:00+07:00").await;
    }
    // A scheduler runs until 15/4, then the machine goes down.
    let clock = ManualClock::new(t("2024-04-01T09:00:00+07:00"));
    {
        let first = scheduler(&store, &clock, calendar());
        first.rebuild().await.expect("rebuild");
        assert!(
            first
                .advance_to(&clock, t("2024-04-15T12:00:00+07:00"))
                .await
                .expect("advance")
                .is_empty()
        );
        assert_eq!(first.pending(), 3 + 3 + 1 + 1 + 9);
    }
    // It comes back on 22/4 at 09:00: everything due in between fires now, once, in due order.
    let clock = ManualClock::new(t("2024-04-22T09:00:00+07:00"));
    let second = scheduler(&store, &clock, calendar());
    second.rebuild().await.expect("rebuild");
    let fired = second.fire_due(clock.now()).await;
    let rows = summary(&fired);
    assert_eq!(
        rows,
        vec![
            row(
                "2024-04-16 08:00",
                "report_reminder_before",
                "thi-tran-tuan-giao",
                "ReportReminderSent"
            ),
            row(
                "2024-04-16 08:00",
                "report_reminder_before",
                "xa-quai-cang",
                "ReportReminderSent"
            ),
            row(
                "2024-04-16 08:00",
                "report_reminder_before",
                "xa-quai-to",
                "ReportReminderSent"
            ),
            row(
                "2024-04-20 08:00",
                "report_reminder_on_day",
                "thi-tran-tuan-giao",
                "skipped"
            ),
            row(
                "2024-04-20 08:00",
                "report_reminder_on_day",
                "xa-quai-cang",
                "skipped"
            ),
            row(
                "2024-04-20 08:00",
                "report_reminder_on_day",
                "xa-quai-to",
                "skipped"
            ),
            row(
                "2024-04-21 00:00",
                "reports_overdue",
                "-",
                "ReportsMarkedOverdue"
            ),
        ]
    );
    let events = case_events(&store, "tg").await;
    let timer_events: Vec<(String, String, bool)> = events
        .iter()
        .filter_map(|(ty, d)| {
            d.timer
                .as_ref()
                .map(|r| (ty.clone(), r.timer.clone(), r.late))
        })
        .collect();
    // Appended in due order (one case's timers fire one at a time), each marked late.
    assert_eq!(
        timer_events
            .iter()
            .map(|(ty, _, _)| ty.as_str())
            .collect::<Vec<_>>(),
        vec![
            "ReportReminderSent",
            "ReportReminderSent",
            "ReportReminderSent",
            "TimerSkipped",
            "TimerSkipped",
            "TimerSkipped",
            "ReportsMarkedOverdue",
        ]
    );
    assert!(timer_events.iter().all(|(_, _, late)| *late));
    // A third start fires nothing again.
    let third = scheduler(&store, &clock, calendar());
    third.rebuild().await.expect("rebuild");
    assert!(third.fire_due(clock.now()).await.is_empty());
    assert_eq!(case_events(&store, "tg").await.len(), events.len());
}

async fn race(store_a: Store, store_b: Store) {
    let wf = workflow();
    for case in ["a", "b", "c"] {
        seed_case(&store_a, &wf, case).await;
    }
    // Two machines whose clocks differ by a millisecond.
    let clock_a = ManualClock::new(t("2024-04-22T09:00:00+07:00"));
    let clock_b = ManualClock::new(t("2024-04-22T09:00:00.001+07:00"));
    let one = scheduler(&store_a, &clock_a, calendar());
    let two = scheduler(&store_b, &clock_b, calendar());
    one.rebuild().await.expect("rebuild");
    two.rebuild().await.expect("rebuild");
    let (x, y) = tokio::join!(one.fire_due(clock_a.now()), two.fire_due(clock_b.now()));
    let fired = |f: &[Firing]| {
        f.iter()
            .filter(|f| matches!(f.outcome, FireOutcome::Fired(_)))
            .count()
    };
    // 9 units × 2 reminders + the overdue mark, per case.
    assert_eq!(
        fired(&x) + fired(&y),
        3 * 19,
        "each timer fired by exactly one scheduler"
    );
    for case in ["a", "b", "c"] {
        let mut instances: Vec<String> = case_events(&store_a, case)
            .await
            .into_iter()
            .filter_map(|(_, d)| d.timer.map(|r| r.instance))
            .collect();
        assert_eq!(instances.len(), 19);
        instances.sort();
        instances.dedup();
        assert_eq!(
            instances.len(),
            19,
            "no timer recorded twice in case {case}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_on_one_postgresql_database_fire_each_timer_once() {
    let Some(url) = postgres_url() else { return };
    let a = Store::open(&url, StoreOptions::default())
        .await
        .expect("open a");
    let b = Store::open(&url, StoreOptions::default())
        .await
        .expect("open b");
    race(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_on_one_sqlite_file_fire_each_timer_once() {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("s.db").display());
    let a = Store::open(&url, StoreOptions::default())
        .await
        .expect("open a");
    let b = Store::open(&url, StoreOptions::default())
        .await
        .expect("open b");
    race(a, b).await;
}

/// A new holiday arrangement after a case was scheduled: working-day timers follow the new
/// calendar, warnings appear, and nothing in the case moves (no event is appended).
#[tokio::test]
async fn a_calendar_change_after_scheduling_moves_working_day_timers_and_raises_warnings_only() {
    let (store, _dir) = sqlite().await;
    let wf = workflow();
    seed_case(&store, &wf, "tg").await;
    let clock = ManualClock::new(t("2024-03-25T09:00:00+07:00"));
    let sched = scheduler(&store, &clock, Calendar::weekends_only());
    sched.rebuild().await.expect("rebuild");
    let due_of = |timers: &[giamsat_engine::TimerInstance], timer: &str, key: &str| {
        timers
            .iter()
            .find(|t| t.timer == timer && t.key.as_deref() == Some(key) && t.is_pending())
            .map(|t| t.due.to_rfc3339())
    };
    let before = sched.case_timers("tg").await.expect("timers");
    // Weekends only: 3 working days before Saturday 20/4 is Wednesday 17/4.
    assert_eq!(
        due_of(&before, "report_reminder_before", "xa-ta-ma").as_deref(),
        Some("2024-04-17T08:00:00+07:00")
    );
    assert_eq!(
        due_of(&before, "visit_reminder", "xa-quai-nua").as_deref(),
        Some("2024-05-01T08:00:00+07:00")
    );
    let case = load_case(&store, "tg").await.expect("load").expect("case");
    let codes = |calendar: &Calendar| -> Vec<String> {
        warnings(&wf, &case.state, calendar)
            .into_iter()
            .filter(|w| w.code == "visit_on_non_working_day")
            .map(|w| w.entity.unwrap_or_default())
            .collect()
    };
    assert!(codes(&Calendar::weekends_only()).is_empty());

    // The 2024 holiday files are published.
    sched.set_calendar(calendar()).await.expect("reload");
    let after = sched.case_timers("tg").await.expect("timers");
    assert_eq!(
        due_of(&after, "report_reminder_before", "xa-ta-ma").as_deref(),
        Some("2024-04-16T08:00:00+07:00")
    );
    assert_eq!(
        due_of(&after, "visit_reminder", "xa-quai-nua").as_deref(),
        Some("2024-04-26T08:00:00+07:00")
    );
    assert_eq!(codes(&calendar()), vec!["visits/xa-quai-cang".to_owned()]);
    let unchanged = load_case(&store, "tg").await.expect("load").expect("case");
    assert_eq!(unchanged.state.stream_version, case.state.stream_version);
    assert_eq!(
        unchanged
            .state
            .entity("visits", "xa-quai-cang")
            .expect("visit")
            .data["date"],
        "2024-04-29"
    );
    // The scheduler's index follows: the earliest pending timer is now 16/4.
    assert_eq!(sched.next_due(), Some(t("2024-04-16T08:00:00+07:00")));
}

/// A per-entity timer follows its entity's date: a rescheduled visit gets a new reminder, and a
/// reminder already sent for the old date stays in the list as done.
#[tokio::test]
async fn a_rescheduled_visit_gets_a_new_reminder() {
    let (store, _dir) = sqlite().await;
    let wf = workflow();
    seed_case(&store, &wf, "tg").await;
    let clock = ManualClock::new(t("2024-04-24T07:00:00+07:00"));
    let sched = scheduler(&store, &clock, calendar());
    sched.rebuild().await.expect("rebuild");
    let first = sched
        .advance_to(&clock, t("2024-04-24T09:00:00+07:00"))
        .await
        .expect("advance");
    assert!(summary(&first).contains(&row(
        "2024-04-24 08:00",
        "visit_reminder",
        "thi-tran-tuan-giao",
        "VisitReminderSent"
    )));
    command(&store, "tg", "reschedule_visit", "secretariat:huyen", "2024-04-24T10:00:00+07:00",
        json!({"unit": "thi-tran-tuan-giao", "date": "2024-05-06", "start_time": "08:00", "reason": "Trùng lịch họp"})).await;
    sched.refresh_case("tg").await.expect("refresh");
    let timers = sched.case_timers("tg").await.expect("timers");
    let visit: Vec<(String, bool)> = timers
        .iter()
        .filter(|t| t.timer == "visit_reminder" && t.key.as_deref() == Some("thi-tran-tuan-giao"))
        .map(|t| (t.due.to_rfc3339(), matches!(t.state, TimerState::Done(_))))
        .collect();
    // Monday 6/5: the working day before is make-up Saturday 4/5/2024.
    assert_eq!(
        visit,
        vec![
            ("2024-04-24T08:00:00+07:00".to_owned(), true),
            ("2024-05-04T08:00:00+07:00".to_owned(), false),
        ]
    );
}

/// Cron: a restart neither repeats a run nor silently skips one.
#[tokio::test]
async fn cron_keeps_its_high_water_mark_across_restarts() {
    let (store, _dir) = sqlite().await;
    let make = || {
        CronSchedule::new(
            "daily-digest",
            "0 7 * * *",
            "Asia/Ho_Chi_Minh",
            TimeDelta::hours(6),
            "Bản tin hằng ngày",
        )
        .expect("schedule")
    };
    let digest = make();
    assert_eq!(
        run_cron(&store, &digest, t("2024-04-01T06:00:00+07:00"))
            .await
            .expect("run"),
        vec![CronRun::Registered {
            since: t("2024-04-01T06:00:00+07:00")
        }]
    );
    assert!(
        run_cron(&store, &digest, t("2024-04-01T06:59:59+07:00"))
            .await
            .expect("run")
            .is_empty()
    );
    assert_eq!(
        run_cron(&store, &digest, t("2024-04-01T07:00:00.300+07:00"))
            .await
            .expect("run"),
        vec![CronRun::Ran {
            scheduled_for: t("2024-04-01T07:00:00+07:00"),
            ran_at: t("2024-04-01T07:00:00.300+07:00"),
            coalesced: 0
        }]
    );
    // Restart at 09:00 the same day: the 07:00 run is not repeated.
    let restarted = make();
    assert!(
        run_cron(&store, &restarted, t("2024-04-01T09:00:00+07:00"))
            .await
            .expect("run")
            .is_empty()
    );
    // Down from the 1st to 10:00 on the 4th: the 2nd and 3rd are older than the 6-hour window
    // and recorded as skipped; the 4th's run happens once, late.
    let again = make();
    assert_eq!(
        run_cron(&store, &again, t("2024-04-04T10:00:00+07:00"))
            .await
            .expect("run"),
        vec![
            CronRun::Skipped {
                from: t("2024-04-02T07:00:00+07:00"),
                to: t("2024-04-03T07:00:00+07:00"),
                count: 2
            },
            CronRun::Ran {
                scheduled_for: t("2024-04-04T07:00:00+07:00"),
                ran_at: t("2024-04-04T10:00:00+07:00"),
                coalesced: 0
            },
        ]
    );
    assert!(
        run_cron(&store, &again, t("2024-04-04T11:00:00+07:00"))
            .await
            .expect("run")
            .is_empty()
    );
    let stream = StreamId::new("cron/daily-digest".to_owned()).expect("stream");
    let types: Vec<String> = store
        .read_stream(&stream, Direction::Forward, Some(1), 100)
        .await
        .expect("read")
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        vec![
            "CronScheduleRegistered",
            "CronRan",
            "CronRunsSkipped",
            "CronRan"
        ]
    );
}

#[tokio::test]
async fn cron_patterns_are_five_fields_in_a_time_zone() {
    // Monthly follow-up review at 08:00 on the 1st, Vietnamese time (01:00 UTC).
    let monthly = CronSchedule::new(
        "review",
        "0 8 1 * *",
        "Asia/Ho_Chi_Minh",
        TimeDelta::days(1),
        "",
    )
    .expect("schedule");
    assert_eq!(
        monthly.next_after(t("2024-04-15T00:00:00Z")),
        Some(t("2024-05-01T01:00:00Z"))
    );
    // Day of week 1 is Monday (standard cron), not Sunday.
    let mondays = CronSchedule::new(
        "m",
        "30 7 * * 1",
        "Asia/Ho_Chi_Minh",
        TimeDelta::hours(1),
        "",
    )
    .expect("schedule");
    assert_eq!(
        mondays.next_after(t("2024-04-17T00:00:00+07:00")),
        Some(t("2024-04-22T07:30:00+07:00"))
    );
    let err = CronSchedule::new(
        "s",
        "0 0 7 * * *",
        "Asia/Ho_Chi_Minh",
        TimeDelta::hours(1),
        "",
    )
    .expect_err("six fields");
    assert!(err.to_string().contains("5 fields"), "{err}");
    let err = CronSchedule::new("z", "0 7 * * *", "Mars/Olympus", TimeDelta::hours(1), "")
        .expect_err("zone");
    assert!(err.to_string().contains("IANA"), "{err}");
    let err =
        CronSchedule::new("r", "0 25 * * *", "UTC", TimeDelta::hours(1), "").expect_err("hour");
    assert!(err.to_string().contains("0 25 * * *"), "{err}");
}

/// Two schedulers on one database record a cron run once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_schedulers_record_a_cron_run_once() {
    let (store, dir) = sqlite().await;
    let digest = CronSchedule::new(
        "d",
        "0 7 * * *",
        "Asia/Ho_Chi_Minh",
        TimeDelta::hours(6),
        "",
    )
    .expect("schedule");
    run_cron(&store, &digest, t("2024-04-01T06:00:00+07:00"))
        .await
        .expect("register");
    let other = Store::open(
        &format!("sqlite://{}", dir.path().join("s.db").display()),
        StoreOptions::default(),
    )
    .await
    .expect("second handle");
    // Two machines, clocks a millisecond apart.
    let (a, b) = tokio::join!(
        run_cron(&store, &digest, t("2024-04-01T07:00:01+07:00")),
        run_cron(&other, &digest, t("2024-04-01T07:00:01.001+07:00"))
    );
    let runs = a.expect("a").len() + b.expect("b").len();
    assert_eq!(runs, 1);
    let stream = StreamId::new("cron/d".to_owned()).expect("stream");
    let events = store
        .read_stream(&stream, Direction::Forward, Some(1), 100)
        .await
        .expect("read");
    assert_eq!(events.len(), 2, "registered once, ran once");
}
