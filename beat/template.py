"""The Elasticsearch index template: common fields plus one part per decoder.

index_templates/common.json maps what the engine writes for every document;
index_templates/<decoder>.json maps a built-in decoder's fields (a plug-in
passes its own as `DecoderSpec.mappings`). Mappings are strict about types
(`dynamic: false` would hide mistakes, so unmapped fields are refused by a
test instead, see tests/beat/test_template.py).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from decoders.api import DecoderSpec

__all__ = ["TEMPLATE_DIR", "TemplateError", "build_template", "install_template"]

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "index_templates"


class TemplateError(Exception):
    """A mapping file is missing or not valid JSON."""


def _load(name: str) -> dict[str, Any]:
    path = TEMPLATE_DIR / f"{name}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
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


def build_template(specs: list[DecoderSpec], index_pattern: str) -> dict[str, Any]:
    """The composable index template body for the given decoders."""
    common = _load("common")
    properties = common["mappings"]["properties"]
    for spec in specs:
        part = dict(spec.mappings) if spec.mappings is not None else _load(spec.name)
        _merge_properties(properties, part.get("properties", part))
    return {
        "index_patterns": [index_pattern],
        "priority": 200,
        "template": {"settings": common.get("settings", {}), "mappings": common["mappings"]},
        "_meta": {"description": "wirebeat documents (packetbeat 8.x field names)"},
    }


def install_template(client: Any, name: str, body: dict[str, Any], overwrite: bool) -> bool:
    """Put the template unless it exists (or overwrite is set). True if written."""
    if not overwrite and client.indices.exists_index_template(name=name):
        return False
    client.indices.put_index_template(name=name, **body)
    return True
