"""Time of the transductive scoring step (fva.heads.transductive) on one synthetic test file. Target: under 2 s.

The file: 30 people, 150 distinct voices and 150 distinct faces (5 of each per person), 128-d embeddings
(a person's latent + noise), 1,500 random voice-face trials. The timed step is the whole transductive pass:
centre both modalities, cluster each at a given threshold, the full cosine distance matrix, ``block_mix``
(weight 0.5) and picking the trials' scores out of it. Median of ``--repeats`` runs (default 5); a larger file
(``--scale``: 1,000 voices x 1,000 faces, 10,000 trials) is timed too. Prints the figures and writes
bench/results/transductive.json (``--quick``: one run, nothing written). Not a test.

    .venv/bin/python bench/bench_transductive.py [--repeats 5] [--quick]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import median_seconds, write_results  # noqa: E402

TARGET_S = 2.0


def synthetic_file(rng: np.random.Generator, people: int, per: int, trials: int, dim: int = 128):
    latent = rng.standard_normal((people, dim))
    ids = np.repeat(np.arange(people), per)
    voices = latent[ids] + 1.0 * rng.standard_normal((len(ids), dim))
    faces = latent[ids] + 1.0 * rng.standard_normal((len(ids), dim))
    pairs = rng.integers(0, len(ids), (trials, 2))
    return voices, faces, pairs[:, 0], pairs[:, 1]


def transductive_scores(voices, faces, vi, fi, voice_t: float, face_t: float, weight: float = 0.5) -> np.ndarray:
    from fva.heads.transductive import block_mix, centre, cluster_labels

    v, f = centre(voices), centre(faces)
    vl, fl = cluster_labels(v, voice_t), cluster_labels(f, face_t)
    vn = v / np.linalg.norm(v, axis=1, keepdims=True)
    fn = f / np.linalg.norm(f, axis=1, keepdims=True)
    d = 1.0 - vn @ fn.T
    return block_mix(d, vl, fl, weight)[vi, fi]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats
    from fva.heads.transductive import centre, fit_threshold

    rng = np.random.default_rng(0)
    # thresholds fitted once on a training file of other people (not timed: done before scoring)
    tv, tvid = synthetic_file(rng, 30, 5, 0)[0], np.repeat(np.arange(30), 5)
    tf = synthetic_file(rng, 30, 5, 0)[1]
    voice_t, _ = fit_threshold(centre(tv), tvid)
    face_t, _ = fit_threshold(centre(tf), tvid)
    rows = {}
    for name, (people, per, trials) in {"file_150x150_1500": (30, 5, 1500),
                                        "scale_1000x1000_10000": (200, 5, 10000)}.items():
        data = synthetic_file(rng, people, per, trials)
        transductive_scores(*data, voice_t, face_t)  # warm-up
        seconds = median_seconds(lambda: transductive_scores(*data, voice_t, face_t), repeats)
        rows[name] = {"voices": people * per, "faces": people * per, "trials": trials, "dim": 128,
                      "seconds": round(seconds, 4)}
    print(f"thresholds voice {voice_t} face {face_t}; median of {repeats} run(s); target < {TARGET_S} s")
    print(f"{'file':<24}{'voices':>8}{'faces':>8}{'trials':>8}{'seconds':>10}")
    for name, r in rows.items():
        print(f"{name:<24}{r['voices']:>8}{r['faces']:>8}{r['trials']:>8}{r['seconds']:>10.4f}")
    main_s = rows["file_150x150_1500"]["seconds"]
    print(f"{'meets target' if main_s < TARGET_S else 'MISSES target'}: {main_s:.4f} s < {TARGET_S} s")
    if not args.quick:
        print(write_results("transductive", {"target_seconds": TARGET_S, "repeats": repeats,
                                             "voice_threshold": voice_t, "face_threshold": face_t, "files": rows}))


if __name__ == "__main__":
    main()
