//! Kafka requests and responses, read from the head of a frame (the frame's
//! 4-byte size included). Headers are read strictly; bodies as far as the
//! head goes: a frame cut to its head, or an API this decoder does not walk,
//! loses details, never the message.

use crate::api::{self, key};
use crate::wire::{Reader, Short};

/// Longest topic, group or client id reported (longer ones are cut).
const MAX_NAME: usize = 249;

/// What a request says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// API key.
    pub api_key: i16,
    /// API version.
    pub version: i16,
    /// Correlation id.
    pub correlation: i32,
    /// Client id.
    pub client_id: Option<String>,
    /// First topic named.
    pub topic: Option<String>,
    /// Topics named (Produce, Fetch, Metadata, ListOffsets, OffsetCommit).
    pub topics: u32,
    /// Partitions named.
    pub partitions: u32,
    /// The partition, when exactly one is named.
    pub partition: Option<i32>,
    /// Produce: required acks.
    pub acks: Option<i16>,
    /// Produce: records and their bytes.
    pub records: Option<u64>,
    /// Produce: record bytes.
    pub record_bytes: Option<u64>,
    /// Produce: part of a transaction.
    pub transactional: bool,
    /// Consumer group (group APIs).
    pub group: Option<String>,
}

/// What a response says.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Response {
    /// Correlation id.
    pub correlation: i32,
    /// Whether the body was walked far enough to know its error codes.
    pub walked: bool,
    /// Whether this API's response body is one this parser walks for error
    /// codes (whether or not it was walked to its end).
    pub api_walked: bool,
    /// First non-zero error code (top level first, then per entry).
    pub error: Option<i16>,
    /// Entries (the top level, topics, partitions, groups) with a non-zero error.
    pub errors: u32,
    /// Fetch: records returned.
    pub records: Option<u64>,
    /// Fetch: record bytes returned.
    pub record_bytes: Option<u64>,
}

fn name(b: Option<&[u8]>) -> Option<String> {
    let b = b?;
    let s = String::from_utf8_lossy(&b[..b.len().min(MAX_NAME)]).into_owned();
    Some(s)
}

/// A request header: `(api_key, version, correlation, client_id, body reader)`.
pub type Header<'a> = (i16, i16, i32, Option<&'a [u8]>, Reader<'a>);

/// The request header. `Err` when the bytes are not a Kafka request header.
pub fn request_header(head: &[u8]) -> Result<Header<'_>, Short> {
    let mut r = Reader::new(head, 4, false);
    let api_key = r.i16()?;
    let version = r.i16()?;
    let correlation = r.i32()?;
    if !api::known(api_key, version) || correlation < 0 {
        return Err(Short);
    }
    // ControlledShutdown v0 alone has no client id.
    let client = if api_key == 7 && version == 0 {
        None
    } else {
        r.classic_string()?
    };
    r.compact = api::flexible(api_key, version);
    r.tags()?;
    Ok((api_key, version, correlation, client, r))
}

/// Whether a client id is believable: printable ASCII.
pub fn printable(b: &[u8]) -> bool {
    b.iter().all(|c| (0x20..0x7f).contains(c))
}

/// Counts the records of a record set (v2 batches: their record count; v0/v1
/// message sets: one per message, a compressed wrapper counting as one).
pub fn count_records(set: &[u8]) -> u64 {
    let mut n = 0u64;
    let mut pos = 0usize;
    while let Some(h) = set.get(pos..pos + 12) {
        let len = i32::from_be_bytes([h[8], h[9], h[10], h[11]]);
        let Ok(len) = usize::try_from(len) else { break };
        match set.get(pos + 16) {
            Some(2) => match set.get(pos + 57..pos + 61) {
                Some(c) => {
                    n += u64::try_from(i32::from_be_bytes([c[0], c[1], c[2], c[3]])).unwrap_or(0)
                }
                None => break,
            },
            Some(_) => n += 1,
            None => break,
        }
        pos = match pos.checked_add(12 + len) {
            Some(p) => p,
            None => break,
        };
    }
    n
}

/// Parses a request's head.
pub fn request(head: &[u8]) -> Result<Request, Short> {
    // Bodies are best effort: a short head keeps what was read.
    parse_request(head).map(|(q, _, _)| q)
}

