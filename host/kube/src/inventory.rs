//! What the agent keeps of the cluster, and the identity index built from
//! it. Sans-IO: the watcher hands objects in with the wall-clock time they
//! were seen; tests hand fixtures in.
//!
//! Only the fields used are kept (names, addresses, ports, owners, the
//! labels and annotations that name services), so memory grows with the
//! number of pods, not with the size of their specs.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use wasmtap_telemetry::identity::{IdentityIndex, Tenure, Workload};
use wasmtap_telemetry::model::KeyValue;

/// The annotation that names a pod's service (OpenTelemetry Operator).
pub const SERVICE_NAME_ANNOTATION: &str = "resource.opentelemetry.io/service.name";
/// The annotation that sets a pod's `service.namespace`.
pub const SERVICE_NAMESPACE_ANNOTATION: &str = "resource.opentelemetry.io/service.namespace";
/// The recommended label naming an application.
pub const APP_NAME_LABEL: &str = "app.kubernetes.io/name";
/// The recommended label naming the application a workload is part of.
pub const PART_OF_LABEL: &str = "app.kubernetes.io/part-of";

/// How the inventory names and bounds what it keeps.
#[derive(Debug, Clone)]
pub struct Settings {
    /// This agent's node: its pods are local (reported here).
    pub node_name: Option<String>,
    /// `service.name` template: `{name}` (the derived name), `{workload}`,
    /// `{namespace}`, `{pod}`. `None`: the derived name.
    pub service_name_template: Option<String>,
    /// How long a deleted pod's identity is kept (its last packets, late
    /// exchanges), in ns.
    pub retain_deleted_ns: u64,
    /// Pods kept at most (live and recently deleted); more are counted and
    /// not indexed.
    pub max_pods: usize,
    /// Services (and owners) kept at most.
    pub max_objects: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            node_name: None,
            service_name_template: None,
            retain_deleted_ns: 600_000_000_000,
            max_pods: 50_000,
            max_objects: 50_000,
        }
    }
}

/// One change from a watch (kube-runtime's `watcher::Event`, by kind).
#[derive(Debug)]
pub enum Change<K> {
    /// A (re)list begins: objects not listed again were deleted meanwhile.
    Init,
    /// One object of the list.
    InitApply(K),
    /// The list is complete.
    InitDone,
    /// An object was added or modified.
    Apply(K),
    /// An object was deleted.
    Delete(K),
}

#[derive(Debug, Clone, PartialEq)]
enum Owner {
    ReplicaSet(String),
    StatefulSet(String),
    DaemonSet(String),
    Job(String),
    Other,
}

#[derive(Debug, Clone)]
struct PodInfo {
    uid: String,
    name: String,
    namespace: String,
    node: Option<String>,
    ips: Vec<IpAddr>,
    host_network: bool,
    /// Declared container ports and the container that declares them.
    ports: Vec<(u16, Arc<str>)>,
    containers: Vec<Arc<str>>,
    owner: Option<Owner>,
    service_name: Option<String>,
    service_namespace: Option<String>,
    app_name: Option<String>,
    part_of: Option<String>,
    created_ns: u64,
    deleted_ns: Option<u64>,
}

#[derive(Debug, Clone)]
struct ServiceInfo {
    name: String,
    namespace: String,
    ips: Vec<IpAddr>,
    ports: Vec<u16>,
    created_ns: u64,
}

/// A kind's objects by key, with the buffer of a list in progress.
#[derive(Debug)]
struct Kind<T> {
    live: HashMap<String, T>,
    listing: Option<HashMap<String, T>>,
}

impl<T> Default for Kind<T> {
    fn default() -> Self {
        Self {
            live: HashMap::new(),
            listing: None,
        }
    }
}

