//! Where reservations live: the slot table behind a [`Store`], in memory, in
//! an SQLite file, or in a PostgreSQL database shared by several centers.
//!
//! This module owns the [`Store`] trait (what a center needs from a slot
//! table), [`StoreUrl`] (the `--store` text: `memory`, `sqlite:FILE`,
//! `postgres://...`), [`open`] and [`StoreError`]. Each backend is its own
//! module: [`memory`] (today's [`SlotBook`], no extra cost), [`sqlite`]
//! (one file, durable, shared by processes on one machine) and
//! [`postgres`] (one database, many centers); the two on disk share
//! [`commit`], which makes concurrent reservations durable together (group
//! commit), and [`mirror`], the copy in memory that answers `available`. Sockets, sessions and the
//! CLI stay with the center.
//!
//! Every backend keeps PROTOCOL.md's promise: a reservation is one atomic
//! check-and-set, so however many sessions (or centers) race for a slot,
//! exactly one gets [`Reservation::Booked`]. Losing a race is an outcome;
//! [`StoreError`] is for a store that cannot answer (disk, network,
//! corrupt or foreign data), and a center should answer the session with
//! an `error` and log it, never confirm a reservation it could not store;
//! [`StoreError::for_patient`] is what the patient may be told, and it is
//! true: "not recorded" only when nothing was, "not confirmed" when the
//! outcome was lost (and the booking is then cancelled if it committed).

pub mod commit;
pub mod memory;
pub mod mirror;
pub mod postgres;
pub mod sqlite;

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::data::Slot;
pub use crate::protocol::FreeList;
#[allow(unused_imports)] // for the doc links
use memory::SlotBook;

/// The default of `--list-cap`: how many free slots one `available` answer
/// lists at most.
pub const DEFAULT_LIST_CAP: usize = 50;

/// What became of a reservation request. Losing a race is an outcome, not
/// an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// The slot is now the caller's; tell the patient this doctor and port.
    Booked { doctor: Arc<str>, port: u16 },
    /// Someone reserved it first.
    Taken,
    /// No slot has that index.
    NoSuchSlot,
}

/// A center's slot table, wherever it is kept. Shared by every session
/// thread (`Arc<dyn Store>`); each method is one self-contained operation.
pub trait Store: Send + Sync {
    /// Reserves slot `index` to `holder` if it is free: one atomic
    /// check-and-set, durable (for the stores on disk) before it returns.
    ///
    /// # Errors
    ///
    /// The store could not answer; nothing was reserved.
    fn reserve(&self, index: u64, holder: &str) -> Result<Reservation, StoreError>;

    /// Frees slot `index` if `holder` holds it (a reservation whose answer
    /// never reached the patient). Returns whether it was freed.
    ///
    /// # Errors
    ///
    /// The store could not answer; the slot stays as it was.
    fn cancel(&self, index: u64, holder: &str) -> Result<bool, StoreError>;

    /// The free slots to send for `available`, rendered for both dialects
    /// exactly as [`SlotBook::free_list`] renders them.
    ///
    /// # Errors
    ///
    /// The store could not answer.
    fn free_list(&self) -> Result<Arc<FreeList>, StoreError>;

    /// Every reserved slot and its holder, in index order.
    ///
    /// # Errors
    ///
    /// The store could not answer.
    fn holders(&self) -> Result<Vec<(u64, String)>, StoreError>;

    /// One line for logs: the kind of store and where it is (passwords
    /// masked), e.g. `sqlite store /var/lib/medsim/slots.db`.
    fn describe(&self) -> String;
}

/// Where the slot table is kept, as given to `--store`.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `memory`: a [`SlotBook`] in this process; gone at exit.
    Memory,
    /// `sqlite:FILE` or `sqlite://FILE`: one SQLite file, made when missing.
    Sqlite(PathBuf),
    /// `postgres://...` or `postgresql://...`, kept as given (the password
    /// is masked whenever it is shown).
    Postgres(String),
}

