"""DNS (RFC 1034/1035) over UDP and TCP, as packetbeat reports it.

Decoded: the header and its flags, every question and resource record with
name compression (RFC 1035 §4.1.4), EDNS0 (RFC 6891: UDP size, extended rcode,
version, DO bit; options NSID, client subnet (RFC 7871), cookie, DAU/DHU/N3U,
UL, LLQ, expire and the local range), and RDATA of A, AAAA, CNAME, DNAME, NS,
PTR, MX, SOA, SRV, TXT, CAA (RFC 8659), DS/CDS, DNSKEY/CDNSKEY, RRSIG, NSEC,
NSEC3, NSEC3PARAM (RFC 4034, 5155) and SVCB/HTTPS (RFC 9460). Any other type
keeps its RDATA as lowercase hex in `data`.

Pairing: a query and its response are one transaction, matched on the
requester's flow (addresses, ports, transport) and the message id; whether a
message is a query or a response is the QR bit, not the port. A query left
unanswered for `transaction_timeout` (packet time), or pushed out because
`max_pending` queries are already waiting, is reported alone with status Error
and packetbeat's note; a response without a query is reported alone too.

UDP: one `DNSDecoder` per capture source sees every datagram on the DNS ports.
TCP: one `DNSStream` per connection strips the 2-byte length prefix (RFC 1035
§4.2.2), handles several messages per connection and messages split across
segments, and after lost bytes (`on_gap`) skips exactly to the next message
when the lost bytes fell inside a message whose length it knows, or else hunts
for the next length prefix followed by a decodable message of the right
direction with one question (at most `TCP_MAX_HUNT_BYTES` held meanwhile). A
response that cannot be decoded closes the connection's latest open query with
a note, as packetbeat does; an undecodable query raises `DecodeError` for the
engine to count. Both transports call the same `decode_message`.

Robustness: compression pointers must point strictly before the start of the
label run that holds them (so no loop and no forward pointer can be followed),
a name has at most 127 labels, 255 octets (RFC 1035 §2.3.4) and 127 pointer
hops; only a bad header or question rejects a message (`DecodeError`). A
record whose RDATA does not parse for its type is kept with hex data and a
note; a record that runs past the end of the message ends parsing with a note.
"""
from __future__ import annotations

import base64
import heapq
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import orjson

from wirebeat.accel import dnscore
from wirebeat.records import maker, new_transaction as _new_transaction
from wirebeat.decoders.api import (Datagram, DecodeError, DecoderSpec, FlowKey, Option, Transaction,
                          Truncated, WireReader)

if TYPE_CHECKING:
    from wirebeat.decoders.dns_suffixes import Suffixes     # loaded at the first name shown

__all__ = [
    "DECODER", "MAX_PENDING_DEFAULT", "TCP_MAX_HUNT_BYTES", "DNSDecoder", "DNSExchange",
    "DNSMessage", "DNSStream", "EDNS", "Question", "ResourceRecord", "decode_message",
    "document", "domain_parts", "read_name", "render_message",
]

# Wire-controlled sizes are capped.
MAX_NAME_OCTETS = 255        # RFC 1035 §2.3.4, wire form including length bytes
MAX_LABELS = 127             # 255 octets hold at most 127 one-character labels
MAX_POINTER_HOPS = 127       # a legitimate name never needs more hops than labels
UDP_PLAIN_MAX_BYTES = 512    # RFC 1035 §4.2.1, the limit without EDNS
TCP_MAX_HUNT_BYTES = 2 * (2 + 65535)   # bytes kept while looking for a message start
MAX_PENDING_DEFAULT = 10000  # open queries per capture source (UDP) or connection (TCP)

# Notes as packetbeat words them, so existing searches on error.message still match.
NOTE_DUPLICATE = ("Another query with the same DNS ID from this client was received so "
                  "this query was closed without receiving a response")
NOTE_NO_RESPONSE = "No response to this query was received"
NOTE_ORPHANED = "Response: received without an associated Query"
NOTE_UDP_TOO_LARGE = f"Non-EDNS packet has size greater than {UDP_PLAIN_MAX_BYTES}"
NOTE_UDP_TOO_LARGE_RESPONSE = "Response: " + NOTE_UDP_TOO_LARGE
NOTE_EDNS_NO_SUPPORT = "Responder does not support EDNS"
NOTE_EDNS_UNEXPECTED = "Unexpected EDNS answer"
NOTE_UNDECODABLE_RESPONSE = "Response: Message's data could not be decoded as DNS"

# -- names of numbers -----------------------------------------------------------

TYPE_NAMES = {
    1: "A", 2: "NS", 3: "MD", 4: "MF", 5: "CNAME", 6: "SOA", 7: "MB", 8: "MG", 9: "MR",
    10: "NULL", 12: "PTR", 13: "HINFO", 14: "MINFO", 15: "MX", 16: "TXT", 17: "RP",
    18: "AFSDB", 19: "X25", 20: "ISDN", 21: "RT", 23: "NSAP-PTR", 24: "SIG", 25: "KEY",
    26: "PX", 27: "GPOS", 28: "AAAA", 29: "LOC", 30: "NXT", 31: "EID", 32: "NIMLOC",
    33: "SRV", 34: "ATMA", 35: "NAPTR", 36: "KX", 37: "CERT", 39: "DNAME", 41: "OPT",
    42: "APL", 43: "DS", 44: "SSHFP", 45: "IPSECKEY", 46: "RRSIG", 47: "NSEC",
    48: "DNSKEY", 49: "DHCID", 50: "NSEC3", 51: "NSEC3PARAM", 52: "TLSA", 53: "SMIMEA",
    55: "HIP", 56: "NINFO", 57: "RKEY", 58: "TALINK", 59: "CDS", 60: "CDNSKEY",
    61: "OPENPGPKEY", 62: "CSYNC", 63: "ZONEMD", 64: "SVCB", 65: "HTTPS", 99: "SPF",
    100: "UINFO", 101: "UID", 102: "GID", 103: "UNSPEC", 104: "NID", 105: "L32",
    106: "L64", 107: "LP", 108: "EUI48", 109: "EUI64", 249: "TKEY", 250: "TSIG",
    251: "IXFR", 252: "AXFR", 253: "MAILB", 254: "MAILA", 255: "ANY", 256: "URI",
    257: "CAA", 258: "AVC", 260: "AMTRELAY", 32768: "TA", 32769: "DLV",
}
CLASS_NAMES = {1: "IN", 2: "CS", 3: "CH", 4: "HS", 254: "NONE", 255: "ANY"}
OPCODE_NAMES = {0: "QUERY", 1: "IQUERY", 2: "STATUS", 4: "NOTIFY", 5: "UPDATE"}
RCODE_NAMES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
    # 16 in a message header can only come from EDNS, where it means BADVERS.
    16: "BADVERS", 17: "BADKEY", 18: "BADTIME", 19: "BADMODE", 20: "BADNAME",
    21: "BADALG", 22: "BADTRUNC", 23: "BADCOOKIE",
}
ALGORITHM_NAMES = {   # DNSSEC algorithm numbers (IANA), named as packetbeat names them
    1: "RSAMD5", 2: "DH", 3: "DSA", 5: "RSASHA1", 6: "DSA-NSEC3-SHA1",
    7: "RSASHA1-NSEC3-SHA1", 8: "RSASHA256", 10: "RSASHA512", 12: "ECC-GOST",
    13: "ECDSAP256SHA256", 14: "ECDSAP384SHA384", 15: "ED25519", 16: "ED448",
    252: "INDIRECT", 253: "PRIVATEDNS", 254: "PRIVATEOID",
}
HASH_NAMES = {1: "SHA1", 2: "SHA256", 3: "GOST94", 4: "SHA384", 5: "SHA512"}
SVC_PARAM_NAMES = {0: "mandatory", 1: "alpn", 2: "no-default-alpn", 3: "port",
                   4: "ipv4hint", 5: "ech", 6: "ipv6hint", 7: "dohpath", 8: "ohttp"}

