#!/usr/bin/env bash
# Regenerate the DNS captures in pcaps/dns/ from real programs: dnsmasq as the
# server, dig and Python's resolver (glibc getaddrinfo/gethostbyaddr) as
# clients, tcpdump recording. See README.md next to this script for what each
# file holds.
#
# Everything runs inside a network namespace of its own (only its loopback is
# up), so no packet leaves it. dnsmasq answers on 127.0.0.1:53 from local
# records only (--no-resolv --no-hosts); nothing listens on 127.0.0.2:53.
#
# Run as root. Idempotent: leftovers from an earlier run are removed first, and
# the namespace, dnsmasq and tcpdump are removed on exit, failure included.
# Needs iproute2, dnsmasq (dnsmasq-base), dig (dnsutils), tcpdump, python3;
# tshark (optional) verifies the result.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
ns=wirebeat-dns
server=127.0.0.1
silent=127.0.0.2             # no server: queries there stay unanswered

tmp=$(mktemp -d)
tcpdump_pid=
dnsmasq_pid=

cleanup() {
    if [[ -n $tcpdump_pid ]] && kill -0 "$tcpdump_pid" 2>/dev/null; then
        kill "$tcpdump_pid" 2>/dev/null || true
        wait "$tcpdump_pid" 2>/dev/null || true
    fi
    if [[ -n $dnsmasq_pid ]] && kill -0 "$dnsmasq_pid" 2>/dev/null; then
        kill "$dnsmasq_pid" 2>/dev/null || true
        wait "$dnsmasq_pid" 2>/dev/null || true
    fi
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "/etc/netns/$ns"
    rm -rf "$tmp"
}
trap cleanup EXIT
ip netns del "$ns" 2>/dev/null || true
rm -rf "/etc/netns/$ns"

in_ns() { ip netns exec "$ns" "$@"; }

ip netns add "$ns"
ip -n "$ns" link set lo up
ip -n "$ns" addr add "$silent/8" dev lo 2>/dev/null || true
# `ip netns exec` bind-mounts /etc/netns/<ns>/* over /etc: Python's resolver
# (glibc) then asks dnsmasq, inside the namespace only.
mkdir -p "/etc/netns/$ns"
printf 'nameserver %s\noptions attempts:1 timeout:2\n' "$server" >"/etc/netns/$ns/resolv.conf"

# Local records. Hex RDATA for types dnsmasq has no option for (RFC 3597 style):
#   CAA    flags 0, tag "issue", value "ca.example.net"                 (RFC 8659)
#   DS     key tag 12345, algorithm 13, digest type 2, SHA-256 of "wirebeat ds"
#   DNSKEY flags 257, protocol 3, algorithm 13, 64-byte key (SHA-512 of "wirebeat key")
#   RRSIG  covers A, algorithm 13, labels 2, original TTL 3600, expiration
#          2030-01-01, inception 2025-01-01, key tag 12345, signer example.com,
#          64-byte signature (SHA-512 of "wirebeat sig")            (RFC 4034)
#   NSEC   next www.example.com, types A NS SOA MX TXT AAAA RRSIG NSEC DNSKEY
#   HTTPS  priority 1, target ".", alpn=h2,h3 ipv4hint=192.0.2.10
#          ipv6hint=2001:db8::10                                    (RFC 9460)
#   TYPE65280 (private use) "wirebeat"
caa=0005697373756563612e6578616d706c652e6e6574
ds=30390d02ae97bde45585c28b94635c51589e0f3d4137f3e9749c8093251b2db451fe6e77
dnskey=0101030d2703eaff60af5d7e83d0a65f7def9bd5190300b572e3b4a321c07db35753399cb2ebe2a0b3fb0ada44444d064b8f70fb8fb9769fb72b09b337a21f5ceacb68b0
rrsig=00010d0200000e1070dbd880677485803039076578616d706c6503636f6d00653fae62821928ad7f0c7ad9912b5505429a86cb5ea5fe1e3204db3b4bbbb1229cf4889f58cb980ac0eb514a6a579c738b3badad74845d7ed396d1c34e1820c1
nsec=03777777076578616d706c6503636f6d00000762018008000380
https=0001000001000602683202683300040004c000020a0006001020010db8000000000000000000000010
private=7769726562656174
# A TXT record too large for 512 bytes: three 200-character strings.
chunk_a=$(printf 'a%.0s' $(seq 200))
chunk_b=$(printf 'b%.0s' $(seq 200))
chunk_c=$(printf 'c%.0s' $(seq 200))

ip netns exec "$ns" dnsmasq --keep-in-foreground --log-facility=- --user=root --pid-file="$tmp/dnsmasq.pid" \
    --no-resolv --no-hosts --no-poll --bind-interfaces --listen-address="$server" --port=53 \
    --local-ttl=300 \
    --local=/example.com/ --local=/example.co.uk/ \
    --host-record=www.example.com,192.0.2.10,2001:db8::10 \
    --host-record=mail.example.com,192.0.2.25 \
    --host-record=www.example.co.uk,192.0.2.20 \
    --cname=alias.example.com,www.example.com \
    --mx-host=example.com,mail.example.com,10 \
    --txt-record=example.com,"v=spf1 mx -all" \
    --txt-record=big.example.com,"$chunk_a","$chunk_b","$chunk_c" \
    --srv-host=_sip._udp.example.com,sip.example.com,5060,10,20 \
    --dns-rr=example.com,257,"$caa" \
    --dns-rr=example.com,43,"$ds" \
    --dns-rr=example.com,48,"$dnskey" \
    --dns-rr=www.example.com,46,"$rrsig" \
    --dns-rr=example.com,47,"$nsec" \
    --dns-rr=www.example.com,65,"$https" \
    --dns-rr=example.com,65280,"$private" \
    >"$tmp/dnsmasq.log" 2>&1 &
