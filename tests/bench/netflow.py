"""NetFlow collector throughput: flow records/s, wirebeat beside nfcapd, in one run.

    python tests/bench/netflow.py [--records 300000] [--rate 100000] [--version v9]

1. file: a v9 (--version: v5, v9 or ipfix) export of --records records (30
   per datagram, built here with known content) written as a pcap, decoded by
   `wirebeat run -I --console`
   to /dev/null (and with --elasticsearch URL, into the real Elasticsearch);
   pinned to one core with taskset when present.
2. loopback: the same datagrams sent over 127.0.0.1, paced at --rate
   records/s, to `wirebeat run --netflow` (console to /dev/null) and then to
   nfcapd; records each one got (documents / nfdump's count), wirebeat's CPU
   seconds from the first record sent to the last document out (/proc/PID/stat),
   the kernel's drops for wirebeat's listener socket (its summary, from
   /proc/net/udp) and the
   machine-wide UDP receive-buffer errors during each run (/proc/net/snmp
   RcvbufErrors delta: other programs' sockets count there too).

Numbers are noisy on a shared machine: compare the two collectors of one run.

    python tests/bench/netflow.py --cpu [--base main] [--records 60000] [--rounds 3]

3. cpu: CPU time per record (user+system of the child, start-up taken off) of
   file -> console for v5, v9 and IPFIX exports of the same generated records,
   with --base alternating that git revision's tree and this one in each
   round (the way to compare on a shared host; docs/performance.md); the median
   and the best round.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECORDS_PER_DATAGRAM = 30
FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (2, 4), (1, 4), (22, 4), (21, 4),
          (10, 2), (14, 2)]


def _rows(seq: int, row: Callable[[int, bytes, bytes], bytes]) -> bytes:
    """The records of datagram `seq`: record n from 10.0.x.y to 192.168.0.(n % 251)."""
    out = b""
    for i in range(RECORDS_PER_DATAGRAM):
        n = seq * RECORDS_PER_DATAGRAM + i
        out += row(n, struct.pack("!I", 0x0A000000 + n % 65536), struct.pack("!I", 0xC0A80000 + n % 251))
    return out


def datagrams(records: int) -> list[bytes]:
    """NetFlow v9 exports (30 records per datagram, the template every 20 datagrams)."""
    template_body = struct.pack("!HH", 256, len(FIELDS)) + b"".join(struct.pack("!HH", *f) for f in FIELDS)
    template = struct.pack("!HH", 0, 4 + len(template_body)) + template_body
    out = []
    for seq in range(records // RECORDS_PER_DATAGRAM):
        rows = _rows(seq, lambda n, src, dst: struct.pack("!4s4sHHBBIIIIHH", src, dst, 1024 + n % 60000, 443,
                                                          6, 0x1B, 10, 1500, 100_000, 110_000, 1, 2))
        flowset = struct.pack("!HH", 256, 4 + len(rows)) + rows
        sets = (template + flowset) if seq % 20 == 0 else flowset
        out.append(struct.pack("!HHIIII", 9, 2 if seq % 20 == 0 else 1, 120_000, 1_700_000_000 + seq // 100,
                               seq + 1, 1) + sets)
    return out


IPFIX_FIELDS = [(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (2, 8), (1, 8), (152, 8), (153, 8),
                (10, 4), (14, 4)]


def datagrams_v5(records: int) -> list[bytes]:
    """NetFlow v5 exports of the same records (30 per datagram, the most v5 allows)."""
    return [struct.pack("!HHIIIIBBH", 5, RECORDS_PER_DATAGRAM, 120_000, 1_700_000_000 + seq // 100,
                        0, seq * RECORDS_PER_DATAGRAM, 0, 0, 0)
            + _rows(seq, lambda n, src, dst: struct.pack(
                "!4s4s4sHHIIIIHHBBBBHHBBH", src, dst, bytes(4), 1, 2, 10, 1500, 100_000, 110_000,
                1024 + n % 60000, 443, 0, 0x1B, 6, 0, 0, 0, 24, 24, 0))
            for seq in range(records // RECORDS_PER_DATAGRAM)]


def datagrams_ipfix(records: int) -> list[bytes]:
    """IPFIX messages of the same records with absolute millisecond times, the template
    repeated every 20 messages."""
    body = struct.pack("!HH", 256, len(IPFIX_FIELDS)) + b"".join(struct.pack("!HH", *f) for f in IPFIX_FIELDS)
    template = struct.pack("!HH", 2, 4 + len(body)) + body
    out = []
    for seq in range(records // RECORDS_PER_DATAGRAM):
        rows = _rows(seq, lambda n, src, dst: struct.pack(
            "!4s4sHHBBQQQQII", src, dst, 1024 + n % 60000, 443, 6, 0x1B, 10, 1500,
            1_700_000_000_000 + n, 1_700_000_010_000 + n, 1, 2))
        sets = (template if seq % 20 == 0 else b"") + struct.pack("!HH", 256, 4 + len(rows)) + rows
        out.append(struct.pack("!HHIII", 10, 16 + len(sets), 1_700_000_000 + seq // 100,
                               seq * RECORDS_PER_DATAGRAM, 1) + sets)
    return out


GENERATORS = {"v5": datagrams_v5, "v9": datagrams, "ipfix": datagrams_ipfix}


def write_pcap(path: Path, payloads: list[bytes]) -> None:
    with path.open("wb") as fh:
        fh.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101))    # raw IP
        for i, payload in enumerate(payloads):
            udp = struct.pack("!HHHH", 40000, 2055, 8 + len(payload), 0)
            ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 28 + len(payload), 0, 0, 64, 17, 0,
                             bytes([192, 0, 2, 10]), bytes([192, 0, 2, 1]))
            frame = ip + udp + payload
            fh.write(struct.pack("<IIII", 1_700_000_000 + i // 100, (i % 100) * 10000, len(frame), len(frame)))
            fh.write(frame)


def one_core() -> list[str]:
    return ["taskset", "-c", "0"] if shutil.which("taskset") else []


def wirebeat_file(pcap: Path, records: int, output: list[str]) -> float:
    started = time.monotonic()
    subprocess.run([*one_core(), sys.executable, "-m", "wirebeat.cli", "run", "-I", str(pcap),
                    *output, "-E", "logging.metrics.period=0"], stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, check=True, cwd=ROOT)
    return records / (time.monotonic() - started)


def wirebeat_to_elasticsearch(pcap: Path, records: int, url: str) -> float:
    """The same file into the real Elasticsearch (an index made and deleted here)."""
    from elasticsearch import Elasticsearch
    index = f"netflow-bench-{os.getpid()}"
    try:
        return wirebeat_file(pcap, records, ["-E", f"output.elasticsearch.hosts=[{url}]",
                                             "-E", f"output.elasticsearch.index={index}"])
    finally:
        Elasticsearch(url).indices.delete(index=index, ignore_unavailable=True)


def udp_rcvbuf_errors() -> int:
    """The kernel's count of UDP datagrams dropped because a socket buffer was full."""
    with open("/proc/net/snmp", encoding="ascii") as fh:
        rows = [line.split() for line in fh if line.startswith("Udp:")]
    return int(rows[1][rows[0].index("RcvbufErrors")])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def send(payloads: list[bytes], port: int, rate: int) -> float:
    interval = RECORDS_PER_DATAGRAM / rate
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i, payload in enumerate(payloads):
            due = started + i * interval
            while time.monotonic() < due:
                pass
            s.sendto(payload, ("127.0.0.1", port))
    return len(payloads) * RECORDS_PER_DATAGRAM / (time.monotonic() - started)