/// The header strictly, then the body as far as it goes: the request, how
/// the body walk ended (`Ok(true)`: walked to its end), and the bytes left.
fn parse_request(head: &[u8]) -> Result<(Request, Result<bool, Short>, usize), Short> {
    let (api_key, version, correlation, client, mut r) = request_header(head)?;
    let mut q = Request {
        api_key,
        version,
        correlation,
        client_id: name(client).filter(|s| !s.is_empty()),
        ..Request::default()
    };
    let walked = request_body(&mut q, &mut r);
    Ok((q, walked, r.left()))
}

fn topic_seen(q: &mut Request, t: Option<&[u8]>) {
    q.topics += 1;
    if q.topic.is_none() {
        q.topic = name(t);
    }
}

fn partition_seen(q: &mut Request, p: i32) {
    q.partitions += 1;
    q.partition = if q.partitions == 1 { Some(p) } else { None };
}

/// Walks a request body; `Ok(true)` when the API's body was walked to its end.
fn request_body(q: &mut Request, r: &mut Reader<'_>) -> Result<bool, Short> {
    let v = q.version;
    match q.api_key {
        key::PRODUCE => {
            if v >= 3 {
                q.transactional = r.string()?.is_some();
            }
            q.acks = Some(r.i16()?);
            r.i32()?;
            let (mut records, mut bytes, mut complete) = (0u64, 0u64, true);
            for _ in 0..r.array()?.unwrap_or(0) {
                let t = r.string()?;
                topic_seen(q, t);
                for _ in 0..r.array()?.unwrap_or(0) {
                    let p = r.i32()?;
                    partition_seen(q, p);
                    if let Some((len, set)) = r.bytes()? {
                        bytes += len as u64;
                        match set {
                            Some(s) => records += count_records(s),
                            None => complete = false,
                        }
                    }
                    q.record_bytes = Some(bytes);
                    q.records = complete.then_some(records);
                    r.tags()?;
                }
                r.tags()?;
            }
        }
        key::FETCH => {
            if v <= 14 {
                r.i32()?;
            }
            r.skip(8)?;
            if v >= 3 {
                r.i32()?;
            }
            if v >= 4 {
                r.i8()?;
            }
            if v >= 7 {
                r.skip(8)?;
            }
            for _ in 0..r.array()?.unwrap_or(0) {
                if v <= 12 {
                    let t = r.string()?;
                    topic_seen(q, t);
                } else {
                    r.skip(16)?;
                    q.topics += 1;
                }
                for _ in 0..r.array()?.unwrap_or(0) {
                    let p = r.i32()?;
                    partition_seen(q, p);
                    let fixed = 12 + if v >= 9 { 4 } else { 0 } + if v >= 12 { 4 } else { 0 };
                    r.skip(fixed + if v >= 5 { 8 } else { 0 })?;
                    r.tags()?;
                }
                r.tags()?;
            }
            if v >= 7 {
                for _ in 0..r.array()?.unwrap_or(0) {
                    r.skip(if v <= 12 { 0 } else { 16 })?;
                    if v <= 12 {
                        r.string()?;
                    }
                    int32s(r)?;
                    r.tags()?;
                }
            }
            if v >= 11 {
                r.string()?;
            }
        }
        key::METADATA => {
            for _ in 0..r.array()?.unwrap_or(0) {
                if v >= 10 {
                    r.skip(16)?;
                }
                let t = r.string()?;
                topic_seen(q, t);
                r.tags()?;
            }
            if v >= 4 {
                r.i8()?;
            }
            if (8..=10).contains(&v) {
                r.i8()?;
            }
            if v >= 8 {
                r.i8()?;
            }
        }
        key::LIST_OFFSETS => {
            r.i32()?;
            if v >= 2 {
                r.i8()?;
            }
            for _ in 0..r.array()?.unwrap_or(0) {
                let t = r.string()?;
                topic_seen(q, t);
                for _ in 0..r.array()?.unwrap_or(0) {
                    let p = r.i32()?;
                    partition_seen(q, p);
                    r.skip(if v >= 4 { 4 } else { 0 } + 8 + if v == 0 { 4 } else { 0 })?;
                    r.tags()?;
                }
                r.tags()?;
            }
        }
        key::OFFSET_COMMIT => {
            q.group = name(r.string()?);
            if v >= 1 {
                r.i32()?;
                r.string()?;
            }
            if v >= 7 {
                r.string()?;
            }
            if (2..=4).contains(&v) {
                r.i64()?;
            }
            if let Some(n) = r.array()?
                && n > 0
            {
                let t = r.string()?;
                topic_seen(q, t);
                q.topics = u32::try_from(n).unwrap_or(u32::MAX);
            }
        }
        key::OFFSET_FETCH if v >= 8 => {
            if r.array()?.unwrap_or(0) > 0 {
                q.group = name(r.string()?);
            }
        }
        key::HEARTBEAT => {
            q.group = name(r.string()?);
            r.i32()?;
            r.string()?;
            if v >= 3 {
                r.string()?;
            }
        }
        key::OFFSET_FETCH | key::JOIN_GROUP | key::LEAVE_GROUP | key::SYNC_GROUP => {
            q.group = name(r.string()?)
        }
        key::FIND_COORDINATOR if v <= 3 => {
            let g = r.string()?;
            // Key type 0 is a group (v1+; v0 names only groups).
            if v == 0 || r.i8()? == 0 {
                q.group = name(g);
            }
        }
        _ => return Ok(false),
    }
    r.tags()?;
    Ok(matches!(
        q.api_key,
        key::PRODUCE | key::FETCH | key::METADATA | key::LIST_OFFSETS | key::HEARTBEAT
    ))
}

