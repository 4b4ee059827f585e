//! The patient: books a slot at the center over TCP, then asks the assigned
//! doctor for a quote over UDP.
//!
//! This module owns the client side of PROTOCOL.md in both dialects (medsim
//! servers and the classic C ones, whose answers vary), the choice of a slot
//! (a person at a prompt, a scripted index, or a strategy for `simulate`),
//! bounded waits and retries, the outcome of a visit with its exit status,
//! and the `patient` subcommand. Nothing here can hang: every read has a
//! timeout and every retry loop a bound.

use std::io::{self, BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::console::Console;
use crate::data::{Patient, Source};
use crate::protocol::{
    self, AuthAnswer, Dialect, Listing, QuoteAnswer, Request, SelectionAnswer, SlotsAnswer,
};
use crate::rng::SplitMix64;
use crate::trace::{self, Trace, Transport};

/// How a visit ended. Each kind has its own exit status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Outcome {
    /// Booked and quoted.
    Quoted,
    /// The center answered `failure`.
    AuthFailed,
    /// The center had no free slot.
    NoSlots,
    /// Someone reserved the chosen slot first.
    Taken,
    /// The doctor did not answer within the retries.
    DoctorSilent,
    /// The person closed the prompt (end of input) without choosing.
    Cancelled,
    /// The center or the doctor answered something the protocol does not
    /// allow here, or `error ...`.
    Protocol(String),
    /// The connection could not be made or broke.
    Connection(String),
}

impl Outcome {
    /// The process exit status for this outcome (README, "Exit statuses").
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Quoted => 0,
            Outcome::AuthFailed => 3,
            Outcome::NoSlots | Outcome::Taken => 4,
            Outcome::DoctorSilent => 5,
            Outcome::Protocol(_) | Outcome::Connection(_) => 6,
            Outcome::Cancelled => 7,
        }
    }

    /// A short name for reports.
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Quoted => "quoted",
            Outcome::AuthFailed => "auth_failed",
            Outcome::NoSlots => "no_slots",
            Outcome::Taken => "taken",
            Outcome::DoctorSilent => "doctor_silent",
            Outcome::Cancelled => "cancelled",
            Outcome::Protocol(_) => "protocol_error",
            Outcome::Connection(_) => "connection_error",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Quoted => f.write_str("booked and quoted"),
            Outcome::AuthFailed => f.write_str("authentication failed"),
            Outcome::NoSlots => f.write_str("no appointment is available"),
            Outcome::Taken => f.write_str("the chosen appointment was taken"),
            Outcome::DoctorSilent => f.write_str("the doctor did not answer"),
            Outcome::Cancelled => f.write_str("no appointment was chosen"),
            Outcome::Protocol(what) => write!(f, "protocol error: {what}"),
            Outcome::Connection(what) => write!(f, "connection error: {what}"),
        }
    }
}

/// What a visit achieved, whatever its outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Visit {
    pub outcome: Outcome,
    /// The slot the center reserved.
    pub slot: Option<u64>,
    pub doctor: Option<String>,
    pub doctor_port: Option<u16>,
    pub cost: Option<u64>,
    /// Quote requests sent beyond the first.
    pub retries: u32,
}

impl Visit {
    fn new() -> Visit {
        Visit {
            outcome: Outcome::Cancelled,
            slot: None,
            doctor: None,
            doctor_port: None,
            cost: None,
            retries: 0,
        }
    }

    fn ended(mut self, outcome: Outcome) -> Visit {
        self.outcome = outcome;
        self
    }
}

/// Drops datagrams on purpose, to show retries at work (`--udp-loss`).
#[derive(Debug, Clone)]
pub struct Loss {
    /// The fraction of datagrams dropped, each way.
    pub rate: f64,
    pub rng: SplitMix64,
}

impl Loss {
    fn drops(&mut self) -> bool {
        self.rng.next_f64() < self.rate
    }
}

