//! Planted secrets never leave the agent. scripts/capture-secrets.sh sends
//! real traffic carrying distinctive secrets to nginx (a bearer token, a
//! Proxy-Authorization value, cookies, query-string values, a form body),
//! to redis-server (AUTH by `redis-cli -a`, explicit AUTH, a wrong password,
//! CONFIG SET requirepass, AUTH user pass, HELLO AUTH, a SET value) and to
//! PostgreSQL (a cleartext login password, passwords and other values in SQL
//! literals of every quoting style, a literal the server echoes in its error,
//! an extended-protocol Parse literal and Bind parameter). The capture is
//! replayed and every output is searched for every secret: the JSON-lines
//! spans, the table, the metrics file, the logs at debug level with the
//! pipeline counters, and the spans and metrics as received by a real
//! OpenTelemetry collector.
//!
//! The secrets must be in the capture (the test reads its bytes), and each
//! output must show the exchanges that carried them, so the test cannot pass
//! because nothing was decoded or nothing was sent.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

use crate::otlp::Collector;
use crate::{attr, bin, root};

/// A temporary directory, removed when dropped (also when a check panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let d = std::env::temp_dir().join(format!("wasmtap-secrets-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        Self(d)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        std::fs::remove_dir_all(&self.0).ok();
    }
}

/// Runs scripts/capture-secrets.sh into `pcap`; returns the planted secrets (name, value).
fn capture(pcap: &Path) -> Vec<(String, String)> {
    let out = Command::new(root().join("scripts/capture-secrets.sh"))
        .arg(pcap)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "capture-secrets.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = String::from_utf8(out.stdout).unwrap();
    let secrets: Vec<(String, String)> = report
        .lines()
        .filter_map(|l| l.strip_prefix("secret "))
        .map(|l| {
            let (name, value) = l.split_once(' ').unwrap();
            (name.to_string(), value.trim().to_string())
        })
        .collect();
    assert!(secrets.len() >= 20, "too few secrets: {report}");
    secrets
}

