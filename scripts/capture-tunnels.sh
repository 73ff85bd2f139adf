#!/usr/bin/env bash
# Captures real tunnelled HTTP traffic twice per tunnel kind: on the underlay (the
# encapsulated packets, outer headers) and on the tunnel device (the unwrapped
# packets), so a test can check that decapsulating the first gives the exchanges
# of the second.
# Usage: scripts/capture-tunnels.sh OUT_DIR [REQUESTS=20]
#   KINDS="gretap vxlan" picks kinds (default: gretap gre erspan erspan3 vxlan geneve)
#   EMULATE=1: a kind this kernel lacks is carried by a small userspace
#     encapsulator (TAP/TUN device + raw GRE socket or UDP socket) writing the
#     same wire format, instead of being reported unsupported.
# For each kind: namespaces wtt<pid><n>a (client) and wtt<pid><n>b (server), veth
# u0 between them (10.98.0.1/24, 10.98.0.2/24, MTU 1500), tunnel device t0 in each
# (192.168.98.1 and .2, /24; /30 for layer-3 gre; MTU 1400), Debian's nginx on
# 192.168.98.2:8080 in b, curl from a: REQUESTS x GET / (200), 3 x /missing (404),
# 2 x /fail (500), one connection each; then ISO 8583 card payments
# (scripts/iso8583_peer.py, pyiso8583: ISO exchanges, default 20, on 2 pipelined
# connections, 2-byte length framing, binary bitmaps) to 192.168.98.2:8583, the
# client's log in OUT_DIR/<kind>.iso8583.log.jsonl. In b, tcpdump writes
#   OUT_DIR/<kind>.outer.pcap  (on u0: the tunnel packets)
#   OUT_DIR/<kind>.inner.pcap  (on t0: the unwrapped packets)
# and OUT_DIR/<kind>.expect.json holds {"server", "encap", "exchanges": {"GET /path
# STATUS": count}}. Transmit checksum offload is off on u0 and t0 (checksums in the
# captures are final). IPv6 is off in the namespaces (no ND/MLD noise); ARP remains
# in the inner captures of the Ethernet kinds.
# Prints one line per kind: "<kind> <requests_total> <outer_packets> <inner_packets>",
# or "<kind> unsupported <reason>" / "<kind> failed <reason>".
# Exits 0 only if gretap, vxlan and geneve (those of them in KINDS) worked.
# Needs root, ip, tcpdump, curl, nginx, python3 with pyiso8583. Only namespaces and links it
# creates are touched; all are removed at the end.
set -euo pipefail
out=${1:?usage: capture-tunnels.sh OUT_DIR [REQUESTS=20]}; n=${2:-20}; iso=${ISO:-20}
kinds=${KINDS:-gretap gre erspan erspan3 vxlan geneve}
emulate=${EMULATE:-0}
here=$(cd "$(dirname "$0")" && pwd)
for t in ip tcpdump curl nginx python3; do
  command -v $t >/dev/null || { echo "capture-tunnels: $t missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
[[ $(id -u) -eq 0 ]] || { echo "capture-tunnels: needs root (network namespaces)" >&2; exit 1; }
mkdir -p "$out"; out=$(cd "$out" && pwd)
dir=$(mktemp -d /tmp/wasmtap-tunnels.XXXXXX)
chmod 755 "$dir"
tag="wtt$$"
A_UL=10.98.0.1; B_UL=10.98.0.2; A_IN=192.168.98.1; B_IN=192.168.98.2; PORT=8080
MISSING=3; FAIL=2

# Userspace encapsulator for EMULATE=1: owns the TAP (TUN for gre) device t0 and
# carries its frames to the peer in the kind's wire format, as the kernel would.
cat > "$dir/encap.py" <<'PY'
import fcntl, os, select, socket, struct, sys, time
kind, dev, local, remote = sys.argv[1:5]
KEY, ERSPAN_INDEX, HWID = 42, 123, 17
IFF_TUN, IFF_TAP, IFF_NO_PI, TUNSETIFF = 0x1, 0x2, 0x1000, 0x400454CA
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", dev.encode(), (IFF_TUN if kind == "gre" else IFF_TAP) | IFF_NO_PI))
if kind == "geneve":
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((local, 6081))
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 47)  # IPPROTO_GRE; we get the IP header on receive
    s.bind((local, 0))
seq = 0

