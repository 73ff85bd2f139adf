#!/usr/bin/env python3
"""Validates wasmtap's Grafana dashboards and Prometheus alert rules offline (Python 3 stdlib only).

    validate_dashboards.py [DEPLOY_DIR] [--promtool auto|none|PATH] [--no-yaml]

DEPLOY_DIR (default: the deploy/ directory holding this script's ci/) holds:
  grafana/*.json                    dashboards
  prometheus/*.yaml                 rule files (groups), except *.test.yaml
  prometheus/*.test.yaml            `promtool test rules` unit tests
  prometheus/exported-metrics.txt   the metrics the agent exports: `name type [labels]` a line

Checks:
1. Dashboards: the JSON parses; title, uid, schemaVersion, panels, templating; every panel has a
   unique integer id, a title, a type, a gridPos inside the 24 columns, no overlap; every
   non-row panel has targets with unique refIds and an expression; every datasource reference
   (panel and target) is a Prometheus one naming a datasource template variable (`${DS_...}`);
   every `$variable` used is defined or one of Grafana's built-ins; node graph panels produce the
   fields the panel needs (id, source, target, mainstat).
2. Every PromQL expression (dashboard targets and template variable queries, rule `expr`s) uses
   only exported metrics: a counter or gauge by its name, a histogram as <base>_bucket, _sum or
   _count (the bare base name is refused); label matchers name labels the metric carries (plus
   job, instance, otel_metric_overflow, and le on _bucket); grouping clauses (by, without, on,
   ignoring, group_left/right) and legend `{{label}}`s name labels of the metrics in that
   expression or labels it creates (label_replace, label_join, count_values).
3. Rules: every rule is an alert or a record with an expr; alerts have labels.severity and the
   annotations summary and description; alert names are unique. Recorded names count as known
   metrics for the other expressions.
4. Rule tests: every alert has a test case where it fires (non-empty exp_alerts) and one where it
   does not (empty exp_alerts); input series use exported metrics with their labels, including
   service_name where the metric has it.
5. With promtool (on PATH, or --promtool PATH; `--promtool none` skips): every dashboard
   expression, with Grafana's variables replaced by sample values, passes `promtool check rules`
   as a recording rule (PromQL syntax).

YAML: read with PyYAML when it is importable, and always also with the small YAML subset reader
below (block mappings and sequences, plain/quoted scalars, | and > block scalars); both must
agree, so the check runs the same without PyYAML (--no-yaml uses the subset reader only).

Prints one FAIL: line per problem naming the file and the panel or alert, and exits 1 if there is
any; 0 and "validate-dashboards: ok" otherwise; 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

FAILURES: list[str] = []


def fail(where: str, msg: str) -> None:
    FAILURES.append(f"{where}: {msg}")


def note(msg: str) -> None:
    print(f"  {msg}")


# ---------------------------------------------------------------------------
# The exported metrics

ALWAYS_LABELS = {"job", "instance", "otel_metric_overflow"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
TYPES = {"counter", "gauge", "histogram"}


class Catalog:
    """Exported metrics: name -> (type, labels); resolves the names a query may use."""

    def __init__(self) -> None:
        self.metrics: dict[str, tuple[str, set[str]]] = {}
        self.recorded: dict[str, str] = {}  # recorded name -> where

    @staticmethod
    def load(path: Path) -> "Catalog":
        cat = Catalog()
        where = str(path)
        try:
            text = path.read_text()
        except OSError as e:
            fail(where, f"cannot read the exported metrics list: {e}")
            return cat
        for n, line in enumerate(text.splitlines(), 1):
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            parts = line.split()
            name = parts[0]
            if not re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", name):
                fail(f"{where}:{n}", f"{name!r} is not a Prometheus metric name")
                continue
            if len(parts) < 2 or parts[1] not in TYPES or len(parts) > 3:
                fail(f"{where}:{n}", f"expected `name {'|'.join(sorted(TYPES))} [label,...]`: {line!r}")
                continue
            labels = set(parts[2].split(",")) if len(parts) == 3 else set()
            if name in cat.metrics:
                fail(f"{where}:{n}", f"{name} listed twice")
            if parts[1] == "counter" and not name.endswith("_total"):
                fail(f"{where}:{n}", f"counter {name} does not end in _total")
            if parts[1] == "histogram" and name.endswith(HISTOGRAM_SUFFIXES):
                fail(f"{where}:{n}", f"histogram {name}: list it by its base name")
            cat.metrics[name] = (parts[1], labels)
        if not cat.metrics:
            fail(where, "no metrics listed")
        return cat

    def resolve(self, name: str) -> tuple[set[str] | None, str | None]:
        """(labels the series carry, None) or (None, why the name is unknown)."""
        if name in self.recorded:
            return set(), None  # a recording rule's output: labels not tracked
        m = self.metrics.get(name)
        if m is not None:
            typ, labels = m
            if typ == "histogram":
                return None, (f"{name} is a histogram: use {name}_bucket (with le), "
                              f"{name}_sum or {name}_count")
            return labels | ALWAYS_LABELS, None
        for suf in HISTOGRAM_SUFFIXES:
            if name.endswith(suf):
                base = name[: -len(suf)]
                m = self.metrics.get(base)
                if m is not None and m[0] == "histogram":
                    extra = {"le"} if suf == "_bucket" else set()
                    return m[1] | ALWAYS_LABELS | extra, None
        return None, f"unknown metric {name} (not in exported-metrics.txt)"


# ---------------------------------------------------------------------------
# PromQL scanning (enough to find metric names, matchers and grouping labels)

TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<var>\$\{[^}]*\}|\$\$?[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z0-9_:.]+\]\])
  | (?P<number>(?:0[xX][0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)(?:[a-zA-Z][a-zA-Z0-9]*)*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^=<>@(){}\[\],])
    """,
    re.VERBOSE,
)
AGGREGATIONS = {
    "sum", "avg", "min", "max", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "limitk", "limit_ratio",
}
GROUPING = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"bool", "and", "or", "unless", "atan2", "offset", "inf", "nan"}
LABEL_CREATORS = {"label_replace": 1, "label_join": 1, "count_values": 0}  # arg index of the new label


