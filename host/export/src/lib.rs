//! OTLP export of wasmtap spans and metrics, over gRPC or HTTP/protobuf.
//!
//! One agent observes many services, and each span's OTLP resource is the *observed* service,
//! so requests are built by hand with `opentelemetry-proto` rather than through the
//! OpenTelemetry SDK (which binds one resource per provider): one `ResourceSpans` /
//! `ResourceMetrics` per distinct [`Resource`](wasmtap_telemetry::model::Resource) (grouped by
//! its `id`), many resources per request, scope `wasmtap` with this crate's version.
//!
//! [`Exporter::start`] spawns one export task on a tokio runtime. Batches reach it through a
//! bounded queue: [`Exporter::try_send_spans`] never waits (live capture drops and counts when
//! the queue is full), [`Exporter::send_spans_blocking`] applies back-pressure (replay). The
//! task coalesces queued batches into requests of at most `max_batch_spans` spans, sends one
//! request at a time, retries retryable failures with exponential backoff, and
//! [`Exporter::shutdown_blocking`] flushes within a deadline.
//!
//! Transports: gRPC through tonic over plain HTTP/2 (gzip via `grpc-encoding`), and
//! OTLP/HTTP with binary protobuf bodies over plain HTTP/1.1 (gzip via `Content-Encoding`).
//! TLS (`https://`) is not supported yet and is refused at configuration time.

mod config;
mod convert;
mod exporter;
mod transport;

pub use config::{
    ConfigError, DEFAULT_MAX_BATCH_SPANS, DEFAULT_MAX_RETRIES, DEFAULT_QUEUE_CAPACITY,
    DEFAULT_TIMEOUT, ExporterConfig, Protocol,
};
pub use convert::{SCOPE_NAME, SCOPE_VERSION, build_metrics_request, build_trace_request};
pub use exporter::{ExportError, ExportStats, Exporter};
