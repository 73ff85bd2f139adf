//! The flow table: symmetric 5-tuple lookup, roles, lifetimes, eviction.
//!
//! Flows live in a slab; four intrusive lists ordered by last activity (open
//! TCP flows that carried no payload yet, open TCP, UDP, closed TCP lingering
//! after FIN/RST) make idle expiry and least-recently-seen eviction O(1) per
//! flow. A full table evicts a lingering flow first, then one that never
//! carried a byte (a SYN flood, a port scan), and only then a flow with
//! data, so floods of empty flows cannot push out the ones being decoded. Flows with a hole waiting are
//! on a pending list swept by [`FlowTable::advance`].

use std::collections::HashMap;
use std::net::SocketAddr;

use wasmtap_decode::{Packet, TcpInfo, Transport};

use crate::reassembly::{Cx, Limits, Sink, Stream};
use crate::{CloseReason, Direction, FlowConfig, FlowHandler, FlowMeta, FlowStats, L4};

const NIL: u32 = u32::MAX;
/// Upper bound of the shortest time between two sweeps of the pending-gap
/// list (the actual minimum is gap_timeout / 16).
const MIN_SWEEP_INTERVAL_NS: u64 = 100_000_000;
/// Ports at or above this are taken as ephemeral (client) ports.
const EPHEMERAL: u16 = 32_768;

/// Symmetric flow key: both directions give the same key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct FlowKey {
    l4: L4,
    lo: SocketAddr,
    hi: SocketAddr,
}

