//! The service map: which observed service an address belongs to, and
//! which agent reports a call.
//!
//! A server endpoint is named, in this order, by the configuration's rules,
//! by the workload that held the address at the time ([`crate::identity`]:
//! Kubernetes), by the DNS name clients resolved it from
//! ([`crate::names`], when enabled), and else by its address (`ip:port`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::identity::{IdentityIndex, IdentityView, Workload};
use crate::model::{KeyValue, Resource};
use crate::names::{DnsNames, DnsNamesStats};

/// One rule: an address or network and/or a port, naming a service.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceRule {
    /// Network the server address must be in (`None`: any).
    pub net: Option<IpNet>,
    /// Server port (`None`: any).
    pub port: Option<u16>,
    /// `service.name` to report.
    pub name: String,
}

impl ServiceRule {
    /// Parses a match expression: `10.0.0.0/8`, `10.1.2.3`, `10.1.2.3:8080`,
    /// `[2001:db8::1]:80`, `:5432`, `10.0.0.0/8:443`.
    pub fn parse(expr: &str, name: &str) -> Result<Self, String> {
        let bad = || {
            format!("bad service match {expr:?}: expected IP, CIDR, IP:port, CIDR:port or :port")
        };
        let expr = expr.trim();
        if name.trim().is_empty() {
            return Err(format!("service match {expr:?}: empty name"));
        }
        let (addr, port) = if let Some(p) = expr.strip_prefix(':') {
            ("", Some(p))
        } else if let Some(rest) = expr.strip_prefix('[') {
            let (a, r) = rest.split_once(']').ok_or_else(bad)?;
            (a, r.strip_prefix(':'))
        } else if expr.matches(':').count() == 1 {
            let (a, p) = expr.split_once(':').ok_or_else(bad)?;
            (a, Some(p))
        } else {
            (expr, None)
        };
        let port = port
            .map(|p| p.parse::<u16>().map_err(|_| bad()))
            .transpose()?;
        let net = if addr.is_empty() {
            None
        } else if addr.contains('/') {
            Some(addr.parse::<IpNet>().map_err(|_| bad())?)
        } else {
            Some(IpNet::from(addr.parse::<IpAddr>().map_err(|_| bad())?))
        };
        if net.is_none() && port.is_none() {
            return Err(bad());
        }
        Ok(Self {
            net,
            port,
            name: name.to_string(),
        })
    }

    fn matches(&self, ip: IpAddr, port: u16) -> bool {
        self.net.is_none_or(|n| n.contains(&ip)) && self.port.is_none_or(|p| p == port)
    }
}

/// Which agent reports a call seen by several (one agent per node, or a
/// sidecar at each end): by default the one beside the server.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Locality {
    /// Apply the rule; when off, every agent reports every call it sees.
    pub enabled: bool,
    /// Addresses on this agent's node (or in its pod), besides the local
    /// workloads the identity index marks.
    pub local: Vec<IpNet>,
    /// Addresses inside the cluster, besides those the identity index
    /// knows: a call from a local client to one of them is reported by the
    /// server's agent; a call to an address outside is reported here.
    pub cluster: Vec<IpNet>,
}

#[derive(Debug, Clone)]
enum Cached {
    /// A configuration rule named it: nothing else is consulted.
    Rule(Arc<Resource>),
    /// No rule matches: a workload, a DNS name, else the address names it.
    NoRule,
    /// As `NoRule`, and its address resource exists (the last fallback).
    Address(Arc<Resource>),
}

/// Resolves server endpoints to resources, caching them (bounded).
#[derive(Debug)]
pub struct ServiceMap {
    rules: Vec<ServiceRule>,
    extra: Vec<KeyValue>,
    cache: HashMap<(IpAddr, u16), Cached, foldhash::fast::RandomState>,
    by_name: HashMap<String, Arc<Resource>, foldhash::fast::RandomState>,
    /// Workload resources by key, with the identity they were built from
    /// (rebuilt when it changes: an owner learned later, a new label).
    by_workload: HashMap<u64, (Arc<Workload>, Arc<Resource>), foldhash::fast::RandomState>,
    clients: HashMap<IpAddr, (bool, Arc<str>), foldhash::fast::RandomState>,
    identity: Option<IdentityView>,
    dns: Option<DnsNames>,
    locality: Locality,
    /// Calls left to the server's agent ([`Locality`]).
    pub reported_elsewhere: u64,
    max_cached: usize,
    max_services: usize,
    overflow: Option<Arc<Resource>>,
    /// Endpoints reported under the overflow service because `max_services` was reached.
    pub overflowed: u64,
    next_id: u64,
}

