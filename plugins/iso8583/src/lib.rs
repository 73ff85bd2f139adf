//! ISO 8583 (card payments) decoder plugin for wasmtap.
//!
//! Framing (2-byte binary length big- or little-endian, 4 ASCII digits, an
//! optional 5-byte TPDU, an optional vendor header, zero-length
//! keep-alives) and encoding (ASCII with hexadecimal bitmaps, ASCII with
//! binary bitmaps, BCD, EBCDIC) are detected on a flow's first bytes, or set
//! in the decoder's config. The field set is ISO 8583:1987's or 1993's, by
//! each message's MTI (or config), with a tertiary bitmap (fields 129-192)
//! in field 65 and single fields overridable. Requests and responses come from the MTI; the host
//! pairs them by STAN (field 11) with terminal (41) and acquirer (32), never
//! by order. Field 39 gives the outcome in three classes: approved,
//! declined (a business answer: a success of the system) and system
//! failure (an error of the service).
//!
//! Card data never leaves: the PAN (field 2, or inside track 2) is reported
//! masked to its first 6 and last 4 digits; track data (35, 36, 45), PIN
//! blocks (52), security data (53, 96), MACs (64, 128) and chip data (55)
//! are never reported.

pub mod ebcdic;
pub mod parser;

use parser::{Encoding, Field, Framing, Msg, Parser, Profile, Version};
use wasmtap_sdk::parsed::{Convert, Parsed};
use wasmtap_sdk::{Attribute, Decoder, Descriptor, Direction, Message, Transport};

/// The ISO 8583 decoder.
pub struct Iso8583;

/// Attribute keys.
pub mod keys {
    /// Request MTI.
    pub const MTI: &str = "wasmtap.iso8583.mti";
    /// Response MTI.
    pub const RESPONSE_MTI: &str = "wasmtap.iso8583.response_mti";
    /// Processing code (field 3).
    pub const PROCESSING_CODE: &str = "wasmtap.iso8583.processing_code";
    /// Amount (field 4), as sent.
    pub const AMOUNT: &str = "wasmtap.iso8583.amount";
    /// Currency (field 49).
    pub const CURRENCY: &str = "wasmtap.iso8583.currency";
    /// STAN (field 11).
    pub const STAN: &str = "wasmtap.iso8583.stan";
    /// Response code (field 39).
    pub const RESPONSE_CODE: &str = "wasmtap.iso8583.response_code";
    /// `approved`, `declined` or `system_failure`.
    pub const OUTCOME: &str = "wasmtap.iso8583.outcome";
    /// Terminal id (field 41).
    pub const TERMINAL: &str = "wasmtap.iso8583.terminal_id";
    /// Merchant id (field 42).
    pub const MERCHANT: &str = "wasmtap.iso8583.merchant_id";
    /// Merchant category code (field 18).
    pub const MCC: &str = "wasmtap.iso8583.merchant_category";
    /// Acquirer id (field 32).
    pub const ACQUIRER: &str = "wasmtap.iso8583.acquirer_id";
    /// PAN, first 6 and last 4 digits.
    pub const PAN: &str = "wasmtap.iso8583.pan";
    /// A field the spec could not walk past (the fields after it are missing).
    pub const INCOMPLETE: &str = "wasmtap.iso8583.incomplete_at";
    /// Every key.
    pub const ALL: [&str; 14] = [
        MTI,
        RESPONSE_MTI,
        PROCESSING_CODE,
        AMOUNT,
        CURRENCY,
        STAN,
        RESPONSE_CODE,
        OUTCOME,
        TERMINAL,
        MERCHANT,
        MCC,
        ACQUIRER,
        PAN,
        INCOMPLETE,
    ];
}

