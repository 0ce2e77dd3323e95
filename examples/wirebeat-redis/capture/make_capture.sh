#!/usr/bin/env bash
# Regenerate redis.pcap and transcript.txt: a real redis-server and redis-cli on loopback.
#
# redis-server (Debian's redis-server package) runs on port 6379 with no
# persistence; tcpdump records `tcp port 6379` on lo. Every command is one
# redis-cli invocation (one connection) whose typed output (--no-raw) goes to
# transcript.txt: the independent record the plug-in's tests compare against.
# Then one connection pipelines commands with `redis-cli --pipe` (all written
# before any reply is read); redis-cli's own summary line goes to the transcript.
#
# Run as root (tcpdump on lo). Needs redis-server, redis-cli, tcpdump.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
port=6379
server_pid=
tcpdump_pid=
cleanup() {
    if [[ -n $tcpdump_pid ]]; then kill "$tcpdump_pid" 2>/dev/null || true; fi
    if [[ -n $server_pid ]]; then kill "$server_pid" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT

if (echo >/dev/tcp/127.0.0.1/$port) 2>/dev/null; then
    echo "port $port is in use: stop what listens there first" >&2
    exit 1
fi
redis-server --port $port --bind 127.0.0.1 --save '' --appendonly no --dir "$tmp" >"$tmp/server.log" 2>&1 &
server_pid=$!
for _ in $(seq 50); do
    redis-cli -p $port PING >/dev/null 2>&1 && break
    sleep 0.1
done

tcpdump -i lo -n -U --immediate-mode -Z root -w "$here/redis.pcap" "tcp port $port" 2>"$tmp/tcpdump.log" &
tcpdump_pid=$!
for _ in $(seq 50); do
    grep -q "listening on" "$tmp/tcpdump.log" && break
    sleep 0.1
done

transcript="$here/transcript.txt"
: >"$transcript"
run() {     # run ARGS... : one connection, its command and redis-cli's typed answer
    printf '> %s\n' "$*" >>"$transcript"
    redis-cli -p $port --no-raw "$@" >>"$transcript" 2>&1 || true
}
run SET greeting "hello world"
run GET greeting
run INCR visits
run INCRBY visits 41
run RPUSH queue a b c
run LRANGE queue 0 -1
run GET nothing-here
run HSET user:1 name alice lang python
run HGETALL user:1
run INCR greeting
run NOSUCHCOMMAND one two
run DEL greeting visits queue user:1 pipe:n

# Pipelined: every command written before the first reply is read.
printf '*3\r\n$3\r\nSET\r\n$6\r\npipe:n\r\n$1\r\n1\r\n*2\r\n$4\r\nINCR\r\n$6\r\npipe:n\r\n*2\r\n$3\r\nGET\r\n$6\r\npipe:n\r\n*2\r\n$5\r\nLPUSH\r\n$6\r\npipe:n\r\n*1\r\n$4\r\nPING\r\n' >"$tmp/pipe.resp"
printf '> --pipe SET pipe:n 1; INCR pipe:n; GET pipe:n; LPUSH pipe:n; PING\n' >>"$transcript"
redis-cli -p $port --pipe <"$tmp/pipe.resp" 2>&1 | grep -E "errors" >>"$transcript"

sleep 0.3
kill -TERM "$tcpdump_pid"
wait "$tcpdump_pid" || true
tcpdump_pid=
chmod 644 "$here/redis.pcap" "$transcript"
cat "$transcript"
