//! Per-shard plugin instances and per-flow sessions.

use std::sync::Arc;

use wasmtime::component::{ResourceAny, ResourceTable};
use wasmtime::{ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::Plugin as PluginBindings;
use crate::bindings::wasmtap::decoder::host::Level;
use crate::bindings::wasmtap::decoder::types as wit;
use crate::convert::{Caps, convert_messages};
use crate::plugin::{Plugin, PluginHost, RuntimeConfig};
use wasmtap_telemetry::exchange::Message;

/// Memory and table bounds of one instance, with the high-water mark and
/// whether a bound was hit (so a trap can be classified exactly).
pub(crate) struct Limiter {
    memory_limit: usize,
    high_water: usize,
    hit: bool,
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
    limiter: Limiter,
    config: Arc<str>,
    log: Arc<std::sync::Mutex<crate::plugin_log::LogLimiter>>,
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

/// Direction of bytes on a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to server.
    ToServer,
    /// Server to client.
    ToClient,
}

impl Dir {
    fn flip(self) -> Self {
        match self {
            Dir::ToServer => Dir::ToClient,
            Dir::ToClient => Dir::ToServer,
        }
    }
}

/// Transport of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    /// TCP (ordered stream).
    Tcp,
    /// UDP (datagrams).
    Udp,
}

/// Why a session stopped decoding before its flow ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEnd {
    /// No decoder claimed the flow.
    NoDecoder,
    /// The decoder returned an error (its reason).
    DecodeError(String),
    /// The decoder failed: a trap, a deadline or a limit (see [`Failure`]).
    Failed(Failure),
    /// The decoder left more unconsumed bytes than the bound.
    PendingOverflow,
    /// The decoder broke the contract: it said it consumed more bytes than
    /// it was offered.
    ContractViolation,
    /// The decoder is quarantined after repeated failures.
    Quarantined,
    /// The flow ended and the session was closed normally.
    Closed,
}

impl SessionEnd {
    /// A stable, low-cardinality name for counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionEnd::NoDecoder => "no_decoder",
            SessionEnd::DecodeError(_) => "decode_error",
            SessionEnd::Failed(f) => f.as_str(),
            SessionEnd::PendingOverflow => "pending_overflow",
            SessionEnd::ContractViolation => "contract_violation",
            SessionEnd::Quarantined => "quarantined",
            SessionEnd::Closed => "closed",
        }
    }
}

/// How a plugin call failed. Each ends the flow's session and re-creates the instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The call ran past its CPU deadline (epoch interruption).
    Deadline,
    /// The instance hit its memory or table bound.
    Limit,
    /// Any other trap: a panic, an out-of-bounds access, unreachable...
    Trap,
}

impl Failure {
    /// A stable name for counters and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Deadline => "deadline",
            Failure::Limit => "limit",
            Failure::Trap => "trap",
        }
    }
}

enum State {
    Undecided,
    /// A decoder claims the server port; confirmed (or overruled) by the first bytes.
    ByPort(usize),
    Active {
        slot: usize,
        generation: u64,
        resource: ResourceAny,
    },
    Ended(SessionEnd),
}

/// Decoding state of one flow, owned by the flow table entry.
pub struct Session {
    l4: L4,
    server_port: u16,
    state: State,
    pending: [Vec<u8>; 2],
    protocol: Option<Arc<str>>,
    /// The flow's endpoints (client, server), for failure reports.
    flow: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    /// Bytes offered so far per direction (the stream offset of the next offer).
    offset: [u64; 2],
    /// The flow's roles were guessed (no handshake seen): a decoder's probe
    /// may reverse them.
    roles_guessed: bool,
    /// The guess was wrong: directions are reversed for the decoder.
    swapped: bool,
    /// First and latest packet times offered to the decoder: messages'
    /// timestamps are clamped into them.
    window: Option<(u64, u64)>,
    /// The flow's random generator state (WASI random reads it).
    rng: u64,
}

impl Session {
    /// A packet time the decoder is shown.
    fn widen(&mut self, ts_ns: u64) {
        self.window = Some(match self.window {
            None => (ts_ns, ts_ns),
            Some((lo, hi)) => (lo.min(ts_ns), hi.max(ts_ns)),
        });
    }

    /// Names the flow (client, server) in failure reports; `guessed`: the
    /// roles come from ports, not from a handshake (a decoder that
    /// recognises requests only in the other direction then reverses them).
    pub fn set_flow(
        &mut self,
        client: std::net::SocketAddr,
        server: std::net::SocketAddr,
        guessed: bool,
    ) {
        self.flow = Some((client, server));
        self.roles_guessed = guessed;
        self.rng = crate::det::seed((client, server));
    }

    /// Whether the flow's guessed roles were reversed (the table's client is
    /// the server).
    pub fn swapped(&self) -> bool {
        self.swapped
    }

