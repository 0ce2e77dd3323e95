"""Dotted field paths in nested documents: read, write, remove.

Documents are nested dicts (`{"source": {"mac": ...}}`); processors and
conditions name fields the way beats users write them (`source.mac`). Paths
are split once, when the configuration is compiled.
"""
from __future__ import annotations

from typing import Any

__all__ = ["MISSING", "get_path", "pop_path", "set_path", "split_path"]

MISSING: Any = object()     # a field that is not there (None is a value)


def split_path(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def get_path(doc: dict[str, Any], parts: tuple[str, ...]) -> Any:
    node: Any = doc
    for part in parts:
        if node.__class__ is not dict:
            return MISSING
        node = node.get(part, MISSING)
        if node is MISSING:
            return MISSING
    return node


def set_path(doc: dict[str, Any], parts: tuple[str, ...], value: Any) -> None:
    """Set a field, making the objects above it; a non-object in the way is replaced."""
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if child.__class__ is not dict:
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def pop_path(doc: dict[str, Any], parts: tuple[str, ...]) -> Any:
    """Remove a field and return its value (MISSING if absent); emptied parents go too."""
    trail = []
    node: Any = doc
    for part in parts[:-1]:
        child = node.get(part) if node.__class__ is dict else None
        if child.__class__ is not dict:
            return MISSING
        trail.append((node, part))
        node = child
    value = node.pop(parts[-1], MISSING)
    if value is not MISSING:
        for parent, part in reversed(trail):
            if parent[part]:
                break
            del parent[part]
    return value