_TYPE_A, _TYPE_NS, _TYPE_CNAME, _TYPE_SOA, _TYPE_PTR = 1, 2, 5, 6, 12
_TYPE_MX, _TYPE_TXT, _TYPE_AAAA, _TYPE_SRV, _TYPE_DNAME, _TYPE_OPT = 15, 16, 28, 33, 39, 41
_TYPE_DS, _TYPE_RRSIG, _TYPE_NSEC, _TYPE_DNSKEY = 43, 46, 47, 48
_TYPE_NSEC3, _TYPE_NSEC3PARAM, _TYPE_CDS, _TYPE_CDNSKEY = 50, 51, 59, 60
_TYPE_SVCB, _TYPE_HTTPS, _TYPE_CAA = 64, 65, 257


def type_name(rrtype: int) -> str:
    return TYPE_NAMES.get(rrtype) or str(rrtype)


def class_name(rrclass: int) -> str:
    return CLASS_NAMES.get(rrclass) or str(rrclass)


def opcode_name(opcode: int) -> str:
    return OPCODE_NAMES.get(opcode) or str(opcode)


def rcode_name(rcode: int) -> str:
    return RCODE_NAMES.get(rcode) or f"Unknown {rcode}"


def _algorithm_name(number: int) -> str:
    return ALGORITHM_NAMES.get(number) or str(number)


def _hash_name(number: int) -> str:
    return HASH_NAMES.get(number) or str(number)


# -- records ---------------------------------------------------------------------
# Built per packet and per record, where a frozen dataclass costs several times
# as much to construct; plain slotted dataclasses, treated as immutable all the
# same (as decoders/api.py does for its per-packet records).

@dataclass(slots=True)
class Question:
    """One entry of the question section."""

    name: str          # presentation form, no trailing dot ("." for the root)
    type: int          # QTYPE
    class_: int        # QCLASS


@dataclass(slots=True)
class ResourceRecord:
    """One answer, authority or additional record."""

    name: str
    type: int
    class_: int
    ttl: int
    data: str                                        # packetbeat's `data` text
    extra: Mapping[str, Any] = field(default_factory=dict)   # type-specific keys


@dataclass(slots=True)
class EDNS:
    """The OPT pseudo-record (RFC 6891)."""

    udp_size: int                 # requester's UDP payload size (the OPT class)
    ext_rcode: int                # upper 8 bits of the 12-bit rcode, as on the wire
    version: int
    do: bool                      # DNSSEC OK
    options: Mapping[str, str]    # packetbeat's dns.opt keys (nsid, subnet, ...) -> text


@dataclass(slots=True)
class DNSMessage:
    """One DNS message: header flags and its four sections."""

    id: int
    is_response: bool              # QR
    opcode: int
    authoritative: bool            # AA
    truncated: bool                # TC
    recursion_desired: bool        # RD
    recursion_available: bool      # RA
    authentic_data: bool           # AD (RFC 4035)
    checking_disabled: bool        # CD (RFC 4035)
    rcode: int                     # with the EDNS extension applied (RFC 6891 §6.1.3)
    questions: tuple[Question, ...]
    answers: tuple[ResourceRecord, ...]
    authorities: tuple[ResourceRecord, ...]
    additionals: tuple[ResourceRecord, ...]   # OPT pseudo-records left out
    edns: EDNS | None
    length: int                    # bytes of the DNS message
    notes: tuple[str, ...] = ()    # what was wrong but survivable


# -- names -------------------------------------------------------------------------

def _label_escapes() -> tuple[str, ...]:
    table = []
    for byte in range(256):
        if byte in (0x2E, 0x5C):              # "." and "\" inside a label
            table.append("\\" + chr(byte))
        elif 0x21 <= byte <= 0x7E:
            table.append(chr(byte))
        else:
            table.append(f"\\{byte:03d}")
    return tuple(table)


def _text_escapes() -> tuple[str, ...]:
    table = []
    for byte in range(256):
        if byte in (0x22, 0x5C):              # '"' and "\" inside a character-string
            table.append("\\" + chr(byte))
        elif 0x20 <= byte <= 0x7E:
            table.append(chr(byte))
        else:
            table.append(f"\\{byte:03d}")
    return tuple(table)


_LABEL_ESCAPES = _label_escapes()
_TEXT_ESCAPES = _text_escapes()


def _label_text(raw: bytes) -> str:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return "".join(_LABEL_ESCAPES[b] for b in raw)
    if text.isprintable() and "." not in text and "\\" not in text and " " not in text:
        return text
    return "".join(_LABEL_ESCAPES[b] for b in raw)


def _text(raw: bytes) -> str:
    return "".join(_TEXT_ESCAPES[b] for b in raw)


