//! Unit tests for the HTTP/1.x parser. Every scenario is also replayed with
//! byte-by-byte and random split points through a simulated host that keeps
//! the unconsumed remainder, and must give identical results.

use super::*;
use wasmtap_sdk::testing::{self, Event, Rng};

/// One host call (the SDK's simulated host: `wasmtap_sdk::testing`).
type Ev<'a> = Event<'a, Dir>;
use Dir::{ToClient as C, ToServer as S};

type Outcome = testing::Outcome<Message, ParseError>;

/// Runs `events` whole, byte by byte and with many random splits; all must
/// agree. Returns the outcome.
fn check_with(limits: Limits, events: &[Ev<'_>]) -> Outcome {
    testing::check_rounds(|| Parser::new(limits), events, limits.max_header_bytes, 100)
}

/// One run of the simulated host with pieces chosen by `piece`.
fn host(limits: Limits, events: &[Ev<'_>], piece: &mut dyn FnMut(usize) -> usize) -> Outcome {
    testing::run(
        &mut Parser::new(limits),
        events,
        limits.max_header_bytes,
        piece,
    )
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
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n\x00\x00\x12\x04\x00binary",
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
    // Complete but malformed lines that are not text (malformed text lines
    // are requests: see `malformed_textual_request_lines_are_requests`).
    let mut req = GET.to_vec();
    req.extend_from_slice(b"GET /a\x01b HTTP/1.1\r\n\r\n");
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
    // An incomplete start line is not a message (for a complete one see
    // `header_block_cut_by_close_is_reported`).
    assert!(ok(&[Ev::Data(S, b"GET / HTTP/1.1"), Ev::Close]).is_empty());
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
                    0 => s[i] = rng.next_u64() as u8,
                    1 => s[i] = b"\r\n:; 0aF\t,"[rng.below(10)],
                    2 => {
                        s.remove(i);
                    }
                    _ => s.insert(i, rng.next_u64() as u8),
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

/// Request lines of Zeek's `http-methods.pcap` (one request per flow, each
/// answered by the server) and the request each must give: method, path,
/// version.
const ZEEK_LINES: [(&[u8], &str, Option<&str>, &str); 17] = [
    (b"OPTIONS * HTTP/1.1", "OPTIONS", Some("*"), "1.1"),
    (b"OPTIONS HTTP/1.1", "OPTIONS", None, "1.1"),
    (b"OPTIONSHTTP/1.1", "OPTIONSHTTP/1.1", None, ""),
    (b"OPTIONS", "OPTIONS", None, ""),
    (b"GET / HTTP/1.", "GET", Some("/"), ""),
    (b"GET /HTTP/1.1", "GET", Some("/HTTP/1.1"), ""),
    (b"GET/ HTTP/1.1", "GET/", None, "1.1"),
    (b"GET/HTTP/1.1", "GET/HTTP/1.1", None, ""),
    (b"\xc3\x83\xc3\x82\xc3\x83 / HTTP/1.", "ÃÂÃ", Some("/"), ""),
    (
        b"\xc3\x83\xc3\x82\xc3\x83 /HTTP/1.1",
        "ÃÂÃ",
        Some("/HTTP/1.1"),
        "",
    ),
    (b"\xc3\x83\xc3\x82\xc3\x83/ HTTP/1.1", "ÃÂÃ/", None, "1.1"),
    (
        b"\xc3\x83\xc3\x82\xc3\x83/HTTP/1.1",
        "ÃÂÃ/HTTP/1.1",
        None,
        "",
    ),
    (b"CCM_POST / HTTP/1.", "CCM_POST", Some("/"), ""),
    (b"CONNECT / HTTP/1.", "CONNECT", Some("/"), ""),
    (b"HEAD /HTTP/1.1", "HEAD", Some("/HTTP/1.1"), ""),
    // Not from the capture: extra words, tabs, runs of spaces, bad UTF-8.
    (b"GET /a b HTTP/1.1", "GET", Some("/a"), "1.1"),
    (
        b"\xff\xfe  /q?k=v\tHTTP/1.0",
        "\u{fffd}\u{fffd}",
        Some("/q"),
        "1.0",
    ),
];

#[test]
fn malformed_textual_request_lines_are_requests() {
    let bad_request = b"HTTP/1.0 400 Bad Request\r\nContent-Length: 3\r\n\r\nbad";
    let head_answer = b"HTTP/1.0 400 Bad Request\r\nContent-Length: 925\r\n\r\n";
    for (line, method, path, version) in ZEEK_LINES {
        for eol in [&b"\n"[..], b"\r\n"] {
            let req = [line, eol, b"Host: www.google.com", eol, eol].concat();
            // A response to HEAD has no body: the request is in the queue.
            let resp = if method == "HEAD" {
                &head_answer[..]
            } else {
                bad_request
            };
            // As the first bytes of the flow (like the capture), and after
            // an exchange.
            let mut later = GET.to_vec();
            later.extend_from_slice(&req);
            let mut answers = OK_5.to_vec();
            answers.extend_from_slice(resp);
            for (reqs, resps, skip) in [(&req, resp, 0), (&later, &answers[..], 1)] {
                let ms = ok(&[Ev::Data(S, reqs), Ev::Data(C, resps), Ev::Close]);
                let what = String::from_utf8_lossy(line);
                assert_eq!(ms.len(), 2 + 2 * skip, "{what}: {ms:#?}");
                let r = ms.iter().filter(|m| m.kind == Kind::Request).nth(skip);
                let r = r.expect("request");
                assert_eq!(r.method.as_deref(), Some(method), "{what}");
                assert_eq!(r.path.as_deref(), path, "{what}");
                assert_eq!(r.version, version, "{what}");
                assert_eq!(r.host.as_deref(), Some("www.google.com"), "{what}");
                assert_eq!((r.size, r.body_size), (req.len() as u64, 0), "{what}");
                assert!(!r.truncated, "{what}");
                let s = responses(&ms)[skip];
                assert_eq!(s.status_code, Some(400), "{what}");
                assert!(!s.truncated, "{what}");
                let body = if method == "HEAD" { 0 } else { 3 };
                assert_eq!(s.body_size, body, "{what}");
            }
        }
    }
    let ms = ok(&[Ev::Data(
        S,
        b"\xff\xfe  /q?k=v\tHTTP/1.0\r\nHost: h\r\n\r\n",
    )]);
    assert_eq!(ms[0].query.as_deref(), Some("k=?"));
}

#[test]
fn lenient_requests_fields_and_framing() {
    let reqs = [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        // Header lines without a colon, with a bad name, or folding onto a
        // skipped line are ignored; Content-Length frames the body.
        b"POST / HTTP/1.\r\nno colon\r\n: empty name\r\nBad Name: v\r\n folded\r\nHost: h\r\nUser-Agent: ua\r\n  more\r\nContent-Length: 3\r\n\r\nabc",
        // An invalid Content-Length means no body.
        b"PUT / HTTP/1.\r\nContent-Length: x\r\n\r\n",
        // So do conflicting ones, and a final coding other than chunked.
        b"PUT / HTTP/1.\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"PUT / HTTP/1.\r\nTransfer-Encoding: gzip\r\n\r\n",
        // A fold before any field is skipped; a final chunked coding frames.
        b"PATCH / HTTP/1.\r\n folded first\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nz\r\n0\r\n\r\n",
        b"GET /end HTTP/1.1\r\n\r\n",
    ]
    .concat();
    let ms = ok(&[Ev::Data(S, &reqs)]);
    assert_eq!(
        methods(&ms),
        ["GET", "POST", "PUT", "PUT", "PUT", "PATCH", "GET"]
    );
    let bodies: Vec<_> = ms.iter().map(|m| m.body_size).collect();
    assert_eq!(bodies, [0, 3, 0, 0, 0, 1, 0]);
    assert_eq!(ms[1].host.as_deref(), Some("h"));
    assert_eq!(ms[1].user_agent.as_deref(), Some("ua more"));
    assert_eq!(ms[1].version, "");
    assert_eq!(ms[6].path.as_deref(), Some("/end"));
    assert_eq!(ms.iter().map(|m| m.size).sum::<u64>(), reqs.len() as u64);
    // Lenient requests join the queue: the HEAD's response has no body.
    let ms = ok(&[
        Ev::Data(
            S,
            b"GET / HTTP/1.1\r\n\r\nHEAD / HTTP/1.\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\n\r\n",
        ),
        Ev::Data(
            C,
            &[
                OK_5,
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                OK_5,
            ]
            .concat(),
        ),
    ]);
    assert_eq!(statuses(&ms), [Some(200); 3]);
    let bodies: Vec<_> = responses(&ms).iter().map(|m| m.body_size).collect();
    assert_eq!(bodies, [5, 0, 5]);
}

#[test]
fn lenient_line_length_limit() {
    // The line (LF included) must fit in 8 KiB.
    for (len, fits) in [(MAX_LENIENT_LINE, true), (MAX_LENIENT_LINE + 1, false)] {
        let mut req = GET.to_vec();
        let mut line = b"GET /".to_vec();
        line.resize(len - 3, b'a');
        line.extend_from_slice(b" x\n");
        assert_eq!(line.len(), len);
        line.push(b'\n');
        req.extend_from_slice(&line);
        for piece in [usize::MAX, 1460] {
            let o = host(Limits::default(), &[Ev::Data(S, &req)], &mut |l| {
                l.min(piece)
            });
            if fits {
                assert_eq!(o.error, None);
                assert_eq!(methods(&o.messages), ["GET", "GET"]);
                assert_eq!(o.messages[1].size, line.len() as u64);
            } else {
                let e = ParseError {
                    reason: reason::BAD_REQUEST_LINE,
                    offset: GET.len() as u64,
                };
                assert_eq!(o.error, Some(e));
            }
        }
    }
    // With a smaller header limit, that limit applies.
    let limits = Limits {
        max_header_bytes: 64,
        max_headers: 8,
    };
    let mut req = b"GET / HTTP/1.1\r\n\r\nGET / ".to_vec();
    req.resize(req.len() + 70, b'x');
    let o = check_with(limits, &[Ev::Data(S, &req)]);
    assert_eq!(
        o.error.map(|e| (e.reason, e.offset)),
        Some((reason::BAD_REQUEST_LINE, 18))
    );
}

#[test]
fn garbage_is_still_not_a_request() {
    let at = GET.len() as u64;
    for junk in [
        &b"GET / HTTP/1.\x01\r\n\r\n"[..],
        b"GET /\rx HTTP/1.1\r\n\r\n",
        b"GET\x00 / HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x00\xa5\n\n",
        b"\x1b[0m\r\n\r\n",
        // A status line in the request direction.
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        // Only spaces.
        b"  \t \r\n\r\n",
    ] {
        let req = [GET, junk].concat();
        let e = err(&[Ev::Data(S, &req)]);
        assert_eq!(
            (e.reason, e.offset),
            (reason::BAD_REQUEST_LINE, at),
            "{junk:?}"
        );
    }
    // Malformed header lines after a valid request line stay errors.
    let req = [GET, b"GET / HTTP/1.1\r\nBad Header: x\r\n\r\n"].concat();
    assert_eq!(err(&[Ev::Data(S, &req)]).reason, reason::BAD_HEADER);
    // Other HTTP versions and the HTTP/2 preface stay `not-http1`.
    for line in [
        &b"GET / HTTP/2.0\r\n\r\n"[..],
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
    ] {
        assert_eq!(err(&[Ev::Data(S, line)]).reason, reason::NOT_HTTP1);
        let req = [GET, line].concat();
        assert_eq!(err(&[Ev::Data(S, &req)]).reason, reason::NOT_HTTP1);
    }
    // A textual line not yet ended is awaited, not an error.
    let req = [GET, b"GET / HTTP/1.x"].concat();
    assert_eq!(ok(&[Ev::Data(S, &req)]).len(), 1);
}

#[test]
fn lenient_lines_at_flow_start_must_look_like_requests() {
    // A flow captured mid-body still resynchronises on the next real start
    // line instead of taking text for a request.
    for (data, path) in [
        // No header line and no HTTP/1.
        (&b"some text here\r\n\r\nGET /real HTTP/1.1\r\nHost: a\r\n\r\n"[..], "/real"),
        (b"OPTIONS\r\n\r\nGET /o HTTP/1.1\r\n\r\n", "/o"),
        // Not a method-like first word.
        (b"--boundary\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nvalue\r\nPOST /x HTTP/1.1\r\n\r\n", "/x"),
        (b"ata\":[1]}\r\nA: b\r\n\r\nGET /j HTTP/1.1\r\n\r\n", "/j"),
        // A valid request line later in the line wins.
        (b"form=1&x=2POST /api HTTP/1.1\r\nHost: a\r\n\r\n", "/api"),
        // Header lines that are not fields, or not text.
        (b"Lorem ipsum\r\nnot a header\r\n\r\nGET /l HTTP/1.1\r\n\r\n", "/l"),
        (b"FOO / HTTP/1.\r\nX: \x01\r\n\r\nGET /b HTTP/1.1\r\n\r\n", "/b"),
        // A status line.
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nGET /s HTTP/1.1\r\n\r\n", "/s"),
    ] {
        let ms = ok(&[Ev::Data(S, data)]);
        let what = String::from_utf8_lossy(data);
        assert_eq!(ms.len(), 1, "{what}: {ms:#?}");
        assert_eq!(ms[0].path.as_deref(), Some(path), "{what}");
    }
    // A lenient line whose header block never ends is a false start, not
    // an error.
    let limits = Limits {
        max_header_bytes: 64,
        max_headers: 8,
    };
    let mut data = b"FOO / HTTP/1.\r\nX: ".to_vec();
    data.resize(200, b'a');
    data.extend_from_slice(b"\r\n\r\nGET /after HTTP/1.1\r\n\r\n");
    let o = check_with(limits, &[Ev::Data(S, &data)]);
    assert_eq!(o.error, None);
    assert_eq!(methods(&o.messages), ["GET"]);
    // Not after a gap (only where a message is known to start).
    let ms = ok(&[
        Ev::Data(S, GET),
        Ev::Gap(S, 10),
        Ev::Data(
            S,
            b"OPTIONS HTTP/1.1\r\nHost: h\r\n\r\nGET /z HTTP/1.1\r\n\r\n",
        ),
    ]);
    assert_eq!(methods(&ms), ["GET", "GET"]);
    assert_eq!(ms[1].path.as_deref(), Some("/z"));
}

#[test]
fn no_lenient_requests_while_an_upgrade_is_pending() {
    // The client may already speak the new protocol: ignored, as before.
    let ms = ok(&[Ev::Data(
        S,
        b"GET / HTTP/1.1\r\nUpgrade: foo\r\n\r\nHELLO foo/1\r\nX: y\r\n\r\n",
    )]);
    assert_eq!(methods(&ms), ["GET"]);
}

#[test]
fn header_block_cut_by_close_is_reported() {
    // DeepFlow's istio-tcp-frag.pcap: a request, then only the first segment
    // of the response's header block.
    let ms = ok(&[
        Ev::Data(S, GET),
        Ev::Data(C, b"HTTP/1.0 200 OK\r\n"),
        Ev::Close,
    ]);
    assert_eq!(ms.len(), 2);
    let r = &ms[1];
    assert_eq!(r.kind, Kind::Response);
    assert_eq!((r.status_code, r.version), (Some(200), "1.0"));
    assert_eq!((r.size, r.body_size, r.truncated), (17, 0, true));
    // Without close, nothing yet.
    assert_eq!(
        ok(&[Ev::Data(S, GET), Ev::Data(C, b"HTTP/1.0 200 OK\r\n")]).len(),
        1
    );
    // Requests too; complete header lines are parsed, the cut one is not.
    let req = b"GET /x?a=1 HTTP/1.1\r\nHost: h\r\nUser-Agent: u\r\nAcc";
    let ms = ok(&[Ev::Data(S, req), Ev::Close]);
    assert_eq!(ms.len(), 1);
    let q = &ms[0];
    assert_eq!(
        (q.method.as_deref(), q.path.as_deref(), q.query.as_deref()),
        (Some("GET"), Some("/x"), Some("a=?"))
    );
    assert_eq!(
        (q.host.as_deref(), q.user_agent.as_deref()),
        (Some("h"), Some("u"))
    );
    assert_eq!(
        (q.size, q.body_size, q.truncated),
        (req.len() as u64, 0, true)
    );
    // Interim responses count into the cut final one.
    let resp = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 10\r\nSer";
    let ms = ok(&[Ev::Data(S, GET), Ev::Data(C, resp), Ev::Close]);
    assert_eq!(statuses(&ms), [Some(404)]);
    assert_eq!((ms[1].size, ms[1].truncated), (resp.len() as u64, true));
    // Both directions cut: request first.
    let ms = ok(&[
        Ev::Data(S, b"GET / HTTP/1.1\r\n"),
        Ev::Data(C, b"HTTP/1.1 204 No Content\r\n"),
        Ev::Close,
    ]);
    assert_eq!(
        ms.iter().map(|m| m.kind).collect::<Vec<_>>(),
        [Kind::Request, Kind::Response]
    );
    // A head completed later is reported once, normally.
    let ms = ok(&[
        Ev::Data(S, GET),
        Ev::Data(C, b"HTTP/1.1 200 OK\r\n"),
        Ev::Data(C, b"Content-Length: 0\r\n\r\n"),
        Ev::Close,
    ]);
    assert_eq!(statuses(&ms), [Some(200)]);
    assert!(!ms[1].truncated);
}

#[test]
fn cut_header_blocks_not_reported() {
    for events in [
        // No complete line.
        &[Ev::Data(C, b"HTTP/1.1 200 O"), Ev::Close][..],
        &[Ev::Data(S, b"GET / HTTP/1.1"), Ev::Close],
        // Not a valid start line, or a complete header line is invalid.
        &[
            Ev::Data(C, b"HTTP/1.1 200 OK\r\nwhich was nice\r\nmore"),
            Ev::Close,
        ],
        &[
            Ev::Data(S, b"GET / HTTP/1.1\r\nBad Header: x\r\nmore"),
            Ev::Close,
        ],
        &[Ev::Data(S, b"GET / HTTP/1.\r\nHost: h\r\n"), Ev::Close],
        &[Ev::Data(S, b"OPTIONS HTTP/1.1\r\nHost: h\r\n"), Ev::Close],
        // An interim response.
        &[Ev::Data(C, b"HTTP/1.1 100 Continue\r\nX: y\r\n"), Ev::Close],
        // A gap after it.
        &[
            Ev::Data(C, b"HTTP/1.1 200 OK\r\n"),
            Ev::Gap(C, 5),
            Ev::Close,
        ],
    ] {
        let ms = ok(events);
        assert!(ms.is_empty(), "{ms:#?}");
    }
    // A body in progress is reported as such, not as a cut head.
    let ms = ok(&[
        Ev::Data(C, b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab"),
        Ev::Close,
    ]);
    assert_eq!(ms.len(), 1);
    assert_eq!((ms[0].body_size, ms[0].truncated), (2, true));
}

#[test]
fn cut_head_copy_is_bounded_incremental_and_off_the_hot_path() {
    let mut p = Parser::new(Limits::default());
    let mut out = Vec::new();
    // Complete messages never copy.
    let (reqs, resps) = pipeline();
    assert_eq!(p.feed(S, 1, &reqs, &mut out), Ok(reqs.len()));
    assert_eq!(p.feed(C, 1, &resps, &mut out), Ok(resps.len()));
    assert_eq!(
        (p.req.cut_head.capacity(), p.resp.cut_head.capacity()),
        (0, 0)
    );
    // Nor does an incomplete first line.
    let line = b"HTTP/1.1 200 OK";
    assert_eq!(p.feed(C, 2, line, &mut out), Ok(0));
    assert_eq!(p.resp.cut_head.capacity(), 0);
    // Byte by byte, as the host re-offers the remainder: the copy follows
    // it once a line is complete.
    let head = b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Le";
    for n in line.len()..=head.len() {
        assert_eq!(p.feed(C, 3 + n as u64, &head[..n], &mut out), Ok(0));
        let expect: &[u8] = if n > 16 { &head[..n] } else { b"" };
        assert_eq!(p.resp.cut_head, expect, "{n}");
    }
    let n = out.len();
    p.close(99, &mut out);
    let r = &out[n];
    assert_eq!(
        (r.status_code, r.size, r.truncated),
        (Some(200), head.len() as u64, true)
    );
    // First offered at 2 (the remainder's first byte), completed by close.
    assert_eq!((r.start_ns, r.end_ns), (2, 99));
}

/// Random near-textual request lines (at the flow's start and after an
/// exchange) and header blocks cut at random points: the outcome never
/// depends on how the bytes are split, nothing panics, and the host never
/// buffers more than a header block.
#[test]
fn fuzz_lenient_lines_and_cut_heads() {
    const ALPHABET: &[u8] = b"GETPOSHAD/ HTTP/1.1 *?=&:\t\r\n\xc3\x83\x00\x01-_x";
    let mut rng = Rng(0x0123_4567_89AB_CDEF);
    let limits = Limits {
        max_header_bytes: 128,
        max_headers: 4,
    };
    let (mut requests, mut errors) = (0, 0);
    for round in 0..400 {
        let mut line: Vec<u8> = (0..rng.below(24))
            .map(|_| ALPHABET[rng.below(ALPHABET.len())])
            .collect();
        line.extend_from_slice(if rng.below(2) == 0 { b"\r\n" } else { b"\n" });
        for _ in 0..rng.below(3) {
            line.extend_from_slice(
                [&b"Host: h\r\n"[..], b"no colon\n", b"Content-Length: 2\r\n"][rng.below(3)],
            );
        }
        if rng.below(4) != 0 {
            line.extend_from_slice(b"\r\nab");
        }
        let mut later = GET.to_vec();
        later.extend_from_slice(&line);
        let cut = rng.below(later.len() + 1);
        for reqs in [&line[..], &later[..], &later[..cut]] {
            let resp = &OK_5[..rng.below(OK_5.len() + 1)];
            let events = [Ev::Data(S, reqs), Ev::Data(C, resp), Ev::Close];
            let o = check_with(limits, &events);
            // Requests other than `GET`'s: from the random lines.
            requests += o
                .messages
                .iter()
                .filter(|m| m.kind == Kind::Request && m.path.as_deref() != Some("/index.html"))
                .count();
            errors += usize::from(o.error.is_some());
            assert!(
                o.messages
                    .iter()
                    .all(|m| m.size <= reqs.len().max(resp.len()) as u64),
                "round {round}: {o:#?}"
            );
        }
    }
    assert!(
        requests > 100 && errors > 100,
        "{requests} requests, {errors} errors"
    );
}

/// The client's bytes of each of the 4 connections of Zeek's
/// `ipv6-http-atomic-frag.pcap`: an HTTP/0.9 simple request.
const ZEEK_09_REQUEST: &[u8] = b"GET /bad.html\r\n";
/// The server's bytes: raw HTML, then the server closes the connection.
const ZEEK_09_RESPONSE: &[u8] = b"<html>\n\t<head>\n\t\t<title>Bad!</title>\n\t</head>\n\n\t<body>\n\t\t<h1>Bad!</h1>\n\t</body>\n</html>\n";

/// Asserts an HTTP/0.9 request for `path` of `size` bytes.
fn assert_simple_request(m: &Message, path: &str, size: usize) {
    assert_eq!(m.kind, Kind::Request);
    assert_eq!(m.method.as_deref(), Some("GET"));
    assert_eq!(m.path.as_deref(), Some(path));
    assert_eq!(m.version, "0.9");
    assert_eq!((m.size, m.body_size), (size as u64, 0));
    assert_eq!((m.status_code, m.host.as_deref()), (None, None));
    assert!(!m.truncated);
}

/// Asserts an HTTP/0.9 response of `body` bytes.
fn assert_simple_response(m: &Message, body: usize, truncated: bool) {
    assert_eq!(m.kind, Kind::Response);
    assert_eq!(m.status_code, None);
    assert_eq!(m.version, "0.9");
    assert_eq!((m.size, m.body_size), (body as u64, body as u64));
    assert_eq!(m.truncated, truncated);
}

#[test]
fn http09_zeek_atomic_frag() {
    assert_eq!(ZEEK_09_REQUEST.len(), 15);
    assert_eq!(ZEEK_09_RESPONSE.len(), 88);
    let body = ZEEK_09_RESPONSE.len();
    let (a, b) = ZEEK_09_RESPONSE.split_at(20);
    let (b, c) = b.split_at(41);
    for events in [
        // The request, the response, the server's FIN.
        &[
            Ev::Data(S, ZEEK_09_REQUEST),
            Ev::Data(C, ZEEK_09_RESPONSE),
            Ev::Close,
        ][..],
        // The capture's first connection: the response is captured first.
        &[
            Ev::Data(C, ZEEK_09_RESPONSE),
            Ev::Data(S, ZEEK_09_REQUEST),
            Ev::Close,
        ],
        // The response in several segments.
        &[
            Ev::Data(S, ZEEK_09_REQUEST),
            Ev::Data(C, a),
            Ev::Data(C, b),
            Ev::Data(C, c),
            Ev::Close,
        ],
        // Part before the request, part after.
        &[
            Ev::Data(C, a),
            Ev::Data(S, ZEEK_09_REQUEST),
            Ev::Data(C, b),
            Ev::Data(C, c),
            Ev::Close,
        ],
    ] {
        let ms = ok(events);
        assert_eq!(ms.len(), 2, "{ms:#?}");
        assert_simple_request(&ms[0], "/bad.html", ZEEK_09_REQUEST.len());
        assert_simple_response(&ms[1], body, false);
    }
    // Nothing of the response is reported before the connection closes.
    let ms = ok(&[Ev::Data(S, ZEEK_09_REQUEST), Ev::Data(C, ZEEK_09_RESPONSE)]);
    assert_eq!(ms.len(), 1);
    assert_eq!(ms[0].kind, Kind::Request);
}

#[test]
fn http09_response_is_everything_until_close() {
    // Body text that looks like HTTP is body, and body bytes are consumed as
    // they stream (the simulated host checks it never buffers them).
    let segments: [&[u8]; 4] = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        b"GET /x\r\n\r\nGET /y HTTP/1.1\r\n\r\n",
        b"\x00\x01\xff binary",
        &[b'z'; 200_000],
    ];
    let total: usize = segments.iter().map(|s| s.len()).sum();
    let mut events = vec![Ev::Data(S, b"GET /\n")];
    events.extend(segments.iter().map(|s| Ev::Data(C, s)));
    // The request direction is ignored after an HTTP/0.9 request.
    events.push(Ev::Data(S, b"GET /ignored HTTP/1.1\r\n\r\n\x16\x03\x01"));
    events.push(Ev::Close);
    let ms = ok(&events);
    assert_eq!(ms.len(), 2, "{ms:#?}");
    assert_simple_request(&ms[0], "/", 6);
    assert_simple_response(&ms[1], total, false);
    // Later calls are ignored.
    let mut p = Parser::new(Limits::default());
    let mut out = Vec::new();
    assert_eq!(p.feed(S, 1, b"GET /a\r\n", &mut out), Ok(8));
    assert_eq!(p.feed(S, 2, b"junk\x00", &mut out), Ok(5));
    assert_eq!(p.gap(S, 10, &mut out), Ok(()));
    assert_eq!(out.len(), 1);
}

#[test]
fn http09_request_fields_and_timestamps() {
    let ms = ok(&[Ev::Data(S, b"GET /a/b?c=1&d\n"), Ev::Close]);
    // No response seen: only the request.
    assert_eq!(ms.len(), 1);
    assert_simple_request(&ms[0], "/a/b", 15);
    assert_eq!(ms[0].query.as_deref(), Some("c=?&d"));
    let mut p = Parser::new(Limits::default());
    let mut out = Vec::new();
    assert_eq!(p.feed(S, 10, b"GET /t", &mut out), Ok(0));
    assert_eq!(p.feed(S, 20, b"GET /t\r\n", &mut out), Ok(8));
    assert_eq!(p.feed(C, 30, b"<p>", &mut out), Ok(3));
    assert_eq!(p.feed(C, 40, b"hi</p>", &mut out), Ok(6));
    p.close(50, &mut out);
    let times: Vec<_> = out.iter().map(|m| (m.start_ns, m.end_ns)).collect();
    assert_eq!(times, [(10, 20), (30, 50)]);
    // A response captured before its request starts at its first byte.
    let mut p = Parser::new(Limits::default());
    let mut out = Vec::new();
    assert_eq!(p.feed(C, 5, b"<p>hi", &mut out), Ok(5));
    assert_eq!(p.feed(C, 6, b"</p>HTTP/1.", &mut out), Ok(4));
    assert_eq!(p.feed(S, 7, ZEEK_09_REQUEST, &mut out), Ok(15));
    p.close(9, &mut out);
    let times: Vec<_> = out.iter().map(|m| (m.start_ns, m.end_ns)).collect();
    assert_eq!(times, [(7, 7), (5, 9)]);
    // The remainder left unconsumed (`HTTP/1.`) is body too.
    assert_simple_response(&out[1], 16, false);
}

#[test]
fn http09_after_http1_exchanges() {
    // A simple request where a message starts, after a keep-alive exchange
    // (and empty lines): its response follows the first one's.
    let reqs = [GET, b"\r\nGET /old\r\n", b"HEAD / HTTP/1.1\r\n\r\n"].concat();
    let resps = [OK_5, ZEEK_09_RESPONSE].concat();
    let ms = ok(&[Ev::Data(S, &reqs), Ev::Data(C, &resps), Ev::Close]);
    assert_eq!(methods(&ms), ["GET", "GET"]);
    assert_eq!(statuses(&ms), [Some(200), None]);
    assert_simple_request(&ms[1], "/old", 10);
    assert_simple_response(&ms[3], ZEEK_09_RESPONSE.len(), false);
    // Two pipelined HTTP/1.1 requests, then a simple one.
    let reqs = [GET, GET, b"GET /old\r\n"].concat();
    let ms = ok(&[
        Ev::Data(S, &reqs),
        Ev::Data(C, OK_5),
        Ev::Data(C, &resps),
        Ev::Close,
    ]);
    assert_eq!(statuses(&ms), [Some(200), Some(200), None]);
    assert_simple_response(responses(&ms)[2], ZEEK_09_RESPONSE.len(), false);
}

#[test]
fn http09_gaps() {
    // A hole in the response: counted, and the response is truncated.
    let ms = ok(&[
        Ev::Data(S, ZEEK_09_REQUEST),
        Ev::Data(C, b"abc"),
        Ev::Gap(C, 100),
        Ev::Data(C, b"de"),
        Ev::Close,
    ]);
    assert_simple_response(&ms[1], 105, true);
    // A hole where the response starts.
    let ms = ok(&[
        Ev::Data(S, ZEEK_09_REQUEST),
        Ev::Gap(C, 7),
        Ev::Data(C, b"de"),
        Ev::Close,
    ]);
    assert_simple_response(&ms[1], 9, true);
    // Bytes the host drops at a hole are body too.
    let mut p = Parser::new(Limits::default());
    let mut out = Vec::new();
    assert_eq!(p.feed(C, 1, b"HTTP/1.", &mut out), Ok(0));
    assert_eq!(p.feed(S, 2, ZEEK_09_REQUEST, &mut out), Ok(15));
    assert_eq!(p.gap(C, 3, &mut out), Ok(()));
    p.close(4, &mut out);
    assert_eq!(out.len(), 2);
    assert_simple_response(&out[1], 10, true);
    assert_eq!(out[1].start_ns, 1);
    // A hole in the request direction after a simple request is ignored.
    let ms = ok(&[
        Ev::Data(S, ZEEK_09_REQUEST),
        Ev::Gap(S, 5),
        Ev::Data(S, b"GET / HTTP/1.1\r\n\r\n"),
        Ev::Data(C, b"x"),
        Ev::Close,
    ]);
    assert_eq!(ms.len(), 2);
    assert_simple_response(&ms[1], 1, false);
}

#[test]
fn http09_only_where_a_message_starts() {
    // Mid-stream starts: body text like `GET /x` is skipped, not a request.
    for (data, path) in [
        (
            &b"ody text\r\nGET /x\r\n\r\nGET /real HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            "/real",
        ),
        (b"xGET /x\r\nGET /r HTTP/1.1\r\n\r\n", "/r"),
        (b"\r\nGET /x\r\nGET /r HTTP/1.1\r\n\r\n", "/r"),
    ] {
        let ms = ok(&[Ev::Data(S, data)]);
        let what = String::from_utf8_lossy(data);
        assert_eq!(ms.len(), 1, "{what}: {ms:#?}");
        assert_eq!(ms[0].path.as_deref(), Some(path), "{what}");
        assert_eq!(ms[0].version, "1.1", "{what}");
    }
    // Nor after a gap, nor inside a body.
    let ms = ok(&[
        Ev::Data(S, GET),
        Ev::Gap(S, 10),
        Ev::Data(S, b"GET /x\r\nGET /z HTTP/1.1\r\n\r\n"),
        Ev::Data(
            S,
            b"POST /p HTTP/1.1\r\nContent-Length: 8\r\n\r\nGET /b\r\n",
        ),
    ]);
    assert_eq!(methods(&ms), ["GET", "GET", "POST"]);
    assert_eq!(ms[1].path.as_deref(), Some("/z"));
    assert_eq!(ms[2].body_size, 8);
    // The response direction is unaffected by body text either.
    let ms = ok(&[
        Ev::Data(
            S,
            b"POST /p HTTP/1.1\r\nContent-Length: 8\r\n\r\nGET /b\r\n",
        ),
        Ev::Data(S, GET),
        Ev::Data(C, OK_5),
        Ev::Data(C, OK_5),
        Ev::Close,
    ]);
    assert_eq!(statuses(&ms), [Some(200), Some(200)]);
}

#[test]
fn http09_shape_is_exact() {
    // Other methods, targets not starting with `/`, extra spaces or words:
    // not simple requests (lenient or awaited like any malformed line).
    for line in [
        &b"POST /x\r\n"[..],
        b"HEAD /x\r\n",
        b"get /x\r\n",
        b"GET x\r\n",
        b"GET *\r\n",
        b"GET  /x\r\n",
        b"GET /x \r\n",
        b"GET /a b\r\n",
        b"GET\t/x\r\n",
    ] {
        let what = String::from_utf8_lossy(line);
        let o = check(&[Ev::Data(S, line), Ev::Close]);
        assert!(
            o.messages.iter().all(|m| m.version != "0.9"),
            "{what}: {o:#?}"
        );
        let req = [GET, line].concat();
        let o = check(&[Ev::Data(S, &req), Ev::Close]);
        assert!(
            o.messages.iter().all(|m| m.version != "0.9"),
            "{what}: {o:#?}"
        );
    }
    // `GET /HTTP/1.1` with headers stays a malformed HTTP/1 request.
    let ms = ok(&[Ev::Data(S, b"GET /HTTP/1.1\r\nHost: h\r\n\r\n")]);
    assert_eq!(ms.len(), 1);
    assert_eq!((ms[0].version, ms[0].host.as_deref()), ("", Some("h")));
    // HTTP/2 stays `not-http1`, at the start and between messages.
    for line in [
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..],
        b"GET / HTTP/2.0\r\n\r\n",
        b"GET /x HTTP/3.0\r\nHost: h\r\n\r\n",
    ] {
        assert_eq!(err(&[Ev::Data(S, line)]).reason, reason::NOT_HTTP1);
        let req = [GET, line].concat();
        assert_eq!(err(&[Ev::Data(S, &req)]).reason, reason::NOT_HTTP1);
    }
    // A simple request line with headers after it: the request is reported
    // at its line's end; the rest is ignored.
    let ms = ok(&[
        Ev::Data(S, b"GET /h\r\nHost: h\r\n\r\n"),
        Ev::Data(C, b"body"),
        Ev::Close,
    ]);
    assert_simple_request(&ms[0], "/h", 8);
    assert_simple_response(&ms[1], 4, false);
}