/// Response codes that approve. ISO 8583:1987 (field 39, two characters):
/// `00` approved, `08` honour with identification, `10` partial approval,
/// `11` VIP approval, `16` approved to update track 3, `85` no reason to
/// decline. ISO 8583:1993 action codes (three digits): `000`-`007`
/// approved (with identification, partial, VIP, update track 3, account
/// type, partial with account type, update ICC), and the accepting answers
/// of the other message classes: `400` reversal accepted, `500` reconciled
/// in balance, `600` administrative accepted, `800` network management
/// accepted, `900`/`901` advice acknowledged.
pub const APPROVED: [&str; 20] = [
    "00", "08", "10", "11", "16", "85", "000", "001", "002", "003", "004", "005", "006", "007",
    "400", "500", "600", "800", "900", "901",
];
/// Response codes that say the system failed, not the cardholder.
/// ISO 8583:1987: `06` error, `12` invalid transaction, `20` invalid
/// response, `22` suspected malfunction, `30` format error, `68` response
/// received too late, `90` cut-off in progress, `91` issuer or switch
/// inoperative, `92` routing error, `96` system malfunction. ISO 8583:1993
/// (the 9xx "reject" action codes that are not the cardholder's or the
/// merchant's doing): `902` invalid transaction, `903` re-enter
/// transaction, `904` format error, `905` acquirer not supported by switch,
/// `906` cut-over in process, `907` issuer or switch inoperative, `908`
/// destination not found for routing, `909` system malfunction, `910`
/// issuer signed off, `911` issuer timed out, `912` issuer unavailable,
/// `915` reconciliation cut-over error, `916`-`921` MAC, key and security
/// software errors, `922` message number out of sequence, `923` request in
/// progress. Any other code is a decline.
pub const SYSTEM_FAILURE: [&str; 30] = [
    "06", "12", "20", "22", "30", "68", "90", "91", "92", "96", "902", "903", "904", "905", "906",
    "907", "908", "909", "910", "911", "912", "915", "916", "917", "918", "919", "920", "921",
    "922", "923",
];

/// The decoder's settings, from its config section (JSON).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Framing and spec by server port; `default` for the others.
    pub default: Profile,
    /// Per-port profiles.
    pub ports: Vec<(u16, Profile)>,
    /// Approval codes.
    pub approved: Vec<String>,
    /// System-failure codes.
    pub system_failure: Vec<String>,
}

fn profile_from(v: &serde_json::Value, base: &Profile) -> Profile {
    let mut p = base.clone();
    if let Some(f) = v.get("framing").and_then(|x| x.as_str()) {
        p.framing = match f {
            "bin2" => Some(Framing::Bin2),
            "bin2le" => Some(Framing::Bin2Le),
            "ascii4" => Some(Framing::Ascii4),
            _ => None,
        };
    }
    if let Some(t) = v.get("tpdu").and_then(|x| x.as_bool()) {
        p.tpdu = Some(t);
    }
    if let Some(h) = v.get("header_len").and_then(|x| x.as_u64()) {
        p.header_len = usize::try_from(h).unwrap_or(0).min(64);
    }
    if let Some(e) = v.get("encoding").and_then(|x| x.as_str()) {
        p.encoding = match e {
            "ascii" => Some(Encoding::Ascii),
            "binary" => Some(Encoding::Binary),
            "bcd" => Some(Encoding::Bcd),
            "ebcdic" | "ebcdic037" => Some(Encoding::Ebcdic),
            "ebcdic500" => Some(Encoding::Ebcdic500),
            _ => None,
        };
    }
    if let Some(v) = v.get("spec").and_then(|x| x.as_str()) {
        p.version = match v {
            "1987" => Some(Version::V1987),
            "1993" => Some(Version::V1993),
            _ => None,
        };
    }
    if let Some(t) = v.get("tertiary_bitmap").and_then(|x| x.as_bool()) {
        p.tertiary = t;
    }
    // Single fields of the bundled specs (both editions) overridden:
    // {"48": {"len": "lllvar", "max": 999, "class": "text"}}.
    if let Some(fields) = v.get("fields").and_then(|x| x.as_object()) {
        for (k, f) in fields {
            let Ok(n) = k.parse::<usize>() else { continue };
            if !(2..=192).contains(&n) || n == 65 && p.tertiary {
                continue;
            }
            let len_digits = match f.get("len").and_then(|x| x.as_str()) {
                Some("llvar") => 2,
                Some("lllvar") => 3,
                _ => 0,
            };
            let class = match f.get("class").and_then(|x| x.as_str()) {
                Some("numeric") => parser::Class::Numeric,
                Some("binary") => parser::Class::Binary,
                _ => parser::Class::Text,
            };
            let max = f
                .get("max")
                .and_then(|x| x.as_u64())
                .and_then(|m| u16::try_from(m).ok())
                .unwrap_or(999);
            let def = Some(Field {
                len_digits,
                max,
                class,
            });
            p.fields[n] = def;
            p.fields93[n] = def;
        }
    }
    p
}

