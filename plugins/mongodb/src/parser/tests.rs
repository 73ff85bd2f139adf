//! Unit tests for the MongoDB parser. Every scenario is also replayed with
//! byte-by-byte and random split points through a simulated host that keeps
//! the unconsumed remainder, and must give identical results.

use super::*;
use wasmtap_sdk::testing::{self, Event, Rng};

/// One host call (the SDK's simulated host: `wasmtap_sdk::testing`).
type Ev<'a> = Event<'a, Dir>;
use Dir::{ToClient as C, ToServer as S};

/// Most bytes the simulated host may be asked to keep.
const MAX_KEPT: usize = 4096;

/// One run of the simulated host with pieces chosen by `piece`; errors are bugs here.
fn host(events: &[Ev<'_>], piece: &mut dyn FnMut(usize) -> usize) -> Vec<Msg> {
    let o = testing::run(&mut Parser::new(), events, MAX_KEPT, piece);
    assert_eq!(o.error, None, "messages so far: {:?}", o.messages);
    o.messages
}

fn check(events: &[Ev<'_>]) -> Vec<Msg> {
    let o = testing::check(Parser::new, events, MAX_KEPT);
    assert_eq!(o.error, None, "messages so far: {:?}", o.messages);
    o.messages
}

/// BSON values for building test documents.
enum B<'a> {
    Str(&'a str),
    I32(i32),
    F64(f64),
    Bool(bool),
    Doc(Vec<u8>),
    Arr(Vec<u8>),
    Bin(Vec<u8>),
    Regex(&'a str, &'a str),
}

fn doc(elems: &[(&str, B<'_>)]) -> Vec<u8> {
    let mut body = Vec::new();
    for (k, v) in elems {
        let t: u8 = match v {
            B::Str(_) => 2,
            B::I32(_) => 0x10,
            B::F64(_) => 1,
            B::Bool(_) => 8,
            B::Doc(_) => 3,
            B::Arr(_) => 4,
            B::Bin(_) => 5,
            B::Regex(..) => 11,
        };
        body.push(t);
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        match v {
            B::Str(s) => {
                body.extend_from_slice(&(s.len() as i32 + 1).to_le_bytes());
                body.extend_from_slice(s.as_bytes());
                body.push(0);
            }
            B::I32(i) => body.extend_from_slice(&i.to_le_bytes()),
            B::F64(f) => body.extend_from_slice(&f.to_le_bytes()),
            B::Bool(b) => body.push(u8::from(*b)),
            B::Doc(d) | B::Arr(d) => body.extend_from_slice(d),
            B::Bin(d) => {
                body.extend_from_slice(&(d.len() as i32).to_le_bytes());
                body.push(0);
                body.extend_from_slice(d);
            }
            B::Regex(a, b) => {
                body.extend_from_slice(a.as_bytes());
                body.push(0);
                body.extend_from_slice(b.as_bytes());
                body.push(0);
            }
        }
    }
    let mut d = ((body.len() + 5) as i32).to_le_bytes().to_vec();
    d.extend(body);
    d.push(0);
    d
}

fn header(id: i32, to: i32, op: i32, body: &[u8]) -> Vec<u8> {
    let mut v = ((body.len() + 16) as i32).to_le_bytes().to_vec();
    v.extend_from_slice(&id.to_le_bytes());
    v.extend_from_slice(&to.to_le_bytes());
    v.extend_from_slice(&op.to_le_bytes());
    v.extend_from_slice(body);
    v
}

fn op_msg(id: i32, to: i32, flags: u32, sections: &[u8]) -> Vec<u8> {
    let mut body = flags.to_le_bytes().to_vec();
    body.extend_from_slice(sections);
    if flags & 1 != 0 {
        body.extend_from_slice(&[1, 2, 3, 4]); // checksum
    }
    header(id, to, 2013, &body)
}

fn kind0(d: &[u8]) -> Vec<u8> {
    let mut v = vec![0];
    v.extend_from_slice(d);
    v
}

fn kind1(ident: &str, docs: &[Vec<u8>]) -> Vec<u8> {
    let mut payload = ident.as_bytes().to_vec();
    payload.push(0);
    for d in docs {
        payload.extend_from_slice(d);
    }
    let mut v = vec![1];
    v.extend_from_slice(&((payload.len() + 4) as i32).to_le_bytes());
    v.extend(payload);
    v
}

fn view(ms: &[Msg]) -> Vec<String> {
    ms.iter()
        .map(|m| match m.kind {
            Kind::Request => format!(
                "{}#{} {}.{}",
                m.command,
                m.correlation,
                m.database.as_deref().unwrap_or("-"),
                m.collection.as_deref().unwrap_or("-")
            ),
            Kind::OneWay => format!("~{}#{}", m.command, m.correlation),
            Kind::Response if m.is_error() => format!(
                "!#{} {} {}",
                m.correlation,
                m.code.unwrap_or(0),
                m.code_name.as_deref().unwrap_or("-")
            ),
            Kind::Response => format!("=#{}", m.correlation),
        })
        .collect()
}

#[test]
fn op_msg_find_and_error_reply() {
    let find = op_msg(
        40,
        0,
        0,
        &kind0(&doc(&[
            ("find", B::Str("users")),
            ("filter", B::Doc(doc(&[("n", B::I32(1))]))),
            ("$db", B::Str("sky")),
        ])),
    );
    let status = op_msg(
        41,
        0,
        1,
        &kind0(&doc(&[
            ("replSetGetStatus", B::F64(1.0)),
            ("$db", B::Str("admin")),
        ])),
    );
    let reply = op_msg(
        500,
        40,
        0,
        &kind0(&doc(&[
            ("cursor", B::Doc(doc(&[("firstBatch", B::Arr(doc(&[])))]))),
            ("ok", B::F64(1.0)),
        ])),
    );
    let err = op_msg(
        501,
        41,
        1,
        &kind0(&doc(&[
            ("ok", B::F64(0.0)),
            ("errmsg", B::Str("not running with --replSet")),
            ("code", B::I32(76)),
            ("codeName", B::Str("NoReplicationEnabled")),
        ])),
    );
    let ms = check(&[
        Ev::Data(S, &[find.clone(), status].concat()),
        Ev::Data(C, &[reply.clone(), err].concat()),
    ]);
    assert_eq!(
        view(&ms),
        [
            "find#40 sky.users",
            "replSetGetStatus#41 admin.-",
            "=#40",
            "!#41 76 NoReplicationEnabled"
        ]
    );
    assert_eq!(ms[0].size, find.len() as u64);
    assert_eq!(ms[2].ok, Some(true));
}

#[test]
fn document_sequence_before_body_and_one_way() {
    let docs = vec![doc(&[("a", B::I32(1))]), doc(&[("b", B::Regex("x", "i"))])];
    let mut sections = kind1("documents", &docs);
    sections.extend(kind0(&doc(&[
        ("insert", B::Str("c")),
        ("$db", B::Str("d")),
    ])));
    let insert = op_msg(7, 0, 0, &sections);
    let fire = op_msg(
        8,
        0,
        2,
        &kind0(&doc(&[("insert", B::Str("c")), ("$db", B::Str("d"))])),
    );
    let reply = op_msg(
        9,
        7,
        0,
        &kind0(&doc(&[("n", B::I32(2)), ("ok", B::I32(1))])),
    );
    let ms = check(&[Ev::Data(S, &[insert, fire].concat()), Ev::Data(C, &reply)]);
    assert_eq!(view(&ms), ["insert#7 d.c", "~insert#8", "=#7"]);
}

#[test]
fn legacy_query_and_reply() {
    let mut q = 0i32.to_le_bytes().to_vec();
    q.extend_from_slice(b"admin.$cmd\0");
    q.extend_from_slice(&0i32.to_le_bytes());
    q.extend_from_slice(&(-1i32).to_le_bytes());
    q.extend(doc(&[
        ("isMaster", B::I32(1)),
        ("client", B::Doc(doc(&[("driver", B::Str("x"))]))),
        ("saslSupportedMechs", B::Str("admin.user")),
    ]));
    let query = header(0, 0, 2004, &q);
    let mut q2 = 0i32.to_le_bytes().to_vec();
    q2.extend_from_slice(b"shop.orders\0");
    q2.extend_from_slice(&[0; 8]);
    q2.extend(doc(&[("status", B::Str("A"))]));
    let query2 = header(1, 0, 2004, &q2);
    let mut r = 0i32.to_le_bytes().to_vec();
    r.extend_from_slice(&0i64.to_le_bytes());
    r.extend_from_slice(&0i32.to_le_bytes());
    r.extend_from_slice(&1i32.to_le_bytes());
    r.extend(doc(&[("ismaster", B::Bool(true)), ("ok", B::F64(1.0))]));
    let reply = header(60, 0, 1, &r);
    let mut f = 2i32.to_le_bytes().to_vec(); // QueryFailure
    f.extend_from_slice(&[0; 12]);
    f.extend_from_slice(&1i32.to_le_bytes());
    f.extend(doc(&[("$err", B::Str("bad")), ("code", B::I32(2))]));
    let failure = header(61, 1, 1, &f);
    let ms = check(&[
        Ev::Data(S, &[query, query2].concat()),
        Ev::Data(C, &[reply, failure].concat()),
    ]);
    assert_eq!(
        view(&ms),
        ["isMaster#0 admin.-", "find#1 shop.orders", "=#0", "!#1 2 -"]
    );
    assert_eq!(ms[2].returned, Some(1));
    assert_eq!(ms[0].opcode, 2004);
}

#[test]
fn legacy_writes_are_one_way_and_compressed_is_opaque() {
    let mut ins = 0i32.to_le_bytes().to_vec();
    ins.extend_from_slice(b"db.c\0");
    ins.extend(doc(&[("a", B::I32(1))]));
    let insert = header(3, 0, 2002, &ins);
    let mut comp = 2013i32.to_le_bytes().to_vec();
    comp.extend_from_slice(&100i32.to_le_bytes());
    comp.push(1);
    comp.extend_from_slice(&[0xAA; 30]);
    let compressed = header(4, 0, 2012, &comp);
    let compressed_reply = header(70, 4, 2012, &comp);
    let ms = check(&[
        Ev::Data(S, &[insert, compressed].concat()),
        Ev::Data(C, &compressed_reply),
    ]);
    assert_eq!(view(&ms), ["~insert#3", "#4 -.-", "=#4"]);
    assert!(ms[1].compressed);
}

#[test]
fn large_reply_streams_and_out_of_order_replies_pair_by_key() {
    let big = vec![0x55u8; 300_000];
    let reply = op_msg(
        80,
        11,
        0,
        &kind0(&doc(&[
            ("cursor", B::Doc(doc(&[("firstBatch", B::Bin(big))]))),
            ("ok", B::F64(1.0)),
        ])),
    );
    let small = op_msg(
        81,
        10,
        0,
        &kind0(&doc(&[("ok", B::F64(0.0)), ("code", B::I32(13))])),
    );
    let r1 = op_msg(
        10,
        0,
        0,
        &kind0(&doc(&[("ping", B::I32(1)), ("$db", B::Str("a"))])),
    );
    let r2 = op_msg(
        11,
        0,
        0,
        &kind0(&doc(&[("find", B::Str("big")), ("$db", B::Str("a"))])),
    );
    let ms = host(
        &[
            Ev::Data(S, &[r1, r2].concat()),
            Ev::Data(C, &[small, reply.clone()].concat()),
        ],
        &mut |l| l.min(1460),
    );
    assert_eq!(
        view(&ms),
        ["ping#10 a.-", "find#11 a.big", "!#10 13 -", "=#11"]
    );
    assert_eq!(ms[3].size, reply.len() as u64);
}

#[test]
fn mid_stream_start_and_gaps_resync() {
    let a = op_msg(
        1,
        0,
        0,
        &kind0(&doc(&[("ping", B::I32(1)), ("$db", B::Str("x"))])),
    );
    let b = op_msg(
        2,
        0,
        0,
        &kind0(&doc(&[("hello", B::I32(1)), ("$db", B::Str("x"))])),
    );
    // Starts in the middle of `a`, then a whole `b`.
    let ms = check(&[Ev::Data(S, &[&a[9..], &b[..]].concat())]);
    assert_eq!(view(&ms), ["hello#2 x.-"]);
    // A gap inside a message keeps the framing; one across messages resyncs.
    let ms = check(&[
        Ev::Data(S, &a[..36]),
        Ev::Gap(S, 5),
        Ev::Data(S, &a[41..]),
        Ev::Data(S, &b[..20]),
        Ev::Gap(S, (b.len() - 20 + 7) as u64),
        Ev::Data(S, &a[7..]),
        Ev::Data(S, &b),
    ]);
    // `$db` of the first fell in the hole; the second's first 20 bytes (too
    // short to start a message) were dropped with the gap.
    assert_eq!(view(&ms), ["ping#1 -.-", "hello#2 x.-"]);
    assert!(ms[0].truncated);
    assert!(!ms[1].truncated);
}

#[test]
fn junk_never_panics_and_is_bounded() {
    let mut rng = Rng(11);
    for _ in 0..300 {
        let n = rng.below(400);
        let mut junk: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        // Sometimes a plausible header followed by garbage.
        if rng.below(2) == 0 {
            let mut h = op_msg(5, 0, 0, &[0; 40]);
            h.truncate(21);
            h.extend(junk);
            junk = h;
        }
        for dir in [S, C] {
            let _ = host(&[Ev::Data(dir, &junk), Ev::Close], &mut |l| 1 + (l % 13));
        }
    }
    // A body document whose lengths lie.
    let mut bad = kind0(&doc(&[("find", B::Str("c"))]));
    if let Some(b) = bad.get_mut(1) {
        *b = 0xff;
    }
    let m = op_msg(9, 0, 0, &bad);
    let ms = check(&[Ev::Data(S, &m), Ev::Data(S, &m)]);
    assert_eq!(ms.len(), 2);
}
