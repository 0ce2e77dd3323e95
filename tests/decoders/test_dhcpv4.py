"""DHCPv4 decoder: messages built by hand from RFC 2131 (layout), RFC 2132
(options), RFC 3396 (long options) and RFC 3925 (option 125); malformed option
areas; fuzzing.
"""
from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wirebeat.decoders.api import Datagram, DecodeError, FlowKey, Truncated
from wirebeat.decoders.dhcpv4 import DHCPDecoder, decode_message, document

COOKIE = bytes([99, 130, 83, 99])      # RFC 2131 §3: 99.130.83.99
MAC = bytes.fromhex("000b8201fc42")


def ip(text: str) -> bytes:
    return socket.inet_aton(text)


def option(code: int, value: bytes) -> bytes:
    return bytes([code, len(value)]) + value


def message(*options: bytes, op: int = 1, xid: int = 0x3903F326, secs: int = 0,
            flags: int = 0, ciaddr: str = "0.0.0.0", yiaddr: str = "0.0.0.0",
            siaddr: str = "0.0.0.0", giaddr: str = "0.0.0.0", chaddr: bytes = MAC,
            hlen: int = 6, hops: int = 0, sname: bytes = b"", file: bytes = b"",
            end: bool = True, cookie: bytes = COOKIE) -> bytes:
    """RFC 2131 §2 fixed fields (236 bytes), the cookie, options and an end option."""
    fixed = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", op, 1, hlen, hops, xid, secs, flags,
                        ip(ciaddr), ip(yiaddr), ip(siaddr), ip(giaddr), chaddr.ljust(16, b"\0"),
                        sname.ljust(64, b"\0"), file.ljust(128, b"\0"))
    return fixed + cookie + b"".join(options) + (b"\xff" if end else b"")


DISCOVER = message(option(53, b"\x01"), option(55, bytes([1, 3, 6, 15, 119, 252])),
                   option(61, b"\x01" + MAC), option(12, b"laptop"), option(57, b"\x05\xdc"),
                   option(60, b"MSFT 5.0"), option(50, ip("192.168.0.10")), flags=0x8000)
ACK = message(option(53, b"\x05"), option(54, ip("192.168.0.1")),
              option(51, struct.pack("!I", 86400)),
              option(58, struct.pack("!I", 43200)), option(59, struct.pack("!I", 75600)),
              option(1, ip("255.255.255.0")), option(3, ip("192.168.0.1") + ip("192.168.0.2")),
              option(6, ip("192.168.0.1") + ip("9.9.9.9")), option(15, b"example.com"),
              option(28, ip("192.168.0.255")), option(2, struct.pack("!i", -3600)),
              option(4, ip("192.168.0.5")), option(42, ip("192.168.0.6") + ip("192.168.0.7")),
              option(56, b"welcome"),
              option(125, struct.pack("!IB", 3561, 4) + b"\x01\x02ab" + struct.pack("!IB", 9, 0)),
              op=2, yiaddr="192.168.0.10", siaddr="192.168.0.1", sname=b"boot-server",
              file=b"pxelinux.0")

CLIENT_SIDE = FlowKey("udp", "0.0.0.0", 68, "255.255.255.255", 67, "test")
SERVER_SIDE = FlowKey("udp", "192.168.0.1", 67, "192.168.0.10", 68, "test")


def decode_doc(payload: bytes, flow: FlowKey = CLIENT_SIDE, from_client: bool = True):
    [txn] = DHCPDecoder({}).on_datagram(Datagram(7.0, flow, from_client, payload))
    return txn, document(txn)


def test_discover_fields():
    txn, doc = decode_doc(DISCOVER)
    assert txn.status == "OK" and txn.end_ts is None and txn.request_bytes == len(DISCOVER)
    assert doc["dhcpv4"] == {
        "op_code": "bootrequest", "hardware_type": "Ethernet", "hops": 0,
        "transaction_id": "0x3903f326", "seconds": 0, "flags": "broadcast",
        "client_mac": "00-0B-82-01-FC-42",    # ECS form, as packetbeat 8 writes it
        "option": {
            "message_type": "discover",
            "parameter_request_list": ["Subnet Mask", "Router", "Domain Name Server",
                                       "Domain Name", "DNS Domain Search List",
                                       "Private/Proxy autodiscovery"],
            "hostname": "laptop", "max_dhcp_message_size": 1500,
            "class_identifier": "MSFT 5.0", "requested_ip_address": "192.168.0.10",
        },
    }
    # A BOOTREQUEST: the sender is the client.
    assert doc["client"]["ip"] == "0.0.0.0" and doc["server"]["ip"] == "255.255.255.255"


