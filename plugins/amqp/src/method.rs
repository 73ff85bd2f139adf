//! AMQP 0-9-1 methods: names, which are synchronous requests, what answers
//! them, and the argument readers (short and long strings, tables, packed
//! bits). A [`Reader`] never panics: reading past the end is an error.

/// Ran past the end of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Short;

/// A cursor over a method's arguments.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data, pos: 0 }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        let end = self.pos.checked_add(n).ok_or(Short)?;
        let s = self.data.get(self.pos..end).ok_or(Short)?;
        self.pos = end;
        Ok(s)
    }

    /// An octet.
    pub fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.take(1)?[0])
    }

    /// A short (16 bits).
    pub fn u16(&mut self) -> Result<u16, Short> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// A long (32 bits).
    pub fn u32(&mut self) -> Result<u32, Short> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A long long (64 bits).
    pub fn u64(&mut self) -> Result<u64, Short> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    /// A short string (octet length), lossily as UTF-8, cut to 255 bytes.
    pub fn shortstr(&mut self) -> Result<String, Short> {
        let n = usize::from(self.u8()?);
        Ok(String::from_utf8_lossy(self.take(n)?).into_owned())
    }

    /// Skips a long string or a table (32-bit length).
    pub fn skip_long(&mut self) -> Result<(), Short> {
        let n = usize::try_from(self.u32()?).map_err(|_| Short)?;
        self.take(n).map(|_| ())
    }
}

/// Classes.
pub mod class {
    /// connection
    pub const CONNECTION: u16 = 10;
    /// channel
    pub const CHANNEL: u16 = 20;
    /// exchange
    pub const EXCHANGE: u16 = 40;
    /// queue
    pub const QUEUE: u16 = 50;
    /// basic
    pub const BASIC: u16 = 60;
    /// confirm
    pub const CONFIRM: u16 = 85;
    /// tx
    pub const TX: u16 = 90;
}

/// `(class, method, name, answered by)`: every method of AMQP 0-9-1 with
/// RabbitMQ's extensions. `answered by` lists the methods that answer a
/// synchronous request (empty: not a request the server answers).
const METHODS: [(u16, u16, &str, &[u16]); 64] = [
    (10, 10, "connection.start", &[]),
    (10, 11, "connection.start-ok", &[30]),
    (10, 20, "connection.secure", &[]),
    (10, 21, "connection.secure-ok", &[30]),
    (10, 30, "connection.tune", &[]),
    (10, 31, "connection.tune-ok", &[]),
    (10, 40, "connection.open", &[41]),
    (10, 41, "connection.open-ok", &[]),
    (10, 50, "connection.close", &[51]),
    (10, 51, "connection.close-ok", &[]),
    (10, 60, "connection.blocked", &[]),
    (10, 61, "connection.unblocked", &[]),
    (10, 70, "connection.update-secret", &[71]),
    (10, 71, "connection.update-secret-ok", &[]),
    (20, 10, "channel.open", &[11]),
    (20, 11, "channel.open-ok", &[]),
    (20, 20, "channel.flow", &[21]),
    (20, 21, "channel.flow-ok", &[]),
    (20, 40, "channel.close", &[41]),
    (20, 41, "channel.close-ok", &[]),
    (40, 10, "exchange.declare", &[11]),
    (40, 11, "exchange.declare-ok", &[]),
    (40, 20, "exchange.delete", &[21]),
    (40, 21, "exchange.delete-ok", &[]),
    (40, 30, "exchange.bind", &[31]),
    (40, 31, "exchange.bind-ok", &[]),
    (40, 40, "exchange.unbind", &[51]),
    (40, 51, "exchange.unbind-ok", &[]),
    (50, 10, "queue.declare", &[11]),
    (50, 11, "queue.declare-ok", &[]),
    (50, 20, "queue.bind", &[21]),
    (50, 21, "queue.bind-ok", &[]),
    (50, 30, "queue.purge", &[31]),
    (50, 31, "queue.purge-ok", &[]),
    (50, 40, "queue.delete", &[41]),
    (50, 41, "queue.delete-ok", &[]),
    (50, 50, "queue.unbind", &[51]),
    (50, 51, "queue.unbind-ok", &[]),
    (60, 10, "basic.qos", &[11]),
    (60, 11, "basic.qos-ok", &[]),
    (60, 20, "basic.consume", &[21]),
    (60, 21, "basic.consume-ok", &[]),
    (60, 30, "basic.cancel", &[31]),
    (60, 31, "basic.cancel-ok", &[]),
    (60, 40, "basic.publish", &[]),
    (60, 50, "basic.return", &[]),
    (60, 60, "basic.deliver", &[]),
    (60, 70, "basic.get", &[71, 72]),
    (60, 71, "basic.get-ok", &[]),
    (60, 72, "basic.get-empty", &[]),
    (60, 80, "basic.ack", &[]),
    (60, 90, "basic.reject", &[]),
    (60, 110, "basic.recover", &[111]),
    (60, 111, "basic.recover-ok", &[]),
    (60, 120, "basic.nack", &[]),
    (85, 10, "confirm.select", &[11]),
    (60, 100, "basic.recover-async", &[]),
    (85, 11, "confirm.select-ok", &[]),
    (90, 10, "tx.select", &[11]),
    (90, 11, "tx.select-ok", &[]),
    (90, 20, "tx.commit", &[21]),
    (90, 21, "tx.commit-ok", &[]),
    (90, 30, "tx.rollback", &[31]),
    (90, 31, "tx.rollback-ok", &[]),
];

