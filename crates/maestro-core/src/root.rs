//! The state root's files and directories, opened beneath the root and never through a link.
//!
//! Every path below the state root is resolved relative to a descriptor of the root with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (or, on kernels without `openat2`, one
//! `O_NOFOLLOW` component at a time), so a symbolic link planted anywhere under the root (in
//! place of `audit.log`, `jobs/`, a job's directory, `logs/`, a log, a lease) is refused with an
//! error naming it, never followed. The root itself may be reached through links: only what is
//! beneath it is resolved strictly. Files are created `0600` and directories `0700` whatever the
//! umask: the state root is private to its user.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// The mode of every file Maestro creates under the state root.
pub const FILE_MODE: u32 = 0o600;
/// The mode of every directory Maestro creates under the state root.
pub const DIR_MODE: u32 = 0o700;

/// A symbolic link found where the state root holds a file or directory of its own.
#[derive(Debug)]
pub struct SymlinkRefused {
    /// The link's path.
    pub link: PathBuf,
}

impl fmt::Display for SymlinkRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "refusing to follow the symbolic link {}: nothing under the state root may be a link (was it planted?)",
            self.link.display()
        )
    }
}

impl std::error::Error for SymlinkRefused {}

/// Whether `error` is the refusal of a planted link.
pub fn is_symlink_refusal(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.is::<SymlinkRefused>())
}

/// How to open a file in a [`Dir`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Read an existing file.
    Read,
    /// Create a new file for writing; an existing one (or a link) is an error.
    CreateNew,
    /// Open for writing, creating it if missing (lock and lease files).
    WriteOrCreate,
    /// Open for reading and appending, creating it if missing (the audit log).
    AppendOrCreate,
    /// Open an existing file for reading and appending (a job's journal).
    Append,
}

/// A state root: a path and, once opened, a descriptor everything beneath it is resolved from.
#[derive(Debug, Clone)]
pub struct StateRoot {
    path: PathBuf,
    fd: Arc<OnceLock<Arc<OwnedFd>>>,
}

