#!/usr/bin/env python3
"""Fuzz the engine and every decoder with atheris, seeded from pcaps/ (`make fuzz`).

    python tests/fuzz/run.py [--seconds-per-target N] [--parallel] [--target NAME]...

Runs each target (tests/fuzz/targets.py) in its own process for the given
time (one after the other, or all at once with --parallel), with libFuzzer's
coverage guidance over the modules that parse input (the decoders and the
engine's link/IP/TCP layers; document building, the pipeline and the outputs
run but are not instrumented, which made every input several times slower),
and prints one line per target and a total: inputs executed, and crashes.
A child that stops at a crash is started again on the grown corpus until the
target's time is used up, so one crash does not end a long run. A crash input
is saved to tests/fuzz/crashes/<target>-crash-<sha1> (reproduce with
`python tests/fuzz/run.py --reproduce FILE --target NAME`); each one found
and fixed becomes a regression test (tests/fuzz/test_regressions.py replays
every file in tests/fuzz/regressions/). Seeds are rebuilt from pcaps/ on
every run into .fuzz/corpus/<target>/, where the corpus then grows.
"""
from __future__ import annotations

import argparse
import concurrent.futures
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
# Inputs are kept small: decoding time grows with the input, and a bug needs a
# few malformed bytes, not a long capture. Seeds are cut to fit.
MAX_LEN = 2048
# The direct decoder targets (<decoder>.direct) cost so little besides decoding
# that the input's length is most of an input's cost: their seeds group
# messages only up to DIRECT_SEED_LEN (a message longer than that, such as a
# TLS certificate, stays whole up to MAX_LEN).
DIRECT_SEED_LEN = 256
# ... and the fuzzer may grow their inputs to DIRECT_MAX_LEN only, a few messages
# (a bug needs a few malformed bytes); TLS certificates and SIP messages with
# SDP are longer.
DIRECT_MAX_LEN = 512
DIRECT_MAX_LEN_OF = {"tls": MAX_LEN, "sip": 1024}


def max_len(target: str) -> int:
    """The longest input libFuzzer makes for `target`."""
    if not target.endswith(".direct"):
        return MAX_LEN
    return DIRECT_MAX_LEN_OF.get(target.removesuffix(".direct"), DIRECT_MAX_LEN)
# Modules that run for every input but whose branches do not depend on the
# input's bytes in a way worth guiding: left uninstrumented (they were most of
# the time of an instrumented input).
UNINSTRUMENTED = ["wirebeat.document", "wirebeat.pipeline", "wirebeat.outputs", "wirebeat.config",
                  "wirebeat.stats", "wirebeat.testing", "wirebeat.registry", "wirebeat.logs",
                  "wirebeat.flows", "wirebeat.packets", "wirebeat.processors", "wirebeat.diskqueue",
                  "wirebeat.monitor", "wirebeat.report"]


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


def _groups(items: list, size, limit: int = MAX_LEN) -> list[list]:
    """Consecutive items grouped so that each group's encoded size stays within `limit`."""
    groups: list[list] = [[]]
    used = 0
    for item in items:
        if groups[-1] and used + size(item) > limit:
            groups.append([])
            used = 0
        groups[-1].append(item)
        used += size(item)
    return [group for group in groups if group]


