//! `wasmtap run`: live capture from network interfaces, until SIGINT/SIGTERM.
//!
//! One capture thread reads every interface without blocking (round robin,
//! up to a batch per interface per turn) and feeds the shard; when the wire is
//! quiet it sleeps 1 ms and advances time with the wall clock so idle flows
//! and unanswered requests still expire. On a signal it stops reading, closes
//! every flow and flushes every output before exiting: nothing accepted is lost.

use std::io::{IsTerminal, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use wasmtap_capture::{LiveConfig, LiveSource};
use wasmtap_telemetry::model::KeyValue;

use crate::admin::AdminState;
use crate::filter::{CompiledFilter, FilterSpec};
use crate::{CommonArgs, Format, Pipeline, output, selftel};

/// The BPF program for one handle: the filters' L3/L4 part (per link type)
/// ANDed with `--bpf`.
fn combined_bpf(filter: &CompiledFilter, dlt: i32, cli: Option<&str>) -> Option<String> {
    // Not `(F) and (C)`: libpcap's `vlan` shifts the offsets of what follows
    // it, so `--bpf` goes inside both the untagged and the tagged branch.
    filter.bpf_with(dlt, cli)
}

/// Capture handles and what they were opened with.
struct Sources {
    list: Vec<(LiveSource, wasmtap_decode::LinkType)>,
    names: Vec<String>,
}

fn open_sources(
    names: &[String],
    cfg: &LiveConfig,
    filter: &CompiledFilter,
    cli: Option<&str>,
) -> Result<Sources> {
    let mut list = Vec::new();
    for n in names {
        let mut s = LiveSource::open(n, cfg, None)?;
        let dlt = s.datalink();
        let Some(link) = wasmtap_decode::LinkType::from_dlt(dlt) else {
            bail!("interface {n}: unsupported link type {dlt}");
        };
        if let Some(bpf) = combined_bpf(filter, dlt, cli) {
            s.set_filter(Some(&bpf))?;
        }
        list.push((s, link));
    }
    Ok(Sources {
        list,
        names: names.to_vec(),
    })
}

fn config_mtime(path: Option<&std::path::Path>) -> Option<SystemTime> {
    path.and_then(|p| std::fs::metadata(p).ok())
        .and_then(|m| m.modified().ok())
}

/// Where the agent runs.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum, Debug)]
pub enum Mode {
    /// Interfaces given explicitly (default: every up, non-loopback interface with an address).
    Standalone,
    /// Inside a pod's network namespace: the pod's interfaces; identity from the downward API.
    Sidecar,
    /// One agent per node: the pod interfaces (veth, cali, cni, eth...).
    Host,
}

/// The default interface pattern in host mode: pod and node interfaces.
pub const HOST_INTERFACES: &str =
    "^(veth|cali|cni|eth|ens|enp|eno|lxc|flannel|cilium|gke|azv|vxlan).*";

/// `wasmtap run` options.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Interface to capture: a name, a regular expression, or `any` (repeatable). Default: by mode.
    #[arg(long = "interface", short = 'i')]
    pub interfaces: Vec<String>,
    /// Deployment mode.
    #[arg(long, value_enum, default_value = "standalone")]
    pub mode: Mode,
    /// A BPF expression (tcpdump syntax) for the capture, ANDed with the config's filters.
    #[arg(long)]
    pub bpf: Option<String>,
    /// Seconds between refreshes of the console table.
    #[arg(long, default_value_t = 5)]
    pub refresh: u64,
    /// Stop by itself after this many seconds (0: run until SIGINT/SIGTERM).
    #[arg(long, default_value_t = 0)]
    pub duration: u64,
    /// Kernel buffer per interface, MiB.
    #[arg(long, default_value_t = 32)]
    pub buffer_mib: i32,
    /// Bytes kept of each frame.
    #[arg(long, default_value_t = 262_144)]
    pub snaplen: i32,
    /// Promiscuous mode (mirrored/SPAN ports).
    #[arg(long)]
    pub promisc: bool,
    /// Immediate mode: packets are handed over as they arrive (read about
    /// every millisecond under load). `false` (the default): the kernel hands
    /// over batches, when a buffer block fills or after 100 ms: half the CPU
    /// under load, spans up to 100 ms later.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub immediate: bool,
    /// Admin endpoint address (`/healthz`, `/readyz`, `/status`, `/metrics`, `PUT /filters`); "" disables.
    /// A non-loopback address needs WASMTAP_ADMIN_TOKEN.
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub admin_listen: String,
    /// A read-only Prometheus scrape endpoint (`GET /metrics` only, no token),
    /// e.g. `0.0.0.0:9465`: the observed services' metrics and the agent's own.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Resolves the interface arguments (names, regexes, `any`) against the system's list.
pub fn resolve_interfaces(specs: &[String], mode: Mode) -> Result<Vec<String>> {
    let all = wasmtap_capture::interfaces()?;
    let specs: Vec<String> = if specs.is_empty() {
        match mode {
            Mode::Host => vec![HOST_INTERFACES.to_string()],
            Mode::Sidecar | Mode::Standalone => {
                let v: Vec<String> = all
                    .iter()
                    .filter(|i| i.up && !i.loopback && i.has_address && i.name != "any")
                    .map(|i| i.name.clone())
                    .collect();
                if v.is_empty() {
                    bail!(
                        "no up, non-loopback interface with an address: name one with --interface"
                    );
                }
                return Ok(v);
            }
        }
    } else {
        specs.to_vec()
    };
    let mut out = Vec::new();
    for spec in &specs {
        if spec == "any" || all.iter().any(|i| &i.name == spec) {
            out.push(spec.clone());
            continue;
        }
        let re = regex::Regex::new(spec).with_context(|| {
            format!("--interface {spec:?}: neither an interface nor a regular expression")
        })?;
        let before = out.len();
        out.extend(
            all.iter()
                .filter(|i| i.name != "any" && re.is_match(&i.name))
                .map(|i| i.name.clone()),
        );
        if out.len() == before {
            tracing::warn!(pattern = %spec, "no interface matches");
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        bail!("no interface to capture (patterns: {})", specs.join(", "));
    }
    Ok(out)
}

/// Resource attributes of the observed pod in sidecar mode (downward API).
pub fn sidecar_identity() -> Vec<KeyValue> {
    let mut v = Vec::new();
    for (env, key) in [
        ("POD_NAME", "k8s.pod.name"),
        ("POD_NAMESPACE", "k8s.namespace.name"),
        ("NODE_NAME", "k8s.node.name"),
        ("POD_IP", "k8s.pod.ip"),
    ] {
        if let Ok(val) = std::env::var(env)
            && !val.is_empty()
        {
            v.push(KeyValue::str(key, val));
        }
    }
    v
}

/// Least privilege: before any thread starts (threads inherit the sets),
/// every capability but `CAP_NET_RAW` (packet sockets, for the capture and
/// for interfaces a rescan opens later) is dropped from the effective,
/// permitted, inheritable, ambient and bounding sets; `CAP_NET_BIND_SERVICE`
/// stays when the admin or metrics endpoint asks for a port below 1024. A non-root
/// agent (file capability `cap_net_raw`) has nothing else to drop and may
/// not touch its bounding set: that is skipped.
fn drop_capabilities(listens: &[&str]) -> Result<()> {
    use caps::{CapSet, Capability};
    let mut keep = caps::CapsHashSet::new();
    keep.insert(Capability::CAP_NET_RAW);
    let low_port = listens.iter().any(|l| {
        l.rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_some_and(|p| p < 1024)
    });
    if low_port {
        keep.insert(Capability::CAP_NET_BIND_SERVICE);
    }
    let before = caps::read(None, CapSet::Permitted).map_err(|e| anyhow::anyhow!("{e}"))?;
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for c in caps::all() {
            if !keep.contains(&c) {
                // Capabilities the kernel does not know are not an error.
                let _ = caps::drop(None, CapSet::Bounding, c);
            }
        }
    }
    let kept: caps::CapsHashSet = before.intersection(&keep).copied().collect();
    let _ = caps::clear(None, CapSet::Ambient);
    caps::clear(None, CapSet::Inheritable).map_err(|e| anyhow::anyhow!("{e}"))?;
    caps::set(None, CapSet::Effective, &kept).map_err(|e| anyhow::anyhow!("{e}"))?;
    caps::set(None, CapSet::Permitted, &kept).map_err(|e| anyhow::anyhow!("{e}"))?;
    tracing::info!(
        kept = ?kept.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        dropped = before.len().saturating_sub(kept.len()),
        "capabilities dropped"
    );
    Ok(())
}

/// Runs the live capture.
pub fn run(a: RunArgs) -> Result<()> {
    let listens = [
        a.admin_listen.as_str(),
        a.metrics_listen.as_deref().unwrap_or(""),
    ];
    drop_capabilities(&listens).context("dropping capabilities")?;
    let extra = if a.mode == Mode::Sidecar {
        sidecar_identity()
    } else {
        Vec::new()
    };
    let mut p = Pipeline::new(&a.common, Some(a.mode), extra)?;
    let live_cfg = LiveConfig {
        snaplen: a.snaplen,
        buffer_bytes: a.buffer_mib.saturating_mul(1 << 20),
        immediate: a.immediate,
        promisc: a.promisc,
    };
    let mut spec: FilterSpec = p.cfg.filters.clone();
    let mut filter = Arc::new(spec.compile().map_err(|e| anyhow::anyhow!("{e}"))?);
    // Interfaces: the command line wins, else the filters section, else the mode's default.
    let patterns = if a.interfaces.is_empty() {
        spec.interfaces.clone()
    } else {
        a.interfaces.clone()
    };
    let names = resolve_interfaces(&patterns, a.mode)?;
    let mut sources = open_sources(&names, &live_cfg, &filter, a.bpf.as_deref())?;
    p.shard.set_filter(Some(filter.clone()));
    let omitted = filter.bpf_omitted();
    if !omitted.is_empty() {
        tracing::warn!(fields = ?omitted, "filters too large for the kernel program: applied in user space");
    }
    if sources.list.len() > 1 {
        // Several interfaces may carry the same packet (host mode).
        // Without immediate mode each interface's packets arrive in blocks of
        // up to BLOCK_TIMEOUT_MS, so a copy may be read that much later (in
        // pipeline order) than its twin on the other interface: the window
        // covers two blocks on top of the configured skew.
        let slack_ms = if live_cfg.immediate {
            0
        } else {
            2 * wasmtap_capture::BLOCK_TIMEOUT_MS.unsigned_abs() as u64
        };
        p.shard.dedup = crate::pipeline::Dedup::new(
            p.cfg
                .flows
                .dedup_window_ms
                .saturating_add(slack_ms)
                .saturating_mul(1_000_000),
            p.cfg.flows.dedup_capacity,
        );
    }
    tracing::info!(interfaces = ?names, mode = ?a.mode, "capturing");

    let admin = Arc::new(AdminState::default());
    let mut own = Vec::new();
    if !a.admin_listen.is_empty() {
        own.push(crate::admin::serve(
            &p.rt,
            &a.admin_listen,
            admin.clone(),
            p.cfg.admin.limits(),
        )?);
    }
    if let Some(m) = a.metrics_listen.as_deref().filter(|m| !m.is_empty()) {
        own.push(crate::admin::serve_metrics(
            &p.rt,
            m,
            admin.clone(),
            p.cfg.admin.limits(),
        )?);
    }
    // The agent's own endpoints are not what it observes.
    p.shard.set_own_endpoints(own);
    admin.ready.store(true, Ordering::SeqCst);
    let config_path = a.common.config.clone();
    let mut config_seen = config_mtime(config_path.as_deref());
    let mut filters_applied: u64 = 0;

    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        p.rt.spawn(async move {
            let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
            match term {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(e) => {
                    tracing::warn!("cannot watch SIGTERM ({e}); SIGINT only");
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
            stop.store(true, Ordering::SeqCst);
        });
    }

    let started = Instant::now();
    let deadline = (a.duration > 0)
        .then(|| started.checked_add(Duration::from_secs(a.duration)))
        .flatten();
    let mut last_flush = Instant::now();
    let mut last_tick = Instant::now();
    let mut last_table = Instant::now();
    let mut last_admin = Instant::now();
    let mut last_rescan = Instant::now();
    let mut last_export = Instant::now();
    let export_every = Duration::from_secs(p.cfg.telemetry.export_interval_secs.max(1));
    let mut last_ts = wall_ns();
    let mut lag = Lag {
        shed_after_ns: p.cfg.overload.shed_after_ms.saturating_mul(1_000_000),
        resume_below_ns: p.cfg.overload.resume_below_ms.saturating_mul(1_000_000),
        episodes: 0,
        worst_ns: 0,
    };
    let tty = std::io::stdout().is_terminal();
    let mut read_error = None;
    'capture: while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        let got = match read_available(&mut sources, &mut p, &mut last_ts, 512, &mut lag) {
            Ok(n) => n,
            Err(e) => {
                read_error = Some(e);
                break 'capture;
            }
        };
        if got == 0 {
            // Nothing waiting: whatever the lag was, the pipeline has caught up.
            lag.caught_up(&mut p);
            // Sleep in poll(2) until a source has frames, at most until the
            // next output flush is due.
            let until_flush = Duration::from_millis(100).saturating_sub(last_flush.elapsed());
            let list: Vec<&LiveSource> = sources.list.iter().map(|(s, _)| s).collect();
            LiveSource::wait_any(&list, until_flush.max(Duration::from_millis(1)));
        } else if live_cfg.immediate && got < 512 {
            // Drained. In immediate mode every packet would wake poll(2):
            // let about a millisecond of packets gather first instead.
            std::thread::sleep(Duration::from_millis(1));
        }
        if last_tick.elapsed() >= Duration::from_millis(200) {
            // Quiet wire or not, time moves on: idle flows and unanswered requests expire.
            last_ts = last_ts.max(wall_ns());
            p.shard.tick(last_ts, &mut p.out);
            last_tick = Instant::now();
        }
        if last_flush.elapsed() >= Duration::from_millis(100) {
            p.shard.flush(&mut p.out);
            last_flush = Instant::now();
        }
        if last_rescan.elapsed() >= Duration::from_secs(5) {
            // New pods bring new interfaces; deleted pods take theirs away.
            last_rescan = Instant::now();
            let patterns = if a.interfaces.is_empty() {
                spec.interfaces.clone()
            } else {
                a.interfaces.clone()
            };
            if let Ok(wanted) = resolve_interfaces(&patterns, a.mode) {
                rescan(&mut sources, &wanted, &live_cfg, &filter, a.bpf.as_deref());
            }
        }
        if last_admin.elapsed() >= Duration::from_secs(1) {
            last_admin = Instant::now();
            // A filter from `PUT /filters`, or from the config file (a ConfigMap
            // update lands as a file change): applied without a restart.
            let mut next = match admin.pending_filter.lock() {
                Ok(mut g) => g.take(),
                Err(poisoned) => poisoned.into_inner().take(),
            };
            let mtime = config_mtime(config_path.as_deref());
            if mtime != config_seen {
                config_seen = mtime;
                if let Some(path) = &config_path {
                    match crate::config::Config::load(path) {
                        Ok(c) => next = Some(c.filters),
                        Err(e) => {
                            tracing::error!("config change refused, previous filters stay: {e:#}")
                        }
                    }
                }
            }
            if let Some(new_spec) = next {
                match apply_filter(&new_spec, &a, &live_cfg, &mut sources, &mut p) {
                    Ok(f) => {
                        filter = f;
                        spec = new_spec;
                        filters_applied += 1;
                        tracing::info!(bpf = ?filter.bpf(), "filters applied");
                    }
                    Err(e) => tracing::error!("filters refused, previous filters stay: {e:#}"),
                }
            }
            // After any change, so `/status` shows the filter in force at once.
            publish_status(
                &mut p,
                &mut sources,
                &admin,
                (&spec, filters_applied),
                started,
                &lag,
            );
        }
        if last_export.elapsed() >= export_every {
            // One snapshot per interval feeds OTLP and the scrape endpoint,
            // so the interval gauges cover the export interval.
            last_export = Instant::now();
            last_ts = last_ts.max(wall_ns());
            let snap = p.shard.handler.telemetry.snapshot(last_ts);
            let mut text = String::new();
            wasmtap_telemetry::prom::write_prometheus(&snap, &mut text);
            match admin.observed.lock() {
                Ok(mut g) => *g = text,
                Err(poisoned) => *poisoned.into_inner() = text,
            }
            if let Some(x) = &p.out.otlp {
                // Never wait on export: a full queue drops (counted).
                x.try_send_metrics(snap);
            }
        }
        if a.common.format == Format::Table
            && last_table.elapsed() >= Duration::from_secs(a.refresh.max(1))
        {
            let mut stdout = std::io::stdout().lock();
            if tty {
                let _ = write!(stdout, "\x1b[2J\x1b[H");
            }
            let _ = writeln!(
                stdout,
                "== wasmtap: {} s, interfaces {} ==",
                started.elapsed().as_secs(),
                sources.names.join(",")
            );
            let _ = output::write_table(&mut stdout, &p.shard.handler.telemetry.summary(last_ts));
            let _ = output::write_edges(&mut stdout, &p.shard.handler.telemetry.edge_summary());
            last_table = Instant::now();
        }
    }
    admin.ready.store(false, Ordering::SeqCst);
    if read_error.is_none() {
        // What the kernel captured before the stop was accepted: read it all.
        // Without immediate mode the last block is handed over only when its
        // 100 ms timeout expires.
        if !live_cfg.immediate {
            std::thread::sleep(Duration::from_millis(150));
        }
        loop {
            // What the kernel held at the stop is read whole, never shed.
            lag.caught_up(&mut p);
            let mut draining = Lag {
                shed_after_ns: 0,
                ..lag
            };
            match read_available(
                &mut sources,
                &mut p,
                &mut last_ts,
                usize::MAX,
                &mut draining,
            ) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    read_error = Some(e);
                    break;
                }
            }
        }
    }
    let extra = capture_counters(&mut sources);
    drop(sources);
    let now = last_ts.max(wall_ns());
    let common = a.common;
    p.finish(&common, now, started.elapsed(), extra, &[])?;
    if let Some(e) = read_error {
        bail!("{e}");
    }
    Ok(())
}

