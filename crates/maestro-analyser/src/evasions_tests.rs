//! Evasions found by a security review: alias prefixes, interpreter code built from several
//! literals, relative climbs out of the working directory, `cd` to a run-time directory,
//! scripts the step writes and then runs, and tree deletes by `rsync`, `tar` and `git clean`.
//! Each must be denied (a Destructive rule) or reported as not analysable (an Opaque one), and
//! their ordinary look-alikes must stay clean.

use std::collections::BTreeMap;

use super::Kind;

fn found(script: &str) -> Vec<&'static str> {
    super::analyse_shell(script, &BTreeMap::new())
        .iter()
        .map(|f| f.rule.id())
        .collect()
}

/// Scripts with a Destructive rule that must be among their findings.
const DESTRUCTIVE: &[(&str, &str)] = &[
    // 1. an alias that is the prefix of a command
    ("alias k='rm -rf'\nk /usr", "rm-system-dir"),
    ("alias r=rm\nr -rf /", "rm-root"),
    ("alias kk='kill -9'\nkk -1", "mass-kill"),
    ("alias m=mkfs.ext4\nm /dev/sda", "mkfs"),
    ("alias k='rm -rf'; k /usr", "rm-system-dir"),
    ("alias k='sudo rm'\nk -rf /", "rm-root"),
    ("alias s='sudo '\nalias k='rm -rf'\ns k /", "rm-root"),
    ("alias a=b\nalias b='rm -rf'\na /", "rm-root"),
    ("alias go='cd /'\ngo; rm -rf *", "rm-root"),
    ("alias k='cd / && rm -rf'\nk *", "rm-root"),
    ("alias s=sh\necho 'rm -rf /' | s", "rm-root"),
    ("alias rm='rm -i'\nrm -rf /", "rm-root"),
    (
        "alias k='rm -rf'\nfor d in /tmp /usr; do k \"$d\"; done",
        "rm-system-dir",
    ),
    // 2. interpreter code built from several literals
    (
        "python3 -c 'import os; os.system(\"r\"+\"m -rf /usr\")'",
        "rm-system-dir",
    ),
    ("perl -e 'system(\"r\".\"m -rf /\")'", "rm-root"),
    (
        "node -e 'require(\"child_process\").execSync(\"r\"+\"m -rf /\")'",
        "rm-root",
    ),
    ("ruby -e 'system(\"r\"+\"m -rf /\")'", "rm-root"),
    ("awk 'BEGIN{system(\"r\" \"m -rf /\")}'", "rm-root"),
    (
        "python3 -c 'import os; os.system(\"%sm -rf /\" % \"r\")'",
        "rm-root",
    ),
    (
        "python3 -c 'import os; os.system(\"r\" \"m -rf /\")'",
        "rm-root",
    ),
    (
        "python3 -c 'import subprocess; subprocess.run([\"r\"+\"m\", \"-rf\", \"/\"])'",
        "rm-root",
    ),
    ("perl -e 'system \"r\".\"m -rf /\"'", "rm-root"),
    (
        "python3 -c 'import shutil; f=shutil.rmtree; f(\"/\")'",
        "rm-root",
    ),
    (
        "python3 -c 'from shutil import rmtree as r; r(\"/\")'",
        "rm-root",
    ),
    (
        "python3 -c 'import shutil; list(map(shutil.rmtree, [\"/usr\"]))'",
        "rm-system-dir",
    ),
    ("python3 -c 'import os; os.kill(-1, 9)'", "mass-kill"),
    (
        "perl -e 'my $c = \"r\" . \"m -rf /\"; system($c)'",
        "rm-root",
    ),
    (
        "python3 -c 'import os; c = \"r\" + \"m -rf /usr\"; os.system(c)'",
        "rm-system-dir",
    ),
    ("perl -e 'kill 9, -1'", "mass-kill"),
    ("perl -e 'kill \"KILL\", -1'", "mass-kill"),
    ("ruby -e 'Process.kill(:KILL, -1)'", "mass-kill"),
    ("node -e 'process.kill(-1, \"SIGKILL\")'", "mass-kill"),
    (
        "python3 -c 'import os, signal; os.kill(1, signal.SIGKILL)'",
        "mass-kill",
    ),
    // 3. relative climbs out of the working directory
    (
        "rm -rf ../../../../../../../../../../../usr",
        "rm-system-dir",
    ),
    ("cd ../../../../../../../.. && rm -rf *", "rm-root"),
    ("find ../../../../../../../../ -delete", "find-delete"),
    (
        "chmod -R 000 ../../../../../../../../",
        "recursive-permission-change",
    ),
    ("rm -rf ..", "rm-root"),
    ("cd .. && rm -rf *", "rm-root"),
    ("cd build && rm -rf ../../etc", "rm-system-dir"),
    ("cd build; cd ../../../.. && rm -rf usr", "rm-system-dir"),
    ("dd if=/dev/zero of=../../../../../../dev/sda", "dd-device"),
    ("sh -c 'cd ../../.. && rm -rf *'", "rm-root"),
    // 5. a script the step writes, with text we can read
    ("echo 'rm -rf /usr' > x.sh && sh x.sh", "rm-system-dir"),
    ("echo 'rm -rf /usr' > x.sh && . ./x.sh", "rm-system-dir"),
    ("echo 'rm -rf /usr' > x.sh && bash x.sh", "rm-system-dir"),
    (
        "printf 'rm -rf /\\n' > x.sh; chmod +x x.sh; ./x.sh",
        "rm-root",
    ),
    ("cat > x.sh <<'EOF'\nrm -rf /\nEOF\nsh x.sh", "rm-root"),
    (
        "printf 'rm -rf' > x.sh; echo ' /' >> x.sh; source x.sh",
        "rm-root",
    ),
    ("(echo 'rm -rf /' > /tmp/x.sh); bash /tmp/x.sh", "rm-root"),
    ("echo 'rm -rf /' | tee x.sh; sh x.sh", "rm-root"),
    (
        "echo 'import shutil; shutil.rmtree(\"/\")' > x.py && python3 x.py",
        "rm-root",
    ),
    (
        "printf '#!/usr/bin/env python3\\nimport shutil; shutil.rmtree(\"/usr\")\\n' > x; ./x",
        "rm-system-dir",
    ),
    ("bash -c \"echo 'rm -rf /' > x.sh\"; sh x.sh", "rm-root"),
    // ... with arguments, exported variables, or none given where one is used
    (
        "printf 'rm -rf \"$1\"/*\\n' > clean.sh && sh clean.sh /usr",
        "rm-system-dir",
    ),
    (
        "printf 'rm -rf \"$1\"/*\\n' > clean.sh && sh clean.sh",
        "rm-root",
    ),
    (
        "printf 'rm -rf \"$1\"\\n' > clean.sh && chmod +x clean.sh && ./clean.sh /etc",
        "rm-system-dir",
    ),
    (
        "printf 'rm -rf \"$2\"\\n' > clean.sh && source clean.sh build /",
        "rm-root",
    ),
    (
        "printf 'rm -rf \"$@\"\\n' > c.sh && bash c.sh build /",
        "rm-root",
    ),
    (
        "export D=/usr\nprintf 'rm -rf \"$D\"\\n' > c.sh && sh c.sh",
        "rm-system-dir",
    ),
    ("export D=/; sh -c 'rm -rf \"$D\"'", "rm-root"),
    ("D=/boot; export D; bash -c 'rm -rf $D'", "rm-system-dir"),
    // tree deletes in interpreters: whole-argument paths and literal-only joins
    (
        "python3 -c \"import shutil, os; shutil.rmtree(os.path.join('/', 'usr'))\"",
        "rm-system-dir",
    ),
    (
        "python3 -c \"import shutil; shutil.rmtree('/' + 'etc')\"",
        "rm-system-dir",
    ),
    (
        "python3 -c \"import shutil; shutil.rmtree(path='/')\"",
        "rm-root",
    ),
    (
        "python3 -c \"import shutil, os; shutil.rmtree(os.path.expanduser('~'))\"",
        "rm-home",
    ),
    (
        "ruby -e \"require 'fileutils'; FileUtils.rm_rf(File.join('/', 'var'))\"",
        "rm-system-dir",
    ),
    (
        "node -e \"require('fs').rmSync(require('path').join('/', 'opt'), {recursive: true})\"",
        "rm-system-dir",
    ),
    (
        "perl -MFile::Path=remove_tree -e 'remove_tree(\"build\", \"/usr\")'",
        "rm-system-dir",
    ),
    (
        "python3 -c \"from shutil import rmtree as r; r('/usr')\"",
        "rm-system-dir",
    ),
    (
        "python3 -c \"from shutil import rmtree; '/'.join(['a']); rmtree('/')\"",
        "rm-root",
    ),
    (
        "python3 -c \"import shutil; f=shutil.rmtree; f(('/etc'))\"",
        "rm-system-dir",
    ),
    (
        "cd / && python3 -c \"import shutil; shutil.rmtree('usr')\"",
        "rm-system-dir",
    ),
    // top-level globs that can match a system directory
    ("rm -rf ../u*", "rm-system-dir"),
    ("cd .. && rm -rf [a-z]*", "rm-system-dir"),
    ("rm -rf /?tc", "rm-system-dir"),
    ("rm -rf ../*/", "rm-root"),
    ("cd ../../.. && rm -rf .*", "rm-root"),
    // the step's workdir is not known to the analyser: a climb of two is still `/`
    ("cd ../.. && git clean -fdx", "rm-root"),
    // 6. tree deletes by rsync, tar and git clean
    ("rsync -a --delete EMPTY/ /", "rm-root"),
    ("rsync -a --delete empty/ /usr/", "rm-system-dir"),
    ("rsync -av --delete-after empty/ /etc", "rm-system-dir"),
    ("rsync -a --del empty/ ~/", "rm-home"),
    ("rsync -a --delete empty/ host:/", "rm-root"),
    ("rsync -a --remove-source-files / backup/", "rm-root"),
    ("rsync -a --delete empty/ ../../../../../../..", "rm-root"),
    ("tar --remove-files -cf x.tar /usr", "rm-system-dir"),
    ("tar -czf x.tgz --remove-files /", "rm-root"),
    (
        "tar --remove-files -C / -cf /tmp/x.tar etc",
        "rm-system-dir",
    ),
    ("tar cf x.tar --remove-f /var", "rm-system-dir"),
    ("git -C / clean -fdx", "rm-root"),
    ("git --work-tree=/ clean -fdx", "rm-root"),
    ("git --work-tree /usr clean -fd", "rm-system-dir"),
    ("cd / && git clean -fdx", "rm-root"),
    ("git -C ~ clean -fdx", "rm-home"),
    ("git -C / -c clean.requireForce=false clean -dx", "rm-root"),
];

