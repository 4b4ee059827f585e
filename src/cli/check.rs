//! `medsim check`: its flags, and their reading into [`check::Options`].

use std::path::PathBuf;
use std::time::Duration;

use super::{DoctorsArgs, Fixtures, FramingArgs, parse_duration};
use crate::check;

/// Check a running system against the protocol: authentication and its
/// bypasses, the list, booking, a taken slot, a synchronised race for one
/// slot, malformed input, the wording, and each doctor's quotes; or, with
/// --patient-cmd, a patient program against medsim's own servers. Exits 1
/// if any case fails (or warns, with --strict), 2 when nothing accepts
/// connections at the center.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The center's address; give it more than once for several centers
    /// sharing one store (the race spreads over all of them). With
    /// --patient-cmd: where medsim's center listens for the program.
    #[arg(long, default_value = "127.0.0.1:21720", value_name = "ADDR")]
    pub center: Vec<String>,
    #[command(flatten)]
    pub doctors: DoctorsArgs,
    #[command(flatten)]
    pub framing: FramingArgs,
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
    pub fixtures: Fixtures,
    /// Time to wait for each answer (e.g. 5s, 500ms).
    #[arg(long, default_value = "5s", value_parser = parse_duration, value_name = "DURATION")]
    pub timeout: Duration,
    /// Make every WARN (wording, form) a failure.
    #[arg(long)]
    pub strict: bool,
    /// Run only these cases: ids or beginnings of ids, comma-separated or
    /// repeated (e.g. `auth,race/one`). A beginning names the ids it
    /// begins at a `/` (`auth`: every auth/ case; `doctor/doc1`: doc1's,
    /// not doc10's) or within their last part (`race/one`:
    /// race/one-slot). A name that is no case's is refused.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub cases: Vec<String>,
    /// Leave out these cases: ids or beginnings of ids, as --cases.
    #[arg(long, value_name = "IDS", value_delimiter = ',')]
    pub skip: Vec<String>,
    /// Start the center under test with `sh -c CMD` (in --dir); check
    /// waits for it to accept at --center, names how it dies, shows the
    /// tail of its output, and restarts it with fresh state.
    #[arg(long, value_name = "CMD")]
    pub center_cmd: Option<String>,
    /// Start the doctors under test with `sh -c CMD` (in --dir), watched
    /// and restarted as --center-cmd.
    #[arg(long, value_name = "CMD")]
    pub doctor_cmd: Option<String>,
    /// Check a patient program, started with `sh -c CMD` (in --dir), against
    /// medsim's own center (at --center) and doctors. Give it once per
    /// program (e.g. patient1 and patient2): each is judged in turn, and
    /// the reports hold them all, their case ids prefixed `patient1/`,
    /// `patient2/` in the order given.
    #[arg(long, value_name = "CMD")]
    pub patient_cmd: Vec<String>,
    /// With --patient-cmd: the port the center names is the doctor's port
    /// minus this (the seed patient adds 720 to what it is given).
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub patient_port_offset: u16,
    /// With --patient-cmd: how long the program may take, each run.
    #[arg(long, default_value = "10s", value_parser = parse_duration, value_name = "DURATION")]
    pub patient_timeout: Duration,
    /// Directory the programs run in [default: the current one].
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Run the whole check (check and the programs it starts) in a private
    /// network namespace with only loopback, so programs that hard-code
    /// 127.0.0.1:21720 work and several checks run at once. Needs root and
    /// `unshare`.
    #[arg(long)]
    pub netns: bool,
    /// Write the findings as JUnit XML to FILE.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Write the findings as a Gradescope autograder results.json to FILE.
    #[arg(long, value_name = "FILE")]
    pub gradescope: Option<PathBuf>,
    /// Points per case for --gradescope (needs it): IDS=POINTS, the ids
    /// named as --cases names them, comma-separated or repeated; the last
    /// that names a case gives its points [default: 1 a case].
    #[arg(long, value_name = "ID=POINTS", value_delimiter = ',', value_parser = parse_weight, requires = "gradescope")]
    pub weights: Vec<(String, f64)>,
    /// Print the findings as one JSON document.
    #[arg(long)]
    pub json: bool,
}

fn parse_weight(text: &str) -> Result<(String, f64), String> {
    let (id, points) = text
        .split_once('=')
        .ok_or_else(|| format!("'{text}' is not ID=POINTS (e.g. race=5)"))?;
    let points: f64 = points
        .parse()
        .ok()
        .filter(|p: &f64| p.is_finite() && *p >= 0.0)
        .ok_or_else(|| format!("'{points}' is not a number of points"))?;
    Ok((id.to_owned(), points))
}

impl Args {
    fn options(&self) -> check::Options {
        check::Options {
            centers: self.center.clone(),
            doctors: self.doctors.overrides(),
            framing: self.framing.into(),
            login: self.user.clone().zip(self.password.clone()),
            plan: self.plan.clone(),
            race: self.race,
            source: self.fixtures.source(),
            timeout: self.timeout,
            strict: self.strict,
            cases: self.cases.clone(),
            skip: self.skip.clone(),
            center_cmd: self.center_cmd.clone(),
            doctor_cmd: self.doctor_cmd.clone(),
            patient_cmds: self.patient_cmd.clone(),
            patient_port_offset: self.patient_port_offset,
            patient_timeout: self.patient_timeout,
            dir: self.dir.clone(),
            netns: self.netns,
            junit: self.junit.clone(),
            gradescope: self.gradescope.clone(),
            weights: self.weights.clone(),
            json: self.json,
        }
    }
}

