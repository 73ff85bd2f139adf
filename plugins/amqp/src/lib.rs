//! AMQP 0-9-1 decoder plugin for wasmtap (RabbitMQ and other brokers).
//!
//! Frames of every type on every channel are cut by the SDK's framing
//! adapter (7-byte header, payload, frame-end octet). Synchronous methods
//! the client sends are requests, answered by their `-ok` (or
//! `basic.get-empty`), or by the broker's `channel.close` /
//! `connection.close` naming them, which is an error with the reply code
//! (`406 PRECONDITION_FAILED`). Requests with `no-wait` expect no answer:
//! one-way. `basic.publish` and `basic.deliver` (with their content header:
//! body size) are one-way messages; `basic.return` (an unroutable mandatory
//! message, `312 NO_ROUTE`) is a one-way error. A consumer's `basic.ack`,
//! `nack` or `reject` is a one-way message spanning from the delivery it
//! settles to the settlement: its duration is the consumer's processing
//! time. In confirm mode the broker's acks and nacks are `confirm.ack` /
//! `confirm.nack` spanning from the publish they confirm.

pub mod method;

use std::collections::{BTreeMap, VecDeque};

use method::{Args, class};
use wasmtap_sdk::framing::{Frame, FrameHandler, Framed, Framing, LengthField};
use wasmtap_sdk::{
    Attribute, CloseReason, DecodeError, Decoder, Descriptor, Direction, Message, Transport,
};

/// The AMQP decoder.
pub struct Amqp;

/// Attribute keys.
pub mod keys {
    /// Always `rabbitmq`.
    pub const SYSTEM: &str = "messaging.system";
    /// The method (`basic.publish`).
    pub const OPERATION_NAME: &str = "messaging.operation.name";
    /// `send`, `receive` or `settle`.
    pub const OPERATION_TYPE: &str = "messaging.operation.type";
    /// The exchange (`amq.default` for the default one).
    pub const DESTINATION: &str = "messaging.destination.name";
    /// The routing key.
    pub const ROUTING_KEY: &str = "messaging.rabbitmq.destination.routing_key";
    /// The delivery tag.
    pub const DELIVERY_TAG: &str = "messaging.rabbitmq.message.delivery_tag";
    /// Body size of a published, delivered or returned message.
    pub const BODY_SIZE: &str = "messaging.message.body.size";
    /// The reply code's name (`NOT_FOUND`).
    pub const ERROR_TYPE: &str = "error.type";
    /// The channel.
    pub const CHANNEL: &str = "wasmtap.amqp.channel";
    /// The queue named.
    pub const QUEUE: &str = "wasmtap.amqp.queue";
    /// The consumer tag.
    pub const CONSUMER_TAG: &str = "wasmtap.amqp.consumer_tag";
    /// The reply text of a close or return.
    pub const REPLY_TEXT: &str = "wasmtap.amqp.reply_text";
    /// The exchange type (`exchange.declare`).
    pub const EXCHANGE_TYPE: &str = "wasmtap.amqp.exchange_type";
    /// Messages in the queue (declare-ok, get-ok, purge-ok, delete-ok).
    pub const MESSAGE_COUNT: &str = "wasmtap.amqp.message_count";
    /// Deliveries (or publishes) one ack, nack or reject settles.
    pub const SETTLED: &str = "wasmtap.amqp.settled_count";
    /// `declined` for a nack or reject (the consumer said no: a client error, not a broker error).
    pub const OUTCOME: &str = "wasmtap.amqp.outcome";
    /// The virtual host (`connection.open`).
    pub const VHOST: &str = "wasmtap.amqp.vhost";
    /// The nack or reject asks for the message again.
    pub const REQUEUE: &str = "wasmtap.amqp.requeue";
    /// Every key.
    pub const ALL: [&str; 18] = [
        SYSTEM,
        OPERATION_NAME,
        OPERATION_TYPE,
        DESTINATION,
        ROUTING_KEY,
        DELIVERY_TAG,
        BODY_SIZE,
        ERROR_TYPE,
        CHANNEL,
        QUEUE,
        CONSUMER_TAG,
        REPLY_TEXT,
        EXCHANGE_TYPE,
        MESSAGE_COUNT,
        SETTLED,
        OUTCOME,
        VHOST,
        REQUEUE,
    ];
}

