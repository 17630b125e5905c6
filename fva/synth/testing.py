"""Synthetic stage-1 data for tests and benchmarks: feature caches written exactly as ``fva extract`` lays them
out, without running an encoder.

* :func:`write_feature_cache`: the one builder of a synthetic cache (one encoder, any shards), used by the head
  tests, the FOP tests and ``bench/bench_heads.py``.
* :func:`synthetic_heads_cache`: the small MAV-Celeb-V3 cache root the head tests train on (train-full and
  test-full, four encoders, a FAME test list), whose features carry an identity signal shared by voices and
  faces through a hidden per-identity vector, so that training can beat chance; :func:`write_split` writes one
  subset of it (also VoxCeleb2-like subsets), :func:`naive_trial_features` rebuilds trial features from what
  was stored, with plain loops.
* :func:`official_state`, :func:`reference_forward`, :func:`write_official`: a random checkpoint in the
  official FOP layout and its forward pass written with raw tensor ops.
* :func:`tiny_experiment`: a small real experiment (demo media, demo encoder checkpoints, ``fva extract``,
  ``fva train-head``) in the README's layout, for the verifier API and the demo page.
* :func:`run_cli`: the ``fva`` command line in-process.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Iterable, Sequence

import numpy as np

from fva.data.records import Manifest, MediaRecord
from fva.layout import features_folder, write_manifest

AGE_GENDER_EXTRAS = ("age", "p_female")  # the per-row extras of the age-gender encoders


# ----------------------------------------------------------------------------------------------- the builder


def write_feature_cache(folder: Path, encoder: str, modality: str, dim: int,
                        shards: Sequence[Iterable[tuple[str, np.ndarray, np.ndarray, dict]]], *,
                        extras: tuple[str, ...] = (), dtype: str = "float16", weights: str | None = None,
                        weights_id: str | None = None, dataset: str | None = None, subset: str | None = None,
                        split: str | None = None, manifest: str | Path | None = None, config: dict | None = None,
                        part_rows: int | None = None) -> Path:
    """Write the cache of one encoder into ``folder/encoder`` with :class:`~fva.extract.cache.ShardWriter`
    (fsync off), one shard per item of ``shards``: each an iterable of ``(key, frames, embeddings, extras)``
    records, consumed lazily in order (so a generator may draw from a shared random generator as it goes).
    The keyword attributes are stored as ``fva extract`` stores them (None: not stored). ``part_rows`` rows
    per committed part; None: one part per shard, renamed into place (no merge copy). Returns the folder.
    """
    from fva.extract.cache import ShardWriter

    out = Path(folder) / encoder
    attrs = {"encoder": encoder, "modality": modality, "weights": weights, "weights_id": weights_id,
             "dataset": dataset, "subset": subset, "split": split,
             "manifest": None if manifest is None else str(manifest), "config": config}
    for s, records in enumerate(shards):
        writer = ShardWriter(out, s, len(shards), dim=dim, dtype=dtype, extras=extras, attrs=attrs,
                             part_rows=sys.maxsize if part_rows is None else part_rows, fsync=False)
        for key, frames, emb, ext in records:
            writer.add(key, frames, emb, ext)
        writer.finalize()
    return out


# ------------------------------------------------------------------------ the head tests' synthetic MAV-Celeb

DATASET = "mavceleb-v3"
LANGUAGES = ("English", "German")
IDENTITIES = [f"id{i:04d}" for i in range(1, 15)]  # 14 training identities
VOICE_ENCODERS = {"speaker-ecapa": 24, "voice-age-gender-ecapa": 8}
FACE_ENCODERS = {"vggface": 32, "vit-age-gender": 6}
AGE_GENDER = ("voice-age-gender-ecapa", "vit-age-gender")
TRACK_FRAMES = (0, 25, 50)
LATENT = 6
EPOCHS, PATIENCE, NUM_FOLDS = 6, 3, 3

CONFIG = {
    "seed": 0,
    "model": {"embedding_dim": 16},
    "data": {"num_folds": NUM_FOLDS},
    "train": {"epochs": EPOCHS, "patience": PATIENCE, "batch_size": 32, "lr": 0.03, "block_rows": 16,
              "buffer_blocks": 2},
}


def synthetic_media(rng, identities, latent, voice_map, face_map, languages, test: bool):
    """Records and per-record (frames, voice-or-face vector rows) for the given identities."""
    records: list[MediaRecord] = []
    rows: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    lang_shift = {lang: rng.normal(0, 0.3, size=LATENT) for lang in languages}

    def sample(identity, lang, modality, n):
        z = latent[identity] + lang_shift[lang]
        mapping = voice_map if modality == "voice" else face_map
        return z @ mapping + rng.normal(0, 0.6, size=(n, mapping.shape[1]))

    counters = {lang: 0 for lang in languages}
    for identity in identities:
        for lang in languages:
            if test:  # FAME test layout: <Lang>_test/{voices,faces}/<Lang>/NNNNN, no identity
                for modality, suffix, n_items in (("voice", ".wav", 2), ("face", ".jpg", 1)):
                    for _ in range(n_items):
                        key = f"{lang}_test/{modality}s/{lang}/{counters[lang]:05d}"
                        counters[lang] += 1
                        records.append(MediaRecord(key=key, identity=None, language=lang, modality=modality,
                                                   path=key + suffix, frame=0 if modality == "face" else None))
                        rows[key] = (np.array([0 if modality == "face" else -1]), sample(identity, lang, modality, 1))
                if identity == identities[0]:  # a face track: one key, three frames
                    key = f"{lang}_test/faces/{lang}/{counters[lang]:05d}"
                    counters[lang] += 1
                    records.append(MediaRecord(key=key, identity=None, language=lang, modality="face",
                                               path=key + ".mp4"))
                    rows[key] = (np.array(TRACK_FRAMES), sample(identity, lang, "face", len(TRACK_FRAMES)))
                continue
            for v in range(2):
                video = f"{lang[:2].lower()}{identity[-2:]}Vid{v}"
                for u in range(3):
                    key = f"voices/{identity}/{lang}/{video}/{u:05d}"
                    records.append(MediaRecord(key=key, identity=identity, language=lang, modality="voice",
                                               path=key + ".wav", video=video))
                    rows[key] = (np.array([-1]), sample(identity, lang, "voice", 1))
                for frame in (7, 32):
                    key = f"faces/{identity}/{lang}/{video}/{frame:09d}"
                    records.append(MediaRecord(key=key, identity=identity, language=lang, modality="face",
                                               path=key + ".jpg", video=video, frame=frame))
                    rows[key] = (np.array([frame]), sample(identity, lang, "face", 1))
            video = f"{lang[:2].lower()}{identity[-2:]}Trk"
            key = f"faces/{identity}/{lang}/{video}/00000"  # a face track (mp4): frames 0, 25, 50
            records.append(MediaRecord(key=key, identity=identity, language=lang, modality="face",
                                       path=key + ".mp4", video=video))
            rows[key] = (np.array(TRACK_FRAMES), sample(identity, lang, "face", len(TRACK_FRAMES)))
    return records, rows


def _encoded(records, rows, rng, start: int, dim: int, extras: tuple[str, ...], stored: dict,
             reverse_tracks: bool):
    """One encoder's ``(key, frames, float16 features, extras)`` per record: columns ``start:start+dim`` of its
    rows, random extras drawn as it goes; the frames of a track reversed when ``reverse_tracks``. Each record
    is also put into ``stored`` as key -> (frames, features)."""
    for record in records:
        frames, full = rows[record.key]
        emb = full[:, start:start + dim].astype(np.float16)
        if reverse_tracks and len(frames) > 1:
            frames, emb = frames[::-1], emb[::-1]
        ext = {"age": rng.uniform(20, 70, len(frames)), "p_female": rng.uniform(0, 1, len(frames))}
        stored[record.key] = (np.asarray(frames), emb)
        yield record.key, frames, emb, {k: ext[k] for k in extras}


def write_split(root: Path, subset: str, records, rows, rng, dataset: str = DATASET,
                split: str = "full") -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Write the four encoder caches and the manifest of one subset; returns encoder -> key -> (frames,
    float16 features) as stored."""
    folder = features_folder(root, dataset, subset, split)
    kept = write_manifest(root, Manifest(dataset=dataset, root=f"/data/{dataset}", subset=subset, split=split,
                                         records=records))
    stored: dict[str, dict] = {}
    for modality, encoders in (("voice", VOICE_ENCODERS), ("face", FACE_ENCODERS)):
        mine = [r for r in records if r.modality == modality]
        start = 0
        for e_index, (encoder, dim) in enumerate(encoders.items()):
            extras = AGE_GENDER_EXTRAS if encoder in AGE_GENDER else ()
            stored[encoder] = {}
            # the second encoder writes its rows in another order: the feature table must join on (key, frame)
            encoded = _encoded(mine if e_index == 0 else mine[::-1], rows, rng, start, dim, extras,
                               stored[encoder], reverse_tracks=e_index == 1)
            write_feature_cache(folder, encoder, modality, dim, [encoded], extras=extras,
                                weights=f"hub/{encoder}", weights_id=f"{encoder}@{e_index}abc", dataset=dataset,
                                subset=subset, split=split, manifest=kept,
                                config={"synthetic": True}, part_rows=50)
            start += dim
    return stored


