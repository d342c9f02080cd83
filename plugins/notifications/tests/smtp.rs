//! The notifications exporter against a real SMTP server on 127.0.0.1 (a tokio server in the test
//! speaking SMTP over TCP), with the seed case (Tuần Giáo 2024) on a real SQLite store: who
//! receives what, the Vietnamese subjects and bodies, the attached documents (the documents
//! renderer's exact bytes), the calendar files (UIDs, SEQUENCE, CANCEL), credentials from the
//! environment, a refused mailbox, skipped recipients, and the records.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use giamsat_documents::exporter::{DocumentsExporter, OutputFormat};
use giamsat_exporter::{Runner, RunnerOptions, parked};
use giamsat_notifications::{NotificationsExporter, SentRecord, read_sent};
use giamsat_store::{Direction, Store};
use giamsat_types::{RecordedEvent, StreamId};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::*;

const TOPIC: &str = "Việc thực hiện kế hoạch cải cách hành chính Nhà nước trên địa bàn huyện từ 7/2021 đến 31/12/2023";

fn exporter(store: &Store, port: u16) -> NotificationsExporter {
    let env = |name: &str| match name {
        "TEST_SMTP_USER" => Some("giamsat".to_owned()),
        "TEST_SMTP_PASSWORD" => Some("mật-khẩu-thử".to_owned()),
        _ => None,
    };
    NotificationsExporter::from_config_with_env(
        json!({
            "from": "Văn phòng HĐND huyện Tuần Giáo <vanphong@example.org>",
            "smtp": {
                "host": "127.0.0.1", "port": port, "tls": "none",
                "username-env": "TEST_SMTP_USER", "password-env": "TEST_SMTP_PASSWORD",
                "timeout": "10s",
            },
            "roles": roles(),
            "calendar-dir": root().join("config/calendars").display().to_string(),
        }),
        store.clone(),
        &env,
    )
    .expect("config")
}

fn runner(store: &Store, exporter: NotificationsExporter) -> Runner {
    Runner::new(
        "notifications",
        store.clone(),
        Arc::new(exporter),
        RunnerOptions {
            max_attempts: 1,
            ..RunnerOptions::default()
        },
    )
}

async fn case_events(store: &Store, case: &str) -> Vec<RecordedEvent> {
    store
        .read_stream(
            &StreamId::new(format!("case/{case}")).expect("stream"),
            Direction::Forward,
            Some(1),
            10_000,
        )
        .await
        .expect("read")
}

/// Received messages by recipient address, decoded, in arrival order.
fn by_recipient(server: &SmtpServer) -> BTreeMap<String, Vec<Mail>> {
    let mut out: BTreeMap<String, Vec<Mail>> = BTreeMap::new();
    for r in server.messages() {
        assert_eq!(r.from, "vanphong@example.org");
        assert_eq!(r.to.len(), 1, "one recipient a message: {:?}", r.to);
        let mail = parse_mail(&r.data);
        assert_eq!(mail.to, r.to, "the To header is the envelope recipient");
        out.entry(r.to[0].clone()).or_default().push(mail);
    }
    out
}

fn ics_of(mail: &Mail) -> Component {
    let (_, ct, bytes) = mail.attachment(".ics").expect("an .ics attachment");
    assert_eq!(ct, "text/calendar");
    parse_ics(std::str::from_utf8(bytes).expect("UTF-8"))
}

fn records_of<'a>(records: &'a [SentRecord], notification: &str) -> Vec<&'a SentRecord> {
    records
        .iter()
        .filter(|r| r.notification == notification)
        .collect()
}

