#!/usr/bin/env python3
"""Floods and hostile traffic: peak RSS, caps hit, throughput, and normal traffic still decoded.

    python tests/bench/floods.py [--scale 1.0] [--only NAME]... [--markdown]

Each flood is written to a pcap (generated here, exact ground truth) with
1000 normal ICMP echo pairs mixed in evenly, then decoded by the real
command line (`wirebeat run -I FILE --console`). For each flood the script
reports wirebeat's peak RSS (its own summary line, VmHWM), the counters that
show which cap was hit, packets per CPU second (user + sys of wirebeat), and whether all 1000 normal pairs still
came out as answered ICMP documents. A benchmark, not a timed test: numbers
depend on the machine (and on what else runs on it).

Floods (sizes at --scale 1):
- syn: 1,000,000 SYNs to port 80 from distinct source address/port pairs,
  never answered (half-open connections);
- fragments: 300,000 IPv4 first fragments of datagrams that never complete,
  plus 50,000 overlapping fragment pairs;
- tiny_segments: one HTTP connection, 200,000 one-byte segments, every
  second one first (so each leaves a hole until its neighbour comes);
- dns_ids: 200,000 DNS queries with distinct ids, never answered;
- echo_requests: 200,000 ICMP echo requests with distinct ids, never answered;
- http_hostile: 40 HTTP connections each sending a 1 MiB header line, and
  40 responses with an endless chunked body (24 MiB each, never finished);
- rtp_ssrcs: 200,000 RTP packets, each with a new random SSRC, on
  heuristically detected UDP flows.

The bound each flood is held to is stated in docs/limits.md: the baseline
RSS plus the sum of the documented caps that flood can fill.

`--base REV` runs each flood on that revision too (exported as
tests/bench/run.py's `--base` does), on the same pcap, base first.
`--flows-off` runs every flood with flow reports off, so that the cost of
the flood's own tables (TCP connections, pending queries and requests) is
not hidden behind the flow table's.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import resource
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

import pcapgen as g  # noqa: E402

T0 = 1_770_000_000_000_000_000
NORMAL_PAIRS = 1000
Packet = tuple[int, bytes]


def _normal(seq: int, ts: int) -> list[Packet]:
    a, b = "192.0.2.1", "192.0.2.2"
    return [(ts, g.ethernet(g.ipv4(a, b, g.IPPROTO_ICMP, g.icmp_echo(4242, seq)))),
            (ts + 1000, g.ethernet(g.ipv4(b, a, g.IPPROTO_ICMP, g.icmp_echo(4242, seq, reply=True))))]


def _mixed(flood: Iterator[bytes], total: int) -> Iterator[Packet]:
    """The flood's frames with the normal pairs spread evenly among them; ts 10 us apart."""
    every = max(1, total // NORMAL_PAIRS)
    ts, seq = T0, 0
    for i, frame in enumerate(flood):
        if i % every == 0 and seq < NORMAL_PAIRS:
            yield from _normal(seq, ts)
            seq += 1
        ts += 10_000
        yield ts, frame
    while seq < NORMAL_PAIRS:
        yield from _normal(seq, ts)
        seq += 1
        ts += 10_000


def _addr(n: int) -> str:
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}"


