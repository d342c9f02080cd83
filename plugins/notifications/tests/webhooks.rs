//! Webhooks against a real HTTP server on 127.0.0.1 (a tokio server in the test): the event is
//! POSTed as JSON with a timestamp and an HMAC-SHA256 signature the receiver can check, a 500
//! answer is retried by the runner with backoff, and each delivery is recorded once.

mod support;

use std::sync::Arc;
use std::time::Duration;

use giamsat_exporter::{Runner, RunnerOptions, parked};
use giamsat_notifications::{NotificationsExporter, read_sent};
use giamsat_store::Store;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use support::*;

const SECRET: &str = "bí-mật-của-webhook";

fn config(outbox: &std::path::Path, port: u16) -> Value {
    json!({
        "from": "Văn phòng HĐND huyện Tuần Giáo <vanphong@example.org>",
        "email": false,
        "outbox": outbox.display().to_string(),
        "webhooks": [{
            "id": "cong-thong-tin",
            "url": format!("http://127.0.0.1:{port}/hooks/giamsat"),
            "secret-env": "TEST_WEBHOOK_SECRET",
            "event-types": ["NoticeIssued", "VisitRescheduled"],
        }],
    })
}

fn exporter(store: &Store, outbox: &std::path::Path, port: u16) -> NotificationsExporter {
    NotificationsExporter::from_config_with_env(config(outbox, port), store.clone(), &|name| {
        (name == "TEST_WEBHOOK_SECRET").then(|| SECRET.to_owned())
    })
    .expect("config")
}

fn expected_signature(timestamp: &str, body: &[u8]) -> String {
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "sha256={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[tokio::test]
async fn events_are_posted_signed_and_a_500_is_retried() {
    let dir = tempfile::tempdir().expect("dir");
    let store = sqlite(dir.path()).await;
    let outbox = dir.path().join("outbox");
    let server = HttpServer::start(vec![500, 200]).await;
    start(&store, "tg2024", seed(&[])).await;
    act(
        &store,
        "tg2024",
        SEC,
        "issue_notice",
        json!({"issued_on": "2024-03-25", "document": "thong-bao-lich"}),
        "2024-03-25T08:00:00+07:00",
    )
    .await;
    act(
        &store,
        "tg2024",
        SEC,
        "send_reminder",
        json!({"unit": "xa-ta-ma"}),
        "2024-04-17T08:00:00+07:00",
    )
    .await;
    act(&store, "tg2024", SEC, "reschedule_visit", json!({"unit": "xa-quai-cang", "date": "2024-05-06", "start_time": "08:00", "reason": "Trùng lịch tiếp công dân của xã"}), "2024-04-18T08:00:00+07:00").await;
    let runner = Runner::new(
        "notifications",
        store.clone(),
        Arc::new(exporter(&store, &outbox, server.port)),
        RunnerOptions {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
        },
    );
    runner.run_once().await.expect("run");
    assert!(
        parked(&store, "notifications")
            .await
            .expect("parked")
            .is_empty()
    );
    let status = runner.status().lock().expect("status").clone();
    assert_eq!(status.retries, 1, "the 500 was retried once");

    let requests = server.requests();
    // The notice (answered 500, then 200) and the changed visit; not the reminder.
    assert_eq!(requests.len(), 3, "{requests:#?}");
    assert_eq!(
        requests.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500, 200, 200]
    );
    let mut ids = Vec::new();
    for r in &requests {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/hooks/giamsat");
        assert_eq!(r.headers["content-type"], "application/json");
        let timestamp = &r.headers["x-giamsat-timestamp"];
        assert!(
            timestamp.parse::<u64>().is_ok_and(|t| t > 1_700_000_000),
            "{timestamp}"
        );
        assert_eq!(
            r.headers["x-giamsat-signature"],
            expected_signature(timestamp, &r.body),
            "the signature covers the timestamp and the exact body"
        );
        let event: Value = serde_json::from_slice(&r.body).expect("a JSON event");
        assert_eq!(
            event["event_id"].as_str(),
            Some(r.headers["x-giamsat-event-id"].as_str())
        );
        assert_eq!(
            event["event_type"].as_str(),
            Some(r.headers["x-giamsat-event-type"].as_str())
        );
        assert_eq!(event["stream_id"], "case/tg2024");
        ids.push(r.headers["x-giamsat-event-id"].clone());
    }
    assert_eq!(ids[0], ids[1], "the retry carries the same event id");
    assert_ne!(ids[1], ids[2]);
    // A body altered in transit no longer matches its signature.
    let mut altered = requests[1].body.clone();
    altered.push(b' ');
    assert_ne!(
        requests[1].headers["x-giamsat-signature"],
        expected_signature(&requests[1].headers["x-giamsat-timestamp"], &altered)
    );

    let records = read_sent(&store, "tg2024").await.expect("records");
    assert_eq!(records.len(), 2);
    for (r, kind) in records.iter().zip(["NoticeIssued", "VisitRescheduled"]) {
        assert_eq!(r.channel, "webhook");
        assert_eq!(r.notification, "webhook:cong-thong-tin");
        assert_eq!(r.source.event_type, kind);
        assert_eq!(r.messages[0].status, Some(200));
        assert_eq!(
            r.messages[0].to.address,
            format!("http://127.0.0.1:{}/hooks/giamsat", server.port)
        );
    }
    assert!(!outbox.exists(), "email = false writes no message");

    // Delivered again: recorded already, nothing is posted.
    runner.replay_from(1).await.expect("replay");
    runner.run_once().await.expect("run again");
    assert_eq!(server.requests().len(), 3);
    server.stop();
}

#[tokio::test]
async fn a_webhook_secret_comes_from_the_environment_only() {
    let dir = tempfile::tempdir().expect("dir");
    let store = sqlite(dir.path()).await;
    let err = NotificationsExporter::from_config_with_env(
        config(&dir.path().join("outbox"), 9),
        store.clone(),
        &|_| None,
    )
    .expect_err("no secret");
    assert!(
        err.contains("cong-thong-tin") && err.contains("TEST_WEBHOOK_SECRET"),
        "{err}"
    );
    let mut table = config(&dir.path().join("outbox"), 9);
    table["webhooks"][0]["secret"] = json!(SECRET);
    let err =
        NotificationsExporter::from_config_with_env(table, store, &|_| Some(SECRET.to_owned()))
            .expect_err("a secret in the file is refused");
    assert!(err.contains("unknown field `secret`"), "{err}");
}