impl FlowKey {
    fn new(l4: L4, x: SocketAddr, y: SocketAddr) -> Self {
        if x <= y {
            Self { l4, lo: x, hi: y }
        } else {
            Self { l4, lo: y, hi: x }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum List {
    Tcp = 0,
    Udp = 1,
    Linger = 2,
    /// Open TCP flows without payload so far.
    Bare = 3,
}

#[derive(Clone, Copy, Debug)]
struct Link {
    prev: u32,
    next: u32,
    list: List,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closed {
    No,
    Fin,
    Reset,
}

struct Flow<S> {
    key: FlowKey,
    meta: FlowMeta,
    /// `Some` once `on_open` was called; roles are fixed from then on.
    state: Option<S>,
    /// Roles come from the handshake, not a guess.
    certain: bool,
    closed: Closed,
    /// Indexed by [`Direction::index`].
    streams: [Stream; 2],
    /// On the pending-gap list.
    pending: bool,
    /// Capture time of the client's SYN (handshake round trip).
    syn_ns: Option<u64>,
    /// The SYN-ACK was seen after that SYN.
    synack_seen: bool,
}

/// Hands a direction's stream to the handler, opening the flow on first use.
struct Out<'a, S, H> {
    meta: &'a FlowMeta,
    state: &'a mut Option<S>,
    h: &'a mut H,
    dir: Direction,
}

impl<S, H: FlowHandler<S>> Sink for Out<'_, S, H> {
    fn data(&mut self, ts: u64, data: &[u8]) {
        let st = self
            .state
            .get_or_insert_with(|| self.h.on_open(self.meta, ts));
        self.h.on_data(self.meta, st, self.dir, ts, data);
    }

    fn gap(&mut self, ts: u64, len: u64) {
        let st = self
            .state
            .get_or_insert_with(|| self.h.on_open(self.meta, ts));
        self.h.on_gap(self.meta, st, self.dir, ts, len);
    }
}

/// Splits the two streams into (this direction, the other).
/// Ends the hold of a direction whose peer caught up (see `reassembly`).
fn release_held<S>(
    streams: &mut [Stream; 2],
    cx: &mut Cx<'_>,
    meta: &mut FlowMeta,
    state: &mut Option<S>,
    h: &mut impl FlowHandler<S>,
    ts: u64,
) {
    for dir in [Direction::ToServer, Direction::ToClient] {
        let (s, other) = pair(streams, dir);
        if s.is_held() && !other.lagging() {
            let mut out = Out {
                meta,
                state,
                h: &mut *h,
                dir,
            };
            s.unhold(cx, &mut out, ts);
        }
    }
}

fn pair(streams: &mut [Stream; 2], dir: Direction) -> (&mut Stream, &mut Stream) {
    let [to_server, to_client] = streams;
    match dir {
        Direction::ToServer => (to_server, to_client),
        Direction::ToClient => (to_client, to_server),
    }
}

/// Bidirectional flow table with TCP reassembly; `S` is the per-flow state
/// the handler creates in [`FlowHandler::on_open`].
pub struct FlowTable<S> {
    cfg: FlowConfig,
    lim: Limits,
    map: HashMap<FlowKey, u32, foldhash::fast::RandomState>,
    flows: Vec<Option<Flow<S>>>,
    links: Vec<Link>,
    free: Vec<u32>,
    heads: [u32; 4],
    tails: [u32; 4],
    /// Flows that may have a hole waiting: (slot, flow id).
    pending: Vec<(u32, u64)>,
    server_ports: Box<[u64; 1024]>,
    stats: FlowStats,
    ooo_total: usize,
    next_id: u64,
    next_sweep_ns: u64,
    /// New flows are taken (see [`FlowTable::set_admit`]).
    admit: bool,
    /// Flows refused while shedding, by key, with their last packet time:
    /// their later packets are refused too, so no flow is decoded in half.
    shed: HashMap<FlowKey, u64, foldhash::fast::RandomState>,
    next_shed_sweep_ns: u64,
}

impl<S> std::fmt::Debug for FlowTable<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("flows", &self.map.len())
            .field("ooo_bytes", &self.ooo_total)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl<S> FlowTable<S> {
    /// Creates an empty table.
    pub fn new(cfg: FlowConfig) -> Self {
        let lim = Limits {
            gap_timeout_ns: cfg.gap_timeout_ns,
            per_direction: cfg.max_ooo_bytes_per_direction,
            total: cfg.max_ooo_bytes_total,
        };
        let mut t = Self {
            lim,
            map: HashMap::default(),
            flows: Vec::new(),
            links: Vec::new(),
            free: Vec::new(),
            heads: [NIL; 4],
            tails: [NIL; 4],
            pending: Vec::new(),
            server_ports: Box::new([0; 1024]),
            stats: FlowStats::default(),
            ooo_total: 0,
            next_id: 1,
            next_sweep_ns: 0,
            admit: true,
            shed: HashMap::default(),
            next_shed_sweep_ns: 0,
            cfg,
        };
        let ports = std::mem::take(&mut t.cfg.server_ports);
        t.set_server_ports(&ports);
        t.cfg.server_ports = ports;
        t
    }

    /// Replaces the server-port hints used to guess roles.
    pub fn set_server_ports(&mut self, ports: &[u16]) {
        self.server_ports.fill(0);
        for &p in ports {
            if let Some(w) = self.server_ports.get_mut(usize::from(p >> 6)) {
                *w |= 1 << (p & 63);
            }
        }
        self.cfg.server_ports = ports.to_vec();
    }

    fn is_server_port(&self, p: u16) -> bool {
        self.server_ports
            .get(usize::from(p >> 6))
            .is_some_and(|w| w & (1 << (p & 63)) != 0)
    }

    /// Overload: with `false`, packets of flows not in the table are refused
    /// (the flow is shed, counted in `flows_shed`) and so are all later
    /// packets of a shed flow, even once flows are admitted again (its FIN
    /// and last ACKs included), until a new connection's SYN reuses its
    /// addresses or it is idle for the TCP/UDP idle timeout: what is decoded
    /// is whole flows, never half of one. Flows in the table go on.
    pub fn set_admit(&mut self, admit: bool) {
        self.admit = admit;
    }

    /// Whether new flows are taken.
    pub fn admits(&self) -> bool {
        self.admit
    }

    /// A packet of a shed flow, or of a new flow while shedding: refused
    /// (true) and counted.
    fn refuse(&mut self, key: FlowKey, ts: u64, new_connection: bool) -> bool {
        // The common case, admitting with nothing shed, costs no lookup.
        if self.admit && self.shed.is_empty() {
            return false;
        }
        if let Some(last) = self.shed.get_mut(&key) {
            if new_connection && self.admit {
                // The addresses are reused by a new connection, admitted.
                self.shed.remove(&key);
                return false;
            }
            *last = (*last).max(ts);
            self.stats.packets_shed += 1;
            return true;
        }
        // A flow in the table goes on, unless it is a closed one lingering
        // and this is a new connection on its addresses.
        let open = self.map.get(&key).is_some_and(
            |&i| matches!(self.flows.get(i as usize), Some(Some(f)) if f.closed == Closed::No),
        );
        if self.admit || open || (self.map.contains_key(&key) && !new_connection) {
            return false;
        }
        self.stats.flows_shed += 1;
        self.stats.packets_shed += 1;
        // Bounded like the table; beyond it a shed flow's later packets
        // would start it mid-stream, so the count says how often.
        if self.shed.len() < self.cfg.max_flows.max(1) {
            self.shed.insert(key, ts);
        } else {
            self.stats.shed_untracked += 1;
        }
        true
    }

    fn sweep_shed(&mut self, now_ns: u64) {
        if self.shed.is_empty() || now_ns < self.next_shed_sweep_ns {
            return;
        }
        self.next_shed_sweep_ns = now_ns.saturating_add(1_000_000_000);
        let (tcp, udp) = (self.cfg.tcp_idle_timeout_ns, self.cfg.udp_idle_timeout_ns);
        self.shed.retain(|k, last| {
            let idle = if k.l4 == L4::Tcp { tcp } else { udp };
            now_ns.saturating_sub(*last) < idle
        });
    }

    /// Flows tracked, including closed TCP flows lingering after FIN/RST.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no flow is tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> &FlowStats {
        &self.stats
    }

    /// Out-of-order bytes buffered over all flows (with per-segment overhead).
    pub fn ooo_bytes(&self) -> usize {
        self.ooo_total
    }

    /// Calls `f` for every open flow whose handler state exists.
    pub fn for_each_mut(&mut self, mut f: impl FnMut(&FlowMeta, &mut S)) {
        for flow in self.flows.iter_mut().flatten() {
            if flow.closed == Closed::No
                && let Some(st) = flow.state.as_mut()
            {
                f(&flow.meta, st);
            }
        }
    }

    /// Guesses (client, server) for a flow whose handshake was not seen.
    fn guess(&self, src: SocketAddr, dst: SocketAddr) -> (SocketAddr, SocketAddr) {
        let (sp, dp) = (src.port(), dst.port());
        let (sk, dk) = (self.is_server_port(sp), self.is_server_port(dp));
        let src_is_server = if sk != dk {
            sk
        } else if sp != dp && sp.min(dp) < 1024 {
            sp < dp
        } else if (sp >= EPHEMERAL) != (dp >= EPHEMERAL) {
            sp < EPHEMERAL
        } else {
            false
        };
        if src_is_server {
            (dst, src)
        } else {
            (src, dst)
        }
    }

    // ---- intrusive lists -------------------------------------------------

    fn link(&self, i: u32) -> Option<Link> {
        self.links.get(i as usize).copied()
    }

    fn set_prev(&mut self, i: u32, prev: u32) {
        if let Some(l) = self.links.get_mut(i as usize) {
            l.prev = prev;
        }
    }

    fn set_next(&mut self, i: u32, next: u32) {
        if let Some(l) = self.links.get_mut(i as usize) {
            l.next = next;
        }
    }

    fn unlink(&mut self, i: u32) {
        let Some(l) = self.link(i) else { return };
        let li = l.list as usize;
        if l.prev == NIL {
            if let Some(h) = self.heads.get_mut(li)
                && *h == i
            {
                *h = l.next;
            }
        } else {
            self.set_next(l.prev, l.next);
        }
        if l.next == NIL {
            if let Some(t) = self.tails.get_mut(li)
                && *t == i
            {
                *t = l.prev;
            }
        } else {
            self.set_prev(l.next, l.prev);
        }
        self.set_prev(i, NIL);
        self.set_next(i, NIL);
    }

    fn push_back(&mut self, i: u32, list: List) {
        let li = list as usize;
        let tail = self.tails.get(li).copied().unwrap_or(NIL);
        if let Some(l) = self.links.get_mut(i as usize) {
            *l = Link {
                prev: tail,
                next: NIL,
                list,
            };
        } else {
            return;
        }
        if tail == NIL {
            if let Some(h) = self.heads.get_mut(li) {
                *h = i;
            }
        } else {
            self.set_next(tail, i);
        }
        if let Some(t) = self.tails.get_mut(li) {
            *t = i;
        }
    }

    fn move_to(&mut self, i: u32, list: List) {
        self.unlink(i);
        self.push_back(i, list);
    }

    fn touch(&mut self, i: u32) {
        if let Some(l) = self.link(i)
            && l.next != NIL
        {
            self.move_to(i, l.list);
        }
    }

    fn head(&self, list: List) -> u32 {
        self.heads.get(list as usize).copied().unwrap_or(NIL)
    }

    // ---- flow lifetime ---------------------------------------------------

    /// Creates a flow; evicts the least recently seen one if the table is
    /// full.
    fn create(
        &mut self,
        key: FlowKey,
        roles: (SocketAddr, SocketAddr),
        certain: bool,
        ts: u64,
        h: &mut impl FlowHandler<S>,
    ) -> u32 {
        while self.map.len() >= self.cfg.max_flows.max(1) {
            if !self.evict_one(ts, h) {
                break;
            }
        }
        let id = self.next_id;
        self.next_id += 1;
        self.stats.flows_opened += 1;
        let flow = Flow {
            key,
            meta: FlowMeta {
                id,
                l4: key.l4,
                client: roles.0,
                server: roles.1,
                first_ns: ts,
                last_ns: ts,
                packets: [0; 2],
                bytes: [0; 2],
                saw_syn: certain,
                retransmitted: [0; 2],
                gaps: [0; 2],
                gap_bytes: [0; 2],
                handshake_rtt_ns: None,
            },
            syn_ns: None,
            synack_seen: false,
            state: None,
            certain,
            closed: Closed::No,
            streams: [Stream::default(), Stream::default()],
            pending: false,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                if let Some(slot) = self.flows.get_mut(i as usize) {
                    *slot = Some(flow);
                }
                i
            }
            None => {
                let i = u32::try_from(self.flows.len()).unwrap_or(NIL);
                self.flows.push(Some(flow));
                self.links.push(Link {
                    prev: NIL,
                    next: NIL,
                    list: List::Tcp,
                });
                i
            }
        };
        self.map.insert(key, idx);
        let list = match key.l4 {
            L4::Tcp => List::Bare,
            L4::Udp => List::Udp,
        };
        self.push_back(idx, list);
        idx
    }