def read_name(data: bytes, offset: int, end: int | None = None,
              names: dict[int, str] | None = None) -> tuple[str, int]:
    """Read a possibly compressed domain name at `offset`.

    Returns the name in presentation form without the trailing dot ("." for the
    root) and the offset just after the name's own bytes. Sequential bytes are
    read up to `end` (default: the end of `data`); pointers may only go to an
    offset before the start of the label run that holds them. Raises Truncated
    ("dns.truncated") or DecodeError ("dns.forward_pointer", "dns.pointer_loop",
    "dns.pointer_chain_too_long", "dns.bad_label_type", "dns.name_too_long",
    "dns.too_many_labels").

    `names` (one message's, offset -> name) keeps every name read without a
    pointer that runs to the end of `data`; a name that is only a pointer to one
    of them (an answer's owner pointing at the question) is taken from there:
    following that pointer would read the same labels with the same limits.
    """
    limit = len(data) if end is None else end
    if names is not None and offset + 1 < limit and data[offset] >= 0xC0:
        name = names.get(((data[offset] & 0x3F) << 8) | data[offset + 1])
        if name is not None:    # (every kept offset is before this pointer: not forward, no loop)
            return name, offset + 2
    labels: list[bytes] = []    # raw, their text made at the end
    octets = 1                 # the root label's length byte
    run_start = offset         # first byte of the label run being read
    after: int | None = None   # where the caller continues: after the first pointer
    hops = 0
    pos = offset
    while True:
        if pos >= limit:
            raise Truncated("dns.truncated", pos)
        length = data[pos]
        kind = length & 0xC0
        if kind == 0xC0:
            if pos + 1 >= limit:
                raise Truncated("dns.truncated", pos)
            target = ((length & 0x3F) << 8) | data[pos + 1]
            if target >= pos:
                raise DecodeError("dns.forward_pointer", pos)
            if target >= run_start:
                # Points into the name being read: following it would loop.
                raise DecodeError("dns.pointer_loop", pos)
            hops += 1
            if hops > MAX_POINTER_HOPS:
                raise DecodeError("dns.pointer_chain_too_long", pos)
            if after is None:
                after = pos + 2
            # Past the first hop, reads go through the whole message.
            limit = len(data)
            run_start = pos = target
            continue
        if kind:
            # 0x40 (RFC 2673 extended labels, obsolete) and 0x80 are not names.
            raise DecodeError("dns.bad_label_type", pos)
        if length == 0:
            pos += 1
            break
        if pos + 1 + length > limit:
            raise Truncated("dns.truncated", pos)
        octets += 1 + length
        if octets > MAX_NAME_OCTETS:
            raise DecodeError("dns.name_too_long", pos)
        if len(labels) >= MAX_LABELS:
            raise DecodeError("dns.too_many_labels", pos)
        labels.append(data[pos + 1:pos + 1 + length])
        pos += 1 + length
    if not labels:
        return ".", (after if after is not None else pos)
    # The labels' text: the whole name at once when no label needs an escape.
    try:
        name = b".".join(labels).decode("ascii")
        plain = (name.isprintable() and name.count(".") == len(labels) - 1
                 and "\\" not in name and " " not in name)
    except UnicodeDecodeError:
        plain = False
    if not plain:
        name = ".".join([_label_text(label) for label in labels])
    if after is None:
        if names is not None and limit == len(data):
            names[offset] = name
        return name, pos
    return name, after


def _read_name(r: WireReader) -> str:
    name, r.offset = read_name(r.data, r.offset, r.end)
    return name


def _read_uncompressed_name(r: WireReader) -> str:
    """RRSIG signer and NSEC next name: RFC 4034 forbids compression there."""
    start = r.offset
    name, after = read_name(r.data, r.offset, r.end)
    if any(r.data[i] & 0xC0 == 0xC0 for i in _label_starts(r.data, start, after)):
        raise DecodeError("dns.compressed_name_not_allowed", start)
    r.offset = after
    return name


def _label_starts(data: bytes, start: int, end: int) -> list[int]:
    starts = []
    pos = start
    while pos < end:
        starts.append(pos)
        if data[pos] & 0xC0:
            break
        pos += 1 + data[pos]
    return starts


# -- RDATA -------------------------------------------------------------------------

def _ipv4(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, raw)


def _ipv6(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, raw)


def _type_bitmap(r: WireReader) -> str:
    """RFC 4034 §4.1.2 windows -> "A NS SOA RRSIG"."""
    names = []
    last_window = -1
    while r.remaining():
        window = r.u8()
        length = r.u8()
        if window <= last_window or not 1 <= length <= 32:
            raise DecodeError("dns.bad_type_bitmap", r.offset)
        last_window = window
        bitmap = r.take(length)
        for index, byte in enumerate(bitmap):
            for bit in range(8):
                if byte & (0x80 >> bit):
                    names.append(type_name(window * 256 + index * 8 + bit))
    return " ".join(names)


def _rrsig_time(seconds: int) -> str:
    # RFC 4034 §3.2: YYYYMMDDHHmmSS in UTC. Read as unsigned seconds since the epoch:
    # right until 2106, and no dependence on the clock of the machine decoding.
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(seconds))


