//! End-to-end tests of the exporter against in-process fake OTLP collectors on 127.0.0.1
//! (gRPC over h2c via tonic's generated servers, and OTLP/HTTP over HTTP/1.1).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value;
use prost::Message as _;
use tonic::codec::CompressionEncoding;
use tonic::codegen::Service as _;
use wasmtap_export::{ExportStats, Exporter, ExporterConfig, Protocol};
use wasmtap_telemetry::model::{
    KeyValue, MetricData, MetricPoint, MetricsSnapshot, Resource, SpanKind, SpanRecord, StatusCode,
};

// ---------------------------------------------------------------------------------------------
// Fake collectors

/// What the fake collector answers to the next requests; `Ok` once the script is empty.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// gRPC UNAVAILABLE / HTTP 503, with an optional Retry-After in seconds (HTTP only).
    Unavailable(Option<u64>),
    /// gRPC INVALID_ARGUMENT / HTTP 400.
    BadRequest,
    /// Success, reporting this many rejected spans.
    Partial(i64),
}

#[derive(Debug, Default)]
struct Recorded {
    traces: Vec<ExportTraceServiceRequest>,
    metrics: Vec<ExportMetricsServiceRequest>,
    /// Request headers (gRPC metadata) of every request, failed ones included.
    headers: Vec<http::HeaderMap>,
    requests: u32,
}

#[derive(Debug, Clone, Default)]
struct Collector {
    rec: Arc<Mutex<Recorded>>,
    script: Arc<Mutex<VecDeque<Reply>>>,
}