/// Reads the settings from the config JSON (unknown or bad values keep the defaults).
pub fn settings(config: &str) -> Settings {
    let v: serde_json::Value = serde_json::from_str(config).unwrap_or(serde_json::Value::Null);
    let default = profile_from(&v, &Profile::default());
    let ports = v
        .get("ports")
        .and_then(|x| x.as_object())
        .map(|m| {
            m.iter()
                .filter_map(|(k, pv)| Some((k.parse::<u16>().ok()?, profile_from(pv, &default))))
                .collect()
        })
        .unwrap_or_default();
    let list = |key: &str, d: &[&str]| -> Vec<String> {
        v.get(key)
            .and_then(|x| x.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_else(|| d.iter().map(|s| s.to_string()).collect())
    };
    Settings {
        default,
        ports,
        approved: list("approved", &APPROVED),
        system_failure: list("system_failure", &SYSTEM_FAILURE),
    }
}

impl Decoder for Iso8583 {
    type Session = Iso8583Session;

    fn describe() -> Descriptor {
        Descriptor::new("iso8583", env!("CARGO_PKG_VERSION"))
            .protocol("iso8583")
            .transport(Transport::Tcp)
            .port(8583)
            .attribute_keys(&keys::ALL)
    }

    fn probe(transport: Transport, _dir: Direction, data: &[u8]) -> u8 {
        if transport != Transport::Tcp {
            return 0;
        }
        parser::probe(data)
    }

    fn new_session(_transport: Transport, server_port: u16) -> Iso8583Session {
        let s = settings(&wasmtap_sdk::config());
        let profile = s
            .ports
            .iter()
            .find(|(p, _)| *p == server_port)
            .map_or_else(|| s.default.clone(), |(_, p)| p.clone());
        Parsed::new(
            Parser::new(profile),
            ToHost {
                approved: s.approved,
                system_failure: s.system_failure,
            },
        )
    }
}

/// Per-flow state: the parser, its messages converted by [`ToHost`].
pub type Iso8583Session = Parsed<ToHost>;

/// Parsed messages to the host's, with the outcome lists of the config.
pub struct ToHost {
    approved: Vec<String>,
    system_failure: Vec<String>,
}

wasmtap_sdk::parser_types!(parser::Dir, parser::ParseError);

impl Convert for ToHost {
    type Parser = Parser;

    fn message(&mut self, m: Msg, timestamp_ns: u64) -> Message {
        self.to_message(&m, timestamp_ns)
    }
}

/// The operation: the request MTI and what it does (`0200 purchase`).
/// `network_code` names network management: field 70 in ISO 8583:1987
/// (`001` sign-on, `301` echo...), the function code (field 24) in 1993
/// (`801` sign-on, `831` echo...).
pub fn operation(mti: &str, processing_code: Option<&str>, network_code: Option<&str>) -> String {
    let d = mti.as_bytes();
    let (class, function) = (d.get(1).copied(), d.get(2).copied());
    let advice = matches!(function, Some(b'2' | b'3'));
    let tx = processing_code.and_then(|p| p.get(..2));
    let name = match class {
        Some(b'1') if advice => Some("authorization-advice"),
        Some(b'1') => Some("authorization"),
        Some(b'2') => {
            let t = match tx {
                Some("00") => Some("purchase"),
                Some("01") => Some("cash-withdrawal"),
                Some("09") => Some("purchase-cashback"),
                Some("20") => Some("refund"),
                Some("21") => Some("deposit"),
                Some("30" | "31") => Some("balance-inquiry"),
                Some("40") => Some("transfer"),
                _ => None,
            };
            match (t, advice) {
                (Some(t), false) => Some(t),
                (_, true) => Some("financial-advice"),
                (None, false) => Some("financial"),
            }
        }
        Some(b'3') => Some("file-action"),
        Some(b'4') if advice => Some("reversal-advice"),
        Some(b'4') => Some("reversal"),
        Some(b'5') => Some("reconciliation"),
        Some(b'6') => Some("administrative"),
        Some(b'8') => Some(match network_code {
            Some("001" | "801") => "sign-on",
            Some("002" | "802") => "sign-off",
            Some("301" | "831") => "echo",
            Some("101" | "161" | "162" | "163" | "811") => "key-change",
            Some("201" | "821") => "cutover",
            _ => "network-management",
        }),
        _ => None,
    };
    match name {
        Some(n) => format!("{mti} {n}"),
        None => mti.to_string(),
    }
}

/// The correlation key: STAN with terminal and acquirer when present.
pub fn correlation(m: &Msg) -> Option<u64> {
    let stan = m.get(11)?;
    // FNV-1a over the three, separated.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [stan, m.get(41).unwrap_or(""), m.get(32).unwrap_or("")] {
        for b in part.trim().bytes().chain([0xff]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    Some(h)
}

impl ToHost {
    fn to_message(&self, m: &Msg, ts: u64) -> Message {
        let key = correlation(m);
        let mut msg = if m.is_response() {
            let code = m.get(39).unwrap_or("").trim().to_string();
            let outcome = if code.is_empty() {
                None
            } else if self.approved.contains(&code) {
                Some("approved")
            } else if self.system_failure.contains(&code) {
                Some("system_failure")
            } else {
                Some("declined")
            };
            let base = Message::response(ts, ts, m.size);
            let mut r = if outcome == Some("system_failure") {
                base.error(&code)
            } else {
                base.ok(&code)
            }
            .attribute(Attribute::str(keys::RESPONSE_MTI, m.mti.clone()));
            if !code.is_empty() {
                r = r.attribute(Attribute::str(keys::RESPONSE_CODE, code.clone()));
            }
            if let Some(o) = outcome {
                r = r.attribute(Attribute::str(keys::OUTCOME, o));
            }
            r
        } else {
            let netcode = if m.mti.starts_with('1') {
                m.get(24)
            } else {
                m.get(70)
            };
            let op = operation(&m.mti, m.get(3), netcode);
            let mut r = Message::request(ts, ts, m.size, &op)
                .attribute(Attribute::str(keys::MTI, m.mti.clone()));
            for (n, k) in [
                (3u8, keys::PROCESSING_CODE),
                (4, keys::AMOUNT),
                (49, keys::CURRENCY),
                (41, keys::TERMINAL),
                (42, keys::MERCHANT),
                (18, keys::MCC),
                (32, keys::ACQUIRER),
            ] {
                if let Some(v) = m.get(n) {
                    r = r.attribute(Attribute::str(k, v.trim()));
                }
            }
            let pan = m.get(2).or_else(|| m.get(35).and_then(parser::track2_pan));
            if let Some(p) = pan {
                r = r.attribute(Attribute::str(keys::PAN, parser::mask_pan(p)));
            }
            r
        };
        if let Some(s) = m.get(11) {
            msg = msg.attribute(Attribute::str(keys::STAN, s));
        }
        if let Some(n) = m.incomplete {
            msg = msg.attribute(Attribute::int(keys::INCOMPLETE, i64::from(n)));
        }
        match key {
            Some(k) => msg.correlate(k),
            None => msg,
        }
    }
}

wasmtap_sdk::export_decoder!(Iso8583);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_of_both_editions() {
        assert_eq!(
            operation("0200", Some("010000"), None),
            "0200 cash-withdrawal"
        );
        assert_eq!(operation("1200", Some("000000"), None), "1200 purchase");
        assert_eq!(operation("0800", None, Some("301")), "0800 echo");
        assert_eq!(operation("1804", None, Some("831")), "1804 echo");
        assert_eq!(operation("1804", None, Some("801")), "1804 sign-on");
        assert_eq!(operation("1420", None, None), "1420 reversal-advice");
        assert_eq!(operation("0999", None, None), "0999");
    }

    #[test]
    fn settings_name_spec_encoding_and_overrides() {
        let s = settings(
            r#"{"ports": {"9000": {"spec": "1993", "encoding": "ebcdic500",
                "tertiary_bitmap": false, "fields": {"48": {"len": "llvar", "max": 40}}}}}"#,
        );
        let (port, p) = &s.ports[0];
        assert_eq!(*port, 9000);
        assert_eq!(p.version, Some(Version::V1993));
        assert_eq!(p.encoding, Some(Encoding::Ebcdic500));
        assert!(!p.tertiary);
        let f48 = p.fields93[48].unwrap();
        assert_eq!((f48.len_digits, f48.max), (2, 40));
        assert_eq!(p.fields[48], p.fields93[48]);
        assert!(s.default.tertiary && s.default.version.is_none());
        // 1993 action codes sort into the same three classes.
        assert!(s.approved.iter().any(|c| c == "000"));
        assert!(s.system_failure.iter().any(|c| c == "909"));
        assert!(!s.system_failure.iter().any(|c| c == "116"));
    }
}
