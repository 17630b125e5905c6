"""Score post-processing: age-gender polarisation, chaining-cluster refinement, z-norm fusion, fused plans."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fva.errors import FvaError
from fva.evaluate.eer import compute_eer
from fva.heads import plan as plan_module
from fva.heads.postprocess import (PolariseConfig, RefineConfig, cluster_media, elbow, match_confidence, polarise,
                                   refine, znorm_fusion)

# --------------------------------------------------------------------------------------------------------
# Polarisation
# --------------------------------------------------------------------------------------------------------


def test_match_confidence_by_hand():
    cfg = PolariseConfig(age_weight=0.3, gender_weight=0.7, age_unit=1.0)
    # gap 3 years in years: C_a = 1/4; C_g = .8*.6 + .2*.4 = .56; C = .3/4 + .7*.56
    c = match_confidence(np.array([20.]), np.array([.8]), np.array([23.]), np.array([.6]), cfg)
    assert c == pytest.approx([0.3 / 4 + 0.7 * 0.56])
    # default decades: a 10-year gap halves C_a
    c = match_confidence(np.array([20., 20.]), np.array([0., 0.]), np.array([30., 20.]), np.array([0., 1.]),
                         PolariseConfig())
    assert c == pytest.approx([0.5 * 0.5 + 0.5 * 1.0, 0.5 * 1.0 + 0.5 * 0.0])


def test_polarise_divides_matching_and_multiplies_mismatched_pairs():
    cfg = PolariseConfig(enabled=True)
    d = np.array([0.5, 0.5, 0.9, 1.3])
    age_v = np.array([30., 30., 25., 60.])
    age_f = np.array([32., 32., 25., 20.])
    p_v = np.array([.95, .95, .5, .9])
    p_f = np.array([.9, .05, .5, .9])
    # C: same gender, 2-year gap -> .5/1.2 + .5*.86 = .847 > .6; opposite gender -> .5/1.2 + .5*.14 = .487;
    # uncertain gender, same age -> .5 + .25 = .75; same gender, 40-year gap -> .5/5 + .5*.82 = .51
    out = polarise(d, age_v, p_v, age_f, p_f, cfg)
    np.testing.assert_allclose(out, [0.5 / 1.2, 0.5 * 1.2, 0.9 / 1.2, 1.3 * 1.2], rtol=1e-12)
    # the threshold is strict: C exactly T multiplies
    at_t = polarise(np.array([1.0]), np.array([0.]), np.array([1.]), np.array([0.]), np.array([1.]),
                    PolariseConfig(threshold=1.0))
    assert at_t == pytest.approx([1.2])


def test_polarise_with_negative_distances_scales_about_the_minimum():
    d = np.array([-1.0, 0.5, 2.0])
    ones, zeros = np.ones(3), np.zeros(3)
    match = polarise(d, 30 * ones, ones, 30 * ones, ones, PolariseConfig())  # C = 1: all divided
    np.testing.assert_allclose(match, -1.0 + (d + 1.0) / 1.2)
    assert (match <= d).all()  # dividing never raises a distance, negative ones included
    mismatch = polarise(d, 30 * ones, ones, 30 * ones, zeros, PolariseConfig())  # C = .5: all multiplied
    np.testing.assert_allclose(mismatch, -1.0 + (d + 1.0) * 1.2)
    assert (mismatch >= d).all()
    assert (np.argsort(match) == np.argsort(d)).all()


def test_polarise_rejects_bad_inputs():
    one = np.array([1.0])
    with pytest.raises(FvaError, match="P\\(female\\) outside"):
        polarise(one, one, np.array([1.5]), one, one, PolariseConfig())
    with pytest.raises(FvaError, match="NaN"):
        polarise(one, np.array([np.nan]), one, one, one, PolariseConfig())
    with pytest.raises(FvaError, match="2 distances but 1"):
        polarise(np.ones(2), one, one, one, one, PolariseConfig())


# --------------------------------------------------------------------------------------------------------
# Refinement
# --------------------------------------------------------------------------------------------------------


def test_elbow_rule():
    # normalised: x = 0 .25 .5 .75 1, y = 1 .468 .043 .021 0 -> 1 - x - y largest at k = 3
    assert elbow(np.arange(1, 6), np.array([100., 50., 10., 8., 6.])) == 3
    assert elbow(np.arange(1, 6), np.array([100., 20., 15., 10., 5.])) == 2
    assert elbow(np.arange(1, 6), np.array([5., 4., 3., 2., 1.])) == 1  # straight line: no elbow, smallest k
    assert elbow(np.arange(1, 5), np.array([3., 3., 3., 3.])) == 1  # flat
    assert elbow(np.array([1, 2]), np.array([2., 1.])) == 2  # no interior point: the last k


def identity_blobs(rng, per_gender=3, per_identity=6, noise=0.05, gender_norm=1.0, identity_norm=1.2, dim=12):
    """Voice and face embeddings from the same identity centres plus independent noise.

    Centre of identity i of gender g: gender_norm along axis g plus identity_norm along its own axis 2 + i', so
    in cosine: the same identity ~1, the same gender .41, the other gender 0 (defaults). Gender 0's identities
    come first. Returns voices, faces and the identity of each row (the same rows in both)."""
    n_id = 2 * per_gender
    centres = np.zeros((n_id, dim))
    centres[np.arange(n_id), np.repeat([0, 1], per_gender)] = gender_norm
    centres[np.arange(n_id), 2 + np.arange(n_id)] = identity_norm
    who = np.repeat(np.arange(n_id), per_identity)
    voices = centres[who] + noise * rng.standard_normal((len(who), dim))
    faces = centres[who] + noise * rng.standard_normal((len(who), dim))
    return voices, faces, who


def all_pairs(n_voices: int, n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    vo, fo = np.meshgrid(np.arange(n_voices), np.arange(n_faces), indexing="ij")
    return vo.ravel(), fo.ravel()


HAND_CFG = RefineConfig(enabled=True, outlier_distance=0.6, similarity_threshold=0.8, alpha=0.25, max_clusters=8)


@pytest.fixture(scope="module")
def blob_case():
    rng = np.random.default_rng(0)
    voices, faces, who = identity_blobs(rng)
    # faces listed in another order (genders swapped) so the face clusters' numbering has to be matched
    order = np.r_[18:36, 0:18]
    faces, face_who = faces[order], who[order]
    outlier = np.zeros((1, voices.shape[1]))
    outlier[0, :2] = -1.0  # opposite to both gender directions: far from every centre
    voices = np.vstack([voices, outlier])
    voice_who = np.r_[who, -1]
    clusters = cluster_media(voices, faces, HAND_CFG)
    return voices, faces, voice_who, face_who, clusters


def test_gender_clusters_are_matched_across_modalities(blob_case):
    voices, faces, voice_who, face_who, c = blob_case
    gender_v, gender_f = voice_who[:-1] // 3, face_who // 3
    # each true gender is one cluster, and the face cluster of a gender has the voice cluster's number
    assert len(set(zip(gender_v, c.voice_gender[:-1]))) == 2 and len(set(c.voice_gender[:-1])) == 2
    voice_label = {g: c.voice_gender[:-1][gender_v == g][0] for g in (0, 1)}
    assert all(c.face_gender[face_who // 3 == g].tolist() == [voice_label[g]] * 18 for g in (0, 1))
    # here k-means numbered the face genders the other way round (seeded, so always): the matching renumbered them
    assert c.swapped and c.gender_similarity[0, 1] > 0.95 and c.gender_similarity[0, 0] < 0.1
    assert not c.voice_outlier[:-1].any() and not c.face_outlier.any() and c.voice_outlier[-1]
    assert c.voice_identity[-1] == -1


def test_identity_clusters_and_elbow_pick_three(blob_case):
    voices, faces, voice_who, face_who, c = blob_case
    assert c.voice_k == [3, 3] and c.face_k == [3, 3]
    for who, labels, gender in ((voice_who[:-1], c.voice_identity[:-1], c.voice_gender[:-1]),
                                (face_who, c.face_identity, c.face_gender)):
        pairs = set(zip(who, zip(gender, labels)))
        assert len(pairs) == 6 and len({cl for _, cl in pairs}) == 6  # one cluster per identity, and back
    # prototypes: unit means of the members; cross-modal prototypes of one identity nearly coincide
    for g in (0, 1):
        members = voices[:-1][(c.voice_gender[:-1] == g) & (c.voice_identity[:-1] == 0)]
        mean = (members / np.linalg.norm(members, axis=1, keepdims=True)).mean(axis=0)
        np.testing.assert_allclose(c.voice_prototypes[g][0], mean / np.linalg.norm(mean), atol=1e-12)
        sims = c.voice_prototypes[g] @ c.face_prototypes[g].T
        assert np.sort(sims.max(axis=1)).min() > 0.95 and np.sort(sims, axis=1)[:, :-1].max() < 0.6


def test_refine_moves_exactly_the_expected_trials(blob_case):
    voices, faces, voice_who, face_who, clusters = blob_case
    vo, fo = all_pairs(len(voices), len(faces))
    d = np.random.default_rng(1).uniform(0.2, 1.8, len(vo))
    low, high = d.min(), d.max()
    out = refine(d, voices, faces, vo, fo, HAND_CFG)
    np.testing.assert_array_equal(out, refine(d, voices, faces, vo, fo, HAND_CFG, clusters))  # deterministic
    same = voice_who[vo] == face_who[fo]
    cross_gender = (voice_who[vo] // 3 != face_who[fo] // 3) & (voice_who[vo] >= 0)
    from_outlier = voice_who[vo] < 0
    other = ~same & ~cross_gender & ~from_outlier
    assert same.sum() == 216 and cross_gender.sum() == 648 and from_outlier.sum() == 36
    np.testing.assert_allclose(out[same], low + (d[same] - low) * 0.25, rtol=0, atol=1e-15)
    assert (out[cross_gender] == high).all()
    np.testing.assert_array_equal(out[from_outlier], d[from_outlier])  # the outlier's trials are left as they are
    np.testing.assert_array_equal(out[other], d[other])  # same gender, other identity: prototypes not similar
    # a stricter T_alpha pulls nothing; alpha = 1 leaves the pulled trials where they were
    strict = refine(d, voices, faces, vo, fo, replace(HAND_CFG, similarity_threshold=1.0), clusters)
    np.testing.assert_array_equal(strict[same], d[same])
    np.testing.assert_allclose(refine(d, voices, faces, vo, fo, replace(HAND_CFG, alpha=1.0), clusters)[same], d[same])


def test_refine_improves_eer_on_noisy_trials():
    """Trial-level scoring noise on top of set-level structure: clustering the set's own media recovers it."""
    rng = np.random.default_rng(3)
    voices, faces, who = identity_blobs(rng, per_gender=5, per_identity=6, noise=0.25, gender_norm=1.5,
                                        identity_norm=1.5, dim=32)
    vo, fo = all_pairs(len(voices), len(faces))
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    d = 1 - np.einsum("nd,nd->n", unit(voices)[vo], unit(faces)[fo]) + 0.3 * rng.standard_normal(len(vo))
    labels = (who[vo] == who[fo]).astype(int)
    cfg = RefineConfig(enabled=True, outlier_distance=0.7, similarity_threshold=0.6, max_clusters=10)
    before, after = compute_eer(labels, d), compute_eer(labels, refine(d, voices, faces, vo, fo, cfg))
    assert before > 15 and after < before / 3, (before, after)


