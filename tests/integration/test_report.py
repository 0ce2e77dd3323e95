"""`wirebeat report`: a self-contained HTML file, opened in a real browser, whose numbers are Elasticsearch's.

The bundled captures are indexed into an index of this module's own; the
report is written from it with the real command; headless Chromium (Debian's
package) opens it. The checks:
- Chromium's screenshot is a page with drawn charts (not a blank page);
- each chart image decodes in the browser at the expected size and is not
  blank (a script added to a copy of the file measures it through a canvas);
- the file refers to nothing outside itself;
- the tables' numbers equal what the test computes itself from Elasticsearch
  (its own aggregations, or the raw documents) and, for the capture sources,
  the packet counts capinfos reads from the pcap files.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import uuid
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

import pytest
from elasticsearch import Elasticsearch

from conftest import run_wirebeat
from running import require
from test_kibana_data import CAPTURES, index_captures
from wirebeat.report import CHART_SIZE_PX

pytestmark = pytest.mark.elasticsearch

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(es_url, tmp_path_factory):
    """(Elasticsearch, index, path of the written report)."""
    name = f"kibana-report-{uuid.uuid4().hex[:8]}"
    es = Elasticsearch(es_url)
    index_captures(es_url, name)
    path = tmp_path_factory.mktemp("report") / "report.html"
    proc = run_wirebeat("report", "-E", f"output.elasticsearch.hosts=[{es_url}]",
                        "-E", f"output.elasticsearch.index={name}", "-o", str(path), timeout=300)
    try:
        assert proc.returncode == 0, proc.stderr.decode()
        assert str(path) in proc.stdout.decode()
        yield es, name, path
    finally:
        es.indices.delete(index=name, ignore_unavailable=True)
        es.options(ignore_status=404).indices.delete_index_template(name=name)


def _chromium(*args: str) -> subprocess.CompletedProcess[bytes]:
    require(CHROMIUM is not None, "chromium (Debian package)")
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--virtual-time-budget=10000", *args],
                          capture_output=True, timeout=120, check=False)


class Tables(HTMLParser):
    """The report's tables by data-panel: a list of rows of cell texts (header row first)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.current: list[list[str]] | None = None
        self.cell: list[str] | None = None
        self.probe: list[str] | None = None
        self.total = ""
        self.in_total = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.current = self.tables.setdefault(attrs.get("data-panel", ""), [])
        elif tag == "tr" and self.current is not None:
            self.current.append([])
        elif tag in ("td", "th") and self.current is not None:
            self.cell = []
        elif tag == "pre" and attrs.get("id") == "probe":
            self.probe = []
        elif attrs.get("id") == "total":
            self.in_total = True

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.current[-1].append("".join(self.cell).strip())
            self.cell = None
        elif tag == "table":
            self.current = None
        elif tag == "b":
            self.in_total = False

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)
        if self.probe is not None:
            self.probe.append(data)
        if self.in_total:
            self.total += data


def _parse(text: str) -> Tables:
    tables = Tables()
    tables.feed(text)
    return tables


_PROBE = """<script>
window.addEventListener('load', () => {
  const out = [];
  for (const img of document.querySelectorAll('img')) {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    let colored = 0, saturated = 0, colors = new Set();
    if (c.width && c.height) {
      const ctx = c.getContext('2d'); ctx.drawImage(img, 0, 0);
      const d = ctx.getImageData(0, 0, c.width, c.height).data;
      for (let i = 0; i < d.length; i += 4) {
        if (!(d[i] > 235 && d[i + 1] > 235 && d[i + 2] > 235)) colored++;
        if (Math.max(d[i], d[i + 1], d[i + 2]) - Math.min(d[i], d[i + 1], d[i + 2]) > 60) saturated++;
        colors.add((d[i] >> 4) * 256 + (d[i + 1] >> 4) * 16 + (d[i + 2] >> 4));
      }
    }
    out.push({alt: img.alt, complete: img.complete, w: img.naturalWidth, h: img.naturalHeight,
              colored: c.width ? colored / (c.width * c.height) : 0, saturated, colors: colors.size});
  }
  const pre = document.createElement('pre'); pre.id = 'probe';
  pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
});
</script>"""


