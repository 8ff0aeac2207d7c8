//! Fixtures shared by Maestro's tests, kept out of every public API.
//!
//! * [`Sshd`]: a real OpenSSH server on a loopback port with generated keys, for the ssh plugin.
//! * [`output_within`] and [`wait_within`]: run a process to completion or fail the test after a
//!   deadline, so a hang fails the suite instead of freezing it.
//! * [`cmdlines_holding`] and [`pid_alive`]: what `/proc` says about other processes.
//! * [`docker`]: the Docker test image and containers found by label.
//! * [`postgres`]: a real PostgreSQL 15 started as `nobody` in a temporary directory.
#![deny(missing_docs)]

pub mod docker;
pub mod postgres;

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// Run `command` like [`Command::output`] (stdin closed, stdout and stderr captured), failing the
/// test if it takes longer than `deadline`.
pub fn output_within(command: &mut Command, deadline: Duration) -> Output {
    let child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|error| panic!("cannot start {command:?}: {error}"));
    wait_within(child, deadline)
}

/// Wait for `child` (spawned with piped stdout and stderr) and collect its output; kill it and
/// fail the test if it has not exited within `deadline`. Output is read on threads, so a process
/// it left holding the pipes cannot hang the test either.
pub fn wait_within(mut child: Child, deadline: Duration) -> Output {
    let until = Instant::now() + deadline;
    let readers = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .map(|pipe| {
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            let _ = sender.send(bytes);
        });
        receiver
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            break status;
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "process {} did not finish within {deadline:?}; it was killed",
                child.id()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let remaining = until
        .saturating_duration_since(Instant::now())
        .max(Duration::from_secs(1));
    let [stdout, stderr] = readers.map(|receiver| {
        receiver
            .recv_timeout(remaining)
            .expect("an output pipe stayed open after the process exited")
    });
    Output {
        status,
        stdout,
        stderr,
    }
}

/// Whether a process with this pid is alive (a zombie counts as dead).
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// Every process whose command line holds `needle`, as `pid: cmdline`.
pub fn cmdlines_holding(needle: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline"))
            && cmdline.windows(needle.len()).any(|w| w == needle)
        {
            found.push(format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            ));
        }
    }
    found
}

/// The name of the user running the tests.
pub fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().expect("run id -un");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A real sshd on 127.0.0.1 (Debian's `openssh-server`), running as the current user with a
/// generated host key and user key; killed on drop.
pub struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
}

fn keygen(path: &Path) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .expect("ssh-keygen must be installed: apt-get install -y openssh-client");
    assert!(status.success(), "ssh-keygen failed");
}

impl Sshd {
    /// Start a server whose keys and configuration live in a temporary directory.
    pub fn start() -> Self {
        let temp = tempfile::tempdir().expect("tempdir");
        let mut sshd = Self::start_in(temp.path());
        sshd._temp = Some(temp);
        sshd
    }

    /// Start a server whose keys and configuration live in `dir` (created if needed).
    pub fn start_in(dir: &Path) -> Self {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "this test needs a real sshd: apt-get install -y openssh-server openssh-client"
        );
        std::fs::create_dir_all(dir).expect("create the sshd directory");
        keygen(&dir.join("host_key"));
        keygen(&dir.join("user_key"));
        std::fs::copy(dir.join("user_key.pub"), dir.join("authorized_keys")).expect("copy key");
        // sshd insists on its privilege separation directory, even when not separating.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        std::fs::write(
            dir.join("sshd_config"),
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\n\
                 AuthorizedKeysFile {d}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nStrictModes no\n\
                 UsePAM no\nPrintMotd no\nLogLevel ERROR\n",
                d = dir.display()
            ),
        )
        .expect("write sshd_config");
        let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).expect("host key");
        let key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
        std::fs::write(
            dir.join("known_hosts"),
            format!("[127.0.0.1]:{port} {}\n", key.join(" ")),
        )
        .expect("write known_hosts");
        let child = Command::new(sshd)
            .args(["-D", "-e", "-f"])
            .arg(dir.join("sshd_config"))
            .stdin(Stdio::null())
            // Its complaints about the readiness probe below would only clutter test output.
            .stderr(std::fs::File::create(dir.join("sshd.log")).expect("sshd.log"))
            .spawn()
            .expect("start sshd");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            child,
            port,
            dir: dir.to_path_buf(),
            _temp: None,
        }
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory holding its keys (`user_key`, `known_hosts`, …).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A file in its directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The ssh plugin's `with` settings that reach this server.
    pub fn with(&self) -> Value {
        json!({
            "host": "127.0.0.1",
            "port": self.port,
            "user": current_user(),
            "identity_file": self.path("user_key"),
            "known_hosts": self.path("known_hosts"),
            "strict_host_key_checking": "yes",
            "remote_grace_seconds": 1,
        })
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
