//! How a visit ended ([`Outcome`], with its exit status), and what it
//! went through on the way ([`Visit`], its phases and their times).

use std::time::Instant;

use crate::client::{Failed, NoAnswer};

/// How a visit ended. Each kind has its own exit status.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "detail")]
pub enum Outcome {
    /// Booked and quoted.
    Quoted,
    /// The center answered `failure`.
    AuthFailed,
    /// The center had no free slot.
    NoSlots,
    /// Someone reserved the chosen slot first.
    Taken,
    /// The doctor did not answer within the retries.
    DoctorSilent,
    /// The doctor answered with an empty datagram.
    DoctorEmpty,
    /// The person closed the prompt (end of input) without choosing.
    Cancelled,
    /// The center or the doctor answered something the protocol does not
    /// allow here, or `error ...`.
    Protocol(String),
    /// The connection could not be made or broke.
    Connection(String),
}

impl Outcome {
    /// The process exit status for this outcome (README, "Exit statuses").
    pub fn exit_code(&self) -> u8 {
        match self {
            Outcome::Quoted => 0,
            Outcome::AuthFailed => 3,
            Outcome::NoSlots | Outcome::Taken => 4,
            Outcome::DoctorSilent => 5,
            Outcome::DoctorEmpty => 6,
            Outcome::Protocol(_) | Outcome::Connection(_) => 6,
            Outcome::Cancelled => 7,
        }
    }

    /// A short name for reports read by programs (JSON).
    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Quoted => "quoted",
            Outcome::AuthFailed => "auth_failed",
            Outcome::NoSlots => "no_slots",
            Outcome::Taken => "taken",
            Outcome::DoctorSilent => "doctor_silent",
            Outcome::DoctorEmpty => "doctor_empty",
            Outcome::Cancelled => "cancelled",
            Outcome::Protocol(_) => "protocol_error",
            Outcome::Connection(_) => "connection_error",
        }
    }

    /// A short name for reports read by people.
    pub fn words(&self) -> &'static str {
        match self {
            Outcome::Quoted => "quoted",
            Outcome::AuthFailed => "login failed",
            Outcome::NoSlots => "no slots",
            Outcome::Taken => "taken",
            Outcome::DoctorSilent => "doctor silent",
            Outcome::DoctorEmpty => "doctor empty",
            Outcome::Cancelled => "cancelled",
            Outcome::Protocol(_) => "protocol error",
            Outcome::Connection(_) => "connection error",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Quoted => f.write_str("booked and quoted"),
            Outcome::AuthFailed => f.write_str("authentication failed"),
            Outcome::NoSlots => f.write_str("no appointment is available"),
            Outcome::Taken => f.write_str("the chosen appointment was taken"),
            Outcome::DoctorSilent => f.write_str("the doctor did not answer"),
            Outcome::DoctorEmpty => f.write_str("the doctor answered with an empty message"),
            Outcome::Cancelled => f.write_str("no appointment was chosen"),
            Outcome::Protocol(what) => write!(f, "protocol error: {what}"),
            Outcome::Connection(what) => write!(f, "connection error: {what}"),
        }
    }
}

/// What a visit achieved, whatever its outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Visit {
    pub outcome: Outcome,
    /// The slot the patient asked for.
    #[serde(default)]
    pub chosen: Option<u64>,
    /// The slot the center reserved.
    pub slot: Option<u64>,
    pub doctor: Option<String>,
    pub doctor_port: Option<u16>,
    pub cost: Option<u64>,
    /// Quote requests sent beyond the first.
    pub retries: u32,
    /// How long each exchange took, for the run's table per phase.
    #[serde(skip)]
    pub phases: PhaseTimes,
}

/// The exchanges of a visit, as load reports name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Connecting and `authenticate`, to its answer.
    Login,
    /// `available`, to the list.
    List,
    /// `selection N`, to the grant or refusal.
    Selection,
    /// The plan to the doctor, to its cost (retries included).
    Quote,
}

impl Phase {
    /// Every phase, in the order of a visit.
    pub const ALL: [Phase; 4] = [Phase::Login, Phase::List, Phase::Selection, Phase::Quote];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Login => "login",
            Phase::List => "list",
            Phase::Selection => "selection",
            Phase::Quote => "quote",
        }
    }
}

/// How long each phase of one visit took (from its request to its answer,
/// whatever the answer said) and the last phase it began: a visit that did
/// not end quoted failed in that one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PhaseTimes {
    /// Microseconds, by [`Phase`] in [`Phase::ALL`] order; `None` for a
    /// phase not begun or never answered.
    pub answered_us: [Option<u64>; 4],
    pub last_begun: Option<Phase>,
}

impl PhaseTimes {
    pub(super) fn begin(&mut self, phase: Phase) -> (Phase, Instant) {
        self.last_begun = Some(phase);
        (phase, Instant::now())
    }

    pub(super) fn answered(&mut self, (phase, since): (Phase, Instant)) {
        self.answered_us[phase as usize] = Some(since.elapsed().as_micros() as u64);
    }
}

impl Visit {
    pub(super) fn new() -> Visit {
        Visit {
            outcome: Outcome::Cancelled,
            chosen: None,
            slot: None,
            doctor: None,
            doctor_port: None,
            cost: None,
            retries: 0,
            phases: PhaseTimes::default(),
        }
    }

    pub(super) fn ended(mut self, outcome: Outcome) -> Visit {
        self.outcome = outcome;
        self
    }
}

impl From<NoAnswer> for Outcome {
    fn from(why: NoAnswer) -> Outcome {
        match why {
            NoAnswer::Ended => Outcome::Connection(why.to_string()),
            NoAnswer::TimedOut => Outcome::Connection("the center did not answer in time".into()),
            NoAnswer::TooLong => Outcome::Protocol("the center's answer is too long".into()),
            NoAnswer::Failed(e) => Outcome::Connection(format!("reading from the center: {e}")),
        }
    }
}

impl From<Failed> for Outcome {
    fn from(why: Failed) -> Outcome {
        match why {
            Failed::Send(e) => Outcome::Connection(format!("sending to the center: {e}")),
            Failed::NoAnswer(why) => why.into(),
        }
    }
}
