//! The whole packet path in-process, without the agent binary: bundled
//! captures through a shard with the real HTTP/1 decoder (a Wasm component),
//! checked against what peer tools count in them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtap_pipeline::filter::FilterSpec;
use wasmtap_pipeline::{Shard, ShardConfig, SpanSink};
use wasmtap_telemetry::model::{AttrValue, SpanRecord};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The HTTP/1 decoder's component, built for wasm32-wasip2 the way the
/// agent's build script builds it (same flags, same target directory) when
/// it is not there yet.
fn http1_component() -> Vec<u8> {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let root = root();
    let target = root.join("target/wasm-plugins");
    let wasm = target.join("wasm32-wasip2/release/wasmtap_plugin_http1.wasm");
    BUILD.call_once(|| {
        if wasm.is_file() {
            return;
        }
        let st = std::process::Command::new(env!("CARGO"))
            .current_dir(&root)
            .args(["rustc", "--release", "--lib", "--crate-type", "cdylib"])
            .args(["--target", "wasm32-wasip2", "-p", "wasmtap-plugin-http1"])
            .arg("--target-dir")
            .arg(&target)
            .env("CARGO_PROFILE_RELEASE_LTO", "true")
            .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
            .env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "true")
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("RUSTFLAGS")
            .status()
            .unwrap();
        assert!(st.success(), "building the HTTP/1 decoder failed");
    });
    std::fs::read(&wasm).unwrap()
}

fn config() -> ShardConfig {
    ShardConfig {
        flows: Default::default(),
        batch: 64,
        max_pending: 64,
        response_timeout_ns: 30_000_000_000,
        tunnels: Default::default(),
    }
}

fn telemetry() -> wasmtap_telemetry::red::Telemetry {
    let services = wasmtap_telemetry::services::ServiceMap::new(Vec::new(), Vec::new());
    wasmtap_telemetry::red::Telemetry::new(services, Default::default())
}

/// A worker with the HTTP/1 decoder, compiled once for every test.
fn worker() -> wasmtap_runtime::Worker {
    type Loaded = (wasmtap_runtime::PluginHost, Arc<wasmtap_runtime::Plugin>);
    static LOADED: std::sync::OnceLock<Loaded> = std::sync::OnceLock::new();
    let (host, plugin) = LOADED.get_or_init(|| {
        let host =
            wasmtap_runtime::PluginHost::new(wasmtap_runtime::RuntimeConfig::default()).unwrap();
        let plugin = host
            .load(
                "http1",
                &http1_component(),
                wasmtap_runtime::PluginSource::Embedded,
                "{}",
            )
            .unwrap();
        (host, Arc::new(plugin))
    });
    wasmtap_runtime::Worker::new(host, std::slice::from_ref(plugin)).unwrap()
}

fn shard(filter: Option<FilterSpec>) -> Shard {
    let mut s = Shard::new(config(), worker(), telemetry());
    if let Some(f) = filter {
        s.set_filter(Some(Arc::new(f.compile().unwrap())));
    }
    s
}

#[derive(Default)]
struct Collect(Vec<SpanRecord>);

impl SpanSink for Collect {
    fn spans(&mut self, batch: Vec<SpanRecord>) {
        self.0.extend(batch);
    }
}

/// Replays `file` through a fresh shard: its spans and the shard.
fn replay(file: &str, filter: Option<FilterSpec>) -> (Vec<SpanRecord>, Shard) {
    let mut s = shard(filter);
    let mut out = Collect::default();
    let last = frames(&root().join("tests/pcaps").join(file), |link, ts, data| {
        s.frame(link, ts, data, &mut out)
    });
    s.finish(last, &mut out);
    (out.0, s)
}

/// Every frame of `file` to `f`; the last frame's time.
fn frames(file: &Path, mut f: impl FnMut(wasmtap_decode::LinkType, u64, &[u8])) -> u64 {
    let mut src = wasmtap_capture::FileSource::open(file).unwrap();
    let link = wasmtap_decode::LinkType::from_dlt(src.datalink()).unwrap();
    let mut last = 0;
    while let Some(fr) = src.next_frame().unwrap() {
        last = fr.ts_ns;
        f(link, fr.ts_ns, fr.data);
    }
    last
}

