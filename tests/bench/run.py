"""Benchmark: file -> console throughput of wirebeat next to `tshark -T ek`.

Run with `make bench` (or `.venv/bin/python tests/bench/run.py`). Generates the
mixed capture with tests/bench/gen_mixed.py (cached in tests/bench/out/),
then times, in the same run on the same file:

- `wirebeat run -I FILE --console > /dev/null`: packets/s, documents/s and
  peak RSS (the kernel's high-water mark, from wirebeat's summary line);
- `tshark -r FILE -T ek > /dev/null`: packets/s, and the ratio;
- per-packet documents (`wirebeat.packets.enabled`, decoders off, then on), with
  the C accelerator and pure Python (`WIREBEAT_PURE_PYTHON=1`), flows off and on,
  on the mixed and the realistic capture (`--only-packets` runs just that),
  the same job as `tshark -T ek`, against that tshark run.

An HTTP-heavy capture (web connections only) is timed the same way, in
transactions/s. Detection on untracked TCP (`wirebeat.protocols.tls.detect`) is
timed on and off on the HTTP capture with the HTTP decoder disabled
(`--detection-only` runs just that). The realistic capture
(tests/bench/gen_realistic.py: mostly TCP no decoder claims, thousands of
concurrent flows over minutes of packet time) is timed with flows on and off,
alternating, best of `--repeat` runs each (at least FLOWS_ROUNDS in a full run), and
the median of each round's own off/on pair: the cost of accounting every packet
to a flow and reporting it (`--only-realistic` runs just that). Last, the realistic
capture and the mixed one (at most 100k packets) with 1, 2 and 4 worker processes
(`--workers`), alternating, best of `--repeat`; `--workers 1,2,4` runs just that. Peak
RSS is also measured on a capture a fifth as long: with bounded state it must not grow
with the capture's length. Not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = HERE / "out"


REALISTIC_SECONDS_PER_MILLION = 300.0


def _cached(name: str, generator: str, args: list[str]) -> Path:
    """OUT/<name>-<digest>.pcap, generated once: the digest is of the generator's own
    sources, so a capture cached before a change to them is never used again."""
    OUT.mkdir(exist_ok=True)
    sources = [HERE / generator, HERE / "gen_mixed.py", ROOT / "tests" / "pcapgen.py"]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:8]
    path = OUT / f"{name}-{digest}.pcap"
    if not path.exists():
        print(f"generating {path.name} ...", file=sys.stderr)
        subprocess.run([sys.executable, str(HERE / generator), str(path), *args], check=True,
                       stderr=subprocess.DEVNULL)
    return path


def generate(packets: int, mix: str = "mixed") -> Path:
    return _cached(f"{mix}-{packets}", "gen_mixed.py", ["--packets", str(packets), "--mix", mix])


def generate_realistic(packets: int) -> Path:
    """The realistic mix at the pace of the issue's 1M-packet capture (300 s per million
    packets): a smaller capture spans less packet time instead of slowing every
    conversation down. Spread over 300 s, 100k packets of 2,000 concurrent conversations
    came ~6 s apart within a conversation, so 94% of TLS handshakes outlived the
    decoder's 10 s timeout (their connections' segments all went to Python until then)."""
    seconds = REALISTIC_SECONDS_PER_MILLION * packets / 1_000_000
    return _cached(f"realistic-{packets}-paced", "gen_realistic.py",
                   ["--packets", str(packets), "--seconds", f"{seconds:g}"])


def _run_child(cmd: list[str], cwd: Path, tree: Path | None = None,
               extra_env: dict[str, str] | None = None) -> tuple[float, str]:
    """Wall time and stderr of one child; its stdout is discarded. `tree`: run that
    exported `wirebeat` package (see `export_base`) instead of the installed one."""
    env = None if tree is None and not extra_env else {**os.environ, **(extra_env or {})}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    started = time.perf_counter()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False,
                          env=env)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU of the child and of the processes it waited for (worker processes included).
    _run_child.last_tree_cpu_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    # System time and page faults: what instruction counts miss (memory handed back to the
    # kernel and faulted in again shows only here; docs/performance.md, session 7).
    _run_child.last_tree_sys_s = after.ru_stime - before.ru_stime
    _run_child.last_tree_faults = after.ru_minflt - before.ru_minflt
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return elapsed, proc.stderr.decode()


def bench_wirebeat(path: Path, extra: list[str], tree: Path | None = None,
                   env: dict[str, str] | None = None) -> dict[str, float]:
    cmd = [sys.executable, "-m", "wirebeat.cli", "run", "-I", str(path), "--console",
           "-E", "logging.level=warning", *extra]
    elapsed, err = _run_child(cmd, ROOT, tree, env)
    m = re.search(r"(\d+) packets, (\d+) documents .* peak RSS (\d+) MiB", err)
    if not m:
        raise SystemExit(f"no summary line from wirebeat:\n{err[-2000:]}")
    packets, docs, rss_mib = int(m.group(1)), int(m.group(2)), int(m.group(3))
    # The last counters line is the summary (earlier ones are the periodic metrics log).
    cpu = re.findall(r'"cpu_user_s": ([\d.]+), "cpu_system_s": ([\d.]+)', err)
    cpu_s = float(cpu[-1][0]) + float(cpu[-1][1]) if cpu else float("nan")
    return {"seconds": elapsed, "packets": packets, "documents": docs,
            "tree_cpu_s": _run_child.last_tree_cpu_s, "tree_sys_s": _run_child.last_tree_sys_s,
            "page_faults": _run_child.last_tree_faults,
            "packets_per_s": packets / elapsed, "documents_per_s": docs / elapsed,
            "peak_rss_mib": rss_mib, "cpu_s": cpu_s}


def _faults(r: dict[str, float]) -> str:
    """System time and minor page faults of one run, per 1,000 packets too."""
    return (f"system {r['tree_sys_s']:.2f} s, {r['page_faults']:,} page faults "
            f"({r['page_faults'] * 1000 / max(r['packets'], 1):.0f} per 1,000 packets)")


def flow_memory(flows: int = 20_000) -> dict[str, float]:
    """Bytes one flow holds in the table (record, keys, dict slots), UDP and TCP, by tracemalloc."""
    import tracemalloc

    sys.path.insert(0, str(HERE.parent))
    import pcapgen as g
    from wirebeat.flows import FlowReporter, FlowTable

    out = {}
    for proto, builder in ((17, g.udp), (6, g.tcp)):
        frames = []
        for i in range(flows):
            src, dst = bytes((10, 0, i >> 8 & 255, i & 255)), bytes((10, 1, 0, 1))
            packet = g.ipv4(src, dst, proto, builder(src, dst, 1024 + i % 60000, 443, b"x"))
            frames.append(g.ethernet(packet, src=bytes((2, 0, 0, 0, i >> 8 & 255, i & 255))))
        table = FlowTable("bench", FlowReporter(None, None, 30.0, 10.0, flows))
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for i, frame in enumerate(frames):
            table.account(1e9 + i, 1, frame, (), frame[26:30], frame[30:34], proto, frame[34:])
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        out["udp" if proto == 17 else "tcp"] = used / flows
    return out


FLOWS_ROUNDS = 7     # `make bench`'s rounds of flows off and on (at least)


def bench_flows(path: Path, repeat: int, base: Path | None = None) -> None:
    """Flows off and on, alternating on the same file (the order reversed every other
    round); the best run of each is compared, and each round's own off/on pair.

    With `base` (an exported older tree, `--base REV`), that tree runs too, in
    the same rounds: "base off", "base on", then this tree's "off", "on"."""
    modes = ("off", "on") if base is None else ("base off", "base on", "off", "on")
    runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
    for i in range(repeat):
        for mode in modes if i % 2 == 0 else modes[::-1]:
            flag = "true" if mode.endswith("on") else "false"
            runs[mode].append(bench_wirebeat(path, ["-E", f"wirebeat.flows.enabled={flag}",
                                                    "-E", "logging.level=info"],
                                             base if mode.startswith("base") else None))
    # The least disturbed run of each: on a shared host wall time varies with the
    # neighbours' load much more than the process's own CPU time does.
    best = {mode: min(results, key=lambda r: r["seconds"]) for mode, results in runs.items()}
    cpu = {mode: min(r["cpu_s"] for r in results) for mode, results in runs.items()}
    for mode in modes:
        r = best[mode]
        print(f"wirebeat realistic ({path.name}), flows {mode}: {r['packets_per_s']:,.0f} packets/s "
              f"({r['seconds']:.2f} s wall), {r['packets'] / cpu[mode]:,.0f} packets per CPU second "
              f"({cpu[mode]:.2f} s), {r['documents']} documents, peak RSS {r['peak_rss_mib']} MiB, "
              f"{_faults(r)}")
    off, on = best["off"], best["on"]
    print(f"flows cost: {1 - on['packets_per_s'] / off['packets_per_s']:.1%} of the flows-off "
          f"throughput by wall time, {1 - cpu['off'] / cpu['on']:.1%} by CPU time (best runs)")
    # A best run is one lucky run of each: on a shared host the neighbours' load moves one
    # run by 20% and more. Each round's own pair, run back to back, is the steadier figure.
    pairs = [1 - a["cpu_s"] / b["cpu_s"] for a, b in zip(runs["off"], runs["on"])]
    print(f"flows cost by CPU time, each round's off/on pair: median {statistics.median(pairs):.1%} "
          f"(from {min(pairs):.1%} to {max(pairs):.1%}, {len(pairs)} rounds)")
    if base is not None:
        for mode in ("off", "on"):
            print(f"flows {mode}, this tree vs base: {best[mode]['packets_per_s'] / best['base ' + mode]['packets_per_s']:.2f}x "
                  f"by wall time, {cpu['base ' + mode] / cpu[mode]:.2f}x by CPU time")


