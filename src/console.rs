//! Where the parties' words go: the classroom phase messages on stdout,
//! diagnostics on stderr, and a subcommand's results.
//!
//! A [`Console`] is cloned into every thread. Its lines never wait for the
//! terminal or pipe they go to: they are put on a queue, in order, and one
//! writer thread writes them, so a terminal paused with Ctrl-S, a `| less`
//! that stops reading or a stderr nobody reads stalls no session and no
//! quote. The queue holds at most [`QUEUE_BYTES`]; a line that does not fit
//! is dropped and counted, and the writer says `N log lines dropped` when
//! it has caught up, and at exit ([`finish`]). One queue serves both
//! streams of the process, so a session's phase lines and its diagnostics
//! keep their order, and lines about an exchange are queued before its
//! answer is sent.
//!
//! Every line is made safe for a terminal here: control characters are
//! shown escaped by `protocol::shorten_to`, the helper that quotes peer
//! input everywhere, so a username cannot set a title, clear the screen or
//! forge a line with a carriage return. Lines a peer can cause at will go
//! through a [`RateLimit`] as well.
//!
//! `--quiet` makes a console whose phase messages go nowhere; tests capture
//! both streams in memory ([`Console::captured`]).

use std::fmt::Write as _;
use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;

/// The most bytes of lines waiting to be written; past it lines are
/// dropped (and counted) rather than waited for.
pub const QUEUE_BYTES: usize = 4 << 20;

/// How long [`finish`] and [`out`] wait for a writer that makes no
/// progress at all (its reader is gone or paused) before going on.
const PATIENCE: Duration = Duration::from_secs(1);

/// Phase messages and diagnostics of one party.
#[derive(Clone)]
pub struct Console {
    writer: Option<Arc<Writer>>,
    phases: Option<usize>,
    diagnostics: Option<usize>,
}

/// In-memory copies of what a captured console printed. Reading one waits
/// until every line queued before has been written.
#[derive(Clone)]
pub struct Captured {
    writer: Arc<Writer>,
    phases: Arc<Mutex<Vec<u8>>>,
    diagnostics: Arc<Mutex<Vec<u8>>>,
}

impl Captured {
    pub fn phases(&self) -> String {
        self.writer.sync(PATIENCE);
        String::from_utf8_lossy(&self.phases.lock()).into_owned()
    }
    pub fn diagnostics(&self) -> String {
        self.writer.sync(PATIENCE);
        String::from_utf8_lossy(&self.diagnostics.lock()).into_owned()
    }
}

struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The streams of [`standard`]'s writer.
const STDOUT: usize = 0;
const STDERR: usize = 1;

/// The process's one writer for stdout and stderr, started on first use.
fn standard() -> &'static Arc<Writer> {
    static STANDARD: OnceLock<Arc<Writer>> = OnceLock::new();
    STANDARD.get_or_init(|| {
        Writer::start(
            vec![Box::new(std::io::stdout()), Box::new(std::io::stderr())],
            STDERR,
            QUEUE_BYTES,
        )
    })
}

/// Writes what is still queued for stdout and stderr, and the count of
/// lines dropped if any, before the process ends. A writer that makes no
/// progress for a second (nobody reads its pipe) is given up on: exiting
/// must not hang on a log either.
pub fn finish() {
    standard().sync(PATIENCE);
}

