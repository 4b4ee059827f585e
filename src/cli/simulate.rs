//! `medsim simulate`: its flags, and their reading into [`sim::Options`].

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValue;

use super::{DoctorsArgs, Fixtures, FramingArgs, parse_duration, parse_store};
use crate::sim::{self, Choice};
use crate::store::StoreUrl;
use crate::system::DEFAULT_LIST_CAP;

/// Run the center, the doctors and N patients in one process over loopback
/// sockets, and report what happened.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How many patients visit (at least 1).
    #[arg(long, default_value_t = 2, value_name = "N")]
    pub patients: usize,
    /// Generate M slots instead of the data's (doctors taken in turn; at
    /// least 1).
    #[arg(long, value_name = "M")]
    pub slots: Option<u64>,
    /// How patients choose a slot.
    #[arg(long, value_enum, default_value_t = Choice::Random)]
    pub choice: Choice,
    /// Seed for choices and datagram loss [default: from the clock, and
    /// printed so the run can be repeated].
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Patients running at once [default: N, at most 64; 1 with --pace or
    /// --step].
    #[arg(long, value_name = "C")]
    pub concurrency: Option<usize>,
    /// Print the report as one JSON document on stdout.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub fixtures: Fixtures,
    /// Fraction of doctor datagrams dropped, each way, to show the
    /// patients' retries: from 0 up to, not including, 1.
    #[arg(long, default_value_t = 0.0, value_name = "P")]
    pub udp_loss: f64,
    /// Time a patient waits for a quote before sending again.
    #[arg(long, default_value = "100ms", value_parser = parse_duration, value_name = "DURATION")]
    pub quote_timeout: Duration,
    /// Quote requests a patient sends in all before giving up.
    #[arg(long, default_value_t = 20, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub quote_attempts: u32,
    /// Most free slots a center lists in one answer (the lowest free; with
    /// several centers on PostgreSQL, from each center's part of the table).
    #[arg(long, default_value_t = DEFAULT_LIST_CAP, value_name = "N")]
    pub list_cap: usize,
    /// Centers to start, all on one store, patients spread over them in
    /// turn (at least 1).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub centers: usize,
    /// Where the centers keep the slot table: `memory`, `sqlite:FILE` or
    /// `postgres://USER@HOST/DB` (made and filled when missing; an existing
    /// one must hold the run's slots).
    #[arg(long, default_value = "memory", value_name = "URL", value_parser = parse_store)]
    pub store: StoreUrl,
    /// How the patients frame their messages.
    #[command(flatten)]
    pub framing: FramingArgs,
    /// Run the patients against the center at ADDR (any implementation of
    /// the protocol) and start no servers. Credentials come from --users or
    /// the data's users.txt, reused in turn when patients outnumber them.
    #[arg(long, value_name = "ADDR")]
    pub center: Option<String>,
    /// With --center: where the doctors are.
    #[command(flatten)]
    pub doctors: DoctorsArgs,
    /// With --center: the users to log in as, one `USERNAME PASSWORD` a line
    /// [default: the data's users.txt].
    #[arg(long, value_name = "FILE", requires = "center")]
    pub users: Option<PathBuf>,
    /// Write a Mermaid sequence diagram of every message exchanged (TCP and
    /// UDP, passwords masked) to FILE, or to stdout for `-` (the report then
    /// goes to stderr). For runs of at most 20 patients.
    #[arg(long, value_name = "FILE")]
    pub diagram: Option<PathBuf>,
    /// Wait this long before every message a patient sends (e.g. 700ms),
    /// and print every party's phase messages, so a live audience can
    /// follow.
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub pace: Option<Duration>,
    /// Serve a live view of the run in a browser at ADDR [default: a free
    /// loopback port]; the URL is printed. It stays up after the run until
    /// Ctrl-C. Off loopback the plain URL is read only, and the controls
    /// need the teacher's URL (with a token) printed in the terminal.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:0")]
    pub live: Option<String>,
    /// Hold every message until Enter is pressed (one message per Enter)
    /// or Step on the live page, and print every party's phase messages.
    /// With stdin not a terminal, steps come from the page only (--live
    /// needed).
    #[arg(long)]
    pub step: bool,
    /// Write the run as one self-contained HTML file (slot table, sequence
    /// diagram for up to 20 patients, latency chart, invariants).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
}

