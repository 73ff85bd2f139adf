//! The exporter handle, its queue, and the export task (batching, retries, shutdown).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};
use wasmtap_telemetry::model::{MetricsSnapshot, SpanRecord};

use crate::config::{ConfigError, ExporterConfig};
use crate::convert::{build_metrics_request, build_trace_request};
use crate::transport::{AttemptError, Payload, Transport};

/// First retry delay.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest computed retry delay.
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Longest delay accepted from a collector's Retry-After / RetryInfo.
const SERVER_DELAY_CAP: Duration = Duration::from_secs(30);
/// At most one failure warning per this interval (the rest go to debug).
const WARN_INTERVAL: Duration = Duration::from_secs(10);

/// The exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Counters of the exporter, as a snapshot.
///
/// Once [`Exporter::shutdown_blocking`] has returned, every queued span is either exported or
/// failed: `spans_queued == spans_exported + spans_failed` (and likewise for metric points).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportStats {
    /// Spans accepted into the queue.
    pub spans_queued: u64,
    /// Spans the collector accepted.
    pub spans_exported: u64,
    /// Spans not queued because the queue was full (or the exporter shut down).
    pub spans_dropped_queue_full: u64,
    /// Queued spans that were not exported: permanent error, retries exhausted, shutdown
    /// deadline, or rejected by the collector (partial success).
    pub spans_failed: u64,
    /// Metric data points accepted into the queue.
    pub metric_points_queued: u64,
    /// Metric data points the collector accepted.
    pub metric_points_exported: u64,
    /// Metric data points not queued because the queue was full (or the exporter shut down).
    pub metric_points_dropped_queue_full: u64,
    /// Queued metric data points that were not exported (as for `spans_failed`).
    pub metric_points_failed: u64,
    /// Export requests attempted, retries included.
    pub requests: u64,
    /// Attempts that were retries of a failed request.
    pub retries: u64,
    /// Spans and data points the collector rejected in a partial success response.
    pub partial_success_rejected: u64,
}

#[derive(Debug, Default)]
struct Counters {
    spans_queued: AtomicU64,
    spans_exported: AtomicU64,
    spans_dropped_queue_full: AtomicU64,
    spans_failed: AtomicU64,
    metric_points_queued: AtomicU64,
    metric_points_exported: AtomicU64,
    metric_points_dropped_queue_full: AtomicU64,
    metric_points_failed: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
    partial_success_rejected: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> ExportStats {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ExportStats {
            spans_queued: g(&self.spans_queued),
            spans_exported: g(&self.spans_exported),
            spans_dropped_queue_full: g(&self.spans_dropped_queue_full),
            spans_failed: g(&self.spans_failed),
            metric_points_queued: g(&self.metric_points_queued),
            metric_points_exported: g(&self.metric_points_exported),
            metric_points_dropped_queue_full: g(&self.metric_points_dropped_queue_full),
            metric_points_failed: g(&self.metric_points_failed),
            requests: g(&self.requests),
            retries: g(&self.retries),
            partial_success_rejected: g(&self.partial_success_rejected),
        }
    }
}

/// Which counters a batch moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    Spans,
    Metrics,
}

impl Signal {
    fn queued(self, c: &Counters) -> &AtomicU64 {
        match self {
            Signal::Spans => &c.spans_queued,
            Signal::Metrics => &c.metric_points_queued,
        }
    }
    fn dropped(self, c: &Counters) -> &AtomicU64 {
        match self {
            Signal::Spans => &c.spans_dropped_queue_full,
            Signal::Metrics => &c.metric_points_dropped_queue_full,
        }
    }
    fn exported(self, c: &Counters) -> &AtomicU64 {
        match self {
            Signal::Spans => &c.spans_exported,
            Signal::Metrics => &c.metric_points_exported,
        }
    }
    fn failed(self, c: &Counters) -> &AtomicU64 {
        match self {
            Signal::Spans => &c.spans_failed,
            Signal::Metrics => &c.metric_points_failed,
        }
    }
    fn name(self) -> &'static str {
        match self {
            Signal::Spans => "spans",
            Signal::Metrics => "metric points",
        }
    }
}

#[derive(Debug)]
enum Msg {
    Spans(Vec<SpanRecord>),
    Metrics(MetricsSnapshot),
}

impl Msg {
    fn signal_and_len(&self) -> (Signal, u64) {
        match self {
            Msg::Spans(s) => (Signal::Spans, s.len() as u64),
            Msg::Metrics(m) => (Signal::Metrics, m.points.len() as u64),
        }
    }
}