/// How a patient reaches the servers and how long it waits.
#[derive(Debug, Clone)]
pub struct Settings {
    pub center: String,
    /// The host the center's `DOCTOR PORT` refers to [default: the
    /// center's address].
    pub doctor_host: Option<String>,
    pub dialect: Dialect,
    /// Classic only: pad each message to this many bytes.
    pub classic_buffer: Option<usize>,
    /// How long to wait for the center to connect and for each answer.
    pub answer_timeout: Duration,
    /// How long to wait for each quote before sending again.
    pub quote_timeout: Duration,
    /// Quote requests sent in all, the first included.
    pub quote_attempts: u32,
    /// Shown in phase messages, e.g. `Patient 1`.
    pub label: String,
    /// Show the password in phase messages.
    pub show_password: bool,
    pub loss: Option<Loss>,
    /// Records every message sent and received, under `label`.
    pub trace: Option<Trace>,
    /// Waits this long before each message sent, so an audience can follow.
    pub pace: Option<Duration>,
}

impl Settings {
    pub fn new(center: impl Into<String>) -> Settings {
        Settings {
            center: center.into(),
            doctor_host: None,
            dialect: Dialect::Line,
            classic_buffer: None,
            answer_timeout: Duration::from_secs(10),
            quote_timeout: Duration::from_secs(1),
            quote_attempts: 4,
            label: "Patient".into(),
            show_password: false,
            loss: None,
            trace: None,
            pace: None,
        }
    }
}

/// Picks one of the listed slots.
pub trait Chooser {
    /// The index to send, or `None` to give up.
    ///
    /// # Errors
    ///
    /// The chooser's own input failed.
    fn choose(&mut self, listings: &[Listing]) -> io::Result<Option<u64>>;
}

/// Always this index, listed or not: the center has the last word (a
/// scripted `--select`, or `simulate --choice same`).
pub struct Fixed(pub u64);

impl Chooser for Fixed {
    fn choose(&mut self, _listings: &[Listing]) -> io::Result<Option<u64>> {
        Ok(Some(self.0))
    }
}

/// The lowest listed index.
pub struct First;

impl Chooser for First {
    fn choose(&mut self, listings: &[Listing]) -> io::Result<Option<u64>> {
        Ok(listings.iter().map(|l| l.index).min())
    }
}

/// A listed index picked at random.
pub struct Random(pub SplitMix64);

impl Chooser for Random {
    fn choose(&mut self, listings: &[Listing]) -> io::Result<Option<u64>> {
        if listings.is_empty() {
            return Ok(None);
        }
        let at = self.0.below(listings.len() as u64) as usize;
        Ok(Some(listings[at].index))
    }
}

/// The prompt PROTOCOL.md prints before reading a choice.
pub const PROMPT: &str = "Please enter the preferred appointment index and press enter:";

/// A person at a terminal: prompts, and asks again on a choice that is not
/// a listed index. Nothing is sent for an invalid choice.
pub struct Prompt<R, W> {
    pub input: R,
    pub output: W,
    /// Print the list before the prompt (when phase messages are off).
    pub show_list: bool,
}

impl<R: BufRead, W: Write> Chooser for Prompt<R, W> {
    fn choose(&mut self, listings: &[Listing]) -> io::Result<Option<u64>> {
        if self.show_list {
            for listing in listings {
                writeln!(self.output, "{listing}")?;
            }
        }
        loop {
            writeln!(self.output, "{PROMPT}")?;
            self.output.flush()?;
            let mut line = String::new();
            if self.input.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            let answer = line.trim();
            match protocol::parse_index(answer) {
                Ok(index) if listings.iter().any(|l| l.index == index) => {
                    return Ok(Some(index));
                }
                _ => writeln!(
                    self.output,
                    "'{}' is not one of the listed indexes; please choose again.",
                    protocol::shorten(answer)
                )?,
            }
        }
    }
}

/// Why a wait for the center's answer ended without one.
#[derive(Debug)]
pub(crate) enum NoAnswer {
    /// The center closed the connection.
    Closed,
    /// Nothing came within the answer timeout.
    TimedOut,
    /// More than [`ANSWER_LIMIT`] bytes without a line end.
    TooLong,
    Failed(io::Error),
}

impl From<NoAnswer> for Outcome {
    fn from(why: NoAnswer) -> Outcome {
        match why {
            NoAnswer::Closed => {
                Outcome::Connection("the center closed the connection without answering".into())
            }
            NoAnswer::TimedOut => Outcome::Connection("the center did not answer in time".into()),
            NoAnswer::TooLong => Outcome::Protocol("the center's answer is too long".into()),
            NoAnswer::Failed(e) => Outcome::Connection(format!("reading from the center: {e}")),
        }
    }
}

