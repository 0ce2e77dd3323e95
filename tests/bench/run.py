"""Benchmark: file -> console throughput of wirebeat next to `tshark -T ek`.

Run with `make bench` (or `.venv/bin/python tests/bench/run.py`). Generates the
mixed capture with tests/bench/gen_mixed.py (cached in tests/bench/out/),
then times, in the same run on the same file:

- `wirebeat run -I FILE --console > /dev/null`: packets/s, documents/s and
  peak RSS (the kernel's high-water mark, from wirebeat's summary line);
- `tshark -r FILE -T ek > /dev/null`: packets/s, and the ratio;
- per-packet documents (`wirebeat.packets.enabled`, decoders off, then on),
  the same job as `tshark -T ek`, against that tshark run.

An HTTP-heavy capture (web connections only) is timed the same way, in
transactions/s. Detection on untracked TCP (`wirebeat.protocols.tls.detect`) is
timed on and off on the HTTP capture with the HTTP decoder disabled
(`--detection-only` runs just that). Peak RSS is also measured on a capture a fifth as long: with bounded state it
must not grow with the capture's length. Not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = HERE / "out"


def generate(packets: int, mix: str = "mixed") -> Path:
    OUT.mkdir(exist_ok=True)
    path = OUT / f"{mix}-{packets}.pcap"
    if not path.exists():
        print(f"generating {path.name} ...", file=sys.stderr)
        subprocess.run([sys.executable, str(HERE / "gen_mixed.py"), str(path), "--packets", str(packets),
                        "--mix", mix], check=True, stderr=subprocess.DEVNULL)
    return path


def _run_child(cmd: list[str], cwd: Path) -> tuple[float, str]:
    """Wall time and stderr of one child; its stdout is discarded."""
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return elapsed, proc.stderr.decode()


def bench_wirebeat(path: Path, extra: list[str]) -> dict[str, float]:
    cmd = [sys.executable, "-m", "wirebeat.cli", "run", "-I", str(path), "--console",
           "-E", "logging.level=warning", *extra]
    elapsed, err = _run_child(cmd, ROOT)
    m = re.search(r"(\d+) packets, (\d+) documents .* peak RSS (\d+) MiB", err)
    if not m:
        raise SystemExit(f"no summary line from wirebeat:\n{err[-2000:]}")
    packets, docs, rss_mib = int(m.group(1)), int(m.group(2)), int(m.group(3))
    return {"seconds": elapsed, "packets": packets, "documents": docs,
            "packets_per_s": packets / elapsed, "documents_per_s": docs / elapsed,
            "peak_rss_mib": rss_mib}


def bench_tshark(path: Path, packets: int) -> dict[str, float] | None:
    tshark = shutil.which("tshark")
    if tshark is None:
        print("tshark not found: install it (scripts/install-deps.sh)", file=sys.stderr)
        return None
    elapsed, _ = _run_child([tshark, "-n", "-r", str(path), "-T", "ek"], ROOT)
    return {"seconds": elapsed, "packets_per_s": packets / elapsed}


def bench_detection(web: Path, rounds: int = 3) -> None:
    """What detection on untracked TCP costs: TLS's detector on and off, alternated, same file.

    The HTTP capture is read with the HTTP decoder disabled, so every TCP
    segment is on no configured port and, when it carries payload, is offered
    to the detectors (which turn it down). Best of `rounds` runs each.
    """
    off = ["-E", "wirebeat.protocols.http.enabled=false"]
    runs: dict[str, list[float]] = {"detect off": [], "detect on": []}
    for _ in range(rounds):
        runs["detect off"].append(bench_wirebeat(web, [*off, "-E", "wirebeat.protocols.tls.detect=false"])["seconds"])
        runs["detect on"].append(bench_wirebeat(web, off)["seconds"])
    best = {k: min(v) for k, v in runs.items()}
    packets = bench_wirebeat(web, off)["packets"]
    print(f"untracked TCP ({web.name}, HTTP decoder off): detection off {packets / best['detect off']:,.0f} "
          f"packets/s, on {packets / best['detect on']:,.0f} packets/s "
          f"({(best['detect on'] / best['detect off'] - 1) * 100:+.1f}% time; best of {rounds})")
    sys.path.insert(0, str(ROOT))
    import timeit
    from wirebeat.decoders.tls import looks_like_client_hello
    segment = b"GET /index.html HTTP/1.1\r\nHost: example\r\n\r\n"
    n = 1_000_000
    per_call = timeit.timeit(lambda: looks_like_client_hello(segment), number=n) / n
    print(f"looks_like_client_hello on a non-TLS segment: {per_call * 1e9:.0f} ns per call")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=500_000)
    parser.add_argument("--skip-tshark", action="store_true")
    parser.add_argument("--detection-only", action="store_true",
                        help="only measure detection on untracked TCP")
    args = parser.parse_args()
    if args.detection_only:
        bench_detection(generate(args.packets // 5, "http"))
        return 0

    big = generate(args.packets)
    small = generate(args.packets // 5)
    print(f"capture: {big.name} ({big.stat().st_size / 2**20:.1f} MiB), "
          f"{os.cpu_count()} cores, python {sys.version.split()[0]}")

    wb_small = bench_wirebeat(small, [])
    wb = bench_wirebeat(big, [])
    print(f"wirebeat file->console: {wb['packets']} packets, {wb['documents']} documents in "
          f"{wb['seconds']:.2f} s = {wb['packets_per_s']:,.0f} packets/s, "
          f"{wb['documents_per_s']:,.0f} documents/s, peak RSS {wb['peak_rss_mib']} MiB")
    print(f"peak RSS at {wb_small['packets']} packets: {wb_small['peak_rss_mib']} MiB; "
          f"at {wb['packets']} packets: {wb['peak_rss_mib']} MiB")
    ts = None
    if not args.skip_tshark:
        ts = bench_tshark(big, wb["packets"])
        if ts:
            print(f"tshark -T ek: {ts['seconds']:.2f} s = {ts['packets_per_s']:,.0f} packets/s; "
                  f"wirebeat is {wb['packets_per_s'] / ts['packets_per_s']:.1f}x faster")

    # Per-packet documents: the job `tshark -T ek` does, timed against it on the same capture.
    decoders = ["dhcpv4", "dns", "http", "icmp", "rtp", "sip"]
    only_packets = ["-E", "wirebeat.packets.enabled=true",
                    *[a for d in decoders for a in ("-E", f"wirebeat.protocols.{d}.enabled=false")]]
    wb_pkt = bench_wirebeat(big, only_packets)
    wb_pkt_all = bench_wirebeat(big, ["-E", "wirebeat.packets.enabled=true"])
    print(f"wirebeat per-packet documents only: {wb_pkt['packets_per_s']:,.0f} packets/s "
          f"({wb_pkt['documents']} documents); with every decoder as well: "
          f"{wb_pkt_all['packets_per_s']:,.0f} packets/s")
    if not args.skip_tshark and ts:
        print(f"per-packet documents vs tshark -T ek: {wb_pkt['packets_per_s'] / ts['packets_per_s']:.1f}x "
              f"(target 25x)")

    # HTTP-heavy: 8-packet connections, one transaction each.
    web = generate(args.packets // 5, "http")
    wb_http = bench_wirebeat(web, [])
    print(f"wirebeat HTTP file->console ({web.name}): {wb_http['packets_per_s']:,.0f} packets/s, "
          f"{wb_http['documents_per_s']:,.0f} transactions/s, peak RSS {wb_http['peak_rss_mib']} MiB")
    if not args.skip_tshark:
        ts_http = bench_tshark(web, wb_http["packets"])
        if ts_http:
            tshark_tps = wb_http["documents"] / ts_http["seconds"]
            print(f"tshark -T ek on it: {ts_http['packets_per_s']:,.0f} packets/s "
                  f"(= {tshark_tps:,.0f} transactions/s at the same count); wirebeat is "
                  f"{wb_http['packets_per_s'] / ts_http['packets_per_s']:.1f}x faster")
    bench_detection(web)
    return 0


if __name__ == "__main__":
    sys.exit(main())
