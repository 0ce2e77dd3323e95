"""add_fields: merge fixed fields into the document, under `target` (default `fields`; "" for the root)."""
from __future__ import annotations

from typing import Any

from wirebeat.processors.fields import split_path

NAME = "add_fields"


def build(where: str, settings: dict[str, Any], ctx: Any) -> Any:
    from wirebeat.document import merge
    s = ctx.settings(where, NAME, settings, {"target": ("str", "fields"), "fields": ("map", {})},
                     required=("fields",))
    fields = s["fields"]
    parts = split_path(s["target"]) if s["target"] else ()

    def add_fields(doc: dict[str, Any]) -> bool:
        node = doc
        for part in parts:
            child = node.get(part)
            if not isinstance(child, dict):
                child = node[part] = {}
            node = child
        merge(node, fields)
        return True
    return add_fields
