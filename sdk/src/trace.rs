//! Trace context carried in request headers: W3C `traceparent` (and
//! `tracestate`), B3 single (`b3`) and multi (`x-b3-traceid`,
//! `x-b3-spanid`, `x-b3-sampled`) headers. A decoder that sees them reports
//! them as [`PARENT`] (always in the W3C form) and [`STATE`]; the host then
//! puts the span in that trace, with the caller's span as its parent.
//!
//! ```
//! use wasmtap_sdk::trace::traceparent;
//!
//! let h = |name: &str| match name {
//!     "x-b3-traceid" => Some("463ac35c9f6413ad"),
//!     "x-b3-spanid" => Some("a2fb4a1d1a96d312"),
//!     "x-b3-sampled" => Some("1"),
//!     _ => None,
//! };
//! assert_eq!(
//!     traceparent(h).as_deref(),
//!     Some("00-0000000000000000463ac35c9f6413ad-a2fb4a1d1a96d312-01")
//! );
//! ```

/// Attribute key of the caller's trace context, in the W3C `traceparent`
/// form (`00-<trace id>-<parent span id>-<flags>`). Declare it in
/// `describe` to report it; the host consumes it (it does not stay an
/// attribute of the span).
pub const PARENT: &str = "wasmtap.trace.parent";
/// Attribute key of the W3C `tracestate` that came with it.
pub const STATE: &str = "wasmtap.trace.state";

fn hex_of(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

/// The caller's trace context from request headers (`header(name)` gives a
/// header's value; names lowercase), in the W3C form; `None` when there is
/// none or it is malformed. W3C wins over B3.
pub fn traceparent<'a>(header: impl Fn(&str) -> Option<&'a str>) -> Option<String> {
    if let Some(tp) = header("traceparent") {
        let parts: Vec<&str> = tp.trim().split('-').collect();
        if parts.len() >= 4
            && parts[0].len() == 2
            && parts[0] != "ff"
            && hex_of(parts[1], 32)
            && hex_of(parts[2], 16)
            && parts[3].len() == 2
        {
            return Some(format!(
                "00-{}-{}-{}",
                parts[1].to_ascii_lowercase(),
                parts[2].to_ascii_lowercase(),
                parts[3]
            ));
        }
        return None;
    }
    let (trace, span, sampled) = if let Some(b3) = header("b3") {
        let p: Vec<&str> = b3.trim().split('-').collect();
        (p.first().copied()?, p.get(1).copied()?, p.get(2).copied())
    } else {
        (
            header("x-b3-traceid")?,
            header("x-b3-spanid")?,
            header("x-b3-sampled"),
        )
    };
    let trace = trace.trim();
    let trace = if trace.len() == 16 {
        format!("{}{trace}", "0".repeat(16))
    } else {
        trace.to_string()
    };
    if !hex_of(&trace, 32) || !hex_of(span.trim(), 16) {
        return None;
    }
    let flags = if matches!(sampled.map(str::trim), Some("1" | "d" | "true")) {
        "01"
    } else {
        "00"
    };
    Some(format!(
        "00-{}-{}-{flags}",
        trace.to_ascii_lowercase(),
        span.trim().to_ascii_lowercase()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let w3c = |v: &'static str| move |n: &str| (n == "traceparent").then_some(v);
        assert_eq!(
            traceparent(w3c(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            ))
            .as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
        assert_eq!(
            traceparent(w3c(
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
            )),
            None
        );
        assert_eq!(traceparent(w3c("garbage")), None);
        let b3 =
            |n: &str| (n == "b3").then_some("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1");
        assert_eq!(
            traceparent(b3).as_deref(),
            Some("00-80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-01")
        );
        assert_eq!(traceparent(|_: &str| None), None);
    }
}
