//! A plugin instance's store: WASI with nothing granted, memory and table
//! limits, the decoder's log and configuration, and its deterministic clocks.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::wasmtap::decoder::host::Level;
use crate::bindings::wasmtap::decoder::types as wit;

/// Memory and table bounds of one instance, with the high-water mark and
/// whether a bound was hit (so a trap can be classified exactly).
pub(crate) struct Limiter {
    pub(super) memory_limit: usize,
    pub(super) high_water: usize,
    pub(super) hit: bool,
}

/// Table elements one instance may grow to.
const MAX_TABLE_ELEMENTS: usize = 1 << 20;
/// Core instances one component may create.
const MAX_CORE_INSTANCES: usize = 64;
/// Tables one component may create.
const MAX_TABLES: usize = 64;
/// Linear memories one component may create.
const MAX_MEMORIES: usize = 16;

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.hit = true;
            // An error (not `Ok(false)`) traps at once: a plugin cannot
            // limp on after its allocator failed.
            wasmtime::bail!("memory limit of {} bytes reached", self.memory_limit);
        }
        self.high_water = self.high_water.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.hit = true;
            wasmtime::bail!("table limit of {MAX_TABLE_ELEMENTS} elements reached");
        }
        Ok(true)
    }

    // Counts of what a component's structure creates at instantiation (core
    // instances, tables, memories), not of anything a call can grow: sized
    // for components that link several core modules (componentize-py's
    // hold an interpreter, libc and their adapters). Memory bytes and CPU
    // are the bounds that matter, and they are enforced above.
    fn instances(&self) -> usize {
        MAX_CORE_INSTANCES
    }
    fn tables(&self) -> usize {
        MAX_TABLES
    }
    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

/// What a store carries: WASI with nothing granted, limits, and the plugin's identity.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    /// What the decoder's clocks and random source read.
    pub(crate) det: Arc<crate::det::Det>,
    table: ResourceTable,
    pub(super) limiter: Limiter,
    config: Arc<str>,
    pub(super) log: Arc<std::sync::Mutex<crate::plugin_log::LogLimiter>>,
}

impl WasiView for StoreState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl wit::Host for StoreState {}

impl crate::bindings::wasmtap::decoder::host::Host for StoreState {
    fn log(&mut self, level: Level, message: String) {
        use crate::plugin_log::Lvl;
        let lvl = match level {
            Level::Trace => Lvl::Trace,
            Level::Debug => Lvl::Debug,
            Level::Info => Lvl::Info,
            Level::Warn => Lvl::Warn,
            Level::Error => Lvl::Error,
        };
        crate::plugin_log::emit(&self.log, lvl, "log", &message);
    }

    fn config(&mut self) -> String {
        self.config.to_string()
    }
}

pub(crate) fn new_store(
    engine: &wasmtime::Engine,
    memory_limit: usize,
    plugin: Arc<str>,
    config: Arc<str>,
) -> Store<StoreState> {
    use crate::plugin_log::{LogLimiter, LogStream, Lvl};
    let log = LogLimiter::new(plugin.clone());
    let det = Arc::new(crate::det::Det::default());
    let mut wasi = WasiCtx::builder();
    // Clocks read the capture time, random is seeded per flow: a decoder
    // that reads either stays deterministic in replay.
    wasi.wall_clock(crate::det::Wall(det.clone()))
        .monotonic_clock(crate::det::Mono(det.clone()))
        .secure_random(crate::det::Random(det.clone()))
        .insecure_random(crate::det::Random(det.clone()))
        .insecure_random_seed(0);
    // Nothing granted: no sockets, no name lookups, no preopened directories,
    // no environment, no arguments. Output goes to the agent's log.
    wasi.allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .stdout(LogStream::new(log.clone(), "stdout", Lvl::Info))
        .stderr(LogStream::new(log.clone(), "stderr", Lvl::Warn));
    let state = StoreState {
        wasi: wasi.build(),
        det,
        table: ResourceTable::new(),
        limiter: Limiter {
            memory_limit,
            high_water: 0,
            hit: false,
        },
        config,
        log,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // With epoch interruption on, a call past its deadline traps; the
    // deadline is set before every call.
    store.epoch_deadline_trap();
    store
}
