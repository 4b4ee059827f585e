//! The one client of the protocol: a conversation with a center over TCP
//! and a quote from a doctor over UDP, in either dialect, every wait
//! bounded.
//!
//! The patient, check, simulate and bench all talk through this module;
//! nothing else in `src/` writes to a center's socket. It frames what it
//! sends, reads one answer at a time, and tells apart why an answer did not
//! come (the center ended the connection, fell silent, or sent too much). What the
//! answers mean is `protocol`'s (the strict and the tolerant readings);
//! what to do about them is the caller's.

use std::collections::BTreeMap;
use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::net;
use crate::protocol::{self, Dialect, Framing, ProtocolError};
use crate::rng::SplitMix64;
use crate::trace::{self, Observer, Transport};

/// The most a client reads for one line answer before calling it
/// malformed.
const ANSWER_LIMIT: usize = 1 << 20;

/// Why a wait for the center's answer ended without one.
#[derive(Debug)]
pub enum NoAnswer {
    /// The center ended the connection: it closed it (a FIN), or reset it
    /// (it closed with our request unread, or died). Which of the two
    /// arrives is timing (whether the request got there before the
    /// close), so they are one reason, said in one phrase.
    Ended,
    /// Nothing came within the answer timeout.
    TimedOut,
    /// More than [`ANSWER_LIMIT`] bytes without a line end.
    TooLong,
    Failed(io::Error),
}

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoAnswer::Ended => f.write_str("the center ended the connection without answering"),
            NoAnswer::TimedOut => f.write_str("no answer in time"),
            NoAnswer::TooLong => f.write_str("an answer too long to be one"),
            NoAnswer::Failed(e) => write!(f, "reading failed: {e}"),
        }
    }
}

/// Why an exchange (a request, then its answer) failed.
#[derive(Debug)]
pub enum Failed {
    /// The request could not be sent.
    Send(io::Error),
    /// It went, but no answer came.
    NoAnswer(NoAnswer),
}

impl std::error::Error for NoAnswer {}

impl std::error::Error for Failed {}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Send(e) => write!(f, "send failed: {e}"),
            Failed::NoAnswer(why) => why.fmt(f),
        }
    }
}

/// How waiting for the center to close ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Closing {
    /// It closed (or reset) the connection.
    Closed,
    /// Still open at the end of the wait.
    StillOpen,
}

/// Who watches a conversation, and under which name this client appears.
#[derive(Clone)]
pub struct Watch {
    pub observer: Arc<dyn Observer>,
    /// This client's name in the record (e.g. `patient1`).
    pub me: String,
}

/// One session with a center, framed in one dialect.
///
/// Exchanges are lockstep: a request, then its answer. In the classic
/// dialect an answer is the first C string of what arrives; the rest of
/// that arrival, and whatever else comes before the next request, is
/// stale padding (a C center sends its whole fixed buffer:
/// `success\0send\0\0\0\0\0Pha`), kept for [`Conversation::take_stale`]
/// and never read as the next answer. Only a caller that asks for another
/// answer before sending anything (a greeting came first) is given the
/// next C string of it.
pub struct Conversation {
    stream: TcpStream,
    framing: Framing,
    /// Received bytes not yet returned: the rest of a line stream, or a
    /// classic arrival not yet cut.
    pending: Vec<u8>,
    /// The rest of a classic arrival after its answer.
    after_answer: Vec<u8>,
    /// Bytes that came after an answer and before the next request.
    stale: Vec<u8>,
    /// How answers are read: the framing's dialect, or classic once the
    /// center answered a line request with a C string (or bare text).
    /// Requests keep their framing: that center took them.
    reading: Dialect,
    /// The center answered a line-dialect request with a C string (or
    /// bare text).
    answers_classic: bool,
    /// Answers read so far.
    answers: u64,
    watch: Option<Watch>,
}

/// How long a line-dialect client waits after text with no terminator
/// before it takes that text as a classic answer sent without one.
const BARE_ANSWER_PAUSE: Duration = Duration::from_millis(200);

