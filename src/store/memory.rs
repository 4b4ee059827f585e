//! The `memory` store: the slot table in this process ([`SlotBook`]),
//! and the same table behind the [`Store`] trait ([`MemoryStore`]).
//!
//! [`SlotBook`] is a cloneable handle around one `std::sync::Mutex`;
//! callers never see the lock. A reservation is one method under one guard
//! (check, then set), so however many sessions race for a slot exactly one
//! wins. The free list is rendered once per change and shared, so listing
//! costs a clone of an `Arc`, not a walk over the table. Nothing is added
//! on the hot path: every [`MemoryStore`] method is the book's own and
//! never fails. Reservations live as long as the process; a store on disk
//! (`sqlite.rs`, `postgres/`) is what keeps them, and answers listings
//! from a [`SlotBook`] of its own (`mirror.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{FreeList, Reservation, Store, StoreError};
use crate::data::Slot;

/// A [`SlotBook`] as a [`Store`].
#[derive(Clone)]
pub struct MemoryStore {
    book: SlotBook,
}

impl MemoryStore {
    /// A table of `slots`, all free, listing at most `list_cap` at a time.
    pub fn new(slots: &[Slot], list_cap: usize) -> MemoryStore {
        MemoryStore {
            book: SlotBook::new(slots, list_cap),
        }
    }

    /// The store of an existing book (e.g. one with earlier reservations restored).
    pub fn from_book(book: SlotBook) -> MemoryStore {
        MemoryStore { book }
    }

    /// The book itself, for callers that want its infallible methods.
    pub fn book(&self) -> &SlotBook {
        &self.book
    }
}

impl Store for MemoryStore {
    fn reserve(&self, index: u64, holder: &str) -> Result<Reservation, StoreError> {
        Ok(self.book.reserve(index, holder))
    }

    fn cancel(&self, index: u64, holder: &str) -> Result<bool, StoreError> {
        Ok(self.book.cancel(index, holder))
    }

    fn free_list(&self) -> Result<Arc<FreeList>, StoreError> {
        Ok(self.book.free_list())
    }

    fn holders(&self) -> Result<Vec<(u64, String)>, StoreError> {
        Ok(self.book.holders())
    }

    fn describe(&self) -> String {
        "memory store".to_owned()
    }
}

/// A cloneable handle on the one slot table of a center.
#[derive(Clone)]
pub struct SlotBook {
    shared: Arc<Shared>,
}

struct Shared {
    /// Every session takes this lock twice, so it is the standard
    /// library's, not `parking_lot`'s: `parking_lot` hands the lock over to
    /// a parked thread now and then (its "eventual fairness"), and with a
    /// hundred runnable threads on two cores that thread may wait many
    /// milliseconds for a CPU while holding the lock, every other session
    /// stuck behind it. The booking path's p99 at concurrency 64 was about
    /// twice the floor's from this alone (docs/PERFORMANCE.md).
    state: Mutex<State>,
    list_cap: usize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Every method leaves the state whole before anything can panic,
        // so a panic elsewhere while holding the guard poisons nothing.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct State {
    slots: BTreeMap<u64, Entry>,
    /// The slots to list: free and not being claimed.
    free: BTreeSet<u64>,
    /// The rendering of `free`, dropped whenever `free` changes.
    rendered: Option<Arc<FreeList>>,
    /// Where a capped listing starts ([`SlotBook::set_list_from`]): the
    /// lowest free slots from here on, then from the lowest.
    list_from: u64,
}

struct Entry {
    day: Arc<str>,
    time: Arc<str>,
    doctor: Arc<str>,
    port: u16,
    holder: Option<Box<str>>,
    /// Reservations of this slot on their way to a store on disk
    /// ([`SlotBook::claim`]); the slot is not listed meanwhile.
    claims: u32,
}

impl Entry {
    fn listed(&self) -> bool {
        self.holder.is_none() && self.claims == 0
    }
}

impl SlotBook {
    /// A table of `slots`, all free, listing at most `list_cap` at a time.
    pub fn new(slots: &[Slot], list_cap: usize) -> SlotBook {
        SlotBook::from_slots(slots.iter().cloned(), list_cap)
    }