impl StoreUrl {
    /// Parses the `--store` text.
    ///
    /// # Errors
    ///
    /// Anything but `memory`, `sqlite:FILE`, `sqlite://FILE`,
    /// `postgres://...`, `postgresql://...`, or an empty file name.
    pub fn parse(text: &str) -> Result<StoreUrl, StoreError> {
        let text = text.trim();
        if text == "memory" {
            return Ok(StoreUrl::Memory);
        }
        if let Some(rest) = text.strip_prefix("sqlite:") {
            let file = rest.strip_prefix("//").unwrap_or(rest);
            if file.is_empty() {
                return Err(StoreError::new(
                    mask_url(text),
                    ErrorKind::BadUrl,
                    "no file name: use sqlite:FILE",
                ));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(file)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            return Ok(StoreUrl::Postgres(text.to_owned()));
        }
        Err(StoreError::new(
            mask_url(text),
            ErrorKind::BadUrl,
            "not a store: use memory, sqlite:FILE or postgres://USER@HOST/DB",
        ))
    }

    /// The text to show: as given, with any password masked.
    pub fn masked(&self) -> String {
        match self {
            StoreUrl::Memory => "memory".to_owned(),
            StoreUrl::Sqlite(path) => format!("sqlite:{}", path.display()),
            StoreUrl::Postgres(url) => mask_url(url),
        }
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StoreUrl({})", self.masked())
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = StoreError;
    fn from_str(text: &str) -> Result<StoreUrl, StoreError> {
        StoreUrl::parse(text)
    }
}

/// Opens the store at `url` holding `slots` (the data files'
/// availabilities), listing at most `list_cap` free slots at a time.
///
/// A store on disk is made when missing and filled with `slots`; an
/// existing one must hold exactly these slots (see [`sqlite`]).
///
/// # Errors
///
/// The store cannot be reached or made, or it holds other slots.
pub fn open(url: &StoreUrl, slots: &[Slot], list_cap: usize) -> Result<Arc<dyn Store>, StoreError> {
    open_with(url, slots, list_cap, DEFAULT_TIMEOUT)
}

/// The default of `--store-timeout`: how long a reservation waits for its
/// outcome (a commit, a statement, reconnecting to a restarted server).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// As [`open`], a reservation waiting at most `timeout` for its outcome
/// (and PostgreSQL's `statement_timeout` set to it unless the URL sets
/// one).
///
/// # Errors
///
/// As [`open`].
pub fn open_with(
    url: &StoreUrl,
    slots: &[Slot],
    list_cap: usize,
    timeout: Duration,
) -> Result<Arc<dyn Store>, StoreError> {
    Ok(match url {
        StoreUrl::Memory => Arc::new(memory::MemoryStore::new(slots, list_cap)),
        StoreUrl::Sqlite(path) => Arc::new(sqlite::SqliteStore::open_with(
            path, slots, list_cap, timeout,
        )?),
        StoreUrl::Postgres(url) => Arc::new(postgres::PostgresStore::open_with(
            url, slots, list_cap, timeout,
        )?),
    })
}

/// What kind of failure a [`StoreError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The `--store` text is not a store.
    BadUrl,
    /// The store could not be opened or reached.
    Unreachable,
    /// The store holds other slots than the data files describe.
    Mismatch,
    /// A query or a write failed; nothing was recorded.
    Query,
    /// A reservation's outcome was not known in time: it is not
    /// confirmed, and it is cancelled if it committed.
    Unconfirmed,
    /// The store's file is no longer the one at its path (deleted or
    /// replaced): nothing written now would be kept.
    Gone,
    /// The store cannot work and is refused at start-up (corrupt,
    /// read-only).
    Unusable,
}

/// A store that could not answer: which store (password masked), what it
/// was doing, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError {
    store: String,
    kind: ErrorKind,
    what: String,
    cause: Option<String>,
}

impl StoreError {
    /// An error of `store` (already masked) doing or finding `what`.
    pub(crate) fn new(store: String, kind: ErrorKind, what: impl Into<String>) -> StoreError {
        StoreError {
            store,
            kind,
            what: what.into(),
            cause: None,
        }
    }

