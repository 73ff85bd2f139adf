//! The agent's configuration file (TOML). Unknown fields are errors that name the field.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;

/// The whole configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Flow table and reassembly bounds.
    pub flows: FlowsConfig,
    /// Request/response matching.
    pub matching: MatchingConfig,
    /// Plugin runtime bounds and per-plugin configuration.
    pub plugins: PluginsConfig,
    /// Service map: which observed service a server endpoint is.
    pub services: Vec<ServiceEntry>,
    /// Telemetry limits.
    pub telemetry: TelemetrySection,
    /// What to capture and report (the operators' subscription); changeable at runtime.
    pub filters: crate::filter::FilterSpec,
    /// Tunnels taken off mirrored traffic (GRE, ERSPAN, VXLAN, Geneve).
    pub tunnels: TunnelsSection,
    /// Workload names from the Kubernetes API.
    pub kubernetes: KubernetesSection,
    /// Names learned from the traffic (DNS answers).
    pub names: NamesSection,
    /// Which agent reports a call several agents see.
    pub locality: LocalitySection,
    /// Live capture falling behind: shedding whole new flows.
    pub overload: OverloadSection,
    /// The admin endpoint's bounds.
    pub admin: AdminSection,
}

/// Bounds of the admin endpoint (`--admin-listen`, `--metrics-listen`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// Connections served at once; more are closed at once and counted
    /// (`wasmtap.agent.admin.connections_refused`).
    pub max_connections: usize,
    /// A connection that sends no complete request head in this time is
    /// closed (counted in `wasmtap.agent.admin.connection_errors`).
    pub header_timeout_ms: u64,
}

impl Default for AdminSection {
    fn default() -> Self {
        let d = crate::admin::AdminLimits::default();
        Self {
            max_connections: d.max_connections,
            header_timeout_ms: d.header_timeout.as_millis() as u64,
        }
    }
}

impl AdminSection {
    /// The endpoint's bounds.
    pub fn limits(&self) -> crate::admin::AdminLimits {
        crate::admin::AdminLimits {
            max_connections: self.max_connections,
            header_timeout: std::time::Duration::from_millis(self.header_timeout_ms),
        }
    }
}

/// Live capture falling behind the wire.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OverloadSection {
    /// Shed new flows when packets are handled this long after they were
    /// captured (0: never shed).
    pub shed_after_ms: u64,
    /// Take new flows again once the lag is back under this.
    pub resume_below_ms: u64,
}

impl Default for OverloadSection {
    fn default() -> Self {
        Self {
            shed_after_ms: 2000,
            resume_below_ms: 500,
        }
    }
}

/// When to watch the Kubernetes API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// On when the agent runs in a cluster (`KUBERNETES_SERVICE_HOST`) or
    /// a kubeconfig is configured; for `locality.report`, on when the
    /// agent knows what is local (Kubernetes or `local_cidrs`).
    #[default]
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// Which pods the agent watches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KubeScope {
    /// By mode: this node's pods in host mode, the agent's own pod in
    /// sidecar mode, every pod otherwise.
    #[default]
    Auto,
    /// Pods on this node (`node_name`).
    Node,
    /// Every pod of the cluster.
    Cluster,
    /// The agent's own pod (`POD_NAMESPACE`, `POD_NAME`).
    Pod,
}

/// A setting Kubernetes needs is missing: an error when `enabled = "on"`;
/// with `auto`, a warning and no Kubernetes (names by address).
fn missing(enabled: Switch, why: &str) -> Result<Option<wasmtap_kube::KubeConfig>> {
    if enabled == Switch::On {
        anyhow::bail!("kubernetes: {why}");
    }
    tracing::warn!("kubernetes: off: {why}");
    Ok(None)
}

