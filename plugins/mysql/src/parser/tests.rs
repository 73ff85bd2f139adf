//! Unit tests for the MySQL parser. Every scenario is also replayed with
//! byte-by-byte and random split points through a simulated host that keeps
//! the unconsumed remainder, and must give identical results.

use super::*;
use wasmtap_sdk::testing::{self, Event, Rng};

const TS: u64 = 1_000;
/// The host's default bound on a kept remainder.
const HOST_BOUND: usize = 256 * 1024;

/// One host call, owning its bytes (scripts are built from packet builders).
#[derive(Clone)]
enum Ev {
    Data(Dir, Vec<u8>),
    Gap(Dir, u64),
}
use Dir::{ToClient as C, ToServer as S};

/// The same script as the SDK's simulated host takes it (`wasmtap_sdk::testing`).
fn script(events: &[Ev]) -> Vec<Event<'_, Dir>> {
    events
        .iter()
        .map(|e| match e {
            Ev::Data(d, b) => Event::Data(*d, b.as_slice()),
            Ev::Gap(d, n) => Event::Gap(*d, *n),
        })
        .collect()
}

type Outcome = testing::Outcome<Message, ParseError>;

/// One run of the simulated host with pieces chosen by `piece`.
fn host(config: Config, events: &[Ev], piece: &mut dyn FnMut(usize) -> usize) -> Outcome {
    testing::run(&mut Parser::new(config), &script(events), HOST_BOUND, piece)
}

fn check_with(config: Config, events: &[Ev]) -> Vec<Message> {
    let whole = testing::check(|| Parser::new(config), &script(events), HOST_BOUND);
    assert_eq!(whole.error, None, "messages so far: {:#?}", whole.messages);
    whole.messages
}

fn ok(events: &[Ev]) -> Vec<Message> {
    check_with(Config::default(), events)
}

// ---- packet builders ----

fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let n = payload.len();
    let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    v.extend_from_slice(payload);
    v
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn greeting(caps: u32) -> Vec<u8> {
    let mut p = vec![10];
    p.extend_from_slice(b"8.0.21\0");
    p.extend_from_slice(&7u32.to_le_bytes());
    p.extend_from_slice(b"abcdefgh\0");
    p.extend_from_slice(&(caps as u16).to_le_bytes());
    p.push(0x21);
    p.extend_from_slice(&2u16.to_le_bytes());
    p.extend_from_slice(&((caps >> 16) as u16).to_le_bytes());
    p.push(21);
    p.extend_from_slice(&[0; 10]);
    p.extend_from_slice(b"ijklmnopqrst\0mysql_native_password\0");
    pkt(0, &p)
}

const BASE_CAPS: u32 = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH_LENENC;

fn login(caps: u32, db: Option<&str>) -> Vec<u8> {
    let caps = caps
        | if db.is_some() {
            CLIENT_CONNECT_WITH_DB
        } else {
            0
        };
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(1u32 << 24).to_le_bytes());
    p.push(0x21);
    p.extend_from_slice(&[0; 23]);
    p.extend_from_slice(b"alice\0");
    p.push(20);
    p.extend_from_slice(b"SECRETSECRETSECRET!!");
    if let Some(db) = db {
        p.extend_from_slice(db.as_bytes());
        p.push(0);
    }
    p.extend_from_slice(b"mysql_native_password\0");
    pkt(1, &p)
}

fn ok_pkt(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0, 1, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    pkt(seq, &p)
}

fn err_pkt(seq: u8, code: u16, msg: &str) -> Vec<u8> {
    let mut p = vec![0xFF];
    p.extend_from_slice(&code.to_le_bytes());
    p.extend_from_slice(b"#42S02");
    p.extend_from_slice(msg.as_bytes());
    pkt(seq, &p)
}

fn eof(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0xFE, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    pkt(seq, &p)
}

fn ok_fe(seq: u8, status: u16) -> Vec<u8> {
    let mut p = vec![0xFE, 0, 0];
    p.extend_from_slice(&status.to_le_bytes());
    p.extend_from_slice(&[0, 0]);
    pkt(seq, &p)
}

