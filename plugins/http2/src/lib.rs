//! HTTP/2 and gRPC decoder plugin for wasmtap (cleartext HTTP/2: prior
//! knowledge, or a capture taken where TLS ends).
//!
//! Frames are cut by the SDK's framing adapter (9-byte header, 24-bit
//! length). Each stream is one exchange, correlated by its id: the request
//! from its first HEADERS frame to the client's END_STREAM, the response from
//! the server's first HEADERS frame to its END_STREAM (trailers included), or
//! a RST_STREAM. Streams are concurrent and answered in any order.
//! HEADERS, CONTINUATION and PUSH_PROMISE blocks go through HPACK per
//! direction ([`hpack`]), which recovers from a capture that starts
//! mid-connection: what cannot be known decodes as unknown (`*`, counted in
//! `wasmtap.http2.hpack_unknown`), never as a wrong value. gRPC calls (a
//! `content-type` of `application/grpc`) are named `package.Service/Method`,
//! with `rpc.*` attributes, the status from the trailers, and message
//! counts; other streams get the HTTP attributes the HTTP/1 decoder gives.

pub mod hpack;

use std::collections::BTreeMap;

use hpack::Field;
use wasmtap_sdk::framing::{Frame, FrameHandler, Framed, Framing, LengthField};
use wasmtap_sdk::{Attribute, DecodeError, Decoder, Descriptor, Direction, Message, Transport};

/// The HTTP/2 decoder.
pub struct Http2;