    /// Makes room: drops a lingering flow, or closes the least recently seen
    /// open flow as evicted. Returns false if there was nothing to evict.
    fn evict_one(&mut self, ts: u64, h: &mut impl FlowHandler<S>) -> bool {
        let linger = self.head(List::Linger);
        if linger != NIL {
            self.remove(linger);
            return true;
        }
        let bare = self.head(List::Bare);
        if bare != NIL {
            self.stats.flows_evicted += 1;
            self.stats.flows_evicted_bare += 1;
            self.close(bare, CloseReason::Evicted, ts, h);
            return true;
        }
        let last = |i: u32| match self.flows.get(i as usize) {
            Some(Some(f)) => Some(f.meta.last_ns),
            _ => None,
        };
        let (t, u) = (self.head(List::Tcp), self.head(List::Udp));
        let victim = match (last(t), last(u)) {
            (Some(a), Some(b)) => {
                if b < a {
                    u
                } else {
                    t
                }
            }
            (Some(_), None) => t,
            (None, Some(_)) => u,
            (None, None) => return false,
        };
        self.stats.flows_evicted += 1;
        self.close(victim, CloseReason::Evicted, ts, h);
        true
    }

    /// Removes a flow without callbacks.
    fn remove(&mut self, i: u32) {
        self.unlink(i);
        let Some(flow) = self.flows.get_mut(i as usize).and_then(Option::take) else {
            return;
        };
        self.map.remove(&flow.key);
        let mut cx = Cx {
            lim: &self.lim,
            stats: &mut self.stats,
            ooo_total: &mut self.ooo_total,
        };
        let mut streams = flow.streams;
        for s in &mut streams {
            s.release(&mut cx);
        }
        self.free.push(i);
    }