/// Scripts that must be reported as not analysable, with the Opaque rule.
const OPAQUE: &[(&str, &str)] = &[
    // 2. built with formatting the analysis does not evaluate
    (
        "python3 -c 'import os; os.system(\"{}m -rf /\".format(\"r\"))'",
        "dynamic-code",
    ),
    (
        "python3 -c 'import os; os.system(f\"{chr(114)}m -rf /\")'",
        "dynamic-code",
    ),
    (
        "python3 -c 'import os; os.system(\"\".join([chr(114), \"m -rf /\"]))'",
        "dynamic-code",
    ),
    (
        "python3 -c 'import os; os.system(\"%sm -rf %s\" % (\"r\", \"/tmp\"))'",
        "dynamic-code",
    ),
    (
        "node -e 'require(\"child_process\").execSync(`${\"r\"}m -rf /`)'",
        "dynamic-code",
    ),
    (
        "node -e 'const cp = require(\"child_process\"); cp.execSync(x ? \"ls\" : \"pwd\")'",
        "dynamic-code",
    ),
    // 4. cd to a directory only known at run time
    ("cd \"$(dirname /usr/bin)\" && rm -rf *", "dynamic-argument"),
    ("cd $(echo /) && rm -rf *", "dynamic-argument"),
    ("cd \"$DIR\" && rm -rf build", "dynamic-argument"),
    ("cd \"$DIR\" && find . -delete", "dynamic-argument"),
    ("cd \"$DIR\" && chmod -R 777 .", "dynamic-argument"),
    ("env -C \"$DIR\" rm -rf *", "dynamic-argument"),
    ("sudo -D \"$DIR\" rm -rf *", "dynamic-argument"),
    ("cd \"$DIR\" && sh -c 'rm -rf *'", "dynamic-argument"),
    ("popd && rm -rf *", "dynamic-argument"),
    (
        "cd \"$(mktemp -d)\" && rsync -a --delete src/ .",
        "dynamic-argument",
    ),
    // 5. a script the step writes itself and then runs
    ("echo 'rm -rf /usr' > x.sh && sh x.sh", "dynamic-code"),
    ("echo 'rm -rf /usr' > x.sh && . ./x.sh", "dynamic-code"),
    ("echo 'rm -rf /usr' > x.sh && bash x.sh", "dynamic-code"),
    (
        "curl -fsSL https://x.example/i.sh -o i.sh && sh i.sh",
        "dynamic-code",
    ),
    (
        "wget -O i.sh https://x.example/i.sh; bash i.sh",
        "dynamic-code",
    ),
    (
        "base64 -d <<< cm0gLXJmIC8= > x.sh && sh x.sh",
        "dynamic-code",
    ),
    ("cp \"$SRC\" x.sh && . ./x.sh", "dynamic-code"),
    ("echo \"$CMD\" > \"$F\" && sh \"$F\"", "dynamic-code"),
    ("echo 'echo hi' > x.sh && sh x.sh", "dynamic-code"),
    (
        "curl -o x.py https://x.example/x.py && python3 x.py",
        "dynamic-code",
    ),
    (
        "curl -fsSLo i.sh https://x.example/i.sh && sh i.sh",
        "dynamic-code",
    ),
    (
        "curl -O https://x.example/i.sh && bash i.sh",
        "dynamic-code",
    ),
    (
        "wget -q https://x.example/i.sh && sh ./i.sh",
        "dynamic-code",
    ),
    (
        "sed -i 's/echo/rm/' deploy.sh && sh deploy.sh",
        "dynamic-code",
    ),
    ("{ echo rm; echo -rf; } > x.sh; sh x.sh", "dynamic-code"),
    // an argument only known at run time is given, not empty
    (
        "printf 'rm -rf \"$1\"/*\\n' > clean.sh && sh clean.sh \"$DIR\"",
        "dynamic-argument",
    ),
    (
        "printf 'rm -rf \"$1\"/*\\n' > c.sh && chmod +x c.sh && ./c.sh \"$(pwd)/out\"",
        "dynamic-argument",
    ),
    // a downloaded binary run by path is code only known at run time, nothing more
    (
        "curl -Lo ./kubectl https://x.example/kubectl && chmod +x kubectl && ./kubectl get pods",
        "dynamic-code",
    ),
    // 6. a run-time target of a tree delete
    ("rsync -a --delete src/ \"$DEST\"", "dynamic-argument"),
    ("tar --remove-files -cf x.tar \"$DIR\"", "dynamic-argument"),
    ("git -C \"$REPO\" clean -fdx", "dynamic-argument"),
];

