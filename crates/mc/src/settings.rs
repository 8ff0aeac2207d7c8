//! Settings resolved in one place: flags, then environment, then `maestro.toml`, then defaults.
//!
//! Every setting is one row of [`SETTINGS`] (its key in the file, its flag, its variable) and its
//! default is written once, in core's `PolicyConfig`/`RunnerConfig` defaults or here. Values from
//! every source are checked by the same parser, and an error names where the bad value came from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use maestro_core::policy::PolicyConfig;
use maestro_core::runner::RunnerConfig;
use maestro_core::spec::{HostAccess, MAX_TIMEOUT_SECONDS};
use maestro_core::suggest::did_you_mean;
use serde::Serialize;

use crate::cli::GlobalArgs;
use crate::exit::Failure;

/// The name of the configuration file, in the state root and in `$XDG_CONFIG_HOME/maestro/`.
pub(crate) const CONFIG_FILE: &str = "maestro.toml";

/// One setting: its key in `maestro.toml`, its flag, its environment variable.
pub(crate) struct Setting {
    pub(crate) key: &'static str,
    pub(crate) flag: &'static str,
    pub(crate) env: &'static str,
    /// What it is, for `mc config`.
    pub(crate) about: &'static str,
}

/// Every setting that has a flag. Their defaults are in [`default_text`].
pub(crate) const SETTINGS: [Setting; 8] = [
    Setting {
        key: "state_dir",
        flag: "state-dir",
        env: "MAESTRO_HOME",
        about: "the state root (only in the user's file: the state root's own file is inside it)",
    },
    Setting {
        key: "default_step_timeout",
        flag: "default-step-timeout",
        env: "MAESTRO_DEFAULT_STEP_TIMEOUT",
        about: "timeout of steps that give none, in seconds",
    },
    Setting {
        key: "max_step_timeout",
        flag: "max-step-timeout",
        env: "MAESTRO_MAX_STEP_TIMEOUT",
        about: "largest step timeout max-step-timeout allows, in seconds",
    },
    Setting {
        key: "allowed_host_access",
        flag: "allowed-host-access",
        env: "MAESTRO_ALLOWED_HOST_ACCESS",
        about: "host resources sandbox-limits lets a spec ask for (comma separated, or none)",
    },
    Setting {
        key: "stop_grace",
        flag: "stop-grace",
        env: "MAESTRO_STOP_GRACE",
        about: "seconds a stopped step gets to exit before it is killed (0 to 3600)",
    },
    Setting {
        key: "max_step_output",
        flag: "max-step-output",
        env: "MAESTRO_MAX_STEP_OUTPUT",
        about: "most output recorded per step, in bytes (or 512k, 64m, 1g); the log says what was dropped",
    },
    Setting {
        key: "state_url",
        flag: "state-url",
        env: "MAESTRO_STATE_URL",
        about: "record jobs in this PostgreSQL database (postgres://user@host:port/db) instead of the state root's files; none for the files",
    },
    Setting {
        key: "lease_ttl",
        flag: "lease-ttl",
        env: "MAESTRO_LEASE_TTL",
        about: "with --state-url: seconds a job's lease outlives its holder (0.5 to 3600); a dead server's jobs are settled after it",
    },
];

/// The default of a setting, as text, from the one place it is written.
pub(crate) fn default_text(key: &str) -> String {
    let policy = PolicyConfig::default();
    match key {
        "state_dir" => DEFAULT_STATE_DIR.to_owned(),
        "default_step_timeout" => policy.default_step_timeout.as_secs().to_string(),
        "max_step_timeout" => policy.max_step_timeout.as_secs().to_string(),
        "allowed_host_access" => host_access_text(&policy.allowed_host_access),
        "stop_grace" => RunnerConfig::default().stop_grace.as_secs_f64().to_string(),
        "max_step_output" => RunnerConfig::default().max_step_output.to_string(),
        "state_url" => "none".to_owned(),
        "lease_ttl" => DEFAULT_LEASE_TTL_SECONDS.to_string(),
        _ => String::new(),
    }
}

/// The state root when nothing names one, relative to the current directory.
const DEFAULT_STATE_DIR: &str = "var/maestro";

