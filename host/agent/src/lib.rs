//! `wasmtap`: the agent. The binary (`main.rs`) calls [`main`]; the
//! library exists so that the configuration and the admin endpoint can be
//! fuzzed in-process ([`fuzzing`]). Nothing else here is a public API.

// The modules are private: `pub` marks what a module offers the rest of the crate.
#![allow(unreachable_pub)]

mod admin;
mod author;
mod config;
mod live;
mod output;
mod plugins;
mod selftel;

// The packet path and the filters live in their own crate (sans I/O).
use wasmtap_pipeline as pipeline;
use wasmtap_pipeline::filter;

pub mod fuzzing;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::Config;
use crate::output::Outputs;
use crate::pipeline::Shard;

/// Network-capture application monitoring with WebAssembly protocol decoders.
#[derive(Parser)]
#[command(name = "wasmtap", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Decode a pcap/pcapng file and report every exchange as spans and RED metrics.
    Replay(ReplayArgs),
    /// Capture live from network interfaces until SIGINT/SIGTERM.
    Run(live::RunArgs),
    /// List the decoders that would be loaded (embedded and from --plugins).
    Plugins {
        /// Directory of extra `.wasm` decoders.
        #[arg(long)]
        plugins: Option<PathBuf>,
        /// Configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Write, build and test a decoder: `new`, `build`, `test`, `inspect`.
    Plugin {
        #[command(subcommand)]
        cmd: author::PluginCmd,
    },
    /// Validate a configuration file and print the effective settings.
    CheckConfig {
        /// Configuration file.
        config: PathBuf,
    },
}

/// Console output format.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// A summary table per service and operation.
    Table,
    /// One JSON object per span, per line.
    Jsonl,
    /// Nothing on stdout (use with OTLP).
    None,
}

