//! What the kernel says of the sockets on a port, read from `/proc` (the
//! `procfs` crate) rather than learned by connecting: a program check
//! starts is ready when its own listening (TCP) or bound (UDP) socket can
//! be seen, and alive while it still holds it. Connecting to find out is
//! itself an input, and some classic centers die of it (the seed center
//! crashes when a client connects and closes without a word).
//!
//! Also the TIME_WAIT leftovers of a dead center: a program that does not
//! set `SO_REUSEADDR` cannot bind its port again while they last (a
//! minute), and check restarts such programs at once. On Linux a TIME_WAIT
//! socket that receives an in-window RST goes away ([`clear_time_wait`]).
//!
//! Everything here sees the network namespace check runs in, which is the
//! one of the programs it starts.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use procfs::net::{TcpNetEntry, TcpState, UdpNetEntry};

/// The transport of a server's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// A listening TCP socket (the center).
    Tcp,
    /// A bound UDP socket (a doctor).
    Udp,
}

fn tcp_entries() -> Vec<TcpNetEntry> {
    let mut entries = procfs::net::tcp().unwrap_or_default();
    entries.extend(procfs::net::tcp6().unwrap_or_default());
    entries
}

fn udp_entries() -> Vec<UdpNetEntry> {
    let mut entries = procfs::net::udp().unwrap_or_default();
    entries.extend(procfs::net::udp6().unwrap_or_default());
    entries
}

/// Whether a socket bound to `bound` serves `addr`: the same port, and the
/// same address or a wildcard.
fn serves(bound: SocketAddr, addr: SocketAddr) -> bool {
    bound.port() == addr.port()
        && (bound.ip() == addr.ip()
            || bound.ip().is_unspecified()
            || v4_in_v6(bound.ip(), addr.ip()))
}

fn v4_in_v6(bound: IpAddr, wanted: IpAddr) -> bool {
    match (bound, wanted) {
        (IpAddr::V6(v6), IpAddr::V4(v4)) => v6.to_ipv4_mapped() == Some(v4),
        _ => false,
    }
}

/// The inodes of the sockets that serve `addr` over `transport`: listening
/// TCP sockets, or UDP sockets not connected to a peer.
fn serving_inodes(transport: Transport, addr: SocketAddr) -> Vec<u64> {
    match transport {
        Transport::Tcp => tcp_entries()
            .into_iter()
            .filter(|e| e.state == TcpState::Listen && serves(e.local_address, addr))
            .map(|e| e.inode)
            .collect(),
        Transport::Udp => udp_entries()
            .into_iter()
            .filter(|e| e.remote_address.port() == 0 && serves(e.local_address, addr))
            .map(|e| e.inode)
            .collect(),
    }
}

/// Whether anything serves `addr` over `transport` on this machine.
pub fn served(transport: Transport, addr: SocketAddr) -> bool {
    !serving_inodes(transport, addr).is_empty()
}

/// The socket inodes held by the processes of process group `pgid`.
fn group_sockets(pgid: i32) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    let Ok(processes) = procfs::process::all_processes() else {
        return inodes;
    };
    for process in processes.flatten() {
        if process.stat().map_or(true, |s| s.pgrp != pgid) {
            continue;
        }
        let Ok(fds) = process.fd() else { continue };
        for fd in fds.flatten() {
            if let procfs::process::FDTarget::Socket(inode) = fd.target {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

/// Whether a process of group `pgid` holds a socket serving `addr`.
pub fn served_by_group(transport: Transport, addr: SocketAddr, pgid: i32) -> bool {
    let serving = serving_inodes(transport, addr);
    if serving.is_empty() {
        return false;
    }
    let held = group_sockets(pgid);
    serving.iter().any(|inode| held.contains(inode))
}

/// Sends an RST to every TIME_WAIT socket left on `port` by a dead
/// server, so the server can bind the port again without `SO_REUSEADDR`.
///
/// For each one it connects from the TIME_WAIT's peer address and port to
/// the dead server's: the TIME_WAIT answers the SYN with an ACK of its own
/// sequence, this end's kernel answers that with an in-window RST, and the
/// TIME_WAIT is gone (RFC 1337's hazard, which Linux accepts unless
/// `net.ipv4.tcp_rfc1337` is set). Returns how many it tried.
pub fn clear_time_wait(port: u16) -> usize {
    let leftovers: Vec<TcpNetEntry> = tcp_entries()
        .into_iter()
        .filter(|e| e.state == TcpState::TimeWait && e.local_address.port() == port)
        .collect();
    for entry in &leftovers {
        let _ = reset_from(entry.remote_address, entry.local_address);
    }
    leftovers.len()
}

fn reset_from(peer: SocketAddr, server: SocketAddr) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(peer), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.bind(&peer.into())?;
    // Refused or timed out: either way the SYN went and the RST followed.
    let _ = socket.connect_timeout(&server.into(), Duration::from_millis(200));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, UdpSocket};

    #[test]
    fn a_listener_is_seen_by_port_and_by_its_process_group() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test listener");
        let addr = listener.local_addr().expect("its address");
        assert!(served(Transport::Tcp, addr));
        assert!(!served(Transport::Udp, addr));
        // SAFETY: getpgrp(2) has no preconditions.
        let pgid = unsafe { libc::getpgrp() };
        assert!(served_by_group(Transport::Tcp, addr, pgid));
        assert!(!served_by_group(Transport::Tcp, addr, pgid + 1_000_000));
        drop(listener);
        assert!(!served(Transport::Tcp, addr));
    }

    #[test]
    fn a_bound_udp_socket_is_seen() {
        let socket = UdpSocket::bind("127.0.0.1:0").expect("bind a test socket");
        let addr = socket.local_addr().expect("its address");
        assert!(served(Transport::Udp, addr));
        let wildcard = UdpSocket::bind("0.0.0.0:0").expect("bind a wildcard socket");
        let port = wildcard.local_addr().expect("its address").port();
        assert!(served(
            Transport::Udp,
            SocketAddr::from(([127, 0, 0, 1], port))
        ));
    }

    #[test]
    fn time_wait_left_by_a_server_that_closed_first_is_cleared() {
        use std::io::Read as _;
        use std::net::TcpStream;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test listener");
        let addr = listener.local_addr().expect("its address");
        let mut client = TcpStream::connect(addr).expect("connect");
        let (served, _) = listener.accept().expect("accept");
        // The server closes first: its side will sit in TIME_WAIT.
        drop(served);
        let mut rest = Vec::new();
        let _ = client.read_to_end(&mut rest);
        drop(client);
        drop(listener);
        let time_wait = || {
            tcp_entries()
                .iter()
                .filter(|e| e.state == TcpState::TimeWait && e.local_address == addr)
                .count()
        };
        assert_eq!(time_wait(), 1, "the server's side waits in TIME_WAIT");
        assert_eq!(clear_time_wait(addr.port()), 1);
        assert_eq!(time_wait(), 0, "the RST took it away");
    }
}
