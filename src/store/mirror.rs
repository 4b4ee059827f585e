//! The copy in memory of a slot table kept on disk (an SQLite file, a
//! PostgreSQL database) that answers `available` for the stores on disk.
//!
//! This module owns what the copy knows and when it gives way to the
//! database: the outcomes this process's commits learn, the free slots it
//! lists read back from the database (for what other processes did), and
//! the slots claimed by reservations still on their way to a commit.
//!
//! - **Reads never wait.** A listing is the copy's rendering: no round
//!   trip, no SQL, never behind a commit in progress or a stalled server.
//! - **Own commits know better.** A read of the database that began before
//!   one of this process's commits was learned must not undo it: each
//!   learned slot carries the generation it was learned at, and a read
//!   started at an earlier generation leaves it alone.
//! - **Claimed slots are not offered.** A reservation marks its slot
//!   claimed while it waits for its commit ([`Mirror::reserve`]): with
//!   group commit a booking is durable a commit later than in memory, and
//!   offering its slot meanwhile would send the patients who list then into
//!   a race already lost. Who wins is still the database's to decide; a
//!   claim that fails lists the slot again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use super::commit::Ticket;
use super::{Reservation, StoreError};
use crate::data::Slot;
use crate::store::memory::SlotBook;

/// How often the copy is brought up to date with what other processes
/// (centers) did, where the database cannot say when that changed
/// (PostgreSQL; an SQLite file can).
pub const REFRESH: Duration = Duration::from_millis(200);

/// Free slots read past the list cap when the copy is brought up to date,
/// so this process's bookings since do not shorten its list.
const FREE_MARGIN: usize = 64;

/// The copy of a table on disk, and which slots this process's own
/// commits changed since when.
pub struct Mirror {
    /// The table as this process knows it.
    pub book: SlotBook,
    generation: AtomicU64,
    touched: Mutex<HashMap<u64, u64>>,
}

impl Mirror {
    /// A copy of `slots`, all free, listing at most `list_cap`.
    pub fn new(slots: &[Slot], list_cap: usize) -> Mirror {
        Mirror {
            book: SlotBook::new(slots, list_cap),
            generation: AtomicU64::new(0),
            touched: Mutex::new(HashMap::new()),
        }
    }

    /// How many free slots a read of the database takes (from where the
    /// listing starts), for a list cap of `list_cap`.
    pub fn read_limit(list_cap: usize) -> i64 {
        i64::try_from(list_cap.max(1) + FREE_MARGIN).unwrap_or(i64::MAX)
    }

    /// Reserves slot `index` through `commit` (the store's group commit),
    /// the slot claimed, so not listed, until the outcome is known.
    ///
    /// # Errors
    ///
    /// `commit`'s.
    pub fn reserve(
        &self,
        index: u64,
        commit: impl FnOnce() -> Result<Reservation, StoreError>,
    ) -> Result<Reservation, StoreError> {
        self.book.claim(index);
        let outcome = commit();
        // A grant or a slot found taken was learned before the answer came
        // (the committer learns, then answers): the slot stays unlisted.
        self.book.unclaim(index);
        outcome
    }

    /// What a commit of this process learned about slot `index`: held by
    /// `holder` (an empty name: by someone the database knows), or free.
    pub fn learn(&self, index: u64, holder: Option<&str>) {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        self.touched.lock().insert(index, generation);
        self.book.set_holder(index, holder);
    }

    /// What a commit's `outcomes` tell of its `tickets`' slots: a grant,
    /// or a slot someone holds (who is the database's to say).
    pub fn learn_outcomes(&self, tickets: &[&Ticket], outcomes: &[Reservation]) {
        for (ticket, outcome) in tickets.iter().zip(outcomes) {
            match outcome {
                Reservation::Booked { .. } => self.learn(ticket.index, Some(&ticket.holder)),
                Reservation::Taken => self.learn(ticket.index, Some("")),
                Reservation::NoSuchSlot => {}
            }
        }
    }

