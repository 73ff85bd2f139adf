//! wasmtap-flow: sans-IO bidirectional flow table with TCP reassembly.
//!
//! [`FlowTable::process`] takes decoded packets ([`wasmtap_decode::Packet`])
//! with their capture timestamps and calls a [`FlowHandler`] with each flow's
//! byte streams, in order, per direction: in-order TCP data goes out straight
//! from the packet (no copy); out-of-order segments are buffered (bounded)
//! until the hole before them is filled or given up on, which is always
//! reported with [`FlowHandler::on_gap`], never silently.
//!
//! Time only comes from the arguments: [`FlowTable::advance`] expires idle
//! flows and reports holes that waited too long. Every bound is a
//! [`FlowConfig`] field with a counter in [`FlowStats`].

use std::net::SocketAddr;

mod reassembly;
mod table;

pub use table::FlowTable;

/// Direction of data within a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Client to server.
    ToServer = 0,
    /// Server to client.
    ToClient = 1,
}

impl Direction {
    /// 0 for [`Direction::ToServer`], 1 for [`Direction::ToClient`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The other direction.
    pub fn reverse(self) -> Direction {
        match self {
            Direction::ToServer => Direction::ToClient,
            Direction::ToClient => Direction::ToServer,
        }
    }
}

/// Transport protocol of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum L4 {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

/// Why a flow ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// FIN seen in both directions.
    Fin = 0,
    /// RST seen.
    Reset = 1,
    /// No packet for the idle timeout.
    IdleTimeout = 2,
    /// [`FlowTable::close_all`] at the end of the capture.
    EndOfCapture = 3,
    /// Evicted to make room (table full).
    Evicted = 4,
}

impl CloseReason {
    /// Number of reasons (length of [`FlowStats::flows_closed`]).
    pub const COUNT: usize = 5;

    /// Every reason, in index order.
    pub const ALL: [CloseReason; CloseReason::COUNT] = [
        CloseReason::Fin,
        CloseReason::Reset,
        CloseReason::IdleTimeout,
        CloseReason::EndOfCapture,
        CloseReason::Evicted,
    ];

    /// Stable snake_case name, for counters.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Fin => "fin",
            CloseReason::Reset => "reset",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::EndOfCapture => "end_of_capture",
            CloseReason::Evicted => "evicted",
        }
    }

    /// Index in [`FlowStats::flows_closed`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// What is known about a flow; handed to every [`FlowHandler`] call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowMeta {
    /// Unique id within this table (1, 2, ... in order of creation).
    pub id: u64,
    /// Transport protocol.
    pub l4: L4,
    /// The endpoint that opened the connection (or was guessed to).
    pub client: SocketAddr,
    /// The endpoint that accepted it (or was guessed to).
    pub server: SocketAddr,
    /// Capture time of the first packet.
    pub first_ns: u64,
    /// Capture time of the latest packet.
    pub last_ns: u64,
    /// Packets per direction (index with [`Direction::index`]).
    pub packets: [u64; 2],
    /// Transport payload bytes per direction as sent on the wire (captured
    /// plus missing, retransmissions included).
    pub bytes: [u64; 2],
    /// Whether the TCP handshake (SYN or SYN-ACK) was seen.
    pub saw_syn: bool,
    /// Payload bytes received again after they had been delivered, per
    /// direction (final in [`FlowHandler::on_close`]).
    pub retransmitted: [u64; 2],
    /// Gaps (bytes missing from the capture) reported, per direction.
    pub gaps: [u64; 2],
    /// Bytes reported as gaps, per direction.
    pub gap_bytes: [u64; 2],
    /// TCP handshake round trip as the capture point saw it: SYN to the
    /// client's first ACK after the SYN-ACK. `None` until all three were seen.
    pub handshake_rtt_ns: Option<u64>,
}

/// Receives the flows' events.
///
/// For each flow: exactly one `on_open`, then `on_data`/`on_gap` in stream
/// order per direction, then exactly one `on_close`. `on_open` is called
/// right before the flow's first other event, so by then the client/server
/// roles are final (roles never change once the flow is open).
pub trait FlowHandler<S> {
    /// A flow starts; returns its state.
    fn on_open(&mut self, flow: &FlowMeta, ts_ns: u64) -> S;
    /// Next bytes of the stream in `dir`.
    fn on_data(&mut self, flow: &FlowMeta, state: &mut S, dir: Direction, ts_ns: u64, data: &[u8]);
    /// `len` bytes of the stream in `dir` are missing from the capture; the
    /// next `on_data` for `dir` continues after them.
    fn on_gap(&mut self, flow: &FlowMeta, state: &mut S, dir: Direction, ts_ns: u64, len: u64);
    /// The flow ended.
    fn on_close(&mut self, flow: &FlowMeta, state: S, reason: CloseReason, ts_ns: u64);
}