def test_refine_rejects_bad_inputs():
    voices, faces, _ = identity_blobs(np.random.default_rng(0), per_identity=2)
    with pytest.raises(FvaError, match="voice row 99 out of range"):
        refine(np.ones(1), voices, faces, [99], [0], RefineConfig())
    with pytest.raises(FvaError, match="one of each per trial"):
        refine(np.ones(2), voices, faces, [0], [0], RefineConfig())
    with pytest.raises(FvaError, match="in one space"):
        refine(np.ones(1), voices, faces[:, :5], [0], [0], RefineConfig())


# --------------------------------------------------------------------------------------------------------
# Fusion
# --------------------------------------------------------------------------------------------------------


def test_znorm_fusion_by_hand():
    a = {"k1": 1.0, "k2": 2.0, "k3": 6.0}  # mean 3, population std sqrt(14/3)
    b = {"k3": -1.0, "k1": 1.0, "k2": 3.0}  # mean 1, std sqrt(8/3); another key order
    sa, sb = np.sqrt(14 / 3), np.sqrt(8 / 3)
    fused = znorm_fusion([a, b])
    assert list(fused) == ["k1", "k2", "k3"]
    expected = {"k1": ((1 - 3) / sa + 0 / sb) / 2, "k2": ((2 - 3) / sa + 2 / sb) / 2, "k3": ((6 - 3) / sa - 2 / sb) / 2}
    assert fused == pytest.approx(expected, abs=1e-12)
    assert znorm_fusion([a]) == pytest.approx({k: (v - 3) / sa for k, v in a.items()}, abs=1e-12)


