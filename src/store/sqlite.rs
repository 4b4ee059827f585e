//! The `sqlite:FILE` store: the slot table in one SQLite file, durable
//! before a reservation is confirmed, shareable by several processes on one
//! machine.
//!
//! This module owns the file's schema, its first filling, the checks that
//! refuse a file that cannot work, reservations and cancels as SQL, and
//! how the copy in memory learns what other processes did.
//!
//! - **Schema.** One table, made when missing:
//!   `slots(idx INTEGER PRIMARY KEY, day, time, doctor, port, holder NULL,
//!   booked_at NULL)` and a partial index on the free slots.
//! - **Data files.** The first start fills the table with the data files'
//!   slots. A later start with data files that describe other slots (one
//!   more, one fewer, or one changed) is **refused**, naming the first slot
//!   that differs: adding or rewriting slots under reservations already
//!   made would silently move patients' bookings, so the operator decides
//!   (old data files, or a new database file).
//! - **A file that cannot work is refused at start-up, saying why**: a
//!   path that is a directory, a directory that is missing or read-only
//!   (SQLite makes FILE-wal and FILE-shm beside the file), a read-only
//!   file (every booking would fail), a corrupt file (`PRAGMA quick_check`,
//!   and the free list read once: every `available` would fail).
//! - **Durability, together.** WAL journal, `synchronous=FULL`: a commit is
//!   on disk when it returns. Reservations go through [`super::commit`]:
//!   one writer connection on a committer thread takes every reservation
//!   waiting, runs each as `UPDATE slots SET holder=?1 ... WHERE idx=?2 AND
//!   holder IS NULL RETURNING doctor, port` in one `IMMEDIATE` transaction
//!   (SQLite's write lock makes it atomic across processes too), commits
//!   once, and only then answers each: one fsync for many bookings.
//! - **The file must stay the file.** After every commit the path is
//!   checked to still name the file this store holds (device and inode):
//!   a file deleted or replaced under a running center is noticed, and
//!   from then on every booking is refused ([`ErrorKind::Gone`]).
//! - **Reads never wait for a commit.** `available` is answered from a
//!   copy of the table in memory ([`Mirror`]), which takes every outcome
//!   the writer commits and hides slots whose reservation waits for its
//!   commit. What other processes commit is read back on a second
//!   connection (in WAL mode a reader never waits for the writer's
//!   fsync): when `PRAGMA data_version` changed (any other connection
//!   committed, this store's writer included), the lowest free slots are
//!   read into the copy. One session reads; the others list from the copy
//!   meanwhile rather than wait.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};

use super::commit::{Backend, Committer, Failure, Settle, Ticket};
use super::mirror::Mirror;
use super::{
    DEFAULT_TIMEOUT, ErrorKind, FreeList, Reservation, Store, StoreError, db_index,
    first_difference, mismatch,
};
use crate::data::Slot;

/// How long a write waits for another process holding the file's write
/// lock before it fails (at most the store's time limit).
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
CREATE TABLE IF NOT EXISTS medsim_opened (at TEXT NOT NULL);
";

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// The slot table in an SQLite file.
pub struct SqliteStore {
    committer: Committer,
    mirror: Arc<Mirror>,
    reader: Mutex<Reader>,
    file: Arc<FileIdentity>,
    path: PathBuf,
    label: String,
    read_limit: i64,
}

/// The second connection, and the `data_version` it last read the free
/// slots at.
struct Reader {
    conn: Connection,
    data_version: i64,
}

/// The file a store opened: the path, and the device and inode it named
/// then.
struct FileIdentity {
    path: PathBuf,
    dev: u64,
    ino: u64,
    gone: AtomicBool,
}

impl FileIdentity {
    /// Whether the path still names the file opened; once not, never again.
    fn still_there(&self) -> bool {
        if self.gone.load(Ordering::Relaxed) {
            return false;
        }
        let same =
            std::fs::metadata(&self.path).is_ok_and(|m| m.dev() == self.dev && m.ino() == self.ino);
        if !same {
            self.gone.store(true, Ordering::Relaxed);
        }
        same
    }