def wrap(frame):
    global seq
    if kind == "geneve":  # ver 0, no options, protocol Transparent Ethernet Bridging, VNI 42
        return struct.pack("!BBHI", 0, 0, 0x6558, KEY << 8) + frame
    seq = (seq + 1) & 0xFFFFFFFF
    if kind == "gretap":  # K and S flags, key 42
        return struct.pack("!HHII", 0x3000, 0x6558, KEY, seq) + frame
    if kind == "gre":  # plain GRE, inner IPv4 or IPv6
        return struct.pack("!HH", 0, 0x86DD if frame[0] >> 4 == 6 else 0x0800) + frame
    if kind == "erspan":  # GRE S flag, 0x88BE, ERSPAN II: ver 1, session = key, index 123
        return struct.pack("!HHI", 0x1000, 0x88BE, seq) + struct.pack(
            "!II", (1 << 28) | (KEY & 0x3FF), ERSPAN_INDEX & 0xFFFFF) + frame
    # erspan3: GRE S flag, 0x22EB, ERSPAN III: ver 2, session = key, 100us timestamp,
    # P=1, hwid 17, direction ingress, granularity 0, no platform subheader
    ts = int(time.time() * 10000) & 0xFFFFFFFF
    return struct.pack("!HHI", 0x1000, 0x22EB, seq) + struct.pack(
        "!III", (2 << 28) | (KEY & 0x3FF), ts, (1 << 15) | (HWID << 4)) + frame

def unwrap(pkt):
    if kind == "geneve":
        optlen = (pkt[0] & 0x3F) * 4
        return pkt[8 + optlen:] if len(pkt) >= 8 and struct.unpack("!H", pkt[2:4])[0] == 0x6558 else None
    pkt = pkt[(pkt[0] & 0x0F) * 4:]  # drop the outer IPv4 header
    flags, proto = struct.unpack("!HH", pkt[:4])
    off = 4 + 4 * bool(flags & 0x8000) + 4 * bool(flags & 0x2000) + 4 * bool(flags & 0x1000)
    want = {"gretap": 0x6558, "gre": None, "erspan": 0x88BE, "erspan3": 0x22EB}[kind]
    if want is not None and proto != want:
        return None
    if kind == "erspan":
        off += 8
    elif kind == "erspan3":
        off += 12 + (8 if pkt[off + 11] & 1 else 0)
    return pkt[off:]

print("ready", flush=True)
while True:
    r, _, _ = select.select([fd, s], [], [])
    if fd in r:
        frame = os.read(fd, 65535)
        s.sendto(wrap(frame), (remote, 6081 if kind == "geneve" else 0))
    if s in r:
        pkt, src = s.recvfrom(65535)
        if src[0] == remote:
            inner = unwrap(pkt)
            if inner:
                os.write(fd, inner)
PY

# Turns transmit checksum offload off on the given devices (ethtool -K DEV tx off,
# without needing ethtool), so captures hold finished checksums rather than the
# partial ones of an offloaded transmit.
cat > "$dir/txcsum.py" <<'PY'
import array, fcntl, socket, struct, sys
SIOCETHTOOL, ETHTOOL_STXCSUM = 0x8946, 0x17
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for dev in sys.argv[1:]:
    ev = array.array("I", [ETHTOOL_STXCSUM, 0])
    fcntl.ioctl(s.fileno(), SIOCETHTOOL, struct.pack("16sP", dev.encode(), ev.buffer_info()[0]).ljust(40, b"\0"))
PY

pids=()          # processes started for the current kind (in its subshell)
cur_ns=()        # namespaces of the current kind
teardown() {
  local p
  [[ -f $dir/nginx/nginx.pid ]] && kill "$(cat "$dir/nginx/nginx.pid")" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
  for p in "${cur_ns[@]}"; do ip netns del "$p" 2>/dev/null || true; done
  cur_ns=()
}
cleanup() {
  local ns
  # Safety net: namespaces of this run that a killed subshell left behind.
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E "^${tag}[0-9]+[ab]$" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$dir"
}
trap cleanup EXIT

# ip link arguments of tunnel t0 for KIND, seen from LOCAL towards REMOTE.
tunnel_args() {
  local kind=$1 l=$2 r=$3
  case $kind in
    gretap)  echo "type gretap local $l remote $r ikey 42 okey 42 iseq oseq" ;;
    gre)     echo "type gre local $l remote $r" ;;
    erspan)  echo "type erspan local $l remote $r seq key 42 erspan_ver 1 erspan 123" ;;
    erspan3) echo "type erspan local $l remote $r seq key 42 erspan_ver 2 erspan_dir ingress erspan_hwid 17" ;;
    vxlan)   echo "type vxlan id 42 dstport 4789 remote $r local $l dev u0" ;;
    geneve)  echo "type geneve id 42 remote $r" ;;
  esac
}

