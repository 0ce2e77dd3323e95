"""A secured Elasticsearch: TLS with our own CA, a password user, API keys.

The node is a second, separate one (scripts/esnode.py start --secure: its own
data, port and state; the plain node others use is left alone). Its CA and
certificate are made by openssl; the certificate names `localhost` only, so
connecting to https://127.0.0.1 is a hostname mismatch. Password users index
(with the password from the environment or from a secrets file, with and
without a client certificate); every wrong credential or TLS problem is one
clear line from `wirebeat test output` and from `wirebeat run`; no credential
ever appears in logs, metrics, stats documents or error messages.

API keys: the only server Elastic publishes to Maven Central (the integ-test
zip) lacks the analysis-common module that the `.security` index mapping
needs, so esnode.py adds a small plugin of its own (scripts/es-analysis/)
that registers the three analysis names that mapping uses. The node then
issues real API keys: wirebeat indexes with one (both forms, id:key and
encoded, with only the privileges it needs) and the documents arrive; an
expired, an invalidated and an unknown key are each one clear line.
"""
from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from conftest import run_wirebeat
from echo import write_echo_capture
from running import Wirebeat

# These tests count transaction documents; flow reports would add to every count.
FLOWS_OFF = "wirebeat.flows.enabled=false"

pytestmark = pytest.mark.elasticsearch

T0 = 1_766_000_000_000_000_000
PAIRS = 7


@pytest.fixture(scope="module")
def secure_es() -> Iterator[dict[str, str]]:
    """URL, user, password and CA of the secure node; fails (never skips) if it cannot start."""
    import esnode
    already_running = esnode.url(secure=True) is not None
    try:
        info = esnode.start_secure()
    except Exception as err:
        pytest.fail(f"the secure Elasticsearch could not be started by scripts/esnode.py: {err}")
    yield info
    if not already_running and os.environ.get("WIREBEAT_KEEP_ES") != "1":
        esnode.stop(secure=True)


@pytest.fixture(scope="module")
def admin(secure_es) -> Elasticsearch:
    return Elasticsearch(secure_es["url"], basic_auth=(secure_es["username"], secure_es["password"]),
                         ca_certs=secure_es["ca"])


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> Path:
    return write_echo_capture(tmp_path_factory.mktemp("secure") / "secure.pcap", "10.5.0.1", "10.5.0.2",
                              5, PAIRS, T0)


@pytest.fixture
def index(admin) -> Iterator[str]:
    name = f"reliability-secure-{uuid.uuid4().hex[:8]}"
    yield name
    admin.indices.delete(index=name, ignore_unavailable=True)


def _api_key() -> dict[str, str]:
    """An API key of the right shape that the node has never issued."""
    key_id, api_key = uuid.uuid4().hex[:20], uuid.uuid4().hex
    return {"id": key_id, "api_key": api_key,
            "encoded": base64.b64encode(f"{key_id}:{api_key}".encode()).decode()}


def _tls(secure_es: dict[str, str]) -> list[str]:
    return ["-E", f"output.elasticsearch.ssl.certificate_authorities=[{secure_es['ca']}]"]


def _count(admin: Elasticsearch, index: str) -> int:
    admin.indices.refresh(index=index)
    return admin.count(index=index)["count"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _client_cert(tmp_path: Path, ca: str | None, ca_key: str | None) -> tuple[Path, Path]:
    """A client certificate signed by `ca`, or self-signed when ca is None."""
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "client.key", "-out", "client.csr",
             "-subj", "/CN=wirebeat-client", cwd=tmp_path)
    if ca is None:
        _openssl("x509", "-req", "-in", "client.csr", "-signkey", "client.key", "-days", "2",
                 "-out", "client.crt", cwd=tmp_path)
    else:
        _openssl("x509", "-req", "-in", "client.csr", "-CA", ca, "-CAkey", str(ca_key),
                 "-CAcreateserial", "-CAserial", str(tmp_path / "ca.srl"), "-days", "2",
                 "-out", "client.crt", cwd=tmp_path)
    return tmp_path / "client.crt", tmp_path / "client.key"


# -- indexing with each credential kind ---------------------------------------------

