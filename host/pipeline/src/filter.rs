//! The operators' filter subscription (`[filters]` in the configuration file): which interfaces to
//! capture on, which packets to capture (L3/L4) and which exchanges to report (L7).
//!
//! [`FilterSpec`] is the configuration as written; [`FilterSpec::compile`] validates every entry
//! (errors name the field, the index and the bad value) and gives a [`CompiledFilter`], which answers
//! the questions of the rest of the agent. This module is pure: no I/O, no clock.
//!
//! # Semantics
//!
//! - **Empty list = no restriction** from that list (`l4 = []` is TCP and UDP, `ip_include = []` is
//!   every address, `l7_include = []` is every exchange, `interfaces = []` lets the CLI decide).
//! - **Include lists are ORed**: an entry matching is enough.
//! - **Addresses**: a packet passes if *either* endpoint (source or destination) is in one of the
//!   `ip_include` networks (when there are any), and *neither* endpoint is in one of the `ip_exclude`
//!   networks. A network only contains addresses of its own family: `0.0.0.0/0` is "all IPv4", and
//!   an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) is an IPv6 address. A CIDR with host bits set
//!   (`10.1.2.3/8`) is an error, because libpcap rejects it and it is most likely a typo.
//! - **Ports**: likewise, a packet passes if *either* endpoint's port is in one of the
//!   `ports_include` entries (when there are any) and *neither* endpoint's port is in one of the
//!   `ports_exclude` entries. An entry is a port (`"80"`) or an inclusive range (`"8000-8100"`).
//! - **L4**: `"tcp"` and/or `"udp"` (case-insensitive).
//! - **All the above are ANDed**: l4, then address includes and excludes, then port includes and
//!   excludes.
//! - **L7**: an entry is `"protocol"` (every operation of it) or `"protocol:OPERATION"`; both parts
//!   compare case-insensitively (ASCII). The protocol is the one decoders declare (`http`, `redis`,
//!   `mysql`, `postgresql`, `mongodb`, `memcached`, ...). An exchange is reported if it matches an
//!   include entry (or there are none) and matches **no** exclude entry: exclude wins.
//! - **Interfaces**: `"any"` matches every interface. An entry containing one of the regex
//!   metacharacters `^ $ * + ? ( ) [ ] { } | \` is a regular expression (the `regex` crate's syntax)
//!   searched *unanchored* in the name: `veth` matches `myveth0` only as a regex, so write
//!   `^veth.*$` (or `^veth`) to anchor. Any other entry is an exact name; a `.` alone does not make
//!   a regex, so `eth0.100` (a VLAN sub-interface) is matched exactly.
//! - **Bounds**: at most [`MAX_ENTRIES`] entries per list, so a configuration cannot blow up the BPF
//!   program or the per-packet work. Overlapping or adjacent networks and port ranges are merged
//!   when compiled, so duplicates cost nothing.
//!
//! # Kernel filter (BPF)
//!
//! [`CompiledFilter::bpf`] renders the L3/L4 part as one libpcap (tcpdump syntax) expression. It is
//! built only from parsed values (networks, numbers), never from the configured strings, so nothing
//! can be injected into it. It uses `net`/`host`/`port`/`portrange`, which match either direction,
//! and works for IPv4 and IPv6. Differences with [`CompiledFilter::packet_passes`], all in the
//! direction of capturing *more* (so that the user-space decision stays the reference, and applying
//! `packet_passes` after decoding gives the same result live and from files):
//!
//! - **VLAN**: libpcap's `vlan` keyword moves every later offset past the 802.1Q tag, so `bpf()` is
//!   `(EXPR) or (vlan and (EXPR))`: untagged frames are tested by the first branch, single-tagged
//!   frames by the second. (On Linux live captures the kernel usually strips the tag into metadata
//!   and the first branch matches; files keep the tag.) Double-tagged (QinQ) frames are not matched
//!   by the kernel filter. `vlan` only compiles for Ethernet link types: on Linux cooked captures
//!   (`-i any`), raw IP, or BSD loopback use [`CompiledFilter::bpf_without_vlan`], or
//!   [`CompiledFilter::bpf_for_link_type`] which chooses. libpcap cannot filter NFLOG at all: there,
//!   filter in user space with `packet_passes` only.
//! - **Fragments**: libpcap's `port` only matches an IPv4 fragment at offset 0 and never an IPv6
//!   packet with a fragment header, so a port include would drop the rest of a fragmented datagram
//!   before the agent could reassemble it. When `ports_include` is set, the port clause therefore
//!   also accepts non-first IPv4 fragments (`ip[6:2] & 0x1fff != 0`) and IPv6 fragments
//!   (`ip6[6] = 44`); the address clauses still apply to them.
//! - **Protocols**: without an `l4` list, `port` also matches SCTP, and `net`/`host` also match ARP
//!   and non-TCP/UDP IP traffic; the agent ignores those anyway.
//! - **Size**: the kernel filter holds at most [`MAX_BPF_TERMS`] address and port terms; a list
//!   that would exceed them is left out of it (most selective kept first: `ip_include`,
//!   `ports_include`, `ip_exclude`, `ports_exclude`) and applied by `packet_passes` only;
//!   [`CompiledFilter::bpf_omitted`] names them.
//! - **Only excludes**: an expression made only of `not (...)` clauses starts with `(ip or ip6)`,
//!   or it would pass every frame it cannot look into, VLAN-tagged frames in the untagged branch
//!   among them.
//! - IPv6 packets whose TCP/UDP header follows extension headers other than a fragment header
//!   (hop-by-hop, routing, destination options) do not match `tcp`/`udp`/`port` in libpcap; they are
//!   rare for TCP and UDP and are not special-cased.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::IpNet;
use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};

/// At most this many entries in each list of a [`FilterSpec`].
pub const MAX_ENTRIES: usize = 1024;

/// At most this many `host`/`net`/`port`/`portrange` terms in the kernel filter, after merging.
///
/// libpcap's optimizer is super-linear and the kernel accepts at most 4096 classic BPF
/// instructions: with the VLAN branch, 64 IPv6 `host` terms already make about 2250 instructions,
/// 512 `port` terms about 4900 instructions and 90 s of compilation. A list that does not fit is
/// left to user space ([`CompiledFilter::bpf_omitted`]); the kernel filter then captures more, never
/// less.
pub const MAX_BPF_TERMS: usize = 64;

/// Compiled size limit of one interface regular expression, bytes.
const MAX_REGEX_SIZE: usize = 1 << 20;

/// The BPF clause that keeps IP fragments which libpcap's `port` cannot see into.
const FRAGMENTS_BPF: &str = "ip[6:2] & 0x1fff != 0 or ip6[6] = 44";

/// The Ethernet link type (`DLT_EN10MB`), the one where `vlan` compiles.
pub const DLT_EN10MB: i32 = 1;

/// The operators' subscription: what to capture and report.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct FilterSpec {
    /// Interface names, regular expressions (`^veth.*`) or `"any"`; empty: the CLI decides.
    pub interfaces: Vec<String>,
    /// Addresses or CIDRs, IPv4 or IPv6, either endpoint; empty: all.
    pub ip_include: Vec<String>,
    /// Addresses or CIDRs, IPv4 or IPv6; a packet with either endpoint in one is dropped.
    pub ip_exclude: Vec<String>,
    /// `"tcp"`, `"udp"`; empty: both.
    pub l4: Vec<String>,
    /// Ports (`"80"`) or inclusive ranges (`"8000-8100"`), either endpoint; empty: all.
    pub ports_include: Vec<String>,
    /// Ports or ranges; a packet with either endpoint's port in one is dropped.
    pub ports_exclude: Vec<String>,
    /// `"protocol"` or `"protocol:OPERATION"` (`"http"`, `"redis:GET"`); empty: all exchanges.
    pub l7_include: Vec<String>,
    /// `"protocol"` or `"protocol:OPERATION"`; a matching exchange is not reported (exclude wins).
    pub l7_exclude: Vec<String>,
}

