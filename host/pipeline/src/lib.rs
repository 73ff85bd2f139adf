//! The packet path, sans I/O: one [`Shard`] takes captured frames and turns
//! them into spans and metrics (L2-L4 decode → flows and TCP reassembly →
//! plugin sessions → request/response matching → telemetry), under the
//! operators' [`filter`]s.
//!
//! A shard owns its flow table, its plugin instances and its telemetry state:
//! nothing on this path takes a lock or reads a clock (capture timestamps drive
//! every timeout), so a replay is deterministic. The agent (`host/agent`)
//! only feeds it frames, from files or live capture, and wires its outputs.

pub mod filter;
pub mod sharded;
mod stage;

pub use stage::{Deferred, Report, Stage};

use std::sync::Arc;

use wasmtap_decode::{Decoder, LinkType};
use wasmtap_flow::{CloseReason, Direction, FlowHandler, FlowMeta, FlowTable, L4};
use wasmtap_runtime::{Session, SessionEnd, Worker};
use wasmtap_telemetry::exchange::{Exchange, MatchStats, Matcher, Message};
use wasmtap_telemetry::model::SpanRecord;
use wasmtap_telemetry::red::{FlowCtx, Telemetry};

/// Per-flow state kept in the flow table.
pub struct FlowState {
    session: Session,
    matcher: Matcher,
    /// The flow's identity for span ids: from its endpoints and first
    /// packet time only, so ids do not depend on what else was seen.
    span_key: u64,
    /// Exchanges reported so far (each span id also takes its number).
    exchanges: u64,
}

/// A flow's span key: its endpoints, transport and first packet time.
fn span_key(flow: &FlowMeta) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x7370_616e_6b65_7921).hash_one((
        flow.client,
        flow.server,
        flow.l4 == L4::Tcp,
        flow.first_ns,
    ))
}

/// Where finished spans go.
pub trait SpanSink {
    /// Takes a batch of spans (in completion order).
    fn spans(&mut self, batch: Vec<SpanRecord>);
    /// Whether spans are consumed at all (if not, only metrics are kept).
    fn wants_spans(&self) -> bool {
        true
    }
}

/// Matching and batching, the part of a shard the flow table calls back into.
pub struct Handler<S: Stage = Telemetry> {
    worker: Worker,
    /// Metrics, indicators, the service graph and span building (or, in a
    /// shard of several, the reports for the one telemetry stage).
    pub telemetry: S,
    /// Request/response matching counters.
    pub match_stats: MatchStats,
    msgs: Vec<Message>,
    exchanges: Vec<Exchange>,
    spans: Vec<SpanRecord>,
    batch: usize,
    max_pending: usize,
    response_timeout_ns: u64,
    /// Decoder sessions ended, by how they ended.
    pub sessions_ended: std::collections::BTreeMap<&'static str, u64>,
    /// The filters: packets (in user space) and exchanges they reject are not reported.
    filter: Option<Arc<crate::filter::CompiledFilter>>,
    /// Exchanges the L7 filter dropped.
    pub filtered: u64,
    /// Whether the filter restricts addresses, transports or ports.
    packet_filter: bool,
    /// Packets the L3/L4 filter dropped in user space.
    pub packets_filtered: u64,
    /// Requests left waiting when their flow's decoder failed (not service errors).
    pub cut_by_decoder: u64,
    /// Requests still within their response timeout when the capture ended
    /// or their flow was evicted (not service errors).
    pub cut_by_capture: u64,
    /// TCP flows that ended with packets in one direction only (a mirror of
    /// one way, asymmetric routing).
    pub one_sided_flows: u64,
}

/// Whether the capture never showed the server's side of a TCP flow while
/// it showed the client's: its requests' answers were never in view.
/// `swapped`: the decoder found the table's roles backwards.
fn server_unseen(flow: &FlowMeta, swapped: bool) -> bool {
    let (client, server) = if swapped {
        (Direction::ToClient, Direction::ToServer)
    } else {
        (Direction::ToServer, Direction::ToClient)
    };
    flow.l4 == L4::Tcp && flow.packets[server.index()] == 0 && flow.packets[client.index()] > 0
}

fn packet_passes(
    f: Option<&crate::filter::CompiledFilter>,
    pkt: &wasmtap_decode::Packet<'_>,
) -> bool {
    let tcp = matches!(pkt.transport, wasmtap_decode::Transport::Tcp(_));
    f.is_none_or(|f| f.packet_passes(pkt.src, pkt.dst, tcp, pkt.src_port, pkt.dst_port))
}

