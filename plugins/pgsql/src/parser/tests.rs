//! Unit tests for the PostgreSQL parser. Every scenario is also replayed with
//! byte-by-byte and random split points through a simulated host that keeps
//! the unconsumed remainder, and must give identical results.

use super::*;
use wasmtap_sdk::testing::{self, Event, Rng};

/// One host call, owning its bytes (scripts are built from message builders).
#[derive(Clone)]
enum Ev {
    Data(Dir, Vec<u8>),
    Gap(Dir, u64),
    Close,
}
use Dir::{ToClient as C, ToServer as S};

/// The same script as the SDK's simulated host takes it (`wasmtap_sdk::testing`).
fn script(events: &[Ev]) -> Vec<Event<'_, Dir>> {
    events
        .iter()
        .map(|e| match e {
            Ev::Data(d, b) => Event::Data(*d, b.as_slice()),
            Ev::Gap(d, n) => Event::Gap(*d, *n),
            Ev::Close => Event::Close,
        })
        .collect()
}

/// What a script produced, with the parser's counters after it.
#[derive(Debug, PartialEq)]
struct Outcome {
    messages: Vec<Message>,
    error: Option<ParseError>,
    stats: Stats,
}

/// One run of the simulated host with pieces chosen by `piece`.
fn host(opts: Options, events: &[Ev], piece: &mut dyn FnMut(usize) -> usize) -> Outcome {
    let mut parser = Parser::new(opts);
    let o = testing::run(&mut parser, &script(events), HOST_BOUND, piece);
    Outcome {
        messages: o.messages,
        error: o.error,
        stats: parser.stats(),
    }
}

/// Most the simulated host may buffer: the parser must consume big
/// messages as they stream.
const HOST_BOUND: usize = 40 * 1024;

/// Runs `events` whole, byte by byte and with random splits; all must
/// agree, counters included.
fn check_with(opts: Options, events: &[Ev]) -> Outcome {
    let o = testing::check(|| Parser::new(opts), &script(events), HOST_BOUND);
    let whole = host(opts, events, &mut |left| left);
    let bytewise = host(opts, events, &mut |_| 1);
    assert_eq!(whole.stats, bytewise.stats, "byte-by-byte counters differ");
    assert_eq!((&whole.messages, &whole.error), (&o.messages, &o.error));
    whole
}

fn ok(events: &[Ev]) -> Vec<Message> {
    let o = check_with(Options::default(), events);
    assert_eq!(o.error, None);
    o.messages
}

// ---- message builders ----

fn typed(t: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![t];
    v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    v.extend_from_slice(body);
    v
}

fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn startup(user: &str, db: &str) -> Vec<u8> {
    let mut body = 0x0003_0000u32.to_be_bytes().to_vec();
    for (k, v) in [
        ("user", user),
        ("database", db),
        ("application_name", "psql"),
    ] {
        body.extend_from_slice(k.as_bytes());
        body.push(0);
        body.extend_from_slice(v.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut v = (body.len() as u32 + 4).to_be_bytes().to_vec();
    v.extend_from_slice(&body);
    v
}

fn ssl_request() -> Vec<u8> {
    vec![0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f]
}

fn q(sql: &str) -> Vec<u8> {
    let mut b = sql.as_bytes().to_vec();
    b.push(0);
    typed(b'Q', &b)
}

fn parse(name: &str, sql: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(name.as_bytes());
    b.push(0);
    b.extend_from_slice(sql.as_bytes());
    b.extend_from_slice(&[0, 0, 0]);
    typed(b'P', &b)
}

fn bind(portal: &str, stmt: &str) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(portal.as_bytes());
    b.push(0);
    b.extend_from_slice(stmt.as_bytes());
    b.push(0);
    // No format codes, one parameter "secret", no result formats.
    b.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 6]);
    b.extend_from_slice(b"secret");
    b.extend_from_slice(&[0, 0]);
    typed(b'B', &b)
}

fn describe_portal(portal: &str) -> Vec<u8> {
    let mut b = vec![b'P'];
    b.extend_from_slice(portal.as_bytes());
    b.push(0);
    typed(b'D', &b)
}

fn execute(portal: &str) -> Vec<u8> {
    let mut b = portal.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(&[0, 0, 0, 0]);
    typed(b'E', &b)
}

