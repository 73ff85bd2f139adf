//! Unit tests: messages built here in each encoding and framing, run through
//! the SDK's simulated host (whole, byte by byte, random splits).

use super::*;
use wasmtap_sdk::testing::{self, Event};

type Ev<'a> = Event<'a, Dir>;
use Dir::{ToClient as C, ToServer as S};

fn pack_bcd(digits: &str) -> Vec<u8> {
    let d = if digits.len() % 2 == 1 {
        format!("0{digits}")
    } else {
        digits.to_string()
    };
    d.as_bytes()
        .chunks(2)
        .map(|c| ((c[0] - b'0') << 4) | (c[1] - b'0'))
        .collect()
}

/// ASCII text to EBCDIC code page 037 (inverse of the decoder's table).
fn to_ebcdic(v: &[u8]) -> Vec<u8> {
    v.iter()
        .map(|&c| {
            let i = ebcdic::CP037.iter().position(|&a| a == c && c != b'?');
            u8::try_from(i.expect("EBCDIC has it")).unwrap()
        })
        .collect()
}

/// Encodes a message: `fields` as (number, value) with values as text
/// (binary fields as raw bytes in a string of chars < 256).
fn encode(mti: &str, fields: &[(u8, &[u8])], enc: Encoding) -> Vec<u8> {
    encode_with(mti, fields, enc, &ISO_1987)
}

/// [`encode`] under a field specification; fields above 128 go behind a
/// tertiary bitmap written in field 65's place.
fn encode_with(mti: &str, fields: &[(u8, &[u8])], enc: Encoding, spec: &Fields) -> Vec<u8> {
    let ebcdic = matches!(enc, Encoding::Ebcdic | Encoding::Ebcdic500);
    let text = |v: &[u8]| if ebcdic { to_ebcdic(v) } else { v.to_vec() };
    let mut bitmap = [0u64; 3];
    for (n, _) in fields {
        let n = usize::from(*n);
        bitmap[(n - 1) / 64] |= 1 << (63 - (n - 1) % 64);
    }
    if bitmap[2] != 0 {
        bitmap[1] |= 1 << 63;
    }
    if bitmap[1] != 0 {
        bitmap[0] |= 1 << 63;
    }
    let mut out = match enc {
        Encoding::Bcd => pack_bcd(mti),
        _ => text(mti.as_bytes()),
    };
    let write_bitmap = |out: &mut Vec<u8>, w: u64| match enc {
        Encoding::Ascii => out.extend_from_slice(format!("{w:016X}").as_bytes()),
        _ => out.extend_from_slice(&w.to_be_bytes()),
    };
    write_bitmap(&mut out, bitmap[0]);
    if bitmap[1] != 0 {
        write_bitmap(&mut out, bitmap[1]);
    }
    let mut sorted = fields.to_vec();
    if bitmap[2] != 0 {
        sorted.push((65, b""));
    }
    sorted.sort_by_key(|(n, _)| *n);
    for (n, v) in sorted {
        if n == 65 && bitmap[2] != 0 {
            write_bitmap(&mut out, bitmap[2]);
            continue;
        }
        let spec = spec[usize::from(n)].unwrap();
        let body: Vec<u8> = match (spec.class, enc) {
            (Class::Binary, Encoding::Ascii) => v
                .iter()
                .flat_map(|b| format!("{b:02X}").into_bytes())
                .collect(),
            (Class::Binary, _) => v.to_vec(),
            (Class::Numeric, Encoding::Bcd) => pack_bcd(std::str::from_utf8(v).unwrap()),
            _ => text(v),
        };
        let units = match (spec.class, enc) {
            (Class::Binary, Encoding::Ascii) => body.len(),
            _ => v.len(),
        };
        match (spec.len_digits, enc) {
            (0, _) => {}
            (d, Encoding::Bcd) => {
                let s = format!("{units:0w$}", w = usize::from(d) + usize::from(d) % 2);
                out.extend(pack_bcd(&s));
            }
            (d, _) => out.extend(text(format!("{units:0w$}", w = usize::from(d)).as_bytes())),
        }
        out.extend(body);
    }
    out
}

fn frame(framing: Framing, tpdu: bool, msg: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    if tpdu {
        body.extend_from_slice(&[0x60, 0x00, 0x01, 0x00, 0x02]);
    }
    body.extend_from_slice(msg);
    let mut out = match framing {
        Framing::Bin2 => (body.len() as u16).to_be_bytes().to_vec(),
        Framing::Bin2Le => (body.len() as u16).to_le_bytes().to_vec(),
        Framing::Ascii4 => format!("{:04}", body.len()).into_bytes(),
    };
    out.extend(body);
    out
}

