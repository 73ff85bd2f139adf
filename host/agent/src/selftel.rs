//! The agent's own telemetry: pipeline counters, printed or exported with the
//! OpenTelemetry SDK (as service `wasmtap-agent`).

use std::io::Write;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry_otlp::WithExportConfig;

/// One counter: metric name, attributes, value.
pub type Counter = (&'static str, Vec<(&'static str, String)>, u64);

/// Counters of one run, with their metric names.
pub struct Counters {
    values: Vec<Counter>,
    elapsed: Duration,
}

impl Counters {
    /// Collects the counters of a finished shard, with the telemetry
    /// stage's (`t`: a shard of several has none of its own).
    pub fn collect<S: wasmtap_pipeline::Stage>(
        shard: &wasmtap_pipeline::Shard<S>,
        t: &wasmtap_telemetry::red::TelemetryStats,
        spans: u64,
        export: Option<&wasmtap_export::ExportStats>,
        loads: &crate::plugins::LoadStats,
        elapsed: Duration,
    ) -> Self {
        let mut v: Vec<Counter> = Vec::new();
        v.push(("wasmtap.agent.frames", vec![], shard.frames));
        v.push(("wasmtap.agent.frame_bytes", vec![], shard.frame_bytes));
        v.push((
            "wasmtap.agent.capture.duplicates_dropped",
            vec![],
            shard.dedup.dropped,
        ));
        let d = shard.decode_stats();
        for e in wasmtap_decode::DecodeError::ALL {
            let n = d.error_count(e);
            if n == 0 {
                continue;
            }
            // Not TCP/UDP (ICMP, ARP...) is out of scope rather than an error.
            let name = match e {
                wasmtap_decode::DecodeError::NotTcpUdp | wasmtap_decode::DecodeError::NotIp => {
                    "wasmtap.agent.decode.skipped"
                }
                _ => "wasmtap.agent.decode.errors",
            };
            v.push((name, vec![("error_type", e.as_str().to_string())], n));
        }
        v.push(("wasmtap.agent.decode.truncated_frames", vec![], d.truncated));
        for t in wasmtap_decode::Tunnel::ALL {
            v.push((
                "wasmtap.agent.decode.tunnels",
                vec![("kind", t.as_str().into())],
                d.tunnels.get(t as usize).copied().unwrap_or(0),
            ));
        }
        v.push((
            "wasmtap.agent.decode.tunnel_too_deep",
            vec![],
            d.tunnel_too_deep,
        ));
        v.push((
            "wasmtap.agent.decode.fragments_reassembled",
            vec![],
            d.frag.reassembled,
        ));
        v.push((
            "wasmtap.agent.decode.fragments_dropped",
            vec![],
            d.frag.dropped,
        ));
        let f = shard.flow_stats();
        v.push(("wasmtap.agent.flows.opened", vec![], f.flows_opened));
        v.push(("wasmtap.agent.flows.evicted", vec![], f.flows_evicted));
        v.push((
            "wasmtap.agent.flows.evicted_bare",
            vec![],
            f.flows_evicted_bare,
        ));
        v.push(("wasmtap.agent.flows.shed", vec![], f.flows_shed));
        v.push(("wasmtap.agent.packets.shed", vec![], f.packets_shed));
        v.push((
            "wasmtap.agent.flows.shed_untracked",
            vec![],
            f.shed_untracked,
        ));
        v.push(("wasmtap.agent.reassembly.gaps", vec![], f.gaps));
        v.push(("wasmtap.agent.reassembly.gap_bytes", vec![], f.gap_bytes));
        v.push((
            "wasmtap.agent.reassembly.retransmitted_bytes",
            vec![],
            f.retransmitted_bytes,
        ));
        v.push((
            "wasmtap.agent.reassembly.ooo_cap_drops",
            vec![],
            f.ooo_cap_drops,
        ));
        v.push((
            "wasmtap.agent.reassembly.held_answers",
            vec![],
            f.held_answers,
        ));
        v.push((
            "wasmtap.agent.reassembly.holds_given_up",
            vec![],
            f.holds_given_up,
        ));
        use std::sync::atomic::Ordering::Relaxed;
        v.push((
            "wasmtap.agent.plugin_files.loaded",
            vec![],
            loads.loaded.load(Relaxed),
        ));
        v.push((
            "wasmtap.agent.plugin_files.rejected",
            vec![],
            loads.rejected.load(Relaxed),
        ));
        v.push((
            "wasmtap.agent.plugin_set.reloads",
            vec![],
            loads.reloads.load(Relaxed),
        ));
        for (name, version, _sha, state) in shard.loaded() {
            v.push((
                "wasmtap.agent.plugin.loaded",
                vec![
                    ("plugin", name),
                    ("version", version),
                    ("state", state.to_string()),
                ],
                1,
            ));
        }
        let w = shard.worker_stats();
        v.push(("wasmtap.agent.flows.no_decoder", vec![], w.no_decoder));
        v.push(("wasmtap.agent.flows.roles_swapped", vec![], w.roles_swapped));
        for (name, p) in &w.plugins {
            let per = |metric: &'static str, n: u64| (metric, vec![("plugin", name.clone())], n);
            v.push(per("wasmtap.agent.plugin.sessions", p.sessions));
            v.push(per(
                "wasmtap.agent.plugin.sessions_restarted",
                p.sessions_restarted,
            ));
            v.push(per("wasmtap.agent.plugin.calls", p.calls));
            v.push(per("wasmtap.agent.plugin.bytes_in", p.bytes_in));
            v.push(per("wasmtap.agent.plugin.messages", p.messages));
            v.push(per("wasmtap.agent.plugin.decode_errors", p.decode_errors));
            v.push(per("wasmtap.agent.plugin.traps", p.traps));
            v.push(per("wasmtap.agent.plugin.deadline_hits", p.deadline_hits));
            v.push(per("wasmtap.agent.plugin.limit_hits", p.limit_hits));
            v.push(per(
                "wasmtap.agent.plugin.pending_overflows",
                p.pending_overflows,
            ));
            v.push(per("wasmtap.agent.plugin.capped", p.capped));
            v.push(per("wasmtap.agent.plugin.sanitized", p.sanitized));
            v.push(per(
                "wasmtap.agent.plugin.clamped_timestamps",
                p.clamped_timestamps,
            ));
            v.push(per(
                "wasmtap.agent.plugin.contract_violations",
                p.contract_violations,
            ));
            v.push(per("wasmtap.agent.plugin.quarantines", p.quarantines));
            v.push(per(
                "wasmtap.agent.plugin.refused_quarantined",
                p.refused_quarantined,
            ));
            v.push(per(
                "wasmtap.agent.plugin.memory_high_water_bytes",
                p.memory_high_water,
            ));
            v.push(per("wasmtap.agent.plugin.time_ns", p.nanos));
            v.push(per("wasmtap.agent.plugin.log_dropped", p.log_dropped));
        }
        for (k, n) in &shard.handler.sessions_ended {
            v.push((
                "wasmtap.agent.sessions.ended",
                vec![("reason", k.to_string())],
                *n,
            ));
        }
        let m = &shard.handler.match_stats;
        v.push((
            "wasmtap.agent.exchanges",
            vec![("kind", "complete".into())],
            m.complete,
        ));
        v.push((
            "wasmtap.agent.exchanges",
            vec![("kind", "unanswered".into())],
            m.unanswered,
        ));
        v.push((
            "wasmtap.agent.exchanges",
            vec![("kind", "one_way".into())],
            m.one_way,
        ));
        v.push((
            "wasmtap.agent.responses.unmatched",
            vec![],
            m.unmatched_responses,
        ));
        v.push(("wasmtap.agent.spans", vec![], spans));
        v.push((
            "wasmtap.agent.packets.own_dropped",
            vec![],
            shard.own_dropped,
        ));
        v.push((
            "wasmtap.agent.exchanges.cut_by_decoder",
            vec![],
            shard.handler.cut_by_decoder,
        ));
        v.push((
            "wasmtap.agent.exchanges.cut_by_capture",
            vec![],
            shard.handler.cut_by_capture,
        ));
        v.push(("wasmtap.agent.exchanges.incomplete", vec![], m.incomplete));
        v.push(("wasmtap.agent.exchanges.cut_one_sided", vec![], m.one_sided));
        v.push((
            "wasmtap.agent.flows.one_sided",
            vec![],
            shard.handler.one_sided_flows,
        ));
        v.push((
            "wasmtap.agent.exchanges.filtered",
            vec![],
            shard.handler.filtered,
        ));
        v.push((
            "wasmtap.agent.metrics.overflow",
            vec![],
            t.series_overflowed,
        ));
        for (kind, n) in [
            ("services", t.services_overflowed),
            ("edges", t.edges_overflowed),
            ("l4_pairs", t.l4_overflowed),
        ] {
            v.push((
                "wasmtap.agent.metrics.cap_overflow",
                vec![("family", kind.into())],
                n,
            ));
        }
        v.push((
            "wasmtap.agent.metrics.stale_dropped",
            vec![],
            t.stale_dropped,
        ));
        v.push((
            "wasmtap.agent.spans.attributes_redacted",
            vec![],
            t.redacted,
        ));
        v.push(("wasmtap.agent.spans.unsampled", vec![], t.unsampled));
        v.push(("wasmtap.agent.spans.sampled_out", vec![], t.sampled_out));
        v.push((
            "wasmtap.agent.exchanges.reported_elsewhere",
            vec![],
            t.reported_elsewhere,
        ));
        v.push((
            "wasmtap.agent.names.dns_learned",
            vec![],
            t.dns_names_learned,
        ));
        v.push((
            "wasmtap.agent.names.dns_dropped",
            vec![],
            t.dns_names_dropped,
        ));
        v.push(("wasmtap.agent.names.dns_held", vec![], t.dns_names_held));
        if let Some(e) = export {
            v.push((
                "wasmtap.agent.export.spans",
                vec![("outcome", "exported".into())],
                e.spans_exported,
            ));
            v.push((
                "wasmtap.agent.export.spans",
                vec![("outcome", "failed".into())],
                e.spans_failed,
            ));
            v.push((
                "wasmtap.agent.export.spans",
                vec![("outcome", "dropped_queue_full".into())],
                e.spans_dropped_queue_full,
            ));
            v.push(("wasmtap.agent.export.retries", vec![], e.retries));
        }
        Self { values: v, elapsed }
    }

