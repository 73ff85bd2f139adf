//! wasmtap-kube: Kubernetes workload identity.
//!
//! Watches Pods (this node's, all, or the agent's own), the owners that name
//! workloads (ReplicaSet → Deployment, Job → CronJob; StatefulSets and
//! DaemonSets are named by the pod's owner reference) and Services with
//! kube-rs (list, then watch with bookmarks; a `410 Gone` relists; errors
//! back off), keeps only the fields it uses ([`inventory`]), and publishes
//! an [`IdentityIndex`](wasmtap_telemetry::identity::IdentityIndex) for the
//! shards through [`Identities`].
//!
//! *Invariant*: the only crate that talks to the Kubernetes API. When the
//! API is unreachable or forbidden, the agent goes on with what it knew
//! (or with addresses), logs once per outage, counts, and recovers by
//! itself.

pub mod inventory;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use wasmtap_telemetry::identity::Identities;

pub use inventory::{Change, Inventory, Settings};

/// Which pods to watch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Pods scheduled on this node (`spec.nodeName`): host mode's default.
    Node(String),
    /// Every pod of the cluster (names the remote end of cross-node calls).
    Cluster,
    /// The agent's own pod (a sidecar): `namespace`, `name`.
    Pod(String, String),
}

/// Where and what to watch.
#[derive(Debug, Clone)]
pub struct KubeConfig {
    /// A kubeconfig file; `None`: the usual inference (`KUBECONFIG`,
    /// `~/.kube/config`, then the in-cluster service account).
    pub kubeconfig: Option<PathBuf>,
    /// Which pods.
    pub scope: Scope,
    /// Watch Services (virtual IPs named by the Service).
    pub services: bool,
    /// How the inventory names and bounds.
    pub settings: Settings,
    /// A changed inventory is published at most this often.
    pub publish_every: Duration,
}

/// What the watcher reports about itself (shared with `/status` and the
/// agent's counters).
#[derive(Debug, Default)]
pub struct KubeStatus {
    /// Every watched kind is listed and watched, with no error since.
    pub synced: AtomicBool,
    /// Watch events applied.
    pub events: AtomicU64,
    /// Lists (the first and every relist, after a `410 Gone` or an outage).
    pub lists: AtomicU64,
    /// Errors (API unreachable, forbidden, watch failed).
    pub errors: AtomicU64,
    /// Indexes published.
    pub published: AtomicU64,
    /// Pods known.
    pub pods: AtomicU64,
    /// Services known.
    pub services: AtomicU64,
    /// Objects not kept (bounds) or unusable.
    pub dropped: AtomicU64,
    /// The last error, for `/status`.
    pub last_error: Mutex<String>,
}

impl KubeStatus {
    fn error(&self, what: &str, e: &dyn std::fmt::Display) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let msg = format!("{what}: {e}");
        let was_synced = self.synced.swap(false, Ordering::Relaxed);
        let mut last = self
            .last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Once per outage, not once per retry.
        if was_synced || last.is_empty() {
            tracing::warn!(
                "kubernetes: {msg}; names keep what was known (else addresses) until the API answers"
            );
        }
        *last = msg;
    }

    /// The last error, empty when none happened.
    pub fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Errors building the client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kubeconfig file could not be read.
    #[error("kubeconfig {0}: {1}")]
    Kubeconfig(PathBuf, String),
    /// No configuration could be inferred or the client could not be built.
    #[error("kubernetes client: {0}")]
    Client(String),
}

