//! Names learned from DNS answers: which name clients used to reach an
//! address.
//!
//! A DNS response that resolved `api.example.com` to `192.0.2.7` (through
//! any CNAME chain) teaches that `192.0.2.7` is `api.example.com` for the
//! answer's TTL. The table is bounded, clock-free (capture time in, capture
//! time out) and deterministic: an address several names resolve to (a
//! shared ingress) is named by the name answered most often, ties going to
//! the most recent.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

/// Bounds and lifetimes of [`DnsNames`].
#[derive(Debug, Clone, PartialEq)]
pub struct DnsNamesConfig {
    /// Addresses held; answers for new addresses beyond it are dropped
    /// (counted) until entries expire.
    pub max_addresses: usize,
    /// Names kept per address (the least answered goes first).
    pub max_names_per_address: usize,
    /// Added to every answer's TTL: clients keep connections open, and
    /// names, longer than the record lives.
    pub hold_ns: u64,
}

impl Default for DnsNamesConfig {
    fn default() -> Self {
        Self {
            max_addresses: 65_536,
            max_names_per_address: 4,
            hold_ns: 300_000_000_000,
        }
    }
}

#[derive(Debug, Clone)]
struct Seen {
    name: Arc<str>,
    expires_ns: u64,
    last_ns: u64,
    count: u64,
}

/// Counters of [`DnsNames`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsNamesStats {
    /// Address-to-name mappings learned or refreshed.
    pub learned: u64,
    /// Mappings not kept because the table was full.
    pub dropped: u64,
    /// Mappings removed because their TTL (plus the hold) passed.
    pub expired: u64,
    /// Addresses held now.
    pub held: u64,
}

/// The address-to-name table.
#[derive(Debug)]
pub struct DnsNames {
    cfg: DnsNamesConfig,
    map: HashMap<IpAddr, Vec<Seen>, foldhash::fast::RandomState>,
    next_sweep_ns: u64,
    stats: DnsNamesStats,
}

/// How often (capture time) a full table looks for expired entries.
const SWEEP_EVERY_NS: u64 = 1_000_000_000;

impl DnsNames {
    /// An empty table.
    pub fn new(cfg: DnsNamesConfig) -> Self {
        Self {
            cfg,
            map: HashMap::default(),
            next_sweep_ns: 0,
            stats: DnsNamesStats::default(),
        }
    }

    /// The table's counters.
    pub fn stats(&self) -> DnsNamesStats {
        DnsNamesStats {
            held: self.map.len() as u64,
            ..self.stats.clone()
        }
    }

    /// An answer seen at `now_ns`: `name` resolved to `addrs`, valid for
    /// `ttl_s` seconds.
    pub fn learn(&mut self, name: &str, addrs: &[IpAddr], ttl_s: u32, now_ns: u64) {
        let name = name.trim_end_matches('.');
        if name.is_empty() || addrs.is_empty() {
            return;
        }
        let expires_ns = now_ns
            .saturating_add(u64::from(ttl_s).saturating_mul(1_000_000_000))
            .saturating_add(self.cfg.hold_ns);
        if self.map.len() >= self.cfg.max_addresses && now_ns >= self.next_sweep_ns {
            self.sweep(now_ns);
            self.next_sweep_ns = now_ns.saturating_add(SWEEP_EVERY_NS);
        }
        let shared: Arc<str> = Arc::from(name);
        for &ip in addrs {
            let full = self.map.len() >= self.cfg.max_addresses;
            let list = match self.map.get_mut(&ip) {
                Some(l) => l,
                None if full => {
                    self.stats.dropped += 1;
                    continue;
                }
                None => self.map.entry(ip).or_default(),
            };
            self.stats.learned += 1;
            if let Some(s) = list.iter_mut().find(|s| *s.name == *name) {
                s.expires_ns = s.expires_ns.max(expires_ns);
                s.last_ns = now_ns;
                s.count += 1;
                continue;
            }
            if list.len() >= self.cfg.max_names_per_address.max(1) {
                // The least answered (then the oldest) name makes room.
                if let Some(i) = (0..list.len()).min_by_key(|&i| (list[i].count, list[i].last_ns)) {
                    list.swap_remove(i);
                }
            }
            list.push(Seen {
                name: shared.clone(),
                expires_ns,
                last_ns: now_ns,
                count: 1,
            });
        }
    }

    /// The name of `ip` at `now_ns`: of the names whose TTL has not passed,
    /// the most answered, then the most recent.
    pub fn lookup(&self, ip: IpAddr, now_ns: u64) -> Option<Arc<str>> {
        self.map
            .get(&ip)?
            .iter()
            .filter(|s| s.expires_ns > now_ns)
            .max_by(|a, b| (a.count, a.last_ns).cmp(&(b.count, b.last_ns)))
            .map(|s| s.name.clone())
    }

    /// Drops what expired by `now_ns`.
    pub fn sweep(&mut self, now_ns: u64) {
        let mut expired = 0;
        self.map.retain(|_, l| {
            let before = l.len();
            l.retain(|s| s.expires_ns > now_ns);
            expired += (before - l.len()) as u64;
            !l.is_empty()
        });
        self.stats.expired += expired;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_live_for_their_ttl_plus_the_hold() {
        let mut n = DnsNames::new(DnsNamesConfig {
            hold_ns: 10 * S,
            ..Default::default()
        });
        n.learn("api.example.com.", &[ip("192.0.2.7")], 30, 100 * S);
        assert_eq!(
            n.lookup(ip("192.0.2.7"), 99 * S).as_deref(),
            Some("api.example.com")
        );
        assert_eq!(
            n.lookup(ip("192.0.2.7"), 139 * S).as_deref(),
            Some("api.example.com")
        );
        assert_eq!(n.lookup(ip("192.0.2.7"), 140 * S), None);
        assert_eq!(n.lookup(ip("192.0.2.8"), 100 * S), None);
        n.sweep(140 * S);
        assert_eq!(n.stats().expired, 1);
        assert_eq!(n.stats().held, 0);
    }

    #[test]
    fn a_shared_address_takes_the_most_answered_name() {
        let mut n = DnsNames::new(DnsNamesConfig::default());
        let a = [ip("192.0.2.1")];
        n.learn("shop.example", &a, 60, S);
        n.learn("blog.example", &a, 60, 2 * S);
        assert_eq!(n.lookup(a[0], 3 * S).as_deref(), Some("blog.example"));
        n.learn("shop.example", &a, 60, 3 * S);
        assert_eq!(n.lookup(a[0], 4 * S).as_deref(), Some("shop.example"));
    }

    #[test]
    fn the_table_is_bounded() {
        let mut n = DnsNames::new(DnsNamesConfig {
            max_addresses: 2,
            max_names_per_address: 2,
            hold_ns: 0,
        });
        n.learn("a", &[ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")], 5, S);
        assert_eq!(n.stats().held, 2);
        assert_eq!(n.stats().dropped, 1);
        for (i, name) in ["x", "y", "z"].iter().enumerate() {
            n.learn(name, &[ip("10.0.0.1")], 5, (2 + i as u64) * S);
        }
        assert_eq!(n.map[&ip("10.0.0.1")].len(), 2);
        // Once entries expire, a full table makes room.
        n.learn("b", &[ip("10.0.0.9")], 5, 100 * S);
        assert_eq!(n.lookup(ip("10.0.0.9"), 100 * S).as_deref(), Some("b"));
    }
}
