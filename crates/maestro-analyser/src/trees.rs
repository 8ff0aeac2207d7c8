//! Commands that delete directory trees on the side: `rsync --delete` deletes whatever in its
//! destination the source lacks (an empty source empties it), `--remove-source-files` and
//! `tar --remove-files` delete what they copied or archived, and `git clean` deletes every
//! untracked file under its directory. Aimed at `/`, the home directory or a system
//! directory they destroy as much as `rm -rf`, so they are reported with its rules; a target
//! only known at run time is `dynamic-argument`, as for `rm -rf`.

use super::Analyzer;
use super::paths::AbsPath;
use super::rules::{DELETE_RULES, long_opt};
use super::words::{Resolved, Seg, Word};

/// rsync options whose value is the next word.
const RSYNC_VALUES: &[&str] = &[
    "-e",
    "--rsh",
    "-f",
    "--filter",
    "--exclude",
    "--include",
    "--exclude-from",
    "--include-from",
    "--files-from",
    "-B",
    "--block-size",
    "--backup-dir",
    "--suffix",
    "-T",
    "--temp-dir",
    "--compare-dest",
    "--copy-dest",
    "--link-dest",
    "--chmod",
    "--chown",
    "--usermap",
    "--groupmap",
    "--timeout",
    "--contimeout",
    "--port",
    "--password-file",
    "--log-file",
    "--log-file-format",
    "--bwlimit",
    "-M",
    "--remote-option",
    "--rsync-path",
    "--out-format",
    "--max-size",
    "--min-size",
    "--max-delete",
    "--partial-dir",
    "--info",
    "--debug",
    "--iconv",
    "--sockopts",
    "--protocol",
    "--checksum-choice",
    "--compress-choice",
    "--skip-compress",
    "--modify-window",
    "--write-batch",
    "--read-batch",
    "--only-write-batch",
    "--address",
];

/// tar's short options that take a value (the next word, or the rest of their cluster).
const TAR_SHORT_VALUES: &str = "fCTXbHgKLNVIF";

/// tar's long options whose value may be the next word.
const TAR_LONG_VALUES: &[&str] = &[
    "--file",
    "--directory",
    "--files-from",
    "--exclude-from",
    "--format",
    "--blocking-factor",
    "--listed-incremental",
    "--starting-file",
    "--tape-length",
    "--newer",
    "--label",
    "--use-compress-program",
    "--info-script",
    "--exclude",
    "--transform",
    "--owner",
    "--group",
    "--mode",
    "--mtime",
];

/// The word after `prefix` in `word` (`--work-tree=/` gives `/`), keeping run-time parts.
fn strip_word_prefix(word: &Word, prefix: &str) -> Option<Word> {
    let res = word.cands.first()?;
    let Some(Seg::Text(first)) = res.0.first() else {
        return None;
    };
    let rest = first.strip_prefix(prefix)?;
    let mut value = Resolved::text(rest);
    for seg in res.0.iter().skip(1) {
        value.push_seg(seg.clone());
    }
    Some(Word {
        raw: word.raw.clone(),
        cands: vec![value],
    })
}

/// `next` taken from the directory `base` (`-C a -C b` is `a/b`; an absolute `next` wins).
fn path_in(base: Option<&Word>, next: &Word) -> Word {
    let Some(base) = base else {
        return next.clone();
    };
    let cands = next
        .cands
        .iter()
        .flat_map(|n| {
            let absolute = match n.0.first() {
                Some(Seg::Text(t)) => t.starts_with('/'),
                Some(Seg::Home) => true,
                _ => false,
            };
            if absolute {
                return vec![n.clone()];
            }
            base.cands
                .iter()
                .map(|b| {
                    let mut joined = b.clone();
                    joined.push_text("/");
                    for seg in &n.0 {
                        joined.push_seg(seg.clone());
                    }
                    joined
                })
                .collect()
        })
        .take(super::words::MAX_CANDIDATES)
        .collect();
    Word {
        raw: next.raw.clone(),
        cands,
    }
}

/// rsync's view of a local path: `[user@]host:path` is `path` on that host (from its home
/// directory when relative), the same loss if it is `/`; daemon modules (`host::module`,
/// `rsync://`) are not paths and give None.
fn rsync_path(word: &Word) -> Option<Word> {
    let Some(text) = word.lit() else {
        return Some(word.clone());
    };
    if text.contains("::") || text.starts_with("rsync://") {
        return None;
    }
    let Some((host, path)) = text.split_once(':') else {
        return Some(word.clone());
    };
    if host.contains('/') {
        return Some(word.clone());
    }
    let res = if path.starts_with('/') {
        Resolved::text(path)
    } else {
        let mut home = Resolved(vec![Seg::Home]);
        home.push_text("/");
        home.push_text(path);
        home
    };
    Some(Word {
        raw: word.raw.clone(),
        cands: vec![res],
    })
}

impl Analyzer {
    /// Reports a tree delete of a precious path, or of one only known at run time.
    fn report_tree_delete(
        &mut self,
        shown: &str,
        target: &Word,
        cwd: Option<&AbsPath>,
        verb: &str,
    ) {
        let before = self.findings_len();
        self.report_precious(shown, target, cwd, verb, &DELETE_RULES);
        if self.findings_len() == before {
            self.report_dynamic_argument(shown, target, cwd);
        }
    }