    fn flow_text(&self) -> String {
        match self.flow {
            Some((c, s)) => format!("{c} -> {s}"),
            None => format!("port {}", self.server_port),
        }
    }

    /// The protocol of the decoder handling this flow, once chosen.
    pub fn protocol(&self) -> Option<&Arc<str>> {
        self.protocol.as_ref()
    }
    /// Why decoding stopped, if it did.
    pub fn ended(&self) -> Option<&SessionEnd> {
        match &self.state {
            State::Ended(e) => Some(e),
            _ => None,
        }
    }
}

/// Counters of one plugin on one worker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PluginStats {
    /// Sessions created.
    pub sessions: u64,
    /// Sessions re-created on a fresh instance after another flow's failure.
    pub sessions_restarted: u64,
    /// `feed`/`gap`/`close` calls.
    pub calls: u64,
    /// Bytes offered (re-offered bytes count again).
    pub bytes_in: u64,
    /// Messages accepted.
    pub messages: u64,
    /// Sessions ended by the decoder's own errors.
    pub decode_errors: u64,
    /// Traps other than deadlines and limits (panics, bad memory accesses...).
    pub traps: u64,
    /// Calls stopped at their CPU deadline.
    pub deadline_hits: u64,
    /// Memory or table bounds hit.
    pub limit_hits: u64,
    /// Sessions ended because their pending bytes passed the bound.
    pub pending_overflows: u64,
    /// Messages, attributes or values dropped or cut by caps.
    pub capped: u64,
    /// Strings (operations, status codes, attribute values) whose control
    /// characters were replaced.
    pub sanitized: u64,
    /// Messages whose timestamps lay outside their flow's packet times
    /// (clamped into them).
    pub clamped_timestamps: u64,
    /// Sessions ended because the decoder consumed more than offered.
    pub contract_violations: u64,
    /// Times the plugin was quarantined.
    pub quarantines: u64,
    /// Flows refused a session because the plugin was quarantined.
    pub refused_quarantined: u64,
    /// Highest linear memory of an instance, bytes.
    pub memory_high_water: u64,
    /// Wall time spent inside the plugin, nanoseconds: an estimate, from
    /// one call in 64 timed.
    pub nanos: u64,
    /// Log records (`log`, stdout, stderr) dropped by the rate limit.
    pub log_dropped: u64,
}

/// Counters of one worker: per plugin, and flows no plugin claimed.
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    /// Flows no decoder claimed.
    pub no_decoder: u64,
    /// Flows whose guessed roles (no handshake) a decoder's probe reversed.
    pub roles_swapped: u64,
    /// Per plugin, by name.
    pub plugins: Vec<(String, PluginStats)>,
}

/// Failures within this window (capture time) count towards quarantine.
const FAILURE_WINDOW_NS: u64 = 10_000_000_000;
/// Failures within the window that quarantine a plugin.
const FAILURES_TO_QUARANTINE: u32 = 5;
/// First quarantine lasts this long; each next one twice as long (Envoy's crash-loop policy).
const QUARANTINE_BASE_NS: u64 = 1_000_000_000;
/// Longest quarantine.
const QUARANTINE_MAX_NS: u64 = 300_000_000_000;

struct Slot {
    plugin: Arc<Plugin>,
    protocol: Arc<str>,
    store: Store<StoreState>,
    bindings: PluginBindings,
    generation: u64,
    poisoned: bool,
    /// Replaced or removed: takes no new sessions, serves its live ones.
    draining: bool,
    /// Drained: no session refers to it; the slot may be reused.
    retired: bool,
    /// Sessions in state `Active` on this slot.
    live: u32,
    stats: PluginStats,
    /// Failures in the current window, and when the window started.
    failures: u32,
    window_start_ns: u64,
    /// Quarantined until this capture time (0: not quarantined).
    quarantined_until_ns: u64,
    quarantine_count: u32,
}

/// A shard's instances of every plugin; drives sessions. Single-threaded.
pub struct Worker {
    slots: Vec<Slot>,
    engine: wasmtime::Engine,
    host_config: RuntimeConfig,
    caps: Caps,
    no_decoder: u64,
    /// The published plugin set this worker follows, and the version it has.
    registry: Option<crate::Registry>,
    seen_version: u64,
    /// Capture time of the latest call, for quarantine windows.
    now_ns: u64,
    /// Epoch ticks a call may run (`None`: no deadline).
    deadline_ticks: Option<u64>,
    /// Epoch ticks an instantiation may run.
    load_deadline_ticks: Option<u64>,
    /// (decoder, reason) of decode errors already logged at warn.
    warned: std::collections::HashSet<(String, String)>,
    /// Flows whose guessed roles a decoder's probe reversed.
    roles_swapped: u64,
}

fn dir_wit(d: Dir) -> wit::Direction {
    match d {
        Dir::ToServer => wit::Direction::ToServer,
        Dir::ToClient => wit::Direction::ToClient,
    }
}

