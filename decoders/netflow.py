"""NetFlow v1/v5/v7, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) export packets.

One document per flow record (`netflow.type: netflow_flow`) and per options
record (`netflow_options`), with Filebeat's netflow input field names: every
field of the record under `netflow.*`, named after the IANA IPFIX registry
(RFC 7012, elements 1-533) in snake_case (decoders/ipfix_elements.py); RFC
5103 reverse elements (enterprise 29305) as `reverse_<name>`, typed as their
forward element; elements not in the table, other enterprise-specific ones
included, are kept as hex under their numbers in `netflow.unknown_fields`
("600:0a0b", "32473.1:ff"). The ECS fields (source,
destination, network.bytes/packets/transport/iana_number, event.start/end)
come from the record; v1/v5/v7 records are read as fixed templates of the same
elements, as Filebeat maps them.

State is kept per exporter (its address "ip:port") and, below it, per
(version, observation domain / source id): templates and options templates by
template id, the sequence number expected next, the last sampling interval an
options record announced. Templates can be withdrawn (IPFIX) and redefined. A
data set whose template has not arrived is held (at most
`max_pending_sets` per exporter) and decoded when the template comes, or
dropped and counted after `pending_timeout` (packet time).

Sequence numbers: v5/v7 count flow records, v9 export packets, IPFIX data
records (per domain). A sequence number ahead of the expected one counts the
difference as lost (`lost_records` / `lost_packets`, also on the documents of
that packet as `netflow.exporter.lost_*`); one far behind, or a sysUptime gone
backwards, is an exporter restart (`exporter_restarts`,
`netflow.exporter.restarted: true`); one a little behind is a late packet.

Sampling: the v5 header's interval, or the last samplingInterval /
samplerRandomInterval / samplingPacketInterval an options record of the same
domain carried, is recorded on each flow as `netflow.sampling_interval` when
the record has none of its own. Counts are never rescaled.

Structured data (RFC 6313): a basicList becomes an array of its element's
values (at most MAX_LIST_VALUES; a list that does not add up stays hex). A
subTemplateList or subTemplateMultiList becomes an array of records, each an
object of element names decoded with the same domain's templates (a
multi-list's blocks one after another, lists inside lists down to
MAX_LIST_DEPTH); one whose template is not known or whose lengths do not add
up goes to unknown_fields as number:hex. Not decoded: unsigned256 bitmaps
(hex), v6/v8 aggregation packets, per-sampler-id sampling scopes.

Speed: a fixed-length template is compiled once to a struct format and one
generated function from the unpacked values to the record (per layout,
cached), a data set unpacked with one iter_unpack, and each record's whole
document built at once (`whole_document`, no merge into the engine's fields),
or its JSON text directly (`whole_text`) when the output takes ready JSON.
With the C accelerator (wirebeat._nfcore) a data set of a template it covers
(`Template.c_plan`) goes to the engine as one `RecordSet`, whose documents are
made in one C call per set (wirebeat.sources.netflow.publish_set); this
module's Python path stays the reference (tests/beat/test_nfcore.py).
"""
from __future__ import annotations

import socket
import struct
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, NamedTuple

import orjson

from wirebeat.accel import nfcore
from wirebeat.decoders.api import (Datagram, DecodeError, DecoderSpec, FlowKey, Option, Transaction,
                                    Truncated, iso_time)
from wirebeat.decoders.ipfix_elements import ELEMENTS

__all__ = ["DECODER", "NetflowDecoder", "RecordSet", "document", "looks_like_export"]

PORTS = (2055, 4739, 9995, 9996)
MAX_U32 = 1 << 32
MAX_U64 = 1 << 64
NTP_EPOCH_OFFSET = 2208988800          # seconds from 1900-01-01 to 1970-01-01
LATE_WINDOW = 1000                     # packets/records behind the expected sequence: late, not a restart

_V5_HEADER = struct.Struct("!HHIIIIBBH")     # version count uptime secs nsecs sequence engine_type engine_id sampling
_V1_HEADER = struct.Struct("!HHIII")
_V7_HEADER = struct.Struct("!HHIIIII")
_V9_HEADER = struct.Struct("!HHIIII")        # version count uptime secs sequence source_id
_IPFIX_HEADER = struct.Struct("!HHIII")      # version length export_time sequence domain
_SET_HEADER = struct.Struct("!HH")
_U16 = struct.Struct("!H")

PADDING = -1      # a field the fixed v1/v5/v7 layouts skip
V9_SCOPE = -2     # enterprise marker of a v9 options template's scope fields (RFC 3954 section 6.1)
_V9_SCOPES = {1: "scope_system", 2: "scope_interface", 3: "scope_line_card", 4: "scope_cache",
              5: "scope_template"}

# v1/v5/v7 records as (element, length) lists: the elements Filebeat maps them to.
_V5_LAYOUT = ((8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4),
              (7, 2), (11, 2), (PADDING, 1), (6, 1), (4, 1), (5, 1), (16, 2), (17, 2),
              (9, 1), (13, 1), (PADDING, 2))
_V1_LAYOUT = ((8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4),
              (7, 2), (11, 2), (PADDING, 2), (4, 1), (5, 1), (6, 1), (PADDING, 7))
_V7_LAYOUT = ((8, 4), (12, 4), (15, 4), (10, 2), (14, 2), (2, 4), (1, 4), (22, 4), (21, 4),
              (7, 2), (11, 2), (PADDING, 1), (6, 1), (4, 1), (5, 1), (16, 2), (17, 2),
              (9, 1), (13, 1), (PADDING, 2), (43, 4))

# ECS network.transport: IANA protocol keywords, lower case.
_TRANSPORTS = {1: "icmp", 2: "igmp", 4: "ipv4", 6: "tcp", 17: "udp", 41: "ipv6", 47: "gre",
               50: "esp", 51: "ah", 58: "ipv6-icmp", 89: "ospf", 103: "pim", 112: "vrrp",
               132: "sctp", 136: "udplite"}

_SAMPLING_ELEMENTS = ("sampling_interval", "sampler_random_interval", "sampling_packet_interval")

VERSIONS = {1: "v1", 5: "v5", 7: "v7", 9: "v9", 10: "ipfix"}


def looks_like_export(payload: bytes) -> bool:
    """A cheap guess: does this datagram start like a NetFlow/IPFIX export packet?"""
    if len(payload) < 16:
        return False
    version = _U16.unpack_from(payload)[0]
    if version == 10:
        return _U16.unpack_from(payload, 2)[0] <= len(payload)
    return version in (1, 5, 7, 9)


# -- value conversion ------------------------------------------------------------


def _ipv6(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, raw)


def _mac(raw: bytes) -> str:
    return raw.hex(":")


def _hex(raw: bytes) -> str:
    return raw.hex()


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode("utf-8", "replace")


