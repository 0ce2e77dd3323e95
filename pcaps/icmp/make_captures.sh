#!/usr/bin/env bash
# Regenerate pcaps/icmp/ping.pcap from real programs (ping, the kernel, tcpdump).
#
# Two network namespaces joined by a veth pair; tcpdump records on the veth end
# in namespace A (Ethernet linktype). Traffic, all from A:
#   - ping -c 4 to B over IPv4 and IPv6 (all answered);
#   - ping to an address with a permanent static neighbour entry whose MAC is
#     nobody's, so the requests leave but B's kernel drops them (unanswered);
#   - one UDP datagram to a closed port of B, over IPv4 and over IPv6, which B
#     answers with ICMP/ICMPv6 port unreachable.
# The capture filter keeps those ICMP messages and the UDP probes, and leaves out
# ARP and neighbour discovery / MLD, so the counts below are exact every run.
#
# Run as root. Idempotent: leftovers from an earlier run are removed first, and
# the namespaces are removed on exit, failure included. Needs iproute2, iputils
# ping, tcpdump; tshark (optional) verifies the result.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out="$here/ping.pcap"
ns_a=wirebeat-icmp-a
ns_b=wirebeat-icmp-b
a4=10.99.0.1   b4=10.99.0.2   ghost4=10.99.0.99
a6=fd00:99::1  b6=fd00:99::2  ghost6=fd00:99::99
ghost_mac=02:00:00:99:00:99            # no interface has it: nothing will answer

# Expected contents; checked with tshark at the end.
answered=4 unanswered4=3 unanswered6=2

tmp=$(mktemp -d)
tcpdump_pid=

remove_namespaces() {
    ip netns del "$ns_a" 2>/dev/null || true
    ip netns del "$ns_b" 2>/dev/null || true
}
cleanup() {
    if [[ -n $tcpdump_pid ]] && kill -0 "$tcpdump_pid" 2>/dev/null; then
        kill "$tcpdump_pid" 2>/dev/null || true
        wait "$tcpdump_pid" 2>/dev/null || true
    fi
    remove_namespaces
    rm -rf "$tmp"
}
trap cleanup EXIT
remove_namespaces                      # leftovers of an interrupted earlier run

in_a() { ip netns exec "$ns_a" "$@"; }

for ns in "$ns_a" "$ns_b"; do
    ip netns add "$ns"
    # Before the veth exists, so it inherits these defaults: no DAD (also for
    # the link-local address, else neighbour discovery stalls the first pings
    # for a second) and no router solicitations.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.accept_dad=0 \
        net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.default.router_solicitations=0
    ip -n "$ns" link set lo up
done
ip link add veth-a netns "$ns_a" address 02:00:00:99:00:01 type veth \
    peer name veth-b netns "$ns_b" address 02:00:00:99:00:02
ip -n "$ns_a" addr add "$a4/24" dev veth-a
ip -n "$ns_a" addr add "$a6/64" dev veth-a nodad
ip -n "$ns_b" addr add "$b4/24" dev veth-b
ip -n "$ns_b" addr add "$b6/64" dev veth-b nodad
ip -n "$ns_a" link set veth-a up
ip -n "$ns_b" link set veth-b up
# A new veth's carrier comes up through linkwatch, up to a second later; until
# then its packets are dropped and the first pings would be answered late. The
# link-local address appears once IPv6 sees the carrier: wait for it.
for _ in $(seq 50); do
    ip -n "$ns_a" -6 addr show dev veth-a scope link | grep -q fe80 \
        && ip -n "$ns_b" -6 addr show dev veth-b scope link | grep -q fe80 && break
    sleep 0.1
done
ip -n "$ns_a" neigh replace "$ghost4" lladdr "$ghost_mac" dev veth-a nud permanent
ip -n "$ns_a" neigh replace "$ghost6" lladdr "$ghost_mac" dev veth-a nud permanent

