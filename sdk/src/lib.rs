//! # wasmtap-sdk: write wasmtap protocol decoders in Rust
//!
//! A wasmtap decoder is a WebAssembly component implementing the
//! `wasmtap:decoder@0.1.0` WIT world (see `wit/decoder.wit`). The host hands
//! it the *reassembled, ordered* bytes of each flow, one direction at a time;
//! the decoder returns the protocol messages (requests, responses, one-way
//! messages) it finds. The host pairs requests with responses, builds spans
//! and metrics, and exports them. This crate hides the WIT bindings: implement
//! [`Decoder`] and [`Session`], then call [`export_decoder!`].
//!
//! ## A complete plugin
//!
//! A line-based echo protocol: each line sent to the server is a request, each
//! line sent back is its response; a response starting with `ERR` is an error.
//!
//! ```
//! use wasmtap_sdk::{
//!     Attribute, CloseReason, DecodeError, Decoder, Descriptor, Direction, Message, Session,
//!     Transport,
//! };
//!
//! pub struct LineDecoder;
//!
//! impl Decoder for LineDecoder {
//!     type Session = LineSession;
//!
//!     fn describe() -> Descriptor {
//!         Descriptor::new("line", env!("CARGO_PKG_VERSION"))
//!             .protocol("line")
//!             .transport(Transport::Tcp)
//!             .port(7777)
//!             .attribute_key("line.length")
//!     }
//!
//!     fn new_session(_transport: Transport, _server_port: u16) -> LineSession {
//!         LineSession
//!     }
//! }
//!
//! pub struct LineSession;
//!
//! impl Session for LineSession {
//!     fn feed(
//!         &mut self,
//!         dir: Direction,
//!         timestamp_ns: u64,
//!         data: &[u8],
//!         out: &mut Vec<Message>,
//!     ) -> Result<usize, DecodeError> {
//!         let mut consumed = 0;
//!         // Only complete lines are consumed: the host keeps the rest and
//!         // offers it again with the next bytes.
//!         while let Some(end) = data[consumed..].iter().position(|&b| b == b'\n') {
//!             let line = &data[consumed..consumed + end];
//!             let size = end as u64 + 1;
//!             consumed += end + 1;
//!             out.push(match dir {
//!                 Direction::ToServer => Message::request(timestamp_ns, timestamp_ns, size, "LINE")
//!                     .attribute(Attribute::int("line.length", line.len() as i64)),
//!                 Direction::ToClient if line.starts_with(b"ERR") => {
//!                     Message::response(timestamp_ns, timestamp_ns, size).error("ERR")
//!                 }
//!                 Direction::ToClient => Message::response(timestamp_ns, timestamp_ns, size).ok(""),
//!             });
//!         }
//!         if data.len() - consumed > 4096 {
//!             return Err(DecodeError::new("line-too-long", 0));
//!         }
//!         Ok(consumed)
//!     }
//! }
//!
//! // In a plugin crate (crate-type = ["cdylib"], built for wasm32-wasip2):
//! // wasmtap_sdk::export_decoder!(LineDecoder);
//! # wasmtap_sdk::__set_attribute_keys(&LineDecoder::describe().attribute_keys);
//! # let mut s = LineDecoder::new_session(Transport::Tcp, 7777);
//! # let mut out = Vec::new();
//! # assert_eq!(s.feed(Direction::ToServer, 1, b"hi\nrest", &mut out).unwrap(), 3);
//! # assert_eq!(out.len(), 1);
//! # assert_eq!(out[0].attributes[0].key_name(), Some("line.length"));
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2` and drop the
//! `.wasm` into the agent's plugin directory.
//!
//! ## Rules a decoder lives by
//! - `feed` returns how many bytes it consumed; unconsumed bytes come back
//!   with the next offer, up to a host bound. Consume bodies as they stream in;
//!   never wait for a whole large body.
//! - Timestamps are nanoseconds since the Unix epoch, given by the host; a
//!   decoder never reads a clock.
//! - An `Err` ends the flow's session (the flow is still counted at L4).
//! - A panic traps the instance; the SDK logs the panic message through the
//!   host before the trap, so it shows in the agent's log.
//! - Attribute keys follow OpenTelemetry semantic conventions, and are
//!   declared once in [`Descriptor::attribute_key`]; on the wire each
//!   attribute carries only its key's index. Never put credentials
//!   (passwords, cookies, tokens) into attributes.

#![warn(missing_docs)]

extern crate self as wasmtap_sdk;

pub mod framing;
pub mod mask;
pub mod parsed;
pub mod testing;
pub mod trace;

use std::cell::RefCell;
use std::sync::{Once, OnceLock};

/// Raw bindings generated from `wit/decoder.wit`. Plugin authors need not use
/// them; they are public so [`export_decoder!`] can name them.
#[doc(hidden)]
#[allow(unsafe_code, missing_docs, unreachable_pub, clippy::all)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__wasmtap_export_plugin",
        default_bindings_module: "::wasmtap_sdk::bindings",
        additional_derives: [PartialEq],
    });
}

use bindings::wasmtap::decoder::host as wit_host;
use bindings::wasmtap::decoder::types as wit;

pub use wit::{
    Attribute, AttributeValue, CloseReason, DecodeError, Descriptor, Direction, Message,
    MessageKind, StatusClass, Transport,
};

/// The WIT package version this SDK builds plugins for.
pub const WIT_VERSION: &str = "0.1.0";

/// A protocol decoder: describes itself, probes flows, creates sessions.
pub trait Decoder: 'static {
    /// Per-flow decoding state.
    type Session: Session;

    /// Name, version, protocols, transports and default ports.
    fn describe() -> Descriptor;

    /// Confidence (0-100) that `data`, the first bytes seen in `dir` on a
    /// flow, is this decoder's protocol. Called for flows no decoder claims by
    /// port, and for flows on this decoder's own ports: a port is a hint, so
    /// when this returns less than the threshold (50) and another decoder's
    /// probe reaches it, the other decoder takes the flow. Default: 0, which
    /// lets any decoder that recognises the bytes take flows on your ports;
    /// implement it if you claim ports.
    fn probe(transport: Transport, dir: Direction, data: &[u8]) -> u8 {
        let _ = (transport, dir, data);
        0
    }

    /// Creates the session for a new flow.
    fn new_session(transport: Transport, server_port: u16) -> Self::Session;
}

/// Decoding state for one flow.
pub trait Session: 'static {
    /// Decodes the next bytes of `dir`'s stream (for UDP: one datagram).
    /// Pushes completed messages to `out` and returns the bytes consumed.
    fn feed(
        &mut self,
        dir: Direction,
        timestamp_ns: u64,
        data: &[u8],
        out: &mut Vec<Message>,
    ) -> Result<usize, DecodeError>;

    /// `len` bytes of `dir`'s stream were never captured. Default: end the
    /// session with an error (override to resynchronise).
    fn gap(&mut self, dir: Direction, len: u64, out: &mut Vec<Message>) -> Result<(), DecodeError> {
        let _ = (dir, out);
        Err(DecodeError::new("gap", len))
    }

    /// The flow ended; push messages that only the end completes.
    fn close(&mut self, reason: CloseReason, timestamp_ns: u64, out: &mut Vec<Message>) {
        let _ = (reason, timestamp_ns, out);
    }
}

impl Direction {
    /// 0 for [`Direction::ToServer`], 1 for [`Direction::ToClient`]: an
    /// index into per-direction state.
    pub fn index(self) -> usize {
        match self {
            Direction::ToServer => 0,
            Direction::ToClient => 1,
        }
    }
}

impl DecodeError {
    /// Builds an error with a short, stable, low-cardinality reason.
    pub fn new(reason: &str, offset: u64) -> Self {
        Self {
            reason: reason.to_string(),
            offset,
        }
    }
}

impl Descriptor {
    /// Starts a descriptor with a name and version; add protocols, transports
    /// and ports with the builder methods.
    pub fn new(name: &str, version: &str) -> Self {
        Self {
            name: name.to_string(),
            version: version.to_string(),
            protocols: Vec::new(),
            transports: Vec::new(),
            default_ports: Vec::new(),
            attribute_keys: Vec::new(),
        }
    }
    /// Declares an attribute key the decoder sets (see [`Attribute`]). Every
    /// key used with [`Attribute::str`] and friends must be declared here.
    pub fn attribute_key(mut self, key: &str) -> Self {
        if !self.attribute_keys.iter().any(|k| k == key) {
            self.attribute_keys.push(key.to_string());
        }
        self
    }
    /// Declares several attribute keys.
    pub fn attribute_keys(self, keys: &[&str]) -> Self {
        keys.iter().fold(self, |d, k| d.attribute_key(k))
    }
    /// Adds a protocol name.
    pub fn protocol(mut self, p: &str) -> Self {
        self.protocols.push(p.to_string());
        self
    }
    /// Adds a transport.
    pub fn transport(mut self, t: Transport) -> Self {
        self.transports.push(t);
        self
    }
    /// Adds a default server port.
    pub fn port(mut self, p: u16) -> Self {
        self.default_ports.push(p);
        self
    }
}

/// The attribute keys the decoder declared in `describe`, in order. On the
/// wire an attribute carries the index of its key; this table maps the key
/// strings authors write to those indexes.
static KEYS: OnceLock<Vec<String>> = OnceLock::new();

/// Index the host ignores (and counts): the key was not declared.
const UNDECLARED: u16 = u16::MAX;

/// Records the declared keys (first call wins; called by the generated exports).
#[doc(hidden)]
pub fn __set_attribute_keys(keys: &[String]) {
    let _ = KEYS.set(keys.to_vec());
}

fn key_index(key: &str) -> u16 {
    let i = KEYS
        .get()
        .and_then(|ks| ks.iter().position(|k| k == key))
        .and_then(|i| u16::try_from(i).ok())
        .unwrap_or(UNDECLARED);
    // A misspelt key is a bug to catch at its first use in tests and debug
    // builds (the host drops and counts it in release builds).
    debug_assert!(
        i != UNDECLARED || KEYS.get().is_none(),
        "attribute key {key:?} was not declared in describe()"
    );
    i
}

impl Attribute {
    /// A string attribute. `key` must be declared with
    /// [`Descriptor::attribute_key`]; an undeclared key is dropped by the host.
    pub fn str(key: &str, value: impl Into<String>) -> Self {
        Self {
            key: key_index(key),
            value: AttributeValue::Str(value.into()),
        }
    }
    /// An integer attribute (`key` declared as for [`Attribute::str`]).
    pub fn int(key: &str, value: i64) -> Self {
        Self {
            key: key_index(key),
            value: AttributeValue::Int(value),
        }
    }
    /// A floating-point attribute (`key` declared as for [`Attribute::str`]):
    /// a ratio, a duration the protocol reports in seconds.
    pub fn float(key: &str, value: f64) -> Self {
        Self {
            key: key_index(key),
            value: AttributeValue::Float(value),
        }
    }
    /// A boolean attribute (`key` declared as for [`Attribute::str`]).
    pub fn boolean(key: &str, value: bool) -> Self {
        Self {
            key: key_index(key),
            value: AttributeValue::Boolean(value),
        }
    }
    /// The key's name, if it was declared.
    pub fn key_name(&self) -> Option<&'static str> {
        KEYS.get()
            .and_then(|ks| ks.get(usize::from(self.key)))
            .map(String::as_str)
    }
}

impl Message {
    fn base(kind: MessageKind, start_ns: u64, end_ns: u64, size: u64) -> Self {
        Self {
            kind,
            correlation: None,
            start_ns,
            end_ns,
            size,
            operation: String::new(),
            status: StatusClass::Unset,
            status_code: String::new(),
            attributes: Vec::new(),
        }
    }
    /// A request named by a low-cardinality `operation` (`GET`, `SELECT`).
    pub fn request(start_ns: u64, end_ns: u64, size: u64, operation: &str) -> Self {
        let mut m = Self::base(MessageKind::Request, start_ns, end_ns, size);
        m.operation = operation.to_string();
        m
    }
    /// A response; set its outcome with [`Message::ok`] or [`Message::error`].
    pub fn response(start_ns: u64, end_ns: u64, size: u64) -> Self {
        Self::base(MessageKind::Response, start_ns, end_ns, size)
    }
    /// A one-way message (no answer expected).
    pub fn one_way(start_ns: u64, end_ns: u64, size: u64, operation: &str) -> Self {
        let mut m = Self::base(MessageKind::OneWay, start_ns, end_ns, size);
        m.operation = operation.to_string();
        m
    }
    /// Sets the correlation key that pairs a response with its request.
    pub fn correlate(mut self, key: u64) -> Self {
        self.correlation = Some(key);
        self
    }
    /// Marks success, with the protocol's status code (may be empty).
    pub fn ok(mut self, code: &str) -> Self {
        self.status = StatusClass::Ok;
        self.status_code = code.to_string();
        self
    }
    /// Marks an error, with the protocol's status code (may be empty).
    pub fn error(mut self, code: &str) -> Self {
        self.status = StatusClass::Error;
        self.status_code = code.to_string();
        self
    }
    /// Adds an attribute.
    pub fn attribute(mut self, a: Attribute) -> Self {
        self.attributes.push(a);
        self
    }
}

/// Log levels for [`log`].
pub use wit_host::Level;

/// Writes to the agent's log, tagged with this plugin's name (rate-limited by
/// the host). Does nothing when not running inside the agent (native tests).
pub fn log(level: Level, message: &str) {
    if cfg!(target_arch = "wasm32") {
        wit_host::log(level, message);
    }
}

/// This plugin's configuration section as JSON (`{}` when none was given, and
/// outside the agent).
pub fn config() -> String {
    if cfg!(target_arch = "wasm32") {
        wit_host::config()
    } else {
        "{}".to_string()
    }
}

/// A configuration section that could not be read as the decoder's
/// settings: the key at fault (`ports.9000.framing`; `.` for the section
/// itself) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Where in the section, as a dotted path.
    pub key: String,
    /// What is wrong there.
    pub reason: String,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "config {}: {}", self.key, self.reason)
    }
}

impl std::error::Error for ConfigError {}

/// A configuration document (JSON, as [`config`] returns it) read into the
/// decoder's settings type with serde; an empty document gives
/// `T::default()`. Derive `serde::Deserialize` with `#[serde(default,
/// deny_unknown_fields)]` so missing keys keep their defaults and a
/// misspelt key is an error that names it:
///
/// ```
/// #[derive(Debug, Default, PartialEq, serde::Deserialize)]
/// #[serde(default, deny_unknown_fields)]
/// struct Settings {
///     raw_query_text: bool,
///     max_rows: u32,
/// }
///
/// let s: Settings = wasmtap_sdk::parse_config(r#"{"raw_query_text": true}"#).unwrap();
/// assert!(s.raw_query_text);
/// let e = wasmtap_sdk::parse_config::<Settings>(r#"{"max_rows": "many"}"#).unwrap_err();
/// assert_eq!(e.key, "max_rows");
/// let e = wasmtap_sdk::parse_config::<Settings>(r#"{"raw_query_txt": true}"#).unwrap_err();
/// assert!(e.reason.contains("raw_query_txt"), "{e}");
/// ```
pub fn parse_config<T>(json: &str) -> Result<T, ConfigError>
where
    T: serde::de::DeserializeOwned + Default,
{
    if json.trim().is_empty() {
        return Ok(T::default());
    }
    let mut de = serde_json::Deserializer::from_str(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| ConfigError {
        key: e.path().to_string(),
        reason: e.inner().to_string(),
    })
}

