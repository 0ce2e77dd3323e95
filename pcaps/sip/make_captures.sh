#!/usr/bin/env bash
# Regenerate the real SIP call captures in pcaps/sip/ from real programs: sipp
# (Debian package sip-tester) as caller and callee, tcpdump recording.
#
# Each call runs inside a network namespace of its own (only its loopback is
# up), so no packet leaves it. The callee listens on 127.0.0.1:5060 (media port
# 30000), the caller on 127.0.0.1:5062 (media port 20000). After the ACK both
# play their media with sipp's play_pcap_audio from pcaps made by make_audio.py
# (tests/pcapgen.py builders; nothing copied from elsewhere). Calls:
#
#   call_pcmu.pcap        UDP; PCMU both ways; the caller also sends an RTCP SR + CNAME
#   call_two_codecs.pcap  UDP; offer/answer 0 and 111 (opus/48000/2): caller
#                         sends PCMU, callee sends opus (48 kHz clock from rtpmap)
#   call_dtmf.pcap        UDP; offer/answer 0 and 101 (telephone-event/8000):
#                         the caller's stream carries two RFC 4733 events
#   call_tcp.pcap         SIP over TCP; PCMU both ways
#   register_busy.pcap    UDP; REGISTER, 401 digest challenge, REGISTER with
#                         Authorization, 200; INVITE refused with 486 Busy Here
#
# Run as root. Idempotent: leftovers of an earlier run are removed first; the
# namespace, sipp and tcpdump are removed on exit, failure included. Needs
# iproute2, sipp, tcpdump, the project's .venv; tshark (optional) verifies.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
python="$root/.venv/bin/python"
ns=wirebeat-sip
tmp=$(mktemp -d)
pids=()

cleanup() {
    for pid in "${pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
ip netns del "$ns" 2>/dev/null || true
ip netns add "$ns"
ip -n "$ns" link set lo up

"$python" "$here/make_audio.py" "$tmp/audio" >/dev/null

# call NAME TRANSPORT(u1|t1) UAC_SCENARIO UAS_SCENARIO [sipp options for both...]
call() {
    local name=$1 transport=$2 uac=$3 uas=$4
    shift 4
    local dir="$tmp/$name"
    mkdir -p "$dir/uac" "$dir/uas"
    [[ -f "$tmp/audio/${name}_uac.pcap" ]] && cp "$tmp/audio/${name}_uac.pcap" "$dir/uac/uac.pcap"
    [[ -f "$tmp/audio/${name}_uas.pcap" ]] && cp "$tmp/audio/${name}_uas.pcap" "$dir/uas/uas.pcap"
    # -Z root: Debian's tcpdump would otherwise drop to user tcpdump and be unable
    # to write into $tmp; --immediate-mode -U: nothing is held back when stopped.
    ip netns exec "$ns" tcpdump -i lo -n --immediate-mode -U -Z root -w "$dir/capture.pcap" \
        'udp or tcp' 2>"$dir/tcpdump.log" &
    local tcpdump_pid=$!
    pids+=("$tcpdump_pid")
    for _ in $(seq 50); do
        grep -q "listening on" "$dir/tcpdump.log" && break
        sleep 0.1
    done
    (cd "$dir/uas" && exec ip netns exec "$ns" sipp -sf "$here/scenarios/$uas" -t "$transport" \
        -i 127.0.0.1 -p 5060 -mi 127.0.0.1 -mp 30000 -m 1 -nostdin "$@" >/dev/null 2>&1) &
    local uas_pid=$!
    pids+=("$uas_pid")
    sleep 0.5
    (cd "$dir/uac" && ip netns exec "$ns" sipp -sf "$here/scenarios/$uac" -t "$transport" \
        -i 127.0.0.1 -p 5062 -mi 127.0.0.1 -mp 20000 -m 1 -nostdin "$@" 127.0.0.1:5060 \
        >/dev/null 2>&1) || { echo "$name: caller failed" >&2; exit 1; }
    wait "$uas_pid" || { echo "$name: callee failed" >&2; exit 1; }
    sleep 0.3                           # the last datagrams reach the capture
    kill -TERM "$tcpdump_pid"
    wait "$tcpdump_pid" || true
    mv "$dir/capture.pcap" "$here/$name.pcap.tmp"
    mv "$here/$name.pcap.tmp" "$here/$name.pcap"
    echo "wrote $here/$name.pcap ($(stat -c %s "$here/$name.pcap") bytes)"
}

call call_pcmu u1 uac.xml uas.xml -key fmt "0" -key attr "a=ptime:20"
call call_two_codecs u1 uac.xml uas.xml -key fmt "0 111" -key attr "a=rtpmap:111 opus/48000/2"
call call_dtmf u1 uac.xml uas.xml -key fmt "0 101" -key attr "a=rtpmap:101 telephone-event/8000"
call call_tcp t1 uac.xml uas.xml -key fmt "0" -key attr "a=ptime:20"
call register_busy u1 uac_register_busy.xml uas_register_busy.xml -au alice -ap wonderland

if ! command -v tshark >/dev/null; then
    echo "tshark not installed: contents not verified" >&2
    exit 0
fi
check() {      # check FILE LABEL FILTER EXPECTED
    local got
    got=$(tshark -n -r "$here/$1" -Y "$3" 2>/dev/null | wc -l)
    printf '%-22s %-34s %4s (expected %s)\n' "$1" "$2" "$got" "$4"
    [[ $got -eq $4 ]] || { echo "unexpected count for $1: $2" >&2; exit 1; }
}
for name in call_pcmu call_two_codecs call_dtmf; do
    check "$name.pcap" "SIP messages" "sip" 6          # INVITE 180 200 ACK BYE 200
done
check call_pcmu.pcap "RTP packets" "rtp" 400
check call_pcmu.pcap "RTCP sender reports" "rtcp.pt == 200" 1
check call_two_codecs.pcap "opus packets (type 111)" "rtp.p_type == 111" 200
check call_dtmf.pcap "telephone-event packets" "rtpevent" 22
check call_tcp.pcap "SIP messages over TCP" "sip && tcp" 6
check call_tcp.pcap "RTP packets" "rtp" 400
check register_busy.pcap "SIP messages" "sip" 8             # REGISTER 401 REGISTER 200 INVITE 100 486 ACK
check register_busy.pcap "REGISTER with Authorization" "sip.Authorization" 1
