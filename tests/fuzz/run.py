#!/usr/bin/env python3
"""Fuzz the engine and every decoder with atheris, seeded from pcaps/ (`make fuzz`).

    python tests/fuzz/run.py [--seconds-per-target N] [--target NAME]...

Runs each target (tests/fuzz/targets.py) in its own process for the given
time, with libFuzzer's coverage guidance over wirebeat's own code, and prints
one line per target and a total: inputs executed, and crashes. A crash input
is saved to tests/fuzz/crashes/<target>-crash-<sha1> (reproduce with
`python tests/fuzz/run.py --reproduce FILE --target NAME`); each one found
and fixed becomes a regression test (tests/fuzz/test_regressions.py replays
every file in tests/fuzz/regressions/). Seeds are rebuilt from pcaps/ on
every run into .fuzz/corpus/<target>/, where the corpus then grows.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORK = ROOT / ".fuzz"
CRASHES = HERE / "crashes"


def _frames(path: Path) -> list[tuple[int, bytes]]:
    from wirebeat.sources.pcapfile import open_capture
    reader = open_capture(str(path))
    try:
        return [(frame.linktype, bytes(frame.data)) for frame in reader]
    finally:
        reader.close()


def _l4(linktype: int, frame: bytes) -> tuple[int, int, int, bytes] | None:
    """(ip protocol, source port, destination port, payload) of an Ethernet/SLL IPv4 frame."""
    offset = {1: 14, 113: 16}.get(linktype)
    if offset is None or len(frame) < offset + 20:
        return None
    ethertype = struct.unpack_from("!H", frame, offset - 2)[0]
    if ethertype == 0x8100:
        offset += 4
        ethertype = struct.unpack_from("!H", frame, offset - 2)[0]
    if ethertype != 0x0800:
        return None
    ihl = (frame[offset] & 0x0F) * 4
    proto, ip_payload = frame[offset + 9], frame[offset + ihl:]
    if proto == 17 and len(ip_payload) >= 8:
        sport, dport = struct.unpack_from("!HH", ip_payload)
        return proto, sport, dport, ip_payload[8:]
    if proto == 6 and len(ip_payload) >= 20:
        sport, dport = struct.unpack_from("!HH", ip_payload)
        return proto, sport, dport, ip_payload[(ip_payload[12] >> 4) * 4:]
    return proto, 0, 0, ip_payload


def build_seeds(target: str) -> Path:
    sys.path.insert(0, str(HERE))
    import targets as t
    corpus = WORK / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    pcaps = sorted((ROOT / "pcaps").rglob("*.pcap")) + sorted((ROOT / "pcaps").rglob("*.pcapng"))
    seeds: list[bytes] = []
    for path in pcaps:
        frames = _frames(path)
        if target == "engine":
            for i in range(0, len(frames), 32):
                part = frames[i:i + 32]
                seeds.append(t.engine_input(part[0][0], [f for _, f in part]))
            continue
        if path.parent.name != target and not (target in ("rtp",) and path.parent.name == "sip"):
            continue
        chunks = []
        for linktype, frame in frames:
            parsed = _l4(linktype, frame)
            if parsed is None or not parsed[3]:
                continue
            proto, sport, _dport, payload = parsed
            from_server = sport < 1024 or sport in (5060, 8080, 8000)
            chunks.append((from_server, proto == 17, payload[:4000]))
        for i in range(0, len(chunks), 16):
            seeds.append(t.decoder_input(chunks[i:i + 16]))
    for seed in seeds:
        (corpus / f"seed-{hashlib.sha1(seed).hexdigest()}").write_bytes(seed)
    return corpus


def child(target: str, seconds: int, corpus: Path) -> None:
    import atheris
    from wirebeat import logs
    logs.configure("critical")
    sys.path.insert(0, str(HERE))
    with atheris.instrument_imports(include=["wirebeat"]):
        import targets as t
        import wirebeat.engine, wirebeat.tcp, wirebeat.ip, wirebeat.link  # noqa: E401,F401
        for name in t.targets()[1:]:
            __import__(f"wirebeat.decoders.{name}")
    fuzz = t.Target(target, None if target == "engine" else target)
    CRASHES.mkdir(exist_ok=True)
    atheris.Setup([sys.argv[0], str(corpus), f"-max_total_time={seconds}", "-print_final_stats=1",
                   "-max_len=8192", "-rss_limit_mb=1024", f"-artifact_prefix={CRASHES}/{target}-"],
                  fuzz)
    atheris.Fuzz()


def reproduce(target: str, path: Path) -> int:
    from wirebeat import logs
    logs.configure("critical")
    sys.path.insert(0, str(HERE))
    import targets as t
    t.Target(target, None if target == "engine" else target)(path.read_bytes())
    print(f"{path}: no crash")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds-per-target", type=int, default=60)
    parser.add_argument("--target", action="append", default=[])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--reproduce", type=Path)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.seconds_per_target, Path(args.corpus))
        return 0
    sys.path.insert(0, str(HERE))
    import targets as t
    if args.reproduce:
        return reproduce(args.target[0] if args.target else "engine", args.reproduce)
    names = args.target or t.targets()
    totals = {"inputs": 0, "crashes": 0}
    report = []
    for name in names:
        corpus = build_seeds(name)
        started = time.monotonic()
        before = set(CRASHES.glob(f"{name}-*")) if CRASHES.is_dir() else set()
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--corpus", str(corpus),
                               "--seconds-per-target", str(args.seconds_per_target)],
                              capture_output=True, text=True)
        runs = re.findall(r"stat::number_of_executed_units: (\d+)", proc.stderr)
        inputs = int(runs[-1]) if runs else 0
        if not runs:
            # libFuzzer stops at the first crash before its final stats: take the last status line.
            progress = re.findall(r"^#(\d+)\s", proc.stderr, re.M)
            inputs = int(progress[-1]) if progress else 0
        crashes = sorted(set(CRASHES.glob(f"{name}-*")) - before) if CRASHES.is_dir() else []
        took = time.monotonic() - started
        report.append({"target": name, "inputs": inputs, "seconds": round(took, 1),
                       "inputs_per_s": round(inputs / took) if took else 0,
                       "crashes": [str(c.relative_to(ROOT)) for c in crashes]})
        totals["inputs"] += inputs
        totals["crashes"] += len(crashes)
        print(json.dumps(report[-1]), flush=True)
        if crashes:
            print(proc.stderr[-3000:], file=sys.stderr)
    print(json.dumps({"total": totals}), flush=True)
    return 1 if totals["crashes"] else 0


if __name__ == "__main__":
    sys.exit(main())