    /// Flushes both directions (gaps + buffered data), calls `on_close`, and
    /// either keeps the flow lingering (FIN/RST) or removes it.
    fn close(&mut self, i: u32, reason: CloseReason, ts: u64, h: &mut impl FlowHandler<S>) {
        let Some(Some(flow)) = self.flows.get_mut(i as usize) else {
            return;
        };
        if flow.closed != Closed::No {
            return;
        }
        let mut cx = Cx {
            lim: &self.lim,
            stats: &mut self.stats,
            ooo_total: &mut self.ooo_total,
        };
        let Flow {
            meta,
            state,
            streams,
            ..
        } = flow;
        // A held direction last: what it answers comes first.
        let order = if streams[Direction::ToServer.index()].is_held() {
            [Direction::ToClient, Direction::ToServer]
        } else {
            [Direction::ToServer, Direction::ToClient]
        };
        for dir in order {
            let (s, _) = pair(streams, dir);
            let mut out = Out {
                meta,
                state,
                h,
                dir,
            };
            s.flush(&mut cx, &mut out, ts);
        }
        for d in [Direction::ToServer, Direction::ToClient] {
            let i = d.index();
            if let Some(s) = flow.streams.get(i) {
                flow.meta.retransmitted[i] = s.retransmitted;
                flow.meta.gaps[i] += s.gaps;
                flow.meta.gap_bytes[i] += s.gap_bytes;
            }
        }
        let st = match flow.state.take() {
            Some(st) => st,
            None => h.on_open(&flow.meta, ts),
        };
        h.on_close(&flow.meta, st, reason, ts);
        if let Some(c) = self.stats.flows_closed.get_mut(reason.index()) {
            *c += 1;
        }
        match reason {
            CloseReason::Fin | CloseReason::Reset if flow.meta.l4 == L4::Tcp => {
                flow.closed = if reason == CloseReason::Fin {
                    Closed::Fin
                } else {
                    Closed::Reset
                };
                flow.meta.last_ns = flow.meta.last_ns.max(ts);
                self.move_to(i, List::Linger);
            }
            _ => self.remove(i),
        }
    }

