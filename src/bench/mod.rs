//! `medsim bench`: how fast the center and the doctors are, measured against
//! a floor in the same run, and how simulate's cost grows with N.
//!
//! This module owns the options (its flags are `cli/bench.rs`'s), the
//! center and quote cases, their pairing and the report's shape (a table
//! on stdout, the same as JSON in a file);
//! each other case is a file of its own: [`stores`] (the stores and
//! centers cases), [`scale`], [`sustained`], [`watched`]. The load
//! generator is [`load`]'s, the floors [`floor`]'s (servers that answer the
//! same exchanges with fixed bytes), the table [`report`]'s. Absolute figures
//! drift on a shared machine, so each medsim run is paired with a floor run
//! right before it and the ratio of the pair is what counts; the medians
//! over the repeats are reported.

mod floor;
mod load;
mod report;
mod scale;
mod stores;
mod sustained;
mod watched;

pub use report::render;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use floor::{Floor, UdpFloor, list_answer};
use load::{Exchange, drive};
use scale::{median_scale, scale_run};
use stores::{centers_cases, disk_fsyncs_per_second, postgres_server, store_cases};
use sustained::sustained_run;
pub use watched::Watched;

use crate::console::Console;
use crate::data;
use crate::stats::{self, Spread};
use crate::system::DEFAULT_LIST_CAP;

/// What a benchmark run measures, and where its report goes.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long each measured run lasts, in seconds (positive).
    pub seconds: f64,
    /// Runs of each case (medsim and its floor in turn); medians are
    /// reported.
    pub repeats: usize,
    /// Client concurrencies for the center's paths (list, phases, booking,
    /// stores); empty skips those rows.
    pub concurrency: Vec<usize>,
    /// Client concurrencies for the doctor's quotes; empty skips them.
    pub quote_concurrency: Vec<usize>,
    /// Sessions of the sustained run; 0 skips it.
    pub sustained: u64,
    /// Patient counts for the scale runs of simulate; empty skips them.
    pub scale: Vec<usize>,
    /// The cases to run (at least one).
    pub cases: Vec<Case>,
    /// A PostgreSQL server for the postgres rows, whose user may CREATE
    /// DATABASE; `$MEDSIM_TEST_POSTGRES` when `None`, and without either
    /// the postgres rows are skipped.
    pub postgres: Option<String>,
    /// Centers on one PostgreSQL database for the `centers` case; the
    /// first is the one the others are compared to; empty skips the case.
    pub centers: Vec<usize>,
    /// Client concurrency of the `centers` case.
    pub centers_concurrency: usize,
    /// Where to write the JSON report.
    pub out: PathBuf,
}

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Case {
    /// The center's list path, against its floor.
    List,
    /// The list path with the center's phase messages on (written to a
    /// sink), against the same floor.
    Phases,
    /// The center's booking path, against its floor.
    Booking,
    /// The booking path on an SQLite file and on a PostgreSQL database,
    /// against the same floor.
    Stores,
    /// The booking path of 1, 2 and 4 centers on one PostgreSQL database.
    Centers,
    /// The doctor's quotes, against a UDP floor.
    Quote,
    /// simulate at each `--scale` N.
    Scale,
    /// simulate of 1,000 patients unwatched, with `--live`, and with
    /// `--live` and 200 browsers that never read.
    Watched,
    /// The sustained run against one center process.
    Sustained,
}

impl Case {
    /// Every case, in the order a run takes them.
    pub const ALL: [Case; 9] = [
        Case::List,
        Case::Phases,
        Case::Booking,
        Case::Stores,
        Case::Centers,
        Case::Quote,
        Case::Scale,
        Case::Watched,
        Case::Sustained,
    ];

    /// The case's name, as `--cases` takes it.
    pub fn name(self) -> &'static str {
        match self {
            Case::List => "list",
            Case::Phases => "phases",
            Case::Booking => "booking",
            Case::Stores => "stores",
            Case::Centers => "centers",
            Case::Quote => "quote",
            Case::Scale => "scale",
            Case::Watched => "watched",
            Case::Sustained => "sustained",
        }
    }
}

