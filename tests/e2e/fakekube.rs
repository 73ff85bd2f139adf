//! A stand-in Kubernetes API server for the identity tests: plain HTTP on
//! 127.0.0.1, speaking what kube-rs's watcher asks for. No kube-apiserver is
//! packaged in the registries the suite installs from, so this server
//! implements the list and watch protocol itself:
//!
//! - `GET /api/v1/pods`, `/api/v1/namespaces/NS/pods` (and `services`,
//!   `/apis/apps/v1/replicasets`, `/apis/batch/v1/jobs`): a list with
//!   `metadata.resourceVersion`, filtered by `fieldSelector`
//!   (`spec.nodeName=`, `metadata.name=`);
//! - `...?watch=true&resourceVersion=N`: newline-delimited JSON events
//!   (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`) after `N`, in chunks
//!   (`Transfer-Encoding: chunked`) as they happen, until `timeoutSeconds`; a version older than the compaction
//!   point gets an `ERROR` event with a `410 Gone` Status (as etcd
//!   compaction makes a real server do);
//! - [`FakeKube::down`] closes the listener and every watch (connection
//!   refused), [`FakeKube::up`] listens again on the same port.
//!
//! Objects are built from the fixtures in `tests/fixtures/kubernetes/`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

struct Event {
    rv: u64,
    kind: &'static str,
    typ: &'static str,
    obj: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Watches from a version before this get 410 Gone.
    compacted: u64,
    /// (kind, namespace/name) → object.
    objects: BTreeMap<(&'static str, String), Value>,
    events: Vec<Event>,
    /// Bumped by `down`: open watches end.
    generation: u64,
    /// Request lines served (for the tests' assertions).
    requests: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    up: AtomicBool,
}

/// The fake API server.
pub struct FakeKube {
    shared: Arc<Shared>,
    pub port: u16,
    accept: Option<std::thread::JoinHandle<()>>,
}

fn kind_of(path: &str) -> Option<(&'static str, Option<String>)> {
    let (base, kind) = path.rsplit_once('/')?;
    let kind = match kind {
        "pods" => "pods",
        "services" => "services",
        "replicasets" => "replicasets",
        "jobs" => "jobs",
        _ => return None,
    };
    let ns = base
        .split_once("/namespaces/")
        .map(|(_, ns)| ns.to_string());
    Some((kind, ns))
}

fn list_kind(kind: &str) -> (&'static str, &'static str) {
    match kind {
        "pods" => ("PodList", "v1"),
        "services" => ("ServiceList", "v1"),
        "replicasets" => ("ReplicaSetList", "apps/v1"),
        _ => ("JobList", "batch/v1"),
    }
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let h = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("");
                out.push(u8::from_str_radix(h, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn matches(obj: &Value, ns: &Option<String>, selector: &Option<String>) -> bool {
    if let Some(ns) = ns
        && obj["metadata"]["namespace"].as_str() != Some(ns)
    {
        return false;
    }
    let Some(sel) = selector else { return true };
    sel.split(',').all(|term| {
        let Some((field, want)) = term.split_once('=') else {
            return true;
        };
        let mut v = obj;
        for part in field.split('.') {
            v = &v[part];
        }
        v.as_str() == Some(want)
    })
}

impl FakeKube {
    /// Starts the server on a free port.
    pub fn start() -> FakeKube {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                rv: 1000,
                ..State::default()
            }),
            changed: Condvar::new(),
            up: AtomicBool::new(true),
        });
        let mut k = FakeKube {
            shared,
            port,
            accept: None,
        };
        k.serve(listener);
        k
    }

