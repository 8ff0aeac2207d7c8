//! Secrets: values read when a job starts, handed to its steps' environments, masked in output.
//!
//! A [`Secret`] never shows its value through `Debug` (and has no `Display`), so no log line,
//! diagnostic or error message can print it by accident. [`read_secrets`] reads the values a
//! spec declares from the caller's environment ([`CallerEnv`]) or from files; a [`Masker`]
//! replaces every value, each line of a multi-line value, and their base64 and percent
//! encodings with [`MASK`] in step output (see `crate::output`).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::Read;
use std::path::PathBuf;

use crate::spec::SecretSource;

/// What a masked value is replaced with.
pub const MASK: &str = "***";

/// The shortest value accepted: shorter ones would mask ordinary text and cannot be masked
/// reliably.
pub const MIN_SECRET_CHARS: usize = 4;

/// The longest value accepted. Its encodings must stay well below the output's line cap, so
/// that a value cut between two pieces of a long line is still seen whole.
pub const MAX_SECRET_BYTES: usize = 16 * 1024;

/// A secret value. Its `Debug` shows `Secret(***)`; the value is reached only through
/// [`Secret::expose`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// A secret holding `value` (for tests and for executors that build requests themselves).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value, for handing to a step's environment and nothing else.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The secrets one step receives, by environment variable name.
pub type StepSecrets = BTreeMap<String, Secret>;

/// The environment `mc` was started with. Its `Debug` lists the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct CallerEnv(BTreeMap<OsString, OsString>);

impl CallerEnv {
    /// This process's environment.
    pub fn from_process() -> Self {
        Self(std::env::vars_os().collect())
    }

    /// This process's environment without its `MAESTRO_*` variables: what a server gives the
    /// jobs it accepts. A server's own settings (`MAESTRO_STATE_URL`, with the database's
    /// password; `MAESTRO_TOKEN`) are not for whoever may submit to it, by `env_passthrough` or
    /// an `env` secret; the rest of its environment is, by name, as documented.
    pub fn from_process_for_jobs() -> Self {
        Self(
            std::env::vars_os()
                .filter(|(name, _)| !name.as_encoded_bytes().starts_with(b"MAESTRO_"))
                .collect(),
        )
    }

    /// An environment of the given variables (for tests).
    pub fn from_pairs<K: Into<OsString>, V: Into<OsString>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self(
            pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&OsStr> {
        self.0.get(OsStr::new(name)).map(OsString::as_os_str)
    }

    /// Every variable whose name and value are UTF-8, in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .filter_map(|(name, value)| Some((name.to_str()?, value.to_str()?)))
    }
}

impl fmt::Debug for CallerEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Why a secret's value could not be read. Messages name the secret and its source, never the
/// value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The environment variable it comes from is not set.
    #[error("secret {name}: environment variable {variable} is not set")]
    EnvMissing {
        /// The secret.
        name: String,
        /// The variable.
        variable: String,
    },
    /// The file it comes from cannot be read.
    #[error("secret {name}: cannot read file {}: {source}", path.display())]
    FileUnreadable {
        /// The secret.
        name: String,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The value is not acceptable (too short, too long, not UTF-8, holds a NUL byte).
    #[error("secret {name} (from {origin}) {problem}")]
    BadValue {
        /// The secret.
        name: String,
        /// `environment variable X` or `file P`.
        origin: String,
        /// What is wrong with it.
        problem: String,
    },
}

