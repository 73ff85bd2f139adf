//! Sidecar and host modes, proved with network namespaces standing in for pods
//! on one node: nginx in pod A, redis-server in pod B, clients in pod C.
//! A sidecar agent inside pod A's namespace reports only pod A's exchanges,
//! with pod A's identity; one host-mode agent in the root namespace reports
//! both pods' exchanges, each attributed to its own service.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{LiveAgent, agent_spans, attr, bin, resource, root};

struct Pods {
    tag: String,
    net: u32,
    children: Vec<Child>,
    nginx_dir: std::path::PathBuf,
}

impl Pods {
    fn ns(&self, p: char) -> String {
        format!("wt{}{p}", self.tag)
    }
    fn ip(&self, host: u8) -> String {
        format!("10.77.{}.{host}", self.net)
    }
}

impl Drop for Pods {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "exec", &self.ns('a')])
            .arg(root().join("scripts/nginx-serve.sh"))
            .arg("stop")
            .arg(&self.nginx_dir)
            .status();
        let _ = Command::new(root().join("scripts/netns-pods.sh"))
            .args(["down", &self.tag])
            .status();
        let _ = std::fs::remove_dir_all(&self.nginx_dir);
    }
}

#[test]
fn sidecar_sees_its_pod_only_and_host_mode_sees_every_pod() {
    let pid = std::process::id();
    let mut pods = Pods {
        tag: format!("{}", pid % 100_000),
        net: 10 + pid % 200,
        children: Vec::new(),
        nginx_dir: std::env::temp_dir().join(format!("wasmtap-modes-nginx-{pid}")),
    };
    let st = Command::new(root().join("scripts/netns-pods.sh"))
        .args(["up", &pods.tag, &pods.net.to_string()])
        .status()
        .unwrap();
    assert!(st.success(), "netns set-up failed");

    // Pod A: nginx on 10.77.N.1:8080. Pod B: redis on 10.77.N.2:6379.
    let st = Command::new("ip")
        .args(["netns", "exec", &pods.ns('a')])
        .arg(root().join("scripts/nginx-serve.sh"))
        .arg("start")
        .arg(&pods.nginx_dir)
        .env("LISTEN", format!("{}:8080", pods.ip(1)))
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let redis = Command::new("ip")
        .args([
            "netns",
            "exec",
            &pods.ns('b'),
            "redis-server",
            "--bind",
            &pods.ip(2),
            "--port",
            "6379",
        ])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    pods.children.push(redis);
    // Both servers answer before any agent starts (no guessed delays).
    let answers = |ns: String, args: &[&str]| {
        (0..200).any(|_| {
            let ok = Command::new("ip")
                .args(["netns", "exec", &ns])
                .args(args)
                .output()
                .is_ok_and(|o| o.status.success() && !o.stdout.is_empty());
            if !ok {
                std::thread::sleep(Duration::from_millis(50));
            }
            ok
        })
    };
    assert!(answers(
        pods.ns('b'),
        &["redis-cli", "-h", &pods.ip(2), "PING"]
    ));
    let web = format!("http://{}:8080/", pods.ip(1));
    assert!(answers(pods.ns('a'), &["curl", "-s", "-f", &web]));

    // A sidecar in pod A (its network namespace), identity from the downward API.
    let sidecar = LiveAgent::spawn(
        Command::new("ip")
            .args(["netns", "exec", &pods.ns('a'), bin()])
            .args([
                "run",
                "--mode",
                "sidecar",
                // Both capture modes are exercised: this agent per packet,
                // the host-mode agent in kernel batches (the default).
                "--immediate",
                "true",
                "--format",
                "jsonl",
                "--admin-listen",
                "",
            ])
            .env("POD_NAME", "web-7d9f")
            .env("POD_NAMESPACE", "shop")
            .env("NODE_NAME", "node-1")
            .env("POD_IP", pods.ip(1)),
    );
    // One host-mode agent for the node: the pods' host-side interfaces and a service map.
    let cfg = pods.nginx_dir.join("host.toml");
    std::fs::write(
        &cfg,
        format!(
            "[[services]]\nmatch = \"{}:8080\"\nname = \"web\"\n[[services]]\nmatch = \"{}:6379\"\nname = \"cache\"\n",
            pods.ip(1),
            pods.ip(2)
        ),
    )
    .unwrap();
    let host = LiveAgent::spawn(
        Command::new(bin())
            .args([
                "run",
                "--mode",
                "host",
                "--interface",
                &format!("^wt{}h", pods.tag),
            ])
            .args([
                "--config",
                cfg.to_str().unwrap(),
                "--format",
                "jsonl",
                "--admin-listen",
                "",
            ]),
    );

    // Clients in pod C.
    let client = |args: &[&str]| {
        let st = Command::new("ip")
            .args(["netns", "exec", &pods.ns('c')])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "{args:?}");
    };
    for _ in 0..5 {
        client(&["curl", "-s", "-f", &web]);
    }
    let redis_ip = pods.ip(2);
    for cmd in [
        ["PING"].as_slice(),
        &["SET", "k", "v"],
        &["GET", "k"],
        &["PING"],
    ] {
        let mut args = vec!["redis-cli", "-h", redis_ip.as_str(), "-p", "6379"];
        args.extend_from_slice(cmd);
        client(&args);
    }
    std::thread::sleep(Duration::from_millis(1000));
    let side = agent_spans(sidecar);
    let node = agent_spans(host);

    // Sidecar: pod A's five exchanges, nothing of pod B, with pod A's identity.
    assert_eq!(side.len(), 5, "{side:#?}");
    for s in &side {
        assert_eq!(attr(s, "http.response.status_code"), "200");
        assert_eq!(resource(s, "k8s.pod.name"), "web-7d9f");
        assert_eq!(resource(s, "k8s.namespace.name"), "shop");
        assert_eq!(resource(s, "k8s.node.name"), "node-1");
    }
    // Host mode: both pods, each under its own service.
    let web_spans: Vec<_> = node
        .iter()
        .filter(|s| resource(s, "service.name") == "web")
        .collect();
    let cache_spans: Vec<_> = node
        .iter()
        .filter(|s| resource(s, "service.name") == "cache")
        .collect();
    assert_eq!(web_spans.len(), 5, "{node:#?}");
    assert!(
        web_spans
            .iter()
            .all(|s| attr(s, "network.protocol.name") == "http")
    );
    let ops: Vec<String> = cache_spans
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    for op in ["PING", "SET", "GET"] {
        assert!(ops.iter().any(|o| o == op), "{ops:?}");
    }
    assert_eq!(
        node.len(),
        web_spans.len() + cache_spans.len(),
        "nothing else, no duplicates: {node:#?}"
    );
}
