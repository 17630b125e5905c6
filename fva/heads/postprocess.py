"""Score post-processing over a trial set: S-norm, z-normalisation on training pairs, within-file clustering,
age-gender polarisation, chaining-cluster refinement, z-norm fusion; and the scoring levels they belong to.

All of them work on distances (lower = same person), one numpy array (or dict) per trial list, so they apply
to any system's scores:

- scoring levels (:data:`LEVELS`): 0 = each pair alone with training statistics, 1 = statistics of the test
  file, 2 = clusters of the test file's media, 3 = the trial list's pairing; ``--pairwise`` allows 0 only.
- :class:`ZnormConfig` (level 0): distances standardised with random training pairs' statistics.
- :class:`ClusterConfig` (level 2): within-file clustering of each modality and block-mean mixing.
- :func:`snorm` (symmetric score normalisation, plain or adaptive, as speaker-verification toolkits do it):
  each trial's distance standardised by its voice's distances to a cohort of faces and by its face's
  distances to a cohort of voices (:func:`cohort_moments` gives those statistics).
- :func:`polarise` (FAME 2024, 3rd place): a trial whose voice and face agree in predicted age and gender
  gets a smaller distance, one that disagrees a larger one.
- :func:`refine` (FAME 2024, 2nd place, "chaining cluster"): gender and identity clusters of the trial
  set's own media pull likely same-person trials towards the lowest distance and push cross-gender trials
  to the highest. Level 3: the lowest and highest distance are those of the listed trials, so re-pairing
  the other trials of a file moves a trial's score.
- :func:`znorm_fusion`: the mean of several experiments' z-normalised scores of one trial list;
  :func:`weighted_znorm_fusion` their weighted sum, with weights from :func:`fit_fusion_weights` (logistic
  regression on dev trials).

The config dataclasses hold scalars only (the head config's parser coerces by the default's type).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np

from fva.errors import FvaError

__all__ = ["LEVELS", "PAIRWISE", "check_level", "ZnormConfig", "ClusterConfig", "cluster_space", "SnormConfig", "cohort_moments", "snorm", "PolariseConfig", "RefineConfig", "MediaClusters", "polarise",
           "match_confidence", "elbow", "cluster_media", "refine", "znorm_fusion", "znorm_matrix",
           "weighted_znorm_fusion", "fit_fusion_weights"]


# --------------------------------------------------------------------------------------------------------
# Scoring levels: what a score may look at besides its own pair (DESIGN.md, "Scoring levels")
# --------------------------------------------------------------------------------------------------------

LEVELS = {0: "each pair alone, with training statistics only", 1: "statistics of the test file",
          2: "clusters of the test file's media", 3: "the trial list's pairing"}
PAIRWISE = 0  # --pairwise: the highest level allowed
ROUNDING = 1e-6  # distances this far below 0 count as 0 (polarise's reference)


def check_level(level: int, allowed: int, what: str) -> None:
    """One line when ``what`` scores at a level above ``allowed`` (``--pairwise``: 0)."""
    if level > allowed:
        raise FvaError(f"{what} scores at level {level} ({LEVELS[level]}), above the allowed level {allowed} "
                       f"({LEVELS[allowed]}){'; drop --pairwise or' if allowed == PAIRWISE else ';'} "
                       "use a system that does not read it")


# --------------------------------------------------------------------------------------------------------
# S-norm and adaptive S-norm
# --------------------------------------------------------------------------------------------------------

@dataclass
class SnormConfig:
    """Symmetric score normalisation against a cohort of the training identities (never the dev or test ones).

    ``adaptive_top_k``: 0 is plain S-norm (statistics over the whole cohort); k >= 2 is adaptive S-norm (over
    each medium's k closest cohort entries; a k at least the cohort's size is plain S-norm). ``cohort_size``: 0
    takes every training identity of the fold; n > 0 a sample of n of them, seeded by ``seed`` and the fold.
    """

    enabled: bool = False
    adaptive_top_k: int = 0
    cohort_size: int = 0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.adaptive_top_k < 0 or self.adaptive_top_k == 1:
            raise FvaError(f"score.snorm.adaptive_top_k must be 0 (plain S-norm) or at least 2 (a deviation needs "
                           f"two distances), got {self.adaptive_top_k}")
        if self.cohort_size < 0 or self.cohort_size == 1:
            raise FvaError(f"score.snorm.cohort_size must be 0 (every training identity) or at least 2, "
                           f"got {self.cohort_size}")


def cohort_moments(cohort_distances: np.ndarray, top_k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per row (one medium's distances to every cohort entry): the mean and the population standard deviation
    of its distances, over all of them (``top_k`` 0) or over its ``top_k`` smallest (the closest entries).

    >>> cohort_moments(np.array([[0.2, 0.4, 0.9]]), top_k=2)
    (array([0.3]), array([0.1]))
    """
    d = np.asarray(cohort_distances, dtype=np.float64)
    if d.ndim != 2 or d.shape[1] < 2:
        raise FvaError(f"score.snorm: needs a cohort of at least 2 entries, got distances of shape {d.shape}")
    if 0 < top_k < d.shape[1]:
        d = np.partition(d, top_k - 1, axis=1)[:, :top_k]
    return d.mean(axis=1), d.std(axis=1)