class PromQLError(Exception):
    pass


def tokenize(expr: str) -> list[tuple[str, str]]:
    out = []
    pos = 0
    while pos < len(expr):
        m = TOKEN_RE.match(expr, pos)
        if not m:
            raise PromQLError(f"unexpected character {expr[pos]!r} at offset {pos}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append((kind, m.group()))
        pos = m.end()
    return out


def unquote(s: str) -> str:
    if s[0] == "`":
        return s[1:-1]
    return re.sub(r"\\(.)", r"\1", s[1:-1])


class Scan:
    """What an expression uses: selectors (metric, [(label, op, value)]), grouping labels, labels
    it creates, variables."""

    def __init__(self, expr: str) -> None:
        self.selectors: list[tuple[str | None, list[tuple[str, str, str]]]] = []
        self.grouping: set[str] = set()
        self.created: set[str] = set()
        self.variables: set[str] = set()
        toks = tokenize(expr)
        for kind, text in toks:
            if kind == "var":
                self.variables.add(var_name(text))
            elif kind == "string":
                for v in re.findall(r"\$\{[^}]*\}|\$\$?[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z0-9_:.]+\]\]", text):
                    self.variables.add(var_name(v))
        i = 0
        n = len(toks)
        depth = 0
        while i < n:
            kind, text = toks[i]
            nxt = toks[i + 1] if i + 1 < n else ("", "")
            if kind == "op" and text == "[":
                # range or subquery: skip to the matching ]
                while i < n and toks[i][1] != "]":
                    i += 1
                i += 1
                continue
            if kind == "op" and text == "{":
                i = self._matchers(toks, i, None)
                continue
            if kind == "op" and text in "()":
                depth += 1 if text == "(" else -1
                if depth < 0:
                    raise PromQLError("unbalanced parentheses")
            if kind != "ident":
                i += 1
                continue
            low = text.lower()
            if low in GROUPING:
                if nxt == ("op", "("):
                    j = i + 2
                    while j < n and toks[j][1] != ")":
                        if toks[j][0] == "ident":
                            self.grouping.add(toks[j][1])
                        elif toks[j][1] != ",":
                            raise PromQLError(f"unexpected {toks[j][1]!r} in {text}(...)")
                        j += 1
                    i = j + 1
                    continue
                i += 1
                continue
            if low == "offset":
                i += 2 if nxt[1] != "-" else 3
                continue
            if low in KEYWORDS:
                i += 1
                continue
            if nxt == ("op", "("):
                # a function or aggregation call (a metric name is never followed by "(")
                if text in LABEL_CREATORS:
                    arg = self._string_arg(toks, i + 1, LABEL_CREATORS[text])
                    if arg is not None:
                        self.created.add(arg)
                i += 1
                continue
            if text in AGGREGATIONS and nxt[1].lower() in ("by", "without"):
                i += 1  # sum by (...) (...)
                continue
            # a metric name
            if nxt == ("op", "{"):
                i = self._matchers(toks, i + 1, text)
            else:
                self.selectors.append((text, []))
                i += 1
        if depth != 0:
            raise PromQLError("unbalanced parentheses")

    @staticmethod
    def _string_arg(toks, open_idx, index) -> str | None:
        """The string literal that is argument `index` of the call whose "(" is at open_idx."""
        depth = 0
        arg = 0
        for j in range(open_idx, len(toks)):
            kind, text = toks[j]
            if text in ("(", "[", "{"):
                depth += 1
                if depth == 1:
                    continue
            elif text in (")", "]", "}"):
                depth -= 1
                if depth == 0:
                    return None
            elif text == "," and depth == 1:
                arg += 1
                continue
            if depth == 1 and arg == index:
                return unquote(text) if kind == "string" else None
        return None

    def _matchers(self, toks, i, metric) -> int:
        """Parses `{label op "value", ...}` at toks[i] == "{"; returns the index after "}"."""
        matchers = []
        j = i + 1
        while j < len(toks) and toks[j][1] != "}":
            if toks[j][1] == ",":
                j += 1
                continue
            if j + 2 >= len(toks) or toks[j][0] != "ident" or toks[j + 1][1] not in ("=", "!=", "=~", "!~") \
                    or toks[j + 2][0] not in ("string", "var"):
                raise PromQLError(f"malformed label matcher near {toks[j][1]!r}")
            value = unquote(toks[j + 2][1]) if toks[j + 2][0] == "string" else toks[j + 2][1]
            matchers.append((toks[j][1], toks[j + 1][1], value))
            j += 3
        if j >= len(toks):
            raise PromQLError("unclosed {")
        names = [v for (l, op, v) in matchers if l == "__name__"]
        if metric is None:
            for l, op, v in matchers:
                if l == "__name__" and op == "=":
                    metric = v
                elif l == "__name__" and op == "=~" and re.fullmatch(r"[a-zA-Z_:][\w:]*(\|[a-zA-Z_:][\w:]*)*", v):
                    for name in v.split("|"):
                        self.selectors.append((name, [m for m in matchers if m[0] != "__name__"]))
                    return j + 1
            if metric is None:
                raise PromQLError("a selector without a metric name (or a __name__ matcher the "
                                  "validator cannot read: use = or an alternation of names)")
        elif names:
            raise PromQLError(f"{metric}{{__name__...}}: a metric name and a __name__ matcher")
        self.selectors.append((metric, [m for m in matchers if m[0] != "__name__"]))
        return j + 1


def var_name(v: str) -> str:
    v = v.strip("$[]{}")
    return v.split(":", 1)[0].lstrip("$")


def check_expr(where: str, expr: str, cat: Catalog, legend: str | None = None) -> Scan | None:
    try:
        scan = Scan(expr)
    except PromQLError as e:
        fail(where, f"cannot read the expression ({e}): {expr!r}")
        return None
    if not scan.selectors:
        fail(where, f"the expression uses no metric: {expr!r}")
    known: set[str] = set(scan.created) | {"le"}
    for metric, matchers in scan.selectors:
        assert metric is not None
        labels, why = cat.resolve(metric)
        if labels is None:
            fail(where, why or f"unknown metric {metric}")
            known.add("*")  # no grouping/legend checks on top of an unknown metric
            continue
        if metric in cat.recorded:
            known.add("*")
        known |= labels
        for label, _op, _v in matchers:
            if label not in labels and metric not in cat.recorded:
                fail(where, f"{metric} has no label {label!r} (it carries: {', '.join(sorted(labels))})")
    if "*" not in known:
        for label in sorted(scan.grouping - known):
            fail(where, f"grouping by {label!r}, which no metric of the expression carries")
        if legend:
            for label in re.findall(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}", legend):
                if label not in known:
                    fail(where, f"legend {{{{{label}}}}}: no metric of the expression carries {label!r}")
    return scan


# ---------------------------------------------------------------------------
# A YAML subset reader (so that the check needs no PyYAML)


class YamlSubsetError(Exception):
    pass


def _strip_comment(line: str) -> str:
    """The line without its comment (a # at the start or after a blank, outside quotes)."""
    quote = None
    k = 0
    while k < len(line):
        c = line[k]
        if quote == '"':
            if c == "\\":
                k += 1
            elif c == '"':
                quote = None
        elif quote == "'":
            if c == "'":
                if line[k + 1 : k + 2] == "'":
                    k += 1
                else:
                    quote = None
        elif c in "\"'" and (k == 0 or line[k - 1] in " :-[{,"):
            quote = c
        elif c == "#" and (k == 0 or line[k - 1] in " \t"):
            return line[:k].rstrip()
        k += 1
    return line.rstrip()


def _scalar(s: str):
    s = s.strip()
    if s == "":
        return None
    if s[0] == '"':
        if not s.endswith('"') or len(s) < 2:
            raise YamlSubsetError(f"unterminated string {s!r}")
        return json.loads(s)
    if s[0] == "'":
        if not s.endswith("'") or len(s) < 2:
            raise YamlSubsetError(f"unterminated string {s!r}")
        return s[1:-1].replace("''", "'")
    if s[0] in "[{":
        if s in ("[]", "{}"):
            return [] if s == "[]" else {}
        if s[0] == "[" and s.endswith("]") and not re.search(r"[\[\]{}\"']", s[1:-1]):
            return [_scalar(x) for x in s[1:-1].split(",")]
        raise YamlSubsetError(f"flow collection {s!r} outside the subset")
    if s[0] in "&*!|>%@`":
        raise YamlSubsetError(f"{s!r} outside the subset")
    if s in ("~", "null", "Null", "NULL"):
        return None
    if s in ("true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"):
        return True
    if s in ("false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"):
        return False
    if re.fullmatch(r"[-+]?(0|[1-9][0-9_]*)", s):
        return int(s.replace("_", ""))
    if re.fullmatch(r"[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+][0-9]+)?", s) and s not in (".", "+.", "-."):
        return float(s.replace("_", ""))
    if ": " in s or s.endswith(":") or " #" in s:
        raise YamlSubsetError(f"plain scalar {s!r} outside the subset")
    return s


def yaml_subset_load(text: str):
    """Parses the block-style YAML used in deploy/prometheus (no anchors, tags, multi-documents,
    multi-line plain scalars or complex flow collections)."""
    raw = text.split("\n")
    lines: list[tuple[int, str, int]] = []  # (indent, content, raw index)
    for idx, l in enumerate(raw):
        if l.strip() == "---" and not lines:
            continue
        if "\t" in l[: len(l) - len(l.lstrip())]:
            raise YamlSubsetError(f"line {idx + 1}: tab indentation")
        c = _strip_comment(l)
        if c.strip():
            lines.append((len(c) - len(c.lstrip(" ")), c.strip(), idx))
    pos = [0]

    def block_scalar(style: str, parent_indent: int, after_raw: int):
        # the block is every raw line after after_raw indented more than parent_indent (or blank)
        body: list[str] = []
        k = after_raw + 1
        while k < len(raw):
            l = raw[k]
            if l.strip() and len(l) - len(l.lstrip(" ")) <= parent_indent:
                break
            body.append(l)
            k += 1
        while pos[0] < len(lines) and lines[pos[0]][2] < k:
            pos[0] += 1
        while body and not body[-1].strip():
            body.pop()
        ind = min((len(l) - len(l.lstrip(" ")) for l in body if l.strip()), default=0)
        body = [l[ind:] for l in body]
        if style[0] == "|":
            s = "\n".join(body)
        else:  # folded: lines joined with spaces, blank lines kept as newlines
            s = ""
            for l in body:
                if not l.strip():
                    s += "\n"
                elif s and not s.endswith("\n"):
                    s += " " + l
                else:
                    s += l
        return s if style.endswith("-") else s + "\n"

    def value(rest: str, indent: int, raw_idx: int):
        if rest in ("|", "|-", ">", ">-"):
            return block_scalar(rest, indent, raw_idx)
        if rest == "":
            if pos[0] < len(lines):
                ni, nc, _ = lines[pos[0]]
                if ni > indent or (ni == indent and (nc == "-" or nc.startswith("- "))):
                    return node(ni)
            return None
        return _scalar(rest)

    def node(indent: int):
        ni, nc, _ = lines[pos[0]]
        if nc == "-" or nc.startswith("- "):
            return seq(indent)
        return mapping(indent)

    def seq(indent: int):
        out = []
        while pos[0] < len(lines):
            ni, nc, ri = lines[pos[0]]
            if ni < indent or not (nc == "-" or nc.startswith("- ")):
                if ni > indent:
                    raise YamlSubsetError(f"line {ri + 1}: bad indentation")
                break
            if ni > indent:
                raise YamlSubsetError(f"line {ri + 1}: bad indentation")
            rest = nc[1:].strip()
            if rest == "" or rest in ("|", "|-", ">", ">-"):
                pos[0] += 1
                out.append(value(rest, indent, ri))
            elif re.match(r"^(\"[^\"]*\"|'[^']*'|[^\s\"'\[{][^:]*?):(\s|$)", rest):
                # "- key: value": a mapping whose first key sits at indent + 2
                lines[pos[0]] = (indent + 2 + (len(nc[1:]) - len(nc[1:].lstrip(" ")) - 1), rest, ri)
                out.append(mapping(lines[pos[0]][0]))
            else:
                pos[0] += 1
                out.append(_scalar(rest))
        return out

    def mapping(indent: int):
        out: dict = {}
        while pos[0] < len(lines):
            ni, nc, ri = lines[pos[0]]
            if ni < indent:
                break
            if ni > indent:
                raise YamlSubsetError(f"line {ri + 1}: bad indentation")
            if nc == "-" or nc.startswith("- "):
                break
            m = re.match(r"^(\"(?:[^\"\\]|\\.)*\"|'[^']*'|[^\s\"'#][^:]*?):(?:\s+(.*))?$", nc)
            if not m:
                raise YamlSubsetError(f"line {ri + 1}: expected `key: value`: {nc!r}")
            key = _scalar(m.group(1))
            if key in out:
                raise YamlSubsetError(f"line {ri + 1}: duplicate key {key!r}")
            pos[0] += 1
            out[key] = value((m.group(2) or "").strip(), indent, ri)
        return out

    if not lines:
        return None
    result = node(lines[0][0])
    if pos[0] < len(lines):
        raise YamlSubsetError(f"line {lines[pos[0]][2] + 1}: unexpected content {lines[pos[0]][1]!r}")
    return result


def load_yaml(path: Path, use_pyyaml: bool):
    where = str(path)
    try:
        text = path.read_text()
    except OSError as e:
        fail(where, f"cannot read: {e}")
        return None
    try:
        mine = yaml_subset_load(text)
    except (YamlSubsetError, ValueError) as e:
        mine = e
    if use_pyyaml:
        try:
            import yaml  # noqa: PLC0415 (optional)
        except ImportError:
            use_pyyaml = False
    if use_pyyaml:
        try:
            theirs = yaml.safe_load(text)
        except yaml.YAMLError as e:
            fail(where, f"YAML does not parse: {e}")
            return None
        if isinstance(mine, Exception):
            fail(where, f"outside the YAML subset validate_dashboards.py reads without PyYAML: {mine}")
        elif mine != theirs:
            fail(where, "the YAML subset reader of validate_dashboards.py reads this file differently "
                        "from PyYAML; keep to plain block YAML (see the reader's docstring)")
        return theirs
    if isinstance(mine, Exception):
        fail(where, f"YAML not readable without PyYAML: {mine}")
        return None
    return mine


# ---------------------------------------------------------------------------
# Dashboards

GRAFANA_BUILTIN_VARS = {
    "__interval", "__interval_ms", "__rate_interval", "__rate_interval_ms", "__range", "__range_s",
    "__range_ms", "__from", "__to", "__dashboard", "__org", "__user", "__name", "__timeFilter",
    "timeFilter", "__auto", "__all_variables", "__url_time_range",
}
SAMPLE_VALUES = {"__rate_interval": "1m", "__interval": "30s", "__range": "1h",
                 "__range_s": "3600", "__range_ms": "3600000", "__interval_ms": "30000"}
NO_TARGET_TYPES = {"row", "text", "news", "dashlist", "alertlist", "annolist"}


def iter_panels(panels: list):
    for p in panels:
        yield p
        if isinstance(p, dict) and p.get("type") == "row":
            yield from iter_panels(p.get("panels") or [])


def check_dashboard(path: Path, cat: Catalog, exprs_out: list) -> int:
    where = str(path)
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        fail(where, f"not valid JSON: {e}")
        return 0
    if not isinstance(d, dict):
        fail(where, "not a dashboard object")
        return 0
    for key, typ in (("title", str), ("uid", str), ("schemaVersion", int), ("panels", list)):
        if not isinstance(d.get(key), typ):
            fail(where, f"{key} missing or not a {typ.__name__}")
    if isinstance(d.get("schemaVersion"), int) and not 36 <= d["schemaVersion"] <= 41:
        fail(where, f"schemaVersion {d['schemaVersion']}: expected 36..41 (Grafana 9.3 to 11)")
    if d.get("id") not in (None,):
        fail(where, "id must be null in a dashboard to import (Grafana assigns it)")
    templ = (d.get("templating") or {}).get("list") or []
    ds_vars = {v.get("name") for v in templ if isinstance(v, dict) and v.get("type") == "datasource"
               and v.get("query") == "prometheus"}
    ds_inputs = {i.get("name") for i in d.get("__inputs") or [] if i.get("type") == "datasource"}
    defined_vars = {v.get("name") for v in templ if isinstance(v, dict)}
    if not ds_vars and not ds_inputs:
        fail(where, "no Prometheus datasource template variable (type datasource, query prometheus)")

    def check_ds(w: str, ds) -> None:
        if not isinstance(ds, dict):
            fail(w, f"datasource {ds!r}: expected {{type: prometheus, uid: ${{DS_PROMETHEUS}}}}")
            return
        if ds.get("type") != "prometheus":
            fail(w, f"datasource type {ds.get('type')!r}: expected prometheus")
        m = re.fullmatch(r"\$\{([A-Za-z0-9_]+)\}|\$([A-Za-z0-9_]+)", str(ds.get("uid", "")))
        if not m or (m.group(1) or m.group(2)) not in (ds_vars | ds_inputs):
            fail(w, f"datasource uid {ds.get('uid')!r}: expected ${{NAME}} of a datasource variable "
                    f"({', '.join(sorted(ds_vars | ds_inputs)) or 'none defined'})")

    def check_vars(w: str, used: set[str]) -> None:
        for v in sorted(used - defined_vars - GRAFANA_BUILTIN_VARS):
            fail(w, f"variable ${v} is not defined in templating")

    # Template variables
    for v in templ:
        if not isinstance(v, dict) or not v.get("name"):
            fail(where, f"template variable without a name: {v!r}")
            continue
        if v.get("type") != "query":
            continue
        w = f"{where}: variable {v['name']}"
        check_ds(w, v.get("datasource"))
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        if not isinstance(q, str) or not q:
            fail(w, "query missing")
            continue
        if v.get("definition") not in (None, q):
            fail(w, f"definition {v['definition']!r} differs from the query {q!r}")
        m = re.fullmatch(r"\s*label_values\((?:(.*),)?\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*", q, re.S)
        if m:
            if m.group(1):
                scan = check_expr(w, m.group(1), cat)
                if scan:
                    check_vars(w, scan.variables)
                    labels = set()
                    for metric, _ in scan.selectors:
                        labels |= cat.resolve(metric or "")[0] or set()
                    if labels and m.group(2) not in labels:
                        fail(w, f"label_values(..., {m.group(2)}): the metric has no label {m.group(2)!r}")
            continue
        m = re.fullmatch(r"\s*query_result\((.*)\)\s*", q, re.S)
        if m:
            scan = check_expr(w, m.group(1), cat)
            if scan:
                check_vars(w, scan.variables)
            continue
        fail(w, f"query {q!r}: expected label_values(metric, label) or query_result(expr)")

    # Panels
    ids: dict[int, str] = {}
    rects = []
    npanels = 0
    for p in iter_panels(d.get("panels") or []):
        npanels += 1
        if not isinstance(p, dict):
            fail(where, f"a panel that is not an object: {p!r}")
            continue
        title = p.get("title")
        w = f"{where}: panel {p.get('id')} {title!r}"
        if not isinstance(title, str) or not title.strip():
            fail(w, "title missing")
        if not isinstance(p.get("type"), str):
            fail(w, "type missing")
        pid = p.get("id")
        if not isinstance(pid, int) or isinstance(pid, bool):
            fail(w, "id missing or not an integer")
        elif pid in ids:
            fail(w, f"id {pid} also used by {ids[pid]!r}")
        else:
            ids[pid] = str(title)
        g = p.get("gridPos")
        if not isinstance(g, dict) or not all(isinstance(g.get(k), int) for k in "xywh"):
            fail(w, "gridPos {x, y, w, h} missing")
        elif g["x"] < 0 or g["w"] < 1 or g["h"] < 1 or g["x"] + g["w"] > 24:
            fail(w, f"gridPos {g} outside the 24 columns")
        else:
            for (o, og) in rects:
                if g["x"] < og["x"] + og["w"] and og["x"] < g["x"] + g["w"] and \
                        g["y"] < og["y"] + og["h"] and og["y"] < g["y"] + g["h"]:
                    fail(w, f"gridPos overlaps panel {o!r}")
            rects.append((title, g))
        if p.get("type") in NO_TARGET_TYPES:
            continue
        check_ds(w, p.get("datasource"))
        targets = p.get("targets")
        if not isinstance(targets, list) or not targets:
            fail(w, "no targets")
            continue
        refs = set()
        for t in targets:
            ref = t.get("refId")
            tw = f"{w} target {ref}"
            if not ref or ref in refs:
                fail(tw, "refId missing or repeated")
            refs.add(ref)
            check_ds(tw, t.get("datasource") or p.get("datasource"))
            expr = t.get("expr")
            if not isinstance(expr, str) or not expr.strip():
                fail(tw, "expr missing")
                continue
            legend = t.get("legendFormat")
            scan = check_expr(tw, expr, cat, legend if isinstance(legend, str) else None)
            if scan:
                check_vars(tw, scan.variables)
                if legend:
                    check_vars(tw, {var_name(x) for x in re.findall(r"\$\{[^}]*\}|\$[A-Za-z_]\w*", legend)})
            exprs_out.append((tw, expr))
        if p.get("type") == "nodeGraph":
            check_node_graph(w, p)
    if not ids:
        fail(where, "no panels")
    note(f"{path.name}: {npanels} panels, {len(exprs_out)} expressions, "
         f"variables {', '.join(sorted(defined_vars))}")
    return npanels


def check_node_graph(w: str, p: dict) -> None:
    """The node graph takes an edges frame (a `source` field) with id, source, target, mainstat;
    with no nodes frame it builds the nodes from the edges. Fields come from the labels of table
    queries (and label_join/label_replace) renamed by an organize transformation."""
    targets = p.get("targets") or []
    for t in targets:
        if t.get("format") != "table" or not t.get("instant"):
            fail(f"{w} target {t.get('refId')}", "node graph queries must be instant and format table")
    fields: set[str] = {"Time"}
    for t in targets:
        try:
            scan = Scan(t.get("expr") or "")
        except PromQLError:
            continue
        fields |= scan.created | scan.grouping
        fields.add("Value" if len(targets) == 1 else f"Value #{t.get('refId')}")
    for tr in p.get("transformations") or []:
        opts = tr.get("options") or {}
        if tr.get("id") == "organize":
            fields -= {k for k, v in (opts.get("excludeByName") or {}).items() if v}
            for old, new in (opts.get("renameByName") or {}).items():
                if old in fields and new:
                    fields.discard(old)
                    fields.add(new)
    lower = {f.lower() for f in fields}
    missing = [f for f in ("id", "source", "target", "mainstat") if f not in lower]
    if missing:
        fail(w, f"node graph edges frame lacks {', '.join(missing)} (fields after the "
                f"transformations: {', '.join(sorted(fields))})")


# ---------------------------------------------------------------------------
# Rules and rule tests


def check_rules(path: Path, cat: Catalog, use_pyyaml: bool) -> dict[str, str] | None:
    """Returns alert name -> where, or None when the file cannot be read."""
    where = str(path)
    doc = load_yaml(path, use_pyyaml)
    alerts: dict[str, str] = {}
    if doc is None:
        return None
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, list) or not groups:
        fail(where, "no groups")
        return alerts
    rules = []
    for g in groups:
        if not isinstance(g, dict) or not g.get("name") or not isinstance(g.get("rules"), list):
            fail(where, f"a group without name or rules: {g!r}"[:200])
            continue
        for r in g["rules"]:
            if not isinstance(r, dict):
                fail(where, f"group {g['name']}: a rule that is not a mapping")
                continue
            rules.append((g["name"], r))
            if r.get("record"):
                cat.recorded[r["record"]] = where
    for gname, r in rules:
        name = r.get("alert") or r.get("record")
        w = f"{where}: {'alert' if r.get('alert') else 'record'} {name}"
        if not name or bool(r.get("alert")) == bool(r.get("record")):
            fail(f"{where}: group {gname}", f"a rule needs exactly one of alert/record: {r!r}"[:200])
            continue
        expr = r.get("expr")
        if not isinstance(expr, str) or not expr.strip():
            fail(w, "expr missing")
            continue
        check_expr(w, expr, cat)
        if r.get("alert"):
            if name in alerts:
                fail(w, f"alert name repeated (also in {alerts[name]})")
            alerts[name] = w
            if not (r.get("labels") or {}).get("severity"):
                fail(w, "labels.severity missing")
            ann = r.get("annotations") or {}
            for a in ("summary", "description"):
                if not isinstance(ann.get(a), str) or not ann[a].strip():
                    fail(w, f"annotations.{a} missing")
            if "for" in r and not re.fullmatch(r"([0-9]+(ms|[smhdwy]))+", str(r["for"])):
                fail(w, f"for: {r['for']!r} is not a duration")
    note(f"{path.name}: {len(rules)} rules ({len(alerts)} alerts)")
    return alerts


