//! TLS to the database, with rustls: the history, the audit trail and the role's password cross
//! the network to a shared database, so a connection beyond this machine is encrypted and the
//! server's certificate verified unless the URL says otherwise.
//!
//! The URL takes libpq's two parameters for it, which tokio-postgres does not know and which are
//! taken out of the URL here:
//! - `sslmode`: `disable` (no TLS), `prefer` (TLS when the server offers it, verified; else
//!   none), `require`, `verify-ca` and `verify-full` (TLS, or no connection). Unlike libpq,
//!   `require` and `verify-ca` verify the certificate and its name as `verify-full` does: a
//!   certificate that is not checked protects against nobody who can answer in the server's
//!   place. Without `sslmode`, a host on loopback or a Unix socket gets no TLS (nothing crosses
//!   a network) and any other host gets `verify-full`.
//! - `sslrootcert`: the PEM file of the certificate authorities the server's certificate must
//!   chain to (a private CA); without it, the system's.
//!
//! No channel binding is offered (SCRAM works without it, as with libpq's `prefer`).

use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::config::{Config, Host, SslMode};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, pki_types::ServerName};

/// Why a state URL's TLS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// `sslmode` has a value libpq does not know.
    #[error(
        "sslmode={0:?} is not one of disable, prefer, require, verify-ca, verify-full (in the state URL)"
    )]
    Mode(String),
    /// The CA file cannot be read or holds no certificate.
    #[error("cannot use sslrootcert {path}: {message}")]
    RootCert {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// rustls refused its configuration.
    #[error("cannot set up TLS: {0}")]
    Setup(#[source] rustls::Error),
}

/// What TLS a state URL asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TlsSettings {
    /// `sslmode`, if given.
    mode: Option<String>,
    /// `sslrootcert`, if given.
    root_cert: Option<PathBuf>,
}

/// Split `url` into what tokio-postgres reads and the TLS settings it does not; only the
/// `postgres://` form carries them (the `key=value` form is passed on untouched).
pub(crate) fn split_url(url: &str) -> (String, TlsSettings) {
    let mut settings = TlsSettings {
        mode: None,
        root_cert: None,
    };
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return (url.to_owned(), settings);
    };
    let mut kept = Vec::new();
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("sslmode", value)) => settings.mode = Some(percent_decode(value)),
            Some(("sslrootcert", value)) => {
                settings.root_cert = Some(PathBuf::from(percent_decode(value)));
            }
            _ => kept.push(pair),
        }
    }
    let url = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (url, settings)
}

/// `text` with its `%XX` escapes decoded, as the driver reads a URL's parameters (`+` kept);
/// bytes that are not UTF-8 replaced. Public for whoever shows a URL as the driver reads it
/// (`mc` masking a `pass%77ord=` parameter).
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether every host of `config` is this machine (loopback, `localhost`, a Unix socket).
fn local_only(config: &Config) -> bool {
    config.get_hosts().iter().all(|host| match host {
        Host::Unix(_) => true,
        Host::Tcp(name) => {
            name.eq_ignore_ascii_case("localhost")
                || IpAddr::from_str(name.trim_matches(|c| c == '[' || c == ']'))
                    .is_ok_and(|ip| ip.is_loopback())
        }
    })
}

/// Set `config`'s TLS mode from `settings` and give the connector its connections use.
pub(crate) fn configure(
    config: &mut Config,
    settings: &TlsSettings,
) -> Result<MakeRustls, TlsError> {
    let mode = match settings.mode.as_deref() {
        None if local_only(config) => SslMode::Disable,
        None | Some("require" | "verify-ca" | "verify-full") => SslMode::Require,
        Some("prefer") => SslMode::Prefer,
        Some("disable") => SslMode::Disable,
        Some(other) => return Err(TlsError::Mode(other.to_owned())),
    };
    // Nothing crosses a network on a Unix socket, and there is no name to check a certificate
    // against: as libpq does, no TLS there, whatever `sslmode` says.
    let hosts = config.get_hosts();
    let mode = if !hosts.is_empty() && hosts.iter().all(|host| matches!(host, Host::Unix(_))) {
        SslMode::Disable
    } else {
        mode
    };
    if mode == SslMode::Disable && !local_only(config) {
        tracing::warn!(
            "sslmode=disable: the database is not on this machine, and the connection to it (the role's password, every job's history) is not encrypted"
        );
    }
    config.ssl_mode(mode);
    // With TLS off the connector is still made for each connection, and never used: it gets
    // no authority, and the system's store is not read.
    let roots = match mode {
        SslMode::Disable => rustls::RootCertStore::empty(),
        _ => roots(settings.root_cert.as_deref())?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(MakeRustls {
        config: Arc::new(tls),
    })
}

/// The authorities of `path` (PEM), or the system's.
fn roots(path: Option<&Path>) -> Result<rustls::RootCertStore, TlsError> {
    let Some(path) = path else {
        let mut roots = rustls::RootCertStore::empty();
        roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        return Ok(roots);
    };
    let refused = |message: String| TlsError::RootCert {
        path: path.to_owned(),
        message,
    };
    let pem = std::fs::read(path).map_err(|error| refused(error.to_string()))?;
    let certificates = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|error| refused(error.to_string()))?;
    if certificates.is_empty() {
        return Err(refused("no PEM certificate in it".to_owned()));
    }
    let mut roots = rustls::RootCertStore::empty();
    for certificate in certificates {
        roots
            .add(certificate)
            .map_err(|error| refused(error.to_string()))?;
    }
    Ok(roots)
}

