//! A free slot as the center lists it, and the one rendering of a free
//! list ([`FreeList`]) for both dialects.

use std::fmt;

use super::CLASSIC_ANSWER_MAX;

/// One free slot as the center lists it: `INDEX DAY TIME`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listing {
    pub index: u64,
    pub day: String,
    pub time: String,
}

impl fmt::Display for Listing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.index, self.day, self.time)
    }
}

/// The free slots as the center sends them, rendered for both dialects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreeList {
    /// Up to the list cap, for line sessions.
    pub line: String,
    /// The first of `line`'s slots that fit one classic answer.
    pub classic: String,
    /// How many slots `line` lists.
    pub listed: usize,
}

impl FreeList {
    /// The one rendering of a free list, from its rows in index order (at
    /// most the list cap of them): a line of single-spaced triples, and the
    /// classic answer (PROTOCOL.md).
    ///
    /// Built in one walk over the rows with one push per word: the memory
    /// store renders it under the table's lock after every booking, where
    /// three walks through `write!` cost about 5 µs a booking
    /// (docs/PERFORMANCE.md). The tests hold it to a plain rendering.
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain rendering of a line list: triples, single spaces.
    fn plain_line<'a>(listings: impl IntoIterator<Item = (u64, &'a str, &'a str)>) -> String {
        let triples: Vec<String> = listings
            .into_iter()
            .map(|(index, day, time)| format!("{index} {day} {time}"))
            .collect();
        triples.join(" ")
    }

    /// The plain rendering of a classic list: every triple followed by a
    /// space, as many of the lowest as fit one answer with its NUL.
    fn plain_classic<'a>(listings: impl IntoIterator<Item = (u64, &'a str, &'a str)>) -> String {
        let mut out = String::new();
        for (index, day, time) in listings {
            let triple = format!("{index} {day} {time} ");
            if out.len() + triple.len() > CLASSIC_ANSWER_MAX - 1 {
                break;
            }
            out.push_str(&triple);
        }
        out
    }

    #[test]
    fn the_one_walk_rendering_is_the_plain_one() {
        let words = ["Mon", "Tue", "Wed"];
        let times = ["10am", "01pm", "12pm"];
        for count in [0usize, 1, 2, 5, 7, 8, 9, 50] {
            for first in [0u64, 1, 9, 99, 12_345, u64::MAX - 400] {
                let rows: Vec<(u64, &str, &str)> = (0..count as u64)
                    .map(|k| (first + k * 7, words[k as usize % 3], times[k as usize % 3]))
                    .collect();
                let list = FreeList::from_rows(rows.iter().copied());
                assert_eq!(list.line, plain_line(rows.iter().copied()));
                assert_eq!(list.classic, plain_classic(rows.iter().copied()));
                assert_eq!(list.listed, count);
            }
        }
    }

    #[test]
    fn a_list_is_its_triples_in_order() {
        let slots = [(1, "Tue", "01pm"), (2, "Mon", "03pm"), (3, "Thu", "02pm")];
        let list = FreeList::from_rows(slots.into_iter());
        assert_eq!(list.line, "1 Tue 01pm 2 Mon 03pm 3 Thu 02pm");
        assert_eq!(list.classic, "1 Tue 01pm 2 Mon 03pm 3 Thu 02pm ");
        assert!(FreeList::from_rows(std::iter::empty()).is_empty());
    }

    #[test]
    fn classic_lists_follow_every_triple_with_a_space_and_fit_one_answer() {
        let many: Vec<(u64, &str, &str)> = (1..=20).map(|i| (i, "Mon", "10am")).collect();
        let list = FreeList::from_rows(many.into_iter());
        assert!(
            list.classic.len() < CLASSIC_ANSWER_MAX,
            "{}",
            list.classic.len()
        );
        assert!(list.classic.ends_with("10am "));
        assert_eq!(list.classic.split_whitespace().count() % 3, 0);
        assert_eq!(list.listed, 20, "a line list is not cut");
    }
}
