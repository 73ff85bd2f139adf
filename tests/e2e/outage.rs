//! Faults outside the agent: the collector goes away while traffic flows
//! (killed, then restarted on the same port), or accepts connections and
//! never answers. Capture goes on, memory stays bounded, what could not be
//! exported is counted in `/status`, and export resumes by itself: every
//! span produced after the collector is back arrives.
//!
//! The outage lasts `WASMTAP_OUTAGE_SECS` (10 in the suite; the README's
//! figure is from a 60-second run).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::otlp::Collector;
use crate::{LiveAgent, Nginx, attr, bin, free_port, root, status};

/// Requests `/phase<N>` every 50 ms until stopped; counts answers per phase.
struct Traffic {
    phase: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
    done: Option<std::thread::JoinHandle<[u32; 4]>>,
}

impl Traffic {
    fn start(port: u16) -> Traffic {
        let phase = Arc::new(AtomicU32::new(1));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (phase.clone(), stop.clone());
        let done = std::thread::spawn(move || {
            let mut answered = [0u32; 4];
            while !s.load(Ordering::Relaxed) {
                let n = p.load(Ordering::Relaxed);
                let ok = Command::new("curl")
                    .args(["-s", "-o", "/dev/null", "-m", "2"])
                    .arg(format!("http://127.0.0.1:{port}/phase{n}"))
                    .stdout(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
                if ok {
                    answered[n as usize] += 1;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            answered
        });
        Traffic {
            phase,
            stop,
            done: Some(done),
        }
    }

    fn stop(mut self) -> [u32; 4] {
        self.stop.store(true, Ordering::Relaxed);
        self.done.take().unwrap().join().unwrap()
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn agent(nginx: u16, endpoint: &str, admin: u16) -> LiveAgent {
    LiveAgent::spawn(
        Command::new(bin())
            .args(["run", "--interface", "lo", "--bpf"])
            .arg(format!("tcp port {nginx}"))
            .args(["--otlp-endpoint", endpoint, "--otlp-protocol", "grpc"])
            .args(["--format", "jsonl", "--admin-listen"])
            .arg(format!("127.0.0.1:{admin}"))
            // Short enough for the suite; what matters is that it is bounded.
            .env("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
    )
}

fn phase_spans(stdout: &str, n: u32) -> Vec<String> {
    stdout
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|s| attr(s, "url.path") == format!("/phase{n}"))
        .map(|s| s["span_id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_collector_outage_is_counted_and_export_resumes_by_itself() {
    let outage: u64 = std::env::var("WASMTAP_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let nginx = Nginx::start("down");
    let c1 = Collector::start("outage1");
    let (grpc, http) = (c1.grpc, c1.http);
    let admin = free_port();
    let a = agent(nginx.port, &format!("http://127.0.0.1:{grpc}"), admin);
    let pid = a.id();
    let traffic = Traffic::start(nginx.port);
    let mut peak = 0;
    let mut sample = |secs: u64| {
        let end = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < end {
            peak = peak.max(rss_kib(pid));
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    sample(3);
    // The collector dies while traffic flows.
    drop(c1);
    traffic.phase.store(2, Ordering::Relaxed);
    sample(outage);
    let during = status(admin);
    // It comes back on the same port.
    let c2 = Collector::start_on("outage2", grpc, http);
    traffic.phase.store(3, Ordering::Relaxed);
    sample(6);
    let answered = traffic.stop();
    std::thread::sleep(Duration::from_secs(1));
    let after = status(admin);
    let stopped = a.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);

    // Capture went on through the outage: every answered request is a span.
    for n in 1..=3 {
        assert_eq!(
            phase_spans(&stopped.stdout, n).len() as u32,
            answered[n as usize],
            "phase {n}"
        );
    }
    // Everything produced after the collector came back arrived.
    let after_ids = phase_spans(&stopped.stdout, 3);
    assert!(!after_ids.is_empty());
    let text = c2.wait_for(|t| after_ids.iter().all(|id| t.contains(id.as_str())));
    let missing = after_ids
        .iter()
        .filter(|id| !text.contains(id.as_str()))
        .count();
    assert_eq!(missing, 0, "{missing} spans after recovery never arrived");
    // The outage shows: failed attempts retried, and whatever was given up counted.
    let e = &during["export"];
    assert!(e["retries"].as_u64().unwrap_or(0) > 0, "{during}");
    let a = &after["export"];
    assert!(
        a["spans_exported"].as_u64().unwrap() > e["spans_exported"].as_u64().unwrap(),
        "{after}"
    );
    // Memory stayed bounded (the queue's bound, not the outage's length).
    assert!(peak > 0 && peak < 400 * 1024, "peak RSS {peak} KiB");
    eprintln!(
        "outage: {outage} s, {} requests during it, export {a}, peak RSS {} MiB",
        answered[2],
        peak / 1024
    );
}

#[test]
fn a_collector_that_never_answers_does_not_stall_capture_or_shutdown() {
    // Accepts connections, reads nothing, answers nothing.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let h = held.clone();
    std::thread::spawn(move || {
        for c in hole.incoming().flatten() {
            h.lock().unwrap().push(c);
        }
    });
    let nginx = Nginx::start("hole");
    let admin = free_port();
    let a = agent(nginx.port, &format!("http://127.0.0.1:{port}"), admin);
    let traffic = Traffic::start(nginx.port);
    std::thread::sleep(Duration::from_secs(8));
    let answered = traffic.stop();
    std::thread::sleep(Duration::from_secs(1));
    let st = status(admin);
    let t0 = Instant::now();
    let stopped = a.stop();
    let shutdown = t0.elapsed();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert_eq!(phase_spans(&stopped.stdout, 1).len() as u32, answered[1]);
    let e = &st["export"];
    assert!(e["requests"].as_u64().unwrap() > 0, "{st}");
    assert_eq!(e["spans_exported"].as_u64(), Some(0), "{st}");
    // Shutdown waits for the exporter a bounded time, then gives up (counted).
    assert!(
        shutdown < Duration::from_secs(45),
        "shutdown took {shutdown:?}"
    );
    assert!(!held.lock().unwrap().is_empty());
}

#[test]
fn a_replay_to_a_collector_that_never_answers_ends_with_a_clear_message() {
    // Replay applies back-pressure (it waits for room in the export queue),
    // but not forever: past WASMTAP_OTLP_MAX_BLOCK_MS it says so and goes on,
    // dropping (counted) what does not fit.
    let hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hole.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in hole.incoming().flatten() {
            held.push(c);
        }
    });
    let cfg = std::env::temp_dir().join(format!("wasmtap-replay-hole-{}.toml", std::process::id()));
    // One span per batch: more batches than the queue holds.
    std::fs::write(&cfg, "[telemetry]\nbatch_spans = 1\n").unwrap();
    let t0 = Instant::now();
    let out = Command::new(bin())
        .args(["replay"])
        .arg(root().join("tests/pcaps/http2/nginx-h2load.pcap"))
        .args([
            "--format",
            "none",
            "--stats",
            "--config",
            cfg.to_str().unwrap(),
        ])
        .args(["--otlp-protocol", "grpc", "--otlp-endpoint"])
        .arg(format!("http://127.0.0.1:{port}"))
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "200")
        .env("WASMTAP_OTLP_MAX_BLOCK_MS", "1000")
        .env("WASMTAP_LOG", "warn")
        .output()
        .unwrap();
    let took = t0.elapsed();
    std::fs::remove_file(&cfg).ok();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("has taken nothing for 1s"), "{stderr}");
    let dropped: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("wasmtap.agent.export.spans{outcome=dropped_queue_full} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(dropped > 0, "{stderr}");
    assert!(took < Duration::from_secs(60), "replay took {took:?}");
}