/// Workload names from the Kubernetes API.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubernetesSection {
    /// `auto`, `on` or `off`.
    pub enabled: Switch,
    /// A kubeconfig file; empty: `KUBECONFIG`, `~/.kube/config`, then the
    /// in-cluster service account.
    pub kubeconfig: String,
    /// `auto`, `node`, `cluster` or `pod`.
    pub scope: KubeScope,
    /// This node's name; empty: `NODE_NAME` (the downward API).
    pub node_name: String,
    /// Watch Services: their virtual IPs are named by the Service.
    pub services: bool,
    /// `service.name` template (`{name}`, `{workload}`, `{namespace}`,
    /// `{pod}`); empty: the derived name.
    pub service_name: String,
    /// A deleted pod's identity is kept this long.
    pub retain_deleted_secs: u64,
    /// Pods kept at most.
    pub max_pods: usize,
    /// Services and owners kept at most.
    pub max_objects: usize,
}

impl Default for KubernetesSection {
    fn default() -> Self {
        let d = wasmtap_kube::Settings::default();
        Self {
            enabled: Switch::Auto,
            kubeconfig: String::new(),
            scope: KubeScope::Auto,
            node_name: String::new(),
            services: true,
            service_name: String::new(),
            retain_deleted_secs: d.retain_deleted_ns / 1_000_000_000,
            max_pods: d.max_pods,
            max_objects: d.max_objects,
        }
    }
}

/// Names learned from the traffic.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamesSection {
    /// Name a server endpoint with no better name by the DNS name its
    /// clients resolved (answers the DNS decoder saw).
    pub dns: bool,
    /// Addresses the DNS name table holds at most.
    pub dns_max_addresses: usize,
    /// Added to an answer's TTL before its name expires.
    pub dns_hold_secs: u64,
}

impl Default for NamesSection {
    fn default() -> Self {
        let d = wasmtap_telemetry::names::DnsNamesConfig::default();
        Self {
            dns: false,
            dns_max_addresses: d.max_addresses,
            dns_hold_secs: d.hold_ns / 1_000_000_000,
        }
    }
}

/// Which agent reports a call several agents see.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalitySection {
    /// `auto`: the agent beside the server reports when the agent knows
    /// what is local; `on`: always that rule; `off`: every agent reports
    /// every call it sees.
    pub report: Switch,
    /// Addresses on this node (or in this pod), besides its pods.
    pub local_cidrs: Vec<String>,
    /// Addresses in the cluster, besides the pods and Services known.
    pub cluster_cidrs: Vec<String>,
}

/// Tunnels taken off mirrored traffic.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelsSection {
    /// Take tunnels off (the inner packets are the flows).
    pub enabled: bool,
    /// Nested tunnels taken off one frame at most.
    pub max_depth: u8,
    /// UDP port of VXLAN.
    pub vxlan_port: u16,
    /// UDP port of Geneve.
    pub geneve_port: u16,
}

impl Default for TunnelsSection {
    fn default() -> Self {
        let d = wasmtap_decode::TunnelConfig::default();
        Self {
            enabled: d.enabled,
            max_depth: d.max_depth,
            vxlan_port: d.vxlan_port,
            geneve_port: d.geneve_port,
        }
    }
}

/// Flow table and reassembly bounds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// Flows tracked at once; the least recently seen is evicted beyond it.
    pub max_flows: usize,
    /// Idle TCP flows end after this many seconds (capture time).
    pub tcp_idle_timeout_secs: u64,
    /// Idle UDP flows end after this many seconds.
    pub udp_idle_timeout_secs: u64,
    /// A hole in a TCP stream is reported as a gap after this wait (capture time).
    pub gap_timeout_ms: u64,
    /// Out-of-order bytes buffered per flow direction.
    pub max_ooo_bytes_per_direction: usize,
    /// Out-of-order bytes buffered over all flows.
    pub max_ooo_bytes_total: usize,
    /// With several interfaces, a packet seen on another one within this
    /// window is a copy and dropped (0 disables).
    pub dedup_window_ms: u64,
    /// Packet fingerprints remembered for deduplication.
    pub dedup_capacity: usize,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        Self {
            max_flows: 262_144,
            tcp_idle_timeout_secs: 300,
            udp_idle_timeout_secs: 60,
            gap_timeout_ms: 2_000,
            max_ooo_bytes_per_direction: 1 << 20,
            max_ooo_bytes_total: 256 << 20,
            dedup_window_ms: 50,
            dedup_capacity: 65_536,
        }
    }
}