def set_weights_id(folder: Path, weights_id: str) -> None:
    """Rewrite the weights identity every shard of one encoder's cache records (features "of other weights")."""
    import h5py

    for path in sorted(Path(folder).glob("shard-*.h5")):
        with h5py.File(path, "r+") as fh:
            fh.attrs["weights_id"] = weights_id


def synthetic_heads_cache(base: Path) -> SimpleNamespace:
    """Under ``base``: the synthetic cache root (``cache/``) with train-full and test-full, a FAME test list
    (``test_list.txt``) and the training config (``config.yaml``); returned with the stored features."""
    import yaml

    from fva.data.trials import Trial, write_trials

    root = base / "cache"
    rng = np.random.default_rng(1234)
    voice_map = rng.normal(size=(LATENT, sum(VOICE_ENCODERS.values())))
    face_map = rng.normal(size=(LATENT, sum(FACE_ENCODERS.values())))
    test_ids = [f"t{i}" for i in range(4)]
    latent = {i: rng.normal(size=LATENT) for i in IDENTITIES + test_ids}
    train_records, train_rows = synthetic_media(rng, IDENTITIES, latent, voice_map, face_map, LANGUAGES,
                                                test=False)
    test_records, test_rows = synthetic_media(rng, test_ids, latent, voice_map, face_map, LANGUAGES, test=True)
    stored = write_split(root, "train", train_records, train_rows, rng)
    test_stored = write_split(root, "test", test_records, test_rows, rng)
    for encoder, by_key in test_stored.items():
        stored[encoder].update(by_key)
    # FAME test list: every test voice against every test face of its language
    trials = []
    for lang in LANGUAGES:
        voices = [r for r in test_records if r.language == lang and r.modality == "voice"]
        faces = [r for r in test_records if r.language == lang and r.modality == "face"]
        trials += [Trial(f"{lang[:2].lower()}{len(trials) + i:05d}", v.path, f.path)
                   for i, (v, f) in enumerate((v, f) for v in voices for f in faces)]
    test_list = base / "test_list.txt"
    write_trials(test_list, trials)
    config = base / "config.yaml"
    config.write_text(yaml.safe_dump(CONFIG))
    return SimpleNamespace(base=base, root=root, train=features_folder(root, DATASET, "train"), stored=stored,
                           records=train_records, test_list=test_list, trials=trials, config=config,
                           maps=(voice_map, face_map))