impl<T> Kind<T> {
    /// Applies a change whose object was turned into `(key, value)`; a
    /// completed list replaces what was live (objects gone meanwhile leave).
    fn change(&mut self, c: Change<Option<(String, T)>>, max: usize, dropped: &mut u64) {
        match c {
            Change::Init => self.listing = Some(HashMap::new()),
            Change::InitApply(Some((k, v))) => {
                let l = self.listing.get_or_insert_with(HashMap::new);
                if l.len() < max {
                    l.insert(k, v);
                } else {
                    *dropped += 1;
                }
            }
            Change::InitDone => {
                if let Some(l) = self.listing.take() {
                    self.live = l;
                }
            }
            Change::Apply(Some((k, v))) => {
                if self.live.len() < max || self.live.contains_key(&k) {
                    self.live.insert(k, v);
                } else {
                    *dropped += 1;
                }
            }
            Change::Delete(Some((k, _))) => {
                self.live.remove(&k);
            }
            Change::InitApply(None) | Change::Apply(None) | Change::Delete(None) => {}
        }
    }
}

/// Counters of the inventory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InventoryStats {
    /// Pods known (live and recently deleted).
    pub pods: u64,
    /// Services known.
    pub services: u64,
    /// Objects not kept because a bound was reached.
    pub dropped: u64,
    /// Objects that could not be used (no name, no UID).
    pub unusable: u64,
}

/// The cluster as the agent knows it.
#[derive(Debug, Default)]
pub struct Inventory {
    settings: Settings,
    pods: HashMap<String, PodInfo>,
    pod_listing: Option<HashMap<String, PodInfo>>,
    /// ReplicaSet (namespace/name) → its Deployment.
    replica_sets: Kind<String>,
    /// Job (namespace/name) → its CronJob.
    jobs: Kind<String>,
    services: Kind<ServiceInfo>,
    dropped: u64,
    unusable: u64,
}

fn ns_of(t: &Option<Time>) -> Option<u64> {
    t.as_ref()
        .and_then(|t| u64::try_from(t.0.as_nanosecond()).ok())
}

fn controller(refs: &Option<Vec<OwnerReference>>) -> Option<&OwnerReference> {
    let refs = refs.as_ref()?;
    refs.iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| refs.first())
}

fn key(meta: &ObjectMeta) -> Option<String> {
    Some(format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or(""),
        meta.name.as_deref()?
    ))
}

fn parse_ips<'a>(list: impl Iterator<Item = &'a str>) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = list.filter_map(|s| s.parse().ok()).collect();
    v.dedup();
    v
}

impl Inventory {
    /// An empty inventory.
    pub fn new(settings: Settings) -> Self {
        Self {
            settings,
            ..Self::default()
        }
    }

    /// The inventory's counters.
    pub fn stats(&self) -> InventoryStats {
        InventoryStats {
            pods: self.pods.len() as u64,
            services: self.services.live.len() as u64,
            dropped: self.dropped,
            unusable: self.unusable,
        }
    }