    fn serve(&mut self, listener: TcpListener) {
        let shared = self.shared.clone();
        self.accept = Some(std::thread::spawn(move || {
            for conn in listener.incoming() {
                if !shared.up.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &shared);
                });
            }
        }));
    }

    /// A kubeconfig file pointing at this server.
    pub fn kubeconfig(&self, path: &std::path::Path) {
        std::fs::write(
            path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\nusers:\n- name: fake\n  user: {{}}\ncurrent-context: fake\n",
                self.port
            ),
        )
        .unwrap();
    }

    fn change(&self, kind: &'static str, typ: &'static str, mut obj: Value) {
        let mut st = self.shared.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = format!(
            "{}/{}",
            obj["metadata"]["namespace"].as_str().unwrap_or(""),
            obj["metadata"]["name"].as_str().unwrap_or("")
        );
        if typ == "DELETED" {
            st.objects.remove(&(kind, key));
        } else {
            st.objects.insert((kind, key), obj.clone());
        }
        st.events.push(Event { rv, kind, typ, obj });
        self.shared.changed.notify_all();
    }

    /// Adds or replaces an object (`ADDED` or `MODIFIED`).
    pub fn apply(&self, kind: &'static str, obj: Value) {
        let key = (
            kind,
            format!(
                "{}/{}",
                obj["metadata"]["namespace"].as_str().unwrap_or(""),
                obj["metadata"]["name"].as_str().unwrap_or("")
            ),
        );
        let exists = self.shared.state.lock().unwrap().objects.contains_key(&key);
        self.change(kind, if exists { "MODIFIED" } else { "ADDED" }, obj);
    }

    /// Deletes an object (`DELETED`, with its last state).
    pub fn delete(&self, kind: &'static str, namespace: &str, name: &str) {
        let obj = self
            .shared
            .state
            .lock()
            .unwrap()
            .objects
            .get(&(kind, format!("{namespace}/{name}")))
            .cloned();
        if let Some(obj) = obj {
            self.change(kind, "DELETED", obj);
        }
    }

    /// Stops answering: the listener closes, every watch ends.
    pub fn down(&mut self) {
        self.shared.up.store(false, Ordering::SeqCst);
        {
            let mut st = self.shared.state.lock().unwrap();
            st.generation += 1;
        }
        self.shared.changed.notify_all();
        // Wake the accept loop so it drops the listener.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }

    /// Answers again on the same port. The event history was compacted
    /// meanwhile: a watch from before gets 410 Gone and must relist.
    pub fn up(&mut self) {
        {
            let mut st = self.shared.state.lock().unwrap();
            st.compacted = st.rv;
        }
        let listener = (0..100)
            .find_map(|_| {
                TcpListener::bind(("127.0.0.1", self.port))
                    .map_err(|_| std::thread::sleep(Duration::from_millis(50)))
                    .ok()
            })
            .expect("rebind the fake API server's port");
        self.shared.up.store(true, Ordering::SeqCst);
        self.serve(listener);
    }

    /// The request lines served so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.state.lock().unwrap().requests.clone()
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if self.shared.up.load(Ordering::SeqCst) {
            self.down();
        }
    }
}

