"""Pipeline files: every shipped file loads; unknown keys are refused naming the valid ones."""

from __future__ import annotations

from pathlib import Path

import pytest

from laionface.errors import ConfigError
from laionface.pipeline import Pipeline

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "pipelines").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_pipelines_load(path):
    p = Pipeline.from_yaml(path)
    assert p.runs("download") and len(p.hash) == 16


def test_packaged_demo_pipeline_is_the_one_in_pipelines():
    assert (ROOT / "pipelines" / "demo.yaml").read_text() == (ROOT / "laionface" / "demo" / "demo.yaml").read_text()


@pytest.mark.parametrize(
    "data, says",
    [
        ({"stages": {"detct": {}}}, "unknown stage 'detct'; valid stages: select, download, detect"),
        ({"stages": {"download": {"timeout": "soon"}}}, "not a int"),
        ({"stagez": {}}, "unknown top-level key 'stagez'"),
        ({"stages": {"select": {"min_widht": 3}}}, "valid settings: allowed_nsfw"),
    ],
)
def test_bad_pipeline_settings_are_named(data, says):
    with pytest.raises(ConfigError, match=says):
        Pipeline.from_dict(data)


def test_hash_ignores_parallelism_but_not_recipe():
    base = Pipeline.from_dict({"stages": {"download": {}, "detect": {}}})
    assert base.with_settings("download", thread_count=8, allow_private_addresses=True).hash == base.hash
    assert base.with_settings("detect", min_score=0.95).hash != base.hash