/// Overload: how far behind the wire the pipeline is, and whether it sheds.
#[derive(Clone, Copy)]
struct Lag {
    shed_after_ns: u64,
    resume_below_ns: u64,
    episodes: u64,
    worst_ns: u64,
}

impl Lag {
    /// A frame captured at `ts_ns` is handled at `now_ns`: shed whole new
    /// flows past the threshold, take them again once caught up.
    fn observe(&mut self, p: &mut Pipeline, ts_ns: u64) {
        if self.shed_after_ns == 0 {
            return;
        }
        // Read now, not once per batch: a slow batch would look caught up.
        let now_ns = wall_ns();
        let lag = now_ns.saturating_sub(ts_ns);
        self.worst_ns = self.worst_ns.max(lag);
        if p.shard.admits() && lag > self.shed_after_ns {
            self.episodes += 1;
            p.shard.set_admit(false);
            tracing::warn!(
                lag_ms = lag / 1_000_000,
                "overload: the pipeline is behind the wire; new flows are shed whole until it catches up"
            );
        } else if lag < self.resume_below_ns {
            self.caught_up(p);
        }
    }

    /// The backlog is gone: new flows are taken again.
    fn caught_up(&mut self, p: &mut Pipeline) {
        if !p.shard.admits() {
            p.shard.set_admit(true);
            tracing::info!(
                shed = p.shard.flow_stats().flows_shed,
                "overload over: new flows are taken again"
            );
        }
    }
}

