//! A small client of the API, for `mc --server URL` (plain HTTP only).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Why a request could not be made or answered.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server URL is not usable.
    #[error("server URL {0:?} is not usable: give http://HOST:PORT (https is not supported yet)")]
    Url(String),
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
    http: HyperClient<HttpConnector, Full<Bytes>>,
}

impl Client {
    /// A client of `base` (`http://HOST:PORT`), authenticating with `token`.
    pub fn new(base: &str, token: Option<String>) -> Result<Self, ClientError> {
        let base = base.trim().trim_end_matches('/');
        let authority = base
            .strip_prefix("http://")
            .ok_or_else(|| ClientError::Url(base.to_owned()))?;
        if authority.is_empty() || authority.contains('/') {
            return Err(ClientError::Url(base.to_owned()));
        }
        Ok(Self {
            base: base.to_owned(),
            token,
            trace_id: None,
            http: HyperClient::builder(TokioExecutor::new()).build_http(),
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
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> Result<hyper::Response<Incoming>, ClientError> {
        let url = format!("{}{path}", self.base);
        let mut request = Request::builder().method(method).uri(&url);
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
                message: format!("{error:?}"),
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
        let response = self.send(method, path, content_type, body).await?;
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
        let response = self.send("GET", path, None, Vec::new()).await?;
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