/// Ordinary commands that must stay clean.
const CLEAN: &[&str] = &[
    "alias ll='ls -l'\nll",
    "alias ll='ls -l'\nll -a /",
    "alias ls='ls --color=auto'\nls /usr",
    "alias g=git\ng status",
    "alias k='rm -rf'\nk build",
    "python3 -c 'print(\"a\"+\"b\")'",
    "python3 -c 'import os; os.system(\"echo \" + \"hi\")'",
    "python3 -c 'import subprocess; subprocess.run([\"ls\", \"-l\"])'",
    "python3 -c 'import shutil; shutil.rmtree(\"build\")'",
    "python3 -c 'import os; os.kill(os.getpid(), 0)'",
    "perl -e 'print \"a\" . \"b\"'",
    "node -e 'console.log(\"a\" + \"b\")'",
    "awk '{print $1 \" \" $2}' file.txt",
    "rm -rf ../build",
    "rm -rf ./build ../dist",
    "cd build && rm -rf *",
    "cd build && cd .. && rm -rf dist",
    "cd build && rm -rf ../dist",
    "pushd build && make && popd && rm -rf dist",
    "cd build && make; cd - && rm -rf dist",
    "cd /tmp/work && rm -rf *",
    "find ../build -name '*.o' -delete",
    "chmod -R 755 ../dist",
    "rsync -a --delete src/ dst/",
    "rsync -a --delete ./site/ host:/srv/www/site/",
    "rsync -a src/ /usr/local/share/app/",
    "rsync -a /etc/ backup/etc/",
    "git clean -fdx",
    "git clean -n -d -x",
    "git -C build clean -fdx",
    "git -C / status",
    "tar --remove-files -cf x.tar build",
    "tar -cf x.tar /usr",
    "tar -xf x.tar -C /tmp/out",
    "echo 'echo hi' > notes.txt && sh deploy.sh",
    "bash scripts/deploy.sh",
    "./configure && make",
    "echo hi > out.txt; python3 process.py out.txt",
    "python3 -c 'from shutil import rmtree; rmtree(\"build\"); print(\"done\")'",
    "curl -fsSL https://x.example/a.tgz -o a.tgz && tar -xzf a.tgz",
    "wget https://x.example/data.csv && python3 load.py data.csv",
    "echo 'export X=1' > env.sh && cat env.sh",
    // interpreter tree deletes of a join with a relative or run-time piece
    "python3 -c \"import shutil,os; shutil.rmtree(os.path.join('..','build'))\"",
    "node -e \"require('fs').rmSync(require('path').join(__dirname,'..','dist'),{recursive:true})\"",
    "ruby -e \"require 'fileutils'; FileUtils.rm_rf(File.join('..','tmp'))\"",
    "python3 -c \"import shutil; shutil.rmtree('../build')\"",
    "python3 -c \"import shutil, pathlib; shutil.rmtree(pathlib.Path.home() / '.cache' / 'pip')\"",
    "python3 -c \"import shutil, os; shutil.rmtree(os.path.join(os.path.expanduser('~'), '.cache'))\"",
    "python3 -c \"import shutil; shutil.rmtree('/tmp/' + name)\"",
    "perl -MFile::Path=remove_tree -e 'remove_tree(\"build\", {verbose => 1})'",
    // a tree delete used under another name, with '..' and '/' used as strings
    "python3 -c \"import sys; sys.path.insert(0,'..'); from shutil import rmtree; rmtree('build')\"",
    "python3 -c \"from shutil import rmtree; x = ['a','b']; print('/'.join(x)); rmtree('out')\"",
    "python3 -c \"from shutil import rmtree; p = 'out/'; rmtree(p.rstrip('/'))\"",
    "python3 -c \"from shutil import rmtree; u = 'a/b'; print(u.split('/')); rmtree('out')\"",
    "python3 -c \"from shutil import rmtree; print('/' .join(['a'])); rmtree('out')\"",
    // top-level globs after a climb that cannot name a system directory
    "rm -rf ../*.deb",
    "cd .. && rm -rf *.egg-info",
    "rm -rf ../build-*",
    "cd .. && rm -rf ./*.tar.gz",
    "rm -rf ../[0-9]*.log",
    // exported variables seen by the shells the step starts
    "export OUT=build; sh -c 'rm -rf \"$OUT\"/*'",
    "OUT=dist; export OUT; sh -c 'rm -rf \"$OUT\"/*'",
];

