//! Lexical path handling: what a target word can name, and whether that is precious.

use super::words::{Resolved, Seg, Word};

/// Top-level directories whose recursive deletion (or recursive permission change) wrecks the
/// machine. Deliberately short: `/tmp`, `/mnt` and `/media` are left out, since jobs legitimately
/// clean those, and anything deeper than one level (`/usr/lib`) is out of scope.
pub(crate) const SYSTEM_DIRS: &[&str] = &[
    "bin", "boot", "dev", "etc", "home", "lib", "lib32", "lib64", "libx32", "opt", "proc", "root",
    "run", "sbin", "srv", "sys", "usr", "var",
];

/// Where a path is anchored: the filesystem root, the (unknown) home directory, the step's
/// starting directory, or a directory only known at run time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Anchor {
    Root,
    Home,
    /// The directory the step starts in (its workspace), below it and not climbed out of.
    Start,
    /// A directory only known at run time (after `cd "$(dirname …)"`): whatever lies in or
    /// under it may be anything, `/` included.
    RunTime,
}

/// A normalised path (no `.`, `..` or empty components) from an [`Anchor`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AbsPath {
    pub(crate) anchor: Anchor,
    pub(crate) comps: Vec<String>,
    /// The path climbed out of the step's starting directory with leading `..` components and
    /// is read as reaching `/` (see [`AbsPath::join`]).
    pub(crate) climbed: bool,
}

impl AbsPath {
    fn anchored(anchor: Anchor) -> Self {
        Self {
            anchor,
            comps: Vec::new(),
            climbed: false,
        }
    }

    pub(crate) fn root() -> Self {
        Self::anchored(Anchor::Root)
    }

    pub(crate) fn home() -> Self {
        Self::anchored(Anchor::Home)
    }

    /// The directory the step starts in.
    pub(crate) fn start() -> Self {
        Self::anchored(Anchor::Start)
    }

    /// A directory only known at run time.
    pub(crate) fn run_time() -> Self {
        Self::anchored(Anchor::RunTime)
    }

    /// Resolves `rel` against this path lexically (as `rm` sees it before symlinks).
    ///
    /// A `..` above the step's starting directory climbs to a directory the analysis does not
    /// know. Policy cannot know where the step will run (the plan's workspace is the one of the
    /// machine that evaluated it, a shared queue may run the job elsewhere, and a workspace may
    /// be one level below `/`, like `/app` or `/work`), so the climb is read as reaching `/`,
    /// the worst case: `rm -rf ../../usr` is `/usr`, `cd .. && rm -rf *` is `/*`, while
    /// `rm -rf ../build` (`/build`) stays harmless.
    pub(crate) fn join(&self, rel: &str) -> Self {
        let mut out = self.clone();
        for comp in rel.split('/') {
            match comp {
                "" | "." => {}
                ".." => {
                    if out.comps.pop().is_some() {
                        continue;
                    }
                    match out.anchor {
                        // The home directory's parent is, in practice, /home (or / for root's
                        // /root); /home is the useful approximation and is itself precious.
                        Anchor::Home => {
                            out.anchor = Anchor::Root;
                            out.comps = vec!["home".into()];
                        }
                        Anchor::Start => {
                            out.anchor = Anchor::Root;
                            out.climbed = true;
                        }
                        Anchor::Root | Anchor::RunTime => {}
                    }
                }
                other => out.comps.push(other.to_owned()),
            }
        }
        out
    }

    /// Whether the path is known as an absolute path (or one in the home directory), so that
    /// `$PWD` can stand for it.
    pub(crate) fn is_known(&self) -> bool {
        matches!(self.anchor, Anchor::Root | Anchor::Home)
    }

    pub(crate) fn display(&self) -> String {
        let base = match self.anchor {
            Anchor::Root => "",
            Anchor::Home => "~",
            Anchor::Start => ".",
            Anchor::RunTime => "(a directory only known at run time)",
        };
        if self.comps.is_empty() {
            return match self.anchor {
                Anchor::Root => "/".into(),
                _ => base.into(),
            };
        }
        format!("{base}/{}", self.comps.join("/"))
    }
}

/// Resolves `rel` against the working directory `cwd` (the step's starting directory when
/// no `cd` changed it).
pub(crate) fn resolve(cwd: Option<&AbsPath>, rel: &str) -> AbsPath {
    if rel.starts_with('/') {
        return AbsPath::root().join(rel);
    }
    cwd.cloned().unwrap_or_else(AbsPath::start).join(rel)
}

/// Why a path is too precious to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Danger {
    Root,
    Home,
    SystemDir(String),
}

