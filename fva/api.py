"""Python API: a trained experiment loaded once, verifying faces against voices from media files.

:class:`FaceVoiceVerifier` builds the experiment's encoders once (from the weights its training caches record,
checked against the ones it was trained on) and runs media through the extraction path's own decoding,
preprocessing, batching and cache dtype (:func:`fva.extract.runner.extract_records`), then through the
scoring path (:class:`fva.heads.trialset.TrialSet`, :class:`fva.heads.scoring.FoldModels`): a pair's distance
is the one ``fva score`` gives it from the caches ``fva extract`` writes. Example (the README's "Python API")::

    from fva.api import FaceVoiceVerifier

    verifier = FaceVoiceVerifier.from_experiment("work/demo/exp/english-unheard")
    result = verifier.verify("face.jpg", "voice.wav")
    result.distance, result.threshold, result.same_person, result.p_same
"""

from __future__ import annotations

import math
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from fva.data.records import MediaRecord
from fva.data.trials import Trial
from fva.errors import FvaError
from fva.experiment import ExperimentInfo
from fva.extract.cache import open_cache
from fva.extract.encoders.base import Encoder, get_encoder_class
from fva.heads.config import HeadConfig
from fva.heads.experiment import check_same_weights, read_experiment
from fva.heads.features import FeatureTable
from fva.heads.postprocess import PAIRWISE, check_level
from fva.heads.scoring import FoldModels
from fva.heads.trialset import Modalities, TrialSet, embed_rows, extras_for_keys, features_for_keys, open_features

MODALITIES = ("voice", "face")

__all__ = ["Embedding", "FaceVoiceVerifier", "MediaUnreadable", "Verification"]


class MediaUnreadable(FvaError):
    """A media file the encoders cannot use (missing, empty, truncated, not audio or an image, too short)."""


@dataclass(frozen=True)
class Verification:
    """The verdict on one face-voice pair."""

    distance: float  # mean over the fold models, as ``fva score`` gives it; lower = same person
    threshold: float | None  # the verifier's rule: by default the mean of the folds' dev-EER thresholds; None for
    # a model never scored on dev trials
    same_person: bool | None  # distance <= threshold; None without a threshold
    llr: float | None  # calibrated log-likelihood ratio (same vs different); None without a calibration
    p_same: float | None  # P(same person) at even prior odds, from ``llr``
    folds: int  # fold models averaged


@dataclass(frozen=True)
class Embedding:
    """One medium through the experiment: each fold head's representation and the encoders' features."""

    modality: str
    head: np.ndarray  # (folds, ...) each fold model's representation (fame2026: (folds, embedding_dim))
    features: np.ndarray  # (dim,) the encoders' features concatenated in the config's order, rounded to the
    #                       cache dtype as ``fva extract`` stores them, a face track's frames averaged
    extras: dict[str, float] = field(default_factory=dict)  # age, p_female where an encoder predicts them
    frames: int = 1  # rows behind ``features`` (a face track's frames)


