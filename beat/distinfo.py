"""Installed distributions' entry points and versions, read from their metadata directories.

What `importlib.metadata.entry_points(group=...)` and `version(name)` find, for
distributions installed as metadata directories on sys.path: `*.dist-info`
(wheels, editable installs) and `*.egg-info` (`setup.py develop`, a source
tree's egg-info). importlib.metadata itself costs a run ~30 ms of start-up to
import (email, zipfile, pathlib, csv ...); this reads the same files with
os.listdir and open. The search is the same: sys.path in order ('' is the
current directory), each entry's metadata directories grouped by normalised
name in listing order, the first distribution of a name wins; an entry point
is "name = module:attr" under its "[group]" in entry_points.txt; the name and
version are METADATA's (PKG-INFO's) headers.

What this does not read, importlib.metadata does (`usable()` is False and
the callers use it): a zip archive or an egg on sys.path, or an import hook
that provides distributions of its own (`find_distributions`).
tests/beat/test_distinfo.py compares the two.
"""
from __future__ import annotations

import importlib
import os
import re
import sys
from functools import reduce
from typing import Any

__all__ = ["EntryPoint", "entry_points", "usable", "version"]

_SUFFIXES = (".dist-info", ".egg-info")
_ENTRY = re.compile(r"(?P<module>[\w.]+)\s*(:\s*(?P<attr>[\w.]+)\s*)?((?P<extras>\[.*\])\s*)?$")


class NotFound(LookupError):
    """No installed distribution of that name."""


def _normalize(name: str) -> str:
    """importlib.metadata's: PEP 503 normalisation with underscores."""
    return re.sub(r"[-_.]+", "-", name).lower().replace("-", "_")


def usable() -> bool:
    """Whether every distribution importlib.metadata would see is a directory this reads."""
    from importlib.machinery import PathFinder
    for finder in sys.meta_path:
        if finder is not PathFinder and getattr(finder, "find_distributions", None) is not None:
            return False
    for entry in sys.path:
        root = entry or "."
        if os.path.isfile(root) or os.path.basename(root).lower().endswith(".egg"):
            return False        # a zip archive or an egg: importlib.metadata's job
    return True


def _distributions() -> list[tuple[str, str]]:
    """(normalised name, metadata directory) of every distribution, first of a name only."""
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    for entry in sys.path:
        try:
            children = os.listdir(entry or ".")
        except OSError:
            continue
        groups: dict[str, list[str]] = {}
        for child in children:
            low = child.lower()
            if low.endswith(_SUFFIXES):
                name = _normalize(low.rpartition(".")[0].partition("-")[0])
                groups.setdefault(name, []).append(os.path.join(entry, child))
        for name, paths in groups.items():
            if name not in seen:
                seen.add(name)
                found.append((name, paths[0]))
    return found


def _read(path: str, name: str) -> str | None:
    try:
        with open(os.path.join(path, name), encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError):
        return None


def _headers(path: str) -> dict[str, str]:
    """The first Name and Version headers of METADATA (or PKG-INFO), keys lower-cased."""
    text = _read(path, "METADATA") or _read(path, "PKG-INFO") or ""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break       # the headers end at the first empty line
        key, colon, value = line.partition(":")
        key = key.strip().lower()
        if colon and key in ("name", "version") and key not in out:
            out[key] = value.strip()
    return out


class EntryPoint:
    """One entry point: `name = value` of `group`, from the distribution at `path`."""

    __slots__ = ("name", "value", "group", "path", "_dist")

    def __init__(self, name: str, value: str, group: str, path: str) -> None:
        self.name, self.value, self.group, self.path = name, value, group, path
        self._dist: dict[str, str] | None = None

    def dist_label(self) -> str:
        """"name version" of its distribution."""
        if self._dist is None:
            self._dist = _headers(self.path)
        return f"{self._dist.get('name')} {self._dist.get('version')}"

    def load(self) -> Any:
        """The object named, as importlib.metadata.EntryPoint.load."""
        match = _ENTRY.match(self.value)
        if match is None:
            raise ValueError(f"malformed entry point value {self.value!r}")
        module = importlib.import_module(match.group("module"))
        attrs = filter(None, (match.group("attr") or "").split("."))
        return reduce(getattr, attrs, module)


def _parse(text: str, group: str, path: str) -> list[EntryPoint]:
    out: list[EntryPoint] = []
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line.strip("[]")      # (as importlib.metadata's parser)
            continue
        if section == group:
            name, _eq, value = line.partition("=")
            out.append(EntryPoint(name.strip(), value.strip(), group, path))
    return out


def entry_points(group: str) -> list[EntryPoint]:
    """The entry points of `group` of every distribution, in importlib.metadata's order."""
    out: list[EntryPoint] = []
    for _name, path in _distributions():
        text = _read(path, "entry_points.txt")
        if text and group in text:
            out += _parse(text, group, path)
    return out


def version(name: str) -> str:
    """The version of the first distribution called `name` (NotFound if none)."""
    wanted = _normalize(name)
    for found, path in _distributions():
        if found == wanted:
            headers = _headers(path)
            if "version" in headers:
                return headers["version"]
            break
    raise NotFound(name)