    // ---- packets ---------------------------------------------------------

    /// Processes one decoded packet captured at `ts_ns`.
    pub fn process(&mut self, pkt: &Packet<'_>, ts_ns: u64, h: &mut impl FlowHandler<S>) {
        self.stats.packets += 1;
        if pkt.missing > 0 {
            self.stats.truncated_segments += 1;
        }
        let src = SocketAddr::new(pkt.src, pkt.src_port);
        let dst = SocketAddr::new(pkt.dst, pkt.dst_port);
        match pkt.transport {
            Transport::Tcp(t) => self.tcp(src, dst, t, pkt, ts_ns, h),
            Transport::Udp => self.udp(src, dst, pkt, ts_ns, h),
        }
    }

    fn udp(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        pkt: &Packet<'_>,
        ts: u64,
        h: &mut impl FlowHandler<S>,
    ) {
        let key = FlowKey::new(L4::Udp, src, dst);
        if self.refuse(key, ts, false) {
            return;
        }
        let i = match self.map.get(&key) {
            Some(&i) => i,
            None => {
                let roles = self.guess(src, dst);
                self.create(key, roles, false, ts, h)
            }
        };
        self.touch(i);
        let Some(Some(flow)) = self.flows.get_mut(i as usize) else {
            return;
        };
        let dir = if src == flow.meta.client {
            Direction::ToServer
        } else {
            Direction::ToClient
        };
        let d = dir.index();
        let meta = &mut flow.meta;
        meta.last_ns = meta.last_ns.max(ts);
        if let Some(p) = meta.packets.get_mut(d) {
            *p += 1;
        }
        if let Some(b) = meta.bytes.get_mut(d) {
            *b += pkt.payload.len() as u64 + u64::from(pkt.missing);
        }
        let mut out = Out {
            meta: &flow.meta,
            state: &mut flow.state,
            h,
            dir,
        };
        if !pkt.payload.is_empty() {
            out.data(ts, pkt.payload);
            self.stats.bytes_delivered += pkt.payload.len() as u64;
        }
        if pkt.missing > 0 {
            // The datagram was cut by the capture.
            out.gap(ts, u64::from(pkt.missing));
            self.stats.gaps += 1;
            self.stats.gap_bytes += u64::from(pkt.missing);
            if let Some(Some(f)) = self.flows.get_mut(i as usize) {
                f.meta.gaps[d] += 1;
                f.meta.gap_bytes[d] += u64::from(pkt.missing);
            }
        }
    }

