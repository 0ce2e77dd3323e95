"""-E values read without PyYAML (config._plain_scalar) against PyYAML itself.

`wirebeat run` parses each `-E key=value` as YAML; PyYAML costs ~14 ms of
start-up to import, so the commonest values (booleans, decimal integers, plain
words) are read directly and anything else still goes to yaml.safe_load. The
oracle is yaml.safe_load on the same text: every YAML 1.1 boolean and null word,
numbers in every notation PyYAML resolves, and generated words.
"""
from __future__ import annotations

import subprocess
import sys

import yaml
from hypothesis import given, settings, strategies as st

from wirebeat.config import _NOT_PLAIN, _plain_scalar

SAMPLES = [
    "true", "True", "TRUE", "false", "False", "FALSE", "yes", "Yes", "YES", "no", "No", "NO",
    "on", "On", "ON", "off", "Off", "OFF", "y", "n", "Y", "N", "tRue", "null", "Null", "NULL", "~",
    "nUll", "0", "1", "-1", "-0", "+1", "007", "08", "0x1F", "0o17", "0b101", "1_000", "1:30",
    "1.5", ".5", "1e3", "1.0e+3", ".inf", "-.inf", ".nan", "2026-12-01", "2026-12-01T03:00:00Z",
    "info", "warning", "wirebeat-%{version}", "http://localhost:9200", "[a, b]", "{a: 1}",
    "a: b", "a b", "a#b", "a #b", "'quoted'", '"quoted"', "eth0", "any", "/var/log/wirebeat",
    "wirebeat.yml", "a.b-c_d/e", "=", "<<", "-", "", " ", " true", "true ", "&anchor", "*alias",
    "!tag x", "%x", "@x", "`x`", "|", ">", "?", ":", "a:", "a,b", "é",
]


def _check(text: str) -> None:
    ours = _plain_scalar(text)
    if ours is _NOT_PLAIN:
        return          # PyYAML reads it, as before
    theirs = yaml.safe_load(text)
    assert ours == theirs and type(ours) is type(theirs), (text, ours, theirs)


def test_samples_read_as_pyyaml_reads_them() -> None:
    taken = [text for text in SAMPLES if _plain_scalar(text) is not _NOT_PLAIN]
    for text in SAMPLES:
        _check(text)
    # It does read the common ones itself (else this would prove nothing).
    assert {"true", "False", "on", "null", "0", "-1", "info", "eth0", "wirebeat.yml"} <= set(taken)
    assert not {"007", "1.5", "1:30", "0x1F", "", " true", "a: b", "~"} & set(taken)


@settings(max_examples=3000, deadline=None)
@given(st.text(alphabet="aeloOnNfFtTrRuUsSyY0123456789-_./:+ ", max_size=8))
def test_generated_values_read_as_pyyaml_reads_them(text: str) -> None:
    _check(text)


def test_a_run_with_only_plain_values_does_not_import_pyyaml() -> None:
    code = ("import sys\n"
            "from wirebeat.config import load_config\n"
            "c = load_config(None, ['wirebeat.packets.enabled=true', 'logging.level=warning',"
            " 'wirebeat.limits.max_flows=5'], [])\n"
            "assert c['wirebeat.packets.enabled'] is True and c['wirebeat.limits.max_flows'] == 5\n"
            "assert 'yaml' not in sys.modules\n"
            "load_config(None, ['fields={a: 1}'], [])\n"
            "assert 'yaml' in sys.modules\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60, check=False,
                          cwd="/")
    assert proc.returncode == 0, proc.stderr.decode()
