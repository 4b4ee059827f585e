//! `medsim bench`: its flags, and their reading into [`bench::Options`].

use std::path::PathBuf;

use super::{parse_counts, parse_duration, parse_list};
use crate::bench::{self, Case};

/// Measure the center and the doctors against minimal servers in the same
/// run, and simulate's cost per patient as N grows. Prints a table and
/// writes it as JSON.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// How long each measured run lasts, in seconds or with a unit (e.g.
    /// 1, 500ms), as every duration flag of medsim takes.
    #[arg(long, default_value_t = 1.0, value_name = "DURATION", value_parser = parse_seconds)]
    pub seconds: f64,
    /// Runs of each case (medsim and its floor in turn); medians are
    /// reported.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub repeats: usize,
    /// Client concurrencies for the center's paths (list, phases,
    /// booking, stores), comma-separated; empty skips those rows.
    #[arg(long, default_value = "1,8,64,256", value_parser = parse_counts, value_name = "C,..")]
    pub concurrency: ::std::vec::Vec<usize>,
    /// Client concurrencies for the doctor's quotes, comma-separated; empty
    /// skips them.
    #[arg(long, default_value = "1,8", value_parser = parse_counts, value_name = "C,..")]
    pub quote_concurrency: ::std::vec::Vec<usize>,
    /// Sessions of the sustained run (list path, concurrency 64, one center
    /// process); 0 skips it.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub sustained: u64,
    /// Patient counts for the scale runs of `simulate --patients N --slots
    /// N --choice random`, comma-separated; empty skips them.
    #[arg(long, default_value = "1000,10000,100000", value_parser = parse_counts, value_name = "N,..")]
    pub scale: ::std::vec::Vec<usize>,
    /// The cases to run, comma-separated: list, phases, booking, stores,
    /// centers, quote, scale, watched, sustained.
    #[arg(long, default_value = "list,phases,booking,stores,centers,quote,scale,watched,sustained", value_parser = parse_cases, value_name = "CASE,..")]
    pub cases: ::std::vec::Vec<Case>,
    /// A PostgreSQL server for the postgres rows, as a URL whose user may
    /// CREATE DATABASE (a fresh database is made for each run and dropped
    /// after it). Default: $MEDSIM_TEST_POSTGRES; without either, the
    /// postgres rows are skipped with the reason printed.
    #[arg(long, value_name = "URL")]
    pub postgres: Option<String>,
    /// Centers on one PostgreSQL database for the `centers` case,
    /// comma-separated; the first is the one the others are compared to;
    /// empty skips the case.
    #[arg(long, default_value = "1,2,4", value_parser = parse_counts, value_name = "N,..")]
    pub centers: ::std::vec::Vec<usize>,
    /// Client concurrency of the `centers` case (clients take the centers
    /// in turn).
    #[arg(long, default_value_t = 64, value_name = "C")]
    pub centers_concurrency: usize,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench.json", value_name = "FILE")]
    pub out: PathBuf,
}

/// `--cases`: the names `--help` lists, comma-separated.
fn parse_cases(text: &str) -> Result<Vec<Case>, String> {
    parse_list(text, |name| {
        Case::ALL
            .into_iter()
            .find(|case| case.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Case::ALL.iter().map(|case| case.name()).collect();
                format!("'{name}' is not a case: use {}", names.join(", "))
            })
    })
}

/// `--seconds`, parsed as every duration flag is, kept as seconds.
fn parse_seconds(text: &str) -> Result<f64, String> {
    parse_duration(text).map(|d| d.as_secs_f64())
}

impl Args {
    fn options(&self) -> bench::Options {
        bench::Options {
            seconds: self.seconds,
            repeats: self.repeats,
            concurrency: self.concurrency.clone(),
            quote_concurrency: self.quote_concurrency.clone(),
            sustained: self.sustained,
            scale: self.scale.clone(),
            cases: self.cases.clone(),
            postgres: self.postgres.clone(),
            centers: self.centers.clone(),
            centers_concurrency: self.centers_concurrency,
            out: self.out.clone(),
        }
    }
}

/// The `bench` subcommand.
///
/// # Errors
///
/// As [`bench::run`].
pub fn run(args: &Args) -> anyhow::Result<u8> {
    bench::run(&args.options())
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

    fn options(flags: &[&str]) -> bench::Options {
        Line::try_parse_from(std::iter::once("bench").chain(flags.iter().copied()))
            .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
            .args
            .options()
    }

    #[test]
    fn every_case_is_a_word_of_the_flag_and_all_run_by_default() {
        for case in Case::ALL {
            assert_eq!(options(&["--cases", case.name()]).cases, [case]);
        }
        assert_eq!(options(&[]).cases, Case::ALL);
        assert_eq!(
            parse_cases("list,nope"),
            Err(
                "'nope' is not a case: use list, phases, booking, stores, centers, quote, \
                 scale, watched, sustained"
                    .to_owned()
            )
        );
    }

    #[test]
    fn flags_become_the_options_they_name() {
        let o = options(&[
            "--seconds",
            "500ms",
            "--repeats",
            "5",
            "--concurrency",
            "2,4",
            "--quote-concurrency",
            "",
            "--sustained",
            "0",
            "--scale",
            "10",
            "--postgres",
            "postgres://postgres@127.0.0.1/postgres",
            "--centers",
            "1,3",
            "--centers-concurrency",
            "16",
            "--out",
            "out.json",
        ]);
        assert_eq!(o.seconds, 0.5);
        assert_eq!(o.repeats, 5);
        assert_eq!(o.concurrency, [2, 4]);
        assert!(o.quote_concurrency.is_empty());
        assert_eq!(o.sustained, 0);
        assert_eq!(o.scale, [10]);
        assert_eq!(
            o.postgres.as_deref(),
            Some("postgres://postgres@127.0.0.1/postgres")
        );
        assert_eq!(o.centers, [1, 3]);
        assert_eq!(o.centers_concurrency, 16);
        assert_eq!(o.out, PathBuf::from("out.json"));
    }

    #[test]
    fn without_flags_bench_measures_the_documented_defaults() {
        let o = options(&[]);
        assert_eq!((o.seconds, o.repeats), (1.0, 3));
        assert_eq!(o.concurrency, [1, 8, 64, 256]);
        assert_eq!(o.quote_concurrency, [1, 8]);
        assert_eq!(o.sustained, 1_000_000);
        assert_eq!(o.scale, [1000, 10_000, 100_000]);
        assert_eq!(o.postgres, None);
        assert_eq!(o.centers, [1, 2, 4]);
        assert_eq!(o.centers_concurrency, 64);
        assert_eq!(o.out, PathBuf::from("target/bench.json"));
    }
}
