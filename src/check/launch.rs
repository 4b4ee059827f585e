//! The programs under test that check starts itself (`--center-cmd`,
//! `--doctor-cmd`, `--patient-cmd`): started with `sh -c CMD` in their own
//! process group, their output (stdout and stderr together) kept as a
//! tail, watched for death, named by how they died (`SIGSEGV`, `exit
//! status 1`), and killed, group and all, when check is done with them.
//!
//! A server is ready when its own socket can be seen ([`super::sockets`]),
//! never by connecting to it: a connection is an input, and some centers
//! die of one. Before it starts, nothing else may serve its addresses, so
//! check never grades a program it did not start. Every group it started
//! is killed when check ends, also on SIGINT or SIGTERM ([`stop_all`]).
//!
//! Also the private network namespace of `--netns`: check runs itself
//! again under `unshare -n` with loopback up, so the programs may bind the
//! classic fixed ports beside any other check.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read};
use std::net::SocketAddr;
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::sockets::{self, Transport};

/// Lines of a program's output kept for the report: its last words, not
/// its whole phase log.
const TAIL_LINES: usize = 3;
/// How long a started server may take to accept or answer.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// The environment variable that marks a check already in its namespace.
const NETNS_MARK: &str = "MEDSIM_CHECK_IN_NETNS";

/// When a started server is ready to be checked.
#[derive(Debug, Clone)]
pub enum Ready {
    /// A process it started holds a socket serving each of these
    /// addresses: a listening TCP socket (a center) or a bound UDP socket
    /// (doctors).
    Serves(Transport, Vec<SocketAddr>),
    /// At once (a patient program).
    Started,
}

/// The process groups started and not yet killed, for [`stop_all`].
static STARTED: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// Kills every process group check started and has not killed yet: on
/// SIGINT or SIGTERM, so no program under test outlives check still bound
/// to its port (and is graded by the next check as if it were new).
pub fn stop_all() {
    for pgid in STARTED.lock().drain(..) {
        // SAFETY: kill(2) with a negative pid signals a process group this
        // process created; no memory is involved.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
    }
}

/// A program to start: what it is (for the report), its command line, and
/// where to run it.
#[derive(Debug, Clone)]
pub struct Program {
    /// `the center`, `the doctors`, `the patient`.
    pub what: String,
    pub command: String,
    pub dir: Option<PathBuf>,
    pub ready: Ready,
}

/// A started program.
pub struct Running {
    program: Program,
    child: Child,
    pub stdin: Option<ChildStdin>,
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Every line of output, for the patient's judge.
    all: Arc<Mutex<Vec<String>>>,
    readers: Vec<std::thread::JoinHandle<()>>,
    /// How it ended, once known.
    ended: Option<ExitStatus>,
}

impl Program {
    /// Starts the program with `env` added to its environment, and waits
    /// (at most [`START_TIMEOUT`]) until it is ready.
    ///
    /// # Errors
    ///
    /// It could not start, died, or was not ready in time: the reason, its
    /// output's tail included.
    pub fn start(&self, env: &[(String, String)]) -> Result<Running, String> {
        if let Ready::Serves(transport, addrs) = &self.ready {
            if let Some(taken) = addrs.iter().find(|&&a| sockets::served(*transport, a)) {
                return Err(format!(
                    "something already serves {taken} before check started {}: stop it \
                     (check tests only a program it started itself)",
                    self.what
                ));
            }
            if *transport == Transport::Tcp {
                // A center that died with connections open leaves TIME_WAIT
                // sockets; without SO_REUSEADDR it could not bind again.
                for addr in addrs {
                    sockets::clear_time_wait(addr.port());
                }
            }
        }
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        for (key, value) in env {
            cmd.env(key, value);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("could not start {} (`{}`): {e}", self.what, self.command))?;
        STARTED.lock().push(child.id() as i32);
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let all = Arc::new(Mutex::new(Vec::new()));
        let mut readers = Vec::new();
        let outputs: [Option<Box<dyn Read + Send>>; 2] = [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn Read + Send>),
        ];
        for output in outputs.into_iter().flatten() {
            let (tail, all) = (Arc::clone(&tail), Arc::clone(&all));
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(output).split(b'\n') {
                    let Ok(line) = line else { return };
                    let line = String::from_utf8_lossy(&line).trim_end().to_owned();
                    let mut tail = tail.lock();
                    if tail.len() == TAIL_LINES {
                        tail.pop_front();
                    }
                    tail.push_back(line.clone());
                    all.lock().push(line);
                }
            }));
        }
        let mut running = Running {
            stdin: child.stdin.take(),
            program: self.clone(),
            child,
            tail,
            all,
            readers,
            ended: None,
        };
        running.wait_ready()?;
        Ok(running)
    }
}

