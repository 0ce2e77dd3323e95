#!/usr/bin/env bash
# Regenerate pcaps/tunnels/vxlan.pcap from real programs: Linux's own vxlan
# device between two network namespaces, carrying ping, a DNS query (dig ->
# dnsmasq) and an HTTP fetch (curl -> python3 -m http.server). tcpdump records
# the underlay, so the file holds the encapsulated frames. See README.md.
#
# Underlay: veth wl-ua (192.168.60.1, 02:00:00:60:00:01) <-> wl-ub
# (192.168.60.2, 02:00:00:60:00:02). Overlay: vxlan0, VNI 42, UDP 4789;
# 10.60.0.1 (02:00:00:60:01:01) and 10.60.0.2 (02:00:00:60:01:02).
# IPv6 is off. Run as root; leftovers are removed first, and everything is
# removed on exit. Needs iproute2 (with the vxlan module), dnsmasq, dig, curl,
# python3, tcpdump; tshark (optional) prints a summary.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out="$here/vxlan.pcap"
tmp=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    ip netns del wl-ta 2>/dev/null || true
    ip netns del wl-tb 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
ip netns del wl-ta 2>/dev/null || true
ip netns del wl-tb 2>/dev/null || true

ip netns add wl-ta
ip netns add wl-tb
ip link add wl-ua netns wl-ta address 02:00:00:60:00:01 type veth \
    peer name wl-ub netns wl-tb address 02:00:00:60:00:02
n=1
for ns in wl-ta wl-tb; do
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
    dev=$([[ $ns == wl-ta ]] && echo wl-ua || echo wl-ub)
    other=$((3 - n))
    ip -n "$ns" addr add "192.168.60.$n/24" dev "$dev"
    ip -n "$ns" link set "$dev" up
    ip -n "$ns" link add vxlan0 address "02:00:00:60:01:0$n" type vxlan id 42 dstport 4789 \
        local "192.168.60.$n" remote "192.168.60.$other" dev "$dev"
    ip -n "$ns" addr add "10.60.0.$n/24" dev vxlan0
    ip -n "$ns" link set vxlan0 up
    n=$((n + 1))
done

ip netns exec wl-tb dnsmasq --keep-in-foreground --log-facility=- --user=root --no-resolv \
    --no-hosts --bind-interfaces --listen-address=10.60.0.2 --address=/overlay.example/10.60.0.2 \
    --pid-file="$tmp/dnsmasq.pid" >"$tmp/dnsmasq.log" 2>&1 &
pids+=($!)
mkdir -p "$tmp/www" && echo "inside the tunnel" >"$tmp/www/index.html"
ip netns exec wl-tb python3 -m http.server 80 --bind 10.60.0.2 --directory "$tmp/www" \
    >"$tmp/http.log" 2>&1 &
pids+=($!)
sleep 1

ip netns exec wl-ta tcpdump -i wl-ua -n -U --immediate-mode -Z root -s 0 -w "$tmp/raw.pcap" \
    'udp port 4789' 2>"$tmp/tcpdump.log" &
tcpdump_pid=$!
pids+=("$tcpdump_pid")
for _ in $(seq 50); do grep -q "listening on" "$tmp/tcpdump.log" && break; sleep 0.1; done
grep -q "listening on" "$tmp/tcpdump.log" || { cat "$tmp/tcpdump.log" >&2; exit 1; }
sleep 0.3

ip netns exec wl-ta ping -c 3 -i 0.2 -q 10.60.0.2 >/dev/null
ip netns exec wl-ta dig +short +tries=1 @10.60.0.2 overlay.example A >/dev/null
ip netns exec wl-ta curl -s -o /dev/null http://10.60.0.2/index.html
sleep 0.5
kill "$tcpdump_pid"; wait "$tcpdump_pid" 2>/dev/null || true
cp "$tmp/raw.pcap" "$out"
echo "wrote $out"
if command -v tshark >/dev/null; then
    tshark -r "$out" -T fields -e frame.protocols 2>/dev/null | sort | uniq -c
fi
