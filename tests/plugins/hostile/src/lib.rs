//! A decoder that misbehaves on purpose, for the sandbox tests.
//!
//! It claims port 5000 and, by default, decodes HTTP/1 like the real decoder.
//! Its config section chooses a misbehaviour: `{"mode": "loop"}` (an infinite
//! loop), `"memory"` (allocates without end), `"trap3"` (panics on the third
//! call), `"trap-always"` (panics on every call), `"trap-on-response"` (reports
//! requests, panics on the first response bytes), `"print"` (writes 500 lines to stdout per call), `"flood"` (10 000 messages per call), `"huge-attr"` (a 1 MiB
//! attribute value), `"slow"` (correct, but burns about 2 ms per call),
//! `"escape"` (terminal escape sequences in operations, status codes and an
//! attribute), `"time-travel"` (timestamps far outside the packets'),
//! `"overconsume"` (claims to consume more than it was offered), `"clock"`
//! (puts the wall-clock time it reads and a random number on every message),
//! `"reach"` (tries to read a file, list a directory, read the environment,
//! connect to `"port"` of the config on 127.0.0.1, bind a UDP socket and
//! resolve a name, and puts what happened on every message: `fs=ok` and the
//! like if anything got through).

use std::cell::Cell;

use wasmtap_plugin_http1::{Http1, Http1Session};
use wasmtap_sdk::{
    Attribute, CloseReason, DecodeError, Decoder, Descriptor, Direction, Message, Session,
    Transport,
};

/// The misbehaviours.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Correct,
    Loop,
    Memory,
    Trap3,
    TrapAlways,
    Flood,
    Print,
    HugeAttr,
    Slow,
    /// Reports requests, traps on the first response bytes.
    TrapOnResponse,
    Escape,
    TimeTravel,
    Overconsume,
    Clock,
    Reach,
}

fn mode() -> Mode {
    let c = wasmtap_sdk::config();
    let has = |m: &str| c.contains(&format!("\"mode\":\"{m}\""));
    if has("loop") {
        Mode::Loop
    } else if has("memory") {
        Mode::Memory
    } else if has("trap3") {
        Mode::Trap3
    } else if has("trap-on-response") {
        Mode::TrapOnResponse
    } else if has("trap-always") {
        Mode::TrapAlways
    } else if has("print") {
        Mode::Print
    } else if has("flood") {
        Mode::Flood
    } else if has("huge-attr") {
        Mode::HugeAttr
    } else if has("slow") {
        Mode::Slow
    } else if has("escape") {
        Mode::Escape
    } else if has("time-travel") {
        Mode::TimeTravel
    } else if has("overconsume") {
        Mode::Overconsume
    } else if has("clock") {
        Mode::Clock
    } else if has("reach") {
        Mode::Reach
    } else {
        Mode::Correct
    }
}

/// Tries what a sandboxed decoder must not do; one `name=outcome` per try.
fn reach() -> String {
    use std::net::ToSocketAddrs;
    let c = wasmtap_sdk::config();
    let port: u16 = c
        .split("\"port\":")
        .nth(1)
        .map(|r| {
            r.chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
        })
        .and_then(|d| d.parse().ok())
        .unwrap_or(9);
    let verdict = |name: &str, r: Result<String, std::io::Error>| match r {
        Ok(what) => format!("{name}=ok:{what}"),
        Err(e) => format!("{name}=no:{:?}", e.kind()),
    };
    let env: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
    [
        verdict(
            "fs",
            std::fs::read("/etc/hostname").map(|b| b.len().to_string()),
        ),
        verdict("dir", std::fs::read_dir("/").map(|d| d.count().to_string())),
        if env.is_empty() {
            "env=none".to_string()
        } else {
            format!("env=ok:{}", env.join(":"))
        },
        verdict(
            "tcp",
            std::net::TcpStream::connect(("127.0.0.1", port)).map(|s| format!("{s:?}")),
        ),
        verdict(
            "udp",
            std::net::UdpSocket::bind("0.0.0.0:0").map(|s| format!("{s:?}")),
        ),
        verdict(
            "dns",
            "localhost:80"
                .to_socket_addrs()
                .map(|a| a.count().to_string()),
        ),
    ]
    .join(" ")
}

/// The version this build reports (the hot-reload test builds two).
const VERSION: &str = match option_env!("WASMTAP_TEST_PLUGIN_VERSION") {
    Some(v) => v,
    None => "0.0.1",
};

thread_local! {
    static CALLS: Cell<u64> = const { Cell::new(0) };
}

/// The hostile decoder.
pub struct Hostile;

impl Decoder for Hostile {
    type Session = HostileSession;