impl Danger {
    pub(crate) fn describe(&self) -> String {
        match self {
            Self::Root => "the root filesystem".into(),
            Self::Home => "the home directory".into(),
            Self::SystemDir(d) if d.contains(['*', '?', '[']) => {
                format!("top-level system directories (`/{d}`)")
            }
            Self::SystemDir(d) => format!("the system directory /{d}"),
        }
    }
}

/// A component that only selects "everything in here" (`*`, `.*`, `*.*`, `?*`): deleting it is as
/// bad as deleting the directory itself.
fn is_pure_glob(comp: &str) -> bool {
    comp.contains(['*', '?']) && comp.chars().all(|c| matches!(c, '*' | '?' | '.'))
}

/// Classifies a path: root, home, a top-level system directory, or a glob over top-level names.
pub(crate) fn classify(path: &AbsPath) -> Option<Danger> {
    let mut comps: &[String] = &path.comps;
    while let [rest @ .., last] = comps
        && is_pure_glob(last)
    {
        comps = rest;
    }
    match (&path.anchor, comps) {
        (Anchor::Root, []) => Some(Danger::Root),
        (Anchor::Home, []) => Some(Danger::Home),
        (Anchor::Root, [one])
            if SYSTEM_DIRS.contains(&one.as_str())
                || (one.contains(['*', '?', '['])
                    && SYSTEM_DIRS.iter().any(|dir| glob_matches(one, dir))) =>
        {
            Some(Danger::SystemDir(one.clone()))
        }
        _ => None,
    }
}

/// Whether the shell glob `pattern` (`*`, `?`, `[…]` with ranges and `!`/`^` negation) matches
/// `name`. A malformed bracket (no closing `]`) is read as matching any one character, so an
/// odd pattern errs towards matching.
pub(crate) fn glob_matches(pattern: &str, name: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    // Iterative matching with backtracking to the last `*`: linear in practice, and bounded
    // by pattern × name, both short here.
    let (mut p, mut n) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some('?') => Some(p + 1),
            Some('[') => match bracket(&pattern, p, name[n]) {
                (true, next) => Some(next),
                (false, _) => None,
            },
            Some('\\') if pattern.get(p + 1) == Some(&name[n]) => Some(p + 2),
            Some(c) if *c == name[n] => Some(p + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                p = next;
                n += 1;
            }
            (None, Some((star_p, star_n))) => {
                p = star_p + 1;
                n = star_n + 1;
                star = Some((star_p, star_n + 1));
            }
            (None, None) => return false,
        }
    }
    pattern[p..].iter().all(|c| *c == '*')
}

/// Matches `c` against the bracket expression opening at `open`: whether it matches, and the
/// index after the closing `]`.
fn bracket(pattern: &[char], open: usize, c: char) -> (bool, usize) {
    let mut i = open + 1;
    let negated = matches!(pattern.get(i), Some('!' | '^'));
    if negated {
        i += 1;
    }
    let first = i;
    let mut matched = false;
    while let Some(&here) = pattern.get(i) {
        if here == ']' && i > first {
            return (matched != negated, i + 1);
        }
        if pattern.get(i + 1) == Some(&'-')
            && let Some(&hi) = pattern.get(i + 2).filter(|h| **h != ']')
        {
            matched |= (here..=hi).contains(&c);
            i += 3;
            continue;
        }
        matched |= here == c;
        i += 1;
    }
    // No closing bracket: any one character.
    (true, open + 1)
}

/// A path a target word may name, and whether it only names it when some variable is empty.
#[derive(Clone, Debug)]
pub(crate) struct Target {
    pub(crate) path: AbsPath,
    pub(crate) via_empty: bool,
}

/// Every path the word's candidates may name, resolved against `cwd` when relative.
pub(crate) fn targets(word: &Word, cwd: Option<&AbsPath>) -> Vec<Target> {
    word.cands
        .iter()
        .filter_map(|r| target_of(r, cwd))
        .collect()
}

fn target_of(res: &Resolved, cwd: Option<&AbsPath>) -> Option<Target> {
    let segs = &res.0;
    let home_first = matches!(segs.first(), Some(Seg::Home));
    let body = if home_first { &segs[1..] } else { &segs[..] };
    let mut text = String::new();
    let mut via_empty = false;
    for seg in body {
        match seg {
            Seg::Text(t) => text.push_str(t),
            // An unknown that may be empty: `"$DIR"/*` is `/*` when DIR is unset, the classic
            // accident; so consider the empty expansion.
            Seg::Unknown { may_be_empty: true } => via_empty = true,
            Seg::Unknown {
                may_be_empty: false,
            }
            | Seg::Home => return None,
        }
    }
    let path = if home_first {
        AbsPath::home().join(&text)
    } else if text.is_empty() {
        // `rm -rf "$X"` with X empty is `rm -rf ''`: an error, not a deletion.
        return None;
    } else {
        resolve(cwd, &text)
    };
    Some(Target { path, via_empty })
}

