//! Entry points for the fuzz targets in `tests/fuzz`: the configuration file
//! and the admin endpoint's request handling, run in-process. Not an API:
//! they exist so that the fuzzers reach the agent's own code.

use std::sync::Arc;

use crate::admin::AdminState;
use crate::config::Config;

/// Parses `text` as a configuration file and derives every setting the agent
/// derives from one at start (flow table, matching, runtime, telemetry,
/// Kubernetes in every mode, names, locality, filters, admin bounds,
/// per-decoder configuration). A bad file is an `Err` naming the problem.
pub fn config(text: &str) -> Result<(), String> {
    // `parse` validates: locality, filters and service rules compile there.
    let cfg = Config::parse(text).map_err(|e| format!("{e:#}"))?;
    let _ = format!("{cfg:?}");
    let _ = cfg.shard_config();
    let _ = cfg.runtime();
    let _ = cfg.telemetry();
    let _ = cfg.dns_names();
    let _ = cfg.cache_dir();
    let _ = cfg.admin.limits();
    let env = |k: &str| match k {
        "KUBERNETES_SERVICE_HOST" => Some("10.96.0.1".to_string()),
        "KUBERNETES_SERVICE_PORT" => Some("443".to_string()),
        "NODE_NAME" => Some("node-1".to_string()),
        "POD_NAME" => Some("agent-0".to_string()),
        "POD_NAMESPACE" => Some("monitoring".to_string()),
        _ => None,
    };
    use crate::live::Mode;
    for mode in [
        None,
        Some(Mode::Standalone),
        Some(Mode::Host),
        Some(Mode::Sidecar),
    ] {
        let _ = cfg.kubernetes(mode, env);
        let _ = cfg.kubernetes(mode, |_| None);
    }
    for name in ["http1", "redis", "iso8583", ""] {
        let json = cfg.plugin_json(name);
        serde_json::from_str::<serde_json::Value>(&json)
            .map_err(|e| format!("plugin_json({name:?}) is not JSON: {e}"))?;
    }
    Ok(())
}

/// Parses a filter specification, as JSON (`PUT /filters`) or as TOML (the
/// config's `[filters]`), and compiles it: the BPF text handed to libpcap,
/// if any.
pub fn filters(text: &str, json: bool) -> Result<Option<String>, String> {
    let spec: crate::filter::FilterSpec = if json {
        serde_json::from_str(text).map_err(|e| e.to_string())?
    } else {
        toml::from_str(text).map_err(|e| e.to_string())?
    };
    let compiled = spec.compile().map_err(|e| e.to_string())?;
    Ok(compiled.bpf())
}

/// The token [`admin`] requires.
pub const ADMIN_TOKEN: &str = "fuzz-token";
/// Marks the `/status` body [`admin`] serves.
pub const STATUS_MARK: &str = "status-mark";
/// Marks the `/metrics` body [`admin`] serves.
pub const METRICS_MARK: &str = "metrics-mark";

/// Writes `request` (raw bytes, as a client would send them; one or more
/// requests) to the admin endpoint's connection handler, with the token
/// [`ADMIN_TOKEN`] required, and returns what the endpoint wrote back,
/// whatever it was, once it has closed the connection.
pub fn admin(request: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => panic!("tokio runtime: {e}"),
    };
    let state = Arc::new(AdminState::default());
    if let Ok(mut g) = state.status.lock() {
        *g = format!("{{\"{STATUS_MARK}\":1}}");
    }
    if let Ok(mut g) = state.metrics.lock() {
        *g = format!("# {METRICS_MARK}\n");
    }
    let (client, server) = tokio::io::duplex(16 * 1024);
    rt.block_on(async move {
        let serve = crate::admin::serve_connection(
            server,
            state,
            Some(Arc::from(ADMIN_TOKEN)),
            false,
            std::time::Duration::from_secs(10),
        );
        let talk = async move {
            let (mut rd, mut wr) = tokio::io::split(client);
            let write = async move {
                let _ = wr.write_all(request).await;
                let _ = wr.shutdown().await;
            };
            let read = async move {
                let mut out = Vec::new();
                let _ = rd.read_to_end(&mut out).await;
                out
            };
            let ((), out) = tokio::join!(write, read);
            out
        };
        let ((), out) = tokio::join!(serve, talk);
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_guards_status_and_metrics_but_not_the_probes() {
        let out = admin(b"GET /status HTTP/1.1\r\nhost: x\r\n\r\n");
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 401"), "{out}");
        assert!(!out.contains(STATUS_MARK), "{out}");
        let out = admin(
            format!("GET /status HTTP/1.1\r\nauthorization: Bearer {ADMIN_TOKEN}\r\n\r\n")
                .as_bytes(),
        );
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains(STATUS_MARK), "{out}");
        let out = admin(b"GET /healthz HTTP/1.1\r\n\r\nGET /readyz HTTP/1.1\r\n\r\n");
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        assert!(out.contains("HTTP/1.1 503"), "not ready yet: {out}");
    }

    #[test]
    fn a_request_head_that_never_ends_is_cut_and_answered() {
        // Longer than the 64 KiB a head may take: refused at once.
        let mut req = b"GET /status HTTP/1.1\r\n".to_vec();
        req.extend(std::iter::repeat_n(b'a', 200_000));
        let out = admin(&req);
        let out = String::from_utf8_lossy(&out);
        assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out}");
    }

    #[test]
    fn a_bad_config_is_an_error_and_a_good_one_derives_everything() {
        assert!(config("").is_ok());
        assert!(config("[flows]\ntcp_idle_timeout_secs = 18446744073709551615\n").is_ok());
        let e = config("[admin]\nmax_connections = 0\n").unwrap_err();
        assert!(e.contains("admin.max_connections"), "{e}");
        let e = config("[flows]\nmax_flow = 3\n").unwrap_err();
        assert!(e.contains("max_flow"), "{e}");
    }
}