def check_rule_tests(path: Path, cat: Catalog, alerts: dict[str, str], use_pyyaml: bool) -> None:
    where = str(path)
    doc = load_yaml(path, use_pyyaml)
    if not isinstance(doc, dict):
        fail(where, "not a promtool test file")
        return
    fires: set[str] = set()
    quiet: set[str] = set()
    tests = doc.get("tests") or []
    for k, t in enumerate(tests):
        tw = f"{where}: test {k + 1}"
        for s in t.get("input_series") or []:
            series = s.get("series", "")
            try:
                scan = Scan(series)
            except PromQLError as e:
                fail(tw, f"input series {series!r}: {e}")
                continue
            for metric, matchers in scan.selectors:
                labels, why = cat.resolve(metric or "")
                if labels is None:
                    fail(tw, f"input series {series!r}: {why}")
                    continue
                given = {m[0] for m in matchers}
                for label in sorted(given - labels):
                    fail(tw, f"input series {series!r}: {metric} has no label {label!r}")
                if "service_name" in labels and "service_name" not in given:
                    fail(tw, f"input series {series!r}: service_name missing (every {metric} series has it)")
        for c in t.get("alert_rule_test") or []:
            name = c.get("alertname")
            if name not in alerts:
                fail(tw, f"alertname {name!r} is not an alert of the rule files")
            elif c.get("exp_alerts"):
                fires.add(name)
            else:
                quiet.add(name)
    for name in sorted(alerts):
        if name not in fires:
            fail(where, f"no test case where {name} fires")
        if name not in quiet:
            fail(where, f"no test case where {name} does not fire (exp_alerts: [])")
    note(f"{path.name}: {len(tests)} tests; every alert fires in one and stays quiet in another"
         if not any(where in f for f in FAILURES) else f"{path.name}: {len(tests)} tests")


