//! Per-shard plugin instances and per-flow sessions.

use std::sync::Arc;

use wasmtime::component::{ResourceAny, ResourceTable};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::Plugin as PluginBindings;
use crate::bindings::wasmtap::decoder::host::Level;
use crate::bindings::wasmtap::decoder::types as wit;
use crate::convert::{Caps, convert_messages};
use crate::plugin::{Plugin, PluginHost, RuntimeConfig};
use wasmtap_telemetry::exchange::Message;

/// What a store carries: WASI with nothing granted, limits, and the plugin's identity.
pub(crate) struct StoreState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    memory_limit: usize,
    plugin: Arc<str>,
    config: Arc<str>,
    logs_this_window: u32,
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

/// Records a plugin may log before further records are dropped (per instance).
const MAX_LOGS_PER_INSTANCE: u32 = 1000;

impl crate::bindings::wasmtap::decoder::host::Host for StoreState {
    fn log(&mut self, level: Level, message: String) {
        if self.logs_this_window >= MAX_LOGS_PER_INSTANCE {
            return;
        }
        self.logs_this_window += 1;
        let msg: String = message.chars().take(1024).collect();
        let plugin = &*self.plugin;
        match level {
            Level::Trace => tracing::trace!(plugin, "{msg}"),
            Level::Debug => tracing::debug!(plugin, "{msg}"),
            Level::Info => tracing::info!(plugin, "{msg}"),
            Level::Warn => tracing::warn!(plugin, "{msg}"),
            Level::Error => tracing::error!(plugin, "{msg}"),
        }
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
    let mut wasi = WasiCtx::builder();
    wasi.allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    let limits = StoreLimitsBuilder::new()
        .memory_size(memory_limit)
        .instances(4)
        .tables(16)
        .memories(4)
        .trap_on_grow_failure(true)
        .build();
    let state = StoreState {
        wasi: wasi.build(),
        table: ResourceTable::new(),
        limits,
        memory_limit,
        plugin,
        config,
        logs_this_window: 0,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limits);
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
    /// The decoder trapped (crash, limit).
    Trap,
    /// The decoder left more unconsumed bytes than the bound.
    PendingOverflow,
    /// The instance the session lived in was re-created after another flow's trap.
    InstanceLost,
    /// The flow ended and the session was closed normally.
    Closed,
}

impl SessionEnd {
    /// A stable, low-cardinality name for counters.
    pub fn as_str(&self) -> &'static str {
        match self {
            SessionEnd::NoDecoder => "no_decoder",
            SessionEnd::DecodeError(_) => "decode_error",
            SessionEnd::Trap => "trap",
            SessionEnd::PendingOverflow => "pending_overflow",
            SessionEnd::InstanceLost => "instance_lost",
            SessionEnd::Closed => "closed",
        }
    }
}

enum State {
    Undecided,
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
}

impl Session {
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

/// Counters of one worker (summed over its plugins).
#[derive(Debug, Clone, Default)]
pub struct WorkerStats {
    /// Sessions created.
    pub sessions: u64,
    /// Flows no decoder claimed.
    pub no_decoder: u64,
    /// `feed`/`gap` calls.
    pub calls: u64,
    /// Bytes offered to plugins (re-offered bytes count again).
    pub bytes_in: u64,
    /// Messages accepted.
    pub messages: u64,
    /// Sessions ended by decode errors.
    pub decode_errors: u64,
    /// Traps (crashes, memory limit).
    pub traps: u64,
    /// Sessions ended because their pending bytes passed the bound.
    pub pending_overflows: u64,
    /// Sessions lost because their instance was re-created.
    pub instance_lost: u64,
    /// Messages, attributes or values dropped or cut by caps.
    pub capped: u64,
}

struct Slot {
    plugin: Arc<Plugin>,
    store: Store<StoreState>,
    bindings: PluginBindings,
    generation: u64,
    poisoned: bool,
}

/// A shard's instances of every plugin; drives sessions. Single-threaded.
pub struct Worker {
    slots: Vec<Slot>,
    host_config: RuntimeConfig,
    caps: Caps,
    stats: WorkerStats,
    protocols: Vec<Arc<str>>,
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

impl Worker {
    /// Instantiates every plugin in a store of this worker's own.
    pub fn new(host: &PluginHost, plugins: &[Arc<Plugin>]) -> Result<Self, crate::RuntimeError> {
        let mut slots = Vec::with_capacity(plugins.len());
        let mut protocols = Vec::new();
        for p in plugins {
            let (store, bindings) = instantiate(host, p)?;
            protocols.push(Arc::from(p.info.protocol()));
            slots.push(Slot {
                plugin: p.clone(),
                store,
                bindings,
                generation: 0,
                poisoned: false,
            });
        }
        Ok(Self {
            slots,
            host_config: host.config.clone(),
            caps: Caps::from(&host.config),
            stats: WorkerStats::default(),
            protocols,
        })
    }

