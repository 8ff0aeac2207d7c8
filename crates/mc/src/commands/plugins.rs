//! `mc plugins`: list and check executor plugins. PLACEHOLDER — the plugin work fills this in.

use crate::cli::{GlobalArgs, PluginsCommand};
use crate::exit::{Code, Failure};

pub(crate) fn run(_global: &GlobalArgs, _command: PluginsCommand) -> Result<Code, Failure> {
    Err(Failure::usage(
        "plugin commands are not available in this build yet",
    ))
}
