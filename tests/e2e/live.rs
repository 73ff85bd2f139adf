//! Live capture on loopback: Debian's nginx driven by wrk while `wasmtap run`
//! captures `lo`; after SIGTERM every completed exchange has been written.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::{LiveAgent, Nginx, bin};

#[test]
fn live_loopback_spans_cover_every_wrk_request_and_sigterm_flushes() {
    let nginx = Nginx::start("live-nginx");
    let agent = LiveAgent::spawn(Command::new(bin()).args([
        "run",
        "--interface",
        "lo",
        "--bpf",
        &format!("tcp port {}", nginx.port),
        "--format",
        "jsonl",
        "--stats",
        "--duration",
        "60",
    ]));

    // A paced client (1 ms between requests per connection): a debug build keeps up.
    let lua = std::env::temp_dir().join(format!("wasmtap-live-{}.lua", std::process::id()));
    std::fs::write(&lua, "function delay()\n  return 1\nend\n").unwrap();
    let conns = 2;
    let wrk = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{conns}"),
            "-d2s",
            "-s",
            lua.to_str().unwrap(),
        ])
        .arg(format!("http://127.0.0.1:{}/", nginx.port))
        .output()
        .unwrap();
    assert!(wrk.status.success());
    let report = String::from_utf8(wrk.stdout).unwrap();
    let requests: usize = report
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("wrk report: {report}"));
    assert!(requests > 500, "{report}");

    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    let stopped = agent.stop();
    let (spans, stderr) = (stopped.stdout, stopped.stderr);
    assert!(stopped.status.success(), "{stderr}");
    assert!(
        t.elapsed() < Duration::from_secs(20),
        "graceful shutdown took {:?}",
        t.elapsed()
    );
    std::fs::remove_file(&lua).ok();

    let n = spans.lines().count();
    // Every response wrk counted is a span; at most one request per connection
    // was still in flight when wrk stopped.
    assert!(
        n >= requests && n <= requests + conns,
        "spans {n}, wrk requests {requests}\n{stderr}"
    );
    assert!(
        spans
            .lines()
            .all(|l| l.contains("\"http.response.status_code\":200") || l.contains("no response"))
    );
    assert!(
        stderr.contains("wasmtap.agent.capture.kernel_dropped{interface=lo} 0"),
        "{stderr}"
    );
}

