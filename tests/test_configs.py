"""Shipped head configs load, and the published system's file states exactly the defaults."""

from pathlib import Path

import pytest

from fva.errors import FvaError
from fva.heads.config import HeadConfig, load_config
from fva.yamlio import read_yaml_mapping

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_fame2026_config_is_the_defaults():
    assert load_config(CONFIGS / "systems" / "fame2026.yaml") == HeadConfig()


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert 0 <= cfg.model.input_dropout < 1 and cfg.train.epochs > 0


def test_a_yaml_mapping_is_read_with_one_line_per_problem(tmp_path):
    path = tmp_path / "c.yaml"
    with pytest.raises(FvaError, match=r"c\.yaml: config file not found$"):
        read_yaml_mapping(path, "config file")
    path.write_text("")
    assert read_yaml_mapping(path, "config file") == {}
    path.write_text("train: {epochs: 3\n")
    with pytest.raises(FvaError, match=r"c\.yaml: not valid YAML \(.*\)$"):
        read_yaml_mapping(path, "config file")
    path.write_text("just text\n")
    with pytest.raises(FvaError, match=r"c\.yaml: a config file must be a mapping \(key: value lines\), got str"):
        read_yaml_mapping(path, "config file")
    path.write_bytes(b"\xff\xfe: 1\n")
    with pytest.raises(FvaError, match=r"c\.yaml: cannot read the config file"):
        read_yaml_mapping(path, "config file")
    path.write_text("train: {epochs: 3}\n")
    assert read_yaml_mapping(str(path), "config file") == {"train": {"epochs": 3}}
