"""add_tags: append tags (once each) to the `target` list, `tags` by default."""
from __future__ import annotations

from typing import Any

NAME = "add_tags"


def build(where: str, settings: dict[str, Any], ctx: Any) -> Any:
    s = ctx.settings(where, NAME, settings, {"tags": ("list[str]", []), "target": ("str", "tags")},
                     required=("tags",))
    new_tags, target = s["tags"], s["target"] or "tags"

    def add_tags(doc: dict[str, Any]) -> bool:
        existing = doc.get(target)
        tags = list(existing) if isinstance(existing, list) else []
        for tag in new_tags:
            if tag not in tags:
                tags.append(tag)
        doc[target] = tags
        return True
    return add_tags