def test_password_from_the_environment_indexes_over_tls(secure_es, admin, capture, index):
    proc = run_wirebeat("run", "-E", FLOWS_OFF, "-I", str(capture), "-E", f"output.elasticsearch.hosts=[{secure_es['url']}]",
                        "-E", f"output.elasticsearch.index={index}", *_tls(secure_es),
                        "-E", "output.elasticsearch.username=wirebeat",
                        "-E", "output.elasticsearch.password=${WB_TEST_ES_PASSWORD}",
                        env={"WB_TEST_ES_PASSWORD": secure_es["password"]})
    assert proc.returncode == 0, proc.stderr.decode()
    assert _count(admin, index) == PAIRS


def test_password_from_a_secrets_file_indexes_over_tls(secure_es, admin, capture, index, tmp_path):
    secrets = tmp_path / "wirebeat.secrets"
    secrets.write_text(f"# wirebeat secrets\nES_PASSWORD={secure_es['password']}\n")
    secrets.chmod(0o600)
    config = tmp_path / "wirebeat.yml"
    config.write_text(f"keystore.path: {secrets}\n"
                      "output.elasticsearch:\n"
                      f"  hosts: ['{secure_es['url']}']\n"
                      f"  index: {index}\n"
                      "  username: wirebeat\n"
                      "  password: ${ES_PASSWORD}\n"
                      f"  ssl.certificate_authorities: ['{secure_es['ca']}']\n")
    assert secure_es["password"] not in config.read_text()
    proc = run_wirebeat("run", "-E", FLOWS_OFF, "-c", str(config), "-I", str(capture))
    assert proc.returncode == 0, proc.stderr.decode()
    assert _count(admin, index) == PAIRS


def test_a_secrets_file_others_can_read_is_refused(tmp_path):
    secrets = tmp_path / "wirebeat.secrets"
    secrets.write_text("ES_PASSWORD=whatever-it-is\n")
    secrets.chmod(0o644)
    proc = run_wirebeat("test", "config", "-E", f"keystore.path={secrets}",
                        "-E", "output.elasticsearch.password=${ES_PASSWORD}")
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == (f"wirebeat: keystore.path {secrets}: readable by group or "
                                            "others (mode 644); chmod 600 it")


def test_an_unset_reference_names_the_key():
    proc = run_wirebeat("test", "config", "-E", "output.elasticsearch.password=${WB_TEST_NOT_SET_ANYWHERE}")
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == ("wirebeat: config key 'output.elasticsearch.password': "
                                            "${WB_TEST_NOT_SET_ANYWHERE} is in neither the secrets file "
                                            "nor the environment")


def test_a_client_certificate_from_our_ca_is_accepted(secure_es, admin, capture, index, tmp_path):
    cert, key_file = _client_cert(tmp_path, secure_es["ca"], secure_es["ca_key"])
    proc = run_wirebeat("run", "-E", FLOWS_OFF, "-I", str(capture), "-E", f"output.elasticsearch.hosts=[{secure_es['url']}]",
                        "-E", f"output.elasticsearch.index={index}", *_tls(secure_es),
                        "-E", "output.elasticsearch.username=wirebeat",
                        "-E", f"output.elasticsearch.password={secure_es['password']}",
                        "-E", f"output.elasticsearch.ssl.certificate={cert}",
                        "-E", f"output.elasticsearch.ssl.key={key_file}")
    assert proc.returncode == 0, proc.stderr.decode()
    assert _count(admin, index) == PAIRS


def test_a_client_certificate_from_an_untrusted_ca_is_refused_in_the_handshake(secure_es, tmp_path):
    """The node checks a client certificate when one is offered: proof that wirebeat sends it."""
    cert, key_file = _client_cert(tmp_path, None, None)
    proc = run_wirebeat("test", "output", "-E", f"output.elasticsearch.hosts=[{secure_es['url']}]",
                        *_tls(secure_es), "-E", "output.elasticsearch.username=wirebeat",
                        "-E", f"output.elasticsearch.password={secure_es['password']}",
                        "-E", f"output.elasticsearch.ssl.certificate={cert}",
                        "-E", f"output.elasticsearch.ssl.key={key_file}")
    assert proc.returncode == 1
    [line] = proc.stderr.decode().splitlines()
    assert "TLS" in line, line


@pytest.mark.parametrize("mode, host, works", [
    ("full", "localhost", True), ("full", "127.0.0.1", False),
    ("certificate", "127.0.0.1", True), ("none", "127.0.0.1", True)])