/// Reads up to `per_source` waiting frames from each source into the
/// pipeline; returns how many were read.
fn read_available(
    sources: &mut Sources,
    p: &mut Pipeline,
    last_ts: &mut u64,
    per_source: usize,
    lag: &mut Lag,
) -> Result<usize, wasmtap_capture::CaptureError> {
    let mut got = 0usize;
    for (n, (src, link)) in sources.list.iter_mut().enumerate() {
        for i in 0..per_source {
            let Some(f) = src.next_frame()? else { break };
            *last_ts = (*last_ts).max(f.ts_ns);
            if i % 64 == 0 {
                lag.observe(p, f.ts_ns);
            }
            let iface = u16::try_from(n).unwrap_or(u16::MAX);
            p.shard
                .frame_from(iface, *link, f.ts_ns, f.data, &mut p.out);
            got += 1;
        }
    }
    Ok(got)
}

/// Opens interfaces that appeared and closes those that went away.
fn rescan(
    sources: &mut Sources,
    wanted: &[String],
    cfg: &LiveConfig,
    filter: &CompiledFilter,
    cli: Option<&str>,
) {
    let gone: Vec<String> = sources
        .names
        .iter()
        .filter(|n| !wanted.contains(n))
        .cloned()
        .collect();
    for n in &gone {
        tracing::info!(interface = %n, "interface gone");
    }
    let mut i = 0;
    while i < sources.list.len() {
        if gone.iter().any(|g| g == sources.list[i].0.name()) {
            sources.list.remove(i);
        } else {
            i += 1;
        }
    }
    sources.names.retain(|n| !gone.contains(n));
    for n in wanted {
        if sources.names.contains(n) {
            continue;
        }
        match open_sources(std::slice::from_ref(n), cfg, filter, cli) {
            Ok(mut s) => {
                tracing::info!(interface = %n, "interface added");
                sources.list.append(&mut s.list);
                sources.names.push(n.clone());
            }
            Err(e) => tracing::warn!("{e:#}"),
        }
    }
}