/// A filter entry that does not validate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    /// The field, with the entry's index when the error is about one entry:
    /// `filters.ports_include[2]`.
    pub field: String,
    /// The offending entry as written, when the error is about one entry.
    pub value: Option<String>,
    /// What is wrong, or what was expected.
    pub reason: String,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(v) => write!(f, "{}: {:?}: {}", self.field, v, self.reason),
            None => write!(f, "{}: {}", self.field, self.reason),
        }
    }
}

impl std::error::Error for FilterError {}

/// A transport protocol named in `filters.l4`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum L4 {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl L4 {
    /// The libpcap (and configuration) name.
    pub fn name(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }
}

/// An inclusive port range (`first == last` for a single port).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    /// First port of the range.
    pub first: u16,
    /// Last port of the range (`>= first`).
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    pub fn contains(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    fn bpf(self) -> String {
        if self.first == self.last {
            format!("port {}", self.first)
        } else {
            format!("portrange {}-{}", self.first, self.last)
        }
    }
}

/// One L7 rule: a protocol, and optionally one of its operations (both lowercased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L7Rule {
    /// Protocol name, ASCII-lowercased.
    pub protocol: String,
    /// Operation, ASCII-lowercased; `None` for every operation.
    pub operation: Option<String>,
}

impl L7Rule {
    /// Whether an exchange of `protocol` with `operation` matches (ASCII case-insensitive).
    pub fn matches(&self, protocol: &str, operation: &str) -> bool {
        self.protocol.eq_ignore_ascii_case(protocol)
            && self
                .operation
                .as_deref()
                .is_none_or(|op| op.eq_ignore_ascii_case(operation))
    }
}

/// One entry of `filters.interfaces`.
#[derive(Debug, Clone)]
enum InterfaceRule {
    /// `"any"`.
    Any,
    /// An exact interface name.
    Exact(String),
    /// A regular expression, searched unanchored.
    Pattern(Regex),
}

/// The validated, parsed form of a [`FilterSpec`]. The default restricts nothing.
#[derive(Debug, Clone, Default)]
pub struct CompiledFilter {
    interfaces: Vec<InterfaceRule>,
    l4: Vec<L4>,
    ip_include: Vec<IpNet>,
    ip_exclude: Vec<IpNet>,
    ports_include: Vec<PortRange>,
    ports_exclude: Vec<PortRange>,
    l7_include: Vec<L7Rule>,
    l7_exclude: Vec<L7Rule>,
}

impl FilterSpec {
    /// Validates every entry and compiles the filter. Errors name the field, the entry's index and
    /// the bad value, e.g.
    /// `filters.ports_include[2]: "80-": expected a port or a range a-b with a <= b`.
    pub fn compile(&self) -> Result<CompiledFilter, FilterError> {
        Ok(CompiledFilter {
            interfaces: parse_list("interfaces", &self.interfaces, parse_interface)?,
            l4: {
                let mut l4 = parse_list("l4", &self.l4, parse_l4)?;
                l4.sort_unstable();
                l4.dedup();
                l4
            },
            ip_include: aggregate(parse_list("ip_include", &self.ip_include, parse_net)?),
            ip_exclude: aggregate(parse_list("ip_exclude", &self.ip_exclude, parse_net)?),
            ports_include: merge_ranges(parse_list(
                "ports_include",
                &self.ports_include,
                parse_ports,
            )?),
            ports_exclude: merge_ranges(parse_list(
                "ports_exclude",
                &self.ports_exclude,
                parse_ports,
            )?),
            l7_include: parse_list("l7_include", &self.l7_include, parse_l7)?,
            l7_exclude: parse_list("l7_exclude", &self.l7_exclude, parse_l7)?,
        })
    }
}

impl CompiledFilter {
    /// The L3/L4 part as one libpcap filter expression (tcpdump syntax) for Ethernet captures, e.g.
    /// `(tcp and (net 10.0.0.0/8) and not (port 22)) or (vlan and (tcp and (net 10.0.0.0/8) and not
    /// (port 22)))`; `None` when nothing restricts (capture everything). The second branch catches
    /// 802.1Q-tagged frames; see the module documentation for VLANs, fragments and link types.
    pub fn bpf(&self) -> Option<String> {
        self.bpf_without_vlan()
            .map(|e| format!("({e}) or (vlan and ({e}))"))
    }

    /// The same expression without the VLAN branch, e.g.
    /// `(tcp or udp) and (net 10.0.0.0/8 or host 192.168.1.5) and not (net 10.1.0.0/16) and
    /// (port 80 or portrange 8000-8100 or ip[6:2] & 0x1fff != 0 or ip6[6] = 44) and not (port 22)`:
    /// for link types where libpcap has no `vlan` (Linux cooked `any`, raw IP, loopback).
    pub fn bpf_without_vlan(&self) -> Option<String> {
        self.bpf_plan().0
    }

