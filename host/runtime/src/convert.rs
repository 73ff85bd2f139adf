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

/// Whether `s` holds a control character (C0, DEL, C1); `keep_lines`
/// spares tab, newline and carriage return (multi-line query text).
fn has_control(s: &str, keep_lines: bool) -> bool {
    let b = s.as_bytes();
    b.iter().enumerate().any(|(i, &c)| {
        (c < 0x20 && !(keep_lines && matches!(c, b'\t' | b'\n' | b'\r')))
            || c == 0x7f
            // C1 controls, U+0080 to U+009F, are 0xC2 0x80..=0x9F in UTF-8.
            || (c == 0xc2 && b.get(i + 1).is_some_and(|n| (0x80..=0x9f).contains(n)))
    })
}

/// Replaces control characters in a decoder's string with U+FFFD, so that
/// no escape sequence reaches a terminal, a log line or a backend raw;
/// true if anything was replaced. (Strings from a component are valid
/// UTF-8 already: the canonical ABI checks when lifting them.)
pub(crate) fn sanitize(s: &mut String, keep_lines: bool) -> bool {
    if !has_control(s, keep_lines) {
        return false;
    }
    *s = s
        .chars()
        .map(|c| {
            if c.is_control() && !(keep_lines && matches!(c, '\t' | '\n' | '\r')) {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect();
    true
}

/// What converting one call's messages did besides accepting them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Converted {
    /// Messages accepted.
    pub accepted: u64,
    /// Messages, attributes and strings cut by the caps.
    pub capped: u64,
    /// Strings whose control characters were replaced.
    pub sanitized: u64,
    /// Messages whose timestamps lay outside the flow's packet times.
    pub clamped: u64,
}

/// Converts and appends. Timestamps are clamped into `window` (the first
/// and latest packet times the flow offered the decoder).
pub(crate) fn convert_messages(
    msgs: Vec<wit::Message>,
    caps: &Caps,
    keys: &[Key],
    window: (u64, u64),
    out: &mut Vec<Message>,
) -> Converted {
    let mut capped = 0u64;
    let mut sanitized = 0u64;
    let mut clamped = 0u64;
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
                    // Replaced first: U+FFFD is longer than what it replaces.
                    sanitized += u64::from(sanitize(&mut s, true));
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
        sanitized += u64::from(sanitize(&mut operation, false));
        capped += u64::from(cut(&mut operation, 256));
        let mut status_code = m.status_code;
        sanitized += u64::from(sanitize(&mut status_code, false));
        capped += u64::from(cut(&mut status_code, 64));
        let (lo, hi) = (window.0, window.1.max(window.0));
        let start_ns = m.start_ns.clamp(lo, hi);
        let end_ns = m.end_ns.clamp(lo, hi).max(start_ns);
        clamped += u64::from(start_ns != m.start_ns || end_ns != m.end_ns.max(m.start_ns));
        out.push(Message {
            kind: match m.kind {
                wit::MessageKind::Request => MessageKind::Request,
                wit::MessageKind::Response => MessageKind::Response,
                wit::MessageKind::OneWay => MessageKind::OneWay,
            },
            correlation: m.correlation,
            start_ns,
            end_ns,
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
    Converted {
        accepted,
        capped,
        sanitized,
        clamped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_replaced() {
        let mut s = "GET \u{1b}[31mred\u{1b}[0m\u{7}".to_string();
        assert!(sanitize(&mut s, false));
        assert_eq!(s, "GET \u{fffd}[31mred\u{fffd}[0m\u{fffd}");
        // C1 controls too (U+009B is a one-character CSI).
        let mut c1 = "a\u{9b}2J".to_string();
        assert!(sanitize(&mut c1, true));
        assert_eq!(c1, "a\u{fffd}2J");
        // Query text keeps its lines; a single-line field does not.
        let mut q = "SELECT 1\n\tFROM t\r\n".to_string();
        assert!(!sanitize(&mut q, true));
        assert!(sanitize(&mut q, false));
        assert_eq!(q, "SELECT 1\u{fffd}\u{fffd}FROM t\u{fffd}\u{fffd}");
        let mut clean = "ordinary text, ünïcode ✓".to_string();
        assert!(!sanitize(&mut clean, false));
    }
}
