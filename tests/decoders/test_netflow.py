"""The NetFlow/IPFIX decoder on export packets built here field by field.

Every expected value below is written from the packet the test builds (RFC
3954 / RFC 7011 layouts), never from a decoder run. Packets enter the engine as
the listener hands them over (raw IP/UDP frames), so these documents are the
ones a collector indexes.
"""
from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wirebeat.decoders.api import Datagram, DecodeError, FlowKey
from wirebeat.decoders.netflow import DECODER, NetflowDecoder, iso_time
from wirebeat.sources.netflow import LINKTYPE_RAW, frame
from wirebeat.testing import make_engine

EXPORTER = ("192.0.2.10", 40000)
COLLECTOR = (bytes([192, 0, 2, 1]), 2055)
EXPORT_SECS = 1_700_000_000          # 2023-11-14T22:13:20Z
UPTIME_MS = 3_600_000                # the exporter booted an hour before the export


def v5_packet(records: list[dict], sequence: int = 0, uptime: int = UPTIME_MS,
              sampling: int = 0, secs: int = EXPORT_SECS) -> bytes:
    header = struct.pack("!HHIIIIBBH", 5, len(records), uptime, secs, 500_000_000, sequence,
                         1, 2, sampling)
    body = b""
    for r in records:
        body += struct.pack("!4s4s4sHHIIIIHHBBBBHHBBH",
                            bytes(map(int, r["src"].split("."))), bytes(map(int, r["dst"].split("."))),
                            b"\0\0\0\0", 3, 4, r["packets"], r["bytes"], r["first"], r["last"],
                            r["sport"], r["dport"], 0, 0x1B, r["proto"], 0, 65001, 65002, 24, 16, 0)
    return header + body


V9_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (2, 4), (1, 4), (22, 4), (21, 4)]


def v9_template(template_id: int = 256, fields: list[tuple[int, int]] = V9_FIELDS) -> bytes:
    body = struct.pack("!HH", template_id, len(fields)) + b"".join(struct.pack("!HH", *f) for f in fields)
    return struct.pack("!HH", 0, 4 + len(body)) + body


def v9_data(template_id: int, rows: list[bytes]) -> bytes:
    body = b"".join(rows)
    pad = (-len(body)) % 4
    return struct.pack("!HH", template_id, 4 + len(body) + pad) + body + b"\0" * pad


def v9_row(src: str, dst: str, sport: int, dport: int, proto: int, packets: int, octets: int,
           first: int, last: int) -> bytes:
    return struct.pack("!4s4sHHBIIII", bytes(map(int, src.split("."))), bytes(map(int, dst.split("."))),
                       sport, dport, proto, packets, octets, first, last)


def v9_packet(*flowsets: bytes, sequence: int = 1, uptime: int = UPTIME_MS, source_id: int = 7,
              secs: int = EXPORT_SECS) -> bytes:
    return struct.pack("!HHIIII", 9, len(flowsets), uptime, secs, sequence, source_id) + b"".join(flowsets)


def ipfix_packet(*sets: bytes, sequence: int = 0, domain: int = 3, secs: int = EXPORT_SECS,
                 length: int | None = None) -> bytes:
    body = b"".join(sets)
    return struct.pack("!HHIII", 10, length or 16 + len(body), secs, sequence, domain) + body


def ipfix_set(set_id: int, body: bytes) -> bytes:
    return struct.pack("!HH", set_id, 4 + len(body)) + body


def ipfix_template(template_id: int, fields: list[tuple]) -> bytes:
    """fields: (element, length) or (element, length, enterprise number)."""
    out = struct.pack("!HH", template_id, len(fields))
    for f in fields:
        if len(f) == 3:
            out += struct.pack("!HHI", f[0] | 0x8000, f[1], f[2])
        else:
            out += struct.pack("!HH", *f)
    return ipfix_set(2, out)


class Collector:
    """An in-process engine fed the way the UDP listener feeds it."""

    def __init__(self, **options: object) -> None:
        overrides = {f"wirebeat.protocols.netflow.{k}": v for k, v in options.items()}
        self.engine, self.pipeline, self.output, self.stats = make_engine([DECODER], overrides=overrides)
        self.ids: list[str] = []
        send = self.output.send

        def keep_ids(batch, stopping):      # the document ids, for the determinism test
            self.ids.extend(doc_id for doc_id, _ in batch)
            return send(batch, stopping)
        self.output.send = keep_ids

    def send(self, payload: bytes, ts: float = EXPORT_SECS + 0.01, exporter: tuple = EXPORTER) -> None:
        self.engine.on_frame(ts, LINKTYPE_RAW, frame(exporter[0], exporter[1], *COLLECTOR, payload),
                             "netflow:test")

    def docs(self, finish: bool = True) -> list[dict]:
        if finish:
            self.engine.finish()
        self.pipeline.close(timeout_s=5)
        return self.output.docs

    def counters(self) -> dict[str, int]:
        return {k.removeprefix("decoder.netflow."): v for k, v in self.engine.counters().items()
                if k.startswith("decoder.netflow.")}

    def malformed(self) -> dict[str, int]:
        return {dict(labels)["reason"]: n for (name, labels), n in self.stats.labelled().items()
                if name == "decoder.malformed"} if hasattr(self.stats, "labelled") else {}