impl StateRoot {
    /// The state root at `path` (opened, and created if need be, on first use).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            fd: Arc::default(),
        }
    }

    /// The root's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root's descriptor. With `create`, a missing root is created (`0700`; its parents
    /// with the usual modes). `Ok(None)` when it does not exist and `create` is false.
    fn descriptor(&self, create: bool) -> io::Result<Option<Arc<OwnedFd>>> {
        if let Some(fd) = self.fd.get() {
            return Ok(Some(Arc::clone(fd)));
        }
        let open = || {
            rustix::fs::open(
                &self.path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
        };
        let fd = match open() {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => {
                if let Some(parent) = self.path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                match std::fs::DirBuilder::new().mode(DIR_MODE).create(&self.path) {
                    Ok(()) => {
                        std::fs::set_permissions(
                            &self.path,
                            std::fs::Permissions::from_mode(DIR_MODE),
                        )?;
                    }
                    Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(error) => return Err(error),
                }
                open()?
            }
            Err(Errno::NOENT) => return Ok(None),
            Err(errno) => return Err(errno.into()),
        };
        Ok(Some(Arc::clone(self.fd.get_or_init(|| Arc::new(fd)))))
    }

    /// The directory `rel` beneath the root (`""` for the root itself). `Ok(None)` when it (or
    /// the root) does not exist.
    pub fn open_dir(&self, rel: &Path) -> io::Result<Option<Dir>> {
        let Some(root) = self.descriptor(false)? else {
            return Ok(None);
        };
        match self.resolve(&root, rel, OFlags::RDONLY | OFlags::DIRECTORY) {
            Ok(fd) => Ok(Some(Dir {
                fd,
                path: self.path.join(rel),
            })),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The directory `rel` beneath the root, created (`0700`, with its missing parents under
    /// the root, and the root itself) if need be.
    pub fn create_dir_all(&self, rel: &Path) -> io::Result<Dir> {
        let root = self
            .descriptor(true)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let mut dir = Dir {
            fd: rustix::io::dup(&*root)?,
            path: self.path.clone(),
        };
        for component in components(rel)? {
            dir = dir.create_dir_if_missing(component)?;
        }
        Ok(dir)
    }

    /// Open `rel` beneath `root` with `flags`, refusing every link on the way.
    fn resolve(&self, root: &OwnedFd, rel: &Path, flags: OFlags) -> io::Result<OwnedFd> {
        let parts = components(rel)?;
        let flags = flags | OFlags::CLOEXEC | OFlags::NOFOLLOW;
        let target: &OsStr = if parts.is_empty() {
            OsStr::new(".")
        } else {
            rel.as_os_str()
        };
        let result = match rustix::fs::openat2(
            root,
            target,
            flags,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
        ) {
            // No openat2 (an old kernel, or a seccomp filter that hides it): one component
            // at a time, each opened without following a link.
            Err(Errno::NOSYS | Errno::PERM) => walk(root.as_fd(), &parts, flags),
            result => result,
        };
        result.map_err(|errno| {
            refusal(root.as_fd(), &self.path, &parts).unwrap_or_else(|| errno.into())
        })
    }
}

/// A directory beneath the state root, opened without following links; every name given to
/// its methods is one plain component (no `/`, `.` or `..`).
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// The directory's path, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path of `name` in this directory, for messages.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }

    /// Open the file `name`.
    pub fn open(&self, name: &str, access: Access) -> io::Result<File> {
        let name = plain(OsStr::new(name))?;
        let flags = match access {
            Access::Read => OFlags::RDONLY,
            Access::CreateNew => OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
            Access::WriteOrCreate => OFlags::WRONLY | OFlags::CREATE,
            Access::AppendOrCreate => OFlags::RDWR | OFlags::APPEND | OFlags::CREATE,
            Access::Append => OFlags::RDWR | OFlags::APPEND,
        };
        // Non-blocking, so that a FIFO planted in place of a file cannot hang the open; it is
        // refused just below (the flag changes nothing for a regular file).
        let fd = rustix::fs::openat(
            &self.fd,
            name,
            flags | OFlags::CLOEXEC | OFlags::NOFOLLOW | OFlags::NONBLOCK,
            Mode::from_raw_mode(FILE_MODE),
        )
        .map_err(|errno| self.refusal_or(name, errno))?;
        let stat = rustix::fs::fstat(&fd)?;
        if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
            return Err(io::Error::other(format!(
                "{} is not a regular file: nothing but Maestro's own files may be in the state root",
                self.path.join(name).display()
            )));
        }
        if access != Access::Read && stat.st_mode & 0o7777 != FILE_MODE {
            // The umask may have taken bits away (or, for a file that existed, another tool
            // may have widened it): the mode is set, not left to chance.
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(FILE_MODE))?;
        }
        Ok(File::from(fd))
    }

    /// Read the whole file `name`.
    pub fn read(&self, name: &str) -> io::Result<Vec<u8>> {
        let mut file = self.open(name, Access::Read)?;
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut file, &mut bytes)?;
        Ok(bytes)
    }

    /// Create the file `name` with `content` and fsync it (not the directory).
    pub fn write_new(&self, name: &str, content: &[u8]) -> io::Result<()> {
        let mut file = self.open(name, Access::CreateNew)?;
        file.write_all(content)?;
        file.sync_all()
    }

    /// Replace `name` with `content` so that a crash leaves either the old file or the new one:
    /// a temporary file beside it, fsync, rename over, fsync of this directory.
    pub fn write_atomic(&self, name: &str, content: &[u8]) -> io::Result<()> {
        let temp = format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple());
        let result = (|| {
            self.write_new(&temp, content)?;
            self.rename(&temp, self, name)?;
            self.sync()
        })();
        if result.is_err() {
            let _ = self.remove_file(&temp);
        }
        result
    }

    /// The subdirectory `name`; `Ok(None)` if it does not exist.
    pub fn subdir(&self, name: &str) -> io::Result<Option<Dir>> {
        let name = plain(OsStr::new(name))?;
        match rustix::fs::openat(
            &self.fd,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(Dir {
                fd,
                path: self.path.join(name),
            })),
            Err(Errno::NOENT) => Ok(None),
            Err(errno) => Err(self.refusal_or(name, errno)),
        }
    }

    /// Create the subdirectory `name` (`0700`); an existing one is an error.
    pub fn create_dir(&self, name: &str) -> io::Result<Dir> {
        let name = plain(OsStr::new(name))?;
        rustix::fs::mkdirat(&self.fd, name, Mode::from_raw_mode(DIR_MODE))
            .map_err(|errno| self.refusal_or(name, errno))?;
        let dir = self
            .subdir_os(name)?
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        rustix::fs::fchmod(&dir.fd, Mode::from_raw_mode(DIR_MODE))?;
        Ok(dir)
    }

    fn subdir_os(&self, name: &OsStr) -> io::Result<Option<Dir>> {
        self.subdir(&name.to_string_lossy())
    }

    fn create_dir_if_missing(&self, name: &OsStr) -> io::Result<Dir> {
        let text = name.to_string_lossy();
        match self.create_dir(&text) {
            Ok(dir) => Ok(dir),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => self
                .subdir(&text)?
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound)),
            Err(error) => Err(error),
        }
    }

    /// Rename `from` (in this directory) to `to` in `target`.
    pub fn rename(&self, from: &str, target: &Dir, to: &str) -> io::Result<()> {
        let from = plain(OsStr::new(from))?;
        let to = plain(OsStr::new(to))?;
        rustix::fs::renameat(&self.fd, from, &target.fd, to).map_err(io::Error::from)
    }

    /// Remove the file (or link) `name`.
    pub fn remove_file(&self, name: &str) -> io::Result<()> {
        let name = plain(OsStr::new(name))?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::empty()).map_err(io::Error::from)
    }

    /// Remove the directory `name` and everything in it, following no link (a link inside is
    /// removed, not what it points to).
    pub fn remove_dir_all(&self, name: &str) -> io::Result<()> {
        if let Some(dir) = self.subdir(name)? {
            for (entry, is_dir) in dir.entries()? {
                let entry = entry.to_string_lossy();
                if is_dir {
                    dir.remove_dir_all(&entry)?;
                } else {
                    dir.remove_file(&entry)?;
                }
            }
        }
        let name = plain(OsStr::new(name))?;
        rustix::fs::unlinkat(&self.fd, name, AtFlags::REMOVEDIR).map_err(io::Error::from)
    }

    /// Take an exclusive `flock` on this directory, waiting for it (held as long as this
    /// handle lives).
    pub fn lock(&self) -> io::Result<()> {
        rustix::fs::flock(&self.fd, rustix::fs::FlockOperation::LockExclusive)
            .map_err(io::Error::from)
    }

    /// Take an exclusive `flock` on this directory if nobody holds one.
    pub fn try_lock(&self) -> io::Result<bool> {
        match rustix::fs::flock(
            &self.fd,
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            Ok(()) => Ok(true),
            Err(Errno::WOULDBLOCK) => Ok(false),
            Err(errno) => Err(errno.into()),
        }
    }

    /// This directory as a `File`, for its `flock` (held as long as the file lives).
    pub fn into_file(self) -> File {
        File::from(self.fd)
    }

    /// Whether this directory was removed since it was opened.
    pub fn is_removed(&self) -> io::Result<bool> {
        Ok(rustix::fs::fstat(&self.fd)?.st_nlink == 0)
    }

    /// fsync this directory, so a rename or a new entry in it survives a crash.
    pub fn sync(&self) -> io::Result<()> {
        rustix::fs::fsync(&self.fd).map_err(io::Error::from)
    }

    /// The names in this directory (without `.` and `..`), each with whether it is a directory
    /// (a link is not).
    pub fn entries(&self) -> io::Result<Vec<(OsString, bool)>> {
        let mut dir = rustix::fs::Dir::read_from(&self.fd)?;
        let mut entries = Vec::new();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let name = OsStr::from_bytes(entry.file_name().to_bytes());
            if name == "." || name == ".." {
                continue;
            }
            let is_dir = match entry.file_type() {
                rustix::fs::FileType::Directory => true,
                rustix::fs::FileType::Unknown => {
                    rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(
                        |stat| {
                            rustix::fs::FileType::from_raw_mode(stat.st_mode)
                                == rustix::fs::FileType::Directory
                        },
                    )
                }
                _ => false,
            };
            entries.push((name.to_owned(), is_dir));
        }
        Ok(entries)
    }

    /// The error for `errno` on `name`: the refusal of a link if `name` is one.
    fn refusal_or(&self, name: &OsStr, errno: Errno) -> io::Error {
        if is_link(self.fd.as_fd(), name) {
            symlink_error(self.path.join(name))
        } else {
            errno.into()
        }
    }
}

