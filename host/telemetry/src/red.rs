//! Spans and RED metrics from exchanges.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use hdrhistogram::Histogram;

use crate::exchange::{Exchange, ExchangeKind, Outcome};
use crate::model::{
    AttrValue, Key, KeyValue, MetricData, MetricPoint, MetricsSnapshot, Resource, SpanKind,
    SpanRecord, StatusCode,
};
use crate::services::ServiceMap;

/// The OpenTelemetry semantic-convention bucket boundaries for request durations, in seconds.
pub const DURATION_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// Where an exchange was seen.
#[derive(Debug, Clone, Copy)]
pub struct FlowCtx<'a> {
    /// Client endpoint.
    pub client: SocketAddr,
    /// Server endpoint.
    pub server: SocketAddr,
    /// Protocol name (from the decoder).
    pub protocol: &'a str,
    /// `tcp` or `udp`.
    pub transport: &'a str,
    /// Flow id (for deterministic span ids).
    pub flow_id: u64,
}

/// Limits of the telemetry stage.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Metric series (service × operation × status) kept before new ones go to an overflow series.
    pub max_series: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self { max_series: 10_000 }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    resource: u64,
    protocol: Arc<str>,
    operation: String,
    status_code: String,
    error: bool,
}

impl SeriesKey {
    fn is(
        &self,
        resource: u64,
        protocol: &str,
        operation: &str,
        status_code: &str,
        error: bool,
    ) -> bool {
        self.resource == resource
            && self.error == error
            && &*self.protocol == protocol
            && self.operation == operation
            && self.status_code == status_code
    }
}

struct Series {
    key: SeriesKey,
    resource: Arc<Resource>,
    count: u64,
    errors: u64,
    sum: f64,
    min: f64,
    max: f64,
    buckets: [u64; DURATION_BUCKETS.len() + 1],
}

/// One row of the console summary: per service and operation.
#[derive(Debug, Clone)]
pub struct SummaryRow {
    /// `service.name`.
    pub service: String,
    /// Protocol.
    pub protocol: String,
    /// Operation.
    pub operation: String,
    /// Exchanges.
    pub requests: u64,
    /// Errors (error status or unanswered).
    pub errors: u64,
    /// Median duration, seconds.
    pub p50: f64,
    /// 95th percentile, seconds.
    pub p95: f64,
    /// 99th percentile, seconds.
    pub p99: f64,
}

struct Quantiles {
    resource: u64,
    operation: String,
    service: String,
    protocol: Arc<str>,
    requests: u64,
    errors: u64,
    hist: Histogram<u64>,
}

/// The keys the host adds to every span, made once.
struct HostKeys {
    error_type: Key,
    server_address: Key,
    server_port: Key,
    client_address: Key,
    client_port: Key,
    network_transport: Key,
    network_protocol_name: Key,
}

impl HostKeys {
    fn new() -> Self {
        Self {
            error_type: Key::from("error.type"),
            server_address: Key::from("server.address"),
            server_port: Key::from("server.port"),
            client_address: Key::from("client.address"),
            client_port: Key::from("client.port"),
            network_transport: Key::from("network.transport"),
            network_protocol_name: Key::from("network.protocol.name"),
        }
    }
}

