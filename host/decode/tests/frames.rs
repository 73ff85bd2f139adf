//! Hand-built frames for every link type and the L3/L4 edge cases.

mod build;

use std::net::IpAddr;

use build::*;
use etherparse::{LinuxSllPacketType, PacketBuilder, VlanId};
use wasmtap_decode::{DecodeError, Decoder, DecoderConfig, LinkType, Packet, TcpInfo, Transport};

fn dec() -> Decoder {
    Decoder::new(DecoderConfig::default())
}

/// Decodes `frame` and returns (packet without payload, payload copy).
fn ok(link: LinkType, frame: &[u8]) -> (Packet<'static>, Vec<u8>) {
    let mut d = dec();
    let p = d
        .decode(link, 0, frame)
        .unwrap_or_else(|e| panic!("{link:?}: {e}"))
        .expect("a packet");
    let payload = p.payload.to_vec();
    (Packet { payload: &[], ..p }, payload)
}

fn err(link: LinkType, frame: &[u8]) -> DecodeError {
    let mut d = dec();
    match d.decode(link, 0, frame) {
        Err(e) => e,
        Ok(p) => panic!("{link:?}: expected an error, got {p:?}"),
    }
}

fn tcp_info(p: &Packet<'_>) -> TcpInfo {
    match p.transport {
        Transport::Tcp(t) => t,
        Transport::Udp => panic!("not tcp"),
    }
}

#[test]
fn dlt_numbers() {
    for (dlt, lt) in [
        (1, LinkType::Ethernet),
        (0, LinkType::Null),
        (108, LinkType::Loop),
        (12, LinkType::Raw),
        (14, LinkType::Raw),
        (101, LinkType::Raw),
        (113, LinkType::LinuxSll),
        (276, LinkType::LinuxSll2),
        (239, LinkType::Nflog),
        (228, LinkType::Ipv4),
        (229, LinkType::Ipv6),
    ] {
        assert_eq!(LinkType::from_dlt(dlt), Some(lt));
    }
    assert_eq!(LinkType::from_dlt(105), None);
    assert_eq!(LinkType::from_dlt(-1), None);
}

#[test]
fn error_names_are_stable_and_unique() {
    let names: Vec<_> = DecodeError::ALL.iter().map(|e| e.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), DecodeError::COUNT);
    for (i, e) in DecodeError::ALL.iter().enumerate() {
        assert_eq!(e.index(), i);
    }
    assert_eq!(DecodeError::FragmentDropped.as_str(), "fragment_dropped");
    assert_eq!(DecodeError::NotTcpUdp.as_str(), "not_tcp_udp");
}

#[test]
fn ethernet_ipv4_tcp_with_packet_builder() {
    let b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .ipv4([192, 168, 1, 1], [192, 168, 1, 2], 64)
        .tcp(40000, 80, 1000, 512)
        .syn()
        .ack(77);
    let mut frame = Vec::new();
    b.write(&mut frame, b"hello").unwrap();
    let (p, payload) = ok(LinkType::Ethernet, &frame);
    assert_eq!(p.src, IpAddr::from([192, 168, 1, 1]));
    assert_eq!(p.dst, IpAddr::from([192, 168, 1, 2]));
    assert_eq!((p.src_port, p.dst_port), (40000, 80));
    let t = tcp_info(&p);
    assert_eq!(
        (t.seq, t.ack, t.syn, t.ack_flag, t.fin, t.rst, t.window),
        (1000, 77, true, true, false, false, 512)
    );
    assert_eq!(payload, b"hello");
    assert_eq!((p.missing, p.vlan), (0, None));
}

#[test]
fn ethernet_padding_and_long_wire_length_are_not_payload() {
    // 2-byte UDP payload: the frame is padded to 60 bytes, plus 16 bytes of
    // trailing junk as some captures record.
    let mut frame = eth(0x0800, &ipv4(17, &udp(5353, 53, b"hi")));
    frame.resize(60, 0);
    frame.extend([0xee; 16]);
    let (p, payload) = ok(LinkType::Ethernet, &frame);
    assert_eq!(p.transport, Transport::Udp);
    assert_eq!(payload, b"hi");
    assert_eq!(p.missing, 0);

    let mut frame = eth(0x0800, &ipv4(6, &tcp(1, 2, 0, 0, TCP_ACK, &[], b"")));
    frame.extend([0; 6]);
    let (_, payload) = ok(LinkType::Ethernet, &frame);
    assert!(payload.is_empty());

    // IPv6 payload length bounds it the same way.
    let mut frame = eth(0x86dd, &ipv6(17, &udp(1, 2, b"abc")));
    frame.extend([0xee; 9]);
    let (_, payload) = ok(LinkType::Ethernet, &frame);
    assert_eq!(payload, b"abc");
}