/// Whether a packet goes to or comes from one of `own` (a listener bound to
/// an unspecified address matches its port on any address).
fn is_own(own: &[std::net::SocketAddr], pkt: &wasmtap_decode::Packet<'_>) -> bool {
    own.iter().any(|a| {
        let ip_ok = |ip: std::net::IpAddr| a.ip().is_unspecified() || a.ip() == ip;
        (a.port() == pkt.dst_port && ip_ok(pkt.dst)) || (a.port() == pkt.src_port && ip_ok(pkt.src))
    })
}

fn transport(l4: L4) -> &'static str {
    match l4 {
        L4::Tcp => "tcp",
        L4::Udp => "udp",
    }
}

impl<S: Stage> Handler<S> {
    fn drain(&mut self, flow: &FlowMeta, st: &mut FlowState, sink: &mut dyn SpanSink) {
        for m in self.msgs.drain(..) {
            st.matcher.push(
                m,
                self.max_pending,
                &mut self.match_stats,
                &mut self.exchanges,
            );
        }
        // Never blame the service for the decoder: requests waiting when the
        // decoder failed are cut (counted), not unanswered.
        if st.matcher.pending() > 0
            && matches!(
                st.session.ended(),
                Some(
                    SessionEnd::DecodeError(_)
                        | SessionEnd::Failed(_)
                        | SessionEnd::PendingOverflow
                        | SessionEnd::ContractViolation
                        | SessionEnd::Quarantined
                )
            )
        {
            self.cut_by_decoder += st.matcher.discard_pending() as u64;
        }
        self.emit(flow, st, sink);
    }

    fn emit(&mut self, flow: &FlowMeta, st: &mut FlowState, sink: &mut dyn SpanSink) {
        if self.exchanges.is_empty() {
            return;
        }
        let protocol: Arc<str> = st
            .session
            .protocol()
            .cloned()
            .unwrap_or_else(|| Arc::from("unknown"));
        // A decoder may have found the guessed roles backwards.
        let (client, server) = if st.session.swapped() {
            (flow.server, flow.client)
        } else {
            (flow.client, flow.server)
        };
        let ctx = FlowCtx {
            client,
            server,
            protocol: &protocol,
            transport: transport(flow.l4),
            flow_id: st.span_key,
        };
        let want = sink.wants_spans();
        if let Some(f) = self.filter.as_ref().filter(|f| f.restricts_exchanges()) {
            let before = self.exchanges.len();
            self.exchanges
                .retain(|ex| f.exchange_passes(&protocol, &ex.request.operation));
            self.filtered += (before - self.exchanges.len()) as u64;
        }
        let first = st.exchanges;
        st.exchanges += self.exchanges.len() as u64;
        self.telemetry
            .exchanges(&ctx, first, &mut self.exchanges, want, &mut self.spans);
        if self.spans.len() >= self.batch {
            sink.spans(std::mem::replace(
                &mut self.spans,
                Vec::with_capacity(self.batch),
            ));
        }
    }

    fn count_end(&mut self, s: &Session) {
        if let Some(e) = s.ended() {
            *self.sessions_ended.entry(e.as_str()).or_default() += 1;
        }
    }
}

/// The flow-table callbacks, with the sink for this call.
struct Bound<'a, S: Stage> {
    h: &'a mut Handler<S>,
    sink: &'a mut dyn SpanSink,
}

