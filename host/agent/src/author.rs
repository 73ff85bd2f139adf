//! `wasmtap plugin`: the decoder author's commands. `new` makes a project
//! that builds and passes its tests at once (the SDK and the WIT contract
//! are copied in, so it needs no checkout of wasmtap), `build` runs the
//! toolchain and checks the component against the contract this agent
//! implements, `test` decodes a capture with only that decoder and compares
//! the exchanges with a golden, `inspect` describes a component.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use serde_json::{Map, Value};

use crate::pipeline::{Shard, ShardConfig, SpanSink};

/// The author's commands.
#[derive(Subcommand)]
pub enum PluginCmd {
    /// Create a decoder project NAME (in DIR): it builds and passes its own tests as is.
    New {
        /// Decoder name: lowercase letters, digits, `_` and `-`.
        name: String,
        /// Where to create the project directory.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Language of the project: rust, python (componentize-py) or js (componentize-js).
        #[arg(long, default_value = "rust")]
        lang: String,
        /// The port the decoder claims.
        #[arg(long, default_value_t = 7878)]
        port: u16,
    },
    /// Build the component (cargo for wasm32-wasip2, componentize-py, or esbuild and componentize-js) and check it loads in this agent.
    Build {
        /// The project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Decode a capture with only this decoder; print the exchanges and compare with a golden.
    Test {
        /// The component (`.wasm`).
        plugin: PathBuf,
        /// The capture (pcap or pcapng).
        #[arg(long)]
        pcap: PathBuf,
        /// Decode this port with it (besides the ports it claims).
        #[arg(long)]
        port: Option<u16>,
        /// Golden file (JSON lines, one exchange per line) to compare with.
        #[arg(long)]
        expect: Option<PathBuf>,
        /// Write the golden instead of comparing.
        #[arg(long)]
        update: bool,
        /// The decoder's configuration, as JSON (what its `config` import returns).
        #[arg(long, default_value = "{}")]
        config: String,
    },
    /// Describe a component: identity, contract, ports, keys, size, costs.
    Inspect {
        /// The component (`.wasm`).
        plugin: PathBuf,
    },
}

/// Runs one author command.
pub fn run(cmd: PluginCmd) -> Result<()> {
    match cmd {
        PluginCmd::New {
            name,
            dir,
            lang,
            port,
        } => new(&name, &dir, &lang, port),
        PluginCmd::Build { dir } => build(&dir).map(|_| ()),
        PluginCmd::Test {
            plugin,
            pcap,
            port,
            expect,
            update,
            config,
        } => test(&plugin, &pcap, port, expect.as_deref(), update, &config),
        PluginCmd::Inspect { plugin } => inspect(&plugin),
    }
}

const TEMPLATE_CARGO: &str = include_str!("../templates/rust/Cargo.toml");
const TEMPLATE_LIB: &str = include_str!("../templates/rust/src/lib.rs");
const TEMPLATE_README: &str = include_str!("../templates/rust/README.md");
const SDK_CARGO: &str = include_str!("../templates/rust/sdk.Cargo.toml");
const SDK_FILES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("src/mask.rs", include_str!("../../../sdk/src/mask.rs")),
    (
        "src/framing.rs",
        include_str!("../../../sdk/src/framing.rs"),
    ),
    ("src/trace.rs", include_str!("../../../sdk/src/trace.rs")),
    ("src/parsed.rs", include_str!("../../../sdk/src/parsed.rs")),
    (
        "src/testing.rs",
        include_str!("../../../sdk/src/testing.rs"),
    ),
];
const WIT: &str = include_str!("../../../wit/decoder.wit");

fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'_' | b'-'))
}