/// Writes a subcommand's result to stdout, after the lines queued before
/// it. Unlike a log line it is waited for: it is what was asked for. A
/// reader that went away (a closed pipe, as with `| head`) comes back as
/// an error of kind `BrokenPipe`, which `main` ends on quietly, as ripgrep
/// does.
///
/// # Errors
///
/// The write failed.
pub fn out(text: &str) -> std::io::Result<()> {
    standard().sync(PATIENCE);
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

impl Console {
    /// Phase messages on stdout (none when `quiet`), diagnostics on stderr.
    pub fn standard(quiet: bool) -> Console {
        Console {
            writer: Some(Arc::clone(standard())),
            phases: (!quiet).then_some(STDOUT),
            diagnostics: Some(STDERR),
        }
    }

    /// Phase messages and diagnostics both on stderr, for runs whose
    /// stdout carries a document (`simulate --json --pace`).
    pub fn phases_on_stderr() -> Console {
        Console {
            writer: Some(Arc::clone(standard())),
            phases: Some(STDERR),
            diagnostics: Some(STDERR),
        }
    }

    /// Phase messages to `writer`, no diagnostics (the benchmark measures
    /// their cost without a terminal's).
    pub fn phases_to(writer: impl Write + Send + 'static) -> Console {
        Console {
            writer: Some(Writer::start(vec![Box::new(writer)], 0, QUEUE_BYTES)),
            phases: Some(0),
            diagnostics: None,
        }
    }

    /// A console that prints nothing at all.
    pub fn silent() -> Console {
        Console {
            writer: None,
            phases: None,
            diagnostics: None,
        }
    }

    /// A console that keeps everything in memory, for tests.
    pub fn captured() -> (Console, Captured) {
        let phases = Arc::new(Mutex::new(Vec::new()));
        let diagnostics = Arc::new(Mutex::new(Vec::new()));
        let writer = Writer::start(
            vec![
                Box::new(SharedBuffer(Arc::clone(&phases))),
                Box::new(SharedBuffer(Arc::clone(&diagnostics))),
            ],
            1,
            QUEUE_BYTES,
        );
        let console = Console {
            writer: Some(Arc::clone(&writer)),
            phases: Some(0),
            diagnostics: Some(1),
        };
        let captured = Captured {
            writer,
            phases,
            diagnostics,
        };
        (console, captured)
    }

    /// True when phase messages go nowhere, so callers can skip formatting.
    pub fn is_quiet(&self) -> bool {
        self.phases.is_none()
    }

    /// Queues already-gathered phase lines (whole lines, each ending in
    /// `\n`); their control characters are shown escaped.
    pub fn phases(&self, text: &str) {
        if let (Some(writer), Some(stream)) = (&self.writer, self.phases) {
            let mut safe = String::with_capacity(text.len());
            for line in text.split_inclusive('\n') {
                let (line, end) = match line.strip_suffix('\n') {
                    Some(line) => (line, "\n"),
                    None => (line, ""),
                };
                push_escaped(&mut safe, line);
                safe.push_str(end);
            }
            writer.send(stream, safe);
        }
    }

    /// Queues one diagnostic line, its control characters shown escaped.
    pub fn diagnostic(&self, line: std::fmt::Arguments<'_>) {
        if let (Some(writer), Some(stream)) = (&self.writer, self.diagnostics) {
            let mut text = String::new();
            write_escaped(&mut text, line);
            text.push('\n');
            writer.send(stream, text);
        }
    }

    /// A buffer for one session's phase lines.
    pub fn transcript(&self) -> Transcript<'_> {
        Transcript {
            console: self,
            text: String::new(),
        }
    }
}

/// Appends `line` to `out`, control characters shown escaped (`\r`,
/// `\u{1b}`) as peer input is quoted everywhere else.
fn push_escaped(out: &mut String, line: &str) {
    if line.contains(char::is_control) {
        out.push_str(&crate::protocol::shorten_to(line, usize::MAX));
    } else {
        out.push_str(line);
    }
}

/// Formats `line` onto the end of `out`, control characters shown escaped.
fn write_escaped(out: &mut String, line: std::fmt::Arguments<'_>) {
    let start = out.len();
    let _ = out.write_fmt(line);
    if out[start..].contains(char::is_control) {
        let escaped = crate::protocol::shorten_to(&out[start..], usize::MAX);
        out.truncate(start);
        out.push_str(&escaped);
    }
}

/// Phase lines gathered and queued together: once per exchange, just
/// before its answer goes, so lines appear as things happen and in causal
/// order; whatever is left is queued on drop.
pub struct Transcript<'a> {
    console: &'a Console,
    text: String,
}