def bench_workers(paths: list[Path], counts: list[int], repeat: int) -> None:
    """The same captures with 1, 2, 4 ... worker processes (`--workers N`), alternating
    in each round; the least disturbed run of each count is compared with 1 worker's."""
    for path in paths:
        runs: dict[int, list[dict[str, float]]] = {n: [] for n in counts}
        for _ in range(repeat):
            for n in counts:
                runs[n].append(bench_wirebeat(path, ["--workers", str(n), "-E", "logging.level=info"]))
        best = {n: min(results, key=lambda r: r["seconds"]) for n, results in runs.items()}
        base = best[counts[0]]["packets_per_s"]
        # On a shared host wall time says little; CPU does: with C cores busy only with
        # this, N workers can at best be min(N, C) x (one process's CPU / all N's CPU).
        cores = os.cpu_count() or 1
        cpu_one = min(r["tree_cpu_s"] for r in runs[counts[0]])
        for n in counts:
            r = best[n]
            cpu = min(x["tree_cpu_s"] for x in runs[n])
            print(f"wirebeat {path.name}, {n} worker(s): {r['packets_per_s']:,.0f} packets/s "
                  f"({r['seconds']:.2f} s wall, {r['packets_per_s'] / base:.2f}x), CPU {cpu:.1f} s "
                  f"in all processes ({cpu / cpu_one:.2f}x one's; at best {min(n, cores) * cpu_one / cpu:.2f}x "
                  f"on {cores} cores), {r['cpu_s']:.1f} s in the main one, {r['documents']} documents, "
                  f"main process peak RSS {r['peak_rss_mib']} MiB, load average {os.getloadavg()[0]:.1f}")


