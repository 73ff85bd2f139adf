//! wasmtap-decode: sans-IO decoding of captured frames down to TCP/UDP.
//!
//! [`Decoder::decode`] takes one captured frame (its link type and capture
//! timestamp) and returns the transport-level view of it as a [`Packet`] that
//! borrows the frame (or, for a reassembled IP datagram, the decoder's
//! reassembly buffer). Nothing here reads a clock or does I/O: the fragment
//! timeout is driven by the timestamps passed in.
//!
//! The decoder is written for untrusted input: every length is checked, no
//! input makes it panic, and every state it keeps (IP fragment sets) is bounded
//! by a [`DecoderConfig`] field with a counter in [`DecodeStats`] when hit.
//!
//! Lengths: the IP header's length is trusted over the capture's length, so
//! Ethernet padding never becomes payload; a frame that the capture cut short
//! (snaplen) still decodes, with [`Packet::missing`] telling how many payload
//! bytes are absent.

mod defrag;
mod ip;
mod link;
mod tunnel;

use std::net::IpAddr;

pub use defrag::FragStats;
pub use tunnel::{Tunnel, TunnelConfig};

/// Link-layer header type of a capture (a libpcap `DLT_`/`LINKTYPE_` value).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkType {
    /// Ethernet II, with optional 802.1Q / 802.1ad (QinQ) tags (DLT 1).
    Ethernet,
    /// Linux "cooked" capture v1, 16-byte header (DLT 113).
    LinuxSll,
    /// Linux "cooked" capture v2, 20-byte header (DLT 276).
    LinuxSll2,
    /// Linux netfilter NFLOG (DLT 239).
    Nflog,
    /// BSD loopback, 4-byte address family in host byte order (DLT 0).
    Null,
    /// OpenBSD loopback, 4-byte address family in network byte order (DLT 108).
    Loop,
    /// Raw IP, version from the first nibble (DLT 12, 14, 101).
    Raw,
    /// Raw IPv4 only (DLT 228).
    Ipv4,
    /// Raw IPv6 only (DLT 229).
    Ipv6,
}

impl LinkType {
    /// Maps a libpcap data-link type number to a supported link type.
    pub fn from_dlt(dlt: i32) -> Option<LinkType> {
        Some(match dlt {
            1 => LinkType::Ethernet,
            0 => LinkType::Null,
            108 => LinkType::Loop,
            12 | 14 | 101 => LinkType::Raw,
            113 => LinkType::LinuxSll,
            276 => LinkType::LinuxSll2,
            239 => LinkType::Nflog,
            228 => LinkType::Ipv4,
            229 => LinkType::Ipv6,
            _ => return None,
        })
    }
}

/// Transport protocol of a decoded packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP, with the header fields flow tracking needs.
    Tcp(TcpInfo),
    /// UDP.
    Udp,
}

/// The TCP header fields used for flow tracking and reassembly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct TcpInfo {
    /// Sequence number.
    pub seq: u32,
    /// Acknowledgement number (meaningful only when `ack_flag` is set).
    pub ack: u32,
    /// SYN flag.
    pub syn: bool,
    /// ACK flag.
    pub ack_flag: bool,
    /// FIN flag.
    pub fin: bool,
    /// RST flag.
    pub rst: bool,
    /// Receive window (unscaled).
    pub window: u16,
}

/// A decoded TCP or UDP packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// TCP header fields, or UDP.
    pub transport: Transport,
    /// The transport payload bytes present in the capture (bounded by the IP
    /// and UDP length fields, so link-layer padding is never included).
    pub payload: &'a [u8],
    /// Payload bytes the IP length claims but the capture lacks (snaplen
    /// truncation); they follow `payload` on the wire.
    pub missing: u32,
    /// Outer VLAN id (802.1Q / 802.1ad), if the frame was tagged.
    pub vlan: Option<u16>,
}

