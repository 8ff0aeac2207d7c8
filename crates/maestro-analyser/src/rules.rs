//! The rules: one check per destructive command family, applied to an effective argv.

use super::Rule;
use super::commands::{Stdin, basename};
use super::paths::{self, Danger};
use super::sql;
use super::words::{self, Resolved, Seg, Word};
use super::{Analyzer, Scope};

/// An argv split into option words (before `--`) and operands, GNU style: options may follow
/// operands. `value_opts` lists options whose value is the next word.
pub(crate) struct Split<'a> {
    pub(crate) opts: Vec<String>,
    pub(crate) operands: Vec<&'a Word>,
    /// Some word was dynamic and could expand to options we cannot see (`rm $FLAGS /`).
    pub(crate) dynamic_opts: bool,
}

pub(crate) fn split_args<'a>(args: &'a [Word], value_opts: &[&str]) -> Split<'a> {
    let mut opts = Vec::new();
    let mut operands = Vec::new();
    let mut dynamic_opts = false;
    let mut end_of_opts = false;
    let mut i = 0;
    while let Some(word) = args.get(i) {
        i += 1;
        let Some(arg) = word.lit() else {
            if matches!(
                word.cands.first().and_then(|c| c.0.first()),
                Some(Seg::Unknown { .. })
            ) {
                dynamic_opts = true;
            }
            operands.push(word);
            continue;
        };
        if end_of_opts || arg == "-" || !arg.starts_with('-') {
            operands.push(word);
            continue;
        }
        if arg == "--" {
            end_of_opts = true;
            continue;
        }
        if value_opts.contains(&arg.as_str()) {
            i += 1;
        }
        opts.push(arg);
    }
    Split {
        opts,
        operands,
        dynamic_opts,
    }
}

/// Whether `arg` is an unambiguous GNU abbreviation (at least `--x`) of the long option `full`.
pub(crate) fn long_opt(arg: &str, full: &str) -> bool {
    let name = arg.split('=').next().unwrap_or(arg);
    name.len() >= 3 && full.starts_with(name)
}

/// A short-option cluster (`-rf`, `-vR`) containing one of `letters`.
fn short_cluster_has(arg: &str, letters: &[char]) -> bool {
    !arg.starts_with("--") && arg.starts_with('-') && arg.contains(letters)
}

/// Rule ids for the three kinds of precious path; `home: None` leaves the home directory alone.
pub(crate) struct PreciousRules {
    root: Rule,
    home: Option<Rule>,
    system: Rule,
}

/// The rules of a recursive delete (`rm -rf`, and the commands that delete as much).
pub(crate) const DELETE_RULES: PreciousRules = PreciousRules {
    root: Rule::RmRoot,
    home: Some(Rule::RmHome),
    system: Rule::RmSystemDir,
};

impl PreciousRules {
    fn for_danger(&self, danger: &Danger) -> Option<Rule> {
        match danger {
            Danger::Root => Some(self.root),
            Danger::Home => self.home,
            Danger::SystemDir(_) => Some(self.system),
        }
    }
}

/// Whether some value of the word may name a device: one that starts with an unknown we cannot
/// see, or whose static prefix already lies under `/dev`. Relative paths and other absolute paths
/// are files.
pub(crate) fn may_be_device(word: &Word) -> bool {
    word.cands.iter().any(|res| match res.0.first() {
        Some(Seg::Unknown { .. }) => true,
        Some(Seg::Text(t)) if t.starts_with('/') => {
            paths::is_under_dev(&paths::AbsPath::root().join(t))
        }
        _ => false,
    })
}

