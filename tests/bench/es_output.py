"""Documents per second into the real Elasticsearch node: bulk size x concurrent requests x compression.

    python tests/bench/es_output.py [--packets 100000] [--es URL] [--sizes 50,500,1600]
        [--workers 1,2,4] [--levels 0,1] [--rounds 1]

Decodes a generated mixed capture (tests/bench/gen_mixed.py) once with
`wirebeat run --console` (timed: the decoders' documents/s, the rate the
output has to keep up with), then sends those documents through wirebeat's
own ElasticsearchOutput for each combination, in batches as the pipeline
hands them over (`--batch`, default 6400 so that 4 requests of 1600 fit in
one), each combination into a fresh index under the index template, and
prints a Markdown table of documents/s. The indices are deleted afterwards.
The node's own CPU shares the host's cores with wirebeat: on a 2-core host
the figures say what this machine does, not what a cluster would.
"""
from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
from elasticsearch import Elasticsearch

from wirebeat.config import base_schema
from wirebeat.outputs import ElasticsearchOutput

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import generate  # noqa: E402
WIREBEAT = [sys.executable, "-m", "wirebeat.cli"]


def decode(capture: Path) -> tuple[list[tuple[str, dict]], float]:
    """The capture's documents (ids: a hash of each document) and the decoders' documents/s."""
    started = time.monotonic()
    proc = subprocess.run([*WIREBEAT, "run", "-I", str(capture), "--console"], cwd=ROOT,
                          capture_output=True, check=True)
    elapsed = time.monotonic() - started
    lines = proc.stdout.splitlines()
    docs = [(hashlib.blake2b(line, digest_size=15).hexdigest(), orjson.loads(line)) for line in lines]
    return docs, len(docs) / elapsed


def node_cpu_s() -> float:
    """CPU seconds the local node (scripts/esnode.py's) has used so far; 0 when it is not ours."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import esnode
    pid = esnode.running_pid(esnode.layout())
    if pid is None:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def send_all(url: str, index: str, docs: list[tuple[str, dict]], size: int, workers: int, level: int,
             batch: int) -> tuple[float, float, float]:
    """(documents/s, wirebeat's CPU seconds, the node's CPU seconds) for one combination."""
    cfg = {key[len("output.elasticsearch."):]: option.default for key, option in base_schema().items()
           if key.startswith("output.elasticsearch.")}
    cfg.update({"hosts": [url], "bulk_max_size": size, "worker": workers, "compression_level": level})
    output = ElasticsearchOutput(cfg, index)
    stopping = threading.Event()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    node0 = node_cpu_s()
    started = time.monotonic()
    failed = 0
    for i in range(0, len(docs), batch):
        failed += output.send(docs[i:i + batch], stopping)
    elapsed = time.monotonic() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    node1 = node_cpu_s()
    output.close()
    if failed:
        raise SystemExit(f"{failed} documents failed into {index}")
    return (len(docs) / elapsed, (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
            node1 - node0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=100_000)
    parser.add_argument("--es", default="http://127.0.0.1:9200")
    parser.add_argument("--sizes", default="50,500,1600")
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--levels", default="0,1")
    parser.add_argument("--batch", type=int, default=6400)
    parser.add_argument("--rounds", type=int, default=1)
    args = parser.parse_args()
    capture = generate(args.packets)
    docs, decode_rate = decode(capture)
    print(f"{len(docs)} documents; decoders (wirebeat run --console, flows on): {decode_rate:,.0f} documents/s",
          flush=True)
    es = Elasticsearch(args.es, request_timeout=120)
    prefix = f"esmulti-bench-{uuid.uuid4().hex[:6]}"
    subprocess.run([*WIREBEAT, "setup", "-E", f"output.elasticsearch.hosts=[{args.es}]",
                    "-E", f"output.elasticsearch.index={prefix}"], cwd=ROOT, check=True, capture_output=True)
    results: dict[tuple[int, int, int], list[tuple[float, float, float]]] = {}
    combos = list(itertools.product(*(map(int, getattr(args, name).split(","))
                                      for name in ("sizes", "workers", "levels"))))
    try:
        for round_no in range(args.rounds):
            for size, workers, level in combos:
                index = f"{prefix}-{size}-{workers}-{level}-{round_no}"
                rate, cpu, node_cpu = send_all(args.es, index, docs, size, workers, level, args.batch)
                es.indices.refresh(index=index)
                count = es.count(index=index)["count"]
                if count != len({doc_id for doc_id, _ in docs}):
                    raise SystemExit(f"{index} holds {count} documents")
                es.indices.delete(index=index)
                results.setdefault((size, workers, level), []).append((rate, cpu, node_cpu))
                print(f"  bulk {size:5d} worker {workers} gzip {level}: {rate:8,.0f} documents/s, "
                      f"CPU s: wirebeat {cpu:.1f}, node {node_cpu:.1f}", flush=True)
    finally:
        es.indices.delete(index=f"{prefix}-*", ignore_unavailable=True)
        es.options(ignore_status=404).indices.delete_index_template(name=prefix)
    print(f"\n| bulk_max_size | worker | compression_level | documents/s (best of {args.rounds}) "
          "| CPU s per 10k documents: wirebeat | the node |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (size, workers, level), runs in results.items():
        rate, cpu, node_cpu = max(runs)
        print(f"| {size} | {workers} | {level} | {rate:,.0f} | {cpu / len(docs) * 10_000:.2f} "
              f"| {node_cpu / len(docs) * 10_000:.2f} |")
    return 0


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
