//! The `postgres://` store: the slot table in a PostgreSQL database, shared
//! by several centers.
//!
//! This module owns the database's schema, its filling, reservations and
//! cancels as SQL, the in-memory copy of the table that answers
//! `available`, and bounded start-up and statements.
//!
//! - **Schema.** `slots(idx BIGINT PRIMARY KEY, day, time, doctor, port,
//!   holder NULL, booked_at TIMESTAMPTZ NULL, attempt BIGINT NULL)`, a
//!   partial index on the free slots and the function `medsim_reserve`, in
//!   the connection's current schema (`public`, or the URL's
//!   `?options=-csearch_path%3DNAME`). Made when missing under a
//!   transaction-scoped advisory lock (two `CREATE TABLE IF NOT EXISTS`
//!   racing can otherwise fail on PostgreSQL's catalog), and filled with
//!   `INSERT ... ON CONFLICT DO NOTHING`, so centers starting together are
//!   safe. As for SQLite, a center whose data files describe other slots
//!   than the table holds is refused, naming the first slot that differs.
//! - **Reservations, together.** Through [`super::commit`]: each of
//!   [`COMMITTERS`] committer threads, on a connection of its own, takes
//!   every reservation waiting and sends them as one statement,
//!   `SELECT * FROM medsim_reserve(indexes, holders, attempts)`, committed
//!   on its own: one round trip and one commit (one WAL flush) for the
//!   batch. The function runs, in index order, `UPDATE slots SET
//!   holder=... WHERE idx=... AND (holder IS NULL OR attempt=...)`: under
//!   READ COMMITTED a second updater of a row waits for the first to
//!   commit and then re-checks `holder IS NULL`, so exactly one wins across
//!   every center, and centers lock rows in one order, so two batches never
//!   deadlock. At concurrency 1 a booking is that one round trip and one
//!   commit.
//! - **Outcomes are never guessed.** Each reservation writes a token of its
//!   own (`attempt`). When the connection is lost with the outcome unknown
//!   (the server stopped, restarted, reset it), the batch is sent again on
//!   a new connection until the server answers, and the function
//!   recognises a reservation's own earlier write by its token: a row that
//!   committed is a grant, never "not recorded". A session that stops
//!   waiting first (the store's time limit) is told "not confirmed", and
//!   its booking, if it committed, is cancelled by its token and logged.
//! - **Bounded statements.** `statement_timeout` is set on every
//!   connection (to the store's time limit, unless the URL's `options` set
//!   one), and a session waits for its outcome at most that limit on this
//!   side too: a server that is stopped (SIGSTOP) cannot enforce its own.
//! - **Reads from memory.** `available` is answered from a copy of the
//!   table in this process ([`Mirror`]): it never waits for a commit or a
//!   round trip, and a stalled server cannot hang it. The copy takes every
//!   outcome this center's commits learn (a grant, a slot found taken),
//!   hides slots whose reservation is on its way to a commit, and a
//!   refresher thread reads the lowest free slots from the database every
//!   [`REFRESH`] for what other centers did. A listing may so show, for a
//!   moment, a slot another center just took: that is the race every
//!   listing has, and the grant is the database's to decide.
//! - **Bounded start-up.** The first connection is made with
//!   [`CONNECT_TIMEOUT`] per attempt and a watchdog on the whole
//!   hand-shake, so a server that accepts and never answers cannot hang a
//!   start; the error names the URL with its password masked.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use postgres::{Client, Config, NoTls, Statement};

use super::commit::{Backend, Committer, Failure, Settle, Ticket};
use super::mirror::{Mirror, REFRESH};
use super::{
    DEFAULT_TIMEOUT, ErrorKind, FreeList, Reservation, Store, StoreError, db_index,
    first_difference, mask_url, mismatch,
};
use crate::data::Slot;

/// How long one attempt to reach the server may take (when the URL sets no
/// `connect_timeout` of its own).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Committer threads per store (per center), each with its connection:
/// while one waits for its commit, the next batch gathers on the other.
pub const COMMITTERS: usize = 2;

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

