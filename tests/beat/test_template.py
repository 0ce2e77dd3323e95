"""Every field a document carries is mapped explicitly in the index template.

The template is `dynamic: false`, so an unmapped field would be stored but
not searchable: this test decodes every bundled capture and fails on any
field path the template lacks.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from wirebeat.registry import discover
from wirebeat.template import build_template
from conftest import PCAPS, decode_file

DYNAMIC_ROOTS = {"fields", "labels"}     # user-supplied by add_fields: dynamic on purpose


def _properties() -> dict:
    template = build_template([r.spec for r in discover()], "wirebeat-*")
    return template["template"]["mappings"]["properties"]


def _leaf_paths(doc: dict, prefix: str = "") -> list[str]:
    paths = []
    for key, value in doc.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            paths += _leaf_paths(value, path + ".")
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for item in value:
                paths += _leaf_paths(item, path + ".")
        else:
            paths.append(path)
    return paths


def _mapped(properties: dict, path: str) -> bool:
    node: dict = {"properties": properties}
    for part in path.split("."):
        props = node.get("properties")
        if props is None or part not in props:
            # Flattened or object-typed fields hold arbitrary keys below them.
            return node.get("type") in ("flattened", "object") and "properties" not in node
        node = props[part]
    return "type" in node or "properties" in node


CAPTURES = sorted(p for p in PCAPS.rglob("*") if p.suffix in (".pcap", ".pcapng"))


@pytest.mark.parametrize("capture", CAPTURES, ids=[str(p.relative_to(PCAPS)) for p in CAPTURES])
def test_every_emitted_field_is_mapped(capture: Path):
    properties = _properties()
    docs = decode_file(capture, flows=True)
    missing = sorted({path for doc in docs for path in _leaf_paths(doc)
                      if path.split(".")[0] not in DYNAMIC_ROOTS and not _mapped(properties, path)})
    assert missing == []


def test_the_checker_itself_notices_an_unmapped_field():
    assert not _mapped(_properties(), "icmp.request.no_such_field")
    assert _mapped(_properties(), "icmp.request.type")


@pytest.mark.parametrize("capture", [PCAPS / "watchlist" / "office.pcap", PCAPS / "icmp" / "ping.pcap",
                                     PCAPS / "tunnels" / "vxlan.pcap"],
                         ids=["watchlist/office.pcap", "icmp/ping.pcap", "tunnels/vxlan.pcap"])
def test_every_field_of_per_packet_documents_is_mapped(capture: Path):
    properties = _properties()
    docs = decode_file(capture, "wirebeat.packets.enabled=true")
    assert any(d["event"]["dataset"] == "packet" for d in docs)
    missing = sorted({path for doc in docs for path in _leaf_paths(doc)
                      if not _mapped(properties, path)})
    assert missing == []


def test_lookup_targets_are_mapped_flattened():
    template = build_template([], "x-*", flattened=["employee", "asset.owner"])
    properties = template["template"]["mappings"]["properties"]
    assert properties["employee"] == {"type": "flattened"}
    assert properties["asset"]["properties"]["owner"] == {"type": "flattened"}
    assert _mapped(properties, "employee.name")