/// Why a frame produced no packet. Small and `Copy`; [`DecodeError::as_str`]
/// gives a stable name for counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[repr(u8)]
pub enum DecodeError {
    /// The link type is not supported (for callers mapping a DLT with
    /// [`LinkType::from_dlt`]; [`Decoder::decode`] never returns it).
    #[error("unsupported link type")]
    UnsupportedLinkType = 0,
    /// The frame is shorter than its link-layer header (or an NFLOG TLV is
    /// malformed).
    #[error("truncated link-layer header")]
    TruncatedL2 = 1,
    /// The link layer carries something other than IPv4/IPv6 (ARP, LLDP,
    /// an unknown address family, NFLOG without payload, ...).
    #[error("not an IP packet")]
    NotIp = 2,
    /// The IP header (or an IPv6 extension header) is cut short.
    #[error("truncated IP header")]
    TruncatedL3 = 3,
    /// The IP header is invalid (version, header length, total length).
    #[error("bad IP header")]
    BadIpHeader = 4,
    /// The TCP/UDP header is cut short.
    #[error("truncated TCP/UDP header")]
    TruncatedL4 = 5,
    /// The TCP header is invalid (data offset).
    #[error("bad TCP header")]
    BadL4Header = 6,
    /// The IP payload is neither TCP nor UDP (ICMP, ESP, ...).
    #[error("not TCP or UDP")]
    NotTcpUdp = 7,
    /// An IP fragment was dropped: pool full, byte cap, inconsistent or
    /// truncated fragment, too many fragments in one datagram.
    #[error("IP fragment dropped")]
    FragmentDropped = 8,
}

impl DecodeError {
    /// Number of error kinds (the length of [`DecodeStats::errors`]).
    pub const COUNT: usize = 9;

    /// Every error kind, in index order.
    pub const ALL: [DecodeError; DecodeError::COUNT] = [
        DecodeError::UnsupportedLinkType,
        DecodeError::TruncatedL2,
        DecodeError::NotIp,
        DecodeError::TruncatedL3,
        DecodeError::BadIpHeader,
        DecodeError::TruncatedL4,
        DecodeError::BadL4Header,
        DecodeError::NotTcpUdp,
        DecodeError::FragmentDropped,
    ];

    /// Stable snake_case name, for counters and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            DecodeError::UnsupportedLinkType => "unsupported_link_type",
            DecodeError::TruncatedL2 => "truncated_l2",
            DecodeError::NotIp => "not_ip",
            DecodeError::TruncatedL3 => "truncated_l3",
            DecodeError::BadIpHeader => "bad_ip_header",
            DecodeError::TruncatedL4 => "truncated_l4",
            DecodeError::BadL4Header => "bad_l4_header",
            DecodeError::NotTcpUdp => "not_tcp_udp",
            DecodeError::FragmentDropped => "fragment_dropped",
        }
    }

    /// Index of this kind in [`DecodeStats::errors`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Bounds of the decoder's state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecoderConfig {
    /// IP datagrams being reassembled at once; a fragment that would start
    /// one more is dropped (`fragments_dropped`, `fragment_pool_full`).
    pub max_fragment_sets: usize,
    /// A datagram not complete this long after its first fragment (capture
    /// time) is discarded (`fragment_timeouts`).
    pub fragment_timeout_ns: u64,
    /// Bytes buffered over all datagrams being reassembled; a fragment that
    /// would go beyond is dropped (`fragment_bytes_full`).
    pub max_fragment_bytes: usize,
    /// Fragments accepted into one datagram; beyond it the datagram is
    /// discarded (`fragments_dropped`).
    pub max_fragments_per_set: usize,
    /// Tunnels taken off mirrored traffic (GRE, ERSPAN, VXLAN, Geneve).
    pub tunnels: TunnelConfig,
}

impl Default for DecoderConfig {
    fn default() -> Self {
        Self {
            max_fragment_sets: 1024,
            fragment_timeout_ns: 30_000_000_000,
            max_fragment_bytes: 4 << 20,
            max_fragments_per_set: 128,
            tunnels: TunnelConfig::default(),
        }
    }
}

/// Decoder counters. All only ever increase.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Frames handed to [`Decoder::decode`].
    pub packets: u64,
    /// Frames that produced a [`Packet`] (including reassembled datagrams).
    pub decoded: u64,
    /// Failed frames per error kind, indexed by [`DecodeError::index`].
    pub errors: [u64; DecodeError::COUNT],
    /// Packets returned with `missing > 0` (cut short by the capture).
    pub truncated: u64,
    /// Packets returned from VLAN-tagged frames.
    pub vlan_tagged: u64,
    /// IP fragmentation counters.
    pub frag: FragStats,
    /// Tunnels peeled, per kind (index with `Tunnel as usize`).
    pub tunnels: [u64; Tunnel::COUNT],
    /// Frames with more nested tunnels than `max_depth` (the rest left on).
    pub tunnel_too_deep: u64,
}

impl DecodeStats {
    /// Failed frames of one kind.
    pub fn error_count(&self, e: DecodeError) -> u64 {
        self.errors.get(e.index()).copied().unwrap_or(0)
    }

