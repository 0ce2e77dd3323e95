"""The osmo-pcap ZeroMQ feed over real sockets: several clients, bad messages, a restart.

The publisher (tests/osmo_publisher.py) emits exactly osmo-pcap-server's wire
format (../shared/reference/osmo-pcap-zmq.md). Each client pings from its own
addresses, so every document says by its addresses which client it came
from, and its capture.source must agree.
"""
from __future__ import annotations

import signal
import struct
import uuid
from collections import Counter
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

import pcapgen as g
from osmo_publisher import Client, Publisher
from running import Wirebeat, wait_until

T0 = 1_760_000_000_000_000_000       # ns


def _echo(client_no: int, seq: int, reply: bool = False) -> bytes:
    a, b = f"10.{client_no}.0.1", f"10.{client_no}.0.2"
    src, dst = (b, a) if reply else (a, b)
    return g.ipv4(src, dst, g.IPPROTO_ICMP, g.icmp_echo(client_no, seq, b"p" * 24, reply=reply))


def _pairs(client: Client, client_no: int, count: int, start_seq: int = 0,
           link=g.ethernet, interface: int = 0) -> list[list[bytes]]:
    """Echo request/reply pairs as messages of one client."""
    messages = []
    for seq in range(start_seq, start_seq + count):
        ts = T0 + seq * 10_000_000
        messages.append(client.message(ts, link(_echo(client_no, seq)), interface))
        messages.append(client.message(ts + 250_000, link(_echo(client_no, seq, reply=True)), interface))
    return messages


def _interleave(*streams: list[list[bytes]]) -> list[list[bytes]]:
    out = []
    for i in range(max(len(s) for s in streams)):
        out += [s[i] for s in streams if i < len(s)]
    return out


def _icmp_per_source(docs: list[dict]) -> Counter:
    return Counter(d["capture"]["source"] for d in docs if d["event"]["dataset"] == "icmp")


def _check_addresses_match_source(docs: list[dict], numbers: dict[str, int]) -> None:
    for doc in docs:
        if doc["event"]["dataset"] == "icmp":
            n = numbers[doc["capture"]["source"]]
            assert doc["source"]["ip"] == f"10.{n}.0.1", doc
            assert doc["status"] == "OK", doc


@pytest.fixture
def publisher():
    pub = Publisher()
    yield pub
    pub.close()


