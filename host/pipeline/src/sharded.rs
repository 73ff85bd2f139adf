//! Several shards, each on a thread of its own, behind one reader and one
//! telemetry stage.
//!
//! The reader (the caller's thread) decodes frames (defragmentation and
//! tunnels keep their state in one place), hashes each packet's flow by its
//! symmetric 5-tuple to a shard, and hands packets over in batches. A shard
//! owns its flow table, reassembly, decoder instances and matching, and
//! sends back [`Report`]s; the reader applies them to the one [`Telemetry`],
//! so metrics, indicators and the service graph stay whole, and spans get
//! the same ids as with one shard (they derive from the flow, not from the
//! order things happened). Channels are bounded both ways; the reader keeps
//! draining reports while it waits for a shard, so neither side can block
//! the other for good.

use std::net::IpAddr;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;

use wasmtap_decode::{LinkType, Packet, Transport};
use wasmtap_telemetry::model::SpanRecord;

use crate::{Deferred, Report, Shard, SpanSink};

/// Bounds of the hand-over between the reader and the shards.
#[derive(Debug, Clone, Copy)]
pub struct ShardedConfig {
    /// Packets per batch handed to a shard.
    pub batch_packets: usize,
    /// Batches queued per shard before the reader waits.
    pub queue_batches: usize,
    /// Spans per batch handed to the sink.
    pub batch_spans: usize,
}

impl Default for ShardedConfig {
    fn default() -> Self {
        Self {
            batch_packets: 256,
            queue_batches: 16,
            batch_spans: 1024,
        }
    }
}

/// A packet's header fields, its payload in the batch's byte buffer.
struct Head {
    src: IpAddr,
    dst: IpAddr,
    src_port: u16,
    dst_port: u16,
    transport: Transport,
    start: usize,
    len: usize,
    missing: u32,
    vlan: Option<u16>,
    ts_ns: u64,
}

#[derive(Default)]
struct Batch {
    heads: Vec<Head>,
    bytes: Vec<u8>,
    /// Capture time the shard advances to after the packets (0: none).
    tick_ns: u64,
}

enum ToShard {
    Batch(Batch),
    Finish(u64),
}

enum FromShard {
    Reports(Vec<Report>),
    Done(Box<Shard<Deferred>>),
}

/// A sink for shards: spans are built by the telemetry stage, never here;
/// whether they are wanted travels with the reports.
struct Want(bool);

impl SpanSink for Want {
    fn spans(&mut self, _: Vec<SpanRecord>) {}
    fn wants_spans(&self) -> bool {
        self.0
    }
}

/// The shard of a packet's flow: both directions of a flow hash alike.
fn shard_of(pkt: &Packet<'_>, n: usize) -> usize {
    use std::hash::BuildHasher;
    let a = (pkt.src, pkt.src_port);
    let b = (pkt.dst, pkt.dst_port);
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let tcp = matches!(pkt.transport, Transport::Tcp(_));
    let h = foldhash::fast::FixedState::with_seed(0x7368_6172_6473).hash_one((lo, hi, tcp));
    (h % n as u64) as usize
}

/// Shards on threads of their own, fed by the caller's thread.
pub struct Sharded<'a> {
    cfg: ShardedConfig,
    /// The reader's shard: its decoder decodes every frame, its telemetry
    /// is the one stage, its counters count frames; it tracks no flow.
    pub main: &'a mut Shard,
    filling: Vec<Batch>,
    to: Vec<SyncSender<ToShard>>,
    from: Receiver<FromShard>,
    threads: Vec<JoinHandle<()>>,
    spans: Vec<SpanRecord>,
    last_tick_ns: u64,
    /// Shards handed back by [`Sharded::finish`], for their counters.
    pub finished: Vec<Shard<Deferred>>,
}

impl<'a> Sharded<'a> {
    /// Starts one thread per shard of `shards`; `main` decodes frames and
    /// holds the telemetry stage. `want_spans`: whether the sink takes spans.
    pub fn new(
        main: &'a mut Shard,
        shards: Vec<Shard<Deferred>>,
        cfg: ShardedConfig,
        want_spans: bool,
    ) -> std::io::Result<Self> {
        let n = shards.len().max(1);
        let (back, from) = sync_channel(cfg.queue_batches.max(1) * n);
        let mut to = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for (i, mut shard) in shards.into_iter().enumerate() {
            let (tx, rx) = sync_channel::<ToShard>(cfg.queue_batches.max(1));
            let back = back.clone();
            let t = std::thread::Builder::new()
                .name(format!("wasmtap-shard-{i}"))
                .spawn(move || {
                    let mut sink = Want(want_spans);
                    let send = |shard: &mut Shard<Deferred>| {
                        let r = std::mem::take(&mut shard.handler.telemetry.reports);
                        r.is_empty() || back.send(FromShard::Reports(r)).is_ok()
                    };
                    while let Ok(msg) = rx.recv() {
                        match msg {
                            ToShard::Batch(b) => {
                                for h in &b.heads {
                                    let pkt = Packet {
                                        src: h.src,
                                        dst: h.dst,
                                        src_port: h.src_port,
                                        dst_port: h.dst_port,
                                        transport: h.transport,
                                        payload: &b.bytes[h.start..h.start + h.len],
                                        missing: h.missing,
                                        vlan: h.vlan,
                                    };
                                    shard.packet(&pkt, h.ts_ns, &mut sink);
                                }
                                if b.tick_ns > 0 {
                                    shard.tick(b.tick_ns, &mut sink);
                                }
                                if !send(&mut shard) {
                                    return;
                                }
                            }
                            ToShard::Finish(ts) => {
                                shard.finish(ts, &mut sink);
                                if send(&mut shard) {
                                    let _ = back.send(FromShard::Done(Box::new(shard)));
                                }
                                return;
                            }
                        }
                    }
                })?;
            to.push(tx);
            threads.push(t);
        }
        Ok(Self {
            cfg,
            main,
            filling: (0..n).map(|_| Batch::default()).collect(),
            to,
            from,
            threads,
            spans: Vec::new(),
            last_tick_ns: 0,
            finished: Vec::new(),
        })
    }