fn capture_counters(sources: &mut Sources) -> Vec<selftel::Counter> {
    let mut extra: Vec<selftel::Counter> = Vec::new();
    for (src, _) in &mut sources.list {
        match src.stats() {
            Ok(st) => {
                let iface = || vec![("interface", src.name().to_string())];
                extra.push(("wasmtap.agent.capture.received", iface(), st.received));
                extra.push(("wasmtap.agent.capture.kernel_dropped", iface(), st.dropped));
                extra.push((
                    "wasmtap.agent.capture.interface_dropped",
                    iface(),
                    st.if_dropped,
                ));
            }
            Err(e) => tracing::warn!("{e}"),
        }
    }
    extra
}

/// Compiles and installs a new filter: BPF on every handle, L7 in the shard,
/// and the interface set when the filter names interfaces. All or nothing.
fn apply_filter(
    spec: &FilterSpec,
    a: &RunArgs,
    cfg: &LiveConfig,
    sources: &mut Sources,
    p: &mut Pipeline,
) -> Result<Arc<CompiledFilter>> {
    let f = Arc::new(spec.compile().map_err(|e| anyhow::anyhow!("{e}"))?);
    let wanted = if !a.interfaces.is_empty() || spec.interfaces.is_empty() {
        sources.names.clone()
    } else {
        resolve_interfaces(&spec.interfaces, a.mode)?
    };
    if wanted != sources.names {
        *sources = open_sources(&wanted, cfg, &f, a.bpf.as_deref())?;
    } else {
        for (src, _) in &mut sources.list {
            let bpf = combined_bpf(&f, src.datalink(), a.bpf.as_deref());
            src.set_filter(bpf.as_deref())?;
        }
    }
    p.shard.set_filter(Some(f.clone()));
    Ok(f)
}

