//! A shard's plugin instances and its flows' sessions. Single-threaded.
//!
//! - [`store`]: an instance's store (WASI granting nothing, limits, log, clocks).
//! - [`session`]: the per-flow [`Session`] and how sessions end.
//! - this file: the slots (one instance per plugin) and their life cycle
//!   across hot reloads (a slot drains, then retires).
//! - [`dispatch`]: which decoder takes a flow, by port and probe.
//! - [`calls`]: the plugin calls and their bookkeeping.
//! - [`quarantine`]: failing decoders set aside.

mod calls;
mod dispatch;
mod quarantine;
mod session;
mod store;

use std::sync::Arc;

use wasmtime::Store;

use crate::bindings::Plugin as PluginBindings;
use crate::convert::Caps;
use crate::plugin::{Plugin, PluginHost, RuntimeConfig};

use calls::{Call, arm, dir_wit, l4_wit, one_line};
use session::State;
pub use session::{Failure, Session, SessionEnd};
pub(crate) use store::{StoreState, new_store};
/// The flow vocabulary is the flow table's: one definition for the packet path.
pub use wasmtap_flow::{CloseReason, Direction, L4};

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