async fn client(cfg: &KubeConfig) -> Result<Client, Error> {
    let config = match &cfg.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| Error::Kubeconfig(path.clone(), e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| Error::Kubeconfig(path.clone(), e.to_string()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| Error::Client(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| Error::Client(e.to_string()))
}

// Events are moved once, from the stream to the inventory: boxing them
// would only add an allocation each.
#[allow(clippy::large_enum_variant)]
enum Ev {
    Pod(Result<watcher::Event<Pod>, watcher::Error>),
    ReplicaSet(Result<watcher::Event<ReplicaSet>, watcher::Error>),
    Job(Result<watcher::Event<Job>, watcher::Error>),
    Service(Result<watcher::Event<Service>, watcher::Error>),
}

fn change<K>(e: watcher::Event<K>) -> Change<K> {
    match e {
        watcher::Event::Init => Change::Init,
        watcher::Event::InitApply(k) => Change::InitApply(k),
        watcher::Event::InitDone => Change::InitDone,
        watcher::Event::Apply(k) => Change::Apply(k),
        watcher::Event::Delete(k) => Change::Delete(k),
    }
}

fn stream<K>(
    api: Api<K>,
    wc: watcher::Config,
    f: fn(Result<watcher::Event<K>, watcher::Error>) -> Ev,
) -> BoxStream<'static, Ev>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    watcher(api, wc).default_backoff().map(f).boxed()
}

/// Starts watching on `rt`; the index is published to `identities`.
/// Returns at once: the API may be down, and the agent does not wait.
pub fn start(
    rt: &tokio::runtime::Handle,
    cfg: KubeConfig,
    identities: Identities,
) -> Arc<KubeStatus> {
    let status = Arc::new(KubeStatus::default());
    let st = status.clone();
    rt.spawn(async move {
        let client = loop {
            match client(&cfg).await {
                Ok(c) => break c,
                Err(e) => {
                    st.error("cannot build a client", &e);
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
            }
        };
        run(client, cfg, identities, st).await;
    });
    status
}

async fn run(client: Client, cfg: KubeConfig, identities: Identities, st: Arc<KubeStatus>) {
    let mut inv = Inventory::new(cfg.settings.clone());
    let (pods, owners_ns) = match &cfg.scope {
        Scope::Node(node) => (
            stream(
                Api::<Pod>::all(client.clone()),
                watcher::Config::default().fields(&format!("spec.nodeName={node}")),
                Ev::Pod,
            ),
            None,
        ),
        Scope::Cluster => (
            stream(
                Api::<Pod>::all(client.clone()),
                watcher::Config::default(),
                Ev::Pod,
            ),
            None,
        ),
        Scope::Pod(ns, name) => (
            stream(
                Api::<Pod>::namespaced(client.clone(), ns),
                watcher::Config::default().fields(&format!("metadata.name={name}")),
                Ev::Pod,
            ),
            Some(ns.clone()),
        ),
    };
    let mut streams = vec![pods];
    let rs_api = match &owners_ns {
        Some(ns) => Api::<ReplicaSet>::namespaced(client.clone(), ns),
        None => Api::<ReplicaSet>::all(client.clone()),
    };
    let job_api = match &owners_ns {
        Some(ns) => Api::<Job>::namespaced(client.clone(), ns),
        None => Api::<Job>::all(client.clone()),
    };
    streams.push(stream(rs_api, watcher::Config::default(), Ev::ReplicaSet));
    streams.push(stream(job_api, watcher::Config::default(), Ev::Job));
    if cfg.services && owners_ns.is_none() {
        streams.push(stream(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
            Ev::Service,
        ));
    }
    // Per kind (pods, replicasets, jobs, services): listed, no error since.
    let kinds = streams.len();
    let mut ok = [false; 4];
    // A kind listed once resumes its watch after an error without a new
    // list: its next event means it is current again.
    let mut listed = [false; 4];
    let mut events = futures::stream::select_all(streams);
    let mut tick = tokio::time::interval(cfg.publish_every.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = false;
    let mut last_prune = now_ns();
    loop {
        tokio::select! {
            ev = events.next() => {
                let Some(ev) = ev else { break };
                let now = now_ns();
                let (kind, done) = match ev {
                    Ev::Pod(Ok(e)) => {
                        if matches!(e, watcher::Event::Init) {
                            st.lists.fetch_add(1, Ordering::Relaxed);
                        }
                        let done = matches!(e, watcher::Event::InitDone);
                        inv.pod(change(e), now);
                        (0, Some(done))
                    }
                    Ev::ReplicaSet(Ok(e)) => {
                        let done = matches!(e, watcher::Event::InitDone);
                        inv.replica_set(change(e));
                        (1, Some(done))
                    }
                    Ev::Job(Ok(e)) => {
                        let done = matches!(e, watcher::Event::InitDone);
                        inv.job(change(e));
                        (2, Some(done))
                    }
                    Ev::Service(Ok(e)) => {
                        let done = matches!(e, watcher::Event::InitDone);
                        inv.service(change(e));
                        (3, Some(done))
                    }
                    Ev::Pod(Err(e)) => { st.error("pods", &e); (0, None) }
                    Ev::ReplicaSet(Err(e)) => { st.error("replicasets", &e); (1, None) }
                    Ev::Job(Err(e)) => { st.error("jobs", &e); (2, None) }
                    Ev::Service(Err(e)) => { st.error("services", &e); (3, None) }
                };
                match done {
                    None => ok[kind] = false,
                    Some(done) => {
                        st.events.fetch_add(1, Ordering::Relaxed);
                        dirty = true;
                        listed[kind] |= done;
                        ok[kind] = listed[kind];
                        if done && ok[..kinds].iter().all(|&k| k) && !st.synced.swap(true, Ordering::Relaxed) {
                            tracing::info!(
                                "kubernetes: listed ({} pods, {} services); watching",
                                inv.stats().pods,
                                inv.stats().services
                            );
                        }
                    }
                }
            }
            _ = tick.tick() => {
                let now = now_ns();
                if now.saturating_sub(last_prune) > 30_000_000_000 {
                    inv.prune(now);
                    last_prune = now;
                    dirty = true;
                }
                if dirty {
                    dirty = false;
                    identities.publish(inv.index());
                    let s = inv.stats();
                    st.published.fetch_add(1, Ordering::Relaxed);
                    st.pods.store(s.pods, Ordering::Relaxed);
                    st.services.store(s.services, Ordering::Relaxed);
                    st.dropped.store(s.dropped + s.unusable, Ordering::Relaxed);
                }
            }
        }
    }
}