fn l4_wit(l: L4) -> wit::Transport {
    match l {
        L4::Tcp => wit::Transport::Tcp,
        L4::Udp => wit::Transport::Udp,
    }
}

/// The cause of a failed call on one line (wasm backtraces stay out of the log).
/// Where a failing call was: for the log.
struct Call {
    name: &'static str,
    dir: Option<Dir>,
    offset: u64,
    flow: String,
}

impl Call {
    fn new(name: &'static str, s: &Session, dir: Dir) -> Self {
        Self {
            name,
            dir: (name != "close").then_some(dir),
            offset: s.offset[dir as usize],
            flow: s.flow_text(),
        }
    }

    /// A call outside a flow's stream (probe, resource drop).
    fn bare(name: &'static str) -> Self {
        Self {
            name,
            dir: None,
            offset: 0,
            flow: String::new(),
        }
    }
}

/// (decoder, reason) pairs logged at warn at most (then debug only).
const MAX_WARNED: usize = 256;

fn one_line(e: &wasmtime::Error) -> String {
    if let Some(t) = e.downcast_ref::<wasmtime::Trap>() {
        return t.to_string();
    }
    let root = e.root_cause().to_string();
    root.lines().next().unwrap_or_default().to_string()
}

/// Prepares a store for one call: the CPU deadline (the plugin's own, else the worker's).
/// Before a call: the CPU deadline, and what the decoder's clocks and
/// random source read (capture time `now_ns`, the flow's generator `rng`).
fn arm(slot: &mut Slot, deadline: Option<u64>, now_ns: u64, rng: u64) {
    if let Some(t) = slot.plugin.deadline_ticks.or(deadline) {
        slot.store.set_epoch_deadline(t);
    }
    slot.store.data().det.enter(now_ns, rng);
}

impl Worker {
    /// Instantiates every plugin in a store of this worker's own.
    pub fn new(host: &PluginHost, plugins: &[Arc<Plugin>]) -> Result<Self, crate::RuntimeError> {
        let mut w = Self {
            slots: Vec::with_capacity(plugins.len()),
            engine: host.engine.clone(),
            host_config: host.config.clone(),
            caps: Caps::from(&host.config),
            no_decoder: 0,
            registry: None,
            seen_version: 0,
            now_ns: 0,
            deadline_ticks: host.deadline_ticks(),
            load_deadline_ticks: host.load_deadline_ticks(),
            warned: Default::default(),
            roles_swapped: 0,
        };
        for p in plugins {
            w.add_slot(p)?;
        }
        Ok(w)
    }

    /// A worker that follows a registry: each time a new plugin set is
    /// published, new flows get the new decoders and live sessions finish on
    /// the instances they started with.
    pub fn following(
        host: &PluginHost,
        registry: crate::Registry,
    ) -> Result<Self, crate::RuntimeError> {
        let set = registry.current();
        let mut w = Self::new(host, &set.plugins)?;
        w.seen_version = set.version;
        w.registry = Some(registry);
        Ok(w)
    }

    /// Applies a newly published plugin set, if any. One atomic load when
    /// nothing changed: call it as often as convenient (every frame).
    pub fn refresh(&mut self) {
        let Some(reg) = &self.registry else { return };
        if reg.version() == self.seen_version {
            return;
        }
        let set = reg.current();
        self.seen_version = set.version;
        self.sync(&set.plugins);
    }

    fn sync(&mut self, plugins: &[Arc<Plugin>]) {
        for p in plugins {
            let kept = self.slots.iter().any(|s| {
                !s.draining
                    && !s.retired
                    && s.plugin.info.sha256 == p.info.sha256
                    && s.plugin.info.name == p.info.name
            });
            if !kept && let Err(e) = self.add_slot(p) {
                tracing::error!(plugin = %p.info.name, "cannot instantiate the new version: {e}");
            }
        }
        for slot in &mut self.slots {
            if slot.retired || slot.draining {
                continue;
            }
            let wanted = plugins.iter().any(|p| {
                p.info.sha256 == slot.plugin.info.sha256 && p.info.name == slot.plugin.info.name
            });
            if !wanted {
                slot.draining = true;
                slot.retired = slot.live == 0;
                tracing::info!(
                    plugin = %slot.plugin.info.name,
                    version = %slot.plugin.info.version,
                    live_sessions = slot.live,
                    "decoder replaced or removed: draining"
                );
            }
        }
    }

