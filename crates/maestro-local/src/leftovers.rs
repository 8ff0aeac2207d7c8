//! What an `isolation: none` step left behind: its process group, and processes that carry its
//! job and step in their environment but left the group (`setsid`, double forks).
//!
//! Without a PID namespace nothing guarantees that a bare step's processes die with it; this
//! module checks, kills what remains and says what it found, so that the step's record is true.

use std::collections::BTreeSet;
use std::time::Duration;

use maestro_core::JobId;
use maestro_core::executor::{Teardown, TeardownMethod};
use rustix::process::{Pid, Signal, kill_process, test_kill_process_group};

use crate::GROUP_EMPTY_WITHIN;

/// Hold while spawning a step's process (see [`maestro_core::children::spawning`]): between
/// its fork and its exec a new child still has this process's environment, not yet its step's
/// marker, so to the orphan search of another step it would look exactly like an orphan that
/// step left (`mc serve` runs several jobs' steps at once). Never across an `await`.
pub(crate) use maestro_core::children::spawning;

/// A step's own process (a bare step's command, a sandboxed step's shim, a launcher), registered
/// as one of this program's (see [`maestro_core::children`]) from its spawn until dropped: never
/// another step's adopted orphan, also while its exec has not yet set up the environment that
/// says whose it is (`spawn` returns once the exec has begun, and for a moment after that the
/// new image's environment reads empty).
pub(crate) use maestro_core::children::Registered as StepChild;

/// One process seen in `/proc`.
pub(crate) struct Process {
    pub(crate) pid: i32,
    /// Its parent.
    pub(crate) parent: i32,
    /// Its command name (`comm`), control characters removed.
    pub(crate) command: String,
    /// Its process group.
    pub(crate) group: i32,
    /// Whether it is a zombie: dead, waiting for its parent to reap it, harmless.
    pub(crate) zombie: bool,
}

