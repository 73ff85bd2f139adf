//! One masker for query text, shared by every decoder that reports
//! `db.query.text`: literals become `?`, comments are removed, identifiers,
//! keywords, operators and placeholders stay. Secrets travel in literals
//! (`PASSWORD 'x'`) and in comments, so both go; what remains is the query's
//! shape, low in cardinality and safe to export.
//!
//! ```
//! use wasmtap_sdk::mask::{Dialect, sql};
//! assert_eq!(
//!     sql(b"SELECT * FROM t WHERE a = 'x''y' AND b = -2 -- it's me", Dialect::Postgres, 2048),
//!     "SELECT * FROM t WHERE a = ? AND b = ?"
//! );
//! ```

/// SQL dialect: how quotes, escapes and comments are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// MySQL and MariaDB: `"..."` is a string, backslash escapes in strings,
    /// `` `...` `` identifiers, `#` comments, `_charset'...'` introducers.
    MySql,
    /// PostgreSQL: `"..."` is an identifier, `E'...'` escapes, `$tag$...$tag$`
    /// dollar quoting, `$1` parameters.
    Postgres,
}

fn ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// Masks `text` (query text as the client sent it) and cuts the result at
/// `max` bytes (on a character boundary). Malformed or unterminated input
/// never panics: an unterminated literal or comment runs to the end.
pub fn sql(text: &[u8], dialect: Dialect, max: usize) -> String {
    let my = dialect == Dialect::MySql;
    let mut out: Vec<u8> = Vec::with_capacity(text.len().min(max));
    let at = |i: usize| text.get(i).copied();
    let find = |from: usize, pat: &[u8]| {
        text.get(from..)
            .unwrap_or_default()
            .windows(pat.len().max(1))
            .position(|w| w == pat)
            .map(|p| from + p)
    };
    let mut i = 0usize;
    let mut comment_last = false;
    while let Some(c) = at(i) {
        if out.len() > max {
            break;
        }
        if let Some(end) = comment_end(text, i, my) {
            // Removed; it separates tokens like one space.
            i = end;
            while at(i).is_some_and(|w| w.is_ascii_whitespace()) {
                i += 1;
            }
            space(&mut out);
            comment_last = true;
            continue;
        }
        comment_last = false;
        let prev_ident = out.last().is_some_and(|&p| ident(p));
        match c {
            b'\'' => {
                let prefixed_escapes = drop_prefix(&mut out);
                let escapes = my || prefixed_escapes;
                i = skip_quoted(text, i, b'\'', escapes);
                out.push(b'?');
            }
            b'"' if my => {
                i = skip_quoted(text, i, b'"', true);
                out.push(b'?');
            }
            b'"' | b'`' => {
                // An identifier: kept as written.
                let end = find(i + 1, &[c]).map_or(text.len(), |e| e + 1);
                out.extend_from_slice(text.get(i..end).unwrap_or_default());
                i = end;
            }
            b'$' if !my && !prev_ident => {
                if at(i + 1).is_some_and(|d| d.is_ascii_digit()) {
                    // `$1`: a parameter, not a literal.
                    out.push(b'$');
                    i += 1;
                    while let Some(d) = at(i).filter(u8::is_ascii_digit) {
                        out.push(d);
                        i += 1;
                    }
                    continue;
                }
                let tag_len = text
                    .get(i + 1..)
                    .unwrap_or_default()
                    .iter()
                    .take_while(|&&t| t.is_ascii_alphanumeric() || t == b'_' || t >= 0x80)
                    .count();
                if at(i + 1 + tag_len) == Some(b'$') {
                    let tag = text.get(i..i + 2 + tag_len).unwrap_or_default();
                    i = find(i + 2 + tag_len, tag).map_or(text.len(), |e| e + tag.len());
                    out.push(b'?');
                } else {
                    out.push(c);
                    i += 1;
                }
            }
            c if !prev_ident
                && (c.is_ascii_digit()
                    || (c == b'.' && at(i + 1).is_some_and(|d| d.is_ascii_digit()))) =>
            {
                // A number: digits, '.', exponent with sign, 0x/0b prefixes, '_'.
                let start = i;
                while let Some(d) = at(i) {
                    let plain = d.is_ascii_alphanumeric() || d == b'.' || d == b'_';
                    let exp_sign = (d == b'+' || d == b'-')
                        && i > start
                        && matches!(at(i - 1), Some(b'e' | b'E'))
                        && !matches!(at(start + 1), Some(b'x' | b'X'));
                    if !(plain || exp_sign) {
                        break;
                    }
                    i += 1;
                }
                // A unary minus belongs to the literal (`a + -1` → `a + ?`).
                if out.last() == Some(&b'-') {
                    let before = out
                        .iter()
                        .rev()
                        .skip(1)
                        .find(|b| !b.is_ascii_whitespace())
                        .copied();
                    if before.is_none_or(|b| b"+-*/%=<>(,^|".contains(&b)) {
                        out.pop();
                    }
                }
                out.push(b'?');
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    // A comment removed at the end leaves no trailing space.
    if comment_last && out.last() == Some(&b' ') {
        out.pop();
    }
    cut(String::from_utf8_lossy(&out).into_owned(), max)
}

/// The end of a comment starting at `i`, if one does: `--` to the end of
/// the line (MySQL wants a space after `--`, but dropping a lone `--x` too
/// is on the safe side), MySQL's `#` likewise, `/* ... */`.
fn comment_end(text: &[u8], i: usize, my: bool) -> Option<usize> {
    let rest = text.get(i..)?;
    let line = || {
        rest.iter()
            .position(|&c| c == b'\n')
            .map_or(text.len(), |e| i + e + 1)
    };
    if rest.starts_with(b"--") || (my && rest.starts_with(b"#")) {
        Some(line())
    } else if rest.starts_with(b"/*") {
        Some(
            rest.get(2..)?
                .windows(2)
                .position(|w| w == b"*/")
                .map_or(text.len(), |e| i + 2 + e + 2),
        )
    } else {
        None
    }
}

/// A removed comment separates tokens: one space, never two.
fn space(out: &mut Vec<u8>) {
    if out.last().is_some_and(|c| !c.is_ascii_whitespace()) {
        out.push(b' ');
    }
}

/// Drops a literal prefix just written (`E`, `B`, `X`, `N`, `U&`, or a
/// MySQL `_charset` introducer) and tells whether backslash escapes apply.
fn drop_prefix(out: &mut Vec<u8>) -> bool {
    let standalone = |out: &[u8], n: usize| {
        out.len()
            .checked_sub(n + 1)
            .and_then(|k| out.get(k))
            .is_none_or(|&b| !ident(b))
    };
    match out.last().copied() {
        Some(b'E' | b'e') if standalone(out, 1) => {
            out.pop();
            true
        }
        Some(b'B' | b'b' | b'X' | b'x' | b'N' | b'n') if standalone(out, 1) => {
            out.pop();
            false
        }
        Some(b'&')
            if out.len() >= 2
                && matches!(out.get(out.len() - 2), Some(b'U' | b'u'))
                && standalone(out, 2) =>
        {
            out.pop();
            out.pop();
            false
        }
        _ => false,
    }
}

/// The offset after the literal that starts with quote `q` at `i`.
fn skip_quoted(text: &[u8], i: usize, q: u8, escapes: bool) -> usize {
    let mut j = i + 1;
    loop {
        match text.get(j) {
            None => return text.len(),
            Some(b'\\') if escapes => j += 2,
            Some(&c) if c == q => {
                if text.get(j + 1) == Some(&q) {
                    j += 2;
                } else {
                    return j + 1;
                }
            }
            Some(_) => j += 1,
        }
    }
}

/// Cuts `s` at `max` bytes on a character boundary.
pub fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut at = max;
        while at > 0 && !s.is_char_boundary(at) {
            at -= 1;
        }
        s.truncate(at);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn my(s: &str) -> String {
        sql(s.as_bytes(), Dialect::MySql, 2048)
    }
    fn pg(s: &str) -> String {
        sql(s.as_bytes(), Dialect::Postgres, 2048)
    }

    #[test]
    fn both_dialects_agree_where_sql_agrees() {
        for s in [
            "SELECT * FROM t WHERE a = 1 AND b = 'x''y' AND c = -2.5e+10",
            "UPDATE t SET a = a + -5, b = b - 1 WHERE x IN (-1, -2)",
            "INSERT INTO t VALUES (0x1F, .5, X'ab')",
            "SELECT 1 -- it's a comment with 'secret'\nFROM t",
            "SELECT /* it's 'secret' */ a FROM t",
            "select 'unterminated",
            "select 1 /* unterminated",
        ] {
            assert_eq!(my(s), pg(s), "{s}");
        }
        assert_eq!(
            my("SELECT * FROM t WHERE a = 1 AND b = 'x''y' AND c = -2.5e+10"),
            "SELECT * FROM t WHERE a = ? AND b = ? AND c = ?"
        );
        assert_eq!(
            my("UPDATE t SET a = a + -5, b = b - 1 WHERE x IN (-1, -2)"),
            "UPDATE t SET a = a + ?, b = b - ? WHERE x IN (?, ?)"
        );
        // The case the two decoders used to disagree on: an apostrophe in a
        // comment must not open a literal that swallows the rest.
        assert_eq!(
            my("SELECT 1 -- it's a comment with 'secret'\nFROM t"),
            "SELECT ? FROM t"
        );
        assert_eq!(my("SELECT /* it's 'secret' */ a FROM t"), "SELECT a FROM t");
    }

    #[test]
    fn dialect_specifics() {
        assert_eq!(
            my("select \"q\\\"x\", `c 1`, _utf8'x' # 'hidden'"),
            "select ?, `c 1`, _utf8?"
        );
        assert_eq!(my("select 'a\\'b', 'c'"), "select ?, ?");
        assert_eq!(pg("select 'a\\', 'c'"), "select ?, ?");
        assert_eq!(
            pg("SELECT E'a\\'b', x'1F', $$body$$, $f$ it's $f$, \"Col 1\" FROM t WHERE id = $1"),
            "SELECT ?, ?, ?, ?, \"Col 1\" FROM t WHERE id = $1"
        );
        assert_eq!(
            pg("ALTER ROLE r PASSWORD 'hunter2'"),
            "ALTER ROLE r PASSWORD ?"
        );
        assert_eq!(pg("SELECT a#b FROM t"), "SELECT a#b FROM t");
        assert_eq!(
            pg("SELECT t1.c2, x2 FROM s1.t1"),
            "SELECT t1.c2, x2 FROM s1.t1"
        );
    }

    #[test]
    fn bounded_and_total() {
        assert!(my(&"x".repeat(10_000)).len() <= 2048);
        let long = format!("SELECT '{}'", "é".repeat(5000));
        assert_eq!(pg(&long), "SELECT ?");
        assert!(sql("é".repeat(5000).as_bytes(), Dialect::Postgres, 7).len() <= 7);
        for bytes in [
            &b"\xff\xfe'"[..],
            b"$",
            b"$a",
            b"'",
            b"\"",
            b"-",
            b"/*",
            b"0x",
            b"1e+",
        ] {
            let _ = sql(bytes, Dialect::MySql, 64);
            let _ = sql(bytes, Dialect::Postgres, 64);
        }
    }
}
