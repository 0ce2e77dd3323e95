"""rename: move fields, `fields: [{from: a.b, to: c}]`, in order.

As in beats: a `to` that already exists, or a missing `from` without
`ignore_missing`, is a failure; with `fail_on_error` (default) the
processor's renames are all undone for that document. Failures are counted
(`processors.rename_failed`) and the document is kept.
"""
from __future__ import annotations

from typing import Any

from wirebeat.config import ConfigError
from wirebeat.processors.fields import MISSING, get_path, pop_path, set_path, split_path

NAME = "rename"


class _Failed(Exception):
    pass


def build(where: str, settings: dict[str, Any], ctx: Any) -> Any:
    s = ctx.settings(where, NAME, settings, {"fields": ("list[map]", []),
                                             "ignore_missing": ("bool", False),
                                             "fail_on_error": ("bool", True)}, required=("fields",))
    moves = []
    for i, item in enumerate(s["fields"]):
        at = f"{where}.{NAME}.fields[{i}]"
        if set(item) != {"from", "to"} or not all(isinstance(v, str) and v for v in item.values()):
            raise ConfigError(f"config key '{at}': expected {{from: FIELD, to: FIELD}}, got {item!r}")
        moves.append((split_path(item["from"]), split_path(item["to"])))
    ignore_missing, fail_on_error = s["ignore_missing"], s["fail_on_error"]
    failures = ctx.counter("processors.rename_failed")

    def rename(doc: dict[str, Any]) -> bool:
        done = []
        try:
            for source, target in moves:
                if get_path(doc, target) is not MISSING:
                    raise _Failed
                value = pop_path(doc, source)
                if value is MISSING:
                    if ignore_missing:
                        continue
                    raise _Failed
                set_path(doc, target, value)
                done.append((source, target))
        except _Failed:
            failures[0] += 1
            if fail_on_error:
                for source, target in reversed(done):
                    set_path(doc, source, pop_path(doc, target))
        return True
    return rename
