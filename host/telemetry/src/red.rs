//! Spans, RED metrics and the operators' indicators from exchanges; the
//! service graph and L4 metrics from flows.
//!
//! Everything is counted exactly from every exchange (metrics are never
//! sampled) and bounded: each family has a series cap with one overflow
//! series (`otel.metric.overflow = true`), and series that stopped changing
//! are dropped after a configured time. Sans-IO and clock-free.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::exchange::{Exchange, ExchangeKind, Missing, Outcome};
use crate::graph::{Edges, L4Pairs};
pub use crate::hist::DURATION_BUCKETS;
use crate::hist::{BODY_SIZE_BUCKETS, Hist, Sketch};
use crate::model::{
    AttrValue, Key, KeyValue, MetricData, MetricPoint, MetricsSnapshot, Resource, SpanKind,
    SpanRecord, StatusCode, Temporality, overflow_attr,
};
use crate::route::Router;
use crate::services::ServiceMap;

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
    pub transport: &'static str,
    /// Identifies the exchange within everything the agent reports: its
    /// flow and its place in the flow (the caller's choice). Span ids derive
    /// from it and the exchange's start time only, so the same capture gives
    /// the same ids however its flows were spread over shards.
    pub flow_id: u64,
}

/// A latency objective: exchanges of matching services and operations
/// answered within `threshold_ns` meet it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlaRule {
    /// `service.name`, or `*` for any.
    pub service: String,
    /// Operation (`GET /users/{id}`), or `None` for every operation.
    pub operation: Option<String>,
    /// Threshold, nanoseconds.
    pub threshold_ns: u64,
}

/// Limits and settings of the telemetry stage.
#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// Series per metric family (RED by service × operation × status; also
    /// the operations tracked for indicators) before new ones share the overflow series.
    pub max_series: usize,
    /// Distinct observed services.
    pub max_services: usize,
    /// Service-graph edges (client → server).
    pub max_edges: usize,
    /// L4 client/server pairs.
    pub max_l4_pairs: usize,
    /// Series unchanged for this long are dropped from export (0: never).
    pub stale_after_ns: u64,
    /// An operation or service silent for this long stops being reported
    /// (its time-since-last-call gauge ends).
    pub silence_expiry_ns: u64,
    /// Latency threshold when no SLA rule matches.
    pub sla_default_ns: u64,
    /// SLA rules; the first match wins.
    pub sla_rules: Vec<SlaRule>,
    /// Route templates for HTTP-like operations.
    pub router: Router,
    /// Cumulative or delta sums and histograms.
    pub temporality: Temporality,
    /// Span attribute keys never reported (credentials); compared in lowercase.
    pub redact_keys: Vec<String>,
    /// Spans whose caller's trace context says "not sampled" (W3C flags, B3
    /// sampled 0) are not exported; their metrics are counted as always.
    pub respect_sampled: bool,
    /// Which spans are built and handed on; metrics count every exchange.
    pub sampling: Sampling,
}

/// Span sampling: a share of traces by trace id (consistent across agents
/// and with a caller's trace), and the spans worth keeping whatever the
/// share, which the agent can tell because it sees the whole exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampling {
    /// Share of traces whose spans are kept, 0..=1 (1: every span). A span
    /// is kept when the last 56 bits of its trace id, as a number, are below
    /// `ratio` × 2^56 (the randomness OpenTelemetry's consistent samplers
    /// read), so every agent keeps or drops a trace alike.
    pub ratio: f64,
    /// Keep the spans of failed exchanges (error, no response) whatever the ratio.
    pub keep_errors: bool,
    /// Keep the spans of exchanges slower than their SLA threshold whatever the ratio.
    pub keep_sla_breaches: bool,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            ratio: 1.0,
            keep_errors: true,
            keep_sla_breaches: true,
        }
    }
}

impl Sampling {
    /// Whether a trace is in the sampled share.
    pub fn keeps_trace(&self, trace_id: &[u8; 16]) -> bool {
        if self.ratio >= 1.0 {
            return true;
        }
        let mut last = [0u8; 8];
        last[1..].copy_from_slice(&trace_id[9..]);
        let r = u64::from_be_bytes(last);
        // In integers: 56 bits do not fit an f64's mantissa.
        let threshold = (self.ratio.max(0.0) * (1u64 << 56) as f64) as u64;
        r < threshold
    }
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            max_series: 10_000,
            max_services: 10_000,
            max_edges: 10_000,
            max_l4_pairs: 10_000,
            stale_after_ns: 3_600_000_000_000,
            silence_expiry_ns: 86_400_000_000_000,
            sla_default_ns: 500_000_000,
            sla_rules: Vec::new(),
            router: Router::default(),
            temporality: Temporality::Cumulative,
            redact_keys: default_redactions(),
            respect_sampled: false,
            sampling: Sampling::default(),
        }
    }
}

/// Header attributes that never leave the agent, whatever a decoder reports.
pub fn default_redactions() -> Vec<String> {
    [
        "http.request.header.authorization",
        "http.request.header.proxy-authorization",
        "http.request.header.cookie",
        "http.response.header.set-cookie",
        "http.request.header.x-api-key",
    ]
    .map(String::from)
    .to_vec()
}

/// Outcome class of an exchange, as reported on metrics (`wasmtap.status_class`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StatusClass {
    /// Answered, no error.
    Ok,
    /// Refused for the client's reasons (HTTP 4xx): a success for the service.
    ClientError,
    /// The protocol reported a server-side error.
    Error,
    /// No response within the timeout, or before the flow ended.
    NoResponse,
}

impl StatusClass {
    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            StatusClass::Ok => "ok",
            StatusClass::ClientError => "client_error",
            StatusClass::Error => "error",
            StatusClass::NoResponse => "no_response",
        }
    }

    /// Whether this counts as a failure of the service.
    pub fn is_error(self) -> bool {
        matches!(self, StatusClass::Error | StatusClass::NoResponse)
    }
}

