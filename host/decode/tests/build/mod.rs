//! Hand-built headers for tests (checksums are not checked by the decoder).

#![allow(dead_code, unreachable_pub)]

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

pub const V4A: [u8; 4] = [10, 0, 0, 1];
pub const V4B: [u8; 4] = [10, 0, 0, 2];
pub const V6A: [u8; 16] = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const V6B: [u8; 16] = [0x20, 0x01, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// TCP header (+ options, padded to 4 bytes) followed by `payload`.
pub fn tcp(
    sp: u16,
    dp: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    opts: &[u8],
    payload: &[u8],
) -> Vec<u8> {
    let mut o = opts.to_vec();
    while !o.len().is_multiple_of(4) {
        o.push(1); // NOP
    }
    let hl = 20 + o.len();
    let mut v = Vec::new();
    v.extend(sp.to_be_bytes());
    v.extend(dp.to_be_bytes());
    v.extend(seq.to_be_bytes());
    v.extend(ack.to_be_bytes());
    v.push(((hl / 4) as u8) << 4);
    v.push(flags);
    v.extend(0xffffu16.to_be_bytes());
    v.extend([0, 0, 0, 0]);
    v.extend(o);
    v.extend(payload);
    v
}

/// UDP header with a correct length, followed by `payload`.
pub fn udp(sp: u16, dp: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend(sp.to_be_bytes());
    v.extend(dp.to_be_bytes());
    v.extend(((payload.len() + 8) as u16).to_be_bytes());
    v.extend([0, 0]);
    v.extend(payload);
    v
}

/// IPv4 header around `body`. `frag` = (more fragments, byte offset).
pub fn ipv4_full(
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    id: u16,
    frag: (bool, u16),
    body: &[u8],
) -> Vec<u8> {
    let total = (20 + body.len()) as u16;
    let mut v = vec![0x45, 0];
    v.extend(total.to_be_bytes());
    v.extend(id.to_be_bytes());
    let ff = (if frag.0 { 0x2000 } else { 0 }) | (frag.1 / 8);
    v.extend(ff.to_be_bytes());
    v.extend([64, proto, 0, 0]);
    v.extend(src);
    v.extend(dst);
    v.extend(body);
    v
}

pub fn ipv4(proto: u8, body: &[u8]) -> Vec<u8> {
    ipv4_full(proto, V4A, V4B, 1, (false, 0), body)
}

/// IPv6 header around `body` (which starts with any extension headers).
pub fn ipv6_full(next: u8, src: [u8; 16], dst: [u8; 16], body: &[u8]) -> Vec<u8> {
    let mut v = vec![0x60, 0, 0, 0];
    v.extend((body.len() as u16).to_be_bytes());
    v.push(next);
    v.push(64);
    v.extend(src);
    v.extend(dst);
    v.extend(body);
    v
}

pub fn ipv6(next: u8, body: &[u8]) -> Vec<u8> {
    ipv6_full(next, V6A, V6B, body)
}

/// A generic IPv6 extension header (hop-by-hop, destination options,
/// routing) of 8 bytes.
pub fn ext8(next: u8) -> Vec<u8> {
    vec![next, 0, 1, 4, 0, 0, 0, 0]
}

/// IPv6 fragment header.
pub fn frag6(next: u8, offset: u16, more: bool, id: u32) -> Vec<u8> {
    let mut v = vec![next, 0];
    v.extend((offset | u16::from(more)).to_be_bytes());
    v.extend(id.to_be_bytes());
    v
}

/// Ethernet II header around `l3`.
pub fn eth(ether_type: u16, l3: &[u8]) -> Vec<u8> {
    let mut v = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
    v.extend(ether_type.to_be_bytes());
    v.extend(l3);
    v
}

/// Concatenation.
pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}
