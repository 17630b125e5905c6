"""Transductive scoring within one test file: cluster each modality, then smooth distances over cluster blocks.

A test file is a trial list; each trial pairs one voice with one face. The file's distinct voices and faces
are embedded in a shared space, and ``D`` (n_voices, n_faces) is their full distance matrix (lower = same
person). Several recordings of the same person usually appear in one file, so the method

1. :func:`centre` s each modality's embeddings (by the file's own mean, or a given one);
2. clusters each modality on its own (:func:`cluster_labels`: average-linkage agglomerative clustering under
   cosine distance, cut at a threshold fitted on training identities with :func:`fit_threshold`);
3. mixes every distance with the mean distance of its (voice cluster, face cluster) block
   (:func:`block_mix`), so that evidence from a person's other recordings sharpens each pair's score.

Pure numpy / scipy / scikit-learn; no torch. Inputs that cannot be scored raise :class:`fva.errors.FvaError`.

Determinism: scipy's ``linkage`` merges the closest pair first; when two candidate merges are exactly tied,
the one taken can depend on the row order. Without exact ties the partition does not depend on the order of
the rows (only the label numbering does), and callers pass rows in a canonical order (sorted by media key),
so the result is reproducible either way.
"""

from __future__ import annotations

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage

from fva.errors import FvaError

__all__ = ["cluster_labels", "fit_threshold", "block_mix", "centre", "DEFAULT_GRID"]

DEFAULT_GRID = np.round(np.arange(0.05, 1.5001, 0.05), 2)
"""Thresholds tried by :func:`fit_threshold`: 0.05 .. 1.50 in steps of 0.05 (cosine distance is in [0, 2])."""


def _matrix(x: np.ndarray, name: str = "x") -> np.ndarray:
    """``x`` as a finite 2-D float64 array, or FvaError."""
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise FvaError(f"{name} must be a 2-D array (rows, dims), got shape {a.shape}")
    if not np.isfinite(a).all():
        raise FvaError(f"{name} has NaN or infinite values; embeddings and distances must be finite")
    return a


def _first_appearance(raw: np.ndarray) -> np.ndarray:
    """Renumber labels 0..k-1 in order of first appearance.

    >>> _first_appearance(np.array([7, 3, 7, 5])).tolist()
    [0, 1, 0, 2]
    """
    _, first, inverse = np.unique(raw, return_index=True, return_inverse=True)
    rank = np.empty(len(first), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(first))
    return rank[inverse.ravel()]


class _Tree:
    """The average-linkage tree of the nonzero rows of ``x``; :meth:`cut` gives the flat labels at a threshold.

    Rows of zero norm have no cosine direction: each is its own cluster at every threshold.
    """

    def __init__(self, x: np.ndarray) -> None:
        self.n = len(x)
        self.nonzero = np.flatnonzero(np.linalg.norm(x, axis=1) > 0)
        self.z = linkage(x[self.nonzero], method="average", metric="cosine") if len(self.nonzero) >= 2 else None

    def cut(self, threshold: float) -> np.ndarray:
        raw = np.arange(self.n, dtype=np.int64) + self.n  # zero rows: distinct labels no cluster id can take
        if self.z is not None:
            raw[self.nonzero] = fcluster(self.z, t=threshold, criterion="distance")
        elif len(self.nonzero):
            raw[self.nonzero] = 0
        return _first_appearance(raw)


def cluster_labels(x: np.ndarray, threshold: float) -> np.ndarray:
    """Cluster the rows of ``x`` (n, d): average linkage under cosine distance, cut at ``threshold``.

    Two groups merge while the mean cosine distance between their members is at most ``threshold``. Labels
    are 0..k-1 in order of first appearance. A row of zero norm (no cosine direction) is its own cluster.

    >>> x = np.array([[1, 0], [0, 1], [1, .1], [0, 0], [.1, 1]])
    >>> cluster_labels(x, 0.1).tolist()
    [0, 1, 0, 2, 1]
    """
    a = _matrix(x)
    if not np.isfinite(threshold):
        raise FvaError(f"threshold must be a finite number, got {threshold!r}")
    return _Tree(a).cut(float(threshold))


