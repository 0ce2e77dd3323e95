#!/usr/bin/env bash
# Regenerate pcaps/dhcpv4/dora_nak_release.pcap from real programs: dnsmasq as
# the DHCP server, ISC dhclient as the client, tcpdump recording. See README.md
# next to this script for what the file holds.
#
# Two network namespaces joined by a veth pair; tcpdump records on the client's
# veth end (Ethernet linktype). The client starts with a lease file holding a
# lease on another network (10.98.0.50), so it first asks for that address
# (INIT-REBOOT REQUEST) and dnsmasq, authoritative for 10.99.0.0/24, refuses it
# (NAK). The client then goes through DISCOVER / OFFER / REQUEST / ACK, and
# finally releases the lease (RELEASE, dhclient -r).
#
# dhclient runs with a script of our own that only sets the interface address,
# so nothing outside the namespaces (resolv.conf, routes) is touched.
#
# Run as root. Idempotent: leftovers from an earlier run are removed first, and
# the namespaces, daemons and temporary files are removed on exit, failure
# included. Needs iproute2, dnsmasq (dnsmasq-base), dhclient (isc-dhcp-client),
# tcpdump; tshark (optional) verifies the result.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out="$here/dora_nak_release.pcap"
ns_srv=wirebeat-dhcp-srv
ns_cli=wirebeat-dhcp-cli
srv_ip=10.99.0.1
client_mac=02:00:00:99:01:02
stale_ip=10.98.0.50           # in the seeded lease: the wrong network, so NAK

tmp=$(mktemp -d)
tcpdump_pid=
dnsmasq_pid=

cleanup() {
    if [[ -n $tcpdump_pid ]] && kill -0 "$tcpdump_pid" 2>/dev/null; then
        kill "$tcpdump_pid" 2>/dev/null || true
        wait "$tcpdump_pid" 2>/dev/null || true
    fi
    if [[ -f $tmp/dhclient.pid ]]; then
        kill "$(cat "$tmp/dhclient.pid")" 2>/dev/null || true
    fi
    if [[ -n $dnsmasq_pid ]] && kill -0 "$dnsmasq_pid" 2>/dev/null; then
        kill "$dnsmasq_pid" 2>/dev/null || true
        wait "$dnsmasq_pid" 2>/dev/null || true
    fi
    ip netns del "$ns_srv" 2>/dev/null || true
    ip netns del "$ns_cli" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
ip netns del "$ns_srv" 2>/dev/null || true
ip netns del "$ns_cli" 2>/dev/null || true

ip netns add "$ns_srv"
ip netns add "$ns_cli"
ip link add veth-srv netns "$ns_srv" address 02:00:00:99:01:01 type veth \
    peer name veth-cli netns "$ns_cli" address "$client_mac"
for ns in "$ns_srv" "$ns_cli"; do
    # IPv6 off: no router solicitations or MLD reports on the link.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
        net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
done
ip -n "$ns_srv" addr add "$srv_ip/24" dev veth-srv
ip -n "$ns_srv" link set veth-srv up
ip -n "$ns_cli" link set veth-cli up

# dhclient's hook: set or clear the address, nothing else.
cat >"$tmp/dhclient-script" <<'EOF'
#!/bin/sh
case "$reason" in
    BOUND|RENEW|REBIND|REBOOT)
        ip addr flush dev "$interface"
        ip addr add "$new_ip_address/${new_subnet_mask:-255.255.255.0}" dev "$interface" ;;
    RELEASE|EXPIRE|FAIL|STOP)
        ip addr flush dev "$interface" ;;