/// This plugin's configuration section as its settings type ([`parse_config`]
/// of [`config`]); on an error, the defaults, and a warning in the agent's
/// log that names the key.
pub fn config_or_default<T>() -> T
where
    T: serde::de::DeserializeOwned + Default,
{
    match parse_config(&config()) {
        Ok(t) => t,
        Err(e) => {
            log(Level::Warn, &format!("{e}; using the defaults"));
            T::default()
        }
    }
}

/// The one setting every decoder that reads queries or commands shares:
/// `raw_query_text = true` exports them unmasked (for troubleshooting, on
/// trusted data only).
///
/// ```
/// use wasmtap_sdk::QueryTextConfig;
/// assert!(QueryTextConfig::from_config(r#"{ "raw_query_text" : true }"#).raw_query_text);
/// assert!(!QueryTextConfig::from_config("{}").raw_query_text);
/// // A misspelt key is reported (in the agent's log) and the default kept.
/// assert!(!QueryTextConfig::from_config(r#"{"raw_query_txt": true}"#).raw_query_text);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueryTextConfig {
    /// Export query and command text unmasked.
    pub raw_query_text: bool,
}

impl QueryTextConfig {
    /// Reads a configuration document; on an error, the defaults and a
    /// warning that names the key.
    pub fn from_config(json: &str) -> Self {
        parse_config(json).unwrap_or_else(|e| {
            log(Level::Warn, &format!("{e}; using the defaults"));
            Self::default()
        })
    }
}

