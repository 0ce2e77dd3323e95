#!/usr/bin/env bash
# Regenerate the duplicated captures in pcaps/dedup/ from real programs: curl
# against Python's http.server and dig against dnsmasq, recorded twice at the
# same time by tcpdump:
#   - on Linux's `any` device of a middle namespace, where every packet is
#     captured once on the interface it came in by and once on the one it left
#     by (the duplicates wirebeat.dedup drops): <mode>_any.pcap (Linux cooked v2);
#   - on the server's own interface, where every packet is captured once: the
#     ground truth, <mode>_server.pcap (Ethernet).
# Two modes: `bridged` (the middle namespace bridges client and server: the two
# copies are the same IP packet) and `routed` (it routes between two subnets:
# the outgoing copy has its TTL one lower and another IPv4 checksum).
#
# Three namespaces of their own (wb-dd-client, wb-dd-mid, wb-dd-server), joined
# by veth pairs: no packet leaves them. Run as root; idempotent; everything is
# removed on exit, failure included. Needs iproute2, tcpdump, curl, dig
# (dnsutils), dnsmasq, python3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
c=wb-dd-client m=wb-dd-mid s=wb-dd-server
tmp=$(mktemp -d)
pids=()

cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    for ns in $c $m $s; do ip netns del $ns 2>/dev/null || true; rm -rf "/etc/netns/$ns"; done
    rm -rf "$tmp"
}
trap cleanup EXIT

setup() {   # $1: bridged | routed
    local mode=$1
    for ns in $c $m $s; do
        ip netns del $ns 2>/dev/null || true
        ip netns add $ns
        ip -n $ns link set lo up
        # Name lookups (http.server resolves its own address) stay inside: nothing answers there.
        mkdir -p /etc/netns/$ns
        echo 'nameserver 127.0.0.1' >/etc/netns/$ns/resolv.conf
    done
    ip link add veth-c type veth peer name mid-c
    ip link add veth-s type veth peer name mid-s
    ip link set veth-c netns $c
    ip link set mid-c netns $m
    ip link set veth-s netns $s
    ip link set mid-s netns $m
    # Offloads off: the captured segments are the ones on the wire.
    for pair in "$c veth-c" "$m mid-c" "$m mid-s" "$s veth-s"; do
        set -- $pair
        ip netns exec "$1" ethtool -K "$2" tso off gso off gro off tx off rx off >/dev/null 2>&1 || true
    done
    ip -n $c link set veth-c up
    ip -n $s link set veth-s up
    ip -n $m link set mid-c up
    ip -n $m link set mid-s up
    if [[ $mode == bridged ]]; then
        client=10.77.0.1 server=10.77.0.2
        ip -n $m link add br0 type bridge
        ip -n $m link set mid-c master br0
        ip -n $m link set mid-s master br0
        ip -n $m link set br0 up
        ip -n $c addr add $client/24 dev veth-c
        ip -n $s addr add $server/24 dev veth-s
    else
        client=10.77.1.1 server=10.77.2.1
        ip -n $c addr add $client/24 dev veth-c
        ip -n $s addr add $server/24 dev veth-s
        ip -n $m addr add 10.77.1.254/24 dev mid-c
        ip -n $m addr add 10.77.2.254/24 dev mid-s
        ip netns exec $m sysctl -qw net.ipv4.ip_forward=1
        ip -n $c route add default via 10.77.1.254
        ip -n $s route add default via 10.77.2.254
    fi
}

record() {  # $1: mode
    local mode=$1
    setup "$mode"
    mkdir -p "$tmp/www"
    printf 'hello from the server\n' >"$tmp/www/index.html"
    head -c 20000 /dev/zero | tr '\0' 'x' >"$tmp/www/big.txt"
    ip netns exec $s python3 -m http.server 80 --bind $server --directory "$tmp/www" \
        >"$tmp/http.log" 2>&1 &
    pids+=($!)
    ip netns exec $s dnsmasq --keep-in-foreground --user=root --pid-file="$tmp/dnsmasq.pid" \
        --no-resolv --no-hosts --bind-interfaces --listen-address=$server --port=53 \
        --host-record=www.example.com,192.0.2.10,2001:db8::10 --local=/example.com/ \
        >"$tmp/dnsmasq.log" 2>&1 &
    pids+=($!)
    ip netns exec $m tcpdump -i any -U -s 0 -w "$tmp/any.pcap" 'tcp port 80 or udp port 53' \
        2>"$tmp/tcpdump-any.log" &
    local any_pid=$!
    ip netns exec $s tcpdump -i veth-s -U -s 0 -w "$tmp/server.pcap" 'tcp port 80 or udp port 53' \
        2>"$tmp/tcpdump-server.log" &
    local server_pid=$!
    pids+=($any_pid $server_pid)
    for _ in $(seq 50); do     # both capturing and the server answering
        if grep -q listening "$tmp/tcpdump-any.log" && grep -q listening "$tmp/tcpdump-server.log" \
            && ip netns exec $c curl -s -o /dev/null --max-time 1 http://$server/index.html; then
            break
        fi
        sleep 0.2
    done
    sleep 0.5
    # The recorded traffic (the probe request above is in the captures too).
    for i in 1 2 3; do
        ip netns exec $c curl -s -o /dev/null http://$server/index.html
        ip netns exec $c dig +short +tries=1 +time=2 @$server www.example.com A >/dev/null
        ip netns exec $c dig +short +tries=1 +time=2 @$server www.example.com AAAA >/dev/null
    done
    ip netns exec $c curl -s -o /dev/null http://$server/big.txt
    ip netns exec $c curl -s -o /dev/null http://$server/missing
    ip netns exec $c dig +short +tries=1 +time=2 @$server nothing.example.com A >/dev/null || true
    sleep 1
    kill -INT $any_pid $server_pid
    wait $any_pid $server_pid 2>/dev/null || true
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    pids=()
    for ns in $c $m $s; do ip netns del $ns; done
    cp "$tmp/any.pcap" "$out/${mode}_any.pcap"
    cp "$tmp/server.pcap" "$out/${mode}_server.pcap"
}

record bridged
record routed
echo "wrote $out/{bridged,routed}_{any,server}.pcap"
