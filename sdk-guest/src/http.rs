//! A small blocking HTTP client for actions and sensors, over `wasi:http`.
//!
//! Requests reach only the hosts the pack lists in `allowed_hosts`
//! (`pack.yaml`), and never private or metadata addresses unless the server
//! allows them; a refused request is an [`Error`] whose message says which
//! rule refused it.
//!
//! ```no_run
//! use squall_sdk::http;
//!
//! let health: serde_json::Value = http::get("https://api.example.com/health")?.json()?;
//!
//! let created = http::post("https://api.example.com/items")
//!     .basic_auth("bot", "s3cret")
//!     .header("X-Request-Id", "42")
//!     .timeout(std::time::Duration::from_secs(5))
//!     .json(&serde_json::json!({ "name": "thing" }))?
//!     .send()?;
//! if !created.is_success() {
//!     return Err(squall_sdk::Error::failed(format!("HTTP {}", created.status)));
//! }
//! # Ok::<(), squall_sdk::Error>(())
//! ```

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, FutureIncomingResponse, Method, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use wasip2::io::poll::poll;
use wasip2::io::streams::{OutputStream, StreamError};

use crate::{Error, Result};

/// A response, read whole.
///
/// ```
/// let r = squall_sdk::http::Response {
///     status: 200,
///     headers: vec![("content-type".into(), "application/json".into())],
///     body: br#"{"ok": true}"#.to_vec(),
/// };
/// assert!(r.is_success());
/// assert_eq!(r.header("Content-Type"), Some("application/json"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// Header names in lowercase, in the order received.
    pub headers: Vec<(String, String)>,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// 2xx.
    ///
    /// ```
    /// let r = squall_sdk::http::Response { status: 404, headers: vec![], body: vec![] };
    /// assert!(!r.is_success());
    /// ```
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of header `name` (any case).
    ///
    /// ```
    /// let r = squall_sdk::http::Response {
    ///     status: 429,
    ///     headers: vec![("retry-after".into(), "30".into())],
    ///     body: vec![],
    /// };
    /// assert_eq!(r.header("Retry-After"), Some("30"));
    /// assert_eq!(r.header("etag"), None);
    /// ```
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    ///
    /// ```
    /// let r = squall_sdk::http::Response { status: 200, headers: vec![], body: b"pong".to_vec() };
    /// assert_eq!(r.text(), "pong");
    /// ```
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body decoded as JSON.
    ///
    /// ```
    /// let r = squall_sdk::http::Response {
    ///     status: 200,
    ///     headers: vec![("content-type".into(), "application/json".into())],
    ///     body: br#"{"ok": true}"#.to_vec(),
    /// };
    /// let v: serde_json::Value = r.json()?;
    /// assert_eq!(v["ok"], true);
    /// # Ok::<(), squall_sdk::Error>(())
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::failed(format!(
                "HTTP {}: the response is not the JSON expected: {e}",
                self.status
            ))
        })
    }
}