/// The connection to the center, framed in one dialect.
pub(crate) struct CenterLink {
    stream: TcpStream,
    dialect: Dialect,
    classic_buffer: Option<usize>,
    /// Received bytes not yet returned (line dialect).
    pending: Vec<u8>,
    /// The record to write to, and this patient's name in it.
    trace: Option<(Trace, String)>,
    pace: Option<Duration>,
}

/// The most a client reads for one answer before calling it malformed.
const ANSWER_LIMIT: usize = 1 << 20;

impl CenterLink {
    /// Connects within `timeout`; every later read and write waits at most
    /// `timeout` too.
    pub(crate) fn connect(
        center: SocketAddr,
        dialect: Dialect,
        classic_buffer: Option<usize>,
        timeout: Duration,
    ) -> io::Result<CenterLink> {
        let stream = TcpStream::connect_timeout(&center, timeout)?;
        let _ = stream.set_nodelay(true);
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(CenterLink {
            stream,
            dialect,
            classic_buffer,
            pending: Vec::new(),
            trace: None,
            pace: None,
        })
    }

    /// How long each later read waits for the center.
    pub(crate) fn set_answer_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// Sends a request framed in the link's dialect.
    pub(crate) fn send(&mut self, request: &Request) -> io::Result<()> {
        self.send_text(&request.to_string())
    }

    /// Sends any text framed in the link's dialect, well-formed or not.
    pub(crate) fn send_text(&mut self, text: &str) -> io::Result<()> {
        if let Some(pace) = self.pace {
            std::thread::sleep(pace);
        }
        let bytes = match self.dialect {
            Dialect::Line => protocol::encode(Dialect::Line, text),
            Dialect::Classic => protocol::encode_classic_request(text, self.classic_buffer),
        };
        if let Some((trace, me)) = &self.trace {
            trace.record(me, trace::CENTER, text, Transport::Tcp);
        }
        self.stream.write_all(&bytes)
    }

    /// Sends bytes exactly as given, with no framing.
    pub(crate) fn send_bytes(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// One answer: a line, or one classic segment cut at its first NUL.
    fn receive(&mut self) -> Result<String, Outcome> {
        let answer = self.answer()?;
        if let Some((trace, me)) = &self.trace {
            trace.record(trace::CENTER, me, &answer, Transport::Tcp);
        }
        Ok(answer)
    }

    /// One answer, or why none came.
    pub(crate) fn answer(&mut self) -> Result<String, NoAnswer> {
        let mut chunk = [0u8; 4096];
        loop {
            if self.dialect == Dialect::Line
                && let Some(end) = self.pending.iter().position(|&b| b == b'\n')
            {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Err(NoAnswer::TimedOut);
                }
                // A center that closes with our next request unread sends
                // a reset instead of a FIN: it closed all the same, and the
                // patient should hear so, whichever way the race went.
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted
                    ) && self.pending.is_empty() =>
                {
                    return Err(NoAnswer::Closed);
                }
                Err(e) => return Err(NoAnswer::Failed(e)),
            };
            if n == 0 {
                // An answer cut short by the close is still an answer.
                if !self.pending.is_empty() {
                    let text = String::from_utf8_lossy(&self.pending).trim_end().to_owned();
                    self.pending.clear();
                    return Ok(text.trim_end_matches('\0').to_owned());
                }
                return Err(NoAnswer::Closed);
            }
            match self.dialect {
                Dialect::Classic => {
                    let segment = &chunk[..n];
                    let end = segment.iter().position(|&b| b == 0).unwrap_or(n);
                    return Ok(String::from_utf8_lossy(&segment[..end]).into_owned());
                }
                Dialect::Line => {
                    self.pending.extend_from_slice(&chunk[..n]);
                    if self.pending.len() > ANSWER_LIMIT {
                        return Err(NoAnswer::TooLong);
                    }
                }
            }
        }
    }
}

