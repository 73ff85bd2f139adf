//! Decoding real captures (copied under tests/pcaps).

mod common;

use std::net::IpAddr;

use wasmtap_decode::{DecodeError, Decoder, DecoderConfig, LinkType, Packet, Transport};

/// Owned copy of a decoded packet.
#[derive(Debug, Clone)]
#[allow(dead_code)]
struct Owned {
    src: IpAddr,
    dst: IpAddr,
    sport: u16,
    dport: u16,
    tcp: bool,
    payload: Vec<u8>,
    missing: u32,
    vlan: Option<u16>,
}

impl From<&Packet<'_>> for Owned {
    fn from(p: &Packet<'_>) -> Self {
        Owned {
            src: p.src,
            dst: p.dst,
            sport: p.src_port,
            dport: p.dst_port,
            tcp: matches!(p.transport, Transport::Tcp(_)),
            payload: p.payload.to_vec(),
            missing: p.missing,
            vlan: p.vlan,
        }
    }
}

struct Run {
    link: LinkType,
    frames: usize,
    pkts: Vec<Owned>,
    errors: Vec<DecodeError>,
    /// Frames that were buffered fragments.
    nones: usize,
    decoder: Decoder,
}

fn run(rel: &str) -> Run {
    let cap = common::read(rel);
    let link = LinkType::from_dlt(cap.linktype as i32).expect("supported link type");
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut pkts = Vec::new();
    let mut errors = Vec::new();
    let mut nones = 0;
    for f in &cap.frames {
        match decoder.decode(link, f.ts_ns, &f.data) {
            Ok(Some(p)) => pkts.push(Owned::from(&p)),
            Ok(None) => nones += 1,
            Err(e) => errors.push(e),
        }
    }
    Run {
        link,
        frames: cap.frames.len(),
        pkts,
        errors,
        nones,
        decoder,
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn all_tcp(r: &Run) -> bool {
    r.pkts.iter().all(|p| p.tcp)
}

fn any_payload(r: &Run, needle: &[u8]) -> bool {
    r.pkts.iter().any(|p| contains(&p.payload, needle))
}

#[test]
fn nflog_http() {
    let r = run("http/zeek__nflog-http.pcap");
    assert_eq!(r.link, LinkType::Nflog);
    assert_eq!((r.frames, r.pkts.len()), (13, 13));
    assert!(all_tcp(&r));
    assert!(r.pkts.iter().all(|p| p.sport == 80 || p.dport == 80));
    assert!(any_payload(&r, b"GET / HTTP/1.1"));
    assert!(any_payload(&r, b"HTTP/1.1 200 OK"));
}

#[test]
fn sll2() {
    let r = run("http/suricata__decode-sll2-01.pcap");
    assert_eq!(r.link, LinkType::LinuxSll2);
    assert_eq!((r.frames, r.pkts.len()), (5, 5));
    assert!(all_tcp(&r));
    assert!(r.pkts.iter().all(|p| p.sport == 80 || p.dport == 80));
}

#[test]
fn bsd_null() {
    let r = run("http/suricata__http-gap-simple.pcap");
    assert_eq!(r.link, LinkType::Null);
    assert_eq!((r.frames, r.pkts.len()), (31, 31));
    assert!(all_tcp(&r));
    for url in [&b"GET /1 "[..], b"GET /2 ", b"GET /3 "] {
        assert!(any_payload(&r, url));
    }
}

#[test]
fn ipv6_atomic_fragments_and_extension_headers() {
    let r = run("http/zeek__ipv6-http-atomic-frag.pcap");
    // 2 ICMPv6 frames; the 36 TCP ones carry fragment, hop-by-hop,
    // destination-options or routing headers.
    assert_eq!(r.frames, 38);
    assert_eq!(r.pkts.len(), 36);
    assert_eq!(r.errors, vec![DecodeError::NotTcpUdp; 2]);
    assert_eq!(r.decoder.stats().frag.fragments, 0);
    let mut ports: Vec<u16> = r
        .pkts
        .iter()
        .map(|p| if p.dport == 80 { p.sport } else { p.dport })
        .collect();
    ports.sort();
    ports.dedup();
    assert_eq!(ports, vec![27393, 36951, 45805, 59694]);
    assert_eq!(
        r.pkts
            .iter()
            .filter(|p| contains(&p.payload, b"GET /"))
            .count(),
        4
    );
}

#[test]
fn vlan_zero() {
    let r = run("http/zeek__http-vlan-0.pcap");
    assert_eq!((r.frames, r.pkts.len()), (14, 14));
    assert!(r.pkts.iter().all(|p| p.vlan == Some(0)));
    assert_eq!(r.decoder.stats().vlan_tagged, 14);
    assert!(any_payload(&r, b"GET "));
}

#[test]
fn ipv6_fragmented_dns() {
    let r = run("dns/zeek__ipv6-fragmented-dns.pcap");
    // 4 plain datagrams, a lone last fragment (its first part was not
    // captured) and one datagram in 3 fragments.
    assert_eq!(r.frames, 8);
    assert!(r.errors.is_empty());
    assert_eq!(r.pkts.len(), 5);
    assert_eq!(r.nones, 3);
    let s = &r.decoder.stats().frag;
    assert_eq!((s.fragments, s.reassembled), (4, 1));
    assert_eq!(r.decoder.fragment_sets(), 1);
    let big: Vec<_> = r
        .pkts
        .iter()
        .filter(|p| p.sport == 53 && p.payload.len() > 3000)
        .collect();
    assert_eq!(big.len(), 1);
    // Last fragment at 2864 with 382 - 8 bytes after its header; minus
    // the UDP header.
    assert_eq!(big[0].payload.len(), 2864 + (382 - 8) - 8);
    assert!(contains(&big[0].payload, b"txtpadding_3230"));
}

#[test]
fn wire_length_beyond_packet_is_ignored() {
    // Every frame's recorded length is 16 bytes over the capture; the IP
    // packets are complete.
    let cap = common::read("dns/deepflow__nxdomain.pcap");
    assert!(
        cap.frames
            .iter()
            .all(|f| f.orig_len as usize == f.data.len() + 16)
    );
    let r = run("dns/deepflow__nxdomain.pcap");
    assert_eq!((r.frames, r.pkts.len()), (6, 6));
    assert!(r.pkts.iter().all(|p| p.missing == 0));
    assert_eq!(r.decoder.stats().truncated, 0);
    // DNS over TCP: each payload is a 2-byte length + message.
    for p in &r.pkts {
        let n = u16::from_be_bytes([p.payload[0], p.payload[1]]) as usize;
        assert_eq!(n + 2, p.payload.len());
    }
}

#[test]
fn header_only_capture() {
    let cap = common::read("http/zeek__tcp-retransmit-fast009.pcap");
    let r = run("http/zeek__tcp-retransmit-fast009.pcap");
    assert_eq!((r.frames, r.pkts.len()), (39, 39));
    assert_eq!(r.decoder.stats().truncated, 21);
    // What is missing is exactly what the capture cut (no padding there).
    let cut: u64 = cap
        .frames
        .iter()
        .map(|f| u64::from(f.orig_len) - f.data.len() as u64)
        .sum();
    let missing: u64 = r.pkts.iter().map(|p| u64::from(p.missing)).sum();
    assert_eq!(missing, cut);
}

#[test]
fn every_classic_capture_decodes_without_panic() {
    let root = common::pcap_path("");
    let mut files = 0;
    for dir in std::fs::read_dir(&root).expect("tests/pcaps") {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            if f.extension().is_none_or(|e| e != "pcap") {
                continue;
            }
            let rel = f.strip_prefix(&root).unwrap().to_str().unwrap().to_owned();
            let r = run(&rel);
            files += 1;
            assert_eq!(r.decoder.stats().packets as usize, r.frames, "{rel}");
            // Counters agree with what decode returned.
            let s = r.decoder.stats();
            assert_eq!(s.decoded as usize, r.pkts.len(), "{rel}");
            let errs: u64 = s.errors.iter().sum();
            assert_eq!(errs as usize, r.errors.len(), "{rel}");
            assert_eq!(r.pkts.len() + r.nones + r.errors.len(), r.frames, "{rel}");
            assert!(r.nones as u64 <= s.frag.fragments, "{rel}");
        }
    }
    assert!(files >= 8);
}
