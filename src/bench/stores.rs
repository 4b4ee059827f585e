//! The stores a booking run is measured on, each made fresh for one run
//! and removed after it: the memory store (the one the others are held
//! to), a temporary SQLite file, or a new database on a PostgreSQL server
//! (`--postgres URL`, else `MEDSIM_TEST_POSTGRES`).
//!
//! This module owns the stores and centers cases: making and removing
//! each store, one booking run on it, the disk's own fsync rate, and the
//! tables' pairing (each store on disk held to the memory store's run of
//! the same repeat). The store itself is `store`'s, opened by `system`
//! like any center's.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::Context as _;

use super::load::{self, Exchange, drive};
use super::{Centers, Options, Pair, Run, for_duration};
use crate::console::Console;
use crate::stats::{self, Spread};
use crate::store::StoreUrl;

/// The variable the tests use to name a PostgreSQL server; the bench reads
/// it when `--postgres` is not given.
pub(super) const POSTGRES_VAR: &str = "MEDSIM_TEST_POSTGRES";

/// The kinds of store the booking path is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The stores on disk are held to it.
    Memory,
    Sqlite,
    Postgres,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Memory => "memory",
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
        }
    }
}

/// A store made for one run: its URL, and what to remove at the end.
pub(super) struct FreshStore {
    pub(super) url: StoreUrl,
    cleanup: Cleanup,
}

enum Cleanup {
    Files(Vec<PathBuf>),
    Database { admin_url: String, name: String },
}

impl FreshStore {
    /// A new, empty store of `kind`: an SQLite file in `dir`, or a new
    /// database on the server of `postgres` (a URL whose user may create
    /// databases).
    ///
    /// # Errors
    ///
    /// The server cannot be reached or refuses `CREATE DATABASE`.
    pub(super) fn make(
        kind: Kind,
        dir: &std::path::Path,
        postgres: Option<&str>,
    ) -> anyhow::Result<FreshStore> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        match kind {
            Kind::Memory => Ok(FreshStore {
                url: StoreUrl::Memory,
                cleanup: Cleanup::Files(Vec::new()),
            }),
            Kind::Sqlite => {
                let file = dir.join(format!("booking-{n}.sqlite"));
                let side = |suffix: &str| {
                    let mut path = file.clone().into_os_string();
                    path.push(suffix);
                    PathBuf::from(path)
                };
                let files = vec![file.clone(), side("-wal"), side("-shm")];
                for f in &files {
                    let _ = std::fs::remove_file(f);
                }
                Ok(FreshStore {
                    url: StoreUrl::Sqlite(file),
                    cleanup: Cleanup::Files(files),
                })
            }
            Kind::Postgres => {
                let admin_url = postgres.context("no PostgreSQL server given")?;
                let name = format!("medsim_bench_{}_{n}", std::process::id());
                let mut admin = postgres::Client::connect(admin_url, postgres::NoTls)
                    .with_context(|| {
                        format!(
                            "connecting to {} for CREATE DATABASE",
                            StoreUrl::Postgres(admin_url.to_owned())
                        )
                    })?;
                admin
                    .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
                    .with_context(|| format!("CREATE DATABASE {name}"))?;
                Ok(FreshStore {
                    url: StoreUrl::Postgres(crate::store::postgres::with_database(
                        admin_url, &name,
                    )),
                    cleanup: Cleanup::Database {
                        admin_url: admin_url.to_owned(),
                        name,
                    },
                })
            }
        }
    }
}

impl Drop for FreshStore {
    fn drop(&mut self) {
        // Best effort: what is left behind is only disk space.
        match &self.cleanup {
            Cleanup::Files(files) => {
                for f in files {
                    let _ = std::fs::remove_file(f);
                }
            }
            Cleanup::Database { admin_url, name } => {
                if let Ok(mut admin) = postgres::Client::connect(admin_url, postgres::NoTls) {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                }
            }
        }
    }
}

/// Slots for a booking run on a store on disk: more than it can book (a
/// few thousand a second here), few enough to fill quickly.
pub(super) fn disk_slots(seconds: f64) -> u64 {
    (seconds * 30_000.0).max(10_000.0) as u64
}

/// One booking run on a fresh store of `kind` with `centers` centers on
/// it, clients taking the centers in turn.
pub(super) fn store_run(
    kind: Kind,
    postgres: Option<&str>,
    dir: &Path,
    centers: usize,
    concurrency: usize,
    seconds: f64,
) -> anyhow::Result<Run> {
    let store = FreshStore::make(kind, dir, postgres)?;
    let medsim = load::medsim_on(
        store.url.clone(),
        centers,
        disk_slots(seconds),
        false,
        Console::silent(),
    )
    .with_context(|| format!("starting a center on {}", store.url))?;
    let addrs = medsim.centers();
    let stop = for_duration(seconds);
    let commits_before = crate::store::commit::COMMITS.load(Ordering::Relaxed);
    let started = Instant::now();
    let mut run = drive(concurrency, &stop, &|rng, client| {
        let center = addrs[client.number % addrs.len()];
        client.session(Exchange::Booking, center, rng)
    });
    run.commits = crate::store::commit::COMMITS.load(Ordering::Relaxed) - commits_before;
    run.commits_per_second = run.commits as f64 / started.elapsed().as_secs_f64().max(1e-9);
    // The centers let go of the database before it is dropped.
    drop(medsim);
    drop(store);
    Ok(run)
}