/// The agent's own admin endpoint, on the interface it captures, is not
/// reported as an observed service: its packets are dropped and counted.
#[test]
fn the_agents_own_endpoint_is_not_observed() {
    let admin = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let agent = LiveAgent::spawn(Command::new(bin()).args([
        "run",
        "--interface",
        "lo",
        "--bpf",
        &format!("tcp port {admin}"),
        "--format",
        "jsonl",
        "--stats",
        "--admin-listen",
        &format!("127.0.0.1:{admin}"),
    ]));
    let url = format!("http://127.0.0.1:{admin}/status");
    let mut answered = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered < 5 && Instant::now() < deadline {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", &url])
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout) == "200" {
            answered += 1;
        } else {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert_eq!(answered, 5, "the admin endpoint answers");
    let s = agent.stop();
    assert!(s.status.success(), "{}", s.stderr);
    assert_eq!(s.stdout.lines().count(), 0, "no span: {}", s.stdout);
    let dropped: u64 = s
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("wasmtap.agent.packets.own_dropped "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        dropped >= 5 * 4,
        "own packets dropped: {dropped}\n{}",
        s.stderr
    );
}

#[test]
fn a_short_soak_holds_steady_and_accounts_for_every_request() {
    // scripts/soak.sh for one minute: three protocols, a decoder reloaded
    // and the filters changed at 30 s, memory, descriptors and threads
    // sampled; the README's figures are from a 30-minute run.
    let out = std::process::Command::new(crate::root().join("scripts/soak.sh"))
        .arg("1")
        .env("WASMTAP_BIN", crate::bin())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("soak: ok"),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_live_agent_keeps_only_cap_net_raw_and_still_opens_new_interfaces() {
    use std::process::Command;
    let tag = std::process::id() % 100_000;
    let (a, b) = (format!("wtcp{tag}a"), format!("wtcp{tag}b"));
    let ip = |args: &[&str]| {
        let _ = Command::new("ip").args(args).status();
    };
    struct Down(Vec<String>);
    impl Drop for Down {
        fn drop(&mut self) {
            for n in &self.0 {
                let _ = Command::new("ip").args(["link", "del", n]).status();
            }
        }
    }
    let _down = Down(vec![a.clone(), b.clone()]);
    let pair = |n: &str| {
        let peer = format!("{n}p");
        ip(&["link", "add", n, "type", "veth", "peer", "name", &peer]);
        ip(&["link", "set", n, "up"]);
        ip(&["link", "set", &peer, "up"]);
    };
    pair(&a);
    let admin = crate::free_port();
    let agent = crate::LiveAgent::spawn(
        Command::new(crate::bin())
            .args([
                "run",
                "--interface",
                &format!("^wtcp{tag}"),
                "--format",
                "none",
            ])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")]),
    );
    // Every thread: CAP_NET_RAW (bit 13) and nothing else, bounding set included.
    let tasks = std::fs::read_dir(format!("/proc/{}/task", agent.id())).unwrap();
    let mut threads = 0;
    for t in tasks {
        let status = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
        for set in ["CapEff:", "CapPrm:", "CapBnd:", "CapInh:", "CapAmb:"] {
            let v = status
                .lines()
                .find(|l| l.starts_with(set))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap();
            let want = if matches!(set, "CapInh:" | "CapAmb:") {
                "0000000000000000"
            } else {
                "0000000000002000"
            };
            assert_eq!(v, want, "{set}");
        }
        threads += 1;
    }
    assert!(threads >= 2);
    // An interface that appears later is still opened (rescans every 5 s).
    pair(&b);
    let mut seen = false;
    for _ in 0..150 {
        let out = Command::new("curl")
            .args(["-s", "-m", "2"])
            .arg(format!("http://127.0.0.1:{admin}/status"))
            .output()
            .unwrap();
        if String::from_utf8_lossy(&out.stdout).contains(&format!("\"{b}\"")) {
            seen = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let stopped = agent.stop();
    assert!(
        seen,
        "{b} never opened after the capabilities were dropped:\n{}",
        stopped.stderr
    );
    assert!(stopped.status.success(), "{}", stopped.stderr);
}

/// The admin endpoint is bounded: connections beyond `[admin]
/// max_connections` are closed at once, a connection that sends no request
/// head within `header_timeout_ms` is closed, both counted in `/status`, and
/// the endpoint serves again once they are gone.
#[test]
fn the_admin_endpoint_bounds_idle_connections() {
    use std::io::Read;
    use std::net::TcpStream;
    let dir = std::env::temp_dir().join(format!("wasmtap-admin-bounds-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("agent.toml");
    std::fs::write(
        &cfg,
        "[admin]\nmax_connections = 2\nheader_timeout_ms = 500\n",
    )
    .unwrap();
    let admin = crate::free_port();
    let agent = crate::LiveAgent::spawn(
        std::process::Command::new(crate::bin())
            .args([
                "run",
                "--interface",
                "lo",
                "--bpf",
                "tcp port 9",
                "--format",
                "none",
            ])
            .args(["--config", cfg.to_str().unwrap()])
            .args(["--admin-listen", &format!("127.0.0.1:{admin}")]),
    );
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        crate::status(admin)["admin"].is_object()
    });
    assert!(up, "admin endpoint never served /status");
    // Two idle connections take both slots; a third is closed at once.
    let idle: Vec<TcpStream> = (0..2)
        .map(|_| TcpStream::connect(("127.0.0.1", admin)).unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(100));
    let mut third = TcpStream::connect(("127.0.0.1", admin)).unwrap();
    third
        .set_read_timeout(Some(std::time::Duration::from_secs(2)))
        .unwrap();
    let mut buf = [0u8; 16];
    let started = Instant::now();
    let r = third.read(&mut buf);
    // At once, not after the head timeout (500 ms) as a served one would be.
    assert!(
        matches!(r, Ok(0)) && started.elapsed() < Duration::from_millis(400),
        "the third connection was served: {r:?} after {:?}",
        started.elapsed()
    );
    // The idle ones are closed after the head timeout.
    for mut c in idle {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = Instant::now();
        let r = c.read(&mut buf);
        assert!(
            started.elapsed() < Duration::from_secs(4),
            "an idle connection was kept: {r:?}"
        );
    }
    // Serving again, with both counted.
    let counted = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let s = crate::status(admin);
        s["admin"]["connections_refused"].as_u64().unwrap_or(0) >= 1
            && s["admin"]["connection_errors"].as_u64().unwrap_or(0) >= 2
    });
    let last = crate::status(admin);
    agent.stop();
    std::fs::remove_dir_all(&dir).ok();
    assert!(counted, "{}", last["admin"]);
}