impl Analyzer {
    /// Applies every rule to one effective command (`argv[0]` is the command word).
    pub(crate) fn apply_rules(
        &mut self,
        name: &str,
        shown: &str,
        argv: &[Word],
        stdin: &Stdin,
        scope: &mut Scope,
        depth: usize,
    ) {
        let args = argv.get(1..).unwrap_or_default();
        self.record_command_writes(name, shown, args, stdin, scope.cwd.as_ref());
        match name {
            "rm" => self.rule_rm(shown, args, scope),
            "chmod" | "chown" | "chgrp" => self.rule_chmod(name, shown, args, scope),
            "find" => self.rule_find(shown, args, scope, depth),
            "dd" => self.rule_dd(shown, args, scope),
            "shred" | "tee" | "cp" | "install" | "blkdiscard" => {
                self.rule_device_operand(name, shown, args, scope)
            }
            "wipefs" | "mkfs" | "mke2fs" | "mkswap" | "mkdosfs" | "mkntfs" | "mkexfatfs" => {
                self.rule_mkfs(name, shown, args, scope)
            }
            n if n.starts_with("mkfs.") => self.rule_mkfs(name, shown, args, scope),
            "shutdown" | "reboot" | "halt" | "poweroff" | "init" | "telinit" | "systemctl"
            | "loginctl" | "kexec" | "busctl" | "dbus-send" | "gdbus" => {
                self.rule_power(name, shown, args)
            }
            "terraform" | "tofu" | "terragrunt" => self.rule_terraform(shown, args),
            "kubectl" | "oc" => self.rule_kubectl(shown, args, stdin),
            "dropdb" | "mysqladmin" | "redis-cli" | "keydb-cli" | "valkey-cli" => {
                self.rule_db_admin(name, shown, args, stdin)
            }
            "kill" | "pkill" | "killall" | "killall5" => self.rule_kill(name, shown, args),
            "sgdisk" | "gdisk" | "parted" | "fdisk" | "sfdisk" | "cfdisk" => {
                self.rule_partition(name, shown, args, stdin, scope)
            }
            "cryptsetup" | "nvme" | "badblocks" | "hdparm" => {
                self.rule_device_erase(name, shown, args, scope)
            }
            "helm" => self.rule_helm(shown, args),
            "aws" => self.rule_aws(shown, args),
            "gcloud" | "gsutil" | "az" | "gh" => self.rule_cloud(name, shown, args),
            "pulumi" => self.rule_pulumi(shown, args),
            "docker" | "podman" | "nerdctl" => self.rule_docker(shown, args),
            "git" => {
                self.rule_git(shown, args);
                self.rule_git_clean(shown, args, scope.cwd.as_ref());
            }
            "rsync" => self.rule_rsync(shown, args, scope.cwd.as_ref()),
            "tar" | "gtar" => self.rule_tar(shown, args, scope.cwd.as_ref()),
            n if sql::is_sql_client(n) || sql::is_mongo_client(n) => {
                self.rule_sql(name, shown, args, stdin)
            }
            "cd" | "pushd" | "popd" => change_dir(name, args, scope),
            "source" | "." => self.rule_source(shown, args, scope, depth),
            // `set -- a b`: new positional parameters.
            "set" if args.first().and_then(Word::lit).as_deref() == Some("--") => {
                for n in 1..10 {
                    scope.vars.remove(&n.to_string());
                }
                for (n, arg) in args[1..].iter().enumerate() {
                    scope.vars.insert((n + 1).to_string(), arg.cands.clone());
                }
                scope.positional = Some(args[1..].to_vec());
            }
            "truncate" => {
                let split = split_args(args, &["-s", "--size", "-r", "--reference"]);
                for operand in split.operands {
                    self.report_dynamic_argument(shown, operand, scope.cwd.as_ref());
                }
                self.rule_device_erase(name, shown, args, scope);
            }
            n if is_interpreter(n) || super::interpreters::is_awk(n) => {
                self.rule_interpreter_code(name, shown, args, stdin, scope, depth);
            }
            // Strings that the shell runs later: alias bodies (expanded by `sh`/dash even
            // non-interactively) and trap actions.
            "alias" => self.define_aliases(shown, args, scope, depth),
            "unalias" => {
                if args.iter().any(|w| w.lit().as_deref() == Some("-a")) {
                    scope.aliases.clear();
                }
                for word in args.iter().filter_map(Word::lit) {
                    scope.aliases.remove(&word);
                }
            }
            "trap" => {
                let split = split_args(args, &[]);
                if let Some(action) = split.operands.first() {
                    for value in action.cands.iter().take(2) {
                        self.analyse_nested(&value.render(), scope, depth + 1);
                    }
                }
            }
            "export" | "local" | "declare" | "typeset" | "readonly" => {
                // `export X`, `declare -x X`: shells the step starts see X.
                let exports = name == "export"
                    || args
                        .iter()
                        .filter_map(Word::lit)
                        .any(|a| a.starts_with('-') && !a.starts_with("--") && a.contains('x'));
                let unexports = args.iter().filter_map(Word::lit).any(|a| a == "-n");
                for word in args {
                    let var = match split_assignment(word) {
                        Some((var, value)) => {
                            scope.vars.insert(var.clone(), value);
                            var
                        }
                        None => match word.lit() {
                            Some(var)
                                if !var.is_empty()
                                    && var
                                        .chars()
                                        .all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                            {
                                var
                            }
                            _ => continue,
                        },
                    };
                    if exports && !unexports {
                        scope.exported.insert(var);
                    } else if unexports {
                        scope.exported.remove(&var);
                    }
                }
            }
            _ => {}
        }
    }

