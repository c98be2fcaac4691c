//! The CLI's HTTP client: one request per connection to the broker's HTTP API, basic auth,
//! JSON in and out. Plain `http://` only: the CLI is meant for the local broker (which also
//! serves plain HTTP beside HTTPS) or one behind a TLS-terminating proxy; `https://` is refused
//! with a clear message.

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

use super::CliError;

/// How long a request may take beyond its own wait (a long-polling get adds its `wait_ms`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Client {
    /// `host:port`.
    authority: String,
    /// Path prefix before `/api` (empty for a broker at the root).
    prefix: String,
    authorization: String,
}

impl Client {
    pub fn new(server: &str, user: &str, password: &str) -> Result<Client, CliError> {
        let rest = match server.strip_prefix("http://") {
            Some(rest) => rest,
            None if server.starts_with("https://") => {
                return Err(CliError::usage("https:// servers are not supported yet; use http:// (see docs/HTTP.md)"))
            }
            None => return Err(CliError::usage(format!("server '{server}' must be an http:// URL"))),
        };
        let (authority, prefix) = match rest.find('/') {
            Some(at) => (&rest[..at], rest[at..].trim_end_matches('/')),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(CliError::usage(format!("server '{server}' has no host")));
        }
        let authority = if authority.contains(':') && !authority.ends_with(']') {
            authority.to_string()
        } else {
            format!("{authority}:80")
        };
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        Ok(Client { authority, prefix: prefix.to_string(), authorization: format!("Basic {token}") })
    }

    /// Send a request; a 2xx answer's JSON (Null when empty), else the API error.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        extra: Duration,
    ) -> Result<Value, CliError> {
        tokio::time::timeout(REQUEST_TIMEOUT + extra, self.call_once(method, path, body))
            .await
            .map_err(|_| CliError::connect(format!("no answer from {} in time", self.authority)))?
    }

    async fn call_once(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, CliError> {
        let stream = TcpStream::connect(&self.authority)
            .await
            .map_err(|e| CliError::connect(format!("cannot reach the broker at {}: {e}", self.authority)))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| CliError::connect(format!("HTTP handshake with {} failed: {e}", self.authority)))?;
        tokio::spawn(connection);
        let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let request = Request::builder()
            .method(method)
            .uri(format!("{}{}", self.prefix, path))
            .header(hyper::header::HOST, &self.authority)
            .header(hyper::header::AUTHORIZATION, &self.authorization)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(bytes))
            .map_err(|e| CliError::usage(format!("bad request: {e}")))?;
        let response =
            sender.send_request(request).await.map_err(|e| CliError::connect(format!("request failed: {e}")))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| CliError::connect(format!("reading the answer failed: {e}")))?
            .to_bytes();
        let value: Value =
            if body.is_empty() { Value::Null } else { serde_json::from_slice(&body).unwrap_or(Value::Null) };
        if status.is_success() {
            return Ok(value);
        }
        let code = value["code"].as_str().unwrap_or("error").to_string();
        let message = value["message"].as_str().map(str::to_string).unwrap_or_else(|| format!("HTTP {status}"));
        Err(CliError::api(status.as_u16(), code, message))
    }
}

/// A path segment percent-encoded (vhost `/` becomes `%2F`).
pub fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_and_segments() {
        let c = Client::new("http://127.0.0.1:15672", "guest", "guest").unwrap();
        assert_eq!((c.authority.as_str(), c.prefix.as_str()), ("127.0.0.1:15672", ""));
        let c = Client::new("http://broker/weir/", "a", "b").unwrap();
        assert_eq!((c.authority.as_str(), c.prefix.as_str()), ("broker:80", "/weir"));
        assert!(Client::new("https://x", "a", "b").is_err());
        assert!(Client::new("ftp://x", "a", "b").is_err());
        assert_eq!(segment("/"), "%2F");
        assert_eq!(segment("a b/é"), "a%20b%2F%C3%A9");
    }
}
