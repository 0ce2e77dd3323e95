"""Per-packet records made without their dataclass's Python __init__.

Calling a dataclass runs its generated `__init__`, a Python frame entered from
C: ~2,400 instructions for a six-field record, where storing the fields is a
tenth of that. The engine and the decoders make several records per packet
(FlowKey, Datagram, Transaction, a decoder's message: ~280,000 on the 100k
mixed benchmark capture, 8% of its run), so the hot paths make them with
`maker(cls)`: a C `Maker` (beat/_speedups.c) that allocates the object as
`object.__new__` does and stores each value in its slot, in field order, which
is all the generated `__init__` of a plain slotted dataclass does.

`maker(cls)` gives the class itself (so `maker(cls)(*values)` is always
`cls(*values)`) without the accelerator, and for any class whose `__init__`
does more: not a dataclass, frozen, `__post_init__`, InitVar or init=False
fields, a field without its slot. A Maker called with fewer values (defaults)
or with keywords calls the class. tests/beat/test_records.py holds the two
equal.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, TypeVar

from wirebeat.accel import speedups
from wirebeat.decoders.api import Datagram, FlowKey, Transaction

__all__ = ["maker", "new_datagram", "new_flow_key", "new_transaction"]

T = TypeVar("T")


def _plain_fields(cls: type) -> tuple[str, ...] | None:
    """The field names of a dataclass whose __init__ only stores its arguments in its
    slots, in order; None for any other class."""
    if not dataclasses.is_dataclass(cls) or cls.__dataclass_params__.frozen \
            or hasattr(cls, "__post_init__") or "__init__" not in cls.__dict__:
        return None
    declared = cls.__dataclass_fields__.values()
    names = tuple(f.name for f in declared)
    if any(f._field_type is not dataclasses._FIELD or not f.init for f in declared) \
            or cls.__dict__.get("__slots__") != names:
        return None
    code = cls.__init__.__code__
    if code.co_varnames[1:code.co_argcount] != names or code.co_kwonlyargcount:
        return None
    return names


def maker(cls: type[T]) -> Callable[..., T]:
    """A callable making `cls(*values)` (every field, in order); see the module docstring."""
    names = _plain_fields(cls) if speedups is not None else None
    if names is None:
        return cls
    made: Any = speedups.Maker(cls, names)
    return made


# The records the engine and several decoders make per packet: one maker each, shared.
new_flow_key, new_datagram, new_transaction = maker(FlowKey), maker(Datagram), maker(Transaction)