fn coldef(seq: u8, name: &str) -> Vec<u8> {
    let mut p = b"\x03def\x04test\x01t\x01t".to_vec();
    p.push(name.len() as u8);
    p.extend_from_slice(name.as_bytes());
    p.push(name.len() as u8);
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(&[0x0c, 0x21, 0, 0x40, 0, 0, 0, 0xfd, 0, 0, 0, 0, 0]);
    pkt(seq, &p)
}

fn row(seq: u8, vals: &[&str]) -> Vec<u8> {
    let mut p = Vec::new();
    for v in vals {
        p.push(v.len() as u8);
        p.extend_from_slice(v.as_bytes());
    }
    pkt(seq, &p)
}

/// A text result set with `cols` columns and `rows` rows, classic EOFs or not.
fn result_set(cols: u8, rows: usize, deprecate_eof: bool) -> Vec<u8> {
    let mut seq = 1u8;
    let mut v = pkt(seq, &[cols]);
    for c in 0..cols {
        seq += 1;
        v.extend(coldef(seq, &format!("c{c}")));
    }
    if !deprecate_eof {
        seq += 1;
        v.extend(eof(seq, 2));
    }
    for r in 0..rows {
        seq = seq.wrapping_add(1);
        let val = r.to_string();
        let vals: Vec<&str> = (0..cols).map(|_| val.as_str()).collect();
        v.extend(row(seq, &vals));
    }
    seq = seq.wrapping_add(1);
    v.extend(if deprecate_eof {
        ok_fe(seq, 2)
    } else {
        eof(seq, 2)
    });
    v
}

fn query(sql: &str) -> Vec<u8> {
    let mut p = vec![0x03];
    p.extend_from_slice(sql.as_bytes());
    pkt(0, &p)
}

fn cmd(c: u8, body: &[u8]) -> Vec<u8> {
    let mut p = vec![c];
    p.extend_from_slice(body);
    pkt(0, &p)
}

fn requests(ms: &[Message]) -> Vec<&str> {
    ms.iter()
        .filter(|m| m.kind != Kind::Response)
        .map(|m| m.operation.as_str())
        .collect()
}

fn responses(ms: &[Message]) -> Vec<&Message> {
    ms.iter().filter(|m| m.kind == Kind::Response).collect()
}

/// (operation, error code, rows) per answered request, by correlation.
fn exchanges(ms: &[Message]) -> Vec<(String, Option<u16>, Option<u64>)> {
    ms.iter()
        .filter(|m| m.kind == Kind::Request)
        .filter_map(|r| {
            ms.iter()
                .find(|m| m.kind == Kind::Response && m.correlation == r.correlation)
                .map(|resp| (r.operation.clone(), resp.error_code, resp.rows))
        })
        .collect()
}

fn ex(op: &str, code: Option<u16>, rows: Option<u64>) -> (String, Option<u16>, Option<u64>) {
    (op.to_string(), code, rows)
}

// ---- scenarios ----

#[test]
fn full_session_with_handshake() {
    let ms = ok(&[
        Ev::Data(C, greeting(0xFFFF_F7FF)),
        Ev::Data(S, login(BASE_CAPS, Some("shop"))),
        Ev::Data(C, ok_pkt(2, 2)),
        Ev::Data(
            S,
            query("SELECT id, name FROM users WHERE id = 42 AND name = 'bob'"),
        ),
        Ev::Data(C, result_set(2, 3, false)),
        Ev::Data(S, query("INSERT INTO t VALUES (1, \"x\")")),
        Ev::Data(C, ok_pkt(1, 2)),
        Ev::Data(S, query("SELECT * FROM nope")),
        Ev::Data(C, err_pkt(1, 1146, "Table 'shop.nope' doesn't exist")),
        Ev::Data(S, cmd(0x01, b"")),
    ]);
    assert_eq!(
        requests(&ms),
        ["LOGIN", "SELECT", "INSERT", "SELECT", "QUIT"]
    );
    assert_eq!(
        exchanges(&ms),
        [
            ex("LOGIN", None, None),
            ex("SELECT", None, Some(3)),
            ex("INSERT", None, None),
            ex("SELECT", Some(1146), None),
        ]
    );
    let sel = ms.iter().find(|m| m.operation == "SELECT").unwrap();
    assert_eq!(
        sel.query.as_deref(),
        Some("SELECT id, name FROM users WHERE id = ? AND name = ?")
    );
    assert_eq!(sel.namespace.as_deref(), Some("shop"));
    assert_eq!(ms[0].namespace.as_deref(), Some("shop"));
    assert_eq!(ms.last().map(|m| m.kind), Some(Kind::OneWay));
    // Credentials never reach a message.
    let dump = format!("{ms:?}");
    assert!(
        !dump.contains("alice") && !dump.contains("SECRET"),
        "{dump}"
    );
    // Sizes: the result set's bytes all count.
    assert_eq!(responses(&ms)[1].size, result_set(2, 3, false).len() as u64);
}

