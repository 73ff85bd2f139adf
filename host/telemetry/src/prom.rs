//! Metric snapshots as text: the Prometheus exposition format (the names an
//! OpenTelemetry Collector's Prometheus exporter gives the same OTLP metrics)
//! and JSON lines (`--metrics-out`, one series per line).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::model::{AttrValue, AttrsJson, MetricData, MetricPoint, MetricsSnapshot, Temporality};

/// The Prometheus name of an OTLP metric: dots to underscores, the unit as a
/// suffix (`_seconds`, `_bytes`, `_ratio` for gauges of unit `1`,
/// `_per_second`) unless the name already ends with it, and `_total` for counters.
pub fn metric_name(name: &str, unit: &str, data: &MetricData) -> String {
    let mut n = sanitize(name);
    let suffix = match unit {
        "s" => Some("seconds"),
        "By" => Some("bytes"),
        "1" if matches!(data, MetricData::Gauge { .. }) => Some("ratio"),
        u if u.ends_with("/s") => Some("per_second"),
        _ => None,
    };
    if let Some(s) = suffix
        && !n.ends_with(s)
    {
        n.push('_');
        n.push_str(s);
    }
    if matches!(data, MetricData::Sum { .. }) && !n.ends_with("_total") {
        n.push_str("_total");
    }
    n
}

/// A Prometheus label or metric name: characters outside `[a-zA-Z0-9_:]` become `_`.
pub fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn value_text(v: &AttrValue) -> String {
    match v {
        AttrValue::Str(s) => s.clone(),
        AttrValue::Int(i) => i.to_string(),
        AttrValue::Float(f) => f.to_string(),
        AttrValue::Bool(b) => b.to_string(),
    }
}

fn labels(p: &MetricPoint, extra: Option<(&str, String)>) -> String {
    let mut l: Vec<(String, String)> = Vec::with_capacity(p.attributes.len() + 2);
    l.push(("service_name".into(), p.resource.service_name().to_string()));
    for kv in &p.attributes {
        l.push((sanitize(&kv.key), value_text(&kv.value)));
    }
    if let Some((k, v)) = extra {
        l.push((k.to_string(), v));
    }
    let parts: Vec<String> = l
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

fn num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}

/// Writes a snapshot in the Prometheus text format (version 0.0.4). Every
/// series carries the observed service as `service_name`. A delta snapshot
/// cannot be scraped: it writes only a comment saying so.
pub fn write_prometheus(snap: &MetricsSnapshot, out: &mut String) {
    if snap.temporality == Temporality::Delta {
        out.push_str("# observed-service metrics: delta temporality is configured; scrape needs cumulative\n");
        return;
    }
    let mut families: BTreeMap<String, Vec<&MetricPoint>> = BTreeMap::new();
    for p in &snap.points {
        families
            .entry(metric_name(p.name, p.unit, &p.data))
            .or_default()
            .push(p);
    }
    for (name, points) in families {
        let Some(first) = points.first() else {
            continue;
        };
        let kind = match first.data {
            MetricData::Sum { .. } => "counter",
            MetricData::Gauge { .. } => "gauge",
            MetricData::Histogram { .. } => "histogram",
        };
        let _ = writeln!(out, "# HELP {name} {}", first.description);
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for p in points {
            match &p.data {
                MetricData::Sum { value } => {
                    let _ = writeln!(out, "{name}{} {value}", labels(p, None));
                }
                MetricData::Gauge { value } => {
                    let _ = writeln!(out, "{name}{} {}", labels(p, None), num(*value));
                }
                MetricData::Histogram {
                    count,
                    sum,
                    bounds,
                    bucket_counts,
                    ..
                } => {
                    let mut acc = 0u64;
                    for (i, c) in bucket_counts.iter().enumerate() {
                        acc += c;
                        let le = bounds.get(i).map_or("+Inf".to_string(), |b| num(*b));
                        let _ = writeln!(out, "{name}_bucket{} {acc}", labels(p, Some(("le", le))));
                    }
                    let _ = writeln!(out, "{name}_sum{} {}", labels(p, None), num(*sum));
                    let _ = writeln!(out, "{name}_count{} {count}", labels(p, None));
                }
            }
        }
    }
}