def test_clients_with_different_link_types_malformed_messages_and_a_restart(publisher):
    edge1 = Client("edge1")                                               # Ethernet, pcap LE us
    edge2 = Client("edge.2", g.LINKTYPE_LINUX_SLL, big_endian=True, nanosecond=True)
    edge10 = Client("edge10", pcapng=True, big_endian=True,               # two interfaces
                    interfaces=[(g.LINKTYPE_ETHERNET, None), (g.LINKTYPE_LINUX_SLL2, 9)])
    numbers = {"edge1": 1, "edge.2": 2, "edge10": 10}
    wb = Wirebeat("--zmq", publisher.endpoint, "--console", "--strict")
    try:
        publisher.wait_for_subscriber()
        publisher.event("connect", "edge1")
        publisher.event("disconnect", "edge1")        # osmo-pcap's spurious disconnect
        messages = _interleave(_pairs(edge1, 1, 5), _pairs(edge2, 2, 5, link=g.linux_sll),
                               _pairs(edge10, 10, 3),
                               _pairs(edge10, 10, 2, start_seq=3, link=g.linux_sll2, interface=1))
        for parts in messages:
            publisher.send(parts)
        # Malformed, one of each reason; none may stop anything.
        good = edge1.message(T0, g.ethernet(_echo(1, 99)))
        publisher.send(good[:2])                                            # parts
        publisher.send([good[0], b"\x00" * 24, good[2]])                    # header
        publisher.send([good[0], good[1], good[2][:-5]])                    # truncated
        small = Client("edge1", snaplen=64)
        big = g.ethernet(_echo(1, 98) + b"x" * 100)
        publisher.send([good[0], small.header, struct.pack("<IIII", 1, 0, len(big), len(big)) + big])
        publisher.send(edge10.message(T0, g.ethernet(_echo(10, 97)), interface=0)[:2]
                       + [g.pcapng_epb(7, T0, g.ethernet(_echo(10, 97)), big_endian=True)])  # interface
        publisher.send([b"data.v2.edge1", good[1], good[2]])               # topic
        publisher.event("closingtracefile", "edge.2", "/var/lib/osmo-pcap/edge.2/trace_1.pcap")
        # The header changes mid-stream: edge1 moves to pcapng with Linux cooked v2.
        edge1_ng = Client("edge1", pcapng=True, interfaces=[(g.LINKTYPE_LINUX_SLL2, 9)])
        for parts in _pairs(edge1_ng, 1, 2, start_seq=10, link=g.linux_sll2):
            publisher.send(parts)
        wb.wait_for_counter("zmq.received.edge1", 10 + 4 + 4)
        wb.wait_for_counter("zmq.received.edge10", 10 + 1)

        # The collector restarts on the same port; wirebeat reconnects by itself.
        port = publisher.port
        publisher.close()
        restarted = Publisher(port)
        try:
            restarted.wait_for_subscriber()
            for parts in _interleave(_pairs(edge1, 1, 3, start_seq=20),
                                     _pairs(edge2, 2, 3, start_seq=20, link=g.linux_sll)):
                restarted.send(parts)
            wb.wait_for_counter("zmq.received.edge.2", 10 + 6)
            wb.wait_for_counter("zmq.received.edge1", 18 + 6)
            stats = wb.stats()["counters"]
        finally:
            restarted.close()
        code, _ = wb.stop()
    finally:
        wb.kill()
    assert code == 0, wb.stderr_text()
    docs = wb.documents()
    assert _icmp_per_source(docs) == {"edge1": 5 + 2 + 3, "edge.2": 5 + 3, "edge10": 5}
    _check_addresses_match_source(docs, numbers)
    assert all(d["@timestamp"].startswith("2025-10-09") for d in docs if d["event"]["dataset"] == "icmp")
    collector = [d for d in docs if d["event"]["dataset"] == "wirebeat.collector"]
    assert [(d["capture"]["source"], d["event"]["action"]) for d in collector] == [
        ("edge1", "connect"), ("edge1", "disconnect"), ("edge.2", "closingtracefile")]
    assert collector[2]["file"]["path"] == "/var/lib/osmo-pcap/edge.2/trace_1.pcap"
    assert all(d["capture"]["collector"] == f"tcp://127.0.0.1:{port}" for d in collector)
    for reason in ("parts", "header", "truncated", "caplen_over_snaplen", "unknown_interface", "topic"):
        assert stats.get(f"zmq.malformed.{reason}") == 1, (reason, stats)
    assert stats["zmq.events.connect"] == 1 and stats["zmq.events.closingtracefile"] == 1
    summary = wb.summary()
    assert "messages per client: edge.2 16, edge1 24, edge10 11" in summary, summary
    assert "6 malformed" in summary


@pytest.mark.parametrize("choose", [("-E", "wirebeat.sources.zmq.clients=[edge1]"), ("--zmq-client", "edge1")])
def test_subscribing_to_named_clients_excludes_longer_names(publisher, choose):
    edge1, edge10 = Client("edge1"), Client("edge10")
    wb = Wirebeat("--zmq", publisher.endpoint, "--console", *choose)
    try:
        # A prefix subscription: data.v1.edge1 also matches data.v1.edge10.
        publisher.wait_for_subscriber(b"data.v1.edge1", b"event.")
        for parts in _interleave(_pairs(edge1, 1, 3), _pairs(edge10, 10, 3)):
            publisher.send(parts)
        publisher.event("connect", "edge10")
        publisher.event("connect", "edge1")
        wb.wait_for_counter("zmq.received.edge10", 6)
        wb.wait_for_counter("zmq.received.edge1", 6)
        code, _ = wb.stop()
    finally:
        wb.kill()
    assert code == 0, wb.stderr_text()
    docs = wb.documents()
    assert _icmp_per_source(docs) == {"edge1": 3}
    assert [d["capture"]["source"] for d in docs if d["event"]["dataset"] == "wirebeat.collector"] == ["edge1"]


