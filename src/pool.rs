//! An elastic pool of worker threads for the center's sessions.
//!
//! Spawning a thread per connection costs tens of microseconds, and a fixed
//! pool lets one slow patient hold up the ones queued behind it. This pool
//! does neither: a job goes to an idle worker when there is one and to a new
//! thread otherwise, and a worker idle for `keep_alive` exits. The caller
//! bounds how many jobs run at once; the pool only runs them.
//!
//! Idle workers are counted in one atomic. Dispatch claims an idle worker by
//! decrementing it before sending; a worker that times out may leave only by
//! decrementing it too, so a claimed job always has a worker waiting for it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

type Job = Box<dyn FnOnce() + Send + 'static>;

/// Worker threads run sessions with small buffers; a small stack keeps
/// thousands of idle sessions cheap.
const WORKER_STACK: usize = 256 * 1024;

pub struct Pool {
    jobs: Option<Sender<Job>>,
    queue: Receiver<Job>,
    idle: Arc<AtomicUsize>,
    keep_alive: Duration,
    /// Each worker holds a clone; when all are gone, every worker has ended.
    alive: Option<Sender<()>>,
    all_ended: Receiver<()>,
    name: String,
}

impl Pool {
    /// A pool whose threads are named `name` and linger `keep_alive` idle.
    pub fn new(name: &str, keep_alive: Duration) -> Pool {
        let (jobs, queue) = crossbeam_channel::unbounded();
        let (alive, all_ended) = crossbeam_channel::bounded(0);
        Pool {
            jobs: Some(jobs),
            queue,
            idle: Arc::new(AtomicUsize::new(0)),
            keep_alive,
            alive: Some(alive),
            all_ended,
            name: name.to_owned(),
        }
    }

    /// Runs `job` on an idle worker, or on a new one when none is idle.
    ///
    /// # Errors
    ///
    /// The OS refused a new thread; the job is dropped.
    pub fn execute(&self, job: impl FnOnce() + Send + 'static) -> std::io::Result<()> {
        let job: Job = Box::new(job);
        if claim(&self.idle) {
            if let Some(jobs) = &self.jobs {
                // The queue's receiver lives in self, so this cannot fail.
                let _ = jobs.send(job);
            }
            return Ok(());
        }
        let queue = self.queue.clone();
        let idle = Arc::clone(&self.idle);
        let keep_alive = self.keep_alive;
        let alive = self.alive.clone();
        std::thread::Builder::new()
            .name(self.name.clone())
            .stack_size(WORKER_STACK)
            .spawn(move || {
                let _alive = alive;
                work(job, &queue, &idle, keep_alive);
            })
            .map(drop)
    }

    /// Stops taking jobs and waits until `deadline` for running ones to
    /// end. Returns true when every worker ended in time.
    pub fn finish(mut self, deadline: Instant) -> bool {
        self.jobs = None;
        self.alive = None;
        // Idle workers see the queue disconnect only once every sender is
        // gone; ours is dropped above and the workers hold none.
        matches!(
            self.all_ended.recv_deadline(deadline),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected)
        )
    }
}

fn claim(idle: &AtomicUsize) -> bool {
    idle.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
}

fn work(first: Job, queue: &Receiver<Job>, idle: &AtomicUsize, keep_alive: Duration) {
    run(first);
    let mut registered = false;
    loop {
        if !registered {
            idle.fetch_add(1, Ordering::AcqRel);
            registered = true;
        }
        match queue.recv_timeout(keep_alive) {
            Ok(job) => {
                // Dispatch consumed our registration when it claimed us.
                registered = false;
                run(job);
            }
            Err(RecvTimeoutError::Timeout) => {
                if claim(idle) {
                    return;
                }
                // Every idle registration is claimed: a job is on its way.
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// A panic in one job must not take the worker's later jobs with it.
fn run(job: Job) {
    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn concurrent_jobs_each_get_a_worker() {
        // Eight jobs that only finish together: a pool that queued any of
        // them behind another would deadlock here.
        let pool = Pool::new("test", Duration::from_secs(5));
        let barrier = Arc::new(Barrier::new(9));
        for _ in 0..8 {
            let b = Arc::clone(&barrier);
            pool.execute(move || {
                b.wait();
            })
            .unwrap();
        }
        barrier.wait();
        assert!(pool.finish(Instant::now() + Duration::from_secs(5)));
    }

    #[test]
    fn idle_workers_are_reused() {
        let pool = Pool::new("test", Duration::from_secs(5));
        let (done_tx, done_rx) = crossbeam_channel::unbounded();
        let mut threads = std::collections::HashSet::new();
        for _ in 0..50 {
            let tx = done_tx.clone();
            pool.execute(move || tx.send(std::thread::current().id()).unwrap())
                .unwrap();
            // Wait for the job, then for its worker to register as idle.
            threads.insert(done_rx.recv().unwrap());
            while pool.idle.load(Ordering::Acquire) == 0 {
                std::thread::yield_now();
            }
        }
        assert_eq!(threads.len(), 1, "one worker ran all fifty jobs");
        drop(done_tx);
        assert!(pool.finish(Instant::now() + Duration::from_secs(5)));
    }

    #[test]
    fn a_panicking_job_does_not_stop_the_pool() {
        let pool = Pool::new("test", Duration::from_secs(5));
        pool.execute(|| panic!("job panics on purpose")).unwrap();
        let (tx, rx) = crossbeam_channel::bounded(1);
        pool.execute(move || tx.send(7).unwrap()).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)), Ok(7));
        assert!(pool.finish(Instant::now() + Duration::from_secs(5)));
    }

    #[test]
    fn finish_reports_jobs_still_running_at_the_deadline() {
        let pool = Pool::new("test", Duration::from_secs(5));
        let (release_tx, release_rx) = crossbeam_channel::bounded::<()>(0);
        pool.execute(move || {
            let _ = release_rx.recv();
        })
        .unwrap();
        assert!(!pool.finish(Instant::now() + Duration::from_millis(50)));
        drop(release_tx);
    }
}