    fn tcp(
        &mut self,
        src: SocketAddr,
        dst: SocketAddr,
        t: TcpInfo,
        pkt: &Packet<'_>,
        ts: u64,
        h: &mut impl FlowHandler<S>,
    ) {
        let key = FlowKey::new(L4::Tcp, src, dst);
        let syn_only = t.syn && !t.ack_flag;
        let dseq = if t.syn { t.seq.wrapping_add(1) } else { t.seq };
        let seg_len = pkt.payload.len() as u64 + u64::from(pkt.missing);
        if self.refuse(key, ts, syn_only) {
            return;
        }
        let existing = self.map.get(&key).copied();
        if let Some(i) = existing
            && let Some(Some(f)) = self.flows.get(i as usize)
            && f.closed != Closed::No
        {
            // A closed flow lingering: a new SYN, or new data after
            // a FIN, starts a new connection; the rest is late.
            let dir = if src == f.meta.client { 0 } else { 1 };
            let beyond = f.closed == Closed::Fin
                && f.streams
                    .get(dir)
                    .is_some_and(|s| s.is_beyond_end(dseq, seg_len));
            if !(syn_only || beyond) {
                self.stats.late_packets += 1;
                return;
            }
            self.remove(i);
        }
        let i = match self.map.get(&key) {
            Some(&i) => i,
            None => {
                let (roles, certain) = if syn_only {
                    ((src, dst), true)
                } else if t.syn {
                    ((dst, src), true)
                } else {
                    self.stats.syn_less_flows += 1;
                    (self.guess(src, dst), false)
                };
                self.create(key, roles, certain, ts, h)
            }
        };
        self.touch(i);
        if seg_len > 0 && self.link(i).is_some_and(|l| l.list == List::Bare) {
            self.move_to(i, List::Tcp);
        }
        let Some(Some(flow)) = self.flows.get_mut(i as usize) else {
            return;
        };

        // Handshake round trip: SYN, SYN-ACK, then the client's ACK.
        if syn_only {
            flow.syn_ns.get_or_insert(ts);
        } else if t.syn && t.ack_flag {
            flow.synack_seen = flow.syn_ns.is_some();
        } else if t.ack_flag
            && flow.synack_seen
            && flow.meta.handshake_rtt_ns.is_none()
            && src == flow.meta.client
            && let Some(s) = flow.syn_ns
        {
            flow.meta.handshake_rtt_ns = Some(ts.saturating_sub(s));
        }
        // Roles: a handshake packet settles them, unless the flow is open.
        if t.syn {
            flow.meta.saw_syn = true;
            let client = if syn_only { src } else { dst };
            if !flow.certain && flow.state.is_none() {
                if flow.meta.client != client && flow.meta.server == client {
                    let m = &mut flow.meta;
                    std::mem::swap(&mut m.client, &mut m.server);
                    m.packets.swap(0, 1);
                    m.bytes.swap(0, 1);
                    flow.streams.swap(0, 1);
                    self.stats.role_swaps += 1;
                }
                flow.certain = true;
            }
        }
        let dir = if src == flow.meta.client {
            Direction::ToServer
        } else {
            Direction::ToClient
        };
        let d = dir.index();
        {
            let m = &mut flow.meta;
            m.last_ns = m.last_ns.max(ts);
            if let Some(p) = m.packets.get_mut(d) {
                *p += 1;
            }
            if let Some(b) = m.bytes.get_mut(d) {
                *b += seg_len;
            }
        }

        let mut cx = Cx {
            lim: &self.lim,
            stats: &mut self.stats,
            ooo_total: &mut self.ooo_total,
        };
        let Flow {
            meta,
            state,
            streams,
            pending,
            ..
        } = flow;
        let (mine, theirs) = pair(streams, dir);
        if t.syn {
            mine.init(dseq);
            if t.ack_flag && !theirs.is_init() {
                // SYN-ACK without the SYN: its ACK gives the client's ISN+1.
                theirs.init(t.ack);
            }
        }
        if t.rst {
            self.close(i, CloseReason::Reset, ts, h);
            return;
        }
        if t.ack_flag {
            let mut out = Out {
                meta,
                state,
                h,
                dir: dir.reverse(),
            };
            theirs.ack(&mut cx, &mut out, ts, t.ack);
            if seg_len > 0 && theirs.lagging() && !mine.is_held() {
                // An answer to bytes not delivered yet: it waits for them.
                cx.stats.held_answers += 1;
                mine.hold();
            }
        }
        if seg_len > 0 || t.fin {
            let mut out = Out {
                meta,
                state,
                h,
                dir,
            };
            mine.segment(&mut cx, &mut out, ts, dseq, pkt.payload, pkt.missing, t.fin);
        }
        // (a) for both directions: any packet of the flow moves its time.
        for (s, d) in [(mine, dir), (theirs, dir.reverse())] {
            if s.has_hole() {
                let mut out = Out {
                    meta,
                    state,
                    h,
                    dir: d,
                };
                s.settle(&mut cx, &mut out, ts);
            }
        }
        release_held(streams, &mut cx, meta, state, h, ts);
        let (mine, theirs) = pair(streams, dir);
        let both_fin = mine.fin_seen() && theirs.fin_seen();
        let deadline = match (
            mine.deadline(self.lim.gap_timeout_ns),
            theirs.deadline(self.lim.gap_timeout_ns),
        ) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if both_fin {
            self.close(i, CloseReason::Fin, ts, h);
            return;
        }
        if let Some(deadline) = deadline {
            self.next_sweep_ns = self.next_sweep_ns.min(deadline);
            if !*pending {
                *pending = true;
                let id = meta.id;
                self.pending.push((i, id));
                if self.pending.len() > 2 * self.map.len() + 64 {
                    self.compact_pending();
                }
            }
        }
    }

