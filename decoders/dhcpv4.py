"""DHCPv4 (RFC 2131; options RFC 2132, RFC 3396, RFC 3925), as packetbeat reports it.

One document per DHCP message, as packetbeat does: there is no request/response
pairing, `dhcpv4.transaction_id` ties a client's messages to the server's in
Kibana. Status is always OK. `source`/`destination` are the packet's own
endpoints; `client`/`server` are the DHCP roles: for a BOOTREPLY the client is
the destination, otherwise the source.

Options: every option is read (pads skipped, repeated options concatenated as
RFC 3396 says), including options overloaded into the `file` and `sname`
fields (option 52); the packetbeat fields below are filled from them. An option
whose length runs past the end, a missing end option, an overload pointing at a
field without an end option, or an option value of the wrong size become notes
(error.message); only a message shorter than the fixed header or without the
DHCP magic cookie is rejected (`DecodeError`, reasons "dhcpv4.*"). Not decoded:
option 82 and vendor-specific option 43 contents.
"""
from __future__ import annotations

import socket
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from wirebeat.decoders.api import (Datagram, DecodeError, DecoderSpec, Transaction, Truncated,
                                    format_mac)

__all__ = ["DECODER", "DHCPDecoder", "DHCPMessage", "decode_message", "document"]

MAGIC_COOKIE = b"\x63\x82\x53\x63"       # RFC 2131 §3
_FIXED = struct.Struct("!BBBBIHH4s4s4s4s16s64s128s")   # 236 bytes, RFC 2131 §2
OPTIONS_OFFSET = _FIXED.size + len(MAGIC_COOKIE)

OP_NAMES = {1: "bootrequest", 2: "bootreply"}
BOOTREPLY = 2
HARDWARE_TYPE_NAMES = {   # IANA ARP hardware types, as packetbeat names them
    1: "Ethernet", 2: "Experimental Ethernet", 3: "Amateur Radio AX.25",
    4: "Proteon ProNET Token Ring", 5: "Chaos", 6: "IEEE 802", 7: "ARCNET",
    8: "Hyperchannel", 9: "Lanstar", 10: "Autonet Short Address", 11: "LocalTalk",
    12: "LocalNet", 13: "Ultra link", 14: "SMDS", 15: "Frame Relay", 16: "ATM",
    17: "HDLC", 18: "Fibre Channel", 19: "ATM", 20: "Serial Line", 21: "ATM",
    22: "MIL-STD-188-220", 23: "Metricom", 24: "IEEE 1394.1995", 25: "MAPOS",
    26: "Twinaxial", 27: "EUI-64", 28: "HIPARP", 29: "IP and ARP over ISO 7816-3",
    30: "ARPSec", 31: "IPsec tunnel", 32: "InfiniBand", 33: "TIA-102 Project 25 CAI",
    34: "Wiegand Interface", 35: "Pure IP",
}
MESSAGE_TYPE_NAMES = {
    1: "discover", 2: "offer", 3: "request", 4: "decline", 5: "ack", 6: "nak",
    7: "release", 8: "inform", 9: "forcerenew", 10: "leasequery", 11: "leaseunassigned",
    12: "leaseunknown", 13: "leaseactive", 14: "bulkleasequery", 15: "leasequerydone",
    16: "activeleasequery", 17: "leasequerystatus", 18: "tls",
}
# Option names for parameter_request_list, spelled as packetbeat's DHCP library does.
OPTION_NAMES = {
    0: "Pad", 1: "Subnet Mask", 2: "Time Offset", 3: "Router", 4: "Time Server",
    5: "Name Server", 6: "Domain Name Server", 7: "Log Server", 8: "Quote Server",
    9: "LPR Server", 10: "Impress Server", 11: "Resource Location Server",
    12: "Host Name", 13: "Boot File Size", 14: "Merit Dump File", 15: "Domain Name",
    16: "Swap Server", 17: "Root Path", 18: "Extensions Path",
    19: "IP Forwarding enable/disable", 20: "Non-local Source Routing enable/disable",
    21: "Policy Filter", 22: "Maximum Datagram Reassembly Size",
    23: "Default IP Time-to-live", 24: "Path MTU Aging Timeout",
    25: "Path MTU Plateau Table", 26: "Interface MTU", 27: "All Subnets Are Local",
    28: "Broadcast Address", 29: "Perform Mask Discovery", 30: "Mask Supplier",
    31: "Perform Router Discovery", 32: "Router Solicitation Address",
    33: "Static Routing Table", 34: "Trailer Encapsulation", 35: "ARP Cache Timeout",
    36: "Ethernet Encapsulation", 37: "Default TCP TTL", 38: "TCP Keepalive Interval",
    39: "TCP Keepalive Garbage", 40: "Network Information Service Domain",
    41: "Network Information Servers", 42: "NTP Servers",
    43: "Vendor Specific Information", 44: "NetBIOS over TCP/IP Name Server",
    45: "NetBIOS over TCP/IP Datagram Distribution Server",
    46: "NetBIOS over TCP/IP Node Type", 47: "NetBIOS over TCP/IP Scope",
    48: "X Window System Font Server", 49: "X Window System Display Manager",
    50: "Requested IP Address", 51: "IP Addresses Lease Time", 52: "Option Overload",
    53: "DHCP Message Type", 54: "Server Identifier", 55: "Parameter Request List",
    56: "Message", 57: "Maximum DHCP Message Size", 58: "Renew Time Value",
    59: "Rebinding Time Value", 60: "Class Identifier", 61: "Client identifier",
    62: "NetWare/IP Domain Name", 63: "NetWare/IP Information",
    64: "Network Information Service+ Domain", 65: "Network Information Service+ Servers",
    66: "TFTP Server Name", 67: "Bootfile Name", 68: "Mobile IP Home Agent",
    69: "SMTP Server", 70: "POP Server", 71: "NNTP Server", 72: "Default WWW Server",
    73: "Default Finger Server", 74: "Default IRC Server", 75: "StreetTalk Server",
    76: "StreetTalk Directory Assistance Server", 77: "User Class Information",
    78: "SLP DIrectory Agent", 79: "SLP Service Scope", 80: "Rapid Commit", 81: "FQDN",
    82: "Relay Agent Information", 83: "Internet Storage Name Service",
    85: "NDS Servers", 86: "NDS Tree Name", 87: "NDS Context",
    88: "BCMCS Controller Domain Name List", 89: "BCMCS Controller IPv4 Address List",
    90: "Authentication", 91: "Client Last Transaction Time", 92: "Associated IP",
    93: "Client System Architecture Type", 94: "Client Network Interface Identifier",
    95: "LDAP", 97: "Client Machine Identifier", 98: "OpenGroup's User Authentication",
    99: "GEOCONF_CIVIC", 100: "IEEE 1003.1 TZ String", 101: "Reference to the TZ Database",
    108: "Number of seconds that DHCPv4 should be disabled",
    112: "NetInfo Parent Server Address", 113: "NetInfo Parent Server Tag", 114: "URL",
    116: "Auto-Configure", 117: "Name Service Search", 118: "Subnet Selection",
    119: "DNS Domain Search List", 120: "SIP Servers", 121: "Classless Static Route",
    122: "CCC, CableLabs Client Configuration", 123: "GeoConf",
    124: "Vendor-Identifying Vendor Class", 125: "Vendor-Identifying Vendor-Specific",
    150: "TFTP Server Address", 175: "Etherboot", 176: "IP Telephone",
    208: "PXELinux Magic String", 209: "PXELinux Config File",
    210: "PXELinux Path Prefix", 211: "PXELinux Reboot Time", 212: "OPTION_6RD",
    249: "Private/Classless Static Route (Microsoft)", 252: "Private/Proxy autodiscovery",
    255: "End",
}

