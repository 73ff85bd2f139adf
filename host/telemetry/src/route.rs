//! Route templates: low-cardinality operation names from URL paths.
//!
//! Metrics are keyed by operation, so `GET /users/1234` and `GET /users/5678`
//! must land in one series, `GET /users/{id}`. Configured patterns win; the
//! heuristic then replaces path segments that look like identifiers. The raw
//! path stays on the span (`url.path`), never on metrics.

/// Longest route kept, in bytes; a longer one is cut at a segment boundary
/// and ends in `/...`.
pub const MAX_ROUTE_LEN: usize = 128;
/// Segments kept; deeper paths end in `/...`.
pub const MAX_SEGMENTS: usize = 10;

/// One configured pattern, `/api/v1/orders/{order}`: `{name}` matches one
/// segment, a final `*` matches the rest of the path (one segment or more).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePattern {
    text: String,
    segments: Vec<Seg>,
    tail: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    Literal(String),
    Param,
}

impl RoutePattern {
    /// Parses a pattern; it must start with `/`.
    pub fn parse(p: &str) -> Result<Self, String> {
        if !p.starts_with('/') {
            return Err(format!("route pattern {p:?} must start with '/'"));
        }
        let mut parts: Vec<&str> = p[1..].split('/').collect();
        let tail = parts.last() == Some(&"*");
        if tail {
            parts.pop();
        }
        let mut segments = Vec::with_capacity(parts.len());
        for s in parts {
            if s.contains('*') {
                return Err(format!("route pattern {p:?}: '*' only as the last segment"));
            }
            if s.starts_with('{') && s.ends_with('}') && s.len() > 2 {
                segments.push(Seg::Param);
            } else if s.contains('{') || s.contains('}') {
                return Err(format!(
                    "route pattern {p:?}: a parameter is a whole segment, like {{id}}"
                ));
            } else {
                segments.push(Seg::Literal(s.to_string()));
            }
        }
        Ok(Self {
            text: p.to_string(),
            segments,
            tail,
        })
    }

    fn matches(&self, path: &str) -> bool {
        let mut it = path.strip_prefix('/').unwrap_or(path).split('/');
        for seg in &self.segments {
            match (seg, it.next()) {
                (_, None) => return false,
                (Seg::Param, Some("")) => return false,
                (Seg::Param, Some(_)) => {}
                (Seg::Literal(l), Some(s)) if l == s => {}
                (Seg::Literal(_), Some(_)) => return false,
            }
        }
        match it.next() {
            None => !self.tail,
            Some(s) => self.tail && !s.is_empty(),
        }
    }
}

/// Turns URL paths into route templates.
#[derive(Debug, Clone, Default)]
pub struct Router {
    patterns: Vec<RoutePattern>,
}

impl Router {
    /// Configured patterns are tried in order before the heuristic.
    pub fn new(patterns: Vec<RoutePattern>) -> Self {
        Self { patterns }
    }

    /// The route of `path` (query string already removed or not).
    pub fn route(&self, path: &str) -> String {
        let path = path.split(['?', '#']).next().unwrap_or("");
        if let Some(p) = self.patterns.iter().find(|p| p.matches(path)) {
            return p.text.clone();
        }
        heuristic(path)
    }
}

/// The heuristic alone: segments that look like ids, dates or addresses
/// become placeholders.
pub fn heuristic(path: &str) -> String {
    if path.is_empty() || !path.starts_with('/') {
        // `*` (OPTIONS), absolute-form URIs already stripped by the decoder,
        // or nothing at all: one bucket.
        return if path == "*" { "*".into() } else { "/".into() };
    }
    let mut out = String::with_capacity(path.len().min(MAX_ROUTE_LEN));
    for (n, seg) in path[1..].split('/').enumerate() {
        let piece = placeholder(seg).unwrap_or(seg);
        if n >= MAX_SEGMENTS || out.len() + 1 + piece.len() > MAX_ROUTE_LEN {
            out.push_str("/...");
            return out;
        }
        out.push('/');
        out.push_str(piece);
    }
    out
}

