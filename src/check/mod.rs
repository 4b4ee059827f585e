//! `medsim check`: named conformance and race cases run against a live
//! system (medsim's own or any other implementation of PROTOCOL.md), each
//! reported PASS, FAIL or SKIP with its evidence: what was sent and what
//! came back.
//!
//! This module owns what a check is (its configuration, flags and
//! findings); the cases and their order are [`cases`]'s, the report
//! [`report`]'s. The cases hold the center to PROTOCOL.md's exact words (a
//! capitalised `Success` fails here, though medsim's patient tolerates it).
//! Every conversation goes through `client`.

mod cases;
mod report;

pub use cases::check;
pub use report::render;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context as _;

use crate::cli::{self, Framing};
use crate::data::{Fixtures, Patient};
use crate::net;

/// A plan no doctor should know.
pub const UNKNOWN_PLAN: &str = "medsim-check-no-such-plan";

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    /// Not run: what it needs is not there (e.g. no free slot left).
    Skip,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        })
    }
}

/// One case's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaseResult {
    pub name: String,
    pub verdict: Verdict,
    /// What was sent and what came back, or why it was skipped.
    pub evidence: String,
}

/// What to check, and how to reach it.
#[derive(Debug, Clone)]
pub struct Config {
    pub center: SocketAddr,
    /// The host the center's `DOCTOR PORT` answers refer to.
    pub doctor_host: String,
    pub framing: Framing,
    pub username: String,
    pub password: String,
    /// The plan the doctors are asked about.
    pub plan: String,
    /// Clients racing for one slot.
    pub race: usize,
    /// How long to wait for each answer.
    pub timeout: Duration,
    /// The doctors to ask, by name, and the cost each should quote for
    /// `plan` when the data says.
    pub doctors: Vec<DoctorTarget>,
}

/// A doctor the checker asks for quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoctorTarget {
    pub name: String,
    pub addr: SocketAddr,
    /// The cost its table gives for the plan, when known.
    pub expected: Option<u64>,
}

/// Slots the cases reserve, by case: the checker needs no more free slots
/// than these add up to.
pub const RESERVES: [(&str, usize); 2] = [("booking", 1), ("race", 1)];

/// Everything a check found.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Findings {
    /// Free slots the center listed before any case reserved one.
    pub listed_free: usize,
    pub cases: Vec<CaseResult>,
}

impl Findings {
    pub fn count(&self, verdict: Verdict) -> usize {
        self.cases.iter().filter(|c| c.verdict == verdict).count()
    }
}

/// Check a running system against the protocol: authentication, the
/// list's format, booking, a taken slot, a race for one slot, malformed
/// input, and each doctor's quotes. Exits 1 if any case fails.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The center's address.
    #[arg(long, default_value = "127.0.0.1:21720", value_name = "ADDR")]
    pub center: String,
    #[command(flatten)]
    pub doctors: cli::Doctors,
    #[command(flatten)]
    pub framing: Framing,
    /// User to log in as [default: patient1 of the data].
    #[arg(long, value_name = "U", requires = "password")]
    pub user: Option<String>,
    /// Password for --user.
    #[arg(long, value_name = "P", requires = "user")]
    pub password: Option<String>,
    /// Plan to ask the doctors about [default: the user's plan in the data,
    /// or insurance1].
    #[arg(long, value_name = "PLAN")]
    pub plan: Option<String>,
    /// Clients racing for one slot.
    #[arg(long, default_value_t = 50, value_name = "K")]
    pub race: usize,
    #[command(flatten)]
    pub fixtures: cli::Fixtures,
    /// Time to wait for each answer (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = cli::parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Print the findings as one JSON document.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// The configuration these flags describe.
    ///
    /// # Errors
    ///
    /// Bad data files, an address that does not resolve, a malformed
    /// `--doctor`.
    pub fn config(&self) -> anyhow::Result<Config> {
        let source = self.fixtures.source();
        let fixtures = Fixtures::load(&source)?;
        let center = net::resolve(&self.center)?;
        let routes = self.doctors.routes(&center.ip().to_string());
        let (username, password, data_plan) = match (&self.user, &self.password) {
            (Some(user), Some(password)) => (
                user.clone(),
                password.clone(),
                Patient::load(&source, user).ok().map(|p| p.plan),
            ),
            _ => {
                let p = Patient::load(&source, "patient1")?;
                (p.username, p.password, Some(p.plan))
            }
        };
        let plan = self
            .plan
            .clone()
            .or(data_plan)
            .unwrap_or_else(|| "insurance1".into());
        // Every doctor of the data at its port, unless --doctor names them.
        let mut addresses: Vec<(String, String)> = if routes.by_name.is_empty() {
            fixtures
                .doctors
                .iter()
                .map(|d| (d.name.clone(), routes.address(None, d.port)))
                .collect()
        } else {
            Vec::new()
        };
        addresses.extend(routes.by_name.clone());
        let mut doctors = Vec::new();
        for (name, addr) in addresses {
            doctors.push(DoctorTarget {
                expected: fixtures.doctor(&name).and_then(|d| d.fees.cost(&plan)),
                addr: net::resolve(&addr).with_context(|| format!("doctor {name}"))?,
                name,
            });
        }
        anyhow::ensure!(self.race >= 2, "--race needs at least 2 clients");
        Ok(Config {
            center,
            doctor_host: routes.host,
            framing: self.framing.checked()?,
            username,
            password,
            plan,
            race: self.race,
            timeout: self.timeout,
            doctors,
        })
    }
}

/// The `check` subcommand: 0 when no case failed, 1 otherwise.
///
/// # Errors
///
/// Bad flags or data files.
pub fn run(args: &Args) -> anyhow::Result<u8> {
    let config = args.config()?;
    let findings = check(&config);
    if args.json {
        crate::console::out(&format!("{}\n", serde_json::to_string_pretty(&findings)?))?;
    } else {
        crate::console::out(&render(&config, &findings))?;
    }
    Ok(if findings.count(Verdict::Fail) == 0 {
        0
    } else {
        1
    })
}

#[cfg(test)]
mod tests {
    use super::cases::shown;

    #[test]
    fn evidence_masks_the_password() {
        assert_eq!(shown("authenticate u secret"), "authenticate u ***");
        assert_eq!(shown("available"), "available");
    }
}
