#!/usr/bin/env bash
# Regenerates the NetFlow/IPFIX export captures in this folder (root: tcpdump on lo).
#
# softflowd (Debian) reads the project's own bundled captures offline (-r), merged
# into one file, and exports their flows to 127.0.0.1:2055 as NetFlow v5, v9 and
# IPFIX; tcpdump records the export datagrams on the loopback. Nothing needs to
# listen on 2055 (the ICMP port-unreachable replies are filtered out).
#   softflowd_v5.pcap  softflowd_v9.pcap  softflowd_ipfix.pcap
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

mergecap -F pcap -w "$work/input.pcap" "$here"/../{http,dns,dhcpv4,icmp,sip,rtp}/*.pcap

for version in 5 9 10; do
  name=$([ "$version" = 10 ] && echo ipfix || echo "v$version")
  tcpdump -i lo -U -s 0 -w "$here/softflowd_$name.pcap" 'udp dst port 2055' 2>/dev/null &
  dump=$!
  sleep 1
  six=$([ "$version" = 5 ] && echo "" || echo "-6")
  softflowd -r "$work/input.pcap" -n 127.0.0.1:2055 -v "$version" $six -c none \
    -p "$work/softflowd.pid" > /dev/null
  sleep 1
  kill -INT "$dump"
  wait "$dump" || true
done
ls -l "$here"/softflowd_*.pcap
