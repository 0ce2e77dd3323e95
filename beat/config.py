"""Configuration: YAML in packetbeat's spirit, `-E key=value` overrides, strict keys.

Every key wirebeat knows is declared once, in `base_schema()` or by a decoder
(`DecoderSpec.options`), with its type and default. A key that is not declared,
or a value of the wrong type, is a `ConfigError` naming the key's full path and
what was expected; the CLI turns it into one line on stderr and exit 2.
Dotted keys may be written nested or flat (`output.console.enabled: true`).
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from wirebeat.decoders.api import DecoderSpec, Option
from wirebeat.secrets import SecretsError, expand, load_secrets

__all__ = ["Config", "ConfigError", "base_schema", "coerce_value", "load_config", "parse_duration"]

DEFAULT_TRANSACTION_TIMEOUT_S = 10.0    # packetbeat's DefaultTransactionExpiration


class ConfigError(Exception):
    """Bad configuration: the message is the one line the operator sees."""


def base_schema() -> dict[str, Option]:
    """Engine keys. Caps are documented here: they bound memory, not traffic."""
    return {
        "wirebeat.flows.enabled": Option("bool", True, "a report for every conversation (type: flow), as packetbeat's flows"),
        "wirebeat.flows.timeout": Option("duration", 30.0, "idle time (packet time) after which a flow ends with a final report"),
        "wirebeat.flows.period": Option("period", 10.0, "interval of intermediate reports (packet time); -1s: final reports only"),
        "wirebeat.flows.report_all": Option("bool", True, "true: every live flow is reported every period, as packetbeat does; false: only flows active in the last period (at least a period old and saw packets since the last report)"),
        "wirebeat.flows.max_flows": Option("int", 65536, "flows tracked at once, per source; when full, the idlest of the 8 oldest ends with a final report (flows.table.evicted)"),
        "wirebeat.packets.enabled": Option("bool", False, "one lean document per frame (event.dataset packet), non-IP frames included"),
        "wirebeat.tunnels.enabled": Option("bool", True, "peel VXLAN (UDP 4789), GENEVE (UDP 6081), GRE, ERSPAN II/III, MPLS and PPPoE: decoders see the inner traffic"),
        "wirebeat.limits.max_mac_pairs": Option("int", 65536, "IP address pairs per source whose latest link header (MACs, VLAN tags) is remembered for transactions' source/destination.mac and protocol stack; past it the oldest is forgotten (macs.pairs_evicted)"),
        "wirebeat.limits.max_tunneled_pairs": Option("int", 65536, "tunneled conversations (inner address pairs) whose outer addresses and tunnel id documents show; past it the oldest is forgotten (tunnels.pairs_evicted)"),
        "wirebeat.limits.max_sources": Option("int", 4096, "capture sources (files, interfaces, collector clients) with decoding state at once; the idlest is finished"),
        "wirebeat.limits.max_flows": Option("int", 65536, "UDP flows remembered for routing to decoders (flow reports have wirebeat.flows.max_flows); the oldest is evicted"),
        "wirebeat.limits.flow_idle_timeout": Option("duration", 30.0, "a UDP flow idle this long (packet time) is forgotten"),
        "wirebeat.limits.max_fragmented_datagrams": Option("int", 4096, "partial IP datagrams held for reassembly, per source"),
        "wirebeat.limits.fragment_timeout": Option("duration", 30.0, "packet time a partial datagram waits for its fragments"),
        "wirebeat.limits.tcp.max_connections": Option("int", 65536, "TCP connections tracked at once, per source; when full, the idlest of the 8 oldest is closed (tcp.connections_evicted)"),
        "wirebeat.limits.tcp.max_buffered_bytes": Option("int", 1048576, "out-of-order bytes held per connection direction (plus 64 per held segment); above it the oldest hole becomes a gap (tcp.buffer_cap_hits)"),
        "wirebeat.limits.tcp.max_buffered_bytes_total": Option("int", 67108864, "out-of-order bytes held over all connections of a source; above it the growing direction gives up its holes (tcp.buffer_total_cap_hits)"),
        "wirebeat.limits.tcp.idle_timeout": Option("duration", 300.0, "a TCP connection idle this long (packet time) is closed (tcp.connections_timed_out)"),
        "wirebeat.dedup.enabled": Option("bool", True, "drop exact duplicate packets (same IP packet apart from TTL, checksum and link layer, within the window) before flows, reassembly and decoders (dedup.dropped)"),
        "wirebeat.dedup.window": Option("duration", 0.1, "how far apart in packet time, either way, two copies of a packet may be"),
        "wirebeat.dedup.max_packets": Option("int", 8192, "recent packets remembered for duplicate detection, over all sources; the oldest is forgotten (dedup.evicted_in_window when still inside the window)"),
        "wirebeat.shutdown_timeout": Option("duration", 30.0, "on a signal, how long to wait for the output to acknowledge what is queued"),
        "wirebeat.workers": Option("int", 1, "decode in this many worker processes, frames sharded by (capture source, address pair); 1: in the main process (as --workers)"),
        "wirebeat.user": Option("str", "", "after opening every source, switch to this user and drop all capabilities (as --user)"),
        "wirebeat.limits.max_queued_frames": Option("int", 16384, "frames from ZeroMQ and live sources waiting to be decoded; when full, ZeroMQ messages are dropped and counted, live capture waits (the kernel buffer absorbs and counts)"),
        "wirebeat.sources.zmq.endpoints": Option("list[str]", [], "osmo-pcap ZeroMQ publishers to subscribe to, tcp://HOST:PORT (as --zmq)"),
        "wirebeat.sources.zmq.clients": Option("list[str]", [], "collector client names to subscribe to; empty: every client"),
        "wirebeat.sources.zmq.receive_hwm": Option("int", 50000, "messages the receiver process's SUB socket holds per publisher (ZMQ_RCVHWM); past it TCP pushes back and the collector drops, uncounted here"),
        "wirebeat.sources.zmq.receive_buffer": Option("int", 0, "kernel receive buffer of the SUB socket's TCP connection, bytes (ZMQ_RCVBUF); 0: the OS's autotuning (Linux: up to net.ipv4.tcp_rmem's maximum); a value is capped at net.core.rmem_max"),
        "wirebeat.sources.zmq.queue_messages": Option("int", 200000, "messages the receiver process holds for decoding, per publisher (wirebeat.limits.max_queued_frames more wait in the decoding process); when full, messages are dropped and counted (zmq.dropped.<client>)"),
        "wirebeat.sources.netflow": Option("netflow_listeners", [], "NetFlow/IPFIX UDP listeners (as --netflow): a list of {host: HOST:PORT, tags, fields, protocols: [v1, v5, v7, v9, ipfix], read_buffer: bytes}"),
        "wirebeat.interfaces.device": Option("list[str]", [], "interfaces to capture on live (as -i); 'any' for all"),
        "wirebeat.interfaces.snaplen": Option("int", 65535, "bytes captured per packet"),
        "wirebeat.interfaces.bpf_filter": Option("str", "", "BPF filter applied in the kernel (tcpdump syntax)"),
        "wirebeat.interfaces.promiscuous": Option("bool", True, "capture traffic not addressed to this host"),
        "wirebeat.interfaces.internal_networks": Option("list[str]", ["private"], "CIDRs and named ranges (private, loopback, unicast, public, ... as the network condition) that are internal: network.direction of transactions and flows is then inbound, outbound, internal or external (packetbeat's interfaces.internal_networks; [] gives unknown)"),
        "wirebeat.interfaces.buffer_size_mb": Option("int", 16, "kernel capture buffer per interface, MiB"),
        "http.enabled": Option("bool", False, "serve counters and process stats as JSON on 127.0.0.1"),
        "http.port": Option("int", 5066, "port of the stats endpoint (127.0.0.1 only)"),
        "monitoring.enabled": Option("bool", False, "also index wirebeat's own counters as documents (event.dataset wirebeat.stats)"),
        "monitoring.period": Option("duration", 30.0, "interval of the wirebeat.stats documents"),
        "queue.mem.events": Option("int", 32768, "documents buffered between the decoders and the output"),
        "queue.mem.flush.min_events": Option("int", 1024, "documents per batch handed to the output"),
        "queue.mem.flush.timeout": Option("duration", 1.0, "a partial batch is handed over after this long"),
        "queue.disk.path": Option("str", "", "a directory: batches are written there before the output reads them, so they survive outages longer than memory and a crash (kill -9); empty: memory queue only"),
        "queue.disk.max_size": Option("int", 1073741824, "bytes of unacknowledged batches on disk; above it batches are dropped and counted (queue.dropped), files wait"),
        "queue.disk.fsync": Option("str", "always", "always (after every batch), interval (at most once a second) or never (survives a crash of wirebeat, not of the machine)"),
        "fields": Option("map", {}, "fields added to every document (under `fields`, or at the root with fields_under_root)"),
        "fields_under_root": Option("bool", False),
        "tags": Option("list[str]", [], "tags added to every document"),
        "processors": Option("processors", [], "beats processors, in order: drop_event, drop_fields, include_fields, rename, add_fields, add_tags, lookup, each with an optional `when` condition"),
        "logging.level": Option("str", "info", "debug, info, warning or error"),
        "logging.metrics.period": Option("duration", 30.0, "interval of the counters log line; 0 turns it off"),
        "setup.template.enabled": Option("bool", True, "install the index template when absent"),
        "setup.template.overwrite": Option("bool", False, "replace an existing index template (`wirebeat setup` always does)"),
        "setup.template.name": Option("str", "", "index template name; empty: the index name"),
        "setup.template.pattern": Option("str", "", "index pattern the template applies to; empty: the index name followed by *"),
        "setup.template.priority": Option("int", 200, "template priority; two templates of one priority may not match one index"),
        "setup.kibana.host": Option("str", "http://localhost:5601", "Kibana URL that `setup --dashboards` imports the saved objects into"),
        "setup.kibana.username": Option("str", "", "Kibana user (basic authentication)"),
        "setup.kibana.password": Option("str", ""),
        "setup.kibana.api_key": Option("str", "", "id:api_key, or its encoded form; used instead of username/password"),
        "setup.kibana.space.id": Option("str", "", "Kibana space to import into; empty: the default space"),
        "setup.kibana.timeout": Option("duration", 90.0, "per request to Kibana"),
        "setup.kibana.ssl.verification_mode": Option("str", "full", "full, certificate or none (https:// hosts)"),
        "setup.kibana.ssl.certificate_authorities": Option("list[str]", [], "CA files trusted for Kibana's certificate"),
        "output.elasticsearch.enabled": Option("bool", None),
        "output.elasticsearch.hosts": Option("list[str]", ["http://localhost:9200"]),
        "output.elasticsearch.username": Option("str", ""),
        "output.elasticsearch.password": Option("str", ""),
        "output.elasticsearch.api_key": Option("str", "", "id:api_key, as Elasticsearch's encoded form or plain"),
        "output.elasticsearch.index": Option("str", "wirebeat-%{version}", "index name; %{version} is wirebeat's version"),
        "output.elasticsearch.bulk_max_size": Option("int", 1600, "documents per bulk request"),
        "output.elasticsearch.worker": Option("int", 2, "bulk requests out at a time, spread over the hosts; a batch smaller than worker x bulk_max_size is split to fill them"),
        "output.elasticsearch.compression_level": Option("int", 0, "gzip level of bulk request bodies, 1-9; 0: uncompressed"),
        "output.elasticsearch.timeout": Option("duration", 90.0, "per request"),
        "output.elasticsearch.backoff.init": Option("duration", 1.0, "first wait after a failed bulk request"),
        "output.elasticsearch.backoff.max": Option("duration", 60.0, "longest wait between retries"),
        "output.elasticsearch.health_probe.interval": Option("duration", 1.0, "while a bulk request is out or a retry waits, ask this often whether the node answers"),
        "output.elasticsearch.health_probe.timeout": Option("duration", 3.0, "a health probe unanswered this long means the node is unreachable: the bulk request is abandoned (and resent)"),
        "output.elasticsearch.dead_letter.path": Option("str", "", "append documents Elasticsearch rejects for good (mapping conflicts ...) to this NDJSON file, with the reason"),
        "output.elasticsearch.ssl.enabled": Option("bool", True, "used for https:// hosts"),
        "output.elasticsearch.ssl.verification_mode": Option("str", "full", "full, certificate or none"),
        "output.elasticsearch.ssl.certificate_authorities": Option("list[str]", []),
        "output.elasticsearch.ssl.certificate": Option("str", "", "client certificate (PEM) offered to Elasticsearch"),
        "output.elasticsearch.ssl.key": Option("str", "", "private key (PEM) of ssl.certificate"),
        "keystore.path": Option("str", "", "secrets file (NAME=value lines, readable by its owner only); ${NAME} in any config value reads it before the environment"),
        "output.console.enabled": Option("bool", None),
        "output.console.pretty": Option("bool", False),
        "output.file.enabled": Option("bool", None),
        "output.file.path": Option("str", "./wirebeat-out", "directory of the NDJSON files"),
        "output.file.filename": Option("str", "wirebeat.ndjson"),
        "output.file.rotate_every_kb": Option("int", 10240, "rotate when the file reaches this size"),
        "output.file.number_of_files": Option("int", 7, "rotated files kept, including the current one"),
    }


def protocol_schema(spec: DecoderSpec) -> dict[str, Option]:
    prefix = f"wirebeat.protocols.{spec.name}."
    schema = {prefix + "enabled": Option("bool", True)}
    if spec.datagram is not None and spec.ports or spec.stream is not None:
        schema[prefix + "ports"] = Option("list[int]", list(spec.ports))
    if spec.probe is not None:
        schema[prefix + "heuristic"] = Option("bool", False, "also decode UDP flows on no configured "
                                              "port whose first datagram the decoder recognises")
    if spec.detect is not None:
        schema[prefix + "detect"] = Option("bool", True, "also decode TCP connections on no "
                                           "configured port whose first client bytes the decoder recognises")
    schema[prefix + "transaction_timeout"] = Option("duration", DEFAULT_TRANSACTION_TIMEOUT_S)
    schema[prefix + "send_request"] = Option("bool", False)
    schema[prefix + "send_response"] = Option("bool", False)
    for key, option in spec.options.items():
        schema[prefix + key] = option
    return schema


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ns|us|ms|s|m|h)?\s*$")
_UNITS = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: Any) -> float:
    """Seconds from 10, 2.5, "10s", "500ms", "1m", "1h". Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        if value < 0:
            raise ValueError
        return float(value)
    if isinstance(value, str):
        m = _DURATION.match(value)
        if m:
            return float(m.group(1)) * _UNITS[m.group(2)]
    raise ValueError


