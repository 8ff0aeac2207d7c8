//! The step process, between init's fork and the program's `exec`: every privilege it drops
//! is named here, in the order it is dropped.

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use caps::CapSet;
use landlock::{
    ABI, Access, AccessFs, CompatLevel, Compatible, RestrictionStatus, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, path_beneath_rules,
};
use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
use seccompiler::{BpfProgram, sock_filter};

use crate::SETUP_FAILED_EXIT_CODE;
use crate::failure::{Context, SetupFailure, one_line};
use crate::plan::SandboxPlan;

/// The exit code of a step whose program cannot be executed, as a shell uses it.
pub(crate) const EXEC_FAILED_EXIT_CODE: i32 = 127;

/// The newest Landlock ABI whose filesystem rights this crate knows how to grant (V5 added
/// the last one, `IoctlDev`). Older kernels enforce the subset they know.
const LANDLOCK_ABI: ABI = ABI::V5;

/// `(name, number)` pairs from `libc::SYS_*` constants.
macro_rules! syscalls {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), libc::$name as i64)),*]
    };
}

/// Syscalls refused with EPERM on every architecture; why, in `docs/sandbox.md`. The names
/// keep libc's `SYS_` prefix.
pub(crate) const REFUSED_SYSCALLS: &[(&str, i64)] = syscalls![
    // The machine itself.
    SYS_reboot,
    SYS_kexec_load,
    SYS_kexec_file_load,
    // Kernel modules.
    SYS_init_module,
    SYS_finit_module,
    SYS_delete_module,
    // Mounts, old and new API: the step's view of the filesystem is fixed.
    SYS_mount,
    SYS_umount2,
    SYS_pivot_root,
    SYS_move_mount,
    SYS_open_tree,
    SYS_fsopen,
    SYS_fsmount,
    SYS_fsconfig,
    SYS_fspick,
    SYS_mount_setattr,
    // Swap, clocks, accounting, quotas, the kernel log.
    SYS_swapon,
    SYS_swapoff,
    SYS_clock_settime,
    SYS_clock_adjtime,
    SYS_settimeofday,
    SYS_adjtimex,
    SYS_acct,
    SYS_quotactl,
    SYS_quotactl_fd,
    SYS_syslog,
    // Kernel attack surface that no build needs.
    SYS_bpf,
    SYS_keyctl,
    SYS_add_key,
    SYS_request_key,
    SYS_userfaultfd,
    SYS_perf_event_open,
    SYS_fanotify_init,
    SYS_open_by_handle_at,
    SYS_name_to_handle_at,
    SYS_lookup_dcookie,
    SYS_vhangup,
    // Leaving the sandbox's namespaces.
    SYS_setns,
];

/// Syscalls refused only where they exist (x86 port I/O, the a.out loader).
#[cfg(target_arch = "x86_64")]
pub(crate) const REFUSED_ARCH_SYSCALLS: &[(&str, i64)] =
    syscalls![SYS_iopl, SYS_ioperm, SYS_uselib];

/// Syscalls refused only where they exist (none more on this architecture).
#[cfg(not(target_arch = "x86_64"))]
pub(crate) const REFUSED_ARCH_SYSCALLS: &[(&str, i64)] = &[];

/// Confines this process and executes the step's program; never returns. A confinement
/// failure is written to `exec_failure` (init's pipe) and ends the process: nothing runs.
pub(crate) fn exec_step(plan: &SandboxPlan, exec_failure: OwnedFd) -> ! {
    let failure = match confine(plan) {
        Ok(()) => {
            let (program, args) = plan.argv.split_first().unwrap_or((&plan.argv[0], &[]));
            let error = std::process::Command::new(program)
                .args(args)
                .env("TMPDIR", "/tmp")
                .exec();
            // The program could not be run: the step's failure, not the sandbox's. Init tells
            // the two apart by the `exec ` prefix.
            let _ = writeln!(
                File::from(exec_failure),
                "exec {}",
                one_line(&crate::failure::Describe::describe(&error))
            );
            std::process::exit(EXEC_FAILED_EXIT_CODE)
        }
        Err(failure) => failure,
    };
    let _ = writeln!(File::from(exec_failure), "{}", one_line(&failure.message));
    std::process::exit(SETUP_FAILED_EXIT_CODE)
}

/// Everything between fork and exec, in order.
fn confine(plan: &SandboxPlan) -> Result<(), SetupFailure> {
    // Standard input: nothing. The control socket the shim reads must not reach the step.
    let null = File::open("/dev/null").context(|| "cannot open /dev/null".to_owned())?;
    nix::unistd::dup2_stdin(&null).context(|| "cannot make /dev/null standard input".to_owned())?;
    drop(null);
    std::env::set_current_dir(&plan.workdir).context(|| {
        format!(
            "cannot enter the working directory {}",
            plan.workdir.display()
        )
    })?;
    // Built before the capabilities go: it opens the paths it grants.
    let landlock = landlock_ruleset(plan)?;
    let seccomp = seccomp_program()?;
    drop_capabilities()?;
    nix::sys::prctl::set_no_new_privs().context(|| "cannot set no_new_privs".to_owned())?;
    let status = landlock
        .restrict_self()
        .context(|| "cannot apply the Landlock ruleset".to_owned())?;
    check_landlock(&status)?;
    seccompiler::apply_filter(&seccomp).context(|| "cannot apply the seccomp filter".to_owned())?;
    // Nothing but stdin, stdout and stderr reaches the step's program.
    crate::sys::close_inherited_on_exec()
        .context(|| "cannot mark inherited file descriptors close-on-exec".to_owned())?;
    // The shim blocks termination signals for itself; the step must start with none blocked.
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .context(|| "cannot clear the signal mask".to_owned())?;
    Ok(())
}