#[test]
fn vlan_and_qinq_report_outer_id() {
    let mut d = dec();
    let b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .single_vlan(VlanId::try_new(42).unwrap())
        .ipv4([1, 1, 1, 1], [2, 2, 2, 2], 64)
        .udp(1000, 53);
    let mut frame = Vec::new();
    b.write(&mut frame, b"q").unwrap();
    let p = d.decode(LinkType::Ethernet, 0, &frame).unwrap().unwrap();
    assert_eq!(p.vlan, Some(42));
    assert_eq!(p.payload, b"q");

    let b = PacketBuilder::ethernet2([1; 6], [2; 6])
        .double_vlan(VlanId::try_new(100).unwrap(), VlanId::try_new(200).unwrap())
        .ipv6([1; 16], [2; 16], 64)
        .tcp(1000, 443, 5, 5);
    let mut frame = Vec::new();
    b.write(&mut frame, b"tls").unwrap();
    let p = d.decode(LinkType::Ethernet, 0, &frame).unwrap().unwrap();
    assert_eq!(p.vlan, Some(100));
    assert_eq!(p.payload, b"tls");
    assert_eq!(d.stats().vlan_tagged, 2);

    // 802.1Q with VLAN id 0 (priority tag) and an old 0x9100 outer tag.
    let inner = ipv4(17, &udp(1, 2, b"x"));
    let frame = eth(
        0x9100,
        &cat(&[&[0x00, 0x07, 0x81, 0x00], &[0x00, 0x00, 0x08, 0x00], &inner]),
    );
    let (p, _) = ok(LinkType::Ethernet, &frame);
    assert_eq!(p.vlan, Some(7));

    // A tag cut short.
    assert_eq!(
        err(LinkType::Ethernet, &eth(0x8100, &[0, 1])),
        DecodeError::TruncatedL2
    );
}

#[test]
fn linux_sll() {
    let b = PacketBuilder::linux_sll(LinuxSllPacketType::OUTGOING, 6, [1, 2, 3, 4, 5, 6, 0, 0])
        .ipv4([10, 1, 1, 1], [10, 1, 1, 2], 64)
        .udp(1234, 53);
    let mut frame = Vec::new();
    b.write(&mut frame, b"dns").unwrap();
    assert_eq!(&frame[14..16], &[0x08, 0x00]);
    let (p, payload) = ok(LinkType::LinuxSll, &frame);
    assert_eq!((p.src_port, p.dst_port), (1234, 53));
    assert_eq!(payload, b"dns");
    assert_eq!(
        err(LinkType::LinuxSll, &frame[..15]),
        DecodeError::TruncatedL2
    );
    // Protocol ARP.
    let mut arp = frame.clone();
    arp[14..16].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(err(LinkType::LinuxSll, &arp), DecodeError::NotIp);
}

#[test]
fn linux_sll2() {
    let mut frame = vec![
        0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 4, 6, 1, 2, 3, 4, 5, 6, 0, 0,
    ];
    frame.extend(ipv6(
        6,
        &tcp(5000, 80, 9, 0, TCP_SYN, &[2, 4, 5, 0xb4], b""),
    ));
    let (p, payload) = ok(LinkType::LinuxSll2, &frame);
    assert!(p.src.is_ipv6());
    assert!(tcp_info(&p).syn);
    assert!(payload.is_empty());
    assert_eq!(
        err(LinkType::LinuxSll2, &frame[..19]),
        DecodeError::TruncatedL2
    );
}

/// NFLOG TLV: little-endian length (incl. header) and type, padded to 4.
fn tlv(ty: u16, value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend(((value.len() + 4) as u16).to_le_bytes());
    v.extend(ty.to_le_bytes());
    v.extend(value);
    while v.len() % 4 != 0 {
        v.push(0);
    }
    v
}