_KIND_WORDS = {
    "bool": "true or false", "int": "a whole number", "float": "a number", "str": "a string",
    "duration": "a duration such as 10s, 500ms or 1m",
    "period": "a duration such as 10s, or -1s for never", "list[str]": "a list of strings",
    "list[int]": "a list of whole numbers", "map": "a mapping of keys to values",
    "processors": "a list of processors", "list[map]": "a list of mappings",
    "netflow_listeners": "a list of listeners, each a mapping with host: HOST:PORT",
}


def _coerce(key: str, kind: str, value: Any) -> Any:
    def bad() -> ConfigError:
        return ConfigError(f"config key '{key}': expected {_KIND_WORDS[kind]}, got {value!r}")

    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise bad()
    if kind == "int":
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise bad()
    if kind == "float":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise bad()
    if kind == "str":
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise bad()
    if kind == "duration":
        try:
            return parse_duration(value)
        except ValueError:
            raise bad() from None
    if kind == "period":       # a duration; a negative one (packetbeat's -1) turns it off
        text = value.strip() if isinstance(value, str) else value
        negative = text.startswith("-") if isinstance(text, str) else (
            isinstance(text, (int, float)) and not isinstance(text, bool) and text < 0)
        try:
            seconds = parse_duration(text[1:] if isinstance(text, str) and negative else
                                     (-text if negative else text))
        except (ValueError, TypeError):
            raise bad() from None
        if negative:
            return -1.0
        if seconds <= 0:
            raise bad()
        return seconds
    if kind in ("list[str]", "list[int]", "list[map]"):
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            value = [value]             # a single value where a list is expected, as beats allow
        if not isinstance(value, list):
            raise bad()
        item_kind = kind[5:-1]
        return [_coerce(f"{key}[{i}]", item_kind, item) for i, item in enumerate(value)]
    if kind == "map":
        if value is None and key.endswith("]"):
            raise bad()
        if value is None:
            return {}
        if isinstance(value, dict):
            return value
        raise bad()
    if kind == "processors":
        return _coerce_processors(key, value)
    if kind == "netflow_listeners":
        return _coerce_listeners(key, value)
    raise AssertionError(kind)


