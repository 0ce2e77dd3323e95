#!/usr/bin/env bash
# Regenerate the TLS captures in pcaps/tls/ from real programs on loopback.
#
# Certificates are made here, fresh on every run (a CA, an RSA and an ECDSA
# server certificate, a client certificate). Servers: `openssl s_server`;
# clients: `openssl s_client` and curl. Port 8443 is in wirebeat's default TLS
# port list; port 14433 is not, so captures on it are found by detection
# (wirebeat.protocols.tls.detect). tcpdump records `tcp port N` on lo
# (Ethernet linktype). What each file holds is in README.md beside this script;
# the tests compare wirebeat's documents with tshark's dissection of the same
# files, so the certificates' random serial numbers and keys need no pinning.
#
# Run as root (tcpdump on lo). Needs openssl, curl, tcpdump, tshark.
# Idempotent; servers and tcpdump are stopped on exit, failure included.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
server_pid=
tcpdump_pid=

cleanup() {
    if [[ -n $tcpdump_pid ]]; then kill "$tcpdump_pid" 2>/dev/null || true; fi
    if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

for port in 8443 14433; do
    if (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
        echo "port $port is in use: stop what listens there first" >&2
        exit 1
    fi
done

# -- certificates -------------------------------------------------------------
cd "$tmp"
days=3650
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days $days -sha256 \
    -subj "/C=DE/O=wirebeat test/CN=wirebeat test CA" 2>/dev/null
issue() {   # issue NAME KEYSPEC SUBJECT SAN EXTENDED_KEY_USAGE
    openssl req -newkey "$2" -nodes -keyout "$1.key" -out "$1.csr" -subj "$3" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$4" "$5" > "$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days $days \
        -sha256 -extfile "$1.ext" -out "$1.pem" 2>/dev/null
}
issue rsa rsa:2048 "/C=DE/ST=Berlin/L=Berlin/O=wirebeat/OU=captures/CN=rsa.wirebeat.test" \
    "DNS:rsa.wirebeat.test,DNS:www.wirebeat.test,IP:127.0.0.1" serverAuth
openssl ecparam -name prime256v1 -out p256.param
issue ec ec:p256.param "/C=DE/O=wirebeat/CN=ec.wirebeat.test" "DNS:ec.wirebeat.test" serverAuth
issue client rsa:2048 "/C=DE/O=wirebeat/CN=alice" "email:alice@wirebeat.test" clientAuth

# -- helpers ------------------------------------------------------------------
serve() {   # serve PORT s_server-options...
    local port=$1; shift
    openssl s_server -accept "$port" -naccept 20 "$@" >"$tmp/server.log" 2>&1 &
    server_pid=$!
    for _ in $(seq 50); do
        ss -ltn "sport = :$port" | grep -q LISTEN && return 0
        sleep 0.1
    done
    cat "$tmp/server.log" >&2
    exit 1
}

unserve() {
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}

start_capture() {   # start_capture FILE PORT
    : >"$tmp/tcpdump.log"
    # -Z root: Debian's tcpdump would otherwise drop to user tcpdump; -U and
    # --immediate-mode: every packet is written at once.
    tcpdump -i lo -n -U --immediate-mode -Z root -w "$here/$1" "tcp port $2" 2>"$tmp/tcpdump.log" &
    tcpdump_pid=$!
    for _ in $(seq 50); do
        grep -q "listening on" "$tmp/tcpdump.log" && return 0
        sleep 0.1
    done
    cat "$tmp/tcpdump.log" >&2
    exit 1
}

stop_capture() {
    sleep 0.3                     # the last ACKs and FINs
    kill -TERM "$tcpdump_pid"
    wait "$tcpdump_pid" || true
    tcpdump_pid=
}

client() {   # client PORT s_client-options... ; stdin stays open 0.5 s for session tickets
    local port=$1; shift
    sleep 0.5 | openssl s_client -connect "127.0.0.1:$port" -CAfile ca.pem "$@" >>"$tmp/client.log" 2>&1 || true
}

# -- captures -----------------------------------------------------------------

# TLS 1.2, RSA certificate, on a configured port: curl with SNI and ALPN http/1.1,
# then s_client offering h2 and http/1.1 (the server picks h2).
serve 8443 -www -tls1_2 -cert rsa.pem -key rsa.key -alpn h2,http/1.1
start_capture tls12_rsa.pcap 8443
curl -s -o /dev/null --http1.1 --tlsv1.2 --tls-max 1.2 --cacert ca.pem \
    --resolve rsa.wirebeat.test:8443:127.0.0.1 https://rsa.wirebeat.test:8443/
client 8443 -servername www.wirebeat.test -alpn h2,http/1.1
stop_capture
unserve

# TLS 1.3, ECDSA certificate, on a port no decoder claims: the certificate is
# encrypted. curl (ALPN h2 offered, the server answers http/1.1) and s_client
# without SNI.
serve 14433 -www -tls1_3 -cert ec.pem -key ec.key -alpn http/1.1
start_capture tls13_ecdsa_anyport.pcap 14433
curl -s -o /dev/null --cacert ca.pem --resolve ec.wirebeat.test:14433:127.0.0.1 \
    https://ec.wirebeat.test:14433/ || true
client 14433 -noservername
stop_capture
unserve

# TLS 1.2 resumption: by session id (tickets off), then by session ticket.
serve 8443 -www -tls1_2 -cert rsa.pem -key rsa.key
start_capture tls12_resumption.pcap 8443
client 8443 -servername rsa.wirebeat.test -no_ticket -sess_out "$tmp/id.sess"
client 8443 -servername rsa.wirebeat.test -no_ticket -sess_in "$tmp/id.sess"
client 8443 -servername rsa.wirebeat.test -sess_out "$tmp/ticket.sess"
client 8443 -servername rsa.wirebeat.test -sess_in "$tmp/ticket.sess"
stop_capture
unserve

# TLS 1.3 resumption with a PSK from a ticket, and a HelloRetryRequest: the
# client's only key share is X25519, the server takes P-256 only.
serve 14433 -www -tls1_3 -cert rsa.pem -key rsa.key -groups P-256:X25519
start_capture tls13_resumption_hrr.pcap 14433
client 14433 -servername rsa.wirebeat.test -sess_out "$tmp/psk.sess"
client 14433 -servername rsa.wirebeat.test -sess_in "$tmp/psk.sess"
unserve
serve 14433 -www -tls1_3 -cert rsa.pem -key rsa.key -groups P-256
client 14433 -servername rsa.wirebeat.test -groups X25519:P-256
stop_capture
unserve

# TLS 1.2 with a client certificate (the server asks for one and verifies it),
# ECDSA server certificate.
serve 8443 -www -tls1_2 -cert ec.pem -key ec.key -Verify 1 -CAfile ca.pem
start_capture tls12_client_cert.pcap 8443
client 8443 -servername ec.wirebeat.test -cert client.pem -key client.key
stop_capture
unserve

# Alerts: curl does not trust the server (no CA given) and sends unknown_ca;
# then a client offering only a cipher suite the server refuses gets
# handshake_failure.
serve 8443 -www -tls1_2 -cert rsa.pem -key rsa.key -cipher ECDHE-RSA-AES256-GCM-SHA384
start_capture tls12_alerts.pcap 8443
curl -s -o /dev/null --tlsv1.2 --tls-max 1.2 --resolve rsa.wirebeat.test:8443:127.0.0.1 \
    https://rsa.wirebeat.test:8443/ || true
client 8443 -servername rsa.wirebeat.test -tls1_2 -cipher ECDHE-RSA-AES128-GCM-SHA256
stop_capture
unserve

chmod 644 "$here"/*.pcap
for f in "$here"/*.pcap; do
    printf '%s: %s ClientHello, %s ServerHello, %s Certificate, %s alert records\n' "$(basename "$f")" \
        "$(tshark -r "$f" -d tcp.port==14433,tls -Y 'tls.handshake.type == 1' 2>/dev/null | wc -l)" \
        "$(tshark -r "$f" -d tcp.port==14433,tls -Y 'tls.handshake.type == 2' 2>/dev/null | wc -l)" \
        "$(tshark -r "$f" -d tcp.port==14433,tls -Y 'tls.handshake.type == 11' 2>/dev/null | wc -l)" \
        "$(tshark -r "$f" -d tcp.port==14433,tls -Y 'tls.record.content_type == 21' 2>/dev/null | wc -l)"
done
