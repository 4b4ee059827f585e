//! Small recording proxies for the patient check: a TCP one in front of
//! medsim's center and a UDP one in front of each doctor, each keeping
//! every chunk or datagram that passes, in order, with its direction. The
//! servers need no change to be watched, and what is judged is what was on
//! the wire.

use std::io::{self, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use crate::net;

/// Where a recorded message went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// The k-th TCP connection to the center (from 0).
    Center(usize),
    /// A doctor, by name.
    Doctor(String),
}

/// One chunk or datagram that passed a proxy.
#[derive(Debug, Clone)]
pub struct Passed {
    pub link: Link,
    /// From the program to the server.
    pub to_server: bool,
    pub bytes: Vec<u8>,
}

/// Everything the proxies saw, in order.
#[derive(Debug, Clone, Default)]
pub struct Record(Arc<Mutex<Vec<Passed>>>);

impl Record {
    fn push(&self, link: Link, to_server: bool, bytes: &[u8]) {
        self.0.lock().push(Passed {
            link,
            to_server,
            bytes: bytes.to_vec(),
        });
    }

    /// A copy of what was seen so far.
    pub fn passed(&self) -> Vec<Passed> {
        self.0.lock().clone()
    }
}

/// Running proxies, stopped (and joined) on drop.
pub struct Proxies {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pub record: Record,
}

impl Proxies {
    pub fn new() -> Proxies {
        Proxies {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            record: Record::default(),
        }
    }

    /// A TCP proxy at `listen` in front of `upstream`; its bound address.
    ///
    /// # Errors
    ///
    /// `listen` cannot be bound.
    pub fn tcp(&mut self, listen: &str, upstream: SocketAddr) -> anyhow::Result<SocketAddr> {
        let listener = net::bind_tcp("the center (for the patient)", listen)?;
        listener.set_nonblocking(true)?;
        let addr = net::loopback_if_unspecified(listener.local_addr()?);
        let (stop, record) = (Arc::clone(&self.stop), self.record.clone());
        self.threads.push(std::thread::spawn(move || {
            accept_loop(&listener, upstream, &stop, &record);
        }));
        Ok(addr)
    }

    /// A UDP proxy at `listen` in front of doctor `name` at `upstream`;
    /// its bound address.
    ///
    /// # Errors
    ///
    /// `listen` cannot be bound.
    pub fn udp(
        &mut self,
        name: &str,
        listen: &str,
        upstream: SocketAddr,
    ) -> anyhow::Result<SocketAddr> {
        let socket = net::bind_udp(&format!("doctor {name} (for the patient)"), listen)?;
        socket.set_read_timeout(Some(Duration::from_millis(20)))?;
        let addr = net::loopback_if_unspecified(socket.local_addr()?);
        let (stop, record, name) = (Arc::clone(&self.stop), self.record.clone(), name.to_owned());
        self.threads.push(std::thread::spawn(move || {
            relay_datagrams(&socket, &name, upstream, &stop, &record);
        }));
        Ok(addr)
    }
}

impl Drop for Proxies {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn accept_loop(listener: &TcpListener, upstream: SocketAddr, stop: &AtomicBool, record: &Record) {
    let mut pumps = Vec::new();
    let mut count = 0;
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                for (from, to, to_server) in [
                    (client.try_clone(), server.try_clone(), true),
                    (server.try_clone(), client.try_clone(), false),
                ] {
                    let (Ok(from), Ok(to)) = (from, to) else {
                        continue;
                    };
                    let record = record.clone();
                    let link = Link::Center(count);
                    pumps.push(std::thread::spawn(move || {
                        pump(from, to, &link, to_server, &record);
                    }));
                }
                count += 1;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // A wake-up to see the stop flag, as the servers' loops do.
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    for pump in pumps {
        let _ = pump.join();
    }
}

fn pump(mut from: TcpStream, mut to: TcpStream, link: &Link, to_server: bool, record: &Record) {
    // Bounded, so that a program that never closes does not hold the
    // proxy's end of the check.
    let _ = from.set_read_timeout(Some(Duration::from_secs(60)));
    let mut buf = [0u8; 65536];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                record.push(link.clone(), to_server, &buf[..n]);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

fn relay_datagrams(
    socket: &UdpSocket,
    name: &str,
    upstream: SocketAddr,
    stop: &AtomicBool,
    record: &Record,
) {
    let mut buf = [0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = socket.recv_from(&mut buf) else {
            continue;
        };
        record.push(Link::Doctor(name.to_owned()), true, &buf[..n]);
        let Ok(link) = net::connected_udp(upstream) else {
            continue;
        };
        let _ = link.set_read_timeout(Some(Duration::from_secs(2)));
        if link.send(&buf[..n]).is_err() {
            continue;
        }
        let mut answer = [0u8; 65536];
        if let Ok(m) = link.recv(&mut answer) {
            record.push(Link::Doctor(name.to_owned()), false, &answer[..m]);
            let _ = socket.send_to(&answer[..m], from);
        }
    }
}