#[test]
fn deprecate_eof_result_sets() {
    let ms = ok(&[
        Ev::Data(S, query("show databases")),
        Ev::Data(C, result_set(1, 5, true)),
        Ev::Data(S, query("select 1 from dual where 0")),
        Ev::Data(C, result_set(1, 0, true)),
        Ev::Data(S, query("select 1 from dual where 0")),
        Ev::Data(C, result_set(1, 0, false)),
    ]);
    assert_eq!(
        exchanges(&ms),
        [
            ex("SHOW", None, Some(5)),
            ex("SELECT", None, Some(0)),
            ex("SELECT", None, Some(0)),
        ]
    );
}

#[test]
fn failed_login_is_an_error() {
    let ms = ok(&[
        Ev::Data(C, greeting(0xFFFF_F7FF)),
        Ev::Data(S, login(BASE_CAPS, None)),
        Ev::Data(C, err_pkt(2, 1045, "Access denied for user 'alice'")),
    ]);
    assert_eq!(exchanges(&ms), [ex("LOGIN", Some(1045), None)]);
}

#[test]
fn auth_switch_then_ok() {
    let mut sw = vec![0xFE];
    sw.extend_from_slice(b"mysql_native_password\0abcdefghijklmnopqrst\0");
    let ms = ok(&[
        Ev::Data(C, greeting(0xFFFF_F7FF)),
        Ev::Data(S, login(BASE_CAPS, None)),
        Ev::Data(C, pkt(2, &sw)),
        Ev::Data(S, pkt(3, b"01234567890123456789")),
        Ev::Data(C, pkt(4, &[0x01, 0x03])),
        Ev::Data(C, ok_pkt(5, 2)),
        Ev::Data(S, query("SET NAMES utf8")),
        Ev::Data(C, ok_pkt(1, 2)),
    ]);
    assert_eq!(
        exchanges(&ms),
        [ex("LOGIN", None, None), ex("SET", None, None)]
    );
}

#[test]
fn mid_stream_start_and_pipelining() {
    // No handshake; junk (the tail of an earlier packet) first; two queries
    // pipelined, then both responses in one segment.
    let mut reqs = b"tail of something\x00".to_vec();
    reqs.extend(query("SELECT 1"));
    reqs.extend(query("UPDATE t SET a = 2"));
    let ms = ok(&[
        Ev::Data(C, ok_pkt(1, 2)), // answer to a request never seen: dropped
        Ev::Data(S, reqs),
        Ev::Data(C, cat(&[result_set(1, 1, false), ok_pkt(1, 2)])),
    ]);
    assert_eq!(
        exchanges(&ms),
        [ex("SELECT", None, Some(1)), ex("UPDATE", None, None)]
    );
    assert_eq!(responses(&ms).len(), 2);
}

#[test]
fn response_gap_leaves_request_unanswered() {
    let rs = result_set(1, 80, false);
    let ms = ok(&[
        Ev::Data(S, query("SELECT a FROM big")),
        Ev::Data(C, rs[..100].to_vec()),
        Ev::Gap(C, 300),
        Ev::Data(C, rs[400..].to_vec()),
        Ev::Data(S, query("SELECT 2")),
        Ev::Data(C, result_set(1, 1, false)),
    ]);
    assert_eq!(requests(&ms), ["SELECT", "SELECT"]);
    assert_eq!(exchanges(&ms), [ex("SELECT", None, Some(1))]);
    assert_eq!(responses(&ms)[0].correlation, ms[1].correlation);
}

