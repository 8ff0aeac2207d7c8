//! Disks, kernel control files, processes and power: partition tables, device erasure,
//! `kill -1` and friends.

use super::Rule;
use super::commands::{OptSpec, Stdin, getopt_all};
use super::paths;
use super::rules::{long_opt, may_be_device};
use super::words::Word;
use super::{Analyzer, Scope};

/// The device a word names, for messages: a static path under `/dev` that is not harmless
/// (`/dev/null`), or a value only known at run time that may be one.
pub(crate) fn device_named(word: &Word, scope: &Scope) -> Option<String> {
    for path in paths::static_paths(word, scope.cwd.as_ref()) {
        if paths::is_under_dev(&path) && !paths::is_harmless_device(&path) {
            return Some(path.display());
        }
    }
    (word.lit().is_none() && may_be_device(word))
        .then(|| format!("a device chosen at run time (`{}`)", word.raw))
}

fn first_device(operands: &[&Word], scope: &Scope) -> Option<String> {
    operands.iter().find_map(|w| device_named(w, scope))
}

fn lits(operands: &[&Word]) -> Vec<String> {
    operands.iter().filter_map(|w| w.lit()).collect()
}

/// Whether a long option (any unambiguous abbreviation, `=value` allowed) is one of `names`.
fn long_is(option: &str, names: &[&str]) -> bool {
    option.starts_with("--") && names.iter().any(|n| long_opt(option, n))
}

impl Analyzer {
    /// `sgdisk`, `gdisk`, `parted`, `fdisk`, `cfdisk`, `sfdisk`: rewriting a disk's partition table.
    pub(crate) fn rule_partition(
        &mut self,
        name: &str,
        shown: &str,
        args: &[Word],
        stdin: &Stdin,
        scope: &Scope,
    ) {
        let hit = match name {
            "sgdisk" => {
                let (opts, operands) = getopt_all(
                    args,
                    &OptSpec {
                        short_values: "aAbcdhilmnNrRtTuU",
                        short_optional: "",
                        long_values: &[],
                    },
                );
                let pretend = opts
                    .iter()
                    .any(|(o, _)| o == "-P" || long_is(o, &["--pretend"]));
                let writes = opts.iter().any(|(o, _)| {
                    matches!(
                        o.as_str(),
                        "-Z" | "-z" | "-o" | "-d" | "-n" | "-N" | "-g" | "-l" | "-R" | "-m" | "-h"
                    ) || long_is(
                        o,
                        &[
                            "--zap-all",
                            "--zap",
                            "--clear",
                            "--delete",
                            "--new",
                            "--largest-new",
                            "--mbrtogpt",
                            "--load-backup",
                            "--replicate",
                            "--gpttombr",
                            "--hybrid",
                        ],
                    )
                });
                (writes && !pretend)
                    .then(|| first_device(&operands, scope))
                    .flatten()
            }
            "parted" => {
                let (opts, operands) = getopt_all(
                    args,
                    &OptSpec {
                        short_values: "a",
                        short_optional: "",
                        long_values: &["--align"],
                    },
                );
                if opts
                    .iter()
                    .any(|(o, _)| o == "-l" || long_is(o, &["--list"]))
                {
                    return;
                }
                let device = operands.first().and_then(|w| device_named(w, scope));
                let mut commands: Vec<String> = lits(operands.get(1..).unwrap_or_default());
                commands.extend(stdin.texts.iter().cloned());
                let destructive = commands.iter().flat_map(|c| {
                    c.split_whitespace()
                        .map(str::to_ascii_lowercase)
                        .collect::<Vec<_>>()
                });
                let mut hit = false;
                for word in destructive {
                    let prefix =
                        |full: &str, min: usize| word.len() >= min && full.starts_with(&word);
                    if word == "rm"
                        || prefix("mklabel", 3)
                        || prefix("mktable", 3)
                        || prefix("resizepart", 4)
                    {
                        hit = true;
                    }
                }
                hit.then_some(device).flatten()
            }
            "fdisk" | "gdisk" | "cfdisk" => {
                let (opts, operands) = getopt_all(
                    args,
                    &OptSpec {
                        short_values: "bcCHLSuoOwWt",
                        short_optional: "",
                        long_values: &[],
                    },
                );
                if opts.iter().any(|(o, _)| {
                    o == "-l" || o == "-x" || long_is(o, &["--list", "--list-details"])
                }) {
                    return;
                }
                let Some(device) = first_device(&operands, scope) else {
                    return;
                };
                // The interactive tools only write on `w`.
                let writes = stdin
                    .texts
                    .iter()
                    .any(|t| t.lines().any(|l| l.trim().eq_ignore_ascii_case("w")));
                if !writes && stdin.unknown {
                    self.report(
                        Rule::DynamicCode,
                        format!(
                            "`{shown}` edits the partition table of {device} with commands only \
                             known at run time, so it cannot be shown to be safe"
                        ),
                    );
                }
                writes.then_some(device)
            }
            "sfdisk" => {
                let (opts, operands) = getopt_all(
                    args,
                    &OptSpec {
                        short_values: "NXYOwWo",
                        short_optional: "",
                        long_values: &[
                            "--partno",
                            "--label",
                            "--label-nested",
                            "--backup-file",
                            "--wipe",
                            "--wipe-partitions",
                            "--output",
                        ],
                    },
                );
                let read_only = opts.iter().any(|(o, _)| {
                    matches!(
                        o.as_str(),
                        "-l" | "-F" | "-d" | "-J" | "-s" | "-g" | "-V" | "-T" | "-n" | "-h" | "-v"
                    ) || long_is(
                        o,
                        &[
                            "--list",
                            "--list-free",
                            "--dump",
                            "--json",
                            "--show-size",
                            "--show-geometry",
                            "--verify",
                            "--list-types",
                            "--no-act",
                            "--help",
                            "--version",
                            "--part-type",
                            "--part-label",
                            "--part-uuid",
                            "--part-attrs",
                        ],
                    )
                });
                let edits = opts.iter().any(|(o, _)| {
                    o == "-r"
                        || o == "-A"
                        || long_is(o, &["--delete", "--reorder", "--relocate", "--activate"])
                });
                // Any input on stdin is a new partition table.
                let fed = !stdin.texts.is_empty() || stdin.unknown;
                (!read_only && (edits || fed))
                    .then(|| first_device(&operands, scope))
                    .flatten()
            }
            _ => None,
        };
        if let Some(device) = hit {
            self.report(
                Rule::PartitionTable,
                format!("`{shown}` rewrites the partition table of {device}"),
            );
        }
    }