_OPT_PAD, _OPT_END, _OPT_OVERLOAD = 0, 255, 52


@dataclass(frozen=True, slots=True)
class DHCPMessage:
    """One DHCP message as on the wire (RFC 2131 section 2), options decoded."""

    op: int                   # 1 BOOTREQUEST, 2 BOOTREPLY
    hardware_type: int        # htype
    hardware_length: int      # hlen
    hops: int
    transaction_id: int       # xid
    seconds: int              # secs
    flags: int
    client_ip: str            # ciaddr
    your_ip: str              # yiaddr
    server_ip: str            # siaddr
    relay_ip: str             # giaddr
    client_hardware: bytes    # chaddr (16 bytes)
    server_name: str          # sname, when not overloaded with options
    boot_file_name: str       # file, when not overloaded with options
    options: Mapping[int, bytes] = field(default_factory=dict)   # code -> value (RFC 3396 joined)
    option_order: tuple[int, ...] = ()
    length: int = 0
    notes: tuple[str, ...] = ()

    @property
    def client_mac(self) -> str:
        return format_mac(self.client_hardware[:min(self.hardware_length, 16)])

    @property
    def message_type(self) -> int | None:
        value = self.options.get(53)
        return value[0] if value and len(value) == 1 else None


def _ip(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, raw)


def _c_string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _read_options(area: bytes, where: str, values: dict[int, bytearray], order: list[int],
                  notes: list[str]) -> None:
    """Read one option area into `values`; problems become notes, nothing raises."""
    pos = 0
    while pos < len(area):
        code = area[pos]
        if code == _OPT_PAD:
            pos += 1
            continue
        if code == _OPT_END:
            return
        if pos + 1 >= len(area):
            notes.append(f"dhcpv4.option_overruns_{where}")
            return
        length = area[pos + 1]
        if pos + 2 + length > len(area):
            notes.append(f"dhcpv4.option_overruns_{where}")
            return
        if code not in values:
            values[code] = bytearray()
            order.append(code)
        values[code] += area[pos + 2:pos + 2 + length]    # RFC 3396: repeats concatenate
        pos += 2 + length
    notes.append(f"dhcpv4.missing_end_option_in_{where}")