    /// `rsync --delete SRC… DEST` empties DEST of what SRC lacks; `--remove-source-files`
    /// deletes the copied files of each SRC.
    pub(crate) fn rule_rsync(&mut self, shown: &str, args: &[Word], cwd: Option<&AbsPath>) {
        let split = super::rules::split_args(args, RSYNC_VALUES);
        let deletes = split
            .opts
            .iter()
            .any(|o| o == "--del" || o.starts_with("--delete"));
        let removes_sources = split.opts.iter().any(|o| {
            o.starts_with("--remove-source-files") || o.starts_with("--remove-sent-files")
        });
        let [sources @ .., dest] = split.operands.as_slice() else {
            return;
        };
        if sources.is_empty() {
            return;
        }
        if deletes && let Some(dest) = rsync_path(dest) {
            self.report_tree_delete(shown, &dest, cwd, "deletes (as --delete mirrors onto it)");
        }
        if removes_sources {
            for source in sources.iter().filter_map(|s| rsync_path(s)) {
                self.report_tree_delete(shown, &source, cwd, "deletes the files (copied) of");
            }
        }
    }

    /// `tar --remove-files … FILES`: deletes what it archives, each FILE from the directory
    /// of the `-C DIR` before it.
    pub(crate) fn rule_tar(&mut self, shown: &str, args: &[Word], cwd: Option<&AbsPath>) {
        let removes = args
            .iter()
            .filter_map(Word::lit)
            .any(|a| a.starts_with("--r") && long_opt(&a, "--remove-files"));
        if !removes {
            return;
        }
        let mut dir: Option<Word> = None;
        let mut i = 0;
        let mut operands_only = false;
        while let Some(word) = args.get(i) {
            i += 1;
            let arg = word.lit().unwrap_or_default();
            if operands_only || !arg.starts_with('-') || arg == "-" {
                // Old-style bundled letters (`tar cf x.tar …`) come first, without a dash.
                if i == 1 && arg.chars().all(|c| c.is_ascii_alphabetic()) && !arg.is_empty() {
                    i += arg
                        .chars()
                        .filter(|c| TAR_SHORT_VALUES.contains(*c))
                        .count();
                    continue;
                }
                self.report_tree_delete(shown, &path_in(dir.as_ref(), word), cwd, "deletes");
                continue;
            }
            if arg == "--" {
                operands_only = true;
                continue;
            }
            if arg.starts_with("--") {
                let (name, attached) = match arg.split_once('=') {
                    Some((name, _)) => (name, strip_word_prefix(word, &format!("{name}="))),
                    None => (arg.as_str(), None),
                };
                let value = match attached {
                    Some(value) => Some(value),
                    None if TAR_LONG_VALUES.iter().any(|l| long_opt(name, l)) => {
                        i += 1;
                        args.get(i - 1).cloned()
                    }
                    None => None,
                };
                if long_opt(name, "--directory")
                    && let Some(value) = value
                {
                    dir = Some(path_in(dir.as_ref(), &value));
                }
                continue;
            }
            let cluster: String = arg.chars().skip(1).collect();
            if let Some(at) = cluster.find(|c| TAR_SHORT_VALUES.contains(c)) {
                let attached = &cluster[at + 1..];
                if cluster[at..].starts_with('C') {
                    let value = if attached.is_empty() {
                        args.get(i).cloned()
                    } else {
                        strip_word_prefix(word, &arg[..at + 2])
                    };
                    if let Some(value) = value {
                        dir = Some(path_in(dir.as_ref(), &value));
                    }
                }
                if attached.is_empty() {
                    i += 1;
                }
            }
        }
    }

    /// `git [-C DIR…] [--work-tree DIR] clean …` (not `-n`/`--dry-run`): deletes the untracked
    /// files under its directory and its pathspecs. Without `-f` git refuses unless
    /// `clean.requireForce` is off, which a config may say; so `-f` is not required.
    pub(crate) fn rule_git_clean(&mut self, shown: &str, args: &[Word], cwd: Option<&AbsPath>) {
        let mut dir: Option<Word> = None;
        let mut i = 0;
        while let Some(word) = args.get(i) {
            let arg = word.lit().unwrap_or_default();
            if !arg.starts_with('-') {
                break;
            }
            i += 1;
            if arg == "-C" {
                if let Some(value) = args.get(i) {
                    dir = Some(path_in(dir.as_ref(), value));
                }
                i += 1;
            } else if let Some(tree) = strip_word_prefix(word, "--work-tree=") {
                dir = Some(path_in(dir.as_ref(), &tree));
            } else if arg == "--work-tree" {
                if let Some(value) = args.get(i) {
                    dir = Some(path_in(dir.as_ref(), value));
                }
                i += 1;
            } else if matches!(
                arg.as_str(),
                "-c" | "--config-env" | "--git-dir" | "--namespace" | "--super-prefix"
            ) {
                i += 1;
            }
        }
        if args.get(i).and_then(Word::lit).as_deref() != Some("clean") {
            return;
        }
        let mut pathspecs: Vec<&Word> = Vec::new();
        let mut operands_only = false;
        let mut rest = args[i + 1..].iter();
        while let Some(word) = rest.next() {
            let arg = word.lit().unwrap_or_default();
            if operands_only || !arg.starts_with('-') {
                pathspecs.push(word);
            } else if arg == "--" {
                operands_only = true;
            } else if arg.starts_with("--") {
                if long_opt(&arg, "--dry-run") {
                    return;
                }
                if arg == "--exclude" {
                    rest.next();
                }
            } else {
                // A cluster such as `-fdx`; `-e` takes the rest of it or the next word.
                let letters = arg.trim_start_matches('-');
                let before_e = letters.split('e').next().unwrap_or_default();
                if before_e.contains('n') {
                    return;
                }
                if letters.len() > before_e.len() && letters.ends_with('e') {
                    rest.next();
                }
            }
        }
        let base = dir.unwrap_or_else(|| Word::literal("."));
        self.report_tree_delete(shown, &base, cwd, "deletes every untracked file in");
        for pathspec in pathspecs {
            self.report_tree_delete(shown, &path_in(Some(&base), pathspec), cwd, "deletes");
        }
    }
}