/// One batch of reservations as one statement: in index order (so
/// batches of several centers lock rows in one order), each an atomic
/// check-and-set that also recognises its own earlier write by its
/// attempt token. Outcome 0: booked, 1: taken, 2: no such slot; `k` is the
/// reservation's place in the arrays, from 1. Then, as rows with `k` 0,
/// the lowest `free_limit` free slots after the batch: the center's copy
/// in memory learns what other centers did at every commit, for free.
const RESERVE_FUNCTION: &str = "
CREATE OR REPLACE FUNCTION medsim_reserve(want_idx bigint[], want_holder text[], want_attempt bigint[], free_limit integer)
RETURNS TABLE (k integer, outcome integer, slot_doctor text, slot_port integer, free_idx bigint)
LANGUAGE plpgsql AS $fn$
DECLARE
    i integer;
BEGIN
    free_idx := NULL;
    FOR i IN SELECT w.o::integer FROM unnest(want_idx) WITH ORDINALITY AS w(x, o) ORDER BY w.x, w.o LOOP
        k := i;
        UPDATE slots SET holder = want_holder[i], booked_at = now(), attempt = want_attempt[i]
            WHERE idx = want_idx[i] AND (holder IS NULL OR attempt = want_attempt[i])
            RETURNING doctor, port INTO slot_doctor, slot_port;
        IF FOUND THEN
            outcome := 0;
        ELSE
            slot_doctor := NULL;
            slot_port := NULL;
            outcome := CASE WHEN EXISTS (SELECT 1 FROM slots WHERE idx = want_idx[i]) THEN 1 ELSE 2 END;
        END IF;
        RETURN NEXT;
    END LOOP;
    RETURN QUERY SELECT 0, 0, NULL::text, NULL::integer, s.idx
        FROM slots s WHERE s.holder IS NULL ORDER BY s.idx LIMIT free_limit;
END
$fn$;
";

/// How many slots one `INSERT` carries when filling the table.
const FILL_BATCH: usize = 10_000;

/// The slot table in a PostgreSQL database.
pub struct PostgresStore {
    committer: Committer,
    mirror: Arc<Mirror>,
    reader: Mutex<Link>,
    label: String,
    /// Dropped with the store: the refresher stops...
    stop_refresh: Option<crossbeam_channel::Sender<()>>,
    /// ...and this is disconnected once it has.
    refresher_ended: crossbeam_channel::Receiver<()>,
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        // The refresher lets go of its connection before the store is gone
        // (and its database, perhaps, dropped); one stuck on a stalled
        // server is left behind rather than waited for.
        self.stop_refresh = None;
        let _ = self.refresher_ended.recv_timeout(Duration::from_secs(2));
    }
}

/// A connection made on demand and again after it is lost.
struct Link {
    config: Config,
    client: Option<Client>,
    label: String,
}

impl Link {
    fn new(config: &Config, label: &str) -> Link {
        Link {
            config: config.clone(),
            client: None,
            label: label.to_owned(),
        }
    }

    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            let attempt = *self
                .config
                .get_connect_timeout()
                .unwrap_or(&CONNECT_TIMEOUT);
            let client =
                connect_bounded(&self.config, attempt + CONNECT_TIMEOUT).map_err(|what| {
                    StoreError::new(self.label.clone(), ErrorKind::Unreachable, what)
                })?;
            self.client = Some(client);
        }
        self.client.as_mut().ok_or_else(|| {
            StoreError::new(self.label.clone(), ErrorKind::Unreachable, "no connection")
        })
    }

    /// Runs `op`, once more on a new connection if the first one had been
    /// lost (the server restarted since): every `op` here is a read or
    /// safe to run twice.
    fn run<T>(
        &mut self,
        what: &str,
        mut op: impl FnMut(&mut Client) -> Result<T, postgres::Error>,
    ) -> Result<T, StoreError> {
        for tries in 1.. {
            let client = self.client()?;
            match op(client) {
                Ok(value) => return Ok(value),
                Err(e) => {
                    let lost = connection_lost(&e);
                    if lost {
                        self.client = None;
                    }
                    if !lost || tries >= 2 {
                        return Err(StoreError::caused(
                            self.label.clone(),
                            ErrorKind::Query,
                            what,
                            &e,
                        ));
                    }
                }
            }
        }
        unreachable!("the loop returns")
    }
}