impl Transcript<'_> {
    /// Adds one line; formatting is skipped entirely for a quiet console.
    pub fn line(&mut self, line: std::fmt::Arguments<'_>) {
        if !self.console.is_quiet() {
            write_escaped(&mut self.text, line);
            self.text.push('\n');
        }
    }

    pub fn flush(&mut self) {
        if self.text.is_empty() {
            return;
        }
        if let (Some(writer), Some(stream)) = (&self.console.writer, self.console.phases) {
            // Already escaped line by line.
            writer.send(stream, std::mem::take(&mut self.text));
        }
        self.text.clear();
    }
}

impl Drop for Transcript<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}

/// How many lines a second a server writes about one kind of trouble a
/// peer can cause (bad input, failed connections), after a first burst of
/// [`PEER_LINES_BURST`]; the rest are counted.
pub const PEER_LINES_PER_SECOND: u32 = 10;
/// Lines about peer trouble written at once before the rate applies: a
/// class making its first mistakes sees every one of them.
pub const PEER_LINES_BURST: u32 = 50;

/// Lets at most a number of lines through per second and counts the rest:
/// for lines a peer can cause at will (bad input, refused connections),
/// so a flood of them cannot fill a disk or bury everything else.
pub struct RateLimit {
    per_second: f64,
    burst: f64,
    bucket: Mutex<Bucket>,
}

/// A token bucket: a line takes a token; tokens come back at the rate.
struct Bucket {
    tokens: f64,
    filled: Instant,
    held_back: u64,
}

/// Lines a [`RateLimit`] held back since the last one it let through;
/// shown as ` (N more since the last report)`, or as nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeldBack(pub u64);

impl std::fmt::Display for HeldBack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, " ({n} more since the last report)"),
        }
    }
}

impl RateLimit {
    /// At most `burst` lines at once, then `per_second` (both at least
    /// one).
    pub fn new(per_second: u32, burst: u32) -> RateLimit {
        let burst = f64::from(burst.max(1));
        RateLimit {
            per_second: f64::from(per_second.max(1)),
            burst,
            bucket: Mutex::new(Bucket {
                tokens: burst,
                filled: Instant::now(),
                held_back: 0,
            }),
        }
    }

    /// The limit for lines about peer trouble: [`PEER_LINES_BURST`], then
    /// [`PEER_LINES_PER_SECOND`].
    pub fn for_peer_trouble() -> RateLimit {
        RateLimit::new(PEER_LINES_PER_SECOND, PEER_LINES_BURST)
    }

    /// `Some` (with what was held back before) when a line may be written
    /// now; `None`, counted, when it must be left out.
    pub fn allow(&self) -> Option<HeldBack> {
        let now = Instant::now();
        let mut bucket = self.bucket.lock();
        let earned = now.duration_since(bucket.filled).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + earned).min(self.burst);
        bucket.filled = now;
        if bucket.tokens < 1.0 {
            bucket.held_back += 1;
            return None;
        }
        bucket.tokens -= 1.0;
        Some(HeldBack(std::mem::take(&mut bucket.held_back)))
    }
}

/// A queue of text for a few streams, and the thread that writes it.
struct Writer {
    queue: Sender<Entry>,
    counts: Arc<Counts>,
}

/// What the queue's senders and its writer thread share.
struct Counts {
    /// Bytes queued and not yet written.
    queued: AtomicUsize,
    capacity: usize,
    /// Lines dropped and not yet reported.
    dropped: AtomicU64,
    /// Bytes written so far: a writer whose count stands still is stuck.
    written: AtomicU64,
}

enum Entry {
    Text(usize, String),
    /// Write the count of dropped lines, flush, then say so.
    Sync(Sender<()>),
}

