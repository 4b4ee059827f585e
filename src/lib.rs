//! medsim: the classic online medical appointment system (a health center
//! over TCP, two doctors over UDP, patients that book a slot and get a
//! quote), built to be correct under concurrency and calm under bad input.
//!
//! The wire contract is `docs/PROTOCOL.md`. The house, bottom up:
//! - [`protocol`] messages, framing and both readings of an answer (pure);
//!   [`data`] the classic data files; [`net`] addresses and sockets;
//! - the servers: [`store`] (the slot table and where it is kept: memory,
//!   SQLite, PostgreSQL) under [`center`]; [`doctor`]; [`system`] runs
//!   both in this process;
//! - [`client`], the one client of the protocol, under [`patient`] (the
//!   person-facing one), [`sim`], [`check`] and [`bench`](mod@bench);
//! - the classroom: [`live`] (a live page of a running system, and the
//!   same picture as an HTML report);
//! - the command line: [`cli`], every flag of every subcommand, read into
//!   the plain options the modules above take (no other module reads a
//!   flag: `tests/walls.rs` holds the wall);
//! - plumbing: [`console`], [`duration`], [`shutdown`], [`stats`],
//!   [`table`], [`trace`], [`rng`].
//!
//! `main.rs` holds only the command line's dispatch.

pub mod bench;
pub mod center;
pub mod check;
pub mod cli;
pub mod client;
pub mod console;
pub mod data;
pub mod doctor;
pub mod duration;
pub mod live;
pub mod net;
pub mod patient;
pub mod protocol;
pub mod rng;
pub mod shutdown;
pub mod sim;
pub mod stats;
pub mod store;
pub mod system;
pub mod table;
pub mod trace;
