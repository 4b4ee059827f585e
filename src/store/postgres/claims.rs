//! Claims seen across centers: each center tells the others, through
//! PostgreSQL's `NOTIFY`, which slots its reservations are about to
//! commit, and hides the slots the others claim for a moment.
//!
//! A center's copy in memory ([`Mirror`]) hides its own claims already;
//! without this, every center would still offer the lowest free slots
//! that the others are committing, and with several centers most of a
//! busy table's patients would choose a slot already on its way to
//! someone else (measured: 4 centers booked 0.56 of what one did).
//!
//! - **Never on a booking's path.** A reservation hands its slot to the
//!   publisher thread and goes on: the publisher sends every claim
//!   waiting as one `pg_notify` on a connection of its own, committed
//!   without waiting for the disk (`synchronous_commit=off`: a claim that
//!   never arrives costs a race, never a booking).
//! - **Only hints.** A foreign claim hides its slot for [`CLAIM_HOLD`] or
//!   until the listener stops; who wins is still the database's to
//!   decide, and a slot whose foreign claim failed is offered again when
//!   the hold ends.
//! - **Per table.** The payload names the table's schema and the sending
//!   store, so two tables in one database, and a center's own claims,
//!   hide nothing of each other's.

use std::collections::VecDeque;
use std::collections::hash_map::RandomState;
use std::fmt::Write as _;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use postgres::Config;
use postgres::fallible_iterator::FallibleIterator;

use super::link::Link;
use crate::store::mirror::Mirror;
use crate::store::{ErrorKind, StoreError};

/// The channel every medsim store notifies and listens on.
const CHANNEL: &str = "medsim_claims";

/// How long a slot another center claimed stays hidden: a few commits'
/// time, after which its outcome has reached this copy through the next
/// commit's or refresh's read of the free slots.
pub(super) const CLAIM_HOLD: Duration = Duration::from_millis(100);

/// Slots named in one notification (PostgreSQL takes payloads under
/// 8,000 bytes; an index is at most 20 digits and a comma).
const PER_NOTIFICATION: usize = 300;

/// Claims waiting for the publisher; past this, a claim is not told (a
/// hint lost, not a booking).
const QUEUE: usize = 4096;

/// How often the listener looks up from the connection to end expired
/// holds and to see whether the store is gone.
const TICK: Duration = Duration::from_millis(20);

/// This store's side of the claims: where its reservations hand their
/// slots to be told.
pub(super) struct Claims {
    publish: Sender<u64>,
}

impl Claims {
    /// Starts the publisher and the listener for the table in `schema`:
    /// the publisher ends when these claims are dropped, the listener when
    /// `stopped` is disconnected, and each drops its copy of `ending` when
    /// it has let go of its connection.
    ///
    /// # Errors
    ///
    /// A thread could not be started.
    pub(super) fn start(
        config: &Config,
        label: &str,
        schema: &str,
        mirror: Arc<Mirror>,
        stopped: Receiver<()>,
        ending: Sender<()>,
    ) -> Result<Claims, StoreError> {
        let origin = format!("{:016x}", RandomState::new().hash_one(label));
        let (publish, waiting) = crossbeam_channel::bounded(QUEUE);
        let mut quiet = config.clone();
        let options = quiet.get_options().unwrap_or("").to_owned();
        quiet.options(format!("{options} -c synchronous_commit=off").trim());
        let publisher = Publisher {
            link: Link::new(&quiet, label),
            tag: format!("{origin}:{schema}"),
            failing: false,
        };
        let listener = Listener {
            link: Link::new(config, label),
            listening: false,
            origin,
            schema: schema.to_owned(),
            mirror,
            held: VecDeque::new(),
            failing: false,
        };
        let cannot = |e: std::io::Error| {
            StoreError::new(
                label.to_owned(),
                ErrorKind::Unreachable,
                format!("cannot start telling claims: {e}"),
            )
        };
        let published = ending.clone();
        std::thread::Builder::new()
            .name("store-claims-out".into())
            .spawn(move || {
                publisher.run(&waiting);
                drop(published);
            })
            .map_err(cannot)?;
        std::thread::Builder::new()
            .name("store-claims-in".into())
            .spawn(move || {
                listener.run(&stopped);
                drop(ending);
            })
            .map_err(cannot)?;
        Ok(Claims { publish })
    }

    /// Tells the other centers that slot `index` is about to be committed
    /// here; never waits.
    pub(super) fn tell(&self, index: u64) {
        let _ = self.publish.try_send(index);
    }
}