fn sync() -> Vec<u8> {
    typed(b'S', b"")
}

fn auth_ok() -> Vec<u8> {
    typed(b'R', &[0, 0, 0, 0])
}

fn param(k: &str, v: &str) -> Vec<u8> {
    let mut b = k.as_bytes().to_vec();
    b.push(0);
    b.extend_from_slice(v.as_bytes());
    b.push(0);
    typed(b'S', &b)
}

fn ready() -> Vec<u8> {
    typed(b'Z', b"I")
}

fn complete(tag: &str) -> Vec<u8> {
    let mut b = tag.as_bytes().to_vec();
    b.push(0);
    typed(b'C', &b)
}

fn row_desc() -> Vec<u8> {
    let mut b = vec![0, 1];
    b.extend_from_slice(b"n\0");
    b.extend_from_slice(&[0; 18]);
    typed(b'T', &b)
}

fn data_row(value: &[u8]) -> Vec<u8> {
    let mut b = vec![0, 1];
    b.extend_from_slice(&(value.len() as u32).to_be_bytes());
    b.extend_from_slice(value);
    typed(b'D', &b)
}

fn error(code: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for (f, v) in [
        (b'S', "ERROR"),
        (b'V', "ERROR"),
        (b'C', code),
        (b'M', "it failed"),
    ] {
        b.push(f);
        b.extend_from_slice(v.as_bytes());
        b.push(0);
    }
    b.push(0);
    typed(b'E', &b)
}

fn notice() -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(b"SNOTICE\0C00000\0Mhello\0\0");
    typed(b'N', &b)
}

fn login_ok() -> Vec<u8> {
    cat(&[
        auth_ok(),
        param("server_version", "16.4"),
        typed(b'K', &[0, 0, 1, 2, 3, 4, 5, 6]),
        ready(),
    ])
}

fn reqs(m: &[Message]) -> Vec<&Message> {
    m.iter().filter(|m| m.kind == Kind::Request).collect()
}

fn resp_for(m: &[Message], id: u64) -> &Message {
    m.iter()
        .find(|r| r.kind == Kind::Response && r.id == id)
        .unwrap()
}

/// (operation, response status code or "ok") per request, in order.
fn pairs(m: &[Message]) -> Vec<(String, String)> {
    reqs(m)
        .into_iter()
        .map(|r| {
            let resp = m.iter().find(|x| x.kind == Kind::Response && x.id == r.id);
            let st = match resp {
                None => "-".to_string(),
                Some(x) if x.error => {
                    if x.status_code.is_empty() {
                        x.error_kind.unwrap_or("error").to_string()
                    } else {
                        x.status_code.clone()
                    }
                }
                Some(x) if x.status_code.is_empty() => "ok".to_string(),
                Some(x) => x.status_code.clone(),
            };
            (r.operation.clone(), st)
        })
        .collect()
}

fn p(op: &str, st: &str) -> (String, String) {
    (op.to_string(), st.to_string())
}

// ---- tests ----

#[test]
fn startup_and_simple_queries() {
    let m = ok(&[
        Ev::Data(S, startup("alice", "shop")),
        Ev::Data(C, login_ok()),
        Ev::Data(
            S,
            q("SELECT name FROM users WHERE id = 42 AND name = 'bob'"),
        ),
        Ev::Data(
            C,
            cat(&[
                row_desc(),
                data_row(b"bob"),
                data_row(b"bob"),
                complete("SELECT 2"),
                ready(),
            ]),
        ),
        Ev::Data(S, q("INSERT INTO t VALUES (1, 'x')")),
        Ev::Data(C, cat(&[complete("INSERT 0 1"), ready()])),
        Ev::Data(S, q("UPDATE t SET a = 1.5e-3")),
        Ev::Data(C, cat(&[notice(), complete("UPDATE 3"), ready()])),
        Ev::Data(S, typed(b'X', b"")),
        Ev::Close,
    ]);
    assert_eq!(
        pairs(&m),
        vec![
            p("STARTUP", "ok"),
            p("SELECT", "ok"),
            p("INSERT", "ok"),
            p("UPDATE", "ok")
        ]
    );
    let r = reqs(&m);
    assert_eq!(r[0].database.as_deref(), Some("shop"));
    assert_eq!(r[0].user.as_deref(), Some("alice"));
    assert_eq!(
        r[1].query.as_deref(),
        Some("SELECT name FROM users WHERE id = ? AND name = ?")
    );
    assert_eq!(r[1].database.as_deref(), Some("shop"));
    assert_eq!(resp_for(&m, r[1].id).returned_rows, Some(2));
    assert_eq!(resp_for(&m, r[2].id).affected_rows, Some(1));
    assert_eq!(r[3].query.as_deref(), Some("UPDATE t SET a = ?"));
    assert_eq!(resp_for(&m, r[3].id).affected_rows, Some(3));
    // Sizes: the request is the Q message; the response every message up to Z.
    assert_eq!(r[2].size, q("INSERT INTO t VALUES (1, 'x')").len() as u64);
    assert_eq!(
        resp_for(&m, r[2].id).size,
        (complete("INSERT 0 1").len() + 6) as u64
    );
}

