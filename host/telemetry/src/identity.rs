//! Who held an address when: workload identities (from Kubernetes, or any
//! other inventory) indexed by IP and by IP:port, with time.
//!
//! An inventory (the `wasmtap-kube` watcher) builds an [`IdentityIndex`] and
//! publishes it through [`Identities`]; each shard holds an
//! [`IdentityView`] that picks up a new index with one atomic load when
//! nothing changed. The index is plain data and clock-free: an address is
//! resolved for a capture timestamp, so an IP a rollout handed to a new pod
//! is attributed to the pod that held it when the packets were seen.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::model::KeyValue;

/// A workload instance an address belongs to (a pod, a Service's virtual IP).
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Identity of the instance (a hash of the pod's UID and container):
    /// one resource per key.
    pub key: u64,
    /// The `service.name` it reports as.
    pub service_name: Arc<str>,
    /// Resource attributes besides `service.name` (`k8s.*`,
    /// `service.namespace`, `service.instance.id`).
    pub attributes: Vec<KeyValue>,
}

/// One holding of an address: from when, until when, by whom.
#[derive(Debug, Clone)]
pub struct Tenure {
    /// Capture-clock time (ns since the Unix epoch) the holding began.
    pub from_ns: u64,
    /// When it ended (the pod was deleted); `None` while it lasts.
    pub until_ns: Option<u64>,
    /// Who held the address.
    pub workload: Arc<Workload>,
    /// The holder runs on this agent's node (see [`crate::services::Locality`]).
    pub local: bool,
}

/// Most tenures kept per address (older ones are dropped first).
pub const MAX_TENURES: usize = 4;

/// Addresses to workloads, over time.
#[derive(Debug, Default)]
pub struct IdentityIndex {
    by_ip: HashMap<IpAddr, Vec<Tenure>, foldhash::fast::RandomState>,
    by_endpoint: HashMap<(IpAddr, u16), Vec<Tenure>, foldhash::fast::RandomState>,
    /// Addresses of `by_endpoint`, for [`IdentityIndex::knows`].
    endpoint_ips: std::collections::HashSet<IpAddr, foldhash::fast::RandomState>,
    /// The index holds every workload of the cluster, not only this node's:
    /// an address it does not know is outside the cluster.
    pub complete: bool,
}

fn add(list: &mut Vec<Tenure>, t: Tenure) {
    list.push(t);
    list.sort_by_key(|t| t.from_ns);
    if list.len() > MAX_TENURES {
        list.remove(0);
    }
    // An address is handed out again only once its holder released it: a
    // start stamped before the previous holder's end (timestamps with
    // second precision) begins at that end.
    for i in 1..list.len() {
        if let Some(until) = list[i - 1].until_ns
            && list[i].from_ns < until
        {
            list[i].from_ns = until;
        }
    }
}

fn at(list: &[Tenure], ts_ns: u64) -> Option<&Tenure> {
    // The latest holding begun by `ts_ns`; one that ended stays the
    // address's identity until another begins (a deleted pod's last
    // packets keep its name).
    list.iter().rev().find(|t| t.from_ns <= ts_ns)
}

impl IdentityIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `ip` (every port) was held by `t.workload`.
    pub fn insert_ip(&mut self, ip: IpAddr, t: Tenure) {
        add(self.by_ip.entry(ip).or_default(), t);
    }

    /// Records that `ip:port` was held by `t.workload` (a host-network pod's
    /// port, a Service's virtual IP and port, a container's port).
    pub fn insert_endpoint(&mut self, ip: IpAddr, port: u16, t: Tenure) {
        add(self.by_endpoint.entry((ip, port)).or_default(), t);
        self.endpoint_ips.insert(ip);
    }

    /// Who held `ip:port` at `ts_ns`: the endpoint's holder, else the
    /// address's.
    pub fn lookup(&self, ip: IpAddr, port: u16, ts_ns: u64) -> Option<&Tenure> {
        self.by_endpoint
            .get(&(ip, port))
            .and_then(|l| at(l, ts_ns))
            .or_else(|| self.holder(ip, ts_ns))
    }

    /// Who held `ip` at `ts_ns` (whatever the port; for clients).
    pub fn holder(&self, ip: IpAddr, ts_ns: u64) -> Option<&Tenure> {
        self.by_ip.get(&ip).and_then(|l| at(l, ts_ns))
    }

    /// Whether the index knows `ip` at all (any time, any port).
    pub fn knows(&self, ip: IpAddr) -> bool {
        self.by_ip.contains_key(&ip) || self.endpoint_ips.contains(&ip)
    }

    /// Addresses indexed.
    pub fn len(&self) -> usize {
        self.by_ip.len() + self.by_endpoint.len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty() && self.by_endpoint.is_empty()
    }
}