/// Channels tracked per connection (AMQP allows 65535; brokers default to 2047).
pub const MAX_CHANNELS: usize = 2048;
/// Deliveries (and publishes in confirm mode) remembered per channel for
/// settlement times; the oldest is forgotten beyond this.
pub const MAX_UNSETTLED: usize = 4096;
/// Requests awaiting an answer per channel.
pub const MAX_PENDING: usize = 64;

const FRAME_METHOD: u8 = 1;
const FRAME_HEADER: u8 = 2;
const FRAME_BODY: u8 = 3;
const FRAME_HEARTBEAT: u8 = 8;
const FRAME_END: u8 = 0xCE;

/// A request awaiting its answer.
#[derive(Debug)]
struct Pending {
    key: u64,
    class: u16,
    method: u16,
}

#[derive(Debug, Default)]
struct Channel {
    pending: VecDeque<Pending>,
    seq: u32,
    /// Per direction: a publish/deliver/get-ok/return awaiting its content header.
    content: [Option<Message>; 2],
    /// Delivery tag and time of deliveries not yet settled.
    deliveries: VecDeque<(u64, u64)>,
    /// Confirm mode: next publish sequence number, and unconfirmed publishes.
    confirm: bool,
    publish_seq: u64,
    publishes: VecDeque<(u64, u64)>,
}

/// Per-flow state.
#[derive(Debug, Default)]
pub struct AmqpHandler {
    channels: BTreeMap<u16, Channel>,
}

/// The session type.
pub type AmqpSession = Framed<AmqpHandler>;

impl Decoder for Amqp {
    type Session = AmqpSession;

    fn describe() -> Descriptor {
        Descriptor::new("amqp", env!("CARGO_PKG_VERSION"))
            .protocol("amqp")
            .transport(Transport::Tcp)
            .port(5672)
            .attribute_keys(&keys::ALL)
    }

    fn probe(transport: Transport, _dir: Direction, data: &[u8]) -> u8 {
        if transport != Transport::Tcp {
            return 0;
        }
        probe(data)
    }

    fn new_session(_transport: Transport, _server_port: u16) -> AmqpSession {
        Framed::new(AmqpHandler::default())
    }
}

/// Confidence that `data`, a flow's first bytes, is AMQP 0-9-1.
pub fn probe(data: &[u8]) -> u8 {
    if data.starts_with(b"AMQP\x00\x00\x09\x01") {
        return 100;
    }
    if data.starts_with(b"AMQP") && data.len() >= 8 {
        return 80;
    }
    // A whole method frame of a known method (a mid-stream start).
    let Some(h) = data.get(..11) else { return 0 };
    let size = u32::from_be_bytes([h[3], h[4], h[5], h[6]]) as usize;
    let (class, method) = (
        u16::from_be_bytes([h[7], h[8]]),
        u16::from_be_bytes([h[9], h[10]]),
    );
    if h[0] == FRAME_METHOD
        && size >= 4
        && data.get(7 + size) == Some(&FRAME_END)
        && method::name(class, method).is_some()
    {
        return 80;
    }
    0
}

fn with(m: Message, key: &str, v: &Option<String>) -> Message {
    match v {
        Some(s) => m.attribute(Attribute::str(key, s.clone())),
        None => m,
    }
}