impl Args {
    fn options(&self) -> sim::Options {
        sim::Options {
            patients: self.patients,
            slots: self.slots,
            choice: self.choice,
            seed: self.seed,
            concurrency: self.concurrency,
            json: self.json,
            source: self.fixtures.source(),
            udp_loss: self.udp_loss,
            quote_timeout: self.quote_timeout,
            quote_attempts: self.quote_attempts,
            list_cap: self.list_cap,
            centers: self.centers,
            store: self.store.clone(),
            framing: self.framing.into(),
            center: self.center.clone(),
            doctors: self.doctors.overrides(),
            users: self.users.clone(),
            diagram: self.diagram.clone(),
            pace: self.pace,
            live: self.live.clone(),
            step: self.step,
            report: self.report.clone(),
        }
    }
}

/// `--choice`: the words, and what each means in `--help`.
impl clap::ValueEnum for Choice {
    fn value_variants<'a>() -> &'a [Self] {
        &[Choice::First, Choice::Random, Choice::Same]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        Some(match self {
            Choice::First => PossibleValue::new("first").help("The lowest listed index"),
            Choice::Random => {
                PossibleValue::new("random").help("A listed index at random (seeded)")
            }
            Choice::Same => PossibleValue::new("same").help(
                "Everyone asks for the same slot (the lowest index of the table), a race with exactly one winner",
            ),
        })
    }
}

/// The `simulate` subcommand. Returns 0 when every invariant holds, 1
/// otherwise.
///
/// # Errors
///
/// As [`sim::run`].
pub fn run(args: &Args) -> anyhow::Result<u8> {
    sim::run(&args.options())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Line {
        #[command(flatten)]
        args: Args,
    }

    fn options(flags: &[&str]) -> sim::Options {
        Line::try_parse_from(std::iter::once("simulate").chain(flags.iter().copied()))
            .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
            .args
            .options()
    }

    #[test]
    fn every_choice_is_a_word_of_the_flag() {
        for (word, choice) in [
            ("first", Choice::First),
            ("random", Choice::Random),
            ("same", Choice::Same),
        ] {
            assert_eq!(options(&["--choice", word]).choice, choice);
        }
        assert_eq!(options(&[]).choice, Choice::Random);
        assert!(Line::try_parse_from(["simulate", "--choice", "last"]).is_err());
    }

    #[test]
    fn flags_become_the_options_they_name() {
        let o = options(&[
            "--center",
            "10.0.0.1:21720",
            "--doctor",
            "doc1=10.0.0.2:41720",
            "--dialect",
            "classic",
            "--pace",
            "700ms",
            "--store",
            "sqlite:slots.db",
        ]);
        assert_eq!(o.center.as_deref(), Some("10.0.0.1:21720"));
        assert_eq!(o.doctors.host, None);
        assert_eq!(
            o.doctors.by_name,
            [("doc1".to_owned(), "10.0.0.2:41720".to_owned())]
        );
        assert_eq!(o.framing.dialect, crate::protocol::Dialect::Classic);
        assert_eq!(o.pace, Some(Duration::from_millis(700)));
        assert_eq!(Some(o.store), StoreUrl::parse("sqlite:slots.db").ok());
        // The flags' defaults are the run's, but for the seed: from the
        // clock on the command line, fixed in code.
        let defaults = options(&[]);
        let code = sim::Options::default();
        assert_eq!(defaults.seed, None);
        assert_eq!(
            (
                defaults.patients,
                defaults.quote_timeout,
                defaults.quote_attempts
            ),
            (code.patients, code.quote_timeout, code.quote_attempts)
        );
        assert_eq!(
            (defaults.list_cap, defaults.centers, defaults.udp_loss),
            (code.list_cap, code.centers, code.udp_loss)
        );
    }
}
