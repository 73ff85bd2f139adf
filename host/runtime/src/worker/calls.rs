//! The plugin calls (`feed`, `gap`, `close`) with their per-call
//! bookkeeping: the deadline and deterministic inputs armed before, the
//! stats, the output checked and converted after, failures classified.

use wasmtime::component::ResourceAny;

use crate::bindings::wasmtap::decoder::types as wit;
use crate::convert::convert_messages;
use wasmtap_telemetry::exchange::Message;

use super::*;

pub(super) fn close_wit(r: CloseReason) -> wit::CloseReason {
    match r {
        CloseReason::Fin => wit::CloseReason::Fin,
        CloseReason::Reset => wit::CloseReason::Reset,
        CloseReason::IdleTimeout => wit::CloseReason::IdleTimeout,
        CloseReason::EndOfCapture => wit::CloseReason::EndOfCapture,
        CloseReason::Evicted => wit::CloseReason::Evicted,
    }
}

pub(super) fn dir_wit(d: Direction) -> wit::Direction {
    match d {
        Direction::ToServer => wit::Direction::ToServer,
        Direction::ToClient => wit::Direction::ToClient,
    }
}

pub(super) fn l4_wit(l: L4) -> wit::Transport {
    match l {
        L4::Tcp => wit::Transport::Tcp,
        L4::Udp => wit::Transport::Udp,
    }
}

/// The cause of a failed call on one line (wasm backtraces stay out of the log).
/// Where a failing call was: for the log.
pub(super) struct Call {
    pub(super) name: &'static str,
    pub(super) dir: Option<Direction>,
    pub(super) offset: u64,
    pub(super) flow: String,
}

impl Call {
    pub(super) fn new(name: &'static str, s: &Session, dir: Direction) -> Self {
        Self {
            name,
            dir: (name != "close").then_some(dir),
            offset: s.offset[dir as usize],
            flow: s.flow_text(),
        }
    }

    /// A call outside a flow's stream (probe, resource drop).
    pub(super) fn bare(name: &'static str) -> Self {
        Self {
            name,
            dir: None,
            offset: 0,
            flow: String::new(),
        }
    }
}

/// (decoder, reason) pairs logged at warn at most (then debug only).
pub(super) const MAX_WARNED: usize = 256;

pub(super) fn one_line(e: &wasmtime::Error) -> String {
    if let Some(t) = e.downcast_ref::<wasmtime::Trap>() {
        return t.to_string();
    }
    let root = e.root_cause().to_string();
    root.lines().next().unwrap_or_default().to_string()
}

/// Prepares a store for one call: the CPU deadline (the plugin's own, else the worker's).
/// Before a call: the CPU deadline, and what the decoder's clocks and
/// random source read (capture time `now_ns`, the flow's generator `rng`).
pub(super) fn arm(slot: &mut Slot, deadline: Option<u64>, now_ns: u64, rng: u64) {
    if let Some(t) = slot.plugin.deadline_ticks.or(deadline) {
        slot.store.set_epoch_deadline(t);
    }
    slot.store.data().det.enter(now_ns, rng);
}

type GuestSession<'a> = crate::bindings::exports::wasmtap::decoder::decoder::GuestSession<'a>;

impl Worker {
    /// One `feed`, `gap` or `close` call into slot `idx`'s decoder for a
    /// flow: armed (the CPU deadline, the capture time and the flow's
    /// generator `rng` its WASI reads), counted, timed one call in
    /// [`TIME_ONE_CALL_IN`], and the generator's new state kept for the flow.
    fn session_call<R>(
        &mut self,
        idx: usize,
        rng: &mut u64,
        call: impl FnOnce(GuestSession<'_>, &mut Store<StoreState>) -> R,
    ) -> R {
        let (deadline, now) = (self.deadline_ticks, self.now_ns);
        let slot = &mut self.slots[idx];
        arm(slot, deadline, now, *rng);
        slot.stats.calls += 1;
        let session = slot.bindings.wasmtap_decoder_decoder().session();
        let r = timed(&mut slot.stats, || call(session, &mut slot.store));
        *rng = slot.store.data().det.rng();
        r
    }

    /// Offers the next bytes of `dir` (for UDP: one datagram) and appends completed messages.
    pub fn data(
        &mut self,
        s: &mut Session,
        dir: Direction,
        ts_ns: u64,
        data: &[u8],
        out: &mut Vec<Message>,
    ) {
        if data.is_empty() {
            return;
        }
        let mut dir = if s.swapped { dir.reverse() } else { dir };
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
                found = self.choose_by_probe(s, dir.reverse(), probe_bytes);
                if found.is_some() {
                    s.swapped = true;
                    s.pending.swap(0, 1);
                    dir = dir.reverse();
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
        let offered: &[u8] = if s.pending[d].is_empty() || udp {
            data
        } else {
            s.pending[d].extend_from_slice(data);
            &s.pending[d]
        };
        self.slots[idx].stats.bytes_in += offered.len() as u64;
        s.offset[d] = s.offset[d].saturating_add(data.len() as u64);
        let res = self.session_call(idx, &mut s.rng, |session, store| {
            session.call_feed(store, resource, dir_wit(dir), ts_ns, offered)
        });
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
    pub(super) fn report_decode_error(
        &mut self,
        idx: usize,
        s: &Session,
        call: &str,
        dir: Direction,
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
    pub fn gap(&mut self, s: &mut Session, dir: Direction, len: u64, out: &mut Vec<Message>) {
        let dir = if s.swapped { dir.reverse() } else { dir };
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
        let res = self.session_call(idx, &mut s.rng, |session, store| {
            session.call_gap(store, resource, dir_wit(dir), len)
        });
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
        reason: CloseReason,
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
        let res = self.session_call(idx, &mut s.rng, |session, store| {
            session.call_close(store, resource, close_wit(reason), ts_ns)
        });
        match res {
            Ok(msgs) => {
                let window = s.window;
                self.accept(idx, msgs, window, out);
                self.drop_resource(idx, resource);
                self.set_state(s, State::Ended(SessionEnd::Closed));
            }
            Err(e) => {
                let f = self.fail(idx, &e, Call::new("close", s, Direction::ToServer));
                self.set_state(s, State::Ended(SessionEnd::Failed(f)));
            }
        }
        s.pending = [Vec::new(), Vec::new()];
    }

    pub(super) fn accept(
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

    pub(super) fn end(&mut self, s: &mut Session, why: SessionEnd) {
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

    pub(super) fn drop_resource(&mut self, idx: usize, resource: ResourceAny) {
        let deadline = self.deadline_ticks;
        let now = self.now_ns;
        let slot = &mut self.slots[idx];
        arm(slot, deadline, now, 0);
        if let Err(e) = resource.resource_drop(&mut slot.store) {
            self.fail(idx, &e, Call::bare("drop"));
        }
    }
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