/// The attributes every message of a method carries.
fn common(mut m: Message, name: &str, ch: u16, a: &Args) -> Message {
    m = m
        .attribute(Attribute::str(keys::SYSTEM, "rabbitmq"))
        .attribute(Attribute::str(keys::OPERATION_NAME, name))
        .attribute(Attribute::int(keys::CHANNEL, i64::from(ch)));
    let exchange = a.exchange.as_ref().map(|e| {
        if e.is_empty() {
            "amq.default".to_string()
        } else {
            e.clone()
        }
    });
    m = with(m, keys::DESTINATION, &exchange);
    m = with(m, keys::ROUTING_KEY, &a.routing_key);
    m = with(m, keys::QUEUE, &a.queue);
    m = with(m, keys::CONSUMER_TAG, &a.consumer_tag);
    m = with(m, keys::EXCHANGE_TYPE, &a.kind);
    m = with(m, keys::VHOST, &a.vhost);
    if let Some(t) = a.delivery_tag {
        m = m.attribute(Attribute::int(keys::DELIVERY_TAG, t as i64));
    }
    if let Some(n) = a.message_count {
        m = m.attribute(Attribute::int(keys::MESSAGE_COUNT, i64::from(n)));
    }
    if let Some((_, text)) = &a.reply {
        m = m.attribute(Attribute::str(keys::REPLY_TEXT, text.clone()));
    }
    m
}

fn reply(m: Message, code: u16) -> Message {
    let c = code.to_string();
    if code == 200 {
        m.ok(&c)
    } else {
        m.error(&c)
            .attribute(Attribute::str(keys::ERROR_TYPE, method::reply_name(code)))
    }
}

/// Takes the settled entries (`tag`, or all up to it with `multiple`) and
/// returns (earliest time, count).
fn settle(q: &mut VecDeque<(u64, u64)>, tag: u64, multiple: bool) -> (Option<u64>, i64) {
    let mut first = None;
    let mut n = 0;
    q.retain(|&(t, ts)| {
        let hit = if multiple {
            t <= tag || tag == 0
        } else {
            t == tag
        };
        if hit {
            first = Some(first.map_or(ts, |f: u64| f.min(ts)));
            n += 1;
        }
        !hit
    });
    (first, n)
}

fn push_bounded(q: &mut VecDeque<(u64, u64)>, v: (u64, u64)) {
    if q.len() >= MAX_UNSETTLED {
        q.pop_front();
    }
    q.push_back(v);
}

impl AmqpHandler {
    fn channel(&mut self, ch: u16) -> &mut Channel {
        if !self.channels.contains_key(&ch) && self.channels.len() >= MAX_CHANNELS {
            // Forget the lowest-numbered other channel: bounded state.
            if let Some(&k) = self.channels.keys().next() {
                self.channels.remove(&k);
            }
        }
        self.channels.entry(ch).or_default()
    }

