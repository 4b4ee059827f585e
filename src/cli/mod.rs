//! The command line's flags, behind a wall (ripgrep's crates/core/flags/):
//! clap is named only here and in `main.rs`. Every subcommand's file
//! ([`center`], [`doctor`], [`patient`], [`simulate`], [`check`],
//! [`bench`](mod@bench)) holds its clap struct, turns the flags into the
//! plain options of the library module, and calls its run; the library
//! modules know no flags. `tests/walls.rs` holds the wall.
//!
//! This file holds the flag groups several subcommands share, declared
//! once so a flag means the same thing everywhere (the data directory, the
//! framing a client speaks, where the doctors are), and the parsers of
//! flag values (durations, `NAME=ADDR` pairs, comma-separated lists).

pub mod bench;
pub mod center;
pub mod check;
pub mod doctor;
pub mod patient;
pub mod simulate;

use std::path::PathBuf;

use crate::client::DoctorOverrides;
use crate::data::Source;
use crate::protocol::{Dialect, Framing};
use crate::store::StoreUrl;

/// The parser of every duration flag (`--timeout 10s`): durations are
/// read one way, flags or not.
pub use crate::duration::parse_duration;

/// `--fixtures DIR`: where the classic data files are.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Fixtures {
    /// Directory of data files (users.txt, availabilities.txt, DOCTOR.txt,
    /// patientN.txt, patientNinsurance.txt) [default: the built-in copies
    /// of fixtures/; files in the current directory are not read].
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
}

impl Fixtures {
    /// Where to read the data from.
    pub fn source(&self) -> Source {
        Source::from_option(self.fixtures.as_deref())
    }
}

/// How a client frames its messages: `--dialect`, `--classic-buffer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct FramingArgs {
    /// Framing to speak: `line` (medsim) or `classic` (NUL-terminated, for
    /// classic C servers).
    #[arg(long, default_value = "line", value_parser = parse_dialect)]
    pub dialect: Dialect,
    /// Classic dialect only: pad every message to this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub classic_buffer: Option<usize>,
}

impl From<FramingArgs> for Framing {
    fn from(args: FramingArgs) -> Framing {
        Framing {
            dialect: args.dialect,
            classic_buffer: args.classic_buffer,
        }
    }
}

/// Parses `line` or `classic` for `--dialect`.
///
/// # Errors
///
/// Any other word.
pub fn parse_dialect(text: &str) -> Result<Dialect, String> {
    match text {
        "line" => Ok(Dialect::Line),
        "classic" => Ok(Dialect::Classic),
        other => Err(format!("'{other}' is not a dialect: use line or classic")),
    }
}

/// Where the doctors are: `--doctor-host HOST` and `--doctor
/// NAME=[HOST:]PORT`, for every client that asks them.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct DoctorsArgs {
    /// Host the center's `DOCTOR PORT` answers refer to [default: the
    /// center's host].
    #[arg(long, value_name = "HOST")]
    pub doctor_host: Option<String>,
    /// Where doctor NAME really listens, whatever port the center names
    /// for it: NAME=PORT on the doctor host, or NAME=HOST:PORT (repeatable).
    /// For data that says 41000 while doc1 listens on 41720:
    /// `--doctor doc1=41720`.
    #[arg(long = "doctor", value_name = "NAME=ADDR", value_parser = parse_name_addr)]
    pub doctors: Vec<(String, String)>,
}

impl DoctorsArgs {
    /// The overrides these flags give.
    pub fn overrides(&self) -> DoctorOverrides {
        DoctorOverrides {
            host: self.doctor_host.clone(),
            by_name: self.doctors.clone(),
        }
    }
}

/// Parses a store's URL (`--store`).
///
/// # Errors
///
/// Not a URL of a store medsim keeps slots in.
pub fn parse_store(text: &str) -> Result<StoreUrl, String> {
    StoreUrl::parse(text).map_err(|e| e.to_string())
}

/// Parses `NAME=ADDR` (`--listen`, `--doctor`).
///
/// # Errors
///
/// No `=`, or an empty side.
pub fn parse_name_addr(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, addr)) if !name.is_empty() && !addr.is_empty() => {
            Ok((name.to_owned(), addr.to_owned()))
        }
        _ => Err(format!(
            "'{text}' is not NAME=ADDR (e.g. doc1=41720 or doc1=127.0.0.1:41720)"
        )),
    }
}

/// Parses a comma-separated list for a flag that takes one (`1,8,64`),
/// each item with `item`; an empty value is an empty list, so `--scale ''`
/// skips what the list would run.
///
/// Such a flag is declared with the type `::std::vec::Vec<T>`: clap
/// treats a plain `Vec` as a repeatable flag of single items, where `''`
/// is one empty item and refused. Its default is written as the user
/// types it (`default_value = "1,8,64,256"`), and `--help` shows it so.
///
/// # Errors
///
/// The first item `item` refuses, or an empty item between commas.
pub fn parse_list<T>(
    text: &str,
    item: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    text.split(',')
        .map(|part| match part.trim() {
            "" => Err(format!(
                "'{text}' has an empty item: separate items by single commas"
            )),
            part => item(part),
        })
        .collect()
}

/// Parses a comma-separated list of whole numbers (`--concurrency 1,8`).
///
/// # Errors
///
/// An item that is not a whole number.
pub fn parse_counts(text: &str) -> Result<Vec<usize>, String> {
    parse_list(text, |part| {
        part.parse()
            .map_err(|_| format!("'{part}' is not a whole number"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_split_at_commas_and_empty_is_none() {
        assert_eq!(parse_counts("1,8,64"), Ok(vec![1, 8, 64]));
        assert_eq!(parse_counts(" 1, 8 "), Ok(vec![1, 8]));
        assert_eq!(parse_counts(""), Ok(vec![]));
        assert_eq!(
            parse_counts("1,,8"),
            Err("'1,,8' has an empty item: separate items by single commas".into())
        );
        assert_eq!(parse_counts("1,x"), Err("'x' is not a whole number".into()));
    }

    #[test]
    fn name_addr_needs_both_sides() {
        assert_eq!(
            parse_name_addr("doc1=41720"),
            Ok(("doc1".into(), "41720".into()))
        );
        assert!(parse_name_addr("doc1").is_err());
        assert!(parse_name_addr("=1").is_err());
        assert!(parse_name_addr("doc1=").is_err());
    }
}
