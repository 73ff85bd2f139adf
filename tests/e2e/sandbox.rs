//! A decoder cannot hurt the agent: hostile plugins (tests/plugins/hostile),
//! built here against the SDK, are contained and counted, and every other
//! flow's exchanges come out exactly as without them.
//!
//! The capture (tests/pcaps/mixed) holds two HTTP flows, port 80 (decoded by
//! the embedded http1) and port 5000 (claimed by the hostile decoder), and
//! flows of MySQL, PostgreSQL, MongoDB, Memcached and Redis: every exchange
//! not on port 5000 must come out exactly as without the hostile plugin.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

use crate::{attr, bin, build_plugin_dir, root};

fn capture() -> PathBuf {
    root().join("tests/pcaps/mixed/sandbox-mix.pcap")
}

fn hostile_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| build_plugin_dir("wasmtap-test-hostile", "hostile"))
}

struct Run {
    spans: Vec<Value>,
    counters: BTreeMap<String, u64>,
    stderr: String,
}

fn run_mode(mode: &str) -> Run {
    run_mode_with(mode, "")
}

/// `extra` is prepended to the config (top-level tables such as `[plugins]`).
fn run_mode_with(mode: &str, extra: &str) -> Run {
    run_config(
        mode,
        &format!("{extra}[plugins.config.hostile]\nmode = \"{mode}\"\n"),
    )
}

/// A replay of the capture with the hostile decoder under config `text`.
fn run_config(mode: &str, text: &str) -> Run {
    let cfg = std::env::temp_dir().join(format!(
        "wasmtap-hostile-{mode}-{}.toml",
        std::process::id()
    ));
    std::fs::write(&cfg, text).unwrap();
    let out = Command::new(bin())
        .args([
            "replay",
            capture().to_str().unwrap(),
            "--format",
            "jsonl",
            "--stats",
        ])
        .args([
            "--plugins",
            hostile_dir().to_str().unwrap(),
            "--config",
            cfg.to_str().unwrap(),
        ])
        .env("WASMTAP_LOG", if mode == "print" { "info" } else { "warn" })
        .output()
        .unwrap();
    std::fs::remove_file(&cfg).ok();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        out.status.success(),
        "mode {mode}: the agent must survive: {stderr}"
    );
    // The agent itself never panics (a plugin's panic is logged as "plugin panicked").
    assert!(!stderr.contains("thread '"), "{stderr}");
    let spans = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let counters = stderr
        .lines()
        .filter_map(|l| l.rsplit_once(' '))
        .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
        .collect();
    Run {
        spans,
        counters,
        stderr,
    }
}

fn port(span: &Value) -> String {
    attr(span, "server.port")
}

fn counter(r: &Run, name: &str) -> u64 {
    r.counters
        .get(&format!("wasmtap.agent.plugin.{name}{{plugin=hostile}}"))
        .copied()
        .unwrap_or(0)
}

/// The spans of every flow but port 5000, without any hostile plugin loaded.
fn baseline() -> &'static Vec<Value> {
    static B: OnceLock<Vec<Value>> = OnceLock::new();
    B.get_or_init(|| {
        let spans: Vec<Value> = crate::replay_spans(&capture(), &[])
            .into_iter()
            .filter(|s| port(s) != "5000")
            .collect();
        let protocols: std::collections::BTreeSet<String> = spans
            .iter()
            .map(|s| attr(s, "network.protocol.name"))
            .collect();
        assert_eq!(
            protocols.len(),
            6,
            "six protocols besides port 5000: {protocols:?}"
        );
        spans
    })
}

