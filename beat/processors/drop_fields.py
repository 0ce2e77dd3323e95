"""drop_fields: remove fields (dotted paths; a whole object by its name).

As in beats, `@timestamp` and `type` cannot be dropped; a missing field is
skipped (`ignore_missing` is accepted for beats configs and changes nothing).
"""
from __future__ import annotations

from typing import Any

from wirebeat.config import ConfigError
from wirebeat.processors.fields import pop_path, split_path

NAME = "drop_fields"
PROTECTED = ("@timestamp", "type")


def build(where: str, settings: dict[str, Any], ctx: Any) -> Any:
    s = ctx.settings(where, NAME, settings, {"fields": ("list[str]", []),
                                             "ignore_missing": ("bool", False)}, required=("fields",))
    for i, name in enumerate(s["fields"]):
        if name in PROTECTED:
            raise ConfigError(f"config key '{where}.{NAME}.fields[{i}]': {name} cannot be dropped")
    paths = [split_path(f) for f in s["fields"]]

    def drop_fields(doc: dict[str, Any]) -> bool:
        for path in paths:
            pop_path(doc, path)
        return True
    return drop_fields
