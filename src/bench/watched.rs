//! The `watched` case: what a live view costs a run. The same
//! `simulate` of [`PATIENTS`] patients, in this process, three ways: not
//! watched (the floor), with `--live` and nobody looking, and with
//! `--live` and [`SLOW_READERS`] browsers that ask for the event stream
//! and never read it (a room of idle laptops, or an attack). Each repeat
//! runs the three in turn, the order rotating, and each watched run's wall
//! time is divided by the floor's of the same repeat.
//!
//! Only the audience is here; the runs are `sim`'s, the server `live`'s.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::sim;
use crate::stats;

/// Patients in each run.
pub(super) const PATIENTS: usize = 1000;
/// Browsers that never read, in the last variant.
pub(super) const SLOW_READERS: usize = 200;
/// How long a slow reader waits for its status line before the run.
const STATUS_WAIT: Duration = Duration::from_secs(10);

/// One variant of the watched case.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Watched {
    /// `unwatched`, `live`, `live + 200 slow readers`.
    pub case: String,
    pub patients: usize,
    /// Median over the repeats.
    pub wall_seconds: f64,
    /// Median of each repeat's wall time over the unwatched run's.
    pub vs_unwatched: f64,
    /// Every repeat's ratio.
    pub ratios: Vec<f64>,
    /// Slow readers that got a stream (the rest were told 503), in the
    /// last repeat.
    #[serde(default)]
    pub streams_taken: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Variant {
    Unwatched,
    Live,
    LiveSlowReaders,
}

impl Variant {
    fn name(self) -> String {
        match self {
            Variant::Unwatched => "unwatched".into(),
            Variant::Live => "live".into(),
            Variant::LiveSlowReaders => format!("live + {SLOW_READERS} slow readers"),
        }
    }
}

/// As [`slow_reader_io`], its failure as words: an I/O error of kind
/// `BrokenPipe` would otherwise end the bench quietly, as a closed stdout
/// does.
fn slow_reader(addr: SocketAddr) -> anyhow::Result<(TcpStream, bool)> {
    slow_reader_io(addr).map_err(|e| anyhow::anyhow!("a slow reader of {addr}: {e:#}"))
}

/// A browser that asks for the event stream, reads the status line, and
/// then nothing, its receive buffer as small as the kernel allows.
fn slow_reader_io(addr: SocketAddr) -> anyhow::Result<(TcpStream, bool)> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_recv_buffer_size(1)?;
    socket
        .connect(&addr.into())
        .with_context(|| format!("connecting a slow reader to {addr}"))?;
    let mut stream: TcpStream = socket.into();
    write!(stream, "GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n")?;
    stream.set_read_timeout(Some(STATUS_WAIT))?;
    let mut status = String::new();
    // One byte at a time, so nothing past the status line is taken.
    let mut reader = BufReader::with_capacity(1, stream.try_clone()?);
    reader.read_line(&mut status)?;
    Ok((stream, status.contains(" 200 ")))
}

/// One run of `variant`: its wall time, and how many slow readers got a
/// stream.
fn run(variant: Variant) -> anyhow::Result<(f64, usize)> {
    let args = sim::Options {
        patients: PATIENTS,
        slots: Some(PATIENTS as u64),
        seed: Some(1),
        live: (variant != Variant::Unwatched).then(|| "127.0.0.1:0".to_owned()),
        ..sim::Options::default()
    };
    let readers = parking_lot::Mutex::new(Vec::new());
    let failed = parking_lot::Mutex::new(None);
    let report = sim::simulate_watched_by(&args, &|addr| {
        if variant != Variant::LiveSlowReaders {
            return;
        }
        for _ in 0..SLOW_READERS {
            match slow_reader(addr) {
                Ok(reader) => readers.lock().push(reader),
                Err(e) => {
                    *failed.lock() = Some(e);
                    return;
                }
            }
        }
    })?;
    if let Some(e) = failed.into_inner() {
        return Err(e.context("bringing the slow readers"));
    }
    anyhow::ensure!(report.ok(), "the {} run broke an invariant", variant.name());
    let taken = readers
        .lock()
        .iter()
        .filter(|(_, streamed)| *streamed)
        .count();
    Ok((report.wall_seconds, taken))
}

/// The three variants, `repeats` times each, the order rotating.
pub(super) fn watched_cases(
    repeats: usize,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<Watched>> {
    let variants = [Variant::Unwatched, Variant::Live, Variant::LiveSlowReaders];
    let mut walls = vec![Vec::new(); variants.len()];
    let mut taken = 0;
    for repeat in 0..repeats.max(1) {
        let mut this = [0.0; 3];
        for k in 0..variants.len() {
            let k = (k + repeat) % variants.len();
            let (wall, streams) = run(variants[k])?;
            this[k] = wall;
            if variants[k] == Variant::LiveSlowReaders {
                taken = streams;
            }
        }
        for (k, wall) in this.into_iter().enumerate() {
            walls[k].push(wall);
        }
    }
    let rows: Vec<Watched> = variants
        .iter()
        .enumerate()
        .map(|(k, variant)| {
            let ratios: Vec<f64> = walls[k]
                .iter()
                .zip(&walls[0])
                .map(|(wall, floor)| wall / floor.max(1e-9))
                .collect();
            Watched {
                case: variant.name(),
                patients: PATIENTS,
                wall_seconds: stats::median(&walls[k]),
                vs_unwatched: stats::median(&ratios),
                ratios,
                streams_taken: if *variant == Variant::LiveSlowReaders {
                    taken
                } else {
                    0
                },
            }
        })
        .collect();
    for row in &rows {
        log(&format!(
            "watched: {} patients, {}: {:.3} s, {:.2}x the unwatched run",
            row.patients, row.case, row.wall_seconds, row.vs_unwatched
        ));
    }
    Ok(rows)
}

/// The case's lines in `bench`'s report.
pub(super) fn table(report: &super::Report) -> String {
    let mut out = format!(
        "\nwatched runs: simulate --patients {PATIENTS} --slots {PATIENTS} (median of {} runs; ratio = wall time / the unwatched run's, paired per run)\n",
        report.repeats
    );
    out.push_str(&crate::table::render(
        &[
            ("case", crate::table::Align::Left),
            ("wall s", crate::table::Align::Right),
            ("ratio", crate::table::Align::Right),
            ("every run's ratio", crate::table::Align::Left),
        ],
        report.watched.iter().map(|w| {
            let mut case = w.case.clone();
            if w.streams_taken > 0 {
                case.push_str(&format!(" ({} streamed, the rest 503)", w.streams_taken));
            }
            vec![
                case,
                format!("{:.3}", w.wall_seconds),
                format!("{:.2}", w.vs_unwatched),
                w.ratios
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ]
        }),
    ));
    out
}
