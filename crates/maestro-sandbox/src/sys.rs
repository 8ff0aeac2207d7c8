//! The only `unsafe` of the crate: fork, signal dispositions, a few raw syscalls, the
//! environment of a forked shim or launcher and descriptors received over a socket.
//!
//! Every function here is called from the shim, which is a freshly exec'd, single-threaded
//! process (see `shim.rs`), or from the launcher: that is what makes `fork` sound, and it is why
//! these wrappers are crate-private and must never be called from the multi-threaded caller
//! (`mc`). The one fork of the caller, of a launcher before its first thread, checks that it has
//! only one ([`fork_single_threaded`]).

use std::ffi::CStr;

use nix::errno::Errno;
use nix::sys::signal::{SigHandler, Signal};
use nix::unistd::{ForkResult, Pid};

/// Which side of a [`fork`] this process is on.
pub(crate) enum Forked {
    /// The original process; carries the child's pid.
    Parent(Pid),
    /// The new process.
    Child,
}

/// `fork(2)`.
///
/// Only call it from the shim or its descendants, which have exactly one thread (elsewhere,
/// [`fork_single_threaded`]).
pub(crate) fn fork() -> Result<Forked, Errno> {
    // SAFETY: the shim is a freshly exec'd program that never starts a second thread (no tokio,
    // no thread pool; see `shim::run`). In a single-threaded process no other thread can hold a
    // lock (of the allocator, of stdio) at the moment of the fork, so the child may go on
    // running ordinary Rust code, allocation included, which is what `fork`'s safety contract
    // asks for.
    match unsafe { nix::unistd::fork() }? {
        ForkResult::Parent { child } => Ok(Forked::Parent(child)),
        ForkResult::Child => Ok(Forked::Child),
    }
}

/// `fork(2)` of a process that is not the shim (`mc`, early in its `main`): checked to have
/// exactly one thread at the moment of the call, which is what makes the child's ordinary Rust
/// code (allocation included) sound; `Errno::EBUSY` if it has more, or if that cannot be read.
///
/// Only this thread could start another, so the count cannot change before the fork.
///
/// Both sides get the default disposition of `SIGCHLD` first: the caller and the launcher wait
/// for their children, and with `SIGCHLD` ignored (as a parent may leave it) the kernel reaps
/// them unseen: the launcher would never learn that a shim ended, nor the caller that a step did.
pub(crate) fn fork_single_threaded() -> Result<Forked, Errno> {
    let threads = std::fs::read_dir("/proc/self/task").map_or(0, Iterator::count);
    if threads != 1 {
        return Err(Errno::EBUSY);
    }
    default_disposition(Signal::SIGCHLD)?;
    fork()
}

/// Closes every descriptor from 3 up (`close_range(2)`, Linux 5.9): in a child forked from a
/// caller, so that it keeps none of the caller's files, sockets or pipes open.
///
/// Only call it in a forked child that never returns to the code that owns those descriptors
/// (their owners' `drop` never runs there), so none is used or closed again afterwards.
///
/// Where `close_range` is missing (a kernel before 5.9) or refused (an older container
/// engine's seccomp profile), each descriptor listed in `/proc/self/fd` is closed instead.
pub(crate) fn close_from_3() -> Result<(), Errno> {
    // SAFETY: per the contract above, no code that runs afterwards uses a descriptor above 2
    // that it did not open itself after this call. The arguments are plain integers.
    if unsafe { libc::close_range(3, u32::MAX, 0) } == 0 {
        return Ok(());
    }
    let listed: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .map_err(|error| Errno::from_raw(error.raw_os_error().unwrap_or(libc::EIO)))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|&fd| fd > 2)
        .collect();
    for fd in listed {
        // SAFETY: as above; the directory listing's own descriptor is closed already (closing
        // it again fails with EBADF, which is ignored).
        let _ = unsafe { libc::close(fd) };
    }
    Ok(())
}

/// Puts the default disposition back for `signal`, so that raising it has its default effect
/// (the shim mirrors a step killed by a signal by dying of that same signal).
pub(crate) fn default_disposition(signal: Signal) -> Result<(), Errno> {
    // SAFETY: installing SIG_DFL registers no Rust function as a handler, so no handler can run
    // in an async-signal-unsafe context; the shim is single-threaded, so no other thread is
    // racing on the disposition table.
    unsafe { nix::sys::signal::signal(signal, SigHandler::SigDfl) }.map(drop)
}