/// The disk's own limit: 4 KiB writes to a file in `dir`, each made
/// durable with `fdatasync`, for `seconds`; how many a second.
pub(super) fn disk_fsyncs_per_second(dir: &Path, seconds: f64) -> anyhow::Result<f64> {
    use std::io::Write as _;
    let path = dir.join("fsync-probe");
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let block = [0u8; 4096];
    let started = Instant::now();
    let mut syncs = 0u64;
    while started.elapsed().as_secs_f64() < seconds {
        file.write_all(&block)?;
        file.sync_data()?;
        syncs += 1;
    }
    let rate = syncs as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(rate)
}

/// The PostgreSQL server of the postgres rows, or why there is none.
pub(super) fn postgres_server(options: &Options) -> Result<String, String> {
    if let Some(url) = &options.postgres {
        return Ok(url.clone());
    }
    match std::env::var(POSTGRES_VAR) {
        Ok(url) if !url.trim().is_empty() => Ok(url.trim().to_owned()),
        _ => Err(format!(
            "no PostgreSQL server: give --postgres URL or set {POSTGRES_VAR} \
             (a URL whose user may CREATE DATABASE)"
        )),
    }
}

/// The booking path on each store at each concurrency: every repeat runs
/// the memory store and each store on disk in turn, and a store on disk is
/// held to the memory store's run of the same repeat (bookings a second,
/// and p99), as issue 17 sets it. Which store goes first rotates, so what
/// one run leaves behind falls on each in turn.
pub(super) fn store_cases(
    options: &Options,
    postgres: Option<&str>,
    dir: &Path,
    log: &mut dyn FnMut(&Pair),
) -> anyhow::Result<Vec<Pair>> {
    let kinds: Vec<Kind> = [Kind::Memory, Kind::Sqlite, Kind::Postgres]
        .into_iter()
        .filter(|&kind| kind != Kind::Postgres || postgres.is_some())
        .collect();
    let mut pairs = Vec::new();
    for &concurrency in &options.concurrency {
        let mut runs: Vec<Vec<Run>> = vec![Vec::new(); kinds.len()];
        for repeat in 0..options.repeats.max(1) {
            for k in 0..kinds.len() {
                let at = (k + repeat) % kinds.len();
                runs[at].push(store_run(
                    kinds[at],
                    postgres,
                    dir,
                    1,
                    concurrency,
                    options.seconds,
                )?);
            }
        }
        let memory = &runs[0];
        for (kind, own) in kinds.iter().zip(&runs) {
            let ratios: Vec<f64> = own
                .iter()
                .zip(memory)
                .map(|(run, base)| run.bookings_per_second / base.bookings_per_second.max(1e-9))
                .collect();
            let p99_ratios: Vec<f64> = own
                .iter()
                .zip(memory)
                .map(|(run, base)| run.p99_us / base.p99_us.max(1e-9))
                .collect();
            let median_run = |runs: &[Run]| {
                stats::median_by(runs, |r| r.bookings_per_second).unwrap_or_default()
            };
            let result = Pair {
                case: format!("booking {}", kind.name()),
                concurrency,
                medsim: median_run(own),
                floor: median_run(memory),
                ratio: stats::median(&ratios),
                ratio_spread: Spread::of(&ratios).unwrap_or_default(),
                ratios,
                p99_ratio: stats::median(&p99_ratios),
                p99_ratio_spread: Spread::of(&p99_ratios).unwrap_or_default(),
                p99_ratios,
            };
            log(&result);
            pairs.push(result);
        }
    }
    Ok(pairs)
}

/// The booking path of each of `--centers` centers on one PostgreSQL
/// database; each repeat runs every count in turn, and each count's
/// bookings per second is divided by the first count's of that repeat.
pub(super) fn centers_cases(
    options: &Options,
    postgres: &str,
    dir: &Path,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<Centers>> {
    let counts: Vec<usize> = options.centers.iter().map(|&n| n.max(1)).collect();
    let concurrency = options.centers_concurrency.max(1);
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); counts.len()];
    for _ in 0..options.repeats.max(1) {
        for (k, &centers) in counts.iter().enumerate() {
            runs[k].push(store_run(
                Kind::Postgres,
                Some(postgres),
                dir,
                centers,
                concurrency,
                options.seconds,
            )?);
        }
    }
    let mut rows = Vec::new();
    for (k, &centers) in counts.iter().enumerate() {
        let ratios: Vec<f64> = runs[k]
            .iter()
            .zip(&runs[0])
            .map(|(run, first)| run.bookings_per_second / first.bookings_per_second.max(1e-9))
            .collect();
        let row = Centers {
            centers,
            concurrency,
            run: stats::median_by(&runs[k], |r| r.bookings_per_second).unwrap_or_default(),
            vs_first: stats::median(&ratios),
            vs_first_spread: Spread::of(&ratios).unwrap_or_default(),
            ratios,
        };
        log(&format!(
            "postgres, {centers} centers at concurrency {concurrency}: {:.0} bookings/s, {:.2} of {} center (runs {})",
            row.run.bookings_per_second,
            row.vs_first,
            counts[0],
            row.vs_first_spread.show()
        ));
        rows.push(row);
    }
    Ok(rows)
}