/// Options shared by `replay` and `run`.
#[derive(clap::Args)]
pub(crate) struct CommonArgs {
    /// Directory of extra `.wasm` decoders, watched for changes (a file overrides an embedded decoder of the same name).
    #[arg(long)]
    pub plugins: Option<PathBuf>,
    /// Configuration file (TOML).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Console output.
    #[arg(long, value_enum, default_value = "table")]
    pub format: Format,
    /// OTLP base URL (as OTEL_EXPORTER_OTLP_ENDPOINT), e.g. http://collector:4318.
    #[arg(long)]
    pub otlp_endpoint: Option<String>,
    /// OTLP protocol: grpc or http (HTTP/protobuf). Default: OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf (the OTLP default).
    #[arg(long)]
    pub otlp_protocol: Option<String>,
    /// Print pipeline counters to stderr at the end.
    #[arg(long)]
    pub stats: bool,
    /// Write the final metrics to FILE as JSON lines (one series per line), at the end.
    #[arg(long, value_name = "FILE")]
    pub metrics_out: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ReplayArgs {
    /// Capture files (pcap or pcapng) and directories of them: read in the
    /// order of their first packet, as one continuous capture (a flow that
    /// spans a file rotation stays one flow).
    #[arg(required = true, num_args = 1..)]
    files: Vec<PathBuf>,
    /// Keep reading the one directory given as a capture tool rotates files
    /// into it, until SIGINT/SIGTERM: files in first-packet order, the newest
    /// read as it grows, each closed when a newer one appears (or it has not
    /// grown for `--follow-idle-ms`).
    #[arg(long)]
    follow: bool,
    /// With --follow: a file that has not grown for this long is closed
    /// (after-read applies) even if no newer one appeared.
    #[arg(long, default_value_t = 60_000)]
    follow_idle_ms: u64,
    /// With --follow: `delete` or `move:DIR` each file once read.
    #[arg(long, value_name = "ACTION")]
    after_read: Option<String>,
    #[command(flatten)]
    common: CommonArgs,
    /// Pace: `fast` (as fast as possible) or `realtime` (frames at their capture-time spacing).
    #[arg(long, value_enum, default_value = "fast")]
    pace: Pace,
    /// Replay the file this many times, each pass shifted in time after the previous one.
    #[arg(long = "loop", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    loops: u64,
    /// Shards: flows are spread over this many threads by their 5-tuple,
    /// each with its own flow table and decoder instances, behind one
    /// reader and one telemetry stage (not with --follow).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=64))]
    shards: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Pace {
    /// As fast as possible.
    Fast,
    /// At the capture's own speed.
    Realtime,
}

/// The agent's command line: parses the arguments, runs the command, and
/// prints any error on one line.
pub fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("WASMTAP_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let res = match cli.command {
        Command::Replay(a) => replay(a),
        Command::Run(a) => live::run(a),
        Command::Plugins { plugins, config } => list_plugins(plugins.as_deref(), config.as_deref()),
        Command::CheckConfig { config } => check_config(&config),
        Command::Plugin { cmd } => author::run(cmd),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let msg = format!("{e:#}").replace('\n', " ");
            eprintln!("wasmtap: error: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: Option<&Path>) -> Result<Config> {
    match path {
        Some(p) => Config::load(p),
        None => Ok(Config::default()),
    }
}

fn check_config(path: &Path) -> Result<()> {
    let cfg = Config::load(path)?;
    println!("{}: ok", path.display());
    let f = cfg.filters.compile().map_err(|e| anyhow::anyhow!("{e}"))?;
    match f.bpf() {
        Some(b) => println!("capture filter (BPF): {b}"),
        None => println!("capture filter (BPF): none (everything)"),
    }
    println!("{cfg:#?}");
    Ok(())
}

fn list_plugins(dir: Option<&Path>, config: Option<&Path>) -> Result<()> {
    let cfg = Arc::new(load_config(config)?);
    let host = Arc::new(wasmtap_runtime::PluginHost::new(cfg.runtime())?);
    let set = plugins::Loader::new(host, cfg, dir)?.scan();
    println!(
        "{:<12} {:<10} {:<8} {:<10} {:<64} SOURCE",
        "NAME", "VERSION", "WIT", "STATE", "SHA256"
    );
    for p in &set {
        let i = p.info();
        let src = match &i.source {
            wasmtap_runtime::PluginSource::Embedded => "embedded".to_string(),
            wasmtap_runtime::PluginSource::File(f) => f.display().to_string(),
        };
        println!(
            "{:<12} {:<10} {:<8} {:<10} {:<64} {}",
            i.name,
            i.version,
            wasmtap_runtime::WIT_VERSION,
            "active",
            i.sha256,
            src
        );
    }
    Ok(())
}

/// Everything between a frame source and the outputs.
pub(crate) struct Pipeline {
    /// The packet path.
    pub shard: Shard,
    /// Where spans go.
    pub out: Outputs,
    /// The I/O runtime (export, signals, admin endpoint).
    pub rt: tokio::runtime::Runtime,
    /// OTLP settings, when exporting.
    pub otlp_cfg: Option<wasmtap_export::ExporterConfig>,
    /// Decoder-file counters.
    pub load_stats: Arc<plugins::LoadStats>,
    /// The configuration the agent started with.
    pub cfg: Arc<Config>,
    /// The Kubernetes watcher's state, when it runs.
    pub kube: Option<Arc<wasmtap_kube::KubeStatus>>,
    /// The plugin host and the plugin set shards follow.
    host: Arc<wasmtap_runtime::PluginHost>,
    registry: wasmtap_runtime::Registry,
    _watcher: Option<std::thread::JoinHandle<()>>,
}

impl Pipeline {
    /// Builds the pipeline: config, decoders (and the directory watcher),
    /// telemetry, outputs. `mode` is the live capture's (`None`: replay).
    /// `extra` adds resource attributes (agent identity, Kubernetes).
    pub fn new(
        a: &CommonArgs,
        mode: Option<live::Mode>,
        extra: Vec<wasmtap_telemetry::model::KeyValue>,
    ) -> Result<Self> {
        let live = mode.is_some();
        let cfg = load_config(a.config.as_deref())?;
        let kube_cfg = cfg.kubernetes(mode, |k| std::env::var(k).ok())?;
        let (mut local_cidrs, cluster_cidrs) = cfg.locality()?;
        // A sidecar's pod is local.
        if mode == Some(live::Mode::Sidecar)
            && let Some(ip) = std::env::var("POD_IP")
                .ok()
                .and_then(|v| v.parse::<std::net::IpAddr>().ok())
        {
            local_cidrs.push(ipnet::IpNet::from(ip));
        }
        let node_scope = kube_cfg
            .as_ref()
            .is_some_and(|k| matches!(k.scope, wasmtap_kube::Scope::Node(_)));
        let protocol = a
            .otlp_protocol
            .as_deref()
            .map(str::parse)
            .transpose()
            .map_err(|e| anyhow::anyhow!("--otlp-protocol: {e}"))?;
        let otlp_cfg =
            wasmtap_export::ExporterConfig::from_env_and(a.otlp_endpoint.clone(), protocol)?;
        let cfg = Arc::new(cfg);
        let host = Arc::new(wasmtap_runtime::PluginHost::new(cfg.runtime())?);
        let mut loader = plugins::Loader::new(host.clone(), cfg.clone(), a.plugins.as_deref())?;
        let registry = wasmtap_runtime::Registry::new(loader.scan());
        let worker = wasmtap_runtime::Worker::following(&host, registry.clone())?;
        let load_stats = loader.stats.clone();
        // A decoder dropped into the directory takes effect without a restart.
        let watcher = match a.plugins {
            Some(_) => Some(plugins::watch(loader, registry.clone())?),
            None => None,
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .thread_name("wasmtap-io")
            .build()
            .context("start the export runtime")?;
        let exporter = match &otlp_cfg {
            Some(c) => Some(wasmtap_export::Exporter::start(c.clone(), rt.handle())?),
            None => None,
        };
        let rules = cfg
            .services
            .iter()
            .map(|s| wasmtap_telemetry::services::ServiceRule::parse(&s.matches, &s.name))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!(e))?;
        let mut attrs = vec![
            wasmtap_telemetry::model::KeyValue::str("telemetry.distro.name", "wasmtap"),
            wasmtap_telemetry::model::KeyValue::str(
                "telemetry.distro.version",
                env!("CARGO_PKG_VERSION"),
            ),
        ];
        attrs.extend(extra);
        let mut services = wasmtap_telemetry::services::ServiceMap::new(rules, attrs);
        let mut kube = None;
        if let Some(k) = kube_cfg {
            tracing::info!(scope = ?k.scope, "kubernetes: watching pods, owners and services");
            let identities = wasmtap_telemetry::identity::Identities::new();
            services = services.with_identities(identities.view());
            kube = Some(wasmtap_kube::start(rt.handle(), k, identities));
        }
        if let Some(d) = cfg.dns_names() {
            services = services.with_dns_names(wasmtap_telemetry::names::DnsNames::new(d));
        }
        let report_by_server = match cfg.locality.report {
            config::Switch::On => true,
            config::Switch::Off => false,
            // Host mode knows what is local; a sidecar cannot know whether
            // the other end has a sidecar too, so it reports all it sees.
            config::Switch::Auto => {
                mode != Some(live::Mode::Sidecar)
                    && (node_scope || !cfg.locality.local_cidrs.is_empty())
            }
        };
        services = services.with_locality(wasmtap_telemetry::services::Locality {
            enabled: report_by_server,
            local: local_cidrs,
            cluster: cluster_cidrs,
        });
        let telemetry = wasmtap_telemetry::red::Telemetry::new(services, cfg.telemetry());
        let shard = Shard::new(cfg.shard_config(), worker, telemetry);
        let mut shard = shard;
        // The config's filters apply to files as to live capture.
        let filter = cfg.filters.compile().map_err(|e| anyhow::anyhow!("{e}"))?;
        shard.set_filter(Some(Arc::new(filter)));
        let out = Outputs {
            jsonl: (a.format == Format::Jsonl).then(|| std::io::BufWriter::new(std::io::stdout())),
            otlp: exporter,
            live,
            spans: 0,
            write_error: None,
        };
        Ok(Self {
            shard,
            out,
            rt,
            otlp_cfg,
            load_stats,
            cfg,
            kube,
            host,
            registry,
            _watcher: watcher,
        })
    }

    /// `n` shards for threads of their own (`--shards`), each with its own
    /// decoder instances, following the same plugin set, under the same filters.
    fn deferred_shards(&self, n: usize) -> Result<Vec<pipeline::Shard<pipeline::Deferred>>> {
        let filter = self.shard.filter().cloned();
        (0..n)
            .map(|_| {
                let worker = wasmtap_runtime::Worker::following(&self.host, self.registry.clone())?;
                let mut s = pipeline::Shard::new(
                    self.cfg.shard_config(),
                    worker,
                    pipeline::Deferred::default(),
                );
                s.set_filter(filter.clone());
                Ok(s)
            })
            .collect()
    }

    /// Flushes every output, exports the last metrics, prints the table and
    /// counters as asked. Nothing accepted is lost: spans already handed to
    /// outputs are written or exported (within the export timeout).
    /// `others`: the shards that ran on threads (`--shards`), for their counters.
    pub fn finish(
        mut self,
        a: &CommonArgs,
        now_ns: u64,
        elapsed: Duration,
        extra_counters: Vec<selftel::Counter>,
        others: &[pipeline::Shard<pipeline::Deferred>],
    ) -> Result<()> {
        let (shard, out) = (&mut self.shard, &mut self.out);
        shard.finish(now_ns, out);
        if let Some(w) = out.jsonl.as_mut() {
            w.flush().ok();
        }
        if let Some(e) = out.write_error.take()
            && e.kind() != std::io::ErrorKind::BrokenPipe
        {
            bail!("writing spans to stdout: {e}");
        }
        let snapshot = shard.handler.telemetry.final_snapshot(now_ns);
        if a.format == Format::Table {
            let mut stdout = std::io::stdout().lock();
            output::write_table(&mut stdout, &shard.handler.telemetry.summary(now_ns))?;
            output::write_edges(&mut stdout, &shard.handler.telemetry.edge_summary())?;
        }
        if let Some(path) = &a.metrics_out {
            let write = || -> std::io::Result<()> {
                let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
                wasmtap_telemetry::prom::write_jsonl(&snapshot, &mut f)?;
                f.flush()
            };
            write().with_context(|| format!("--metrics-out {}", path.display()))?;
        }
        let export_stats = match out.otlp.take() {
            Some(x) => {
                x.send_metrics_blocking(snapshot);
                Some(x.shutdown_blocking(Duration::from_secs(30)))
            }
            None => None,
        };
        let mut counters = selftel::Counters::collect(
            shard,
            &shard.handler.telemetry.stats(),
            out.spans,
            export_stats.as_ref(),
            &self.load_stats,
            elapsed,
        );
        for o in others {
            counters.add_shard(o);
        }
        counters.extend(extra_counters);
        if let Some(k) = &self.kube {
            counters.kubernetes(k);
        }
        if let Some(c) = &self.otlp_cfg {
            selftel::export(self.rt.handle(), c, &counters);
        }
        if a.stats {
            counters.print(&mut std::io::stderr())?;
        }
        if let Some(s) = &export_stats
            && (s.spans_failed > 0 || s.spans_dropped_queue_full > 0)
        {
            eprintln!(
                "wasmtap: warning: {} spans failed to export, {} dropped (queue full)",
                s.spans_failed, s.spans_dropped_queue_full
            );
        }
        Ok(())
    }
}

/// A capture file and the time of its first packet.
struct Part {
    path: PathBuf,
    first_ns: Option<u64>,
}

fn capture_files_in(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("read directory {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.'))
        })
        .collect();
    v.sort();
    Ok(v)
}

/// The first packet's time of a capture file (`None`: empty or unreadable).
fn first_ns(path: &Path) -> Option<u64> {
    let mut s = wasmtap_capture::FileSource::open(path).ok()?;
    s.next_frame().ok().flatten().map(|f| f.ts_ns)
}

/// Files and directories to one list ordered by first packet time (files
/// with no packet keep their place at the end, by name).
fn ordered_parts(args: &[PathBuf]) -> Result<Vec<Part>> {
    let mut paths = Vec::new();
    for a in args {
        if a.is_dir() {
            paths.extend(capture_files_in(a)?);
        } else {
            paths.push(a.clone());
        }
    }
    Ok(by_first_packet(paths))
}

/// Capture files ordered by their first packet's time (files with no packet
/// last, by name).
fn by_first_packet(paths: Vec<PathBuf>) -> Vec<Part> {
    let mut parts: Vec<Part> = paths
        .into_iter()
        .map(|path| Part {
            first_ns: first_ns(&path),
            path,
        })
        .collect();
    parts.sort_by(|a, b| {
        (a.first_ns.is_none(), a.first_ns, &a.path).cmp(&(
            b.first_ns.is_none(),
            b.first_ns,
            &b.path,
        ))
    });
    parts
}

/// Reads one capture file into the pipeline; returns a read error that
/// stopped it early (everything before it was decoded).
/// What replay feeds frames to: one shard, or several on threads.
trait FrameSink {
    fn frame(&mut self, link: wasmtap_decode::LinkType, ts_ns: u64, data: &[u8], out: &mut Outputs);
    fn flush(&mut self, out: &mut Outputs);
    fn frames(&self) -> u64;
}

impl FrameSink for Shard {
    fn frame(
        &mut self,
        link: wasmtap_decode::LinkType,
        ts_ns: u64,
        data: &[u8],
        out: &mut Outputs,
    ) {
        Shard::frame(self, link, ts_ns, data, out);
    }
    fn flush(&mut self, out: &mut Outputs) {
        Shard::flush(self, out);
    }
    fn frames(&self) -> u64 {
        self.frames
    }
}

impl FrameSink for pipeline::sharded::Sharded<'_> {
    fn frame(
        &mut self,
        link: wasmtap_decode::LinkType,
        ts_ns: u64,
        data: &[u8],
        out: &mut Outputs,
    ) {
        pipeline::sharded::Sharded::frame(self, link, ts_ns, data, out);
    }
    fn flush(&mut self, out: &mut Outputs) {
        pipeline::sharded::Sharded::flush(self, out);
    }
    fn frames(&self) -> u64 {
        self.main.frames
    }
}

#[allow(clippy::too_many_arguments)]
fn replay_file(
    path: &Path,
    shard: &mut impl FrameSink,
    out: &mut Outputs,
    pace: Pace,
    shift: u64,
    started: Instant,
    first_ts: &mut Option<u64>,
    last_ts: &mut u64,
    bytes_read: &mut u64,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Option<wasmtap_capture::CaptureError>> {
    let mut source = wasmtap_capture::FileSource::open(path)?;
    let dlt = source.datalink();
    let Some(link) = wasmtap_decode::LinkType::from_dlt(dlt) else {
        bail!("{}: unsupported link type {dlt}", path.display());
    };
    let mut last_flush = Instant::now();
    loop {
        match source.next_frame() {
            Ok(Some(f)) => {
                let ts = f.ts_ns.saturating_add(shift);
                let t0 = *first_ts.get_or_insert(f.ts_ns);
                if pace == Pace::Realtime {
                    let due = Duration::from_nanos(ts.saturating_sub(t0));
                    let now = started.elapsed();
                    if due > now {
                        std::thread::sleep(due - now);
                    }
                    if last_flush.elapsed() > Duration::from_millis(100) {
                        shard.flush(out);
                        last_flush = Instant::now();
                    }
                }
                *last_ts = (*last_ts).max(ts);
                *bytes_read += f.data.len() as u64 + 16;
                shard.frame(link, ts, f.data, out);
                if let Some(pb) = progress
                    && shard.frames().is_multiple_of(4096)
                {
                    pb.set_position(*bytes_read);
                }
            }
            Ok(None) => return Ok(None),
            Err(e) => return Ok(Some(e)),
        }
    }
}

fn replay(a: ReplayArgs) -> Result<()> {
    if a.follow {
        anyhow::ensure!(a.shards == 1, "--follow reads with one shard (--shards 1)");
        return follow(a);
    }
    let parts = ordered_parts(&a.files)?;
    anyhow::ensure!(!parts.is_empty(), "no capture file to read");
    let mut p = Pipeline::new(&a.common, None, Vec::new())?;
    let started = Instant::now();
    let mut run = Run::default();
    let mut others = Vec::new();
    if a.shards > 1 {
        let shards = p.deferred_shards(a.shards as usize)?;
        let want = pipeline::SpanSink::wants_spans(&p.out);
        let cfg = pipeline::sharded::ShardedConfig {
            batch_spans: p.cfg.telemetry.batch_spans,
            ..Default::default()
        };
        let (shard, out) = (&mut p.shard, &mut p.out);
        let mut sharded = pipeline::sharded::Sharded::new(shard, shards, cfg, want)
            .context("start the shard threads")?;
        let r = run.parts(&a, &parts, &mut sharded, out, started);
        sharded.finish(run.last_ts, out);
        others = std::mem::take(&mut sharded.finished);
        r?;
    } else {
        let (shard, out) = (&mut p.shard, &mut p.out);
        run.parts(&a, &parts, shard, out, started)?;
    }
    let elapsed = started.elapsed();
    p.finish(&a.common, run.last_ts, elapsed, Vec::new(), &others)?;
    for w in run.warnings {
        eprintln!("wasmtap: warning: {w}");
    }
    Ok(())
}

/// Where a replay is.
#[derive(Default)]
struct Run {
    last_ts: u64,
    warnings: Vec<String>,
}

impl Run {
    /// Every pass over every part, into `feed`.
    fn parts(
        &mut self,
        a: &ReplayArgs,
        parts: &[Part],
        feed: &mut impl FrameSink,
        out: &mut Outputs,
        started: Instant,
    ) -> Result<()> {
        let progress = match parts {
            [one] => progress_bar(&one.path),
            _ => None,
        };
        let mut bytes_read = 0u64;
        let mut first_ts: Option<u64> = None;
        let mut shift = 0u64;
        for round in 0..a.loops {
            if round > 0 {
                // The next pass starts one second after the previous one ended.
                shift = (self.last_ts + 1_000_000_000).saturating_sub(first_ts.unwrap_or(0));
            }
            for part in parts {
                match replay_file(
                    &part.path,
                    feed,
                    out,
                    a.pace,
                    shift,
                    started,
                    &mut first_ts,
                    &mut self.last_ts,
                    &mut bytes_read,
                    progress.as_ref(),
                ) {
                    Ok(None) => {}
                    // Damage: what came before it was decoded; the next file goes on.
                    Ok(Some(e)) => self.warnings.push(e.to_string()),
                    Err(e) if parts.len() == 1 => return Err(e),
                    Err(e) => self.warnings.push(format!("{e:#}")),
                }
            }
        }
        if let Some(pb) = progress {
            pb.finish_and_clear();
        }
        Ok(())
    }
}

/// `replay --follow DIR`: files are read as a capture tool rotates them in.
fn follow(a: ReplayArgs) -> Result<()> {
    let [dir] = a.files.as_slice() else {
        bail!("--follow takes one directory");
    };
    anyhow::ensure!(dir.is_dir(), "--follow {}: not a directory", dir.display());
    let after: Option<Option<PathBuf>> = match a.after_read.as_deref() {
        None => None,
        Some("delete") => Some(None),
        Some(m) => match m.strip_prefix("move:") {
            Some(d) if Path::new(d).is_dir() => Some(Some(PathBuf::from(d))),
            _ => bail!("--after-read {m:?}: expected delete or move:DIR (an existing directory)"),
        },
    };
    // Files wait on disk: export applies back-pressure, as in any replay.
    let mut p = Pipeline::new(&a.common, None, Vec::new())?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    {
        let stop = stop.clone();
        p.rt.spawn(async move {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            } else {
                let _ = tokio::signal::ctrl_c().await;
            }
            stop.store(true, std::sync::atomic::Ordering::SeqCst);
        });
    }
    let started = Instant::now();
    let idle = Duration::from_millis(a.follow_idle_ms.max(1));
    let mut last_ts = 0u64;
    // Files read (or skipped), with their size and first packet's time then:
    // one that grows afterwards is reported, not read twice; one rewritten
    // under the same name (a ring of files, tcpdump `-W`) is read again.
    let mut closed: std::collections::BTreeMap<PathBuf, (u64, Option<u64>)> = Default::default();
    let mut newest_read: Option<u64> = None;
    let mut current: Option<Following> = None;
    let mut last_check = Instant::now();
    tracing::info!(dir = %dir.display(), "following");
    loop {
        let stopping = stop.load(std::sync::atomic::Ordering::SeqCst);
        let Some(cur) = current.as_mut() else {
            let listing = capture_files_in(dir)?;
            // Bounded: only files still there are remembered.
            closed.retain(|d, _| listing.contains(d));
            closed.retain(|path, (size, first)| {
                let now = file_size(path);
                if now == *size {
                    return true;
                }
                if first_ns(path) != *first {
                    tracing::info!(file = %path.display(), "file rewritten: read again");
                    return false;
                }
                if now > *size {
                    tracing::warn!(file = %path.display(), read = *size, now, "file grew after it was read: the bytes after it are not decoded (raise --follow-idle-ms)");
                }
                *size = now;
                true
            });
            let unread: Vec<PathBuf> = listing
                .into_iter()
                .filter(|p| !closed.contains_key(p))
                .collect();
            let next = by_first_packet(unread);
            match next.into_iter().next() {
                Some(part) => {
                    if let (Some(f), Some(n)) = (part.first_ns, newest_read)
                        && f < n
                    {
                        tracing::warn!(file = %part.path.display(), "file out of order (starts before one already read): skipped");
                        closed.insert(part.path.clone(), (file_size(&part.path), part.first_ns));
                        continue;
                    }
                    current = Some(Following::start(part)?);
                }
                None if stopping => break,
                None => std::thread::sleep(Duration::from_millis(100)),
            }
            continue;
        };
        // Is the file being read complete? A newer one appeared (the capture
        // tool rotated), it has not grown for `idle`, or the agent stops.
        if last_check.elapsed() >= Duration::from_millis(100) && !cur.closing() {
            last_check = Instant::now();
            let size = file_size(&cur.part.path);
            if size != cur.size {
                (cur.size, cur.grew) = (size, Instant::now());
            }
            let newer = capture_files_in(dir)?.into_iter().any(|p| {
                p != cur.part.path
                    && !closed.contains_key(&p)
                    && match (first_ns(&p), cur.part.first_ns) {
                        (Some(f), Some(c)) => f >= c,
                        _ => true,
                    }
            });
            if stopping || newer || cur.grew.elapsed() >= idle {
                cur.close();
            }
        }
        match cur.rx.recv_timeout(Duration::from_millis(100)) {
            Ok(Feed::Begin(dlt)) => {
                cur.link = wasmtap_decode::LinkType::from_dlt(dlt);
                if cur.link.is_none() {
                    tracing::warn!(file = %cur.part.path.display(), "unsupported link type {dlt}: skipped");
                    cur.close();
                }
            }
            Ok(Feed::Frame(ts, data)) => {
                if let Some(link) = cur.link {
                    last_ts = last_ts.max(ts);
                    p.shard.frame(link, ts, &data, &mut p.out);
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => p.shard.flush(&mut p.out),
            Ok(Feed::End(err)) => {
                let done = current.take().expect("reading");
                let (path, first) = done.finish();
                match err {
                    Some(e) => tracing::warn!("{e}"),
                    None => tracing::info!(file = %path.display(), "read"),
                }
                let first = first.or_else(|| first_ns(&path));
                newest_read = newest_read.max(first);
                p.shard.flush(&mut p.out);
                closed.insert(path.clone(), (file_size(&path), first));
                after_read(&path, after.as_ref());
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let done = current.take().expect("reading");
                let (path, first) = done.finish();
                closed.insert(path.clone(), (file_size(&path), first));
            }
        }
    }
    let elapsed = started.elapsed();
    p.finish(&a.common, last_ts, elapsed, Vec::new(), &[])
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

/// `--after-read`: `None` keeps the file, `Some(None)` deletes it,
/// `Some(Some(dir))` moves it there.
fn after_read(path: &Path, after: Option<&Option<PathBuf>>) {
    match after {
        None => {}
        Some(None) => {
            if let Err(e) = std::fs::remove_file(path) {
                tracing::warn!(file = %path.display(), "cannot delete: {e}");
            }
        }
        Some(Some(to)) => {
            if let Some(name) = path.file_name()
                && let Err(e) = std::fs::rename(path, to.join(name))
            {
                tracing::warn!(file = %path.display(), "cannot move: {e}");
            }
        }
    }
}

/// What the reader of a followed file hands over.
enum Feed {
    /// The file's link type.
    Begin(i32),
    /// A frame: capture time and bytes.
    Frame(u64, Vec<u8>),
    /// The file ended (with the error that stopped it early, if any).
    End(Option<String>),
}

/// One file of a followed directory, read on its own thread as it grows.
struct Following {
    part: Part,
    rx: std::sync::mpsc::Receiver<Feed>,
    complete: Arc<std::sync::atomic::AtomicBool>,
    link: Option<wasmtap_decode::LinkType>,
    size: u64,
    grew: Instant,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Following {
    fn start(part: Part) -> Result<Self> {
        let complete = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Bounded: the reader waits while the pipeline is behind.
        let (tx, rx) = std::sync::mpsc::sync_channel(4096);
        let (path, flag) = (part.path.clone(), complete.clone());
        let thread = std::thread::Builder::new()
            .name("follow-read".into())
            .spawn(move || {
                let poll = Duration::from_millis(50);
                let mut src = match wasmtap_capture::FileSource::open_growing(&path, flag, poll) {
                    Ok(s) => s,
                    Err(e) => {
                        let _ = tx.send(Feed::End(Some(format!("{e}: skipped"))));
                        return;
                    }
                };
                if tx.send(Feed::Begin(src.datalink())).is_err() {
                    return;
                }
                loop {
                    let feed = match src.next_frame() {
                        Ok(Some(f)) => Feed::Frame(f.ts_ns, f.data.to_vec()),
                        Ok(None) => Feed::End(None),
                        Err(e) => Feed::End(Some(e.to_string())),
                    };
                    let end = matches!(feed, Feed::End(_));
                    if tx.send(feed).is_err() || end {
                        return;
                    }
                }
            })?;
        let size = file_size(&part.path);
        Ok(Self {
            part,
            rx,
            complete,
            link: None,
            size,
            grew: Instant::now(),
            thread: Some(thread),
        })
    }

    /// Reads what the file holds now, then ends.
    fn close(&self) {
        self.complete
            .store(true, std::sync::atomic::Ordering::Release);
    }

    fn closing(&self) -> bool {
        self.complete.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Stops the reader; returns the file's path and first packet's time.
    fn finish(mut self) -> (PathBuf, Option<u64>) {
        self.close();
        // The reader ends once it sees the file's end (or the channel gone).
        drop(self.rx);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        (self.part.path, self.part.first_ns)
    }
}

fn progress_bar(file: &Path) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let len = std::fs::metadata(file).ok()?.len();
    if len < 8 << 20 {
        return None;
    }
    let pb = indicatif::ProgressBar::new(len);
    pb.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
        .ok()?,
    );
    Some(pb)
}
