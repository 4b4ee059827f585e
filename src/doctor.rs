//! The doctors: UDP servers that answer an insurance plan with its cost
//! (PROTOCOL.md, "Quote at the doctor").
//!
//! This module owns one doctor's receive loop, its answers in the dialect of
//! each datagram, its defences (garbage is answered `error ...` or dropped,
//! never with a cost; an answer is never much larger than its request, so a
//! doctor cannot be used to amplify traffic to a forged source), and the
//! `doctor` subcommand's run of every doctor of the data in one process
//! (its flags are `cli::doctor`'s).
//! A doctor keeps no per-patient state, so a repeated request is harmless.
//! Nothing a peer sends can stall it: its log lines are queued, never
//! waited for (`console`), lines about bad input are rate limited, and a
//! receive error that persists is retried with growing pauses, not in a
//! spin.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;

use crate::console::{Console, RateLimit};
use crate::data::{FeeTable, Fixtures, Source};
use crate::net;
use crate::protocol::{self, ProtocolError, decode_datagram, shorten};
use crate::shutdown::Shutdown;

/// The longest plan a doctor reads; a longer datagram is `error message too
/// long`.
pub const MESSAGE_LIMIT: usize = 512;

/// An answer is sent only if it is at most this many times the request.
pub const AMPLIFICATION_LIMIT: usize = 4;

/// The first pause after a failed receive; it doubles while they go on.
const FIRST_PAUSE: Duration = Duration::from_millis(1);
/// The longest pause between receives that keep failing: short enough
/// that a doctor notices shutdown soon.
const LONGEST_PAUSE: Duration = Duration::from_millis(250);

/// Counts kept while serving, returned by [`Doctor::serve`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Summary {
    pub quotes: u64,
    pub errors: u64,
    pub dropped: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::stats::plural;
        write!(
            f,
            "{}, {}, {} dropped",
            plural(self.quotes, "quote", "quotes"),
            plural(self.errors, "error", "errors"),
            self.dropped
        )
    }
}

/// One doctor: a name, a fee table and a console.
pub struct Doctor {
    name: String,
    fees: FeeTable,
    console: Console,
    quotes: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
    receive_failures: AtomicU64,
    /// Lines about bad datagrams: anyone can send them at will.
    peer_log: RateLimit,
    /// Lines about failed receives.
    receive_log: RateLimit,
}

impl Doctor {
    pub fn new(name: &str, fees: FeeTable, console: Console) -> Doctor {
        Doctor {
            name: name.to_owned(),
            fees,
            console,
            quotes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            receive_failures: AtomicU64::new(0),
            peer_log: RateLimit::for_peer_trouble(),
            receive_log: RateLimit::new(1, 1),
        }
    }

