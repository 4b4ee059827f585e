//! The `postgres://` store: the slot table in a PostgreSQL database, shared
//! by several centers, each with its own pool of connections.
//!
//! This module owns the database's schema, its filling, reservations and
//! cancels as SQL, and bounded start-up.
//!
//! - **Schema.** `slots(idx BIGINT PRIMARY KEY, day, time, doctor, port,
//!   holder NULL, booked_at TIMESTAMPTZ NULL)` and a partial index on the
//!   free slots, in the connection's current schema (`public`, or the
//!   URL's `?options=-csearch_path%3DNAME`). Made when missing under a
//!   transaction-scoped advisory lock (two `CREATE TABLE IF NOT EXISTS`
//!   racing can otherwise fail on PostgreSQL's catalog), and filled with
//!   `INSERT ... ON CONFLICT DO NOTHING`, so centers starting together are
//!   safe. As for SQLite, a center whose data files describe other slots
//!   than the table holds is refused, naming the first slot that differs.
//! - **Reservation.** One `UPDATE slots SET holder=$1 ... WHERE idx=$2 AND
//!   holder IS NULL RETURNING doctor, port`, committed on its own. Each
//!   attempt writes a token of its own (`attempt`), so when the connection
//!   is lost with the outcome unknown the reservation is asked again on
//!   another connection and recognises its own write (`OR attempt = $3`)
//!   instead of calling its own booking taken. Under
//!   READ COMMITTED a second updater of the same row waits for the first
//!   to commit and then re-checks `holder IS NULL`, so exactly one wins
//!   across every center. When no row comes back a `SELECT` tells
//!   [`Reservation::Taken`] from [`Reservation::NoSuchSlot`].
//! - **No free-list cache.** Another center may book at any moment and
//!   invalidating a cache across centers needs LISTEN/NOTIFY and a
//!   listener thread; the listing is one indexed `SELECT ... LIMIT cap`
//!   instead. Measure before adding one.
//! - **Bounded start-up.** The first connection is made before the pool,
//!   with [`CONNECT_TIMEOUT`] per attempt and a watchdog on the whole
//!   hand-shake, so a server that accepts and never answers cannot hang a
//!   start; the error names the URL with its password masked.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use postgres::{Client, Config, NoTls};
use r2d2_postgres::PostgresConnectionManager;

use super::{
    ErrorKind, FreeList, Reservation, Store, StoreError, db_index, first_difference, mask_url,
    mismatch, render_free_list,
};
use crate::data::Slot;

/// How long one attempt to reach the server may take (when the URL sets no
/// `connect_timeout` of its own), and how long a session waits for a free
/// pooled connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections per store (per center). A reservation holds one for one
/// round trip; more sessions than this queue for a connection.
pub const POOL_SIZE: u32 = 16;

/// The key of the advisory lock that serialises schema set-up.
const SETUP_LOCK: i64 = 0x6d65_6473_696d; // "medsim"

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS slots (
    idx BIGINT PRIMARY KEY,
    day TEXT NOT NULL,
    time TEXT NOT NULL,
    doctor TEXT NOT NULL,
    port INTEGER NOT NULL,
    holder TEXT NULL,
    booked_at TIMESTAMPTZ NULL
);
ALTER TABLE slots ADD COLUMN IF NOT EXISTS attempt BIGINT NULL;
CREATE INDEX IF NOT EXISTS slots_free ON slots (idx) WHERE holder IS NULL;
";

/// A number for each reservation attempt, unique among this process's
/// attempts and (with the process id and the clock in it) across centers
/// in practice: a retried reservation recognises its own earlier write.
fn attempt_token() -> i64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = (u64::from(std::process::id()) << 40)
        ^ clock
        ^ NEXT
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    mixed as i64
}

/// How many slots one `INSERT` carries when filling the table.
const FILL_BATCH: usize = 10_000;

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

/// The slot table in a PostgreSQL database.
pub struct PostgresStore {
    pool: Pool,
    label: String,
    list_cap: i64,
}

