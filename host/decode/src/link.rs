//! Link layer: from a captured frame to the IP packet it carries.

use etherparse::{Ethernet2Slice, SingleVlanSlice};

use crate::{DecodeError, LinkType};

/// Which IP version the link layer announced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum IpHint {
    V4,
    V6,
    /// Raw IP: the version nibble decides.
    Any,
}

/// The IP packet found in a frame.
#[derive(Clone, Copy, Debug)]
pub(crate) struct L3<'a> {
    pub(crate) hint: IpHint,
    pub(crate) data: &'a [u8],
    pub(crate) vlan: Option<u16>,
}

const ETH_IPV4: u16 = 0x0800;
const ETH_IPV6: u16 = 0x86dd;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const ETH_QINQ_OLD: u16 = 0x9100;

/// NFLOG TLV type of the packet payload.
const NFULA_PAYLOAD: u16 = 9;
/// Netlink attribute type bits (the rest are NLA_F_NESTED / NET_BYTEORDER).
const NLA_TYPE_MASK: u16 = 0x3fff;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_le_bytes([*s.first()?, *s.get(1)?]))
}

/// Strips the link-layer header of `frame`.
pub(crate) fn strip(link: LinkType, frame: &[u8]) -> Result<L3<'_>, DecodeError> {
    match link {
        LinkType::Ethernet => {
            let eth = Ethernet2Slice::from_slice_without_fcs(frame)
                .map_err(|_| DecodeError::TruncatedL2)?;
            ether(eth.ether_type().0, eth.payload_slice())
        }
        LinkType::LinuxSll => {
            // packet type u16, ARPHRD u16, address length u16, address 8 bytes,
            // protocol u16.
            let proto = be16(frame, 14).ok_or(DecodeError::TruncatedL2)?;
            ether(proto, frame.get(16..).unwrap_or_default())
        }
        LinkType::LinuxSll2 => {
            // protocol u16, reserved u16, ifindex u32, ARPHRD u16, packet type
            // u8, address length u8, address 8 bytes.
            if frame.len() < 20 {
                return Err(DecodeError::TruncatedL2);
            }
            let proto = be16(frame, 0).ok_or(DecodeError::TruncatedL2)?;
            ether(proto, frame.get(20..).unwrap_or_default())
        }
        LinkType::Nflog => nflog(frame),
        LinkType::Null | LinkType::Loop => {
            let fam = frame.get(..4).ok_or(DecodeError::TruncatedL2)?;
            let fam: [u8; 4] = fam.try_into().map_err(|_| DecodeError::TruncatedL2)?;
            // DLT_NULL is in the capturing host's byte order, DLT_LOOP in
            // network order; accept both for both.
            let hint = match (u32::from_le_bytes(fam), u32::from_be_bytes(fam)) {
                (2, _) | (_, 2) => IpHint::V4,
                (24 | 28 | 30, _) | (_, 24 | 28 | 30) => IpHint::V6,
                _ => return Err(DecodeError::NotIp),
            };
            Ok(L3 {
                hint,
                data: frame.get(4..).unwrap_or_default(),
                vlan: None,
            })
        }
        LinkType::Raw => Ok(L3 {
            hint: IpHint::Any,
            data: frame,
            vlan: None,
        }),
        LinkType::Ipv4 => Ok(L3 {
            hint: IpHint::V4,
            data: frame,
            vlan: None,
        }),
        LinkType::Ipv6 => Ok(L3 {
            hint: IpHint::V6,
            data: frame,
            vlan: None,
        }),
    }
}

/// Follows an EtherType through any VLAN tags to IPv4/IPv6.
fn ether(mut ether_type: u16, mut data: &[u8]) -> Result<L3<'_>, DecodeError> {
    let mut vlan = None;
    loop {
        match ether_type {
            ETH_IPV4 => {
                return Ok(L3 {
                    hint: IpHint::V4,
                    data,
                    vlan,
                });
            }
            ETH_IPV6 => {
                return Ok(L3 {
                    hint: IpHint::V6,
                    data,
                    vlan,
                });
            }
            ETH_VLAN | ETH_QINQ | ETH_QINQ_OLD => {
                // Each tag consumes 4 bytes, so this loop ends.
                let tag =
                    SingleVlanSlice::from_slice(data).map_err(|_| DecodeError::TruncatedL2)?;
                if vlan.is_none() {
                    vlan = Some(tag.vlan_identifier().value());
                }
                ether_type = tag.ether_type().0;
                data = tag.payload_slice();
            }
            _ => return Err(DecodeError::NotIp),
        }
    }
}

/// NFLOG: family u8, version u8, resource id u16 (BE), then TLVs with
/// little-endian u16 length (including the 4-byte TLV header) and type, each
/// padded to 4 bytes. TLV 9 holds the IP packet.
fn nflog(frame: &[u8]) -> Result<L3<'_>, DecodeError> {
    let family = *frame.first().ok_or(DecodeError::TruncatedL2)?;
    if frame.len() < 4 {
        return Err(DecodeError::TruncatedL2);
    }
    let hint = match family {
        2 => IpHint::V4,
        10 => IpHint::V6,
        _ => return Err(DecodeError::NotIp),
    };
    let mut at = 4usize;
    while at < frame.len() {
        let (Some(len), Some(ty)) = (le16(frame, at), le16(frame, at + 2)) else {
            return Err(DecodeError::TruncatedL2);
        };
        let len = usize::from(len);
        if len < 4 {
            return Err(DecodeError::TruncatedL2);
        }
        if ty & NLA_TYPE_MASK == NFULA_PAYLOAD {
            // A snaplen cut may shorten the last TLV: hand on what exists,
            // the IP length tells what is missing.
            let end = at.saturating_add(len).min(frame.len());
            let data = frame.get(at + 4..end).unwrap_or_default();
            return Ok(L3 {
                hint,
                data,
                vlan: None,
            });
        }
        at = at.saturating_add(len.saturating_add(3) & !3);
    }
    Err(DecodeError::NotIp)
}
