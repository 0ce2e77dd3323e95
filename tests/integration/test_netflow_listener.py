"""The NetFlow UDP listener as an operator runs it: bad datagrams survived and counted,
protocols filtered per listener, SIGTERM flushes and exits 0, bad config exits 2."""
from __future__ import annotations

import json
import os
import socket
import struct

from conftest import run_wirebeat
from running import Wirebeat, wait_until


def _netflow(docs: list[dict]) -> list[dict]:
    """NetFlow documents (a recorded export's datagrams also get packet flow reports)."""
    return [d for d in docs if d["event"]["dataset"] == "netflow"]


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _v9(sequence: int) -> bytes:
    template = struct.pack("!HHHHHHHHHHHH", 0, 24, 256, 4, 8, 4, 12, 4, 2, 4, 1, 4)
    data = struct.pack("!HH4s4sII", 256, 20, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 3, 180)
    return struct.pack("!HHIIII", 9, 2, 5000, 1_700_000_000, sequence, 1) + template + data


def _v5() -> bytes:
    header = struct.pack("!HHIIIIBBH", 5, 1, 5000, 1_700_000_000, 0, 0, 0, 0, 0)
    return header + struct.pack("!4s4s4sHHIIIIHHBBBBHHBBH", bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]),
                                b"\0" * 4, 0, 0, 1, 60, 4000, 4500, 1, 2, 0, 0, 17, 0, 0, 0, 0, 0, 0)


def test_garbage_is_counted_per_reason_and_the_listener_keeps_decoding() -> None:
    port = _free_udp_port()
    listeners = json.dumps([{"host": f"127.0.0.1:{port}", "protocols": ["v9", "ipfix"]}])
    beat = Wirebeat("--console", "--strict", "-E", f"wirebeat.sources.netflow={listeners}")
    try:
        beat.wait_for_log("listening")
        bad = [os.urandom(300), b"\x00\x09\x00", b"\x00\x0a" + b"\0" * 14,
               struct.pack("!HHIII", 10, 4000, 0, 0, 0) + b"\0" * 20,       # length past the datagram
               _v9(1)[:20] + struct.pack("!HH", 0, 900) + b"\0" * 8,       # flowset length lies
               _v5()]                                                        # not accepted here
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for payload in bad * 20:
                sender.sendto(payload, ("127.0.0.1", port))
            sender.sendto(_v9(2), ("127.0.0.1", port))
        wait_until(lambda: _netflow(beat.documents()), 20, "the good packet's document")
        beat.wait_for_counter(f"netflow.127.0.0.1:{port}.rejected.version_not_accepted", 20)
        counters = beat.stats()["counters"]
        code, _ = beat.stop()
    finally:
        beat.kill()
    assert code == 0, beat.stderr_text()
    [doc] = _netflow(beat.documents())
    assert doc["source"]["ip"] == "10.0.0.1" and doc["network"]["bytes"] == 180
    per_exporter = {k.split(".", 4)[-1]: v for k, v in counters.items()
                    if k.startswith("decoder.netflow.exporter.")}
    assert any(k.endswith("malformed.netflow.ipfix_length_past_datagram") and v == 20
               for k, v in per_exporter.items())
    assert any(k.endswith("bad_set_length") and v >= 20 for k, v in per_exporter.items())
    assert counters[f"netflow.127.0.0.1:{port}.received"] == 121


def test_unknown_listener_key_is_a_one_line_config_error() -> None:
    proc = run_wirebeat("run", "--console", "-E",
                        'wirebeat.sources.netflow=[{host: "127.0.0.1:2055", tag: [x]}]')
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == \
        "wirebeat: unknown config key 'wirebeat.sources.netflow[0].tag'"


def test_bad_listener_address_exits_2() -> None:
    proc = run_wirebeat("run", "--console", "--netflow", "localhost:99999")
    assert proc.returncode == 2
    assert "HOST:PORT" in proc.stderr.decode() and "Traceback" not in proc.stderr.decode()



def test_listener_documents_equal_those_of_the_recorded_export_read_with_I() -> None:
    """The same datagrams, from the same exporter address, give the same documents
    whether a listener receives them or a capture holds them (capture.source aside)."""
    import dpkt

    from conftest import PCAPS, decode_file
    capture = PCAPS / "netflow" / "softflowd_v9.pcap"
    datagrams = []
    with capture.open("rb") as fh:
        for _ts, frame in dpkt.pcap.Reader(fh):
            ip = dpkt.ethernet.Ethernet(frame).data
            datagrams.append((ip.data.sport, bytes(ip.data.data)))
    recorded = _netflow(decode_file(capture))
    port = _free_udp_port()
    beat = Wirebeat("--console", "--strict", "--netflow", f"127.0.0.1:{port}")
    try:
        beat.wait_for_log("listening")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.bind(("127.0.0.1", datagrams[0][0]))       # the recorded exporter port
            for _sport, payload in datagrams:
                sender.sendto(payload, ("127.0.0.1", port))
        wait_until(lambda: len(_netflow(beat.documents())) >= len(recorded), 30, "every document")
        code, _ = beat.stop()
    finally:
        beat.kill()
    assert code == 0
    live = beat.documents()
    # Flows are on (the default): the listener's datagrams are its input, not traffic,
    # so no flow report, unlike the capture of the same datagrams.
    assert [d["event"]["dataset"] for d in live] == ["netflow"] * len(live)
    assert any(d["event"]["dataset"] == "flow" for d in decode_file(capture, flows=True))
    for doc in live + recorded:
        doc.pop("capture")
    key = lambda d: json.dumps(d, sort_keys=True)          # noqa: E731
    assert sorted(map(key, live)) == sorted(map(key, recorded))


def test_kernel_drops_of_an_overrun_socket_are_in_the_summary_after_the_socket_closed() -> None:
    """A real overrun: wirebeat is stopped (SIGSTOP) while more datagrams than its small
    receive buffer holds arrive on loopback, then resumed and stopped. The summary, written
    after the listener's socket closed, must give the kernel's drops: on loopback every
    datagram sent and not received was dropped for a full buffer."""
    import re
    import signal
    import time

    port = _free_udp_port()
    listeners = json.dumps([{"host": f"127.0.0.1:{port}", "read_buffer": 4096}])
    beat = Wirebeat("--console", "-E", f"wirebeat.sources.netflow={listeners}")
    sent = 400
    try:
        beat.wait_for_log("listening")
        os.kill(beat.pid, signal.SIGSTOP)
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                for sequence in range(1, sent + 1):
                    sender.sendto(_v9(sequence), ("127.0.0.1", port))
        finally:
            os.kill(beat.pid, signal.SIGCONT)
        time.sleep(2)           # what the buffer held is read and decoded
        code, _ = beat.stop()
    finally:
        beat.kill()
    assert code == 0, beat.stderr_text()
    summary = beat.summary()
    received = int(re.search(rf"netflow 127\.0\.0\.1:{port}: (\d+) datagrams", summary).group(1))
    dropped = re.search(r"(\d+) dropped by the kernel \(socket buffer full\)", summary)
    assert 0 < received < sent, summary
    assert dropped is not None and int(dropped.group(1)) == sent - received, summary