impl PostgresStore {
    /// Connects to `url`, makes and fills the table when missing, checks it
    /// holds `slots`, and keeps a pool of [`POOL_SIZE`] connections.
    ///
    /// # Errors
    ///
    /// The URL does not parse, the server cannot be reached or refuses us
    /// (within a bounded time), the schema cannot be made, or the table
    /// holds other slots.
    pub fn open(url: &str, slots: &[Slot], list_cap: usize) -> Result<PostgresStore, StoreError> {
        let label = format!("postgres store {}", mask_url(url));
        let mut config = Config::from_str(url).map_err(|e| {
            StoreError::caused(label.clone(), ErrorKind::BadUrl, "not a PostgreSQL URL", &e)
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("medsim");
        let attempt = *config.get_connect_timeout().unwrap_or(&CONNECT_TIMEOUT);
        let mut client = connect_bounded(&config, attempt + CONNECT_TIMEOUT)
            .map_err(|what| StoreError::new(label.clone(), ErrorKind::Unreachable, what))?;
        set_up(&mut client, slots, &label)?;
        drop(client);
        let pool = r2d2::Pool::builder()
            .max_size(POOL_SIZE)
            .min_idle(Some(1))
            .connection_timeout(CONNECT_TIMEOUT)
            // No `SELECT` round trip before every use: a connection found
            // dead fails its one request (an `error` to that session,
            // nothing confirmed) and the pool then replaces it.
            .test_on_check_out(false)
            .build(PostgresConnectionManager::new(config, NoTls))
            .map_err(|e| {
                StoreError::caused(label.clone(), ErrorKind::Unreachable, "cannot connect", &e)
            })?;
        Ok(PostgresStore {
            pool,
            label,
            list_cap: i64::try_from(list_cap.max(1)).unwrap_or(i64::MAX),
        })
    }

    fn client(
        &self,
    ) -> Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>, StoreError> {
        self.pool.get().map_err(|e| {
            StoreError::caused(
                self.label.clone(),
                ErrorKind::Unreachable,
                "no database connection",
                &e,
            )
        })
    }

    fn query_error(&self, what: &str, e: &postgres::Error) -> StoreError {
        StoreError::caused(self.label.clone(), ErrorKind::Query, what, e)
    }

    /// Runs `op` on a pooled connection. When the connection is lost (the
    /// server closed it while it sat idle in the pool, restarted, or reset
    /// it), `op` is run again on another, up to once per pooled
    /// connection: a store that lost and regained its server serves the
    /// next session instead of failing one per stale connection. Every
    /// `op` here is safe to run twice (reads, a cancel, and a reservation
    /// that knows its own write). Any other failure is returned as it is.
    fn with_client<T>(
        &self,
        what: &str,
        mut op: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        let mut tries = 0;
        loop {
            tries += 1;
            let mut client = self.client()?;
            match op(&mut client) {
                Ok(value) => return Ok(value),
                Err(e) if connection_lost(&e) && tries <= POOL_SIZE => {}
                Err(e) => return Err(self.query_error(what, &e)),
            }
        }
    }
}

/// Whether `e` is the connection's end rather than the statement's
/// failure: closed, reset, or the server's FATAL for a backend terminated
/// or shut down.
fn connection_lost(e: &postgres::Error) -> bool {
    use postgres::error::SqlState;
    let io = std::error::Error::source(e).is_some_and(|cause| cause.is::<std::io::Error>());
    e.is_closed()
        || io
        || e.code().is_some_and(|code| {
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
        })
}

/// Connects on a helper thread and gives up after `limit`: the driver
/// bounds the socket connect, but not a server that accepts and then never
/// answers the start-up messages. The helper is left to finish on its own.
fn connect_bounded(config: &Config, limit: Duration) -> Result<Client, String> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let config = config.clone();
    std::thread::Builder::new()
        .name("postgres-connect".into())
        .spawn(move || {
            // The receiver may have given up; nothing to tell then.
            let _ = tx.send(config.connect(NoTls));
        })
        .map_err(|e| format!("cannot start connecting: {e}"))?;
    match rx.recv_timeout(limit) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(format!("cannot connect: {}", super::chain(&e))),
        Err(_) => Err(format!(
            "cannot connect: no answer from the server within {} s",
            limit.as_secs()
        )),
    }
}

