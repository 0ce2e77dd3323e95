#!/usr/bin/env bash
# Regenerate the HTTP captures in pcaps/http/ from real programs on loopback.
#
# Peers: curl and wget (clients); python's http.server (HTTP/1.0, one request
# per connection) on port 8000; server.py here (HTTP/1.1 keep-alive, chunked,
# pipelining-capable) on port 8080 and its raw pipelining client. Both ports
# are in wirebeat's default HTTP port list. tcpdump records `tcp port N` on lo
# (Ethernet linktype). Two captures are then cut with editcap from a full
# recording: one starts mid-connection, one has segments removed. What each
# file holds, with tshark-verified counts, is in README.md beside this script.
#
# Run as root (tcpdump on lo). Needs python3, curl, wget, tcpdump, editcap and
# tshark. Idempotent; servers and tcpdump are stopped on exit, failure included.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
app_port=8080
file_port=8000
tmp=$(mktemp -d)
pids=()
tcpdump_pid=

cleanup() {
    if [[ -n $tcpdump_pid ]]; then kill "$tcpdump_pid" 2>/dev/null || true; fi
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

for port in $app_port $file_port; do
    if (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
        echo "port $port is in use: stop what listens there first" >&2
        exit 1
    fi
done

# Content for python's http.server.
mkdir -p "$tmp/www"
printf '<!doctype html>\n<title>wirebeat</title>\n<p>hello from http.server</p>\n' > "$tmp/www/index.html"
printf '{"name": "wirebeat", "captures": ["http"], "ok": true}\n' > "$tmp/www/data.json"

python3 "$here/server.py" serve $app_port >"$tmp/app.log" 2>&1 &
pids+=($!)
python3 -m http.server $file_port --bind 127.0.0.1 --directory "$tmp/www" >"$tmp/files.log" 2>&1 &
pids+=($!)
for port in $app_port $file_port; do
    for _ in $(seq 50); do
        (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
        sleep 0.1
    done
done
sleep 0.2     # the probe connections above are not part of any capture

start_capture() {   # start_capture FILE PORT
    : >"$tmp/tcpdump.log"
    # -Z root: Debian's tcpdump would otherwise drop to user tcpdump and be
    # unable to write into $tmp; -U and --immediate-mode: each packet is written
    # at once (else the last second of packets may never leave the ring buffer).
    tcpdump -i lo -n -U --immediate-mode -Z root -w "$1" "tcp port $2" 2>"$tmp/tcpdump.log" &
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
    kill -TERM "$tcpdump_pid"     # (a background job ignores SIGINT)
    wait "$tcpdump_pid" || true
    tcpdump_pid=
}

app=http://127.0.0.1:$app_port
files=http://127.0.0.1:$file_port
quiet=(-s -o /dev/null)

# 1. python's http.server: curl GET, a 404, HEAD; wget GET. One connection each.
start_capture "$tmp/simple_server.pcap" $file_port
curl "${quiet[@]}" "$files/index.html"
curl "${quiet[@]}" "$files/missing.txt"
curl -s -I -o /dev/null "$files/index.html"
wget -q -O /dev/null "$files/data.json"
stop_capture

# 2. keep-alive: one curl connection with five requests (Content-Length,
#    chunked with a trailer, 404, 500, close-delimited last); then wget fetching
#    a chunked response.
start_capture "$tmp/keepalive.pcap" $app_port
curl "${quiet[@]}" "$app/hello" "${quiet[@]}" "$app/chunked?parts=4&size=100" \
    "${quiet[@]}" "$app/status/404" "${quiet[@]}" "$app/status/500" "${quiet[@]}" "$app/close"
wget -q -O /dev/null "$app/chunked?parts=3&size=50"
stop_capture

# 3. POST with a JSON body; a larger one announced with Expect: 100-continue.
start_capture "$tmp/post_json.pcap" $app_port
curl "${quiet[@]}" -H 'Content-Type: application/json' \
    -d '{"user": "alice", "items": [1, 2, 3], "note": "a JSON body"}' "$app/echo"
python3 -c 'import json; print(json.dumps({"rows": [{"id": i, "v": "x" * 20} for i in range(60)]}))' \
    >"$tmp/big.json"
curl "${quiet[@]}" -H 'Content-Type: application/json' -H 'Expect: 100-continue' \
    --data-binary @"$tmp/big.json" "$app/echo"
stop_capture

# 4. Basic auth: curl without (401) and with credentials (200); wget, which
#    asks first and retries with credentials after the 401.
start_capture "$tmp/basic_auth.pcap" $app_port
curl "${quiet[@]}" "$app/auth"
curl "${quiet[@]}" -u alice:wonderland "$app/auth"
wget -q -O /dev/null --user=alice --password=wonderland "$app/auth"
stop_capture

# 5. Pipelining: four requests written at once on one connection.
start_capture "$tmp/pipelined.pcap" $app_port
python3 "$here/server.py" pipeline $app_port /hello /status/404 "/chunked?parts=2&size=30" /hello
stop_capture

# 6. A request left unanswered: curl gives up after 0.5 s, the capture stops
#    before the server's late answer.
start_capture "$tmp/unanswered.pcap" $app_port
curl "${quiet[@]}" -m 0.5 "$app/hang?delay_ms=3000" || true
stop_capture

# Full recordings for the cut captures: responses in many small segments.
start_capture "$tmp/full_mid.pcap" $app_port
curl "${quiet[@]}" "$app/slow?parts=6&size=400&delay_ms=30" "${quiet[@]}" "$app/hello" \
    "${quiet[@]}" "$app/chunked?parts=3&size=40" "${quiet[@]}" "$app/status/503"
stop_capture
start_capture "$tmp/full_lossy.pcap" $app_port
curl "${quiet[@]}" "$app/slow?parts=8&size=600&delay_ms=20" "${quiet[@]}" "$app/hello" \
    "${quiet[@]}" "$app/chunked?parts=6&size=300&delay_ms=20" "${quiet[@]}" "$app/status/404"
stop_capture

# Frame numbers of the server's data segments (payload start in hex) to pick cuts.
server_segments() {
    tshark -r "$1" -Y "tcp.srcport == $app_port && tcp.len > 0" -T fields \
        -e frame.number -e tcp.payload 2>/dev/null
}

# 7. Mid-connection: drop everything up to and including the third body
#    segment of /slow (handshake, its request, its headers, two body pieces).
cut=$(server_segments "$tmp/full_mid.pcap" | sed -n 4p | cut -f1)
editcap "$tmp/full_mid.pcap" "$tmp/midstream.pcap" "1-$cut"

# 8. Lost segments: the 4th body piece of /slow (a gap inside a Content-Length
#    body), the segment with /hello's response headers (a gap in headers), and
#    the segment with the 3rd chunk of /chunked (a gap over chunk framing).
python3 - "$tmp/full_lossy.pcap" "$app_port" >"$tmp/drop" <<'EOF'
import subprocess, sys
path, port = sys.argv[1], sys.argv[2]
rows = subprocess.run(["tshark", "-r", path, "-Y", f"tcp.srcport == {port} && tcp.len > 0",
                       "-T", "fields", "-e", "frame.number", "-e", "tcp.payload"],
                      capture_output=True, text=True, check=True).stdout.split("\n")
segments = [(int(r.split("\t")[0]), bytes.fromhex(r.split("\t")[1])) for r in rows if r.strip()]
heads = [i for i, (_, p) in enumerate(segments) if p.startswith(b"HTTP/1.1 ")]
slow_body = segments[heads[0] + 1:heads[1]]
hello_head = segments[heads[1]]
chunk_segments = [s for s in segments[heads[2] + 1:heads[3]] if not s[1].startswith(b"0\r\n")]
print(slow_body[3][0], hello_head[0], chunk_segments[2][0])
EOF
read -r drop_body drop_head drop_chunk <"$tmp/drop"
editcap "$tmp/full_lossy.pcap" "$tmp/lossy.pcap" "$drop_body" "$drop_head" "$drop_chunk"

for name in simple_server keepalive post_json basic_auth pipelined unanswered midstream lossy; do
    mv "$tmp/$name.pcap" "$here/$name.pcap"
    echo "wrote $here/$name.pcap ($(stat -c %s "$here/$name.pcap") bytes)"
done

# Verify with tshark: requests and responses per file (the counts README.md states).
count() { tshark -n -r "$here/$1.pcap" -Y "$2" 2>/dev/null | wc -l; }   # frames
values() {     # occurrences of a field (one frame may hold several pipelined messages)
    tshark -n -r "$here/$1.pcap" -Y "$2" -T fields -e "$2" 2>/dev/null | tr ',' '\n' | grep -c . || true
}
check() {      # check FILE LABEL FILTER EXPECTED [values]
    local got
    if [[ ${5:-} == values ]]; then got=$(values "$1" "$3"); else got=$(count "$1" "$3"); fi
    printf '%-14s %-34s %3s (expected %s)\n' "$1" "$2" "$got" "$4"
    [[ $got -eq $4 ]] || { echo "unexpected count for $1: $2" >&2; exit 1; }
}
check simple_server "requests"               "http.request"                 4
check simple_server "responses"              "http.response"                4
check simple_server "404 responses"          "http.response.code == 404"    1
check keepalive     "requests"               "http.request"                 6
check keepalive     "responses"              "http.response"                6
check keepalive     "TCP connections"        "tcp.flags.syn == 1 && tcp.flags.ack == 0" 2
check keepalive     "chunked responses"      "http.transfer_encoding"       2
check keepalive     "4xx/5xx responses"      "http.response.code >= 400"    2
check post_json     "POST requests"          "http.request.method == \"POST\"" 2
check post_json     "100 Continue"           "http.response.code == 100"    1
check post_json     "200 responses"          "http.response.code == 200"    2
check basic_auth    "requests"               "http.request"                 4
check basic_auth    "with Basic credentials" "http.authbasic"               2
check basic_auth    "401 responses"          "http.response.code == 401"    2
check pipelined     "requests"               "http.request.method"          4 values
check pipelined     "responses"              "http.response.code"           4 values
check pipelined     "client data segments"   "tcp.dstport == $app_port && tcp.len > 0" 1
check unanswered    "requests"               "http.request"                 1
check unanswered    "responses"              "http.response"                0
check midstream     "SYN"                    "tcp.flags.syn == 1"           0
check midstream     "requests"               "http.request"                 3
check lossy         "requests"               "http.request"                 4
