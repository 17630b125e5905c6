"""Closed-form linear algebra the few-identity systems share (:mod:`fva.heads.systems.cca`,
:mod:`fva.heads.systems.contrastive`'s bridge): a reduction of training rows (standardise every feature, then
project onto principal axes) and regularised CCA between voice and face.

Ridge CCA, as participants of FLAG 2027 fitted it: with voice rows X (n_v, p) and face rows Y (n_f, q), both
centred, C_xx = X'X / n_v + reg I, C_yy = Y'Y / n_f + reg I, and the cross-covariance C_xy of same-identity
voice-face pairs; the canonical directions are W_x = C_xx^(-1/2) U_k, W_y = C_yy^(-1/2) V_k, where U S V' is
the SVD of C_xx^(-1/2) C_xy C_yy^(-1/2), and S holds the (regularised) canonical correlations. fva's voice and
face rows are not paired one to one, so C_xy is the expectation over pairing each voice row with a random face
row of its identity: sum_i (n_i / n) m_x,i m_y,i', with m_x,i and m_y,i identity i's mean voice and face rows
and n_i its voice rows (:func:`cross_moments`) -- exact, with no sampling, hence deterministic.
"""

from __future__ import annotations

import numpy as np
import torch

from fva.errors import FvaError

STD_FLOOR = 1e-6  # a feature whose training deviation is below this is divided by it instead (constant features)
# the randomised SVD of a reduction: directions drawn beyond the kept ones, and power iterations; one iteration
# with 32 extra directions finds the leading subspace of feature matrices whose spectrum decays (all real ones)
# in 4 passes over the rows instead of the 6 of two iterations
OVERSAMPLE, POWER_ITERATIONS = 32, 1


def read_rows(rows, positions: np.ndarray | None = None, chunk: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """float32 features and labels of a row source's ``positions`` (default: every row), read in chunks; every row
    of float32 rows held in memory is their own array (read only: do not change it)."""
    from fva.heads.features import InMemoryRows

    if positions is None and isinstance(rows, InMemoryRows) and rows.data.dtype == np.float32:
        return rows.data, rows.labels  # every row, already float32: no copy
    positions = np.arange(len(rows)) if positions is None else np.asarray(positions, dtype=np.int64)
    if not len(positions):
        raise FvaError("no training rows to fit on")
    parts = [rows.batch(positions[lo:lo + chunk]) for lo in range(0, len(positions), chunk)]
    return np.concatenate([p[0] for p in parts]).astype(np.float32, copy=False), np.concatenate([p[1] for p in parts])


def fit_reduction(x: np.ndarray, dims: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Mean and standard deviation of every feature of ``x`` (n, d), and the ``dims`` leading principal axes of
    the standardised rows as a (d, dims) matrix, or None when ``dims`` is 0 or at least d (no reduction).

    The axes come from :func:`torch.svd_lowrank` (:data:`POWER_ITERATIONS`, :data:`OVERSAMPLE`) seeded by ``seed``,
    each axis signed so that its largest entry is positive: the same rows and seed give the same axes. With
    fewer rows than ``dims`` the missing axes are zero columns.

    >>> mean, std, axes = fit_reduction(np.array([[0., 0.], [2., 0.], [4., 2.]]), 1)
    >>> mean.round(4).tolist(), axes.shape
    ([2.0, 0.6667], (2, 1))
    """
    x = np.asarray(x)
    if x.ndim != 2 or len(x) < 2:
        raise FvaError(f"a reduction needs at least 2 training rows, got an array of shape {x.shape}")
    rows = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    mean = rows.mean(dim=0)  # float32 throughout (torch sums pairwise): x itself is left as it is
    z = rows - mean
    std = z.square().mean(dim=0).sqrt()
    n, d = x.shape
    if dims <= 0 or dims >= d:
        return mean.double().numpy(), std.double().numpy(), None
    z *= (1.0 / std.clamp(min=STD_FLOOR)).to(torch.float32)
    q = min(dims + OVERSAMPLE, n, d)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        _, _, v = torch.svd_lowrank(z, q=q, niter=POWER_ITERATIONS)
    axes = v[:, :dims].double().numpy()
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    if axes.shape[1] < dims:
        axes = np.pad(axes, ((0, 0), (0, dims - axes.shape[1])))
    return mean.double().numpy(), std.double().numpy(), axes


def cross_moments(xv: np.ndarray, yv: np.ndarray, xf: np.ndarray, yf: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """C_xx, C_yy (each modality's covariance, rows assumed centred) and C_xy (the expected cross-covariance
    of a voice row and a random face row of its identity; identities with rows in only one modality add
    nothing to it) of voice rows ``xv`` labelled ``yv`` and face rows ``xf`` labelled ``yf``, float64."""
    cxx = (xv.T @ xv).astype(np.float64) / len(xv)
    cyy = (xf.T @ xf).astype(np.float64) / len(xf)
    both = np.intersect1d(yv, yf)
    if not len(both):
        raise FvaError("CCA needs identities with both voice and face training rows; these share none")
    means = []
    for x, y in ((xv, yv), (xf, yf)):
        keep = np.isin(y, both)
        index = np.searchsorted(both, y[keep])
        sums = np.zeros((len(both), x.shape[1]))
        np.add.at(sums, index, x[keep].astype(np.float64))
        counts = np.bincount(index, minlength=len(both)).astype(np.float64)
        means.append((sums / counts[:, None], counts))
    (mv, nv), (mf, _) = means
    cxy = (mv * (nv / nv.sum())[:, None]).T @ mf
    return cxx, cyy, cxy


def ridge_cca(cxx: np.ndarray, cyy: np.ndarray, cxy: np.ndarray, reg: float
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Canonical directions (W_x (p, m), W_y (q, m), m = min(p, q)), strongest first, and the canonical
    correlations, of ridge CCA with ``reg`` added to both covariances' diagonals (see the module docstring).

    >>> wx, wy, corr = ridge_cca(np.eye(2), np.eye(2), np.diag([0.5, 0.1]), 0.0)
    >>> corr.round(3).tolist()
    [0.5, 0.1]
    """
    if reg < 0:
        raise FvaError(f"CCA regularisation must be >= 0, got {reg}")

    def inverse_sqrt(c: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(c + reg * np.eye(len(c)))
        if w.min() <= 1e-12 * max(1.0, float(w.max())):
            raise FvaError("CCA: a covariance is singular; give a regularisation above 0 (model.params.reg)")
        return (v / np.sqrt(w)) @ v.T

    kx, ky = inverse_sqrt(cxx), inverse_sqrt(cyy)
    u, s, vt = np.linalg.svd(kx @ cxy @ ky, full_matrices=False)
    return kx @ u, ky @ vt.T, s


FIT_ROWS = 65536  # rows a reduction is fitted on at most (a seeded sample of whole blocks beyond that)


def fit_sample(rows, seed: list[int], max_rows: int = FIT_ROWS) -> np.ndarray:
    """float32 features of the rows a reduction is fitted on: every row of ``rows`` up to ``max_rows``, else a
    seeded sample of whole blocks of that size (as :func:`fva.heads.features.row_statistics` samples)."""
    from fva.heads.features import epoch_order

    n = len(rows)
    if n == 0:
        raise FvaError("no training rows to fit on")
    if n <= max_rows:
        return read_rows(rows)[0]
    return read_rows(rows, np.sort(epoch_order(n, seed=seed, epoch=0, block_rows=4096, rows=max_rows)))[0]
