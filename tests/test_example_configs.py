"""Every shipped example config is a valid config: its keys exist and its values pass the checks (a renamed or
retyped key would stop a user at the first line of the example)."""

from pathlib import Path

import pytest

from strop.config import load_config

EXAMPLES = sorted((Path(__file__).resolve().parent.parent / "examples").glob("*.yaml"))


def test_the_examples_are_found():
    assert len(EXAMPLES) >= 2


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_an_example_config_loads(path):
    cfg = load_config(str(path), [])
    assert cfg.task.name and cfg.model.name
