//! The two OTLP transports: one request attempt, classified as accepted, retryable or permanent.

use std::io::Write as _;
use std::str::FromStr as _;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
    metrics_service_client::MetricsServiceClient,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse, trace_service_client::TraceServiceClient,
};
use prost::Message as _;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, MetadataMap};
use tonic::transport::{Channel, Endpoint};
use tonic_types::StatusExt as _;

use crate::config::{ConfigError, ExporterConfig, Protocol};

/// Largest response body read from an OTLP/HTTP collector.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

const USER_AGENT: &str = concat!("wasmtap-export/", env!("CARGO_PKG_VERSION"));

/// What one export request carries.
#[derive(Debug, Clone)]
pub(crate) enum Payload {
    /// Spans.
    Traces(ExportTraceServiceRequest),
    /// Metric points.
    Metrics(ExportMetricsServiceRequest),
}

/// A payload ready to be sent, encoded once and reused by every retry.
#[derive(Debug)]
pub(crate) enum Prepared {
    /// gRPC: tonic encodes (and compresses) the message itself.
    Grpc(Payload),
    /// HTTP: the URL, and the protobuf body, gzipped if configured.
    Http {
        url: http::Uri,
        body: Bytes,
        traces: bool,
    },
}

/// The collector took the request; it may still have rejected some items.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Accepted {
    /// Spans or data points the collector reports as rejected.
    pub(crate) rejected: i64,
    /// The collector's message about the rejection or a warning.
    pub(crate) message: String,
}

/// Why an attempt failed.
#[derive(Debug, PartialEq)]
pub(crate) enum AttemptError {
    /// Worth retrying; `delay` is the collector's requested minimum delay, if any.
    Retryable {
        reason: String,
        delay: Option<Duration>,
    },
    /// Retrying cannot help (bad request, unauthenticated, unimplemented...).
    Permanent(String),
}

/// One OTLP transport with its clients.
#[derive(Debug)]
pub(crate) enum Transport {
    Grpc {
        traces: TraceServiceClient<Channel>,
        metrics: MetricsServiceClient<Channel>,
        metadata: MetadataMap,
    },
    Http {
        client: Client<HttpConnector, Full<Bytes>>,
        traces_url: http::Uri,
        metrics_url: http::Uri,
        headers: http::HeaderMap,
        gzip: bool,
    },
}