/// Read the value of every secret in `declared`: environment variables from `caller`, files
/// from disk (one trailing newline dropped). Relative file paths are taken from the current
/// directory.
pub fn read_secrets(
    declared: &BTreeMap<String, SecretSource>,
    caller: &CallerEnv,
) -> Result<BTreeMap<String, Secret>, SecretError> {
    let mut values = BTreeMap::new();
    for (name, source) in declared {
        let (bytes, described) = match (&source.env, &source.file) {
            (Some(variable), _) => {
                let value = caller
                    .get(variable)
                    .ok_or_else(|| SecretError::EnvMissing {
                        name: name.clone(),
                        variable: variable.clone(),
                    })?;
                (
                    std::os::unix::ffi::OsStrExt::as_bytes(value).to_vec(),
                    format!("environment variable {variable}"),
                )
            }
            (None, Some(path)) => {
                let path = PathBuf::from(path);
                let unreadable = |source| SecretError::FileUnreadable {
                    name: name.clone(),
                    path: path.clone(),
                    source,
                };
                let mut bytes = Vec::new();
                std::fs::File::open(&path)
                    .and_then(|file| {
                        file.take(MAX_SECRET_BYTES as u64 + 2)
                            .read_to_end(&mut bytes)
                    })
                    .map_err(unreadable)?;
                if bytes.ends_with(b"\n") {
                    bytes.pop();
                    if bytes.ends_with(b"\r") {
                        bytes.pop();
                    }
                }
                (bytes, format!("file {}", path.display()))
            }
            // Validation guarantees exactly one source.
            (None, None) => continue,
        };
        let bad = |problem: String| SecretError::BadValue {
            name: name.clone(),
            origin: described.clone(),
            problem,
        };
        if bytes.len() > MAX_SECRET_BYTES {
            return Err(bad(format!(
                "is longer than {MAX_SECRET_BYTES} bytes; larger secrets cannot be masked in output"
            )));
        }
        if bytes.contains(&0) {
            return Err(bad("contains a NUL byte".to_owned()));
        }
        let value = String::from_utf8(bytes).map_err(|_| bad("is not UTF-8 text".to_owned()))?;
        let chars = value.chars().count();
        if chars < MIN_SECRET_CHARS {
            return Err(bad(format!(
                "is {chars} characters long; values shorter than {MIN_SECRET_CHARS} characters cannot be masked reliably and are refused"
            )));
        }
        values.insert(name.clone(), Secret(value));
    }
    Ok(values)
}

/// Replaces secret values and their common encodings with [`MASK`].
#[derive(Default)]
pub struct Masker {
    /// Byte patterns, longest first.
    patterns: Vec<Vec<u8>>,
    /// All of them in one automaton: a line is scanned once, however many patterns there are.
    automaton: Option<aho_corasick::AhoCorasick>,
}

impl fmt::Debug for Masker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Masker({} patterns)", self.patterns.len())
    }
}

impl Masker {
    /// A masker for `values`: each value, each line of a multi-line value (lines shorter than
    /// [`MIN_SECRET_CHARS`] excepted), and for each of those its base64 (standard and
    /// URL-safe, padded or not, and the part of it fixed at each of the three alignments a
    /// value can have inside a longer base64 text) and its percent-encodings.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a Secret>) -> Self {
        let mut patterns = BTreeSet::new();
        for secret in values {
            let value = secret.expose();
            let mut pieces = vec![value];
            if value.contains('\n') {
                pieces.extend(
                    value
                        .lines()
                        .map(|line| line.trim_end_matches('\r'))
                        .filter(|line| line.chars().count() >= MIN_SECRET_CHARS),
                );
            }
            for piece in pieces {
                let bytes = piece.as_bytes();
                patterns.insert(bytes.to_vec());
                for alphabet in [STANDARD, URL_SAFE] {
                    let padded = base64(bytes, alphabet);
                    patterns.insert(padded.trim_end_matches('=').as_bytes().to_vec());
                    patterns.insert(padded.into_bytes());
                    for offset in 0..3 {
                        let core = base64_core(bytes, offset, alphabet);
                        if core.len() >= MIN_SECRET_CHARS {
                            patterns.insert(core.into_bytes());
                        }
                    }
                    // `base64` wraps at 76 columns, PEM and `openssl` at 64: each whole
                    // piece of a long value's encoding is masked on its own line.
                    let core = base64_core(bytes, 0, alphabet);
                    for width in [64, 76] {
                        if core.len() > width {
                            patterns.extend(
                                core.as_bytes()
                                    .chunks(width)
                                    .filter(|piece| piece.len() >= MIN_SECRET_CHARS)
                                    .map(<[u8]>::to_vec),
                            );
                        }
                    }
                }
                // As a JSON string (a step dumping its environment as JSON).
                if let Ok(json) = serde_json::to_string(piece) {
                    patterns.insert(json.as_bytes()[1..json.len() - 1].to_vec());
                }
                for encoded in percent_encodings(bytes) {
                    patterns.insert(encoded.into_bytes());
                }
            }
        }
        let mut patterns: Vec<Vec<u8>> = patterns
            .into_iter()
            .filter(|pattern| !pattern.is_empty())
            .collect();
        patterns.sort_by_key(|pattern| std::cmp::Reverse(pattern.len()));
        // Building fails only past the automaton's size limits, far beyond what the value
        // limits allow; the pattern-by-pattern search below stands in then.
        let automaton = aho_corasick::AhoCorasick::new(&patterns).ok();
        Self {
            patterns,
            automaton,
        }
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// The longest pattern, in bytes (0 when empty).
    pub fn longest(&self) -> usize {
        self.patterns.first().map_or(0, Vec::len)
    }

