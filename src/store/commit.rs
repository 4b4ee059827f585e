//! Group commit for the stores on disk: concurrent reservations are made
//! durable together, one transaction (one fsync) for many, and each is
//! answered only after the commit that holds it.
//!
//! This module owns the queue between the session threads and the
//! committer threads, the [`Ticket`] of each reservation (who may still
//! answer it), the committer loop, the time limit a session waits, and the
//! settling of reservations whose session stopped waiting. What a commit is
//! (SQL, connections, files) is the backend's ([`Backend`]): `sqlite.rs`
//! and `postgres/`.
//!
//! A session's reservation is a [`Ticket`] sent to the queue; a committer
//! takes every ticket waiting (up to [`MAX_BATCH`], waiting up to
//! [`GATHER`] for more when the last commit was shared), hands them to the
//! backend as one commit, and answers each. Never a lie to the patient:
//!
//! - A session that waits past the time limit before a committer took its
//!   ticket takes it back: nothing was sent, so "not recorded" is true.
//! - A session that waits past the limit after its ticket was sent cannot
//!   know the outcome: it says the booking is *not confirmed*, and the
//!   ticket is *abandoned*. When the commit ends, an abandoned booking that
//!   did commit is cancelled (settled) and the cancel is logged.
//! - A commit whose outcome the backend cannot know (the connection died
//!   mid-call) is asked again on a new connection until it is known: each
//!   ticket carries an attempt token, and the database recognises a
//!   reservation's own earlier write by it (`postgres/writer.rs`).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use super::{ErrorKind, Reservation, StoreError};

/// The most reservations one commit carries.
pub const MAX_BATCH: usize = 512;

/// How long a committer whose last commit carried more than one
/// reservation waits, once, for another before it commits: under load a
/// commit then carries tens of reservations instead of three, and the CPU
/// each commit costs (on this project's 2-core machine, mostly the disk
/// flush's) goes to sessions instead; measured with `medsim bench --cases
/// stores` (docs/PERFORMANCE.md). A lone reservation never waits.
pub const GATHER: Duration = Duration::from_micros(500);

/// Commits made by every store of this process, and the reservations they
/// carried: the bench reports reservations per commit from them.
pub static COMMITS: AtomicU64 = AtomicU64::new(0);
/// See [`COMMITS`].
pub static COMMITTED_RESERVATIONS: AtomicU64 = AtomicU64::new(0);

const PENDING: u8 = 0;
const SENT: u8 = 1;
const DONE: u8 = 2;
const ABANDONED: u8 = 3;

/// One reservation on its way to a commit.
pub struct Ticket {
    /// The slot.
    pub index: u64,
    /// Who asks for it.
    pub holder: Box<str>,
    /// Unique to this reservation: the database keeps it beside the
    /// holder, so an outcome lost with a connection can be asked again.
    pub attempt: i64,
    state: AtomicU8,
    reply: Sender<Result<Reservation, StoreError>>,
}

/// A reservation the session stopped waiting for, to be cancelled if it
/// committed.
#[derive(Debug, Clone)]
pub struct Settle {
    pub index: u64,
    pub holder: Box<str>,
    pub attempt: i64,
}

/// What a committer asks of a store on disk.
pub trait Backend: Send + 'static {
    /// Makes `tickets` durable in one commit, answering each in order.
    ///
    /// # Errors
    ///
    /// [`Failure::NotRecorded`]: nothing of the batch was committed.
    /// [`Failure::Unknown`]: the commit may or may not have happened.
    fn commit(&mut self, tickets: &[&Ticket]) -> Result<Vec<Reservation>, Failure>;

    /// Frees `slot` if `holder` holds it.
    ///
    /// # Errors
    ///
    /// The store could not answer; the slot stays as it was.
    fn cancel(&mut self, index: u64, holder: &str) -> Result<bool, StoreError>;

    /// Cancels the reservations of `settles` that committed; returns the
    /// slots it freed.
    ///
    /// # Errors
    ///
    /// The store could not answer; they are settled later.
    fn settle(&mut self, settles: &[Settle]) -> Result<Vec<u64>, StoreError>;

    /// Called after every commit that changed slots, with the outcomes.
    fn committed(&mut self, _tickets: &[&Ticket], _outcomes: &[Reservation]) {}

    /// A line for the log (the center's stderr).
    fn log(&self, line: &str);
}