/// Turns exchanges into spans and aggregates RED metrics (cumulative).
pub struct Telemetry {
    keys: HostKeys,
    services: ServiceMap,
    cfg: TelemetryConfig,
    /// Series by a hash of their key; collisions live side by side in the bucket.
    series: HashMap<u64, Vec<Series>, foldhash::fast::FixedState>,
    series_len: usize,
    quantiles: HashMap<u64, Vec<Quantiles>, foldhash::fast::FixedState>,
    quantiles_len: usize,
    hasher: foldhash::fast::FixedState,
    overflowed: u64,
    start_ns: Option<u64>,
    last_ns: u64,
    seq: u64,
    bounds: Arc<[f64]>,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Telemetry {
    /// Creates the stage.
    pub fn new(services: ServiceMap, cfg: TelemetryConfig) -> Self {
        Self {
            keys: HostKeys::new(),
            services,
            cfg,
            series: HashMap::default(),
            series_len: 0,
            quantiles: HashMap::default(),
            quantiles_len: 0,
            hasher: foldhash::fast::FixedState::with_seed(0x7761_736d_7461_7021),
            overflowed: 0,
            start_ns: None,
            last_ns: 0,
            seq: 0,
            bounds: Arc::from(DURATION_BUCKETS.as_slice()),
        }
    }

    /// Exchanges that went to the overflow series because of the series cap.
    pub fn overflowed(&self) -> u64 {
        self.overflowed
    }

    /// Records one exchange: updates metrics and, when `want_span`, returns its span
    /// (building a span is most of the cost, so outputs that need none skip it).
    pub fn record(
        &mut self,
        ex: Exchange,
        ctx: &FlowCtx<'_>,
        want_span: bool,
    ) -> Option<SpanRecord> {
        let resource = self.services.resolve(ctx.server.ip(), ctx.server.port());
        let start = ex.start_ns();
        let end = ex.end_ns().max(start);
        self.start_ns = Some(self.start_ns.map_or(start, |s| s.min(start)));
        self.last_ns = self.last_ns.max(end);
        let (status, status_message, status_code) = match (&ex.kind, &ex.response) {
            (ExchangeKind::Unanswered, _) => {
                (StatusCode::Error, "no response".to_string(), String::new())
            }
            (_, Some(r)) if r.status == Outcome::Error => (
                StatusCode::Error,
                r.status_code.clone(),
                r.status_code.clone(),
            ),
            (_, Some(r)) => (StatusCode::Unset, String::new(), r.status_code.clone()),
            (_, None) if ex.request.status == Outcome::Error => (
                StatusCode::Error,
                ex.request.status_code.clone(),
                ex.request.status_code.clone(),
            ),
            (_, None) => (
                StatusCode::Unset,
                String::new(),
                ex.request.status_code.clone(),
            ),
        };
        let error = status == StatusCode::Error;
        let operation: &str = if ex.request.operation.is_empty() {
            ctx.protocol
        } else {
            &ex.request.operation
        };
        let duration_s = (end - start) as f64 / 1e9;
        self.observe(
            &resource,
            ctx.protocol,
            operation,
            &status_code,
            error,
            duration_s,
            end - start,
        );
        if !want_span {
            return None;
        }
        let operation = operation.to_string();

        let mut attributes = Vec::with_capacity(
            8 + ex.request.attributes.len()
                + ex.response.as_ref().map_or(0, |r| r.attributes.len()),
        );
        let Exchange {
            request,
            response,
            kind,
        } = ex;
        attributes.extend(request.attributes);
        if let Some(r) = response {
            attributes.extend(r.attributes);
        }
        if kind == ExchangeKind::Unanswered {
            attributes.push(KeyValue::str(self.keys.error_type.clone(), "no_response"));
        }
        let k = &self.keys;
        if !attributes.iter().any(|kv| kv.key == k.server_address) {
            attributes.push(KeyValue::str(
                k.server_address.clone(),
                ctx.server.ip().to_string(),
            ));
        }
        attributes.push(KeyValue::int(
            k.server_port.clone(),
            i64::from(ctx.server.port()),
        ));
        attributes.push(KeyValue::str(
            k.client_address.clone(),
            ctx.client.ip().to_string(),
        ));
        attributes.push(KeyValue::int(
            k.client_port.clone(),
            i64::from(ctx.client.port()),
        ));
        attributes.push(KeyValue::str(k.network_transport.clone(), ctx.transport));
        attributes.push(KeyValue::str(k.network_protocol_name.clone(), ctx.protocol));

        self.seq += 1;
        let a = splitmix(ctx.flow_id ^ splitmix(start) ^ self.seq.rotate_left(32));
        let b = splitmix(a ^ self.seq);
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&a.to_be_bytes());
        trace_id[8..].copy_from_slice(&b.to_be_bytes());
        let span_id = splitmix(b).to_be_bytes();
        Some(SpanRecord {
            trace_id,
            span_id,
            name: operation,
            kind: SpanKind::Server,
            start_unix_nano: start,
            end_unix_nano: end,
            status,
            status_message,
            attributes,
            resource,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        resource: &Arc<Resource>,
        protocol: &str,
        operation: &str,
        status_code: &str,
        error: bool,
        secs: f64,
        nanos: u64,
    ) {
        use std::hash::BuildHasher;
        let (mut operation, mut status_code) = (operation, status_code);
        let mut h = self
            .hasher
            .hash_one((resource.id, protocol, operation, status_code, error));
        let known = self.series.get(&h).is_some_and(|b| {
            b.iter().any(|s| {
                s.key
                    .is(resource.id, protocol, operation, status_code, error)
            })
        });
        if !known && self.series_len >= self.cfg.max_series {
            // Cardinality cap: new combinations share one overflow series.
            self.overflowed += 1;
            operation = "_OTHER";
            status_code = "";
            h = self
                .hasher
                .hash_one((resource.id, protocol, operation, status_code, error));
        }
        let bucket = self.series.entry(h).or_default();
        let idx = match bucket.iter().position(|s| {
            s.key
                .is(resource.id, protocol, operation, status_code, error)
        }) {
            Some(i) => i,
            None => {
                bucket.push(Series {
                    key: SeriesKey {
                        resource: resource.id,
                        protocol: Arc::from(protocol),
                        operation: operation.to_string(),
                        status_code: status_code.to_string(),
                        error,
                    },
                    resource: resource.clone(),
                    count: 0,
                    errors: 0,
                    sum: 0.0,
                    min: f64::INFINITY,
                    max: 0.0,
                    buckets: [0; DURATION_BUCKETS.len() + 1],
                });
                self.series_len += 1;
                bucket.len() - 1
            }
        };
        let s = &mut bucket[idx];
        s.count += 1;
        s.errors += u64::from(error);
        s.sum += secs;
        s.min = s.min.min(secs);
        s.max = s.max.max(secs);
        let b = DURATION_BUCKETS
            .iter()
            .position(|&ub| secs <= ub)
            .unwrap_or(DURATION_BUCKETS.len());
        s.buckets[b] += 1;

        let qh = self.hasher.hash_one((resource.id, operation));
        let qbucket = self.quantiles.entry(qh).or_default();
        let qi = match qbucket
            .iter()
            .position(|q| q.resource == resource.id && q.operation == operation)
        {
            Some(i) => i,
            None if self.quantiles_len >= self.cfg.max_series => return,
            None => {
                qbucket.push(Quantiles {
                    resource: resource.id,
                    operation: operation.to_string(),
                    service: resource.service_name().to_string(),
                    protocol: Arc::from(protocol),
                    requests: 0,
                    errors: 0,
                    // 1 µs .. 1 h at 3 significant digits; bounded memory.
                    hist: Histogram::new_with_bounds(1, 3_600_000_000, 3)
                        .unwrap_or_else(|_| Histogram::new(3).unwrap_or_else(|_| unreachable!())),
                });
                self.quantiles_len += 1;
                qbucket.len() - 1
            }
        };
        let q = &mut qbucket[qi];
        q.requests += 1;
        q.errors += u64::from(error);
        let _ = q.hist.record((nanos / 1000).clamp(1, 3_600_000_000));
    }

    /// The console summary rows, sorted by service then operation.
    pub fn summary(&self) -> Vec<SummaryRow> {
        let mut rows: Vec<SummaryRow> = self
            .quantiles
            .values()
            .flatten()
            .map(|q| SummaryRow {
                service: q.service.clone(),
                protocol: q.protocol.to_string(),
                operation: q.operation.clone(),
                requests: q.requests,
                errors: q.errors,
                p50: q.hist.value_at_quantile(0.50) as f64 / 1e6,
                p95: q.hist.value_at_quantile(0.95) as f64 / 1e6,
                p99: q.hist.value_at_quantile(0.99) as f64 / 1e6,
            })
            .collect();
        rows.sort_by(|a, b| (&a.service, &a.operation).cmp(&(&b.service, &b.operation)));
        rows
    }

    /// A cumulative snapshot of every RED series, at `now_ns` (capture time).
    pub fn snapshot(&self, now_ns: u64) -> MetricsSnapshot {
        let mut points = Vec::with_capacity(self.series_len * 3);
        let mut all: Vec<&Series> = self.series.values().flatten().collect();
        // Deterministic order for outputs and tests.
        all.sort_by(|a, b| {
            (
                a.key.resource,
                &a.key.operation,
                &a.key.status_code,
                a.key.error,
            )
                .cmp(&(
                    b.key.resource,
                    &b.key.operation,
                    &b.key.status_code,
                    b.key.error,
                ))
        });
        for s in all {
            let k = &s.key;
            let http = &*k.protocol == "http";
            let mut attrs = Vec::with_capacity(4);
            if http {
                attrs.push(KeyValue::str("http.request.method", k.operation.clone()));
                if let Ok(code) = k.status_code.parse::<i64>() {
                    attrs.push(KeyValue::int("http.response.status_code", code));
                }
            } else {
                attrs.push(KeyValue::str("wasmtap.operation", k.operation.clone()));
                if !k.status_code.is_empty() {
                    attrs.push(KeyValue::str("wasmtap.status_code", k.status_code.clone()));
                }
            }
            attrs.push(KeyValue::str(
                "network.protocol.name",
                k.protocol.to_string(),
            ));
            if k.error {
                attrs.push(KeyValue {
                    key: "error.type".into(),
                    value: AttrValue::Str(if k.status_code.is_empty() {
                        "no_response".into()
                    } else {
                        k.status_code.clone()
                    }),
                });
            }
            let (hist_name, hist_desc) = if http {
                (
                    "http.server.request.duration",
                    "Duration of HTTP server requests.",
                )
            } else {
                (
                    "wasmtap.server.request.duration",
                    "Duration of observed server requests.",
                )
            };
            points.push(MetricPoint {
                resource: s.resource.clone(),
                name: hist_name,
                unit: "s",
                description: hist_desc,
                attributes: attrs.clone(),
                data: MetricData::Histogram {
                    count: s.count,
                    sum: s.sum,
                    min: if s.count == 0 { 0.0 } else { s.min },
                    max: s.max,
                    bounds: self.bounds.clone(),
                    bucket_counts: s.buckets.to_vec(),
                },
            });
            points.push(MetricPoint {
                resource: s.resource.clone(),
                name: "wasmtap.server.requests",
                unit: "{request}",
                description: "Observed requests (exchanges).",
                attributes: attrs.clone(),
                data: MetricData::Sum { value: s.count },
            });
            points.push(MetricPoint {
                resource: s.resource.clone(),
                name: "wasmtap.server.errors",
                unit: "{request}",
                description: "Observed requests that failed or got no response.",
                attributes: attrs,
                data: MetricData::Sum { value: s.errors },
            });
        }
        MetricsSnapshot {
            start_unix_nano: self.start_ns.unwrap_or(now_ns),
            time_unix_nano: now_ns.max(self.last_ns),
            points,
        }
    }
}