/// Runs one whole visit: phases 1 to 3. Phase messages go to `console`.
pub fn visit(
    settings: &mut Settings,
    patient: &Patient,
    chooser: &mut dyn Chooser,
    console: &Console,
) -> Visit {
    let say = |line: std::fmt::Arguments<'_>| {
        if !console.is_quiet() {
            console.phases(&format!("{line}\n"));
        }
    };
    let label = settings.label.clone();
    let mut visit = Visit::new();

    // Phase 1: authenticate.
    let center_addr = match crate::resolve(&settings.center) {
        Ok(addr) => addr,
        Err(e) => return visit.ended(Outcome::Connection(format!("{e:#}"))),
    };
    let mut link = match CenterLink::connect(
        center_addr,
        settings.dialect,
        settings.classic_buffer,
        settings.answer_timeout,
    ) {
        Ok(link) => link,
        Err(e) => {
            return visit.ended(Outcome::Connection(format!(
                "cannot reach the center at {center_addr}: {e}"
            )));
        }
    };
    link.trace = settings.trace.clone().map(|t| (t, label.clone()));
    link.pace = settings.pace;
    if let Ok(local) = link.local_addr() {
        say(format_args!(
            "Phase 1: {label} has TCP port number {} and IP address {}.",
            local.port(),
            local.ip()
        ));
    }
    let outcome = (|| -> Result<(), Outcome> {
        let auth = Request::Authenticate {
            username: patient.username.clone(),
            password: patient.password.clone(),
        };
        exchange_send(&mut link, &auth)?;
        let shown = if settings.show_password {
            format!(" and password {}", patient.password)
        } else {
            String::new()
        };
        say(format_args!(
            "Phase 1: Authentication request from {label} with username {}{shown} has been sent to the Health Center Server.",
            patient.username
        ));
        let answer = link.receive()?;
        match protocol::parse_auth_answer(&answer).map_err(protocol_error)? {
            AuthAnswer::Success => {
                say(format_args!(
                    "Phase 1: {label} authentication result: success."
                ));
                say(format_args!("Phase 1: End of Phase 1 for {label}."));
            }
            AuthAnswer::Failure => {
                say(format_args!(
                    "Phase 1: {label} authentication result: failure."
                ));
                say(format_args!("Phase 1: End of Phase 1 for {label}."));
                return Err(Outcome::AuthFailed);
            }
            AuthAnswer::Error(reason) => return Err(center_error(&reason)),
        }

        // Phase 2: list and reserve.
        exchange_send(&mut link, &Request::Available)?;
        let answer = link.receive()?;
        let listings = match protocol::parse_slots_answer(&answer).map_err(protocol_error)? {
            SlotsAnswer::Slots(listings) => listings,
            SlotsAnswer::NotAvailable => {
                say(format_args!(
                    "Phase 2: No appointment is available for {label}. Exiting..."
                ));
                return Err(Outcome::NoSlots);
            }
            SlotsAnswer::Error(reason) => return Err(center_error(&reason)),
        };
        if !console.is_quiet() {
            let mut text =
                format!("Phase 2: The following appointments are available for {label}:\n");
            for listing in &listings {
                text.push_str(&format!("{listing}\n"));
            }
            console.phases(&text);
        }
        let index = match chooser.choose(&listings) {
            Ok(Some(index)) => index,
            Ok(None) => return Err(Outcome::Cancelled),
            Err(e) => return Err(Outcome::Connection(format!("reading the choice: {e}"))),
        };
        exchange_send(&mut link, &Request::Selection(index))?;
        let answer = link.receive()?;
        match protocol::parse_selection_answer(&answer).map_err(protocol_error)? {
            SelectionAnswer::Assigned { doctor, port } => {
                visit.slot = Some(index);
                visit.doctor = doctor;
                visit.doctor_port = Some(port);
                say(format_args!(
                    "Phase 2: The requested appointment is available and reserved to {label}. The assigned doctor port number is {port}."
                ));
                Ok(())
            }
            SelectionAnswer::NotAvailable => {
                say(format_args!(
                    "Phase 2: The requested appointment from {label} is not available. Exiting..."
                ));
                Err(Outcome::Taken)
            }
            SelectionAnswer::Error(reason) => Err(center_error(&reason)),
        }
    })();
    // Classic servers may never close: we do, before phase 3.
    drop(link);
    if let Err(outcome) = outcome {
        return visit.ended(outcome);
    }
    say(format_args!("Phase 2: End of Phase 2 for {label}."));

    // Phase 3: the quote.
    let Some(port) = visit.doctor_port else {
        return visit.ended(Outcome::Protocol("no doctor port".into()));
    };
    let host = match &settings.doctor_host {
        Some(host) => host.clone(),
        None => center_addr.ip().to_string(),
    };
    let doctor_addr = match crate::resolve(&crate::doctor::host_port(&host, port)) {
        Ok(addr) => addr,
        Err(e) => return visit.ended(Outcome::Connection(format!("{e:#}"))),
    };
    let outcome = quote(settings, patient, doctor_addr, &mut visit, console);
    visit.ended(outcome)
}