/// The connection preface a client sends first.
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Streams tracked at once per connection (servers allow 100 to 250
/// concurrent streams; the oldest is forgotten beyond this).
pub const MAX_STREAMS: usize = 1024;
/// Largest header block kept (a longer one is dropped and the direction's
/// HPACK context restarts as after a mid-stream start).
pub const MAX_BLOCK: usize = 256 << 10;

/// Attribute keys.
pub mod keys {
    /// Request method.
    pub const METHOD: &str = "http.request.method";
    /// A method not in the standard set.
    pub const METHOD_ORIGINAL: &str = "http.request.method_original";
    /// Path.
    pub const PATH: &str = "url.path";
    /// Query, values masked.
    pub const QUERY: &str = "url.query";
    /// Scheme.
    pub const SCHEME: &str = "url.scheme";
    /// `:authority` without its port.
    pub const SERVER: &str = "server.address";
    /// User agent.
    pub const USER_AGENT: &str = "user_agent.original";
    /// `2`.
    pub const VERSION: &str = "network.protocol.version";
    /// Request body bytes (DATA payload).
    pub const REQUEST_BODY: &str = "http.request.body.size";
    /// Response status.
    pub const STATUS: &str = "http.response.status_code";
    /// Response body bytes.
    pub const RESPONSE_BODY: &str = "http.response.body.size";
    /// `grpc`.
    pub const RPC_SYSTEM: &str = "rpc.system";
    /// gRPC service (`package.Service`).
    pub const RPC_SERVICE: &str = "rpc.service";
    /// gRPC method.
    pub const RPC_METHOD: &str = "rpc.method";
    /// gRPC status code.
    pub const GRPC_STATUS: &str = "rpc.grpc.status_code";
    /// The error name of a failed call (`INTERNAL`).
    pub const ERROR_TYPE: &str = "error.type";
    /// gRPC messages the client sent.
    pub const REQUEST_MESSAGES: &str = "wasmtap.grpc.request_messages";
    /// gRPC messages the server sent.
    pub const RESPONSE_MESSAGES: &str = "wasmtap.grpc.response_messages";
    /// A message was compressed.
    pub const COMPRESSED: &str = "wasmtap.grpc.compressed";
    /// The stream id.
    pub const STREAM: &str = "wasmtap.http2.stream_id";
    /// Header fields that could not be decoded (a capture that started
    /// mid-connection): the span's values are only those known.
    pub const HPACK_UNKNOWN: &str = "wasmtap.http2.hpack_unknown";
    /// RST_STREAM error code name, when a side reset the stream.
    pub const RESET: &str = "wasmtap.http2.reset";
    /// The stream was pushed by the server (PUSH_PROMISE).
    pub const PUSHED: &str = "wasmtap.http2.pushed";
    /// The `grpc-message` of a failed call.
    pub const GRPC_MESSAGE: &str = "wasmtap.grpc.message";
    /// Every key.
    pub const ALL: [&str; 26] = [
        wasmtap_sdk::trace::PARENT,
        wasmtap_sdk::trace::STATE,
        METHOD,
        METHOD_ORIGINAL,
        PATH,
        QUERY,
        SCHEME,
        SERVER,
        USER_AGENT,
        VERSION,
        REQUEST_BODY,
        STATUS,
        RESPONSE_BODY,
        RPC_SYSTEM,
        RPC_SERVICE,
        RPC_METHOD,
        GRPC_STATUS,
        ERROR_TYPE,
        REQUEST_MESSAGES,
        RESPONSE_MESSAGES,
        COMPRESSED,
        STREAM,
        HPACK_UNKNOWN,
        RESET,
        PUSHED,
        GRPC_MESSAGE,
    ];
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const PRIORITY: u8 = 2;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PUSH_PROMISE: u8 = 5;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const WINDOW_UPDATE: u8 = 8;
const CONTINUATION: u8 = 9;

const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY_FLAG: u8 = 0x20;

const METHODS: [&str; 9] = [
    "GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH", "CONNECT", "TRACE",
];

/// gRPC status names, by code.
pub const GRPC_CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Server-span errors for gRPC (semantic conventions): UNKNOWN,
/// DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE, DATA_LOSS.
fn grpc_server_error(code: i64) -> bool {
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// RST_STREAM / GOAWAY error code names (RFC 9113 §7).
fn h2_error(code: u32) -> String {
    const NAMES: [&str; 14] = [
        "NO_ERROR",
        "PROTOCOL_ERROR",
        "INTERNAL_ERROR",
        "FLOW_CONTROL_ERROR",
        "SETTINGS_TIMEOUT",
        "STREAM_CLOSED",
        "FRAME_SIZE_ERROR",
        "REFUSED_STREAM",
        "CANCEL",
        "COMPRESSION_ERROR",
        "CONNECT_ERROR",
        "ENHANCE_YOUR_CALM",
        "INADEQUATE_SECURITY",
        "HTTP_1_1_REQUIRED",
    ];
    NAMES
        .get(code as usize)
        .map_or_else(|| format!("0x{code:x}"), |s| (*s).to_string())
}

/// One side of a stream.
#[derive(Debug, Default)]
struct Half {
    started: bool,
    start_ns: u64,
    end_ns: u64,
    /// Frame bytes on the wire.
    size: u64,
    /// DATA payload bytes.
    body: u64,
    /// Header fields (headers and trailers), in order.
    fields: Vec<Field>,
    /// gRPC messages: completed count, bytes left in the current one, and
    /// the bytes of a message header seen so far.
    messages: u32,
    msg_left: u64,
    msg_header: Vec<u8>,
    compressed: bool,
    /// gRPC framing could not be followed (a DATA frame's payload was cut).
    lost_track: bool,
    done: bool,
}

#[derive(Debug, Default)]
struct Stream {
    req: Half,
    resp: Half,
    request_sent: bool,
    pushed: bool,
    reset: Option<(Direction, u32)>,
    unknown: u64,
}

/// A header block (HEADERS or PUSH_PROMISE, then CONTINUATION frames).
#[derive(Debug)]
struct Block {
    stream: u32,
    bytes: Vec<u8>,
    /// The HEADERS frame ended the stream.
    end: bool,
    /// The stream a PUSH_PROMISE promises.
    promised: Option<u32>,
}

/// Per-flow state.
#[derive(Debug)]
pub struct Http2Handler {
    hpack: [hpack::Decoder; 2],
    streams: BTreeMap<u32, Stream>,
    /// A header block being collected per direction.
    block: [Option<Block>; 2],
    /// Whether the client's preface was seen (HPACK exact from the start).
    saw_start: bool,
    /// The connection was upgraded from HTTP/1.1 (`Upgrade: h2c`): stream
    /// 1 answers the upgrade request, which the HTTP/1 decoder reported.
    upgraded: bool,
}

/// The session type.
pub type Http2Session = Framed<Http2Handler>;

impl Default for Http2Handler {
    fn default() -> Self {
        Self {
            hpack: [hpack::Decoder::new(false), hpack::Decoder::new(false)],
            streams: BTreeMap::new(),
            block: [None, None],
            saw_start: false,
            upgraded: false,
        }
    }
}

impl Http2Handler {
    /// A handler for a connection upgraded from HTTP/1.1 (`Upgrade: h2c`,
    /// then `101`): the answer on stream 1 is the upgrade request's, paired
    /// by order with the request the HTTP/1 decoder reported.
    pub fn upgraded() -> Self {
        Self {
            upgraded: true,
            ..Self::default()
        }
    }
}

impl Decoder for Http2 {
    type Session = Http2Session;

    fn describe() -> Descriptor {
        Descriptor::new("http2", env!("CARGO_PKG_VERSION"))
            .protocol("http")
            .transport(Transport::Tcp)
            .port(50051)
            .attribute_keys(&keys::ALL)
    }

    fn probe(transport: Transport, _dir: Direction, data: &[u8]) -> u8 {
        if transport != Transport::Tcp {
            return 0;
        }
        probe(data)
    }

    fn new_session(_transport: Transport, _server_port: u16) -> Http2Session {
        Framed::new(Http2Handler::default())
    }
}

/// One frame on the wire (9-byte header, then `payload`): for tests and
/// tools that write HTTP/2.
pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    v.extend([kind, flags]);
    v.extend(stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Whether a 9-byte frame header (and its length) is believable.
pub fn plausible_header(h: &[u8], len: u64) -> bool {
    let Some(h) = h.get(..9) else {
        // Judge what is there: the length alone.
        return len >= 9 && len - 9 <= 1 << 24;
    };
    let payload = len.saturating_sub(9);
    let (kind, flags) = (h[3], h[4]);
    let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
    if stream & 0x8000_0000 != 0 || payload > 1 << 24 {
        return false;
    }
    let on_stream = stream != 0;
    match kind {
        DATA => on_stream && flags & !(END_STREAM | PADDED) == 0,
        HEADERS => on_stream && flags & !(END_STREAM | END_HEADERS | PADDED | PRIORITY_FLAG) == 0,
        PRIORITY => on_stream && payload == 5 && flags == 0,
        RST_STREAM => on_stream && payload == 4 && flags == 0,
        SETTINGS => {
            !on_stream
                && payload.is_multiple_of(6)
                && flags & !1 == 0
                && (flags == 0 || payload == 0)
        }
        PUSH_PROMISE => on_stream && payload >= 4 && flags & !(END_HEADERS | PADDED) == 0,
        PING => !on_stream && payload == 8 && flags & !1 == 0,
        GOAWAY => !on_stream && payload >= 8 && flags == 0,
        WINDOW_UPDATE => payload == 4 && flags == 0,
        CONTINUATION => on_stream && flags & !END_HEADERS == 0,
        _ => false,
    }
}

/// Confidence that `data`, a flow's first bytes, is HTTP/2.
pub fn probe(data: &[u8]) -> u8 {
    if data.starts_with(PREFACE)
        || (data.len() < PREFACE.len() && PREFACE.starts_with(data) && data.len() >= 8)
    {
        return 100;
    }
    // Mid-connection: two frames in a row that fit together.
    let Some(h) = data.get(..9) else { return 0 };
    let len = 9 + u64::from(u32::from_be_bytes([0, h[0], h[1], h[2]]));
    if !plausible_header(h, len) {
        return 0;
    }
    match data.get(len as usize..len as usize + 9) {
        Some(n) => {
            let nlen = 9 + u64::from(u32::from_be_bytes([0, n[0], n[1], n[2]]));
            if plausible_header(n, nlen) { 70 } else { 0 }
        }
        None if data.len() as u64 == len => 60,
        None => 0,
    }
}

fn field<'a>(fields: &'a [Field], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|f| f.name.as_deref() == Some(name))
        .and_then(|f| f.value.as_deref())
}

/// The last value of `name` (trailers come after headers).
fn last<'a>(fields: &'a [Field], name: &str) -> Option<&'a str> {
    fields
        .iter()
        .rev()
        .find(|f| f.name.as_deref() == Some(name))
        .and_then(|f| f.value.as_deref())
}

