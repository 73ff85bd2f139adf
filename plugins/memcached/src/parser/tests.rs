//! Unit tests for the memcached parser. Every scenario is also replayed with
//! byte-by-byte and random split points through a simulated host that keeps
//! the unconsumed remainder, and must give identical results.

use super::*;
use wasmtap_sdk::testing::{self, Event, Rng};

/// One host call (the SDK's simulated host: `wasmtap_sdk::testing`).
type Ev<'a> = Event<'a, Dir>;
use Dir::{ToClient as C, ToServer as S};

/// One run of the simulated host with pieces chosen by `piece`; errors are bugs here.
fn host(events: &[Ev<'_>], piece: &mut dyn FnMut(usize) -> usize) -> Vec<Msg> {
    let o = testing::run(&mut Parser::new(false), events, MAX_LINE, piece);
    assert_eq!(o.error, None, "messages so far: {:?}", o.messages);
    o.messages
}

fn check(events: &[Ev<'_>]) -> Vec<Msg> {
    let o = testing::check_rounds(|| Parser::new(false), events, MAX_LINE, 100);
    assert_eq!(o.error, None, "messages so far: {:?}", o.messages);
    o.messages
}

/// Compact view: "op" for requests, "~op" for one-way, "=STATUS/rows" or
/// "!STATUS" for responses.
fn view(ms: &[Msg]) -> Vec<String> {
    ms.iter()
        .map(|m| match m.kind {
            Kind::Request => m.op.clone(),
            Kind::OneWay => format!("~{}", m.op),
            Kind::Response if m.error => format!("!{}", m.status),
            Kind::Response => match m.rows {
                Some(r) => format!("={}/{r}", m.status),
                None => format!("={}", m.status),
            },
        })
        .collect()
}

#[test]
fn deepflow_session() {
    let ms = check(&[
        Ev::Data(S, b"set foo 0 0 3\r\nbar\r\n"),
        Ev::Data(C, b"STORED\r\n"),
        Ev::Data(S, b"get foo\r\n"),
        Ev::Data(C, b"VALUE foo 0 3\r\nbar\r\nEND\r\n"),
        Ev::Data(S, b"quit\r\n"),
        Ev::Close,
    ]);
    assert_eq!(view(&ms), ["set", "=STORED", "get", "=VALUE/1", "~quit"]);
    assert_eq!(ms[0].size, 20);
    assert_eq!(ms[0].query.as_deref(), Some("set ? ? ? ?"));
    assert_eq!(ms[2].query.as_deref(), Some("get ?"));
    assert_eq!(ms[3].size, 25);
}

#[test]
fn multi_get_is_one_response_counting_hits() {
    let ms = check(&[
        Ev::Data(S, b"get a b c\r\ngets d\r\n"),
        Ev::Data(
            C,
            b"VALUE a 0 1\r\n1\r\nVALUE c 5 2\r\nEND\r\n\r\nEND\r\nVALUE d 0 1 99\r\nx\r\nEND\r\n",
        ),
    ]);
    assert_eq!(view(&ms), ["get", "gets", "=VALUE/2", "=VALUE/1"]);
    assert_eq!(ms[0].keys, 3);
    assert_eq!(ms[0].query.as_deref(), Some("get ? ? ?"));
}

#[test]
fn misses_errors_and_simple_replies() {
    let ms = check(&[
        Ev::Data(
            S,
            b"get nope\r\nbogus\r\nincr n 1\r\ndelete k\r\ntouch k 10\r\nversion\r\nset k 0 0 x\r\n",
        ),
        Ev::Data(
            C,
            b"END\r\nERROR\r\n42\r\nNOT_FOUND\r\nTOUCHED\r\nVERSION 1.6.21\r\nCLIENT_ERROR bad command line format\r\n",
        ),
    ]);
    assert_eq!(
        view(&ms),
        [
            "get",
            "_OTHER",
            "incr",
            "delete",
            "touch",
            "version",
            "set",
            "=END/0",
            "!ERROR",
            "=",
            "=NOT_FOUND",
            "=TOUCHED",
            "=VERSION",
            "!CLIENT_ERROR",
        ]
    );
    assert_eq!(ms[1].query.as_deref(), Some("?"));
}

#[test]
fn noreply_and_quit_are_one_way() {
    let ms = check(&[
        Ev::Data(
            S,
            b"set a 0 0 1 noreply\r\nx\r\ndelete a noreply\r\nget a\r\nquit\r\n",
        ),
        Ev::Data(C, b"END\r\n"),
    ]);
    assert_eq!(view(&ms), ["~set", "~delete", "get", "~quit", "=END/0"]);
    assert_eq!(ms[0].query.as_deref(), Some("set ? ? ? ? noreply"));
}

#[test]
fn stats_is_one_response() {
    let ms = check(&[
        Ev::Data(S, b"stats\r\n"),
        Ev::Data(C, b"STAT pid 1\r\nSTAT uptime 2\r\nEND\r\n"),
    ]);
    assert_eq!(view(&ms), ["stats", "=STAT"]);
    assert_eq!(ms[1].size, 32);
}

#[test]
fn large_value_streams() {
    let mut req = b"set big 0 0 200000\r\n".to_vec();
    req.extend(std::iter::repeat_n(b'\n', 200_000));
    req.extend_from_slice(b"\r\n");
    let mut resp = b"VALUE big 0 200000\r\n".to_vec();
    resp.extend(std::iter::repeat_n(b'x', 200_000));
    resp.extend_from_slice(b"\r\nEND\r\n");
    let ms = host(
        &[
            Ev::Data(S, &req),
            Ev::Data(C, b"STORED\r\n"),
            Ev::Data(C, &resp),
        ],
        &mut |l| l.min(1500),
    );
    assert_eq!(view(&ms), ["set", "=STORED", "=VALUE/1"]);
    assert_eq!(ms[0].size, req.len() as u64);
    assert_eq!(ms[2].size, resp.len() as u64);
}

#[test]
fn mid_stream_start_resyncs() {
    let ms = check(&[
        Ev::Data(S, b"oo 0 0 3\r\nbar\r\nget foo\r\n"),
        Ev::Data(C, b"ar\r\nEND\r\nVALUE foo 0 3\r\nbar\r\nEND\r\n"),
    ]);
    // "bar" is not a command, the request side syncs at `get`; the response
    // side syncs at the stray END (a response to an unseen request).
    assert_eq!(view(&ms), ["get", "=END/0", "=VALUE/1"]);
}

#[test]
fn gap_inside_value_keeps_framing() {
    let ms = check(&[
        Ev::Data(S, b"get k\r\nget j\r\n"),
        Ev::Data(C, b"VALUE k 0 10\r\n01"),
        Ev::Gap(C, 4),
        Ev::Data(C, b"6789\r\nEND\r\nEND\r\n"),
    ]);
    assert_eq!(view(&ms), ["get", "get", "=VALUE/1", "=END/0"]);
    assert!(ms[2].truncated);
}

#[test]
fn gap_across_messages_resyncs() {
    let ms = check(&[
        Ev::Data(S, b"get k\r\nge"),
        Ev::Gap(S, 100),
        Ev::Data(S, b"y\r\nget z\r\n"),
        Ev::Data(C, b"END\r\nEND\r\n"),
    ]);
    assert_eq!(view(&ms), ["get", "get", "=END/0", "=END/0"]);
}

#[test]
fn junk_never_panics_and_is_bounded() {
    let mut rng = Rng(7);
    for _ in 0..200 {
        let n = rng.below(300);
        let junk: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        for dir in [S, C] {
            let _ = host(&[Ev::Data(dir, &junk), Ev::Close], &mut |l| 1 + (l % 17));
        }
    }
    let long = vec![b'a'; 3 * MAX_LINE];
    let ms = check(&[Ev::Data(S, &long), Ev::Data(S, b"\r\nget x\r\n")]);
    assert_eq!(view(&ms), ["get"]);
}

fn bin(
    magic: u8,
    op: u8,
    key: &[u8],
    extras: &[u8],
    value: &[u8],
    status: u16,
    opaque: u32,
) -> Vec<u8> {
    let body = (extras.len() + key.len() + value.len()) as u32;
    let mut v = vec![magic, op];
    v.extend_from_slice(&(key.len() as u16).to_be_bytes());
    v.push(extras.len() as u8);
    v.push(0);
    v.extend_from_slice(&status.to_be_bytes());
    v.extend_from_slice(&body.to_be_bytes());
    v.extend_from_slice(&opaque.to_be_bytes());
    v.extend_from_slice(&[0; 8]);
    v.extend_from_slice(extras);
    v.extend_from_slice(key);
    v.extend_from_slice(value);
    v
}

#[test]
fn binary_get_set_with_opaque() {
    let mut req = bin(0x80, 0x01, b"k", &[0; 8], b"hello", 0, 7);
    req.extend(bin(0x80, 0x00, b"k", &[], &[], 0, 8));
    req.extend(bin(0x80, 0x00, b"zz", &[], &[], 0, 9));
    let mut resp = bin(0x81, 0x01, b"", &[], &[], 0, 7);
    resp.extend(bin(0x81, 0x00, b"", &[0; 4], b"hello", 0, 8));
    resp.extend(bin(0x81, 0x00, b"", &[], b"Not found", 1, 9));
    let ms = check(&[Ev::Data(S, &req), Ev::Data(C, &resp)]);
    assert_eq!(
        view(&ms),
        [
            "set",
            "get",
            "get",
            "=NO_ERROR",
            "=NO_ERROR/1",
            "=KEY_NOT_FOUND/0"
        ]
    );
    let keys: Vec<_> = ms.iter().map(|m| m.correlation).collect();
    assert_eq!(keys, [Some(7), Some(8), Some(9), Some(7), Some(8), Some(9)]);
    assert_eq!(ms[0].size, 24 + 14);
    assert_eq!(ms[0].query.as_deref(), Some("set ?"));
}

#[test]
fn binary_quiet_requests_answered_by_silence() {
    // getq a (hit), getq b (miss: silent), setq c (ok: silent), noop.
    let mut req = bin(0x80, 0x09, b"a", &[], &[], 0, 1);
    req.extend(bin(0x80, 0x09, b"b", &[], &[], 0, 2));
    req.extend(bin(0x80, 0x11, b"c", &[0; 8], b"v", 0, 3));
    req.extend(bin(0x80, 0x0a, b"", &[], &[], 0, 4));
    let mut resp = bin(0x81, 0x09, b"", &[0; 4], b"A", 0, 1);
    resp.extend(bin(0x81, 0x0a, b"", &[], &[], 0, 4));
    let ms = check(&[Ev::Data(S, &req), Ev::Data(C, &resp)]);
    assert_eq!(
        view(&ms),
        [
            "getq",
            "getq",
            "setq",
            "noop",
            "=NO_ERROR/1",
            "=KEY_NOT_FOUND/0",
            "=NO_ERROR",
            "=NO_ERROR"
        ]
    );
    let keys: Vec<_> = ms.iter().skip(4).map(|m| m.correlation).collect();
    assert_eq!(keys, [Some(1), Some(2), Some(3), Some(4)]);
}

#[test]
fn binary_stat_is_one_response_and_errors() {
    let req = [
        bin(0x80, 0x10, b"", &[], &[], 0, 5),
        bin(0x80, 0x05, b"k", &[0; 20], &[], 0, 6),
    ]
    .concat();
    let resp = [
        bin(0x81, 0x10, b"pid", &[], b"1", 0, 5),
        bin(0x81, 0x10, b"uptime", &[], b"2", 0, 5),
        bin(0x81, 0x10, b"", &[], &[], 0, 5),
        bin(0x81, 0x05, b"", &[], b"Non-numeric", 6, 6),
    ]
    .concat();
    let ms = check(&[Ev::Data(S, &req), Ev::Data(C, &resp)]);
    assert_eq!(
        view(&ms),
        ["stat", "incr", "=NO_ERROR", "!NON_NUMERIC_VALUE"]
    );
    assert_eq!(ms[2].size, 24 * 3 + 4 + 7);
}

#[test]
fn binary_gap_resyncs_on_plausible_header() {
    let a = bin(0x80, 0x00, b"key1", &[], &[], 0, 1);
    let b = bin(0x80, 0x00, b"key2", &[], &[], 0, 2);
    let ms = check(&[
        Ev::Data(S, &a),
        Ev::Data(S, &b[..10]),
        Ev::Gap(S, 5),
        Ev::Data(S, &[0xff, 0x00, 0x01]),
        Ev::Data(S, &a),
    ]);
    assert_eq!(view(&ms), ["get", "get"]);
}