/// How long a PostgreSQL lease outlives its holder when nothing says otherwise.
const DEFAULT_LEASE_TTL_SECONDS: f64 = 15.0;

/// The longest stop grace a setting may give.
const MAX_STOP_GRACE_SECONDS: f64 = 3600.0;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "snake_case")]
pub(crate) enum Origin {
    /// A command-line flag, e.g. `--stop-grace`.
    Flag(String),
    /// An environment variable.
    Env(String),
    /// A `maestro.toml`.
    File(PathBuf),
    /// Nothing set it.
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Flag(flag) => write!(f, "flag --{flag}"),
            Self::Env(name) => write!(f, "environment {name}"),
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Default => f.write_str("default"),
        }
    }
}

/// A raw value and where it came from, to be parsed by its setting's parser.
#[derive(Debug, Clone)]
struct Raw {
    text: String,
    origin: Origin,
}

impl Raw {
    /// The value as it was written, for an error message: `--stop-grace 1e999`,
    /// `MAESTRO_STOP_GRACE=1e999`, `stop_grace = 1e999 in /etc/…/maestro.toml`.
    fn shown(&self, key: &str) -> String {
        self.shown_as(key, &self.text)
    }

    /// [`Raw::shown`] with the value as `mask` shows it (a URL without its password): the
    /// value alone is masked, never what says where it came from.
    fn shown_masked(&self, key: &str, mask: fn(&str) -> String) -> String {
        self.shown_as(key, &mask(&self.text))
    }

    fn shown_as(&self, key: &str, text: &str) -> String {
        match &self.origin {
            Origin::Flag(flag) => format!("--{flag} {text}"),
            Origin::Env(name) => format!("{name}={text}"),
            Origin::File(path) => format!("{key} = {text} in {}", path.display()),
            Origin::Default => format!("the default {key} {text}"),
        }
    }
}

/// The flags of one command that set settings; `None` for flags it does not have or that were
/// not given.
#[derive(Debug, Default, Clone)]
pub(crate) struct Flags {
    pub(crate) default_step_timeout: Option<String>,
    pub(crate) max_step_timeout: Option<String>,
    pub(crate) allowed_host_access: Option<String>,
    pub(crate) stop_grace: Option<String>,
    pub(crate) max_step_output: Option<String>,
}

impl Flags {
    fn get(&self, key: &str) -> Option<&String> {
        match key {
            "default_step_timeout" => self.default_step_timeout.as_ref(),
            "max_step_timeout" => self.max_step_timeout.as_ref(),
            "allowed_host_access" => self.allowed_host_access.as_ref(),
            "stop_grace" => self.stop_grace.as_ref(),
            "max_step_output" => self.max_step_output.as_ref(),
            _ => None,
        }
    }
}

/// One `maestro.toml` that was looked for.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ConfigFile {
    pub(crate) path: PathBuf,
    pub(crate) found: bool,
}

/// Every setting resolved, with where each came from.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) state_root: PathBuf,
    pub(crate) policy: PolicyConfig,
    pub(crate) stop_grace: Duration,
    pub(crate) max_step_output: u64,
    /// The PostgreSQL database to record into instead of the state root's files.
    pub(crate) state_url: Option<String>,
    /// How long a PostgreSQL lease outlives its holder.
    pub(crate) lease_ttl: Duration,
    /// `(key, effective value as text, origin)` for every setting, in [`SETTINGS`] order.
    pub(crate) effective: Vec<(&'static str, String, Origin)>,
    /// The files looked for, in the order they are read (a later one wins).
    pub(crate) files: Vec<ConfigFile>,
}

/// The user's configuration file: `$XDG_CONFIG_HOME/maestro/maestro.toml`, or
/// `~/.config/maestro/maestro.toml` when `XDG_CONFIG_HOME` is unset.
fn user_config_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))?;
    Some(base.join("maestro").join(CONFIG_FILE))
}

