"""FLAG 2027 (MAV-Celeb v4): the dataset adapter, gender-controlled dev trials, the two-track submission layout
and its scoring, checked against a scorer written from the organisers' description."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import assert_user_error, touch
from fva.cli import cli
from fva.data.datasets import build_manifest
from fva.synth.demo_v4 import generate_demo_v4
from fva.data.folds import dev_trials
from fva.data.mavceleb_v4 import track_trials
from fva.data.records import MediaRecord
from fva.data.trials import read_trials
from fva.errors import FvaError
from fva.evaluate.submission import (detect_layout, evaluate_submission, submission_files, validate_submission,
                                     write_valid_submission)
from fva.heads.plan import write_default_plan

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- gender-controlled dev trials


def _records(rng: np.random.Generator, n_ids: int) -> tuple[list[MediaRecord], dict[str, str]]:
    """Random identities with random genders, a few voices and faces each (some identities have no faces)."""
    records, gender = [], {}
    for i in range(n_ids):
        ident = f"id{i:03d}"
        gender[ident] = str(rng.choice(["male", "female"]))
        for modality, n in (("voice", int(rng.integers(1, 4))), ("face", int(rng.integers(0, 3)))):
            for j in range(n):
                path = f"{modality}s/English/{ident}/{j:05d}.{'wav' if modality == 'voice' else 'jpg'}"
                records.append(MediaRecord(key=path.rsplit(".", 1)[0], identity=ident, language="English",
                                           modality=modality, path=path, gender=gender[ident]))
    return records, gender


def test_same_gender_dev_trials_never_pair_different_genders():
    cross_any = 0
    for seed in range(300):
        rng = np.random.default_rng(seed)
        records, gender = _records(rng, int(rng.integers(2, 12)))
        owner = {r.path: r.identity for r in records}
        held = sorted(gender)
        trials, labels = dev_trials(records, held, "English", seed=[seed], negatives="same-gender",
                                    pairs_per_voice=int(rng.integers(1, 4)), max_trials=int(rng.integers(2, 60)))
        assert sum(labels.values()) * 2 == len(trials)  # balanced
        for t in trials:
            v, f = owner[t.voice], owner[t.face]
            assert gender[v] == gender[f], (seed, t)
            assert (v == f) == bool(labels[t.key])
        anyneg, anylab = dev_trials(records, held, "English", seed=[seed])
        cross_any += sum(gender[owner[t.voice]] != gender[owner[t.face]] for t in anyneg)
    assert cross_any > 100  # the default still pairs across genders: the check above is not vacuous


def test_same_gender_needs_a_gender_for_every_identity():
    records, _ = _records(np.random.default_rng(0), 6)
    records = [r if r.identity != "id002" else MediaRecord(**{**r.__dict__, "gender": None}) for r in records]
    with pytest.raises(FvaError, match="id002 has no gender"):
        dev_trials(records, sorted({r.identity for r in records}), "English", seed=0, negatives="same-gender")
    with pytest.raises(FvaError, match="unknown negatives"):
        dev_trials(records, ["id000"], "English", seed=0, negatives="female")


# ---------------------------------------------------------------- the demo and the adapter


@pytest.fixture(scope="module")
def v4(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("v4") / "demo-v4"
    generate_demo_v4(root, seed=3, train_identities=8, test_identities=4, videos=1, samples=2,
                     trials_per_identity=4)
    return root


def test_demo_v4_layout_and_manifests(v4):
    assert (v4 / "train_set" / "train_English.txt").is_file()
    meta = dict(line.split(",") for line in (v4 / "meta_file_train_set.csv").read_text().split())
    assert set(meta.values()) <= {"m", "f"} and len(meta) == 8
    line = (v4 / "train_set" / "train_English.txt").read_text().splitlines()[0].split()
    assert len(line) == 6 and line[2].startswith("voices/English/id001/") and line[4] == "id001"

    train, _ = build_manifest("mavceleb-v4", v4, subset="train")
    assert {r.language for r in train.records} == {"English"}
    assert {r.identity: r.gender[0] for r in train.records} == meta
    assert {r.key for r in train.records} == {r.path.rsplit(".", 1)[0] for r in train.records}

    test, _ = build_manifest("mavceleb-v4", v4, subset="test")
    assert Path(test.lists) == (v4 / "dev_set").resolve()
    assert {r.language for r in test.records} == {"English", "Bengali"}
    keys = {r.key for r in test.records}
    for track in ("no_gender", "gender"):
        for lang in ("English", "Bangla"):
            for t in track_trials(v4 / "dev_set", track, lang):  # what stage 2 maps to features
                assert t.voice.startswith(f"{track}/voices/{lang}/")
                assert t.voice.rsplit(".", 1)[0] in keys and t.face.rsplit(".", 1)[0] in keys
    assert len(keys) == len(test.records) == 2 * 2 * 2 * 16  # both tracks' media apart, same file names


def test_demo_v4_gender_track_negatives_share_the_positive_gender(v4):
    from fva.synth import demo_v4

    ids = demo_v4._balanced(3, 9, 4)  # the fixture's test identities: seed 3, after 8 train identities
    assert sorted(i.female for i in ids) == [False, False, True, True]
    cross = {}
    for track in ("no_gender", "gender"):
        for lang in ("English", "Bangla"):
            labels = [line.split() for line in (v4 / "ground_truth" / f"{lang}_test_{track}.txt").read_text()
                      .splitlines()]
            pairs = demo_v4.trial_pairs(3, track, lang, ids, 4)
            assert [t.key for t in read_trials(v4 / "dev_set" / track / f"{lang}_test.txt")] == [k for k, _ in labels]
            assert [int(y) for _, y in labels] == [int(v == f) for v, f in pairs]
            assert sum(int(y) for _, y in labels) * 2 == len(labels)
            cross[track, lang] = sum(ids[v].female != ids[f].female for v, f in pairs)
    assert cross["gender", "English"] == cross["gender", "Bangla"] == 0
    assert cross["no_gender", "English"] + cross["no_gender", "Bangla"] > 0


def test_v4_layouts_of_the_download_and_bengali_kept_out_of_training(tmp_path):
    root = tmp_path / "FLAG"
    train = root / "train_set_extracted" / "train_set" / "train_set"
    for ident in ("id001", "id002"):
        touch(train / "voices" / "English" / ident / "00001.wav")
        touch(train / "faces" / "English" / ident / "00001.jpg")
    touch(train / "voices" / "Bengali" / "id001" / "00009.wav")
    (root / "meta_file_train_set.csv").write_text("speaker,gender\nid001, M\nid002,f\n")
    dev = root / "dev_set_extracted" / "dev_set" / "gender"
    touch(dev / "Bangla_test" / "voices" / "00000.wav")
    touch(dev / "Bangla_test" / "faces" / "00000.jpg")
    (dev / "Bangla_test.txt").write_text("k1 voices/Bangla/00000.wav faces/Bangla/00000.jpg\n")
    with pytest.raises(FvaError, match="has gender/ but no no_gender/ with <Lang>_test.txt lists"):
        build_manifest("mavceleb-v4", root, subset="test")  # one track alone is not a FLAG dev or eval set
    other = dev.parent / "no_gender"
    touch(other / "Bangla_test" / "voices" / "00000.wav")
    touch(other / "Bangla_test" / "faces" / "00000.jpg")
    (other / "Bangla_test.txt").write_text("k1 voices/Bangla/00000.wav faces/Bangla/00000.jpg\n")

    man, notes = build_manifest("mavceleb-v4", root, subset="train")
    assert {(r.identity, r.gender, r.language) for r in man.records} == {("id001", "male", "English"),
                                                                        ("id002", "female", "English")}
    assert any("1 Bengali train file" in n for n in notes)
    test, _ = build_manifest("mavceleb-v4", root, subset="test")
    assert sorted(r.key for r in test.records) == ["gender/faces/Bangla/00000", "gender/voices/Bangla/00000",
                                                   "no_gender/faces/Bangla/00000", "no_gender/voices/Bangla/00000"]
    with pytest.raises(FvaError, match="has no Bengali records"):
        build_manifest("mavceleb-v4", root, subset="train", split="bengali-unheard")

    (root / "meta_file_train_set.csv").unlink()
    _, notes = build_manifest("mavceleb-v4", root, subset="train")
    assert any("no meta_file_train_set.csv" in n for n in notes)
    (dev / "Bangla_test.txt").write_text("k1 voices/Bangla/00001.wav faces/Bangla/00000.jpg\n")
    with pytest.raises(FvaError, match=r"Bangla_test.txt:1: voices/Bangla/00001.wav not found"):
        build_manifest("mavceleb-v4", root, subset="test")


def test_folds_cli_same_gender(v4, tmp_path):
    runner = CliRunner()
    assert runner.invoke(cli, ["manifest", "--dataset", "mavceleb-v4", "--root", str(v4), "--subset", "train",
                               "--out", str(tmp_path / "train.jsonl")]).exit_code == 0
    res = runner.invoke(cli, ["folds", "--manifest", str(tmp_path / "train.jsonl"), "--out", str(tmp_path / "f"),
                              "--k", "2", "--negatives", "same-gender"])
    assert res.exit_code == 0, res.output
    assert "negatives same-gender" in res.output
    meta = dict(line.split(",") for line in (v4 / "meta_file_train_set.csv").read_text().split())
    for f in (0, 1):
        labels = dict(line.split() for line in (tmp_path / "f" / f"fold{f}" / "English_dev_labels.txt").read_text()
                      .splitlines())
        for t in read_trials(tmp_path / "f" / f"fold{f}" / "English_dev.txt"):
            v, fc = t.voice.split("/")[3], t.face.split("/")[3]
            assert meta[v] == meta[fc] and (v == fc) == (labels[t.key] == "1")


# ---------------------------------------------------------------- submission layout and scoring


def _noisy_scores(v4: Path, seed: int = 0) -> dict[tuple[str, str, str], dict[str, float]]:
    """Distances that separate the classes imperfectly (ground truth plus noise), one dict per file."""
    rng = np.random.default_rng(seed)
    scores = {}
    for sub in submission_files(v4 / "dev_set"):
        labels = dict(line.split() for line in
                      (v4 / "ground_truth" / f"{sub.language}_test_{sub.track}.txt").read_text().splitlines())
        scores[(sub.track, sub.language, sub.condition)] = {
            t.key: float(rng.normal() + 0.8 * (labels[t.key] == "0")) for t in read_trials(sub.trials)}
    return scores


def test_flag_layout_names_and_plan(v4, tmp_path):
    assert detect_layout(v4 / "dev_set") == "flag2027"
    names = [s.name for s in submission_files(v4 / "dev_set")]
    assert names == ["no_gender/sub_score_v4_Bangla_unheard.txt", "no_gender/sub_score_v4_English_heard.txt",
                     "gender/sub_score_v4_Bangla_unheard.txt", "gender/sub_score_v4_English_heard.txt"]
    plan = write_default_plan(tmp_path / "plan.yaml", v4 / "dev_set", tmp_path / "exp", None)
    assert plan["files"] == {n: str(tmp_path / "exp" / "full") for n in
                             ("no_gender/Bangla_unheard", "no_gender/English_heard", "gender/Bangla_unheard",
                              "gender/English_heard")}


def test_flag_submission_validates_and_reports_misplaced_files(v4, tmp_path):
    zip_path = write_valid_submission(tmp_path / "s.zip", _noisy_scores(v4), v4 / "dev_set")
    with zipfile.ZipFile(zip_path) as zf:
        assert sorted(zf.namelist()) == sorted(s.name for s in submission_files(v4 / "dev_set"))
    assert validate_submission(zip_path, v4 / "dev_set") == []
    res = CliRunner().invoke(cli, ["submission", "validate", str(zip_path), "--trials", str(v4 / "dev_set")])
    assert res.exit_code == 0, res.output

    flat = tmp_path / "flat.zip"
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(flat, "w") as dst:
        for name in src.namelist():
            if name.startswith("gender/"):
                dst.writestr(name.split("/")[1], src.read(name))
            else:
                dst.writestr(name, src.read(name))
    problems = validate_submission(flat, v4 / "dev_set")
    assert any("sub_score_v4_English_heard.txt: unexpected file (a FLAG 2027 file belongs in its track folder" in p
               for p in problems)
    assert any(p.startswith("gender/sub_score_v4_Bangla_unheard.txt: expected file missing") for p in problems)

    # pack: the same files from a folder
    scores_dir = tmp_path / "scores"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(scores_dir)
    res = CliRunner().invoke(cli, ["submission", "pack", str(scores_dir), "--out", str(tmp_path / "p.zip"),
                                   "--trials", str(v4 / "dev_set")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p.zip").read_bytes() == zip_path.read_bytes()


def organisers_eer(score_root: Path, gt_root: Path, track: str, lang: str, cond: str) -> float:
    """The participants' scorer copy (challenge/eval_submission.py), rewritten from its description: read
    ``<track>/sub_score_v4_<Lang>_<cond>.txt`` (``key score`` split on one space, blank lines skipped) and
    ``<Lang>_test_<track>.txt``, order the scores by the ground truth's keys, ``roc_curve(gt, -score)``, then
    the EER as the root of ``1 - x - tpr(x)`` on the linearly interpolated ROC, in percent."""
    from scipy.interpolate import interp1d
    from scipy.optimize import brentq
    from sklearn.metrics import roc_curve

    submitted = {}
    for line in (score_root / track / f"sub_score_v4_{lang}_{cond}.txt").read_text().split("\n"):
        if line.strip():
            key, value = line.split(" ")
            submitted[key] = value
    keys, truth = [], []
    for line in (gt_root / f"{lang}_test_{track}.txt").read_text().split("\n"):
        if line.strip():
            fields = line.split(" ")
            keys.append(fields[0])
            truth.append(int(fields[1]))
    score = np.asarray([float(submitted[k]) for k in keys])
    fpr, tpr, _ = roc_curve(np.asarray(truth), -score)
    return 100 * brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)


def _check_against_organisers(zip_path: Path, gt: Path, tmp_path: Path) -> dict:
    res = CliRunner().invoke(cli, ["evaluate", "--submission", str(zip_path), "--ground-truth", str(gt), "--json"])
    assert res.exit_code == 0, res.output
    result = json.loads(res.output)
    unpacked = tmp_path / "unpacked"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(unpacked)
    rows = result["conditions"]
    assert {(r["track"], r["language"], r["condition"]) for r in rows} == {
        (t, lang, c) for t in ("no_gender", "gender") for lang, c in (("English", "heard"), ("Bangla", "unheard"))}
    for r in rows:
        assert r["eer"] == pytest.approx(organisers_eer(unpacked, gt, r["track"], r["language"], r["condition"]),
                                         abs=1e-9)
    assert result["mean_eer"] == pytest.approx(np.mean([r["eer"] for r in rows]), abs=1e-12)
    return result


def test_evaluate_matches_the_organisers_scorer(v4, tmp_path):
    zip_path = write_valid_submission(tmp_path / "s.zip", _noisy_scores(v4), v4 / "dev_set")
    result = _check_against_organisers(zip_path, v4 / "ground_truth", tmp_path)
    assert len({round(r["eer"], 6) for r in result["conditions"]}) > 1  # not a degenerate submission
    table = evaluate_submission(zip_path, v4 / "ground_truth").table().splitlines()
    assert table[0].split() == ["Track", "Language", "Condition", "Trials", "EER", "%"]


def test_flag_ground_truth_missing_file_is_one_line(v4, tmp_path):
    zip_path = tmp_path / "one.zip"
    with zipfile.ZipFile(zip_path, "w") as zf:
        zf.writestr("gender/sub_score_v4_English_heard.txt", "x 0.5\n")
    res = CliRunner().invoke(cli, ["evaluate", "--submission", str(zip_path), "--ground-truth",
                                   str(v4 / "ground_truth")])
    assert_user_error(res, "no_gender/sub_score_v4_Bangla_unheard.txt is missing from the zip")


@pytest.mark.slow
def test_make_submission_demo_v4_end_to_end(tmp_path):
    """scripts/submission.sh with DATASET=demo-v4: the whole chain offline, a FLAG-shaped valid zip, and
    the EERs it prints equal the organisers' scorer's."""
    work = tmp_path / "repo"
    top = {".venv", "work", "data", ".git", "submission.zip"}  # the checkout's own outputs, at its top level only
    shutil.copytree(REPO, work, ignore=lambda d, names: [n for n in names if Path(d) == REPO and n in top])
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "fva").write_text(f"#!/bin/sh\nexec {sys.executable} -m fva.cli \"$@\"\n")
    (bindir / "fva").chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "DATASET": "demo-v4", "HEAD_WORKERS": "2",
           "PYTHONPATH": str(work)}
    done = subprocess.run(["bash", "scripts/submission.sh"], cwd=work, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "submission.zip: valid" in done.stdout
    assert validate_submission(work / "submission.zip", work / "data" / "demo-v4" / "dev_set") == []
    _check_against_organisers(work / "submission.zip", work / "data" / "demo-v4" / "ground_truth", tmp_path)
