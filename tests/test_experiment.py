"""The experiment folder's typed object (fva.experiment) against folders written by hand in its layout."""

from __future__ import annotations

import json

import pytest

from fva.errors import FvaError
from fva.experiment import (EXPERIMENT_FORMAT, DevList, Experiment, ExperimentInfo, ModalityFeatures,
                            experiment_folds, seed_experiments)


def info(**changes) -> ExperimentInfo:
    base = dict(cache="/c", dataset="mavceleb-v4", weight_set="full", train_features="/c/f", heard=["English"],
                unheard=[], folds=2, voice=ModalityFeatures(["ecapa-embedding"], [192], {"ecapa-embedding": "e@1"}),
                face=ModalityFeatures(["vggface-keras"], [4096], {"vggface-keras": "v@2"}), encoders_unheard=None,
                fine_tuned=True)
    return ExperimentInfo.new(**{**base, **changes})


def test_written_description_reads_back_as_written_with_typed_accessors(tmp_path):
    written = info(pretrain={"dataset": "voxceleb2", "features": "/v", "joint": False})
    Experiment(tmp_path / "exp", written).write()
    data = json.loads((tmp_path / "exp" / "experiment.json").read_text())
    assert list(data)[:4] == ["format", "fva_version", "cache", "dataset"] and data["format"] == EXPERIMENT_FORMAT
    opened = Experiment.open(tmp_path / "exp")
    assert dict(opened.info) == data  # the mapping is the file
    assert opened.info.weights_ids == {"ecapa-embedding": "e@1", "vggface-keras": "v@2"}
    assert opened.info.voice.dims == [192] and opened.info.face.encoders == ["vggface-keras"]
    assert opened.info.pretrained_on == {"dataset": "voxceleb2", "features": "/v", "joint": False}
    started = info(init={"exp": "/a", "pretrain": {"dataset": "voxceleb2"}})
    assert started.pretrained_on == {"dataset": "voxceleb2"} and info().pretrained_on is None


def test_missing_fields_are_not_silently_filled(tmp_path):
    """An imported experiment says nothing of fine-tuning: None, not True; no weight set: the full one."""
    bare = ExperimentInfo({"format": EXPERIMENT_FORMAT, "heard": [], "features": {}})
    assert bare.fine_tuned is None and bare.weight_set == "full" and bare.weights_ids == {}


@pytest.mark.parametrize("text, fragment", [
    ('{"format": 2', "damaged experiment description (JSONDecodeError"),
    ('[1, 2]', "damaged experiment description (not a JSON object)"),
    ('{"format": 7}', "(format 7); this fva"),
    ('{"format": 3, "heard": "English"}', "heard is not a list"),
])
def test_damaged_or_foreign_descriptions_name_the_file(tmp_path, text, fragment):
    (tmp_path / "experiment.json").write_text(text)
    with pytest.raises(FvaError, match=r"experiment\.json") as caught:
        Experiment.open(tmp_path)
    assert fragment in str(caught.value)


def test_folds_dev_lists_and_seeds_from_the_layout(tmp_path):
    exp = tmp_path / "exp"
    for k in (0, 1, 10, 2):
        fold = exp / f"fold{k}"
        fold.mkdir(parents=True)
        for name in ("English", "English-same-gender", "German"):
            (fold / f"dev_scores_{name}.txt").write_text("a 0.5\n")
            if name != "German" or k == 1:  # German's truth only in fold 1: elsewhere not a scored list
                (fold / f"dev_{name}_labels.txt").write_text("a 1\n")
    (exp / "foldx").mkdir()
    Experiment(exp, info()).write()
    folds = Experiment.open(exp).folds()
    assert [f.index for f in folds] == [0, 1, 2, 10] == [f.index for f in experiment_folds(exp)]
    assert [d.name for d in folds[1].dev_lists()] == ["English", "English-same-gender", "German"]
    assert [d.name for d in folds[0].dev_lists(negatives="any")] == ["English"]
    same = folds[0].dev_lists(negatives="same-gender")[0]
    assert (same.language, same.negatives) == ("English", "same-gender")
    assert same == DevList(folds[0].folder, "English-same-gender")
    assert same.scores_path.name == "dev_scores_English-same-gender.txt"
    with pytest.raises(FvaError, match="no trained fold"):
        Experiment.open(exp).trained_folds()
    seeds = tmp_path / "seeds"
    for k in (2, 10):
        Experiment(seeds / f"seed{k}", info()).write()
    (seeds / "seedx").mkdir()
    assert seed_experiments(seeds) == [seeds / "seed2", seeds / "seed10"] and seed_experiments(exp) == []
