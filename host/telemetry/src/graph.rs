//! Who calls whom: service-graph edges (named as the OpenTelemetry
//! Collector's service-graph connector names them) and L4 metrics per
//! client/server pair, for every flow whether or not a decoder understood it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::hist::{CONNECTION_DURATION_BUCKETS, Hist, RTT_BUCKETS, SERVICE_GRAPH_BUCKETS};
use crate::model::{KeyValue, MetricData, MetricPoint, Resource, overflow_attr};

/// The name of the peer when a cap was reached.
const OVERFLOW: &str = "_OTHER";

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EdgeKey {
    client: Arc<str>,
    /// The server's resource (its `service.name` names the edge's server).
    server: u64,
    connection_type: &'static str,
    overflow: bool,
}

struct Edge {
    resource: Arc<Resource>,
    requests: u64,
    failed: u64,
    duration: Hist,
    /// The earliest call's time since the last reset (order-independent:
    /// shards report in any order), never before `floor_ns`.
    start_ns: u64,
    /// The last reset (delta temporality).
    floor_ns: u64,
    updated_ns: u64,
}

/// One service-graph edge, for the console.
#[derive(Debug, Clone)]
pub struct EdgeRow {
    /// Calling side.
    pub client: String,
    /// Called service.
    pub server: String,
    /// `database`, `messaging_system` or empty.
    pub connection_type: String,
    /// Calls.
    pub requests: u64,
    /// Failed calls.
    pub failed: u64,
    /// Mean duration, seconds.
    pub mean: f64,
}

/// Service-graph edges, capped.
pub(crate) struct Edges {
    map: HashMap<EdgeKey, Edge, foldhash::fast::RandomState>,
    max: usize,
    bounds: Arc<[f64]>,
    /// Calls recorded on the overflow edge.
    pub(crate) overflowed: u64,
    /// Edges dropped as stale.
    pub(crate) stale_dropped: u64,
}

impl Edges {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            map: HashMap::default(),
            max: max.max(1),
            bounds: Arc::from(SERVICE_GRAPH_BUCKETS.as_slice()),
            overflowed: 0,
            stale_dropped: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn record(
        &mut self,
        resource: &Arc<Resource>,
        client: Arc<str>,
        connection_type: &'static str,
        failed: bool,
        secs: f64,
        ts: u64,
    ) {
        let mut key = EdgeKey {
            client,
            server: resource.id,
            connection_type,
            overflow: false,
        };
        if !self.map.contains_key(&key) && self.map.len() >= self.max {
            self.overflowed += 1;
            key = EdgeKey {
                client: Arc::from(OVERFLOW),
                server: 0,
                connection_type: "",
                overflow: true,
            };
        }
        let bounds = &self.bounds;
        let e = self.map.entry(key).or_insert_with(|| Edge {
            resource: resource.clone(),
            requests: 0,
            failed: 0,
            duration: Hist::new(bounds.clone()),
            start_ns: ts,
            floor_ns: 0,
            updated_ns: ts,
        });
        e.start_ns = e.start_ns.min(ts).max(e.floor_ns);
        e.requests += 1;
        e.failed += u64::from(failed);
        e.duration.record(secs);
        e.updated_ns = e.updated_ns.max(ts);
    }

    pub(crate) fn expire(&mut self, now: u64, stale: u64) {
        let before = self.map.len();
        self.map
            .retain(|_, e| now.saturating_sub(e.updated_ns) < stale);
        self.stale_dropped += (before - self.map.len()) as u64;
    }

