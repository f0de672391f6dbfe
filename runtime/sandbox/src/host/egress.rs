//! Outbound HTTP (`wasi:http/outgoing-handler`) under the pack's rules:
//! the URL must match the pack's `allowed_hosts`; the name is resolved here
//! and every resolved address checked against the denied ranges (unless
//! the server allows private networks), and the connection goes to the
//! address that was checked, so DNS cannot be switched in between; connect
//! and total timeouts and a response size limit apply. A refusal reaches
//! the guest as an HTTP error whose message names the rule, and is logged
//! with the execution.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::Frame;
use http_body_util::BodyExt;
use squall_core::egress::{HostPattern, denied_range};
use tokio::net::TcpStream;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error as HttpError, RequestOptions, WasiBody, WasiHttpHooks};

use crate::live::LogBuffer;

/// The outbound HTTP policy of one guest.
#[derive(Debug, Clone)]
pub struct Egress {
    /// The pack's ref, for messages.
    pub pack: String,
    pub allowed_hosts: Arc<[HostPattern]>,
    /// The tenant lets `*` in `allowed_hosts` mean any host.
    pub allow_any_host: bool,
    /// Loopback, private and link-local addresses may be reached (tests,
    /// on-premise use): a deliberate server switch.
    pub allow_private: bool,
    pub connect_timeout: Duration,
    /// From sending the request to the last byte of the response.
    pub total_timeout: Duration,
    pub max_response_bytes: usize,
}

impl Default for Egress {
    /// No host allowed.
    fn default() -> Self {
        Self {
            pack: String::new(),
            allowed_hosts: Arc::new([]),
            allow_any_host: false,
            allow_private: false,
            connect_timeout: Duration::from_secs(10),
            total_timeout: Duration::from_secs(60),
            max_response_bytes: 16 << 20,
        }
    }
}

/// The hooks wasmtime-wasi-http calls for every outgoing request.
pub(crate) struct EgressHooks {
    pub(crate) policy: Egress,
    pub(crate) log: Arc<Mutex<LogBuffer>>,
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for EgressHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let policy = self.policy.clone();
        let log = self.log.clone();
        Box::new(async move {
            // Never the query or userinfo: they may carry tokens.
            let uri = request.uri();
            let target = format!(
                "{}://{}{}",
                uri.scheme_str().unwrap_or("https"),
                uri.host().unwrap_or_default(),
                uri.port_u16().map(|p| format!(":{p}")).unwrap_or_default()
            ) + uri.path();
            let method = request.method().clone();
            match send(&policy, request, options).await {
                Ok(sent) => {
                    tracing::debug!(%method, url = %target, "http request sent");
                    Ok(sent)
                }
                Err(Refused { message, error }) => {
                    tracing::info!(%method, url = %target, %message, "http request refused");
                    log.lock()
                        .expect("log lock poisoned")
                        .push("warn", format!("http {method} {target}: {message}"));
                    Err(error)
                }
            }
        })
    }
}

/// Why a request did not go out: a message for people, an error code for
/// the guest (which carries the message too).
struct Refused {
    message: String,
    error: HttpError,
}

fn refused(message: String) -> Refused {
    Refused {
        error: HttpError::InternalError(Some(message.clone())),
        message,
    }
}

