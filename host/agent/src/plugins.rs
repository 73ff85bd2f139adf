//! Loading decoders: the embedded set, then `.wasm` files from a directory,
//! and watching that directory so a new decoder takes effect without a restart.
//!
//! A file counts when it is complete: write it elsewhere and `rename` it into
//! the directory (an atomic step). A file that does not load (partial,
//! corrupt, incompatible WIT version, not on the allowlist) is rejected with
//! one log line and a counter; the previous version keeps running.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;
use wasmtap_runtime::{Plugin, PluginHost, PluginSource, Registry};

use crate::config::Config;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// Per-decoder settings in `<name>.toml` beside `<name>.wasm`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginToml {
    /// Server ports that replace the decoder's defaults.
    ports: Option<Vec<u16>>,
    /// The decoder's configuration (its `config` import), replacing the agent config's section.
    config: Option<toml::Value>,
    /// Bounds of this decoder that replace the agent's `[plugins]` defaults.
    limits: Option<TomlLimits>,
}

/// `[limits]` of a `plugin.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlLimits {
    /// Linear memory of one instance, MiB (1-4096).
    memory_mb: Option<u64>,
    /// CPU deadline of one call, milliseconds (1-10000).
    call_deadline_ms: Option<u64>,
}

impl TomlLimits {
    fn resolve(&self) -> Result<wasmtap_runtime::PluginLimits> {
        let mut l = wasmtap_runtime::PluginLimits::default();
        if let Some(mb) = self.memory_mb {
            anyhow::ensure!(
                (1..=4096).contains(&mb),
                "limits.memory_mb = {mb}: expected 1 to 4096"
            );
            l.max_memory_bytes = Some(usize::try_from(mb << 20)?);
        }
        if let Some(ms) = self.call_deadline_ms {
            anyhow::ensure!(
                (1..=10_000).contains(&ms),
                "limits.call_deadline_ms = {ms}: expected 1 to 10000"
            );
            l.call_deadline_ms = Some(ms);
        }
        Ok(l)
    }
}

/// The `[limits]` of the `plugin.toml` beside a component (`NAME.toml` for
/// `NAME.wasm`), as the agent would apply them; none when there is no such file.
pub(crate) fn sidecar_limits(wasm: &Path) -> Result<wasmtap_runtime::PluginLimits> {
    let side = wasm.with_extension("toml");
    let Ok(text) = std::fs::read_to_string(&side) else {
        return Ok(wasmtap_runtime::PluginLimits::default());
    };
    let t: PluginToml = toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", side.display(), e.to_string().trim()))?;
    match t.limits {
        Some(l) => l.resolve().with_context(|| format!("{}", side.display())),
        None => Ok(wasmtap_runtime::PluginLimits::default()),
    }
}

/// Counters of plugin loading.
#[derive(Debug, Default)]
pub struct LoadStats {
    /// Files loaded (first load or new version).
    pub loaded: AtomicU64,
    /// Files rejected (invalid, incompatible, not allowed).
    pub rejected: AtomicU64,
    /// Plugin sets published after the first.
    pub reloads: AtomicU64,
}