fn exchange_send(link: &mut CenterLink, request: &Request) -> Result<(), Outcome> {
    link.send(request).map_err(|e| {
        Outcome::Connection(format!(
            "sending '{}' to the center: {e}",
            request.command()
        ))
    })
}

fn protocol_error(e: protocol::ProtocolError) -> Outcome {
    Outcome::Protocol(format!("the center's answer: {e}"))
}

fn center_error(reason: &str) -> Outcome {
    Outcome::Protocol(format!("the center says: {reason}"))
}

/// Phase 3: sends the plan and waits, sending again on silence.
fn quote(
    settings: &mut Settings,
    patient: &Patient,
    doctor: SocketAddr,
    visit: &mut Visit,
    console: &Console,
) -> Outcome {
    let label = settings.label.clone();
    let say = |line: std::fmt::Arguments<'_>| {
        if !console.is_quiet() {
            console.phases(&format!("{line}\n"));
        }
    };
    // Connected, so only the doctor's own datagrams are received.
    let socket = match crate::connected_udp(doctor) {
        Ok(socket) => socket,
        Err(e) => return Outcome::Connection(format!("opening a UDP socket to {doctor}: {e}")),
    };
    if let Ok(local) = socket.local_addr() {
        say(format_args!(
            "Phase 3: {label} has a dynamic UDP port number {} and IP address {}.",
            local.port(),
            local.ip()
        ));
    }
    let request = match settings.dialect {
        Dialect::Line => protocol::encode(Dialect::Line, &patient.plan),
        Dialect::Classic => {
            protocol::encode_classic_request(&patient.plan, settings.classic_buffer)
        }
    };
    let doctor_name = visit
        .doctor
        .clone()
        .unwrap_or_else(|| format!("doctor:{}", doctor.port()));
    let trace = settings.trace.clone();
    let record = |from: &str, to: &str, text: &str, transport: Transport| {
        if let Some(trace) = &trace {
            trace.record(from, to, text, transport);
        }
    };
    let mut buf = [0u8; 2048];
    let attempts = settings.quote_attempts.max(1);
    for attempt in 0..attempts {
        if attempt > 0 {
            visit.retries += 1;
        }
        if let Some(pace) = settings.pace {
            std::thread::sleep(pace);
        }
        let lost_on_the_way = settings.loss.as_mut().is_some_and(Loss::drops);
        record(
            &label,
            &doctor_name,
            &patient.plan,
            if lost_on_the_way {
                Transport::UdpLost
            } else {
                Transport::Udp
            },
        );
        if !lost_on_the_way {
            // A send error (e.g. ICMP refused from an earlier try) is a
            // lost datagram too: the bounded retries cover it.
            let _ = socket.send(&request);
        }
        say(format_args!(
            "Phase 3: The cost estimation request from {label} with insurance plan {} has been sent to the doctor with port number {} and IP address {}.",
            patient.plan,
            doctor.port(),
            doctor.ip()
        ));
        let deadline = Instant::now() + settings.quote_timeout;
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            if socket.set_read_timeout(Some(deadline - now)).is_err() {
                break;
            }
            let n = match socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    // Nobody listens there (yet): wait out this attempt.
                    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                    break;
                }
                Err(_) => break,
            };
            let lost_on_the_way_back = settings.loss.as_mut().is_some_and(Loss::drops);
            let text = match protocol::decode_datagram(&buf[..n], buf.len()) {
                Ok((text, _)) => text,
                Err(_) => continue,
            };
            if lost_on_the_way_back {
                record(&doctor_name, &label, text, Transport::UdpLost);
                continue;
            }
            record(&doctor_name, &label, text, Transport::Udp);
            return match protocol::parse_quote_answer(text) {
                Ok(QuoteAnswer::Cost(cost)) => {
                    visit.cost = Some(cost);
                    let name = visit.doctor.as_deref().unwrap_or("unknown");
                    say(format_args!(
                        "Phase 3: {label} receives {cost}$ estimation cost from doctor with port number {} and name {name}.",
                        doctor.port()
                    ));
                    say(format_args!("Phase 3: End of Phase 3 for {label}."));
                    Outcome::Quoted
                }
                Ok(QuoteAnswer::Error(reason)) => {
                    Outcome::Protocol(format!("the doctor says: {reason}"))
                }
                Err(e) => Outcome::Protocol(format!("the doctor's answer: {e}")),
            };
        }
    }
    Outcome::DoctorSilent
}