/// The Python project's files: the template, and the SDK vendored as `wasmtap/`.
const PYTHON_FILES: &[(&str, &str)] = &[
    ("plugin.py", include_str!("../templates/python/plugin.py")),
    ("README.md", include_str!("../templates/python/README.md")),
    (
        "{{name}}.toml",
        include_str!("../templates/python/plugin.toml"),
    ),
    ("tests/__init__.py", ""),
    (
        "tests/test_plugin.py",
        include_str!("../templates/python/tests/test_plugin.py"),
    ),
    (
        "wasmtap/__init__.py",
        include_str!("../../../sdk/python/wasmtap/__init__.py"),
    ),
    (
        "wasmtap/_component.py",
        include_str!("../../../sdk/python/wasmtap/_component.py"),
    ),
    (
        "wasmtap/testing.py",
        include_str!("../../../sdk/python/wasmtap/testing.py"),
    ),
    (
        "wasmtap/_shim/decoder.py",
        include_str!("../../../sdk/python/wasmtap/_shim/decoder.py"),
    ),
    (
        "wasmtap/_shim/wasmtap_app.py",
        include_str!("../../../sdk/python/wasmtap/_shim/wasmtap_app.py"),
    ),
    (".gitignore", "/build\n__pycache__/\n"),
];

/// The JavaScript project's files: the template, and the SDK vendored as `wasmtap/`.
const JS_FILES: &[(&str, &str)] = &[
    ("plugin.js", include_str!("../templates/js/plugin.js")),
    ("package.json", include_str!("../templates/js/package.json")),
    ("README.md", include_str!("../templates/js/README.md")),
    ("{{name}}.toml", include_str!("../templates/js/plugin.toml")),
    (
        "tests/plugin.test.js",
        include_str!("../templates/js/tests/plugin.test.js"),
    ),
    (
        "wasmtap/index.js",
        include_str!("../../../sdk/js/wasmtap/index.js"),
    ),
    (
        "wasmtap/component.js",
        include_str!("../../../sdk/js/wasmtap/component.js"),
    ),
    (
        "wasmtap/entry.js",
        include_str!("../../../sdk/js/wasmtap/entry.js"),
    ),
    (
        "wasmtap/testing.js",
        include_str!("../../../sdk/js/wasmtap/testing.js"),
    ),
    (".gitignore", "/build\n/node_modules\n"),
];

/// A server and a client of the template's protocol (every language's project).
const PEER: &str = include_str!("../templates/tools/peer.py");

/// componentize-py, pinned: the version `plugin build` installs when missing.
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

fn new(name: &str, dir: &Path, lang: &str, port: u16) -> Result<()> {
    if !matches!(lang, "rust" | "python" | "js") {
        bail!("--lang {lang}: rust, python or js");
    }
    if !valid_name(name) {
        bail!(
            "{name:?}: a decoder name is lowercase letters, digits, '_' and '-', starting with a letter"
        );
    }
    let root = dir.join(name);
    if root.exists() {
        bail!("{} already exists", root.display());
    }
    let subst = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &name.replace('-', "_"))
            .replace("{{port}}", &port.to_string())
            .replace("{{sdk_version}}", env!("CARGO_PKG_VERSION"))
            .replace("{{wit_version}}", wasmtap_runtime::WIT_VERSION)
    };
    let write = |rel: &str, text: &str| -> Result<()> {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).with_context(|| format!("create {}", d.display()))?;
        }
        std::fs::write(&p, text).with_context(|| format!("write {}", p.display()))
    };
    if lang == "python" || lang == "js" {
        let files = if lang == "js" { JS_FILES } else { PYTHON_FILES };
        for (rel, text) in files {
            write(&subst(rel), &subst(text))?;
        }
    } else {
        write("Cargo.toml", &subst(TEMPLATE_CARGO))?;
        write("src/lib.rs", &subst(TEMPLATE_LIB))?;
        write("README.md", &subst(TEMPLATE_README))?;
        write(".gitignore", "/target\n")?;
        write("wasmtap-sdk/Cargo.toml", &subst(SDK_CARGO))?;
        for (rel, text) in SDK_FILES {
            write(&format!("wasmtap-sdk/{rel}"), text)?;
        }
    }
    write("wit/decoder.wit", WIT)?;
    write("tools/peer.py", PEER)?;
    let pcap = sample_capture(port);
    let p = root.join("tests/sample.pcap");
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&p, pcap).with_context(|| format!("write {}", p.display()))?;
    println!("created {} (a decoder for port {port})", root.display());
    let test = match lang {
        "python" => "python3 -m unittest",
        "js" => "npm test",
        _ => "cargo test",
    };
    println!(
        "next: cd {} && {test} && wasmtap plugin build",
        root.display()
    );
    Ok(())
}