/// Bounds and timeouts of a [`FlowTable`]. Times are capture time, in ns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowConfig {
    /// Flows tracked at once; when full, the least recently seen flow is
    /// evicted (`flows_evicted`).
    pub max_flows: usize,
    /// An open TCP flow without packets this long is closed (`IdleTimeout`).
    pub tcp_idle_timeout_ns: u64,
    /// After FIN/RST a closed TCP flow is kept this long to absorb late
    /// retransmissions and ACKs (`late_packets`).
    pub tcp_linger_ns: u64,
    /// A UDP flow without packets this long is closed (`IdleTimeout`).
    pub udp_idle_timeout_ns: u64,
    /// Out-of-order bytes buffered per flow direction; beyond it the oldest
    /// hole is given up on (reported as a gap).
    pub max_ooo_bytes_per_direction: usize,
    /// Out-of-order bytes buffered over all flows; beyond it new
    /// out-of-order segments are dropped (`ooo_cap_drops`) and later
    /// reported as part of a gap.
    pub max_ooo_bytes_total: usize,
    /// A hole that waited this long is reported as a gap and skipped.
    pub gap_timeout_ns: u64,
    /// Ports known to be server ports (role guessing when the handshake was
    /// not seen).
    pub server_ports: Vec<u16>,
}

impl Default for FlowConfig {
    fn default() -> Self {
        Self {
            max_flows: 262_144,
            tcp_idle_timeout_ns: 300_000_000_000,
            tcp_linger_ns: 5_000_000_000,
            udp_idle_timeout_ns: 60_000_000_000,
            max_ooo_bytes_per_direction: 1 << 20,
            max_ooo_bytes_total: 256 << 20,
            gap_timeout_ns: 2_000_000_000,
            server_ports: Vec::new(),
        }
    }
}

/// Flow-table counters. All only ever increase.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Packets processed.
    pub packets: u64,
    /// Flows created.
    pub flows_opened: u64,
    /// Flows closed, per reason (index with [`CloseReason::index`]).
    pub flows_closed: [u64; CloseReason::COUNT],
    /// Flows evicted because the table was full (also in `flows_closed`).
    pub flows_evicted: u64,
    /// Of those, TCP flows that had carried no payload (evicted first).
    pub flows_evicted_bare: u64,
    /// Flows refused whole because the pipeline was behind (overload).
    pub flows_shed: u64,
    /// Packets of shed flows.
    pub packets_shed: u64,
    /// Shed flows not remembered (the set is bounded by `max_flows`): their
    /// later packets may start them mid-stream.
    pub shed_untracked: u64,
    /// Payload bytes handed to `on_data`.
    pub bytes_delivered: u64,
    /// Payload bytes received again after they had been delivered.
    pub retransmitted_bytes: u64,
    /// Bytes of out-of-order segments that overlapped buffered ones.
    pub overlap_bytes: u64,
    /// Overlaps whose bytes differed from the first copy (which was kept).
    pub overlap_mismatches: u64,
    /// Segments buffered out of order.
    pub ooo_segments: u64,
    /// Out-of-order segments dropped because `max_ooo_bytes_total` was hit.
    pub ooo_cap_drops: u64,
    /// Holes given up on because `max_ooo_bytes_per_direction` was hit.
    pub ooo_direction_flushes: u64,
    /// Gaps reported.
    pub gaps: u64,
    /// Bytes reported as gaps.
    pub gap_bytes: u64,
    /// Segments whose data acknowledged bytes of the other direction not
    /// yet delivered: held back so an answer never overtakes its request.
    pub held_answers: u64,
    /// Holds given up because holding more would break a buffer bound.
    pub holds_given_up: u64,
    /// Segments cut short by the capture (`missing > 0`).
    pub truncated_segments: u64,
    /// TCP flows created without seeing the handshake.
    pub syn_less_flows: u64,
    /// Packets absorbed by a closed flow lingering after FIN/RST.
    pub late_packets: u64,
    /// Flows whose roles were swapped after a later handshake packet.
    pub role_swaps: u64,
}

impl FlowStats {
    /// Flows closed for `reason`.
    pub fn closed(&self, reason: CloseReason) -> u64 {
        self.flows_closed.get(reason.index()).copied().unwrap_or(0)
    }

    /// Every counter as `(stable name, value)`, for metric export.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let base = [
            ("packets", self.packets),
            ("flows_opened", self.flows_opened),
            ("flows_evicted", self.flows_evicted),
            ("flows_evicted_bare", self.flows_evicted_bare),
            ("flows_shed", self.flows_shed),
            ("packets_shed", self.packets_shed),
            ("shed_untracked", self.shed_untracked),
            ("bytes_delivered", self.bytes_delivered),
            ("retransmitted_bytes", self.retransmitted_bytes),
            ("overlap_bytes", self.overlap_bytes),
            ("overlap_mismatches", self.overlap_mismatches),
            ("ooo_segments", self.ooo_segments),
            ("ooo_cap_drops", self.ooo_cap_drops),
            ("ooo_direction_flushes", self.ooo_direction_flushes),
            ("gaps", self.gaps),
            ("gap_bytes", self.gap_bytes),
            ("held_answers", self.held_answers),
            ("holds_given_up", self.holds_given_up),
            ("truncated_segments", self.truncated_segments),
            ("syn_less_flows", self.syn_less_flows),
            ("late_packets", self.late_packets),
            ("role_swaps", self.role_swaps),
        ];
        const CLOSED: [&str; CloseReason::COUNT] = [
            "flows_closed_fin",
            "flows_closed_reset",
            "flows_closed_idle_timeout",
            "flows_closed_end_of_capture",
            "flows_closed_evicted",
        ];
        base.into_iter()
            .chain(CLOSED.into_iter().zip(self.flows_closed.iter().copied()))
    }
}