# ---------------------------------------------------------------------------
# PromQL syntax through promtool


def substitute_vars(expr: str, templ_values: dict[str, str]) -> str:
    def rep(m: re.Match) -> str:
        return templ_values.get(var_name(m.group()), "x")
    return re.sub(r"\$\{[^}]*\}|\$\$?[A-Za-z_][A-Za-z0-9_]*|\[\[[A-Za-z0-9_:.]+\]\]", rep, expr)


def promtool_syntax(promtool: str, exprs: list[tuple[str, str]]) -> None:
    values = dict(SAMPLE_VALUES)
    with tempfile.TemporaryDirectory(prefix="wasmtap-dash-") as tmp:
        for w, expr in exprs:
            # One file per expression so that promtool's error names the panel.
            rules = {"groups": [{"name": "syntax", "rules": [
                {"record": "dashboard:expr", "expr": substitute_vars(expr, values)}]}]}
            f = Path(tmp) / "expr.json"  # JSON is YAML
            f.write_text(json.dumps(rules))
            out = subprocess.run([promtool, "check", "rules", str(f)], capture_output=True, text=True)
            if out.returncode != 0:
                msg = " ".join((out.stdout + out.stderr).split())
                msg = msg.split('"dashboard:expr": ', 1)[-1]
                fail(w, f"promtool check rules refuses the expression: {msg[-400:]}")
    note(f"promtool: {len(exprs)} dashboard expressions parse")