#[tokio::test]
async fn the_seed_case_notifies_units_and_the_delegation_over_smtp() {
    let dir = tempfile::tempdir().expect("dir");
    let store = sqlite(dir.path()).await;
    let server = SmtpServer::start(
        0,
        SmtpOptions {
            credentials: Some(("giamsat".to_owned(), "mật-khẩu-thử".to_owned())),
            reject: vec!["xa-quai-nua@example.org".to_owned()],
            stop_after: None,
        },
    )
    .await;
    start(&store, "tg2024", seed(&["thi-tran-tuan-giao"])).await;
    run_seed_until_overdue(&store, "tg2024").await;
    let run = runner(&store, exporter(&store, server.port));
    run.run_once().await.expect("run");
    assert!(
        parked(&store, "notifications")
            .await
            .expect("parked")
            .is_empty()
    );
    assert!(
        server
            .log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.starts_with("AUTH ")),
        "credentials from the environment were used"
    );

    // 9 for the notice (8 units with an address, one refused, + the delegation's address),
    // 1 reminder, 2 × 2 changed visits, 2 for the cancelled one, 8 overdue notices (6 units,
    // one refused, + 2 for the secretariat).
    let mail = by_recipient(&server);
    assert_eq!(server.count(), 8 + 1 + 4 + 2 + 7, "{:#?}", mail.keys());
    let records = read_sent(&store, "tg2024").await.expect("records");
    let delivered: usize = records.iter().map(|r| r.messages.len()).sum();
    assert_eq!(
        delivered,
        server.count(),
        "every delivered message is recorded"
    );
    assert!(records.iter().all(|r| r.channel == "email"));

    // The notice: a unit reads its own visit, the delegation the whole schedule.
    let quai_to = &mail["xa-quai-to@example.org"];
    let notice = &quai_to[0];
    assert_eq!(
        notice.subject,
        format!("Thông báo lịch giám sát chuyên đề: {TOPIC}")
    );
    assert!(
        notice.body.starts_with("Kính gửi: xã Quài Tở\r\n"),
        "{}",
        notice.body
    );
    assert!(
        notice
            .body
            .contains("- Thứ Sáu, ngày 26/4/2024, bắt đầu từ 08 giờ 00."),
        "{}",
        notice.body
    );
    assert!(
        notice.body.contains("chậm nhất vào ngày 20/4/2024"),
        "{}",
        notice.body
    );
    assert!(
        !notice.body.contains("xã Ta Ma"),
        "only its own visit: {}",
        notice.body
    );
    assert_eq!(
        notice.headers["X-Giamsat-Notification"],
        "notice_to_units_and_members"
    );
    let names: Vec<&str> = notice.attachments.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "thong-bao-lich.du-thao.v1.docx",
            "thong-bao-lich.du-thao.v1.html",
            "lich-lam-viec.ics"
        ]
    );
    let events = case_events(&store, "tg2024").await;
    let notice_event = events
        .iter()
        .find(|e| e.event_type == "NoticeIssued")
        .expect("notice");
    let rendered =
        DocumentsExporter::renderer(store.clone(), vec![OutputFormat::Docx, OutputFormat::Html])
            .render_in_memory(notice_event, "thong-bao-lich")
            .await
            .expect("render")
            .expect("a notice");
    assert_eq!(
        notice.attachment(".docx").expect("docx").2,
        rendered.files[0].bytes,
        "the DOCX is the documents renderer's"
    );
    assert_eq!(
        notice.attachment(".html").expect("html").2,
        rendered.files[1].bytes
    );
    let cal = ics_of(notice);
    assert_eq!(cal.get("METHOD"), Some("REQUEST"));
    let [visit] = cal.events()[..] else {
        panic!("one entry: {cal:?}")
    };
    assert_eq!(visit.get("UID"), Some("tg2024-giam-sat-xa-quai-to@giamsat"));
    assert_eq!(visit.get("SEQUENCE"), Some("0"));
    assert_eq!(visit.get("DTSTART"), Some("20240426T010000Z"));
    assert_eq!(visit.get("DTEND"), Some("20240426T050000Z"));
    assert_eq!(
        visit.get("SUMMARY"),
        Some("Đoàn giám sát HĐND huyện làm việc tại xã Quài Tở")
    );
    assert!(
        visit
            .get("ATTENDEE")
            .is_some_and(|a| a == "mailto:xa-quai-to@example.org")
    );

    let delegation = &mail["truongdoan@example.org"];
    let for_delegation = &delegation[0];
    assert!(
        for_delegation
            .body
            .contains("Họp Đoàn giám sát: 07 giờ 30, Thứ Tư ngày 24/4/2024, tại Phòng họp tầng 2"),
        "{}",
        for_delegation.body
    );
    assert!(
        for_delegation.body.contains(": xã Ta Ma."),
        "{}",
        for_delegation.body
    );
    let schedule = ics_of(for_delegation);
    assert_eq!(schedule.get("METHOD"), Some("PUBLISH"));
    let uids: Vec<&str> = schedule
        .events()
        .iter()
        .filter_map(|e| e.get("UID"))
        .collect();
    assert_eq!(uids.len(), 10, "the meeting and nine visits: {uids:?}");
    assert_eq!(uids[0], "tg2024-hop-doan@giamsat");
    let meeting = schedule.events()[0];
    assert_eq!(meeting.get("DTSTART"), Some("20240424T003000Z"));
    assert_eq!(meeting.get("DTEND"), Some("20240424T023000Z"));
    assert_eq!(
        meeting.get("LOCATION"),
        Some("Phòng họp tầng 2\\, Trụ sở HĐND và UBND huyện")
    );

    // The notice's record: who was skipped and why, every attachment's hash, the Message-IDs.
    let [notice_record] = records_of(&records, "notice_to_units_and_members")[..] else {
        panic!("one notice record")
    };
    assert_eq!(notice_record.messages.len(), 8);
    assert_eq!(notice_record.rejected.len(), 1);
    assert_eq!(
        notice_record.rejected[0].to.address,
        "xa-quai-nua@example.org"
    );
    assert!(
        notice_record.rejected[0].reason.contains("550"),
        "{:?}",
        notice_record.rejected
    );
    let skipped: Vec<(&str, &str)> = notice_record
        .skipped
        .iter()
        .map(|s| (s.name.as_str(), s.reason.as_str()))
        .collect();
    assert_eq!(skipped.len(), 3, "{skipped:#?}");
    assert_eq!(skipped[0].0, "thị trấn Tuần Giáo");
    assert!(skipped[0].1.contains("no e-mail address"), "{skipped:?}");
    assert_eq!(skipped[1].0, "Trần Bình Trọng");
    assert!(skipped[1].1.contains("/members/0/email"), "{skipped:?}");
    assert_eq!(skipped[2].0, "Nguyễn Thị Huyền");
    for m in &notice_record.messages {
        let received = &mail[&m.to.address];
        assert!(
            received.iter().any(|r| r.message_id == m.message_id),
            "{} has Message-ID {}",
            m.to.address,
            m.message_id
        );
    }
    let docx = notice_record
        .attachments
        .iter()
        .find(|a| a.name.ends_with(".docx"))
        .expect("docx record");
    assert_eq!(docx.sha256, hex(&rendered.files[0].bytes));
    let ics_records = notice_record
        .attachments
        .iter()
        .filter(|a| a.name == "lich-lam-viec.ics")
        .count();
    assert_eq!(ics_records, 9, "one calendar per recipient");

    // The reminder goes to xã Ta Ma only, with its letter.
    let [reminder] = records_of(&records, "report_reminder")[..] else {
        panic!("one reminder")
    };
    assert_eq!(reminder.messages.len(), 1);
    assert_eq!(reminder.messages[0].to.address, "xa-ta-ma@example.org");
    let ta_ma = &mail["xa-ta-ma@example.org"][1];
    assert!(
        ta_ma.subject.starts_with("Đôn đốc gửi báo cáo"),
        "{}",
        ta_ma.subject
    );
    assert!(
        ta_ma
            .body
            .contains("Đến ngày 17/4/2024, Đoàn giám sát chưa nhận được báo cáo của xã Ta Ma."),
        "{}",
        ta_ma.body
    );
    assert!(
        ta_ma
            .attachment("cong-van-don-doc-xa-ta-ma.du-thao.v1.docx")
            .is_some()
    );

    // xã Quài Cang's visit moved twice: the same UID with a growing SEQUENCE, to the unit and
    // the delegation.
    let quai_cang = &mail["xa-quai-cang@example.org"];
    assert_eq!(quai_cang.len(), 4, "notice, two changes, overdue notice");
    let uid = "tg2024-giam-sat-xa-quai-cang@giamsat";
    let mut sequences = Vec::new();
    for (m, start) in
        quai_cang
            .iter()
            .zip(["20240429T010000Z", "20240506T010000Z", "20240507T070000Z"])
    {
        let cal = ics_of(m);
        let [e] = cal.events()[..] else {
            panic!("one entry")
        };
        assert_eq!(e.get("UID"), Some(uid));
        assert_eq!(e.get("DTSTART"), Some(start));
        sequences.push(e.get("SEQUENCE").expect("sequence").to_owned());
    }
    assert_eq!(sequences, vec!["0", "1", "2"]);
    assert_eq!(
        quai_cang[2].subject,
        "Điều chỉnh lịch giám sát tại xã Quài Cang: ngày 07/5/2024"
    );
    assert!(
        quai_cang[2].body.contains("- Lịch cũ: ngày 06/5/2024;"),
        "{}",
        quai_cang[2].body
    );
    assert!(
        quai_cang[2]
            .body
            .contains("Lý do: Xã đề nghị lùi sang buổi chiều."),
        "{}",
        quai_cang[2].body
    );
    let changed = &delegation[2];
    let changed = ics_of(changed);
    let [e] = changed.events()[..] else {
        panic!("one entry")
    };
    assert_eq!(e.get("UID"), Some(uid));
    assert_eq!(e.get("SEQUENCE"), Some("2"));

    // xã Phình Sáng's visit is cancelled: METHOD:CANCEL with the notice's UID.
    let phinh_sang = &mail["xa-phinh-sang@example.org"];
    assert_eq!(phinh_sang.len(), 3, "notice, cancellation, overdue notice");
    let cancel = &phinh_sang[1];
    assert!(
        cancel
            .subject
            .starts_with("Hủy buổi giám sát tại xã Phình Sáng"),
        "{}",
        cancel.subject
    );
    assert!(cancel.attachment("huy-lich.ics").is_some());
    let cal = ics_of(cancel);
    assert_eq!(cal.get("METHOD"), Some("CANCEL"));
    let [e] = cal.events()[..] else {
        panic!("one entry")
    };
    assert_eq!(e.get("UID"), Some("tg2024-giam-sat-xa-phinh-sang@giamsat"));
    assert_eq!(e.get("STATUS"), Some("CANCELLED"));
    assert_eq!(e.get("SEQUENCE"), Some("1"));

    // The overdue notice: the units without a report (not Phòng Nội vụ, not UBND huyện) and the
    // secretariat, which reads the list.
    let [overdue] = records_of(&records, "reports_overdue")[..] else {
        panic!("one overdue notice")
    };
    let to: Vec<&str> = overdue
        .messages
        .iter()
        .map(|m| m.to.address.as_str())
        .collect();
    assert_eq!(
        to,
        vec![
            "xa-quai-to@example.org",
            "xa-quai-cang@example.org",
            "xa-quai-na-tong@example.org",
            "xa-phinh-sang@example.org",
            "xa-ta-ma@example.org",
            "vanphong@example.org",
            "thuky@example.org"
        ]
    );
    assert_eq!(
        overdue.skipped.len(),
        1,
        "thị trấn Tuần Giáo has no address"
    );
    let office = mail["thuky@example.org"].last().expect("secretariat");
    assert!(
        office.body.starts_with("Kính gửi: Văn phòng HĐND\r\n"),
        "{}",
        office.body
    );
    assert!(
        office.body.contains("- thị trấn Tuần Giáo\r\n"),
        "{}",
        office.body
    );
    assert!(!office.body.contains("Phòng Nội vụ"), "{}", office.body);

    // Delivered again from the start: everything is recorded, nothing is sent twice.
    let before = server.count();
    run.replay_from(1).await.expect("replay");
    run.run_once().await.expect("run again");
    assert_eq!(server.count(), before);
    assert_eq!(read_sent(&store, "tg2024").await.expect("records"), records);

    // The rest of the case: the visit reminder, the findings report, the recommendation's
    // reminder and overdue notice.
    run_seed_to_the_end(&store, "tg2024").await;
    run.run_once().await.expect("run");
    assert!(
        parked(&store, "notifications")
            .await
            .expect("parked")
            .is_empty()
    );
    assert_eq!(server.count(), before + 2 + 10 + 2 + 2);
    let mail = by_recipient(&server);
    let reminder = mail["xa-quai-to@example.org"]
        .iter()
        .find(|m| m.subject.starts_with("Nhắc lịch"))
        .expect("visit reminder");
    assert!(
        reminder
            .body
            .contains("Đề nghị đơn vị chuẩn bị nội dung làm việc"),
        "{}",
        reminder.body
    );
    assert_eq!(
        reminder.subject,
        "Nhắc lịch giám sát tại xã Quài Tở: Thứ Sáu, ngày 26/4/2024"
    );
    let office = &mail["vanphong@example.org"];
    let overdue = office.last().expect("recommendation overdue");
    assert_eq!(
        overdue.subject,
        "Kiến nghị quá hạn thực hiện: UBND huyện (hạn 31/12/2024)"
    );
    assert!(
        overdue
            .body
            .contains("- Nội dung: Đẩy nhanh số hóa hồ sơ, kết quả giải quyết TTHC"),
        "{}",
        overdue.body
    );
    assert!(
        overdue
            .attachment("cong-van-don-doc-kien-nghi-kn-1.du-thao.v1.docx")
            .is_some()
    );
    let report = &office[office.len() - 3];
    assert!(
        report
            .subject
            .starts_with("Báo cáo kết quả giám sát chuyên đề"),
        "{}",
        report.subject
    );
    assert!(
        report
            .attachment("bao-cao-ket-qua.du-thao.v1.docx")
            .is_some()
    );
}