/// Sums are integers, gauges floating point.
#[derive(Serialize)]
#[serde(untagged)]
enum Num {
    Int(u64),
    Float(f64),
}

#[derive(Serialize)]
struct JsonPoint<'a> {
    name: &'a str,
    unit: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    temporality: Temporality,
    start_unix_nano: u64,
    time_unix_nano: u64,
    resource: AttrsJson<'a>,
    attributes: AttrsJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<Num>,
    #[serde(skip_serializing_if = "Option::is_none")]
    count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sum: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    min: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bounds: Option<&'a [f64]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bucket_counts: Option<&'a [u64]>,
}

/// Writes a snapshot as JSON lines, one series per line: `name`, `unit`,
/// `type` (`sum`, `gauge`, `histogram`), `temporality`, times, `resource`,
/// `attributes`, and `value` or the histogram's `count`, `sum`, `min`,
/// `max`, `bounds`, `bucket_counts`.
pub fn write_jsonl(snap: &MetricsSnapshot, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    for p in &snap.points {
        let mut j = JsonPoint {
            name: p.name,
            unit: p.unit,
            kind: "sum",
            temporality: snap.temporality,
            start_unix_nano: if p.start_unix_nano == 0 {
                snap.start_unix_nano
            } else {
                p.start_unix_nano
            },
            time_unix_nano: snap.time_unix_nano,
            resource: AttrsJson(&p.resource.attributes),
            attributes: AttrsJson(&p.attributes),
            value: None,
            count: None,
            sum: None,
            min: None,
            max: None,
            bounds: None,
            bucket_counts: None,
        };
        match &p.data {
            MetricData::Sum { value } => j.value = Some(Num::Int(*value)),
            MetricData::Gauge { value } => {
                j.kind = "gauge";
                j.value = Some(Num::Float(*value));
            }
            MetricData::Histogram {
                count,
                sum,
                min,
                max,
                bounds,
                bucket_counts,
            } => {
                j.kind = "histogram";
                j.count = Some(*count);
                j.sum = Some(*sum);
                j.min = Some(*min);
                j.max = Some(*max);
                j.bounds = Some(bounds);
                j.bucket_counts = Some(bucket_counts);
            }
        }
        serde_json::to_writer(&mut *w, &j)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_otlp_to_prometheus_rules() {
        let sum = MetricData::Sum { value: 1 };
        let gauge = MetricData::Gauge { value: 1.0 };
        let hist = MetricData::Histogram {
            count: 0,
            sum: 0.0,
            min: 0.0,
            max: 0.0,
            bounds: std::sync::Arc::from([1.0].as_slice()),
            bucket_counts: vec![0, 0],
        };
        assert_eq!(
            metric_name("http.server.request.duration", "s", &hist),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            metric_name("wasmtap.server.requests", "{request}", &sum),
            "wasmtap_server_requests_total"
        );
        assert_eq!(
            metric_name("traces_service_graph_request_total", "{request}", &sum),
            "traces_service_graph_request_total"
        );
        assert_eq!(
            metric_name("traces_service_graph_request_server_seconds", "s", &hist),
            "traces_service_graph_request_server_seconds"
        );
        assert_eq!(
            metric_name("wasmtap.server.success_rate", "1", &gauge),
            "wasmtap_server_success_rate_ratio"
        );
        assert_eq!(
            metric_name("wasmtap.l4.bytes", "By", &sum),
            "wasmtap_l4_bytes_total"
        );
        assert_eq!(
            metric_name("wasmtap.server.request_rate", "{request}/s", &gauge),
            "wasmtap_server_request_rate_per_second"
        );
        assert_eq!(sanitize("k8s.pod-name"), "k8s_pod_name");
    }
}