/// Throughput and latency of one run.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Run {
    pub sessions: u64,
    pub errors: u64,
    /// Quote requests sent again after a lost datagram.
    pub retries: u64,
    pub per_second: f64,
    /// Sessions answered `DOCTOR PORT`: on a store on disk, each one
    /// committed before that answer went.
    #[serde(default)]
    pub bookings: u64,
    #[serde(default)]
    pub bookings_per_second: f64,
    /// Commits the stores on disk made during the run (group commit: one
    /// for many bookings), and their rate.
    #[serde(default)]
    pub commits: u64,
    #[serde(default)]
    pub commits_per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// One case: medsim against its floor at one concurrency.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pair {
    pub case: String,
    pub concurrency: usize,
    /// Medians over the repeats.
    pub medsim: Run,
    pub floor: Run,
    /// Median of each repeat's medsim/floor throughput ratio.
    pub ratio: f64,
    /// Every repeat's ratio.
    pub ratios: Vec<f64>,
    /// The smallest and the largest of `ratios`: how far the runs swung.
    #[serde(default)]
    pub ratio_spread: Spread,
    /// Median of each repeat's medsim/floor p99 ratio: the tail, paired
    /// as the throughput is.
    #[serde(default)]
    pub p99_ratio: f64,
    #[serde(default)]
    pub p99_ratios: Vec<f64>,
    /// The smallest and the largest of `p99_ratios`.
    #[serde(default)]
    pub p99_ratio_spread: Spread,
}

/// One scale run of simulate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Scale {
    pub patients: usize,
    /// Of the median run.
    pub wall_seconds: f64,
    /// Median over the repeats.
    pub us_per_patient: f64,
    /// Every repeat's time per patient.
    pub runs_us_per_patient: Vec<f64>,
    /// `us_per_patient` over the smallest N's: 1.0 is perfectly flat.
    pub vs_smallest: f64,
    /// The largest of the repeats.
    pub peak_rss_mib: Option<f64>,
    /// In every repeat.
    pub invariants_ok: bool,
}

/// The center process's size during the sustained run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sample {
    pub after_sessions: u64,
    pub rss_mib: f64,
    pub threads: u64,
}

/// The sustained run: many list-path sessions against one center process.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Sustained {
    pub sessions: u64,
    pub errors: u64,
    /// How the center process ended, when it ended before the run did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub center_exited: Option<String>,
    pub concurrency: usize,
    pub per_second: f64,
    pub samples: Vec<Sample>,
}

/// Several centers on one PostgreSQL database, against one center on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Centers {
    pub centers: usize,
    pub concurrency: usize,
    /// The median run by bookings per second.
    pub run: Run,
    /// Median of each repeat's bookings per second over the first count's
    /// (1 center) in the same repeat.
    pub vs_first: f64,
    /// Every repeat's ratio.
    pub ratios: Vec<f64>,
    /// The smallest and the largest of `ratios`.
    #[serde(default)]
    pub vs_first_spread: Spread,
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub command: String,
    pub date_unix: u64,
    pub machine: String,
    pub seconds_per_run: f64,
    pub repeats: usize,
    pub center: Vec<Pair>,
    /// The booking path on each store on disk (case `booking sqlite`,
    /// `booking postgres`); the memory store's is `booking` in `center`.
    #[serde(default)]
    pub stores: Vec<Pair>,
    /// PostgreSQL with several centers on one database.
    #[serde(default)]
    pub centers: Vec<Centers>,
    /// What the disk of the SQLite file does alone: 4 KiB writes, each
    /// followed by `fdatasync`, a second; the limit of commits a second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_fsyncs_per_second: Option<f64>,
    /// Cases not run, each with the reason.
    #[serde(default)]
    pub skipped: Vec<String>,
    pub quotes: Vec<Pair>,
    pub scale: Vec<Scale>,
    /// What a live view costs a run.
    #[serde(default)]
    pub watched: Vec<Watched>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sustained: Option<Sustained>,
}

/// Repeats (floor, then medsim) and pairs them up.
fn pair(
    case: &str,
    concurrency: usize,
    repeats: usize,
    mut floor_run: impl FnMut() -> anyhow::Result<Run>,
    mut medsim_run: impl FnMut() -> anyhow::Result<Run>,
) -> anyhow::Result<Pair> {
    let mut floors = Vec::new();
    let mut medsims = Vec::new();
    let mut ratios = Vec::new();
    let mut p99_ratios = Vec::new();
    for repeat in 0..repeats.max(1) {
        // Which goes first alternates, so what one run leaves behind for
        // the next (sockets in TIME_WAIT, a warm or cold cache) falls on
        // each side in turn.
        let (floor, medsim) = if repeat % 2 == 0 {
            let floor = floor_run()?;
            (floor, medsim_run()?)
        } else {
            let medsim = medsim_run()?;
            (floor_run()?, medsim)
        };
        ratios.push(medsim.per_second / floor.per_second.max(1e-9));
        p99_ratios.push(medsim.p99_us / floor.p99_us.max(1e-9));
        floors.push(floor);
        medsims.push(medsim);
    }
    let ratio = stats::median(&ratios);
    // The median run by throughput, so its latencies belong to it.
    let median_run = |runs: &[Run]| stats::median_by(runs, |r| r.per_second).unwrap_or_default();
    Ok(Pair {
        case: case.to_owned(),
        concurrency,
        medsim: median_run(&medsims),
        floor: median_run(&floors),
        ratio,
        ratio_spread: Spread::of(&ratios).unwrap_or_default(),
        ratios,
        p99_ratio: stats::median(&p99_ratios),
        p99_ratio_spread: Spread::of(&p99_ratios).unwrap_or_default(),
        p99_ratios,
    })
}

