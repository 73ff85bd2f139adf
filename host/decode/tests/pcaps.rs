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
    decoder: Decoder,
}

fn run(rel: &str) -> Run {
    let cap = common::read(rel);
    let link = LinkType::from_dlt(cap.linktype as i32).expect("supported link type");
    let mut decoder = Decoder::new(DecoderConfig::default());
    let mut pkts = Vec::new();
    let mut errors = Vec::new();
    for f in &cap.frames {
        match decoder.decode(link, f.ts_ns, &f.data) {
            Ok(Some(p)) => pkts.push(Owned::from(&p)),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    Run { link, frames: cap.frames.len(), pkts, errors, decoder }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn summary() {
    for f in [
        "http/zeek__nflog-http.pcap",
        "http/suricata__decode-sll2-01.pcap",
        "http/suricata__http-gap-simple.pcap",
        "http/zeek__ipv6-http-atomic-frag.pcap",
        "http/zeek__http-vlan-0.pcap",
        "dns/zeek__ipv6-fragmented-dns.pcap",
        "dns/deepflow__nxdomain.pcap",
        "http/zeek__tcp-retransmit-fast009.pcap",
    ] {
        let r = run(f);
        eprintln!("{f}: {:?} frames {} pkts {} errors {:?} stats {:?}", r.link, r.frames, r.pkts.len(), r.errors, r.decoder.stats());
        for p in r.pkts.iter().take(3) {
            eprintln!("   {:?}:{} -> {:?}:{} tcp={} len={} missing={} vlan={:?} {:?}", p.src, p.sport, p.dst, p.dport, p.tcp, p.payload.len(), p.missing, p.vlan, String::from_utf8_lossy(&p.payload[..p.payload.len().min(40)]));
        }
    }
}
