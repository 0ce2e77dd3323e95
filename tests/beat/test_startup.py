"""Start-up: what `wirebeat run` imports, and that what it imports late still works.

Libraries slow to import are imported where they are used: the Kibana client and
the report (their commands only), ZeroMQ (with the first feed), TLS's certificate
parser with `cryptography` (at the first certificate; DecoderSpec.lazy_imports).
A run started as root with `--user` must import them before it switches user:
afterwards the interpreter's own files may be unreadable (a Python under /root).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from importlib.metadata import version
from pathlib import Path

import pytest

import pcapgen as g
from running import require
from wirebeat.registry import discover

ROOT = Path(__file__).resolve().parent.parent.parent
TLS_CAPTURE = ROOT / "pcaps" / "tls" / "tls12_rsa.pcap"     # a server certificate
LATE = ("cryptography", "zmq", "wirebeat.decoders.tls_x509", "wirebeat.kibana_client",
        "wirebeat.report", "wirebeat.kibana.panels", "urllib.request")

# Runs the CLI in-process, then prints which of LATE it imported.
_CHILD = """
import json, sys
from wirebeat.cli import main
code = main(sys.argv[2:])
late = [m for m in json.loads(sys.argv[1]) if m in sys.modules]
print(json.dumps({"code": code, "imported": late}), file=sys.stderr)
"""


def _imported(*args: str, late: tuple[str, ...] = LATE) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(late), *args], cwd=ROOT,
                          capture_output=True, timeout=120, check=False)
    result = json.loads(proc.stderr.decode().strip().splitlines()[-1])
    assert result["code"] == 0, proc.stderr.decode()
    return result["imported"]


def test_a_run_imports_no_library_it_does_not_use() -> None:
    off = [a for r in discover() for a in ("-E", f"wirebeat.protocols.{r.spec.name}.enabled=false")]
    assert _imported("run", "-I", str(TLS_CAPTURE), "--console", "-E", "wirebeat.packets.enabled=true",
                     *off) == []
    # TLS on, no certificate in the capture (TLS 1.3: encrypted): still no cryptography.
    assert _imported("run", "-I", str(ROOT / "pcaps" / "tls" / "tls13_ecdsa_anyport.pcap"),
                     "--console") == []
    # The check sees late imports: a certificate brings in the parser.
    assert _imported("run", "-I", str(TLS_CAPTURE), "--console") == [
        "cryptography", "wirebeat.decoders.tls_x509"]


# Cheaper modules a console run from a file does not need either (docs/performance.md,
# start9): the index template's importlib.resources, the worker pool's module, live
# capture's, the `communityid` package (stdlib logging), difflib (a mistyped key's
# hint), traceback (the first exception logged), tempfile (ZeroMQ's receive queue).
UNUSED_BY_A_FILE_RUN = ("importlib.resources", "wirebeat.workers", "wirebeat.sources.live", "communityid",
                        "logging", "difflib", "traceback", "tempfile")


def test_a_console_run_from_a_file_imports_only_what_it_uses() -> None:
    capture = str(ROOT / "pcaps" / "tls" / "tls13_ecdsa_anyport.pcap")
    assert _imported("run", "-I", capture, "--console", late=UNUSED_BY_A_FILE_RUN) == []
    # The check sees them: workers bring in their module (before any privilege drop).
    assert _imported("run", "-I", capture, "--console", "--workers", "2",
                     late=UNUSED_BY_A_FILE_RUN) == ["wirebeat.workers", "traceback", "tempfile"]



# start13: hashlib (it loads OpenSSL's libcrypto; BLAKE2b comes from wirebeat.hashes) only
# where TLS fingerprints or the Python Community ID need it; NetFlow's engine side
# (wirebeat.sources.netflow) with the first data set or listener.
UNUSED_WITHOUT_TLS_OR_NETFLOW = ("hashlib", "_hashlib", "wirebeat.sources.netflow")


def test_a_run_without_tls_or_netflow_loads_neither_openssl_nor_netflows_engine_side() -> None:
    dns = str(ROOT / "pcaps" / "dns" / "record_types.pcap")
    assert _imported("run", "-I", dns, "--console", late=UNUSED_WITHOUT_TLS_OR_NETFLOW) == []
    # The check sees them: NetFlow data sets bring in publish_set, TLS its fingerprints' MD5.
    assert _imported("run", "-I", str(ROOT / "pcaps" / "netflow" / "softflowd_v5.pcap"), "--console",
                     late=UNUSED_WITHOUT_TLS_OR_NETFLOW) == ["wirebeat.sources.netflow"]
    assert _imported("run", "-I", str(ROOT / "pcaps" / "tls" / "tls13_ecdsa_anyport.pcap"), "--console",
                     late=UNUSED_WITHOUT_TLS_OR_NETFLOW) == ["hashlib", "_hashlib"]

def test_a_zeromq_feed_imports_zeromq_when_it_is_made() -> None:
    code = ("import sys\n"
            "from wirebeat.sources.zmq import ZMQSource\n"
            "assert 'zmq' not in sys.modules\n"
            "ZMQSource('tcp://127.0.0.1:9', [], 1000)\n"
            "assert 'zmq' in sys.modules and 'wirebeat.sources.zmqrecv' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode()


def test_builtin_decoders_name_their_distribution_and_version() -> None:
    # One "name version" per distribution, read once: still each decoder's own.
    expected = f"(wirebeat {version('wirebeat')})"
    origins = {r.spec.name: r.origin for r in discover()}
    assert origins and all(origin.endswith(expected) for origin in origins.values()), origins
    assert origins["dns"].startswith("wirebeat.decoders.dns:DECODER ")


def _documents_as_nobody(capture: Path, *extra: str) -> list[dict]:
    """The documents of `wirebeat run -I capture` switched to nobody; it must run
    unprivileged without any decoder crashing."""
    require(os.geteuid() == 0, "root (to switch user)")
    proc = subprocess.run([sys.executable, "-m", "wirebeat.cli", "run", "-I", str(capture),
                           "--console", "--user", "nobody", "-E", "wirebeat.flows.enabled=false",
                           "-E", "logging.level=info", *extra],
                          cwd=ROOT, capture_output=True, timeout=120, check=False)
    stderr = proc.stderr.decode()
    assert proc.returncode == 0, stderr
    assert "running unprivileged" in stderr and "decoder.crashed" not in stderr, stderr
    return [json.loads(line) for line in proc.stdout.splitlines()]


@pytest.mark.root
def test_a_user_switch_imports_the_certificate_parser_before_it() -> None:
    """TLS's certificate parser works after the switch. (Where the interpreter's
    site-packages stay readable to nobody, as in this repository's venv, a late import
    would work too: the plug-in test below is the one that tells them apart.)"""
    docs = _documents_as_nobody(TLS_CAPTURE)
    # What pcaps/tls/make_captures.sh made: curl and s_client, both shown the RSA 2048
    # certificate of rsa.wirebeat.test.
    assert len(docs) == 2
    for doc in docs:
        x509 = doc["tls"]["server"]["x509"]
        assert x509["subject"]["common_name"] == "rsa.wirebeat.test"
        assert (x509["public_key_algorithm"], x509["public_key_size"]) == ("RSA", 2048)


@pytest.mark.root
def test_a_user_switch_with_workers_runs_to_the_end() -> None:
    """Workers are forked after the switch and reaped with os.wait4, whose result type
    lives in the `resource` module, imported at its first call: before the switch (on
    main, this run ended with "No module named 'resource'", exit 1, where the
    interpreter is under /root)."""
    docs = _documents_as_nobody(TLS_CAPTURE, "--workers", "2")
    assert len(docs) == 2


@pytest.mark.root
def test_a_user_switch_loads_the_public_suffix_list_before_it() -> None:
    """DNS's registered_domain needs the Public Suffix List, read from the
    publicsuffixlist package with the idna/punycode codecs: loaded before the switch,
    every DNS document is made (before, each one crashed with 'unknown encoding:
    punycode'). Names and counts: pcaps/dns/README.md (record_types.pcap)."""
    docs = _documents_as_nobody(ROOT / "pcaps" / "dns" / "record_types.pcap")
    assert len(docs) == 7
    assert {d["dns"]["question"]["registered_domain"] for d in docs} == {"example.com"}



@pytest.mark.root
def test_a_user_switch_makes_netflow_documents() -> None:
    """NetFlow data sets go to wirebeat.sources.netflow's publish_set, which the engine
    imports at the first one: NetFlow's lazy_imports has `run --user` import it before
    the switch (start13)."""
    from wirebeat.decoders.netflow import DECODER
    assert "wirebeat.sources.netflow" in DECODER.lazy_imports
    docs = _documents_as_nobody(ROOT / "pcaps" / "netflow" / "softflowd_v5.pcap")
    assert docs and {d["type"] for d in docs} == {"netflow"}

_PLUGIN = """
from wirebeat.decoders.api import DecoderSpec, Transaction


class Datagrams:
    def __init__(self, options):
        pass

    def on_datagram(self, dgram):
        from wbtest_lazy import late        # imported when needed, as TLS does with cryptography
        return [Transaction(dgram.flow, dgram.ts, None, "OK", late.VALUE)]

    def expire(self, now):
        return []


DECODER = DecoderSpec(name="lazytest", document=lambda txn: {"lazytest": {"value": txn.detail}},
                      datagram=Datagrams, ports=(53,), lazy_imports=("wbtest_lazy.late",))
"""


@pytest.mark.root
def test_a_plugins_lazy_imports_happen_before_the_user_switch(tmp_path: Path) -> None:
    """A plug-in in a directory only root can read (tmp_path is 0700): after the switch
    to nobody its late module cannot be read, so it decodes only if `run` imported it
    before (without the import in cli.py this run crashes the decoder: --strict, exit 1)."""
    require(os.geteuid() == 0, "root (to switch user)")
    package = tmp_path / "wbtest_lazy"
    package.mkdir()
    (package / "__init__.py").write_text(textwrap.dedent(_PLUGIN))
    (package / "late.py").write_text('VALUE = "imported late"\n')
    info = tmp_path / "wbtest_lazy-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: wbtest-lazy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[wirebeat.decoders]\nlazytest = wbtest_lazy:DECODER\n")
    capture = tmp_path / "query.pcap"
    a, b = "192.0.2.1", "198.51.100.2"
    g.write_pcap(capture, [(1.0, g.ethernet(g.ipv4(a, b, 17, g.udp(a, b, 5353, 53, b"?"))))])
    assert (tmp_path.stat().st_mode & 0o077) == 0       # nobody may not read it
    proc = subprocess.run([sys.executable, "-m", "wirebeat.cli", "run", "-I", str(capture), "--console",
                           "--strict", "--user", "nobody", "-E", "wirebeat.protocols.dns.enabled=false",
                           "-E", "wirebeat.flows.enabled=false", "-E", "logging.level=info"],
                          cwd=ROOT, capture_output=True, timeout=120, check=False,
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    stderr = proc.stderr.decode()
    assert proc.returncode == 0 and "running unprivileged" in stderr, stderr
    [doc] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert doc["lazytest"] == {"value": "imported late"}


def test_process_stats_agree_with_psutil(tmp_path: Path) -> None:
    """Stats.process reads the kernel itself (psutil took ~8 ms to import); psutil,
    still installed for the tests, is the oracle."""
    import psutil

    from wirebeat.stats import Stats

    handles = [open(tmp_path / f"f{i}", "w") for i in range(5)]      # noqa: SIM115
    try:
        sum(i * i for i in range(2_000_000))          # some CPU time to compare
        stats = Stats()
        proc = psutil.Process()
        before_cpu, fds, rss_before = proc.cpu_times(), proc.num_fds(), proc.memory_info().rss
        ours = stats.process()
        after_cpu, rss_after = proc.cpu_times(), proc.memory_info().rss
    finally:
        for h in handles:
            h.close()
    assert ours["open_fds"] == fds
    assert before_cpu.user - 0.02 <= ours["cpu_user_s"] <= after_cpu.user + 0.02
    assert before_cpu.system - 0.02 <= ours["cpu_system_s"] <= after_cpu.system + 0.02
    assert ours["cpu_user_s"] > 0.05
    assert min(rss_before, rss_after) - 2**20 <= ours["rss_bytes"] <= max(rss_before, rss_after) + 2**20
    assert ours["peak_rss_bytes"] >= ours["rss_bytes"]


@pytest.mark.root
@pytest.mark.parametrize("table", ["hosts.yml", "hosts.csv"])
def test_lookup_tables_are_read_after_the_user_switch(table: str) -> None:
    """Lookup tables are loaded (and reloaded) after the switch: what reading them needs
    is imported before it (PyYAML with the config file; the utf-8-sig codec in cli.py,
    without which this failed on main with "unknown encoding: utf-8-sig")."""
    require(os.geteuid() == 0, "root (to switch user)")
    import shutil
    import tempfile
    where = Path(tempfile.mkdtemp(prefix="wbtest-lookup-"))
    try:
        where.chmod(0o755)      # nobody reads the table after the switch
        a, b = "192.0.2.1", "198.51.100.2"
        rows = {"hosts.yml": f"- ip: {a}\n  name: alpha\n", "hosts.csv": f"ip,name\n{a},alpha\n"}
        (where / table).write_text(rows[table])
        (where / "wirebeat.yml").write_text(
            "wirebeat.packets.enabled: true\n"
            f"processors:\n  - lookup: {{field: source.ip, table: {table}, key: ip, target: host}}\n")
        capture = where / "one.pcap"
        g.write_pcap(capture, [(1.0, g.ethernet(g.ipv4(a, b, 17, g.udp(a, b, 5353, 9, b"?"))))])
        for path in where.iterdir():
            path.chmod(0o644)
        proc = subprocess.run([sys.executable, "-m", "wirebeat.cli", "run", "-c", str(where / "wirebeat.yml"),
                               "-I", str(capture), "--console", "--user", "nobody",
                               "-E", "wirebeat.flows.enabled=false", "-E", "logging.level=info"],
                              cwd=ROOT, capture_output=True, timeout=120, check=False)
        stderr = proc.stderr.decode()
        assert proc.returncode == 0 and "running unprivileged" in stderr, stderr
        [doc] = [json.loads(line) for line in proc.stdout.splitlines()]
        assert doc["host"]["name"] == "alpha"
    finally:
        shutil.rmtree(where)
