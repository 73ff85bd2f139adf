//! Tunnelled mirror traffic: GRE (with checksum, key, sequence), ERSPAN
//! types I, II and III, VXLAN, Geneve (with options) and IP in IP are taken off and
//! the inner packet decodes exactly as if captured unwrapped; limits hold.

#![allow(missing_docs, clippy::unwrap_used)]

use etherparse::PacketBuilder;
use wasmtap_decode::{Decoder, DecoderConfig, LinkType, Tunnel, TunnelConfig};

/// The inner frame: Ethernet, IPv4 192.168.1.1:40000 -> 192.168.1.2:80, TCP with an HTTP request.
fn inner_frame() -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
        .ipv4([192, 168, 1, 1], [192, 168, 1, 2], 64)
        .tcp(40_000, 80, 1000, 65_535)
        .ack(5000)
        .psh();
    let payload = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let mut out = Vec::new();
    b.write(&mut out, payload).unwrap();
    out
}

/// Outer Ethernet + IPv4 (10.0.0.1 -> 10.0.0.2) with protocol `proto` around `body`.
fn outer_ip(proto: u8, body: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 3, 2, 0, 0, 0, 0, 4, 0x08, 0x00];
    let total = (20 + body.len()) as u16;
    f.extend_from_slice(&[
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        proto,
        0,
        0,
    ]);
    f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
    f.extend_from_slice(body);
    f
}

fn outer_udp(dport: u16, body: &[u8]) -> Vec<u8> {
    let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 3], [2, 0, 0, 0, 0, 4])
        .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        .udp(55_555, dport);
    let mut out = Vec::new();
    b.write(&mut out, body).unwrap();
    out
}

fn gre(flags: u16, proto: u16, extra: &[u8], body: &[u8]) -> Vec<u8> {
    let mut g = flags.to_be_bytes().to_vec();
    g.extend_from_slice(&proto.to_be_bytes());
    g.extend_from_slice(extra);
    g.extend_from_slice(body);
    outer_ip(47, &g)
}

fn check(frame: &[u8], kind: Tunnel) {
    let inner = inner_frame();
    let mut plain = Decoder::default();
    let want = plain
        .decode(LinkType::Ethernet, 1, &inner)
        .unwrap()
        .unwrap();
    let mut d = Decoder::default();
    let got = d.decode(LinkType::Ethernet, 1, frame).unwrap().unwrap();
    assert_eq!(got, want, "{kind:?}");
    assert_eq!(d.stats().tunnels[kind as usize], 1, "{kind:?}");
}

#[test]
fn each_encapsulation_gives_the_inner_packet() {
    let inner = inner_frame();
    let ip_only = &inner[14..];
    // GRE with checksum, key and sequence, Ethernet inside (gretap).
    check(&gre(0xb000, 0x6558, &[0; 12], &inner), Tunnel::Gre);
    // Plain GRE with IPv4 inside.
    {
        let l3gre = gre(0, 0x0800, &[], ip_only);
        let mut d = Decoder::default();
        let p = d.decode(LinkType::Ethernet, 1, &l3gre).unwrap().unwrap();
        assert_eq!(p.src.to_string(), "192.168.1.1");
        assert_eq!(p.dst_port, 80);
    }
    // ERSPAN type I (no sequence, no header), II (sequence, 8-byte header), III (12 + 8).
    check(&gre(0, 0x88be, &[], &inner), Tunnel::Erspan2);
    let mut e2 = vec![0x10, 0x01, 0x00, 0x7b, 0, 0, 0, 0];
    e2.extend_from_slice(&inner);
    check(&gre(0x1000, 0x88be, &[0, 0, 0, 9], &e2), Tunnel::Erspan2);
    let mut e3 = vec![0x20, 0x01, 0x00, 0x7b, 0, 0, 0, 0, 0, 0, 0, 0x01];
    e3.extend_from_slice(&[0xaa; 8]);
    e3.extend_from_slice(&inner);
    check(&gre(0x1000, 0x22eb, &[0, 0, 0, 9], &e3), Tunnel::Erspan3);
    // VXLAN.
    let mut vx = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    vx.extend_from_slice(&inner);
    check(&outer_udp(4789, &vx), Tunnel::Vxlan);
    // Geneve with 8 bytes of options.
    let mut gn = vec![0x02, 0, 0x65, 0x58, 0, 0, 42, 0];
    gn.extend_from_slice(&[0x01; 8]);
    gn.extend_from_slice(&inner);
    check(&outer_udp(6081, &gn), Tunnel::Geneve);
    // IP in IP: IPv4 inside IPv4 (protocol 4); IPv6 inside IPv4 (protocol 41, `sit`).
    {
        let mut d = Decoder::default();
        let v4in4 = outer_ip(4, ip_only);
        let p = d.decode(LinkType::Ethernet, 1, &v4in4).unwrap().unwrap();
        assert_eq!(p.src.to_string(), "192.168.1.1");
        assert_eq!(p.dst_port, 80);
        assert_eq!(d.stats().tunnels[Tunnel::IpIp as usize], 1);
        let b = PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
            .tcp(40_001, 443, 1, 65_535)
            .ack(1);
        let mut v6 = Vec::new();
        b.write(&mut v6, b"x").unwrap();
        let v6in4 = outer_ip(41, &v6);
        let p = d.decode(LinkType::Ethernet, 2, &v6in4).unwrap().unwrap();
        assert_eq!(p.dst_port, 443);
        assert!(p.dst.is_ipv6());
        assert_eq!(d.stats().tunnels[Tunnel::IpIp as usize], 2);
        // Protocol 4 whose payload is not IPv4 is left as it is.
        let mut d = Decoder::default();
        let _ = d.decode(LinkType::Ethernet, 3, &outer_ip(4, &v6));
        assert_eq!(d.stats().tunnels[Tunnel::IpIp as usize], 0);
    }
}

