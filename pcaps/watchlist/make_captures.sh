#!/usr/bin/env bash
# Regenerate pcaps/watchlist/office.pcap from real programs: three hosts and a
# server on one Ethernet bridge, each host getting its address by DHCP
# (dnsmasq / ISC dhclient), resolving a name (dig -> dnsmasq), fetching a page
# (curl -> python3 -m http.server) and pinging the server; ARP happens on its
# own. tcpdump records on the bridge, so every host's frames are in one file.
# See README.md next to this script for what the file holds.
#
# Namespaces: wl-lan holds bridge br0; wl-srv (10.77.0.1, 02:00:00:77:00:01),
# wl-alice (02:00:00:77:00:0a), wl-bob (...:0b), wl-carol (...:0c) each plug a
# veth into it. IPv6 is off everywhere so the link carries only what the
# scenario does. Run as root; leftovers are removed first, and everything is
# removed on exit, failure included. Needs iproute2, dnsmasq, dhclient, dig,
# curl, python3, tcpdump; tshark (optional) prints a summary.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
out="$here/office.pcap"
hosts=(alice bob carol)
declare -A mac=([srv]=02:00:00:77:00:01 [alice]=02:00:00:77:00:0a [bob]=02:00:00:77:00:0b
                [carol]=02:00:00:77:00:0c)
srv_ip=10.77.0.1
tmp=$(mktemp -d)
pids=()

cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    for h in "${hosts[@]}"; do
        [[ -f $tmp/dhclient-$h.pid ]] && kill "$(cat "$tmp/dhclient-$h.pid")" 2>/dev/null || true
    done
    for ns in wl-lan wl-srv "${hosts[@]/#/wl-}"; do ip netns del "$ns" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
for ns in wl-lan wl-srv "${hosts[@]/#/wl-}"; do ip netns del "$ns" 2>/dev/null || true; done

ip netns add wl-lan
ip -n wl-lan link add br0 type bridge
ip -n wl-lan link set br0 up
for h in srv "${hosts[@]}"; do
    ns=wl-$h
    ip netns add "$ns"
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    ip -n "$ns" link set lo up
    ip link add eth0 netns "$ns" address "${mac[$h]}" type veth peer name "p-$h" netns wl-lan
    ip -n wl-lan link set "p-$h" master br0
    ip -n wl-lan link set "p-$h" up
    ip -n "$ns" link set eth0 up
done
ip netns exec wl-lan sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip -n wl-srv addr add "$srv_ip/24" dev eth0

ip netns exec wl-srv dnsmasq --keep-in-foreground --log-facility=- --user=root \
    --pid-file="$tmp/dnsmasq.pid" --bind-interfaces --interface=eth0 --no-resolv --no-hosts \
    --dhcp-authoritative --no-ping --dhcp-range=10.77.0.100,10.77.0.150,255.255.255.0,1h \
    --dhcp-option=option:router,"$srv_ip" --dhcp-option=option:dns-server,"$srv_ip" \
    --address=/intranet.example/"$srv_ip" --dhcp-leasefile="$tmp/dnsmasq.leases" \
    >"$tmp/dnsmasq.log" 2>&1 &
pids+=($!)
mkdir -p "$tmp/www" && echo "hello from the intranet" >"$tmp/www/index.html"
ip netns exec wl-srv python3 -m http.server 80 --bind "$srv_ip" --directory "$tmp/www" \
    >"$tmp/http.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do grep -q "DHCP, IP range" "$tmp/dnsmasq.log" && break; sleep 0.1; done

ip netns exec wl-lan tcpdump -i br0 -n -U --immediate-mode -Z root -s 0 -w "$tmp/raw.pcap" \
    2>"$tmp/tcpdump.log" &
tcpdump_pid=$!
pids+=("$tcpdump_pid")
for _ in $(seq 50); do grep -q "listening on" "$tmp/tcpdump.log" && break; sleep 0.1; done
grep -q "listening on" "$tmp/tcpdump.log" || { cat "$tmp/tcpdump.log" >&2; exit 1; }
sleep 0.5

cat >"$tmp/dhclient-script" <<'EOF'
#!/bin/sh
case "$reason" in
    BOUND|RENEW|REBIND|REBOOT)
        ip addr flush dev "$interface"
        ip addr add "$new_ip_address/${new_subnet_mask:-255.255.255.0}" dev "$interface" ;;
esac
exit 0
EOF
chmod +x "$tmp/dhclient-script"
for h in "${hosts[@]}"; do
    ip netns exec "wl-$h" dhclient -1 -cf /dev/null -lf "$tmp/dhclient-$h.leases" \
        -pf "$tmp/dhclient-$h.pid" -sf "$tmp/dhclient-script" eth0 >"$tmp/dhclient-$h.log" 2>&1
    echo "$h: $(ip -n "wl-$h" -4 -o addr show dev eth0 | awk '{print $4}')"
done
for h in "${hosts[@]}"; do
    ip netns exec "wl-$h" dig +short +tries=1 @"$srv_ip" intranet.example A >/dev/null
    ip netns exec "wl-$h" curl -s -o /dev/null "http://$srv_ip/index.html"
    ip netns exec "wl-$h" ping -c 2 -i 0.2 -q "$srv_ip" >/dev/null
done
sleep 0.5
kill "$tcpdump_pid"; wait "$tcpdump_pid" 2>/dev/null || true
cp "$tmp/raw.pcap" "$out"
echo "wrote $out"
if command -v tshark >/dev/null; then
    tshark -r "$out" -T fields -e eth.src -e frame.protocols 2>/dev/null | sort | uniq -c
fi
