//! The seed supervision from establishment to the archive, as a council office runs it from the
//! command line with the documents, notifications and archive exporters configured: every stage
//! is reached, every document kind is rendered, every e-mail lands in the outbox with its
//! attachments, and the archived case file is a BagIt package that our verifier and, when it is
//! installed (CI installs it), the reference validator accept.

use std::path::PathBuf;

use serde_json::Value;

use crate::support::{
    Run, Sandbox, files_under, only_package, reference_validates, seed_with_addresses,
    workflows_dir,
};

/// The documents, notifications and archive exporters, writing beside the database.
pub const CONFIG: &str = r#"[[exporters]]
id = "documents"
type = "documents"
output = "documents"

[[exporters]]
id = "notifications"
type = "notifications"
from = "Văn phòng HĐND huyện Tuần Giáo <vanphong@example.org>"
outbox = "outbox"
[exporters.roles]
secretariat = ["Văn phòng HĐND <vanphong@example.org>"]

[[exporters]]
id = "archive"
type = "archive"
output = "archive"
documents-output = "documents"
retention = "20 năm"
access = "restricted"
"#;

fn ok(s: &Sandbox, args: &[&str]) -> Run {
    let w = workflows_dir();
    let cfg = s.path("giamsat.toml").display().to_string();
    let mut all = vec!["--config", cfg.as_str(), "--workflows", w.as_str()];
    all.extend_from_slice(args);
    let run = s.run(&all);
    assert_eq!(
        run.code, 0,
        "giamsat {args:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run
}

#[test]
fn the_seed_supervision_runs_to_the_archive_with_every_document_and_notification() {
    let s = Sandbox::sqlite();
    s.write("giamsat.toml", CONFIG);
    // The seed, with example.org addresses for the units and the delegation's signer.
    let data = seed_with_addresses();
    let data_path = s
        .write("seed.json", &data.to_string())
        .display()
        .to_string();

    let sec = ["--as", "secretariat:huyen"];
    let del = ["--as", "delegation:trong"];
    let step = |who: [&str; 2], at: &str, args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend_from_slice(&[who[0], who[1], "--at", at]);
        ok(&s, &all);
    };
    step(
        sec,
        "2024-03-20T08:00:00+07:00",
        &[
            "case",
            "start",
            "giam-sat-chuyen-de",
            "--data",
            &data_path,
            "--id",
            "tg2024",
        ],
    );
    step(
        sec,
        "2024-03-21T08:00:00+07:00",
        &[
            "case",
            "do",
            "tg2024",
            "issue_plan",
            "--set",
            "issued_on=2024-03-21",
            "--set",
            "document=ke-hoach",
        ],
    );
    step(
        sec,
        "2024-03-25T08:00:00+07:00",
        &[
            "case",
            "do",
            "tg2024",
            "issue_notice",
            "--set",
            "issued_on=2024-03-25",
            "--set",
            "document=thong-bao-lich",
        ],
    );
    step(
        sec,
        "2024-04-17T08:00:00+07:00",
        &[
            "case",
            "do",
            "tg2024",
            "send_reminder",
            "--set",
            "unit=xa-ta-ma",
        ],
    );
    step(
        sec,
        "2024-04-18T08:00:00+07:00",
        &[
            "case",
            "do",
            "tg2024",
            "reschedule_visit",
            "--set",
            "unit=xa-quai-cang",
            "--set",
            "date=2024-05-06",
            "--set",
            "start_time=08:00",
            "--set",
            "reason=Trùng lịch tiếp công dân",
        ],
    );
    step(
        ["--as", "system:scheduler"],
        "2024-04-21T00:00:00+07:00",
        &["case", "do", "tg2024", "mark_reports_overdue"],
    );
    step(
        del,
        "2024-04-24T07:30:00+07:00",
        &[
            "case",
            "do",
            "tg2024",
            "hold_meeting",
            "--set",
            "held_at=2024-04-24T07:30:00+07:00",
        ],
    );
    for (unit, day) in [
        ("thi-tran-tuan-giao", "2024-04-25"),
        ("xa-quai-to", "2024-04-26"),
        ("xa-quai-cang", "2024-05-06"),
        ("xa-quai-nua", "2024-05-02"),
        ("xa-quai-na-tong", "2024-05-03"),
        ("xa-phinh-sang", "2024-05-08"),
        ("xa-ta-ma", "2024-05-09"),
        ("phong-noi-vu", "2024-05-10"),
        ("ubnd-huyen", "2024-05-13"),
    ] {
        step(
            del,
            &format!("{day}T17:00:00+07:00"),
            &[
                "case",
                "do",
                "tg2024",
                "record_visit",
                "--set",
                &format!("unit={unit}"),
                "--set",
                &format!("held_at={day}T08:00:00+07:00"),
                "--set",
                "attendees=[\"Trần Bình Trọng\"]",
                "--set",
                "minutes_summary=Đã làm việc với đơn vị",
            ],
        );
    }
    step(
        del,
        "2024-05-16T08:00:00+07:00",
        &[
            "case",
            "do",
            "tg2024",
            "record_finding",
            "--set",
            "id=f1",
            "--set",
            "member=Trần Bình Trọng",
            "--set",
            "text=Số hóa hồ sơ còn chậm",
        ],
    );
    step(
        sec,
        "2024-05-25T08:00:00+07:00",
        &[
            "case",
            "do",
            "tg2024",
            "issue_findings_report",
            "--set",
            "issued_on=2024-05-25",
            "--set",
            "summary=Báo cáo kết quả giám sát",
            "--set",
            "recommendations=[{\"id\":\"kn-1\",\"text\":\"Đẩy nhanh số hóa\",\"to\":\"UBND huyện\"}]",
        ],
    );
    step(
        sec,
        "2024-07-10T08:00:00+07:00",
        &[
            "case",
            "do",
            "tg2024",
            "adopt_resolution",
            "--set",
            "number=20/NQ-HĐND",
            "--set",
            "date=2024-07-10",
            "--set",
            "recommendations=[{\"id\":\"kn-1\",\"text\":\"Đẩy nhanh số hóa\",\"responsible\":\"UBND huyện\",\"deliverable\":\"Báo cáo\",\"deadline\":\"2024-12-31\"}]",
        ],
    );
    step(
        ["--as", "system:scheduler"],
        "2025-01-02T00:00:00+07:00",
        &[
            "case",
            "do",
            "tg2024",
            "mark_recommendation_overdue",
            "--set",
            "recommendation=kn-1",
        ],
    );
    step(
        sec,
        "2025-01-20T08:00:00+07:00",
        &[
            "case",
            "do",
            "tg2024",
            "report_recommendation_progress",
            "--set",
            "recommendation=kn-1",
            "--set",
            "status=completed",
            "--set",
            "reported_at=2025-01-20T08:00:00+07:00",
        ],
    );
    step(
        sec,
        "2025-02-03T08:00:00+07:00",
        &[
            "case",
            "do",
            "tg2024",
            "close_case",
            "--set",
            "closed_on=2025-02-03",
        ],
    );
    ok(&s, &["exporters", "run", "--once"]);
    step(
        sec,
        "2024-03-25T10:00:00+07:00",
        &["documents", "number", "tg2024", "thong-bao-lich"],
    );
    step(
        sec,
        "2025-06-01T08:00:00+07:00",
        &[
            "case",
            "do",
            "tg2024",
            "archive_case",
            "--set",
            "archived_on=2025-06-01",
            "--set",
            "file_code=HĐND-TG.2024.GS01",
        ],
    );
    // The archive exporter waits for the documents exporter; a second run finishes what waited.
    ok(&s, &["exporters", "run", "--once"]);
    ok(&s, &["exporters", "run", "--once"]);

    let case = ok(&s, &["case", "show", "tg2024", "--json"]).json_lines();
    assert_eq!(case[0]["stage"], "archived");
    let parked = ok(&s, &["exporters", "list", "--json"]).json_lines();
    for e in &parked {
        assert_eq!(e["parked"], 0, "{e}");
    }

    // Documents: every kind, each in three formats; the notice numbered.
    let documents = ok(&s, &["documents", "list", "tg2024", "--json"]).json_lines();
    let kinds: std::collections::BTreeSet<&str> = documents
        .iter()
        .filter_map(|d| d["kind"].as_str())
        .collect();
    assert_eq!(kinds.len(), 8, "{kinds:?}");
    let notice = documents
        .iter()
        .find(|d| d["document"] == "thong-bao-lich")
        .expect("notice");
    assert_eq!(notice["symbol"], "01/TB-ĐGS");

    // Notifications: the notice went to every unit with the notice (DOCX, HTML) and a calendar.
    let outbox = files_under(&s.path("outbox"), "eml");
    assert!(outbox.len() >= 20, "{} messages", outbox.len());
    let to_quai_to: Vec<String> = outbox
        .iter()
        .map(|p| std::fs::read_to_string(p).expect("eml"))
        .filter(|m| m.contains("xa-quai-to@example.org"))
        .collect();
    assert!(
        to_quai_to.iter().any(|m| m
            .contains("application/vnd.openxmlformats-officedocument.wordprocessingml.document")
            && m.contains("text/html")
            && m.contains("text/calendar")),
        "the notice to xã Quài Tở carries the DOCX, the HTML and the calendar"
    );
    let sent = ok(&s, &["notifications", "list", "tg2024", "--json"]).json_lines();
    let ids: Vec<&str> = sent
        .iter()
        .filter_map(|n| n["notification"].as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "notice_to_units_and_members",
            "report_reminder",
            "schedule_changed",
            "reports_overdue",
            "findings_report",
            "recommendation_overdue"
        ]
    );
    let notice_to = sent[0]["messages"].as_array().map_or(0, Vec::len);
    assert_eq!(
        notice_to, 10,
        "the nine units and the member with an address"
    );

    // The archive: one package, valid for our verifier and the reference validator.
    let bag = only_package(&s.path("archive"));
    let valid = ok(&s, &["archive", "verify", &bag]);
    assert!(
        valid.stdout.starts_with("package valid"),
        "{}",
        valid.stdout
    );
    let meta: Value = serde_json::from_slice(
        &std::fs::read(PathBuf::from(&bag).join("data/metadata.json")).expect("metadata"),
    )
    .expect("json");
    assert_eq!(meta["File"]["FileCode"], "HĐND-TG.2024.GS01");
    reference_validates(&bag);
    let verified = s.run(&["verify"]);
    assert_eq!(verified.code, 0, "{}", verified.stderr);
}
