"""Lookup tables: rows from a file, keyed by one column, reloaded when the file changes.

Formats (by file extension): `.csv` with a header row; `.json`, `.jsonl` or
`.ndjson` with one JSON object per line; `.yml` / `.yaml` with a list of
mappings. Keys are compared by value: MAC addresses in any common spelling
(colons, hyphens, Cisco dots, bare; either case), IP addresses by address
(`::1` equals `0::1`), numbers as their decimal text; with `match: network`
the key column holds CIDR networks and the longest prefix containing the
looked-up address wins. Of two rows with the same key, the later one wins.

Reloading never blocks packet processing and is atomic: `find` checks the
file's mtime and size at most every `reload_period`; a change is read and
parsed on a short-lived thread, and the new index replaces the old one in a
single reference assignment, so each document sees the old table or the new
one, never a mix. A file still being written (mtime under a second old, or
changing while read) is left for the next check; a bad file keeps the
previous table and logs one error. Files above `max_bytes` are refused.
Writing the new version to a temporary file and renaming it over the old
one is the safe way to edit a table in place.
"""
from __future__ import annotations

import csv
import io
import ipaddress
import json
import os
import re
import threading
import time
from functools import lru_cache
from typing import Any

from wirebeat import logs

__all__ = ["IndexTable", "Table", "TableError", "normalize_key"]

log = logs.get("lookup")

SETTLE_S = 1.0      # a file modified more recently than this may be half-written: wait

_MAC = re.compile(r"^(?:[0-9a-f]{2}([:-])(?:[0-9a-f]{2}\1){4}[0-9a-f]{2}"
                  r"|[0-9a-f]{4}\.[0-9a-f]{4}\.[0-9a-f]{4}|[0-9a-f]{12})$")
_HEX = re.compile(r"[^0-9a-f]")


class TableError(Exception):
    """The table file cannot be used (unreadable, too big, malformed)."""


@lru_cache(maxsize=65536)   # per-packet documents repeat the same few addresses
def _normalize_text(text: str) -> Any:
    lowered = text.strip().lower()
    if _MAC.match(lowered):
        return ("mac", _HEX.sub("", lowered))
    if ":" in lowered or lowered[:1].isdigit():
        try:
            return ("ip", ipaddress.ip_address(lowered).packed)
        except ValueError:
            pass
    return text


