"""fva.heads.transductive: clustering against a naive reference, threshold fitting, block mixing, and a
synthetic stress test of the whole transductive step (clustered vs pairwise EER)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage

from fva.errors import FvaError
from fva.evaluate.eer import compute_eer
from fva.heads.transductive import DEFAULT_GRID, block_mix, centre, cluster_labels, fit_threshold


def canon(labels) -> list[int]:
    """Labels renumbered by first appearance, so equal partitions compare equal."""
    seen: dict = {}
    return [seen.setdefault(int(x), len(seen)) for x in labels]


def naive_average_linkage(x: np.ndarray, threshold: float) -> list[int]:
    """Reference: repeatedly merge the two clusters with the smallest mean pairwise cosine distance while that
    distance is at most ``threshold``."""
    u = x / np.linalg.norm(x, axis=1, keepdims=True)
    dist = 1.0 - u @ u.T
    clusters = [[i] for i in range(len(x))]
    while len(clusters) > 1:
        best, pair = np.inf, None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                m = float(np.mean([dist[i, j] for i in clusters[a] for j in clusters[b]]))
                if m < best:
                    best, pair = m, (a, b)
        if best > threshold:
            break
        a, b = pair
        clusters[a] = clusters[a] + clusters.pop(b)
    labels = np.empty(len(x), dtype=int)
    for k, members in enumerate(clusters):
        labels[members] = k
    return canon(labels)


def blobs(rng: np.random.Generator, people: int, per: int, noise: float, dim: int = 16):
    centres = rng.standard_normal((people, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    ids = np.repeat(np.arange(people), per)
    return centres[ids] + noise * rng.standard_normal((len(ids), dim)), ids


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("noise", [0.05, 0.4, 1.0])
def test_cluster_labels_matches_naive_reference(seed, noise):
    rng = np.random.default_rng(seed)
    x, _ = blobs(rng, people=int(rng.integers(2, 7)), per=int(rng.integers(1, 6)), noise=noise, dim=8)
    for t in (0.1, 0.3, 0.6, 1.0):
        assert canon(cluster_labels(x, t)) == naive_average_linkage(x, t)


@pytest.mark.parametrize("seed", range(5))
def test_cluster_labels_partition_ignores_row_order(seed):
    rng = np.random.default_rng(100 + seed)
    x, _ = blobs(rng, people=6, per=5, noise=0.6)
    perm = rng.permutation(len(x))
    for t in (0.2, 0.5, 0.9):
        labels = cluster_labels(x, t)
        assert canon(cluster_labels(x[perm], t)) == canon(labels[perm])
        assert canon(labels) == labels.tolist()  # numbered by first appearance


def test_cluster_labels_edge_cases():
    assert cluster_labels(np.zeros((0, 4)), 0.5).tolist() == []
    assert cluster_labels(np.zeros((0, 4)), 0.5).dtype.kind == "i"
    assert cluster_labels(np.ones((1, 4)), 0.5).tolist() == [0]
    # zero-norm rows are singletons; the others still cluster
    x = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 0.01], [0.0, 0.0]])
    assert cluster_labels(x, 0.5).tolist() == [0, 1, 0, 2]
    with pytest.raises(FvaError, match="2-D"):
        cluster_labels(np.ones(3), 0.5)
    with pytest.raises(FvaError, match="finite"):
        cluster_labels(np.array([[1.0, np.nan], [1.0, 0.0]]), 0.5)


def test_fit_threshold_separates_clusters():
    x, ids = blobs(np.random.default_rng(7), people=8, per=6, noise=0.05)
    t, ari = fit_threshold(x, ids)
    assert ari == 1.0
    assert canon(cluster_labels(x, t)) == canon(ids)
    assert t in DEFAULT_GRID


@pytest.mark.parametrize("noise", [0.05, 0.3, 0.6])
def test_fit_threshold_equals_fresh_linkage_per_threshold(noise):
    from sklearn.metrics import adjusted_rand_score

    x, ids = blobs(np.random.default_rng(11), people=8, per=6, noise=noise)
    scores = []
    for t in DEFAULT_GRID:  # a fresh linkage per value
        z = linkage(x, method="average", metric="cosine")
        scores.append(adjusted_rand_score(ids, fcluster(z, t=t, criterion="distance")))
    i = int(np.argmax(scores))  # first maximum = smallest threshold (grid ascending)
    assert fit_threshold(x, ids) == (float(DEFAULT_GRID[i]), float(scores[i]))


def test_fit_threshold_ties_take_smallest_and_errors():
    x = np.array([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [0.1, 1.0]])
    assert fit_threshold(x, np.array([0, 0, 1, 1]), np.array([0.9, 0.1, 0.5])) == (0.1, 1.0)
    with pytest.raises(FvaError, match="2 identities"):
        fit_threshold(x, np.zeros(4))
    with pytest.raises(FvaError, match="2 rows"):
        fit_threshold(x[:1], np.array([0]))
    with pytest.raises(FvaError, match="one entry per row"):
        fit_threshold(x, np.array([0, 1]))
    with pytest.raises(FvaError, match="grid"):
        fit_threshold(x, np.array([0, 0, 1, 1]), np.array([]))


def test_block_mix_by_hand():
    d = np.array([[0.1, 0.8], [0.9, 0.2], [0.3, 0.7]])
    v, f = np.array([4, 1, 4]), np.array([0, 2])
    w = 0.3
    expected = np.empty_like(d)
    for i in range(3):
        for j in range(2):
            block = [d[a, b] for a in range(3) for b in range(2) if v[a] == v[i] and f[b] == f[j]]
            expected[i, j] = (1 - w) * d[i, j] + w * np.mean(block)
    np.testing.assert_allclose(block_mix(d, v, f, w), expected)
    np.testing.assert_allclose(block_mix(d, v, f, 0.0), d)
    one = block_mix(d, np.array([0, 0, 1]), np.array([3, 3]), 1.0)
    np.testing.assert_allclose(one, [[0.5, 0.5], [0.5, 0.5], [0.5, 0.5]])
    # a random larger case against the loop
    rng = np.random.default_rng(3)
    d = rng.random((9, 7))
    v, f = rng.integers(0, 4, 9), rng.integers(0, 3, 7)
    m = block_mix(d, v, f, 1.0)
    for i in range(9):
        for j in range(7):
            assert m[i, j] == pytest.approx(d[np.ix_(v == v[i], f == f[j])].mean())


def test_block_mix_errors():
    d = np.zeros((3, 2))
    for bad in (-0.1, 1.5, "x"):
        with pytest.raises(FvaError, match="weight"):
            block_mix(d, np.zeros(3), np.zeros(2), bad)
    with pytest.raises(FvaError, match="labels do not fit"):
        block_mix(d, np.zeros(2), np.zeros(2), 0.5)
    with pytest.raises(FvaError, match="labels do not fit"):
        block_mix(d, np.zeros(3), np.zeros(3), 0.5)
    with pytest.raises(FvaError, match="2-D"):
        block_mix(np.zeros(3), np.zeros(3), np.zeros(3), 0.5)


def test_centre():
    x = np.array([[1.0, 2.0], [3.0, 4.0]])
    np.testing.assert_allclose(centre(x), [[-1.0, -1.0], [1.0, 1.0]])
    np.testing.assert_allclose(centre(x, np.array([1.0, 0.0])), [[0.0, 2.0], [2.0, 4.0]])
    with pytest.raises(FvaError, match="mean must have shape"):
        centre(x, np.zeros(3))


# --- stress test: does clustering each modality and mixing block means beat pairwise scoring? ---

DIM, NOISE, WEIGHT = 16, 1.4, 0.5  # noise 1.4 on unit-variance latents: pairwise EER about 20-28 %


def person_file(rng: np.random.Generator, people: int, per: int):
    """A test file: ``per`` voices and ``per`` faces of each person, each = the person's latent + noise."""
    latent = rng.standard_normal((people, DIM))
    ids = np.repeat(np.arange(people), per)
    voices = latent[ids] + NOISE * rng.standard_normal((len(ids), DIM))
    faces = latent[ids] + NOISE * rng.standard_normal((len(ids), DIM))
    return voices, ids, faces, ids.copy()


