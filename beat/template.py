"""The Elasticsearch index template: common fields plus one part per decoder.

index_templates/common.json maps what the engine writes for every document;
index_templates/<decoder>.json maps a built-in decoder's fields (a plug-in
passes its own as `DecoderSpec.mappings`). Mappings are strict about types
(`dynamic: false` would hide mistakes, so unmapped fields are refused by a
test instead, see tests/beat/test_template.py).
"""
from __future__ import annotations

import json
import re
from functools import cache
from typing import TYPE_CHECKING, Any

from wirebeat.decoders.api import DecoderSpec

if TYPE_CHECKING:
    from elasticsearch import BadRequestError

__all__ = ["TemplateError", "build_template", "install_template", "template_dir"]

# index_templates/ ships inside the package as `wirebeat.index_templates`, so an
# installed wheel finds it whatever the working directory. Found when first read
# (`template_dir`): importlib.resources costs a console or file run ~5 ms of start-up
# (tempfile, zipfile, shutil ...) and only the Elasticsearch output and `setup` read it.
@cache
def template_dir() -> Any:
    """index_templates/ as an importlib.resources Traversable."""
    from importlib import resources
    return resources.files("wirebeat.index_templates")


class TemplateError(Exception):
    """A mapping file is missing or not valid JSON, or Elasticsearch refused the template."""


def _load(name: str) -> dict[str, Any]:
    path = template_dir() / f"{name}.json"
    try:
        return json.loads(path.read_bytes())
    except FileNotFoundError:
        raise TemplateError(f"index template part {path} is missing") from None
    except json.JSONDecodeError as err:
        raise TemplateError(f"index template part {path}: invalid JSON: {err}") from None


def _merge_properties(into: dict[str, Any], extra: dict[str, Any]) -> None:
    for field, mapping in extra.items():
        current = into.get(field)
        if current and "properties" in current and "properties" in mapping:
            _merge_properties(current["properties"], mapping["properties"])
        else:
            into[field] = mapping


def build_template(specs: list[DecoderSpec], index_pattern: str,
                   priority: int = 200, flattened: list[str] = ()) -> dict[str, Any]:
    """The composable index template body for the given decoders.

    `flattened` names fields whose sub-fields come from the user's data (the
    targets of lookup processors: table columns): each is mapped `flattened`,
    so every column is searchable as a keyword without a mapping per column.
    """
    common = _load("common")
    properties = common["mappings"]["properties"]
    for spec in specs:
        part = dict(spec.mappings) if spec.mappings is not None else _load(spec.name)
        _merge_properties(properties, part.get("properties", part))
    for path in flattened:
        node = properties
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {}).setdefault("properties", {})
        node[leaf] = {"type": "flattened"}
    return {
        "index_patterns": [index_pattern],
        "priority": priority,
        "template": {"settings": common.get("settings", {}), "mappings": common["mappings"]},
        "_meta": {"description": "wirebeat documents (packetbeat 8.x field names)"},
    }


# Elasticsearch's words when two templates of one priority would match one index.
_CLASH = re.compile(r"matching patterns from existing templates \[([^\]]+)\]")


def install_template(client: Any, name: str, body: dict[str, Any], overwrite: bool) -> bool:
    """Put the template unless it exists (or overwrite is set). True if written.

    A clash with another template of the same priority is a TemplateError
    naming both templates and the settings that resolve it.
    """
    # Imported here: worker processes (beat/workers.py) load this module, never the client.
    from elasticsearch import BadRequestError

    if not overwrite and client.indices.exists_index_template(name=name):
        return False
    try:
        client.indices.put_index_template(name=name, **body)
    except BadRequestError as err:
        reason = _reason(err)
        clash = _CLASH.search(reason)
        if clash:
            raise TemplateError(
                f"index template {name} (patterns {', '.join(body['index_patterns'])}, priority "
                f"{body['priority']}) overlaps existing template(s) {clash.group(1)} of the same "
                f"priority; set setup.template.priority to another value, or "
                f"setup.template.pattern / output.elasticsearch.index so they do not overlap"
            ) from None
        raise TemplateError(f"index template {name} refused by Elasticsearch: {reason}") from None
    return True


def _reason(err: BadRequestError) -> str:
    info = err.info if isinstance(err.info, dict) else {}
    error = info.get("error", {})
    if isinstance(error, dict):
        return str(error.get("reason") or error.get("type") or err.message)
    return str(error or err.message)