fn find(class: u16, method: u16) -> Option<&'static (u16, u16, &'static str, &'static [u16])> {
    METHODS.iter().find(|m| m.0 == class && m.1 == method)
}

/// The method's name (`queue.declare`), if known.
pub fn name(class: u16, method: u16) -> Option<&'static str> {
    find(class, method).map(|m| m.2)
}

/// The methods (of the same class) that answer `class.method` when it is a
/// synchronous request; empty otherwise.
pub fn answers(class: u16, method: u16) -> &'static [u16] {
    find(class, method).map_or(&[], |m| m.3)
}

/// Whether `class.method` answers some synchronous request.
pub fn is_answer(class: u16, method: u16) -> bool {
    METHODS
        .iter()
        .any(|m| m.0 == class && m.3.contains(&method))
}

/// What a request's arguments say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Args {
    /// The `no-wait` bit: no answer will come.
    pub no_wait: bool,
    /// Exchange named.
    pub exchange: Option<String>,
    /// Queue named.
    pub queue: Option<String>,
    /// Routing key.
    pub routing_key: Option<String>,
    /// Exchange type (`exchange.declare`).
    pub kind: Option<String>,
    /// Delivery tag (deliver, get-ok, ack, nack, reject).
    pub delivery_tag: Option<u64>,
    /// The `multiple` bit (ack, nack).
    pub multiple: bool,
    /// The `requeue` bit (nack, reject).
    pub requeue: bool,
    /// Reply code and text (close, return).
    pub reply: Option<(u16, String)>,
    /// The method a close blames (class, method).
    pub failed: Option<(u16, u16)>,
    /// Consumer tag.
    pub consumer_tag: Option<String>,
    /// Messages in the queue (declare-ok, get-ok, purge-ok, delete-ok).
    pub message_count: Option<u32>,
    /// Consumers of the queue (queue.declare-ok).
    pub consumer_count: Option<u32>,
    /// The virtual host (connection.open).
    pub vhost: Option<String>,
}

/// Reads the arguments this decoder reports (best effort: a short frame
/// keeps what was read).
pub fn args(class: u16, method: u16, a: &[u8]) -> Args {
    let mut out = Args::default();
    let _ = read_args(class, method, &mut Reader::new(a), &mut out);
    out
}

