"""What flows cost in a simulated cache: instructions and misses, flows on vs off, no host noise.

    .venv/bin/python tests/bench/cache_model.py [--base REV] [--packets 100000] [--top 25] [FILE]

CPU time on this shared host moves 4% between two checkouts of the same commit and
4-32% between one round's flows-on and flows-off runs (docs/performance.md), so a
change worth half a percent is invisible in it. This runs `wirebeat run -I FILE
--console` under valgrind's cachegrind, which counts instructions and simulates the
caches (L1: 32 KiB data, 64 KiB instructions; last level: 512 KiB, 8-way, this host's
L2 per core), the same on every run. It prints per variant (flows on and off, this
tree and `--base` REV, which is exported and built as tests/bench/run.py's `--base`
does) the instructions, L1 and L2 misses, and a modelled cost: 1 per instruction, 10
per L1 miss, 100 per L2 miss (rough latencies in cycles, not this CPU's). Then the
functions whose modelled cost differs most between the two variants compared (flows on
against off; with `--base`, this tree against the base, flows on).

What it cannot see: software prefetches (cachegrind ignores them, so a prefetched miss
still counts), the TLB and page walks, and the overlap of misses with other work. A
model for comparing memory layouts and instruction counts, not a measure of
throughput: the issue's 15% is measured by flows_cost.py and `make bench`. Not a
test: nothing here asserts. Needs valgrind (apt-get install valgrind); each run takes
~40 s for 100k packets.
"""
from __future__ import annotations

import argparse
import collections
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import ROOT, compile_tree, export_base, generate_realistic  # noqa: E402

CACHES = ["--I1=65536,8,64", "--D1=32768,8,64", "--LL=524288,8,64"]
EVENTS = ["Ir", "D1mr", "D1mw", "DLmr", "DLmw"]
WEIGHTS = [1, 10, 10, 100, 100]
_ROW = re.compile(r"^\s*((?:(?:[\d,]+|\.)(?: \(\s*[\d.]+%\))?\s+){5})(\S.*)$")


def cachegrind(path: Path, flows: bool, tree: Path | None, out: Path) -> dict[str, list[int]]:
    """Per function (file:function as cg_annotate names it) the five EVENTS of one run."""
    env = {**os.environ, "PYTHONMALLOC": "pymalloc"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=yes", *CACHES, f"--cachegrind-out-file={out}",
           sys.executable, "-m", "wirebeat.cli", "run", "-I", str(path), "--console",
           "-E", "logging.level=warning", "-E", f"wirebeat.flows.enabled={str(flows).lower()}"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"cachegrind failed ({proc.returncode}): {proc.stderr[-2000:]}")
    text = subprocess.run(["cg_annotate", f"--show={','.join(EVENTS)}", "--threshold=0", "--auto=no", str(out)],
                          check=True, capture_output=True, text=True).stdout
    per: dict[str, list[int]] = collections.defaultdict(lambda: [0] * len(EVENTS))
    listing = False
    for line in text.splitlines():
        if "file:function" in line:
            listing = True
            continue
        m = _ROW.match(line) if listing else None
        if not m:
            continue
        values = [0 if v == "." else int(v.replace(",", "")) for v in re.findall(r"([\d,]+|\.)(?: \(\s*[\d.]+%\))?",
                                                                                    m.group(1))][:len(EVENTS)]
        row = per[m.group(2).strip().split(" ")[0].rsplit(":", 1)[-1]]
        for i, v in enumerate(values):
            row[i] += v
    return per


def cost(values: list[int]) -> int:
    return sum(v * w for v, w in zip(values, WEIGHTS))


def totals(per: dict[str, list[int]]) -> list[int]:
    return [sum(row[i] for row in per.values()) for i in range(len(EVENTS))]


def show_diff(a_name: str, a: dict[str, list[int]], b_name: str, b: dict[str, list[int]], top: int) -> None:
    ta, tb = cost(totals(a)), cost(totals(b))
    print(f"\n{a_name} against {b_name}: modelled cost {ta / 1e9:.3f}G against {tb / 1e9:.3f}G, "
          f"{ta - tb:+,} ({1 - tb / ta:+.1%} of {a_name})")
    rows = sorted(((cost(a.get(k, [0] * 5)) - cost(b.get(k, [0] * 5)), k) for k in set(a) | set(b)),
                  key=lambda r: -abs(r[0]))
    print(f"{'cost diff':>14} {'Ir':>12} {'L1 misses':>10} {'L2 misses':>10}  function")
    for diff, k in rows[:top]:
        va, vb = a.get(k, [0] * 5), b.get(k, [0] * 5)
        d = [x - y for x, y in zip(va, vb)]
        print(f"{diff:>+14,} {d[0]:>+12,} {d[1] + d[2]:>+10,} {d[3] + d[4]:>+10,}  {k}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("file", nargs="?", type=Path, help="capture (default: the realistic one of --packets)")
    parser.add_argument("--packets", type=int, default=100000, help="size of the realistic capture (default 100000)")
    parser.add_argument("--base", metavar="REV", help="also run this revision, flows on, and compare with it")
    parser.add_argument("--top", type=int, default=25, help="functions listed per comparison (default 25)")
    args = parser.parse_args()
    for tool in ("valgrind", "cg_annotate"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: apt-get install valgrind", file=sys.stderr)
            return 2
    path = args.file or generate_realistic(args.packets)
    if not path.exists():
        print(f"missing capture: {path}", file=sys.stderr)
        return 2
    compile_tree()
    base = export_base(args.base) if args.base else None
    variants = [("flows on", True, None), ("flows off", False, None)]
    if base is not None:
        variants.append((f"{args.base} flows on", True, base))
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(cachegrind, path, flows, tree, Path(tmp) / f"cg.{i}.out")
                   for i, (name, flows, tree) in enumerate(variants)}
        results = {name: f.result() for name, f in futures.items()}
    print(f"{path.name}: cachegrind, L1 32 KiB data / 64 KiB instructions, last level 512 KiB 8-way")
    for name, per in results.items():
        t = totals(per)
        print(f"{name:>24}: {t[0]:>15,} instructions, {t[1] + t[2]:>12,} L1 misses, {t[3] + t[4]:>12,} L2 misses, "
              f"modelled cost {cost(t) / 1e9:.3f}G")
    show_diff("flows on", results["flows on"], "flows off", results["flows off"], args.top)
    if base is not None:
        show_diff("flows on", results["flows on"], f"{args.base} flows on", results[f"{args.base} flows on"], args.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