    fn gone_error(&self, label: &str) -> StoreError {
        StoreError::new(
            label.to_owned(),
            ErrorKind::Gone,
            format!(
                "the file {} was deleted or replaced while the center ran: nothing written \
                 now would be kept, so bookings are refused; restart the center",
                self.path.display()
            ),
        )
    }
}

/// Why a path cannot hold an SQLite store, when it plainly cannot: SQLite
/// itself says only "unable to open database file" for all of these.
fn path_problem(path: &Path) -> Option<String> {
    let shown = path.display();
    if path.is_dir() {
        return Some(format!("{shown} is a directory, not a database file"));
    }
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
        _ => PathBuf::from("."),
    };
    let dir_shown = dir.display();
    match std::fs::metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("the directory {dir_shown} does not exist"));
        }
        Err(e) => return Some(format!("the directory {dir_shown} cannot be read: {e}")),
        Ok(m) if !m.is_dir() => return Some(format!("{dir_shown} is not a directory")),
        Ok(_) => {}
    }
    if !writable(&dir) {
        return Some(format!(
            "the directory {dir_shown} is read-only: SQLite makes {shown}-wal and \
             {shown}-shm beside the file, so the store cannot work there"
        ));
    }
    if path.exists() && !writable(path) {
        return Some(format!(
            "the file {shown} is read-only: every booking would fail; make it writable \
             or use another file"
        ));
    }
    None
}

/// Whether this process may write `path` (permissions, a read-only mount,
/// an immutable file: what `access(2)` checks).
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: a valid NUL-terminated path; access(2) only reads it.
    unsafe { libc::access(c_path.as_ptr(), libc::W_OK) == 0 }
}