fn handle(conn: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
    }
    let mut conn = conn;
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    shared.state.lock().unwrap().requests.push(target.clone());
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let params: BTreeMap<String, String> = query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), decode(v)))
        .collect();
    let Some((kind, ns)) = kind_of(path) else {
        let body = r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","reason":"NotFound","code":404}"#;
        write!(
            conn,
            "HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    };
    let selector = params.get("fieldSelector").cloned();
    if params.get("watch").map(String::as_str) != Some("true") {
        let st = shared.state.lock().unwrap();
        let items: Vec<Value> = st
            .objects
            .iter()
            .filter(|((k, _), o)| *k == kind && matches(o, &ns, &selector))
            .map(|(_, o)| o.clone())
            .collect();
        let (list, api) = list_kind(kind);
        let body = json!({
            "kind": list, "apiVersion": api,
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items,
        })
        .to_string();
        drop(st);
        write!(
            conn,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    // A watch: events after `resourceVersion`, streamed until the timeout.
    let mut cursor: u64 = params
        .get("resourceVersion")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|v| v.parse().ok())
        .unwrap_or(290u64);
    // As the API server does: chunked transfer encoding, one event (or a
    // few) per chunk, the stream ended by the last chunk.
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
    )?;
    fn chunk(conn: &mut TcpStream, data: &str) -> std::io::Result<()> {
        write!(conn, "{:x}\r\n{data}\r\n", data.len())?;
        conn.flush()
    }
    let deadline = Instant::now() + Duration::from_secs(timeout);
    let mut st = shared.state.lock().unwrap();
    let generation = st.generation;
    if cursor < st.compacted {
        let compacted = st.compacted;
        drop(st);
        chunk(
            &mut conn,
            &format!(
                "{}\n",
                json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {},
                    "status": "Failure", "reason": "Expired", "code": 410,
                    "message": format!("too old resource version: {cursor} ({compacted})")}})
            ),
        )?;
        return chunk(&mut conn, "");
    }
    let mut last_bookmark = Instant::now();
    loop {
        let mut out = String::new();
        let from = cursor;
        for e in st.events.iter().filter(|e| e.rv > from) {
            if e.kind == kind && matches(&e.obj, &ns, &selector) {
                out.push_str(&json!({"type": e.typ, "object": e.obj}).to_string());
                out.push('\n');
            }
            cursor = e.rv;
        }
        if last_bookmark.elapsed() > Duration::from_secs(2) {
            let (_, api) = list_kind(kind);
            let k = match kind {
                "pods" => "Pod",
                "services" => "Service",
                "replicasets" => "ReplicaSet",
                _ => "Job",
            };
            out.push_str(
                &json!({"type": "BOOKMARK", "object": {"kind": k, "apiVersion": api,
                    "metadata": {"resourceVersion": st.rv.to_string()}}})
                .to_string(),
            );
            out.push('\n');
            cursor = cursor.max(st.rv);
            last_bookmark = Instant::now();
        }
        if !out.is_empty() {
            drop(st);
            chunk(&mut conn, &out)?;
            st = shared.state.lock().unwrap();
        }
        if st.generation != generation {
            // Gone: the connection drops without its last chunk.
            return Ok(());
        }
        if Instant::now() >= deadline {
            drop(st);
            return chunk(&mut conn, "");
        }
        st = shared
            .changed
            .wait_timeout(st, Duration::from_millis(500))
            .unwrap()
            .0;
    }
}

/// Creation times in the API's format (second precision).
pub fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &format!("@{secs}"), "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn fixture(name: &str) -> Value {
    let p = crate::root().join(format!("tests/fixtures/kubernetes/{name}.json"));
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// A pod of Deployment `deploy` (through ReplicaSet `deploy-<hash>`), built
/// from the recorded pod: one container `app` listening on `port`.
pub fn pod(
    namespace: &str,
    deploy: &str,
    name: &str,
    uid: &str,
    node: &str,
    ip: &str,
    port: u16,
) -> Value {
    let mut p = fixture("pod");
    let rs = format!("{deploy}-7d9f8c6b5");
    p["metadata"]["name"] = json!(name);
    p["metadata"]["namespace"] = json!(namespace);
    p["metadata"]["uid"] = json!(uid);
    p["metadata"]["generateName"] = json!(format!("{rs}-"));
    p["metadata"]["creationTimestamp"] = json!(now_rfc3339());
    p["metadata"]["labels"] = json!({"app": deploy, "pod-template-hash": "7d9f8c6b5"});
    p["metadata"]["ownerReferences"][0]["name"] = json!(rs);
    p["spec"]["nodeName"] = json!(node);
    p["spec"]["containers"] = json!([{
        "image": "nginx:1.27", "name": "app",
        "ports": [{"containerPort": port, "name": "http", "protocol": "TCP"}],
    }]);
    p["status"]["podIP"] = json!(ip);
    p["status"]["podIPs"] = json!([{"ip": ip}]);
    p
}

/// The ReplicaSet of Deployment `deploy` that [`pod`] refers to.
pub fn replica_set(namespace: &str, deploy: &str) -> Value {
    let mut r = fixture("replicaset");
    r["metadata"]["name"] = json!(format!("{deploy}-7d9f8c6b5"));
    r["metadata"]["namespace"] = json!(namespace);
    r["metadata"]["uid"] = json!(format!("rs-{namespace}-{deploy}"));
    r["metadata"]["ownerReferences"][0]["name"] = json!(deploy);
    r
}
