//! Kafka decoder plugin for wasmtap.
//!
//! Every API is recognised by its key (named when known, by number when
//! newer than this decoder), request header versions 0 to 2 (flexible
//! versions with tagged fields), responses paired by correlation id (a
//! broker may answer a connection's requests in any order the protocol
//! allows; the host pairs by id, not by order). Error codes come from the
//! responses of the APIs walked here (Produce, Fetch, Metadata, ListOffsets,
//! OffsetCommit, OffsetFetch, FindCoordinator, the group APIs, ApiVersions,
//! SASL, InitProducerId, DescribeGroups, CreateTopics): top level and per
//! topic, partition or group; any non-zero code is an error, named in
//! `error.type`. Produce requests with `acks=0` expect no answer: they are
//! one-way messages, never unanswered requests.
//!
//! Frames are cut by the SDK's [`Framed`] adapter: a 4-byte length, the
//! first 64 KiB of a frame parsed and the rest (record data) skipped as it
//! streams. A capture that starts mid-connection, or loses bytes, is
//! resynchronised on the next believable request (known API key and
//! version, printable client id) or on the response to a request seen.

pub mod api;
pub mod parser;
pub mod wire;

use std::collections::VecDeque;

use parser::Request;
use wasmtap_sdk::framing::{Frame, FrameHandler, Framed, Framing, LengthField};
use wasmtap_sdk::{Attribute, DecodeError, Decoder, Descriptor, Direction, Message, Transport};

/// The Kafka decoder.
pub struct Kafka;

/// Attribute keys.
pub mod keys {
    /// Always `kafka`.
    pub const SYSTEM: &str = "messaging.system";
    /// The API (`Produce`, `Fetch`, `Metadata`, ...).
    pub const OPERATION_NAME: &str = "messaging.operation.name";
    /// `send` (Produce), `receive` (Fetch), `settle` (OffsetCommit).
    pub const OPERATION_TYPE: &str = "messaging.operation.type";
    /// The first topic of the request.
    pub const DESTINATION: &str = "messaging.destination.name";
    /// The partition, when the request names exactly one.
    pub const PARTITION: &str = "messaging.destination.partition.id";
    /// Records produced (request) or fetched (response).
    pub const MESSAGE_COUNT: &str = "messaging.batch.message_count";
    /// The client id.
    pub const CLIENT_ID: &str = "messaging.client.id";
    /// The consumer group of group APIs.
    pub const GROUP: &str = "messaging.consumer.group.name";
    /// The name of the first non-zero error code.
    pub const ERROR_TYPE: &str = "error.type";
    /// API version.
    pub const API_VERSION: &str = "wasmtap.kafka.api_version";
    /// Topics the request names.
    pub const TOPIC_COUNT: &str = "wasmtap.kafka.topic_count";
    /// Partitions the request names.
    pub const PARTITION_COUNT: &str = "wasmtap.kafka.partition_count";
    /// Produce: required acks (0, 1, -1 for all).
    pub const ACKS: &str = "wasmtap.kafka.acks";
    /// Produce: part of a transaction.
    pub const TRANSACTIONAL: &str = "wasmtap.kafka.transactional";
    /// Bytes of record data produced or fetched.
    pub const RECORD_BYTES: &str = "wasmtap.kafka.record_bytes";
    /// Entries of the response with a non-zero error code.
    pub const ERROR_COUNT: &str = "wasmtap.kafka.error_count";
    /// Every key.
    pub const ALL: [&str; 16] = [
        SYSTEM,
        OPERATION_NAME,
        OPERATION_TYPE,
        DESTINATION,
        PARTITION,
        MESSAGE_COUNT,
        CLIENT_ID,
        GROUP,
        ERROR_TYPE,
        API_VERSION,
        TOPIC_COUNT,
        PARTITION_COUNT,
        ACKS,
        TRANSACTIONAL,
        RECORD_BYTES,
        ERROR_COUNT,
    ];
}

/// Requests awaiting their response, per connection (the oldest is
/// forgotten beyond this; the host still pairs the response by id).
pub const MAX_PENDING: usize = 1024;

/// Per-flow state: the requests awaiting a response, by correlation id.
#[derive(Debug, Default)]
pub struct KafkaHandler {
    pending: VecDeque<(i32, i16, i16)>,
}