impl PostgresStore {
    /// Connects to `url`, makes and fills the table when missing, and
    /// checks it holds `slots`.
    ///
    /// # Errors
    ///
    /// As [`PostgresStore::open_with`].
    pub fn open(url: &str, slots: &[Slot], list_cap: usize) -> Result<PostgresStore, StoreError> {
        PostgresStore::open_with(url, slots, list_cap, DEFAULT_TIMEOUT)
    }

    /// As [`PostgresStore::open`], a reservation waiting at most `timeout`
    /// for its outcome, and `statement_timeout` set to it unless the URL's
    /// `options` set one.
    ///
    /// # Errors
    ///
    /// The URL does not parse, the server cannot be reached or refuses us
    /// (within a bounded time), the schema cannot be made, or the table
    /// holds other slots.
    pub fn open_with(
        url: &str,
        slots: &[Slot],
        list_cap: usize,
        timeout: Duration,
    ) -> Result<PostgresStore, StoreError> {
        let label = format!("postgres store {}", mask_url(url));
        let mut config = Config::from_str(url).map_err(|e| {
            StoreError::caused(label.clone(), ErrorKind::BadUrl, "not a PostgreSQL URL", &e)
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("medsim");
        let options = config.get_options().unwrap_or("").to_owned();
        if !options.contains("statement_timeout") {
            let limit = format!("-c statement_timeout={}", timeout.as_millis().max(1));
            config.options(format!("{options} {limit}").trim());
        }
        let mut link = Link::new(&config, &label);
        let client = link.client()?;
        set_up(client, slots, &label)?;
        let mirror = Arc::new(Mirror::new(slots, list_cap));
        let held = read_held(client).map_err(|e| {
            StoreError::caused(
                label.clone(),
                ErrorKind::Query,
                "cannot read the holders",
                &e,
            )
        })?;
        for (index, holder) in &held {
            mirror.book.set_holder(*index, Some(holder));
        }
        let writers = (0..COMMITTERS)
            .map(|_| Writer {
                link: Link::new(&config, &label),
                reserve: None,
                mirror: Arc::clone(&mirror),
                free_limit: i32::try_from(Mirror::read_limit(list_cap)).unwrap_or(i32::MAX),
            })
            .collect();
        let committer = Committer::start(writers, timeout, label.clone())?;
        let (stop_refresh, stopped) = crossbeam_channel::bounded(0);
        let (refresher_ending, refresher_ended) = crossbeam_channel::bounded::<()>(0);
        let refresher = Refresher {
            link: Link::new(&config, &label),
            mirror: Arc::clone(&mirror),
            limit: Mirror::read_limit(list_cap),
            failing: false,
        };
        std::thread::Builder::new()
            .name("store-refresh".into())
            .spawn(move || {
                refresher.run(&stopped);
                drop(refresher_ending);
            })
            .map_err(|e| {
                StoreError::new(
                    label.clone(),
                    ErrorKind::Unreachable,
                    format!("cannot start the refresher: {e}"),
                )
            })?;
        Ok(PostgresStore {
            committer,
            mirror,
            reader: Mutex::new(link),
            label,
            stop_refresh: Some(stop_refresh),
            refresher_ended,
        })
    }
}

/// Every held slot and its holder, in index order.
fn read_held(client: &mut Client) -> Result<Vec<(u64, String)>, postgres::Error> {
    let rows = client.query(
        "SELECT idx, holder FROM slots WHERE holder IS NOT NULL ORDER BY idx",
        &[],
    )?;
    let mut held = Vec::with_capacity(rows.len());
    for row in &rows {
        let index: i64 = row.try_get(0)?;
        let holder: String = row.try_get(1)?;
        held.push((u64::try_from(index).unwrap_or(u64::MAX), holder));
    }
    Ok(held)
}

/// Brings the copy in memory up to date with the database's lowest free
/// slots, every [`REFRESH`], until the store is dropped.
struct Refresher {
    link: Link,
    mirror: Arc<Mirror>,
    limit: i64,
    failing: bool,
}

impl Refresher {
    fn run(mut self, stopped: &crossbeam_channel::Receiver<()>) {
        while let Err(crossbeam_channel::RecvTimeoutError::Timeout) = stopped.recv_timeout(REFRESH)
        {
            match self.refresh() {
                Ok(()) => self.failing = false,
                Err(e) => {
                    // Once per outage, not every round.
                    if !self.failing {
                        eprintln!(
                            "{}: refreshing the free slots: {}",
                            self.link.label,
                            e.reason()
                        );
                    }
                    self.failing = true;
                }
            }
        }
    }

    fn refresh(&mut self) -> Result<(), StoreError> {
        let since = self.mirror.generation();
        let limit = self.limit;
        let free: Vec<u64> = self.link.run("cannot read the free slots", |client| {
            let rows = client.query(
                "SELECT idx FROM slots WHERE holder IS NULL ORDER BY idx LIMIT $1",
                &[&limit],
            )?;
            rows.iter()
                .map(|row| {
                    row.try_get::<_, i64>(0)
                        .map(|i| u64::try_from(i).unwrap_or(u64::MAX))
                })
                .collect()
        })?;
        self.mirror.sync(&free, limit, since);
        Ok(())
    }
}

/// A committer's side: its connection and prepared statement.
struct Writer {
    link: Link,
    reserve: Option<Statement>,
    mirror: Arc<Mirror>,
    free_limit: i32,
}

impl Writer {
    fn error(&self, what: &str, e: &postgres::Error) -> StoreError {
        StoreError::caused(self.link.label.clone(), ErrorKind::Query, what, e)
    }

    fn lost(&mut self) {
        self.link.client = None;
        self.reserve = None;
    }
}

impl Backend for Writer {
    fn commit(&mut self, tickets: &[&Ticket]) -> Result<Vec<Reservation>, Failure> {
        let mut indexes = Vec::with_capacity(tickets.len());
        let mut holders = Vec::with_capacity(tickets.len());
        let mut attempts = Vec::with_capacity(tickets.len());
        // An index too large for the database names no slot.
        let mut outcomes = vec![Reservation::NoSuchSlot; tickets.len()];
        let mut places = Vec::with_capacity(tickets.len());
        for (place, ticket) in tickets.iter().enumerate() {
            if let Some(at) = db_index(ticket.index) {
                indexes.push(at);
                holders.push(&*ticket.holder);
                attempts.push(ticket.attempt);
                places.push(place);
            }
        }
        if indexes.is_empty() {
            return Ok(outcomes);
        }
        // Not reached: nothing was sent.
        let client = self.link.client().map_err(Failure::NotRecorded)?;
        if self.reserve.is_none() {
            let stmt = client.prepare(
                "SELECT k, outcome, slot_doctor, slot_port, free_idx \
                 FROM medsim_reserve($1, $2, $3, $4)",
            );
            match stmt {
                Ok(stmt) => self.reserve = Some(stmt),
                Err(e) => {
                    let error = self.error("cannot prepare the reservation", &e);
                    if connection_lost(&e) {
                        self.lost();
                    }
                    return Err(Failure::NotRecorded(error));
                }
            }
        }
        let (Some(stmt), Some(client)) = (&self.reserve, self.link.client.as_mut()) else {
            return Err(Failure::NotRecorded(StoreError::new(
                self.link.label.clone(),
                ErrorKind::Unreachable,
                "no connection",
            )));
        };
        let since = self.mirror.generation();
        let rows = match client.query(stmt, &[&indexes, &holders, &attempts, &self.free_limit]) {
            Ok(rows) => rows,
            Err(e) => {
                let error = self.error("cannot commit the reservations", &e);
                // The server answered with the statement's own error: it
                // was rolled back. Anything else leaves the outcome open.
                return Err(if e.code().is_some() && !connection_lost(&e) {
                    Failure::NotRecorded(error)
                } else {
                    self.lost();
                    Failure::Unknown(error)
                });
            }
        };
        let mut free = Vec::new();
        for row in &rows {
            if let Ok(0) = row.try_get::<_, i32>(0) {
                if let Ok(Some(index)) = row.try_get::<_, Option<i64>>(4) {
                    free.push(u64::try_from(index).unwrap_or(u64::MAX));
                }
                continue;
            }
            let decoded = (|| -> Result<(usize, Reservation), postgres::Error> {
                let k: i32 = row.try_get(0)?;
                let outcome: i32 = row.try_get(1)?;
                let place = usize::try_from(k - 1).unwrap_or(usize::MAX);
                let reservation = match outcome {
                    0 => {
                        let doctor: String = row.try_get(2)?;
                        let port: i32 = row.try_get(3)?;
                        match u16::try_from(port) {
                            Ok(port) => Reservation::Booked {
                                doctor: doctor.into(),
                                port,
                            },
                            // A slot whose port is not a port cannot be
                            // booked: it is left to be taken by no one.
                            Err(_) => Reservation::NoSuchSlot,
                        }
                    }
                    1 => Reservation::Taken,
                    _ => Reservation::NoSuchSlot,
                };
                Ok((place, reservation))
            })();
            match decoded {
                Ok((place, reservation)) => {
                    if let Some(&at) = places.get(place) {
                        outcomes[at] = reservation;
                    }
                }
                Err(e) => {
                    return Err(Failure::Unknown(
                        self.error("cannot read the reservations' outcomes", &e),
                    ));
                }
            }
        }
        self.mirror.sync(&free, i64::from(self.free_limit), since);
        Ok(outcomes)
    }

    fn committed(&mut self, tickets: &[&Ticket], outcomes: &[Reservation]) {
        for (ticket, outcome) in tickets.iter().zip(outcomes) {
            match outcome {
                Reservation::Booked { .. } => self.mirror.learn(ticket.index, Some(&ticket.holder)),
                // Someone holds it: who is the database's to say.
                Reservation::Taken => self.mirror.learn(ticket.index, Some("")),
                Reservation::NoSuchSlot => {}
            }
        }
    }

    fn cancel(&mut self, index: u64, holder: &str) -> Result<bool, StoreError> {
        let Some(at) = db_index(index) else {
            return Ok(false);
        };
        let changed = self
            .link
            .run(&format!("cannot cancel slot {index}"), |client| {
                client.execute(
                    "UPDATE slots SET holder = NULL, booked_at = NULL, attempt = NULL \
                 WHERE idx = $1 AND holder = $2",
                    &[&at, &holder],
                )
            })?;
        if changed > 0 {
            self.mirror.learn(index, None);
        }
        Ok(changed > 0)
    }

    fn settle(&mut self, settles: &[Settle]) -> Result<Vec<u64>, StoreError> {
        let attempts: Vec<i64> = settles.iter().map(|s| s.attempt).collect();
        let freed: Vec<u64> = self
            .link
            .run("cannot cancel unconfirmed bookings", |client| {
                let rows = client.query(
                    "UPDATE slots SET holder = NULL, booked_at = NULL, attempt = NULL \
                 WHERE attempt = ANY($1) RETURNING idx",
                    &[&attempts],
                )?;
                rows.iter()
                    .map(|row| {
                        row.try_get::<_, i64>(0)
                            .map(|i| u64::try_from(i).unwrap_or(u64::MAX))
                    })
                    .collect()
            })?;
        for &index in &freed {
            self.mirror.learn(index, None);
        }
        Ok(freed)
    }

    fn log(&self, line: &str) {
        eprintln!("{}: {line}", self.link.label);
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
    tx.batch_execute(RESERVE_FUNCTION)
        .map_err(|e| fail("cannot make the reservation function", e))?;
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
        self.mirror
            .reserve(index, || self.committer.reserve(index, holder))
    }

    fn cancel(&self, index: u64, holder: &str) -> Result<bool, StoreError> {
        self.committer.cancel(index, holder)
    }

    fn free_list(&self) -> Result<Arc<FreeList>, StoreError> {
        Ok(self.mirror.book.free_list())
    }

    fn holders(&self) -> Result<Vec<(u64, String)>, StoreError> {
        self.reader.lock().run("cannot read the holders", read_held)
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
