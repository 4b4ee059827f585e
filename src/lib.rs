//! medsim: the classic online medical appointment system (a health center
//! over TCP, two doctors over UDP, patients that book a slot and get a
//! quote), built to be correct under concurrency and calm under bad input.
//!
//! The wire contract is `PROTOCOL.md` in the shared folder. The modules:
//! [`protocol`] (messages and framing, no I/O), [`data`] (the classic data
//! files), [`slots`] (the slot table), [`ledger`] (its journal on disk),
//! [`center`], [`doctor`] and [`patient`] (the three parties and their
//! subcommands), [`sim`] (all of them in one process, or a crowd of
//! patients against a system elsewhere), [`check`] (conformance cases
//! against any implementation), [`trace`] (sequence diagrams), [`bench`]
//! (the benchmark against minimal servers), and the
//! plumbing they share: [`shutdown`], [`console`], [`rng`].
//! `main.rs` holds only the CLI.

pub mod bench;
pub mod center;
pub mod check;
pub mod console;
pub mod data;
pub mod doctor;
pub mod ledger;
pub mod live;
pub mod patient;
pub mod protocol;
pub mod rng;
pub mod shutdown;
pub mod sim;
pub mod slots;
pub mod trace;

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use anyhow::Context as _;

/// Resolves `HOST:PORT` to its first address.
///
/// # Errors
///
/// The text is not an address, or the name does not resolve.
pub fn resolve(addr: &str) -> anyhow::Result<SocketAddr> {
    addr.to_socket_addrs()
        .with_context(|| format!("'{addr}' is not a HOST:PORT address"))?
        .next()
        .with_context(|| format!("'{addr}' resolves to no address"))
}

/// A positive, finite number of seconds from a flag.
///
/// # Errors
///
/// Zero, negative, or not finite.
pub fn seconds(flag: &str, value: f64) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        value.is_finite() && value > 0.0,
        "{flag} must be a positive number of seconds, not {value}"
    );
    Duration::try_from_secs_f64(value).with_context(|| format!("{flag} {value} is out of range"))
}

/// A UDP socket on an ephemeral port of `peer`'s family, connected to
/// `peer`: it sends there by default and receives only `peer`'s datagrams.
///
/// # Errors
///
/// No socket could be bound, or connected.
pub fn connected_udp(peer: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any)?;
    socket.connect(peer)?;
    Ok(socket)
}

/// The `p` quantile (0 to 1) of `sorted` by nearest rank; `None` when it is
/// empty.
pub fn nearest_rank<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied()
}

/// A number field of `/proc/PID/status` (e.g. `VmHWM:`, `Threads:`), for
/// `pid` `self` or a process id; `None` off Linux or for a field not there.
pub fn proc_status(pid: &str, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Parses `line` or `classic` for `--dialect`.
///
/// # Errors
///
/// Any other word.
pub fn parse_dialect(text: &str) -> Result<protocol::Dialect, String> {
    match text {
        "line" => Ok(protocol::Dialect::Line),
        "classic" => Ok(protocol::Dialect::Classic),
        other => Err(format!("'{other}' is not a dialect: use line or classic")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_picks_the_ranked_value() {
        let sorted = [10, 20, 30, 40];
        assert_eq!(nearest_rank(&sorted, 0.5), Some(20));
        assert_eq!(nearest_rank(&sorted, 0.99), Some(40));
        assert_eq!(nearest_rank(&sorted, 0.0), Some(10));
        assert_eq!(nearest_rank::<u32>(&[], 0.5), None);
    }

    #[test]
    fn proc_status_reads_this_process() {
        if std::path::Path::new("/proc/self/status").exists() {
            assert!(proc_status("self", "Threads:").is_some_and(|n| n >= 1));
            assert_eq!(proc_status("self", "NoSuchField:"), None);
        }
    }
}