esac
exit 0
EOF
chmod +x "$tmp/dhclient-script"
# A lease the client believes it holds, on a network this server does not serve.
cat >"$tmp/dhclient.leases" <<EOF
lease {
  interface "veth-cli";
  fixed-address $stale_ip;
  option subnet-mask 255.255.255.0;
  option dhcp-server-identifier 10.98.0.1;
  option dhcp-lease-time 3600;
  renew 4 2037/12/31 00:00:00;
  rebind 4 2037/12/31 00:00:00;
  expire 4 2037/12/31 00:00:00;
}
EOF
cat >"$tmp/dhclient.conf" <<'EOF'
send host-name "wirebeat-client";
send dhcp-client-identifier 01:02:00:00:99:01:02;
request subnet-mask, broadcast-address, time-offset, routers, domain-name,
        domain-name-servers, host-name, ntp-servers, interface-mtu;
EOF

ip netns exec "$ns_srv" dnsmasq --keep-in-foreground --log-facility=- --user=root \
    --pid-file="$tmp/dnsmasq.pid" --port=0 --bind-interfaces --interface=veth-srv \
    --dhcp-authoritative --no-ping \
    --dhcp-range=10.99.0.100,10.99.0.150,255.255.255.0,1h \
    --dhcp-option=option:router,"$srv_ip" \
    --dhcp-option=option:dns-server,"$srv_ip",10.99.0.2 \
    --dhcp-option=option:ntp-server,"$srv_ip" \
    --dhcp-option=option:domain-name,example.com \
    --dhcp-leasefile="$tmp/dnsmasq.leases" \
    >"$tmp/dnsmasq.log" 2>&1 &
dnsmasq_pid=$!
for _ in $(seq 50); do
    grep -q "DHCP, IP range" "$tmp/dnsmasq.log" && break
    sleep 0.1
done

# --immediate-mode: without it packets wait in the kernel's ring buffer and a
# stopped tcpdump never writes the last ones. Started without a shell function
# in between, so $! is tcpdump itself.
ip netns exec "$ns_cli" tcpdump -i veth-cli -n -U --immediate-mode -Z root -s 0 \
    -w "$tmp/raw.pcap" 'udp and (port 67 or port 68)' 2>"$tmp/tcpdump.log" &
tcpdump_pid=$!
for _ in $(seq 50); do
    grep -q "listening on" "$tmp/tcpdump.log" && break
    sleep 0.1
done
grep -q "listening on" "$tmp/tcpdump.log" || { cat "$tmp/tcpdump.log" >&2; exit 1; }
sleep 0.5

dhclient_args=(-cf "$tmp/dhclient.conf" -lf "$tmp/dhclient.leases" -pf "$tmp/dhclient.pid"
               -sf "$tmp/dhclient-script" veth-cli)
# -1: one attempt, then exit 2 if no lease; on success dhclient stays in the
# background to renew, until `dhclient -r` below releases the lease and stops it.
ip netns exec "$ns_cli" dhclient -1 -v "${dhclient_args[@]}" >"$tmp/dhclient.log" 2>&1
leased=$(ip -n "$ns_cli" -4 -o addr show dev veth-cli | awk '{print $4}')
echo "client got $leased"
sleep 0.5
ip netns exec "$ns_cli" dhclient -r -v "${dhclient_args[@]}" >>"$tmp/dhclient.log" 2>&1
sleep 0.5

kill -TERM "$tcpdump_pid"
wait "$tcpdump_pid" || true
tcpdump_pid=
mv "$tmp/raw.pcap" "$out"
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
check "REQUEST for the stale lease" "dhcp.option.dhcp == 3 && dhcp.option.requested_ip_address == $stale_ip" 1
check "NAK"                  "dhcp.option.dhcp == 6"     1
check "DISCOVER"             "dhcp.option.dhcp == 1"     1
check "OFFER"                "dhcp.option.dhcp == 2"     1
check "REQUEST (all)"        "dhcp.option.dhcp == 3"     2
check "ACK"                  "dhcp.option.dhcp == 5"     1
check "RELEASE"              "dhcp.option.dhcp == 7"     1
check "client MAC everywhere" "dhcp.hw.mac_addr == $client_mac" 7
check "all frames"           "frame"                     7
