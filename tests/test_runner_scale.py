"""Extraction at scale: each torchrun rank on its own device with disjoint shards, one decode per medium for
all encoders of a modality (rows identical to one encoder at a time, resumable per encoder), precision."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from fva.cli import cli
from fva.data.records import Manifest, MediaRecord
from fva.extract import runner
from fva.extract.cache import open_cache
from fva.extract.encoders.base import get_encoder_class
from fva.extract.runner import default_device, default_workers, run_extraction, run_extraction_many

REPO = Path(__file__).resolve().parents[1]
SMALL_ECAPA = (32, 32, 32, 32, 96)


@pytest.fixture(autouse=True)
def models_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FVA_MODELS", str(tmp_path_factory.getbasetemp() / "fva-models"))


@pytest.fixture(scope="module")
def voices(tmp_path_factory) -> tuple[Manifest, dict[str, Path]]:
    """Nine noise clips of different lengths (one too short for ECAPA, one empty file) and two small voice
    encoders in their real formats."""
    from fva.synth.checkpoints import write_demo_speaker_ecapa
    from fva.extract.encoders.voice_age_gender import init_voice_age_gender, save_voice_age_gender

    base = tmp_path_factory.mktemp("voices")
    (base / "data").mkdir()
    rng = np.random.default_rng(0)
    records = []
    for i, seconds in enumerate((1.0, 0.6, 1.4, 0.01, 0.8, 1.1, 0.5, 0.9, 0.0)):
        path = base / "data" / f"clip{i}.wav"
        if seconds:
            sf.write(path, (rng.standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32), 16000)
        else:
            path.write_bytes(b"")
        records.append(MediaRecord(key=f"clip{i}", identity=f"id{i % 3}", language="English", modality="voice",
                                   path=path.name))
    manifest = Manifest("scale-voices", str(base / "data"), "train", "full", records)
    vag = init_voice_age_gender(SMALL_ECAPA, 16, 8, seed=1)
    weights = {"speaker-ecapa": write_demo_speaker_ecapa(base / "ckpt" / "speaker", seed=0, channels=SMALL_ECAPA),
               "voice-age-gender-ecapa": save_voice_age_gender(base / "ckpt" / "vag", vag, channels=SMALL_ECAPA,
                                                               hidden=16, attention=8)}
    return manifest, weights


def build(weights: dict[str, Path], names=None) -> list:
    return [get_encoder_class(n)(str(weights[n]), device="cpu") for n in (names or weights)]


def contents(folder: Path) -> tuple[dict, dict, dict]:
    """(key, frame) -> row, (key, frame) -> extras, key -> failure reason of one cache folder."""
    with open_cache(folder) as cache:
        emb = cache.load()
        keys = list(zip(cache.keys.tolist(), cache.frames.tolist()))
        rows = {k: emb[i] for i, k in enumerate(keys)}
        extras = {k: {name: float(v[i]) for name, v in cache.extras.items()} for i, k in enumerate(keys)}
        return rows, extras, dict(cache.failures)


def assert_same_cache(a: Path, b: Path) -> None:
    ra, ea, fa = contents(a)
    rb, eb, fb = contents(b)
    assert sorted(ra) == sorted(rb) and fa == fb and ea == eb
    for key in ra:
        assert np.array_equal(ra[key], rb[key]), key  # same inputs, same batches: bit for bit


# ------------------------------------------------------------------------------------------------- devices


def test_device_rule(monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_device() == "cpu"
    monkeypatch.setenv("LOCAL_RANK", "3")
    assert default_device() == "cpu"  # no CUDA: the CPU, whatever the rank
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert default_device() == "cuda:3"
    assert default_device("cpu") == "cpu" and default_device("cuda:1") == "cuda:1"  # --device wins
    monkeypatch.delenv("LOCAL_RANK")
    assert default_device() == "cuda"


def test_encoder_training_takes_its_device_from_the_same_rule(monkeypatch):
    """fva/train/common.run_options has no rule of its own: it asks default_device."""
    from fva.train import common

    monkeypatch.setattr(runner, "default_device", lambda requested=None: requested or "meta:7")
    opts = common.TrainOptions(out="x", progress=False)
    assert common.run_options(opts, None)["device"] == "meta:7"
    opts.device = "cpu"
    assert common.run_options(opts, None)["device"] == "cpu"


def test_default_workers_from_cpus_shared_by_local_ranks(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert default_workers() == 8  # at most MAX_WORKERS
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert default_workers() == 3  # (32 - 1) // 8
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0})
    assert default_workers() == 0  # one CPU: decode in the process itself
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert default_workers() == 1


PROBE = '''
"""A torchrun rank: its device choice (with CUDA reported present, and as it is), then the real CLI."""
import json, os, sys
import torch
from fva.extract.runner import default_device
real = torch.cuda.is_available
torch.cuda.is_available = lambda: True
choice = {"rank": int(os.environ["RANK"]), "local_rank": int(os.environ["LOCAL_RANK"]),
          "world_size": int(os.environ["WORLD_SIZE"]), "with_cuda": default_device(),
          "with_cuda_and_device": default_device("cpu")}
torch.cuda.is_available = real
choice["as_is"] = default_device()
with open(os.path.join(sys.argv[1], f"rank{choice['rank']}.json"), "w") as fh:
    json.dump(choice, fh)
from fva.cli import cli
cli(sys.argv[2:], prog_name="fva")
'''


def test_torchrun_two_ranks_each_on_its_device_with_disjoint_shards(tmp_path, voices):
    manifest, weights = voices
    path = tmp_path / "m.jsonl"
    manifest.write(path)
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    out = tmp_path / "choices"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(probe),
           str(out), "extract", "--manifest", str(path), "--cache", str(tmp_path / "cache"),
           "--encoders", "speaker-ecapa", "--weights", f"speaker-ecapa={weights['speaker-ecapa']}",
           "--workers", "0", "--no-progress", "--dtype", "float32"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    choices = {c["rank"]: c for c in (json.loads(p.read_text()) for p in out.glob("rank*.json"))}
    assert sorted(choices) == [0, 1]
    for rank, c in choices.items():
        assert c["world_size"] == 2 and c["local_rank"] == rank
        assert c["with_cuda"] == f"cuda:{rank}" and c["with_cuda_and_device"] == "cpu"
        assert c["as_is"] == default_device()  # this machine's truth (cpu here), in the spawned rank too
    folder = tmp_path / "cache" / "scale-voices" / "train-full" / "speaker-ecapa"
    keys = []
    for index in (0, 1):
        with h5py.File(folder / f"shard-{index:05d}-of-00002.h5") as f:
            assert f.attrs["shard_index"] == index and f.attrs["num_shards"] == 2
            shard = [k.decode() for k in f["keys"][:]] + [k.decode() for k in f["failed/keys"][:]]
        assert len(shard) == len(set(shard)) and set(shard) == {r.key for r in manifest.records[index::2]}
        keys.append(set(shard))
    assert not keys[0] & keys[1]
    assert keys[0] | keys[1] == {r.key for r in manifest.records}


# --------------------------------------------------------------------------------- one decode, many encoders


def test_two_voice_encoders_in_one_pass_equal_one_at_a_time(tmp_path, voices, monkeypatch):
    manifest, weights = voices
    decoded = []
    real_load = runner.load_audio
    monkeypatch.setattr(runner, "load_audio", lambda path: decoded.append(Path(path).name) or real_load(path))
    options = dict(workers=0, progress=False, dtype="float32", batch_size=3)
    for encoder in build(weights):
        run_extraction(manifest, encoder, tmp_path / "alone", **options)
    assert len(decoded) == 2 * len(manifest.records)
    decoded.clear()
    summaries = run_extraction_many(manifest, build(weights), tmp_path / "together", **options)
    assert sorted(decoded) == sorted(r.path for r in manifest.records)  # each medium decoded once
    assert [(s.encoder, s.extracted, s.failed) for s in summaries] == [(n, 7, 2) for n in weights]
    for name in weights:
        folder = Path("scale-voices") / "train-full" / name
        assert_same_cache(tmp_path / "alone" / folder, tmp_path / "together" / folder)
    _, _, failures = contents(tmp_path / "together" / "scale-voices" / "train-full" / "speaker-ecapa")
    assert failures["clip8"] == "empty file" and failures["clip3"].startswith("too short")


def test_two_face_encoders_in_one_pass_equal_one_at_a_time(tmp_path):
    """vggface (full size) and vit-age-gender over jpgs and an mp4 face track: one decode, the same rows."""
    import av
    from PIL import Image

    from fva.synth.checkpoints import write_demo_vggface
    from fva.extract.encoders.vit_age_gender import demo_config, save_vit_age_gender

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(1)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (48, 40, 3), dtype=np.uint8)).save(data / f"face{i}.jpg")
    (data / "broken.jpg").write_text("not an image")
    with av.open(str(data / "track.mp4"), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(30):  # frames 0 and 25 are sampled
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    records = [MediaRecord(key=n, identity="x", language=None, modality="face", path=f"{n}.{e}")
               for n, e in (("face0", "jpg"), ("track", "mp4"), ("broken", "jpg"), ("face1", "jpg"))]
    manifest = Manifest("scale-faces", str(data), "train", "full", records)
    write_demo_vggface(tmp_path / "home")
    weights = {"vggface": tmp_path / "home", "vit-age-gender": save_vit_age_gender(tmp_path / "vit", demo_config())}
    options = dict(workers=0, progress=False, dtype="float32", batch_size=2)
    for encoder in build(weights):
        run_extraction(manifest, encoder, tmp_path / "alone", **options)
    summaries = run_extraction_many(manifest, build(weights), tmp_path / "together", **options)
    assert [(s.extracted, s.rows, s.failed) for s in summaries] == [(3, 4, 1), (3, 4, 1)]
    for name in weights:
        folder = Path("scale-faces") / "train-full" / name
        assert_same_cache(tmp_path / "alone" / folder, tmp_path / "together" / folder)
    rows, _, _ = contents(tmp_path / "together" / "scale-faces" / "train-full" / "vggface")
    assert sorted(rows) == [("face0", -1), ("face1", -1), ("track", 0), ("track", 25)]


class Interrupting:
    """An encoder that stops the run (as Ctrl-C would) at its first batch."""

    def __init__(self, encoder) -> None:
        self.encoder = encoder

    def __getattr__(self, name):
        return getattr(self.encoder, name)

    def encode(self, batch):
        raise KeyboardInterrupt


def test_interrupted_pass_resumes_per_encoder_and_ends_with_the_same_caches(tmp_path, voices, monkeypatch):
    manifest, weights = voices
    monkeypatch.setattr(runner, "WINDOW_BATCHES", 2)  # windows of two clips at batch 1
    options = dict(workers=0, progress=False, dtype="float32", batch_size=1)
    run_extraction_many(manifest, build(weights), tmp_path / "ref", **options)
    speaker, vag = build(weights)
    # the speaker encoder's first window (clip0, clip1) is encoded, then the age-gender encoder stops the run
    with pytest.raises(KeyboardInterrupt):
        run_extraction_many(manifest, [speaker, Interrupting(vag)], tmp_path / "cache", **options)
    folders = {n: tmp_path / "cache" / "scale-voices" / "train-full" / n for n in weights}
    assert _committed(folders["speaker-ecapa"]) == {"clip0", "clip1"}
    assert _committed(folders["voice-age-gender-ecapa"]) == set()
    summaries = run_extraction_many(manifest, build(weights), tmp_path / "cache", **options)
    assert [(s.encoder, s.skipped, s.extracted, s.failed) for s in summaries] == [
        ("speaker-ecapa", 2, 5, 2), ("voice-age-gender-ecapa", 0, 7, 2)]
    for name, folder in folders.items():
        assert_same_cache(tmp_path / "ref" / "scale-voices" / "train-full" / name, folder)
        assert not list(folder.glob("*.part-*"))


def _committed(folder: Path) -> set[str]:
    """Keys (rows and failures) in the committed part files of an unfinished shard."""
    assert not (folder / "shard-00000-of-00001.h5").exists()
    keys: set[str] = set()
    for part in folder.glob("*.part-*.h5"):
        with h5py.File(part) as f:
            assert f.attrs["precision"] == "fp32"
            keys |= {k.decode() for k in f["keys"][:]} | {k.decode() for k in f["failed/keys"][:]}
    return keys


# ------------------------------------------------------------------------------------------------- precision


def test_bf16_on_the_cpu_is_close_to_fp32_and_fp16_is_refused(tmp_path, voices):
    manifest, weights = voices
    one = {"speaker-ecapa": weights["speaker-ecapa"]}
    options = dict(workers=0, progress=False, dtype="float32", batch_size=4)
    run_extraction(manifest, build(one)[0], tmp_path / "fp32", **options)
    run_extraction(manifest, build(one)[0], tmp_path / "bf16", precision="bf16", **options)
    folder = Path("scale-voices") / "train-full" / "speaker-ecapa"
    full, _, _ = contents(tmp_path / "fp32" / folder)
    half, _, _ = contents(tmp_path / "bf16" / folder)
    assert sorted(full) == sorted(half)
    for key in full:  # bfloat16 keeps 8 significant bits: rows within 2 % (relative L2), not equal
        err = np.linalg.norm(half[key] - full[key]) / np.linalg.norm(full[key])
        assert 0 < err < 0.02, (key, err)
    with h5py.File(tmp_path / "bf16" / folder / "shard-00000-of-00001.h5") as f:
        assert f.attrs["precision"] == "bf16"

    def cli_args(cache: Path, precision: str) -> list[str]:
        path = tmp_path / "m.jsonl"
        manifest.write(path)
        return ["extract", "--manifest", str(path), "--cache", str(cache), "--encoders", "speaker-ecapa",
                "--weights", f"speaker-ecapa={weights['speaker-ecapa']}", "--workers", "0", "--no-progress",
                "--dtype", "float32", "--device", "cpu", "--precision", precision]

    refused = CliRunner().invoke(cli, cli_args(tmp_path / "x", "fp16"))
    lines = [line for line in refused.output.splitlines() if line.strip()]
    assert refused.exit_code == 2 and len(lines) == 1 and "fp16 needs a CUDA device" in lines[0], refused.output
    assert not (tmp_path / "x").exists()
    # a cache written at one precision is not resumed (nor completed) at another
    other = CliRunner().invoke(cli, cli_args(tmp_path / "fp32", "bf16"))
    lines = [line for line in other.output.splitlines() if line.strip()]
    assert other.exit_code == 2 and len(lines) == 1, other.output
    assert "precision='fp32'" in lines[0] and "precision='bf16'" in lines[0]


def test_one_encoder_dataset_still_gives_items_or_a_reason(voices):
    """DecodedRecords (the one-preprocess view fva lid uses) over the shared decoder."""
    from fva.extract.encoders.ecapa import AudioPreprocess
    from fva.extract.runner import DecodedRecords

    manifest, _ = voices
    root = Path(manifest.root)
    dataset = DecodedRecords(manifest.records, root, AudioPreprocess(), 1000)
    i, items, reason = dataset[0]
    assert i == 0 and reason is None and [f for f, _ in items] == [-1]
    np.testing.assert_array_equal(items[0][1], sf.read(root / "clip0.wav", dtype="float32")[0])
    assert dataset[3][1:] == ([], "too short: 0.01 s (160 samples at 16 kHz), the encoder needs at least 0.06 s "
                                  "(1000 samples)")
    assert dataset[8][1:] == ([], "empty file")
