//! The service map: which observed service an address belongs to.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::model::{KeyValue, Resource};

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

/// Resolves server endpoints to resources, caching them (bounded).
#[derive(Debug)]
pub struct ServiceMap {
    rules: Vec<ServiceRule>,
    extra: Vec<KeyValue>,
    cache: HashMap<(IpAddr, u16), Arc<Resource>, foldhash::fast::RandomState>,
    by_name: HashMap<String, Arc<Resource>, foldhash::fast::RandomState>,
    clients: HashMap<IpAddr, Arc<str>, foldhash::fast::RandomState>,
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
            clients: HashMap::default(),
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

    /// Distinct services named so far.
    pub fn services(&self) -> usize {
        self.by_name.len()
    }

    /// The name of a client address: the first rule whose network holds it
    /// (its port does not matter: a client speaks from an ephemeral port),
    /// else the address itself.
    pub fn client_name(&mut self, ip: IpAddr) -> Arc<str> {
        if let Some(n) = self.clients.get(&ip) {
            return n.clone();
        }
        let name: Arc<str> = match self
            .rules
            .iter()
            .find(|r| r.net.is_some_and(|n| n.contains(&ip)))
        {
            Some(r) => Arc::from(r.name.as_str()),
            None => Arc::from(ip.to_string()),
        };
        if self.clients.len() < self.max_cached {
            self.clients.insert(ip, name.clone());
        }
        name
    }

    /// The resource of the service listening at `ip:port`.
    pub fn resolve(&mut self, ip: IpAddr, port: u16) -> Arc<Resource> {
        if let Some(r) = self.cache.get(&(ip, port)) {
            return r.clone();
        }
        let name = match self.rules.iter().find(|r| r.matches(ip, port)) {
            Some(r) => r.name.clone(),
            None => match ip {
                IpAddr::V6(v6) => format!("[{v6}]:{port}"),
                IpAddr::V4(v4) => format!("{v4}:{port}"),
            },
        };
        let r = match self.by_name.get(&name) {
            Some(r) => r.clone(),
            None if self.by_name.len() >= self.max_services => {
                self.overflowed += 1;
                if let Some(o) = &self.overflow {
                    o.clone()
                } else {
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
            }
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
        };
        if self.cache.len() < self.max_cached {
            self.cache.insert((ip, port), r.clone());
        }
        r
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
            m.resolve(ip.parse().unwrap(), p).service_name().to_string()
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
        let a = m.resolve("10.0.0.7".parse().unwrap(), 1);
        let b = m.resolve("10.0.0.8".parse().unwrap(), 2);
        assert!(Arc::ptr_eq(&a, &b));
        // Clients are named by network, whatever their port.
        assert_eq!(&*m.client_name("10.0.0.5".parse().unwrap()), "api");
        assert_eq!(&*m.client_name("10.9.9.9".parse().unwrap()), "internal");
        assert_eq!(
            &*m.client_name("192.168.1.1".parse().unwrap()),
            "192.168.1.1"
        );
    }

    #[test]
    fn services_beyond_the_cap_share_one_overflow_service() {
        let mut m = ServiceMap::new(vec![], vec![]).with_max_services(2);
        let a = m.resolve("10.0.0.1".parse().unwrap(), 80);
        let b = m.resolve("10.0.0.2".parse().unwrap(), 80);
        let c = m.resolve("10.0.0.3".parse().unwrap(), 80);
        let d = m.resolve("10.0.0.4".parse().unwrap(), 80);
        assert!(!Arc::ptr_eq(&a, &b));
        assert_eq!(c.service_name(), OVERFLOW_SERVICE);
        assert!(Arc::ptr_eq(&c, &d));
        assert_eq!(m.overflowed, 2);
        assert_eq!(m.services(), 2);
    }
}