def decode_message(payload: bytes) -> DHCPMessage:
    """Parse one DHCP message.

    Raises Truncated ("dhcpv4.truncated") when the fixed header or the magic
    cookie is cut short, DecodeError ("dhcpv4.bad_magic_cookie") when the
    options do not start with the DHCP cookie. Everything else is a note.
    """
    data = bytes(payload)
    if len(data) < OPTIONS_OFFSET:
        raise Truncated("dhcpv4.truncated", len(data))
    (op, htype, hlen, hops, xid, secs, flags, ciaddr, yiaddr, siaddr, giaddr, chaddr,
     sname, bootfile) = _FIXED.unpack_from(data)
    if data[_FIXED.size:OPTIONS_OFFSET] != MAGIC_COOKIE:
        raise DecodeError("dhcpv4.bad_magic_cookie", _FIXED.size)
    notes: list[str] = []
    values: dict[int, bytearray] = {}
    order: list[int] = []
    _read_options(data[OPTIONS_OFFSET:], "options", values, order, notes)
    overload = values.get(_OPT_OVERLOAD)
    overload_value = overload[0] if overload is not None and len(overload) == 1 else 0
    if overload is not None and overload_value not in (1, 2, 3):
        notes.append("dhcpv4.bad_option_overload")
    # RFC 2131 §4.1: options continue in `file`, then in `sname`.
    file_has_options = overload_value in (1, 3)
    sname_has_options = overload_value in (2, 3)
    if file_has_options:
        _read_options(bootfile, "file", values, order, notes)
    if sname_has_options:
        _read_options(sname, "sname", values, order, notes)
    if hlen > 16:
        notes.append("dhcpv4.bad_hardware_length")
    return DHCPMessage(
        op=op, hardware_type=htype, hardware_length=hlen, hops=hops, transaction_id=xid,
        seconds=secs, flags=flags, client_ip=_ip(ciaddr), your_ip=_ip(yiaddr),
        server_ip=_ip(siaddr), relay_ip=_ip(giaddr), client_hardware=chaddr,
        server_name="" if sname_has_options else _c_string(sname),
        boot_file_name="" if file_has_options else _c_string(bootfile),
        options={code: bytes(value) for code, value in values.items()},
        option_order=tuple(order), length=len(data), notes=tuple(dict.fromkeys(notes)),
    )


# -- options to fields ---------------------------------------------------------------

def _one_ip(raw: bytes) -> str:
    if len(raw) != 4:
        raise ValueError
    return _ip(raw)


def _ip_list(raw: bytes) -> list[str]:
    if not raw or len(raw) % 4:
        raise ValueError
    return [_ip(raw[i:i + 4]) for i in range(0, len(raw), 4)]


def _u32(raw: bytes) -> int:
    if len(raw) != 4:
        raise ValueError
    return int.from_bytes(raw, "big")


def _s32(raw: bytes) -> int:
    if len(raw) != 4:
        raise ValueError
    return int.from_bytes(raw, "big", signed=True)


def _u16(raw: bytes) -> int:
    if len(raw) != 2:
        raise ValueError
    return int.from_bytes(raw, "big")


def _text(raw: bytes) -> str:
    # Some clients count a trailing NUL in the length; it is not part of the text.
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def _message_type(raw: bytes) -> str:
    if len(raw) != 1:
        raise ValueError
    return MESSAGE_TYPE_NAMES.get(raw[0], f"unknown ({raw[0]})")


def _parameter_names(raw: bytes) -> list[str]:
    return [OPTION_NAMES.get(code, f"Unknown ({code})") for code in raw]


def _vendor_identifying(raw: bytes) -> list[dict[str, Any]]:
    """RFC 3925 §4: (enterprise number, data length, data) repeated."""
    out = []
    pos = 0
    while pos < len(raw):
        if pos + 5 > len(raw):
            raise ValueError
        enterprise = int.from_bytes(raw[pos:pos + 4], "big")
        length = raw[pos + 4]
        if pos + 5 + length > len(raw):
            raise ValueError
        out.append({"id": enterprise, "data": raw[pos + 5:pos + 5 + length].hex()})
        pos += 5 + length
    return out


