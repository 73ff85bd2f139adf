#!/usr/bin/env python3
"""Validates wasmtap's deploy/ tree offline. Run by scripts/validate-deploy.sh.

    validate_deploy.py DEPLOY_DIR [--kube-version 1.29.0 ...] [--kustomize auto|python|CMD]

1. Every YAML file parses.
2. Every kustomization entry point (one that no other kustomization includes)
   is rendered by a small built-in renderer for the kustomize subset used here
   (resources, namespace, labels, commonLabels, configMapGenerator, images) and,
   when a real kustomize is on the machine (`kubectl kustomize`, or
   `kustomize build`), by that too: both must give the same objects.
3. Every rendered object is checked against the Kubernetes OpenAPI schemas of
   the given versions, strictly (unknown fields are errors): kubernetes-validate.
4. Policy: non-root, no privilege, capabilities drop ALL and add only NET_RAW
   (NET_ADMIN only in host mode), read-only root filesystems, resources set,
   pinned images, labels, probes on the admin endpoint, references resolve
   (ConfigMaps, Secrets, Service selectors and ports, the OTLP endpoint to the
   collector's Service), the wasmtap container's arguments and mounts agree with
   its configuration file, and the collector's configuration is consistent.
5. The Dockerfile: multi-stage, pinned base images, a non-root USER, the
   entrypoint, libpcap at run time, file capabilities no wider than what the
   manifests grant (wider ones make exec fail), a context filter excluding
   target/; hadolint when it is installed.

Prints one line per failure and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlparse

import yaml

FAILURES: list[str] = []
NOTES: list[str] = []


def fail(where: str, msg: str) -> None:
    FAILURES.append(f"{where}: {msg}")


def note(msg: str) -> None:
    NOTES.append(msg)
    print(f"  {msg}")


KUSTOMIZATION_NAMES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
WORKLOAD_KINDS = {"Deployment", "DaemonSet", "StatefulSet", "ReplicaSet", "Job"}
CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "PriorityClass",
    "CustomResourceDefinition",
    "StorageClass",
    "PersistentVolume",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "RuntimeClass",
    "IngressClass",
}
REQUIRED_LABELS = ("app.kubernetes.io/name", "app.kubernetes.io/part-of")
ALLOWED_AGENT_CAPS = {"NET_RAW", "NET_ADMIN"}
SIDECAR_FIELD_ENV = {
    "POD_NAME": "metadata.name",
    "POD_NAMESPACE": "metadata.namespace",
    "POD_IP": "status.podIP",
    "NODE_NAME": "spec.nodeName",
}
# Created out of band (documented in deploy/README.md), so never in a rendering.
OUT_OF_BAND = {("Secret", "wasmtap-admin"), ("ConfigMap", "wasmtap-plugins")}


# ---------------------------------------------------------------------------
# YAML


def load_yaml_docs(path: Path) -> list:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def check_yaml_parses(deploy: Path) -> None:
    for p in sorted(list(deploy.rglob("*.yaml")) + list(deploy.rglob("*.yml"))):
        try:
            docs = load_yaml_docs(p)
        except yaml.YAMLError as e:
            fail(str(p), f"YAML does not parse: {e}")
            continue
        for d in docs:
            if not isinstance(d, dict):
                fail(str(p), "a YAML document that is not a mapping")


# ---------------------------------------------------------------------------
# Kustomize subset renderer


def kustomization_file(d: Path) -> Path | None:
    for n in KUSTOMIZATION_NAMES:
        if (d / n).is_file():
            return d / n
    return None


SUPPORTED_KEYS = {
    "apiVersion",
    "kind",
    "namespace",
    "labels",
    "commonLabels",
    "resources",
    "configMapGenerator",
    "generatorOptions",
    "images",
}


class RenderError(Exception):
    pass


def inside(root: Path, p: Path) -> bool:
    try:
        p.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def pod_templates(obj: dict) -> list[dict]:
    """The pod template metadata+spec holders of a workload (dicts with 'spec')."""
    kind = obj.get("kind")
    spec = obj.get("spec") or {}
    if kind in WORKLOAD_KINDS:
        t = spec.get("template")
        return [t] if isinstance(t, dict) else []
    if kind == "CronJob":
        t = ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template")
        return [t] if isinstance(t, dict) else []
    return []


def pod_spec(obj: dict) -> dict | None:
    if obj.get("kind") == "Pod":
        return obj.get("spec") or {}
    ts = pod_templates(obj)
    return (ts[0].get("spec") or {}) if ts else None


def render(kdir: Path, stack: tuple = ()) -> list[dict]:
    kfile = kustomization_file(kdir)
    if kfile is None:
        raise RenderError(f"{kdir}: no kustomization.yaml")
    if kdir.resolve() in stack:
        raise RenderError(f"{kdir}: kustomization cycle")
    stack = stack + (kdir.resolve(),)
    docs = load_yaml_docs(kfile)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise RenderError(f"{kfile}: must hold one mapping")
    k = docs[0]
    unknown = set(k) - SUPPORTED_KEYS
    if unknown:
        raise RenderError(
            f"{kfile}: fields {sorted(unknown)} are outside the subset the fallback renderer "
            "supports (deploy/ci/validate_deploy.py); add support there or keep the overlay simple"
        )
    objs: list[dict] = []
    for r in k.get("resources") or []:
        if not isinstance(r, str) or "://" in r or r.startswith("github.com/"):
            raise RenderError(f"{kfile}: remote or malformed resource {r!r} (offline only)")
        p = kdir / r
        if p.is_dir():
            objs.extend(render(p, stack))
        elif p.is_file():
            if not inside(kdir, p):
                raise RenderError(f"{kfile}: resource file {r} is outside the kustomization root")
            objs.extend(copy.deepcopy(load_yaml_docs(p)))
        else:
            raise RenderError(f"{kfile}: resource {r} does not exist")

    gen_opts = k.get("generatorOptions") or {}
    for g in k.get("configMapGenerator") or []:
        unknown = set(g) - {"name", "files", "literals", "options"}
        if unknown:
            raise RenderError(f"{kfile}: configMapGenerator fields {sorted(unknown)} unsupported")
        opts = {**gen_opts, **(g.get("options") or {})}
        if not opts.get("disableNameSuffixHash"):
            raise RenderError(
                f"{kfile}: configMapGenerator {g.get('name')}: set disableNameSuffixHash: true "
                "(a stable name is what lets an update reach running pods as a file change)"
            )
        data = {}
        for f in g.get("files") or []:
            key, _, rel = f.rpartition("=") if "=" in f else ("", "", f)
            fp = kdir / rel
            if not fp.is_file() or not inside(kdir, fp):
                raise RenderError(f"{kfile}: configMapGenerator file {rel} missing or outside the root")
            data[key or fp.name] = fp.read_text()
        for lit in g.get("literals") or []:
            key, _, val = lit.partition("=")
            data[key] = val
        meta = {"name": g["name"]}
        if opts.get("labels"):
            meta["labels"] = dict(opts["labels"])
        if opts.get("annotations"):
            meta["annotations"] = dict(opts["annotations"])
        objs.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data})

    ns = k.get("namespace")
    if ns:
        for o in objs:
            if o.get("kind") not in CLUSTER_SCOPED:
                o.setdefault("metadata", {})["namespace"] = ns
            elif o.get("kind") == "Namespace" and o["metadata"].get("name") != ns:
                raise RenderError(
                    f"{kfile}: Namespace {o['metadata'].get('name')} differs from namespace: {ns} "
                    "(kustomize would rename it)"
                )

    label_sets = []
    if k.get("commonLabels"):
        label_sets.append((k["commonLabels"], True, True))
    for entry in k.get("labels") or []:
        sel = bool(entry.get("includeSelectors"))
        label_sets.append((entry.get("pairs") or {}, sel, sel or bool(entry.get("includeTemplates"))))
    for pairs, selectors, templates in label_sets:
        for o in objs:
            o.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            if templates:
                for t in pod_templates(o):
                    t.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
            if selectors:
                if o.get("kind") == "Service":
                    o.setdefault("spec", {}).setdefault("selector", {}).update(pairs)
                elif o.get("kind") in WORKLOAD_KINDS:
                    o["spec"].setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)

    for img in k.get("images") or []:
        for o in objs:
            ps = pod_spec(o)
            if ps is None:
                continue
            for c in (ps.get("containers") or []) + (ps.get("initContainers") or []):
                name, tag, digest = split_image(c.get("image", ""))
                if name != img.get("name"):
                    continue
                name = img.get("newName", name)
                if img.get("digest"):
                    c["image"] = f"{name}@{img['digest']}"
                elif img.get("newTag"):
                    c["image"] = f"{name}:{img['newTag']}"
                else:
                    c["image"] = name + (f"@{digest}" if digest else f":{tag}" if tag else "")
    return objs


def split_image(image: str) -> tuple[str, str | None, str | None]:
    digest = None
    if "@" in image:
        image, digest = image.split("@", 1)
    tag = None
    last = image.rsplit("/", 1)[-1]
    if ":" in last:
        image, tag = image.rsplit(":", 1)
    return image, tag, digest


def obj_key(o: dict) -> tuple:
    m = o.get("metadata") or {}
    return (o.get("apiVersion"), o.get("kind"), m.get("namespace"), m.get("name"))


def real_kustomize(choice: str) -> list[str] | None:
    """The command of a real kustomize (kustomize >= 4.1 for `labels`), or None."""
    if choice == "python":
        return None
    if choice != "auto":
        return shlex.split(choice)
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    if shutil.which("kubectl"):
        try:
            out = subprocess.run(
                ["kubectl", "version", "--client", "-o", "json"],
                capture_output=True, text=True, timeout=30,
            ).stdout
            kv = json.loads(out).get("kustomizeVersion", "")
            m = re.match(r"v(\d+)\.(\d+)", kv)
            if m and (int(m.group(1)), int(m.group(2))) >= (4, 1):
                return ["kubectl", "kustomize"]
            note(f"kubectl's kustomize {kv or '(unknown)'} is older than v4.1: not used")
        except (OSError, ValueError, subprocess.TimeoutExpired) as e:
            note(f"kubectl present but unusable ({e}): not used")
    return None


def entry_points(deploy: Path) -> list[Path]:
    kdirs = sorted({p.parent for n in KUSTOMIZATION_NAMES for p in deploy.rglob(n)})
    included: set[Path] = set()
    for d in kdirs:
        try:
            k = load_yaml_docs(kustomization_file(d))[0] or {}
        except Exception:  # reported by check_yaml_parses
            continue
        for r in k.get("resources") or []:
            if isinstance(r, str) and (d / r).is_dir():
                included.add((d / r).resolve())
    return [d for d in kdirs if d.resolve() not in included]


def render_all(deploy: Path, kustomize_choice: str) -> dict[Path, list[dict]]:
    out: dict[Path, list[dict]] = {}
    cmd = real_kustomize(kustomize_choice)
    note("renderer: built-in subset" + (f", cross-checked with `{' '.join(cmd)}`" if cmd else
                                           " (no kustomize >= v4.1 found: not cross-checked)"))
    for d in entry_points(deploy):
        rel = d.relative_to(deploy)
        try:
            objs = render(d)
        except (RenderError, OSError, yaml.YAMLError) as e:
            fail(str(rel), f"render: {e}")
            continue
        if cmd:
            r = subprocess.run(cmd + [str(d)], capture_output=True, text=True, timeout=120)
            if r.returncode != 0:
                fail(str(rel), f"`{' '.join(cmd)}` failed: {r.stderr.strip()}")
            else:
                real = {obj_key(o): o for o in yaml.safe_load_all(r.stdout) if o}
                mine = {obj_key(o): o for o in objs}
                if set(real) != set(mine):
                    fail(str(rel), f"kustomize renders {sorted(map(str, set(real) ^ set(mine)))} differently "
                                   "from the built-in renderer")
                for key in set(real) & set(mine):
                    if real[key] != mine[key]:
                        fail(str(rel), f"{key}: kustomize and the built-in renderer disagree:\n"
                                       f"    kustomize: {json.dumps(real[key], sort_keys=True)[:600]}\n"
                                       f"    built-in:  {json.dumps(mine[key], sort_keys=True)[:600]}")
        seen = set()
        for o in objs:
            if obj_key(o) in seen:
                fail(str(rel), f"duplicate object {obj_key(o)}")
            seen.add(obj_key(o))
        out[rel] = objs
        note(f"rendered {rel}: " + ", ".join(f"{o.get('kind')}/{o.get('metadata', {}).get('name')}" for o in objs))
    if not out:
        fail(str(deploy), "no kustomization entry point found")
    return out


# ---------------------------------------------------------------------------
# Schemas


def check_schemas(rendered: dict[Path, list[dict]], versions: list[str]) -> None:
    import kubernetes_validate

    for rel, objs in rendered.items():
        for o in objs:
            for v in versions:
                try:
                    kubernetes_validate.validate(o, v, strict=True)
                except kubernetes_validate.ValidationError as e:
                    path = "/".join(str(x) for x in e.path)
                    fail(f"{rel} {o.get('kind')}/{o.get('metadata', {}).get('name')}",
                         f"Kubernetes {v} schema: {e.message} (at {path or '/'})")
                except kubernetes_validate.SchemaNotFoundError as e:
                    fail(f"{rel} {o.get('kind')}/{o.get('metadata', {}).get('name')}",
                         f"no schema for Kubernetes {v}: {e}")


# ---------------------------------------------------------------------------
# Policy


def is_agent(c: dict) -> bool:
    return split_image(c.get("image", ""))[0].rsplit("/", 1)[-1] == "wasmtap"


def arg_values(args: list[str], flag: str) -> list[str]:
    vals = []
    for i, a in enumerate(args):
        if a == flag and i + 1 < len(args):
            vals.append(args[i + 1])
        elif a.startswith(flag + "="):
            vals.append(a[len(flag) + 1:])
    return vals


def port_number(c: dict, port) -> int | None:
    if isinstance(port, int):
        return port
    for p in c.get("ports") or []:
        if p.get("name") == port:
            return p.get("containerPort")
    return None


def mount_for(c: dict, path: str) -> dict | None:
    """The volume mount of container c holding path (longest prefix)."""
    best = None
    for m in c.get("volumeMounts") or []:
        mp = m.get("mountPath", "").rstrip("/")
        if path == mp or path.startswith(mp + "/"):
            if best is None or len(mp) > len(best.get("mountPath", "").rstrip("/")):
                best = m
    return best


def check_policy(rendered: dict[Path, list[dict]], deploy: Path) -> list[tuple]:
    """Returns the agent containers found: (rel, workload, pod spec, container, mode)."""
    agents = []
    all_services = [(rel, o) for rel, objs in rendered.items() for o in objs if o.get("kind") == "Service"]
    for rel, objs in rendered.items():
        index = {(o.get("kind"), (o.get("metadata") or {}).get("name")): o for o in objs}
        for o in objs:
            kind, meta = o.get("kind"), o.get("metadata") or {}
            where = f"{rel} {kind}/{meta.get('name')}"
            labels = meta.get("labels") or {}
            for lab in REQUIRED_LABELS:
                if lab not in labels:
                    fail(where, f"label {lab} missing")
            if kind == "Service":
                check_service(where, o, objs)
            ps = pod_spec(o)
            if ps is None:
                continue
            if kind not in WORKLOAD_KINDS | {"CronJob", "Pod"}:
                continue
            for t in pod_templates(o):
                tl = (t.get("metadata") or {}).get("labels") or {}
                for lab in REQUIRED_LABELS:
                    if lab not in tl:
                        fail(where, f"pod template label {lab} missing")
                sel = ((o.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
                if kind != "CronJob" and kind != "Job" and (not sel or any(tl.get(k) != v for k, v in sel.items())):
                    fail(where, f"selector {sel} does not match the pod template labels {tl}")
            for k in ("hostPID", "hostIPC"):
                if ps.get(k):
                    fail(where, f"{k}: true is not allowed")
            if ps.get("hostNetwork"):
                if kind != "DaemonSet":
                    fail(where, "hostNetwork is allowed only for the host-mode DaemonSet")
                if ps.get("dnsPolicy") != "ClusterFirstWithHostNet":
                    fail(where, "hostNetwork needs dnsPolicy: ClusterFirstWithHostNet (cluster DNS for the collector)")
            psc = ps.get("securityContext") or {}
            volumes = {v.get("name"): v for v in ps.get("volumes") or []}
            for v in volumes.values():
                if "hostPath" in v:
                    fail(where, f"volume {v.get('name')}: hostPath is not allowed")
                cm = v.get("configMap")
                if cm is not None:
                    ref_exists(where, index, "ConfigMap", cm.get("name"), cm.get("optional"), f"volume {v.get('name')}")
                sec = v.get("secret")
                if sec is not None:
                    ref_exists(where, index, "Secret", sec.get("secretName"), sec.get("optional"), f"volume {v.get('name')}")
            containers = (ps.get("containers") or []) + (ps.get("initContainers") or [])
            for c in containers:
                cw = f"{where} container {c.get('name')}"
                check_container(cw, c, psc, volumes, index, agent=is_agent(c), host_network=bool(ps.get("hostNetwork")))
                if is_agent(c):
                    mode = check_agent(cw, o, ps, c, volumes, index, all_services, deploy)
                    agents.append((rel, o, ps, c, mode))
            if any(is_agent(c) for c in containers):
                if ps.get("automountServiceAccountToken") is not False:
                    check_agent_rbac(where, ps, objs)
                if kind == "DaemonSet":
                    tol = ps.get("tolerations") or []
                    if not any(t.get("operator") == "Exists" and not t.get("key") and not t.get("effect") for t in tol):
                        fail(where, "the host-mode DaemonSet must tolerate every taint (operator: Exists)")
    if not agents:
        fail(str(deploy), "no wasmtap container in any rendering")
    return agents


# What the agent may read from the API (wasmtap-kube): nothing else, never a write.
AGENT_READS = {("", "pods"), ("", "services"), ("apps", "replicasets"), ("batch", "jobs")}


def check_agent_rbac(where, ps, objs) -> None:
    """An agent pod that mounts a token must be bound to a read-only role
    over the kinds the agent watches, and to nothing wider."""
    sa = ps.get("serviceAccountName") or "default"
    roles = {(o.get("kind"), (o.get("metadata") or {}).get("name")): o for o in objs if o.get("kind") in ("ClusterRole", "Role")}
    bound = [
        o for o in objs
        if o.get("kind") in ("ClusterRoleBinding", "RoleBinding")
        and any(s.get("kind") == "ServiceAccount" and s.get("name") == sa for s in o.get("subjects") or [])
    ]
    if not bound:
        fail(where, f"automountServiceAccountToken is not false but ServiceAccount {sa} is bound to no role (the agent needs a token only to read pods, owners and services)")
        return
    for b in bound:
        ref = b.get("roleRef") or {}
        role = roles.get((ref.get("kind"), ref.get("name")))
        if role is None:
            fail(where, f"{b['kind']}/{b['metadata'].get('name')}: role {ref.get('kind')}/{ref.get('name')} is not rendered")
            continue
        for rule in role.get("rules") or []:
            verbs = set(rule.get("verbs") or [])
            if not verbs <= {"get", "list", "watch"}:
                fail(where, f"{role['kind']}/{role['metadata'].get('name')}: verbs {sorted(verbs - {'get', 'list', 'watch'})} beyond get/list/watch")
            for g in rule.get("apiGroups") or [""]:
                for r in rule.get("resources") or []:
                    if (g, r) not in AGENT_READS:
                        fail(where, f"{role['kind']}/{role['metadata'].get('name')}: {g or 'core'}/{r} is not a kind the agent reads")


def ref_exists(where, index, kind, name, optional, what) -> None:
    if (kind, name) in index or (kind, name) in OUT_OF_BAND:
        return
    if optional:
        fail(where, f"{what}: optional {kind} {name} is neither rendered nor a documented out-of-band object")
        return
    fail(where, f"{what}: {kind} {name} is neither part of this rendering nor a documented out-of-band object")


def check_container(cw, c, psc, volumes, index, agent: bool, host_network: bool) -> None:
    image = c.get("image", "")
    name, tag, digest = split_image(image)
    if not digest and (not tag or tag == "latest"):
        fail(cw, f"image {image!r} is not pinned (a tag other than latest, or a digest)")
    sc = c.get("securityContext") or {}
    if sc.get("privileged"):
        fail(cw, "privileged: true is not allowed")
    run_non_root = sc.get("runAsNonRoot", psc.get("runAsNonRoot"))
    if run_non_root is not True:
        fail(cw, "runAsNonRoot: true missing (container or pod)")
    uid = sc.get("runAsUser", psc.get("runAsUser"))
    if uid is None or uid == 0:
        fail(cw, "runAsUser must be set to a non-zero uid")
    if sc.get("readOnlyRootFilesystem") is not True:
        fail(cw, "readOnlyRootFilesystem: true missing")
    seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        fail(cw, "seccompProfile RuntimeDefault (or Localhost) missing")
    caps = sc.get("capabilities") or {}
    if "ALL" not in (caps.get("drop") or []):
        fail(cw, "capabilities.drop must contain ALL")
    added = set(caps.get("add") or [])
    if agent:
        if added - ALLOWED_AGENT_CAPS:
            fail(cw, f"capabilities {sorted(added - ALLOWED_AGENT_CAPS)} added: only NET_RAW (and NET_ADMIN in host mode) may be")
        if "NET_ADMIN" in added and not host_network:
            fail(cw, "NET_ADMIN is allowed only in host mode (a packet socket on the pod's eth0 needs NET_RAW alone)")
        if "NET_RAW" not in added:
            fail(cw, "NET_RAW must be added (packet capture)")
        if added and sc.get("allowPrivilegeEscalation") is False:
            fail(cw, "allowPrivilegeEscalation: false sets no_new_privs, which voids the binary's file "
                     "capabilities: the non-root agent could not open a packet socket")
    else:
        if added:
            fail(cw, f"capabilities {sorted(added)} added to a container other than wasmtap")
        if sc.get("allowPrivilegeEscalation") is not False:
            fail(cw, "allowPrivilegeEscalation: false missing")
    res = c.get("resources") or {}
    for part in ("requests", "limits"):
        for r in ("cpu", "memory"):
            if r not in (res.get(part) or {}):
                fail(cw, f"resources.{part}.{r} missing")
    for m in c.get("volumeMounts") or []:
        v = volumes.get(m.get("name"))
        if v is None:
            fail(cw, f"volumeMount {m.get('name')} has no volume")
            continue
        if m.get("subPath") or m.get("subPathExpr"):
            if "configMap" in v or "secret" in v or "projected" in v:
                fail(cw, f"volumeMount {m.get('name')}: subPath mounts of ConfigMaps/Secrets never receive updates")
    for e in c.get("env") or []:
        vf = e.get("valueFrom") or {}
        if "secretKeyRef" in vf:
            r = vf["secretKeyRef"]
            ref_exists(cw, index, "Secret", r.get("name"), r.get("optional"), f"env {e.get('name')}")
        if "configMapKeyRef" in vf:
            r = vf["configMapKeyRef"]
            ref_exists(cw, index, "ConfigMap", r.get("name"), r.get("optional"), f"env {e.get('name')}")
    for probe in ("readinessProbe", "livenessProbe"):
        p = c.get(probe)
        if agent and not p:
            fail(cw, f"{probe} missing")
        hg = (p or {}).get("httpGet")
        if hg and port_number(c, hg.get("port")) is None:
            fail(cw, f"{probe}: port {hg.get('port')} is not a port of the container")


def check_agent(cw, o, ps, c, volumes, index, all_services, deploy) -> str | None:
    args = list(c.get("command") or []) + list(c.get("args") or [])
    if not args or args[0] != "run":
        fail(cw, f"the agent must run `wasmtap run ...` (args start with 'run'), got {args[:1]}")
    modes = arg_values(args, "--mode")
    mode = modes[0] if modes else None
    if mode not in ("sidecar", "host"):
        fail(cw, f"--mode sidecar|host expected, got {mode}")
    if not arg_values(args, "--interface"):
        fail(cw, "--interface missing")
    for i in arg_values(args, "--interface"):
        if i != "any" and not re.fullmatch(r"[A-Za-z0-9_.:@-]+", i):
            try:
                re.compile(i)
            except re.error as e:
                fail(cw, f"--interface {i!r} is neither a name nor a valid regex: {e}")
    host_network = bool(ps.get("hostNetwork"))
    if mode == "host" and (o.get("kind") != "DaemonSet" or not host_network):
        fail(cw, "--mode host belongs in a DaemonSet with hostNetwork: true")
    if mode == "sidecar":
        if host_network:
            fail(cw, "--mode sidecar must not use hostNetwork")
        if len(ps.get("containers") or []) < 2:
            fail(cw, "--mode sidecar: the pod holds no application container")
    env = {e.get("name"): e for e in c.get("env") or []}
    wanted = SIDECAR_FIELD_ENV if mode == "sidecar" else {"NODE_NAME": "spec.nodeName"}
    for name, field in wanted.items():
        got = (((env.get(name) or {}).get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")
        if got != field:
            fail(cw, f"env {name} must come from the downward API fieldPath {field} (got {got})")
    tok = env.get("WASMTAP_ADMIN_TOKEN")
    tok_ref = ((tok or {}).get("valueFrom") or {}).get("secretKeyRef")
    if tok_ref is None:
        fail(cw, "WASMTAP_ADMIN_TOKEN must come from a Secret (secretKeyRef), never a literal")
    elif tok_ref.get("optional"):
        fail(cw, "the WASMTAP_ADMIN_TOKEN secretKeyRef must not be optional: the agent refuses a "
                 "non-loopback --admin-listen without a token")

    # Admin endpoint and probes.
    listen = arg_values(args, "--admin-listen")
    admin_port = None
    if not listen:
        fail(cw, "--admin-listen missing (the default binds loopback, which the kubelet's probes cannot reach)")
    else:
        host, _, port = listen[-1].rpartition(":")
        if host.strip("[]") in ("127.0.0.1", "localhost", "::1"):
            fail(cw, f"--admin-listen {listen[-1]} is loopback: the kubelet's HTTP probes cannot reach it")
        admin_port = int(port) if port.isdigit() else None
        if port_number(c, admin_port) is None:
            fail(cw, f"the admin port {port} is not declared in the container's ports")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        hg = (c.get(probe) or {}).get("httpGet")
        if hg is None:
            if probe != "startupProbe":
                fail(cw, f"{probe} must be an httpGet of {path} on the admin endpoint")
            continue
        if hg.get("path") != path:
            fail(cw, f"{probe} must GET {path}, got {hg.get('path')}")
        if admin_port is not None and port_number(c, hg.get("port")) != admin_port:
            fail(cw, f"{probe} port {hg.get('port')} is not the --admin-listen port {admin_port}")

    # Configuration file and plugin directory.
    sc = c.get("securityContext") or {}
    cfg_paths = arg_values(args, "--config")
    cfg = None
    if not cfg_paths:
        fail(cw, "--config missing")
    else:
        cfg = check_mounted_file(cw, c, volumes, index, cfg_paths[0], "--config")
    plugin_dirs = arg_values(args, "--plugins")
    if not plugin_dirs:
        fail(cw, "--plugins missing (the watched decoder directory)")
    else:
        m = mount_for(c, plugin_dirs[0])
        if m is None or m.get("mountPath", "").rstrip("/") != plugin_dirs[0].rstrip("/"):
            fail(cw, f"--plugins {plugin_dirs[0]} must be a volume's mountPath")
    if cfg is not None:
        cache = ((cfg.get("plugins") or {}).get("cache_dir"))
        if cache is None:
            xdg = (env.get("XDG_CACHE_HOME") or {}).get("value")
            cache = f"{xdg}/wasmtap" if xdg else None
        if cache:
            m = mount_for(c, cache)
            if sc.get("readOnlyRootFilesystem") and (m is None or m.get("readOnly")):
                fail(cw, f"the decoder cache {cache} is not on a writable volume (the root filesystem is read-only)")
            elif m is not None and "emptyDir" not in (volumes.get(m.get("name")) or {}):
                fail(cw, f"the decoder cache {cache} must be an emptyDir the agent alone writes")

    # OTLP goes to a Service that exists, on a port of the right protocol.
    ep = ((env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or {}).get("value")) or (arg_values(args, "--otlp-endpoint") or [None])[0]
    proto = ((env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or {}).get("value")) or (arg_values(args, "--otlp-protocol") or ["http/protobuf"])[0]
    if not ep:
        fail(cw, "no OTLP endpoint (OTEL_EXPORTER_OTLP_ENDPOINT or --otlp-endpoint)")
    else:
        check_otlp_endpoint(cw, ep, proto, all_services, (o.get("metadata") or {}).get("namespace"))
    return mode


def check_mounted_file(cw, c, volumes, index, path, what) -> dict | None:
    m = mount_for(c, path)
    if m is None:
        fail(cw, f"{what} {path} is on no volume")
        return None
    v = volumes.get(m.get("name")) or {}
    cm = v.get("configMap")
    if cm is None:
        fail(cw, f"{what} {path} should come from a ConfigMap volume")
        return None
    key = path[len(m["mountPath"].rstrip("/")) + 1:]
    obj = index.get(("ConfigMap", cm.get("name")))
    if obj is None:
        return None
    data = obj.get("data") or {}
    if key not in data:
        fail(cw, f"{what} {path}: ConfigMap {cm.get('name')} has no key {key}")
        return None
    try:
        return tomllib.loads(data[key])
    except tomllib.TOMLDecodeError as e:
        fail(cw, f"{what} {path}: TOML does not parse: {e}")
        return None


def check_otlp_endpoint(cw, ep, proto, all_services, own_ns) -> None:
    u = urlparse(ep)
    if u.scheme not in ("http", "https") or not u.hostname:
        fail(cw, f"OTLP endpoint {ep!r} is not an http(s) base URL")
        return
    port = u.port or (443 if u.scheme == "https" else 80)
    parts = u.hostname.split(".")
    svc, ns = parts[0], parts[1] if len(parts) > 1 else own_ns
    want_port = {"grpc": 4317}.get(proto, 4318)
    if proto not in ("grpc", "http/protobuf", "http"):
        fail(cw, f"OTEL_EXPORTER_OTLP_PROTOCOL {proto!r}: grpc or http/protobuf expected")
    if port != want_port:
        fail(cw, f"OTLP endpoint {ep}: protocol {proto} is served on port {want_port}, not {port}")
    for rel, s in all_services:
        m = s.get("metadata") or {}
        if m.get("name") == svc and m.get("namespace") == ns:
            if not any(p.get("port") == port for p in (s.get("spec") or {}).get("ports") or []):
                fail(cw, f"OTLP endpoint {ep}: Service {ns}/{svc} ({rel}) has no port {port}")
            return
    fail(cw, f"OTLP endpoint {ep}: no Service {ns}/{svc} in any rendering")


def check_service(where, s, objs) -> None:
    spec = s.get("spec") or {}
    sel = spec.get("selector") or {}
    if not sel:
        fail(where, "a Service without selector")
        return
    pods = []
    for o in objs:
        for t in pod_templates(o):
            tl = (t.get("metadata") or {}).get("labels") or {}
            if all(tl.get(k) == v for k, v in sel.items()):
                pods.append(t.get("spec") or {})
    if not pods:
        fail(where, f"selector {sel} selects no pod template of this rendering")
        return
    for p in spec.get("ports") or []:
        tp = p.get("targetPort", p.get("port"))
        ok = any(
            (isinstance(tp, int) and any(cp.get("containerPort") == tp for cp in c.get("ports") or []))
            or any(cp.get("name") == tp for cp in c.get("ports") or [])
            for ps in pods for c in ps.get("containers") or []
        )
        if not ok:
            fail(where, f"targetPort {tp} is no port of the selected pods")


# ---------------------------------------------------------------------------
# wasmtap.toml and the collector configuration


WASMTAP_SECTIONS = {"flows", "matching", "plugins", "services", "telemetry", "filters", "kubernetes", "names", "locality", "tunnels"}


def check_configs(rendered: dict[Path, list[dict]]) -> None:
    for rel, objs in rendered.items():
        for o in objs:
            if o.get("kind") != "ConfigMap":
                continue
            where = f"{rel} ConfigMap/{o['metadata'].get('name')}"
            for key, text in (o.get("data") or {}).items():
                if key.endswith(".toml"):
                    try:
                        cfg = tomllib.loads(text)
                    except tomllib.TOMLDecodeError as e:
                        fail(where, f"{key}: TOML does not parse: {e}")
                        continue
                    unknown = set(cfg) - WASMTAP_SECTIONS
                    if unknown:
                        fail(where, f"{key}: unknown sections {sorted(unknown)} (the agent rejects unknown keys)")
                    for s in cfg.get("services") or []:
                        if set(s) != {"match", "name"}:
                            fail(where, f"{key}: [[services]] entries take exactly match and name: {s}")
                elif (o["metadata"].get("labels") or {}).get("app.kubernetes.io/name") == "otel-collector" and key.endswith((".yaml", ".yml")):
                    check_collector_config(where, key, text, objs)


def check_collector_config(where, key, text, objs) -> None:
    try:
        cfg = yaml.safe_load(text) or {}
    except yaml.YAMLError as e:
        fail(where, f"{key}: YAML does not parse: {e}")
        return
    service = cfg.get("service") or {}
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        fail(where, f"{key}: no service.pipelines")
    for ext in service.get("extensions") or []:
        if ext not in (cfg.get("extensions") or {}):
            fail(where, f"{key}: extension {ext} used but not configured")
    used = {"receivers": set(), "processors": set(), "exporters": set()}
    for pname, p in pipelines.items():
        if not (p.get("receivers") and p.get("exporters")):
            fail(where, f"{key}: pipeline {pname} needs receivers and exporters")
        for part in used:
            for comp in p.get(part) or []:
                used[part].add(comp)
                if comp not in (cfg.get(part) or {}):
                    fail(where, f"{key}: pipeline {pname} uses {part[:-1]} {comp}, which is not configured")
        procs = p.get("processors") or []
        if "memory_limiter" in procs and procs[0] != "memory_limiter":
            fail(where, f"{key}: pipeline {pname}: memory_limiter must be the first processor")
    for part, comps in used.items():
        for comp in cfg.get(part) or {}:
            if comp not in comps:
                fail(where, f"{key}: {part[:-1]} {comp} is configured but in no pipeline")
    protocols = ((cfg.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
    want = {"grpc": 4317, "http": 4318}
    deployments = [o for o in objs if o.get("kind") in WORKLOAD_KINDS]
    env_names = {e.get("name") for d in deployments for c in (pod_spec(d) or {}).get("containers") or [] for e in c.get("env") or []}
    ports = {p.get("containerPort") for d in deployments for c in (pod_spec(d) or {}).get("containers") or [] for p in c.get("ports") or []}
    for proto, port in want.items():
        ep = (protocols.get(proto) or {}).get("endpoint")
        if ep is None:
            fail(where, f"{key}: OTLP {proto} receiver missing (wasmtap sends to {port})")
            continue
        host, _, p = str(ep).rpartition(":")
        if p != str(port):
            fail(where, f"{key}: OTLP {proto} endpoint {ep} should use port {port}")
        if host in ("localhost", "127.0.0.1", ""):
            fail(where, f"{key}: OTLP {proto} endpoint {ep} binds loopback (the default since collector 0.104): unreachable from agents")
        for var in re.findall(r"\$\{env:([A-Za-z_][A-Za-z0-9_]*)\}", str(ep)):
            if var not in env_names:
                fail(where, f"{key}: endpoint uses ${{env:{var}}}, which the collector container does not set")
        if port not in ports:
            fail(where, f"{key}: port {port} is not a containerPort of the collector")


# ---------------------------------------------------------------------------
# Dockerfile


def dockerfile_instructions(path: Path) -> list[tuple[int, str, str]]:
    out, buf, start = [], "", 0
    for n, line in enumerate(path.read_text().splitlines(), 1):
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if not buf:
            start = n
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        word, _, rest = buf.partition(" ")
        out.append((start, word.upper(), rest.strip()))
        buf = ""
    return out


def check_dockerfile(deploy: Path, agents: list[tuple], hadolint: str | None) -> None:
    df = deploy / "Dockerfile"
    if not df.is_file():
        fail(str(df), "missing")
        return
    ins = dockerfile_instructions(df)
    stages: list[dict] = []
    for n, word, rest in ins:
        if word == "FROM":
            toks = [t for t in rest.split() if not t.startswith("--")]
            image = toks[0] if toks else ""
            alias = toks[2] if len(toks) >= 3 and toks[1].upper() == "AS" else None
            stages.append({"line": n, "image": image, "alias": alias, "ins": []})
        elif stages:
            stages[-1]["ins"].append((n, word, rest))
        else:
            if word != "ARG":
                fail(f"{df}:{n}", f"{word} before the first FROM")
    if len(stages) < 2:
        fail(str(df), "must be multi-stage (a builder and a runtime stage)")
        return
    aliases = set()
    for s in stages:
        if s["image"] not in aliases:
            name, tag, digest = split_image(s["image"])
            if "$" in s["image"]:
                fail(f"{df}:{s['line']}", f"base image {s['image']} uses a build argument: pin it literally")
            elif not digest and (not tag or tag == "latest"):
                fail(f"{df}:{s['line']}", f"base image {s['image']} is not pinned (no tag, or latest)")
        if s["alias"]:
            aliases.add(s["alias"])
    builder, final = stages[0], stages[-1]
    if "rust" not in split_image(builder["image"])[0]:
        fail(f"{df}:{builder['line']}", f"the builder stage should be the official rust image, got {builder['image']}")
    if "rust" in split_image(final["image"])[0]:
        fail(f"{df}:{final['line']}", "the runtime stage must not be the Rust toolchain image")
    all_runs = " ".join(r for s in stages for _, w, r in s["ins"] if w == "RUN")
    if not re.search(r"cargo build\b[^&;]*--release", all_runs) or "--locked" not in all_runs:
        fail(str(df), "the agent must be built with `cargo build --release --locked`")
    if "wasm32-wasip2" not in all_runs:
        fail(str(df), "the builder needs the wasm32-wasip2 target (the embedded decoders)")
    final_runs = " ".join(r for _, w, r in final["ins"] if w == "RUN")
    if "libpcap0.8" not in final_runs:
        fail(str(df), "the runtime stage must install libpcap0.8")
    if re.search(r"\b(libpcap-dev|build-essential|gcc|cargo)\b", final_runs):
        fail(str(df), "the runtime stage installs build tools")
    users = [(n, r) for n, w, r in final["ins"] if w == "USER"]
    if not users:
        fail(str(df), "the runtime stage has no USER (it would run as root)")
    else:
        n, user = users[-1]
        uid = user.split(":")[0]
        if uid in ("0", "root") or not uid.isdigit():
            fail(f"{df}:{n}", f"USER {user}: a numeric non-root uid is expected (runAsNonRoot checks numbers)")
        else:
            for rel, o, ps, c, mode in agents:
                want = (c.get("securityContext") or {}).get("runAsUser", (ps.get("securityContext") or {}).get("runAsUser"))
                if want is not None and str(want) != uid:
                    fail(f"{rel} {o['kind']}/{o['metadata']['name']}",
                         f"runAsUser {want} differs from the image's USER {uid} (owner of its cache directory)")
    ep = [r for _, w, r in final["ins"] if w == "ENTRYPOINT"]
    try:
        if not ep or json.loads(ep[-1]) != ["/usr/local/bin/wasmtap"]:
            fail(str(df), 'ENTRYPOINT ["/usr/local/bin/wasmtap"] expected (exec form)')
    except ValueError:
        fail(str(df), "ENTRYPOINT must use the exec (JSON) form")
    cmd = [r for _, w, r in final["ins"] if w == "CMD"]
    try:
        if not cmd or json.loads(cmd[-1])[:1] != ["run"]:
            fail(str(df), 'CMD ["run", ...] expected (exec form)')
    except ValueError:
        fail(str(df), "CMD must use the exec (JSON) form")
    # File capabilities: exec fails (EPERM) if the binary's permitted file
    # capabilities are not all in the container's bounding set.
    file_caps = set()
    for m in re.finditer(r"setcap\s+(?:-\S+\s+)*['\"]?([a-z_,]+)\s*[=+]([a-z]*)", all_runs):
        file_caps |= {x.strip().upper().removeprefix("CAP_") for x in m.group(1).split(",")}
    if "NET_RAW" not in file_caps:
        fail(str(df), "the binary needs the file capability cap_net_raw (the non-root agent opens packet sockets)")
    for rel, o, ps, c, mode in agents:
        added = set(((c.get("securityContext") or {}).get("capabilities") or {}).get("add") or [])
        missing = file_caps - added
        if missing:
            fail(f"{rel} {o['kind']}/{o['metadata']['name']}",
                 f"the image's file capabilities {sorted(file_caps)} include {sorted(missing)}, which this "
                 "container does not add: exec would fail with 'operation not permitted'")
    ignore = next((p for p in (deploy / "Dockerfile.dockerignore", deploy / ".dockerignore") if p.is_file()), None)
    if ignore is None:
        fail(str(deploy), "no Dockerfile.dockerignore (the context filter for deploy/Dockerfile)")
    else:
        pats = {l.strip().rstrip("/") for l in ignore.read_text().splitlines() if l.strip() and not l.startswith("#")}
        if not pats & {"target", "/target", "**/target"}:
            fail(str(ignore), "must exclude target/ from the build context")
        if ".git" not in pats:
            fail(str(ignore), "should exclude .git from the build context")
    if hadolint:
        r = subprocess.run([hadolint, "--no-color", "--failure-threshold", "info", str(df)],
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            fail(str(df), "hadolint:\n    " + (r.stdout + r.stderr).strip().replace("\n", "\n    "))
        else:
            note("hadolint: clean")
    else:
        note("hadolint: not installed here, skipped")


# ---------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("deploy_dir", type=Path)
    ap.add_argument("--kube-version", action="append", dest="versions",
                    help="Kubernetes version(s) to validate against (default 1.29.0 and 1.33.0)")
    ap.add_argument("--kustomize", default="auto",
                    help="auto (kubectl/kustomize when present), python (built-in only), or a command")
    ap.add_argument("--hadolint", default=shutil.which("hadolint"))
    a = ap.parse_args()
    deploy = a.deploy_dir.resolve()
    versions = a.versions or ["1.29.0", "1.33.0"]
    print(f"validate-deploy: {deploy}")
    if not deploy.is_dir():
        print(f"FAIL: {deploy} is not a directory")
        return 2
    check_yaml_parses(deploy)
    rendered = render_all(deploy / "kubernetes" if (deploy / "kubernetes").is_dir() else deploy, a.kustomize)
    check_schemas(rendered, versions)
    note(f"schemas: Kubernetes {', '.join(versions)} (strict)")
    agents = check_policy(rendered, deploy)
    check_configs(rendered)
    check_dockerfile(deploy, agents, a.hadolint)
    note("agents: " + ", ".join(f"{rel} {o['kind']}/{o['metadata']['name']} ({m})" for rel, o, _, _, m in agents))
    if FAILURES:
        for f in FAILURES:
            print(f"FAIL: {f}")
        print(f"validate-deploy: {len(FAILURES)} problem(s) in {deploy}")
        return 1
    print("validate-deploy: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