/// Clears every capability set. The bounding set first (it needs CAP_SETPCAP, which is still
/// effective then): without it, a step running as root in the namespace would get its
/// capabilities back at its next `exec`.
fn drop_capabilities() -> Result<(), SetupFailure> {
    for (set, name) in [
        (CapSet::Bounding, "bounding"),
        (CapSet::Ambient, "ambient"),
        (CapSet::Inheritable, "inheritable"),
        (CapSet::Effective, "effective"),
        (CapSet::Permitted, "permitted"),
    ] {
        caps::clear(None, set).context(|| format!("cannot clear the {name} capability set"))?;
    }
    Ok(())
}

/// Read and execute everywhere; every write-type right only beneath the workspace, `/tmp`,
/// the writable paths and `/dev` (whose own tmpfs is read-only: what stays writable there are
/// the device nodes, `/dev/pts` and `/dev/shm`).
fn landlock_ruleset(plan: &SandboxPlan) -> Result<landlock::RulesetCreated, SetupFailure> {
    let all = AccessFs::from_all(LANDLOCK_ABI);
    let read = AccessFs::from_read(LANDLOCK_ABI);
    let mut writable: Vec<PathBuf> = vec![plan.workspace.clone(), "/tmp".into(), "/dev".into()];
    writable.extend(plan.writable.iter().cloned());
    let ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(all)
        .context(|| "cannot prepare the Landlock ruleset".to_owned())?
        .create()
        .context(|| "cannot create the Landlock ruleset".to_owned())?
        .add_rules(path_beneath_rules([Path::new("/")], read))
        .context(|| "cannot allow reading /".to_owned())?
        .add_rules(path_beneath_rules(&writable, all))
        .context(|| "cannot allow writing the workspace and writable paths".to_owned())?;
    Ok(ruleset)
}

/// Fails closed when the kernel enforced nothing (Landlock absent or disabled).
fn check_landlock(status: &RestrictionStatus) -> Result<(), SetupFailure> {
    match status.ruleset {
        RulesetStatus::FullyEnforced | RulesetStatus::PartiallyEnforced => Ok(()),
        RulesetStatus::NotEnforced => Err(SetupFailure::new(
            "Landlock is not enabled in this kernel (add `landlock` to the `lsm=` boot parameter)",
        )),
    }
}

/// `AUDIT_ARCH_*` of the architecture this shim is built for (`<linux/audit.h>`): a syscall
/// made with another calling convention (32-bit `int 0x80` on x86_64) is killed, since its
/// numbers mean other syscalls.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;
#[cfg(target_arch = "riscv64")]
const AUDIT_ARCH: u32 = 0xC000_00F3;

/// On x86_64, syscall numbers with this bit set are the x32 ABI's aliases of the same
/// syscalls: refused as a whole, or every refusal below could be bypassed through them.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Default allow; EPERM for [`REFUSED_SYSCALLS`].
///
/// Written as classic BPF by hand rather than compiled by `seccompiler`: one comparison per
/// refused syscall, about 50 instructions where `seccompiler` emits about 210. The kernel
/// checks, translates and simulates the filter for every syscall number when it is installed
/// (its allow-cache), so the shorter program is what makes `seccomp(2)` cheap (0.26 ms before).
pub(crate) fn seccomp_program() -> Result<BpfProgram, SetupFailure> {
    const LOAD_WORD: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const JUMP_EQUAL: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const RETURN: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    // Offsets in `struct seccomp_data`: `int nr; __u32 arch; ...`.
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    let statement = |code: u16, k: u32| sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u16, k: u32, jt: u8, jf: u8| sock_filter { code, jt, jf, k };
    let refused: Vec<u32> = REFUSED_SYSCALLS
        .iter()
        .chain(REFUSED_ARCH_SYSCALLS)
        .map(|&(_, number)| u32::try_from(number))
        .collect::<Result<_, _>>()
        .context(|| "a refused syscall number does not fit the seccomp filter".to_owned())?;
    let mut program = vec![
        statement(LOAD_WORD, ARCH),
        jump(JUMP_EQUAL, AUDIT_ARCH, 1, 0),
        statement(RETURN, libc::SECCOMP_RET_KILL_PROCESS),
        statement(LOAD_WORD, NR),
    ];
    #[cfg(target_arch = "x86_64")]
    program.extend([
        jump(
            (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
            X32_SYSCALL_BIT,
            0,
            1,
        ),
        statement(RETURN, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
    ]);
    // Each comparison jumps, on a match, over the ones after it and the final allow, to the
    // refusal at the end.
    for (index, number) in refused.iter().enumerate() {
        let to_refusal = u8::try_from(refused.len() - index)
            .context(|| "too many refused syscalls for one BPF jump".to_owned())?;
        program.push(jump(JUMP_EQUAL, *number, to_refusal, 0));
    }
    program.push(statement(RETURN, libc::SECCOMP_RET_ALLOW));
    program.push(statement(
        RETURN,
        libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
    ));
    Ok(program)
}
