//! ClientHello and ServerHello: the fields an operator audits, and the JA4
//! fingerprint of a ClientHello (FoxIO's JA4 specification: `t13d1516h2_
//! 8daaf6152771_e5627efa2ab1`).

use sha2::{Digest, Sha256};

/// Ran past the end of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short;

struct R<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> R<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let end = self.pos.checked_add(n).ok_or(Short)?;
        let s = self.b.get(self.pos..end).ok_or(Short)?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, Short> {
        let s = self.take(2)?;
        Ok(u16::from_be_bytes([s[0], s[1]]))
    }
    fn vec8(&mut self) -> Result<&'a [u8], Short> {
        let n = usize::from(self.u8()?);
        self.take(n)
    }
    fn vec16(&mut self) -> Result<&'a [u8], Short> {
        let n = usize::from(self.u16()?);
        self.take(n)
    }
}

/// GREASE values (RFC 8701): `0x?a?a`, ignored by fingerprints.
pub fn grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a && (v >> 8) == (v & 0xff)
}

/// What a ClientHello offers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientHello {
    /// `legacy_version`.
    pub version: u16,
    /// Highest of `supported_versions` (GREASE aside), if sent.
    pub max_supported: Option<u16>,
    /// Cipher suites, in order.
    pub ciphers: Vec<u16>,
    /// Extension types, in order.
    pub extensions: Vec<u16>,
    /// Server name (SNI).
    pub sni: Option<String>,
    /// ALPN protocols offered.
    pub alpn: Vec<String>,
    /// Signature algorithms, in order.
    pub sig_algs: Vec<u16>,
    /// A session id or ticket offered (resumption attempt).
    pub resumption: bool,
    /// The legacy session id.
    pub session_id: Vec<u8>,
    /// Supported groups (elliptic curves), in order.
    pub groups: Vec<u16>,
    /// EC point formats, in order.
    pub point_formats: Vec<u8>,
}

/// What a ServerHello chose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerHello {
    /// The negotiated version (`supported_versions` for 1.3).
    pub version: u16,
    /// The cipher suite.
    pub cipher: u16,
    /// ALPN chosen.
    pub alpn: Option<String>,
    /// Session id echoed back (resumption of a 1.2 session).
    pub session_id: Vec<u8>,
    /// A HelloRetryRequest (its random is a fixed value).
    pub retry: bool,
    /// `legacy_version` (what JA3S uses).
    pub legacy_version: u16,
    /// Extension types, in order.
    pub extensions: Vec<u16>,
}

/// The random of a HelloRetryRequest (RFC 8446 §4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xCF, 0x21, 0xAD, 0x74, 0xE5, 0x9A, 0x61, 0x11, 0xBE, 0x1D, 0x8C, 0x02, 0x1E, 0x65, 0xB8, 0x91,
    0xC2, 0xA2, 0x11, 0x16, 0x7A, 0xBB, 0x8C, 0x5E, 0x07, 0x9E, 0x09, 0xE2, 0xC8, 0xA8, 0x33, 0x9C,
];

/// Parses a ClientHello body (after the 4-byte handshake header).
pub fn client_hello(b: &[u8]) -> Result<ClientHello, Short> {
    let mut r = R { b, pos: 0 };
    let mut h = ClientHello {
        version: r.u16()?,
        ..ClientHello::default()
    };
    r.take(32)?;
    h.session_id = r.vec8()?.to_vec();
    let ciphers = r.vec16()?;
    h.ciphers = ciphers
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    r.vec8()?; // compression methods
    if r.pos == b.len() {
        return Ok(h);
    }
    let ext = r.vec16()?;
    let mut e = R { b: ext, pos: 0 };
    while e.pos < ext.len() {
        let t = e.u16()?;
        let body = e.vec16()?;
        h.extensions.push(t);
        let mut x = R { b: body, pos: 0 };
        match t {
            0 => {
                // server_name: list of (type, name).
                let list = x.vec16()?;
                let mut l = R { b: list, pos: 0 };
                while l.pos < list.len() {
                    let kind = l.u8()?;
                    let name = l.vec16()?;
                    if kind == 0 && h.sni.is_none() {
                        h.sni = Some(String::from_utf8_lossy(name).into_owned());
                    }
                }
            }
            16 => {
                let list = x.vec16()?;
                let mut l = R { b: list, pos: 0 };
                while l.pos < list.len() {
                    h.alpn.push(String::from_utf8_lossy(l.vec8()?).into_owned());
                }
            }
            13 => {
                let list = x.vec16()?;
                h.sig_algs = list
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
            }
            43 => {
                let list = x.vec8()?;
                h.max_supported = list
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .filter(|v| !grease(*v))
                    .max();
            }
            10 => {
                let list = x.vec16()?;
                h.groups = list
                    .chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect();
            }
            11 => h.point_formats = x.vec8()?.to_vec(),
            35 | 41 if !body.is_empty() => h.resumption = true,
            _ => {}
        }
    }
    Ok(h)
}