fn request(stan: &str, enc: Encoding) -> Vec<u8> {
    encode(
        "0200",
        &[
            (2, b"4761340000000019"),
            (3, b"010000"),
            (4, b"000000012345"),
            (11, stan.as_bytes()),
            (18, b"5411"),
            (32, b"123456"),
            (35, b"4761340000000019=25122010000000000000"),
            (41, b"TERM0001"),
            (42, b"MERCHANT0000001"),
            (49, b"978"),
            (52, &[0xde, 0xad, 0xbe, 0xef, 0, 1, 2, 3]),
        ],
        enc,
    )
}

fn response(stan: &str, code: &str, enc: Encoding) -> Vec<u8> {
    encode(
        "0210",
        &[
            (3, b"010000"),
            (4, b"000000012345"),
            (11, stan.as_bytes()),
            (32, b"123456"),
            (39, code.as_bytes()),
            (41, b"TERM0001"),
        ],
        enc,
    )
}

#[test]
fn every_framing_and_encoding_is_detected_and_decoded() {
    for framing in [Framing::Bin2, Framing::Bin2Le, Framing::Ascii4] {
        for tpdu in [false, true] {
            for enc in [
                Encoding::Ascii,
                Encoding::Binary,
                Encoding::Bcd,
                Encoding::Ebcdic,
            ] {
                let reqs = [
                    frame(framing, tpdu, &request("000001", enc)),
                    frame(framing, tpdu, &request("000002", enc)),
                ];
                let resps = [
                    frame(framing, tpdu, &response("000002", "51", enc)),
                    frame(framing, tpdu, &response("000001", "00", enc)),
                ];
                let what = format!("{framing:?} tpdu={tpdu} {enc:?}");
                let keepalive = match framing {
                    Framing::Ascii4 => b"0000".to_vec(),
                    _ => vec![0, 0],
                };
                let o = testing::check(
                    || Parser::new(Profile::default()),
                    &[
                        Ev::Data(S, &reqs.concat()),
                        Ev::Data(C, &[resps[0].clone(), keepalive, resps[1].clone()].concat()),
                        Ev::Close,
                    ],
                    MAX_FRAME,
                );
                assert_eq!(o.error, None, "{what}");
                let m = &o.messages;
                assert_eq!(m.len(), 4, "{what}: {m:?}");
                assert_eq!(m[0].mti, "0200", "{what}");
                assert_eq!(m[0].get(2), Some("4761340000000019"), "{what}");
                assert_eq!(m[0].get(3), Some("010000"), "{what}");
                assert_eq!(m[0].get(4), Some("000000012345"), "{what}");
                assert_eq!(m[0].get(11), Some("000001"), "{what}");
                assert_eq!(m[0].get(41), Some("TERM0001"), "{what}");
                assert_eq!(m[0].get(49), Some("978"), "{what}");
                assert!(m[0].get(52).is_none(), "PIN blocks are never kept");
                assert_eq!(m[0].incomplete, None, "{what}");
                assert!(!m[0].is_response() && m[2].is_response());
                assert_eq!(m[2].get(39), Some("51"), "{what}");
                assert_eq!(m[3].get(11), Some("000001"), "{what}");
            }
        }
    }
}

#[test]
fn a_gap_resynchronises_on_the_next_frame() {
    let a = frame(Framing::Bin2, false, &request("000001", Encoding::Ascii));
    let b = frame(Framing::Bin2, false, &request("000002", Encoding::Ascii));
    let o = testing::check(
        || Parser::new(Profile::default()),
        &[
            Ev::Data(S, &a),
            Ev::Gap(S, 7),
            Ev::Data(S, &[&a[20..], &b[..]].concat()),
        ],
        MAX_FRAME,
    );
    assert_eq!(o.error, None);
    let stans: Vec<_> = o.messages.iter().map(|m| m.get(11).unwrap_or("")).collect();
    assert_eq!(stans, ["000001", "000002"]);
}

#[test]
fn an_unknown_private_field_stops_the_walk_not_the_stream() {
    let mut p = Profile::default();
    p.fields[48] = None;
    let msg = encode(
        "0100",
        &[(11, b"000009"), (48, b"xyz"), (49, b"978")],
        Encoding::Ascii,
    );
    let o = testing::check(
        || Parser::new(p.clone()),
        &[Ev::Data(S, &frame(Framing::Bin2, false, &msg))],
        MAX_FRAME,
    );
    assert_eq!(o.messages[0].get(11), Some("000009"));
    assert_eq!(o.messages[0].incomplete, Some(48));
    assert_eq!(o.messages[0].get(49), None);
}

