//! Bearer tokens: identities and roles, stored as SHA-256 hashes in `<state root>/tokens.json`.
//!
//! A token is shown once, when it is made, and never stored: the file keeps its hash only, is
//! written atomically with mode 0600, and is read again for every request, so `mc tokens
//! revoke` takes effect at once on a running server.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What an identity may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Submit jobs; read jobs and logs.
    Submit,
    /// Approve or reject jobs awaiting approval (never one's own).
    Approve,
    /// Cancel any job.
    Cancel,
    /// Everything, and the metrics.
    Admin,
}

impl Role {
    /// Every role, in order.
    pub const ALL: [Role; 4] = [Role::Submit, Role::Approve, Role::Cancel, Role::Admin];

    /// The role's name, e.g. `approve`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Submit => "submit",
            Role::Approve => "approve",
            Role::Cancel => "cancel",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TokenError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| TokenError::UnknownRole(text.to_owned()))
    }
}

/// One stored token: who it is, what it may do, and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenEntry {
    /// A short public id, for `mc tokens revoke`.
    pub id: String,
    /// The identity requests with this token act as.
    pub identity: String,
    /// What it may do.
    pub roles: Vec<Role>,
    /// Hex SHA-256 of the token.
    pub sha256: String,
    /// When it was made, RFC 3339 UTC.
    pub created_at: String,
}

impl TokenEntry {
    /// Whether the token may act in `role` (`admin` may do everything).
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }
}

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Not a role name.
    #[error("unknown role {0:?}: roles are submit, approve, cancel, admin")]
    UnknownRole(String),
    /// No role given.
    #[error("a token needs at least one role (--roles submit,approve,cancel,admin)")]
    NoRoles,
    /// The identity is not one policy would accept.
    #[error("invalid identity {identity:?}: {reason}")]
    Identity {
        /// The identity given.
        identity: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Nothing to revoke.
    #[error("no token has the id or identity {0:?}")]
    NotFound(String),
    /// The token file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The token file is not what Maestro writes.
    #[error("corrupt token file {}: {message}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The token file of a state root.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
}

/// A newly made token: shown once.
#[derive(Debug)]
pub struct NewToken {
    /// What is stored about it.
    pub entry: TokenEntry,
    /// The secret itself; never stored.
    pub token: String,
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Compare two strings in time that does not depend on where they differ.
fn constant_time_eq(left: &str, right: &str) -> bool {
    left.len() == right.len()
        && left
            .bytes()
            .zip(right.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

impl TokenStore {
    /// The token file under `state_root`.
    pub fn new(state_root: &Path) -> Self {
        Self {
            path: state_root.join("tokens.json"),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every stored token (hashes only), oldest first.
    pub fn list(&self) -> Result<Vec<TokenEntry>, TokenError> {
        match fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|error| TokenError::Corrupt {
                path: self.path.clone(),
                message: error.to_string(),
            }),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(TokenError::Io {
                action: "read",
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Make a token for `identity` with `roles`; only its hash is stored.
    pub fn add(&self, identity: &str, roles: &[Role]) -> Result<NewToken, TokenError> {
        if identity.trim().is_empty() {
            return Err(TokenError::Identity {
                identity: identity.to_owned(),
                reason: "is empty".to_owned(),
            });
        }
        if let Some(reason) = maestro_core::identity::check(identity) {
            return Err(TokenError::Identity {
                identity: identity.to_owned(),
                reason,
            });
        }
        if roles.is_empty() {
            return Err(TokenError::NoRoles);
        }
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        // 244 random bits from the operating system's generator (two version-4 UUIDs).
        let token = format!(
            "mct_{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let entry = TokenEntry {
            id,
            identity: identity.trim().to_owned(),
            roles,
            sha256: sha256_hex(&token),
            created_at: maestro_core::time::now_rfc3339(),
        };
        let mut entries = self.list()?;
        entries.push(entry.clone());
        self.write(&entries)?;
        Ok(NewToken { entry, token })
    }

    /// Remove every token whose id or identity is `which`; returns what was removed.
    pub fn revoke(&self, which: &str) -> Result<Vec<TokenEntry>, TokenError> {
        let entries = self.list()?;
        let (removed, kept): (Vec<_>, Vec<_>) = entries.into_iter().partition(|entry| {
            entry.id == which.trim()
                || maestro_core::identity::same_identity(&entry.identity, which)
        });
        if removed.is_empty() {
            return Err(TokenError::NotFound(which.to_owned()));
        }
        self.write(&kept)?;
        Ok(removed)
    }

    /// The stored entry for a presented token, if any.
    pub fn authenticate(&self, token: &str) -> Result<Option<TokenEntry>, TokenError> {
        let hash = sha256_hex(token);
        Ok(self
            .list()?
            .into_iter()
            .find(|entry| constant_time_eq(&entry.sha256, &hash)))
    }

    fn write(&self, entries: &[TokenEntry]) -> Result<(), TokenError> {
        let io_error = |action: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| TokenError::Io {
                action,
                path,
                source,
            }
        };
        let dir = self.path.parent().unwrap_or(Path::new("."));
        crate::create_private_dir(dir).map_err(io_error("create", dir))?;
        let temp = dir.join(format!(".tokens.{}.tmp", uuid::Uuid::new_v4().simple()));
        let content = serde_json::to_vec_pretty(entries).unwrap_or_default();
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(&content)?;
            file.write_all(b"\n")?;
            file.sync_all()?;
            fs::rename(&temp, &self.path)?;
            crate::sync_dir(dir)
        })();
        if result.is_err() {
            let _ = fs::remove_file(&temp);
        }
        result.map_err(io_error("write", &self.path))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn tokens_are_stored_hashed_and_private_and_can_be_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        let made = store.add("ana", &[Role::Submit, Role::Submit]).unwrap();
        assert_eq!(made.entry.roles, [Role::Submit]);
        let file = fs::read_to_string(store.path()).unwrap();
        assert!(
            !file.contains(&made.token),
            "the token itself is never stored"
        );
        let mode = fs::metadata(store.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let found = store.authenticate(&made.token).unwrap().unwrap();
        assert_eq!(found.identity, "ana");
        assert!(store.authenticate("mct_wrong").unwrap().is_none());
        store.revoke("ana").unwrap();
        assert!(store.authenticate(&made.token).unwrap().is_none());
        assert!(matches!(store.revoke("ana"), Err(TokenError::NotFound(_))));
    }

    #[test]
    fn bad_roles_and_identities_are_refused() {
        assert!(matches!(
            "root".parse::<Role>(),
            Err(TokenError::UnknownRole(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path());
        assert!(matches!(store.add("ana", &[]), Err(TokenError::NoRoles)));
        assert!(matches!(
            store.add(" ", &[Role::Submit]),
            Err(TokenError::Identity { .. })
        ));
    }
}