    fn rule_rm(&mut self, shown: &str, args: &[Word], scope: &Scope) {
        let split = split_args(args, &[]);
        let recursive = split.dynamic_opts
            || split
                .opts
                .iter()
                .any(|o| short_cluster_has(o, &['r', 'R']) || long_opt(o, "--recursive"));
        if split
            .opts
            .iter()
            .any(|o| o.starts_with("--") && long_opt(o, "--no-preserve-root"))
        {
            self.report(
                Rule::RmNoPreserveRoot,
                format!("`{shown}` passes --no-preserve-root, disabling rm's protection of /"),
            );
        }
        // A non-recursive `rm /` or `rm /usr` fails on a directory, so only recursive deletes
        // of precious directories are findings.
        if !recursive {
            return;
        }
        for operand in &split.operands {
            let before = self.findings_len();
            self.report_precious(shown, operand, scope.cwd.as_ref(), "deletes", &DELETE_RULES);
            if self.findings_len() == before {
                self.report_dynamic_argument(shown, operand, scope.cwd.as_ref());
            }
        }
    }

    /// Reports each precious path a target word may name.
    pub(crate) fn report_precious(
        &mut self,
        shown: &str,
        operand: &Word,
        cwd: Option<&paths::AbsPath>,
        verb: &str,
        rules: &PreciousRules,
    ) {
        for target in paths::targets(operand, cwd) {
            let Some(danger) = paths::classify(&target.path) else {
                continue;
            };
            let Some(rule) = rules.for_danger(&danger) else {
                continue;
            };
            let reason = if target.via_empty {
                format!(
                    "`{shown}` {verb} {} when a variable in `{}` is empty or unset (guard it \
                     with ${{VAR:?}})",
                    danger.describe(),
                    operand.raw
                )
            } else if target.path.climbed {
                format!(
                    "`{shown}` {verb} {} when the step runs near `/` (`{}` climbs out of its \
                     working directory)",
                    danger.describe(),
                    operand.raw
                )
            } else {
                format!("`{shown}` {verb} {}", danger.describe())
            };
            self.report(rule, reason);
        }
    }

    /// Reports a target of a destructive-capable command that is only known at run time: a
    /// value with a run-time part, or a relative path in a directory only known at run time
    /// (`cd "$(dirname …)" && rm -rf *` may delete anything).
    pub(crate) fn report_dynamic_argument(
        &mut self,
        shown: &str,
        operand: &Word,
        cwd: Option<&paths::AbsPath>,
    ) {
        let dynamic = operand
            .cands
            .iter()
            .any(|c| c.0.iter().any(|seg| matches!(seg, Seg::Unknown { .. })));
        let what = if dynamic {
            "which is only known at run time"
        } else if paths::in_run_time_dir(operand, cwd) {
            "in a directory that a `cd` made only known at run time"
        } else {
            return;
        };
        self.report(
            Rule::DynamicArgument,
            format!(
                "`{shown}` acts on `{}`, {what}, so it cannot be shown to be safe",
                words::excerpt(&operand.raw)
            ),
        );
    }

    /// `source FILE` / `. FILE` runs the file in this shell: opaque when the file is only known
    /// at run time or is a stream (`source <(curl …)`, `. /dev/stdin`).
    fn rule_source(&mut self, shown: &str, args: &[Word], scope: &mut Scope, depth: usize) {
        let Some(file) = args.first() else { return };
        let stream = file
            .lit()
            .is_some_and(|f| f.starts_with("/dev/") || f.starts_with("/proc/") || f == "-");
        if !stream {
            let rest = args.get(1..).unwrap_or_default();
            self.run_written(
                shown,
                file,
                rest,
                super::written::Runner::Source,
                scope,
                depth,
            );
        }
        if stream || file.lit().is_none() {
            self.report(
                Rule::DynamicCode,
                format!(
                    "`{shown}` runs code from `{}`, which is only known at run time, so it \
                     cannot be shown to be safe",
                    words::excerpt(&file.raw)
                ),
            );
        }
    }

