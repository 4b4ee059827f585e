//! A cloneable stop signal for servers that block in std calls.
//!
//! Servers loop on blocking `accept` and `recv_from`, which no flag can
//! interrupt; so each server registers a waker (connect to itself, send
//! itself an empty datagram) that [`Shutdown::trigger`] runs once.
//! [`Shutdown::stop_on_signals`] ties it to SIGINT and SIGTERM for the
//! subcommands; what each server does on waking is its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use parking_lot::Mutex;

type Waker = Box<dyn FnOnce() + Send>;

/// One stop signal, shared by every server and session of a process.
#[derive(Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    triggered: AtomicBool,
    triggered_at: Mutex<Option<Instant>>,
    wakers: Mutex<Vec<Waker>>,
}

impl Shutdown {
    pub fn new() -> Shutdown {
        Shutdown::default()
    }

    /// Asks everything to stop and runs every registered waker once.
    pub fn trigger(&self) {
        self.inner
            .triggered_at
            .lock()
            .get_or_insert_with(Instant::now);
        self.inner.triggered.store(true, Ordering::SeqCst);
        let wakers = std::mem::take(&mut *self.inner.wakers.lock());
        for wake in wakers {
            wake();
        }
    }

    pub fn is_triggered(&self) -> bool {
        self.inner.triggered.load(Ordering::SeqCst)
    }

    /// When the signal was first given: every drain deadline counts from
    /// here, so sessions and the server that waits for them agree.
    pub fn triggered_at(&self) -> Option<Instant> {
        *self.inner.triggered_at.lock()
    }

    /// Registers `wake` to run on [`Shutdown::trigger`]; runs it now if the
    /// signal has already been given, so no waker is ever missed.
    pub fn on_trigger(&self, wake: impl FnOnce() + Send + 'static) {
        let mut wakers = self.inner.wakers.lock();
        // Checked under the lock that trigger() takes after setting the flag:
        // either trigger() will see this waker, or we see the flag.
        if self.is_triggered() {
            drop(wakers);
            wake();
        } else {
            wakers.push(Box::new(wake));
        }
    }
}

impl Shutdown {
    /// Triggers this signal on the first SIGINT or SIGTERM; a second one
    /// ends the process at once (status 130), as a person pressing Ctrl-C
    /// twice means.
    ///
    /// # Errors
    ///
    /// The handlers could not be installed.
    pub fn stop_on_signals(&self) -> std::io::Result<()> {
        self.stop_on_signals_saying(|| {})
    }

    /// As [`Shutdown::stop_on_signals`], running `on_first` right after the
    /// first signal (to say what the process now waits for).
    ///
    /// # Errors
    ///
    /// The handlers could not be installed.
    pub fn stop_on_signals_saying(
        &self,
        on_first: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])?;
        let shutdown = self.clone();
        std::thread::Builder::new()
            .name("medsim-signals".into())
            .spawn(move || {
                let mut received = signals.forever();
                if received.next().is_none() {
                    return;
                }
                shutdown.trigger();
                on_first();
                if received.next().is_some() {
                    // What was queued (the first signal's own line among
                    // it) goes out first, as far as the reader takes it.
                    crate::console::finish();
                    eprintln!("medsim: stopped at once");
                    std::process::exit(130);
                }
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn wakers_run_once_whether_registered_before_or_after() {
        let shutdown = Shutdown::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let r = Arc::clone(&runs);
        shutdown.on_trigger(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert!(!shutdown.is_triggered());
        shutdown.trigger();
        shutdown.trigger();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let r = Arc::clone(&runs);
        shutdown.clone().on_trigger(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert!(shutdown.is_triggered());
    }
}