impl Writer {
    /// A writer for `streams`, reporting dropped lines on `report_to`, that
    /// holds at most `capacity` bytes of lines.
    fn start(
        streams: Vec<Box<dyn Write + Send>>,
        report_to: usize,
        capacity: usize,
    ) -> Arc<Writer> {
        let (queue, entries) = crossbeam_channel::unbounded();
        let counts = Arc::new(Counts {
            queued: AtomicUsize::new(0),
            capacity,
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
        });
        let draining = Arc::clone(&counts);
        // Without its thread every line is dropped, and counted: the work
        // goes on, as it must when the output cannot keep up.
        let _ = std::thread::Builder::new()
            .name("medsim-console".into())
            .spawn(move || drain(&entries, streams, report_to, &draining));
        Arc::new(Writer { queue, counts })
    }

    /// Queues `text` (whole lines) for stream `stream`, or drops it when
    /// the queue is full. Never waits.
    fn send(&self, stream: usize, text: String) {
        let counts = &self.counts;
        let len = text.len();
        // Room is taken before the text is queued, so racing senders
        // cannot overshoot the bound together.
        let before = counts.queued.fetch_add(len, Ordering::AcqRel);
        if before + len > counts.capacity {
            counts.queued.fetch_sub(len, Ordering::AcqRel);
            counts.dropped.fetch_add(lines_in(&text), Ordering::Relaxed);
            return;
        }
        if let Err(unsent) = self.queue.send(Entry::Text(stream, text)) {
            // The writer thread is gone (or never started).
            if let Entry::Text(_, text) = unsent.into_inner() {
                counts.queued.fetch_sub(len, Ordering::AcqRel);
                counts.dropped.fetch_add(lines_in(&text), Ordering::Relaxed);
            }
        }
    }

    /// Waits until every line queued before this call is written, giving
    /// up when the writer makes no progress for `patience`. Returns whether
    /// it got there.
    fn sync(&self, patience: Duration) -> bool {
        let (done, finished) = crossbeam_channel::bounded(1);
        if self.queue.send(Entry::Sync(done)).is_err() {
            return false;
        }
        let mut seen = self.counts.written.load(Ordering::Acquire);
        loop {
            match finished.recv_timeout(patience) {
                Ok(()) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
                Err(RecvTimeoutError::Timeout) => {
                    let now = self.counts.written.load(Ordering::Acquire);
                    if now == seen {
                        return false;
                    }
                    seen = now;
                }
            }
        }
    }
}

fn lines_in(text: &str) -> u64 {
    (text.matches('\n').count() as u64).max(1)
}

/// The writer thread: writes entries in order until every sender is gone.
/// It reports dropped lines whenever it has caught up with the queue.
fn drain(
    entries: &Receiver<Entry>,
    mut streams: Vec<Box<dyn Write + Send>>,
    report_to: usize,
    counts: &Counts,
) {
    let report = |streams: &mut Vec<Box<dyn Write + Send>>| {
        let dropped = counts.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0
            && let Some(out) = streams.get_mut(report_to)
        {
            let _ = writeln!(
                out,
                "medsim: {} dropped: the output was not read fast enough",
                crate::stats::plural(dropped, "log line", "log lines")
            );
        }
        for stream in streams.iter_mut() {
            let _ = stream.flush();
        }
    };
    while let Ok(entry) = entries.recv() {
        match entry {
            Entry::Text(stream, text) => {
                // A closed stream (a pipe whose reader left) must not stop a
                // server: its lines are lost, the work goes on.
                if let Some(out) = streams.get_mut(stream) {
                    let _ = out.write_all(text.as_bytes());
                }
                counts.queued.fetch_sub(text.len(), Ordering::AcqRel);
                counts
                    .written
                    .fetch_add(text.len() as u64, Ordering::Release);
                if entries.is_empty() {
                    report(&mut streams);
                }
            }
            Entry::Sync(done) => {
                report(&mut streams);
                let _ = done.send(());
            }
        }
    }
    report(&mut streams);
}