    pub(crate) fn summary(&self) -> Vec<EdgeRow> {
        let mut rows: Vec<EdgeRow> = self
            .map
            .iter()
            .map(|(k, e)| {
                let sum = match e.duration.data() {
                    MetricData::Histogram { sum, .. } => sum,
                    _ => 0.0,
                };
                EdgeRow {
                    client: k.client.to_string(),
                    server: if k.overflow {
                        OVERFLOW.to_string()
                    } else {
                        e.resource.service_name().to_string()
                    },
                    connection_type: k.connection_type.to_string(),
                    requests: e.requests,
                    failed: e.failed,
                    mean: if e.duration.count == 0 {
                        0.0
                    } else {
                        sum / e.duration.count as f64
                    },
                }
            })
            .collect();
        rows.sort_by(|a, b| (&a.client, &a.server).cmp(&(&b.client, &b.server)));
        rows
    }

    pub(crate) fn points(&mut self, out: &mut Vec<MetricPoint>, delta: bool, now: u64) {
        let mut all: Vec<(&EdgeKey, &mut Edge)> = self.map.iter_mut().collect();
        all.sort_by(|a, b| {
            a.0.client
                .cmp(&b.0.client)
                .then(a.0.server.cmp(&b.0.server))
        });
        for (k, e) in all {
            if delta && e.requests == 0 {
                continue;
            }
            let attrs = if k.overflow {
                vec![overflow_attr()]
            } else {
                let mut a = vec![
                    KeyValue::str("client", k.client.to_string()),
                    KeyValue::str("server", e.resource.service_name()),
                ];
                if !k.connection_type.is_empty() {
                    a.push(KeyValue::str("connection_type", k.connection_type));
                }
                a
            };
            let p = |name, unit, description, data| MetricPoint {
                resource: e.resource.clone(),
                name,
                unit,
                description,
                attributes: attrs.clone(),
                data,
                start_unix_nano: e.start_ns,
            };
            out.push(p(
                "traces_service_graph_request_total",
                "{request}",
                "Calls from client to server (service graph).",
                MetricData::Sum { value: e.requests },
            ));
            out.push(p(
                "traces_service_graph_request_failed_total",
                "{request}",
                "Failed calls from client to server (service graph).",
                MetricData::Sum { value: e.failed },
            ));
            out.push(p(
                "traces_service_graph_request_server_seconds",
                "s",
                "Duration of calls from client to server, seen on the wire (service graph).",
                e.duration.data(),
            ));
            if delta {
                e.requests = 0;
                e.failed = 0;
                e.duration.reset();
                e.start_ns = now;
                e.floor_ns = now;
            }
        }
    }
}

/// A flow's final counters, handed over when it ends.
#[derive(Debug, Clone)]
pub struct FlowEnd<'a> {
    /// Client endpoint.
    pub client: SocketAddr,
    /// Server endpoint.
    pub server: SocketAddr,
    /// `tcp` or `udp`.
    pub transport: &'a str,
    /// Why it ended: `fin`, `reset`, `idle_timeout`, `end_of_capture`, `evicted`.
    pub reason: &'static str,
    /// Capture time of its first packet.
    pub start_ns: u64,
    /// Capture time of its last packet (or of the close).
    pub end_ns: u64,
    /// Packets, to server then to client.
    pub packets: [u64; 2],
    /// Payload bytes on the wire, to server then to client.
    pub bytes: [u64; 2],
    /// Retransmitted payload bytes, to server then to client.
    pub retransmitted: [u64; 2],
    /// Gaps (bytes missing from the capture), to server then to client.
    pub gaps: [u64; 2],
    /// Bytes missing from the capture, to server then to client.
    pub gap_bytes: [u64; 2],
    /// TCP handshake round trip, when the three packets were seen.
    pub handshake_rtt_ns: Option<u64>,
}

/// Close reasons, in the order of their counters.
const REASONS: [&str; 5] = ["fin", "reset", "idle_timeout", "end_of_capture", "evicted"];
/// `network.io.direction` from the server's side: what it receives, what it sends.
const DIRECTIONS: [&str; 2] = ["receive", "transmit"];

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PairKey {
    resource: u64,
    client: Arc<str>,
    transport: Arc<str>,
    overflow: bool,
}