fn mask_query(q: &str) -> String {
    q.split('&')
        .map(|kv| match kv.split_once('=') {
            Some((k, _)) => format!("{k}=?"),
            None => kv.to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn is_grpc(fields: &[Field]) -> bool {
    if let Some(c) = field(fields, "content-type") {
        return c.starts_with("application/grpc");
    }
    // The content type unknown (an entry older than the capture): a POST to
    // `/package.Service/Method` is a gRPC call.
    let unknown = fields.iter().any(|f| f.name.is_none());
    unknown
        && field(fields, ":method") == Some("POST")
        && field(fields, ":path").is_some_and(grpc_path)
}

/// Whether a path has gRPC's shape: `/package.Service/Method`.
fn grpc_path(p: &str) -> bool {
    let word = |w: &str| {
        !w.is_empty()
            && w.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.')
    };
    match p.strip_prefix('/').and_then(|r| r.split_once('/')) {
        Some((svc, m)) => svc.contains('.') && word(svc) && word(m) && !m.contains('.'),
        None => false,
    }
}

impl Half {
    fn touch(&mut self, ts_start: u64, ts_end: u64, len: u64) {
        if !self.started {
            self.started = true;
            self.start_ns = ts_start;
        }
        self.end_ns = ts_end;
        self.size += len;
    }

    /// Follows gRPC's length-prefixed messages through a DATA payload.
    fn grpc_data(&mut self, mut p: &[u8], whole: bool) {
        if self.lost_track {
            return;
        }
        while !p.is_empty() {
            if self.msg_left > 0 {
                let n = self.msg_left.min(p.len() as u64);
                self.msg_left -= n;
                p = &p[n as usize..];
                continue;
            }
            let need = 5 - self.msg_header.len();
            let take = need.min(p.len());
            self.msg_header.extend_from_slice(&p[..take]);
            p = &p[take..];
            if self.msg_header.len() == 5 {
                let h = std::mem::take(&mut self.msg_header);
                self.compressed |= h[0] == 1;
                self.messages += 1;
                self.msg_left = u64::from(u32::from_be_bytes([h[1], h[2], h[3], h[4]]));
            }
        }
        if !whole {
            // The rest of the payload was not seen: lengths past it are unknown.
            self.lost_track = true;
        }
    }
}

impl Http2Handler {
    fn stream(&mut self, id: u32) -> &mut Stream {
        if !self.streams.contains_key(&id)
            && self.streams.len() >= MAX_STREAMS
            && let Some(&k) = self.streams.keys().next()
        {
            self.streams.remove(&k);
        }
        self.streams.entry(id).or_default()
    }

    /// Emits the request of `id` (once).
    fn emit_request(&mut self, id: u32, out: &mut Vec<Message>) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.request_sent || !s.req.started {
            return;
        }
        s.request_sent = true;
        let f = &s.req.fields;
        let grpc = is_grpc(f);
        let method = field(f, ":method");
        let path_full = field(f, ":path");
        let (path, query) = match path_full {
            Some(p) => match p.split_once('?') {
                Some((a, b)) => (Some(a), Some(b)),
                None => (Some(p), None),
            },
            None => (None, None),
        };
        let op = if grpc {
            path.map_or("*".to_string(), |p| p.trim_start_matches('/').to_string())
        } else {
            match method {
                Some(m) if METHODS.contains(&m) => m.to_string(),
                Some(_) => "HTTP".to_string(),
                None => "*".to_string(),
            }
        };
        let mut m = Message::request(s.req.start_ns, s.req.end_ns, s.req.size, &op)
            .correlate(u64::from(id))
            .attribute(Attribute::str(keys::VERSION, "2"))
            .attribute(Attribute::int(keys::STREAM, i64::from(id)));
        if grpc {
            m = m.attribute(Attribute::str(keys::RPC_SYSTEM, "grpc"));
            if let Some((svc, meth)) = path.and_then(|p| p.trim_start_matches('/').rsplit_once('/'))
            {
                m = m
                    .attribute(Attribute::str(keys::RPC_SERVICE, svc))
                    .attribute(Attribute::str(keys::RPC_METHOD, meth));
            }
            m = m.attribute(Attribute::int(
                keys::REQUEST_MESSAGES,
                i64::from(s.req.messages),
            ));
            if s.req.compressed {
                m = m.attribute(Attribute::boolean(keys::COMPRESSED, true));
            }
        } else {
            match method {
                Some(x) if METHODS.contains(&x) => m = m.attribute(Attribute::str(keys::METHOD, x)),
                Some(x) => {
                    m = m
                        .attribute(Attribute::str(keys::METHOD, "_OTHER"))
                        .attribute(Attribute::str(keys::METHOD_ORIGINAL, x))
                }
                None => {}
            }
            if let Some(p) = path {
                m = m.attribute(Attribute::str(keys::PATH, p));
            }
            if let Some(q) = query {
                m = m.attribute(Attribute::str(keys::QUERY, mask_query(q)));
            }
        }
        if let Some(a) = field(f, ":authority").or_else(|| field(f, "host")) {
            m = m.attribute(Attribute::str(keys::SERVER, strip_port(a)));
        }
        if let Some(sch) = field(f, ":scheme") {
            m = m.attribute(Attribute::str(keys::SCHEME, sch));
        }
        if let Some(ua) = field(f, "user-agent") {
            m = m.attribute(Attribute::str(keys::USER_AGENT, ua));
        }
        if let Some(tp) = wasmtap_sdk::trace::traceparent(|n| field(f, n)) {
            m = m.attribute(Attribute::str(wasmtap_sdk::trace::PARENT, tp));
            if let Some(st) = field(f, "tracestate") {
                m = m.attribute(Attribute::str(wasmtap_sdk::trace::STATE, st));
            }
        }
        m = m.attribute(Attribute::int(keys::REQUEST_BODY, s.req.body as i64));
        if s.pushed {
            m = m.attribute(Attribute::boolean(keys::PUSHED, true));
        }
        if s.unknown > 0 {
            m = m.attribute(Attribute::int(keys::HPACK_UNKNOWN, s.unknown as i64));
        }
        out.push(m);
    }

    /// Emits the response of `id` and forgets the stream.
    fn emit_response(&mut self, id: u32, out: &mut Vec<Message>) {
        self.emit_request(id, out);
        let Some(s) = self.streams.remove(&id) else {
            return;
        };
        let grpc = is_grpc(&s.req.fields) || is_grpc(&s.resp.fields);
        let r = &s.resp;
        let (start, end) = if r.started {
            (r.start_ns, r.end_ns)
        } else {
            (s.req.end_ns, s.req.end_ns)
        };
        let mut m = Message::response(start, end, r.size);
        if !(self.upgraded && id == 1) {
            m = m.correlate(u64::from(id));
        }
        let status = field(&r.fields, ":status").and_then(|v| v.parse::<i64>().ok());
        let grpc_status = last(&r.fields, "grpc-status").and_then(|v| v.parse::<i64>().ok());
        if let Some(st) = status {
            m = m.attribute(Attribute::int(keys::STATUS, st));
        }
        m = m.attribute(Attribute::int(keys::RESPONSE_BODY, r.body as i64));
        if grpc {
            m = m.attribute(Attribute::int(
                keys::RESPONSE_MESSAGES,
                i64::from(r.messages),
            ));
            if r.compressed {
                m = m.attribute(Attribute::boolean(keys::COMPRESSED, true));
            }
        }
        let unknown = s.unknown;
        if unknown > 0 {
            m = m.attribute(Attribute::int(keys::HPACK_UNKNOWN, unknown as i64));
        }
        m = match (grpc, grpc_status, status, s.reset) {
            (true, Some(code), _, _) => {
                let name = GRPC_CODES.get(code as usize).copied().unwrap_or("UNKNOWN");
                let mut m = m.attribute(Attribute::int(keys::GRPC_STATUS, code));
                if code != 0 {
                    m = m.attribute(Attribute::str(keys::ERROR_TYPE, name));
                    if let Some(msg) = last(&r.fields, "grpc-message") {
                        m = m.attribute(Attribute::str(keys::GRPC_MESSAGE, msg));
                    }
                }
                if grpc_server_error(code) {
                    m.error(&code.to_string())
                } else {
                    m.ok(&code.to_string())
                }
            }
            (_, _, _, Some((by, code))) => {
                let name = h2_error(code);
                let m = m.attribute(Attribute::str(keys::RESET, name.clone()));
                // The server giving up on a stream is its error; a client
                // cancelling is not.
                if by == Direction::ToClient && code != 0 && code != 8 {
                    m.error(&name)
                } else {
                    m.ok(&name)
                }
            }
            (_, _, Some(st), _) if st >= 500 => m.error(&st.to_string()),
            (_, _, Some(st), _) => m.ok(&st.to_string()),
            _ => m,
        };
        out.push(m);
    }

    /// A complete header block of `dir` on `stream`.
    fn headers(&mut self, dir: Direction, b: Block, f: &Frame<'_>, out: &mut Vec<Message>) {
        let Block {
            stream,
            bytes: block,
            end,
            promised,
        } = b;
        let d = dir.index();
        let mut fields = Vec::new();
        let before = self.hpack[d].unknown;
        if self.hpack[d].decode(&block, &mut fields).is_err() {
            // The context is lost: start again as after a mid-stream start.
            self.hpack[d] = hpack::Decoder::new(false);
            fields.clear();
        }
        // A reset context counts from zero again (found by fuzzing: the
        // subtraction overflowed).
        let unknown = self.hpack[d].unknown.saturating_sub(before);
        if let Some(p) = promised {
            // A pushed stream: its request is the promised header block.
            let s = self.stream(p);
            s.pushed = true;
            s.unknown += unknown;
            s.req.touch(f.start_ns, f.end_ns, 0);
            s.req.fields = fields;
            s.req.done = true;
            self.emit_request(p, out);
            return;
        }
        let s = self.stream(stream);
        s.unknown += unknown;
        let half = match dir {
            Direction::ToServer => &mut s.req,
            Direction::ToClient => &mut s.resp,
        };
        half.fields.extend(fields);
        if end {
            half.done = true;
            match dir {
                Direction::ToServer => self.emit_request(stream, out),
                Direction::ToClient => self.emit_response(stream, out),
            }
        }
    }
}

impl FrameHandler for Http2Handler {
    const RESYNC: bool = true;

    fn framing(&self, _dir: Direction) -> Framing {
        Framing::Length(LengthField::new(0, 3, true).adjust(6))
    }

    fn max_frame(&self) -> u64 {
        (1 << 24) + 9
    }

    fn plausible(&self, _dir: Direction, head: &[u8], len: u64) -> bool {
        plausible_header(head, len)
    }

    fn frame(
        &mut self,
        dir: Direction,
        f: Frame<'_>,
        out: &mut Vec<Message>,
    ) -> Result<(), DecodeError> {
        let h = f.head;
        if h.len() < 9 {
            return Ok(());
        }
        let (kind, flags) = (h[3], h[4]);
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        let whole = h.len() as u64 == f.len;
        let mut p = &h[9..];
        let d = dir.index();
        if !self.saw_start
            && kind == SETTINGS
            && dir == Direction::ToServer
            && f.offset == PREFACE.len() as u64
        {
            // The client's first SETTINGS right after the preface: the
            // connection is seen from its start, so HPACK is exact.
            self.saw_start = true;
            self.hpack = [hpack::Decoder::new(true), hpack::Decoder::new(true)];
        }
        // Padding and priority fields.
        let strip = |p: &[u8], padded: bool, prio: bool| -> Option<Vec<u8>> {
            let mut p = p;
            let mut pad = 0usize;
            if padded {
                pad = usize::from(*p.first()?);
                p = p.get(1..)?;
            }
            if prio {
                p = p.get(5..)?;
            }
            let keep = p.len().checked_sub(pad)?;
            Some(p[..keep].to_vec())
        };
        match kind {
            DATA => {
                let s = self.stream(stream);
                let half = match dir {
                    Direction::ToServer => &mut s.req,
                    Direction::ToClient => &mut s.resp,
                };
                half.touch(f.start_ns, f.end_ns, f.len);
                let pad = if flags & PADDED != 0 {
                    p.first().map_or(0, |&x| u64::from(x) + 1)
                } else {
                    0
                };
                half.body += (f.len - 9).saturating_sub(pad);
                if flags & PADDED != 0 {
                    p = p.get(1..).unwrap_or_default();
                }
                // gRPC framing is followed on every stream, reported for gRPC only.
                let payload = if whole {
                    let pad = pad.saturating_sub(1) as usize;
                    &p[..p.len().saturating_sub(pad)]
                } else {
                    p
                };
                half.grpc_data(payload, whole);
                if flags & END_STREAM != 0 {
                    half.done = true;
                    match dir {
                        Direction::ToServer => self.emit_request(stream, out),
                        Direction::ToClient => self.emit_response(stream, out),
                    }
                }
            }
            HEADERS | PUSH_PROMISE => {
                let s = self.stream(stream);
                let half = match dir {
                    Direction::ToServer => &mut s.req,
                    Direction::ToClient => &mut s.resp,
                };
                half.touch(f.start_ns, f.end_ns, f.len);
                let Some(mut block) = strip(
                    p,
                    flags & PADDED != 0,
                    kind == HEADERS && flags & PRIORITY_FLAG != 0,
                ) else {
                    return Ok(());
                };
                let mut promised = None;
                if kind == PUSH_PROMISE {
                    if block.len() < 4 {
                        return Ok(());
                    }
                    promised = Some(
                        u32::from_be_bytes([block[0], block[1], block[2], block[3]]) & 0x7fff_ffff,
                    );
                    block.drain(..4);
                }
                let end = kind == HEADERS && flags & END_STREAM != 0;
                if !whole {
                    // A header block longer than the head: the context is lost.
                    self.hpack[d] = hpack::Decoder::new(false);
                    return Ok(());
                }
                let b = Block {
                    stream,
                    bytes: block,
                    end,
                    promised,
                };
                if flags & END_HEADERS != 0 {
                    self.headers(dir, b, &f, out);
                } else {
                    self.block[d] = Some(b);
                }
            }
            CONTINUATION => {
                let Some(mut b) = self.block[d].take() else {
                    return Ok(());
                };
                if b.stream != stream || !whole || b.bytes.len() + p.len() > MAX_BLOCK {
                    self.hpack[d] = hpack::Decoder::new(false);
                    return Ok(());
                }
                let s = self.stream(stream);
                match dir {
                    Direction::ToServer => s.req.touch(f.start_ns, f.end_ns, f.len),
                    Direction::ToClient => s.resp.touch(f.start_ns, f.end_ns, f.len),
                }
                b.bytes.extend_from_slice(p);
                if flags & END_HEADERS != 0 {
                    self.headers(dir, b, &f, out);
                } else {
                    self.block[d] = Some(b);
                }
            }
            RST_STREAM => {
                let code = p
                    .get(..4)
                    .map_or(0, |c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.reset = Some((dir, code));
                    let half = match dir {
                        Direction::ToServer => &mut s.req,
                        Direction::ToClient => &mut s.resp,
                    };
                    half.touch(f.start_ns, f.end_ns, f.len);
                    if !s.resp.started {
                        s.resp.touch(f.start_ns, f.end_ns, 0);
                    }
                    self.emit_response(stream, out);
                }
            }
            GOAWAY if dir == Direction::ToClient => {
                // Streams above the last one the server processed were
                // refused (the client may retry them): answered as such.
                let last_id = p.get(..4).map_or(u32::MAX, |c| {
                    u32::from_be_bytes([c[0], c[1], c[2], c[3]]) & 0x7fff_ffff
                });
                let refused: Vec<u32> = self
                    .streams
                    .range(last_id.saturating_add(1)..)
                    .map(|(k, _)| *k)
                    .filter(|k| k % 2 == 1)
                    .collect();
                for id in refused {
                    if let Some(s) = self.streams.get_mut(&id) {
                        s.reset = Some((Direction::ToServer, 7));
                        s.resp.touch(f.start_ns, f.end_ns, 0);
                    }
                    self.emit_response(id, out);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, _reason: wasmtap_sdk::CloseReason, _ts: u64, out: &mut Vec<Message>) {
        // Streams still open: a response whose headers came is reported
        // with what is known; a request alone is handed to the host, which
        // knows whether the capture or the service left it unanswered.
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            match self.streams.get(&id) {
                Some(s) if s.resp.started => self.emit_response(id, out),
                Some(_) => self.emit_request(id, out),
                None => {}
            }
        }
    }

    fn lost(&mut self, dir: Direction, _len: u64, _out: &mut Vec<Message>) {
        // Header blocks may have been lost with the bytes: what the table
        // held is no longer certain.
        let d = dir.index();
        self.hpack[d] = hpack::Decoder::new(false);
        self.block[d] = None;
    }
}

#[cfg(feature = "export")]
wasmtap_sdk::export_decoder!(Http2);

#[cfg(test)]
mod tests;
