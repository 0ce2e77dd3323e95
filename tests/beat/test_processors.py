"""Processors and their `when` conditions, as beats users write them.

Expected values come from libbeat's documented semantics (and RFC 1918 /
RFC 4291 for the named ranges), not from running this code first.
"""
from __future__ import annotations

import copy
import ipaddress
import os
import time
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from wirebeat.config import ConfigError
from wirebeat.processors import Context, compile_processors
from wirebeat.processors.conditions import compile_condition
from wirebeat.processors.tables import Table

DOC = {
    "@timestamp": "2026-11-30T10:00:00.000000Z", "type": "http",
    "source": {"ip": "10.1.2.3", "mac": "02-00-00-00-00-0A", "port": 40000},
    "destination": {"ip": "8.8.8.8", "port": 80},
    "http": {"response": {"status_code": 404}},
    "tags": ["mirror", "lab"], "url": {"path": "/admin/login"},
}


@pytest.mark.parametrize("condition, expected", [
    ({"equals": {"http.response.status_code": 404}}, True),
    ({"equals": {"http.response.status_code": "404"}}, False),      # a string is not a number
    ({"equals": {"type": "http", "destination.port": 80}}, True),
    ({"equals": {"tags": "lab"}}, True),
    ({"equals": {"no.such": "x"}}, False),
    ({"contains": {"url.path": "admin"}}, True),
    ({"contains": {"tags": "mir"}}, True),
    ({"contains": {"url.path": "root"}}, False),
    ({"regexp": {"url.path": "login$"}}, True),
    ({"regexp": {"url.path": "^login"}}, False),
    ({"range": {"http.response.status_code.gte": 400}}, True),
    ({"range": {"http.response.status_code.gte": 400, "http.response.status_code.lt": 404}}, False),
    ({"range": {"url.path.gt": 1}}, False),                          # not a number
    ({"network": {"source.ip": "private"}}, True),
    ({"network": {"destination.ip": "private"}}, False),
    ({"network": {"destination.ip": "public"}}, True),
    ({"network": {"source.ip": ["192.168.0.0/16", "10.1.0.0/16"]}}, True),
    ({"network": {"source.ip": "10.1.2.4/32"}}, False),
    ({"network": {"source.ip": "loopback"}}, False),
    ({"has_fields": ["source.mac", "http.response"]}, True),
    ({"has_fields": ["source.mac", "dns"]}, False),
    ({"not": {"has_fields": ["dns"]}}, True),
    ({"and": [{"equals": {"type": "http"}}, {"network": {"source.ip": "private"}}]}, True),
    ({"and": [{"equals": {"type": "http"}}, {"network": {"source.ip": "public"}}]}, False),
    ({"or": [{"equals": {"type": "dns"}}, {"contains": {"url.path": "admin"}}]}, True),
    ({"or": [{"equals": {"type": "dns"}}, {"equals": {"type": "sip"}}]}, False),
])
def test_conditions_match_like_libbeat(condition, expected):
    assert compile_condition(condition, "when")(DOC) is expected


@pytest.mark.parametrize("ip, names", [
    ("127.0.0.1", {"loopback", "unicast", "global_unicast"} - {"unicast", "global_unicast"}),
    ("::1", {"loopback"}),
    ("192.168.1.1", {"private", "unicast", "global_unicast"}),
    ("172.31.255.255", {"private", "unicast", "global_unicast"}),
    ("172.32.0.1", {"public", "unicast", "global_unicast"}),
    ("fd00::1", {"private", "unicast", "global_unicast"}),
    ("169.254.1.1", {"link_local_unicast"}),
    ("fe80::1", {"link_local_unicast"}),
    ("224.0.0.251", {"multicast", "link_local_multicast"}),
    ("ff02::1", {"multicast", "link_local_multicast"}),
    ("ff01::1", {"multicast", "interface_local_multicast"}),
    ("239.1.1.1", {"multicast", "public"}),
    ("0.0.0.0", {"unspecified"}),
    ("2001:db8::1", {"public", "unicast", "global_unicast"}),
])
def test_named_networks(ip, names):
    from wirebeat.processors.conditions import NAMED_NETWORKS
    got = {name for name in NAMED_NETWORKS if compile_condition({"network": {"ip": name}}, "w")({"ip": ip})}
    assert got == names


_V4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
_V6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)


@settings(max_examples=400, deadline=None)
@given(address=st.one_of(_V4, _V6), network=st.one_of(
    st.tuples(_V4, st.integers(0, 32)), st.tuples(_V6, st.integers(0, 128))),
    near=st.booleans())
