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