    fn method(
        &mut self,
        dir: Direction,
        ch: u16,
        payload: &[u8],
        f: &Frame<'_>,
        out: &mut Vec<Message>,
    ) {
        let (Some(c), Some(m)) = (payload.get(..2), payload.get(2..4)) else {
            return;
        };
        let (cl, me) = (
            u16::from_be_bytes([c[0], c[1]]),
            u16::from_be_bytes([m[0], m[1]]),
        );
        let name = method::name(cl, me).map_or_else(|| format!("method-{cl}.{me}"), str::to_string);
        let a = method::args(cl, me, &payload[4..]);
        let (start, end, size) = (f.start_ns, f.end_ns, f.len);
        let d = dir.index();
        let chan = self.channel(ch);
        // A new method ends any content still expected in this direction.
        chan.content[d] = None;
        match (dir, cl, me) {
            // Content-carrying methods: reported once their header gives the body size.
            (Direction::ToServer, class::BASIC, 40) => {
                let mut msg = common(Message::one_way(start, end, size, &name), &name, ch, &a)
                    .attribute(Attribute::str(keys::OPERATION_TYPE, "send"));
                if chan.confirm {
                    chan.publish_seq += 1;
                    let seq = chan.publish_seq;
                    push_bounded(&mut chan.publishes, (seq, start));
                    msg = msg.attribute(Attribute::int(keys::DELIVERY_TAG, seq as i64));
                }
                chan.content[d] = Some(msg);
            }
            (Direction::ToClient, class::BASIC, 60) => {
                if let Some(t) = a.delivery_tag {
                    push_bounded(&mut chan.deliveries, (t, start));
                }
                let msg = common(Message::one_way(start, end, size, &name), &name, ch, &a)
                    .attribute(Attribute::str(keys::OPERATION_TYPE, "receive"));
                chan.content[d] = Some(msg);
            }
            (Direction::ToClient, class::BASIC, 50) => {
                let code = a.reply.as_ref().map_or(0, |r| r.0);
                let msg = reply(
                    common(Message::one_way(start, end, size, &name), &name, ch, &a),
                    code,
                );
                chan.content[d] = Some(msg);
            }
            // Settlements by the consumer.
            (Direction::ToServer, class::BASIC, 80 | 90 | 120) => {
                let tag = a.delivery_tag.unwrap_or(0);
                let (since, n) = settle(&mut chan.deliveries, tag, a.multiple);
                let mut msg = common(
                    Message::one_way(since.unwrap_or(start), end, size, &name),
                    &name,
                    ch,
                    &a,
                )
                .attribute(Attribute::str(keys::OPERATION_TYPE, "settle"))
                .attribute(Attribute::int(keys::SETTLED, n));
                if me != 80 {
                    msg = msg
                        .attribute(Attribute::str(keys::OUTCOME, "declined"))
                        .attribute(Attribute::boolean(keys::REQUEUE, a.requeue));
                }
                out.push(msg);
            }
            // Publisher confirms.
            (Direction::ToClient, class::BASIC, 80 | 120) => {
                let tag = a.delivery_tag.unwrap_or(0);
                let (since, n) = settle(&mut chan.publishes, tag, a.multiple);
                let name = if me == 80 {
                    "confirm.ack"
                } else {
                    "confirm.nack"
                };
                let msg = common(
                    Message::one_way(since.unwrap_or(start), end, size, name),
                    name,
                    ch,
                    &a,
                )
                .attribute(Attribute::str(keys::OPERATION_TYPE, "settle"))
                .attribute(Attribute::int(keys::SETTLED, n));
                out.push(if me == 80 {
                    msg.ok("")
                } else {
                    msg.error("nack")
                });
            }
            // The broker closes a channel or the connection: the answer (an
            // error) to the request it names, else a one-way message.
            (Direction::ToClient, class::CONNECTION | class::CHANNEL, 50 | 40)
                if (cl == class::CONNECTION && me == 50) || (cl == class::CHANNEL && me == 40) =>
            {
                let code = a.reply.as_ref().map_or(0, |r| r.0);
                let failed = a.failed.unwrap_or((0, 0));
                let i = chan
                    .pending
                    .iter()
                    .position(|p| (p.class, p.method) == failed)
                    .or(if chan.pending.is_empty() {
                        None
                    } else {
                        Some(0)
                    });
                let base = match i.and_then(|i| chan.pending.remove(i)) {
                    Some(p) => Message::response(start, end, size).correlate(p.key),
                    None => Message::one_way(start, end, size, &name),
                };
                out.push(reply(common(base, &name, ch, &a), code));
                if cl == class::CONNECTION {
                    self.channels.clear();
                } else {
                    chan.pending.clear();
                }
            }
            // The client's answer to the broker's close: nothing to report.
            (Direction::ToServer, class::CONNECTION | class::CHANNEL, 51 | 41) => {}
            (Direction::ToServer, _, _) if !method::answers(cl, me).is_empty() => {
                if cl == class::CONFIRM && me == 10 {
                    chan.confirm = true;
                    chan.publish_seq = 0;
                }
                if a.no_wait {
                    out.push(common(
                        Message::one_way(start, end, size, &name),
                        &name,
                        ch,
                        &a,
                    ));
                    return;
                }
                chan.seq = chan.seq.wrapping_add(1);
                let key = (u64::from(ch) << 32) | u64::from(chan.seq);
                if chan.pending.len() >= MAX_PENDING {
                    chan.pending.pop_front();
                }
                chan.pending.push_back(Pending {
                    key,
                    class: cl,
                    method: me,
                });
                out.push(
                    common(Message::request(start, end, size, &name), &name, ch, &a).correlate(key),
                );
            }
            (Direction::ToClient, _, _) if method::is_answer(cl, me) => {
                let i = chan.pending.iter().position(|p| {
                    p.class == cl && method::answers(p.class, p.method).contains(&me)
                });
                let base = match i.and_then(|i| chan.pending.remove(i)) {
                    Some(p) => Message::response(start, end, size).correlate(p.key),
                    // An answer to a request not seen (a mid-stream start): the host counts it.
                    None => Message::response(start, end, size).correlate(u64::from(ch) << 32),
                };
                let mut msg = common(base, &name, ch, &a).ok("200");
                if cl == class::BASIC && me == 71 {
                    if let Some(t) = a.delivery_tag {
                        push_bounded(&mut chan.deliveries, (t, start));
                    }
                    msg = msg.attribute(Attribute::str(keys::OPERATION_TYPE, "receive"));
                    chan.content[d] = Some(msg);
                    return;
                }
                out.push(msg);
            }
            // Handshake steps the broker starts (start, tune, secure), the
            // client's tune-ok, heartbeats of the flow, blocked notices: not
            // exchanges.
            _ => {}
        }
    }
}