    /// The fields left out of the kernel filter because they would exceed its budget of
    /// [`MAX_BPF_TERMS`] terms (`filters.ip_exclude`, ...): [`Self::packet_passes`] alone applies
    /// them. Empty in the usual case; worth a warning when not.
    pub fn bpf_omitted(&self) -> Vec<&'static str> {
        self.bpf_plan().1
    }

    /// The expression without the VLAN branch, and the fields left out of it.
    fn bpf_plan(&self) -> (Option<String>, Vec<&'static str>) {
        // Which lists fit the budget, most selective first.
        let mut budget = MAX_BPF_TERMS;
        let mut omitted = Vec::new();
        let mut fits = |field: &'static str, terms: usize| -> bool {
            if terms == 0 {
                return false;
            }
            if terms > budget {
                omitted.push(field);
                return false;
            }
            budget -= terms;
            true
        };
        let ip_include = fits("filters.ip_include", self.ip_include.len());
        let ports_include = fits("filters.ports_include", self.ports_include.len());
        let ip_exclude = fits("filters.ip_exclude", self.ip_exclude.len());
        let ports_exclude = fits("filters.ports_exclude", self.ports_exclude.len());
        omitted.sort_unstable();

        let mut parts: Vec<String> = Vec::new();
        match self.l4.as_slice() {
            [] => {}
            [one] => parts.push(one.name().to_string()),
            many => parts.push(format!("({})", join(many.iter().map(|p| p.name())))),
        }
        if ip_include {
            parts.push(format!("({})", join(self.ip_include.iter().map(net_bpf))));
        }
        if ip_exclude {
            parts.push(format!(
                "not ({})",
                join(self.ip_exclude.iter().map(net_bpf))
            ));
        }
        if ports_include {
            let ports = join(self.ports_include.iter().map(|r| r.bpf()));
            parts.push(format!("({ports} or {FRAGMENTS_BPF})"));
        }
        if ports_exclude {
            parts.push(format!(
                "not ({})",
                join(self.ports_exclude.iter().map(|r| r.bpf()))
            ));
        }
        if parts.is_empty() {
            return (None, omitted);
        }
        if self.l4.is_empty() && !ip_include && !ports_include {
            // Only negations: without a positive test, a frame the expression cannot look into
            // (a VLAN-tagged one in the untagged branch, say) would pass.
            parts.insert(0, "(ip or ip6)".to_string());
        }
        (Some(parts.join(" and ")), omitted)
    }

    /// The expression for a capture of libpcap link type `dlt` (`pcap_datalink`): [`Self::bpf`] for
    /// Ethernet ([`DLT_EN10MB`]), [`Self::bpf_without_vlan`] for every other link type.
    pub fn bpf_for_link_type(&self, dlt: i32) -> Option<String> {
        if dlt == DLT_EN10MB {
            self.bpf()
        } else {
            self.bpf_without_vlan()
        }
    }

    /// The expression for a capture of link type `dlt` ANDed with an operator's own expression
    /// (`--bpf`), or either alone.
    ///
    /// Do not AND [`Self::bpf`]'s result with another expression: libpcap's `vlan` shifts the
    /// offsets of everything *after* it, so in `((E) or (vlan and (E))) and (C)` the `C` part is
    /// read 4 bytes off in every frame and untagged traffic is lost. Here `C` goes inside both
    /// branches: `((C) and E) or (vlan and ((C) and E))`. When `C` itself mentions an
    /// encapsulation keyword (`vlan`, `mpls`, `pppoes`, `geneve`), the operator handles
    /// encapsulation and the result is `(C) and (E)`, with `C` first so it is read unshifted.
    pub fn bpf_with(&self, dlt: i32, extra: Option<&str>) -> Option<String> {
        let extra = extra.map(str::trim).filter(|c| !c.is_empty());
        let (e, c) = match (self.bpf_without_vlan(), extra) {
            (None, None) => return None,
            (None, Some(c)) => return Some(c.to_string()),
            (Some(_), None) => return self.bpf_for_link_type(dlt),
            (Some(e), Some(c)) => (e, c),
        };
        let encapsulating = c
            .split(|ch: char| !ch.is_ascii_alphanumeric())
            .any(|w| matches!(w, "vlan" | "mpls" | "pppoes" | "geneve"));
        if encapsulating {
            return Some(format!("({c}) and ({e})"));
        }
        let both = format!("({c}) and {e}");
        Some(if dlt == DLT_EN10MB {
            format!("({both}) or (vlan and ({both}))")
        } else {
            both
        })
    }

    /// The L3/L4 decision in user space (for captures read from files, and to double-check the
    /// kernel filter): does a TCP (`tcp`) or UDP (`!tcp`) packet between these endpoints pass?
    pub fn packet_passes(
        &self,
        src: IpAddr,
        dst: IpAddr,
        tcp: bool,
        src_port: u16,
        dst_port: u16,
    ) -> bool {
        let l4 = if tcp { L4::Tcp } else { L4::Udp };
        let in_nets = |nets: &[IpNet]| in_sorted_nets(nets, src) || in_sorted_nets(nets, dst);
        let in_ports = |ranges: &[PortRange]| {
            in_sorted_ranges(ranges, src_port) || in_sorted_ranges(ranges, dst_port)
        };
        (self.l4.is_empty() || self.l4.contains(&l4))
            && (self.ip_include.is_empty() || in_nets(&self.ip_include))
            && !in_nets(&self.ip_exclude)
            && (self.ports_include.is_empty() || in_ports(&self.ports_include))
            && !in_ports(&self.ports_exclude)
    }

    /// The L7 part: is an exchange of `protocol` with `operation` reported? Exclude wins over
    /// include; an empty include list includes everything. Case-insensitive (ASCII).
    pub fn exchange_passes(&self, protocol: &str, operation: &str) -> bool {
        (self.l7_include.is_empty()
            || self
                .l7_include
                .iter()
                .any(|r| r.matches(protocol, operation)))
            && !self
                .l7_exclude
                .iter()
                .any(|r| r.matches(protocol, operation))
    }

    /// Whether the L7 part can drop an exchange (so callers can skip [`Self::exchange_passes`]).
    pub fn restricts_exchanges(&self) -> bool {
        !self.l7_include.is_empty() || !self.l7_exclude.is_empty()
    }

    /// Whether the configuration selects interfaces (else the command line decides).
    pub fn selects_interfaces(&self) -> bool {
        !self.interfaces.is_empty()
    }

    /// Interface selection: does interface `name` match an entry (exact name, regex, or `"any"`)?
    /// True when no interface is configured (the command line decides).
    pub fn interface_matches(&self, name: &str) -> bool {
        self.interfaces.is_empty()
            || self.interfaces.iter().any(|rule| match rule {
                InterfaceRule::Any => true,
                InterfaceRule::Exact(n) => n == name,
                InterfaceRule::Pattern(re) => re.is_match(name),
            })
    }
}

/// Whether `addr` is in one of `nets`, sorted and disjoint (as `IpNet::aggregate` leaves them).
fn in_sorted_nets(nets: &[IpNet], addr: IpAddr) -> bool {
    // The only candidate is the last network starting at or before `addr`.
    let i = nets.partition_point(|n| n.network() <= addr);
    i > 0 && nets[i - 1].contains(&addr)
}

/// Whether `port` is in one of `ranges`, sorted and disjoint (as `merge_ranges` leaves them).
fn in_sorted_ranges(ranges: &[PortRange], port: u16) -> bool {
    let i = ranges.partition_point(|r| r.first <= port);
    i > 0 && ranges[i - 1].contains(port)
}

/// Sorted, disjoint networks covering the same addresses.
fn aggregate(nets: Vec<IpNet>) -> Vec<IpNet> {
    let mut out = IpNet::aggregate(&nets);
    out.sort_unstable();
    out
}

/// `a or b or c`.
fn join<S: AsRef<str>>(items: impl Iterator<Item = S>) -> String {
    let mut out = String::new();
    for (i, s) in items.enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(s.as_ref());
    }
    out
}

/// `host A` for a single address, `net A/len` otherwise.
fn net_bpf(net: &IpNet) -> String {
    if net.prefix_len() == net.max_prefix_len() {
        format!("host {}", net.addr())
    } else {
        format!("net {net}")
    }
}

/// Parses every entry of `filters.<field>`, naming the field and index in errors.
fn parse_list<T>(
    field: &str,
    entries: &[String],
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, FilterError> {
    if entries.len() > MAX_ENTRIES {
        return Err(FilterError {
            field: format!("filters.{field}"),
            value: None,
            reason: format!("{} entries, at most {MAX_ENTRIES}", entries.len()),
        });
    }
    entries
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            let s = raw.trim();
            let parsed = if s.is_empty() {
                Err("empty entry".to_string())
            } else {
                parse(s)
            };
            parsed.map_err(|reason| FilterError {
                field: format!("filters.{field}[{i}]"),
                value: Some(raw.clone()),
                reason,
            })
        })
        .collect()
}

fn parse_interface(s: &str) -> Result<InterfaceRule, String> {
    const META: &[char] = &[
        '^', '$', '*', '+', '?', '(', ')', '[', ']', '{', '}', '|', '\\',
    ];
    if s == "any" {
        return Ok(InterfaceRule::Any);
    }
    if s.contains(META) {
        return RegexBuilder::new(s)
            .size_limit(MAX_REGEX_SIZE)
            .build()
            .map(InterfaceRule::Pattern)
            .map_err(|e| format!("invalid regular expression: {}", regex_reason(&e)));
    }
    if s.chars()
        .any(|c| c.is_whitespace() || c.is_control() || c == '/')
    {
        return Err(
            "expected an interface name, a regular expression or \"any\"; \
             names have no whitespace or '/'"
                .to_string(),
        );
    }
    Ok(InterfaceRule::Exact(s.to_string()))
}

/// The one-line reason of a regex error (its display spans several lines).
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .map(str::to_string)
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

