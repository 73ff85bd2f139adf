//! Loading decoders: the embedded set, then `.wasm` files from a directory.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use wasmtap_runtime::{Plugin, PluginHost, PluginSource};

use crate::config::Config;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// Loads the embedded decoders, then every `*.wasm` in `dir` (sorted by name).
/// A file whose decoder name equals an embedded one replaces it. A file that
/// fails to load is skipped with one log line; the rest keep working.
pub fn load_all(host: &PluginHost, cfg: &Config, dir: Option<&Path>) -> Result<Vec<Arc<Plugin>>> {
    let mut set: Vec<Arc<Plugin>> = Vec::new();
    for (name, bytes) in embedded::EMBEDDED {
        let p = host
            .load(name, bytes, PluginSource::Embedded, &cfg.plugin_json(name))
            .with_context(|| format!("embedded decoder {name}"))?;
        set.push(Arc::new(p));
    }
    let Some(dir) = dir else { return Ok(set) };
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("plugin directory {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wasm") && p.is_file())
        .collect();
    files.sort();
    for f in files {
        let stem = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("plugin")
            .to_string();
        let bytes = match std::fs::read(&f) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(file = %f.display(), "plugin rejected: {e}");
                continue;
            }
        };
        match host.load(
            &stem,
            &bytes,
            PluginSource::File(f.clone()),
            &cfg.plugin_json(&stem),
        ) {
            Ok(p) => {
                set.retain(|old| old.info().name != p.info().name);
                set.push(Arc::new(p));
            }
            Err(e) => tracing::error!(file = %f.display(), "plugin rejected: {e}"),
        }
    }
    Ok(set)
}