    /// Server ports the loaded decoders claim (hints for role guessing).
    pub fn server_ports(&self) -> Vec<u16> {
        let mut v: Vec<u16> = self
            .slots
            .iter()
            .flat_map(|s| s.plugin.info.ports.iter().copied())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Counters.
    pub fn stats(&self) -> &WorkerStats {
        &self.stats
    }

    /// A new session for a flow; the decoder is chosen by port now, or by probe on first data.
    pub fn open(&mut self, l4: L4, server_port: u16) -> Session {
        let mut s = Session {
            l4,
            server_port,
            state: State::Undecided,
            pending: [Vec::new(), Vec::new()],
            protocol: None,
        };
        let by_port = self.slots.iter().position(|slot| {
            let i = &slot.plugin.info;
            (match l4 {
                L4::Tcp => i.tcp,
                L4::Udp => i.udp,
            }) && i.ports.contains(&server_port)
        });
        if let Some(idx) = by_port {
            self.start(&mut s, idx);
        }
        s
    }

    fn start(&mut self, s: &mut Session, idx: usize) {
        self.revive(idx);
        let slot = &mut self.slots[idx];
        let res = slot
            .bindings
            .wasmtap_decoder_decoder()
            .session()
            .call_constructor(&mut slot.store, l4_wit(s.l4), s.server_port);
        s.protocol = Some(self.protocols[idx].clone());
        match res {
            Ok(resource) => {
                self.stats.sessions += 1;
                s.state = State::Active {
                    slot: idx,
                    generation: slot.generation,
                    resource,
                };
            }
            Err(e) => {
                self.trap(idx, &e);
                s.state = State::Ended(SessionEnd::Trap);
            }
        }
    }

    /// Re-creates a poisoned instance.
    fn revive(&mut self, idx: usize) {
        let slot = &mut self.slots[idx];
        if !slot.poisoned {
            return;
        }
        // Instantiation of an already-validated component only fails on
        // resource exhaustion; keep the slot poisoned and retry next time.
        if let Some((store, bindings)) = reinstantiate(&slot.plugin, &slot.store) {
            slot.store = store;
            slot.bindings = bindings;
            slot.generation += 1;
            slot.poisoned = false;
        }
    }

    fn trap(&mut self, idx: usize, e: &wasmtime::Error) {
        self.stats.traps += 1;
        let slot = &mut self.slots[idx];
        slot.poisoned = true;
        tracing::warn!(plugin = %slot.plugin.info.name, "plugin trapped; instance will be re-created: {e:#}");
    }

    fn choose_by_probe(&mut self, s: &Session, dir: Dir, data: &[u8]) -> Option<usize> {
        let mut best: Option<(usize, u8)> = None;
        for idx in 0..self.slots.len() {
            let ok_l4 = match s.l4 {
                L4::Tcp => self.slots[idx].plugin.info.tcp,
                L4::Udp => self.slots[idx].plugin.info.udp,
            };
            if !ok_l4 {
                continue;
            }
            self.revive(idx);
            let slot = &mut self.slots[idx];
            if slot.poisoned {
                continue;
            }
            let sample = &data[..data.len().min(1024)];
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
                Err(e) => self.trap(idx, &e),
            }
        }
        best.map(|(i, _)| i)
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
        if matches!(s.state, State::Undecided) {
            match self.choose_by_probe(s, dir, data) {
                Some(idx) => self.start(s, idx),
                None => {
                    self.stats.no_decoder += 1;
                    s.state = State::Ended(SessionEnd::NoDecoder);
                }
            }
        }
        let State::Active {
            slot: idx,
            generation,
            resource,
        } = s.state
        else {
            return;
        };
        if self.slots[idx].generation != generation || self.slots[idx].poisoned {
            self.lose(s);
            return;
        }
        let d = dir as usize;
        let udp = s.l4 == L4::Udp;
        let slot = &mut self.slots[idx];
        let session = slot.bindings.wasmtap_decoder_decoder().session();
        let offered: &[u8] = if s.pending[d].is_empty() || udp {
            data
        } else {
            s.pending[d].extend_from_slice(data);
            &s.pending[d]
        };
        self.stats.calls += 1;
        self.stats.bytes_in += offered.len() as u64;
        let res = session.call_feed(&mut slot.store, resource, dir_wit(dir), ts_ns, offered);
        match res {
            Ok(Ok(fr)) => {
                let consumed = (fr.consumed as usize).min(offered.len());
                let offered_len = offered.len();
                self.accept(idx, fr.messages, out);
                if udp {
                    return;
                }
                if s.pending[d].is_empty() {
                    s.pending[d].extend_from_slice(&data[consumed..]);
                } else {
                    s.pending[d].drain(..consumed);
                }
                let _ = offered_len;
                if s.pending[d].len() > self.host_config.max_pending_bytes {
                    self.stats.pending_overflows += 1;
                    self.end(s, SessionEnd::PendingOverflow);
                }
            }
            Ok(Err(e)) => {
                self.stats.decode_errors += 1;
                tracing::debug!(reason = %e.reason, offset = e.offset, "decoder ended session");
                self.end(s, SessionEnd::DecodeError(e.reason));
            }
            Err(e) => {
                self.trap(idx, &e);
                s.state = State::Ended(SessionEnd::Trap);
                s.pending = [Vec::new(), Vec::new()];
            }
        }
    }