    /// Processes one captured frame.
    pub fn frame(&mut self, link: LinkType, ts_ns: u64, data: &[u8], sink: &mut dyn SpanSink) {
        self.main.frames += 1;
        self.main.frame_bytes += data.len() as u64;
        let n = self.to.len();
        if let Ok(Some(pkt)) = self.main.decoder.decode(link, ts_ns, data) {
            let i = shard_of(&pkt, n);
            let b = &mut self.filling[i];
            let start = b.bytes.len();
            b.bytes.extend_from_slice(pkt.payload);
            b.heads.push(Head {
                src: pkt.src,
                dst: pkt.dst,
                src_port: pkt.src_port,
                dst_port: pkt.dst_port,
                transport: pkt.transport,
                start,
                len: pkt.payload.len(),
                missing: pkt.missing,
                vlan: pkt.vlan,
                ts_ns,
            });
            if b.heads.len() >= self.cfg.batch_packets {
                self.send(i, sink);
            }
        }
        // Every shard's time moves with the capture, packets or not.
        if ts_ns.saturating_sub(self.last_tick_ns) >= 100_000_000 {
            self.last_tick_ns = ts_ns;
            for i in 0..n {
                self.filling[i].tick_ns = ts_ns;
                self.send(i, sink);
            }
        }
        self.drain(sink, false);
    }

    fn send(&mut self, i: usize, sink: &mut dyn SpanSink) {
        let mut msg = ToShard::Batch(std::mem::take(&mut self.filling[i]));
        loop {
            match self.to[i].try_send(msg) {
                Ok(()) => return,
                Err(TrySendError::Full(m)) => {
                    msg = m;
                    // The shard is busy: take what shards report meanwhile.
                    self.drain(sink, true);
                }
                Err(TrySendError::Disconnected(_)) => return,
            }
        }
    }

    /// Applies the reports waiting; `wait`: wait a little for one.
    fn drain(&mut self, sink: &mut dyn SpanSink, wait: bool) {
        if wait {
            match self.from.recv_timeout(std::time::Duration::from_millis(1)) {
                Ok(m) => self.take(m),
                Err(_) => return,
            }
        }
        while let Ok(m) = self.from.try_recv() {
            self.take(m);
        }
        if self.spans.len() >= self.cfg.batch_spans {
            sink.spans(std::mem::take(&mut self.spans));
        }
    }

    fn take(&mut self, m: FromShard) {
        match m {
            FromShard::Reports(rs) => {
                for r in rs {
                    r.apply(&mut self.main.handler.telemetry, &mut self.spans);
                }
            }
            FromShard::Done(shard) => self.finished.push(*shard),
        }
    }

    /// Spans completed so far go to the sink.
    pub fn flush(&mut self, sink: &mut dyn SpanSink) {
        self.drain(sink, false);
        let rest = std::mem::take(&mut self.spans);
        if !rest.is_empty() {
            sink.spans(rest);
        }
    }

    /// End of capture: every shard closes its flows; their last reports are
    /// applied, the last spans handed out, and the threads joined.
    pub fn finish(&mut self, ts_ns: u64, sink: &mut dyn SpanSink) {
        for i in 0..self.to.len() {
            self.send(i, sink);
            let mut msg = ToShard::Finish(ts_ns);
            loop {
                match self.to[i].try_send(msg) {
                    Ok(()) | Err(TrySendError::Disconnected(_)) => break,
                    Err(TrySendError::Full(m)) => {
                        msg = m;
                        self.drain(sink, true);
                    }
                }
            }
        }
        self.to.clear();
        while self.finished.len() < self.threads.len() {
            match self.from.recv() {
                Ok(m) => self.take(m),
                // A shard thread died (it panicked): nothing more will come.
                Err(_) => break,
            }
        }
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        self.flush(sink);
    }
}