pub(super) fn for_duration(seconds: f64) -> impl Fn(u64) -> bool + Sync {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    move |_| Instant::now() >= deadline
}

/// The center's two paths at each concurrency, medsim and floor in turn.
fn center_cases(options: &Options, log: &mut dyn FnMut(&Pair)) -> anyhow::Result<Vec<Pair>> {
    let threads = options.concurrency.iter().copied().max().unwrap_or(1) + 4;
    let mut pairs = Vec::new();
    // (case, exchange, phase messages on, name in the report)
    let paths = [
        (Case::List, Exchange::List, false, "list"),
        (Case::Phases, Exchange::List, true, "list+phases"),
        (Case::Booking, Exchange::Booking, false, "booking"),
    ];
    for (_, path, phases, case) in paths
        .into_iter()
        .filter(|(case, ..)| options.cases.contains(case))
    {
        for &concurrency in &options.concurrency {
            let result = pair(
                case,
                concurrency,
                options.repeats,
                || floor_run(path, concurrency, threads, options.seconds),
                || {
                    // Enough free slots that a booking run never runs out:
                    // several times the most sessions a second seen here.
                    let slots = match path {
                        Exchange::List => 6,
                        Exchange::Booking => (options.seconds * 60_000.0).max(10_000.0) as u64,
                    };
                    // Phase messages formatted and written, to nowhere: their
                    // cost without a terminal's.
                    let console = if phases {
                        Console::phases_to(std::io::sink())
                    } else {
                        Console::silent()
                    };
                    let medsim = load::medsim(slots, path == Exchange::List, console)?;
                    let center = medsim.center();
                    let stop = for_duration(options.seconds);
                    Ok(drive(concurrency, &stop, &|rng, client| {
                        client.session(path, center, rng)
                    }))
                },
            )?;
            log(&result);
            pairs.push(result);
        }
    }
    Ok(pairs)
}

/// One run of the center's floor for `path`: fixed answers, and for a
/// booking a fixed quote from a UDP floor.
fn floor_run(
    path: Exchange,
    concurrency: usize,
    threads: usize,
    seconds: f64,
) -> anyhow::Result<Run> {
    let udp = UdpFloor::start(b"30\n")?;
    let doctors = [("doc1".to_owned(), udp.addr.port())];
    let slots: Vec<_> = data::generated_slots(DEFAULT_LIST_CAP as u64, &doctors).collect();
    let answers = match path {
        Exchange::List => vec![b"success\n".to_vec(), b"notavailable\n".to_vec()],
        Exchange::Booking => vec![
            b"success\n".to_vec(),
            list_answer(&slots),
            format!("doc1 {}\n", udp.addr.port()).into_bytes(),
        ],
    };
    let floor = Floor::start(answers, threads)?;
    let stop = for_duration(seconds);
    Ok(drive(concurrency, &stop, &|rng, client| {
        client.session(path, floor.addr, rng)
    }))
}

/// The cases asked for whose list was given empty (`--scale ''`): each
/// skipped, saying which flag emptied it.
fn emptied_lists(options: &Options) -> Vec<String> {
    let lists: [(&[Case], &[usize], &str); 4] = [
        (
            &[Case::List, Case::Phases, Case::Booking, Case::Stores],
            &options.concurrency,
            "--concurrency",
        ),
        (
            &[Case::Quote],
            &options.quote_concurrency,
            "--quote-concurrency",
        ),
        (&[Case::Scale], &options.scale, "--scale"),
        (&[Case::Centers], &options.centers, "--centers"),
    ];
    lists
        .into_iter()
        .filter(|(_, values, _)| values.is_empty())
        .filter_map(|(cases, _, flag)| {
            let asked: Vec<&str> = cases
                .iter()
                .filter(|case| options.cases.contains(case))
                .map(|case| case.name())
                .collect();
            (!asked.is_empty()).then(|| format!("{}: {flag} is empty", asked.join(", ")))
        })
        .collect()
}