#[test]
fn gap_inside_a_skipped_row_keeps_framing() {
    let big = "x".repeat(2000);
    let mut v = pkt(1, &[1]);
    v.extend(coldef(2, "c"));
    v.extend(eof(3, 2));
    let mut p = vec![0xFC, 0xD0, 0x07];
    p.extend_from_slice(big.as_bytes());
    v.extend(pkt(4, &p));
    let cut_at = v.len() - 1000;
    let tail = v[cut_at + 500..].to_vec();
    let mut tail = tail;
    tail.extend(eof(5, 2));
    let ms = ok(&[
        Ev::Data(S, query("SELECT c FROM t")),
        Ev::Data(C, v[..cut_at].to_vec()),
        Ev::Gap(C, 500),
        Ev::Data(C, tail),
    ]);
    assert_eq!(exchanges(&ms), [ex("SELECT", None, Some(1))]);
}

#[test]
fn request_gap_resyncs_on_next_command() {
    let q = query("SELECT * FROM t WHERE a = 'lost'");
    let ms = ok(&[
        Ev::Data(S, q[..10].to_vec()),
        Ev::Gap(S, (q.len() - 10) as u64),
        Ev::Data(C, result_set(1, 1, false)),
        Ev::Data(S, query("DELETE FROM t")),
        Ev::Data(C, ok_pkt(1, 2)),
    ]);
    assert_eq!(exchanges(&ms), [ex("DELETE", None, None)]);
}

#[test]
fn prepared_statements() {
    let mut prep_ok = vec![0x00];
    prep_ok.extend_from_slice(&7u32.to_le_bytes());
    prep_ok.extend_from_slice(&1u16.to_le_bytes()); // columns
    prep_ok.extend_from_slice(&1u16.to_le_bytes()); // params
    prep_ok.extend_from_slice(&[0, 0, 0]);
    let prep_resp = cat(&[
        pkt(1, &prep_ok),
        coldef(2, "?"),
        eof(3, 2),
        coldef(4, "name"),
        eof(5, 2),
    ]);
    let mut exec = 7u32.to_le_bytes().to_vec();
    exec.extend_from_slice(&[0, 1, 0, 0, 0, 1, 0xfe, 0, 3, b'b', b'o', b'b']);
    let mut brow = vec![0x00, 0x00];
    brow.extend_from_slice(b"\x03bob");
    let exec_resp = cat(&[
        pkt(1, &[1]),
        coldef(2, "name"),
        eof(3, 2),
        pkt(4, &brow),
        eof(5, 2),
    ]);
    let ms = ok(&[
        Ev::Data(S, cmd(0x16, b"SELECT name FROM users WHERE name = ?")),
        Ev::Data(C, prep_resp),
        Ev::Data(S, cmd(0x17, &exec)),
        Ev::Data(C, exec_resp),
        Ev::Data(S, cmd(0x19, &7u32.to_le_bytes())),
        Ev::Data(S, cmd(0x17, &exec)),
        Ev::Data(C, err_pkt(1, 1243, "Unknown prepared statement handler")),
    ]);
    assert_eq!(
        requests(&ms),
        ["PREPARE", "SELECT", "STMT_CLOSE", "EXECUTE"]
    );
    assert_eq!(
        exchanges(&ms),
        [
            ex("PREPARE", None, None),
            ex("SELECT", None, Some(1)),
            ex("EXECUTE", Some(1243), None),
        ]
    );
    assert_eq!(
        ms[2].query.as_deref(),
        Some("SELECT name FROM users WHERE name = ?")
    );
    assert!(!format!("{ms:?}").contains("bob"));
}

#[test]
fn init_db_sets_namespace_only_on_success() {
    let ms = ok(&[
        Ev::Data(S, cmd(0x02, b"nope")),
        Ev::Data(C, err_pkt(1, 1049, "Unknown database 'nope'")),
        Ev::Data(S, query("SELECT 1")),
        Ev::Data(C, result_set(1, 1, false)),
        Ev::Data(S, cmd(0x02, b"shop")),
        Ev::Data(C, ok_pkt(1, 2)),
        Ev::Data(S, query("use `other`")),
        Ev::Data(C, ok_pkt(1, 2)),
        Ev::Data(S, query("SELECT 1")),
        Ev::Data(C, result_set(1, 1, false)),
    ]);
    let ns: Vec<_> = ms
        .iter()
        .filter(|m| m.kind == Kind::Request)
        .map(|m| m.namespace.as_deref())
        .collect();
    assert_eq!(
        ns,
        [
            Some("nope"),
            None,
            Some("shop"),
            Some("shop"),
            Some("other")
        ]
    );
    assert_eq!(exchanges(&ms)[0], ex("INIT_DB", Some(1049), None));
}

