//! The command line's flags, behind a wall (ripgrep's crates/core/flags/):
//! clap is named only here and in `main.rs`. Each subcommand's file
//! ([`doctor`], [`patient`], [`simulate`]) holds its clap struct, turns the
//! flags into the plain options of the library module, and calls its run;
//! the library modules know no flags. `tests/walls.rs` holds the wall.
//!
//! This file holds the flag groups several subcommands share, declared
//! once so a flag means the same thing everywhere (the data directory, the
//! framing a client speaks, where the doctors are), and the parsers of
//! flag values. center, check and bench still declare their flags beside
//! their runs (they move in issue 18.1).

pub mod doctor;
pub mod patient;
pub mod simulate;

use std::path::PathBuf;

use crate::client::{DoctorOverrides, DoctorRoutes};
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

impl FramingArgs {
    /// The framing, refused when its flags contradict each other
    /// ([`Framing::checked`]).
    ///
    /// # Errors
    ///
    /// As [`Framing::checked`].
    pub fn checked(self) -> anyhow::Result<Framing> {
        Framing::from(self).checked()
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
pub struct Doctors {
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

impl Doctors {
    /// The overrides these flags give.
    pub fn overrides(&self) -> DoctorOverrides {
        DoctorOverrides {
            host: self.doctor_host.clone(),
            by_name: self.doctors.clone(),
        }
    }

    /// The routes, with `center_host` as the host when `--doctor-host` is
    /// not given: for `check`, whose run still reads its flags (until its
    /// flags move here, issue 18.1).
    pub fn routes(&self, center_host: &str) -> DoctorRoutes {
        self.overrides().routes(center_host)
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

#[cfg(test)]
mod tests {
    use super::*;

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