dnsmasq_pid=$!
for _ in $(seq 50); do
    in_ns dig +short +tries=1 +timeout=1 @"$server" www.example.com A >/dev/null 2>&1 && break
    sleep 0.1
done

start_capture() {      # start_capture FILE
    # Started without a shell function in between, so $! is tcpdump itself.
    # --immediate-mode: otherwise packets wait in the kernel's ring buffer and
    # a stopped tcpdump never writes the last ones.
    ip netns exec "$ns" tcpdump -i lo -n -U --immediate-mode -Z root -s 0 -w "$tmp/raw-$1" \
        'port 53 or (udp and dst port 9)' 2>"$tmp/tcpdump.log" &
    tcpdump_pid=$!
    # Do not trust "listening on" alone: send probes to the discard port until
    # one is in the file, so the capture surely sees what follows (the probes
    # are filtered out again in stop_capture).
    for _ in $(seq 100); do
        in_ns bash -c 'echo probe > /dev/udp/127.0.0.1/9' 2>/dev/null || true
        sleep 0.1
        [[ -s "$tmp/raw-$1" && $(stat -c %s "$tmp/raw-$1") -gt 24 ]] && return 0
    done
    cat "$tmp/tcpdump.log" >&2
    exit 1
}
stop_capture() {       # stop_capture FILE
    sleep 0.3
    kill -TERM "$tcpdump_pid"      # tcpdump flushes and closes the file
    wait "$tcpdump_pid" || true
    tcpdump_pid=
    tcpdump -Z root -r "$tmp/raw-$1" -w "$here/$1" 'port 53' 2>/dev/null
    echo "wrote $here/$1 ($(stat -c %s "$here/$1") bytes)"
}
ask() { in_ns dig +tries=1 +timeout=2 @"$server" "$@" >/dev/null; }

# 1. Everyday lookups over UDP with dig (EDNS on, as dig sends by default),
#    an NXDOMAIN, a reverse lookup and a query carrying a client subnet; then
#    Python's resolver: getaddrinfo asks A and AAAA from one socket, and
#    gethostbyaddr asks PTR.
start_capture udp_queries.pcap
ask www.example.com A
ask www.example.com AAAA
ask example.com MX
ask example.com TXT
ask _sip._udp.example.com SRV
ask alias.example.com A
ask www.example.co.uk A
ask nonexistent.example.com A
ask -x 192.0.2.10
ask +subnet=198.51.100.0/24 www.example.com A
in_ns python3 - <<'EOF'
import socket
socket.getaddrinfo("www.example.com", 443, type=socket.SOCK_STREAM)
socket.gethostbyaddr("192.0.2.20")
EOF
stop_capture udp_queries.pcap

# 2. A TXT answer too big for 512 bytes without EDNS: dnsmasq sets TC over UDP
#    and dig retries the same question over TCP.
start_capture truncated_then_tcp.pcap
ask +noedns big.example.com TXT
stop_capture truncated_then_tcp.pcap

# 3. Three queries over one TCP connection (dig +tcp +keepopen).
start_capture tcp_keepopen.pcap
ask +tcp +keepopen www.example.com A example.com MX example.com TXT
stop_capture tcp_keepopen.pcap

# 4. DNSSEC-looking and newer record types: CAA, DS, DNSKEY, RRSIG, NSEC,
#    HTTPS and a private-use type.
start_capture record_types.pcap
ask example.com CAA
ask example.com DS
ask example.com DNSKEY
ask www.example.com RRSIG
ask example.com NSEC
ask www.example.com HTTPS
ask example.com TYPE65280
stop_capture record_types.pcap

# 5. Nobody answers: two queries to 127.0.0.2 stay unanswered (the kernel's
#    ICMP port unreachable is not DNS and is left out by the filter).
start_capture unanswered.pcap
in_ns dig +tries=1 +timeout=1 @"$silent" www.example.com A >/dev/null 2>&1 || true
in_ns dig +tries=1 +timeout=1 @"$silent" example.com MX >/dev/null 2>&1 || true
stop_capture unanswered.pcap

if ! command -v tshark >/dev/null; then
    echo "tshark not installed: contents not verified" >&2
    exit 0
fi
count() { tshark -n -r "$here/$1" -Y "$2" 2>/dev/null | wc -l; }
check() {      # check FILE LABEL FILTER EXPECTED
    local got
    got=$(count "$1" "$3")
    printf '%-24s %-34s %3s (expected %s)\n' "$1" "$2" "$got" "$4"
    [[ $got -eq $4 ]] || { echo "unexpected count for: $1 $2" >&2; exit 1; }
}
check udp_queries.pcap "queries"              "dns.flags.response == 0"              13
check udp_queries.pcap "responses"            "dns.flags.response == 1"              13
check udp_queries.pcap "NXDOMAIN"             "dns.flags.rcode == 3"                 1
check udp_queries.pcap "client subnet option" "dns.opt.client.family"                1
check truncated_then_tcp.pcap "UDP TC answer" "udp && dns.flags.truncated == 1"      1
check truncated_then_tcp.pcap "TCP answer"    "tcp && dns.flags.response == 1"       1
check tcp_keepopen.pcap "TCP queries"         "tcp && dns.flags.response == 0"       3
check tcp_keepopen.pcap "TCP responses"       "tcp && dns.flags.response == 1"       3
check record_types.pcap "answers with data"   "dns.flags.response == 1 && dns.count.answers == 1" 7
check unanswered.pcap "queries"               "dns.flags.response == 0"              2
check unanswered.pcap "responses"             "dns.flags.response == 1"              0
