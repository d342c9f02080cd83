//! Every notification template of every shipped workflow renders in every golden scenario: each
//! golden case the workflow accepts is replayed into its own case on a real SQLite store (every
//! unit and body given an example.org address), the exporter writes its messages to the outbox,
//! nothing may be parked, every declared notification must have been sent, and every message
//! and calendar file must parse.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use giamsat_exporter::{Runner, RunnerOptions, parked};
use giamsat_notifications::{NotificationsExporter, read_sent};
use serde_json::{Value, json};
use support::*;

async fn notify_every_golden_scenario(name: &str) {
    let workflow = workflow(name);
    let tmp = tempfile::tempdir().expect("dir");
    let store = sqlite(tmp.path()).await;
    let cases = giamsat_testkit::replay_golden_cases_with(&store, name, |data| {
        for list in ["units", "bodies"] {
            let items = data.get_mut(list).and_then(Value::as_array_mut);
            for item in items.into_iter().flatten() {
                let code = item["code"].as_str().expect("code").to_owned();
                item["email"] = json!(format!("{code}@example.org"));
            }
        }
    })
    .await;
    let outbox = tmp.path().join("outbox");
    let exporter = NotificationsExporter::from_config_with_env(
        json!({
            "from": "Văn phòng HĐND <vanphong@example.org>",
            "outbox": outbox.display().to_string(),
            "roles": roles(),
            "calendar-dir": root().join("config/calendars").display().to_string(),
        }),
        store.clone(),
        &|_| None,
    )
    .expect("config");
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
    let parked = parked(&store, "notifications").await.expect("parked");
    assert!(
        parked.is_empty(),
        "{name}: {}",
        parked
            .iter()
            .map(|p| format!("{} {}: {}", p.stream_id, p.event_type, p.error))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut sent = BTreeSet::new();
    let mut messages = 0;
    for case in &cases {
        for r in read_sent(&store, case).await.expect("records") {
            assert!(
                !r.messages.is_empty(),
                "{case} {}: nobody received it",
                r.notification
            );
            for m in &r.messages {
                let raw =
                    std::fs::read(outbox.join(m.file.as_deref().expect("file"))).expect("eml");
                let mail = parse_mail(&raw);
                assert_eq!(mail.subject, m.subject);
                assert!(!mail.subject.contains("{{"), "{}", mail.subject);
                assert!(mail.body.starts_with("Kính gửi: "), "{case}: {}", mail.body);
                for (file, _, bytes) in &mail.attachments {
                    if file.ends_with(".ics") {
                        parse_ics(std::str::from_utf8(bytes).expect("utf-8"));
                    }
                }
                messages += 1;
                // One message of each notification, for a person to read (--nocapture).
                if !sent.contains(&r.notification) && m == &r.messages[0] {
                    println!(
                        "----- {name} {} ({case})\nSubject: {}\n\n{}",
                        r.notification, mail.subject, mail.body
                    );
                }
            }
            sent.insert(r.notification);
        }
    }
    let declared: BTreeSet<String> = workflow
        .definition
        .notifications
        .iter()
        .map(|n| n.id.value.clone())
        .collect();
    let missing: Vec<&String> = declared.difference(&sent).collect();
    assert!(
        missing.is_empty(),
        "{name}: never sent in a golden scenario: {missing:?}"
    );
    println!(
        "{name}: {messages} messages of {} notifications from {} golden scenarios",
        sent.len(),
        cases.len()
    );
}

#[tokio::test]
async fn every_supervision_notification_renders_in_every_golden_scenario() {
    notify_every_golden_scenario("giam-sat-chuyen-de").await;
}

#[tokio::test]
async fn every_explanation_session_notification_renders_in_every_golden_scenario() {
    notify_every_golden_scenario("phien-giai-trinh").await;
}

#[test]
fn every_notification_template_compiles_and_a_broken_one_is_located() {
    for name in ["giam-sat-chuyen-de", "phien-giai-trinh"] {
        let problems = giamsat_notifications::check_templates(&workflow(name));
        assert!(problems.is_empty(), "{name}: {problems:?}");
    }
    let mut bundle =
        giamsat_cases::read_workflow_dir(&root().join("workflows/phien-giai-trinh")).expect("read");
    bundle.files.insert(
        "notifications/ket-luan.hbs".to_owned(),
        "Kính gửi:\n{{#if x}}\n".to_owned(),
    );
    bundle.text = bundle.text.replace(
        "subject: \"Giấy mời dự phiên giải trình: {{data.topic}}\"",
        "subject: \"Giấy mời {{data.topic\"",
    );
    let problems = giamsat_notifications::check_templates(
        &giamsat_engine::load(bundle).expect("valid definition"),
    );
    let text: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 2, "{text:?}");
    assert!(
        text[0].starts_with("notification invitation subject:1:"),
        "{text:?}"
    );
    assert!(
        text[1].starts_with("notifications/ket-luan.hbs:"),
        "{text:?}"
    );
}