def build_seeds(target: str, work: Path | None = None) -> Path:
    sys.path.insert(0, str(HERE))
    import targets as t
    corpus = (work or WORK) / "corpus" / target
    corpus.mkdir(parents=True, exist_ok=True)
    pcaps = sorted((ROOT / "pcaps").rglob("*.pcap")) + sorted((ROOT / "pcaps").rglob("*.pcapng"))
    seeds: list[bytes] = []
    for path in pcaps:
        frames = _frames(path)
        if target == "engine":
            for part in _groups([(lt, f[:MAX_LEN]) for lt, f in frames], lambda item: 2 + len(item[1])):
                seeds.append(t.engine_input(part[0][0], [f for lt, f in part if lt == part[0][0]]))
            continue
        decoder = target.removesuffix(t.DIRECT)        # a direct target mutates the same chunks
        if path.parent.name != decoder and not (decoder in ("rtp",) and path.parent.name == "sip"):
            continue
        chunks = []
        for linktype, frame in frames:
            parsed = _l4(linktype, frame)
            if parsed is None or not parsed[3]:
                continue
            proto, sport, _dport, payload = parsed
            from_server = sport < 1024 or sport in (5060, 8080, 8000)
            chunks.append((from_server, proto == 17, payload[:MAX_LEN - 3]))
        limit = DIRECT_SEED_LEN if target.endswith(t.DIRECT) else MAX_LEN
        for part in _groups(chunks, lambda chunk: 3 + len(chunk[2]), limit):
            seeds.append(t.decoder_input(part))
    for seed in seeds:
        (corpus / f"seed-{hashlib.sha1(seed).hexdigest()}").write_bytes(seed)
    return corpus


def child(target: str, seconds: int, corpus: Path, runs: int = -1) -> None:
    import atheris
    from wirebeat import logs
    logs.configure("critical")
    sys.path.insert(0, str(HERE))
    if target.endswith(".direct"):
        # Only the decoders are instrumented: the engine, the document builder and
        # the harness run uninstrumented (imported first, so they stay so).
        import targets as t
        import wirebeat.decoders.api  # noqa: F401
        with atheris.instrument_imports(include=["wirebeat.decoders"], exclude=["wirebeat.decoders.api"]):
            for name in t.targets():
                if name.endswith(t.DIRECT):
                    __import__(f"wirebeat.decoders.{name.removesuffix(t.DIRECT)}")
    else:
        with atheris.instrument_imports(include=["wirebeat"], exclude=UNINSTRUMENTED):
            import targets as t
            import wirebeat.engine, wirebeat.tcp, wirebeat.ip, wirebeat.link  # noqa: E401,F401
            for name in t.targets()[1:]:
                if not name.endswith(t.DIRECT):
                    __import__(f"wirebeat.decoders.{name}")
    fuzz = t.make_target(target)
    CRASHES.mkdir(exist_ok=True)
    atheris.Setup([sys.argv[0], str(corpus), f"-max_total_time={seconds}", "-print_final_stats=1",
                   f"-runs={runs}", f"-max_len={max_len(target)}", "-rss_limit_mb=1024",
                   f"-artifact_prefix={CRASHES}/{target}-"], fuzz)
    atheris.Fuzz()


def reproduce(target: str, path: Path) -> int:
    from wirebeat import logs
    logs.configure("critical")
    sys.path.insert(0, str(HERE))
    import targets as t
    t.make_target(target)(path.read_bytes())
    print(f"{path}: no crash")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds-per-target", type=int, default=60)
    parser.add_argument("--target", action="append", default=[])
    parser.add_argument("--parallel", action="store_true", help="fuzz all targets at once")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--reproduce", type=Path)
    parser.add_argument("--runs", type=int, default=-1, help=argparse.SUPPRESS)
    parser.add_argument("--direct-seed-len", type=int, default=DIRECT_SEED_LEN,
                        help="group a direct target's seeds up to this many bytes (default %(default)s)")
    parser.add_argument("--direct-max-len", type=int, help="longest input of every direct target")
    parser.add_argument("--measure", type=int, metavar="N",
                        help="run N inputs of each target from its seeds and print inputs per CPU second")
    args = parser.parse_args()
    globals()["DIRECT_SEED_LEN"] = args.direct_seed_len
    if args.direct_max_len:
        globals()["DIRECT_MAX_LEN"] = args.direct_max_len
        DIRECT_MAX_LEN_OF.clear()
    if args.child:
        child(args.child, args.seconds_per_target, Path(args.corpus), args.runs)
        return 0
    sys.path.insert(0, str(HERE))
    import targets as t
    if args.reproduce:
        return reproduce(args.target[0] if args.target else "engine", args.reproduce)
    names = args.target or t.targets()
    if args.measure:
        for name in names:
            print(json.dumps(measure(name, args.measure)), flush=True)
        return 0
    totals = {"inputs": 0, "crashes": 0}
    if args.parallel:
        with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:
            report = list(pool.map(lambda name: fuzz_target(name, args.seconds_per_target), names))
    else:
        report = [fuzz_target(name, args.seconds_per_target) for name in names]
    for line in report:
        totals["inputs"] += line["inputs"]
        totals["crashes"] += len(line["crashes"])
    print(json.dumps({"total": totals}), flush=True)
    return 1 if totals["crashes"] else 0


