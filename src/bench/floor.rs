//! The floors: servers that answer a benchmark's exchanges with fixed
//! bytes (no parsing, no state, no logging), on pre-started threads, so a
//! medsim figure is read against what the machine can do at all.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::data::Slot;
use crate::net;
use crate::protocol::{self, Dialect};
use crate::system::DEFAULT_LIST_CAP;

/// A server of fixed answers: pre-started threads that each accept a
/// connection, answer every `\n`-terminated request with the next of
/// `answers`, and close after the last. No parsing, no state, no logging.
pub(super) struct Floor {
    pub(super) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Floor {
    pub(super) fn start(answers: Vec<Vec<u8>>, threads: usize) -> io::Result<Floor> {
        let listener = net::bind_tcp("a floor", "127.0.0.1:0").map_err(io::Error::other)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(answers);
        let mut handles = Vec::with_capacity(threads);
        for _ in 0..threads {
            let listener = listener.try_clone()?;
            let stop = Arc::clone(&stop);
            let answers = Arc::clone(&answers);
            handles.push(
                std::thread::Builder::new()
                    .name("floor-tcp".into())
                    .stack_size(64 * 1024)
                    .spawn(move || floor_worker(&listener, &answers, &stop))?,
            );
        }
        Ok(Floor {
            addr,
            stop,
            threads: handles,
        })
    }
}

fn floor_worker(listener: &TcpListener, answers: &[Vec<u8>], stop: &AtomicBool) {
    let mut chunk = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        let Ok((mut stream, _)) = listener.accept() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let mut step = 0;
        'session: while step < answers.len() {
            let Ok(n) = stream.read(&mut chunk) else {
                break;
            };
            if n == 0 {
                break;
            }
            for _ in chunk[..n].iter().filter(|&&b| b == b'\n') {
                if stream.write_all(&answers[step]).is_err() {
                    break 'session;
                }
                step += 1;
            }
        }
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Each worker blocks in accept(): one connection wakes each.
        for _ in &self.threads {
            let _ = TcpStream::connect(self.addr);
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A UDP server of one fixed answer to every datagram, on one thread as a
/// medsim doctor is.
pub(super) struct UdpFloor {
    pub(super) addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpFloor {
    pub(super) fn start(answer: &'static [u8]) -> io::Result<UdpFloor> {
        let socket = UdpSocket::bind("127.0.0.1:0")?;
        let addr = socket.local_addr()?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("floor-udp".into())
            .spawn(move || {
                let mut buf = [0u8; 2048];
                while !stopping.load(Ordering::Relaxed) {
                    if let Ok((_, from)) = socket.recv_from(&mut buf) {
                        let _ = socket.send_to(answer, from);
                    }
                }
            })?;
        Ok(UdpFloor {
            addr,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for UdpFloor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The medsim list answer for the lowest [`DEFAULT_LIST_CAP`] of `slots`,
/// as the floor sends it.
pub(super) fn list_answer(slots: &[Slot]) -> Vec<u8> {
    let listings = slots
        .iter()
        .take(DEFAULT_LIST_CAP)
        .map(|s| (s.index, s.day.as_str(), s.time.as_str()));
    protocol::encode(Dialect::Line, &protocol::FreeList::from_rows(listings).line)
}
