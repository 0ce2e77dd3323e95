"""wirebeat.distinfo against importlib.metadata, which it stands in for at start-up.

The oracle is importlib.metadata itself, on the same sys.path: the installed
environment (every group of every distribution, every version), and made-up
site directories with what installers leave behind: wheels' and editable
installs' *.dist-info, `setup.py develop`'s *.egg-info with PKG-INFO, names
spelled with dots, dashes and capitals, one distribution in two sys.path entries
(the first wins), entry_points.txt with comments, blank lines and other groups.
Then the registry: a plug-in installed that way is discovered with its
distribution's name and version, and a broken one fails with its name.
"""
from __future__ import annotations

import importlib.metadata as metadata
import sys
import zipfile
from pathlib import Path

import pytest

from wirebeat import distinfo
from wirebeat.registry import GROUP, RegistryError, discover


def _ours(group: str) -> list[tuple[str, str, str]]:
    return [(ep.name, ep.value, ep.dist_label()) for ep in distinfo.entry_points(group)]


def _theirs(group: str) -> list[tuple[str, str, str]]:
    return [(ep.name, ep.value, f"{ep.dist.name} {ep.dist.version}")
            for ep in metadata.entry_points(group=group)]


def _groups() -> set[str]:
    return {ep.group for dist in metadata.distributions() for ep in dist.entry_points}


def test_the_installed_environment_reads_the_same() -> None:
    assert distinfo.usable()
    groups = _groups()
    assert GROUP in groups and "console_scripts" in groups
    for group in groups:
        assert _ours(group) == _theirs(group), group
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        assert distinfo.version(name) == metadata.version(name), name
    with pytest.raises(distinfo.NotFound):
        distinfo.version("no-such-distribution-here")


def _dist(site: Path, directory: str, name: str, version: str, entry_points: str | None,
          metadata_file: str = "METADATA") -> None:
    info = site / directory
    info.mkdir(parents=True)
    (info / metadata_file).write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
                                      f"Summary: a test\n\nName: not-this-one\n")
    if entry_points is not None:
        (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture()
def sites(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    first, second = tmp_path / "first", tmp_path / "second"
    _dist(first, "Wb_Test.Plugin-1.2.dist-info", "wb-test.plugin", "1.2",
          "# comment\n\n[console_scripts]\nwbtest = wbtest:main\n\n[wirebeat.decoders]\n"
          "alpha = wbtest_a:DECODER\n  beta=wbtest_b.sub:SPEC.inner [extra]\n")
    _dist(first, "wbtest_egg.egg-info", "wbtest-egg", "0.3", "[wirebeat.decoders]\ngamma = wbtest_c:DECODER\n",
          metadata_file="PKG-INFO")
    _dist(first, "no_entry_points-1.0.dist-info", "no-entry-points", "1.0", None)
    # The same distribution again further down sys.path: importlib.metadata takes the first.
    _dist(second, "wb_test_plugin-9.9.dist-info", "wb-test-plugin", "9.9",
          "[wirebeat.decoders]\nshadowed = wbtest_z:DECODER\n")
    _dist(second, "other-2.0.dist-info", "other", "2.0", "[wirebeat.decoders]\ndelta = wbtest_d:DECODER\n")
    monkeypatch.syspath_prepend(str(second))
    monkeypatch.syspath_prepend(str(first))
    return first, second


def test_made_up_installs_read_the_same(sites: tuple[Path, Path]) -> None:
    for group in ("wirebeat.decoders", "console_scripts", "nothing.here"):
        assert _ours(group) == _theirs(group), group
    ours = _ours(GROUP)
    assert ("beta", "wbtest_b.sub:SPEC.inner [extra]", "wb-test.plugin 1.2") in ours
    assert ("gamma", "wbtest_c:DECODER", "wbtest-egg 0.3") in ours
    assert not any(name == "shadowed" for name, _value, _label in ours)
    for name in ("wb-test.plugin", "WB_TEST_PLUGIN", "wbtest-egg", "other", "no-entry-points"):
        assert distinfo.version(name) == metadata.version(name)


def test_a_zip_on_sys_path_is_left_to_importlib_metadata(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "plugins.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("zipped-1.0.dist-info/METADATA", "Name: zipped\nVersion: 1.0\n")
    monkeypatch.syspath_prepend(str(archive))
    assert not distinfo.usable()
    assert metadata.version("zipped") == "1.0"      # what the fallback then reads


_PLUGIN = """
from wirebeat.decoders.api import DecoderSpec
class Datagrams:
    def __init__(self, options):
        pass
    def on_datagram(self, dgram):
        return []
    def expire(self, now):
        return []
DECODER = DecoderSpec(name="{name}", document=lambda txn: {{}}, datagram=Datagrams, ports=({port},))
"""


def test_the_registry_finds_a_plugin_and_names_a_broken_one(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "wbtest_reg.py").write_text(_PLUGIN.format(name="regtest", port=40123))
    _dist(tmp_path, "wbtest_reg-0.7.dist-info", "wbtest-reg", "0.7",
          "[wirebeat.decoders]\nregtest = wbtest_reg:DECODER\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    origins = {r.spec.name: r.origin for r in discover()}
    assert origins["regtest"] == "wbtest_reg:DECODER (wbtest-reg 0.7)"
    assert origins["dns"].startswith("wirebeat.decoders.dns:DECODER (wirebeat ")
    broken = tmp_path / "broken"
    _dist(broken, "wbtest_broken-0.1.dist-info", "wbtest-broken", "0.1",
          "[wirebeat.decoders]\nbroken = wbtest_not_a_module:DECODER\n")
    monkeypatch.syspath_prepend(str(broken))
    with pytest.raises(RegistryError, match=r"decoder plug-in 'broken' \(wbtest_not_a_module:DECODER "
                                            r"\(wbtest-broken 0.1\)\) failed to load: ModuleNotFoundError"):
        discover()
    sys.modules.pop("wbtest_reg", None)
