//! Dispatch, the fourth stage of the packet path: which decoder takes a
//! flow (by server port, confirmed or overruled by the first bytes' probes),
//! and a session's start on its slot.

use wasmtime::component::ResourceAny;

use super::*;

impl Worker {
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

    pub(super) fn start(&mut self, s: &mut Session, idx: usize, restart: bool) {
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
                let f = self.fail(idx, &e, Call::new("new", s, Direction::ToServer));
                self.set_state(s, State::Ended(SessionEnd::Failed(f)));
            }
        }
    }

    /// One decoder's `probe` confidence (0 on failure or when it cannot run).
    pub(super) fn probe_one(&mut self, idx: usize, l4: L4, dir: Direction, data: &[u8]) -> u8 {
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

    pub(super) fn choose_by_probe(
        &mut self,
        s: &Session,
        dir: Direction,
        data: &[u8],
    ) -> Option<usize> {
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
    pub(super) fn ready(&mut self, s: &mut Session) -> Option<(usize, ResourceAny)> {
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
}
