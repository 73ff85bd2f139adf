//! Decode + flow table over real captures, checked against what the peer
//! tools (Zeek, Suricata) report for them.

mod common;

use common::*;
use wasmtap_decode::{Decoder, DecoderConfig, LinkType};
use wasmtap_flow::{CloseReason, Direction, FlowConfig, FlowStats, FlowTable};

use Direction::{ToClient, ToServer};

fn run_cfg(rel: &str, cfg: FlowConfig) -> (Rec, FlowStats) {
    let cap = pcap::read(rel);
    let link = LinkType::from_dlt(cap.linktype as i32).unwrap();
    let mut dec = Decoder::new(DecoderConfig::default());
    let mut t: FlowTable<u64> = FlowTable::new(cfg);
    let mut r = Rec::default();
    let mut last = 0;
    for f in &cap.frames {
        if let Ok(Some(p)) = dec.decode(link, f.ts_ns, &f.data) {
            t.process(&p, f.ts_ns, &mut r);
        }
        t.advance(f.ts_ns, &mut r);
        last = f.ts_ns;
    }
    t.close_all(CloseReason::EndOfCapture, last, &mut r);
    assert!(t.is_empty());
    assert_eq!(t.ooo_bytes(), 0);
    r.check_lifecycle();
    (r, t.stats().clone())
}

fn run(rel: &str) -> (Rec, FlowStats) {
    run_cfg(rel, FlowConfig::default())
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn handshake_reorder() {
    // SYN-ACK before SYN in the file: the SYN sender is still the client.
    let (r, _) = run("http/zeek__tcp-handshake-reorder.pcap");
    assert_eq!(
        r.opens(),
        vec![(1, sa("141.142.228.5:59856"), sa("192.150.187.43:80"))]
    );
    assert!(r.stream(1, ToServer).starts_with(b"GET /"));
    assert!(r.stream(1, ToClient).starts_with(b"HTTP/1.1 200"));
    assert_eq!(r.closes(), vec![(1, CloseReason::Fin)]);
}

#[test]
fn missing_syn() {
    // Zeek conn.log: orig_bytes 98, resp_bytes 9417, no missed bytes.
    let (r, st) = run("http/zeek__tcp-missing-syn.pcap");
    assert_eq!(r.opens().len(), 1);
    assert_eq!(r.opens()[0].2.port(), 80);
    assert_eq!(r.stream(1, ToServer).len(), 98);
    assert_eq!(r.stream(1, ToClient).len(), 9417);
    assert_eq!(st.gaps, 0);
}

#[test]
fn no_handshake_at_all() {
    let (r, st) = run("http/zeek__http-get_nosyn.pcap");
    assert_eq!(r.opens()[0].2.port(), 80);
    assert!(r.stream(1, ToServer).starts_with(b"GET "));
    assert!(r.stream(1, ToClient).starts_with(b"HTTP/1."));
    assert_eq!(st.syn_less_flows, 1);
}

#[test]
fn post_large() {
    // Zeek: 2 connections, orig_bytes 61907 and 61917, resp_bytes 60478,
    // missed_bytes 0.
    let (r, st) = run("http/zeek__http-http-post-large.pcap");
    assert_eq!(r.opens().len(), 2);
    let mut orig: Vec<usize> = (1..=2).map(|id| r.stream(id, ToServer).len()).collect();
    orig.sort();
    assert_eq!(orig, vec![61907, 61917]);
    for id in 1..=2 {
        assert_eq!(r.stream(id, ToClient).len(), 60478);
    }
    assert_eq!(st.gaps, 0);
}

#[test]
fn header_only_capture_is_all_gaps() {
    // Zeek: orig_bytes 474, resp_bytes 23783, missed_bytes 24257 (all of
    // it). Every stream byte is reported, as data or gap.
    let (r, st) = run("http/zeek__tcp-retransmit-fast009.pcap");
    assert_eq!(r.stream(1, ToServer).len(), 474);
    assert_eq!(r.stream(1, ToClient).len(), 23783);
    assert_eq!(st.gap_bytes, 24257);
    assert_eq!(st.bytes_delivered, 0);
}

#[test]
fn gap_in_response() {
    // Suricata: 3 requests; the second response body has a gap.
    let (r, st) = run("http/suricata__http-gap-simple.pcap");
    let req = r.stream(1, ToServer);
    for u in [&b"GET /1 "[..], b"GET /2 ", b"GET /3 "] {
        assert!(contains(&req, u));
    }
    assert!(st.gaps >= 1);
    assert!(r.gaps(1).iter().all(|g| g.0 == ToClient));
}

#[test]
fn drops_reported_as_gaps() {
    // 3 segments were never captured (tshark: previous segment not
    // captured x3).
    let (r, st) = run("http/zeek__http-zero-length-bodies-with-drops.pcap");
    assert_eq!(r.opens().len(), 1);
    assert!(st.gaps >= 1 && st.gaps <= 3, "{st:?}");
    let req = r.stream(1, ToServer);
    assert!(req.windows(4).filter(|w| w == b"GET ").count() >= 6);
}

#[test]
fn nflog_retransmissions() {
    let (r, st) = run("http/zeek__nflog-http.pcap");
    assert_eq!(r.opens().len(), 1);
    let req = r.stream(1, ToServer);
    assert_eq!(req.windows(4).filter(|w| w == b"GET ").count(), 1);
    assert!(r.stream(1, ToClient).starts_with(b"HTTP/1.1 200 OK"));
    assert_eq!(st.gaps, 0);
}

#[test]
fn ipv6_atomic_fragments() {
    let (r, _) = run("http/zeek__ipv6-http-atomic-frag.pcap");
    let opens = r.opens();
    assert_eq!(opens.len(), 4);
    for (id, client, server) in opens {
        assert_eq!(server.port(), 80);
        assert_eq!(client.ip().to_string(), "2001:db8:1::2");
        assert!(r.stream(id, ToServer).starts_with(b"GET "));
    }
}

#[test]
fn reassembly_stress_trace() {
    // Zeek's reassembly test trace: inconsistent overlaps, missed segments.
    let (r, st) = run("http/zeek__tcp-reassembly.pcap");
    assert_eq!(r.opens().len(), 1);
    assert!(st.retransmitted_bytes > 0);
    assert!(st.ooo_segments > 0);
    // tshark: 8 "previous segment not captured".
    assert_eq!(st.gaps, 8);
    // Tiny buffers and timeouts: still consistent.
    let cfg = FlowConfig {
        max_ooo_bytes_per_direction: 300,
        max_ooo_bytes_total: 500,
        gap_timeout_ns: 1_000,
        ..FlowConfig::default()
    };
    let (r2, st2) = run_cfg("http/zeek__tcp-reassembly.pcap", cfg);
    assert_eq!(r2.opens().len(), 1);
    for d in [ToServer, ToClient] {
        assert_eq!(r.stream(1, d).len(), r2.stream(1, d).len());
    }
    assert!(st2.gap_bytes >= st.gap_bytes);
}

#[test]
fn udp_dns_over_ipv6_fragments() {
    let (r, _) = run("dns/zeek__ipv6-fragmented-dns.pcap");
    // 3 queries from 2 source ports.
    assert_eq!(r.opens().len(), 2);
    assert!(r.opens().iter().all(|o| o.2.port() == 53));
    let big = (1..=2)
        .map(|id| r.stream(id, ToClient).len())
        .max()
        .unwrap();
    assert_eq!(big, 3230);
}