/// How a client frames its messages: the flags every client shares
/// (`patient`, `simulate`, `check`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub struct Framing {
    /// Framing to speak: `line` (medsim) or `classic` (NUL-terminated, for
    /// classic C servers).
    #[arg(long, default_value = "line", value_parser = crate::parse_dialect)]
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

/// Run a patient: log in at the center, choose a slot (at a prompt, or
/// with --select), then get the doctor's quote.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Take credentials and plan from NAME.txt and NAMEinsurance.txt (e.g.
    /// patient1).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["user", "password", "insurance"])]
    pub name: Option<String>,
    /// Username to log in with (with --password and --insurance).
    #[arg(long, value_name = "U", requires_all = ["password", "insurance"])]
    pub user: Option<String>,
    /// Password for --user.
    #[arg(long, value_name = "P", requires = "user")]
    pub password: Option<String>,
    /// Insurance plan to ask the doctor about.
    #[arg(long, value_name = "PLAN", requires = "user")]
    pub insurance: Option<String>,
    /// The health center's address.
    #[arg(long, default_value = "127.0.0.1:21720", value_name = "ADDR")]
    pub center: String,
    /// Host that the center's `DOCTOR PORT` answer refers to [default: the
    /// center's host].
    #[arg(long, value_name = "HOST")]
    pub doctor_host: Option<String>,
    /// Choose this slot index without prompting (sent as is: the center
    /// decides). Without it, the list is shown and you are asked.
    #[arg(long, value_name = "N")]
    pub select: Option<u64>,
    /// Directory holding patientN.txt and patientNinsurance.txt [default:
    /// the built-in copies of fixtures/].
    #[arg(long, value_name = "DIR")]
    pub fixtures: Option<PathBuf>,
    #[command(flatten)]
    pub framing: Framing,
    /// Seconds to wait for the center's connection and each answer.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub timeout: f64,
    /// Seconds to wait for the doctor before sending the plan again.
    #[arg(long, default_value_t = 1.0, value_name = "SECS")]
    pub quote_timeout: f64,
    /// Quote requests to send in all before giving up on the doctor.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub quote_attempts: u32,
    /// Print no phase messages (the list and prompt still appear when
    /// asking).
    #[arg(long)]
    pub quiet: bool,
    /// Print the password in the phase messages, as the classic demo did.
    #[arg(long)]
    pub show_passwords: bool,
}

