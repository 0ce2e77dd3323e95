"""What flows cost: CPU time with flows on vs off, alternated rounds, medians and spread.

    .venv/bin/python tests/bench/flows_cost.py [--rounds 7] [--base main] [--packets 100000,300000] [FILE ...]

Issue #9 asks that flows on cost at most 15% of the flows-off throughput on a
realistic mix. Throughput is packets per CPU second, so the cost is
1 - cpu(off) / cpu(on). Each round runs `wirebeat run -I FILE --console` (the
default config) once with `-E wirebeat.flows.enabled=false` and once with
flows on, in alternating order, and measures the child's user+sys CPU time
(resource.getrusage RUSAGE_CHILDREN): wall time says little on a shared host.
With `--base REV` that revision (exported and built as tests/bench/run.py's
`--base` does) runs flows on and off in the same rounds.

Default files: the realistic captures of `--packets` packets each
(tests/bench/gen_realistic.py, cached in tests/bench/out/ as run.py caches them).
Prints per file and variant the median CPU seconds and the spread (min-max),
then the cost of flows by medians (and the cost range over rounds, each
round's on/off pair). Not a test: CPU time moves 10-20% between identical runs
on a loaded host; use many rounds on an idle one.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from run import bench_wirebeat, compile_tree, export_base, generate_realistic  # noqa: E402


def measure(path: Path, rounds: int, base: Path | None) -> dict[str, list[float]]:
    """CPU seconds per variant ("off", "on", and "base off", "base on" with a base), per round."""
    variants = [("off", None), ("on", None)]
    if base is not None:
        variants = [("base off", base), ("base on", base)] + variants
    cpu: dict[str, list[float]] = {name: [] for name, _ in variants}
    for i in range(rounds):
        order = variants if i % 2 == 0 else variants[::-1]      # alternate who runs first
        for name, tree in order:
            flag = "true" if name.endswith("on") else "false"
            result = bench_wirebeat(path, ["-E", f"wirebeat.flows.enabled={flag}"], tree)
            cpu[name].append(result["tree_cpu_s"])
    return cpu


def cost(off: float, on: float) -> float:
    """The share of the flows-off throughput (packets per CPU second) that flows take."""
    return 1 - off / on


def report(path: Path, cpu: dict[str, list[float]]) -> None:
    med = {name: statistics.median(values) for name, values in cpu.items()}
    for name, values in cpu.items():
        print(f"{path.name} flows {name}: median {med[name]:.2f} CPU-s "
              f"(min {min(values):.2f}, max {max(values):.2f}, {len(values)} rounds)")
    for prefix in ("base ", "") if "base on" in cpu else ("",):
        off, on = cpu[prefix + "off"], cpu[prefix + "on"]
        per_round = [cost(a, b) for a, b in zip(off, on)]
        print(f"{path.name} {prefix or 'this tree '}flows cost: {cost(med[prefix + 'off'], med[prefix + 'on']):.1%} "
              f"by medians (per round {min(per_round):.1%} to {max(per_round):.1%}; the issue's cap: 15%)")
    if "base on" in cpu:
        print(f"{path.name} flows on, this tree vs base: {med['base on'] / med['on']:.2f}x by median CPU time")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path, help="captures (default: the cached realistic ones)")
    parser.add_argument("--rounds", type=int, default=7, help="alternated rounds (default 7)")
    parser.add_argument("--base", metavar="REV", help="also run this revision (e.g. main) in the same rounds")
    parser.add_argument("--packets", default="100000,300000",
                        help="sizes of the realistic captures timed when no FILE is given")
    args = parser.parse_args()
    files = args.files or [generate_realistic(int(n)) for n in args.packets.split(",")]
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        print(f"missing capture(s): {', '.join(missing)}", file=sys.stderr)
        return 2
    compile_tree()
    base = export_base(args.base) if args.base else None
    for path in files:
        report(path, measure(path, args.rounds, base))
    return 0


if __name__ == "__main__":
    sys.exit(main())
