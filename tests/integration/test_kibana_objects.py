"""The Kibana saved objects in kibana/: well formed, self-contained, and on mapped fields.

No Kibana runs here, so these tests read the NDJSON files as Kibana would
import them and check them against the index template wirebeat installs:
- every object has the fields its type needs, ids are unique and stable;
- every reference resolves to an object in kibana/;
- every field a visualisation or saved search reads (Lens columns, KQL
  queries, Discover columns) is mapped, and every field a Lens column
  aggregates on (terms, date histogram, sum, percentile...) has an
  aggregatable type.
The field checks read the generated JSON, not the panel descriptions, and
are parametrized per object: panels on flow / NetFlow fields (mapped by
other branches) are named flows-*, netflow-* and *-flow.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from wirebeat.kibana.generate import rendered
from wirebeat.kibana.panels import all_panels
from wirebeat.registry import discover
from wirebeat.template import build_template

KIBANA = Path(__file__).resolve().parents[2] / "kibana"
AGGREGATABLE = {"keyword", "long", "integer", "short", "byte", "double", "float", "half_float",
                "scaled_float", "unsigned_long", "date", "date_nanos", "ip", "boolean"}
REQUIRED = {
    "index-pattern": ("title", "timeFieldName"),
    "lens": ("title", "visualizationType", "state"),
    "search": ("title", "columns", "kibanaSavedObjectMeta"),
    "dashboard": ("title", "panelsJSON", "kibanaSavedObjectMeta"),
}


def _objects() -> list[dict]:
    out = []
    for path in sorted(KIBANA.glob("*.ndjson")):
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                obj = json.loads(line)
                obj["_file"] = f"{path.name}:{n}"
                out.append(obj)
    return out


OBJECTS = _objects()
BY_KEY = {(o["type"], o["id"]): o for o in OBJECTS}


def _mapping() -> dict[str, str]:
    out: dict[str, str] = {}

    def walk(properties: dict, prefix: str) -> None:
        for name, m in properties.items():
            if "properties" in m:
                walk(m["properties"], f"{prefix}{name}.")
            else:
                out[prefix + name] = m.get("type", "object")

    walk(build_template([r.spec for r in discover()], "wirebeat-*")["template"]["mappings"]["properties"], "")
    return out


MAPPING = _mapping()


def test_the_files_are_what_the_generator_writes():
    """kibana/*.ndjson is generated (python -m wirebeat.kibana.generate), never edited by hand."""
    on_disk = {p.name: p.read_text(encoding="utf-8") for p in KIBANA.glob("*.ndjson")}
    assert on_disk == rendered()


def test_one_data_view_and_seven_dashboards_each_in_its_own_file():
    files = {p.name for p in KIBANA.glob("*.ndjson")}
    assert files == {"data-view.ndjson", "overview.ndjson", "http.ndjson", "dns.ndjson", "dhcpv4.ndjson",
                     "voip.ndjson", "flows.ndjson", "health.ndjson"}
    for name in files - {"data-view.ndjson"}:
        kinds = [json.loads(line)["type"] for line in (KIBANA / name).read_text().splitlines()]
        assert kinds[-1] == "dashboard" and kinds.count("dashboard") == 1, name
    [view] = [o for o in OBJECTS if o["type"] == "index-pattern"]
    assert view["attributes"]["title"] == "wirebeat-*"
    assert view["attributes"]["timeFieldName"] == "@timestamp"
    formats = json.loads(view["attributes"]["fieldFormatMap"])
    assert formats["event.duration"]["id"] == "duration"
    assert formats["event.duration"]["params"]["inputFormat"] == "nanoseconds"
    assert formats["event.duration"]["params"]["outputFormat"] == "asMilliseconds"
    assert formats["network.bytes"]["id"] == "bytes"
    for field in formats:
        assert field in MAPPING, f"field format for unmapped field {field}"


@pytest.mark.parametrize("obj", OBJECTS, ids=lambda o: f"{o['type']}:{o['id']}")
def test_object_shape(obj):
    for key in ("type", "id", "attributes", "references", "coreMigrationVersion", "typeMigrationVersion"):
        assert key in obj, f"{obj['_file']}: no {key}"
    assert re.fullmatch(r"\d+\.\d+\.\d+", obj["coreMigrationVersion"])
    assert re.fullmatch(r"\d+\.\d+\.\d+", obj["typeMigrationVersion"])
    for key in REQUIRED[obj["type"]]:
        assert obj["attributes"].get(key) not in (None, ""), f"{obj['_file']}: attributes.{key} missing"
    if obj["type"] != "index-pattern":
        assert obj["attributes"]["title"].startswith("[wirebeat] ")
        assert obj["id"].startswith("wirebeat-")
    for ref in obj["references"]:
        assert set(ref) == {"type", "id", "name"}
        assert (ref["type"], ref["id"]) in BY_KEY, f"{obj['_file']}: reference {ref} resolves to nothing in kibana/"


def test_ids_are_unique():
    keys = [(o["type"], o["id"]) for o in OBJECTS]
    assert len(keys) == len(set(keys))


DASHBOARDS = [o for o in OBJECTS if o["type"] == "dashboard"]


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=lambda o: o["id"])
def test_dashboard_panels_match_its_references(dashboard):
    panels = json.loads(dashboard["attributes"]["panelsJSON"])
    refs = {r["name"]: r for r in dashboard["references"]}
    assert panels
    for panel in panels:
        ref = refs[f"{panel['panelIndex']}:{panel['panelRefName']}"]
        assert ref["type"] == panel["type"]
        grid = panel["gridData"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 48 and grid["h"] > 0
    json.loads(dashboard["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])


# -- fields -----------------------------------------------------------------------

_KQL_FIELD = re.compile(r"([A-Za-z_@][\w.@]*)\s*(?::|>=|<=|<|>)")


def _kql_fields(query: str) -> set[str]:
    return set(_KQL_FIELD.findall(query))


def _lens_fields(obj: dict) -> tuple[set[str], set[str]]:
    """(fields read, fields aggregated) by a Lens object's columns and queries."""
    read, aggregated = set(), set()
    state = obj["attributes"]["state"]
    read |= _kql_fields(state["query"]["query"])
    for layer_id, layer in state["datasourceStates"]["formBased"]["layers"].items():
        ref = f"indexpattern-datasource-layer-{layer_id}"
        assert any(r["name"] == ref and r["type"] == "index-pattern" for r in obj["references"]), ref
        assert sorted(layer["columnOrder"]) == sorted(layer["columns"])
        for column in layer["columns"].values():
            field = column.get("sourceField")
            if field and field != "___records___":
                aggregated.add(field)
            for f in column.get("params", {}).get("filters", []):
                read |= _kql_fields(f["input"]["query"])
    return read, aggregated


def _search_fields(obj: dict) -> tuple[set[str], set[str]]:
    source = json.loads(obj["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    assert any(r["name"] == source["indexRefName"] for r in obj["references"])
    read = _kql_fields(source["query"]["query"]) | set(obj["attributes"]["columns"])
    return read, {field for field, _ in obj["attributes"]["sort"]}


VISUALS = [o for o in OBJECTS if o["type"] in ("lens", "search")]


@pytest.mark.parametrize("obj", VISUALS, ids=lambda o: o["id"])
def test_every_field_is_mapped_and_aggregations_are_on_aggregatable_fields(obj):
    read, aggregated = (_lens_fields if obj["type"] == "lens" else _search_fields)(obj)
    assert read | aggregated, "a panel that reads no field"
    unmapped = sorted(f for f in read | aggregated if f not in MAPPING)
    assert not unmapped, f"{obj['id']}: fields not in the index template: {unmapped}"
    wrong = sorted(f"{f} ({MAPPING[f]})" for f in aggregated if MAPPING[f] not in AGGREGATABLE)
    assert not wrong, f"{obj['id']}: aggregated fields of a type Elasticsearch cannot aggregate: {wrong}"


def test_an_unmapped_field_would_be_caught():
    """The check above can fail: a column on a made-up field and on a text field."""
    [obj] = [o for o in OBJECTS if o["id"] == "wirebeat-dns-top-domains"]
    broken = json.loads(json.dumps(obj))
    column = broken["attributes"]["state"]["datasourceStates"]["formBased"]["layers"]["layer1"]["columns"]["b0"]
    column["sourceField"] = "dns.question.nonexistent"
    with pytest.raises(AssertionError, match="not in the index template"):
        test_every_field_is_mapped_and_aggregations_are_on_aggregatable_fields(broken)
    column["sourceField"] = "error.message"
    with pytest.raises(AssertionError, match="cannot aggregate"):
        test_every_field_is_mapped_and_aggregations_are_on_aggregatable_fields(broken)


@pytest.mark.parametrize("panel", [p for _, p in all_panels()], ids=lambda p: p.id)
def test_the_generated_object_reads_exactly_the_fields_its_description_names(panel):
    """panels.py is what the report and the data test run: the Kibana object must read the same fields."""
    obj = BY_KEY[("search" if panel.chart == "search" else "lens", f"wirebeat-{panel.id}")]
    read, aggregated = (_lens_fields if obj["type"] == "lens" else _search_fields)(obj)
    described = panel.fields()
    assert read | aggregated == {f for f, _ in described}
    assert aggregated == {f for f, must_aggregate in described if must_aggregate}
