//! A flow's decoding: the per-flow [`Session`] the flow table keeps, why a
//! session ended, and how a decoder failed. (Directions, transports and
//! close reasons are the flow table's own types, re-exported.)

use std::sync::Arc;

use wasmtime::component::ResourceAny;

use wasmtap_flow::L4;

/// Why a session stopped decoding before its flow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// No decoder claimed the flow.
    NoDecoder,
    /// The decoder returned an error (its reason).
    DecodeError(String),
    /// The decoder failed: a trap, a deadline or a limit (see [`Failure`]).
    Failed(Failure),
    /// The decoder left more unconsumed bytes than the bound.
    PendingOverflow,
    /// The decoder broke the contract: it said it consumed more bytes than
    /// it was offered.
    ContractViolation,
    /// The decoder is quarantined after repeated failures.
    Quarantined,
    /// The flow ended and the session was closed normally.
    Closed,
}

impl SessionEnd {
    /// A stable, low-cardinality name for counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionEnd::NoDecoder => "no_decoder",
            SessionEnd::DecodeError(_) => "decode_error",
            SessionEnd::Failed(f) => f.as_str(),
            SessionEnd::PendingOverflow => "pending_overflow",
            SessionEnd::ContractViolation => "contract_violation",
            SessionEnd::Quarantined => "quarantined",
            SessionEnd::Closed => "closed",
        }
    }
}

/// How a plugin call failed. Each ends the flow's session and re-creates the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The call ran past its CPU deadline (epoch interruption).
    Deadline,
    /// The instance hit its memory or table bound.
    Limit,
    /// Any other trap: a panic, an out-of-bounds access, unreachable...
    Trap,
}

impl Failure {
    /// A stable name for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Deadline => "deadline",
            Failure::Limit => "limit",
            Failure::Trap => "trap",
        }
    }
}

pub(super) enum State {
    Undecided,
    /// A decoder claims the server port; confirmed (or overruled) by the first bytes.
    ByPort(usize),
    Active {
        slot: usize,
        generation: u64,
        resource: ResourceAny,
    },
    Ended(SessionEnd),
}

/// Decoding state of one flow, owned by the flow table entry.
pub struct Session {
    pub(super) l4: L4,
    pub(super) server_port: u16,
    pub(super) state: State,
    pub(super) pending: [Vec<u8>; 2],
    pub(super) protocol: Option<Arc<str>>,
    /// The flow's endpoints (client, server), for failure reports.
    pub(super) flow: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    /// Bytes offered so far per direction (the stream offset of the next offer).
    pub(super) offset: [u64; 2],
    /// The flow's roles were guessed (no handshake seen): a decoder's probe
    /// may reverse them.
    pub(super) roles_guessed: bool,
    /// The guess was wrong: directions are reversed for the decoder.
    pub(super) swapped: bool,
    /// First and latest packet times offered to the decoder: messages'
    /// timestamps are clamped into them.
    pub(super) window: Option<(u64, u64)>,
    /// The flow's random generator state (WASI random reads it).
    pub(super) rng: u64,
}

impl Session {
    /// A packet time the decoder is shown.
    pub(super) fn widen(&mut self, ts_ns: u64) {
        self.window = Some(match self.window {
            None => (ts_ns, ts_ns),
            Some((lo, hi)) => (lo.min(ts_ns), hi.max(ts_ns)),
        });
    }

    /// Names the flow (client, server) in failure reports; `guessed`: the
    /// roles come from ports, not from a handshake (a decoder that
    /// recognises requests only in the other direction then reverses them).
    pub fn set_flow(
        &mut self,
        client: std::net::SocketAddr,
        server: std::net::SocketAddr,
        guessed: bool,
    ) {
        self.flow = Some((client, server));
        self.roles_guessed = guessed;
        self.rng = crate::det::seed((client, server));
    }

    /// Whether the flow's guessed roles were reversed (the table's client is
    /// the server).
    pub fn swapped(&self) -> bool {
        self.swapped
    }

    pub(super) fn flow_text(&self) -> String {
        match self.flow {
            Some((c, s)) => format!("{c} -> {s}"),
            None => format!("port {}", self.server_port),
        }
    }

    /// The protocol of the decoder handling this flow, once chosen.
    pub fn protocol(&self) -> Option<&Arc<str>> {
        self.protocol.as_ref()
    }
    /// Why decoding stopped, if it did.
    pub fn ended(&self) -> Option<&SessionEnd> {
        match &self.state {
            State::Ended(e) => Some(e),
            _ => None,
        }
    }
}