#[test]
fn nflog() {
    let ip = ipv4(
        6,
        &tcp(
            40000,
            80,
            1,
            2,
            TCP_ACK | TCP_PSH,
            &[],
            b"GET /x HTTP/1.1\r\n",
        ),
    );
    assert_ne!(ip.len() % 4, 0, "exercise padding");
    let frame = cat(&[
        &[2, 0, 0, 1],
        &tlv(1, &[0x08, 0x00, 3, 0]),
        &tlv(10, b"prefix\0"),
        &tlv(9, &ip),
        &tlv(11, &[0, 0, 0, 0]),
    ]);
    let (p, payload) = ok(LinkType::Nflog, &frame);
    assert_eq!(p.dst_port, 80);
    assert_eq!(payload, b"GET /x HTTP/1.1\r\n");

    // IPv6 family; payload TLV with the NLA_F_NET_BYTEORDER flag.
    let ip6 = ipv6(17, &udp(1, 53, b"v6"));
    let frame = cat(&[&[10, 0, 0, 0], &tlv(0x4000 | 9, &ip6)]);
    let (p, payload) = ok(LinkType::Nflog, &frame);
    assert!(p.src.is_ipv6());
    assert_eq!(payload, b"v6");

    // Cut by the capture inside the payload TLV: still decodes.
    let big = ipv4(6, &tcp(1, 80, 0, 0, TCP_ACK, &[], &[b'a'; 100]));
    let frame = cat(&[&[2, 0, 0, 0], &tlv(9, &big)]);
    let (p, payload) = ok(LinkType::Nflog, &frame[..4 + 4 + 40 + 10]);
    assert_eq!((payload.len(), p.missing), (10, 90));

    // No payload TLV, other families, broken TLVs.
    assert_eq!(
        err(LinkType::Nflog, &cat(&[&[2, 0, 0, 0], &tlv(10, b"x")])),
        DecodeError::NotIp
    );
    assert_eq!(err(LinkType::Nflog, &[7, 0, 0, 0]), DecodeError::NotIp);
    assert_eq!(err(LinkType::Nflog, &[2, 0, 0]), DecodeError::TruncatedL2);
    assert_eq!(
        err(LinkType::Nflog, &[2, 0, 0, 0, 2, 0, 9, 0]),
        DecodeError::TruncatedL2
    );
    assert_eq!(
        err(LinkType::Nflog, &[2, 0, 0, 0, 8, 0]),
        DecodeError::TruncatedL2
    );
}

#[test]
fn null_and_loop() {
    let ip4 = ipv4(17, &udp(1, 2, b"4"));
    let ip6 = ipv6(17, &udp(1, 2, b"6"));
    for link in [LinkType::Null, LinkType::Loop] {
        for fam in [2u32.to_le_bytes(), 2u32.to_be_bytes()] {
            let (p, _) = ok(link, &cat(&[&fam, &ip4]));
            assert!(p.src.is_ipv4());
        }
        for af in [24u32, 28, 30] {
            for fam in [af.to_le_bytes(), af.to_be_bytes()] {
                let (p, _) = ok(link, &cat(&[&fam, &ip6]));
                assert!(p.src.is_ipv6());
            }
        }
        assert_eq!(
            err(link, &cat(&[&7u32.to_le_bytes(), &ip4])),
            DecodeError::NotIp
        );
        assert_eq!(err(link, &[2, 0, 0]), DecodeError::TruncatedL2);
        // Family says v4, packet is v6.
        assert_eq!(
            err(link, &cat(&[&2u32.to_le_bytes(), &ip6])),
            DecodeError::BadIpHeader
        );
    }
}

#[test]
fn raw_ip() {
    let ip4 = ipv4(17, &udp(1, 2, b"4"));
    let ip6 = ipv6(17, &udp(1, 2, b"6"));
    assert!(ok(LinkType::Raw, &ip4).0.src.is_ipv4());
    assert!(ok(LinkType::Raw, &ip6).0.src.is_ipv6());
    assert!(ok(LinkType::Ipv4, &ip4).0.src.is_ipv4());
    assert!(ok(LinkType::Ipv6, &ip6).0.src.is_ipv6());
    assert_eq!(err(LinkType::Ipv4, &ip6), DecodeError::BadIpHeader);
    assert_eq!(err(LinkType::Ipv6, &ip4), DecodeError::BadIpHeader);
    assert_eq!(err(LinkType::Raw, &[0x10, 0, 0]), DecodeError::NotIp);
    assert_eq!(err(LinkType::Raw, &[]), DecodeError::TruncatedL3);
}

