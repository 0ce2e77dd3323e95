"""`lookup` from an Elasticsearch index: the watch-list recipe with the computers
table kept in the real node, live reloading, and clear errors.

The computers rows are those of examples/watchlist/computers.csv, indexed
here; tshark is the oracle for which frames Alice's machine sent (as in
test_watchlist.py, whose file-table run must give the same documents).
"""
from __future__ import annotations

import csv
import json
import time
import uuid
from pathlib import Path

import pytest

from conftest import PCAPS, ROOT, run_wirebeat

CAPTURE = PCAPS / "watchlist" / "office.pcap"
EXAMPLE = ROOT / "examples" / "watchlist"

pytestmark = pytest.mark.elasticsearch


@pytest.fixture
def es(es_url):
    from elasticsearch import Elasticsearch
    client = Elasticsearch(es_url)
    made: list[str] = []
    yield client, made
    for index in made:
        client.options(ignore_status=404).indices.delete(index=index)


def _index_rows(client, made: list[str], rows: list[dict]) -> str:
    index = f"watch-computers-{uuid.uuid4().hex[:8]}"
    made.append(index)
    for i, row in enumerate(rows):
        client.index(index=index, id=str(i), document=row)
    client.indices.refresh(index=index)
    return index


def _computers() -> list[dict]:
    with open(EXAMPLE / "computers.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _config(tmp_path: Path, es_url: str, index: str) -> Path:
    (tmp_path / "employees.csv").write_text((EXAMPLE / "employees.csv").read_text())
    config = tmp_path / "wirebeat.yml"
    config.write_text(
        "wirebeat.packets.enabled: true\n"
        f"output.elasticsearch.hosts: ['{es_url}']\n"
        "processors:\n"
        f"  - lookup: {{field: source.mac, index: {index}, key: macaddr, target: computer}}\n"
        "  - lookup: {field: computer.empkey, table: employees.csv, key: key, target: employee}\n"
        "  - drop_event: {when: {not: {equals: {employee.watch_flag: 'YES'}}}}\n")
    return config


def _run(config: Path) -> list[dict]:
    proc = run_wirebeat("run", "-E", "wirebeat.flows.enabled=false", "-c", str(config), "-I", str(CAPTURE),
                        "--console")
    assert proc.returncode == 0, proc.stderr.decode()
    return [json.loads(line) for line in proc.stdout.splitlines()]


def test_an_index_table_gives_the_same_documents_as_the_file_table(es, es_url, tmp_path: Path):
    client, made = es
    index = _index_rows(client, made, _computers())
    from_index = _run(_config(tmp_path, es_url, index))
    from_file = _run(EXAMPLE / "wirebeat.yml")
    assert len(from_index) == 19        # alice's 13 frames and 6 transactions (test_watchlist.py)
    assert sorted(map(json.dumps, from_index)) == sorted(map(json.dumps, from_file))
    assert all(d["computer"]["hostname"] == "ws-alice" for d in from_index)


def test_an_index_table_is_reloaded_when_a_document_changes_and_kept_when_the_index_goes(es):
    from wirebeat.processors.tables import IndexTable
    client, made = es
    index = _index_rows(client, made, _computers())
    table = IndexTable(client, index, "macaddr", "exact", 1000, reload_period_s=0.1)
    assert table.find("02:00:00:77:00:0b")["hostname"] == "ws-bob"
    client.index(index=index, id="1", document={"macaddr": "0200.0077.000b", "hostname": "ws-bob-2",
                                                 "empkey": "e2"}, refresh="wait_for")
    deadline = time.monotonic() + 10
    while table.find("02-00-00-77-00-0B")["hostname"] != "ws-bob-2":
        assert time.monotonic() < deadline, "the changed document was not reloaded"
        time.sleep(0.05)
    client.delete(index=index, id="0", refresh="wait_for")            # alice's machine leaves
    deadline = time.monotonic() + 10
    while table.find("02-00-00-77-00-0A") is not None:
        assert time.monotonic() < deadline, "the deleted document was not reloaded"
        time.sleep(0.05)
    assert table.reloads == 2 and table.reload_errors == 0
    client.indices.delete(index=index)
    deadline = time.monotonic() + 10
    while table.reload_errors == 0:
        assert time.monotonic() < deadline, "a vanished index was not noticed"
        table.find("x")
        time.sleep(0.05)
    assert table.find("02-00-00-77-00-0B")["hostname"] == "ws-bob-2"    # the previous version stays
    assert table.reload_errors == 1


def test_more_rows_than_max_rows_is_refused_at_start(es, es_url, tmp_path: Path):
    client, made = es
    index = _index_rows(client, made, _computers())
    config = _config(tmp_path, es_url, index)
    config.write_text(config.read_text().replace("target: computer}", "target: computer, max_rows: 3}"))
    proc = run_wirebeat("test", "config", "-c", str(config))
    assert proc.returncode == 2
    [line] = proc.stderr.decode().strip().splitlines()
    assert line == (f"wirebeat: config key 'processors[0].lookup.index': {index}: "
                    "4 documents, above max_rows 3")


def test_a_missing_index_or_an_unreachable_node_is_exit_2_in_one_line(es_url, tmp_path: Path):
    missing = f"watch-missing-{uuid.uuid4().hex[:8]}"
    proc = run_wirebeat("test", "config", "-c", str(_config(tmp_path, es_url, missing)))
    assert proc.returncode == 2
    [line] = proc.stderr.decode().strip().splitlines()
    assert line.startswith(f"wirebeat: config key 'processors[0].lookup.index': {missing}: HTTP 404")
    proc = run_wirebeat("test", "config", "-c", str(_config(tmp_path, "http://127.0.0.1:9", "computers")))
    assert proc.returncode == 2
    [line] = proc.stderr.decode().strip().splitlines()
    assert line.startswith("wirebeat: config key 'processors[0].lookup.index': computers: ")


def test_table_and_index_together_is_a_config_error(tmp_path: Path):
    config = tmp_path / "both.yml"
    config.write_text("processors:\n  - lookup: {field: a, table: t.csv, index: t, key: k, target: x}\n")
    proc = run_wirebeat("test", "config", "-c", str(config))
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == ("wirebeat: config key 'processors[0].lookup': give either "
                                            "table (a file) or index (an Elasticsearch index), not both")
