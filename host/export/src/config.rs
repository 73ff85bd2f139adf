//! Exporter configuration: protocol, endpoint, headers, limits, and the `OTEL_EXPORTER_OTLP_*`
//! environment variables.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The OTLP transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// OTLP/gRPC (`grpc`), usually on port 4317.
    Grpc,
    /// OTLP/HTTP with binary protobuf bodies (`http/protobuf`), usually on port 4318.
    HttpProtobuf,
}

impl Protocol {
    /// The name used by `OTEL_EXPORTER_OTLP_PROTOCOL` (`grpc` or `http/protobuf`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProtobuf => "http/protobuf",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Protocol {
    type Err = ConfigError;

    /// Accepts `grpc`, `http/protobuf` and `http` (case-insensitive, surrounding blanks ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "grpc" => Ok(Protocol::Grpc),
            "http/protobuf" | "http" => Ok(Protocol::HttpProtobuf),
            _ => Err(ConfigError::UnknownProtocol(s.to_string())),
        }
    }
}

/// A configuration error, with a message meant for the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The protocol is neither `grpc` nor `http/protobuf`.
    #[error("unknown OTLP protocol {0:?}: expected \"grpc\" or \"http/protobuf\"")]
    UnknownProtocol(String),
    /// The endpoint is not a usable `http://host:port` URL.
    #[error("invalid OTLP endpoint {url:?}: {reason}")]
    InvalidEndpoint {
        /// The endpoint as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The endpoint uses `https://`, which this exporter cannot speak yet.
    #[error("invalid OTLP endpoint {0:?}: TLS not supported yet (use an http:// endpoint)")]
    TlsNotSupported(String),
    /// A header from `OTEL_EXPORTER_OTLP_HEADERS` or the config is malformed.
    #[error("invalid OTLP header {0:?}: expected key=value with a valid header name and value")]
    InvalidHeader(String),
    /// A numeric or boolean setting could not be parsed.
    #[error("invalid value {value:?} for {name}")]
    InvalidValue {
        /// The setting (usually the environment variable).
        name: &'static str,
        /// The value as given.
        value: String,
    },
    /// A limit is zero where at least one is needed.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
}

/// What the exporter sends where, and its limits.
#[derive(Debug, Clone, PartialEq)]
pub struct ExporterConfig {
    /// Base URL, as in `OTEL_EXPORTER_OTLP_ENDPOINT`: `http://host:4317` for gRPC, or
    /// `http://host:4318` for HTTP, where `/v1/traces` and `/v1/metrics` are appended.
    pub endpoint: String,
    /// The transport.
    pub protocol: Protocol,
    /// Extra HTTP headers, or gRPC metadata, sent with every request.
    pub headers: Vec<(String, String)>,
    /// Time limit of one request attempt (default 10 s).
    pub timeout: Duration,
    /// Compress request bodies with gzip (default true): `Content-Encoding: gzip` over HTTP,
    /// `grpc-encoding: gzip` over gRPC.
    pub gzip: bool,
    /// How many batches (span batches and metric snapshots) may wait in the queue (default 64).
    pub queue_capacity: usize,
    /// Most spans in one export request (default 2048); larger batches are split.
    pub max_batch_spans: usize,
    /// Retries of a request after a retryable failure (default 5), with exponential backoff from
    /// 100 ms capped at 5 s, or the delay the collector asks for (Retry-After / RetryInfo).
    pub max_retries: u32,
    /// Replay's back-pressure: how long a batch waits for room in the
    /// queue before the exporter stops waiting (a collector that never
    /// comes back must not hang a replay) and drops what does not fit,
    /// counted, until the collector takes batches again.
    pub max_block: Duration,
}

/// Default longest wait for room in the queue (replay).
pub(crate) const DEFAULT_MAX_BLOCK: Duration = Duration::from_secs(30);
const ENV_MAX_BLOCK: &str = "WASMTAP_OTLP_MAX_BLOCK_MS";