impl Process {
    fn read(pid: i32) -> Option<Self> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid pgrp …`; comm may hold spaces and parentheses, so split at the
        // last `)`.
        let close = stat.rfind(')')?;
        let open = stat.find('(')?;
        let command: String = stat
            .get(open + 1..close)?
            .chars()
            .filter(|c| !c.is_control())
            .collect();
        let mut rest = stat.get(close + 2..)?.split(' ');
        let state = rest.next()?;
        let parent = rest.next()?.parse().ok()?;
        let group = rest.next()?.parse().ok()?;
        Some(Self {
            pid,
            parent,
            command,
            group,
            zombie: state == "Z" || state == "X",
        })
    }

    /// `pid 123 (sleep)`.
    pub(crate) fn describe(&self) -> String {
        format!("pid {} ({})", self.pid, self.command)
    }
}

/// Every process id in `/proc` but our own.
pub(crate) fn pids() -> Vec<i32> {
    let own = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| u32::try_from(pid).ok() != Some(own))
        .collect()
}

/// The job and step a process belongs to, read from the `MAESTRO_JOB_ID` and `MAESTRO_STEP`
/// every local step inherits.
pub(crate) fn process_step(pid: i32) -> Option<(JobId, String)> {
    let environ = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    let value = |name: &[u8]| {
        environ
            .split(|&b| b == 0)
            .find_map(|entry| entry.strip_prefix(name))
            .and_then(|value| std::str::from_utf8(value).ok())
            .map(str::to_owned)
    };
    let job = JobId::try_parse(&value(b"MAESTRO_JOB_ID=")?).ok()?;
    Some((job, value(b"MAESTRO_STEP=").unwrap_or_default()))
}

/// Live (non-zombie) members of process group `group`.
fn group_members(group: i32) -> Vec<Process> {
    pids()
        .into_iter()
        .filter_map(Process::read)
        .filter(|process| process.group == group && !process.zombie)
        .collect()
}

/// Makes this process the reaper of its orphaned descendants, so that a bare step's process that
/// left its group *and* cleared its environment (`setsid env -i daemon &`) still turns up: as a
/// child of `mc` it did not start.
pub(crate) fn adopt_orphans() {
    if let Err(error) = rustix::process::set_child_subreaper(Some(rustix::process::getpid())) {
        tracing::warn!(%error, "cannot become the reaper of orphaned step processes");
    }
}

/// The children of this process right now, by pid.
pub(crate) fn own_children() -> Vec<i32> {
    let own = rustix::process::getpid().as_raw_nonzero().get();
    if let Some(children) = children_of(own) {
        return children;
    }
    pids()
        .into_iter()
        .filter_map(Process::read)
        .filter(|process| process.parent == own)
        .map(|process| process.pid)
        .collect()
}

/// Whether this process can list its tasks' children in `/proc/<pid>/task/<tid>/children`:
/// the kernel has them (`CONFIG_PROC_CHILDREN`, on in the common distributions' kernels), and
/// `/proc` is this process's PID namespace's (`/proc/self` is this process: not so in a PID
/// namespace entered without mounting its own `/proc`, where a pid names another process).
/// Read once.
fn children_files() -> bool {
    static USABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *USABLE.get_or_init(|| {
        let own = rustix::process::getpid().as_raw_nonzero().get().to_string();
        std::fs::read_link("/proc/self").is_ok_and(|link| link.as_os_str() == own.as_str())
            && std::path::Path::new("/proc/thread-self/children").exists()
    })
}

/// How many times a list of children is read before it is given up as changing too fast (the
/// callers then read every process instead).
const CHILDREN_READS: usize = 8;

/// The children of process `pid`, from the `children` file of each of its threads: a child is
/// listed under the thread that forked it, an adopted orphan under the thread it was given to.
/// Empty for a process that is gone. `None` where the files cannot be used or read (no such
/// files, a `/proc` that hides the process's tasks), or the list would not hold still.
///
/// The kernel prints such a file one child at a time, by position: a child that leaves the list
/// while it is printed (reaped, or re-parented) shifts the ones after it, and one of them can be
/// skipped. So the list is read until two reads in a row agree: a read that skipped a child did
/// so because another, which it printed, left the list; the next read cannot print that one,
/// so the two differ.
fn children_of(pid: i32) -> Option<Vec<i32>> {
    if !children_files() {
        return None;
    }
    let mut last: Option<Vec<i32>> = None;
    for _ in 0..CHILDREN_READS {
        let mut children = match std::fs::read_dir(format!("/proc/{pid}/task")) {
            Ok(tasks) => {
                let mut children = Vec::new();
                for task in tasks {
                    let task = task.ok()?;
                    match read_children_file(&task.path().join("children")) {
                        Ok(list) => children.extend(list),
                        // A thread that has just exited: its children went to another thread,
                        // which the next read finds them under.
                        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                        Err(_) => return None,
                    }
                }
                children
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(_) => return None,
        };
        children.sort_unstable();
        if last.as_ref() == Some(&children) {
            return last;
        }
        last = Some(children);
    }
    None
}

/// One `children` file, read in one call where it fits (fewer chances for it to change while it
/// is printed).
fn read_children_file(path: &std::path::Path) -> std::io::Result<Vec<i32>> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut text = Vec::with_capacity(16 * 1024);
    file.read_to_end(&mut text)?;
    Ok(text
        .split(u8::is_ascii_whitespace)
        .filter_map(|pid| std::str::from_utf8(pid).ok()?.parse().ok())
        .collect())
}

/// Every process that may belong to a step that ran here, for [`verify_group`]'s scan. When this
/// process is a child subreaper, a step's processes are its descendants (a process that leaves
/// the step's tree by losing its parent is re-parented here), so only they are read: a walk
/// down from this process's children, not a read of every process on the machine (twice,
/// `stat` and `environ`, for each). A process whose parent ends during the walk is re-parented
/// here, possibly after this process's children were read: the walk starts over from them
/// until it finds nothing new. Otherwise (not a subreaper, no usable `children` files, lists
/// that would not hold still), every process in `/proc`.
fn step_candidates() -> Vec<i32> {
    let subreaper = matches!(rustix::process::child_subreaper(), Ok(Some(_)));
    let own = rustix::process::getpid().as_raw_nonzero().get();
    if !subreaper {
        return pids();
    }
    let mut seen = BTreeSet::new();
    for _ in 0..CHILDREN_READS {
        let Some(mut next) = children_of(own) else {
            return pids();
        };
        next.retain(|pid| !seen.contains(pid));
        if next.is_empty() {
            return seen.into_iter().collect();
        }
        while let Some(pid) = next.pop() {
            // A pid seen twice (an exited process's number reused within the walk) is read once.
            if seen.insert(pid) {
                let Some(children) = children_of(pid) else {
                    return pids();
                };
                next.extend(children);
            }
        }
    }
    pids()
}

/// The shim of a sandboxed step does not wait for its namespace's init, which is exiting when
/// the shim reports (its exit tears the step's mounts down). When this process is a child
/// subreaper (it is when the job has an `isolation: none` step), that init is re-parented here
/// once the shim has exited: reap it in the background so it does not stay a zombie. Only
/// then: init's pid is this process's zombie child until reaped here, so it cannot have been
/// reused. Call it once the shim has been waited for.
pub(crate) fn reap_sandbox_init(init: i32) {
    // PR_GET_CHILD_SUBREAPER reads a flag: any value but 0 means this process is one.
    if !matches!(rustix::process::child_subreaper(), Ok(Some(_))) {
        return;
    }
    if let Some(pid) = Pid::from_raw(init) {
        tokio::spawn(reap(pid));
    }
}

/// Reaps `pid`, a child of this process that was killed or is a zombie, waiting at most a
/// little: a killed process is gone within milliseconds.
async fn reap(pid: Pid) {
    for _ in 0..100 {
        match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::NOHANG) {
            Ok(None) => tokio::time::sleep(Duration::from_millis(5)).await,
            Ok(Some(_)) | Err(_) => return,
        }
    }
}

/// After an `isolation: none` step's group was killed: wait for the group to empty, kill and
/// report what stays, and find the step's processes that escaped the group, by their
/// environment or, when they cleared it, as orphans `mc` adopted (`children_before` are the
/// children `mc` had before the step started).
pub(crate) async fn verify_group(
    group: Option<Pid>,
    job_id: JobId,
    step: &str,
    children_before: &[i32],
) -> Teardown {
    let mut remaining = Vec::new();
    let mut killed: Vec<i32> = Vec::new();
    if let Some(group) = group {
        let deadline = tokio::time::Instant::now() + GROUP_EMPTY_WITHIN;
        loop {
            // ESRCH: no process, not even a zombie, is left in the group.
            if test_kill_process_group(group).is_err() {
                break;
            }
            let members = group_members(group.as_raw_nonzero().get());
            if members.is_empty() {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                for member in members {
                    if let Some(pid) = Pid::from_raw(member.pid) {
                        let _ = kill_process(pid, Signal::KILL);
                    }
                    killed.push(member.pid);
                    remaining.push(format!("{} in the step's process group", member.describe()));
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // One pass over the candidates: processes that carry the step in their environment, and
    // orphans of the step this process adopted (children it did not have before the step).
    let own = rustix::process::getpid().as_raw_nonzero().get();
    let mut to_reap = Vec::new();
    {
        // Every process this program started on purpose (steps, shims, launchers, plugins) is
        // registered, and none is being spawned while this search runs.
        let (_searching, step_children) = maestro_core::children::searching();
        for pid in step_candidates() {
            let Some(process) = Process::read(pid) else {
                continue;
            };
            let Some(handle) = Pid::from_raw(pid) else {
                continue;
            };
            let marker = process_step(pid);
            // A child that carries another step's marker is that step's own process (`mc serve`
            // runs several jobs' steps at once, each a child of this process), not an orphan of
            // this one: never kill or reap it here.
            let anothers = marker
                .as_ref()
                .is_some_and(|(job, name)| *job != job_id || name != step);
            let adopted = process.parent == own
                && !children_before.contains(&pid)
                && !step_children.contains(&pid)
                && !anothers;
            let carries_step = || !anothers && marker.is_some();
            if !process.zombie && !killed.contains(&pid) && (adopted || carries_step()) {
                let _ = kill_process(handle, Signal::KILL);
                remaining.push(if adopted && !carries_step() {
                    format!(
                        "{} left the step's process group and environment (killed now)",
                        process.describe()
                    )
                } else {
                    format!(
                        "{} left the step's process group (killed now)",
                        process.describe()
                    )
                });
            }
            if adopted && !process.zombie {
                // Adopted orphans we killed are ours to reap. Not a zombie found here: its
                // environment can no longer be read, so it may be another step's process that has
                // just exited, which that step's own wait must reap (`mc serve` runs several).
                to_reap.push(handle);
            }
        }
    }
    for handle in to_reap {
        reap(handle).await;
    }
    if remaining.is_empty() {
        Teardown::verified(TeardownMethod::ProcessGroup)
    } else {
        Teardown::failed(TeardownMethod::ProcessGroup, remaining)
    }
}

/// The processes in the PID namespace whose inode is `inode`.
fn pid_namespace_members(inode: u64) -> Vec<Process> {
    pids()
        .into_iter()
        .filter(|pid| {
            rustix::fs::stat(format!("/proc/{pid}/ns/pid").as_str())
                .is_ok_and(|stat| stat.st_ino == inode)
        })
        .filter_map(Process::read)
        .filter(|process| !process.zombie)
        .collect()
}

/// A sandboxed step whose shim was killed: its namespace's init dies with the shim and the kernel
/// empties the namespace; check that it did, and kill and report anything still in it.
pub(crate) async fn verify_pid_namespace(inode: u64) -> Teardown {
    let deadline = tokio::time::Instant::now() + GROUP_EMPTY_WITHIN;
    loop {
        let members = pid_namespace_members(inode);
        if members.is_empty() {
            return Teardown::verified(TeardownMethod::PidNamespace);
        }
        if tokio::time::Instant::now() >= deadline {
            let mut remaining = Vec::new();
            for member in members {
                if let Some(pid) = Pid::from_raw(member.pid) {
                    let _ = kill_process(pid, Signal::KILL);
                }
                remaining.push(format!("{} in the step's PID namespace", member.describe()));
            }
            return Teardown::failed(TeardownMethod::PidNamespace, remaining);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Held by every test here that spawns a child of this process or looks for leftovers:
    /// they share this process's children, and another test's child, spawned meanwhile and
    /// neither registered nor there before, is exactly what an adopted orphan looks like.
    static CHILDREN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

    /// Waits until `pid`'s environment reads `entry`: its exec has completed.
    fn wait_for_environment(pid: u32, entry: &str) {
        for _ in 0..500 {
            let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if environ.split(|&b| b == 0).any(|e| e == entry.as_bytes()) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("pid {pid} never showed {entry} in its environment");
    }

    #[test]
    fn reads_this_process_and_its_parent() {
        let own = i32::try_from(std::process::id()).unwrap();
        let process = Process::read(own).expect("own /proc entry");
        assert_eq!(process.pid, own);
        assert_eq!(
            process.parent,
            rustix::process::getppid().map_or(0, |p| p.as_raw_nonzero().get())
        );
        assert!(!process.zombie);
        assert!(process.describe().starts_with(&format!("pid {own} (")));
    }

    #[test]
    fn a_child_is_listed_among_own_children_until_reaped() {
        let _children = CHILDREN.blocking_lock();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        let pid = i32::try_from(child.id()).unwrap();
        assert!(own_children().contains(&pid));
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!own_children().contains(&pid));
    }

    #[tokio::test]
    async fn an_empty_group_verifies_and_a_stray_process_of_the_step_is_reported() {
        let _children = CHILDREN.lock().await;
        let job = JobId::now_v7();
        let mut stray = std::process::Command::new("sleep")
            .arg("30")
            .env("MAESTRO_JOB_ID", job.to_string())
            .env("MAESTRO_STEP", "s")
            .spawn()
            .expect("spawn sleep");
        // A leftover is long past its exec; right after its spawn, its environment may not
        // read yet.
        wait_for_environment(stray.id(), "MAESTRO_STEP=s");
        let children = own_children();
        // No group: only the environment scan can find it.
        let teardown = verify_group(None, job, "other-step", &children).await;
        assert!(teardown.verified, "{teardown:?}");
        let teardown = verify_group(None, job, "s", &children).await;
        assert!(!teardown.verified);
        assert_eq!(teardown.method, TeardownMethod::ProcessGroup);
        assert!(
            teardown.remaining[0].contains(&format!("pid {}", stray.id())),
            "{teardown:?}"
        );
        let status = stray.wait().unwrap();
        assert!(!status.success(), "the stray was killed");
    }

    #[expect(
        unsafe_code,
        reason = "the test needs a child that waits between its fork and its exec"
    )]
    fn slow_to_exec(command: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        // SAFETY: the closure runs in the child between fork and exec and only sleeps, which is
        // async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                std::thread::sleep(Duration::from_millis(400));
                Ok(())
            });
        }
    }

    #[tokio::test]
    async fn another_steps_child_between_fork_and_exec_is_not_taken_for_an_orphan() {
        // Regression: 5% of 1,000 bare jobs under `mc serve` failed ("cannot wait for its
        // process: No child processes") or blamed another job's process on their teardown.
        let _children = CHILDREN.lock().await;
        let job = JobId::now_v7();
        let children = own_children();
        let (forking, forked) = std::sync::mpsc::channel();
        let spawner = std::thread::spawn(move || {
            let mut command = std::process::Command::new("sleep");
            command
                .arg("30")
                .env("MAESTRO_JOB_ID", JobId::now_v7().to_string())
                .env("MAESTRO_STEP", "theirs");
            slow_to_exec(&mut command);
            let _spawning = spawning();
            forking.send(()).unwrap();
            command.spawn().expect("spawn sleep")
        });
        forked.recv().unwrap();
        // The child is forked now and waits before its exec, with this process's environment.
        std::thread::sleep(Duration::from_millis(150));
        let teardown = verify_group(None, job, "s", &children).await;
        let mut theirs = spawner.join().unwrap();
        assert!(teardown.verified, "{teardown:?}");
        assert!(
            theirs.try_wait().unwrap().is_none(),
            "the other step's process was killed"
        );
        theirs.kill().unwrap();
        theirs.wait().unwrap();
    }

    #[tokio::test]
    async fn a_step_child_whose_environment_reads_empty_is_not_taken_for_an_orphan() {
        // Right after its exec began, a step's process has no readable environment yet: as
        // `env -i` would make it, without a marker. Registered as a step's own, it is not an
        // orphan of the step verified meanwhile.
        let _children = CHILDREN.lock().await;
        let job = JobId::now_v7();
        let children = own_children();
        let mut theirs = std::process::Command::new("sleep")
            .arg("30")
            .env_clear()
            .spawn()
            .expect("spawn sleep");
        let registered = StepChild::register(Some(theirs.id()));
        let teardown = verify_group(None, job, "s", &children).await;
        assert!(teardown.verified, "{teardown:?}");
        assert!(theirs.try_wait().unwrap().is_none(), "it was killed");
        // Unregistered, the same process is an orphan the step adopted.
        drop(registered);
        let teardown = verify_group(None, job, "s", &children).await;
        assert!(
            teardown.remaining[0].contains(&format!("pid {}", theirs.id())),
            "{teardown:?}"
        );
        // Killed and reaped there (as an adopted orphan is).
        assert!(theirs.wait().map_or(true, |status| !status.success()));
    }
}