/// Runs `wasmtap` with `args` and the logs at debug level.
fn replay_debug(args: &[&str]) -> Output {
    let out = Command::new(bin())
        .args(args)
        .env("WASMTAP_LOG", "debug")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "wasmtap {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn parse_spans(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Operation names (span names) per `network.protocol.name`.
fn operations(spans: &[Value]) -> BTreeMap<String, BTreeSet<String>> {
    let mut m: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in spans {
        m.entry(attr(s, "network.protocol.name"))
            .or_default()
            .insert(s["name"].as_str().unwrap_or("").to_string());
    }
    m
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Every occurrence of each secret in each output, with the text around it.
fn leaks(outputs: &[(&str, &str)], secrets: &[(String, String)]) -> Vec<String> {
    let mut found = Vec::new();
    for (output, text) in outputs {
        for (name, value) in secrets {
            for (at, _) in text.match_indices(value.as_str()) {
                let mut from = at.saturating_sub(120);
                while !text.is_char_boundary(from) {
                    from -= 1;
                }
                let mut to = (at + value.len() + 120).min(text.len());
                while !text.is_char_boundary(to) {
                    to += 1;
                }
                found.push(format!(
                    "secret {name} ({value}) in {output}: ...{}...",
                    &text[from..to]
                ));
            }
        }
    }
    found
}

#[test]
fn planted_secrets_never_reach_any_output() {
    let tmp = TempDir::new();
    let pcap = tmp.path("secrets.pcap");
    let secrets = capture(&pcap);
    let f = pcap.to_str().unwrap();

    // The secrets are on the wire: a leak would be seen.
    let bytes = std::fs::read(&pcap).unwrap();
    let absent: Vec<&str> = secrets
        .iter()
        .filter(|(_, v)| !contains(&bytes, v.as_bytes()))
        .map(|(n, _)| n.as_str())
        .collect();
    assert!(absent.is_empty(), "not in the capture: {absent:?}");

    // JSON lines, metrics file, debug logs with the counters, OTLP/HTTP to rotel.
    let collector = Collector::start("secrets");
    let endpoint = format!("http://127.0.0.1:{}", collector.http);
    let metrics = tmp.path("metrics.jsonl");
    let out = replay_debug(&[
        "replay",
        f,
        "--format",
        "jsonl",
        "--metrics-out",
        metrics.to_str().unwrap(),
        "--stats",
        "--otlp-endpoint",
        &endpoint,
        "--otlp-protocol",
        "http",
    ]);
    let jsonl = String::from_utf8(out.stdout).unwrap();
    let logs = String::from_utf8_lossy(&out.stderr).into_owned();
    let spans = parse_spans(&jsonl);
    let metrics = std::fs::read_to_string(&metrics).unwrap();

    // Every exchange that carried a secret was decoded.
    let ops = operations(&spans);
    let expected: &[(&str, &[&str])] = &[
        ("http", &["GET /", "GET /missing", "GET /fail", "POST /"]),
        ("redis", &["AUTH", "SET", "GET", "CONFIG SET", "HELLO"]),
        (
            "postgresql",
            &["STARTUP", "CREATE", "ALTER", "INSERT", "SELECT"],
        ),
    ];
    for (proto, names) in expected {
        let got = ops.get(*proto).cloned().unwrap_or_default();
        for name in *names {
            assert!(got.contains(*name), "no {proto} {name} span: {ops:?}");
        }
    }
    let count = |proto: &str, name: &str| {
        spans
            .iter()
            .filter(|s| attr(s, "network.protocol.name") == proto && s["name"] == name)
            .count()
    };
    // redis-cli -a, AUTH wrong, AUTH right, AUTH user pass, redis-cli -a again.
    assert_eq!(count("redis", "AUTH"), 5, "{jsonl}");
    // Three logins with a cleartext password.
    assert_eq!(count("postgresql", "STARTUP"), 3, "{jsonl}");
    // The statement whose literal the server echoed failed with 22P02.
    assert!(
        spans
            .iter()
            .any(|s| attr(s, "db.response.status_code") == "22P02"),
        "{jsonl}"
    );
    // The query strings were seen (and masked).
    assert!(
        spans
            .iter()
            .filter(|s| attr(s, "url.query").contains("token=?"))
            .count()
            >= 4,
        "{jsonl}"
    );
    assert!(
        metrics.lines().filter(|l| !l.trim().is_empty()).count() > 10,
        "metrics file: {metrics}"
    );
    assert!(logs.contains(" DEBUG "), "logs not at debug level: {logs}");
    assert!(logs.contains("wasmtap.agent.spans"), "no --stats: {logs}");

    // Every span reached the collector (by span id), and the agent's metrics.
    let ids: Vec<String> = spans
        .iter()
        .map(|s| s["span_id"].as_str().unwrap().to_string())
        .collect();
    let received = collector.wait_for(|t| {
        ids.iter().all(|id| t.contains(id.as_str())) && t.contains("wasmtap.agent.frames")
    });
    let missing = ids
        .iter()
        .filter(|id| !received.contains(id.as_str()))
        .count();
    assert_eq!(missing, 0, "spans that never reached the collector");
    assert!(
        received.contains("db.query.text"),
        "the collector shows no attributes"
    );

    // The default table, logs at debug level too.
    let out = replay_debug(&["replay", f]);
    let table = String::from_utf8(out.stdout).unwrap();
    let table_logs = String::from_utf8_lossy(&out.stderr).into_owned();
    for word in ["http", "redis", "postgresql", "AUTH", "CONFIG SET", "ALTER"] {
        assert!(table.contains(word), "table lacks {word}: {table}");
    }

    // With `raw_query_text` the Redis decoder reports command arguments as
    // they are, except those of AUTH, HELLO, MIGRATE, ACL and CONFIG: the SET
    // value shows (the configuration took effect), no password does.
    let cfg = tmp.path("raw.toml");
    std::fs::write(&cfg, "[plugins.config.redis]\nraw_query_text = true\n").unwrap();
    let out = replay_debug(&[
        "replay",
        f,
        "--format",
        "jsonl",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    let raw = String::from_utf8(out.stdout).unwrap();
    let raw_logs = String::from_utf8_lossy(&out.stderr).into_owned();
    let redis: Vec<String> = parse_spans(&raw)
        .iter()
        .filter(|s| attr(s, "network.protocol.name") == "redis")
        .map(|s| attr(s, "db.query.text"))
        .collect();
    let value = &secrets.iter().find(|(n, _)| n == "redis_value").unwrap().1;
    let set = format!("SET wasmtap:k {value}");
    for want in [
        set.as_str(),
        "AUTH ?",
        "AUTH ? ?",
        "CONFIG SET ? ?",
        "HELLO ? ? ? ?",
    ] {
        assert!(redis.iter().any(|t| t == want), "no {want:?}: {redis:?}");
    }
    let passwords: Vec<(String, String)> = secrets
        .iter()
        .filter(|(n, _)| n != "redis_value")
        .cloned()
        .collect();

    let mut found = leaks(
        &[
            ("the JSON-lines spans (stdout)", jsonl.as_str()),
            ("the debug logs and --stats (stderr)", logs.as_str()),
            ("the metrics file", metrics.as_str()),
            ("the OTLP collector's log", received.as_str()),
            ("the table (stdout)", table.as_str()),
            ("the table run's debug logs (stderr)", table_logs.as_str()),
        ],
        &secrets,
    );
    found.extend(leaks(
        &[
            ("the raw_query_text spans (stdout)", raw.as_str()),
            (
                "the raw_query_text run's debug logs (stderr)",
                raw_logs.as_str(),
            ),
        ],
        &passwords,
    ));
    assert!(found.is_empty(), "leaked:\n{}", found.join("\n"));
}