fn other_flow_untouched(r: &Run) {
    // Compared as sorted multisets without ids: when spans are written
    // depends on output batching, and ids on how many spans came before
    // (a deterministic sequence); what the spans say must not change.
    let normal = |spans: &mut dyn Iterator<Item = &Value>| {
        let mut v: Vec<String> = spans
            .filter(|s| port(s) != "5000")
            .map(|s| {
                let mut s = s.clone();
                if let Some(o) = s.as_object_mut() {
                    o.remove("trace_id");
                    o.remove("span_id");
                }
                s.to_string()
            })
            .collect();
        v.sort();
        v
    };
    let others = normal(&mut r.spans.iter());
    let want = normal(&mut baseline().iter());
    assert_eq!(others.len(), want.len(), "{:?}", r.stderr);
    assert_eq!(others, want, "every other flow's exchanges must not notice");
    for decoder in [
        "http1",
        "mysql",
        "pgsql",
        "mongodb",
        "memcached",
        "redis",
        "dns",
    ] {
        assert_eq!(
            r.counters
                .get(&format!("wasmtap.agent.plugin.traps{{plugin={decoder}}}"))
                .copied(),
            Some(0),
            "{decoder}"
        );
    }
}

#[test]
fn correct_mode_decodes_like_http1() {
    let r = run_mode("correct");
    other_flow_untouched(&r);
    assert_eq!(r.spans.iter().filter(|s| port(s) == "5000").count(), 1);
}

#[test]
fn infinite_loop_hits_the_cpu_deadline() {
    let r = run_mode("loop");
    other_flow_untouched(&r);
    assert!(counter(&r, "deadline_hits") >= 1, "{}", r.stderr);
    assert_eq!(counter(&r, "traps"), 0);
    // The failed flow still counts at L4 (its request is reported unanswered or dropped), never decoded.
    assert!(
        r.spans
            .iter()
            .all(|s| port(s) != "5000" || s["status"]["code"] == "error")
    );
    assert!(r.stderr.contains("failure=\"deadline\""), "{}", r.stderr);
}

#[test]
fn memory_bomb_hits_the_memory_limit() {
    // On a loaded CI machine growing 64 MiB can take longer than the default
    // 50 ms CPU deadline; this test is about the memory limit, so the deadline
    // is lifted out of the way (the loop test covers the deadline).
    let r = run_mode_with("memory", "[plugins]\ncall_deadline_ms = 30000\n");
    other_flow_untouched(&r);
    assert!(counter(&r, "limit_hits") >= 1, "{}", r.stderr);
    let hw = counter(&r, "memory_high_water_bytes");
    assert!(hw <= 64 << 20, "memory bounded by the default 64 MiB: {hw}");
    assert!(hw >= 32 << 20, "the bomb did grow: {hw}");
}

#[test]
fn trap_on_third_call_is_contained() {
    let r = run_mode("trap3");
    other_flow_untouched(&r);
    assert_eq!(counter(&r, "traps"), 1, "{}", r.stderr);
    assert_eq!(counter(&r, "calls"), 3);
    assert!(
        r.counters
            .get("wasmtap.agent.sessions.ended{reason=trap}")
            .copied()
            .unwrap_or(0)
            >= 1
    );
    // Requests the decoder had reported before it failed are cut, counted as
    // such: never a `no_response` error of the service.
    let blamed: Vec<&Value> = r
        .spans
        .iter()
        .filter(|s| port(s) == "5000" && crate::attr(s, "error.type") == "no_response")
        .collect();
    assert!(blamed.is_empty(), "{blamed:?}");
    // The SDK's panic hook reports the panic message through the host's log.
    assert!(
        r.stderr.contains("hostile decoder: third call"),
        "{}",
        r.stderr
    );
    // The failure names the call, the flow and the stream offset.
    let line = r
        .stderr
        .lines()
        .find(|l| l.contains("plugin call failed"))
        .unwrap_or_else(|| panic!("{}", r.stderr));
    assert!(line.contains("call=\"feed\""), "{line}");
    assert!(line.contains(":5000") && line.contains(" -> "), "{line}");
    assert!(line.contains("offset="), "{line}");
}

#[test]
fn requests_waiting_when_the_decoder_traps_are_cut_not_blamed_on_the_service() {
    // The decoder reports the request, then traps on the first response bytes.
    let r = run_mode("trap-on-response");
    other_flow_untouched(&r);
    let blamed: Vec<&Value> = r.spans.iter().filter(|s| port(s) == "5000").collect();
    assert!(blamed.is_empty(), "no span for the failed flow: {blamed:?}");
    assert_eq!(counter(&r, "traps"), 1, "{}", r.stderr);
    assert!(
        r.counters
            .get("wasmtap.agent.exchanges.cut_by_decoder")
            .copied()
            .unwrap_or(0)
            >= 1,
        "{}",
        r.stderr
    );
    assert_eq!(
        r.counters
            .get("wasmtap.agent.exchanges{kind=unanswered}")
            .copied(),
        Some(0),
        "{}",
        r.stderr
    );
}

