//! Finding a PostgreSQL server for the tests, and a fresh database per
//! test so tests run in parallel.
//!
//! The server is the URL in `MEDSIM_TEST_POSTGRES` (`.ci/run` starts one
//! and sets it). Without it a test is skipped, loudly, on a developer's
//! machine, and fails under `CI=true`: a PostgreSQL test never passes
//! without having run.

#![allow(dead_code)]

use std::io::Write as _;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The variable naming the server: a URL whose user may create databases.
pub const VAR: &str = "MEDSIM_TEST_POSTGRES";

/// The server's URL, or `None` after printing why the test is skipped.
///
/// # Panics
///
/// The variable is unset (or empty) while `CI=true`.
pub fn server_url(test: &str) -> Option<String> {
    match std::env::var(VAR) {
        Ok(url) if !url.trim().is_empty() => Some(url.trim().to_owned()),
        _ => {
            let why = format!(
                "{VAR} is not set (a postgres:// URL of a server where the user may \
                 CREATE DATABASE; .ci/run starts one)"
            );
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: CI=true but {why}");
            }
            // Straight to stderr: libtest captures print! and eprint!, and
            // a skip must be seen, not pass silently.
            let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
            None
        }
    }
}

/// A database made for one test, dropped (with its connections) at the
/// end.
pub struct TestDb {
    admin_url: String,
    name: String,
    /// The URL of the fresh database.
    pub url: String,
}

impl TestDb {
    /// Makes a fresh, uniquely named database on the server of
    /// `admin_url`.
    pub fn create(admin_url: &str, tag: &str) -> TestDb {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "medsim_{tag}_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = postgres::Client::connect(admin_url, postgres::NoTls)
            .unwrap_or_else(|e| panic!("connecting to {VAR} for CREATE DATABASE: {}", full(&e)));
        // template0 is never connected to, so tests creating databases at
        // once do not trip over each other.
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {}", full(&e)));
        TestDb {
            admin_url: admin_url.to_owned(),
            url: with_database(admin_url, &name),
            name,
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Best effort: a database left behind is harmless to other tests.
        if let Ok(mut admin) = postgres::Client::connect(&self.admin_url, postgres::NoTls) {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// An error with its sources: the driver's own text is often just
/// "db error".
fn full(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text = format!("{text}: {e}");
        source = e.source();
    }
    text
}

pub use medsim::store::postgres::with_database;

/// A PostgreSQL server of one test's own, to stop, restart or stall
/// under live centers: `initdb` in a temporary directory (as the
/// `postgres` user when we are root: initdb refuses root), listening on
/// 127.0.0.1 on a free port, trust authentication. Stopped and removed on
/// drop.
pub struct OwnServer {
    bin: std::path::PathBuf,
    dir: tempfile::TempDir,
    port: u16,
}

/// The newest `/usr/lib/postgresql/*/bin` holding `initdb`.
fn postgres_bin() -> Option<std::path::PathBuf> {
    let mut found: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs a PostgreSQL program as the `postgres` user when we are root.
fn as_postgres(program: &std::path::Path) -> std::process::Command {
    if is_root() {
        let mut command = std::process::Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(program);
        command.current_dir("/");
        command
    } else {
        std::process::Command::new(program)
    }
}

impl OwnServer {
    /// Starts a fresh server, or `None` after saying why the test is
    /// skipped.
    ///
    /// # Panics
    ///
    /// PostgreSQL's programs are missing while `CI=true`, or the server
    /// does not start.
    pub fn start(test: &str) -> Option<OwnServer> {
        let Some(bin) = postgres_bin() else {
            let why = "no PostgreSQL programs (no /usr/lib/postgresql/*/bin/initdb; \
                       apt-get install postgresql)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: CI=true but {why}");
            }
            let _ = writeln!(std::io::stderr(), "{test}: skipped: {why}");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("medsim-own-pg")
            .tempdir()
            .unwrap();
        if is_root() {
            let status = std::process::Command::new("chown")
                .args(["postgres:", dir.path().to_str().unwrap()])
                .status()
                .unwrap();
            assert!(
                status.success(),
                "chown of {} to postgres",
                dir.path().display()
            );
        }
        let data = dir.path().join("data");
        let out = as_postgres(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let server = OwnServer { bin, dir, port };
        server.pg_ctl_start();
        Some(server)
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    fn pg_ctl_start(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=200",
            self.port,
            self.dir.path().display()
        );
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl start: {}{}",
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
        );
    }

    /// `pg_ctl stop -m immediate`: every backend gone at once, no
    /// shutdown checkpoint (a crash, as far as the centers can tell).
    pub fn stop_immediate(&self) {
        let out = as_postgres(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "-w", "stop"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl stop: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Starts it again after [`OwnServer::stop_immediate`] (crash
    /// recovery first), on the same port.
    pub fn restart(&self) {
        self.pg_ctl_start();
    }

    /// The postmaster and every process it started.
    fn processes(&self) -> Vec<i32> {
        let pid_file = std::fs::read_to_string(self.data().join("postmaster.pid")).unwrap();
        let postmaster: i32 = pid_file.lines().next().unwrap().trim().parse().unwrap();
        let mut pids = vec![postmaster];
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            // pid (comm) state ppid ...: the comm may hold spaces.
            let after_comm = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
            let ppid: Option<i32> = after_comm
                .split_whitespace()
                .nth(1)
                .and_then(|p| p.parse().ok());
            if ppid == Some(postmaster) {
                pids.push(pid);
            }
        }
        pids
    }

    /// SIGSTOP to every process of the server: connections stay open and
    /// nothing answers (the server cannot enforce its own timeouts).
    pub fn stall(&self) {
        for pid in self.processes() {
            // SAFETY: signalling a process of our own server.
            unsafe { libc::kill(pid, libc::SIGSTOP) };
        }
    }

    /// SIGCONT after [`OwnServer::stall`].
    pub fn resume(&self) {
        for pid in self.processes() {
            // SAFETY: as in stall.
            unsafe { libc::kill(pid, libc::SIGCONT) };
        }
    }

    /// The server's log, for a failed assertion.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        if self.data().join("postmaster.pid").exists() {
            self.resume();
            let _ = as_postgres(&self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(self.data())
                .args(["-m", "immediate", "-w", "stop"])
                .output();
        }
    }
}