impl SqliteStore {
    /// Opens (or makes) the store at `path` for `slots`, listing at most
    /// `list_cap` free slots at a time.
    ///
    /// # Errors
    ///
    /// As [`SqliteStore::open_with`].
    pub fn open(path: &Path, slots: &[Slot], list_cap: usize) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, slots, list_cap, DEFAULT_TIMEOUT)
    }

    /// As [`SqliteStore::open`], a reservation waiting at most `timeout`
    /// for its commit.
    ///
    /// # Errors
    ///
    /// The file cannot be opened or made (saying why: a directory, a
    /// missing or read-only directory), is read-only or corrupt, WAL cannot
    /// be set, or the file holds other slots than `slots`.
    pub fn open_with(
        path: &Path,
        slots: &[Slot],
        list_cap: usize,
        timeout: Duration,
    ) -> Result<SqliteStore, StoreError> {
        let label = format!("sqlite store {}", path.display());
        let fail = |what: &str, e: rusqlite::Error| {
            StoreError::caused(label.clone(), ErrorKind::Unreachable, what, &e)
        };
        let unusable = |what: String| StoreError::new(label.clone(), ErrorKind::Unusable, what);
        if let Some(problem) = path_problem(path) {
            return Err(StoreError::new(
                label.clone(),
                ErrorKind::Unreachable,
                problem,
            ));
        }
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let mut conn = Connection::open_with_flags(path, flags)
            .map_err(|e| fail("cannot open the file", e))?;
        // SQLite falls back to reading when it may not write.
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(true) {
            return Err(unusable(format!(
                "the file {} can only be read: every booking would fail; make it writable \
                 or use another file",
                path.display()
            )));
        }
        conn.busy_timeout(BUSY_TIMEOUT.min(timeout))
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
        check_integrity(&conn).map_err(|why| {
            unusable(format!(
                "the file is corrupt ({why}): every listing or booking could fail; restore \
                 it from a backup or use a new file"
            ))
        })?;
        // Two processes starting together: the IMMEDIATE transaction lets
        // one make and fill the table while the other waits, then checks.
        // It always writes (medsim_opened), so a file that cannot take a
        // write is refused here rather than at the first booking.
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
        tx.execute_batch(&format!(
            "DELETE FROM medsim_opened; INSERT INTO medsim_opened (at) VALUES ({NOW});"
        ))
        .map_err(|e| {
            unusable(format!(
                "a test write failed ({e}): every booking would fail"
            ))
        })?;
        tx.commit().map_err(|e| {
            unusable(format!(
                "a test write failed ({e}): every booking would fail"
            ))
        })?;
        let meta = std::fs::metadata(path).map_err(|e| {
            StoreError::new(
                label.clone(),
                ErrorKind::Unreachable,
                format!("cannot read the file's metadata: {e}"),
            )
        })?;
        let file = Arc::new(FileIdentity {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
            gone: AtomicBool::new(false),
        });
        let reader = Connection::open_with_flags(path, flags)
            .map_err(|e| fail("cannot open a reading connection", e))?;
        reader
            .busy_timeout(BUSY_TIMEOUT.min(timeout))
            .map_err(|e| fail("cannot set the busy timeout", e))?;
        let read_limit = Mirror::read_limit(list_cap);
        let mirror = Arc::new(Mirror::new(slots, list_cap));
        let data_version =
            data_version(&reader).map_err(|e| fail("cannot read PRAGMA data_version", e))?;
        for (index, holder) in
            holders_of(&reader).map_err(|e| fail("cannot read the holders", e))?
        {
            mirror.book.set_holder(index, Some(&holder));
        }
        // The first listing, now: an index that cannot be read fails here.
        let free = read_free(&reader, read_limit).map_err(|e| {
            unusable(format!(
                "the free slots cannot be read ({e}): every `available` would fail; restore \
                 the file from a backup or use a new file"
            ))
        })?;
        mirror.sync(&free, 0, read_limit, 0);
        let writer = Writer {
            conn,
            file: Arc::clone(&file),
            label: label.clone(),
            mirror: Arc::clone(&mirror),
        };
        let committer = Committer::start(vec![writer], timeout, label.clone())?;
        Ok(SqliteStore {
            committer,
            mirror,
            reader: Mutex::new(Reader {
                conn: reader,
                data_version,
            }),
            file,
            path: path.to_owned(),
            label,
            read_limit,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn query_error(&self, what: &str, e: rusqlite::Error) -> StoreError {
        StoreError::caused(self.label.clone(), ErrorKind::Query, what, &e)
    }

    /// Reads the lowest free slots into the mirror when another process
    /// may have changed them. A session finding another one reading
    /// lists from the mirror as it is rather than wait.
    fn catch_up(&self) -> Result<(), StoreError> {
        let Some(mut reader) = self.reader.try_lock() else {
            return Ok(());
        };
        let fail = |e| self.query_error("cannot list the free slots", e);
        let version = data_version(&reader.conn).map_err(fail)?;
        if version == reader.data_version {
            return Ok(());
        }
        // Most often this store's own commit, which the mirror has: but
        // telling it from another process's would cost a write in every
        // commit, and this read costs less than that.
        let since = self.mirror.generation();
        let free = read_free(&reader.conn, self.read_limit).map_err(fail)?;
        self.mirror.sync(&free, 0, self.read_limit, since);
        reader.data_version = version;
        Ok(())
    }
}

fn data_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "data_version", |row| row.get(0))
}

/// `PRAGMA quick_check`: `Err` with its first findings unless the file is
/// whole.
fn check_integrity(conn: &Connection) -> Result<(), String> {
    let found: Vec<String> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get::<_, String>(0))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(|e| e.to_string())?;
    if found.len() == 1 && found[0] == "ok" {
        Ok(())
    } else {
        Err(format!("PRAGMA quick_check: {}", found.join("; ")))
    }
}

/// The committer's side: the one writing connection.
struct Writer {
    conn: Connection,
    file: Arc<FileIdentity>,
    label: String,
    mirror: Arc<Mirror>,
}

impl Writer {
    fn run_batch(&mut self, tickets: &[&Ticket]) -> rusqlite::Result<Vec<Reservation>> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut outcomes = Vec::with_capacity(tickets.len());
        {
            let mut book = tx.prepare_cached(&format!(
                "UPDATE slots SET holder = ?1, booked_at = {NOW} \
                 WHERE idx = ?2 AND holder IS NULL RETURNING doctor, port"
            ))?;
            let mut exists = tx.prepare_cached("SELECT 1 FROM slots WHERE idx = ?1")?;
            for ticket in tickets {
                let Some(index) = db_index(ticket.index) else {
                    outcomes.push(Reservation::NoSuchSlot);
                    continue;
                };
                let booked = book
                    .query_row(params![&*ticket.holder, index], |row| {
                        Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
                    })
                    .optional()?;
                outcomes.push(match booked {
                    Some((doctor, port)) => Reservation::Booked {
                        doctor: doctor.into(),
                        port: u16::try_from(port)
                            .map_err(|_| rusqlite::Error::IntegralValueOutOfRange(1, port))?,
                    },
                    None if exists.exists([index])? => Reservation::Taken,
                    None => Reservation::NoSuchSlot,
                });
            }
        }
        // Returns once the WAL is synced (synchronous=FULL): one fsync for
        // the whole batch.
        tx.commit()?;
        Ok(outcomes)
    }
}

