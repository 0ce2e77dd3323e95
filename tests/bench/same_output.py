"""Check that a speed change changed no document: same documents, same `_id`s.

    .venv/bin/python tests/bench/same_output.py [--base main] [--packets 500000] [--quick] [--workers N]

Exports the `--base` revision's beat/, decoders/ and index_templates/ (git
archive) into a temporary directory laid out as the installed `wirebeat`
package, then runs `wirebeat run -I FILE --console` with that tree and with
this worktree on every bundled capture (pcaps/**), the realistic capture
(tests/bench/gen_realistic.py) and the transaction-dense mixed capture
(tests/bench/gen_mixed.py), with per-packet documents off, on, and on with every
decoder off (flows on, then off), and on
NetFlow v5, v9 and IPFIX exports of tests/bench/netflow.py's generator (also
with fields and tags, whose text NetFlow documents build apart). The console
output is patched (in the child only) to write `[_id, document]` per line, so
the Elasticsearch `_id`s are compared too; lines are compared sorted (the
order of documents within a batch may legitimately differ).

With `--workers N` no other revision is needed: this tree with `--workers N`
is compared with this tree in one process (docs/performance.md, "Several
cores").

Prints one line per run (same / DIFFERENT, with counts) and exits 1 on any
difference. Not a test: it needs a second code tree.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(HERE))
from run import PER_PACKET_ONLY, generate, generate_realistic  # noqa: E402

# The child: console lines become [_id, document]; everything else is the real CLI.
CHILD = """
import sys, orjson, wirebeat, wirebeat.outputs as o
assert wirebeat.__file__.startswith(sys.argv[1]), wirebeat.__file__
try:        # a flow-report Block (NDJSON text) as (id, document) pairs; older trees have none
    from wirebeat.pipeline import documents
except ImportError:
    documents = lambda batch: batch
def send(self, batch, stopping):
    self.stream.write(b"".join(orjson.dumps([i, d]) + b"\\n" for i, d in documents(batch)))
    return 0
o.ConsoleOutput.send = send
from wirebeat.cli import main
sys.exit(main(sys.argv[2:]))
"""


def export(base: str, into: Path) -> Path:
    """The base revision as an importable `wirebeat` package under `into`."""
    tar = subprocess.run(["git", "-C", str(ROOT), "archive", base, "beat", "decoders", "index_templates"],
                         check=True, capture_output=True).stdout
    raw = into / "raw"
    raw.mkdir()
    subprocess.run(["tar", "-x", "-C", str(raw)], input=tar, check=True)
    pkg = into / "wirebeat"
    shutil.move(str(raw / "beat"), pkg)
    shutil.move(str(raw / "decoders"), pkg / "decoders")
    shutil.move(str(raw / "index_templates"), pkg / "index_templates")
    _build_accelerators(pkg)
    # Byte-compiled now: with PYTHONDONTWRITEBYTECODE set, every run would compile it anew.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(pkg)], check=True)
    return into


def _build_accelerators(pkg: Path) -> None:
    """Compile the base revision's own C accelerators (beat/_*.c) into its package, as
    setup.py does at install, so `--base` compares C with C (a git export has no .so:
    without this the base ran pure Python). No compiler: the base stays pure Python."""
    import sysconfig
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return
    suffix = sysconfig.get_config_var("EXT_SUFFIX")
    for source in sorted(pkg.glob("_*.c")):
        subprocess.run([cc, "-shared", "-fPIC", "-O2", "-std=c99", f"-I{sysconfig.get_paths()['include']}",
                        str(source), "-o", str(source.with_suffix(suffix))], check=True)


NETFLOW_VARIANTS = [[], ["-E", "fields={site: x}", "-E", "tags=[t]"], ["-E", "wirebeat.flows.enabled=false"]]


def netflow_exports(into: Path, records: int) -> list[Path]:
    """v5, v9 and IPFIX exports of `records` generated records each (tests/bench/netflow.py)."""
    import netflow
    out = []
    for version, make in netflow.GENERATORS.items():
        path = into / f"netflow_{version}_{records}.pcap"
        netflow.write_pcap(path, make(records))
        out.append(path)
    return out


def run(tree: Path, capture: Path, extra: list[str]) -> list[bytes]:
    env_path = str(tree)
    cmd = [sys.executable, "-c", CHILD, env_path, "run", "-I", str(capture), "--console",
           "-E", "logging.level=error", *extra]
    proc = subprocess.run(cmd, capture_output=True, cwd=ROOT, env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})
    if proc.returncode != 0:
        raise SystemExit(f"{capture}: exit {proc.returncode}: {proc.stderr.decode()[-1500:]}")
    return sorted(proc.stdout.splitlines())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="main", help="git revision to compare against")
    parser.add_argument("--packets", type=int, default=500_000, help="realistic capture size")
    parser.add_argument("--mixed-packets", type=int, default=100_000)
    parser.add_argument("--quick", action="store_true", help="bundled captures only")
    parser.add_argument("--workers", type=int, default=0, metavar="N",
                        help="instead of another revision, compare this tree with --workers N "
                        "against this tree with one worker")
    args = parser.parse_args()
    captures = sorted(ROOT.glob("pcaps/**/*.pcap*"))
    if not args.quick:
        captures += [generate_realistic(args.packets), generate(args.mixed_packets)]
    # Per-packet documents with every decoder as well, and alone (every decoder off: the
    # job `tshark -T ek` does, where the engine tracks no conversation), then with flows
    # off too (the benchmark's setting: reader batches go to C whole, Engine.on_batch).
    alone = [*PER_PACKET_ONLY, "-E", "wirebeat.flows.enabled=false"]
    variants = [[], ["-E", "wirebeat.packets.enabled=true"], PER_PACKET_ONLY, alone]
    different = 0
    with tempfile.TemporaryDirectory(prefix="same-output-") as tmp:
        base = export(args.base, Path(tmp))
        exports = netflow_exports(Path(tmp), 6000 if args.quick else 60000)
        for capture in captures + exports:
            for extra in (NETFLOW_VARIANTS if capture in exports else variants):
                if extra and capture.stat().st_size > 50_000_000:
                    continue    # per-packet documents of the big captures: too slow to be worth it
                if args.workers:
                    old = run(ROOT, capture, extra)
                    new = run(ROOT, capture, [*extra, "--workers", str(args.workers)])
                else:
                    old, new = run(base, capture, extra), run(ROOT, capture, extra)
                shown = capture.relative_to(ROOT) if capture.is_relative_to(ROOT) else capture.name
                label = ("per-packet documents, every decoder off" if extra is PER_PACKET_ONLY
                         else "per-packet documents alone, flows off" if extra is alone else ' '.join(extra))
                name = f"{shown} {label}".strip()
                if old == new:
                    digest = hashlib.sha256(b"\n".join(new)).hexdigest()[:12]
                    print(f"same       {name}: {len(new)} documents (sha256 {digest})")
                else:
                    different += 1
                    first = next((a, b) for a, b in zip(old + [b""], new + [b""]) if a != b)
                    print(f"DIFFERENT  {name}: {len(old)} -> {len(new)} documents\n"
                          f"  base: {first[0][:300]!r}\n  this: {first[1][:300]!r}")
    return 1 if different else 0


if __name__ == "__main__":
    sys.exit(main())
