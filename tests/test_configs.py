"""Shipped head configs load, and the published system's file states exactly the defaults."""

from pathlib import Path

import pytest

import fva
from fva.errors import FvaError
from fva.heads.config import HeadConfig, config_file, load_config, shipped_configs, system_configs
from fva.yamlio import read_yaml_mapping

CONFIGS = Path(fva.__file__).resolve().parent / "configs"


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


def test_shipped_configs_are_found_by_name_through_the_package():
    files = sorted(CONFIGS.rglob("*.yaml"))
    assert sorted(shipped_configs()) == sorted(p.stem for p in files) and "demo" in shipped_configs()
    assert sorted(system_configs()) == sorted(p.stem for p in (CONFIGS / "systems").glob("*.yaml"))
    assert load_config("demo") == load_config(CONFIGS / "demo.yaml")
    assert load_config("fame2026") == HeadConfig()


def test_a_config_path_wins_over_a_shipped_name_and_an_unknown_one_lists_the_shipped(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("demo").write_text("seed: 5\n")
    assert config_file("demo") == Path("demo") and load_config("demo").seed == 5
    with pytest.raises(FvaError, match=r"^nope\.yaml: config file not found \(nor a shipped config: .*demo, .*fop"):
        load_config("nope.yaml")