    /// `cryptsetup luksFormat|erase|open --type plain`, `nvme format|sanitize`, `badblocks -w`,
    /// `hdparm --security-erase`, `truncate` of a device.
    pub(crate) fn rule_device_erase(
        &mut self,
        name: &str,
        shown: &str,
        args: &[Word],
        scope: &Scope,
    ) {
        let hit = match name {
            "cryptsetup" => {
                let (opts, operands) = getopt_all(
                    args,
                    &OptSpec {
                        short_values: "chsdlSMbopiT",
                        short_optional: "",
                        long_values: &[
                            "--cipher",
                            "--hash",
                            "--key-size",
                            "--key-file",
                            "--keyfile-size",
                            "--key-slot",
                            "--type",
                            "--size",
                            "--offset",
                            "--skip",
                            "--iter-time",
                            "--tries",
                            "--pbkdf",
                            "--label",
                            "--header",
                            "--sector-size",
                        ],
                    },
                );
                let action = operands
                    .first()
                    .and_then(|w| w.lit())
                    .map(|a| a.to_ascii_lowercase())
                    .unwrap_or_default();
                let plain = opts.iter().any(|(o, v)| {
                    (o == "-M" || long_is(o, &["--type"]))
                        && v.as_deref()
                            .is_some_and(|v| v.eq_ignore_ascii_case("plain"))
                });
                let destructive = match action.as_str() {
                    "luksformat" | "erase" | "lukserase" | "create" | "plainopen" | "reencrypt" => {
                        true
                    }
                    "open" | "luksopen" => plain,
                    _ => false,
                };
                destructive
                    .then(|| first_device(operands.get(1..).unwrap_or_default(), scope))
                    .flatten()
            }
            "nvme" => {
                let operands: Vec<String> = args.iter().filter_map(Word::lit).collect();
                operands
                    .iter()
                    .find(|a| !a.starts_with('-'))
                    .filter(|sub| {
                        matches!(
                            sub.as_str(),
                            "format" | "sanitize" | "delete-ns" | "write-zeroes" | "format-nvm"
                        )
                    })
                    .map(|_| {
                        args.iter()
                            .find_map(|w| device_named(w, scope))
                            .unwrap_or_else(|| "an NVMe device".into())
                    })
            }
            "badblocks" => {
                let (opts, operands) = getopt_all(
                    args,
                    &OptSpec {
                        short_values: "bcdeiopt",
                        short_optional: "",
                        long_values: &[],
                    },
                );
                opts.iter()
                    .any(|(o, _)| o == "-w")
                    .then(|| first_device(&operands, scope))
                    .flatten()
            }
            "hdparm" => {
                let erase = args.iter().filter_map(Word::lit).any(|a| {
                    [
                        "--security-erase",
                        "--trim-sector-ranges",
                        "--write-sector",
                        "--make-bad-sector",
                        "--dco-restore",
                        "--fwdownload",
                    ]
                    .iter()
                    .any(|p| a.starts_with(p))
                });
                erase.then(|| {
                    args.iter()
                        .find_map(|w| device_named(w, scope))
                        .unwrap_or_else(|| "a disk".into())
                })
            }
            "truncate" => {
                let (_, operands) = getopt_all(
                    args,
                    &OptSpec {
                        short_values: "sr",
                        short_optional: "",
                        long_values: &["--size", "--reference"],
                    },
                );
                operands.iter().find_map(|w| {
                    paths::static_paths(w, scope.cwd.as_ref())
                        .into_iter()
                        .find(paths::is_block_device)
                        .map(|p| p.display())
                })
            }
            _ => None,
        };
        if let Some(device) = hit {
            self.report(
                Rule::DeviceErase,
                format!("`{shown}` erases or reformats {device}"),
            );
        }
    }

