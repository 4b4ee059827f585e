//! The center's slot table: which slots exist, which are free and who holds
//! each reserved one.
//!
//! [`SlotBook`] is a cloneable handle around one `std::sync::Mutex`;
//! callers never see the lock. A reservation is one method under one guard
//! (check, then set), so however many sessions race for a slot exactly one
//! wins. The free list is rendered once per change and shared, so listing
//! costs a clone of an `Arc`, not a walk over the table. Sockets, framing
//! and the stores on disk belong to other modules.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::data::Slot;
use crate::protocol::CLASSIC_ANSWER_MAX;
#[allow(unused_imports)] // for the doc links
use crate::protocol::{render_classic_listings, render_listings};

/// The default of `--list-cap`: how many free slots one `available` answer
/// lists at most (the lowest indexes).
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

/// The free slots as the center sends them, rendered for both dialects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeList {
    /// Up to the list cap, for line sessions.
    pub line: String,
    /// The lowest free slots that fit one classic answer.
    pub classic: String,
    /// How many slots `line` lists.
    pub listed: usize,
}

impl FreeList {
    /// The one rendering of a free list, from its rows in index order (at
    /// most the list cap of them): a line of single-spaced triples, and the
    /// classic answer (PROTOCOL.md).
    ///
    /// The text is that of [`render_listings`] and
    /// [`render_classic_listings`], built in one walk over the rows with one
    /// push per word: the memory store renders it under the table's lock
    /// after every booking, where three walks through `write!` cost about
    /// 5 µs a booking (docs/PERFORMANCE.md).
    pub fn from_rows<'a>(rows: impl Iterator<Item = (u64, &'a str, &'a str)> + Clone) -> FreeList {
        // Sized up front: growing by doubling is a dozen reallocations.
        let expected = rows.size_hint().1.unwrap_or(0).min(4096);
        let mut line = String::with_capacity(expected * 16);
        let mut classic = String::with_capacity(CLASSIC_ANSWER_MAX);
        let mut classic_full = false;
        let mut listed = 0;
        for (index, day, time) in rows {
            if !line.is_empty() {
                line.push(' ');
            }
            let start = line.len();
            push_decimal(&mut line, index);
            line.push(' ');
            line.push_str(day);
            line.push(' ');
            line.push_str(time);
            // Classic: every triple followed by a space, as many as fit
            // one answer with its NUL; the first that does not ends it.
            let triple = &line[start..];
            if !classic_full && classic.len() + triple.len() < CLASSIC_ANSWER_MAX - 1 {
                classic.push_str(triple);
                classic.push(' ');
            } else {
                classic_full = true;
            }
            listed += 1;
        }
        FreeList {
            line,
            classic,
            listed,
        }
    }

    /// True when no slot is free: the center answers `notavailable`.
    pub fn is_empty(&self) -> bool {
        self.listed == 0
    }
}

/// Appends `n` in decimal, as `{n}` would, without the formatting
/// machinery.
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &digit in &digits[start..] {
        out.push(char::from(digit));
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

    /// Makes the slots up to `upto` (all when `None`) free exactly when
    /// they are in `free` (sorted), except those `keep` says to leave as
    /// they are; a slot found held gets an empty holder (who holds it is
    /// the copy's source's to say).
    pub fn sync_free(&self, free: &[u64], upto: Option<u64>, keep: impl Fn(u64) -> bool) {
        let mut state = self.shared.lock();
        let state = &mut *state;
        let mut changed = false;
        let range = match upto {
            Some(last) => state.slots.range_mut(..=last),
            None => state.slots.range_mut(..),
        };
        for (&index, entry) in range {
            let should_be_free = free.binary_search(&index).is_ok();
            if should_be_free == entry.holder.is_none() || keep(index) {
                continue;
            }
            entry.holder = if should_be_free {
                None
            } else {
                Some("".into())
            };
            if entry.listed() {
                state.free.insert(index);
            } else {
                state.free.remove(&index);
            }
            changed = true;
        }
        if changed {
            state.rendered = None;
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
        // The lowest free slots and their entries, walking the table beside
        // the free set: between two free slots there are usually a few
        // reserved ones at most (only listed slots get booked), so stepping
        // along the leaves beats a search from the root for each, which
        // was most of the render on a large table. A longer stretch of
        // reserved slots is jumped with one search.
        const STEPS: usize = 8;
        let mut rows = Vec::with_capacity(cap.min(self.free.len()));
        let mut table = self.slots.range(0..0);
        for &index in self.free.iter().take(cap) {
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

#[cfg(test)]
mod tests {
    use super::*;

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
        book.sync_free(&[1, 2, 3, 4, 5, 6], None, |_| false);
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
        let slots: Vec<Slot> = (1..=500)
            .map(|index| Slot {
                index,
                day: "Mon".into(),
                time: "10am".into(),
                doctor: "doc1".into(),
                port: 41720,
            })
            .collect();
        let book = SlotBook::new(&slots, 50);
        let list = book.free_list();
        assert_eq!(list.listed, 50);
        assert_eq!(list.line.split(' ').count(), 150);
        assert!(list.classic.len() < crate::protocol::CLASSIC_ANSWER_MAX);
        assert!(list.line.starts_with(list.classic.trim_end()));
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
    fn the_one_walk_rendering_is_the_protocols() {
        let words = ["Mon", "Tue", "Wed"];
        let times = ["10am", "01pm", "12pm"];
        for count in [0usize, 1, 2, 5, 7, 8, 9, 50] {
            for first in [0u64, 1, 9, 99, 12_345, u64::MAX - 400] {
                let rows: Vec<(u64, &str, &str)> = (0..count as u64)
                    .map(|k| (first + k * 7, words[k as usize % 3], times[k as usize % 3]))
                    .collect();
                let list = FreeList::from_rows(rows.iter().copied());
                assert_eq!(list.line, render_listings(rows.iter().copied(), usize::MAX));
                assert_eq!(list.classic, render_classic_listings(rows.iter().copied()));
                assert_eq!(list.listed, count);
            }
        }
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