/// The `service.name` of services beyond the cap.
pub const OVERFLOW_SERVICE: &str = "_OTHER";

impl ServiceMap {
    /// Rules are tried in order; the first match names the service. `extra`
    /// attributes are added to every resource (agent identity, Kubernetes).
    pub fn new(rules: Vec<ServiceRule>, extra: Vec<KeyValue>) -> Self {
        Self {
            rules,
            extra,
            cache: HashMap::default(),
            by_name: HashMap::default(),
            by_workload: HashMap::default(),
            clients: HashMap::default(),
            identity: None,
            dns: None,
            locality: Locality::default(),
            reported_elsewhere: 0,
            max_cached: 65_536,
            max_services: 10_000,
            overflow: None,
            overflowed: 0,
            next_id: 1,
        }
    }

    /// Caps the number of distinct services (default 10,000); endpoints of
    /// services beyond it are reported as one service named `_OTHER` (counted).
    pub fn with_max_services(mut self, max: usize) -> Self {
        self.max_services = max.max(1);
        self
    }

    /// Names endpoints by the workloads an inventory publishes (Kubernetes).
    pub fn with_identities(mut self, view: IdentityView) -> Self {
        self.identity = Some(view);
        self
    }

    /// Names endpoints by the DNS answers the capture holds.
    pub fn with_dns_names(mut self, names: DnsNames) -> Self {
        self.dns = Some(names);
        self
    }

    /// Reports only the calls this agent should ([`Locality`]).
    pub fn with_locality(mut self, locality: Locality) -> Self {
        self.locality = locality;
        self
    }

    /// Distinct services named so far.
    pub fn services(&self) -> usize {
        self.by_name.len() + self.by_workload.len()
    }

    /// Whether names are learned from DNS answers.
    pub fn learns_dns(&self) -> bool {
        self.dns.is_some()
    }

    /// The DNS name table's counters, when names are learned.
    pub fn dns_stats(&self) -> Option<DnsNamesStats> {
        self.dns.as_ref().map(DnsNames::stats)
    }

    /// A DNS answer seen at `now_ns` (see [`DnsNames::learn`]); ignored
    /// unless names are learned from DNS.
    pub fn learn_dns(&mut self, name: &str, addrs: &[IpAddr], ttl_s: u32, now_ns: u64) {
        if let Some(d) = &mut self.dns {
            d.learn(name, addrs, ttl_s, now_ns);
        }
    }

    fn index(&mut self) -> Option<&IdentityIndex> {
        self.identity.as_mut().map(IdentityView::index)
    }

    /// The name of a client address at `ts_ns`: the first rule whose
    /// network holds it (its port does not matter: a client speaks from an
    /// ephemeral port), else the workload holding it, else its DNS name,
    /// else the address itself.
    pub fn client_name(&mut self, ip: IpAddr, ts_ns: u64) -> Arc<str> {
        let cached = match self.clients.get(&ip) {
            Some((true, n)) => return n.clone(),
            Some((false, n)) => Some(n.clone()),
            None => None,
        };
        let address = match cached {
            Some(n) => n,
            None => {
                let (rule, name): (bool, Arc<str>) = match self
                    .rules
                    .iter()
                    .find(|r| r.net.is_some_and(|n| n.contains(&ip)))
                {
                    Some(r) => (true, Arc::from(r.name.as_str())),
                    None => (false, Arc::from(ip.to_string())),
                };
                if self.clients.len() < self.max_cached {
                    self.clients.insert(ip, (rule, name.clone()));
                }
                if rule {
                    return name;
                }
                name
            }
        };
        if let Some(t) = self.index().and_then(|ix| ix.holder(ip, ts_ns)) {
            return t.workload.service_name.clone();
        }
        if let Some(n) = self.dns.as_ref().and_then(|d| d.lookup(ip, ts_ns)) {
            return n;
        }
        address
    }

    /// Whether this agent reports a call from `client` to `server` seen at
    /// `ts_ns` (see [`Locality`]): always, unless the rule is on, the
    /// server is not local, the client is, and the server is in the
    /// cluster (its own agent reports the call). Counts the calls left.
    pub fn reports(
        &mut self,
        client: IpAddr,
        server: IpAddr,
        server_port: u16,
        ts_ns: u64,
    ) -> bool {
        if !self.locality.enabled {
            return true;
        }
        let here = self.is_local(server, server_port, ts_ns)
            || !self.is_local(client, 0, ts_ns)
            || !self.in_cluster(server);
        if !here {
            self.reported_elsewhere += 1;
        }
        here
    }