    fn rule_chmod(&mut self, name: &str, shown: &str, args: &[Word], scope: &Scope) {
        let split = split_args(args, &[]);
        // Only -R is recursive here: chmod's -r is a mode ("remove read").
        let recursive = split
            .opts
            .iter()
            .any(|o| short_cluster_has(o, &['R']) || long_opt(o, "--recursive"));
        if !recursive {
            return;
        }
        let verb = match name {
            "chmod" => "recursively changes the permissions of",
            "chown" => "recursively changes the owner of",
            _ => "recursively changes the group of",
        };
        for (n, operand) in split.operands.iter().enumerate() {
            let before = self.findings_len();
            self.report_precious(
                shown,
                operand,
                scope.cwd.as_ref(),
                verb,
                // `chown -R "$USER" ~` is the usual repair of a home directory, not damage.
                &PreciousRules {
                    root: Rule::RecursivePermissionChange,
                    home: None,
                    system: Rule::RecursivePermissionChange,
                },
            );
            // The first operand is the mode, owner or group, not a path.
            if n > 0 && self.findings_len() == before {
                self.report_dynamic_argument(shown, operand, scope.cwd.as_ref());
            }
        }
    }

    fn rule_find(&mut self, shown: &str, args: &[Word], scope: &mut Scope, depth: usize) {
        // GNU find's own leading options come before the start paths.
        let mut i = 0;
        while let Some(a) = args.get(i).and_then(Word::lit) {
            match a.as_str() {
                "-H" | "-L" | "-P" => i += 1,
                "-D" => i += 2,
                o if o.starts_with("-O") => i += 1,
                _ => break,
            }
        }
        let mut starts: Vec<Word> = Vec::new();
        while let Some(word) = args.get(i) {
            let expression = word
                .lit()
                .is_some_and(|a| a.starts_with('-') || a == "(" || a == "!" || a == ",");
            if expression {
                break;
            }
            starts.push(word.clone());
            i += 1;
        }
        if starts.is_empty() {
            starts.push(Word::literal("."));
        }
        let expr = args.get(i..).unwrap_or_default();
        let mut deletes = false;
        let mut j = 0;
        while let Some(word) = expr.get(j) {
            j += 1;
            let Some(a) = word.lit() else { continue };
            match a.as_str() {
                "-delete" => deletes = true,
                "-exec" | "-execdir" | "-ok" | "-okdir" => {
                    let end = expr[j..]
                        .iter()
                        .position(|w| matches!(w.lit().as_deref(), Some(";" | "+")))
                        .map_or(expr.len(), |p| j + p);
                    let command = &expr[j..end];
                    if command.first().and_then(Word::lit).is_some_and(|c| {
                        matches!(basename(&c), "rm" | "shred" | "unlink" | "rmdir")
                    }) {
                        deletes = true;
                    }
                    // The executed command is a command like any other. The first path find
                    // hands it is a start path itself, so that is what `{}` stands for.
                    for start in starts.iter().take(4) {
                        let command: Vec<Word> = command
                            .iter()
                            .map(|w| {
                                if w.lit().as_deref() == Some("{}") {
                                    start.clone()
                                } else {
                                    w.clone()
                                }
                            })
                            .collect();
                        self.check_argv(&command, &Stdin::default(), scope, depth + 1);
                    }
                    j = end + 1;
                }
                _ => {}
            }
        }
        if !deletes {
            return;
        }
        for start in &starts {
            let before = self.findings_len();
            self.report_precious(
                shown,
                start,
                scope.cwd.as_ref(),
                "deletes everything under",
                &PreciousRules {
                    root: Rule::FindDelete,
                    home: Some(Rule::FindDelete),
                    system: Rule::FindDelete,
                },
            );
            if self.findings_len() == before {
                self.report_dynamic_argument(shown, start, scope.cwd.as_ref());
            }
        }
    }

    fn rule_dd(&mut self, shown: &str, args: &[Word], scope: &Scope) {
        for word in args {
            let Some(res) = word.cands.first() else {
                continue;
            };
            let Some(Seg::Text(first)) = res.0.first() else {
                continue;
            };
            let Some(rest) = first.strip_prefix("of=") else {
                continue;
            };
            let mut target = Resolved::text(rest);
            for seg in res.0.iter().skip(1) {
                target.push_seg(seg.clone());
            }
            let target = Word {
                raw: word.raw.clone(),
                cands: vec![target],
            };
            self.report_dynamic_argument(shown, &target, scope.cwd.as_ref());
            self.check_write_target(&target, shown, scope.cwd.as_ref());
            for path in paths::static_paths(&target, scope.cwd.as_ref()) {
                if paths::is_under_dev(&path) && !paths::is_harmless_device(&path) {
                    self.report(
                        Rule::DdDevice,
                        format!("`{shown}` overwrites the device {}", path.display()),
                    );
                }
            }
        }
    }

