//! Arbitrary packet sequences: nothing panics, bounds hold, every flow is
//! opened and closed exactly once.

mod common;

use common::*;
use proptest::prelude::*;
use wasmtap_decode::{Packet, TcpInfo, Transport};
use wasmtap_flow::{CloseReason, FlowConfig, FlowTable};

#[derive(Debug, Clone)]
struct P {
    from: u8,
    to: u8,
    udp: bool,
    seq: u32,
    ack: u32,
    flags: u8,
    len: usize,
    missing: u32,
    dt: u64,
    advance: bool,
}

fn p() -> impl Strategy<Value = P> {
    (
        (0u8..4, 0u8..4, prop::bool::weighted(0.2)),
        (
            prop_oneof![0u32..5000, any::<u32>(), (u32::MAX - 3000)..=u32::MAX],
            prop_oneof![0u32..5000, any::<u32>()],
            any::<u8>(),
        ),
        (
            0usize..600,
            prop_oneof![Just(0u32), 0u32..3000, any::<u32>()],
        ),
        (
            prop_oneof![Just(0u64), 0u64..3_000_000_000, 0u64..400_000_000_000],
            any::<bool>(),
        ),
    )
        .prop_map(
            |((from, to, udp), (seq, ack, flags), (len, missing), (dt, advance))| P {
                from,
                to,
                udp,
                seq,
                ack,
                flags,
                len,
                missing,
                dt,
                advance,
            },
        )
}

const ENDPOINTS: [&str; 4] = [
    "10.0.0.1:40000",
    "10.0.0.2:80",
    "10.0.0.3:53",
    "[2001:db8::1]:443",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn arbitrary_packets(ps in proptest::collection::vec(p(), 1..120), small in any::<bool>()) {
        let cfg = if small {
            FlowConfig {
                max_flows: 2,
                max_ooo_bytes_per_direction: 700,
                max_ooo_bytes_total: 1000,
                gap_timeout_ns: 1_000_000,
                tcp_idle_timeout_ns: 10_000_000_000,
                udp_idle_timeout_ns: 5_000_000_000,
                tcp_linger_ns: 1_000_000_000,
                server_ports: vec![443],
            }
        } else {
            FlowConfig::default()
        };
        let max_flows = cfg.max_flows;
        let total = cfg.max_ooo_bytes_total;
        let mut t: FlowTable<u64> = FlowTable::new(cfg);
        let mut r = Rec::default();
        let payload = vec![0x5a_u8; 600];
        let mut ts = 0u64;
        for q in &ps {
            ts = ts.saturating_add(q.dt);
            let (s, d) = (sa(ENDPOINTS[q.from as usize]), sa(ENDPOINTS[q.to as usize]));
            let pkt = Packet {
                src: s.ip(),
                dst: d.ip(),
                src_port: s.port(),
                dst_port: d.port(),
                transport: if q.udp {
                    Transport::Udp
                } else {
                    Transport::Tcp(TcpInfo {
                        seq: q.seq,
                        ack: q.ack,
                        fin: q.flags & 1 != 0,
                        syn: q.flags & 2 != 0,
                        rst: q.flags & 4 != 0 && q.flags & 0x40 != 0,
                        ack_flag: q.flags & 0x10 != 0,
                        window: 0,
                    })
                },
                payload: &payload[..q.len],
                missing: q.missing,
                vlan: None,
            };
            t.process(&pkt, ts, &mut r);
            if q.advance {
                t.advance(ts, &mut r);
            }
            prop_assert!(t.len() <= max_flows);
            prop_assert!(t.ooo_bytes() <= total);
        }
        t.close_all(CloseReason::EndOfCapture, ts, &mut r);
        prop_assert!(t.is_empty());
        prop_assert_eq!(t.ooo_bytes(), 0);
        r.check_lifecycle();
        let st = t.stats();
        let closed: u64 = st.flows_closed.iter().sum();
        prop_assert_eq!(closed, st.flows_opened);
        prop_assert_eq!(r.opens().len() as u64, st.flows_opened);
    }
}
