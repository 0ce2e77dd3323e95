"""The Public Suffix List's ACE rules, parsed at the first "xn--" name, after a user switch.

decoders/dns_suffixes.py reads the list's text before the switch (DNS's lazy_imports)
and parses the ACE (punycode) forms of its Unicode rules only when a name needs them:
that parse must work as the unprivileged user too (no file to read then; the idna and
punycode codecs imported before the switch). tests/decoders/test_dns_names.py holds the
split lists to the full one.
"""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

import pcapgen as pg
from test_startup import _documents_as_nobody


def _dns_capture(path: Path, name: str) -> Path:
    wire = b"".join(bytes((len(label),)) + label.encode() for label in name.split(".")) + b"\0"
    question = wire + struct.pack("!HH", 1, 1)
    query = struct.pack("!HHHHHH", 7, 0x0100, 1, 0, 0, 0) + question
    answer = struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + bytes((192, 0, 2, 7))
    response = struct.pack("!HHHHHH", 7, 0x8180, 1, 1, 0, 0) + question + answer
    client, server = "10.0.0.1", "10.0.0.53"
    frames = [(1_700_000_000.0, pg.ethernet(pg.ipv4(client, server, pg.IPPROTO_UDP,
                                                    pg.udp(client, server, 40000, 53, query)))),
              (1_700_000_000.01, pg.ethernet(pg.ipv4(server, client, pg.IPPROTO_UDP,
                                                     pg.udp(server, client, 53, 40000, response))))]
    pg.write_pcap(path, frames)
    return path


@pytest.mark.root
def test_ace_rules_load_after_a_user_switch(tmp_path: Path) -> None:
    # 个人.hk is a public suffix; its ACE form is xn--ciqpn.hk (RFC 3492 punycode of 个人).
    tmp_path.chmod(0o755)
    docs = _documents_as_nobody(_dns_capture(tmp_path / "ace.pcap", "shop.xn--ciqpn.hk"))
    assert len(docs) == 1
    question = docs[0]["dns"]["question"]
    assert question["registered_domain"] == "shop.xn--ciqpn.hk"
    assert question["top_level_domain"] == "xn--ciqpn.hk"