/// The plain components of `rel`; anything else (`..`, `/`, `.`) is refused.
fn components(rel: &Path) -> io::Result<Vec<&OsStr>> {
    rel.components()
        .map(|component| match component {
            Component::Normal(name) => Ok(name),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a plain relative path", rel.display()),
            )),
        })
        .collect()
}

/// `name` if it is one plain component.
fn plain(name: &OsStr) -> io::Result<&OsStr> {
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes == b"." || bytes == b".." || bytes.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not a plain file name"),
        ));
    }
    Ok(name)
}

/// Open `parts` from `root` one component at a time, none through a link.
fn walk(root: BorrowedFd<'_>, parts: &[&OsStr], flags: OFlags) -> Result<OwnedFd, Errno> {
    let Some((last, parents)) = parts.split_last() else {
        return rustix::fs::openat(root, ".", flags, Mode::empty());
    };
    let mut dir = rustix::io::dup(root)?;
    for part in parents {
        dir = rustix::fs::openat(
            &dir,
            *part,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )?;
    }
    rustix::fs::openat(&dir, *last, flags, Mode::empty())
}

/// The refusal naming the first link among `parts` beneath `root`, if there is one.
fn refusal(root: BorrowedFd<'_>, root_path: &Path, parts: &[&OsStr]) -> Option<io::Error> {
    let mut path = root_path.to_path_buf();
    let mut dir = rustix::io::dup(root).ok()?;
    for part in parts {
        path.push(part);
        if is_link(dir.as_fd(), part) {
            return Some(symlink_error(path));
        }
        dir = rustix::fs::openat(
            &dir,
            *part,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .ok()?;
    }
    None
}

fn is_link(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|stat| {
        rustix::fs::FileType::from_raw_mode(stat.st_mode) == rustix::fs::FileType::Symlink
    })
}