/// Request/response matching.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MatchingConfig {
    /// A request without response after this long becomes an error span.
    pub response_timeout_ms: u64,
    /// Requests waiting per flow; beyond it the oldest becomes unanswered.
    pub max_pending_per_flow: usize,
}

impl Default for MatchingConfig {
    fn default() -> Self {
        Self {
            response_timeout_ms: 30_000,
            max_pending_per_flow: 1024,
        }
    }
}

/// Plugin runtime bounds and per-plugin configuration.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Linear memory per plugin instance, MiB.
    pub max_memory_mib: usize,
    /// Unconsumed bytes kept per flow direction, KiB.
    pub max_pending_kib: usize,
    /// Messages accepted per call.
    pub max_messages_per_call: usize,
    /// Attributes kept per message.
    pub max_attributes_per_message: usize,
    /// Bytes kept of an attribute value.
    pub max_attribute_value_len: usize,
    /// CPU deadline of one decoder call, milliseconds (0 disables deadlines).
    pub call_deadline_ms: u64,
    /// Directory of compiled decoders, keyed by content hash ("" disables).
    /// Default: `$XDG_CACHE_HOME/wasmtap`, else `$HOME/.cache/wasmtap`.
    pub cache_dir: Option<String>,
    /// When set, only `.wasm` files with one of these SHA-256 digests (hex) load.
    pub allow_sha256: Option<Vec<String>>,
    /// Per-plugin configuration, by plugin name; handed to the plugin as JSON.
    pub config: BTreeMap<String, toml::Value>,
    /// Server ports per decoder name, replacing the decoder's defaults
    /// (`kafka = [9092, 19092]`); a `plugin.toml` beside a file wins.
    /// Flows on these ports go to that decoder first, and a flow whose
    /// handshake was not captured takes its server side from them.
    pub ports: BTreeMap<String, Vec<u16>>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        let d = wasmtap_runtime::RuntimeConfig::default();
        Self {
            max_memory_mib: d.max_memory_bytes >> 20,
            max_pending_kib: d.max_pending_bytes >> 10,
            max_messages_per_call: d.max_messages_per_call,
            max_attributes_per_message: d.max_attributes_per_message,
            max_attribute_value_len: d.max_attribute_value_len,
            call_deadline_ms: d.call_deadline_ms,
            cache_dir: None,
            allow_sha256: None,
            config: BTreeMap::new(),
            ports: BTreeMap::new(),
        }
    }
}

/// One service-map entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceEntry {
    /// `10.0.0.0/8`, `10.1.2.3:8080`, `[2001:db8::1]:80`, `:5432`.
    #[serde(rename = "match")]
    pub matches: String,
    /// The `service.name` to report.
    pub name: String,
}

/// Telemetry: limits, indicators, export.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySection {
    /// Series per metric family (and operations tracked) before new ones go to the overflow series.
    pub max_series: usize,
    /// Distinct observed services; beyond it endpoints are reported as service `_OTHER`.
    pub max_services: usize,
    /// Service-graph edges.
    pub max_edges: usize,
    /// L4 client/server pairs.
    pub max_l4_pairs: usize,
    /// Spans per batch handed to outputs.
    pub batch_spans: usize,
    /// Series unchanged for this long are dropped from export (0: never).
    pub stale_series_secs: u64,
    /// A silent operation or service is reported (time since its last call) for this long.
    pub silence_expiry_secs: u64,
    /// Live capture: metrics are exported (OTLP) and refreshed for scrapes this often.
    pub export_interval_secs: u64,
    /// `cumulative` (default) or `delta` sums and histograms (OTLP and `--metrics-out`).
    pub temporality: wasmtap_telemetry::model::Temporality,
    /// Route templates that win over the heuristic (`/api/v1/orders/{order}`, `/files/*`).
    pub routes: Vec<String>,
    /// Extra header names whose attributes never leave the agent (besides
    /// Authorization, Proxy-Authorization, Cookie, Set-Cookie, X-Api-Key).
    pub redact_headers: Vec<String>,
    /// Do not export spans whose caller's trace context (`traceparent`
    /// flags, B3 sampled) says the trace is not sampled; metrics still count them.
    pub respect_sampled: bool,
    /// Response-time objectives.
    pub sla: SlaSection,
    /// Which spans are kept (metrics always count every exchange).
    pub sampling: SamplingSection,
}

