//! Remote destruction that no local sandbox can stop: cloud CLIs, Helm, Pulumi, the Docker
//! daemon and force pushes.

use super::Analyzer;
use super::Rule;
use super::commands::{OptSpec, getopt_all};
use super::rules::long_opt;
use super::words::Word;

/// Operands as literal strings (dynamic ones as empty strings, so positions are kept).
fn operand_texts(operands: &[&Word]) -> Vec<String> {
    operands
        .iter()
        .map(|w| w.lit().unwrap_or_default())
        .collect()
}

fn spec(short_values: &'static str, long_values: &'static [&'static str]) -> OptSpec {
    OptSpec {
        short_values,
        short_optional: "",
        long_values,
    }
}

/// A long option or one of its unambiguous abbreviations (`--forc` for `--force`).
fn has_long(opts: &[(String, Option<String>)], names: &[&str]) -> bool {
    opts.iter()
        .any(|(o, _)| o.starts_with("--") && names.iter().any(|n| long_opt(o, n)))
}

/// A short flag, alone or in a cluster (`-af`).
fn has_short(opts: &[(String, Option<String>)], letter: char) -> bool {
    opts.iter().any(|(o, _)| o == &format!("-{letter}"))
}

/// Verbs of cloud CLIs that delete resources (`delete-db-instance`, `terminate-instances`).
fn deleting_verb(verb: &str) -> bool {
    let verb = verb.to_ascii_lowercase();
    (verb.starts_with("delete")
        || verb.starts_with("terminate")
        || verb.starts_with("batch-delete")
        || verb.starts_with("purge")
        || verb.starts_with("destroy")
        || verb == "schedule-key-deletion")
        // Single items a job routinely removes.
        && !matches!(
            verb.as_str(),
            "delete-object" | "delete-message" | "delete-message-batch" | "delete-tags"
        )
}

impl Analyzer {
    fn report_remote(&mut self, rule: Rule, shown: &str, what: &str) {
        self.report(rule, format!("`{shown}` {what}"));
    }

    /// `helm uninstall|delete|del|un RELEASE`.
    pub(crate) fn rule_helm(&mut self, shown: &str, args: &[Word]) {
        let (opts, operands) = getopt_all(
            args,
            &spec(
                "n",
                &[
                    "--namespace",
                    "--kube-context",
                    "--kubeconfig",
                    "--kube-apiserver",
                    "--kube-token",
                    "--kube-as-user",
                    "--kube-as-group",
                    "--kube-ca-file",
                    "--registry-config",
                    "--repository-cache",
                    "--repository-config",
                    "--burst-limit",
                    "--qps",
                    "--timeout",
                    "--description",
                    "--cascade",
                ],
            ),
        );
        let ops = operand_texts(&operands);
        let uninstall = matches!(
            ops.first().map(String::as_str),
            Some("uninstall" | "delete" | "del" | "un")
        );
        if uninstall && !has_long(&opts, &["--dry-run"]) {
            self.report_remote(
                Rule::HelmUninstall,
                shown,
                "uninstalls a Helm release, deleting its resources from the cluster",
            );
        }
    }

    /// `aws SERVICE delete-…|terminate-…`, `aws s3 rb --force`, `aws s3 rm --recursive`.
    pub(crate) fn rule_aws(&mut self, shown: &str, args: &[Word]) {
        let (opts, operands) = getopt_all(
            args,
            &spec(
                "",
                &[
                    "--profile",
                    "--region",
                    "--output",
                    "--endpoint-url",
                    "--query",
                    "--ca-bundle",
                    "--cli-read-timeout",
                    "--cli-connect-timeout",
                    "--color",
                    "--cli-binary-format",
                ],
            ),
        );
        if has_long(&opts, &["--dryrun", "--dry-run"]) {
            return;
        }
        let ops = operand_texts(&operands);
        let service = ops.first().map(String::as_str).unwrap_or_default();
        let verb = ops.get(1).map(String::as_str).unwrap_or_default();
        let hit = match (service, verb) {
            ("s3", "rb") => has_long(&opts, &["--force"]),
            ("s3", "rm") => has_long(&opts, &["--recursive"]),
            ("s3", _) => false,
            (_, verb) => deleting_verb(verb),
        };
        if hit {
            self.report_remote(Rule::CloudDelete, shown, "deletes cloud resources");
        }
    }

    /// `gcloud … delete`, `gcloud storage rm -r`, `gsutil rm -r`, `gsutil rb`, `az … delete`,
    /// `gh repo delete`.
    pub(crate) fn rule_cloud(&mut self, name: &str, shown: &str, args: &[Word]) {
        let (opts, operands) = getopt_all(
            args,
            &spec(
                "ohuign",
                &[
                    "--project",
                    "--account",
                    "--configuration",
                    "--format",
                    "--verbosity",
                    "--impersonate-service-account",
                    "--billing-project",
                    "--flags-file",
                    "--zone",
                    "--region",
                    "--subscription",
                    "--output",
                    "--query",
                    "--resource-group",
                    "--name",
                    "--repo",
                ],
            ),
        );
        let ops = operand_texts(&operands);
        let command: Vec<&str> = ops.iter().take(6).map(String::as_str).collect();
        let recursive =
            has_short(&opts, 'r') || has_short(&opts, 'R') || has_long(&opts, &["--recursive"]);
        let wildcard = ops.iter().any(|o| o.contains("**"));
        let hit = match name {
            "gsutil" => match command.first() {
                Some(&"rb") => true,
                Some(&"rm") => recursive || wildcard || has_short(&opts, 'a'),
                _ => false,
            },
            "gh" => command.first() == Some(&"repo") && command.get(1) == Some(&"delete"),
            _ => {
                let storage_rm =
                    command.windows(2).any(|w| w == ["storage", "rm"]) && (recursive || wildcard);
                storage_rm
                    || command.iter().skip(1).any(|c| {
                        *c == "delete"
                            || c.starts_with("delete-")
                            || *c == "purge"
                            || *c == "destroy"
                    })
            }
        };
        if hit {
            self.report_remote(Rule::CloudDelete, shown, "deletes cloud resources");
        }
    }

    /// `pulumi destroy|down`, `pulumi stack rm`, `pulumi state delete`.
    pub(crate) fn rule_pulumi(&mut self, shown: &str, args: &[Word]) {
        let (opts, operands) = getopt_all(args, &spec("Cs", &["--cwd", "--stack", "--message"]));
        let ops = operand_texts(&operands);
        let ops: Vec<&str> = ops.iter().map(String::as_str).collect();
        let hit = match ops.as_slice() {
            ["destroy" | "down", ..] => !has_long(&opts, &["--preview-only"]),
            ["stack", "rm" | "remove", ..] | ["state", "delete", ..] => true,
            _ => false,
        };
        if hit {
            self.report_remote(
                Rule::PulumiDestroy,
                shown,
                "destroys a Pulumi stack's infrastructure or state",
            );
        }
    }

    /// `docker system|volume|container|network prune`, `docker image prune -a`, `docker volume rm`,
    /// `docker rmi -f`, `docker rm -f $(docker ps -aq)`; also podman and nerdctl.
    pub(crate) fn rule_docker(&mut self, shown: &str, args: &[Word]) {
        let (opts, operands) = getopt_all(
            args,
            &spec(
                "Hcl",
                &[
                    "--host",
                    "--context",
                    "--config",
                    "--log-level",
                    "--tlscacert",
                    "--tlscert",
                    "--tlskey",
                    "--filter",
                    "--time",
                    "--signal",
                ],
            ),
        );
        let ops = operand_texts(&operands);
        let ops: Vec<&str> = ops.iter().map(String::as_str).collect();
        let force = has_short(&opts, 'f') || has_long(&opts, &["--force"]);
        let all = has_short(&opts, 'a') || has_long(&opts, &["--all"]);
        // Operands only known at run time: `$(docker ps -aq)`, items piped into xargs.
        let listed = operands.iter().skip(1).any(|w| w.lit().is_none());
        let what = match ops.as_slice() {
            ["system" | "volume" | "container" | "network", "prune", ..] => {
                Some("prunes the daemon's containers, networks, images or volumes")
            }
            ["image", "prune", ..] if all => Some("deletes every unused image"),
            ["volume", "rm" | "remove", ..] => Some("deletes volumes and their data"),
            ["rmi", ..] | ["image", "rm" | "remove", ..] if force => Some("force-deletes images"),
            ["rm", ..] | ["container", "rm" | "remove", ..] | ["kill", ..]
                if listed && (force || ops.first() == Some(&"kill")) =>
            {
                Some("removes every container a listing returns")
            }
            _ => None,
        };
        if let Some(what) = what {
            self.report_remote(Rule::DockerDestroy, shown, what);
        }
    }

    /// `git push --force|-f|--force-with-lease|--mirror|--delete|--prune`, `+refspec`, `:branch`.
    pub(crate) fn rule_git(&mut self, shown: &str, args: &[Word]) {
        // Global options before the subcommand.
        let mut i = 0;
        while let Some(arg) = args.get(i).and_then(Word::lit) {
            if !arg.starts_with('-') {
                break;
            }
            let takes_value = matches!(arg.as_str(), "-C" | "-c" | "--config-env")
                || (!arg.contains('=')
                    && matches!(
                        arg.as_str(),
                        "--git-dir" | "--work-tree" | "--namespace" | "--super-prefix"
                    ));
            i += if takes_value { 2 } else { 1 };
        }
        if args.get(i).and_then(Word::lit).as_deref() != Some("push") {
            return;
        }
        let (opts, operands) = getopt_all(
            &args[i + 1..],
            &spec(
                "o",
                &["--push-option", "--repo", "--receive-pack", "--exec"],
            ),
        );
        if has_short(&opts, 'n') || has_long(&opts, &["--dry-run"]) {
            return;
        }
        let short_force = opts.iter().any(|(o, _)| o == "-f" || o == "-d");
        let long_force = opts.iter().any(|(o, _)| {
            o.starts_with("--")
                && !o.starts_with("--no-")
                && o.len() >= 4
                && [
                    "--force",
                    "--force-with-lease",
                    "--mirror",
                    "--delete",
                    "--prune",
                ]
                .iter()
                .any(|full| long_opt(o, full))
        });
        let refspec = operands.iter().skip(1).any(|w| {
            w.cands.iter().any(|c| {
                c.literal()
                    .is_some_and(|r| r.starts_with('+') || r.starts_with(':'))
            })
        });
        if short_force || long_force || refspec {
            self.report_remote(
                Rule::GitForcePush,
                shown,
                "rewrites or deletes remote branches (force push, +refspec, --mirror, --delete)",
            );
        }
    }
}