/// Whether a whole request frame is exactly what its header says: for the
/// APIs walked to their end, the body must end where the frame does.
/// `None` for the others.
pub fn request_exact(frame: &[u8]) -> Option<bool> {
    match parse_request(frame) {
        Ok((_, Ok(true), left)) => Some(left == 0),
        Ok((_, Ok(false), _)) => None,
        Ok((_, Err(_), _)) | Err(_) => Some(false),
    }
}

/// Records a response error code.
fn code(s: &mut Response, c: i16) {
    if c != 0 {
        s.errors += 1;
        if s.error.is_none() {
            s.error = Some(c);
        }
    }
}

/// Skips an array of int32.
fn int32s(r: &mut Reader<'_>) -> Result<(), Short> {
    let n = r.array()?.unwrap_or(0);
    r.skip(n.checked_mul(4).ok_or(Short)?)
}

/// Parses the head of a response to `version` of `api_key`.
pub fn response(head: &[u8], api_key: i16, version: i16) -> Response {
    let mut r = Reader::new(head, 4, false);
    let mut s = Response {
        api_walked: true,
        ..Response::default()
    };
    let Ok(c) = r.i32() else { return s };
    s.correlation = c;
    if api::flexible_response_header(api_key, version) {
        r.compact = true;
        if r.tags().is_err() {
            return s;
        }
    }
    r.compact = api::flexible(api_key, version);
    // ApiVersions answers an unsupported version with a v0 body.
    let version = if api_key == key::API_VERSIONS && head.get(8..10) == Some(&[0, 35]) {
        r.compact = false;
        0
    } else {
        version
    };
    s.walked = response_body(&mut s, &mut r, api_key, version).is_ok();
    s
}