#[test]
fn raw_query_text_is_kept_when_configured() {
    let events = [
        Ev::Data(S, q("SELECT 'a', 1")),
        Ev::Data(C, cat(&[complete("SELECT 1"), ready()])),
    ];
    let o = check_with(
        Options {
            raw_query_text: true,
        },
        &events,
    );
    assert_eq!(o.messages[0].query.as_deref(), Some("SELECT 'a', 1"));
}

#[test]
fn error_response_carries_sqlstate() {
    let m = ok(&[
        Ev::Data(S, q("SELECT * FROM no_such_table")),
        Ev::Data(C, cat(&[error("42P01"), ready()])),
        Ev::Data(S, q("SELECT 1")),
        Ev::Data(
            C,
            cat(&[row_desc(), data_row(b"1"), complete("SELECT 1"), ready()]),
        ),
    ]);
    assert_eq!(pairs(&m), vec![p("SELECT", "42P01"), p("SELECT", "ok")]);
}

#[test]
fn error_without_ready_for_query_is_reported_at_close() {
    // deepflow error.pcap: the capture ends after the ErrorResponse.
    let m = ok(&[
        Ev::Data(S, q("asdsdfdsf;")),
        Ev::Data(C, error("42601")),
        Ev::Close,
    ]);
    assert_eq!(pairs(&m), vec![p("OTHER", "42601")]);
}

#[test]
fn multi_statement_query_is_one_exchange() {
    let m = ok(&[
        Ev::Data(S, q("BEGIN; UPDATE a SET x = 1; SELECT 1; COMMIT")),
        Ev::Data(
            C,
            cat(&[
                complete("BEGIN"),
                complete("UPDATE 2"),
                row_desc(),
                data_row(b"1"),
                complete("SELECT 1"),
                complete("COMMIT"),
                ready(),
            ]),
        ),
    ]);
    assert_eq!(pairs(&m), vec![p("BEGIN", "ok")]);
    assert_eq!(m[1].affected_rows, Some(2));
    assert_eq!(m[1].returned_rows, Some(1));
}

#[test]
fn pipelined_simple_queries_pair_in_order() {
    let m = ok(&[
        Ev::Data(
            S,
            cat(&[q("SELECT 1"), q("SELECT * FROM nope"), q("DELETE FROM t")]),
        ),
        Ev::Data(
            C,
            cat(&[
                row_desc(),
                data_row(b"1"),
                complete("SELECT 1"),
                ready(),
                error("42P01"),
                ready(),
                complete("DELETE 7"),
                ready(),
            ]),
        ),
    ]);
    assert_eq!(
        pairs(&m),
        vec![p("SELECT", "ok"), p("SELECT", "42P01"), p("DELETE", "ok")]
    );
    assert_eq!(resp_for(&m, reqs(&m)[2].id).affected_rows, Some(7));
}

#[test]
fn ssl_refused_then_startup() {
    let m = ok(&[
        Ev::Data(S, ssl_request()),
        Ev::Data(C, b"N".to_vec()),
        Ev::Data(S, startup("u", "d")),
        Ev::Data(
            C,
            cat(&[typed(
                b'R',
                &[0, 0, 0, 10, b'S', b'C', b'R', b'A', b'M', 0, 0],
            )]),
        ),
        Ev::Data(S, typed(b'p', b"SCRAM-SHA-256\0\0\0\0\x04abcd")),
        Ev::Data(C, login_ok()),
        Ev::Data(S, q("SELECT 1")),
        Ev::Data(C, cat(&[complete("SELECT 1"), ready()])),
    ]);
    assert_eq!(
        pairs(&m),
        vec![p("SSL_REQUEST", "N"), p("STARTUP", "ok"), p("SELECT", "ok")]
    );
}