def test_verification_modes(secure_es, mode, host, works):
    url = f"https://{host}:{secure_es['port']}"
    proc = run_wirebeat("test", "output", "-E", f"output.elasticsearch.hosts=[{url}]",
                        *(_tls(secure_es) if mode != "none" else []),
                        "-E", f"output.elasticsearch.ssl.verification_mode={mode}",
                        "-E", "output.elasticsearch.username=wirebeat",
                        "-E", f"output.elasticsearch.password={secure_es['password']}")
    assert (proc.returncode == 0) == works, proc.stderr.decode()


# -- every failure is one clear line, from `test output` and from `run` ---------------

def _failure_cases(secure_es: dict[str, str]) -> dict[str, tuple[list[str], str, str]]:
    """name -> (-E options, expected phrase (a*b: a, then b), the secret that must not be printed)."""
    url, port, password = secure_es["url"], secure_es["port"], secure_es["password"]
    user = ["-E", "output.elasticsearch.username=wirebeat"]
    plain, encoded = _api_key(), _api_key()
    return {
        "wrong password": ([f"output.elasticsearch.hosts=[{url}]", *_tls(secure_es)[1::2], *user[1::2],
                            "output.elasticsearch.password=Not-The-Password-42"],
                           "rejected the username/password", "Not-The-Password-42"),
        "unknown api key as id:key": ([f"output.elasticsearch.hosts=[{url}]", *_tls(secure_es)[1::2],
                                       f"output.elasticsearch.api_key={plain['id']}:{plain['api_key']}"],
                                      f"rejected the API key (*{plain['id']}",
                                      plain["api_key"]),
        "unknown api key encoded": ([f"output.elasticsearch.hosts=[{url}]", *_tls(secure_es)[1::2],
                                     f"output.elasticsearch.api_key={encoded['encoded']}"],
                                    f"rejected the API key (*{encoded['id']}",
                                    encoded["encoded"]),
        "untrusted CA": ([f"output.elasticsearch.hosts=[{url}]", *user[1::2],
                          f"output.elasticsearch.password={password}"],
                         "not signed by a trusted CA", password),
        "hostname mismatch": ([f"output.elasticsearch.hosts=[https://127.0.0.1:{port}]", *_tls(secure_es)[1::2],
                               *user[1::2], f"output.elasticsearch.password={password}"],
                              "does not name this host", password),
    }


def test_each_credential_or_tls_failure_is_one_clear_line(secure_es, capture, index):
    for name, (options, phrase, secret) in _failure_cases(secure_es).items():
        _assert_one_clear_line(name, options, phrase, secret, capture, index)


def _assert_one_clear_line(name: str, options: list[str], phrase: str, secret: str, capture: Path,
                           index: str) -> None:
    args = [a for o in options for a in ("-E", o)]
    for command in (["test", "output"],
                    ["run", "-E", FLOWS_OFF, "-I", str(capture), "-E", f"output.elasticsearch.index={index}"]):
        proc = run_wirebeat(*command, *args, timeout=60)
        err = proc.stderr.decode()
        assert proc.returncode == 1, (name, command[0], err)
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("wirebeat: Elasticsearch at "), (name, command[0], err)
        # "a*b": a, then b further on (the node words an unknown key differently
        # before and after its first API key was issued).
        assert re.search(".*".join(map(re.escape, phrase.split("*"))), lines[0]), (name, lines[0])
        assert secret not in err and secret not in proc.stdout.decode(), name
        assert "Traceback" not in err


# -- real API keys, issued by the node -------------------------------------------------

def _issue_key(admin: Elasticsearch, index: str, **extra: object) -> dict[str, str]:
    """An API key with only what wirebeat needs: check the server, install its template, create documents."""
    key = admin.security.create_api_key(name=f"wirebeat-test-{uuid.uuid4().hex[:8]}", role_descriptors={
        "wirebeat_writer": {
            "cluster": ["monitor", "manage_index_templates"],
            "indices": [{"names": [f"{index}*"], "privileges": ["create_doc", "create_index", "view_index_metadata"]}],
        }}, **extra)
    return {"id": key["id"], "api_key": key["api_key"], "encoded": key["encoded"]}