    /// `kill -9 -1`, `kill 1`, `killall5`, `pkill -9 .`, `pkill -u root`, `killall -r .`.
    pub(crate) fn rule_kill(&mut self, name: &str, shown: &str, args: &[Word]) {
        let what = match name {
            "kill" => kill_targets_everything(args),
            "killall5" => Some("every process"),
            "pkill" | "killall" => {
                let (opts, operands) = getopt_all(
                    args,
                    &OptSpec {
                        short_values: if name == "pkill" {
                            "gGPstuUFq"
                        } else {
                            "ousnyO"
                        },
                        short_optional: "",
                        long_values: &[
                            "--signal",
                            "--pgroup",
                            "--group",
                            "--parent",
                            "--session",
                            "--terminal",
                            "--euid",
                            "--uid",
                            "--pidfile",
                            "--ns",
                            "--nslist",
                            "--queue",
                            "--user",
                            "--older-than",
                            "--younger-than",
                            "--context",
                        ],
                    },
                );
                let regex = name == "pkill"
                    || opts
                        .iter()
                        .any(|(o, _)| o == "-r" || long_is(o, &["--regexp"]));
                let patterns = lits(&operands);
                let catch_all = patterns.iter().any(|p| {
                    let bare = p.trim_start_matches('^').trim_end_matches('$');
                    matches!(bare, "init" | "systemd") || (regex && regex_matches_everything(p))
                });
                let root = opts.iter().any(|(o, v)| {
                    (matches!(o.as_str(), "-u" | "-U")
                        || long_is(o, &["--euid", "--uid", "--user"]))
                        && v.as_deref()
                            .is_some_and(|v| v.split(',').any(|u| u == "root" || u == "0"))
                });
                (catch_all || (root && patterns.is_empty())).then_some("every process, or init")
            }
            _ => None,
        };
        if let Some(what) = what {
            self.report(
                Rule::MassKill,
                format!("`{shown}` kills {what}, taking the machine or container down"),
            );
        }
    }
}

/// Whether `kill ARGS` signals PID 1 or every process (`-1`): `kill -9 -1`, `kill -KILL -1`,
/// `kill -s KILL -- -1`, `kill 1`. Options end at the first non-option or `--`; a `-N` after the
/// signal is a process group or -1.
fn kill_targets_everything(args: &[Word]) -> Option<&'static str> {
    let mut signal_given = false;
    let mut operands_only = false;
    let mut i = 0;
    while let Some(word) = args.get(i) {
        i += 1;
        let Some(arg) = word.lit() else { continue };
        if !operands_only && arg == "--" {
            operands_only = true;
            continue;
        }
        if !operands_only && !signal_given && arg.starts_with('-') && arg.len() > 1 {
            match arg.as_str() {
                "-l" | "-L" | "--list" | "--table" => return None,
                "-s" | "-n" | "--signal" | "-q" | "--queue" => i += 1,
                "--timeout" => i += 2,
                _ => {}
            }
            signal_given = !matches!(arg.as_str(), "-q" | "--queue" | "--timeout" | "--verbose");
            continue;
        }
        match arg.trim().parse::<i64>() {
            Ok(-1) => return Some("every process it may signal (`-1`)"),
            Ok(1) => return Some("init (PID 1)"),
            _ => {}
        }
    }
    None
}

/// Whether a process-name regex matches every name: `.`, `.*`, `^`, `''`, `x*`, `(.)`, `.+`.
fn regex_matches_everything(pattern: &str) -> bool {
    let bare: String = pattern
        .chars()
        .filter(|c| !matches!(c, '^' | '$' | '(' | ')'))
        .collect();
    if bare.is_empty()
        || bare
            .chars()
            .all(|c| matches!(c, '.' | '*' | '+' | '?' | '|'))
    {
        return true;
    }
    // One atom that may repeat zero times: `a*`, `a?`, `[a-z]*`.
    (bare.ends_with('*') || bare.ends_with('?'))
        && (bare.chars().count() == 2 || (bare.starts_with('[') && bare.matches(']').count() == 1))
}