    fn add_slot(&mut self, p: &Arc<Plugin>) -> Result<(), crate::RuntimeError> {
        let (store, bindings) = instantiate_on(&self.engine, self.load_deadline_ticks, p)?;
        let slot = Slot {
            plugin: p.clone(),
            protocol: Arc::from(p.info.protocol()),
            store,
            bindings,
            generation: 0,
            poisoned: false,
            draining: false,
            retired: false,
            live: 0,
            stats: PluginStats::default(),
            failures: 0,
            window_start_ns: 0,
            quarantined_until_ns: 0,
            quarantine_count: 0,
        };
        // Reuse a retired slot (its old instance is dropped here); generations
        // keep rising so no stale reference can match.
        if let Some(i) = self.slots.iter().position(|s| s.retired) {
            let generation = self.slots[i].generation + 1;
            self.slots[i] = Slot { generation, ..slot };
        } else {
            self.slots.push(slot);
        }
        Ok(())
    }

    /// Moves a session to a new state, keeping each slot's live count exact
    /// and retiring a draining slot whose last session ended.
    fn set_state(&mut self, s: &mut Session, new: State) {
        if let State::Active { slot, .. } = s.state
            && let Some(sl) = self.slots.get_mut(slot)
        {
            sl.live = sl.live.saturating_sub(1);
            if sl.draining && sl.live == 0 {
                sl.retired = true;
            }
        }
        if let State::Active { slot, .. } = new
            && let Some(sl) = self.slots.get_mut(slot)
        {
            sl.live += 1;
        }
        s.state = new;
    }

    /// Loaded decoders: (name, version, sha256, state) with state `active` or `draining`.
    pub fn loaded(&self) -> Vec<(String, String, String, &'static str)> {
        self.slots
            .iter()
            .filter(|s| !s.retired)
            .map(|s| {
                let i = &s.plugin.info;
                let state = if s.draining {
                    "draining"
                } else if s.quarantined_until_ns > self.now_ns {
                    "quarantined"
                } else {
                    "active"
                };
                (i.name.clone(), i.version.clone(), i.sha256.clone(), state)
            })
            .collect()
    }

    /// Server ports the loaded decoders claim (hints for role guessing).
    pub fn server_ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .slots
            .iter()
            .filter(|s| !s.draining && !s.retired)
            .flat_map(|s| s.plugin.info.ports.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Counters, per plugin.
    // Counters for /status and export, about once a second, off the per-packet path.
    #[allow(clippy::disallowed_methods)]
    pub fn stats(&self) -> WorkerStats {
        WorkerStats {
            no_decoder: self.no_decoder,
            roles_swapped: self.roles_swapped,
            plugins: self
                .slots
                .iter()
                .map(|s| {
                    let mut st = s.stats.clone();
                    st.memory_high_water = st
                        .memory_high_water
                        .max(s.store.data().limiter.high_water as u64);
                    st.log_dropped += s.store.data().log.lock().map_or(0, |l| l.dropped);
                    (s.plugin.info.name.clone(), st)
                })
                .collect(),
        }
    }

    /// Whether a plugin is quarantined at the latest capture time seen.
    pub fn is_quarantined(&self, name: &str) -> bool {
        self.slots
            .iter()
            .any(|s| s.plugin.info.name == name && s.quarantined_until_ns > self.now_ns)
    }

    /// A new session for a flow; the decoder is chosen by port now, or by probe on first data.
    pub fn open(&mut self, l4: L4, server_port: u16) -> Session {
        let mut s = Session {
            l4,
            server_port,
            state: State::Undecided,
            pending: [Vec::new(), Vec::new()],
            protocol: None,
            flow: None,
            offset: [0, 0],
            roles_guessed: false,
            swapped: false,
            window: None,
            rng: 0,
        };
        let by_port = self.slots.iter().position(|slot| {
            let i = &slot.plugin.info;
            !slot.draining
                && !slot.retired
                && (match l4 {
                    L4::Tcp => i.tcp,
                    L4::Udp => i.udp,
                })
                && i.ports.contains(&server_port)
        });
        if let Some(idx) = by_port {
            s.state = State::ByPort(idx);
            s.protocol = Some(self.slots[idx].protocol.clone());
        }
        s
    }

    fn start(&mut self, s: &mut Session, idx: usize, restart: bool) {
        s.protocol = Some(self.slots[idx].protocol.clone());
        if self.slots[idx].quarantined_until_ns > self.now_ns {
            self.slots[idx].stats.refused_quarantined += 1;
            self.set_state(s, State::Ended(SessionEnd::Quarantined));
            return;
        }
        self.revive(idx);
        let deadline = self.deadline_ticks;
        let now = self.now_ns;
        let slot = &mut self.slots[idx];
        arm(slot, deadline, now, s.rng);
        let res = slot
            .bindings
            .wasmtap_decoder_decoder()
            .session()
            .call_constructor(&mut slot.store, l4_wit(s.l4), s.server_port);
        s.rng = slot.store.data().det.rng();
        match res {
            Ok(resource) => {
                if restart {
                    slot.stats.sessions_restarted += 1;
                } else {
                    slot.stats.sessions += 1;
                }
                let generation = slot.generation;
                self.set_state(
                    s,
                    State::Active {
                        slot: idx,
                        generation,
                        resource,
                    },
                );
            }
            Err(e) => {
                let f = self.fail(idx, &e, Call::new("new", s, Dir::ToServer));
                self.set_state(s, State::Ended(SessionEnd::Failed(f)));
            }
        }
    }

    /// Re-creates a poisoned instance.
    fn revive(&mut self, idx: usize) {
        if !self.slots[idx].poisoned {
            return;
        }
        // Instantiation of an already-validated component only fails on
        // resource exhaustion; keep the slot poisoned and retry next time.
        let fresh = instantiate_on(
            &self.engine,
            self.load_deadline_ticks,
            &self.slots[idx].plugin,
        );
        let slot = &mut self.slots[idx];
        if let Ok((store, bindings)) = fresh {
            let hw = slot.store.data().limiter.high_water as u64;
            slot.stats.memory_high_water = slot.stats.memory_high_water.max(hw);
            slot.store = store;
            slot.bindings = bindings;
            slot.generation += 1;
            slot.poisoned = false;
        }
    }

    /// Classifies a failed call, poisons the instance, counts, and quarantines
    /// a plugin that keeps failing.
    fn fail(&mut self, idx: usize, e: &wasmtime::Error, call: Call) -> Failure {
        let now = self.now_ns;
        let slot = &mut self.slots[idx];
        let failure = if slot.store.data().limiter.hit {
            Failure::Limit
        } else if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            Failure::Deadline
        } else {
            Failure::Trap
        };
        match failure {
            Failure::Deadline => slot.stats.deadline_hits += 1,
            Failure::Limit => slot.stats.limit_hits += 1,
            Failure::Trap => slot.stats.traps += 1,
        }
        slot.poisoned = true;
        // The guest's backtrace (function names when the component keeps
        // its name section), when wasmtime captured one.
        let backtrace = e
            .downcast_ref::<wasmtime::WasmBacktrace>()
            .map(|b| format!("{b}").replace('\n', " | "))
            .unwrap_or_default();
        tracing::warn!(
            plugin = %slot.plugin.info.name,
            failure = failure.as_str(),
            call = call.name,
            dir = ?call.dir,
            offset = call.offset,
            flow = %call.flow,
            backtrace = %backtrace,
            "plugin call failed; the flow's session ends and the instance is re-created: {}",
            one_line(e)
        );
        if now.saturating_sub(slot.window_start_ns) > FAILURE_WINDOW_NS {
            slot.window_start_ns = now;
            slot.failures = 0;
        }
        slot.failures += 1;
        if slot.failures >= FAILURES_TO_QUARANTINE {
            let backoff = QUARANTINE_BASE_NS
                .saturating_mul(1u64 << slot.quarantine_count.min(20))
                .min(QUARANTINE_MAX_NS);
            slot.quarantined_until_ns = now.saturating_add(backoff);
            slot.quarantine_count += 1;
            slot.stats.quarantines += 1;
            slot.failures = 0;
            slot.window_start_ns = now;
            tracing::error!(
                plugin = %slot.plugin.info.name,
                seconds = backoff as f64 / 1e9,
                "plugin quarantined after {FAILURES_TO_QUARANTINE} failures; meanwhile its flows go to another decoder or none"
            );
        }
        failure
    }