fn set_up(client: &mut Client, slots: &[Slot], label: &str) -> Result<(), StoreError> {
    let fail = |what: &str, e: postgres::Error| {
        StoreError::caused(label.to_owned(), ErrorKind::Query, what, &e)
    };
    let mut tx = client
        .transaction()
        .map_err(|e| fail("cannot begin the set-up", e))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SETUP_LOCK])
        .map_err(|e| fail("cannot lock the set-up", e))?;
    tx.batch_execute(SCHEMA)
        .map_err(|e| fail("cannot make the schema", e))?;
    let mut inserted = 0;
    for batch in slots.chunks(FILL_BATCH) {
        let mut indexes = Vec::with_capacity(batch.len());
        for slot in batch {
            indexes.push(db_index(slot.index).ok_or_else(|| {
                StoreError::new(
                    label.to_owned(),
                    ErrorKind::Query,
                    format!("slot index {} is too large for the database", slot.index),
                )
            })?);
        }
        let days: Vec<&str> = batch.iter().map(|s| s.day.as_str()).collect();
        let times: Vec<&str> = batch.iter().map(|s| s.time.as_str()).collect();
        let doctors: Vec<&str> = batch.iter().map(|s| s.doctor.as_str()).collect();
        let ports: Vec<i32> = batch.iter().map(|s| i32::from(s.port)).collect();
        inserted += tx
            .execute(
                "INSERT INTO slots (idx, day, time, doctor, port) \
             SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::int[]) \
             ON CONFLICT (idx) DO NOTHING",
                &[&indexes, &days, &times, &doctors, &ports],
            )
            .map_err(|e| fail("cannot fill the slots", e))?;
    }
    if inserted > 0 {
        // Without statistics the planner guesses a handful of free rows
        // and sorts them all for the free list (4 ms at 20 000 slots,
        // against 0.2 ms walking the partial index).
        tx.batch_execute("ANALYZE slots")
            .map_err(|e| fail("cannot analyze the slots", e))?;
    }
    let rows = tx
        .query(
            "SELECT idx, day, time, doctor, port FROM slots ORDER BY idx",
            &[],
        )
        .map_err(|e| fail("cannot read the slots", e))?;
    let mut stored = Vec::with_capacity(rows.len());
    for row in &rows {
        stored.push(slot_of(row).map_err(|e| fail("cannot read the slots", e))?);
    }
    if let Some(difference) = first_difference(&stored, slots) {
        return Err(mismatch(label.to_owned(), difference));
    }
    tx.commit().map_err(|e| fail("cannot commit the set-up", e))
}

fn slot_of(row: &postgres::Row) -> Result<Slot, postgres::Error> {
    let index: i64 = row.try_get(0)?;
    let port: i32 = row.try_get(4)?;
    Ok(Slot {
        // Out-of-range values cannot match a data file's slot, so they
        // show up as a difference rather than a panic.
        index: u64::try_from(index).unwrap_or(u64::MAX),
        day: row.try_get(1)?,
        time: row.try_get(2)?,
        doctor: row.try_get(3)?,
        port: u16::try_from(port).unwrap_or(0),
    })
}

