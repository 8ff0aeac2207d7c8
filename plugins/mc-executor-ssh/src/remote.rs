//! The POSIX shell script a task runs as on the remote host, and how it gets there.
//!
//! Nothing of the task goes into `ssh`'s arguments, which every user can read in `ps` (or
//! `/proc/*/cmdline`) on both machines: the remote command is always [`BOOTSTRAP`], a fixed
//! one-line script, and the task's script (its environment, which may hold secrets, its workdir
//! and its command) follows on the session's stdin as one line of base64 ([`input`]). The
//! bootstrap reads that line with the shell's `read` (which never reads past the newline), decodes
//! it with `base64 -d` fed through a pipe, and `eval`s it, so the environment only ever passes
//! through pipes and shell variables. (The task's own command line is, as anywhere, visible in
//! `ps` while it runs; its environment values are not.)
//!
//! Without a tty, a remote command outlives a dropped SSH session (nobody sends it SIGHUP). So
//! the script starts the task with `setsid` in a process group of its own, with its stdin on
//! `/dev/null`, and keeps a watcher reading the session's stdin: the plugin writes nothing after
//! the script's line, so the end of that input means the session is gone (the plugin killed `ssh` to stop the task, or the
//! connection died). The watcher then sends SIGTERM to the task's group and SIGKILL after the
//! grace period. When the task ends by itself the watcher is killed and the task's exit code is
//! the script's.

use std::fmt::Write;

use maestro_plugin_sdk::protocol::{Start, base64};

/// The remote command for every task, passed to the remote login shell as is: read one line of
/// base64 from stdin, decode it, run it. It holds nothing of the task.
pub(crate) const BOOTSTRAP: &str = "sh -c 'IFS= read -r mc_task || exit 125; \
mc_task=$(printf %s \"$mc_task\" | base64 -d) || \
{ echo \"mc-executor-ssh: the remote host could not decode the task (is base64 installed?)\" >&2; exit 125; }; \
eval \"$mc_task\"'";

/// What the plugin writes to the session's stdin for `script` (from [`script`]): one line of
/// base64. Nothing follows; the end of the input later tells the script the session is gone.
pub(crate) fn input(script: &str) -> Vec<u8> {
    let mut line = base64::encode(script.as_bytes()).into_bytes();
    line.push(b'\n');
    line
}

