//! `medsim doctor`: its flags, and their reading into [`doctor::Options`].

use super::{Fixtures, parse_name_addr};
use crate::doctor;

/// Run the doctors: each doctor named in the availabilities answers
/// insurance plans with its cost over UDP, on its own socket and thread.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub fixtures: Fixtures,
    /// Run only this doctor (repeat for several) [default: all].
    #[arg(long, value_name = "NAME")]
    pub only: Vec<String>,
    /// Where one doctor listens, e.g. `doc1=127.0.0.1:0` (port 0 picks a
    /// free port). Repeat for several [default: HOST and the port the
    /// availabilities give: doc1 41720, doc2 42720].
    #[arg(long, value_name = "NAME=ADDR", value_parser = parse_name_addr)]
    pub listen: Vec<(String, String)>,
    /// Address doctors without --listen bind to.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Print no phase messages (each doctor's bound address is still
    /// printed).
    #[arg(long)]
    pub quiet: bool,
}

impl Args {
    fn options(&self) -> doctor::Options {
        doctor::Options {
            source: self.fixtures.source(),
            only: self.only.clone(),
            listen: self.listen.clone(),
            host: self.host.clone(),
            quiet: self.quiet,
        }
    }
}

/// The `doctor` subcommand.
///
/// # Errors
///
/// As [`doctor::run`].
pub fn run(args: &Args) -> anyhow::Result<()> {
    doctor::run(&args.options())
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

    #[test]
    fn flags_become_the_options_they_name() {
        let line = Line::try_parse_from([
            "doctor",
            "--only",
            "doc2",
            "--listen",
            "doc2=127.0.0.1:0",
            "--quiet",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let o = line.args.options();
        assert_eq!(o.only, ["doc2"]);
        assert_eq!(o.listen, [("doc2".to_owned(), "127.0.0.1:0".to_owned())]);
        assert_eq!(o.host, "127.0.0.1");
        assert!(o.quiet);
        assert!(Line::try_parse_from(["doctor", "--listen", "doc2"]).is_err());
    }
}