#[test]
fn output_flood_is_capped() {
    let r = run_mode("flood");
    other_flow_untouched(&r);
    let calls = counter(&r, "calls");
    let messages = counter(&r, "messages");
    assert!(counter(&r, "capped") > 0);
    assert!(
        messages <= calls * 1024,
        "at most max_messages_per_call per call: {messages} / {calls}"
    );
}

#[test]
fn huge_attribute_is_cut() {
    let r = run_mode("huge-attr");
    other_flow_untouched(&r);
    assert!(counter(&r, "capped") > 0);
    let longest = r
        .spans
        .iter()
        .map(|s| attr(s, "hostile.blob").len())
        .max()
        .unwrap_or(0);
    assert!(
        longest > 0 && longest <= 4096,
        "cut to max_attribute_value_len: {longest}"
    );
}

#[test]
fn slow_but_correct_decoder_is_left_alone() {
    let r = run_mode("slow");
    other_flow_untouched(&r);
    assert_eq!(counter(&r, "deadline_hits"), 0);
    let reference = run_mode("correct");
    let slow: Vec<_> = r.spans.iter().filter(|s| port(s) == "5000").collect();
    let fast: Vec<_> = reference
        .spans
        .iter()
        .filter(|s| port(s) == "5000")
        .collect();
    assert_eq!(slow, fast, "slow decoding gives the same exchange");
    assert!(counter(&r, "time_ns") > counter(&reference, "time_ns"));
}

#[test]
fn a_decoder_that_keeps_failing_is_quarantined_with_backoff() {
    // Real nginx traffic, one connection per request, all claimed by a decoder
    // that traps on every call: five failures within 10 s quarantine it (1 s,
    // then 2 s...); meanwhile its flows go to a decoder whose probe accepts
    // them (here http1), else to none (counted as refused).
    let tmp = std::env::temp_dir().join(format!("wasmtap-quarantine-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).unwrap();
    let pcap = tmp.join("nginx.pcap");
    let st = Command::new(root().join("scripts/capture-nginx.sh"))
        .arg(&pcap)
        .args(["1", "1"])
        .env("WRK_ARGS", "-H Connection:close")
        .status()
        .unwrap();
    assert!(st.success());
    let port = std::fs::read_to_string(tmp.join("nginx.pcap.port")).unwrap();
    let port = port.trim().trim_start_matches("port ");
    let dir = tmp.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(hostile_dir().join("hostile.wasm"), dir.join("hostile.wasm")).unwrap();
    std::fs::write(
        dir.join("hostile.toml"),
        format!("ports = [{port}]\n[config]\nmode = \"trap-always\"\n"),
    )
    .unwrap();
    let out = Command::new(bin())
        .args([
            "replay",
            pcap.to_str().unwrap(),
            "--format",
            "none",
            "--stats",
            "--loop",
            "3",
        ])
        .args(["--plugins", dir.to_str().unwrap()])
        .env("WASMTAP_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    let get = |name: &str| -> u64 {
        stderr
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!("wasmtap.agent.plugin.{name}{{plugin=hostile}} "))
            })
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let (traps, quarantines) = (get("traps"), get("quarantines"));
    assert!(
        quarantines >= 2,
        "quarantined, then again after the backoff: {quarantines}\n{stderr}"
    );
    let fallback: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("wasmtap.agent.plugin.sessions{plugin=http1} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    assert!(
        fallback > 10,
        "flows decoded by http1 while quarantined: {fallback}"
    );
    // Backoff bounds the failures: far fewer traps than flows.
    assert!(traps < 50, "traps {traps}");
    assert!(stderr.contains("plugin quarantined"), "{stderr}");
    std::fs::remove_dir_all(&tmp).ok();
}