def _unsigned(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def _signed(raw: bytes) -> int:
    return int.from_bytes(raw, "big", signed=True)


def _boolean(value: int) -> bool:
    return value == 1          # RFC 7011 section 6.1.5: 1 is true, 2 is false


def _seconds_date(value: int) -> str:
    return iso_time(value)


_YEAR_10000_MS = 253_402_300_800_000   # 10000-01-01T00:00:00Z: Elasticsearch dates end before it


def _millis_date(value: int) -> str | None:
    """A 64-bit millisecond time; None (JSON null) past year 9999, which no date field
    takes: Elasticsearch would reject the whole document for one wild value."""
    return iso_time(value / 1000) if value < _YEAR_10000_MS else None


def _ntp_date(value: int) -> str:
    return iso_time((value >> 32) - NTP_EPOCH_OFFSET + (value & 0xFFFFFFFF) / MAX_U32)


REVERSE_PEN = 29305      # RFC 5103 section 6.1: reverse elements, "reverse" + the forward name
_REVERSE = {element: ("reverse_" + name, kind) for element, (name, kind) in ELEMENTS.items()}
_STRUCTURED = ("basicList", "subTemplateList", "subTemplateMultiList")
MAX_LIST_VALUES = 1024   # values decoded from one basicList; a longer list is kept as hex
_SUB_TEMPLATE_KINDS = ("subTemplateList", "subTemplateMultiList")
MAX_LIST_DEPTH = 4       # subTemplateLists inside subTemplateLists; deeper ones are kept as hex

_INT_CODES = {1: "B", 2: "H", 4: "I", 8: "Q"}
_SIGNED_CODES = {1: "b", 2: "h", 4: "i", 8: "q"}


def _field_plan(element: int, enterprise: int, length: int,
                in_list: bool = False) -> tuple[str, str, Callable[[Any], Any] | None]:
    """(struct code, field name, converter) for one template field of fixed length.

    A length the element's type does not allow (reduced-size encoding aside)
    keeps the value as hex, as an unknown element is kept. `in_list`: a basicList's
    values, where structured data is kept as hex (no nesting, no recursion).
    """
    if enterprise == V9_SCOPE:
        name = _V9_SCOPES.get(element)
        if name is None or length not in _INT_CODES:
            return f"{length}s", f"unknown:scope.{element}", _hex
        return _INT_CODES[length], name, None
    if enterprise == 0:
        known = ELEMENTS.get(element)
    else:
        known = _REVERSE.get(element) if enterprise == REVERSE_PEN else None
    if known is None:
        return f"{length}s", _unknown_name(element, enterprise), _hex
    name, kind = known
    if kind == "basicList" and not in_list:
        return f"{length}s", name, _basic_list
    if kind in _SUB_TEMPLATE_KINDS and not in_list:
        return f"{length}s", name, None     # bytes, decoded with the domain's templates (_sub_lists)
    if kind in _STRUCTURED or kind == "unsigned256":
        return f"{length}s", name, _hex
    if kind.startswith("unsigned") or kind in ("dateTimeSeconds", "dateTimeMilliseconds",
                                              "dateTimeMicroseconds", "dateTimeNanoseconds", "boolean"):
        code = _INT_CODES.get(length)
        conv: Callable[[Any], Any] | None = None
        if kind == "dateTimeSeconds":
            conv = _seconds_date
            if length == 8:         # RFC 7011 6.1.7: 32 bits; 64 could pass what gmtime() takes
                return f"{length}s", _unknown_name(element, enterprise), _hex
        elif kind == "dateTimeMilliseconds":
            conv = _millis_date
        elif kind.startswith("dateTimeM") or kind == "dateTimeNanoseconds":
            conv = _ntp_date
            if length != 8:
                return f"{length}s", _unknown_name(element, enterprise), _hex
        elif kind == "boolean":
            conv = _boolean
        if code is None:                     # reduced-size encoding of odd length (3, 5, 6, 7)
            if length > 8 or length == 0 or conv is not None:
                return f"{length}s", _unknown_name(element, enterprise), _hex
            return f"{length}s", name, _unsigned
        return code, name, conv
    if kind.startswith("signed"):
        code = _SIGNED_CODES.get(length)
        if code is None:
            return f"{length}s", name, _signed
        return code, name, None
    if kind == "ipv4Address" and length == 4:
        return "4s", name, socket.inet_ntoa
    if kind == "ipv6Address" and length == 16:
        return "16s", name, _ipv6
    if kind == "macAddress" and length == 6:
        return "6s", name, _mac
    if kind == "float64" and length in (4, 8):
        return ("f" if length == 4 else "d"), name, None
    if kind == "float32" and length == 4:
        return "f", name, None
    if kind == "string":
        return f"{length}s", name, _text
    if kind == "octetArray":
        return f"{length}s", name, _hex
    return f"{length}s", _unknown_name(element, enterprise), _hex


def _unknown_name(element: int, enterprise: int) -> str:
    return f"unknown:{element}" if enterprise == 0 else f"unknown:{enterprise}.{element}"


def _value(code: str, conv: Callable[[Any], Any] | None, raw: bytes) -> Any:
    value = bytes(raw) if code.endswith("s") else struct.unpack("!" + code, raw)[0]
    return value if conv is None else conv(value)


def _basic_list(raw: bytes) -> list[Any] | str:
    """RFC 6313 section 4.5.1 basicList: semantic (1), field id (2), element length (2),
    enterprise number (4, when the id's top bit is set), then the values. The values,
    each decoded as its element is; a list that does not add up stays hex."""
    size = len(raw)
    if size < 5:
        return raw.hex()
    element, length = struct.unpack_from("!HH", raw, 1)
    offset, enterprise = 5, 0
    if element & 0x8000:
        if size < 9:
            return raw.hex()
        enterprise = struct.unpack_from("!I", raw, 5)[0]
        element &= 0x7FFF
        offset = 9
    values: list[Any] = []
    while offset < size:
        n = length
        if n == VARIABLE:
            n = raw[offset]
            offset += 1
            if n == 255:
                if offset + 2 > size:
                    return raw.hex()
                n = _U16.unpack_from(raw, offset)[0]
                offset += 2
        if (n == 0 and length != VARIABLE) or offset + n > size or len(values) >= MAX_LIST_VALUES:
            return raw.hex()
        code, _name, conv = _field_plan(element, enterprise, n, in_list=True)
        values.append(_value(code, conv, raw[offset:offset + n]))
        offset += n
    return values


# -- templates ---------------------------------------------------------------------


VARIABLE = 65535       # IPFIX: the field's length comes with each record (RFC 7011 section 7)


@dataclass(slots=True)
class Template:
    """A (options) template, compiled once for decoding its records."""

    template_id: int
    fields: tuple[tuple[int, int, int], ...]     # (element, enterprise number, length)
    scope_fields: int = 0                        # options templates: leading scope fields
    record_length: int = 0                       # 0 when a field has variable length
    min_length: int = 0                          # smallest possible record
    iter_unpack: Callable[..., Any] | None = None   # fixed-length records: a compiled struct
    names: tuple[str, ...] = ()                  # field name of each unpacked value
    converters: tuple[tuple[int, Callable[[Any], Any]], ...] = ()   # (value index, converter)
    has_unknown: bool = True                     # records may carry "unknown:<number>" names
    row: Callable[[tuple[Any, ...]], dict[str, Any]] | None = None   # unpacked values -> record
    # RFC 6313 subTemplateList / subTemplateMultiList fields: (name, element, enterprise,
    # multi); their values come out of records() as bytes, for _sub_lists to decode.
    sub_lists: tuple[tuple[str, int, int, bool], ...] = ()
    # wirebeat._nfcore's plan of a flow template it covers (_c_plan), else None.
    c_plan: tuple[tuple[int, int, int, int, bytes], ...] | None = None

    @classmethod
    def compile(cls, template_id: int, fields: tuple[tuple[int, int, int], ...],
                scope_fields: int = 0) -> Template:
        variable = any(length == VARIABLE for _, _, length in fields)
        min_length = sum(1 if length == VARIABLE else length for _, _, length in fields)
        template = cls(template_id, fields, scope_fields, 0, min_length)
        sub_lists = []
        for element, enterprise, _length in fields:
            known = ELEMENTS.get(element) if enterprise == 0 else (
                _REVERSE.get(element) if enterprise == REVERSE_PEN else None)
            if known is not None and known[1] in _SUB_TEMPLATE_KINDS:
                sub_lists.append((known[0], element, enterprise, known[1] == "subTemplateMultiList"))
        template.sub_lists = tuple(sub_lists)
        if sub_lists:
            template.has_unknown = True     # a list that cannot be decoded is kept as number:hex
        if not variable:
            codes, names, converters = [], [], []
            for element, enterprise, length in fields:
                if element == PADDING or (enterprise == 0 and element == 210):   # paddingOctets
                    codes.append(f"{length}x")
                    continue
                code, name, conv = _field_plan(element, enterprise, length)
                codes.append(code)
                if conv is not None:
                    converters.append((len(names), conv))
                names.append(name)
            compiled = struct.Struct("!" + "".join(codes))
            template.record_length = compiled.size
            template.iter_unpack = compiled.iter_unpack
            template.names = tuple(names)
            template.converters = tuple(converters)
            template.row = _row_function(template.names, template.converters)
            template.has_unknown = bool(sub_lists) or any(name.startswith("unknown:") for name in names)
            if nfcore is not None and not scope_fields and not template.has_unknown:
                template.c_plan = _c_plan(fields)
        return template

    def records(self, data: bytes, start: int, end: int) -> list[dict[str, Any]]:
        """Every record between start and end; what is left shorter than a record is padding."""
        out: list[dict[str, Any]] = []
        if self.iter_unpack is not None:
            size = self.record_length
            if size == 0:
                return out
            count = (end - start) // size
            return list(map(self.row, self.iter_unpack(memoryview(data)[start:start + count * size])))
        offset = start
        while end - offset >= max(self.min_length, 1):
            record, offset = self._variable_record(data, offset, end)
            out.append(record)
        return out

    def _variable_record(self, data: bytes, offset: int, end: int) -> tuple[dict[str, Any], int]:
        record: dict[str, Any] = {}
        for element, enterprise, length in self.fields:
            if length == VARIABLE:
                if offset >= end:
                    raise Truncated("netflow.variable_length_past_set", offset)
                length = data[offset]
                offset += 1
                if length == 255:
                    if offset + 2 > end:
                        raise Truncated("netflow.variable_length_past_set", offset)
                    length = _U16.unpack_from(data, offset)[0]
                    offset += 2
            if offset + length > end:
                raise Truncated("netflow.variable_length_past_set", offset)
            raw = data[offset:offset + length]
            offset += length
            if element == PADDING or (enterprise == 0 and element == 210):
                continue
            code, name, conv = _field_plan(element, enterprise, length)
            record[name] = _value(code, conv, raw)
        return record, offset


@lru_cache(maxsize=256)        # exporters resend their templates: compile each layout once
def _row_function(names: tuple[str, ...], converters: tuple[tuple[int, Callable[[Any], Any]], ...]
                  ) -> Callable[[tuple[Any, ...]], dict[str, Any]]:
    """One function per record layout turning its unpacked values into the record dict:
    `lambda v: {"name0": v[0], "name1": c1(v[1]), ...}` (a repeated name keeps its first
    place and its last value, as dict(zip()) would). The generated text holds only
    indices and repr() of names from the element table, never bytes off the wire."""
    convert = dict(converters)
    namespace = {f"c{index}": conv for index, conv in converters}
    items = ", ".join(f"{name!r}: {f'c{i}(v[{i}])' if i in convert else f'v[{i}]'}"
                      for i, name in enumerate(names))
    return eval(f"lambda v: {{{items}}}", namespace)      # noqa: S307 (see the docstring)


C_MAX_FIELDS = 512      # beat/_nfcore.c MAX_FIELDS: a longer template stays in Python
# wirebeat._nfcore's field types (beat/_nfcore.c T_*) by the converter _field_plan gives.
_C_CONVERTERS: dict[Any, int] = {_unsigned: 0, _signed: 1, socket.inet_ntoa: 2, _ipv6: 3, _mac: 4,
                                  _hex: 5, _boolean: 6, _seconds_date: 7, _millis_date: 8}
_C_UNSIGNED_CODES = {"B", "H", "I", "Q"}
_C_SIGNED_CODES = {"b", "h", "i", "q"}
# The fields _transaction and _flow_times read (beat/_nfcore.c R_*) and the type each must have.
_C_ROLES = {"source_ipv4_address": (1, 2), "source_ipv6_address": (2, 3),
            "destination_ipv4_address": (3, 2), "destination_ipv6_address": (4, 3),
            "source_transport_port": (5, 0), "destination_transport_port": (6, 0),
            "protocol_identifier": (7, 0), "packet_delta_count": (8, 0), "packet_total_count": (9, 0),
            "octet_delta_count": (10, 0), "octet_total_count": (11, 0),
            "flow_start_sys_up_time": (12, 0), "flow_end_sys_up_time": (13, 0),
            "flow_start_milliseconds": (14, 8), "flow_end_milliseconds": (15, 8),
            "flow_start_seconds": (16, 7), "flow_end_seconds": (17, 7)}
# Times _flow_times reads that the C code does not: their templates stay in Python.
_C_LEFT_OUT = {"flow_start_microseconds", "flow_end_microseconds", "flow_start_nanoseconds",
               "flow_end_nanoseconds", "flow_start_delta_microseconds", "flow_end_delta_microseconds",
               "system_init_time_milliseconds", "sampling_interval"}


def _c_plan(fields: tuple[tuple[int, int, int], ...]) -> tuple[tuple[int, int, int, int, bytes], ...] | None:
    """(offset, length, type, role, b'"name":') per field of a fixed-length flow template
    whose every field wirebeat._nfcore writes as the Python path does; None when one is
    not (floats, strings, lists, NTP times, unknown or repeated elements: see _nfcore.c)."""
    plan, names, offset = [], set(), 0
    for element, enterprise, length in fields:
        here, offset = offset, offset + length
        if element == PADDING or (enterprise == 0 and element == 210):
            continue
        code, name, conv = _field_plan(element, enterprise, length)
        if conv is None:
            kind = 0 if code in _C_UNSIGNED_CODES else 1 if code in _C_SIGNED_CODES else None
        else:
            kind = _C_CONVERTERS.get(conv)
            if kind == 1 and length > 8:        # _signed of a long field
                kind = None
        if kind is None or name in names or name in _C_LEFT_OUT or name.startswith("unknown:"):
            return None
        role, role_kind = _C_ROLES.get(name, (0, kind))
        if role_kind != kind:
            return None
        names.add(name)
        plan.append((here, length, kind, role, orjson.dumps(name) + b":"))
    return tuple(plan) if len(plan) <= C_MAX_FIELDS else None


def _sub_lists(template: Template, records: list[dict[str, Any]], templates: Mapping[int, Template],
               depth: int = 1) -> None:
    """Decode the template's subTemplateList / subTemplateMultiList values of `records` in
    place (RFC 6313 sections 4.5.2, 4.5.3) into arrays of records, each an object of
    element names as the data record's own fields; their records' own lists likewise, down
    to MAX_LIST_DEPTH. A list whose template is not known (yet), or whose lengths do not
    add up, goes to unknown_fields as "<number>:<hex>" instead (never a string under the
    list's name, which is mapped `flattened`: an object or an array of objects)."""
    for name, element, enterprise, multi in template.sub_lists:
        for record in records:
            raw = record.get(name)
            if type(raw) is not bytes:
                continue
            decoded = _sub_list(raw, multi, templates, depth) if depth <= MAX_LIST_DEPTH else None
            if decoded is None:
                del record[name]
                record[_unknown_name(element, enterprise)] = raw.hex()
            else:
                record[name] = decoded


def _sub_list(raw: bytes, multi: bool, templates: Mapping[int, Template],
              depth: int) -> list[dict[str, Any]] | None:
    """The records of one list value, or None when it cannot be decoded."""
    if len(raw) < 1 + (0 if multi else 2):
        return None
    out: list[dict[str, Any]] = []
    offset = 1                          # the semantic (RFC 6313 section 4.4) is not kept
    end = len(raw)
    while offset < end:
        if multi:                       # blocks: template id, block length (with these 4 bytes)
            if end - offset < 4:
                return None
            template_id, length = struct.unpack_from("!HH", raw, offset)
            if length < 4 or offset + length > end:
                return None
            start, stop, offset = offset + 4, offset + length, offset + length
        else:
            template_id = _U16.unpack_from(raw, offset)[0]
            start, stop, offset = offset + 2, end, end
        template = templates.get(template_id)
        if template is None:
            return None
        records = _exact_records(template, raw, start, stop)
        if records is None or len(out) + len(records) > MAX_LIST_VALUES:
            return None
        if template.sub_lists:
            _sub_lists(template, records, templates, depth + 1)
        for record in records:
            unknown = [f"{n[8:]}:{record.pop(n)}" for n in [n for n in record if n.startswith("unknown:")]]
            if unknown:
                record["unknown_fields"] = unknown
        out.extend(records)
    return out


def _exact_records(template: Template, raw: bytes, start: int, stop: int) -> list[dict[str, Any]] | None:
    """Records filling raw[start:stop] exactly (a list has no padding), or None."""
    if template.iter_unpack is not None:
        if template.record_length == 0 or (stop - start) % template.record_length:
            return None
        return template.records(raw, start, stop)
    records, offset = [], start
    try:
        while offset < stop and len(records) <= MAX_LIST_VALUES:
            record, offset = template._variable_record(raw, offset, stop)
            records.append(record)
    except DecodeError:
        return None
    return records if offset == stop else None


_FIXED_LAYOUTS = {1: _V1_LAYOUT, 5: _V5_LAYOUT, 7: _V7_LAYOUT}


@lru_cache(maxsize=None)
def _fixed_template(version: int) -> Template:
    """The template of v1, v5 or v7 records, compiled at the first export of that
    version (compiling the three at import was ~4.7 M instructions of every start-up)."""
    return Template.compile(0, tuple((e, 0, n) for e, n in _FIXED_LAYOUTS[version]))


# -- per exporter state -------------------------------------------------------------


@dataclass(slots=True)
class _Domain:
    """One (version, observation domain / source id) of an exporter."""

    templates: dict[int, Template] = field(default_factory=dict)
    expected_sequence: int | None = None
    last_uptime_ms: int | None = None
    last_sequence: int | None = None
    sampling_interval: int | None = None
    system_init_ms: str | None = None         # IPFIX: options records may say when sysUpTime began


@dataclass(slots=True)
class _Pending:
    """A data set held until its template arrives."""

    ts: float
    version: int
    domain_id: int
    template_id: int
    data: bytes                     # the set's records (header removed)
    export: dict[str, Any]          # the header fields of its packet
    export_ts: float
    uptime: int | None
    source: str
    identity: str


@dataclass(slots=True)
class _Exporter:
    """What is kept per exporter: templates per domain, sequences, held sets."""

    address: str
    ip: str
    domains: dict[tuple[int, int], _Domain] = field(default_factory=dict)
    template_count: int = 0
    pending: deque[_Pending] = field(default_factory=deque)
    counts: Counter[str] = field(default_factory=Counter)


class FlowRecord(NamedTuple):
    """What a document is made of: the record's fields and its export packet's header.

    A named tuple, made with `_new_record` (tuple.__new__, no Python-level __init__: a
    slotted dataclass cost ~0.5 us per record here)."""

    kind: str                       # "netflow_flow" or "netflow_options"
    fields: dict[str, Any]          # netflow.* (names from the registry)
    export: dict[str, Any]          # netflow.exporter.*
    exporter_ip: str
    start_ts: float | None
    end_ts: float | None
    packets: int | None
    bytes: int | None
    iana_number: int | None
    export_text: list[str]          # whole_text's JSON of `export`, made once per data set
    times_text: tuple[str | None, str | None]    # iso_time(start_ts), iso_time(end_ts) when known


_new_record = tuple.__new__


class RecordSet:
    """The flow records of one data set of a template wirebeat._nfcore covers (Template.c_plan),
    handed to the engine as one item among the Transactions: the engine has them made into
    documents at once (wirebeat.sources.netflow.publish_set) when its output takes JSON
    text, or asks for `transactions()`, the Python path's, one per record."""

    __slots__ = ("decoder", "exporter", "template", "data", "start", "count", "export",
                 "export_ts", "uptime", "source", "prefix", "sampling")

    def __init__(self, decoder: NetflowDecoder, exporter: _Exporter, template: Template, data: bytes,
                 start: int, count: int, export: dict[str, Any], export_ts: float, uptime: int | None,
                 source: str, prefix: str, sampling: int) -> None:
        self.decoder, self.exporter, self.template = decoder, exporter, template
        self.data, self.start, self.count, self.export = data, start, count, export
        self.export_ts, self.uptime, self.source = export_ts, uptime, source
        self.prefix, self.sampling = prefix, sampling

    @property
    def detail(self) -> RecordSet:
        """As a Transaction's: `.detail.export` is the packet's header. (A property, not an
        attribute holding itself: that made every data set a cycle, freed only by the
        garbage collector.)"""
        return self

    def transactions(self, indices: Any = None) -> list[Transaction]:
        """The records (all, or those at `indices`) as the Python path makes them."""
        template, size, start, sampling = self.template, self.template.record_length, self.start, self.sampling
        assert template.iter_unpack is not None and template.row is not None
        export_text: list[str] = []
        out = []
        for index in range(self.count) if indices is None else indices:
            offset = start + index * size
            record = template.row(next(template.iter_unpack(memoryview(self.data)[offset:offset + size])))
            if sampling:
                record["sampling_interval"] = sampling
            out.append(self.decoder._transaction(self.exporter, record, "netflow_flow", self.export,
                                                 self.export_ts, self.uptime, self.source,
                                                 self.prefix + str(index), template.has_unknown,
                                                 export_text))
        return out


class NetflowDecoder:
    """Export packets of every exporter of one capture source (a listener, a file)."""

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.max_exporters: int = options.get("max_exporters", 1024)
        self.max_templates: int = options.get("max_templates", 1024)
        self.max_domains: int = options.get("max_domains", 256)
        self.max_pending_sets: int = options.get("max_pending_sets", 256)
        self.pending_timeout_s: float = options.get("pending_timeout", 60.0)
        self.exporters: OrderedDict[str, _Exporter] = OrderedDict()     # oldest first (O(1))
        self.totals: Counter[str] = Counter()
        self.pending_sets = 0
        self.held_in_packet = 0         # data sets of the current packet held for their template
        # Data sets of templates wirebeat._nfcore covers come as one RecordSet each instead of
        # Transactions: set by the engine, whose _emit takes them (sources.netflow.publish_set).
        self.record_sets = False

    @property
    def counters(self) -> dict[str, int]:
        """Totals, and per exporter ("exporter.<ip:port>.<what>"): read by the engine's monitoring."""
        out = dict(self.totals)
        out["exporters"] = len(self.exporters)
        out["pending_sets"] = self.pending_sets
        for exporter in self.exporters.values():
            for what, n in exporter.counts.items():
                out[f"exporter.{exporter.address}.{what}"] = n
        return out

    # -- entry points ----------------------------------------------------------

    def on_datagram(self, dgram: Datagram) -> list[Transaction]:
        flow = dgram.flow
        if dgram.from_client:
            exporter_ip, exporter_port = flow.client_ip, flow.client_port
        else:
            exporter_ip, exporter_port = flow.server_ip, flow.server_port
        address = f"[{exporter_ip}]:{exporter_port}" if ":" in exporter_ip else f"{exporter_ip}:{exporter_port}"
        exporter = self.exporters.get(address) or self._new_exporter(address, exporter_ip)
        try:
            txns = self._decode(exporter, dgram.payload, dgram.ts, flow.source)
        except DecodeError as err:
            self.totals["malformed." + err.reason] += 1
            exporter.counts["malformed." + err.reason] += 1
            raise
        exporter.counts["packets"] += 1
        return txns

    def expire(self, now: float) -> list[Transaction]:
        """Drop held data sets whose template did not come within pending_timeout."""
        if not self.pending_sets:
            return []
        limit = now - self.pending_timeout_s
        for exporter in self.exporters.values():
            pending = exporter.pending
            while pending and pending[0].ts < limit:
                pending.popleft()
                self._lost_pending(exporter, "pending_expired")
        return []

    # -- packets ---------------------------------------------------------------

    def _new_exporter(self, address: str, ip: str) -> _Exporter:
        if len(self.exporters) >= self.max_exporters:
            evicted = self.exporters.popitem(last=False)[1]
            self.pending_sets -= len(evicted.pending)
            self.totals["exporters_evicted"] += 1
        exporter = self.exporters[address] = _Exporter(address, ip)
        return exporter

    def _decode(self, exporter: _Exporter, data: bytes, ts: float, source: str) -> list[Transaction]:
        if len(data) < 4:
            raise Truncated("netflow.truncated_header", 0)
        version = _U16.unpack_from(data)[0]
        if version == 5:
            return self._fixed(exporter, data, ts, source, version)
        if version == 9:
            return self._v9(exporter, data, ts, source)
        if version == 10:
            return self._ipfix(exporter, data, ts, source)
        if version in (1, 7):
            return self._fixed(exporter, data, ts, source, version)
        raise DecodeError("netflow.unknown_version", 0)

    def _fixed(self, exporter: _Exporter, data: bytes, ts: float, source: str,
               version: int) -> list[Transaction]:
        """v1, v5, v7: a header, then `count` records of one fixed layout."""
        sampling = 0
        engine: tuple[int, int] | None = None
        if version == 5:
            header, template = _V5_HEADER, _fixed_template(5)
            if len(data) < header.size:
                raise Truncated("netflow.truncated_header", 0)
            (_, count, uptime, secs, nsecs, sequence, engine_type, engine_id,
             sampling_field) = header.unpack_from(data)
            engine = (engine_type, engine_id)
            sampling = sampling_field & 0x3FFF          # top two bits: the sampling mode
        elif version == 7:
            header, template = _V7_HEADER, _fixed_template(7)
            if len(data) < header.size:
                raise Truncated("netflow.truncated_header", 0)
            _, count, uptime, secs, nsecs, sequence, _reserved = header.unpack_from(data)
        else:
            header, template = _V1_HEADER, _fixed_template(1)
            if len(data) < header.size:
                raise Truncated("netflow.truncated_header", 0)
            _, count, uptime, secs, nsecs = header.unpack_from(data)
            sequence = None
        end = header.size + count * template.record_length
        if count == 0 or count > 30 or end > len(data):
            # v5 packets hold at most 30 records; a count past the bytes is a lie.
            raise DecodeError("netflow.bad_record_count", 2)
        export_ts = secs + nsecs / 1e9
        domain = self._domain(exporter, version, 0)
        notes = self._sequence(exporter, domain, version, sequence, count, uptime)
        export = {"version": version, "timestamp": iso_time(export_ts), "uptime_millis": uptime,
                  "address": exporter.address, "source_id": 0}
        if engine is not None:
            export["engine_type"], export["engine_id"] = engine
        if sequence is not None:
            export["sequence_number"] = sequence
        export.update(notes)
        txns: list[Any] = []
        self._count(exporter, "records", count)
        prefix = f"{exporter.address}|{version}|0|{sequence}|0|"
        if template.c_plan is not None and self.record_sets:
            txns.append(RecordSet(self, exporter, template, data, header.size, count, export,
                                  export_ts, uptime, source, prefix, sampling))
            return txns
        export_text: list[str] = []
        for index, record in enumerate(template.records(data, header.size, end)):
            if sampling:
                record["sampling_interval"] = sampling
            txns.append(self._transaction(exporter, record, "netflow_flow", export, export_ts,
                                          uptime, source, prefix + str(index), False, export_text))
        return txns

    def _v9(self, exporter: _Exporter, data: bytes, ts: float, source: str) -> list[Transaction]:
        if len(data) < _V9_HEADER.size:
            raise Truncated("netflow.truncated_header", 0)
        _, _count, uptime, secs, sequence, source_id = _V9_HEADER.unpack_from(data)
        domain = self._domain(exporter, 9, source_id)
        export = {"version": 9, "timestamp": iso_time(secs), "uptime_millis": uptime,
                  "address": exporter.address, "source_id": source_id,
                  "sequence_number": sequence}
        export.update(self._sequence(exporter, domain, 9, sequence, 1, uptime))
        return self._sets(exporter, domain, 9, source_id, data, _V9_HEADER.size, len(data),
                          export, float(secs), uptime, ts, source, str(sequence))

    def _ipfix(self, exporter: _Exporter, data: bytes, ts: float, source: str) -> list[Transaction]:
        if len(data) < _IPFIX_HEADER.size:
            raise Truncated("netflow.truncated_header", 0)
        _, length, export_time, sequence, domain_id = _IPFIX_HEADER.unpack_from(data)
        if length > len(data):
            raise Truncated("netflow.ipfix_length_past_datagram", 2)
        if length < _IPFIX_HEADER.size:
            raise DecodeError("netflow.ipfix_bad_length", 2)
        domain = self._domain(exporter, 10, domain_id)
        export = {"version": 10, "timestamp": iso_time(export_time), "address": exporter.address,
                  "source_id": domain_id, "sequence_number": sequence}
        previous = domain.expected_sequence
        self.held_in_packet = 0
        txns = self._sets(exporter, domain, 10, domain_id, data, _IPFIX_HEADER.size, length,
                          export, float(export_time), None, ts, source, str(sequence))
        # RFC 7011 section 3.1: the sequence counts data records sent before this message.
        records = sum(t.count if t.__class__ is RecordSet else 1 for t in txns if t.detail.export is export)
        notes = self._ipfix_sequence(exporter, domain, previous, sequence, records,
                                     self.held_in_packet)
        if notes:
            export.update(notes)
        return txns

    # -- sets ------------------------------------------------------------------

    def _sets(self, exporter: _Exporter, domain: _Domain, version: int, domain_id: int,
              data: bytes, offset: int, end: int, export: dict[str, Any], export_ts: float,
              uptime: int | None, ts: float, source: str, sequence: str) -> list[Transaction]:
        template_set, options_set = (0, 1) if version == 9 else (2, 3)
        txns: list[Transaction] = []
        index = 0
        while end - offset >= 4:
            set_id, length = _SET_HEADER.unpack_from(data, offset)
            if length < 4 or offset + length > end:
                # The set's own length lies: nothing after it can be found again.
                self._count(exporter, "bad_set_length")
                break
            body, set_end = offset + 4, offset + length
            offset = set_end
            index += 1
            if set_id == template_set or set_id == options_set:
                self._templates(exporter, domain, version, domain_id, data, body, set_end,
                                set_id == options_set, txns)
            elif set_id >= 256:
                template = domain.templates.get(set_id)
                identity = f"{sequence}|{index}"
                if template is None:
                    self._hold(exporter, _Pending(ts, version, domain_id, set_id,
                                                  bytes(data[body:set_end]), export, export_ts,
                                                  uptime, source, identity))
                    self.held_in_packet += 1
                    continue
                self._data(exporter, domain, template, data, body, set_end, export, export_ts,
                           uptime, source, identity, txns)
            else:
                self._count(exporter, "reserved_set_id")
        if end - offset > 0 and version == 10:
            self._count(exporter, "trailing_bytes")
        return txns

    def _templates(self, exporter: _Exporter, domain: _Domain, version: int, domain_id: int,
                   data: bytes, offset: int, end: int, options: bool,
                   txns: list[Transaction]) -> None:
        """Read every template record of one set; a bad one ends the set, the packet goes on."""
        min_record = 6 if (options and version == 9) else 4
        while end - offset >= min_record:
            try:
                template_id, offset, template = self._template(version, data, offset, end, options)
            except DecodeError as err:
                self._count(exporter, err.reason.removeprefix("netflow."))
                return
            if template is None:
                self._withdraw(exporter, domain, template_id, options)
                continue
            known = domain.templates.get(template_id)
            if known is not None:
                if known.fields != template.fields or known.scope_fields != template.scope_fields:
                    self._count(exporter, "templates_redefined")
                    domain.templates[template_id] = template
                continue
            if exporter.template_count >= self.max_templates:
                self._count(exporter, "templates_rejected")      # cap: a template flood
                continue
            domain.templates[template_id] = template
            exporter.template_count += 1
            self._count(exporter, "templates")
            if exporter.pending:
                self._release(exporter, domain, version, domain_id, template, txns)

    @staticmethod
    def _template(version: int, data: bytes, offset: int, end: int,
                  options: bool) -> tuple[int, int, Template | None]:
        """(template id, offset after it, template or None for a withdrawal). Raises DecodeError."""
        if options and version == 9:
            if end - offset < 6:
                raise Truncated("netflow.template_truncated", offset)
            template_id, scope_bytes, option_bytes = struct.unpack_from("!HHH", data, offset)
            offset += 6
            if scope_bytes % 4 or option_bytes % 4 or offset + scope_bytes + option_bytes > end:
                raise DecodeError("netflow.template_length_lies", offset)
            count, scope = (scope_bytes + option_bytes) // 4, scope_bytes // 4
            fields = []
            for _ in range(count):
                element, length = struct.unpack_from("!HH", data, offset)
                offset += 4
                # Scope fields (system, interface, ...) are numbered 1-5 in their own space.
                fields.append((element, 0, length) if len(fields) >= scope
                              else (element, V9_SCOPE, length))
            offset = end         # the rest of an options template flowset is padding
        else:
            template_id, count = struct.unpack_from("!HH", data, offset)
            offset += 4
            if count == 0 and version == 10:
                return template_id, offset, None          # RFC 7011 section 8.1: withdrawal
            scope = 0
            if options:
                if end - offset < 2:
                    raise Truncated("netflow.template_truncated", offset)
                scope = _U16.unpack_from(data, offset)[0]
                offset += 2
            if template_id < 256 or count == 0:
                raise DecodeError("netflow.bad_template_id", offset)
            if options and (scope == 0 or scope > count):
                raise DecodeError("netflow.bad_scope_count", offset)
            fields = []
            for _ in range(count):
                if end - offset < 4:
                    raise DecodeError("netflow.template_length_lies", offset)
                element, length = struct.unpack_from("!HH", data, offset)
                offset += 4
                enterprise = 0
                if element & 0x8000 and version == 10:
                    if end - offset < 4:
                        raise DecodeError("netflow.template_length_lies", offset)
                    enterprise = struct.unpack_from("!I", data, offset)[0]
                    offset += 4
                    element &= 0x7FFF
                if length == 0 or (length == VARIABLE and version == 9):
                    raise DecodeError("netflow.bad_field_length", offset)
                fields.append((element, enterprise, length))
        if template_id < 256:
            raise DecodeError("netflow.bad_template_id", offset)
        return template_id, offset, Template.compile(template_id, tuple(fields), scope)

    def _withdraw(self, exporter: _Exporter, domain: _Domain, template_id: int,
                  options: bool) -> None:
        if template_id in (2, 3):        # all templates (2) or all options templates (3)
            gone = [tid for tid, t in domain.templates.items() if (t.scope_fields > 0) == options]
            for tid in gone:
                del domain.templates[tid]
            removed = len(gone)
        else:
            removed = 1 if domain.templates.pop(template_id, None) is not None else 0
        exporter.template_count -= removed
        self._count(exporter, "templates_withdrawn", removed)

    def _data(self, exporter: _Exporter, domain: _Domain, template: Template, data: bytes,
              start: int, end: int, export: dict[str, Any], export_ts: float, uptime: int | None,
              source: str, identity: str, txns: list[Transaction]) -> None:
        sampling = domain.sampling_interval
        if (template.c_plan is not None and self.record_sets
                and (uptime is not None or domain.system_init_ms is None)
                and (not sampling or (type(sampling) is int and 0 < sampling < MAX_U64))):
            count = (end - start) // template.record_length
            if count:
                self._count(exporter, "records", count)
                prefix = f"{exporter.address}|{export['version']}|{export['source_id']}|{identity}|"
                txns.append(RecordSet(self, exporter, template, data, start, count, export,  # type: ignore[arg-type]
                                      export_ts, uptime, source, prefix, sampling or 0))
            return
        try:
            records = template.records(data, start, end)
        except DecodeError as err:
            self._count(exporter, err.reason.removeprefix("netflow."))
            return
        if template.sub_lists:
            _sub_lists(template, records, domain.templates)
        is_options = template.scope_fields > 0
        kind = "netflow_options" if is_options else "netflow_flow"
        if records:
            self._count(exporter, "options_records" if is_options else "records", len(records))
        prefix = f"{exporter.address}|{export['version']}|{export['source_id']}|{identity}|"
        export_text: list[str] = []
        for index, record in enumerate(records):
            if is_options:
                for name in _SAMPLING_ELEMENTS:
                    value = record.get(name)
                    if value:
                        domain.sampling_interval = value
                init = record.get("system_init_time_milliseconds")
                if init is not None:
                    domain.system_init_ms = init
            else:
                if domain.sampling_interval and "sampling_interval" not in record:
                    record["sampling_interval"] = domain.sampling_interval
                if domain.system_init_ms is not None and uptime is None:
                    record.setdefault("system_init_time_milliseconds", domain.system_init_ms)
            txns.append(self._transaction(exporter, record, kind, export, export_ts, uptime,
                                          source, prefix + str(index), template.has_unknown,
                                          export_text))

    # -- data before its template ----------------------------------------------------

    def _hold(self, exporter: _Exporter, pending: _Pending) -> None:
        self._count(exporter, "pending_held")
        queue = exporter.pending
        if len(queue) >= self.max_pending_sets:
            queue.popleft()
            self._lost_pending(exporter, "pending_dropped")
        queue.append(pending)
        self.pending_sets += 1

    def _lost_pending(self, exporter: _Exporter, reason: str) -> None:
        self.pending_sets -= 1
        self._count(exporter, reason)

    def _release(self, exporter: _Exporter, domain: _Domain, version: int, domain_id: int,
                 template: Template, txns: list[Transaction]) -> None:
        """Decode the held sets the template just learnt was missing."""
        keep: deque[_Pending] = deque()
        for held in exporter.pending:
            if (held.template_id != template.template_id or held.version != version
                    or held.domain_id != domain_id):
                keep.append(held)
                continue
            self.pending_sets -= 1
            self._count(exporter, "pending_decoded")
            self._data(exporter, domain, template, held.data, 0, len(held.data), held.export,
                       held.export_ts, held.uptime, held.source, held.identity, txns)
        exporter.pending = keep

    # -- sequence numbers ------------------------------------------------------------

    def _domain(self, exporter: _Exporter, version: int, domain_id: int) -> _Domain:
        key = (version, domain_id)
        domain = exporter.domains.get(key)
        if domain is None:
            if len(exporter.domains) >= self.max_domains:
                _, evicted = exporter.domains.popitem()     # cap: a flood of domain ids
                exporter.template_count -= len(evicted.templates)
                self._count(exporter, "domains_evicted")
            domain = exporter.domains[key] = _Domain()
        return domain

    def _sequence(self, exporter: _Exporter, domain: _Domain, version: int,
                  sequence: int | None, count: int, uptime: int) -> dict[str, Any]:
        """v5/v7 (records) and v9 (packets): compare with what was expected, remember the next."""
        notes: dict[str, Any] = {}
        restarted = domain.last_uptime_ms is not None and uptime < domain.last_uptime_ms
        domain.last_uptime_ms = uptime
        if sequence is None:
            return notes
        what = "lost_packets" if version == 9 else "lost_records"
        expected = domain.expected_sequence
        domain.expected_sequence = (sequence + count) % MAX_U32
        if expected is None:
            return notes
        ahead = (sequence - expected) % MAX_U32
        if restarted or (ahead >= MAX_U32 // 2 and MAX_U32 - ahead > LATE_WINDOW * count):
            self._count(exporter, "exporter_restarts")
            notes["restarted"] = True
        elif ahead and ahead < MAX_U32 // 2:
            self._count(exporter, what, ahead)
            notes[what] = ahead
        elif ahead:
            self._count(exporter, "late_packets")
            domain.expected_sequence = expected
        return notes

    def _ipfix_sequence(self, exporter: _Exporter, domain: _Domain, expected: int | None,
                        sequence: int, records: int, held: int) -> dict[str, Any]:
        notes: dict[str, Any] = {}
        previous = domain.last_sequence
        domain.last_sequence = sequence
        # Held sets have an unknown number of records: the next expectation is unknown.
        domain.expected_sequence = None if held else (sequence + records) % MAX_U32
        if expected is None:
            return notes
        ahead = (sequence - expected) % MAX_U32
        if ahead and previous is not None and (sequence - records - previous) % MAX_U32 == 0:
            # Some exporters (softflowd) count this message's records too: no loss either.
            ahead = 0
        if ahead >= MAX_U32 // 2 and MAX_U32 - ahead > LATE_WINDOW * 30:
            self._count(exporter, "exporter_restarts")
            notes["restarted"] = True
        elif ahead and ahead < MAX_U32 // 2:
            self._count(exporter, "lost_records", ahead)
            notes["lost_records"] = ahead
        elif ahead:
            self._count(exporter, "late_packets")
            domain.expected_sequence = expected
        return notes

    def _count(self, exporter: _Exporter, what: str, n: int = 1) -> None:
        self.totals[what] += n
        exporter.counts[what] += n

    # -- records -----------------------------------------------------------------------

    def _transaction(self, exporter: _Exporter, record: dict[str, Any], kind: str,
                     export: dict[str, Any], export_ts: float, uptime: int | None, source: str,
                     identity: str, has_unknown: bool, export_text: list[str]) -> Transaction:
        if has_unknown:
            unknown = [f"{name[8:]}:{record.pop(name)}" for name in [n for n in record if n.startswith("unknown:")]]
            if unknown:
                record["unknown_fields"] = unknown
        start_ts, end_ts, texts = _flow_times(record, export_ts, uptime)
        get = record.get
        packets = get("packet_delta_count")
        if packets is None:
            packets = get("packet_total_count")
        octets = get("octet_delta_count")
        if octets is None:
            octets = get("octet_total_count")
        proto = get("protocol_identifier")
        src = get("source_ipv4_address") or get("source_ipv6_address")
        dst = get("destination_ipv4_address") or get("destination_ipv6_address")
        if src and dst and kind == "netflow_flow":
            transport = _TRANSPORTS.get(proto, str(proto)) if proto is not None else "unknown"
            if proto in (1, 58):
                type_code = get("icmp_type_code_ipv4") or get("icmp_type_code_ipv6")
                if type_code is None:
                    type_code = get("destination_transport_port", 0)
                type_code = _port(type_code)
                sport, dport = type_code >> 8, type_code & 0xFF
            else:
                sport = get("source_transport_port", 0)
                dport = get("destination_transport_port", 0)
                if not (type(sport) is int and 0 <= sport <= 0xFFFF):      # _port, inline
                    sport = 0
                if not (type(dport) is int and 0 <= dport <= 0xFFFF):
                    dport = 0
            flow = FlowKey(transport, src, sport, dst, dport, source)
        else:
            flow = FlowKey("", exporter.ip, 0, exporter.ip, 0, source)
        detail = _new_record(FlowRecord, (kind, record, export, exporter.ip, start_ts, end_ts, packets,
                                          octets, proto, export_text, texts))
        return Transaction(flow, export_ts, end_ts, "OK", detail, None, None, (), identity)


_NO_TEXTS = (None, None)


def _flow_times(record: dict[str, Any], export_ts: float, uptime: int | None
                ) -> tuple[float | None, float | None, tuple[str | None, str | None]]:
    """Flow start and end in epoch seconds, from whichever elements the record has, and
    their iso_time texts where the record holds them already (else None)."""
    get = record.get
    start = end = None
    first, last = get("flow_start_sys_up_time"), get("flow_end_sys_up_time")
    if first is not None and last is not None:
        init_ms = get("system_init_time_milliseconds")
        if uptime is not None:
            # RFC 3954: times relative to the header's sysUptime, which is export time.
            start = export_ts - ((uptime - first) % MAX_U32) / 1000
            end = export_ts - ((uptime - last) % MAX_U32) / 1000
        elif init_ms is not None and _parse_iso(init_ms) is not None:
            # IPFIX: relative to systemInitTimeMilliseconds. Taken back from the export
            # time modulo 2^32 ms, as v9 does, so a wrapped (pre-start) value stays right.
            since_init_ms = round((export_ts - _parse_iso(init_ms)) * 1000)
            start = export_ts - ((since_init_ms - first) % MAX_U32) / 1000
            end = export_ts - ((since_init_ms - last) % MAX_U32) / 1000
        if start is not None:
            return start, end, _NO_TEXTS
    start_text = end_text = None
    for start_name, end_name in (("flow_start_milliseconds", "flow_end_milliseconds"),
                                 ("flow_start_microseconds", "flow_end_microseconds"),
                                 ("flow_start_nanoseconds", "flow_end_nanoseconds"),
                                 ("flow_start_seconds", "flow_end_seconds")):
        if start is None and start_name in record:
            start_text = record[start_name]
            start = _parse_iso(start_text)
        if end is None and end_name in record:
            end_text = record[end_name]
            end = _parse_iso(end_text)
    if start is None and "flow_start_delta_microseconds" in record:
        start = export_ts - record["flow_start_delta_microseconds"] / 1e6
    if end is None and "flow_end_delta_microseconds" in record:
        end = export_ts - record["flow_end_delta_microseconds"] / 1e6
    # iso_time(_parse_iso(text)) == text while a float holds microseconds exactly (2^31 s)
    if start_text is not None and not (start is not None and 0 <= start < _EXACT_TEXT_S):
        start_text = None
    if end_text is not None and not (end is not None and 0 <= end < _EXACT_TEXT_S):
        end_text = None
    return start, end, (start_text, end_text) if start_text or end_text else _NO_TEXTS


_EXACT_TEXT_S = 1 << 31


@lru_cache(maxsize=4096)
def _epoch_of_second(text: str) -> int:
    import calendar
    return calendar.timegm(time.strptime(text, "%Y-%m-%dT%H:%M:%S"))


def _parse_iso(text: str) -> float | None:
    """Epoch seconds of a time this decoder formatted; None past year 9999 (a wild wire value)."""
    try:
        return _epoch_of_second(text[:19]) + int(text[20:26]) / 1e6
    except (ValueError, TypeError):     # TypeError: None, a time past year 9999 (_millis_date)
        return None


def _port(value: Any) -> int:
    """A transport port; 0 for a value no port can be (an element sent longer than 2 bytes)."""
    return value if isinstance(value, int) and 0 <= value <= 0xFFFF else 0


# -- documents -------------------------------------------------------------------------


_iso = lru_cache(maxsize=4096)(iso_time)     # records of one export share their times


def whole_document(txn: Transaction, network_base: dict[str, Any], related_ip: tuple[str, ...],
                   common: dict[str, Any]) -> dict[str, Any]:
    """The whole document of one record (DecoderSpec.whole_document): what `document()`
    merged into the engine's common fields gives, field order included, built directly."""
    rec: FlowRecord = txn.detail
    start_ts, end_ts = rec.start_ts, rec.end_ts
    event: dict[str, Any] = {"kind": "event", "category": ["network"], "type": ["connection"],
                             "dataset": "netflow"}
    duration = None
    if start_ts is not None:
        event["start"] = _iso(start_ts)
    if end_ts is not None:
        event["end"] = _iso(end_ts)
        if start_ts is not None and end_ts >= start_ts:
            duration = round((end_ts - start_ts) * 1e6) * 1000
            if end_ts >= txn.ts:        # the generic path had its own duration here
                event["duration"] = duration
                duration = None
    event["action"] = rec.kind
    if duration is not None:
        event["duration"] = duration
    netflow = rec.fields            # the record's own dict: a transaction is built once
    netflow["type"] = rec.kind
    netflow["exporter"] = rec.export
    flow = txn.flow
    transport = flow.transport
    doc: dict[str, Any] = {"@timestamp": _iso(txn.ts), "type": "netflow", "event": event}
    if transport:
        network = dict(network_base)
        _add_counts(network, rec)
        doc["network"] = network
        if transport == "tcp" or transport == "udp":
            doc["source"] = {"ip": flow.client_ip, "port": flow.client_port}
            doc["destination"] = {"ip": flow.server_ip, "port": flow.server_port}
        else:
            doc["source"] = {"ip": flow.client_ip}
            doc["destination"] = {"ip": flow.server_ip}
        doc["related"] = {"ip": list(related_ip)}
    elif rec.kind == "netflow_flow":       # a flow without addresses
        network = dict(network_base)
        del network["transport"]
        _add_counts(network, rec)
        doc["network"] = network
    doc.update(common)
    doc["netflow"] = netflow
    doc["observer"] = {"ip": rec.exporter_ip}
    return doc


_dumps = orjson.dumps
_EVENT_HEAD = ('","type":"netflow","event":{"kind":"event","category":["network"],"type":["connection"],'
               '"dataset":"netflow"')


def _number(value: Any) -> str:
    return str(value) if type(value) is int else _dumps(value).decode()


def whole_text(txn: Transaction, network: str, related_ip: tuple[str, ...],
               common: str, tail: str) -> str:
    """orjson.dumps of whole_document(...) with `common` and `tail` added (DecoderSpec.whole_text),
    as text directly: the strings put in unescaped (times, addresses, names) are ones this
    decoder made and JSON-safe; the record's own fields go through orjson."""
    rec: FlowRecord = txn.detail
    start_ts, end_ts, kind = rec.start_ts, rec.end_ts, rec.kind
    start_text, end_text = rec.times_text
    if start_ts is not None and end_ts is not None and end_ts >= start_ts:
        duration = round((end_ts - start_ts) * 1e6) * 1000
        times = f',"start":"{start_text or _iso(start_ts)}","end":"{end_text or _iso(end_ts)}"'
        if end_ts >= txn.ts:        # see whole_document: where duration goes
            event = f'{times},"duration":{duration},"action":"{kind}"}}'
        else:
            event = f'{times},"action":"{kind}","duration":{duration}}}'
    else:
        event = "" if start_ts is None else f',"start":"{start_text or _iso(start_ts)}"'
        if end_ts is not None:
            event += f',"end":"{end_text or _iso(end_ts)}"'
        event += f',"action":"{kind}"}}'
    flow = txn.flow
    transport = flow.transport
    if transport or kind == "netflow_flow":
        counts = "}"
        number, packets, octets = rec.iana_number, rec.packets, rec.bytes
        if number is not None:
            counts = (f',"iana_number":"{number}"}}' if type(number) is int
                      else f',"iana_number":{_dumps(str(number)).decode()}}}')
        if packets is not None:
            counts = f',"packets":{packets if type(packets) is int else _number(packets)}{counts}'
        if octets is not None:
            counts = f',"bytes":{octets if type(octets) is int else _number(octets)}{counts}'
        if transport:
            if transport == "tcp" or transport == "udp":
                ends = (f'"source":{{"ip":"{flow.client_ip}","port":{flow.client_port}}},'
                        f'"destination":{{"ip":"{flow.server_ip}","port":{flow.server_port}}}')
            else:
                ends = f'"source":{{"ip":"{flow.client_ip}"}},"destination":{{"ip":"{flow.server_ip}"}}'
            related = '","'.join(related_ip)
            event = f'{event},"network":{network}{counts},{ends},"related":{{"ip":["{related}"]}}'
        else:                       # a flow without addresses: `network` has no transport
            event = f'{event},"network":{network}{counts}'
    export_text = rec.export_text           # shared by the records of one set
    if not export_text:
        export_text.append(_dumps(rec.export).decode())
    fields = _dumps(rec.fields).decode()[:-1]
    return (f'{{"@timestamp":"{_iso(txn.ts)}{_EVENT_HEAD}{event}{common},"netflow":{fields}'
            f'{"," if len(fields) > 1 else ""}"type":"{kind}","exporter":{export_text[0]}}},'
            f'"observer":{{"ip":"{rec.exporter_ip}"}}{tail}')


def document(txn: Transaction) -> dict[str, Any]:
    """The netflow.* fields and the ECS fields of one flow or options record."""
    rec: FlowRecord = txn.detail
    netflow = dict(rec.fields)
    netflow["type"] = rec.kind
    netflow["exporter"] = rec.export
    event: dict[str, Any] = {"kind": "event", "category": ["network"], "type": ["connection"],
                             "action": rec.kind, "start": None, "end": None, "duration": None}
    # The engine's flow.id, network.protocol_stack and MACs describe the export
    # datagram's own path, not the flow the record reports: left out.
    doc: dict[str, Any] = {"netflow": netflow, "event": event, "observer": {"ip": rec.exporter_ip},
                           "client": None, "server": None, "status": None, "flow": None,
                           "source": {"mac": None}, "destination": {"mac": None}}
    if rec.start_ts is not None:
        event["start"] = iso_time(rec.start_ts)
    if rec.end_ts is not None:
        event["end"] = iso_time(rec.end_ts)
        if rec.start_ts is not None and rec.end_ts >= rec.start_ts:
            event["duration"] = round((rec.end_ts - rec.start_ts) * 1e6) * 1000
    if not txn.flow.transport:          # options records, flows without addresses
        doc["source"] = doc["destination"] = doc["related"] = None
        doc["network"] = None
        if rec.kind == "netflow_flow":
            doc["network"] = _network(rec, None)
        return doc
    doc["network"] = _network(rec, txn.flow.transport)
    return doc


def _network(rec: FlowRecord, transport: str | None) -> dict[str, Any]:
    network: dict[str, Any] = {"transport": transport, "protocol_stack": None}
    _add_counts(network, rec)
    return network


def _add_counts(network: dict[str, Any], rec: FlowRecord) -> None:
    if rec.bytes is not None:
        network["bytes"] = rec.bytes
    if rec.packets is not None:
        network["packets"] = rec.packets
    if rec.iana_number is not None:
        network["iana_number"] = str(rec.iana_number)


DECODER = DecoderSpec(
    name="netflow",
    document=document,
    whole_document=whole_document,
    whole_text=whole_text,
    datagram=NetflowDecoder,
    ports=PORTS,
    network_protocol="",
    # What the engine hands this decoder's data sets to (publish_set), imported at the first one.
    lazy_imports=("wirebeat.sources.netflow",),
    options={
        "max_exporters": Option("int", 1024, "exporters (ip:port) with templates and sequence state, per source; the oldest is forgotten (decoder.netflow.exporters_evicted)"),
        "max_templates": Option("int", 1024, "templates and options templates held per exporter; more are refused (templates_rejected)"),
        "max_domains": Option("int", 256, "observation domains / source ids tracked per exporter (domains_evicted)"),
        "max_pending_sets": Option("int", 256, "data sets held per exporter until their template arrives; the oldest is dropped (pending_dropped)"),
        "pending_timeout": Option("duration", 60.0, "packet time a held data set waits for its template (pending_expired)"),
    },
)