impl Transport {
    /// Builds the clients. For gRPC this must run inside a tokio runtime context (the channel
    /// connects lazily on first use).
    pub(crate) fn new(cfg: &ExporterConfig) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let bad_header = |k: &str, v: &str| ConfigError::InvalidHeader(format!("{k}={v}"));
        match cfg.protocol {
            Protocol::Grpc => {
                let endpoint = Endpoint::from_shared(cfg.endpoint.trim().to_string())
                    .map_err(|e| ConfigError::InvalidEndpoint {
                        url: cfg.endpoint.clone(),
                        reason: e.to_string(),
                    })?
                    .connect_timeout(cfg.timeout)
                    .timeout(cfg.timeout)
                    .tcp_nodelay(true)
                    .user_agent(USER_AGENT)
                    .map_err(|e| ConfigError::InvalidEndpoint {
                        url: cfg.endpoint.clone(),
                        reason: e.to_string(),
                    })?;
                let channel = endpoint.connect_lazy();
                let mut traces = TraceServiceClient::new(channel.clone());
                let mut metrics = MetricsServiceClient::new(channel);
                if cfg.gzip {
                    traces = traces
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                    metrics = metrics
                        .send_compressed(CompressionEncoding::Gzip)
                        .accept_compressed(CompressionEncoding::Gzip);
                }
                let mut metadata = MetadataMap::new();
                for (k, v) in &cfg.headers {
                    let key = AsciiMetadataKey::from_str(&k.to_ascii_lowercase())
                        .map_err(|_| bad_header(k, v))?;
                    let value =
                        AsciiMetadataValue::try_from(v.as_str()).map_err(|_| bad_header(k, v))?;
                    metadata.append(key, value);
                }
                Ok(Transport::Grpc {
                    traces,
                    metrics,
                    metadata,
                })
            }
            Protocol::HttpProtobuf => {
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(cfg.timeout));
                connector.set_nodelay(true);
                let client = Client::builder(TokioExecutor::new()).build(connector);
                let mut headers = http::HeaderMap::new();
                for (k, v) in &cfg.headers {
                    let name = http::HeaderName::from_bytes(k.to_ascii_lowercase().as_bytes())
                        .map_err(|_| bad_header(k, v))?;
                    let value = http::HeaderValue::from_str(v).map_err(|_| bad_header(k, v))?;
                    headers.append(name, value);
                }
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/x-protobuf"),
                );
                headers.insert(
                    http::header::USER_AGENT,
                    http::HeaderValue::from_static(USER_AGENT),
                );
                if cfg.gzip {
                    headers.insert(
                        http::header::CONTENT_ENCODING,
                        http::HeaderValue::from_static("gzip"),
                    );
                }
                Ok(Transport::Http {
                    client,
                    traces_url: cfg.signal_url("v1/traces")?,
                    metrics_url: cfg.signal_url("v1/metrics")?,
                    headers,
                    gzip: cfg.gzip,
                })
            }
        }
    }

    /// Encodes a payload once for all its attempts.
    pub(crate) fn prepare(&self, payload: Payload) -> Prepared {
        match self {
            Transport::Grpc { .. } => Prepared::Grpc(payload),
            Transport::Http {
                traces_url,
                metrics_url,
                gzip,
                ..
            } => {
                let (url, raw, traces) = match &payload {
                    Payload::Traces(r) => (traces_url.clone(), r.encode_to_vec(), true),
                    Payload::Metrics(r) => (metrics_url.clone(), r.encode_to_vec(), false),
                };
                let body = if *gzip { gzip_bytes(&raw) } else { raw };
                Prepared::Http {
                    url,
                    body: Bytes::from(body),
                    traces,
                }
            }
        }
    }

    /// Sends one attempt. `timeout` is advertised to the gRPC server as `grpc-timeout`; the
    /// caller enforces it.
    pub(crate) async fn attempt(
        &self,
        prepared: &Prepared,
        timeout: Duration,
    ) -> Result<Accepted, AttemptError> {
        match (self, prepared) {
            (
                Transport::Grpc {
                    traces,
                    metrics,
                    metadata,
                },
                Prepared::Grpc(payload),
            ) => {
                let result = match payload {
                    Payload::Traces(r) => {
                        let mut req = tonic::Request::new(r.clone());
                        *req.metadata_mut() = metadata.clone();
                        req.set_timeout(timeout);
                        traces.clone().export(req).await.map(|resp| {
                            let ps = resp.into_inner().partial_success.unwrap_or_default();
                            Accepted {
                                rejected: ps.rejected_spans,
                                message: ps.error_message,
                            }
                        })
                    }
                    Payload::Metrics(r) => {
                        let mut req = tonic::Request::new(r.clone());
                        *req.metadata_mut() = metadata.clone();
                        req.set_timeout(timeout);
                        metrics.clone().export(req).await.map(|resp| {
                            let ps = resp.into_inner().partial_success.unwrap_or_default();
                            Accepted {
                                rejected: ps.rejected_data_points,
                                message: ps.error_message,
                            }
                        })
                    }
                };
                result.map_err(|status| classify_grpc(&status))
            }
            (
                Transport::Http {
                    client, headers, ..
                },
                Prepared::Http { url, body, traces },
            ) => {
                let mut req = http::Request::new(Full::new(body.clone()));
                *req.method_mut() = http::Method::POST;
                *req.uri_mut() = url.clone();
                *req.headers_mut() = headers.clone();
                let resp = client
                    .request(req)
                    .await
                    .map_err(|e| AttemptError::Retryable {
                        reason: format!("HTTP request to {url} failed: {}", error_chain(&e)),
                        delay: None,
                    })?;
                let status = resp.status();
                let retry_after = resp
                    .headers()
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                classify_http(status, retry_after, &body, *traces)
            }
            _ => Err(AttemptError::Permanent(
                "internal error: payload prepared for another transport".into(),
            )),
        }
    }
}

fn gzip_bytes(raw: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(raw.len() / 4 + 64),
        flate2::Compression::default(),
    );
    // Writing to a Vec cannot fail.
    enc.write_all(raw).expect("gzip into a Vec");
    enc.finish().expect("gzip into a Vec")
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Classifies a failed gRPC call: OTLP's retryable codes, plus `RESOURCE_EXHAUSTED`, are
/// retried; `RetryInfo` in the status details gives the delay.
pub(crate) fn classify_grpc(status: &tonic::Status) -> AttemptError {
    use tonic::Code;
    let reason = format!(
        "gRPC export failed: {:?}: {}",
        status.code(),
        status.message()
    );
    match status.code() {
        Code::Cancelled
        | Code::DeadlineExceeded
        | Code::ResourceExhausted
        | Code::Aborted
        | Code::OutOfRange
        | Code::Unavailable
        | Code::DataLoss => AttemptError::Retryable {
            reason,
            delay: status
                .get_details_retry_info()
                .and_then(|ri| ri.retry_delay),
        },
        _ => AttemptError::Permanent(reason),
    }
}

