//! The wrapper, device, process, remote and interpreter families: evasions that must be denied
//! and look-alikes that must stay clean.

use std::collections::BTreeMap;

fn found(script: &str) -> Vec<&'static str> {
    super::analyse_shell(script, &BTreeMap::new())
        .iter()
        .map(|f| f.rule.id())
        .collect()
}

/// Scripts with a rule that must be among their findings.
const DENY: &[(&str, &str)] = &[
    // wrappers
    ("unshare -Urn rm -rf /", "rm-root"),
    ("unshare --mount --propagation private rm -rf /", "rm-root"),
    ("nsenter -t 1 -m -u -i -n -p rm -rf /", "rm-root"),
    ("nsenter --target=1 --mount rm -rf /", "rm-root"),
    ("nsenter -m/proc/1/ns/mnt rm -rf /", "rm-root"),
    ("strace -f -o /tmp/log rm -rf /", "rm-root"),
    ("strace -ff -e trace=file -s 128 rm -rf /", "rm-root"),
    ("ltrace -o x rm -rf /", "rm-root"),
    (
        "systemd-run --user --scope -p MemoryMax=1G rm -rf /",
        "rm-root",
    ),
    ("systemd-run --unit x --wait rm -rf ~", "rm-home"),
    ("script -c 'rm -rf /' /dev/null", "rm-root"),
    ("script -qc 'rm -rf /' /dev/null", "rm-root"),
    ("script --command='rm -rf /'", "rm-root"),
    ("tmux new -d -s x 'rm -rf /'", "rm-root"),
    ("tmux new-session -d rm -rf /", "rm-root"),
    ("tmux new -d \\; send-keys 'rm -rf /' Enter", "rm-root"),
    ("screen -dmS x rm -rf /", "rm-root"),
    ("screen -d -m bash -c 'rm -rf /'", "rm-root"),
    ("echo 'rm -rf /' | at now", "rm-root"),
    ("at now <<< 'rm -rf /'", "rm-root"),
    ("batch <<EOF\nrm -rf /\nEOF", "rm-root"),
    ("prlimit --nproc=10 rm -rf /", "rm-root"),
    ("prlimit -n1024 rm -rf /", "rm-root"),
    ("fakeroot rm -rf /", "rm-root"),
    ("chroot / rm -rf /", "rm-root"),
    ("setsid -f rm -rf /", "rm-root"),
    ("stdbuf -oL rm -rf /", "rm-root"),
    ("ionice -c 3 nice -n 19 rm -rf /", "rm-root"),
    ("taskset -c 0 rm -rf /", "rm-root"),
    ("flock /tmp/l rm -rf /", "rm-root"),
    ("watch -n 1 rm -rf /", "rm-root"),
    ("pkexec rm -rf /", "rm-root"),
    ("pkexec --user root rm -rf /", "rm-root"),
    ("runuser -u root -- rm -rf /", "rm-root"),
    ("sg wheel 'rm -rf /'", "rm-root"),
    ("sg wheel -c 'rm -rf /'", "rm-root"),
    ("builtin exec rm -rf /", "rm-root"),
    ("xargs -0 -I{} -n1 -P4 rm -rf {} <<< /", "rm-root"),
    ("printf '/\\0' | xargs -0 rm -rf", "rm-root"),
    ("find / -type f -print | xargs rm -f", "find-delete"),
    ("find /etc -print0 | xargs -0 sudo rm", "find-delete"),
    ("parallel rm -rf ::: /", "rm-root"),
    ("parallel -j4 'rm -rf {}' ::: /", "rm-root"),
    ("echo / | parallel rm -rf", "rm-root"),
    ("find / -exec rm -rf {} +", "find-delete"),
    ("find / -ok rm {} \\;", "find-delete"),
    ("busybox rm -rf /", "rm-root"),
    ("toybox rm -rf /", "rm-root"),
    (
        "sudo -u root nohup timeout 5 strace -f unshare -r rm -rf /",
        "rm-root",
    ),
    // devices
    ("truncate -s0 /dev/sda", "device-erase"),
    ("sgdisk --zap-all /dev/sda", "partition-table"),
    ("sgdisk -Z /dev/nvme0n1", "partition-table"),
    ("sgdisk -o /dev/sdb", "partition-table"),
    ("sgdisk --zap /dev/sda", "partition-table"),
    ("parted -s /dev/sda mklabel gpt", "partition-table"),
    ("parted /dev/sda --script -- rm 1", "partition-table"),
    ("parted /dev/sda mkl msdos", "partition-table"),
    ("sfdisk --delete /dev/sda", "partition-table"),
    ("echo ',,83' | sfdisk /dev/sda", "partition-table"),
    ("sfdisk /dev/sda < layout.txt", "partition-table"),
    ("printf 'o\\nw\\n' | fdisk /dev/sda", "partition-table"),
    ("cryptsetup luksFormat /dev/sda2", "device-erase"),
    ("cryptsetup -q luksformat /dev/sdb", "device-erase"),
    ("cryptsetup erase /dev/sda2", "device-erase"),
    ("cryptsetup open --type plain /dev/sda x", "device-erase"),
    ("cryptsetup open --type=plain /dev/sda x", "device-erase"),
    ("nvme format /dev/nvme0n1", "device-erase"),
    ("nvme sanitize -a 2 /dev/nvme0", "device-erase"),
    ("badblocks -wsv /dev/sdb", "device-erase"),
    ("badblocks -b 4096 -w /dev/sdb", "device-erase"),
    (
        "hdparm --user-master u --security-erase p /dev/sda",
        "device-erase",
    ),
    ("hdparm --trim-sector-ranges 0:10 /dev/sda", "device-erase"),
    ("blkdiscard -f /dev/sda", "shred-device"),
    ("mkswap /dev/sdb1", "mkfs"),
    ("dd if=/dev/urandom of=/dev/nvme0n1", "dd-device"),
    ("cat x > /dev/disk/by-uuid/abc", "block-device-write"),
    ("cat x > /dev/mapper/vg-root", "block-device-write"),
    ("echo b > /proc/sysrq-trigger", "kernel-interface-write"),
    ("echo o >/proc/sysrq-trigger", "kernel-interface-write"),
    (
        "echo 1 | sudo tee /proc/sysrq-trigger",
        "kernel-interface-write",
    ),
    ("echo 1 > /proc/sys/kernel/panic", "kernel-interface-write"),
    ("echo mem > /sys/power/state", "kernel-interface-write"),
    ("dd if=x of=/dev/mem", "dd-device"),
    ("echo x > /dev/port", "block-device-write"),
    // processes
    ("kill -9 -1", "mass-kill"),
    ("kill -KILL -1", "mass-kill"),
    ("kill -s KILL -- -1", "mass-kill"),
    ("kill -- -1", "mass-kill"),
    ("/bin/kill -9 -1", "mass-kill"),
    ("kill 1", "mass-kill"),
    ("kill -9 1", "mass-kill"),
    ("pkill -9 .", "mass-kill"),
    ("pkill -f '.*'", "mass-kill"),
    ("pkill --signal KILL ''", "mass-kill"),
    ("pkill -u root", "mass-kill"),
    ("killall5 -9", "mass-kill"),
    ("killall -r .", "mass-kill"),
    ("killall systemd", "mass-kill"),
    // power
    ("systemctl poweroff", "system-power"),
    ("systemctl --no-wall reboot", "system-power"),
    ("systemctl suspend", "system-power"),
    ("systemctl hibernate", "system-power"),
    ("systemctl start halt.target", "system-power"),
    ("shutdown now", "system-power"),
    ("init 0", "system-power"),
    ("telinit 6", "system-power"),
    ("kexec -e", "system-power"),
    (
        "busctl call org.freedesktop.login1 /org/freedesktop/login1 org.freedesktop.login1.Manager PowerOff b false",
        "system-power",
    ),
    // fork bombs
    (":(){ :|:& };:", "fork-bomb"),
    ("b(){ b|b& };b", "fork-bomb"),
    ("perl -e 'fork while fork'", "fork-bomb"),
    ("python3 -c 'import os\nwhile True: os.fork()'", "fork-bomb"),
    ("ruby -e 'loop { fork }'", "fork-bomb"),
    // kubernetes, helm
    ("kubectl delete namespace prod", "kubectl-delete"),
    ("kubectl delete Namespace prod", "kubectl-delete"),
    ("kubectl delete ns/prod", "kubectl-delete"),
    ("kubectl delete namespaces.v1 prod", "kubectl-delete"),
    ("kubectl delete all --all", "kubectl-delete"),
    ("kubectl delete pods --all -A", "kubectl-delete"),
    ("kubectl delete pvc data-db-0", "kubectl-delete"),
    ("kubectl drain node-1 --ignore-daemonsets", "kubectl-delete"),
    (
        "kubectl --kubeconfig k delete --all=true deploy",
        "kubectl-delete",
    ),
    ("helm uninstall web", "helm-uninstall"),
    ("helm delete web --purge", "helm-uninstall"),
    ("helm -n prod del web", "helm-uninstall"),
    ("helm --kube-context prod un web", "helm-uninstall"),
    // clouds
    ("aws s3 rb s3://bucket --force", "cloud-delete"),
    ("aws s3 rm --recursive s3://bucket", "cloud-delete"),
    ("aws s3 rm s3://bucket/ --rec", "cloud-delete"),
    (
        "aws --region us-east-1 ec2 terminate-instances --instance-ids i-1",
        "cloud-delete",
    ),
    (
        "aws rds delete-db-instance --db-instance-identifier db",
        "cloud-delete",
    ),
    (
        "aws cloudformation delete-stack --stack-name x",
        "cloud-delete",
    ),
    ("aws dynamodb delete-table --table-name t", "cloud-delete"),
    ("aws iam delete-user --user-name u", "cloud-delete"),
    (
        "aws --profile=prod s3api delete-bucket --bucket b",
        "cloud-delete",
    ),
    ("gcloud projects delete my-project", "cloud-delete"),
    (
        "gcloud compute instances delete vm --zone x -q",
        "cloud-delete",
    ),
    ("gcloud sql instances delete db", "cloud-delete"),
    (
        "gcloud --project p container clusters delete c",
        "cloud-delete",
    ),
    ("gcloud storage rm -r gs://b", "cloud-delete"),
    ("gsutil rm -r gs://bucket", "cloud-delete"),
    ("gsutil -m rm -r gs://bucket/**", "cloud-delete"),
    ("gsutil rb gs://bucket", "cloud-delete"),
    ("az group delete -n rg --yes", "cloud-delete"),
    ("az vm delete -g rg -n vm", "cloud-delete"),
    ("gh repo delete org/repo --yes", "cloud-delete"),
    ("pulumi destroy --yes", "pulumi-destroy"),
    ("pulumi -C infra destroy -y", "pulumi-destroy"),
    ("pulumi stack rm prod --force", "pulumi-destroy"),
    // terraform
    ("terraform destroy -auto-approve", "terraform-destroy"),
    (
        "terraform apply -destroy -auto-approve",
        "terraform-destroy",
    ),
    ("terraform apply --destroy=true", "terraform-destroy"),
    (
        "terraform plan -destroy -out p && terraform apply p",
        "terraform-destroy",
    ),
    (
        "terraform plan -destroy -out=p.tfplan\nterraform apply -auto-approve p.tfplan",
        "terraform-destroy",
    ),
    ("terraform state rm aws_instance.x", "terraform-destroy"),
    ("tofu destroy", "terraform-destroy"),
    ("terragrunt run-all destroy", "terraform-destroy"),
    // docker
    ("docker system prune -af", "docker-destroy"),
    (
        "docker system prune --all --force --volumes",
        "docker-destroy",
    ),
    ("docker volume prune -f", "docker-destroy"),
    ("docker volume rm data", "docker-destroy"),
    ("docker rm -f $(docker ps -aq)", "docker-destroy"),
    ("docker ps -aq | xargs docker rm -f", "docker-destroy"),
    ("docker rmi -f img", "docker-destroy"),
    ("podman system prune -a -f", "docker-destroy"),
    ("docker -H tcp://x:2375 image prune -a", "docker-destroy"),
    // git
    ("git push --force origin main", "git-force-push"),
    ("git push -f", "git-force-push"),
    ("git push origin main -f", "git-force-push"),
    ("git push -uf origin main", "git-force-push"),
    ("git push --force-with-lease", "git-force-push"),
    (
        "git push --force-with-lease=main:abc origin main",
        "git-force-push",
    ),
    ("git push --forc origin main", "git-force-push"),
    ("git push origin +main", "git-force-push"),
    ("git push origin +HEAD:refs/heads/main", "git-force-push"),
    ("git push --mirror", "git-force-push"),
    ("git push --delete origin feature", "git-force-push"),
    ("git push origin :feature", "git-force-push"),
    ("git -C repo -c x=y push -f", "git-force-push"),
    // SQL
    ("psql -c 'DROP DATABASE prod'", "sql-drop"),
    ("psql -c 'drop owned by app'", "sql-drop"),
    ("psql -c 'TRUNCATE users'", "sql-delete-all"),
    ("psql -c 'truncate table users cascade'", "sql-delete-all"),
    ("psql -c 'DELETE FROM users'", "sql-delete-all"),
    ("psql -c 'delete from users;'", "sql-delete-all"),
    ("psql -c 'DELETE FROM users WHERE 1=1'", "sql-delete-all"),
    ("mysql -e 'DELETE FROM t WHERE true'", "sql-delete-all"),
    ("psql <<EOF\nDROP TABLE users;\nEOF", "sql-drop"),
    (
        "psql -c 'DO $$ BEGIN EXECUTE ''DROP TABLE users''; END $$'",
        "sql-drop",
    ),
    ("psql -c 'SELECT $q$x$q$; DROP/**/TABLE t'", "sql-drop"),
    ("psql -c 'DROP -- c\nTABLE t'", "sql-drop"),
    ("psql -c 'DO $x$BEGIN TRUNCATE t; END$x$'", "sql-delete-all"),
    ("mysql -e '/*!50000 DROP TABLE t */'", "sql-drop"),
    ("mysql -uroot -e\"DrOp DaTaBaSe x\"", "sql-drop"),
    ("sqlite3 db 'DROP TABLE t'", "sql-drop"),
    ("sqlite3 app.db 'DELETE FROM sessions'", "sql-delete-all"),
    ("mongosh --eval 'db.dropDatabase()'", "sql-drop"),
    ("mongo --eval 'db[\"dropDatabase\"]()'", "sql-drop"),
    ("mongosh --eval \"db['drop'+'Database']()\"", "sql-drop"),
    (
        "mongosh --eval 'db.getSiblingDB(\"x\").dropDatabase()'",
        "sql-drop",
    ),
    ("mongosh --eval 'db.users.drop()'", "sql-drop"),
    (
        "mongosh --quiet --eval 'db.users.deleteMany({})'",
        "sql-delete-all",
    ),
    ("redis-cli flushall", "db-flush"),
    ("redis-cli -h db -a pw FLUSHDB", "db-flush"),
    ("redis-cli -n 0 FlushAll ASYNC", "db-flush"),
    ("redis-cli <<< flushall", "db-flush"),
    ("redis-cli EVAL \"redis.call('flushall')\" 0", "db-flush"),
    // interpreters
    (
        "python3 -c \"import shutil; shutil.rmtree('/')\"",
        "rm-root",
    ),
    ("python3 -c \"import os; os.system('rm -rf /')\"", "rm-root"),
    (
        "python -c \"import subprocess; subprocess.run(['rm','-rf','/'])\"",
        "rm-root",
    ),
    (
        "python3 -c \"import subprocess as s; s.call('rm -rf ~', shell=True)\"",
        "rm-home",
    ),
    (
        "python3 -c \"import os; c='rm -rf /'; os.system(c)\"",
        "rm-root",
    ),
    (
        "python3 -c \"import os; os.remove('/dev/sda')\"",
        "system-file-delete",
    ),
    (
        "python3 -c \"import os; os.unlink('/etc/passwd')\"",
        "system-file-delete",
    ),
    (
        "python3 -c \"open('/dev/sda','wb').write(b'0'*512)\"",
        "block-device-write",
    ),
    (
        "python3 -Ic \"import shutil; shutil.rmtree('/usr')\"",
        "rm-system-dir",
    ),
    ("perl -e 'system(\"rm -rf /\")'", "rm-root"),
    ("perl -e 'system \"rm -rf /\"'", "rm-root"),
    ("perl -e '`rm -rf /`'", "rm-root"),
    ("perl -e 'qx{rm -rf /}'", "rm-root"),
    ("perl -MFile::Path -e 'rmtree(\"/\")'", "rm-root"),
    (
        "perl -MFile::Path=remove_tree -le 'remove_tree(\"/etc\")'",
        "rm-system-dir",
    ),
    ("ruby -e 'FileUtils.rm_rf(\"/\")'", "rm-root"),
    ("ruby -rfileutils -e 'FileUtils.rm_rf Dir.home'", "rm-home"),
    ("ruby -e 'system(\"rm -rf /\")'", "rm-root"),
    ("ruby -e '%x(rm -rf /)'", "rm-root"),
    (
        "node -e \"require('child_process').execSync('rm -rf /')\"",
        "rm-root",
    ),
    (
        "node -e \"require('fs').rmSync('/', {recursive:true})\"",
        "rm-root",
    ),
    (
        "node --eval=\"require('child_process').spawnSync('rm', ['-rf', '/'])\"",
        "rm-root",
    ),
    ("awk 'BEGIN{system(\"rm -rf /\")}'", "rm-root"),
    ("gawk -e 'BEGIN { system(\"rm -rf /\") }'", "rm-root"),
    ("php -r 'system(\"rm -rf /\");'", "rm-root"),
    ("php -r 'shell_exec(\"rm -rf /\");'", "rm-root"),
    (
        "echo \"import os; os.system('rm -rf /')\" | python3",
        "rm-root",
    ),
    (
        "python3 -c \"exec('import os; os.system(\\\"rm -rf /\\\")')\"",
        "rm-root",
    ),
];