/// Parses a ServerHello body.
pub fn server_hello(b: &[u8]) -> Result<ServerHello, Short> {
    let mut r = R { b, pos: 0 };
    let mut h = ServerHello {
        version: r.u16()?,
        ..ServerHello::default()
    };
    h.legacy_version = h.version;
    h.retry = r.take(32)? == HRR_RANDOM;
    h.session_id = r.vec8()?.to_vec();
    h.cipher = r.u16()?;
    r.u8()?;
    if r.pos == b.len() {
        return Ok(h);
    }
    let ext = r.vec16()?;
    let mut e = R { b: ext, pos: 0 };
    while e.pos < ext.len() {
        let t = e.u16()?;
        let body = e.vec16()?;
        h.extensions.push(t);
        let mut x = R { b: body, pos: 0 };
        match t {
            43 => h.version = x.u16()?,
            16 => {
                let list = x.vec16()?;
                let mut l = R { b: list, pos: 0 };
                h.alpn = Some(String::from_utf8_lossy(l.vec8()?).into_owned());
            }
            _ => {}
        }
    }
    Ok(h)
}

/// A version's name (`1.2`).
pub fn version_name(v: u16) -> String {
    match v {
        0x0300 => "3.0".into(),
        0x0301 => "1.0".into(),
        0x0302 => "1.1".into(),
        0x0303 => "1.2".into(),
        0x0304 => "1.3".into(),
        v => format!("0x{v:04x}"),
    }
}