def test_an_idle_feed_still_reports_timed_out_transactions(publisher):
    edge1 = Client("edge1")
    wb = Wirebeat("--zmq", publisher.endpoint, "--console",
                  "-E", "wirebeat.protocols.icmp.transaction_timeout=1s",
                  "-E", "queue.mem.flush.timeout=200ms")
    try:
        publisher.wait_for_subscriber()
        publisher.send(edge1.message(T0, g.ethernet(_echo(1, 1))))    # never answered
        # No packet follows: only the wall-clock tick can time the request out.
        [doc] = wait_until(wb.documents, 15, "the unanswered request's document")
        assert doc["status"] == "Error" and doc["capture"]["source"] == "edge1"
    finally:
        code, _ = wb.stop()
        wb.kill()
    assert code == 0


def test_files_and_two_feeds_at_once(tmp_path: Path):
    first, second = Publisher(), Publisher()
    capture = tmp_path / "file.pcap"
    g.write_pcap(capture, [(T0, g.ethernet(_echo(5, 1))), (T0 + 10**6, g.ethernet(_echo(5, 1, reply=True)))])
    wb = Wirebeat("--zmq", first.endpoint, "--zmq", second.endpoint, "-I", str(capture), "--console",
                  "-E", "wirebeat.flows.enabled=false")
    try:
        first.wait_for_subscriber()
        second.wait_for_subscriber()
        for parts in _pairs(Client("north"), 1, 2):
            first.send(parts)
        for parts in _pairs(Client("south", g.LINKTYPE_LINUX_SLL), 2, 2, link=g.linux_sll):
            second.send(parts)
        wb.wait_for_counter("zmq.received.north", 4)
        wb.wait_for_counter("zmq.received.south", 4)
        code, _ = wb.stop(signal.SIGINT)
    finally:
        wb.kill()
        first.close()
        second.close()
    assert code == 0, wb.stderr_text()
    assert _icmp_per_source(wb.documents()) == {"north": 2, "south": 2, str(capture): 1}
    assert wb.summary().startswith("wirebeat: 1 file(s), 2 ZeroMQ feed(s), 10 packets, 5 documents")


def test_two_collectors_clients_of_the_same_name_never_share_state():
    # Both collectors have a client "edge1" capturing the same addresses: one
    # sees only the echo requests, the other only the replies. Shared state
    # would pair them into answered pings and one flow of both directions.
    north, south = Publisher(), Publisher()
    edge1 = Client("edge1")
    wb = Wirebeat("--zmq", north.endpoint, "--zmq", south.endpoint, "--console",
                  "-E", "wirebeat.protocols.icmp.transaction_timeout=1s")
    try:
        north.wait_for_subscriber()
        south.wait_for_subscriber()
        pairs = _pairs(edge1, 1, 3)
        for request, reply in zip(pairs[::2], pairs[1::2]):
            north.send(request)
            south.send(reply)
        wb.wait_for_counter("zmq.received.edge1", 6)
        wb.wait_for_counter("packets.read", 6)
        code, _ = wb.stop()
    finally:
        wb.kill()
        north.close()
        south.close()
    assert code == 0, wb.stderr_text()
    docs = wb.documents()
    icmp = [d for d in docs if d["event"]["dataset"] == "icmp"]
    assert Counter(d["status"] for d in icmp) == {"Error": 6}         # nothing paired across collectors
    flows = [d for d in docs if d["event"]["dataset"] == "flow"]
    assert len(flows) == 2 and all(d["destination"].get("packets", 0) == 0 for d in flows), flows
    by_collector = Counter((d["capture"]["collector"], d["status"]) for d in icmp)
    assert by_collector == {(north.endpoint, "Error"): 3, (south.endpoint, "Error"): 3}, by_collector
    assert all(d["capture"]["source"] == "edge1" for d in icmp)
    assert sorted((d["capture"]["collector"], d["source"]["packets"], d["destination"].get("packets", 0))
                  for d in flows) == sorted([(north.endpoint, 3, 0), (south.endpoint, 3, 0)]), flows
    assert len({d["network"]["community_id"] for d in flows}) == 1       # the same conversation