/// Classifies an OTLP/HTTP response: 2xx is accepted (decoding a partial success if any),
/// 429/502/503/504 are retried (honouring `Retry-After` in seconds), the rest is permanent.
pub(crate) fn classify_http(
    status: http::StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    traces: bool,
) -> Result<Accepted, AttemptError> {
    if status.is_success() {
        if body.is_empty() {
            return Ok(Accepted::default());
        }
        // A JSON or otherwise undecodable body is not a failure: the data was accepted.
        let accepted = if traces {
            ExportTraceServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success)
                .map(|p| Accepted {
                    rejected: p.rejected_spans,
                    message: p.error_message,
                })
        } else {
            ExportMetricsServiceResponse::decode(body)
                .ok()
                .and_then(|r| r.partial_success)
                .map(|p| Accepted {
                    rejected: p.rejected_data_points,
                    message: p.error_message,
                })
        };
        return Ok(accepted.unwrap_or_default());
    }
    let detail = String::from_utf8_lossy(&body[..body.len().min(200)])
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>();
    let reason = format!("HTTP export failed: {status} {detail}")
        .trim_end()
        .to_string();
    match status.as_u16() {
        429 | 502 | 503 | 504 => Err(AttemptError::Retryable {
            reason,
            delay: retry_after,
        }),
        _ => Err(AttemptError::Permanent(reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTracePartialSuccess;

    #[test]
    fn grpc_codes() {
        for code in [
            tonic::Code::Unavailable,
            tonic::Code::ResourceExhausted,
            tonic::Code::Aborted,
            tonic::Code::DeadlineExceeded,
        ] {
            assert!(
                matches!(
                    classify_grpc(&tonic::Status::new(code, "x")),
                    AttemptError::Retryable { .. }
                ),
                "{code:?}"
            );
        }
        for code in [
            tonic::Code::InvalidArgument,
            tonic::Code::Unauthenticated,
            tonic::Code::Unimplemented,
            tonic::Code::Internal,
        ] {
            assert!(
                matches!(
                    classify_grpc(&tonic::Status::new(code, "x")),
                    AttemptError::Permanent(_)
                ),
                "{code:?}"
            );
        }
    }

    #[test]
    fn grpc_retry_info_is_honoured() {
        let details = tonic_types::ErrorDetails::with_retry_info(Some(Duration::from_millis(1500)));
        let status =
            tonic::Status::with_error_details(tonic::Code::ResourceExhausted, "slow down", details);
        assert_eq!(
            classify_grpc(&status),
            AttemptError::Retryable {
                reason: "gRPC export failed: ResourceExhausted: slow down".into(),
                delay: Some(Duration::from_millis(1500)),
            }
        );
    }

    #[test]
    fn http_statuses() {
        let c =
            |code: u16| classify_http(http::StatusCode::from_u16(code).unwrap(), None, b"", true);
        assert_eq!(c(200), Ok(Accepted::default()));
        assert_eq!(c(202), Ok(Accepted::default()));
        for code in [429, 502, 503, 504] {
            assert!(
                matches!(c(code), Err(AttemptError::Retryable { .. })),
                "{code}"
            );
        }
        for code in [400, 401, 404, 413, 500] {
            assert!(matches!(c(code), Err(AttemptError::Permanent(_))), "{code}");
        }
        let r = classify_http(
            http::StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            b"busy",
            false,
        );
        assert_eq!(
            r,
            Err(AttemptError::Retryable {
                reason: "HTTP export failed: 429 Too Many Requests busy".into(),
                delay: Some(Duration::from_secs(3)),
            })
        );
    }

    #[test]
    fn http_partial_success_is_decoded() {
        let body = ExportTraceServiceResponse {
            partial_success: Some(ExportTracePartialSuccess {
                rejected_spans: 2,
                error_message: "too old".into(),
            }),
        }
        .encode_to_vec();
        assert_eq!(
            classify_http(http::StatusCode::OK, None, &body, true),
            Ok(Accepted {
                rejected: 2,
                message: "too old".into()
            })
        );
        // Not protobuf: still accepted.
        assert_eq!(
            classify_http(http::StatusCode::OK, None, b"{}", true),
            Ok(Accepted::default())
        );
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read as _;
        let raw = b"hello hello hello hello".repeat(10);
        let gz = gzip_bytes(&raw);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, raw);
    }
}