    /// How many receives have failed (other than with a peer's ICMP
    /// error), each followed by a pause.
    pub fn receive_failures(&self) -> u64 {
        self.receive_failures.load(Ordering::Relaxed)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The counts so far.
    pub fn summary(&self) -> Summary {
        Summary {
            quotes: self.quotes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// Answers datagrams on `socket` until `shutdown` is triggered.
    ///
    /// # Errors
    ///
    /// Only when the socket's address cannot be read; receive and send
    /// errors are survived.
    pub fn serve(&self, socket: &UdpSocket, shutdown: &Shutdown) -> io::Result<Summary> {
        let wake = net::loopback_if_unspecified(socket.local_addr()?);
        shutdown.on_trigger(move || {
            // recv_from() has no timeout: an empty datagram wakes it.
            if let Ok(waker) = net::connected_udp(wake) {
                let _ = waker.send(&[]);
            }
        });
        // The largest datagram UDP carries, so nothing is silently cut.
        let mut buf = vec![0u8; 65536];
        let mut reply = Vec::with_capacity(64);
        let mut backoff = Backoff::default();
        while !shutdown.is_triggered() {
            let (len, from) = match socket.recv_from(&mut buf) {
                Ok(received) => {
                    backoff.reset();
                    received
                }
                // ICMP errors from earlier answers surface here on Linux,
                // one per error message; they concern that peer, not this
                // doctor, and pausing for them would let anyone slow it.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionRefused
                            | io::ErrorKind::ConnectionReset
                            | io::ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                // Anything else may well fail again at once: retrying in a
                // loop would spin a core, so wait a little longer each time.
                Err(e) => {
                    self.receive_failures.fetch_add(1, Ordering::Relaxed);
                    let pause = backoff.next_pause();
                    if let Some(held_back) = self.receive_log.allow() {
                        self.console.diagnostic(format_args!(
                            "{}: receive failed: {e}; retrying in {pause:?}{held_back}",
                            self.name
                        ));
                    }
                    std::thread::sleep(pause);
                    continue;
                }
            };
            if shutdown.is_triggered() {
                break;
            }
            reply.clear();
            if self.answer(&buf[..len], from, &mut reply) {
                if reply.len() > len.saturating_mul(AMPLIFICATION_LIMIT) {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    if let Some(held_back) = self.peer_log.allow() {
                        self.console.diagnostic(format_args!(
                            "{}: {from}: answer of {} bytes to a {len}-byte request dropped (amplification limit){held_back}",
                            self.name,
                            reply.len()
                        ));
                    }
                    continue;
                }
                let _ = socket.send_to(&reply, from);
            }
        }
        Ok(self.summary())
    }

    /// Puts the answer to one datagram in `reply`; false to drop it.
    fn answer(&self, datagram: &[u8], from: SocketAddr, reply: &mut Vec<u8>) -> bool {
        if datagram.is_empty() {
            // Wake-ups and empty probes carry nothing to answer.
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let (plan, dialect) = match decode_datagram(datagram, MESSAGE_LIMIT) {
            Ok(decoded) => decoded,
            Err(e) => {
                // Bare garbage is answered classically: a C reader stops at NUL.
                let dialect = if datagram.ends_with(b"\n") {
                    protocol::Dialect::Line
                } else {
                    protocol::Dialect::Classic
                };
                return self.refuse(&e, from, dialect, reply);
            }
        };
        let plan = plan.trim();
        let receives = |transcript: &mut crate::console::Transcript<'_>| {
            transcript.line(format_args!(
                "Phase 3: Doctor {} receives the request from the patient with port number {} and the insurance plan {}.",
                self.name,
                from.port(),
                shorten(plan)
            ));
        };
        match self.fees.cost(plan) {
            Some(cost) => {
                self.quotes.fetch_add(1, Ordering::Relaxed);
                protocol::encode_into(dialect, &cost.to_string(), reply);
                let mut transcript = self.console.transcript();
                receives(&mut transcript);
                transcript.line(format_args!(
                    "Phase 3: Doctor {} has sent estimated price {cost}$ to patient with port number {}.",
                    self.name,
                    from.port()
                ));
                true
            }
            None => {
                let e = format!("unknown plan {}", shorten(plan));
                self.errors.fetch_add(1, Ordering::Relaxed);
                // Anyone can send unknown plans as fast as the network
                // goes: their lines are rate limited, the answers are not.
                if let Some(held_back) = self.peer_log.allow() {
                    receives(&mut self.console.transcript());
                    self.console
                        .diagnostic(format_args!("{}: {from}: error {e}{held_back}", self.name));
                }
                protocol::encode_into(dialect, &format!("error {e}"), reply);
                true
            }
        }
    }

    fn refuse(
        &self,
        e: &ProtocolError,
        from: SocketAddr,
        dialect: protocol::Dialect,
        reply: &mut Vec<u8>,
    ) -> bool {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Some(held_back) = self.peer_log.allow() {
            self.console
                .diagnostic(format_args!("{}: {from}: error {e}{held_back}", self.name));
        }
        protocol::encode_into(dialect, &format!("error {e}"), reply);
        true
    }
}

/// The pauses between receives that keep failing: [`FIRST_PAUSE`],
/// doubling up to [`LONGEST_PAUSE`]; a datagram received starts over.
#[derive(Default)]
struct Backoff {
    failures: u32,
}

impl Backoff {
    fn next_pause(&mut self) -> Duration {
        let pause = FIRST_PAUSE
            .saturating_mul(1 << self.failures.min(16))
            .min(LONGEST_PAUSE);
        self.failures = self.failures.saturating_add(1);
        pause
    }

    fn reset(&mut self) {
        self.failures = 0;
    }
}

/// What the `doctor` subcommand runs: which doctors, where.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the data files are.
    pub source: Source,
    /// Run only these doctors; all when empty.
    pub only: Vec<String>,
    /// `NAME` → the address that doctor binds to, for some doctors.
    pub listen: Vec<(String, String)>,
    /// The host doctors not in `listen` bind to, on their data's port.
    pub host: String,
    /// No phase messages (each bound address is still printed).
    pub quiet: bool,
}

/// The `doctor` subcommand: every doctor asked for, each on its own
/// socket and thread, until a signal stops them.
///
/// # Errors
///
/// Bad data files, an unknown doctor in a flag, or an address that cannot
/// be bound.
pub fn run(options: &Options) -> anyhow::Result<()> {
    let fixtures = Fixtures::load(&options.source)?;
    let mut listen = std::collections::BTreeMap::new();
    for (name, addr) in &options.listen {
        anyhow::ensure!(
            fixtures.doctor(name).is_some(),
            "--listen names doctor '{name}', which the availabilities do not name"
        );
        listen.insert(name.to_owned(), addr.to_owned());
    }
    for name in &options.only {
        anyhow::ensure!(
            fixtures.doctor(name).is_some(),
            "--only names doctor '{name}', which the availabilities do not name"
        );
    }
    let console = Console::standard(options.quiet);
    let mut bound = Vec::new();
    for doctor in &fixtures.doctors {
        if !options.only.is_empty() && !options.only.contains(&doctor.name) {
            continue;
        }
        let addr = listen
            .get(&doctor.name)
            .cloned()
            .unwrap_or_else(|| net::host_port(&options.host, doctor.port));
        let socket = net::bind_udp(&format!("doctor {}", doctor.name), &addr)?;
        let local = socket.local_addr()?;
        Console::standard(false).phases(&format!(
            "Phase 3: Doctor {} has a static UDP port {} and IP address {}.\n",
            doctor.name,
            local.port(),
            local.ip()
        ));
        bound.push((
            Doctor::new(&doctor.name, doctor.fees.clone(), console.clone()),
            socket,
        ));
    }
    let shutdown = Shutdown::new();
    shutdown.stop_on_signals()?;
    let summaries = std::thread::scope(|scope| {
        let handles: Vec<_> = bound
            .iter()
            .map(|(doctor, socket)| {
                let shutdown = &shutdown;
                scope.spawn(move || (doctor.name(), doctor.serve(socket, shutdown)))
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().ok())
            .collect::<Vec<_>>()
    });
    for (name, summary) in summaries {
        let summary = summary.with_context(|| format!("doctor {name}"))?;
        Console::standard(false).phases(&format!("doctor {name} stopped: {summary}\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_double_to_a_ceiling_and_start_over_after_a_datagram() {
        let mut backoff = Backoff::default();
        let pauses: Vec<u64> = (0..12)
            .map(|_| backoff.next_pause().as_millis() as u64)
            .collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 64, 128, 250, 250, 250, 250]);
        backoff.reset();
        assert_eq!(backoff.next_pause(), FIRST_PAUSE);
    }
}