    fn pod_info(&mut self, p: &Pod) -> Option<PodInfo> {
        let m = &p.metadata;
        let (Some(uid), Some(name)) = (m.uid.clone(), m.name.clone()) else {
            self.unusable += 1;
            return None;
        };
        let spec = p.spec.as_ref();
        let status = p.status.as_ref();
        let mut ips = status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|l| parse_ips(l.iter().map(|i| i.ip.as_str())))
            .unwrap_or_default();
        if ips.is_empty()
            && let Some(ip) = status.and_then(|s| s.pod_ip.as_deref())
        {
            ips = parse_ips(std::iter::once(ip));
        }
        let mut ports = Vec::new();
        let mut containers = Vec::new();
        for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
            let cname: Arc<str> = Arc::from(c.name.as_str());
            for port in c.ports.iter().flatten() {
                if let Ok(n) = u16::try_from(port.container_port)
                    && port.protocol.as_deref().is_none_or(|p| p != "SCTP")
                    && !ports.iter().any(|(p, _)| *p == n)
                {
                    ports.push((n, cname.clone()));
                }
            }
            containers.push(cname);
        }
        let owner = controller(&m.owner_references).map(|r| match r.kind.as_str() {
            "ReplicaSet" => Owner::ReplicaSet(r.name.clone()),
            "StatefulSet" => Owner::StatefulSet(r.name.clone()),
            "DaemonSet" => Owner::DaemonSet(r.name.clone()),
            "Job" => Owner::Job(r.name.clone()),
            _ => Owner::Other,
        });
        let label = |k: &str| m.labels.as_ref().and_then(|l| l.get(k)).cloned();
        let annotation = |k: &str| m.annotations.as_ref().and_then(|l| l.get(k)).cloned();
        Some(PodInfo {
            uid,
            name,
            namespace: m.namespace.clone().unwrap_or_default(),
            node: spec.and_then(|s| s.node_name.clone()),
            ips,
            host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
            ports,
            containers,
            owner,
            service_name: annotation(SERVICE_NAME_ANNOTATION),
            service_namespace: annotation(SERVICE_NAMESPACE_ANNOTATION),
            app_name: label(APP_NAME_LABEL),
            part_of: label(PART_OF_LABEL),
            created_ns: ns_of(&m.creation_timestamp).unwrap_or(0),
            deleted_ns: None,
        })
    }

    /// Applies a change to the pods seen at `now_ns` (wall clock).
    pub fn pod(&mut self, c: Change<Pod>, now_ns: u64) {
        match c {
            Change::Init => self.pod_listing = Some(HashMap::new()),
            Change::InitApply(p) => {
                if let Some(info) = self.pod_info(&p) {
                    let l = self.pod_listing.get_or_insert_with(HashMap::new);
                    if l.len() < self.settings.max_pods {
                        l.insert(info.uid.clone(), info);
                    } else {
                        self.dropped += 1;
                    }
                }
            }
            Change::InitDone => {
                let Some(listed) = self.pod_listing.take() else {
                    return;
                };
                // Pods gone while the watch was down ended by now at the latest.
                for (uid, old) in self.pods.iter_mut() {
                    if !listed.contains_key(uid) && old.deleted_ns.is_none() {
                        old.deleted_ns = Some(now_ns);
                    }
                }
                for (uid, info) in listed {
                    self.pods.insert(uid, info);
                }
                self.prune(now_ns);
            }
            Change::Apply(p) => {
                if let Some(info) = self.pod_info(&p) {
                    if !self.pods.contains_key(&info.uid)
                        && self.pods.len() >= self.settings.max_pods
                    {
                        self.prune(now_ns);
                        if self.pods.len() >= self.settings.max_pods {
                            self.dropped += 1;
                            return;
                        }
                    }
                    self.pods.insert(info.uid.clone(), info);
                }
            }
            Change::Delete(p) => {
                if let Some(uid) = p.metadata.uid.as_ref()
                    && let Some(info) = self.pods.get_mut(uid)
                {
                    info.deleted_ns.get_or_insert(now_ns);
                }
            }
        }
    }

    /// Applies a change to the ReplicaSets (only their Deployment is kept).
    pub fn replica_set(&mut self, c: Change<ReplicaSet>) {
        let c = map_change(c, |rs: &ReplicaSet| {
            let k = key(&rs.metadata)?;
            let owner =
                controller(&rs.metadata.owner_references).filter(|r| r.kind == "Deployment")?;
            Some((k, owner.name.clone()))
        });
        self.replica_sets
            .change(c, self.settings.max_objects, &mut self.dropped);
    }

    /// Applies a change to the Jobs (only their CronJob is kept).
    pub fn job(&mut self, c: Change<Job>) {
        let c = map_change(c, |j: &Job| {
            let k = key(&j.metadata)?;
            let owner = controller(&j.metadata.owner_references).filter(|r| r.kind == "CronJob")?;
            Some((k, owner.name.clone()))
        });
        self.jobs
            .change(c, self.settings.max_objects, &mut self.dropped);
    }

    /// Applies a change to the Services (their virtual IPs and ports).
    pub fn service(&mut self, c: Change<Service>) {
        let c = map_change(c, |s: &Service| {
            let k = key(&s.metadata)?;
            let spec = s.spec.as_ref()?;
            let mut ips = spec
                .cluster_ips
                .as_ref()
                .map(|l| parse_ips(l.iter().map(String::as_str)))
                .unwrap_or_default();
            if ips.is_empty()
                && let Some(ip) = spec.cluster_ip.as_deref()
            {
                ips = parse_ips(std::iter::once(ip));
            }
            let ports = spec
                .ports
                .iter()
                .flatten()
                .filter(|p| p.protocol.as_deref().is_none_or(|p| p != "SCTP"))
                .filter_map(|p| u16::try_from(p.port).ok())
                .collect();
            Some((
                k,
                ServiceInfo {
                    name: s.metadata.name.clone()?,
                    namespace: s.metadata.namespace.clone().unwrap_or_default(),
                    ips,
                    ports,
                    created_ns: ns_of(&s.metadata.creation_timestamp).unwrap_or(0),
                },
            ))
        });
        self.services
            .change(c, self.settings.max_objects, &mut self.dropped);
    }

    /// Forgets pods deleted longer ago than the retention.
    pub fn prune(&mut self, now_ns: u64) {
        let keep = self.settings.retain_deleted_ns;
        self.pods
            .retain(|_, p| p.deleted_ns.is_none_or(|d| now_ns.saturating_sub(d) < keep));
    }

    /// The workload identity of a pod (of one of its containers).
    fn workload(&self, p: &PodInfo, container: Option<&str>) -> Workload {
        let mut attributes = vec![
            KeyValue::str("k8s.namespace.name", p.namespace.as_str()),
            KeyValue::str("k8s.pod.name", p.name.as_str()),
            KeyValue::str("k8s.pod.uid", p.uid.as_str()),
        ];
        if let Some(n) = &p.node {
            attributes.push(KeyValue::str("k8s.node.name", n.as_str()));
        }
        let lookup =
            |m: &Kind<String>, name: &str| m.live.get(&format!("{}/{name}", p.namespace)).cloned();
        let workload = match &p.owner {
            Some(Owner::ReplicaSet(rs)) => {
                attributes.push(KeyValue::str("k8s.replicaset.name", rs.as_str()));
                match lookup(&self.replica_sets, rs) {
                    Some(d) => {
                        attributes.push(KeyValue::str("k8s.deployment.name", d.as_str()));
                        d
                    }
                    None => rs.clone(),
                }
            }
            Some(Owner::StatefulSet(n)) => {
                attributes.push(KeyValue::str("k8s.statefulset.name", n.as_str()));
                n.clone()
            }
            Some(Owner::DaemonSet(n)) => {
                attributes.push(KeyValue::str("k8s.daemonset.name", n.as_str()));
                n.clone()
            }
            Some(Owner::Job(j)) => {
                attributes.push(KeyValue::str("k8s.job.name", j.as_str()));
                match lookup(&self.jobs, j) {
                    Some(c) => {
                        attributes.push(KeyValue::str("k8s.cronjob.name", c.as_str()));
                        c
                    }
                    None => j.clone(),
                }
            }
            Some(Owner::Other) | None => p.name.clone(),
        };
        let container = container.or(match p.containers.as_slice() {
            [only] => Some(&**only),
            _ => None,
        });
        if let Some(c) = container {
            attributes.push(KeyValue::str("k8s.container.name", c));
        }
        let derived = p
            .service_name
            .clone()
            .or_else(|| p.app_name.clone())
            .unwrap_or_else(|| workload.clone());
        let service_name = match &self.settings.service_name_template {
            Some(t) => t
                .replace("{name}", &derived)
                .replace("{workload}", &workload)
                .replace("{namespace}", &p.namespace)
                .replace("{pod}", &p.name),
            None => derived,
        };
        let service_namespace = p
            .service_namespace
            .clone()
            .or_else(|| p.part_of.clone())
            .unwrap_or_else(|| p.namespace.clone());
        attributes.push(KeyValue::str("service.namespace", service_namespace));
        let instance = match container {
            Some(c) => format!("{}.{}.{c}", p.namespace, p.name),
            None => format!("{}.{}", p.namespace, p.name),
        };
        attributes.push(KeyValue::str("service.instance.id", instance));
        let mut h = foldhash::fast::FixedState::with_seed(0x6b38_7369_6465_6e74).build_hasher();
        p.uid.hash(&mut h);
        container.hash(&mut h);
        Workload {
            key: h.finish(),
            service_name: Arc::from(service_name),
            attributes,
        }
    }

    /// The identity index of everything known.
    pub fn index(&self) -> IdentityIndex {
        let mut ix = IdentityIndex::new();
        let me = self.settings.node_name.as_deref();
        for p in self.pods.values() {
            if p.ips.is_empty() {
                continue;
            }
            let local = me.is_some() && p.node.as_deref() == me;
            let tenure = |w: Workload| Tenure {
                from_ns: p.created_ns,
                until_ns: p.deleted_ns,
                workload: Arc::new(w),
                local,
            };
            let several = p.containers.len() > 1;
            for &ip in &p.ips {
                if !p.host_network {
                    ix.insert_ip(ip, tenure(self.workload(p, None)));
                }
                // A host-network pod shares the node's address: only its
                // ports tell it apart. A pod of several containers: the
                // port tells the container.
                if p.host_network || several {
                    for (port, c) in &p.ports {
                        ix.insert_endpoint(ip, *port, tenure(self.workload(p, Some(c))));
                    }
                }
            }
        }
        for s in self.services.live.values() {
            let w = Arc::new(Workload {
                key: foldhash::fast::FixedState::with_seed(0x0073_7663)
                    .hash_one((&s.namespace, &s.name)),
                service_name: Arc::from(s.name.as_str()),
                attributes: vec![
                    KeyValue::str("k8s.namespace.name", s.namespace.as_str()),
                    KeyValue::str("service.namespace", s.namespace.as_str()),
                ],
            });
            for &ip in &s.ips {
                for &port in &s.ports {
                    ix.insert_endpoint(
                        ip,
                        port,
                        Tenure {
                            from_ns: s.created_ns,
                            until_ns: None,
                            workload: w.clone(),
                            local: false,
                        },
                    );
                }
            }
        }
        ix
    }
}