impl<S: Stage> FlowHandler<FlowState> for Bound<'_, S> {
    fn on_open(&mut self, flow: &FlowMeta, ts_ns: u64) -> FlowState {
        self.h
            .telemetry
            .flow_opened(flow.client, flow.server, transport(flow.l4), ts_ns);
        let mut session = self.h.worker.open(flow.l4, flow.server.port());
        session.set_flow(flow.client, flow.server, !flow.saw_syn);
        FlowState {
            session,
            matcher: Matcher::default(),
            span_key: span_key(flow),
            exchanges: 0,
        }
    }

    fn on_data(
        &mut self,
        flow: &FlowMeta,
        st: &mut FlowState,
        d: Direction,
        ts_ns: u64,
        data: &[u8],
    ) {
        self.h
            .worker
            .data(&mut st.session, d, ts_ns, data, &mut self.h.msgs);
        self.h.drain(flow, st, self.sink);
    }

    fn on_gap(&mut self, flow: &FlowMeta, st: &mut FlowState, d: Direction, _ts_ns: u64, len: u64) {
        self.h.worker.gap(&mut st.session, d, len, &mut self.h.msgs);
        self.h.drain(flow, st, self.sink);
        let to_client = if st.session.swapped() {
            Direction::ToServer
        } else {
            Direction::ToClient
        };
        if d == to_client {
            // Answers of the requests waiting now may have been in the lost
            // bytes: if they never come, the capture is to blame.
            st.matcher.response_bytes_lost();
        }
    }

    fn on_close(&mut self, flow: &FlowMeta, mut st: FlowState, reason: CloseReason, ts_ns: u64) {
        self.h.count_end(&st.session);
        self.h
            .worker
            .close(&mut st.session, reason, ts_ns, &mut self.h.msgs);
        self.h.drain(flow, &mut st, self.sink);
        match reason {
            // The capture ended (or the table had to make room) before an
            // answer could be seen: only requests already past the response
            // timeout are the service's; the others are cut (a span without
            // error, `wasmtap.response_missing`, no metrics), counted, never
            // blamed on the service.
            CloseReason::EndOfCapture | CloseReason::Evicted => {
                st.matcher.expire(
                    ts_ns,
                    self.h.response_timeout_ns,
                    server_unseen(flow, st.session.swapped()),
                    &mut self.h.match_stats,
                    &mut self.h.exchanges,
                );
                self.h.cut_by_capture += st.matcher.cut_pending(
                    server_unseen(flow, st.session.swapped()),
                    &mut self.h.match_stats,
                    &mut self.h.exchanges,
                ) as u64;
            }
            // The connection closed (or went idle) without an answer: the
            // service's, unless the capture never showed the server's side.
            _ => st.matcher.finish(
                server_unseen(flow, st.session.swapped()),
                &mut self.h.match_stats,
                &mut self.h.exchanges,
            ),
        }
        if flow.l4 == L4::Tcp
            && (flow.packets[0] == 0) != (flow.packets[1] == 0)
            && flow.bytes.iter().sum::<u64>() > 0
        {
            self.h.one_sided_flows += 1;
        }
        self.h.emit(flow, &mut st, self.sink);
        // L4 metrics: every flow, whether or not a decoder understood it.
        self.h
            .telemetry
            .flow_closed(&wasmtap_telemetry::graph::FlowEnd {
                client: flow.client,
                server: flow.server,
                transport: transport(flow.l4),
                reason: reason.as_str(),
                start_ns: flow.first_ns,
                end_ns: flow.last_ns.max(flow.first_ns),
                packets: flow.packets,
                bytes: flow.bytes,
                retransmitted: flow.retransmitted,
                gaps: flow.gaps,
                gap_bytes: flow.gap_bytes,
                handshake_rtt_ns: flow.handshake_rtt_ns,
            });
    }
}

/// A decoded packet into the flow table, unless the filter's user-space
/// verdict drops it (the kernel program may let more through, fragments or
/// lists over its budget, and files have none).
fn take<S: Stage>(
    bound: &mut Bound<'_, S>,
    flows: &mut FlowTable<FlowState>,
    pkt: &wasmtap_decode::Packet<'_>,
    ts_ns: u64,
) {
    if bound.h.packet_filter && !packet_passes(bound.h.filter.as_deref(), pkt) {
        bound.h.packets_filtered += 1;
    } else {
        flows.process(pkt, ts_ns, bound);
    }
}

/// Settings of a shard.
pub struct ShardConfig {
    /// Flow table bounds.
    pub flows: wasmtap_flow::FlowConfig,
    /// Spans per batch.
    pub batch: usize,
    /// Pending requests per flow.
    pub max_pending: usize,
    /// Response timeout, ns.
    pub response_timeout_ns: u64,
    /// Tunnels taken off mirrored traffic.
    pub tunnels: wasmtap_decode::TunnelConfig,
}

/// Drops a packet that was already seen on another interface a moment ago
/// (host mode: pod-to-pod traffic crosses two pods' veths). Bounded: a ring
/// of recent packet fingerprints, by capture time.
pub struct Dedup {
    window_ns: u64,
    ring: std::collections::VecDeque<(u64, u64, u16)>,
    index: std::collections::HashMap<u64, (u64, u16), foldhash::fast::RandomState>,
    capacity: usize,
    /// Packets dropped as copies.
    pub dropped: u64,
}

impl Dedup {
    /// `window_ns` 0 disables.
    pub fn new(window_ns: u64, capacity: usize) -> Self {
        Self {
            window_ns,
            ring: std::collections::VecDeque::with_capacity(capacity.min(1 << 16)),
            index: Default::default(),
            capacity: capacity.max(1),
            dropped: 0,
        }
    }

