//! The seed supervision from establishment to the archive through the daemon's HTTP API: the
//! real `giamsat serve` with the documents, notifications and archive exporters configured, on
//! a manual clock an admin moves (`POST /api/clock`), so the scheduler fires every timer of the
//! case at its simulated time while the people act with a token of their role each: the
//! secretariat, the delegation, two units' clerks and a viewer. Checked on the way: the denials
//! (role, unit, a command only the delegation may run), what a unit sees; at the end: the stages
//! and the timers' effects, the documents and their downloads, the outbox, the archive bag
//! (our verifier and the reference validator, on disk and downloaded over HTTP) and `verify` of the log over HTTP and from the
//! command line.

use std::collections::BTreeSet;
use std::time::Instant;

use serde_json::{Value, json};

use crate::seed_to_the_end::CONFIG;
use crate::support::{
    Answer, Daemon, Http, PATIENCE, Sandbox, create_token, files_under, only_package,
    reference_validates, seed_with_addresses, workflows_dir,
};

const CASE: &str = "tg2024";

/// The people's tokens.
struct Tokens {
    admin: String,
    secretariat: String,
    delegation: String,
    quai_to: String,
    ta_ma: String,
    viewer: String,
}

struct Office {
    http: Http,
    t: Tokens,
}

impl Office {
    /// Moves the daemon's clock to `at`, then waits until the scheduler has fired every timer of
    /// the case that came due (none left pending with a due time passed).
    async fn advance(&self, at: &str) {
        let moved = self
            .http
            .post("/api/clock", &self.t.admin, &json!({ "now": at }))
            .await
            .expect(200);
        assert_eq!(moved.body["kind"], "manual");
        let started = Instant::now();
        loop {
            let timers = self
                .http
                .get(&format!("/api/cases/{CASE}/timers"), &self.t.admin)
                .await;
            if timers.status == 404 {
                return; // no case yet
            }
            let due: Vec<&Value> = timers
                .body
                .as_array()
                .expect("timers")
                .iter()
                .filter(|t| t["due_now"] == true)
                .collect();
            if due.is_empty() {
                return;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "the scheduler left timers due at {at}: {due:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// Runs a workflow command with a token.
    async fn command(&self, token: &str, name: &str, input: Value) -> Answer {
        self.http
            .post(&format!("/api/cases/{CASE}/commands/{name}"), token, &input)
            .await
    }

    /// Moves the clock to `at`, then runs the command, which must succeed.
    async fn step(&self, at: &str, token: &str, name: &str, input: Value) -> Value {
        self.advance(at).await;
        let done = self.command(token, name, input).await;
        assert_eq!(done.status, 200, "{name} at {at}: {}", done.text());
        done.body
    }

    async fn case(&self, token: &str) -> Value {
        self.http
            .get(&format!("/api/cases/{CASE}"), token)
            .await
            .expect(200)
            .body
    }

    /// Waits until every exporter has handled the whole log, none with a parked event.
    async fn exporters_caught_up(&self) -> Value {
        let started = Instant::now();
        loop {
            let status = self
                .http
                .get("/api/exporters", &self.t.admin)
                .await
                .expect(200);
            let list = status.body.as_array().expect("exporters");
            assert_eq!(list.len(), 3, "{}", status.text());
            for e in list {
                assert_eq!(e["parked"], 0, "an exporter parked an event: {e}");
            }
            if list.iter().all(|e| e["lag_events"] == 0) {
                return status.body;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "the exporters did not catch up: {}",
                status.text()
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

/// Asserts a 403 with this error code.
#[track_caller]
fn denied(answer: &Answer, code: &str) {
    assert_eq!(answer.status, 403, "{}", answer.text());
    assert_eq!(answer.body["code"], code, "{}", answer.text());
}

fn report(unit: &str, at: &str, figures: &[(i64, &str, i64, i64)]) -> Value {
    let rows: Vec<Value> = figures
        .iter()
        .map(|(year, field, total, on_time)| {
            json!({"year": year, "field": field, "total": total, "on_time": on_time})
        })
        .collect();
    json!({
        "unit": unit,
        "received_at": at,
        "channel": "email",
        "file": format!("bao-cao-{unit}.pdf"),
        "phu_luc_03": rows,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_supervision_runs_over_http_with_a_token_of_each_role() {
    let s = Sandbox::sqlite();
    // The exporters, and the log as JSON lines for a log collector.
    let config = s
        .write(
            "giamsat.toml",
            &format!("{CONFIG}\n[log]\nlevel = \"info\"\nformat = \"json\"\n"),
        )
        .display()
        .to_string();
    let t = Tokens {
        admin: create_token(&s, "admin", None, "quan-tri"),
        secretariat: create_token(&s, "secretariat", None, "huyen"),
        delegation: create_token(&s, "delegation", None, "trong"),
        quai_to: create_token(&s, "unit", Some("xa-quai-to"), "van-thu-quai-to"),
        ta_ma: create_token(&s, "unit", Some("xa-ta-ma"), "van-thu-ta-ma"),
        viewer: create_token(&s, "viewer", None, "xem"),
    };
    let mut daemon = Daemon::start(
        &s,
        &["--config", &config],
        &["--clock", "manual:2024-03-20T08:00:00+07:00"],
    );
    let office = Office {
        http: Http::new(&daemon),
        t,
    };
    let t = &office.t;
    let http = &office.http;

    // Establishment: a viewer may not start the case; the secretariat does.
    let start = json!({
        "workflow": "giam-sat-chuyen-de",
        "id": CASE,
        "data": seed_with_addresses(),
    });
    denied(
        &http.post("/api/cases", &t.viewer, &start).await,
        "role_not_allowed",
    );
    let started = http
        .post("/api/cases", &t.secretariat, &start)
        .await
        .expect(201);
    assert_eq!(started.body["case"]["stage"], "established");

    // The plan and the notice; the notice is numbered once the exporter has rendered it.
    office
        .step(
            "2024-03-21T08:00:00+07:00",
            &t.secretariat,
            "issue_plan",
            json!({"issued_on": "2024-03-21", "document": "ke-hoach"}),
        )
        .await;
    let noticed = office
        .step(
            "2024-03-25T08:00:00+07:00",
            &t.secretariat,
            "issue_notice",
            json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
        )
        .await;
    assert_eq!(noticed["case"]["stage"], "notified");
    office.advance("2024-03-25T10:00:00+07:00").await;
    office.exporters_caught_up().await;
    let number = format!("/api/cases/{CASE}/documents/thong-bao-lich/number");
    denied(
        &http.post(&number, &t.delegation, &json!({})).await,
        "role_not_allowed",
    );
    denied(
        &http.post(&number, &t.quai_to, &json!({})).await,
        "role_not_allowed",
    );
    let numbered = http
        .post(&number, &t.secretariat, &json!({}))
        .await
        .expect(200);
    assert_eq!(numbered.body["entry"]["symbol"], "01/TB-ĐGS");
    assert_eq!(numbered.body["recorded_in_case"], true);

    // Monday 29/4/2024 is a day off that year: the delegation moves the visit to Quài Cang.
    office
        .step(
            "2024-04-03T09:00:00+07:00",
            &t.delegation,
            "reschedule_visit",
            json!({
                "unit": "xa-quai-cang",
                "date": "2024-05-06",
                "start_time": "08:00",
                "reason": "Ngày 29/4/2024 là ngày nghỉ (hoán đổi với thứ Bảy 04/5/2024)",
            }),
        )
        .await;

    // A unit's clerk: sees only its own unit, may not send another unit's report, sends its
    // own with the Phụ lục 03 figures (on time); a figure that cannot be is refused (422).
    office.advance("2024-04-12T14:00:00+07:00").await;
    let seen = office.case(&t.quai_to).await;
    let units: Vec<&String> = seen["entities"]["units"]
        .as_object()
        .expect("units")
        .keys()
        .collect();
    assert_eq!(units, ["xa-quai-to"]);
    assert!(
        !seen.to_string().contains("xa-ta-ma"),
        "another unit's data leaked: {seen}"
    );
    let at = "2024-04-12T14:00:00+07:00";
    denied(
        &office
            .command(&t.quai_to, "receive_report", report("xa-ta-ma", at, &[]))
            .await,
        "not_own_unit",
    );
    let impossible = office
        .command(
            &t.quai_to,
            "receive_report",
            report("xa-quai-to", at, &[(2023, "all", 10, 11)]),
        )
        .await
        .expect(422);
    assert_eq!(impossible.body["code"], "on_time_above_total");
    let figures = [
        (2022, "all", 642, 630),
        (2022, "land", 158, 149),
        (2023, "all", 701, 695),
        (2023, "land", 172, 168),
    ];
    let sent = office
        .command(
            &t.quai_to,
            "receive_report",
            report("xa-quai-to", at, &figures),
        )
        .await
        .expect(200);
    assert_eq!(
        sent.body["case"]["entities"]["units"]["xa-quai-to"]["state"],
        "received"
    );
    // The district's report comes on paper, received by the secretariat.
    let mut paper = report(
        "ubnd-huyen",
        "2024-04-19T15:00:00+07:00",
        &[(2022, "all", 4820, 4711), (2023, "all", 5133, 5087)],
    );
    paper["channel"] = json!("paper");
    office
        .step(
            "2024-04-19T15:00:00+07:00",
            &t.secretariat,
            "receive_report",
            paper,
        )
        .await;

    // The deadline passes (the scheduler marks the reports overdue); Tà Ma reports late.
    office.advance("2024-04-23T09:00:00+07:00").await;
    let due = office.case(&t.secretariat).await;
    assert_eq!(due["stage"], "reports_due");
    assert_eq!(
        due["entities"]["units"]["xa-phinh-sang"]["state"],
        "overdue"
    );
    let late = office
        .command(
            &t.ta_ma,
            "receive_report",
            report(
                "xa-ta-ma",
                "2024-04-23T09:00:00+07:00",
                &[(2022, "all", 388, 371), (2023, "all", 402, 396)],
            ),
        )
        .await
        .expect(200);
    assert_eq!(
        late.body["case"]["entities"]["units"]["xa-ta-ma"]["state"],
        "received_late"
    );

    // The delegation's meeting (the viewer may not record it) and its nine visits.
    let meeting = json!({
        "held_at": "2024-04-24T07:30:00+07:00",
        "attendees": ["Trần Bình Trọng", "Nguyễn Thị Huyền"],
        "notes": "Thống nhất lịch và phân công thành viên giám sát trực tiếp",
    });
    office.advance("2024-04-24T10:30:00+07:00").await;
    denied(
        &office
            .command(&t.viewer, "hold_meeting", meeting.clone())
            .await,
        "role_not_allowed",
    );
    let held = office
        .step(
            "2024-04-24T10:30:00+07:00",
            &t.delegation,
            "hold_meeting",
            meeting,
        )
        .await;
    assert_eq!(held["case"]["stage"], "visits");
    for (unit, day) in [
        ("thi-tran-tuan-giao", "2024-04-25"),
        ("xa-quai-to", "2024-04-26"),
        ("xa-quai-nua", "2024-05-02"),
        ("xa-quai-na-tong", "2024-05-03"),
        ("xa-quai-cang", "2024-05-06"),
        ("xa-phinh-sang", "2024-05-08"),
        ("xa-ta-ma", "2024-05-09"),
        ("phong-noi-vu", "2024-05-10"),
        ("ubnd-huyen", "2024-05-13"),
    ] {
        office
            .step(
                &format!("{day}T17:00:00+07:00"),
                &t.delegation,
                "record_visit",
                json!({
                    "unit": unit,
                    "held_at": format!("{day}T08:00:00+07:00"),
                    "attendees": ["Trần Bình Trọng", "Nguyễn Thị Huyền"],
                    "minutes_summary": "Đã làm việc với đơn vị theo đề cương",
                }),
            )
            .await;
    }

    // Findings are the delegation's own: the secretariat may not record one.
    let finding = json!({
        "id": "f1",
        "member": "Trần Bình Trọng",
        "unit": "xa-quai-to",
        "text": "Việc số hóa kết quả giải quyết thủ tục hành chính còn chậm",
    });
    office.advance("2024-05-15T09:00:00+07:00").await;
    denied(
        &office
            .command(&t.secretariat, "record_finding", finding.clone())
            .await,
        "role_not_allowed",
    );
    office
        .step(
            "2024-05-15T09:00:00+07:00",
            &t.delegation,
            "record_finding",
            finding,
        )
        .await;
    let recommendations = json!([
        {"id": "kn-1", "text": "Đẩy nhanh việc số hóa kết quả giải quyết thủ tục hành chính", "to": "UBND huyện"},
        {"id": "kn-2", "text": "Chỉ đạo các xã gửi báo cáo đúng hạn", "to": "UBND các xã, thị trấn"},
    ]);
    office
        .step(
            "2024-05-27T08:00:00+07:00",
            &t.delegation,
            "issue_findings_report",
            json!({
                "issued_on": "2024-05-27",
                "summary": "Báo cáo kết quả giám sát việc thực hiện kế hoạch cải cách hành chính",
                "recommendations": recommendations,
            }),
        )
        .await;

    // The council's resolution is the secretariat's to record, not the delegation's.
    let resolution = json!({
        "number": "20/NQ-HĐND",
        "date": "2024-07-10",
        "recommendations": [
            {"id": "kn-1", "text": "Đẩy nhanh việc số hóa kết quả giải quyết thủ tục hành chính", "responsible": "UBND huyện", "deliverable": "Báo cáo kết quả số hóa", "deadline": "2024-10-31"},
            {"id": "kn-2", "text": "Chỉ đạo các xã gửi báo cáo đúng hạn", "responsible": "UBND các xã, thị trấn", "deliverable": "Báo cáo của UBND huyện", "deadline": "2024-12-31"},
        ],
    });
    office.advance("2024-07-10T08:00:00+07:00").await;
    denied(
        &office
            .command(&t.delegation, "adopt_resolution", resolution.clone())
            .await,
        "role_not_allowed",
    );
    office
        .step(
            "2024-07-10T08:00:00+07:00",
            &t.secretariat,
            "adopt_resolution",
            resolution,
        )
        .await;
    let progress = |id: &str, at: &str| {
        json!({
            "recommendation": id,
            "status": "completed",
            "evidence": "Báo cáo của UBND huyện",
            "reported_at": at,
        })
    };
    office
        .step(
            "2024-10-25T09:00:00+07:00",
            &t.secretariat,
            "report_recommendation_progress",
            progress("kn-1", "2024-10-25T09:00:00+07:00"),
        )
        .await;
    // kn-2's deadline passes first: the scheduler marks it overdue.
    office.advance("2025-01-20T09:00:00+07:00").await;
    let overdue = office.case(&t.viewer).await;
    assert_eq!(
        overdue["entities"]["recommendations"]["kn-2"]["state"], "overdue",
        "{}",
        overdue["entities"]["recommendations"]
    );
    office
        .step(
            "2025-01-20T09:00:00+07:00",
            &t.secretariat,
            "report_recommendation_progress",
            progress("kn-2", "2025-01-20T09:00:00+07:00"),
        )
        .await;
    office
        .step(
            "2025-02-03T08:00:00+07:00",
            &t.secretariat,
            "close_case",
            json!({"closed_on": "2025-02-03"}),
        )
        .await;
    let archived = office
        .step(
            "2026-01-12T08:00:00+07:00",
            &t.secretariat,
            "archive_case",
            json!({"archived_on": "2026-01-12", "file_code": "HĐND-TG.2024.GS01"}),
        )
        .await;
    assert_eq!(archived["case"]["stage"], "archived");
    office.exporters_caught_up().await;

    // Who did what: the people's tokens and the scheduler, each event with its actor.
    let history = http
        .get(&format!("/api/cases/{CASE}/history"), &t.admin)
        .await
        .expect(200);
    let actor_of = |event_type: &str| -> BTreeSet<String> {
        history
            .body
            .as_array()
            .expect("events")
            .iter()
            .filter(|e| e["event_type"] == event_type)
            .filter_map(|e| e["metadata"]["actor"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        actor_of("ReportReceived"),
        BTreeSet::from([
            "secretariat:huyen".to_owned(),
            "unit:van-thu-quai-to".to_owned(),
            "unit:van-thu-ta-ma".to_owned(),
        ])
    );
    assert_eq!(
        actor_of("ReportsMarkedOverdue"),
        BTreeSet::from(["system:scheduler".to_owned()])
    );
    assert_eq!(
        actor_of("FindingRecorded"),
        BTreeSet::from(["delegation:trong".to_owned()])
    );

    // The documents: every kind, the notice numbered, each downloadable; a unit sees the notice
    // addressed to all units.
    let documents = http
        .get(&format!("/api/cases/{CASE}/documents"), &t.secretariat)
        .await
        .expect(200);
    let list = documents.body.as_array().expect("documents");
    let kinds: BTreeSet<&str> = list.iter().filter_map(|d| d["kind"].as_str()).collect();
    assert_eq!(kinds.len(), 8, "{kinds:?}");
    let notice = list
        .iter()
        .rev()
        .find(|d| d["document"] == "thong-bao-lich")
        .expect("the notice");
    assert_eq!(notice["symbol"], "01/TB-ĐGS");
    let docx = http
        .get(
            notice["downloads"]["docx"].as_str().expect("a DOCX"),
            &t.quai_to,
        )
        .await
        .expect(200);
    assert!(docx.bytes.starts_with(b"PK"), "a DOCX is a ZIP");
    let html = http
        .get(
            notice["downloads"]["html"].as_str().expect("an HTML"),
            &t.viewer,
        )
        .await
        .expect(200);
    assert!(
        html.text().contains("01/TB-ĐGS"),
        "the HTML carries its number"
    );

    // The outbox: the notice to Quài Tở with the DOCX, the HTML and a calendar invitation.
    let outbox = files_under(&s.path("outbox"), "eml");
    assert!(outbox.len() >= 20, "{} messages", outbox.len());
    assert!(
        outbox
            .iter()
            .map(|p| std::fs::read_to_string(p).expect("eml"))
            .filter(|m| m.contains("xa-quai-to@example.org"))
            .any(|m| m.contains(
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            ) && m.contains("text/html")
                && m.contains("text/calendar")),
        "the notice to xã Quài Tở carries the DOCX, the HTML and the calendar"
    );

    // The archive: one package, valid for our verifier and the reference validator.
    let bag = only_package(&s.path("archive"));
    let w = workflows_dir();
    let valid = s.ok(&[
        "--config",
        &config,
        "--workflows",
        &w,
        "archive",
        "verify",
        &bag,
    ]);
    assert!(
        valid.stdout.starts_with("package valid"),
        "{}",
        valid.stdout
    );
    reference_validates(&bag);
    // The same package through the API: listed with a fresh check, downloadable as a tar that
    // our verifier accepts; not for a unit's clerk.
    let archive = format!("/api/cases/{CASE}/archive");
    denied(&http.get(&archive, &t.quai_to).await, "role_not_allowed");
    let packages = http.get(&archive, &t.viewer).await.expect(200);
    let package = &packages.body[0];
    assert_eq!(packages.body.as_array().map(Vec::len), Some(1));
    assert_eq!(package["file_code"], "HĐND-TG.2024.GS01");
    assert_eq!(package["check"]["valid"], true, "{package}");
    let download = package["download"].as_str().expect("a download path");
    denied(&http.get(download, &t.quai_to).await, "role_not_allowed");
    let tar = http.get(download, &t.secretariat).await.expect(200);
    let packed = s.path("goi-nop-luu.tar");
    std::fs::write(&packed, &tar.bytes).expect("write the tar");
    let packed = packed.display().to_string();
    let valid = s.ok(&["archive", "verify", &packed]);
    assert!(
        valid.stdout.starts_with("package valid"),
        "{}",
        valid.stdout
    );
    // The archivist (a viewer) finds it on the case page, checked, with the same download.
    let archivist = http.sign_in(&t.viewer).await;
    let page = http
        .page(&format!("/ho-so/{CASE}"), &archivist)
        .await
        .expect(200);
    let html = page.text();
    assert!(html.contains("id=\"goi-nop-luu\""), "{html}");
    assert!(html.contains("tg2024-HĐND-TG.2024.GS01") && html.contains("Toàn vẹn"));
    let link = html
        .split("href=\"")
        .filter_map(|rest| rest.split('"').next())
        .find(|href| href.contains("/nop-luu/"))
        .expect("a download link")
        .to_owned();
    let from_page = http.page(&link, &archivist).await.expect(200);
    assert_eq!(from_page.bytes, tar.bytes);
    let clerk = http.sign_in(&t.quai_to).await;
    let unit_page = http
        .page(&format!("/ho-so/{CASE}"), &clerk)
        .await
        .expect(200);
    assert!(!unit_page.text().contains("goi-nop-luu"));

    // Its log is JSON lines (the configuration's [log] format), and the denials are in it, with
    // the token that was refused.
    let log = daemon.log_lines();
    let entries: Vec<Value> = log
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    assert!(entries.len() > 10, "JSON log lines: {log:?}");
    assert!(
        entries.iter().any(|e| e["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("request denied"))
            && e["fields"]["token"] == "xem"),
        "the viewer's denial is logged: {log:?}"
    );
    // The log's chain, over HTTP and, once the daemon has stopped, from the command line.
    let verified = http.get("/api/verify", &t.viewer).await.expect(200);
    assert_eq!(verified.body["intact"], true, "{}", verified.text());
    daemon.stop();
    let verified = s.ok(&["verify"]);
    assert!(!verified.stdout.is_empty());
}
