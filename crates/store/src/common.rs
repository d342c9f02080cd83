//! Pieces both backends share: integer conversions, stored-hash decoding, the schema-version
//! guard, and the slot that owns a store's appender task.

use std::sync::Mutex;

use giamsat_types::{GENESIS_HASH, Hash, Position};
use sqlx::SqlSafeStr;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use tokio::task::JoinHandle;

use crate::StoreError;
use crate::appender::AppendHandle;

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A hash column read back; anything but 32 bytes makes the row corrupt.
pub(crate) fn stored_hash(
    position: Position,
    column: &str,
    bytes: &[u8],
) -> Result<Hash, StoreError> {
    Hash::from_slice(bytes).ok_or_else(|| StoreError::Corrupt {
        position,
        reason: format!("{column} is {} bytes, expected 32", bytes.len()),
    })
}

/// The head from `SELECT position, hash ... ORDER BY position DESC LIMIT 1`.
pub(crate) fn head_from_row(row: Option<(i64, Vec<u8>)>) -> Result<(Position, Hash), StoreError> {
    match row {
        None => Ok((0, GENESIS_HASH)),
        Some((position, hash)) => {
            let position = to_u64(position);
            Ok((position, stored_hash(position, "hash", &hash)?))
        }
    }
}

/// The embedded migrations of one backend, as (version, description, SQL).
pub(crate) fn migrator(migrations: &[(i64, &'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|(version, description, sql)| {
                Migration::new(
                    *version,
                    (*description).into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// Refuses a database migrated by a newer binary (`found` is its highest applied version).
pub(crate) fn refuse_newer_schema(
    found: Option<i64>,
    migrator: &Migrator,
) -> Result<(), StoreError> {
    let supported = migrator.iter().map(|m| m.version).max().unwrap_or(0);
    match found {
        Some(found) if found > supported => Err(StoreError::SchemaTooNew { found, supported }),
        _ => Ok(()),
    }
}

/// Owns a store's appender: callers clone the handle; closing drops it and waits for the task to
/// finish the requests already queued.
#[derive(Debug)]
pub(crate) struct AppenderSlot(Mutex<Option<(AppendHandle, JoinHandle<()>)>>);

impl AppenderSlot {
    pub(crate) fn new(handle: AppendHandle, task: JoinHandle<()>) -> AppenderSlot {
        AppenderSlot(Mutex::new(Some((handle, task))))
    }

    pub(crate) fn handle(&self) -> Result<AppendHandle, StoreError> {
        let guard = self.0.lock().map_err(|_| StoreError::Closed)?;
        guard
            .as_ref()
            .map(|(h, _)| h.clone())
            .ok_or(StoreError::Closed)
    }

    pub(crate) async fn shutdown(&self) {
        let taken = self.0.lock().ok().and_then(|mut g| g.take());
        if let Some((handle, task)) = taken {
            drop(handle);
            let _ = task.await;
        }
    }
}