def flows(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d["netflow"]["type"] == "netflow_flow"]


# -- v5 -----------------------------------------------------------------------------


V5_RECORD = {"src": "10.0.0.1", "dst": "10.0.0.2", "sport": 51000, "dport": 443, "proto": 6,
             "packets": 12, "bytes": 3400, "first": UPTIME_MS - 20_000, "last": UPTIME_MS - 5_000}


def test_v5_record_becomes_one_document_with_ecs_and_filebeat_fields() -> None:
    c = Collector()
    c.send(v5_packet([V5_RECORD], sequence=100, sampling=0x4000 | 10))
    [doc] = c.docs()
    export_ts = EXPORT_SECS + 0.5
    assert doc["@timestamp"] == iso_time(export_ts)
    assert doc["event"]["dataset"] == "netflow" and doc["event"]["action"] == "netflow_flow"
    # RFC 3954 / v5: flow times are sysUptime-relative; the header's uptime is export time.
    assert doc["event"]["start"] == iso_time(export_ts - 20.0)
    assert doc["event"]["end"] == iso_time(export_ts - 5.0)
    assert doc["event"]["duration"] == 15_000_000_000
    assert doc["source"] == {"ip": "10.0.0.1", "port": 51000}
    assert doc["destination"] == {"ip": "10.0.0.2", "port": 443}
    assert doc["network"]["bytes"] == 3400 and doc["network"]["packets"] == 12
    assert doc["network"]["transport"] == "tcp" and doc["network"]["iana_number"] == "6"
    assert doc["network"]["community_id"].startswith("1:")
    assert doc["observer"]["ip"] == "192.0.2.10"
    nf = doc["netflow"]
    assert nf["type"] == "netflow_flow"
    assert nf["exporter"]["address"] == "192.0.2.10:40000"
    assert nf["exporter"]["version"] == 5 and nf["exporter"]["source_id"] == 0
    assert nf["exporter"]["uptime_millis"] == UPTIME_MS
    assert nf["exporter"]["engine_type"] == 1 and nf["exporter"]["engine_id"] == 2
    assert nf["ingress_interface"] == 3 and nf["egress_interface"] == 4
    assert nf["tcp_control_bits"] == 0x1B
    assert nf["bgp_source_as_number"] == 65001 and nf["bgp_destination_as_number"] == 65002
    assert nf["source_ipv4_prefix_length"] == 24 and nf["destination_ipv4_prefix_length"] == 16
    # The sampling interval is recorded (14 bits; the top two are the mode), totals untouched.
    assert nf["sampling_interval"] == 10 and nf["packet_delta_count"] == 12
    assert "client" not in doc and "server" not in doc


def test_flow_that_started_before_a_sysuptime_wrap_is_placed_modulo_2_32() -> None:
    c = Collector()
    record = dict(V5_RECORD, first=(1 << 32) - 1000, last=500)      # uptime wrapped meanwhile
    c.send(v5_packet([record], uptime=1000))
    [doc] = c.docs()
    export_ts = EXPORT_SECS + 0.5
    assert doc["event"]["start"] == iso_time(export_ts - 2.0)
    assert doc["event"]["end"] == iso_time(export_ts - 0.5)


def test_v5_record_count_past_the_datagram_is_malformed_and_nothing_is_emitted() -> None:
    c = Collector()
    packet = v5_packet([V5_RECORD])
    c.send(packet[:2] + struct.pack("!H", 2) + packet[4:])      # says 2 records, carries 1
    assert c.docs() == []
    assert c.counters()["exporter.192.0.2.10:40000.malformed.netflow.bad_record_count"] == 1


def test_v5_sequence_gap_is_counted_as_lost_records_on_metrics_and_document() -> None:
    c = Collector()
    c.send(v5_packet([V5_RECORD] * 2, sequence=10))
    c.send(v5_packet([V5_RECORD], sequence=12))      # expected 12: nothing lost
    c.send(v5_packet([V5_RECORD], sequence=20))      # expected 13: 7 records lost
    docs = c.docs()
    assert [d["netflow"]["exporter"].get("lost_records") for d in docs] == [None, None, None, 7]
    assert c.counters()["lost_records"] == 7