    fn describe() -> Descriptor {
        let d = Http1::describe();
        Descriptor::new("hostile", VERSION)
            .protocol("http")
            .transport(Transport::Tcp)
            .port(5000)
            .attribute_keys(
                &d.attribute_keys
                    .iter()
                    .map(String::as_str)
                    .collect::<Vec<_>>(),
            )
            .attribute_key("hostile.blob")
            .attribute_key("test.plugin.version")
    }

    fn probe(transport: Transport, dir: Direction, data: &[u8]) -> u8 {
        Http1::probe(transport, dir, data)
    }

    fn new_session(transport: Transport, server_port: u16) -> HostileSession {
        let mode = mode();
        HostileSession {
            inner: Http1::new_session(transport, server_port),
            reached: (mode == Mode::Reach).then(reach),
            mode,
        }
    }
}

/// Per-flow state: the real HTTP/1 session plus the chosen misbehaviour.
pub struct HostileSession {
    inner: Http1Session,
    mode: Mode,
    /// What `reach` got (the `reach` mode).
    reached: Option<String>,
}

fn burn(iterations: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..iterations {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(i));
    }
    x
}

impl Session for HostileSession {
    fn feed(
        &mut self,
        dir: Direction,
        timestamp_ns: u64,
        data: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<usize, DecodeError> {
        let n = CALLS.with(|c| {
            c.set(c.get() + 1);
            c.get()
        });
        match self.mode {
            Mode::Loop => loop {
                std::hint::black_box(burn(1000));
            },
            Mode::Memory => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![n as u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            Mode::Trap3 if n >= 3 => panic!("hostile decoder: third call"),
            Mode::TrapAlways => panic!("hostile decoder: every call"),
            Mode::TrapOnResponse if dir == Direction::ToClient => {
                panic!("hostile decoder: response")
            }
            Mode::Flood => {
                for i in 0..10_000u64 {
                    out.push(Message::one_way(timestamp_ns, timestamp_ns, i, "FLOOD"));
                }
                return Ok(data.len());
            }
            Mode::HugeAttr => {
                out.push(
                    Message::one_way(timestamp_ns, timestamp_ns, 1, "HUGE")
                        .attribute(Attribute::str("hostile.blob", "x".repeat(1 << 20))),
                );
                return Ok(data.len());
            }
            Mode::Print => {
                // WASI output reaches the agent's log; 500 lines test the rate limit.
                eprintln!("hostile stderr line {n}");
                for i in 0..500 {
                    println!("hostile stdout line {n}.{i}");
                }
            }
            Mode::Slow => {
                std::hint::black_box(burn(2_000_000));
            }
            _ => {}
        }
        let before = out.len();
        let r = self.inner.feed(dir, timestamp_ns, data, out);
        // Every message names the build that decoded it (hot-reload test).
        for m in &mut out[before..] {
            m.attributes
                .push(Attribute::str("test.plugin.version", VERSION));
            match self.mode {
                Mode::Escape => {
                    m.operation = format!("GET \u{1b}[2J\u{1b}[31m{}", m.operation);
                    if !m.status_code.is_empty() {
                        m.status_code = format!("{}\u{7}\u{9b}1m", m.status_code);
                    }
                    m.attributes.push(Attribute::str(
                        "hostile.blob",
                        "title \u{1b}]0;owned\u{7} and\nlines\tkept",
                    ));
                }
                Mode::TimeTravel => {
                    m.start_ns = 1;
                    m.end_ns = u64::MAX / 2;
                }
                Mode::Clock => {
                    use std::hash::{BuildHasher, Hasher};
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_nanos());
                    // Hash keys come from WASI random.
                    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
                    h.write_u64(7);
                    m.attributes.push(Attribute::str(
                        "hostile.blob",
                        format!("{now} {}", h.finish()),
                    ));
                }
                Mode::Reach => {
                    let r = self.reached.clone().unwrap_or_default();
                    m.attributes.push(Attribute::str("hostile.blob", r));
                }
                _ => {}
            }
        }
        match (self.mode, r) {
            (Mode::Overconsume, Ok(n)) if dir == Direction::ToClient => Ok(n + data.len() + 7),
            (_, r) => r,
        }
    }

    fn gap(&mut self, dir: Direction, len: u64, out: &mut Vec<Message>) -> Result<(), DecodeError> {
        self.inner.gap(dir, len, out)
    }

    fn close(&mut self, reason: CloseReason, timestamp_ns: u64, out: &mut Vec<Message>) {
        self.inner.close(reason, timestamp_ns, out);
    }
}

wasmtap_sdk::export_decoder!(Hostile);