# Number of packets in a capture (tcpdump -r prints two lines for some encapsulations).
count_packets() {
  if command -v capinfos >/dev/null; then capinfos -T -r -c -M "$1" | cut -f2
  else python3 -c 'import struct,sys
d=open(sys.argv[1],"rb").read(); e="<" if d[:4]==b"\xd4\xc3\xb2\xa1" or d[:4]==b"\x4d\x3c\xb2\xa1" else ">"
o=24; c=0
while o+16<=len(d): o+=16+struct.unpack(e+"I",d[o+8:o+12])[0]; c+=1
print(c)' "$1"
  fi
}

# Waits until tcpdump (stderr in LOG) says it is listening.
wait_listening() {
  local log=$1 pid=$2
  for _ in $(seq 200); do
    grep -q "listening on" "$log" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || return 1
    sleep 0.05
  done
  return 1
}

# Runs one kind; prints its line; returns 0 if it worked, 1 if failed, 2 if unsupported.
run_kind() {
  local kind=$1 idx=$2
  local a="${tag}${idx}a" b="${tag}${idx}b" encap=kernel err
  local -a args
  ip netns add "$a"; cur_ns+=("$a")
  ip netns add "$b"; cur_ns+=("$b")
  for ns in "$a" "$b"; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
  done
  ip -n "$a" link add u0 type veth peer name u0 netns "$b"
  ip -n "$a" addr add "$A_UL/24" dev u0; ip -n "$a" link set u0 up
  ip -n "$b" addr add "$B_UL/24" dev u0; ip -n "$b" link set u0 up

  read -r -a args <<< "$(tunnel_args "$kind" "$A_UL" "$B_UL")"
  if ! err=$(ip -n "$a" link add t0 "${args[@]}" 2>&1); then
    if [[ $emulate != 1 ]]; then
      echo "$kind unsupported ip link add t0 ${args[*]}: ${err//$'\n'/ }"
      teardown; return 2
    fi
    encap=userspace
    echo "capture-tunnels: $kind: kernel says '${err//$'\n'/ }'; using the userspace encapsulator" >&2
    local ns l r
    for ns in "$a" "$b"; do
      if [[ $ns == "$a" ]]; then l=$A_UL; r=$B_UL; else l=$B_UL; r=$A_UL; fi
      ip netns exec "$ns" python3 "$dir/encap.py" "$kind" t0 "$l" "$r" > "$dir/encap-$ns.log" 2>&1 &
      pids+=($!)
      for _ in $(seq 100); do ip -n "$ns" link show t0 >/dev/null 2>&1 && break; sleep 0.05; done
      ip -n "$ns" link show t0 >/dev/null 2>&1 || { echo "$kind failed userspace encapsulator did not start: $(tr '\n' ' ' < "$dir/encap-$ns.log")"; teardown; return 1; }
    done
  else
    read -r -a args <<< "$(tunnel_args "$kind" "$B_UL" "$A_UL")"
    if ! err=$(ip -n "$b" link add t0 "${args[@]}" 2>&1); then
      echo "$kind unsupported ${err//$'\n'/ }"; teardown; return 2
    fi
  fi
  local mask=24; [[ $kind == gre ]] && mask=30
  ip -n "$a" link set t0 mtu 1400; ip -n "$a" addr add "$A_IN/$mask" dev t0; ip -n "$a" link set t0 up
  ip -n "$b" link set t0 mtu 1400; ip -n "$b" addr add "$B_IN/$mask" dev t0; ip -n "$b" link set t0 up

  for ns in "$a" "$b"; do
    ip netns exec "$ns" python3 "$dir/txcsum.py" u0 t0 2>/dev/null ||
      echo "capture-tunnels: $kind: could not turn tx checksum offload off in $ns; captures may show partial checksums" >&2
  done

  rm -rf "$dir/nginx"
  ip netns exec "$b" env LISTEN="$B_IN:$PORT" "$here/nginx-serve.sh" start "$dir/nginx" >/dev/null
  for _ in $(seq 100); do [[ -s $dir/nginx/nginx.pid ]] && break; sleep 0.05; done

  local outer="$out/$kind.outer.pcap" inner="$out/$kind.inner.pcap" op ip_
  rm -f "$outer" "$inner"
  ip netns exec "$b" tcpdump -n -U --immediate-mode -Z root -i u0 -w "$outer" 2> "$dir/outer.log" &
  op=$!; pids+=("$op")
  ip netns exec "$b" tcpdump -n -U --immediate-mode -Z root -i t0 -w "$inner" 2> "$dir/inner.log" &
  ip_=$!; pids+=("$ip_")
  if ! wait_listening "$dir/outer.log" "$op" || ! wait_listening "$dir/inner.log" "$ip_"; then
    echo "$kind failed tcpdump did not start: $(tr '\n' ' ' < "$dir/outer.log") $(tr '\n' ' ' < "$dir/inner.log")"
    teardown; return 1
  fi
  sleep 0.2

  local bad="" code path want i total=0 ok200=0 ok404=0 ok500=0
  for ((i = 0; i < n + MISSING + FAIL; i++)); do
    if ((i < n)); then path=/; want=200
    elif ((i < n + MISSING)); then path=/missing; want=404
    else path=/fail; want=500; fi
    code=$(ip netns exec "$a" curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$B_IN:$PORT$path" || true)
    total=$((total + 1))
    if [[ $code != "$want" ]]; then bad+="GET $path got ${code:-nothing} want $want; "
    else case $want in 200) ok200=$((ok200 + 1));; 404) ok404=$((ok404 + 1));; 500) ok500=$((ok500 + 1));; esac
    fi
  done
  # Card payments through the same tunnel.
  local iso_log="$out/$kind.iso8583.log.jsonl" isp
  rm -f "$iso_log"
  ip netns exec "$b" env PEER_HOST="$B_IN" python3 "$here/iso8583_peer.py" server 8583 bin2 binary \
    2> "$dir/iso-server.log" &
  isp=$!; pids+=("$isp")
  for _ in $(seq 100); do
    # Listening? (asked of the kernel: a probe connection would be captured)
    ip netns exec "$b" ss -Hltn "sport = :8583" 2>/dev/null | grep -q . && break
    sleep 0.05
  done
  if ! ip netns exec "$a" env PEER_HOST="$B_IN" timeout 60 python3 "$here/iso8583_peer.py" client 8583 bin2 binary \
      "$iso_log" 2 "$iso" 7 2> "$dir/iso-client.log"; then
    bad+="ISO 8583 client failed: $(tr '\n' ' ' < "$dir/iso-client.log") $(tr '\n' ' ' < "$dir/iso-server.log"); "
  fi
  sleep 1
  kill -INT "$op" "$ip_" 2>/dev/null || true
  wait "$op" 2>/dev/null || true; wait "$ip_" 2>/dev/null || true
  local log drops
  for log in outer inner; do
    drops=$(sed -n 's/^\([0-9]*\) packets\{0,1\} dropped by kernel.*/\1/p' "$dir/$log.log")
    [[ ${drops:-0} -eq 0 ]] || bad+="$log capture: $drops packets dropped by kernel; "
  done
  ip netns exec "$b" "$here/nginx-serve.sh" stop "$dir/nginx"
  for _ in $(seq 50); do [[ -f $dir/nginx/nginx.pid ]] || break; sleep 0.05; done
  teardown

  cat > "$out/$kind.expect.json" <<JSON
{"server": "$B_IN:$PORT", "encap": "$encap", "exchanges": {"GET / 200": $ok200, "GET /missing 404": $ok404, "GET /fail 500": $ok500}}
JSON
  local no ni
  no=$(count_packets "$outer"); ni=$(count_packets "$inner")
  # Every request's connection must be in the inner capture, from its SYN on.
  local syns
  syns=$(tcpdump -nr "$inner" 'tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn' 2>/dev/null | wc -l)
  # (curl's connections and the ISO 8583 client's two)
  [[ $syns -eq $((total + 2)) ]] || bad+="inner capture has $syns connection openings, want $((total + 2)); "
  if [[ -n $bad ]]; then echo "$kind failed $bad"; return 1; fi
  echo "$kind $total $no $ni"
}

