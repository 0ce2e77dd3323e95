"""Write the Kibana saved objects (NDJSON) from the panel descriptions in panels.py.

    python -m wirebeat.kibana.generate        # rewrites kibana/*.ndjson

One file per dashboard (its Lens visualisations and saved searches, then the
dashboard), plus data-view.ndjson. The objects follow Kibana's export format
(type, id, attributes, references, coreMigrationVersion, typeMigrationVersion);
the migration versions are old enough that Kibana 8.9+ and 9.x migrate them
on import. Ids are stable ("wirebeat-<panel id>"), so importing again with
overwrite replaces rather than duplicates.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from wirebeat.kibana.panels import (DASHBOARDS, DATA_VIEW_ID, DATA_VIEW_PATTERN, FIELD_FORMATS, Dashboard,
                                    DateHistogram, Filters, Metric, Panel, Terms, kql)

__all__ = ["DATA_VIEW_FILE", "dashboard_objects", "data_view_object", "object_id", "rendered", "template_fields",
           "write_all"]

CORE_MIGRATION_VERSION = "8.8.0"
TYPE_MIGRATION_VERSION = {"index-pattern": "8.0.0", "lens": "8.9.0", "search": "8.0.0",
                          "dashboard": "8.9.0"}
DATA_VIEW_FILE = "data-view.ndjson"
LAYER = "layer1"
_DATASOURCE_REF = f"indexpattern-datasource-layer-{LAYER}"
_SEARCH_REF = "kibanaSavedObjectMeta.searchSourceJSON.index"
_XY = {"line": "line", "area": "area_stacked", "bar": "bar_stacked", "bar_horizontal": "bar_horizontal"}


def object_id(panel: Panel) -> str:
    return f"wirebeat-{panel.id}"


def _saved(type_: str, id_: str, attributes: dict[str, Any], references: list[dict[str, str]]) -> dict[str, Any]:
    return {"type": type_, "id": id_, "attributes": attributes, "references": references,
            "coreMigrationVersion": CORE_MIGRATION_VERSION,
            "typeMigrationVersion": TYPE_MIGRATION_VERSION[type_], "managed": False}


def data_view_object() -> dict[str, Any]:
    return _saved("index-pattern", DATA_VIEW_ID, {
        "title": DATA_VIEW_PATTERN, "name": "wirebeat", "timeFieldName": "@timestamp",
        "fieldFormatMap": json.dumps(FIELD_FORMATS, sort_keys=True), "allowNoIndex": True,
    }, [])


# -- Lens ----------------------------------------------------------------------

def template_fields() -> dict[str, str]:
    """Field path -> Elasticsearch type, over the index template of every registered decoder."""
    from wirebeat.registry import discover
    from wirebeat.template import build_template

    out: dict[str, str] = {}

    def walk(properties: dict[str, Any], prefix: str) -> None:
        for name, mapping in properties.items():
            if "properties" in mapping:
                walk(mapping["properties"], f"{prefix}{name}.")
            else:
                out[prefix + name] = mapping.get("type", "object")
                for sub, sub_mapping in mapping.get("fields", {}).items():
                    out[f"{prefix}{name}.{sub}"] = sub_mapping.get("type", "object")

    template = build_template([r.spec for r in discover()], DATA_VIEW_PATTERN)
    walk(template["template"]["mappings"]["properties"], "")
    return out


_NUMERIC = {"long", "integer", "short", "byte", "double", "float", "half_float", "scaled_float",
            "unsigned_long"}


def _data_type(field: str) -> str:
    """Lens's dataType of a bucket column. Fields another branch maps (flows,
    NetFlow) are guessed from their name until the merged template has them."""
    es_type = _FIELDS.get(field)
    if es_type is None:
        es_type = ("ip" if field.endswith((".ip", ".address")) else
                   "long" if field.endswith((".port", ".bytes", ".packets")) else "keyword")
    if es_type in _NUMERIC:
        return "number"
    return {"ip": "ip", "date": "date", "boolean": "boolean"}.get(es_type, "string")


def _bucket_column(bucket: Any, order_by: str | None) -> dict[str, Any]:
    if isinstance(bucket, DateHistogram):
        return {"label": "@timestamp", "dataType": "date", "operationType": "date_histogram",
                "sourceField": bucket.field, "isBucketed": True, "scale": "interval",
                "params": {"interval": "auto", "includeEmptyRows": True, "dropPartials": False}}
    if isinstance(bucket, Filters):
        return {"label": bucket.label(), "dataType": "string", "operationType": "filters", "isBucketed": True,
                "scale": "ordinal", "customLabel": True,
                "params": {"filters": [{"label": name, "input": {"query": kql(conds), "language": "kuery"}}
                                       for name, conds in bucket.groups]}}
    assert isinstance(bucket, Terms)
    order = ({"type": "column", "columnId": order_by} if order_by else {"type": "alphabetical"})
    return {"label": bucket.label(), "customLabel": bool(bucket.title), "dataType": _data_type(bucket.field),
            "operationType": "terms", "sourceField": bucket.field, "isBucketed": True, "scale": "ordinal",
            "params": {"size": bucket.size, "orderBy": order, "orderDirection": "desc",
                       "otherBucket": False, "missingBucket": False}}


def _metric_column(metric: Metric) -> dict[str, Any]:
    column: dict[str, Any] = {"label": metric.label(), "customLabel": bool(metric.title), "dataType": "number",
                              "isBucketed": False, "scale": "ratio"}
    if metric.op == "count":
        return {**column, "operationType": "count", "sourceField": "___records___", "params": {"emptyAsNull": True}}
    column["operationType"] = metric.op
    column["sourceField"] = metric.field
    if metric.op == "percentile":
        column["params"] = {"percentile": metric.percentile}
    elif metric.op != "unique_count":
        column["params"] = {"emptyAsNull": True}
    if metric.field == "event.duration":
        column["params"] = {**column.get("params", {}), "format": {"id": "duration", "params": FIELD_FORMATS[
            "event.duration"]["params"]}}
    return column


def _visualization(panel: Panel, bucket_ids: list[str], metric_ids: list[str]) -> tuple[str, dict[str, Any]]:
    base = {"layerId": LAYER, "layerType": "data"}
    if panel.chart in _XY:
        layer = {**base, "seriesType": _XY[panel.chart], "xAccessor": bucket_ids[0], "accessors": metric_ids}
        if len(bucket_ids) > 1:
            layer["splitAccessor"] = bucket_ids[1]
        return "lnsXY", {"legend": {"isVisible": True, "position": "right"}, "valueLabels": "hide",
                         "preferredSeriesType": _XY[panel.chart], "layers": [layer]}
    if panel.chart == "pie":
        return "lnsPie", {"shape": "donut", "layers": [{**base, "primaryGroups": bucket_ids, "metrics": metric_ids,
                                                        "numberDisplay": "percent", "categoryDisplay": "default",
                                                        "legendDisplay": "default"}]}
    if panel.chart == "metric":
        return "lnsMetric", {**base, "metricAccessor": metric_ids[0]}
    assert panel.chart == "table", panel.chart
    return "lnsDatatable", {**base, "columns": [{"columnId": c} for c in bucket_ids + metric_ids]}


_FIELDS: dict[str, str] = {}


def lens_object(panel: Panel) -> dict[str, Any]:
    metric_ids = [f"m{i}" for i in range(len(panel.metrics))]
    bucket_ids = [f"b{i}" for i in range(len(panel.buckets))]
    order_by = metric_ids[0] if panel.metrics[0].op not in ("count", "percentile") else None
    columns = {c: _bucket_column(b, order_by or metric_ids[0]) for c, b in zip(bucket_ids, panel.buckets)}
    columns.update({c: _metric_column(m) for c, m in zip(metric_ids, panel.metrics)})
    vis_type, visualization = _visualization(panel, bucket_ids, metric_ids)
    state = {
        "datasourceStates": {"formBased": {"layers": {LAYER: {
            "columns": columns, "columnOrder": bucket_ids + metric_ids, "incompleteColumns": {}}}}},
        "visualization": visualization,
        "query": {"query": kql(panel.where), "language": "kuery"},
        "filters": [],
        "internalReferences": [], "adHocDataViews": {},
    }
    return _saved("lens", object_id(panel), {"title": f"[wirebeat] {panel.title}", "description": "",
                                             "visualizationType": vis_type, "state": state},
                  [{"type": "index-pattern", "id": DATA_VIEW_ID, "name": "indexpattern-datasource-current-indexpattern"},
                   {"type": "index-pattern", "id": DATA_VIEW_ID, "name": _DATASOURCE_REF}])


def search_object(panel: Panel) -> dict[str, Any]:
    source = {"query": {"query": kql(panel.where), "language": "kuery"}, "filter": [],
              "indexRefName": _SEARCH_REF}
    return _saved("search", object_id(panel), {
        "title": f"[wirebeat] {panel.title}", "description": "", "columns": list(panel.columns),
        "sort": [[panel.sort, "desc"]], "grid": {}, "hideChart": True,
        "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(source)},
    }, [{"type": "index-pattern", "id": DATA_VIEW_ID, "name": _SEARCH_REF}])


def panel_object(panel: Panel) -> dict[str, Any]:
    return search_object(panel) if panel.chart == "search" else lens_object(panel)


# -- dashboards ----------------------------------------------------------------

def _layout(panels: tuple[Panel, ...]) -> list[dict[str, int]]:
    """Left to right, top to bottom on Kibana's 48-column grid."""
    out, x, y, row_h = [], 0, 0, 0
    for p in panels:
        if x + p.width > 48:
            x, y, row_h = 0, y + row_h, 0
        out.append({"x": x, "y": y, "w": p.width, "h": p.height})
        x += p.width
        row_h = max(row_h, p.height)
    return out


