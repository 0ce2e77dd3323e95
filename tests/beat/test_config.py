"""Configuration: strict keys and types, -E overrides, one line per mistake."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from wirebeat.config import ConfigError, load_config, parse_duration
from wirebeat.registry import discover

SPECS = [r.spec for r in discover()]


def _load(tmp_path: Path, text: str | None, *overrides: str):
    path = None
    if text is not None:
        path = tmp_path / "wirebeat.yml"
        path.write_text(text)
    return load_config(str(path) if path else None, overrides, SPECS)


def test_defaults_without_a_file(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _load(tmp_path, None)
    assert config["wirebeat.protocols.icmp.enabled"] is True
    assert config["wirebeat.protocols.icmp.transaction_timeout"] == 10.0
    assert config.output_name() == "elasticsearch"
    assert config["output.elasticsearch.hosts"] == ["http://localhost:9200"]


def test_nested_and_dotted_keys_mean_the_same(tmp_path: Path):
    a = _load(tmp_path, "wirebeat:\n  protocols:\n    icmp:\n      transaction_timeout: 2s\n")
    b = _load(tmp_path, "wirebeat.protocols.icmp.transaction_timeout: 2000ms\n")
    assert a["wirebeat.protocols.icmp.transaction_timeout"] == 2.0
    assert b["wirebeat.protocols.icmp.transaction_timeout"] == 2.0


def test_unknown_key_names_its_full_path_and_a_suggestion(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "wirebeat:\n  protocols:\n    icmp:\n      transaction_timout: 2s\n")
    assert str(err.value) == ("unknown config key 'wirebeat.protocols.icmp.transaction_timout' "
                              "(did you mean 'wirebeat.protocols.icmp.transaction_timeout'?)")


def test_wrong_type_names_key_and_expected_type(tmp_path: Path):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, "queue.mem.events: lots\n")
    assert str(err.value) == "config key 'queue.mem.events': expected a whole number, got 'lots'"
    with pytest.raises(ConfigError, match=r"'wirebeat.protocols.icmp.enabled': expected true or false"):
        _load(tmp_path, "wirebeat.protocols.icmp.enabled: 1\n")
    with pytest.raises(ConfigError, match=r"'output.elasticsearch.hosts\[1\]': expected a string"):
        _load(tmp_path, "output.elasticsearch.hosts: [a, [b]]\n")


def test_override_value_is_parsed_as_yaml(tmp_path: Path):
    config = _load(tmp_path, None, "output.elasticsearch.hosts=[http://a:9200, http://b:9200]",
                   "queue.mem.events=100", "wirebeat.protocols.icmp.enabled=false")
    assert config["output.elasticsearch.hosts"] == ["http://a:9200", "http://b:9200"]
    assert config["queue.mem.events"] == 100
    assert config["wirebeat.protocols.icmp.enabled"] is False


def test_override_beats_the_file(tmp_path: Path):
    config = _load(tmp_path, "queue.mem.events: 5\n", "queue.mem.events=7")
    assert config["queue.mem.events"] == 7


def test_two_enabled_outputs_are_refused(tmp_path: Path):
    with pytest.raises(ConfigError, match="only one output can be enabled, found: elasticsearch, console"):
        _load(tmp_path, "output.console.pretty: true\noutput.elasticsearch.hosts: [http://x:9200]\n")


def test_present_output_section_is_enabled(tmp_path: Path):
    assert _load(tmp_path, "output.file:\n  path: /tmp/x\n").output_name() == "file"


def test_invalid_yaml_says_where(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"invalid YAML at line 2"):
        _load(tmp_path, "a: 1\n  b: [\n")


def test_processors_are_checked(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"unknown processor 'drop_events'"):
        _load(tmp_path, "processors:\n  - drop_events: {}\n")
    with pytest.raises(ConfigError, match=r"'processors\[0\].add_tags.tags' is required"):
        _load(tmp_path, "processors:\n  - add_tags: {target: x}\n")


@pytest.mark.parametrize("text, seconds", [(10, 10.0), (2.5, 2.5), ("10s", 10.0), ("500ms", 0.5),
                                           ("1m", 60.0), ("1h", 3600.0), ("250us", 0.00025)])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["-1", "ten", "1 day", True, None])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_bad_config_through_the_cli_is_one_line_exit_2(wirebeat, tmp_path: Path):
    path = tmp_path / "bad.yml"
    path.write_text("wirebeat:\n  protocols:\n    icmp:\n      ports: [1]\n")
    proc = wirebeat("test", "config", "-c", str(path))
    assert proc.returncode == 2
    # ICMP is routed by IP protocol, so it has no ports key.
    assert proc.stderr.decode().startswith("wirebeat: unknown config key 'wirebeat.protocols.icmp.ports'")
    assert len(proc.stderr.decode().strip().splitlines()) == 1


def test_missing_config_file_is_exit_2(wirebeat, tmp_path: Path):
    proc = wirebeat("test", "config", "-c", str(tmp_path / "none.yml"))
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == f"wirebeat: config file {tmp_path / 'none.yml'}: no such file"


def test_test_config_accepts_a_good_file(wirebeat, tmp_path: Path):
    path = tmp_path / "good.yml"
    path.write_text("output.console.enabled: true\nwirebeat.protocols.icmp.transaction_timeout: 3s\n")
    proc = wirebeat("test", "config", "-c", str(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(b"Config OK")


def test_processors_and_fields_reach_the_document(wirebeat, tmp_path: Path):
    import pcapgen as g
    capture = tmp_path / "one.pcap"
    g.write_pcap(capture, [(1.0, g.ethernet(g.ipv4("10.0.0.1", "10.0.0.2", 1, g.icmp_unreachable(3, g.ipv4("10.0.0.2", "10.0.0.1", 17, b"x" * 8)))))])
    proc = wirebeat("run", "-I", str(capture), "--console", "-E", "wirebeat.flows.enabled=false", "-E", "fields={site: lab}", "-E", "tags=[a]",
                    "-E", "processors=[{add_tags: {tags: [b, a]}}, {add_fields: {target: labels, fields: {x: 1}}}]")
    assert proc.returncode == 0, proc.stderr
    [doc] = [json.loads(line) for line in proc.stdout.splitlines()]
    assert doc["fields"] == {"site": "lab"}
    assert doc["tags"] == ["a", "b"]
    assert doc["labels"] == {"x": 1}