    /// One decoder's `probe` confidence (0 on failure or when it cannot run).
    fn probe_one(&mut self, idx: usize, l4: L4, dir: Dir, data: &[u8]) -> u8 {
        if self.slots[idx].quarantined_until_ns > self.now_ns {
            return 0;
        }
        self.revive(idx);
        let deadline = self.deadline_ticks;
        let now = self.now_ns;
        let slot = &mut self.slots[idx];
        if slot.poisoned {
            return 0;
        }
        arm(slot, deadline, now, 0);
        let sample = &data[..data.len().min(1024)];
        match slot.bindings.wasmtap_decoder_decoder().call_probe(
            &mut slot.store,
            l4_wit(l4),
            dir_wit(dir),
            sample,
        ) {
            Ok(c) => c,
            Err(e) => {
                self.fail(idx, &e, Call::bare("probe"));
                0
            }
        }
    }

    fn choose_by_probe(&mut self, s: &Session, dir: Dir, data: &[u8]) -> Option<usize> {
        let mut best: Option<(usize, u8)> = None;
        for idx in 0..self.slots.len() {
            let ok_l4 = match s.l4 {
                L4::Tcp => self.slots[idx].plugin.info.tcp,
                L4::Udp => self.slots[idx].plugin.info.udp,
            };
            if !ok_l4
                || self.slots[idx].draining
                || self.slots[idx].retired
                || self.slots[idx].quarantined_until_ns > self.now_ns
            {
                continue;
            }
            self.revive(idx);
            let deadline = self.deadline_ticks;
            let now = self.now_ns;
            let slot = &mut self.slots[idx];
            if slot.poisoned {
                continue;
            }
            let sample = &data[..data.len().min(1024)];
            arm(slot, deadline, now, 0);
            match slot.bindings.wasmtap_decoder_decoder().call_probe(
                &mut slot.store,
                l4_wit(s.l4),
                dir_wit(dir),
                sample,
            ) {
                Ok(c) if c >= self.host_config.probe_threshold => {
                    if best.is_none_or(|(_, b)| c > b) {
                        best = Some((idx, c));
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    self.fail(idx, &e, Call::bare("probe"));
                }
            }
        }
        best.map(|(i, _)| i)
    }

    /// Makes sure the session lives on its slot's current instance: a session
    /// whose instance was re-created (another flow's failure) gets a fresh
    /// session that resynchronises like a mid-stream start. Returns the slot
    /// and resource to call, or `None` if the session has ended.
    fn ready(&mut self, s: &mut Session) -> Option<(usize, ResourceAny)> {
        let State::Active {
            slot: idx,
            generation,
            resource,
        } = s.state
        else {
            return None;
        };
        if self.slots[idx].generation == generation && !self.slots[idx].poisoned {
            return Some((idx, resource));
        }
        s.pending = [Vec::new(), Vec::new()];
        self.start(s, idx, true);
        match s.state {
            State::Active { slot, resource, .. } => Some((slot, resource)),
            _ => None,
        }
    }

    /// Offers the next bytes of `dir` (for UDP: one datagram) and appends completed messages.
    pub fn data(
        &mut self,
        s: &mut Session,
        dir: Dir,
        ts_ns: u64,
        data: &[u8],
        out: &mut Vec<Message>,
    ) {
        if data.is_empty() {
            return;
        }
        let mut dir = if s.swapped { dir.flip() } else { dir };
        self.now_ns = self.now_ns.max(ts_ns);
        s.widen(ts_ns);
        if let State::ByPort(idx) = s.state {
            // A port is a hint, not a contract (PostgreSQL on 8000, TLS on 80):
            // if the port's decoder says the bytes are not its protocol and
            // another decoder claims them, the other one takes the flow.
            let chosen = if self.probe_one(idx, s.l4, dir, data) >= self.host_config.probe_threshold
            {
                idx
            } else {
                self.choose_by_probe(s, dir, data).unwrap_or(idx)
            };
            self.start(s, chosen, false);
        }
        if matches!(s.state, State::Undecided) {
            let d = dir as usize;
            // Bytes held back while no decoder recognised them are probed
            // again with the new ones (bounded by `probe_window_bytes`).
            let held = s.pending.get(d).is_some_and(|p| !p.is_empty());
            let joined: Vec<u8>;
            let probe_bytes: &[u8] = if held {
                joined = [s.pending[d].as_slice(), data].concat();
                &joined
            } else {
                data
            };
            let mut found = self.choose_by_probe(s, dir, probe_bytes);
            if found.is_none() && s.roles_guessed && s.l4 == L4::Tcp {
                // Roles guessed from ports may be backwards: a decoder that
                // recognises these bytes as the other direction's says so.
                found = self.choose_by_probe(s, dir.flip(), probe_bytes);
                if found.is_some() {
                    s.swapped = true;
                    s.pending.swap(0, 1);
                    dir = dir.flip();
                    self.roles_swapped += 1;
                }
            }
            match found {
                Some(idx) => self.start(s, idx, false),
                None if s.l4 == L4::Tcp
                    && probe_bytes.len() < self.host_config.probe_window_bytes =>
                {
                    if let Some(p) = s.pending.get_mut(d) {
                        p.extend_from_slice(data);
                    }
                    return;
                }
                None => {
                    self.no_decoder += 1;
                    if let Some(p) = s.pending.get_mut(d) {
                        p.clear();
                    }
                    self.set_state(s, State::Ended(SessionEnd::NoDecoder));
                }
            }
        }
        let Some((idx, resource)) = self.ready(s) else {
            return;
        };
        let d = dir as usize;
        let udp = s.l4 == L4::Udp;
        let deadline = self.deadline_ticks;
        let now = self.now_ns;
        let slot = &mut self.slots[idx];
        arm(slot, deadline, now, s.rng);
        let session = slot.bindings.wasmtap_decoder_decoder().session();
        let offered: &[u8] = if s.pending[d].is_empty() || udp {
            data
        } else {
            s.pending[d].extend_from_slice(data);
            &s.pending[d]
        };
        slot.stats.calls += 1;
        slot.stats.bytes_in += offered.len() as u64;
        s.offset[d] = s.offset[d].saturating_add(data.len() as u64);
        let res = timed(&mut slot.stats, || {
            session.call_feed(&mut slot.store, resource, dir_wit(dir), ts_ns, offered)
        });
        s.rng = slot.store.data().det.rng();
        match res {
            Ok(Ok(fr)) if fr.consumed as usize > offered.len() => {
                // Not clamped: a decoder that believes it read bytes it was
                // never given is lost, and so would be its messages.
                self.slots[idx].stats.contract_violations += 1;
                let plugin = &self.slots[idx].plugin.info.name;
                tracing::debug!(
                    plugin = %plugin,
                    consumed = fr.consumed,
                    offered = offered.len(),
                    "decoder consumed more than it was offered; session ended"
                );
                self.end(s, SessionEnd::ContractViolation);
                s.pending = [Vec::new(), Vec::new()];
            }
            Ok(Ok(fr)) => {
                let consumed = fr.consumed as usize;
                let window = s.window;
                self.accept(idx, fr.messages, window, out);
                if udp {
                    return;
                }
                if s.pending[d].is_empty() {
                    s.pending[d].extend_from_slice(&data[consumed..]);
                } else {
                    s.pending[d].drain(..consumed);
                }
                if s.pending[d].len() > self.host_config.max_pending_bytes {
                    self.slots[idx].stats.pending_overflows += 1;
                    self.end(s, SessionEnd::PendingOverflow);
                }
            }
            Ok(Err(e)) => {
                self.slots[idx].stats.decode_errors += 1;
                self.report_decode_error(idx, s, "feed", dir, &e);
                self.end(s, SessionEnd::DecodeError(e.reason));
            }
            Err(e) => {
                let f = self.fail(idx, &e, Call::new("feed", s, dir));
                self.set_state(s, State::Ended(SessionEnd::Failed(f)));
                s.pending = [Vec::new(), Vec::new()];
            }
        }
    }

    /// A decoder's own error: logged at warn once per decoder and reason
    /// (the first flow and offset named), at debug afterwards; always counted.
    fn report_decode_error(
        &mut self,
        idx: usize,
        s: &Session,
        call: &str,
        dir: Dir,
        e: &wit::DecodeError,
    ) {
        let plugin = self.slots[idx].plugin.info.name.clone();
        let first = self.warned.len() < MAX_WARNED
            && self.warned.insert((plugin.clone(), e.reason.clone()));
        if first {
            tracing::warn!(
                plugin = %plugin,
                reason = %e.reason,
                call,
                dir = ?dir,
                offset = e.offset,
                flow = %s.flow_text(),
                "decoder ended a session (logged once per decoder and reason; counted in decode_errors)"
            );
        } else {
            tracing::debug!(plugin = %plugin, reason = %e.reason, offset = e.offset, flow = %s.flow_text(), "decoder ended session");
        }
    }

    /// Reports `len` bytes of `dir` that were never captured.
    pub fn gap(&mut self, s: &mut Session, dir: Dir, len: u64, out: &mut Vec<Message>) {
        let dir = if s.swapped { dir.flip() } else { dir };
        if matches!(s.state, State::Undecided) {
            // Bytes held for probing cannot continue across a hole.
            if let Some(p) = s.pending.get_mut(dir as usize) {
                p.clear();
            }
            return;
        }
        let Some((idx, resource)) = self.ready(s) else {
            return;
        };
        // Bytes held back are incomplete and now can never complete in order.
        s.pending[dir as usize].clear();
        let deadline = self.deadline_ticks;
        let now = self.now_ns;
        let slot = &mut self.slots[idx];
        slot.stats.calls += 1;
        arm(slot, deadline, now, s.rng);
        let session = slot.bindings.wasmtap_decoder_decoder().session();
        let res = timed(&mut slot.stats, || {
            session.call_gap(&mut slot.store, resource, dir_wit(dir), len)
        });
        s.rng = slot.store.data().det.rng();
        match res {
            Ok(Ok(fr)) => {
                let window = s.window;
                self.accept(idx, fr.messages, window, out);
            }
            Ok(Err(e)) => {
                self.slots[idx].stats.decode_errors += 1;
                self.report_decode_error(idx, s, "gap", dir, &e);
                self.end(s, SessionEnd::DecodeError(e.reason));
            }
            Err(e) => {
                let f = self.fail(idx, &e, Call::new("gap", s, dir));
                self.set_state(s, State::Ended(SessionEnd::Failed(f)));
            }
        }
    }

    /// Ends the session at the flow's end; appends messages the end completes.
    pub fn close(
        &mut self,
        s: &mut Session,
        reason: FlowClose,
        ts_ns: u64,
        out: &mut Vec<Message>,
    ) {
        self.now_ns = self.now_ns.max(ts_ns);
        s.widen(ts_ns);
        if matches!(s.state, State::Undecided) && s.pending.iter().any(|p| !p.is_empty()) {
            // Bytes were held for probing and no decoder ever recognised them.
            self.no_decoder += 1;
            s.pending = [Vec::new(), Vec::new()];
            self.set_state(s, State::Ended(SessionEnd::NoDecoder));
            return;
        }
        // A session whose instance was re-created has nothing to close.
        let State::Active {
            slot: idx,
            generation,
            resource,
        } = s.state
        else {
            return;
        };
        if self.slots[idx].generation != generation || self.slots[idx].poisoned {
            self.set_state(s, State::Ended(SessionEnd::Closed));
            s.pending = [Vec::new(), Vec::new()];
            return;
        }
        let deadline = self.deadline_ticks;
        let now = self.now_ns;
        let slot = &mut self.slots[idx];
        slot.stats.calls += 1;
        arm(slot, deadline, now, s.rng);
        let session = slot.bindings.wasmtap_decoder_decoder().session();
        let res = timed(&mut slot.stats, || {
            session.call_close(&mut slot.store, resource, reason.to_wit(), ts_ns)
        });
        s.rng = slot.store.data().det.rng();
        match res {
            Ok(msgs) => {
                let window = s.window;
                self.accept(idx, msgs, window, out);
                self.drop_resource(idx, resource);
                self.set_state(s, State::Ended(SessionEnd::Closed));
            }
            Err(e) => {
                let f = self.fail(idx, &e, Call::new("close", s, Dir::ToServer));
                self.set_state(s, State::Ended(SessionEnd::Failed(f)));
            }
        }
        s.pending = [Vec::new(), Vec::new()];
    }

    fn accept(
        &mut self,
        idx: usize,
        msgs: Vec<wit::Message>,
        window: Option<(u64, u64)>,
        out: &mut Vec<Message>,
    ) {
        let slot = &mut self.slots[idx];
        let keys = &slot.plugin.info.attribute_keys;
        let c = convert_messages(msgs, &self.caps, keys, window.unwrap_or((0, u64::MAX)), out);
        slot.stats.messages += c.accepted;
        slot.stats.capped += c.capped;
        slot.stats.sanitized += c.sanitized;
        slot.stats.clamped_timestamps += c.clamped;
    }

    fn end(&mut self, s: &mut Session, why: SessionEnd) {
        if let State::Active {
            slot,
            generation,
            resource,
        } = s.state
            && self.slots[slot].generation == generation
            && !self.slots[slot].poisoned
        {
            self.drop_resource(slot, resource);
        }
        self.set_state(s, State::Ended(why));
        s.pending = [Vec::new(), Vec::new()];
    }

    fn drop_resource(&mut self, idx: usize, resource: ResourceAny) {
        let deadline = self.deadline_ticks;
        let now = self.now_ns;
        let slot = &mut self.slots[idx];
        arm(slot, deadline, now, 0);
        if let Err(e) = resource.resource_drop(&mut slot.store) {
            self.fail(idx, &e, Call::bare("drop"));
        }
    }
}

/// Why a flow ended, as told to its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlowClose {
    /// FIN both ways.
    Fin,
    /// RST.
    Reset,
    /// Idle timeout.
    IdleTimeout,
    /// End of capture.
    EndOfCapture,
    /// Evicted to respect a bound.
    Evicted,
}

