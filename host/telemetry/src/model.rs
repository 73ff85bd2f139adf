//! The telemetry data model handed from the pipeline to outputs (console, JSONL, OTLP).
//!
//! These types are deliberately plain: the OTLP exporter maps them to protobuf, the console
//! writers to text. One [`Resource`] per observed service is shared (`Arc`) by all its spans
//! and metric points so exporters can group by it cheaply.

use std::sync::Arc;

/// The value of an attribute.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum AttrValue {
    /// UTF-8 text.
    Str(String),
    /// Signed integer.
    Int(i64),
    /// Floating-point number.
    Float(f64),
    /// Boolean.
    Bool(bool),
}

/// An attribute key: shared, so the packet path clones it without allocating.
pub type Key = Arc<str>;

/// A key and its value, keyed by OpenTelemetry semantic conventions.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyValue {
    /// Attribute key (`http.request.method`).
    pub key: Key,
    /// Attribute value.
    pub value: AttrValue,
}

impl KeyValue {
    /// Builds a string attribute.
    pub fn str(key: impl Into<Key>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: AttrValue::Str(value.into()),
        }
    }
    /// Builds an integer attribute.
    pub fn int(key: impl Into<Key>, value: i64) -> Self {
        Self {
            key: key.into(),
            value: AttrValue::Int(value),
        }
    }
}

/// Attributes written as one JSON object (`{"key": value, ...}`), for the
/// outputs that write JSON (span lines, metric lines, golden files).
pub struct AttrsJson<'a>(pub &'a [KeyValue]);

impl serde::Serialize for AttrsJson<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for kv in self.0 {
            m.serialize_entry(&*kv.key, &kv.value)?;
        }
        m.end()
    }
}

/// The attribute the OpenTelemetry SDKs put on an overflow series.
pub fn overflow_attr() -> KeyValue {
    KeyValue {
        key: "otel.metric.overflow".into(),
        value: AttrValue::Bool(true),
    }
}

/// An observed service: the OTLP resource its spans and metrics are reported under.
#[derive(Debug, Clone, PartialEq)]
pub struct Resource {
    /// Stable identity of this resource within one agent run (used to group by resource).
    pub id: u64,
    /// Resource attributes; always include `service.name`.
    pub attributes: Vec<KeyValue>,
}

impl Resource {
    /// The `service.name` attribute, or `""` if absent.
    pub fn service_name(&self) -> &str {
        self.attributes
            .iter()
            .find(|kv| &*kv.key == "service.name")
            .and_then(|kv| match &kv.value {
                AttrValue::Str(s) => Some(s.as_str()),
                _ => None,
            })
            .unwrap_or("")
    }
}

/// Span kind, as in OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    /// The observed service handled a request.
    Server,
    /// The observed service called another one.
    Client,
}

/// Span status code, as in OTLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusCode {
    /// Not set.
    Unset,
    /// Success.
    Ok,
    /// Failure.
    Error,
}

/// One finished exchange, as a span.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// W3C trace id.
    pub trace_id: [u8; 16],
    /// Span id.
    pub span_id: [u8; 8],
    /// The caller's span, when the request carried trace context
    /// (`traceparent`, B3): the span then joins the caller's trace.
    pub parent_span_id: Option<[u8; 8]>,
    /// The W3C `tracestate` that came with it (empty if none).
    pub trace_state: String,
    /// Span name (the operation, low cardinality).
    pub name: String,
    /// Span kind.
    pub kind: SpanKind,
    /// Start, nanoseconds since the Unix epoch.
    pub start_unix_nano: u64,
    /// End, nanoseconds since the Unix epoch.
    pub end_unix_nano: u64,
    /// Status code.
    pub status: StatusCode,
    /// Status message (set on errors: the protocol code or the reason).
    pub status_message: String,
    /// Span attributes.
    pub attributes: Vec<KeyValue>,
    /// The observed service.
    pub resource: Arc<Resource>,
}

/// Data of one metric point.
#[derive(Debug, Clone, PartialEq)]
pub enum MetricData {
    /// A cumulative monotonic counter.
    Sum {
        /// The running total since `start_unix_nano`.
        value: u64,
    },
    /// A cumulative explicit-bucket histogram.
    Histogram {
        /// Number of observations.
        count: u64,
        /// Sum of observations.
        sum: f64,
        /// Smallest observation.
        min: f64,
        /// Largest observation.
        max: f64,
        /// Upper bounds of the buckets (the last bucket is unbounded).
        bounds: Arc<[f64]>,
        /// Counts per bucket; `bounds.len() + 1` entries.
        bucket_counts: Vec<u64>,
    },
    /// A gauge value.
    Gauge {
        /// The current value.
        value: f64,
    },
}

/// One metric stream point (a metric name plus a set of attributes) for one resource.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricPoint {
    /// The observed service.
    pub resource: Arc<Resource>,
    /// Metric name (`http.server.request.duration`).
    pub name: &'static str,
    /// Unit in UCUM (`s`, `{request}`).
    pub unit: &'static str,
    /// Human description.
    pub description: &'static str,
    /// Point attributes.
    pub attributes: Vec<KeyValue>,
    /// The data.
    pub data: MetricData,
    /// Start of this point's window (its series' creation, or the previous
    /// export with delta temporality); 0 means the snapshot's start. Unused for gauges.
    pub start_unix_nano: u64,
}

/// Aggregation temporality of sums and histograms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Temporality {
    /// Running totals since the series started (Prometheus' way).
    #[default]
    Cumulative,
    /// What happened since the previous export.
    Delta,
}

/// All metric points at one collection time.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MetricsSnapshot {
    /// Start of the window, nanoseconds since the Unix epoch (points with
    /// their own start override it).
    pub start_unix_nano: u64,
    /// Collection time, nanoseconds since the Unix epoch.
    pub time_unix_nano: u64,
    /// Temporality of the sums and histograms.
    pub temporality: Temporality,
    /// The points.
    pub points: Vec<MetricPoint>,
}
