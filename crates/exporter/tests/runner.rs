//! The exporter runner on a real SQLite store: order, at-least-once delivery across a restart
//! with outcomes recorded once, retries, parking, and isolation between exporters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use giamsat_exporter::{
    ExportError, Exporter, Filter, Outcome, PARKED_EVENT, RetryError, Runner, RunnerOptions,
    checkpoint_name, parked, parked_stream,
};
use giamsat_store::{Direction, Store, StoreOptions};
use giamsat_types::{ExpectedVersion, NewEvent, RecordedEvent, StreamId};
use serde_json::json;
use tokio::sync::{Semaphore, watch};
use uuid::Uuid;

async fn sqlite() -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let url = format!("sqlite://{}", dir.path().join("x.db").display());
    (
        Store::open(&url, StoreOptions::default())
            .await
            .expect("open"),
        dir,
    )
}

async fn append(store: &Store, stream: &str, event_type: &str, n: u64) {
    let stream = StreamId::new(stream.to_owned()).expect("stream");
    store
        .append(
            &stream,
            ExpectedVersion::Any,
            vec![NewEvent::new(event_type, &json!({ "n": n }))],
        )
        .await
        .expect("append");
}

fn fast() -> RunnerOptions {
    RunnerOptions {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(5),
    }
}

/// Records what it saw, and an outcome event per handled event (deterministic id).
#[derive(Default)]
struct Recording {
    seen: Mutex<Vec<u64>>,
    /// Event types that fail permanently.
    poison: Vec<String>,
    /// Failures left before a retryable error clears, by position.
    flaky: Mutex<std::collections::HashMap<u64, u32>>,
    /// When set, each export waits for a permit.
    gate: Option<Arc<Semaphore>>,
}

#[async_trait]
impl Exporter for Recording {
    fn filter(&self) -> Filter {
        Filter {
            event_types: Vec::new(),
            stream_prefixes: vec!["case/".to_owned()],
        }
    }

    async fn export(&self, event: &RecordedEvent) -> Result<Vec<Outcome>, ExportError> {
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate").forget();
        }
        if self.poison.contains(&event.event_type) {
            return Err(ExportError::Permanent(format!(
                "cannot render {}",
                event.event_type
            )));
        }
        if let Some(left) = self.flaky.lock().expect("lock").get_mut(&event.position)
            && *left > 0
        {
            *left -= 1;
            return Err(ExportError::Retryable("server down".to_owned()));
        }
        self.seen.lock().expect("lock").push(event.position);
        Ok(vec![Outcome {
            stream: StreamId::new("outcomes/recording".to_owned()).expect("stream"),
            event: NewEvent::new("Recorded", &json!({ "position": event.position })).with_id(
                Uuid::new_v5(&Uuid::NAMESPACE_OID, event.event_id.as_bytes()),
            ),
        }])
    }
}

async fn stream_len(store: &Store, stream: &str) -> usize {
    let stream = StreamId::new(stream.to_owned()).expect("stream");
    store
        .read_stream(&stream, Direction::Forward, Some(1), 10_000)
        .await
        .expect("read")
        .len()
}

#[tokio::test]
async fn events_arrive_in_order_and_a_restart_delivers_at_least_once_but_records_once() {
    let (store, _dir) = sqlite().await;
    for n in 0..30 {
        append(&store, &format!("case/c{}", n % 3), "Something", n).await;
        append(&store, "other/x", "Ignored", n).await;
    }
    let exporter = Arc::new(Recording::default());
    let runner = Runner::new("rec", store.clone(), exporter.clone(), fast());
    let reached = runner.run_once().await.expect("run");
    assert_eq!(reached, 60);
    let seen = exporter.seen.lock().expect("lock").clone();
    assert_eq!(seen, (0..30).map(|n| 2 * n + 1).collect::<Vec<u64>>());
    assert_eq!(stream_len(&store, "outcomes/recording").await, 30);

    // Nothing new: nothing delivered again.
    let again = Runner::new("rec", store.clone(), exporter.clone(), fast());
    again.run_once().await.expect("run");
    assert_eq!(exporter.seen.lock().expect("lock").len(), 30);

    // A crash after handling events but before saving the checkpoint: they come again, and
    // their outcomes are not recorded twice.
    store
        .save_checkpoint(&checkpoint_name("rec"), 40)
        .await
        .expect("rewind");
    let restarted = Runner::new("rec", store.clone(), exporter.clone(), fast());
    restarted.run_once().await.expect("run");
    let seen = exporter.seen.lock().expect("lock").clone();
    assert_eq!(seen.len(), 40, "events after position 40 delivered again");
    assert_eq!(&seen[30..], &[41, 43, 45, 47, 49, 51, 53, 55, 57, 59]);
    assert_eq!(stream_len(&store, "outcomes/recording").await, 30);
}