    /// Adds the Kubernetes watcher's counters.
    pub fn kubernetes(&mut self, k: &wasmtap_kube::KubeStatus) {
        use std::sync::atomic::Ordering::Relaxed;
        for (name, a) in [
            ("wasmtap.agent.kubernetes.events", &k.events),
            ("wasmtap.agent.kubernetes.lists", &k.lists),
            ("wasmtap.agent.kubernetes.errors", &k.errors),
            ("wasmtap.agent.kubernetes.pods", &k.pods),
            ("wasmtap.agent.kubernetes.services", &k.services),
            ("wasmtap.agent.kubernetes.dropped", &k.dropped),
        ] {
            self.values.push((name, vec![], a.load(Relaxed)));
        }
        self.values.push((
            "wasmtap.agent.kubernetes.synced",
            vec![],
            u64::from(k.synced.load(Relaxed)),
        ));
    }

    /// Adds the counters of another shard of the same run: a counter seen
    /// in both adds up; the per-plugin `loaded` mark and memory high-water
    /// take the larger.
    pub fn add_shard<S: wasmtap_pipeline::Stage>(&mut self, shard: &wasmtap_pipeline::Shard<S>) {
        let other = Self::collect(
            shard,
            &Default::default(),
            0,
            None,
            &Default::default(),
            self.elapsed,
        );
        for (name, attrs, n) in other.values {
            match self
                .values
                .iter_mut()
                .find(|(m, a, _)| *m == name && *a == attrs)
            {
                Some(c)
                    if name == "wasmtap.agent.plugin.loaded"
                        || name == "wasmtap.agent.plugin.memory_high_water_bytes" =>
                {
                    c.2 = c.2.max(n);
                }
                Some(c) => c.2 += n,
                None => self.values.push((name, attrs, n)),
            }
        }
    }

