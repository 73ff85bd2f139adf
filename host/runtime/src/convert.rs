//! Conversion of plugin messages into host messages, enforcing caps.

use crate::bindings::wasmtap::decoder::types as wit;
use crate::plugin::RuntimeConfig;
use wasmtap_telemetry::exchange::{Message, MessageKind, Outcome};
use wasmtap_telemetry::model::{AttrValue, Key, KeyValue};

/// Caps applied to what a plugin returns.
pub(crate) struct Caps {
    messages: usize,
    attributes: usize,
    value_len: usize,
}

impl From<&RuntimeConfig> for Caps {
    fn from(c: &RuntimeConfig) -> Self {
        Self {
            messages: c.max_messages_per_call,
            attributes: c.max_attributes_per_message,
            value_len: c.max_attribute_value_len,
        }
    }
}

/// Cuts `s` to at most `max` bytes on a char boundary; true if cut.
fn cut(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut i = max;
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    s.truncate(i);
    true
}

/// Converts and appends; returns (messages accepted, items capped).
pub(crate) fn convert_messages(
    msgs: Vec<wit::Message>,
    caps: &Caps,
    keys: &[Key],
    out: &mut Vec<Message>,
) -> (u64, u64) {
    let mut capped = 0u64;
    let total = msgs.len();
    let mut accepted = 0u64;
    for m in msgs.into_iter().take(caps.messages) {
        let mut attributes = Vec::with_capacity(m.attributes.len().min(caps.attributes));
        if m.attributes.len() > caps.attributes {
            capped += (m.attributes.len() - caps.attributes) as u64;
        }
        for a in m.attributes.into_iter().take(caps.attributes) {
            // Keys were declared (and checked) once, in `describe`.
            let Some(key) = keys.get(usize::from(a.key)) else {
                capped += 1;
                continue;
            };
            let key = key.clone();
            let value = match a.value {
                wit::AttributeValue::Str(mut s) => {
                    capped += u64::from(cut(&mut s, caps.value_len));
                    AttrValue::Str(s)
                }
                wit::AttributeValue::Int(i) => AttrValue::Int(i),
                wit::AttributeValue::Float(f) => AttrValue::Float(f),
                wit::AttributeValue::Boolean(b) => AttrValue::Bool(b),
            };
            attributes.push(KeyValue { key, value });
        }
        let mut operation = m.operation;
        capped += u64::from(cut(&mut operation, 256));
        let mut status_code = m.status_code;
        capped += u64::from(cut(&mut status_code, 64));
        out.push(Message {
            kind: match m.kind {
                wit::MessageKind::Request => MessageKind::Request,
                wit::MessageKind::Response => MessageKind::Response,
                wit::MessageKind::OneWay => MessageKind::OneWay,
            },
            correlation: m.correlation,
            start_ns: m.start_ns,
            end_ns: m.end_ns.max(m.start_ns),
            size: m.size,
            operation,
            status: match m.status {
                wit::StatusClass::Unset => Outcome::Unset,
                wit::StatusClass::Ok => Outcome::Ok,
                wit::StatusClass::Error => Outcome::Error,
            },
            status_code,
            attributes,
        });
        accepted += 1;
    }
    if total > caps.messages {
        capped += (total - caps.messages) as u64;
    }
    (accepted, capped)
}