fn parse_l4(s: &str) -> Result<L4, String> {
    if s.eq_ignore_ascii_case("tcp") {
        Ok(L4::Tcp)
    } else if s.eq_ignore_ascii_case("udp") {
        Ok(L4::Udp)
    } else {
        Err("expected \"tcp\" or \"udp\"".to_string())
    }
}

fn parse_net(s: &str) -> Result<IpNet, String> {
    const EXPECTED: &str = "expected an IPv4 or IPv6 address or CIDR (10.0.0.0/8, 2001:db8::/32)";
    if s.contains('/') {
        let net = IpNet::from_str(s).map_err(|_| EXPECTED.to_string())?;
        if net.trunc() != net {
            return Err(format!(
                "host bits set in the CIDR; did you mean \"{}\"?",
                net.trunc()
            ));
        }
        Ok(net)
    } else {
        IpAddr::from_str(s)
            .map(IpNet::from)
            .map_err(|_| EXPECTED.to_string())
    }
}

fn parse_ports(s: &str) -> Result<PortRange, String> {
    const EXPECTED: &str = "expected a port or a range a-b with a <= b";
    let port = |p: &str| -> Result<u16, String> {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(EXPECTED.to_string());
        }
        p.parse::<u16>()
            .map_err(|_| format!("port {p} is out of range 0-65535"))
    };
    let (first, last) = match s.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(s)?;
            (p, p)
        }
    };
    if first > last {
        return Err(EXPECTED.to_string());
    }
    Ok(PortRange { first, last })
}

/// Sorts and merges overlapping or adjacent ranges.
fn merge_ranges(mut ranges: Vec<PortRange>) -> Vec<PortRange> {
    ranges.sort_unstable();
    let mut out: Vec<PortRange> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(prev) if u32::from(r.first) <= u32::from(prev.last) + 1 => {
                prev.last = prev.last.max(r.last);
            }
            _ => out.push(r),
        }
    }
    out
}

