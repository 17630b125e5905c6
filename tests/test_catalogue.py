"""The encoder catalogue is the one owner of each encoder's facts: its records agree with the encoder classes
they name, with the weights sources, and with every default list derived from it."""

from __future__ import annotations

import importlib
import os

import pytest

os.environ.setdefault("DEEPFACE_BACKEND_ENGINE", "pytorch")

from fva.extract import weights as W  # noqa: E402
from fva.extract.catalogue import BY_NAME, CATALOGUE, default_encoders, entry  # noqa: E402
from fva.errors import FvaError  # noqa: E402


def test_every_entry_is_its_modules_registered_class_with_its_modality_and_source():
    from fva.extract.encoders.base import ENCODERS, get_encoder_class

    assert sorted(ENCODERS.names()) == sorted(BY_NAME)
    for e in CATALOGUE:
        cls = get_encoder_class(e.name)
        assert cls.__module__ == f"fva.extract.encoders.{e.module}" and cls.name == e.name
        assert cls.modality == e.modality, e.name
        assert e.source in W.SOURCES, e.name
        assert W.get_source(e.name) is W.SOURCES[e.source]  # a variant's weights are its model's
        module = importlib.import_module(f"fva.extract.encoders.{e.module}")
        assert module is importlib.import_module(cls.__module__)


def test_defaults_derive_from_the_catalogue():
    from click.testing import CliRunner

    from fva.cli import cli
    from fva.synth.checkpoints import DEMO_ENCODERS
    from fva.heads.config import FeaturesConfig

    four = ["speaker-ecapa", "voice-age-gender-ecapa", "vggface", "vit-age-gender"]
    assert default_encoders() == four and list(DEMO_ENCODERS) == four
    assert FeaturesConfig().voice_encoders == four[:2] and FeaturesConfig().face_encoders == four[2:]
    help_text = CliRunner().invoke(cli, ["extract", "--help"]).output
    assert "speaker-ecapa,voice-age-gender-ecapa,vggface,vit-age-gender" in help_text.replace("\n", "").replace(" ", "")


def test_widths_at_full_size(tmp_path):
    """The catalogue's widths against the models at their published sizes where those can be built here."""
    from fva.synth.checkpoints import write_demo_vggface, write_organiser_ecapa
    from fva.extract.encoders.ecapa_embedding import EcapaEmbedding
    from fva.extract.encoders.vggface import VggFace, VggFaceKeras

    os.environ["FVA_MODELS"] = str(tmp_path / "models")
    organiser = write_organiser_ecapa(tmp_path / "o", channels=(512, 512, 512, 512, 1536), attention=128)
    assert EcapaEmbedding(organiser).dim == entry("ecapa-embedding").width
    vgg = write_demo_vggface(tmp_path / "d")
    assert VggFace(vgg).dim == entry("vggface").width and VggFaceKeras(vgg).dim == entry("vggface-keras").width


def test_unknown_names_are_one_line():
    with pytest.raises(FvaError, match="unknown encoder 'nope'; choose from speaker-ecapa"):
        entry("nope")
    with pytest.raises(FvaError, match="no such encoder"):
        W.get_source("nope")
