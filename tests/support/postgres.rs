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
