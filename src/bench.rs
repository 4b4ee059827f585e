//! `medsim bench`: how fast the center and the doctors are, measured against
//! a floor in the same run, and how simulate's cost grows with N.
//!
//! This module owns the load generator (threads of blocking clients that
//! run one whole exchange per session and time it), the floors (servers that
//! answer the same exchanges with fixed bytes: no parsing, no state, no
//! logging, a pool of pre-started threads), the cases, and the report (a
//! table on stdout, the same as JSON in a file). Absolute figures drift on a
//! shared machine, so each medsim run is paired with a floor run right
//! before it and the ratio of the pair is what counts; the medians over the
//! repeats are reported.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::center::{self, Center, Limits};
use crate::console::Console;
use crate::data::{Fixtures, Slot, Source, Users};
use crate::doctor::{self, Doctor};
use crate::protocol::{self, Dialect};
use crate::rng::SplitMix64;
use crate::shutdown::Shutdown;
use crate::slots::{DEFAULT_LIST_CAP, SlotBook};

const USER: &str = "patient1";
const PASSWORD: &str = "password111";
const PLAN: &str = "insurance1";
/// How long a benchmark client waits for any answer before calling the
/// session failed.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a benchmark client waits for a quote before asking again.
const QUOTE_WAIT: Duration = Duration::from_millis(50);
const QUOTE_ATTEMPTS: u32 = 40;

/// Measure the center and the doctors against minimal servers in the same
/// run, and simulate's cost per patient as N grows. Prints a table and
/// writes it as JSON.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Seconds each measured run lasts.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub seconds: f64,
    /// Runs of each case (medsim and its floor in turn); medians are
    /// reported.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub repeats: usize,
    /// Client concurrencies for the center's paths, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8, 64, 256], value_name = "C,..")]
    pub concurrency: Vec<usize>,
    /// Client concurrencies for the doctor's quotes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 8], value_name = "C,..")]
    pub quote_concurrency: Vec<usize>,
    /// Sessions of the sustained run (list path, concurrency 64, one center
    /// process); 0 skips it.
    #[arg(long, default_value_t = 1_000_000, value_name = "N")]
    pub sustained: u64,
    /// Patient counts for the scale runs of `simulate --patients N --slots
    /// N --choice random`, comma-separated; empty skips them.
    #[arg(long, value_delimiter = ',', default_values_t = [1_000, 10_000, 100_000], value_name = "N,..")]
    pub scale: Vec<usize>,
    /// The cases to run, comma-separated: list, phases, booking, quote,
    /// scale, sustained.
    #[arg(long, value_delimiter = ',', value_enum, default_values_t = [Case::List, Case::Phases, Case::Booking, Case::Quote, Case::Scale, Case::Sustained], value_name = "CASE,..")]
    pub cases: Vec<Case>,
    /// Where to write the JSON report.
    #[arg(long, default_value = "target/bench.json", value_name = "FILE")]
    pub out: PathBuf,
}

/// A part of the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Case {
    /// The center's list path, against its floor.
    List,
    /// The list path with the center's phase messages on (written to a
    /// sink), against the same floor.
    Phases,
    /// The center's booking path, against its floor.
    Booking,
    /// The doctor's quotes, against a UDP floor.
    Quote,
    /// simulate at each `--scale` N.
    Scale,
    /// The sustained run against one center process.
    Sustained,
}

/// Throughput and latency of one run.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Run {
    pub sessions: u64,
    pub errors: u64,
    /// Quote requests sent again after a lost datagram.
    pub retries: u64,
    pub per_second: f64,
    pub p50_us: f64,
    pub p99_us: f64,
}

/// One case: medsim against its floor at one concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct Pair {
    pub case: String,
    pub concurrency: usize,
    /// Medians over the repeats.
    pub medsim: Run,
    pub floor: Run,
    /// Median of each repeat's medsim/floor throughput ratio.
    pub ratio: f64,
    /// Every repeat's ratio, for the spread.
    pub ratios: Vec<f64>,
}

/// One scale run of simulate.
#[derive(Debug, Clone, Serialize)]
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
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    pub after_sessions: u64,
    pub rss_mib: f64,
    pub threads: u64,
}