/// Arguments as a shell would take them back, for the command a report
/// names: an empty one as `''`, one with spaces or quotes in single
/// quotes.
pub fn shell_words(args: impl IntoIterator<Item = String>) -> String {
    args.into_iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c));
            if plain {
                arg
            } else {
                format!("'{}'", arg.replace('\'', "'\\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_quote_what_a_shell_would_split_or_drop() {
        let words = ["bench", "--scale", "", "--out", "my dir/b.json", "it's"];
        assert_eq!(
            shell_words(words.map(String::from)),
            r"bench --scale '' --out 'my dir/b.json' 'it'\''s'"
        );
    }

    /// A stream whose writes wait until the test lets them go; it says
    /// when the first write has begun.
    struct Gate {
        began: Option<Sender<()>>,
        open: Receiver<()>,
        into: SharedBuffer,
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Some(began) = self.began.take() {
                let _ = began.send(());
                let _ = self.open.recv();
            }
            self.into.write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stream_that_does_not_read_drops_and_counts_lines_never_waits() {
        let (began, has_begun) = crossbeam_channel::bounded(1);
        let (release, open) = crossbeam_channel::bounded(1);
        let out = Arc::new(Mutex::new(Vec::new()));
        let gate = Gate {
            began: Some(began),
            open,
            into: SharedBuffer(Arc::clone(&out)),
        };
        // Room for three lines of ten bytes, the one being written included.
        let writer = Writer::start(vec![Box::new(gate)], 0, 30);
        let console = Console {
            writer: Some(Arc::clone(&writer)),
            phases: Some(0),
            diagnostics: Some(0),
        };
        console.phases("line 0000\n");
        has_begun.recv().unwrap();
        // The writer is stuck on line 0; these return at once all the same.
        for n in 1..=10 {
            console.phases(&format!("line {n:04}\n"));
        }
        release.send(()).unwrap();
        assert!(writer.sync(PATIENCE));
        let text = String::from_utf8(out.lock().clone()).unwrap();
        assert_eq!(
            text,
            "line 0000\nline 0001\nline 0002\n\
             medsim: 8 log lines dropped: the output was not read fast enough\n"
        );
    }

    #[test]
    fn lines_keep_their_order_across_streams() {
        let (console, captured) = Console::captured();
        for n in 0..100 {
            console.phases(&format!("phase {n}\n"));
            console.diagnostic(format_args!("diagnostic {n}"));
        }
        let phases: Vec<String> = (0..100).map(|n| format!("phase {n}\n")).collect();
        assert_eq!(captured.phases(), phases.concat());
        let diagnostics: Vec<String> = (0..100).map(|n| format!("diagnostic {n}\n")).collect();
        assert_eq!(captured.diagnostics(), diagnostics.concat());
    }

    #[test]
    fn control_characters_are_shown_escaped_in_every_line() {
        let (console, captured) = Console::captured();
        let name = "eve\r\u{1b}]0;owned\u{7}\u{1b}[2J";
        {
            let mut transcript = console.transcript();
            transcript.line(format_args!("Phase 1: username {name}."));
        }
        console.phases(&format!("Phase 2: {name}\nPhase 3: plain\n"));
        console.diagnostic(format_args!("center: ({name}): error"));
        let shown = r"eve\r\u{1b}]0;owned\u{7}\u{1b}[2J";
        assert_eq!(
            captured.phases(),
            format!("Phase 1: username {shown}.\nPhase 2: {shown}\nPhase 3: plain\n")
        );
        assert_eq!(
            captured.diagnostics(),
            format!("center: ({shown}): error\n")
        );
    }

    #[test]
    fn a_rate_limit_lets_a_burst_through_then_counts_the_rest() {
        let limit = RateLimit::new(1, 3);
        let allowed: Vec<Option<HeldBack>> = (0..5).map(|_| limit.allow()).collect();
        assert_eq!(
            allowed,
            [
                Some(HeldBack(0)),
                Some(HeldBack(0)),
                Some(HeldBack(0)),
                None,
                None
            ]
        );
        assert_eq!(HeldBack(2).to_string(), " (2 more since the last report)");
        assert_eq!(HeldBack(0).to_string(), "");
    }
}