impl Default for TelemetrySection {
    fn default() -> Self {
        let d = wasmtap_telemetry::red::TelemetryConfig::default();
        Self {
            max_series: d.max_series,
            max_services: d.max_services,
            max_edges: d.max_edges,
            max_l4_pairs: d.max_l4_pairs,
            batch_spans: 1024,
            stale_series_secs: d.stale_after_ns / 1_000_000_000,
            silence_expiry_secs: d.silence_expiry_ns / 1_000_000_000,
            export_interval_secs: 10,
            temporality: d.temporality,
            routes: Vec::new(),
            redact_headers: Vec::new(),
            respect_sampled: d.respect_sampled,
            sla: SlaSection::default(),
            sampling: SamplingSection::default(),
        }
    }
}

/// Span sampling: the share of traces kept, and what is kept whatever it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingSection {
    /// Share of traces whose spans are kept, 0 to 1, by trace id (1: all).
    pub ratio: f64,
    /// Keep failed exchanges' spans (error, no response) whatever the ratio.
    pub keep_errors: bool,
    /// Keep the spans of exchanges slower than their SLA threshold whatever the ratio.
    pub keep_sla_breaches: bool,
}

impl Default for SamplingSection {
    fn default() -> Self {
        let d = wasmtap_telemetry::red::Sampling::default();
        Self {
            ratio: d.ratio,
            keep_errors: d.keep_errors,
            keep_sla_breaches: d.keep_sla_breaches,
        }
    }
}

/// Response-time objectives (SLA): an exchange answered within its
/// threshold meets it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlaSection {
    /// Threshold when no rule matches, milliseconds.
    pub default_ms: f64,
    /// Rules, the first match wins.
    pub rules: Vec<SlaRuleEntry>,
}

impl Default for SlaSection {
    fn default() -> Self {
        Self {
            default_ms: 500.0,
            rules: Vec::new(),
        }
    }
}

