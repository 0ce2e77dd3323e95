"""The worked plug-in, examples/wirebeat-redis, as a user installs and runs it.

A fresh virtual environment sees this checkout's wirebeat (and its
dependencies) through a site directory, and the plug-in is installed into it
with pip from its own pyproject.toml, so nothing is added to the test venv.
Then, in that environment: `wirebeat decoders` lists it; its own tests (which
compare with redis-cli's transcript) pass; the command line decodes its
capture; and the documents land in the real Elasticsearch with the plug-in's
fields mapped by the template fragment it ships.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from conftest import ROOT

PLUGIN = ROOT / "examples" / "wirebeat-redis"
CAPTURE = PLUGIN / "capture" / "redis.pcap"


@pytest.fixture(scope="module")
def venv_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("plugin") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True).stdout.strip()
    # The checkout's environment as a site directory: its .pth files (the
    # editable wirebeat) are processed too.
    ours = sysconfig.get_paths()["purelib"]
    Path(site_packages, "wirebeat-checkout.pth").write_text(f"import site; site.addsitedir({ours!r})\n")
    source = venv.parent / "wirebeat-redis"     # built from a copy: the checkout stays clean
    shutil.copytree(PLUGIN, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    proc = subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", str(source)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return python


def _wirebeat(python: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(python), "-m", "wirebeat.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=180)


def test_wirebeat_decoders_lists_the_installed_plugin(venv_python):
    proc = _wirebeat(venv_python, "decoders")
    assert proc.returncode == 0, proc.stderr
    [line] = [ln for ln in proc.stdout.splitlines() if ln.startswith("redis ")]
    assert "tcp ports 6379" in line and "wirebeat-redis 0.1.0" in line


def test_the_plugins_own_tests_pass_where_it_is_installed(venv_python):
    proc = subprocess.run([str(venv_python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
                          cwd=PLUGIN, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert " passed" in proc.stdout and "failed" not in proc.stdout


def test_the_command_line_decodes_the_capture(venv_python):
    proc = _wirebeat(venv_python, "run", "-E", "wirebeat.flows.enabled=false", "-I", str(CAPTURE), "--console", "--strict")
    assert proc.returncode == 0, proc.stderr
    docs = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert len(docs) == 18 and {d["type"] for d in docs} == {"redis"}
    assert {d["network"]["protocol"] for d in docs} == {"redis"}


@pytest.mark.elasticsearch
def test_documents_are_indexed_with_the_plugins_fields_mapped(venv_python, es_url):
    index = f"tls-redis-{uuid.uuid4().hex[:8]}"
    proc = _wirebeat(venv_python, "run", "-E", "wirebeat.flows.enabled=false", "-I", str(CAPTURE), "-E", f"output.elasticsearch.hosts=[{es_url}]",
                     "-E", f"output.elasticsearch.index={index}")
    assert proc.returncode == 0, proc.stderr
    es = Elasticsearch(es_url)
    try:
        es.indices.refresh(index=index)
        mapping = es.indices.get_mapping(index=index)[index]["mappings"]["properties"]
        assert mapping["redis"]["properties"]["return_value"]["type"] == "keyword"
        assert mapping["redis"]["properties"]["error"]["type"] == "keyword"
        assert es.count(index=index)["count"] == 18
        # INCR on a string, an unknown command, LPUSH without a value
        assert es.count(index=index, query={"exists": {"field": "redis.error"}})["count"] == 3
        assert es.count(index=index, query={"term": {"redis.return_value": "hello world"}})["count"] == 1
    finally:
        es.indices.delete(index=index, ignore_unavailable=True)
        es.options(ignore_status=404).indices.delete_index_template(name=index)