fn hash12(s: &str) -> String {
    let d = Sha256::digest(s.as_bytes());
    d.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

fn hex_list(v: &[u16]) -> String {
    v.iter()
        .map(|x| format!("{x:04x}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// The JA4 fingerprint (TCP) of a ClientHello.
pub fn ja4(h: &ClientHello) -> String {
    let version = match h.max_supported.unwrap_or(h.version) {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        _ => "00",
    };
    let sni = if h.sni.is_some() { 'd' } else { 'i' };
    let mut ciphers: Vec<u16> = h.ciphers.iter().copied().filter(|c| !grease(*c)).collect();
    let exts: Vec<u16> = h
        .extensions
        .iter()
        .copied()
        .filter(|e| !grease(*e))
        .collect();
    let alpn = match h.alpn.first().map(String::as_bytes) {
        Some([a, .., z]) if a.is_ascii_alphanumeric() && z.is_ascii_alphanumeric() => {
            format!("{}{}", *a as char, *z as char)
        }
        Some([a]) if a.is_ascii_alphanumeric() => format!("{}{}", *a as char, *a as char),
        Some(v) if !v.is_empty() => {
            let hx: String = v.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}{}", &hx[..1], &hx[hx.len() - 1..])
        }
        _ => "00".into(),
    };
    let a = format!(
        "t{version}{sni}{:02}{:02}{alpn}",
        ciphers.len().min(99),
        exts.len().min(99)
    );
    ciphers.sort_unstable();
    let b = if ciphers.is_empty() {
        "000000000000".to_string()
    } else {
        hash12(&hex_list(&ciphers))
    };
    let mut sorted: Vec<u16> = exts
        .iter()
        .copied()
        .filter(|e| *e != 0 && *e != 16)
        .collect();
    sorted.sort_unstable();
    let sigs: Vec<u16> = h.sig_algs.iter().copied().filter(|s| !grease(*s)).collect();
    let c_input = if sigs.is_empty() {
        hex_list(&sorted)
    } else {
        format!("{}_{}", hex_list(&sorted), hex_list(&sigs))
    };
    let c = if sorted.is_empty() {
        "000000000000".to_string()
    } else {
        hash12(&c_input)
    };
    format!("{a}_{b}_{c}")
}

fn dec_list<T: std::fmt::Display>(v: impl Iterator<Item = T>) -> String {
    v.map(|x| x.to_string()).collect::<Vec<_>>().join("-")
}

fn md5_hex(s: &str) -> String {
    use md5::{Digest as _, Md5};
    Md5::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The JA3 fingerprint of a ClientHello (Salesforce's JA3: MD5 of
/// `version,ciphers,extensions,groups,point formats`, GREASE removed).
pub fn ja3(h: &ClientHello) -> String {
    let s = format!(
        "{},{},{},{},{}",
        h.version,
        dec_list(h.ciphers.iter().filter(|c| !grease(**c))),
        dec_list(h.extensions.iter().filter(|c| !grease(**c))),
        dec_list(h.groups.iter().filter(|c| !grease(**c))),
        dec_list(h.point_formats.iter()),
    );
    md5_hex(&s)
}

/// The JA3S fingerprint of a ServerHello (MD5 of `version,cipher,extensions`).
pub fn ja3s(h: &ServerHello) -> String {
    let s = format!(
        "{},{},{}",
        h.legacy_version,
        h.cipher,
        dec_list(h.extensions.iter())
    );
    md5_hex(&s)
}

/// IANA names of the cipher suites in use today (and of some old ones
/// still met in audits); others are reported by number.
pub fn cipher_name(c: u16) -> String {
    let name = match c {
        0x0004 => "TLS_RSA_WITH_RC4_128_MD5",
        0x0005 => "TLS_RSA_WITH_RC4_128_SHA",
        0x000a => "TLS_RSA_WITH_3DES_EDE_CBC_SHA",
        0x002f => "TLS_RSA_WITH_AES_128_CBC_SHA",
        0x0035 => "TLS_RSA_WITH_AES_256_CBC_SHA",
        0x003c => "TLS_RSA_WITH_AES_128_CBC_SHA256",
        0x003d => "TLS_RSA_WITH_AES_256_CBC_SHA256",
        0x009c => "TLS_RSA_WITH_AES_128_GCM_SHA256",
        0x009d => "TLS_RSA_WITH_AES_256_GCM_SHA384",
        0x009e => "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256",
        0x009f => "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384",
        0x1301 => "TLS_AES_128_GCM_SHA256",
        0x1302 => "TLS_AES_256_GCM_SHA384",
        0x1303 => "TLS_CHACHA20_POLY1305_SHA256",
        0x1304 => "TLS_AES_128_CCM_SHA256",
        0x1305 => "TLS_AES_128_CCM_8_SHA256",
        0xc009 => "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
        0xc00a => "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
        0xc013 => "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
        0xc014 => "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
        0xc023 => "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256",
        0xc024 => "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384",
        0xc027 => "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256",
        0xc028 => "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384",
        0xc02b => "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        0xc02c => "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        0xc02f => "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        0xc030 => "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        0xcca8 => "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        0xcca9 => "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        0xccaa => "TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        _ => return format!("0x{c:04X}"),
    };
    name.to_string()
}

/// Alert descriptions (RFC 8446 §6).
pub fn alert_name(a: u8) -> String {
    let name = match a {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        22 => "record_overflow",
        40 => "handshake_failure",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        109 => "missing_extension",
        110 => "unsupported_extension",
        112 => "unrecognized_name",
        113 => "bad_certificate_status_response",
        115 => "unknown_psk_identity",
        116 => "certificate_required",
        120 => "no_application_protocol",
        _ => return format!("alert_{a}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grease_values() {
        assert!(grease(0x0a0a) && grease(0xfafa) && !grease(0x1301) && !grease(0x0a1a));
    }

    #[test]
    fn ja4_shape() {
        let h = ClientHello {
            version: 0x0303,
            max_supported: Some(0x0304),
            ciphers: vec![0x0a0a, 0x1301, 0x1302],
            extensions: vec![0x0a0a, 0, 16, 43, 13],
            sni: Some("a".into()),
            alpn: vec!["h2".into()],
            sig_algs: vec![0x0403],
            resumption: false,
            session_id: Vec::new(),
            groups: Vec::new(),
            point_formats: Vec::new(),
        };
        let j = ja4(&h);
        assert!(j.starts_with("t13d0204h2_"), "{j}");
        assert_eq!(j.len(), "t13d0204h2_".len() + 12 + 1 + 12);
        // Cipher order does not matter to the second part; GREASE is ignored.
        let mut h2 = h.clone();
        h2.ciphers = vec![0x1302, 0x1301];
        assert_eq!(ja4(&h2), j);
    }
}