def naive_vector(synth, modality: str, key: str) -> np.ndarray:
    """The concatenated stored float16 features of ``key``, averaged over its frames, joined by frame."""
    encoders = list(VOICE_ENCODERS if modality == "voice" else FACE_ENCODERS)
    frames0, _ = synth.stored[encoders[0]][key]
    per_frame = []
    for frame in frames0.tolist():
        parts = []
        for encoder in encoders:
            frames, emb = synth.stored[encoder][key]
            parts.append(emb[frames.tolist().index(frame)].astype(np.float64))
        per_frame.append(np.concatenate(parts))
    return np.mean(per_frame, axis=0)


def naive_trial_features(synth, trials) -> tuple[np.ndarray, np.ndarray]:
    from fva.data.mavceleb import media_key

    voice = np.stack([naive_vector(synth, "voice", media_key(t.voice)) for t in trials]).astype(np.float32)
    face = np.stack([naive_vector(synth, "face", media_key(t.face)) for t in trials]).astype(np.float32)
    return voice, face


# ------------------------------------------------------------------------------------- official FOP checkpoint

FOP_VOICE_IN, FOP_FACE_IN, FOP_DIM, FOP_GATE, FOP_CLASSES = 12, 20, 16, 8, 5


def official_state(seed: int = 0, voice_in: int = FOP_VOICE_IN, face_in: int = FOP_FACE_IN) -> dict:
    """A random state dict in the official gated-FOP layout, with non-trivial batch-norm statistics."""
    import torch

    from fva.heads.systems.fop_checkpoint import FOP_KEYS

    g = torch.Generator().manual_seed(seed)
    sd = {}

    def linear(prefix, d_out, d_in):
        sd[f"{prefix}.weight"] = torch.randn(d_out, d_in, generator=g) / d_in ** 0.5
        sd[f"{prefix}.bias"] = torch.randn(d_out, generator=g) * 0.1

    def batch_norm(prefix, d):
        sd[f"{prefix}.weight"] = torch.rand(d, generator=g) + 0.5
        sd[f"{prefix}.bias"] = torch.randn(d, generator=g) * 0.1
        sd[f"{prefix}.running_mean"] = torch.randn(d, generator=g) * 0.2
        sd[f"{prefix}.running_var"] = torch.rand(d, generator=g) + 0.5
        sd[f"{prefix}.num_batches_tracked"] = torch.tensor(321)

    for modality, d_in in (("voice", voice_in), ("face", face_in)):
        linear(f"{modality}_branch.fc1.0", FOP_DIM, d_in)
        batch_norm(f"{modality}_branch.fc1.1", FOP_DIM)
    linear("fusion_layer.attention.0.block.0", FOP_GATE, 2 * FOP_DIM)
    batch_norm("fusion_layer.attention.0.block.1", FOP_GATE)
    linear("fusion_layer.attention.1", FOP_DIM, FOP_GATE)
    linear("logits_layer", FOP_CLASSES, FOP_DIM)
    assert set(sd) == set(FOP_KEYS)
    return sd