def test_a_bad_endpoint_is_exit_2(wirebeat):
    proc = wirebeat("run", "--zmq", "nonsense", "--console")
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == "wirebeat: --zmq nonsense: expected an endpoint like tcp://HOST:PORT"
    proc = wirebeat("run", "--zmq", "tcp://127.0.0.1:notaport", "--console")
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == ("wirebeat: --zmq tcp://127.0.0.1:notaport: "
                                            "port 'notaport' is not a number from 1 to 65535")


@pytest.mark.elasticsearch
def test_feed_lands_in_elasticsearch_from_an_unprivileged_process(es_url, publisher):
    index = f"wbtest-zmq-{uuid.uuid4().hex[:8]}"
    edge1, edge2 = Client("edge1"), Client("edge.2", g.LINKTYPE_LINUX_SLL)
    wb = Wirebeat("--zmq", publisher.endpoint, "--user", "nobody",
                  "-E", f"output.elasticsearch.hosts=[{es_url}]", "-E", f"output.elasticsearch.index={index}",
                  "-E", "monitoring.enabled=true", "-E", "monitoring.period=1s",
                  "-E", "queue.mem.flush.timeout=200ms")
    try:
        status = wb.status()
        assert status["Uid"].split()[:3] != ["0", "0", "0"] and int(status["CapEff"], 16) == 0, status
        publisher.wait_for_subscriber()
        publisher.event("connect", "edge1")
        for parts in _interleave(_pairs(edge1, 1, 4), _pairs(edge2, 2, 3, link=g.linux_sll)):
            publisher.send(parts)
        publisher.event("closingtracefile", "edge1", "/srv/traces/edge1.pcap")
        wb.wait_for_counter("events.acked", 4 + 3 + 2 + 1)       # + at least one stats document
        code, _ = wb.stop()
    finally:
        wb.kill()
    assert code == 0, wb.stderr_text()
    es = Elasticsearch(es_url)
    es.indices.refresh(index=index)
    result = es.search(index=index, size=0, query={"term": {"event.dataset": "icmp"}},
                       aggs={"by_source": {"terms": {"field": "capture.source"}}})
    buckets = {b["key"]: b["doc_count"] for b in result["aggregations"]["by_source"]["buckets"]}
    assert buckets == {"edge1": 4, "edge.2": 3}
    closing = es.search(index=index, query={"bool": {"filter": [
        {"term": {"event.dataset": "wirebeat.collector"}}, {"term": {"event.action": "closingtracefile"}},
        {"term": {"file.path": "/srv/traces/edge1.pcap"}}]}})
    assert closing["hits"]["total"]["value"] == 1
    stats = es.search(index=index, query={"term": {"event.dataset": "wirebeat.stats"}})
    assert stats["hits"]["total"]["value"] >= 1
    # Counters are a flattened object: every counter is searchable by its dotted name.
    assert es.count(index=index, query={"exists": {"field": "wirebeat.stats.counters.zmq.received.edge1"}})["count"] >= 1
    assert es.count(index=index, query={"range": {"wirebeat.stats.process.rss_bytes": {"gt": 0}}})["count"] >= 1
