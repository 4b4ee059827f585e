//! The one client of the protocol: a conversation with a center over TCP
//! and a quote from a doctor over UDP, in either dialect, every wait
//! bounded.
//!
//! The patient, check, simulate and bench all talk through this module;
//! nothing else in `src/` writes to a center's socket. It frames what it
//! sends, reads one answer at a time, and tells apart why an answer did not
//! come (the center closed, reset, fell silent, or sent too much). What the
//! answers mean is `protocol`'s (the strict and the tolerant readings);
//! what to do about them is the caller's.

use std::io::{self, Read as _, Write as _};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::cli::Framing;
use crate::net;
use crate::protocol::{self, Dialect, ProtocolError};
use crate::rng::SplitMix64;
use crate::trace::{self, Observer, Transport};

/// The most a client reads for one line answer before calling it
/// malformed.
const ANSWER_LIMIT: usize = 1 << 20;

/// Why a wait for the center's answer ended without one.
#[derive(Debug)]
pub enum NoAnswer {
    /// The center closed the connection (a FIN).
    Closed,
    /// The center reset the connection: it closed with our request unread,
    /// or it died.
    Reset,
    /// Nothing came within the answer timeout.
    TimedOut,
    /// More than [`ANSWER_LIMIT`] bytes without a line end.
    TooLong,
    Failed(io::Error),
}

impl std::fmt::Display for NoAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoAnswer::Closed => f.write_str("the center closed the connection without answering"),
            NoAnswer::Reset => f.write_str("the center reset the connection"),
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
pub struct Conversation {
    stream: TcpStream,
    framing: Framing,
    /// Received bytes not yet returned (line dialect).
    pending: Vec<u8>,
    watch: Option<Watch>,
}

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
            watch: None,
        })
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
            if self.framing.dialect == Dialect::Line
                && let Some(end) = self.pending.iter().position(|&b| b == b'\n')
            {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&line).trim_end().to_owned());
            }
            if self.framing.dialect == Dialect::Classic
                && let Some(end) = self.pending.iter().position(|&b| b == 0)
            {
                // A second C string that arrived glued to the first.
                let message: Vec<u8> = self.pending.drain(..=end).collect();
                self.pending.clear();
                return Ok(String::from_utf8_lossy(&message[..end]).into_owned());
            }
            let n = match self.stream.read(&mut chunk) {
                Ok(n) => n,
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        return Err(NoAnswer::TimedOut);
                    }
                    io::ErrorKind::ConnectionReset | io::ErrorKind::ConnectionAborted => {
                        return Err(NoAnswer::Reset);
                    }
                    _ => return Err(NoAnswer::Failed(e)),
                },
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
            match self.framing.dialect {
                Dialect::Classic => {
                    let segment = &chunk[..n];
                    let end = segment.iter().position(|&b| b == 0).unwrap_or(n);
                    self.pending.clear();
                    if let Some(next) = glued_message(&segment[end..]) {
                        self.pending.extend_from_slice(next);
                    }
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
                Err(NoAnswer::Closed | NoAnswer::Reset | NoAnswer::Failed(_)) => {
                    return Closing::Closed;
                }
                Err(NoAnswer::TimedOut) => return Closing::StillOpen,
                // A stray answer: keep waiting for the close.
                Ok(_) | Err(NoAnswer::TooLong) => {}
            }
        }
    }
}

/// What follows a classic answer's NUL in the same segment: usually
/// padding (zeros, or garbage from an uninitialised buffer), but a center
/// that greets and answers at once sends two C strings in one segment
/// (`21720\0success\0`). The rest is taken as a message only when it is
/// printable text ended by its own NUL.
fn glued_message(rest: &[u8]) -> Option<&[u8]> {
    let rest = &rest[rest.iter().position(|&b| b != 0)?..];
    let end = rest.iter().position(|&b| b == 0)?;
    let text = &rest[..end];
    let printable = text
        .iter()
        .all(|&b| b.is_ascii_graphic() || b == b' ' || b == b'\n' || b == b'\r');
    (printable && text.iter().any(u8::is_ascii_alphanumeric)).then_some(&rest[..=end])
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
    fn a_second_c_string_in_a_segment_is_kept_and_padding_is_not() {
        assert_eq!(glued_message(b"\0success\0"), Some(&b"success\0"[..]));
        assert_eq!(glued_message(b"\0\0\0"), None);
        assert_eq!(glued_message(b"\0\xab\xcd\xab\0"), None);
        assert_eq!(glued_message(b"\0success"), None, "no NUL: cut off");
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
