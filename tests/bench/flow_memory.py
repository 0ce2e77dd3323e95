"""Memory a flow holds in the flow table, by tracemalloc (README Limits, docs/limits.md).

    .venv/bin/python tests/bench/flow_memory.py [--flows 5000] [--base main]

In a fresh interpreter per measurement: a flow table with the default text reporter
(reports into blocks that are dropped, as an output would take them) gets `--flows` UDP
or TCP flows of one packet each (new MAC pair, addresses and ports each), then one sweep
reports every flow (its static report text is cached in the record from then on).
Printed: the bytes per flow tracemalloc sees still allocated after the packets
(record, keys, table and endpoint dict slots) and after the sweep (plus the cached
report text). With `--base REV` that revision is exported and built as tests/bench/run.py's
`--base` does and measured the same way.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent

WORKLOAD = r'''
import gc, json, sys, tracemalloc
sys.path.insert(0, {tests!r})
import pcapgen as g
from wirebeat.document import DocumentBuilder
from wirebeat.flows import FlowReporter, FlowTable

n, proto = {flows}, int(sys.argv[1])
builder = DocumentBuilder({{"type": "wirebeat"}}, [], {{}}, False, [])
reporter = FlowReporter(builder, lambda i, d: None, 60.0, 10.0, 2 * n, fragments=True,
                        publish_many=lambda docs: None, publish_block=lambda data, ids, count: None,
                        block_docs=1024)
table = FlowTable("capture.pcap", reporter)
build = g.udp if proto == 17 else g.tcp
frames = []
for i in range(n):
    a, b = f"10.{{i >> 8 & 255}}.{{i & 255}}.7", f"198.51.{{i >> 8 & 255}}.{{i & 255}}"
    frames.append(g.ethernet(g.ipv4(a, b, proto, build(a, b, 1024 + i, 443, b"x" * 100)),
                             src=bytes((2, 0, 0, 1, i >> 8 & 255, i & 255)),
                             dst=bytes((2, 0, 0, 2, i >> 8 & 255, i & 255))))
t = 1_700_000_000.0
table.sweep(t)                      # the first sweep sets the clock
gc.collect()
tracemalloc.start()
before = tracemalloc.get_traced_memory()[0]
for i, f in enumerate(frames):
    table.account(t + i / n, 1, f, (), f[26:30], f[30:34], proto, f[34:])
gc.collect()
accounted = tracemalloc.get_traced_memory()[0] - before
table.sweep(t + 10.5)               # every flow's first (periodic) report
gc.collect()
reported = tracemalloc.get_traced_memory()[0] - before
assert len(table._records()) == n and table.reports == n
print(json.dumps({{"accounted": accounted / n, "reported": reported / n}}))
'''


def measure(tree: Path | None, flows: int, proto: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    out = subprocess.run([sys.executable, "-c", WORKLOAD.format(tests=str(TESTS), flows=flows), str(proto)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", type=int, default=5000)
    parser.add_argument("--base", metavar="REV", help="also measure this revision (e.g. main)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from run import trees
    for name, tree in trees(args.base):
        for proto, label in ((17, "UDP"), (6, "TCP")):
            m = measure(tree, args.flows, proto)
            print(f"{name}: {label}: {m['accounted']:,.0f} bytes a flow after its packet, "
                  f"{m['reported']:,.0f} once reported ({args.flows} flows)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