def test_a_cidr_test_answers_as_ipaddress_in_does(address, network, near):
    """The network test compares integers; ipaddress's own `in` is the oracle. `near`
    puts the address inside or at the edge of the network, where masks matter."""
    from wirebeat.processors.conditions import network_test
    base, prefix = network
    net = ipaddress.ip_network(f"{base}/{prefix}", strict=False)
    if near and address.version == net.version:
        address = net.broadcast_address if int(address) % 2 else net.network_address
        address = ipaddress.ip_address(int(address) + (int(base) % 3) - 1) \
            if 0 < int(address) < (2**32 if net.version == 4 else 2**128) - 1 else address
    assert network_test(f"{base}/{prefix}", "w")(address) == (address in net)


@pytest.mark.parametrize("when, message", [
    ({"range": {"http.response.status_code": 400}}, r"'processors\[1\]\.drop_event\.when\.range\.http\.response\.status_code': expected a field name followed by \.gt"),
    ({"range": {"x.gte": "high"}}, r"'processors\[1\]\.drop_event\.when\.range\.x\.gte': expected a number"),
    ({"regexp": {"x": "("}}, r"'processors\[1\]\.drop_event\.when\.regexp\.x': invalid regular expression"),
    ({"network": {"x": ["10.0.0.0/8", "privat"]}}, r"'processors\[1\]\.drop_event\.when\.network\.x\[1\]': 'privat' is neither"),
    ({"not": [{"equals": {"a": 1}}]}, r"'processors\[1\]\.drop_event\.when\.not': expected exactly one condition"),
    ({"and": {"equals": {"a": 1}}}, r"'processors\[1\]\.drop_event\.when\.and': expected a list of conditions"),
    ({"or": [{"equals": {"a": [1]}}]}, r"'processors\[1\]\.drop_event\.when\.or\[0\]\.equals\.a': expected a string"),
    ({"equal": {"a": 1}}, r"'processors\[1\]\.drop_event\.when': unknown condition 'equal'"),
])
def test_condition_errors_name_the_key_path(when, message):
    items = [{"add_tags": {"tags": ["x"]}}, {"drop_event": {"when": when}}]
    with pytest.raises(ConfigError, match=message):
        compile_processors(items)


def _run(items, doc=None, ctx=None):
    doc = copy.deepcopy(DOC if doc is None else doc)
    keep = compile_processors(items, ctx=ctx).run(doc)
    return doc if keep else None


def test_drop_event_only_when_the_condition_holds():
    assert _run([{"drop_event": {"when": {"equals": {"type": "dns"}}}}]) is not None
    assert _run([{"drop_event": {"when": {"equals": {"type": "http"}}}}]) is None
    assert _run([{"drop_event": {}}]) is None


def test_drop_and_include_fields():
    doc = _run([{"drop_fields": {"fields": ["source.mac", "http", "nothing.here"]}}])
    assert doc["source"] == {"ip": "10.1.2.3", "port": 40000} and "http" not in doc
    doc = _run([{"include_fields": {"fields": ["source.ip", "tags"]}}])
    assert doc == {"@timestamp": DOC["@timestamp"], "type": "http", "source": {"ip": "10.1.2.3"},
                   "tags": ["mirror", "lab"]}
    with pytest.raises(ConfigError, match=r"'processors\[0\]\.drop_fields\.fields\[1\]': @timestamp cannot"):
        compile_processors([{"drop_fields": {"fields": ["a", "@timestamp"]}}])


def test_rename_moves_and_rolls_back_on_failure():
    doc = _run([{"rename": {"fields": [{"from": "source.mac", "to": "host.mac"}]}}])
    assert doc["host"] == {"mac": "02-00-00-00-00-0A"} and "mac" not in doc["source"]
    # second move fails (target exists): the first is undone, as fail_on_error says
    doc = _run([{"rename": {"fields": [{"from": "source.mac", "to": "host.mac"},
                                       {"from": "url", "to": "type"}]}}])
    assert doc["source"]["mac"] == "02-00-00-00-00-0A" and "host" not in doc
    doc = _run([{"rename": {"ignore_missing": True, "fields": [{"from": "nope", "to": "x"}]}}])
    assert "x" not in doc


def test_add_fields_and_tags_with_when():
    items = [{"add_tags": {"tags": ["watched"], "when": {"network": {"source.ip": "10.0.0.0/8"}}}},
             {"add_fields": {"target": "site", "fields": {"name": "lab-1"},
                             "when": {"equals": {"type": "dns"}}}}]
    doc = _run(items)
    assert doc["tags"] == ["mirror", "lab", "watched"] and "site" not in doc


def test_unknown_processor_setting_is_named():
    with pytest.raises(ConfigError, match=r"unknown config key 'processors\[0\]\.lookup\.colums'"):
        compile_processors([{"lookup": {"field": "a", "table": "t.csv", "key": "k", "target": "t",
                                        "colums": ["x"]}}])


