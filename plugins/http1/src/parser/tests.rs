//! Unit tests for the HTTP/1.x parser. Every scenario is also replayed with
//! byte-by-byte and random split points through a simulated host that keeps
//! the unconsumed remainder, and must give identical results.

use super::*;

const TS: u64 = 1_000;

/// One host call.
#[derive(Clone, Copy)]
enum Ev<'a> {
    Data(Dir, &'a [u8]),
    Gap(Dir, u64),
    Close,
}
use Dir::{ToClient as C, ToServer as S};

/// Small deterministic xorshift64 generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

#[derive(Debug, PartialEq)]
struct Outcome {
    messages: Vec<Message>,
    error: Option<ParseError>,
}

/// Simulates the host: per direction it keeps the unconsumed remainder and
/// re-offers it with the next piece; `piece` picks each piece's length from
/// the bytes left of the event. Gaps drop the remainder.
fn host(limits: Limits, events: &[Ev<'_>], piece: &mut dyn FnMut(usize) -> usize) -> Outcome {
    let mut parser = Parser::new(limits);
    let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut messages = Vec::new();
    for ev in events {
        match *ev {
            Ev::Data(dir, mut bytes) => {
                let buf = &mut pending[dir as usize];
                while !bytes.is_empty() {
                    let n = piece(bytes.len()).clamp(1, bytes.len());
                    let (now, later) = bytes.split_at(n);
                    bytes = later;
                    buf.extend_from_slice(now);
                    match parser.feed(dir, TS, buf, &mut messages) {
                        Ok(used) => {
                            assert!(used <= buf.len(), "consumed more than offered");
                            buf.drain(..used);
                            assert!(
                                buf.len() <= limits.max_header_bytes,
                                "host asked to buffer {}",
                                buf.len()
                            );
                        }
                        Err(error) => {
                            return Outcome {
                                messages,
                                error: Some(error),
                            };
                        }
                    }
                }
            }
            Ev::Gap(dir, len) => {
                pending[dir as usize].clear();
                if let Err(error) = parser.gap(dir, len, &mut messages) {
                    return Outcome {
                        messages,
                        error: Some(error),
                    };
                }
            }
            Ev::Close => parser.close(TS, &mut messages),
        }
    }
    Outcome {
        messages,
        error: None,
    }
}

/// Runs `events` whole, byte by byte and with many random splits; all must
/// agree. Returns the outcome.
fn check_with(limits: Limits, events: &[Ev<'_>]) -> Outcome {
    let whole = host(limits, events, &mut |left| left);
    let bytewise = host(limits, events, &mut |_| 1);
    assert_eq!(whole, bytewise, "byte-by-byte feeding differs");
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for round in 0..100 {
        let max = 1 + rng.below(64);
        let split = host(limits, events, &mut |left| 1 + rng.below(left.min(max)));
        assert_eq!(whole, split, "random split round {round} differs");
    }
    whole
}

fn check(events: &[Ev<'_>]) -> Outcome {
    check_with(Limits::default(), events)
}

fn ok(events: &[Ev<'_>]) -> Vec<Message> {
    let o = check(events);
    assert_eq!(
        o.error, None,
        "unexpected error; messages so far: {:#?}",
        o.messages
    );
    o.messages
}

fn err(events: &[Ev<'_>]) -> ParseError {
    check(events).error.expect("expected an error")
}

fn statuses(ms: &[Message]) -> Vec<Option<u16>> {
    ms.iter()
        .filter(|m| m.kind == Kind::Response)
        .map(|m| m.status_code)
        .collect()
}

fn methods(ms: &[Message]) -> Vec<&str> {
    ms.iter().filter_map(|m| m.method.as_deref()).collect()
}

fn responses(ms: &[Message]) -> Vec<&Message> {
    ms.iter().filter(|m| m.kind == Kind::Response).collect()
}

const GET: &[u8] = b"GET /index.html?a=1&b=xyz HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.0\r\nCookie: secret=1\r\nAuthorization: Bearer tok\r\n\r\n";
const OK_5: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: sid=s3cr3t\r\n\r\nhello";

#[test]
fn simple_exchange_extracts_fields() {
    let ms = ok(&[Ev::Data(S, GET), Ev::Data(C, OK_5)]);
    assert_eq!(ms.len(), 2);
    let r = &ms[0];
    assert_eq!(r.kind, Kind::Request);
    assert_eq!(r.method.as_deref(), Some("GET"));
    assert_eq!(r.path.as_deref(), Some("/index.html"));
    assert_eq!(r.query.as_deref(), Some("a=?&b=?"));
    assert_eq!(r.version, "1.1");
    assert_eq!(r.host.as_deref(), Some("example.com"));
    assert_eq!(r.user_agent.as_deref(), Some("curl/8.0"));
    assert_eq!(r.size, GET.len() as u64);
    assert_eq!(r.body_size, 0);
    assert_eq!(r.status_code, None);
    assert!(!r.truncated);
    let s = &ms[1];
    assert_eq!(s.kind, Kind::Response);
    assert_eq!(s.status_code, Some(200));
    assert_eq!(s.method, None);
    assert_eq!(s.size, OK_5.len() as u64);
    assert_eq!(s.body_size, 5);
    // Credentials never reach a message.
    let dump = format!("{ms:?}");
    for secret in ["secret", "tok", "s3cr3t"] {
        assert!(!dump.contains(secret), "{secret} leaked");
    }
}

#[test]
fn request_framings() {
    let cl = b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
    let chunked = b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let none = b"DELETE /c HTTP/1.1\r\nHost: h\r\n\r\n";
    let zero = b"PUT /d HTTP/1.0\r\nContent-Length: 0\r\n\r\n";
    let mut all = Vec::new();
    for m in [&cl[..], chunked, none, zero] {
        all.extend_from_slice(m);
    }
    let ms = ok(&[Ev::Data(S, &all)]);
    assert_eq!(methods(&ms), ["POST", "POST", "DELETE", "PUT"]);
    let sizes: Vec<_> = ms.iter().map(|m| (m.size, m.body_size)).collect();
    assert_eq!(
        sizes,
        [
            (cl.len() as u64, 3),
            (chunked.len() as u64, 3),
            (none.len() as u64, 0),
            (zero.len() as u64, 0)
        ]
    );
    assert_eq!(ms[3].version, "1.0");
}

#[test]
fn request_body_is_streamed_not_buffered() {
    // A 1 MiB body fed in 1000-byte pieces: the parser consumes as it goes
    // (the host helper asserts its remainder stays bounded).
    let mut req = b"PUT /up HTTP/1.1\r\nContent-Length: 1048576\r\n\r\n".to_vec();
    req.resize(req.len() + 1_048_576, b'x');
    let o = host(Limits::default(), &[Ev::Data(S, &req)], &mut |_| 1000);
    assert_eq!(o.error, None);
    assert_eq!(o.messages.len(), 1);
    assert_eq!(o.messages[0].body_size, 1_048_576);
}

#[test]
fn response_framings() {
    let cl = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n";
    let close = b"HTTP/1.0 200 OK\r\nServer: x\r\n\r\nuntil the end";
    let mut resp = Vec::new();
    for m in [&cl[..], chunked, close] {
        resp.extend_from_slice(m);
    }
    let reqs = b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\nGET /3 HTTP/1.1\r\n\r\n";
    let open = ok(&[Ev::Data(S, reqs), Ev::Data(C, &resp)]);
    assert_eq!(open.len(), 5, "close-delimited body waits for close");
    let ms = ok(&[Ev::Data(S, reqs), Ev::Data(C, &resp), Ev::Close]);
    let rs = responses(&ms);
    assert_eq!(rs.len(), 3);
    assert_eq!((rs[0].size, rs[0].body_size), (cl.len() as u64, 2));
    assert_eq!((rs[1].size, rs[1].body_size), (chunked.len() as u64, 2));
    assert_eq!(
        (rs[2].size, rs[2].body_size, rs[2].truncated),
        (close.len() as u64, 13, false)
    );
    assert_eq!(rs[2].version, "1.0");
}

#[test]
fn chunked_with_extensions_and_trailers() {
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
        4;name=value;x=\"q\"\r\nWiki\r\n\
        5 ; ext\r\npedia\r\n\
        E\r\n in\r\n\r\nchunks.\r\n\
        0;last\r\nExpires: never\r\nX-Checksum: abc\r\n\r\n\
        HTTP/1.1 204 No Content\r\n\r\n";
    let ms = ok(&[
        Ev::Data(S, b"GET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n"),
        Ev::Data(C, resp),
    ]);
    let rs = responses(&ms);
    assert_eq!(statuses(&ms), [Some(200), Some(204)]);
    assert_eq!(rs[0].body_size, 4 + 5 + 14);
    assert_eq!(rs[0].size, resp.len() as u64 - 27);
    // Large hex sizes and lower/upper case.
    let big = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\n";
    assert_eq!(ok(&[Ev::Data(C, big)])[0].body_size, 26);
}

#[test]
fn bad_chunks_fail() {
    for body in [
        &b"zz\r\n"[..],
        b"3\r\nabcX",
        b"\r\n",
        b"ffffffffffffffffff\r\n",
        b"3 x\r\n",
    ] {
        let mut resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        resp.extend_from_slice(body);
        assert_eq!(
            err(&[Ev::Data(C, &resp)]).reason,
            reason::BAD_CHUNK,
            "{body:?}"
        );
    }
}

#[test]
fn no_body_responses() {
    // 204 and 304 never have a body, even with Content-Length; neither has a
    // response to HEAD.
    let reqs = b"HEAD / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nTransfer-Encoding: chunked\r\n\r\n\
        HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n\
        HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n\
        HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
    let ms = ok(&[Ev::Data(S, reqs), Ev::Data(C, resp)]);
    assert_eq!(statuses(&ms), [Some(200), Some(204), Some(304), Some(200)]);
    assert!(
        responses(&ms)
            .iter()
            .all(|m| m.body_size == 0 && !m.truncated)
    );
}

#[test]
fn head_response_without_close_waits_for_nothing() {
    let ms = ok(&[
        Ev::Data(S, b"HEAD /x HTTP/1.1\r\nHost: a\r\n\r\n"),
        Ev::Data(C, b"HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n"),
    ]);
    assert_eq!(ms.len(), 2);
    assert_eq!(ms[1].body_size, 0);
}

#[test]
fn continue_100_is_one_exchange() {
    let interim = b"HTTP/1.1 100 Continue\r\n\r\n";
    let early = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n";
    let fin = b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok";
    let mut resp = interim.to_vec();
    resp.extend_from_slice(early);
    let req_head = b"PUT /f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n";
    let mut parser = Parser::new(Limits::default());
    let mut out = Vec::new();
    assert_eq!(parser.feed(S, 1, req_head, &mut out), Ok(req_head.len()));
    assert_eq!(parser.feed(C, 2, &resp, &mut out), Ok(resp.len()));
    assert!(out.is_empty(), "interim responses make no message");
    assert_eq!(parser.feed(S, 3, b"data", &mut out), Ok(4));
    assert_eq!(parser.feed(C, 4, fin, &mut out), Ok(fin.len()));
    assert_eq!(out.len(), 2);
    assert_eq!(
        (out[0].start_ns, out[0].end_ns, out[0].body_size),
        (1, 3, 4)
    );
    let r = &out[1];
    assert_eq!(r.status_code, Some(201));
    assert_eq!((r.start_ns, r.end_ns), (2, 4));
    assert_eq!(r.size, (resp.len() + fin.len()) as u64);
    assert_eq!(r.body_size, 2);
    // And split every way.
    let ms = ok(&[
        Ev::Data(S, req_head),
        Ev::Data(C, &resp),
        Ev::Data(S, b"data"),
        Ev::Data(C, fin),
    ]);
    assert_eq!(statuses(&ms), [Some(201)]);
}

#[test]
fn upgrade_101_ends_http() {
    let req = b"GET /chat HTTP/1.1\r\nHost: s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    let resp = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello";
    let ms = ok(&[
        Ev::Data(S, req),
        Ev::Data(C, resp),
        Ev::Data(S, b"\x81\x85\x00\x00\x00\x00hello\x00\xff"),
        Ev::Data(C, b"\x00\x01\x02 not http"),
        Ev::Gap(C, 100),
        Ev::Close,
    ]);
    assert_eq!(ms.len(), 2);
    assert_eq!(ms[1].status_code, Some(101));
    assert_eq!(ms[1].size, (resp.len() - 7) as u64);
}

#[test]
fn client_speaking_new_protocol_before_101_is_ignored() {
    let ms = ok(&[
        Ev::Data(
            S,
            b"GET / HTTP/1.1\r\nUpgrade: h2c\r\n\r\n\x00\x00\x12\x04\x00binary",
        ),
        Ev::Data(C, b"HTTP/1.1 101 Switching Protocols\r\n\r\n\x00\x00"),
    ]);
    assert_eq!(statuses(&ms), [Some(101)]);
}

#[test]
fn connect_tunnel() {
    let tls = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    let ms = ok(&[
        Ev::Data(
            S,
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
        ),
        Ev::Data(C, b"HTTP/1.1 200 Connection Established\r\n\r\n"),
        Ev::Data(S, tls),
        Ev::Data(C, tls),
        Ev::Close,
    ]);
    assert_eq!(ms.len(), 2);
    assert_eq!(ms[0].method.as_deref(), Some("CONNECT"));
    assert_eq!(ms[0].path, None);
    assert_eq!(ms[0].host.as_deref(), Some("example.com:443"));
    // A refused CONNECT is an ordinary response; the connection stays HTTP.
    let ms = ok(&[
        Ev::Data(S, b"CONNECT a:443 HTTP/1.1\r\n\r\n"),
        Ev::Data(
            C,
            b"HTTP/1.1 407 Proxy Auth\r\nContent-Length: 3\r\n\r\nno!",
        ),
        Ev::Data(S, b"GET http://a/x HTTP/1.1\r\n\r\n"),
        Ev::Data(C, OK_5),
    ]);
    assert_eq!(statuses(&ms), [Some(407), Some(200)]);
}

fn pipeline() -> (Vec<u8>, Vec<u8>) {
    let reqs = [
        &b"GET /1 HTTP/1.1\r\nHost: h\r\n\r\n"[..],
        b"HEAD /2 HTTP/1.1\r\nHost: h\r\n\r\n",
        b"POST /3?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody",
        b"PUT /4 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n",
    ]
    .concat();
    let resps = [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: 999\r\n\r\n",
        b"\r\nHTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nAllow: GET\r\nContent-Length: 0\r\n\r\n",
    ]
    .concat();
    (reqs, resps)
}

#[test]
fn pipelining_five_requests() {
    let (reqs, resps) = pipeline();
    let ms = ok(&[Ev::Data(S, &reqs), Ev::Data(C, &resps), Ev::Close]);
    assert_eq!(methods(&ms), ["GET", "HEAD", "POST", "PUT", "OPTIONS"]);
    assert_eq!(
        statuses(&ms),
        [Some(200), Some(200), Some(201), Some(204), Some(200)]
    );
    let paths: Vec<_> = ms.iter().filter_map(|m| m.path.as_deref()).collect();
    assert_eq!(paths, ["/1", "/2", "/3", "/4", "*"]);
    assert_eq!(ms[2].query.as_deref(), Some("x=?"));
    let body: Vec<_> = ms.iter().map(|m| m.body_size).collect();
    assert_eq!(body, [0, 0, 4, 1, 0, 3, 0, 3, 0, 0]);
    assert_eq!(
        ms.iter().map(|m| m.size).sum::<u64>(),
        (reqs.len() + resps.len() - 2) as u64
    );
    // Interleaved request/response per exchange gives the same messages
    // (sorted by kind).
    let inter = ok(&[
        Ev::Data(S, &reqs[..29]),
        Ev::Data(C, &resps[..42]),
        Ev::Data(S, &reqs[29..]),
        Ev::Data(C, &resps[42..]),
    ]);
    assert_eq!(statuses(&inter), statuses(&ms));
}

#[test]
fn keep_alive_with_leading_crlfs() {
    let ms = ok(&[Ev::Data(
        S,
        b"GET /a HTTP/1.1\r\n\r\n\r\n\r\nGET /b HTTP/1.1\r\n\r\n\nGET /c HTTP/1.1\r\n\r\n",
    )]);
    assert_eq!(ms.len(), 3);
    assert_eq!(ms[1].size, 19, "leading CRLFs are not part of a message");
}

#[test]
fn bare_lf_line_endings_and_obs_fold() {
    let ms = ok(&[
        Ev::Data(S, b"GET /lf HTTP/1.1\nHost: h\nUser-Agent: a\n b\n\n"),
        Ev::Data(C, b"HTTP/1.1 200 OK\nContent-Length: 1\n\nx"),
    ]);
    assert_eq!(ms[0].user_agent.as_deref(), Some("a b"));
    assert_eq!(ms[1].body_size, 1);
}

#[test]
fn timestamps_follow_first_offer_and_completion() {
    let mut p = Parser::new(Limits::default());
    let mut out = Vec::new();
    let req = b"GET / HTTP/1.1\r\nHost: h\r\n\r\n";
    assert_eq!(p.feed(S, 10, &req[..5], &mut out), Ok(0));
    assert_eq!(p.feed(S, 20, &req[..12], &mut out), Ok(0));
    assert_eq!(p.feed(S, 30, req, &mut out), Ok(req.len()));
    assert_eq!((out[0].start_ns, out[0].end_ns), (10, 30));
    // Body spread over calls: starts with its head, ends with its last byte.
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab";
    assert_eq!(p.feed(C, 40, resp, &mut out), Ok(resp.len()));
    assert_eq!(p.feed(C, 50, b"cd", &mut out), Ok(2));
    assert_eq!((out[1].start_ns, out[1].end_ns), (40, 50));
}

#[test]
fn gap_inside_content_length_body() {
    let resp_head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n";
    let ms = ok(&[
        Ev::Data(S, b"GET / HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"),
        Ev::Data(C, resp_head),
        Ev::Data(C, b"abc"),
        Ev::Gap(C, 4),
        Ev::Data(C, b"xyz"),
        Ev::Data(C, OK_5),
    ]);
    let rs = responses(&ms);
    assert_eq!(rs.len(), 2);
    assert!(rs[0].truncated);
    assert_eq!(
        (rs[0].body_size, rs[0].size),
        (10, resp_head.len() as u64 + 10)
    );
    assert!(!rs[1].truncated);
    assert_eq!(rs[1].body_size, 5);
}

#[test]
fn gap_past_end_of_body_resyncs() {
    let ms = ok(&[
        Ev::Data(C, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
        Ev::Gap(C, 50),
        Ev::Data(C, b"ody of the lost message\r\n"),
        Ev::Data(C, OK_5),
    ]);
    assert_eq!(statuses(&ms), [Some(200), Some(200)]);
    assert!(ms[0].truncated);
    assert_eq!(ms[0].body_size, 10);
    assert!(!ms[1].truncated);
}

#[test]
fn gap_inside_chunked_body() {
    let ms = ok(&[
        Ev::Data(S, b"GET / HTTP/1.1\r\n\r\n"),
        Ev::Data(
            C,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10\r\n0123",
        ),
        Ev::Gap(C, 30),
        Ev::Data(C, b"cdef\r\n0\r\n\r\n"),
        Ev::Data(C, OK_5),
    ]);
    let rs = responses(&ms);
    assert_eq!(rs.len(), 2);
    assert!(rs[0].truncated);
    assert_eq!(rs[0].body_size, 4);
    assert_eq!(rs[1].body_size, 5);
}

#[test]
fn gap_in_headers_and_in_close_delimited_body() {
    let ms = ok(&[
        Ev::Data(S, b"GET / HTTP/1.1\r\nHo"),
        Ev::Gap(S, 7),
        Ev::Data(S, b"ent: x\r\n\r\nGET /next HTTP/1.1\r\n\r\n"),
        Ev::Data(C, b"HTTP/1.0 200 OK\r\n\r\nabc"),
        Ev::Gap(C, 100),
        Ev::Data(C, b"def"),
        Ev::Close,
    ]);
    assert_eq!(methods(&ms), ["GET"]);
    assert_eq!(ms[0].path.as_deref(), Some("/next"));
    let r = responses(&ms)[0];
    assert!(r.truncated);
    assert_eq!(r.body_size, 106);
}

#[test]
fn gap_exactly_rest_of_body() {
    let ms = ok(&[
        Ev::Data(C, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
        Ev::Gap(C, 7),
        Ev::Data(C, OK_5),
    ]);
    assert_eq!(statuses(&ms), [Some(200), Some(200)]);
    assert!(ms[0].truncated && !ms[1].truncated);
}

#[test]
fn mid_stream_start_in_a_body() {
    let ms = ok(&[
        Ev::Data(S, b"ata\":[1,2,3]}\r\n\r\nrest of form=1&x=2POST /api?k=v HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}"),
        Ev::Data(C, b"\x00\x9f\xffbinary tail of a png\x00\nmore\x01HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n!"),
    ]);
    assert_eq!(methods(&ms), ["POST"]);
    assert_eq!(ms[0].query.as_deref(), Some("k=?"));
    assert_eq!(statuses(&ms), [Some(200)]);
}

#[test]
fn mid_stream_false_start_line_is_skipped() {
    // Body text that looks like a status line but is not followed by headers.
    let ms = ok(&[Ev::Data(C, b"the server said HTTP/1.1 200 OK\r\nwhich was nice\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")]);
    assert_eq!(statuses(&ms), [Some(404)]);
}

#[test]
fn starting_from_a_response() {
    let ms = ok(&[
        Ev::Data(C, OK_5),
        Ev::Data(C, b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"),
    ]);
    assert_eq!(statuses(&ms), [Some(200), Some(500)]);
}

#[test]
fn garbage_where_a_start_line_must_be() {
    let mut req = GET.to_vec();
    req.extend_from_slice(b"\x16\x03\x01\x00\xa5");
    let e = err(&[Ev::Data(S, &req)]);
    assert_eq!(
        e,
        ParseError {
            reason: reason::BAD_REQUEST_LINE,
            offset: GET.len() as u64
        }
    );
    let mut resp = OK_5.to_vec();
    resp.extend_from_slice(b"\x00\x01garbage");
    assert_eq!(err(&[Ev::Data(C, &resp)]).reason, reason::BAD_STATUS_LINE);
    // Complete but malformed lines.
    let mut req = GET.to_vec();
    req.extend_from_slice(b"GET /a b HTTP/1.1\r\n\r\n");
    assert_eq!(err(&[Ev::Data(S, &req)]).reason, reason::BAD_REQUEST_LINE);
    let mut req = GET.to_vec();
    req.extend_from_slice(b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n");
    assert_eq!(err(&[Ev::Data(S, &req)]).reason, reason::BAD_HEADER);
    // The error repeats.
    let mut p = Parser::new(Limits::default());
    let mut out = Vec::new();
    let e = p.feed(S, 1, &req, &mut out).unwrap_err();
    assert_eq!(p.feed(S, 2, b"GET / HTTP/1.1\r\n\r\n", &mut out), Err(e));
}

#[test]
fn garbage_at_flow_start_is_skipped_then_fails() {
    let junk: Vec<u8> = (0..70_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 | 0x80)
        .collect();
    let o = host(Limits::default(), &[Ev::Data(S, &junk[..1000])], &mut |l| l);
    assert_eq!(
        o,
        Outcome {
            messages: vec![],
            error: None
        }
    );
    assert_eq!(err(&[Ev::Data(S, &junk)]).reason, reason::RESYNC_FAILED);
    assert_eq!(err(&[Ev::Data(C, &junk)]).reason, reason::RESYNC_FAILED);
}

#[test]
fn not_http1() {
    let preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    assert_eq!(err(&[Ev::Data(S, preface)]).reason, reason::NOT_HTTP1);
    assert_eq!(
        err(&[Ev::Data(S, b"GET /index.html\r\n")]).reason,
        reason::NOT_HTTP1
    );
    assert_eq!(
        err(&[Ev::Data(S, b"GET / HTTP/3.0\r\n\r\n")]).reason,
        reason::NOT_HTTP1
    );
    let mut req = GET.to_vec();
    req.extend_from_slice(b"GET / HTTP/2.0\r\n\r\n");
    assert_eq!(err(&[Ev::Data(S, &req)]).reason, reason::NOT_HTTP1);
}

#[test]
fn query_masking_and_targets() {
    assert_eq!(mask_query(b"a=1&b=xyz"), "a=?&b=?");
    assert_eq!(mask_query(b"flag&k=v=w&&=x&"), "flag&k=?&&=?&");
    let t = split_target(b"http://user:pw@example.com:8080/p/q?x=1#frag", false);
    assert_eq!(
        (t.path.as_deref(), t.query.as_deref()),
        (Some("/p/q"), Some("x=?"))
    );
    assert_eq!(t.authority.as_deref(), Some("example.com:8080"));
    let t = split_target(b"https://h?x=1", false);
    assert_eq!(
        (t.path.as_deref(), t.query.as_deref()),
        (Some("/"), Some("x=?"))
    );
    let t = split_target(b"/r?u=http://x/y", false);
    assert_eq!(
        (t.path.as_deref(), t.query.as_deref(), t.authority),
        (Some("/r"), Some("u=?"), None)
    );
    let t = split_target(b"/only?", false);
    assert_eq!((t.path.as_deref(), t.query), (Some("/only"), None));
    let ms = ok(&[Ev::Data(
        S,
        b"GET http://proxy.test/a?token=abc HTTP/1.1\r\nHost: other\r\n\r\n",
    )]);
    assert_eq!(ms[0].path.as_deref(), Some("/a"));
    assert_eq!(ms[0].query.as_deref(), Some("token=?"));
    assert_eq!(ms[0].host.as_deref(), Some("proxy.test"));
}

#[test]
fn any_token_is_a_method() {
    let ms = ok(&[Ev::Data(
        S,
        b"PROPFIND /dav HTTP/1.1\r\n\r\nM-SEARCH * HTTP/1.1\r\n\r\n",
    )]);
    assert_eq!(methods(&ms), ["PROPFIND", "M-SEARCH"]);
}

#[test]
fn header_limits() {
    let limits = Limits {
        max_header_bytes: 100,
        max_headers: 3,
    };
    let exact = b"GET / HTTP/1.1\r\nX-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    assert_eq!(exact.len(), 100);
    assert_eq!(check_with(limits, &[Ev::Data(S, exact)]).messages.len(), 1);
    let mut big = exact.to_vec();
    big.insert(30, b'a');
    let o = check_with(limits, &[Ev::Data(S, &big)]);
    assert_eq!(o.error.map(|e| e.reason), Some(reason::HEADER_TOO_LARGE));
    // Never completed: fails once the limit is reached instead of buffering.
    let mut open = exact[..96].to_vec();
    open.extend_from_slice(b"aaaaa");
    let o = check_with(limits, &[Ev::Data(S, &open)]);
    assert_eq!(o.error.map(|e| e.reason), Some(reason::HEADER_TOO_LARGE));
    let many = b"GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
    let o = check_with(limits, &[Ev::Data(S, many)]);
    assert_eq!(o.error.map(|e| e.reason), Some(reason::TOO_MANY_HEADERS));
    // Default limit: a 70 KiB header block.
    let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
    huge.resize(70_000, b'a');
    let o = host(Limits::default(), &[Ev::Data(S, &huge)], &mut |_| 1460);
    assert_eq!(o.error.map(|e| e.reason), Some(reason::HEADER_TOO_LARGE));
    // Trailers are bounded too.
    let mut t = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n".to_vec();
    t.resize(t.len() + 200, b'a');
    let o = check_with(limits, &[Ev::Data(C, &t)]);
    assert_eq!(o.error.map(|e| e.reason), Some(reason::HEADER_TOO_LARGE));
}

#[test]
fn transfer_encoding_rules() {
    // Obfuscated but final coding is chunked.
    for te in [
        &b",\tchunked,"[..],
        b"gzip, Chunked",
        b"chunked ",
        b"identity, chunked",
    ] {
        let mut req = b"POST / HTTP/1.1\r\nTransfer-Encoding: ".to_vec();
        req.extend_from_slice(te);
        req.extend_from_slice(b"\r\nContent-Length: 100\r\n\r\n2\r\nab\r\n0\r\n\r\n");
        let ms = ok(&[Ev::Data(S, &req)]);
        assert_eq!((ms.len(), ms[0].body_size), (1, 2), "{te:?}");
    }
    // Split over two header lines.
    let ms = ok(&[Ev::Data(S, b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")]);
    assert_eq!(ms.len(), 1);
    // A request whose final coding is not chunked cannot be framed.
    let e = err(&[Ev::Data(
        S,
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
    )]);
    assert_eq!(e.reason, reason::BAD_TRANSFER_ENCODING);
    // A response whose final coding is not chunked is close-delimited.
    let ms = ok(&[
        Ev::Data(
            C,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 1\r\n\r\nxyz",
        ),
        Ev::Close,
    ]);
    assert_eq!(ms[0].body_size, 3);
}

#[test]
fn content_length_rules() {
    let ms = ok(&[Ev::Data(
        S,
        b"POST / HTTP/1.1\r\nContent-Length: 3, 3\r\ncontent-length: 3\r\n\r\nabc",
    )]);
    assert_eq!(ms[0].body_size, 3);
    let mut first = GET.to_vec();
    first.extend_from_slice(
        b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
    );
    assert_eq!(
        err(&[Ev::Data(S, &first)]).reason,
        reason::CONFLICTING_CONTENT_LENGTH
    );
    let mut first = GET.to_vec();
    first.extend_from_slice(b"POST / HTTP/1.1\r\nContent-Length: +3\r\n\r\nabc");
    assert_eq!(
        err(&[Ev::Data(S, &first)]).reason,
        reason::BAD_CONTENT_LENGTH
    );
    let mut first = OK_5.to_vec();
    first.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n");
    assert_eq!(
        err(&[Ev::Data(C, &first)]).reason,
        reason::BAD_CONTENT_LENGTH
    );
}

#[test]
fn close_reports_unfinished_bodies_as_truncated() {
    let ms = ok(&[
        Ev::Data(S, b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"),
        Ev::Close,
    ]);
    assert_eq!(ms.len(), 1);
    assert!(ms[0].truncated);
    assert_eq!(ms[0].body_size, 3);
    // Incomplete header blocks are not messages.
    assert!(ok(&[Ev::Data(S, b"GET / HTTP/1.1\r\nHost"), Ev::Close]).is_empty());
    // After close everything is ignored.
    let mut p = Parser::new(Limits::default());
    let mut out = Vec::new();
    p.close(1, &mut out);
    assert_eq!(p.feed(S, 2, b"\x00\x01", &mut out), Ok(2));
    assert!(out.is_empty());
}

#[test]
fn pending_request_queue_is_bounded() {
    let one = b"HEAD / HTTP/1.1\r\n\r\n";
    let reqs = one.repeat(MAX_PENDING_REQUESTS + 10);
    let mut p = Parser::new(Limits::default());
    let mut out = Vec::new();
    assert_eq!(p.feed(S, 1, &reqs, &mut out), Ok(reqs.len()));
    assert_eq!(p.pending.len(), MAX_PENDING_REQUESTS);
}

/// Random mutations of valid traffic, random splits and gaps: never panics,
/// never consumes more than offered, never asks the host to buffer more than
/// a header block.
#[test]
fn fuzz_mutations_never_panic() {
    let (reqs, resps) = pipeline();
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    let limits = Limits {
        max_header_bytes: 256,
        max_headers: 8,
    };
    let (mut messages, mut errors) = (0, 0);
    for _ in 0..3000 {
        let mut streams = [reqs.clone(), resps.clone()];
        for s in &mut streams {
            for _ in 0..rng.below(6) {
                let i = rng.below(s.len());
                match rng.below(4) {
                    0 => s[i] = rng.next() as u8,
                    1 => s[i] = b"\r\n:; 0aF\t,"[rng.below(10)],
                    2 => {
                        s.remove(i);
                    }
                    _ => s.insert(i, rng.next() as u8),
                }
            }
        }
        let mut events = Vec::new();
        let (mut a, mut b) = (&streams[0][..], &streams[1][..]);
        while !a.is_empty() || !b.is_empty() {
            let (dir, src) = if rng.below(2) == 0 {
                (S, &mut a)
            } else {
                (C, &mut b)
            };
            let n = rng.below(src.len() + 1).min(40);
            let (now, later) = src.split_at(n);
            *src = later;
            events.push(Ev::Data(dir, now));
            if rng.below(20) == 0 {
                events.push(Ev::Gap(dir, rng.below(50) as u64));
            }
        }
        events.push(Ev::Close);
        let whole = host(limits, &events, &mut |l| l);
        let split = host(limits, &events, &mut |l| 1 + rng.below(l));
        assert_eq!(whole, split);
        assert_eq!(whole, host(limits, &events, &mut |_| 1));
        messages += whole.messages.len();
        errors += usize::from(whole.error.is_some());
    }
    // The mutations exercise both outcomes.
    assert!(
        messages > 3000 && errors > 300,
        "{messages} messages, {errors} errors"
    );
}