    /// Adds the admin endpoint's counters.
    pub fn admin(&mut self, a: &crate::admin::AdminState) {
        use std::sync::atomic::Ordering::Relaxed;
        self.values.push((
            "wasmtap.agent.admin.connections_refused",
            vec![],
            a.connections_refused.load(Relaxed),
        ));
        self.values.push((
            "wasmtap.agent.admin.connection_errors",
            vec![],
            a.connection_errors.load(Relaxed),
        ));
    }

    /// Adds counters (capture sources...).
    pub fn extend(&mut self, more: Vec<Counter>) {
        self.values.extend(more);
    }

    /// The counters.
    pub fn values(&self) -> &[Counter] {
        &self.values
    }

    /// Prints `name{attrs} value` lines.
    pub fn print(&self, w: &mut dyn Write) -> std::io::Result<()> {
        for (name, attrs, n) in &self.values {
            let a: Vec<String> = attrs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            if a.is_empty() {
                writeln!(w, "{name} {n}")?;
            } else {
                writeln!(w, "{name}{{{}}} {n}", a.join(","))?;
            }
        }
        writeln!(
            w,
            "wasmtap.agent.elapsed_seconds {:.3}",
            self.elapsed.as_secs_f64()
        )
    }
}

/// Exports the counters once through the OpenTelemetry SDK and OTLP.
///
/// Runs on a plain thread: the HTTP client is blocking, and the gRPC client
/// gets the export runtime's context.
pub fn export(rt: &tokio::runtime::Handle, cfg: &wasmtap_export::ExporterConfig, c: &Counters) {
    let endpoint = cfg.endpoint.trim_end_matches('/').to_string();
    let grpc = matches!(cfg.protocol, wasmtap_export::Protocol::Grpc);
    let values = c.values.clone();
    let rt = rt.clone();
    let res = std::thread::scope(|s| {
        s.spawn(move || -> Result<(), String> {
            let _guard = grpc.then(|| rt.enter());
            let exporter = if grpc {
                opentelemetry_otlp::MetricExporter::builder()
                    .with_tonic()
                    .with_endpoint(endpoint)
                    .with_timeout(Duration::from_secs(10))
                    .build()
            } else {
                opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_endpoint(format!("{endpoint}/v1/metrics"))
                    .with_timeout(Duration::from_secs(10))
                    .build()
            }
            .map_err(|e| e.to_string())?;
            let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
                .with_periodic_exporter(exporter)
                .with_resource(
                    opentelemetry_sdk::Resource::builder()
                        .with_service_name("wasmtap-agent")
                        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                        .build(),
                )
                .build();
            let meter = provider.meter("wasmtap");
            for (name, attrs, n) in values {
                let kv: Vec<KeyValue> = attrs
                    .into_iter()
                    .map(|(k, v)| KeyValue::new(k, v))
                    .collect();
                meter.u64_counter(name).build().add(n, &kv);
            }
            provider.shutdown().map_err(|e| e.to_string())
        })
        .join()
    });
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!("exporting the agent's own metrics failed: {e}"),
        Err(_) => {
            tracing::warn!("exporting the agent's own metrics failed: exporter thread panicked")
        }
    }
}
