"""The `wirebeat` command line (ARCHITECTURE.md, "Command-line contract").

Exit codes: 0 success; 2 bad usage, bad config or unreadable input (one line on
stderr, no traceback); 1 anything else.
"""
from __future__ import annotations

import argparse
import atexit
import importlib
import os
import socket
import sys
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from wirebeat import __version__, logs
from wirebeat.config import Config, ConfigError, load_config
from wirebeat.diskqueue import DiskQueue, DiskQueueError
from wirebeat.document import DocumentBuilder
from wirebeat.engine import Engine
from wirebeat import outputs
from wirebeat.outputs import ConsoleOutput, FileOutput, OutputError
from wirebeat.monitor import StatsServer
from wirebeat.pipeline import Output, Pipeline
from wirebeat.privileges import PrivilegeError, drop_privileges, lookup_user
from wirebeat.processors import load_processors
from wirebeat.processors.lookup import mapping_targets
from wirebeat.registry import Registered, RegistryError, check_routes, discover
from wirebeat.runloop import PipeInput, Runner
from wirebeat.sources.feed import SourceError
from wirebeat.sources.pcapfile import CaptureError, open_capture
from wirebeat.sources.zmq import ZMQSource
from wirebeat.stats import Stats
from wirebeat.template import TemplateError, build_template, install_template, template_dir

if TYPE_CHECKING:
    from wirebeat.sources.netflow import NetflowListener     # imported when listeners are configured

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
    run.add_argument("--zmq-client", dest="zmq_clients", action="append", default=[], metavar="NAME",
                     help="only this collector client (exact name; repeatable; adds to wirebeat.sources.zmq.clients)")
    run.add_argument("--netflow", action="append", default=[], metavar="HOST:PORT",
                     help="collect NetFlow/IPFIX exports on a UDP address; repeatable")
    run.add_argument("-i", dest="interfaces", action="append", default=[], metavar="IFACE",
                     help="capture live on an interface")
    run.add_argument("--user", metavar="NAME", default="",
                     help="after opening the sources, switch to this user and drop all capabilities")
    run.add_argument("--console", action="store_true", help="write documents as JSON lines to stdout")
    run.add_argument("--workers", type=int, metavar="N",
                     help="decode in N worker processes (as wirebeat.workers; default 1: in this process)")
    run.add_argument("--strict", action="store_true", help=argparse.SUPPRESS)  # tests: decoder bugs raise

    setup = commands.add_parser("setup", help="install the index template (with --dashboards: the Kibana objects)")
    common(setup)
    setup.add_argument("--dashboards", action="store_true",
                       help="import the data view and dashboards into Kibana (setup.kibana.*) instead")
    report = commands.add_parser("report", help="write a self-contained HTML report from Elasticsearch")
    common(report)
    report.add_argument("-o", dest="output", required=True, metavar="FILE.html", help="the HTML file to write")
    report.add_argument("--since", default="", metavar="WHEN",
                        help="only documents newer than this: a duration back from now (24h, 7d) or a date; "
                             "default: everything")
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
            if args.dashboards:
                return _setup_dashboards(config)
            return _setup(config, registered)
        if args.command == "report":
            return _report(args, config)
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
        if spec.probe is not None:
            routes.append("udp flows announced in-band or found by probe")
        if spec.detect is not None:
            routes.append("tcp on any port by detection")
        print(f"{spec.name:<10} {'; '.join(routes) or '-':<48} {r.origin}")
    return EXIT_OK


def _enabled(config: Config, registered: list[Registered]) -> list[Registered]:
    enabled = [r for r in registered if config[f"wirebeat.protocols.{r.spec.name}.enabled"]]
    check_routes([(r, config.values.get(f"wirebeat.protocols.{r.spec.name}.ports", []))
                  for r in enabled])
    return enabled


def _index_name(config: Config) -> str:
    return config["output.elasticsearch.index"].replace("%{version}", __version__)


def _template_name(config: Config) -> str:
    return config["setup.template.name"].replace("%{version}", __version__) or _index_name(config)


