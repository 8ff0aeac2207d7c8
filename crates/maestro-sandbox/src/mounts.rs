//! The step's view of the filesystem, built in init's new mount namespace.
//!
//! The order matters and is the whole design:
//! 1. `/` becomes recursively private, so nothing done here reaches the host;
//! 2. every source that will be hidden later (`/tmp`, `/dev`) is opened first, as an `O_PATH`
//!    descriptor, and bind-mounted from `/proc/self/fd/N`;
//! 3. the whole tree becomes read-only in one `mount_setattr(AT_RECURSIVE)`;
//! 4. fresh `/tmp` and `/dev`, then the workspace and writable paths read-write, then each
//!    directory between them and a read-only path inside them bound onto itself (a mount
//!    point cannot be renamed, so the read-only path cannot be moved away with its parent),
//!    then the read-only paths over them (so the state root inside the workspace never is
//!    writable), then the hidden paths, and last a `/proc` of the new PID namespace.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, open};
use nix::mount::{MsFlags, mount};
use nix::sys::stat::Mode;
use nix::sys::statvfs::{FsFlags, statvfs};

use crate::failure::{Context, Describe, SetupFailure};
use crate::plan::{HostEnvironment, SandboxPlan, is_within};
use crate::sys;

/// The device nodes a step gets, bind-mounted from the host's `/dev`.
pub(crate) const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Symlinks of the new `/dev`.
const DEV_LINKS: [(&str, &str); 5] = [
    ("ptmx", "pts/ptmx"),
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
];

/// A path of the plan, resolved on the host, with a descriptor kept open to bind it from.
struct Source {
    path: PathBuf,
    fd: OwnedFd,
    is_dir: bool,
}

impl Source {
    /// Opens `path`, following its links, and names it by what was opened: the path the kernel
    /// reports for the descriptor. What is checked is so what is bound, whatever a link in the
    /// path says or is changed to say meanwhile.
    fn open(path: &Path, role: &str) -> Result<Source, SetupFailure> {
        let fd = open(path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty()).map_err(|errno| {
            let message = format!(
                "{role} path {} is not usable: {}",
                path.display(),
                errno.describe()
            );
            // A path the spec names that is not there is the spec's mistake (make it first, or
            // fix the name), not this machine's: said without the opt-out.
            // (A link loop, which an earlier step can make, is the same mistake.)
            let missing = matches!(
                errno,
                nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR | nix::errno::Errno::ELOOP
            );
            if missing && matches!(role, "workspace" | "writable") {
                SetupFailure::refused(message)
            } else {
                SetupFailure::new(message)
            }
        })?;
        let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let real = std::fs::read_link(&proc_path)
            .context(|| format!("cannot resolve {role} path {}", path.display()))?;
        // Removed since it was opened (by another process of the host): nothing to bind.
        if real.as_os_str().as_encoded_bytes().ends_with(b" (deleted)") {
            return Err(SetupFailure::refused(format!(
                "{role} path {} was removed while the sandbox was being built",
                path.display()
            )));
        }
        let is_dir = std::fs::metadata(&proc_path)
            .context(|| format!("cannot inspect {role} path {}", path.display()))?
            .is_dir();
        Ok(Source {
            path: real,
            fd,
            is_dir,
        })
    }

    /// The name `mount(2)` can bind from even after the path itself is covered.
    fn proc_path(&self) -> String {
        format!("/proc/self/fd/{}", self.fd.as_raw_fd())
    }
}

