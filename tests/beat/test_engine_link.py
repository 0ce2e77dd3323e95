"""Engine._link_of: a transaction's MACs and link layers from its conversation's latest
frame (`macs`), with the C look-up (`_speedups.link_seen`) held to the Python one."""
from __future__ import annotations

import os
import socket

import pytest

from wirebeat import engine
from wirebeat.accel import speedups
from wirebeat.decoders.api import FlowKey

needs_c = pytest.mark.skipif(speedups is None and os.environ.get("CI") != "true",
                             reason="C accelerator not built or turned off (a failure under CI=true)")

CLIENT_MAC, SERVER_MAC = bytes.fromhex("02c100000001"), bytes.fromhex("02ee00000001")


def _packed(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6 if ":" in text else socket.AF_INET, text)


def _ethernet_seen(destination: bytes, source: bytes, ethertype: int = 0x0800) -> bytes:
    """A `macs` value: link type 1 (4 bytes) + the Ethernet header + the IP header's first byte."""
    return (1).to_bytes(4, "big") + destination + source + ethertype.to_bytes(2, "big") + b"\x45"


def _macs() -> dict[bytes, bytes]:
    return {
        # 10.0.0.1 -> 198.51.100.7 sent by the client; 198.51.100.9 -> 10.0.0.1 by a server only
        _packed("10.0.0.1") + _packed("198.51.100.7"): _ethernet_seen(SERVER_MAC, CLIENT_MAC),
        _packed("198.51.100.7") + _packed("10.0.0.1"): _ethernet_seen(CLIENT_MAC, SERVER_MAC),
        _packed("198.51.100.9") + _packed("10.0.0.1"): _ethernet_seen(CLIENT_MAC, SERVER_MAC),
        _packed("2001:db8::1") + _packed("2001:db8::53"): _ethernet_seen(SERVER_MAC, CLIENT_MAC, 0x86DD),
        # a Linux cooked capture's conversation: no MACs
        _packed("10.0.0.2") + _packed("10.0.0.3"): (113).to_bytes(4, "big") + bytes(16) + b"\x45",
    }


PAIRS = [("10.0.0.1", "198.51.100.7"), ("10.0.0.1", "198.51.100.9"), ("198.51.100.9", "10.0.0.1"),
         ("2001:db8::1", "2001:db8::53"), ("2001:db8::53", "2001:db8::1"), ("10.0.0.2", "10.0.0.3"),
         ("10.0.0.1", "10.0.0.99"), ("::ffff:10.0.0.1", "198.51.100.7"), ("10.0.0.1", "not an address"),
         ("", "198.51.100.7"), ("10.0.0.01", "198.51.100.7"), ("2001:db8::1%eth0", "2001:db8::53"),
         ("10.0.0.1", "1.2.3.4.5"), ("é", "10.0.0.1")]


@needs_c
@pytest.mark.parametrize("client, server", PAIRS)
def test_c_look_up_answers_as_the_python_one(client: str, server: str) -> None:
    macs = _macs()
    assert speedups.link_seen(macs, client, server) == engine._link_seen_python(macs, client, server)


@needs_c
def test_c_look_up_raises_where_the_python_one_raises() -> None:
    for client in ("10.0.0.1\0", "\udc80"):
        with pytest.raises(Exception) as c_error:
            speedups.link_seen(_macs(), client, "198.51.100.7")
        with pytest.raises(Exception) as python_error:
            engine._link_seen_python(_macs(), client, "198.51.100.7")
        assert c_error.type is python_error.type


def test_the_clients_latest_frame_is_preferred_and_gives_the_macs_in_client_server_order() -> None:
    pair, link = engine._link_of(_macs(), FlowKey("icmp", "10.0.0.1", 8, "198.51.100.7", 0))
    assert pair == (CLIENT_MAC, SERVER_MAC) and link[0].startswith("eth")
    # only the server's frame remembered: the same order from the other side
    pair, _link = engine._link_of(_macs(), FlowKey("udp", "10.0.0.1", 53000, "198.51.100.9", 53))
    assert pair == (CLIENT_MAC, SERVER_MAC)
    pair, _link = engine._link_of(_macs(), FlowKey("udp", "198.51.100.9", 53, "10.0.0.1", 53000))
    assert pair == (SERVER_MAC, CLIENT_MAC)


def test_no_macs_without_ethernet_and_nothing_for_an_unknown_conversation() -> None:
    pair, link = engine._link_of(_macs(), FlowKey("udp", "10.0.0.2", 1, "10.0.0.3", 2))
    assert pair is None and link[0]
    assert engine._link_of(_macs(), FlowKey("udp", "10.0.0.1", 1, "10.0.0.99", 2)) is None
    assert engine._link_of(_macs(), FlowKey("udp", "10.0.0.1", 1, "no address", 2)) is None


# Dotted decimal the C side packs itself (_iptext.h dotted_pack), and texts next to it
# that only inet_pton decides (leading zeros, a part past 255, too few or many parts ...).
DOTTED = ["10.0.0.1", "0.0.0.0", "255.255.255.255", "1.2.3.4", "192.168.100.200", "10.0.0.01",
          "010.0.0.1", "1.2.3.256", "1.2.3.999", "1.2.3", "1.2.3.4.", ".1.2.3.4", "1..2.3", "1.2.3.4 ",
          " 1.2.3.4", "1.2.3.4a", "1234.1.1.1", "1.2.3.1000", "1.2.3.-4", "1.2.3.+4", "00.1.2.3",
          "1.2.3.0", "9.99.199.249", "1,2,3,4", "1.2.3.4/24", "１.2.3.4"]


def _careless(text: str) -> bytes | None:
    """Four numbers between dots, leading zeros, signs, spaces and all, each modulo 256."""
    try:
        parts = [int(part) % 256 for part in text.split(".")]
    except ValueError:
        return None
    return bytes(parts) if len(parts) == 4 else None


@needs_c
@pytest.mark.parametrize("text", DOTTED)
def test_c_packs_dotted_decimal_as_inet_pton_does(text: str) -> None:
    try:
        packed = socket.inet_pton(socket.AF_INET, text)
    except OSError:
        packed = None
    seen = _ethernet_seen(SERVER_MAC, CLIENT_MAC)
    # A text inet_pton refuses still has a key under what a careless parser would make of it.
    key = packed if packed is not None else _careless(text)
    macs = {} if key is None else {key + _packed("198.51.100.7"): seen}
    found = speedups.link_seen(macs, text, "198.51.100.7")
    assert found == engine._link_seen_python(macs, text, "198.51.100.7")
    assert found == (None if packed is None else (seen, True))
