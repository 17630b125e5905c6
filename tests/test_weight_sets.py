"""Weight sets and provenance: one cache root holds an encoder's features of several weight sets side by side,
each set's training cache keeps every language, and every later use of features (scoring, pretraining,
--init, plans, verify) refuses features of other weights with one line naming both identities.

Synthetic caches (:func:`fva.synth.testing.synthetic_heads_cache`: weights ids ``<encoder>@<n>abc``) stand in for
extracted ones; one test runs the real extraction on a small demo dataset.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from conftest import assert_user_error
from fva.data.trials import Trial, write_labels, write_trials
from fva.heads.experiment import load_checkpoint
from fva.heads.plan import plan_conditions
from fva.layout import manifest_records
from fva.synth.testing import CONFIG, DATASET, LANGUAGES, run_cli as run, set_weights_id, tiny_head_config

SPEAKER = "speaker-ecapa"  # the first voice encoder of the synthetic caches (fva.synth.testing.VOICE_ENCODERS)


def copy_set(root: Path, dataset: str, subset: str, src: str, dst: str, tag: str | None = None) -> Path:
    """``<subset>-<src>`` copied to ``<subset>-<dst>``; with ``tag``, its speaker features made "of other weights"
    (``speaker-ecapa@<tag>``)."""
    folder = root / dataset / f"{subset}-{dst}"
    shutil.copytree(root / dataset / f"{subset}-{src}", folder)
    if tag:
        set_weights_id(folder / SPEAKER, f"{SPEAKER}@{tag}")
    return folder


def fast_config(tmp_path: Path, name: str = "c.yaml", **train) -> Path:
    cfg = {**CONFIG, "train": {**CONFIG["train"], "epochs": 2, "patience": 2, **train}}
    path = tmp_path / name
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture(scope="module")
def sets(synth, tmp_path_factory):
    """The synthetic cache root with a second weight set, english-unheard, whose speaker features come from
    other weights (``speaker-ecapa@noen``): train and test, beside the full set's."""
    base = tmp_path_factory.mktemp("sets")
    root = base / "cache"
    shutil.copytree(synth.root, root)
    for subset in ("train", "test"):
        copy_set(root, DATASET, subset, "full", "english-unheard", tag="noen")
    return root


def train(root: Path, exp: Path, config: Path, *extra):
    return run("train-head", "--fold", "0", "--config", config, "--cache", root, "--exp", exp, *extra)


def info(exp: Path) -> dict:
    return json.loads((exp / "experiment.json").read_text())


def test_an_unheard_split_trains_on_its_own_weight_set_and_scores_with_its_test_features(sets, synth, tmp_path):
    exp = tmp_path / "noen"
    r = train(sets, exp, fast_config(tmp_path), "--split", "english-unheard")
    assert r.exit_code == 0, r.output
    assert "note:" not in r.output
    described = info(exp)
    assert described["weight_set"] == "english-unheard" and described["encoders_unheard"] == "English"
    assert described["features"]["voice"]["weights_ids"][SPEAKER] == f"{SPEAKER}@noen"
    assert described["train_features"].endswith("train-english-unheard")
    # the set's training cache holds English: heads leave it out of training and report its dev EER
    metrics = json.loads((exp / "fold0" / "metrics.json").read_text())
    assert set(metrics["heard"]) == {"German"} and set(metrics["unheard"]) == {"English"}
    # scoring reads the set's own test features: the full set's test cache made unreadable changes nothing
    scores = tmp_path / "s.txt"
    hidden = sets / DATASET / "test-full"
    hidden.rename(hidden.with_name("test-full.hidden"))
    try:
        r = run("score", "--exp", exp, "--trials", synth.test_list, "--out", scores)
    finally:
        hidden.with_name("test-full.hidden").rename(hidden)
    assert r.exit_code == 0, r.output
    assert len(scores.read_text().splitlines()) == len(synth.trials)


def test_an_unheard_split_without_its_weight_set_says_so_and_records_it(synth, tmp_path):
    exp = tmp_path / "noen"
    r = train(synth.root, exp, fast_config(tmp_path), "--split", "english-unheard")
    assert r.exit_code == 0, r.output
    assert ("note: no mavceleb-v3 features of encoders trained without English (weight set english-unheard); "
            "training english-unheard on weight set full, whose encoders heard English") in r.output
    described = info(exp)
    assert described["weight_set"] == "full" and described["encoders_unheard"] is None
    plan = {"trials": "unused", "files": {"English_unheard": str(exp), "German_heard": str(exp)}}
    assert plan_conditions(plan) == [
        "English unheard scored with encoders that heard English (weight set full); heads not pretrained on VoxCeleb2",
        "German heard scored with heads not pretrained on VoxCeleb2"]


