//! Leases: named, exclusive locks that several processes on one database use to elect which of
//! them runs a singleton task (the timer scheduler, each exporter). A lease is taken without
//! waiting ([`crate::EventStore::try_lease`] answers `None` when another holder has it), is held
//! for as long as the [`Lease`] value lives, and is released when it is dropped or
//! [released](Lease::release), or when its holder dies.
//!
//! What a lease is on each backend:
//!
//! - **PostgreSQL**: a session-level advisory lock, `pg_try_advisory_lock(key)`, on a connection
//!   of its own that the `Lease` owns (never a pooled one, which would keep the lock after being
//!   handed back). The key is a 64-bit FNV-1a hash of the schema and the lease name, so stores in
//!   different schemas of one database never contend, and it cannot collide in practice with the
//!   appender's transaction lock (a hash of the schema alone). PostgreSQL releases the lock when
//!   the session ends: at once when the holder closes or drops the connection or its process
//!   exits, and after the TCP keepalive gives up (about 11 s: idle 5 s, then 3 probes 2 s apart,
//!   set on the lease's connection) when the holder's machine or network vanishes.
//!   [`Lease::check`] runs `SELECT 1` on the connection: an error or no answer within 5 s means
//!   the session, and with it the lock, may be gone, and the holder must stop the task.
//! - **SQLite**: an exclusive `flock` on a lock file next to the database,
//!   `<database>-lease-<name>` (characters other than letters, digits, `.`, `_` and `-`
//!   percent-encoded, so `exporter/documents` becomes `exporter%2Fdocuments`). The operating
//!   system releases it when the file is closed, including when the process dies (`kill -9`
//!   too). Two stores on one file conflict whether they are in one process or in two. The lock
//!   files are left in place (removing a lock file while a daemon runs would let a second one lock
//!   a new file of the same name; [`Lease::check`] notices a removed or replaced file and reports
//!   the lease lost). Only processes on one machine see each other's `flock`s, which is also all
//!   SQLite itself supports.
//! - **SQLite in memory** (`sqlite::memory:`): a lock in the store's own memory, since no other
//!   process can open the database.
//!
//! A lease is not a fence: between a holder losing its lease (its connection broke) and it
//! noticing (the next [`Lease::check`]), another process may already hold the lease and run the
//! same task. The tasks leases protect are safe under such overlap (timers append with the case's
//! expected version; exporters deliver at least once); a lease keeps them from running twice in
//! the normal case, it does not make them exactly-once.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::{Connection, PgConnection};

use crate::StoreError;

/// How long [`Lease::check`] waits for PostgreSQL's answer before reporting the lease lost.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// A held lease. Dropping it releases the lease (PostgreSQL: the connection is closed; SQLite:
/// the lock file is closed); [`Lease::release`] does the same and waits for it.
pub struct Lease {
    name: String,
    inner: Inner,
}

enum Inner {
    Postgres {
        conn: Option<PgConnection>,
        key: i64,
    },
    File {
        file: std::fs::File,
        path: PathBuf,
    },
    Local {
        held: Arc<Mutex<HashSet<String>>>,
    },
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match &self.inner {
            Inner::Postgres { key, .. } => format!("postgres advisory lock {key}"),
            Inner::File { path, .. } => format!("lock file {}", path.display()),
            Inner::Local { .. } => "in-memory lock".to_owned(),
        };
        f.debug_struct("Lease")
            .field("name", &self.name)
            .field("lock", &kind)
            .finish()
    }
}

impl Lease {
    /// The lease's name, as it was asked for.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the lease is still held: `Ok` when it is, an error when it may have been lost
    /// (PostgreSQL: the connection does not answer; SQLite: the lock file was removed or
    /// replaced). A holder checks every few seconds and stops its task on an error.
    pub async fn check(&mut self) -> Result<(), StoreError> {
        match &mut self.inner {
            Inner::Postgres { conn, .. } => {
                let Some(conn) = conn.as_mut() else {
                    return Err(lost(&self.name, "its connection is closed"));
                };
                match tokio::time::timeout(CHECK_TIMEOUT, sqlx::query("SELECT 1").execute(conn))
                    .await
                {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(lost(&self.name, &format!("its connection failed: {e}"))),
                    Err(_) => Err(lost(
                        &self.name,
                        &format!(
                            "its connection did not answer within {} s",
                            CHECK_TIMEOUT.as_secs()
                        ),
                    )),
                }
            }
            Inner::File { file, path } => {
                if same_file(file, path) {
                    Ok(())
                } else {
                    Err(lost(
                        &self.name,
                        &format!("its lock file {} was removed or replaced", path.display()),
                    ))
                }
            }
            Inner::Local { .. } => Ok(()),
        }
    }