def test_document_ids_are_the_same_when_the_same_export_is_decoded_again() -> None:
    runs = []
    for _ in range(2):
        c = Collector()
        c.send(v5_packet([V5_RECORD, dict(V5_RECORD, sport=51001)], sequence=5), ts=EXPORT_SECS + 1)
        c.docs()
        runs.append(c.ids)
    assert runs[0] == runs[1] and len(set(runs[0])) == 2


# -- v9 -------------------------------------------------------------------------------


ROW = v9_row("10.1.0.1", "10.1.0.2", 5353, 53, 17, 3, 210, UPTIME_MS - 4000, UPTIME_MS - 1000)


def test_v9_template_then_data() -> None:
    c = Collector()
    c.send(v9_packet(v9_template(), v9_data(256, [ROW, ROW])))
    docs = c.docs()
    assert len(docs) == 2
    doc = docs[0]
    assert doc["source"] == {"ip": "10.1.0.1", "port": 5353}
    assert doc["destination"] == {"ip": "10.1.0.2", "port": 53}
    assert doc["network"]["transport"] == "udp" and doc["network"]["bytes"] == 210
    assert doc["event"]["start"] == iso_time(EXPORT_SECS - 4.0)
    assert doc["netflow"]["exporter"]["source_id"] == 7 and doc["netflow"]["exporter"]["version"] == 9
    assert doc["netflow"]["flow_start_sys_up_time"] == UPTIME_MS - 4000


def test_v9_data_before_its_template_is_held_then_decoded() -> None:
    early, late = Collector(), Collector()
    early.send(v9_packet(v9_data(256, [ROW]), sequence=1))
    early.send(v9_packet(v9_template(), sequence=2))
    late.send(v9_packet(v9_template(), v9_data(256, [ROW]), sequence=1))
    held = early.docs()
    assert len(held) == 1
    assert held[0]["source"] == late.docs()[0]["source"]
    assert held[0]["network"] == late.docs()[0]["network"]
    counters = early.counters()
    assert counters["pending_held"] == 1 and counters["pending_decoded"] == 1


def test_v9_data_whose_template_never_comes_is_dropped_after_the_timeout() -> None:
    c = Collector(pending_timeout=5.0)
    c.send(v9_packet(v9_data(300, [ROW]), sequence=1), ts=EXPORT_SECS)
    c.send(v9_packet(v9_template(), sequence=2), ts=EXPORT_SECS + 10)   # another template: no help
    assert c.docs(finish=False) == []
    assert c.counters()["pending_expired"] == 1


def test_held_data_sets_are_capped_per_exporter() -> None:
    c = Collector(max_pending_sets=3)
    for seq in range(10):
        c.send(v9_packet(v9_data(300 + seq, [ROW]), sequence=seq))
    counters = c.counters()
    assert counters["pending_held"] == 10 and counters["pending_dropped"] == 7
    assert counters["pending_sets"] == 3


def test_v9_packet_sequence_gap_and_exporter_restart() -> None:
    c = Collector()
    c.send(v9_packet(v9_template(), v9_data(256, [ROW]), sequence=1))
    c.send(v9_packet(v9_data(256, [ROW]), sequence=4))              # packets 2 and 3 lost
    c.send(v9_packet(v9_template(), v9_data(256, [ROW]), sequence=1, uptime=500))   # rebooted
    docs = c.docs()
    exporters = [d["netflow"]["exporter"] for d in docs]
    assert exporters[1]["lost_packets"] == 2
    assert exporters[2]["restarted"] is True and "lost_packets" not in exporters[2]
    counters = c.counters()
    assert counters["lost_packets"] == 2 and counters["exporter_restarts"] == 1


def test_templates_are_kept_per_exporter_and_source_id() -> None:
    c = Collector()
    c.send(v9_packet(v9_template(), source_id=1))
    c.send(v9_packet(v9_data(256, [ROW]), source_id=2))                       # other domain
    c.send(v9_packet(v9_data(256, [ROW]), source_id=1), exporter=("192.0.2.99", 40000))  # other exporter
    assert flows(c.docs(finish=False)) == []
    assert c.counters()["pending_held"] == 2