# -- lookup tables -------------------------------------------------------------------------

COMPUTERS = "macaddr,name,empkey\n02:00:00:00:00:0a,ws-alice,e1\n02-00-00-00-00-0B,ws-bob,e2\n"


def _lookup(tmp_path: Path, table: str, text: str, field: str, key: str, **extra):
    path = tmp_path / table
    path.write_text(text)
    items = [{"lookup": {"field": field, "table": table, "key": key, "target": "found", **extra}}]
    return compile_processors(items, ctx=Context(base_dir=str(tmp_path)))


@pytest.mark.parametrize("spelling", ["02:00:00:00:00:0A", "02-00-00-00-00-0a", "0200.0000.000a",
                                      "02000000000A"])
def test_mac_addresses_match_in_any_spelling(tmp_path, spelling):
    chain = _lookup(tmp_path, "computers.csv", COMPUTERS, "source.mac", "macaddr")
    doc = {"source": {"mac": spelling}}
    chain.run(doc)
    assert doc["found"]["name"] == "ws-alice"


def test_ips_match_by_value_and_networks_by_longest_prefix(tmp_path):
    chain = _lookup(tmp_path, "hosts.jsonl", '{"ip": "2001:db8::1", "name": "v6"}\n'
                    '{"ip": "10.0.0.1", "name": "v4"}\n', "source.ip", "ip")
    for ip, name in (("2001:0db8:0::0001", "v6"), ("10.0.0.1", "v4")):
        doc = {"source": {"ip": ip}}
        chain.run(doc)
        assert doc["found"]["name"] == name
    chain = _lookup(tmp_path, "nets.yml", "- {net: 10.0.0.0/8, zone: corp}\n- {net: 10.9.0.0/16, zone: lab}\n",
                    "source.ip", "net", match="network")
    for ip, zone in (("10.9.1.1", "lab"), ("10.1.1.1", "corp"), ("11.0.0.1", None)):
        doc = {"source": {"ip": ip}}
        chain.run(doc)
        assert doc.get("found", {}).get("zone") == zone


def test_a_bad_table_at_startup_is_a_config_error_with_the_path(tmp_path):
    with pytest.raises(ConfigError, match=r"'processors\[0\]\.lookup\.table': .*t\.csv: row 1: no 'macaddr' column"):
        _lookup(tmp_path, "t.csv", "mac,name\n1,a\n", "source.mac", "macaddr")
    with pytest.raises(ConfigError, match=r"above max_bytes 10"):
        _lookup(tmp_path, "computers.csv", COMPUTERS, "source.mac", "macaddr", max_bytes=10)
    with pytest.raises(ConfigError, match=r"No such file"):
        compile_processors([{"lookup": {"field": "a", "table": "missing.csv", "key": "k", "target": "t"}}],
                           ctx=Context(base_dir=str(tmp_path)))


def _age(path: Path, seconds: float = 5.0) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def _wait_reloaded(table: Table, reloads: int, errors: int = 0) -> None:
    deadline = time.monotonic() + 10
    while (table.reloads, table.reload_errors) < (reloads, errors) and time.monotonic() < deadline:
        table.find("x")
        time.sleep(0.02)


def test_table_reloads_on_change_and_keeps_the_old_one_when_bad(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("k,v\na,1\n")
    _age(path, 10)
    table = Table(str(path), "k", "exact", 1 << 20, reload_period_s=0.05)
    assert table.find("a") == {"k": "a", "v": "1"}
    path.write_text("k,v\na,2\nb,3\n")
    _age(path)
    _wait_reloaded(table, 1)
    assert table.find("a") == {"k": "a", "v": "2"} and table.find("b") == {"k": "b", "v": "3"}
    path.write_text('k,v\n"a,4\n')          # unterminated quote: a bad version
    path.write_text("k,v\na,1,extra\n")
    _age(path)
    _wait_reloaded(table, 1, 1)
    assert table.reload_errors == 1
    assert table.find("b") == {"k": "b", "v": "3"}      # the previous table stays
    time.sleep(0.2)
    table.find("x")
    assert table.reload_errors == 1                       # one error per bad version, not per check


def test_a_file_modified_just_now_is_not_read_yet(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("k,v\na,1\n")
    _age(path, 10)
    table = Table(str(path), "k", "exact", 1 << 20, reload_period_s=0.01)
    with path.open("a") as fh:
        fh.write("b,")          # a writer in the middle of a line
    time.sleep(0.05)
    table.find("x")
    time.sleep(0.05)
    assert table.find("b") is None and table.reloads == 0
