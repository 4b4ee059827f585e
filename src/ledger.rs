//! The reservation journal behind `center --ledger FILE`.
//!
//! Every confirmed reservation is appended as one line, `book INDEX USER`,
//! and made durable (fsync) before the patient is told `DOCTOR PORT`; a
//! reservation whose answer could not be delivered is undone with `cancel
//! INDEX USER`, written before the slot is freed in memory, so for any slot
//! the lines stand in the order things happened. On start the journal is
//! replayed: a torn last line (a crash mid-write, never acknowledged) is cut
//! off with a warning; anything else that does not replay cleanly is a
//! start-up error naming the line. The slot table itself is `slots.rs`'s.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use crate::data::{DataError, Slot};

/// An open journal, appended to by every session.
pub struct Ledger {
    file: Mutex<File>,
    path: PathBuf,
}

/// What replaying a journal found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Replay {
    /// Reserved slots and their holders, in index order.
    pub holders: Vec<(u64, String)>,
    /// Warnings for the operator (a torn last line).
    pub warnings: Vec<String>,
}

impl Ledger {
    /// Opens (or creates) the journal at `path`, replays it against
    /// `slots`, and cuts off a torn last line.
    ///
    /// # Errors
    ///
    /// The file cannot be opened, read or repaired, or a complete line does
    /// not replay: malformed, an unknown slot, a slot booked twice, a cancel
    /// of a reservation that does not exist.
    pub fn open(path: &Path, slots: &[Slot]) -> Result<(Ledger, Replay), DataError> {
        let label = path.display().to_string();
        let io_error = |e: io::Error| DataError {
            file: label.clone(),
            line: None,
            reason: e.to_string(),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io_error)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io_error)?;
        let complete = bytes
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |at| at + 1);
        let mut replay = replay(&label, &bytes[..complete], slots)?;
        if complete < bytes.len() {
            let line = bytes[..complete].iter().filter(|&&b| b == b'\n').count() + 1;
            replay.warnings.push(format!(
                "{label} line {line}: torn last line ({} bytes, never acknowledged) ignored and cut off",
                bytes.len() - complete
            ));
            // Appends must start on a fresh line, not finish the torn one.
            file.set_len(complete as u64).map_err(io_error)?;
            file.sync_all().map_err(io_error)?;
        }
        file.seek(io::SeekFrom::End(0)).map_err(io_error)?;
        Ok((
            Ledger {
                file: Mutex::new(file),
                path: path.to_owned(),
            },
            replay,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a reservation durably. Returns only once it is on disk.
    ///
    /// # Errors
    ///
    /// The write or the fsync failed: the reservation must not be
    /// confirmed.
    pub fn record_booking(&self, index: u64, user: &str) -> io::Result<()> {
        self.append(&format!("book {index} {user}\n"))
    }

    /// Records that a reservation was undone, durably.
    ///
    /// # Errors
    ///
    /// The write or the fsync failed: the slot must stay reserved.
    pub fn record_cancel(&self, index: u64, user: &str) -> io::Result<()> {
        self.append(&format!("cancel {index} {user}\n"))
    }

    /// Makes everything written so far durable.
    ///
    /// # Errors
    ///
    /// The fsync failed.
    pub fn sync(&self) -> io::Result<()> {
        self.file.lock().sync_data()
    }

    fn append(&self, line: &str) -> io::Result<()> {
        let file = self.file.lock();
        (&*file).write_all(line.as_bytes())?;
        // fsync under the lock keeps lines and their durability in order;
        // concurrent bookings queue here, as they would for the disk.
        file.sync_data()
    }
}

fn replay(label: &str, text: &[u8], slots: &[Slot]) -> Result<Replay, DataError> {
    let error = |line: usize, reason: String| DataError {
        file: label.to_owned(),
        line: Some(line),
        reason,
    };
    let known: std::collections::HashSet<u64> = slots.iter().map(|s| s.index).collect();
    let mut held: HashMap<u64, String> = HashMap::new();
    for (at, raw) in text.split(|&b| b == b'\n').enumerate() {
        let line = at + 1;
        let Ok(raw) = std::str::from_utf8(raw) else {
            return Err(error(line, "not UTF-8".into()));
        };
        let fields: Vec<&str> = raw.split(' ').collect();
        if raw.is_empty() {
            continue;
        }
        let (verb, index, user) = match fields[..] {
            [verb, index, user] if !user.is_empty() => (verb, index, user),
            _ => {
                return Err(error(
                    line,
                    format!(
                        "expected 'book|cancel INDEX USER', found '{}'",
                        crate::protocol::shorten(raw)
                    ),
                ));
            }
        };
        let index = crate::protocol::parse_index(index)
            .map_err(|_| error(line, format!("'{index}' is not a slot index")))?;
        if !known.contains(&index) {
            return Err(error(
                line,
                format!("slot {index} is not in the availabilities"),
            ));
        }
        match verb {
            "book" => {
                if let Some(holder) = held.get(&index) {
                    return Err(error(
                        line,
                        format!("slot {index} booked by {user} while {holder} holds it"),
                    ));
                }
                held.insert(index, user.to_owned());
            }
            "cancel" => {
                if held.get(&index).map(String::as_str) != Some(user) {
                    return Err(error(
                        line,
                        format!("cancel of slot {index} for {user}, who does not hold it"),
                    ));
                }
                held.remove(&index);
            }
            other => {
                return Err(error(
                    line,
                    format!("unknown record '{}'", crate::protocol::shorten(other)),
                ));
            }
        }
    }
    let mut holders: Vec<(u64, String)> = held.into_iter().collect();
    holders.sort();
    Ok(Replay {
        holders,
        warnings: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots() -> Vec<Slot> {
        crate::data::Fixtures::load(&crate::data::Source::built_in())
            .unwrap()
            .slots
    }

    fn open_with(
        text: &[u8],
    ) -> (
        tempfile::TempDir,
        PathBuf,
        Result<(Ledger, Replay), DataError>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger");
        std::fs::write(&path, text).unwrap();
        let opened = Ledger::open(&path, &slots());
        (dir, path, opened)
    }

    #[test]
    fn bookings_survive_a_reopen_and_cancels_free_slots() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ledger");
        let (ledger, replay) = Ledger::open(&path, &slots()).unwrap();
        assert_eq!(replay, Replay::default());
        ledger.record_booking(2, "patient1").unwrap();
        ledger.record_booking(5, "patient2").unwrap();
        ledger.record_cancel(2, "patient1").unwrap();
        drop(ledger);
        let (_, replay) = Ledger::open(&path, &slots()).unwrap();
        assert_eq!(replay.holders, [(5, "patient2".to_owned())]);
        assert!(replay.warnings.is_empty());
    }

    #[test]
    fn a_torn_last_line_is_ignored_cut_off_and_warned_about() {
        let (_dir, path, opened) = open_with(b"book 1 patient1\nbook 2 pat");
        let (ledger, replay) = opened.unwrap();
        assert_eq!(replay.holders, [(1, "patient1".to_owned())]);
        assert_eq!(replay.warnings.len(), 1);
        assert!(
            replay.warnings[0].contains("line 2: torn last line"),
            "{:?}",
            replay.warnings
        );
        ledger.record_booking(3, "patient2").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "book 1 patient1\nbook 3 patient2\n"
        );
    }

    #[test]
    fn corruption_is_an_error_with_its_line() {
        let cases: [(&[u8], &str); 6] = [
            (
                b"book 1 a\nbogus\n",
                "line 2: expected 'book|cancel INDEX USER', found 'bogus'",
            ),
            (b"book x a\n", "line 1: 'x' is not a slot index"),
            (b"book 9 a\n", "line 1: slot 9 is not in the availabilities"),
            (
                b"book 1 a\nbook 1 b\n",
                "line 2: slot 1 booked by b while a holds it",
            ),
            (
                b"cancel 1 a\n",
                "line 1: cancel of slot 1 for a, who does not hold it",
            ),
            (b"take 1 a\n", "line 1: unknown record 'take'"),
        ];
        for (text, expected) in cases {
            let (_dir, _path, opened) = open_with(text);
            let err = opened.err().expect("corrupt ledger refused");
            assert!(err.to_string().ends_with(expected), "{err} / {expected}");
        }
    }
}
