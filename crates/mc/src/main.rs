//! `mc`: the Maestro command line. Parse, run one command, map the outcome to an exit code.

mod cli;
mod commands;
mod diagnostics;
mod exit;
mod printer;
mod registry;
mod settings;
mod shim;

use clap::FromArgMatches;

fn main() -> std::process::ExitCode {
    shim::run_if_requested();
    let cli = cli::Cli::from_arg_matches(&cli::command().get_matches())
        .unwrap_or_else(|error| error.exit());
    // Before the first thread (the diagnostics writer's): it forks.
    shim::fork_launcher_for(&cli);
    let diagnostics = diagnostics::install_tracing(cli.global.verbose);
    let code = match commands::dispatch(cli) {
        Ok(code) => code,
        Err(failure) => failure.report(),
    };
    diagnostics.drain();
    code.into()
}
