//! PostgreSQL decoder (plugins/pgsql): golden tests on every capture in
//! tests/pcaps/pgsql/, and a real server (a temporary cluster driven by
//! pgbench and psql, scripts/capture-pgsql.sh).
//!
//! Exchanges are: one per simple query (`Q`), one per extended-protocol
//! `Execute`, one `STARTUP` per login (ends at ReadyForQuery or the login
//! error), one `SSL_REQUEST` per SSLRequest (its status code is the one-byte
//! answer). Counts are keyed "OPERATION OUTCOME", the outcome being `ok` or
//! the span's `error.type` (the SQLSTATE).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::{attr, replay_spans, root};

fn spans_of(path: &Path) -> Vec<Value> {
    replay_spans(path, &[])
}

fn key(s: &Value) -> String {
    let err = attr(s, "error.type");
    let outcome = if err.is_empty() {
        "ok".to_string()
    } else {
        err
    };
    format!("{} {}", s["name"].as_str().unwrap_or(""), outcome)
}

fn counts(spans: &[Value]) -> BTreeMap<String, usize> {
    let mut c = BTreeMap::new();
    for s in spans {
        *c.entry(key(s)).or_default() += 1;
    }
    c
}

/// The capture to replay for `file`. deepflow__pgsql-all.pcap runs
/// PostgreSQL on port 8000, which the embedded HTTP decoder claims by port:
/// the host overrules a port claim when the port's decoder rejects the first
/// bytes and another decoder's probe accepts them, so it is replayed as is.
fn capture(file: &str) -> PathBuf {
    root().join("tests/pcaps/pgsql").join(file)
}

/// (file, expected exchanges "OPERATION OUTCOME" with counts).
const PEER: &[(&str, &[(&str, usize)])] = &[
    // DeepFlow test_simple_query: Q "delete  from test;", CommandComplete DELETE 1.
    ("deepflow__simple_query.pcap", &[("DELETE ok", 1)]),
    // DeepFlow test_error: Q "asdsdfdsf;" answered 42601 (no ReadyForQuery
    // captured: reported when the flow ends). Not a keyword: OTHER.
    ("deepflow__error.pcap", &[("OTHER 42601", 1)]),
    // tshark: 32 Execute, 32 CommandComplete (mid-connection, extended
    // protocol; the 6 Parses seen give SELECT, the statements prepared
    // before the capture give EXECUTE).
    // DeepFlow's result file counts 30 requests / 29 responses because it
    // logs per packet and merges Parse/Bind/Execute packets differently; we
    // follow tshark: one exchange per Execute, all answered.
    (
        "deepflow__pgsql-all.pcap",
        &[("SELECT ok", 6), ("EXECUTE ok", 26)],
    ),
    // Zeek: startup + 7 simple queries (DROP, CREATE, INSERT x2, SELECT,
    // DELETE, DROP); tshark: 7 Simple query, 7 CommandComplete.
    (
        "zeek__postgresql-psql-create-insert-select-delete-drop.pcap",
        &[
            ("STARTUP ok", 1),
            ("DROP ok", 2),
            ("CREATE ok", 1),
            ("INSERT ok", 2),
            ("SELECT ok", 1),
            ("DELETE ok", 1),
        ],
    ),
    // Zeek: one row, startup ... error F (SQLSTATE 28P01).
    (
        "zeek__postgresql-psql-login-fail.pcap",
        &[("STARTUP 28P01", 1)],
    ),
    // Zeek: 88 rows = 2 ssl_request + 2 startup + 84 simple queries.
    (
        "zeek__postgresql-greenhouse-app.pcap",
        &[
            ("SSL_REQUEST ok", 2),
            ("STARTUP ok", 2),
            // Per keyword as tshark's Simple query list.
            ("BEGIN ok", 26),
            ("SELECT ok", 26),
            ("SHOW ok", 4),
            ("ROLLBACK ok", 22),
            ("COMMIT ok", 4),
            ("INSERT ok", 2),
        ],
    ),
    // Suricata: SSL refused, startup, 22 simple queries of which 5 errors
    // (tshark: Error x5, CommandComplete x17).
    (
        "suricata__pgsql-simple-query-rollback.pcap",
        &[
            ("SSL_REQUEST ok", 1),
            ("STARTUP ok", 1),
            ("BEGIN ok", 3),
            ("COMMIT ok", 3),
            ("DELETE ok", 4),
            ("INSERT ok", 6),
            ("INSERT 25P02", 2),
            ("SELECT ok", 1),
            ("SELECT 22012", 2),
            ("SELECT 25P02", 1),
        ],
    ),
    // Suricata: SSL accepted then TLS (opaque, nothing more); a second
    // connection's startup refused with 28000.
    (
        "suricata__pgsql-upgrade-tls.pcap",
        &[("SSL_REQUEST ok", 1), ("STARTUP 28000", 1)],
    ),
];

