//! Compiling plugins and the engine they share.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use crate::bindings::{Plugin as PluginBindings, PluginPre};
use crate::worker::StoreState;

/// Bounds applied to every plugin instance and call.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Linear-memory bytes one instance may grow to.
    pub max_memory_bytes: usize,
    /// Unconsumed bytes the host keeps per flow direction before it ends the session.
    pub max_pending_bytes: usize,
    /// Messages accepted from one call; the rest are dropped and counted.
    pub max_messages_per_call: usize,
    /// Attributes kept per message; the rest are dropped and counted.
    pub max_attributes_per_message: usize,
    /// Bytes kept of an attribute's string value (longer values are cut and counted).
    pub max_attribute_value_len: usize,
    /// Minimum `probe` confidence for a decoder to take a flow not matched by port.
    pub probe_threshold: u8,
    /// A flow no decoder recognises yet is probed again as more bytes arrive,
    /// up to this many per direction (a first message split over segments);
    /// beyond it the flow has no decoder (counted).
    pub probe_window_bytes: usize,
    /// CPU deadline of one plugin call, milliseconds (0: no deadline, and the
    /// engine is built without interruption checks).
    pub call_deadline_ms: u64,
    /// Period of the epoch ticker thread that enforces deadlines, milliseconds.
    pub epoch_tick_ms: u64,
    /// Directory of compiled components, keyed by content hash and engine
    /// (`None`: compile every time). Must be writable only by the agent.
    pub cache_dir: Option<PathBuf>,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            max_memory_bytes: 64 << 20,
            max_pending_bytes: 256 << 10,
            max_messages_per_call: 1024,
            max_attributes_per_message: 64,
            max_attribute_value_len: 4096,
            probe_threshold: 50,
            probe_window_bytes: 1024,
            call_deadline_ms: 50,
            epoch_tick_ms: 5,
            cache_dir: None,
        }
    }
}

/// Errors loading a plugin. Each names the plugin.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be configured.
    #[error("wasm engine: {0}")]
    Engine(String),
    /// The bytes are not a valid component, or compilation failed.
    #[error("plugin {name}: not a valid wasmtap decoder component: {reason}")]
    Compile {
        /// Plugin name (file name or embedded name).
        name: String,
        /// Why.
        reason: String,
    },
    /// The component does not implement the supported WIT world.
    #[error(
        "plugin {name}: incompatible with wasmtap:decoder@{}: {reason}",
        crate::WIT_VERSION
    )]
    Incompatible {
        /// Plugin name.
        name: String,
        /// Why.
        reason: String,
    },
    /// `describe` failed or returned nonsense.
    #[error("plugin {name}: describe failed: {reason}")]
    Describe {
        /// Plugin name.
        name: String,
        /// Why.
        reason: String,
    },
}

/// Attribute keys one decoder may declare.
const MAX_ATTRIBUTE_KEYS: usize = 1024;
/// Bytes in one attribute key.
const MAX_KEY_LEN: usize = 128;

/// Where a plugin came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginSource {
    /// Compiled into the agent binary.
    Embedded,
    /// Loaded from a file.
    File(PathBuf),
}

/// What a plugin says about itself (from `describe`), plus where it came from.
#[derive(Debug, Clone)]
pub struct PluginInfo {
    /// Decoder name.
    pub name: String,
    /// Decoder version.
    pub version: String,
    /// Protocols decoded (the first one names the protocol in telemetry).
    pub protocols: Vec<String>,
    /// Accepts TCP flows.
    pub tcp: bool,
    /// Accepts UDP datagrams.
    pub udp: bool,
    /// Default server ports.
    pub ports: Vec<u16>,
    /// Where it came from.
    pub source: PluginSource,
    /// SHA-256 of the component bytes, hex.
    pub sha256: String,
    /// The attribute keys the decoder declared; messages refer to them by index.
    pub attribute_keys: Arc<[wasmtap_telemetry::model::Key]>,
    /// The interfaces the component imports (`wasi:clocks/wall-clock@0.2.6`,
    /// `wasmtap:decoder/host@0.1.0`...), sorted.
    pub imports: Vec<String>,
}