    /// `shred /dev/sda`, `tee /dev/sda`, `cp disk.img /dev/sda`, `blkdiscard /dev/sda`.
    fn rule_device_operand(&mut self, name: &str, shown: &str, args: &[Word], scope: &Scope) {
        let split = split_args(
            args,
            &[
                "-n",
                "--iterations",
                "-s",
                "--size",
                "-o",
                "--offset",
                "-l",
                "--length",
                "-p",
                "--step",
                "-m",
                "--mode",
                "-g",
                "--group",
                "-t",
                "--target-directory",
                "-S",
                "--suffix",
            ],
        );
        for operand in split.operands {
            if matches!(name, "shred" | "blkdiscard") {
                self.report_dynamic_argument(shown, operand, scope.cwd.as_ref());
            }
            if matches!(name, "tee" | "cp" | "install") {
                for path in paths::static_paths(operand, scope.cwd.as_ref()) {
                    if paths::is_kernel_interface(&path) {
                        self.report(
                            Rule::KernelInterfaceWrite,
                            format!(
                                "`{shown}` writes to the kernel control file {}",
                                path.display()
                            ),
                        );
                    }
                }
            }
            for path in paths::static_paths(operand, scope.cwd.as_ref()) {
                if paths::is_block_device(&path) {
                    let (rule, verb) = match name {
                        "shred" => (Rule::ShredDevice, "shreds"),
                        "blkdiscard" => (Rule::ShredDevice, "discards every block of"),
                        _ => (Rule::BlockDeviceWrite, "overwrites"),
                    };
                    self.report(
                        rule,
                        format!("`{shown}` {verb} the block device {}", path.display()),
                    );
                }
            }
        }
    }

    fn rule_mkfs(&mut self, name: &str, shown: &str, args: &[Word], scope: &Scope) {
        let rule = if name == "wipefs" {
            Rule::Wipefs
        } else {
            Rule::Mkfs
        };
        let verb = if name == "wipefs" {
            "erases the filesystem signatures of"
        } else {
            "creates a filesystem on (erasing)"
        };
        let split = split_args(args, &[]);
        let mut found = false;
        for operand in &split.operands {
            for path in paths::static_paths(operand, scope.cwd.as_ref()) {
                if paths::is_under_dev(&path) && !paths::is_harmless_device(&path) {
                    found = true;
                    self.report(
                        rule,
                        format!("`{shown}` {verb} the device {}", path.display()),
                    );
                }
            }
        }
        // The device is the last operand; when we cannot see it, we cannot show it is an image
        // file rather than a disk.
        if !found
            && let Some(last) = split.operands.last()
            && last.lit().is_none()
            && may_be_device(last)
        {
            self.report(
                rule,
                format!(
                    "`{shown}` {verb} a device chosen at run time (`{}`)",
                    last.raw
                ),
            );
        }
    }

    fn rule_power(&mut self, name: &str, shown: &str, args: &[Word]) {
        let split = split_args(
            args,
            &[
                "-t",
                "--type",
                "-p",
                "--property",
                "-H",
                "--host",
                "-M",
                "--machine",
                "-s",
                "--signal",
                "-n",
                "--lines",
                "-o",
                "--output",
                "--root",
                "--message",
            ],
        );
        let operands: Vec<String> = split.operands.iter().filter_map(|w| w.lit()).collect();
        let op = |n: usize| operands.get(n).map(String::as_str);
        let hit = match name {
            "shutdown" | "reboot" | "halt" | "poweroff" => !split
                .opts
                .iter()
                .any(|o| matches!(o.as_str(), "-c" | "--help" | "--version")),
            "init" | "telinit" => matches!(op(0), Some("0" | "6" | "1" | "s" | "S")),
            "systemctl" | "loginctl" => match op(0) {
                Some(
                    "poweroff"
                    | "reboot"
                    | "halt"
                    | "kexec"
                    | "soft-reboot"
                    | "suspend"
                    | "hibernate"
                    | "hybrid-sleep"
                    | "suspend-then-hibernate"
                    | "sleep"
                    | "rescue"
                    | "emergency",
                ) => true,
                Some("isolate" | "start" | "restart" | "reload-or-restart" | "try-restart") => {
                    operands.iter().skip(1).any(|u| {
                        let unit = u.strip_suffix(".target").unwrap_or(u);
                        matches!(
                            unit,
                            "poweroff"
                                | "reboot"
                                | "halt"
                                | "kexec"
                                | "soft-reboot"
                                | "suspend"
                                | "hibernate"
                                | "hybrid-sleep"
                                | "sleep"
                                | "rescue"
                                | "emergency"
                                | "ctrl-alt-del"
                                | "exit"
                        ) && (u.ends_with(".target") || op(0) == Some("isolate"))
                    })
                }
                _ => false,
            },
            "kexec" => split
                .opts
                .iter()
                .any(|o| o == "-e" || o == "--exec" || o == "-f" || o == "--force"),
            "busctl" | "dbus-send" | "gdbus" => {
                let all: Vec<String> = args.iter().filter_map(Word::lit).collect();
                all.iter().any(|a| a.contains("login1"))
                    && all.iter().any(|a| {
                        let method = a.rsplit('.').next().unwrap_or(a).to_ascii_lowercase();
                        matches!(
                            method.as_str(),
                            "poweroff" | "reboot" | "halt" | "suspend" | "hibernate" | "kexec"
                        )
                    })
            }
            _ => false,
        };
        if hit {
            self.report(
                Rule::SystemPower,
                format!("`{shown}` shuts down or reboots the machine"),
            );
        }
    }