def fit_threshold(x: np.ndarray, identities: np.ndarray, grid: np.ndarray | None = None) -> tuple[float, float]:
    """The grid threshold whose :func:`cluster_labels` best match ``identities``: ``(threshold, adjusted Rand)``.

    The linkage is computed once and cut at every grid value; ties go to the smallest threshold. ``grid``
    defaults to :data:`DEFAULT_GRID`.

    >>> x = np.array([[1, 0], [1, .1], [0, 1], [.1, 1]])
    >>> fit_threshold(x, np.array([0, 0, 1, 1]), np.array([0.001, 0.1, 1.5]))
    (0.1, 1.0)
    """
    from sklearn.metrics import adjusted_rand_score

    a = _matrix(x)
    ids = np.asarray(identities)
    if ids.ndim != 1 or len(ids) != len(a):
        raise FvaError(f"identities must be 1-D with one entry per row of x ({len(a)}), got shape {ids.shape}")
    if len(a) < 2 or len(np.unique(ids)) < 2:
        raise FvaError(f"fitting a threshold needs at least 2 rows and 2 identities, got {len(a)} row(s) "
                       f"and {len(np.unique(ids))} identit{'y' if len(np.unique(ids)) == 1 else 'ies'}")
    g = np.asarray(DEFAULT_GRID if grid is None else grid, dtype=np.float64)
    if g.ndim != 1 or len(g) == 0 or not np.isfinite(g).all():
        raise FvaError(f"grid must be a non-empty 1-D array of finite thresholds, got shape {g.shape}")
    tree = _Tree(a)
    best_t, best_ari = np.inf, -np.inf
    for t in np.sort(g):
        ari = float(adjusted_rand_score(ids, tree.cut(float(t))))
        if ari > best_ari:
            best_t, best_ari = float(t), ari
    return best_t, best_ari


def block_mix(d: np.ndarray, voice_labels: np.ndarray, face_labels: np.ndarray, weight: float) -> np.ndarray:
    """``(1 - weight) * d + weight * M``, where ``M[i, j]`` is the mean of ``d`` over the block of voices in
    voice ``i``'s cluster and faces in face ``j``'s cluster. Labels may be any integers (one per row / column).

    >>> d = np.array([[0., 1.], [2., 3.]])
    >>> block_mix(d, np.array([0, 0]), np.array([0, 1]), 1.0).tolist()
    [[1.0, 2.0], [1.0, 2.0]]
    """
    m = _matrix(d, "d")
    v, f = np.asarray(voice_labels), np.asarray(face_labels)
    if v.shape != (m.shape[0],) or f.shape != (m.shape[1],):
        raise FvaError(f"labels do not fit d {m.shape}: voice_labels {v.shape}, face_labels {f.shape}; give one "
                       "label per row and per column")
    try:
        w = float(weight)
    except (TypeError, ValueError):
        raise FvaError(f"weight must be a number in [0, 1], got {weight!r}") from None
    if not 0.0 <= w <= 1.0:
        raise FvaError(f"weight must be in [0, 1], got {weight!r}")
    if m.size == 0:
        return m.copy()
    _, vi, vn = np.unique(v, return_inverse=True, return_counts=True)
    _, fi, fn = np.unique(f, return_inverse=True, return_counts=True)
    vi, fi = vi.ravel(), fi.ravel()
    # block sums: sort columns by face cluster and sum runs, then the same over rows (O(nv * nf), no pair loop)
    fo, vo = np.argsort(fi, kind="stable"), np.argsort(vi, kind="stable")
    cols = np.add.reduceat(m[:, fo], np.r_[0, np.cumsum(fn)[:-1]], axis=1)
    sums = np.add.reduceat(cols[vo], np.r_[0, np.cumsum(vn)[:-1]], axis=0)
    means = sums / np.outer(vn, fn)
    return (1.0 - w) * m + w * means[vi][:, fi]


def centre(x: np.ndarray, mean: np.ndarray | None = None) -> np.ndarray:
    """``x`` minus ``mean`` (default: the mean of ``x``'s rows).

    >>> centre(np.array([[1., 2.], [3., 6.]])).tolist()
    [[-1.0, -2.0], [1.0, 2.0]]
    """
    a = _matrix(x)
    if mean is None:
        return a - a.mean(axis=0) if len(a) else a.copy()
    mu = np.asarray(mean, dtype=np.float64)
    if mu.shape != (a.shape[1],):
        raise FvaError(f"mean must have shape ({a.shape[1]},) to centre x {a.shape}, got {mu.shape}")
    return a - mu