impl Conversation {
    /// Connects within `timeout`; every later read and write waits at most
    /// `timeout` too.
    ///
    /// # Errors
    ///
    /// The connection could not be made in time.
    pub fn connect(center: SocketAddr, framing: Framing, timeout: Duration) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&center, timeout)?;
        let _ = stream.set_nodelay(true);
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Ok(Conversation {
            stream,
            framing,
            pending: Vec::new(),
            after_answer: Vec::new(),
            stale: Vec::new(),
            reading: framing.dialect,
            answers_classic: false,
            answers: 0,
            watch: None,
        })
    }

    /// Whether the center, asked in the line dialect, answered with C
    /// strings: the conversation now reads classic answers (and the user
    /// may pass `--dialect classic`).
    pub fn answers_classic(&self) -> bool {
        self.answers_classic
    }

    /// The stale bytes that came after the last answer and before this
    /// call (C padding, or the leftovers of the center's buffer); empty
    /// when none did. Reading them never blocks.
    pub fn take_stale(&mut self) -> Vec<u8> {
        if self.reading == Dialect::Classic {
            self.stale.append(&mut self.after_answer);
            self.drain_arrived();
        }
        std::mem::take(&mut self.stale)
    }

    /// Moves whatever has arrived unasked into `stale`, without waiting.
    fn drain_arrived(&mut self) {
        if self.stream.set_nonblocking(true).is_err() {
            return;
        }
        let mut chunk = [0u8; 4096];
        while let Ok(n) = self.stream.read(&mut chunk) {
            if n == 0 {
                break;
            }
            self.stale.extend_from_slice(&chunk[..n]);
            if self.stale.len() > ANSWER_LIMIT {
                break;
            }
        }
        let _ = self.stream.set_nonblocking(false);
    }

    /// Reports every message to `watch`.
    pub fn watched(mut self, watch: Option<Watch>) -> Self {
        self.watch = watch;
        self
    }

    /// This end's address.
    ///
    /// # Errors
    ///
    /// The socket is gone.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// How long each later read waits for the center.
    ///
    /// # Errors
    ///
    /// The socket refused the setting.
    pub fn set_answer_timeout(&self, timeout: Duration) -> io::Result<()> {
        self.stream.set_read_timeout(Some(timeout))
    }

    /// Sends `text` framed in the conversation's dialect, well-formed or
    /// not.
    ///
    /// # Errors
    ///
    /// The write failed or timed out.
    pub fn send(&mut self, text: &str) -> io::Result<()> {
        if let Some(watch) = &self.watch {
            watch.observer.before_send();
            watch
                .observer
                .message(&watch.me, trace::CENTER, text, Transport::Tcp);
        }
        if self.reading == Dialect::Classic && self.answers > 0 {
            // A new request: what is left of the last answer is stale.
            // (Before the first request, what came is a greeting: it stays
            // to be read.)
            let stale = self.take_stale();
            self.stale = stale;
        }
        let bytes =
            protocol::encode_request(self.framing.dialect, text, self.framing.classic_buffer);
        self.stream.write_all(&bytes)
    }

    /// Sends bytes exactly as given, with no framing.
    ///
    /// # Errors
    ///
    /// The write failed or timed out.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// Sends `text` and reads its answer.
    ///
    /// # Errors
    ///
    /// The request could not be sent, or no answer came.
    pub fn ask(&mut self, text: &str) -> Result<String, Failed> {
        self.send(text).map_err(Failed::Send)?;
        self.receive().map_err(Failed::NoAnswer)
    }

    /// One answer: a line, or one classic segment cut at its first NUL.
    ///
    /// # Errors
    ///
    /// Why no answer came.
    pub fn receive(&mut self) -> Result<String, NoAnswer> {
        let answer = self.read_answer()?;
        self.answers += 1;
        if let Some(watch) = &self.watch {
            watch
                .observer
                .message(trace::CENTER, &watch.me, &answer, Transport::Tcp);
        }
        Ok(answer)
    }

    fn read_answer(&mut self) -> Result<String, NoAnswer> {
        let mut chunk = [0u8; 4096];
        loop {
            if self.reading == Dialect::Line
                && let Some(end) = self.pending.iter().position(|&b| b == b'\n' || b == 0)
            {
                if self.pending[end] == 0 {
                    // A C string where a line was expected: the center
                    // speaks classic, and so does the rest of this
                    // conversation.
                    self.answers_classic = true;
                    self.reading = Dialect::Classic;
                    continue;
                }
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            if self.reading == Dialect::Classic {
                // Asked again before any request: a C string glued after
                // the last answer (a greeting, then the answer) is the
                // next one; padding is stale.
                let rest = std::mem::take(&mut self.after_answer);
                if let Some(next) = glued_message(&rest) {
                    self.after_answer = rest[next.end..].to_vec();
                    return Ok(
                        String::from_utf8_lossy(&rest[next.start..next.end - 1]).into_owned()
                    );
                }
                self.stale.extend_from_slice(&rest);
                if !self.pending.is_empty() {
                    return Ok(self.first_c_string());
                }
            }
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Err(NoAnswer::TimedOut);
                    }
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                        return Err(NoAnswer::Ended);
                    }
                    _ => return Err(NoAnswer::Failed(e)),
                },
            };
            if n == 0 {
                // The center closed: close this side too, so its socket
                // ends in TIME_WAIT (which check can clear before it
                // restarts a dead center) rather than in FIN_WAIT2 for a
                // minute, holding the port against a program without
                // SO_REUSEADDR.
                let _ = self.stream.shutdown(std::net::Shutdown::Write);
                // An answer cut short by the close is still an answer.
                if !self.pending.is_empty() {
                    let text = String::from_utf8_lossy(&self.pending).trim_end().to_owned();
                    self.pending.clear();
                    return Ok(text.trim_end_matches('\0').to_owned());
                }
                return Err(NoAnswer::Ended);
            }
            self.pending.extend_from_slice(&chunk[..n]);
            if self.pending.len() > ANSWER_LIMIT {
                return Err(NoAnswer::TooLong);
            }
            if self.reading == Dialect::Line
                && !self.pending.iter().any(|&b| b == b'\n' || b == 0)
                && self.quiet_for(BARE_ANSWER_PAUSE)
            {
                // Text, then silence: a classic center that sends its
                // answers without a terminator.
                self.answers_classic = true;
                self.reading = Dialect::Classic;
            }
        }
    }

    /// Whether nothing more arrives within `pause` (what does arrive is
    /// added to `pending`).
    fn quiet_for(&mut self, pause: Duration) -> bool {
        let Ok(Some(timeout)) = self.stream.read_timeout() else {
            return false;
        };
        if self
            .stream
            .set_read_timeout(Some(pause.min(timeout)))
            .is_err()
        {
            return false;
        }
        let mut chunk = [0u8; 4096];
        let quiet = match self.stream.read(&mut chunk) {
            Ok(0) => false,
            Ok(n) => {
                self.pending.extend_from_slice(&chunk[..n]);
                false
            }
            Err(e) => matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
        };
        let _ = self.stream.set_read_timeout(Some(timeout));
        quiet
    }

    /// The classic answer in `pending`: its first C string (all of it when
    /// it has no NUL); the rest of the arrival is kept apart.
    fn first_c_string(&mut self) -> String {
        let end = self.pending.iter().position(|&b| b == 0);
        let text = String::from_utf8_lossy(&self.pending[..end.unwrap_or(self.pending.len())])
            .into_owned();
        if let Some(end) = end {
            self.after_answer = self.pending.split_off(end + 1);
        }
        self.pending.clear();
        text
    }

    /// Waits up to `within` for the center to close, reading (and
    /// dropping) whatever else it sends meanwhile.
    pub fn wait_for_close(&mut self, within: Duration) -> Closing {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || self.set_answer_timeout(left).is_err() {
                return Closing::StillOpen;
            }
            match self.read_answer() {
                Err(NoAnswer::Ended | NoAnswer::Failed(_)) => {
                    return Closing::Closed;
                }
                Err(NoAnswer::TimedOut) => return Closing::StillOpen,
                // A stray answer: keep waiting for the close.
                Ok(_) | Err(NoAnswer::TooLong) => {}
            }
        }
    }
}