/// A `maestro.toml`'s settings as text, or an error naming the file and the key.
fn read_config_file(
    path: &Path,
    allowed: &[&str],
) -> Result<Option<BTreeMap<String, Raw>>, Failure> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        // No file, or no directory to hold one (a state root not yet created, or not a
        // directory: using it fails later with the right error).
        Err(error)
            if matches!(
                error.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(None);
        }
        // Not text: the file's mistake, as invalid TOML is.
        Err(error) if error.kind() == std::io::ErrorKind::InvalidData => {
            return Err(Failure::usage(format!(
                "{}: invalid TOML: the file is not UTF-8 text",
                path.display()
            )));
        }
        Err(error) => {
            return Err(Failure::system(format!(
                "cannot read {}: {error}",
                path.display()
            )));
        }
    };
    let table: toml::Table = text.parse().map_err(|error: toml::de::Error| {
        let position = error
            .span()
            .map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |at| at + 1) + 1;
                format!(":{line}:{column}")
            })
            .unwrap_or_default();
        Failure::usage(format!(
            "{}{position}: invalid TOML: {}",
            path.display(),
            error.message()
        ))
    })?;
    let mut values = BTreeMap::new();
    for (key, value) in table {
        if !allowed.contains(&key.as_str()) {
            // The settings this file may hold: `state_dir` is not one of the state root's own.
            let mut message = format!("{}: unknown setting `{key}`", path.display());
            if key == "state_dir" {
                message = format!(
                    "{}: `state_dir` cannot be set here: the state root's own file cannot move the state root (set it in the user's file, with --state-dir or MAESTRO_HOME)",
                    path.display()
                );
            } else if let Some(close) = did_you_mean(&key, allowed.iter().copied()) {
                message.push_str(&format!("; did you mean `{close}`?"));
            }
            return Err(Failure::usage(message).hint(format!(
                "the settings this file may hold are {}; see `mc config`",
                allowed.join(", ")
            )));
        }
        let text = match &value {
            toml::Value::String(text) => text.clone(),
            toml::Value::Integer(number) => number.to_string(),
            toml::Value::Float(number) => number.to_string(),
            toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => items
                .iter()
                .filter_map(toml::Value::as_str)
                .collect::<Vec<_>>()
                .join(","),
            other => {
                return Err(Failure::usage(format!(
                    "{}: `{key}` must be a number or a string (or a list of strings), not {}",
                    path.display(),
                    other.type_str()
                )));
            }
        };
        values.insert(
            key,
            Raw {
                text,
                origin: Origin::File(path.to_path_buf()),
            },
        );
    }
    Ok(Some(values))
}

/// The keys a file may set: all of them in the user's file, all but `state_dir` in the state
/// root's own.
fn keys(with_state_dir: bool) -> Vec<&'static str> {
    SETTINGS
        .iter()
        .map(|setting| setting.key)
        .filter(|key| with_state_dir || *key != "state_dir")
        .collect()
}

/// The first of: the flag, the environment variable, the files (`files` in order, a later one
/// winning), the default.
fn pick(setting: &Setting, flag: Option<&String>, files: &[BTreeMap<String, Raw>]) -> Raw {
    if let Some(text) = flag {
        return Raw {
            text: text.clone(),
            origin: Origin::Flag(setting.flag.to_owned()),
        };
    }
    if let Some(text) = std::env::var_os(setting.env) {
        return Raw {
            text: text.to_string_lossy().into_owned(),
            origin: Origin::Env(setting.env.to_owned()),
        };
    }
    if let Some(raw) = files.iter().rev().find_map(|file| file.get(setting.key)) {
        return raw.clone();
    }
    Raw {
        text: default_text(setting.key),
        origin: Origin::Default,
    }
}

fn setting(key: &str) -> &'static Setting {
    SETTINGS
        .iter()
        .find(|setting| setting.key == key)
        .expect("every key used is in SETTINGS")
}

/// The state root: `--state-dir`, else `MAESTRO_HOME`, else `state_dir` in the user's
/// `maestro.toml`, else `var/maestro` under the current directory; made absolute so that the
/// record of a job does not depend on where a later `mc status` runs.
pub(crate) fn state_root(global: &GlobalArgs) -> Result<PathBuf, Failure> {
    Ok(locate_state_root(global)?.root)
}

/// The state root, how it was chosen, and the user's file that may have chosen it.
struct StateRoot {
    root: PathBuf,
    raw: Raw,
    user_file: Option<ConfigFile>,
    user_values: Option<BTreeMap<String, Raw>>,
}