def test_the_browser_renders_every_chart_at_its_size(report, tmp_path):
    _, _, path = report
    probe = tmp_path / "probe.html"
    probe.write_text(path.read_text(encoding="utf-8").replace("</body>", _PROBE + "</body>"), encoding="utf-8")
    proc = _chromium("--dump-dom", probe.as_uri())
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    tables = _parse(proc.stdout.decode())
    assert tables.probe is not None, "the probe script did not run"
    images = json.loads("".join(tables.probe))
    assert len(images) >= 12      # protocols 3, DNS 3, HTTP 3, VoIP 1, health 2 on the demo captures
    for img in images:
        assert img["complete"] and (img["w"], img["h"]) == CHART_SIZE_PX, img
        # Axes and labels are black and grey; data is drawn in colour.
        assert img["colored"] > 0.01 and img["saturated"] >= 100, f"blank-looking chart: {img}"


def test_screenshot_shows_a_drawn_page(report, tmp_path):
    from PIL import Image
    _, _, path = report
    shot = tmp_path / "shot.png"
    proc = _chromium("--window-size=1100,2400", f"--screenshot={shot}", path.as_uri())
    assert proc.returncode == 0 and shot.exists(), proc.stderr.decode()[-2000:]
    image = Image.open(shot).convert("RGB")
    assert image.size == (1100, 2400)
    raw = image.tobytes()
    pixels = list(zip(raw[0::3], raw[1::3], raw[2::3]))
    colored = sum(1 for r, g, b in pixels if not (r > 235 and g > 235 and b > 235))
    assert colored / len(pixels) > 0.05, "the page looks blank"
    assert len({(r >> 4, g >> 4, b >> 4) for r, g, b in pixels}) > 50, "no chart colours on the page"


def test_the_file_is_self_contained(report):
    _, _, path = report
    text = path.read_text(encoding="utf-8")
    assert not re.search(r"""(?:src|href)\s*=\s*["'](?!data:|#)""", text)
    assert "url(" not in text and "@import" not in text
    assert os.path.getsize(path) < 3 * 2**20


def _rows(tables: Tables, panel: str) -> list[list[str]]:
    rows = tables.tables[panel]
    return rows[1:]              # header first


def test_tables_equal_elasticsearch(report):
    es, index, path = report
    tables = _parse(path.read_text(encoding="utf-8"))
    assert int(tables.total) == es.count(index=index)["count"]

    # Protocol mix: documents per event.dataset, wirebeat's own metrics left out.
    got = {k: int(v) for k, v in _rows(tables, "overview-protocol-mix")}
    agg = es.search(index=index, size=0, query={"bool": {"must_not": [{"term": {"event.kind": "metric"}}]}},
                    aggs={"d": {"terms": {"field": "event.dataset", "size": 100}}})
    assert got == {b["key"]: b["doc_count"] for b in agg["aggregations"]["d"]["buckets"]}

    # DNS registered domains.
    got = {k: int(v) for k, v in _rows(tables, "dns-top-registered-domains")}
    agg = es.search(index=index, size=0, query={"term": {"event.dataset": "dns"}},
                    aggs={"d": {"terms": {"field": "dns.question.registered_domain", "size": 100}}})
    assert got == {b["key"]: b["doc_count"] for b in agg["aggregations"]["d"]["buckets"]}

    # Calls: computed here from the raw RTP documents, worst loss first.
    docs = es.search(index=index, size=1000, query={"term": {"event.dataset": "rtp"}})["hits"]["hits"]
    calls: dict[str, list[dict]] = defaultdict(list)
    for hit in docs:
        call = hit["_source"].get("sip", {}).get("call_id")
        if call:
            calls[call].append(hit["_source"]["rtp"])
    rows = _rows(tables, "voip-calls")
    assert {r[0] for r in rows} == set(calls)
    losses = [float(r[1]) for r in rows]
    assert losses == sorted(losses, reverse=True), "worst calls first"
    for call, worst_loss, worst_jitter, streams, packets, lost in rows:
        streams_of = calls[call]
        assert float(worst_loss) == pytest.approx(max(s["loss_pct"] for s in streams_of), abs=0.005)
        assert float(worst_jitter) == pytest.approx(max(s["jitter"]["max_ms"] for s in streams_of), abs=0.005)
        assert int(streams) == len({s["ssrc"] for s in streams_of})
        assert int(packets) == sum(s["packets"] for s in streams_of)
        assert int(lost) == sum(s["lost"] for s in streams_of)