def test_znorm_fusion_errors():
    a = {"k1": 1.0, "k2": 2.0}
    with pytest.raises(FvaError, match="source 2 has no score for trial 'k2'"):
        znorm_fusion([a, {"k1": 1.0, "k3": 2.0}])
    with pytest.raises(FvaError, match="exp/a has no score for trial 'k3'"):
        znorm_fusion([a, {"k1": 1.0, "k2": 2.0, "k3": 0.0}], ["exp/a", "exp/b"])
    with pytest.raises(FvaError, match="source 2 gives every trial the same score"):
        znorm_fusion([a, {"k1": 0.5, "k2": 0.5}])
    with pytest.raises(FvaError, match="no sources"):
        znorm_fusion([])


@pytest.fixture
def trials_dir(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    for lang in ("English", "German"):
        (root / f"{lang}_test.txt").write_text("".join(f"{lang[:2]}{i} v/{i}.wav f/{i}.jpg\n" for i in range(4)))
    return root


def fake_scores(exp: str | Path, trials_path: str | Path, cache_root=None) -> dict[str, float]:
    """Scores that depend on the experiment (its name's length) and the trial index."""
    keys = [line.split()[0] for line in Path(trials_path).read_text().splitlines()]
    return {k: len(str(exp)) * (i + 1) ** 2 / 10 for i, k in enumerate(keys)}


def read_zip(path: Path) -> dict[str, dict[str, float]]:
    with zipfile.ZipFile(path) as zf:
        return {name: {k: float(v) for k, v in (line.split() for line in zf.read(name).decode().splitlines())}
                for name in zf.namelist()}


def test_plan_with_a_list_entry_fuses_its_experiments(trials_dir: Path, tmp_path: Path, monkeypatch):
    calls = []

    def scored(exp, trials, cache=None, **_):
        calls.append((exp, Path(trials).name))
        return fake_scores(exp, trials)

    monkeypatch.setattr(plan_module, "score_trial_list", scored)
    monkeypatch.setattr(plan_module, "experiment_level", lambda exp: 0)  # no experiment folders here
    files = {"English_heard": "exp/full", "English_unheard": ["exp/a", "exp/bbbb-unheard"],
             "German_heard": "exp/english-unheard", "German_unheard": "exp/german-unheard"}
    out = plan_module.make_submission({"trials": str(trials_dir), "files": files}, tmp_path / "sub.zip")
    written = read_zip(out)
    assert ("exp/a", "English_test.txt") in calls and ("exp/bbbb-unheard", "English_test.txt") in calls
    assert len(calls) == 5
    english = fake_scores("x", trials_dir / "English_test.txt")
    expected = znorm_fusion([fake_scores("exp/a", trials_dir / "English_test.txt"),
                             fake_scores("exp/bbbb-unheard", trials_dir / "English_test.txt")])
    assert written["sub_score_English_unheard.txt"] == pytest.approx(expected, abs=1e-12)
    # both sources are the same shape up to scale, so the fusion is the z-score of either
    z = np.array(list(english.values()))
    assert list(expected.values()) == pytest.approx(list((z - z.mean()) / z.std()), abs=1e-12)
    assert written["sub_score_English_heard.txt"] == pytest.approx(
        fake_scores("exp/full", trials_dir / "English_test.txt"))  # a single path: its raw distances


def test_plan_rejects_an_empty_list(trials_dir: Path, tmp_path: Path, monkeypatch):
    monkeypatch.setattr(plan_module, "score_trial_list", fake_scores)
    files = {"English_heard": [], "English_unheard": "a", "German_heard": "b", "German_unheard": "c"}
    with pytest.raises(FvaError, match="English_heard must be an experiment folder, .* or a non-empty list"):
        plan_module.make_submission({"trials": str(trials_dir), "files": files}, tmp_path / "sub.zip")
