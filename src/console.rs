//! Where the parties' words go: the classroom phase messages on stdout and
//! diagnostics on stderr.
//!
//! A [`Console`] is cloned into every thread. Each write is one locked
//! `write_all` of text the caller has already gathered, so a session's lines
//! never interleave with another's and stdout is not locked per line. A
//! session's lines go out in one write when it ends, or after each exchange
//! when stdout is a terminal (someone is watching the demo live).
//! `--quiet` makes a console whose phase messages go nowhere; tests capture
//! both streams in memory.

use std::fmt::Write as _;
use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;

type Sink = Arc<Mutex<dyn Write + Send>>;

/// Phase messages and diagnostics of one party.
#[derive(Clone)]
pub struct Console {
    phases: Option<Sink>,
    diagnostics: Option<Sink>,
}

/// In-memory copies of what a captured console printed.
#[derive(Clone, Default)]
pub struct Captured {
    pub phases: Arc<Mutex<Vec<u8>>>,
    pub diagnostics: Arc<Mutex<Vec<u8>>>,
}

impl Captured {
    pub fn phases(&self) -> String {
        String::from_utf8_lossy(&self.phases.lock()).into_owned()
    }
    pub fn diagnostics(&self) -> String {
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

/// Writes a subcommand's result to stdout. A reader that went away (a
/// closed pipe, as with `| head`) comes back as an error of kind
/// `BrokenPipe`, which `main` ends on quietly, as ripgrep does.
///
/// # Errors
///
/// The write failed.
pub fn out(text: &str) -> std::io::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()
}

impl Console {
    /// Phase messages on stdout (none when `quiet`), diagnostics on stderr.
    pub fn standard(quiet: bool) -> Console {
        let stdout: Sink = Arc::new(Mutex::new(std::io::stdout()));
        Console {
            phases: (!quiet).then_some(stdout),
            diagnostics: Some(Arc::new(Mutex::new(std::io::stderr()))),
        }
    }

    /// Phase messages and diagnostics both on stderr, for runs whose
    /// stdout carries a document (`simulate --json --pace`).
    pub fn phases_on_stderr() -> Console {
        let stderr: Sink = Arc::new(Mutex::new(std::io::stderr()));
        Console {
            phases: Some(Arc::clone(&stderr)),
            diagnostics: Some(stderr),
        }
    }

    /// Phase messages to `writer`, no diagnostics (the benchmark measures
    /// their cost without a terminal's).
    pub fn phases_to(writer: impl Write + Send + 'static) -> Console {
        Console {
            phases: Some(Arc::new(Mutex::new(writer))),
            diagnostics: None,
        }
    }

    /// A console that prints nothing at all.
    pub fn silent() -> Console {
        Console {
            phases: None,
            diagnostics: None,
        }
    }

    /// A console that keeps everything in memory, for tests.
    pub fn captured() -> (Console, Captured) {
        let captured = Captured::default();
        let console = Console {
            phases: Some(Arc::new(Mutex::new(SharedBuffer(Arc::clone(
                &captured.phases,
            ))))),
            diagnostics: Some(Arc::new(Mutex::new(SharedBuffer(Arc::clone(
                &captured.diagnostics,
            ))))),
        };
        (console, captured)
    }

    /// True when phase messages go nowhere, so callers can skip formatting.
    pub fn is_quiet(&self) -> bool {
        self.phases.is_none()
    }

    /// Writes already-gathered phase lines in one write. A closed stdout
    /// (a pipe whose reader left) must not stop a server, so errors are
    /// dropped.
    pub fn phases(&self, text: &str) {
        if let Some(sink) = &self.phases {
            let mut out = sink.lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        }
    }

    /// One diagnostic line.
    pub fn diagnostic(&self, line: std::fmt::Arguments<'_>) {
        if let Some(sink) = &self.diagnostics {
            let text = format!("{line}\n");
            let mut out = sink.lock();
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
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

/// Phase lines gathered and written together: one write per exchange,
/// just before its answer goes, so lines appear as things happen and in
/// causal order; whatever is left is written on drop.
pub struct Transcript<'a> {
    console: &'a Console,
    text: String,
}

impl Transcript<'_> {
    /// Adds one line; formatting is skipped entirely for a quiet console.
    pub fn line(&mut self, line: std::fmt::Arguments<'_>) {
        if !self.console.is_quiet() {
            let _ = self.text.write_fmt(line);
            self.text.push('\n');
        }
    }

    pub fn flush(&mut self) {
        if !self.text.is_empty() {
            self.console.phases(&self.text);
            self.text.clear();
        }
    }
}

impl Drop for Transcript<'_> {
    fn drop(&mut self) {
        self.flush();
    }
}