struct Pair {
    resource: Arc<Resource>,
    opened: u64,
    closed: [u64; 5],
    packets: [u64; 2],
    bytes: [u64; 2],
    retransmitted: [u64; 2],
    gaps: [u64; 2],
    gap_bytes: [u64; 2],
    rtt: Hist,
    duration: Hist,
    /// The earliest event's time since the last reset, never before `floor_ns`.
    start_ns: u64,
    /// The last reset (delta temporality).
    floor_ns: u64,
    updated_ns: u64,
}

/// L4 metrics per client/server pair, capped.
pub(crate) struct L4Pairs {
    map: HashMap<PairKey, Pair, foldhash::fast::RandomState>,
    max: usize,
    rtt_bounds: Arc<[f64]>,
    dur_bounds: Arc<[f64]>,
    pub(crate) overflowed: u64,
    pub(crate) stale_dropped: u64,
    last_ns: u64,
}

impl L4Pairs {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            map: HashMap::default(),
            max: max.max(1),
            rtt_bounds: Arc::from(RTT_BUCKETS.as_slice()),
            dur_bounds: Arc::from(CONNECTION_DURATION_BUCKETS.as_slice()),
            overflowed: 0,
            stale_dropped: 0,
            last_ns: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    fn pair(
        &mut self,
        resource: &Arc<Resource>,
        client: Arc<str>,
        transport: &str,
        ts: u64,
    ) -> &mut Pair {
        let mut key = PairKey {
            resource: resource.id,
            client,
            transport: Arc::from(transport),
            overflow: false,
        };
        if !self.map.contains_key(&key) && self.map.len() >= self.max {
            self.overflowed += 1;
            key = PairKey {
                resource: 0,
                client: Arc::from(OVERFLOW),
                transport: Arc::from(""),
                overflow: true,
            };
        }
        let (rb, db) = (&self.rtt_bounds, &self.dur_bounds);
        let p = self.map.entry(key).or_insert_with(|| Pair {
            resource: resource.clone(),
            opened: 0,
            closed: [0; 5],
            packets: [0; 2],
            bytes: [0; 2],
            retransmitted: [0; 2],
            gaps: [0; 2],
            gap_bytes: [0; 2],
            rtt: Hist::new(rb.clone()),
            duration: Hist::new(db.clone()),
            start_ns: ts,
            floor_ns: 0,
            updated_ns: ts,
        });
        p.start_ns = p.start_ns.min(ts).max(p.floor_ns);
        p
    }

    pub(crate) fn opened(
        &mut self,
        resource: &Arc<Resource>,
        client: Arc<str>,
        transport: &str,
        ts: u64,
    ) {
        self.last_ns = self.last_ns.max(ts);
        let now = self.last_ns;
        let p = self.pair(resource, client, transport, ts);
        p.opened += 1;
        p.updated_ns = p.updated_ns.max(now);
    }

    pub(crate) fn closed(&mut self, resource: &Arc<Resource>, client: Arc<str>, f: &FlowEnd<'_>) {
        self.last_ns = self.last_ns.max(f.end_ns);
        let p = self.pair(resource, client, f.transport, f.start_ns);
        if let Some(i) = REASONS.iter().position(|r| *r == f.reason)
            && let Some(c) = p.closed.get_mut(i)
        {
            *c += 1;
        }
        for d in 0..2 {
            p.packets[d] += f.packets[d];
            p.bytes[d] += f.bytes[d];
            p.retransmitted[d] += f.retransmitted[d];
            p.gaps[d] += f.gaps[d];
            p.gap_bytes[d] += f.gap_bytes[d];
        }
        if let Some(rtt) = f.handshake_rtt_ns {
            p.rtt.record(rtt as f64 / 1e9);
        }
        p.duration
            .record(f.end_ns.saturating_sub(f.start_ns) as f64 / 1e9);
        p.updated_ns = p.updated_ns.max(f.end_ns);
    }