/// Refreshes what `/status` and `/metrics` serve.
fn publish_status(
    p: &mut Pipeline,
    sources: &mut Sources,
    admin: &AdminState,
    // The filters in force, and how many updates were applied since start.
    filters: (&FilterSpec, u64),
    started: Instant,
    lag: &Lag,
) {
    let capture = capture_counters(sources);
    let f = p.shard.flow_stats();
    let overload = serde_json::json!({
        "shedding": !p.shard.admits(),
        "episodes": lag.episodes,
        "worst_lag_ms": lag.worst_ns / 1_000_000,
        "flows_shed": f.flows_shed,
        "packets_shed": f.packets_shed,
    });
    let srcs: Vec<serde_json::Value> = sources
        .names
        .iter()
        .map(|n| {
            let get = |metric: &str| {
                capture
                    .iter()
                    .find(|(m, attrs, _)| *m == metric && attrs.iter().any(|(_, v)| v == n))
                    .map_or(0, |c| c.2)
            };
            serde_json::json!({
                "interface": n,
                "received": get("wasmtap.agent.capture.received"),
                "kernel_dropped": get("wasmtap.agent.capture.kernel_dropped"),
                "interface_dropped": get("wasmtap.agent.capture.interface_dropped"),
            })
        })
        .collect();
    let plugins: Vec<serde_json::Value> = p
        .shard
        .loaded()
        .into_iter()
        .map(|(name, version, sha256, state)| {
            serde_json::json!({"name": name, "version": version, "wit": wasmtap_runtime::WIT_VERSION, "sha256": sha256, "state": state})
        })
        .collect();
    let t = p.shard.handler.telemetry.stats();
    let kubernetes = p.kube.as_ref().map(|k| {
        use std::sync::atomic::Ordering::Relaxed;
        serde_json::json!({
            "synced": k.synced.load(Relaxed),
            "pods": k.pods.load(Relaxed),
            "services": k.services.load(Relaxed),
            "events": k.events.load(Relaxed),
            "lists": k.lists.load(Relaxed),
            "errors": k.errors.load(Relaxed),
            "last_error": k.last_error(),
        })
    });
    let export = p.out.otlp.as_ref().map(|x| {
        let e = x.stats();
        serde_json::json!({
            "spans_queued": e.spans_queued,
            "spans_exported": e.spans_exported,
            "spans_dropped_queue_full": e.spans_dropped_queue_full,
            "spans_failed": e.spans_failed,
            "metric_points_exported": e.metric_points_exported,
            "metric_points_dropped_queue_full": e.metric_points_dropped_queue_full,
            "metric_points_failed": e.metric_points_failed,
            "requests": e.requests,
            "retries": e.retries,
        })
    });
    let status = serde_json::json!({
        "uptime_seconds": started.elapsed().as_secs(),
        "overload": overload,
        "export": export,
        "kubernetes": kubernetes,
        "names": {
            "dns_learned": t.dns_names_learned,
            "dns_held": t.dns_names_held,
            "dns_dropped": t.dns_names_dropped,
        },
        "reported_elsewhere": t.reported_elsewhere,
        "admin": {
            "connections_refused": admin.connections_refused.load(Ordering::Relaxed),
            "connection_errors": admin.connection_errors.load(Ordering::Relaxed),
        },
        "sources": srcs,
        "frames": p.shard.frames,
        "flows": p.shard.flows_len(),
        "spans": p.out.spans,
        "plugins": plugins,
        "filters": filters.0,
        "filters_applied": filters.1,
    });
    let mut counters = selftel::Counters::collect(
        &p.shard,
        &p.shard.handler.telemetry.stats(),
        p.out.spans,
        p.out.otlp.as_ref().map(|x| x.stats()).as_ref(),
        &p.load_stats,
        started.elapsed(),
    );
    counters.extend(capture);
    if let Some(k) = &p.kube {
        counters.kubernetes(k);
    }
    counters.admin(admin);
    let metrics = crate::admin::prometheus(counters.values());
    if let Ok(mut g) = admin.status.lock() {
        *g = status.to_string();
    }
    if let Ok(mut g) = admin.metrics.lock() {
        *g = metrics;
    }
}