# Keys of one wirebeat.sources.netflow entry, with their kinds and defaults.
NETFLOW_LISTENER_KEYS: dict[str, tuple[str, Any]] = {
    "host": ("str", None), "tags": ("list[str]", []), "fields": ("map", {}),
    "protocols": ("list[str]", ["v1", "v5", "v7", "v9", "ipfix"]), "read_buffer": ("int", 0),
}


def _coerce_listeners(key: str, value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"config key '{key}': expected {_KIND_WORDS['netflow_listeners']}, got {value!r}")
    out = []
    for i, item in enumerate(value):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"config key '{where}': expected a mapping with host: HOST:PORT")
        checked = {}
        for sub, (sub_kind, default) in NETFLOW_LISTENER_KEYS.items():
            if sub in item:
                checked[sub] = _coerce(f"{where}.{sub}", sub_kind, item[sub])
            elif default is None:
                raise ConfigError(f"config key '{where}.{sub}' is required")
            else:
                checked[sub] = default
        for sub in item:
            if sub not in NETFLOW_LISTENER_KEYS:
                raise ConfigError(f"unknown config key '{where}.{sub}'")
        out.append(checked)
    return out


def _coerce_processors(key: str, value: Any) -> list[dict[str, Any]]:
    from wirebeat.processors import check_processors     # processors import this module
    return check_processors(key, value)