/// A request being built; [`RequestBuilder::send`] sends it.
///
/// ```no_run
/// let r = squall_sdk::http::request("PUT", "https://api.example.com/items/7")
///     .header("If-Match", "\"v3\"")
///     .body("renamed")
///     .send()?;
/// # Ok::<(), squall_sdk::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a request does nothing until sent"]
pub struct RequestBuilder {
    method: String,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

/// `GET url`, sent at once.
///
/// ```no_run
/// let r = squall_sdk::http::get("https://api.example.com/health")?;
/// if !r.is_success() {
///     return Err(squall_sdk::Error::retryable(format!("health check: HTTP {}", r.status)));
/// }
/// # Ok::<(), squall_sdk::Error>(())
/// ```
pub fn get(url: &str) -> Result<Response> {
    request("GET", url).send()
}

/// `POST url` with `body` as JSON, sent at once.
///
/// ```no_run
/// let r = squall_sdk::http::post_json(
///     "https://hooks.example.com/notify",
///     &serde_json::json!({ "text": "deploy done" }),
/// )?;
/// # Ok::<(), squall_sdk::Error>(())
/// ```
pub fn post_json(url: &str, body: &impl Serialize) -> Result<Response> {
    request("POST", url).json(body)?.send()
}

/// A `POST` to build.
///
/// ```no_run
/// let r = squall_sdk::http::post("https://api.example.com/tokens")
///     .basic_auth("bot", "s3cret")
///     .send()?;
/// # Ok::<(), squall_sdk::Error>(())
/// ```
pub fn post(url: &str) -> RequestBuilder {
    request("POST", url)
}

/// A request with any method (`GET`, `PUT`, `DELETE`, ...).
///
/// ```no_run
/// let r = squall_sdk::http::request("DELETE", "https://api.example.com/items/7").send()?;
/// assert!(r.is_success() || r.status == 404);
/// # Ok::<(), squall_sdk::Error>(())
/// ```
pub fn request(method: &str, url: &str) -> RequestBuilder {
    RequestBuilder {
        method: method.to_ascii_uppercase(),
        url: url.to_owned(),
        headers: Vec::new(),
        body: Vec::new(),
        timeout: None,
    }
}

impl RequestBuilder {
    /// Add a header.
    ///
    /// ```no_run
    /// let r = squall_sdk::http::request("GET", "https://api.example.com/items")
    ///     .header("Accept", "application/json")
    ///     .send()?;
    /// # Ok::<(), squall_sdk::Error>(())
    /// ```
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `Authorization: Basic ...`.
    ///
    /// ```no_run
    /// let token = squall_sdk::kv::get_secret("system:api_password")?.unwrap_or_default();
    /// let r = squall_sdk::http::request("GET", "https://api.example.com/me")
    ///     .basic_auth("bot", &token)
    ///     .send()?;
    /// # Ok::<(), squall_sdk::Error>(())
    /// ```
    pub fn basic_auth(self, user: &str, password: &str) -> Self {
        let token = base64(format!("{user}:{password}").as_bytes());
        self.header("Authorization", &format!("Basic {token}"))
    }

    /// A JSON body, with its `Content-Type`.
    ///
    /// ```no_run
    /// let r = squall_sdk::http::request("PATCH", "https://api.example.com/items/7")
    ///     .json(&serde_json::json!({ "name": "renamed" }))?
    ///     .send()?;
    /// # Ok::<(), squall_sdk::Error>(())
    /// ```
    pub fn json(mut self, body: &impl Serialize) -> Result<Self> {
        self.body = serde_json::to_vec(body)
            .map_err(|e| Error::failed(format!("the body is not serializable: {e}")))?;
        Ok(self.header("Content-Type", "application/json"))
    }