def _template_installer(config: Config, enabled: list[Registered]) -> Any:
    name = _template_name(config)
    pattern = (config["setup.template.pattern"].replace("%{version}", __version__)
               or _index_name(config) + "*")
    body = build_template([r.spec for r in enabled], pattern, config["setup.template.priority"],
                          flattened=mapping_targets(config["processors"]))

    def install(client: Any) -> bool:
        return install_template(client, name, body, config["setup.template.overwrite"])

    return install


def _test(what: str, config: Config, registered: list[Registered]) -> int:
    enabled = _enabled(config, registered)
    if what == "config":
        build_template([r.spec for r in enabled], "wirebeat-*")   # every mapping part readable
        load_processors(config["processors"], config.path,        # lookup tables readable
                        config.section("output.elasticsearch"))
        print(f"Config OK ({config.path or 'built-in defaults'}; output {config.output_name()}; "
              f"decoders {', '.join(r.spec.name for r in enabled)})")
        return EXIT_OK
    if config.output_name() != "elasticsearch":
        print(f"output {config.output_name()}: nothing to test, OK")
        return EXIT_OK
    es = config.section("output.elasticsearch")
    version = outputs.check_connection(outputs.make_client(es), es["hosts"], es)
    print(f"elasticsearch: {', '.join(outputs.redact_hosts(es['hosts']))} reachable, version {version}, OK")
    return EXIT_OK


def _setup(config: Config, registered: list[Registered]) -> int:
    enabled = _enabled(config, registered)
    es = config.section("output.elasticsearch")
    client = outputs.make_client(es)
    outputs.check_connection(client, es["hosts"], es)
    config.values["setup.template.overwrite"] = True     # setup is asked for explicitly
    installer = _template_installer(config, enabled)
    installer(client)
    print(f"Index template {_template_name(config)} installed")
    return EXIT_OK


def _setup_dashboards(config: Config) -> int:
    # Imported by the commands that use them: `run` never needs these (nor their imports' CPU).
    from wirebeat.kibana_client import KibanaError, import_dashboards
    settings = config.section("setup.kibana")
    try:
        result = import_dashboards(settings)
    except KibanaError as err:
        raise UsageError(str(err)) from None
    for line in result.lines:
        print(line)
    total = len(result.lines)
    print(f"Kibana {result.version} at {settings['host']}: {total - result.failed} of {total} saved objects "
          f"imported{', ' + str(result.failed) + ' failed' if result.failed else ''}")
    return EXIT_FAILURE if result.failed else EXIT_OK


def _report(args: argparse.Namespace, config: Config) -> int:
    from wirebeat.report import ReportError, since_filter, write_report
    try:
        since_filter(args.since)             # a bad --since is exit 2 before any connection
        es = config.section("output.elasticsearch")
        client = outputs.make_client(es)
        outputs.check_connection(client, es["hosts"])
        index = _index_name(config) + "*"
        summary = write_report(client, index, args.output, args.since)
    except ReportError as err:
        raise UsageError(str(err)) from None
    print(f"Report written to {os.path.abspath(args.output)} ({summary})")
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
    output = outputs.ElasticsearchOutput(es, _index_name(config), on_connect=on_connect)
    # A template clash is a configuration error: say so before reading anything,
    # when Elasticsearch is reachable now (otherwise on first contact).
    output.connect_now()
    return output


def _stats_server(config: Config, stats: Stats) -> StatsServer:
    """Bind the stats endpoint (its thread starts with the run). Raises UsageError."""
    try:
        return StatsServer(config["http.port"], stats)
    except OSError as err:
        raise UsageError(f"http.port {config['http.port']}: cannot listen on 127.0.0.1: "
                         f"{err.strerror}") from None