# ICMPv4 echo/unreachable; ICMPv6 with no extension header and type 1-129
# (errors and echo: ip6[40] is the ICMPv6 type); the UDP probes to port 9.
filter='icmp[icmptype] == icmp-echo or icmp[icmptype] == icmp-echoreply
        or icmp[icmptype] == icmp-unreach
        or (ip6 and ip6[6] == 58 and (ip6[40] == 1 or ip6[40] == 128 or ip6[40] == 129))
        or (udp and dst port 9)'
# -Z root: Debian's tcpdump would otherwise switch to user tcpdump and be unable
# to write into $tmp. --immediate-mode: without it libpcap hands packets over
# in blocks (up to 1 s late) and those still in the kernel's block when tcpdump
# is stopped are lost; -U: write each packet out at once.
# Started without the in_a function so that $! is tcpdump itself (ip netns
# exec execs it), not a subshell.
ip netns exec "$ns_a" tcpdump -i veth-a -n --immediate-mode -U -Z root \
    -w "$tmp/ping.pcap" "$filter" 2>"$tmp/tcpdump.log" &
tcpdump_pid=$!
for _ in $(seq 50); do                # wait until tcpdump really listens
    grep -q "listening on" "$tmp/tcpdump.log" && break
    sleep 0.1
done
grep -q "listening on" "$tmp/tcpdump.log" || { cat "$tmp/tcpdump.log" >&2; exit 1; }

in_a ping -n -q -c "$answered" -i 0.2 "$b4"
in_a ping -6 -n -q -c "$answered" -i 0.2 "$b6"
# Unanswered: ping exits 1 when no reply came, which is the point here.
in_a ping -n -q -c "$unanswered4" -i 0.2 -W 1 "$ghost4" || true
in_a ping -6 -n -q -c "$unanswered6" -i 0.2 -W 1 "$ghost6" || true
# Port 9 (discard) is closed in B: its kernel answers with port unreachable.
in_a bash -c "echo probe > /dev/udp/$b4/9"
in_a bash -c "echo probe > /dev/udp/$b6/9"
sleep 0.5                              # let the last replies arrive

# SIGTERM, not SIGINT: a non-interactive shell starts background jobs with
# SIGINT ignored. tcpdump flushes and closes the file on either.
kill -TERM "$tcpdump_pid"
wait "$tcpdump_pid" || true
tcpdump_pid=
mv "$tmp/ping.pcap" "$out.tmp"
mv "$out.tmp" "$out"
echo "wrote $out ($(stat -c %s "$out") bytes)"

if ! command -v tshark >/dev/null; then
    echo "tshark not installed: contents not verified" >&2
    exit 0
fi
count() { tshark -n -r "$out" -Y "$1" 2>/dev/null | wc -l; }
check() {      # check LABEL FILTER EXPECTED
    local got
    got=$(count "$2")
    printf '%-28s %3s (expected %s)\n' "$1" "$got" "$3"
    [[ $got -eq $3 ]] || { echo "unexpected count for: $1" >&2; exit 1; }
}
check "IPv4 echo request"          "icmp.type == 8"                $((answered + unanswered4))
check "IPv4 echo reply"            "icmp.type == 0"                "$answered"
check "IPv4 unanswered request"    "icmp.type == 8 && ip.dst == $ghost4" "$unanswered4"
check "IPv4 port unreachable"      "icmp.type == 3 && icmp.code == 3" 1
check "IPv6 echo request"          "icmpv6.type == 128"            $((answered + unanswered6))
check "IPv6 echo reply"            "icmpv6.type == 129"            "$answered"
check "IPv6 unanswered request"    "icmpv6.type == 128 && ipv6.dst == $ghost6" "$unanswered6"
check "IPv6 port unreachable"      "icmpv6.type == 1 && icmpv6.code == 4" 1
check "UDP probes (not ICMP)"      "udp && !icmp && !icmpv6"       2
check "all frames"                 "frame"                         $((2 * answered + unanswered4 + 2 * answered + unanswered6 + 2 + 2))