/// A capture of the template's protocol: one connection, requests answered
/// out of order, one failure, a second connection.
fn sample_capture(port: u16) -> Vec<u8> {
    let mut pcap = Vec::new();
    // Magic, version 2.4 (two little-endian u16s), zone, sigfigs, snaplen, Ethernet.
    for v in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 262_144, 1] {
        pcap.extend_from_slice(&v.to_le_bytes());
    }
    let t0: u64 = 1_767_225_600_000_000; // µs
    let frame = |pcap: &mut Vec<u8>, t_us: u64, data: &[u8]| {
        pcap.extend_from_slice(&((t_us / 1_000_000) as u32).to_le_bytes());
        pcap.extend_from_slice(&((t_us % 1_000_000) as u32).to_le_bytes());
        pcap.extend_from_slice(&(data.len() as u32).to_le_bytes());
        pcap.extend_from_slice(&(data.len() as u32).to_le_bytes());
        pcap.extend_from_slice(data);
    };
    let framed = |s: &str| {
        let mut v = (s.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(s.as_bytes());
        v
    };
    let server = [10, 0, 0, 2];
    for (conn, cport) in [(0u64, 40_001u16), (1, 40_002)] {
        let client = [10, 0, 0, 1];
        let (mut cseq, mut sseq) = (1000u32, 9000u32);
        let base = t0 + conn * 1_000_000;
        let packet = |pcap: &mut Vec<u8>,
                      t: u64,
                      to_server: bool,
                      syn: bool,
                      fin: bool,
                      payload: &[u8],
                      cseq: &mut u32,
                      sseq: &mut u32| {
            let (src, dst, sp, dp, seq, ack) = if to_server {
                (client, server, cport, port, *cseq, *sseq)
            } else {
                (server, client, port, cport, *sseq, *cseq)
            };
            let mut b =
                etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                    .ipv4(src, dst, 64)
                    .tcp(sp, dp, seq, 65_535);
            if syn {
                b = b.syn();
            }
            if !(syn && to_server) {
                b = b.ack(ack);
            }
            if fin {
                b = b.fin();
            }
            let mut out = Vec::with_capacity(b.size(payload.len()));
            if b.write(&mut out, payload).is_ok() {
                frame(pcap, t, &out);
            }
            let grow = payload.len() as u32 + u32::from(syn) + u32::from(fin);
            if to_server {
                *cseq = cseq.wrapping_add(grow);
            } else {
                *sseq = sseq.wrapping_add(grow);
            }
        };
        let p = &mut pcap;
        packet(p, base, true, true, false, &[], &mut cseq, &mut sseq);
        packet(p, base + 100, false, true, false, &[], &mut cseq, &mut sseq);
        packet(p, base + 200, true, false, false, &[], &mut cseq, &mut sseq);
        let n = conn * 10;
        let reqs = [
            framed(&format!("REQ {} get user:{}", n + 1, n + 1)),
            framed(&format!("REQ {} put user:{}", n + 2, n + 2)),
            framed(&format!("REQ {} del user:{}", n + 3, n + 3)),
        ];
        packet(
            p,
            base + 1_000,
            true,
            false,
            false,
            &reqs.concat(),
            &mut cseq,
            &mut sseq,
        );
        let res = [
            framed(&format!("RES {} OK", n + 2)),
            framed(&format!("RES {} NOTFOUND", n + 1)),
        ];
        packet(
            p,
            base + 3_000,
            false,
            false,
            false,
            &res.concat(),
            &mut cseq,
            &mut sseq,
        );
        let last = framed(&format!("RES {} DENIED", n + 3));
        packet(
            p,
            base + 5_500,
            false,
            false,
            false,
            &last,
            &mut cseq,
            &mut sseq,
        );
        packet(
            p,
            base + 9_000,
            true,
            false,
            true,
            &[],
            &mut cseq,
            &mut sseq,
        );
        packet(
            p,
            base + 9_100,
            false,
            false,
            true,
            &[],
            &mut cseq,
            &mut sseq,
        );
        packet(
            p,
            base + 9_200,
            true,
            false,
            false,
            &[],
            &mut cseq,
            &mut sseq,
        );
    }
    pcap
}