/// Builds the step's filesystem; see the module documentation for the order.
pub(crate) fn setup(plan: &SandboxPlan, environment: &HostEnvironment) -> Result<(), SetupFailure> {
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .context(|| "cannot make / private".to_owned())?;

    let workspace = Source::open(&plan.workspace, "workspace")?;
    let writable = plan
        .writable
        .iter()
        .map(|path| Source::open(path, "writable"))
        .collect::<Result<Vec<_>, _>>()?;
    let read_only = plan
        .read_only
        .iter()
        .map(|path| Source::open(path, "read-only"))
        .collect::<Result<Vec<_>, _>>()?;
    // Policy refuses these by name already; the sandbox does not rely on it. Policy reads no
    // files, so it cannot see where a link leads (`cache -> /root`, made by an earlier step):
    // the rule is applied here again, to the real paths, which are the ones bound.
    for (source, asked) in
        std::iter::once((&workspace, &plan.workspace)).chain(writable.iter().zip(&plan.writable))
    {
        if let Some(problem) = crate::plan::never_writable(&source.path) {
            let through = if source.path == *asked {
                String::new()
            } else {
                format!(" (it is {} through a link)", asked.display())
            };
            return Err(SetupFailure::refused(format!(
                "{}{through} {problem}, and no step may write it; give the step a directory of its own",
                source.path.display(),
            )));
        }
    }
    for inner in std::iter::once(&workspace).chain(&writable) {
        if let Some(outer) = read_only
            .iter()
            .find(|outer| is_within(&inner.path, &outer.path))
        {
            return Err(SetupFailure::refused(format!(
                "writable path {} lies inside read-only path {}",
                inner.path.display(),
                outer.path.display()
            )));
        }
    }
    // The directories between a writable tree and a read-only path inside it (`var` of a
    // workspace holding `var/maestro`): each becomes a mount point of its own, which no step
    // can rename (`EBUSY`). Otherwise the step could move the read-only path away with its
    // parent (`mv var elsewhere`), put an empty directory in its place for the caller to
    // write to, and have a later step, whose sandbox protects the new one, erase the old.
    let mut anchors: Vec<Source> = Vec::new();
    for outer in std::iter::once(&workspace).chain(&writable) {
        for inner in &read_only {
            let Ok(below) = inner.path.strip_prefix(&outer.path) else {
                continue;
            };
            let mut anchor = outer.path.clone();
            let parents = below.components().count().saturating_sub(1);
            for component in below.components().take(parents) {
                anchor.push(component);
                if !anchors.iter().any(|known| known.path == anchor) {
                    anchors.push(Source::open(&anchor, "read-only path's parent")?);
                }
            }
        }
    }
    let devices = DEVICES
        .iter()
        .map(|name| Source::open(&Path::new("/dev").join(name), "device"))
        .collect::<Result<Vec<_>, _>>()?;

    sys::make_tree_read_only(c"/")
        .context(|| "cannot make the host filesystem read-only".to_owned())?;

    mount_tmpfs("/tmp", MsFlags::MS_NOSUID | MsFlags::MS_NODEV, "mode=1777")?;
    setup_dev(&devices)?;

    bind(&workspace, false)?;
    for source in &writable {
        bind(source, false)?;
    }
    for source in &anchors {
        bind(source, false)?;
    }
    for source in &read_only {
        bind(source, true)?;
    }
    for path in plan.hidden_paths(environment) {
        hide(&path)?;
    }
    mount_proc()
}

/// A `/proc` of the step's own PID namespace. The kernel refuses it when the enclosing `/proc`
/// is partly covered by mounts the sandbox may not reveal, which happens when Maestro itself
/// runs in a sandbox (bubblewrap covers `/proc/sys`, Docker covers `/proc/kcore` …). Then the
/// enclosing, read-only `/proc` stays: the step still has its own PID namespace (it can signal
/// only its own processes, and they die with it) but can list the enclosing sandbox's
/// processes. That is said in one line on the step's stderr.
fn mount_proc() -> Result<(), SetupFailure> {
    match mount(
        Some("proc"),
        "/proc",
        Some("proc"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        None::<&str>,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) => {
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "maestro-sandbox: this machine's /proc is itself covered (a sandbox or container), so the step's /proc lists the enclosing processes; its PID namespace is still its own"
            );
            Ok(())
        }
        Err(error) => {
            Err(error).context(|| "cannot mount /proc for the new PID namespace".to_owned())
        }
    }
}