def test_ack_fields():
    _, doc = decode_doc(ACK, SERVER_SIDE)
    dhcp = doc["dhcpv4"]
    assert (dhcp["op_code"], dhcp["flags"], dhcp["assigned_ip"], dhcp["server_ip"]) == (
        "bootreply", "unicast", "192.168.0.10", "192.168.0.1")
    assert (dhcp["server_name"], dhcp["boot_file_name"]) == ("boot-server", "pxelinux.0")
    assert "client_ip" not in dhcp and "relay_ip" not in dhcp
    assert dhcp["option"] == {
        "message_type": "ack", "server_identifier": "192.168.0.1",
        "ip_address_lease_time_sec": 86400, "renewal_time_sec": 43200,
        "rebinding_time_sec": 75600, "subnet_mask": "255.255.255.0",
        "router": "192.168.0.1", "dns_servers": ["192.168.0.1", "9.9.9.9"],
        "domain_name": "example.com", "broadcast_address": "192.168.0.255",
        "utc_time_offset_sec": -3600, "time_servers": ["192.168.0.5"],
        "ntp_servers": ["192.168.0.6", "192.168.0.7"], "message": "welcome",
        "vendor_identifying_options": [{"id": 3561, "data": "01026162"}, {"id": 9, "data": ""}],
    }


def test_bootreply_client_is_the_destination_and_server_the_source():
    txn, doc = decode_doc(ACK, SERVER_SIDE)
    assert doc["client"]["ip"] == "192.168.0.10" and doc["client"]["port"] == 68
    assert doc["server"] == {"ip": "192.168.0.1", "port": 67, "bytes": len(ACK)}
    assert txn.flow == SERVER_SIDE          # source/destination: the packet's own direction
    assert doc["related"]["ip"] == ["192.168.0.1", "192.168.0.10"]


def test_packet_against_the_flow_direction_keeps_its_own_source():
    release = message(option(53, b"\x07"), ciaddr="192.168.0.10")
    flow = FlowKey("udp", "192.168.0.1", 67, "192.168.0.10", 68, "test")  # first seen: the ACK
    txn, doc = decode_doc(release, flow, from_client=False)
    assert (txn.flow.client_ip, txn.flow.server_ip) == ("192.168.0.10", "192.168.0.1")
    assert doc["dhcpv4"]["client_ip"] == "192.168.0.10"
    assert doc["dhcpv4"]["option"]["message_type"] == "release"


def test_relay_and_hops():
    _, doc = decode_doc(message(option(53, b"\x03"), giaddr="10.0.0.1", hops=1))
    assert doc["dhcpv4"]["relay_ip"] == "10.0.0.1" and doc["dhcpv4"]["hops"] == 1
    assert "10.0.0.1" in doc["related"]["ip"]


@pytest.mark.parametrize("number,name", [(1, "discover"), (2, "offer"), (3, "request"),
                                         (4, "decline"), (5, "ack"), (6, "nak"),
                                         (7, "release"), (8, "inform")])
def test_message_type_names(number, name):
    _, doc = decode_doc(message(option(53, bytes([number]))))
    assert doc["dhcpv4"]["option"]["message_type"] == name


def test_split_option_is_concatenated_as_rfc_3396_says():
    payload = message(option(6, ip("10.0.0.1")), option(53, b"\x05"), option(6, ip("10.0.0.2")))
    _, doc = decode_doc(payload)
    assert doc["dhcpv4"]["option"]["dns_servers"] == ["10.0.0.1", "10.0.0.2"]


def test_pads_are_skipped():
    _, doc = decode_doc(message(b"\0\0\0", option(53, b"\x01"), b"\0"))
    assert doc["dhcpv4"]["option"] == {"message_type": "discover"}


# -- malformed ------------------------------------------------------------------------

def test_shorter_than_the_fixed_header_is_truncated():
    with pytest.raises(Truncated) as err:
        decode_message(DISCOVER[:239])
    assert err.value.reason == "dhcpv4.truncated"