#[test]
fn ssl_request_makes_flow_opaque() {
    let mut ssl = (BASE_CAPS | CLIENT_SSL).to_le_bytes().to_vec();
    ssl.extend_from_slice(&(1u32 << 24).to_le_bytes());
    ssl.push(0x21);
    ssl.extend_from_slice(&[0; 23]);
    let ms = ok(&[
        Ev::Data(C, greeting(0xFFFF_FFFF)),
        Ev::Data(S, pkt(1, &ssl)),
        Ev::Data(S, b"\x16\x03\x01\x00\x50 client hello...".to_vec()),
        Ev::Data(C, b"\x16\x03\x01\x00\x50 server hello...".to_vec()),
        Ev::Data(S, query("SELECT 1")),
    ]);
    assert!(ms.is_empty(), "{ms:?}");
}

#[test]
fn field_list_statistics_ping() {
    let ms = ok(&[
        Ev::Data(S, cmd(0x04, b"agent\0")),
        Ev::Data(C, cat(&[coldef(1, "a"), coldef(2, "b"), eof(3, 2)])),
        Ev::Data(S, cmd(0x09, b"")),
        Ev::Data(C, pkt(1, b"Uptime: 10  Threads: 1")),
        Ev::Data(S, cmd(0x0e, b"")),
        Ev::Data(C, ok_pkt(1, 2)),
    ]);
    assert_eq!(
        exchanges(&ms),
        [
            ex("FIELD_LIST", None, None),
            ex("STATISTICS", None, None),
            ex("PING", None, None)
        ]
    );
    assert_eq!(ms[0].collection.as_deref(), Some("agent"));
}

#[test]
fn multi_result_sets() {
    const MORE: u16 = SERVER_MORE_RESULTS_EXISTS | 2;
    // CALL p(): a result set, then the final OK.
    let mut first = result_set(1, 2, false);
    let n = first.len();
    first.truncate(n - 9);
    let seq = 1 + 1 + 1 + 2;
    first.extend(eof(seq + 1, MORE));
    first.extend(ok_pkt(seq + 2, 2));
    let ms = ok(&[Ev::Data(S, query("CALL p()")), Ev::Data(C, first)]);
    assert_eq!(exchanges(&ms), [ex("CALL", None, Some(2))]);
}

#[test]
fn large_rows_stream_without_buffering() {
    // A 16 MiB + row split in two packets, then many 100 KiB rows.
    let big = vec![b'x'; MULTI];
    let mut v = cat(&[pkt(1, &[1]), coldef(2, "c"), eof(3, 2)]);
    v.extend(pkt(4, &big));
    v.extend(pkt(5, b"\xfe tail"));
    for i in 0..20u8 {
        let mut p = vec![0xFD, 0xA0, 0x86, 0x01];
        p.extend(std::iter::repeat_n(b'y', 100_000));
        v.extend(pkt(6 + i, &p));
    }
    v.extend(eof(26, 2));
    let events = [Ev::Data(S, query("SELECT blob FROM t")), Ev::Data(C, v)];
    let out = host(Config::default(), &events, &mut |left| left.min(1460));
    assert_eq!(out.error, None);
    assert_eq!(exchanges(&out.messages), [ex("SELECT", None, Some(21))]);
    let whole = host(Config::default(), &events, &mut |left| left);
    assert_eq!(whole, out);
}

#[test]
fn multi_packet_request_moves_response_sequence() {
    let mut p = vec![0x03];
    p.extend_from_slice(b"INSERT INTO t VALUES ('");
    p.resize(MULTI, b'a');
    let mut v = pkt(0, &p);
    v.extend(pkt(1, b"')"));
    let ms = ok(&[Ev::Data(S, v), Ev::Data(C, ok_pkt(2, 2))]);
    assert_eq!(exchanges(&ms), [ex("INSERT", None, None)]);
    assert_eq!(ms[0].query.as_deref(), Some("INSERT INTO t VALUES (?"));
}