coerce_value = _coerce


def _flatten(node: Any, prefix: str, schema: Mapping[str, Option], out: dict[str, Any]) -> None:
    """Flatten nested YAML into dotted keys, stopping at keys the schema treats as leaves."""
    if prefix and (prefix in schema or not isinstance(node, dict)):
        out[prefix] = node
        return
    if not isinstance(node, dict):
        return
    for key, value in node.items():
        if not isinstance(key, str):
            raise ConfigError(f"config key '{prefix}{'.' if prefix else ''}{key}': keys must be strings")
        _flatten(value, f"{prefix}.{key}" if prefix else key, schema, out)


class Config:
    """Resolved configuration: every declared key with its checked value."""

    def __init__(self, values: dict[str, Any], explicit: set[str], path: str | None) -> None:
        self.values = values
        self.explicit = explicit       # keys the operator set (file or -E)
        self.path = path

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def section(self, prefix: str) -> dict[str, Any]:
        """Keys under `prefix.` with the prefix removed."""
        cut = len(prefix) + 1
        return {k[cut:]: v for k, v in self.values.items() if k.startswith(prefix + ".")}

    def output_name(self) -> str:
        """The one enabled output. An output section that is present is enabled by default."""
        enabled = []
        for name in ("elasticsearch", "console", "file"):
            flag = self.values[f"output.{name}.enabled"]
            present = any(k.startswith(f"output.{name}.") for k in self.explicit)
            if flag or (flag is None and present):
                enabled.append(name)
        if len(enabled) > 1:
            raise ConfigError("only one output can be enabled, found: " + ", ".join(enabled))
        return enabled[0] if enabled else "elasticsearch"