fn locate_state_root(global: &GlobalArgs) -> Result<StateRoot, Failure> {
    let user_file = user_config_file();
    let user_values = match &user_file {
        Some(path) => read_config_file(path, &keys(true))?,
        None => None,
    };
    let flag = global
        .state_dir
        .as_ref()
        .map(|dir| dir.to_string_lossy().into_owned());
    let raw = pick(setting("state_dir"), flag.as_ref(), user_values.as_slice());
    if raw.text.is_empty() {
        return Err(Failure::usage(format!(
            "{}: the state root is an empty path",
            raw.shown("state_dir")
        ))
        .hint("pass --state-dir DIR or set MAESTRO_HOME"));
    }
    let root = current_dir()?.join(&raw.text);
    let file = user_file.map(|path| ConfigFile {
        found: user_values.is_some(),
        path,
    });
    Ok(StateRoot {
        root,
        raw,
        user_file: file,
        user_values,
    })
}

/// Every setting, resolved for a command with these flags.
pub(crate) fn resolve(global: &GlobalArgs, flags: &Flags) -> Result<Settings, Failure> {
    let StateRoot {
        root: state_root,
        raw: state_raw,
        user_file,
        user_values,
    } = locate_state_root(global)?;
    let root_file = state_root.join(CONFIG_FILE);
    let root_values = read_config_file(&root_file, &keys(false))?;
    let mut files = Vec::new();
    files.extend(user_file);
    files.push(ConfigFile {
        path: root_file,
        found: root_values.is_some(),
    });
    let values: Vec<BTreeMap<String, Raw>> = user_values.into_iter().chain(root_values).collect();

    let raw = |key: &str| pick(setting(key), flags.get(key), &values);
    let default_step_timeout = raw("default_step_timeout");
    let max_step_timeout = raw("max_step_timeout");
    let allowed_host_access = raw("allowed_host_access");
    let stop_grace = raw("stop_grace");
    let policy = PolicyConfig {
        default_step_timeout: timeout(&default_step_timeout, "default_step_timeout")?,
        max_step_timeout: timeout(&max_step_timeout, "max_step_timeout")?,
        allowed_host_access: host_access(&allowed_host_access)?,
        // No step may make the state root writable: it holds every job's history.
        protected_paths: vec![state_root.clone()],
    };
    let stop_grace_value = grace(&stop_grace)?;
    let max_step_output = raw("max_step_output");
    let max_step_output_value = output_cap(&max_step_output)?;
    let state_url = pick(setting("state_url"), global.state_url.as_ref(), &values);
    let state_url_value = postgres_url(&state_url)?;
    let lease_ttl = pick(setting("lease_ttl"), global.lease_ttl.as_ref(), &values);
    let lease_ttl_value = lease_time(&lease_ttl)?;
    let effective = vec![
        (
            "state_dir",
            state_root.display().to_string(),
            state_raw.origin,
        ),
        (
            "default_step_timeout",
            policy.default_step_timeout.as_secs().to_string(),
            default_step_timeout.origin,
        ),
        (
            "max_step_timeout",
            policy.max_step_timeout.as_secs().to_string(),
            max_step_timeout.origin,
        ),
        (
            "allowed_host_access",
            host_access_text(&policy.allowed_host_access),
            allowed_host_access.origin,
        ),
        (
            "stop_grace",
            stop_grace_value.as_secs_f64().to_string(),
            stop_grace.origin,
        ),
        (
            "max_step_output",
            max_step_output_value.to_string(),
            max_step_output.origin,
        ),
        (
            "state_url",
            state_url_value
                .as_deref()
                .map_or_else(|| "none".to_owned(), without_password),
            state_url.origin,
        ),
        (
            "lease_ttl",
            lease_ttl_value.as_secs_f64().to_string(),
            lease_ttl.origin,
        ),
    ];
    Ok(Settings {
        state_root,
        policy,
        stop_grace: stop_grace_value,
        max_step_output: max_step_output_value,
        state_url: state_url_value,
        lease_ttl: lease_ttl_value,
        effective,
        files,
    })
}