    fn seen_elsewhere(&mut self, pkt: &wasmtap_decode::Packet<'_>, iface: u16, ts_ns: u64) -> bool {
        if self.window_ns == 0 {
            return false;
        }
        use std::hash::{BuildHasher, Hash, Hasher};
        let mut h = foldhash::fast::FixedState::with_seed(0x0064_6564_7570).build_hasher();
        pkt.src.hash(&mut h);
        pkt.dst.hash(&mut h);
        pkt.src_port.hash(&mut h);
        pkt.dst_port.hash(&mut h);
        if let wasmtap_decode::Transport::Tcp(t) = &pkt.transport {
            (t.seq, t.ack, t.syn, t.ack_flag, t.fin, t.rst, t.window).hash(&mut h);
        }
        pkt.payload.len().hash(&mut h);
        pkt.payload[..pkt.payload.len().min(32)].hash(&mut h);
        let key = h.finish();
        // Forget what left the window, and bound the memory.
        while let Some(&(k, t, i)) = self.ring.front() {
            if ts_ns.saturating_sub(t) <= self.window_ns && self.ring.len() < self.capacity {
                break;
            }
            self.ring.pop_front();
            if self.index.get(&k) == Some(&(t, i)) {
                self.index.remove(&k);
            }
        }
        if let Some(&(t, i)) = self.index.get(&key)
            && i != iface
            && ts_ns.saturating_sub(t) <= self.window_ns
        {
            self.dropped += 1;
            return true;
        }
        self.ring.push_back((key, ts_ns, iface));
        self.index.insert(key, (ts_ns, iface));
        false
    }
}

/// One shard: decoder, flow table, plugin worker, telemetry (`S`: the
/// telemetry itself, or [`Deferred`] reports for a shared telemetry stage).
pub struct Shard<S: Stage = Telemetry> {
    /// Cross-interface duplicate filter.
    pub dedup: Dedup,
    decoder: Decoder,
    flows: FlowTable<FlowState>,
    /// Matching, telemetry and their counters.
    pub handler: Handler<S>,
    last_expiry_ns: u64,
    /// Frames taken.
    pub frames: u64,
    /// Bytes of the frames taken.
    pub frame_bytes: u64,
    /// The agent's own listening sockets (admin, scrape): their traffic is not observed.
    own: Vec<std::net::SocketAddr>,
    /// Packets to or from the agent's own sockets, dropped.
    pub own_dropped: u64,
}

impl<S: Stage> Shard<S> {
    /// Builds a shard around a plugin worker.
    pub fn new(cfg: ShardConfig, worker: Worker, telemetry: S) -> Self {
        let mut flows = FlowTable::new(cfg.flows);
        flows.set_server_ports(&worker.server_ports());
        Self {
            dedup: Dedup::new(0, 1),
            decoder: Decoder::new(wasmtap_decode::DecoderConfig {
                tunnels: cfg.tunnels,
                ..Default::default()
            }),
            flows,
            handler: Handler {
                worker,
                telemetry,
                match_stats: MatchStats::default(),
                msgs: Vec::new(),
                exchanges: Vec::new(),
                spans: Vec::with_capacity(cfg.batch),
                batch: cfg.batch,
                max_pending: cfg.max_pending,
                response_timeout_ns: cfg.response_timeout_ns,
                sessions_ended: Default::default(),
                filter: None,
                filtered: 0,
                packet_filter: false,
                packets_filtered: 0,
                cut_by_decoder: 0,
                cut_by_capture: 0,
                one_sided_flows: 0,
            },
            last_expiry_ns: 0,
            frames: 0,
            frame_bytes: 0,
            own: Vec::new(),
            own_dropped: 0,
        }
    }

    /// Processes one captured frame.
    pub fn frame(&mut self, link: LinkType, ts_ns: u64, data: &[u8], sink: &mut dyn SpanSink) {
        self.frame_from(0, link, ts_ns, data, sink);
    }

    /// Processes one frame captured on interface number `iface` (live capture
    /// of several interfaces: a packet seen on two of them counts once).
    pub fn frame_from(
        &mut self,
        iface: u16,
        link: LinkType,
        ts_ns: u64,
        data: &[u8],
        sink: &mut dyn SpanSink,
    ) {
        self.frames += 1;
        self.frame_bytes += data.len() as u64;
        // A new plugin set (hot reload) applies between frames: one atomic load.
        self.handler.worker.refresh();
        // The decoder counts its errors by kind (DecodeStats).
        if let Ok(Some(pkt)) = self.decoder.decode(link, ts_ns, data) {
            let mut bound = Bound {
                h: &mut self.handler,
                sink,
            };
            if !self.own.is_empty() && is_own(&self.own, &pkt) {
                self.own_dropped += 1;
            } else if !self.dedup.seen_elsewhere(&pkt, iface, ts_ns) {
                take(&mut bound, &mut self.flows, &pkt, ts_ns);
            }
        }
        self.tick(ts_ns, sink);
    }