    /// A raw body.
    ///
    /// ```no_run
    /// let csv = "id,name\n7,renamed\n";
    /// let r = squall_sdk::http::post("https://api.example.com/import")
    ///     .header("Content-Type", "text/csv")
    ///     .body(csv)
    ///     .send()?;
    /// # Ok::<(), squall_sdk::Error>(())
    /// ```
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Query parameters, added to the URL (percent-encoded).
    ///
    /// ```no_run
    /// // GET https://api.example.com/search?q=disk%20full&limit=10
    /// let r = squall_sdk::http::request("GET", "https://api.example.com/search")
    ///     .query([("q", "disk full"), ("limit", "10")])
    ///     .send()?;
    /// # Ok::<(), squall_sdk::Error>(())
    /// ```
    pub fn query<'a>(mut self, params: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        for (k, v) in params {
            let sep = if self.url.contains('?') { '&' } else { '?' };
            self.url = format!("{}{sep}{}={}", self.url, encode(k), encode(v));
        }
        self
    }

    /// Connect and first-byte timeout (the server's limits still apply).
    ///
    /// ```no_run
    /// let r = squall_sdk::http::request("GET", "https://slow.example.com/report")
    ///     .timeout(std::time::Duration::from_secs(30))
    ///     .send()?;
    /// # Ok::<(), squall_sdk::Error>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Send it and read the whole response.
    ///
    /// ```no_run
    /// let items: Vec<serde_json::Value> = squall_sdk::http::request("GET", "https://api.example.com/items")
    ///     .send()?
    ///     .json()?;
    /// # Ok::<(), squall_sdk::Error>(())
    /// ```
    pub fn send(self) -> Result<Response> {
        let (scheme, authority, path) = split_url(&self.url)?;
        let mut fields = Vec::with_capacity(self.headers.len() + 1);
        for (name, value) in &self.headers {
            fields.push((name.to_ascii_lowercase(), value.as_bytes().to_vec()));
        }
        if !self.body.is_empty() {
            // A known length rather than a chunked body: every server
            // understands it.
            fields.push((
                "content-length".to_owned(),
                self.body.len().to_string().into_bytes(),
            ));
        }
        let headers = Fields::from_list(&fields)
            .map_err(|e| Error::failed(format!("invalid request headers: {e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let method = match self.method.as_str() {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            other => Method::Other(other.to_owned()),
        };
        let invalid =
            |what: &str| Error::invalid_input(format!("invalid {what} in '{}'", self.url));
        request
            .set_method(&method)
            .map_err(|()| invalid("method"))?;
        request
            .set_scheme(Some(&if scheme == "https" {
                Scheme::Https
            } else {
                Scheme::Http
            }))
            .map_err(|()| invalid("scheme"))?;
        request
            .set_authority(Some(authority))
            .map_err(|()| invalid("host"))?;
        request
            .set_path_with_query(Some(&path))
            .map_err(|()| invalid("path"))?;
        let options = RequestOptions::new();
        if let Some(t) = self.timeout {
            let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
            let _ = options.set_connect_timeout(Some(ns));
            let _ = options.set_first_byte_timeout(Some(ns));
        }
        let outgoing = request.body().map_err(|()| invalid("body"))?;
        let pending = outgoing_handler::handle(request, Some(options)).map_err(|e| failed(&e))?;
        // The server may answer before it has read the whole body (a 401, a
        // 413, a redirect): then its answer is the result, not the failed
        // write.
        let sent = {
            let stream = outgoing.write().map_err(|()| invalid("body"))?;
            let sent = send_body(&stream, &self.body, &pending);
            drop(stream);
            sent
        };
        // A body cut short by an early answer is left open (not finished,
        // which would abort the connection) until the answer is read.
        let (sent, unfinished) = match sent {
            Ok(Sent::All) => (
                OutgoingBody::finish(outgoing, None).map_err(|e| failed(&e)),
                None,
            ),
            Ok(Sent::Answered) => (Ok(()), Some(outgoing)),
            Err(e) => (Err(e), Some(outgoing)),
        };
        pending.subscribe().block();
        // A response, else why there is none (the host's refusal, a
        // timeout), else why the body could not be sent.
        let response = match (pending.get(), sent) {
            (Some(Ok(Ok(response))), _) => response,
            (Some(Ok(Err(e))), _) => return Err(failed(&e)),
            (_, Err(e)) => return Err(e),
            (Some(Err(())) | None, Ok(())) => return Err(Error::failed("no HTTP response")),
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(n, v)| (n, String::from_utf8_lossy(&v).into_owned()))
            .collect();
        let incoming = response
            .consume()
            .map_err(|()| Error::failed("the response body is unreadable"))?;
        let mut body = Vec::new();
        {
            let stream = incoming
                .stream()
                .map_err(|()| Error::failed("the response body is unreadable"))?;
            loop {
                match stream.blocking_read(64 << 10) {
                    Ok(chunk) => body.extend_from_slice(&chunk),
                    Err(StreamError::Closed) => break,
                    Err(StreamError::LastOperationFailed(e)) => {
                        return Err(Error::failed(format!(
                            "reading the response failed: {}",
                            e.to_debug_string()
                        )));
                    }
                }
            }
        }
        drop(unfinished);
        Ok(Response {
            status,
            headers,
            body,
        })
    }
}

/// How much of a request body went out.
enum Sent {
    All,
    /// The response came first; the rest was not written.
    Answered,
}

/// Write `body` to `stream`, stopping early if the response comes first.
/// A failed write is an error, but the caller still waits for the
/// response: a server that answered and closed the connection has its
/// answer taken.
fn send_body(stream: &OutputStream, body: &[u8], pending: &FutureIncomingResponse) -> Result<Sent> {
    let answered = pending.subscribe();
    let writable = stream.subscribe();
    let broken = |e: StreamError| match e {
        StreamError::LastOperationFailed(e) => {
            Error::failed(format!("sending the body failed: {}", e.to_debug_string()))
        }
        StreamError::Closed => Error::failed("sending the body failed: the server closed it"),
    };
    // Wait until the stream takes more (`Some(n)`) or the answer is in.
    let room = || -> Result<Option<u64>> {
        loop {
            match stream.check_write().map_err(broken)? {
                0 if answered.ready() => return Ok(None),
                0 => {
                    poll(&[&writable, &answered]);
                }
                n => return Ok(Some(n)),
            }
        }
    };
    let mut rest = body;
    while !rest.is_empty() {
        let Some(n) = room()? else {
            return Ok(Sent::Answered);
        };
        let take = rest.len().min(usize::try_from(n).unwrap_or(usize::MAX));
        stream.write(&rest[..take]).map_err(broken)?;
        rest = &rest[take..];
    }
    stream.flush().map_err(broken)?;
    // The flush is over when the stream takes writes again.
    Ok(match room()? {
        Some(_) => Sent::All,
        None => Sent::Answered,
    })
}

/// An HTTP error as a message a person can act on.
fn failed(e: &ErrorCode) -> Error {
    match e {
        ErrorCode::InternalError(Some(message)) => Error::failed(message),
        ErrorCode::ConnectionRefused => Error::failed("connection refused"),
        ErrorCode::ConnectionTimeout => Error::failed("connection timed out"),
        ErrorCode::ConnectionReadTimeout => Error::failed("the response did not come in time"),
        ErrorCode::DnsTimeout => Error::failed("name resolution timed out"),
        other => Error::failed(format!("HTTP request failed: {other:?}")),
    }
}

/// (scheme, authority, path-with-query) of an absolute http(s) URL.
fn split_url(url: &str) -> Result<(&str, &str, String)> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| Error::invalid_input(format!("'{url}' is not an absolute http(s) URL")))?;
    if scheme != "http" && scheme != "https" {
        return Err(Error::invalid_input(format!(
            "'{url}': scheme '{scheme}' is not http or https"
        )));
    }
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
        Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
        None => (rest, "/".to_owned()),
    };
    if authority.is_empty() {
        return Err(Error::invalid_input(format!("'{url}' has no host")));
    }
    Ok((scheme, authority, path))
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_and_encode() {
        assert_eq!(
            split_url("http://127.0.0.1:9200/_search?q=1").ok(),
            Some(("http", "127.0.0.1:9200", "/_search?q=1".to_owned()))
        );
        assert_eq!(
            split_url("https://x.example").ok(),
            Some(("https", "x.example", "/".to_owned()))
        );
        assert_eq!(
            split_url("https://x.example?a=b").ok(),
            Some(("https", "x.example", "/?a=b".to_owned()))
        );
        assert!(split_url("x.example/a").is_err());
        assert!(split_url("ftp://x/a").is_err());
        assert_eq!(encode("a b&c"), "a%20b%26c");
        assert_eq!(base64(b"user:pass"), "dXNlcjpwYXNz");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"a"), "YQ==");
    }
}
