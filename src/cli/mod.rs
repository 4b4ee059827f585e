//! The flag groups several subcommands share, declared once: the data
//! directory, the framing a client speaks, where the doctors are, and the
//! parsers for durations, `NAME=ADDR` pairs and comma-separated lists.
//!
//! Each subcommand's own flags are in a file of this folder beside the
//! command that turns them into the library's plain options
//! ([`center`]); this file owns what two or more of them have in common,
//! so a flag means the same thing everywhere. The library names no clap.

pub mod center;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::data::Source;
use crate::net;
use crate::protocol::Dialect;

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
pub struct Framing {
    /// Framing to speak: `line` (medsim) or `classic` (NUL-terminated, for
    /// classic C servers).
    #[arg(long, default_value = "line", value_parser = parse_dialect)]
    pub dialect: Dialect,
    /// Classic dialect only: pad every message to this many bytes.
    #[arg(long, value_name = "BYTES")]
    pub classic_buffer: Option<usize>,
}

impl Default for Framing {
    fn default() -> Framing {
        Framing {
            dialect: Dialect::Line,
            classic_buffer: None,
        }
    }
}

impl Framing {
    /// The framing, refused when its flags contradict each other.
    ///
    /// # Errors
    ///
    /// `--classic-buffer` without `--dialect classic`, or a buffer too
    /// small to hold a NUL.
    pub fn checked(self) -> anyhow::Result<Framing> {
        if let Some(bytes) = self.classic_buffer {
            anyhow::ensure!(
                self.dialect == Dialect::Classic,
                "--classic-buffer pads classic messages: add --dialect classic"
            );
            anyhow::ensure!(
                bytes >= 1,
                "--classic-buffer must be at least 1 byte, not {bytes}"
            );
        }
        Ok(self)
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

/// Where a client finds each doctor: the `--doctor` overrides by name, and
/// the host the center's ports refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorRoutes {
    /// The host the center's ports refer to.
    pub host: String,
    /// `NAME` → `HOST:PORT`, from `--doctor`.
    pub by_name: BTreeMap<String, String>,
}

impl Doctors {
    /// The routes, with `center_host` as the host when `--doctor-host` is
    /// not given.
    pub fn routes(&self, center_host: &str) -> DoctorRoutes {
        let host = self
            .doctor_host
            .clone()
            .unwrap_or_else(|| center_host.to_owned());
        let by_name = self
            .doctors
            .iter()
            .map(|(name, addr)| (name.clone(), with_host(addr, &host)))
            .collect();
        DoctorRoutes { host, by_name }
    }
}

impl DoctorRoutes {
    /// Where to ask the doctor the center named `doctor` (when it named
    /// one) at `port`.
    pub fn address(&self, doctor: Option<&str>, port: u16) -> String {
        match doctor.and_then(|name| self.by_name.get(name)) {
            Some(addr) => addr.clone(),
            None => net::host_port(&self.host, port),
        }
    }
}

/// `PORT` alone means that port on `host`.
fn with_host(addr: &str, host: &str) -> String {
    match addr.parse::<u16>() {
        Ok(port) => net::host_port(host, port),
        Err(_) => addr.to_owned(),
    }
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

/// Parses a duration for a flag: a number with a unit (`250ms`, `1.5s`,
/// `2m`); a bare number is seconds. Zero and negative are refused: every
/// wait of medsim is bounded and positive.
///
/// # Errors
///
/// Not a number, an unknown unit, zero, negative or out of range.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 250ms, 1.5s, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" | "min" => value * 60.0,
        other => return Err(format!("unknown unit '{other}': use ms, s or m")),
    };
    if !(seconds.is_finite() && seconds > 0.0) {
        return Err(format!("'{text}' is not a positive duration"));
    }
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("'{text}' is out of range"))
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

/// Arguments as a shell would take them back, for the command a report
/// names: an empty one as `''`, one with spaces or quotes in single
/// quotes.
pub fn shell_words(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
            if plain {
                arg
            } else {
                format!("'{}'", arg.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Shows a duration as a flag would take it (`250ms`, `1.5s`).
pub fn show_duration(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units_and_bare_seconds() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(show_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(show_duration(Duration::from_secs(30)), "30s");
    }

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
    fn shell_words_quote_what_a_shell_would_split_or_drop() {
        let words = ["bench", "--scale", "", "--out", "my dir/b.json", "it's"];
        assert_eq!(
            shell_words(words.map(String::from)),
            r"bench --scale '' --out 'my dir/b.json' 'it'\''s'"
        );
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

    #[test]
    fn doctor_routes_prefer_the_named_override() {
        let doctors = Doctors {
            doctor_host: None,
            doctors: vec![
                ("doc1".into(), "41720".into()),
                ("doc2".into(), "10.0.0.2:42720".into()),
            ],
        };
        let routes = doctors.routes("127.0.0.1");
        assert_eq!(routes.address(Some("doc1"), 41000), "127.0.0.1:41720");
        assert_eq!(routes.address(Some("doc2"), 42000), "10.0.0.2:42720");
        assert_eq!(routes.address(Some("doc3"), 43000), "127.0.0.1:43000");
        assert_eq!(routes.address(None, 41000), "127.0.0.1:41000");
    }

    #[test]
    fn a_classic_buffer_needs_the_classic_dialect() {
        let line = Framing {
            dialect: Dialect::Line,
            classic_buffer: Some(100),
        };
        assert!(line.checked().is_err());
        let classic = Framing {
            dialect: Dialect::Classic,
            classic_buffer: Some(100),
        };
        assert!(classic.checked().is_ok());
    }
}