#[test]
fn plugin_stdout_and_stderr_reach_the_log_rate_limited() {
    let r = run_mode("print");
    other_flow_untouched(&r);
    let lines = r
        .stderr
        .lines()
        .filter(|l| l.contains("hostile stdout line"))
        .count();
    assert!(lines > 0, "stdout reaches the agent's log: {}", r.stderr);
    assert!(
        r.stderr
            .lines()
            .any(|l| l.contains("hostile stderr line") && l.contains("plugin=hostile"))
    );
    // 100 records a second per instance; the calls of this capture take well under 2 s.
    assert!(lines <= 200, "rate-limited: {lines}");
    assert!(counter(&r, "log_dropped") > 0);
}

#[test]
fn escape_sequences_from_a_decoder_never_reach_an_output() {
    let r = run_mode("escape");
    other_flow_untouched(&r);
    let mine: Vec<&Value> = r.spans.iter().filter(|s| port(s) == "5000").collect();
    assert!(!mine.is_empty());
    let bad = |s: &str| {
        s.chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\t' | '\r'))
    };
    for s in &mine {
        let name = s["name"].as_str().unwrap();
        assert!(name.contains('\u{fffd}') && !bad(name), "{name:?}");
        let code = s["status"]["message"].as_str().unwrap_or("");
        assert!(!bad(code), "{code:?}");
        let blob = attr(s, "hostile.blob");
        assert_eq!(blob, "title \u{fffd}]0;owned\u{fffd} and\nlines\tkept");
    }
    assert!(counter(&r, "sanitized") >= mine.len() as u64 * 2);
    // Nothing raw on the agent's own log either.
    assert!(!r.stderr.contains('\u{1b}'), "{}", r.stderr);
}

#[test]
fn timestamps_outside_the_packets_are_clamped_and_counted() {
    let r = run_mode("time-travel");
    other_flow_untouched(&r);
    let reference = run_mode("correct");
    let times = |r: &Run| -> Vec<(u64, u64)> {
        r.spans
            .iter()
            .filter(|s| port(s) == "5000")
            .map(|s| {
                let n = |k: &str| s[k].as_u64().unwrap();
                (n("start_unix_nano"), n("end_unix_nano"))
            })
            .collect()
    };
    let (got, want) = (times(&r), times(&reference));
    assert_eq!(got.len(), want.len());
    // Inside the capture: the first and last packets of the file bound them.
    let lo = want.iter().map(|t| t.0).min().unwrap();
    let hi = want.iter().map(|t| t.1).max().unwrap();
    for (s, e) in &got {
        assert!(
            *s >= lo - 60_000_000_000 && *e <= hi + 60_000_000_000 && s <= e,
            "{s} {e}"
        );
    }
    assert!(counter(&r, "clamped_timestamps") > 0);
}

#[test]
fn a_decoder_consuming_more_than_offered_is_ended_as_a_contract_violation() {
    let r = run_mode("overconsume");
    other_flow_untouched(&r);
    assert!(counter(&r, "contract_violations") > 0);
    // Its flows' waiting requests are the decoder's fault, not the service's.
    let mine: Vec<&Value> = r.spans.iter().filter(|s| port(s) == "5000").collect();
    assert!(
        mine.iter().all(|s| s["status"]["code"] != "error"),
        "{mine:?}"
    );
}

#[test]
fn a_decoder_reading_clocks_and_random_stays_deterministic() {
    let (a, b) = (run_mode("clock"), run_mode("clock"));
    other_flow_untouched(&a);
    let blobs = |r: &Run| -> Vec<String> {
        r.spans
            .iter()
            .filter(|s| port(s) == "5000")
            .map(|s| attr(s, "hostile.blob"))
            .collect()
    };
    let (x, y) = (blobs(&a), blobs(&b));
    assert!(!x.is_empty());
    assert_eq!(x, y, "two replays, the same clock and random readings");
    // The clock the decoder read is the capture's, not the machine's.
    for (s, blob) in a.spans.iter().filter(|s| port(s) == "5000").zip(&x) {
        let read: u64 = blob.split(' ').next().unwrap().parse().unwrap();
        let start = s["start_unix_nano"].as_u64().unwrap();
        let end = s["end_unix_nano"].as_u64().unwrap();
        assert!(
            read >= start && read <= end + 1_000_000_000,
            "{read} not in {start}..{end}"
        );
    }
}

