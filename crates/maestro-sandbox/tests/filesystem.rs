//! What a step can and cannot write, and what it sees of the host's files.

use std::os::unix::fs::PermissionsExt;

use maestro_sandbox::HostAccess;

use crate::util::{As, Dir, run, shell_plan};

#[tokio::test]
async fn the_workspace_is_writable() {
    for who in [As::Me, As::Nobody] {
        let workspace = Dir::new("ws");
        let plan = shell_plan(workspace.path(), "echo hello > out.txt && mkdir -p a/b");
        let run = run(&plan, who, &[]).await;
        run.assert_success();
        assert_eq!(
            std::fs::read_to_string(workspace.join("out.txt")).unwrap(),
            "hello\n"
        );
        assert!(workspace.join("a/b").is_dir());
    }
}

#[tokio::test]
async fn the_host_outside_the_workspace_is_read_only_even_for_root() {
    let workspace = Dir::new("ws");
    // The canary: a directory of this test's own, outside the workspace, with a root-owned
    // 0644 file (the test runs as root on the test machines, so only the sandbox protects it).
    let canary = Dir::new("canary");
    let file = canary.join("canary.txt");
    std::fs::write(&file, "intact\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let script = format!(
        "rm -rf {dir}; echo x > {file}; echo y >> {file}; chmod 777 {file}; mv {file} {file}.moved; true",
        dir = canary.path().display(),
        file = file.display()
    );
    for who in [As::Me, As::Nobody] {
        let run = run(&shell_plan(workspace.path(), &script), who, &[]).await;
        run.assert_success();
        assert!(
            run.stderr.contains("Read-only file system"),
            "{}",
            run.stderr
        );
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "intact\n");
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}

/// The read-only path cannot be moved away with a parent that lies in the workspace (which
/// would leave an empty directory in its place and the real one writable to later steps).
#[tokio::test]
async fn a_read_only_path_cannot_be_moved_away_with_its_parents() {
    let workspace = Dir::new("ws");
    std::fs::create_dir_all(workspace.join("var/lib/maestro")).unwrap();
    std::fs::write(workspace.join("var/lib/maestro/audit.log"), "audit\n").unwrap();
    std::fs::write(workspace.join("var/other"), "other\n").unwrap();
    let mut plan = shell_plan(
        workspace.path(),
        "mv var var.moved; mv var/lib var/lib.moved; mv var/lib/maestro var/m; \
         rm -rf var; echo done > done.txt",
    );
    plan.read_only.push(workspace.join("var/lib/maestro"));
    let run = run(&plan, As::Me, &[]).await;
    run.assert_success();
    assert!(workspace.join("done.txt").exists(), "the step did not run");
    assert_eq!(
        std::fs::read_to_string(workspace.join("var/lib/maestro/audit.log")).unwrap(),
        "audit\n"
    );
    for moved in ["var.moved", "var/lib.moved", "var/m"] {
        assert!(!workspace.join(moved).exists(), "{moved} was made");
    }
    // What is not on the way to it stays the step's to change.
    assert!(!workspace.join("var/other").exists());
}

#[tokio::test]
async fn a_read_only_path_inside_the_workspace_cannot_be_changed() {
    let workspace = Dir::new("ws");
    std::fs::create_dir(workspace.join("var")).unwrap();
    std::fs::write(workspace.join("var/state"), "audit\n").unwrap();
    let mut plan = shell_plan(
        workspace.path(),
        "rm -rf ./var; echo x > var/state; touch var/new; echo ok > beside.txt",
    );
    plan.read_only.push(workspace.join("var"));
    let run = run(&plan, As::Me, &[]).await;
    run.assert_success();
    assert_eq!(
        std::fs::read_to_string(workspace.join("var/state")).unwrap(),
        "audit\n"
    );
    assert!(!workspace.join("var/new").exists());
    // The rest of the workspace stays writable.
    assert_eq!(
        std::fs::read_to_string(workspace.join("beside.txt")).unwrap(),
        "ok\n"
    );
}

#[tokio::test]
async fn writable_paths_are_writable_and_nothing_else_outside() {
    let workspace = Dir::new("ws");
    let cache = Dir::new("cache");
    let script = format!("echo c > {}/entry", cache.path().display());
    let mut plan = shell_plan(workspace.path(), &script);
    plan.writable.push(cache.path().to_path_buf());
    run(&plan, As::Me, &[]).await.assert_success();
    assert_eq!(std::fs::read_to_string(cache.join("entry")).unwrap(), "c\n");
}

#[tokio::test]
async fn tmp_is_private_empty_and_gone_afterwards() {
    let marker = format!("/tmp/maestro-sandbox-host-marker-{}", std::process::id());
    std::fs::write(&marker, "host").unwrap();
    let workspace = Dir::new("ws");
    let plan = shell_plan(
        workspace.path(),
        "ls -A /tmp; echo inside > /tmp/maestro-sandbox-inside && cat /tmp/maestro-sandbox-inside; echo \"TMPDIR=$TMPDIR\"",
    );
    let run = run(&plan, As::Me, &[]).await;
    std::fs::remove_file(&marker).unwrap();
    run.assert_success();
    assert_eq!(run.stdout, "inside\nTMPDIR=/tmp\n");
    assert!(!std::path::Path::new("/tmp/maestro-sandbox-inside").exists());
}

#[tokio::test]
async fn a_workspace_under_tmp_is_still_the_hosts() {
    let workspace = Dir::in_tmp("ws");
    let plan = shell_plan(workspace.path(), "echo kept > kept.txt");
    run(&plan, As::Me, &[]).await.assert_success();
    assert_eq!(
        std::fs::read_to_string(workspace.join("kept.txt")).unwrap(),
        "kept\n"
    );
}

#[tokio::test]
async fn dev_has_only_the_safe_nodes_and_no_block_devices() {
    let workspace = Dir::new("ws");
    let plan = shell_plan(
        workspace.path(),
        "find /dev -type b | wc -l; ls /dev | tr '\\n' ' '; echo; echo x > /dev/null && head -c 4 /dev/zero | wc -c; touch /dev/evil; true",
    );
    let run = run(&plan, As::Me, &[]).await;
    run.assert_success();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines[0].trim(), "0", "{}", run.stdout);
    assert_eq!(
        lines[1].trim(),
        "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero"
    );
    assert_eq!(lines[2].trim(), "4");
    assert!(run.stderr.contains("/dev/evil"), "{}", run.stderr);
}

#[tokio::test]
async fn credentials_under_home_are_hidden_unless_exposed() {
    let workspace = Dir::new("ws");
    let home = Dir::new("home");
    std::fs::create_dir(home.join(".ssh")).unwrap();
    std::fs::write(home.join(".ssh/id_test"), "secret key").unwrap();
    std::fs::write(home.join(".netrc"), "machine m password p").unwrap();
    std::fs::write(home.join(".profile"), "visible").unwrap();
    let script = "ls -A \"$HOME/.ssh\"; cat \"$HOME/.netrc\"; cat \"$HOME/.profile\"; echo";
    let mut plan = shell_plan(workspace.path(), script);
    let env = [("HOME", home.path())];

    let hidden = run(&plan, As::Me, &env).await;
    hidden.assert_success();
    assert_eq!(hidden.stdout, "visible\n");

    plan.expose = vec![HostAccess::Ssh, HostAccess::Netrc];
    let exposed = run(&plan, As::Me, &env).await;
    exposed.assert_success();
    assert_eq!(exposed.stdout, "id_test\nmachine m password pvisible\n");
}