def test_capture_sources_packets_equal_capinfos(report):
    """Collector health per source (monitoring documents) against capinfos' frame counts."""
    require(shutil.which("capinfos") is not None, "capinfos (tshark's wireshark-common)")
    _, _, path = report
    tables = _parse(path.read_text(encoding="utf-8"))
    got = {r[0]: (r[1], int(r[2]), int(r[3]), int(r[4])) for r in _rows(tables, "health-per-source")}
    out = subprocess.run(["capinfos", "-c", "-M", "-T", "-r", *CAPTURES], capture_output=True, text=True,
                         check=True).stdout
    expected = {name: int(count) for name, count in (line.rsplit("\t", 1) for line in out.splitlines())}
    assert {k: v[1] for k, v in got.items()} == expected
    assert all(kind == "file" and dropped == 0 for kind, _, dropped, _ in got.values())
    assert Path(CAPTURES[0]).is_absolute()


def test_bad_since_and_unwritable_output_are_one_line_exit_2(wirebeat, es_url, tmp_path):
    proc = wirebeat("report", "--since", "yesterday", "-o", str(tmp_path / "r.html"))
    assert proc.returncode == 2
    assert proc.stderr.decode().strip().splitlines() == [
        "wirebeat: --since 'yesterday': expected a duration back from now (30m, 24h, 7d) "
        "or an ISO 8601 date (2026-01-31, 2026-01-31T12:00:00Z)"]
    proc = wirebeat("report", "-E", f"output.elasticsearch.hosts=[{es_url}]",
                    "-E", "output.elasticsearch.index=kibana-nothing-here", "-o", str(tmp_path / "no" / "r.html"))
    assert proc.returncode == 2
    [line] = proc.stderr.decode().strip().splitlines()
    assert line.startswith(f"wirebeat: -o {tmp_path / 'no' / 'r.html'}: cannot write")


def test_since_leaves_out_older_documents(report, es_url, tmp_path):
    """--since counts only newer documents (the captures' packet times are mostly older than a day)."""
    es, index, _ = report
    path = tmp_path / "recent.html"
    proc = run_wirebeat("report", "-E", f"output.elasticsearch.hosts=[{es_url}]",
                        "-E", f"output.elasticsearch.index={index}", "--since", "2000-01-01", "-o", str(path))
    assert proc.returncode == 0, proc.stderr.decode()
    assert int(_parse(path.read_text(encoding="utf-8")).total) == es.count(index=index)["count"]
    proc = run_wirebeat("report", "-E", f"output.elasticsearch.hosts=[{es_url}]",
                        "-E", f"output.elasticsearch.index={index}", "--since", "1d", "-o", str(path))
    assert proc.returncode == 0, proc.stderr.decode()
    recent = es.count(index=index, query={"range": {"@timestamp": {"gte": "now-1d"}}})["count"]
    assert 0 < recent < es.count(index=index)["count"]       # monitoring documents are recent
    assert int(_parse(path.read_text(encoding="utf-8")).total) == recent