    /// Every counter as `(stable name, value)`, for metric export.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        let base = [
            ("packets", self.packets),
            ("decoded", self.decoded),
            ("truncated", self.truncated),
            ("vlan_tagged", self.vlan_tagged),
            ("fragments", self.frag.fragments),
            ("fragments_reassembled", self.frag.reassembled),
            ("fragments_dropped", self.frag.dropped),
            ("fragment_timeouts", self.frag.timeouts),
            ("fragment_pool_full", self.frag.pool_full),
            ("fragment_bytes_full", self.frag.bytes_full),
            ("tunnel_gre", self.tunnels[Tunnel::Gre as usize]),
            ("tunnel_erspan2", self.tunnels[Tunnel::Erspan2 as usize]),
            ("tunnel_erspan3", self.tunnels[Tunnel::Erspan3 as usize]),
            ("tunnel_vxlan", self.tunnels[Tunnel::Vxlan as usize]),
            ("tunnel_geneve", self.tunnels[Tunnel::Geneve as usize]),
            ("tunnel_ipip", self.tunnels[Tunnel::IpIp as usize]),
            ("tunnel_too_deep", self.tunnel_too_deep),
        ];
        base.into_iter().chain(
            DecodeError::ALL
                .into_iter()
                .map(|e| (e.as_str(), self.error_count(e))),
        )
    }
}

/// Decodes frames; holds the bounded IP reassembly state and the counters.
#[derive(Debug)]
pub struct Decoder {
    frags: defrag::Defrag,
    stats: DecodeStats,
    tunnels: TunnelConfig,
}

impl Decoder {
    /// Creates a decoder with the given bounds.
    pub fn new(cfg: DecoderConfig) -> Self {
        Self {
            frags: defrag::Defrag::new(&cfg),
            stats: DecodeStats::default(),
            tunnels: cfg.tunnels,
        }
    }

    /// Decodes one captured frame of link type `link`, captured at `ts_ns`.
    ///
    /// `Ok(None)` means an IP fragment was buffered and there is nothing to
    /// hand on yet. The returned packet borrows `frame`, or the decoder's
    /// reassembly buffer when it completes a fragmented datagram.
    pub fn decode<'a>(
        &'a mut self,
        link: LinkType,
        ts_ns: u64,
        frame: &'a [u8],
    ) -> Result<Option<Packet<'a>>, DecodeError> {
        let stats = &mut self.stats;
        stats.packets += 1;
        self.frags.expire(ts_ns, &mut stats.frag);
        // The link layer is stripped once; mirrored traffic is peeled on
        // the network layer it exposes (the flow is inside the tunnel).
        let res = match link::strip(link, frame) {
            Err(e) => Err(e),
            Ok(mut l3) => {
                let mut depth = 0u8;
                let mut inner_err = None;
                while self.tunnels.enabled
                    && let Some((inner_link, inner, kind)) = tunnel::peel(&self.tunnels, &l3)
                {
                    if depth >= self.tunnels.max_depth {
                        stats.tunnel_too_deep += 1;
                        break;
                    }
                    if let Some(c) = stats.tunnels.get_mut(kind as usize) {
                        *c += 1;
                    }
                    depth += 1;
                    match link::strip(inner_link, inner) {
                        Ok(next) => l3 = next,
                        Err(e) => {
                            inner_err = Some(e);
                            break;
                        }
                    }
                }
                match inner_err {
                    Some(e) => Err(e),
                    None => ip::decode(&mut self.frags, &mut stats.frag, ts_ns, l3),
                }
            }
        };
        match &res {
            Ok(Some(p)) => {
                stats.decoded += 1;
                if p.missing > 0 {
                    stats.truncated += 1;
                }
                if p.vlan.is_some() {
                    stats.vlan_tagged += 1;
                }
            }
            Ok(None) => {}
            Err(e) => {
                if let Some(c) = stats.errors.get_mut(e.index()) {
                    *c += 1;
                }
            }
        }
        res
    }

    /// The counters.
    pub fn stats(&self) -> &DecodeStats {
        &self.stats
    }

    /// IP datagrams currently being reassembled.
    pub fn fragment_sets(&self) -> usize {
        self.frags.sets()
    }

    /// Bytes currently buffered for IP reassembly.
    pub fn fragment_bytes(&self) -> usize {
        self.frags.bytes()
    }
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new(DecoderConfig::default())
    }
}