/// Where an inventory publishes its index and shards pick it up.
#[derive(Clone, Default)]
pub struct Identities {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    version: AtomicU64,
    index: Mutex<Arc<IdentityIndex>>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("version", &self.inner.version.load(Ordering::Relaxed))
            .finish()
    }
}

impl Identities {
    /// Nothing published yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the index shards see.
    // The inventory's task, off the packet path.
    #[allow(clippy::disallowed_methods)]
    pub fn publish(&self, index: IdentityIndex) {
        let mut g = self
            .inner
            .index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *g = Arc::new(index);
        self.inner.version.fetch_add(1, Ordering::Release);
    }

    /// A reader for one shard.
    pub fn view(&self) -> IdentityView {
        IdentityView {
            src: self.clone(),
            seen: u64::MAX,
            index: Arc::default(),
        }
    }

    // Taken by a shard only when the published version has changed.
    #[allow(clippy::disallowed_methods)]
    fn current(&self) -> Arc<IdentityIndex> {
        self.inner
            .index
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// A shard's reader of [`Identities`].
#[derive(Debug)]
pub struct IdentityView {
    src: Identities,
    seen: u64,
    index: Arc<IdentityIndex>,
}

impl IdentityView {
    /// The latest published index: one atomic load when it has not changed
    /// (the lock is taken only to pick up a new one).
    pub fn index(&mut self) -> &IdentityIndex {
        let v = self.src.inner.version.load(Ordering::Acquire);
        if v != self.seen {
            self.seen = v;
            self.index = self.src.current();
        }
        &self.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: u64, name: &str) -> Arc<Workload> {
        Arc::new(Workload {
            key,
            service_name: name.into(),
            attributes: vec![],
        })
    }

    fn t(from: u64, until: Option<u64>, who: &Arc<Workload>) -> Tenure {
        Tenure {
            from_ns: from,
            until_ns: until,
            workload: who.clone(),
            local: true,
        }
    }

    #[test]
    fn an_address_is_attributed_to_its_holder_at_the_time() {
        let (a, b) = (w(1, "api-1"), w(2, "api-2"));
        let ip: IpAddr = "10.244.1.7".parse().unwrap();
        let mut ix = IdentityIndex::new();
        ix.insert_ip(ip, t(100, Some(500), &a));
        // The new pod's creation time has second precision: stamped before
        // the old one's deletion, it starts at that deletion.
        ix.insert_ip(ip, t(450, None, &b));
        let name = |ix: &IdentityIndex, ts| {
            ix.lookup(ip, 80, ts)
                .map(|t| t.workload.service_name.to_string())
        };
        assert_eq!(name(&ix, 50), None);
        assert_eq!(name(&ix, 100).as_deref(), Some("api-1"));
        assert_eq!(name(&ix, 470).as_deref(), Some("api-1"));
        assert_eq!(name(&ix, 500).as_deref(), Some("api-2"));
        assert_eq!(name(&ix, 10_000).as_deref(), Some("api-2"));
        // A deleted pod keeps the address until another takes it.
        let mut ix2 = IdentityIndex::new();
        ix2.insert_ip(ip, t(100, Some(500), &a));
        assert_eq!(name(&ix2, 900).as_deref(), Some("api-1"));
        // An endpoint entry wins over the address's.
        ix.insert_endpoint(ip, 9090, t(0, None, &w(3, "metrics")));
        assert_eq!(
            ix.lookup(ip, 9090, 600).map(|t| &*t.workload.service_name),
            Some("metrics")
        );
        assert!(ix.knows(ip));
        assert!(!ix.knows("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn tenures_per_address_are_bounded() {
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let mut ix = IdentityIndex::new();
        for i in 0..10u64 {
            ix.insert_ip(ip, t(i * 10, Some(i * 10 + 5), &w(i, "x")));
        }
        assert_eq!(ix.by_ip[&ip].len(), MAX_TENURES);
        assert_eq!(ix.holder(ip, 95).map(|t| t.workload.key), Some(9));
    }

    #[test]
    fn views_pick_up_new_indexes() {
        let ids = Identities::new();
        let mut v = ids.view();
        assert!(v.index().is_empty());
        let mut ix = IdentityIndex::new();
        ix.insert_ip("10.0.0.1".parse().unwrap(), t(0, None, &w(1, "a")));
        ids.publish(ix);
        assert_eq!(v.index().len(), 1);
    }
}