    /// Reports `len` bytes of `dir` that were never captured.
    pub fn gap(&mut self, s: &mut Session, dir: Dir, len: u64, out: &mut Vec<Message>) {
        let State::Active {
            slot: idx,
            generation,
            resource,
        } = s.state
        else {
            return;
        };
        if self.slots[idx].generation != generation || self.slots[idx].poisoned {
            self.lose(s);
            return;
        }
        // Bytes held back are incomplete and now can never complete in order.
        s.pending[dir as usize].clear();
        let slot = &mut self.slots[idx];
        self.stats.calls += 1;
        let res = slot.bindings.wasmtap_decoder_decoder().session().call_gap(
            &mut slot.store,
            resource,
            dir_wit(dir),
            len,
        );
        match res {
            Ok(Ok(fr)) => self.accept(idx, fr.messages, out),
            Ok(Err(e)) => {
                self.stats.decode_errors += 1;
                self.end(s, SessionEnd::DecodeError(e.reason));
            }
            Err(e) => {
                self.trap(idx, &e);
                s.state = State::Ended(SessionEnd::Trap);
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
        let State::Active {
            slot: idx,
            generation,
            resource,
        } = s.state
        else {
            return;
        };
        if self.slots[idx].generation != generation || self.slots[idx].poisoned {
            self.lose(s);
            return;
        }
        let slot = &mut self.slots[idx];
        let res = slot
            .bindings
            .wasmtap_decoder_decoder()
            .session()
            .call_close(&mut slot.store, resource, reason.to_wit(), ts_ns);
        match res {
            Ok(msgs) => {
                self.accept(idx, msgs, out);
                self.drop_resource(idx, resource);
            }
            Err(e) => self.trap(idx, &e),
        }
        s.state = State::Ended(SessionEnd::Closed);
        s.pending = [Vec::new(), Vec::new()];
    }

    fn accept(&mut self, idx: usize, msgs: Vec<wit::Message>, out: &mut Vec<Message>) {
        let keys = &self.slots[idx].plugin.info.attribute_keys;
        let (n, capped) = convert_messages(msgs, &self.caps, keys, out);
        self.stats.messages += n;
        self.stats.capped += capped;
    }

    fn lose(&mut self, s: &mut Session) {
        self.stats.instance_lost += 1;
        s.state = State::Ended(SessionEnd::InstanceLost);
        s.pending = [Vec::new(), Vec::new()];
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
        s.state = State::Ended(why);
        s.pending = [Vec::new(), Vec::new()];
    }

    fn drop_resource(&mut self, idx: usize, resource: ResourceAny) {
        let slot = &mut self.slots[idx];
        if let Err(e) = resource.resource_drop(&mut slot.store) {
            self.trap(idx, &e);
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

fn instantiate(
    host: &PluginHost,
    p: &Plugin,
) -> Result<(Store<StoreState>, PluginBindings), crate::RuntimeError> {
    let mut store = new_store(
        &host.engine,
        host.config.max_memory_bytes,
        Arc::from(p.info.name.as_str()),
        p.config_json.clone(),
    );
    let bindings = p
        .pre
        .instantiate(&mut store)
        .map_err(|e| crate::RuntimeError::Describe {
            name: p.info.name.clone(),
            reason: format!("instantiate: {e:#}"),
        })?;
    Ok((store, bindings))
}

fn reinstantiate(
    p: &Plugin,
    old: &Store<StoreState>,
) -> Option<(Store<StoreState>, PluginBindings)> {
    let mut store = new_store(
        old.engine(),
        old.data().memory_limit,
        old.data().plugin.clone(),
        p.config_json.clone(),
    );
    let bindings = p.pre.instantiate(&mut store).ok()?;
    Some((store, bindings))
}
