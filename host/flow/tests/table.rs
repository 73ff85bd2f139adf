//! Flow-table behaviour, one test per rule.

mod common;

use common::*;
use wasmtap_flow::{CloseReason, Direction, FlowConfig, FlowTable, L4};

use Direction::{ToClient, ToServer};

const C: &str = "10.0.0.1:40000";
const S: &str = "10.0.0.2:80";
const SEC: u64 = 1_000_000_000;

fn table() -> FlowTable<u64> {
    FlowTable::new(FlowConfig::default())
}

/// SYN / SYN-ACK / ACK with client ISN `ci` and server ISN `si`.
fn handshake(t: &mut FlowTable<u64>, r: &mut Rec, ci: u32, si: u32, ts: u64) {
    t.process(&tcp(C, S, ci, 0, "S", b""), ts, r);
    t.process(&tcp(S, C, si, ci.wrapping_add(1), "SA", b""), ts, r);
    t.process(
        &tcp(C, S, ci.wrapping_add(1), si.wrapping_add(1), "A", b""),
        ts,
        r,
    );
}

#[test]
fn full_connection() {
    let (mut t, mut r) = (table(), Rec::default());
    handshake(&mut t, &mut r, 100, 5000, 0);
    // Handshake only: nothing reported yet (on_open is lazy).
    assert!(r.ev.is_empty());
    assert_eq!(t.len(), 1);
    t.process(
        &tcp(C, S, 101, 5001, "PA", b"GET / HTTP/1.1\r\n\r\n"),
        1,
        &mut r,
    );
    t.process(
        &tcp(S, C, 5001, 119, "PA", b"HTTP/1.1 200 OK\r\n"),
        2,
        &mut r,
    );
    t.process(&tcp(S, C, 5018, 119, "PA", b"\r\nbody"), 3, &mut r);
    t.process(&tcp(C, S, 119, 5024, "FA", b""), 4, &mut r);
    assert!(r.closes().is_empty());
    t.process(&tcp(S, C, 5024, 120, "FA", b""), 5, &mut r);
    assert_eq!(r.closes(), vec![(1, CloseReason::Fin)]);
    assert_eq!(r.opens(), vec![(1, sa(C), sa(S))]);
    assert_eq!(r.stream(1, ToServer), b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(r.stream(1, ToClient), b"HTTP/1.1 200 OK\r\n\r\nbody");
    // The last ACK is absorbed by the lingering flow.
    t.process(&tcp(C, S, 120, 5025, "A", b""), 6, &mut r);
    assert_eq!(t.stats().late_packets, 1);
    let m = &r.metas[0];
    assert_eq!(
        (m.l4, m.saw_syn, m.first_ns, m.last_ns),
        (L4::Tcp, true, 0, 5)
    );
    assert_eq!(m.packets, [4, 4]);
    assert_eq!(m.bytes, [18, 23]);
    assert_eq!(t.stats().closed(CloseReason::Fin), 1);
    assert_eq!(t.stats().bytes_delivered, 41);
    assert_eq!(t.stats().gaps, 0);
    // Lingering ends after tcp_linger_ns.
    t.advance(5 + 4 * SEC, &mut r);
    assert_eq!(t.len(), 1);
    t.advance(5 + 5 * SEC, &mut r);
    assert_eq!(t.len(), 0);
    r.check_lifecycle();
}

#[test]
fn syn_ack_before_syn() {
    let (mut t, mut r) = (table(), Rec::default());
    t.process(&tcp(S, C, 7000, 301, "SA", b""), 0, &mut r);
    t.process(&tcp(C, S, 300, 0, "S", b""), 1, &mut r);
    t.process(&tcp(C, S, 301, 7001, "A", b"req"), 2, &mut r);
    t.process(&tcp(S, C, 7001, 304, "A", b"resp"), 3, &mut r);
    assert_eq!(r.opens(), vec![(1, sa(C), sa(S))]);
    assert_eq!(r.stream(1, ToServer), b"req");
    assert_eq!(r.stream(1, ToClient), b"resp");
    assert_eq!(t.stats().syn_less_flows, 0);
    assert_eq!(t.stats().role_swaps, 0);
}

#[test]
fn syn_ack_only_sets_client_sequence() {
    // The client SYN is missing; the SYN-ACK's ACK gives the client's ISN+1,
    // so the first request byte is offset 0 and a lost first segment shows
    // as a gap.
    let (mut t, mut r) = (table(), Rec::default());
    t.process(&tcp(S, C, 7000, 301, "SA", b""), 0, &mut r);
    t.process(&tcp(C, S, 305, 7001, "A", b"world"), 1, &mut r);
    t.process(&tcp(C, S, 301, 7001, "A", b"hell"), 2, &mut r);
    assert_eq!(r.stream(1, ToServer), b"hellworld");
    assert_eq!(r.opens(), vec![(1, sa(C), sa(S))]);
}

#[test]
fn mid_stream_role_guessing() {
    let cases: [(&str, &str, &[u16], &str); 5] = [
        // well-known port
        ("10.0.0.2:80", "10.0.0.1:40000", &[], "10.0.0.2:80"),
        // non-ephemeral vs ephemeral
        ("10.0.0.1:50123", "10.0.0.2:6379", &[], "10.0.0.2:6379"),
        ("10.0.0.2:6379", "10.0.0.1:50123", &[], "10.0.0.2:6379"),
        // hint beats the < 1024 rule
        ("10.0.0.1:9092", "10.0.0.2:443", &[9092], "10.0.0.1:9092"),
        // no clue: destination of the first packet
        ("10.0.0.1:40001", "10.0.0.2:40002", &[], "10.0.0.2:40002"),
    ];
    for (src, dst, hints, server) in cases {
        let mut t = table();
        t.set_server_ports(hints);
        let mut r = Rec::default();
        t.process(&tcp(src, dst, 1, 1, "A", b"x"), 0, &mut r);
        assert_eq!(r.opens()[0].2, sa(server), "{src} -> {dst}");
        assert_eq!(t.stats().syn_less_flows, 1);
    }
    // UDP too.
    let (mut t, mut r) = (table(), Rec::default());
    t.process(&udp("10.0.0.9:53", "10.0.0.1:41000", b"resp"), 0, &mut r);
    assert_eq!(r.opens()[0].2, sa("10.0.0.9:53"));
    assert_eq!(r.stream(1, ToClient), b"resp");
}

#[test]
fn server_ports_from_config() {
    let mut t: FlowTable<u64> = FlowTable::new(FlowConfig {
        server_ports: vec![9000],
        ..FlowConfig::default()
    });
    let mut r = Rec::default();
    t.process(
        &tcp("10.0.0.1:9000", "10.0.0.2:100", 1, 1, "A", b"x"),
        0,
        &mut r,
    );
    assert_eq!(r.opens()[0].2, sa("10.0.0.1:9000"));
}

#[test]
fn handshake_fixes_guessed_roles_until_data() {
    // First packet is a pure ACK from the server (guessed wrong: both
    // ephemeral, so its destination is taken as the server); the SYN-ACK
    // that follows in file order fixes it.
    let (a, b) = ("10.0.0.1:40000", "10.0.0.2:40001");
    let (mut t, mut r) = (table(), Rec::default());
    t.process(&tcp(a, b, 900, 11, "A", b""), 0, &mut r);
    t.process(&tcp(a, b, 899, 11, "SA", b""), 1, &mut r);
    t.process(&tcp(b, a, 11, 900, "A", b"hi"), 2, &mut r);
    assert_eq!(r.opens(), vec![(1, sa(b), sa(a))]);
    assert_eq!(r.stream(1, ToServer), b"hi");
    assert_eq!(t.stats().role_swaps, 1);

    // Once data went out, roles stay.
    let (mut t, mut r) = (table(), Rec::default());
    t.process(&tcp(a, b, 900, 11, "A", b"data"), 0, &mut r);
    t.process(&tcp(a, b, 899, 11, "SA", b""), 1, &mut r);
    assert_eq!(r.opens(), vec![(1, sa(a), sa(b))]);
    assert_eq!(t.stats().role_swaps, 0);
}

#[test]
fn retransmission_and_out_of_order() {
    let (mut t, mut r) = (table(), Rec::default());
    handshake(&mut t, &mut r, 0, 0, 0);
    t.process(&tcp(C, S, 1, 1, "A", b"aaaa"), 1, &mut r);
    t.process(&tcp(C, S, 9, 1, "A", b"cccc"), 2, &mut r);
    t.process(&tcp(C, S, 1, 1, "A", b"aaaa"), 3, &mut r);
    t.process(&tcp(C, S, 5, 1, "A", b"bbbb"), 4, &mut r);
    t.process(&tcp(C, S, 3, 1, "A", b"aabbbbcc"), 5, &mut r);
    assert_eq!(r.stream(1, ToServer), b"aaaabbbbcccc");
    let s = t.stats();
    assert_eq!(s.retransmitted_bytes, 12);
    assert_eq!(s.ooo_segments, 1);
    assert_eq!(s.gaps, 0);
    assert_eq!(t.ooo_bytes(), 0);
}

#[test]
fn overlapping_with_different_bytes() {
    let (mut t, mut r) = (table(), Rec::default());
    handshake(&mut t, &mut r, 0, 0, 0);
    t.process(&tcp(C, S, 1, 1, "A", b"ab"), 1, &mut r);
    t.process(&tcp(C, S, 5, 1, "A", b"EFGH"), 2, &mut r);
    t.process(&tcp(C, S, 7, 1, "A", b"XYIJ"), 3, &mut r);
    t.process(&tcp(C, S, 3, 1, "A", b"cdQQ"), 4, &mut r);
    assert_eq!(r.stream(1, ToServer), b"abcdEFGHIJ");
    assert_eq!(t.stats().overlap_bytes, 4);
    assert_eq!(t.stats().overlap_mismatches, 2);
}

#[test]
fn gap_reported_after_timeout() {
    let (mut t, mut r) = (table(), Rec::default());
    handshake(&mut t, &mut r, 0, 0, 0);
    t.process(&tcp(C, S, 1, 1, "A", b"abc"), SEC, &mut r);
    t.process(&tcp(C, S, 7, 1, "A", b"ghi"), SEC, &mut r);
    t.advance(2 * SEC, &mut r);
    t.advance(3 * SEC - 1, &mut r);
    assert_eq!(r.stream(1, ToServer), b"abc");
    t.advance(3 * SEC + 1, &mut r);
    assert_eq!(r.stream(1, ToServer), b"abc???ghi");
    assert_eq!(r.gaps(1), vec![(ToServer, 3)]);
    assert_eq!((t.stats().gaps, t.stats().gap_bytes), (1, 3));
    // Data after the gap flows normally; the late segment is a retransmit.
    t.process(&tcp(C, S, 4, 1, "A", b"def"), 4 * SEC, &mut r);
    t.process(&tcp(C, S, 10, 1, "A", b"jk"), 4 * SEC, &mut r);
    assert_eq!(r.stream(1, ToServer), b"abc???ghijk");
}

#[test]
fn gap_timeout_also_checked_on_packets() {
    let (mut t, mut r) = (table(), Rec::default());
    handshake(&mut t, &mut r, 0, 0, 0);
    t.process(&tcp(C, S, 1, 1, "A", b"abc"), 0, &mut r);
    t.process(&tcp(C, S, 7, 1, "A", b"ghi"), 0, &mut r);
    // A packet of the same flow after the timeout, without advance().
    t.process(&tcp(S, C, 1, 4, "A", b""), 2 * SEC, &mut r);
    assert_eq!(r.stream(1, ToServer), b"abc???ghi");
}

#[test]
fn gap_reported_when_peer_acks_beyond_hole() {
    let (mut t, mut r) = (table(), Rec::default());
    handshake(&mut t, &mut r, 0, 0, 0);
    t.process(&tcp(C, S, 1, 1, "A", b"abc"), 1, &mut r);
    t.process(&tcp(C, S, 7, 1, "A", b"ghi"), 2, &mut r);
    assert_eq!(r.stream(1, ToServer), b"abc");
    // The server acks everything: it got the segment the capture missed.
    t.process(&tcp(S, C, 1, 10, "A", b""), 3, &mut r);
    assert_eq!(r.stream(1, ToServer), b"abc???ghi");
    // An ACK of data not seen at all waits (the data may come late).
    t.process(&tcp(S, C, 1, 20, "A", b""), 4, &mut r);
    t.process(&tcp(C, S, 10, 1, "A", b"jklmnopqrs"), 5, &mut r);
    assert_eq!(r.stream(1, ToServer), b"abc???ghijklmnopqrs");
    assert_eq!(t.stats().gaps, 1);
}

#[test]
fn per_direction_cap_gives_up_hole() {
    let cfg = FlowConfig {
        max_ooo_bytes_per_direction: 200,
        ..FlowConfig::default()
    };
    let (mut t, mut r) = (FlowTable::new(cfg), Rec::default());
    handshake(&mut t, &mut r, 0, 0, 0);
    t.process(&tcp(C, S, 11, 1, "A", &[b'b'; 100]), 1, &mut r);
    assert!(r.stream(1, ToServer).is_empty());
    t.process(&tcp(C, S, 111, 1, "A", &[b'c'; 100]), 2, &mut r);
    // Gap of 10, the first segment from the buffer, the second in order.
    let s = r.stream(1, ToServer);
    assert_eq!(&s[..10], b"??????????");
    assert_eq!(s.len(), 210);
    assert_eq!(t.ooo_bytes(), 0);
    assert_eq!(t.stats().ooo_direction_flushes, 1);
}

#[test]
fn total_cap_drops_newest() {
    let cfg = FlowConfig {
        max_ooo_bytes_total: 150,
        ..FlowConfig::default()
    };
    let (mut t, mut r) = (FlowTable::new(cfg), Rec::default());
    handshake(&mut t, &mut r, 0, 0, 0);
    t.process(&tcp(C, S, 11, 1, "A", &[b'b'; 50]), 1, &mut r);
    t.process(&tcp(C, S, 71, 1, "A", &[b'c'; 50]), 2, &mut r);
    assert_eq!(t.stats().ooo_cap_drops, 1);
    // The dropped bytes end up in a gap, never silently.
    t.close_all(CloseReason::EndOfCapture, 3, &mut r);
    let s = r.stream(1, ToServer);
    assert_eq!(s.len(), 120);
    assert_eq!(s.iter().filter(|&&b| b == b'b').count(), 50);
    assert_eq!(t.ooo_bytes(), 0);
}

#[test]
fn sequence_wraparound() {
    let (mut t, mut r) = (table(), Rec::default());
    let isn = u32::MAX - 5;
    handshake(&mut t, &mut r, isn, 77, 0);
    let mut seq = isn.wrapping_add(1);
    let mut want = Vec::new();
    let chunks: [&[u8]; 4] = [b"0123", b"4567", b"89ab", b"cdef"];
    // Deliver the 2nd chunk (which spans the wrap) after the 3rd.
    let mut segs = Vec::new();
    for c in chunks {
        segs.push((seq, c));
        seq = seq.wrapping_add(c.len() as u32);
        want.extend_from_slice(c);
    }
    for i in [0, 2, 1, 3] {
        let (s, c) = segs[i];
        t.process(&tcp(C, S, s, 78, "A", c), 1, &mut r);
    }
    assert_eq!(r.stream(1, ToServer), want);
    // The ACK across the wrap does not create a hole.
    t.process(&tcp(S, C, 78, seq, "A", b""), 2, &mut r);
    assert_eq!(t.stats().gaps, 0);
    t.process(&tcp(C, S, seq, 78, "FA", b""), 3, &mut r);
    t.process(&tcp(S, C, 78, seq.wrapping_add(1), "FA", b""), 3, &mut r);
    assert_eq!(r.closes(), vec![(1, CloseReason::Fin)]);
    assert_eq!(t.stats().gaps, 0);
}

#[test]
fn fin_both_ways_flushes_holes_then_closes() {
    let (mut t, mut r) = (table(), Rec::default());
    handshake(&mut t, &mut r, 0, 0, 0);
    t.process(&tcp(C, S, 1, 1, "A", b"ab"), 1, &mut r);
    t.process(&tcp(C, S, 5, 1, "FA", b"ef"), 2, &mut r);
    t.process(&tcp(S, C, 1, 3, "FA", b""), 3, &mut r);
    assert_eq!(r.stream(1, ToServer), b"ab??ef");
    assert_eq!(r.closes(), vec![(1, CloseReason::Fin)]);
    assert!(matches!(r.ev.last(), Some(Ev::Close { .. })));
}

#[test]
fn reset_closes_and_port_reuse_opens_new_flow() {
    let (mut t, mut r) = (table(), Rec::default());
    handshake(&mut t, &mut r, 0, 0, 0);
    t.process(&tcp(C, S, 1, 1, "A", b"req"), 1, &mut r);
    t.process(&tcp(S, C, 1, 4, "RA", b""), 2, &mut r);
    assert_eq!(r.closes(), vec![(1, CloseReason::Reset)]);
    // In-flight data after the RST is absorbed.
    t.process(&tcp(C, S, 4, 1, "A", b"more"), 3, &mut r);
    assert_eq!(t.stats().late_packets, 1);
    assert_eq!(r.stream(1, ToServer), b"req");
    // Same 4-tuple, new SYN: a new flow.
    handshake(&mut t, &mut r, 1000, 2000, 4);
    t.process(&tcp(C, S, 1001, 2001, "A", b"again"), 5, &mut r);
    assert_eq!(r.stream(2, ToServer), b"again");
    assert_eq!(t.stats().flows_opened, 2);
    t.close_all(CloseReason::EndOfCapture, 6, &mut r);
    assert_eq!(
        r.closes(),
        vec![(1, CloseReason::Reset), (2, CloseReason::EndOfCapture)]
    );
    assert!(t.is_empty());
    r.check_lifecycle();
}

#[test]
fn data_after_fin_close_opens_new_flow() {
    let (mut t, mut r) = (table(), Rec::default());
    handshake(&mut t, &mut r, 0, 0, 0);
    t.process(&tcp(C, S, 1, 1, "FA", b"x"), 1, &mut r);
    t.process(&tcp(S, C, 1, 3, "FA", b""), 2, &mut r);
    assert_eq!(r.closes(), vec![(1, CloseReason::Fin)]);
    // A retransmitted FIN is late; new data beyond the FIN is a new flow.
    t.process(&tcp(C, S, 1, 2, "FA", b"x"), 3, &mut r);
    assert_eq!(t.stats().late_packets, 1);
    t.process(&tcp(C, S, 50, 2, "A", b"new"), 4, &mut r);
    assert_eq!(r.stream(2, ToServer), b"new");
}

#[test]
fn idle_timeouts() {
    let (mut t, mut r) = (table(), Rec::default());
    t.process(&tcp(C, S, 1, 1, "A", b"t"), 0, &mut r);
    t.process(&udp("10.0.0.1:5000", "10.0.0.2:53", b"u"), 0, &mut r);
    t.advance(59 * SEC, &mut r);
    assert!(r.closes().is_empty());
    t.advance(60 * SEC, &mut r);
    assert_eq!(r.closes(), vec![(2, CloseReason::IdleTimeout)]);
    // Activity keeps a flow alive.
    t.process(&tcp(C, S, 2, 1, "A", b"t"), 200 * SEC, &mut r);
    t.advance(499 * SEC, &mut r);
    assert_eq!(t.len(), 1);
    t.advance(500 * SEC, &mut r);
    assert_eq!(
        r.closes(),
        vec![(2, CloseReason::IdleTimeout), (1, CloseReason::IdleTimeout)]
    );
    assert_eq!(t.stats().closed(CloseReason::IdleTimeout), 2);
    assert!(t.is_empty());
    r.check_lifecycle();
}

#[test]
fn eviction_of_least_recently_seen() {
    let cfg = FlowConfig {
        max_flows: 2,
        ..FlowConfig::default()
    };
    let (mut t, mut r) = (FlowTable::new(cfg), Rec::default());
    t.process(&udp("10.0.0.1:1001", "10.0.0.2:53", b"1"), 1, &mut r);
    t.process(
        &tcp("10.0.0.1:1002", "10.0.0.2:80", 5, 0, "A", b"2"),
        2,
        &mut r,
    );
    t.process(&udp("10.0.0.1:1001", "10.0.0.2:53", b"1"), 3, &mut r);
    // Flow 2 is now the least recently seen.
    t.process(&udp("10.0.0.1:1003", "10.0.0.2:53", b"3"), 4, &mut r);
    assert_eq!(r.closes(), vec![(2, CloseReason::Evicted)]);
    assert_eq!(t.stats().flows_evicted, 1);
    assert_eq!(t.len(), 2);
    // Lingering flows make room first, without callbacks.
    let cfg = FlowConfig {
        max_flows: 1,
        ..FlowConfig::default()
    };
    let (mut t, mut r) = (FlowTable::new(cfg), Rec::default());
    t.process(&tcp(C, S, 1, 1, "RA", b""), 1, &mut r);
    t.process(&tcp("10.0.0.3:1", S, 1, 1, "A", b"x"), 2, &mut r);
    assert_eq!(r.closes(), vec![(1, CloseReason::Reset)]);
    assert_eq!(t.stats().flows_evicted, 0);
}

#[test]
fn a_flood_of_empty_flows_evicts_itself_not_the_flows_with_data() {
    let cfg = FlowConfig {
        max_flows: 8,
        ..FlowConfig::default()
    };
    let (mut t, mut r) = (FlowTable::new(cfg), Rec::default());
    // Two connections carrying data, seen long before the flood.
    handshake(&mut t, &mut r, 100, 500, 1);
    t.process(&tcp(C, S, 101, 501, "PA", b"GET / HTTP/1.1\r\n"), 2, &mut r);
    let c2 = "10.0.0.1:40001";
    t.process(&tcp(c2, S, 7, 9, "PA", b"ping"), 3, &mut r);
    // A SYN flood and a port scan: 10,000 flows that never carry a byte.
    for n in 0..10_000u32 {
        let src = format!("192.0.2.{}:{}", n % 250, 1024 + n / 250);
        let dst = format!("10.0.0.9:{}", 1 + n % 1000);
        t.process(&tcp(&src, &dst, n, 0, "S", b""), 10 + u64::from(n), &mut r);
        assert!(t.len() <= 8);
    }
    // The two data flows are still there, and still decoded.
    t.process(
        &tcp(S, C, 501, 117, "PA", b"HTTP/1.1 200 OK\r\n"),
        20_000,
        &mut r,
    );
    assert_eq!(r.stream(1, ToClient), b"HTTP/1.1 200 OK\r\n");
    assert!(
        r.closes().iter().all(|(id, _)| *id > 2),
        "a data flow was evicted: {:?}",
        &r.closes()[..4]
    );
    let s = t.stats();
    assert_eq!(s.flows_evicted, 10_000 - 6);
    assert_eq!(s.flows_evicted_bare, s.flows_evicted);
}

#[test]
fn shedding_refuses_whole_new_flows_and_keeps_the_others() {
    let (mut t, mut r) = (table(), Rec::default());
    // A flow in the table before the overload.
    handshake(&mut t, &mut r, 100, 500, 1);
    t.set_admit(false);
    // A new connection during the overload: refused, SYN to data.
    let c2 = "10.0.0.1:40001";
    t.process(&tcp(c2, S, 7, 0, "S", b""), 2, &mut r);
    t.process(&tcp(S, c2, 70, 8, "SA", b""), 2, &mut r);
    // The flow in the table goes on.
    t.process(&tcp(C, S, 101, 501, "PA", b"req"), 3, &mut r);
    // Admitted again: the shed flow stays shed to its end (no half flow)...
    t.set_admit(true);
    t.process(&tcp(c2, S, 8, 71, "PA", b"half"), 4, &mut r);
    t.process(&tcp(c2, S, 12, 71, "FA", b""), 5, &mut r);
    // ...and a new one is taken.
    let c3 = "10.0.0.1:40002";
    t.process(&tcp(c3, S, 1, 0, "S", b""), 6, &mut r);
    t.process(&tcp(c3, S, 2, 1, "PA", b"new"), 7, &mut r);
    assert_eq!(r.stream(1, ToServer), b"req");
    let opened: Vec<_> = r.opens().iter().map(|o| o.1.to_string()).collect();
    assert!(!opened.contains(&c2.to_string()), "{opened:?}");
    assert!(opened.contains(&c3.to_string()), "{opened:?}");
    // Its last ACK too.
    t.process(&tcp(c2, S, 13, 72, "A", b""), 6, &mut r);
    let s = t.stats();
    assert_eq!(s.flows_shed, 1);
    assert_eq!(s.packets_shed, 5);
    // A new connection on the same ports is a new flow, taken.
    t.process(&tcp(c2, S, 100, 0, "S", b""), 8, &mut r);
    t.process(&tcp(c2, S, 101, 0, "PA", b"again"), 9, &mut r);
    assert!(r.opens().iter().any(|o| o.1.to_string() == c2));
}

#[test]
fn udp_datagrams_and_truncation() {
    let (mut t, mut r) = (table(), Rec::default());
    t.process(&udp("10.0.0.1:5000", "10.0.0.2:53", b"q1"), 0, &mut r);
    t.process(&udp("10.0.0.2:53", "10.0.0.1:5000", b"a1"), 1, &mut r);
    t.process(&udp("10.0.0.1:5000", "10.0.0.2:53", b""), 2, &mut r);
    let mut cut = udp("10.0.0.2:53", "10.0.0.1:5000", b"a2");
    cut.missing = 10;
    t.process(&cut, 3, &mut r);
    assert_eq!(r.stream(1, ToServer), b"q1");
    assert_eq!(r.stream(1, ToClient), b"a1a2??????????");
    assert_eq!(t.stats().truncated_segments, 1);
    // Each datagram is its own on_data call.
    let n = r.ev.iter().filter(|e| matches!(e, Ev::Data { .. })).count();
    assert_eq!(n, 3);
    t.close_all(CloseReason::EndOfCapture, 9, &mut r);
    assert_eq!(r.metas[0].packets, [2, 2]);
    assert_eq!(r.metas[0].l4, L4::Udp);
}

#[test]
fn truncated_tcp_segments_become_gaps() {
    let (mut t, mut r) = (table(), Rec::default());
    handshake(&mut t, &mut r, 0, 0, 0);
    // Header-only capture: 100 bytes sent, none captured.
    let mut p = tcp(C, S, 1, 1, "A", b"GE");
    p.missing = 98;
    t.process(&p, 1, &mut r);
    assert_eq!(r.stream(1, ToServer), b"GE");
    // The server's ACK confirms the endpoint got them.
    t.process(&tcp(S, C, 1, 101, "A", b""), 2, &mut r);
    assert_eq!(r.stream(1, ToServer).len(), 100);
    assert_eq!(r.gaps(1), vec![(ToServer, 98)]);
    // Without ACKs: reported on timeout.
    let mut p = tcp(C, S, 101, 1, "A", b"");
    p.missing = 50;
    t.process(&p, 3, &mut r);
    t.advance(3 + 2 * SEC, &mut r);
    assert_eq!(r.stream(1, ToServer).len(), 150);
    assert_eq!(t.stats().truncated_segments, 2);
}

#[test]
fn close_all_flushes_buffered_data() {
    let (mut t, mut r) = (table(), Rec::default());
    handshake(&mut t, &mut r, 0, 0, 0);
    t.process(&tcp(C, S, 1, 1, "A", b"ab"), 1, &mut r);
    t.process(&tcp(C, S, 6, 1, "A", b"fg"), 1, &mut r);
    t.process(&tcp(S, C, 1, 1, "A", b"resp"), 1, &mut r);
    t.process(&udp("10.0.0.1:5000", "10.0.0.2:53", b"q"), 1, &mut r);
    t.close_all(CloseReason::EndOfCapture, 2, &mut r);
    assert_eq!(r.stream(1, ToServer), b"ab???fg");
    let closes = r.closes();
    assert_eq!(closes.len(), 2);
    assert!(closes.iter().all(|c| c.1 == CloseReason::EndOfCapture));
    assert!(t.is_empty());
    assert_eq!(t.ooo_bytes(), 0);
    r.check_lifecycle();
}

#[test]
fn zero_length_packets_only_update_state() {
    let (mut t, mut r) = (table(), Rec::default());
    handshake(&mut t, &mut r, 0, 0, 0);
    t.process(&tcp(C, S, 1, 1, "A", b""), 1, &mut r);
    t.process(&udp("10.0.0.1:5000", "10.0.0.2:53", b""), 1, &mut r);
    assert!(r.ev.is_empty());
    assert_eq!(t.len(), 2);
    assert_eq!(t.stats().packets, 5);
    t.close_all(CloseReason::EndOfCapture, 2, &mut r);
    // Opened (lazily) and closed, no data.
    assert_eq!(r.opens().len(), 2);
    assert_eq!(r.closes().len(), 2);
}

#[test]
fn for_each_mut_visits_open_flows() {
    let (mut t, mut r) = (table(), Rec::default());
    t.process(&udp("10.0.0.1:5000", "10.0.0.2:53", b"q"), 0, &mut r);
    t.process(&udp("10.0.0.1:5001", "10.0.0.2:53", b""), 0, &mut r);
    let mut seen = Vec::new();
    t.for_each_mut(|m, st| {
        assert_eq!(m.id, *st);
        seen.push(m.id);
    });
    // Only flows whose state exists (opened by data).
    assert_eq!(seen, vec![1]);
}

#[test]
fn stats_names() {
    let t = table();
    let names: Vec<_> = t.stats().iter().map(|(n, _)| n).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), names.len());
    for want in [
        "packets",
        "gaps",
        "gap_bytes",
        "flows_evicted",
        "flows_closed_fin",
        "overlap_mismatches",
    ] {
        assert!(names.contains(&want), "{want}");
    }
}
