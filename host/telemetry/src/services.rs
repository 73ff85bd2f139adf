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
    max_cached: usize,
    next_id: u64,
}

impl ServiceMap {
    /// Rules are tried in order; the first match names the service. `extra`
    /// attributes are added to every resource (agent identity, Kubernetes).
    pub fn new(rules: Vec<ServiceRule>, extra: Vec<KeyValue>) -> Self {
        Self {
            rules,
            extra,
            cache: HashMap::default(),
            by_name: HashMap::default(),
            max_cached: 65_536,
            next_id: 1,
        }
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
            None => {
                let mut attributes = vec![KeyValue::str("service.name", name.clone())];
                attributes.extend(self.extra.iter().cloned());
                let r = Arc::new(Resource {
                    id: self.next_id,
                    attributes,
                });
                self.next_id += 1;
                if self.by_name.len() < self.max_cached {
                    self.by_name.insert(name, r.clone());
                }
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
    }
}