/// The session type.
pub type KafkaSession = Framed<KafkaHandler>;

impl Decoder for Kafka {
    type Session = KafkaSession;

    fn describe() -> Descriptor {
        Descriptor::new("kafka", env!("CARGO_PKG_VERSION"))
            .protocol("kafka")
            .transport(Transport::Tcp)
            .port(9092)
            .attribute_keys(&keys::ALL)
    }

    fn probe(transport: Transport, dir: Direction, data: &[u8]) -> u8 {
        if transport != Transport::Tcp || dir != Direction::ToServer {
            return 0;
        }
        probe(data)
    }

    fn new_session(_transport: Transport, _server_port: u16) -> KafkaSession {
        Framed::new(KafkaHandler::default())
    }
}

/// Confidence that `data`, a flow's first bytes to the server, is a Kafka request.
pub fn probe(data: &[u8]) -> u8 {
    let Some(size) = data.get(..4) else { return 0 };
    let size = u32::from_be_bytes([size[0], size[1], size[2], size[3]]) as usize;
    if !(10..=(100 << 20)).contains(&size) {
        return 0;
    }
    let frame = &data[..data.len().min(size + 4)];
    let Ok((api_key, _, _, client, _)) = parser::request_header(frame) else {
        return 0;
    };
    // Every client library sets a client id ("producer-1", "rdkafka",
    // "sarama", "kafka-python-2.2"): on a guess, require one, printable.
    if !client.is_some_and(|c| !c.is_empty() && parser::printable(c)) {
        return 0;
    }
    let whole = data.len() >= size + 4;
    match (whole, api_key) {
        // The whole frame, and a body that parses to its end where walked.
        (true, _) => 90,
        // ApiVersions and Metadata open most connections.
        (false, api::key::API_VERSIONS | api::key::METADATA) => 70,
        (false, _) => 60,
    }
}

fn correlation(c: i32) -> u64 {
    u64::from(c as u32)
}

fn operation_type(api_key: i16) -> Option<&'static str> {
    match api_key {
        api::key::PRODUCE => Some("send"),
        api::key::FETCH => Some("receive"),
        api::key::OFFSET_COMMIT => Some("settle"),
        _ => None,
    }
}

fn request_message(q: &Request, f: &Frame<'_>) -> Message {
    let op = api::name(q.api_key).map_or_else(|| format!("api-{}", q.api_key), str::to_string);
    let one_way = q.api_key == api::key::PRODUCE && q.acks == Some(0);
    let mut m = if one_way {
        Message::one_way(f.start_ns, f.end_ns, f.len, &op)
    } else {
        Message::request(f.start_ns, f.end_ns, f.len, &op).correlate(correlation(q.correlation))
    };
    m = m
        .attribute(Attribute::str(keys::SYSTEM, "kafka"))
        .attribute(Attribute::str(keys::OPERATION_NAME, op))
        .attribute(Attribute::int(keys::API_VERSION, i64::from(q.version)));
    if let Some(t) = operation_type(q.api_key) {
        m = m.attribute(Attribute::str(keys::OPERATION_TYPE, t));
    }
    if let Some(c) = &q.client_id {
        m = m.attribute(Attribute::str(keys::CLIENT_ID, c.clone()));
    }
    if let Some(t) = &q.topic {
        m = m.attribute(Attribute::str(keys::DESTINATION, t.clone()));
    }
    if q.topics > 0 {
        m = m
            .attribute(Attribute::int(keys::TOPIC_COUNT, i64::from(q.topics)))
            .attribute(Attribute::int(
                keys::PARTITION_COUNT,
                i64::from(q.partitions),
            ));
    }
    if let Some(p) = q.partition {
        m = m.attribute(Attribute::str(keys::PARTITION, p.to_string()));
    }
    if let Some(g) = &q.group {
        m = m.attribute(Attribute::str(keys::GROUP, g.clone()));
    }
    if let Some(a) = q.acks {
        m = m
            .attribute(Attribute::int(keys::ACKS, i64::from(a)))
            .attribute(Attribute::boolean(keys::TRANSACTIONAL, q.transactional));
    }
    if let Some(n) = q.records {
        m = m.attribute(Attribute::int(keys::MESSAGE_COUNT, n as i64));
    }
    if let Some(n) = q.record_bytes {
        m = m.attribute(Attribute::int(keys::RECORD_BYTES, n as i64));
    }
    m
}

