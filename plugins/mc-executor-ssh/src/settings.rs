//! A step's `with` object for the ssh runtime, validated.

use serde::Deserialize;
use serde_json::Value;

/// The settings, whether required, and what they do (for `describe` and the README).
pub(crate) const DOCUMENTED: &[(&str, bool, &str)] = &[
    ("host", true, "the remote host name or address"),
    ("port", false, "the SSH port (default 22)"),
    (
        "user",
        false,
        "the remote user (default: ssh's own default)",
    ),
    (
        "identity_file",
        false,
        "private key file to log in with (IdentitiesOnly)",
    ),
    (
        "known_hosts",
        false,
        "known_hosts file to check the host key against",
    ),
    (
        "strict_host_key_checking",
        false,
        "yes (default), accept-new or no",
    ),
    (
        "connect_timeout_seconds",
        false,
        "connection timeout (default 10)",
    ),
    (
        "remote_grace_seconds",
        false,
        "how long the remote command gets between SIGTERM and SIGKILL once the session ends (default 5)",
    ),
    ("ssh_program", false, "the ssh client to run (default ssh)"),
];

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    host: Option<String>,
    port: Option<u16>,
    user: Option<String>,
    identity_file: Option<String>,
    known_hosts: Option<String>,
    strict_host_key_checking: Option<String>,
    connect_timeout_seconds: Option<u32>,
    remote_grace_seconds: Option<u32>,
    ssh_program: Option<String>,
}

/// Validated settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SshSettings {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) user: Option<String>,
    pub(crate) identity_file: Option<String>,
    pub(crate) known_hosts: Option<String>,
    pub(crate) strict_host_key_checking: String,
    pub(crate) connect_timeout_seconds: u32,
    pub(crate) remote_grace_seconds: u32,
    pub(crate) ssh_program: String,
}

/// A value that must not be taken for an option by `ssh` or break an `-o key=value` pair.
fn plain(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if value.starts_with('-') {
        return Err(format!("{what} {value:?} must not start with '-'"));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "{what} {value:?} must not contain spaces or control characters"
        ));
    }
    Ok(())
}

impl SshSettings {
    /// Parse and check a step's `with` object.
    pub(crate) fn parse(with: Option<&Value>) -> Result<Self, String> {
        let Some(with) = with else {
            return Err("the ssh runtime needs `with: { host: ... }`".to_owned());
        };
        let raw: Raw = serde_json::from_value(with.clone()).map_err(|error| {
            format!(
                "{error} (known settings: {})",
                DOCUMENTED
                    .iter()
                    .map(|(name, _, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        let host = raw.host.ok_or("`host` is required")?;
        plain("host", &host)?;
        if let Some(user) = &raw.user {
            plain("user", user)?;
            if !user
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            {
                return Err(format!(
                    "user {user:?} may hold only letters, digits, '.', '_' and '-'"
                ));
            }
        }
        for (what, value) in [
            ("identity_file", &raw.identity_file),
            ("known_hosts", &raw.known_hosts),
        ] {
            if let Some(value) = value {
                plain(what, value)?;
            }
        }
        let strict = raw
            .strict_host_key_checking
            .unwrap_or_else(|| "yes".to_owned());
        if !matches!(strict.as_str(), "yes" | "accept-new" | "no") {
            return Err(format!(
                "strict_host_key_checking {strict:?} must be yes, accept-new or no"
            ));
        }
        if raw.port == Some(0) {
            return Err("port 0 is not a port".to_owned());
        }
        Ok(Self {
            host,
            port: raw.port.unwrap_or(22),
            user: raw.user,
            identity_file: raw.identity_file,
            known_hosts: raw.known_hosts,
            strict_host_key_checking: strict,
            connect_timeout_seconds: raw.connect_timeout_seconds.unwrap_or(10).max(1),
            remote_grace_seconds: raw.remote_grace_seconds.unwrap_or(5),
            ssh_program: raw.ssh_program.unwrap_or_else(|| "ssh".to_owned()),
        })
    }

    /// `user@host:port`, for messages.
    pub(crate) fn target(&self) -> String {
        match &self.user {
            Some(user) => format!("{user}@{}:{}", self.host, self.port),
            None => format!("{}:{}", self.host, self.port),
        }
    }

    /// The `ssh` arguments up to and including the destination.
    pub(crate) fn ssh_args(&self) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "-T".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            "LogLevel=ERROR".into(),
            "-o".into(),
            format!("StrictHostKeyChecking={}", self.strict_host_key_checking),
            "-o".into(),
            format!("ConnectTimeout={}", self.connect_timeout_seconds),
            "-o".into(),
            "ServerAliveInterval=15".into(),
            "-o".into(),
            "ServerAliveCountMax=3".into(),
            "-p".into(),
            self.port.to_string(),
        ];
        if let Some(known_hosts) = &self.known_hosts {
            args.extend(["-o".into(), format!("UserKnownHostsFile={known_hosts}")]);
        }
        if let Some(identity) = &self.identity_file {
            args.extend([
                "-i".into(),
                identity.clone(),
                "-o".into(),
                "IdentitiesOnly=yes".into(),
            ]);
        }
        if let Some(user) = &self.user {
            args.extend(["-l".into(), user.clone()]);
        }
        args.extend(["--".into(), self.host.clone()]);
        args
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_and_arguments() {
        let settings =
            SshSettings::parse(Some(&json!({"host": "10.0.0.5", "user": "ci"}))).unwrap();
        assert_eq!(settings.port, 22);
        assert_eq!(settings.target(), "ci@10.0.0.5:22");
        let args = settings.ssh_args();
        assert!(args.contains(&"StrictHostKeyChecking=yes".to_owned()));
        assert_eq!(
            args[args.len() - 2..],
            ["--".to_owned(), "10.0.0.5".to_owned()]
        );
    }

    #[test]
    fn rejects_what_ssh_could_misread() {
        for (with, needle) in [
            (json!({}), "`host` is required"),
            (
                json!({"host": "-oProxyCommand=x"}),
                "must not start with '-'",
            ),
            (json!({"host": "a b"}), "spaces"),
            (json!({"host": "h", "user": "x;y"}), "letters"),
            (json!({"host": "h", "port": 70000}), "u16"),
            (json!({"host": "h", "colour": 1}), "unknown field"),
            (
                json!({"host": "h", "strict_host_key_checking": "maybe"}),
                "accept-new",
            ),
        ] {
            let error = SshSettings::parse(Some(&with)).unwrap_err();
            assert!(error.contains(needle), "{with}: {error}");
        }
        assert!(SshSettings::parse(None).unwrap_err().contains("host"));
    }
}
