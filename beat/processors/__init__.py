"""Processors: beats' event processors, run on every document before it is queued.

`processors:` in the config is a list of one-key mappings, each a processor
kind with its settings, optionally guarded by a `when` condition
(conditions.py). They run in order on every document kind (transactions,
per-packet documents, flows, collector events); a `drop_event` that fires
ends the chain and the document is not published.

Everything is checked and compiled when the config loads: a bad key, value
or condition is a ConfigError naming its full path, e.g.
`processors[2].drop_event.when.range`. Kinds live one per module.
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wirebeat.config import ConfigError, coerce_value
from wirebeat.processors.conditions import compile_condition
from wirebeat.processors.tables import Table

__all__ = ["Context", "Processors", "check_processors", "compile_processors"]

Processor = Callable[[dict[str, Any]], bool]     # doc -> keep it?


@dataclass
class Context:
    """What compiling needs besides the settings: where tables are, whether to load them."""

    base_dir: str = "."
    load_tables: bool = True
    tables: dict[tuple, Table] = field(default_factory=dict)    # one Table per file and key
    counters: dict[str, list[int]] = field(default_factory=dict)
    # output.elasticsearch.* settings: the connection of lookups from an index
    elasticsearch: dict[str, Any] | None = None

    def elasticsearch_client(self) -> Any:
        """A client for `lookup.index` with the output's hosts, credentials and TLS settings."""
        from wirebeat.outputs import OutputError, make_client
        settings = dict(self.elasticsearch or {"hosts": ["http://localhost:9200"], "username": "",
                                               "password": "", "api_key": ""})
        settings["timeout"] = min(float(settings.get("timeout") or 10.0), 10.0)
        try:
            return make_client(settings)
        except OutputError as err:
            raise ConfigError(str(err)) from None

    def counter(self, name: str) -> list[int]:
        """A one-element list a processor bumps (`c[0] += 1`), read by Processors.counters."""
        return self.counters.setdefault(name, [0])

    def settings(self, where: str, name: str, settings: dict[str, Any],
                 allowed: dict[str, tuple[str, Any]], required: tuple[str, ...] = ()) -> dict[str, Any]:
        """Settings with their declared kinds checked and defaults filled; ConfigError naming the key."""
        for key in required:
            if key not in settings:
                raise ConfigError(f"config key '{where}.{name}.{key}' is required")
        out = {key: default for key, (_kind, default) in allowed.items()}
        for key, value in settings.items():
            if key not in allowed:
                raise ConfigError(f"unknown config key '{where}.{name}.{key}' "
                                  f"(known: {', '.join(allowed) or 'none'}, when)")
            out[key] = coerce_value(f"{where}.{name}.{key}", allowed[key][0], value)
        return out


def _kinds() -> dict[str, Callable[[str, dict[str, Any], Context], Processor]]:
    from wirebeat.processors import (add_fields, add_tags, drop_event, drop_fields, include_fields,
                                     lookup, rename)
    return {m.NAME: m.build for m in (add_fields, add_tags, drop_event, drop_fields, include_fields,
                                      rename, lookup)}


class Processors:
    """The compiled chain. Call `run(doc)`: False means drop the document."""

    def __init__(self, chain: list[Processor], tables: list[Table],
                 counters: dict[str, list[int]]) -> None:
        self.chain = chain
        self.tables = tables
        self.extra = counters
        self.dropped = 0

    def __bool__(self) -> bool:
        return bool(self.chain)

    def run(self, doc: dict[str, Any]) -> bool:
        for processor in self.chain:
            if not processor(doc):
                self.dropped += 1
                return False
        return True

    def counters(self) -> dict[str, int]:
        return {"processors.dropped": self.dropped,
                "lookup.reloads": sum(t.reloads for t in self.tables),
                "lookup.reload_errors": sum(t.reload_errors for t in self.tables),
                **{name: c[0] for name, c in self.extra.items()}}


def _guarded(condition: Callable[[dict[str, Any]], bool], processor: Processor) -> Processor:
    return lambda doc: processor(doc) if condition(doc) else True


def compile_processors(items: Any, where: str = "processors", ctx: Context | None = None) -> Processors:
    """Check and compile a `processors` list. Raises ConfigError naming the bad key."""
    ctx = ctx or Context()
    if items is None:
        items = []
    if not isinstance(items, list):
        raise ConfigError(f"config key '{where}': expected a list of processors, got {items!r}")
    kinds = _kinds()
    chain = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if not isinstance(item, dict) or len(item) != 1:
            raise ConfigError(f"config key '{at}': expected one processor name with its settings")
        [(name, settings)] = item.items()
        settings = {} if settings is None else settings
        if not isinstance(settings, dict):
            raise ConfigError(f"config key '{at}.{name}': expected a mapping")
        build = kinds.get(name)
        if build is None:
            raise ConfigError(f"config key '{at}': unknown processor '{name}' "
                              f"(known: {', '.join(sorted(kinds))})")
        settings = dict(settings)
        when = settings.pop("when", None)
        processor = build(at, settings, ctx)
        if when is not None:
            processor = _guarded(compile_condition(when, f"{at}.{name}.when"), processor)
        chain.append(processor)
    return Processors(chain, list(ctx.tables.values()), ctx.counters)


def check_processors(key: str, items: Any) -> list[dict[str, Any]]:
    """Config-load check of a processors list (tables are not read yet); the list as given."""
    compile_processors(items, key, Context(load_tables=False))
    return list(items or [])


def load_processors(items: list[dict[str, Any]], config_path: str | None,
                    elasticsearch: dict[str, Any] | None = None) -> Processors:
    """The chain a run uses; table paths are relative to the config file's folder, index
    tables are read with the `elasticsearch` (output.elasticsearch.*) settings."""
    base = os.path.dirname(os.path.abspath(config_path)) if config_path else os.getcwd()
    return compile_processors(items, "processors", Context(base_dir=base, elasticsearch=elasticsearch))