#[test]
fn not_ip_and_not_tcp_udp() {
    assert_eq!(
        err(LinkType::Ethernet, &eth(0x0806, &[0; 28])),
        DecodeError::NotIp
    );
    assert_eq!(
        err(LinkType::Ethernet, &eth(0x88cc, &[0; 28])),
        DecodeError::NotIp
    );
    assert_eq!(err(LinkType::Ethernet, &[0; 13]), DecodeError::TruncatedL2);
    let icmp = ipv4(1, &[8, 0, 0, 0, 0, 1, 0, 1]);
    assert_eq!(err(LinkType::Raw, &icmp), DecodeError::NotTcpUdp);
    let icmp6 = ipv6(58, &[128, 0, 0, 0, 0, 1, 0, 1]);
    assert_eq!(err(LinkType::Raw, &icmp6), DecodeError::NotTcpUdp);
    // ESP: opaque.
    assert_eq!(
        err(LinkType::Raw, &ipv6(50, &[0; 16])),
        DecodeError::NotTcpUdp
    );
}

#[test]
fn bad_headers() {
    let good = ipv4(17, &udp(1, 2, b"x"));
    let mut ihl4 = good.clone();
    ihl4[0] = 0x44;
    assert_eq!(err(LinkType::Raw, &ihl4), DecodeError::BadIpHeader);
    let mut short_total = good.clone();
    short_total[2..4].copy_from_slice(&10u16.to_be_bytes());
    assert_eq!(err(LinkType::Raw, &short_total), DecodeError::BadIpHeader);
    // Total length 0 (TSO capture): the capture length is used.
    let mut tso = good.clone();
    tso[2..4].copy_from_slice(&0u16.to_be_bytes());
    assert_eq!(ok(LinkType::Raw, &tso).1, b"x");
    // TCP data offset < 5, and > the packet without capture truncation.
    let mut t = ipv4(6, &tcp(1, 2, 0, 0, TCP_ACK, &[], b""));
    t[20 + 12] = 0x40;
    assert_eq!(err(LinkType::Raw, &t), DecodeError::BadL4Header);
    t[20 + 12] = 0xf0;
    assert_eq!(err(LinkType::Raw, &t), DecodeError::BadL4Header);
}

#[test]
fn snaplen_truncation() {
    let mut d = dec();
    let body: Vec<u8> = (0..100u8).collect();
    let frame = eth(0x0800, &ipv4(6, &tcp(1, 80, 7, 0, TCP_ACK, &[], &body)));
    // Cut 30 bytes into the payload.
    let cut = &frame[..14 + 20 + 20 + 30];
    let p = d.decode(LinkType::Ethernet, 0, cut).unwrap().unwrap();
    assert_eq!(p.payload, &body[..30]);
    assert_eq!(p.missing, 70);
    assert_eq!(tcp_info(&p).seq, 7);
    assert_eq!(d.stats().truncated, 1);

    // Cut inside the TCP options: header fields still there, payload all
    // missing.
    let frame = eth(
        0x0800,
        &ipv4(6, &tcp(1, 80, 7, 0, TCP_ACK, &[1; 12], &body)),
    );
    let p = d
        .decode(LinkType::Ethernet, 0, &frame[..14 + 20 + 24])
        .unwrap()
        .unwrap();
    assert_eq!((p.payload.len(), p.missing), (0, 100));

    // Cut inside the TCP base header, the IP header, the Ethernet header.
    assert_eq!(
        d.decode(LinkType::Ethernet, 0, &frame[..14 + 20 + 10]),
        Err(DecodeError::TruncatedL4)
    );
    assert_eq!(
        d.decode(LinkType::Ethernet, 0, &frame[..14 + 10]),
        Err(DecodeError::TruncatedL3)
    );
    assert_eq!(
        d.decode(LinkType::Ethernet, 0, &frame[..10]),
        Err(DecodeError::TruncatedL2)
    );
    assert_eq!(d.stats().error_count(DecodeError::TruncatedL4), 1);

    // UDP cut.
    let frame = eth(0x86dd, &ipv6(17, &udp(1, 53, &body)));
    let p = d
        .decode(LinkType::Ethernet, 0, &frame[..14 + 40 + 8 + 5])
        .unwrap()
        .unwrap();
    assert_eq!((p.payload.len(), p.missing), (5, 95));
    assert_eq!(
        d.decode(LinkType::Ethernet, 0, &frame[..14 + 40 + 4]),
        Err(DecodeError::TruncatedL4)
    );
    assert_eq!(d.stats().truncated, 3);
    assert_eq!(d.stats().packets, 7);
}