fn compress(seq: u8, plain: &[u8], deflate: bool) -> Vec<u8> {
    let (body, ulen) = if deflate {
        (
            miniz_oxide::deflate::compress_to_vec_zlib(plain, 6),
            plain.len(),
        )
    } else {
        (plain.to_vec(), 0)
    };
    let n = body.len();
    let mut v = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    v.extend_from_slice(&[ulen as u8, (ulen >> 8) as u8, (ulen >> 16) as u8]);
    v.extend(body);
    v
}

#[test]
fn compressed_protocol_after_login() {
    let ms = ok(&[
        Ev::Data(C, greeting(0xFFFF_F7FF)),
        Ev::Data(S, login(BASE_CAPS | CLIENT_COMPRESS, None)),
        Ev::Data(C, ok_pkt(2, 2)),
        Ev::Data(S, compress(0, &query("SELECT 1"), false)),
        Ev::Data(C, compress(1, &result_set(3, 40, true), true)),
        Ev::Data(S, compress(0, &query("SELECT * FROM nope"), true)),
        Ev::Data(C, compress(1, &err_pkt(1, 1146, "no such table"), false)),
    ]);
    assert_eq!(
        exchanges(&ms),
        [
            ex("LOGIN", None, None),
            ex("SELECT", None, Some(40)),
            ex("SELECT", Some(1146), None)
        ]
    );
}

#[test]
fn compressed_protocol_mid_stream() {
    let rs = result_set(2, 7, true);
    let ms = ok(&[
        Ev::Data(S, compress(0, &query("SELECT * FROM `az`"), false)),
        Ev::Data(
            C,
            cat(&[compress(1, &rs[..40], true), compress(2, &rs[40..], true)]),
        ),
    ]);
    assert_eq!(exchanges(&ms), [ex("SELECT", None, Some(7))]);
}

#[test]
fn compressed_gap_gives_up_on_direction() {
    let ms = ok(&[
        Ev::Data(S, compress(0, &query("SELECT 1"), false)),
        Ev::Gap(C, 100),
        Ev::Data(C, compress(1, &result_set(1, 1, true), true)),
        Ev::Data(S, compress(0, &query("SELECT 2"), false)),
    ]);
    assert_eq!(requests(&ms), ["SELECT", "SELECT"]);
    assert!(responses(&ms).is_empty());
}

#[test]
fn local_infile() {
    let ms = ok(&[
        Ev::Data(S, query("LOAD DATA LOCAL INFILE '/tmp/x' INTO TABLE t")),
        Ev::Data(C, pkt(1, b"\xfb/tmp/x")),
        Ev::Data(S, cat(&[pkt(2, b"1,2\n3,4\n"), pkt(3, b"")])),
        Ev::Data(C, ok_pkt(4, 2)),
        Ev::Data(S, query("SELECT 1")),
        Ev::Data(C, result_set(1, 1, false)),
    ]);
    assert_eq!(
        exchanges(&ms),
        [ex("LOAD", None, None), ex("SELECT", None, Some(1))]
    );
}

#[test]
fn garbage_never_panics() {
    let mut rng = Rng(42);
    for _ in 0..200 {
        let n = rng.below(600);
        let junk: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        let mut p = Parser::new(Config::default());
        let mut out = Vec::new();
        let dir = if rng.below(2) == 0 { S } else { C };
        let _ = p.feed(dir, TS, &junk, &mut out);
        let _ = p.feed(C, TS, &junk, &mut out);
        let _ = p.gap(dir, 3, &mut out);
        let _ = p.feed(dir, TS, &junk, &mut out);
    }
}

#[test]
fn endless_junk_fails_resync() {
    let junk = vec![0x77u8; 2 * MAX_RESYNC_BYTES as usize];
    let mut p = Parser::new(Config::default());
    let mut out = Vec::new();
    let mut res = Ok(0);
    for chunk in junk.chunks(64 * 1024) {
        res = p.feed(S, TS, chunk, &mut out);
        if res.is_err() {
            break;
        }
    }
    assert_eq!(res.map_err(|e| e.reason), Err(reason::RESYNC_FAILED));
}