fn timeout(raw: &Raw, key: &str) -> Result<Duration, Failure> {
    match raw.text.trim().parse::<u64>() {
        Ok(seconds) if (1..=MAX_TIMEOUT_SECONDS).contains(&seconds) => {
            Ok(Duration::from_secs(seconds))
        }
        _ => Err(Failure::usage(format!(
            "{}: must be a whole number of seconds from 1 to {MAX_TIMEOUT_SECONDS} (one year)",
            raw.shown(key)
        ))),
    }
}

/// A PostgreSQL URL, or `None` (the file store) when empty or `none`.
fn postgres_url(raw: &Raw) -> Result<Option<String>, Failure> {
    let text = raw.text.trim();
    if text.is_empty() || text == "none" {
        return Ok(None);
    }
    if let Some(rest) = text
        .strip_prefix("postgres://")
        .or_else(|| text.strip_prefix("postgresql://"))
    {
        // The host is the user's to name: a URL without one is a mistake in it, said as such,
        // not a connection that fails.
        let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
        let host = authority
            .rsplit_once('@')
            .map_or(authority, |(_, host)| host);
        // Without its port (`[::1]:5432` keeps its brackets).
        let host = if host.starts_with('[') {
            host
        } else {
            host.split(':').next().unwrap_or_default()
        };
        let query = rest.split_once('?').map_or("", |(_, query)| query);
        let host_parameter = query.split('&').any(|pair| {
            pair.split_once('=').is_some_and(|(key, value)| {
                (key == "host" || key == "hostaddr") && !value.is_empty()
            })
        });
        if host.is_empty() && !host_parameter {
            return Err(Failure::usage(format!(
                "{}: the URL names no database server",
                raw.shown_masked("state_url", without_password)
            ))
            .hint("name its host, as in postgres://maestro@db.example:5432/maestro"));
        }
        Ok(Some(text.to_owned()))
    } else {
        Err(Failure::usage(format!(
            "{}: only PostgreSQL URLs are supported, such as postgres://maestro@db.example:5432/maestro",
            raw.shown_masked("state_url", without_password)
        ))
        .hint("leave it empty (or none) to use the state root's files"))
    }
}

/// A URL with its passwords, if any, replaced by `***`, for messages and `mc config`: the one
/// in its authority (`user:password@`) and any `password` or `sslpassword` query parameter.
/// Not a URL (libpq's `key=value` form, which no store accepts but a user may type): every
/// `password` and `sslpassword` value is replaced.
pub(crate) fn without_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        return url_without_password(&format!("{scheme}://"), rest);
    }
    // libpq's `key=value` form, or a URL mistyped (`postgres:/user:password@host`): its user,
    // password and parameters are found as in a URL, whatever comes before them.
    let conninfo = url.split_once('=').is_some_and(|(key, _)| {
        key.trim()
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    });
    if conninfo {
        return conninfo_without_password(url);
    }
    // A scheme only when a slash follows it (`postgres:/`, `postgres//`): in `user:password@`
    // without one, what precedes the `:` is the user.
    let scheme_end = url
        .find(|c: char| !(c.is_ascii_alphanumeric() || "+.-".contains(c)))
        .unwrap_or(url.len());
    let after = &url[scheme_end..];
    let slashes = if after.starts_with(":/") || after.starts_with("//") {
        url.len() - after.trim_start_matches([':', '/']).len()
    } else {
        0
    };
    let (scheme, rest) = url.split_at(slashes);
    url_without_password(scheme, rest)
}

