//! Names learned from DNS (`[names] dns`): clients resolve servers through a
//! real dnsmasq, then call them; the agent names each server by the name its
//! clients resolved, live and in replay, and falls back to the address for a
//! server no answer named.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::{LiveAgent, attr, bin, replay_spans};

/// Requests per `service.name`, for spans whose server port is `port`.
fn by_service(spans: &[Value], port: u64) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for s in spans {
        if attr(s, "server.port") == port.to_string() {
            let name = s["resource"]["service.name"]
                .as_str()
                .unwrap_or("")
                .to_string();
            *m.entry(name).or_default() += 1;
        }
    }
    m
}

#[test]
fn servers_are_named_by_the_dns_names_clients_resolved_live_and_in_replay() {
    let pid = std::process::id();
    let tmp = std::env::temp_dir();
    let pcap = tmp.join(format!("wasmtap-names-{pid}.pcap"));
    let go = tmp.join(format!("wasmtap-names-{pid}.go"));
    let cfg = tmp.join(format!("wasmtap-names-{pid}.toml"));
    std::fs::write(&cfg, "[names]\ndns = true\n").unwrap();
    let mut script = Command::new(crate::root().join("scripts/capture-dns-names.sh"))
        .arg(&pcap)
        .arg("6")
        .env("WAIT_FILE", &go)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(script.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let ports: Vec<u64> = line
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    let (dns, http) = (ports[0], ports[1]);

    let agent = LiveAgent::spawn(Command::new(bin()).args([
        "run",
        "--interface",
        "lo",
        "--bpf",
        &format!("port {dns} or port {http}"),
        "--config",
        cfg.to_str().unwrap(),
        "--format",
        "jsonl",
        "--admin-listen",
        "",
        "--stats",
    ]));
    std::fs::write(&go, "").unwrap();
    assert!(
        script.wait().unwrap().success(),
        "capture-dns-names.sh failed"
    );
    std::fs::remove_file(&go).ok();
    let expect_path = format!("{}.expect.json", pcap.display());
    let expect: Value =
        serde_json::from_str(&std::fs::read_to_string(&expect_path).unwrap()).unwrap();
    std::fs::remove_file(&expect_path).ok();
    let n = |ip: &str| expect[format!("{ip}:{http}")].as_u64().unwrap();
    let want: BTreeMap<String, u64> = [
        ("web.wasmtap.test".to_string(), n("127.0.0.3")),
        ("api.wasmtap.test".to_string(), n("127.0.0.4")),
        (format!("127.0.0.5:{http}"), n("127.0.0.5")),
    ]
    .into_iter()
    .collect();

    // Live: stopping drains the capture, so every exchange is out.
    let stopped = agent.stop();
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let live: Vec<Value> = stopped
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(by_service(&live, http), want, "live");
    assert!(
        stopped.stderr.contains("wasmtap.agent.names.dns_learned 2"),
        "{}",
        stopped.stderr
    );

    // Replay of the same traffic: the same names.
    let spans = replay_spans(&pcap, &["--config", cfg.to_str().unwrap()]);
    assert_eq!(by_service(&spans, http), want, "replay");
    // The DNS server itself is named by its address.
    assert!(
        spans
            .iter()
            .any(|s| s["resource"]["service.name"] == format!("127.0.0.1:{dns}")),
    );
    // Off by default: every server by its address.
    let plain = replay_spans(&pcap, &[]);
    let names = by_service(&plain, http);
    assert!(names.keys().all(|k| k.starts_with("127.0.0.")), "{names:?}");
    std::fs::remove_file(&pcap).ok();
    std::fs::remove_file(&cfg).ok();
}