# option code -> (field name under dhcpv4.option, value parser)
_OPTION_FIELDS: dict[int, tuple[str, Any]] = {
    53: ("message_type", _message_type),
    55: ("parameter_request_list", _parameter_names),
    50: ("requested_ip_address", _one_ip),
    54: ("server_identifier", _one_ip),
    28: ("broadcast_address", _one_ip),
    57: ("max_dhcp_message_size", _u16),
    60: ("class_identifier", _text),
    15: ("domain_name", _text),
    6: ("dns_servers", _ip_list),
    125: ("vendor_identifying_options", _vendor_identifying),
    1: ("subnet_mask", _one_ip),
    2: ("utc_time_offset_sec", _s32),
    3: ("router", lambda raw: _ip_list(raw)[0]),    # packetbeat writes the first router
    4: ("time_servers", _ip_list),
    42: ("ntp_servers", _ip_list),
    12: ("hostname", _text),
    51: ("ip_address_lease_time_sec", _u32),
    56: ("message", _text),
    58: ("renewal_time_sec", _u32),
    59: ("rebinding_time_sec", _u32),
    67: ("boot_file_name", _text),
}


def option_fields(msg: DHCPMessage) -> tuple[dict[str, Any], list[str]]:
    """dhcpv4.option.* from the message's options, and notes for unreadable values."""
    fields: dict[str, Any] = {}
    notes: list[str] = []
    for code in msg.option_order:
        spec = _OPTION_FIELDS.get(code)
        if spec is None:
            continue
        name, parse = spec
        try:
            fields[name] = parse(msg.options[code])
        except (ValueError, IndexError):
            notes.append(f"dhcpv4.option_{code}_malformed")
    return fields, notes


# -- decoder -----------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class DHCPRecord:
    """A DHCP message and its document's `dhcpv4.option` fields: one transaction."""

    msg: DHCPMessage
    option: dict[str, Any]


class DHCPDecoder:
    """One transaction per DHCP message; keeps no state between datagrams."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.counters = {"messages": 0}

    def on_datagram(self, dgram: Datagram) -> list[Transaction]:
        msg = decode_message(dgram.payload)
        self.counters["messages"] += 1
        # The packet's own direction: source = sender, destination = receiver.
        flow = dgram.flow if dgram.from_client else dgram.flow.reversed()
        option, option_notes = option_fields(msg)
        message_type = option.get("message_type", "none")
        return [Transaction(
            flow=flow, ts=dgram.ts, end_ts=None, status="OK",
            detail=DHCPRecord(msg, option),
            request_bytes=len(dgram.payload),
            notes=tuple(dict.fromkeys([*msg.notes, *option_notes])),
            identity=f"{msg.transaction_id:08x}/{message_type}",
        )]

    def expire(self, now: float) -> list[Transaction]:
        return []


_UNSPECIFIED = "0.0.0.0"


def document(txn: Transaction) -> dict[str, Any]:
    """The one place DHCPv4 field names are spelled; mirrors index_templates/dhcpv4.json."""
    record: DHCPRecord = txn.detail
    msg = record.msg
    dhcp: dict[str, Any] = {
        "op_code": OP_NAMES.get(msg.op, f"unknown ({msg.op})"),
        "hardware_type": HARDWARE_TYPE_NAMES.get(msg.hardware_type,
                                                 f"unknown ({msg.hardware_type})"),
        "hops": msg.hops,
        "transaction_id": f"0x{msg.transaction_id:08x}",
        "seconds": msg.seconds,
        "flags": "broadcast" if msg.flags & 0x8000 else "unicast",
        "client_mac": msg.client_mac,
    }
    flow = txn.flow
    related = [flow.client_ip] if flow.client_ip == flow.server_ip else [
        flow.client_ip, flow.server_ip]
    for key, address in (("client_ip", msg.client_ip), ("assigned_ip", msg.your_ip),
                         ("relay_ip", msg.relay_ip), ("server_ip", msg.server_ip)):
        if address != _UNSPECIFIED:
            dhcp[key] = address
            if key != "server_ip" and address not in related:
                related.append(address)
    if msg.server_name:
        dhcp["server_name"] = msg.server_name
    if msg.boot_file_name:
        dhcp["boot_file_name"] = msg.boot_file_name
    if record.option:
        dhcp["option"] = record.option
    source = {"ip": flow.client_ip, "port": flow.client_port}
    destination = {"ip": flow.server_ip, "port": flow.server_port}
    if msg.op == BOOTREPLY:
        # The receiver is the DHCP client. The engine copied source (with its
        # byte count) into client; the client sent none of these bytes.
        client = {**destination, "bytes": None}
        server = {**source, "bytes": txn.request_bytes}
    else:
        client = {**source, "bytes": txn.request_bytes}
        server = destination
    return {"dhcpv4": dhcp, "client": client, "server": server, "related": {"ip": related}}


DECODER = DecoderSpec(
    name="dhcpv4",
    document=document,
    datagram=DHCPDecoder,
    ports=(67, 68),
)