    fn compact_pending(&mut self) {
        let flows = &self.flows;
        self.pending.retain(|&(i, id)| {
            matches!(flows.get(i as usize), Some(Some(f)) if f.meta.id == id && f.pending)
        });
    }

    // ---- time ------------------------------------------------------------

    /// Moves time to `now_ns`: closes idle flows, drops lingering ones, and
    /// reports holes that waited `gap_timeout_ns`. Cheap when nothing is due.
    pub fn advance(&mut self, now_ns: u64, h: &mut impl FlowHandler<S>) {
        self.sweep_shed(now_ns);
        for (list, timeout) in [
            (List::Bare, self.cfg.tcp_idle_timeout_ns),
            (List::Tcp, self.cfg.tcp_idle_timeout_ns),
            (List::Udp, self.cfg.udp_idle_timeout_ns),
            (List::Linger, self.cfg.tcp_linger_ns),
        ] {
            loop {
                let i = self.head(list);
                let last = match self.flows.get(i as usize) {
                    Some(Some(f)) => f.meta.last_ns,
                    _ => break,
                };
                if now_ns.saturating_sub(last) < timeout {
                    break;
                }
                if list != List::Linger {
                    self.close(i, CloseReason::IdleTimeout, now_ns, h);
                }
                if self.head(list) == i {
                    self.remove(i);
                }
            }
        }
        if !self.pending.is_empty() && now_ns >= self.next_sweep_ns {
            let earliest = self.sweep_gaps(now_ns, h);
            // The next hole deadline, but not more often than a fraction of
            // the gap timeout (many flows with holes would otherwise make
            // every call sweep).
            let min_gap = (self.cfg.gap_timeout_ns / 16).clamp(1, MIN_SWEEP_INTERVAL_NS);
            self.next_sweep_ns = earliest.max(now_ns.saturating_add(min_gap));
        }
    }