# Options packetbeat 8 accepts under every protocol that wirebeat does not implement yet.
# An operator bringing a packetbeat config gets told so, not "unknown key".
PACKETBEAT_PROTOCOL_OPTIONS_NOT_SUPPORTED = ("fields", "fields_under_root", "tags", "processors",
                                             "keep_null", "index")


def _refuse_packetbeat_option(key: str, schema: Mapping[str, Option]) -> None:
    """Raise the 'not supported yet' error for a packetbeat option of a protocol we decode."""
    parts = key.split(".")
    if len(parts) >= 4 and parts[:2] == ["wirebeat", "protocols"] \
            and f"wirebeat.protocols.{parts[2]}.enabled" in schema \
            and parts[3] in PACKETBEAT_PROTOCOL_OPTIONS_NOT_SUPPORTED:
        raise ConfigError(f"config key '{key}': packetbeat's protocol option '{parts[3]}' "
                          "is not supported yet by wirebeat")


def load_config(path: str | None, overrides: Iterable[str],
                specs: Iterable[DecoderSpec]) -> Config:
    """Read YAML (`path`, else ./wirebeat.yml if present), apply -E overrides, check all."""
    schema = base_schema()
    for spec in specs:
        schema.update(protocol_schema(spec))
    raw: dict[str, Any] = {}
    used_path = path
    if path is None and os.path.exists("wirebeat.yml"):
        used_path = "wirebeat.yml"
    if used_path is not None:
        import yaml     # (only here and for -E values _plain_scalar cannot read: ~14 ms to import)
        try:
            with open(used_path, encoding="utf-8") as fh:
                document = yaml.safe_load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {used_path}: no such file") from None
        except OSError as err:
            raise ConfigError(f"config file {used_path}: {err.strerror}") from None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise ConfigError(f"config file {used_path}: invalid YAML{where}: {problem}") from None
        if document is None:
            document = {}
        if not isinstance(document, dict):
            raise ConfigError(f"config file {used_path}: expected a mapping at the top level")
        _flatten(document, "", schema, raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"-E {override!r}: expected key=value")
        value = _plain_scalar(text)
        if value is _NOT_PLAIN:
            import yaml
            try:
                value = yaml.safe_load(text) if text.strip() else ""
            except yaml.YAMLError:
                value = text
        nested: dict[str, Any] = {}
        _flatten({key: value}, "", schema, nested)
        raw.update(nested)

    values = {key: option.default for key, option in schema.items()}
    raw = _resolve_references(raw, schema)
    for key, value in raw.items():
        if key not in schema:
            _refuse_packetbeat_option(key, schema)
            import difflib      # only here: a mistyped key (~1 ms of every start-up otherwise)
            hint = difflib.get_close_matches(key, schema.keys(), n=1)
            suffix = f" (did you mean '{hint[0]}'?)" if hint else ""
            raise ConfigError(f"unknown config key '{key}'{suffix}")
        values[key] = _coerce(key, schema[key].kind, value)
    config = Config(values, set(raw), used_path)
    config.output_name()        # reject two enabled outputs now, with the other errors
    return config