def test_v9_options_record_sampling_interval_is_put_on_later_flows() -> None:
    c = Collector()
    # Options template 257: scope System (1, 4 bytes), then samplingInterval (34, 4 bytes).
    options_template = struct.pack("!HHHHHHH", 257, 4, 4, 1, 4, 34, 4)
    options_template += b"\0\0"                                          # padding to 4
    c.send(v9_packet(struct.pack("!HH", 1, 4 + len(options_template)) + options_template,
                     v9_data(257, [struct.pack("!II", 0, 100)]), v9_template(), sequence=1))
    c.send(v9_packet(v9_data(256, [ROW]), sequence=2))
    docs = c.docs()
    [options] = [d for d in docs if d["netflow"]["type"] == "netflow_options"]
    assert options["netflow"]["sampling_interval"] == 100 and options["netflow"]["scope_system"] == 0
    assert options["event"]["action"] == "netflow_options" and "source" not in options
    [flow] = flows(docs)
    assert flow["netflow"]["sampling_interval"] == 100
    assert flow["network"]["packets"] == 3            # never rescaled by the interval


def test_template_whose_length_lies_is_counted_and_the_packet_goes_on() -> None:
    c = Collector()
    lying = struct.pack("!HH", 256, 40) + struct.pack("!HH", 8, 4)       # 40 fields, 1 present
    bad_set = struct.pack("!HH", 0, 4 + len(lying)) + lying
    c.send(v9_packet(bad_set, sequence=1))
    c.send(v9_packet(v9_template(), v9_data(256, [ROW]), sequence=2))
    assert len(flows(c.docs())) == 1
    assert c.counters()["template_length_lies"] == 1


def test_a_flowset_length_past_the_packet_stops_that_packet_only() -> None:
    c = Collector()
    c.send(v9_packet(v9_template(), struct.pack("!HH", 256, 2000) + ROW, sequence=1))
    c.send(v9_packet(v9_data(256, [ROW]), sequence=2))
    assert len(flows(c.docs())) == 1
    assert c.counters()["bad_set_length"] == 1


def test_template_flood_is_capped_per_exporter() -> None:
    c = Collector(max_templates=50)
    for start in range(256, 256 + 500, 50):
        c.send(v9_packet(*[v9_template(tid) for tid in range(start, start + 50)]))
    counters = c.counters()
    assert counters["templates"] == 50 and counters["templates_rejected"] == 450
    decoder = c.engine.sources["netflow:test"].decoders["netflow"]
    assert sum(len(d.templates) for e in decoder.exporters.values() for d in e.domains.values()) == 50


# -- IPFIX --------------------------------------------------------------------------------


def test_ipfix_variable_length_and_enterprise_fields() -> None:
    c = Collector()
    template = ipfix_template(400, [(8, 4), (12, 4), (4, 1), (2, 8), (1, 8), (82, 65535),
                                    (7, 2, 32473), (152, 8), (153, 8)])
    name = b"eth0"
    start_ms, end_ms = EXPORT_SECS * 1000 - 3000, EXPORT_SECS * 1000 - 250
    record = (bytes([10, 2, 0, 1, 10, 2, 0, 2]) + bytes([132]) + struct.pack("!QQ", 5, 600)
              + bytes([len(name)]) + name + b"\xbe\xef" + struct.pack("!QQ", start_ms, end_ms))
    long_name = b"x" * 300                       # a length of 255 is followed by a 2-byte length
    record2 = (bytes([10, 2, 0, 1, 10, 2, 0, 2]) + bytes([132]) + struct.pack("!QQ", 1, 60)
               + b"\xff" + struct.pack("!H", len(long_name)) + long_name + b"\x00\x01"
               + struct.pack("!QQ", start_ms, end_ms))
    c.send(ipfix_packet(template, ipfix_set(400, record + record2)))
    first, second = c.docs()
    assert first["netflow"]["interface_name"] == "eth0"
    assert first["netflow"]["unknown_fields"] == ["32473.7:beef"]
    assert first["network"]["transport"] == "sctp" and first["network"]["bytes"] == 600
    assert first["event"]["start"] == iso_time(start_ms / 1000)
    assert first["event"]["end"] == iso_time(end_ms / 1000)
    assert first["netflow"]["exporter"]["source_id"] == 3 and first["netflow"]["exporter"]["version"] == 10
    assert second["netflow"]["interface_name"] == "x" * 300
    assert second["netflow"]["unknown_fields"] == ["32473.7:0001"]


def test_ipfix_unknown_iana_element_is_kept_as_hex_under_its_number() -> None:
    c = Collector()
    c.send(ipfix_packet(ipfix_template(300, [(8, 4), (12, 4), (4, 1), (32000, 3)]),
                        ipfix_set(300, bytes([10, 0, 0, 1, 10, 0, 0, 2, 17, 1, 2, 3]))))
    [doc] = c.docs()
    assert doc["netflow"]["unknown_fields"] == ["32000:010203"]


