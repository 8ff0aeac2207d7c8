//! The rules a finding can name, each with its stable id and its kind.

use std::fmt;

/// What a finding says about the command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The command is shown to destroy something (`rm -rf /`, `mkfs /dev/sda`).
    Destructive,
    /// The analysis cannot prove the command harmless: part of it is only known at run time,
    /// or it is beyond what the analysis reads (too large, too complex, unparseable).
    Opaque,
}

/// A rule of the `no-destruction` analysis. [`Rule::id`] is the stable kebab-case identifier
/// shown to users and listed in `docs/policies.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    // Destructive rules.
    /// Recursive `rm` of the root filesystem.
    RmRoot,
    /// Recursive `rm` of the home directory.
    RmHome,
    /// Recursive `rm` of a top-level system directory.
    RmSystemDir,
    /// `rm --no-preserve-root`.
    RmNoPreserveRoot,
    /// `mkfs` and friends on a device.
    Mkfs,
    /// `wipefs` on a device.
    Wipefs,
    /// `shred` or `blkdiscard` of a block device.
    ShredDevice,
    /// `dd of=/dev/…`.
    DdDevice,
    /// A redirection, `tee`, `cp` or `install` onto a block device.
    BlockDeviceWrite,
    /// A function that runs itself in a pipeline or in the background.
    ForkBomb,
    /// Shutting down or rebooting the machine.
    SystemPower,
    /// Recursive `chmod`/`chown`/`chgrp` of the root or a system directory.
    RecursivePermissionChange,
    /// `find … -delete` (or `-exec rm`) from a precious directory.
    FindDelete,
    /// `DROP DATABASE|TABLE|SCHEMA` given to a database client.
    SqlDrop,
    /// `redis-cli FLUSHALL|FLUSHDB`.
    DbFlush,
    /// `terraform destroy` and its spellings.
    TerraformDestroy,
    /// `kubectl delete namespace …` or `kubectl delete --all`.
    KubectlDelete,
    /// `TRUNCATE`, `DELETE FROM t` without a `WHERE`, Mongo `deleteMany({})`.
    SqlDeleteAll,
    /// Rewriting a disk's partition table (`sgdisk --zap-all`, `parted mklabel`, `sfdisk`).
    PartitionTable,
    /// Erasing or reformatting a device (`cryptsetup luksFormat`, `nvme format`, `badblocks -w`).
    DeviceErase,
    /// Writing a kernel control file (`/proc/sysrq-trigger`, `/sys/power/state`).
    KernelInterfaceWrite,
    /// Killing every process or init (`kill -9 -1`, `killall5`, `pkill .`).
    MassKill,
    /// Deleting a system file from interpreter code (`os.remove('/etc/passwd')`).
    SystemFileDelete,
    /// `helm uninstall`.
    HelmUninstall,
    /// Cloud resources deleted (`aws … delete-…`, `gcloud … delete`, `az … delete`, `gsutil rm -r`).
    CloudDelete,
    /// `pulumi destroy`, `pulumi stack rm`.
    PulumiDestroy,
    /// Pruning or mass-removing the Docker daemon's containers, images or volumes.
    DockerDestroy,
    /// `git push --force`, `+refspec`, `--mirror`, `--delete`.
    GitForcePush,

    // Opaque rules.
    /// A script whose quoting or substitutions do not close.
    Unparseable,
    /// Scripts nested inside scripts beyond the depth the analysis follows.
    TooDeeplyNested,
    /// An input beyond the analysis's bounds: size, work, value length or time.
    TooComplex,
    /// The analysis itself failed (a bug); the command is denied rather than allowed.
    AnalysisFailed,
    /// A command name only known at run time (`$(echo rm)`, `$cmd`, `/???/r?`).
    DynamicCommand,
    /// An argument of a destructive-capable command only known at run time where it matters
    /// (`rm -rf "$UNKNOWN"`).
    DynamicArgument,
    /// Code only known at run time handed to a shell or interpreter (`curl … | sh`,
    /// `eval "$X"`, `python3 -c "$X"`).
    DynamicCode,
}

impl Rule {
    /// Every rule, destructive ones first.
    pub const ALL: &[Rule] = &[
        Rule::RmRoot,
        Rule::RmHome,
        Rule::RmSystemDir,
        Rule::RmNoPreserveRoot,
        Rule::Mkfs,
        Rule::Wipefs,
        Rule::ShredDevice,
        Rule::DdDevice,
        Rule::BlockDeviceWrite,
        Rule::ForkBomb,
        Rule::SystemPower,
        Rule::RecursivePermissionChange,
        Rule::FindDelete,
        Rule::SqlDrop,
        Rule::DbFlush,
        Rule::TerraformDestroy,
        Rule::KubectlDelete,
        Rule::SqlDeleteAll,
        Rule::PartitionTable,
        Rule::DeviceErase,
        Rule::KernelInterfaceWrite,
        Rule::MassKill,
        Rule::SystemFileDelete,
        Rule::HelmUninstall,
        Rule::CloudDelete,
        Rule::PulumiDestroy,
        Rule::DockerDestroy,
        Rule::GitForcePush,
        Rule::Unparseable,
        Rule::TooDeeplyNested,
        Rule::TooComplex,
        Rule::AnalysisFailed,
        Rule::DynamicCommand,
        Rule::DynamicArgument,
        Rule::DynamicCode,
    ];

