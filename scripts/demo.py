"""The demo: bundled captures -> local Elasticsearch -> a summary read back from it.

Run by `make demo`. Starts (or reuses) the development Elasticsearch node of
scripts/esnode.py, installs the index template with `wirebeat setup`, indexes
every capture under pcaps/ with `wirebeat run`, then asks Elasticsearch, not
wirebeat, what it holds: documents per event.dataset and per capture.source.
Then runs the watch-list recipe (examples/watchlist/) into its own index and
shows whose frames it kept, per employee and protocol stack.
It ends by writing the HTML report (`wirebeat report`, the Kibana dashboards'
views) to wirebeat-report.html and printing its path.
The node is left running so Kibana or curl can look further; `make es-stop`
stops it.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import esnode  # noqa: E402
from elasticsearch import Elasticsearch  # noqa: E402


def main() -> int:
    url = esnode.start()
    print(f"Elasticsearch: {url}")
    captures = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "pcaps").rglob("*")
                      if p.suffix in (".pcap", ".pcapng"))
    if not captures:
        print("no captures under pcaps/", file=sys.stderr)
        return 1
    wirebeat = [sys.executable, "-m", "wirebeat.cli"]
    hosts = f"output.elasticsearch.hosts=[{url}]"
    subprocess.run([*wirebeat, "setup", "-E", hosts], cwd=ROOT, check=True)
    inputs = [arg for path in captures for arg in ("-I", path)]
    # Several RTP captures in pcaps/rtp carry no SIP: let the heuristic find their streams.
    # monitoring.enabled: the collector health views get wirebeat's own numbers;
    # wirebeat.flows.enabled: flow reports, once flows are implemented.
    run = subprocess.run([*wirebeat, "run", *inputs, "-E", hosts, "-E", "logging.level=warning",
                          "-E", "wirebeat.protocols.rtp.heuristic=true", "-E", "monitoring.enabled=true",
                          "-E", "wirebeat.flows.enabled=true"], cwd=ROOT)
    if run.returncode != 0:
        print(f"wirebeat run failed with exit code {run.returncode}", file=sys.stderr)
        return run.returncode

    es = Elasticsearch(url)
    es.indices.refresh(index="wirebeat-*")
    result = es.search(index="wirebeat-*", size=0, aggs={
        "dataset": {"terms": {"field": "event.dataset", "size": 50}},
        "source": {"terms": {"field": "capture.source", "size": 200}},
        "status": {"terms": {"field": "status", "size": 10}},
    })
    total = result["hits"]["total"]["value"]
    print(f"\n{total} documents in Elasticsearch (index wirebeat-*)\n")
    for title, agg in (("event.dataset", "dataset"), ("status", "status"),
                       ("capture.source", "source")):
        print(f"documents per {title}:")
        for bucket in result["aggregations"][agg]["buckets"]:
            print(f"  {bucket['doc_count']:>7}  {bucket['key']}")
        print()
    print(f"Explore further: curl '{url}/wirebeat-*/_search?q=status:Error&pretty'")
    code = watchlist(wirebeat, url, es)
    if code != 0:
        return code
    print("Kibana: wirebeat setup --dashboards -E setup.kibana.host=http://KIBANA:5601 imports the dashboards")
    report = ROOT / "wirebeat-report.html"
    made = subprocess.run([*wirebeat, "report", "-E", hosts, "-o", str(report)], cwd=ROOT)
    if made.returncode != 0:
        print(f"wirebeat report failed with exit code {made.returncode}", file=sys.stderr)
        return made.returncode
    print(f"\nReport: {report}")
    return 0


def watchlist(wirebeat: list[str], url: str, es: Elasticsearch) -> int:
    """The watch-list recipe of examples/watchlist/: only the watched employee's frames."""
    index = "watchlist-demo"   # its own index: the counts above stay those of pcaps/
    run = subprocess.run([*wirebeat, "run", "-c", "examples/watchlist/wirebeat.yml",
                          "-I", "pcaps/watchlist/office.pcap", "-E", f"output.elasticsearch.hosts=[{url}]",
                          "-E", f"output.elasticsearch.index={index}", "-E", "logging.level=warning"],
                         cwd=ROOT)
    if run.returncode != 0:
        return run.returncode
    es.indices.refresh(index=index)
    result = es.search(index=index, size=0, aggs={
        "employee": {"terms": {"field": "employee.name"}},
        "dataset": {"terms": {"field": "event.dataset", "size": 20}},
        "stack": {"terms": {"field": "network.protocol_stack", "size": 20}}})
    print(f"\nwatch list (examples/watchlist/wirebeat.yml -> index {index}):")
    for title, agg in (("employee.name", "employee"), ("event.dataset", "dataset"),
                       ("network.protocol_stack", "stack")):
        print(f"documents (frames, transactions, flows) per {title}:")
        for bucket in result["aggregations"][agg]["buckets"]:
            print(f"  {bucket['doc_count']:>7}  {bucket['key']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
