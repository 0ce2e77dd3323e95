"""`wirebeat report -o report.html`: the dashboards' views as one self-contained HTML file.

Each section shows panels of kibana/panels.py, the same descriptions the
Kibana dashboards are generated from: the report runs each panel's
Elasticsearch request and draws the answer. Charts are drawn by matplotlib
(Agg backend) as PNG images embedded as data: URIs, tables as HTML, so the
file opens anywhere without network access (about 24 KiB per chart; see
docs/kibana.md for why PNG rather than inlining a JavaScript plotting library).
"""
from __future__ import annotations

import base64
import datetime as dt
import html
import io
import os
import re
from collections import defaultdict
from typing import Any


from wirebeat.kibana.panels import DateHistogram, Panel, all_panels, pick_interval

__all__ = ["CHART_SIZE_PX", "SECTIONS", "ReportError", "since_filter", "write_report"]

CHART_SIZE_PX = (960, 320)
_DPI = 100

# (section title, panel ids, what it tells), in the order a reader wants them.
SECTIONS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Protocols", ("overview-datasets", "overview-protocol-mix", "overview-errors"),
     "Documents per protocol over time, and the errors among them."),
    ("Top talkers", ("overview-top-talkers-flow", "flows-top-conversations"),
     "Bytes sent per host, from the final flow reports."),
    ("DNS", ("dns-rcodes-over-time", "dns-top-domains", "dns-top-registered-domains"),
     "Response codes over time and the most queried names."),
    ("HTTP", ("http-status-over-time", "http-latency", "http-top-urls"),
     "Status classes over time and latency percentiles."),
    ("VoIP", ("voip-calls", "voip-sip-invites", "voip-worst-streams", "voip-rtcp-rtt"),
     "Calls with their RTP streams, worst loss first."),
    ("Collector health", ("health-per-source", "health-packets", "health-drops-malformed"),
     "wirebeat's own monitoring documents (monitoring.enabled)."),
)


class ReportError(Exception):
    """Bad --since, unwritable output file: one line, exit 2."""


_AGO = re.compile(r"^(\d+)([smhdw])$")