#[derive(Debug)]
struct Inner {
    tx: mpsc::Sender<Msg>,
    /// The longest a blocking send waits (see `ExporterConfig::max_block`).
    max_block: Duration,
    endpoint: String,
    /// A blocking send waited `max_block` in vain: until a batch fits again,
    /// blocking sends do not wait.
    gave_up: std::sync::atomic::AtomicBool,
    counters: Arc<Counters>,
    /// `Some(deadline)` once shutdown was requested.
    shutdown: watch::Sender<Option<Instant>>,
    /// Disconnects when the export task ends.
    done: Mutex<Option<std::sync::mpsc::Receiver<()>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// A cloneable handle to the OTLP export task.
///
/// Batches go through a bounded queue to one task on the tokio runtime given to
/// [`Exporter::start`], which coalesces them into requests of up to `max_batch_spans` spans
/// and sends one request at a time, with retries. Dropping every handle without calling
/// [`Exporter::shutdown_blocking`] lets the task export what is queued and end.
#[derive(Debug, Clone)]
pub struct Exporter {
    inner: Arc<Inner>,
}

impl Exporter {
    /// Spawns the export task on the given tokio runtime handle.
    ///
    /// Fails on an invalid configuration (see [`ExporterConfig::validate`]). Nothing is
    /// connected yet: an unreachable collector shows up as failed exports, not here.
    pub fn start(
        cfg: ExporterConfig,
        rt: &tokio::runtime::Handle,
    ) -> Result<Exporter, ExportError> {
        let transport = {
            let _enter = rt.enter();
            Transport::new(&cfg)?
        };
        let (tx, rx) = mpsc::channel(cfg.queue_capacity);
        let (max_block, endpoint) = (cfg.max_block, cfg.endpoint.clone());
        let (shutdown, shutdown_rx) = watch::channel(None);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let counters = Arc::new(Counters::default());
        let worker = Worker {
            cfg,
            transport,
            counters: counters.clone(),
            shutdown: shutdown_rx,
            last_warn: None,
            _done: done_tx,
        };
        let task = rt.spawn(worker.run(rx));
        Ok(Exporter {
            inner: Arc::new(Inner {
                tx,
                max_block,
                endpoint,
                gave_up: std::sync::atomic::AtomicBool::new(false),
                counters,
                shutdown,
                done: Mutex::new(Some(done_rx)),
                task: Mutex::new(Some(task)),
            }),
        })
    }

    fn try_send(&self, msg: Msg) -> bool {
        let (signal, n) = msg.signal_and_len();
        if n == 0 {
            return true;
        }
        let c = &self.inner.counters;
        // Counted before sending so that `exported` never runs ahead of `queued`.
        add(signal.queued(c), n);
        match self.inner.tx.try_send(msg) {
            Ok(()) => true,
            Err(_) => {
                signal.queued(c).fetch_sub(n, Ordering::Relaxed);
                add(signal.dropped(c), n);
                false
            }
        }
    }