def normalize_key(value: Any) -> Any:
    """What a key compares as: MACs and IPs by value, numbers as text, other strings as is."""
    if isinstance(value, str):
        return _normalize_text(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return _normalize_text(str(value))
    return None


def _parse_rows(path: str, data: bytes) -> list[dict[str, Any]]:
    ext = os.path.splitext(path)[1].lower()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise TableError(f"not UTF-8 text (byte {err.start})") from None
    if ext == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        if not reader.fieldnames:
            raise TableError("no header row")
        rows = []
        for row in reader:
            if None in row:
                raise TableError(f"line {reader.line_num}: more cells than the header has columns")
            rows.append({k: v for k, v in row.items() if v is not None})
        return rows
    if ext in (".json", ".jsonl", ".ndjson"):
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise TableError(f"line {number}: invalid JSON: {err.msg}") from None
        return rows
    if ext in (".yml", ".yaml"):
        import yaml     # (already imported: processors come from a config file or a YAML -E value)
        try:
            rows = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise TableError(f"invalid YAML: {str(err).splitlines()[0]}") from None
        if rows is None:
            return []
        if not isinstance(rows, list):
            raise TableError("expected a YAML list of mappings")
        return rows
    raise TableError(f"unknown table format {ext or '(no extension)'!r}: use .csv, .json, .jsonl, "
                     ".ndjson, .yml or .yaml")


class _Index:
    """One loaded version of a table: key -> row."""

    __slots__ = ("exact", "networks", "rows")

    def __init__(self, rows: list[dict[str, Any]], key: str, match: str) -> None:
        self.rows = len(rows)
        self.exact: dict[Any, dict[str, Any]] = {}
        # network match: per IP version, (prefix length, network as int) -> row; longest first
        self.networks: dict[int, tuple[list[int], dict[tuple[int, int], dict[str, Any]]]] = {}
        by_version: dict[int, dict[tuple[int, int], dict[str, Any]]] = {4: {}, 6: {}}
        for number, row in enumerate(rows, 1):
            if not isinstance(row, dict):
                raise TableError(f"row {number}: expected a mapping of column: value, got {row!r}")
            if key not in row:
                raise TableError(f"row {number}: no {key!r} column")
            value = row[key]
            if value is None or value == "":
                continue        # a row without a key cannot match; keep the rest usable
            if match == "network":
                try:
                    net = ipaddress.ip_network(str(value).strip(), strict=False)
                except ValueError:
                    raise TableError(f"row {number}: {key} {value!r} is not a CIDR network") from None
                by_version[net.version][(net.prefixlen, int(net.network_address))] = row
            else:
                normalized = normalize_key(value)
                if normalized is None:
                    raise TableError(f"row {number}: {key} {value!r} is not a string or number")
                self.exact[normalized] = row
        for version, nets in by_version.items():
            if nets:
                self.networks[version] = (sorted({p for p, _ in nets}, reverse=True), nets)

    def find(self, value: Any, match: str) -> dict[str, Any] | None:
        if match != "network":
            return self.exact.get(normalize_key(value))
        if not isinstance(value, str):
            return None
        from wirebeat.processors.conditions import parse_ip
        ip = parse_ip(value)
        if ip is None or ip.version not in self.networks:
            return None
        prefixes, nets = self.networks[ip.version]
        bits, number = ip.max_prefixlen, int(ip)
        for prefix in prefixes:
            row = nets.get((prefix, number >> (bits - prefix) << (bits - prefix)))
            if row is not None:
                return row
        return None


class _Reloading:
    """A table reloaded when its source changes: the check, the side thread, the atomic swap.

    Subclasses say what the source's version is (`_version`, None while it must
    not be read yet) and how to read it (`_read`, raising TableError).
    """

    what = "lookup table"

    def __init__(self, name: str, key: str, match: str, reload_period_s: float) -> None:
        self.name = name
        self.key = key
        self.match = match
        self.reload_period_s = reload_period_s
        self.reloads = 0
        self.reload_errors = 0
        self._loading = False
        self._failed: Any = None            # version of the last bad read
        self._signature, self.index = self._load()      # TableError at startup: a config error
        self._next_check = time.monotonic() + reload_period_s

    def _version(self) -> Any:
        raise NotImplementedError

    def _read(self) -> tuple[Any, list[dict[str, Any]]]:
        """(the version read, its rows)."""
        raise NotImplementedError

    def _load(self) -> tuple[Any, _Index]:
        version, rows = self._read()
        return version, _Index(rows, self.key, self.match)

    def find(self, value: Any) -> dict[str, Any] | None:
        if time.monotonic() >= self._next_check:
            self._check()
        return self.index.find(value, self.match)

    def _check(self) -> None:
        self._next_check = time.monotonic() + self.reload_period_s
        if self._loading:
            return
        try:
            signature = self._version()
        except TableError as err:
            if self._failed != "unreadable":
                self._failed = "unreadable"
                self.reload_errors += 1
                log.error(f"{self.what} unreadable, keeping the previous version", table=self.name,
                          error=str(err))
            return
        if signature is None or signature == self._signature or signature == self._failed:
            return
        self._loading = True
        threading.Thread(target=self._reload, name="lookup-reload", daemon=True).start()

    def _reload(self) -> None:
        try:
            signature, index = self._load()
        except TableError as err:
            try:
                failed = self._version()
            except TableError:
                failed = "unreadable"
            if str(err) != "changed while being read" and failed != self._failed:
                self._failed = failed
                self.reload_errors += 1
                log.error(f"{self.what} not reloaded, keeping the previous version",
                          table=self.name, error=str(err))
        else:
            self._signature, self.index = signature, index     # the atomic swap
            self._failed = None
            self.reloads += 1
            log.info(f"{self.what} reloaded", table=self.name, rows=index.rows)
        finally:
            self._loading = False


class Table(_Reloading):
    """A lookup table file, loaded now and reloaded when it changes (mtime, size)."""

    def __init__(self, path: str, key: str, match: str, max_bytes: int,
                 reload_period_s: float) -> None:
        self.path = path
        self.max_bytes = max_bytes
        super().__init__(path, key, match, reload_period_s)

    def _stat(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except OSError as err:
            raise TableError(err.strerror or str(err)) from None
        return st.st_mtime_ns, st.st_size

    def _version(self) -> tuple[int, int] | None:
        signature = self._stat()
        if signature != self._signature and time.time() - signature[0] / 1e9 < SETTLE_S:
            return None         # possibly half-written: look again at the next check
        return signature

    def _read(self) -> tuple[tuple[int, int], list[dict[str, Any]]]:
        before = self._stat()
        if before[1] > self.max_bytes:
            raise TableError(f"{before[1]} bytes, above max_bytes {self.max_bytes}")
        try:
            with open(self.path, "rb") as fh:
                data = fh.read(self.max_bytes + 1)
        except OSError as err:
            raise TableError(err.strerror or str(err)) from None
        after = self._stat()
        if before != after or len(data) != after[1]:
            raise TableError("changed while being read")
        return after, _parse_rows(self.path, data)


class IndexTable(_Reloading):
    """A lookup table kept in an Elasticsearch index: each document's `_source` is a row.

    Read with the output's connection settings (hosts, credentials, TLS) and
    the `read` privilege only. Its version is what a search sees: the number
    of documents and the maximum and sum of their `_seq_no` (any indexed,
    updated or deleted document changes one of them once it is searchable),
    so a change is read once Elasticsearch has refreshed it, never half.
    """

    what = "lookup index"

    def __init__(self, client: Any, index: str, key: str, match: str, max_rows: int,
                 reload_period_s: float) -> None:
        self.client = client
        self.index_name = index
        self.max_rows = max_rows
        super().__init__(index, key, match, reload_period_s)

    def _version(self) -> tuple[int, float, float]:
        try:
            resp = self.client.search(index=self.index_name, size=0, track_total_hits=True,
                                      aggs={"max": {"max": {"field": "_seq_no"}},
                                            "sum": {"sum": {"field": "_seq_no"}}})
        except Exception as err:        # unreachable, refused, no such index: one line
            raise TableError(_es_error(err)) from None
        aggs = resp["aggregations"]
        return resp["hits"]["total"]["value"], aggs["max"]["value"], aggs["sum"]["value"]

    def _read(self) -> tuple[tuple[int, float, float], list[dict[str, Any]]]:
        before = self._version()
        if before[0] > self.max_rows:
            raise TableError(f"{before[0]} documents, above max_rows {self.max_rows}")
        rows: list[dict[str, Any]] = []
        after: list[Any] | None = None
        try:
            while True:     # pages in index order; search_after needs no scroll context
                page = self.client.search(index=self.index_name, size=1000, sort=["_doc"],
                                          search_after=after)["hits"]["hits"]
                rows.extend(hit["_source"] for hit in page)
                if len(page) < 1000 or len(rows) > self.max_rows:
                    break
                after = page[-1]["sort"]
        except Exception as err:
            raise TableError(_es_error(err)) from None
        if self._version() != before or len(rows) != before[0]:
            raise TableError("changed while being read")
        return before, rows


def _es_error(err: BaseException) -> str:
    """One line for an Elasticsearch failure (no credentials: the client never puts them in)."""
    status = getattr(err, "status_code", None) or getattr(getattr(err, "meta", None), "status", None)
    text = str(err).splitlines()
    message = getattr(err, "message", None) or (text[0] if text else type(err).__name__)
    return f"HTTP {status}: {message}" if status else f"{type(err).__name__}: {message}"
