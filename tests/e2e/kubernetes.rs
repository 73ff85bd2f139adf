//! Kubernetes workload identity in host mode, against the fake API server
//! (`fakekube.rs`: kube-rs's list and watch protocol, bookmarks, 410 Gone)
//! and network-namespace "pods" on two "nodes" (`scripts/netns-nodes.sh`).
//!
//! - A rollout: the server pod is deleted and re-created under a new name
//!   with the same IP while a client calls it; every span names the pod
//!   that held the IP at the time, both ends are named, and the service
//!   graph is drawn between workloads.
//! - An API outage: names keep working from what was known; a pod created
//!   meanwhile is named once the API is back (410 Gone, relist).
//! - Two agents, one per node: every call is reported once, by the agent
//!   beside the server; a call out of the cluster by the client's.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::fakekube::{FakeKube, pod, replica_set};
use crate::{LiveAgent, agent_spans, attr, bin, free_port, resource, root, status};

struct Nodes {
    tag: String,
    /// Pod networks 10.NET.1.0/24 (node 1) and 10.NET.2.0/24 (node 2).
    net: u32,
    dir: PathBuf,
    nginx: Vec<(Option<String>, PathBuf)>,
}

impl Nodes {
    fn up() -> Nodes {
        // Tags unique per test in this process (tests run in parallel).
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tag = format!("{}", (std::process::id() % 10_000) * 10 + n);
        let dir = std::env::temp_dir().join(format!("wasmtap-k8s-{tag}"));
        std::fs::create_dir_all(&dir).unwrap();
        // nginx's workers must reach their files.
        Command::new("chmod").arg("755").arg(&dir).status().unwrap();
        let net = 78 + n;
        let st = Command::new(root().join("scripts/netns-nodes.sh"))
            .args(["up", &tag, &net.to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "netns-nodes.sh up failed");
        Nodes {
            tag,
            net,
            dir,
            nginx: Vec::new(),
        }
    }

    fn ns(&self, node: u8, pod: char) -> String {
        format!("wt{}{node}{pod}", self.tag)
    }

    /// The address of pod `host` (1 to 3) on `node`; node 99: outside.
    fn ip(&self, node: u8, host: u8) -> String {
        format!("10.{}.{node}.{host}", self.net)
    }

    /// nginx on `ip:8080` in `ns` (`None`: the root namespace).
    fn nginx(&mut self, ns: Option<String>, ip: &str) -> usize {
        let dir = self.dir.join(format!("nginx-{ip}-{}", self.nginx.len()));
        let mut cmd = match &ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]);
                c.arg(root().join("scripts/nginx-serve.sh"));
                c
            }
            None => Command::new(root().join("scripts/nginx-serve.sh")),
        };
        let st = cmd
            .arg("start")
            .arg(&dir)
            .env("LISTEN", format!("{ip}:8080"))
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        self.nginx.push((ns, dir));
        self.nginx.len() - 1
    }

    fn stop_nginx(&self, i: usize) {
        let (ns, dir) = &self.nginx[i];
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]);
                c.arg(root().join("scripts/nginx-serve.sh"));
                c
            }
            None => Command::new(root().join("scripts/nginx-serve.sh")),
        };
        let _ = cmd.arg("stop").arg(dir).status();
        // Until the port is free (its master has exited).
        let pid = dir.join("nginx.pid");
        for _ in 0..100 {
            if !pid.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `n` GETs of `path` from pod `ns` to `ip:8080`; each answered.
    fn calls(&self, ns: &str, ip: &str, path: &str, n: usize) {
        for _ in 0..n {
            let out = Command::new("ip")
                .args(["netns", "exec", ns, "curl", "-s", "-o", "/dev/null"])
                .args(["-w", "%{http_code}", "-m", "5"])
                .arg(format!("http://{ip}:8080{path}"))
                .output()
                .unwrap();
            let code = String::from_utf8_lossy(&out.stdout).to_string();
            assert!(code == "404" || code == "200", "{ns} -> {ip}{path}: {code}");
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for i in 0..self.nginx.len() {
            self.stop_nginx(i);
        }
        let _ = Command::new(root().join("scripts/netns-nodes.sh"))
            .args(["down", &self.tag])
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Waits until `/status`'s `kubernetes` object satisfies `ok`, then lets
/// one publication interval pass (the index follows events within 200 ms).
fn wait_kube(admin: u16, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..300 {
        let s = status(admin);
        if ok(&s["kubernetes"]) {
            std::thread::sleep(Duration::from_millis(400));
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("/status never showed {what}: {}", status(admin));
}

fn agent(
    nodes: &Nodes,
    node: u8,
    api: &FakeKube,
    admin: u16,
    metrics: Option<&std::path::Path>,
) -> LiveAgent {
    let kubeconfig = nodes.dir.join(format!("kubeconfig-{node}"));
    api.kubeconfig(&kubeconfig);
    let cfg = nodes.dir.join(format!("agent-{node}.toml"));
    std::fs::write(
        &cfg,
        format!(
            "[kubernetes]\nenabled = \"on\"\nkubeconfig = \"{}\"\nnode_name = \"node-{node}\"\n\
             [locality]\nlocal_cidrs = [\"10.{net}.{node}.0/24\"]\n\
             cluster_cidrs = [\"10.{net}.1.0/24\", \"10.{net}.2.0/24\"]\n",
            kubeconfig.display(),
            net = nodes.net
        ),
    )
    .unwrap();
    let mut cmd = Command::new(bin());
    cmd.args(["run", "--mode", "host", "--interface"])
        .arg(format!("^wt{}h{node}", nodes.tag))
        .args(["--config", cfg.to_str().unwrap(), "--format", "jsonl"])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .env_remove("HTTPS_PROXY")
        .env_remove("https_proxy")
        .env_remove("KUBECONFIG");
    if let Some(m) = metrics {
        cmd.arg("--metrics-out").arg(m);
    }
    LiveAgent::spawn(&mut cmd)
}

/// "service.name k8s.pod.name" per span, counted, for spans of `path`.
fn named(spans: &[Value], path: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in spans.iter().filter(|s| attr(s, "url.path") == path) {
        *m.entry(format!(
            "{} {}",
            resource(s, "service.name"),
            resource(s, "k8s.pod.name")
        ))
        .or_default() += 1;
    }
    m
}

fn one(key: &str, n: usize) -> BTreeMap<String, usize> {
    [(key.to_string(), n)].into_iter().collect()
}

#[test]
fn a_rollout_and_an_api_outage_keep_every_span_on_the_pod_that_held_the_ip() {
    let mut nodes = Nodes::up();
    let mut api = FakeKube::start();
    let (web, client, worker) = (&nodes.ip(1, 1), &nodes.ip(1, 2), &nodes.ip(1, 3));
    let other = nodes.ip(2, 1);
    api.apply("replicasets", replica_set("shop", "web"));
    api.apply("replicasets", replica_set("shop", "frontend"));
    api.apply("replicasets", replica_set("shop", "worker"));
    api.apply(
        "pods",
        pod(
            "shop",
            "web",
            "web-7d9f8c6b5-aaaaa",
            "uid-web-1",
            "node-1",
            web,
            8080,
        ),
    );
    api.apply(
        "pods",
        pod(
            "shop",
            "frontend",
            "frontend-7d9f8c6b5-ccccc",
            "uid-fe",
            "node-1",
            client,
            80,
        ),
    );
    // A pod of the other node: not watched by this node's agent.
    api.apply(
        "pods",
        pod(
            "shop",
            "api",
            "api-7d9f8c6b5-zzzzz",
            "uid-api",
            "node-2",
            &other,
            8080,
        ),
    );
    let server = nodes.nginx(Some(nodes.ns(1, 'a')), web);
    let admin = free_port();
    let metrics = nodes.dir.join("metrics.jsonl");
    let a = agent(&nodes, 1, &api, admin, Some(&metrics));
    wait_kube(admin, "the pods listed", |k| {
        k["synced"] == true && k["pods"].as_u64() == Some(2)
    });
    let client_ns = nodes.ns(1, 'b');

    // Before the rollout.
    nodes.calls(&client_ns, web, "/before", 4);

    // The rollout: the pod goes, a new one takes its IP.
    nodes.stop_nginx(server);
    let events = status(admin)["kubernetes"]["events"].as_u64().unwrap();
    api.delete("pods", "shop", "web-7d9f8c6b5-aaaaa");
    api.apply(
        "pods",
        pod(
            "shop",
            "web",
            "web-7d9f8c6b5-bbbbb",
            "uid-web-2",
            "node-1",
            web,
            8080,
        ),
    );
    wait_kube(admin, "the rollout", |k| {
        k["events"].as_u64().unwrap_or(0) >= events + 2
    });
    nodes.nginx(Some(nodes.ns(1, 'a')), web);
    nodes.calls(&client_ns, web, "/after", 4);

    // The API goes away: names keep working from what was known.
    api.down();
    wait_kube(admin, "the outage", |k| {
        k["errors"].as_u64().unwrap_or(0) > 0 && k["synced"] == false
    });
    nodes.calls(&client_ns, web, "/outage", 3);
    // A pod started during the outage is not known yet: its address.
    api.apply(
        "pods",
        pod(
            "shop",
            "worker",
            "worker-7d9f8c6b5-ddddd",
            "uid-worker",
            "node-1",
            worker,
            8080,
        ),
    );
    nodes.nginx(Some(nodes.ns(1, 'c')), worker);
    nodes.calls(&client_ns, worker, "/unknown", 2);

    // Back, with its history compacted: 410 Gone, relist, caught up.
    api.up();
    wait_kube(admin, "the relist", |k| {
        k["synced"] == true
            && k["lists"].as_u64().unwrap_or(0) >= 2
            && k["pods"].as_u64() == Some(4)
    });
    nodes.calls(&client_ns, worker, "/known", 2);
    let st = status(admin);
    let spans = agent_spans(a);

    assert_eq!(
        named(&spans, "/before"),
        one("web web-7d9f8c6b5-aaaaa", 4),
        "{spans:#?}"
    );
    assert_eq!(named(&spans, "/after"), one("web web-7d9f8c6b5-bbbbb", 4));
    assert_eq!(named(&spans, "/outage"), one("web web-7d9f8c6b5-bbbbb", 3));
    assert_eq!(
        named(&spans, "/unknown"),
        one(&format!("{worker}:8080 "), 2)
    );
    assert_eq!(
        named(&spans, "/known"),
        one("worker worker-7d9f8c6b5-ddddd", 2)
    );
    let s = spans
        .iter()
        .find(|s| attr(s, "url.path") == "/after")
        .unwrap();
    for (k, v) in [
        ("k8s.namespace.name", "shop"),
        ("k8s.deployment.name", "web"),
        ("k8s.replicaset.name", "web-7d9f8c6b5"),
        ("k8s.node.name", "node-1"),
        ("k8s.pod.uid", "uid-web-2"),
        ("k8s.container.name", "app"),
        ("service.namespace", "shop"),
        ("service.instance.id", "shop.web-7d9f8c6b5-bbbbb.app"),
    ] {
        assert_eq!(resource(s, k), v, "{k}");
    }
    // The outage is counted, and shown.
    let k = &st["kubernetes"];
    assert!(k["errors"].as_u64().unwrap() >= 1, "{st}");
    assert!(k["lists"].as_u64().unwrap() >= 2, "{st}");
    assert!(!k["last_error"].as_str().unwrap().is_empty(), "{st}");
    // Only this node's pods were asked for.
    let reqs = api.requests();
    assert!(
        reqs.iter()
            .any(|r| r.starts_with("/api/v1/pods")
                && r.contains("fieldSelector=spec.nodeName%3Dnode-1")),
        "{reqs:?}"
    );
    assert!(
        reqs.iter()
            .filter(|r| r.starts_with("/api/v1/pods"))
            .all(|r| r.contains("spec.nodeName%3Dnode-1")),
        "{reqs:?}"
    );

    // Both ends named: the service graph is drawn between workloads.
    let m = std::fs::read_to_string(&metrics).unwrap();
    let edges: Vec<(String, String)> = m
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|p| p["name"] == "traces_service_graph_request_total")
        .map(|p| {
            (
                p["attributes"]["client"].as_str().unwrap().to_string(),
                p["attributes"]["server"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        edges.contains(&("frontend".into(), "web".into())),
        "{edges:?}"
    );
    assert!(
        edges.contains(&("frontend".into(), "worker".into())),
        "{edges:?}"
    );
}

#[test]
fn two_nodes_report_every_call_once_from_the_servers_node() {
    let mut nodes = Nodes::up();
    let api = FakeKube::start();
    for d in ["web", "api", "frontend", "batch"] {
        api.apply("replicasets", replica_set("shop", d));
    }
    let (web, api_ip, outside) = (nodes.ip(1, 1), nodes.ip(2, 1), nodes.ip(99, 1));
    let pods = [
        ("web", "web-7d9f8c6b5-n1web", "node-1", web.clone()),
        (
            "frontend",
            "frontend-7d9f8c6b5-n1fe",
            "node-1",
            nodes.ip(1, 2),
        ),
        ("api", "api-7d9f8c6b5-n2api", "node-2", api_ip.clone()),
        ("batch", "batch-7d9f8c6b5-n2bat", "node-2", nodes.ip(2, 2)),
    ];
    for (d, name, node, ip) in &pods {
        api.apply(
            "pods",
            pod("shop", d, name, &format!("uid-{name}"), node, ip, 8080),
        );
    }
    nodes.nginx(Some(nodes.ns(1, 'a')), &web);
    nodes.nginx(Some(nodes.ns(2, 'a')), &api_ip);
    // Outside the cluster (an address of the root namespace).
    nodes.nginx(None, &outside);
    let (admin1, admin2) = (free_port(), free_port());
    let a1 = agent(&nodes, 1, &api, admin1, None);
    let a2 = agent(&nodes, 2, &api, admin2, None);
    for admin in [admin1, admin2] {
        wait_kube(admin, "the pods listed", |k| {
            k["synced"] == true && k["pods"].as_u64() == Some(2)
        });
    }
    let (fe, batch) = (nodes.ns(1, 'b'), nodes.ns(2, 'b'));
    nodes.calls(&fe, &api_ip, "/n1-to-n2", 3);
    nodes.calls(&batch, &web, "/n2-to-n1", 4);
    nodes.calls(&fe, &web, "/n1-to-n1", 2);
    nodes.calls(&fe, &outside, "/n1-to-outside", 5);
    // Node 1 leaves the calls to node 2's server to node 2, and counts them.
    let mut reported1 = 0;
    for _ in 0..100 {
        reported1 = status(admin1)["reported_elsewhere"].as_u64().unwrap_or(0);
        if reported1 >= 3 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let s1 = agent_spans(a1);
    let s2 = agent_spans(a2);

    let count = |s: &[Value], path: &str| s.iter().filter(|x| attr(x, "url.path") == path).count();
    // Each call once in the merged output, from the server's node.
    for (path, n, by1, by2) in [
        ("/n1-to-n2", 3, 0, 3),
        ("/n2-to-n1", 4, 4, 0),
        ("/n1-to-n1", 2, 2, 0),
        ("/n1-to-outside", 5, 5, 0),
    ] {
        assert_eq!(
            (count(&s1, path), count(&s2, path)),
            (by1, by2),
            "{path}: (node-1, node-2)"
        );
        assert_eq!(count(&s1, path) + count(&s2, path), n);
    }
    // Each named by its workload, from the agent that saw it server-side.
    let of = |s: &[Value], path: &str| {
        s.iter()
            .find(|x| attr(x, "url.path") == path)
            .map(|x| resource(x, "service.name"))
            .unwrap_or_default()
    };
    assert_eq!(of(&s2, "/n1-to-n2"), "api");
    assert_eq!(of(&s1, "/n2-to-n1"), "web");
    assert_eq!(of(&s1, "/n1-to-outside"), format!("{outside}:8080"));
    assert!(reported1 >= 3, "{reported1}");
}