fn read_args(class: u16, method: u16, r: &mut Reader<'_>, o: &mut Args) -> Result<(), Short> {
    match (class, method) {
        (10, 40) => o.vhost = Some(r.shortstr()?),
        (10, 50) | (20, 40) => {
            let code = r.u16()?;
            let text = r.shortstr()?;
            o.reply = Some((code, text));
            o.failed = Some((r.u16()?, r.u16()?));
        }
        (40, 10) => {
            r.u16()?;
            o.exchange = Some(r.shortstr()?);
            o.kind = Some(r.shortstr()?);
            o.no_wait = r.u8()? & 0x10 != 0;
        }
        (40, 20) => {
            r.u16()?;
            o.exchange = Some(r.shortstr()?);
            o.no_wait = r.u8()? & 0x02 != 0;
        }
        (40, 30) | (40, 40) => {
            r.u16()?;
            o.exchange = Some(r.shortstr()?); // destination
            r.shortstr()?;
            o.routing_key = Some(r.shortstr()?);
            o.no_wait = r.u8()? & 0x01 != 0;
        }
        (50, 10) => {
            r.u16()?;
            o.queue = Some(r.shortstr()?);
            o.no_wait = r.u8()? & 0x10 != 0;
        }
        (50, 11) => {
            o.queue = Some(r.shortstr()?);
            o.message_count = Some(r.u32()?);
            o.consumer_count = Some(r.u32()?);
        }
        (50, 20) => {
            r.u16()?;
            o.queue = Some(r.shortstr()?);
            o.exchange = Some(r.shortstr()?);
            o.routing_key = Some(r.shortstr()?);
            o.no_wait = r.u8()? & 0x01 != 0;
        }
        (50, 30) => {
            r.u16()?;
            o.queue = Some(r.shortstr()?);
            o.no_wait = r.u8()? & 0x01 != 0;
        }
        (50, 40) => {
            r.u16()?;
            o.queue = Some(r.shortstr()?);
            o.no_wait = r.u8()? & 0x04 != 0;
        }
        (50, 50) => {
            r.u16()?;
            o.queue = Some(r.shortstr()?);
            o.exchange = Some(r.shortstr()?);
            o.routing_key = Some(r.shortstr()?);
        }
        (50, 31) | (50, 41) => o.message_count = Some(r.u32()?),
        (60, 20) => {
            r.u16()?;
            o.queue = Some(r.shortstr()?);
            o.consumer_tag = Some(r.shortstr()?);
            o.no_wait = r.u8()? & 0x08 != 0;
        }
        (60, 21) => o.consumer_tag = Some(r.shortstr()?),
        (60, 30) => {
            o.consumer_tag = Some(r.shortstr()?);
            o.no_wait = r.u8()? & 0x01 != 0;
        }
        (60, 40) => {
            r.u16()?;
            o.exchange = Some(r.shortstr()?);
            o.routing_key = Some(r.shortstr()?);
        }
        (60, 50) => {
            let code = r.u16()?;
            let text = r.shortstr()?;
            o.reply = Some((code, text));
            o.exchange = Some(r.shortstr()?);
            o.routing_key = Some(r.shortstr()?);
        }
        (60, 60) => {
            o.consumer_tag = Some(r.shortstr()?);
            o.delivery_tag = Some(r.u64()?);
            r.u8()?;
            o.exchange = Some(r.shortstr()?);
            o.routing_key = Some(r.shortstr()?);
        }
        (60, 70) => {
            r.u16()?;
            o.queue = Some(r.shortstr()?);
        }
        (60, 71) => {
            o.delivery_tag = Some(r.u64()?);
            r.u8()?;
            o.exchange = Some(r.shortstr()?);
            o.routing_key = Some(r.shortstr()?);
            o.message_count = Some(r.u32()?);
        }
        (60, 80) => {
            o.delivery_tag = Some(r.u64()?);
            o.multiple = r.u8()? & 0x01 != 0;
        }
        (60, 90) => {
            o.delivery_tag = Some(r.u64()?);
            o.requeue = r.u8()? & 0x01 != 0;
        }
        (60, 120) => {
            o.delivery_tag = Some(r.u64()?);
            let bits = r.u8()?;
            o.multiple = bits & 0x01 != 0;
            o.requeue = bits & 0x02 != 0;
        }
        (85, 10) => o.no_wait = r.u8()? & 0x01 != 0,
        _ => {}
    }
    Ok(())
}

/// AMQP reply codes' names (`NOT_FOUND`).
pub fn reply_name(code: u16) -> &'static str {
    match code {
        200 => "REPLY_SUCCESS",
        311 => "CONTENT_TOO_LARGE",
        312 => "NO_ROUTE",
        313 => "NO_CONSUMERS",
        320 => "CONNECTION_FORCED",
        402 => "INVALID_PATH",
        403 => "ACCESS_REFUSED",
        404 => "NOT_FOUND",
        405 => "RESOURCE_LOCKED",
        406 => "PRECONDITION_FAILED",
        501 => "FRAME_ERROR",
        502 => "SYNTAX_ERROR",
        503 => "COMMAND_INVALID",
        504 => "CHANNEL_ERROR",
        505 => "UNEXPECTED_FRAME",
        506 => "RESOURCE_ERROR",
        530 => "NOT_ALLOWED",
        540 => "NOT_IMPLEMENTED",
        541 => "INTERNAL_ERROR",
        _ => "UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_answers() {
        assert_eq!(name(50, 10), Some("queue.declare"));
        assert_eq!(answers(50, 10), &[11]);
        assert_eq!(answers(60, 70), &[71, 72]);
        assert!(answers(60, 40).is_empty());
        assert!(is_answer(60, 72) && !is_answer(60, 60));
        assert_eq!(name(90, 20), Some("tx.commit"));
    }

    #[test]
    fn declare_bits() {
        // ticket, "x", "direct", bits: durable + no-wait, empty table.
        let a = [
            0, 0, 1, b'x', 6, b'd', b'i', b'r', b'e', b'c', b't', 0x12, 0, 0, 0, 0,
        ];
        let got = args(40, 10, &a);
        assert_eq!(
            (got.exchange.as_deref(), got.kind.as_deref(), got.no_wait),
            (Some("x"), Some("direct"), true)
        );
        assert_eq!(args(40, 10, &a[..5]).exchange.as_deref(), Some("x"));
    }
}