/// The sustained run: many list-path sessions against one center process.
#[derive(Debug, Clone, Serialize)]
pub struct Sustained {
    pub sessions: u64,
    pub errors: u64,
    pub concurrency: usize,
    pub per_second: f64,
    pub samples: Vec<Sample>,
}

/// Everything one benchmark run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    pub date_unix: u64,
    pub machine: String,
    pub seconds_per_run: f64,
    pub repeats: usize,
    pub center: Vec<Pair>,
    pub quotes: Vec<Pair>,
    pub scale: Vec<Scale>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sustained: Option<Sustained>,
}

/// The exchanges a benchmark session runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exchange {
    /// connect, authenticate, `available` (answered `notavailable` by a
    /// fully booked center), close.
    List,
    /// authenticate, list, select a listed slot at random, and when booked,
    /// the doctor's quote over UDP.
    Booking,
}

/// Runs `session` on `concurrency` threads until `stop` says so; each
/// session is timed.
fn drive(
    concurrency: usize,
    stop: &(dyn Fn(u64) -> bool + Sync),
    session: &(dyn Fn(&mut SplitMix64, &mut Client) -> bool + Sync),
) -> Run {
    let started = Instant::now();
    let done = AtomicU64::new(0);
    let results: Vec<(Vec<u32>, u64, u64)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..concurrency)
            .map(|k| {
                let done = &done;
                scope.spawn(move || {
                    let mut rng = SplitMix64::new(k as u64 + 1);
                    let mut client = Client::new();
                    let mut latencies = Vec::with_capacity(1 << 14);
                    let mut errors = 0;
                    while !stop(done.fetch_add(1, Ordering::Relaxed)) {
                        let begun = Instant::now();
                        if session(&mut rng, &mut client) {
                            latencies
                                .push(begun.elapsed().as_micros().min(u128::from(u32::MAX)) as u32);
                        } else {
                            errors += 1;
                        }
                    }
                    (latencies, errors, client.retries)
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap_or_default())
            .collect()
    });
    let elapsed = started.elapsed().as_secs_f64();
    let errors = results.iter().map(|(_, e, _)| e).sum();
    let retries = results.iter().map(|(_, _, r)| r).sum();
    let mut latencies: Vec<u32> = results.into_iter().flat_map(|(l, _, _)| l).collect();
    latencies.sort_unstable();
    let percentile = |p: f64| crate::nearest_rank(&latencies, p).map_or(0.0, f64::from);
    Run {
        sessions: latencies.len() as u64,
        errors,
        retries,
        per_second: latencies.len() as f64 / elapsed.max(1e-9),
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
    }
}

/// A benchmark client's reusable buffers.
struct Client {
    buf: Vec<u8>,
    udp: Option<UdpSocket>,
    /// Quote requests sent again after a lost datagram.
    retries: u64,
}

impl Client {
    fn new() -> Client {
        Client {
            buf: Vec::with_capacity(4096),
            udp: None,
            retries: 0,
        }
    }

    /// Sends `request` and reads one `\n`-terminated answer into `buf`.
    fn ask(&mut self, stream: &mut TcpStream, request: &[u8]) -> io::Result<&[u8]> {
        stream.write_all(request)?;
        self.buf.clear();
        let mut chunk = [0u8; 4096];
        loop {
            let n = stream.read(&mut chunk)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
            if self.buf.last() == Some(&b'\n') {
                self.buf.pop();
                return Ok(&self.buf);
            }
        }
    }

    /// One session of `path` against the center at `addr`; true when every
    /// answer was the expected one.
    fn session(&mut self, path: Exchange, addr: SocketAddr, rng: &mut SplitMix64) -> bool {
        self.try_session(path, addr, rng).unwrap_or(false)
    }