def trees(base: str | None) -> list[tuple[str, Path | None]]:
    """("base REV", its exported tree) when `base` is given, then ("this tree", None):
    what a script measures with --base."""
    out: list[tuple[str, Path | None]] = [("this tree", None)]
    if base:
        out.insert(0, (f"base {base}", export_base(base)))
    return out


def compile_tree() -> None:
    """This tree byte-compiled, as export_base does for --base: with PYTHONDONTWRITEBYTECODE
    set (as on this host), every run would compile its changed modules anew, start-up CPU that
    is not wirebeat's (~0.25 s a run: flows_cost.py's figures until 2026-12-02 carried it, on
    and off alike, which lowered the cost they showed by ~0.7 points)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(ROOT / "beat"), str(ROOT / "decoders")],
                   check=True, stdout=subprocess.DEVNULL, env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})


def export_base(rev: str) -> Path:
    """`rev`'s beat/, decoders/ and index_templates/ as an importable `wirebeat` under a temp dir."""
    import tempfile

    from same_output import export
    return export(rev, Path(tempfile.mkdtemp(prefix="bench-base-")))


def bench_tshark(path: Path, packets: int) -> dict[str, float] | None:
    tshark = shutil.which("tshark")
    if tshark is None:
        print("tshark not found: install it (scripts/install-deps.sh)", file=sys.stderr)
        return None
    elapsed, _ = _run_child([tshark, "-n", "-r", str(path), "-T", "ek"], ROOT)
    return {"seconds": elapsed, "packets_per_s": packets / elapsed, "cpu_s": _run_child.last_tree_cpu_s}