impl FrameHandler for AmqpHandler {
    const RESYNC: bool = true;

    fn framing(&self, _dir: Direction) -> Framing {
        Framing::Length(LengthField::new(3, 4, true).adjust(1))
    }

    fn max_frame(&self) -> u64 {
        // frame_max is negotiated; RabbitMQ allows at most 128 KiB by default.
        16 << 20
    }

    fn plausible(&self, _dir: Direction, head: &[u8], len: u64) -> bool {
        let Some(&kind) = head.first() else {
            return true;
        };
        if !matches!(
            kind,
            FRAME_METHOD | FRAME_HEADER | FRAME_BODY | FRAME_HEARTBEAT
        ) || len < 8
        {
            return false;
        }
        if kind == FRAME_HEARTBEAT && len != 8 {
            return false;
        }
        if head.len() as u64 == len && head.last() != Some(&FRAME_END) {
            return false;
        }
        if kind == FRAME_METHOD
            && let Some(h) = head.get(7..11)
        {
            return len >= 12
                && method::name(
                    u16::from_be_bytes([h[0], h[1]]),
                    u16::from_be_bytes([h[2], h[3]]),
                )
                .is_some();
        }
        true
    }

    fn frame(
        &mut self,
        dir: Direction,
        f: Frame<'_>,
        out: &mut Vec<Message>,
    ) -> Result<(), DecodeError> {
        let h = f.head;
        let Some(&kind) = h.first() else {
            return Err(DecodeError::new("short-frame", f.offset));
        };
        let ch = h.get(1..3).map_or(0, |c| u16::from_be_bytes([c[0], c[1]]));
        if f.head.len() as u64 == f.len && h.last() != Some(&FRAME_END) {
            return Err(DecodeError::new("bad-frame-end", f.offset + f.len - 1));
        }
        // The payload, without the frame-end octet (and cut with the head).
        let end = h.len().min(
            usize::try_from(f.len)
                .unwrap_or(usize::MAX)
                .saturating_sub(1),
        );
        let payload = h.get(7..end.max(7)).unwrap_or_default();
        let d = dir.index();
        match kind {
            FRAME_METHOD => self.method(dir, ch, payload, &f, out),
            FRAME_HEADER => {
                // class, weight, body size, property flags...
                if let Some(mut msg) = self.channel(ch).content[d].take() {
                    if let Some(b) = payload.get(4..12) {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(b);
                        let n = u64::from_be_bytes(a);
                        msg = msg.attribute(Attribute::int(keys::BODY_SIZE, n as i64));
                    }
                    msg.end_ns = f.end_ns;
                    msg.size += f.len;
                    out.push(msg);
                }
            }
            // Bodies are counted by their header's size; heartbeats carry nothing.
            _ => {}
        }
        Ok(())
    }

    fn close(&mut self, _reason: CloseReason, _ts: u64, out: &mut Vec<Message>) {
        // A message whose content header never came is still reported.
        for chan in self.channels.values_mut() {
            out.extend(chan.content.iter_mut().filter_map(Option::take));
        }
    }
}

wasmtap_sdk::export_decoder!(Amqp);

#[cfg(test)]
mod tests;