/// Ordinary scripts the step writes and runs with arguments or exported variables: code only
/// known at run time (`dynamic-code`, denied for `isolation: none` only), never Destructive.
const WRITTEN_AND_RUN: &[&str] = &[
    "printf '#!/bin/sh\\nrm -rf \"$1\"/*\\n' > clean.sh && sh clean.sh build",
    "printf 'rm -rf \"$1\"/*\\n' > clean.sh && chmod +x clean.sh && ./clean.sh build",
    "printf 'rm -rf \"$1\"/*\\n' > clean.sh && source clean.sh build",
    "printf 'rm -rf \"$1\"/*\\n' > clean.sh && . ./clean.sh build",
    "printf 'rm -rf \"$@\"\\n' > clean.sh && bash clean.sh build dist",
    "printf 'cd \"$1\" && rm -rf *\\n' > clean.sh && sh clean.sh build",
    "export OUT=build\nprintf 'rm -rf \"$OUT\"/*\\n' > clean.sh && sh clean.sh",
    "export OUT=build\nprintf 'rm -rf \"$OUT\"/*\\n' > clean.sh && chmod +x clean.sh && ./clean.sh",
];

#[test]
fn written_scripts_with_arguments_are_only_run_time_code() {
    for script in WRITTEN_AND_RUN {
        assert_eq!(found(script), vec!["dynamic-code"], "{script:?}");
    }
}