def netflow_listeners(config: Config, hosts: list[str]) -> list[NetflowListener]:
    """The configured and --netflow listeners; their ports are routed to the netflow decoder."""
    configured = config["wirebeat.sources.netflow"]
    if not configured and not hosts:
        return []
    from wirebeat.sources.netflow import Listener, NetflowListener     # (a run without listeners never loads it)
    entries = [Listener(**entry) for entry in configured]
    entries += [Listener(host) for host in hosts]
    if not config["wirebeat.protocols.netflow.enabled"]:
        raise UsageError("--netflow / wirebeat.sources.netflow need wirebeat.protocols.netflow.enabled: true")
    try:
        listeners = [NetflowListener(entry) for entry in entries]
    except SourceError as err:
        raise UsageError(str(err)) from None
    ports = list(config.values["wirebeat.protocols.netflow.ports"])
    ports += [listener.port for listener in listeners if listener.port not in ports]
    config.values["wirebeat.protocols.netflow.ports"] = ports
    return listeners


def _run(args: argparse.Namespace, config: Config, registered: list[Registered]) -> int:
    log = logs.get("wirebeat")
    endpoints = list(dict.fromkeys(config["wirebeat.sources.zmq.endpoints"] + args.zmq))
    devices = list(dict.fromkeys(config["wirebeat.interfaces.device"] + args.interfaces))
    listeners = netflow_listeners(config, args.netflow)
    if not (args.files or endpoints or devices or listeners):
        raise UsageError("nothing to read: give -I FILE, --zmq ENDPOINT, -i IFACE or --netflow HOST:PORT")
    enabled = _enabled(config, registered)
    if args.workers is not None:
        config.values["wirebeat.workers"] = args.workers
    if config["wirebeat.workers"] < 1:
        raise UsageError(f"wirebeat.workers: {config['wirebeat.workers']} is not a number of processes (1 or more)")
    # The worker pool's module (pickle, subprocess, tempfile: ~4 ms of start-up) only for a
    # pool, and imported here: before the privilege drop, as everything it forks with.
    pool = importlib.import_module("wirebeat.workers") if config["wirebeat.workers"] > 1 else None
    user = args.user or config["wirebeat.user"]
    stats = Stats()
    try:
        # Open every input first: a bad file, endpoint or interface is exit 2 before
        # anything is processed. Capture handles need CAP_NET_RAW, so they come
        # before the privilege drop; nothing else does.
        if user:
            lookup_user(user)
        readers = [open_capture(path, stdin=PipeInput()) for path in args.files]
        clients = list(dict.fromkeys(config["wirebeat.sources.zmq.clients"] + args.zmq_clients))
        feeds = [ZMQSource(e, clients, config["wirebeat.sources.zmq.receive_hwm"],
                           config["wirebeat.sources.zmq.receive_buffer"],
                           config["wirebeat.sources.zmq.queue_messages"]) for e in endpoints]
        for feed in feeds:
            feed.check()
        interfaces = []
        if devices:
            # Imported for live capture only (ctypes.util, subprocess: ~3 ms), before the drop.
            from wirebeat.sources.live import LiveSource
            interfaces = [LiveSource(device, config["wirebeat.interfaces.snaplen"],
                                     config["wirebeat.interfaces.bpf_filter"],
                                     config["wirebeat.interfaces.promiscuous"],
                                     config["wirebeat.interfaces.buffer_size_mb"]) for device in devices]
        for interface in interfaces:
            interface.open()
        for listener in listeners:
            listener.open()
        server = _stats_server(config, stats) if config["http.enabled"] else None
        if user and os.geteuid() == 0:
            # The Elasticsearch client is imported lazily, and so are importlib.resources
            # (template.template_dir) and what decoders list in `lazy_imports`; the user
            # root switches to may not be able to read the interpreter's files (a Python
            # under /root).
            import wirebeat.elasticsearch_output  # noqa: F401
            import encodings.utf_8_sig  # noqa: F401    (the codec lookup tables are read with)
            template_dir()      # importlib.resources: the Elasticsearch output's template parts
            for r in enabled:
                for module in r.spec.lazy_imports:
                    try:
                        importlib.import_module(module)
                    except ImportError as err:
                        raise UsageError(f"decoder {r.spec.name}: cannot import {module}: {err}") from None
        state = drop_privileges(user or None) if user or os.geteuid() != 0 else None
        # ZeroMQ's I/O threads start with the first socket: after the drop, so they hold nothing.
        if feeds:
            for feed in feeds:
                feed.start_receiver()       # a fork: before this process has ZeroMQ threads
            import zmq      # imported by ZMQSource already (before the drop): no file read here
            context = zmq.Context()
            for feed in feeds:
                feed.open(context)
    except (SourceError, PrivilegeError) as err:
        raise UsageError(str(err)) from None
    live = [*feeds, *interfaces, *listeners]
    if state is not None:
        log.info("running unprivileged", uid=state.uids[1], gid=state.gids[1],
                 capabilities=f"{state.caps['CapEff']:x}")
    elif live:
        log.warning("running as root with every capability: decoders should not; "
                    "pass --user NAME (or wirebeat.user) to switch after opening the sources")

    output = _make_output(config, args.console, enabled)
    # Files can wait for a slow output; ZeroMQ and live capture cannot (drops are counted).
    disk = None
    if config["queue.disk.path"]:
        try:
            disk = DiskQueue(config["queue.disk.path"], config["queue.disk.max_size"], config["queue.disk.fsync"])
        except DiskQueueError as err:
            raise UsageError(str(err)) from None
    pipeline = Pipeline(output, max_events=config["queue.mem.events"],
                        batch_size=config["queue.mem.flush.min_events"],
                        flush_timeout_s=config["queue.mem.flush.timeout"], block_when_full=not live,
                        disk=disk)
    stats.add_source(pipeline.counters)
    if hasattr(output, "counters"):         # the Elasticsearch output's
        stats.add_source(output.counters)
    agent = {"type": "wirebeat", "version": __version__, "name": socket.gethostname()}
    processors = load_processors(config["processors"], config.path, config.section("output.elasticsearch"))
    stats.add_source(processors.counters)
    builder = DocumentBuilder(agent, processors, config["fields"],
                              config["fields_under_root"], config["tags"])
    for listener in listeners:
        builder.per_source[listener.name] = (listener.listener.tags, listener.listener.fields)
    flowless = [listener.name for listener in listeners]
    if pool is not None:
        engine = pool.make_engine(config, enabled, builder, pipeline, stats, strict=args.strict,
                                  flowless=flowless, files=readers)
    else:       # (what workers.make_engine makes for one process)
        engine = Engine(config, enabled, builder, pipeline, stats, strict=args.strict)
        engine.flowless_sources.update(flowless)
    runner = Runner(config, engine, pipeline, stats, builder, readers, live, server)
    runner.install_signal_handlers()
    return runner.run()


def entry() -> NoReturn:
    """The `wirebeat` program (its console script, `python -m wirebeat.cli`): main, then leave."""
    leave(main())


def leave(code: int) -> NoReturn:
    """Exit with `code`: once stdout and stderr are flushed and the atexit hooks have run
    (logging's, plug-ins'), without the interpreter's teardown, which freed every object of
    the finished run one by one: 20 ms of a realistic 500k run with flows off, 65 ms with
    flows on, 40-55 ms of the dense mixed 100k run (docs/performance.md, "Thirteenth
    session"); the operating system takes the memory back at once. While another
    non-daemon thread still runs, or stdout cannot be flushed (a reader that left), the
    interpreter's own exit, as before."""
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    run_hooks = getattr(atexit, "_run_exitfuncs", None)
    if any(t.is_alive() for t in others) or run_hooks is None or not _flushed():
        sys.exit(code)
    run_hooks()
    if not _flushed():
        sys.exit(code)
    os._exit(code)


def _flushed() -> bool:
    try:
        for stream in (sys.stdout, sys.stderr):
            if stream is not None:
                stream.flush()
    except (OSError, ValueError):
        return False
    return True


if __name__ == "__main__":
    entry()
