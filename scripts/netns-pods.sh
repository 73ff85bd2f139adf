#!/usr/bin/env bash
# Stand-in "pods" for the mode tests: three network namespaces on one bridge,
# like pods on a node. Namespace wt<TAG>{a,b,c}, pod interface eth0 in each
# (10.77.<NET>.1, .2, .3), host-side veths wt<TAG>h{a,b,c} on bridge wt<TAG>br.
# Usage: scripts/netns-pods.sh up TAG NET | down TAG
set -euo pipefail
cmd=$1; tag=$2
case "$cmd" in
up)
  net=$3
  ip link add "wt${tag}br" type bridge
  ip link set "wt${tag}br" up
  i=1
  for p in a b c; do
    ns="wt${tag}${p}"
    ip netns add "$ns"
    ip link add "wt${tag}h${p}" type veth peer name eth0 netns "$ns"
    ip link set "wt${tag}h${p}" master "wt${tag}br" up
    ip netns exec "$ns" ip addr add "10.77.${net}.${i}/24" dev eth0
    ip netns exec "$ns" ip link set eth0 up
    ip netns exec "$ns" ip link set lo up
    i=$((i + 1))
  done
  ;;
down)
  for p in a b c; do ip netns del "wt${tag}${p}" 2>/dev/null || true; done
  ip link del "wt${tag}br" 2>/dev/null || true
  ;;
esac
