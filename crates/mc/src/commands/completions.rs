//! `mc completions SHELL`: a completion script for bash, zsh, fish, elvish or PowerShell.

use crate::exit::{Code, Failure};

pub(crate) fn run(shell: clap_complete::Shell) -> Result<Code, Failure> {
    let mut command = crate::cli::command();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "mc", &mut script);
    crate::printer::out(&String::from_utf8_lossy(&script));
    Ok(Code::Success)
}
