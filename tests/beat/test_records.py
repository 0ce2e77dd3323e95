"""wirebeat.records: a Maker makes the record its class makes, or is the class itself."""
from __future__ import annotations

import gc
import os
from dataclasses import InitVar, dataclass, field, fields

import pytest

from wirebeat.accel import speedups
from wirebeat.decoders.api import Datagram, FlowKey, Transaction
from wirebeat.decoders.dns import DNSExchange, _Pending
from wirebeat.decoders.icmp import ICMPExchange, ICMPMessage
from wirebeat.records import maker

needs_c = pytest.mark.skipif(speedups is None and os.environ.get("CI") != "true",
                             reason="C accelerator not built or turned off (a failure under CI=true)")

FLOW = FlowKey("icmp", "192.0.2.1", 8, "198.51.100.7", 0, "file.pcap")
MSG = ICMPMessage(4, 8, 0, 17, 3, 56)
RECORDS = [
    (FlowKey, ("udp", "2001:db8::1", 53000, "2001:db8::53", 53, "eth0")),
    (Datagram, (1.5, FLOW, True, b"\x08\x00", False)),
    (Transaction, (FLOW, 1.5, 1.75, "OK", None, 56, 56, ("a note",), "8/0/17/3")),
    (ICMPMessage, (6, 128, 0, 1, 2, 0)),
    (ICMPExchange, (MSG, None, "198.51.100.7")),
    (_Pending, (1.5, FLOW, None, 40, ["n"])),
]


@needs_c
@pytest.mark.parametrize("cls, values", RECORDS, ids=[cls.__name__ for cls, _ in RECORDS])
def test_a_maker_makes_the_record_the_class_makes(cls: type, values: tuple) -> None:
    make = maker(cls)
    assert make is not cls
    made, reference = make(*values), cls(*values)
    assert type(made) is cls and made == reference
    assert [getattr(made, f.name) for f in fields(cls)] == list(values)
    assert gc.is_tracked(made) == gc.is_tracked(reference)


@needs_c
def test_made_records_are_hashable_and_mutable_as_their_class_says() -> None:
    made = maker(FlowKey)(*RECORDS[0][1])
    assert hash(made) == hash(FlowKey(*RECORDS[0][1]))
    message = maker(ICMPMessage)(4, 0, 0, 1, 1, 0)
    message.sequence = 9
    assert message.sequence == 9


@needs_c
def test_fewer_values_or_keywords_go_to_the_class_with_its_defaults() -> None:
    make = maker(Transaction)
    txn = make(FLOW, 1.0, None, "OK", None)
    assert txn.notes == () and txn.identity == "" and txn.request_bytes is None
    assert make(flow=FLOW, ts=1.0, end_ts=None, status="OK", detail=None) == txn
    with pytest.raises(TypeError):
        make(FLOW)      # what the class says about missing values


@needs_c
def test_a_made_record_is_freed_like_any_other() -> None:
    make = maker(DNSExchange)
    before = len(gc.get_objects())
    for _ in range(10000):
        make(None, None, None)
    gc.collect()
    assert len(gc.get_objects()) < before + 100


@dataclass(slots=True)
class _Checked:
    value: int

    def __post_init__(self) -> None:
        if self.value < 0:
            raise ValueError("negative")


@dataclass(frozen=True, slots=True)
class _Frozen:
    value: int


@dataclass(slots=True)
class _Derived:
    value: int
    double: int = field(init=False, default=0)


@dataclass(slots=True)
class _WithInitVar:
    value: int
    scale: InitVar[int] = 1


@dataclass
class _NoSlots:
    value: int


class _Plain:
    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value * 2


@pytest.mark.parametrize("cls", [_Checked, _Frozen, _Derived, _WithInitVar, _NoSlots, _Plain])
def test_a_class_whose_init_does_more_than_store_is_its_own_maker(cls: type) -> None:
    assert maker(cls) is cls


def test_without_the_accelerator_the_maker_is_the_class(monkeypatch: pytest.MonkeyPatch) -> None:
    import wirebeat.records as records
    monkeypatch.setattr(records, "speedups", None)
    assert records.maker(FlowKey) is FlowKey


@needs_c
def test_the_c_maker_refuses_a_class_it_cannot_fill() -> None:
    with pytest.raises(TypeError):
        speedups.Maker(_NoSlots, ("value",))
    with pytest.raises(TypeError):
        speedups.Maker(FlowKey, ("transport", "no_such_field"))
    with pytest.raises(TypeError):
        speedups.Maker(FlowKey, ())
