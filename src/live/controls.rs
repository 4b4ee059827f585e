//! Pause, step and pace for the simulated patients, shared by the page
//! (which sets them) and the patient threads (which obey them).
//!
//! Each patient calls [`Controls::before_message`] before it sends a
//! message: that waits the pace, then, while paused, waits for a step (one
//! message through, whoever takes it first) or a resume. It always returns
//! once the stop condition holds, so a paused run still shuts down.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// How long a wait goes without looking at the stop condition, for stop
/// signals that nobody announces with [`Controls::wake`].
const STOP_POLL: Duration = Duration::from_millis(100);

/// Shared pause / step / pace state. Clones share it.
#[derive(Clone)]
pub struct Controls {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    changed: Condvar,
    stop: Box<dyn Fn() -> bool + Send + Sync>,
}

#[derive(Default)]
struct State {
    paused: bool,
    /// Messages a step has let through and nobody has taken yet.
    permits: u64,
    pace: Duration,
    /// Patients waiting at the pause.
    waiting: usize,
    /// Where steps come from, when only one place gives them (the page
    /// only, when stdin is not a terminal): shown on the page.
    step_source: Option<&'static str>,
}

impl Controls {
    /// Running, no pace. `stop` is asked while waiting: once it returns
    /// true every wait ends (e.g. `move || shutdown.is_triggered()`; call
    /// [`Controls::wake`] from `Shutdown::on_trigger` for an immediate
    /// return instead of within 100 ms).
    pub fn new(stop: impl Fn() -> bool + Send + Sync + 'static) -> Controls {
        Controls {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                changed: Condvar::new(),
                stop: Box::new(stop),
            }),
        }
    }

    /// Waits the pace, then, while paused, for a step or a resume; returns
    /// at once when the stop condition holds.
    pub fn before_message(&self) {
        let inner = &*self.inner;
        let start = Instant::now();
        let mut state = inner.state.lock();
        // The pace is read again after each wake, so changing it takes
        // effect for patients already waiting.
        loop {
            let due = start + state.pace;
            let now = Instant::now();
            if now >= due || (inner.stop)() {
                break;
            }
            inner
                .changed
                .wait_until(&mut state, due.min(now + STOP_POLL));
        }
        state.waiting += 1;
        while state.paused && state.permits == 0 && !(inner.stop)() {
            inner.changed.wait_for(&mut state, STOP_POLL);
        }
        state.waiting -= 1;
        if state.paused && state.permits > 0 {
            state.permits -= 1;
        }
    }

    /// Holds every patient at its next message.
    pub fn pause(&self) {
        self.inner.state.lock().paused = true;
        self.inner.changed.notify_all();
    }

    /// Lets everyone go; steps not yet taken are forgotten.
    pub fn resume(&self) {
        let mut state = self.inner.state.lock();
        state.paused = false;
        state.permits = 0;
        drop(state);
        self.inner.changed.notify_all();
    }

    /// Lets exactly one waiting (or the next) message through and stays
    /// paused; pauses first if running.
    pub fn step(&self) {
        let mut state = self.inner.state.lock();
        state.paused = true;
        state.permits += 1;
        drop(state);
        self.inner.changed.notify_all();
    }

    /// Sets the wait before each message.
    pub fn set_pace(&self, pace: Duration) {
        self.inner.state.lock().pace = pace;
        self.inner.changed.notify_all();
    }

    /// Says where steps come from (e.g. `"page"`: the page only), for the
    /// page to show.
    pub fn set_step_source(&self, source: &'static str) {
        self.inner.state.lock().step_source = Some(source);
    }

    /// Where steps come from, when it was said.
    pub fn step_source(&self) -> Option<&'static str> {
        self.inner.state.lock().step_source
    }

    /// Wakes every waiting patient to look at the stop condition now.
    pub fn wake(&self) {
        self.inner.changed.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        self.inner.state.lock().paused
    }

    pub fn pace(&self) -> Duration {
        self.inner.state.lock().pace
    }

    /// Patients held at the pause right now.
    pub fn waiting(&self) -> usize {
        self.inner.state.lock().waiting
    }

    /// Steps granted and not yet taken.
    pub fn pending_steps(&self) -> u64 {
        self.inner.state.lock().permits
    }
}

impl std::fmt::Debug for Controls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("Controls")
            .field("paused", &state.paused)
            .field("permits", &state.permits)
            .field("pace", &state.pace)
            .field("waiting", &state.waiting)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};

    const WAIT: Duration = Duration::from_secs(10);

    /// Spins (yielding) until `cond`, at most `WAIT`: the state it waits
    /// for is reached by other threads, there is no event to block on.
    fn until(what: &str, cond: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::yield_now();
        }
    }

    fn patients(controls: &Controls, n: usize) -> crossbeam_channel::Receiver<usize> {
        let (tx, rx) = crossbeam_channel::unbounded();
        for i in 0..n {
            let (controls, tx) = (controls.clone(), tx.clone());
            std::thread::spawn(move || {
                controls.before_message();
                let _ = tx.send(i);
            });
        }
        rx
    }

    #[test]
    fn running_lets_everyone_through() {
        let controls = Controls::new(|| false);
        let through = patients(&controls, 3);
        for _ in 0..3 {
            through.recv_timeout(WAIT).expect("not held");
        }
    }

    #[test]
    fn a_step_lets_exactly_one_message_through() {
        let controls = Controls::new(|| false);
        controls.pause();
        let through = patients(&controls, 3);
        until("three waiting", || controls.waiting() == 3);
        assert!(through.try_recv().is_err());

        controls.step();
        through.recv_timeout(WAIT).expect("one through");
        // The step is spent and the others are still held: no second
        // message can pass until the next step.
        until("the step taken", || controls.waiting() == 2);
        assert_eq!(controls.pending_steps(), 0);
        assert!(through.try_recv().is_err());

        controls.step();
        through.recv_timeout(WAIT).expect("a second through");
        until("one left", || controls.waiting() == 1);
        assert!(through.try_recv().is_err());

        controls.resume();
        through.recv_timeout(WAIT).expect("the last through");
        assert!(!controls.is_paused());
    }

    #[test]
    fn stop_ends_a_pause() {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let controls = Controls::new(move || flag.load(Ordering::SeqCst));
        controls.pause();
        let through = patients(&controls, 2);
        until("both waiting", || controls.waiting() == 2);
        stop.store(true, Ordering::SeqCst);
        controls.wake();
        through.recv_timeout(WAIT).expect("released by stop");
        through.recv_timeout(WAIT).expect("released by stop");
    }

    #[test]
    fn stop_ends_a_long_pace_even_unannounced() {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let controls = Controls::new(move || flag.load(Ordering::SeqCst));
        controls.set_pace(Duration::from_secs(3600));
        let through = patients(&controls, 1);
        stop.store(true, Ordering::SeqCst);
        through
            .recv_timeout(WAIT)
            .expect("the stop poll ends the pace");
    }

    #[test]
    fn the_pace_is_waited_and_can_be_shortened_while_waiting() {
        let controls = Controls::new(|| false);
        controls.set_pace(Duration::from_millis(20));
        let start = Instant::now();
        controls.before_message();
        assert!(start.elapsed() >= Duration::from_millis(20));

        controls.set_pace(Duration::from_secs(3600));
        let through = patients(&controls, 1);
        controls.set_pace(Duration::ZERO);
        through.recv_timeout(WAIT).expect("the new pace applies");
    }
}
