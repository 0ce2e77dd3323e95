"""The README's configuration example is a configuration wirebeat accepts."""
from __future__ import annotations

import re

from wirebeat.config import load_config
from wirebeat.registry import discover
from conftest import ROOT


def test_readme_yaml_example_loads(tmp_path):
    text = (ROOT / "README.md").read_text()
    block, *others = re.findall(r"```yaml\n(.*?)```", text, re.S)
    for i, other in enumerate(others):          # every other example loads too
        extra = tmp_path / f"readme-{i}.yml"
        extra.write_text(other)
        load_config(str(extra), [], [r.spec for r in discover()])
    path = tmp_path / "readme.yml"
    path.write_text(block)
    config = load_config(str(path), [], [r.spec for r in discover()])
    assert config["wirebeat.limits.fragment_timeout"] == 30.0
    assert config["output.elasticsearch.backoff.max"] == 60.0
    assert config["processors"][0] == {"add_fields": {"target": "site", "fields": {"name": "lab-1"}}}
