//! A small client of the API, for `mc --server URL`: HTTP, or HTTPS with rustls.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio_rustls::rustls;

/// Why a request could not be made or answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL is not usable.
    #[error("server URL {0:?} is not usable: give http://HOST:PORT or https://HOST:PORT")]
    Url(String),
    /// The certificate authorities to trust cannot be used.
    #[error(
        "cannot use the CA certificates {what}: {message}; MAESTRO_CA_CERT (or --ca-cert) names a PEM file of the CA that signed the server's certificate"
    )]
    Tls {
        /// The file, or `of the system` for the system's store.
        what: String,
        /// What is wrong.
        message: String,
    },
    /// The server could not be reached.
    #[error("cannot reach the server at {url}: {message}")]
    Unreachable {
        /// The server.
        url: String,
        /// The cause.
        message: String,
    },
}

/// An answer: status and body.
#[derive(Debug)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body.
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON (`null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The error message of an error answer.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned())
    }
}

/// A client of one server, with one token.
pub struct Client {
    base: String,
    token: Option<String>,
    trace_id: Option<String>,
    http: HyperClient<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

/// The certificate authorities an `https://` server's certificate must chain to: those of
/// `ca_file` (PEM) when given, else the system's.
fn roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    let certificates = match ca_file {
        Some(path) => {
            let what = path.display().to_string();
            let text = std::fs::read(path).map_err(|error| ClientError::Tls {
                what: what.clone(),
                message: error.to_string(),
            })?;
            let certificates = rustls_pemfile::certs(&mut text.as_slice())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|error| ClientError::Tls {
                    what: what.clone(),
                    message: error.to_string(),
                })?;
            if certificates.is_empty() {
                return Err(ClientError::Tls {
                    what,
                    message: "no PEM certificate in it".to_owned(),
                });
            }
            certificates
        }
        None => rustls_native_certs::load_native_certs().certs,
    };
    for certificate in certificates {
        roots.add(certificate).map_err(|error| ClientError::Tls {
            what: ca_file.map_or_else(
                || "of the system".to_owned(),
                |path| path.display().to_string(),
            ),
            message: error.to_string(),
        })?;
    }
    Ok(roots)
}

impl Client {
    /// A client of `base` (`http://HOST:PORT` or `https://HOST:PORT`), authenticating with
    /// `token`; an `https` server's certificate must chain to `ca_file` (PEM) when given, else
    /// to the system's certificate authorities.
    pub fn new(
        base: &str,
        token: Option<String>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, ClientError> {
        let base = base.trim().trim_end_matches('/');
        let (https, authority) = match (base.strip_prefix("http://"), base.strip_prefix("https://"))
        {
            (Some(authority), _) => (false, authority),
            (_, Some(authority)) => (true, authority),
            _ => return Err(ClientError::Url(base.to_owned())),
        };
        if authority.is_empty() || authority.contains('/') {
            return Err(ClientError::Url(base.to_owned()));
        }
        // The system's store is read only for an https server (and a CA file always, so
        // that a wrong one is reported even before the server is).
        let roots = if https || ca_file.is_some() {
            roots(ca_file)?
        } else {
            rustls::RootCertStore::empty()
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|error| ClientError::Tls {
                what: "(protocol versions)".to_owned(),
                message: error.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        Ok(Self {
            base: base.to_owned(),
            token,
            trace_id: None,
            http: HyperClient::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// Send this trace id (`X-Trace-Id`); without one, `$TRACE_ID` if set, else the server
    /// makes one.
    pub fn with_trace_id(mut self, trace_id: Option<String>) -> Self {
        self.trace_id = trace_id;
        self
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder().method(method).uri(&url);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(trace_id) = self
            .trace_id
            .clone()
            .or_else(|| std::env::var("TRACE_ID").ok())
        {
            request = request.header("x-trace-id", trace_id);
        }
        let request = request
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| ClientError::Url(self.base.clone()))?;
        self.http
            .request(request)
            .await
            .map_err(|error| ClientError::Unreachable {
                url: self.base.clone(),
                message: causes(&error),
            })
    }

    /// A request, answered whole.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Answer, ClientError> {
        self.request_with_headers(method, path, &[], content_type, body)
            .await
    }

    /// A request with more headers, answered whole.
    pub async fn request_with_headers(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<Answer, ClientError> {
        let response = self.send(method, path, headers, content_type, body).await?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|error| ClientError::Unreachable {
                url: self.base.clone(),
                message: error.to_string(),
            })?
            .to_bytes();
        Ok(Answer { status, body })
    }

    /// A GET whose body is handed to `chunk` as it arrives (log following); returns the status.
    pub async fn stream(
        &self,
        path: &str,
        mut chunk: impl FnMut(&[u8]),
    ) -> Result<u16, ClientError> {
        let response = self.send("GET", path, &[], None, Vec::new()).await?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|error| ClientError::Unreachable {
                url: self.base.clone(),
                message: error.to_string(),
            })?;
            if let Some(data) = frame.data_ref() {
                chunk(data);
            }
        }
        Ok(status)
    }
}

/// `error` and its sources, as one line: what the client says, then why (`client error
/// (Connect): tcp connect error: Connection refused (os error 111)`).
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !line.ends_with(&cause_text) {
            line.push_str(": ");
            line.push_str(&cause_text);
        }
        source = cause.source();
    }
    line
}