/// Sends the claims waiting, together, until the store is dropped.
struct Publisher {
    link: Link,
    /// `ORIGIN:SCHEMA`, after the slots in each payload.
    tag: String,
    failing: bool,
}

impl Publisher {
    fn run(mut self, waiting: &Receiver<u64>) {
        while let Ok(first) = waiting.recv() {
            let mut slots = vec![first];
            slots.extend(waiting.try_iter().take(QUEUE));
            for chunk in slots.chunks(PER_NOTIFICATION) {
                let mut payload = String::with_capacity(chunk.len() * 8 + self.tag.len());
                for (n, index) in chunk.iter().enumerate() {
                    let comma = if n == 0 { "" } else { "," };
                    let _ = write!(payload, "{comma}{index}");
                }
                let _ = write!(payload, " {}", self.tag);
                let sent = self.link.run("cannot tell claims", |client| {
                    client.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                });
                match sent {
                    Ok(_) => self.failing = false,
                    Err(e) => {
                        // Once per outage; the claims are only hints.
                        if !self.failing {
                            eprintln!("{}: {}", self.link.label, e.reason());
                        }
                        self.failing = true;
                    }
                }
            }
        }
    }
}

/// Hides the slots other centers claim, each for [`CLAIM_HOLD`].
struct Listener {
    link: Link,
    listening: bool,
    origin: String,
    schema: String,
    mirror: Arc<Mirror>,
    /// Slots hidden here, oldest first, and when each is shown again.
    held: VecDeque<(Instant, u64)>,
    failing: bool,
}

impl Listener {
    fn run(mut self, stopped: &Receiver<()>) {
        while let Err(TryRecvError::Empty) = stopped.try_recv() {
            match self.listen() {
                Ok(()) => self.failing = false,
                Err(e) => {
                    if !self.failing {
                        eprintln!("{}: {}", self.link.label, e.reason());
                    }
                    self.failing = true;
                    self.listening = false;
                    // Not a busy loop against a server that is down.
                    if let Err(RecvTimeoutError::Disconnected) = stopped.recv_timeout(CLAIM_HOLD) {
                        break;
                    }
                }
            }
            self.show_expired(Instant::now());
        }
        self.show_expired(Instant::now() + CLAIM_HOLD);
    }

    /// Takes the notifications that come within one [`TICK`].
    fn listen(&mut self) -> Result<(), StoreError> {
        if !self.listening
            || self
                .link
                .client
                .as_ref()
                .is_none_or(postgres::Client::is_closed)
        {
            self.link.client = None;
            self.link.run("cannot listen for claims", |client| {
                client.batch_execute(&format!("LISTEN {CHANNEL}"))
            })?;
            self.listening = true;
        }
        let label = self.link.label.clone();
        let mut payloads = Vec::new();
        let mut lost = None;
        {
            let client = self.link.client()?;
            let mut notes = client.notifications();
            let mut notes = notes.timeout_iter(TICK);
            let until = Instant::now() + TICK;
            loop {
                match notes.next() {
                    Ok(Some(note)) => {
                        payloads.push(note.payload().to_owned());
                        if Instant::now() >= until {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        lost = Some(e);
                        break;
                    }
                }
            }
        }
        for payload in &payloads {
            self.hide(payload);
        }
        match lost {
            None => Ok(()),
            Some(e) => {
                self.listening = false;
                Err(StoreError::caused(
                    label,
                    ErrorKind::Query,
                    "lost the claims of other centers",
                    &e,
                ))
            }
        }
    }

    /// Hides the slots a notification names, unless they are this store's
    /// own or another table's.
    fn hide(&mut self, payload: &str) {
        let Some((slots, tag)) = payload.split_once(' ') else {
            return;
        };
        let Some((origin, schema)) = tag.split_once(':') else {
            return;
        };
        if origin == self.origin || schema != self.schema {
            return;
        }
        let until = Instant::now() + CLAIM_HOLD;
        for index in slots.split(',').filter_map(|s| s.parse::<u64>().ok()) {
            self.mirror.book.claim(index);
            self.held.push_back((until, index));
        }
    }

    fn show_expired(&mut self, now: Instant) {
        while let Some(&(until, index)) = self.held.front() {
            if until > now {
                break;
            }
            self.mirror.book.unclaim(index);
            self.held.pop_front();
        }
    }
}