    /// The byte ranges of `text` that hold a pattern, sorted, overlapping ones merged.
    fn ranges(&self, text: &[u8]) -> Vec<(usize, usize)> {
        let mut found = Vec::new();
        match &self.automaton {
            // Overlapping search: every occurrence of every pattern, so that the merged
            // ranges cover each whole, however they overlap.
            Some(automaton) => found.extend(
                automaton
                    .find_overlapping_iter(text)
                    .map(|found| (found.start(), found.end())),
            ),
            None => {
                for pattern in &self.patterns {
                    if pattern.len() > text.len() {
                        continue;
                    }
                    found.extend(
                        memchr::memmem::find_iter(text, pattern)
                            .map(|start| (start, start + pattern.len())),
                    );
                }
            }
        }
        found.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(found.len());
        for (start, end) in found {
            match merged.last_mut() {
                Some(last) if start < last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        merged
    }

    /// Append `text` to `out` with every match replaced by [`MASK`].
    pub fn mask_into(&self, text: &[u8], out: &mut Vec<u8>) {
        if self.patterns.is_empty() {
            out.extend_from_slice(text);
            return;
        }
        let mut at = 0;
        for (start, end) in self.ranges(text) {
            out.extend_from_slice(&text[at..start]);
            out.extend_from_slice(MASK.as_bytes());
            at = end;
        }
        out.extend_from_slice(&text[at..]);
    }

    /// `text` with every match replaced by [`MASK`].
    pub fn mask_str(&self, text: &str) -> String {
        if self.patterns.is_empty() {
            return text.to_owned();
        }
        let mut out = Vec::with_capacity(text.len());
        self.mask_into(text.as_bytes(), &mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Where `text`, a line that will never be continued (output cut at its cap), must end so
    /// that it does not end with the start of a value: the start of the longest suffix of
    /// `text` that is a proper prefix of a pattern, or `text.len()`. Masking sees whole values
    /// only, so the start of one, with the rest never coming, would otherwise be shown as is.
    pub fn end_before_partial(&self, text: &[u8]) -> usize {
        let mut end = text.len();
        for pattern in &self.patterns {
            let longest = (pattern.len() - 1).min(text.len());
            if let Some(length) = (1..=longest)
                .rev()
                .find(|&length| text.ends_with(&pattern[..length]))
            {
                end = end.min(text.len() - length);
            }
        }
        end
    }

    /// Where a piece of an unfinished line of `text` may be cut so that no match straddles
    /// the cut: the bytes after it are kept and seen again with what follows. Never less than
    /// half of `text`, so that cutting always makes progress: a pattern longer than that (only
    /// an encoding of a value near [`MAX_SECRET_BYTES`] can be) may straddle a cut unseen.
    pub fn safe_cut(&self, text: &[u8]) -> usize {
        let longest = self.longest();
        if longest <= 1 {
            return text.len();
        }
        let mut cut = text
            .len()
            .saturating_sub(longest - 1)
            .max(text.len().div_ceil(2));
        for (start, end) in self.ranges(text) {
            if start < cut && end > cut {
                cut = end;
            }
        }
        cut
    }
}

/// The maskers of the jobs this process runs, for whoever writes its diagnostics.
static DIAGNOSTICS: std::sync::RwLock<Vec<std::sync::Arc<Masker>>> =
    std::sync::RwLock::new(Vec::new());

/// Ask the program's diagnostics writer to mask `masker`'s values too (the runner does so when
/// a job's secrets are read): a library's event that quotes a value (an engine request body)
/// must not print it.
pub fn mask_in_diagnostics(masker: std::sync::Arc<Masker>) {
    if !masker.is_empty()
        && let Ok(mut all) = DIAGNOSTICS.write()
    {
        all.push(masker);
    }
}

/// `text` with every value registered by [`mask_in_diagnostics`] masked; for the program that
/// writes diagnostics.
pub fn mask_diagnostic(text: &[u8]) -> Option<Vec<u8>> {
    let all = DIAGNOSTICS.read().ok()?;
    if all.is_empty() {
        return None;
    }
    let mut masked = text.to_vec();
    for masker in all.iter() {
        let mut out = Vec::with_capacity(masked.len());
        masker.mask_into(&masked, &mut out);
        masked = out;
    }
    Some(masked)
}

const STANDARD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The padded base64 encoding of `bytes`.
fn base64(bytes: &[u8], alphabet: &[u8; 64]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The characters of the base64 of `bytes` preceded by `offset` other bytes (0 to 2) that
/// depend on `bytes` alone, whatever precedes and follows them.
fn base64_core(bytes: &[u8], offset: usize, alphabet: &[u8; 64]) -> String {
    let mut padded = vec![0u8; offset];
    padded.extend_from_slice(bytes);
    let encoded = base64(&padded, alphabet);
    let first = (8 * offset).div_ceil(6);
    let last = 8 * (offset + bytes.len()) / 6;
    encoded
        .get(first..last)
        .map(str::to_owned)
        .unwrap_or_default()
}

/// The percent-encodings of `bytes` a script is likely to produce: every byte outside the
/// unreserved set encoded, with upper- or lower-case hex digits, and the form encoding
/// (space as `+`). Identical ones are returned once.
fn percent_encodings(bytes: &[u8]) -> Vec<String> {
    let encode = |lower: bool, plus: bool| {
        let mut out = String::new();
        for &byte in bytes {
            if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
                out.push(char::from(byte));
            } else if plus && byte == b' ' {
                out.push('+');
            } else if lower {
                out.push_str(&format!("%{byte:02x}"));
            } else {
                out.push_str(&format!("%{byte:02X}"));
            }
        }
        out
    };
    let mut all = vec![
        encode(false, false),
        encode(true, false),
        encode(false, true),
        encode(true, true),
    ];
    all.sort();
    all.dedup();
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(values: &[&str]) -> Masker {
        let secrets: Vec<Secret> = values.iter().map(|v| Secret::new(*v)).collect();
        Masker::new(&secrets)
    }

    #[test]
    fn debug_never_shows_the_value() {
        let secret = Secret::new("hunter2-value");
        assert_eq!(format!("{secret:?}"), "Secret(***)");
        let map = BTreeMap::from([("A".to_owned(), secret)]);
        assert!(!format!("{map:?}").contains("hunter2"));
        let env = CallerEnv::from_pairs([("TOKEN", "hunter2-value")]);
        assert!(!format!("{env:?}").contains("hunter2"));
    }

    #[test]
    fn base64_matches_known_encodings() {
        assert_eq!(base64(b"hello", STANDARD), "aGVsbG8=");
        assert_eq!(base64(b"\xfb\xff", URL_SAFE), "-_8=");
        assert_eq!(base64(b"abc", STANDARD), "YWJj");
    }

    #[test]
    fn masks_value_lines_and_encodings() {
        let value = "s3cr3t/Tok+en value";
        let m = masker(&[value]);
        let b64 = base64(value.as_bytes(), STANDARD);
        let url = base64(value.as_bytes(), URL_SAFE);
        for text in [
            format!("a {value} b"),
            format!("a {b64} b"),
            format!("a {} b", b64.trim_end_matches('=')),
            format!("a {url} b"),
            format!("x={}", percent_encodings(value.as_bytes())[0]),
            format!("x={}", percent_encodings(value.as_bytes())[1]),
        ] {
            assert_eq!(m.mask_str(&text).matches(MASK).count(), 1, "{text}");
            assert!(!m.mask_str(&text).contains("Tok"), "{text}");
        }
        assert_eq!(m.mask_str("nothing here"), "nothing here");
    }

    #[test]
    fn masks_base64_of_a_value_inside_longer_base64_at_every_alignment() {
        let value = b"correct-horse-battery";
        let m = masker(&["correct-horse-battery"]);
        for prefix in ["", "x", "xy", "xyz"] {
            let mut text = prefix.as_bytes().to_vec();
            text.extend_from_slice(value);
            text.extend_from_slice(b"trailing bytes");
            for alphabet in [STANDARD, URL_SAFE] {
                let encoded = base64(&text, alphabet);
                let masked = m.mask_str(&encoded);
                assert!(masked.contains(MASK), "{prefix:?}: {encoded} -> {masked}");
                // What remains is at most the characters shared with the neighbours.
                let core = base64_core(value, prefix.len() % 3, alphabet);
                assert!(!masked.contains(&core), "{masked}");
            }
        }
    }

    #[test]
    fn masks_wrapped_base64_and_json_escaped_values() {
        let value = "a-rather-long-token-value-that-base64-wraps-over-two-lines-0123456789";
        let m = masker(&[value, "with \"quotes\" and\nnewline"]);
        let encoded = base64(value.as_bytes(), STANDARD);
        let (first, second) = encoded.split_at(76);
        assert_eq!(m.mask_str(first), "***");
        assert!(!m.mask_str(second).contains(&second[..8]), "{second}");
        assert_eq!(
            m.mask_str(r#"{"T":"with \"quotes\" and\nnewline"}"#),
            r#"{"T":"***"}"#
        );
    }

    #[test]
    fn masks_each_line_of_a_multi_line_value() {
        let m = masker(&["first-line\nsecond-line\nab"]);
        assert_eq!(m.mask_str("x first-line y"), "x *** y");
        assert_eq!(m.mask_str("second-line"), "***");
        assert_eq!(m.mask_str("ab"), "ab", "short lines are not masked alone");
    }

    #[test]
    fn overlapping_matches_become_one_mask() {
        let m = masker(&["abcdef", "defghi"]);
        assert_eq!(m.mask_str("-abcdefghi-"), "-***-");
    }

    #[test]
    fn safe_cut_never_splits_a_match() {
        let m = masker(&["0123456789"]);
        let text = b"aaaaaaaaaaaaaaaaaaaa01234";
        let cut = m.safe_cut(text);
        assert!(cut <= text.len() - 9);
        let text = b"aaaaaaaaaaaaa0123456789aa";
        let cut = m.safe_cut(text);
        assert!(cut == 23 || cut <= 13, "{cut}");
        assert_eq!(Masker::default().safe_cut(text), text.len());
        // A pattern longer than half the text still leaves progress.
        let m = masker(&["0123456789abcdefghij"]);
        assert!(m.safe_cut(b"xxxxxxxx") >= 4);
        assert_eq!(m.safe_cut(b""), 0);
    }

    #[test]
    fn reads_values_and_refuses_bad_ones() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("db");
        std::fs::write(&file, "from-a-file\n").unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "abc").unwrap();
        let caller = CallerEnv::from_pairs([("CI_TOKEN", "value-from-env"), ("TINY", "xy")]);
        let source = |env: Option<&str>, file: Option<&std::path::Path>| SecretSource {
            env: env.map(str::to_owned),
            file: file.map(|f| f.to_string_lossy().into_owned()),
        };
        let declared = BTreeMap::from([
            ("A".to_owned(), source(Some("CI_TOKEN"), None)),
            ("B".to_owned(), source(None, Some(&file))),
        ]);
        let values = read_secrets(&declared, &caller).unwrap();
        assert_eq!(values["A"].expose(), "value-from-env");
        assert_eq!(values["B"].expose(), "from-a-file");
        for (source, needle) in [
            (
                source(Some("NOPE"), None),
                "secret X: environment variable NOPE is not set",
            ),
            (source(Some("TINY"), None), "is 2 characters long"),
            (source(None, Some(&short)), "shorter than 4"),
            (
                source(None, Some(&dir.path().join("missing"))),
                "secret X: cannot read file",
            ),
        ] {
            let declared = BTreeMap::from([("X".to_owned(), source)]);
            let message = read_secrets(&declared, &caller).unwrap_err().to_string();
            assert!(message.contains(needle), "{message}");
            assert!(!message.contains("xy\""), "{message}");
        }
    }
}
