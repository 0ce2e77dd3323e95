"""Benchmark: what the RTP heuristic (and re-probing turned-down flows) costs.

    .venv/bin/python tests/bench/rtp_heuristic.py [--datagrams N] [--runs R]

Generates, in tests/bench/out/, a capture of N random UDP datagrams on 2000
flows (a quarter of the flows starting with the RTP version bits: the worst
case for a heuristic) and times `wirebeat run -I FILE --console` on it with
`wirebeat.protocols.rtp.heuristic` false and true, alternating, R runs each,
in the same process tree, and prints the medians. Not a test: nothing asserts.
The machine is shared, so compare the two numbers of one run, not across runs.
"""
from __future__ import annotations

import argparse
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(ROOT / "pcaps" / "rtp"))
import make_captures as mc  # noqa: E402
import pcapgen as pg  # noqa: E402


def random_udp(path: Path, datagrams: int) -> None:
    rng = random.Random(1207)
    packets = []
    for n in range(datagrams):
        flow = rng.randrange(2000)
        payload = bytearray(rng.randbytes(rng.randrange(8, 400)))
        if flow % 4 == 0:
            payload[0] = 0x80 | rng.randrange(0x40)
        packets.append((mc.START_NS + n * 100_000,
                        mc.frame(f"10.30.{flow // 250}.{flow % 250 + 1}", "10.31.0.1",
                                 20000 + flow, 30000 + flow * 2, bytes(payload))))
    pg.write_pcap(path, packets)


def timed(path: Path, heuristic: bool) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "wirebeat.cli", "run", "-I", str(path), "--console",
                    "-E", f"wirebeat.protocols.rtp.heuristic={str(heuristic).lower()}"],
                   cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--datagrams", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    (HERE / "out").mkdir(exist_ok=True)
    path = HERE / "out" / f"random-udp-{args.datagrams}.pcap"
    if not path.exists():
        random_udp(path, args.datagrams)
    times: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(args.runs):
        for heuristic in (False, True):
            times[heuristic].append(timed(path, heuristic))
    for heuristic, values in times.items():
        median = statistics.median(values)
        print(f"heuristic={str(heuristic).lower():5}  median {median:.2f} s  "
              f"{args.datagrams / median:,.0f} datagrams/s  (runs: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
