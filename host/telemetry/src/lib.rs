//! wasmtap-telemetry: turns decoded messages into exchanges, spans and RED metrics.
//!
//! - [`exchange`]: host-side request/response matching, for every protocol.
//! - [`services`]: the service map (which observed service an endpoint is).
//! - [`red`]: spans and RED metrics (semantic-convention names and buckets).
//! - [`model`]: the plain data handed to outputs (console, JSONL, OTLP).
//!
//! Sans-IO and clock-free: every time is a capture timestamp passed in.

pub mod exchange;
pub mod model;
pub mod red;
pub mod services;
