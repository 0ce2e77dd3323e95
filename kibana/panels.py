"""Every chart and table wirebeat shows, described once.

A `Panel` says what to count (`metrics`) over what (`buckets`), for which
documents (`where`). From that one description come:
- the Kibana Lens object and its place on a dashboard (kibana/generate.py);
- the Elasticsearch request behind it (`Panel.request()`), which the tests
  run against the indexed demo captures and `wirebeat report` draws;
- the fields it uses and which of them must be aggregatable (`Panel.fields()`),
  which the tests check against the index template.

Conditions are written once and rendered both as KQL (Kibana) and as query
DSL (Elasticsearch), so the two cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DASHBOARDS", "DATA_VIEW_ID", "DATA_VIEW_PATTERN", "FIELD_FORMATS", "Cond", "Dashboard",
           "DateHistogram", "Filters", "Metric", "Panel", "Terms", "all_panels", "pick_interval"]

DATA_VIEW_ID = "wirebeat-data-view"
DATA_VIEW_PATTERN = "wirebeat-*"

# How Kibana shows numbers: bytes as KB/MB, event.duration (ns) as milliseconds.
_BYTES = {"id": "bytes"}
FIELD_FORMATS: dict[str, dict[str, Any]] = {
    "event.duration": {"id": "duration", "params": {"inputFormat": "nanoseconds",
                                                    "outputFormat": "asMilliseconds",
                                                    "outputPrecision": 2}},
    **{f: _BYTES for f in ("network.bytes", "source.bytes", "destination.bytes", "client.bytes",
                           "server.bytes", "http.request.bytes", "http.response.bytes",
                           "rtp.payload_bytes")},
}


# -- conditions --------------------------------------------------------------

@dataclass(frozen=True)
class Cond:
    """field = value, field in values, field exists, or a numeric range [gte, lt); `negate`: not that."""

    field: str
    value: Any = None
    values: tuple[Any, ...] = ()
    exists: bool = False
    gte: float | None = None
    lt: float | None = None
    negate: bool = False

    def kql(self) -> str:
        return f"not ({self._kql()})" if self.negate else self._kql()

    def dsl(self) -> dict[str, Any]:
        return {"bool": {"must_not": [self._dsl()]}} if self.negate else self._dsl()

    def _kql(self) -> str:
        if self.exists:
            return f"{self.field} : *"
        if self.values:
            return "(" + " or ".join(f"{self.field} : {_kql_value(v)}" for v in self.values) + ")"
        if self.gte is not None or self.lt is not None:
            parts = []
            if self.gte is not None:
                parts.append(f"{self.field} >= {self.gte:g}")
            if self.lt is not None:
                parts.append(f"{self.field} < {self.lt:g}")
            return " and ".join(parts)
        return f"{self.field} : {_kql_value(self.value)}"

    def _dsl(self) -> dict[str, Any]:
        if self.exists:
            return {"exists": {"field": self.field}}
        if self.values:
            return {"terms": {self.field: list(self.values)}}
        if self.gte is not None or self.lt is not None:
            bounds = {k: v for k, v in (("gte", self.gte), ("lt", self.lt)) if v is not None}
            return {"range": {self.field: bounds}}
        return {"term": {self.field: self.value}}


def _kql_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def kql(conds: tuple[Cond, ...]) -> str:
    return " and ".join(c.kql() for c in conds)


def dsl(conds: tuple[Cond, ...]) -> dict[str, Any]:
    return {"bool": {"filter": [c.dsl() for c in conds]}} if conds else {"match_all": {}}


# -- buckets and metrics -------------------------------------------------------

_INTERVALS = ("1s", "5s", "10s", "30s", "1m", "5m", "10m", "30m", "1h", "3h", "12h", "1d", "7d", "30d", "365d")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def pick_interval(first_ms: float | None, last_ms: float | None, buckets: int = 60) -> str:
    """The smallest round interval giving at most `buckets` buckets between two times (as Kibana's auto)."""
    span_s = ((last_ms or 0) - (first_ms or 0)) / 1000
    for interval in _INTERVALS:
        if span_s / (int(interval[:-1]) * _SECONDS[interval[-1]]) <= buckets:
            return interval
    return _INTERVALS[-1]


@dataclass(frozen=True)
class DateHistogram:
    field: str = "@timestamp"

    def label(self) -> str:
        return "time"

    def agg(self, metric_key: str | None, interval: str = "1d") -> dict[str, Any]:
        # Empty buckets are left out: a capture spread over months stays a few buckets.
        return {"date_histogram": {"field": self.field, "fixed_interval": interval, "min_doc_count": 1}}


@dataclass(frozen=True)
class Terms:
    field: str
    size: int = 10
    title: str = ""

    def label(self) -> str:
        return self.title or self.field

    def agg(self, metric_key: str | None) -> dict[str, Any]:
        order = {metric_key: "desc"} if metric_key else {"_count": "desc"}
        return {"terms": {"field": self.field, "size": self.size, "order": order}}


@dataclass(frozen=True)
class Filters:
    """Named groups of documents, e.g. HTTP status classes."""

    groups: tuple[tuple[str, tuple[Cond, ...]], ...]
    title: str = ""

    def label(self) -> str:
        return self.title or "group"

    def agg(self, metric_key: str | None) -> dict[str, Any]:
        return {"filters": {"filters": {name: dsl(conds) for name, conds in self.groups}}}

    @property
    def fields_used(self) -> list[str]:
        return [c.field for _, conds in self.groups for c in conds]


Bucket = DateHistogram | Terms | Filters

_ES_METRIC = {"sum": "sum", "avg": "avg", "max": "max", "min": "min", "unique_count": "cardinality"}


@dataclass(frozen=True)
class Metric:
    op: str                      # count, sum, avg, max, min, unique_count, percentile
    field: str = ""
    percentile: float = 0.0
    title: str = ""

    @property
    def key(self) -> str:
        if self.op == "count":
            return "_count"
        suffix = f"_{self.percentile:g}" if self.op == "percentile" else ""
        return f"{self.op}{suffix}_{self.field}".replace(".", "_")

    def label(self) -> str:
        if self.title:
            return self.title
        if self.op == "count":
            return "documents"
        if self.op == "percentile":
            return f"p{self.percentile:g} {self.field}"
        return f"{self.op} {self.field}"

    def agg(self) -> dict[str, Any] | None:
        if self.op == "count":
            return None
        if self.op == "percentile":
            return {"percentiles": {"field": self.field, "percents": [self.percentile]}}
        return {_ES_METRIC[self.op]: {"field": self.field}}

    def value(self, bucket: dict[str, Any]) -> float | None:
        if self.op == "count":
            return bucket["doc_count"]
        got = bucket[self.key]
        if self.op == "percentile":
            return next(iter(got["values"].values()))
        return got["value"]


# -- panels -------------------------------------------------------------------

@dataclass(frozen=True)
class Panel:
    """One chart or table. `chart`: line, area, bar, bar_horizontal, pie, table, metric, search."""

    id: str
    title: str
    chart: str
    where: tuple[Cond, ...] = ()
    buckets: tuple[Bucket, ...] = ()        # x axis first, then split/rows
    metrics: tuple[Metric, ...] = (Metric("count"),)
    columns: tuple[str, ...] = ()           # search panels: the document columns shown
    sort: str = "@timestamp"                # search panels
    width: int = 24                         # of Kibana's 48 grid columns
    height: int = 12

    def fields(self) -> list[tuple[str, bool]]:
        """(field, must be aggregatable) for every field this panel reads."""
        out: list[tuple[str, bool]] = [(c.field, False) for c in self.where]
        for b in self.buckets:
            if isinstance(b, Filters):
                out += [(f, False) for f in b.fields_used]
            else:
                out.append((b.field, True))
        out += [(m.field, True) for m in self.metrics if m.op != "count"]
        out += [(c, False) for c in self.columns]
        if self.chart == "search":
            out.append((self.sort, True))
        return out

    def request(self, extra: tuple[dict[str, Any], ...] = (), interval: str = "1d") -> dict[str, Any]:
        """The Elasticsearch search body (size, query, aggs) behind this panel.

        `extra`: more filters (a time range); `interval`: of the date histogram
        (Kibana picks its own from the time shown, see `pick_interval`)."""
        query = dsl(self.where)
        if extra:
            query = {"bool": {"filter": [query, *extra]}}
        if self.chart == "search":
            return {"size": 20, "query": query, "sort": [{self.sort: "desc"}],
                    "_source": list(self.columns) + ["@timestamp"]}
        return {"size": 0, "query": query, "aggs": self._aggs(0, interval)}

    def _aggs(self, level: int, interval: str) -> dict[str, Any]:
        metrics = {m.key: m.agg() for m in self.metrics if m.op != "count"}
        if level == len(self.buckets):
            return metrics
        bucket = self.buckets[level]
        order_key = self.metrics[0].key if self.metrics[0].op not in ("count", "percentile") else None
        agg = bucket.agg(order_key, interval) if isinstance(bucket, DateHistogram) else bucket.agg(order_key)
        # The metrics sit at every level, so each level's terms can be ordered by them.
        inner = {**metrics, **self._aggs(level + 1, interval)} if level + 1 < len(self.buckets) \
            else self._aggs(level + 1, interval)
        if inner:
            agg["aggs"] = inner
        return {f"b{level}": agg}

    def rows(self, response: dict[str, Any]) -> list[tuple[list[Any], list[float | None]]]:
        """Flatten an aggregation response: ([bucket keys...], [metric values...]) per leaf."""
        if self.chart == "search":
            return [([hit["_source"]], []) for hit in response["hits"]["hits"]]
        out: list[tuple[list[Any], list[float | None]]] = []

        def walk(node: dict[str, Any], level: int, keys: list[Any]) -> None:
            if level == len(self.buckets):
                out.append((keys, [m.value(node) for m in self.metrics]))
                return
            buckets = node.get(f"b{level}", {}).get("buckets", [])    # no index: no aggregations
            items = buckets.items() if isinstance(buckets, dict) else (
                (b.get("key_as_string", b["key"]), b) for b in buckets)
            for key, b in items:
                if b["doc_count"]:
                    walk(b, level + 1, [*keys, key])

        walk(response.get("aggregations", {}) if self.buckets else
             {"doc_count": response["hits"]["total"]["value"], **response.get("aggregations", {})},
             0, [])
        return out


@dataclass(frozen=True)
class Dashboard:
    id: str                      # also the NDJSON file name: kibana/<id>.ndjson
    title: str
    description: str
    panels: tuple[Panel, ...] = field(default_factory=tuple)


# -- the dashboards ------------------------------------------------------------

def ds(name: str) -> Cond:
    return Cond("event.dataset", name)


T = DateHistogram()
COUNT = Metric("count")
ERROR = Cond("status", "Error")
FLOW_FINAL = (ds("flow"), Cond("flow.final", True))

NOT_METRIC = (Cond("event.kind", "metric", negate=True),)      # wirebeat's own monitoring documents
OVERVIEW = Dashboard("overview", "[wirebeat] Overview", "What wirebeat saw: protocols, talkers, errors, sources.", (
    Panel("overview-datasets", "Documents over time by protocol", "bar", NOT_METRIC, (T, Terms("event.dataset")),
          width=48),
    Panel("overview-protocol-mix", "Protocol mix", "pie", NOT_METRIC, (Terms("event.dataset"),), width=16),
    Panel("overview-top-talkers-flow", "Top talkers by bytes sent (flows)", "bar_horizontal", FLOW_FINAL,
          (Terms("source.ip", 10),), (Metric("sum", "source.bytes", title="bytes sent"),), width=16),
    Panel("overview-errors", "Errors over time by protocol", "bar", (ERROR,),
          (T, Terms("event.dataset")), width=16),
    Panel("overview-capture-sources", "Capture sources", "table", NOT_METRIC,
          (Terms("capture.source", 50),), metrics=(COUNT, Metric("unique_count", "event.dataset", title="protocols"))),
    Panel("overview-collector-clients", "Collector clients (monitoring)", "table", (ds("wirebeat.stats"),),
          (Terms("capture.source", 50), Terms("wirebeat.stats.source.kind", 3, "kind")),
          (Metric("max", "wirebeat.stats.source.packets", title="packets"),
           Metric("max", "wirebeat.stats.source.dropped", title="dropped"))),
))

HTTP_CLASSES = Filters(tuple((f"{c}xx", (Cond("http.response.status_code", gte=c * 100, lt=c * 100 + 100),))
                             for c in (1, 2, 3, 4, 5)), "status class")
HTTP = Dashboard("http", "[wirebeat] HTTP", "HTTP requests, status classes, URLs, latency and errors.", (
    Panel("http-status-over-time", "Requests over time by status class", "bar", (ds("http"),), (T, HTTP_CLASSES), width=48),
    Panel("http-top-urls", "Top URLs", "bar_horizontal", (ds("http"),), (Terms("url.path", 10),)),
    Panel("http-top-hosts", "Top hosts", "bar_horizontal", (ds("http"),), (Terms("url.domain", 10),)),
    Panel("http-latency", "Latency percentiles (ms)", "line", (ds("http"),), (T,),
          tuple(Metric("percentile", "event.duration", p) for p in (50, 95, 99)), width=48),
    Panel("http-errors", "HTTP errors", "search", (ds("http"), ERROR),
          columns=("http.request.method", "url.full", "http.response.status_code", "source.ip", "destination.ip"),
          width=48),
))

DNS = Dashboard("dns", "[wirebeat] DNS", "DNS queries, response codes, domains, NXDOMAIN, latency.", (
    Panel("dns-rcodes-over-time", "Queries over time by response code", "bar", (ds("dns"),),
          (T, Terms("dns.response_code")), width=48),
    Panel("dns-top-domains", "Top queried names", "bar_horizontal", (ds("dns"),), (Terms("dns.question.name", 15),)),
    Panel("dns-top-registered-domains", "Top registered domains", "bar_horizontal", (ds("dns"),),
          (Terms("dns.question.registered_domain", 15),)),
    Panel("dns-nxdomain", "NXDOMAIN over time", "line", (ds("dns"), Cond("dns.response_code", "NXDOMAIN")), (T,)),
    Panel("dns-latency", "Latency percentiles (ms)", "line", (ds("dns"),), (T,),
          tuple(Metric("percentile", "event.duration", p) for p in (50, 95, 99))),
    Panel("dns-unanswered", "Unanswered queries", "search", (ds("dns"), ERROR, Cond("error.message", exists=True)),
          columns=("dns.question.name", "dns.question.type", "source.ip", "destination.ip", "error.message"), width=48),
))

DHCP = Dashboard("dhcpv4", "[wirebeat] DHCP", "DHCPv4 message types, clients and leases.", (
    Panel("dhcp-types-over-time", "Message types over time", "bar", (ds("dhcpv4"),),
          (T, Terms("dhcpv4.option.message_type")), width=48),
    Panel("dhcp-clients", "Clients by MAC", "table", (ds("dhcpv4"),),
          (Terms("dhcpv4.client_mac", 50),), (COUNT,)),
    Panel("dhcp-leases", "Leases (ACK)", "table", (ds("dhcpv4"), Cond("dhcpv4.option.message_type", "ack")),
          (Terms("dhcpv4.client_mac", 50), Terms("dhcpv4.assigned_ip", 5)),
          (Metric("max", "dhcpv4.option.ip_address_lease_time_sec", title="lease time (s)"),)),
))

RTP = (ds("rtp"),)
VOIP = Dashboard("voip", "[wirebeat] VoIP", "SIP calls with their RTP streams: loss, jitter, RTCP round trips.", (
    Panel("voip-calls", "Calls (SIP) with their RTP streams", "table", RTP,
          (Terms("sip.call_id", 50, "call"),),
          (Metric("max", "rtp.loss_pct", title="worst loss %"), Metric("max", "rtp.jitter.max_ms", title="worst jitter ms"),
           Metric("unique_count", "rtp.ssrc", title="streams"), Metric("sum", "rtp.packets", title="packets"),
           Metric("sum", "rtp.lost", title="lost")), width=48),
    Panel("voip-sip-invites", "SIP calls (INVITE requests)", "search", (ds("sip"), Cond("sip.method", "INVITE")),
          columns=("sip.call_id", "sip.from.uri.original", "sip.to.uri.original", "source.ip", "destination.ip"),
          width=48),
    Panel("voip-loss-per-call", "Loss % per call (worst stream)", "bar_horizontal", RTP,
          (Terms("sip.call_id", 15, "call"),), (Metric("max", "rtp.loss_pct", title="loss %"),)),
    Panel("voip-jitter-per-call", "Jitter per call (worst stream, ms)", "bar_horizontal", RTP,
          (Terms("sip.call_id", 15, "call"),), (Metric("max", "rtp.jitter.max_ms", title="jitter ms"),)),
    Panel("voip-quality-over-time", "Loss % and jitter over time", "line", RTP, (T,),
          (Metric("avg", "rtp.loss_pct", title="mean loss %"), Metric("avg", "rtp.jitter.mean_ms", title="mean jitter ms")),
          width=48),
    Panel("voip-worst-streams", "Worst streams", "table", RTP,
          (Terms("rtp.ssrc", 20, "ssrc"),),
          (Metric("max", "rtp.loss_pct", title="loss %"), Metric("max", "rtp.jitter.max_ms", title="jitter ms"),
           Metric("max", "rtp.lost", title="lost"), Metric("max", "rtp.packets", title="packets")), width=48),
    Panel("voip-rtcp-rtt", "RTCP round-trip time (ms)", "line", (ds("rtp"), Cond("rtcp.rtt_ms", exists=True)), (T,),
          (Metric("avg", "rtcp.rtt_ms", title="mean RTT ms"), Metric("max", "rtcp.rtt_ms", title="max RTT ms")), width=48),
    Panel("voip-call-quality", "Call quality (E-model, worst and mean stream)", "table", (ds("rtp.call"),),
          (Terms("sip.call_id", 50, "call"),),
          (Metric("min", "rtp.call.mos", title="worst MOS"), Metric("min", "rtp.call.r_factor", title="worst R"),
           Metric("avg", "rtp.call.mean_mos", title="mean MOS"), Metric("max", "rtp.call.loss_pct", title="loss %")),
          width=48),
))

FLOWS = Dashboard("flows", "[wirebeat] Flows and NetFlow", "Packet flows and NetFlow/IPFIX records.", (
    Panel("flows-bytes-over-time", "Flow bytes over time", "area", FLOW_FINAL, (T,),
          (Metric("sum", "network.bytes", title="bytes"),)),
    Panel("flows-packets-over-time", "Flow packets over time", "area", FLOW_FINAL, (T,),
          (Metric("sum", "network.packets", title="packets"),)),
    Panel("flows-top-conversations", "Top conversations", "table", FLOW_FINAL,
          (Terms("source.ip", 10), Terms("destination.ip", 5)),
          (Metric("sum", "network.bytes", title="bytes"), Metric("sum", "network.packets", title="packets"))),
    Panel("flows-top-ports", "Top destination ports", "bar_horizontal", FLOW_FINAL,
          (Terms("destination.port", 10), Terms("network.transport", 3)), (Metric("sum", "network.bytes", title="bytes"),)),
    Panel("netflow-bytes-over-time", "NetFlow bytes over time by exporter", "area", (ds("netflow"),),
          (T, Terms("netflow.exporter.address", 10)), (Metric("sum", "network.bytes", title="bytes"),), width=48),
    Panel("netflow-exporters", "NetFlow exporters and listeners", "table", (ds("netflow"),),
          (Terms("netflow.exporter.address", 20, "exporter"), Terms("capture.source", 5, "listener")),
          (COUNT, Metric("sum", "network.bytes", title="bytes"), Metric("sum", "network.packets", title="packets"))),
    Panel("netflow-top-conversations", "NetFlow top conversations", "table", (ds("netflow"),),
          (Terms("source.ip", 10), Terms("destination.ip", 5)), (Metric("sum", "network.bytes", title="bytes"),)),
))

STATS = (ds("wirebeat.stats"),)
SOURCES = (ds("wirebeat.stats"), Cond("wirebeat.stats.source.kind", exists=True))
HEALTH = Dashboard("health", "[wirebeat] Collector health", "wirebeat's own monitoring documents (monitoring.enabled).", (
    Panel("health-packets", "Packets read over time", "line", STATS, (T,),
          (Metric("max", "wirebeat.stats.totals.packets", title="packets read"),)),
    Panel("health-drops-malformed", "Drops and malformed over time", "line", STATS, (T,),
          (Metric("max", "wirebeat.stats.totals.dropped", title="dropped"),
           Metric("max", "wirebeat.stats.totals.malformed", title="malformed"))),
    Panel("health-per-source", "Per capture source and collector client", "table", SOURCES,
          (Terms("capture.source", 50, "source"), Terms("wirebeat.stats.source.kind", 3, "kind")),
          (Metric("max", "wirebeat.stats.source.packets", title="packets"),
           Metric("max", "wirebeat.stats.source.dropped", title="dropped"),
           Metric("max", "wirebeat.stats.source.malformed", title="malformed")), width=48),
    Panel("health-rss", "Memory (RSS) over time", "line", STATS, (T,),
          (Metric("max", "wirebeat.stats.process.rss_bytes", title="RSS bytes"),)),
))

DASHBOARDS: tuple[Dashboard, ...] = (OVERVIEW, HTTP, DNS, DHCP, VOIP, FLOWS, HEALTH)


def all_panels() -> list[tuple[Dashboard, Panel]]:
    return [(d, p) for d in DASHBOARDS for p in d.panels]
