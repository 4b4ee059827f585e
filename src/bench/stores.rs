//! The stores a booking run is measured on, each made fresh for one run
//! and removed after it: the memory store (the one the others are held
//! to), a temporary SQLite file, or a new database on a PostgreSQL server
//! (`--postgres URL`, else `MEDSIM_TEST_POSTGRES`).
//!
//! Only the making and removing is here; the store itself is `store`'s,
//! opened by `system` like any center's.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::Context as _;

use crate::store::StoreUrl;

/// The variable the tests use to name a PostgreSQL server; the bench reads
/// it when `--postgres` is not given.
pub(super) const POSTGRES_VAR: &str = "MEDSIM_TEST_POSTGRES";

/// The kinds of store the booking path is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// The stores on disk are held to it.
    Memory,
    Sqlite,
    Postgres,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Memory => "memory",
            Kind::Sqlite => "sqlite",
            Kind::Postgres => "postgres",
        }
    }
}

/// A store made for one run: its URL, and what to remove at the end.
pub(super) struct FreshStore {
    pub(super) url: StoreUrl,
    cleanup: Cleanup,
}

enum Cleanup {
    Files(Vec<PathBuf>),
    Database { admin_url: String, name: String },
}

impl FreshStore {
    /// A new, empty store of `kind`: an SQLite file in `dir`, or a new
    /// database on the server of `postgres` (a URL whose user may create
    /// databases).
    ///
    /// # Errors
    ///
    /// The server cannot be reached or refuses `CREATE DATABASE`.
    pub(super) fn make(
        kind: Kind,
        dir: &std::path::Path,
        postgres: Option<&str>,
    ) -> anyhow::Result<FreshStore> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        match kind {
            Kind::Memory => Ok(FreshStore {
                url: StoreUrl::Memory,
                cleanup: Cleanup::Files(Vec::new()),
            }),
            Kind::Sqlite => {
                let file = dir.join(format!("booking-{n}.sqlite"));
                let side = |suffix: &str| {
                    let mut path = file.clone().into_os_string();
                    path.push(suffix);
                    PathBuf::from(path)
                };
                let files = vec![file.clone(), side("-wal"), side("-shm")];
                for f in &files {
                    let _ = std::fs::remove_file(f);
                }
                Ok(FreshStore {
                    url: StoreUrl::Sqlite(file),
                    cleanup: Cleanup::Files(files),
                })
            }
            Kind::Postgres => {
                let admin_url = postgres.context("no PostgreSQL server given")?;
                let name = format!("medsim_bench_{}_{n}", std::process::id());
                let mut admin = postgres::Client::connect(admin_url, postgres::NoTls)
                    .with_context(|| {
                        format!(
                            "connecting to {} for CREATE DATABASE",
                            StoreUrl::Postgres(admin_url.to_owned())
                        )
                    })?;
                admin
                    .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
                    .with_context(|| format!("CREATE DATABASE {name}"))?;
                Ok(FreshStore {
                    url: StoreUrl::Postgres(crate::store::postgres::with_database(
                        admin_url, &name,
                    )),
                    cleanup: Cleanup::Database {
                        admin_url: admin_url.to_owned(),
                        name,
                    },
                })
            }
        }
    }
}

impl Drop for FreshStore {
    fn drop(&mut self) {
        // Best effort: what is left behind is only disk space.
        match &self.cleanup {
            Cleanup::Files(files) => {
                for f in files {
                    let _ = std::fs::remove_file(f);
                }
            }
            Cleanup::Database { admin_url, name } => {
                if let Ok(mut admin) = postgres::Client::connect(admin_url, postgres::NoTls) {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
                }
            }
        }
    }
}