#[test]
fn udp_length_shorter_than_ip() {
    let mut u = udp(1, 2, b"abcdef");
    u[4..6].copy_from_slice(&10u16.to_be_bytes());
    let (_, payload) = ok(LinkType::Raw, &ipv4(17, &u));
    assert_eq!(payload, b"ab");
}

#[test]
fn ipv6_extension_headers() {
    let t = tcp(1, 80, 5, 0, TCP_ACK, &[], b"data");
    // hop-by-hop -> destination options -> routing -> TCP.
    let body = cat(&[&ext8(60), &ext8(43), &ext8(6), &t]);
    let (p, payload) = ok(LinkType::Raw, &ipv6(0, &body));
    assert_eq!(p.dst_port, 80);
    assert_eq!(payload, b"data");
    // Atomic fragment (offset 0, M=0): a plain packet.
    let body = cat(&[&frag6(6, 0, false, 99), &t]);
    let mut d = dec();
    let frame = ipv6(44, &body);
    let p = d.decode(LinkType::Raw, 0, &frame).unwrap().unwrap();
    assert_eq!(p.payload, b"data");
    assert_eq!(d.stats().frag.fragments, 0);
    // Authentication header (IPv4 and IPv6): next, len (in 4-byte units - 2),
    // reserved, SPI, sequence, ICV.
    let ah = cat(&[&[6, 4, 0, 0], &[0; 4], &[0; 4], &[0; 12]]);
    let (_, payload) = ok(LinkType::Raw, &ipv4(51, &cat(&[&ah, &t])));
    assert_eq!(payload, b"data");
    let (_, payload) = ok(LinkType::Raw, &ipv6(51, &cat(&[&ah, &t])));
    assert_eq!(payload, b"data");
    // Extension header cut short.
    assert_eq!(
        err(LinkType::Raw, &ipv6(60, &[6, 4, 0])),
        DecodeError::TruncatedL3
    );
}

/// A UDP datagram (header + `payload`) cut into IPv4 fragments of `sizes`.
fn v4_frags(id: u16, payload: &[u8], sizes: &[usize]) -> Vec<Vec<u8>> {
    let dgram = udp(4000, 53, payload);
    let mut out = Vec::new();
    let mut off = 0;
    for (i, &n) in sizes.iter().enumerate() {
        let last = i + 1 == sizes.len();
        let end = if last { dgram.len() } else { off + n };
        out.push(eth(
            0x0800,
            &ipv4_full(17, V4A, V4B, id, (!last, off as u16), &dgram[off..end]),
        ));
        off = end;
    }
    out
}

fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

#[test]
fn ipv4_fragments_in_and_out_of_order() {
    let data = payload(200);
    let frags = v4_frags(7, &data, &[64, 64, 0]);
    for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
        let mut d = dec();
        let mut got = None;
        for (k, &i) in order.iter().enumerate() {
            let r = d.decode(LinkType::Ethernet, k as u64, &frags[i]).unwrap();
            if let Some(p) = r {
                assert_eq!(k, 2, "complete only with the last fragment");
                assert_eq!((p.src_port, p.dst_port, p.missing), (4000, 53, 0));
                got = Some(p.payload.to_vec());
            }
        }
        assert_eq!(got.as_deref(), Some(&data[..]));
        assert_eq!(d.stats().frag.reassembled, 1);
        assert_eq!(d.stats().frag.fragments, 3);
        assert_eq!(d.fragment_sets(), 0);
        assert_eq!(d.fragment_bytes(), 0);
    }
}

#[test]
fn ipv4_fragments_overlapping_first_copy_wins() {
    let data = payload(100);
    let dgram = udp(4000, 53, &data);
    let mut d = dec();
    let f = |more, off: usize, bytes: &[u8]| {
        eth(
            0x0800,
            &ipv4_full(17, V4A, V4B, 3, (more, off as u16), bytes),
        )
    };
    assert!(
        d.decode(LinkType::Ethernet, 0, &f(true, 0, &dgram[..48]))
            .unwrap()
            .is_none()
    );
    // Overlapping re-send with different bytes for 40..56.
    let mut other = dgram[40..56].to_vec();
    other.iter_mut().for_each(|b| *b ^= 0xff);
    assert!(
        d.decode(LinkType::Ethernet, 0, &f(true, 40, &other))
            .unwrap()
            .is_none()
    );
    let last = f(false, 48, &dgram[48..]);
    let p = d.decode(LinkType::Ethernet, 0, &last).unwrap().unwrap();
    // 0..48 from the first fragment, 48..56 from the overlapping one (it was
    // first there), the rest from the last.
    let mut want = dgram[8..].to_vec();
    want[40..48].copy_from_slice(&other[8..16]);
    assert_eq!(p.payload, &want[..]);
}