class FaceVoiceVerifier:
    """An experiment's encoders and fold heads, loaded once: verify pairs and embed media from files."""

    def __init__(self, exp: Path, cfg: HeadConfig, info: ExperimentInfo, encoders: dict[str, Encoder],
                 dtypes: dict[str, str], folds: FoldModels, batch_size: int = 64, threshold: str = "eer") -> None:
        self.exp, self.cfg, self.info = Path(exp), cfg, info
        self.threshold_rule = threshold
        self.threshold = decision_threshold(self.exp, folds, threshold)
        self.encoders, self.dtypes, self.folds, self.batch_size = encoders, dtypes, folds, batch_size
        self.names = {"voice": list(cfg.features.voice_encoders), "face": list(cfg.features.face_encoders)}
        self._prototypes: dict[str, tuple[list[str], np.ndarray]] = {}
        self._lock = threading.Lock()  # the prototypes are computed once, also under a threaded server

    @classmethod
    def from_experiment(cls, path: str | Path, device: str = "cpu", weights: dict[str, str] | None = None,
                        batch_size: int = 64, threshold: str = "eer") -> "FaceVoiceVerifier":
        """Load ``path``'s config and fold models and build each encoder once, from the weights its training
        caches record (``weights`` overrides per encoder); weights other than those it was trained on are
        refused (one FvaError line naming both identities). ``threshold`` is the decision rule
        (:func:`decision_threshold`): ``eer`` (the dev EER point), ``far:0.01`` or ``prior:0.01``."""
        exp = Path(path)
        cfg, info = read_experiment(exp)
        # each pair is scored alone (a pair of media is no test file): steps that read other samples cannot run
        check_level(cfg.score.level, PAIRWISE, f"{exp} (verification scores each pair alone)")
        folds = FoldModels.load(exp)
        train_folder = Path(info.train_features)
        trained_on = info.weights_ids
        weights = weights or {}
        names = [*cfg.features.voice_encoders, *cfg.features.face_encoders]
        unused = sorted(set(weights) - set(names))
        if unused:
            raise FvaError(f"--weights {unused[0]}: {exp} uses no such encoder (it uses {', '.join(names)})")
        sources, dtypes = {}, {}
        for name in names:
            with open_cache(train_folder / name) as table:
                sources[name] = weights.get(name, table.attrs.get("weights"))
                cached, dtypes[name] = table.attrs.get("weights_id"), table.dtype
            if name not in weights:  # the cache's weights are the ones to rebuild the encoder from
                check_same_weights(trained_on, {name: cached}, str(train_folder / name), str(exp),
                                   "the cache was extracted again with other weights after training: "
                                   f"retrain, or pass --weights {name}=<the experiment's weights>")
            trained_on[name] = trained_on.get(name) or cached
        encoders = {}
        for name, source in sources.items():
            encoder = get_encoder_class(name)(source, device=device)
            expected = trained_on.get(name)
            if expected and encoder.weights_id != expected:
                raise FvaError(f"{name}: weights {source} ({encoder.weights_id}) are not the ones {exp} was "
                               f"trained on ({expected}); pass the same weights")
            encoders[name] = encoder
        return cls(exp, cfg, info, encoders, dtypes, folds, batch_size, threshold)

    # ------------------------------------------------------------------------------------------ verification

    def verify(self, face: str | Path, voice: str | Path) -> Verification:
        """Same person? One face image (or mp4 face track) and one voice clip."""
        return self.verify_batch([face], [voice])[0]

    def verify_batch(self, faces: Sequence[str | Path], voices: Sequence[str | Path]) -> list[Verification]:
        """Pair i is ``faces[i]`` with ``voices[i]``; the distinct media go through the encoders in batches."""
        if len(faces) != len(voices):
            raise FvaError(f"verify_batch: {len(faces)} faces and {len(voices)} voices; give one of each per pair")
        voice_keys, voice_table = self._encode("voice", voices)
        face_keys, face_table = self._encode("face", faces)
        return self._verify_tables(voice_keys, voice_table, face_keys, face_table)

    def verify_and_embed(self, face: str | Path, voice: str | Path) -> tuple[Verification, Embedding, Embedding]:
        """:meth:`verify` with the face's and the voice's :class:`Embedding`, each medium encoded once."""
        voice_keys, voice_table = self._encode("voice", [voice])
        face_keys, face_table = self._encode("face", [face])
        result = self._verify_tables(voice_keys, voice_table, face_keys, face_table)[0]
        return result, self._embeddings("face", face_keys, face_table)[0], self._embeddings("voice", voice_keys,
                                                                                             voice_table)[0]

    def _verify_tables(self, voice_keys: list[str], voice_table: FeatureTable, face_keys: list[str],
                       face_table: FeatureTable) -> list[Verification]:
        trials = [Trial(f"pair{i}", v, f) for i, (v, f) in enumerate(zip(voice_keys, face_keys))]
        if not trials:
            return []
        feats = Modalities(voice_table, face_table)
        per_fold = self.folds.distances(TrialSet.build(trials, feats, "the pairs"), self.cfg.score)
        return self._verdicts(per_fold)

    def _verdicts(self, per_fold: np.ndarray) -> list[Verification]:
        distances, threshold = per_fold.mean(axis=0), self.threshold
        llrs = self.folds.llrs(per_fold)
        out = []
        for i, d in enumerate(distances):
            llr = None if llrs is None else float(llrs[i])
            out.append(Verification(
                distance=float(d), threshold=threshold,
                same_person=None if threshold is None else bool(d <= threshold), llr=llr,
                p_same=None if llr is None else float(0.5 * (1.0 + math.tanh(llr / 2))),  # logistic, overflow-free
                folds=len(self.folds)))
        return out

    # --------------------------------------------------------------------------------------------- embedding

    def embed_face(self, path: str | Path) -> Embedding:
        """A face image's (or face track's) head representations and encoder features."""
        return self.embed("face", [path])[0]

    def embed_voice(self, path: str | Path) -> Embedding:
        """A voice clip's head representations and encoder features."""
        return self.embed("voice", [path])[0]

    def embed(self, modality: str, paths: Sequence[str | Path]) -> list[Embedding]:
        """:class:`Embedding` of each of ``paths`` (one modality), encoded in batches."""
        if modality not in MODALITIES:
            raise FvaError(f"modality {modality!r}: choose voice or face")
        return self._embeddings(modality, *self._encode(modality, paths))

    def _embeddings(self, modality: str, keys: list[str], table: FeatureTable) -> list[Embedding]:
        by_key = table.rows_by_key()
        features = features_for_keys(table, keys, by_key, f"the {modality} media")
        extras = extras_for_keys(table, keys, by_key)
        head = np.stack([embed_rows(model, modality, features).numpy() for model in self.folds.models], axis=1)
        return [Embedding(modality, head[i], features[i], {k: float(v[i]) for k, v in extras.items()},
                          len(by_key[k])) for i, k in enumerate(keys)]

    def nearest_identities(self, embedding: Embedding, k: int = 3) -> list[tuple[str, float]]:
        """The ``k`` training identities whose mean head embedding of the same modality is nearest by cosine
        (the mean over fold models of each fold's cosine), as (identity, cosine), nearest first."""
        identities, prototypes = self.prototypes(embedding.modality)
        head = np.asarray(embedding.head, dtype=np.float64)
        head = head / np.maximum(np.linalg.norm(head, axis=1, keepdims=True), 1e-12)
        cosine = np.einsum("fd,fnd->n", head, prototypes) / len(head)
        order = np.argsort(-cosine, kind="stable")[:k]
        return [(identities[i], float(cosine[i])) for i in order]

    def prototypes(self, modality: str) -> tuple[list[str], np.ndarray]:
        """Training identities (sorted) and per fold model their mean L2-normalised head embedding of this
        modality's training media, normalised: (folds, identities, dim); computed once."""
        with self._lock:
            if modality not in self._prototypes:
                self._prototypes[modality] = self._compute_prototypes(modality)
            return self._prototypes[modality]

    def _compute_prototypes(self, modality: str, chunk: int = 4096) -> tuple[list[str], np.ndarray]:
        from fva.layout import manifest_records

        folder = Path(self.info.train_features)
        records = manifest_records(folder)
        feats = open_features(self.cfg, folder)
        try:
            table = getattr(feats, modality)
            by_key = table.rows_by_key()
            keys = [key for key in by_key if records.get(key) is not None and records[key].identity]
            identities = sorted({records[key].identity for key in keys})
            column = {identity: i for i, identity in enumerate(identities)}
            labels = np.array([column[records[key].identity] for key in keys], dtype=np.int64)
            sums = None
            for lo in range(0, len(keys), chunk):
                x = features_for_keys(table, keys[lo:lo + chunk], by_key, f"{folder} ({modality})")
                emb = np.stack([embed_rows(model, modality, x).numpy() for model in self.folds.models])
                if emb.ndim != 3:
                    raise FvaError(f"the {self.folds.models[0].name} system has no embedding per medium; "
                                   "nearest identities need one")
                emb = emb / np.maximum(np.linalg.norm(emb, axis=2, keepdims=True), 1e-12)
                if sums is None:
                    sums = np.zeros((len(emb), len(identities), emb.shape[2]))
                for f in range(len(emb)):
                    np.add.at(sums[f], labels[lo:lo + chunk], emb[f])
        finally:
            feats.close()
        if sums is None:
            raise FvaError(f"{folder}: no {modality} training media with an identity to compare with")
        return identities, sums / np.maximum(np.linalg.norm(sums, axis=2, keepdims=True), 1e-12)

    # ----------------------------------------------------------------------------------------------- media

    def _encode(self, modality: str, paths: Sequence[str | Path]) -> tuple[list[str], FeatureTable]:
        """Each path's key and the joined features of the distinct media, through the extraction path: each
        encoder writes into memory (:class:`~fva.extract.cache.memory.MemoryWriter`) and stage 2's own
        :class:`~fva.heads.features.FeatureTable` joins the encoders' rows on (key, frame)."""
        from fva.extract.cache.memory import MemoryWriter
        from fva.extract.runner import extract_records

        distinct = list(dict.fromkeys(Path(p).resolve() for p in paths))
        key_of = {p: f"{modality}s/{i:05d}" for i, p in enumerate(distinct)}  # keys media_key maps to themselves
        records = [MediaRecord(key=key_of[p], identity=None, language=None, modality=modality, path=str(p))
                   for p in distinct]
        where = f"the {modality} media"
        tables = []
        for name in self.names[modality]:
            rows = MemoryWriter(self.dtypes[name])
            if records:
                extract_records(self.encoders[name], records, Path("/"), rows, batch_size=self.batch_size,
                                workers=0, progress=False)
            for p in distinct:
                if key_of[p] in rows.failures:
                    raise MediaUnreadable(f"{p}: {rows.failures[key_of[p]]}")
            tables.append(rows.table(name, modality, where))
        table = FeatureTable(where, self.names[modality], tables)
        encoded = set(table.keys.tolist())
        for p in distinct:
            if key_of[p] not in encoded:
                raise MediaUnreadable(f"{p}: no frame that every {modality} encoder could use")
        return [key_of[Path(p).resolve()] for p in paths], table


