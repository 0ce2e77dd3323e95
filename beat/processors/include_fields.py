"""include_fields: keep only the listed fields (and `@timestamp` and `type`, as beats does)."""
from __future__ import annotations

from typing import Any

from wirebeat.processors.fields import MISSING, get_path, set_path, split_path

NAME = "include_fields"
ALWAYS = ("@timestamp", "type")


def build(where: str, settings: dict[str, Any], ctx: Any) -> Any:
    s = ctx.settings(where, NAME, settings, {"fields": ("list[str]", [])}, required=("fields",))
    paths = [split_path(f) for f in (*ALWAYS, *s["fields"])]

    def include_fields(doc: dict[str, Any]) -> bool:
        kept: dict[str, Any] = {}
        for path in paths:
            value = get_path(doc, path)
            if value is not MISSING:
                set_path(kept, path, value)
        doc.clear()
        doc.update(kept)
        return True
    return include_fields
