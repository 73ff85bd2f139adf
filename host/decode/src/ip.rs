//! Network and transport layers: IPv4/IPv6 (with extension headers and
//! fragments) down to the TCP/UDP payload.

use std::net::IpAddr;

use etherparse::err::ipv4::HeaderSliceError as V4Err;
use etherparse::err::ipv6::HeaderSliceError as V6Err;
use etherparse::{
    IpAuthHeaderSlice, IpNumber, Ipv4HeaderSlice, Ipv6FragmentHeaderSlice, Ipv6HeaderSlice,
    Ipv6RawExtHeaderSlice,
};

use crate::defrag::{Defrag, FragKey, FragStats};
use crate::link::{IpHint, L3};
use crate::{DecodeError, Packet, TcpInfo, Transport};

const IPV6_HEADER_LEN: usize = 40;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_HOPOPT: u8 = 0;
const PROTO_FRAG: u8 = 44;
const PROTO_AUTH: u8 = 51;

/// Addresses and tag of the IP packet being decoded.
#[derive(Clone, Copy)]
struct Net {
    src: IpAddr,
    dst: IpAddr,
    vlan: Option<u16>,
}

/// Decodes the network layer of a frame (its link layer already stripped)
/// down to TCP/UDP, passing fragments through `frags`.
pub(crate) fn decode<'a>(
    frags: &'a mut Defrag,
    fs: &mut FragStats,
    ts_ns: u64,
    l3: L3<'a>,
) -> Result<Option<Packet<'a>>, DecodeError> {
    let first = *l3.data.first().ok_or(DecodeError::TruncatedL3)?;
    match (l3.hint, first >> 4) {
        (IpHint::V4 | IpHint::Any, 4) => ipv4(frags, fs, ts_ns, l3.data, l3.vlan),
        (IpHint::V6 | IpHint::Any, 6) => ipv6(frags, fs, ts_ns, l3.data, l3.vlan),
        (IpHint::Any, _) => Err(DecodeError::NotIp),
        _ => Err(DecodeError::BadIpHeader),
    }
}

/// Where the IP payload ends given the length the header claims (`claimed`,
/// `None` when the header gives no usable length), and how many bytes the
/// capture lacks.
fn bound(avail: usize, claimed: Option<usize>) -> (usize, usize) {
    match claimed {
        None => (avail, 0),
        Some(c) if c > avail => (avail, c - avail),
        Some(c) => (c, 0),
    }
}

fn ipv4<'a>(
    frags: &'a mut Defrag,
    fs: &mut FragStats,
    ts_ns: u64,
    data: &'a [u8],
    vlan: Option<u16>,
) -> Result<Option<Packet<'a>>, DecodeError> {
    let h = Ipv4HeaderSlice::from_slice(data).map_err(|e| match e {
        V4Err::Len(_) => DecodeError::TruncatedL3,
        V4Err::Content(_) => DecodeError::BadIpHeader,
    })?;
    let hl = h.slice().len();
    let total = usize::from(h.total_len());
    // A total length of 0 is seen on TSO captures: fall back to the capture.
    let claimed = match total {
        0 => None,
        t if t < hl => return Err(DecodeError::BadIpHeader),
        t => Some(t),
    };
    let (end, missing) = bound(data.len(), claimed);
    let payload = data.get(hl..end).unwrap_or_default();
    let net = Net {
        src: IpAddr::V4(h.source_addr()),
        dst: IpAddr::V4(h.destination_addr()),
        vlan,
    };
    let proto = h.protocol().0;
    if h.is_fragmenting_payload() {
        if missing > 0 {
            // Cannot rebuild a datagram from a fragment the capture cut.
            fs.dropped += 1;
            return Err(DecodeError::FragmentDropped);
        }
        let key = FragKey {
            src: net.src,
            dst: net.dst,
            id: u32::from(h.identification()),
            proto,
        };
        let off = u32::from(h.fragments_offset().byte_offset());
        return match frags.push(fs, ts_ns, key, off, h.more_fragments(), payload)? {
            None => Ok(None),
            Some(buf) => match exts(proto, buf, false)? {
                Walk::Done(proto, p) => transport(net, proto, p, 0).map(Some),
                Walk::Frag { .. } => Err(DecodeError::BadIpHeader),
            },
        };
    }
    match exts(proto, payload, false)? {
        Walk::Done(proto, p) => transport(net, proto, p, missing).map(Some),
        Walk::Frag { .. } => Err(DecodeError::BadIpHeader),
    }
}

fn ipv6<'a>(
    frags: &'a mut Defrag,
    fs: &mut FragStats,
    ts_ns: u64,
    data: &'a [u8],
    vlan: Option<u16>,
) -> Result<Option<Packet<'a>>, DecodeError> {
    let h = Ipv6HeaderSlice::from_slice(data).map_err(|e| match e {
        V6Err::Len(_) => DecodeError::TruncatedL3,
        V6Err::Content(_) => DecodeError::BadIpHeader,
    })?;
    let body = data.get(IPV6_HEADER_LEN..).unwrap_or_default();
    // Payload length 0: jumbogram (or TSO); fall back to the capture.
    let claimed = match usize::from(h.payload_length()) {
        0 => None,
        n => Some(n),
    };
    let (end, missing) = bound(body.len(), claimed);
    let payload = body.get(..end).unwrap_or_default();
    let net = Net {
        src: IpAddr::V6(h.source_addr()),
        dst: IpAddr::V6(h.destination_addr()),
        vlan,
    };
    match exts(h.next_header().0, payload, true)? {
        Walk::Done(proto, p) => transport(net, proto, p, missing).map(Some),
        Walk::Frag {
            id,
            offset,
            more,
            next,
            payload,
        } => {
            if missing > 0 {
                fs.dropped += 1;
                return Err(DecodeError::FragmentDropped);
            }
            let key = FragKey {
                src: net.src,
                dst: net.dst,
                id,
                proto: next,
            };
            match frags.push(fs, ts_ns, key, offset, more, payload)? {
                None => Ok(None),
                Some(buf) => match exts(next, buf, true)? {
                    Walk::Done(proto, p) => transport(net, proto, p, 0).map(Some),
                    // A fragment header inside a reassembled datagram.
                    Walk::Frag { .. } => Err(DecodeError::BadIpHeader),
                },
            }
        }
    }
}