/// Loads decoders and remembers what it loaded, so a rescan recompiles only
/// what changed.
pub struct Loader {
    host: Arc<PluginHost>,
    cfg: Arc<Config>,
    dir: Option<PathBuf>,
    embedded: Vec<Arc<Plugin>>,
    /// Files loaded, by path: (sha256 of the bytes, plugin.toml text, plugin).
    files: BTreeMap<PathBuf, (String, Option<String>, Arc<Plugin>)>,
    /// Files rejected, by path and content hash (not retried until they change).
    rejected: BTreeMap<PathBuf, String>,
    /// Counters.
    pub stats: Arc<LoadStats>,
    /// Config sections already reported as matching no decoder.
    warned: std::collections::BTreeSet<String>,
    /// Permission refusals already reported (path, mode and owner in the text).
    perm_refused: std::collections::BTreeSet<String>,
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Loader {
    /// Loads the embedded decoders (an error there is fatal: the binary is broken).
    pub fn new(host: Arc<PluginHost>, cfg: Arc<Config>, dir: Option<&Path>) -> Result<Self> {
        let mut embedded_set = Vec::new();
        for (name, bytes) in embedded::EMBEDDED {
            let mut p = host
                .load(name, bytes, PluginSource::Embedded, &cfg.plugin_json(name))
                .with_context(|| format!("embedded decoder {name}"))?;
            if let Some(ports) = cfg.plugins.ports.get(&p.info().name) {
                p = p.with_ports(ports.clone());
            }
            embedded_set.push(Arc::new(p));
        }
        if let Some(d) = dir {
            anyhow::ensure!(
                d.is_dir(),
                "plugin directory {}: not a directory",
                d.display()
            );
            // Files dropped here become code in the agent.
            wasmtap_runtime::perms::only_agent_writes(d)
                .map_err(|e| anyhow::anyhow!("plugin directory: {e}"))?;
        }
        Ok(Self {
            host,
            cfg,
            dir: dir.map(Path::to_path_buf),
            embedded: embedded_set,
            warned: Default::default(),
            perm_refused: Default::default(),
            files: BTreeMap::new(),
            rejected: BTreeMap::new(),
            stats: Arc::default(),
        })
    }

    /// Rescans the directory and returns the plugin set: embedded decoders,
    /// each replaced by a file decoder of the same name, then the other file
    /// decoders in file-name order.
    pub fn scan(&mut self) -> Vec<Arc<Plugin>> {
        if let Some(dir) = self.dir.clone() {
            self.scan_dir(&dir);
        }
        let mut set = self.embedded.clone();
        for (_, _, p) in self.files.values() {
            match set.iter().position(|e| e.info().name == p.info().name) {
                Some(i) => set[i] = p.clone(),
                None => set.push(p.clone()),
            }
        }
        // A config section that names no decoder (nor a decoder file's stem)
        // is a typo that would silently do nothing: say so, once.
        let config_keys = self.cfg.plugins.config.keys().map(|k| ("config", k));
        let port_keys = self.cfg.plugins.ports.keys().map(|k| ("ports", k));
        for (table, key) in config_keys.chain(port_keys) {
            let used = set.iter().any(|p| &p.info().name == key)
                || self
                    .files
                    .keys()
                    .any(|f| f.file_stem().and_then(|s| s.to_str()) == Some(key.as_str()));
            if !used && self.warned.insert(format!("{table}.{key}")) {
                tracing::warn!(
                    section = %format!("plugins.{table}.{key}"),
                    "config section matches no loaded decoder (sections are keyed by the decoder's name)"
                );
            }
        }
        set
    }

    fn scan_dir(&mut self, dir: &Path) {
        let mut present: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
                .collect(),
            Err(e) => {
                tracing::error!(dir = %dir.display(), "cannot read the plugin directory: {e}");
                return;
            }
        };
        present.sort();
        // A removed file stops new sessions: it leaves the set.
        self.files.retain(|path, (_, _, p)| {
            let keep = present.contains(path);
            if !keep {
                tracing::info!(plugin = %p.info().name, file = %path.display(), "decoder file removed");
            }
            keep
        });
        for path in present {
            // Files anyone else could change are not loaded (and a loaded
            // one whose mode changed is dropped) until that is fixed.
            let side = path.with_extension("toml");
            let unsafe_perms = wasmtap_runtime::perms::only_agent_writes(&path)
                .and_then(|()| match side.exists() {
                    true => wasmtap_runtime::perms::only_agent_writes(&side),
                    false => Ok(()),
                })
                .err();
            if let Some(e) = unsafe_perms {
                if self.perm_refused.insert(e.clone()) {
                    tracing::error!(file = %path.display(), "plugin rejected: {e}");
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                }
                if let Some((_, _, p)) = self.files.remove(&path) {
                    tracing::info!(plugin = %p.info().name, "decoder file dropped: its permissions changed");
                }
                continue;
            }
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let sha = sha256_hex(&bytes);
            let side_text = std::fs::read_to_string(&side).ok();
            if let Some((old_sha, old_side, _)) = self.files.get(&path)
                && *old_sha == sha
                && *old_side == side_text
            {
                continue;
            }
            if self.rejected.get(&path) == Some(&sha) {
                continue;
            }
            match self.load_file(&path, &bytes, &sha, side_text.as_deref()) {
                Ok(p) => {
                    tracing::info!(
                        plugin = %p.info().name,
                        version = %p.info().version,
                        sha256 = %sha,
                        file = %path.display(),
                        "decoder loaded"
                    );
                    self.stats.loaded.fetch_add(1, Ordering::Relaxed);
                    self.rejected.remove(&path);
                    self.files.insert(path, (sha, side_text, Arc::new(p)));
                }
                Err(e) => {
                    let msg = format!("{e:#}").replace('\n', " ");
                    tracing::error!(file = %path.display(), "plugin rejected: {msg}");
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    self.rejected.insert(path, sha);
                }
            }
        }
    }

