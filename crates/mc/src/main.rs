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
    // Before anything else: it forks, which needs one thread and is cheapest now.
    shim::fork_launcher_if_submit();
    let cli = cli::command()
        .try_get_matches()
        .and_then(|matches| cli::Cli::from_arg_matches(&matches))
        .unwrap_or_else(|error| {
            // `--help`, `--version` and usage errors end here.
            shim::release_launcher();
            error.exit()
        });
    shim::keep_launcher_for(&cli);
    let diagnostics = diagnostics::install_tracing(cli.global.verbose);
    let json = cli.wants_json();
    let code = match commands::dispatch(cli) {
        Ok(code) => code,
        Err(failure) => failure.report(json),
    };
    shim::release_launcher();
    diagnostics.drain();
    code.into()
}