/// `value` as one single-quoted POSIX shell word.
pub(crate) fn quote_word(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The script for `task`, run by [`BOOTSTRAP`]'s shell on the remote host, whose stdin is the
/// session's (just past the script's own line). Its workdir is taken as written: absolute, or
/// relative to the remote login directory.
pub(crate) fn script(task: &Start, grace_seconds: u32) -> Result<String, String> {
    let mut script = String::from("exec 3<&0\n");
    for (name, value) in &task.env {
        if !valid_env_name(name) {
            return Err(format!(
                "environment variable name {name:?} cannot be passed over ssh"
            ));
        }
        let _ = writeln!(script, "export {name}={}", quote_word(value));
    }
    if let Some(dir) = &task.workdir {
        let _ = writeln!(
            script,
            "cd {} || {{ echo \"mc-executor-ssh: no directory $(pwd)/\"{} >&2; exit 126; }}",
            quote_word(dir),
            quote_word(dir)
        );
    }
    let argv = task.command.to_argv();
    if argv.is_empty() {
        return Err("the step's command is empty".to_owned());
    }
    let words: Vec<String> = argv.iter().map(|word| quote_word(word)).collect();
    let _ = write!(
        script,
        "if command -v setsid >/dev/null 2>&1; then setsid {words} </dev/null 3<&- & else {words} </dev/null 3<&- & fi\n\
         task=$!\n\
         ( while read -r _ <&3; do :; done; kill -s TERM -- -$task 2>/dev/null || kill -s TERM $task; \
         sleep {grace_seconds}; kill -s KILL -- -$task 2>/dev/null || kill -s KILL $task ) >/dev/null 2>&1 &\n\
         watcher=$!\n\
         exec 3<&-\n\
         wait $task\n\
         code=$?\n\
         kill $watcher 2>/dev/null\n\
         exit $code\n",
        words = words.join(" ")
    );
    Ok(script)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use maestro_plugin_sdk::protocol::Command;

    use super::*;

    fn task(command: Command, env: &[(&str, &str)], workdir: Option<&str>) -> Start {
        Start {
            id: 1,
            task: "t".into(),
            step: "s".into(),
            job_id: String::new(),
            trace_id: String::new(),
            command,
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            workspace: None,
            workdir: workdir.map(str::to_owned),
            timeout_ms: None,
            with: None,
        }
    }

    /// Run `script` as the remote login shell would: the bootstrap as its command, the script's
    /// line on its stdin, which is then held open like ssh's.
    fn run(script: &str) -> (String, std::process::ExitStatus) {
        use std::io::{Read, Write};
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(BOOTSTRAP)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(&input(script)).unwrap();
        let mut stdout = String::new();
        child
            .stdout
            .take()
            .unwrap()
            .read_to_string(&mut stdout)
            .unwrap();
        let status = child.wait().unwrap();
        drop(stdin);
        (stdout, status)
    }

    #[test]
    fn the_remote_command_holds_nothing_of_the_task() {
        let secret = "hunter2-the-secret";
        let script = script(
            &task(
                Command::Shell("echo \"$TOKEN\"".into()),
                &[("TOKEN", secret)],
                Some("/tmp"),
            ),
            1,
        )
        .unwrap();
        assert!(!BOOTSTRAP.contains(secret));
        let line = input(&script);
        assert!(!String::from_utf8_lossy(&line).contains(secret));
        assert_eq!(line.iter().filter(|&&b| b == b'\n').count(), 1);
        let (stdout, status) = run(&script);
        assert_eq!(stdout, format!("{secret}\n"));
        assert!(status.success());
    }

    #[test]
    fn values_with_newlines_and_odd_bytes_arrive_verbatim() {
        let value = "line one\nline two\n\n'quoted' \"double\" $X \\ end";
        let script = script(
            &task(
                Command::Argv(vec!["printf".into(), "%s|".into(), "$V".into()]),
                &[("V", value)],
                None,
            ),
            1,
        )
        .unwrap();
        let (stdout, _) = run(&script);
        assert_eq!(stdout, "$V|");
        let script = super::script(
            &task(
                Command::Shell("printf '%s|' \"$V\"".into()),
                &[("V", value)],
                None,
            ),
            1,
        )
        .unwrap();
        assert_eq!(run(&script).0, format!("{value}|"));
    }

    #[test]
    fn quoting_survives_a_real_shell() {
        let nasty = "it's $HOME `date` \"x\" \\ ; rm -rf /";
        let script = script(
            &task(
                Command::Argv(vec![
                    "printf".into(),
                    "%s|%s\\n".into(),
                    nasty.into(),
                    "$V".into(),
                ]),
                &[("V", nasty)],
                Some("/"),
            ),
            1,
        )
        .unwrap();
        let (stdout, status) = run(&script);
        assert_eq!(stdout, format!("{nasty}|$V\n"));
        assert!(status.success());
    }

    #[test]
    fn exit_codes_and_env_pass_through() {
        let script = script(
            &task(
                Command::Shell("test \"$A\" = 'x y' && exit 42".into()),
                &[("A", "x y")],
                None,
            ),
            1,
        )
        .unwrap();
        assert_eq!(run(&script).1.code(), Some(42));
    }

    #[test]
    fn bad_names_are_refused() {
        let error = script(
            &task(Command::Shell("true".into()), &[("A-B", "1")], None),
            1,
        );
        assert!(error.unwrap_err().contains("A-B"));
        assert!(script(&task(Command::Argv(vec![]), &[], None), 1).is_err());
    }
}