impl Backend for Writer {
    fn commit(&mut self, tickets: &[&Ticket]) -> Result<Vec<Reservation>, Failure> {
        if !self.file.still_there() {
            return Err(Failure::NotRecorded(self.file.gone_error(&self.label)));
        }
        let outcomes = self.run_batch(tickets).map_err(|e| {
            // A failed transaction is rolled back whole.
            Failure::NotRecorded(StoreError::caused(
                self.label.clone(),
                ErrorKind::Query,
                "cannot commit the reservations",
                &e,
            ))
        })?;
        // Committed, but to a file nobody will open again: not kept.
        if !self.file.still_there() {
            return Err(Failure::NotRecorded(self.file.gone_error(&self.label)));
        }
        Ok(outcomes)
    }

    fn committed(&mut self, tickets: &[&Ticket], outcomes: &[Reservation]) {
        self.mirror.learn_outcomes(tickets, outcomes);
    }

    fn cancel(&mut self, index: u64, holder: &str) -> Result<bool, StoreError> {
        if !self.file.still_there() {
            return Err(self.file.gone_error(&self.label));
        }
        let Some(at) = db_index(index) else {
            return Ok(false);
        };
        let changed = self
            .conn
            .prepare_cached(
                "UPDATE slots SET holder = NULL, booked_at = NULL WHERE idx = ?1 AND holder = ?2",
            )
            .and_then(|mut stmt| stmt.execute(params![at, holder]))
            .map_err(|e| {
                StoreError::caused(
                    self.label.clone(),
                    ErrorKind::Query,
                    format!("cannot cancel slot {index}"),
                    &e,
                )
            })?;
        if changed > 0 {
            self.mirror.learn(index, None);
        }
        Ok(changed > 0)
    }

    fn settle(&mut self, settles: &[Settle]) -> Result<Vec<u64>, StoreError> {
        let mut freed = Vec::new();
        for s in settles {
            if self.cancel(s.index, &s.holder)? {
                freed.push(s.index);
            }
        }
        Ok(freed)
    }

    fn log(&self, line: &str) {
        eprintln!("{}: {line}", self.label);
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

/// The lowest free slots, at most `limit`, in index order.
fn read_free(conn: &Connection, limit: i64) -> rusqlite::Result<Vec<u64>> {
    let mut stmt =
        conn.prepare_cached("SELECT idx FROM slots WHERE holder IS NULL ORDER BY idx LIMIT ?1")?;
    let rows = stmt.query_map([limit], |row| {
        let index: i64 = row.get(0)?;
        u64::try_from(index).map_err(|_| rusqlite::Error::IntegralValueOutOfRange(0, index))
    })?;
    rows.collect()
}

impl Store for SqliteStore {
    fn reserve(&self, index: u64, holder: &str) -> Result<Reservation, StoreError> {
        self.mirror
            .reserve(index, || self.committer.reserve(index, holder))
    }

    fn cancel(&self, index: u64, holder: &str) -> Result<bool, StoreError> {
        self.committer.cancel(index, holder)
    }

    fn free_list(&self) -> Result<Arc<FreeList>, StoreError> {
        if !self.file.still_there() {
            return Err(self.file.gone_error(&self.label));
        }
        self.catch_up()?;
        Ok(self.mirror.book.free_list())
    }

    fn holders(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let reader = self.reader.lock();
        holders_of(&reader.conn).map_err(|e| self.query_error("cannot read the holders", e))
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

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .field("read_limit", &self.read_limit)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DEFAULT_LIST_CAP;

    fn slots() -> Vec<Slot> {
        crate::data::Fixtures::load(&crate::data::Source::built_in())
            .unwrap()
            .slots
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