    pub(crate) fn expire(&mut self, now: u64, stale: u64) {
        let before = self.map.len();
        self.map
            .retain(|_, p| now.saturating_sub(p.updated_ns) < stale);
        self.stale_dropped += (before - self.map.len()) as u64;
    }

    pub(crate) fn points(&mut self, out: &mut Vec<MetricPoint>, delta: bool, now: u64) {
        let mut all: Vec<(&PairKey, &mut Pair)> = self.map.iter_mut().collect();
        all.sort_by(|a, b| {
            (a.0.resource, &a.0.client, &a.0.transport).cmp(&(
                b.0.resource,
                &b.0.client,
                &b.0.transport,
            ))
        });
        for (k, p) in all {
            let base = if k.overflow {
                vec![overflow_attr()]
            } else {
                vec![
                    KeyValue::str("client", k.client.to_string()),
                    KeyValue::str("server", p.resource.service_name()),
                    KeyValue::str("network.transport", k.transport.to_string()),
                ]
            };
            let point = |name, unit, description, attributes, data| MetricPoint {
                resource: p.resource.clone(),
                name,
                unit,
                description,
                attributes,
                data,
                start_unix_nano: p.start_ns,
            };
            let sum = |v: u64| MetricData::Sum { value: v };
            out.push(point(
                "wasmtap.l4.connections.opened",
                "{connection}",
                "Connections (flows) opened.",
                base.clone(),
                sum(p.opened),
            ));
            for (i, r) in REASONS.iter().enumerate() {
                let n = p.closed.get(i).copied().unwrap_or(0);
                if n == 0 {
                    continue;
                }
                let mut a = base.clone();
                a.push(KeyValue::str("wasmtap.close_reason", *r));
                out.push(point(
                    "wasmtap.l4.connections.closed",
                    "{connection}",
                    "Connections (flows) closed, by reason (reset: a TCP RST).",
                    a,
                    sum(n),
                ));
            }
            for (d, dir) in DIRECTIONS.iter().enumerate() {
                let mut a = base.clone();
                a.push(KeyValue::str("network.io.direction", *dir));
                for (name, unit, desc, v) in [
                    (
                        "wasmtap.l4.bytes",
                        "By",
                        "Payload bytes on the wire, from the server's side.",
                        p.bytes[d],
                    ),
                    (
                        "wasmtap.l4.packets",
                        "{packet}",
                        "Packets, from the server's side.",
                        p.packets[d],
                    ),
                    (
                        "wasmtap.l4.retransmitted_bytes",
                        "By",
                        "Payload bytes sent again after they had been seen.",
                        p.retransmitted[d],
                    ),
                    (
                        "wasmtap.l4.gaps",
                        "{gap}",
                        "Holes in the stream that the capture missed.",
                        p.gaps[d],
                    ),
                    (
                        "wasmtap.l4.gap_bytes",
                        "By",
                        "Bytes missing from the capture.",
                        p.gap_bytes[d],
                    ),
                ] {
                    out.push(point(name, unit, desc, a.clone(), sum(v)));
                }
            }
            out.push(point(
                "wasmtap.l4.handshake.rtt",
                "s",
                "TCP handshake round trip (SYN to the client's ACK) at the capture point.",
                base.clone(),
                p.rtt.data(),
            ));
            out.push(point(
                "wasmtap.l4.connection.duration",
                "s",
                "Lifetime of closed connections.",
                base,
                p.duration.data(),
            ));
            if delta {
                p.opened = 0;
                p.closed = [0; 5];
                p.packets = [0; 2];
                p.bytes = [0; 2];
                p.retransmitted = [0; 2];
                p.gaps = [0; 2];
                p.gap_bytes = [0; 2];
                p.rtt.reset();
                p.duration.reset();
                p.start_ns = now;
                p.floor_ns = now;
            }
        }
    }
}
