//! The `sqlite:FILE` store: the slot table in one SQLite file, durable
//! before a reservation is confirmed, shareable by several processes on one
//! machine.
//!
//! This module owns the file's schema, its first filling, reservations and
//! cancels as SQL, the free-list cache and the one-time import of a
//! `--ledger` journal ([`import_ledger`]).
//!
//! - **Schema.** One table, made when missing:
//!   `slots(idx INTEGER PRIMARY KEY, day, time, doctor, port, holder NULL,
//!   booked_at NULL)`, a partial index on the free slots, and
//!   `ledger_imports` (which journals were imported, so an import happens
//!   once).
//! - **Data files.** The first start fills the table with the data files'
//!   slots. A later start with data files that describe other slots (one
//!   more, one fewer, or one changed) is **refused**, naming the first slot
//!   that differs: adding or rewriting slots under reservations already
//!   made would silently move patients' bookings, so the operator decides
//!   (old data files, or a new database file).
//! - **Durability.** WAL journal, `synchronous=FULL`: a commit is on disk
//!   when it returns, so a reservation is durable before the patient hears
//!   `DOCTOR PORT`.
//! - **Reservation.** One `UPDATE slots SET holder=?1 ... WHERE idx=?2 AND
//!   holder IS NULL RETURNING doctor, port` in an `IMMEDIATE` transaction;
//!   when it changes no row, a read in the same transaction tells
//!   [`Reservation::Taken`] from [`Reservation::NoSuchSlot`].
//! - **One connection.** A `parking_lot::Mutex<Connection>`: SQLite lets one
//!   writer in at a time anyway, and a commit waits for its fsync, so a
//!   pool would only move the queue from this mutex into SQLite's busy
//!   handler (which sleeps and retries instead of queueing). Another
//!   process on the same file is waited for up to [`BUSY_TIMEOUT`].
//! - **Free list.** Rendered once and cached; this process's own changes
//!   drop the cache, and `PRAGMA data_version` (which changes exactly when
//!   another connection committed to the file) tells when another process
//!   did, at the cost of one cheap pragma per listing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{
    ErrorKind, FreeList, Reservation, Store, StoreError, db_index, first_difference, mismatch,
    render_free_list,
};
use crate::data::Slot;

/// How long a write waits for another process holding the file's write
/// lock before it fails.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS slots (
    idx INTEGER PRIMARY KEY,
    day TEXT NOT NULL,
    time TEXT NOT NULL,
    doctor TEXT NOT NULL,
    port INTEGER NOT NULL,
    holder TEXT NULL,
    booked_at TEXT NULL
);
CREATE INDEX IF NOT EXISTS slots_free ON slots (idx) WHERE holder IS NULL;
CREATE TABLE IF NOT EXISTS ledger_imports (
    journal TEXT PRIMARY KEY,
    bookings INTEGER NOT NULL,
    imported_at TEXT NOT NULL
);
";

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// The slot table in an SQLite file.
pub struct SqliteStore {
    inner: Mutex<Inner>,
    path: PathBuf,
    label: String,
    list_cap: usize,
}

struct Inner {
    conn: Connection,
    /// The rendered free list and the `data_version` it was read at;
    /// dropped on this connection's own changes.
    cache: Option<(i64, Arc<FreeList>)>,
}