def test_wrong_magic_cookie_is_not_dhcp():
    with pytest.raises(DecodeError) as err:
        decode_message(message(option(53, b"\x01"), cookie=b"\0\0\0\0"))
    assert err.value.reason == "dhcpv4.bad_magic_cookie"


def test_option_length_past_the_end_keeps_earlier_options_with_a_note():
    payload = message(option(53, b"\x01"), b"\x0c\x20abc", end=False)
    txn, doc = decode_doc(payload)
    assert doc["dhcpv4"]["option"] == {"message_type": "discover"}
    assert txn.notes == ("dhcpv4.option_overruns_options",)


def test_option_code_as_the_last_byte_is_a_note():
    txn, _ = decode_doc(message(option(53, b"\x01"), b"\x0c", end=False))
    assert txn.notes == ("dhcpv4.option_overruns_options",)


def test_missing_end_option_is_a_note():
    txn, doc = decode_doc(message(option(53, b"\x01"), end=False))
    assert doc["dhcpv4"]["option"]["message_type"] == "discover"
    assert txn.notes == ("dhcpv4.missing_end_option_in_options",)


def test_overloaded_file_and_sname_hold_options_and_are_not_names():
    # RFC 2131 §4.1: with option 52 = 3, options continue in `file`, then `sname`.
    payload = message(option(53, b"\x05"), option(52, b"\x03"), op=2,
                      file=option(1, ip("255.255.0.0")) + b"\xff",
                      sname=option(15, b"lan") + b"\xff")
    txn, doc = decode_doc(payload, SERVER_SIDE)
    dhcp = doc["dhcpv4"]
    assert dhcp["option"]["subnet_mask"] == "255.255.0.0" and dhcp["option"]["domain_name"] == "lan"
    assert "server_name" not in dhcp and "boot_file_name" not in dhcp
    assert txn.notes == ()


def test_overloaded_field_without_end_option_is_a_note():
    payload = message(option(53, b"\x05"), option(52, b"\x02"), op=2,
                      sname=option(15, b"lan") + b"\x0c\x40x")
    txn, doc = decode_doc(payload, SERVER_SIDE)
    assert doc["dhcpv4"]["option"]["domain_name"] == "lan"
    assert txn.notes == ("dhcpv4.option_overruns_sname",)


def test_bad_overload_value_is_a_note():
    txn, _ = decode_doc(message(option(52, b"\x07")))
    assert txn.notes == ("dhcpv4.bad_option_overload",)


def test_option_value_of_the_wrong_size_is_left_out_with_a_note():
    txn, doc = decode_doc(message(option(53, b"\x01"), option(1, b"\xff\xff\xff")))
    assert "subnet_mask" not in doc["dhcpv4"]["option"]
    assert txn.notes == ("dhcpv4.option_1_malformed",)


def test_hardware_length_over_16_is_capped_with_a_note():
    txn, doc = decode_doc(message(option(53, b"\x01"), hlen=200, chaddr=bytes(range(16))))
    assert doc["dhcpv4"]["client_mac"] == "00-01-02-03-04-05-06-07-08-09-0A-0B-0C-0D-0E-0F"
    assert txn.notes == ("dhcpv4.bad_hardware_length",)


# -- fuzzing -------------------------------------------------------------------------------

def _exercise(payload: bytes) -> None:
    try:
        [txn] = DHCPDecoder({}).on_datagram(Datagram(1.0, CLIENT_SIDE, True, payload))
    except DecodeError:
        return
    document(txn)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=700))
def test_random_bytes_parse_or_raise_decode_error(payload: bytes) -> None:
    _exercise(payload)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=400))
def test_random_option_areas_never_raise(options: bytes) -> None:
    _exercise(message(options, end=False))
    _exercise(message(option(52, b"\x03"), end=True, file=options[:128], sname=options[128:192]))


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([DISCOVER, ACK]),
       st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=10),
       st.integers(0, 700))
def test_mutated_messages_parse_or_raise_decode_error(base: bytes, flips, cut: int) -> None:
    data = bytearray(base)
    for position, value in flips:
        data[236 + position % (len(data) - 236)] = value     # mostly into the options
    _exercise(bytes(data[:cut]) if cut < len(data) else bytes(data))