/// A URL's `rest` after its `scheme` (with its separator) with its passwords masked: the one
/// in its authority and any `password` or `sslpassword` query parameter.
fn url_without_password(scheme: &str, rest: &str) -> String {
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (mut authority, mut path) = rest.split_at(authority_end);
    if path.contains('@') {
        // An `@` past the authority: a password with an unencoded `/`, `?` or `#` and `@` (or an
        // `@` in the query). Everything up to the last `@` is taken for the user and password,
        // so that no part of a password is shown.
        if let Some(at) = rest.rfind('@') {
            let host_end = rest[at..]
                .find(['/', '?', '#'])
                .map_or(rest.len(), |end| at + end);
            (authority, path) = rest.split_at(host_end);
        }
    }
    let authority = match authority.rsplit_once('@') {
        Some((user, host)) if user.contains(':') => {
            let name = user.split(':').next().unwrap_or_default();
            format!("{name}:***@{host}")
        }
        _ => authority.to_owned(),
    };
    let path = match path.split_once('?') {
        None => path.to_owned(),
        Some((path, query)) => {
            let query: Vec<String> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    // The name as the driver reads it: percent-decoded (`pass%77ord`).
                    Some((key, _))
                        if maestro_postgres::percent_decode(key)
                            .eq_ignore_ascii_case("password")
                            || maestro_postgres::percent_decode(key)
                                .eq_ignore_ascii_case("sslpassword") =>
                    {
                        format!("{key}=***")
                    }
                    _ => pair.to_owned(),
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
    };
    format!("{scheme}{authority}{path}")
}

/// `key=value` pairs (libpq's connection string) with their `password` and `sslpassword`
/// values replaced by `***`, quoted values included.
fn conninfo_without_password(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let lower = rest.to_ascii_lowercase();
        let Some(at) = ["password", "sslpassword"]
            .iter()
            .filter_map(|key| lower.find(key).map(|at| (at, key.len())))
            .min()
        else {
            shown.push_str(rest);
            break;
        };
        let (at, key_len) = at;
        let after_key = &rest[at + key_len..];
        let spaced = after_key.trim_start();
        let Some(value) = spaced.strip_prefix('=') else {
            shown.push_str(&rest[..at + key_len]);
            rest = after_key;
            continue;
        };
        let value = value.trim_start();
        let end = if let Some(quoted) = value.strip_prefix('\'') {
            // Up to the closing quote that is not escaped with a backslash.
            let mut escaped = false;
            quoted
                .char_indices()
                .find(|&(_, c)| {
                    let close = c == '\'' && !escaped;
                    escaped = c == '\\' && !escaped;
                    close
                })
                .map_or(value.len(), |(index, _)| index + 2)
        } else {
            value.find(char::is_whitespace).unwrap_or(value.len())
        };
        shown.push_str(&rest[..at + key_len]);
        shown.push_str("=***");
        rest = &value[end..];
    }
    shown
}

fn lease_time(raw: &Raw) -> Result<Duration, Failure> {
    raw.text
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|seconds| (0.5..=3600.0).contains(seconds))
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .ok_or_else(|| {
            Failure::usage(format!(
                "{}: must be a number of seconds from 0.5 to 3600, such as 15",
                raw.shown("lease_ttl")
            ))
        })
}

fn grace(raw: &Raw) -> Result<Duration, Failure> {
    let text = raw.text.trim();
    let is_decimal = !text.is_empty()
        && text.chars().all(|c| c.is_ascii_digit() || c == '.')
        && text.matches('.').count() <= 1
        && text != ".";
    text.parse::<f64>()
        .ok()
        .filter(|seconds| is_decimal && *seconds <= MAX_STOP_GRACE_SECONDS)
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .ok_or_else(|| {
            Failure::usage(format!(
                "{}: must be a number of seconds from 0 to {MAX_STOP_GRACE_SECONDS}, such as 5 or 0.5",
                raw.shown("stop_grace")
            ))
        })
}

fn output_cap(raw: &Raw) -> Result<u64, Failure> {
    maestro_core::spec::parse_memory(raw.text.trim())
        .and_then(|bytes| u64::try_from(bytes).ok())
        .ok_or_else(|| {
            Failure::usage(format!(
                "{}: must be a size such as 64m, 1g or a byte count",
                raw.shown("max_step_output")
            ))
        })
}

fn host_access(raw: &Raw) -> Result<std::collections::BTreeSet<HostAccess>, Failure> {
    match raw.text.trim() {
        "none" | "" => Ok(Default::default()),
        list => list
            .split(',')
            .map(|name| {
                let name = name.trim();
                HostAccess::ALL
                    .into_iter()
                    .find(|access| access.name() == name)
                    .ok_or_else(|| {
                        let mut message = format!(
                            "{}: unknown host resource {name:?}",
                            raw.shown("allowed_host_access")
                        );
                        if let Some(close) =
                            did_you_mean(name, HostAccess::ALL.iter().map(|access| access.name()))
                        {
                            message.push_str(&format!("; did you mean {close:?}?"));
                        }
                        Failure::usage(message).hint(format!(
                            "the names are those of a spec's host_access: {}; or none",
                            HostAccess::ALL.map(HostAccess::name).join(", ")
                        ))
                    })
            })
            .collect(),
    }
}

