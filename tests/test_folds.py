"""Identity-disjoint folds and balanced per-language dev trials."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_mavceleb
from fva.data.datasets import build_manifest
from fva.data.folds import Folds, dev_trials, make_folds, write_fold_trials
from fva.data.mavceleb import media_key
from fva.data.trials import labels_path, read_labels, read_trials
from fva.errors import FvaError

IDS = [f"id{i:04d}" for i in range(1, 51)]


def test_folds_partition_identities_disjointly():
    folds = make_folds(IDS, k=7, seed=3)
    flat = [i for fold in folds.folds for i in fold]
    assert sorted(flat) == IDS and len(flat) == len(set(flat))
    assert sorted(map(len, folds.folds)) == [7] * 6 + [8]
    for f in range(7):
        assert not set(folds.held_out(f)) & set(folds.train_identities(f))
        assert sorted(folds.held_out(f) + folds.train_identities(f)) == IDS


def test_folds_deterministic_from_seed(tmp_path: Path):
    a, b = make_folds(IDS, seed=11), make_folds(list(reversed(IDS)), seed=11)
    assert a.folds == b.folds
    assert make_folds(IDS, seed=12).folds != a.folds
    a.save(tmp_path / "folds.json")
    assert Folds.load(tmp_path / "folds.json") == a


def test_fold_errors(tmp_path: Path):
    folds = make_folds(IDS, k=7)
    with pytest.raises(FvaError, match=r"fold 7 out of range; this split has folds 0\.\.6"):
        folds.held_out(7)
    with pytest.raises(FvaError, match="cannot fill 7 folds"):
        make_folds(IDS[:5], k=7)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(FvaError, match="not an fva folds file"):
        Folds.load(tmp_path / "bad.json")


@pytest.fixture
def many_ids_manifest(tmp_path: Path):
    root = make_mavceleb(tmp_path / "mav", identities=tuple(f"id{i:04d}" for i in range(1, 15)))
    man, _ = build_manifest("mavceleb-v3", root)
    return man


def test_dev_trials_balanced_and_held_out_only(many_ids_manifest):
    man = many_ids_manifest
    by_path = {r.path: r for r in man.records}
    held = ["id0002", "id0005", "id0009"]
    for language in ("English", "German"):
        trials, labels = dev_trials(man.records, held, language, seed=0)
        voices = [r for r in man.by_modality("voice") if r.identity in held and r.language == language]
        assert len(trials) == 6 * len(voices)  # three same and three different trials per voice clip
        assert sum(labels.values()) == len(trials) // 2
        per_clip = {}
        for t in trials:
            per_clip.setdefault(t.voice, []).append(labels[t.key])
        assert all(sorted(v) == [0, 0, 0, 1, 1, 1] for v in per_clip.values())
        assert len({t.key for t in trials}) == len(trials) and all(len(t.key) == 8 for t in trials)
        for t in trials:
            voice, face = by_path[t.voice], by_path[t.face]
            assert voice.modality == "voice" and face.modality == "face"
            assert voice.language == language == face.language
            assert voice.identity in held and face.identity in held
            assert labels[t.key] == int(voice.identity == face.identity)
            assert media_key(t.voice) == voice.key  # trial paths map to manifest keys without media
    capped, _ = dev_trials(man.records, held, "English", seed=0, max_trials=6)
    assert len(capped) == 6


def test_write_fold_trials_layout_and_determinism(tmp_path: Path, many_ids_manifest):
    man = many_ids_manifest
    folds = make_folds(man.identities(), k=7, seed=0)
    counts = write_fold_trials(man.records, folds, tmp_path / "a")
    write_fold_trials(man.records, folds, tmp_path / "b")
    for f in range(7):
        for language in ("English", "German"):
            path = tmp_path / "a" / f"fold{f}" / f"{language}_dev.txt"
            trials, labels = read_trials(path), read_labels(labels_path(path))
            assert [t.key for t in trials] == list(labels) and len(trials) == counts[f][language] > 0
            assert path.read_bytes() == (tmp_path / "b" / f"fold{f}" / f"{language}_dev.txt").read_bytes()
            held = set(folds.held_out(f))
            assert all(t.voice.split("/")[1] in held and t.face.split("/")[1] in held for t in trials)