    fn rule_terraform(&mut self, shown: &str, args: &[Word]) {
        let lits: Vec<String> = args.iter().filter_map(Word::lit).collect();
        // Go's flag package: `-name`, `--name`, `-name=value`, `-name value` (non-booleans).
        let flag = |a: &str| -> Option<(String, Option<String>)> {
            let bare = a.strip_prefix("--").or_else(|| a.strip_prefix('-'))?;
            Some(match bare.split_once('=') {
                Some((n, v)) => (n.to_owned(), Some(v.to_owned())),
                None => (bare.to_owned(), None),
            })
        };
        let mut operands: Vec<&str> = Vec::new();
        let mut destroy_flag = false;
        let mut out: Option<String> = None;
        let mut i = 0;
        while let Some(a) = lits.get(i) {
            i += 1;
            match flag(a) {
                Some((name, value)) => match name.as_str() {
                    "destroy" => {
                        destroy_flag = value.as_deref().is_none_or(|v| {
                            !matches!(v, "false" | "0" | "f" | "F" | "FALSE" | "False")
                        });
                    }
                    "out" => {
                        out = value.or_else(|| {
                            i += 1;
                            lits.get(i - 1).cloned()
                        });
                    }
                    "var" | "var-file" | "target" | "replace" | "lock-timeout" | "parallelism"
                    | "state" | "state-out" | "backup"
                        if value.is_none() =>
                    {
                        i += 1;
                    }
                    _ => {}
                },
                None => operands.push(a),
            }
        }
        if destroy_flag
            && operands.first() == Some(&"plan")
            && let Some(plan) = out
        {
            self.destroy_plans.push(plan);
        }
        let applies_destroy_plan = operands.first() == Some(&"apply")
            && operands
                .iter()
                .skip(1)
                .any(|p| self.destroy_plans.iter().any(|d| d == p));
        let hit = match operands.as_slice() {
            ["destroy" | "destroy-all", ..] => true,
            ["run-all" | "run", "destroy", ..] => true,
            ["state", "rm" | "remove", ..] => true,
            ["workspace", "delete", ..] => true,
            ["apply" | "run-all" | "run", ..] => destroy_flag || applies_destroy_plan,
            _ => false,
        };
        if hit {
            self.report(
                Rule::TerraformDestroy,
                format!("`{shown}` destroys the managed infrastructure"),
            );
        }
    }