#[tokio::test]
async fn retryable_errors_are_retried_and_poison_events_are_parked_while_the_rest_flows() {
    let (store, _dir) = sqlite().await;
    for n in 0..6 {
        let kind = if n == 2 { "Poison" } else { "Something" };
        append(&store, "case/a", kind, n).await;
    }
    let exporter = Arc::new(Recording {
        poison: vec!["Poison".to_owned()],
        ..Recording::default()
    });
    // Position 4 fails twice, then succeeds; position 5 fails more often than max_attempts.
    exporter.flaky.lock().expect("lock").insert(4, 2);
    exporter.flaky.lock().expect("lock").insert(5, 10);
    let runner = Runner::new("rec", store.clone(), exporter.clone(), fast());
    runner.run_once().await.expect("run");
    assert_eq!(
        exporter.seen.lock().expect("lock").clone(),
        vec![1, 2, 4, 6]
    );
    let status = runner.status().lock().expect("lock").clone();
    assert_eq!(status.handled, 4);
    assert_eq!(status.parked, 2);
    assert_eq!(status.retries, 2 + 2);
    assert_eq!(status.checkpoint, 6);
    // Only its own outcome and parked records (6 events) follow its checkpoint.
    assert_eq!(runner.lag().await.expect("lag").events, 6);

    let parked = store
        .read_stream(
            &parked_stream("rec").expect("stream"),
            Direction::Forward,
            Some(1),
            10,
        )
        .await
        .expect("read");
    let summary: Vec<(u64, bool, u64)> = parked
        .iter()
        .map(|e| {
            assert_eq!(e.event_type, PARKED_EVENT);
            let d = e.data_value();
            (
                d["position"].as_u64().expect("position"),
                d["permanent"].as_bool().expect("permanent"),
                d["attempts"].as_u64().expect("attempts"),
            )
        })
        .collect();
    assert_eq!(summary, vec![(3, true, 1), (5, false, 3)]);
    assert!(
        parked[0].data_value()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("cannot render Poison")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_exporter_delays_neither_another_exporter_nor_appends() {
    let (store, _dir) = sqlite().await;
    for n in 0..20 {
        append(&store, "case/a", "Something", n).await;
    }
    let gate = Arc::new(Semaphore::new(0));
    let stuck = Arc::new(Recording {
        gate: Some(gate.clone()),
        ..Recording::default()
    });
    let healthy = Arc::new(Recording::default());
    let (stop, shutdown) = watch::channel(false);
    let stuck_runner = Arc::new(Runner::new("stuck", store.clone(), stuck.clone(), fast()));
    let healthy_runner = Arc::new(Runner::new(
        "healthy",
        store.clone(),
        healthy.clone(),
        fast(),
    ));
    let tasks = [
        tokio::spawn({
            let r = stuck_runner.clone();
            let s = shutdown.clone();
            async move { r.run(s).await }
        }),
        tokio::spawn({
            let r = healthy_runner.clone();
            let s = shutdown.clone();
            async move { r.run(s).await }
        }),
    ];
    // New commits keep landing while one exporter is stuck on its first event.
    for n in 20..40 {
        append(&store, "case/b", "Something", n).await;
    }
    // The healthy exporter reaches the head; the stuck one has handled nothing.
    // (Handled counts an event once its outcome is recorded, so the lag below is settled.)
    let handled = || healthy_runner.status().lock().expect("lock").handled;
    for _ in 0..500 {
        if handled() == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(healthy.seen.lock().expect("lock").len(), 40);
    assert_eq!(handled(), 40);
    assert!(stuck.seen.lock().expect("lock").is_empty());
    // Its lag is visible: every case event and the healthy exporter's 40 outcome records.
    let lag = stuck_runner.lag().await.expect("lag");
    assert_eq!(lag.events, 80);
    assert!(lag.seconds >= 0.0);
    // Released, the stuck one catches up in order.
    gate.add_permits(40);
    for _ in 0..500 {
        if stuck.seen.lock().expect("lock").len() == 40 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The same 40 case events, in the same (log) order, as the healthy exporter.
    let stuck_seen = stuck.seen.lock().expect("lock").clone();
    let healthy_seen = healthy.seen.lock().expect("lock").clone();
    assert_eq!(stuck_seen, healthy_seen);
    assert!(stuck_seen.windows(2).all(|w| w[0] < w[1]));
    // Caught up, it has read the whole log: the outcome records after its last case event do
    // not match its filter and count as handled, so its checkpoint is the head and no lag is
    // left to report.
    for _ in 0..500 {
        if stuck_runner.lag().await.expect("lag").events == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stuck_runner.lag().await.expect("lag").events, 0);
    stop.send(true).expect("stop");
    for task in tasks {
        task.await.expect("join").expect("runner");
    }
    let checkpoint = store
        .load_checkpoint(&checkpoint_name("stuck"))
        .await
        .expect("checkpoint");
    let head = store.head().await.expect("head").map(|h| h.position);
    assert_eq!(checkpoint, head);
    assert!(checkpoint > stuck_seen.last().copied());
}

#[tokio::test]
async fn a_parked_event_is_listed_retried_once_fixed_and_replay_delivers_again() {
    let (store, _dir) = sqlite().await;
    for n in 0..4 {
        append(
            &store,
            "case/a",
            if n == 1 { "Poison" } else { "Something" },
            n,
        )
        .await;
    }
    let broken = Arc::new(Recording {
        poison: vec!["Poison".to_owned()],
        ..Recording::default()
    });
    let runner = Runner::new("rec", store.clone(), broken.clone(), fast());
    runner.run_once().await.expect("run");
    let list = parked(&store, "rec").await.expect("parked");
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].position, list[0].event_type.as_str()),
        (2, "Poison")
    );
    // Still broken: the retry fails and the event stays parked.
    match runner.retry_parked(list[0].id).await {
        Err(RetryError::Export(ExportError::Permanent(m))) => assert!(m.contains("Poison")),
        other => panic!("expected the export to fail again, got {other:?}"),
    }
    assert_eq!(parked(&store, "rec").await.expect("parked").len(), 1);
    // Fixed (a new version of the plugin): the retry exports it and the list empties.
    let fixed = Arc::new(Recording::default());
    let runner = Runner::new("rec", store.clone(), fixed.clone(), fast());
    runner.retry_parked(list[0].id).await.expect("retry");
    assert_eq!(fixed.seen.lock().expect("lock").clone(), vec![2]);
    assert!(parked(&store, "rec").await.expect("parked").is_empty());
    assert!(matches!(
        runner.retry_parked(list[0].id).await,
        Err(RetryError::NotParked(_))
    ));
    // Replay from position 3: events 3 and 4 are delivered again, outcomes not duplicated.
    let before = stream_len(&store, "outcomes/recording").await;
    runner.replay_from(3).await.expect("replay");
    runner.run_once().await.expect("run");
    let seen = fixed.seen.lock().expect("lock").clone();
    assert_eq!(&seen[1..3], &[3, 4]);
    assert_eq!(stream_len(&store, "outcomes/recording").await, before);
}

/// Fails while `failing` is set, with a message that changes on every call.
#[derive(Default)]
struct Moody {
    failing: std::sync::atomic::AtomicBool,
    calls: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl Exporter for Moody {
    fn filter(&self) -> Filter {
        Filter {
            event_types: Vec::new(),
            stream_prefixes: vec!["case/".to_owned()],
        }
    }

    async fn export(&self, _event: &RecordedEvent) -> Result<Vec<Outcome>, ExportError> {
        use std::sync::atomic::Ordering;
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(ExportError::Permanent(format!("failure number {n}")));
        }
        Ok(Vec::new())
    }
}

#[tokio::test]
async fn an_event_parked_again_after_a_retry_is_parked_anew_and_once_after_a_crash() {
    use std::sync::atomic::Ordering;
    let (store, _dir) = sqlite().await;
    append(&store, "case/a", "Something", 1).await;
    let moody = Arc::new(Moody::default());
    moody.failing.store(true, Ordering::SeqCst);
    let runner = Runner::new("moody", store.clone(), moody.clone(), fast());
    runner.run_once().await.expect("run");
    let list = parked(&store, "moody").await.expect("parked");
    assert_eq!(list.len(), 1);
    // Delivered again from the start (as after a crash before the checkpoint): still one record.
    runner.replay_from(1).await.expect("replay");
    runner.run_once().await.expect("run again");
    assert_eq!(parked(&store, "moody").await.expect("parked").len(), 1);
    assert_eq!(stream_len(&store, "exporter/moody/parked").await, 1);
    // Retried successfully, then replayed and failing with another message: parked anew.
    moody.failing.store(false, Ordering::SeqCst);
    runner.retry_parked(list[0].id).await.expect("retry");
    assert!(parked(&store, "moody").await.expect("parked").is_empty());
    moody.failing.store(true, Ordering::SeqCst);
    runner.replay_from(1).await.expect("replay");
    runner
        .run_once()
        .await
        .expect("parked again without an id conflict");
    let again = parked(&store, "moody").await.expect("parked");
    assert_eq!(again.len(), 1);
    assert_ne!(again[0].id, list[0].id);
    assert_ne!(again[0].error, list[0].error);
}