#[test]
fn destructive_evasions_are_denied() {
    let mut failures = Vec::new();
    for (script, rule) in DESTRUCTIVE {
        let rules = found(script);
        if !rules.contains(rule) {
            failures.push(format!("{script:?}: expected {rule}, got {rules:?}"));
        }
    }
    assert!(failures.is_empty(), "not denied:\n{}", failures.join("\n"));
}

#[test]
fn run_time_evasions_are_opaque() {
    let mut failures = Vec::new();
    for (script, rule) in OPAQUE {
        let rules = found(script);
        if !rules.contains(rule) {
            failures.push(format!("{script:?}: expected {rule}, got {rules:?}"));
        }
    }
    assert!(failures.is_empty(), "not opaque:\n{}", failures.join("\n"));
    for (_, rule) in OPAQUE {
        let kind = super::Rule::ALL
            .iter()
            .find(|r| r.id() == *rule)
            .map(|r| r.kind());
        assert_eq!(kind, Some(Kind::Opaque), "{rule}");
    }
}

#[test]
fn ordinary_look_alikes_stay_clean() {
    let mut failures = Vec::new();
    for script in CLEAN {
        let rules = found(script);
        if !rules.is_empty() {
            failures.push(format!("{script:?}: {rules:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "wrongly denied:\n{}",
        failures.join("\n")
    );
}

/// Aliases are expanded by the fallback tokenizer too (the script is not valid bash).
#[test]
fn aliases_are_expanded_in_scripts_the_parser_rejects() {
    assert!(found("alias k='rm -rf'\nk /usr )").contains(&"rm-system-dir"));
}

/// Recursive aliases end: each alias is expanded once per command, as in the shell.
#[test]
fn recursive_aliases_end() {
    assert!(found("alias ls='ls -la'\nls").is_empty());
    assert!(found("alias a=b\nalias b=a\na").is_empty());
    assert!(found("alias a='a; rm -rf /'\na").contains(&"rm-root"));
}

/// Interpreter code with more shell calls than the analysis reads is too complex, not clean:
/// a destructive call after many harmless ones must not slip through.
#[test]
fn interpreter_code_past_its_bounds_is_too_complex() {
    let many = "os.system(\"true\"); ".repeat(20);
    let script = format!("python3 -c 'import os; {many}os.system(\"rm -rf /\")'");
    assert!(
        found(&script).contains(&"too-complex"),
        "{:?}",
        found(&script)
    );
    let concatenated = "os.system(\"echo \" + \"x\"); ".repeat(12);
    let script = format!("python3 -c 'import os; {concatenated}os.system(\"r\" + \"m -rf /\")'");
    assert!(found(&script).contains(&"rm-root"), "{:?}", found(&script));
    let evals = "eval(\"1\"); ".repeat(6);
    let script = format!("python3 -c '{evals}'");
    assert!(
        found(&script).contains(&"too-complex"),
        "{:?}",
        found(&script)
    );
}

/// A climb's reason says why a relative path counts as `/`.
#[test]
fn climbs_say_why() {
    let findings = super::analyse_shell("rm -rf ../../usr", &BTreeMap::new());
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(
        findings[0].reason.contains("climbs out"),
        "{}",
        findings[0].reason
    );
}

/// The step's `command` argv climbs the same way.
#[test]
fn argv_climbs_are_denied() {
    let argv: Vec<String> = ["rm", "-rf", "../../../../../../etc"]
        .iter()
        .map(|w| (*w).to_owned())
        .collect();
    let rules: Vec<&str> = super::analyse_argv(&argv, &BTreeMap::new())
        .iter()
        .map(|f| f.rule.id())
        .collect();
    assert_eq!(rules, vec!["rm-system-dir"]);
}

fn destructive(script: &str) -> Vec<&'static str> {
    super::analyse_shell(script, &BTreeMap::new())
        .iter()
        .filter(|f| f.rule.kind() == Kind::Destructive)
        .map(|f| f.rule.id())
        .collect()
}

/// Sandboxed steps are only denied by Destructive findings: a written script given a run-time
/// argument, or a downloaded binary run by path, must be Opaque only.
#[test]
fn run_time_arguments_and_downloads_are_not_destructive() {
    for script in [
        "printf 'rm -rf \"$1\"/*\\n' > clean.sh && sh clean.sh \"$DIR\"",
        "printf 'rm -rf \"$1\"/*\\n' > c.sh && chmod +x c.sh && ./c.sh \"$(pwd)/out\"",
        "printf 'rm -rf \"$1\"/*\\n' > c.sh && . ./c.sh \"$DIR\"",
        "curl -Lo ./kubectl https://x.example/kubectl && chmod +x kubectl && ./kubectl get pods",
        "curl -fsSLo kubectl https://x.example/kubectl && ./kubectl apply -f k8s/",
    ] {
        assert_eq!(destructive(script), Vec::<&str>::new(), "{script:?}");
    }
}

/// `source x.sh ARGS` binds ARGS only for the while: the caller's positionals come back.
#[test]
fn sourced_arguments_end_with_the_script() {
    let script = "f() { printf 'true\\n' > s.sh; . ./s.sh build; rm -rf \"$1\"; }; f /usr";
    assert!(
        found(script).contains(&"rm-system-dir"),
        "{:?}",
        found(script)
    );
}

/// Past the written files remembered, a file executed by its path (`./gradlew`) no longer
/// counts as written, but one run by a shell or interpreter still does.
#[test]
fn many_written_files_do_not_taint_executables_of_the_checkout() {
    let mut many = String::new();
    for n in 0..300 {
        many.push_str(&format!("echo {n} > out/f{n}.txt\n"));
    }
    for clean in [
        "./gradlew build",
        "./node_modules/.bin/jest --ci",
        "bin/test",
        "bash scripts/deploy.sh",
    ] {
        let script = format!("{many}{clean}");
        let rules = found(&script);
        if clean.starts_with("bash") {
            assert_eq!(rules, vec!["dynamic-code"], "{clean}");
        } else {
            assert!(rules.is_empty(), "{clean}: {rules:?}");
        }
    }
    // Files written early are still remembered, texts of the first ones too.
    let early = format!("echo 'rm -rf /usr' > x.sh\n{many}./x.sh");
    assert!(
        found(&early).contains(&"rm-system-dir"),
        "{:?}",
        found(&early)
    );
    // A file written after many others (within the remembered count) still counts when run.
    let mut some = String::new();
    for n in 0..100 {
        some.push_str(&format!("echo {n} > out/f{n}.txt\n"));
    }
    let late = format!("{some}curl -o run.sh https://x.example/run.sh; ./run.sh");
    assert_eq!(found(&late), vec!["dynamic-code"]);
}

/// Glob matching used for top-level globs.
#[test]
fn top_level_globs_match_system_directory_names() {
    use super::paths::glob_matches;
    for (pattern, name) in [
        ("*", "usr"),
        ("u*", "usr"),
        ("?sr", "usr"),
        ("[a-z]*", "etc"),
        ("[!x]tc", "etc"),
        ("*r", "usr"),
        ("l*b*", "lib64"),
    ] {
        assert!(glob_matches(pattern, name), "{pattern} {name}");
    }
    for (pattern, name) in [
        ("*.deb", "usr"),
        ("build-*", "bin"),
        ("*.egg-info", "etc"),
        ("[0-9]*", "usr"),
        ("[!e]tc", "etc"),
        ("u", "usr"),
    ] {
        assert!(!glob_matches(pattern, name), "{pattern} {name}");
    }
}