impl SqliteStore {
    /// Opens (or makes) the store at `path` for `slots`, listing at most
    /// `list_cap` free slots at a time.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or made, WAL cannot be set, or the file
    /// holds other slots than `slots` (see the module doc).
    pub fn open(path: &Path, slots: &[Slot], list_cap: usize) -> Result<SqliteStore, StoreError> {
        let label = format!("sqlite store {}", path.display());
        let fail = |what: &str, e: rusqlite::Error| {
            StoreError::caused(label.clone(), ErrorKind::Unreachable, what, &e)
        };
        let mut conn = Connection::open(path).map_err(|e| fail("cannot open the file", e))?;
        conn.busy_timeout(BUSY_TIMEOUT)
            .map_err(|e| fail("cannot set the busy timeout", e))?;
        let mode: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
            .map_err(|e| fail("cannot switch to WAL", e))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::new(
                label,
                ErrorKind::Unreachable,
                format!("cannot switch to WAL: the journal mode stays '{mode}'"),
            ));
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(|e| fail("cannot set synchronous=FULL", e))?;
        // Two processes starting together: the IMMEDIATE transaction lets
        // one make and fill the table while the other waits, then checks.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(|e| fail("cannot begin the set-up", e))?;
        tx.execute_batch(SCHEMA)
            .map_err(|e| fail("cannot make the schema", e))?;
        let stored = read_slots(&tx).map_err(|e| fail("cannot read the slots", e))?;
        if stored.is_empty() {
            fill(&tx, slots, &label)?;
        } else if let Some(difference) = first_difference(&stored, slots) {
            return Err(mismatch(label, difference));
        }
        tx.commit()
            .map_err(|e| fail("cannot commit the set-up", e))?;
        Ok(SqliteStore {
            inner: Mutex::new(Inner { conn, cache: None }),
            path: path.to_owned(),
            label,
            list_cap: list_cap.max(1),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn query_error(&self, what: &str, e: rusqlite::Error) -> StoreError {
        StoreError::caused(self.label.clone(), ErrorKind::Query, what, &e)
    }
}

/// Every slot of the table, in index order.
fn read_slots(conn: &Connection) -> rusqlite::Result<Vec<Slot>> {
    let mut stmt = conn.prepare("SELECT idx, day, time, doctor, port FROM slots ORDER BY idx")?;
    let rows = stmt.query_map([], |row| {
        let index: i64 = row.get(0)?;
        let port: i64 = row.get(4)?;
        let bad =
            |column: usize, value: i64| rusqlite::Error::IntegralValueOutOfRange(column, value);
        Ok(Slot {
            index: u64::try_from(index).map_err(|_| bad(0, index))?,
            day: row.get(1)?,
            time: row.get(2)?,
            doctor: row.get(3)?,
            port: u16::try_from(port).map_err(|_| bad(4, port))?,
        })
    })?;
    rows.collect()
}

fn fill(conn: &Connection, slots: &[Slot], label: &str) -> Result<(), StoreError> {
    let fail = |e: rusqlite::Error| {
        StoreError::caused(
            label.to_owned(),
            ErrorKind::Query,
            "cannot fill the slots",
            &e,
        )
    };
    let mut insert = conn
        .prepare("INSERT INTO slots (idx, day, time, doctor, port) VALUES (?1, ?2, ?3, ?4, ?5)")
        .map_err(fail)?;
    for slot in slots {
        let index = db_index(slot.index).ok_or_else(|| {
            StoreError::new(
                label.to_owned(),
                ErrorKind::Query,
                format!("slot index {} is too large for the database", slot.index),
            )
        })?;
        insert
            .execute(params![index, slot.day, slot.time, slot.doctor, slot.port])
            .map_err(fail)?;
    }
    Ok(())
}

/// The lowest free slots, at most `cap`, rendered.
fn render_from(conn: &Connection, cap: usize) -> rusqlite::Result<FreeList> {
    let cap = i64::try_from(cap).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT idx, day, time FROM slots WHERE holder IS NULL ORDER BY idx LIMIT ?1",
    )?;
    let rows = stmt
        .query_map([cap], |row| {
            let index: i64 = row.get(0)?;
            let index = u64::try_from(index)
                .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, index))?;
            Ok((index, row.get::<_, String>(1)?, row.get::<_, String>(2)?))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(render_free_list(
        rows.iter().map(|(i, d, t)| (*i, d.as_str(), t.as_str())),
    ))
}

impl Store for SqliteStore {
    fn reserve(&self, index: u64, holder: &str) -> Result<Reservation, StoreError> {
        let Some(index) = db_index(index) else {
            return Ok(Reservation::NoSuchSlot);
        };
        let fail = |e| self.query_error(&format!("cannot reserve slot {index}"), e);
        let mut inner = self.inner.lock();
        let tx = inner
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(fail)?;
        let booked = tx
            .prepare_cached(&format!(
                "UPDATE slots SET holder = ?1, booked_at = {NOW} \
                 WHERE idx = ?2 AND holder IS NULL RETURNING doctor, port"
            ))
            .and_then(|mut stmt| {
                stmt.query_row(params![holder, index], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                })
                .optional()
            })
            .map_err(fail)?;
        let outcome = match booked {
            Some((doctor, port)) => {
                let port = u16::try_from(port).map_err(|_| {
                    self.query_error(
                        &format!("cannot reserve slot {index}"),
                        rusqlite::Error::IntegralValueOutOfRange(1, port),
                    )
                })?;
                Reservation::Booked {
                    doctor: doctor.into(),
                    port,
                }
            }
            None => {
                let exists = tx
                    .prepare_cached("SELECT 1 FROM slots WHERE idx = ?1")
                    .and_then(|mut stmt| stmt.exists([index]))
                    .map_err(fail)?;
                if exists {
                    Reservation::Taken
                } else {
                    Reservation::NoSuchSlot
                }
            }
        };
        // Commit returns once the WAL is synced (synchronous=FULL).
        tx.commit().map_err(fail)?;
        if matches!(outcome, Reservation::Booked { .. }) {
            inner.cache = None;
        }
        Ok(outcome)
    }