/// One SLA rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaRuleEntry {
    /// `service.name`, or `*` for every service.
    pub service: String,
    /// Operation (`GET /users/{id}`); every operation when absent.
    pub operation: Option<String>,
    /// Threshold, milliseconds.
    pub threshold_ms: f64,
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("config file {}", path.display()))
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self> {
        let cfg: Config =
            toml::from_str(text).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<()> {
        let nonzero = [
            ("flows.max_flows", self.flows.max_flows as u64),
            (
                "flows.tcp_idle_timeout_secs",
                self.flows.tcp_idle_timeout_secs,
            ),
            (
                "flows.udp_idle_timeout_secs",
                self.flows.udp_idle_timeout_secs,
            ),
            (
                "matching.response_timeout_ms",
                self.matching.response_timeout_ms,
            ),
            (
                "matching.max_pending_per_flow",
                self.matching.max_pending_per_flow as u64,
            ),
            ("plugins.max_memory_mib", self.plugins.max_memory_mib as u64),
            (
                "plugins.max_pending_kib",
                self.plugins.max_pending_kib as u64,
            ),
            (
                "plugins.max_messages_per_call",
                self.plugins.max_messages_per_call as u64,
            ),
            ("telemetry.max_series", self.telemetry.max_series as u64),
            ("telemetry.max_services", self.telemetry.max_services as u64),
            ("telemetry.max_edges", self.telemetry.max_edges as u64),
            ("telemetry.max_l4_pairs", self.telemetry.max_l4_pairs as u64),
            (
                "telemetry.export_interval_secs",
                self.telemetry.export_interval_secs,
            ),
            (
                "telemetry.silence_expiry_secs",
                self.telemetry.silence_expiry_secs,
            ),
            ("telemetry.batch_spans", self.telemetry.batch_spans as u64),
            ("kubernetes.max_pods", self.kubernetes.max_pods as u64),
            ("kubernetes.max_objects", self.kubernetes.max_objects as u64),
            (
                "names.dns_max_addresses",
                self.names.dns_max_addresses as u64,
            ),
            ("admin.max_connections", self.admin.max_connections as u64),
            ("admin.header_timeout_ms", self.admin.header_timeout_ms),
        ];
        for (name, v) in nonzero {
            anyhow::ensure!(v > 0, "{name} must be greater than 0");
        }
        anyhow::ensure!(
            self.plugins.max_memory_mib <= 4096,
            "plugins.max_memory_mib must be at most 4096"
        );
        self.filters.compile().map_err(|e| anyhow::anyhow!("{e}"))?;
        self.locality()?;
        anyhow::ensure!(
            self.overload.shed_after_ms == 0
                || self.overload.resume_below_ms < self.overload.shed_after_ms,
            "overload.resume_below_ms must be below overload.shed_after_ms"
        );
        for (i, h) in self.plugins.allow_sha256.iter().flatten().enumerate() {
            anyhow::ensure!(
                h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()),
                "plugins.allow_sha256[{i}]: not a SHA-256 hex digest"
            );
        }
        let ratio = self.telemetry.sampling.ratio;
        anyhow::ensure!(
            ratio.is_finite() && (0.0..=1.0).contains(&ratio),
            "telemetry.sampling.ratio must be between 0 and 1 (got {ratio})"
        );
        let ms_ok = |v: f64| v.is_finite() && v > 0.0 && v < 86_400_000.0;
        anyhow::ensure!(
            ms_ok(self.telemetry.sla.default_ms),
            "telemetry.sla.default_ms must be a positive number of milliseconds"
        );
        for (i, r) in self.telemetry.sla.rules.iter().enumerate() {
            anyhow::ensure!(
                ms_ok(r.threshold_ms),
                "telemetry.sla.rules[{i}].threshold_ms must be a positive number of milliseconds"
            );
            anyhow::ensure!(
                !r.service.trim().is_empty(),
                "telemetry.sla.rules[{i}].service is empty (use \"*\" for every service)"
            );
        }
        for (i, r) in self.telemetry.routes.iter().enumerate() {
            wasmtap_telemetry::route::RoutePattern::parse(r)
                .map_err(|e| anyhow::anyhow!("telemetry.routes[{i}]: {e}"))?;
        }
        for (i, s) in self.services.iter().enumerate() {
            wasmtap_telemetry::services::ServiceRule::parse(&s.matches, &s.name)
                .map_err(|e| anyhow::anyhow!("services[{i}]: {e}"))?;
        }
        Ok(())
    }

    /// `locality.local_cidrs` and `locality.cluster_cidrs`, parsed (an
    /// address alone is a /32 or /128).
    pub fn locality(&self) -> Result<(Vec<ipnet::IpNet>, Vec<ipnet::IpNet>)> {
        let parse = |key: &str, list: &[String]| {
            list.iter()
                .enumerate()
                .map(|(i, s)| {
                    s.parse::<ipnet::IpNet>()
                        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| {
                            anyhow::anyhow!("locality.{key}[{i}]: {s:?} is not an address or CIDR")
                        })
                })
                .collect::<Result<Vec<_>>>()
        };
        Ok((
            parse("local_cidrs", &self.locality.local_cidrs)?,
            parse("cluster_cidrs", &self.locality.cluster_cidrs)?,
        ))
    }

    /// The packet path's settings (times in ns, saturating: a huge number
    /// of seconds means "never", not an overflow).
    pub fn shard_config(&self) -> crate::pipeline::ShardConfig {
        const S: u64 = 1_000_000_000;
        const MS: u64 = 1_000_000;
        crate::pipeline::ShardConfig {
            flows: wasmtap_flow::FlowConfig {
                max_flows: self.flows.max_flows,
                tcp_idle_timeout_ns: self.flows.tcp_idle_timeout_secs.saturating_mul(S),
                udp_idle_timeout_ns: self.flows.udp_idle_timeout_secs.saturating_mul(S),
                gap_timeout_ns: self.flows.gap_timeout_ms.saturating_mul(MS),
                max_ooo_bytes_per_direction: self.flows.max_ooo_bytes_per_direction,
                max_ooo_bytes_total: self.flows.max_ooo_bytes_total,
                ..Default::default()
            },
            batch: self.telemetry.batch_spans,
            max_pending: self.matching.max_pending_per_flow,
            response_timeout_ns: self.matching.response_timeout_ms.saturating_mul(MS),
            tunnels: wasmtap_decode::TunnelConfig {
                enabled: self.tunnels.enabled,
                max_depth: self.tunnels.max_depth,
                vxlan_port: self.tunnels.vxlan_port,
                geneve_port: self.tunnels.geneve_port,
            },
        }
    }

    /// The DNS name table's settings, when names are learned from DNS.
    pub fn dns_names(&self) -> Option<wasmtap_telemetry::names::DnsNamesConfig> {
        self.names
            .dns
            .then(|| wasmtap_telemetry::names::DnsNamesConfig {
                max_addresses: self.names.dns_max_addresses,
                hold_ns: self.names.dns_hold_secs.saturating_mul(1_000_000_000),
                ..Default::default()
            })
    }

    /// What to watch in Kubernetes, if anything: `mode` is the live
    /// capture's (`None` in replay, where `auto` means off unless a
    /// kubeconfig is configured). `env` reads the environment.
    pub fn kubernetes(
        &self,
        mode: Option<crate::live::Mode>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<wasmtap_kube::KubeConfig>> {
        use crate::live::Mode;
        let k = &self.kubernetes;
        let in_cluster = env("KUBERNETES_SERVICE_HOST").is_some_and(|v| !v.is_empty());
        let on = match k.enabled {
            Switch::Off => false,
            Switch::On => true,
            Switch::Auto => !k.kubeconfig.is_empty() || (mode.is_some() && in_cluster),
        };
        if !on {
            return Ok(None);
        }
        let node = Some(k.node_name.clone())
            .filter(|n| !n.is_empty())
            .or_else(|| env("NODE_NAME").filter(|n| !n.is_empty()));
        let scope = match (k.scope, mode) {
            (KubeScope::Cluster, _) | (KubeScope::Auto, None | Some(Mode::Standalone)) => {
                wasmtap_kube::Scope::Cluster
            }
            (KubeScope::Node, _) | (KubeScope::Auto, Some(Mode::Host)) => match &node {
                Some(n) => wasmtap_kube::Scope::Node(n.clone()),
                None => {
                    return missing(
                        k.enabled,
                        "watching this node's pods needs its name: set kubernetes.node_name or NODE_NAME (the downward API's spec.nodeName)",
                    );
                }
            },
            (KubeScope::Pod, _) | (KubeScope::Auto, Some(Mode::Sidecar)) => {
                match (env("POD_NAMESPACE"), env("POD_NAME")) {
                    (Some(ns), Some(name)) if !ns.is_empty() && !name.is_empty() => {
                        wasmtap_kube::Scope::Pod(ns, name)
                    }
                    _ => {
                        return missing(
                            k.enabled,
                            "watching the agent's own pod needs POD_NAMESPACE and POD_NAME (the downward API)",
                        );
                    }
                }
            }
        };
        Ok(Some(wasmtap_kube::KubeConfig {
            kubeconfig: Some(&k.kubeconfig)
                .filter(|p| !p.is_empty())
                .map(std::path::PathBuf::from),
            scope,
            services: k.services,
            settings: wasmtap_kube::Settings {
                node_name: node,
                service_name_template: Some(k.service_name.clone()).filter(|t| !t.is_empty()),
                retain_deleted_ns: k.retain_deleted_secs.saturating_mul(1_000_000_000),
                max_pods: k.max_pods,
                max_objects: k.max_objects,
            },
            publish_every: std::time::Duration::from_millis(200),
        }))
    }

    /// The telemetry stage's settings.
    pub fn telemetry(&self) -> wasmtap_telemetry::red::TelemetryConfig {
        let t = &self.telemetry;
        let ns = |ms: f64| (ms * 1e6) as u64;
        let mut redact = wasmtap_telemetry::red::default_redactions();
        for h in &t.redact_headers {
            let h = h.trim().to_ascii_lowercase();
            redact.push(format!("http.request.header.{h}"));
            redact.push(format!("http.response.header.{h}"));
        }
        wasmtap_telemetry::red::TelemetryConfig {
            max_series: t.max_series,
            max_services: t.max_services,
            max_edges: t.max_edges,
            max_l4_pairs: t.max_l4_pairs,
            stale_after_ns: t.stale_series_secs.saturating_mul(1_000_000_000),
            silence_expiry_ns: t.silence_expiry_secs.saturating_mul(1_000_000_000),
            sla_default_ns: ns(t.sla.default_ms),
            sla_rules: t
                .sla
                .rules
                .iter()
                .map(|r| wasmtap_telemetry::red::SlaRule {
                    service: r.service.clone(),
                    operation: r.operation.clone(),
                    threshold_ns: ns(r.threshold_ms),
                })
                .collect(),
            router: wasmtap_telemetry::route::Router::new(
                t.routes
                    .iter()
                    .filter_map(|r| wasmtap_telemetry::route::RoutePattern::parse(r).ok())
                    .collect(),
            ),
            temporality: t.temporality,
            redact_keys: redact,
            respect_sampled: t.respect_sampled,
            sampling: wasmtap_telemetry::red::Sampling {
                ratio: t.sampling.ratio,
                keep_errors: t.sampling.keep_errors,
                keep_sla_breaches: t.sampling.keep_sla_breaches,
            },
        }
    }

    /// The plugin runtime bounds.
    pub fn runtime(&self) -> wasmtap_runtime::RuntimeConfig {
        wasmtap_runtime::RuntimeConfig {
            max_memory_bytes: self.plugins.max_memory_mib << 20,
            max_pending_bytes: self.plugins.max_pending_kib << 10,
            max_messages_per_call: self.plugins.max_messages_per_call,
            max_attributes_per_message: self.plugins.max_attributes_per_message,
            max_attribute_value_len: self.plugins.max_attribute_value_len,
            call_deadline_ms: self.plugins.call_deadline_ms,
            cache_dir: self.cache_dir(),
            ..Default::default()
        }
    }

    /// Where compiled decoders are cached, if anywhere.
    pub fn cache_dir(&self) -> Option<std::path::PathBuf> {
        match self.plugins.cache_dir.as_deref() {
            Some("") => None,
            Some(d) => Some(d.into()),
            None => std::env::var_os("XDG_CACHE_HOME")
                .map(std::path::PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cache"))
                })
                .map(|d| d.join("wasmtap")),
        }
    }

    /// A plugin's configuration section as JSON (`{}` if none).
    pub fn plugin_json(&self, name: &str) -> String {
        self.plugins
            .config
            .get(name)
            .and_then(|v| serde_json::to_string(v).ok())
            .unwrap_or_else(|| "{}".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_follows_the_mode_and_the_environment() {
        use crate::live::Mode;
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let auto = Config::parse("").unwrap();
        // Outside a cluster, or in replay: off.
        assert!(
            auto.kubernetes(Some(Mode::Host), env(&[]))
                .unwrap()
                .is_none()
        );
        let cluster: &[(&str, &str)] = &[
            ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
            ("NODE_NAME", "node-7"),
            ("POD_NAMESPACE", "shop"),
            ("POD_NAME", "web-1"),
        ];
        assert!(auto.kubernetes(None, env(cluster)).unwrap().is_none());
        let k = auto
            .kubernetes(Some(Mode::Host), env(cluster))
            .unwrap()
            .unwrap();
        assert_eq!(k.scope, wasmtap_kube::Scope::Node("node-7".into()));
        assert_eq!(k.settings.node_name.as_deref(), Some("node-7"));
        let k = auto
            .kubernetes(Some(Mode::Sidecar), env(cluster))
            .unwrap()
            .unwrap();
        assert_eq!(
            k.scope,
            wasmtap_kube::Scope::Pod("shop".into(), "web-1".into())
        );
        // A missing node name: auto turns Kubernetes off, "on" is an error.
        let no_node: &[(&str, &str)] = &[("KUBERNETES_SERVICE_HOST", "10.96.0.1")];
        assert!(
            auto.kubernetes(Some(Mode::Host), env(no_node))
                .unwrap()
                .is_none()
        );
        let on = Config::parse("[kubernetes]\nenabled = \"on\"\n").unwrap();
        let e = on.kubernetes(Some(Mode::Host), env(no_node)).unwrap_err();
        assert!(format!("{e}").contains("NODE_NAME"), "{e}");
        // A kubeconfig turns it on in replay too; the scope can be forced.
        let kc = Config::parse(
            "[kubernetes]\nkubeconfig = \"/k\"\nscope = \"cluster\"\nservice_name = \"{namespace}.{name}\"\n",
        )
        .unwrap();
        let k = kc.kubernetes(None, env(&[])).unwrap().unwrap();
        assert_eq!(k.scope, wasmtap_kube::Scope::Cluster);
        assert_eq!(k.kubeconfig, Some(std::path::PathBuf::from("/k")));
        assert_eq!(
            k.settings.service_name_template.as_deref(),
            Some("{namespace}.{name}")
        );
        let off = Config::parse("[kubernetes]\nenabled = \"off\"\n").unwrap();
        assert!(
            off.kubernetes(Some(Mode::Host), env(cluster))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn locality_ranges_parse_or_name_the_bad_entry() {
        let c = Config::parse(
            "[locality]\nlocal_cidrs = [\"10.0.1.0/24\", \"10.0.9.9\"]\ncluster_cidrs = [\"10.0.0.0/16\"]\n",
        )
        .unwrap();
        let (local, cluster) = c.locality().unwrap();
        assert_eq!(local.len(), 2);
        assert_eq!(local[1].to_string(), "10.0.9.9/32");
        assert_eq!(cluster[0].to_string(), "10.0.0.0/16");
        let e = Config::parse("[locality]\ncluster_cidrs = [\"10.0.0.0/99\"]\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("locality.cluster_cidrs[0]"),
            "{e:#}"
        );
        let e = Config::parse("[names]\ndns = true\ndns_max_addresses = 0\n").unwrap_err();
        assert!(
            format!("{e:#}").contains("names.dns_max_addresses"),
            "{e:#}"
        );
    }

    #[test]
    fn unknown_field_is_named() {
        let e = Config::parse("[flows]\nmax_flow = 3\n").unwrap_err();
        assert!(format!("{e:#}").contains("max_flow"), "{e:#}");
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::parse("[matching]\nresponse_timeout_ms = 0\n").unwrap_err();
        assert!(format!("{e:#}").contains("matching.response_timeout_ms"));
        let e = Config::parse("[[services]]\nmatch = \"10.0.0.0/33\"\nname = \"x\"\n").unwrap_err();
        assert!(format!("{e:#}").contains("services[0]"));
    }

    #[test]
    fn readme_example_parses() {
        let readme = include_str!("../../../README.md");
        let start = readme.find("```toml\n").expect("README has a toml block") + 8;
        let len = readme[start..].find("```").expect("closed block");
        let c = Config::parse(&readme[start..start + len]).unwrap();
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.matching.response_timeout_ms, 30_000);
        assert_eq!(c.telemetry.sla.rules.len(), 1);
        assert_eq!(
            c.telemetry().router.route("/api/v1/orders/X-1"),
            "/api/v1/orders/{order}"
        );
    }

    #[test]
    fn full_example_parses() {
        let c = Config::parse(
            r#"
[flows]
max_flows = 1000
[matching]
response_timeout_ms = 5000
[plugins]
max_memory_mib = 32
[plugins.config.http1]
mask_query = true
[[services]]
match = "10.0.0.0/8"
name = "internal"
"#,
        )
        .unwrap();
        assert_eq!(c.flows.max_flows, 1000);
        assert_eq!(c.plugin_json("http1"), r#"{"mask_query":true}"#);
        assert_eq!(c.plugin_json("redis"), "{}");
    }
}
