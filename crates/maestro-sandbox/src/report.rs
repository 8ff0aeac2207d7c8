//! What the shim tells the caller: the messages on the control socket and the final report.

use serde::{Deserialize, Serialize};

/// How the step's main process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ExitKind {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal number.
    Signal(i32),
}

/// Whether the step's processes are all gone once the shim is done.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TeardownReport {
    /// The inode of the step's PID namespace (as `/proc/<pid>/ns/pid` shows it).
    pub pid_namespace_inode: u64,
    /// True when init killed and reaped every other process of the PID namespace and said so
    /// (the usual case; the kernel's zap of the namespace on init's exit is the backstop), or,
    /// when init ended without saying so, when the shim reaped it (the kernel kills and releases
    /// every other process of a PID namespace before its init can be waited for). When init
    /// could not be waited for, true when a scan of `/proc` found none of the namespace's
    /// processes.
    pub verified: bool,
    /// Processes found in the namespace by that scan, as `pid 123 (sleep)`; each was sent
    /// SIGKILL. Always empty when init was reaped.
    pub remaining: Vec<String>,
}

/// The outcome of a sandboxed step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// How the step ended; `None` when it was killed with the sandbox (the caller went away).
    pub exit: Option<ExitKind>,
    /// Whether the sandbox left nothing running behind.
    pub teardown: TeardownReport,
    /// The host pid of the namespace's init when the shim did not wait for it: init had
    /// emptied the namespace and was exiting (its exit tears the step's mounts down, off the
    /// caller's path). Once the shim has exited, init is re-parented to the nearest child
    /// subreaper, or to the system's init; a caller that is a child subreaper
    /// (`PR_SET_CHILD_SUBREAPER`) must reap it, or it stays a zombie. `None` when the shim
    /// reaped init itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unreaped_init: Option<i32>,
}

/// One line the shim writes on its control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Message {
    /// The sandbox is set up and the step's program is being executed.
    Started {
        /// The inode of the step's PID namespace.
        pid_namespace_inode: u64,
    },
    /// Setting up the sandbox failed; the step never ran.
    Setup {
        /// One line naming what failed.
        message: String,
    },
    /// The sandbox was complete, but the step's program could not be executed.
    CannotStart {
        /// Why, e.g. `No such file or directory`.
        message: String,
    },
    /// The step asks for what no sandbox gives; it never ran.
    Refused {
        /// What, in one line.
        message: String,
    },
    /// The step and its sandbox are gone.
    Finished(Report),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_one_json_object_each() {
        let message = Message::Finished(Report {
            exit: Some(ExitKind::Signal(15)),
            teardown: TeardownReport::default(),
            unreaped_init: None,
        });
        let line = serde_json::to_string(&message).unwrap();
        assert!(!line.contains('\n'));
        assert!(line.contains(r#""signal":15"#), "{line}");
        assert_eq!(serde_json::from_str::<Message>(&line).unwrap(), message);
    }
}