#[test]
fn other_protocols_are_refused() {
    assert_eq!(probe(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    assert_eq!(
        probe(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03abcdefghijklmnop"),
        0
    );
    let m = frame(Framing::Bin2, false, &request("000001", Encoding::Binary));
    assert_eq!(probe(&m), 80);
    let mut p = Parser::new(Profile::default());
    let mut out = Vec::new();
    assert!(
        p.feed(S, 0, b"SSH-2.0-OpenSSH_9.6\r\n and more bytes", &mut out)
            .is_err()
    );
}

#[test]
fn pans_are_masked() {
    assert_eq!(mask_pan("4761340000000019"), "476134******0019");
    assert_eq!(mask_pan("5413330089010012345"), "541333*********2345");
    assert_eq!(mask_pan("12345678"), "****5678");
    assert_eq!(
        track2_pan("4761340000000019=25122010000000000000"),
        Some("4761340000000019")
    );
    assert_eq!(
        track2_pan(";4761340000000019D2512"),
        Some("4761340000000019")
    );
    assert_eq!(track2_pan("garbage"), None);
}

#[test]
fn ebcdic_text_is_read_in_either_code_page() {
    let msg = request("000042", Encoding::Ebcdic);
    for (enc, name) in [(Encoding::Ebcdic, "ebcdic"), (Encoding::Ebcdic500, "500")] {
        let p = Profile {
            encoding: Some(enc),
            ..Profile::default()
        };
        let (m, walked) = parse_message(&msg, &p, S, 0).unwrap();
        assert_eq!(walked, msg.len(), "{name}");
        assert_eq!(m.mti, "0200", "{name}");
        assert_eq!(m.get(41), Some("TERM0001"), "{name}");
        assert_eq!(m.get(42), Some("MERCHANT0000001"), "{name}");
        assert_eq!(
            m.get(35),
            Some("4761340000000019=25122010000000000000"),
            "{name}"
        );
    }
    // Detected without configuration: the MTI's EBCDIC digits tell.
    let (m, _) = parse_message(&msg, &Profile::default(), S, 0).unwrap();
    assert_eq!(m.get(11), Some("000042"));
}

#[test]
fn iso_1993_messages_use_the_1993_field_set() {
    let req = encode_with(
        "1200",
        &[
            (2, b"4761340000000019"),
            (3, b"000000"),
            (4, b"000000001000"),
            (11, b"000777"),
            (12, b"261205101112"),
            (22, b"A1B2C3D4E5F6"),
            (24, b"200"),
            (41, b"TERM0001"),
            (56, b"0200000001261205101112"),
        ],
        Encoding::Binary,
        &ISO_1993,
    );
    let rsp = encode_with(
        "1210",
        &[(11, b"000777"), (39, b"116"), (41, b"TERM0001")],
        Encoding::Binary,
        &ISO_1993,
    );
    let o = testing::check(
        || Parser::new(Profile::default()),
        &[
            Ev::Data(S, &frame(Framing::Bin2, false, &req)),
            Ev::Data(C, &frame(Framing::Bin2, false, &rsp)),
        ],
        MAX_FRAME,
    );
    assert_eq!(o.error, None);
    let m = &o.messages;
    assert_eq!(m.len(), 2, "{m:?}");
    assert_eq!(m[0].incomplete, None, "{:?}", m[0]);
    assert_eq!(m[0].get(12), Some("261205101112"));
    assert_eq!(m[0].get(22), Some("A1B2C3D4E5F6"));
    assert_eq!(m[0].get(41), Some("TERM0001"));
    assert_eq!(m[1].get(39), Some("116"));
    // The same bytes under the 1987 set (forced) do not walk: field 12 is n6 there.
    let p87 = Profile {
        version: Some(Version::V1987),
        ..Profile::default()
    };
    let (m87, walked) = parse_message(&req, &p87, S, 0).unwrap();
    assert!(m87.incomplete.is_some() || walked != req.len() || m87.get(41) != Some("TERM0001"));
}

#[test]
fn a_tertiary_bitmap_announces_fields_129_to_192() {
    for enc in [Encoding::Ascii, Encoding::Binary, Encoding::Ebcdic] {
        let msg = encode(
            "0100",
            &[
                (11, b"000123"),
                (41, b"TERM0009"),
                (70, b"301"),
                (130, b"private tertiary data"),
                (191, b"z"),
            ],
            enc,
        );
        let (m, walked) = parse_message(&msg, &Profile::default(), S, 0).unwrap();
        assert_eq!(walked, msg.len(), "{enc:?}");
        assert_eq!(m.incomplete, None, "{enc:?}");
        assert_eq!(m.get(70), Some("301"), "{enc:?}");
        assert_eq!(m.get(130), Some("private tertiary data"), "{enc:?}");
        assert_eq!(m.get(191), Some("z"), "{enc:?}");
        assert_eq!(m.get(11), Some("000123"), "{enc:?}");
        // Turned off: field 65 is an 8-byte field and 130 is never read.
        let p = Profile {
            tertiary: false,
            ..Profile::default()
        };
        let (m, walked) = parse_message(&msg, &p, S, 0).unwrap();
        assert_eq!(m.get(70), Some("301"), "{enc:?}");
        assert_eq!(m.get(130), None, "{enc:?}");
        assert!(walked < msg.len(), "{enc:?}");
    }
}