impl Running {
    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        let what = self.program.what.clone();
        loop {
            if let Some(death) = self.died() {
                return Err(format!("{what} {death} before it was ready{}", self.tail()));
            }
            if self.serves() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let waited = match &self.program.ready {
                    Ready::Serves(transport, addrs) => format!(
                        "{} {}",
                        match transport {
                            Transport::Tcp => "listen at",
                            Transport::Udp => "bind",
                        },
                        addrs
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                    Ready::Started => "start".into(),
                };
                return Err(format!(
                    "{what} (`{}`) did not {waited} within {START_TIMEOUT:?}{}",
                    self.program.command,
                    self.tail()
                ));
            }
            // Not a synchronisation sleep: a server that is still binding
            // gives no other sign than its socket appearing.
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a process it started holds every socket it should serve
    /// (always, for a program with nothing to serve).
    pub fn serves(&self) -> bool {
        match &self.program.ready {
            Ready::Started => true,
            Ready::Serves(transport, addrs) => addrs
                .iter()
                .all(|&a| sockets::served_by_group(*transport, a, self.child.id() as i32)),
        }
    }

    /// Why it cannot be checked any more, if it cannot: it died (how), or
    /// it lives but no longer holds its socket. Looks, never connects.
    pub fn gone(&mut self) -> Option<String> {
        if let Some(death) = self.died() {
            return Some(death);
        }
        (!self.serves()).then(|| match &self.program.ready {
            Ready::Serves(Transport::Udp, _) => {
                "stopped holding its port (a process of its died)".to_owned()
            }
            _ => "closed its listening socket".to_owned(),
        })
    }

    /// What the program is (`the center`).
    pub fn what(&self) -> &str {
        &self.program.what
    }

    /// How it died (`died with SIGSEGV`, `exited with status 1`), if it
    /// has.
    pub fn died(&mut self) -> Option<String> {
        if self.ended.is_none() {
            self.ended = self.child.try_wait().ok().flatten();
        }
        self.ended.map(describe)
    }

    /// Waits at most `within` for it to end; how it ended, if it did.
    pub fn wait_for_exit(&mut self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(death) = self.died() {
                return Some(death);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Its exit status, once it has ended.
    pub fn status(&self) -> Option<ExitStatus> {
        self.ended
    }

    /// The last lines of its output, as `; its last output: ...`, or
    /// nothing when it printed nothing.
    pub fn tail(&self) -> String {
        let tail = self.tail.lock();
        if tail.is_empty() {
            String::new()
        } else {
            format!(
                "; its last output: {}",
                tail.iter().cloned().collect::<Vec<_>>().join(" | ")
            )
        }
    }

    /// Every line it printed so far.
    pub fn output(&self) -> Vec<String> {
        self.all.lock().clone()
    }

    /// Kills the whole process group and reaps the program.
    pub fn kill(&mut self) {
        let pid = self.child.id() as i32;
        STARTED.lock().retain(|&pgid| pgid != pid);
        // SAFETY: kill(2) with a negative pid signals the process group we
        // created for this child; no memory is involved.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        if let Ok(status) = self.child.wait()
            && self.ended.is_none()
        {
            self.ended = Some(status);
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `died with SIGSEGV`, `exited with status 1`, `exited normally`.
pub fn describe(status: ExitStatus) -> String {
    if let Some(signal) = status.signal() {
        return format!("died with {}", signal_name(signal));
    }
    match status.code() {
        Some(0) => "exited normally (status 0)".into(),
        // `sh -c` reports a child killed by signal N as 128 + N.
        Some(code) if (129..=128 + 64).contains(&code) => format!(
            "died with {} (the shell's status {code})",
            signal_name(code - 128)
        ),
        Some(code) => format!("exited with status {code}"),
        None => "ended".into(),
    }
}

/// The usual name of a signal number.
pub fn signal_name(signal: i32) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_owned()
}

/// Whether this check already runs in the namespace `--netns` made.
pub fn in_private_netns() -> bool {
    std::env::var_os(NETNS_MARK).is_some()
}

/// Runs this same command line again in a private network namespace with
/// loopback up; its exit status is this one's.
///
/// # Errors
///
/// Not root, or `unshare` could not run.
pub fn rerun_in_private_netns() -> anyhow::Result<u8> {
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    anyhow::ensure!(
        root,
        "--netns needs root (a private network namespace is made with `unshare -n`)"
    );
    let exe = std::env::current_exe()?;
    let mut child = Command::new("unshare")
        .args(["-n", "sh", "-c", "ip link set lo up && exec \"$@\"", "sh"])
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(NETNS_MARK, "1")
        .spawn()
        .map_err(|e| anyhow::anyhow!("--netns: could not run unshare: {e}"))?;
    // unshare and sh exec, so this pid becomes the check in the namespace:
    // a SIGTERM sent to this process reaches it, and it stops its programs.
    let pid = child.id() as i32;
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    std::thread::spawn(move || {
        for signal in signals.forever() {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    });
    let status = child
        .wait()
        .map_err(|e| anyhow::anyhow!("--netns: waiting for the check in its namespace: {e}"))?;
    anyhow::ensure!(
        status.code().is_some(),
        "--netns: the check in its namespace {}",
        describe(status)
    );
    Ok(status.code().unwrap_or(1) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deaths_are_named() {
        assert_eq!(
            describe(ExitStatus::from_raw(libc::SIGSEGV)),
            "died with SIGSEGV"
        );
        assert_eq!(
            describe(ExitStatus::from_raw(1 << 8)),
            "exited with status 1"
        );
        assert_eq!(
            describe(ExitStatus::from_raw(139 << 8)),
            "died with SIGSEGV (the shell's status 139)"
        );
    }
}