/// Quotes per second from one medsim doctor and from the UDP floor.
fn quote_cases(options: &Options, log: &mut dyn FnMut(&Pair)) -> anyhow::Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for &concurrency in &options.quote_concurrency {
        let result = pair(
            "quote",
            concurrency,
            options.repeats,
            || {
                let udp = UdpFloor::start(b"30\n")?;
                let stop = for_duration(options.seconds);
                Ok(drive(concurrency, &stop, &|_, client| {
                    client.quote(udp.addr).unwrap_or(false)
                }))
            },
            || {
                let medsim = load::medsim(6, true, Console::silent())?;
                let doctor = medsim
                    .doctor("doc1")
                    .context("the bench system runs doc1")?;
                let stop = for_duration(options.seconds);
                Ok(drive(concurrency, &stop, &|_, client| {
                    client.quote(doctor).unwrap_or(false)
                }))
            },
        )?;
        log(&result);
        pairs.push(result);
    }
    Ok(pairs)
}

pub(super) fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("medsim-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// What this machine is, for the report.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    format!("{cores} cores, {cpu}, Linux {kernel}")
}

/// The `bench` subcommand.
///
/// # Errors
///
/// A server that cannot be started, or a report that cannot be written.
pub fn run(options: &Options) -> anyhow::Result<u8> {
    anyhow::ensure!(
        options.seconds > 0.0 && options.seconds.is_finite(),
        "--seconds must be positive"
    );
    anyhow::ensure!(
        !options.cases.is_empty(),
        "--cases is empty: name at least one case to measure (see --help)"
    );
    let command = format!(
        "medsim {}",
        crate::console::shell_words(std::env::args().skip(1))
    );
    let mut progress = |p: &Pair| {
        eprintln!(
            "{} at concurrency {}: ratio {:.2} (runs {})",
            p.case,
            p.concurrency,
            p.ratio,
            p.ratio_spread.show()
        )
    };
    let center = center_cases(options, &mut progress)?;
    let mut skipped = emptied_lists(options);
    for why in &skipped {
        eprintln!("skipped: {why}");
    }
    let postgres = postgres_server(options);
    let wants_postgres =
        options.cases.contains(&Case::Stores) || options.cases.contains(&Case::Centers);
    if let (Err(why), true) = (&postgres, wants_postgres) {
        eprintln!("postgres rows skipped: {why}");
        skipped.push(format!("postgres: {why}"));
    }
    let postgres = postgres.ok();
    let dir = tempfile_dir()?;
    let stores = if options.cases.contains(&Case::Stores) {
        store_cases(options, postgres.as_deref(), &dir, &mut progress)?
    } else {
        Vec::new()
    };
    let wants_disk =
        options.cases.contains(&Case::Stores) || options.cases.contains(&Case::Centers);
    let disk_fsyncs_per_second = if wants_disk {
        let rate = disk_fsyncs_per_second(&dir, options.seconds.min(1.0))?;
        eprintln!("the disk: {rate:.0} fsyncs a second (4 KiB write + fdatasync)");
        Some(rate)
    } else {
        None
    };
    let centers = match (&postgres, options.cases.contains(&Case::Centers)) {
        (Some(url), true) => centers_cases(options, url, &dir, &mut |line| eprintln!("{line}"))?,
        _ => Vec::new(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let quotes = if options.cases.contains(&Case::Quote) {
        quote_cases(options, &mut progress)?
    } else {
        Vec::new()
    };
    let mut scale = Vec::new();
    if options.cases.contains(&Case::Scale) {
        for &n in &options.scale {
            eprintln!(
                "simulate --patients {n}, {} times...",
                options.repeats.max(1)
            );
            let runs = (0..options.repeats.max(1))
                .map(|_| scale_run(n))
                .collect::<anyhow::Result<Vec<_>>>()?;
            scale.push(median_scale(runs));
        }
        let smallest = scale
            .iter()
            .min_by_key(|s| s.patients)
            .map(|s| s.us_per_patient);
        for s in &mut scale {
            s.vs_smallest = s.us_per_patient / smallest.unwrap_or(1.0).max(1e-9);
        }
    }
    let watched = if options.cases.contains(&Case::Watched) {
        watched::watched_cases(options.repeats, &mut |line| eprintln!("{line}"))?
    } else {
        Vec::new()
    };
    let sustained = if options.sustained > 0 && options.cases.contains(&Case::Sustained) {
        Some(sustained_run(options.sustained, &mut |line| {
            eprintln!("{line}")
        })?)
    } else {
        None
    };
    let report = Report {
        command,
        date_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        machine: machine(),
        seconds_per_run: options.seconds,
        repeats: options.repeats,
        center,
        stores,
        centers,
        disk_fsyncs_per_second,
        skipped,
        quotes,
        scale,
        watched,
        sustained,
    };
    crate::console::out(&render(&report))?;
    write_json(&options.out, &report)?;
    crate::console::out(&format!("\nwritten to {}\n", options.out.display()))?;
    Ok(0)
}

fn write_json(path: &Path, report: &Report) -> anyhow::Result<()> {
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(path, serde_json::to_string_pretty(report)?)
        .with_context(|| format!("writing {}", path.display()))
}
