//! The `postgres://` store: the slot table in a PostgreSQL database, shared
//! by several centers.
//!
//! This module owns opening the store, the refresher, and bounded start-up
//! and statements; the schema and its filling are [`schema`]'s, the
//! committers' SQL (reservations, cancels, settles) [`writer`]'s, a
//! connection made again after it is lost [`link`]'s.
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
//!   refresher thread reads the free slots it lists from the database
//!   every [`REFRESH`] for what other centers did. A listing may so show,
//!   for a moment, a slot another center just took: that is the race every
//!   listing has, and the grant is the database's to decide.
//! - **Centers list their own parts.** With more slots free than a
//!   listing shows, centers on one database list from different points of
//!   the table ([`spread`]), so their patients are not offered the same few
//!   slots; a center alone lists the lowest.
//! - **Bounded start-up.** The first connection is made with
//!   [`CONNECT_TIMEOUT`] per attempt and a watchdog on the whole
//!   hand-shake, so a server that accepts and never answers cannot hang a
//!   start; the error names the URL with its password masked.

mod link;
mod schema;
mod spread;
mod writer;

use link::Link;
use schema::{read_held, set_up};
use writer::Writer;

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use postgres::Config;

use super::commit::Committer;
use super::mirror::{Mirror, REFRESH};
use super::{
    DEFAULT_TIMEOUT, ErrorKind, FreeList, Reservation, Store, StoreError, db_index, mask_url,
};
use crate::data::Slot;

/// How long one attempt to reach the server may take (when the URL sets no
/// `connect_timeout` of its own).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Committer threads per store (per center), each with its connection:
/// while one waits for its commit, the next batch gathers on the other.
pub const COMMITTERS: usize = 2;

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
        let mut refresher = Refresher {
            link: Link::new(&config, &label),
            mirror: Arc::clone(&mirror),
            limit: Mirror::read_limit(list_cap),
            failing: false,
            part: (spread::Share::ALONE, 0),
        };
        // The center's place among those on the database is taken before
        // it serves, so its first listings are already its own part.
        refresher.refresh()?;
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

/// Brings the copy in memory up to date with the free slots this center
/// lists, every [`REFRESH`], until the store is dropped, and keeps the
/// center's place among the centers on the database ([`spread`]).
struct Refresher {
    link: Link,
    mirror: Arc<Mirror>,
    limit: i64,
    failing: bool,
    /// This center's share of the table and the slot its listing starts
    /// at ([`spread`]).
    part: (spread::Share, u64),
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
        let (mirror, part) = (&self.mirror, &mut self.part);
        let (from, free) = self.link.run("cannot read the free slots", |client| {
            let share = spread::share(client)?;
            if part.0 != share {
                // Found by walking the table: only when the share changes.
                *part = (
                    share,
                    mirror.book.index_at(share.rank, share.of).unwrap_or(0),
                );
            }
            let from = part.1;
            let from_at = db_index(from).unwrap_or(i64::MAX);
            let rows = client.query(schema::FREE_WINDOW, &[&from_at, &limit])?;
            Ok((from, schema::indexes(&rows)?))
        })?;
        // The copy learns the new part of the table before it lists it.
        self.mirror.sync(&free, from, limit, since);
        self.mirror.book.set_list_from(from);
        Ok(())
    }
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