/// `mount_setattr(2)` on the whole tree under `path`: makes every mount read-only, recursively,
/// in one call (Linux 5.12). Mounts that were locked read-only stay so; locked nosuid, nodev and
/// noexec flags are untouched because only `MOUNT_ATTR_RDONLY` is set and nothing is cleared.
pub(crate) fn make_tree_read_only(path: &CStr) -> Result<(), Errno> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: `path` is a valid NUL-terminated string and `attr` a valid, initialised
    // `struct mount_attr` whose exact size is passed; the kernel only reads both during the
    // call, and no pointer outlives it.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if result == -1 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// `LANDLOCK_CREATE_RULESET_VERSION` from `<linux/landlock.h>` (libc does not export it).
const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;

/// The Landlock ABI version the kernel offers, 0 when Landlock is absent or disabled.
///
/// This only asks the kernel a question (`LANDLOCK_CREATE_RULESET_VERSION` creates nothing), so
/// unlike the rest of this module it is also safe in the multi-threaded caller.
pub(crate) fn landlock_abi() -> i64 {
    // SAFETY: with a NULL attribute pointer, size 0 and the VERSION flag, the kernel reads and
    // writes no memory of ours; it only returns a number (or -1 with errno).
    let version = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<u8>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    version.max(0)
}

/// Marks every file descriptor from 3 up close-on-exec (`close_range(2)` with
/// `CLOSE_RANGE_CLOEXEC`, Linux 5.11), so the step's program inherits only its stdin, stdout
/// and stderr: not a descriptor `mc`'s own caller leaked to it (a socket, a privileged file),
/// not the shim's pipes.
pub(crate) fn close_inherited_on_exec() -> Result<(), Errno> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC closes nothing now; it only sets the
    // close-on-exec flag, so no descriptor that Rust code owns becomes invalid while it runs.
    // The arguments are plain integers.
    let result =
        unsafe { libc::close_range(3, u32::MAX, libc::CLOSE_RANGE_CLOEXEC as libc::c_int) };
    if result == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// Replaces this process's environment with `variables`: what a launcher's forked shim does
/// to start with the environment an executed shim gets from its caller.
///
/// Only call it from a forked child of the launcher (see `launcher.rs`), which has one thread.
pub(crate) fn replace_environment(variables: Vec<(std::ffi::OsString, std::ffi::OsString)>) {
    // `clearenv` empties the C library's variable array whatever it holds (also entries that
    // `std::env` cannot name, such as one without `=`, which `remove_var` would panic on).
    // SAFETY: the launcher and its forked children never start a second thread, so no other
    // thread can read or write the environment while it changes.
    unsafe { libc::clearenv() };
    for (name, value) in variables {
        // What `set_var` would panic on (the caller refuses it before sending): skipped.
        let (name_bytes, value_bytes) = (name.as_encoded_bytes(), value.as_encoded_bytes());
        if name_bytes.is_empty()
            || name_bytes.contains(&b'=')
            || name_bytes.contains(&0)
            || value_bytes.contains(&0)
        {
            continue;
        }
        // SAFETY: as above, one thread.
        unsafe { std::env::set_var(name, value) };
    }
}

/// Overwrites with zeros the block of environment strings this process was started with (what
/// `/proc/<pid>/environ` shows): in a launcher forked from its caller, which holds the caller's
/// environment there, so that neither it nor the shims forked from it show that environment, as
/// an executed launcher (started with none) does not. Best effort: skipped where the block's
/// bounds cannot be read.
///
/// Only call it right after [`replace_environment`] emptied the environment, in a process with
/// one thread: then nothing refers to those strings any more (`clearenv` left the C library
/// no variable array, and the variables set afterwards live on the heap). A pointer the dynamic
/// loader kept into the block reads an empty string from then on.
pub(crate) fn scrub_initial_environment() {
    // `/proc/self/stat`: after the command name in parentheses, fields 3 onwards; `env_start`
    // and `env_end` are fields 50 and 51.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let bound = |field: usize| fields.get(field - 3)?.parse::<usize>().ok();
    let (Some(start), Some(end)) = (bound(50), bound(51)) else {
        return;
    };
    if start == 0 || end <= start {
        return;
    }
    // SAFETY: `[start, end)` is this process's initial environment block, on the main
    // thread's stack, mapped readable and writable for the life of the process (the kernel
    // placed it there at exec). Per the contract above nothing refers to it now, and no other
    // thread exists to read it while it is written.
    unsafe { std::ptr::write_bytes(start as *mut u8, 0, end - start) };
}