    /// Applies the gap timeout to every pending flow; returns the earliest
    /// deadline left.
    fn sweep_gaps(&mut self, now: u64, h: &mut impl FlowHandler<S>) -> u64 {
        let mut earliest = u64::MAX;
        let gap_timeout = self.lim.gap_timeout_ns;
        let mut list = std::mem::take(&mut self.pending);
        list.retain(|&(i, id)| {
            let Some(Some(flow)) = self.flows.get_mut(i as usize) else {
                return false;
            };
            if flow.meta.id != id || flow.closed != Closed::No || !flow.pending {
                return false;
            }
            let mut cx = Cx {
                lim: &self.lim,
                stats: &mut self.stats,
                ooo_total: &mut self.ooo_total,
            };
            let Flow {
                meta,
                state,
                streams,
                pending,
                ..
            } = flow;
            let mut hole = false;
            for dir in [Direction::ToServer, Direction::ToClient] {
                let (s, _) = pair(streams, dir);
                let mut out = Out {
                    meta,
                    state,
                    h: &mut *h,
                    dir,
                };
                s.settle(&mut cx, &mut out, now);
                if let Some(d) = s.deadline(gap_timeout) {
                    hole = true;
                    earliest = earliest.min(d);
                }
            }
            release_held(streams, &mut cx, meta, state, &mut *h, now);
            *pending = hole;
            hole
        });
        // Nothing is added to `pending` during the sweep.
        list.append(&mut self.pending);
        self.pending = list;
        earliest
    }

    /// Closes every open flow with `reason` (e.g. end of capture): buffered
    /// data is delivered (with gaps for the holes), then `on_close`. The
    /// table is empty afterwards.
    pub fn close_all(&mut self, reason: CloseReason, ts_ns: u64, h: &mut impl FlowHandler<S>) {
        for list in [List::Bare, List::Tcp, List::Udp, List::Linger] {
            for i in self.list_members(list) {
                if matches!(self.flows.get(i as usize), Some(Some(f)) if f.closed == Closed::No) {
                    self.close(i, reason, ts_ns, h);
                }
                // Fin/Reset would linger; at the end nothing does.
                self.remove(i);
            }
        }
        self.pending.clear();
    }

    /// Slots on `list`, oldest first.
    fn list_members(&self, list: List) -> Vec<u32> {
        let mut out = Vec::new();
        let mut i = self.head(list);
        while i != NIL && out.len() < self.links.len() {
            out.push(i);
            i = self.link(i).map_or(NIL, |l| l.next);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_symmetric() {
        let a: SocketAddr = "10.0.0.1:1234".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:80".parse().unwrap();
        assert_eq!(FlowKey::new(L4::Tcp, a, b), FlowKey::new(L4::Tcp, b, a));
        assert_ne!(FlowKey::new(L4::Tcp, a, b), FlowKey::new(L4::Udp, a, b));
    }

    #[test]
    fn guesses() {
        let mut t: FlowTable<()> = FlowTable::new(FlowConfig::default());
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        // lower port < 1024
        assert_eq!(
            t.guess(sa("1.1.1.1:80"), sa("2.2.2.2:40000")).1,
            sa("1.1.1.1:80")
        );
        // non-ephemeral vs ephemeral
        assert_eq!(
            t.guess(sa("1.1.1.1:50000"), sa("2.2.2.2:8080")).1,
            sa("2.2.2.2:8080")
        );
        assert_eq!(
            t.guess(sa("1.1.1.1:5432"), sa("2.2.2.2:40000")).1,
            sa("1.1.1.1:5432")
        );
        // neither: destination of the first packet
        assert_eq!(
            t.guess(sa("1.1.1.1:40001"), sa("2.2.2.2:40000")).1,
            sa("2.2.2.2:40000")
        );
        assert_eq!(
            t.guess(sa("1.1.1.1:2000"), sa("2.2.2.2:3000")).1,
            sa("2.2.2.2:3000")
        );
        // hint wins over everything
        t.set_server_ports(&[50000]);
        assert_eq!(
            t.guess(sa("1.1.1.1:50000"), sa("2.2.2.2:80")).1,
            sa("1.1.1.1:50000")
        );
    }
}