    fn try_session(
        &mut self,
        path: Exchange,
        addr: SocketAddr,
        rng: &mut SplitMix64,
    ) -> io::Result<bool> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(CLIENT_TIMEOUT))?;
        let login = format!("authenticate {USER} {PASSWORD}\n");
        if self.ask(&mut stream, login.as_bytes())? != b"success" {
            return Ok(false);
        }
        let listed = self.ask(&mut stream, b"available\n")?;
        if path == Exchange::List {
            let ok = listed == b"notavailable";
            return Ok(ok && closed_by_server(&mut stream));
        }
        let Ok(protocol::SlotsAnswer::Slots(listings)) =
            protocol::parse_slots_answer(&String::from_utf8_lossy(listed))
        else {
            return Ok(false);
        };
        let choice = listings[rng.below(listings.len() as u64) as usize].index;
        let answer = self.ask(&mut stream, format!("selection {choice}\n").as_bytes())?;
        let port = match protocol::parse_selection_answer(&String::from_utf8_lossy(answer)) {
            Ok(protocol::SelectionAnswer::Assigned { port, .. }) => Some(port),
            // Lost the race for that slot: a whole session all the same.
            Ok(protocol::SelectionAnswer::NotAvailable) => None,
            _ => return Ok(false),
        };
        if !closed_by_server(&mut stream) {
            return Ok(false);
        }
        match port {
            Some(port) => self.quote(SocketAddr::new(addr.ip(), port)),
            None => Ok(true),
        }
    }

    /// One quote: the plan out, a whole number back. A lost datagram is
    /// sent again after [`QUOTE_WAIT`], as a patient would.
    fn quote(&mut self, doctor: SocketAddr) -> io::Result<bool> {
        let socket = match &self.udp {
            Some(socket) => socket,
            None => {
                let socket = UdpSocket::bind("127.0.0.1:0")?;
                socket.set_read_timeout(Some(QUOTE_WAIT))?;
                self.udp.insert(socket)
            }
        };
        let request = format!("{PLAN}\n");
        let mut answer = [0u8; 64];
        for _ in 0..QUOTE_ATTEMPTS {
            socket.send_to(request.as_bytes(), doctor)?;
            match socket.recv_from(&mut answer) {
                Ok((n, from)) if from == doctor => {
                    return Ok(answer[..n].first().is_some_and(u8::is_ascii_digit));
                }
                // A late answer to an earlier try: wait for this one's.
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    self.retries += 1;
                }
                Err(e) => return Err(e),
            }
        }
        Ok(false)
    }
}

/// Waits for the server to close after its last answer, as the protocol
/// has it. The side that closes first keeps the TIME_WAIT; were it the
/// client, a long run would use up its ephemeral ports.
fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0))
}

/// A server of fixed answers: pre-started threads that each accept a
/// connection, answer every `\n`-terminated request with the next of
/// `answers`, and close after the last. No parsing, no state, no logging.
struct Floor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Floor {
    fn start(answers: Vec<Vec<u8>>, threads: usize) -> io::Result<Floor> {
        let listener = center::bind("127.0.0.1:0").map_err(io::Error::other)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(answers);
        let mut handles = Vec::with_capacity(threads);
        for _ in 0..threads {
            let listener = listener.try_clone()?;
            let stop = Arc::clone(&stop);
            let answers = Arc::clone(&answers);
            handles.push(
                std::thread::Builder::new()
                    .stack_size(64 * 1024)
                    .spawn(move || floor_worker(&listener, &answers, &stop))?,
            );
        }
        Ok(Floor {
            addr,
            stop,
            threads: handles,
        })
    }
}

