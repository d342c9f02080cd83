//! Subscriptions to the whole log: catch up from a position, then follow new commits. A
//! subscription pulls one page at a time, so it never holds more than `subscription_batch`
//! events however far behind its consumer is.
//!
//! Correctness rests on the store's ordering invariant: positions are assigned in commit order, so
//! once the head is observed at `h`, every position up to `h` is committed and visible. Each read
//! is bounded by a head read first, and the subscription remembers how far it has scanned even
//! when a filter returned nothing.

use std::collections::VecDeque;

use giamsat_types::{Position, RecordedEvent};
use tokio::sync::watch;

use crate::{EventFilter, Store, StoreError};

/// A cursor over the committed log. `next` returns every matching event exactly once, in
/// position order, waiting for new commits when caught up.
#[derive(Debug)]
pub struct Subscription {
    store: Store,
    filter: EventFilter,
    /// Every position up to here has been delivered or skipped by the filter.
    scanned: Position,
    /// The last position returned by `next`.
    delivered: Position,
    buffer: VecDeque<RecordedEvent>,
    commits: watch::Receiver<Position>,
}

impl Subscription {
    pub(crate) fn new(store: Store, after: Position, filter: EventFilter) -> Subscription {
        let commits = store.commits();
        Subscription {
            store,
            filter,
            scanned: after,
            delivered: after,
            buffer: VecDeque::new(),
            commits,
        }
    }

    /// The last position this subscription returned (or started after).
    pub fn position(&self) -> Position {
        self.delivered
    }

    /// Every position up to this one has been returned or does not match the filter: the
    /// position a consumer that is idle has read up to (it runs ahead of [`Self::position`]
    /// when the last events committed did not match).
    pub fn seen(&self) -> Position {
        if self.buffer.is_empty() {
            self.scanned.max(self.delivered)
        } else {
            self.delivered
        }
    }

    /// Waits until a commit may have added events (or the poll interval has passed); for a
    /// consumer that calls [`Self::try_next`] and does something while idle.
    pub async fn wait_for_commits(&mut self) {
        self.wait().await;
    }

    /// Events fetched but not yet returned; never more than `subscription_batch`.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The next committed event after the last one returned; waits while there is none.
    pub async fn next(&mut self) -> Result<RecordedEvent, StoreError> {
        loop {
            if let Some(event) = self.try_next().await? {
                return Ok(event);
            }
            self.wait().await;
        }
    }

    /// The next committed event if one is available now, without waiting for new commits.
    pub async fn try_next(&mut self) -> Result<Option<RecordedEvent>, StoreError> {
        if self.buffer.is_empty() {
            self.fill().await?;
        }
        Ok(self.buffer.pop_front().inspect(|event| {
            self.delivered = event.position;
        }))
    }

    async fn fill(&mut self) -> Result<(), StoreError> {
        // Mark the current notification as seen before reading, so a commit that lands after
        // the read still wakes `wait`.
        self.commits.borrow_and_update();
        let batch = self.store.options().subscription_batch.max(1);
        let head = match self.store.head().await? {
            Some(head) => head.position,
            None => return Ok(()),
        };
        while self.buffer.is_empty() && self.scanned < head {
            let events = self
                .store
                .read_all(self.scanned + 1, Some(head), batch, &self.filter)
                .await?;
            self.scanned = if events.len() < batch {
                head
            } else {
                events.last().map_or(head, |e| e.position)
            };
            self.buffer.extend(events);
        }
        Ok(())
    }

    async fn wait(&mut self) {
        let poll = self.store.options().poll_interval;
        tokio::select! {
            _ = self.commits.changed() => {}
            _ = tokio::time::sleep(poll) => {}
        }
    }
}
