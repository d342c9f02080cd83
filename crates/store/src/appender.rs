//! Group commit. Every append of a process goes through one appender task, which takes all the
//! requests waiting in its queue, checks each one's expected version and idempotency inside one
//! write transaction (holding the database's writer lock, so other processes wait), assigns
//! positions, chains hashes, inserts, commits, and only then answers. A request whose check fails
//! is answered with its error and writes nothing; the others in the batch still commit. If the
//! database itself fails, the batch is rolled back and each request is retried alone, so one bad
//! request cannot fail its neighbours.

use std::collections::HashMap;

use async_trait::async_trait;
use chrono::Utc;
use giamsat_types::{
    ExpectedVersion, Hash, NewEvent, Position, RecordedEvent, StreamId, chain_hash,
};
use tokio::sync::{mpsc, oneshot, watch};
use uuid::Uuid;

use crate::{AppendResult, StoreError};

/// One caller's append, waiting in the queue.
pub(crate) struct Request {
    pub stream: StreamId,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    pub reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

/// A database that can open the appender's write transaction.
#[async_trait]
pub(crate) trait WriteBackend: Send + Sync + 'static {
    type Tx: WriteTx;
    /// Begins a transaction that holds the log's writer lock until it ends.
    async fn begin(&self) -> Result<Self::Tx, StoreError>;
    /// Closes the appender's connections once the queue is drained.
    async fn close(&self);
}

/// What the appender needs to know before it plans a batch, read in the transaction.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    /// The newest position (0 for an empty log).
    pub head: Position,
    /// The newest hash (the genesis hash for an empty log).
    pub hash: Hash,
    /// The last version of each requested stream that exists.
    pub versions: HashMap<String, u64>,
    /// The stored events among the requested ids.
    pub existing: Vec<RecordedEvent>,
}

/// The operations the appender performs inside its transaction.
#[async_trait]
pub(crate) trait WriteTx: Send {
    /// Reads the head, the versions of `streams` and the stored events among `ids`; backends do
    /// this in as few round trips as they can, because it is paid on every commit.
    async fn snapshot(&mut self, streams: &[&str], ids: &[Uuid]) -> Result<Snapshot, StoreError>;
    /// Inserts `rows` (possibly none) and commits, in as few round trips as the backend can.
    async fn commit(&mut self, rows: &[RecordedEvent]) -> Result<(), StoreError>;
    /// Ends the transaction without writing; called after any error.
    async fn rollback(self);
}

