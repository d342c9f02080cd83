//! Verification of the hash chain: the whole log is read in pages, in constant memory, and every
//! position, link and hash is recomputed. The first position that is wrong is reported.

use giamsat_types::{GENESIS_HASH, Hash, Position};
use serde::Serialize;

use crate::{EventFilter, Store, StoreError};

const PAGE: usize = 2048;

/// What is wrong at a position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum VerifyProblemKind {
    /// A position is missing: the log jumps from `expected` to the reported position.
    Gap { expected: Position },
    /// The stored previous hash is not the hash of the event before.
    BrokenLink { expected: Hash, stored: Hash },
    /// The stored hash does not match the stored content.
    ContentChanged { computed: Hash, stored: Hash },
    /// The row could not be read as an event at all.
    Unreadable { reason: String },
}

/// The first position whose content or link is wrong.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyProblem {
    pub position: Position,
    #[serde(flatten)]
    pub kind: VerifyProblemKind,
}

impl std::fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            VerifyProblemKind::Gap { expected } => write!(
                f,
                "position {}: the log skips from {} (positions missing)",
                self.position, expected
            ),
            VerifyProblemKind::BrokenLink { expected, stored } => write!(
                f,
                "position {}: previous hash {} does not match the hash {} of the event before",
                self.position, stored, expected
            ),
            VerifyProblemKind::ContentChanged { computed, stored } => write!(
                f,
                "position {}: stored hash {} does not match the content (computed {})",
                self.position, stored, computed
            ),
            VerifyProblemKind::Unreadable { reason } => {
                write!(f, "position {}: unreadable: {}", self.position, reason)
            }
        }
    }
}

/// The outcome of a verification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Events checked, up to and including the first problem.
    pub events_checked: u64,
    /// The last position checked and its stored hash (the chain head when intact).
    pub last_position: Position,
    pub last_hash: Hash,
    pub problem: Option<VerifyProblem>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.problem.is_none()
    }
}

pub(crate) async fn verify(
    store: &Store,
    mut progress: impl FnMut(u64),
) -> Result<VerifyReport, StoreError> {
    let filter = EventFilter::all();
    let mut expected_position: Position = 1;
    let mut previous = GENESIS_HASH;
    let mut checked = 0u64;
    let report = |checked, last_position, last_hash, problem| VerifyReport {
        events_checked: checked,
        last_position,
        last_hash,
        problem,
    };
    loop {
        let page = match store.read_all(expected_position, None, PAGE, &filter).await {
            Ok(page) => page,
            Err(StoreError::Corrupt { position, reason }) => {
                return Ok(report(
                    checked + 1,
                    position,
                    previous,
                    Some(VerifyProblem {
                        position,
                        kind: VerifyProblemKind::Unreadable { reason },
                    }),
                ));
            }
            Err(e) => return Err(e),
        };
        if page.is_empty() {
            return Ok(report(checked, expected_position - 1, previous, None));
        }
        for event in &page {
            checked += 1;
            let kind = if event.position != expected_position {
                Some(VerifyProblemKind::Gap {
                    expected: expected_position,
                })
            } else if event.prev_hash != previous {
                Some(VerifyProblemKind::BrokenLink {
                    expected: previous,
                    stored: event.prev_hash,
                })
            } else {
                let computed = event.computed_hash();
                (computed != event.hash).then_some(VerifyProblemKind::ContentChanged {
                    computed,
                    stored: event.hash,
                })
            };
            if let Some(kind) = kind {
                return Ok(report(
                    checked,
                    event.position,
                    event.hash,
                    Some(VerifyProblem {
                        position: event.position,
                        kind,
                    }),
                ));
            }
            previous = event.hash;
            expected_position += 1;
        }
        progress(checked);
    }
}