#[test]
fn sanitizer() {
    let cases = [
        ("SELECT * FROM t WHERE a = 1", "SELECT * FROM t WHERE a = ?"),
        (
            "select 'it''s', \"q\\\"x\", 0x1F, X'ab', -3.5e+10",
            "select ?, ?, ?, ?, ?",
        ),
        (
            "SELECT `col1`, t2.c3 FROM t2 LIMIT 10",
            "SELECT `col1`, t2.c3 FROM t2 LIMIT ?",
        ),
        ("INSERT INTO t VALUES (?, ?)", "INSERT INTO t VALUES (?, ?)"),
        ("select 'unterminated", "select ?"),
        // Comments go (they can hold anything), and an apostrophe in one
        // opens no literal.
        ("SELECT a -- it's 'x'\nFROM t", "SELECT a FROM t"),
        ("SELECT a # note\nFROM t /* it's */", "SELECT a FROM t"),
    ];
    for (input, want) in cases {
        assert_eq!(sanitize(input.as_bytes()), want, "{input}");
    }
    assert!(sanitize("x".repeat(10_000).as_bytes()).len() <= MAX_QUERY_TEXT);
    assert_eq!(sql_operation(b"  /* hint */ (select 1)"), "SELECT");
    assert_eq!(sql_operation(b"-- c\nINSERT INTO t"), "INSERT");
    assert_eq!(sql_operation(b"frobnicate all"), "QUERY");
}

#[test]
fn raw_query_text_when_configured() {
    let ms = check_with(
        Config {
            raw_query_text: true,
        },
        &[Ev::Data(S, query("SELECT 'x' FROM t"))],
    );
    assert_eq!(ms[0].query.as_deref(), Some("SELECT 'x' FROM t"));
}

#[test]
fn query_attributes_are_skipped() {
    const QA: u32 = CLIENT_QUERY_ATTRIBUTES;
    // One attribute: bitmap 0, bound 1, type 0xfe (string) "name" = "v1".
    let mut with_attr = vec![0x03, 1, 1, 0, 1, 0xfe, 0, 4];
    with_attr.extend_from_slice(b"name\x02v1SELECT 1");
    let ms = ok(&[
        Ev::Data(C, greeting(!CLIENT_SSL)),
        Ev::Data(S, login(BASE_CAPS | QA, None)),
        Ev::Data(C, ok_pkt(2, 2)),
        Ev::Data(S, cmd(0x03, b"\x00\x01select @@version_comment limit 1")),
        Ev::Data(C, result_set(1, 1, true)),
        Ev::Data(S, pkt(0, &with_attr)),
        Ev::Data(C, result_set(1, 1, true)),
    ]);
    let qs: Vec<_> = ms.iter().filter_map(|m| m.query.as_deref()).collect();
    assert_eq!(qs, ["select @@version_comment limit ?", "SELECT ?"]);
    assert_eq!(requests(&ms), ["LOGIN", "SELECT", "SELECT"]);
    // Mid-stream: the empty block is recognised.
    let ms = ok(&[Ev::Data(S, cmd(0x03, b"\x00\x01SELECT DATABASE()"))]);
    assert_eq!(ms[0].query.as_deref(), Some("SELECT DATABASE()"));
}

#[test]
fn oversized_compressed_packet_is_skipped() {
    let big = result_set(1, 30_000, true);
    assert!(big.len() > MAX_COMPRESSED);
    let events = [
        Ev::Data(S, compress(0, &query("SELECT a FROM big"), false)),
        Ev::Data(C, compress(1, &big, false)),
        Ev::Data(S, compress(0, &query("SELECT 2"), false)),
        Ev::Data(C, compress(1, &result_set(1, 1, true), false)),
    ];
    let out = host(Config::default(), &events, &mut |left| left.min(1460));
    assert_eq!(out.error, None);
    assert_eq!(requests(&out.messages), ["SELECT", "SELECT"]);
    assert_eq!(exchanges(&out.messages), [ex("SELECT", None, Some(1))]);
    assert_eq!(out.messages[2].correlation, out.messages[1].correlation);
}
