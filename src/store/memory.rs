//! The `memory` store: today's [`SlotBook`] behind the [`Store`] trait.
//!
//! Nothing is added on the hot path: every method is the book's own, under
//! its one lock, and never fails. Reservations live as long as the
//! process; a store on disk (`sqlite.rs`, `postgres.rs`) is what keeps them.

use std::sync::Arc;

use super::{FreeList, Reservation, Store, StoreError};
use crate::data::Slot;
use crate::slots::SlotBook;

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
