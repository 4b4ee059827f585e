//! How the center holds its sessions: a connection closed without a word
//! (some classic centers die of it), and whether a second session is
//! served while the first is open.

use std::net::TcpStream;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::check::harness::{Outcome, Run, fail, pass, skip, warn};

/// How long a second session's login may wait while the first is open
/// before the center counts as serving one session at a time.
const SECOND_SESSION_WAIT: Duration = Duration::from_secs(1);

/// A client connects and closes without a word: the center must go on
/// (the harness blames the close if it dies).
pub(in crate::check) fn silent_close(run: &mut Run) -> Outcome {
    let center = run.centers[0];
    match TcpStream::connect_timeout(&center, run.config().timeout) {
        Ok(stream) => {
            drop(stream);
            pass("connected and closed without sending a word")
        }
        Err(e) => fail(format!("cannot connect to {center}: {e}")),
    }
}

/// While one session is logged in and open, a second logs in. A center
/// that answers the second only after the first closes serves one session
/// at a time: a departure (PROTOCOL.md: many at once), noted so the race
/// and the shared-flag cases take turns instead of timing out.
pub(in crate::check) fn concurrent(run: &mut Run) -> Outcome {
    let config = run.config();
    let mut first = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    if let Err(e) = first.log_in() {
        return fail(format!("the first session: {e}"));
    }
    let mut second = match run.open() {
        Ok(c) => c,
        Err(e) => return fail(format!("a second session while the first is open: {e}")),
    };
    let wait = SECOND_SESSION_WAIT.min(config.timeout);
    let _ = second.link.set_answer_timeout(wait);
    if second.log_in().is_ok() {
        return pass("a second session logged in while the first was open");
    }
    drop(first);
    let _ = second.link.set_answer_timeout(config.timeout);
    match second.receive() {
        Ok(answer) => {
            run.shared.one_at_a_time.store(true, Ordering::Relaxed);
            warn(format!(
                "a second session's login got no answer in {wait:?} while the first was open, \
                 and '{}' once it closed: the center serves one session at a time \
                 (PROTOCOL.md: many at once); it cannot double-book, so the race takes turns",
                crate::check::session::quote(&answer)
            ))
        }
        Err(e) if run.center_dead() => skip(format!(
            "the center died when the first session closed, so whether it serves two \
             sessions at once cannot be told: {e}"
        )),
        Err(e) => fail(format!(
            "a second session got no answer, not even after the first closed: {e}"
        )),
    }
}
