"""How the `wirebeat` program leaves (cli.entry / cli.leave): without the interpreter's
teardown, but with every byte written, the atexit hooks run and main's exit code; and
the interpreter's own exit while another non-daemon thread still works."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
CAPTURE = ROOT / "pcaps" / "dns" / "record_types.pcap"

# entry() with an atexit hook that writes last, a finaliser that only the interpreter's
# teardown would run, and (with "thread" in argv) a non-daemon thread still running.
_CHILD = textwrap.dedent("""
    import atexit, sys, threading, time
    from wirebeat.cli import entry
    class Torn:
        def __del__(self):
            sys.stderr.write("torn down\\n")
    torn = Torn()
    atexit.register(lambda: sys.stdout.write("hook ran\\n"))
    if sys.argv[1] == "thread":
        threading.Thread(target=lambda: (time.sleep(0.5), sys.stderr.write("thread done\\n"))).start()
    sys.argv = ["wirebeat"] + sys.argv[2:]
    entry()
""")


def _child(mode: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _CHILD, mode, *args], cwd=ROOT, capture_output=True,
                          timeout=120, check=False)


def test_a_run_leaves_with_everything_written_and_its_hooks_run():
    proc = _child("-", "run", "-I", str(CAPTURE), "--console", "-E", "logging.metrics.period=0")
    assert proc.returncode == 0, proc.stderr.decode()
    lines = proc.stdout.decode().splitlines()
    assert lines[-1] == "hook ran"          # after every document, and flushed
    docs = [json.loads(line) for line in lines[:-1]]
    summary = proc.stderr.decode().strip().splitlines()[-1]
    assert f"{len(docs)} documents ({len(docs)} acknowledged" in summary, summary
    assert {d["type"] for d in docs} >= {"dns", "flow"}
    assert b"torn down" not in proc.stderr          # no teardown: the objects were not freed one by one


def test_main_exit_code_is_the_programs():
    proc = _child("-", "run", "-I", str(ROOT / "no-such.pcap"), "--console")
    assert proc.returncode == 2
    assert proc.stderr.decode().splitlines()[0].startswith("wirebeat: ")
    assert proc.stdout == b"hook ran\n"


def test_a_non_daemon_thread_still_running_gets_the_interpreters_exit():
    proc = _child("thread", "version")
    assert proc.returncode == 0
    assert proc.stdout.decode().splitlines() == [proc.stdout.decode().splitlines()[0], "hook ran"]
    assert proc.stderr.decode().splitlines()[:1] == ["thread done"]
    assert b"torn down" in proc.stderr
