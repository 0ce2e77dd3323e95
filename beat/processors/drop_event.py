"""drop_event: the document is not published (guard it with `when`, or every document goes)."""
from __future__ import annotations

from typing import Any

NAME = "drop_event"


def build(where: str, settings: dict[str, Any], ctx: Any) -> Any:
    ctx.settings(where, NAME, settings, {})
    return lambda doc: False