/// Why a commit failed.
#[derive(Debug)]
pub enum Failure {
    /// Nothing of the batch was committed.
    NotRecorded(StoreError),
    /// The connection ended with the commit's outcome unknown.
    Unknown(StoreError),
}

enum Op {
    Reserve(Arc<Ticket>),
    Cancel {
        index: u64,
        holder: Box<str>,
        reply: Sender<Result<bool, StoreError>>,
    },
}

/// The session threads' side: the queue, the time limit, and the
/// committer threads (stopped when this is dropped).
pub struct Committer {
    queue: Option<Sender<Op>>,
    limit: Duration,
    label: String,
    /// Disconnected when every committer thread has ended.
    ended: Receiver<()>,
}

impl Committer {
    /// Starts one committer thread per backend in `backends`, all taking
    /// from one queue; a session waits at most `limit` for its outcome.
    pub fn start<B: Backend>(
        backends: Vec<B>,
        limit: Duration,
        label: String,
    ) -> Result<Committer, StoreError> {
        let (queue, taken) = crossbeam_channel::unbounded();
        let (ending, ended) = crossbeam_channel::bounded::<()>(0);
        let unsettled = Arc::new(Mutex::new(Vec::new()));
        for (k, backend) in backends.into_iter().enumerate() {
            let (taken, unsettled, ending) =
                (taken.clone(), Arc::clone(&unsettled), ending.clone());
            std::thread::Builder::new()
                .name(format!("store-commit-{k}"))
                .spawn(move || {
                    run(backend, &taken, &unsettled);
                    // The backend (its connection, its file) is closed now.
                    drop(ending);
                })
                .map_err(|e| {
                    StoreError::new(
                        label.clone(),
                        ErrorKind::Unreachable,
                        format!("cannot start a committer thread: {e}"),
                    )
                })?;
        }
        Ok(Committer {
            queue: Some(queue),
            limit,
            label,
            ended,
        })
    }

    /// Reserves slot `index` to `holder`: queued, committed with the
    /// reservations around it, answered after that commit.
    ///
    /// # Errors
    ///
    /// The commit failed (nothing recorded), or no outcome came within the
    /// time limit ([`ErrorKind::Unconfirmed`] when it may have committed:
    /// it is then cancelled if it did).
    pub fn reserve(&self, index: u64, holder: &str) -> Result<Reservation, StoreError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let ticket = Arc::new(Ticket {
            index,
            holder: holder.into(),
            attempt: attempt_token(),
            state: AtomicU8::new(PENDING),
            reply,
        });
        self.send(Op::Reserve(Arc::clone(&ticket)))?;
        match answer.recv_timeout(self.limit) {
            Ok(outcome) => outcome,
            Err(RecvTimeoutError::Disconnected) => Err(self.stopped()),
            Err(RecvTimeoutError::Timeout) => {
                let waited = crate::duration::show_duration(self.limit);
                match ticket.state.compare_exchange(
                    PENDING,
                    ABANDONED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    // Never sent: nothing can have been recorded.
                    Ok(_) => Err(StoreError::new(
                        self.label.clone(),
                        ErrorKind::Query,
                        format!(
                            "cannot reserve slot {index}: no commit could take it within {waited}; nothing was recorded"
                        ),
                    )),
                    Err(_) => match ticket.state.compare_exchange(
                        SENT,
                        ABANDONED,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => Err(StoreError::new(
                            self.label.clone(),
                            ErrorKind::Unconfirmed,
                            format!(
                                "reserving slot {index}: no outcome within {waited}; not confirmed, and cancelled if it commits"
                            ),
                        )),
                        // Answered just now.
                        Err(_) => answer.recv().unwrap_or_else(|_| Err(self.stopped())),
                    },
                }
            }
        }
    }

    /// Frees slot `index` if `holder` holds it, through the committers.
    ///
    /// # Errors
    ///
    /// The store could not answer in time; the slot may stay reserved.
    pub fn cancel(&self, index: u64, holder: &str) -> Result<bool, StoreError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        self.send(Op::Cancel {
            index,
            holder: holder.into(),
            reply,
        })?;
        match answer.recv_timeout(self.limit) {
            Ok(outcome) => outcome,
            Err(_) => Err(StoreError::new(
                self.label.clone(),
                ErrorKind::Query,
                format!(
                    "cannot cancel slot {index}: no answer within {}",
                    crate::duration::show_duration(self.limit)
                ),
            )),
        }
    }

    fn send(&self, op: Op) -> Result<(), StoreError> {
        match &self.queue {
            Some(queue) if queue.send(op).is_ok() => Ok(()),
            _ => Err(self.stopped()),
        }
    }

    fn stopped(&self) -> StoreError {
        StoreError::new(
            self.label.clone(),
            ErrorKind::Query,
            "the committer stopped; nothing was recorded",
        )
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // The committers end when the queue is closed and empty, closing
        // their connections (an SQLite file is then whole, its WAL folded
        // in). One stuck on a stalled server is left behind rather than
        // waited for.
        self.queue = None;
        let _ = self.ended.recv_timeout(Duration::from_secs(2));
    }
}