def since_filter(since: str) -> tuple[dict[str, Any], ...]:
    """The @timestamp range for --since ("24h", "7d", or an ISO 8601 date); () for everything."""
    if not since:
        return ()
    m = _AGO.match(since.strip())
    if m:
        return ({"range": {"@timestamp": {"gte": f"now-{m.group(1)}{m.group(2)}"}}},)
    try:
        when = dt.datetime.fromisoformat(since.strip())
    except ValueError:
        raise ReportError(f"--since {since!r}: expected a duration back from now (30m, 24h, 7d) "
                          "or an ISO 8601 date (2026-01-31, 2026-01-31T12:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return ({"range": {"@timestamp": {"gte": when.isoformat()}}},)


def _panels() -> dict[str, Panel]:
    return {p.id: p for _, p in all_panels()}


def write_report(client: Any, index: str, path: str, since: str = "") -> str:
    """Query Elasticsearch and write the HTML file. Returns a one-line summary."""
    from elasticsearch import ApiError      # here: the client library is slow to import
    extra = since_filter(since)
    panels = _panels()
    query = {"bool": {"filter": list(extra)}} if extra else {"match_all": {}}
    span = client.search(index=index, size=0, query=query, ignore_unavailable=True, allow_no_indices=True,
                         track_total_hits=True, aggs={"first": {"min": {"field": "@timestamp"}},
                                                      "last": {"max": {"field": "@timestamp"}}})
    total = span["hits"]["total"]["value"]
    aggs = span.get("aggregations", {})
    interval = pick_interval(aggs.get("first", {}).get("value"), aggs.get("last", {}).get("value"))
    sections, charts = [], 0
    for title, ids, blurb in SECTIONS:
        parts = []
        for panel_id in ids:
            panel = panels[panel_id]
            try:
                response = client.search(index=index, ignore_unavailable=True, allow_no_indices=True,
                                         **panel.request(extra, interval))
            except ApiError as err:
                raise ReportError(f"panel {panel_id}: Elasticsearch refused the query: {err.message}") from None
            rows = panel.rows(response)
            part, drew = _render(panel, rows)
            charts += drew
            parts.append(part)
        sections.append(f'<section><h2>{html.escape(title)}</h2><p class="blurb">{html.escape(blurb)}</p>'
                        + "".join(parts) + "</section>")
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
    scope = f"since {since}" if since else "all time"
    page = _PAGE.format(index=html.escape(index), now=now, scope=html.escape(scope), total=total,
                        sections="\n".join(sections))
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(page)
    except OSError as err:
        raise ReportError(f"-o {path}: cannot write: {err.strerror}") from None
    return f"{total} documents, {charts} charts, {os.path.getsize(path) // 1024} KiB"


# -- rendering ------------------------------------------------------------------

def _render(panel: Panel, rows: list[tuple[list[Any], list[float | None]]]) -> tuple[str, int]:
    head = f'<div class="panel" id="{panel.id}"><h3>{html.escape(panel.title)}</h3>'
    if panel.chart != "search":        # buckets whose metrics have no value (field absent) draw nothing
        rows = [r for r in rows if any(v is not None for v in r[1])]
    if not rows:
        return head + '<p class="empty">No documents for this view.</p></div>', 0
    if panel.chart == "search":
        return head + _search_table(panel, rows) + "</div>", 0
    out, drew = head, 0
    if panel.chart != "table":
        out += f'<img class="chart" alt="{html.escape(panel.title)}" width="{CHART_SIZE_PX[0]}" ' \
               f'height="{CHART_SIZE_PX[1]}" src="data:image/png;base64,{_chart_png(panel, rows)}">'
        drew = 1
    if panel.buckets and not isinstance(panel.buckets[0], DateHistogram):
        out += _table(panel, rows)
    return out + "</div>", drew


def _number(value: float | None) -> str:
    if value is None:
        return "–"
    if float(value).is_integer():
        return f"{int(value)}"
    return f"{value:.2f}"


def _table(panel: Panel, rows: list[tuple[list[Any], list[float | None]]]) -> str:
    """Rows as aggregated, worst (largest first metric) first."""
    heads = [b.label() for b in panel.buckets] + [m.label() for m in panel.metrics]
    ordered = sorted(rows, key=lambda r: -(r[1][0] or 0))
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(k))}</td>" for k in keys)
                   + "".join(f'<td class="num">{_number(v)}</td>' for v in values) + "</tr>"
                   for keys, values in ordered)
    return (f'<table data-panel="{panel.id}"><thead><tr>' + "".join(f"<th>{html.escape(h)}</th>" for h in heads)
            + f"</tr></thead><tbody>{body}</tbody></table>")


def _search_table(panel: Panel, rows: list[tuple[list[Any], list[float | None]]]) -> str:
    def get(doc: dict[str, Any], path: str) -> str:
        for part in path.split("."):
            doc = doc.get(part, {}) if isinstance(doc, dict) else {}
        return "" if doc == {} else str(doc)

    columns = ["@timestamp", *panel.columns]
    body = "".join("<tr>" + "".join(f"<td>{html.escape(get(keys[0], c))}</td>" for c in columns) + "</tr>"
                   for keys, _ in rows)
    return (f'<table data-panel="{panel.id}"><thead><tr>' + "".join(f"<th>{html.escape(c)}</th>" for c in columns)
            + f"</tr></thead><tbody>{body}</tbody></table>")


def _time(key: Any) -> dt.datetime:
    return dt.datetime.fromisoformat(str(key).replace("Z", "+00:00"))


