"""wirebeat as a user installs it: a built wheel in a fresh virtualenv, run from elsewhere.

The editable checkout hides packaging mistakes (files found beside the source
tree, top-level packages nobody meant to install). These tests build the sdist
and the wheel with `python -m build`, read the wheel's RECORD, install the
wheel into a new virtualenv outside the checkout and drive the installed
`wirebeat` command from a temporary directory into the real Elasticsearch.
"""
from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
import zipfile
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from conftest import PCAPS, ROOT

pytestmark = pytest.mark.elasticsearch

ACCELERATORS = ("_speedups", "_nfcore", "_flowcore", "_workcore", "_doctext", "_dnscore")   # setup.py's optional C extensions
TEMPLATE_PARTS = sorted(p.name for p in (ROOT / "index_templates").glob("*.json"))


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    proc = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def installed(dist, tmp_path_factory) -> Path:
    """bin/ of a fresh virtualenv holding only the wheel and its dependencies."""
    venv = tmp_path_factory.mktemp("venv") / "v"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    wheel = next(dist.glob("wirebeat-*.whl"))
    proc = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", str(wheel)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return venv / "bin"


def _wheel_names(dist: Path) -> list[str]:
    wheel = next(dist.glob("wirebeat-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        record = next(n for n in zf.namelist() if n.endswith(".dist-info/RECORD"))
        return [row[0] for row in csv.reader(io.TextIOWrapper(zf.open(record), "utf-8")) if row]


def test_wheel_installs_one_import_root_with_its_templates(dist):
    names = _wheel_names(dist)
    tops = {n.split("/", 1)[0] for n in names}
    dist_info = {t for t in tops if t.endswith(".dist-info")}
    assert tops - dist_info == {"wirebeat"}, sorted(tops)
    for part in TEMPLATE_PARTS:
        assert f"wirebeat/index_templates/{part}" in names
    assert "wirebeat/api.py" in names and "wirebeat/testing.py" in names
    for ndjson in sorted(p.name for p in (ROOT / "kibana").glob("*.ndjson")):
        assert f"wirebeat/kibana/{ndjson}" in names
    with zipfile.ZipFile(next(dist.glob("wirebeat-*.whl"))) as zf:
        entry_points = zf.read(next(n for n in zf.namelist() if n.endswith("entry_points.txt")))
    assert b"wirebeat = wirebeat.cli:entry" in entry_points
    assert b"dns = wirebeat.decoders.dns:DECODER" in entry_points


def test_sdist_carries_the_templates(dist):
    sdist = next(dist.glob("wirebeat-*.tar.gz"))
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for part in TEMPLATE_PARTS:
        assert f"index_templates/{part}" in names
    assert {"setup.py", *(f"beat/{name}.c" for name in ACCELERATORS)} <= names  # the C accelerators build from the sdist


def test_installed_wheel_has_the_c_accelerator(dist, installed, tmp_path):
    """The wheel carries the compiled C accelerators, and the installed package uses them.

    The extension is optional (a machine without a C compiler installs pure Python),
    but wherever a compiler exists, and always under CI=true, the wheel must have it."""
    if os.environ.get("CI") != "true" and not (shutil.which("cc") or shutil.which("gcc")):
        pytest.skip("no C compiler: the wheel is pure Python by design")
    for name in ACCELERATORS:
        assert any(n.startswith(f"wirebeat/{name}.") and n.endswith(".so") for n in _wheel_names(dist)), name
    code = (f"import wirebeat, {', '.join('wirebeat.' + n for n in ACCELERATORS)}, wirebeat.packets as p; "
            "print(p.ACCELERATED, wirebeat.__file__)")
    proc = subprocess.run([str(installed / "python"), "-c", code], capture_output=True, text=True, cwd=tmp_path,
                          env={k: v for k, v in os.environ.items() if k != "WIREBEAT_PURE_PYTHON"}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    accelerated, where = proc.stdout.split()
    assert accelerated == "True" and not where.startswith(str(ROOT)), proc.stdout


def _run(bindir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(bindir / "wirebeat"), *args], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_installed_wheel_sets_up_and_indexes_from_another_directory(installed, es_url, tmp_path):
    assert not (tmp_path / "index_templates").exists()
    version = _run(installed, tmp_path, "version")
    assert version.returncode == 0 and version.stdout.startswith("wirebeat "), version.stderr
    listed = _run(installed, tmp_path, "decoders")
    assert listed.returncode == 0, listed.stderr
    assert {line.split()[0] for line in listed.stdout.splitlines()} >= {"dns", "http", "icmp",
                                                                       "dhcpv4", "sip", "rtp"}
    checked = _run(installed, tmp_path, "test", "config")
    assert checked.returncode == 0 and checked.stdout.startswith("Config OK"), checked.stderr

    index = f"wbwheel-{uuid.uuid4().hex[:8]}"
    es_args = ["-E", f"output.elasticsearch.hosts=[{es_url}]",
               "-E", f"output.elasticsearch.index={index}"]
    for _ in range(2):           # setup is idempotent
        setup = _run(installed, tmp_path, "setup", *es_args)
        assert setup.returncode == 0, setup.stderr
        assert f"Index template {index} installed" in setup.stdout
    run = _run(installed, tmp_path, "run", "-I", str(PCAPS / "icmp" / "ping.pcap"), *es_args)
    assert run.returncode == 0, run.stderr
    es = Elasticsearch(es_url)
    es.indices.refresh(index=index)
    # pcaps/icmp/README.md: 4+4 answered pairs, 3+2 unanswered, 1+1 unreachable (tshark-checked).
    assert es.count(index=index, query={"term": {"event.dataset": "icmp"}})["count"] == 15
    template = es.indices.get_index_template(name=index)["index_templates"][0]["index_template"]
    assert template["index_patterns"] == [index + "*"]


def test_template_clash_is_one_line_and_exit_2(es_url, wirebeat, tmp_path):
    """`setup` for index X, then a run into X-clean: both templates would match X-clean*."""
    index = f"wbclash-{uuid.uuid4().hex[:8]}"
    hosts = f"output.elasticsearch.hosts=[{es_url}]"
    first = wirebeat("setup", "-E", hosts, "-E", f"output.elasticsearch.index={index}")
    assert first.returncode == 0, first.stderr.decode()
    for command in (["setup"], ["run", "-I", str(PCAPS / "icmp" / "ping.pcap")]):
        proc = wirebeat(*command, "-E", hosts, "-E", f"output.elasticsearch.index={index}-clean")
        err = proc.stderr.decode()
        assert proc.returncode == 2, err
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert f"index template {index}-clean " in lines[0], lines[0]
        assert f"existing template(s) {index} " in lines[0], lines[0]
        assert "setup.template.priority" in lines[0]
    # The settings the message names do resolve it.
    fixed = wirebeat("run", "-I", str(PCAPS / "icmp" / "ping.pcap"), "-E", hosts,
                     "-E", f"output.elasticsearch.index={index}-clean",
                     "-E", "setup.template.priority=210")
    assert fixed.returncode == 0, fixed.stderr.decode()


def test_installed_wheel_imports_the_dashboards(installed, tmp_path):
    """The saved objects ship inside the wheel: `setup --dashboards` from elsewhere sends them all."""
    from test_kibana_import import FakeKibana, _expected_ndjson, _file_part
    kibana = FakeKibana()
    try:
        proc = _run(installed, tmp_path, "setup", "--dashboards", "-E", f"setup.kibana.host={kibana.url}")
    finally:
        kibana.close()
    assert proc.returncode == 0, proc.stderr
    assert _file_part(kibana.requests[-1]) == _expected_ndjson()