/// A number for each reservation attempt, unique among this process's
/// attempts and (with the process id and the clock in it) across centers
/// in practice.
fn attempt_token() -> i64 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = (u64::from(std::process::id()) << 40)
        ^ clock
        ^ NEXT
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    mixed as i64
}

/// How long a committer waits before asking again a commit whose outcome
/// was lost, at first and at most.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MOST: Duration = Duration::from_millis(500);

/// How often an idle committer settles what earlier commits left.
const SETTLE_EVERY: Duration = Duration::from_secs(1);

fn run<B: Backend>(mut backend: B, taken: &Receiver<Op>, unsettled: &Mutex<Vec<Settle>>) {
    let mut batch: Vec<Arc<Ticket>> = Vec::with_capacity(MAX_BATCH);
    let mut last_batch = 0;
    loop {
        let first = match taken.recv_timeout(SETTLE_EVERY) {
            Ok(first) => first,
            // Idle: settle what earlier commits left, then wait again.
            Err(RecvTimeoutError::Timeout) => {
                settle_earlier(&mut backend, unsettled);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        batch.clear();
        let mut gathered = false;
        let mut next = Some(first);
        while let Some(op) = next.take() {
            match op {
                Op::Reserve(ticket) => {
                    // A session that gave up before this took its ticket
                    // has said "not recorded": it must stay so.
                    if ticket
                        .state
                        .compare_exchange(PENDING, SENT, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                    {
                        batch.push(ticket);
                    }
                }
                Op::Cancel {
                    index,
                    holder,
                    reply,
                } => {
                    let _ = reply.send(backend.cancel(index, &holder));
                }
            }
            if batch.len() < MAX_BATCH {
                next = taken.try_recv().ok();
                // Under load (the last commit carried more than one), wait
                // once for the next reservation; alone, never.
                if next.is_none() && !gathered && last_batch > 1 {
                    gathered = true;
                    next = taken.recv_timeout(GATHER).ok();
                }
            }
        }
        settle_earlier(&mut backend, unsettled);
        last_batch = batch.len();
        if !batch.is_empty() {
            commit_batch(&mut backend, &mut batch, taken, unsettled);
        }
    }
}

/// Settles what earlier commits left: bookings nobody was told of.
fn settle_earlier<B: Backend>(backend: &mut B, unsettled: &Mutex<Vec<Settle>>) {
    let settles: Vec<Settle> = {
        let mut list = unsettled.lock().unwrap_or_else(|e| e.into_inner());
        if list.is_empty() {
            return;
        }
        std::mem::take(&mut *list)
    };
    match backend.settle(&settles) {
        Ok(freed) => log_settled(backend, &settles, &freed),
        Err(_) => unsettled
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(settles),
    }
}

fn log_settled<B: Backend>(backend: &B, settles: &[Settle], freed: &[u64]) {
    for s in settles.iter().filter(|s| freed.contains(&s.index)) {
        backend.log(&format!(
            "slot {} was booked for {} but the session had stopped waiting (told: not confirmed); the booking is cancelled",
            s.index, s.holder
        ));
    }
}

fn commit_batch<B: Backend>(
    backend: &mut B,
    batch: &mut Vec<Arc<Ticket>>,
    taken: &Receiver<Op>,
    unsettled: &Mutex<Vec<Settle>>,
) {
    let mut delay = RETRY_FIRST;
    let mut lost = false;
    loop {
        // Sessions that stopped waiting are settled, not committed again.
        let mut gone = Vec::new();
        batch.retain(|t| {
            let live = t.state.load(Ordering::Acquire) == SENT;
            if !live {
                gone.push(Settle {
                    index: t.index,
                    holder: t.holder.clone(),
                    attempt: t.attempt,
                });
            }
            live
        });
        if lost && !gone.is_empty() {
            unsettled
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(gone);
        }
        if batch.is_empty() {
            return;
        }
        let tickets: Vec<&Ticket> = batch.iter().map(|t| &**t).collect();
        match backend.commit(&tickets) {
            Ok(outcomes) => {
                COMMITS.fetch_add(1, Ordering::Relaxed);
                COMMITTED_RESERVATIONS.fetch_add(tickets.len() as u64, Ordering::Relaxed);
                backend.committed(&tickets, &outcomes);
                let mut late = Vec::new();
                for (ticket, outcome) in tickets.iter().zip(outcomes) {
                    let booked = matches!(outcome, Reservation::Booked { .. });
                    if !answer(ticket, Ok(outcome)) && booked {
                        late.push(Settle {
                            index: ticket.index,
                            holder: ticket.holder.clone(),
                            attempt: ticket.attempt,
                        });
                    }
                }
                if !late.is_empty() {
                    match backend.settle(&late) {
                        Ok(freed) => log_settled(backend, &late, &freed),
                        Err(_) => unsettled
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .extend(late),
                    }
                }
                return;
            }
            Err(Failure::NotRecorded(e)) if !lost => {
                for ticket in &tickets {
                    answer(ticket, Err(e.clone()));
                }
                return;
            }
            Err(Failure::NotRecorded(e) | Failure::Unknown(e)) => {
                if !lost {
                    backend.log(&format!(
                        "{e}; the outcome of {} is unknown: asking again",
                        crate::stats::plural(tickets.len() as u64, "reservation", "reservations")
                    ));
                }
                lost = true;
                // Meanwhile, sessions queued behind are told at once that
                // nothing of theirs was recorded: nothing was sent.
                fail_queued(taken, &e);
                std::thread::sleep(delay);
                delay = (delay * 2).min(RETRY_MOST);
            }
        }
    }
}

/// Answers a ticket unless its session stopped waiting. Returns whether it
/// was answered.
fn answer(ticket: &Ticket, outcome: Result<Reservation, StoreError>) -> bool {
    if ticket
        .state
        .compare_exchange(SENT, DONE, Ordering::AcqRel, Ordering::Acquire)
        .is_err()
    {
        return false;
    }
    // The session may have ended in between; nothing to tell then.
    let _ = ticket.reply.send(outcome);
    true
}

fn fail_queued(taken: &Receiver<Op>, cause: &StoreError) {
    let deadline = Instant::now() + Duration::from_millis(1);
    while Instant::now() < deadline {
        let Ok(op) = taken.try_recv() else { return };
        let e = StoreError::new(
            cause.store().to_owned(),
            ErrorKind::Unreachable,
            format!("{}; nothing was recorded", cause.reason()),
        );
        match op {
            Op::Reserve(ticket) => {
                if ticket
                    .state
                    .compare_exchange(PENDING, DONE, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    let _ = ticket.reply.send(Err(e));
                }
            }
            Op::Cancel { reply, .. } => {
                let _ = reply.send(Err(e));
            }
        }
    }
}