impl Collector {
    fn with_script(replies: &[Reply]) -> Self {
        let c = Collector::default();
        c.script.lock().unwrap().extend(replies.iter().copied());
        c
    }
    fn next_reply(&self) -> Option<Reply> {
        let mut rec = self.rec.lock().unwrap();
        rec.requests += 1;
        self.script.lock().unwrap().pop_front()
    }
    fn traces(&self) -> Vec<ExportTraceServiceRequest> {
        self.rec.lock().unwrap().traces.clone()
    }
    fn metrics(&self) -> Vec<ExportMetricsServiceRequest> {
        self.rec.lock().unwrap().metrics.clone()
    }
    fn headers(&self) -> Vec<http::HeaderMap> {
        self.rec.lock().unwrap().headers.clone()
    }
    fn requests(&self) -> u32 {
        self.rec.lock().unwrap().requests
    }
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let reply = self.next_reply();
        let rejected = match reply {
            Some(Reply::Unavailable(_)) => return Err(tonic::Status::unavailable("busy")),
            Some(Reply::BadRequest) => return Err(tonic::Status::invalid_argument("bad")),
            Some(Reply::Partial(n)) => n,
            None => 0,
        };
        self.rec.lock().unwrap().traces.push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: "rejected by test".into(),
            }),
        }))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.rec.lock().unwrap().metrics.push(request.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// Serves `Collector` over gRPC (h2c) on an ephemeral 127.0.0.1 port.
async fn spawn_grpc(collector: Collector) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let traces = TraceServiceServer::new(collector.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    let metrics = MetricsServiceServer::new(collector.clone())
        .accept_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Gzip);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (traces, metrics, collector) = (traces.clone(), metrics.clone(), collector.clone());
            let svc = hyper::service::service_fn(move |req: http::Request<Incoming>| {
                let (mut traces, mut metrics) = (traces.clone(), metrics.clone());
                collector
                    .rec
                    .lock()
                    .unwrap()
                    .headers
                    .push(req.headers().clone());
                async move {
                    let path = req.uri().path();
                    if path.starts_with("/opentelemetry.proto.collector.trace.v1.TraceService/") {
                        traces.call(req).await
                    } else {
                        metrics.call(req).await
                    }
                }
            });
            tokio::spawn(async move {
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn http_handler(
    collector: Collector,
    req: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let respond = |status: u16, body: Vec<u8>| {
        let mut r = http::Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-protobuf"),
        );
        r
    };
    collector
        .rec
        .lock()
        .unwrap()
        .headers
        .push(req.headers().clone());
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    if parts.method != http::Method::POST
        || parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.as_bytes())
            != Some(b"application/x-protobuf")
    {
        return Ok(respond(415, Vec::new()));
    }
    let raw = match parts.headers.get(http::header::CONTENT_ENCODING) {
        Some(v) if v == "gzip" => {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&body[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        }
        Some(_) => return Ok(respond(415, Vec::new())),
        None => body.to_vec(),
    };
    match parts.uri.path() {
        "/v1/traces" => {
            let rejected = match collector.next_reply() {
                Some(Reply::Unavailable(after)) => {
                    let mut r = respond(503, b"try later".to_vec());
                    if let Some(s) = after {
                        r.headers_mut()
                            .insert(http::header::RETRY_AFTER, s.to_string().parse().unwrap());
                    }
                    return Ok(r);
                }
                Some(Reply::BadRequest) => return Ok(respond(400, b"bad".to_vec())),
                Some(Reply::Partial(n)) => n,
                None => 0,
            };
            let req = ExportTraceServiceRequest::decode(&raw[..]).unwrap();
            collector.rec.lock().unwrap().traces.push(req);
            let resp = ExportTraceServiceResponse {
                partial_success: (rejected > 0).then(|| ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message: "rejected by test".into(),
                }),
            };
            Ok(respond(200, resp.encode_to_vec()))
        }
        "/v1/metrics" => {
            let req = ExportMetricsServiceRequest::decode(&raw[..]).unwrap();
            collector.rec.lock().unwrap().metrics.push(req);
            Ok(respond(200, Vec::new()))
        }
        _ => Ok(respond(404, Vec::new())),
    }
}

/// Serves `Collector` over OTLP/HTTP (HTTP/1.1) on an ephemeral 127.0.0.1 port.
async fn spawn_http(collector: Collector) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let collector = collector.clone();
            let svc = hyper::service::service_fn(move |req| http_handler(collector.clone(), req));
            tokio::spawn(async move {
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A 127.0.0.1 port with nothing listening on it.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

// ---------------------------------------------------------------------------------------------
// Helpers

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn start_collector(rt: &tokio::runtime::Runtime, protocol: Protocol, c: Collector) -> SocketAddr {
    match protocol {
        Protocol::Grpc => rt.block_on(spawn_grpc(c)),
        Protocol::HttpProtobuf => rt.block_on(spawn_http(c)),
    }
}

fn config(protocol: Protocol, addr: SocketAddr) -> ExporterConfig {
    let mut cfg = ExporterConfig::new(format!("http://{addr}"), protocol);
    cfg.headers = vec![("x-api-key".into(), "secret".into())];
    cfg.timeout = Duration::from_secs(5);
    cfg
}

fn resources() -> Vec<Arc<Resource>> {
    (0..3u64)
        .map(|i| {
            Arc::new(Resource {
                id: 100 + i,
                attributes: vec![KeyValue::str("service.name", format!("svc-{i}"))],
            })
        })
        .collect()
}

/// Span number `n`, of resource `n % 3`; its span id encodes `n`.
fn span(res: &[Arc<Resource>], n: u64) -> SpanRecord {
    let mut trace_id = [0u8; 16];
    trace_id[..8].copy_from_slice(&n.to_be_bytes());
    SpanRecord {
        trace_id,
        span_id: n.to_be_bytes(),
        parent_span_id: None,
        trace_state: String::new(),
        name: "GET /items".into(),
        kind: SpanKind::Server,
        start_unix_nano: 1_700_000_000_000_000_000 + n,
        end_unix_nano: 1_700_000_000_000_500_000 + n,
        status: StatusCode::Unset,
        status_message: String::new(),
        attributes: vec![KeyValue::int("http.response.status_code", 200)],
        resource: res[(n % 3) as usize].clone(),
    }
}

fn service_name(r: &Option<opentelemetry_proto::tonic::resource::v1::Resource>) -> String {
    r.as_ref()
        .unwrap()
        .attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(|kv| match kv.value.clone()?.value? {
            any_value::Value::StringValue(s) => Some(s),
            _ => None,
        })
        .expect("service.name")
}

/// Span ids received, each with the service of the ResourceSpans it arrived in.
fn received(traces: &[ExportTraceServiceRequest]) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    for req in traces {
        for rs in &req.resource_spans {
            let svc = service_name(&rs.resource);
            for ss in &rs.scope_spans {
                assert_eq!(ss.scope.as_ref().unwrap().name, "wasmtap");
                for s in &ss.spans {
                    let id = u64::from_be_bytes(s.span_id.as_slice().try_into().unwrap());
                    out.push((id, svc.clone()));
                }
            }
        }
    }
    out
}

fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

fn delivers_everything_once(protocol: Protocol, gzip: bool) {
    let rt = runtime();
    let collector = Collector::default();
    let addr = start_collector(&rt, protocol, collector.clone());
    let mut cfg = config(protocol, addr);
    cfg.gzip = gzip;
    cfg.max_batch_spans = 300;
    cfg.queue_capacity = 4; // small: the blocking sends must wait, never drop
    let exporter = Exporter::start(cfg, rt.handle()).unwrap();

    let res = resources();
    const TOTAL: u64 = 3000;
    let sender = exporter.clone();
    let res2 = res.clone();
    // From a plain (non-tokio) thread, as replay does.
    std::thread::spawn(move || {
        for chunk in (0..TOTAL).collect::<Vec<_>>().chunks(70) {
            sender.send_spans_blocking(chunk.iter().map(|&n| span(&res2, n)).collect());
        }
    })
    .join()
    .unwrap();
    let points = vec![
        MetricPoint {
            resource: res[0].clone(),
            name: "wasmtap.requests",
            unit: "{request}",
            description: "requests",
            attributes: vec![],
            data: MetricData::Sum { value: 7 },
            start_unix_nano: 0,
        },
        MetricPoint {
            resource: res[1].clone(),
            name: "wasmtap.requests",
            unit: "{request}",
            description: "requests",
            attributes: vec![],
            data: MetricData::Sum { value: 9 },
            start_unix_nano: 0,
        },
    ];
    exporter.send_metrics_blocking(MetricsSnapshot {
        temporality: Default::default(),
        start_unix_nano: 1,
        time_unix_nano: 2,
        points,
    });

    let started = Instant::now();
    let stats = exporter.shutdown_blocking(Duration::from_secs(20));
    assert!(started.elapsed() < Duration::from_secs(20));

    let traces = collector.traces();
    let mut got = received(&traces);
    assert_eq!(got.len() as u64, TOTAL, "every span arrives");
    for (id, svc) in &got {
        assert_eq!(
            *svc,
            format!("svc-{}", id % 3),
            "span {id} under the wrong resource"
        );
    }
    got.sort();
    got.dedup();
    assert_eq!(got.len() as u64, TOTAL, "no span arrives twice");
    assert_eq!(got.first().unwrap().0, 0);
    assert_eq!(got.last().unwrap().0, TOTAL - 1);
    for req in &traces {
        let n: usize = req
            .resource_spans
            .iter()
            .map(|rs| rs.scope_spans[0].spans.len())
            .sum();
        assert!(n <= 300, "request of {n} spans exceeds max_batch_spans");
        let mut names: Vec<_> = req
            .resource_spans
            .iter()
            .map(|rs| service_name(&rs.resource))
            .collect();
        let len = names.len();
        names.sort();
        names.dedup();
        assert_eq!(
            names.len(),
            len,
            "one ResourceSpans per resource in a request"
        );
    }
    // Coalescing: 43 batches of 70 spans become far fewer requests than batches.
    assert!(
        traces.len() >= 10 && traces.len() < 43,
        "{} requests",
        traces.len()
    );
    assert!(traces.iter().any(|r| r.resource_spans.len() == 3));

    let metrics = collector.metrics();
    assert_eq!(metrics.len(), 1);
    assert_eq!(metrics[0].resource_metrics.len(), 2);

    for h in collector.headers() {
        assert_eq!(h.get("x-api-key").unwrap(), "secret");
        let encoding = match protocol {
            Protocol::Grpc => h.get("grpc-encoding"),
            Protocol::HttpProtobuf => h.get("content-encoding"),
        };
        assert_eq!(encoding.is_some_and(|v| v == "gzip"), gzip, "{h:?}");
    }

    assert_eq!(
        stats,
        ExportStats {
            spans_queued: TOTAL,
            spans_exported: TOTAL,
            metric_points_queued: 2,
            metric_points_exported: 2,
            requests: traces.len() as u64 + 1,
            ..ExportStats::default()
        }
    );
}

#[test]
fn grpc_delivers_every_span_once_grouped_by_resource() {
    delivers_everything_once(Protocol::Grpc, true);
}

#[test]
fn grpc_without_gzip() {
    delivers_everything_once(Protocol::Grpc, false);
}

#[test]
fn http_delivers_every_span_once_grouped_by_resource() {
    delivers_everything_once(Protocol::HttpProtobuf, true);
}

#[test]
fn http_without_gzip() {
    delivers_everything_once(Protocol::HttpProtobuf, false);
}

fn retries_then_succeeds(protocol: Protocol) {
    let rt = runtime();
    let collector = Collector::with_script(&[Reply::Unavailable(None), Reply::Unavailable(None)]);
    let addr = start_collector(&rt, protocol, collector.clone());
    let exporter = Exporter::start(config(protocol, addr), rt.handle()).unwrap();
    let res = resources();
    assert!(exporter.try_send_spans((0..10).map(|n| span(&res, n)).collect()));
    let stats = exporter.shutdown_blocking(Duration::from_secs(10));
    assert_eq!(received(&collector.traces()).len(), 10);
    assert_eq!(collector.requests(), 3);
    assert_eq!(stats.retries, 2);
    assert_eq!(stats.requests, 3);
    assert_eq!(stats.spans_exported, 10);
    assert_eq!(stats.spans_failed, 0);
}

#[test]
fn grpc_unavailable_twice_then_ok_is_retried() {
    retries_then_succeeds(Protocol::Grpc);
}

#[test]
fn http_503_twice_then_ok_is_retried() {
    retries_then_succeeds(Protocol::HttpProtobuf);
}

#[test]
fn http_retry_after_is_honoured() {
    let rt = runtime();
    let collector = Collector::with_script(&[Reply::Unavailable(Some(1))]);
    let addr = start_collector(&rt, Protocol::HttpProtobuf, collector.clone());
    let exporter = Exporter::start(config(Protocol::HttpProtobuf, addr), rt.handle()).unwrap();
    let res = resources();
    let start = Instant::now();
    assert!(exporter.try_send_spans(vec![span(&res, 1)]));
    wait_until("the retry", Duration::from_secs(10), || {
        exporter.stats().spans_exported == 1
    });
    // Backoff alone would retry after 100 ms; Retry-After asks for 1 s.
    assert!(
        start.elapsed() >= Duration::from_millis(950),
        "{:?}",
        start.elapsed()
    );
    let stats = exporter.shutdown_blocking(Duration::from_secs(5));
    assert_eq!(stats.retries, 1);
}

fn permanent_error_is_not_retried(protocol: Protocol) {
    let rt = runtime();
    let collector = Collector::with_script(&[Reply::BadRequest]);
    let addr = start_collector(&rt, protocol, collector.clone());
    let exporter = Exporter::start(config(protocol, addr), rt.handle()).unwrap();
    let res = resources();
    assert!(exporter.try_send_spans((0..5).map(|n| span(&res, n)).collect()));
    let stats = exporter.shutdown_blocking(Duration::from_secs(10));
    assert_eq!(collector.requests(), 1);
    assert_eq!((stats.requests, stats.retries), (1, 0));
    assert_eq!((stats.spans_exported, stats.spans_failed), (0, 5));
}

#[test]
fn grpc_invalid_argument_is_not_retried() {
    permanent_error_is_not_retried(Protocol::Grpc);
}

#[test]
fn http_400_is_not_retried() {
    permanent_error_is_not_retried(Protocol::HttpProtobuf);
}

fn partial_success_is_counted(protocol: Protocol) {
    let rt = runtime();
    let collector = Collector::with_script(&[Reply::Partial(3)]);
    let addr = start_collector(&rt, protocol, collector.clone());
    let exporter = Exporter::start(config(protocol, addr), rt.handle()).unwrap();
    let res = resources();
    assert!(exporter.try_send_spans((0..10).map(|n| span(&res, n)).collect()));
    let stats = exporter.shutdown_blocking(Duration::from_secs(10));
    assert_eq!(stats.partial_success_rejected, 3);
    assert_eq!((stats.spans_exported, stats.spans_failed), (7, 3));
    assert_eq!(stats.retries, 0);
}

#[test]
fn grpc_partial_success_is_counted() {
    partial_success_is_counted(Protocol::Grpc);
}

#[test]
fn http_partial_success_is_counted() {
    partial_success_is_counted(Protocol::HttpProtobuf);
}

fn unreachable_endpoint_fails_within_shutdown_timeout(protocol: Protocol) {
    let rt = runtime();
    let exporter = Exporter::start(config(protocol, closed_port()), rt.handle()).unwrap();
    let res = resources();
    assert!(exporter.try_send_spans((0..10).map(|n| span(&res, n)).collect()));
    assert!(exporter.try_send_spans((10..15).map(|n| span(&res, n)).collect()));
    let mut m = MetricsSnapshot::default();
    m.points.push(MetricPoint {
        resource: res[0].clone(),
        name: "g",
        unit: "1",
        description: "",
        attributes: vec![],
        data: MetricData::Gauge { value: 1.0 },
        start_unix_nano: 0,
    });
    assert!(exporter.try_send_metrics(m));
    // With 5 retries the backoff alone (0.1+0.2+0.4+0.8+1.6 s) outlasts the timeout.
    let timeout = Duration::from_millis(1000);
    let start = Instant::now();
    let stats = exporter.shutdown_blocking(timeout);
    let took = start.elapsed();
    assert!(
        took <= timeout + Duration::from_millis(250),
        "shutdown took {took:?}"
    );
    assert_eq!(stats.spans_queued, 15);
    assert_eq!(stats.spans_exported, 0);
    assert_eq!(stats.spans_failed, 15);
    assert_eq!(stats.metric_points_failed, 1);
    assert!(stats.requests >= 1 && stats.retries >= 1, "{stats:?}");
}

#[test]
fn grpc_unreachable_endpoint_fails_within_shutdown_timeout() {
    unreachable_endpoint_fails_within_shutdown_timeout(Protocol::Grpc);
}

#[test]
fn http_unreachable_endpoint_fails_within_shutdown_timeout() {
    unreachable_endpoint_fails_within_shutdown_timeout(Protocol::HttpProtobuf);
}

fn unreachable_endpoint_exhausts_retries(protocol: Protocol) {
    let rt = runtime();
    let mut cfg = config(protocol, closed_port());
    cfg.max_retries = 2;
    let exporter = Exporter::start(cfg, rt.handle()).unwrap();
    let res = resources();
    assert!(exporter.try_send_spans((0..4).map(|n| span(&res, n)).collect()));
    wait_until("retries to run out", Duration::from_secs(10), || {
        exporter.stats().spans_failed == 4
    });
    let stats = exporter.shutdown_blocking(Duration::from_secs(1));
    assert_eq!((stats.requests, stats.retries), (3, 2));
    assert_eq!((stats.spans_exported, stats.spans_failed), (0, 4));
}

#[test]
fn grpc_unreachable_endpoint_exhausts_retries() {
    unreachable_endpoint_exhausts_retries(Protocol::Grpc);
}

#[test]
fn http_unreachable_endpoint_exhausts_retries() {
    unreachable_endpoint_exhausts_retries(Protocol::HttpProtobuf);
}

#[test]
fn full_queue_drops_and_counts() {
    // A current-thread runtime that nobody drives: the export task never runs, so the queue
    // only fills.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut cfg = config(Protocol::HttpProtobuf, closed_port());
    cfg.queue_capacity = 2;
    let exporter = Exporter::start(cfg, rt.handle()).unwrap();
    let res = resources();
    let sent: Vec<bool> = (0..5)
        .map(|b| exporter.try_send_spans((b * 10..b * 10 + 10).map(|n| span(&res, n)).collect()))
        .collect();
    assert_eq!(sent, [true, true, false, false, false]);
    assert!(!exporter.try_send_metrics(MetricsSnapshot {
        temporality: Default::default(),
        start_unix_nano: 0,
        time_unix_nano: 0,
        points: vec![MetricPoint {
            resource: res[0].clone(),
            name: "g",
            unit: "1",
            description: "",
            attributes: vec![],
            data: MetricData::Gauge { value: 1.0 },
            start_unix_nano: 0,
        }],
    }));
    let s = exporter.stats();
    assert_eq!((s.spans_queued, s.spans_dropped_queue_full), (20, 30));
    assert_eq!(s.metric_points_dropped_queue_full, 1);
    // The task cannot finish: shutdown gives up at its timeout and counts the rest as failed.
    let start = Instant::now();
    let s = exporter.shutdown_blocking(Duration::from_millis(200));
    assert!(
        start.elapsed() < Duration::from_millis(400),
        "{:?}",
        start.elapsed()
    );
    assert_eq!((s.spans_exported, s.spans_failed), (0, 20));
}

#[test]
fn sends_after_shutdown_are_dropped() {
    let rt = runtime();
    let collector = Collector::default();
    let addr = start_collector(&rt, Protocol::Grpc, collector.clone());
    let exporter = Exporter::start(config(Protocol::Grpc, addr), rt.handle()).unwrap();
    let other = exporter.clone();
    let res = resources();
    let stats = exporter.shutdown_blocking(Duration::from_secs(5));
    assert_eq!(stats, ExportStats::default());
    assert!(!other.try_send_spans(vec![span(&res, 1)]));
    other.send_spans_blocking(vec![span(&res, 2)]);
    assert_eq!(other.stats().spans_dropped_queue_full, 2);
    assert_eq!(collector.requests(), 0);
}

#[test]
fn config_from_flags() {
    let cfg =
        ExporterConfig::from_env_and(Some("http://127.0.0.1:4317".into()), Some(Protocol::Grpc))
            .unwrap()
            .unwrap();
    assert_eq!(cfg.protocol, Protocol::Grpc);
    let err =
        ExporterConfig::from_env_and(Some("https://127.0.0.1:4318".into()), None).unwrap_err();
    assert!(err.to_string().contains("TLS not supported yet"), "{err}");
    let mut bad = ExporterConfig::new("https://127.0.0.1:4318", Protocol::HttpProtobuf);
    bad.gzip = false;
    let rt = runtime();
    assert!(Exporter::start(bad, rt.handle()).is_err());
}
