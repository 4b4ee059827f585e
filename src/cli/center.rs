//! `medsim center`: its flags, and the command that runs a center from
//! them (with its store, its signals, and a live view when asked).

use std::sync::Arc;
use std::time::Duration;

use crate::center::{Center, Limits, Watcher};
use crate::console::Console;
use crate::data::Fixtures;
use crate::live::{self, Hub};
use crate::net;
use crate::protocol::MIN_MESSAGE_LIMIT;
use crate::shutdown::Shutdown;
use crate::store::{self, DEFAULT_LIST_CAP, StoreUrl};

fn parse_message_limit(text: &str) -> Result<usize, String> {
    let limit: usize = text.parse().map_err(|e| format!("{e}"))?;
    if limit < MIN_MESSAGE_LIMIT {
        return Err(format!(
            "must be at least {MIN_MESSAGE_LIMIT} bytes, the classic buffer"
        ));
    }
    Ok(limit)
}

/// Run the health center: authenticate patients, list free slots and
/// reserve one per session, over TCP.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on. Port 0 picks a free port; the first line
    /// printed names the address actually bound.
    #[arg(long, default_value = "127.0.0.1:21720", value_name = "ADDR")]
    pub listen: String,
    #[command(flatten)]
    pub fixtures: super::Fixtures,
    /// Print no phase messages (the bound address is still printed first).
    #[arg(long)]
    pub quiet: bool,
    /// Print passwords in the phase messages, as the classic demo did.
    #[arg(long)]
    pub show_passwords: bool,
    /// Most free slots listed in one answer (the lowest free; on a shared
    /// PostgreSQL database, from this center's part of the table).
    #[arg(long, default_value_t = DEFAULT_LIST_CAP, value_name = "N")]
    pub list_cap: usize,
    /// Longest message accepted, in bytes (at least 100); longer gets
    /// `error message too long`.
    #[arg(long, default_value_t = Limits::default().message_limit, value_parser = parse_message_limit, value_name = "BYTES")]
    pub max_message: usize,
    /// Time a session may take to send a whole message once its first byte
    /// came, before it is told `error ...` and dropped (slowloris).
    #[arg(long, default_value = "30s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub message_timeout: Duration,
    /// Time a session may stay silent between an answer and its next
    /// message (a person thinking at the prompt) before it is dropped.
    #[arg(long, default_value = "5m", value_parser = super::parse_duration, value_name = "DURATION")]
    pub idle_timeout: Duration,
    /// Sessions served at once; past it a new connection gets `error busy`.
    #[arg(long, default_value_t = Limits::default().max_sessions, value_name = "N")]
    pub max_sessions: usize,
    /// Sessions one peer address may hold at once (an IPv6 address counts
    /// by its /64); past it a new connection from there gets `error busy`,
    /// so one address never takes every seat [default: half of
    /// --max-sessions].
    #[arg(long, value_name = "N")]
    pub max_sessions_per_address: Option<usize>,
    /// Time a new connection may stay silent before its first message (a
    /// patient sends its login at once), at most the idle timeout.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub first_message_timeout: Duration,
    /// Where the reservations are kept: `memory` (gone at exit),
    /// `sqlite:FILE` (durable before each `DOCTOR PORT`; made and filled
    /// from the data files when missing), or `postgres://USER@HOST/DB`
    /// (shared by several centers; the schema is made when missing).
    #[arg(long, default_value = "memory", value_name = "URL", value_parser = super::parse_store)]
    pub store: StoreUrl,
    /// Serve a live view of this center in a browser at ADDR [default: a
    /// free loopback port]: its slot table filling, and the messages of the
    /// patients that connect, whatever program they are. The URL is
    /// printed.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:0")]
    pub live: Option<String>,
    /// Longest a reservation waits for the store (a commit, a statement,
    /// reconnecting to a restarted server) before the patient is told it
    /// is not confirmed (it is then cancelled if it did commit).
    /// PostgreSQL's statement_timeout is set to it unless the URL sets one.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub store_timeout: Duration,
    /// Time sessions in flight may run on after SIGINT or SIGTERM.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration, value_name = "DURATION")]
    pub drain_timeout: Duration,
}