async fn send(
    policy: &Egress,
    mut request: http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<
    (
        http::Response<WasiBody>,
        Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ),
    Refused,
> {
    let uri = request.uri().clone();
    // The whole request, from resolving the name to the last byte.
    let total = policy.total_timeout;
    let deadline = tokio::time::Instant::now() + total;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(refused(
            "denied: credentials in the URL (user:password@host) are refused; use basic auth"
                .into(),
        ));
    }
    let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
    let host = uri
        .host()
        .ok_or_else(|| refused("the URL has no host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tls = match scheme.as_str() {
        "https" => true,
        "http" => false,
        other => return Err(refused(format!("scheme '{other}' is not http or https"))),
    };
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let allowed = policy.allowed_hosts.iter().any(|p| match p {
        HostPattern::Any => policy.allow_any_host,
        p => p.allows(&scheme, &host, port),
    });
    if !allowed {
        let why = if policy.allowed_hosts.contains(&HostPattern::Any) {
            " ('*' is there, but this server does not let '*' mean any host)"
        } else {
            ""
        };
        return Err(Refused {
            message: format!(
                "denied: {scheme}://{host}:{port} is not in pack '{}''s allowed_hosts{why}",
                policy.pack
            ),
            error: HttpError::InternalError(Some(format!(
                "denied by allowed_hosts: {scheme}://{host}:{port} is not allowed for pack '{}'",
                policy.pack
            ))),
        });
    }

    // Resolve here; connect only to an address that passed the check.
    let lookup = tokio::time::timeout_at(
        deadline.min(tokio::time::Instant::now() + policy.connect_timeout),
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    .map_err(|_| Refused {
        message: format!(
            "resolving '{host}' took longer than {:?}",
            policy.connect_timeout
        ),
        error: HttpError::DnsTimeout,
    })?
    .map_err(|e| Refused {
        message: format!("cannot resolve '{host}': {e}"),
        error: HttpError::DnsError {
            rcode: Some(e.to_string()),
            info_code: None,
        },
    })?;
    let addrs: Vec<SocketAddr> = lookup.collect();
    let mut last_denial = None;
    let mut target = None;
    for addr in &addrs {
        match denied_range(addr.ip()) {
            Some(range) if !policy.allow_private => last_denial = Some((addr.ip(), range)),
            _ => {
                target = Some(*addr);
                break;
            }
        }
    }
    let Some(addr) = target else {
        let message = match last_denial {
            Some((ip, range)) => format!(
                "denied: '{host}' resolves to {ip}, a {range} address (the server does not allow private networks)"
            ),
            None => format!("'{host}' resolves to no address"),
        };
        return Err(Refused {
            error: HttpError::InternalError(Some(message.clone())),
            message,
        });
    };

    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .map_or(policy.connect_timeout, |t| t.min(policy.connect_timeout));
    let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| Refused {
            message: format!("connecting to {addr} took longer than {connect_timeout:?}"),
            error: HttpError::ConnectionTimeout,
        })?
        .map_err(|e| Refused {
            message: format!("cannot connect to {addr}: {e}"),
            error: HttpError::ConnectionRefused,
        })?;
    let timed_out = move || Refused {
        message: format!("no complete response within {total:?}"),
        error: HttpError::ConnectionReadTimeout,
    };

    let io: Box<dyn Stream> = if tls {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| refused(format!("TLS setup failed: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .map_err(|e| refused(format!("'{host}' is not a TLS server name: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tls = tokio::time::timeout_at(deadline, connector.connect(name, stream))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| Refused {
                message: format!("TLS with '{host}' failed: {e}"),
                error: HttpError::TlsProtocolError,
            })?;
        Box::new(tls)
    } else {
        Box::new(stream)
    };
    let (mut sender, conn) = tokio::time::timeout_at(
        deadline,
        hyper::client::conn::http1::handshake(TokioIo::new(io)),
    )
    .await
    .map_err(|_| timed_out())?
    .map_err(|e| refused(format!("HTTP handshake failed: {e}")))?;
    // The connection is driven until the deadline at most.
    let driver = tokio::spawn(tokio::time::timeout_at(deadline, conn));

    *request.uri_mut() = http::Uri::builder()
        .path_and_query(uri.path_and_query().map(|p| p.as_str()).unwrap_or("/"))
        .build()
        .map_err(|e| refused(format!("invalid path: {e}")))?;
    let first_byte = options
        .and_then(|o| o.first_byte_timeout)
        .map_or(deadline, |t| deadline.min(tokio::time::Instant::now() + t));
    let response = tokio::time::timeout_at(first_byte, sender.send_request(request))
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| {
            // The driver, stopped at the same deadline, may end the
            // connection before this wait's own timer fires: that is the
            // deadline too, not the server's doing.
            if tokio::time::Instant::now() >= first_byte {
                timed_out()
            } else {
                Refused {
                    message: format!("the request failed: {e}"),
                    error: HttpError::HttpProtocolError,
                }
            }
        })?;
    let limit = policy.max_response_bytes;
    if let Some(len) = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(refused(format!(
            "denied: the response is {len} bytes, over the limit of {limit} bytes"
        )));
    }
    let response = response.map(|body| {
        LimitedBody {
            inner: body,
            left: limit,
            limit,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
        }
        .boxed_unsync()
    });
    let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> = Box::new(async move {
        match driver.await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(HttpError::InternalError(Some(e.to_string()))),
            Ok(Err(_elapsed)) => Err(HttpError::ConnectionReadTimeout),
            Err(e) => Err(HttpError::InternalError(Some(e.to_string()))),
        }
    });
    Ok((response, done))
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A response body cut off at a size limit and a deadline, with an error
/// that says which.
struct LimitedBody {
    inner: hyper::body::Incoming,
    left: usize,
    limit: usize,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl http_body::Body for LimitedBody {
    type Data = Bytes;
    type Error = HttpError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, HttpError>>> {
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(HttpError::ConnectionReadTimeout)));
        }
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if data.len() > self.left {
                        let limit = self.limit;
                        return Poll::Ready(Some(Err(HttpError::InternalError(Some(format!(
                            "denied: the response is over the limit of {limit} bytes"
                        ))))));
                    }
                    self.left -= data.len();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(HttpError::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}