impl PluginInfo {
    /// The protocol name used in telemetry (first declared protocol, else the decoder name).
    pub fn protocol(&self) -> &str {
        self.protocols
            .first()
            .map(String::as_str)
            .unwrap_or(&self.name)
    }
}

/// A compiled plugin, ready to instantiate on any worker.
pub struct Plugin {
    pub(crate) pre: PluginPre<StoreState>,
    pub(crate) info: PluginInfo,
    pub(crate) config_json: Arc<str>,
    /// Linear-memory bytes one instance may grow to.
    pub(crate) max_memory_bytes: usize,
    /// Epoch ticks one call may run (`None`: no deadlines).
    pub(crate) deadline_ticks: Option<u64>,
}

/// Bounds of one plugin that replace the runtime's defaults (an operator's
/// `plugin.toml`: a Python decoder carries an interpreter).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PluginLimits {
    /// Linear-memory bytes one instance may grow to.
    pub max_memory_bytes: Option<usize>,
    /// CPU deadline of one call, milliseconds (applies when the runtime has
    /// deadlines at all: `call_deadline_ms` > 0).
    pub call_deadline_ms: Option<u64>,
}

impl Plugin {
    /// What the plugin says about itself.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// Replaces the default server ports (an operator's `plugin.toml`).
    pub fn with_ports(mut self, ports: Vec<u16>) -> Self {
        self.info.ports = ports;
        self
    }
}

/// The wasm engine and linker shared by all plugins and workers.
pub struct PluginHost {
    pub(crate) engine: Engine,
    linker: Linker<StoreState>,
    pub(crate) config: RuntimeConfig,
    ticker: Option<Ticker>,
}

/// The thread that advances the engine's epoch, off the packet path.
struct Ticker {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.ticker.take();
    }
}