def test_ipfix_template_withdrawal_and_redefinition() -> None:
    c = Collector()
    c.send(ipfix_packet(ipfix_template(300, [(8, 4), (12, 4), (4, 1)]),
                        ipfix_set(300, bytes([10, 0, 0, 1, 10, 0, 0, 2, 6])), sequence=0))
    # Redefined: the same id now adds packetDeltaCount.
    c.send(ipfix_packet(ipfix_template(300, [(8, 4), (12, 4), (4, 1), (2, 4)]),
                        ipfix_set(300, bytes([10, 0, 0, 3, 10, 0, 0, 4, 17]) + struct.pack("!I", 9)),
                        sequence=1))
    # Withdrawn (RFC 7011 section 8.1: field count 0): later data waits for a template.
    c.send(ipfix_packet(ipfix_set(2, struct.pack("!HH", 300, 0)),
                        ipfix_set(300, bytes([10, 0, 0, 5, 10, 0, 0, 6, 17]) + struct.pack("!I", 1)),
                        sequence=2))
    docs = c.docs(finish=False)
    assert [d["source"]["ip"] for d in docs] == ["10.0.0.1", "10.0.0.3"]
    assert docs[1]["network"]["packets"] == 9
    counters = c.counters()
    assert counters["templates_redefined"] == 1 and counters["templates_withdrawn"] == 1
    assert counters["pending_held"] == 1


def test_ipfix_length_past_the_datagram_is_counted_per_exporter_and_reason() -> None:
    c = Collector()
    packet = ipfix_packet(ipfix_template(300, [(8, 4)]))
    c.send(packet[:2] + struct.pack("!H", len(packet) + 100) + packet[4:])
    assert c.docs() == []
    assert c.counters()["exporter.192.0.2.10:40000.malformed.netflow.ipfix_length_past_datagram"] == 1


def test_ipfix_record_sequence_gap() -> None:
    c = Collector()
    tmpl = ipfix_template(300, [(8, 4), (12, 4), (4, 1)])
    row = bytes([10, 0, 0, 1, 10, 0, 0, 2, 6])
    c.send(ipfix_packet(tmpl, ipfix_set(300, row * 2), sequence=0))
    c.send(ipfix_packet(ipfix_set(300, row), sequence=2))     # 2 records before it: as expected
    c.send(ipfix_packet(ipfix_set(300, row), sequence=8))     # expected 3: 5 lost
    docs = c.docs()
    assert [d["netflow"]["exporter"].get("lost_records") for d in docs] == [None, None, None, 5]


# -- garbage ---------------------------------------------------------------------------------


@pytest.mark.parametrize("payload, reason", [
    (b"\x00", "netflow.truncated_header"),
    (b"\x00\x05\x00\x01", "netflow.truncated_header"),
    (b"\x00\x09" + b"\0" * 10, "netflow.truncated_header"),
    (b"\x00\x0a" + b"\0" * 10, "netflow.truncated_header"),
    (b"\x12\x34" + b"\0" * 30, "netflow.unknown_version"),
])
def test_garbage_is_counted_by_reason(payload: bytes, reason: str) -> None:
    c = Collector()
    c.send(payload)
    c.send(v5_packet([V5_RECORD]))              # and the next good packet still decodes
    assert len(c.docs()) == 1
    assert c.counters()[f"malformed.{reason}"] == 1


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600), st.sampled_from([b"\x00\x05", b"\x00\x09", b"\x00\x0a", b""]))
def test_any_bytes_decode_or_raise_decode_error(tail: bytes, version: bytes) -> None:
    decoder = NetflowDecoder({})
    flow = FlowKey("udp", "192.0.2.1", 1000, "192.0.2.2", 2055, "fuzz")
    # A template first, so data sets reach the record decoders too.
    decoder.on_datagram(Datagram(0.0, flow, True, ipfix_packet(
        ipfix_template(256, [(8, 4), (82, 65535), (2, 3), (152, 8)]))))
    decoder.on_datagram(Datagram(0.0, flow, True, v9_packet(v9_template(256))))
    for payload in (version + tail, version + tail[:2] + struct.pack("!H", 256) + tail[2:]):
        try:
            txns = decoder.on_datagram(Datagram(1.0, flow, True, payload))
        except DecodeError:
            continue
        for txn in txns:
            DECODER.document(txn)


# -- registry elements past the 2014 table, RFC 5103 reverse elements, RFC 6313 lists --


