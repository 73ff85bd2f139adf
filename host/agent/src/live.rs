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

use crate::{CommonArgs, Format, Pipeline, output, selftel};

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

/// Runs the live capture.
pub fn run(a: RunArgs) -> Result<()> {
    let names = resolve_interfaces(&a.interfaces, a.mode)?;
    let extra = if a.mode == Mode::Sidecar {
        sidecar_identity()
    } else {
        Vec::new()
    };
    let mut p = Pipeline::new(&a.common, true, extra)?;
    let live_cfg = LiveConfig {
        snaplen: a.snaplen,
        buffer_bytes: a.buffer_mib.saturating_mul(1 << 20),
        immediate: true,
        promisc: a.promisc,
    };
    let mut sources = Vec::new();
    for n in &names {
        let s = LiveSource::open(n, &live_cfg, a.bpf.as_deref())?;
        let dlt = s.datalink();
        let Some(link) = wasmtap_decode::LinkType::from_dlt(dlt) else {
            bail!("interface {n}: unsupported link type {dlt}");
        };
        sources.push((s, link));
    }
    tracing::info!(interfaces = ?names, mode = ?a.mode, "capturing");

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
    let deadline = (a.duration > 0).then(|| started + Duration::from_secs(a.duration));
    let mut last_flush = Instant::now();
    let mut last_tick = Instant::now();
    let mut last_table = Instant::now();
    let mut last_ts = wall_ns();
    let tty = std::io::stdout().is_terminal();
    let mut read_error = None;
    'capture: while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
        let mut got = 0usize;
        for (src, link) in &mut sources {
            for _ in 0..512 {
                match src.next_frame() {
                    Ok(Some(f)) => {
                        last_ts = last_ts.max(f.ts_ns);
                        p.shard.frame(*link, f.ts_ns, f.data, &mut p.out);
                        got += 1;
                    }
                    Ok(None) => break,
                    Err(e) => {
                        read_error = Some(e);
                        break 'capture;
                    }
                }
            }
        }
        if got == 0 {
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
                names.join(",")
            );
            let _ = output::write_table(&mut stdout, &p.shard.handler.telemetry.summary());
            last_table = Instant::now();
        }
    }
    let mut extra: Vec<selftel::Counter> = Vec::new();
    for (src, _) in &mut sources {
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
    drop(sources);
    let now = last_ts.max(wall_ns());
    let common = a.common;
    p.finish(&common, now, started.elapsed(), extra)?;
    if let Some(e) = read_error {
        bail!("{e}");
    }
    Ok(())
}