    fn cancel(&self, index: u64, holder: &str) -> Result<bool, StoreError> {
        let Some(index) = db_index(index) else {
            return Ok(false);
        };
        let mut inner = self.inner.lock();
        let changed = inner
            .conn
            .prepare_cached(
                "UPDATE slots SET holder = NULL, booked_at = NULL WHERE idx = ?1 AND holder = ?2",
            )
            .and_then(|mut stmt| stmt.execute(params![index, holder]))
            .map_err(|e| self.query_error(&format!("cannot cancel slot {index}"), e))?;
        if changed > 0 {
            inner.cache = None;
        }
        Ok(changed > 0)
    }

    fn free_list(&self) -> Result<Arc<FreeList>, StoreError> {
        let fail = |e| self.query_error("cannot list the free slots", e);
        let mut inner = self.inner.lock();
        let version: i64 = inner
            .conn
            .pragma_query_value(None, "data_version", |row| row.get(0))
            .map_err(fail)?;
        if let Some((cached_at, list)) = &inner.cache
            && *cached_at == version
        {
            return Ok(Arc::clone(list));
        }
        // Read after the version: a commit in between makes the next
        // listing read again, never serves a stale list.
        let list = Arc::new(render_from(&inner.conn, self.list_cap).map_err(fail)?);
        inner.cache = Some((version, Arc::clone(&list)));
        Ok(list)
    }

    fn holders(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let inner = self.inner.lock();
        holders_of(&inner.conn).map_err(|e| self.query_error("cannot read the holders", e))
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

fn holders_of(conn: &Connection) -> rusqlite::Result<Vec<(u64, String)>> {
    let mut stmt =
        conn.prepare_cached("SELECT idx, holder FROM slots WHERE holder IS NOT NULL ORDER BY idx")?;
    let rows = stmt.query_map([], |row| {
        let index: i64 = row.get(0)?;
        let index =
            u64::try_from(index).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, index))?;
        Ok((index, row.get::<_, String>(1)?))
    })?;
    rows.collect()
}

/// What [`import_ledger`] did, with a message for the operator
/// (`Display`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerImport {
    /// The journal, as given.
    pub journal: PathBuf,
    /// Reservations the journal held.
    pub bookings: usize,
    /// False when this journal had been imported before: nothing was done.
    pub imported: bool,
    /// The journal's own warnings (a torn last line cut off).
    pub warnings: Vec<String>,
}

impl std::fmt::Display for LedgerImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.imported {
            write!(
                f,
                "imported {} from the journal {}",
                crate::stats::plural(self.bookings as u64, "reservation", "reservations"),
                self.journal.display()
            )
        } else {
            write!(
                f,
                "the journal {} was imported before; nothing to do",
                self.journal.display()
            )
        }
    }
}