/// Look-alikes that must stay clean.
const CLEAN: &[&str] = &[
    "kubectl get pods",
    "kubectl delete pod my-pod",
    "kubectl delete deployment web -n staging",
    "kubectl replace --force -f pod.yaml",
    "helm list",
    "helm upgrade --install web ./chart",
    "helm plugin uninstall diff",
    "aws s3 cp a s3://b/a",
    "aws s3 ls",
    "aws s3 rm s3://bucket/key",
    "aws s3 sync ./dist s3://bucket --delete",
    "aws ec2 describe-instances",
    "gcloud compute instances list",
    "gsutil cp a gs://b",
    "az group list",
    "pulumi up --yes",
    "pulumi preview",
    "terraform plan",
    "terraform plan -destroy",
    "terraform plan -destroy -out p",
    "terraform apply",
    "terraform apply -auto-approve tfplan",
    "terraform apply -destroy=false",
    "git push origin main",
    "git push --tags",
    "git push -u origin feature",
    "git push --follow-tags origin main",
    "git reset --hard HEAD~1",
    "git clean -fdx",
    "docker ps",
    "docker build -t x .",
    "docker run --rm img",
    "docker rm -f my-container",
    "docker rmi img",
    "docker image prune -f",
    "docker compose down -v",
    "psql -c 'SELECT 1'",
    "psql -c 'DELETE FROM t WHERE id = 1'",
    "psql -c \"SELECT TRUNCATE(1.5, 0)\"",
    "mysql -e 'ALTER TABLE t ADD CONSTRAINT f FOREIGN KEY (a) REFERENCES b(a) ON DELETE CASCADE'",
    "redis-cli get k",
    "redis-cli -h db set k v",
    "mongosh --eval 'db.c.find()'",
    "mongosh --eval 'db.c.deleteMany({status: \"old\"})'",
    "python3 -c \"print('rm -rf /')\"",
    "python3 -c \"import os; print(os.getcwd())\"",
    "python3 -c \"import shutil; shutil.rmtree('build')\"",
    "python3 -c \"open('/dev/sda','rb').read(512)\"",
    "python3 -m http.server",
    "perl -pi -e 's/a/b/' file.txt",
    "perl -ne 'print if /x/' f",
    "ruby -e 'puts 1'",
    "node -e \"console.log(require('fs').readdirSync('.'))\"",
    "node -e \"require('fs').rmSync('dist', {recursive: true, force: true})\"",
    "awk '{print $1}' file",
    "awk -F: '{print $1 | \"sort\"}' /etc/passwd",
    "php -r 'echo 1;'",
    "echo 'DROP TABLE users'",
    "grep -r \"kill -9 -1\" .",
    "truncate -s0 build/log.txt",
    "dd if=/dev/zero of=./disk.img bs=1M count=10",
    "kill -9 $PID",
    "kill %1",
    "kill -HUP 1234",
    "kill -l",
    "pkill -f 'node server.js'",
    "killall node",
    "systemctl status nginx",
    "systemctl restart nginx",
    "strace -f ./build.sh",
    "strace -p 1234",
    "xargs -n1 echo",
    "find . -name '*.tmp' -exec rm {} +",
    "find . -name '*.tmp' -print | xargs rm -f",
    "parallel gzip ::: *.log",
    "tmux new -d -s build make",
    "screen -dmS build make",
    "script -qc 'make test' /dev/null",
    "echo 'make' | at now",
    "parted /dev/sda print",
    "parted -l",
    "sgdisk -p /dev/sda",
    "sfdisk -l /dev/sda",
    "sfdisk --dump /dev/sda > table.txt",
    "fdisk -l",
    "cryptsetup luksFormat ./container.img",
    "cryptsetup status root",
    "nvme list",
    "badblocks -sv /dev/sda",
    "hdparm -I /dev/sda",
    "cat /proc/sys/kernel/hostname",
    "echo 3 > /proc/sys/vm/drop_caches",
];