    fn is_local(&mut self, ip: IpAddr, port: u16, ts_ns: u64) -> bool {
        self.locality.local.iter().any(|n| n.contains(&ip))
            || self
                .index()
                .and_then(|ix| ix.lookup(ip, port, ts_ns))
                .is_some_and(|t| t.local)
    }

    fn in_cluster(&mut self, ip: IpAddr) -> bool {
        self.locality.cluster.iter().any(|n| n.contains(&ip))
            || self.index().is_some_and(|ix| ix.knows(ip))
    }

    /// The resource of the service listening at `ip:port`, at `ts_ns`.
    pub fn resolve(&mut self, ip: IpAddr, port: u16, ts_ns: u64) -> Arc<Resource> {
        match self.cache.get(&(ip, port)) {
            Some(Cached::Rule(r)) => return r.clone(),
            Some(_) => {}
            None => {
                let rule = self
                    .rules
                    .iter()
                    .find(|r| r.matches(ip, port))
                    .map(|r| r.name.clone());
                let entry = match rule {
                    Some(name) => Cached::Rule(self.named(name)),
                    None => Cached::NoRule,
                };
                if self.cache.len() < self.max_cached {
                    self.cache.insert((ip, port), entry.clone());
                }
                if let Cached::Rule(r) = entry {
                    return r;
                }
            }
        }
        if let Some(w) = self
            .index()
            .and_then(|ix| ix.lookup(ip, port, ts_ns))
            .map(|t| t.workload.clone())
        {
            return self.workload(&w);
        }
        if let Some(n) = self.dns.as_ref().and_then(|d| d.lookup(ip, ts_ns)) {
            return self.named(n.to_string());
        }
        // The last fallback: only now is an address resource made.
        if let Some(Cached::Address(r)) = self.cache.get(&(ip, port)) {
            return r.clone();
        }
        let name = match ip {
            IpAddr::V6(v6) => format!("[{v6}]:{port}"),
            IpAddr::V4(v4) => format!("{v4}:{port}"),
        };
        let r = self.named(name);
        if let Some(e) = self.cache.get_mut(&(ip, port)) {
            *e = Cached::Address(r.clone());
        }
        r
    }

    /// Forgets resources nothing else holds any more (series expired, the
    /// workload gone, a DNS or address name unused), so churning pods and
    /// addresses do not fill the service cap.
    pub fn sweep(&mut self) {
        // An address resource only the cache and the name map hold: back
        // to "no rule" (made again if the address serves again).
        for e in self.cache.values_mut() {
            if let Cached::Address(r) = e
                && Arc::strong_count(r) <= 2
            {
                *e = Cached::NoRule;
            }
        }
        self.by_workload
            .retain(|_, (_, r)| Arc::strong_count(r) > 1);
        let rules = &self.rules;
        self.by_name.retain(|name, r| {
            Arc::strong_count(r) > 1 || rules.iter().any(|rule| &rule.name == name)
        });
    }

    fn workload(&mut self, w: &Arc<Workload>) -> Arc<Resource> {
        if let Some((seen, r)) = self.by_workload.get_mut(&w.key)
            && (Arc::ptr_eq(seen, w) || **seen == **w)
        {
            // The same identity from a newer index: compare pointers next time.
            *seen = w.clone();
            return r.clone();
        }
        if self.services() >= self.max_services {
            return self.overflow();
        }
        let mut attributes = vec![KeyValue::str("service.name", &*w.service_name)];
        attributes.extend(w.attributes.iter().cloned());
        for kv in &self.extra {
            if !attributes.iter().any(|a| a.key == kv.key) {
                attributes.push(kv.clone());
            }
        }
        let r = Arc::new(Resource {
            id: self.next_id,
            attributes,
        });
        self.next_id += 1;
        self.by_workload.insert(w.key, (w.clone(), r.clone()));
        r
    }

    fn overflow(&mut self) -> Arc<Resource> {
        self.overflowed += 1;
        if let Some(o) = &self.overflow {
            return o.clone();
        }
        let mut attributes = vec![KeyValue::str("service.name", OVERFLOW_SERVICE)];
        attributes.extend(self.extra.iter().cloned());
        let o = Arc::new(Resource {
            id: self.next_id,
            attributes,
        });
        self.next_id += 1;
        self.overflow = Some(o.clone());
        o
    }