fn response_body(s: &mut Response, r: &mut Reader<'_>, api_key: i16, v: i16) -> Result<(), Short> {
    // Top-level error code, after a throttle time from version `throttle_from`.
    let top = |r: &mut Reader<'_>, s: &mut Response, throttle_from: i16| {
        if v >= throttle_from {
            r.i32()?;
        }
        let c = r.i16()?;
        code(s, c);
        Ok(())
    };
    match api_key {
        key::PRODUCE => topic_partitions(r, s, false, |r| {
            r.skip(8 + if v >= 2 { 8 } else { 0 } + if v >= 5 { 8 } else { 0 })?;
            if v >= 8 {
                for _ in 0..r.array()?.unwrap_or(0) {
                    r.i32()?;
                    r.string()?;
                    r.tags()?;
                }
                r.string()?;
            }
            Ok(())
        })?,
        key::FETCH => {
            if v >= 1 {
                r.i32()?;
            }
            if v >= 7 {
                let c = r.i16()?;
                code(s, c);
                r.i32()?;
            }
            let (mut records, mut bytes, mut complete) = (0u64, 0u64, true);
            let walked = topic_partitions(r, s, v > 12, |r| {
                r.skip(8 + if v >= 4 { 8 } else { 0 } + if v >= 5 { 8 } else { 0 })?;
                if v >= 4 {
                    for _ in 0..r.array()?.unwrap_or(0) {
                        r.skip(16)?;
                        r.tags()?;
                    }
                }
                if v >= 11 {
                    r.i32()?;
                }
                if let Some((len, set)) = r.bytes()? {
                    bytes += len as u64;
                    match set {
                        Some(set) => records += count_records(set),
                        None => complete = false,
                    }
                }
                Ok(())
            });
            s.record_bytes = Some(bytes);
            s.records = (complete && walked.is_ok()).then_some(records);
            walked?;
        }
        key::METADATA => {
            if v >= 3 {
                r.i32()?;
            }
            for _ in 0..r.array()?.unwrap_or(0) {
                r.i32()?;
                r.string()?;
                r.i32()?;
                if v >= 1 {
                    r.string()?;
                }
                r.tags()?;
            }
            if v >= 2 {
                r.string()?;
            }
            if v >= 1 {
                r.i32()?;
            }
            for _ in 0..r.array()?.unwrap_or(0) {
                let c = r.i16()?;
                code(s, c);
                r.string()?;
                if v >= 10 {
                    r.skip(16)?;
                }
                if v >= 1 {
                    r.i8()?;
                }
                for _ in 0..r.array()?.unwrap_or(0) {
                    let c = r.i16()?;
                    code(s, c);
                    r.skip(8 + if v >= 7 { 4 } else { 0 })?;
                    int32s(r)?;
                    int32s(r)?;
                    if v >= 5 {
                        int32s(r)?;
                    }
                    r.tags()?;
                }
                if v >= 8 {
                    r.i32()?;
                }
                r.tags()?;
            }
        }
        key::LIST_OFFSETS => {
            if v >= 2 {
                r.i32()?;
            }
            topic_partitions(r, s, false, |r| {
                if v == 0 {
                    let n = r.array()?.unwrap_or(0);
                    r.skip(n.checked_mul(8).ok_or(Short)?)
                } else {
                    r.skip(16 + if v >= 4 { 4 } else { 0 })
                }
            })?;
        }
        key::OFFSET_COMMIT => {
            if v >= 3 {
                r.i32()?;
            }
            topic_partitions(r, s, false, |_| Ok(()))?;
        }
        key::OFFSET_FETCH => {
            if v >= 3 {
                r.i32()?;
            }
            let topics = |r: &mut Reader<'_>, s: &mut Response| -> Result<(), Short> {
                for _ in 0..r.array()?.unwrap_or(0) {
                    r.string()?;
                    for _ in 0..r.array()?.unwrap_or(0) {
                        r.skip(12 + if v >= 5 { 4 } else { 0 })?;
                        r.string()?;
                        let c = r.i16()?;
                        code(s, c);
                        r.tags()?;
                    }
                    r.tags()?;
                }
                Ok(())
            };
            if v < 8 {
                topics(r, s)?;
                if v >= 2 {
                    let c = r.i16()?;
                    code(s, c);
                }
            } else {
                for _ in 0..r.array()?.unwrap_or(0) {
                    r.string()?;
                    topics(r, s)?;
                    let c = r.i16()?;
                    code(s, c);
                    r.tags()?;
                }
            }
        }
        key::FIND_COORDINATOR if v >= 4 => {
            r.i32()?;
            for _ in 0..r.array()?.unwrap_or(0) {
                r.string()?;
                r.i32()?;
                r.string()?;
                r.i32()?;
                let c = r.i16()?;
                code(s, c);
                r.string()?;
                r.tags()?;
            }
        }
        key::FIND_COORDINATOR => top(r, s, 1)?,
        key::JOIN_GROUP => top(r, s, 2)?,
        key::HEARTBEAT | key::LEAVE_GROUP | key::SYNC_GROUP | key::LIST_GROUPS => top(r, s, 1)?,
        key::API_VERSIONS | key::SASL_HANDSHAKE | key::SASL_AUTHENTICATE => top(r, s, i16::MAX)?,
        key::INIT_PRODUCER_ID => top(r, s, 0)?,
        key::DESCRIBE_GROUPS => {
            if v >= 1 {
                r.i32()?;
            }
            if r.array()?.unwrap_or(0) > 0 {
                let c = r.i16()?;
                code(s, c);
            }
        }
        key::CREATE_TOPICS => {
            if v >= 2 {
                r.i32()?;
            }
            if r.array()?.unwrap_or(0) > 0 {
                r.string()?;
                if v >= 7 {
                    r.skip(16)?;
                }
                let c = r.i16()?;
                code(s, c);
            }
        }
        _ => {
            s.api_walked = false;
            return Err(Short);
        }
    }
    Ok(())
}