#[test]
fn ssl_accepted_makes_the_flow_opaque() {
    let o = check_with(
        Options::default(),
        &[
            Ev::Data(S, ssl_request()),
            Ev::Data(C, b"S".to_vec()),
            Ev::Data(
                S,
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".repeat(50),
            ),
            Ev::Data(C, b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76".repeat(50)),
            Ev::Gap(C, 100),
            Ev::Data(S, q("SELECT 1")),
        ],
    );
    assert_eq!(o.error, None);
    assert_eq!(pairs(&o.messages), vec![p("SSL_REQUEST", "S")]);
}

#[test]
fn login_failure_is_an_error() {
    let m = ok(&[
        Ev::Data(S, startup("u", "d")),
        Ev::Data(C, typed(b'R', &[0, 0, 0, 5, 1, 2, 3, 4])),
        Ev::Data(S, typed(b'p', b"md5abcdef\0")),
        Ev::Data(C, error("28P01")),
        Ev::Close,
    ]);
    assert_eq!(pairs(&m), vec![p("STARTUP", "28P01")]);
}

#[test]
fn cancel_request_is_one_way() {
    let mut cancel = vec![0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e];
    cancel.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2]);
    let m = ok(&[Ev::Data(S, cancel)]);
    assert_eq!(m.len(), 1);
    assert_eq!(m[0].kind, Kind::OneWay);
    assert_eq!(m[0].operation, "CANCEL");
}

#[test]
fn extended_query_ties_statements_to_executes() {
    let m = ok(&[
        Ev::Data(
            S,
            cat(&[
                parse("s1", "SELECT * FROM t WHERE id = $1 AND k = 'x'"),
                bind("", "s1"),
                describe_portal(""),
                execute(""),
                sync(),
            ]),
        ),
        Ev::Data(
            C,
            cat(&[
                typed(b'1', b""),
                typed(b'2', b""),
                row_desc(),
                data_row(b"a"),
                complete("SELECT 1"),
                ready(),
            ]),
        ),
        // Reuse of the named statement, twice in one batch.
        Ev::Data(
            S,
            cat(&[
                bind("", "s1"),
                execute(""),
                bind("", "s1"),
                execute(""),
                sync(),
            ]),
        ),
        Ev::Data(
            C,
            cat(&[
                typed(b'2', b""),
                complete("SELECT 0"),
                typed(b'2', b""),
                data_row(b"b"),
                complete("SELECT 1"),
                ready(),
            ]),
        ),
        // Unnamed statement, UPDATE.
        Ev::Data(
            S,
            cat(&[
                parse("", "UPDATE t SET v = $1"),
                bind("", ""),
                execute(""),
                sync(),
            ]),
        ),
        Ev::Data(
            C,
            cat(&[
                typed(b'1', b""),
                typed(b'2', b""),
                complete("UPDATE 4"),
                ready(),
            ]),
        ),
        // A statement never seen (prepared before the capture).
        Ev::Data(S, cat(&[bind("", "S_9"), execute(""), sync()])),
        Ev::Data(C, cat(&[typed(b'2', b""), complete("INSERT 0 1"), ready()])),
    ]);
    assert_eq!(
        pairs(&m),
        vec![
            p("SELECT", "ok"),
            p("SELECT", "ok"),
            p("SELECT", "ok"),
            p("UPDATE", "ok"),
            p("EXECUTE", "ok")
        ]
    );
    let r = reqs(&m);
    assert_eq!(
        r[0].query.as_deref(),
        Some("SELECT * FROM t WHERE id = $1 AND k = ?")
    );
    assert_eq!(
        r[2].query.as_deref(),
        Some("SELECT * FROM t WHERE id = $1 AND k = ?")
    );
    assert_eq!(r[3].query.as_deref(), Some("UPDATE t SET v = $1"));
    assert_eq!(r[4].query, None);
    assert_eq!(resp_for(&m, r[0].id).returned_rows, Some(1));
    assert_eq!(resp_for(&m, r[1].id).returned_rows, Some(0));
    assert_eq!(resp_for(&m, r[3].id).affected_rows, Some(4));
    assert_eq!(resp_for(&m, r[4].id).affected_rows, Some(1));
    // Bind parameters are never exported.
    assert!(!format!("{m:?}").contains("secret"));
}