#[test]
fn families_deny_table() {
    let mut failures = Vec::new();
    for (script, rule) in DENY {
        let got = found(script);
        if !got.contains(rule) {
            failures.push(format!("{script:?}: expected {rule}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "not denied:\n{}", failures.join("\n"));
}

#[test]
fn families_clean_table() {
    let mut failures = Vec::new();
    for script in CLEAN {
        let got = found(script);
        if !got.is_empty() {
            failures.push(format!("{script:?}: {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "wrongly denied:\n{}",
        failures.join("\n")
    );
}

/// Remote destruction is Destructive whatever the step's containment.
#[test]
fn remote_rules_are_destructive() {
    for rule in [
        super::Rule::CloudDelete,
        super::Rule::HelmUninstall,
        super::Rule::GitForcePush,
        super::Rule::DockerDestroy,
        super::Rule::PulumiDestroy,
        super::Rule::SqlDeleteAll,
    ] {
        assert_eq!(rule.kind(), super::Kind::Destructive);
    }
}

/// A wrapper whose command is only known at run time is opaque.
#[test]
fn wrapped_run_time_commands_are_opaque() {
    for script in [
        "strace -f $CMD",
        "unshare -r \"$X\" -rf /",
        "cat list | xargs rm -rf",
        "python3 -c \"import os, sys; os.system(sys.argv[1])\"",
    ] {
        let got = found(script);
        assert!(
            got.iter().any(|r| r.starts_with("dynamic-")),
            "{script:?}: {got:?}"
        );
    }
}

/// argv steps see the same families.
#[test]
fn families_in_argv() {
    let argv = |words: &[&str]| -> Vec<&'static str> {
        let words: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
        super::analyse_argv(&words, &BTreeMap::new())
            .iter()
            .map(|f| f.rule.id())
            .collect()
    };
    assert!(argv(&["git", "push", "--force"]).contains(&"git-force-push"));
    assert!(argv(&["python3", "-c", "import shutil; shutil.rmtree('/')"]).contains(&"rm-root"));
    assert!(argv(&["kill", "-9", "-1"]).contains(&"mass-kill"));
    assert!(argv(&["systemd-run", "--scope", "rm", "-rf", "/"]).contains(&"rm-root"));
    assert!(argv(&["git", "push", "origin", "main"]).is_empty());
}

/// More evasions found while reviewing the families.
#[test]
fn more_evasions() {
    for (script, rule) in [
        ("sudo -- sh -c 'kill -9 -1'", "mass-kill"),
        ("echo 'git push -f' | bash", "git-force-push"),
        ("PUSH='git push --force'; $PUSH", "git-force-push"),
        ("K=kubectl; $K delete ns prod", "kubectl-delete"),
        ("time -p helm uninstall x", "helm-uninstall"),
        ("nohup aws s3 rm s3://b --recursive &", "cloud-delete"),
        ("docker exec db psql -c 'TRUNCATE users'", "sql-delete-all"),
        ("kubectl exec db-0 -- redis-cli flushall", "db-flush"),
        ("ssh prod 'docker system prune -af'", "docker-destroy"),
        ("env -S 'git push --force'", "git-force-push"),
        ("xargs -a /dev/null kubectl delete ns", "kubectl-delete"),
        ("psql -c \"DELETE FROM users\" -d prod", "sql-delete-all"),
        (
            "python3 - <<'EOF'\nimport shutil\nshutil.rmtree('/')\nEOF",
            "rm-root",
        ),
    ] {
        let got = found(script);
        assert!(
            got.contains(&rule),
            "{script:?}: expected {rule}, got {got:?}"
        );
    }
}