/// Which duration instrument a protocol uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Http,
    Db(&'static str),
    Messaging(&'static str),
    Rpc,
    Tls,
    Dns,
    Other,
}

fn family(protocol: &str) -> Family {
    match protocol {
        "http" => Family::Http,
        "redis" => Family::Db("redis"),
        "mysql" => Family::Db("mysql"),
        "pgsql" | "postgresql" => Family::Db("postgresql"),
        "mongodb" => Family::Db("mongodb"),
        "memcached" => Family::Db("memcached"),
        "kafka" => Family::Messaging("kafka"),
        "grpc" => Family::Rpc,
        "tls" => Family::Tls,
        "amqp" => Family::Messaging("rabbitmq"),
        "dns" => Family::Dns,
        _ => Family::Other,
    }
}

/// `connection_type` of a service-graph edge, as the collector's connector names it.
pub fn connection_type(protocol: &str) -> &'static str {
    match family(protocol) {
        Family::Db(_) => "database",
        Family::Messaging(_) => "messaging_system",
        _ => match protocol {
            "mqtt" | "nats" => "messaging_system",
            _ => "",
        },
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    resource: u64,
    protocol: Arc<str>,
    operation: Arc<str>,
    status_code: String,
    class: StatusClass,
    /// The server endpoint, for database metrics (`server.address`/`server.port`).
    endpoint: Option<SocketAddr>,
    /// A protocol's own series dimension (TLS: version and cipher).
    detail: String,
    overflow: bool,
}

impl SeriesKey {
    fn is(&self, k: &LookupKey<'_>) -> bool {
        self.resource == k.resource
            && self.class == k.class
            && self.overflow == k.overflow
            && self.endpoint == k.endpoint
            && *self.protocol == *k.protocol
            && *self.operation == *k.operation
            && self.status_code == k.status_code
            && self.detail == k.detail
    }
}

#[derive(Hash)]
struct LookupKey<'a> {
    resource: u64,
    protocol: &'a str,
    operation: &'a str,
    status_code: &'a str,
    class: StatusClass,
    endpoint: Option<SocketAddr>,
    detail: &'a str,
    overflow: bool,
}

struct Series {
    key: SeriesKey,
    resource: Arc<Resource>,
    /// Protocol-specific attributes, made once.
    attrs: Vec<KeyValue>,
    requests: u64,
    errors: u64,
    responses: u64,
    unanswered: u64,
    sla_met: u64,
    duration: Hist,
    request_body: Option<Hist>,
    response_body: Option<Hist>,
    /// The earliest exchange's start since the last reset (order-independent:
    /// shards report in any order), never before `floor_ns`.
    start_ns: u64,
    /// The last reset (delta temporality).
    floor_ns: u64,
    updated_ns: u64,
}

/// Per operation: the indicators and the console's quantiles.
struct OpState {
    resource: Arc<Resource>,
    protocol: Arc<str>,
    operation: Arc<str>,
    overflow: bool,
    threshold_ns: u64,
    requests: u64,
    errors: u64,
    responses: u64,
    unanswered: u64,
    sla_met: u64,
    consecutive_failures: u64,
    last_call_ns: u64,
    /// Counters at the previous snapshot (interval gauges).
    prev: [u64; 5],
    hist: Sketch,
}

/// Per service: consecutive failures and silence.
struct ServiceState {
    resource: Arc<Resource>,
    consecutive_failures: u64,
    last_call_ns: u64,
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
    /// Requests per second over the capture so far.
    pub tps: f64,
    /// Share of exchanges that did not fail, 0..1.
    pub success_rate: f64,
    /// Share of requests that got a response, 0..1 (1 when none expected one).
    pub response_rate: f64,
    /// Share of requests answered within the SLA threshold, 0..1.
    pub sla_rate: f64,
    /// Failures since the last success.
    pub consecutive_failures: u64,
    /// Seconds of capture time since the last call.
    pub since_last_call: f64,
    /// Median duration, seconds.
    pub p50: f64,
    /// 95th percentile, seconds.
    pub p95: f64,
    /// 99th percentile, seconds.
    pub p99: f64,
}

/// Counters of the telemetry stage (cardinality control).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TelemetryStats {
    /// Exchanges recorded in an overflow series because of the series cap.
    pub series_overflowed: u64,
    /// Endpoints reported as the overflow service (`max_services`).
    pub services_overflowed: u64,
    /// Calls recorded on the overflow edge (`max_edges`).
    pub edges_overflowed: u64,
    /// Flows recorded on the overflow L4 pair (`max_l4_pairs`).
    pub l4_overflowed: u64,
    /// Series dropped from export because they stopped changing.
    pub stale_dropped: u64,
    /// Span attributes removed by redaction.
    pub redacted: u64,
    /// Spans not exported because the caller did not sample its trace
    /// (`respect_sampled`).
    pub unsampled: u64,
    /// Spans not built because sampling left their trace out
    /// ([`Sampling`]); their exchanges count in metrics as always.
    pub sampled_out: u64,
    /// Series held now (RED, operations, services, edges, L4 pairs).
    pub series_held: u64,
    /// Calls (and flows) left to the agent beside the server
    /// ([`crate::services::Locality`]).
    pub reported_elsewhere: u64,
    /// Address-to-name mappings learned from DNS answers.
    pub dns_names_learned: u64,
    /// DNS mappings not kept because the name table was full.
    pub dns_names_dropped: u64,
    /// Addresses the DNS name table holds now.
    pub dns_names_held: u64,
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
    http_route: Key,
    one_way: Key,
    response_missing: Key,
    http_request_method: Key,
    http_response_status_code: Key,
    db_system_name: Key,
    db_operation_name: Key,
    db_response_status_code: Key,
    messaging_system: Key,
    messaging_operation_name: Key,
    capture_incomplete: Key,
    capture_one_sided: Key,
    rpc_system: Key,
    rpc_service: Key,
    rpc_method: Key,
    rpc_grpc_status_code: Key,
    tls_version: Key,
    tls_cipher: Key,
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
            http_route: Key::from("http.route"),
            one_way: Key::from("wasmtap.one_way"),
            response_missing: Key::from("wasmtap.response_missing"),
            http_request_method: Key::from("http.request.method"),
            http_response_status_code: Key::from("http.response.status_code"),
            db_system_name: Key::from("db.system.name"),
            db_operation_name: Key::from("db.operation.name"),
            db_response_status_code: Key::from("db.response.status_code"),
            messaging_system: Key::from("messaging.system"),
            messaging_operation_name: Key::from("messaging.operation.name"),
            capture_incomplete: Key::from("wasmtap.capture.incomplete"),
            capture_one_sided: Key::from("wasmtap.capture.one_sided"),
            rpc_system: Key::from("rpc.system"),
            rpc_service: Key::from("rpc.service"),
            rpc_method: Key::from("rpc.method"),
            rpc_grpc_status_code: Key::from("rpc.grpc.status_code"),
            tls_version: Key::from("tls.protocol.version"),
            tls_cipher: Key::from("tls.cipher"),
        }
    }
}

type Buckets<T> = HashMap<u64, Vec<T>, foldhash::fast::FixedState>;