/// Walks `[topic: name (or id), [partition: index, error code, rest]]`,
/// recording each partition's error code; `rest` reads what follows it.
fn topic_partitions(
    r: &mut Reader<'_>,
    s: &mut Response,
    topic_id: bool,
    mut rest: impl FnMut(&mut Reader<'_>) -> Result<(), Short>,
) -> Result<(), Short> {
    for _ in 0..r.array()?.unwrap_or(0) {
        if topic_id {
            r.skip(16)?;
        } else {
            r.string()?;
        }
        for _ in 0..r.array()?.unwrap_or(0) {
            r.i32()?;
            let c = r.i16()?;
            code(s, c);
            rest(r)?;
            r.tags()?;
        }
        r.tags()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn produce_v2_request_and_response() {
        // Header: Produce v2, correlation 7, client "c1"; acks 1, timeout, 1 topic "t" with partition 0 and an empty record set.
        let mut b = vec![0, 0, 0, 2, 0, 0, 0, 7, 0, 2, b'c', b'1'];
        b.extend([
            0, 1, 0, 0, 0x75, 0x30, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,
        ]);
        let q = request(&frame(&b)).unwrap();
        assert_eq!((q.api_key, q.version, q.correlation), (0, 2, 7));
        assert_eq!(q.client_id.as_deref(), Some("c1"));
        assert_eq!(
            (q.topic.as_deref(), q.topics, q.partitions, q.partition),
            (Some("t"), 1, 1, Some(0))
        );
        assert_eq!(
            (q.acks, q.records, q.record_bytes),
            (Some(1), Some(0), Some(0))
        );
        // Response: 1 topic "t", partition 0 error 3, offsets; throttle.
        let mut b = vec![
            0, 0, 0, 7, 0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 0, 0, 3,
        ];
        b.extend([0u8; 16]);
        b.extend([0, 0, 0, 0]);
        let s = response(&frame(&b), 0, 2);
        assert_eq!(
            (s.correlation, s.walked, s.error, s.errors),
            (7, true, Some(3), 1)
        );
    }

    #[test]
    fn headers_refuse_what_is_not_kafka() {
        // A PostgreSQL StartupMessage: "version" 3.0 reads as Metadata v0, then "user".
        let pg =
            b"\x00\x00\x00\x29\x00\x03\x00\x00user\x00postgres\x00database\x00postgres\x00\x00";
        let r = request_header(pg);
        assert!(r.is_err() || !printable(r.unwrap().3.unwrap_or(b"")));
        assert!(request_header(&frame(&[0, 200, 0, 0, 0, 0, 0, 1, 0, 0])).is_err());
        assert!(request_header(&frame(&[0, 1, 0, 40, 0, 0, 0, 1, 0, 0])).is_err());
        assert!(request_header(&frame(&[0, 1, 0, 4, 0xff, 0, 0, 1, 0, 0])).is_err());
    }

    #[test]
    fn record_batches_are_counted() {
        let mut set = vec![0u8; 61];
        set[8..12].copy_from_slice(&49u32.to_be_bytes());
        set[16] = 2;
        set[57..61].copy_from_slice(&5u32.to_be_bytes());
        let mut two = set.clone();
        two.extend(&set);
        assert_eq!(count_records(&two), 10);
        assert_eq!(count_records(&two[..70]), 5);
    }
}