/// Where a C string glued after a classic answer stands in `rest` (what
/// followed the answer's NUL), NUL included: printable text ended by its
/// own NUL, after any NUL padding. A center that greets and answers at
/// once sends two C strings in one segment (`welcome\0success\0`); other
/// bytes there are padding or the leftovers of the center's buffer.
fn glued_message(rest: &[u8]) -> Option<std::ops::Range<usize>> {
    let start = rest.iter().position(|&b| b != 0)?;
    let len = rest[start..].iter().position(|&b| b == 0)?;
    let text = &rest[start..start + len];
    let printable = text
        .iter()
        .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\n' || b == b'\r');
    (printable && text.iter().any(u8::is_ascii_alphanumeric)).then_some(start..start + len + 1)
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

/// How long to wait for each quote, and how many to ask for in all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retries {
    /// How long to wait for an answer before sending again.
    pub wait: Duration,
    /// Requests sent in all, the first included (at least 1).
    pub attempts: u32,
}

/// Where a client is told the doctors are, apart from what the center
/// says: the host the center's ports refer to, and addresses by name. Only
/// once the center is known do they become [`DoctorRoutes`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DoctorOverrides {
    /// The host the center's `DOCTOR PORT` answers refer to; the center's
    /// own host when `None`.
    pub host: Option<String>,
    /// `NAME` → `PORT` (on the doctor host) or `HOST:PORT`: where that
    /// doctor really listens, whatever port the center names.
    pub by_name: Vec<(String, String)>,
}