def test_elements_of_the_current_registry_are_named() -> None:
    # httpStatusCode (457), gtpuTEid (507), pathDelaySumDeltaMicroseconds (533; RFC 9951)
    c = Collector()
    c.send(ipfix_packet(ipfix_template(301, [(8, 4), (12, 4), (4, 1), (457, 2), (507, 4), (533, 8)]),
                        ipfix_set(301, bytes([10, 0, 0, 1, 10, 0, 0, 2, 6])
                                  + struct.pack("!HIQ", 404, 0xDEADBEEF, 12345))))
    [doc] = c.docs()
    netflow = doc["netflow"]
    assert (netflow["http_status_code"], netflow["gtpu_teid"], netflow["path_delay_sum_delta_microseconds"]) \
        == (404, 0xDEADBEEF, 12345)
    assert "unknown_fields" not in netflow


def test_rfc5103_reverse_elements_are_named_and_typed_like_their_forward_element() -> None:
    # Enterprise 29305: reverseOctetDeltaCount (1), reversePacketDeltaCount (2),
    # reverseFlowEndMilliseconds (153), reverseSourceMacAddress (56).
    c = Collector()
    end_ms = EXPORT_SECS * 1000 - 250
    c.send(ipfix_packet(ipfix_template(302, [(8, 4), (12, 4), (4, 1), (1, 8), (1, 8, 29305), (2, 4, 29305),
                                             (153, 8, 29305), (56, 6, 29305)]),
                        ipfix_set(302, bytes([10, 0, 0, 1, 10, 0, 0, 2, 17])
                                  + struct.pack("!QQIQ", 700, 9000, 7, end_ms) + bytes([2, 0, 0, 0, 0, 9]))))
    [doc] = c.docs()
    netflow = doc["netflow"]
    assert netflow["octet_delta_count"] == 700 and netflow["reverse_octet_delta_count"] == 9000
    assert netflow["reverse_packet_delta_count"] == 7             # reduced-size encoding
    assert netflow["reverse_flow_end_milliseconds"] == iso_time(end_ms / 1000)
    assert netflow["reverse_source_mac_address"] == "02:00:00:00:00:09"
    assert "unknown_fields" not in netflow


def _basic_list(element: int, length: int, values: bytes, semantic: int = 3) -> bytes:
    return struct.pack("!BHH", semantic, element, length) + values


def test_basic_list_becomes_an_array_of_its_element_values() -> None:
    # bgpSourceCommunityList (484, variable length) holding bgpCommunity (483, unsigned32);
    # srhSegmentIPv6BasicList (496) holding srhSegmentIPv6 (494, ipv6Address).
    communities = _basic_list(483, 4, struct.pack("!III", 65000 << 16 | 1, 65000 << 16 | 2, 7))
    segments = _basic_list(494, 16, bytes(15) + b"\x01" + b"\x20\x01\x0d\xb8" + bytes(11) + b"\x02")
    record = (bytes([10, 0, 0, 1, 10, 0, 0, 2, 6]) + bytes([len(communities)]) + communities
              + bytes([len(segments)]) + segments)
    c = Collector()
    c.send(ipfix_packet(ipfix_template(303, [(8, 4), (12, 4), (4, 1), (484, 65535), (496, 65535)]),
                        ipfix_set(303, record)))
    [doc] = c.docs()
    assert doc["netflow"]["bgp_source_community_list"] == [65000 << 16 | 1, 65000 << 16 | 2, 7]
    assert doc["netflow"]["srh_segment_ipv6_basic_list"] == ["::1", "2001:db8::2"]


def test_basic_list_of_variable_length_strings_and_a_broken_list_kept_as_hex() -> None:
    # A basicList of interfaceName (82, string, variable length: each value has its length).
    names = _basic_list(82, 65535, b"\x04eth0\x02lo")
    broken = _basic_list(483, 4, b"\x00\x00\x01")          # 3 bytes of a 4-byte value
    record = bytes([10, 0, 0, 1, 10, 0, 0, 2, 6]) + bytes([len(names)]) + names + bytes([len(broken)]) + broken
    c = Collector()
    c.send(ipfix_packet(ipfix_template(304, [(8, 4), (12, 4), (4, 1), (291, 65535), (485, 65535)]),
                        ipfix_set(304, record)))
    [doc] = c.docs()
    assert doc["netflow"]["basic_list"] == ["eth0", "lo"]
    assert doc["netflow"]["bgp_destination_community_list"] == broken.hex()


def _varlen(value: bytes) -> bytes:
    """An IPFIX variable-length field (RFC 7011 section 7): one length byte, or 255 and two."""
    return (bytes([len(value)]) if len(value) < 255 else b"\xff" + struct.pack("!H", len(value))) + value