def _every_decoder_off() -> list[str]:
    """`-E wirebeat.protocols.<name>.enabled=false` for every installed decoder (TLS and
    NetFlow too: a hand-kept list had missed them, so TLS still ran on port 443)."""
    from wirebeat.registry import discover
    return [a for r in discover() for a in ("-E", f"wirebeat.protocols.{r.spec.name}.enabled=false")]


PER_PACKET_ONLY = ["-E", "wirebeat.packets.enabled=true", *_every_decoder_off()]


def bench_packets(paths: list[Path], repeat: int, base: Path | None = None) -> None:
    """Per-packet documents (decoders off), the job `tshark -T ek` does: the C accelerator
    (wirebeat._speedups) and the pure-Python path (WIREBEAT_PURE_PYTHON=1), flows off and
    on, alternating in each round with `tshark -T ek` on the same file; the least CPU
    time of each over `repeat` rounds. CPU time (user+sys of the child, process start
    and imports included) is what one core can do; wall time follows the host's load.
    With `base` (`--base REV`), that tree's C path with flows off, and its start-up,
    run in the same rounds too."""
    variants = [(f"{path_name}, flows {flows}", flows, pure)
                for flows in ("off", "on") for path_name, pure in (("C", "0"), ("pure Python", "1"))]
    if base is not None:
        variants.insert(0, ("base C, flows off", "off", "0"))
    for path in paths:
        cpu: dict[str, float] = {}
        packets = 0
        # Start-up (imports, config, threads): the same run on the capture's header alone.
        empty = OUT / f"empty-{path.name}"
        with open(path, "rb") as f:
            empty.write_bytes(f.read(24))
        for _ in range(repeat):
            for tree, startup in ((base, "base start-up"), (None, "start-up")):
                if startup == "start-up" or base is not None:
                    r = bench_wirebeat(empty, [*PER_PACKET_ONLY, "-E", "wirebeat.flows.enabled=false"], tree)
                    cpu[startup] = min(cpu.get(startup, float("inf")), r["tree_cpu_s"])
            for name, flows, pure in variants:
                r = bench_wirebeat(path, [*PER_PACKET_ONLY, "-E", f"wirebeat.flows.enabled={flows == 'on'}".lower()],
                                   base if name.startswith("base") else None, env={"WIREBEAT_PURE_PYTHON": pure})
                packets = r["packets"]
                cpu[name] = min(cpu.get(name, float("inf")), r["tree_cpu_s"])
            ts = bench_tshark(path, packets)
            if ts:
                cpu["tshark"] = min(cpu.get("tshark", float("inf")), ts["cpu_s"])
        tshark_rate = packets / cpu["tshark"] if "tshark" in cpu else None
        for name, _flows, _pure in variants:
            rate = packets / cpu[name]
            versus = f", {rate / tshark_rate:.1f}x tshark -T ek (target 25x)" if tshark_rate else ""
            startup = "base start-up" if name.startswith("base") else "start-up"
            print(f"per-packet documents {path.name}, {name}: {rate:,.0f} packets per CPU second "
                  f"({cpu[name]:.2f} s){versus}; {packets / (cpu[name] - cpu[startup]):,.0f} "
                  f"without the start-up's {cpu[startup]:.2f} s")
        if tshark_rate:
            print(f"tshark -T ek {path.name}: {tshark_rate:,.0f} packets per CPU second ({cpu['tshark']:.2f} s)")


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
    parser.add_argument("--repeat", type=int, default=3, help="runs of each flows variant")
    parser.add_argument("--base", metavar="REV", help="realistic capture (with --only-packets: "
                        "per-packet documents): also time this git revision's code, alternating "
                        "with this tree's (before/after a change)")
    parser.add_argument("--only-realistic", action="store_true",
                        help="time only the realistic capture, flows on and off")
    parser.add_argument("--only-packets", action="store_true",
                        help="only time per-packet documents (C and pure Python, flows off and on, "
                        "against tshark -T ek) on the mixed and realistic captures")
    parser.add_argument("--workers", metavar="N,N,...",
                        help="only time the realistic and mixed captures with these worker counts "
                        "(e.g. 1,2,4), alternating, best of --repeat")
    args = parser.parse_args()
    compile_tree()
    if args.workers:
        bench_workers([generate_realistic(args.packets), generate(min(args.packets, 100_000))],
                      [int(n) for n in args.workers.split(",")], args.repeat)
        return 0
    if args.only_packets:
        bench_packets([generate(min(args.packets, 100_000)), generate_realistic(min(args.packets, 100_000))],
                      args.repeat, export_base(args.base) if args.base else None)
        return 0
    if args.detection_only:
        bench_detection(generate(args.packets // 5, "http"))
        return 0

    memory = flow_memory()
    print(f"flow table memory per flow (tracemalloc, 20k flows): {memory['udp']:.0f} bytes UDP, "
          f"{memory['tcp']:.0f} bytes TCP")
    base = export_base(args.base) if args.base else None
    if args.only_realistic:
        bench_flows(generate_realistic(args.packets), args.repeat, base)
        return 0
    big = generate(args.packets)
    small = generate(args.packets // 5)
    print(f"capture: {big.name} ({big.stat().st_size / 2**20:.1f} MiB), "
          f"{os.cpu_count()} cores, python {sys.version.split()[0]}")

    wb_small = bench_wirebeat(small, [])
    wb = bench_wirebeat(big, [])
    print(f"wirebeat file->console: {wb['packets']} packets, {wb['documents']} documents in "
          f"{wb['seconds']:.2f} s = {wb['packets_per_s']:,.0f} packets/s, "
          f"{wb['documents_per_s']:,.0f} documents/s, peak RSS {wb['peak_rss_mib']} MiB, {_faults(wb)}")
    print(f"peak RSS at {wb_small['packets']} packets: {wb_small['peak_rss_mib']} MiB; "
          f"at {wb['packets']} packets: {wb['peak_rss_mib']} MiB")
    ts = None
    if not args.skip_tshark:
        ts = bench_tshark(big, wb["packets"])
        if ts:
            print(f"tshark -T ek: {ts['seconds']:.2f} s = {ts['packets_per_s']:,.0f} packets/s; "
                  f"wirebeat is {wb['packets_per_s'] / ts['packets_per_s']:.1f}x faster")

    # Per-packet documents: the job `tshark -T ek` does, timed against it on the same captures.
    wb_pkt_all = bench_wirebeat(big, ["-E", "wirebeat.packets.enabled=true"])
    print(f"wirebeat per-packet documents with every decoder as well: "
          f"{wb_pkt_all['packets_per_s']:,.0f} packets/s ({wb_pkt_all['documents']} documents)")
    if not args.skip_tshark:
        bench_packets([big, generate_realistic(args.packets)], args.repeat)

    # HTTP-heavy: 8-packet connections, one transaction each.
    web = generate(args.packets // 5, "http")
    wb_http = bench_wirebeat(web, [])
    print(f"wirebeat HTTP file->console ({web.name}): {wb_http['packets_per_s']:,.0f} packets/s, "
          f"{wb_http['documents_per_s']:,.0f} transactions/s, peak RSS {wb_http['peak_rss_mib']} MiB, "
          f"{_faults(wb_http)}")
    if not args.skip_tshark:
        ts_http = bench_tshark(web, wb_http["packets"])
        if ts_http:
            tshark_tps = wb_http["documents"] / ts_http["seconds"]
            print(f"tshark -T ek on it: {ts_http['packets_per_s']:,.0f} packets/s "
                  f"(= {tshark_tps:,.0f} transactions/s at the same count); wirebeat is "
                  f"{wb_http['packets_per_s'] / ts_http['packets_per_s']:.1f}x faster")
    bench_detection(web)
    bench_flows(generate_realistic(args.packets), max(args.repeat, FLOWS_ROUNDS), base)
    # Issue #15's table: both captures with 1, 2 and 4 worker processes, flows on; the realistic
    # mix also at the issue's own length, 1M packets, where the serial start-up (~0.2 CPU-s before
    # the fork, which no worker count divides) weighs half what it does at 500k.
    realistic = [generate_realistic(args.packets)]
    if args.packets < 1_000_000:
        realistic.append(generate_realistic(1_000_000))
    bench_workers([*realistic, generate(min(args.packets, 100_000))], [1, 2, 4], args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
