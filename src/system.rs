//! One whole system in this process: a center and its doctors, each on a
//! socket bound here (port 0 by default, so it runs beside anything
//! holding the default ports), served on threads that are joined when the
//! system stops or is dropped.
//!
//! simulate, bench and the tests start their servers through this module
//! only; it is the one place that wires the center's table to the ports the
//! doctors really bound. What a client sees of it is an address per party,
//! the table's holders and the center's counts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use anyhow::Context as _;

use crate::center::Center;
use crate::console::Console;
use crate::data::{self, Fixtures, Slot, Users};
use crate::doctor::Doctor;
use crate::net;
use crate::shutdown::Shutdown;
use crate::store::memory::MemoryStore;
use crate::store::memory::SlotBook;
use crate::store::{self, Store, StoreUrl};

pub use crate::center::{Limits, Summary as CenterSummary};
pub use crate::store::DEFAULT_LIST_CAP;

/// Which slots the center offers.
#[derive(Debug, Clone)]
pub enum Slots {
    /// The data's slots.
    Data,
    /// These slots.
    Given(Vec<Slot>),
    /// `count` generated slots, the doctors in turn (never held in a list).
    Generated(u64),
}

/// What to start, and how.
#[derive(Clone)]
pub struct Options {
    /// The users who may log in.
    pub users: Users,
    /// The doctors to run, with their fee tables.
    pub doctors: Vec<data::Doctor>,
    /// The data's slots, for [`Slots::Data`].
    pub data_slots: Vec<Slot>,
    pub slots: Slots,
    /// Slots reserved before the first session, with their holders
    /// (memory stores only).
    pub holders: Vec<(u64, String)>,
    /// Where the slot table is kept.
    pub store: StoreUrl,
    /// How many centers share it, each on its own port.
    pub centers: usize,
    /// Who watches the centers' bookings and lost races (a live view).
    pub watcher: Option<Arc<dyn crate::center::Watcher>>,
    pub limits: Limits,
    pub list_cap: usize,
    /// Where the parties print their phase messages.
    pub console: Console,
    /// The center's address; port 0 picks a free one.
    pub center_listen: String,
    /// The host the doctors bind, each on a free port.
    pub doctor_host: String,
    /// Print passwords in the center's phase messages.
    pub show_passwords: bool,
}

impl Options {
    /// The data's users, doctors and slots, on free loopback ports, silent.
    pub fn from_fixtures(fixtures: &Fixtures) -> Options {
        Options {
            users: fixtures.users.clone(),
            doctors: fixtures.doctors.clone(),
            data_slots: fixtures.slots.clone(),
            slots: Slots::Data,
            holders: Vec::new(),
            store: StoreUrl::Memory,
            centers: 1,
            watcher: None,
            limits: Limits::default(),
            list_cap: DEFAULT_LIST_CAP,
            console: Console::silent(),
            center_listen: "127.0.0.1:0".into(),
            doctor_host: "127.0.0.1".into(),
            show_passwords: false,
        }
    }
}

/// A running system: its centers (usually one) and its doctors.
pub struct System {
    centers: Vec<(SocketAddr, Arc<Center>)>,
    doctors: Vec<(String, SocketAddr)>,
    /// The slot table, as the first center sees it.
    store: Arc<dyn Store>,
    slot_count: usize,
    servers: Servers,
}

/// The server threads started so far and their stop signal: dropped, it
/// stops and joins every one, so an error part-way through
/// [`System::start`] leaves no doctor blocked in `recv_from` for ever.
struct Servers {
    shutdown: Shutdown,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
}