#[test]
fn extended_error_aborts_the_rest_of_the_batch() {
    let m = ok(&[
        Ev::Data(
            S,
            cat(&[
                parse("", "INSERT INTO t VALUES ($1)"),
                bind("", ""),
                execute(""),
                bind("", ""),
                execute(""),
                bind("", ""),
                execute(""),
                sync(),
                parse("", "SELECT 1"),
                bind("", ""),
                execute(""),
                sync(),
            ]),
        ),
        Ev::Data(
            C,
            cat(&[
                typed(b'1', b""),
                typed(b'2', b""),
                complete("INSERT 0 1"),
                typed(b'2', b""),
                error("23505"),
                ready(),
                typed(b'1', b""),
                typed(b'2', b""),
                complete("SELECT 1"),
                ready(),
            ]),
        ),
    ]);
    assert_eq!(
        pairs(&m),
        vec![
            p("INSERT", "ok"),
            p("INSERT", "23505"),
            p("INSERT", ABORTED),
            p("SELECT", "ok")
        ]
    );
}

#[test]
fn parse_error_without_execute_reports_nothing() {
    let o = check_with(
        Options::default(),
        &[
            Ev::Data(S, cat(&[parse("", "SELEC 1"), typed(b'D', b"S\0"), sync()])),
            Ev::Data(C, cat(&[error("42601"), ready()])),
            Ev::Data(S, q("SELECT 2")),
            Ev::Data(C, cat(&[complete("SELECT 1"), ready()])),
        ],
    );
    assert_eq!(pairs(&o.messages), vec![p("SELECT", "ok")]);
    assert_eq!(o.stats.unmatched, 1);
}

#[test]
fn copy_in_and_out() {
    let m = ok(&[
        Ev::Data(S, q("COPY t FROM STDIN")),
        Ev::Data(C, typed(b'G', &[0, 0, 0])),
        Ev::Data(
            S,
            cat(&[
                typed(b'd', b"1\tx\n"),
                typed(b'd', b"2\ty\n"),
                typed(b'c', b""),
            ]),
        ),
        Ev::Data(C, cat(&[complete("COPY 2"), ready()])),
        Ev::Data(S, q("COPY t TO STDOUT")),
        Ev::Data(
            C,
            cat(&[
                typed(b'H', &[0, 0, 0]),
                typed(b'd', b"1\tx\n"),
                typed(b'c', b""),
                complete("COPY 1"),
                ready(),
            ]),
        ),
    ]);
    assert_eq!(pairs(&m), vec![p("COPY", "ok"), p("COPY", "ok")]);
    let r = reqs(&m);
    assert_eq!(resp_for(&m, r[0].id).affected_rows, Some(2));
    assert_eq!(resp_for(&m, r[1].id).returned_rows, Some(1));
}

#[test]
fn large_data_rows_stream_through() {
    // 200 rows of 20 KiB, and a 100 KiB query: the host never buffers more
    // than HOST_BOUND.
    let mut resp = vec![row_desc()];
    for _ in 0..200 {
        resp.push(data_row(&[b'x'; 20 * 1024]));
    }
    resp.push(complete("SELECT 200"));
    resp.push(ready());
    let big_sql = format!("SELECT '{}'", "y".repeat(100 * 1024));
    let whole = host(
        Options::default(),
        &[
            Ev::Data(S, q(&big_sql)),
            Ev::Data(C, cat(&resp)),
            Ev::Data(S, q("SELECT 1")),
            Ev::Data(C, cat(&[complete("SELECT 1"), ready()])),
        ],
        &mut |left| left.min(1460),
    );
    assert_eq!(whole.error, None);
    assert_eq!(
        pairs(&whole.messages),
        vec![p("SELECT", "ok"), p("SELECT", "ok")]
    );
    let r = reqs(&whole.messages);
    assert!(r[0].query_truncated);
    assert_eq!(r[0].query.as_deref(), Some("SELECT ?"));
    assert_eq!(resp_for(&whole.messages, r[0].id).returned_rows, Some(200));
}