def reference_forward(sd: dict, voice, face) -> dict:
    """The published architecture on the raw tensors (float64, eval mode: running statistics, no dropout)."""
    import torch
    import torch.nn.functional as F

    sd = {k: v.double() for k, v in sd.items()}

    def bn(x, p):
        return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], sd[f"{p}.weight"],
                            sd[f"{p}.bias"], training=False, eps=1e-5)

    def branch(m, x):
        h = torch.relu(bn(F.linear(x.double(), sd[f"{m}_branch.fc1.0.weight"], sd[f"{m}_branch.fc1.0.bias"]),
                          f"{m}_branch.fc1.1"))
        return h / h.norm(dim=1, keepdim=True)

    v, f = branch("voice", voice), branch("face", face)
    a = "fusion_layer.attention"
    hidden = torch.relu(bn(F.linear(torch.cat([f, v], 1), sd[f"{a}.0.block.0.weight"], sd[f"{a}.0.block.0.bias"]),
                           f"{a}.0.block.1"))
    gate = torch.sigmoid(F.linear(hidden, sd[f"{a}.1.weight"], sd[f"{a}.1.bias"]))
    fused = gate * torch.tanh(f) + (1 - gate) * torch.tanh(v)
    return {"voice": v, "face": f, "fused": fused,
            "logits": F.linear(fused, sd["logits_layer.weight"], sd["logits_layer.bias"]),
            "distance": (torch.tanh(f) - torch.tanh(v)).norm(dim=1)}


