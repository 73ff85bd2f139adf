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

fn shard(filter: Option<FilterSpec>) -> Shard {
    let host = wasmtap_runtime::PluginHost::new(wasmtap_runtime::RuntimeConfig::default()).unwrap();
    let plugin = host
        .load(
            "http1",
            &http1_component(),
            wasmtap_runtime::PluginSource::Embedded,
            "{}",
        )
        .unwrap();
    let worker = wasmtap_runtime::Worker::new(&host, &[Arc::new(plugin)]).unwrap();
    let services = wasmtap_telemetry::services::ServiceMap::new(Vec::new(), Vec::new());
    let telemetry = wasmtap_telemetry::red::Telemetry::new(services, Default::default());
    let mut s = Shard::new(
        ShardConfig {
            flows: Default::default(),
            batch: 64,
            max_pending: 64,
            response_timeout_ns: 30_000_000_000,
            tunnels: Default::default(),
        },
        worker,
        telemetry,
    );
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
    let path = root().join("tests/pcaps").join(file);
    let mut src = wasmtap_capture::FileSource::open(&path).unwrap();
    let link = wasmtap_decode::LinkType::from_dlt(src.datalink()).unwrap();
    let mut last = 0;
    while let Some(f) = src.next_frame().unwrap() {
        last = f.ts_ns;
        s.frame(link, f.ts_ns, f.data, &mut out);
    }
    s.finish(last, &mut out);
    (out.0, s)
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