impl DoctorOverrides {
    /// The routes, with `center_host` as the host when none is given.
    pub fn routes(&self, center_host: &str) -> DoctorRoutes {
        let host = self.host.clone().unwrap_or_else(|| center_host.to_owned());
        let by_name = self
            .by_name
            .iter()
            .map(|(name, addr)| (name.clone(), with_host(addr, &host)))
            .collect();
        DoctorRoutes { host, by_name }
    }
}

/// Where a client finds each doctor: the overrides by name, and the host
/// the center's ports refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorRoutes {
    /// The host the center's ports refer to.
    pub host: String,
    /// `NAME` → `HOST:PORT`.
    pub by_name: BTreeMap<String, String>,
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

/// What a doctor answered, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DoctorReply {
    /// A message, cut at its NUL or final newline.
    Text(String),
    /// A datagram with nothing in it (some classic doctors send one).
    Empty,
    /// A datagram that is no message (too long, not UTF-8).
    Undecodable(ProtocolError),
    /// Nothing, after every attempt.
    Silent,
}

/// A quote's reply and how many requests went beyond the first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quoted {
    pub reply: DoctorReply,
    pub retries: u32,
}

/// A UDP socket connected to one doctor: only its datagrams are received.
pub struct DoctorLink {
    socket: UdpSocket,
    doctor: SocketAddr,
    watch: Option<(Watch, String)>,
}

impl DoctorLink {
    /// Opens a socket on an ephemeral port, connected to `doctor`.
    ///
    /// # Errors
    ///
    /// No socket could be bound or connected.
    pub fn open(doctor: SocketAddr) -> io::Result<DoctorLink> {
        Ok(DoctorLink {
            socket: net::connected_udp(doctor)?,
            doctor,
            watch: None,
        })
    }

    /// Reports every datagram to `watch`, the doctor named `doctor_name`.
    pub fn watched(mut self, watch: Option<Watch>, doctor_name: &str) -> Self {
        self.watch = watch.map(|w| (w, doctor_name.to_owned()));
        self
    }

