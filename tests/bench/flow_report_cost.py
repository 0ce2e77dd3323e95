"""Instructions per flow report, isolated from the rest of a run (issue #9).

    .venv/bin/python tests/bench/flow_report_cost.py [--flows 2000] [--base main]

Runs, under callgrind (valgrind must be installed), a flow table of `--flows` TCP
flows between new addresses with the default reporter (text reports into blocks,
`network.direction` with [private]): once with one sweep of first reports, once with
more sweeps, without packets in between (quiet flows: the last three sweeps report
them again, then they end) and with one packet per flow before each sweep (busy).
Prints the instructions of the C reporter's `report` per report of each kind:
a flow's first report, a report of a quiet flow (three periodic ones and the final
one), a periodic report of a busy flow. With
`--base REV` that revision is exported and built as tests/bench/run.py's `--base`
does and measured the same way. Instruction counts do not depend on the host's load.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTS = HERE.parent

WORKLOAD = r'''
import sys
sys.path.insert(0, {tests!r})
import pcapgen as g
from wirebeat.direction import NetworkDirection
from wirebeat.document import DocumentBuilder
from wirebeat.flows import FlowReporter, FlowTable

n, extra, busy = {flows}, int(sys.argv[1]), sys.argv[2] == "busy"
builder = DocumentBuilder({{"type": "wirebeat"}}, [], {{}}, False, [])
builder.direction = NetworkDirection(["private"])
blocks = []
reporter = FlowReporter(builder, lambda i, d: None, 60.0, 10.0, 100000, fragments=True,
                        publish_many=lambda docs: None,
                        publish_block=lambda data, ids, count: blocks.append(count), block_docs=1024)
table = FlowTable("capture.pcap", reporter)
frames = []
for i in range(n):
    a, b = f"10.{{i >> 8 & 255}}.{{i & 255}}.7", f"198.51.{{i >> 8 & 255}}.{{i & 255}}"
    frames.append(g.ethernet(g.ipv4(a, b, 6, g.tcp(a, b, 1024 + i, 443, b"x" * 100, seq=5, flags="PA"))))
t = 1_700_000_000.0
def packets(t):
    for f in frames:
        table.account(t, 1, f, (), f[26:30], f[30:34], 6, f[34:])
packets(t)
table.sweep(t + 1)                  # the first sweep sets the clock
for k in range(extra):              # sweeps at t + 20.5, 30.5, ...: the first one reports every flow
    if busy:
        packets(t + 11 + 10 * k)
    table.sweep(t + 20.5 + 10 * k)
'''


def report_instructions(tree: Path | None, flows: int, extra: int, kind: str) -> int:
    """Instructions of `report` (inclusive) in one callgrind run of the workload."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    with tempfile.TemporaryDirectory() as tmp:
        script, out = Path(tmp) / "workload.py", Path(tmp) / "callgrind.out"
        script.write_text(WORKLOAD.format(tests=str(TESTS), flows=flows))
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, str(script),
                        str(extra), kind], env=env, check=True, capture_output=True)
        text = subprocess.run(["callgrind_annotate", "--inclusive=yes", str(out)], check=True,
                              capture_output=True, text=True).stdout
    m = re.search(r"^\s*([\d,]+) \([^)]*\)\s+\S*:report \[", text, re.M)
    if m is None:
        raise SystemExit("no `report` in the profile: is wirebeat._flowcore built?")
    return int(m.group(1).replace(",", ""))


def measure(tree: Path | None, flows: int) -> dict[str, float]:
    first = report_instructions(tree, flows, 1, "quiet")
    quiet = report_instructions(tree, flows, 5, "quiet")      # + 3 periodic sweeps, then the flows end
    busy_first = report_instructions(tree, flows, 1, "busy")
    busy = report_instructions(tree, flows, 5, "busy")        # + 4 periodic sweeps after a packet each
    return {"first report": first / flows,
            "quiet flow (no packet since), periodic or final": (quiet - first) / (3 * flows + flows),
            "periodic, packets since": (busy - busy_first) / (4 * flows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flows", type=int, default=2000)
    parser.add_argument("--base", metavar="REV", help="also measure this revision (e.g. main)")
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    from run import trees
    for name, tree in trees(args.base):
        for kind, value in measure(tree, args.flows).items():
            print(f"{name}: {kind}: {value:,.0f} instructions a report")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