    fn rule_kubectl(&mut self, shown: &str, args: &[Word], stdin: &Stdin) {
        let split = split_args(
            args,
            &[
                "-n",
                "--namespace",
                "--context",
                "--cluster",
                "--kubeconfig",
                "-s",
                "--server",
                "--user",
                "--token",
                "--as",
                "--as-group",
                "--request-timeout",
                "--certificate-authority",
                "--client-key",
                "--client-certificate",
                "-l",
                "--selector",
                "-f",
                "--filename",
                "-o",
                "--output",
                "--field-selector",
                "--grace-period",
                "--timeout",
                "-k",
                "--kustomize",
                "--cache-dir",
                "--tls-server-name",
                "-v",
            ],
        );
        let operands: Vec<String> = split.operands.iter().filter_map(|w| w.lit()).collect();
        if operands.first().map(String::as_str) == Some("drain") {
            self.report(
                Rule::KubectlDelete,
                format!("`{shown}` drains a node, evicting every pod on it"),
            );
            return;
        }
        if operands.first().map(String::as_str) != Some("delete") {
            return;
        }
        // Kinds are case-insensitive and may carry a version and group (`namespaces.v1`);
        // `pods,ns` and `ns/prod` name several or one.
        let precious = |kinds: &str| {
            kinds.split(',').any(|kind| {
                let kind = kind.split('/').next().unwrap_or(kind);
                let kind = kind.split('.').next().unwrap_or(kind).to_ascii_lowercase();
                matches!(
                    kind.as_str(),
                    "namespace"
                        | "namespaces"
                        | "ns"
                        | "project"
                        | "projects"
                        | "persistentvolume"
                        | "persistentvolumes"
                        | "pv"
                        | "persistentvolumeclaim"
                        | "persistentvolumeclaims"
                        | "pvc"
                        | "node"
                        | "nodes"
                        | "no"
                        | "customresourcedefinition"
                        | "customresourcedefinitions"
                        | "crd"
                        | "crds"
                )
            })
        };
        let from_stdin = stdin.texts.iter().any(|t| {
            t.lines().any(|l| {
                let l = l.trim().to_ascii_lowercase();
                l.strip_prefix("kind:")
                    .is_some_and(|k| precious(k.trim().trim_matches(['"', '\''])))
            })
        });
        let namespace = operands.iter().skip(1).any(|kinds| precious(kinds)) || from_stdin;
        let all = split.opts.iter().any(|o| {
            matches!(
                o.as_str(),
                "--all" | "--all=true" | "--all-namespaces" | "--all-namespaces=true" | "-A"
            )
        });
        if namespace {
            self.report(
                Rule::KubectlDelete,
                format!(
                    "`{shown}` deletes a namespace, node, volume or resource definition and \
                     everything in it"
                ),
            );
        }
        if all {
            self.report(
                Rule::KubectlDelete,
                format!("`{shown}` deletes every matching resource (--all/--all-namespaces)"),
            );
        }
    }

    fn rule_sql(&mut self, name: &str, shown: &str, args: &[Word], stdin: &Stdin) {
        let mongo = sql::is_mongo_client(name);
        let check = |text: &str| {
            if mongo {
                sql::mongo_danger(text)
            } else {
                sql::sql_danger(text)
            }
        };
        // Every argument counts, whatever option carries it (-c, -e, --execute, --query,
        // --eval, -Q, or positional SQL): a file name or a connection string never reads as a
        // DROP statement, so this is both simpler and harder to dodge than per-client grammars.
        for word in args {
            for res in &word.cands {
                let text = res.render();
                // `--command=SQL` and `-cSQL`: look at the value too, since a leading `--` would
                // read as an SQL comment.
                let value = match text.strip_prefix('-') {
                    Some(rest) if rest.starts_with('-') => rest.split_once('=').map(|(_, v)| v),
                    Some(rest) => rest.get(1..),
                    None => None,
                };
                if let Some((rule, kind)) = check(&text).or_else(|| value.and_then(check)) {
                    self.report(rule, format!("`{shown}` runs {kind} against the database"));
                }
            }
        }
        for text in &stdin.texts {
            if let Some((rule, kind)) = check(text) {
                self.report(
                    rule,
                    format!(
                        "`{shown}` is fed {kind} on its standard input (`{}`)",
                        words::excerpt(text)
                    ),
                );
            }
        }
    }

    fn rule_db_admin(&mut self, name: &str, shown: &str, args: &[Word], stdin: &Stdin) {
        let split = split_args(
            args,
            &[
                "-h",
                "--host",
                "-p",
                "-P",
                "--port",
                "-U",
                "--username",
                "-u",
                "--user",
                "-a",
                "-n",
            ],
        );
        let operands: Vec<String> = split.operands.iter().filter_map(|w| w.lit()).collect();
        match name {
            "dropdb" => {
                if !operands.is_empty() {
                    self.report(
                        Rule::SqlDrop,
                        format!("`{shown}` drops a database (DROP DATABASE)"),
                    );
                }
            }
            "mysqladmin" => {
                if operands.iter().any(|o| o.eq_ignore_ascii_case("drop")) {
                    self.report(
                        Rule::SqlDrop,
                        format!("`{shown}` drops a database (DROP DATABASE)"),
                    );
                }
            }
            _ => {
                // Any token, so `EVAL "redis.call('flushall')" 0` counts too.
                let flush = |t: &str| {
                    t.split(|c: char| !c.is_ascii_alphanumeric()).any(|w| {
                        w.eq_ignore_ascii_case("flushall") || w.eq_ignore_ascii_case("flushdb")
                    })
                };
                if operands.iter().any(|o| flush(o)) || stdin.texts.iter().any(|t| flush(t)) {
                    self.report(
                        Rule::DbFlush,
                        format!("`{shown}` deletes every key (FLUSHALL/FLUSHDB)"),
                    );
                }
            }
        }
    }
}

