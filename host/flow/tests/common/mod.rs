//! Test helpers: packet construction and a recording handler.

#![allow(dead_code, unreachable_pub)]

/// The classic-pcap reader of wasmtap-decode's tests (one copy for both crates).
#[path = "../../../decode/tests/common/mod.rs"]
pub mod pcap;

use std::net::SocketAddr;

use wasmtap_decode::{Packet, TcpInfo, Transport};
use wasmtap_flow::{CloseReason, Direction, FlowHandler, FlowMeta};

pub fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// A TCP packet; `flags` letters: S A F R (P is ignored).
pub fn tcp<'a>(
    src: &str,
    dst: &str,
    seq: u32,
    ack: u32,
    flags: &str,
    payload: &'a [u8],
) -> Packet<'a> {
    let (s, d) = (sa(src), sa(dst));
    Packet {
        src: s.ip(),
        dst: d.ip(),
        src_port: s.port(),
        dst_port: d.port(),
        transport: Transport::Tcp(TcpInfo {
            seq,
            ack,
            syn: flags.contains('S'),
            ack_flag: flags.contains('A'),
            fin: flags.contains('F'),
            rst: flags.contains('R'),
            window: 65535,
        }),
        payload,
        missing: 0,
        vlan: None,
    }
}

pub fn udp<'a>(src: &str, dst: &str, payload: &'a [u8]) -> Packet<'a> {
    let (s, d) = (sa(src), sa(dst));
    Packet {
        src: s.ip(),
        dst: d.ip(),
        src_port: s.port(),
        dst_port: d.port(),
        transport: Transport::Udp,
        payload,
        missing: 0,
        vlan: None,
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ev {
    Open {
        id: u64,
        client: SocketAddr,
        server: SocketAddr,
    },
    Data {
        id: u64,
        dir: Direction,
        data: Vec<u8>,
    },
    Gap {
        id: u64,
        dir: Direction,
        len: u64,
    },
    Close {
        id: u64,
        reason: CloseReason,
    },
}

/// Records every callback; the per-flow state is the flow id.
#[derive(Default)]
pub struct Rec {
    pub ev: Vec<Ev>,
    pub metas: Vec<FlowMeta>,
}

impl FlowHandler<u64> for Rec {
    fn on_open(&mut self, flow: &FlowMeta, _ts: u64) -> u64 {
        assert!(
            !self
                .ev
                .iter()
                .any(|e| matches!(e, Ev::Open { id, .. } if *id == flow.id)),
            "opened twice"
        );
        self.ev.push(Ev::Open {
            id: flow.id,
            client: flow.client,
            server: flow.server,
        });
        flow.id
    }
    fn on_data(&mut self, flow: &FlowMeta, st: &mut u64, dir: Direction, _ts: u64, data: &[u8]) {
        assert_eq!(*st, flow.id);
        assert!(!data.is_empty());
        self.ev.push(Ev::Data {
            id: flow.id,
            dir,
            data: data.to_vec(),
        });
    }
    fn on_gap(&mut self, flow: &FlowMeta, st: &mut u64, dir: Direction, _ts: u64, len: u64) {
        assert_eq!(*st, flow.id);
        assert!(len > 0);
        self.ev.push(Ev::Gap {
            id: flow.id,
            dir,
            len,
        });
    }
    fn on_close(&mut self, flow: &FlowMeta, st: u64, reason: CloseReason, _ts: u64) {
        assert_eq!(st, flow.id);
        self.ev.push(Ev::Close {
            id: flow.id,
            reason,
        });
        self.metas.push(flow.clone());
    }
}

impl Rec {
    /// The stream of flow `id` in `dir`, gaps as `?` bytes.
    pub fn stream(&self, id: u64, dir: Direction) -> Vec<u8> {
        let mut v = Vec::new();
        for e in &self.ev {
            match e {
                Ev::Data {
                    id: i,
                    dir: d,
                    data,
                } if *i == id && *d == dir => v.extend_from_slice(data),
                Ev::Gap { id: i, dir: d, len } if *i == id && *d == dir => {
                    v.extend(std::iter::repeat_n(b'?', *len as usize))
                }
                _ => {}
            }
        }
        v
    }

    /// Stream as (byte or None for a gap byte).
    pub fn stream_opt(&self, id: u64, dir: Direction) -> Vec<Option<u8>> {
        let mut v = Vec::new();
        for e in &self.ev {
            match e {
                Ev::Data {
                    id: i,
                    dir: d,
                    data,
                } if *i == id && *d == dir => v.extend(data.iter().map(|b| Some(*b))),
                Ev::Gap { id: i, dir: d, len } if *i == id && *d == dir => {
                    v.extend(std::iter::repeat_n(None, *len as usize))
                }
                _ => {}
            }
        }
        v
    }

    pub fn gaps(&self, id: u64) -> Vec<(Direction, u64)> {
        self.ev
            .iter()
            .filter_map(|e| match e {
                Ev::Gap { id: i, dir, len } if *i == id => Some((*dir, *len)),
                _ => None,
            })
            .collect()
    }

    pub fn closes(&self) -> Vec<(u64, CloseReason)> {
        self.ev
            .iter()
            .filter_map(|e| match e {
                Ev::Close { id, reason } => Some((*id, *reason)),
                _ => None,
            })
            .collect()
    }

    pub fn opens(&self) -> Vec<(u64, SocketAddr, SocketAddr)> {
        self.ev
            .iter()
            .filter_map(|e| match e {
                Ev::Open { id, client, server } => Some((*id, *client, *server)),
                _ => None,
            })
            .collect()
    }

    /// Every flow that was opened was closed exactly once, and nothing
    /// happened to a flow before its open or after its close.
    pub fn check_lifecycle(&self) {
        use std::collections::HashMap;
        let mut state: HashMap<u64, u8> = HashMap::new(); // 1 open, 2 closed
        for e in &self.ev {
            let (id, new) = match e {
                Ev::Open { id, .. } => (*id, 1),
                Ev::Data { id, .. } | Ev::Gap { id, .. } => (*id, 1),
                Ev::Close { id, .. } => (*id, 2),
            };
            let cur = state.get(&id).copied().unwrap_or(0);
            match e {
                Ev::Open { .. } => assert_eq!(cur, 0, "flow {id} opened twice"),
                Ev::Data { .. } | Ev::Gap { .. } => {
                    assert_eq!(cur, 1, "flow {id} data outside open")
                }
                Ev::Close { .. } => assert_eq!(cur, 1, "flow {id} closed while not open"),
            }
            state.insert(id, new);
        }
    }
}