def dashboard_objects(dashboard: Dashboard) -> list[dict[str, Any]]:
    """The dashboard's panels' objects, then the dashboard itself."""
    objects = [panel_object(p) for p in dashboard.panels]
    panels_json, references = [], []
    for i, (panel, grid, obj) in enumerate(zip(dashboard.panels, _layout(dashboard.panels), objects), 1):
        ref = f"panel_{i}"
        panels_json.append({"type": obj["type"], "panelIndex": str(i), "gridData": {**grid, "i": str(i)},
                            "embeddableConfig": {"enhancements": {}}, "panelRefName": ref})
        references.append({"type": obj["type"], "id": obj["id"], "name": f"{i}:{ref}"})
    search_source = {"query": {"query": "", "language": "kuery"}, "filter": []}
    objects.append(_saved("dashboard", f"wirebeat-dashboard-{dashboard.id}", {
        "title": dashboard.title, "description": dashboard.description,
        "panelsJSON": json.dumps(panels_json),
        "optionsJSON": json.dumps({"useMargins": True, "syncColors": False, "syncCursor": True,
                                   "syncTooltips": False, "hidePanelTitles": False}),
        "timeRestore": False, "version": 1,
        "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(search_source)},
    }, references))
    return objects


def _ndjson(objects: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(o, sort_keys=True) + "\n" for o in objects)


def rendered() -> dict[str, str]:
    """File name -> NDJSON text, for every file kibana/ should hold."""
    _FIELDS.update(template_fields())
    files = {DATA_VIEW_FILE: _ndjson([data_view_object()])}
    for d in DASHBOARDS:
        files[f"{d.id}.ndjson"] = _ndjson(dashboard_objects(d))
    return files


def write_all(directory: Path) -> list[Path]:
    written = []
    for name, text in rendered().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent
    for p in write_all(target):
        print(p)
