//! wasmtap-runtime: loads WebAssembly decoder components and runs their sessions.
//!
//! The only crate that touches wasmtime. A [`PluginHost`] owns the engine and
//! compiles components once ([`Plugin`], holding an `InstancePre`); each worker
//! shard makes a [`Worker`] with one `Store` and one instance per plugin, and
//! drives per-flow [`Session`]s through it. Messages leave this crate as plain
//! [`wasmtap_telemetry::exchange::Message`] values, already checked against the
//! configured caps.

mod convert;
mod det;
pub mod perms;
mod plugin;
mod plugin_log;
mod worker;

pub use plugin::{
    Plugin, PluginHost, PluginInfo, PluginLimits, PluginSet, PluginSource, Registry, RuntimeConfig,
    RuntimeError,
};
pub use worker::{
    CloseReason, Direction, Failure, L4, PluginStats, Session, SessionEnd, Worker, WorkerStats,
};

/// The WIT package this host implements (`wasmtap:decoder`).
pub const WIT_PACKAGE: &str = "wasmtap:decoder";
/// The WIT package version this host implements.
pub const WIT_VERSION: &str = "0.1.0";

/// Bindings generated from `wit/decoder.wit`.
#[allow(missing_docs, unreachable_pub, clippy::all)]
pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "plugin",
    });
}
