//! wasmtap-telemetry: turns decoded messages into exchanges, spans and RED metrics.
//!
//! - [`exchange`]: host-side request/response matching, for every protocol.
//! - [`services`]: the service map (which observed service an endpoint is,
//!   and which agent reports a call).
//! - [`identity`]: workloads by address over time (Kubernetes), for the map.
//! - [`names`]: names learned from DNS answers, for the map.
//! - [`red`]: spans, RED metrics and the operators' indicators (semantic-convention names).
//! - [`graph`]: the service graph and L4 metrics per client/server pair.
//! - [`route`]: route templates (`GET /users/{id}`) for HTTP-like operations.
//! - [`hist`]: explicit-bucket histograms and their boundaries.
//! - [`prom`]: metrics in the Prometheus text format and as JSON lines.
//! - [`model`]: the plain data handed to outputs (console, JSONL, OTLP).
//!
//! Sans-IO and clock-free: every time is a capture timestamp passed in.

pub mod exchange;
pub mod graph;
pub mod hist;
pub mod identity;
pub mod model;
pub mod names;
pub mod prom;
pub mod red;
pub mod route;
pub mod services;