impl PluginHost {
    /// Creates the engine (Cranelift, component model) and the host linker.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let mut cfg = Config::new();
        cfg.wasm_component_model(true);
        let deadlines = config.call_deadline_ms > 0;
        // Epoch interruption rather than fuel: a load and compare at loop
        // heads and calls, cheaper than counting instructions.
        cfg.epoch_interruption(deadlines);
        let engine = Engine::new(&cfg).map_err(|e| RuntimeError::Engine(e.to_string()))?;
        let ticker = deadlines
            .then(|| {
                let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let (e, st) = (engine.clone(), stop.clone());
                let tick = std::time::Duration::from_millis(config.epoch_tick_ms.max(1));
                std::thread::Builder::new()
                    .name("wasmtap-epoch".into())
                    .spawn(move || {
                        while !st.load(std::sync::atomic::Ordering::Relaxed) {
                            std::thread::sleep(tick);
                            e.increment_epoch();
                        }
                    })
                    .map(|t| Ticker {
                        stop,
                        thread: Some(t),
                    })
                    .map_err(|e| RuntimeError::Engine(format!("epoch ticker: {e}")))
            })
            .transpose()?;
        let mut linker = Linker::new(&engine);
        // WASI is linked for plugins built for wasm32-wasip2 (and by other
        // languages' toolchains), but the context grants nothing: no
        // preopened directories, no sockets, no environment, no arguments.
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        PluginBindings::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| RuntimeError::Engine(e.to_string()))?;
        Ok(Self {
            engine,
            linker,
            config,
            ticker,
        })
    }

    /// The bounds in force.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Whether a cache entry and its directory can be changed only by the
    /// agent's user: a compiled component is loaded as code, unverified.
    fn cache_is_private(&self, entry: &Path) -> bool {
        let dir = entry.parent().unwrap_or(entry);
        match crate::perms::only_agent_writes(dir)
            .and_then(|()| crate::perms::only_agent_writes(entry))
        {
            Ok(()) => true,
            Err(e) => {
                tracing::error!("compiled-component cache not used: {e}");
                false
            }
        }
    }

    /// Compiles a component, through the on-disk cache when one is configured.
    fn compile(&self, name: &str, bytes: &[u8], sha256: &str) -> Result<Component, RuntimeError> {
        let cached = self.config.cache_dir.as_ref().map(|dir| {
            use std::hash::{Hash, Hasher};
            // The key covers the content and everything that makes compiled
            // code incompatible (wasmtime version, target, engine settings).
            let mut h = std::collections::hash_map::DefaultHasher::new();
            self.engine.precompile_compatibility_hash().hash(&mut h);
            dir.join(format!("{sha256}-{:016x}.cwasm", h.finish()))
        });
        if let Some(path) = &cached
            && path.is_file()
            && self.cache_is_private(path)
        {
            // SAFETY: the file was written by `Component::serialize` of an
            // engine with the same compatibility hash (it is in the name), in
            // the agent's own cache directory, which must be writable only by
            // the agent (documented). A file that fails wasmtime's own header
            // checks is an error, and we compile afresh.
            #[allow(unsafe_code)]
            let loaded = unsafe { Component::deserialize_file(&self.engine, path) };
            match loaded {
                Ok(c) => return Ok(c),
                Err(e) => {
                    tracing::warn!(file = %path.display(), "ignoring compiled-cache entry: {e}")
                }
            }
        }
        let component = Component::new(&self.engine, bytes).map_err(|e| RuntimeError::Compile {
            name: name.to_string(),
            reason: format!("{e:#}"),
        })?;
        if let Some(path) = &cached {
            // Write then rename: readers never see a partial entry.
            let write = || -> std::io::Result<()> {
                if let Some(dir) = path.parent() {
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)?;
                }
                let data = component.serialize().map_err(std::io::Error::other)?;
                let tmp = path.with_extension(format!("tmp{}", std::process::id()));
                std::fs::write(&tmp, data)?;
                std::fs::rename(&tmp, path)
            };
            if let Err(e) = write() {
                tracing::warn!(file = %path.display(), "cannot write the compiled cache: {e}");
            }
        }
        Ok(component)
    }

    /// Epoch ticks instantiation and `describe` may run: 20 call deadlines, at least 1 s.
    pub(crate) fn load_deadline_ticks(&self) -> Option<u64> {
        let tick = self.config.epoch_tick_ms.max(1);
        self.deadline_ticks()
            .map(|t| t.saturating_mul(20).max(1000u64.div_ceil(tick)))
    }

    /// Epoch ticks one call may run, rounded up (`None`: no deadlines).
    pub(crate) fn deadline_ticks(&self) -> Option<u64> {
        self.ticks(self.config.call_deadline_ms)
    }

    /// Epoch ticks of `ms` milliseconds, rounded up (`None`: the runtime has no deadlines).
    fn ticks(&self, ms: u64) -> Option<u64> {
        (self.config.call_deadline_ms > 0).then(|| {
            let tick = self.config.epoch_tick_ms.max(1);
            ms.max(1).div_ceil(tick).max(1)
        })
    }

    /// Compiles and validates a component, calls `describe` once, and returns
    /// the plugin ready for workers. `config_json` is what the plugin's
    /// `config` import returns.
    pub fn load(
        &self,
        name_hint: &str,
        bytes: &[u8],
        source: PluginSource,
        config_json: &str,
    ) -> Result<Plugin, RuntimeError> {
        self.load_limited(
            name_hint,
            bytes,
            source,
            config_json,
            PluginLimits::default(),
        )
    }

    /// [`PluginHost::load`], with bounds of this plugin's own.
    pub fn load_limited(
        &self,
        name_hint: &str,
        bytes: &[u8],
        source: PluginSource,
        config_json: &str,
        limits: PluginLimits,
    ) -> Result<Plugin, RuntimeError> {
        let max_memory_bytes = limits
            .max_memory_bytes
            .unwrap_or(self.config.max_memory_bytes);
        let deadline_ticks = match limits.call_deadline_ms {
            Some(ms) => self.ticks(ms),
            None => self.deadline_ticks(),
        };
        let sha256 = sha256_hex(bytes);
        let component = self.compile(name_hint, bytes, &sha256)?;
        let instance_pre =
            self.linker
                .instantiate_pre(&component)
                .map_err(|e| RuntimeError::Incompatible {
                    name: name_hint.to_string(),
                    reason: format!("{e:#}"),
                })?;
        let pre = PluginPre::new(instance_pre).map_err(|e| RuntimeError::Incompatible {
            name: name_hint.to_string(),
            reason: format!("{e:#}"),
        })?;
        let config_json: Arc<str> = Arc::from(config_json);
        // Describe once in a throwaway store to learn the plugin's identity.
        let mut store = crate::worker::new_store(
            &self.engine,
            max_memory_bytes,
            Arc::from(name_hint),
            config_json.clone(),
        );
        // Instantiation and `describe` run once per load: a generous deadline.
        if let Some(t) = self.load_deadline_ticks() {
            store.set_epoch_deadline(t.max(deadline_ticks.unwrap_or(0).saturating_mul(20)));
        }
        let bindings = pre
            .instantiate(&mut store)
            .map_err(|e| RuntimeError::Describe {
                name: name_hint.to_string(),
                reason: format!("{e:#}"),
            })?;
        let d = bindings
            .wasmtap_decoder_decoder()
            .call_describe(&mut store)
            .map_err(|e| RuntimeError::Describe {
                name: name_hint.to_string(),
                reason: format!("{e:#}"),
            })?;
        if d.name.is_empty() || d.name.len() > 64 {
            return Err(RuntimeError::Describe {
                name: name_hint.to_string(),
                reason: "name must be 1-64 bytes".into(),
            });
        }
        if d.attribute_keys.len() > MAX_ATTRIBUTE_KEYS
            || d.attribute_keys
                .iter()
                .any(|k| k.is_empty() || k.len() > MAX_KEY_LEN)
        {
            return Err(RuntimeError::Describe {
                name: name_hint.to_string(),
                reason: format!(
                    "attribute-keys: at most {MAX_ATTRIBUTE_KEYS} keys of 1-{MAX_KEY_LEN} bytes"
                ),
            });
        }
        let attribute_keys: Arc<[wasmtap_telemetry::model::Key]> = d
            .attribute_keys
            .iter()
            .map(|k| Arc::from(k.as_str()))
            .collect();
        use crate::bindings::wasmtap::decoder::types::Transport;
        let info = PluginInfo {
            attribute_keys,
            tcp: d.transports.contains(&Transport::Tcp),
            udp: d.transports.contains(&Transport::Udp),
            name: d.name,
            version: d.version,
            protocols: d.protocols,
            ports: d.default_ports,
            source,
            sha256,
            imports: {
                let mut v: Vec<String> = component
                    .component_type()
                    .imports(&self.engine)
                    .map(|(name, _)| name.to_string())
                    .collect();
                v.sort();
                v
            },
        };
        Ok(Plugin {
            pre,
            info,
            config_json,
            max_memory_bytes,
            deadline_ticks,
        })
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A published set of plugins; workers follow it (see [`crate::Worker::following`]).
pub struct PluginSet {
    /// Increases with every publication.
    pub version: u64,
    /// The plugins, in dispatch order (the first one claiming a port wins).
    pub plugins: Vec<Arc<Plugin>>,
}

/// Where the current plugin set is published. Cloning shares it.
///
/// Readers on the packet path do one atomic load per check; they take the
/// lock only when the version changed (a reload).
#[derive(Clone)]
pub struct Registry {
    inner: Arc<RegistryInner>,
}

struct RegistryInner {
    version: std::sync::atomic::AtomicU64,
    set: std::sync::Mutex<Arc<PluginSet>>,
}

impl Registry {
    /// A registry holding `plugins` as version 1.
    pub fn new(plugins: Vec<Arc<Plugin>>) -> Self {
        Self {
            inner: Arc::new(RegistryInner {
                version: std::sync::atomic::AtomicU64::new(1),
                set: std::sync::Mutex::new(Arc::new(PluginSet {
                    version: 1,
                    plugins,
                })),
            }),
        }
    }

    /// The version of the current set.
    pub fn version(&self) -> u64 {
        self.inner
            .version
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// The current set.
    // Taken by a worker only when the version it read has changed (a
    // reload), and by the loader when it publishes.
    #[allow(clippy::disallowed_methods)]
    pub fn current(&self) -> Arc<PluginSet> {
        match self.inner.set.lock() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Publishes a new set; returns its version.
    // The loader's thread, off the packet path.
    #[allow(clippy::disallowed_methods)]
    pub fn publish(&self, plugins: Vec<Arc<Plugin>>) -> u64 {
        let mut g = match self.inner.set.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let version = g.version + 1;
        *g = Arc::new(PluginSet { version, plugins });
        self.inner
            .version
            .store(version, std::sync::atomic::Ordering::Release);
        version
    }
}