/// The `patient` subcommand. Returns the exit status of the visit.
///
/// # Errors
///
/// Bad flags or data files; a visit's own failures are outcomes instead.
pub fn run(args: &Args) -> anyhow::Result<u8> {
    let source = Source::from_option(args.fixtures.as_deref());
    let (patient, label) = match (&args.name, &args.user) {
        (Some(name), _) => (Patient::load(&source, name)?, patient_label(name)),
        (None, Some(user)) => (
            Patient {
                username: user.clone(),
                password: args.password.clone().context("--user needs --password")?,
                plan: args.insurance.clone().context("--user needs --insurance")?,
            },
            patient_label(user),
        ),
        (None, None) => (
            Patient::load(&source, "patient1")?,
            patient_label("patient1"),
        ),
    };
    let mut settings = Settings {
        doctor_host: args.doctor_host.clone(),
        dialect: args.framing.dialect,
        classic_buffer: args.framing.classic_buffer,
        answer_timeout: crate::seconds("--timeout", args.timeout)?,
        quote_timeout: crate::seconds("--quote-timeout", args.quote_timeout)?,
        quote_attempts: args.quote_attempts.max(1),
        label,
        show_password: args.show_passwords,
        ..Settings::new(&args.center)
    };
    let console = Console::standard(args.quiet);
    let visit = match args.select {
        Some(index) => self::visit(&mut settings, &patient, &mut Fixed(index), &console),
        None => {
            let stdin = io::stdin();
            let mut prompt = Prompt {
                input: stdin.lock(),
                output: io::stdout(),
                show_list: args.quiet,
            };
            self::visit(&mut settings, &patient, &mut prompt, &console)
        }
    };
    if visit.outcome == Outcome::Quoted {
        if args.quiet {
            println!("{}", visit.cost.unwrap_or_default());
        }
    } else {
        eprintln!("medsim patient: {}", visit.outcome);
    }
    Ok(visit.outcome.exit_code())
}

/// `patient1` → `Patient 1`, as the classic phase messages name patients.
fn patient_label(name: &str) -> String {
    match name.strip_prefix("patient") {
        Some(n) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => format!("Patient {n}"),
        _ => format!("Patient {name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listings(indexes: &[u64]) -> Vec<Listing> {
        indexes
            .iter()
            .map(|&index| Listing {
                index,
                day: "Mon".into(),
                time: "10am".into(),
            })
            .collect()
    }

    #[test]
    fn prompt_asks_again_until_a_listed_index() {
        let mut output = Vec::new();
        let mut prompt = Prompt {
            input: &b"9\nabc\n\n2\n"[..],
            output: &mut output,
            show_list: false,
        };
        assert_eq!(prompt.choose(&listings(&[1, 2])).unwrap(), Some(2));
        let text = String::from_utf8(output).unwrap();
        assert_eq!(text.matches(PROMPT).count(), 4);
        assert!(text.contains("'9' is not one of the listed indexes"));
        assert!(text.contains("'abc' is not one of the listed indexes"));
    }

    #[test]
    fn prompt_gives_up_at_end_of_input() {
        let mut prompt = Prompt {
            input: &b"7\n"[..],
            output: Vec::new(),
            show_list: true,
        };
        assert_eq!(prompt.choose(&listings(&[1])).unwrap(), None);
        assert!(
            String::from_utf8(prompt.output)
                .unwrap()
                .starts_with("1 Mon 10am\n")
        );
    }

    #[test]
    fn strategies_pick_from_the_list() {
        let list = listings(&[4, 2, 9]);
        assert_eq!(First.choose(&list).unwrap(), Some(2));
        assert_eq!(Fixed(5).choose(&list).unwrap(), Some(5));
        let mut random = Random(SplitMix64::new(1));
        for _ in 0..20 {
            let pick = random.choose(&list).unwrap().unwrap();
            assert!([4, 2, 9].contains(&pick));
        }
        assert_eq!(Random(SplitMix64::new(1)).choose(&[]).unwrap(), None);
    }

    #[test]
    fn exit_codes_are_distinct_per_kind() {
        let codes = [
            Outcome::Quoted.exit_code(),
            Outcome::AuthFailed.exit_code(),
            Outcome::Taken.exit_code(),
            Outcome::DoctorSilent.exit_code(),
            Outcome::Connection(String::new()).exit_code(),
            Outcome::Cancelled.exit_code(),
        ];
        let unique: std::collections::HashSet<_> = codes.iter().collect();
        assert_eq!(unique.len(), codes.len());
        assert_eq!(Outcome::NoSlots.exit_code(), Outcome::Taken.exit_code());
        assert_eq!(
            Outcome::Protocol(String::new()).exit_code(),
            Outcome::Connection(String::new()).exit_code()
        );
    }

    #[test]
    fn labels_follow_the_classic_naming() {
        assert_eq!(patient_label("patient1"), "Patient 1");
        assert_eq!(patient_label("alice"), "Patient alice");
    }
}