    /// Releases the lease now (PostgreSQL: `pg_advisory_unlock` and the connection closed).
    pub async fn release(mut self) {
        if let Inner::Postgres { conn, key } = &mut self.inner
            && let Some(mut c) = conn.take()
        {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
                .bind(*key)
                .execute(&mut c)
                .await;
            let _ = c.close().await;
        }
        // The rest is what dropping does.
    }

    pub(crate) fn postgres(name: &str, conn: PgConnection, key: i64) -> Lease {
        Lease {
            name: name.to_owned(),
            inner: Inner::Postgres {
                conn: Some(conn),
                key,
            },
        }
    }

    /// Takes the `flock` on the lease's lock file next to the SQLite file `database`.
    pub(crate) fn try_file(name: &str, database: &Path) -> Result<Option<Lease>, StoreError> {
        let path = lock_file(database, name);
        let io = |e: std::io::Error| StoreError::Lease {
            name: name.to_owned(),
            reason: format!("cannot open the lock file {}: {e}", path.display()),
        };
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Lease {
                name: name.to_owned(),
                inner: Inner::File { file, path },
            })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
        }
    }

    /// Takes a lease kept in memory, in `held`.
    pub(crate) fn try_local(name: &str, held: &Arc<Mutex<HashSet<String>>>) -> Option<Lease> {
        let mut set = held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        set.insert(name.to_owned()).then(|| Lease {
            name: name.to_owned(),
            inner: Inner::Local { held: held.clone() },
        })
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        match &self.inner {
            Inner::Local { held } => {
                held.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(&self.name);
            }
            Inner::File { file, .. } => {
                // Closing the file releases the lock as well; unlocking first makes it
                // immediate even if a duplicate of the descriptor were alive somewhere.
                let _ = file.unlock();
            }
            // Dropping the connection closes its socket; the server then ends the session and
            // releases its advisory locks.
            Inner::Postgres { .. } => {}
        }
    }
}

fn lost(name: &str, reason: &str) -> StoreError {
    StoreError::Lease {
        name: name.to_owned(),
        reason: format!("the lease may be lost: {reason}"),
    }
}

/// Refuses an empty lease name.
pub(crate) fn check_name(name: &str) -> Result<(), StoreError> {
    if name.is_empty() {
        return Err(StoreError::Lease {
            name: String::new(),
            reason: "a lease needs a name".to_owned(),
        });
    }
    Ok(())
}

/// `<database>-lease-<name>`, the name percent-encoded except for letters, digits, `.`, `_`, `-`.
pub fn lock_file(database: &Path, name: &str) -> PathBuf {
    let mut file = database.as_os_str().to_owned();
    file.push("-lease-");
    let mut encoded = String::new();
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    file.push(encoded);
    PathBuf::from(file)
}

/// Whether `path` still names the file `file` has open (not removed, not replaced).
#[cfg(unix)]
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &std::fs::File, path: &Path) -> bool {
    path.exists()
}

/// The advisory-lock key of a lease: FNV-1a of the schema and the name.
pub(crate) fn postgres_key(schema: &str, name: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in format!("giamsat:{schema}:lease:{name}").as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i64::from_ne_bytes(h.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_files_are_named_after_the_database_and_the_lease() {
        assert_eq!(
            lock_file(Path::new("/srv/giamsat.db"), "exporter/documents"),
            PathBuf::from("/srv/giamsat.db-lease-exporter%2Fdocuments")
        );
        assert_eq!(
            lock_file(Path::new("giamsat.db"), "scheduler"),
            PathBuf::from("giamsat.db-lease-scheduler")
        );
    }

    #[test]
    fn keys_differ_by_schema_and_name() {
        let a = postgres_key("public", "scheduler");
        assert_ne!(a, postgres_key("other", "scheduler"));
        assert_ne!(a, postgres_key("public", "exporter/documents"));
        assert_eq!(a, postgres_key("public", "scheduler"));
    }
}