def _sub_template_exports() -> tuple[bytes, list[dict]]:
    """An IPFIX message with RFC 6313 lists whose decoding is known by construction:
    (the message, the `netflow` fields expected of its three records)."""
    sub = ipfix_template(400, [(8, 4), (11, 2)])                 # sourceIPv4Address, destinationTransportPort
    named = ipfix_template(401, [(82, 65535), (600, 2)])        # interfaceName, an unassigned element
    nested = ipfix_template(402, [(7, 2), (292, 65535)])        # sourceTransportPort, a subTemplateList
    top = ipfix_template(300, [(8, 4), (12, 4), (4, 1), (292, 65535), (293, 65535)])

    def ip(text: str) -> bytes:
        return socket.inet_aton(text)
    stl = b"\x03" + struct.pack("!H", 400) + ip("10.1.1.1") + struct.pack("!H", 80) + ip("10.1.1.2") + struct.pack("!H", 443)
    inner = b"\x01" + struct.pack("!H", 400) + ip("10.7.7.7") + struct.pack("!H", 8080)
    block_400 = ip("10.9.9.9") + struct.pack("!H", 53)
    block_401 = _varlen(b"eth0") + b"\x0a\x0b"
    block_402 = struct.pack("!H", 5000) + _varlen(inner)
    stml = (b"\x04" + struct.pack("!HH", 400, 4 + len(block_400)) + block_400
            + struct.pack("!HH", 401, 4 + len(block_401)) + block_401
            + struct.pack("!HH", 402, 4 + len(block_402)) + block_402)
    unknown_template = b"\x03" + struct.pack("!H", 999) + ip("10.1.1.1") + struct.pack("!H", 80)
    short = b"\x03" + struct.pack("!H", 400) + ip("10.1.1.1") + b"\x00"       # 5 of a 6-byte record
    empty = b"\x03" + struct.pack("!H", 400)
    head = ip("192.168.1.1") + ip("192.168.1.2") + b"\x06"
    no_block = b"\x03" + struct.pack("!H", 400)             # a multi list: 2 bytes, no block header
    rows = (head + _varlen(stl) + _varlen(stml) + head + _varlen(unknown_template) + _varlen(no_block)
            + head + _varlen(short) + _varlen(b"\x03") + head + _varlen(empty) + _varlen(b"\x03"))
    message = ipfix_packet(sub, named, nested, top, ipfix_set(300, rows), sequence=9)
    expected = [
        {"sub_template_list": [{"source_ipv4_address": "10.1.1.1", "destination_transport_port": 80},
                               {"source_ipv4_address": "10.1.1.2", "destination_transport_port": 443}],
         "sub_template_multi_list": [
             {"source_ipv4_address": "10.9.9.9", "destination_transport_port": 53},
             {"interface_name": "eth0", "unknown_fields": ["600:0a0b"]},
             {"source_transport_port": 5000,
              "sub_template_list": [{"source_ipv4_address": "10.7.7.7", "destination_transport_port": 8080}]}]},
        {"unknown_fields": ["292:" + unknown_template.hex(), "293:" + no_block.hex()]},
        {"sub_template_multi_list": [], "unknown_fields": ["292:" + short.hex()]},
        {"sub_template_list": [], "sub_template_multi_list": []},      # lists without records
    ]
    return message, expected


def test_sub_template_lists_become_arrays_of_records_with_element_names() -> None:
    """RFC 6313 subTemplateList / subTemplateMultiList (with a list inside a list) decoded
    with the domain's templates; one referring to an unknown template, one whose length
    does not add up and a multi list too short for a block header stay as number:hex."""
    message, expected = _sub_template_exports()
    c = Collector()
    c.send(message)
    docs = flows(c.docs())
    assert len(docs) == 4
    for doc, want in zip(docs, expected):
        got = {k: v for k, v in doc["netflow"].items()
               if k in ("sub_template_list", "sub_template_multi_list", "unknown_fields")}
        assert got == want
        assert doc["source"]["ip"] == "192.168.1.1" and doc["network"]["transport"] == "tcp"