def measure(name: str, runs: int) -> dict:
    """Inputs per CPU second (user+sys of the child: the host is shared) of fuzzing `runs`
    inputs from a fresh copy of the target's seeds, so variants compare on the same corpus.

    A child that runs just its seeds is timed too and taken off, so start-up (imports,
    instrumenting, the public suffix list) and the pass over the seeds do not count.
    """
    import resource
    import shutil
    import tempfile
    seeds = build_seeds(name, Path(tempfile.mkdtemp()))

    def one(count: int) -> tuple[int, float]:
        with tempfile.TemporaryDirectory() as tmp:
            corpus = Path(tmp) / "corpus"
            corpus.mkdir()
            for seed in seeds.glob("seed-*"):
                shutil.copy(seed, corpus)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.run([sys.executable, __file__, "--child", name, "--corpus", str(corpus),
                                   "--seconds-per-target", "100000", "--runs", str(count),
                                   "--direct-max-len", str(max_len(name))],
                                  capture_output=True, text=True)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = re.findall(r"stat::number_of_executed_units: (\d+)", proc.stderr)
        if proc.returncode or not done:
            raise SystemExit(f"{name}: the child failed\n{proc.stderr[-3000:]}")
        return int(done[-1]), (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    base_inputs, base_cpu = one(1)
    inputs, cpu = one(runs)
    shutil.rmtree(seeds.parents[1])
    fuzzed, fuzz_cpu = inputs - base_inputs, max(cpu - base_cpu, 1e-9)
    return {"target": name, "seeds": base_inputs, "fuzzed_inputs": fuzzed,
            "cpu_seconds": round(fuzz_cpu, 2), "inputs_per_cpu_s": round(fuzzed / fuzz_cpu)}


def fuzz_target(name: str, seconds: int) -> dict:
    """Fuzz one target for `seconds`, restarting the child after each crash; one JSON line."""
    corpus = build_seeds(name)
    started = time.monotonic()
    inputs, crashes, restarts = 0, [], 0
    while (left := seconds - (time.monotonic() - started)) > 5 or restarts == 0:
        before = set(CRASHES.glob(f"{name}-*")) if CRASHES.is_dir() else set()
        proc = subprocess.run([sys.executable, __file__, "--child", name, "--corpus", str(corpus),
                               "--seconds-per-target", str(max(1, int(left)))],
                              capture_output=True, text=True)
        runs = re.findall(r"stat::number_of_executed_units: (\d+)", proc.stderr)
        if runs:
            inputs += int(runs[-1])
        else:
            # libFuzzer stops at the first crash before its final stats: take the last status line.
            progress = re.findall(r"^#(\d+)\s", proc.stderr, re.M)
            inputs += int(progress[-1]) if progress else 0
        new = sorted(set(CRASHES.glob(f"{name}-*")) - before) if CRASHES.is_dir() else []
        crashes += new
        restarts += 1
        if new:
            print(proc.stderr[-3000:], file=sys.stderr, flush=True)
        elif proc.returncode != 0 and not runs:
            print(proc.stderr[-3000:], file=sys.stderr, flush=True)
            break                                   # the child failed without fuzzing: do not spin
    took = time.monotonic() - started
    line = {"target": name, "inputs": inputs, "seconds": round(took, 1),
            "inputs_per_s": round(inputs / took) if took else 0, "children": restarts,
            "crashes": [str(c.relative_to(ROOT)) for c in crashes]}
    print(json.dumps(line), flush=True)
    return line


if __name__ == "__main__":
    sys.exit(main())