    /// The generation to pass to [`Mirror::sync`] for a read of the
    /// database that begins now.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Takes the free slots a read of the database found, `free` (in any
    /// order), read with `limit` from slot `from` on (the lowest from
    /// `from`, then from the lowest: at most `limit` in all), after
    /// generation `since` of this process's own changes.
    pub fn sync(&self, free: &[u64], from: u64, limit: i64, since: u64) {
        let limit = usize::try_from(limit).unwrap_or(0);
        if limit == 0 {
            return;
        }
        let (mut above, mut below): (Vec<u64>, Vec<u64>) =
            free.iter().partition(|&&index| index >= from);
        above.sort_unstable();
        below.sort_unstable();
        above.truncate(limit);
        let room = limit - above.len();
        below.truncate(room);
        let mut touched = self.touched.lock();
        // This process's own commits since the read began know better.
        let keep = |index: u64| touched.get(&index).is_some_and(|&g| g > since);
        // What the read covered: past the last free slot of a part that
        // filled its limit, the database told nothing.
        match above.last() {
            Some(&last) if room == 0 => self.book.sync_free(&above, from..=last, keep),
            _ => self.book.sync_free(&above, from.., keep),
        }
        if room > 0 {
            match below.last() {
                Some(&last) if below.len() == room => {
                    self.book.sync_free(&below, ..=last, keep);
                }
                _ => self.book.sync_free(&below, ..from, keep),
            }
        }
        touched.retain(|_, g| *g > since);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::ErrorKind;
    use crate::store::memory::numbered_slots as slots;

    #[test]
    fn a_slot_waiting_for_its_commit_is_not_listed() {
        let mirror = Mirror::new(&slots(3), 50);
        let outcome = mirror.reserve(2, || {
            assert_eq!(mirror.book.free_list().line, "1 Mon 10am 3 Mon 10am");
            mirror.learn(2, Some("patient1"));
            Ok(Reservation::Booked {
                doctor: "doc1".into(),
                port: 41720,
            })
        });
        assert!(matches!(outcome, Ok(Reservation::Booked { .. })));
        assert_eq!(mirror.book.free_list().line, "1 Mon 10am 3 Mon 10am");
    }

    #[test]
    fn a_claim_that_fails_lists_the_slot_again() {
        let mirror = Mirror::new(&slots(3), 50);
        let outcome = mirror.reserve(2, || {
            Err(StoreError::new(
                "test".into(),
                ErrorKind::Query,
                "nothing was recorded",
            ))
        });
        assert!(outcome.is_err());
        assert_eq!(mirror.book.free_list().listed, 3);
    }

    #[test]
    fn a_read_from_a_slot_on_tells_only_what_it_covered() {
        let mirror = Mirror::new(&slots(10), 2);
        let free = |mirror: &Mirror| mirror.book.free_count();
        // From slot 5, limit 3, the database found 6, 8 and 9 free: 5 and
        // 7 are held; past 9 and below 5 it told nothing.
        mirror.sync(&[9, 6, 8], 5, 3, mirror.generation());
        assert_eq!(free(&mirror), 8);
        assert!(!mirror.book.free_list().line.contains("5 Mon"));
        // From slot 8, limit 4: 8 and 10 above (so 9 is held, and the
        // read went on from the lowest), then 1 and 3 (so 2 is held).
        mirror.sync(&[1, 8, 10, 3], 8, 4, mirror.generation());
        let held: Vec<u64> = (1..=10)
            .filter(|&i| mirror.book.reserve(i, "probe") == Reservation::Taken)
            .collect();
        assert_eq!(held, [2, 5, 7, 9]);
    }

    #[test]
    fn a_read_begun_before_an_own_commit_does_not_undo_it() {
        let mirror = Mirror::new(&slots(3), 50);
        let since = mirror.generation();
        mirror.learn(1, Some("patient1"));
        // The read saw slot 1 still free: it began before the commit.
        mirror.sync(&[1, 2, 3], 0, 100, since);
        assert_eq!(mirror.book.free_list().line, "2 Mon 10am 3 Mon 10am");
        // A read begun after it is believed: another process freed it.
        mirror.sync(&[1, 2, 3], 0, 100, mirror.generation());
        assert_eq!(mirror.book.free_list().listed, 3);
    }
}
