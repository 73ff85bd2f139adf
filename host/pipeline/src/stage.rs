//! The telemetry stage a shard reports to: the telemetry itself (one
//! shard), or reports kept for the one telemetry stage several shards share.

use std::net::SocketAddr;
use std::sync::Arc;

use wasmtap_telemetry::exchange::Exchange;
use wasmtap_telemetry::graph::FlowEnd;
use wasmtap_telemetry::model::SpanRecord;
use wasmtap_telemetry::red::{FlowCtx, Telemetry};

/// What the matching stage hands on: flows opened and closed (L4 metrics)
/// and each flow's exchanges (metrics, indicators, spans).
pub trait Stage {
    /// A flow was opened.
    fn flow_opened(
        &mut self,
        client: SocketAddr,
        server: SocketAddr,
        transport: &'static str,
        ts_ns: u64,
    );
    /// A flow's exchanges, numbered in the flow from `first` (span ids take
    /// the number: pipelined exchanges may share a start time). Drains
    /// `exchanges`; the spans built, when `want_spans`, go to `spans`.
    fn exchanges(
        &mut self,
        ctx: &FlowCtx<'_>,
        first: u64,
        exchanges: &mut Vec<Exchange>,
        want_spans: bool,
        spans: &mut Vec<SpanRecord>,
    );
    /// A flow ended.
    fn flow_closed(&mut self, end: &FlowEnd<'static>);
}

/// An exchange's identity for span ids: its flow's key and its number in
/// the flow.
fn exchange_id(span_key: u64, n: u64) -> u64 {
    span_key.wrapping_add(n.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

impl Stage for Telemetry {
    fn flow_opened(
        &mut self,
        client: SocketAddr,
        server: SocketAddr,
        transport: &'static str,
        ts_ns: u64,
    ) {
        Telemetry::flow_opened(self, client, server, transport, ts_ns);
    }

    fn exchanges(
        &mut self,
        ctx: &FlowCtx<'_>,
        first: u64,
        exchanges: &mut Vec<Exchange>,
        want_spans: bool,
        spans: &mut Vec<SpanRecord>,
    ) {
        let mut ctx = *ctx;
        let key = ctx.flow_id;
        for (n, ex) in (first..).zip(exchanges.drain(..)) {
            ctx.flow_id = exchange_id(key, n);
            if let Some(span) = self.record(ex, &ctx, want_spans) {
                spans.push(span);
            }
        }
    }

    fn flow_closed(&mut self, end: &FlowEnd<'static>) {
        Telemetry::flow_closed(self, end);
    }
}

/// One thing a shard of several reports.
#[derive(Debug)]
pub enum Report {
    /// [`Stage::flow_opened`].
    Opened {
        /// Client endpoint.
        client: SocketAddr,
        /// Server endpoint.
        server: SocketAddr,
        /// `tcp` or `udp`.
        transport: &'static str,
        /// Capture time.
        ts_ns: u64,
    },
    /// [`Stage::exchanges`].
    Exchanges {
        /// Client endpoint (roles as the decoder found them).
        client: SocketAddr,
        /// Server endpoint.
        server: SocketAddr,
        /// Protocol.
        protocol: Arc<str>,
        /// `tcp` or `udp`.
        transport: &'static str,
        /// The flow's span key.
        span_key: u64,
        /// The first exchange's number in the flow.
        first: u64,
        /// Whether spans are built.
        want_spans: bool,
        /// The exchanges, in order.
        exchanges: Vec<Exchange>,
    },
    /// [`Stage::flow_closed`].
    Closed(FlowEnd<'static>),
}

impl Report {
    /// Applies the report to the telemetry stage; spans built go to `spans`.
    pub fn apply(self, t: &mut Telemetry, spans: &mut Vec<SpanRecord>) {
        match self {
            Report::Opened {
                client,
                server,
                transport,
                ts_ns,
            } => Stage::flow_opened(t, client, server, transport, ts_ns),
            Report::Exchanges {
                client,
                server,
                protocol,
                transport,
                span_key,
                first,
                want_spans,
                mut exchanges,
            } => {
                let ctx = FlowCtx {
                    client,
                    server,
                    protocol: &protocol,
                    transport,
                    flow_id: span_key,
                };
                Stage::exchanges(t, &ctx, first, &mut exchanges, want_spans, spans);
            }
            Report::Closed(end) => Stage::flow_closed(t, &end),
        }
    }
}

/// A shard's stage when several share one telemetry stage: everything is
/// kept, in order, for [`Report::apply`] there.
#[derive(Debug, Default)]
pub struct Deferred {
    /// Reports not handed on yet.
    pub reports: Vec<Report>,
}

impl Stage for Deferred {
    fn flow_opened(
        &mut self,
        client: SocketAddr,
        server: SocketAddr,
        transport: &'static str,
        ts_ns: u64,
    ) {
        self.reports.push(Report::Opened {
            client,
            server,
            transport,
            ts_ns,
        });
    }

    fn exchanges(
        &mut self,
        ctx: &FlowCtx<'_>,
        first: u64,
        exchanges: &mut Vec<Exchange>,
        want_spans: bool,
        _spans: &mut Vec<SpanRecord>,
    ) {
        if exchanges.is_empty() {
            return;
        }
        self.reports.push(Report::Exchanges {
            client: ctx.client,
            server: ctx.server,
            protocol: Arc::from(ctx.protocol),
            transport: ctx.transport,
            span_key: ctx.flow_id,
            first,
            want_spans,
            exchanges: std::mem::take(exchanges),
        });
    }

    fn flow_closed(&mut self, end: &FlowEnd<'static>) {
        self.reports.push(Report::Closed(end.clone()));
    }
}