#[test]
fn mid_stream_start_resynchronises() {
    // The client direction starts inside a query, the server direction
    // inside a data row; then normal traffic.
    let first_q = q("SELECT lots FROM things WHERE a = 1");
    let mut server_first = cat(&[data_row(b"0123456789abcdef"), complete("SELECT 9"), ready()]);
    server_first.drain(..7);
    let m = ok(&[
        Ev::Data(
            S,
            cat(&[first_q[9..].to_vec(), q("SELECT 2"), q("DELETE FROM t")]),
        ),
        Ev::Data(
            C,
            cat(&[
                server_first,
                complete("SELECT 1"),
                ready(),
                complete("DELETE 1"),
                ready(),
            ]),
        ),
    ]);
    // Both directions find their first boundary. Which answer pairs with
    // which request is ambiguous mid-stream (the first complete answer the
    // parser sees goes to the first request it saw); both requests are
    // answered and nothing is reported twice.
    let ops = pairs(&m);
    assert_eq!(ops.len(), 2, "{ops:?}");
    assert_eq!(ops[0].0, "SELECT");
    assert_eq!(ops[1].0, "DELETE");
}

#[test]
fn mid_stream_server_first() {
    // The server's answer to an unseen query comes first: dropped.
    let o = check_with(
        Options::default(),
        &[
            Ev::Data(C, cat(&[complete("SELECT 1"), ready()])),
            Ev::Data(S, q("SELECT 2")),
            Ev::Data(C, cat(&[complete("SELECT 1"), ready()])),
        ],
    );
    assert_eq!(pairs(&o.messages), vec![p("SELECT", "ok")]);
    assert_eq!(o.stats.unmatched, 1);
}

#[test]
fn gap_inside_a_data_row_keeps_sync() {
    let big = data_row(&[b'z'; 5000]);
    let m = ok(&[
        Ev::Data(S, q("SELECT big FROM t")),
        Ev::Data(C, cat(&[row_desc(), big[..1000].to_vec()])),
        Ev::Gap(C, 3000),
        Ev::Data(
            C,
            cat(&[big[4000..].to_vec(), complete("SELECT 1"), ready()]),
        ),
    ]);
    assert_eq!(pairs(&m), vec![p("SELECT", "ok")]);
    assert_eq!(m[1].returned_rows, Some(1));
}

#[test]
fn gap_across_boundaries_resynchronises() {
    let o = check_with(
        Options::default(),
        &[
            Ev::Data(S, q("SELECT 1")),
            Ev::Data(C, cat(&[row_desc(), data_row(b"1")[..4].to_vec()])),
            Ev::Gap(C, 40),
            // Resumes mid-message: junk, then real messages.
            Ev::Data(
                C,
                cat(&[b"\x01\x02junk".to_vec(), complete("SELECT 1"), ready()]),
            ),
            Ev::Data(S, q("SELECT 2")),
            Ev::Data(C, cat(&[complete("SELECT 1"), ready()])),
        ],
    );
    assert_eq!(o.error, None);
    assert_eq!(
        pairs(&o.messages),
        vec![p("SELECT", "ok"), p("SELECT", "ok")]
    );
}

#[test]
fn client_gap_drops_the_lost_batch() {
    let o = check_with(
        Options::default(),
        &[
            Ev::Data(S, q("SELECT 1")),
            Ev::Gap(S, 20),
            Ev::Data(S, q("SELECT 3")),
            // Answers: SELECT 1, the lost one, SELECT 3.
            Ev::Data(
                C,
                cat(&[
                    complete("SELECT 1"),
                    ready(),
                    complete("SELECT 2"),
                    ready(),
                    complete("SELECT 3"),
                    ready(),
                ]),
            ),
        ],
    );
    assert_eq!(o.error, None);
    let m = &o.messages;
    let r = reqs(m);
    assert_eq!(r.len(), 2);
    assert_eq!(resp_for(m, r[0].id).returned_rows, Some(1));
    assert_eq!(resp_for(m, r[1].id).returned_rows, Some(3));
}