    fn send_blocking(&self, msg: Msg) {
        let (signal, n) = msg.signal_and_len();
        if n == 0 {
            return;
        }
        if tokio::runtime::Handle::try_current().is_ok() {
            // Blocking inside an async context could deadlock the runtime: degrade to a
            // non-blocking send rather than panic.
            tracing::debug!("OTLP exporter: blocking send called from async context; not waiting");
            self.try_send(msg);
            return;
        }
        let c = &self.inner.counters;
        add(signal.queued(c), n);
        let gave_up = &self.inner.gave_up;
        let started = Instant::now();
        let mut msg = msg;
        loop {
            match self.inner.tx.try_send(msg) {
                Ok(()) => {
                    if gave_up.swap(false, Ordering::Relaxed) {
                        tracing::info!(
                            "OTLP exporter: the collector takes batches again; waiting for room again"
                        );
                    }
                    return;
                }
                Err(mpsc::error::TrySendError::Full(m))
                    if !gave_up.load(Ordering::Relaxed)
                        && started.elapsed() < self.inner.max_block =>
                {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => {
                    if matches!(e, mpsc::error::TrySendError::Full(_))
                        && !gave_up.swap(true, Ordering::Relaxed)
                    {
                        tracing::warn!(
                            endpoint = %self.inner.endpoint,
                            "OTLP exporter: the collector has taken nothing for {:?}; going on without waiting, dropping what does not fit (counted) until it takes batches again",
                            self.inner.max_block
                        );
                    }
                    signal.queued(c).fetch_sub(n, Ordering::Relaxed);
                    add(signal.dropped(c), n);
                    return;
                }
            }
        }
    }

    /// Non-blocking: queues a batch of spans. If the queue is full (or the exporter is shut
    /// down) the batch is dropped, counted in `spans_dropped_queue_full`, and `false` returned:
    /// live capture never waits on export.
    pub fn try_send_spans(&self, spans: Vec<SpanRecord>) -> bool {
        self.try_send(Msg::Spans(spans))
    }

    /// Blocking variant for replay: waits for room in the queue (back-pressure instead of
    /// drops). Meant for non-tokio threads; called from inside a tokio runtime it does not
    /// block and behaves like [`Exporter::try_send_spans`].
    pub fn send_spans_blocking(&self, spans: Vec<SpanRecord>) {
        self.send_blocking(Msg::Spans(spans));
    }

    /// Non-blocking: queues a metrics snapshot, or drops it (counted in
    /// `metric_points_dropped_queue_full`) and returns `false` if the queue is full.
    pub fn try_send_metrics(&self, m: MetricsSnapshot) -> bool {
        self.try_send(Msg::Metrics(m))
    }

    /// Blocking variant of [`Exporter::try_send_metrics`], as for
    /// [`Exporter::send_spans_blocking`].
    pub fn send_metrics_blocking(&self, m: MetricsSnapshot) {
        self.send_blocking(Msg::Metrics(m));
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> ExportStats {
        self.inner.counters.snapshot()
    }

    /// Flushes everything queued, waits for in-flight requests, stops the task and returns the
    /// final stats, all within `timeout`: requests and retry delays are cut at the deadline and
    /// what could not be sent by then is counted as failed. Afterwards every clone of this
    /// handle drops what it is given.
    ///
    /// Blocks the calling thread; meant for a non-tokio thread (from a runtime worker thread it
    /// still works on a multi-thread runtime, but occupies that worker meanwhile).
    pub fn shutdown_blocking(self, timeout: Duration) -> ExportStats {
        let start = Instant::now();
        // Leave the task a little time to wrap up before our own wait ends.
        let margin = (timeout / 10).min(Duration::from_millis(100));
        self.inner
            .shutdown
            .send_replace(Some(start + timeout.saturating_sub(margin)));
        let done = self
            .inner
            .done
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(done) = done {
            let left = timeout.saturating_sub(start.elapsed());
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(left) {
                tracing::warn!("OTLP exporter: shutdown timed out after {timeout:?}; abandoning");
                if let Some(task) = self
                    .inner
                    .task
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .take()
                {
                    task.abort();
                }
                self.account_abandoned();
            }
        }
        self.stats()
    }

    /// Counts whatever was queued but never settled as failed (after an abandoned shutdown).
    fn account_abandoned(&self) {
        let c = &self.inner.counters;
        for signal in [Signal::Spans, Signal::Metrics] {
            let queued = signal.queued(c).load(Ordering::Relaxed);
            let settled = signal.exported(c).load(Ordering::Relaxed)
                + signal.failed(c).load(Ordering::Relaxed);
            add(signal.failed(c), queued.saturating_sub(settled));
        }
    }
}

/// The export task's state.
struct Worker {
    cfg: ExporterConfig,
    transport: Transport,
    counters: Arc<Counters>,
    shutdown: watch::Receiver<Option<Instant>>,
    last_warn: Option<Instant>,
    /// Dropped when the task ends, which wakes `shutdown_blocking`.
    _done: std::sync::mpsc::Sender<()>,
}

/// Resolves once the shutdown deadline has passed (never, if shutdown is not requested).
async fn deadline_passed(mut rx: watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *rx.borrow_and_update();
        if let Some(d) = deadline {
            tokio::time::sleep_until(d.into()).await;
            return;
        }
        if rx.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Exponential backoff for retry number `attempt` (0-based): 100 ms, 200 ms, ... capped at 5 s.
pub(crate) fn backoff(attempt: u32) -> Duration {
    BACKOFF_START
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(BACKOFF_CAP)
}

impl Worker {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let mut closing = false;
        let mut shutdown = self.shutdown.clone();
        loop {
            let msg = tokio::select! {
                biased;
                _ = shutdown.changed(), if !closing => {
                    // Shutdown requested (or every handle is gone): take nothing new, drain
                    // what is queued.
                    rx.close();
                    closing = true;
                    continue;
                }
                msg = rx.recv() => msg,
            };
            let Some(msg) = msg else { break };
            let max = self.cfg.max_batch_spans;
            let mut spans = Vec::new();
            let mut snapshots = Vec::new();
            let mut next = Some(msg);
            while let Some(m) = next.take() {
                match m {
                    Msg::Spans(s) => spans.extend(s),
                    Msg::Metrics(m) => snapshots.push(m),
                }
                if spans.len() < max {
                    next = rx.try_recv().ok();
                }
            }
            for chunk in spans.chunks(max) {
                let req = build_trace_request(chunk);
                self.export(Payload::Traces(req), Signal::Spans, chunk.len() as u64)
                    .await;
            }
            for snap in snapshots {
                let n = snap.points.len() as u64;
                let req = build_metrics_request(&snap);
                self.export(Payload::Metrics(req), Signal::Metrics, n).await;
            }
        }
        tracing::debug!("OTLP exporter task finished");
    }

    fn warn(&mut self, msg: &str) {
        let now = Instant::now();
        if self
            .last_warn
            .is_none_or(|t| now.duration_since(t) >= WARN_INTERVAL)
        {
            self.last_warn = Some(now);
            tracing::warn!("{msg}");
        } else {
            tracing::debug!("{msg}");
        }
    }

    fn fail(&mut self, signal: Signal, n: u64, why: &str) {
        add(signal.failed(&self.counters), n);
        let msg = format!("OTLP exporter: dropped {n} {}: {why}", signal.name());
        self.warn(&msg);
    }

    /// Sends one request, retrying retryable failures, and settles its `n` items in the stats.
    async fn export(&mut self, payload: Payload, signal: Signal, n: u64) {
        let prepared = self.transport.prepare(payload);
        let mut attempt: u32 = 0;
        loop {
            if self.shutdown.borrow().is_some_and(|d| Instant::now() >= d) {
                return self.fail(signal, n, "shutdown deadline reached");
            }
            add(&self.counters.requests, 1);
            if attempt > 0 {
                add(&self.counters.retries, 1);
            }
            let timeout = self.cfg.timeout;
            let result = tokio::select! {
                r = tokio::time::timeout(timeout, self.transport.attempt(&prepared, timeout)) => {
                    r.unwrap_or_else(|_| Err(AttemptError::Retryable {
                        reason: format!("no answer within {timeout:?}"),
                        delay: None,
                    }))
                }
                () = deadline_passed(self.shutdown.clone()) => {
                    return self.fail(signal, n, "shutdown deadline reached during the request");
                }
            };
            match result {
                Ok(acc) => {
                    let rejected = u64::try_from(acc.rejected).unwrap_or(0).min(n);
                    add(signal.exported(&self.counters), n - rejected);
                    if rejected > 0 {
                        add(signal.failed(&self.counters), rejected);
                        add(&self.counters.partial_success_rejected, rejected);
                    }
                    if rejected > 0 || !acc.message.is_empty() {
                        let msg = format!(
                            "OTLP collector rejected {rejected} of {n} {}: {}",
                            signal.name(),
                            acc.message
                        );
                        self.warn(&msg);
                    }
                    return;
                }
                Err(AttemptError::Permanent(reason)) => return self.fail(signal, n, &reason),
                Err(AttemptError::Retryable { reason, delay }) => {
                    if attempt >= self.cfg.max_retries {
                        let why = format!("{reason} (after {attempt} retries)");
                        return self.fail(signal, n, &why);
                    }
                    let wait =
                        backoff(attempt).max(delay.unwrap_or_default().min(SERVER_DELAY_CAP));
                    tracing::debug!(
                        "OTLP export attempt {} failed ({reason}); retrying in {wait:?}",
                        attempt + 1
                    );
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = deadline_passed(self.shutdown.clone()) => {
                            let why = format!("{reason} (shutdown deadline reached before retrying)");
                            return self.fail(signal, n, &why);
                        }
                    }
                    attempt += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let ms = |a| backoff(a).as_millis();
        assert_eq!(
            (0..8).map(ms).collect::<Vec<_>>(),
            [100, 200, 400, 800, 1600, 3200, 5000, 5000]
        );
        assert_eq!(ms(100), 5000);
    }
}
