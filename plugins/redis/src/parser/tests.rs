//! Unit tests for the Redis parser. Every scenario is also replayed with
//! byte-by-byte and random split points through a simulated host that keeps
//! the unconsumed remainder, and must give identical results.

use super::*;
use wasmtap_sdk::testing::{self, Event, Rng};

/// One host call (the SDK's simulated host: `wasmtap_sdk::testing`).
type Ev<'a> = Event<'a, Dir>;
use Dir::{ToClient as C, ToServer as S};

type Outcome = testing::Outcome<Message, ParseError>;

/// Largest remainder the simulated host accepts to keep.
const HOST_BOUND: usize = MAX_LINE + 16;

/// One run of the simulated host with pieces chosen by `piece`.
fn host(events: &[Ev<'_>], piece: &mut dyn FnMut(usize) -> usize) -> Outcome {
    testing::run(&mut Parser::new(), events, HOST_BOUND, piece)
}

/// Runs `events` whole, byte by byte and with random splits; all must agree.
fn check(events: &[Ev<'_>]) -> Outcome {
    testing::check(Parser::new, events, HOST_BOUND)
}

fn ok(events: &[Ev<'_>]) -> Vec<Message> {
    let o = check(events);
    assert_eq!(
        o.error, None,
        "unexpected error; messages: {:?}",
        o.messages
    );
    o.messages
}

/// A compact view: `>NAME argc` for requests, `<kind[:code]` for replies,
/// `~name` for pushes; `!` marks truncation.
fn summary(ms: &[Message]) -> Vec<String> {
    ms.iter()
        .map(|m| match m {
            Message::Request(r) => format!(
                ">{} {}{}",
                r.name,
                r.argc,
                if r.truncated { "!" } else { "" }
            ),
            Message::Reply(r) => format!(
                "<{}{}{}",
                r.kind as char,
                r.error
                    .as_deref()
                    .map(|e| format!(":{e}"))
                    .unwrap_or_default(),
                if r.truncated { "!" } else { "" }
            ),
            Message::Push(p) => format!("~{}{}", p.name, if p.truncated { "!" } else { "" }),
        })
        .collect()
}

fn cmd(args: &[&[u8]]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        v.extend_from_slice(a);
        v.extend_from_slice(b"\r\n");
    }
    v
}

#[test]
fn simple_get_set() {
    let req = [cmd(&[b"SET", b"k", b"v"]), cmd(&[b"get", b"k"])].concat();
    let ms = ok(&[Ev::Data(S, &req), Ev::Data(C, b"+OK\r\n$1\r\nv\r\n")]);
    assert_eq!(summary(&ms), [">SET 2", ">GET 1", "<+", "<$"]);
    let Message::Request(r) = &ms[0] else {
        panic!()
    };
    assert_eq!(r.args, vec![b"k".to_vec(), b"v".to_vec()]);
    assert_eq!(r.size, 27);
    let Message::Reply(r) = &ms[3] else { panic!() };
    assert_eq!(r.size, 7);
}

#[test]
fn inline_pipelined_pings() {
    // Zeek pipelining-example: 3 inline PINGs in one segment, 3 +PONG.
    let ms = ok(&[
        Ev::Data(S, b"PING\r\nPING\r\nPING\r\n"),
        Ev::Data(C, b"+PONG\r\n+PONG\r\n+PONG\r\n"),
    ]);
    assert_eq!(
        summary(&ms),
        [">PING 0", ">PING 0", ">PING 0", "<+", "<+", "<+"]
    );
    assert!(matches!(&ms[0], Message::Request(r) if r.inline));
}

#[test]
fn inline_quoting_and_blank_lines() {
    let ms = ok(&[Ev::Data(
        S,
        b"\r\n  \r\nPUBLISH Foo \"Hi there :)\"\r\nset a 'b c'\n",
    )]);
    assert_eq!(summary(&ms), [">PUBLISH 2", ">SET 2"]);
    let Message::Request(r) = &ms[0] else {
        panic!()
    };
    assert_eq!(r.args[1], b"Hi there :)");
}

#[test]
fn errors_carry_their_code() {
    let ms = ok(&[
        Ev::Data(S, &cmd(&[b"get", b"abcd"])),
        Ev::Data(C, b"-NOAUTH Authentication required.\r\n"),
        Ev::Data(S, &cmd(&[b"lpush", b"k", b"v"])),
        Ev::Data(C, b"-WRONGTYPE Operation against a key\r\n"),
        Ev::Data(S, &cmd(&[b"x"])),
        Ev::Data(C, b"-unknown thing\r\n"),
        Ev::Data(S, &cmd(&[b"y"])),
        Ev::Data(C, b"!21\r\nSYNTAX invalid syntax\r\n"),
    ]);
    assert_eq!(
        summary(&ms),
        [
            ">GET 1",
            "<-:NOAUTH",
            ">LPUSH 2",
            "<-:WRONGTYPE",
            ">X 0",
            "<-:ERR",
            ">Y 0",
            "<!:SYNTAX"
        ]
    );
}

#[test]
fn resp3_types_and_nesting() {
    let reply: &[u8] = b"%2\r\n+a\r\n*3\r\n_\r\n#t\r\n,3.14\r\n$1\r\nb\r\n~2\r\n(123456789012345678901\r\n=8\r\ntxt:abcd\r\n\
        >2\r\n+invalidate\r\n*1\r\n$1\r\nk\r\n\
        :-5\r\n";
    // A push between the map reply and the integer reply.
    let reqs = [cmd(&[b"HGETALL", b"h"]), cmd(&[b"INCR", b"n"])].concat();
    let ms = ok(&[Ev::Data(S, &reqs), Ev::Data(C, reply)]);
    assert_eq!(
        summary(&ms),
        [">HGETALL 1", ">INCR 1", "<%", "~invalidate", "<:"]
    );
}

#[test]
fn attributes_are_not_replies() {
    // Zeek attr.pcap: an attribute inside an array (not an element), and a
    // top-level attribute before the reply; a stray LF after each reply.
    let ms = ok(&[
        Ev::Data(S, b"FAKE COMMAND\r\n"),
        Ev::Data(C, b"*3\r\n:1\r\n:2\r\n|1\r\n+ttl\r\n:3600\r\n:3\r\n\n"),
        Ev::Data(S, b"FAKE2 COMMAND2\r\n"),
        Ev::Data(
            C,
            b"|1\r\n+key-popularity\r\n%2\r\n$1\r\na\r\n,0.1923\r\n$1\r\nb\r\n,0.0012\r\n*2\r\n:2039123\r\n:9543892\r\n\n",
        ),
    ]);
    assert_eq!(summary(&ms), [">FAKE 1", "<*", ">FAKE2 1", "<*"]);
    let Message::Reply(r) = &ms[1] else { panic!() };
    assert_eq!(r.elems, 3);
}

#[test]
fn pubsub_pushes_are_one_way() {
    // Zeek pubsub.pcap, connection 0.
    let ms = ok(&[
        Ev::Data(S, &cmd(&[b"SUBSCRIBE", b"Foo"])),
        Ev::Data(C, b"*3\r\n$9\r\nsubscribe\r\n$3\r\nFoo\r\n:1\r\n"),
        Ev::Data(S, &cmd(&[b"PSUBSCRIBE", b"F*"])),
        Ev::Data(C, b"*3\r\n$10\r\npsubscribe\r\n$2\r\nF*\r\n:2\r\n"),
        Ev::Data(
            C,
            b"*3\r\n$7\r\nmessage\r\n$3\r\nFoo\r\n$11\r\nHi there :)\r\n*4\r\n$8\r\npmessage\r\n$2\r\nF*\r\n$3\r\nFoo\r\n$11\r\nHi there :)\r\n",
        ),
        Ev::Data(S, &cmd(&[b"RESET"])),
        Ev::Data(C, b"+RESET\r\n"),
        Ev::Data(S, &cmd(&[b"GET", b"sanity_check"])),
        Ev::Data(C, b"$12\r\nyou_are_sane\r\n"),
    ]);
    assert_eq!(
        summary(&ms),
        [
            ">SUBSCRIBE 1",
            "<*",
            ">PSUBSCRIBE 1",
            "<*",
            "~message",
            "~pmessage",
            ">RESET 0",
            "<+",
            ">GET 1",
            "<$"
        ]
    );
}

#[test]
fn subscribe_to_many_channels_gets_one_reply() {
    let conf = |kind: &str, ch: &str, n: u32| {
        format!(
            "*3\r\n${}\r\n{kind}\r\n${}\r\n{ch}\r\n:{n}\r\n",
            kind.len(),
            ch.len()
        )
        .into_bytes()
    };
    let server = [
        conf("subscribe", "a", 1),
        conf("subscribe", "b", 2),
        conf("subscribe", "c", 3),
        b"*3\r\n$7\r\nmessage\r\n$1\r\na\r\n$2\r\nhi\r\n".to_vec(),
        b"*2\r\n$4\r\npong\r\n$0\r\n\r\n".to_vec(),
        conf("unsubscribe", "a", 2),
        conf("unsubscribe", "b", 1),
        conf("unsubscribe", "c", 0),
        b"$-1\r\n".to_vec(),
    ]
    .concat();
    let client = [
        cmd(&[b"SUBSCRIBE", b"a", b"b", b"c"]),
        cmd(&[b"PING"]),
        cmd(&[b"UNSUBSCRIBE"]),
        cmd(&[b"GET", b"message"]),
    ]
    .concat();
    let ms = ok(&[Ev::Data(S, &client), Ev::Data(C, &server)]);
    assert_eq!(
        summary(&ms),
        [
            ">SUBSCRIBE 3",
            ">PING 0",
            ">UNSUBSCRIBE 0",
            ">GET 1",
            "<*",
            "~message",
            "<*",
            "<*",
            "<$"
        ]
    );
    // Not subscribed any more: an array headed "message" is a reply.
    let ms = ok(&[
        Ev::Data(S, &cmd(&[b"LRANGE", b"l", b"0", b"-1"])),
        Ev::Data(C, b"*1\r\n$7\r\nmessage\r\n"),
    ]);
    assert_eq!(summary(&ms), [">LRANGE 3", "<*"]);
}

#[test]
fn resp3_subscribe_confirmations_are_pushes() {
    let ms = ok(&[
        Ev::Data(S, &cmd(&[b"SUBSCRIBE", b"a", b"b"])),
        Ev::Data(
            C,
            b">3\r\n$9\r\nsubscribe\r\n$1\r\na\r\n:1\r\n>3\r\n$9\r\nsubscribe\r\n$1\r\nb\r\n:2\r\n>3\r\n$7\r\nmessage\r\n$1\r\na\r\n$1\r\nx\r\n",
        ),
        Ev::Data(S, &cmd(&[b"PING"])),
        Ev::Data(C, b"+PONG\r\n"),
    ]);
    assert_eq!(
        summary(&ms),
        [">SUBSCRIBE 2", "<>", "~message", ">PING 0", "<+"]
    );
}

#[test]
fn multi_exec_each_command_is_an_exchange() {
    let client = [
        cmd(&[b"MULTI"]),
        cmd(&[b"INCR", b"a"]),
        cmd(&[b"INCR", b"b"]),
        cmd(&[b"EXEC"]),
    ]
    .concat();
    let ms = ok(&[
        Ev::Data(S, &client),
        Ev::Data(C, b"+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n:1\r\n"),
    ]);
    assert_eq!(
        summary(&ms),
        [
            ">MULTI 0", ">INCR 1", ">INCR 1", ">EXEC 0", "<+", "<+", "<+", "<*"
        ]
    );
}

#[test]
fn large_bulk_streams_without_buffering() {
    let big = vec![b'x'; 500_000];
    let mut reply = format!("${}\r\n", big.len()).into_bytes();
    reply.extend_from_slice(&big);
    reply.extend_from_slice(b"\r\n");
    let req = cmd(&[b"SET", b"k", &big]);
    let get = cmd(&[b"GET", b"k"]);
    // Whole and random splits (byte-by-byte would be slow: check by hand).
    let evs = [
        Ev::Data(S, &req),
        Ev::Data(C, b"+OK\r\n"),
        Ev::Data(S, &get),
        Ev::Data(C, &reply),
    ];
    let whole = host(&evs, &mut |l| l);
    let mut rng = Rng(7);
    let split = host(&evs, &mut |l| 1 + rng.below(l.min(3000)));
    assert_eq!(whole, split);
    assert_eq!(whole.error, None);
    assert_eq!(summary(&whole.messages), [">SET 2", "<+", ">GET 1", "<$"]);
    let Message::Request(r) = &whole.messages[0] else {
        panic!()
    };
    assert_eq!(r.args[1].len(), MAX_ELEM_BYTES);
    assert_eq!(r.size, req.len() as u64);
}

#[test]
fn large_aggregate_reply() {
    // Like Zeek's COMMAND reply: hundreds of nested elements.
    let mut reply = b"*500\r\n".to_vec();
    for i in 0..500 {
        reply.extend_from_slice(
            format!(
                "*3\r\n$4\r\ncmd{}\r\n:-2\r\n*2\r\n+write\r\n%1\r\n+k\r\n$3\r\nabc\r\n",
                i % 10
            )
            .as_bytes(),
        );
    }
    let ms = ok(&[Ev::Data(S, &cmd(&[b"COMMAND"])), Ev::Data(C, &reply)]);
    assert_eq!(summary(&ms), [">COMMAND 0", "<*"]);
    let Message::Reply(r) = &ms[1] else { panic!() };
    assert_eq!(r.size, reply.len() as u64);
    assert_eq!(r.elems, 500);
}

#[test]
fn start_with_server_data() {
    // Zeek start-with-server: a reply whose command was never seen.
    let ms = ok(&[
        Ev::Data(C, b"+OK\r\n"),
        Ev::Data(S, &cmd(&[b"SET", b"hello", b"there"])),
        Ev::Data(C, b"+OK\r\n"),
    ]);
    assert_eq!(summary(&ms), ["<+", ">SET 2", "<+"]);
}

#[test]
fn mid_stream_start_skips_to_a_value() {
    // The client direction starts inside a bulk payload, the server inside
    // a JSON bulk reply.
    let mut client = b"0\": 1}\r\n".to_vec();
    client.extend_from_slice(&cmd(&[b"GET", b"k"]));
    let ms = ok(&[
        Ev::Data(S, &client),
        Ev::Data(C, b"\"a\": 1}\r\n{more json\r\n$2\r\nhi\r\n"),
    ]);
    assert_eq!(summary(&ms), [">GET 1", "<$"]);
    // An inline command is only believed as the very first line; once in
    // sync, every text line is a command (as for redis-server).
    let ms = ok(&[Ev::Data(
        S,
        b"payload text\r\nmore words\r\n*1\r\n$4\r\nPING\r\n",
    )]);
    assert_eq!(summary(&ms), [">PAYLOAD 1", ">MORE 1", ">PING 0"]);
    let ms = ok(&[Ev::Data(S, b"{\"x\r\nmore words\r\n*1\r\n$4\r\nPING\r\n")]);
    assert_eq!(summary(&ms), [">PING 0"]);
}

#[test]
fn gap_inside_bulk_keeps_framing() {
    let ms = ok(&[
        Ev::Data(S, &cmd(&[b"GET", b"k"])),
        Ev::Data(C, b"$10\r\nabc"),
        Ev::Gap(C, 4),
        Ev::Data(C, b"hij\r\n"),
        Ev::Data(S, &cmd(&[b"GET", b"k"])),
        Ev::Data(C, b":1\r\n"),
    ]);
    assert_eq!(summary(&ms), [">GET 1", "<$!", ">GET 1", "<:"]);
    let Message::Reply(r) = &ms[1] else { panic!() };
    assert_eq!(r.size, 17);
}

#[test]
fn gap_breaking_framing_reports_and_resyncs() {
    let ms = ok(&[
        Ev::Data(S, &cmd(&[b"GET", b"k"])),
        Ev::Data(C, b"*3\r\n$1\r\na\r\n"),
        Ev::Gap(C, 100),
        Ev::Data(C, b"tail of something\r\n"),
        Ev::Data(S, b"*2\r\n$3\r\nGET"),
        Ev::Gap(S, 50),
        Ev::Data(S, b"junk\r\n"),
        Ev::Data(S, &cmd(&[b"PING"])),
        Ev::Data(C, b"+PONG\r\n"),
    ]);
    assert_eq!(summary(&ms), [">GET 1", "<*!", ">GET 1!", ">PING 0", "<+"]);
}

#[test]
fn close_reports_cut_messages() {
    // DeepFlow redis.pcap: a 490493-byte reply whose final CRLF is missing.
    let ms = ok(&[
        Ev::Data(S, &cmd(&[b"GET", b"k"])),
        Ev::Data(C, b"$5\r\nhello"),
        Ev::Data(S, b"*2\r\n$3\r\nGE"),
        Ev::Close,
    ]);
    assert_eq!(summary(&ms), [">GET 1", "<$!"]);
    // A request whose name is known is reported too.
    let ms = ok(&[Ev::Data(S, b"*2\r\n$3\r\nGET\r\n$5\r\nab"), Ev::Close]);
    assert_eq!(summary(&ms), [">GET 1!"]);
}

#[test]
fn protocol_errors_end_the_session() {
    let o = check(&[
        Ev::Data(S, &cmd(&[b"GET", b"k"])),
        Ev::Data(C, b"+OK\r\n@bad\r\n"),
    ]);
    assert_eq!(
        o.error.map(|e| (e.reason, e.offset)),
        Some((reason::BAD_TYPE, 5))
    );
    let o = check(&[Ev::Data(C, b"+OK\r\n$abc\r\n")]);
    assert_eq!(o.error.map(|e| e.reason), Some(reason::BAD_LENGTH));
    let o = check(&[Ev::Data(C, b"+OK\r\n$3\r\nabcX\r\n")]);
    assert_eq!(o.error.map(|e| e.reason), Some(reason::BAD_TERMINATOR));
    let deep = "*1\r\n".repeat(MAX_DEPTH + 1);
    let o = check(&[Ev::Data(C, b"+OK\r\n"), Ev::Data(C, deep.as_bytes())]);
    assert_eq!(o.error.map(|e| e.reason), Some(reason::TOO_DEEP));
    let long = vec![b'a'; MAX_LINE + 10];
    let o = host(&[Ev::Data(S, b"PING\r\n"), Ev::Data(S, &long)], &mut |l| {
        l.min(4096)
    });
    assert_eq!(o.error.map(|e| e.reason), Some(reason::LINE_TOO_LONG));
}

#[test]
fn resync_gives_up_on_endless_junk() {
    let junk = vec![b'z'; (MAX_RESYNC_BYTES + 10) as usize];
    let o = host(&[Ev::Data(C, &junk)], &mut |l| l.min(65536));
    assert_eq!(o.error.map(|e| e.reason), Some(reason::RESYNC_FAILED));
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(42);
    for _ in 0..300 {
        let len = rng.below(300);
        let alphabet = b"*$+-:%>|~_#,(!=\r\n0123456789-?abc ";
        let data: Vec<u8> = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        let dir = if rng.below(2) == 0 { S } else { C };
        let _ = host(
            &[
                Ev::Data(dir, &data),
                Ev::Gap(dir, 3),
                Ev::Data(dir, &data),
                Ev::Close,
            ],
            &mut |l| 1 + (l % 7),
        );
    }
}

#[test]
fn pending_queue_is_bounded() {
    let one = cmd(&[b"PING"]);
    let many = one.repeat(MAX_PENDING + 10);
    let ms = ok(&[Ev::Data(S, &many)]);
    assert_eq!(ms.len(), MAX_PENDING + 10);
}

#[test]
fn huge_gaps_do_not_overflow() {
    let o = check(&[
        Ev::Data(S, &cmd(&[b"GET", b"k"])),
        Ev::Data(C, b"*2\r\n"),
        Ev::Gap(C, u64::MAX),
        Ev::Gap(C, u64::MAX),
        Ev::Data(C, b"$1\r\na\r\n"),
    ]);
    // After resync, the value that follows is a (stray) reply.
    assert_eq!(summary(&o.messages), [">GET 1", "<*!", "<$"]);
    assert_eq!(o.error, None);
}