#[test]
fn ipv4_fragment_timeout_and_pool_bounds() {
    let data = payload(100);
    let frags = v4_frags(9, &data, &[48, 0]);
    let mut d = Decoder::new(DecoderConfig {
        fragment_timeout_ns: 1_000,
        ..DecoderConfig::default()
    });
    assert!(
        d.decode(LinkType::Ethernet, 0, &frags[0])
            .unwrap()
            .is_none()
    );
    // An unrelated frame later than the timeout expires the datagram.
    let other = eth(0x0800, &ipv4(17, &udp(1, 2, b"x")));
    d.decode(LinkType::Ethernet, 5_000, &other).unwrap();
    assert_eq!(d.fragment_sets(), 0);
    assert_eq!(d.stats().frag.timeouts, 1);
    assert!(
        d.decode(LinkType::Ethernet, 5_001, &frags[1])
            .unwrap()
            .is_none()
    );
    assert_eq!(d.stats().frag.reassembled, 0);

    // Pool of one datagram: a second datagram's fragment is dropped.
    let mut d = Decoder::new(DecoderConfig {
        max_fragment_sets: 1,
        ..DecoderConfig::default()
    });
    let a = v4_frags(1, &data, &[48, 0]);
    let b = v4_frags(2, &data, &[48, 0]);
    assert!(d.decode(LinkType::Ethernet, 0, &a[0]).unwrap().is_none());
    assert_eq!(
        d.decode(LinkType::Ethernet, 0, &b[0]),
        Err(DecodeError::FragmentDropped)
    );
    assert_eq!(d.stats().frag.pool_full, 1);
    assert_eq!(d.stats().error_count(DecodeError::FragmentDropped), 1);
    assert!(d.decode(LinkType::Ethernet, 0, &a[1]).unwrap().is_some());

    // Byte cap.
    let mut d = Decoder::new(DecoderConfig {
        max_fragment_bytes: 40,
        ..DecoderConfig::default()
    });
    assert_eq!(
        d.decode(LinkType::Ethernet, 0, &a[0]),
        Err(DecodeError::FragmentDropped)
    );
    assert_eq!(d.stats().frag.bytes_full, 1);

    // A fragment cut by the capture cannot be used.
    let mut d = dec();
    assert_eq!(
        d.decode(LinkType::Ethernet, 0, &a[0][..a[0].len() - 4]),
        Err(DecodeError::FragmentDropped)
    );
}

#[test]
fn ipv6_fragments() {
    let data = payload(150);
    let seg = tcp(33000, 80, 100, 200, TCP_ACK | TCP_PSH, &[], &data);
    let (a, b) = seg.split_at(96);
    let f1 = ipv6(44, &cat(&[&frag6(6, 0, true, 0xabcd), a]));
    let f2 = ipv6(44, &cat(&[&frag6(6, 96, false, 0xabcd), b]));
    let mut d = dec();
    assert!(d.decode(LinkType::Raw, 0, &f2).unwrap().is_none());
    let p = d.decode(LinkType::Raw, 1, &f1).unwrap().unwrap();
    assert_eq!(p.payload, &data[..]);
    let t = tcp_info(&p);
    assert_eq!((t.seq, t.ack), (100, 200));
    assert_eq!(d.stats().frag.reassembled, 1);
    // Destination options after the fragment header (in the fragmentable
    // part) are skipped after reassembly.
    let seg2 = cat(&[&ext8(6), &seg]);
    let (a, b) = seg2.split_at(96);
    let f1 = ipv6(44, &cat(&[&frag6(60, 0, true, 5), a]));
    let f2 = ipv6(44, &cat(&[&frag6(60, 96, false, 5), b]));
    assert!(d.decode(LinkType::Raw, 2, &f1).unwrap().is_none());
    let p = d.decode(LinkType::Raw, 3, &f2).unwrap().unwrap();
    assert_eq!(p.payload, &data[..]);
}

#[test]
fn ipv4_fragment_with_offset_zero_and_more_set_is_buffered() {
    let mut d = dec();
    let frags = v4_frags(4, &payload(40), &[16, 0]);
    assert_eq!(d.decode(LinkType::Ethernet, 0, &frags[0]), Ok(None));
}