impl Analyzer {
    /// `find / | xargs rm -f`: items that are the start paths of `find` stand for every path
    /// under them, so deleting them one by one deletes the tree.
    pub(crate) fn rule_listed_delete(
        &mut self,
        shown: &str,
        command: &[Word],
        items: &[Word],
        scope: &Scope,
    ) {
        let deletes = command
            .iter()
            .take(4)
            .filter_map(Word::lit)
            .any(|w| matches!(basename(&w), "rm" | "unlink" | "shred" | "rmdir" | "srm"));
        if !deletes {
            return;
        }
        for item in items {
            self.report_precious(
                shown,
                item,
                scope.cwd.as_ref(),
                "deletes everything `find` lists under",
                &PreciousRules {
                    root: Rule::FindDelete,
                    home: Some(Rule::FindDelete),
                    system: Rule::FindDelete,
                },
            );
        }
    }
}

/// `cd DIR`, `cd -`, `cd`, `pushd DIR`, `popd`: the working directory the next commands see.
/// A directory only known at run time is remembered as such (not forgotten as the workspace),
/// so that `rm -rf *` after `cd "$(dirname …)"` is seen to act on a run-time target.
fn change_dir(name: &str, args: &[Word], scope: &mut Scope) {
    let split = split_args(args, &[]);
    let operand = split.operands.first().copied();
    let next = match (name, operand) {
        ("popd", None) => scope
            .dir_stack
            .pop()
            .unwrap_or_else(|| Some(paths::AbsPath::run_time())),
        // `pushd` alone swaps the top two, `pushd +N`/`popd -N` rotate: not followed.
        ("pushd", None) | ("popd", Some(_)) => Some(paths::AbsPath::run_time()),
        (_, None) => Some(paths::AbsPath::home()),
        (_, Some(dir)) if dir.lit().as_deref() == Some("-") => scope.oldpwd.clone(),
        ("pushd", Some(dir)) if dir.lit().is_some_and(|d| d.starts_with(['+', '-'])) => {
            Some(paths::AbsPath::run_time())
        }
        (_, Some(dir)) => Some(paths::cd_target(dir, scope.cwd.as_ref())),
    };
    if name == "pushd" {
        if scope.dir_stack.len() >= MAX_DIR_STACK {
            // The oldest is forgotten: popping that deep gives a run-time directory.
            scope.dir_stack.remove(0);
        }
        scope.dir_stack.push(scope.cwd.clone());
    }
    scope.oldpwd = std::mem::replace(&mut scope.cwd, next);
}

/// Most directories of `pushd` we remember; hostile scripts could push without end.
const MAX_DIR_STACK: usize = 16;

/// `NAME=value` as given to `export`/`local`/`declare`: the name and the value's candidates.
fn split_assignment(word: &Word) -> Option<(String, Vec<Resolved>)> {
    let mut name = None;
    let mut values = Vec::new();
    for res in &word.cands {
        let Some(Seg::Text(first)) = res.0.first() else {
            return None;
        };
        let (n, v) = first.split_once('=')?;
        if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return None;
        }
        name = Some(n.to_owned());
        let mut value = Resolved::text(v);
        for seg in res.0.iter().skip(1) {
            match seg {
                Seg::Text(t) => value.push_text(t),
                other => value.push_seg(other.clone()),
            }
        }
        values.push(value);
    }
    name.map(|n| (n, values))
}

/// Interpreters whose program can be given inline (`-c`/`-e`) or on standard input.
pub(crate) fn is_interpreter(name: &str) -> bool {
    let base = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    matches!(
        base,
        "python"
            | "pypy"
            | "perl"
            | "ruby"
            | "node"
            | "nodejs"
            | "php"
            | "lua"
            | "luajit"
            | "tclsh"
            | "Rscript"
            | "deno"
            | "bun"
            | "osascript"
    )
}