impl Args {
    fn limits(&self) -> Limits {
        Limits {
            message_limit: self.max_message,
            message_timeout: self.message_timeout,
            idle_timeout: self.idle_timeout,
            first_message_timeout: self.first_message_timeout,
            max_sessions: self.max_sessions.max(1),
            // An explicit 0 would refuse everyone: take it as one.
            max_sessions_per_address: self.max_sessions_per_address.map_or(0, |n| n.max(1)),
            drain_timeout: self.drain_timeout,
            ..Limits::default()
        }
    }
}

/// The `center` subcommand.
///
/// # Errors
///
/// Bad data files, a bad flag, or an address that cannot be bound.
pub fn run(args: &Args) -> anyhow::Result<()> {
    let fixtures = Fixtures::load(&args.fixtures.source())?;
    let limits = args.limits();
    let limits_drain = limits.drain_timeout;
    let console = Console::standard(args.quiet);
    // Every recorded reservation is in the table before the ready line:
    // nothing is served before the store is open.
    let store = store::open_with(
        &args.store,
        &fixtures.slots,
        args.list_cap,
        args.store_timeout,
    )?;
    // A store that outlives the process says what it brought back.
    if args.store != StoreUrl::Memory {
        let held = store.holders()?;
        console.diagnostic(format_args!(
            "center: {}: {} held",
            store.describe(),
            crate::stats::plural(held.len() as u64, "reservation", "reservations")
        ));
    }
    let hub = args.live.as_ref().map(|_| Hub::for_center());
    if let Some(hub) = &hub {
        let held = store.holders()?;
        hub.publish(live::Event::Slots {
            slots: fixtures
                .slots
                .iter()
                .take(1000)
                .map(|s| live::SlotView {
                    index: s.index,
                    day: s.day.clone(),
                    time: s.time.clone(),
                    doctor: s.doctor.clone(),
                    holder: held
                        .iter()
                        .find(|(index, _)| *index == s.index)
                        .map(|(_, holder)| holder.clone()),
                })
                .collect(),
        });
    }
    let center = Center::new(fixtures.users, store, limits, console.clone())
        .show_passwords(args.show_passwords)
        .watched_by(hub.clone().map(|hub| Arc::new(hub) as Arc<dyn Watcher>))
        .showing_messages(true);
    let listener = net::bind_tcp("the center", &args.listen)?;
    let local = listener.local_addr()?;
    let center = Arc::new(center);
    let shutdown = Shutdown::new();
    shutdown.stop_on_signals_saying({
        let (center, drain, console) = (Arc::clone(&center), limits_drain, console.clone());
        move || {
            let open = center.open_sessions();
            if open > 0 {
                console.diagnostic(format_args!(
                    "center: stopping: waiting up to {} for {}; Ctrl-C again to stop now",
                    crate::duration::show_duration(drain),
                    crate::stats::plural(open as u64, "session", "sessions")
                ));
            }
        }
    })?;
    // The address line is printed even with --quiet: scripts wait for it.
    Console::standard(false).phases(&format!(
        "Phase 1: The Health Center Server has port number {} and IP address {}.\n",
        local.port(),
        local.ip()
    ));
    let live_view = match (&args.live, hub) {
        (Some(addr), Some(hub)) => {
            let listener = net::bind_tcp("the live view", addr)?;
            let server = live::serve(listener, hub, None, {
                let shutdown = shutdown.clone();
                move || shutdown.is_triggered()
            })?;
            console.diagnostic(format_args!("center: live view at {}", server.url()));
            Some(server)
        }
        _ => None,
    };
    let summary = center.serve(listener, &shutdown)?;
    drop(live_view);
    Console::standard(false).phases(&format!("center stopped: {summary}\n"));
    Ok(())
}