    /// As [`SlotBook::new`], taking the slots one by one, so a generated
    /// table is never held twice.
    pub fn from_slots(slots: impl IntoIterator<Item = Slot>, list_cap: usize) -> SlotBook {
        // Doctors, days and times repeat across slots: each distinct word is
        // stored once and shared, not copied per slot or per booking.
        let mut words: BTreeSet<Arc<str>> = BTreeSet::new();
        let mut intern = |word: &str| -> Arc<str> {
            if let Some(shared) = words.get(word) {
                return Arc::clone(shared);
            }
            let shared: Arc<str> = Arc::from(word);
            words.insert(Arc::clone(&shared));
            shared
        };
        let mut free = BTreeSet::new();
        let entries = slots
            .into_iter()
            .map(|slot| {
                free.insert(slot.index);
                let entry = Entry {
                    day: intern(&slot.day),
                    time: intern(&slot.time),
                    doctor: intern(&slot.doctor),
                    port: slot.port,
                    holder: None,
                    claims: 0,
                };
                (slot.index, entry)
            })
            .collect();
        SlotBook {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    slots: entries,
                    free,
                    rendered: None,
                    list_from: 0,
                }),
                list_cap: list_cap.max(1),
            }),
        }
    }

    /// The free slots to send for `available`.
    pub fn free_list(&self) -> Arc<FreeList> {
        let mut state = self.shared.lock();
        if let Some(rendered) = &state.rendered {
            return Arc::clone(rendered);
        }
        let rendered = Arc::new(state.render(self.shared.list_cap));
        state.rendered = Some(Arc::clone(&rendered));
        rendered
    }

    /// Makes a capped listing show the lowest free slots from `index` on
    /// (then, if they are too few, from the lowest), still in index order.
    /// A listing of every free slot is the same from anywhere: this only
    /// chooses which ones a capped listing shows.
    pub fn set_list_from(&self, index: u64) {
        let mut state = self.shared.lock();
        if state.list_from != index {
            state.list_from = index;
            state.rendered = None;
        }
    }

    /// Where a capped listing starts (0 until [`SlotBook::set_list_from`]).
    pub fn list_from(&self) -> u64 {
        self.shared.lock().list_from
    }

    /// The first slot a listing shows from where it starts: the lowest
    /// listed from [`SlotBook::list_from`] on, or else the lowest listed
    /// (`list_from` itself when none is).
    pub fn listing_start(&self) -> u64 {
        let state = self.shared.lock();
        let from = state.list_from;
        let first = state.free.range(from..).next().or(state.free.first());
        first.copied().unwrap_or(from)
    }

    /// The index a `part`-th of the way through the table (in index
    /// order), for `part` = `rank` / `of`; `None` for an empty table.
    pub fn index_at(&self, rank: usize, of: usize) -> Option<u64> {
        let state = self.shared.lock();
        let at = state.slots.len().saturating_mul(rank) / of.max(1);
        state.slots.keys().nth(at).copied()
    }

    /// Reserves slot `index` to `holder` if it is free: one check-and-set.
    pub fn reserve(&self, index: u64, holder: &str) -> Reservation {
        let mut state = self.shared.lock();
        let Some(entry) = state.slots.get_mut(&index) else {
            return Reservation::NoSuchSlot;
        };
        if entry.holder.is_some() {
            return Reservation::Taken;
        }
        entry.holder = Some(holder.into());
        let booked = Reservation::Booked {
            doctor: Arc::clone(&entry.doctor),
            port: entry.port,
        };
        state.free.remove(&index);
        state.rendered = None;
        booked
    }

    /// Marks slots reserved as an earlier run left them, before serving.
    /// Indexes not in the table are ignored.
    pub fn restore(&self, holders: &[(u64, String)]) {
        let mut state = self.shared.lock();
        for (index, holder) in holders {
            if let Some(entry) = state.slots.get_mut(index) {
                entry.holder = Some(holder.as_str().into());
                state.free.remove(index);
            }
        }
        state.rendered = None;
    }

    /// Frees slot `index` if `holder` holds it, for a reservation whose
    /// answer never reached the patient. Returns whether it was freed.
    pub fn cancel(&self, index: u64, holder: &str) -> bool {
        let mut state = self.shared.lock();
        let Some(entry) = state.slots.get_mut(&index) else {
            return false;
        };
        if entry.holder.as_deref() != Some(holder) {
            return false;
        }
        state.change(index, |entry| entry.holder = None);
        true
    }

    /// Sets who holds slot `index` (`None`: free), whatever it was: for a
    /// copy of a table kept elsewhere (`store::postgres`), told what the
    /// real one decided. Indexes not in the table are ignored.
    pub fn set_holder(&self, index: u64, holder: Option<&str>) {
        let mut state = self.shared.lock();
        state.change(index, |entry| entry.holder = holder.map(Box::from));
    }

    /// Marks slot `index` as claimed by a reservation on its way to the
    /// store on disk this table mirrors: it is not listed until
    /// [`SlotBook::unclaim`], so patients listing meanwhile are not offered
    /// a slot that is about to be taken. Who wins is still the store's to
    /// decide. Indexes not in the table are ignored.
    pub fn claim(&self, index: u64) {
        self.shared
            .lock()
            .change(index, |entry| entry.claims = entry.claims.saturating_add(1));
    }

    /// Ends one [`SlotBook::claim`] of slot `index`: listed again if no
    /// other claim is left and nobody holds it.
    pub fn unclaim(&self, index: u64) {
        self.shared
            .lock()
            .change(index, |entry| entry.claims = entry.claims.saturating_sub(1));
    }

    /// Makes the slots in `range` free exactly when they are in `free`
    /// (sorted, all in `range`), except those `keep` says to leave as they
    /// are; a slot found held gets an empty holder (who holds it is the
    /// copy's source's to say). A claimed slot is left to its claim's
    /// outcome, and to the next sync if that outcome is a failure.
    pub fn sync_free(
        &self,
        free: &[u64],
        range: impl RangeBounds<u64>,
        keep: impl Fn(u64) -> bool,
    ) {
        let mut state = self.shared.lock();
        let state = &mut *state;
        // Only two kinds of slot can differ, so only they are visited (under
        // the lock every listing takes): those the source lists as free,
        // and those this table lists in `range`. The slots held among
        // them, which grow with every booking, are not walked.
        let listed_here: Vec<u64> = state.free.range(range).copied().collect();
        for index in listed_here {
            if free.binary_search(&index).is_err() && !keep(index) {
                state.change(index, |entry| entry.holder = Some("".into()));
            }
        }
        for &index in free {
            let held = state.slots.get(&index).is_some_and(|e| e.holder.is_some());
            if held && !keep(index) {
                state.change(index, |entry| entry.holder = None);
            }
        }
    }

    /// Every reserved slot and its holder, in index order.
    pub fn holders(&self) -> Vec<(u64, String)> {
        let state = self.shared.lock();
        state
            .slots
            .iter()
            .filter_map(|(index, e)| e.holder.as_ref().map(|h| (*index, h.to_string())))
            .collect()
    }

    /// How many slots are free (and not claimed).
    pub fn free_count(&self) -> usize {
        self.shared.lock().free.len()
    }
}