/// Turns exchanges into spans and aggregates RED metrics, indicators, the
/// service graph and L4 metrics.
pub struct Telemetry {
    keys: HostKeys,
    services: ServiceMap,
    cfg: TelemetryConfig,
    /// Series by a hash of their key; collisions live side by side in the bucket.
    series: Buckets<Series>,
    series_len: usize,
    ops: Buckets<OpState>,
    ops_len: usize,
    svcs: HashMap<u64, ServiceState, foldhash::fast::FixedState>,
    edges: Edges,
    l4: L4Pairs,
    hasher: foldhash::fast::FixedState,
    stats: TelemetryStats,
    start_ns: Option<u64>,
    last_ns: u64,
    /// Time of the previous snapshot (interval gauges, delta start).
    prev_snapshot_ns: Option<u64>,
    dur_bounds: Arc<[f64]>,
    body_bounds: Arc<[f64]>,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The attribute a decoder reports the caller's trace context in (W3C form).
const TRACE_PARENT: &str = "wasmtap.trace.parent";
/// The attribute of the `tracestate` that came with it.
const TRACE_STATE: &str = "wasmtap.trace.state";

/// `00-<trace id>-<span id>-<flags>` into its trace and span ids.
fn parse_traceparent(tp: &str) -> Option<([u8; 16], [u8; 8])> {
    let mut parts = tp.split('-');
    let (_version, trace, span) = (parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, out: &mut [u8]| -> Option<()> {
        if s.len() != out.len() * 2 {
            return None;
        }
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(())
    };
    let (mut t, mut p) = ([0u8; 16], [0u8; 8]);
    hex(trace, &mut t)?;
    hex(span, &mut p)?;
    (t != [0; 16] && p != [0; 8]).then_some((t, p))
}

fn attr_str<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|kv| &*kv.key == key)
        .and_then(|kv| match &kv.value {
            AttrValue::Str(s) => Some(s.as_str()),
            _ => None,
        })
}

fn attr_int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    attrs
        .iter()
        .find(|kv| &*kv.key == key)
        .and_then(|kv| match &kv.value {
            AttrValue::Int(i) => Some(*i),
            _ => None,
        })
}

/// The operation of overflowed series.
pub const OVERFLOW_OPERATION: &str = "_OTHER";

impl Telemetry {
    /// Creates the stage.
    pub fn new(services: ServiceMap, cfg: TelemetryConfig) -> Self {
        let services = services.with_max_services(cfg.max_services);
        Self {
            keys: HostKeys::new(),
            services,
            edges: Edges::new(cfg.max_edges),
            l4: L4Pairs::new(cfg.max_l4_pairs),
            cfg,
            series: HashMap::default(),
            series_len: 0,
            ops: HashMap::default(),
            ops_len: 0,
            svcs: HashMap::default(),
            hasher: foldhash::fast::FixedState::with_seed(0x7761_736d_7461_7021),
            stats: TelemetryStats::default(),
            start_ns: None,
            last_ns: 0,
            prev_snapshot_ns: None,
            dur_bounds: Arc::from(DURATION_BUCKETS.as_slice()),
            body_bounds: Arc::from(BODY_SIZE_BUCKETS.as_slice()),
        }
    }

    /// Exchanges that went to an overflow series because of the series cap.
    pub fn overflowed(&self) -> u64 {
        self.stats.series_overflowed
    }

    /// The stage's counters.
    pub fn stats(&self) -> TelemetryStats {
        let mut s = self.stats.clone();
        s.services_overflowed = self.services.overflowed;
        s.reported_elsewhere = self.services.reported_elsewhere;
        if let Some(d) = self.services.dns_stats() {
            s.dns_names_learned = d.learned;
            s.dns_names_dropped = d.dropped;
            s.dns_names_held = d.held;
        }
        s.edges_overflowed = self.edges.overflowed;
        s.l4_overflowed = self.l4.overflowed;
        s.stale_dropped += self.edges.stale_dropped + self.l4.stale_dropped;
        s.series_held = (self.series_len + self.ops_len + self.svcs.len()) as u64
            + self.edges.len() as u64
            + self.l4.len() as u64;
        s
    }

    fn threshold(&self, service: &str, operation: &str) -> u64 {
        self.cfg
            .sla_rules
            .iter()
            .find(|r| {
                (r.service == "*" || r.service == service)
                    && r.operation.as_deref().is_none_or(|o| o == operation)
            })
            .map_or(self.cfg.sla_default_ns, |r| r.threshold_ns)
    }

    /// A flow was opened (L4 metrics).
    pub fn flow_opened(
        &mut self,
        client: SocketAddr,
        server: SocketAddr,
        transport: &str,
        ts_ns: u64,
    ) {
        if !self
            .services
            .reports(client.ip(), server.ip(), server.port(), ts_ns)
        {
            return;
        }
        let resource = self.services.resolve(server.ip(), server.port(), ts_ns);
        let client = self.services.client_name(client.ip(), ts_ns);
        self.l4.opened(&resource, client, transport, ts_ns);
    }

    /// A flow ended (L4 metrics): its final counters.
    pub fn flow_closed(&mut self, f: &crate::graph::FlowEnd<'_>) {
        self.last_ns = self.last_ns.max(f.end_ns);
        let ts = f.start_ns;
        if !self
            .services
            .reports(f.client.ip(), f.server.ip(), f.server.port(), ts)
        {
            return;
        }
        let resource = self.services.resolve(f.server.ip(), f.server.port(), ts);
        let client = self.services.client_name(f.client.ip(), ts);
        self.l4.closed(&resource, client, f);
    }

    /// A DNS answer's addresses (`wasmtap.dns.answers`, `wasmtap.dns.ttl`,
    /// the question's `dns.question.name`) teach the service map a name.
    fn learn_dns(&mut self, request: &[KeyValue], response: &[KeyValue], ts_ns: u64) {
        let (Some(list), Some(AttrValue::Int(ttl))) = (
            attr_str(response, "wasmtap.dns.answers"),
            response
                .iter()
                .find(|kv| &*kv.key == "wasmtap.dns.ttl")
                .map(|kv| &kv.value),
        ) else {
            return;
        };
        let Some(name) = attr_str(response, "dns.question.name")
            .or_else(|| attr_str(request, "dns.question.name"))
        else {
            return;
        };
        let mut addrs = [std::net::IpAddr::from([0u8; 4]); 16];
        let mut n = 0;
        for a in list.split(' ').filter_map(|a| a.parse().ok()) {
            if n == addrs.len() {
                break;
            }
            addrs[n] = a;
            n += 1;
        }
        let ttl = u32::try_from(*ttl).unwrap_or(0);
        self.services.learn_dns(name, &addrs[..n], ttl, ts_ns);
    }