def _fast_path_exports() -> list[bytes]:
    """v9 flows (TCP, ICMP), a flow that ended before its export, an options record, a
    flow without addresses; IPFIX over IPv6 with a string needing JSON escapes, a MAC,
    a float, a boolean, a basicList, an unknown enterprise element and a time past 9999;
    a v5 export; RFC 6313 lists."""
    icmp = v9_row("10.0.0.5", "10.0.0.6", 0, 0x0800, 1, 1, 84, UPTIME_MS - 10, UPTIME_MS - 10)
    tcp = v9_row("10.0.0.1", "10.0.0.2", 51000, 443, 6, 12, 3400, UPTIME_MS - 20_000, UPTIME_MS + 5_000)
    options = struct.pack("!HH", 1, 20) + struct.pack("!HHHHHHH", 260, 4, 4, 1, 4, 34, 4) + b"\0" * 2
    options_data = struct.pack("!HHII", 260, 12, 1, 100)
    no_address = v9_template(261, [(1, 4), (2, 4)])
    v9 = v9_packet(v9_template(), v9_data(256, [icmp, tcp]), options, options_data, no_address,
                   v9_data(261, [struct.pack("!II", 10, 1)]))
    name = 'eth"0\\\n\u00e9'.encode()
    ipfix_fields = [(27, 16), (28, 16), (7, 2), (11, 2), (4, 1), (82, 65535), (56, 6), (320, 8),
                    (276, 1), (291, 65535), (7, 3, 9999), (152, 8), (153, 8)]
    values = _basic_list(82, 65535, b"\x02lo")
    row = (socket.inet_pton(socket.AF_INET6, "2001:db8::1") + socket.inet_pton(socket.AF_INET6, "2001:db8::2")
           + struct.pack("!HHB", 5353, 53, 17) + bytes([len(name)]) + name + bytes.fromhex("0a0b0c0d0e0f")
           + struct.pack("!dB", 0.25, 1) + bytes([len(values)]) + values + b"abc"
           + struct.pack("!QQ", 1_700_000_000_123, (1 << 63)))
    ipfix = ipfix_packet(ipfix_template(300, ipfix_fields), ipfix_set(300, row), sequence=5)
    return [v9, ipfix, v5_packet([V5_RECORD, dict(V5_RECORD, proto=1, dport=0x0303)], sequence=3),
            _sub_template_exports()[0]]


def test_whole_document_and_whole_text_give_the_bytes_of_the_generic_merge() -> None:
    """DecoderSpec.whole_document must give, field order included, what document()
    merged into the engine's common fields gives, and whole_text its JSON bytes (the
    output's orjson.dumps of the Fragment), with and without fields, tags, a
    listener's own tags and fields, and fields under the root (no text then)."""
    import dataclasses

    import orjson

    from wirebeat.decoders.api import Datagram, FlowKey
    from wirebeat.document import DocumentBuilder
    generic_spec = dataclasses.replace(DECODER, whole_document=None, whole_text=None)
    dict_spec = dataclasses.replace(DECODER, whole_text=None)

    def decoded() -> list:
        decoder = DECODER.datagram({})
        return [t for payload in _fast_path_exports() for t in decoder.on_datagram(
            Datagram(EXPORT_SECS + 0.01, FlowKey("udp", *EXPORTER, "192.0.2.1", 2055, "s"), True, payload))]

    assert {t.detail.kind for t in decoded()} == {"netflow_flow", "netflow_options"} and len(decoded()) == 11
    texts = 0
    for fields, under_root, tags, per_source in (({}, False, [], False), ({"site": "x"}, False, ["t"], True),
                                                 ({"site": "x"}, True, ["t"], True), ({}, False, [], True)):
        builder = DocumentBuilder({"type": "wirebeat", "version": "t", "name": "t"}, [], fields, under_root, tags)
        builder.text_ok = True
        if per_source:
            builder.per_source["s"] = (["branch", "t"], {"zone": "b7"})
        for spec in (DECODER, dict_spec):
            for fast, generic in zip(decoded(), decoded()):
                fast_id, fast_doc = builder.build(spec, fast)
                generic_id, generic_doc = builder.build(generic_spec, generic)
                assert fast_id == generic_id
                assert orjson.dumps(fast_doc) == orjson.dumps(generic_doc)
                texts += isinstance(fast_doc, orjson.Fragment)
    assert texts == 3 * 11         # every record of the three builders without root fields


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_basic_list_of_any_bytes_is_a_list_or_hex_never_an_exception(raw: bytes) -> None:
    from wirebeat.decoders.netflow import _basic_list
    assert isinstance(_basic_list(raw), (list, str))


def test_a_data_set_is_freed_by_its_last_reference_not_the_garbage_collector() -> None:
    """A data set handed to the engine (RecordSet, with wirebeat._nfcore) is no reference
    cycle: once published it is freed at once, not left for the collector (a collector at
    high export rates would walk and free every data set)."""
    import gc

    from wirebeat.decoders.netflow import RecordSet
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        c = Collector()
        c.send(v9_packet(v9_template(), v9_data(256, [ROW, ROW])))
        assert len(c.docs()) == 2
        del c
        gc.collect()
        assert not [o for o in gc.garbage if isinstance(o, RecordSet)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