/// Default per-request timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default queue capacity, in batches.
pub const DEFAULT_QUEUE_CAPACITY: usize = 64;
/// Default maximum number of spans in one request.
pub const DEFAULT_MAX_BATCH_SPANS: usize = 2048;
/// Default number of retries.
pub const DEFAULT_MAX_RETRIES: u32 = 5;

const ENV_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
const ENV_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
const ENV_HEADERS: &str = "OTEL_EXPORTER_OTLP_HEADERS";
const ENV_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
const ENV_COMPRESSION: &str = "OTEL_EXPORTER_OTLP_COMPRESSION";

impl ExporterConfig {
    /// A configuration with the defaults for everything but the endpoint and protocol.
    pub fn new(endpoint: impl Into<String>, protocol: Protocol) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol,
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            gzip: true,
            queue_capacity: DEFAULT_QUEUE_CAPACITY,
            max_batch_spans: DEFAULT_MAX_BATCH_SPANS,
            max_retries: DEFAULT_MAX_RETRIES,
            max_block: DEFAULT_MAX_BLOCK,
        }
    }

    /// Builds the configuration from command-line values, falling back to the environment.
    ///
    /// `endpoint` and `protocol` (the flags) win over `OTEL_EXPORTER_OTLP_ENDPOINT` and
    /// `OTEL_EXPORTER_OTLP_PROTOCOL`. Headers come from `OTEL_EXPORTER_OTLP_HEADERS`
    /// (`k=v,k2=v2`, values percent-decoded), the timeout from `OTEL_EXPORTER_OTLP_TIMEOUT`
    /// (milliseconds) and compression from `OTEL_EXPORTER_OTLP_COMPRESSION` (`gzip` or `none`).
    /// Without a protocol anywhere the OTLP default, `http/protobuf`, is used.
    ///
    /// Returns `Ok(None)` when no endpoint is given anywhere (export disabled), and an error for
    /// a bad URL, an `https://` URL, an unknown protocol or a malformed header.
    pub fn from_env_and(
        endpoint: Option<String>,
        protocol: Option<Protocol>,
    ) -> Result<Option<Self>, ConfigError> {
        Self::from_lookup(endpoint, protocol, |name| std::env::var(name).ok())
    }

    /// [`Self::from_env_and`] with the environment given as a function (for tests).
    pub(crate) fn from_lookup(
        endpoint: Option<String>,
        protocol: Option<Protocol>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Self>, ConfigError> {
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let Some(endpoint) = endpoint
            .filter(|e| !e.trim().is_empty())
            .or_else(|| env(ENV_ENDPOINT))
        else {
            return Ok(None);
        };
        let protocol = match protocol {
            Some(p) => p,
            None => match env(ENV_PROTOCOL) {
                Some(p) => p.parse()?,
                None => Protocol::HttpProtobuf,
            },
        };
        let mut cfg = Self::new(endpoint.trim(), protocol);
        if let Some(h) = env(ENV_HEADERS) {
            cfg.headers = parse_headers(&h)?;
        }
        if let Some(t) = env(ENV_TIMEOUT) {
            let ms: u64 = t.trim().parse().map_err(|_| ConfigError::InvalidValue {
                name: ENV_TIMEOUT,
                value: t.clone(),
            })?;
            if ms > 0 {
                cfg.timeout = Duration::from_millis(ms);
            }
        }
        if let Some(t) = env(ENV_MAX_BLOCK) {
            let ms: u64 = t.trim().parse().map_err(|_| ConfigError::InvalidValue {
                name: ENV_MAX_BLOCK,
                value: t.clone(),
            })?;
            cfg.max_block = Duration::from_millis(ms);
        }
        if let Some(c) = env(ENV_COMPRESSION) {
            cfg.gzip = match c.trim().to_ascii_lowercase().as_str() {
                "gzip" => true,
                "none" => false,
                _ => {
                    return Err(ConfigError::InvalidValue {
                        name: ENV_COMPRESSION,
                        value: c,
                    });
                }
            };
        }
        cfg.validate()?;
        Ok(Some(cfg))
    }

    /// Checks the endpoint, headers and limits.
    pub fn validate(&self) -> Result<(), ConfigError> {
        parse_endpoint(&self.endpoint)?;
        for (k, v) in &self.headers {
            check_header(k, v)?;
        }
        if self.queue_capacity == 0 {
            return Err(ConfigError::Zero("queue_capacity"));
        }
        if self.max_batch_spans == 0 {
            return Err(ConfigError::Zero("max_batch_spans"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::Zero("timeout"));
        }
        Ok(())
    }

    /// The URL a signal is POSTed to over OTLP/HTTP: the endpoint plus `/v1/traces` or
    /// `/v1/metrics`, without a double slash.
    pub(crate) fn signal_url(&self, signal_path: &str) -> Result<http::Uri, ConfigError> {
        let base = parse_endpoint(&self.endpoint)?;
        let joined = format!(
            "{}/{}",
            base.to_string().trim_end_matches('/'),
            signal_path.trim_start_matches('/')
        );
        joined
            .parse()
            .map_err(|e: http::uri::InvalidUri| ConfigError::InvalidEndpoint {
                url: self.endpoint.clone(),
                reason: e.to_string(),
            })
    }
}

/// Parses and checks an endpoint: `http://host[:port][/path]`, no query, no TLS.
pub(crate) fn parse_endpoint(url: &str) -> Result<http::Uri, ConfigError> {
    let invalid = |reason: &str| ConfigError::InvalidEndpoint {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: http::Uri = url
        .trim()
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(ConfigError::TlsNotSupported(url.to_string())),
        Some(_) => return Err(invalid("the scheme must be http://")),
        None => return Err(invalid("expected a URL like http://host:4317")),
    }
    match uri.authority() {
        Some(a) if !a.host().is_empty() => {}
        _ => return Err(invalid("missing host")),
    }
    if uri.query().is_some() {
        return Err(invalid("a query string is not allowed"));
    }
    Ok(uri)
}

/// Parses `OTEL_EXPORTER_OTLP_HEADERS`: comma-separated `key=value` pairs, values
/// percent-decoded, blanks around keys and values trimmed, empty items skipped.
pub(crate) fn parse_headers(s: &str) -> Result<Vec<(String, String)>, ConfigError> {
    let mut out = Vec::new();
    for item in s.split(',') {
        if item.trim().is_empty() {
            continue;
        }
        let (k, v) = item
            .split_once('=')
            .ok_or_else(|| ConfigError::InvalidHeader(item.to_string()))?;
        let key = k.trim().to_ascii_lowercase();
        let value = percent_encoding::percent_decode_str(v.trim())
            .decode_utf8()
            .map_err(|_| ConfigError::InvalidHeader(item.to_string()))?
            .into_owned();
        check_header(&key, &value)?;
        out.push((key, value));
    }
    Ok(out)
}

fn check_header(key: &str, value: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::InvalidHeader(format!("{key}={value}"));
    // gRPC metadata keys must be lowercase and must not be binary (`-bin`) for ASCII values.
    let lower = key.to_ascii_lowercase();
    http::HeaderName::from_bytes(lower.as_bytes()).map_err(|_| bad())?;
    http::HeaderValue::from_str(value).map_err(|_| bad())?;
    if lower.ends_with("-bin") {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn protocol_parsing() {
        assert_eq!("grpc".parse::<Protocol>().unwrap(), Protocol::Grpc);
        assert_eq!(
            "http/protobuf".parse::<Protocol>().unwrap(),
            Protocol::HttpProtobuf
        );
        assert_eq!(
            " HTTP ".parse::<Protocol>().unwrap(),
            Protocol::HttpProtobuf
        );
        let err = "http/json".parse::<Protocol>().unwrap_err();
        assert!(err.to_string().contains("unknown OTLP protocol"), "{err}");
    }

    #[test]
    fn none_without_endpoint() {
        assert_eq!(
            ExporterConfig::from_lookup(None, None, lookup(&[])),
            Ok(None)
        );
        assert_eq!(
            ExporterConfig::from_lookup(Some(" ".into()), Some(Protocol::Grpc), lookup(&[])),
            Ok(None)
        );
    }

    #[test]
    fn flags_win_over_env() {
        let env = lookup(&[
            (ENV_ENDPOINT, "http://env:4318"),
            (ENV_PROTOCOL, "http/protobuf"),
            (ENV_HEADERS, "api-key=s%20e,x-Tenant = a=b ,"),
            (ENV_TIMEOUT, "2500"),
            (ENV_COMPRESSION, "none"),
        ]);
        let cfg = ExporterConfig::from_lookup(
            Some("http://flag:4317".into()),
            Some(Protocol::Grpc),
            &env,
        )
        .unwrap()
        .unwrap();
        assert_eq!(cfg.endpoint, "http://flag:4317");
        assert_eq!(cfg.protocol, Protocol::Grpc);
        assert_eq!(
            cfg.headers,
            vec![
                ("api-key".to_string(), "s e".to_string()),
                ("x-tenant".to_string(), "a=b".to_string())
            ]
        );
        assert_eq!(cfg.timeout, Duration::from_millis(2500));
        assert!(!cfg.gzip);

        let cfg = ExporterConfig::from_lookup(None, None, &env)
            .unwrap()
            .unwrap();
        assert_eq!(cfg.endpoint, "http://env:4318");
        assert_eq!(cfg.protocol, Protocol::HttpProtobuf);
        assert_eq!(cfg.queue_capacity, DEFAULT_QUEUE_CAPACITY);
        assert_eq!(cfg.max_batch_spans, DEFAULT_MAX_BATCH_SPANS);
        assert_eq!(cfg.max_retries, DEFAULT_MAX_RETRIES);
    }

    #[test]
    fn default_protocol_is_http_protobuf() {
        let cfg = ExporterConfig::from_lookup(Some("http://c:4318".into()), None, lookup(&[]))
            .unwrap()
            .unwrap();
        assert_eq!(cfg.protocol, Protocol::HttpProtobuf);
        assert!(cfg.gzip);
        assert_eq!(cfg.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn bad_inputs_give_clear_errors() {
        let e = |ep: &str, vars: &[(&str, &str)]| {
            ExporterConfig::from_lookup(Some(ep.to_string()), None, lookup(vars))
                .unwrap_err()
                .to_string()
        };
        assert!(e("https://c:4318", &[]).contains("TLS not supported yet"));
        assert!(e("c:4318", &[]).contains("invalid OTLP endpoint"));
        assert!(e("ftp://c", &[]).contains("scheme must be http"));
        assert!(e("http://", &[]).contains("invalid OTLP endpoint"));
        assert!(e("http://c:4318", &[(ENV_PROTOCOL, "thrift")]).contains("unknown OTLP protocol"));
        assert!(e("http://c:4318", &[(ENV_HEADERS, "novalue")]).contains("invalid OTLP header"));
        assert!(e("http://c:4318", &[(ENV_HEADERS, "bad key=v")]).contains("invalid OTLP header"));
        assert!(e("http://c:4318", &[(ENV_TIMEOUT, "soon")]).contains(ENV_TIMEOUT));
    }

    #[test]
    fn signal_urls_have_no_double_slash() {
        let cfg = |ep: &str| ExporterConfig::new(ep, Protocol::HttpProtobuf);
        for (ep, want) in [
            ("http://c:4318", "http://c:4318/v1/traces"),
            ("http://c:4318/", "http://c:4318/v1/traces"),
            ("http://c:4318/otlp/", "http://c:4318/otlp/v1/traces"),
            ("http://c:4318/otlp", "http://c:4318/otlp/v1/traces"),
        ] {
            assert_eq!(
                cfg(ep).signal_url("/v1/traces").unwrap().to_string(),
                want,
                "{ep}"
            );
        }
    }
}