fn hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// With the server down, sending fails as retryable and the runner retries with backoff; when
/// a server listens on the port again every message arrives once. A server that stops halfway
/// through a notification's messages loses none and gets none twice either.
#[tokio::test]
async fn an_outage_loses_no_message_and_duplicates_none() {
    let dir = tempfile::tempdir().expect("dir");
    let store = sqlite(dir.path()).await;
    start(&store, "tg2024", seed(&[])).await;
    let s = &store;
    act(
        s,
        "tg2024",
        SEC,
        "issue_notice",
        json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
        "2024-03-25T08:00:00+07:00",
    )
    .await;
    act(s, "tg2024", SEC, "reschedule_visit", json!({"unit": "xa-quai-cang", "date": "2024-05-06", "start_time": "08:00", "reason": "Trùng lịch tiếp công dân của xã"}), "2024-04-18T08:00:00+07:00").await;
    // 9 units + the delegation; the unit and the delegation for the change.
    let expected = 10 + 2;

    let port = free_port().await;
    let runner = Arc::new(Runner::new(
        "notifications",
        store.clone(),
        Arc::new(exporter(&store, port)),
        RunnerOptions {
            max_attempts: 200,
            initial_backoff: std::time::Duration::from_millis(20),
            max_backoff: std::time::Duration::from_millis(100),
        },
    ));
    let status = runner.status();
    let task = {
        let runner = runner.clone();
        tokio::spawn(async move { runner.run_once().await })
    };
    // Wait until the runner has failed a few times against the closed port.
    while status.lock().expect("status").retries < 3 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let error = status
        .lock()
        .expect("status")
        .last_error
        .clone()
        .expect("an error");
    assert!(
        error
            .starts_with("retryable: notification notice_to_units_and_members of case tg2024: to "),
        "{error}"
    );
    assert!(error.contains(&format!("127.0.0.1:{port}")), "{error}");
    assert_eq!(read_sent(&store, "tg2024").await.expect("records").len(), 0);

    // A server that accepts four messages and goes down again.
    let credentials = Some(("giamsat".to_owned(), "mật-khẩu-thử".to_owned()));
    let flaky = SmtpServer::start(
        port,
        SmtpOptions {
            credentials: credentials.clone(),
            stop_after: Some(4),
            ..SmtpOptions::default()
        },
    )
    .await;
    let received = flaky.received.clone();
    flaky.stopped().await;
    assert_eq!(received.lock().expect("lock").len(), 4);
    let retries = status.lock().expect("status").retries;
    while status.lock().expect("status").retries < retries + 2 {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Up again for good, keeping what arrived before.
    let server = SmtpServer::start_with(
        port,
        SmtpOptions {
            credentials,
            ..SmtpOptions::default()
        },
        received,
    )
    .await;
    task.await.expect("task").expect("run");
    assert!(
        parked(&store, "notifications")
            .await
            .expect("parked")
            .is_empty()
    );
    let all = server.messages();
    assert_eq!(all.len(), expected, "none lost, none twice");
    let mut ids: Vec<String> = all.iter().map(|r| parse_mail(&r.data).message_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), expected, "distinct Message-IDs");
    let records = read_sent(&store, "tg2024").await.expect("records");
    assert_eq!(records.len(), 2);
    let recorded: usize = records.iter().map(|r| r.messages.len()).sum();
    assert_eq!(recorded, expected);
    let value: Value = serde_json::to_value(&records[0]).expect("json");
    assert_eq!(value["channel"], "email");
}