def _svc_params(r: WireReader) -> str:
    parts = []
    last_key = -1
    while r.remaining():
        key = r.u16()
        length = r.u16()
        if key <= last_key:
            raise DecodeError("dns.svcb_keys_out_of_order", r.offset)
        last_key = key
        with r.exactly(length) as value:
            name = SVC_PARAM_NAMES.get(key, f"key{key}")
            if key == 0:
                keys = []
                while value.remaining():
                    k = value.u16()
                    keys.append(SVC_PARAM_NAMES.get(k, f"key{k}"))
                parts.append(f"{name}={','.join(keys)}")
            elif key == 1:
                ids = []
                while value.remaining():
                    ids.append(_text(value.take(value.u8())).replace(",", "\\,"))
                parts.append(f"{name}={','.join(ids)}")
            elif key == 2:
                if length:
                    raise DecodeError("dns.bad_svc_param", value.offset)
                parts.append(name)
            elif key == 3:
                port = value.u16()
                if value.remaining():
                    raise DecodeError("dns.bad_svc_param", value.offset)
                parts.append(f"{name}={port}")
            elif key in (4, 6):
                size = 4 if key == 4 else 16
                if not length or length % size:
                    raise DecodeError("dns.bad_svc_param", value.offset)
                render = _ipv4 if key == 4 else _ipv6
                addresses = [render(value.take(size)) for _ in range(length // size)]
                parts.append(f"{name}={','.join(addresses)}")
            elif key == 5:
                parts.append(f"{name}={base64.b64encode(value.rest()).decode()}")
            else:
                parts.append(f'{name}="{_text(value.rest())}"')
    return " ".join(parts)


def _decode_rdata(r: WireReader, rrtype: int) -> tuple[str, dict[str, Any]]:
    """RDATA of one record, held to its rdlength by the caller; raises DecodeError."""
    extra: dict[str, Any] = {}
    if rrtype == _TYPE_A:
        data = _ipv4(r.take(4))
    elif rrtype == _TYPE_AAAA:
        data = _ipv6(r.take(16))
    elif rrtype in (_TYPE_CNAME, _TYPE_NS, _TYPE_PTR, _TYPE_DNAME):
        data = _read_name(r)
    elif rrtype == _TYPE_MX:
        extra["preference"] = r.u16()
        data = _read_name(r)
    elif rrtype == _TYPE_SOA:
        data = _read_name(r)                       # MNAME
        extra["rname"] = _read_name(r)
        for key in ("serial", "refresh", "retry", "expire", "minimum"):
            extra[key] = r.u32()
    elif rrtype == _TYPE_SRV:
        extra["priority"] = r.u16()
        extra["weight"] = r.u16()
        extra["port"] = r.u16()
        data = _read_name(r)
    elif rrtype == _TYPE_TXT:
        strings = []
        while r.remaining():
            strings.append(_text(r.take(r.u8())))
        data = " ".join(strings)
    elif rrtype == _TYPE_CAA:
        flags = r.u8()
        tag = r.take(r.u8())
        if not tag:
            raise DecodeError("dns.bad_caa_tag", r.offset)
        data = f'{flags} {_text(tag)} "{_text(r.rest())}"'
    elif rrtype in (_TYPE_DS, _TYPE_CDS):
        extra["key_tag"] = str(r.u16())
        extra["algorithm"] = _algorithm_name(r.u8())
        extra["digest_type"] = _hash_name(r.u8())
        data = r.rest().hex().upper()
    elif rrtype in (_TYPE_DNSKEY, _TYPE_CDNSKEY):
        extra["flags"] = str(r.u16())
        extra["protocol"] = str(r.u8())
        extra["algorithm"] = _algorithm_name(r.u8())
        data = base64.b64encode(r.rest()).decode()
    elif rrtype == _TYPE_RRSIG:
        extra["type_covered"] = type_name(r.u16())
        extra["algorithm"] = _algorithm_name(r.u8())
        extra["labels"] = str(r.u8())
        extra["original_ttl"] = str(r.u32())
        extra["expiration"] = _rrsig_time(r.u32())
        extra["inception"] = _rrsig_time(r.u32())
        extra["key_tag"] = str(r.u16())
        extra["signer_name"] = _read_uncompressed_name(r)
        data = base64.b64encode(r.rest()).decode()
    elif rrtype == _TYPE_NSEC:
        data = _read_uncompressed_name(r)
        extra["type_bits"] = _type_bitmap(r)
    elif rrtype in (_TYPE_NSEC3, _TYPE_NSEC3PARAM):
        extra["hash"] = _hash_name(r.u8())
        extra["flags"] = str(r.u8())
        extra["iterations"] = str(r.u16())
        salt = r.take(r.u8()).hex().upper() or "-"
        if rrtype == _TYPE_NSEC3PARAM:
            data = salt
        else:
            extra["salt"] = salt
            data = base64.b32hexencode(r.take(r.u8())).decode().rstrip("=")
            extra["type_bits"] = _type_bitmap(r)
    elif rrtype in (_TYPE_SVCB, _TYPE_HTTPS):
        priority = r.u16()
        extra["priority"] = priority
        target = _read_name(r)
        params = _svc_params(r)
        data = f"{priority} {target} {params}" if params else f"{priority} {target}"
    else:
        data = r.rest().hex()
    return data, extra


# -- EDNS --------------------------------------------------------------------------

def _edns_subnet(raw: bytes) -> str:
    r = WireReader(raw, "dns")
    family, source_prefix, scope_prefix = r.u16(), r.u8(), r.u8()
    address = r.rest()
    size = {1: 4, 2: 16}.get(family)
    if size is None or len(address) > size or len(address) != (source_prefix + 7) // 8:
        raise DecodeError("dns.bad_client_subnet", 0)
    padded = address + bytes(size - len(address))
    text = _ipv4(padded) if family == 1 else _ipv6(padded)
    return f"{text}/{source_prefix}/{scope_prefix}"


def _edns_option(code: int, raw: bytes) -> tuple[str, str] | None:
    """One option as (packetbeat key, text); None for options packetbeat leaves out."""
    if code == 3:
        return "nsid", raw.hex()
    if code == 8:
        return "subnet", _edns_subnet(raw)
    if code == 10:
        return "cookie", raw.hex()
    if code == 5:
        return "dau", " ".join(_algorithm_name(b) for b in raw)
    if code in (6, 7):
        return ("dhu" if code == 6 else "n3u"), " ".join(_hash_name(b) for b in raw)
    if code == 2:
        if len(raw) not in (4, 8):
            raise DecodeError("dns.bad_update_lease", 0)
        return "ul", str(int.from_bytes(raw[:4], "big"))
    if code == 1:
        if len(raw) != 18:
            raise DecodeError("dns.bad_llq", 0)
        version, opcode, error, ident, lease = struct.unpack("!HHHQI", raw)
        return "llq", f"{version} {opcode} {error} {ident} {lease}"
    if code == 9:
        # packetbeat files EDNS EXPIRE (RFC 7314) under "local".
        if len(raw) not in (0, 4):
            raise DecodeError("dns.bad_expire", 0)
        return "local", str(int.from_bytes(raw, "big")) if raw else ""
    if 65001 <= code <= 65534:
        return "local", raw.hex()
    return None


def _decode_opt(r: WireReader, udp_size: int, ttl: int, notes: list[str]) -> EDNS:
    options: dict[str, str] = {}
    try:
        while r.remaining():
            code = r.u16()
            raw = r.take(r.u16())
            try:
                entry = _edns_option(code, raw)
            except DecodeError:
                notes.append("dns.edns_option_malformed")
                continue
            if entry is not None:
                options[entry[0]] = entry[1]
    except DecodeError:
        notes.append("dns.edns_options_overrun")
    return EDNS(udp_size=udp_size, ext_rcode=ttl >> 24, version=(ttl >> 16) & 0xFF,
                do=bool(ttl & 0x8000), options=options)


# -- messages ------------------------------------------------------------------------

_HEADER = struct.Struct("!HHHHHH")
_QUESTION_FIXED = struct.Struct("!HH")     # QTYPE, QCLASS
_ntop, _AF_INET = socket.inet_ntop, socket.AF_INET
_RR_FIXED = struct.Struct("!HHIH")        # TYPE, CLASS, TTL, RDLENGTH
_SECTIONS = ("answer", "authority", "additional")


def decode_message(payload: bytes) -> DNSMessage:
    """Parse one DNS message (no TCP length prefix).

    Raises Truncated ("dns.truncated") when the header or a question runs past
    the end, and DecodeError for a question name that is not a valid name
    ("dns.pointer_loop", "dns.forward_pointer", ... see `read_name`). Problems in
    the answer, authority and additional sections become `notes` instead.
    """
    data = bytes(payload)
    if len(data) < _HEADER.size:
        raise Truncated("dns.truncated", len(data))
    ident, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(data)
    r = WireReader(data, "dns", _HEADER.size)
    questions = []
    size = len(data)
    names: dict[int, str] = {}      # read_name's: the names read, by offset
    for _ in range(qdcount):
        name, offset = read_name(data, r.offset, size, names)
        if offset + 4 > size:      # (where WireReader.u16 would have stopped)
            raise Truncated("dns.truncated", offset if offset + 2 > size else offset + 2)
        qtype, qclass = _QUESTION_FIXED.unpack_from(data, offset)
        r.offset = offset + 4
        questions.append(Question(name, qtype, qclass))
    notes: list[str] = []
    sections: list[list[ResourceRecord]] = [[], [], []]
    edns: EDNS | None = None
    complete = True
    for index, count in enumerate((ancount, nscount, arcount)):
        section = _SECTIONS[index]
        for _ in range(count):
            try:
                owner, r.offset = read_name(data, r.offset, r.end, names)
                fixed_at = r.offset
                r.skip(_RR_FIXED.size)
                rrtype, rrclass, ttl, rdlength = _RR_FIXED.unpack_from(data, fixed_at)
                rdata_start = r.offset
                r.skip(rdlength)
            except DecodeError:
                notes.append(f"dns.{section}_section_incomplete")
                complete = False
                break
            if rrtype == _TYPE_A and rdlength == 4:     # most answers: no reader, no dispatch
                sections[index].append(ResourceRecord(
                    owner, rrtype, rrclass, ttl, _ntop(_AF_INET, data[rdata_start:rdata_start + 4]), {}))
                continue
            rd = WireReader(data, "dns", rdata_start)
            rd.end = rdata_start + rdlength
            if rrtype == _TYPE_OPT and section == "additional":
                if edns is None:
                    edns = _decode_opt(rd, rrclass, ttl, notes)
                else:
                    notes.append("dns.multiple_opt")
                continue
            try:
                text, extra = _decode_rdata(rd, rrtype)
                if rd.remaining():
                    raise DecodeError("dns.rdata_trailing_bytes", rd.offset)
            except DecodeError:
                notes.append(f"dns.{section}_rdata_malformed")
                text, extra = data[rdata_start:rdata_start + rdlength].hex(), {}
            sections[index].append(ResourceRecord(owner, rrtype, rrclass, ttl, text, extra))
        if not complete:
            break
    rcode = flags & 0xF
    if edns is not None:
        rcode |= edns.ext_rcode << 4
    return DNSMessage(     # (positional: id, QR, opcode, AA, TC, RD, RA, AD, CD, rcode, ...)
        ident, bool(flags & 0x8000), (flags >> 11) & 0xF, bool(flags & 0x0400),
        bool(flags & 0x0200), bool(flags & 0x0100), bool(flags & 0x0080), bool(flags & 0x0020),
        bool(flags & 0x0010), rcode, tuple(questions), tuple(sections[0]), tuple(sections[1]),
        tuple(sections[2]), edns, size, tuple(dict.fromkeys(notes)) if notes else ())


decode_message_python = decode_message      # the reference the C reading is tested against
if dnscore is not None:     # the common messages read in C (beat/_dnscore.c says which); the rest here
    dnscore.configure(Question, ResourceRecord, EDNS, DNSMessage, MAX_POINTER_HOPS, MAX_NAME_OCTETS,
                      MAX_LABELS)

    def decode_message(payload: bytes) -> DNSMessage:     # noqa: F811
        """`decode_message_python`'s message: read by wirebeat._dnscore when it can
        (tests/beat/test_dnscore.py), else by the Python function."""
        return _decode_common(payload) or decode_message_python(payload)

    _decode_common = dnscore.decode
else:
    _decode_common = None


# -- text rendering (send_request / send_response) -----------------------------------

def _question_text(q: Question) -> str:
    return f"class {class_name(q.class_)}, type {type_name(q.type)}, {q.name}"


def _record_text(rr: ResourceRecord) -> str:
    # packetbeat: type-specific keys in alphabetical order, then the data.
    parts = [f"{key} {rr.extra[key]}, " for key in sorted(rr.extra)]
    return "".join(parts) + rr.data


def render_message(msg: DNSMessage) -> str:
    """packetbeat's one-line text of a message, used for `request` / `response`."""
    flags = [name for name, on in (("aa", msg.authoritative), ("tc", msg.truncated),
                                   ("rd", msg.recursion_desired),
                                   ("ra", msg.recursion_available),
                                   ("ad", msg.authentic_data),
                                   ("cd", msg.checking_disabled)) if on]
    parts = [f"ID {msg.id}; QR {'response' if msg.is_response else 'query'}; "
             f"OPCODE {opcode_name(msg.opcode)}; FLAGS {' '.join(flags)}; "
             f"RCODE {rcode_name(msg.rcode)}"]
    if msg.questions:
        parts.append("QUESTION " + "; ".join(_question_text(q) for q in msg.questions))
    for label, records in (("ANSWER", msg.answers), ("AUTHORITY", msg.authorities),
                           ("ADDITIONAL", msg.additionals)):
        if records:
            parts.append(f"{label} " + "; ".join(_record_text(rr) for rr in records))
    return "; ".join(parts)


# -- pairing ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Settings:
    """The decoder's options, resolved once."""

    timeout_s: float
    max_pending: int
    include_authorities: bool
    include_additionals: bool
    send_request: bool
    send_response: bool

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> _Settings:
        return cls(timeout_s=float(options.get("transaction_timeout", 10.0)),
                   max_pending=int(options.get("max_pending", MAX_PENDING_DEFAULT)),
                   include_authorities=bool(options.get("include_authorities", False)),
                   include_additionals=bool(options.get("include_additionals", False)),
                   send_request=bool(options.get("send_request", False)),
                   send_response=bool(options.get("send_response", False)))


@dataclass(slots=True)      # one per transaction: not frozen (a call per field to build)
class DNSExchange:
    """What `document()` needs: the two messages and the options that shape fields."""

    request: DNSMessage | None
    response: DNSMessage | None
    settings: _Settings


@dataclass(slots=True)
class _Pending:
    """A query waiting for its response."""

    ts: float
    flow: FlowKey          # requester first
    msg: DNSMessage
    size: int              # source.bytes (TCP: with the length prefix, as packetbeat)
    notes: list[str]


# Made per query and per transaction without their Python __init__ (wirebeat.records).
_new_pending, _new_exchange = maker(_Pending), maker(DNSExchange)


class _Pairing:
    """Open queries of one capture source (UDP) or one connection (TCP)."""

    def __init__(self, settings: _Settings, transport: str) -> None:
        self.settings = settings
        self.transport = transport
        # (requester flow's fields, id) -> pending query, in arrival order; the fields, not the
        # FlowKey: a tuple of them hashes without FlowKey's Python __hash__
        # Oldest first. An OrderedDict: taking the oldest of a plain dict costs a step per entry
        # deleted before it, which a flood of unanswered queries makes 65,536 steps per query.
        self.pending: OrderedDict[tuple, _Pending] = OrderedDict()
        self.counters = {"pending_evicted": 0, "unmatched_requests": 0,
                         "unmatched_responses": 0}

    def on_message(self, ts: float, flow: FlowKey, from_client: bool, msg: DNSMessage,
                   size: int) -> list[Transaction]:
        """`flow` is the flow as the engine keys it; the QR bit says who asked."""
        requester_sent = not msg.is_response
        if requester_sent == from_client:
            requester_flow = flow
        else:
            requester_flow = flow.reversed()
        if msg.is_response:
            return self._on_response(ts, requester_flow, msg, size)
        return self._on_query(ts, requester_flow, msg, size)

    def _on_query(self, ts: float, flow: FlowKey, msg: DNSMessage,
                  size: int) -> list[Transaction]:
        out: list[Transaction] = []
        key = (flow.transport, flow.client_ip, flow.client_port, flow.server_ip, flow.server_port,
               flow.source, msg.id)
        previous = self.pending.pop(key, None)
        if previous is not None:
            previous.notes.append(NOTE_DUPLICATE)
            out.append(self._transaction(previous, None, None, 0))
        if len(self.pending) >= self.settings.max_pending:
            # Cap reached: the oldest query is reported unanswered now rather than
            # holding memory for an answer that a flood of ids will never bring.
            oldest = self.pending.popitem(last=False)[1]
            self.counters["pending_evicted"] += 1
            self.counters["unmatched_requests"] += 1
            oldest.notes.append(NOTE_NO_RESPONSE)
            out.append(self._transaction(oldest, None, None, 0))
        notes = list(msg.notes)
        if self.transport == "udp" and msg.edns is None and size > UDP_PLAIN_MAX_BYTES:
            notes.append(NOTE_UDP_TOO_LARGE)
        self.pending[key] = _new_pending(ts, flow, msg, size, notes)
        return out

    def _on_response(self, ts: float, flow: FlowKey, msg: DNSMessage,
                     size: int) -> list[Transaction]:
        query = self.pending.pop((flow.transport, flow.client_ip, flow.client_port, flow.server_ip,
                                  flow.server_port, flow.source, msg.id), None)
        notes = list(msg.notes)
        if self.transport == "udp":
            if msg.edns is None and size > UDP_PLAIN_MAX_BYTES:
                notes.append(NOTE_UDP_TOO_LARGE_RESPONSE)
            if query is not None:
                if query.msg.edns is not None and msg.edns is None:
                    notes.append(NOTE_EDNS_NO_SUPPORT)
                elif query.msg.edns is None and msg.edns is not None:
                    notes.append(NOTE_EDNS_UNEXPECTED)
        if query is None:
            self.counters["unmatched_responses"] += 1
            lone = _Pending(ts, flow, msg, 0, [NOTE_ORPHANED, *notes])
            return [self._transaction(None, lone, None, size)]
        query.notes.extend(notes)
        return [self._transaction(query, msg, ts, size)]

    def _transaction(self, query: _Pending | None, response: DNSMessage | _Pending | None,
                     response_ts: float | None, response_size: int) -> Transaction:
        settings = self.settings
        if query is None:
            assert isinstance(response, _Pending)
            lone = response
            # (Transaction's fields in order: flow, ts, end_ts, status, detail, request_bytes,
            # response_bytes, notes, identity)
            return Transaction(lone.flow, lone.ts, None, "Error", DNSExchange(None, lone.msg, settings),
                               None, response_size, tuple(lone.notes), f"{lone.msg.id}/r")
        reply = response if response.__class__ is DNSMessage else None
        notes = query.notes
        return _new_transaction(
            query.flow, query.ts, response_ts,
            "OK" if reply is not None and reply.rcode == 0 else "Error",
            _new_exchange(query.msg, reply, settings), query.size,
            response_size if reply is not None else None,
            tuple(dict.fromkeys(notes)) if notes else (), f"{query.msg.id}/q")

    def fail_latest(self, err: DecodeError) -> Transaction | None:
        """A response that could not be decoded: report the latest open query with
        it, as packetbeat does for DNS over TCP. None when no query is open."""
        if not self.pending:
            return None
        query = self.pending.popitem()[1]
        self.counters["unmatched_requests"] += 1
        query.notes.append(NOTE_UNDECODABLE_RESPONSE)
        query.notes.append(err.reason)
        return self._transaction(query, None, None, 0)

    def expire(self, now: float) -> list[Transaction]:
        deadline = now - self.settings.timeout_s
        out: list[Transaction] = []
        # Queries are kept in arrival order, so the expired ones come first.
        while self.pending:
            key = next(iter(self.pending))
            query = self.pending[key]
            if query.ts > deadline:
                break
            del self.pending[key]
            self.counters["unmatched_requests"] += 1
            query.notes.append(NOTE_NO_RESPONSE)
            out.append(self._transaction(query, None, None, 0))
        return out


class DNSDecoder:
    """DNS over UDP: pairs queries and responses of every flow of one capture source."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.pairing = _Pairing(_Settings.from_options(options), "udp")
        self.counters = self.pairing.counters      # read by the engine's monitoring

    def on_datagram(self, dgram: Datagram) -> list[Transaction]:
        payload = dgram.payload
        # decode_message's reading without its call per datagram: C when it can, else Python
        msg = (_decode_common is not None and _decode_common(payload)) or decode_message_python(payload)
        # _Pairing.on_message's, without its call per datagram
        pairing = self.pairing
        flow = dgram.flow
        if msg.is_response:
            return pairing._on_response(dgram.ts, flow.reversed() if dgram.from_client else flow,
                                        msg, len(payload))
        return pairing._on_query(dgram.ts, flow if dgram.from_client else flow.reversed(),
                                 msg, len(payload))

    def expire(self, now: float) -> list[Transaction]:
        return self.pairing.expire(now)


@dataclass(slots=True)
class _Direction:
    """One direction of a DNS-over-TCP connection: bytes not yet framed."""

    buffer: bytearray = field(default_factory=bytearray)
    start_ts: float = 0.0      # capture time of the first byte of the buffer
    skip: int = 0              # bytes still to drop: the rest of a message cut by a gap
    hunting: bool = False      # after a gap of unknown extent: look for a message start
    # While hunting, offsets are absolute (bytes since the hunt began), so the
    # front of the buffer can be dropped without renumbering what was learnt.
    hunt_base: int = 0         # absolute offset of buffer[0]
    hunt_checked: int = 0      # absolute offsets below this were looked at once
    hunt_waiting: list[tuple[int, int]] = field(default_factory=list)  # heap: (end, start)

    def start_hunt(self) -> None:
        self.hunting = True
        self.hunt_base = self.hunt_checked = 0
        self.hunt_waiting = []


def _candidate(buffer: bytearray, rel: int, qr: int) -> bool | int:
    """Does a framed DNS message start at buffer[rel]? True, False, or the number
    of bytes from `rel` the buffer must hold before the question can be answered."""
    available = len(buffer) - rel
    if available < 8:
        return 8
    length = (buffer[rel] << 8) | buffer[rel + 1]
    # QR must match the direction, QDCOUNT must be 1.
    if length < _HEADER.size or buffer[rel + 4] & 0x80 != qr or buffer[rel + 6:rel + 8] != b"\0\1":
        return False
    if available < 2 + length:
        return 2 + length
    try:
        decode_message(bytes(buffer[rel + 2:rel + 2 + length]))
    except DecodeError:
        return False
    return True


class DNSStream:
    """DNS over TCP (RFC 1035 §4.2.2, RFC 7766): one instance per connection."""

    def __init__(self, flow: FlowKey, options: Mapping[str, Any]) -> None:
        self.flow = flow
        self.pairing = _Pairing(_Settings.from_options(options), "tcp")
        self.sides = {True: _Direction(), False: _Direction()}
        self.counters = self.pairing.counters
        self.counters.update({"malformed_messages": 0, "gap_messages_lost": 0,
                              "resynchronised": 0, "bytes_discarded": 0})

    def on_data(self, from_client: bool, data: bytes, ts: float) -> list[Transaction]:
        side = self.sides[from_client]
        if side.skip:
            dropped = min(side.skip, len(data))
            side.skip -= dropped
            data = data[dropped:]
        if not data:
            return []
        if not side.buffer:
            side.start_ts = ts
        side.buffer += data
        out: list[Transaction] = []
        if side.hunting:
            self._hunt(side, from_client)
            if side.hunting:
                return out
        buffer = side.buffer
        errors: list[DecodeError] = []
        while len(buffer) >= 2:
            length = (buffer[0] << 8) | buffer[1]
            if length < _HEADER.size:
                # No DNS message is this short: the stream is not where we think.
                self.counters["malformed_messages"] += 1
                errors.append(DecodeError("dns.tcp_length_too_short", 0))
                del buffer[:2]
                side.start_hunt()
                self.counters["bytes_discarded"] += 2
                self._hunt(side, from_client)
                if side.hunting:
                    break
                continue
            if len(buffer) < 2 + length:
                break
            payload = bytes(buffer[2:2 + length])
            del buffer[:2 + length]
            msg_ts = side.start_ts
            side.start_ts = ts           # what is left arrived in this segment
            try:
                msg = decode_message(payload)
            except DecodeError as err:
                # Framing is intact, so only this message is lost; the next one follows.
                self.counters["malformed_messages"] += 1
                failed = None if from_client else self.pairing.fail_latest(err)
                if failed is not None:
                    out.append(failed)
                else:
                    errors.append(err)
                continue
            out += self.pairing.on_message(msg_ts, self.flow, from_client, msg, length + 2)
        if errors and not out:
            raise errors[0]         # the engine counts it; nothing else is lost
        return out

    def _hunt(self, side: _Direction, from_client: bool) -> None:
        """Find the next offset that holds a length prefix and a DNS message going
        the right way (queries from the client, responses from the server) with
        one question (RFC 9619), and drop the bytes before it.

        Each offset is looked at once; one that needs more bytes to be judged
        waits in a heap until they are there. So hunting costs time in proportion
        to the bytes received, however the stream is cut up.
        """
        buffer = side.buffer
        base = side.hunt_base
        end = base + len(buffer)
        qr = 0 if from_client else 0x80
        found: int | None = None
        waiting = side.hunt_waiting
        while waiting and waiting[0][0] <= end:
            _, start = heapq.heappop(waiting)
            if start < base:
                continue             # dropped from the buffer meanwhile
            verdict = _candidate(buffer, start - base, qr)
            if verdict is True:
                found = start if found is None else min(found, start)
            elif verdict is not False:
                heapq.heappush(waiting, (start + verdict, start))
        for start in range(max(side.hunt_checked, base), end):
            if found is not None and start >= found:
                break
            verdict = _candidate(buffer, start - base, qr)
            if verdict is True:
                found = start
            elif verdict is not False:
                heapq.heappush(waiting, (start + verdict, start))
        side.hunt_checked = max(side.hunt_checked, end)
        if found is not None:
            drop = found - base
            del buffer[:drop]
            self.counters["bytes_discarded"] += drop
            self.counters["resynchronised"] += 1
            side.hunting = False
            side.hunt_waiting = []
            return
        if len(buffer) > TCP_MAX_HUNT_BYTES:
            excess = len(buffer) - TCP_MAX_HUNT_BYTES
            del buffer[:excess]
            side.hunt_base += excess
            self.counters["bytes_discarded"] += excess

    def on_gap(self, from_client: bool, missing: int, ts: float) -> list[Transaction]:
        side = self.sides[from_client]
        if side.skip:
            # Already dropping the rest of a message: the gap is part of it.
            if missing <= side.skip:
                side.skip -= missing
                return []
            side.skip = 0
            side.start_hunt()
            return []
        buffer = side.buffer
        if len(buffer) >= 2 and not side.hunting:
            needed = 2 + ((buffer[0] << 8) | buffer[1]) - len(buffer)
            self.counters["gap_messages_lost"] += 1
            self.counters["bytes_discarded"] += len(buffer)
            buffer.clear()
            if missing <= needed:
                # The gap fell inside a message of known length: skip to its end.
                side.skip = needed - missing
                return []
        else:
            self.counters["bytes_discarded"] += len(buffer)
            buffer.clear()
        side.start_hunt()
        return []

    def on_close(self, ts: float) -> list[Transaction]:
        for side in self.sides.values():
            if side.buffer:
                self.counters["bytes_discarded"] += len(side.buffer)
                side.buffer.clear()
        # No answer can come on a closed connection: report what is still open.
        return self.pairing.expire(float("inf"))

    def expire(self, now: float) -> list[Transaction]:
        return self.pairing.expire(now)


# -- documents ----------------------------------------------------------------------

_PSL: list[Callable[[str], Suffixes]] = []


def _load_public_suffix_list() -> Callable[[str], Suffixes]:
    # Loaded on first use (the list ships inside the package; no download), by a module
    # of its own that `run --user` imports before the switch (lazy_imports below).
    from wirebeat.decoders.dns_suffixes import _EXACT, _EXCEPTION, _WILDCARD, SUFFIXES, suffixes_for
    _PSL.append(suffixes_for)
    if dnscore is not None:     # document_text walks the same list in C from now on
        dnscore.configure_suffixes(SUFFIXES.tails, _EXACT, _WILDCARD, _EXCEPTION)
    return suffixes_for


@lru_cache(maxsize=16384)
def domain_parts(name: str) -> dict[str, str]:
    """registered_domain / etld_plus_one / top_level_domain / subdomain of a name.

    Public Suffix List rules, unknown TLDs counting as public suffixes (the "*"
    default rule), like packetbeat; a name that is itself a public suffix with one
    dot gets only registered_domain and top_level_domain, as packetbeat does.
    """
    parts: dict[str, str] = {}
    if not name or name == "." or name.startswith(".") or ".." in name or "\\" in name:
        return parts
    lowered = name.lower()
    registered = (_PSL[0] if _PSL else _load_public_suffix_list())(lowered).privatesuffix(lowered)
    if registered:
        registered = name[len(name) - len(registered):]     # keep the name's own case
        parts["etld_plus_one"] = registered
        parts["registered_domain"] = registered
        if "." in registered:
            parts["top_level_domain"] = registered.split(".", 1)[1]
        subdomain = name[:len(name) - len(registered)].rstrip(".")
        if subdomain:
            parts["subdomain"] = subdomain
    elif name.count(".") == 1:
        tld = name.split(".")[1]
        if tld:
            parts["top_level_domain"] = tld
        parts["registered_domain"] = name
    return parts


def _records(records: tuple[ResourceRecord, ...],
             resolved: list[str] | None = None) -> list[dict[str, Any]]:
    """The records' fields; with `resolved`, A and AAAA addresses are appended to it."""
    out = []
    for rr in records:
        entry: dict[str, Any] = dict(rr.extra) if rr.extra else {}
        entry["name"] = rr.name
        entry["type"] = TYPE_NAMES.get(rr.type) or str(rr.type)
        entry["class"] = CLASS_NAMES.get(rr.class_) or str(rr.class_)
        entry["ttl"] = str(rr.ttl)      # packetbeat emits the TTL as a string
        entry["data"] = data = rr.data
        out.append(entry)
        # An A/AAAA record whose RDATA was malformed carries hex, not an address.
        if resolved is not None and (rr.type == _TYPE_A or rr.type == _TYPE_AAAA) and (
                "." in data or ":" in data):
            resolved.append(data)
    return out


def _dns_fields(msg: DNSMessage, settings: _Settings) -> tuple[dict[str, Any], list[str]]:
    flags = {
        "authoritative": msg.authoritative,
        "truncated_response": msg.truncated,
        "recursion_desired": msg.recursion_desired,
        "recursion_available": msg.recursion_available,
        "authentic_data": msg.authentic_data,
        "checking_disabled": msg.checking_disabled,
    }
    header_flags = []
    if msg.authoritative:
        header_flags.append("AA")
    if msg.truncated:
        header_flags.append("TC")
    if msg.recursion_desired:
        header_flags.append("RD")
    if msg.recursion_available:
        header_flags.append("RA")
    if msg.authentic_data:
        header_flags.append("AD")
    if msg.checking_disabled:
        header_flags.append("CD")
    if msg.edns is not None and msg.edns.do:
        header_flags.append("DO")
    dns: dict[str, Any] = {
        "id": msg.id,
        "op_code": OPCODE_NAMES.get(msg.opcode) or str(msg.opcode),
        "flags": flags,
        "response_code": RCODE_NAMES.get(msg.rcode) or rcode_name(msg.rcode),
        "header_flags": header_flags,
    }
    if msg.questions:
        q = msg.questions[0]
        name = q.name
        question = {"name": name, "type": TYPE_NAMES.get(q.type) or str(q.type),
                    "class": CLASS_NAMES.get(q.class_) or str(q.class_)}
        question.update(domain_parts(name))
        dns["question"] = question
    if msg.edns is not None:
        opt: dict[str, Any] = {
            "version": str(msg.edns.version),
            "do": msg.edns.do,
            "ext_rcode": rcode_name(msg.edns.ext_rcode << 4),
            "udp_size": msg.edns.udp_size,
        }
        opt.update(msg.edns.options)
        dns["opt"] = opt
    resolved: list[str] = []
    dns["answers_count"] = len(msg.answers)
    if msg.answers:
        dns["answers"] = _records(msg.answers, resolved)
        if resolved:
            dns["resolved_ip"] = resolved
    dns["authorities_count"] = len(msg.authorities)
    if settings.include_authorities and msg.authorities:
        dns["authorities"] = _records(msg.authorities)
    dns["additionals_count"] = len(msg.additionals)
    if settings.include_additionals and msg.additionals:
        dns["additionals"] = _records(msg.additionals)
    return dns, resolved


def document(txn: Transaction) -> dict[str, Any]:
    """The one place DNS field names are spelled; mirrors index_templates/dns.json."""
    exchange: DNSExchange = txn.detail
    settings = exchange.settings
    shown = exchange.response or exchange.request      # dns.* comes from the response
    asked = exchange.request or exchange.response      # method/query from the request
    assert shown is not None and asked is not None
    dns, resolved = _dns_fields(shown, settings)
    dns["type"] = "answer" if exchange.response is not None else "query"
    doc: dict[str, Any] = {"dns": dns, "method": OPCODE_NAMES.get(asked.opcode) or str(asked.opcode)}
    if asked.questions:
        q = asked.questions[0]      # _question_text's, without its three calls
        doc["query"] = (f"class {CLASS_NAMES.get(q.class_) or q.class_}, "
                        f"type {TYPE_NAMES.get(q.type) or q.type}, {q.name}")
        doc["resource"] = q.name
    if settings.send_request and exchange.request is not None:
        doc["request"] = render_message(exchange.request)
    if settings.send_response and exchange.response is not None:
        doc["response"] = render_message(exchange.response)
    if resolved:
        flow = txn.flow
        related = [flow.client_ip] if flow.client_ip == flow.server_ip else [
            flow.client_ip, flow.server_ip]
        for ip in resolved:
            if ip not in related:
                related.append(ip)
        doc["related"] = {"ip": related}
    return doc


_domain_parts = domain_parts.__wrapped__      # (without its cache: _domain_parts_text has one)


@lru_cache(maxsize=16384)
def _domain_parts_text(name: str) -> str:
    """domain_parts(name) as the JSON text of keys that follow a question's class: ',"k":"v",...'.
    wirebeat._dnscore writes the same text itself once the list is loaded, for ASCII names
    without "xn--"; it asks this function for the others."""
    parts = _domain_parts(name)
    return "," + orjson.dumps(parts).decode()[1:-1] if parts else ""


def document_text(txn: Transaction) -> tuple[None, bytes, str | None] | None:
    """`document(txn)` as JSON text (DecoderSpec.document_text), written by
    wirebeat._dnscore.document_text: (None, the part without "related", related's text
    or None). None for what it leaves to document(): send_request / send_response (the
    messages' text), values of unexpected types, more than 32 resolved addresses.
    tests/beat/test_dnstext.py compares it with document()."""
    exchange: DNSExchange = txn.detail
    settings = exchange.settings
    if settings.send_request or settings.send_response:
        return None
    flow = txn.flow
    built = _document_text(exchange.request, exchange.response, settings.include_authorities,
                           settings.include_additionals, flow.client_ip, flow.server_ip)
    return None if built is None else (None, built[0], built[1])


if dnscore is not None:
    dnscore.configure_text(TYPE_NAMES, CLASS_NAMES, OPCODE_NAMES, RCODE_NAMES, _domain_parts_text)
    _document_text = dnscore.document_text


DECODER = DecoderSpec(
    name="dns",
    document=document,
    document_text=None if dnscore is None else document_text,
    datagram=DNSDecoder,
    stream=DNSStream,
    ports=(53,),
    options={
        "include_authorities": Option("bool", False,
                                      "add dns.authorities (the count is always there)"),
        "include_additionals": Option("bool", False,
                                      "add dns.additionals (the count is always there)"),
        "max_pending": Option("int", MAX_PENDING_DEFAULT,
                              "queries awaiting a response, per capture source (UDP) or per "
                              "connection (TCP); when full the oldest is reported unanswered"),
    },
    lazy_imports=("wirebeat.decoders.dns_suffixes",),
)
