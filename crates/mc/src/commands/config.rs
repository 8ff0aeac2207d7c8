//! `mc config`: every setting's effective value and where it came from.

use serde_json::json;

use crate::cli::{ConfigArgs, GlobalArgs, OutputFormat};
use crate::exit::{Code, Failure};
use crate::printer;
use crate::settings::{self, Flags};

pub(crate) fn run(global: &GlobalArgs, args: ConfigArgs) -> Result<Code, Failure> {
    let settings = settings::resolve(global, &Flags::default())?;
    match args.output {
        OutputFormat::Json => printer::json(&json!({
            "settings": settings
                .effective
                .iter()
                .map(|(key, value, origin)| json!({
                    "key": key,
                    "value": value,
                    "from": origin,
                    "about": settings::SETTINGS
                        .iter()
                        .find(|setting| setting.key == *key)
                        .map(|setting| setting.about),
                }))
                .collect::<Vec<_>>(),
            "files": settings.files,
        })),
        OutputFormat::Text => {
            // The value last but one and unpadded: paths have any length.
            let mut text = String::new();
            for (key, value, origin) in &settings.effective {
                text.push_str(&format!("{key:<22} {value}  ({origin})\n"));
            }
            text.push_str("\nfiles (a later one wins over an earlier one):\n");
            for file in &settings.files {
                text.push_str(&format!(
                    "  {}  ({})\n",
                    file.path.display(),
                    if file.found { "read" } else { "absent" }
                ));
            }
            printer::out(&text);
        }
    }
    Ok(Code::Success)
}