/// tokio-postgres's TLS hook, backed by rustls.
#[derive(Clone)]
pub(crate) struct MakeRustls {
    config: Arc<rustls::ClientConfig>,
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    /// Made for every connection, TLS or not (a Unix socket's has no name at all): a name that
    /// cannot be checked against a certificate fails the handshake, if one is made, not the
    /// connection.
    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        let config = Arc::clone(&self.config);
        let name = ServerName::try_from(domain.trim_matches(|c| c == '[' || c == ']'))
            .map(|name| name.to_owned())
            .map_err(|error| {
                format!("{domain:?} cannot be checked against a certificate: {error}")
            });
        Ok(RustlsConnect { config, name })
    }
}

/// One connection's handshake.
pub(crate) struct RustlsConnect {
    config: Arc<rustls::ClientConfig>,
    /// The server's name, or why it cannot be checked against a certificate.
    name: Result<ServerName<'static>, String>,
}

type Handshake<S> = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Handshake<S>;

    fn connect(self, stream: S) -> Handshake<S> {
        Box::pin(async move {
            let name = self
                .name
                .map_err(|why| io::Error::new(io::ErrorKind::InvalidInput, why))?;
            let stream = TlsConnector::from(self.config)
                .connect(name, stream)
                .await?;
            Ok(RustlsStream(Box::new(stream)))
        })
    }
}

/// A connection inside TLS.
pub(crate) struct RustlsStream<S>(Box<tokio_rustls::client::TlsStream<S>>);

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_settings_are_taken_out_of_the_url_and_the_mode_follows_the_host() {
        let (url, settings) = split_url(
            "postgres://ana@db.example:5432/maestro?sslmode=verify-full&application_name=mc&sslrootcert=%2Fetc%2Fca%20x.pem",
        );
        assert_eq!(
            url,
            "postgres://ana@db.example:5432/maestro?application_name=mc"
        );
        assert_eq!(settings.mode.as_deref(), Some("verify-full"));
        assert_eq!(settings.root_cert, Some(PathBuf::from("/etc/ca x.pem")));
        let (url, settings) = split_url("host=/run/postgresql dbname=m sslmode=disable");
        assert_eq!(url, "host=/run/postgresql dbname=m sslmode=disable");
        assert_eq!(settings.mode, None);

        let mode = |url: &str| {
            let (url, settings) = split_url(url);
            let mut config = Config::from_str(&url).unwrap();
            configure(&mut config, &settings).map(|_| config.get_ssl_mode())
        };
        assert_eq!(mode("postgres://a@127.0.0.1/m").unwrap(), SslMode::Disable);
        assert_eq!(mode("postgres://a@localhost/m").unwrap(), SslMode::Disable);
        assert_eq!(mode("postgres://a@[::1]:5432/m").unwrap(), SslMode::Disable);
        assert_eq!(mode("postgres://a@db.example/m").unwrap(), SslMode::Require);
        assert_eq!(mode("postgres://a@10.0.0.5/m").unwrap(), SslMode::Require);
        assert_eq!(
            mode("postgres://a@127.0.0.1/m?sslmode=require").unwrap(),
            SslMode::Require
        );
        assert_eq!(
            mode("postgres://a@db.example/m?sslmode=disable").unwrap(),
            SslMode::Disable
        );
        assert_eq!(
            mode("postgres://a@db.example/m?sslmode=prefer").unwrap(),
            SslMode::Prefer
        );
        // A Unix socket: no TLS, whatever the mode (libpq's rule; there is no name to check).
        assert_eq!(
            mode("postgres://a@/m?host=/run/postgresql&sslmode=require").unwrap(),
            SslMode::Disable
        );
        assert_eq!(
            mode("postgres://a@%2Frun%2Fpostgresql/m?sslmode=prefer").unwrap(),
            SslMode::Disable
        );
        // Its connector is made all the same (tokio-postgres makes one for every host), and
        // must not fail the connection.
        let mut connector =
            configure(&mut Config::new(), &split_url("postgres://a@db/m").1).unwrap();
        assert!(
            MakeTlsConnect::<tokio::net::TcpStream>::make_tls_connect(&mut connector, "").is_ok()
        );
        assert!(matches!(
            mode("postgres://a@db.example/m?sslmode=allow"),
            Err(TlsError::Mode(_))
        ));
        assert!(matches!(
            mode("postgres://a@db.example/m?sslmode=require&sslrootcert=/nonexistent.pem"),
            Err(TlsError::RootCert { .. })
        ));
    }
}