#[test]
fn pgsql_captures_match_peer_expectations() {
    let mut failures = Vec::new();
    for (file, want) in PEER {
        let got = counts(&spans_of(&capture(file)));
        let want: BTreeMap<String, usize> = want.iter().map(|(k, n)| (k.to_string(), *n)).collect();
        if got != want {
            failures.push(format!("{file}: want {want:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn pgsql_attributes_on_known_captures() {
    let spans = spans_of(&capture("deepflow__simple_query.pcap"));
    let s = &spans[0];
    assert_eq!(attr(s, "db.system.name"), "postgresql");
    assert_eq!(attr(s, "db.operation.name"), "DELETE");
    assert_eq!(attr(s, "db.query.text"), "delete  from test;");
    assert_eq!(attr(s, "db.response.affected_rows"), "1");
    // DeepFlow's rrt: 2224 us (and 103 us for the error below).
    let dur =
        |s: &Value| s["end_unix_nano"].as_u64().unwrap() - s["start_unix_nano"].as_u64().unwrap();
    assert_eq!(dur(s), 2_224_000);

    let spans = spans_of(&capture("deepflow__error.pcap"));
    assert_eq!(spans[0]["status"]["code"], "error");
    assert_eq!(attr(&spans[0], "db.response.status_code"), "42601");
    assert_eq!(dur(&spans[0]), 103_000);

    let spans = spans_of(&capture(
        "zeek__postgresql-psql-create-insert-select-delete-drop.pcap",
    ));
    let select = spans.iter().find(|s| s["name"] == "SELECT").unwrap();
    assert_eq!(attr(select, "db.response.returned_rows"), "2");
    assert_eq!(attr(select, "db.namespace"), "postgres");
    let insert = spans.iter().find(|s| s["name"] == "INSERT").unwrap();
    assert_eq!(
        attr(insert, "db.query.text"),
        "INSERT INTO t VALUES (?, ?, now());"
    );

    // Literals masked in Suricata's queries, the database from the startup.
    let spans = spans_of(&capture("suricata__pgsql-simple-query-rollback.pcap"));
    let del = spans.iter().find(|s| s["name"] == "DELETE").unwrap();
    assert_eq!(
        attr(del, "db.query.text"),
        "DELETE FROM new_table WHERE NAME=?;"
    );
    assert_eq!(attr(del, "db.namespace"), "Test");

    // Extended protocol: statements parsed in the capture carry their text.
    let spans = spans_of(&capture("deepflow__pgsql-all.pcap"));
    assert!(
        spans
            .iter()
            .filter(|s| s["name"] == "SELECT")
            .all(|s| !attr(s, "db.query.text").is_empty())
    );
}

#[test]
fn pgsql_secrets_are_never_exported() {
    // SCRAM and cleartext/MD5 password exchanges.
    for f in [
        "zeek__postgresql-psql-login-fail.pcap",
        "zeek__postgresql-greenhouse-app.pcap",
        "suricata__pgsql-simple-query-rollback.pcap",
    ] {
        let spans = spans_of(&capture(f));
        let text = serde_json::to_string(&spans).unwrap();
        assert!(!text.contains("SCRAM"), "{f}: {text}");
        assert!(!text.contains("n,,n="), "{f}: {text}");
        assert!(!text.contains("md5"), "{f}: {text}");
    }
}

/// One line per span: what a reviewer needs to see a regression.
fn summary_line(s: &Value) -> String {
    format!(
        "{} {} {} err={} rows={} affected={} db={} dur_ns={} | {}",
        s["start_unix_nano"],
        s["name"].as_str().unwrap_or(""),
        s["status"]["code"].as_str().unwrap_or(""),
        attr(s, "error.type"),
        attr(s, "db.response.returned_rows"),
        attr(s, "db.response.affected_rows"),
        attr(s, "db.namespace"),
        s["end_unix_nano"].as_u64().unwrap_or(0) - s["start_unix_nano"].as_u64().unwrap_or(0),
        attr(s, "db.query.text").replace('\n', "\\n"),
    )
}

#[test]
fn pgsql_golden_summaries() {
    crate::check_golden("pgsql", |spans| {
        spans.iter().map(|s| summary_line(s) + "\n").collect()
    });
}

#[test]
fn pgsql_pgbench_counts_equal_what_pgbench_ran() {
    let (clients, txs) = (2usize, 200usize);
    let pcap = std::env::temp_dir().join(format!("wasmtap-pgsql-{}.pcap", std::process::id()));
    let out = Command::new(root().join("scripts/capture-pgsql.sh"))
        .arg(&pcap)
        .args([clients.to_string(), txs.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "capture-pgsql.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // pgbench's own report: transactions processed per mode.
    let report = String::from_utf8(out.stdout).unwrap();
    let mut processed = BTreeMap::new();
    for l in report.lines() {
        if let Some((mode, n)) = l.split_once(' ') {
            processed.insert(mode.to_string(), n.trim().parse::<usize>().unwrap());
        }
    }
    assert_eq!(processed.get("simple"), Some(&(clients * txs)), "{report}");
    assert_eq!(
        processed.get("extended"),
        Some(&(clients * txs)),
        "{report}"
    );
    let total_tx = processed.values().sum::<usize>();

    let spans = spans_of(&pcap);
    std::fs::remove_file(&pcap).ok();
    // Statements of pgbench's TPC-B-like script, counted by query text (the
    // simple protocol has literals masked; the extended one sends $n).
    let count = |op: &str, text_prefix: &str| {
        spans
            .iter()
            .filter(|s| s["name"] == op && attr(s, "db.query.text").starts_with(text_prefix))
            .filter(|s| s["status"]["code"] != "error")
            .count()
    };
    assert_eq!(count("BEGIN", "BEGIN;"), total_tx);
    assert_eq!(count("END", "END;"), total_tx);
    assert_eq!(count("UPDATE", "UPDATE pgbench_accounts"), total_tx);
    assert_eq!(count("UPDATE", "UPDATE pgbench_tellers"), total_tx);
    assert_eq!(count("UPDATE", "UPDATE pgbench_branches"), total_tx);
    assert_eq!(
        count("SELECT", "SELECT abalance FROM pgbench_accounts"),
        total_tx
    );
    assert_eq!(count("INSERT", "INSERT INTO pgbench_history"), total_tx);
    // Per operation, the benchmark's share: 3 UPDATE, 1 SELECT, 1 INSERT per transaction.
    let by_op = counts(&spans);
    assert_eq!(by_op.get("UPDATE ok"), Some(&(3 * total_tx)), "{by_op:?}");
    assert_eq!(by_op.get("END ok"), Some(&total_tx), "{by_op:?}");
    // The extended protocol's statements carry $n parameters, the simple ones masked literals.
    assert_eq!(
        count(
            "UPDATE",
            "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2;"
        ),
        processed["extended"]
    );
    assert_eq!(
        count(
            "UPDATE",
            "UPDATE pgbench_accounts SET abalance = abalance + ? WHERE aid = ?;"
        ),
        processed["simple"]
    );
    // psql's failing statement: an error span with SQLSTATE 42P01.
    let errors: Vec<&Value> = spans
        .iter()
        .filter(|s| s["status"]["code"] == "error")
        .collect();
    assert_eq!(errors.len(), 1, "{by_op:?}");
    assert_eq!(attr(errors[0], "db.response.status_code"), "42P01");
    assert_eq!(attr(errors[0], "error.type"), "42P01");
    assert_eq!(
        attr(errors[0], "db.query.text"),
        "SELECT * FROM no_such_table"
    );
    // psql's other statements, and every login answered.
    assert!(
        by_op.get("CREATE ok").copied().unwrap_or(0) >= 1,
        "{by_op:?}"
    );
    let rows = spans
        .iter()
        .find(|s| attr(s, "db.query.text") == "SELECT * FROM wasmtap_t")
        .unwrap();
    assert_eq!(attr(rows, "db.response.returned_rows"), "2");
    assert_eq!(by_op.get("STARTUP ok"), by_op.get("SSL_REQUEST ok"));
    assert!(
        !by_op.keys().any(|k| k.ends_with("no_response")),
        "{by_op:?}"
    );
}

/// Kafka connections that open with a Metadata request (`00 03 00 0v` after
/// the length, like a StartupMessage) are not taken for PostgreSQL: no
/// Kafka broker may show up as a failing PostgreSQL server.
#[test]
fn kafka_is_not_taken_for_postgresql() {
    let dir = root().join("tests/pcaps/kafka");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty());
    for f in files {
        let spans = crate::replay_spans(&f, &[]);
        let pg: Vec<&Value> = spans
            .iter()
            .filter(|s| crate::attr(s, "network.protocol.name") == "postgresql")
            .collect();
        assert!(pg.is_empty(), "{}: {pg:?}", f.display());
    }
}
