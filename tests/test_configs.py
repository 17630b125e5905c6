"""Shipped head configs load, and the published system's file states exactly the defaults."""

from pathlib import Path

import pytest

from fva.heads.config import HeadConfig, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_fame2026_config_is_the_defaults():
    assert load_config(CONFIGS / "systems" / "fame2026.yaml") == HeadConfig()


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert 0 <= cfg.model.input_dropout < 1 and cfg.train.epochs > 0