def cosine_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return 1.0 - a @ b.T


def test_stress_clustered_beats_pairwise():
    train_v, train_vid, train_f, train_fid = person_file(np.random.default_rng(2024), people=20, per=8)
    tv, _ = fit_threshold(centre(train_v), train_vid)
    tf, _ = fit_threshold(centre(train_f), train_fid)
    rows = []
    for per in (1, 2, 4, 8, 16, 32):
        for people in (5, 10, 20, 30):
            v, vid, f, fid = person_file(np.random.default_rng([7, per, people]), people, per)
            v, f = centre(v), centre(f)
            d = cosine_distance(v, f)  # every voice x every face of the file
            y = (vid[:, None] == fid[None, :]).astype(int).ravel()
            mixed = block_mix(d, cluster_labels(v, tv), cluster_labels(f, tf), WEIGHT)
            rows.append({"samples": per, "people": people, "pairwise_eer": round(compute_eer(y, d.ravel()), 2),
                         "clustered_eer": round(compute_eer(y, mixed.ravel()), 2)})
    pairwise = float(np.mean([r["pairwise_eer"] for r in rows]))
    clustered = float(np.mean([r["clustered_eer"] for r in rows]))
    print(f"\nthresholds voice {tv} face {tf}, weight {WEIGHT}")
    print(f"{'samples':>8}{'people':>8}{'pairwise':>10}{'clustered':>11}")
    for r in rows:
        print(f"{r['samples']:>8}{r['people']:>8}{r['pairwise_eer']:>10.2f}{r['clustered_eer']:>11.2f}")
    print(f"{'mean':>16}{pairwise:>10.2f}{clustered:>11.2f}")
    if os.environ.get("FVA_STRESS_REPORT"):
        with open(os.environ["FVA_STRESS_REPORT"], "w") as fh:
            json.dump({"voice_threshold": tv, "face_threshold": tf, "weight": WEIGHT, "noise": NOISE,
                       "mean_pairwise_eer": pairwise, "mean_clustered_eer": clustered, "settings": rows}, fh, indent=1)
    assert 15.0 <= pairwise <= 35.0  # the generator is in the intended difficulty range
    assert clustered <= pairwise
