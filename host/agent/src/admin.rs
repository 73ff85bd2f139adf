//! The admin HTTP endpoint of a running agent.
//!
//! `GET /healthz` (the process serves), `GET /readyz` (capture handles are
//! open), `GET /status` (JSON: capture sources, drops, flows, decoders),
//! `GET /metrics` (the agent's own counters in Prometheus text format),
//! `PUT /filters` (a new filter subscription, JSON in the `[filters]` schema).
//!
//! Bound to loopback by default. Bound elsewhere it requires a token
//! (`WASMTAP_ADMIN_TOKEN`), sent as `Authorization: Bearer <token>`, for every
//! route but `/healthz` and `/readyz` (kubelet probes carry no token).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, Response, StatusCode};

use crate::filter::FilterSpec;

/// Largest `PUT /filters` body accepted.
const MAX_BODY: usize = 1 << 20;

/// What the capture thread publishes for the endpoint, and what the endpoint
/// hands back (a new filter). The capture thread refreshes it about once a second.
#[derive(Default)]
pub struct AdminState {
    /// Capture handles are open.
    pub ready: AtomicBool,
    /// `/status` body (JSON).
    pub status: Mutex<String>,
    /// `/metrics` body (Prometheus text): the agent's own counters.
    pub metrics: Mutex<String>,
    /// `/metrics` body, second part: the observed services' metrics, as of
    /// the last export interval.
    pub observed: Mutex<String>,
    /// A filter accepted by `PUT /filters`, waiting for the capture thread.
    pub pending_filter: Mutex<Option<FilterSpec>>,
    /// Connections closed at once because `admin.max_connections` were open.
    pub connections_refused: AtomicU64,
    /// Connections that ended in an error: malformed requests, or no
    /// complete request head within `admin.header_timeout_ms`.
    pub connection_errors: AtomicU64,
}

/// The endpoint's bounds (`[admin]` in the configuration).
#[derive(Clone, Copy, Debug)]
pub struct AdminLimits {
    /// Connections served at once; more are closed at once (counted).
    pub max_connections: usize,
    /// Time a connection has to send a complete request head.
    pub header_timeout: std::time::Duration,
}

impl Default for AdminLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            header_timeout: std::time::Duration::from_secs(10),
        }
    }
}

fn text(code: StatusCode, body: impl Into<Bytes>, ctype: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = code;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

/// Compares a presented token with the configured one in constant time:
/// both are hashed first, so neither their contents nor their lengths show
/// in how long the comparison takes.
fn token_matches(given: &str, want: &str) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let (a, b) = (sha2::Sha256::digest(given), sha2::Sha256::digest(want));
    a.as_slice().ct_eq(b.as_slice()).into()
}

fn lock<T: Clone>(m: &Mutex<T>) -> T {
    match m.lock() {
        Ok(g) => g.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

async fn handle(
    req: Request<hyper::body::Incoming>,
    state: Arc<AdminState>,
    token: Option<Arc<str>>,
    metrics_only: bool,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if metrics_only && path != "/metrics" {
        return Ok(text(StatusCode::NOT_FOUND, "not found\n", "text/plain"));
    }
    if !matches!(path.as_str(), "/healthz" | "/readyz")
        && let Some(t) = &token
    {
        let ok = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.strip_prefix("Bearer ")
                    .is_some_and(|given| token_matches(given, t))
            });
        if !ok {
            return Ok(text(
                StatusCode::UNAUTHORIZED,
                "token required\n",
                "text/plain",
            ));
        }
    }
    let resp = match (method, path.as_str()) {
        (Method::GET, "/healthz") => text(StatusCode::OK, "ok\n", "text/plain"),
        (Method::GET, "/readyz") => {
            if state.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "ready\n", "text/plain")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "starting\n", "text/plain")
            }
        }
        (Method::GET, "/status") => text(StatusCode::OK, lock(&state.status), "application/json"),
        (Method::GET, "/metrics") => {
            let mut body = lock(&state.metrics);
            body.push_str(&lock(&state.observed));
            text(StatusCode::OK, body, "text/plain; version=0.0.4")
        }
        (Method::PUT, "/filters") => {
            let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
                Ok(b) => b.to_bytes(),
                Err(e) => {
                    return Ok(text(
                        StatusCode::BAD_REQUEST,
                        format!("body: {e}\n"),
                        "text/plain",
                    ));
                }
            };
            match serde_json::from_slice::<FilterSpec>(&body) {
                Err(e) => text(
                    StatusCode::BAD_REQUEST,
                    format!("filters: {e}\n"),
                    "text/plain",
                ),
                Ok(spec) => match spec.compile() {
                    // Refused: the filter in force stays.
                    Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n"), "text/plain"),
                    Ok(_) => {
                        match state.pending_filter.lock() {
                            Ok(mut g) => *g = Some(spec),
                            Err(p) => *p.into_inner() = Some(spec),
                        }
                        text(StatusCode::OK, "accepted\n", "text/plain")
                    }
                },
            }
        }
        (_, "/healthz" | "/readyz" | "/status" | "/metrics" | "/filters") => text(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed\n",
            "text/plain",
        ),
        _ => text(StatusCode::NOT_FOUND, "not found\n", "text/plain"),
    };
    Ok(resp)
}