    fn named(&mut self, name: String) -> Arc<Resource> {
        match self.by_name.get(&name) {
            Some(r) => r.clone(),
            None if self.services() >= self.max_services => self.overflow(),
            None => {
                let mut attributes = vec![KeyValue::str("service.name", name.clone())];
                attributes.extend(self.extra.iter().cloned());
                let r = Arc::new(Resource {
                    id: self.next_id,
                    attributes,
                });
                self.next_id += 1;
                self.by_name.insert(name, r.clone());
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_match_in_order() {
        let rules = vec![
            ServiceRule::parse("10.0.0.5:8080", "api").unwrap(),
            ServiceRule::parse("10.0.0.0/8", "internal").unwrap(),
            ServiceRule::parse(":5432", "postgres").unwrap(),
            ServiceRule::parse("[2001:db8::1]:80", "v6web").unwrap(),
        ];
        let mut m = ServiceMap::new(rules, vec![]);
        let n = |m: &mut ServiceMap, ip: &str, p| {
            m.resolve(ip.parse().unwrap(), p, 0)
                .service_name()
                .to_string()
        };
        assert_eq!(n(&mut m, "10.0.0.5", 8080), "api");
        assert_eq!(n(&mut m, "10.0.0.5", 80), "internal");
        assert_eq!(n(&mut m, "192.168.1.1", 5432), "postgres");
        assert_eq!(n(&mut m, "2001:db8::1", 80), "v6web");
        assert_eq!(n(&mut m, "192.168.1.1", 80), "192.168.1.1:80");
        assert_eq!(n(&mut m, "2001:db8::2", 80), "[2001:db8::2]:80");
        assert!(ServiceRule::parse("nonsense", "x").is_err());
        assert!(ServiceRule::parse("10.0.0.1:99999", "x").is_err());
        // Same name, same resource (one OTLP resource per service).
        let a = m.resolve("10.0.0.7".parse().unwrap(), 1, 0);
        let b = m.resolve("10.0.0.8".parse().unwrap(), 2, 0);
        assert!(Arc::ptr_eq(&a, &b));
        // Clients are named by network, whatever their port.
        assert_eq!(&*m.client_name("10.0.0.5".parse().unwrap(), 0), "api");
        assert_eq!(&*m.client_name("10.9.9.9".parse().unwrap(), 0), "internal");
        assert_eq!(
            &*m.client_name("192.168.1.1".parse().unwrap(), 0),
            "192.168.1.1"
        );
    }

    fn pod(key: u64, name: &str, from: u64, local: bool) -> crate::identity::Tenure {
        crate::identity::Tenure {
            from_ns: from,
            until_ns: None,
            workload: Arc::new(Workload {
                key,
                service_name: name.into(),
                attributes: vec![KeyValue::str("k8s.pod.name", format!("{name}-{key}"))],
            }),
            local,
        }
    }

    #[test]
    fn names_come_from_rules_then_workloads_then_dns_then_addresses() {
        use crate::identity::{Identities, IdentityIndex};
        use crate::names::{DnsNames, DnsNamesConfig};
        let ids = Identities::new();
        let mut m = ServiceMap::new(
            vec![ServiceRule::parse("10.0.0.5:80", "configured").unwrap()],
            vec![
                KeyValue::str("k8s.pod.name", "agent"),
                KeyValue::str("host.name", "n1"),
            ],
        )
        .with_identities(ids.view())
        .with_dns_names(DnsNames::new(DnsNamesConfig::default()));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut ix = IdentityIndex::new();
        ix.insert_ip(ip("10.0.0.5"), pod(1, "api", 100, true));
        ix.insert_ip(ip("10.0.0.6"), pod(2, "web", 100, true));
        ids.publish(ix);
        m.learn_dns("web.example", &[ip("10.0.0.6"), ip("10.0.0.7")], 30, 50);
        let n =
            |m: &mut ServiceMap, a: &str, p, ts| m.resolve(ip(a), p, ts).service_name().to_string();
        assert_eq!(n(&mut m, "10.0.0.5", 80, 200), "configured");
        assert_eq!(n(&mut m, "10.0.0.5", 81, 200), "api");
        assert_eq!(n(&mut m, "10.0.0.6", 80, 200), "web");
        // Before the pod held it, the DNS name; after the TTL and hold, the address.
        assert_eq!(n(&mut m, "10.0.0.6", 80, 60), "web.example");
        assert_eq!(n(&mut m, "10.0.0.7", 80, 60), "web.example");
        assert_eq!(n(&mut m, "10.0.0.7", 80, 400_000_000_000), "10.0.0.7:80");
        // The workload's attributes win over the agent's own.
        let r = m.resolve(ip("10.0.0.5"), 81, 200);
        let pod_name = r.attributes.iter().find(|kv| &*kv.key == "k8s.pod.name");
        assert_eq!(
            pod_name.map(|kv| kv.value.clone()),
            Some(crate::model::AttrValue::Str("api-1".into()))
        );
        assert!(r.attributes.iter().any(|kv| &*kv.key == "host.name"));
        assert_eq!(&*m.client_name(ip("10.0.0.6"), 200), "web");
        assert_eq!(&*m.client_name(ip("10.0.0.9"), 200), "10.0.0.9");
        // Resources only the map holds are forgotten.
        drop(r);
        m.sweep();
        assert_eq!(m.by_workload.len(), 0);
    }

    #[test]
    fn workload_names_follow_the_index_and_unused_names_leave_the_cap() {
        use crate::identity::{Identities, IdentityIndex};
        let ids = Identities::new();
        let mut m = ServiceMap::new(vec![], vec![])
            .with_identities(ids.view())
            .with_max_services(3);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut ix = IdentityIndex::new();
        ix.insert_ip(ip("10.0.0.5"), pod(1, "api-7d9f8c6b5", 0, true));
        ids.publish(ix);
        let first = m.resolve(ip("10.0.0.5"), 80, 1);
        assert_eq!(first.service_name(), "api-7d9f8c6b5");
        // The owner became known: same pod, its Deployment's name.
        let mut ix = IdentityIndex::new();
        ix.insert_ip(ip("10.0.0.5"), pod(1, "api", 0, true));
        ids.publish(ix);
        let later = m.resolve(ip("10.0.0.5"), 80, 2);
        assert_eq!(later.service_name(), "api");
        // Named by its workload, no address resource was made.
        assert!(!m.by_name.contains_key("10.0.0.5:80"));
        // Address names nobody holds any more leave the cap.
        drop((first, later));
        m.sweep();
        assert_eq!(m.services(), 0);
        for i in 1..=3 {
            let r = m.resolve(ip(&format!("192.0.2.{i}")), 80, 3);
            assert_ne!(r.service_name(), OVERFLOW_SERVICE);
        }
        m.sweep();
        assert_eq!(m.services(), 0);
        let r = m.resolve(ip("192.0.2.9"), 80, 4);
        assert_eq!(r.service_name(), "192.0.2.9:80");
    }

    #[test]
    fn a_call_is_reported_by_the_agent_beside_its_server() {
        use crate::identity::{Identities, IdentityIndex};
        let ids = Identities::new();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut ix = IdentityIndex::new();
        ix.insert_ip(ip("10.1.1.2"), pod(1, "local-a", 0, true));
        ix.insert_ip(ip("10.1.1.3"), pod(2, "local-b", 0, true));
        ids.publish(ix);
        let mut m = ServiceMap::new(vec![], vec![])
            .with_identities(ids.view())
            .with_locality(Locality {
                enabled: true,
                local: vec![],
                cluster: vec!["10.1.0.0/16".parse().unwrap()],
            });
        let (a, b, remote, outside) = (
            ip("10.1.1.2"),
            ip("10.1.1.3"),
            ip("10.1.2.9"),
            ip("192.0.2.1"),
        );
        assert!(m.reports(a, b, 80, 1), "local to local");
        assert!(m.reports(remote, a, 80, 1), "remote client, local server");
        assert!(
            !m.reports(a, remote, 80, 1),
            "the remote server's agent reports it"
        );
        assert!(
            m.reports(a, outside, 443, 1),
            "outside the cluster: the client's agent"
        );
        assert!(
            m.reports(outside, remote, 80, 1),
            "neither end here: reported"
        );
        assert_eq!(m.reported_elsewhere, 1);
        // Without the rule, everything is reported.
        let mut all = ServiceMap::new(vec![], vec![]);
        assert!(all.reports(a, remote, 80, 1));
    }

    #[test]
    fn services_beyond_the_cap_share_one_overflow_service() {
        let mut m = ServiceMap::new(vec![], vec![]).with_max_services(2);
        let a = m.resolve("10.0.0.1".parse().unwrap(), 80, 0);
        let b = m.resolve("10.0.0.2".parse().unwrap(), 80, 0);
        let c = m.resolve("10.0.0.3".parse().unwrap(), 80, 0);
        let d = m.resolve("10.0.0.4".parse().unwrap(), 80, 0);
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(c.service_name(), OVERFLOW_SERVICE);
        assert!(Arc::ptr_eq(&c, &d));
        assert_eq!(m.overflowed, 2);
        assert_eq!(m.services(), 2);
    }
}