#[test]
fn garbage_ends_the_session() {
    let o = host(
        Options::default(),
        &[Ev::Data(S, vec![0xff; 300 * 1024])],
        &mut |l| l.min(4096),
    );
    assert_eq!(o.error.map(|e| e.reason), Some(reason::RESYNC_FAILED));
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..200 {
        let n = rng.below(600);
        let mut v: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
        // Sprinkle plausible headers.
        if n > 10 {
            let i = rng.below(n - 6);
            v[i] = b"QZCDET"[rng.below(6)];
            v[i + 1..i + 5].copy_from_slice(&(rng.below(40) as u32).to_be_bytes());
        }
        let dir = if rng.below(2) == 0 { S } else { C };
        let _ = host(
            Options::default(),
            &[
                Ev::Data(dir, v.clone()),
                Ev::Gap(dir, 3),
                Ev::Data(dir, v),
                Ev::Close,
            ],
            &mut |l| l.min(7),
        );
    }
}

#[test]
fn sanitizer_masks_literals_only() {
    let s = |x: &str| sanitize(x.as_bytes());
    assert_eq!(
        s("SELECT * FROM t WHERE a = 1 AND b = 'x''y' AND c = -2.5e+10"),
        "SELECT * FROM t WHERE a = ? AND b = ? AND c = ?"
    );
    assert_eq!(
        s("UPDATE t SET a = a + -5, b = b - 1 WHERE x IN (-1, -2)"),
        "UPDATE t SET a = a + ?, b = b - ? WHERE x IN (?, ?)"
    );
    assert_eq!(
        s("SELECT E'a\\'b', x'1F', $$body$$, $f$ it's $f$ FROM t2"),
        "SELECT ?, ?, ?, ? FROM t2"
    );
    assert_eq!(
        s("SELECT \"Col 1\", t1.c2 FROM s.t1 WHERE id = $1"),
        "SELECT \"Col 1\", t1.c2 FROM s.t1 WHERE id = $1"
    );
    assert_eq!(s("SELECT 'unterminated"), "SELECT ?");
    assert_eq!(s("SELECT a -- it's 'x'\nFROM t"), "SELECT a FROM t");
    assert_eq!(
        s("INSERT INTO x VALUES (0x1F, .5, 1_000)"),
        "INSERT INTO x VALUES (?, ?, ?)"
    );
}

#[test]
fn operation_is_the_first_keyword() {
    assert_eq!(operation(b"  select 1"), "SELECT");
    assert_eq!(operation(b"/* c */ -- x\n(SELECT 1)"), "SELECT");
    assert_eq!(operation(b"with x as (select 1) select * from x"), "WITH");
    assert_eq!(operation(b"asdsdfdsf;"), "OTHER");
    assert_eq!(operation(b";"), "EMPTY");
    assert_eq!(operation(b""), "EMPTY");
}

#[test]
fn probe_shapes() {
    assert_eq!(probe(S, &startup("u", "d")), 95);
    assert_eq!(probe(S, &ssl_request()), 95);
    assert_eq!(probe(S, &q("SELECT 1")), 70);
    assert_eq!(probe(C, &cat(&[auth_ok(), param("a", "b")])), 70);
    assert_eq!(probe(S, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"), 0);
    assert_eq!(probe(C, b"HTTP/1.1 200 OK\r\n"), 0);
    assert_eq!(probe(S, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc"), 0);
    // A Kafka Metadata v0 request starts like a StartupMessage (00 03 00 00)
    // but its body is no parameter list: not PostgreSQL.
    let mut kafka = vec![0, 0, 0, 0x21, 0, 3, 0, 0, 0, 0, 0, 1, 0, 0x0d];
    kafka.extend_from_slice(b"console-cli-1");
    kafka.extend_from_slice(&[0, 0, 0, 1, 0, 4]);
    kafka.extend_from_slice(b"logs");
    assert_eq!(kafka.len(), 4 + 0x21);
    assert_eq!(probe(S, &kafka), 0);
    // Protocol 3.2 (PostgreSQL 18) is PostgreSQL; 3.9 is not.
    let mut v32 = startup("u", "d");
    v32[7] = 2;
    assert_eq!(probe(S, &v32), 95);
    v32[7] = 9;
    assert_eq!(probe(S, &v32), 0);
}