/// Starts the endpoint on the runtime. Refuses a non-loopback address without a token.
pub fn serve(
    rt: &tokio::runtime::Runtime,
    listen: &str,
    state: Arc<AdminState>,
    limits: AdminLimits,
) -> Result<SocketAddr> {
    serve_on(rt, listen, state, limits, false)
}

/// Starts a scrape endpoint serving only `GET /metrics` (read-only, no token),
/// for Prometheus on another host (`--metrics-listen`).
pub fn serve_metrics(
    rt: &tokio::runtime::Runtime,
    listen: &str,
    state: Arc<AdminState>,
    limits: AdminLimits,
) -> Result<SocketAddr> {
    serve_on(rt, listen, state, limits, true)
}

/// Serves one connection: HTTP/1.1 requests until the peer closes, a
/// request head does not arrive in time, or a request is malformed.
pub(crate) async fn serve_connection<I>(
    io: I,
    state: Arc<AdminState>,
    token: Option<Arc<str>>,
    metrics_only: bool,
    header_timeout: std::time::Duration,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let counters = state.clone();
    let svc = hyper::service::service_fn(move |req| {
        handle(req, state.clone(), token.clone(), metrics_only)
    });
    let io = hyper_util::rt::TokioIo::new(io);
    if let Err(e) = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        // A client may shut its side once it has sent its request: it is
        // still answered.
        .half_close(true)
        .serve_connection(io, svc)
        .await
    {
        counters.connection_errors.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("admin endpoint: connection: {e}");
    }
}

fn serve_on(
    rt: &tokio::runtime::Runtime,
    listen: &str,
    state: Arc<AdminState>,
    limits: AdminLimits,
    metrics_only: bool,
) -> Result<SocketAddr> {
    let flag = if metrics_only {
        "--metrics-listen"
    } else {
        "--admin-listen"
    };
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("{flag} {listen:?}: expected IP:port"))?;
    let token: Option<Arc<str>> = std::env::var("WASMTAP_ADMIN_TOKEN")
        .ok()
        .filter(|t| !t.is_empty() && !metrics_only)
        .map(Arc::from);
    anyhow::ensure!(
        metrics_only || addr.ip().is_loopback() || token.is_some(),
        "--admin-listen {addr}: a non-loopback address needs WASMTAP_ADMIN_TOKEN"
    );
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("{flag}: bind {addr}"))?;
    let bound = listener.local_addr()?;
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    rt.spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("admin endpoint: accept: {e}");
                    // Out of descriptors, say: do not spin.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Bounded: a client that opens connections and sends nothing
            // cannot hold more than `max_connections` tasks.
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                state.connections_refused.fetch_add(1, Ordering::Relaxed);
                drop(stream);
                continue;
            };
            let (state, token) = (state.clone(), token.clone());
            tokio::spawn(async move {
                serve_connection(stream, state, token, metrics_only, limits.header_timeout).await;
                drop(permit);
            });
        }
    });
    tracing::info!(address = %bound, metrics_only, "admin endpoint listening");
    Ok(bound)
}

/// The agent's counters as Prometheus text: dots become underscores, counters end in `_total`.
pub fn prometheus(counters: &[crate::selftel::Counter]) -> String {
    use std::fmt::Write;
    // Samples of one family must be contiguous, under one TYPE line.
    let mut families: std::collections::BTreeMap<&str, Vec<&crate::selftel::Counter>> =
        Default::default();
    for c in counters {
        families.entry(c.0).or_default().push(c);
    }
    let mut out = String::new();
    for (name, samples) in families {
        let metric = format!("{}_total", name.replace('.', "_"));
        let _ = writeln!(out, "# TYPE {metric} counter");
        for (_, attrs, v) in samples {
            sample(&mut out, &metric, attrs, *v);
        }
    }
    out
}

fn sample(out: &mut String, metric: &str, attrs: &[(&'static str, String)], v: u64) {
    use std::fmt::Write;
    {
        if attrs.is_empty() {
            let _ = writeln!(out, "{metric} {v}");
        } else {
            let labels: Vec<String> = attrs
                .iter()
                .map(|(k, val)| {
                    format!("{k}=\"{}\"", val.replace('\\', "\\\\").replace('"', "\\\""))
                })
                .collect();
            let _ = writeln!(out, "{metric}{{{}}} {v}", labels.join(","));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::token_matches;

    #[test]
    fn tokens_match_exactly() {
        assert!(token_matches("s3cret-token", "s3cret-token"));
        assert!(!token_matches("s3cret-tokeN", "s3cret-token"));
        assert!(!token_matches("s3cret", "s3cret-token"));
        assert!(!token_matches("", "s3cret-token"));
    }
}
