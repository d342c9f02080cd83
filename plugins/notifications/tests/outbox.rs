//! With no SMTP server configured (the default setup), messages are written as `.eml` files to
//! the outbox folder: one per recipient, parseable, recorded with their paths; and the daily
//! digest of a cron run lists the open cases with their stage and next deadline.

mod support;

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use giamsat_exporter::{Runner, RunnerOptions, parked};
use giamsat_notifications::{NotificationsExporter, read_sent};
use giamsat_scheduler::{CronSchedule, run_cron};
use giamsat_store::Store;
use serde_json::json;
use support::*;

fn exporter(store: &Store, outbox: &std::path::Path) -> NotificationsExporter {
    NotificationsExporter::from_config_with_env(
        json!({
            "from": "Văn phòng HĐND huyện Tuần Giáo <vanphong@example.org>",
            "outbox": outbox.display().to_string(),
            "roles": roles(),
            "calendar-dir": root().join("config/calendars").display().to_string(),
        }),
        store.clone(),
        &|_| None,
    )
    .expect("config")
}

fn utc(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("time")
        .with_timezone(&Utc)
}

#[tokio::test]
async fn without_smtp_messages_are_eml_files_in_the_outbox() {
    let dir = tempfile::tempdir().expect("dir");
    let store = sqlite(dir.path()).await;
    let outbox = dir.path().join("outbox");
    start(&store, "tg2024", seed(&["thi-tran-tuan-giao"])).await;
    run_seed_until_overdue(&store, "tg2024").await;
    let exporter = exporter(&store, &outbox);
    assert_eq!(exporter.channel(), "outbox");
    let runner = Runner::new(
        "notifications",
        store.clone(),
        Arc::new(exporter),
        RunnerOptions {
            max_attempts: 1,
            ..RunnerOptions::default()
        },
    );
    runner.run_once().await.expect("run");
    assert!(
        parked(&store, "notifications")
            .await
            .expect("parked")
            .is_empty()
    );
    let records = read_sent(&store, "tg2024").await.expect("records");
    let mut files: Vec<_> = std::fs::read_dir(outbox.join("tg2024"))
        .expect("outbox/tg2024")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let recorded: usize = records.iter().map(|r| r.messages.len()).sum();
    // As over SMTP (see tests/smtp.rs), plus xã Quài Nưa twice: nobody refuses a file.
    assert_eq!(recorded, 8 + 1 + 1 + 4 + 2 + 7 + 1);
    assert_eq!(files.len(), recorded, "{files:#?}");
    for r in &records {
        assert_eq!(r.channel, "outbox");
        for m in &r.messages {
            let file = m.file.as_deref().expect("the file is recorded");
            let raw = std::fs::read(outbox.join(file)).expect("recorded file exists");
            assert!(
                raw.windows(2).filter(|w| *w == b"\r\n").count() > 10,
                "CRLF line ends"
            );
            let mail = parse_mail(&raw);
            assert_eq!(mail.message_id, m.message_id);
            assert_eq!(mail.to, vec![m.to.address.clone()]);
            assert_eq!(mail.subject, m.subject);
            assert!(
                mail.body.starts_with(&format!("Kính gửi: {}", m.to.name)),
                "{}",
                mail.body
            );
            let names: Vec<&str> = mail.attachments.iter().map(|a| a.0.as_str()).collect();
            assert_eq!(names, m.attachments);
            for (name, _, bytes) in &mail.attachments {
                let sha = sha256_hex(bytes);
                assert!(
                    r.attachments.iter().any(|a| &a.name == name
                        && a.sha256 == sha
                        && a.bytes == bytes.len() as u64),
                    "{name} with SHA-256 {sha} is recorded"
                );
                if name.ends_with(".ics") {
                    parse_ics(std::str::from_utf8(bytes).expect("utf-8"));
                }
            }
        }
    }
    // One of them in full, for a person to read (cargo test -- --nocapture).
    let ta_ma = records
        .iter()
        .find(|r| r.notification == "report_reminder")
        .expect("reminder");
    let raw =
        std::fs::read(outbox.join(ta_ma.messages[0].file.as_deref().expect("file"))).expect("eml");
    println!("{}", parse_mail(&raw).body);

    // Written again from the start: the same files, nothing new recorded.
    let before: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("read"))
        .collect();
    runner.replay_from(1).await.expect("replay");
    runner.run_once().await.expect("run again");
    let after: Vec<Vec<u8>> = files
        .iter()
        .map(|f| std::fs::read(f).expect("read"))
        .collect();
    assert_eq!(before, after);
    assert_eq!(read_sent(&store, "tg2024").await.expect("records"), records);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn the_daily_digest_lists_open_cases_with_stage_and_next_deadline() {
    let dir = tempfile::tempdir().expect("dir");
    let store = sqlite(dir.path()).await;
    let outbox = dir.path().join("outbox");
    start(&store, "tg2024", seed(&[])).await;
    run_seed_until_overdue(&store, "tg2024").await;
    let schedule = CronSchedule::new(
        "daily-digest",
        "0 7 * * *",
        "Asia/Ho_Chi_Minh",
        TimeDelta::hours(6),
        "Bản tin hằng ngày cho Văn phòng HĐND",
    )
    .expect("schedule");
    run_cron(&store, &schedule, utc("2024-04-21T08:00:00+07:00"))
        .await
        .expect("register");
    run_cron(&store, &schedule, utc("2024-04-22T07:00:05+07:00"))
        .await
        .expect("run");
    // A case that starts after the run is not in that run's digest.
    giamsat_cases::start_case(
        &store,
        &workflow("phien-giai-trinh"),
        "pgt2024",
        yaml(
            &root().join(
                "workflows/phien-giai-trinh/examples/tuan-giao-giai-phong-mat-bang-2024.yaml",
            ),
        ),
        giamsat_engine::Actor::parse(SEC).expect("actor"),
        at("2024-04-22T08:00:00+07:00"),
        uuid::Uuid::new_v4(),
    )
    .await
    .expect("start");
    let runner = Runner::new(
        "notifications",
        store.clone(),
        Arc::new(exporter(&store, &outbox)),
        RunnerOptions {
            max_attempts: 1,
            ..RunnerOptions::default()
        },
    );
    runner.run_once().await.expect("run");
    assert!(
        parked(&store, "notifications")
            .await
            .expect("parked")
            .is_empty()
    );
    let [digest] = &read_sent(&store, "cron").await.expect("records")[..] else {
        panic!("one digest record")
    };
    assert_eq!(digest.notification, "digest:daily-digest");
    assert_eq!(digest.source.event_type, "CronRan");
    let to: Vec<&str> = digest
        .messages
        .iter()
        .map(|m| m.to.address.as_str())
        .collect();
    assert_eq!(to, vec!["vanphong@example.org", "thuky@example.org"]);
    let raw =
        std::fs::read(outbox.join(digest.messages[1].file.as_deref().expect("file"))).expect("eml");
    let mail = parse_mail(&raw);
    println!("{}\n{}", mail.subject, mail.body);
    assert_eq!(
        mail.subject,
        "Bản tin giám sát ngày 22/4/2024: 1 hồ sơ đang theo dõi"
    );
    assert!(
        mail.body.starts_with("Kính gửi: Văn phòng HĐND\r\n"),
        "{}",
        mail.body
    );
    assert!(
        mail.body.contains(
            "Bản tin giám sát Thứ Hai, ngày 22/4/2024 (Bản tin hằng ngày cho Văn phòng HĐND)."
        ),
        "{}",
        mail.body
    );
    assert!(
        mail.body
            .contains("   Hồ sơ: tg2024 (Giám sát chuyên đề của Hội đồng nhân dân)"),
        "{}",
        mail.body
    );
    assert!(
        mail.body
            .contains("   Giai đoạn: Đã hết hạn gửi báo cáo (từ ngày 21/4/2024)"),
        "{}",
        mail.body
    );
    assert!(
        mail.body.contains(
            "   Hạn tiếp theo: Đến giờ họp Đoàn giám sát, bắt đầu giám sát trực tiếp: Thứ Tư, ngày 24/4/2024, 07 giờ 30"
        ),
        "{}",
        mail.body
    );
    assert!(!mail.body.contains("pgt2024"), "{}", mail.body);
}
