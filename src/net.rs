//! Addresses and sockets, for servers and clients alike: resolving
//! `HOST:PORT`, writing one, binding the center's listener and a doctor's
//! UDP socket the way they need, and a client's connected UDP socket.
//!
//! Nothing here speaks the protocol; it only sets sockets up, so the
//! servers and the clients can share it without importing each other.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, ToSocketAddrs, UdpSocket};

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

/// `HOST:PORT`, bracketing an IPv6 literal.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Where to connect to reach a socket bound to `addr`: the loopback
/// address of its family when it is bound to all addresses.
pub fn loopback_if_unspecified(addr: SocketAddr) -> SocketAddr {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}

/// A UDP socket on an ephemeral port of `peer`'s family, connected to
/// `peer`: it sends there by default and receives only `peer`'s datagrams.
///
/// # Errors
///
/// No socket could be bound, or connected.
pub fn connected_udp(peer: SocketAddr) -> std::io::Result<UdpSocket> {
    let any: SocketAddr = match peer {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(any)?;
    socket.connect(peer)?;
    Ok(socket)
}

/// Binds a TCP listener with a backlog deep enough for bursts of patients
/// (std's is 128) and `SO_REUSEADDR`, so a restarted center gets its port
/// back while old connections sit in TIME_WAIT. `what` names the server in
/// errors.
///
/// # Errors
///
/// The address does not resolve, or binding it fails (in use, no rights).
pub fn bind_tcp(what: &str, addr: &str) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let resolved = resolve(addr)?;
    let socket = Socket::new(Domain::for_address(resolved), Type::STREAM, None)
        .with_context(|| format!("creating a socket for {what} on {addr}"))?;
    socket.set_reuse_address(true)?;
    socket
        .bind(&resolved.into())
        .map_err(in_use_hint)
        .with_context(|| format!("binding {what} on {addr}"))?;
    socket
        .listen(1024)
        .with_context(|| format!("listening on {addr}"))?;
    Ok(socket.into())
}

/// A receive buffer deep enough for a burst of requests: the default
/// (about 200 KiB, a few hundred datagrams) drops requests under load, and
/// each drop costs a patient a retry timeout.
const UDP_RECEIVE_BUFFER: usize = 4 << 20;

/// Binds a server's UDP socket with room for bursts of datagrams. `what`
/// names the server in errors.
///
/// # Errors
///
/// The address does not resolve or cannot be bound.
pub fn bind_udp(what: &str, addr: &str) -> anyhow::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let resolved = resolve(addr)?;
    let socket = Socket::new(Domain::for_address(resolved), Type::DGRAM, None)
        .with_context(|| format!("creating a socket for {what}"))?;
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = socket.set_recv_buffer_size(UDP_RECEIVE_BUFFER);
    socket
        .bind(&resolved.into())
        .map_err(in_use_hint)
        .with_context(|| format!("binding {what} on {addr}"))?;
    Ok(socket.into())
}

/// An address in use says what to do about it.
fn in_use_hint(e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::AddrInUse {
        anyhow::anyhow!(
            "{e}: something (another medsim?) listens there, or a program that ended without \
             SO_REUSEADDR left its connections waiting on that port (they go within a minute; \
             `ss -tan sport = :PORT` shows which); port 0 (e.g. 127.0.0.1:0) picks a free one"
        )
    } else {
        e.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_brackets_ipv6_literals() {
        assert_eq!(host_port("127.0.0.1", 1), "127.0.0.1:1");
        assert_eq!(host_port("::1", 1), "[::1]:1");
        assert_eq!(host_port("[::1]", 1), "[::1]:1");
        assert_eq!(host_port("localhost", 1), "localhost:1");
    }

    #[test]
    fn unspecified_addresses_are_reached_on_loopback() {
        let any: SocketAddr = "0.0.0.0:5".parse().unwrap();
        assert_eq!(loopback_if_unspecified(any), "127.0.0.1:5".parse().unwrap());
        let v6: SocketAddr = "[::]:5".parse().unwrap();
        assert_eq!(loopback_if_unspecified(v6), "[::1]:5".parse().unwrap());
        let given: SocketAddr = "10.0.0.1:5".parse().unwrap();
        assert_eq!(loopback_if_unspecified(given), given);
    }

    #[test]
    fn resolve_names_what_is_wrong() {
        let err = resolve("no-port").unwrap_err();
        assert!(format!("{err:#}").contains("'no-port' is not a HOST:PORT address"));
    }
}