fn mount_tmpfs(target: &str, flags: MsFlags, options: &str) -> Result<(), SetupFailure> {
    mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(options))
        .context(|| format!("cannot mount a tmpfs on {target}"))
}

/// A tmpfs `/dev` with the safe host devices, a private devpts and a tmpfs `/dev/shm`; the
/// tmpfs itself is then made read-only (the nodes stay usable: writing a device is not writing
/// the filesystem).
fn setup_dev(devices: &[Source]) -> Result<(), SetupFailure> {
    mount_tmpfs("/dev", MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC, "mode=0755")?;
    for (name, source) in DEVICES.iter().zip(devices) {
        let target = Path::new("/dev").join(name);
        std::fs::File::create(&target).context(|| format!("cannot create {}", target.display()))?;
        mount(
            Some(source.proc_path().as_str()),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .context(|| format!("cannot bind the host's {}", target.display()))?;
    }
    for directory in ["/dev/pts", "/dev/shm"] {
        std::fs::create_dir(directory).context(|| format!("cannot create {directory}"))?;
    }
    mount(
        Some("devpts"),
        "/dev/pts",
        Some("devpts"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=620"),
    )
    .context(|| "cannot mount a devpts instance on /dev/pts".to_owned())?;
    mount_tmpfs(
        "/dev/shm",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        "mode=1777",
    )?;
    for (name, target) in DEV_LINKS {
        std::os::unix::fs::symlink(target, Path::new("/dev").join(name))
            .context(|| format!("cannot create /dev/{name}"))?;
    }
    remount("/dev", true).context(|| "cannot make /dev read-only".to_owned())
}

/// Bind-mounts `source` (with the mounts beneath it) at its own path, read-only or not.
fn bind(source: &Source, read_only: bool) -> Result<(), SetupFailure> {
    ensure_mount_point(source)?;
    let mode = if read_only { "read-only" } else { "read-write" };
    mount(
        Some(source.proc_path().as_str()),
        &source.path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .context(|| format!("cannot bind {} {mode}", source.path.display()))?;
    // A bind copies the flags of the mount it comes from, which step 3 made read-only: set the
    // wanted state explicitly.
    remount(&source.path, read_only)
        .context(|| format!("cannot make {} {mode}", source.path.display()))
}

/// A path that lies under the fresh `/tmp` or `/dev` no longer exists there: create it.
fn ensure_mount_point(source: &Source) -> Result<(), SetupFailure> {
    if source.path.exists() {
        return Ok(());
    }
    let result = if source.is_dir {
        std::fs::create_dir_all(&source.path)
    } else {
        source
            .path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::File::create(&source.path).map(drop))
    };
    result.context(|| format!("cannot create the mount point {}", source.path.display()))
}

/// Changes a mount's read-only flag, keeping the flags the kernel will not let a user
/// namespace drop (nosuid, nodev, noexec and the atime ones are locked on mounts that came from
/// the host).
fn remount(path: impl AsRef<Path>, read_only: bool) -> Result<(), nix::errno::Errno> {
    let path = path.as_ref();
    let current = statvfs(path)?.flags();
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT;
    for (kept, flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if current.contains(kept) {
            flags |= flag;
        }
    }
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(None::<&str>, path, None::<&str>, flags, None::<&str>)
}

/// Covers a credential or socket path: a directory with an empty read-only tmpfs, anything
/// else with `/dev/null`. A path that does not exist needs nothing.
fn hide(path: &Path) -> Result<(), SetupFailure> {
    let Ok(metadata) = std::fs::metadata(path) else {
        return Ok(());
    };
    let result = if metadata.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("size=4k,mode=0755"),
        )
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    result.context(|| format!("cannot hide {}", path.display()))
}