    /// The stable kebab-case identifier, e.g. `"rm-root"`.
    #[must_use]
    pub const fn id(self) -> &'static str {
        match self {
            Rule::RmRoot => "rm-root",
            Rule::RmHome => "rm-home",
            Rule::RmSystemDir => "rm-system-dir",
            Rule::RmNoPreserveRoot => "rm-no-preserve-root",
            Rule::Mkfs => "mkfs",
            Rule::Wipefs => "wipefs",
            Rule::ShredDevice => "shred-device",
            Rule::DdDevice => "dd-device",
            Rule::BlockDeviceWrite => "block-device-write",
            Rule::ForkBomb => "fork-bomb",
            Rule::SystemPower => "system-power",
            Rule::RecursivePermissionChange => "recursive-permission-change",
            Rule::FindDelete => "find-delete",
            Rule::SqlDrop => "sql-drop",
            Rule::DbFlush => "db-flush",
            Rule::TerraformDestroy => "terraform-destroy",
            Rule::KubectlDelete => "kubectl-delete",
            Rule::SqlDeleteAll => "sql-delete-all",
            Rule::PartitionTable => "partition-table",
            Rule::DeviceErase => "device-erase",
            Rule::KernelInterfaceWrite => "kernel-interface-write",
            Rule::MassKill => "mass-kill",
            Rule::SystemFileDelete => "system-file-delete",
            Rule::HelmUninstall => "helm-uninstall",
            Rule::CloudDelete => "cloud-delete",
            Rule::PulumiDestroy => "pulumi-destroy",
            Rule::DockerDestroy => "docker-destroy",
            Rule::GitForcePush => "git-force-push",
            Rule::Unparseable => "unparseable",
            Rule::TooDeeplyNested => "too-deeply-nested",
            Rule::TooComplex => "too-complex",
            Rule::AnalysisFailed => "analysis-failed",
            Rule::DynamicCommand => "dynamic-command",
            Rule::DynamicArgument => "dynamic-argument",
            Rule::DynamicCode => "dynamic-code",
        }
    }

    /// Whether the rule shows destruction or only that harmlessness cannot be proven.
    #[must_use]
    pub const fn kind(self) -> Kind {
        match self {
            Rule::RmRoot
            | Rule::RmHome
            | Rule::RmSystemDir
            | Rule::RmNoPreserveRoot
            | Rule::Mkfs
            | Rule::Wipefs
            | Rule::ShredDevice
            | Rule::DdDevice
            | Rule::BlockDeviceWrite
            | Rule::ForkBomb
            | Rule::SystemPower
            | Rule::RecursivePermissionChange
            | Rule::FindDelete
            | Rule::SqlDrop
            | Rule::DbFlush
            | Rule::TerraformDestroy
            | Rule::KubectlDelete
            | Rule::SqlDeleteAll
            | Rule::PartitionTable
            | Rule::DeviceErase
            | Rule::KernelInterfaceWrite
            | Rule::MassKill
            | Rule::SystemFileDelete
            | Rule::HelmUninstall
            | Rule::CloudDelete
            | Rule::PulumiDestroy
            | Rule::DockerDestroy
            | Rule::GitForcePush => Kind::Destructive,
            Rule::Unparseable
            | Rule::TooDeeplyNested
            | Rule::TooComplex
            | Rule::AnalysisFailed
            | Rule::DynamicCommand
            | Rule::DynamicArgument
            | Rule::DynamicCode => Kind::Opaque,
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.id())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_kebab_case_and_all_is_complete() {
        let mut seen = std::collections::HashSet::new();
        for rule in Rule::ALL {
            let id = rule.id();
            assert!(seen.insert(id), "duplicate id {id}");
            assert!(
                id.chars().all(|c| c.is_ascii_lowercase() || c == '-'),
                "{id} is not kebab-case"
            );
            assert_eq!(rule.to_string(), id);
        }
        // `kind` and `id` are exhaustive matches, so a new variant must be added there; this
        // catches one forgotten in ALL.
        assert_eq!(Rule::ALL.len(), 35);
    }

    #[test]
    fn kinds() {
        assert_eq!(Rule::RmRoot.kind(), Kind::Destructive);
        assert_eq!(Rule::Unparseable.kind(), Kind::Opaque);
        assert_eq!(Rule::TooComplex.kind(), Kind::Opaque);
        assert_eq!(Rule::DynamicCommand.kind(), Kind::Opaque);
    }

    #[test]
    fn every_rule_is_documented() {
        let docs = include_str!("../../../docs/policies.md");
        for rule in Rule::ALL {
            assert!(
                docs.contains(&format!("| `{}` |", rule.id())),
                "rule {} is missing from the no-destruction table in docs/policies.md",
                rule.id()
            );
        }
    }
}
