//! The `medsim` command line: clap types and dispatch only. Every
//! subcommand's flags live in `cli/`, behind the wall `tests/walls.rs`
//! holds.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

use medsim::cli;

/// The classic online medical appointment system: a health center over
/// TCP, doctors over UDP, and patients that book a slot and get a quote.
#[derive(Debug, Parser)]
#[command(name = "medsim", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Center(cli::center::Args),
    Doctor(cli::doctor::Args),
    Patient(cli::patient::Args),
    Simulate(cli::simulate::Args),
    Check(cli::check::Args),
    Bench(cli::bench::Args),
    Completions(CompletionsArgs),
}

/// Print shell completions for medsim, e.g. `medsim completions bash >
/// ~/.local/share/bash-completion/completions/medsim`.
#[derive(Debug, clap::Args)]
struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = run(&cli);
    // Log lines still queued go out before the process ends (and before
    // its error, which comes after them).
    medsim::console::finish();
    match outcome {
        Ok(code) => ExitCode::from(code),
        // Whoever read our output stopped reading (`| head`): nothing is
        // wrong, and nobody is left to tell. End quietly, as ripgrep does.
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("medsim: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: &Cli) -> anyhow::Result<u8> {
    match &cli.command {
        Command::Center(args) => cli::center::run(args).map(|()| 0),
        Command::Doctor(args) => cli::doctor::run(args).map(|()| 0),
        Command::Patient(args) => cli::patient::run(args),
        Command::Simulate(args) => cli::simulate::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Bench(args) => cli::bench::run(args),
        Command::Completions(args) => {
            let mut script = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "medsim", &mut script);
            medsim::console::out(&String::from_utf8_lossy(&script))?;
            Ok(0)
        }
    }
}
