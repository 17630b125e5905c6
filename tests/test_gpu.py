"""What only a CUDA machine can show (marked ``gpu``: ``pytest -m gpu`` runs them where CUDA is present; the
default pass and machines without CUDA skip them): encoders on ``cuda`` give the CPU's features, the batch goes
to the device through pinned memory without blocking, bf16/fp16 autocast stay within a stated tolerance of
fp32, and under torchrun every rank runs on ``cuda:LOCAL_RANK`` with its own shard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

REPO = Path(__file__).resolve().parents[1]
# autocast tolerance against fp32 (relative L2 distance of a row): bf16 keeps 8 bits of mantissa, fp16 11
AUTOCAST_TOLERANCE = {"bf16": 0.05, "fp16": 0.01}


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    """Voices of several lengths, face images, demo checkpoints of a voice and a face encoder, a manifest."""
    import soundfile as sf
    from PIL import Image

    from fva.data.records import Manifest, MediaRecord
    from fva.synth.checkpoints import write_demo_checkpoints

    base = tmp_path_factory.mktemp("gpu")
    rng = np.random.default_rng(0)
    records = []
    for i in range(8):
        t = np.arange(int(16000 * (0.8 + 0.3 * i))) / 16000
        sf.write(base / f"v{i}.wav", (0.3 * np.sin(2 * np.pi * (110 + 20 * i) * t)
                                      + 0.05 * rng.standard_normal(len(t))).astype(np.float32), 16000)
        Image.fromarray(rng.integers(0, 256, (120 + 10 * i, 100, 3), dtype=np.uint8)).save(base / f"f{i}.jpg")
        records += [MediaRecord(key=f"v{i}", identity=f"id{i % 4}", language="English", modality="voice",
                                path=f"v{i}.wav"),
                    MediaRecord(key=f"f{i}", identity=f"id{i % 4}", language="English", modality="face",
                                path=f"f{i}.jpg")]
    manifest = base / "m.jsonl"
    Manifest("gpu-check", str(base), "train", "full", records).write(manifest)
    weights = write_demo_checkpoints(base / "ck", names=("speaker-ecapa", "vggface-keras"))
    return base, manifest, weights


def extract(media, cache: Path, *extra) -> dict[str, dict[str, np.ndarray]]:
    from fva.extract.cache import open_cache
    from fva.synth.testing import run_cli

    base, manifest, weights = media
    result = run_cli("extract", "--manifest", manifest, "--cache", cache, "--encoders", "speaker-ecapa,vggface-keras",
                     *[a for n, p in weights.items() for a in ("--weights", f"{n}={p}")], "--dtype", "float32",
                     "--workers", "0", "--no-progress", *extra)
    assert result.exit_code == 0, result.output
    out = {}
    for name in weights:
        with open_cache(cache / "gpu-check" / "train-full" / name) as table:
            emb = table.load().astype(np.float32)
            out[name] = {k: emb[i] for i, k in enumerate(table.keys)}
    return out


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


def test_cuda_features_equal_the_cpus(media, tmp_path):
    cpu = extract(media, tmp_path / "cpu", "--device", "cpu")
    cuda = extract(media, tmp_path / "cuda", "--device", "cuda")
    for name in cpu:
        for key in cpu[name]:
            assert rel(cuda[name][key], cpu[name][key]) <= 1e-3, (name, key)  # TF32 / cuDNN algorithms aside


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_autocast_stays_within_its_tolerance_of_fp32(media, tmp_path, precision):
    full = extract(media, tmp_path / "fp32", "--device", "cuda")
    low = extract(media, tmp_path / precision, "--device", "cuda", "--precision", precision)
    worst = max(rel(low[n][k], full[n][k]) for n in full for k in full[n])
    assert worst <= AUTOCAST_TOLERANCE[precision], worst


def test_batches_reach_the_device_through_pinned_memory_without_blocking(monkeypatch):
    from fva.extract import runner

    seen = []
    original = torch.Tensor.to

    def spy(self, *args, **kwargs):
        seen.append((self.is_pinned(), kwargs.get("non_blocking", False)))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", spy)
    audio, lengths = torch.randn(2, 1600), torch.tensor([1600, 900])
    moved = runner._to_device((audio, lengths), torch.device("cuda"))
    assert moved[0].device.type == "cuda" and moved[1].device.type == "cpu"  # lengths stay where encoders read them
    assert seen == [(True, True)]
    torch.cuda.synchronize()
    assert torch.equal(moved[0].cpu(), audio)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_torchrun_ranks_each_on_cuda_local_rank(media, tmp_path):
    base, manifest, weights = media
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import json, os, sys\nimport torch\nfrom fva.extract.runner import default_device\n"
        "json.dump({'rank': int(os.environ['RANK']), 'device': default_device()},"
        " open(os.path.join(sys.argv[1], f\"rank{os.environ['RANK']}.json\"), 'w'))\n"
        "sys.argv = ['fva', *sys.argv[2:]]\nfrom fva.cli import main\nmain()\n")
    out = tmp_path / "ranks"
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(probe),
           str(out), "extract", "--manifest", str(manifest), "--cache", str(tmp_path / "cache"), "--encoders",
           "speaker-ecapa", "--weights", f"speaker-ecapa={weights['speaker-ecapa']}", "--workers", "0",
           "--no-progress"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    ranks = {c["rank"]: c["device"] for c in (json.loads(p.read_text()) for p in out.glob("rank*.json"))}
    assert ranks == {0: "cuda:0", 1: "cuda:1"}
    shards = sorted((tmp_path / "cache" / "gpu-check" / "train-full" / "speaker-ecapa").glob("shard-*.h5"))
    assert [p.name for p in shards] == ["shard-00000-of-00002.h5", "shard-00001-of-00002.h5"]