def syn(n: int) -> Iterator[bytes]:
    for i in range(n):
        src = _addr(i // 50000 + 1 << 16 | (i & 0xFFFF))
        yield g.ethernet(g.ipv4(src, "172.16.0.80", g.IPPROTO_TCP,
                                g.tcp(src, "172.16.0.80", 1024 + i % 60000, 80, seq=i, flags="S", checksum=0)))


def fragments(n: int) -> Iterator[bytes]:
    for i in range(n):
        src = _addr(i % 200 + 1)
        yield g.ethernet(g.ipv4(src, "172.16.0.9", g.IPPROTO_UDP, b"\xab" * 1480, ident=i & 0xFFFF,
                                more_fragments=True))
    for i in range(n // 6):
        src = _addr(300 + i % 50)
        for offset in (0, 8):        # overlapping: the second starts inside the first
            yield g.ethernet(g.ipv4(src, "172.16.0.9", g.IPPROTO_UDP, b"\xcd" * 64, ident=i & 0xFFFF,
                                    more_fragments=True, frag_offset_bytes=offset))


def tiny_segments(n: int) -> Iterator[bytes]:
    a, b = "198.51.100.1", "198.51.100.2"

    def seg(seq: int, payload: bytes, flags: str) -> bytes:
        return g.ethernet(g.ipv4(a, b, g.IPPROTO_TCP, g.tcp(a, b, 40000, 80, payload, seq=seq, flags=flags,
                                                              checksum=0)))
    yield seg(99, b"", "S")
    yield g.ethernet(g.ipv4(b, a, g.IPPROTO_TCP, g.tcp(b, a, 80, 40000, seq=499, ack=100, flags="SA", checksum=0)))
    data = (b"GET /" + b"a" * (n - 20) + b" HTTP/1.1\r\n\r\n")[:n]
    for i in range(1, len(data), 2):            # odd bytes first: every one leaves a hole
        yield seg(100 + i, data[i:i + 1], "PA")
    for i in range(0, len(data), 2):
        yield seg(100 + i, data[i:i + 1], "PA")


def dns_ids(n: int) -> Iterator[bytes]:
    for i in range(n):
        query = struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + b"\x03www\x07example\x03com\x00\x00\x01\x00\x01"
        src = _addr(1000 + i // 60000)
        yield g.ethernet(g.ipv4(src, "172.16.0.53", g.IPPROTO_UDP,
                                g.udp(src, "172.16.0.53", 1024 + i % 60000, 53, query, checksum=0)))


def echo_requests(n: int) -> Iterator[bytes]:
    for i in range(n):
        src = _addr(4000 + i // 60000)
        yield g.ethernet(g.ipv4(src, "172.16.0.7", g.IPPROTO_ICMP, g.icmp_echo(i % 60000, i // 60000)))


def http_hostile(n: int) -> Iterator[bytes]:
    connections = max(1, n)
    for c in range(connections):
        a, b = _addr(2000 + c), "172.16.0.81"
        sport = 30000 + c
        state = {"c": 1000, "s": 5000}

        def seg(from_server: bool, payload: bytes, flags: str = "PA") -> bytes:
            src, dst, sp, dp = (b, a, 80, sport) if from_server else (a, b, sport, 80)
            key = "s" if from_server else "c"
            frame = g.ethernet(g.ipv4(src, dst, g.IPPROTO_TCP, g.tcp(
                src, dst, sp, dp, payload, seq=state[key], ack=state["c" if from_server else "s"],
                flags=flags, checksum=0)))
            state[key] += len(payload) + (1 if "S" in flags else 0)
            return frame
        yield seg(False, b"", "S")
        yield seg(True, b"", "SA")
        if c % 2 == 0:       # a 1 MiB header line, never ended
            yield seg(False, b"GET / HTTP/1.1\r\nX-Huge: ")
            for _ in range(1024):
                yield seg(False, b"h" * 1024)
        else:                # a response whose chunked body never ends
            yield seg(False, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
            yield seg(True, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"400\r\n" + b"c" * 1024 + b"\r\n"
            for _ in range(24 * 1024):
                yield seg(True, chunk)


def rtp_ssrcs(n: int) -> Iterator[bytes]:
    rng = random.Random(7)
    for i in range(n):
        rtp = struct.pack("!BBHII", 0x80, 0, i & 0xFFFF, i * 160 & 0xFFFFFFFF, rng.getrandbits(32)) + b"\xd5" * 160
        src = _addr(3000 + i % 500)
        yield g.ethernet(g.ipv4(src, "172.16.0.5", g.IPPROTO_UDP,
                                g.udp(src, "172.16.0.5", 20000 + 2 * (i % 500), 30000, rtp, checksum=0)))


FLOODS = {
    "syn": (syn, 1_000_000, []),
    "fragments": (fragments, 300_000, []),
    "tiny_segments": (tiny_segments, 200_000, []),
    "dns_ids": (dns_ids, 200_000, []),
    "echo_requests": (echo_requests, 200_000, []),
    "http_hostile": (http_hostile, 40, []),
    "rtp_ssrcs": (rtp_ssrcs, 200_000, ["-E", "wirebeat.protocols.rtp.heuristic=true"]),
    "baseline": (lambda n: iter(()), 0, []),
}


def run_one(name: str, scale: float, workdir: Path, flows: bool = True,
            trees: tuple[Path | None, ...] = (None,)) -> list[dict[str, object]]:
    """The flood written once, then run by each tree (None: the installed wirebeat)."""
    make, size, extra = FLOODS[name]
    n = max(1, int(size * scale)) if size else 0
    path = workdir / f"{name}.pcap"
    started = time.monotonic()
    packets = g.write_pcap(path, _mixed(make(n), n if name != "http_hostile" else 40 * 25000))
    generated_s = time.monotonic() - started
    results = []
    for tree in trees:
        result = run_tree(path, extra + ([] if flows else ["-E", "wirebeat.flows.enabled=false"]), tree)
        results.append({"flood": name, "packets": packets, "tree": "installed" if tree is None else "base",
                        **result, "generate_s": round(generated_s, 1)})
    path.unlink()
    return results


def run_tree(path: Path, extra: list[str], tree: Path | None) -> dict[str, object]:
    env = None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen([sys.executable, "-m", "wirebeat.cli", "run", "-I", str(path), "--console",
                             "-E", "logging.metrics.period=0", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    normal_ok = documents = 0
    assert proc.stdout is not None
    for line in proc.stdout:
        documents += 1
        if b'"dataset":"icmp"' in line and b'"192.0.2.1"' in line and b'"status":"OK"' in line:
            normal_ok += 1
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = proc.wait()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU time (user + sys) of wirebeat: the host is shared, so wall time says little.
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    summary = next((json.loads(line) for line in err.splitlines()
                    if line.startswith("{") and '"event": "summary"' in line), {})
    match = re.search(r"peak RSS (\d+) MiB", err)
    caps = {k: v for k, v in summary.items()
            if any(word in k for word in ("evicted", "cap", "dropped", "timed_out", "malformed",
                                          "overlap", "gap", "skipped", "too_", "pending"))}
    return {"exit": code, "documents": documents,
            "normal_pairs_decoded": normal_ok, "peak_rss_mib": int(match.group(1)) if match else None,
            "packets_per_cpu_s": round(summary.get("packets.read", 0) / cpu_s) if cpu_s else None,
            "cpu_s": round(cpu_s, 1), "wall_s": summary.get("elapsed_s"), "caps": caps}


def syn_state(n: int) -> dict[str, object]:
    """Memory per half-open connection, in-process: `n` SYNs into one engine (flows on, as the CLI).

    Without the pcap, the subprocess and the output (documents, such as the
    reports of evicted flows, are dropped as the pipeline sends them), so the
    growth of this process's peak RSS is the engine's tables: TCP state, flow
    records, MAC pairs, ended flows' ids and, before decoders were made at
    the first payload, each connection's decoder. Past 65,536 SYNs the tables
    are full and evict: the growth is also taken at a few counts on the way.
    """
    import gc
    from wirebeat.registry import discover
    from wirebeat.testing import ListOutput, make_engine

    class Dropped(ListOutput):
        def send(self, batch, stopping) -> int:
            return 0

    engine, _pipeline, _output, _stats = make_engine([r.spec for r in discover()], strict=False,
                                                     overrides={"wirebeat.flows.enabled": True},
                                                     output=Dropped())
    gc.collect()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    at = {}
    for i, frame in enumerate(syn(n), 1):
        engine.on_frame(1_700_000_000 + i * 1e-4, g.LINKTYPE_ETHERNET, frame, "syn")
        if i in (65536, 100_000, 150_000, 200_000, 500_000) or i == n:
            gc.collect()
            at[i] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) * 1024   # bytes
    tracked = len(engine.sources["syn"].tcp.connections)
    return {"syns": n, "connections_tracked": tracked, "rss_growth_mib": round(at[n] / 2**20),
            "rss_growth_mib_after": {k: round(v / 2**20) for k, v in at.items()},
            "bytes_per_connection": round(at[n] / tracked)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--syn-state", type=int, metavar="N",
                        help="only measure memory per half-open connection, in-process, with N SYNs")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--only", action="append", default=[])
    parser.add_argument("--base", metavar="REV", help="also run each flood on this revision")
    parser.add_argument("--flows-off", action="store_true", help="flow reports off in every run")
    parser.add_argument("--markdown", action="store_true", help="also print a table for docs/limits.md")
    args = parser.parse_args()
    if args.syn_state:
        print(json.dumps(syn_state(args.syn_state)))
        return 0
    names = args.only or ["baseline", *[n for n in FLOODS if n != "baseline"]]
    trees: tuple[Path | None, ...] = (None,)
    if args.base:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from run import export_base
        trees = (export_base(args.base), None)
    results = []
    with tempfile.TemporaryDirectory(prefix="wirebeat-floods-") as tmp:
        for name in names:
            for result in run_one(name, args.scale, Path(tmp), not args.flows_off, trees):
                results.append(result)
                print(json.dumps(result), flush=True)
    if args.markdown:
        print("\n| flood | tree | packets | peak RSS | packets per CPU second | normal pairs decoded | caps and counters hit |")
        print("| --- | --- | ---: | ---: | ---: | ---: | --- |")
        for r in results:
            caps = ", ".join(f"`{k}` {v}" for k, v in sorted(r["caps"].items())) or "-"
            print(f"| {r['flood']} | {r['tree']} | {r['packets']} | {r['peak_rss_mib']} MiB | {r['packets_per_cpu_s']} | "
                  f"{r['normal_pairs_decoded']}/{NORMAL_PAIRS} | {caps} |")
    return 0 if all(r["normal_pairs_decoded"] == NORMAL_PAIRS for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
