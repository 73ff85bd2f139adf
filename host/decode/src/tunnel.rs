//! Mirrored traffic arrives tunnelled: a switch's ERSPAN session, a
//! GRE tap, VXLAN or Geneve overlays. [`peel`] takes the outer packet off
//! when it is one of those and hands back the inner frame; the outer
//! addresses are the tunnel's, the inner ones the flow's.
//!
//! Recognised: GRE version 0 with its optional checksum, key and sequence
//! fields carrying Ethernet (transparent bridging, 0x6558), IPv4 or IPv6;
//! ERSPAN type I (GRE 0x88BE without a sequence number), type II (0x88BE)
//! and type III (0x22EB, with the optional platform sub-header); VXLAN
//! (UDP, port 4789 by default); Geneve (UDP, port 6081 by default, its
//! options skipped); IP in IP (IPv4 protocol 4, IPv6 protocol 41: `ipip`,
//! `sit`, `ip6tnl` devices). A fragmented outer packet is not peeled.

use crate::LinkType;
use crate::link::{IpHint, L3};

/// Kinds of encapsulation, for counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tunnel {
    /// GRE (Ethernet or IP inside).
    Gre = 0,
    /// ERSPAN type I or II.
    Erspan2 = 1,
    /// ERSPAN type III.
    Erspan3 = 2,
    /// VXLAN.
    Vxlan = 3,
    /// Geneve.
    Geneve = 4,
    /// IP in IP (IPv4 or IPv6 inside IPv4 or IPv6).
    IpIp = 5,
}

impl Tunnel {
    /// Number of kinds.
    pub const COUNT: usize = 6;
    /// Every kind, in index order.
    pub const ALL: [Tunnel; Tunnel::COUNT] = [
        Tunnel::Gre,
        Tunnel::Erspan2,
        Tunnel::Erspan3,
        Tunnel::Vxlan,
        Tunnel::Geneve,
        Tunnel::IpIp,
    ];
    /// Stable name, for counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Tunnel::Gre => "gre",
            Tunnel::Erspan2 => "erspan2",
            Tunnel::Erspan3 => "erspan3",
            Tunnel::Vxlan => "vxlan",
            Tunnel::Geneve => "geneve",
            Tunnel::IpIp => "ipip",
        }
    }
}

/// Where tunnels are looked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelConfig {
    /// Peel tunnels at all.
    pub enabled: bool,
    /// Tunnels peeled from one frame at most; deeper ones are left as they are (counted).
    pub max_depth: u8,
    /// UDP destination port of VXLAN.
    pub vxlan_port: u16,
    /// UDP destination port of Geneve.
    pub geneve_port: u16,
}

impl Default for TunnelConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_depth: 4,
            vxlan_port: 4789,
            geneve_port: 6081,
        }
    }
}

const PROTO_GRE: u8 = 47;
const PROTO_UDP: u8 = 17;
const PROTO_IPV4: u8 = 4;
const PROTO_IPV6: u8 = 41;
const ETH_BRIDGE: u16 = 0x6558;
const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_ERSPAN2: u16 = 0x88be;
const ETH_ERSPAN3: u16 = 0x22eb;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(at)?, *b.get(at + 1)?]))
}

/// The inner frame of `l3` (a frame's network layer) if it is a tunnel
/// packet: its link type, bytes, and the kind of tunnel.
pub(crate) fn peel<'a>(cfg: &TunnelConfig, l3: &L3<'a>) -> Option<(LinkType, &'a [u8], Tunnel)> {
    let d = l3.data;
    let (proto, payload) = match (l3.hint, d.first()? >> 4) {
        (IpHint::V4 | IpHint::Any, 4) => {
            let ihl = usize::from(d.first()? & 0x0f) * 4;
            let total = usize::from(be16(d, 2)?);
            let frag = be16(d, 6)?;
            // More fragments, or an offset: a fragment is not peeled.
            if ihl < 20 || frag & 0x3fff != 0 {
                return None;
            }
            let end = if total >= ihl {
                total.min(d.len())
            } else {
                d.len()
            };
            (*d.get(9)?, d.get(ihl..end)?)
        }
        (IpHint::V6 | IpHint::Any, 6) => {
            let len = usize::from(be16(d, 4)?);
            // Extension headers are not walked here: tunnels rarely carry them.
            let end = (40 + len).min(d.len());
            (*d.get(6)?, d.get(40..end)?)
        }
        _ => return None,
    };
    match proto {
        PROTO_GRE => gre(payload),
        // The inner packet must say the version its protocol number promises.
        PROTO_IPV4 => {
            (payload.first()? >> 4 == 4).then_some((LinkType::Ipv4, payload, Tunnel::IpIp))
        }
        PROTO_IPV6 => {
            (payload.first()? >> 4 == 6).then_some((LinkType::Ipv6, payload, Tunnel::IpIp))
        }
        PROTO_UDP => {
            let dport = be16(payload, 2)?;
            let body = payload.get(8..)?;
            if dport == cfg.vxlan_port {
                // Flags with the I bit, reserved, VNI, reserved.
                (body.first()? & 0x08 != 0).then_some(())?;
                Some((LinkType::Ethernet, body.get(8..)?, Tunnel::Vxlan))
            } else if dport == cfg.geneve_port {
                let b0 = *body.first()?;
                if b0 >> 6 != 0 {
                    return None;
                }
                let opts = usize::from(b0 & 0x3f) * 4;
                let inner = body.get(8 + opts..)?;
                let link = match be16(body, 2)? {
                    ETH_BRIDGE => LinkType::Ethernet,
                    ETH_IPV4 => LinkType::Ipv4,
                    ETH_IPV6 => LinkType::Ipv6,
                    _ => return None,
                };
                Some((link, inner, Tunnel::Geneve))
            } else {
                None
            }
        }
        _ => None,
    }
}

fn gre(p: &[u8]) -> Option<(LinkType, &[u8], Tunnel)> {
    let flags = be16(p, 0)?;
    // Version 0 only (1 is PPTP's enhanced GRE); no source routing.
    if flags & 0x0007 != 0 || flags & 0x4000 != 0 {
        return None;
    }
    let proto = be16(p, 2)?;
    let mut at = 4;
    if flags & 0x8000 != 0 {
        at += 4; // checksum and reserved
    }
    if flags & 0x2000 != 0 {
        at += 4; // key
    }
    let seq = flags & 0x1000 != 0;
    if seq {
        at += 4;
    }
    let body = p.get(at..)?;
    match proto {
        ETH_BRIDGE => Some((LinkType::Ethernet, body, Tunnel::Gre)),
        ETH_IPV4 => Some((LinkType::Ipv4, body, Tunnel::Gre)),
        ETH_IPV6 => Some((LinkType::Ipv6, body, Tunnel::Gre)),
        // ERSPAN type I has no header (and no sequence number); type II
        // has an 8-byte one (version 1).
        ETH_ERSPAN2 if !seq => Some((LinkType::Ethernet, body, Tunnel::Erspan2)),
        ETH_ERSPAN2 => {
            (body.first()? >> 4 == 1).then_some(())?;
            Some((LinkType::Ethernet, body.get(8..)?, Tunnel::Erspan2))
        }
        ETH_ERSPAN3 => {
            (body.first()? >> 4 == 2).then_some(())?;
            // The O bit (last bit of the header) announces an 8-byte
            // platform-specific sub-header.
            let hl = 12 + if body.get(11)? & 0x01 != 0 { 8 } else { 0 };
            Some((LinkType::Ethernet, body.get(hl..)?, Tunnel::Erspan3))
        }
        _ => None,
    }
}