#[test]
fn an_overloaded_live_agent_sheds_whole_flows_and_recovers() {
    use std::process::Stdio;
    // nginx on a free port, decoded by the slow decoder (about 2 ms a call):
    // a few hundred new connections a second are more than it can follow.
    let nginx = crate::Nginx::start("overload");
    let (dir, port) = (nginx.dir.clone(), nginx.port);
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        format!(
            "[plugins.config.hostile]\nmode = \"slow\"\n[plugins.ports]\nhostile = [{port}]\n\
             [overload]\nshed_after_ms = 300\nresume_below_ms = 100\n"
        ),
    )
    .unwrap();
    let admin = crate::free_port();
    let agent = crate::LiveAgent::spawn(
        Command::new(bin())
            .args(["run", "--interface", "lo", "--bpf"])
            .arg(format!("tcp port {port}"))
            .args(["--plugins", hostile_dir().to_str().unwrap()])
            .args(["--config", cfg.to_str().unwrap(), "--format", "jsonl"])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")]),
    );
    let wrk = Command::new("wrk")
        .args(["-t2", "-c8", "-d4s", "-H", "Connection: close"])
        .arg(format!("http://127.0.0.1:{port}/load"))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(wrk.success());
    // Load gone: the agent catches up and takes new flows again.
    let status = || crate::status(admin);
    let mut st = status();
    for _ in 0..300 {
        st = status();
        if st["overload"]["shedding"] == false && st["overload"]["episodes"].as_u64() > Some(0) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(st["overload"]["shedding"], false, "{st}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    for _ in 0..5 {
        let ok = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-m", "5"])
            .arg(format!("http://127.0.0.1:{port}/after"))
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let spans: Vec<Value> = stopped
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let o = &st["overload"];
    assert!(o["flows_shed"].as_u64().unwrap() > 0, "{st}");
    assert!(o["episodes"].as_u64().unwrap() >= 1, "{st}");
    // What it decoded is whole: every span answered, nothing cut by the capture.
    let load: Vec<&Value> = spans
        .iter()
        .filter(|s| attr(s, "url.path") == "/load")
        .collect();
    assert!(!load.is_empty());
    for s in &load {
        assert_eq!(attr(s, "http.response.status_code"), "404", "{s}");
        assert!(
            s["attributes"].get("wasmtap.response_missing").is_none(),
            "{s}"
        );
    }
    // Recovered: every request after the overload is decoded.
    let after = spans
        .iter()
        .filter(|s| attr(s, "url.path") == "/after")
        .count();
    assert_eq!(after, 5, "{}", stopped.stderr);
    eprintln!(
        "overload: {} spans decoded under load, {} flows shed, worst lag {} ms",
        load.len(),
        o["flows_shed"],
        o["worst_lag_ms"]
    );
}

#[test]
fn a_decoder_reaching_for_files_sockets_and_the_environment_gets_nothing() {
    // A listener the decoder is told to connect to: it must never be reached.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let listening = listener.local_addr().unwrap().port();
    let r = run_config(
        "reach",
        &format!("[plugins.config.hostile]\nmode = \"reach\"\nport = {listening}\n"),
    );
    other_flow_untouched(&r);
    let blobs: Vec<String> = r
        .spans
        .iter()
        .filter(|s| port(s) == "5000")
        .map(|s| attr(s, "hostile.blob"))
        .collect();
    assert!(!blobs.is_empty());
    for b in &blobs {
        // Every try reported, none got through.
        for t in ["fs=no", "dir=no", "env=none", "tcp=no", "udp=no", "dns=no"] {
            assert!(b.contains(t), "{t} missing in {b}");
        }
        assert!(!b.contains("=ok"), "{b}");
    }
    assert!(
        matches!(listener.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the decoder connected to the listener"
    );
}
