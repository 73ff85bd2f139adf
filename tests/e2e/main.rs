//! End-to-end tests: drive the `wasmtap` binary on real captures and real servers.

#![allow(missing_docs, unreachable_pub, clippy::unwrap_used)]

mod alerts;
mod amqp;
mod author;
mod deploy;
mod dns;
mod fakekube;
mod filters;
mod flood;
mod golden;
mod grpc;
mod hot_reload;
mod http2;
mod imperfect;
mod iso8583;
mod kafka;
mod kubernetes;
mod live;
mod memcached;
mod metrics;
mod modes;
mod mongodb;
mod mysql;
mod names;
mod nginx;
mod otlp;
mod outage;
mod pgsql;
mod plugins;
mod probes;
mod prometheus;
mod redis;
mod robustness;
mod rotation;
mod sandbox;
mod secrets;
mod shards;
mod synth;
mod tls;
mod tracecontext;
mod tunnels;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The agent binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_wasmtap")
}

/// Runs `wasmtap` with `args`, returning its output.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .env("WASMTAP_LOG", "error")
        .output()
        .unwrap()
}

/// A TCP port free on loopback now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Replays `file` (relative to the root) with `--format jsonl` and returns the spans.
pub fn replay_spans(file: &Path, extra: &[&str]) -> Vec<Value> {
    let f = file.to_str().unwrap();
    let mut args = vec!["replay", f, "--format", "jsonl"];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(
        out.status.success(),
        "wasmtap replay {f} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect()
}

/// Builds the component of workspace package `package` for wasm32-wasip2 and
/// returns a fresh plugin directory holding it as `<name>.wasm`.
pub fn build_plugin_dir(package: &str, name: &str) -> PathBuf {
    build_plugin_with(package, name, &[])
}

/// As [`build_plugin_dir`], with environment variables for the build (test
/// plugins read e.g. their version from one). Builds are serialised: they
/// share one output file.
pub fn build_plugin_with(package: &str, name: &str, env: &[(&str, &str)]) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let root = root();
    let target = root.join("target/wasm-plugins");
    let st = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args([
            "rustc",
            "--release",
            "--lib",
            "--crate-type",
            "cdylib",
            "--target",
            "wasm32-wasip2",
        ])
        .arg("--target-dir")
        .arg(&target)
        .args(["-p", package])
        .env_remove("CARGO_TARGET_DIR")
        .envs(env.iter().copied())
        .status()
        .unwrap();
    assert!(st.success(), "building {package} for wasm32-wasip2 failed");
    let tag: String = env.iter().map(|(k, v)| format!("-{k}={v}")).collect();
    let dir = root
        .join("target/test-plugins")
        .join(format!("{name}{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let wasm = format!("{}.wasm", package.replace('-', "_"));
    // Write then rename: a replay running in parallel never loads a partial file.
    let dest = dir.join(format!("{name}.wasm"));
    let tmp = dir.join(format!("{name}.wasm.{}.partial", std::process::id()));
    std::fs::copy(target.join("wasm32-wasip2/release").join(&wasm), &tmp).unwrap();
    std::fs::rename(&tmp, &dest).unwrap();
    dir
}

/// Golden test: replays every capture in `tests/pcaps/<proto>/` and compares
/// `summarise(spans)` with `tests/golden/<proto>/<file>.txt`; `UPDATE_EXPECT=1`
/// rewrites the golden files instead.
pub fn check_golden(proto: &str, summarise: impl Fn(&[Value]) -> String) {
    let dir = root().join("tests/pcaps").join(proto);
    let golden = root().join("tests/golden").join(proto);
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    let mut diffs = Vec::new();
    for f in files {
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        let text = summarise(&replay_spans(&f, &[]));
        let path = golden.join(format!("{name}.txt"));
        if update {
            std::fs::create_dir_all(&golden).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("missing {}; run with UPDATE_EXPECT=1", path.display()));
        if want != text {
            diffs.push(format!("{name}:\n--- want\n{want}--- got\n{text}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{proto} golden summaries differ (UPDATE_EXPECT=1 regenerates):\n{}",
        diffs.join("\n")
    );
}

/// A span attribute as text ("" when absent).
pub fn attr(span: &Value, key: &str) -> String {
    match &span["attributes"][key] {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        v => v.to_string(),
    }
}

/// A `wasmtap run` under test: stdout and stderr collected by threads. An
/// agent dropped without `stop` (a failed assertion) is killed.
pub struct LiveAgent {
    child: std::process::Child,
    out: Option<std::thread::JoinHandle<String>>,
    err: Option<std::thread::JoinHandle<()>>,
    log: std::sync::Arc<std::sync::Mutex<String>>,
}

/// What a stopped [`LiveAgent`] left: exit status, stdout, stderr.
pub struct Stopped {
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl LiveAgent {
    /// Spawns `cmd` (a `wasmtap run`, possibly behind `ip netns exec`) and
    /// returns once it logs "capturing" (its capture handles are open), so no
    /// test depends on a guessed start-up delay. Panics after 60 s.
    pub fn spawn(cmd: &mut Command) -> LiveAgent {
        use std::io::{BufRead, Read};
        use std::process::Stdio;
        let mut child = cmd
            .env("WASMTAP_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut s = String::new();
            stdout.read_to_string(&mut s).unwrap();
            s
        });
        let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let all = log.clone();
        let err = std::thread::spawn(move || {
            for line in stderr.lines() {
                let Ok(line) = line else { break };
                if line.contains("capturing") {
                    let _ = tx.send(());
                }
                let mut all = all.lock().unwrap_or_else(|p| p.into_inner());
                all.push_str(&line);
                all.push('\n');
            }
        });
        let agent = LiveAgent {
            child,
            out: Some(out),
            err: Some(err),
            log,
        };
        if rx.recv_timeout(std::time::Duration::from_secs(60)).is_err() {
            let s = agent.stop();
            panic!("the agent never started capturing:\n{}", s.stderr);
        }
        agent
    }

    /// Waits until the agent's log holds `needle`; panics after `secs`.
    pub fn wait_log(&self, needle: &str, secs: u64) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        loop {
            let log = self.log.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if log.contains(needle) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the agent never logged {needle:?}:\n{log}"
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// The agent's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM (as an orchestrator does) and collects everything.
    pub fn stop(mut self) -> Stopped {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let status = self.child.wait().unwrap();
        let stdout = self
            .out
            .take()
            .map(|t| t.join().unwrap())
            .unwrap_or_default();
        if let Some(t) = self.err.take() {
            let _ = t.join();
        }
        let stderr = self.log.lock().unwrap_or_else(|p| p.into_inner()).clone();
        Stopped {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for LiveAgent {
    fn drop(&mut self) {
        // Not stopped: a test failed on the way. Leave no agent behind.
        if self.out.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Debian's nginx on a free 127.0.0.1 port (`scripts/nginx-serve.sh`),
/// stopped and its files removed on drop.
pub struct Nginx {
    pub dir: PathBuf,
    pub port: u16,
}

impl Nginx {
    pub fn start(tag: &str) -> Nginx {
        let dir = std::env::temp_dir().join(format!("wasmtap-{tag}-{}", std::process::id()));
        let out = Command::new(root().join("scripts/nginx-serve.sh"))
            .arg("start")
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "nginx-serve.sh start failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Nginx { dir, port }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new(root().join("scripts/nginx-serve.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The agent's `/status` (JSON; `Null` when it does not answer).
pub fn status(admin: u16) -> Value {
    let out = Command::new("curl")
        .args(["-s", "-m", "2"])
        .arg(format!("http://127.0.0.1:{admin}/status"))
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or_default()
}

/// Stops a live agent (it must exit cleanly) and parses its JSON-lines spans.
pub fn agent_spans(agent: LiveAgent) -> Vec<Value> {
    let s = agent.stop();
    assert!(s.status.success(), "{}", s.stderr);
    s.stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A resource attribute of a span (`""` when absent).
pub fn resource(span: &Value, key: &str) -> String {
    span["resource"][key].as_str().unwrap_or("").to_string()
}
