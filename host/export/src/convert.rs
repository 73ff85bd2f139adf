//! Mapping of the wasmtap telemetry model to OTLP protobuf requests.
//!
//! One `ResourceSpans` / `ResourceMetrics` per distinct [`Resource`] (grouped by
//! [`Resource::id`], in order of first appearance), each with a single scope `wasmtap`.

use std::collections::HashMap;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, InstrumentationScope, KeyValue as PbKeyValue, any_value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource as PbResource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use wasmtap_telemetry::model::{
    AttrValue, KeyValue, MetricData, MetricPoint, MetricsSnapshot, Resource, SpanKind, SpanRecord,
    StatusCode, Temporality,
};

/// Name of the instrumentation scope of everything wasmtap exports.
pub const SCOPE_NAME: &str = "wasmtap";
/// Version of the instrumentation scope (this crate's version).
pub const SCOPE_VERSION: &str = env!("CARGO_PKG_VERSION");

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.to_string(),
        version: SCOPE_VERSION.to_string(),
        attributes: Vec::new(),
        dropped_attributes_count: 0,
    }
}

fn any_value(v: &AttrValue) -> AnyValue {
    let value = match v {
        AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
        AttrValue::Int(i) => any_value::Value::IntValue(*i),
        AttrValue::Float(f) => any_value::Value::DoubleValue(*f),
        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
    };
    AnyValue { value: Some(value) }
}

fn attributes(kvs: &[KeyValue]) -> Vec<PbKeyValue> {
    kvs.iter()
        .map(|kv| PbKeyValue {
            key: kv.key.to_string(),
            value: Some(any_value(&kv.value)),
            key_strindex: 0,
        })
        .collect()
}

fn resource(r: &Resource) -> PbResource {
    PbResource {
        attributes: attributes(&r.attributes),
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    }
}

