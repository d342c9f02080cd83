//! Types shared by every giamsat crate: stream ids, the event envelope, expected versions and the
//! hash chain that makes the log tamper-evident. Nothing here does I/O or depends on a runtime.

mod event;
mod hash;

pub use event::{
    EventMetadata, ExpectedVersion, MAX_EVENT_TYPE_BYTES, MAX_STREAM_ID_BYTES, NewEvent,
    RecordedEvent, StreamId, ValidationError, canonical_json,
};
pub use hash::{ChainFields, GENESIS_HASH, Hash, chain_hash};

/// A global log position. Positions start at 1 and are gap-free; 0 means "before the first event".
pub type Position = u64;