/// Result of walking the extension headers.
enum Walk<'a> {
    /// Upper-layer protocol and its bytes.
    Done(u8, &'a [u8]),
    /// A real (non-atomic) IPv6 fragment: the fragmentable part follows.
    Frag {
        id: u32,
        offset: u32,
        more: bool,
        next: u8,
        payload: &'a [u8],
    },
}

/// Skips IPv6 extension headers (`v6`) and authentication headers. Atomic
/// fragment headers (offset 0, no more fragments) are skipped like any other.
fn exts(mut proto: u8, mut p: &[u8], v6: bool) -> Result<Walk<'_>, DecodeError> {
    // Every header consumes at least 8 bytes, so this ends.
    loop {
        match proto {
            PROTO_AUTH => {
                let a = IpAuthHeaderSlice::from_slice(p).map_err(|e| match e {
                    etherparse::err::ip_auth::HeaderSliceError::Len(_) => DecodeError::TruncatedL3,
                    etherparse::err::ip_auth::HeaderSliceError::Content(_) => {
                        DecodeError::BadIpHeader
                    }
                })?;
                proto = a.next_header().0;
                p = p.get(a.slice().len()..).unwrap_or_default();
            }
            PROTO_FRAG if v6 => {
                let f =
                    Ipv6FragmentHeaderSlice::from_slice(p).map_err(|_| DecodeError::TruncatedL3)?;
                let rest = p.get(f.slice().len()..).unwrap_or_default();
                if f.is_fragmenting_payload() {
                    return Ok(Walk::Frag {
                        id: f.identification(),
                        offset: u32::from(f.fragment_offset().byte_offset()),
                        more: f.more_fragments(),
                        next: f.next_header().0,
                        payload: rest,
                    });
                }
                proto = f.next_header().0;
                p = rest;
            }
            n if v6
                && (n == PROTO_HOPOPT
                    || Ipv6RawExtHeaderSlice::header_type_supported(IpNumber(n))) =>
            {
                let x =
                    Ipv6RawExtHeaderSlice::from_slice(p).map_err(|_| DecodeError::TruncatedL3)?;
                proto = x.next_header().0;
                p = p.get(x.slice().len()..).unwrap_or_default();
            }
            _ => return Ok(Walk::Done(proto, p)),
        }
    }
}

fn be16(b: &[u8], at: usize) -> u16 {
    match b.get(at..at + 2) {
        Some(&[x, y]) => u16::from_be_bytes([x, y]),
        _ => 0,
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    match b.get(at..at + 4) {
        Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
        _ => 0,
    }
}

fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Parses the TCP/UDP header. `missing` = bytes of the IP packet the capture
/// lacks (all of them after `p`).
fn transport<'a>(
    net: Net,
    proto: u8,
    p: &'a [u8],
    missing: usize,
) -> Result<Packet<'a>, DecodeError> {
    match proto {
        PROTO_TCP => {
            if p.len() < 20 {
                return Err(DecodeError::TruncatedL4);
            }
            let doff = p.get(12).map_or(0, |b| b >> 4);
            let flags = p.get(13).copied().unwrap_or(0);
            if doff < 5 {
                return Err(DecodeError::BadL4Header);
            }
            let hl = usize::from(doff) * 4;
            let (payload, missing) = if let Some(payload) = p.get(hl..) {
                (payload, missing)
            } else if missing > 0 {
                // Options cut by the capture: the header fields are there,
                // the whole payload is missing.
                let empty: &[u8] = &[];
                (empty, (p.len() + missing).saturating_sub(hl))
            } else {
                return Err(DecodeError::BadL4Header);
            };
            Ok(Packet {
                src: net.src,
                dst: net.dst,
                src_port: be16(p, 0),
                dst_port: be16(p, 2),
                transport: Transport::Tcp(TcpInfo {
                    seq: be32(p, 4),
                    ack: be32(p, 8),
                    fin: flags & 0x01 != 0,
                    syn: flags & 0x02 != 0,
                    rst: flags & 0x04 != 0,
                    ack_flag: flags & 0x10 != 0,
                    window: be16(p, 14),
                }),
                payload,
                missing: clamp_u32(missing),
                vlan: net.vlan,
            })
        }
        PROTO_UDP => {
            if p.len() < 8 {
                return Err(DecodeError::TruncatedL4);
            }
            let avail = p.len() - 8;
            let from_ip = avail + missing;
            // Trust the UDP length when it is shorter than the IP payload; 0
            // (jumbograms) and nonsense (< 8) fall back to the IP length.
            let claimed = match usize::from(be16(p, 4)) {
                n if n >= 8 => (n - 8).min(from_ip),
                _ => from_ip,
            };
            let have = claimed.min(avail);
            Ok(Packet {
                src: net.src,
                dst: net.dst,
                src_port: be16(p, 0),
                dst_port: be16(p, 2),
                transport: Transport::Udp,
                payload: p.get(8..8 + have).unwrap_or_default(),
                missing: clamp_u32(claimed - have),
                vlan: net.vlan,
            })
        }
        _ => Err(DecodeError::NotTcpUdp),
    }
}