    /// Records one exchange: updates metrics and, when `want_span`, returns its span
    /// (building a span is most of the cost, so outputs that need none skip it).
    pub fn record(
        &mut self,
        mut ex: Exchange,
        ctx: &FlowCtx<'_>,
        want_span: bool,
    ) -> Option<SpanRecord> {
        let start = ex.start_ns();
        let end = ex.end_ns().max(start);
        if let Some(r) = &ex.response
            && self.services.learns_dns()
        {
            self.learn_dns(&ex.request.attributes, &r.attributes, end);
        }
        if !self
            .services
            .reports(ctx.client.ip(), ctx.server.ip(), ctx.server.port(), start)
        {
            return None;
        }
        let resource = self
            .services
            .resolve(ctx.server.ip(), ctx.server.port(), start);
        self.start_ns = Some(self.start_ns.map_or(start, |s| s.min(start)));
        self.last_ns = self.last_ns.max(end);
        let cut = matches!(ex.kind, ExchangeKind::Cut(_));
        let (class, status_message, status_code) = match (&ex.kind, &ex.response) {
            (ExchangeKind::Unanswered, _) => (
                StatusClass::NoResponse,
                "no response".to_string(),
                String::new(),
            ),
            (_, Some(r)) if r.status == Outcome::Error => (
                StatusClass::Error,
                r.status_code.clone(),
                r.status_code.clone(),
            ),
            (_, Some(r)) => {
                // The client's outcome, a success of the service: an HTTP 4xx,
                // or a business refusal a decoder reports as `*.outcome = declined`
                // (a card decline).
                let client = (ctx.protocol == "http" && r.status_code.starts_with('4'))
                    || r.attributes.iter().any(|kv| {
                        kv.key.ends_with(".outcome")
                            && matches!(&kv.value, AttrValue::Str(v) if v == "declined")
                    });
                let class = if client {
                    StatusClass::ClientError
                } else {
                    StatusClass::Ok
                };
                (class, String::new(), r.status_code.clone())
            }
            (_, None) if ex.request.status == Outcome::Error => (
                StatusClass::Error,
                ex.request.status_code.clone(),
                ex.request.status_code.clone(),
            ),
            (_, None) => (
                StatusClass::Ok,
                String::new(),
                ex.request.status_code.clone(),
            ),
        };
        // HTTP-like operations: the method plus the route template.
        let route = match attr_str(&ex.request.attributes, "url.path") {
            Some(p) if !ex.request.operation.contains(' ') => Some(self.cfg.router.route(p)),
            _ => None,
        };
        let operation: String = match (&route, ex.request.operation.is_empty()) {
            (Some(r), true) => r.clone(),
            (Some(r), false) => {
                let mut op = String::with_capacity(ex.request.operation.len() + 1 + r.len());
                op.push_str(&ex.request.operation);
                op.push(' ');
                op.push_str(r);
                op
            }
            (None, true) => ctx.protocol.to_string(),
            (None, false) => std::mem::take(&mut ex.request.operation),
        };
        let duration_ns = end - start;
        let answered = ex.kind == ExchangeKind::Complete;
        let one_way = ex.kind == ExchangeKind::OneWay;
        if cut {
            // Not the service's outcome: no metrics; a span for the record.
            if !want_span {
                return None;
            }
        } else {
            self.record_metrics(
                &resource,
                ctx,
                &operation,
                route.as_deref(),
                &status_code,
                class,
                &ex,
                duration_ns,
                answered,
                one_way,
                end,
            );
        }
        if !want_span {
            return None;
        }
        self.span(
            ex,
            ctx,
            resource,
            operation,
            route,
            class,
            status_message,
            start,
            end,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn record_metrics(
        &mut self,
        resource: &Arc<Resource>,
        ctx: &FlowCtx<'_>,
        operation: &str,
        route: Option<&str>,
        status_code: &str,
        class: StatusClass,
        ex: &Exchange,
        duration_ns: u64,
        answered: bool,
        one_way: bool,
        end: u64,
    ) {
        let error = class.is_error();
        self.observe(
            resource,
            ctx,
            operation,
            route,
            status_code,
            class,
            ex,
            duration_ns,
            answered,
            one_way,
        );
        let client_name = self
            .services
            .client_name(ctx.client.ip(), end - duration_ns);
        self.edges.record(
            resource,
            client_name,
            connection_type(ctx.protocol),
            error,
            duration_ns as f64 / 1e9,
            end,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &mut self,
        ex: Exchange,
        ctx: &FlowCtx<'_>,
        resource: Arc<Resource>,
        operation: String,
        route: Option<String>,
        class: StatusClass,
        status_message: String,
        start: u64,
        end: u64,
    ) -> Option<SpanRecord> {
        let error = class.is_error();
        let a = splitmix(ctx.flow_id ^ splitmix(start));
        let b = splitmix(a ^ 0x5eed_0f5a_4e00_u64);
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&a.to_be_bytes());
        trace_id[8..].copy_from_slice(&b.to_be_bytes());
        // Sampling is decided before the span is built: building is the cost.
        let s = &self.cfg.sampling;
        if s.ratio < 1.0
            && !(s.keep_errors && error)
            && !(s.keep_sla_breaches
                && end - start > self.threshold(resource.service_name(), &operation))
        {
            let callers = attr_str(&ex.request.attributes, TRACE_PARENT)
                .and_then(parse_traceparent)
                .map(|(t, _)| t);
            if !s.keeps_trace(callers.as_ref().unwrap_or(&trace_id)) {
                self.stats.sampled_out += 1;
                return None;
            }
        }

        let mut attributes = Vec::with_capacity(
            9 + ex.request.attributes.len()
                + ex.response.as_ref().map_or(0, |r| r.attributes.len()),
        );
        let Exchange {
            request,
            response,
            kind,
        } = ex;
        attributes.extend(request.attributes);
        if let Some(r) = response {
            // Keys are unique on a span: a key both sides set takes the
            // response's value.
            if !attributes.is_empty() {
                attributes.retain(|kv| !r.attributes.iter().any(|x| x.key == kv.key));
            }
            attributes.extend(r.attributes);
        }
        if !self.cfg.redact_keys.is_empty() {
            let before = attributes.len();
            let redact = &self.cfg.redact_keys;
            attributes.retain(|kv| {
                !redact
                    .iter()
                    .any(|r| kv.key.len() == r.len() && kv.key.eq_ignore_ascii_case(r))
            });
            self.stats.redacted += (before - attributes.len()) as u64;
        }
        let k = &self.keys;
        match kind {
            ExchangeKind::Unanswered => {
                attributes.push(KeyValue::str(k.error_type.clone(), "no_response"));
            }
            ExchangeKind::OneWay => attributes.push(KeyValue {
                key: k.one_way.clone(),
                value: AttrValue::Bool(true),
            }),
            ExchangeKind::Cut(why) => {
                attributes.push(KeyValue::str(k.response_missing.clone(), why.as_str()));
                match why {
                    Missing::CaptureGap => attributes.push(KeyValue {
                        key: k.capture_incomplete.clone(),
                        value: AttrValue::Bool(true),
                    }),
                    Missing::OneSided => attributes.push(KeyValue {
                        key: k.capture_one_sided.clone(),
                        value: AttrValue::Bool(true),
                    }),
                    Missing::CaptureEnd => {}
                }
            }
            ExchangeKind::Complete => {}
        }
        if let Some(r) = route {
            attributes.push(KeyValue::str(k.http_route.clone(), r));
        }
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

        let span_id = splitmix(b).to_be_bytes();
        // The caller's trace context (a decoder reports it in the W3C
        // form): the span joins that trace, as the caller's child.
        let mut parent_span_id = None;
        let mut trace_state = String::new();
        if attributes
            .iter()
            .any(|kv| &*kv.key == TRACE_PARENT || &*kv.key == TRACE_STATE)
        {
            let tp = attr_str(&attributes, TRACE_PARENT);
            if self.cfg.respect_sampled && tp.is_some_and(|t| t.ends_with("-00")) {
                self.stats.unsampled += 1;
                return None;
            }
            let parent = tp.and_then(parse_traceparent);
            if let Some((t, p)) = parent {
                trace_id = t;
                parent_span_id = Some(p);
                trace_state = attr_str(&attributes, TRACE_STATE)
                    .unwrap_or_default()
                    .to_string();
            }
            attributes.retain(|kv| &*kv.key != TRACE_PARENT && &*kv.key != TRACE_STATE);
        }
        Some(SpanRecord {
            trace_id,
            span_id,
            parent_span_id,
            trace_state,
            name: operation,
            kind: SpanKind::Server,
            start_unix_nano: start,
            end_unix_nano: end,
            status: if error {
                StatusCode::Error
            } else {
                StatusCode::Unset
            },
            status_message,
            attributes,
            resource,
        })
    }

    /// Protocol-specific metric attributes of a new series.
    fn series_attrs(
        k: &HostKeys,
        fam: Family,
        ctx: &FlowCtx<'_>,
        operation: &str,
        route: Option<&str>,
        status_code: &str,
        ex: &Exchange,
    ) -> Vec<KeyValue> {
        // Keys are shared (no allocation); the vector is sized exactly.
        let mut attrs = Vec::new();
        match fam {
            Family::Http => {
                let method =
                    attr_str(&ex.request.attributes, "http.request.method").unwrap_or("_OTHER");
                attrs.reserve_exact(3);
                attrs.push(KeyValue::str(k.http_request_method.clone(), method));
                if let Some(r) = route {
                    attrs.push(KeyValue::str(k.http_route.clone(), r));
                }
                if let Ok(code) = status_code.parse::<i64>() {
                    attrs.push(KeyValue::int(k.http_response_status_code.clone(), code));
                }
            }
            Family::Db(system) => {
                attrs.reserve_exact(5);
                attrs.push(KeyValue::str(k.db_system_name.clone(), system));
                attrs.push(KeyValue::str(k.db_operation_name.clone(), operation));
                attrs.push(KeyValue::str(
                    k.server_address.clone(),
                    ctx.server.ip().to_string(),
                ));
                attrs.push(KeyValue::int(
                    k.server_port.clone(),
                    i64::from(ctx.server.port()),
                ));
                if !status_code.is_empty() {
                    attrs.push(KeyValue::str(
                        k.db_response_status_code.clone(),
                        status_code,
                    ));
                }
            }
            Family::Messaging(system) => {
                attrs.reserve_exact(5);
                attrs.push(KeyValue::str(k.messaging_system.clone(), system));
                attrs.push(KeyValue::str(k.messaging_operation_name.clone(), operation));
                attrs.push(KeyValue::str(
                    k.server_address.clone(),
                    ctx.server.ip().to_string(),
                ));
                attrs.push(KeyValue::int(
                    k.server_port.clone(),
                    i64::from(ctx.server.port()),
                ));
                if !status_code.is_empty() && status_code != "0" {
                    attrs.push(KeyValue::str(k.error_type.clone(), status_code));
                }
            }
            Family::Rpc => {
                attrs.reserve_exact(4);
                attrs.push(KeyValue::str(k.rpc_system.clone(), "grpc"));
                for key in [&k.rpc_service, &k.rpc_method] {
                    if let Some(v) = attr_str(&ex.request.attributes, key) {
                        attrs.push(KeyValue::str(key.clone(), v));
                    }
                }
                if let Ok(code) = status_code.parse::<i64>() {
                    attrs.push(KeyValue::int(k.rpc_grpc_status_code.clone(), code));
                }
            }
            Family::Tls => {
                let r = ex
                    .response
                    .as_ref()
                    .map(|r| r.attributes.as_slice())
                    .unwrap_or_default();
                attrs.reserve_exact(3);
                for key in [&k.tls_version, &k.tls_cipher] {
                    if let Some(v) = attr_str(r, key) {
                        attrs.push(KeyValue::str(key.clone(), v));
                    }
                }
                if let Some(v) = attr_str(r, "error.type") {
                    attrs.push(KeyValue::str(k.error_type.clone(), v));
                }
            }
            Family::Dns | Family::Other => {}
        }
        attrs
    }

    #[allow(clippy::too_many_arguments)]
    fn observe(
        &mut self,
        resource: &Arc<Resource>,
        ctx: &FlowCtx<'_>,
        operation: &str,
        route: Option<&str>,
        status_code: &str,
        class: StatusClass,
        ex: &Exchange,
        nanos: u64,
        answered: bool,
        one_way: bool,
    ) {
        // gRPC rides on HTTP/2: its calls get the RPC instrument and series.
        let protocol = if ctx.protocol == "http"
            && attr_str(&ex.request.attributes, "rpc.system") == Some("grpc")
        {
            "grpc"
        } else {
            ctx.protocol
        };
        let error = class.is_error();
        let secs = nanos as f64 / 1e9;
        let end = ex.end_ns().max(ex.start_ns());
        // The protocol's instrument family, once per exchange.
        let fam = family(protocol);
        let by_server = matches!(fam, Family::Db(_) | Family::Messaging(_));

        // The operation's indicators (their own cap: overflow operation).
        let service = resource.service_name();
        let mut op_key = (resource.id, protocol, operation, false);
        let mut oh = self.hasher.hash_one(op_key);
        let known_op = self.ops.get(&oh).is_some_and(|b| {
            b.iter()
                .any(|o| o.resource.id == resource.id && *o.operation == *operation && !o.overflow)
        });
        if !known_op && self.ops_len >= self.cfg.max_series {
            op_key = (resource.id, protocol, OVERFLOW_OPERATION, true);
            oh = self.hasher.hash_one(op_key);
        }
        // Rules are looked up once per operation, when it is first seen.
        let threshold = if known_op {
            0
        } else {
            self.threshold(service, op_key.2)
        };
        // Collisions are rare: a bucket starts with room for one.
        let bucket = self.ops.entry(oh).or_insert_with(|| Vec::with_capacity(1));
        let oi = match bucket.iter().position(|o| {
            o.resource.id == op_key.0
                && *o.protocol == *op_key.1
                && *o.operation == *op_key.2
                && o.overflow == op_key.3
        }) {
            Some(i) => i,
            None => {
                bucket.push(OpState {
                    resource: resource.clone(),
                    protocol: Arc::from(protocol),
                    operation: Arc::from(op_key.2),
                    overflow: op_key.3,
                    threshold_ns: threshold,
                    requests: 0,
                    errors: 0,
                    responses: 0,
                    unanswered: 0,
                    sla_met: 0,
                    consecutive_failures: 0,
                    last_call_ns: 0,
                    prev: [0; 5],
                    hist: Sketch::default(),
                });
                self.ops_len += 1;
                bucket.len() - 1
            }
        };
        let Some(op) = bucket.get_mut(oi) else {
            return;
        };
        let met = answered && nanos <= op.threshold_ns;
        op.requests += 1;
        op.errors += u64::from(error);
        op.responses += u64::from(answered);
        op.unanswered += u64::from(class == StatusClass::NoResponse);
        op.sla_met += u64::from(met);
        if !one_way {
            op.consecutive_failures = if error {
                op.consecutive_failures + 1
            } else {
                0
            };
        }
        op.last_call_ns = op.last_call_ns.max(ex.start_ns());
        op.hist.record(nanos);
        let op_overflow = op.overflow;
        let (op_protocol, op_operation) = (op.protocol.clone(), op.operation.clone());
        let operation: &str = if op_overflow {
            OVERFLOW_OPERATION
        } else {
            operation
        };

        let svc = self
            .svcs
            .entry(resource.id)
            .or_insert_with(|| ServiceState {
                resource: resource.clone(),
                consecutive_failures: 0,
                last_call_ns: 0,
            });
        if !one_way {
            svc.consecutive_failures = if error {
                svc.consecutive_failures + 1
            } else {
                0
            };
        }
        svc.last_call_ns = svc.last_call_ns.max(ex.start_ns());

        // RED series.
        // TLS handshakes are counted per negotiated version and cipher.
        let detail_buf;
        let detail = if fam == Family::Tls {
            let r = ex
                .response
                .as_ref()
                .map(|r| r.attributes.as_slice())
                .unwrap_or_default();
            detail_buf = format!(
                "{}|{}",
                attr_str(r, "tls.protocol.version").unwrap_or_default(),
                attr_str(r, "tls.cipher").unwrap_or_default()
            );
            detail_buf.as_str()
        } else {
            ""
        };
        let mut key = LookupKey {
            resource: resource.id,
            protocol,
            operation,
            status_code,
            class,
            endpoint: by_server.then_some(ctx.server),
            detail,
            overflow: op_overflow,
        };
        let mut h = self.hasher.hash_one(&key);
        let known = self
            .series
            .get(&h)
            .is_some_and(|b| b.iter().any(|s| s.key.is(&key)));
        if !known && (op_overflow || self.series_len >= self.cfg.max_series) {
            // Cardinality cap: new combinations share one overflow series.
            self.stats.series_overflowed += 1;
            key = LookupKey {
                resource: resource.id,
                protocol,
                operation: OVERFLOW_OPERATION,
                status_code: "",
                class: if error {
                    StatusClass::Error
                } else {
                    StatusClass::Ok
                },
                endpoint: None,
                detail: "",
                overflow: true,
            };
            h = self.hasher.hash_one(&key);
        }
        let http = fam == Family::Http;
        let bucket = self
            .series
            .entry(h)
            .or_insert_with(|| Vec::with_capacity(1));
        let idx = match bucket.iter().position(|s| s.key.is(&key)) {
            Some(i) => i,
            None => {
                let attrs = if key.overflow {
                    Vec::new()
                } else {
                    Self::series_attrs(&self.keys, fam, ctx, operation, route, status_code, ex)
                };
                bucket.push(Series {
                    key: SeriesKey {
                        resource: key.resource,
                        protocol: op_protocol,
                        operation: if *op_operation == *key.operation {
                            op_operation
                        } else {
                            Arc::from(key.operation)
                        },
                        status_code: key.status_code.to_string(),
                        class: key.class,
                        endpoint: key.endpoint,
                        detail: key.detail.to_string(),
                        overflow: key.overflow,
                    },
                    resource: resource.clone(),
                    attrs,
                    requests: 0,
                    errors: 0,
                    responses: 0,
                    unanswered: 0,
                    sla_met: 0,
                    duration: Hist::new(self.dur_bounds.clone()),
                    request_body: http.then(|| Hist::new(self.body_bounds.clone())),
                    response_body: http.then(|| Hist::new(self.body_bounds.clone())),
                    start_ns: ex.start_ns(),
                    floor_ns: 0,
                    updated_ns: end,
                });
                self.series_len += 1;
                bucket.len() - 1
            }
        };
        let Some(s) = bucket.get_mut(idx) else {
            return;
        };
        s.start_ns = s.start_ns.min(ex.start_ns()).max(s.floor_ns);
        s.requests += 1;
        s.errors += u64::from(error);
        s.responses += u64::from(answered);
        s.unanswered += u64::from(class == StatusClass::NoResponse);
        s.sla_met += u64::from(met);
        s.duration.record(secs);
        s.updated_ns = s.updated_ns.max(end);
        if let Some(b) = &mut s.request_body
            && let Some(v) = attr_int(&ex.request.attributes, "http.request.body.size")
        {
            b.record(v as f64);
        }
        if let (Some(b), Some(r)) = (&mut s.response_body, &ex.response)
            && let Some(v) = attr_int(&r.attributes, "http.response.body.size")
        {
            b.record(v as f64);
        }
    }

    /// The console summary rows at `now_ns` (capture time), sorted by service then operation.
    pub fn summary(&self, now_ns: u64) -> Vec<SummaryRow> {
        let now = now_ns.max(self.last_ns);
        let window = now.saturating_sub(self.start_ns.unwrap_or(now)) as f64 / 1e9;
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        let mut rows: Vec<SummaryRow> = self
            .ops
            .values()
            .flatten()
            .map(|q| SummaryRow {
                service: q.resource.service_name().to_string(),
                protocol: q.protocol.to_string(),
                operation: q.operation.to_string(),
                requests: q.requests,
                errors: q.errors,
                tps: q.requests as f64 / window.max(1.0),
                success_rate: ratio(q.requests - q.errors, q.requests),
                response_rate: ratio(q.responses, q.responses + q.unanswered),
                sla_rate: ratio(q.sla_met, q.responses + q.unanswered),
                consecutive_failures: q.consecutive_failures,
                since_last_call: now.saturating_sub(q.last_call_ns) as f64 / 1e9,
                p50: q.hist.quantile(0.50) / 1e9,
                p95: q.hist.quantile(0.95) / 1e9,
                p99: q.hist.quantile(0.99) / 1e9,
            })
            .collect();
        rows.sort_by(|a, b| (&a.service, &a.operation).cmp(&(&b.service, &b.operation)));
        rows
    }

    /// The service-graph edges, for the console.
    pub fn edge_summary(&self) -> Vec<crate::graph::EdgeRow> {
        self.edges.summary()
    }

    /// A snapshot of every metric at `now_ns` (capture time). Interval
    /// gauges cover the time since the previous snapshot; with delta
    /// temporality, sums and histograms restart after it. Series unchanged
    /// for `stale_after_ns` and operations silent for `silence_expiry_ns`
    /// are dropped here (counted).
    pub fn snapshot(&mut self, now_ns: u64) -> MetricsSnapshot {
        self.collect(now_ns, true)
    }

    /// The last snapshot, at the end of a replay or capture: as
    /// [`Telemetry::snapshot`], but nothing expires (a capture file's
    /// totals and indicators stay whole however long it spans).
    pub fn final_snapshot(&mut self, now_ns: u64) -> MetricsSnapshot {
        self.collect(now_ns, false)
    }

    fn collect(&mut self, now_ns: u64, drop_stale: bool) -> MetricsSnapshot {
        let now = now_ns.max(self.last_ns);
        let start = self.start_ns.unwrap_or(now);
        let delta = self.cfg.temporality == Temporality::Delta;
        let interval_start = self.prev_snapshot_ns.unwrap_or(start);
        let mut points = Vec::with_capacity(self.series_len * 5 + self.ops_len * 6);
        self.expire(now, drop_stale);

        let mut all: Vec<&mut Series> = self.series.values_mut().flatten().collect();
        // Deterministic order for outputs and tests.
        all.sort_by(|a, b| {
            let k = |s: &Series| {
                (
                    s.key.resource,
                    s.key.operation.clone(),
                    s.key.status_code.clone(),
                    s.key.class,
                    s.key.endpoint,
                    s.key.overflow,
                )
            };
            k(a).cmp(&k(b))
        });
        for s in all {
            if delta && s.requests == 0 {
                continue;
            }
            let k = &s.key;
            let mut common = Vec::with_capacity(5);
            if k.overflow {
                common.push(overflow_attr());
            } else {
                common.push(KeyValue::str("wasmtap.operation", k.operation.to_string()));
                common.push(KeyValue::str(
                    "network.protocol.name",
                    k.protocol.to_string(),
                ));
                common.push(KeyValue::str("wasmtap.status_class", k.class.as_str()));
                if !k.status_code.is_empty() {
                    common.push(KeyValue::str("wasmtap.status_code", k.status_code.clone()));
                }
                if k.class.is_error() {
                    common.push(KeyValue::str(
                        "error.type",
                        if k.status_code.is_empty() {
                            "no_response".to_string()
                        } else {
                            k.status_code.clone()
                        },
                    ));
                }
            }
            let start_ns = s.start_ns;
            let point = |name: &'static str,
                         unit: &'static str,
                         description: &'static str,
                         attributes: Vec<KeyValue>,
                         data: MetricData| MetricPoint {
                resource: s.resource.clone(),
                name,
                unit,
                description,
                attributes,
                data,
                start_unix_nano: start_ns,
            };
            let (hist_name, hist_desc) = match family(&k.protocol) {
                Family::Http => (
                    "http.server.request.duration",
                    "Duration of HTTP server requests.",
                ),
                Family::Db(_) => (
                    "db.client.operation.duration",
                    "Duration of database client operations, observed on the wire.",
                ),
                Family::Rpc => ("rpc.server.call.duration", "Duration of RPC calls served."),
                Family::Tls => (
                    "wasmtap.tls.handshake.duration",
                    "Duration of TLS handshakes: ClientHello to the outcome.",
                ),
                Family::Messaging(_) => (
                    "messaging.client.operation.duration",
                    "Duration of messaging operations, observed on the wire.",
                ),
                Family::Dns => ("dns.lookup.duration", "Duration of DNS lookups."),
                Family::Other => (
                    "wasmtap.server.request.duration",
                    "Duration of observed server requests.",
                ),
            };
            let mut hist_attrs = common.clone();
            hist_attrs.extend(s.attrs.iter().cloned());
            points.push(point(
                hist_name,
                "s",
                hist_desc,
                hist_attrs.clone(),
                s.duration.data(),
            ));
            if let Some(b) = &s.request_body {
                points.push(point(
                    "http.server.request.body.size",
                    "By",
                    "Size of HTTP server request bodies.",
                    hist_attrs.clone(),
                    b.data(),
                ));
            }
            if let Some(b) = &s.response_body {
                points.push(point(
                    "http.server.response.body.size",
                    "By",
                    "Size of HTTP server response bodies.",
                    hist_attrs,
                    b.data(),
                ));
            }
            for (name, desc, unit, v) in [
                (
                    "wasmtap.server.requests",
                    "Observed requests (exchanges).",
                    "{request}",
                    s.requests,
                ),
                (
                    "wasmtap.server.errors",
                    "Observed requests that failed or got no response.",
                    "{request}",
                    s.errors,
                ),
                (
                    "wasmtap.server.responses",
                    "Observed requests that got a response.",
                    "{response}",
                    s.responses,
                ),
                (
                    "wasmtap.server.unanswered",
                    "Observed requests that got no response within the timeout.",
                    "{request}",
                    s.unanswered,
                ),
                (
                    "wasmtap.server.sla.met",
                    "Requests answered within the SLA threshold of their operation.",
                    "{request}",
                    s.sla_met,
                ),
            ] {
                points.push(point(
                    name,
                    unit,
                    desc,
                    common.clone(),
                    MetricData::Sum { value: v },
                ));
            }
            if delta {
                s.requests = 0;
                s.errors = 0;
                s.responses = 0;
                s.unanswered = 0;
                s.sla_met = 0;
                s.duration.reset();
                if let Some(b) = &mut s.request_body {
                    b.reset();
                }
                if let Some(b) = &mut s.response_body {
                    b.reset();
                }
                s.start_ns = now;
                s.floor_ns = now;
            }
        }

        // Indicators per operation.
        let interval_s = now.saturating_sub(interval_start) as f64 / 1e9;
        let mut ops: Vec<&mut OpState> = self.ops.values_mut().flatten().collect();
        ops.sort_by(|a, b| {
            (a.resource.id, &a.operation, a.overflow).cmp(&(
                b.resource.id,
                &b.operation,
                b.overflow,
            ))
        });
        for o in ops {
            let mut attrs = vec![
                KeyValue::str("wasmtap.operation", o.operation.to_string()),
                KeyValue::str("network.protocol.name", o.protocol.to_string()),
            ];
            if o.overflow {
                attrs.push(overflow_attr());
            }
            let gauge =
                |name: &'static str, unit: &'static str, desc: &'static str, v: f64| MetricPoint {
                    resource: o.resource.clone(),
                    name,
                    unit,
                    description: desc,
                    attributes: attrs.clone(),
                    data: MetricData::Gauge { value: v },
                    start_unix_nano: 0,
                };
            let cur = [o.requests, o.errors, o.responses, o.unanswered, o.sla_met];
            let d: Vec<u64> = cur
                .iter()
                .zip(o.prev)
                .map(|(c, p)| c.saturating_sub(p))
                .collect();
            let (dreq, derr, dresp, dunans, dsla) = (d[0], d[1], d[2], d[3], d[4]);
            points.push(gauge(
                "wasmtap.server.sla.threshold",
                "s",
                "The SLA latency threshold of the operation.",
                o.threshold_ns as f64 / 1e9,
            ));
            if dreq > 0 {
                points.push(gauge(
                    "wasmtap.server.success_rate",
                    "1",
                    "Share of requests that did not fail, over the last export interval.",
                    (dreq - derr.min(dreq)) as f64 / dreq as f64,
                ));
                if interval_s > 0.0 {
                    points.push(gauge(
                        "wasmtap.server.request_rate",
                        "{request}/s",
                        "Requests per second over the last export interval.",
                        dreq as f64 / interval_s,
                    ));
                }
            }
            if dresp + dunans > 0 {
                let expected = (dresp + dunans) as f64;
                points.push(gauge(
                    "wasmtap.server.response_rate",
                    "1",
                    "Share of requests that got a response, over the last export interval.",
                    dresp as f64 / expected,
                ));
                points.push(gauge(
                    "wasmtap.server.sla.compliance",
                    "1",
                    "Share of requests answered within the SLA threshold, over the last export interval.",
                    dsla as f64 / expected,
                ));
            }
            points.push(gauge(
                "wasmtap.server.consecutive_failures",
                "{failure}",
                "Failures since the operation's last success.",
                o.consecutive_failures as f64,
            ));
            points.push(gauge(
                "wasmtap.server.time_since_last_call",
                "s",
                "Capture time since the operation's last call.",
                now.saturating_sub(o.last_call_ns) as f64 / 1e9,
            ));
            o.prev = cur;
        }

        // Per service.
        let mut svcs: Vec<&ServiceState> = self.svcs.values().collect();
        svcs.sort_by_key(|s| s.resource.id);
        for s in svcs {
            for (name, unit, desc, v) in [
                (
                    "wasmtap.service.consecutive_failures",
                    "{failure}",
                    "Failures since the service's last success.",
                    s.consecutive_failures as f64,
                ),
                (
                    "wasmtap.service.time_since_last_call",
                    "s",
                    "Capture time since the service's last call.",
                    now.saturating_sub(s.last_call_ns) as f64 / 1e9,
                ),
            ] {
                points.push(MetricPoint {
                    resource: s.resource.clone(),
                    name,
                    unit,
                    description: desc,
                    attributes: Vec::new(),
                    data: MetricData::Gauge { value: v },
                    start_unix_nano: 0,
                });
            }
        }

        self.edges.points(&mut points, delta, now);
        self.l4.points(&mut points, delta, now);
        self.prev_snapshot_ns = Some(now);
        MetricsSnapshot {
            start_unix_nano: if delta { interval_start } else { start },
            time_unix_nano: now,
            temporality: self.cfg.temporality,
            points,
        }
    }

    /// Drops series that stopped changing and operations that went silent.
    fn expire(&mut self, now: u64, drop_stale: bool) {
        let stale = self.cfg.stale_after_ns;
        if stale > 0 && drop_stale {
            let mut dropped = 0usize;
            for b in self.series.values_mut() {
                let before = b.len();
                b.retain(|s| now.saturating_sub(s.updated_ns) < stale);
                dropped += before - b.len();
            }
            self.series.retain(|_, b| !b.is_empty());
            self.series_len -= dropped;
            self.stats.stale_dropped += dropped as u64;
            self.edges.expire(now, stale);
            self.l4.expire(now, stale);
        }
        let silent = self.cfg.silence_expiry_ns;
        if silent > 0 && drop_stale {
            let mut dropped = 0usize;
            for b in self.ops.values_mut() {
                let before = b.len();
                b.retain(|o| now.saturating_sub(o.last_call_ns) < silent);
                dropped += before - b.len();
            }
            self.ops.retain(|_, b| !b.is_empty());
            self.ops_len -= dropped;
            let before = self.svcs.len();
            self.svcs
                .retain(|_, s| now.saturating_sub(s.last_call_ns) < silent);
            self.stats.stale_dropped += (dropped + before - self.svcs.len()) as u64;
        }
        if drop_stale {
            self.services.sweep();
        }
    }
}