/// Takes ownership of descriptors received with `SCM_RIGHTS`.
///
/// Only pass descriptors the kernel has just installed in this process for a received
/// message (`recvmsg`'s control messages): nothing else owns them yet.
pub(crate) fn own_received(
    fds: impl IntoIterator<Item = std::os::fd::RawFd>,
) -> Vec<std::os::fd::OwnedFd> {
    fds.into_iter()
        // SAFETY: per the contract above, each descriptor is open and owned by no one else.
        .map(|fd| unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
        .collect()
}

/// Registers `fd` with tokio's reactor, owned by the returned `AsyncFd` (the caller's side of
/// the launcher's request socket). Call it inside a tokio runtime.
pub(crate) fn async_fd(
    fd: std::os::fd::OwnedFd,
) -> std::io::Result<tokio::io::unix::AsyncFd<std::os::fd::OwnedFd>> {
    // SAFETY: the `AsyncFd` owns the `OwnedFd`, so the descriptor stays open and names the same
    // socket for as long as it is registered, and `OwnedFd::as_raw_fd` always returns it.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|error| error.into_parts().1)
}

/// Closes `fd` in a forked child that never returns to the code that owns it (the owner's
/// `drop` never runs there: the child ends with `exit`), so it cannot be closed twice.
pub(crate) fn close_in_child(fd: std::os::fd::RawFd) {
    // SAFETY: per the contract above, nothing in this process uses or closes `fd` afterwards.
    let _ = unsafe { libc::close(fd) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn landlock_abi_is_a_small_number() {
        let abi = landlock_abi();
        assert!((0..100).contains(&abi), "{abi}");
    }

    #[test]
    fn fork_in_a_child_process_reports_both_sides() {
        // The test harness is multi-threaded, so fork's contract is honoured the only way it
        // can be here: the child does nothing but `_exit`, which is async-signal-safe.
        match fork().expect("fork") {
            Forked::Child => {
                // SAFETY: `_exit` is async-signal-safe and ends the process at once.
                unsafe { libc::_exit(7) }
            }
            Forked::Parent(child) => {
                let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 7));
            }
        }
    }

    #[test]
    fn default_disposition_lets_a_raised_signal_kill() {
        // SIGUSR1 is ignored first, so only `default_disposition` can make the raise fatal. The
        // child only makes async-signal-safe syscalls before `_exit` (the harness has threads).
        match fork().expect("fork") {
            Forked::Child => {
                let _ = nix::sys::signal::sigprocmask(
                    nix::sys::signal::SigmaskHow::SIG_SETMASK,
                    Some(&nix::sys::signal::SigSet::empty()),
                    None,
                );
                // SAFETY: SIG_IGN registers no handler; this child process has one thread.
                let _ = unsafe { nix::sys::signal::signal(Signal::SIGUSR1, SigHandler::SigIgn) };
                let _ = default_disposition(Signal::SIGUSR1);
                let _ = nix::sys::signal::raise(Signal::SIGUSR1);
                // SAFETY: `_exit` is async-signal-safe and ends the process at once.
                unsafe { libc::_exit(0) }
            }
            Forked::Parent(child) => {
                let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(
                    status,
                    nix::sys::wait::WaitStatus::Signaled(child, Signal::SIGUSR1, false)
                );
            }
        }
    }

    #[test]
    fn make_tree_read_only_rejects_a_missing_path() {
        let error = make_tree_read_only(c"/nonexistent-maestro-sandbox-path").unwrap_err();
        assert!(matches!(error, Errno::ENOENT | Errno::EPERM), "{error}");
    }

    #[test]
    fn inherited_descriptors_become_close_on_exec() {
        // The child only makes syscalls (no allocation) before `_exit`: the harness has threads.
        match fork().expect("fork") {
            Forked::Child => {
                let code = match nix::fcntl::open(
                    c"/dev/null",
                    nix::fcntl::OFlag::O_RDONLY,
                    nix::sys::stat::Mode::empty(),
                ) {
                    Ok(fd) => {
                        let before = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD);
                        let marked = close_inherited_on_exec();
                        let after = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFD);
                        let cloexec = libc::FD_CLOEXEC;
                        match (before, marked, after) {
                            (Ok(b), Ok(()), Ok(a)) if b & cloexec == 0 && a & cloexec != 0 => 0,
                            _ => 1,
                        }
                    }
                    Err(_) => 2,
                };
                // SAFETY: `_exit` is async-signal-safe and ends the process at once.
                unsafe { libc::_exit(code) }
            }
            Forked::Parent(child) => {
                let status = nix::sys::wait::waitpid(child, None).expect("waitpid");
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
            }
        }
    }
}