impl Servers {
    /// Stops every server and waits for each; the first failure is
    /// returned after all have been joined.
    fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.trigger();
        let mut outcome = Ok(());
        for thread in self.threads.drain(..) {
            let ended = match thread.join() {
                Ok(served) => served.context("serving"),
                Err(_) => Err(anyhow::anyhow!("a server thread panicked")),
            };
            if outcome.is_ok() {
                outcome = ended;
            }
        }
        outcome
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl System {
    /// Binds every socket, then starts serving: once this returns, every
    /// party accepts.
    ///
    /// # Errors
    ///
    /// An address that cannot be bound, a store that cannot be opened, or
    /// a thread that cannot start.
    pub fn start(options: Options) -> anyhow::Result<System> {
        // Every early return below drops `servers`, which stops what it holds.
        let mut servers = Servers {
            shutdown: Shutdown::new(),
            threads: Vec::new(),
        };
        let mut doctors = Vec::new();
        for d in &options.doctors {
            let what = format!("doctor {}", d.name);
            let socket = net::bind_udp(&what, &net::host_port(&options.doctor_host, 0))?;
            let addr = net::loopback_if_unspecified(socket.local_addr()?);
            doctors.push((d.name.clone(), addr));
            let server = Doctor::new(&d.name, d.fees.clone(), options.console.clone());
            let shutdown = servers.shutdown.clone();
            servers.threads.push(
                std::thread::Builder::new()
                    .name(format!("medsim-{}", d.name))
                    .spawn(move || server.serve(&socket, &shutdown).map(drop))
                    .with_context(|| format!("starting {what}"))?,
            );
        }
        let ports: Vec<(String, u16)> = doctors
            .iter()
            .map(|(name, addr)| (name.clone(), addr.port()))
            .collect();
        let port_of = |slot: Slot| Slot {
            port: ports
                .iter()
                .find(|(name, _)| *name == slot.doctor)
                .map_or(slot.port, |(_, port)| *port),
            ..slot
        };
        let slots: Box<dyn Iterator<Item = Slot>> = match options.slots {
            Slots::Data => Box::new(options.data_slots.into_iter()),
            Slots::Given(slots) => Box::new(slots.into_iter()),
            Slots::Generated(count) => Box::new(data::generated_slots(count, &ports)),
        };
        // One store a center, as separate processes would each open theirs;
        // a memory table is this process's, so its centers share it.
        let (stores, slot_count): (Vec<Arc<dyn Store>>, usize) = match &options.store {
            StoreUrl::Memory => {
                // The table tells the doctors' real ports; straight into it,
                // so a large generated list is never held.
                let book = SlotBook::from_slots(slots.map(port_of), options.list_cap);
                let count = book.free_count();
                book.restore(&options.holders);
                let store: Arc<dyn Store> = Arc::new(MemoryStore::from_book(book));
                (vec![store; options.centers.max(1)], count)
            }
            url => {
                // A store outlives the run: it keeps the data's ports (the
                // next run's doctors bind others), and clients reach this
                // run's doctors by name.
                let slots: Vec<Slot> = slots.collect();
                let stores = (0..options.centers.max(1))
                    .map(|_| store::open(url, &slots, options.list_cap))
                    .collect::<Result<Vec<_>, _>>()?;
                (stores, slots.len())
            }
        };
        let mut centers = Vec::new();
        for (k, store) in stores.iter().enumerate() {
            let listener = net::bind_tcp("the center", &options.center_listen)?;
            let addr = net::loopback_if_unspecified(listener.local_addr()?);
            let center = Arc::new(
                Center::new(
                    options.users.clone(),
                    Arc::clone(store),
                    options.limits.clone(),
                    options.console.clone(),
                )
                .show_passwords(options.show_passwords)
                .watched_by(options.watcher.clone()),
            );
            let serving = Arc::clone(&center);
            let shutdown = servers.shutdown.clone();
            servers.threads.push(
                std::thread::Builder::new()
                    .name(format!("medsim-center-{}", k + 1))
                    .spawn(move || serving.serve(listener, &shutdown).map(drop))
                    .context("starting the center")?,
            );
            centers.push((addr, center));
        }
        Ok(System {
            centers,
            doctors,
            store: Arc::clone(&stores[0]),
            slot_count,
            servers,
        })
    }

    /// The (first) center's address.
    pub fn center(&self) -> SocketAddr {
        self.centers[0].0
    }

    /// Every center's address.
    pub fn centers(&self) -> Vec<SocketAddr> {
        self.centers.iter().map(|(addr, _)| *addr).collect()
    }

    /// Every doctor's name and address.
    pub fn doctors(&self) -> &[(String, SocketAddr)] {
        &self.doctors
    }

    /// The address of doctor `name`.
    pub fn doctor(&self, name: &str) -> Option<SocketAddr> {
        self.doctors
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
    }

    /// Every reserved slot and its holder, in index order, as the store
    /// has them.
    ///
    /// # Errors
    ///
    /// The store cannot answer.
    pub fn holders(&self) -> anyhow::Result<Vec<(u64, String)>> {
        Ok(self.store.holders()?)
    }

    /// How many slots the table has.
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Sessions open at the centers now.
    pub fn open_sessions(&self) -> usize {
        self.centers.iter().map(|(_, c)| c.open_sessions()).sum()
    }

    /// The centers' counts so far, added up.
    pub fn summary(&self) -> CenterSummary {
        let mut total = CenterSummary::default();
        for (_, center) in &self.centers {
            let s = center.summary();
            total.sessions += s.sessions;
            total.bookings += s.bookings;
            total.errors += s.errors;
            total.busy += s.busy;
        }
        total
    }

    /// Stops every server, waits for each, and returns the center's counts.
    ///
    /// # Errors
    ///
    /// A server failed or its thread panicked.
    pub fn stop(mut self) -> anyhow::Result<CenterSummary> {
        self.servers.stop()?;
        Ok(self.summary())
    }
}