/// Runs until every sender is dropped and the queue is empty.
pub(crate) async fn run<B: WriteBackend>(
    backend: B,
    mut queue: mpsc::Receiver<Request>,
    commits: watch::Sender<Position>,
    max_batch: usize,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while queue.recv_many(&mut batch, max_batch).await > 0 {
        // The callers answered by the previous commit are runnable but may not have queued their
        // next append yet. Yielding while the queue keeps growing lets them join this batch, so
        // concurrent writers share one commit instead of alternating between two half batches.
        // It costs a single writer one scheduler round trip, not a timed wait.
        for _ in 0..4 {
            if batch.len() >= max_batch {
                break;
            }
            tokio::task::yield_now().await;
            let before = batch.len();
            while batch.len() < max_batch {
                match queue.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            if batch.len() == before {
                break;
            }
        }
        let requests = std::mem::take(&mut batch);
        process(&backend, requests, &commits).await;
    }
    backend.close().await;
}

async fn process<B: WriteBackend>(
    backend: &B,
    requests: Vec<Request>,
    commits: &watch::Sender<Position>,
) {
    match attempt(backend, &requests).await {
        Ok((outcomes, head)) => {
            publish(commits, head);
            for (request, outcome) in requests.into_iter().zip(outcomes) {
                let _ = request.reply.send(outcome);
            }
        }
        Err(error) if requests.len() == 1 => {
            if let Some(request) = requests.into_iter().next() {
                let _ = request.reply.send(Err(error));
            }
        }
        Err(error) => {
            tracing::warn!(%error, batch = requests.len(), "batch failed; retrying its appends one by one");
            for request in requests {
                match attempt(backend, std::slice::from_ref(&request)).await {
                    Ok((mut outcomes, head)) => {
                        publish(commits, head);
                        let outcome = outcomes.pop().unwrap_or(Err(StoreError::Closed));
                        let _ = request.reply.send(outcome);
                    }
                    Err(error) => {
                        let _ = request.reply.send(Err(error));
                    }
                }
            }
        }
    }
}

/// Raises the known head to `head` (never lowers it) and wakes subscribers if it moved.
pub(crate) fn publish(commits: &watch::Sender<Position>, head: Position) {
    commits.send_if_modified(|known| {
        if head > *known {
            *known = head;
            true
        } else {
            false
        }
    });
}

type Outcomes = Vec<Result<AppendResult, StoreError>>;

/// One transaction for the whole batch. `Err` means the database failed and nothing was written.
async fn attempt<B: WriteBackend>(
    backend: &B,
    requests: &[Request],
) -> Result<(Outcomes, Position), StoreError> {
    let mut streams: Vec<&str> = requests.iter().map(|r| r.stream.as_str()).collect();
    streams.sort_unstable();
    streams.dedup();
    let ids: Vec<Uuid> = requests
        .iter()
        .flat_map(|r| r.events.iter().map(NewEvent::event_id))
        .collect();

    let mut tx = backend.begin().await?;
    match plan_and_commit(&mut tx, requests, &streams, &ids).await {
        Ok(done) => Ok(done),
        Err(error) => {
            tx.rollback().await;
            Err(error)
        }
    }
}

/// Reads the snapshot, decides every request of the batch, writes the accepted ones and commits.
async fn plan_and_commit<T: WriteTx>(
    tx: &mut T,
    requests: &[Request],
    streams: &[&str],
    ids: &[Uuid],
) -> Result<(Outcomes, Position), StoreError> {
    let snapshot = tx.snapshot(streams, ids).await?;
    let (mut head, mut last_hash, mut versions) = (snapshot.head, snapshot.hash, snapshot.versions);
    let mut known: HashMap<Uuid, RecordedEvent> = snapshot
        .existing
        .into_iter()
        .map(|e| (e.event_id, e))
        .collect();

    let recorded_at_micros = Utc::now().timestamp_micros();
    let mut rows: Vec<RecordedEvent> = Vec::with_capacity(ids.len());
    let mut outcomes = Vec::with_capacity(requests.len());

    for request in requests {
        let stream = request.stream.as_str();
        if request
            .events
            .iter()
            .any(|e| known.contains_key(&e.event_id()))
        {
            outcomes.push(replay(stream, &request.events, &known));
            continue;
        }
        let actual = versions.get(stream).copied().unwrap_or(0);
        if !request.expected.accepts(actual) {
            outcomes.push(Err(StoreError::WrongExpectedVersion {
                stream: stream.to_owned(),
                expected: request.expected,
                actual,
            }));
            continue;
        }
        let first_position = head + 1;
        let mut version = actual;
        for event in &request.events {
            head += 1;
            version += 1;
            let mut row = RecordedEvent {
                position: head,
                stream_id: stream.to_owned(),
                stream_version: version,
                event_id: event.event_id(),
                event_type: event.event_type().to_owned(),
                schema_version: event.schema_version(),
                data: event.data().to_owned(),
                metadata: event.metadata().to_owned(),
                recorded_at_micros,
                prev_hash: last_hash,
                hash: last_hash,
            };
            row.hash = chain_hash(&last_hash, &row.chain_fields());
            last_hash = row.hash;
            known.insert(row.event_id, row.clone());
            rows.push(row);
        }
        versions.insert(stream.to_owned(), version);
        outcomes.push(Ok(AppendResult {
            first_position,
            last_position: head,
            stream_version: version,
            duplicate: false,
        }));
    }

    tx.commit(&rows).await?;
    Ok((outcomes, head))
}

/// The answer to an append whose ids were seen before: the original positions when every event
/// matches what is stored, in one run of the same stream; an error otherwise.
fn replay(
    stream: &str,
    events: &[NewEvent],
    known: &HashMap<Uuid, RecordedEvent>,
) -> Result<AppendResult, StoreError> {
    let mut previous: Option<&RecordedEvent> = None;
    let mut first = None;
    for event in events {
        let Some(stored) = known.get(&event.event_id()) else {
            return Err(StoreError::PartialDuplicate {
                stream: stream.to_owned(),
                event_id: events
                    .iter()
                    .map(NewEvent::event_id)
                    .find(|id| known.contains_key(id))
                    .unwrap_or_else(|| event.event_id()),
            });
        };
        if !event.same_content_as(stream, stored) {
            return Err(StoreError::EventIdConflict {
                event_id: event.event_id(),
                position: stored.position,
                stream: stored.stream_id.clone(),
            });
        }
        if let Some(prev) = previous
            && stored.position != prev.position + 1
        {
            return Err(StoreError::PartialDuplicate {
                stream: stream.to_owned(),
                event_id: event.event_id(),
            });
        }
        first.get_or_insert(stored.position);
        previous = Some(stored);
    }
    match (first, previous) {
        (Some(first_position), Some(last)) => Ok(AppendResult {
            first_position,
            last_position: last.position,
            stream_version: last.stream_version,
            duplicate: true,
        }),
        _ => Err(giamsat_types::ValidationError::NoEvents.into()),
    }
}

/// The caller's side of the queue.
#[derive(Debug, Clone)]
pub(crate) struct AppendHandle {
    sender: mpsc::Sender<Request>,
}

impl AppendHandle {
    pub(crate) fn new(sender: mpsc::Sender<Request>) -> AppendHandle {
        AppendHandle { sender }
    }

    pub(crate) async fn append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Request {
                stream: stream.clone(),
                expected,
                events,
                reply,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Request")
            .field("stream", &self.stream)
            .field("expected", &self.expected)
            .field("events", &self.events.len())
            .finish()
    }
}
