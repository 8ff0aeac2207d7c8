//! `mc man [COMMAND]`: the manual page, in roff, generated from the same clap types as `--help`.

use crate::exit::{Code, Failure};

pub(crate) fn run(subcommand: Option<&str>) -> Result<Code, Failure> {
    let mut command = crate::cli::command();
    command.build();
    let (page, title) = match subcommand {
        None => (command, "mc".to_owned()),
        Some(name) => {
            let names: Vec<String> = command
                .get_subcommands()
                .map(|sub| sub.get_name().to_owned())
                .collect();
            let found = command.find_subcommand(name).cloned();
            found
                .map(|sub| {
                    let title = format!("mc-{}", sub.get_name());
                    (sub, title)
                })
                .ok_or_else(|| {
                    let mut message = format!("mc has no command {name:?}");
                    if let Some(close) =
                        maestro_core::suggest::did_you_mean(name, names.iter().map(String::as_str))
                    {
                        message.push_str(&format!("; did you mean {close:?}?"));
                    }
                    Failure::usage(message).hint(format!("the commands are {}", names.join(", ")))
                })?
        }
    };
    let mut roff = Vec::new();
    clap_mangen::Man::new(page)
        .title(title.to_uppercase())
        .render(&mut roff)
        .map_err(|error| Failure::system(format!("cannot render the manual page: {error}")))?;
    crate::printer::out(&String::from_utf8_lossy(&roff));
    Ok(Code::Success)
}