def _chart_png(panel: Panel, rows: list[tuple[list[Any], list[float | None]]]) -> str:
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib import dates as mdates

    fig, ax = plt.subplots(figsize=(CHART_SIZE_PX[0] / _DPI, CHART_SIZE_PX[1] / _DPI), dpi=_DPI)
    try:
        timed = bool(panel.buckets) and isinstance(panel.buckets[0], DateHistogram)
        if panel.chart == "pie":
            labels = [str(k[0]) for k, _ in rows]
            ax.pie([v[0] or 0 for _, v in rows], labels=labels, autopct="%1.0f%%", wedgeprops={"width": 0.45})
            ax.set_aspect("equal")
        elif timed and len(panel.buckets) == 2:          # stacked by the split's keys
            series: dict[str, dict[dt.datetime, float]] = defaultdict(dict)
            for keys, values in rows:
                series[str(keys[1])][_time(keys[0])] = values[0] or 0
            xs = sorted({t for s in series.values() for t in s})
            width = _bar_width(xs)
            bottom = [0.0] * len(xs)
            for name, points in sorted(series.items(), key=lambda kv: -sum(kv[1].values())):
                ys = [points.get(x, 0) for x in xs]
                ax.bar(xs, ys, width=width, bottom=bottom, label=name)
                bottom = [b + y for b, y in zip(bottom, ys)]
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
        elif timed:
            xs = [_time(keys[0]) for keys, _ in rows]
            for i, metric in enumerate(panel.metrics):
                ys = [values[i] for _, values in rows]
                if metric.field == "event.duration":
                    ys = [None if y is None else y / 1e6 for y in ys]      # ns -> ms
                if panel.chart == "area":
                    ax.fill_between(xs, [y or 0 for y in ys], alpha=0.5, step="mid", label=metric.label())
                else:
                    ax.plot(xs, [float("nan") if y is None else y for y in ys], marker="o", label=metric.label())
            ax.legend(fontsize=8)
        else:                                            # horizontal bars, largest on top
            ordered = sorted(rows, key=lambda r: r[1][0] or 0)
            labels = [" / ".join(str(k) for k in keys) for keys, _ in ordered]
            ax.barh([_short(label) for label in labels], [v[0] or 0 for _, v in ordered])
            ax.set_xlabel(panel.metrics[0].label())
            ax.tick_params(axis="y", labelsize=8)
        if timed:
            times = sorted({_time(keys[0]) for keys, _ in rows})
            if len(times) == 1:                      # one bucket: an hour either side, not years
                ax.set_xlim(times[0] - dt.timedelta(hours=1), times[0] + dt.timedelta(hours=1))
            ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(ax.xaxis.get_major_locator()))
        ax.set_title(panel.title, fontsize=10)
        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=_DPI)
    finally:
        plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()


def _bar_width(xs: list[dt.datetime]) -> float:
    """Bar width in days: 80% of the smallest gap between buckets (an hour for one bucket)."""
    gaps = [(b - a).total_seconds() for a, b in zip(xs, xs[1:])]
    return (min(gaps) if gaps else 3600) * 0.8 / 86400


def _short(label: str, limit: int = 48) -> str:
    return label if len(label) <= limit else label[:limit - 1] + "…"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>wirebeat report: {index}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1000px; padding: 1em; color: #222; }}
h1 {{ font-size: 1.5em; }} h2 {{ border-bottom: 2px solid #ccc; margin-top: 2em; }} h3 {{ font-size: 1em; }}
.meta, .blurb, .empty {{ color: #666; }}
img.chart {{ display: block; max-width: 100%; height: auto; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ddd; padding: 2px 8px; text-align: left; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; }}
th {{ background: #f3f3f3; }}
</style></head>
<body>
<h1>wirebeat report</h1>
<p class="meta">Index <code>{index}</code>, {scope}: <b id="total">{total}</b> documents. Generated {now}.
The same views as the Kibana dashboards ([wirebeat] ...), drawn from the same panel descriptions.</p>
{sections}
</body></html>
"""