    fn load_file(
        &self,
        path: &Path,
        bytes: &[u8],
        sha: &str,
        side: Option<&str>,
    ) -> Result<Plugin> {
        if let Some(allow) = &self.cfg.plugins.allow_sha256
            && !allow.iter().any(|a| a.eq_ignore_ascii_case(sha))
        {
            anyhow::bail!("sha256 {sha} is not in plugins.allow_sha256");
        }
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin");
        let toml_cfg: PluginToml = match side {
            Some(text) => toml::from_str(text).map_err(|e| {
                anyhow::anyhow!(
                    "{}: {}",
                    path.with_extension("toml").display(),
                    e.to_string().trim()
                )
            })?,
            None => PluginToml::default(),
        };
        let json = match &toml_cfg.config {
            Some(v) => serde_json::to_string(v)?,
            None => self.cfg.plugin_json(stem),
        };
        let limits = match &toml_cfg.limits {
            Some(l) => l
                .resolve()
                .with_context(|| format!("{}", path.with_extension("toml").display()))?,
            None => wasmtap_runtime::PluginLimits::default(),
        };
        let mut p = self.host.load_limited(
            stem,
            bytes,
            PluginSource::File(path.to_path_buf()),
            &json,
            limits,
        )?;
        // The config section is the decoder's name (what `describe` says);
        // the file's stem is an alias. Reloading is cheap: the compiled
        // component is cached by content.
        let name = p.info().name.clone();
        let sections = &self.cfg.plugins.config;
        if toml_cfg.config.is_none()
            && name != stem
            && sections.contains_key(&name)
            && !sections.contains_key(stem)
        {
            p = self.host.load_limited(
                stem,
                bytes,
                PluginSource::File(path.to_path_buf()),
                &self.cfg.plugin_json(&name),
                limits,
            )?;
        }
        // Ports: the file's own plugin.toml, else the agent config's table.
        let ports = toml_cfg
            .ports
            .or_else(|| self.cfg.plugins.ports.get(&name).cloned());
        Ok(match ports {
            Some(ports) => p.with_ports(ports),
            None => p,
        })
    }
}

/// Watches the plugin directory and publishes a new set when its decoders
/// change. Events are debounced (150 ms of quiet); compilation happens here,
/// off the packet path.
pub fn watch(mut loader: Loader, registry: Registry) -> Result<std::thread::JoinHandle<()>> {
    use notify::Watcher;
    let Some(dir) = loader.dir.clone() else {
        anyhow::bail!("no plugin directory to watch");
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        if ev.is_ok() {
            let _ = tx.send(());
        }
    })
    .context("start watching the plugin directory")?;
    watcher
        .watch(&dir, notify::RecursiveMode::NonRecursive)
        .with_context(|| format!("watch {}", dir.display()))?;
    let handle = std::thread::Builder::new()
        .name("wasmtap-plugins".into())
        .spawn(move || {
            let _watcher = watcher;
            let mut current = fingerprint(&registry.current().plugins);
            while rx.recv().is_ok() {
                // Debounce: wait for 150 ms without events.
                while rx.recv_timeout(Duration::from_millis(150)).is_ok() {}
                let set = loader.scan();
                let fp = fingerprint(&set);
                if fp != current {
                    let v = registry.publish(set);
                    loader.stats.reloads.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(version = v, "plugin set published");
                    current = fp;
                }
            }
        })?;
    Ok(handle)
}

fn fingerprint(set: &[Arc<Plugin>]) -> Vec<(String, String, Vec<u16>)> {
    set.iter()
        .map(|p| {
            (
                p.info().name.clone(),
                p.info().sha256.clone(),
                p.info().ports.clone(),
            )
        })
        .collect()
}
