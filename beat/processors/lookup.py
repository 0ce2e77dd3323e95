"""lookup: enrich a document with the row of a table whose `key` column matches a field.

```yaml
- lookup: {field: source.mac, table: computers.csv, key: macaddr, target: computer}
```
The matched row's columns go under `target` (merged into what is there).
No match, or no such field, leaves the document as it is; a field holding a
list is looked up element by element, the first match wins. Chained lookups
join tables (computer.empkey -> employees). Table formats, key matching
(`match: exact` or `network`) and live reloading: see tables.py. With
`index: NAME` instead of `table`, the rows are the documents of an
Elasticsearch index, read with the output.elasticsearch connection settings.
"""
from __future__ import annotations

import os
from typing import Any

from wirebeat.config import ConfigError
from wirebeat.processors.fields import MISSING, get_path, split_path
from wirebeat.processors.tables import IndexTable, Table, TableError

NAME = "lookup"
DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_RELOAD_PERIOD_S = 5.0
DEFAULT_MAX_ROWS = 1_000_000


def _table(where: str, s: dict[str, Any], ctx: Any) -> Any:
    """The table of these settings, one per source, key and match however often it is used."""
    if s["table"]:
        path = os.path.join(ctx.base_dir, s["table"])
        identity: tuple = (path, s["key"], s["match"])
    else:
        identity = ("index", s["index"], s["key"], s["match"])
    table = ctx.tables.get(identity)
    if table is not None:
        return table
    try:
        if s["table"]:
            table = Table(path, s["key"], s["match"], s["max_bytes"], s["reload_period"])
        else:
            table = IndexTable(ctx.elasticsearch_client(), s["index"], s["key"], s["match"],
                               s["max_rows"], s["reload_period"])
    except TableError as err:
        name = "table" if s["table"] else "index"
        raise ConfigError(f"config key '{where}.{NAME}.{name}': {s[name] if s['index'] else path}: "
                          f"{err}") from None
    ctx.tables[identity] = table
    return table


def build(where: str, settings: dict[str, Any], ctx: Any) -> Any:
    s = ctx.settings(where, NAME, settings, {
        "field": ("str", ""), "table": ("str", ""), "index": ("str", ""), "key": ("str", ""),
        "target": ("str", ""), "match": ("str", "exact"),
        "reload_period": ("duration", DEFAULT_RELOAD_PERIOD_S),
        "max_bytes": ("int", DEFAULT_MAX_BYTES), "max_rows": ("int", DEFAULT_MAX_ROWS)},
        required=("field", "key", "target"))
    for name in ("field", "key", "target"):
        if not s[name]:
            raise ConfigError(f"config key '{where}.{NAME}.{name}': must not be empty")
    if bool(s["table"]) == bool(s["index"]):
        raise ConfigError(f"config key '{where}.{NAME}': give either table (a file) or index "
                          "(an Elasticsearch index), not both")
    if s["match"] not in ("exact", "network"):
        raise ConfigError(f"config key '{where}.{NAME}.match': expected exact or network, "
                          f"got {s['match']!r}")
    if not ctx.load_tables:
        return lambda doc: True
    table = _table(where, s, ctx)
    field, target = split_path(s["field"]), split_path(s["target"])
    find = table.find

    def lookup(doc: dict[str, Any]) -> bool:
        value = get_path(doc, field)
        if value is MISSING:
            return True
        if value.__class__ is list:
            row = next((r for r in map(find, value) if r is not None), None)
        else:
            row = find(value)
        if row is not None:
            node = doc
            for part in target:
                child = node.get(part)
                if child.__class__ is not dict:
                    child = node[part] = {}
                node = child
            node.update(row)
        return True
    return lookup


def mapping_targets(items: list[dict[str, Any]]) -> list[str]:
    """The `target` of every lookup: the index template maps each as a flattened field."""
    return [settings["target"] for item in items for name, settings in item.items()
            if name == NAME and isinstance(settings, dict) and isinstance(settings.get("target"), str)]
