//! `mc tokens`: the server's bearer tokens (only their hashes are stored).

use maestro_server::tokens::{Role, TokenError, TokenStore};

use crate::cli::{GlobalArgs, OutputFormat, TokensCommand};
use crate::exit::{Code, Failure};
use crate::{printer, settings};

fn failure(error: TokenError) -> Failure {
    match error {
        TokenError::Io { .. } | TokenError::Corrupt { .. } => Failure::system(error),
        TokenError::NotFound(_) => Failure::usage(error).hint("`mc tokens list` shows them"),
        error => Failure::usage(error),
    }
}

pub(crate) fn run(global: &GlobalArgs, command: TokensCommand) -> Result<Code, Failure> {
    let store = TokenStore::new(&settings::state_root(global)?);
    match command {
        TokensCommand::Add { identity, roles } => {
            let roles = roles
                .iter()
                .map(|role| role.parse::<Role>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(failure)?;
            let made = store.add(&identity, &roles).map_err(failure)?;
            let roles: Vec<&str> = made.entry.roles.iter().map(|role| role.as_str()).collect();
            printer::out(&format!(
                "token {} for {} (roles {}); it is shown once, keep it now:\n{}\n",
                made.entry.id,
                made.entry.identity,
                roles.join(","),
                made.token
            ));
        }
        TokensCommand::List { output } => {
            let entries = store.list().map_err(failure)?;
            match output {
                OutputFormat::Json => printer::json(&entries),
                OutputFormat::Text => {
                    let mut text = format!(
                        "{:<14} {:<20} {:<28} {}\n",
                        "ID", "IDENTITY", "ROLES", "CREATED"
                    );
                    for entry in &entries {
                        let roles: Vec<&str> =
                            entry.roles.iter().map(|role| role.as_str()).collect();
                        text.push_str(&format!(
                            "{:<14} {:<20} {:<28} {}\n",
                            entry.id,
                            printer::field(&entry.identity),
                            roles.join(","),
                            entry.created_at
                        ));
                    }
                    printer::out(&text);
                }
            }
        }
        TokensCommand::Revoke { which } => {
            for entry in store.revoke(&which).map_err(failure)? {
                printer::out(&format!(
                    "revoked token {} of {}\n",
                    entry.id,
                    printer::field(&entry.identity)
                ));
            }
        }
    }
    Ok(Code::Success)
}