    /// As [`StoreError::new`], caused by `cause` (its whole chain is kept
    /// as text, so the error stays `Clone` and `Send`).
    pub(crate) fn caused(
        store: String,
        kind: ErrorKind,
        what: impl Into<String>,
        cause: &dyn std::error::Error,
    ) -> StoreError {
        StoreError {
            cause: Some(chain(cause)),
            ..StoreError::new(store, kind, what)
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The store, as shown (password masked).
    pub fn store(&self) -> &str {
        &self.store
    }

    /// What this error says, without the store's name.
    pub fn reason(&self) -> String {
        match &self.cause {
            Some(cause) => format!("{}: {cause}", self.what),
            None => self.what.clone(),
        }
    }

    /// What a patient whose reservation failed with this error may be
    /// told (after `error `): true for the kind of failure.
    pub fn for_patient(&self) -> &'static str {
        match self.kind {
            ErrorKind::Unconfirmed => {
                "the appointment store did not answer in time; the reservation is not confirmed"
            }
            ErrorKind::Gone => {
                "the appointment store's file is gone; no reservation can be recorded"
            }
            _ => "the reservation could not be recorded; try again later",
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.store, self.what)?;
        if let Some(cause) = &self.cause {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {}

/// An error and its sources as one line, each source once (some errors
/// repeat their source in their own message).
fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

/// `url` with the password of its user info, and any `password=` query
/// parameter, replaced by `***`.
pub fn mask_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let authority_start = scheme_end + 3;
        let authority_end = out[authority_start..]
            .find(['/', '?'])
            .map_or(out.len(), |at| authority_start + at);
        // The last '@' ends the user info: a password may contain '@'.
        if let Some(at) = out[authority_start..authority_end].rfind('@') {
            let user_info = &out[authority_start..authority_start + at];
            if let Some(colon) = user_info.find(':') {
                let start = authority_start + colon + 1;
                out.replace_range(start..authority_start + at, "***");
            }
        }
    }
    if let Some(query_start) = out.find('?') {
        let (head, query) = out.split_at(query_start + 1);
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", masked.join("&"));
    }
    out
}

/// The first slot where the slots a database holds (`stored`) and the data
/// files' `wanted` differ, as a sentence; `None` when they are the same.
/// Both are compared in index order.
pub(crate) fn first_difference(stored: &[Slot], wanted: &[Slot]) -> Option<String> {
    let mut wanted: Vec<&Slot> = wanted.iter().collect();
    wanted.sort_by_key(|s| s.index);
    let show = |s: &Slot| format!("'{} {} {} {} {}'", s.index, s.day, s.time, s.doctor, s.port);
    let mut stored = stored.iter();
    let mut wanted = wanted.into_iter();
    loop {
        match (stored.next(), wanted.next()) {
            (None, None) => return None,
            (Some(s), None) => {
                return Some(format!(
                    "slot {} {} is in the store but not in the data files",
                    s.index,
                    show(s)
                ));
            }
            (None, Some(w)) => {
                return Some(format!(
                    "slot {} {} is in the data files but not in the store",
                    w.index,
                    show(w)
                ));
            }
            (Some(s), Some(w)) if s.index != w.index => {
                let (missing, side) = if s.index < w.index {
                    (s, "in the store but not in the data files")
                } else {
                    (w, "in the data files but not in the store")
                };
                return Some(format!(
                    "slot {} {} is {side}",
                    missing.index,
                    show(missing)
                ));
            }
            (Some(s), Some(w)) if s != w => {
                return Some(format!(
                    "slot {} differs: the store has {}, the data files have {}",
                    s.index,
                    show(s),
                    show(w)
                ));
            }
            _ => {}
        }
    }
}

/// The sentence of a start-up refused because the store holds other slots.
pub(crate) fn mismatch(store: String, difference: String) -> StoreError {
    StoreError::new(
        store,
        ErrorKind::Mismatch,
        format!(
            "holds other slots than the data files ({difference}); \
             start with the data files it was made with, or use a new store"
        ),
    )
}

/// A slot index as the databases store it (a signed 64-bit integer).
pub(crate) fn db_index(index: u64) -> Option<i64> {
    i64::try_from(index).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(index: u64, day: &str) -> Slot {
        Slot {
            index,
            day: day.into(),
            time: "10am".into(),
            doctor: "doc1".into(),
            port: 41720,
        }
    }

    #[test]
    fn parses_every_kind_of_store() {
        assert_eq!(StoreUrl::parse("memory").unwrap(), StoreUrl::Memory);
        assert_eq!(
            StoreUrl::parse("sqlite:slots.db").unwrap(),
            StoreUrl::Sqlite("slots.db".into())
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///tmp/slots.db").unwrap(),
            StoreUrl::Sqlite("/tmp/slots.db".into())
        );
        assert_eq!(
            StoreUrl::parse("postgresql://u:pw@h/db").unwrap(),
            StoreUrl::Postgres("postgresql://u:pw@h/db".into())
        );
        assert_eq!(
            StoreUrl::parse("sqlite:").unwrap_err().kind(),
            ErrorKind::BadUrl
        );
        let err = StoreUrl::parse("mysql://root:secret@h/db").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadUrl);
        assert!(!err.to_string().contains("secret"), "{err}");
    }

    #[test]
    fn passwords_are_masked() {
        assert_eq!(
            mask_url("postgres://medsim:s3cr@t@db.example:5432/medsim"),
            "postgres://medsim:***@db.example:5432/medsim"
        );
        assert_eq!(
            mask_url("postgres://medsim@db/x?password=pw&sslmode=disable"),
            "postgres://medsim@db/x?password=***&sslmode=disable"
        );
        assert_eq!(mask_url("postgres://h/db"), "postgres://h/db");
        let url = StoreUrl::parse("postgres://a:b@h/db").unwrap();
        assert_eq!(url.to_string(), "postgres://a:***@h/db");
        assert!(!format!("{url:?}").contains(":b@"));
    }

    #[test]
    fn names_the_first_slot_that_differs() {
        let a = [slot(1, "Mon"), slot(2, "Tue")];
        assert_eq!(
            first_difference(&a, &[slot(2, "Tue"), slot(1, "Mon")]),
            None
        );
        let d = first_difference(&a, &[slot(1, "Mon"), slot(2, "Wed")]).unwrap();
        assert!(d.starts_with("slot 2 differs"), "{d}");
        let d = first_difference(&a, &[slot(1, "Mon")]).unwrap();
        assert!(d.contains("slot 2 '2 Tue 10am doc1 41720' is in the store but not"));
        let d = first_difference(&a, &[slot(1, "Mon"), slot(2, "Tue"), slot(3, "Fri")]).unwrap();
        assert!(d.contains("slot 3 '3 Fri 10am doc1 41720' is in the data files but not"));
        let d = first_difference(&a, &[slot(2, "Tue")]).unwrap();
        assert!(d.starts_with("slot 1 "), "{d}");
    }
}
