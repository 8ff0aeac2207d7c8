//! Whether this kernel can run sandboxed steps: checked in-process, without creating anything.

use std::sync::OnceLock;

use crate::SandboxError;
use crate::sys;

/// What the kernel offers the sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Support {
    /// The Landlock ABI version (1 is Linux 5.13; this crate uses rights up to 5).
    pub landlock_abi: u32,
}

/// The end of every refusal: how to run the step anyway.
const OPT_OUT: &str = "; set `isolation: none` on the step to run it without the sandbox";

/// Checks, once per process, that the kernel has Landlock, seccomp and user namespaces the
/// caller may create. Cheap (a syscall and a few small `/proc` reads) and safe in a
/// multi-threaded caller: it reads, it never `unshare`s. Each error is one line ending with
/// what to set to run the step without the sandbox.
pub fn check_support() -> Result<Support, SandboxError> {
    static CHECKED: OnceLock<Result<Support, String>> = OnceLock::new();
    CHECKED
        .get_or_init(|| check(nix::unistd::geteuid().is_root()))
        .clone()
        .map_err(|message| SandboxError::Unsupported { message })
}

fn read_number(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn check(is_root: bool) -> Result<Support, String> {
    let landlock_abi = sys::landlock_abi();
    if landlock_abi < 1 {
        return Err(format!(
            "this kernel has no Landlock (Linux 5.13 or later with `landlock` in the `lsm=` boot parameter is needed){OPT_OUT}"
        ));
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if !status.lines().any(|line| line.starts_with("Seccomp:")) {
        return Err(format!(
            "this kernel has no seccomp (CONFIG_SECCOMP){OPT_OUT}"
        ));
    }
    match read_number("/proc/sys/user/max_user_namespaces") {
        None => {
            return Err(format!(
                "this kernel has no user namespaces (CONFIG_USER_NS){OPT_OUT}"
            ));
        }
        Some(0) => {
            return Err(format!(
                "user namespaces are disabled (user.max_user_namespaces = 0){OPT_OUT}"
            ));
        }
        Some(_) => {}
    }
    if is_root && !has_setfcap(&status) {
        // Since Linux 5.12 only a process holding CAP_SETFCAP may map root into a user
        // namespace it creates, and the sandbox maps the caller's own uid.
        return Err(format!(
            "mc runs as root without CAP_SETFCAP (capabilities dropped), so the sandbox cannot map root into its user namespace; run mc with its capabilities or as an ordinary user{OPT_OUT}"
        ));
    }
    if !is_root {
        if read_number("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
            return Err(format!(
                "unprivileged user namespaces are disabled (kernel.unprivileged_userns_clone = 0){OPT_OUT}"
            ));
        }
        if read_number("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
            return Err(format!(
                "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1; install the AppArmor profile for mc from docs/sandbox.md){OPT_OUT}"
            ));
        }
    }
    Ok(Support {
        landlock_abi: u32::try_from(landlock_abi).unwrap_or(u32::MAX),
    })
}

/// CAP_SETFCAP's bit in the capability sets.
const CAP_SETFCAP: u32 = 31;

/// Whether `/proc/self/status` (its text) shows CAP_SETFCAP in the effective set.
fn has_setfcap(status: &str) -> bool {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SETFCAP) != 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn setfcap_is_read_from_the_effective_set() {
        assert!(has_setfcap("Name:\tx\nCapEff:\t000001ffffffffff\n"));
        assert!(!has_setfcap("CapEff:\t000001ff7fffffff\n"));
        assert!(!has_setfcap("CapEff:\t0000000000000000\n"));
        assert!(!has_setfcap(""));
    }

    use super::*;

    #[test]
    fn this_machine_supports_the_sandbox() {
        // The test machines have Landlock, seccomp and user namespaces; if this fails, the
        // message says which is missing.
        let support = check_support().unwrap();
        assert!(support.landlock_abi >= 1);
    }

    #[test]
    fn refusals_are_one_line_with_the_opt_out() {
        // Reproduce a refusal by checking as a non-root caller on a kernel that may restrict;
        // when this kernel allows everything, check the constant's shape instead.
        match check(false) {
            Ok(_) => assert!(OPT_OUT.starts_with("; set `isolation: none`")),
            Err(message) => {
                assert!(!message.contains('\n'));
                assert!(message.ends_with(OPT_OUT), "{message}");
            }
        }
    }
}