_NOT_PLAIN = object()
_YAML_WORDS: dict[str, Any] = {**dict.fromkeys(("yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON"), True),
                               **dict.fromkeys(("no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF"), False),
                               **dict.fromkeys(("null", "Null", "NULL"), None)}
_PLAIN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9_./-]*\Z")
_PLAIN_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)\Z")


def _plain_scalar(text: str) -> Any:
    """What yaml.safe_load makes of the commonest -E values, without importing PyYAML:
    YAML 1.1's booleans and null words, decimal integers and other plain words; _NOT_PLAIN
    for anything else (tests/beat/test_config_scalars.py compares it with PyYAML)."""
    if _PLAIN_DECIMAL.match(text):
        return int(text)
    if _PLAIN_WORD.match(text):
        return _YAML_WORDS.get(text, text)
    return _NOT_PLAIN


def _resolve_references(raw: dict[str, Any], schema: Mapping[str, Option]) -> dict[str, Any]:
    """${NAME} from the secrets file (keystore.path) or the environment (beat/secrets.py)."""
    try:
        secrets: dict[str, str] = {}
        path = expand("keystore.path", raw.get("keystore.path", ""), {})
        if path:
            secrets = load_secrets(str(path))
        resolved = {}
        for key, value in raw.items():
            new = expand(key, value, secrets)
            option = schema.get(key)
            if new != value and isinstance(new, str) and option is not None and option.kind != "str":
                import yaml
                try:        # `port: ${PORT}` is a number once resolved
                    new = yaml.safe_load(new)
                except yaml.YAMLError:
                    pass
            resolved[key] = new
        return resolved
    except SecretsError as err:
        raise ConfigError(str(err)) from None
