//! A decoder's own output: its `log` import and its WASI stdout/stderr, both
//! sent to the agent's log tagged with the plugin's name, under one rate limit.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

/// Records per second one instance may log; the rest are dropped and counted.
pub(crate) const LOG_RECORDS_PER_SECOND: u32 = 100;
/// Bytes kept of one record.
const MAX_RECORD: usize = 1024;

/// A token bucket of one-second windows, shared by `log` and stdout/stderr.
pub(crate) struct LogLimiter {
    plugin: Arc<str>,
    window: Instant,
    in_window: u32,
    /// Records dropped by the limit.
    pub(crate) dropped: u64,
}

impl LogLimiter {
    // Instance creation, off the per-packet path.
    #[allow(clippy::disallowed_methods)]
    pub(crate) fn new(plugin: Arc<str>) -> Arc<Mutex<Self>> {
        Arc::new(Mutex::new(Self {
            plugin,
            window: Instant::now(),
            in_window: 0,
            dropped: 0,
        }))
    }

    /// Whether one more record may go out now.
    // Only when a decoder logs; the limit protects the operator's log,
    // which lives in wall time, and decides nothing about the traffic.
    #[allow(clippy::disallowed_methods)]
    fn admit(&mut self) -> bool {
        if self.window.elapsed().as_secs() >= 1 {
            if self.dropped > 0 && self.in_window >= LOG_RECORDS_PER_SECOND {
                tracing::warn!(plugin = %self.plugin, dropped = self.dropped, "plugin log rate-limited");
            }
            self.window = Instant::now();
            self.in_window = 0;
        }
        if self.in_window >= LOG_RECORDS_PER_SECOND {
            self.dropped += 1;
            return false;
        }
        self.in_window += 1;
        true
    }
}

/// Level of a record.
#[derive(Clone, Copy)]
pub(crate) enum Lvl {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

/// Logs one record for the plugin, if the limit allows.
// Uncontended: the limiter is shared only by one store's log import and
// its stdout/stderr streams, all on the worker's thread.
#[allow(clippy::disallowed_methods)]
pub(crate) fn emit(limiter: &Mutex<LogLimiter>, level: Lvl, stream: &str, text: &str) {
    let mut l = match limiter.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if !l.admit() {
        return;
    }
    let plugin = l.plugin.clone();
    drop(l);
    let mut end = text.len().min(MAX_RECORD);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let msg = &text[..end];
    match level {
        Lvl::Trace => tracing::trace!(plugin = %plugin, stream, "{msg}"),
        Lvl::Debug => tracing::debug!(plugin = %plugin, stream, "{msg}"),
        Lvl::Info => tracing::info!(plugin = %plugin, stream, "{msg}"),
        Lvl::Warn => tracing::warn!(plugin = %plugin, stream, "{msg}"),
        Lvl::Error => tracing::error!(plugin = %plugin, stream, "{msg}"),
    }
}

/// WASI stdout or stderr of a plugin: complete lines go to the agent's log.
#[derive(Clone)]
pub(crate) struct LogStream {
    limiter: Arc<Mutex<LogLimiter>>,
    name: &'static str,
    level: Lvl,
}

impl LogStream {
    pub(crate) fn new(limiter: Arc<Mutex<LogLimiter>>, name: &'static str, level: Lvl) -> Self {
        Self {
            limiter,
            name,
            level,
        }
    }
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter {
            stream: self.clone(),
            line: Vec::new(),
        })
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only the WASIp2 interfaces are linked; nothing writes here.
        Box::new(tokio::io::sink())
    }
}

/// Splits writes into lines (bounded) and logs each.
struct LineWriter {
    stream: LogStream,
    line: Vec<u8>,
}

impl LineWriter {
    fn flush_line(&mut self) {
        if !self.line.is_empty() {
            let text = String::from_utf8_lossy(&self.line);
            emit(
                &self.stream.limiter,
                self.stream.level,
                self.stream.name,
                text.trim_end(),
            );
            self.line.clear();
        }
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: bytes::Bytes) -> Result<(), StreamError> {
        for &b in bytes.iter() {
            if b == b'\n' {
                self.flush_line();
            } else if self.line.len() < MAX_RECORD {
                self.line.push(b);
            }
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[async_trait::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.flush_line();
    }
}
