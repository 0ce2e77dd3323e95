"""CPU time per document from `Pipeline.publish` to bytes written, this tree next to another revision.

    .venv/bin/python tests/bench/output_cost.py [--base main] [--repeat 3] [--packets 100000]

A full `wirebeat run` costs seconds per 100k packets and varies by tenths of a
second on a shared host, so the output's share (a few microseconds a
document) is measured apart, by replaying the documents a run published:

1. record: `wirebeat run -I FILE --console` of this tree, with `Pipeline.publish`
   patched (in the child only) to log each document as the engine handed it
   over: its `_id`, whether it was an `orjson.Fragment` (JSON text) or a dict,
   and its JSON. Three workloads: the realistic capture with flows on (mostly
   flow reports, as text), the mixed capture (transactions, as dicts) and the
   mixed capture with per-packet documents (`wirebeat.packets.enabled`);
2. replay, in a fresh child per tree (this tree, and `--base` exported with
   git archive, the C accelerator copied in), alternating, best of `--repeat`:
   the recorded documents are rebuilt (a Fragment of the text, or
   `orjson.loads` for a dict: what the engine would have built) and published
   through a real `Pipeline` into the real console output writing to
   /dev/null, a `maybe_flush` every 1000 documents as the run loop's ticks,
   then `close()`. The child's CPU time (user + sys, all threads: the output
   thread included), minus the same loop that only rebuilds the documents,
   divided by the documents, is the per-document output cost. The garbage
   collector is set as the run loop sets it (engine.quiet_collector).
   `--es` also times the Elasticsearch output's bulk body building
   (`ElasticsearchOutput._body`) on the same batches, without a node.

Prints a Markdown table. Not a test: nothing here asserts.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from run import generate, generate_realistic  # noqa: E402
from same_output import export  # noqa: E402

RECORD = """
import sys, orjson, wirebeat.pipeline as p
out = open(sys.argv[1], "wb")
orig = p.Pipeline.publish
def publish(self, doc_id, doc):
    text = orjson.dumps(doc)
    out.write(orjson.dumps([doc_id, isinstance(doc, orjson.Fragment), text.decode()]) + b"\\n")
    orig(self, doc_id, doc)
p.Pipeline.publish = publish
from wirebeat.cli import main
rc = main(sys.argv[2:])
out.close()
sys.exit(rc)
"""

REPLAY = """
import gc, resource, sys, orjson
from orjson import Fragment, loads
tree, record, mode = sys.argv[1:4]
import wirebeat
assert wirebeat.__file__.startswith(tree), wirebeat.__file__
from wirebeat.pipeline import Pipeline
from wirebeat.engine import quiet_collector
from wirebeat.outputs import ConsoleOutput
items = []
for line in open(record, "rb"):
    doc_id, fragment, text = orjson.loads(line)
    items.append((doc_id, fragment, text))
gc.collect(); quiet_collector()

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

if mode == "es":
    from wirebeat.elasticsearch_output import ElasticsearchOutput
    from wirebeat.config import base_schema
    prefix = "output.elasticsearch."
    cfg = {k[len(prefix):]: o.default for k, o in base_schema().items() if k.startswith(prefix)}
    output = ElasticsearchOutput(cfg, "wirebeat-bench")
    docs = [(i, Fragment(t) if f else loads(t)) for i, f, t in items]
    batches = [docs[n:n + 1600] for n in range(0, len(docs), 1600)]
    started = cpu()
    for batch in batches:
        output._body(batch)
    print(cpu() - started)
    sys.exit(0)

sink = open("/dev/null", "wb")
if mode == "pipeline":
    pipeline = Pipeline(ConsoleOutput(stream=sink))
    publish, tick = pipeline.publish, pipeline.maybe_flush
else:                   # "build": rebuilding the documents only, the baseline
    def publish(doc_id, doc): pass
    def tick(): pass
started = cpu()
for n, (doc_id, fragment, text) in enumerate(items):
    publish(doc_id, Fragment(text) if fragment else loads(text))
    if n % 1000 == 999:
        tick()
if mode == "pipeline":
    assert pipeline.close() == 0
print(cpu() - started)
"""


def record(capture: Path, extra: list[str], into: Path) -> int:
    subprocess.run([sys.executable, "-c", RECORD, str(into), "run", "-I", str(capture), "--console",
                    "-E", "logging.level=error", *extra], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(into, "rb") as fh:
        return sum(1 for _ in fh)


def replay(tree: Path, recorded: Path, mode: str) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    proc = subprocess.run(["nice", "-n", "10", sys.executable, "-c", REPLAY, str(tree), str(recorded), mode],
                          cwd=ROOT, env=env, capture_output=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"replay failed: {proc.stderr.decode()[-2000:]}")
    return float(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare against")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--packets", type=int, default=100_000)
    parser.add_argument("--es", action="store_true", help="also time the Elasticsearch bulk body building")
    args = parser.parse_args()
    workloads = [("realistic, flows on", generate_realistic(args.packets), []),
                 ("mixed", generate(args.packets), []),
                 ("mixed, per-packet documents", generate(args.packets), ["-E", "wirebeat.packets.enabled=true"])]
    modes = ["pipeline", *(["es"] if args.es else [])]
    with tempfile.TemporaryDirectory(prefix="output-cost-") as tmp:
        base = export(args.base, Path(tmp))     # with its own C accelerators built
        # This worktree, uncommitted changes included, laid out the same way.
        this = Path(tmp) / "this"
        shutil.copytree(ROOT / "beat", this / "wirebeat", ignore=shutil.ignore_patterns("__pycache__"))
        shutil.copytree(ROOT / "decoders", this / "wirebeat" / "decoders")
        shutil.copytree(ROOT / "index_templates", this / "wirebeat" / "index_templates")
        trees = {"base": base, "this": this}
        print(f"| workload | documents | output | {args.base} µs/doc | this µs/doc |")
        print("|---|---|---|---|---|")
        for name, capture, extra in workloads:
            recorded = Path(tmp) / "record.ndjson"
            count = record(capture, extra, recorded)
            runs: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.repeat):
                for mode in ["build", *modes]:
                    for label, tree in trees.items():
                        runs.setdefault((label, mode), []).append(replay(tree, recorded, mode))
            best = {key: min(values) for key, values in runs.items()}
            for mode in modes:
                cost = {label: (best[(label, mode)] - (best[(label, "build")] if mode == "pipeline" else 0))
                        / count * 1e6 for label in trees}
                what = "console (publish to write)" if mode == "pipeline" else "elasticsearch bulk body"
                print(f"| {name} | {count} | {what} | {cost['base']:.2f} | {cost['this']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
