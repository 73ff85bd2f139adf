//! Outputs: the console summary table, JSON lines, and OTLP.

use std::io::Write;

use serde::Serialize;
use wasmtap_telemetry::graph::EdgeRow;
use wasmtap_telemetry::model::{AttrsJson, SpanKind, SpanRecord, StatusCode};
use wasmtap_telemetry::red::SummaryRow;

use crate::pipeline::SpanSink;

fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[derive(Serialize)]
struct Status<'a> {
    code: StatusCode,
    #[serde(skip_serializing_if = "str::is_empty")]
    message: &'a str,
}

#[derive(Serialize)]
struct JsonSpan<'a> {
    trace_id: String,
    span_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    parent_span_id: Option<String>,
    #[serde(skip_serializing_if = "str::is_empty")]
    trace_state: &'a str,
    name: &'a str,
    kind: SpanKind,
    start_unix_nano: u64,
    end_unix_nano: u64,
    status: Status<'a>,
    resource: AttrsJson<'a>,
    attributes: AttrsJson<'a>,
}

/// Writes one JSON object per span, one per line.
pub fn write_jsonl(w: &mut dyn Write, spans: &[SpanRecord]) -> std::io::Result<()> {
    for s in spans {
        let j = JsonSpan {
            trace_id: hex(&s.trace_id),
            span_id: hex(&s.span_id),
            parent_span_id: s.parent_span_id.map(|p| hex(&p)),
            trace_state: &s.trace_state,
            name: &s.name,
            kind: s.kind,
            start_unix_nano: s.start_unix_nano,
            end_unix_nano: s.end_unix_nano,
            status: Status {
                code: s.status,
                message: &s.status_message,
            },
            resource: AttrsJson(&s.resource.attributes),
            attributes: AttrsJson(&s.attributes),
        };
        serde_json::to_writer(&mut *w, &j)?;
        w.write_all(b"\n")?;
    }
    Ok(())
}

/// Formats the summary table: per service and operation, the requests,
/// TPS, success, response and SLA rates, errors, consecutive failures, time
/// since the last call and duration percentiles.
pub fn write_table(w: &mut dyn Write, rows: &[SummaryRow]) -> std::io::Result<()> {
    let sw = rows
        .iter()
        .map(|r| r.service.len())
        .max()
        .unwrap_or(0)
        .max(7);
    let ow = rows
        .iter()
        .map(|r| r.operation.chars().count())
        .max()
        .unwrap_or(0)
        .clamp(9, 40);
    writeln!(
        w,
        "{:<sw$}  {:<8}  {:<ow$}  {:>9}  {:>8}  {:>8}  {:>7}  {:>7}  {:>7}  {:>6}  {:>8}  {:>9}  {:>9}  {:>9}",
        "SERVICE",
        "PROTOCOL",
        "OPERATION",
        "REQUESTS",
        "TPS",
        "SUCCESS%",
        "RESP%",
        "SLA%",
        "ERRORS",
        "CONSEC",
        "LAST",
        "P50",
        "P95",
        "P99"
    )?;
    for r in rows {
        let op: String = r.operation.chars().take(ow).collect();
        writeln!(
            w,
            "{:<sw$}  {:<8}  {:<ow$}  {:>9}  {:>8}  {:>8}  {:>7}  {:>7}  {:>7}  {:>6}  {:>8}  {:>9}  {:>9}  {:>9}",
            r.service,
            r.protocol,
            op,
            r.requests,
            format!("{:.1}", r.tps),
            pct(r.success_rate),
            pct(r.response_rate),
            pct(r.sla_rate),
            r.errors,
            r.consecutive_failures,
            ago(r.since_last_call),
            dur(r.p50),
            dur(r.p95),
            dur(r.p99)
        )?;
    }
    Ok(())
}

/// Formats the service-graph edges: who calls whom, how much, how badly.
pub fn write_edges(w: &mut dyn Write, rows: &[EdgeRow]) -> std::io::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let cw = rows
        .iter()
        .map(|r| r.client.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let sw = rows
        .iter()
        .map(|r| r.server.len())
        .max()
        .unwrap_or(0)
        .max(6);
    writeln!(w)?;
    writeln!(
        w,
        "{:<cw$}     {:<sw$}  {:<16}  {:>9}  {:>7}  {:>9}",
        "CLIENT", "SERVER", "TYPE", "REQUESTS", "FAILED", "MEAN"
    )?;
    for r in rows {
        writeln!(
            w,
            "{:<cw$}  -> {:<sw$}  {:<16}  {:>9}  {:>7}  {:>9}",
            r.client,
            r.server,
            r.connection_type,
            r.requests,
            r.failed,
            dur(r.mean)
        )?;
    }
    Ok(())
}

fn pct(r: f64) -> String {
    format!("{:.1}", r * 100.0)
}

fn ago(secs: f64) -> String {
    if secs >= 3600.0 {
        format!("{:.1}h", secs / 3600.0)
    } else if secs >= 60.0 {
        format!("{:.1}m", secs / 60.0)
    } else {
        format!("{secs:.1}s")
    }
}

fn dur(secs: f64) -> String {
    if secs >= 1.0 {
        format!("{secs:.2}s")
    } else if secs >= 1e-3 {
        format!("{:.2}ms", secs * 1e3)
    } else {
        format!("{:.0}µs", secs * 1e6)
    }
}

/// Fans a span batch out to the configured outputs.
pub struct Outputs {
    /// JSON lines to stdout.
    pub jsonl: Option<std::io::BufWriter<std::io::Stdout>>,
    /// OTLP exporter.
    pub otlp: Option<wasmtap_export::Exporter>,
    /// Live capture: never wait on export (drop and count when the queue is full).
    pub live: bool,
    /// Spans handed out so far.
    pub spans: u64,
    /// Errors writing JSON lines (stdout closed...).
    pub write_error: Option<std::io::Error>,
}

impl SpanSink for Outputs {
    fn wants_spans(&self) -> bool {
        self.jsonl.is_some() || self.otlp.is_some()
    }

    fn spans(&mut self, batch: Vec<SpanRecord>) {
        self.spans += batch.len() as u64;
        if let Some(w) = self.jsonl.as_mut()
            && self.write_error.is_none()
            && let Err(e) = write_jsonl(w, &batch).and_then(|()| w.flush())
        {
            self.write_error = Some(e);
        }
        if let Some(x) = &self.otlp {
            if self.live {
                // Capture never waits on export: a full queue drops (counted).
                x.try_send_spans(batch);
            } else {
                // Replay applies back-pressure rather than dropping.
                x.send_spans_blocking(batch);
            }
        }
    }
}