declare -A result
stop=0; sub=
# INT/TERM: stop the kind being run (its subshell tears its namespaces down) and skip the rest.
on_signal() { stop=1; [[ -n $sub ]] && kill -TERM "$sub" 2>/dev/null || true; }
trap on_signal INT TERM
idx=0
for kind in $kinds; do
  ((stop == 0)) || break
  case $kind in gretap|gre|erspan|erspan3|vxlan|geneve) ;; *) echo "$kind unsupported unknown kind"; continue;; esac
  idx=$((idx + 1))
  (
    set -e
    trap teardown EXIT; trap 'exit 143' TERM
    run_kind "$kind" "$idx"
  ) > "$dir/line" &
  sub=$!
  rc=0; wait "$sub" || rc=$?
  while kill -0 "$sub" 2>/dev/null; do rc=0; wait "$sub" || rc=$?; done
  sub=
  line=$(cat "$dir/line")
  if [[ -z $line ]]; then
    if ((stop)); then line="$kind failed interrupted"; else line="$kind failed setup error (exit $rc, see stderr)"; fi
    rc=1
  fi
  echo "$line"
  result[$kind]=$rc
done
((stop == 0)) || { echo "capture-tunnels: interrupted" >&2; exit 130; }
status=0
for k in gretap vxlan geneve; do
  [[ " $kinds " == *" $k "* ]] || continue
  [[ ${result[$k]:-1} -eq 0 ]] || status=1
done
exit $status
