"""Time of transductive scoring (level 2) of one test file through fva's own scorer. Target: under 2 s.

The file: 30 people, 150 distinct voices and 150 distinct faces (5 of each per person), 1,500 random
voice-face trials, with the organisers' feature widths (voice 192-d, face 4096-d: a person's latent through a
random map, plus noise). The timed step is :meth:`fva.heads.trialset.TrialSet.distances` of a bridge head (the
shipped ``bridge`` system, untrained: its arithmetic is the same) under the shipped ``bridge-transductive``
scoring: embeddings centred on the file's mean, each modality's media clustered on their features (average
linkage, cosine), the full voice x face distance matrix, block mixing (weight 0.99), the trials' scores picked
out of it; the plain pairwise scoring of the same file is timed beside it. Median of ``--repeats`` runs
(default 5); a larger file (1,000 voices x 1,000 faces, 10,000 trials) too. Prints the figures and writes
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
VOICE_DIM, FACE_DIM, LATENT = 192, 4096, 32


def synthetic_file(rng: np.random.Generator, people: int, per: int, trials: int):
    """A TrialSet of ``people`` x ``per`` voices and faces and ``trials`` random pairs of them."""
    from fva.data.trials import Trial
    from fva.heads.trialset import TrialSet

    latent = rng.standard_normal((people, LATENT))
    ids = np.repeat(np.arange(people), per)
    voices = (latent[ids] @ rng.standard_normal((LATENT, VOICE_DIM)) + rng.standard_normal((len(ids), VOICE_DIM)))
    faces = (latent[ids] @ rng.standard_normal((LATENT, FACE_DIM)) + rng.standard_normal((len(ids), FACE_DIM)))
    vi, fi = rng.integers(0, len(ids), trials), rng.integers(0, len(ids), trials)
    listed = [Trial(f"t{k:06d}", f"v/{a}.wav", f"f/{b}.jpg") for k, (a, b) in enumerate(zip(vi, fi))]
    return TrialSet(listed, voices.astype(np.float32), faces.astype(np.float32), vi, fi, {}, {})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    repeats = 1 if args.quick else args.repeats
    import torch

    from fva.heads.compare import system_config
    from fva.heads.experiment import build_model
    from fva.heads.trialset import TrainStats

    cfg = system_config("bridge-transductive", None)
    torch.manual_seed(0)
    model = build_model(VOICE_DIM, FACE_DIM, 10, cfg.model).eval()
    stats = TrainStats(voice_threshold=0.7, face_threshold=0.75)  # the published fitted values
    rng = np.random.default_rng(0)
    rows = {}
    for name, (people, per, trials) in {"file_150x150_1500": (30, 5, 1500),
                                        "scale_1000x1000_10000": (200, 5, 10000)}.items():
        ts = synthetic_file(rng, people, per, trials)
        ts.distances(model, cfg.score, None, stats)  # warm-up
        seconds = median_seconds(lambda: ts.distances(model, cfg.score, None, stats), repeats)
        pairwise = median_seconds(lambda: ts.distances(model), repeats)
        rows[name] = {"voices": people * per, "faces": people * per, "trials": trials, "seconds": round(seconds, 4),
                      "pairwise_seconds": round(pairwise, 4)}
    print(f"bridge-transductive scoring (level {cfg.score.level}), median of {repeats} run(s); target < {TARGET_S} s")
    print(f"{'file':<24}{'voices':>8}{'faces':>8}{'trials':>8}{'seconds':>10}{'pairwise s':>12}")
    for name, r in rows.items():
        print(f"{name:<24}{r['voices']:>8}{r['faces']:>8}{r['trials']:>8}{r['seconds']:>10.4f}"
              f"{r['pairwise_seconds']:>12.4f}")
    main_s = rows["file_150x150_1500"]["seconds"]
    print(f"{'meets target' if main_s < TARGET_S else 'MISSES target'}: {main_s:.4f} s < {TARGET_S} s")
    if not args.quick:
        print(write_results("transductive", {"target_seconds": TARGET_S, "repeats": repeats, "files": rows}))


if __name__ == "__main__":
    main()