impl Store for PostgresStore {
    fn reserve(&self, index: u64, holder: &str) -> Result<Reservation, StoreError> {
        let Some(at) = db_index(index) else {
            return Ok(Reservation::NoSuchSlot);
        };
        let what = format!("cannot reserve slot {index}");
        // The conditional update is the whole check-and-set; the select
        // after it only tells a taken slot from one that does not exist.
        let attempt = attempt_token();
        let (booked, exists) = self.with_client(&what, |client| {
            let booked = client.query_opt(
                "UPDATE slots SET holder = $1, booked_at = now(), attempt = $3 \
                 WHERE idx = $2 AND (holder IS NULL OR attempt = $3) RETURNING doctor, port",
                &[&holder, &at, &attempt],
            )?;
            let booked = match booked {
                Some(row) => Some((row.try_get::<_, String>(0)?, row.try_get::<_, i32>(1)?)),
                None => None,
            };
            let exists = booked.is_some()
                || client
                    .query_opt("SELECT 1 FROM slots WHERE idx = $1", &[&at])?
                    .is_some();
            Ok((booked, exists))
        })?;
        if let Some((doctor, port)) = booked {
            let port = u16::try_from(port).map_err(|_| {
                StoreError::new(
                    self.label.clone(),
                    ErrorKind::Query,
                    format!("{what}: port {port} in the database is not a port"),
                )
            })?;
            return Ok(Reservation::Booked {
                doctor: doctor.into(),
                port,
            });
        }
        Ok(if exists {
            Reservation::Taken
        } else {
            Reservation::NoSuchSlot
        })
    }

    fn cancel(&self, index: u64, holder: &str) -> Result<bool, StoreError> {
        let Some(at) = db_index(index) else {
            return Ok(false);
        };
        let changed = self.with_client(&format!("cannot cancel slot {index}"), |client| {
            client.execute(
                "UPDATE slots SET holder = NULL, booked_at = NULL, attempt = NULL \
                 WHERE idx = $1 AND holder = $2",
                &[&at, &holder],
            )
        })?;
        Ok(changed > 0)
    }

    fn free_list(&self) -> Result<Arc<FreeList>, StoreError> {
        let what = "cannot list the free slots";
        let rows = self.with_client(what, |client| {
            client.query(
                "SELECT idx, day, time FROM slots WHERE holder IS NULL ORDER BY idx LIMIT $1",
                &[&self.list_cap],
            )
        })?;
        let mut free = Vec::with_capacity(rows.len());
        for row in &rows {
            let index: i64 = row.try_get(0).map_err(|e| self.query_error(what, &e))?;
            let day: String = row.try_get(1).map_err(|e| self.query_error(what, &e))?;
            let time: String = row.try_get(2).map_err(|e| self.query_error(what, &e))?;
            free.push((u64::try_from(index).unwrap_or(u64::MAX), day, time));
        }
        Ok(Arc::new(render_free_list(
            free.iter().map(|(i, d, t)| (*i, d.as_str(), t.as_str())),
        )))
    }

    fn holders(&self) -> Result<Vec<(u64, String)>, StoreError> {
        let what = "cannot read the holders";
        let rows = self.with_client(what, |client| {
            client.query(
                "SELECT idx, holder FROM slots WHERE holder IS NOT NULL ORDER BY idx",
                &[],
            )
        })?;
        let mut holders = Vec::with_capacity(rows.len());
        for row in &rows {
            let index: i64 = row.try_get(0).map_err(|e| self.query_error(what, &e))?;
            let holder: String = row.try_get(1).map_err(|e| self.query_error(what, &e))?;
            holders.push((u64::try_from(index).unwrap_or(u64::MAX), holder));
        }
        Ok(holders)
    }

    fn describe(&self) -> String {
        self.label.clone()
    }
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("store", &self.label)
            .finish_non_exhaustive()
    }
}

/// `url` naming database `name` instead of its own.
pub fn with_database(url: &str, name: &str) -> String {
    let (head, query) = match url.find('?') {
        Some(at) => url.split_at(at),
        None => (url, ""),
    };
    let authority_start = head.find("://").map_or(0, |at| at + 3);
    let host_end = head[authority_start..]
        .find('/')
        .map_or(head.len(), |at| authority_start + at);
    format!("{}/{name}{query}", &head[..host_end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_database_replaces_only_the_database() {
        assert_eq!(
            with_database("postgres://u@127.0.0.1:5/postgres", "x"),
            "postgres://u@127.0.0.1:5/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:5?sslmode=disable", "x"),
            "postgres://u:p@h:5/x?sslmode=disable"
        );
    }
}