fn attr(s: &SpanRecord, key: &str) -> String {
    match s
        .attributes
        .iter()
        .find(|kv| &*kv.key == key)
        .map(|kv| &kv.value)
    {
        Some(AttrValue::Str(v)) => v.to_string(),
        Some(AttrValue::Int(v)) => v.to_string(),
        Some(other) => format!("{other:?}"),
        None => "-".into(),
    }
}

fn method_status(spans: &[SpanRecord]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in spans {
        let k = format!(
            "{} {}",
            attr(s, "http.request.method"),
            attr(s, "http.response.status_code")
        );
        *m.entry(k).or_default() += 1;
    }
    m
}

#[test]
fn captures_decode_as_the_peer_tools_count_them() {
    // (file, exchanges as "METHOD STATUS"): Zeek's, Suricata's and
    // DeepFlow's baselines (tests/pcaps/README.md names the sources).
    let cases: &[(&str, &[(&str, usize)])] = &[
        ("http/zeek__http-pipelined-requests.pcap", &[("GET 200", 5)]),
        ("http/zeek__http-100-continue.pcap", &[("POST 200", 1)]),
        (
            "http/zeek__http-cooper-grill-dvwa.pcapng",
            &[("GET 200", 3)],
        ),
        ("http/suricata__http-gap-simple.pcap", &[("GET 200", 3)]),
        ("http/suricata__http-chunked.pcap", &[("HEAD -", 1)]),
        ("http/deepflow__httpv1.pcap", &[("POST 200", 1)]),
        ("http/suricata__decode-sll2-01.pcap", &[("GET -", 1)]),
    ];
    let mut failures = Vec::new();
    for (file, want) in cases {
        let (spans, _) = replay(file, None);
        let want: BTreeMap<String, usize> = want.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        let got = method_status(&spans);
        if got != want {
            failures.push(format!("{file}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_replay_is_deterministic_to_the_span_id() {
    let file = "http/zeek__http-pipelined-requests.pcap";
    let ids = |spans: &[SpanRecord]| -> Vec<_> {
        spans
            .iter()
            .map(|s| {
                (
                    s.trace_id,
                    s.span_id,
                    s.start_unix_nano,
                    s.end_unix_nano,
                    s.name.clone(),
                )
            })
            .collect()
    };
    let (a, _) = replay(file, None);
    let (b, _) = replay(file, None);
    assert_eq!(a.len(), 5);
    assert_eq!(ids(&a), ids(&b));
    // Pipelined requests share a start time; their ids still differ.
    let distinct: std::collections::HashSet<_> = a.iter().map(|s| s.span_id).collect();
    assert_eq!(distinct.len(), 5);
}

#[test]
fn filters_drop_packets_and_exchanges_and_count_them() {
    let file = "http/zeek__http-pipelined-requests.pcap";
    let (all, s) = replay(file, None);
    assert_eq!(all.len(), 5);
    assert_eq!(s.handler.packets_filtered, 0);
    let port = attr(&all[0], "server.port");

    // A port that is not the server's: every packet goes.
    let spec: FilterSpec = serde_json::from_str(r#"{"ports_include": ["1"]}"#).unwrap();
    let (spans, s) = replay(file, Some(spec));
    assert!(spans.is_empty());
    assert_eq!(s.flow_stats().flows_opened, 0);
    assert!(s.handler.packets_filtered > 0);

    // The server's port, but an operation filter that rejects GET.
    let spec: FilterSpec = serde_json::from_str(&format!(
        r#"{{"ports_include": ["{port}"], "l7_exclude": ["http:GET"]}}"#
    ))
    .unwrap();
    let (spans, s) = replay(file, Some(spec));
    assert!(spans.is_empty());
    assert_eq!(s.handler.filtered, 5);
}

#[test]
fn metrics_agree_with_the_spans() {
    let (spans, mut s) = replay("http/zeek__http-cooper-grill-dvwa.pcapng", None);
    assert_eq!(spans.len(), 3);
    let snap = s.handler.telemetry.final_snapshot(u64::MAX / 2);
    let summary = s.handler.telemetry.summary(u64::MAX / 2);
    let requests: u64 = summary.iter().map(|r| r.requests).sum();
    assert_eq!(requests, 3, "{summary:?}");
    assert!(!snap.points.is_empty());
}

/// A capture through `n` shards on threads: its spans and final metrics.
fn replay_sharded(file: &Path, n: usize) -> (Vec<SpanRecord>, Vec<String>) {
    let shards = (0..n)
        .map(|_| Shard::new(config(), worker(), wasmtap_pipeline::Deferred::default()))
        .collect();
    let mut main = Shard::new(config(), worker(), telemetry());
    let mut s = wasmtap_pipeline::sharded::Sharded::new(
        &mut main,
        shards,
        wasmtap_pipeline::sharded::ShardedConfig {
            batch_packets: 4,
            queue_batches: 2,
            batch_spans: 8,
        },
        true,
    )
    .unwrap();
    let mut out = Collect::default();
    let last = frames(file, |link, ts, data| s.frame(link, ts, data, &mut out));
    s.finish(last, &mut out);
    assert_eq!(s.finished.len(), n, "every shard handed back");
    assert_eq!(
        s.main.flow_stats().flows_opened,
        0,
        "the reader tracks no flow"
    );
    let opened: u64 = s.finished.iter().map(|x| x.flow_stats().flows_opened).sum();
    assert!(opened > 0 || out.0.is_empty());
    let metrics = points(&mut s.main.handler.telemetry);
    (out.0, metrics)
}

/// A telemetry stage's final metrics, one sorted line per point.
fn points(t: &mut wasmtap_telemetry::red::Telemetry) -> Vec<String> {
    let snap = t.final_snapshot(u64::MAX / 2);
    // The consecutive-failures gauge counts in the order reports arrive,
    // which across shards is not the capture's: left out.
    let mut v: Vec<String> = snap
        .points
        .iter()
        .filter(|p| !p.name.contains("consecutive_failures"))
        .map(|p| {
            let mut attrs: Vec<String> = p
                .attributes
                .iter()
                .map(|kv| format!("{}={:?}", kv.key, kv.value))
                .collect();
            attrs.sort();
            // Sums of floating-point observations depend on the order they
            // were added in (shards report in any order): compared to 1e-9.
            let data = match &p.data {
                wasmtap_telemetry::model::MetricData::Histogram {
                    count,
                    sum,
                    min,
                    max,
                    bucket_counts,
                    ..
                } => format!("hist {count} {sum:.9} {min} {max} {bucket_counts:?}"),
                wasmtap_telemetry::model::MetricData::Gauge { value } => {
                    format!("gauge {value:.9}")
                }
                other => format!("{other:?}"),
            };
            format!(
                "{} {} {} {data}",
                p.resource.service_name(),
                p.name,
                attrs.join(","),
            )
        })
        .collect();
    v.sort();
    v
}

/// What identifies a span's content, sorted (shards finish in any order).
fn span_set(spans: &[SpanRecord]) -> Vec<String> {
    let mut v: Vec<String> = spans
        .iter()
        .map(|s| {
            let mut attrs: Vec<String> = s
                .attributes
                .iter()
                .map(|kv| format!("{}={:?}", kv.key, kv.value))
                .collect();
            attrs.sort();
            format!(
                "{:?} {:?} {} {} {} {:?} {}",
                s.trace_id,
                s.span_id,
                s.name,
                s.start_unix_nano,
                s.end_unix_nano,
                s.status,
                attrs.join(",")
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn several_shards_give_the_same_spans_ids_included_and_the_same_metrics_as_one() {
    let dir = root().join("tests/pcaps/http");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap" || e == "pcapng"))
        .collect();
    files.sort();
    assert!(files.len() >= 10);
    let mut spans_seen = 0;
    for f in &files {
        let name = f.file_name().unwrap().to_str().unwrap();
        let (one, one_metrics) = replay_sharded(f, 1);
        // One shard on a thread is the single-threaded shard exactly.
        let (inline, mut s) = replay(&format!("http/{name}"), None);
        assert_eq!(
            span_set(&one),
            span_set(&inline),
            "{name}: threaded vs inline"
        );
        assert_eq!(
            one_metrics,
            points(&mut s.handler.telemetry),
            "{name}: metrics"
        );
        for n in [2, 3] {
            let (many, many_metrics) = replay_sharded(f, n);
            assert_eq!(span_set(&many), span_set(&one), "{name}: {n} shards, spans");
            let differ: Vec<_> = many_metrics
                .iter()
                .filter(|m| !one_metrics.contains(m))
                .chain(one_metrics.iter().filter(|m| !many_metrics.contains(m)))
                .collect();
            assert!(
                differ.is_empty(),
                "{name}: {n} shards, metrics: {differ:#?}"
            );
        }
        spans_seen += one.len();
    }
    assert!(spans_seen >= 20, "{spans_seen}");
}