impl FlowClose {
    fn to_wit(self) -> wit::CloseReason {
        match self {
            FlowClose::Fin => wit::CloseReason::Fin,
            FlowClose::Reset => wit::CloseReason::Reset,
            FlowClose::IdleTimeout => wit::CloseReason::IdleTimeout,
            FlowClose::EndOfCapture => wit::CloseReason::EndOfCapture,
            FlowClose::Evicted => wit::CloseReason::Evicted,
        }
    }
}

fn instantiate_on(
    engine: &wasmtime::Engine,
    load_deadline: Option<u64>,
    p: &Plugin,
) -> Result<(Store<StoreState>, PluginBindings), crate::RuntimeError> {
    let mut store = new_store(
        engine,
        p.max_memory_bytes,
        Arc::from(p.info.name.as_str()),
        p.config_json.clone(),
    );
    if let Some(t) = load_deadline {
        store.set_epoch_deadline(t);
    }
    let bindings = p
        .pre
        .instantiate(&mut store)
        .map_err(|e| crate::RuntimeError::Describe {
            name: p.info.name.clone(),
            reason: format!("instantiate: {e:#}"),
        })?;
    Ok((store, bindings))
}

/// One call in this many is timed for `wasmtap.agent.plugin.time_ns` (its
/// time counted this many times): a clock read costs about as much as a
/// small call, and the call deadline needs none (epochs enforce it).
const TIME_ONE_CALL_IN: u64 = 64;

/// Runs one plugin call (counted in `stats.calls` already), timing it when
/// it is the sampled one.
fn timed<R>(stats: &mut PluginStats, call: impl FnOnce() -> R) -> R {
    if stats.calls % TIME_ONE_CALL_IN != 1 {
        return call();
    }
    // The packet path's one clock read: a cost estimate, never a timestamp.
    #[allow(clippy::disallowed_methods)]
    let t0 = std::time::Instant::now();
    let r = call();
    stats.nanos += (t0.elapsed().as_nanos() as u64).saturating_mul(TIME_ONE_CALL_IN);
    r
}