/// Installs a panic hook that reports the panic through [`log`] before the
/// instance traps. Called by the generated exports; idempotent.
#[doc(hidden)]
pub fn __install_panic_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            log(Level::Error, &format!("plugin panicked: {info}"));
        }));
    });
}

/// Adapts a [`Decoder`]'s session to the generated resource trait.
#[doc(hidden)]
pub struct SessionAdapter<D: Decoder> {
    inner: RefCell<D::Session>,
    out: RefCell<Vec<Message>>,
}

impl<D: Decoder> SessionAdapter<D> {
    /// Creates the adapter (called by the generated constructor).
    pub fn new(transport: Transport, server_port: u16) -> Self {
        __install_panic_hook();
        if KEYS.get().is_none() {
            __set_attribute_keys(&D::describe().attribute_keys);
        }
        Self {
            inner: RefCell::new(D::new_session(transport, server_port)),
            out: RefCell::new(Vec::new()),
        }
    }
    /// `feed`, as the WIT resource method.
    pub fn feed(
        &self,
        dir: Direction,
        timestamp_ns: u64,
        data: Vec<u8>,
    ) -> Result<wit::FeedResult, DecodeError> {
        let mut out = self.out.borrow_mut();
        out.clear();
        let consumed = self
            .inner
            .borrow_mut()
            .feed(dir, timestamp_ns, &data, &mut out)?;
        // Passed on as is: more than offered is a bug the host must see
        // (it ends the session and counts a contract violation).
        let consumed = u32::try_from(consumed).unwrap_or(u32::MAX);
        Ok(wit::FeedResult {
            consumed,
            messages: std::mem::take(&mut *out),
        })
    }
    /// `gap`, as the WIT resource method.
    pub fn gap(&self, dir: Direction, len: u64) -> Result<wit::FeedResult, DecodeError> {
        let mut out = Vec::new();
        self.inner.borrow_mut().gap(dir, len, &mut out)?;
        Ok(wit::FeedResult {
            consumed: 0,
            messages: out,
        })
    }
    /// `close`, as the WIT resource method.
    pub fn close(&self, reason: CloseReason, timestamp_ns: u64) -> Vec<Message> {
        let mut out = Vec::new();
        self.inner
            .borrow_mut()
            .close(reason, timestamp_ns, &mut out);
        out
    }
}