def decision_threshold(exp: Path, folds: FoldModels, rule: str = "eer") -> float | None:
    """The distance threshold of a decision rule: ``eer``, the mean of the folds' dev-EER thresholds (None for a
    model never scored on dev trials); ``far:<rate>``, the distance at which at most that share of the
    experiment's dev different-person trials is accepted; ``prior:<P(same)>``, the Bayes decision of that prior
    with equal costs on the experiment's calibration (fitted on all folds' heard dev trials)."""
    from fva.evaluate.calibration import experiment_calibration, parse_threshold

    kind, value = parse_threshold(rule)
    if kind == "eer":
        return folds.threshold()
    return float(experiment_calibration(exp).threshold_for(kind, value))


def describe_threshold(rule: str) -> str:
    """Words for a decision rule, for messages and the demo page.

    >>> describe_threshold("far:0.01")
    'at a dev false-accept rate of 0.01'
    """
    from fva.evaluate.calibration import parse_threshold

    kind, value = parse_threshold(rule)
    if kind == "eer":
        return "at the dev EER"
    return f"at a dev false-accept rate of {value:g}" if kind == "far" else f"the Bayes decision at P(same) {value:g}"


def verify_pair(exp: str | Path, face_path: str | Path, voice_path: str | Path, device: str = "cpu",
                weights: dict[str, str] | None = None, threshold: str = "eer") -> dict:
    """One face image (or face track) and one voice clip through :class:`fva.api.FaceVoiceVerifier`: distance
    (mean over folds, the one ``fva score`` gives the pair), threshold, decision, calibrated LLR and P(same)
    (None without a calibration) and the fold count, as a dict."""
    verifier = FaceVoiceVerifier.from_experiment(exp, device=device, weights=weights, threshold=threshold)
    return asdict(verifier.verify(face_path, voice_path))