#[test]
fn nesting_is_bounded_and_ports_are_configurable() {
    let inner = inner_frame();
    let mut vx = vec![0x08, 0, 0, 0, 0, 0, 42, 0];
    vx.extend_from_slice(&inner);
    let mut nested = vx.clone();
    // VXLAN in GRE: two levels.
    nested = gre(0, 0x6558, &[], &outer_udp(4789, &nested));
    let mut d = Decoder::default();
    let p = d.decode(LinkType::Ethernet, 1, &nested).unwrap().unwrap();
    assert_eq!(p.src.to_string(), "192.168.1.1");
    let one_level = |t: TunnelConfig| {
        Decoder::new(DecoderConfig {
            tunnels: t,
            ..Default::default()
        })
    };
    let mut d = one_level(TunnelConfig {
        max_depth: 1,
        ..Default::default()
    });
    let p = d.decode(LinkType::Ethernet, 1, &nested).unwrap().unwrap();
    assert_eq!(p.dst_port, 4789, "the second tunnel is left on");
    assert_eq!(d.stats().tunnel_too_deep, 1);
    let plain_vx = outer_udp(4789, &vx);
    let other_port = outer_udp(8472, &vx);
    // Off: the outer packet is the flow.
    let mut d = one_level(TunnelConfig {
        enabled: false,
        ..Default::default()
    });
    let p = d.decode(LinkType::Ethernet, 1, &plain_vx).unwrap().unwrap();
    assert_eq!(p.dst_port, 4789);
    // VXLAN on another port only where configured.
    let mut d = one_level(TunnelConfig {
        vxlan_port: 8472,
        ..Default::default()
    });
    let p = d
        .decode(LinkType::Ethernet, 1, &other_port)
        .unwrap()
        .unwrap();
    assert_eq!(p.dst_port, 80);
}

#[test]
fn malformed_tunnels_never_panic() {
    let inner = inner_frame();
    let frames = [
        gre(0xb000, 0x6558, &[0; 3], &[]),
        gre(0x1000, 0x22eb, &[0, 0, 0, 9], &[0x20, 1]),
        gre(0x0001, 0x6558, &[], &inner),
        outer_udp(4789, &[0x08, 0, 0]),
        outer_udp(6081, &[0x3f, 0, 0x65, 0x58, 0, 0, 0, 0]),
        outer_udp(4789, &[0x00, 0, 0, 0, 0, 0, 0, 0]),
    ];
    for f in frames {
        for cut in 0..=f.len() {
            let mut d = Decoder::default();
            let _ = d.decode(LinkType::Ethernet, 1, &f[..cut]);
        }
    }
}