/// Exports a [`Decoder`] implementation as the plugin's WIT `decoder`
/// interface. Use once, at the root of a `cdylib` plugin crate. Inert when
/// not compiling for `wasm32`, so a plugin crate can also be an `rlib` and
/// test itself natively.
///
/// ```ignore
/// wasmtap_sdk::export_decoder!(MyDecoder);
/// ```
#[macro_export]
macro_rules! export_decoder {
    ($decoder:ty) => {
        // Only a WebAssembly build exports anything: the same crate builds
        // natively (`crate-type = ["cdylib", "rlib"]`) for its tests.
        #[cfg(target_arch = "wasm32")]
        #[allow(unsafe_code, missing_docs, unreachable_pub)]
        mod __wasmtap_export {
            use super::*;
            use $crate::bindings::exports::wasmtap::decoder::decoder as __wit;

            struct __Component;

            impl __wit::Guest for __Component {
                type Session = __Session;
                fn describe() -> $crate::Descriptor {
                    $crate::__install_panic_hook();
                    let d = <$decoder as $crate::Decoder>::describe();
                    $crate::__set_attribute_keys(&d.attribute_keys);
                    d
                }
                fn probe(
                    transport: $crate::Transport,
                    dir: $crate::Direction,
                    data: ::std::vec::Vec<u8>,
                ) -> u8 {
                    <$decoder as $crate::Decoder>::probe(transport, dir, &data).min(100)
                }
            }

            pub struct __Session($crate::SessionAdapter<$decoder>);

            impl __wit::GuestSession for __Session {
                fn new(transport: $crate::Transport, server_port: u16) -> Self {
                    __Session($crate::SessionAdapter::new(transport, server_port))
                }
                fn feed(
                    &self,
                    dir: $crate::Direction,
                    timestamp_ns: u64,
                    data: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<
                    $crate::bindings::wasmtap::decoder::types::FeedResult,
                    $crate::DecodeError,
                > {
                    self.0.feed(dir, timestamp_ns, data)
                }
                fn gap(
                    &self,
                    dir: $crate::Direction,
                    length: u64,
                ) -> ::std::result::Result<
                    $crate::bindings::wasmtap::decoder::types::FeedResult,
                    $crate::DecodeError,
                > {
                    self.0.gap(dir, length)
                }
                fn close(
                    &self,
                    reason: $crate::CloseReason,
                    timestamp_ns: u64,
                ) -> ::std::vec::Vec<$crate::Message> {
                    self.0.close(reason, timestamp_ns)
                }
            }

            $crate::bindings::__wasmtap_export_plugin!(__Component with_types_in $crate::bindings);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_attributes_carry_their_value() {
        testing::declare(&Descriptor::new("t", "0").attribute_keys(&["t.ratio"]));
        let a = Attribute::float("t.ratio", 0.25);
        assert_eq!(a.value, AttributeValue::Float(0.25));
        assert_eq!(a.key_name(), Some("t.ratio"));
    }
}