/// The working directory after `cd WORD` from `cwd`. A value only known at run time makes it a
/// run-time directory; several static values (`for d in …; do cd "$d"`) are kept when they
/// all lie in the workspace (the shallowest, from which `..` climbs furthest), and are a
/// run-time directory otherwise.
pub(crate) fn cd_target(word: &Word, cwd: Option<&AbsPath>) -> AbsPath {
    let mut dirs: Vec<AbsPath> = Vec::new();
    for res in &word.cands {
        match target_of(res, cwd) {
            Some(t) if !t.via_empty => dirs.push(t.path),
            _ => return AbsPath::run_time(),
        }
    }
    dirs.dedup();
    match dirs.as_slice() {
        [one] => one.clone(),
        many if many.iter().all(|d| d.anchor == Anchor::Start) => many
            .iter()
            .min_by_key(|d| d.comps.len())
            .cloned()
            .unwrap_or_else(AbsPath::run_time),
        _ => AbsPath::run_time(),
    }
}

/// Whether some value of the word names a path in a directory only known at run time (a
/// relative path after `cd "$(…)"`).
pub(crate) fn in_run_time_dir(word: &Word, cwd: Option<&AbsPath>) -> bool {
    targets(word, cwd)
        .iter()
        .any(|t| t.path.anchor == Anchor::RunTime)
}

/// Statically known absolute paths of a word (no variable guesswork), for device checks.
pub(crate) fn static_paths(word: &Word, cwd: Option<&AbsPath>) -> Vec<AbsPath> {
    targets(word, cwd)
        .into_iter()
        .filter(|t| !t.via_empty)
        .map(|t| t.path)
        .collect()
}

/// Storage (and memory) devices whose overwriting destroys data: the disk families of Linux,
/// device-mapper and by-id links, plus raw memory.
pub(crate) fn is_block_device(path: &AbsPath) -> bool {
    if path.anchor != Anchor::Root {
        return false;
    }
    let [dev, name, rest @ ..] = path.comps.as_slice() else {
        return false;
    };
    if dev != "dev" {
        return false;
    }
    if matches!(name.as_str(), "mapper" | "disk" | "block") {
        return !rest.is_empty();
    }
    if !rest.is_empty() {
        return false;
    }
    const PREFIXES: &[&str] = &[
        "sd", "hd", "vd", "xvd", "nvme", "mmcblk", "dm-", "md", "loop", "sr", "nbd", "rbd", "zd",
        "ram", "mtdblock",
    ];
    PREFIXES.iter().any(|p| name.starts_with(p))
        || matches!(name.as_str(), "mem" | "kmem" | "port" | "root")
}

/// Kernel control files whose writing crashes, reboots or powers off the machine, or bricks its
/// firmware: `/proc/sysrq-trigger`, `/proc/sys/kernel/…`, `/sys/power/…`, EFI variables, and a
/// disk's `/sys/block/*/device/delete`.
pub(crate) fn is_kernel_interface(path: &AbsPath) -> bool {
    if path.anchor != Anchor::Root {
        return false;
    }
    let comps: Vec<&str> = path.comps.iter().map(String::as_str).collect();
    matches!(
        comps.as_slice(),
        ["proc", "sysrq-trigger"]
            | ["proc", "sys", "kernel", _, ..]
            | ["sys", "power", _, ..]
            | ["sys", "firmware", "efi", "efivars", _, ..]
            | ["sys", "block" | "class", .., "device", "delete"]
            | ["sys", "kernel", "kexec_load" | "kexec_crash_load"]
    )
}

/// Device files that are fine to write to (`/dev/null` and friends).
pub(crate) fn is_harmless_device(path: &AbsPath) -> bool {
    if path.anchor != Anchor::Root {
        return false;
    }
    match path.comps.as_slice() {
        [dev, name] if dev == "dev" => {
            matches!(
                name.as_str(),
                "null"
                    | "zero"
                    | "full"
                    | "random"
                    | "urandom"
                    | "stdout"
                    | "stderr"
                    | "stdin"
                    | "tty"
                    | "console"
                    | "ptmx"
                    | "log"
                    | "kmsg"
            ) || name.starts_with("tty")
        }
        [dev, dir, _] if dev == "dev" => matches!(dir.as_str(), "fd" | "pts" | "shm"),
        [dev, dir, _, ..] if dev == "dev" => dir == "shm",
        _ => false,
    }
}

/// Whether a path lies under `/dev`.
pub(crate) fn is_under_dev(path: &AbsPath) -> bool {
    path.anchor == Anchor::Root && path.comps.first().is_some_and(|c| c == "dev")
}