fn symlink_error(link: PathBuf) -> io::Error {
    io::Error::other(SymlinkRefused { link })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, symlink};

    use super::*;

    #[test]
    fn creates_private_files_and_directories_and_refuses_links() {
        let temp = tempfile::tempdir().unwrap();
        let root = StateRoot::new(temp.path().join("state"));
        let jobs = root.create_dir_all(Path::new("jobs/a")).unwrap();
        jobs.write_new("f", b"x").unwrap();
        let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&temp.path().join("state")), 0o700);
        assert_eq!(mode(&temp.path().join("state/jobs/a")), 0o700);
        assert_eq!(mode(&temp.path().join("state/jobs/a/f")), 0o600);

        let outside = temp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        symlink(&outside, temp.path().join("state/jobs/b")).unwrap();
        let error = root.open_dir(Path::new("jobs/b/logs")).unwrap_err();
        assert!(is_symlink_refusal(&error), "{error}");
        assert!(error.to_string().contains("state/jobs/b:"), "{error}");
        let error = root.create_dir_all(Path::new("jobs/b")).unwrap_err();
        assert!(is_symlink_refusal(&error), "{error}");
        symlink(outside.join("f"), temp.path().join("state/jobs/a/link")).unwrap();
        for access in [Access::Read, Access::CreateNew, Access::AppendOrCreate] {
            let error = jobs.open("link", access).unwrap_err();
            assert!(is_symlink_refusal(&error), "{access:?}: {error}");
        }
        assert!(!outside.join("f").exists());
        rustix::fs::mknodat(
            rustix::fs::CWD,
            temp.path().join("state/jobs/a/fifo"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let error = jobs.open("fifo", Access::Read).unwrap_err();
        assert!(error.to_string().contains("not a regular file"), "{error}");
        assert!(root.open_dir(Path::new("../x")).is_err());
        assert!(jobs.open("../f", Access::Read).is_err());
    }

    #[test]
    fn the_fallback_walk_refuses_links_too() {
        let temp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(temp.path().join("a/b")).unwrap();
        symlink(temp.path().join("a"), temp.path().join("l")).unwrap();
        let root = rustix::fs::open(temp.path(), OFlags::DIRECTORY, Mode::empty()).unwrap();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW;
        assert!(walk(root.as_fd(), &[OsStr::new("a"), OsStr::new("b")], flags).is_ok());
        assert!(walk(root.as_fd(), &[OsStr::new("l"), OsStr::new("b")], flags).is_err());
        assert!(walk(root.as_fd(), &[OsStr::new("l")], flags).is_err());
    }
}
