//! `medsim patient`: its flags, and their reading into
//! [`patient::Options`].

use std::time::Duration;

use anyhow::Context as _;

use super::{DoctorsArgs, Fixtures, FramingArgs, parse_duration};
use crate::data::Patient;
use crate::patient::{self, Who};

/// Run a patient: log in at the center, choose a slot (at a prompt, or
/// with --select), then get the doctor's quote.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Take credentials and plan from NAME.txt and NAMEinsurance.txt of the
    /// data (e.g. patient1) [default: patient1].
    #[arg(long, value_name = "NAME", conflicts_with_all = ["user", "password", "insurance"])]
    pub name: Option<String>,
    /// Username to log in with (with --password and --insurance).
    #[arg(long, value_name = "U", requires_all = ["password", "insurance"])]
    pub user: Option<String>,
    /// Password for --user.
    #[arg(long, value_name = "P", requires = "user")]
    pub password: Option<String>,
    /// Insurance plan to ask the doctor about.
    #[arg(long, value_name = "PLAN", requires = "user")]
    pub insurance: Option<String>,
    /// The health center's address.
    #[arg(long, default_value = "127.0.0.1:21720", value_name = "ADDR")]
    pub center: String,
    #[command(flatten)]
    pub doctors: DoctorsArgs,
    /// Choose this slot index without prompting (sent as is: the center
    /// decides). Without it, the list is shown and you are asked.
    #[arg(long, value_name = "N")]
    pub select: Option<u64>,
    #[command(flatten)]
    pub fixtures: Fixtures,
    #[command(flatten)]
    pub framing: FramingArgs,
    /// Time to wait for the center's connection and each answer (e.g. 10s).
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Time to wait for the doctor before sending the plan again.
    #[arg(long, default_value = "1s", value_parser = parse_duration, value_name = "DURATION")]
    pub quote_timeout: Duration,
    /// Quote requests to send in all before giving up on the doctor.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub quote_attempts: u32,
    /// Print no phase messages (the list and prompt still appear when
    /// asking).
    #[arg(long)]
    pub quiet: bool,
    /// Print the password in the phase messages, as the classic demo did.
    #[arg(long)]
    pub show_passwords: bool,
}

impl Args {
    /// The options these flags ask for.
    ///
    /// # Errors
    ///
    /// `--user` without its password or plan.
    fn options(&self) -> anyhow::Result<patient::Options> {
        let who = match (&self.name, &self.user) {
            (Some(name), _) => Who::Named(name.clone()),
            (None, Some(user)) => Who::Given(Patient {
                username: user.clone(),
                password: self.password.clone().context("--user needs --password")?,
                plan: self.insurance.clone().context("--user needs --insurance")?,
            }),
            (None, None) => Who::Named("patient1".into()),
        };
        Ok(patient::Options {
            source: self.fixtures.source(),
            who,
            center: self.center.clone(),
            doctors: self.doctors.overrides(),
            select: self.select,
            framing: self.framing.into(),
            timeout: self.timeout,
            quote_timeout: self.quote_timeout,
            quote_attempts: self.quote_attempts,
            quiet: self.quiet,
            show_passwords: self.show_passwords,
        })
    }
}

/// The `patient` subcommand. Returns the exit status of the visit.
///
/// # Errors
///
/// As [`patient::run`].
pub fn run(args: &Args) -> anyhow::Result<u8> {
    patient::run(&args.options()?)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;

    #[derive(clap::Parser)]
    struct Line {
        #[command(flatten)]
        args: Args,
    }

    fn options(flags: &[&str]) -> patient::Options {
        let line = Line::try_parse_from(std::iter::once("patient").chain(flags.iter().copied()))
            .unwrap_or_else(|e| panic!("{flags:?}: {e}"));
        line.args
            .options()
            .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
    }

    #[test]
    fn who_visits_is_named_given_or_patient1() {
        assert!(matches!(options(&[]).who, Who::Named(name) if name == "patient1"));
        assert!(
            matches!(options(&["--name", "patient2"]).who, Who::Named(name) if name == "patient2")
        );
        let given = options(&["--user", "u", "--password", "p", "--insurance", "gold"]);
        let Who::Given(patient) = given.who else {
            panic!("--user gives the patient whole");
        };
        assert_eq!(
            (
                patient.username.as_str(),
                patient.password.as_str(),
                patient.plan.as_str()
            ),
            ("u", "p", "gold")
        );
    }

    #[test]
    fn flags_become_the_options_they_name() {
        let o = options(&[
            "--dialect",
            "classic",
            "--classic-buffer",
            "100",
            "--doctor-host",
            "10.0.0.2",
            "--doctor",
            "doc1=41720",
            "--timeout",
            "250ms",
            "--quote-attempts",
            "2",
            "--select",
            "3",
        ]);
        assert_eq!(
            o.framing,
            crate::protocol::Framing {
                dialect: crate::protocol::Dialect::Classic,
                classic_buffer: Some(100),
            }
        );
        assert_eq!(o.doctors.host.as_deref(), Some("10.0.0.2"));
        assert_eq!(o.doctors.by_name, [("doc1".to_owned(), "41720".to_owned())]);
        assert_eq!(o.timeout, Duration::from_millis(250));
        assert_eq!(o.quote_timeout, Duration::from_secs(1));
        assert_eq!(o.quote_attempts, 2);
        assert_eq!(o.select, Some(3));
        assert_eq!(o.center, "127.0.0.1:21720");
    }
}