    /// Processes one packet decoded elsewhere (a shard of several: the
    /// reader decodes frames and hands each flow's packets to its shard).
    pub fn packet(
        &mut self,
        pkt: &wasmtap_decode::Packet<'_>,
        ts_ns: u64,
        sink: &mut dyn SpanSink,
    ) {
        self.handler.worker.refresh();
        let mut bound = Bound {
            h: &mut self.handler,
            sink,
        };
        take(&mut bound, &mut self.flows, pkt, ts_ns);
        self.tick(ts_ns, sink);
    }

    fn expire(&mut self, now_ns: u64, sink: &mut dyn SpanSink) {
        let h = &mut self.handler;
        let timeout = h.response_timeout_ns;
        self.flows.for_each_mut(|flow, st| {
            if st.matcher.pending() > 0 {
                st.matcher.expire(
                    now_ns,
                    timeout,
                    server_unseen(flow, st.session.swapped()),
                    &mut h.match_stats,
                    &mut h.exchanges,
                );
                h.emit(flow, st, sink);
            }
        });
    }

    /// Advances time, after each packet or without one (live capture when
    /// the wire is quiet): idle flows end, gaps time out, and unanswered
    /// requests expire (swept once per second of capture time).
    pub fn tick(&mut self, now_ns: u64, sink: &mut dyn SpanSink) {
        let mut bound = Bound {
            h: &mut self.handler,
            sink,
        };
        self.flows.advance(now_ns, &mut bound);
        if now_ns.saturating_sub(self.last_expiry_ns) >= 1_000_000_000 {
            self.last_expiry_ns = now_ns;
            self.expire(now_ns, sink);
        }
    }

    /// Hands out the spans completed so far (paced replays and live capture
    /// flush on a timer rather than waiting for a full batch).
    pub fn flush(&mut self, sink: &mut dyn SpanSink) {
        let rest = std::mem::take(&mut self.handler.spans);
        if !rest.is_empty() {
            sink.spans(rest);
        }
    }

    /// The filters in force.
    pub fn filter(&self) -> Option<&Arc<crate::filter::CompiledFilter>> {
        self.handler.filter.as_ref()
    }

    /// Installs the filters: packets they reject (user-space verdict) and
    /// exchanges they reject are dropped and counted.
    pub fn set_filter(&mut self, f: Option<Arc<crate::filter::CompiledFilter>>) {
        self.handler.packet_filter = f.as_ref().is_some_and(|f| f.bpf_without_vlan().is_some());
        self.handler.filter = f;
    }

    /// The agent's own listening sockets: packets to or from them are not
    /// observed (an agent on `lo` would otherwise report its admin endpoint).
    pub fn set_own_endpoints(&mut self, own: Vec<std::net::SocketAddr>) {
        self.own = own;
    }

    /// Flows in the table.
    pub fn flows_len(&self) -> usize {
        self.flows.len()
    }

    /// Overload: while `false`, new flows are shed whole (see
    /// [`wasmtap_flow::FlowTable::set_admit`]).
    pub fn set_admit(&mut self, admit: bool) {
        self.flows.set_admit(admit);
    }

    /// Whether new flows are taken (not shedding).
    pub fn admits(&self) -> bool {
        self.flows.admits()
    }

    /// Loaded decoders and their state.
    pub fn loaded(&self) -> Vec<(String, String, String, &'static str)> {
        self.handler.worker.loaded()
    }

    /// End of capture: closes every flow and hands out the last spans.
    pub fn finish(&mut self, ts_ns: u64, sink: &mut dyn SpanSink) {
        let mut bound = Bound {
            h: &mut self.handler,
            sink,
        };
        self.flows
            .close_all(CloseReason::EndOfCapture, ts_ns, &mut bound);
        let rest = std::mem::take(&mut self.handler.spans);
        if !rest.is_empty() {
            sink.spans(rest);
        }
    }

    /// Flow-table counters.
    pub fn flow_stats(&self) -> &wasmtap_flow::FlowStats {
        self.flows.stats()
    }

    /// Plugin counters.
    pub fn worker_stats(&self) -> wasmtap_runtime::WorkerStats {
        self.handler.worker.stats()
    }

    /// Decoder counters.
    pub fn decode_stats(&self) -> &wasmtap_decode::DecodeStats {
        self.decoder.stats()
    }
}
