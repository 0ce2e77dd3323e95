"""deploy/systemd: the units verify, and say what the operator documentation promises."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from running import ROOT, require

UNITS = ROOT / "deploy" / "systemd"


def _settings(path: Path) -> dict[str, list[str]]:
    """[Service] settings; a key set several times keeps every value, as systemd does."""
    values: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service":
            key, _, value = line.partition("=")
            values.setdefault(key.strip(), []).append(value.strip())
    return values


@pytest.fixture
def unit_dir(tmp_path: Path) -> Path:
    """The units as installed, with ExecStart pointing at this checkout's wirebeat."""
    wirebeat = shutil.which("wirebeat", path=str(Path(sys.executable).parent))
    assert wirebeat, "the wirebeat console script is not installed next to this python"
    text = (UNITS / "wirebeat.service").read_text()
    assert "ExecStart=/usr/local/bin/wirebeat " in text
    (tmp_path / "wirebeat.service").write_text(text.replace("/usr/local/bin/wirebeat", wirebeat))
    return tmp_path


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze (Debian package systemd)")
    return subprocess.run(["systemd-analyze", "--man=no", "verify", str(unit)],
                          capture_output=True, text=True, timeout=60)


def test_the_zeromq_unit_verifies_cleanly(unit_dir: Path):
    proc = _verify(unit_dir / "wirebeat.service")
    # Unknown keys are only warnings: any output at all is a failure here.
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_the_unit_with_the_live_drop_in_verifies_cleanly(unit_dir: Path):
    drop_ins = unit_dir / "wirebeat.service.d"
    drop_ins.mkdir()
    shutil.copy(UNITS / "wirebeat-live.conf", drop_ins / "live.conf")
    proc = _verify(unit_dir / "wirebeat.service")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")


def test_verify_would_notice_a_mistake(unit_dir: Path):
    drop_ins = unit_dir / "wirebeat.service.d"
    drop_ins.mkdir()
    (drop_ins / "live.conf").write_text("[Service]\nAmbientCapabilitiez=CAP_NET_RAW\n")
    proc = _verify(unit_dir / "wirebeat.service")
    assert "AmbientCapabilitiez" in proc.stderr


def test_the_zeromq_unit_holds_no_privilege():
    service = _settings(UNITS / "wirebeat.service")
    assert service["DynamicUser"] == ["yes"]
    assert service["CapabilityBoundingSet"] == [""] and service["AmbientCapabilities"] == [""]
    assert service["NoNewPrivileges"] == ["yes"]
    assert service["ProtectSystem"] == ["strict"] and service["PrivateTmp"] == ["yes"]
    assert service["StateDirectory"] == ["wirebeat"]
    assert not {"ReadWritePaths", "User", "Group"} & set(service)
    assert "AF_PACKET" not in " ".join(service["RestrictAddressFamilies"])


def test_the_live_drop_in_grants_cap_net_raw_only():
    live = _settings(UNITS / "wirebeat-live.conf")
    assert live["CapabilityBoundingSet"] == ["CAP_NET_RAW"]
    assert live["AmbientCapabilities"] == ["CAP_NET_RAW"]
    assert "AF_PACKET" in live["RestrictAddressFamilies"][0]
    assert set(live) == {"CapabilityBoundingSet", "AmbientCapabilities", "RestrictAddressFamilies"}


def test_the_exposure_score_stays_low(unit_dir: Path):
    require(shutil.which("systemd-analyze") is not None, "systemd-analyze (Debian package systemd)")
    proc = subprocess.run(["systemd-analyze", "security", "--offline=true", "--threshold=25",
                           "--no-pager", str(unit_dir / "wirebeat.service")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr


def test_the_example_configuration_loads():
    from wirebeat.config import load_config
    from wirebeat.registry import discover
    config = load_config(str(ROOT / "deploy" / "wirebeat.yml"), [], [r.spec for r in discover()])
    assert config["wirebeat.sources.zmq.endpoints"] == ["tcp://127.0.0.1:6666"]
    assert config["http.enabled"] is False and config["output.elasticsearch.hosts"]
