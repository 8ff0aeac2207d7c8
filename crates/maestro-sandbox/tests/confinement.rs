//! Network, seccomp, capabilities and names inside the sandbox.

use maestro_sandbox::NetworkMode;

use crate::util::{As, Dir, run, shell_plan};

#[tokio::test]
async fn network_none_has_only_loopback_and_it_is_up() {
    let workspace = Dir::new("ws");
    let mut plan = shell_plan(workspace.path(), "ip -o link show; ip -o -4 addr show lo");
    plan.network = NetworkMode::None;
    for who in [As::Me, As::Nobody] {
        let run = run(&plan, who, &[]).await;
        run.assert_success();
        let links: Vec<&str> = run.stdout.lines().filter(|l| l.contains("link/")).collect();
        assert_eq!(links.len(), 1, "{}", run.stdout);
        assert!(
            links[0].contains(": lo:") && links[0].contains(",UP"),
            "{}",
            run.stdout
        );
        assert!(run.stdout.contains("127.0.0.1"), "{}", run.stdout);
    }
}

#[tokio::test]
async fn network_host_is_the_hosts() {
    let workspace = Dir::new("ws");
    let plan = shell_plan(workspace.path(), "ip -o link show | wc -l");
    let host = std::process::Command::new("sh")
        .args(["-c", "ip -o link show | wc -l"])
        .output()
        .unwrap();
    let run = run(&plan, As::Me, &[]).await;
    run.assert_success();
    assert_eq!(run.stdout, String::from_utf8_lossy(&host.stdout));
}

/// `add_key` is allowed to any user by the kernel, so only the seccomp filter can refuse it.
#[tokio::test]
async fn seccomp_refuses_add_key_swapoff_and_mount() {
    let add_key = if cfg!(target_arch = "aarch64") {
        217
    } else {
        248
    };
    let script = format!(
        "perl -e 'my ($t, $d, $p) = (\"user\", \"maestro-test\", \"x\"); $r = syscall({add_key}, $t, $d, $p, 1, -2); print \"add_key $r $!\\n\"'; \
         swapoff /nonexistent-swap 2>&1; echo \"swapoff $?\"; \
         unshare -Urm mount -t tmpfs none /tmp 2>&1; echo \"mount $?\""
    );
    // Outside the sandbox, the same add_key succeeds: the test can tell the filter is there.
    let outside = std::process::Command::new("perl")
        .args([
            "-e",
            &format!("my ($t, $d, $p) = (\"user\", \"maestro-test\", \"x\"); $r = syscall({add_key}, $t, $d, $p, 1, -2); print $r > 0 ? \"ok\" : \"$!\""),
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&outside.stdout), "ok");
    let workspace = Dir::new("ws");
    let run = run(&shell_plan(workspace.path(), &script), As::Me, &[]).await;
    run.assert_success();
    assert!(
        run.stdout.contains("add_key -1 Operation not permitted"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("swapoff 255") || run.stdout.contains("swapoff 1"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("Operation not permitted"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("mount 0"), "{}", run.stdout);
}

#[tokio::test]
async fn the_step_has_no_capabilities_and_no_new_privileges() {
    let workspace = Dir::new("ws");
    let plan = shell_plan(
        workspace.path(),
        "grep -E '^(CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; hostname; echo \"stdin=$(readlink /proc/self/fd/0)\"",
    );
    let run = run(&plan, As::Me, &[]).await;
    run.assert_success();
    for set in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            run.stdout.contains(&format!("{set}:\t0000000000000000")),
            "{set}: {}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("NoNewPrivs:\t1"), "{}", run.stdout);
    assert!(run.stdout.contains("Seccomp:\t2"), "{}", run.stdout);
    assert!(run.stdout.contains("maestro-sandbox\n"), "{}", run.stdout);
    assert!(run.stdout.contains("stdin=/dev/null"), "{}", run.stdout);
}