def test_a_named_weight_set_that_was_not_extracted_is_one_line(synth, tmp_path):
    r = train(synth.root, tmp_path / "x", fast_config(tmp_path), "--weight-set", "no-german")
    assert_user_error(r, "train-no-german", "no train features of mavceleb-v3 from weight set no-german",
                      "found: train-full", "fva extract --weight-set no-german")
    assert not (tmp_path / "x").exists()


def trained_copy(synth, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the synthetic cache root (its caches may be relabelled) and a full-split experiment on it."""
    root = tmp_path / "cache"
    shutil.copytree(synth.root, root)
    exp = tmp_path / "exp"
    assert train(root, exp, fast_config(tmp_path)).exit_code == 0
    return root, exp


def test_score_refuses_test_features_of_other_weights(synth, tmp_path):
    root, exp = trained_copy(synth, tmp_path)
    set_weights_id(root / DATASET / "test-full" / SPEAKER, f"{SPEAKER}@public")
    r = run("score", "--exp", exp, "--trials", synth.test_list, "--out", tmp_path / "s.txt")
    assert_user_error(r, f"{SPEAKER} features come from weights {SPEAKER}@public", f"{exp} used weights "
                      f"{SPEAKER}@0abc", "score with test features of the same weights (weight set full)")
    assert not (tmp_path / "s.txt").exists()


def test_init_refuses_an_experiment_of_other_weights(sets, tmp_path):
    full = tmp_path / "full"
    assert train(sets, full, fast_config(tmp_path)).exit_code == 0
    exp = tmp_path / "noen"
    r = train(sets, exp, fast_config(tmp_path), "--split", "english-unheard", "--init", full)
    assert_user_error(r, f"{SPEAKER} features come from weights {SPEAKER}@noen", f"--init {full} used weights "
                      f"{SPEAKER}@0abc", "start from an experiment of the same weight set")
    assert not exp.exists()
    # the same set is accepted, and recorded
    ok = tmp_path / "noen2"
    first = tmp_path / "noen1"
    assert train(sets, first, fast_config(tmp_path), "--split", "english-unheard").exit_code == 0
    r = train(sets, ok, fast_config(tmp_path), "--split", "english-unheard", "--init", first)
    assert r.exit_code == 0, r.output
    assert info(ok)["init"]["exp"] == str(first.resolve())


def test_plan_entry_with_its_own_cache_of_other_weights_is_refused(sets, synth, tmp_path):
    exp = tmp_path / "noen"
    assert train(sets, exp, fast_config(tmp_path), "--split", "english-unheard").exit_code == 0
    other = tmp_path / "other"
    shutil.copytree(sets, other)
    set_weights_id(other / DATASET / "test-english-unheard" / SPEAKER, f"{SPEAKER}@public")
    trials = tmp_path / "trials"
    trials.mkdir()
    for lang in LANGUAGES:
        mine = [t for t in synth.trials if t.key.startswith(lang[:2].lower())]
        write_trials(trials / f"{lang}_test.txt", [Trial(t.key, t.voice, t.face) for t in mine])
        write_labels(trials / f"{lang}_test_labels.txt", {t.key: i % 2 for i, t in enumerate(mine)})
    files = {f"{lang}_{cond}": str(exp) for lang in LANGUAGES for cond in ("heard", "unheard")}
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"trials": str(trials), "files": files}))
    r = run("submission", "make", "--plan", plan, "--out", tmp_path / "a.zip")
    assert r.exit_code == 0, r.output
    assert "not as published: German unheard scored with heads trained on German" in r.output
    # the set's encoders did not hear English: only the missing pretraining keeps that file from the condition
    assert "not as published: English unheard scored with heads not pretrained on VoxCeleb2" in r.output
    assert "encoders that heard English" not in r.output
    files["German_unheard"] = {"exp": str(exp), "cache": str(other)}
    plan.write_text(yaml.safe_dump({"trials": str(trials), "files": files}))
    r = run("submission", "make", "--plan", plan, "--out", tmp_path / "b.zip")
    assert_user_error(r, "test-english-unheard", f"{SPEAKER} features come from weights {SPEAKER}@public",
                      f"used weights {SPEAKER}@noen")
    assert not (tmp_path / "b.zip").exists()


def test_verify_refuses_training_caches_extracted_again_with_other_weights(synth, tmp_path):
    root, exp = trained_copy(synth, tmp_path)
    set_weights_id(root / DATASET / "train-full" / SPEAKER, f"{SPEAKER}@public")
    r = run("verify", "--exp", exp, "face.jpg", "voice.wav")
    assert_user_error(r, f"{SPEAKER} features come from weights {SPEAKER}@public", f"{exp} used weights",
                      f"pass --weights {SPEAKER}=")


# --------------------------------------------------------------------------- pretraining on VoxCeleb2


def vox_root(vox: Path, tmp_path: Path) -> Path:
    root = tmp_path / "cache"
    shutil.copytree(vox, root)
    return root


@pytest.fixture(scope="module")
def vox(synth, tmp_path_factory):
    """The synthetic cache root plus a VoxCeleb2 cache of the full weight set (voices and face tracks of
    other identities, English or of unknown language)."""
    import numpy as np

    from fva.data.records import MediaRecord
    from fva.synth.testing import LATENT, TRACK_FRAMES, write_split

    root = tmp_path_factory.mktemp("vox") / "cache"
    shutil.copytree(synth.root, root)
    rng = np.random.default_rng(7)
    voice_map, face_map = synth.maps
    records, rows = [], {}
    for n in range(4):
        identity, z = f"id{n:05d}", rng.normal(size=LATENT)
        for v, language in enumerate(("English", None)):
            key = f"dev/aac/{identity}/vid{v}/00001"
            records.append(MediaRecord(key=key, identity=identity, language=language, modality="voice",
                                       path=key + ".m4a", video=f"vid{v}"))
            rows[key] = (np.array([-1]), z @ voice_map + rng.normal(0, 0.6, size=(1, voice_map.shape[1])))
            key = f"dev/mp4/{identity}/vid{v}/00001"
            records.append(MediaRecord(key=key, identity=identity, language=language, modality="face",
                                       path=key + ".mp4", video=f"vid{v}"))
            rows[key] = (np.array(TRACK_FRAMES), z @ face_map + rng.normal(0, 0.6, size=(3, face_map.shape[1])))
    write_split(root, "dev", records, rows, rng, dataset="voxceleb2")
    return root


def pretrain_config(tmp_path: Path) -> Path:
    cfg = {**CONFIG, "data": {**CONFIG["data"], "pretrain_dataset": "voxceleb2"},
           "train": {**CONFIG["train"], "epochs": 2, "patience": 2, "pretrain_epochs": 2}}
    path = tmp_path / "vox.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_pretraining_refuses_voxceleb2_features_of_other_weights(vox, tmp_path):
    root = vox_root(vox, tmp_path)
    set_weights_id(root / "voxceleb2" / "dev-full" / SPEAKER, f"{SPEAKER}@public")
    r = train(root, tmp_path / "exp", pretrain_config(tmp_path))
    assert_user_error(r, "voxceleb2/dev-full", f"{SPEAKER} features come from weights {SPEAKER}@public",
                      f"used weights {SPEAKER}@0abc", "extract voxceleb2 with the weights of weight set full")
    assert not (tmp_path / "exp").exists()


def test_zero_epochs_keeps_the_pretrained_heads_and_reports_their_dev_eer(vox, tmp_path):
    exp = tmp_path / "exp"
    r = run("train-head", "--fold", "all", "--config", pretrain_config(tmp_path), "--cache", vox, "--exp", exp,
            "--epochs", "0")
    assert r.exit_code == 0, r.output
    pretrained, _ = load_checkpoint(exp / "pretrain" / "checkpoint.pt")
    described = info(exp)
    assert described["fine_tuned"] is False and described["pretrain"]["dataset"] == "voxceleb2"
    for fold in range(described["folds"]):
        model, payload = load_checkpoint(exp / f"fold{fold}" / "checkpoint.pt")
        assert payload["epoch"] == -1 and "threshold" in payload
        for name, tensor in pretrained.projections_state().items():
            assert torch.equal(model.projections_state()[name], tensor), name
        metrics = json.loads((exp / f"fold{fold}" / "metrics.json").read_text())
        assert set(metrics["heard"]) == set(LANGUAGES)
    # fine-tuning from it (--init) is a pretrained experiment too
    tuned = tmp_path / "tuned"
    r = run("train-head", "--fold", "0", "--config", fast_config(tmp_path), "--cache", vox, "--exp", tuned,
            "--init", exp)
    assert r.exit_code == 0, r.output
    assert info(tuned)["init"]["pretrain"]["dataset"] == "voxceleb2"
    assert plan_conditions({"files": {"English_heard": str(tuned)}}) == []


def test_zero_epochs_without_a_starting_point_is_one_line(synth, tmp_path):
    r = run("train-head", "--fold", "0", "--config", synth.config, "--cache", synth.root, "--exp", tmp_path / "x",
            "--epochs", "0")
    assert_user_error(r, "train.epochs 0 keeps each fold's starting point")


# ------------------------------------------------------------------- the real extraction of a weight set


def test_extract_of_an_unheard_split_keeps_every_language_beside_the_full_set(tmp_path):
    """`fva extract --split english-unheard` on MAV-Celeb writes the set's own folders (train and test) and keeps
    English in the training cache; with another speaker model than the full set's, both sit side by side."""
    from fva.synth.demo import generate_demo
    from fva.synth.checkpoints import write_demo_speaker_ecapa
    from fva.extract.encoders.vit_age_gender import demo_config, save_vit_age_gender

    data = tmp_path / "data"
    generate_demo(data, seed=5, train_identities=4, test_identities=2)
    vit = save_vit_age_gender(tmp_path / "vit", demo_config(), seed=1)
    speakers = {"full": write_demo_speaker_ecapa(tmp_path / "public", seed=0),
                "english-unheard": write_demo_speaker_ecapa(tmp_path / "noen", seed=1)}
    cache = tmp_path / "cache"
    for split, speaker in speakers.items():
        for subset in ("train", "test"):
            r = run("extract", "--dataset", "mavceleb-v3", "--root", data, "--subset", subset, "--split", split,
                    "--cache", cache, "--encoders", "speaker-ecapa,vit-age-gender", "--workers", "0",
                    "--no-progress", "--weights", f"speaker-ecapa={speaker}", "--weights", f"vit-age-gender={vit}")
            assert r.exit_code == 0, r.output
    languages = {r.language for r in manifest_records(cache / "mavceleb-v3" / "train-english-unheard").values()}
    assert languages == {"English", "German"}
    ids = {}
    for split in speakers:
        with h5(cache / "mavceleb-v3" / f"train-{split}" / "speaker-ecapa") as attrs:
            assert attrs["weight_set"] == split
            ids[split] = attrs["weights_id"]
    assert ids["full"] != ids["english-unheard"]
    config = tiny_head_config(tmp_path / "c.yaml", epochs=1)
    exp = tmp_path / "exp"
    r = run("train-head", "--fold", "0", "--config", config, "--cache", cache, "--exp", exp,
            "--split", "english-unheard")
    assert r.exit_code == 0, r.output
    assert info(exp)["features"]["voice"]["weights_ids"]["speaker-ecapa"] == ids["english-unheard"]
    assert "unheard English" in r.output


class h5:
    """The decoded attributes of an encoder cache's first shard, as a context manager."""

    def __init__(self, folder: Path) -> None:
        from fva.extract.cache import open_cache

        self.table = open_cache(folder)

    def __enter__(self) -> dict:
        return self.table.attrs

    def __exit__(self, *exc) -> None:
        self.table.close()


def test_a_weight_set_holding_the_public_speaker_model_has_not_left_its_language_unheard(sets, tmp_path):
    """Named after a split but extracted with the public speaker model (known by its weights, whatever the
    folder): the experiment records that its encoders heard the language, and the plan says so."""
    from fva.extract.weights import SPEAKER_PUBLIC_DIGEST

    root = tmp_path / "cache"
    shutil.copytree(sets, root)
    set_weights_id(root / DATASET / "train-english-unheard" / SPEAKER, f"my-copy@{SPEAKER_PUBLIC_DIGEST}")
    exp = tmp_path / "noen"
    r = train(root, exp, fast_config(tmp_path), "--split", "english-unheard")
    assert r.exit_code == 0, r.output
    assert info(exp)["weight_set"] == "english-unheard" and info(exp)["encoders_unheard"] is None
    assert plan_conditions({"files": {"English_unheard": str(exp)}})[0].startswith(
        "English unheard scored with encoders that heard English (weight set english-unheard)")


def test_the_public_speaker_digest_is_the_published_models(tmp_path):
    """The constant fva recognises the public speaker model by is the identity of the real model's weights."""
    from fva.extract.weights import SPEAKER_PUBLIC_DIGEST, files_digest

    public = Path(__file__).resolve().parents[2] / "shared" / "models" / "spkrec-ecapa-voxceleb"
    if not public.is_dir():
        pytest.skip("the public speaker model is not beside the checkout")
    assert files_digest([public / "embedding_model.ckpt"]) == SPEAKER_PUBLIC_DIGEST


def test_experiments_of_other_datasets_have_no_published_condition_to_meet(synth, tmp_path):
    """The published system is the FAME 2026 winner's on MAV-Celeb V3: a FLAG 2027 (v4) experiment gets no line."""
    exp = tmp_path / "noen"
    assert train(synth.root, exp, fast_config(tmp_path), "--split", "english-unheard").exit_code == 0
    assert plan_conditions({"files": {"English_unheard": str(exp)}})  # V3: lines
    described = info(exp)
    (exp / "experiment.json").write_text(json.dumps({**described, "dataset": "mavceleb-v4"}))
    assert plan_conditions({"files": {"no_gender/English_heard": str(exp)}}) == []