fn span(s: &SpanRecord) -> Span {
    let kind = match s.kind {
        SpanKind::Server => span::SpanKind::Server,
        SpanKind::Client => span::SpanKind::Client,
    };
    let code = match s.status {
        StatusCode::Unset => status::StatusCode::Unset,
        StatusCode::Ok => status::StatusCode::Ok,
        StatusCode::Error => status::StatusCode::Error,
    };
    Span {
        trace_id: s.trace_id.to_vec(),
        span_id: s.span_id.to_vec(),
        trace_state: s.trace_state.clone(),
        parent_span_id: s.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: 0,
        name: s.name.clone(),
        kind: kind as i32,
        start_time_unix_nano: s.start_unix_nano,
        end_time_unix_nano: s.end_unix_nano,
        attributes: attributes(&s.attributes),
        dropped_attributes_count: 0,
        events: Vec::new(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status: Some(Status {
            message: s.status_message.clone(),
            code: code as i32,
        }),
    }
}

/// Builds one trace export request: one `ResourceSpans` per distinct resource id (in order of
/// first appearance), each holding one `ScopeSpans` (scope `wasmtap`) with its spans in order.
pub fn build_trace_request(spans: &[SpanRecord]) -> ExportTraceServiceRequest {
    let mut index: HashMap<u64, usize> = HashMap::new();
    let mut out: Vec<ResourceSpans> = Vec::new();
    for s in spans {
        let i = *index.entry(s.resource.id).or_insert_with(|| {
            out.push(ResourceSpans {
                resource: Some(resource(&s.resource)),
                scope_spans: vec![ScopeSpans {
                    scope: Some(scope()),
                    spans: Vec::new(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            });
            out.len() - 1
        });
        out[i].scope_spans[0].spans.push(span(s));
    }
    ExportTraceServiceRequest {
        resource_spans: out,
    }
}

/// The kind of a metric, so that one name with two kinds never lands in one `Metric`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Sum,
    Histogram,
    Gauge,
}

fn kind(d: &MetricData) -> Kind {
    match d {
        MetricData::Sum { .. } => Kind::Sum,
        MetricData::Histogram { .. } => Kind::Histogram,
        MetricData::Gauge { .. } => Kind::Gauge,
    }
}

fn empty_metric(p: &MetricPoint, temporality: Temporality) -> Metric {
    let cumulative = match temporality {
        Temporality::Cumulative => AggregationTemporality::Cumulative as i32,
        Temporality::Delta => AggregationTemporality::Delta as i32,
    };
    let data = match p.data {
        MetricData::Sum { .. } => metric::Data::Sum(Sum {
            data_points: Vec::new(),
            aggregation_temporality: cumulative,
            is_monotonic: true,
        }),
        MetricData::Histogram { .. } => metric::Data::Histogram(Histogram {
            data_points: Vec::new(),
            aggregation_temporality: cumulative,
        }),
        MetricData::Gauge { .. } => metric::Data::Gauge(Gauge {
            data_points: Vec::new(),
        }),
    };
    Metric {
        name: p.name.to_string(),
        description: p.description.to_string(),
        unit: p.unit.to_string(),
        metadata: Vec::new(),
        data: Some(data),
    }
}

fn finite(v: f64) -> Option<f64> {
    v.is_finite().then_some(v)
}

fn add_point(m: &mut Metric, p: &MetricPoint, start: u64, time: u64) {
    let attrs = attributes(&p.attributes);
    let start = if p.start_unix_nano == 0 {
        start
    } else {
        p.start_unix_nano.min(time)
    };
    let number = |value| NumberDataPoint {
        attributes: attrs.clone(),
        start_time_unix_nano: start,
        time_unix_nano: time,
        exemplars: Vec::new(),
        flags: 0,
        value: Some(value),
    };
    match (&mut m.data, &p.data) {
        (Some(metric::Data::Sum(sum)), MetricData::Sum { value }) => {
            let v = i64::try_from(*value).unwrap_or(i64::MAX);
            sum.data_points
                .push(number(number_data_point::Value::AsInt(v)));
        }
        (Some(metric::Data::Gauge(g)), MetricData::Gauge { value }) => {
            g.data_points
                .push(number(number_data_point::Value::AsDouble(*value)));
        }
        (
            Some(metric::Data::Histogram(h)),
            MetricData::Histogram {
                count,
                sum,
                min,
                max,
                bounds,
                bucket_counts,
            },
        ) => {
            let observed = *count > 0;
            h.data_points.push(HistogramDataPoint {
                attributes: attrs.clone(),
                start_time_unix_nano: start,
                time_unix_nano: time,
                count: *count,
                sum: finite(*sum),
                bucket_counts: bucket_counts.clone(),
                explicit_bounds: bounds.to_vec(),
                exemplars: Vec::new(),
                flags: 0,
                min: if observed { finite(*min) } else { None },
                max: if observed { finite(*max) } else { None },
            });
        }
        // Unreachable: metrics are keyed by kind.
        _ => {}
    }
}

/// Builds one metrics export request from a snapshot: one `ResourceMetrics` per distinct
/// resource id, and within it one `Metric` per (name, kind) holding all its data points.
/// Sums are monotonic integer sums, histograms explicit-bucket histograms (both with
/// the snapshot's temporality), gauges double gauges; every point gets its own start
/// (else the snapshot's) and the snapshot's time.
pub fn build_metrics_request(snapshot: &MetricsSnapshot) -> ExportMetricsServiceRequest {
    let (start, time) = (snapshot.start_unix_nano, snapshot.time_unix_nano);
    let mut resources: HashMap<u64, usize> = HashMap::new();
    let mut metrics: HashMap<(u64, &'static str, Kind), usize> = HashMap::new();
    let mut out: Vec<ResourceMetrics> = Vec::new();
    for p in &snapshot.points {
        let r = *resources.entry(p.resource.id).or_insert_with(|| {
            out.push(ResourceMetrics {
                resource: Some(resource(&p.resource)),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics: Vec::new(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            });
            out.len() - 1
        });
        let list = &mut out[r].scope_metrics[0].metrics;
        let m = *metrics
            .entry((p.resource.id, p.name, kind(&p.data)))
            .or_insert_with(|| {
                list.push(empty_metric(p, snapshot.temporality));
                list.len() - 1
            });
        add_point(&mut list[m], p, start, time);
    }
    ExportMetricsServiceRequest {
        resource_metrics: out,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn res(id: u64, name: &str) -> Arc<Resource> {
        Arc::new(Resource {
            id,
            attributes: vec![
                KeyValue::str("service.name", name),
                KeyValue::int("k8s.pod.count", id as i64),
            ],
        })
    }

    fn span_rec(r: &Arc<Resource>, n: u8) -> SpanRecord {
        SpanRecord {
            trace_id: [n; 16],
            span_id: [n; 8],
            parent_span_id: None,
            trace_state: String::new(),
            name: format!("GET /{n}"),
            kind: if n.is_multiple_of(2) {
                SpanKind::Server
            } else {
                SpanKind::Client
            },
            start_unix_nano: 1_000 + u64::from(n),
            end_unix_nano: 2_000 + u64::from(n),
            status: if n.is_multiple_of(3) {
                StatusCode::Error
            } else {
                StatusCode::Unset
            },
            status_message: if n.is_multiple_of(3) {
                "500".into()
            } else {
                String::new()
            },
            attributes: vec![
                KeyValue::str("http.request.method", "GET"),
                KeyValue::int("http.response.status_code", 200),
                KeyValue {
                    key: "ratio".into(),
                    value: AttrValue::Float(0.5),
                },
                KeyValue {
                    key: "retry".into(),
                    value: AttrValue::Bool(true),
                },
            ],
            resource: r.clone(),
        }
    }

    fn str_attr(kvs: &[PbKeyValue], key: &str) -> Option<any_value::Value> {
        kvs.iter()
            .find(|kv| &*kv.key == key)
            .and_then(|kv| kv.value.clone()?.value)
    }

    #[test]
    fn spans_from_three_resources_make_three_resource_spans() {
        let (a, b, c) = (res(1, "a"), res(2, "b"), res(3, "c"));
        // Interleaved, and a second Arc with the same id must still group with `a`.
        let a2 = Arc::new((*a).clone());
        let spans = vec![
            span_rec(&a, 1),
            span_rec(&b, 2),
            span_rec(&a2, 3),
            span_rec(&c, 4),
            span_rec(&b, 5),
            span_rec(&a, 6),
        ];
        let req = build_trace_request(&spans);
        assert_eq!(req.resource_spans.len(), 3);
        let names: Vec<_> = req
            .resource_spans
            .iter()
            .map(|rs| {
                let attrs = &rs.resource.as_ref().unwrap().attributes;
                match str_attr(attrs, "service.name") {
                    Some(any_value::Value::StringValue(s)) => s,
                    other => panic!("service.name {other:?}"),
                }
            })
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        let ids: Vec<Vec<u8>> = req.resource_spans[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.span_id.clone())
            .collect();
        assert_eq!(ids, vec![vec![1; 8], vec![3; 8], vec![6; 8]]);
        assert_eq!(req.resource_spans[1].scope_spans[0].spans.len(), 2);
        assert_eq!(req.resource_spans[2].scope_spans[0].spans.len(), 1);
        for rs in &req.resource_spans {
            assert_eq!(rs.scope_spans.len(), 1);
            let scope = rs.scope_spans[0].scope.as_ref().unwrap();
            assert_eq!(scope.name, "wasmtap");
            assert_eq!(scope.version, env!("CARGO_PKG_VERSION"));
        }
    }

    #[test]
    fn span_fields_and_attributes_are_mapped() {
        let r = res(7, "svc");
        let req = build_trace_request(&[span_rec(&r, 3), span_rec(&r, 4)]);
        let rs = &req.resource_spans[0];
        assert_eq!(
            str_attr(&rs.resource.as_ref().unwrap().attributes, "k8s.pod.count"),
            Some(any_value::Value::IntValue(7))
        );
        let s = &rs.scope_spans[0].spans[0];
        assert_eq!(s.trace_id, vec![3; 16]);
        assert_eq!(s.span_id, vec![3; 8]);
        assert_eq!(s.name, "GET /3");
        assert_eq!(s.kind, 3, "CLIENT");
        assert_eq!(rs.scope_spans[0].spans[1].kind, 2, "SERVER");
        assert_eq!(s.start_time_unix_nano, 1_003);
        assert_eq!(s.end_time_unix_nano, 2_003);
        let st = s.status.as_ref().unwrap();
        assert_eq!(st.code, status::StatusCode::Error as i32);
        assert_eq!(st.message, "500");
        assert_eq!(
            rs.scope_spans[0].spans[1].status.as_ref().unwrap().code,
            status::StatusCode::Unset as i32
        );
        assert_eq!(
            str_attr(&s.attributes, "http.request.method"),
            Some(any_value::Value::StringValue("GET".into()))
        );
        assert_eq!(
            str_attr(&s.attributes, "http.response.status_code"),
            Some(any_value::Value::IntValue(200))
        );
        assert_eq!(
            str_attr(&s.attributes, "ratio"),
            Some(any_value::Value::DoubleValue(0.5))
        );
        assert_eq!(
            str_attr(&s.attributes, "retry"),
            Some(any_value::Value::BoolValue(true))
        );
        assert_eq!(s.attributes.len(), 4);
    }

    fn point(r: &Arc<Resource>, name: &'static str, route: &str, data: MetricData) -> MetricPoint {
        MetricPoint {
            resource: r.clone(),
            name,
            unit: "s",
            description: "desc",
            attributes: vec![KeyValue::str("http.route", route)],
            data,
            start_unix_nano: 0,
        }
    }

    #[test]
    fn metrics_are_grouped_and_mapped() {
        let (a, b) = (res(1, "a"), res(2, "b"));
        let bounds: Arc<[f64]> = Arc::from(vec![0.1, 0.5, 1.0]);
        let hist = |count, bc: Vec<u64>| MetricData::Histogram {
            count,
            sum: 1.25,
            min: 0.05,
            max: 2.0,
            bounds: bounds.clone(),
            bucket_counts: bc,
        };
        let snap = MetricsSnapshot {
            temporality: Default::default(),
            start_unix_nano: 10,
            time_unix_nano: 20,
            points: vec![
                point(
                    &a,
                    "http.server.request.duration",
                    "/x",
                    hist(4, vec![1, 1, 1, 1]),
                ),
                point(
                    &b,
                    "http.server.request.duration",
                    "/y",
                    hist(1, vec![0, 0, 1, 0]),
                ),
                point(
                    &a,
                    "http.server.request.duration",
                    "/z",
                    hist(2, vec![0, 2, 0, 0]),
                ),
                point(&a, "wasmtap.requests", "/x", MetricData::Sum { value: 42 }),
                point(
                    &a,
                    "wasmtap.requests",
                    "/z",
                    MetricData::Sum { value: u64::MAX },
                ),
                point(
                    &b,
                    "wasmtap.inflight",
                    "/y",
                    MetricData::Gauge { value: 3.5 },
                ),
                point(
                    &a,
                    "http.server.request.duration",
                    "/e",
                    hist(0, vec![0, 0, 0, 0]),
                ),
            ],
        };
        let req = build_metrics_request(&snap);
        assert_eq!(req.resource_metrics.len(), 2);
        let ma = &req.resource_metrics[0].scope_metrics[0].metrics;
        let mb = &req.resource_metrics[1].scope_metrics[0].metrics;
        assert_eq!(ma.len(), 2, "a: duration + requests");
        assert_eq!(mb.len(), 2, "b: duration + inflight");
        assert_eq!(
            req.resource_metrics[0].scope_metrics[0]
                .scope
                .as_ref()
                .unwrap()
                .name,
            "wasmtap"
        );

        let dur = &ma[0];
        assert_eq!(dur.name, "http.server.request.duration");
        assert_eq!(dur.unit, "s");
        assert_eq!(dur.description, "desc");
        let Some(metric::Data::Histogram(h)) = &dur.data else {
            panic!("histogram expected: {dur:?}");
        };
        assert_eq!(
            h.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(h.data_points.len(), 3);
        let p = &h.data_points[0];
        assert_eq!(p.count, 4);
        assert_eq!(p.sum, Some(1.25));
        assert_eq!(p.min, Some(0.05));
        assert_eq!(p.max, Some(2.0));
        assert_eq!(p.explicit_bounds, vec![0.1, 0.5, 1.0]);
        assert_eq!(p.bucket_counts, vec![1, 1, 1, 1]);
        assert_eq!((p.start_time_unix_nano, p.time_unix_nano), (10, 20));
        assert_eq!(
            str_attr(&p.attributes, "http.route"),
            Some(any_value::Value::StringValue("/x".into()))
        );
        assert_eq!(h.data_points[1].bucket_counts, vec![0, 2, 0, 0]);
        // An empty histogram has no min/max.
        assert_eq!((h.data_points[2].min, h.data_points[2].max), (None, None));

        let Some(metric::Data::Sum(s)) = &ma[1].data else {
            panic!("sum expected: {:?}", ma[1]);
        };
        assert!(s.is_monotonic);
        assert_eq!(
            s.aggregation_temporality,
            AggregationTemporality::Cumulative as i32
        );
        assert_eq!(
            s.data_points[0].value,
            Some(number_data_point::Value::AsInt(42))
        );
        assert_eq!(
            s.data_points[1].value,
            Some(number_data_point::Value::AsInt(i64::MAX)),
            "saturates"
        );

        let Some(metric::Data::Gauge(g)) = &mb[1].data else {
            panic!("gauge expected: {:?}", mb[1]);
        };
        assert_eq!(
            g.data_points[0].value,
            Some(number_data_point::Value::AsDouble(3.5))
        );
        assert_eq!(g.data_points[0].time_unix_nano, 20);
    }
}