def write_official(path: Path, sd: dict, prefix: str = "") -> Path:
    """``sd`` saved as the official FOP code saves a checkpoint (keys under ``prefix``, e.g. ``module.``)."""
    import torch

    torch.save({"epoch": 3, "state_dict": {prefix + k: v for k, v in sd.items()}}, path)
    return path


# ---------------------------------------------------------------------------------------------------- the CLI


def run_cli(*args):
    """``fva ARGS...`` in this process (click's test runner), arguments as strings; the click result."""
    from click.testing import CliRunner

    from fva.cli import cli

    return CliRunner().invoke(cli, [str(a) for a in args])


# ------------------------------------------------------------------------------------- a tiny real experiment


def tiny_head_config(path: Path, epochs: int = 2) -> Path:
    """A head config for caches of speaker-ecapa and vit-age-gender only: 8-d embeddings, 2 folds, ``epochs``
    epochs (patience the same), batch 16; written to ``path``."""
    import yaml

    path.write_text(yaml.safe_dump({
        "model": {"embedding_dim": 8}, "data": {"num_folds": 2},
        "features": {"voice_encoders": ["speaker-ecapa"], "face_encoders": ["vit-age-gender"]},
        "train": {"epochs": epochs, "patience": epochs, "batch_size": 16}}))
    return path


def tiny_experiment(base: Path, folds: int = 1) -> SimpleNamespace:
    """Under ``base``, in the README's layout: the demo dataset ``data/demo`` (4 train and 2 test identities),
    demo checkpoints of speaker-ecapa and vit-age-gender (``ckpt/``), their train and test caches
    (``work/demo/cache``, extracted by ``fva extract``) and a head experiment ``work/demo/exp/english-unheard``
    trained on ``folds`` of its 2 folds (``fva train-head``): about ten seconds on a CPU."""
    from fva.synth.demo import generate_demo
    from fva.synth.checkpoints import write_demo_speaker_ecapa
    from fva.extract.encoders.vit_age_gender import demo_config, save_vit_age_gender

    base = Path(base)
    data, cache, exp = base / "data" / "demo", base / "work" / "demo" / "cache", base / "work" / "demo" / "exp"
    generate_demo(data, seed=3, train_identities=4, test_identities=2)
    weights = {"speaker-ecapa": write_demo_speaker_ecapa(base / "ckpt" / "speaker-ecapa", seed=0),
               "vit-age-gender": save_vit_age_gender(base / "ckpt" / "vit-age-gender", demo_config(), seed=3)}
    for subset in ("train", "test"):
        args = ["extract", "--dataset", DATASET, "--root", data, "--cache", cache, "--subset", subset,
                "--encoders", ",".join(weights), "--workers", 0, "--no-progress"]
        for name, path in weights.items():
            args += ["--weights", f"{name}={path}"]
        _checked(run_cli(*args))
    config = tiny_head_config(base / "work" / "demo" / "head.yaml")
    fold = "0" if folds == 1 else ",".join(str(f) for f in range(folds))
    _checked(run_cli("train-head", "--fold", fold, "--config", config, "--cache", cache,
                     "--split", "english-unheard", "--exp", exp / "english-unheard"))
    return SimpleNamespace(base=base, data=data, cache=cache, exp=exp / "english-unheard", weights=weights,
                           face=data / "German_test" / "face" / "German" / "00000.jpg",
                           voice=data / "German_test" / "voice" / "German" / "00000.wav")


def _checked(result):
    if result.exit_code != 0:
        raise RuntimeError(f"fva failed (exit {result.exit_code}): {result.output}") from result.exception
    return result