fn host_access_text(names: &std::collections::BTreeSet<HostAccess>) -> String {
    if names.is_empty() {
        "none".to_owned()
    } else {
        names
            .iter()
            .map(|access| access.name())
            .collect::<Vec<_>>()
            .join(",")
    }
}

pub(crate) fn current_dir() -> Result<PathBuf, Failure> {
    std::env::current_dir()
        .map_err(|error| Failure::system(format!("cannot read the current directory: {error}")))
}

/// Add each setting's variable, file key and default to the help of its flag, from
/// [`SETTINGS`], so that no default is written twice.
pub(crate) fn document(command: clap::Command) -> clap::Command {
    let command = command.mut_args(document_arg);
    command.mut_subcommands(document)
}

fn document_arg(arg: clap::Arg) -> clap::Arg {
    let Some(setting) = SETTINGS
        .iter()
        .find(|setting| arg.get_long() == Some(setting.flag))
    else {
        return arg;
    };
    let help = arg.get_help().map(ToString::to_string).unwrap_or_default();
    let default = match setting.key {
        // Fourteen names would drown the help; `mc config` lists them.
        "allowed_host_access" => "every one but docker-socket".to_owned(),
        "state_url" => "none: the state root's files".to_owned(),
        key => default_text(key),
    };
    arg.help(format!(
        "{help} [env: {}] [maestro.toml: {}] [default: {default}]",
        setting.env, setting.key,
    ))
    .allow_hyphen_values(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flag(key: &str, text: &str) -> Raw {
        Raw {
            text: text.to_owned(),
            origin: Origin::Flag(setting(key).flag.to_owned()),
        }
    }

    fn message(failure: Failure) -> String {
        format!("{failure:?}")
    }

    #[test]
    fn stop_grace_accepts_plain_seconds_only() {
        assert_eq!(
            grace(&flag("stop_grace", "0.5")).unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            grace(&flag("stop_grace", "3600")).unwrap(),
            Duration::from_secs(3600)
        );
        assert_eq!(grace(&flag("stop_grace", "0")).unwrap(), Duration::ZERO);
        for bad in [
            "-1",
            "3600.5",
            "nan",
            "inf",
            "1e3",
            "",
            ".",
            "5s",
            "18446744073709551615",
        ] {
            let error = message(grace(&flag("stop_grace", bad)).unwrap_err());
            assert!(
                error.contains(&format!("--stop-grace {bad}: must be")),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn timeouts_are_whole_seconds_within_a_year() {
        let raw = Raw {
            text: "1200".to_owned(),
            origin: Origin::File(PathBuf::from("/etc/maestro.toml")),
        };
        assert_eq!(
            timeout(&raw, "max_step_timeout").unwrap(),
            Duration::from_secs(1200)
        );
        for bad in ["0", "1.5", "-3", "31536001", "soon"] {
            let raw = Raw {
                text: bad.to_owned(),
                origin: Origin::File(PathBuf::from("/etc/maestro.toml")),
            };
            let error = message(timeout(&raw, "max_step_timeout").unwrap_err());
            assert!(
                error.contains(&format!(
                    "max_step_timeout = {bad} in /etc/maestro.toml: must be"
                )),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn every_setting_has_a_default_and_a_distinct_name() {
        let mut keys = std::collections::BTreeSet::new();
        for setting in &SETTINGS {
            assert!(!default_text(setting.key).is_empty(), "{}", setting.key);
            assert!(keys.insert(setting.key));
            assert_eq!(setting.flag.replace('-', "_"), setting.key);
        }
        assert_eq!(default_text("stop_grace"), "5");
        assert_eq!(default_text("max_step_timeout"), "3600");
    }

    #[test]
    fn state_urls_are_postgres_urls_and_passwords_are_never_shown() {
        let raw = |text: &str| Raw {
            text: text.to_owned(),
            origin: Origin::Env("MAESTRO_STATE_URL".to_owned()),
        };
        assert_eq!(postgres_url(&raw("")).unwrap(), None);
        assert_eq!(postgres_url(&raw("none")).unwrap(), None);
        assert_eq!(
            postgres_url(&raw("postgresql://m@db/x"))
                .unwrap()
                .as_deref(),
            Some("postgresql://m@db/x")
        );
        for hostless in [
            "postgres://",
            "postgres://m:hunter2@/x",
            "postgresql://m@:5432/x",
        ] {
            let error = message(postgres_url(&raw(hostless)).unwrap_err());
            assert!(
                error.contains("names no database server") && !error.contains("hunter2"),
                "{error}"
            );
        }
        assert!(postgres_url(&raw("postgres:///x?host=/run/postgresql")).is_ok());
        // Mistyped, from the environment and from a file: the origin is shown, the password
        // is not.
        for mistyped in [
            "postgres:/m:hunter2@db:5432/x",
            "postgres//m@db/x?password=hunter2",
            "m:hunter2@db:5432/x",
        ] {
            let from_file = Raw {
                text: mistyped.to_owned(),
                origin: Origin::File(PathBuf::from("/etc/maestro.toml")),
            };
            for raw in [raw(mistyped), from_file] {
                let error = message(postgres_url(&raw).unwrap_err());
                assert!(
                    !error.contains("hunter2")
                        && (error.contains("MAESTRO_STATE_URL=") || error.contains("state_url = ")),
                    "{error}"
                );
            }
        }
        let error = message(postgres_url(&raw("mysql://m:hunter2@db/x")).unwrap_err());
        assert!(
            error.contains("only PostgreSQL URLs") && !error.contains("hunter2"),
            "{error}"
        );
        assert_eq!(
            without_password("postgres://m:hunter2@db:5432/x"),
            "postgres://m:***@db:5432/x"
        );
        assert_eq!(without_password("postgres://m@db/x"), "postgres://m@db/x");
        assert_eq!(
            without_password("postgres://m@db/x?sslmode=disable&password=hunter2"),
            "postgres://m@db/x?sslmode=disable&password=***"
        );
        assert_eq!(
            without_password("postgresql://m:a@b@db?PASSWORD=x"),
            "postgresql://m:***@db?PASSWORD=***"
        );
        // Unencoded `/`, `?`, `#` and `@` in the password: none of it is shown.
        let shown = without_password("postgres://weird:p@ss:w/rd#1?x@127.0.0.1:55433/maestro");
        assert_eq!(shown, "postgres://weird:***@127.0.0.1:55433/maestro");
        // A parameter's name percent-encoded is still a password (the driver decodes it).
        assert_eq!(
            without_password("postgres://m@db/x?pass%77ord=hunter2&sslpass%77ord=x"),
            "postgres://m@db/x?pass%77ord=***&sslpass%77ord=***"
        );
        // A URL mistyped: its password is found all the same.
        assert_eq!(
            without_password("postgres:/m:hunter2@db:5432/x"),
            "postgres:/m:***@db:5432/x"
        );
        assert_eq!(
            without_password("postgres//m:hun=ter:2@db/x"),
            "postgres//m:***@db/x"
        );
        assert_eq!(without_password("db.example/x"), "db.example/x");
        // No scheme at all: what precedes the `:` is the user.
        assert_eq!(
            without_password("mae:hunter2@127.0.0.1:5432/db"),
            "mae:***@127.0.0.1:5432/db"
        );
        assert_eq!(
            without_password("postgres:mae:hunter2@db/x"),
            "postgres:***@db/x"
        );
        assert_eq!(
            without_password("postgres:/m@db/x?password=hunter2"),
            "postgres:/m@db/x?password=***"
        );
        // libpq's key=value form.
        assert_eq!(
            without_password("host=db password=SeCret dbname=maestro"),
            "host=db password=*** dbname=maestro"
        );
        assert_eq!(
            without_password("host=db PASSWORD = 'Se cr\\'et' sslpassword=x user=m"),
            "host=db PASSWORD=*** sslpassword=*** user=m"
        );
    }
}