@pytest.mark.parametrize("form", ["id:key", "encoded"])
def test_a_valid_api_key_indexes_over_tls(secure_es, admin, capture, index, form):
    key = _issue_key(admin, index)
    value = key["encoded"] if form == "encoded" else f"{key['id']}:{key['api_key']}"
    checked = run_wirebeat("test", "output", "-E", f"output.elasticsearch.hosts=[{secure_es['url']}]",
                           *_tls(secure_es), "-E", f"output.elasticsearch.api_key={value}")
    assert checked.returncode == 0, checked.stderr.decode()
    proc = run_wirebeat("run", "-E", FLOWS_OFF, "-I", str(capture), "-E", f"output.elasticsearch.hosts=[{secure_es['url']}]",
                        "-E", f"output.elasticsearch.index={index}", *_tls(secure_es),
                        "-E", f"output.elasticsearch.api_key={value}")
    assert proc.returncode == 0, proc.stderr.decode()
    assert f"{PAIRS} documents ({PAIRS} acknowledged, 0 failed" in proc.stderr.decode() + proc.stdout.decode()
    assert _count(admin, index) == PAIRS
    assert key["api_key"] not in proc.stderr.decode() + checked.stderr.decode()


def test_an_expired_or_invalidated_api_key_is_one_clear_line(secure_es, admin, capture, index):
    expired = _issue_key(admin, index, expiration="1s")
    invalidated = _issue_key(admin, index)
    admin.security.invalidate_api_key(ids=[invalidated["id"]])
    time.sleep(2)       # past the expiry
    url = secure_es["url"]
    for name, key, phrase in (("expired", expired, "api key is expired"),
                              ("invalidated", invalidated, f"api key [{invalidated['id']}] has been invalidated")):
        options = [f"output.elasticsearch.hosts=[{url}]", *_tls(secure_es)[1::2],
                   f"output.elasticsearch.api_key={key['encoded']}"]
        _assert_one_clear_line(name, options, f"rejected the API key ({phrase}", key["encoded"], capture, index)
    assert _count_or_zero(admin, index) == 0


def _count_or_zero(admin: Elasticsearch, index: str) -> int:
    return _count(admin, index) if admin.indices.exists(index=index) else 0


# -- secrets never leak --------------------------------------------------------------

def test_credentials_appear_in_no_log_metric_document_or_error(secure_es, admin, capture, index, tmp_path):
    password = secure_es["password"]
    key = _api_key()
    secrets = [password, key["api_key"], key["encoded"]]
    outputs: list[str] = []
    # A run with debug logs, counters, the stats endpoint and stats documents, by password.
    wb = Wirebeat("-E", FLOWS_OFF, "-I", str(capture), "-E", f"output.elasticsearch.hosts=[{secure_es['url']}]",
                  "-E", f"output.elasticsearch.index={index}", *_tls(secure_es),
                  "-E", "output.elasticsearch.username=wirebeat",
                  "-E", f"output.elasticsearch.password={password}", "-E", "logging.level=debug",
                  "-E", "monitoring.enabled=true", "-E", "monitoring.period=100ms",
                  "-E", "logging.metrics.period=100ms", http=False)
    assert wb.proc.wait(60) == 0, wb.stderr_text()
    outputs.append(wb.stderr_text())
    admin.indices.refresh(index=index)
    outputs.append(json.dumps(admin.search(index=index, size=100)["hits"]["hits"]))
    # Errors while the node is unreachable, with the credentials in the URL.
    down = Wirebeat("-E", FLOWS_OFF, "-I", str(capture), "-E", "wirebeat.shutdown_timeout=1s",
                    "-E", f"output.elasticsearch.hosts=[https://wirebeat:{password}@localhost:9]",
                    "-E", "output.elasticsearch.backoff.init=100ms", "-E", "logging.level=debug",
                    *_tls(secure_es), http=False)
    try:
        down.wait_for_log("elasticsearch unreachable, will retry")
        assert down.stop()[0] == 1
    finally:
        down.kill()
    outputs.append(down.stderr_text())
    for command in (["test", "output"], ["test", "config"]):
        proc = run_wirebeat(*command, "-E", f"output.elasticsearch.hosts=[https://wirebeat:{password}@localhost:9]",
                            "-E", f"output.elasticsearch.api_key={key['encoded']}", *_tls(secure_es))
        outputs.append(proc.stderr.decode() + proc.stdout.decode())
    text = "\n".join(outputs)
    assert "will retry" in text and "localhost:9" in text      # the errors were there to read
    for secret in secrets:
        assert secret not in text
