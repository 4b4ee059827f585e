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
use crate::slots::SlotBook;

pub use crate::center::{Limits, Summary as CenterSummary};
pub use crate::slots::DEFAULT_LIST_CAP;

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
    /// Slots reserved before the first session, with their holders.
    pub holders: Vec<(u64, String)>,
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
            limits: Limits::default(),
            list_cap: DEFAULT_LIST_CAP,
            console: Console::silent(),
            center_listen: "127.0.0.1:0".into(),
            doctor_host: "127.0.0.1".into(),
            show_passwords: false,
        }
    }
}

/// A running center and its doctors.
pub struct System {
    center: SocketAddr,
    doctors: Vec<(String, SocketAddr)>,
    center_handle: Arc<Center>,
    book: SlotBook,
    slot_count: usize,
    shutdown: Shutdown,
    threads: Vec<JoinHandle<std::io::Result<()>>>,
}

impl System {
    /// Binds every socket, then starts serving: once this returns, every
    /// party accepts.
    ///
    /// # Errors
    ///
    /// An address that cannot be bound, or a thread that cannot start.
    pub fn start(options: Options) -> anyhow::Result<System> {
        let shutdown = Shutdown::new();
        let mut threads = Vec::new();
        let mut doctors = Vec::new();
        for d in &options.doctors {
            let what = format!("doctor {}", d.name);
            let socket = net::bind_udp(&what, &net::host_port(&options.doctor_host, 0))?;
            let addr = net::loopback_if_unspecified(socket.local_addr()?);
            doctors.push((d.name.clone(), addr));
            let server = Doctor::new(&d.name, d.fees.clone(), options.console.clone());
            let shutdown = shutdown.clone();
            threads.push(
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
        let book = match options.slots {
            Slots::Data => SlotBook::from_slots(
                options.data_slots.into_iter().map(port_of),
                options.list_cap,
            ),
            Slots::Given(slots) => {
                SlotBook::from_slots(slots.into_iter().map(port_of), options.list_cap)
            }
            Slots::Generated(count) => {
                SlotBook::from_slots(data::generated_slots(count, &ports), options.list_cap)
            }
        };
        // Every slot is free until the holders are restored.
        let slot_count = book.free_count();
        book.restore(&options.holders);
        let listener = net::bind_tcp("the center", &options.center_listen)?;
        let center_addr = net::loopback_if_unspecified(listener.local_addr()?);
        let center = Arc::new(
            Center::new(options.users, book.clone(), options.limits, options.console)
                .show_passwords(options.show_passwords),
        );
        {
            let center = Arc::clone(&center);
            let shutdown = shutdown.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("medsim-center".into())
                    .spawn(move || center.serve(listener, &shutdown).map(drop))
                    .context("starting the center")?,
            );
        }
        Ok(System {
            center: center_addr,
            doctors,
            center_handle: center,
            book,
            slot_count,
            shutdown,
            threads,
        })
    }

    /// The center's address.
    pub fn center(&self) -> SocketAddr {
        self.center
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

    /// Every reserved slot and its holder, in index order, as the center's
    /// table has them.
    pub fn holders(&self) -> Vec<(u64, String)> {
        self.book.holders()
    }

    /// How many slots are free now.
    pub fn free_count(&self) -> usize {
        self.book.free_count()
    }

    /// How many slots the table has.
    pub fn slot_count(&self) -> usize {
        self.slot_count
    }

    /// Sessions open at the center now.
    pub fn open_sessions(&self) -> usize {
        self.center_handle.open_sessions()
    }

    /// The center's counts so far.
    pub fn summary(&self) -> CenterSummary {
        self.center_handle.summary()
    }

    /// Stops every server, waits for each, and returns the center's counts.
    ///
    /// # Errors
    ///
    /// A server failed or its thread panicked.
    pub fn stop(mut self) -> anyhow::Result<CenterSummary> {
        self.shutdown.trigger();
        for thread in self.threads.drain(..) {
            thread
                .join()
                .map_err(|_| anyhow::anyhow!("a server thread panicked"))?
                .context("serving")?;
        }
        Ok(self.center_handle.summary())
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.shutdown.trigger();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