    /// This end's address.
    ///
    /// # Errors
    ///
    /// The socket is gone.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The doctor's address.
    pub fn doctor(&self) -> SocketAddr {
        self.doctor
    }

    /// Sends `plan` and waits for the answer, sending again on silence, at
    /// most `retries.attempts` times. `loss` drops datagrams on purpose;
    /// `announce` runs just before each request goes (phase messages, so a
    /// shared console shows the request before the doctor's line about it).
    ///
    /// # Errors
    ///
    /// Only a socket that refuses a read timeout; silence and lost
    /// datagrams are replies.
    pub fn quote(
        &self,
        plan: &str,
        framing: Framing,
        retries: Retries,
        mut loss: Option<&mut Loss>,
        announce: &mut dyn FnMut(),
    ) -> io::Result<Quoted> {
        let request = protocol::encode_request(framing.dialect, plan, framing.classic_buffer);
        let mut buf = [0u8; 2048];
        let mut sent = 0;
        let attempts = retries.attempts.max(1);
        while sent < attempts {
            sent += 1;
            let lost_on_the_way = loss.as_mut().is_some_and(|l| l.drops());
            if let Some((watch, doctor)) = &self.watch {
                watch.observer.before_send();
                let transport = if lost_on_the_way {
                    Transport::UdpLost
                } else {
                    Transport::Udp
                };
                watch.observer.message(&watch.me, doctor, plan, transport);
            }
            announce();
            if !lost_on_the_way {
                // A send error (e.g. ICMP refused from an earlier try) is a
                // lost datagram too: the bounded retries cover it.
                let _ = self.socket.send(&request);
            }
            let deadline = Instant::now() + retries.wait;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                self.socket.set_read_timeout(Some(left))?;
                let n = match self.socket.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                        // Nobody listens there (yet): wait out this attempt,
                        // as for a lost datagram.
                        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
                        break;
                    }
                    Err(_) => break,
                };
                let lost_on_the_way_back = loss.as_mut().is_some_and(|l| l.drops());
                let reply = match protocol::decode_datagram(&buf[..n], buf.len()) {
                    Ok((text, _)) => DoctorReply::Text(text.to_owned()),
                    Err(ProtocolError::Empty) => DoctorReply::Empty,
                    Err(e) => DoctorReply::Undecodable(e),
                };
                if let Some((watch, doctor)) = &self.watch {
                    let text = match &reply {
                        DoctorReply::Text(text) => text.as_str(),
                        _ => "",
                    };
                    let transport = if lost_on_the_way_back {
                        Transport::UdpLost
                    } else {
                        Transport::Udp
                    };
                    watch.observer.message(doctor, &watch.me, text, transport);
                }
                if lost_on_the_way_back {
                    continue;
                }
                return Ok(Quoted {
                    reply,
                    retries: sent - 1,
                });
            }
        }
        Ok(Quoted {
            reply: DoctorReply::Silent,
            retries: sent - 1,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line() -> Framing {
        Framing::default()
    }

    #[test]
    fn doctor_routes_prefer_the_named_override() {
        let overrides = DoctorOverrides {
            host: None,
            by_name: vec![
                ("doc1".into(), "41720".into()),
                ("doc2".into(), "10.0.0.2:42720".into()),
            ],
        };
        let routes = overrides.routes("127.0.0.1");
        assert_eq!(routes.address(Some("doc1"), 41000), "127.0.0.1:41720");
        assert_eq!(routes.address(Some("doc2"), 42000), "10.0.0.2:42720");
        assert_eq!(routes.address(Some("doc3"), 43000), "127.0.0.1:43000");
        assert_eq!(routes.address(None, 41000), "127.0.0.1:41000");
        let elsewhere = DoctorOverrides {
            host: Some("10.0.0.9".into()),
            ..overrides
        }
        .routes("127.0.0.1");
        assert_eq!(elsewhere.address(Some("doc1"), 41000), "10.0.0.9:41720");
        assert_eq!(elsewhere.address(None, 41000), "10.0.0.9:41000");
    }

    #[test]
    fn a_second_c_string_in_a_segment_is_kept_and_padding_is_not() {
        assert_eq!(glued_message(b"\0success\0"), Some(1..9));
        assert_eq!(glued_message(b"\0\0\0"), None);
        assert_eq!(glued_message(b"\0\xab\xcd\xab\0"), None);
        assert_eq!(glued_message(b"\0success"), None, "no NUL: cut off");
    }

    /// A center on loopback that answers each request with the given
    /// bytes, in one write each.
    fn center_answering(answers: Vec<&'static [u8]>) -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            let Ok((mut stream, _)) = listener.accept() else {
                return;
            };
            let mut buf = [0u8; 100];
            for answer in answers {
                if stream.read(&mut buf).unwrap_or(0) == 0 {
                    return;
                }
                let _ = stream.write_all(answer);
            }
            let _ = stream.read(&mut buf);
        });
        addr
    }

    #[test]
    fn a_classic_answer_is_its_first_c_string_and_the_rest_of_the_buffer_is_stale() {
        // The seed center sends every answer in a fixed 20-byte buffer.
        let center = center_answering(vec![
            b"success\0send\0\0\0\0\0Pha",
            b"1 Tue 01pm \0\0\0\0\0\0\0\0\0",
        ]);
        let classic = Framing {
            dialect: Dialect::Classic,
            classic_buffer: None,
        };
        let mut c =
            Conversation::connect(center, classic, Duration::from_secs(5)).expect("connect");
        assert_eq!(c.ask("authenticate a b").expect("answer"), "success");
        assert_eq!(c.take_stale(), b"send\0\0\0\0\0Pha");
        assert_eq!(c.ask("available").expect("answer"), "1 Tue 01pm ");
        assert_eq!(c.take_stale(), [0u8; 8]);
    }

    #[test]
    fn a_line_client_recognises_a_classic_center_by_its_first_answer() {
        let center = center_answering(vec![b"success\0", b"1 Tue 01pm "]);
        let mut c = Conversation::connect(center, line(), Duration::from_secs(5)).expect("connect");
        assert_eq!(c.ask("authenticate a b").expect("answer"), "success");
        assert!(c.answers_classic());
        // Text with no terminator at all, then silence: an answer too.
        assert_eq!(c.ask("available").expect("answer"), "1 Tue 01pm ");
    }

    #[test]
    fn a_silent_doctor_is_asked_exactly_the_attempts_given() {
        let doctor = UdpSocket::bind("127.0.0.1:0").unwrap();
        let link = DoctorLink::open(doctor.local_addr().unwrap()).unwrap();
        let mut sends = 0;
        let retries = Retries {
            wait: Duration::from_millis(20),
            attempts: 3,
        };
        let quoted = link
            .quote("insurance1", line(), retries, None, &mut || sends += 1)
            .unwrap();
        assert_eq!(quoted.reply, DoctorReply::Silent);
        assert_eq!((sends, quoted.retries), (3, 2));
        doctor
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            let (n, _) = doctor.recv_from(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"insurance1\n");
        }
    }

    #[test]
    fn an_empty_datagram_is_an_empty_reply() {
        let doctor = UdpSocket::bind("127.0.0.1:0").unwrap();
        let link = DoctorLink::open(doctor.local_addr().unwrap()).unwrap();
        let answering = std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            let (_, from) = doctor.recv_from(&mut buf).unwrap();
            doctor.send_to(b"", from).unwrap();
        });
        let retries = Retries {
            wait: Duration::from_secs(5),
            attempts: 1,
        };
        let quoted = link
            .quote("insurance1", line(), retries, None, &mut || {})
            .unwrap();
        answering.join().unwrap();
        assert_eq!(quoted.reply, DoctorReply::Empty);
    }
}
