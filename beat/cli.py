"""The `wirebeat` command line (ARCHITECTURE.md, "Command-line contract").

Exit codes: 0 success; 2 bad usage, bad config or unreadable input (one line on
stderr, no traceback); 1 anything else.
"""
from __future__ import annotations

import argparse
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any, NoReturn

from beat import __version__, logs
from beat.config import Config, ConfigError, load_config
from beat.document import DocumentBuilder
from beat.engine import Engine
from beat.outputs import (ConsoleOutput, ElasticsearchOutput, FileOutput, OutputError,
                          check_connection, make_client)
from beat.pipeline import Output, Pipeline
from beat.registry import Registered, RegistryError, check_routes, discover
from beat.sources.pcapfile import CaptureError, CaptureReader, open_capture
from beat.stats import Stats
from beat.template import TemplateError, build_template, install_template

__all__ = ["main"]

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad usage or unreadable input: exit 2 with this one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wirebeat", description="Network protocol decoder indexing into Elasticsearch.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("-c", "--config", metavar="CONFIG", help="YAML config (default ./wirebeat.yml if present)")
        sub.add_argument("-E", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                         help="override a config key (value parsed as YAML)")

    run = commands.add_parser("run", help="capture, decode and publish")
    common(run)
    run.add_argument("-I", dest="files", action="append", default=[], metavar="FILE",
                     help="read a pcap or pcapng file ('-' for stdin); repeatable")
    run.add_argument("--zmq", action="append", default=[], metavar="ENDPOINT",
                     help="subscribe to an osmo-pcap ZeroMQ feed")
    run.add_argument("-i", dest="interfaces", action="append", default=[], metavar="IFACE",
                     help="capture live on an interface")
    run.add_argument("--console", action="store_true", help="write documents as JSON lines to stdout")
    run.add_argument("--strict", action="store_true", help=argparse.SUPPRESS)  # tests: decoder bugs raise

    setup = commands.add_parser("setup", help="install the index template")
    common(setup)
    test = commands.add_parser("test", help="check the configuration or the output")
    test.add_argument("what", choices=["config", "output"])
    common(test)
    commands.add_parser("decoders", help="list registered decoders")
    commands.add_parser("version", help="print the version")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = _parser().parse_args(argv)
    except UsageError as err:
        print(f"wirebeat: {err}", file=sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "version":
            print(f"wirebeat {__version__} (python {sys.version.split()[0]})")
            return EXIT_OK
        registered = discover()
        if args.command == "decoders":
            return _list_decoders(registered)
        config = load_config(args.config, args.overrides, [r.spec for r in registered])
        logs.configure(config["logging.level"])
        if args.command == "test":
            return _test(args.what, config, registered)
        if args.command == "setup":
            return _setup(config, registered)
        return _run(args, config, registered)
    except (UsageError, ConfigError, CaptureError, RegistryError, TemplateError) as err:
        print(f"wirebeat: {err}", file=sys.stderr)
        return EXIT_USAGE
    except OutputError as err:
        print(f"wirebeat: {err}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_FAILURE


def _list_decoders(registered: list[Registered]) -> int:
    for r in registered:
        spec = r.spec
        routes = []
        if spec.ip_protocols:
            routes.append("ip protocols " + ",".join(map(str, spec.ip_protocols)))
        if spec.ports:
            kinds = "/".join(k for k, f in (("udp", spec.datagram), ("tcp", spec.stream)) if f)
            routes.append(f"{kinds} ports " + ",".join(map(str, spec.ports)))
        print(f"{spec.name:<10} {'; '.join(routes) or '-':<40} {r.origin}")
    return EXIT_OK


def _enabled(config: Config, registered: list[Registered]) -> list[Registered]:
    enabled = [r for r in registered if config[f"wirebeat.protocols.{r.spec.name}.enabled"]]
    check_routes([(r, config.values.get(f"wirebeat.protocols.{r.spec.name}.ports", []))
                  for r in enabled])
    return enabled


def _index_name(config: Config) -> str:
    return config["output.elasticsearch.index"].replace("%{version}", __version__)


def _template_installer(config: Config, enabled: list[Registered]) -> Any:
    index = _index_name(config)
    body = build_template([r.spec for r in enabled], index + "*")

    def install(client: Any) -> bool:
        return install_template(client, index, body, config["setup.template.overwrite"])

    return install


def _test(what: str, config: Config, registered: list[Registered]) -> int:
    enabled = _enabled(config, registered)
    if what == "config":
        build_template([r.spec for r in enabled], "wirebeat-*")   # every mapping part readable
        print(f"Config OK ({config.path or 'built-in defaults'}; output {config.output_name()}; "
              f"decoders {', '.join(r.spec.name for r in enabled)})")
        return EXIT_OK
    if config.output_name() != "elasticsearch":
        print(f"output {config.output_name()}: nothing to test, OK")
        return EXIT_OK
    es = config.section("output.elasticsearch")
    version = check_connection(make_client(es), es["hosts"])
    print(f"elasticsearch: {', '.join(es['hosts'])} reachable, version {version}, OK")
    return EXIT_OK


def _setup(config: Config, registered: list[Registered]) -> int:
    enabled = _enabled(config, registered)
    es = config.section("output.elasticsearch")
    client = make_client(es)
    check_connection(client, es["hosts"])
    config.values["setup.template.overwrite"] = True     # setup is asked for explicitly
    installer = _template_installer(config, enabled)
    installer(client)
    print(f"Index template {_index_name(config)} installed")
    return EXIT_OK


def _make_output(config: Config, console: bool, enabled: list[Registered]) -> Output:
    name = "console" if console else config.output_name()
    if name == "console":
        return ConsoleOutput(pretty=config["output.console.pretty"] and not console)
    if name == "file":
        f = config.section("output.file")
        return FileOutput(f["path"], f["filename"], f["rotate_every_kb"], f["number_of_files"])
    es = config.section("output.elasticsearch")
    on_connect = _template_installer(config, enabled) if config["setup.template.enabled"] else None
    return ElasticsearchOutput(es, _index_name(config), on_connect=on_connect)


class _Progress:
    """A progress line on a terminal (bytes, packets/s); nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.last = 0.0
        self.shown = False

    def update(self, reader: CaptureReader, packets: int, started: float) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.5:
            return
        self.last = now
        rate = packets / max(now - started, 1e-6)
        done = reader.bytes_consumed
        if reader.size:
            pct = min(100.0, 100.0 * done / reader.size)
            width = 30
            bar = "#" * int(width * pct / 100)
            text = f"[{bar:<{width}}] {pct:5.1f}% {done / 1e6:8.1f} MB {rate:9.0f} packets/s"
        else:
            text = f"{done / 1e6:8.1f} MB {rate:9.0f} packets/s"
        sys.stderr.write(f"\r{reader.name[-30:]} {text}")
        sys.stderr.flush()
        self.shown = True

    def done(self) -> None:
        if self.shown:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _run(args: argparse.Namespace, config: Config, registered: list[Registered]) -> int:
    log = logs.get("wirebeat")
    if args.zmq or args.interfaces:
        raise UsageError("--zmq and -i are not implemented yet; read capture files with -I")
    if not args.files:
        raise UsageError("nothing to read: give at least one -I FILE")
    if config["wirebeat.flows.enabled"]:
        log.warning("flow reports are not implemented yet; wirebeat.flows.enabled is ignored")
    enabled = _enabled(config, registered)
    # Open every input first: a bad file is exit 2 before anything is processed.
    readers = [open_capture(path, stdin=sys.stdin.buffer) for path in args.files]

    stats = Stats()
    output = _make_output(config, args.console, enabled)
    pipeline = Pipeline(output, max_events=config["queue.mem.events"],
                        batch_size=config["queue.mem.flush.min_events"],
                        flush_timeout_s=config["queue.mem.flush.timeout"], block_when_full=True)
    stats.add_source(pipeline.counters)
    agent = {"type": "wirebeat", "version": __version__, "name": socket.gethostname()}
    builder = DocumentBuilder(agent, config["processors"], config["fields"],
                              config["fields_under_root"], config["tags"])
    engine = Engine(config, enabled, builder, pipeline, stats, strict=args.strict)

    stopping: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        if stopping:
            raise KeyboardInterrupt     # a second signal: leave now
        stopping.append(signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    metrics_period = config["logging.metrics.period"]
    progress = _Progress(sys.stderr.isatty())
    started = time.monotonic()
    next_metrics = started + metrics_period if metrics_period else float("inf")
    damage_lines: list[str] = []
    on_frame = engine.on_frame
    for reader in readers:
        source = reader.name
        count = 0
        for frame in reader:
            on_frame(frame.ts, frame.linktype, frame.data, source)
            count += 1
            if count & 0x3FFF == 0:
                pipeline.maybe_flush()
                progress.update(reader, engine.packets, started)
                if time.monotonic() >= next_metrics:
                    next_metrics = time.monotonic() + metrics_period
                    log.info("metrics", **stats.snapshot(), **stats.process())
                if stopping:
                    break
        engine.finish(source)
        reader.close()
        if reader.damage.any():
            d = reader.damage
            damage_lines.append(f"{source}: {d.truncated_tail} truncated record(s) at the end, "
                                f"{d.garbage_records} garbage record(s) ({d.garbage_bytes} bytes skipped), "
                                f"{d.unknown_interface} packet(s) on undescribed interfaces")
            stats.count("capture.truncated_records", d.truncated_tail)
            stats.count("capture.garbage_records", d.garbage_records)
        if stopping:
            break
    progress.done()
    for line in damage_lines:
        log.warning("damaged capture", detail=line)
    unacked = pipeline.close(timeout_s=None if not stopping else config["wirebeat.shutdown_timeout"])
    elapsed = time.monotonic() - started
    snapshot = stats.snapshot()
    process = stats.process()
    log.info("summary", elapsed_s=round(elapsed, 3), **snapshot, **process)
    pps = engine.packets / elapsed if elapsed > 0 else 0.0
    print(f"wirebeat: {len(readers)} file(s), {engine.packets} packets, "
          f"{pipeline.published} documents ({pipeline.acked} acknowledged, {pipeline.failed} failed, "
          f"{unacked} unacknowledged) in {elapsed:.2f} s ({pps:.0f} packets/s, "
          f"peak RSS {process['peak_rss_bytes'] / 2**20:.0f} MiB)"
          + ("; damaged input, see warning" if damage_lines else ""), file=sys.stderr)
    if pipeline.error is not None or unacked:
        return EXIT_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