impl KafkaHandler {
    fn remember(&mut self, q: &Request) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
        }
        self.pending
            .push_back((q.correlation, q.api_key, q.version));
    }

    fn take(&mut self, correlation: i32) -> Option<(i16, i16)> {
        let i = self.pending.iter().position(|p| p.0 == correlation)?;
        self.pending.remove(i).map(|p| (p.1, p.2))
    }
}

impl FrameHandler for KafkaHandler {
    const RESYNC: bool = true;

    fn framing(&self, _dir: Direction) -> Framing {
        Framing::Length(LengthField::new(0, 4, true))
    }

    fn max_frame(&self) -> u64 {
        // fetch.max.bytes defaults to 50 MiB; leave room above it.
        128 << 20
    }

    fn plausible(&self, dir: Direction, head: &[u8], len: u64) -> bool {
        match dir {
            Direction::ToServer => {
                if len < 12 {
                    return false;
                }
                let i16_at =
                    |i: usize| head.get(i..i + 2).map(|b| i16::from_be_bytes([b[0], b[1]]));
                let i32_at = |i: usize| {
                    head.get(i..i + 4)
                        .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
                };
                if let (Some(k), Some(v)) = (i16_at(4), i16_at(6))
                    && !api::known(k, v)
                {
                    return false;
                }
                if i32_at(8).is_some_and(|c| c < 0) {
                    return false;
                }
                // A whole frame of an API walked to its end must end where its body does.
                if head.len() as u64 == len && parser::request_exact(head) == Some(false) {
                    return false;
                }
                match i16_at(12) {
                    Some(-1) | None => true,
                    Some(n) if n < 0 || u64::from(n as u16) + 14 > len => false,
                    Some(n) => head
                        .get(14..(14 + n as usize).min(head.len()))
                        .is_none_or(parser::printable),
                }
            }
            Direction::ToClient => {
                if len < 8 {
                    return false;
                }
                let Some(c) = head.get(4..8) else { return true };
                let c = i32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                // With requests seen, a response answers one of them.
                c >= 0 && (self.pending.is_empty() || self.pending.iter().any(|p| p.0 == c))
            }
        }
    }

    fn frame(
        &mut self,
        dir: Direction,
        f: Frame<'_>,
        out: &mut Vec<Message>,
    ) -> Result<(), DecodeError> {
        match dir {
            Direction::ToServer => {
                let q = parser::request(f.head)
                    .map_err(|_| DecodeError::new("bad-request-header", f.offset))?;
                let m = request_message(&q, &f);
                if m.correlation.is_some() {
                    self.remember(&q);
                }
                out.push(m);
            }
            Direction::ToClient => {
                let Some(c) = f.head.get(4..8) else {
                    return Err(DecodeError::new("short-response", f.offset));
                };
                let c = i32::from_be_bytes([c[0], c[1], c[2], c[3]]);
                let mut m =
                    Message::response(f.start_ns, f.end_ns, f.len).correlate(correlation(c));
                if let Some((api_key, version)) = self.take(c) {
                    let s = parser::response(f.head, api_key, version);
                    match s.error {
                        Some(code) => {
                            m = m
                                .error(&code.to_string())
                                .attribute(Attribute::str(keys::ERROR_TYPE, api::error_name(code)))
                                .attribute(Attribute::int(keys::ERROR_COUNT, i64::from(s.errors)));
                        }
                        // Walked to the end, or as far as the head goes.
                        None if s.walked || (f.head.len() as u64 != f.len && s.api_walked) => {
                            m = m.ok("0")
                        }
                        None => {}
                    }
                    if let Some(n) = s.records {
                        m = m.attribute(Attribute::int(keys::MESSAGE_COUNT, n as i64));
                    }
                    if let Some(n) = s.record_bytes {
                        m = m.attribute(Attribute::int(keys::RECORD_BYTES, n as i64));
                    }
                }
                out.push(m);
            }
        }
        Ok(())
    }
}

wasmtap_sdk::export_decoder!(Kafka);

#[cfg(test)]
mod tests;