/// The `check` subcommand: 0 when no case failed, 1 otherwise, 2 when
/// nothing accepts connections at the center.
///
/// # Errors
///
/// As [`check::run`].
pub fn run(args: &Args) -> anyhow::Result<u8> {
    check::run(&args.options())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::data::Source;
    use crate::protocol::{Dialect, Framing};

    #[derive(clap::Parser)]
    struct Line {
        #[command(flatten)]
        args: Args,
    }

    fn parse(flags: &[&str]) -> Result<Line, clap::Error> {
        Line::try_parse_from(std::iter::once("check").chain(flags.iter().copied()))
    }

    fn options(flags: &[&str]) -> check::Options {
        parse(flags)
            .unwrap_or_else(|e| panic!("{flags:?}: {e}"))
            .args
            .options()
    }

    #[test]
    fn flags_become_the_options_they_name() {
        let o = options(&[
            "--center",
            "10.0.0.1:21801",
            "--center",
            "10.0.0.1:21802",
            "--doctor-host",
            "10.0.0.2",
            "--doctor",
            "doc1=41720",
            "--dialect",
            "classic",
            "--classic-buffer",
            "512",
            "--user",
            "u",
            "--password",
            "p",
            "--plan",
            "insurance3",
            "--race",
            "7",
            "--fixtures",
            "data",
            "--timeout",
            "500ms",
            "--strict",
            "--cases",
            "auth,race/one",
            "--cases",
            "malformed",
            "--skip",
            "auth/success",
            "--center-cmd",
            "./center",
            "--doctor-cmd",
            "./doctors",
            "--dir",
            "build",
            "--netns",
            "--junit",
            "junit.xml",
            "--gradescope",
            "results.json",
            "--weights",
            "race=5,auth=0.5",
            "--json",
        ]);
        assert_eq!(o.centers, ["10.0.0.1:21801", "10.0.0.1:21802"]);
        assert_eq!(o.doctors.host.as_deref(), Some("10.0.0.2"));
        assert_eq!(o.doctors.by_name, [("doc1".to_owned(), "41720".to_owned())]);
        assert_eq!(
            o.framing,
            Framing {
                dialect: Dialect::Classic,
                classic_buffer: Some(512)
            }
        );
        assert_eq!(o.login, Some(("u".to_owned(), "p".to_owned())));
        assert_eq!(o.plan.as_deref(), Some("insurance3"));
        assert_eq!(o.race, 7);
        assert_eq!(o.source, Source::dir("data"));
        assert_eq!(o.timeout, Duration::from_millis(500));
        assert!(o.strict && o.netns && o.json);
        assert_eq!(o.cases, ["auth", "race/one", "malformed"]);
        assert_eq!(o.skip, ["auth/success"]);
        assert_eq!(o.center_cmd.as_deref(), Some("./center"));
        assert_eq!(o.doctor_cmd.as_deref(), Some("./doctors"));
        assert_eq!(o.dir, Some(PathBuf::from("build")));
        assert_eq!(o.junit, Some(PathBuf::from("junit.xml")));
        assert_eq!(o.gradescope, Some(PathBuf::from("results.json")));
        assert_eq!(
            o.weights,
            [("race".to_owned(), 5.0), ("auth".to_owned(), 0.5)]
        );
    }

    #[test]
    fn a_patient_check_reads_its_own_flags() {
        let o = options(&[
            "--patient-cmd",
            "./patient patient1",
            "--patient-cmd",
            "./patient patient2",
            "--patient-port-offset",
            "720",
            "--patient-timeout",
            "3s",
        ]);
        assert_eq!(o.patient_cmds, ["./patient patient1", "./patient patient2"]);
        assert_eq!(o.patient_port_offset, 720);
        assert_eq!(o.patient_timeout, Duration::from_secs(3));
    }

    #[test]
    fn without_flags_check_asks_the_usual_system_as_patient1() {
        let o = options(&[]);
        assert_eq!(o.centers, ["127.0.0.1:21720"]);
        assert_eq!(o.doctors, crate::client::DoctorOverrides::default());
        assert_eq!(o.framing, Framing::default());
        assert_eq!((o.login, o.plan), (None, None));
        assert_eq!(o.race, 50);
        assert_eq!(o.source, Source::built_in());
        assert_eq!(o.timeout, Duration::from_secs(5));
        assert_eq!(o.patient_timeout, Duration::from_secs(10));
        assert_eq!(o.patient_port_offset, 0);
        assert!(o.cases.is_empty() && o.skip.is_empty() && o.patient_cmds.is_empty());
        assert!(!(o.strict || o.netns || o.json));
    }

    #[test]
    fn flags_that_need_each_other_are_refused_alone() {
        assert!(parse(&["--user", "u"]).is_err());
        assert!(parse(&["--password", "p"]).is_err());
        assert!(parse(&["--weights", "race=5"]).is_err());
    }

    #[test]
    fn weights_are_ids_with_points_not_below_zero() {
        assert_eq!(parse_weight("race=5"), Ok(("race".to_owned(), 5.0)));
        assert_eq!(
            parse_weight("race"),
            Err("'race' is not ID=POINTS (e.g. race=5)".to_owned())
        );
        assert_eq!(
            parse_weight("race=-1"),
            Err("'-1' is not a number of points".to_owned())
        );
        assert_eq!(
            parse_weight("race=inf"),
            Err("'inf' is not a number of points".to_owned())
        );
    }
}
