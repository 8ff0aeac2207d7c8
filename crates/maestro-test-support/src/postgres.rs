//! A real PostgreSQL 15 for tests: `initdb` in a temporary directory as the unprivileged user
//! `nobody` (root cannot run postgres), listening on a loopback port and a Unix socket there,
//! stopped by its pid when the fixture is dropped, or when the test process exits however it
//! exits (a watcher shell started beside it stops it and removes the directory).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Debian's PostgreSQL 15 binaries.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";

/// The role the store connects as: it may log in and owns its databases, nothing more.
pub const STORE_ROLE: &str = "maestro";

/// The superuser `initdb` made (trust authentication on loopback, tests only).
pub const ADMIN_ROLE: &str = "postgres";

/// A running PostgreSQL server owned by the test process.
pub struct Postgres {
    watcher: Child,
    dir: PathBuf,
    port: u16,
    databases: AtomicUsize,
}

fn need(binary: &str) -> PathBuf {
    let path = Path::new(BIN).join(binary);
    assert!(
        path.exists(),
        "this test needs PostgreSQL 15 ({} is missing): apt-get install -y postgresql (or run scripts/test-prerequisites.sh)",
        path.display()
    );
    path
}

fn as_nobody(binary: &Path) -> Command {
    let mut command = Command::new("setpriv");
    command
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"])
        .arg(binary);
    command
}

impl Postgres {
    /// The server shared by every test of this process, started on first use.
    pub fn shared() -> Arc<Self> {
        static SHARED: OnceLock<Arc<Postgres>> = OnceLock::new();
        Arc::clone(SHARED.get_or_init(|| Arc::new(Self::start())))
    }

    /// Start a new server (about a second: `initdb`, then the server).
    pub fn start() -> Self {
        Self::start_with_tls(None)
    }

    /// Start a new server that takes TCP connections only inside TLS, with the certificate
    /// and key (PEM) given (copied into its directory, the key readable by it alone); Unix
    /// socket connections stay plain.
    pub fn start_tls(cert: &Path, key: &Path) -> Self {
        Self::start_with_tls(Some((cert, key)))
    }

    fn start_with_tls(tls: Option<(&Path, &Path)>) -> Self {
        let initdb = need("initdb");
        let postgres = need("postgres");
        let dir = tempfile::Builder::new()
            .prefix("maestro-pg-")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let data = dir.join("data");
        let status = Command::new("chown")
            .args(["nobody:nogroup"])
            .arg(&dir)
            .status()
            .expect("run chown");
        assert!(status.success(), "cannot give {} to nobody", dir.display());
        let output = as_nobody(&initdb)
            .arg("-D")
            .arg(&data)
            .args(["-U", ADMIN_ROLE, "--auth=trust", "-E", "UTF8", "--no-sync"])
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            output.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let mut options = String::new();
        if let Some((cert, key)) = tls {
            for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
                let to = dir.join(name);
                std::fs::copy(from, &to).expect("copy the TLS files");
                let status = Command::new("chown")
                    .arg("nobody:nogroup")
                    .arg(&to)
                    .status()
                    .expect("run chown");
                assert!(status.success(), "cannot give {} to nobody", to.display());
                std::fs::set_permissions(&to, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                    .expect("make the TLS file private");
            }
            // TCP only inside TLS: a plain connection is refused by the server itself.
            std::fs::write(
                data.join("pg_hba.conf"),
                "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
            )
            .expect("write pg_hba.conf");
            options = format!(
                r#" -c ssl=on -c ssl_cert_file="{dir}/server.crt" -c ssl_key_file="{dir}/server.key""#,
                dir = dir.display()
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        // The watcher starts postgres, and stops it (by its pid, SIGINT: fast shutdown) and
        // removes the directory when this process is gone, even if it was killed.
        let script = format!(
            r#"setpriv --reuid=nobody --regid=nogroup --clear-groups -- "{postgres}" -D "{data}" -p {port} -k "{dir}" -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=32MB{options} >"{dir}/postgres.log" 2>&1 &
pg=$!
trap 'kill -INT $pg 2>/dev/null; wait $pg; rm -rf "{dir}"; exit 0' TERM INT
while kill -0 {parent} 2>/dev/null && kill -0 $pg 2>/dev/null; do sleep 0.2; done
kill -INT $pg 2>/dev/null; wait $pg; rm -rf "{dir}""#,
            postgres = postgres.display(),
            data = data.display(),
            dir = dir.display(),
            parent = std::process::id(),
        );
        let watcher = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("start the postgres watcher");
        let server = Self {
            watcher,
            dir,
            port,
            databases: AtomicUsize::new(0),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = Command::new(need("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|status| status.success());
            if ready {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not start within 30 s: {}",
                std::fs::read_to_string(server.dir.join("postgres.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server.psql_admin(
            "postgres",
            &format!("CREATE ROLE {STORE_ROLE} LOGIN; REVOKE CREATE ON SCHEMA public FROM PUBLIC;"),
        );
        server
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new, empty database owned by the store's role; its URL for that role.
    pub fn database(&self) -> String {
        let number = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("maestro_{}_{number}", std::process::id());
        self.psql_admin(
            "postgres",
            &format!("CREATE DATABASE {name} OWNER {STORE_ROLE}"),
        );
        self.url(STORE_ROLE, &name)
    }

    /// The URL of `database` for `role`.
    pub fn url(&self, role: &str, database: &str) -> String {
        format!("postgres://{role}@127.0.0.1:{}/{database}", self.port)
    }

    /// The URL of `database` for `role` through the server's Unix socket (in its directory).
    pub fn socket_url(&self, role: &str, database: &str) -> String {
        format!(
            "postgres://{role}@/{database}?host={}&port={}",
            self.dir.display(),
            self.port
        )
    }

    /// The database name of one of [`database`](Self::database)'s URLs.
    pub fn name_of(url: &str) -> &str {
        url.rsplit('/').next().unwrap_or_default()
    }

    /// Run `sql` in `database` as `role` with psql (stop at the first error); its output.
    pub fn psql(&self, role: &str, database: &str, sql: &str) -> std::process::Output {
        Command::new(need("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(["-U", role, "-d", database, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .expect("run psql")
    }

    /// Run `sql` as the superuser and fail the test if it fails; its standard output.
    pub fn psql_admin(&self, database: &str, sql: &str) -> String {
        let output = self.psql(ADMIN_ROLE, database, sql);
        assert!(
            output.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // The watcher's trap stops postgres by its pid and removes the directory.
        let _ = Command::new("kill")
            .args(["-TERM", &self.watcher.id().to_string()])
            .status();
        let _ = self.watcher.wait();
    }
}