impl State {
    /// Applies `change` to slot `index` and keeps the listed set true.
    fn change(&mut self, index: u64, change: impl FnOnce(&mut Entry)) {
        let Some(entry) = self.slots.get_mut(&index) else {
            return;
        };
        let was_listed = entry.listed();
        change(entry);
        let listed = entry.listed();
        if listed != was_listed {
            if listed {
                self.free.insert(index);
            } else {
                self.free.remove(&index);
            }
            self.rendered = None;
        }
    }

    fn render(&self, cap: usize) -> FreeList {
        // The free slots to list (the lowest from `list_from`, in index
        // order) and their entries, walking the table beside them: between
        // two free slots there are usually a few reserved ones at most (only
        // listed slots get booked), so stepping along the leaves beats a
        // search from the root for each, which was most of the render on a
        // large table. A longer stretch of reserved slots is jumped with
        // one search.
        const STEPS: usize = 8;
        let from = self.list_from;
        let above = self.free.range(from..).take(cap).count();
        let below = self.free.range(..from).take(cap - above);
        let mut rows = Vec::with_capacity(cap.min(self.free.len()));
        let mut table = self.slots.range(0..0);
        for &index in below.chain(self.free.range(from..).take(above)) {
            let mut entry = None;
            for _ in 0..STEPS {
                match table.next() {
                    Some((&k, _)) if k < index => {}
                    Some((&k, e)) if k == index => {
                        entry = Some(e);
                        break;
                    }
                    _ => break,
                }
            }
            if entry.is_none() {
                table = self.slots.range(index..);
                entry = table.next().filter(|(k, _)| **k == index).map(|(_, e)| e);
            }
            if let Some(e) = entry {
                rows.push((index, &*e.day, &*e.time));
            }
        }
        FreeList::from_rows(rows.iter().copied())
    }
}