fn package_name(dir: &Path) -> Result<String> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("{}: not a cargo project", dir.display()))?;
    let v: toml::Value =
        toml::from_str(&text).with_context(|| format!("{}", manifest.display()))?;
    v.get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .with_context(|| format!("{}: no [package] name", manifest.display()))
}

fn build(dir: &Path) -> Result<PathBuf> {
    if dir.join("plugin.py").is_file() && dir.join("wasmtap/_component.py").is_file() {
        return build_python(dir);
    }
    if dir.join("plugin.js").is_file() && dir.join("wasmtap/entry.js").is_file() {
        return build_js(dir);
    }
    let name = package_name(dir)?;
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == "wasm32-wasip2")
        })
        .unwrap_or(false);
    if !installed {
        eprintln!("wasmtap: adding the wasm32-wasip2 target: rustup target add wasm32-wasip2");
        let st = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .status()
            .context("run rustup (install it from https://rustup.rs)")?;
        if !st.success() {
            bail!("`rustup target add wasm32-wasip2` failed");
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(&cargo)
        .current_dir(dir)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .status()
        .with_context(|| format!("run {cargo}"))?;
    if !st.success() {
        bail!(
            "cargo build --release --target wasm32-wasip2 failed in {}",
            dir.display()
        );
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    let wasm = target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    check_built(&name, &wasm)?;
    Ok(wasm)
}

/// A Python project: componentize-py (installed with pip when missing) makes
/// `build/<name>.wasm` from `plugin.py`, the vendored SDK and the WIT.
fn build_python(dir: &Path) -> Result<PathBuf> {
    let have = |cmd: &str| {
        Command::new(cmd)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have("componentize-py") {
        eprintln!(
            "wasmtap: installing {COMPONENTIZE_PY}: python3 -m pip install {COMPONENTIZE_PY}"
        );
        let st = Command::new("python3")
            .args(["-m", "pip", "install", "-q", COMPONENTIZE_PY])
            .status()
            .context("run python3 (a Python 3.10 or newer is needed)")?;
        if !st.success() || !have("componentize-py") {
            bail!(
                "componentize-py is missing and `python3 -m pip install {COMPONENTIZE_PY}` failed"
            );
        }
    }
    let out = dir.join("build");
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let st = Command::new("componentize-py")
        .current_dir(dir)
        .args(["-d", "wit", "-w", "plugin", "componentize", "wasmtap_app"])
        .args(["-p", ".", "-p", "wasmtap/_shim", "-o"])
        .arg("build/plugin.wasm")
        .status()
        .context("run componentize-py")?;
    if !st.success() {
        bail!("componentize-py failed in {}", dir.display());
    }
    name_component(&out)
}

/// A JavaScript project: the tools pinned in its `package.json` (`npm
/// install` when missing), esbuild bundles `plugin.js` with the SDK, and
/// componentize-js makes `build/<name>.wasm` of it (no WASI HTTP: the agent
/// grants none).
fn build_js(dir: &Path) -> Result<PathBuf> {
    let tool = |name: &str| dir.join("node_modules/.bin").join(name);
    if !tool("componentize-js").is_file() || !tool("esbuild").is_file() {
        eprintln!("wasmtap: installing the build tools pinned in package.json: npm install");
        let st = Command::new("npm")
            .current_dir(dir)
            .args(["install", "--no-audit", "--no-fund"])
            .status()
            .context("run npm (Node.js 18 or newer is needed)")?;
        if !st.success() {
            bail!("`npm install` failed in {}", dir.display());
        }
    }
    let out = dir.join("build");
    std::fs::create_dir_all(&out).with_context(|| format!("create {}", out.display()))?;
    let st = Command::new(tool("esbuild"))
        .current_dir(dir)
        .args([
            "wasmtap/entry.js",
            "--bundle",
            "--format=esm",
            "--platform=neutral",
            "--external:wasmtap:*",
            "--log-level=warning",
            "--outfile=build/bundle.js",
        ])
        .status()
        .context("run esbuild")?;
    if !st.success() {
        bail!("esbuild failed in {}", dir.display());
    }
    let st = Command::new(tool("componentize-js"))
        .current_dir(dir)
        .args(["--wit", "wit", "--world-name", "plugin"])
        .args(["-d", "http", "-d", "fetch-event"])
        .args(["--out", "build/plugin.wasm", "build/bundle.js"])
        .status()
        .context("run componentize-js")?;
    if !st.success() {
        bail!("componentize-js failed in {}", dir.display());
    }
    name_component(&out)
}

/// Checks `OUT/plugin.wasm` in this agent and names it after its decoder
/// (`OUT/<name>.wasm`, as the agent's plugin directory wants it).
fn name_component(out: &Path) -> Result<PathBuf> {
    let wasm = out.join("plugin.wasm");
    let name = check_built("plugin", &wasm)?;
    let named = out.join(format!("{name}.wasm"));
    std::fs::rename(&wasm, &named)
        .with_context(|| format!("rename {} to {}", wasm.display(), named.display()))?;
    println!("component: {}", named.display());
    Ok(named)
}

/// Loads a built component in this agent's runtime and prints what it is;
/// returns the decoder's name.
fn check_built(name: &str, wasm: &Path) -> Result<String> {
    let bytes = std::fs::read(wasm).with_context(|| format!("read {}", wasm.display()))?;
    let host = wasmtap_runtime::PluginHost::new(wasmtap_runtime::RuntimeConfig {
        cache_dir: None,
        ..Default::default()
    })?;
    let p = host
        .load(
            name,
            &bytes,
            wasmtap_runtime::PluginSource::File(wasm.to_path_buf()),
            "{}",
        )
        .with_context(|| {
            format!(
                "{} does not load in this agent (wasmtap:decoder@{})",
                wasm.display(),
                wasmtap_runtime::WIT_VERSION
            )
        })?;
    let i = p.info();
    println!(
        "built {} ({} KiB): decoder {} {}, wasmtap:decoder@{}, ports {:?}",
        wasm.display(),
        bytes.len().div_ceil(1024),
        i.name,
        i.version,
        wasmtap_runtime::WIT_VERSION,
        i.ports
    );
    Ok(i.name.clone())
}

struct Collect(Vec<wasmtap_telemetry::model::SpanRecord>);

impl SpanSink for Collect {
    fn spans(&mut self, batch: Vec<wasmtap_telemetry::model::SpanRecord>) {
        self.0.extend(batch);
    }
}

/// One exchange as a golden line: keys sorted, ids left out.
fn golden_line(s: &wasmtap_telemetry::model::SpanRecord) -> String {
    let attrs = serde_json::to_value(wasmtap_telemetry::model::AttrsJson(&s.attributes))
        .unwrap_or_default();
    let mut m = Map::new();
    m.insert("operation".into(), Value::from(s.name.as_str()));
    m.insert("start_unix_nano".into(), Value::from(s.start_unix_nano));
    m.insert(
        "duration_ns".into(),
        Value::from(s.end_unix_nano.saturating_sub(s.start_unix_nano)),
    );
    m.insert(
        "status".into(),
        Value::from(match s.status {
            wasmtap_telemetry::model::StatusCode::Error => "error",
            _ => "ok",
        }),
    );
    if !s.status_message.is_empty() {
        m.insert(
            "status_message".into(),
            Value::from(s.status_message.as_str()),
        );
    }
    m.insert("service".into(), Value::from(s.resource.service_name()));
    m.insert("attributes".into(), attrs);
    // serde_json's Map keeps keys sorted (no preserve_order feature).
    Value::Object(m).to_string()
}

fn test(
    plugin: &Path,
    pcap: &Path,
    port: Option<u16>,
    expect: Option<&Path>,
    update: bool,
    config: &str,
) -> Result<()> {
    serde_json::from_str::<Value>(config).context("--config: not JSON")?;
    let bytes = std::fs::read(plugin).with_context(|| format!("read {}", plugin.display()))?;
    let host = Arc::new(wasmtap_runtime::PluginHost::new(
        wasmtap_runtime::RuntimeConfig {
            cache_dir: None,
            ..Default::default()
        },
    )?);
    let stem = plugin
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let mut p = host.load_limited(
        stem,
        &bytes,
        wasmtap_runtime::PluginSource::File(plugin.to_path_buf()),
        config,
        crate::plugins::sidecar_limits(plugin)?,
    )?;
    if let Some(port) = port {
        let mut ports = p.info().ports.clone();
        ports.push(port);
        p = p.with_ports(ports);
    }
    let registry = wasmtap_runtime::Registry::new(vec![Arc::new(p)]);
    let worker = wasmtap_runtime::Worker::following(&host, registry)?;
    let telemetry = wasmtap_telemetry::red::Telemetry::new(
        wasmtap_telemetry::services::ServiceMap::new(Vec::new(), Vec::new()),
        Default::default(),
    );
    let mut shard = Shard::new(
        ShardConfig {
            flows: Default::default(),
            batch: 1024,
            max_pending: 1024,
            response_timeout_ns: 30_000_000_000,
            tunnels: Default::default(),
        },
        worker,
        telemetry,
    );
    let mut source = wasmtap_capture::FileSource::open(pcap)?;
    let dlt = source.datalink();
    let Some(link) = wasmtap_decode::LinkType::from_dlt(dlt) else {
        bail!("{}: unsupported link type {dlt}", pcap.display());
    };
    let mut sink = Collect(Vec::new());
    let mut last = 0;
    while let Some(f) = source.next_frame()? {
        last = last.max(f.ts_ns);
        shard.frame(link, f.ts_ns, f.data, &mut sink);
    }
    shard.finish(last, &mut sink);
    let mut spans = sink.0;
    spans.sort_by_key(|s| (s.start_unix_nano, s.end_unix_nano));
    let lines: Vec<String> = spans.iter().map(golden_line).collect();

    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<30}  {:>10}  {:<6}  {:<24}  STATUS MESSAGE",
        "OPERATION", "DURATION", "STATUS", "SERVICE"
    )?;
    for s in &spans {
        writeln!(
            out,
            "{:<30}  {:>8}µs  {:<6}  {:<24}  {}",
            s.name,
            s.end_unix_nano.saturating_sub(s.start_unix_nano) / 1000,
            if s.status == wasmtap_telemetry::model::StatusCode::Error {
                "error"
            } else {
                "ok"
            },
            s.resource.service_name(),
            s.status_message
        )?;
    }
    let stats = shard.worker_stats();
    let cut = shard.handler.cut_by_decoder;
    writeln!(
        out,
        "{} exchanges; decoder stats: {:?}; cut by decoder failure: {cut}",
        spans.len(),
        stats.plugins
    )?;
    let Some(golden) = expect else {
        return Ok(());
    };
    let text = lines.iter().map(|l| format!("{l}\n")).collect::<String>();
    if update {
        std::fs::write(golden, &text).with_context(|| format!("write {}", golden.display()))?;
        writeln!(
            out,
            "wrote {} ({} exchanges)",
            golden.display(),
            lines.len()
        )?;
        return Ok(());
    }
    let want = std::fs::read_to_string(golden)
        .with_context(|| format!("read {} (create it with --update)", golden.display()))?;
    let want: Vec<&str> = want.lines().collect();
    let mut differ = 0;
    for i in 0..want.len().max(lines.len()) {
        let (w, g) = (want.get(i).copied(), lines.get(i).map(String::as_str));
        if w == g {
            continue;
        }
        differ += 1;
        writeln!(out, "exchange {}:", i + 1)?;
        match (w, g) {
            (Some(w), Some(g)) => {
                let (wv, gv): (Value, Value) = (
                    serde_json::from_str(w).unwrap_or(Value::Null),
                    serde_json::from_str(g).unwrap_or(Value::Null),
                );
                diff_fields(&mut out, "", &wv, &gv)?;
            }
            (Some(w), None) => writeln!(out, "  - missing: {w}")?,
            (None, Some(g)) => writeln!(out, "  + extra:   {g}")?,
            (None, None) => {}
        }
    }
    if differ > 0 {
        bail!(
            "{differ} of {} exchanges differ from {} (wasmtap plugin test ... --update accepts the new ones)",
            want.len().max(lines.len()),
            golden.display()
        );
    }
    writeln!(
        out,
        "matches {} ({} exchanges)",
        golden.display(),
        lines.len()
    )?;
    Ok(())
}

/// Prints the fields that differ, one per line: `- field: want` / `+ field: got`.
fn diff_fields(out: &mut dyn Write, path: &str, w: &Value, g: &Value) -> std::io::Result<()> {
    match (w, g) {
        (Value::Object(a), Value::Object(b)) => {
            let mut keys: Vec<&String> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                diff_fields(
                    out,
                    &p,
                    a.get(k).unwrap_or(&Value::Null),
                    b.get(k).unwrap_or(&Value::Null),
                )?;
            }
            Ok(())
        }
        _ if w == g => Ok(()),
        _ => {
            writeln!(out, "  - {path}: {w}")?;
            writeln!(out, "  + {path}: {g}")
        }
    }
}