fn map_change<K, T>(
    c: Change<K>,
    f: impl Fn(&K) -> Option<(String, T)>,
) -> Change<Option<(String, T)>> {
    match c {
        Change::Init => Change::Init,
        Change::InitApply(k) => Change::InitApply(f(&k)),
        Change::InitDone => Change::InitDone,
        Change::Apply(k) => Change::Apply(f(&k)),
        // A deleted object needs only its key.
        Change::Delete(k) => Change::Delete(f(&k)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
        let path = format!(
            "{}/../../tests/fixtures/kubernetes/{name}.json",
            env!("CARGO_MANIFEST_DIR")
        );
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
    }

    fn attr<'a>(w: &'a Workload, key: &str) -> Option<&'a str> {
        w.attributes
            .iter()
            .find(|kv| &*kv.key == key)
            .and_then(|kv| match &kv.value {
                wasmtap_telemetry::model::AttrValue::Str(s) => Some(s.as_str()),
                _ => None,
            })
    }

    fn inventory() -> Inventory {
        Inventory::new(Settings {
            node_name: Some("node-1".into()),
            ..Settings::default()
        })
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_pod_is_named_by_its_deployment_and_its_port_names_the_container() {
        let mut inv = inventory();
        let created = 1_796_119_200 * S; // 2026-12-01T10:00:00Z
        inv.pod(Change::Apply(fixture("pod")), created + S);
        // Before its ReplicaSet is known, the pod is named by the ReplicaSet.
        let ix = inv.index();
        let t = ix.lookup(ip("10.244.1.17"), 8080, created + 2 * S).unwrap();
        assert_eq!(&*t.workload.service_name, "web-7d9f8c6b5");
        inv.replica_set(Change::Apply(fixture("replicaset")));
        let ix = inv.index();
        let t = ix.lookup(ip("10.244.1.17"), 8080, created + 2 * S).unwrap();
        assert!(t.local);
        assert_eq!(t.from_ns, created);
        let w = &t.workload;
        assert_eq!(&*w.service_name, "web");
        assert_eq!(attr(w, "k8s.deployment.name"), Some("web"));
        assert_eq!(attr(w, "k8s.replicaset.name"), Some("web-7d9f8c6b5"));
        assert_eq!(attr(w, "k8s.namespace.name"), Some("shop"));
        assert_eq!(attr(w, "k8s.pod.name"), Some("web-7d9f8c6b5-x2k4q"));
        assert_eq!(attr(w, "k8s.node.name"), Some("node-1"));
        assert_eq!(attr(w, "k8s.container.name"), Some("nginx"));
        // part-of names the service namespace.
        assert_eq!(attr(w, "service.namespace"), Some("shop"));
        assert_eq!(
            attr(w, "service.instance.id"),
            Some("shop.web-7d9f8c6b5-x2k4q.nginx")
        );
        let m = ix.lookup(ip("10.244.1.17"), 9102, created + 2 * S).unwrap();
        assert_eq!(attr(&m.workload, "k8s.container.name"), Some("metrics"));
        // An undeclared port: the pod, no container.
        let p = ix.lookup(ip("10.244.1.17"), 5000, created + 2 * S).unwrap();
        assert_eq!(attr(&p.workload, "k8s.container.name"), None);
        assert_eq!(&*p.workload.service_name, "web");
        // Another node's agent: not local.
        let mut other = Inventory::new(Settings {
            node_name: Some("node-2".into()),
            ..Settings::default()
        });
        other.pod(Change::Apply(fixture("pod")), created);
        assert!(
            !other
                .index()
                .holder(ip("10.244.1.17"), created)
                .unwrap()
                .local
        );
    }

    #[test]
    fn the_annotation_then_the_name_label_then_the_owner_name_the_service() {
        let mut p: Pod = fixture("pod");
        let labels = p.metadata.labels.get_or_insert_default();
        labels.insert(APP_NAME_LABEL.into(), "storefront".into());
        let mut inv = inventory();
        inv.replica_set(Change::Apply(fixture("replicaset")));
        inv.pod(Change::Apply(p.clone()), 0);
        let name = |inv: &Inventory| {
            inv.index()
                .holder(ip("10.244.1.17"), u64::MAX)
                .map(|t| t.workload.service_name.to_string())
        };
        assert_eq!(name(&inv).as_deref(), Some("storefront"));
        p.metadata
            .annotations
            .get_or_insert_default()
            .insert(SERVICE_NAME_ANNOTATION.into(), "checkout".into());
        inv.pod(Change::Apply(p.clone()), 0);
        assert_eq!(name(&inv).as_deref(), Some("checkout"));
        // A template.
        let mut t = Inventory::new(Settings {
            service_name_template: Some("{namespace}/{workload}".into()),
            ..Settings::default()
        });
        t.replica_set(Change::Apply(fixture("replicaset")));
        t.pod(Change::Apply(fixture("pod")), 0);
        assert_eq!(name(&t).as_deref(), Some("shop/web"));
    }

    #[test]
    fn a_cronjob_pod_and_a_service_ip() {
        let mut p: Pod = fixture("pod");
        p.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "batch/v1".into(),
            controller: Some(true),
            kind: "Job".into(),
            name: "report-29411460".into(),
            uid: "d4c3b2a1-0f9e-48d7-a6b5-c4d3e2f1a0b9".into(),
            ..Default::default()
        }]);
        let mut inv = inventory();
        inv.job(Change::Apply(fixture("job")));
        inv.pod(Change::Apply(p), 0);
        inv.service(Change::Apply(fixture("service")));
        let ix = inv.index();
        let w = &ix.holder(ip("10.244.1.17"), u64::MAX).unwrap().workload;
        assert_eq!(&*w.service_name, "report");
        assert_eq!(attr(w, "k8s.cronjob.name"), Some("report"));
        assert_eq!(attr(w, "k8s.job.name"), Some("report-29411460"));
        let s = ix.lookup(ip("10.96.14.200"), 80, u64::MAX).unwrap();
        assert_eq!(&*s.workload.service_name, "web");
        assert!(!s.local);
        assert!(ix.knows(ip("10.96.14.200")));
        assert!(ix.lookup(ip("10.96.14.200"), 81, u64::MAX).is_none());
    }

    #[test]
    fn a_reused_ip_goes_to_the_new_pod_and_a_relist_ends_vanished_pods() {
        let old: Pod = fixture("pod");
        let mut new = old.clone();
        new.metadata.name = Some("web-7d9f8c6b5-zz9pl".into());
        new.metadata.uid = Some("11111111-2222-4333-8444-555555555555".into());
        let t0 = 1_796_119_200 * S;
        new.metadata.creation_timestamp = Some(Time(
            k8s_openapi::jiff::Timestamp::from_second(1_796_119_300).unwrap(),
        ));
        let mut inv = inventory();
        inv.replica_set(Change::Apply(fixture("replicaset")));
        inv.pod(Change::Apply(old.clone()), t0);
        inv.pod(Change::Delete(old.clone()), t0 + 100 * S + S / 2);
        inv.pod(Change::Apply(new.clone()), t0 + 101 * S);
        let ix = inv.index();
        let pod = |ts| {
            ix.holder(ip("10.244.1.17"), ts)
                .and_then(|t| attr(&t.workload, "k8s.pod.name").map(str::to_string))
        };
        assert_eq!(pod(t0 + 50 * S).as_deref(), Some("web-7d9f8c6b5-x2k4q"));
        // Created at t0+100 s (second precision), but the old pod held the
        // address until its deletion was seen.
        assert_eq!(
            pod(t0 + 100 * S + S / 4).as_deref(),
            Some("web-7d9f8c6b5-x2k4q")
        );
        assert_eq!(pod(t0 + 101 * S).as_deref(), Some("web-7d9f8c6b5-zz9pl"));

        // A relist after an outage that no longer has the new pod ends it.
        inv.pod(Change::Init, t0 + 200 * S);
        inv.pod(Change::InitDone, t0 + 200 * S);
        let ix = inv.index();
        let t = ix.holder(ip("10.244.1.17"), t0 + 300 * S).unwrap();
        assert_eq!(t.until_ns, Some(t0 + 200 * S));
        // After the retention, deleted pods are forgotten.
        inv.prune(t0 + 200 * S + Settings::default().retain_deleted_ns);
        assert_eq!(inv.stats().pods, 0);
    }

    #[test]
    fn bounds_are_counted() {
        let mut inv = Inventory::new(Settings {
            max_pods: 1,
            ..Settings::default()
        });
        let a: Pod = fixture("pod");
        let mut b = a.clone();
        b.metadata.uid = Some("other".into());
        inv.pod(Change::Apply(a), 0);
        inv.pod(Change::Apply(b), 0);
        assert_eq!(inv.stats().pods, 1);
        assert_eq!(inv.stats().dropped, 1);
        let mut nameless: Pod = fixture("pod");
        nameless.metadata.uid = None;
        inv.pod(Change::Apply(nameless), 0);
        assert_eq!(inv.stats().unusable, 1);
    }
}