fn floor_worker(listener: &TcpListener, answers: &[Vec<u8>], stop: &AtomicBool) {
    let mut chunk = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut step = 0;
        'session: while step < answers.len() {
            let Ok(n) = stream.read(&mut chunk) else {
                break;
            };
            if n == 0 {
                break;
            }
            for _ in chunk[..n].iter().filter(|&&b| b == b'\n') {
                if stream.write_all(&answers[step]).is_err() {
                    break 'session;
                }
                step += 1;
            }
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Each worker blocks in accept(): one connection wakes each.
        for _ in &self.threads {
            let _ = TcpStream::connect(self.addr);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A UDP server of one fixed answer to every datagram, on one thread as a
/// medsim doctor is.
struct UdpFloor {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpFloor {
    fn start(answer: &'static [u8]) -> io::Result<UdpFloor> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let addr = socket.local_addr()?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stopping.load(Ordering::Relaxed) {
                if let Ok((_, from)) = socket.recv_from(&mut buf) {
                    let _ = socket.send_to(answer, from);
                }
            }
        });
        Ok(UdpFloor {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpFloor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A medsim center and doctors in this process, silent as `--quiet`.
struct Medsim {
    center: SocketAddr,
    doctor: SocketAddr,
    shutdown: Shutdown,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Medsim {
    /// A center whose `slots` all point at one doctor in this process;
    /// with `booked`, every slot is already reserved.
    fn start(slot_count: u64, booked: bool, console: Console) -> anyhow::Result<Medsim> {
        let fixtures = Fixtures::load(&Source::built_in())?;
        let doc1 = fixtures
            .doctor("doc1")
            .context("the built-in data has doc1")?;
        let socket = doctor::bind("doc1", "127.0.0.1:0")?;
        let doctor_addr = socket.local_addr()?;
        let slots = bench_slots(slot_count, doctor_addr.port());
        let book = SlotBook::new(&slots, DEFAULT_LIST_CAP);
        if booked {
            let holders: Vec<(u64, String)> = slots
                .iter()
                .map(|s| (s.index, "someone".to_owned()))
                .collect();
            book.restore(&holders);
        }
        let users = Users::from_pairs([(USER.to_owned(), PASSWORD.to_owned())]);
        let limits = Limits {
            max_sessions: 4096,
            ..Limits::default()
        };
        let center = Arc::new(Center::new(users, book, limits, console.clone()));
        let listener = center::bind("127.0.0.1:0")?;
        let center_addr = listener.local_addr()?;
        let shutdown = Shutdown::new();
        let doctor = Doctor::new("doc1", doc1.fees.clone(), console);
        let mut threads = Vec::new();
        {
            let shutdown = shutdown.clone();
            threads.push(std::thread::spawn(move || {
                let _ = doctor.serve(&socket, &shutdown);
            }));
        }
        {
            let shutdown = shutdown.clone();
            threads.push(std::thread::spawn(move || {
                let _ = center.serve(listener, &shutdown);
            }));
        }
        Ok(Medsim {
            center: center_addr,
            doctor: doctor_addr,
            shutdown,
            threads,
        })
    }
}

impl Drop for Medsim {
    fn drop(&mut self) {
        self.shutdown.trigger();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// `count` slots, all at the doctor on `port`.
fn bench_slots(count: u64, port: u16) -> Vec<Slot> {
    (1..=count)
        .map(|index| Slot {
            index,
            day: "Mon".into(),
            time: "10am".into(),
            doctor: "doc1".into(),
            port,
        })
        .collect()
}

/// The medsim list answer for the lowest [`DEFAULT_LIST_CAP`] of `slots`,
/// as the floor sends it.
fn list_answer(slots: &[Slot]) -> Vec<u8> {
    let listings = slots
        .iter()
        .take(DEFAULT_LIST_CAP)
        .map(|s| (s.index, s.day.as_str(), s.time.as_str()));
    protocol::encode(
        Dialect::Line,
        &protocol::render_listings(listings, usize::MAX),
    )
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        0.0
    } else {
        values[values.len() / 2]
    }
}

/// The median run by throughput, so its latencies belong to it.
fn median_run(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.per_second.total_cmp(&b.per_second));
    runs.get(runs.len() / 2).copied().unwrap_or_default()
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
    for _ in 0..repeats.max(1) {
        let floor = floor_run()?;
        let medsim = medsim_run()?;
        ratios.push(medsim.per_second / floor.per_second.max(1e-9));
        floors.push(floor);
        medsims.push(medsim);
    }
    let ratio = median(&mut ratios.clone());
    Ok(Pair {
        case: case.to_owned(),
        concurrency,
        medsim: median_run(medsims),
        floor: median_run(floors),
        ratio,
        ratios,
    })
}

fn for_duration(seconds: f64) -> impl Fn(u64) -> bool + Sync {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    move |_| Instant::now() >= deadline
}

/// The center's two paths at each concurrency, medsim and floor in turn.
fn center_cases(args: &Args, log: &mut dyn FnMut(&Pair)) -> anyhow::Result<Vec<Pair>> {
    let threads = args.concurrency.iter().copied().max().unwrap_or(1) + 4;
    let mut pairs = Vec::new();
    // (case, exchange, phase messages on, name in the report)
    let paths = [
        (Case::List, Exchange::List, false, "list"),
        (Case::Phases, Exchange::List, true, "list+phases"),
        (Case::Booking, Exchange::Booking, false, "booking"),
    ];
    for (_, path, phases, case) in paths
        .into_iter()
        .filter(|(case, ..)| args.cases.contains(case))
    {
        for &concurrency in &args.concurrency {
            let result = pair(
                case,
                concurrency,
                args.repeats,
                || {
                    let udp = UdpFloor::start(b"30\n")?;
                    let slots = bench_slots(DEFAULT_LIST_CAP as u64, udp.addr.port());
                    let answers = match path {
                        Exchange::List => vec![b"success\n".to_vec(), b"notavailable\n".to_vec()],
                        Exchange::Booking => vec![
                            b"success\n".to_vec(),
                            list_answer(&slots),
                            format!("doc1 {}\n", udp.addr.port()).into_bytes(),
                        ],
                    };
                    let floor = Floor::start(answers, threads)?;
                    let stop = for_duration(args.seconds);
                    Ok(drive(concurrency, &stop, &|rng, client| {
                        client.session(path, floor.addr, rng)
                    }))
                },
                || {
                    // Enough free slots that a booking run never runs out:
                    // several times the most sessions a second seen here.
                    let slots = match path {
                        Exchange::List => 6,
                        Exchange::Booking => (args.seconds * 60_000.0).max(10_000.0) as u64,
                    };
                    // Phase messages formatted and written, to nowhere: their
                    // cost without a terminal's.
                    let console = if phases {
                        Console::phases_to(std::io::sink())
                    } else {
                        Console::silent()
                    };
                    let medsim = Medsim::start(slots, path == Exchange::List, console)?;
                    let stop = for_duration(args.seconds);
                    Ok(drive(concurrency, &stop, &|rng, client| {
                        client.session(path, medsim.center, rng)
                    }))
                },
            )?;
            log(&result);
            pairs.push(result);
        }
    }
    Ok(pairs)
}

/// Quotes per second from one medsim doctor and from the UDP floor.
fn quote_cases(args: &Args, log: &mut dyn FnMut(&Pair)) -> anyhow::Result<Vec<Pair>> {
    let mut pairs = Vec::new();
    for &concurrency in &args.quote_concurrency {
        let result = pair(
            "quote",
            concurrency,
            args.repeats,
            || {
                let udp = UdpFloor::start(b"30\n")?;
                let stop = for_duration(args.seconds);
                Ok(drive(concurrency, &stop, &|_, client| {
                    client.quote(udp.addr).unwrap_or(false)
                }))
            },
            || {
                let medsim = Medsim::start(6, true, Console::silent())?;
                let stop = for_duration(args.seconds);
                Ok(drive(concurrency, &stop, &|_, client| {
                    client.quote(medsim.doctor).unwrap_or(false)
                }))
            },
        )?;
        log(&result);
        pairs.push(result);
    }
    Ok(pairs)
}

/// `medsim simulate --patients N --slots N --choice random` in a process of
/// its own, so its peak RSS is its own.
fn scale_run(patients: usize) -> anyhow::Result<Scale> {
    let exe = std::env::current_exe().context("finding the medsim binary")?;
    let n = patients.to_string();
    let output = Command::new(exe)
        .args([
            "simulate",
            "--patients",
            &n,
            "--slots",
            &n,
            "--choice",
            "random",
            "--seed",
            "1",
            "--json",
        ])
        .stdin(Stdio::null())
        .output()
        .context("running simulate")?;
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "simulate --patients {patients} printed no report: {}",
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let wall = report["wall_seconds"].as_f64().unwrap_or(0.0);
    let us_per_patient = wall * 1e6 / patients.max(1) as f64;
    Ok(Scale {
        patients,
        wall_seconds: wall,
        us_per_patient,
        runs_us_per_patient: vec![us_per_patient],
        vs_smallest: 1.0,
        peak_rss_mib: report["peak_rss_kib"].as_f64().map(|k| k / 1024.0),
        invariants_ok: output.status.success(),
    })
}

/// The median run of several at one N, with every run's time and the
/// largest peak.
fn median_scale(mut runs: Vec<Scale>) -> Scale {
    runs.sort_by(|a, b| a.us_per_patient.total_cmp(&b.us_per_patient));
    let all: Vec<f64> = runs.iter().map(|r| r.us_per_patient).collect();
    let peak = runs.iter().filter_map(|r| r.peak_rss_mib).reduce(f64::max);
    let ok = runs.iter().all(|r| r.invariants_ok);
    let mut median = runs.swap_remove(runs.len() / 2);
    median.runs_us_per_patient = all;
    median.peak_rss_mib = peak;
    median.invariants_ok = ok;
    median
}

/// VmRSS (MiB) and Threads of a process, from /proc.
fn process_size(pid: u32) -> Option<(f64, u64)> {
    let pid = pid.to_string();
    let rss_kib = crate::proc_status(&pid, "VmRSS:")?;
    Some((
        rss_kib as f64 / 1024.0,
        crate::proc_status(&pid, "Threads:")?,
    ))
}

/// `sessions` list-path sessions at concurrency 64 against one center
/// process (all slots booked through a ledger), sampling its size.
fn sustained_run(sessions: u64, log: &mut dyn FnMut(&str)) -> anyhow::Result<Sustained> {
    let dir = tempfile_dir()?;
    let ledger = dir.join("booked.ledger");
    let fixtures = Fixtures::load(&Source::built_in())?;
    let lines: String = fixtures
        .slots
        .iter()
        .map(|s| format!("book {} someone\n", s.index))
        .collect();
    std::fs::write(&ledger, lines).context("writing the bench ledger")?;
    let exe = std::env::current_exe().context("finding the medsim binary")?;
    let mut child = Command::new(exe)
        .args(["center", "--listen", "127.0.0.1:0", "--quiet", "--ledger"])
        .arg(&ledger)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a center")?;
    let guard = KillOnDrop(&mut child);
    let addr = {
        let stdout = guard.0.stdout.take().context("the center's stdout")?;
        let mut line = String::new();
        io::BufRead::read_line(&mut io::BufReader::new(stdout), &mut line)?;
        address_of(&line).with_context(|| format!("no address in {line:?}"))?
    };
    let pid = guard.0.id();
    let concurrency = 64;
    let samples = parking_lot::Mutex::new(Vec::new());
    let sample = |after: u64| {
        if let Some((rss_mib, threads)) = process_size(pid) {
            samples.lock().push(Sample {
                after_sessions: after,
                rss_mib,
                threads,
            });
        }
    };
    // A first burst to warm the pool, then the start sample.
    let warm = drive(concurrency, &|n| n >= 1000, &|rng, client| {
        client.session(Exchange::List, addr, rng)
    });
    sample(warm.sessions);
    let half = sessions / 2;
    let middle_taken = AtomicBool::new(false);
    let stop = |n: u64| {
        if n >= half && !middle_taken.swap(true, Ordering::Relaxed) {
            sample(n);
        }
        n >= sessions
    };
    log(&format!(
        "sustained: {sessions} list-path sessions at concurrency {concurrency}..."
    ));
    let run = drive(concurrency, &stop, &|rng, client| {
        client.session(Exchange::List, addr, rng)
    });
    sample(sessions);
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Sustained {
        sessions: run.sessions,
        errors: run.errors,
        concurrency,
        per_second: run.per_second,
        samples: samples.into_inner(),
    })
}

struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("medsim-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

/// The address in the center's first line.
fn address_of(line: &str) -> Option<SocketAddr> {
    let words: Vec<&str> = line.trim().trim_end_matches('.').split(' ').collect();
    let port = words.iter().position(|w| *w == "number")? + 1;
    format!("{}:{}", words.last()?, words.get(port)?)
        .parse()
        .ok()
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

fn pair_line(p: &Pair) -> String {
    format!(
        "{:<12} {:>5} {:>10.0} {:>8.0} {:>8.0} {:>10.0} {:>8.0} {:>8.0} {:>7.2}",
        p.case,
        p.concurrency,
        p.medsim.per_second,
        p.medsim.p50_us,
        p.medsim.p99_us,
        p.floor.per_second,
        p.floor.p50_us,
        p.floor.p99_us,
        p.ratio
    )
}

const PAIR_HEADER: &str =
    "case          conc  medsim/s  p50 us  p99 us    floor/s  p50 us  p99 us   ratio";

/// Formats a report as the table `bench` prints.
pub fn render(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{}", report.command);
    let _ = writeln!(
        out,
        "{}; {} s a run, median of {} runs; ratio = medsim / floor, paired per run",
        report.machine, report.seconds_per_run, report.repeats
    );
    for (title, pairs) in [
        (
            "center sessions (list: login + available on a full center; booking: login, list, select, quote)",
            &report.center,
        ),
        (
            "doctor quotes over UDP (floor: a fixed answer from one thread)",
            &report.quotes,
        ),
    ] {
        if pairs.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}\n{PAIR_HEADER}");
        for p in pairs {
            let _ = writeln!(out, "{}", pair_line(p));
        }
    }
    if !report.scale.is_empty() {
        let _ = writeln!(
            out,
            "\nsimulate --patients N --slots N --choice random (median of {} runs; peak RSS the largest)",
            report.repeats
        );
        let _ = writeln!(
            out,
            "{:>9} {:>9} {:>12} {:>8} {:>13} invariants",
            "N", "wall s", "us/patient", "vs 1st", "peak RSS MiB"
        );
        for s in &report.scale {
            let _ = writeln!(
                out,
                "{:>9} {:>9.3} {:>12.1} {:>8.2} {:>13} {}",
                s.patients,
                s.wall_seconds,
                s.us_per_patient,
                s.vs_smallest,
                s.peak_rss_mib.map_or("-".into(), |m| format!("{m:.1}")),
                if s.invariants_ok { "ok" } else { "FAILED" }
            );
        }
    }
    if let Some(s) = &report.sustained {
        let _ = writeln!(
            out,
            "\nsustained: {} list sessions at concurrency {} against one center process: {:.0}/s, {} errors",
            s.sessions, s.concurrency, s.per_second, s.errors
        );
        for sample in &s.samples {
            let _ = writeln!(
                out,
                "  after {:>9} sessions: RSS {:.1} MiB, {} threads",
                sample.after_sessions, sample.rss_mib, sample.threads
            );
        }
    }
    out
}

/// The `bench` subcommand.
///
/// # Errors
///
/// A server that cannot be started, or a report that cannot be written.
pub fn run(args: &Args) -> anyhow::Result<u8> {
    anyhow::ensure!(
        args.seconds > 0.0 && args.seconds.is_finite(),
        "--seconds must be positive"
    );
    let command = format!(
        "medsim {}",
        std::env::args().skip(1).collect::<Vec<_>>().join(" ")
    );
    let mut progress = |p: &Pair| {
        eprintln!(
            "{} at concurrency {}: ratio {:.2}",
            p.case, p.concurrency, p.ratio
        )
    };
    let center = center_cases(args, &mut progress)?;
    let quotes = if args.cases.contains(&Case::Quote) {
        quote_cases(args, &mut progress)?
    } else {
        Vec::new()
    };
    let mut scale = Vec::new();
    if args.cases.contains(&Case::Scale) {
        for &n in &args.scale {
            eprintln!("simulate --patients {n}, {} times...", args.repeats.max(1));
            let runs = (0..args.repeats.max(1))
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
    let sustained = if args.sustained > 0 && args.cases.contains(&Case::Sustained) {
        Some(sustained_run(args.sustained, &mut |line| {
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
        seconds_per_run: args.seconds,
        repeats: args.repeats,
        center,
        quotes,
        scale,
        sustained,
    };
    print!("{}", render(&report));
    write_json(&args.out, &report)?;
    println!("\nwritten to {}", args.out.display());
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
