"""Benchmark: what a TCP segment costs, this tree against a base revision (issue #15).

    python tests/bench/tcp_cost.py [--base main] [--packets 100000] [--repeat 3]

Times `wirebeat run -I FILE --console` (CPU time, user+sys of the child) on
the realistic capture with flows off and on and on the mixed capture, this
tree and `--base` alternating in each round, best of `--repeat` runs each.
The cost per TCP segment is the CPU time of the realistic capture minus that of
the same capture without its TCP frames (written next to it,
`notcp-realistic-N.pcap`), divided by the number of TCP frames: everything a
TCP segment costs, its decoders and their documents included.

The base revision is exported as in same_output.py and given this tree's
built C extensions (`beat/_*.so`), so both run with the accelerator: compare
only revisions whose C sources are the same. Not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import shutil
import struct
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import ROOT, bench_wirebeat, export_base, generate, generate_realistic  # noqa: E402

_RECORD = struct.Struct("<IIII")


def is_tcp(frame: bytes) -> bool:
    """An Ethernet frame (VLAN tags skipped) carrying TCP over IPv4 or IPv6 (no extension headers)."""
    offset, ethertype = 12, frame[12:14]
    while ethertype in (b"\x81\x00", b"\x88\xa8") and len(frame) >= offset + 6:
        offset += 4
        ethertype = frame[offset:offset + 2]
    ip = offset + 2
    if ethertype == b"\x08\x00":
        return len(frame) > ip + 9 and frame[ip + 9] == 6
    if ethertype == b"\x86\xdd":
        return len(frame) > ip + 6 and frame[ip + 6] == 6
    return False


def without_tcp(path: Path) -> tuple[Path, int]:
    """A copy of the pcap `path` without its TCP frames, and how many there were."""
    out = path.with_name(f"notcp-{path.name}")
    data = path.read_bytes()
    kept, dropped, offset = [data[:24]], 0, 24
    while offset + 16 <= len(data):
        caplen = _RECORD.unpack_from(data, offset)[2]
        record = data[offset:offset + 16 + caplen]
        offset += 16 + caplen
        if is_tcp(record[16:]):
            dropped += 1
        else:
            kept.append(record)
    if not out.exists():
        out.write_bytes(b"".join(kept))
    return out, dropped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main")
    parser.add_argument("--packets", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    base = export_base(args.base)
    for so in (ROOT / "beat").glob("_*.so"):
        shutil.copy(so, base / "wirebeat" / so.name)
    realistic = generate_realistic(args.packets)
    notcp, tcp_frames = without_tcp(realistic)
    cases = {"realistic flows off": (realistic, "false"), "realistic flows on": (realistic, "true"),
             "realistic without TCP, flows off": (notcp, "false"),
             "mixed flows on": (generate(args.packets), "true")}
    cpu: dict[tuple[str, str], float] = {}
    for _ in range(args.repeat):
        for name, (path, flows) in cases.items():
            for tree_name, tree in (("base", base), ("this", None)):
                r = bench_wirebeat(path, ["-E", f"wirebeat.flows.enabled={flows}"], tree)
                key = (name, tree_name)
                cpu[key] = min(cpu.get(key, float("inf")), r["tree_cpu_s"])
                packets = r["packets"]
                cpu[(name, "packets")] = packets
    for name in cases:
        b, t, n = cpu[(name, "base")], cpu[(name, "this")], cpu[(name, "packets")]
        print(f"{name}: {args.base} {b:.2f} s CPU ({n / b:,.0f} packets/s), "
              f"this {t:.2f} s ({n / t:,.0f} packets/s), {b / t:.2f}x")
    for tree_name in ("base", "this"):
        per = (cpu[("realistic flows off", tree_name)]
               - cpu[("realistic without TCP, flows off", tree_name)]) / tcp_frames * 1e6
        print(f"{args.base if tree_name == 'base' else 'this tree'}: {per:.1f} µs CPU per TCP segment "
              f"({tcp_frames} TCP frames, flows off)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