fn parse_l7(s: &str) -> Result<L7Rule, String> {
    const EXPECTED: &str =
        "expected \"protocol\" or \"protocol:OPERATION\" (\"http\", \"redis:GET\")";
    let (protocol, operation) = match s.split_once(':') {
        Some((p, op)) => (p, Some(op)),
        None => (s, None),
    };
    let protocol_ok = !protocol.is_empty()
        && protocol
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    let operation_ok = operation.is_none_or(|op| {
        !op.is_empty()
            && !op
                .chars()
                .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    });
    if !protocol_ok || !operation_ok {
        return Err(EXPECTED.to_string());
    }
    Ok(L7Rule {
        protocol: protocol.to_ascii_lowercase(),
        operation: operation.map(str::to_ascii_lowercase),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::{Ipv4Addr, Ipv6Addr};
    use std::process::Command;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn err(spec: FilterSpec) -> String {
        spec.compile()
            .expect_err("the spec should not compile")
            .to_string()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The example of the documentation: every L3/L4 list set.
    fn full() -> FilterSpec {
        FilterSpec {
            l4: strings(&["udp", "TCP"]),
            ip_include: strings(&["192.168.1.5", "10.0.0.0/8"]),
            ip_exclude: strings(&["10.1.0.0/16"]),
            ports_include: strings(&["8000-8100", "80"]),
            ports_exclude: strings(&["22"]),
            ..Default::default()
        }
    }

    // ---- validation ----

    #[test]
    fn every_validation_error_names_field_index_and_value() {
        let cases: Vec<(FilterSpec, &str)> = vec![
            (
                FilterSpec {
                    ports_include: strings(&["80", "8000-8100", "80-"]),
                    ..Default::default()
                },
                r#"filters.ports_include[2]: "80-": expected a port or a range a-b with a <= b"#,
            ),
            (
                FilterSpec {
                    ports_include: strings(&["9000-8000"]),
                    ..Default::default()
                },
                r#"filters.ports_include[0]: "9000-8000": expected a port or a range a-b with a <= b"#,
            ),
            (
                FilterSpec {
                    ports_exclude: strings(&["22", "65536"]),
                    ..Default::default()
                },
                r#"filters.ports_exclude[1]: "65536": port 65536 is out of range 0-65535"#,
            ),
            (
                FilterSpec {
                    ports_exclude: strings(&["+22"]),
                    ..Default::default()
                },
                r#"filters.ports_exclude[0]: "+22": expected a port or a range a-b with a <= b"#,
            ),
            (
                FilterSpec {
                    ports_exclude: strings(&["1-2-3"]),
                    ..Default::default()
                },
                r#"filters.ports_exclude[0]: "1-2-3": expected a port or a range a-b with a <= b"#,
            ),
            (
                FilterSpec {
                    ports_include: strings(&["http"]),
                    ..Default::default()
                },
                r#"filters.ports_include[0]: "http": expected a port or a range a-b with a <= b"#,
            ),
            (
                FilterSpec {
                    ip_include: strings(&["10.0.0.0/33"]),
                    ..Default::default()
                },
                r#"filters.ip_include[0]: "10.0.0.0/33": expected an IPv4 or IPv6 address or CIDR (10.0.0.0/8, 2001:db8::/32)"#,
            ),
            (
                FilterSpec {
                    ip_include: strings(&["::1", "10.1.2.3/8"]),
                    ..Default::default()
                },
                r#"filters.ip_include[1]: "10.1.2.3/8": host bits set in the CIDR; did you mean "10.0.0.0/8"?"#,
            ),
            (
                FilterSpec {
                    ip_exclude: strings(&["2001:db8::1/32"]),
                    ..Default::default()
                },
                r#"filters.ip_exclude[0]: "2001:db8::1/32": host bits set in the CIDR; did you mean "2001:db8::/32"?"#,
            ),
            (
                FilterSpec {
                    ip_exclude: strings(&["example.com"]),
                    ..Default::default()
                },
                r#"filters.ip_exclude[0]: "example.com": expected an IPv4 or IPv6 address or CIDR (10.0.0.0/8, 2001:db8::/32)"#,
            ),
            (
                FilterSpec {
                    ip_exclude: strings(&["fe80::1%eth0"]),
                    ..Default::default()
                },
                r#"filters.ip_exclude[0]: "fe80::1%eth0": expected an IPv4 or IPv6 address or CIDR (10.0.0.0/8, 2001:db8::/32)"#,
            ),
            (
                FilterSpec {
                    l4: strings(&["tcp", "sctp"]),
                    ..Default::default()
                },
                r#"filters.l4[1]: "sctp": expected "tcp" or "udp""#,
            ),
            (
                FilterSpec {
                    l7_include: strings(&["redis:"]),
                    ..Default::default()
                },
                r#"filters.l7_include[0]: "redis:": expected "protocol" or "protocol:OPERATION" ("http", "redis:GET")"#,
            ),
            (
                FilterSpec {
                    l7_include: strings(&[":GET"]),
                    ..Default::default()
                },
                r#"filters.l7_include[0]: ":GET": expected "protocol" or "protocol:OPERATION" ("http", "redis:GET")"#,
            ),
            (
                FilterSpec {
                    l7_exclude: strings(&["http", "redis::GET"]),
                    ..Default::default()
                },
                r#"filters.l7_exclude[1]: "redis::GET": expected "protocol" or "protocol:OPERATION" ("http", "redis:GET")"#,
            ),
            (
                FilterSpec {
                    l7_exclude: strings(&["my sql"]),
                    ..Default::default()
                },
                r#"filters.l7_exclude[0]: "my sql": expected "protocol" or "protocol:OPERATION" ("http", "redis:GET")"#,
            ),
            (
                FilterSpec {
                    l7_exclude: strings(&["mysql:SELECT *"]),
                    ..Default::default()
                },
                r#"filters.l7_exclude[0]: "mysql:SELECT *": expected "protocol" or "protocol:OPERATION" ("http", "redis:GET")"#,
            ),
            (
                FilterSpec {
                    interfaces: strings(&["eth0", "^veth("]),
                    ..Default::default()
                },
                r#"filters.interfaces[1]: "^veth(": invalid regular expression: unclosed group"#,
            ),
            (
                FilterSpec {
                    interfaces: strings(&["eth 0"]),
                    ..Default::default()
                },
                r#"filters.interfaces[0]: "eth 0": expected an interface name, a regular expression or "any"; names have no whitespace or '/'"#,
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(err(spec), want);
        }
    }

    #[test]
    fn empty_entries_are_errors_in_every_list() {
        type Field = fn(&mut FilterSpec) -> &mut Vec<String>;
        let fields: [(&str, Field); 8] = [
            ("interfaces", |s| &mut s.interfaces),
            ("ip_include", |s| &mut s.ip_include),
            ("ip_exclude", |s| &mut s.ip_exclude),
            ("l4", |s| &mut s.l4),
            ("ports_include", |s| &mut s.ports_include),
            ("ports_exclude", |s| &mut s.ports_exclude),
            ("l7_include", |s| &mut s.l7_include),
            ("l7_exclude", |s| &mut s.l7_exclude),
        ];
        for (name, field) in fields {
            let mut spec = FilterSpec::default();
            *field(&mut spec) = strings(&["  "]);
            assert_eq!(err(spec), format!("filters.{name}[0]: \"  \": empty entry"));
        }
    }

    #[test]
    fn lists_are_bounded() {
        let ports: Vec<String> = (0..=MAX_ENTRIES).map(|p| p.to_string()).collect();
        let mut spec = FilterSpec {
            ports_exclude: ports,
            ..Default::default()
        };
        assert_eq!(
            err(spec.clone()),
            "filters.ports_exclude: 1025 entries, at most 1024"
        );
        spec.ports_exclude.pop();
        let f = spec.compile().unwrap();
        // 0..=1023 merge into one range.
        assert_eq!(
            f.bpf_without_vlan().as_deref(),
            Some("(ip or ip6) and not (portrange 0-1023)")
        );
        let hosts: Vec<String> = (0..=MAX_ENTRIES)
            .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
            .collect();
        let spec = FilterSpec {
            ip_include: hosts,
            ..Default::default()
        };
        assert_eq!(err(spec), "filters.ip_include: 1025 entries, at most 1024");
    }

    #[test]
    fn whitespace_around_entries_is_ignored() {
        let f = FilterSpec {
            ports_include: strings(&[" 80 "]),
            ip_include: strings(&["\t10.0.0.1"]),
            l4: strings(&[" Udp"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert_eq!(
            f.bpf_without_vlan().as_deref(),
            Some("udp and (host 10.0.0.1) and (port 80 or ip[6:2] & 0x1fff != 0 or ip6[6] = 44)")
        );
    }

    #[test]
    fn deserializes_from_toml_and_rejects_unknown_keys() {
        let spec: FilterSpec = toml::from_str(
            "interfaces = [\"^veth\"]\nports_include = [\"80\"]\nl7_exclude = [\"redis:PING\"]\n",
        )
        .unwrap();
        assert_eq!(spec.interfaces, ["^veth"]);
        assert_eq!(spec.ports_include, ["80"]);
        assert_eq!(spec.l7_exclude, ["redis:PING"]);
        assert!(spec.ip_include.is_empty());
        let e = toml::from_str::<FilterSpec>("port_include = [\"80\"]\n").unwrap_err();
        assert!(e.to_string().contains("port_include"), "{e}");
        let back: FilterSpec = toml::from_str(&toml::to_string(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);
    }

    // ---- BPF generation ----

    fn plain(spec: FilterSpec) -> Option<String> {
        spec.compile().unwrap().bpf_without_vlan()
    }

    #[test]
    fn bpf_none_when_nothing_restricts() {
        let f = FilterSpec::default().compile().unwrap();
        assert_eq!(f.bpf(), None);
        assert_eq!(f.bpf_without_vlan(), None);
        // L7 and interface entries do not touch the packet filter.
        let f = FilterSpec {
            interfaces: strings(&["eth0"]),
            l7_include: strings(&["http"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert_eq!(f.bpf(), None);
    }

    #[test]
    fn bpf_each_list_alone() {
        let cases: Vec<(FilterSpec, &str)> = vec![
            (
                FilterSpec {
                    l4: strings(&["tcp"]),
                    ..Default::default()
                },
                "tcp",
            ),
            (
                FilterSpec {
                    l4: strings(&["udp", "udp"]),
                    ..Default::default()
                },
                "udp",
            ),
            (
                FilterSpec {
                    l4: strings(&["UDP", "tcp"]),
                    ..Default::default()
                },
                "(tcp or udp)",
            ),
            (
                FilterSpec {
                    ip_include: strings(&["10.0.0.0/8", "192.168.1.5"]),
                    ..Default::default()
                },
                "(net 10.0.0.0/8 or host 192.168.1.5)",
            ),
            (
                FilterSpec {
                    ip_exclude: strings(&["10.1.0.0/16"]),
                    ..Default::default()
                },
                "(ip or ip6) and not (net 10.1.0.0/16)",
            ),
            (
                FilterSpec {
                    ports_include: strings(&["80"]),
                    ..Default::default()
                },
                "(port 80 or ip[6:2] & 0x1fff != 0 or ip6[6] = 44)",
            ),
            (
                FilterSpec {
                    ports_exclude: strings(&["22", "6000-6063"]),
                    ..Default::default()
                },
                "(ip or ip6) and not (port 22 or portrange 6000-6063)",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(plain(spec).as_deref(), Some(want));
        }
    }

    #[test]
    fn bpf_all_lists_together_and_vlan_branch() {
        let f = full().compile().unwrap();
        let e = "(tcp or udp) and (net 10.0.0.0/8 or host 192.168.1.5) and not (net 10.1.0.0/16) \
                 and (port 80 or portrange 8000-8100 or ip[6:2] & 0x1fff != 0 or ip6[6] = 44) \
                 and not (port 22)";
        assert_eq!(f.bpf_without_vlan().as_deref(), Some(e));
        let with_vlan = format!("({e}) or (vlan and ({e}))");
        assert_eq!(f.bpf().as_deref(), Some(with_vlan.as_str()));
        assert_eq!(
            f.bpf_for_link_type(DLT_EN10MB).as_deref(),
            Some(with_vlan.as_str())
        );
        // Linux cooked (`any`), raw IP: no vlan branch.
        assert_eq!(f.bpf_for_link_type(113).as_deref(), Some(e));
        assert_eq!(f.bpf_for_link_type(101).as_deref(), Some(e));
    }

    #[test]
    fn bpf_pairs_of_lists() {
        let cases: Vec<(FilterSpec, &str)> = vec![
            (
                FilterSpec {
                    l4: strings(&["tcp"]),
                    ports_include: strings(&["443"]),
                    ..Default::default()
                },
                "tcp and (port 443 or ip[6:2] & 0x1fff != 0 or ip6[6] = 44)",
            ),
            (
                FilterSpec {
                    ip_include: strings(&["10.0.0.0/8"]),
                    ip_exclude: strings(&["10.0.0.1"]),
                    ..Default::default()
                },
                "(net 10.0.0.0/8) and not (host 10.0.0.1)",
            ),
            (
                FilterSpec {
                    ip_exclude: strings(&["10.0.0.1"]),
                    ports_exclude: strings(&["22"]),
                    ..Default::default()
                },
                "(ip or ip6) and not (host 10.0.0.1) and not (port 22)",
            ),
            (
                FilterSpec {
                    ports_include: strings(&["1-1024"]),
                    ports_exclude: strings(&["22"]),
                    ..Default::default()
                },
                "(portrange 1-1024 or ip[6:2] & 0x1fff != 0 or ip6[6] = 44) and not (port 22)",
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(plain(spec).as_deref(), Some(want));
        }
    }

    #[test]
    fn bpf_ipv6() {
        let f = FilterSpec {
            ip_include: strings(&["2001:db8::/32", "10.0.0.0/8", "2001:DB8:ffff::1"]),
            ip_exclude: strings(&["2001:db8:1::/48", "::1"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        // Aggregated: the /128 is inside the /32; IPv4 first; canonical IPv6 text.
        assert_eq!(
            f.bpf_without_vlan().as_deref(),
            Some("(net 10.0.0.0/8 or net 2001:db8::/32) and not (host ::1 or net 2001:db8:1::/48)")
        );
        let f = FilterSpec {
            ip_include: strings(&["2001:db8::1/128", "0.0.0.0/0", "::/0"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert_eq!(
            f.bpf_without_vlan().as_deref(),
            Some("(net 0.0.0.0/0 or net ::/0)")
        );
    }

    #[test]
    fn bpf_ranges_merge_and_single_port_ranges() {
        let f = FilterSpec {
            ports_include: strings(&["81-90", "80", "8000-8100", "8050-8200", "91", "0", "65535"]),
            ports_exclude: strings(&["22-22"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert_eq!(
            f.bpf_without_vlan().as_deref(),
            Some(
                "(port 0 or portrange 80-91 or portrange 8000-8200 or port 65535 \
                 or ip[6:2] & 0x1fff != 0 or ip6[6] = 44) and not (port 22)"
            )
        );
        let f = FilterSpec {
            ip_include: strings(&["10.0.0.0/9", "10.128.0.0/9", "10.5.0.0/16"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert_eq!(f.bpf_without_vlan().as_deref(), Some("(net 10.0.0.0/8)"));
    }

    // ---- libpcap: the expressions really compile ----

    /// Runs `tcpdump -d -y DLT EXPR`, which compiles the expression for that link type without
    /// opening a device, and exits non-zero on an error.
    fn pcap_compiles(dlt: &str, expr: &str) -> Result<(), String> {
        let out = Command::new("tcpdump")
            .args(["-d", "-y", dlt, expr])
            .output()
            .map_err(|e| format!("cannot run tcpdump (apt-get install tcpdump): {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Every filter the tests build, with the packet-agreement ones.
    fn sample_specs() -> Vec<FilterSpec> {
        vec![
            full(),
            FilterSpec {
                l4: strings(&["udp"]),
                ports_include: strings(&["53"]),
                ..Default::default()
            },
            FilterSpec {
                ip_include: strings(&["2001:db8::/32"]),
                ip_exclude: strings(&["2001:db8:1::/48"]),
                ..Default::default()
            },
            FilterSpec {
                ports_exclude: strings(&["22", "443"]),
                ..Default::default()
            },
            FilterSpec {
                ip_exclude: strings(&["8.8.8.8"]),
                ..Default::default()
            },
            FilterSpec {
                l4: strings(&["tcp"]),
                ip_include: strings(&["192.168.1.5", "2001:db8:1::5/128", "10.200.0.0/16"]),
                ..Default::default()
            },
            FilterSpec {
                ip_include: strings(&["0.0.0.0/0"]),
                ports_include: strings(&["8000-8100", "22"]),
                ..Default::default()
            },
            FilterSpec {
                ip_include: strings(&["::/0"]),
                ip_exclude: strings(&["2001:dead::1"]),
                ports_exclude: strings(&["80"]),
                ..Default::default()
            },
            FilterSpec {
                l4: strings(&["tcp", "udp"]),
                ports_exclude: strings(&["53"]),
                ..Default::default()
            },
        ]
    }

    #[test]
    fn every_generated_expression_compiles_with_libpcap() {
        let exprs: Vec<CompiledFilter> = sample_specs()
            .iter()
            .map(|s| s.compile().unwrap())
            .collect();
        for f in &exprs {
            let e = f.bpf().unwrap();
            pcap_compiles("EN10MB", &e).unwrap_or_else(|err| panic!("{e}: {err}"));
            let e = f.bpf_without_vlan().unwrap();
            for dlt in ["EN10MB", "LINUX_SLL", "LINUX_SLL2", "RAW", "NULL"] {
                pcap_compiles(dlt, &e).unwrap_or_else(|err| panic!("{dlt}: {e}: {err}"));
            }
        }
        // The check can fail: broken expressions, and the VLAN branch on a link type without VLANs.
        for bad in [
            "(tcp or udp",
            "net 10.1.2.3/8",
            "port 65536",
            "portrange 9000-",
            "tcp and",
        ] {
            assert!(pcap_compiles("EN10MB", bad).is_err(), "{bad} compiled");
        }
        let vlan = full().compile().unwrap().bpf().unwrap();
        assert!(pcap_compiles("LINUX_SLL", &vlan).is_err());
    }

    /// `tcpdump -d` output lines: the number of BPF instructions.
    fn pcap_instructions(expr: &str) -> usize {
        let out = Command::new("tcpdump")
            .args(["-d", "-y", "EN10MB", expr])
            .output()
            .expect("tcpdump runs (apt-get install tcpdump)");
        assert!(out.status.success(), "{expr}");
        String::from_utf8_lossy(&out.stdout).lines().count()
    }

    #[test]
    fn big_lists_stay_within_the_kernel_budget() {
        let v6_hosts = |base: u32, n: usize| -> Vec<String> {
            (0..n)
                .map(|i| format!("2001:{base:x}::{:x}", 2 * i + 1))
                .collect()
        };
        let ports = |base: usize, n: usize| -> Vec<String> {
            (0..n).map(|i| (base + 2 * i).to_string()).collect()
        };
        // Exactly the budget, in the most expensive terms (IPv6 hosts): all in the kernel, and
        // under the kernel's 4096 instructions.
        let f = FilterSpec {
            l4: strings(&["tcp", "udp"]),
            ip_include: v6_hosts(0xdb8, MAX_BPF_TERMS / 2),
            ip_exclude: v6_hosts(0xdb9, MAX_BPF_TERMS / 2),
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert!(f.bpf_omitted().is_empty());
        let n = pcap_instructions(&f.bpf().unwrap());
        assert!(n <= 4096, "{n} instructions");

        // Every list full: the includes fit, the excludes are left to user space.
        let f = FilterSpec {
            l4: strings(&["tcp"]),
            ip_include: v6_hosts(0xdb8, 40),
            ports_include: ports(1000, 24),
            ip_exclude: v6_hosts(0xdb9, MAX_ENTRIES),
            ports_exclude: ports(5000, MAX_ENTRIES),
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert_eq!(
            f.bpf_omitted(),
            ["filters.ip_exclude", "filters.ports_exclude"]
        );
        let e = f.bpf().unwrap();
        assert!(!e.contains("not ("), "{e}");
        assert!(pcap_instructions(&e) <= 4096);
        // ... but user space still applies them.
        let (a, b) = (ip("2001:db8::1"), ip("2001:db9::1"));
        assert!(f.packet_passes(a, ip("2001:1::1"), true, 40000, 1000));
        assert!(!f.packet_passes(a, b, true, 40000, 1000));
        assert!(!f.packet_passes(a, ip("2001:1::1"), true, 5000, 1000));

        // A later list that fits is still used when an earlier one does not.
        let f = FilterSpec {
            ip_include: v6_hosts(0xdb8, MAX_BPF_TERMS + 1),
            ports_exclude: strings(&["22"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert_eq!(f.bpf_omitted(), ["filters.ip_include"]);
        assert_eq!(
            f.bpf_without_vlan().as_deref(),
            Some("(ip or ip6) and not (port 22)")
        );
    }

    #[test]
    fn sorted_lookups_agree_with_linear_scans() {
        let f = FilterSpec {
            ip_include: strings(&[
                "10.0.0.0/8",
                "10.1.0.0/16",
                "192.168.0.0/24",
                "192.168.1.7",
                "0.0.0.0/32",
                "255.255.255.255",
                "2001:db8::/32",
                "::/128",
                "fe80::/10",
                "::ffff:0:0/96",
            ]),
            ports_include: strings(&["0", "80-90", "85-100", "443", "1000-2000", "65535"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        let addrs = [
            "0.0.0.0",
            "0.0.0.1",
            "9.255.255.255",
            "10.0.0.0",
            "10.1.2.3",
            "10.255.255.255",
            "11.0.0.0",
            "192.168.0.255",
            "192.168.1.6",
            "192.168.1.7",
            "192.168.1.8",
            "255.255.255.254",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:10.0.0.1",
            "2001:db7::",
            "2001:db8::",
            "2001:db8:ffff::1",
            "2001:db9::",
            "fe80::1",
            "febf::1",
            "fec0::",
        ];
        for a in addrs {
            let a = ip(a);
            let linear = f.ip_include.iter().any(|n| n.contains(&a));
            assert_eq!(in_sorted_nets(&f.ip_include, a), linear, "{a}");
        }
        for p in (0..=u16::MAX)
            .step_by(7)
            .chain([0, 79, 80, 90, 100, 101, 443, 2000, 65535])
        {
            let linear = f.ports_include.iter().any(|r| r.contains(p));
            assert_eq!(in_sorted_ranges(&f.ports_include, p), linear, "{p}");
        }
    }

    // ---- packet_passes, by hand and against libpcap ----

    #[test]
    fn packet_passes_table() {
        let f = full().compile().unwrap();
        let rows: &[(&str, &str, bool, u16, u16, bool)] = &[
            // src, dst, tcp, sport, dport, passes
            ("10.2.3.4", "8.8.8.8", true, 40000, 80, true),
            ("8.8.8.8", "10.2.3.4", true, 80, 40000, true), // either endpoint, either port
            ("8.8.8.8", "192.168.1.5", false, 8100, 5353, true),
            ("8.8.8.8", "192.168.1.6", true, 40000, 80, false), // no included address
            ("10.1.9.9", "8.8.8.8", true, 40000, 80, false),    // an endpoint excluded
            ("10.2.3.4", "10.1.0.1", true, 40000, 80, false),   // the other endpoint excluded
            ("10.2.3.4", "8.8.8.8", true, 40000, 443, false),   // no included port
            ("10.2.3.4", "8.8.8.8", true, 22, 80, false),       // a port excluded
            ("10.2.3.4", "8.8.8.8", false, 8000, 22, false),
            ("2001:db8::1", "2001:db8::2", true, 40000, 80, false), // IPv6 not included
        ];
        for &(s, d, tcp, sp, dp, want) in rows {
            assert_eq!(
                f.packet_passes(ip(s), ip(d), tcp, sp, dp),
                want,
                "{s}:{sp} -> {d}:{dp} tcp={tcp}"
            );
        }
        let udp_only = FilterSpec {
            l4: strings(&["udp"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        let (a, b) = (
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        );
        assert!(udp_only.packet_passes(a, a, false, 1, 2));
        assert!(!udp_only.packet_passes(a, a, true, 1, 2));
        let all = CompiledFilter::default();
        assert!(all.packet_passes(b, b, true, 0, 0));
        // 0.0.0.0/0 holds IPv4 only, like libpcap's `net 0.0.0.0/0`.
        let v4 = FilterSpec {
            ip_include: strings(&["0.0.0.0/0"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert!(v4.packet_passes(a, a, true, 1, 2));
        assert!(!v4.packet_passes(b, b, true, 1, 2));
        assert!(!v4.packet_passes(ip("::ffff:10.0.0.1"), b, true, 1, 2));
    }

    /// One test packet: endpoints, transport, ports, and whether it carries an 802.1Q tag.
    #[derive(Clone, Copy, Debug)]
    struct Pkt {
        src: IpAddr,
        dst: IpAddr,
        tcp: bool,
        sport: u16,
        dport: u16,
        vlan: bool,
        /// An IPv4 fragment at a non-zero offset (no L4 header).
        later_fragment: bool,
    }

    fn frame(p: &Pkt) -> Vec<u8> {
        let mut l4 = Vec::new();
        l4.extend_from_slice(&p.sport.to_be_bytes());
        l4.extend_from_slice(&p.dport.to_be_bytes());
        if p.tcp {
            l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
        } else {
            l4.extend_from_slice(&8u16.to_be_bytes());
            l4.extend_from_slice(&[0, 0]);
        }
        let proto = if p.tcp { 6 } else { 17 };
        let mut f = vec![2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2];
        if p.vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x00, 0x64]);
        }
        match (p.src, p.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                f.extend_from_slice(&[0x08, 0x00]);
                let len = (20 + l4.len()) as u16;
                let frag: u16 = if p.later_fragment { 185 } else { 0 };
                f.extend_from_slice(&[0x45, 0]);
                f.extend_from_slice(&len.to_be_bytes());
                f.extend_from_slice(&[0, 1]);
                f.extend_from_slice(&frag.to_be_bytes());
                f.extend_from_slice(&[64, proto, 0, 0]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                f.extend_from_slice(&[0x86, 0xdd, 0x60, 0, 0, 0]);
                f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
                f.extend_from_slice(&[proto, 64]);
                f.extend_from_slice(&s.octets());
                f.extend_from_slice(&d.octets());
            }
            _ => unreachable!("same family"),
        }
        f.extend_from_slice(&l4);
        f
    }

    /// A little-endian pcap file (Ethernet) whose packet `i` has timestamp `i + 1` seconds.
    fn pcap_file(pkts: &[Pkt]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes());
        out.extend_from_slice(&4u16.to_le_bytes());
        for v in [0u32, 0, 65535, 1] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        for (i, p) in pkts.iter().enumerate() {
            let f = frame(p);
            for v in [i as u32 + 1, 0, f.len() as u32, f.len() as u32] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&f);
        }
        out
    }

    /// Indexes of the packets of `file` that libpcap's filter `expr` passes.
    fn pcap_passes(file: &std::path::Path, expr: &str) -> Vec<usize> {
        let out = Command::new("tcpdump")
            .args(["-nn", "-q", "-tt", "-r"])
            .arg(file)
            .arg(expr)
            .output()
            .expect("tcpdump runs (apt-get install tcpdump)");
        assert!(
            out.status.success(),
            "tcpdump failed on {expr}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| {
                let secs = l.split('.').next().unwrap();
                secs.parse::<usize>()
                    .unwrap_or_else(|_| panic!("line {l:?}"))
                    - 1
            })
            .collect()
    }

    fn sample_packets() -> Vec<Pkt> {
        let v4 = ["10.1.2.3", "10.200.0.9", "192.168.1.5", "8.8.8.8"];
        let v6 = ["2001:db8::1", "2001:db8:1::5", "2001:dead::1"];
        let ports = [
            (40000, 80),
            (80, 40000),
            (22, 40001),
            (40002, 8050),
            (40003, 443),
            (53, 53),
        ];
        let mut pkts = Vec::new();
        for family in [&v4[..], &v6[..]] {
            for s in family {
                for d in family {
                    if s == d {
                        continue;
                    }
                    for tcp in [true, false] {
                        for (sport, dport) in ports {
                            for vlan in [false, true] {
                                pkts.push(Pkt {
                                    src: ip(s),
                                    dst: ip(d),
                                    tcp,
                                    sport,
                                    dport,
                                    vlan,
                                    later_fragment: false,
                                });
                            }
                        }
                    }
                }
            }
        }
        pkts
    }

    #[test]
    fn packet_passes_agrees_with_libpcap() {
        let pkts = sample_packets();
        let dir = std::env::temp_dir().join(format!("wasmtap-filter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("agreement.pcap");
        std::fs::write(&file, pcap_file(&pkts)).unwrap();
        for spec in sample_specs() {
            let f = spec.compile().unwrap();
            let want: Vec<usize> = (0..pkts.len())
                .filter(|&i| {
                    let p = &pkts[i];
                    f.packet_passes(p.src, p.dst, p.tcp, p.sport, p.dport)
                })
                .collect();
            assert!(
                !want.is_empty() && want.len() < pkts.len(),
                "{spec:?} should split the sample"
            );
            let vlan = f.bpf().unwrap();
            assert_eq!(pcap_passes(&file, &vlan), want, "{vlan}");
            // Without the VLAN branch, tagged frames are lost: the branch is needed.
            let untagged: Vec<usize> = want.iter().copied().filter(|&i| !pkts[i].vlan).collect();
            let plain = f.bpf_without_vlan().unwrap();
            assert_eq!(pcap_passes(&file, &plain), untagged, "{plain}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn port_filters_keep_later_fragments() {
        let frag = |vlan| Pkt {
            src: ip("10.1.2.3"),
            dst: ip("8.8.8.8"),
            tcp: false,
            sport: 1234,
            dport: 5678,
            vlan,
            later_fragment: true,
        };
        let outside = Pkt {
            src: ip("192.168.9.9"),
            ..frag(false)
        };
        let pkts = [frag(false), frag(true), outside];
        let dir = std::env::temp_dir().join(format!("wasmtap-frag-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("fragments.pcap");
        std::fs::write(&file, pcap_file(&pkts)).unwrap();
        let f = FilterSpec {
            ip_include: strings(&["10.0.0.0/8"]),
            ports_include: strings(&["53"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        // The fragments' bytes at the L4 offset are not ports: libpcap must not judge them by it,
        // but the address clause still applies.
        assert_eq!(pcap_passes(&file, &f.bpf().unwrap()), [0, 1]);
        // Without the fragment clause, `port` drops them: the clause is what keeps them.
        assert_eq!(
            pcap_passes(&file, "(net 10.0.0.0/8) and (port 53)"),
            [] as [usize; 0]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bpf_with_an_operator_expression() {
        let f = FilterSpec {
            ip_include: strings(&["10.0.0.0/8"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        let none = CompiledFilter::default();
        assert_eq!(none.bpf_with(DLT_EN10MB, None), None);
        assert_eq!(none.bpf_with(DLT_EN10MB, Some(" ")), None);
        assert_eq!(
            none.bpf_with(DLT_EN10MB, Some("port 80")).as_deref(),
            Some("port 80")
        );
        assert_eq!(f.bpf_with(DLT_EN10MB, None), f.bpf());
        assert_eq!(f.bpf_with(113, None), f.bpf_without_vlan());
        let with = f.bpf_with(DLT_EN10MB, Some("port 80")).unwrap();
        assert_eq!(
            with,
            "((port 80) and (net 10.0.0.0/8)) or (vlan and ((port 80) and (net 10.0.0.0/8)))"
        );
        assert_eq!(
            f.bpf_with(113, Some("port 80")).as_deref(),
            Some("(port 80) and (net 10.0.0.0/8)")
        );
        assert_eq!(
            f.bpf_with(DLT_EN10MB, Some("vlan 100 and port 80"))
                .as_deref(),
            Some("(vlan 100 and port 80) and ((net 10.0.0.0/8))")
        );

        // Against libpcap: a TCP packet to port 80 and one to port 81, untagged and tagged.
        let p = |dport, vlan| Pkt {
            src: ip("10.0.0.1"),
            dst: ip("10.0.0.2"),
            tcp: true,
            sport: 40000,
            dport,
            vlan,
            later_fragment: false,
        };
        let pkts = [p(80, false), p(80, true), p(81, false), p(81, true)];
        let dir = std::env::temp_dir().join(format!("wasmtap-extra-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("extra.pcap");
        std::fs::write(&file, pcap_file(&pkts)).unwrap();
        assert_eq!(pcap_passes(&file, &with), [0, 1]);
        // The naive AND reads `port 80` past a tag that is not there: untagged traffic is lost.
        let naive = format!("({}) and (port 80)", f.bpf().unwrap());
        assert_eq!(pcap_passes(&file, &naive), [1]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // ---- L7 ----

    #[test]
    fn l7_include_exclude_precedence() {
        let f = FilterSpec {
            l7_include: strings(&["http", "redis:GET", "MySQL:select"]),
            l7_exclude: strings(&["http:OPTIONS", "redis"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert!(f.restricts_exchanges());
        assert!(f.exchange_passes("http", "GET"));
        assert!(f.exchange_passes("HTTP", "post"));
        assert!(!f.exchange_passes("http", "OPTIONS"));
        assert!(!f.exchange_passes("http", "options"));
        assert!(!f.exchange_passes("redis", "GET")); // included, but the exclude wins
        assert!(f.exchange_passes("mysql", "SELECT"));
        assert!(f.exchange_passes("mysql", "Select"));
        assert!(!f.exchange_passes("mysql", "INSERT"));
        assert!(!f.exchange_passes("postgresql", "SELECT"));
        assert!(!f.exchange_passes("http1", "GET")); // protocols match whole, not by prefix

        let only_exclude = FilterSpec {
            l7_exclude: strings(&["redis:PING", "memcached"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert!(only_exclude.exchange_passes("redis", "GET"));
        assert!(!only_exclude.exchange_passes("redis", "ping"));
        assert!(!only_exclude.exchange_passes("memcached", "get"));
        assert!(only_exclude.exchange_passes("http", "GET"));

        let all = FilterSpec::default().compile().unwrap();
        assert!(!all.restricts_exchanges());
        assert!(all.exchange_passes("anything", ""));
    }

    // ---- interfaces ----

    #[test]
    fn interface_selection() {
        let f = FilterSpec {
            interfaces: strings(&["eth0", "^veth.*", "eth0.100", "cali[0-9a-f]+$"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert!(f.selects_interfaces());
        for yes in ["eth0", "veth1234", "eth0.100", "cali0a1b", "xcali0a1b"] {
            assert!(f.interface_matches(yes), "{yes}");
        }
        // Exact names are exact; `.` alone is not a regex; `^` anchors; `$` anchors.
        for no in [
            "eth1",
            "eth00",
            "myveth0",
            "eth0x100",
            "eth0.1000",
            "cali0a1bz",
            "lo",
        ] {
            assert!(!f.interface_matches(no), "{no}");
        }
        let unanchored = FilterSpec {
            interfaces: strings(&["veth+"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert!(unanchored.interface_matches("myveth0"));
        let any = FilterSpec {
            interfaces: strings(&["eth0", "any"]),
            ..Default::default()
        }
        .compile()
        .unwrap();
        assert!(any.interface_matches("wlan0"));
        let none = FilterSpec::default().compile().unwrap();
        assert!(!none.selects_interfaces());
        assert!(none.interface_matches("wlan0"));
    }
}