fn placeholder(seg: &str) -> Option<&'static str> {
    let b = seg.as_bytes();
    if b.is_empty() {
        return None;
    }
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    let hex = b.iter().all(u8::is_ascii_hexdigit);
    if digits == b.len() {
        // 20240131 is a date; other numbers are ids.
        return Some(if is_compact_date(b) { "{date}" } else { "{id}" });
    }
    if is_dashed_date(b) {
        return Some("{date}");
    }
    if seg.contains('@') && seg.contains('.') {
        return Some("{email}");
    }
    if is_uuid(b) || (hex && b.len() >= 16 && digits > 0) {
        return Some("{id}");
    }
    // Percent-encoded blobs, base64-ish tokens, slugs with long numbers.
    let tokenish = b
        .iter()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'=' | b'+' | b'.' | b'%'));
    if b.len() >= 20 && digits > 0 && tokenish {
        return Some("{id}");
    }
    if digits >= 4 {
        return Some("{id}");
    }
    None
}

fn is_uuid(b: &[u8]) -> bool {
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

fn is_compact_date(b: &[u8]) -> bool {
    if b.len() != 8 {
        return false;
    }
    let n = |r: std::ops::Range<usize>| {
        b.get(r)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| s.parse::<u32>().ok())
            .unwrap_or(0)
    };
    (1900..=2100).contains(&n(0..4)) && (1..=12).contains(&n(4..6)) && (1..=31).contains(&n(6..8))
}

fn is_dashed_date(b: &[u8]) -> bool {
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_collapse() {
        let cases = [
            ("/users/1234", "/users/{id}"),
            ("/users/1234/orders/99", "/users/{id}/orders/{id}"),
            ("/items/123e4567-e89b-12d3-a456-426614174000", "/items/{id}"),
            ("/blob/9f86d081884c7d659a2feaa0c55ad015", "/blob/{id}"),
            ("/t/eyJhbGciOiJIUzI1NiJ9abc123xyz", "/t/{id}"),
            ("/report/2024-01-31", "/report/{date}"),
            ("/report/20240131", "/report/{date}"),
            ("/u/jane.doe@example.com/inbox", "/u/{email}/inbox"),
            ("/order-12345", "/{id}"),
            ("/", "/"),
            ("", "/"),
            ("*", "*"),
            ("/api/v2/health", "/api/v2/health"),
            ("/index.html", "/index.html"),
            ("/static/app.css", "/static/app.css"),
            (
                "/fonts/SourceSansPro-Regular.ttf",
                "/fonts/SourceSansPro-Regular.ttf",
            ),
            ("/img/photo-420x420.jpg", "/img/{id}"),
            ("/users/1?x=1", "/users/{id}"),
        ];
        let r = Router::default();
        for (p, want) in cases {
            assert_eq!(r.route(p), want, "{p}");
        }
    }

    #[test]
    fn long_and_deep_paths_are_bounded() {
        let deep = "/a".repeat(50);
        let r = heuristic(&deep);
        assert!(r.ends_with("/..."), "{r}");
        assert!(r.len() <= MAX_ROUTE_LEN + 4);
        let long = format!("/{}", "word".repeat(100));
        let r = heuristic(&long);
        assert!(r.len() <= MAX_ROUTE_LEN + 4, "{r}");
    }

    #[test]
    fn patterns_win_over_the_heuristic() {
        let r = Router::new(vec![
            RoutePattern::parse("/api/v1/orders/{order}").unwrap(),
            RoutePattern::parse("/files/*").unwrap(),
        ]);
        assert_eq!(r.route("/api/v1/orders/A-77"), "/api/v1/orders/{order}");
        assert_eq!(r.route("/api/v1/orders/A-77/x"), "/api/v1/orders/A-77/x");
        assert_eq!(r.route("/files/a/b/c.txt"), "/files/*");
        assert_eq!(r.route("/files"), "/files");
        assert!(RoutePattern::parse("no-slash").is_err());
        assert!(RoutePattern::parse("/a/*/b").is_err());
        assert!(RoutePattern::parse("/a/x{y}").is_err());
    }
}
