//! Quarantine: a decoder failing again and again is set aside for a while
//! (doubling, as Envoy does a crash loop), and its instance re-created.

use super::*;

/// Failures within this window (capture time) count towards quarantine.
pub(super) const FAILURE_WINDOW_NS: u64 = 10_000_000_000;
/// Failures within the window that quarantine a plugin.
pub(super) const FAILURES_TO_QUARANTINE: u32 = 5;
/// First quarantine lasts this long; each next one twice as long (Envoy's crash-loop policy).
pub(super) const QUARANTINE_BASE_NS: u64 = 1_000_000_000;
/// Longest quarantine.
pub(super) const QUARANTINE_MAX_NS: u64 = 300_000_000_000;

impl Worker {
    /// Classifies a failed call, poisons the instance, counts, and quarantines
    /// a plugin that keeps failing.
    pub(super) fn fail(&mut self, idx: usize, e: &wasmtime::Error, call: Call) -> Failure {
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

    /// Re-creates a poisoned instance.
    pub(super) fn revive(&mut self, idx: usize) {
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

    /// Whether a plugin is quarantined at the latest capture time seen.
    pub fn is_quarantined(&self, name: &str) -> bool {
        self.slots
            .iter()
            .any(|s| s.plugin.info.name == name && s.quarantined_until_ns > self.now_ns)
    }
}