# ---------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("deploy_dir", nargs="?", type=Path, default=Path(__file__).resolve().parent.parent)
    ap.add_argument("--promtool", default="auto",
                    help="auto (promtool on PATH, else skipped), none, or the path of promtool")
    ap.add_argument("--no-yaml", action="store_true", help="read YAML with the subset reader only")
    a = ap.parse_args()
    deploy = a.deploy_dir.resolve()
    print(f"validate-dashboards: {deploy}")
    if not deploy.is_dir():
        print(f"FAIL: {deploy} is not a directory")
        return 2
    cat = Catalog.load(deploy / "prometheus" / "exported-metrics.txt")
    note(f"exported-metrics.txt: {len(cat.metrics)} metrics")
    try:
        import yaml  # noqa: F401, PLC0415 (optional)
        have_yaml = not a.no_yaml
    except ImportError:
        have_yaml = False
    note("YAML: read by PyYAML and by the built-in subset reader (they must agree)" if have_yaml
         else "YAML: read by the built-in subset reader (PyYAML not used)")

    rule_files = sorted(p for p in (deploy / "prometheus").glob("*.y*ml") if ".test." not in p.name)
    test_files = sorted((deploy / "prometheus").glob("*.test.y*ml"))
    dashboards = sorted((deploy / "grafana").glob("*.json"))
    if not rule_files:
        fail(str(deploy / "prometheus"), "no rule files")
    if not dashboards:
        fail(str(deploy / "grafana"), "no dashboards")

    # Recorded names first (a dashboard may use them).
    alerts: dict[str, str] = {}
    rules_read = True
    for f in rule_files:
        got = check_rules(f, cat, not a.no_yaml)
        if got is None:
            rules_read = False
        else:
            alerts.update(got)
    if alerts and not test_files:
        fail(str(deploy / "prometheus"), "alert rules without a *.test.yaml")
    if rules_read:  # (else the tests' alert names cannot be checked)
        for f in test_files:
            check_rule_tests(f, cat, alerts, not a.no_yaml)

    exprs: list[tuple[str, str]] = []
    for f in dashboards:
        check_dashboard(f, cat, exprs)

    promtool = None if a.promtool == "none" else (shutil.which("promtool") if a.promtool == "auto" else a.promtool)
    if promtool:
        promtool_syntax(promtool, exprs)
    elif a.promtool == "auto":
        note("promtool not found: the dashboard expressions' PromQL syntax is not checked "
             "(install the prometheus package)")

    if FAILURES:
        for f in FAILURES:
            print(f"FAIL: {f}")
        print(f"validate-dashboards: {len(FAILURES)} problem(s) in {deploy}")
        return 1
    print("validate-dashboards: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
