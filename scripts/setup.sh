#!/usr/bin/env bash
# Installs what building and testing wasmtap needs, only when missing.
# Usage: scripts/setup.sh [--test]   (--test adds the tools the test suite drives)
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$1"); }
want libpcap-dev
want pkg-config
if [[ "${1:-}" == "--test" ]]; then
  want tshark
  want nginx-light
  want wrk
  want iproute2
  want bc
  want tcpdump
  # Real servers and clients the decoder tests drive (started by the tests, on loopback).
  want redis-server
  want redis-tools
  want memcached
  want postgresql
  want postgresql-contrib
  want mariadb-server
  want mariadb-client
  want dnsmasq-base
  # Prometheus (server and promtool): the alert rules and the scrape test.
  want prometheus
  # RabbitMQ: the AMQP decoder's real-broker test (a node of its own, started by the test).
  want rabbitmq-server
  want curl
  # openssl: s_server and s_client for the TLS handshake test.
  want openssl
  # h2load: many concurrent HTTP/2 streams against nginx.
  want nghttp2-client
  # Node.js and npm: JavaScript decoders (esbuild and componentize-js, pinned in the
  # template's package.json). Debian's, unless a node is already there.
  if ! command -v npm >/dev/null; then
    command -v node >/dev/null || want nodejs
    want npm
  fi
fi
if ((${#need_apt[@]})); then
  echo "setup: installing Debian packages: ${need_apt[*]}" >&2
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# The toolchain and wasm targets pinned in rust-toolchain.toml.
if ! rustup target list --installed 2>/dev/null | grep -q '^wasm32-wasip2$'; then
  echo "setup: adding rustup target wasm32-wasip2" >&2
  rustup target add wasm32-wasip2 >/dev/null
fi

if [[ "${1:-}" == "--test" ]]; then
  # rotel: an OpenTelemetry collector (Rust) from PyPI, for the end-to-end OTLP test.
  if ! command -v rotel >/dev/null 2>&1 && ! python3 -c 'import rotel' 2>/dev/null; then
    echo "setup: installing rotel from PyPI" >&2
    python3 -m pip install -q "rotel==0.0.1a15" >/dev/null 2>&1 || echo "setup: warning: rotel could not be installed" >&2
  fi
  # Python clients for the decoder tests.
  if ! python3 -c 'import pymysql, pymemcache' 2>/dev/null; then
    python3 -m pip install -q "PyMySQL==1.1.1" "pymemcache==4.0.0" >/dev/null 2>&1 || echo "setup: warning: python clients could not be installed" >&2
  fi
  # kafka-python: its client protocol and response structs make the Kafka traffic of scripts/kafka_peer.py.
  if ! python3 -c 'import kafka' 2>/dev/null; then
    python3 -m pip install -q "kafka-python==2.2.15" >/dev/null 2>&1 || echo "setup: warning: kafka-python could not be installed" >&2
  fi
  # grpcio: the gRPC server and client of scripts/grpc_peer.py.
  if ! python3 -c 'import grpc' 2>/dev/null; then
    python3 -m pip install -q "grpcio==1.68.1" >/dev/null 2>&1 || echo "setup: warning: grpcio could not be installed" >&2
  fi
  # pika: the AMQP client of scripts/amqp_peer.py.
  if ! python3 -c 'import pika' 2>/dev/null; then
    python3 -m pip install -q "pika==1.3.2" >/dev/null 2>&1 || echo "setup: warning: pika could not be installed" >&2
  fi
  # pyiso8583: encodes and decodes the ISO 8583 messages of scripts/iso8583_peer.py.
  if ! python3 -c 'import iso8583' 2>/dev/null; then
    python3 -m pip install -q "pyiso8583==4.0.1" >/dev/null 2>&1 || echo "setup: warning: pyiso8583 could not be installed" >&2
  fi
  # componentize-py: builds Python decoders (`wasmtap plugin build`; the
  # version the agent pins, which it would install itself when missing).
  if [[ "$(componentize-py --version 2>/dev/null)" != "componentize-py 0.25.1" ]]; then
    python3 -m pip install -q "componentize-py==0.25.1" >/dev/null 2>&1 || echo "setup: warning: componentize-py could not be installed" >&2
  fi
fi