fn inspect(plugin: &Path) -> Result<()> {
    let bytes = std::fs::read(plugin).with_context(|| format!("read {}", plugin.display()))?;
    let host = Arc::new(wasmtap_runtime::PluginHost::new(
        wasmtap_runtime::RuntimeConfig {
            cache_dir: None,
            ..Default::default()
        },
    )?);
    let stem = plugin
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin");
    let limits = crate::plugins::sidecar_limits(plugin)?;
    let t = Instant::now();
    let p = host.load_limited(
        stem,
        &bytes,
        wasmtap_runtime::PluginSource::File(plugin.to_path_buf()),
        "{}",
        limits,
    )?;
    let compile = t.elapsed();
    let info = p.info().clone();
    let t = Instant::now();
    let registry = wasmtap_runtime::Registry::new(vec![Arc::new(p)]);
    let worker = wasmtap_runtime::Worker::following(&host, registry)?;
    let instantiate = t.elapsed();
    let memory = worker
        .stats()
        .plugins
        .first()
        .map_or(0, |(_, s)| s.memory_high_water);
    let mut transports = Vec::new();
    if info.tcp {
        transports.push("tcp");
    }
    if info.udp {
        transports.push("udp");
    }
    println!("name            {}", info.name);
    println!("version         {}", info.version);
    println!(
        "contract        wasmtap:decoder@{}",
        wasmtap_runtime::WIT_VERSION
    );
    println!("protocols       {}", info.protocols.join(", "));
    println!("transports      {}", transports.join(", "));
    println!("ports           {:?}", info.ports);
    println!("imports         {}", info.imports.join(", "));
    println!(
        "attribute keys  {}",
        info.attribute_keys
            .iter()
            .map(|k| k.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("size            {} bytes", bytes.len());
    println!("sha256          {}", info.sha256);
    println!("compile         {:.1} ms", compile.as_secs_f64() * 1e3);
    println!(
        "instantiate     {:.1} ms (one worker: instance and store)",
        instantiate.as_secs_f64() * 1e3
    );
    println!("memory          {memory} bytes (high water so far)");
    let defaults = wasmtap_runtime::RuntimeConfig::default();
    let side = if limits == wasmtap_runtime::PluginLimits::default() {
        "agent defaults"
    } else {
        "its plugin.toml"
    };
    println!(
        "limits          {} MiB of memory, {} ms per call ({side})",
        limits.max_memory_bytes.unwrap_or(defaults.max_memory_bytes) >> 20,
        limits.call_deadline_ms.unwrap_or(defaults.call_deadline_ms)
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every SDK source file is vendored into new projects (a module added
    /// to the SDK and not listed here would break every new project).
    #[test]
    fn every_sdk_file_is_vendored() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk/src");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| format!("src/{}", e.unwrap().file_name().to_string_lossy()))
            .collect();
        files.sort();
        let mut vendored: Vec<String> = SDK_FILES.iter().map(|(r, _)| r.to_string()).collect();
        vendored.sort();
        assert_eq!(files, vendored);
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("kvrpc"));
        assert!(valid_name("my-proto_2"));
        assert!(!valid_name("2proto"));
        assert!(!valid_name("Proto"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name(""));
    }

    #[test]
    fn the_sample_capture_reads_back() {
        let dir = std::env::temp_dir().join(format!("wasmtap-sample-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("s.pcap");
        std::fs::write(&f, sample_capture(7878)).unwrap();
        let mut src = wasmtap_capture::FileSource::open(&f).unwrap();
        let mut n = 0;
        while src.next_frame().unwrap().is_some() {
            n += 1;
        }
        assert_eq!(n, 2 * 9);
        std::fs::remove_dir_all(&dir).ok();
    }
}
