//! The sustained case: a million list sessions against one center
//! process, sampling its memory and threads as they go.

use std::io;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context as _;

use super::load::{Exchange, drive};
use super::scale::process_size;
use super::{Sample, Sustained, tempfile_dir};
use crate::data::{Fixtures, Source};
use crate::system::DEFAULT_LIST_CAP;

/// `sessions` list-path sessions at concurrency 64 against one center
/// process (on an SQLite store whose slots are all booked), sampling its
/// size.
pub(super) fn sustained_run(sessions: u64, log: &mut dyn FnMut(&str)) -> anyhow::Result<Sustained> {
    let dir = tempfile_dir()?;
    let db = dir.join("booked.sqlite");
    let fixtures = Fixtures::load(&Source::built_in())?;
    {
        let store =
            crate::store::sqlite::SqliteStore::open(&db, &fixtures.slots, DEFAULT_LIST_CAP)?;
        for slot in &fixtures.slots {
            crate::store::Store::reserve(&store, slot.index, "someone")?;
        }
    }
    let exe = std::env::current_exe().context("finding the medsim binary")?;
    let mut child = Command::new(exe)
        .args(["center", "--listen", "127.0.0.1:0", "--quiet", "--store"])
        .arg(format!("sqlite:{}", db.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting a center")?;
    let guard = KillOnDrop(&mut child);
    let addr = {
        let stdout = guard.0.stdout.take().context("the center's stdout")?;
        let mut line = String::new();
        io::BufRead::read_line(&mut io::BufReader::new(stdout), &mut line)?;
        address_of(&line).with_context(|| format!("no address in {line:?}"))?
    };
    let pid = guard.0.id();
    let concurrency = 64;
    let samples = parking_lot::Mutex::new(Vec::new());
    let sample = |after: u64| {
        if let Some((rss_mib, threads)) = process_size(pid) {
            samples.lock().push(Sample {
                after_sessions: after,
                rss_mib,
                threads,
            });
        }
    };
    // A first burst to warm the pool, then the start sample.
    let warm = drive(concurrency, &|n| n >= 1000, &|rng, client| {
        client.session(Exchange::List, addr, rng)
    });
    sample(warm.sessions);
    let half = sessions / 2;
    let middle_taken = AtomicBool::new(false);
    let stop = |n: u64| {
        if n >= half && !middle_taken.swap(true, Ordering::Relaxed) {
            sample(n);
        }
        n >= sessions
    };
    log(&format!(
        "sustained: {sessions} list-path sessions at concurrency {concurrency}..."
    ));
    let run = drive(concurrency, &stop, &|rng, client| {
        client.session(Exchange::List, addr, rng)
    });
    sample(sessions);
    // A center that is gone before the end explains the errors: say how
    // it ended (a crash, or a signal from outside).
    let exited = match guard.0.try_wait() {
        Ok(Some(status)) => Some(status.to_string()),
        _ => None,
    };
    if let Some(status) = &exited {
        log(&format!(
            "sustained: the center ended during the run: {status}"
        ));
    }
    drop(guard);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Sustained {
        sessions: run.sessions,
        errors: run.errors,
        center_exited: exited,
        concurrency,
        per_second: run.per_second,
        samples: samples.into_inner(),
    })
}

pub(super) struct KillOnDrop<'a>(&'a mut std::process::Child);

impl Drop for KillOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The address in the center's first line.
pub(super) fn address_of(line: &str) -> Option<SocketAddr> {
    let words: Vec<&str> = line.trim().trim_end_matches('.').split(' ').collect();
    let port = words.iter().position(|w| *w == "number")? + 1;
    format!("{}:{}", words.last()?, words.get(port)?)
        .parse()
        .ok()
}