def process_cpu_seconds(pid: int) -> float:
    """user + system CPU seconds a running process (all its threads) has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wirebeat_live(payloads: list[bytes], rate: int, workdir: Path) -> dict:
    port = free_port()
    listeners = json.dumps([{"host": f"127.0.0.1:{port}", "read_buffer": 33554432}])
    out = (workdir / "live.ndjson").open("wb")
    log = (workdir / "live.log").open("w+b")
    proc = subprocess.Popen([*one_core(), sys.executable, "-m", "wirebeat.cli", "run", "--console",
                             "-E", f"wirebeat.sources.netflow={listeners}",
                             "-E", "logging.metrics.period=0"], stdout=out, stderr=log, cwd=ROOT)
    deadline = time.monotonic() + 60
    while b"listening" not in (workdir / "live.log").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.2)
    errors = udp_rcvbuf_errors()
    cpu_ready = process_cpu_seconds(proc.pid)
    sent_rate = send(payloads, port, rate)
    sent_at = time.monotonic()
    # The socket buffer holds what the decoder has not read yet: wait until every
    # record is out, or nothing more came for 10 s.
    documents, last_change = 0, time.monotonic()
    while documents < len(payloads) * RECORDS_PER_DATAGRAM and time.monotonic() - last_change < 10:
        time.sleep(0.5)
        count = sum(1 for _ in (workdir / "live.ndjson").open("rb"))
        if count != documents:
            documents, last_change = count, time.monotonic()
    errors = udp_rcvbuf_errors() - errors
    cpu = process_cpu_seconds(proc.pid) - cpu_ready     # receiving, decoding, writing the records
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    out.close()
    log.seek(0)
    err = log.read()
    documents = sum(1 for _ in (workdir / "live.ndjson").open("rb"))
    summary = [line for line in err.decode().splitlines() if line.startswith("wirebeat: ")]
    return {"sent_records_per_s": round(sent_rate), "documents": documents,
            "cpu_s_from_first_to_last_record": round(cpu, 2),
            "records_per_cpu_s": round(len(payloads) * RECORDS_PER_DATAGRAM / cpu) if cpu > 0 else None,
            "seconds_from_last_send_to_last_document": round(max(0.0, last_change - sent_at), 1),
            "udp_rcvbuf_errors": errors, "summary": summary[-1] if summary else err.decode()[-500:]}


def nfcapd_live(payloads: list[bytes], rate: int, workdir: Path) -> dict:
    port = free_port()
    flows = workdir / "nfcapd"
    flows.mkdir()
    proc = subprocess.Popen([*one_core(), "nfcapd", "-b", "127.0.0.1", "-p", str(port), "-w", str(flows),
                             "-t", "3600", "-B", "33554432"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1)
    errors = udp_rcvbuf_errors()
    sent_rate = send(payloads, port, rate)
    time.sleep(2)
    errors = udp_rcvbuf_errors() - errors
    proc.send_signal(signal.SIGTERM)
    proc.wait(60)
    info = subprocess.run(["nfdump", "-R", str(flows), "-I"], capture_output=True, text=True).stdout
    count = next((int(line.split(":")[1]) for line in info.splitlines() if line.startswith("Flows:")), 0)
    return {"sent_records_per_s": round(sent_rate), "records": count, "udp_rcvbuf_errors": errors}


def cpu_seconds(cmd: list[str], env: dict[str, str] | None = None) -> float:
    """user + system CPU seconds of one child run (all its threads)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, cwd=ROOT, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def cpu_per_record(records: int, base: str, rounds: int, workdir: Path) -> dict:
    """CPU microseconds per record of `run -I export.pcap --console` (to /dev/null), each
    version, start-up (a one-datagram file) taken off; with `base`, that git revision's
    tree run alternately with this one in the same rounds. The median round is reported."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from same_output import export
    trees = {"this": ROOT}
    if base:
        (workdir / "base").mkdir()
        trees = {base: export(base, workdir / "base"), "this": ROOT}
    captures = {}
    for version, make in GENERATORS.items():
        payloads = make(records)
        captures[version] = (workdir / f"cpu_{version}.pcap", len(payloads) * RECORDS_PER_DATAGRAM)
        write_pcap(captures[version][0], payloads)
        write_pcap(workdir / f"cpu_{version}_one.pcap", payloads[:1])
    samples: dict[str, dict[str, list[float]]] = {t: {v: [] for v in captures} for t in trees}
    for _ in range(rounds):
        for version, (pcap, n) in captures.items():
            for name, tree in trees.items():
                env = {"PYTHONPATH": str(tree), "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
                cmd = [*one_core(), sys.executable, "-m", "wirebeat.cli", "run", "--console",
                       "-E", "logging.metrics.period=0", "-I"]
                full = cpu_seconds([*cmd, str(pcap)], env)
                empty = cpu_seconds([*cmd, str(workdir / f"cpu_{version}_one.pcap")], env)
                samples[name][version].append((full - empty) / (n - RECORDS_PER_DATAGRAM) * 1e6)
    result = {}
    for name, per_version in samples.items():
        result[name] = {}
        for version, values in per_version.items():
            us = sorted(values)[len(values) // 2]
            best = min(values)
            result[name][version] = {"cpu_us_per_record": round(us, 2),
                                     "records_per_cpu_s": round(1e6 / us) if us > 0 else None,
                                     "best_records_per_cpu_s": round(1e6 / best) if best > 0 else None,
                                     "rounds": [round(v, 2) for v in values]}
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--rate", type=int, default=100_000, help="records/s sent over loopback")
    parser.add_argument("--skip-file", action="store_true", help="only the loopback runs")
    parser.add_argument("--elasticsearch", default="", metavar="URL",
                        help="also index the file into this Elasticsearch (e.g. http://127.0.0.1:9200)")
    parser.add_argument("--cpu", action="store_true",
                        help="only CPU time per record of file -> console, v5, v9 and IPFIX")
    parser.add_argument("--base", default="", metavar="REV",
                        help="with --cpu: also that git revision's tree, run alternately")
    parser.add_argument("--rounds", type=int, default=3, help="with --cpu: runs of each")
    parser.add_argument("--version", choices=sorted(GENERATORS), default="v9",
                        help="export version of the file and loopback runs (--cpu does all three)")
    args = parser.parse_args()
    if args.cpu:
        with tempfile.TemporaryDirectory() as tmp:
            print(json.dumps({"records": args.records,
                              **cpu_per_record(args.records, args.base, args.rounds, Path(tmp))},
                             indent=2))
        return 0
    payloads = GENERATORS[args.version](args.records)
    records = len(payloads) * RECORDS_PER_DATAGRAM
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        pcap = workdir / f"export_{args.version}.pcap"
        write_pcap(pcap, payloads)
        result: dict = {"records": records, "version": args.version}
        if not args.skip_file:
            result["file_to_console_records_per_s"] = round(wirebeat_file(pcap, records, ["--console"]))
        result["loopback_wirebeat"] = wirebeat_live(payloads, args.rate, workdir)
        if args.elasticsearch:
            result["file_to_elasticsearch_records_per_s"] = round(
                wirebeat_to_elasticsearch(pcap, records, args.elasticsearch))
        if shutil.which("nfcapd"):
            result["loopback_nfcapd"] = nfcapd_live(payloads, args.rate, workdir)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