/// Replays the `--ledger` journal at `journal` (through
/// [`crate::ledger::Ledger::open`], so it is checked, and a torn last line
/// cut off, exactly as the center would) into `db`, once: the journal's
/// canonical path is recorded in the same transaction, and a second import
/// of it does nothing.
///
/// # Errors
///
/// The journal is missing or does not replay against the database's slots,
/// a slot it books is held by someone else in the database, or the
/// database cannot be written. Nothing is imported then.
pub fn import_ledger(journal: &Path, db: &SqliteStore) -> Result<LedgerImport, StoreError> {
    let import_error = |what: String| StoreError::new(db.label.clone(), ErrorKind::Import, what);
    let shown = journal.display();
    let canonical = journal
        .canonicalize()
        .map_err(|e| import_error(format!("cannot import the journal {shown}: {e}")))?;
    let key = canonical.to_string_lossy().into_owned();
    let mut inner = db.inner.lock();
    let fail = |e: rusqlite::Error| {
        StoreError::caused(
            db.label.clone(),
            ErrorKind::Import,
            format!("cannot import the journal {shown}"),
            &e,
        )
    };
    let tx = inner
        .conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(fail)?;
    let before: Option<i64> = tx
        .query_row(
            "SELECT bookings FROM ledger_imports WHERE journal = ?1",
            [&key],
            |row| row.get(0),
        )
        .optional()
        .map_err(fail)?;
    if let Some(bookings) = before {
        return Ok(LedgerImport {
            journal: journal.to_owned(),
            bookings: usize::try_from(bookings).unwrap_or(0),
            imported: false,
            warnings: Vec::new(),
        });
    }
    let slots = read_slots(&tx).map_err(fail)?;
    let (_ledger, replay) = crate::ledger::Ledger::open(journal, &slots)
        .map_err(|e| import_error(format!("cannot import the journal: {e}")))?;
    for (index, holder) in &replay.holders {
        let Some(at) = db_index(*index) else {
            return Err(import_error(format!("slot {index} is out of range")));
        };
        let changed = tx
            .execute(
                &format!(
                    "UPDATE slots SET holder = ?1, booked_at = {NOW} \
                     WHERE idx = ?2 AND holder IS NULL"
                ),
                params![holder, at],
            )
            .map_err(fail)?;
        if changed == 0 {
            let current: Option<String> = tx
                .query_row("SELECT holder FROM slots WHERE idx = ?1", [at], |row| {
                    row.get(0)
                })
                .map_err(fail)?;
            if current.as_deref() != Some(holder.as_str()) {
                return Err(import_error(format!(
                    "cannot import the journal {shown}: it books slot {index} for {holder}, \
                     but the database has it reserved for {}",
                    current.as_deref().unwrap_or("nobody")
                )));
            }
        }
    }
    let bookings = i64::try_from(replay.holders.len()).unwrap_or(i64::MAX);
    tx.execute(
        &format!(
            "INSERT INTO ledger_imports (journal, bookings, imported_at) VALUES (?1, ?2, {NOW})"
        ),
        params![key, bookings],
    )
    .map_err(fail)?;
    tx.commit().map_err(fail)?;
    inner.cache = None;
    Ok(LedgerImport {
        journal: journal.to_owned(),
        bookings: replay.holders.len(),
        imported: true,
        warnings: replay.warnings,
    })
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("list_cap", &self.list_cap)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::DEFAULT_LIST_CAP;

    fn slots() -> Vec<Slot> {
        crate::data::Fixtures::load(&crate::data::Source::built_in())
            .unwrap()
            .slots
    }

    #[test]
    fn a_journal_is_imported_once() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("ledger");
        std::fs::write(
            &journal,
            "book 2 patient1\nbook 5 patient2\ncancel 2 patient1\n",
        )
        .unwrap();
        let db = SqliteStore::open(&dir.path().join("db"), &slots(), DEFAULT_LIST_CAP).unwrap();
        db.reserve(1, "patient9").unwrap();
        db.free_list().unwrap();
        let first = import_ledger(&journal, &db).unwrap();
        assert!(first.imported);
        assert_eq!(first.bookings, 1);
        assert!(
            first.to_string().contains("imported 1 reservation"),
            "{first}"
        );
        assert_eq!(
            db.holders().unwrap(),
            [(1, "patient9".to_owned()), (5, "patient2".to_owned())]
        );
        assert!(!db.free_list().unwrap().line.contains("5 Sat"));
        let again = import_ledger(&journal, &db).unwrap();
        assert!(!again.imported, "{again}");
        assert!(again.to_string().contains("imported before"));
    }

    #[test]
    fn a_journal_that_conflicts_is_refused_whole() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("ledger");
        std::fs::write(&journal, "book 3 patient1\nbook 5 patient2\n").unwrap();
        let db = SqliteStore::open(&dir.path().join("db"), &slots(), DEFAULT_LIST_CAP).unwrap();
        db.reserve(5, "patient7").unwrap();
        let err = import_ledger(&journal, &db).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Import);
        assert!(
            err.to_string().contains(
                "books slot 5 for patient2, but the database has it reserved for patient7"
            ),
            "{err}"
        );
        assert_eq!(db.holders().unwrap(), [(5, "patient7".to_owned())]);
        let missing = import_ledger(&dir.path().join("nope"), &db).unwrap_err();
        assert!(missing.to_string().contains("nope"), "{missing}");
    }

    #[test]
    fn other_data_files_are_refused_naming_the_slot() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db");
        SqliteStore::open(&path, &slots(), DEFAULT_LIST_CAP).unwrap();
        let mut other = slots();
        other[2].doctor = "doc2".into();
        let err = SqliteStore::open(&path, &other, DEFAULT_LIST_CAP).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Mismatch);
        assert!(err.to_string().contains("slot 3 differs"), "{err}");
    }
}
