"""The one name -> object registry (fva.registry) that datasets, encoders and head systems use."""

import sys

import pytest

from fva.errors import FvaError
from fva.registry import Registry


def test_a_name_registered_twice_is_refused():
    reg = Registry("widget")
    reg.register("a", 1)
    with pytest.raises(ValueError, match="widget 'a' is registered twice"):
        reg.register("a", 2)
    assert reg.get("a") == 1


def test_an_unknown_name_is_one_line_listing_the_known_ones():
    reg = Registry("widget", choices="known widgets:")
    reg.register("b", 1)
    reg.register("a", 2)
    with pytest.raises(FvaError, match=r"^unknown widget 'c'; known widgets: a, b$"):
        reg.get("c")


def test_listing_is_sorted_or_in_registration_order_and_includes_lazy_names():
    reg = Registry("widget")
    reg.register("b", 1)
    reg.register("a", 2)
    reg.lazy("c", "nowhere.at.all")
    assert reg.names() == ["a", "b", "c"] and list(reg) == ["a", "b", "c"] and len(reg) == 3
    assert "c" in reg and "d" not in reg
    ordered = Registry("widget", sort=False)
    ordered.register("b", 1)
    ordered.register("a", 2)
    assert ordered.names() == ["b", "a"]


LAZY: Registry[str] = Registry("widget")


def test_a_lazy_name_imports_its_module_once_on_first_lookup(tmp_path, monkeypatch):
    (tmp_path / "fva_lazy_widget.py").write_text("from test_registry import LAZY\n\nLAZY.register('w', 'widget')\n")
    (tmp_path / "fva_lazy_nothing.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    LAZY.lazy("w", "fva_lazy_widget")
    LAZY.lazy("n", "fva_lazy_nothing")
    assert sys.modules.get("fva_lazy_widget") is None
    assert LAZY.get("w") == "widget" and LAZY.get("w") == "widget"  # the second lookup imports nothing
    with pytest.raises(FvaError, match="unknown widget 'n'; choose one of n, w"):  # its module registers none
        LAZY.get("n")
    monkeypatch.delitem(sys.modules, "fva_lazy_widget")
    monkeypatch.delitem(sys.modules, "fva_lazy_nothing")


def test_datasets_encoders_and_systems_are_registries():
    from fva.data.datasets import DATASETS
    from fva.extract.encoders.base import ENCODERS
    from fva.heads.systems import SYSTEMS

    assert DATASETS.names()[:3] == ["mavceleb-v1", "mavceleb-v2", "mavceleb-v3"]
    assert {"fame2026", "fop", "dual-fop", "xm-align"} <= set(SYSTEMS.names())
    assert isinstance(ENCODERS, Registry)