/// `count` slots numbered from 1, all Monday 10am at doc1 on 41720.
#[cfg(test)]
pub(crate) fn numbered_slots(count: u64) -> Vec<Slot> {
    (1..=count)
        .map(|index| Slot {
            index,
            day: "Mon".into(),
            time: "10am".into(),
            doctor: "doc1".into(),
            port: 41720,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DEFAULT_LIST_CAP;

    fn fixture_slots() -> Vec<Slot> {
        crate::data::Fixtures::load(&crate::data::Source::built_in())
            .unwrap()
            .slots
    }

    #[test]
    fn lists_free_slots_in_index_order() {
        let book = SlotBook::new(&fixture_slots(), DEFAULT_LIST_CAP);
        let list = book.free_list();
        assert_eq!(
            list.line,
            "1 Tue 01pm 2 Mon 03pm 3 Thu 02pm 4 Wed 10am 5 Sat 12pm 6 Fri 04pm"
        );
        assert_eq!(
            list.classic,
            format!("{} ", list.line),
            "the six classic slots fit, each followed by a space"
        );
        assert_eq!(list.listed, 6);
    }

    #[test]
    fn a_reserved_slot_leaves_the_list_and_cannot_be_reserved_again() {
        let book = SlotBook::new(&fixture_slots(), DEFAULT_LIST_CAP);
        assert_eq!(
            book.reserve(2, "patient1"),
            Reservation::Booked {
                doctor: "doc2".into(),
                port: 42720
            }
        );
        assert_eq!(book.reserve(2, "patient2"), Reservation::Taken);
        assert_eq!(book.reserve(7, "patient2"), Reservation::NoSuchSlot);
        assert!(!book.free_list().line.contains("Mon"));
        assert_eq!(book.holders(), [(2, "patient1".to_owned())]);
        assert_eq!(book.free_count(), 5);
    }

    #[test]
    fn a_claimed_slot_is_not_listed_until_its_last_claim_ends() {
        let book = SlotBook::new(&fixture_slots(), DEFAULT_LIST_CAP);
        book.claim(2);
        book.claim(2);
        assert!(!book.free_list().line.contains("Mon 03pm"));
        book.unclaim(2);
        assert!(
            !book.free_list().line.contains("Mon 03pm"),
            "one claim left"
        );
        // The store said free meanwhile: still claimed, still not listed.
        book.sync_free(&[1, 2, 3, 4, 5, 6], .., |_| false);
        assert_eq!(book.free_list().listed, 5);
        book.unclaim(2);
        assert_eq!(book.free_list().listed, 6);
        // A claim that ends in a booking leaves the slot unlisted.
        book.claim(3);
        book.set_holder(3, Some("patient1"));
        book.unclaim(3);
        assert!(!book.free_list().line.contains("Thu 02pm"));
        assert_eq!(book.free_count(), 5);
    }

    #[test]
    fn cancel_frees_only_the_holders_slot() {
        let book = SlotBook::new(&fixture_slots(), DEFAULT_LIST_CAP);
        book.reserve(1, "patient1");
        assert!(!book.cancel(1, "patient2"));
        assert!(book.cancel(1, "patient1"));
        assert!(!book.cancel(1, "patient1"));
        assert_eq!(book.free_list().listed, 6);
    }

    #[test]
    fn the_list_is_capped_and_classic_fits_one_answer() {
        let slots = numbered_slots(500);
        let book = SlotBook::new(&slots, 50);
        let list = book.free_list();
        assert_eq!(list.listed, 50);
        assert_eq!(list.line.split(' ').count(), 150);
        assert!(list.classic.len() < crate::protocol::CLASSIC_ANSWER_MAX);
        assert!(list.line.starts_with(list.classic.trim_end()));
    }

    #[test]
    fn a_capped_list_starts_where_it_is_told_and_fills_up_from_the_lowest() {
        let slots = numbered_slots(10);
        let indexes = |book: &SlotBook| -> Vec<String> {
            let list = book.free_list();
            list.line.split(' ').step_by(3).map(str::to_owned).collect()
        };
        let book = SlotBook::new(&slots, 3);
        assert_eq!(book.index_at(0, 1), Some(1));
        assert_eq!(book.index_at(1, 2), Some(6));
        book.set_list_from(book.index_at(1, 2).unwrap());
        assert_eq!(indexes(&book), ["6", "7", "8"]);
        assert_eq!(
            book.reserve(6, "p"),
            Reservation::Booked {
                doctor: "doc1".into(),
                port: 41720
            }
        );
        assert_eq!(indexes(&book), ["7", "8", "9"]);
        assert_eq!(book.listing_start(), 7);
        // Too few from there on: the rest from the lowest, in index order.
        book.set_list_from(10);
        assert_eq!(indexes(&book), ["1", "2", "10"]);
        book.set_list_from(11);
        assert_eq!(book.listing_start(), 1);
        // A list of every free slot is the same from anywhere.
        let all = SlotBook::new(&slots, 50);
        let whole = all.free_list();
        all.set_list_from(8);
        assert_eq!(all.free_list(), whole);
    }

    #[test]
    fn restored_reservations_are_neither_listed_nor_given_again() {
        let book = SlotBook::new(&fixture_slots(), DEFAULT_LIST_CAP);
        book.free_list();
        book.restore(&[(1, "patient1".to_owned()), (6, "patient2".to_owned())]);
        assert_eq!(
            book.free_list().line,
            "2 Mon 03pm 3 Thu 02pm 4 Wed 10am 5 Sat 12pm"
        );
        assert_eq!(book.reserve(6, "patient3"), Reservation::Taken);
    }

    #[test]
    fn long_stretches_of_reserved_slots_are_jumped() {
        let slots: Vec<Slot> = (1..=200)
            .map(|index| Slot {
                index,
                day: format!("D{index}"),
                time: "10am".into(),
                doctor: "doc1".into(),
                port: 41720,
            })
            .collect();
        let book = SlotBook::new(&slots, 5);
        let held: Vec<(u64, String)> = (2..=60)
            .chain(62..=64)
            .chain(66..=150)
            .map(|i| (i, "someone".to_owned()))
            .collect();
        book.restore(&held);
        assert_eq!(
            book.free_list().line,
            "1 D1 10am 61 D61 10am 65 D65 10am 151 D151 10am 152 D152 10am"
        );
        book.reserve(151, "p");
        assert_eq!(
            book.free_list().line,
            "1 D1 10am 61 D61 10am 65 D65 10am 152 D152 10am 153 D153 10am"
        );
    }

    #[test]
    fn an_empty_table_lists_nothing() {
        let book = SlotBook::new(&[], DEFAULT_LIST_CAP);
        assert!(book.free_list().is_empty());
    }

    #[test]
    fn racing_threads_book_each_slot_exactly_once() {
        for _round in 0..20 {
            let book = SlotBook::new(&fixture_slots(), DEFAULT_LIST_CAP);
            let barrier = Arc::new(std::sync::Barrier::new(16));
            let winners: Vec<bool> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..16)
                    .map(|n| {
                        let book = book.clone();
                        let barrier = Arc::clone(&barrier);
                        scope.spawn(move || {
                            barrier.wait();
                            matches!(
                                book.reserve(3, &format!("p{n}")),
                                Reservation::Booked { .. }
                            )
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            assert_eq!(winners.iter().filter(|w| **w).count(), 1);
        }
    }
}