def snorm(distances: np.ndarray, voice_mean: np.ndarray, voice_std: np.ndarray, face_mean: np.ndarray,
          face_std: np.ndarray) -> np.ndarray:
    """S-norm of distances: 0.5 ((d - mu_v) / sigma_v + (d - mu_f) / sigma_f) per trial, where mu_v, sigma_v
    are the :func:`cohort_moments` of the trial's voice against the face cohort and mu_f, sigma_f those of its
    face against the voice cohort (one value per trial each).

    Working on distances keeps lower = same person: with similarities s = -d (or 1 - d, any s = a - d) the
    result is exactly minus the usual S-norm of similarities, and the k closest entries of AS-norm are the k
    most similar ones.

    >>> snorm(np.array([0.5]), np.array([0.7]), np.array([0.1]), np.array([0.6]), np.array([0.2])).round(6)
    array([-1.25])
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (distances, voice_mean, voice_std, face_mean, face_std)]
    d = arrays[0]
    if d.ndim != 1 or any(a.shape != d.shape for a in arrays[1:]):
        raise FvaError(f"score.snorm: {d.shape} distances but cohort statistics of shapes "
                       f"{', '.join(str(a.shape) for a in arrays[1:])}; give one of each per trial")
    d, mu_v, sd_v, mu_f, sd_f = arrays
    for side, sd in (("voice", sd_v), ("face", sd_f)):
        if (sd <= 1e-12).any():
            raise FvaError(f"score.snorm: a {side}'s distances to the cohort are all equal (deviation 0); "
                           "use a larger cohort or adaptive_top_k")
    return 0.5 * ((d - mu_v) / sd_v + (d - mu_f) / sd_f)


# --------------------------------------------------------------------------------------------------------
# Pairwise-safe z-normalisation and transductive clustering (FLAG 2027 participants)
# --------------------------------------------------------------------------------------------------------

@dataclass
class ZnormConfig:
    """Every distance standardised by the mean and standard deviation of the system's distances of ``pairs``
    random TRAINING pairs (a voice row and a face row of the fold's training identities, drawn independently,
    seeded by ``seed`` and the fold), computed the same way (centring, S-norm) when the fold is trained and kept
    in its checkpoint: the same affine map for dev and test, whatever else the file holds (level 0). 20,000
    pairs as published (FourFusion_FLAG2027, INDEP-01)."""

    enabled: bool = False
    pairs: int = 20000
    seed: int = 0

    def __post_init__(self) -> None:
        if self.pairs < 2:
            raise FvaError(f"score.znorm.pairs must be at least 2, got {self.pairs}")


def published_grid() -> list:
    return [round(0.4 + 0.05 * i, 2) for i in range(17)]  # 0.40 .. 1.20, FourFusion_FLAG2027's search


@dataclass
class ClusterConfig:
    """Within-file clustering (level 2): each modality's media of the test file clustered on their encoder
    features (L2-normalised, centred on the file's mean, L2-normalised again; average linkage, cosine distance,
    :func:`fva.heads.transductive.cluster_labels`), then every distance mixed with its block's mean:
    d' = (1 - weight) d + weight * mean of d over the voice's cluster x the face's cluster (all media pairs of
    the two clusters, listed or not: :func:`fva.heads.transductive.block_mix`).

    Thresholds: a value > 0 is used as given; 0 fits it per fold on the TRAINING identities (at most
    ``fit_rows`` seeded rows per modality) by the adjusted Rand index over ``grid``. Published
    (FourFusion_FLAG2027, BEST/v6_eval): weight 0.99, grid 0.40-1.20, fitted thresholds face 0.75 / voice 0.70.
    """

    enabled: bool = False
    weight: float = 0.99
    voice_threshold: float = 0.0
    face_threshold: float = 0.0
    grid: list = field(default_factory=published_grid)
    fit_rows: int = 3000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.weight <= 1.0:
            raise FvaError(f"score.cluster.weight must be in [0, 1], got {self.weight}")
        if self.voice_threshold < 0 or self.face_threshold < 0 or any(t <= 0 for t in self.grid):
            raise FvaError("score.cluster thresholds must be > 0 (0: fitted on the training identities)")
        if self.fit_rows < 4:
            raise FvaError(f"score.cluster.fit_rows must be at least 4, got {self.fit_rows}")


def cluster_space(x: np.ndarray) -> np.ndarray:
    """Rows as clustered: L2-normalised, centred on their own mean (:func:`fva.heads.transductive.centre`),
    L2-normalised again."""
    from fva.heads.transductive import centre

    return _unit(centre(_unit(np.asarray(x, dtype=np.float64))))


# --------------------------------------------------------------------------------------------------------
# Polarisation by age and gender
# --------------------------------------------------------------------------------------------------------

@dataclass
class PolariseConfig:
    """Age-gender polarisation. Defaults: with ages in decades and equal weights, C > 0.6 means
    C_a + C_g > 1.2: confident same-gender pairs (C_g ~ 0.9) are divided up to a ~23-year age gap,
    confident cross-gender pairs (C_g ~ 0.1) are always multiplied, and pairs of uncertain gender
    (C_g = 0.5) are divided only within ~4 years. With ages in years, C_a = 1 / (1 + |gap|) would be
    under 0.2 for any gap the encoders cannot resolve (their errors are several years), so age would
    only ever push towards "mismatch"."""

    enabled: bool = False
    age_weight: float = 0.5  # w_a
    gender_weight: float = 0.5  # w_g
    threshold: float = 0.6  # T: divide when C > T
    factor: float = 1.2  # distance / factor when matching, * factor otherwise
    age_unit: float = 10.0  # years per unit of the age gap in C_a (10: decades)


def match_confidence(voice_age: np.ndarray, voice_p_female: np.ndarray, face_age: np.ndarray,
                     face_p_female: np.ndarray, cfg: PolariseConfig) -> np.ndarray:
    """C = w_a / (1 + |age_v - age_f| / age_unit) + w_g (p_v p_f + (1 - p_v)(1 - p_f)), per trial.

    >>> cfg = PolariseConfig()
    >>> match_confidence(np.array([30.]), np.array([1.]), np.array([40.]), np.array([1.]), cfg)
    array([0.75])
    """
    arrays = [np.asarray(a, dtype=np.float64) for a in (voice_age, voice_p_female, face_age, face_p_female)]
    names = ("voice age", "voice P(female)", "face age", "face P(female)")
    for name, a in zip(names, arrays):
        if a.shape != arrays[0].shape or a.ndim != 1:
            raise FvaError(f"polarise: {name} has shape {a.shape}; give one value per trial "
                           f"(shape {arrays[0].shape})")
        if not np.isfinite(a).all():
            raise FvaError(f"polarise: {int((~np.isfinite(a)).sum())} {name} value(s) are NaN or infinite; "
                           "check the age-gender encoders' caches")
    age_v, p_v, age_f, p_f = arrays
    for name, p in (("voice P(female)", p_v), ("face P(female)", p_f)):
        if ((p < 0) | (p > 1)).any():
            raise FvaError(f"polarise: {name} outside [0, 1] (e.g. {p[(p < 0) | (p > 1)][0]:g}); "
                           "give probabilities")
    if cfg.age_unit <= 0:
        raise FvaError(f"polarise: age_unit must be positive, got {cfg.age_unit}")
    c_age = 1.0 / (1.0 + np.abs(age_v - age_f) / cfg.age_unit)
    c_gender = p_v * p_f + (1 - p_v) * (1 - p_f)
    return cfg.age_weight * c_age + cfg.gender_weight * c_gender


def polarise(distances: np.ndarray, voice_age: np.ndarray, voice_p_female: np.ndarray, face_age: np.ndarray,
             face_p_female: np.ndarray, cfg: PolariseConfig) -> np.ndarray:
    """Divide a trial's distance by ``cfg.factor`` when its age-gender match confidence C > T, else multiply.

    Scaling is about a reference r = min(0, min(distances)): d' = r + (d - r) / factor or r + (d - r) * factor.
    For non-negative distances (1 - cosine, Euclidean) r = 0 and this is the published d / 1.2, d * 1.2;
    when some distances are negative (e.g. fused z-scores) dividing them would raise them, so the set is
    shifted to start at 0 first, which keeps "divide" = "towards the smallest distance of the set"; that reads
    the listed trials, so after S-norm or z-norm polarisation is scoring level 3 (``ScoreConfig.steps``).

    >>> polarise(np.array([.5, .5]), np.array([30., 30.]), np.array([.9, .9]), np.array([35., 35.]),
    ...          np.array([.9, .1]), PolariseConfig()).round(4)
    array([0.4167, 0.6   ])
    """
    d = np.asarray(distances, dtype=np.float64)
    if d.ndim != 1 or not np.isfinite(d).all():
        raise FvaError(f"polarise: distances must be one finite value per trial, got shape {d.shape}")
    if len(voice_age) != len(d):
        raise FvaError(f"polarise: {len(d)} distances but {len(voice_age)} age-gender predictions")
    if cfg.factor <= 0:
        raise FvaError(f"polarise: factor must be positive, got {cfg.factor}")
    confidence = match_confidence(voice_age, voice_p_female, face_age, face_p_female, cfg)
    low = float(d.min()) if len(d) else 0.0
    ref = low if low < -ROUNDING else 0.0  # 1 - cosine can come out a rounding error below 0: still 0
    scale = np.where(confidence > cfg.threshold, 1.0 / cfg.factor, cfg.factor)
    return ref + (d - ref) * scale


# --------------------------------------------------------------------------------------------------------
# Chaining-cluster refinement
# --------------------------------------------------------------------------------------------------------

@dataclass
class RefineConfig:
    """Chaining-cluster refinement. Distances are cosine distances of L2-normalised embeddings.

    ``outlier_distance`` (T_m): a medium farther than this from its gender cluster's centre is set aside
    (0.7: cosine below 0.3, i.e. barely on its gender's side). ``similarity_threshold`` (T_alpha): voice and
    face identity prototypes more similar than this mark their trials as likely the same person (0.5);
    those distances move to B_l + (d - B_l) * ``alpha`` (0.5: halfway to the set's lowest distance).
    ``max_clusters``: the largest identity count tried per gender and modality (the elbow picks k in
    2..max_clusters); ``n_init``: k-means restarts, seeded by ``seed``. Tune the thresholds on dev trials.
    """

    enabled: bool = False
    outlier_distance: float = 0.7
    similarity_threshold: float = 0.5
    alpha: float = 0.5
    max_clusters: int = 20
    n_init: int = 4
    seed: int = 0


@dataclass
class MediaClusters:
    """Cluster assignments of a trial set's media (diagnostics; :func:`refine` acts on them).

    Face gender labels are renumbered so that face cluster g is matched with voice cluster g. Identity
    labels index the prototypes of their gender (``voice_prototypes[g][label]``); -1 for outliers.
    """

    voice_gender: np.ndarray  # (Nv,) 0/1
    face_gender: np.ndarray  # (Nf,) 0/1, matched to the voice numbering
    voice_outlier: np.ndarray  # (Nv,) bool
    face_outlier: np.ndarray  # (Nf,) bool
    voice_identity: np.ndarray  # (Nv,) int, -1 for outliers
    face_identity: np.ndarray  # (Nf,) int, -1 for outliers
    voice_prototypes: list[np.ndarray]  # per gender (k, d), L2-normalised means of the inliers
    face_prototypes: list[np.ndarray]
    gender_similarity: np.ndarray  # (2, 2) cosine of voice gender centre i, face centre j (numbering before matching)
    swapped: bool  # the face clusters were renumbered 1 - label to match the voices

    @property
    def voice_k(self) -> list[int]:
        return [len(p) for p in self.voice_prototypes]

    @property
    def face_k(self) -> list[int]:
        return [len(p) for p in self.face_prototypes]


def elbow(ks: np.ndarray, wcss: np.ndarray) -> int:
    """The k of the curve's elbow: the point farthest below the chord from its first to its last point.

    Both axes are scaled to [0, 1] first (k from the first to the last k, wcss from the last to the first
    value), so the chord is x + y = 1 and a point's distance below it is proportional to 1 - x - y. Ties
    and curves with no point below the chord (straight or concave: no elbow) give the smallest such k.

    >>> elbow(np.array([1, 2, 3, 4, 5]), np.array([100., 50., 10., 8., 6.]))
    3
    """
    ks, wcss = np.asarray(ks), np.asarray(wcss, dtype=np.float64)
    if len(ks) < 3:
        return int(ks[-1])
    span = wcss[0] - wcss[-1]
    if span <= 0:
        return int(ks[0])
    x = (ks - ks[0]) / (ks[-1] - ks[0])
    y = (wcss - wcss[-1]) / span
    return int(ks[int(np.argmax(1.0 - x - y))])


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def _kmeans(x: np.ndarray, k: int, cfg: RefineConfig):
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # fewer distinct points than k: sklearn warns and still returns k labels
        warnings.simplefilter("ignore", ConvergenceWarning)
        return KMeans(n_clusters=k, n_init=cfg.n_init, random_state=cfg.seed).fit(x)


def _identity_clusters(x: np.ndarray, cfg: RefineConfig) -> tuple[np.ndarray, np.ndarray]:
    """Labels and L2-normalised prototypes of the identity clusters of one gender's inliers (unit rows).

    The within-cluster sum of squares is computed for k = 1..K, K = min(max_clusters, len(x)) (k = 1 anchors
    the curve), and the elbow k, at least 2 where K >= 2, is kept.
    """
    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros((0, x.shape[1]))
    top = min(cfg.max_clusters, n)
    fits = {k: _kmeans(x, k, cfg) for k in range(2, top + 1)}
    ks = np.arange(1, top + 1)
    wcss = np.array([((x - x.mean(axis=0)) ** 2).sum()] + [fits[k].inertia_ for k in ks[1:]])
    k = max(elbow(ks, wcss), 2) if top >= 2 else 1
    labels = fits[k].labels_.astype(np.int64) if k > 1 else np.zeros(n, dtype=np.int64)
    present = np.unique(labels)  # k-means can leave a cluster empty on duplicate points: renumber densely
    labels = np.searchsorted(present, labels)
    prototypes = _unit(np.stack([x[labels == c].mean(axis=0) for c in range(len(present))]))
    return labels, prototypes


def _gender_clusters(x: np.ndarray, cfg: RefineConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two k-means clusters of unit rows: labels, outlier flags (cosine distance to the centre > T_m) and
    the unit mean of each cluster's inliers (its k-means centre where it has none)."""
    fit = _kmeans(x, 2, cfg)
    labels = fit.labels_.astype(np.int64)
    centres = _unit(fit.cluster_centers_)
    outlier = 1.0 - np.einsum("nd,nd->n", x, centres[labels]) > cfg.outlier_distance
    means = np.stack([x[(labels == g) & ~outlier].mean(axis=0) if ((labels == g) & ~outlier).any() else centres[g]
                      for g in range(2)])
    return labels, outlier, _unit(means)


def cluster_media(voice_emb: np.ndarray, face_emb: np.ndarray, cfg: RefineConfig) -> MediaClusters:
    """Gender clusters (k-means, k = 2) per modality with outliers set aside, gender clusters matched across
    modalities, then identity clusters per gender (k-means, k by :func:`elbow`) and their prototypes.

    The face gender clusters are matched to the voice ones by the cosine of the clusters' inlier means: the
    pairing (0-0, 1-1) or (0-1, 1-0) with the larger total similarity. Deterministic for ``cfg.seed``.
    """
    v, f = _unit(np.asarray(voice_emb, dtype=np.float64)), _unit(np.asarray(face_emb, dtype=np.float64))
    if v.ndim != 2 or f.ndim != 2 or v.shape[1] != f.shape[1]:
        raise FvaError(f"refine: voice and face embeddings must be (N, d) in one space, got {v.shape} and {f.shape}")
    if len(v) < 2 or len(f) < 2:
        raise FvaError(f"refine: needs at least 2 voices and 2 faces to cluster, got {len(v)} and {len(f)}")
    if cfg.max_clusters < 1 or cfg.n_init < 1:
        raise FvaError(f"refine: max_clusters and n_init must be at least 1, got {cfg.max_clusters} and {cfg.n_init}")
    v_gender, v_out, v_means = _gender_clusters(v, cfg)
    f_gender, f_out, f_means = _gender_clusters(f, cfg)
    similarity = v_means @ f_means.T
    swapped = bool(similarity[0, 1] + similarity[1, 0] > similarity[0, 0] + similarity[1, 1])
    if swapped:
        f_gender = 1 - f_gender
    clusters = {}
    for name, x, gender, out in (("voice", v, v_gender, v_out), ("face", f, f_gender, f_out)):
        identity = np.full(len(x), -1, dtype=np.int64)
        prototypes = []
        for g in range(2):
            rows = np.flatnonzero((gender == g) & ~out)
            labels, protos = _identity_clusters(x[rows], cfg)
            identity[rows] = labels
            prototypes.append(protos)
        clusters[name] = (identity, prototypes)
    return MediaClusters(v_gender, f_gender, v_out, f_out, clusters["voice"][0], clusters["face"][0],
                         clusters["voice"][1], clusters["face"][1], similarity, swapped)


def refine(distances: np.ndarray, voice_emb: np.ndarray, face_emb: np.ndarray, voice_of: np.ndarray,
           face_of: np.ndarray, cfg: RefineConfig, clusters: MediaClusters | None = None) -> np.ndarray:
    """Chaining-cluster refinement of one trial set's distances.

    Trial t compares voice ``voice_emb[voice_of[t]]`` with face ``face_emb[face_of[t]]`` (the set's distinct
    media in the shared space). With B_l, B_u the set's lowest and highest distance and the clusters of
    :func:`cluster_media` (or ``clusters``, computed with the same embeddings):

    - a trial with an outlier voice or face keeps its distance;
    - voice and face in different (matched) gender clusters: B_u;
    - same gender, cosine of their identity prototypes > T_alpha: B_l + (d - B_l) * alpha;
    - otherwise unchanged.
    """
    d = np.asarray(distances, dtype=np.float64)
    voice_of, face_of = np.asarray(voice_of, dtype=np.int64), np.asarray(face_of, dtype=np.int64)
    if d.ndim != 1 or voice_of.shape != d.shape or face_of.shape != d.shape:
        raise FvaError(f"refine: {d.shape} distances, {voice_of.shape} voice rows and {face_of.shape} face rows; "
                       "give one of each per trial")
    if not len(d):
        return d.copy()
    for name, rows, n in (("voice", voice_of, len(voice_emb)), ("face", face_of, len(face_emb))):
        if rows.min() < 0 or rows.max() >= n:
            raise FvaError(f"refine: {name} row {rows.max() if rows.max() >= n else rows.min()} out of range "
                           f"for {n} {name} embeddings")
    c = clusters if clusters is not None else cluster_media(voice_emb, face_emb, cfg)
    low, high = float(d.min()), float(d.max())
    inlier = ~c.voice_outlier[voice_of] & ~c.face_outlier[face_of]
    vg, fg = c.voice_gender[voice_of], c.face_gender[face_of]
    similar = np.zeros(len(d), dtype=bool)
    for g in range(2):
        both = inlier & (vg == g) & (fg == g)
        if both.any():
            sims = c.voice_prototypes[g] @ c.face_prototypes[g].T
            similar[both] = sims[c.voice_identity[voice_of[both]], c.face_identity[face_of[both]]] \
                > cfg.similarity_threshold
    out = d.copy()
    out[inlier & (vg != fg)] = high
    out[similar] = low + (d[similar] - low) * cfg.alpha
    return out


# --------------------------------------------------------------------------------------------------------
# Fusion
# --------------------------------------------------------------------------------------------------------

def znorm_matrix(score_dicts: list[dict[str, float]], names: list[str] | None = None) -> tuple[list[str], np.ndarray]:
    """The trial keys (the first source's order) and an (n_trials, n_sources) array of each source's scores
    z-normalised over the trial list (mean 0, std 1, population).

    Every source must score exactly the same trials; ``names`` (e.g. experiment folders) label the sources in
    error messages."""
    if not score_dicts:
        raise FvaError("score fusion: no sources given; name at least one experiment")
    names = list(names) if names is not None else [f"source {i}" for i in range(1, len(score_dicts) + 1)]
    if len(names) != len(score_dicts):
        raise FvaError(f"score fusion: {len(score_dicts)} sources but {len(names)} names")
    keys = list(score_dicts[0])
    if not keys:
        raise FvaError(f"score fusion: {names[0]} has no scores")
    reference = set(keys)
    for name, scores in zip(names[1:], score_dicts[1:]):
        missing = next((k for k in keys if k not in scores), None)
        if missing is not None:
            raise FvaError(f"score fusion: {name} has no score for trial {missing!r}; "
                           "fused sources must score the same trials")
        extra = next((k for k in scores if k not in reference), None)
        if extra is not None:
            raise FvaError(f"score fusion: {names[0]} has no score for trial {extra!r}; "
                           "fused sources must score the same trials")
    z = np.zeros((len(keys), len(score_dicts)))
    for j, (name, scores) in enumerate(zip(names, score_dicts)):
        x = np.array([scores[k] for k in keys], dtype=np.float64)
        if not np.isfinite(x).all():
            raise FvaError(f"score fusion: {name} has NaN or infinite scores")
        std = x.std()
        if std <= 1e-12 * max(1.0, float(np.abs(x).max())):
            raise FvaError(f"score fusion: {name} gives every trial the same score ({x[0]:g}); "
                           "it cannot be z-normalised")
        z[:, j] = (x - x.mean()) / std
    return keys, z


def znorm_fusion(score_dicts: list[dict[str, float]], names: list[str] | None = None) -> dict[str, float]:
    """Mean over sources of each source's scores z-normalised over the trial list (:func:`znorm_matrix`).
    The result keeps the first source's key order.

    >>> znorm_fusion([{"a": 0., "b": 2.}, {"a": 10., "b": 30.}])
    {'a': -1.0, 'b': 1.0}
    """
    keys, z = znorm_matrix(score_dicts, names)
    return {k: float(v) for k, v in zip(keys, z.mean(axis=1))}


def weighted_znorm_fusion(score_dicts: list[dict[str, float]], weights, names: list[str] | None = None
                          ) -> dict[str, float]:
    """``sum_i weights[i] * z_i``: the weighted sum of the sources' z-normalised scores (:func:`znorm_matrix`).

    >>> weighted_znorm_fusion([{"a": 0., "b": 2.}, {"a": 10., "b": 30.}], [0.5, 2.0])
    {'a': -2.5, 'b': 2.5}
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.shape != (len(score_dicts),) or not np.isfinite(w).all():
        raise FvaError(f"score fusion: {len(score_dicts)} sources need {len(score_dicts)} finite weights, got "
                       f"{list(np.atleast_1d(weights))}")
    keys, z = znorm_matrix(score_dicts, names)
    return {k: float(v) for k, v in zip(keys, z @ w)}


def fit_fusion_weights(z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Fusion weights of z-normalised distances ``z`` (n_trials, n_sources) fitted by logistic regression on
    ``labels`` (1 same person, 0 not): minus the coefficients of scikit-learn's ``LogisticRegression()`` (its
    defaults: L2, C = 1, lbfgs) fitted to P(same | z), so that the fused score ``z @ weights`` is a distance
    (lower = same) and a useful source's weight is positive; the intercept moves no EER and is dropped."""
    from sklearn.linear_model import LogisticRegression

    z, y = np.asarray(z, np.float64), np.asarray(labels)
    if z.ndim != 2 or len(z) != len(y) or not len(y):
        raise FvaError(f"fusion weights: {z.shape} scores for {len(y)} labels")
    if len(set(y.tolist())) != 2:
        raise FvaError("fusion weights: the dev trials need both same-person and different-person trials")
    return -LogisticRegression().fit(z, y).coef_[0]
