"""IPFIX subTemplateList (RFC 6313) decoding checked against tshark's IPFIX dissector.

The message is generated with its content known by construction
(tests/decoders/test_netflow.py::_sub_template_exports); tshark is the
independent reader of the same capture file. tshark 4.0 decodes
subTemplateList items, not subTemplateMultiList ones: those are checked by
construction only.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pcapgen as g
from conftest import decode_file
from running import require

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "decoders"))
from test_netflow import _sub_template_exports  # noqa: E402


def _tshark_lists(path: Path) -> list[list[dict]]:
    """Per flow record: the items of its top-level subTemplateList as tshark shows them."""
    out = subprocess.run(["tshark", "-n", "-r", str(path), "-d", "udp.port==2055,cflow", "-T", "json"],
                         capture_output=True, check=True).stdout
    [packet] = json.loads(out)
    sets = [v for k, v in packet["_source"]["layers"]["cflow"].items() if k.startswith("Set ")]
    flows = [v for s in sets for k, v in s.items() if k.startswith("Flow ")]
    lists = []
    for flow in flows:
        stl = flow["cflow.subtemplate_list"]
        items = [v for k, v in stl.items() if k.startswith("List Item")]
        lists.append([{"source_ipv4_address": i["cflow.srcaddr"], "destination_transport_port": int(i["cflow.dstport"])}
                      for i in items])
    return lists


def test_sub_template_lists_agree_with_tshark(tmp_path: Path) -> None:
    require(shutil.which("tshark") is not None, "the tshark command")
    message, _expected = _sub_template_exports()
    path = tmp_path / "ipfix_lists.pcap"
    packet = g.ipv4("192.0.2.10", "192.0.2.1", 17, g.udp("192.0.2.10", "192.0.2.1", 40000, 2055, message))
    g.write_pcap(path, [(1_700_000_000.0, packet)], linktype=101)
    docs = [d for d in decode_file(path) if d["event"]["dataset"] == "netflow"]
    theirs = _tshark_lists(path)
    assert len(docs) == len(theirs) == 4
    # Records 1 and 4 are well formed: the same items (two, and none).
    for index in (0, 3):
        assert docs[index]["netflow"]["sub_template_list"] == theirs[index]
    assert len(theirs[0]) == 2
    # Record 2 names a template never sent, record 3's item is a byte short: kept as hex here.
    for index in (1, 2):
        assert "sub_template_list" not in docs[index]["netflow"]
        assert any(u.startswith("292:") for u in docs[index]["netflow"]["unknown_fields"])
