"""Every fuzz seed made from pcaps/ and every input in regressions/ goes through its target without raising.

Inputs that once crashed a target are kept in tests/fuzz/regressions/ as
`<target>-<what>` files (a target is "engine", a decoder's name, or
"<decoder>.direct"); the engine runs strict here, and a direct target lets
every exception but DecodeError through, so a decoder bug fails the test
instead of being counted.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import targets as t  # noqa: E402

# tests/fuzz/run.py under a name no other test module uses.
_spec = importlib.util.spec_from_file_location("wirebeat_fuzz_run", HERE / "run.py")
fuzz_run = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fuzz_run)

REGRESSIONS = sorted((HERE / "regressions").glob("*-*"))


@pytest.mark.parametrize("target", t.targets())
def test_seeds_from_pcaps_go_through_each_target(target, tmp_path, monkeypatch):
    monkeypatch.setattr(fuzz_run, "WORK", tmp_path)
    corpus = fuzz_run.build_seeds(target)
    seeds = sorted(corpus.iterdir())
    assert seeds, f"no seeds for {target} in pcaps/"
    fuzz = t.make_target(target)
    for seed in seeds:
        fuzz(seed.read_bytes())
    assert fuzz.inputs == len(seeds)


def test_inputs_that_once_crashed_do_not_now():
    for path in REGRESSIONS:
        target = path.name.split("-", 1)[0]
        t.make_target(target)(path.read_bytes())


def test_a_direct_target_finds_what_the_engine_target_found(monkeypatch):
    """The port bug the netflow target once found, put back: the direct target raises on its input.

    A direct target skips the engine, so it must still build documents the
    engine's way (the bug failed in network.community_id, not in the decoder).
    """
    import wirebeat.decoders.netflow as netflow
    data = (HERE / "regressions" / "netflow-port-past-65535").read_bytes()
    fuzz = t.make_target("netflow.direct")
    fuzz(data)                                          # fixed: no crash
    monkeypatch.setattr(netflow, "_port", lambda value: value)
    with pytest.raises(Exception) as caught:
        fuzz(data)
    assert not isinstance(caught.value, netflow.DecodeError)
