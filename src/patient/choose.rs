//! The choice of a slot: a person at a prompt (reminded before the
//! center stops waiting), a scripted index, the first listed, or a random
//! one for `simulate`.

use std::io::{self, BufRead, Write};
use std::time::Duration;

use crate::protocol::{self, Listing};
use crate::rng::SplitMix64;

/// Picks one of the listed slots.
pub trait Chooser {
    /// The index to send, or `None` to give up.
    ///
    /// # Errors
    ///
    /// The chooser's own input failed.
    fn choose(&mut self, listings: &[Listing]) -> io::Result<Option<u64>>;
}

/// Always this index, listed or not: the center has the last word (a
/// scripted `--select`, or `simulate --choice same`).
pub struct Fixed(pub u64);

impl Chooser for Fixed {
    fn choose(&mut self, _listings: &[Listing]) -> io::Result<Option<u64>> {
        Ok(Some(self.0))
    }
}

/// The lowest listed index.
pub struct First;

impl Chooser for First {
    fn choose(&mut self, listings: &[Listing]) -> io::Result<Option<u64>> {
        Ok(listings.iter().map(|l| l.index).min())
    }
}

/// A listed index picked at random.
pub struct Random(pub SplitMix64);

impl Chooser for Random {
    fn choose(&mut self, listings: &[Listing]) -> io::Result<Option<u64>> {
        if listings.is_empty() {
            return Ok(None);
        }
        let at = self.0.below(listings.len() as u64) as usize;
        Ok(Some(listings[at].index))
    }
}

/// The prompt PROTOCOL.md prints before reading a choice.
pub const PROMPT: &str = "Please enter the preferred appointment index and press enter:";

/// A person at a terminal: prompts, and asks again on a choice that is not
/// a listed index. Nothing is sent for an invalid choice.
pub struct Prompt<R, W> {
    pub input: R,
    pub output: W,
    /// Print the list before the prompt (when phase messages are off).
    pub show_list: bool,
    /// Said once when the person has been at the prompt this long: the
    /// center will not wait for ever.
    pub reminder: Option<Reminder>,
}

/// A word to a person who has been at the prompt a while.
pub struct Reminder {
    pub after: Duration,
    pub say: Box<dyn Fn() + Send>,
}

/// When to remind a person at the prompt that a medsim center waits 5
/// minutes (its `--idle-timeout` default) for the next message.
pub(super) const REMIND_AFTER: Duration = Duration::from_secs(240);

impl<R: BufRead, W: Write> Chooser for Prompt<R, W> {
    fn choose(&mut self, listings: &[Listing]) -> io::Result<Option<u64>> {
        if self.show_list {
            for listing in listings {
                writeln!(self.output, "{listing}")?;
            }
        }
        // The reminder waits on its own thread; answering drops `_answered`
        // and so cancels it.
        let (_answered, cancelled) = crossbeam_channel::bounded::<()>(0);
        if let Some(reminder) = self.reminder.take() {
            std::thread::spawn(move || {
                if let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
                    cancelled.recv_timeout(reminder.after)
                {
                    (reminder.say)();
                }
            });
        }
        loop {
            writeln!(self.output, "{PROMPT}")?;
            self.output.flush()?;
            let mut line = String::new();
            if self.input.read_line(&mut line)? == 0 {
                return Ok(None);
            }
            let answer = line.trim();
            match protocol::parse_index(answer) {
                Ok(index) if listings.iter().any(|l| l.index == index) => {
                    return Ok(Some(index));
                }
                _ => writeln!(
                    self.output,
                    "'{}' is not one of the listed indexes; please choose again.",
                    protocol::shorten(answer)
                )?,
            }
        }
    }
}
