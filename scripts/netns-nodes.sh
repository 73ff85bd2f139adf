#!/usr/bin/env bash
# Stand-in "nodes" for the Kubernetes identity tests: two nodes, each a
# bridge (wt<TAG>b1, wt<TAG>b2: the node's pod network, 10.<NET>.<N>.0/24,
# the bridge itself .254) with three pod namespaces wt<TAG><N>{a,b,c} (eth0
# 10.<NET>.<N>.1, .2, .3, default route via .254; host-side veths
# wt<TAG>h<N>{a,b,c}). The root namespace routes between the two pod
# networks (forwarding is enabled on the two bridges only, nothing else on
# the machine changes) and holds 10.<NET>.99.1, an address outside the
# "cluster".
# Usage: scripts/netns-nodes.sh up TAG NET | down TAG
set -euo pipefail
cmd=$1; tag=$2
case "$cmd" in
up)
  net=$3
  for n in 1 2; do
    br="wt${tag}b${n}"
    ip link add "$br" type bridge
    ip addr add "10.${net}.${n}.254/24" dev "$br"
    ip link set "$br" up
    echo 1 > "/proc/sys/net/ipv4/conf/${br}/forwarding"
    i=1
    for p in a b c; do
      ns="wt${tag}${n}${p}"
      ip netns add "$ns"
      ip link add "wt${tag}h${n}${p}" type veth peer name eth0 netns "$ns"
      ip link set "wt${tag}h${n}${p}" master "$br" up
      ip netns exec "$ns" ip addr add "10.${net}.${n}.${i}/24" dev eth0
      ip netns exec "$ns" ip link set eth0 up
      ip netns exec "$ns" ip link set lo up
      ip netns exec "$ns" ip route add default via "10.${net}.${n}.254"
      i=$((i + 1))
    done
  done
  ip addr add "10.${net}.99.1/32" dev "wt${tag}b1"
  ;;
down)
  for n in 1 2; do
    for p in a b c; do ip netns del "wt${tag}${n}${p}" 2>/dev/null || true; done
    ip link del "wt${tag}b${n}" 2>/dev/null || true
  done
  ;;
esac
