"""`fva extract` end to end: the real speaker model on real speech, resume after SIGKILL, bad media, shards."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from click.testing import CliRunner

from fva.cli import cli
from fva.data.datasets import build_manifest
from fva.data.records import Manifest, MediaRecord
from fva.extract.cache import open_cache
from fva.extract.runner import shard_from_env

SHARED = Path(__file__).resolve().parents[2] / "shared"
REAL_MODEL = SHARED / "models" / "spkrec-ecapa-voxceleb"
SPEECH = SHARED / "samples" / "speech"


def need_shared() -> None:
    if not REAL_MODEL.is_dir() or not SPEECH.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"{SHARED} is missing: CI must run beside shared/ (real model and real speech)")
        pytest.skip(f"{SHARED} not present (the real speaker model and speech samples live there)")


@pytest.fixture(autouse=True)
def models_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FVA_MODELS", str(tmp_path_factory.getbasetemp() / "fva-models"))


def run(*args) -> object:
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def table(folder: Path) -> dict[tuple[str, int], np.ndarray]:
    with open_cache(folder) as cache:
        emb = cache.load()
        return {(k, int(f)): emb[i] for i, (k, f) in enumerate(zip(cache.keys, cache.frames))}


@pytest.fixture(scope="module")
def speech_manifest(tmp_path_factory) -> Path:
    records = [MediaRecord(key=p.stem, identity=p.stem.split("_")[0], language="English", modality="voice",
                           path=p.name) for p in sorted(SPEECH.glob("*.wav"))]
    path = tmp_path_factory.mktemp("speech") / "speech.jsonl"
    Manifest("speech-samples", str(SPEECH), "train", "full", records).write(path)
    return path


def test_real_speaker_model_separates_speakers_and_batching_changes_nothing(tmp_path, speech_manifest):
    need_shared()
    common = ["extract", "--manifest", speech_manifest, "--encoders", "speaker-ecapa", "--dtype", "float32",
              "--weights", f"speaker-ecapa={REAL_MODEL}", "--no-progress"]
    batched = run(*common, "--cache", tmp_path / "a", "--batch-size", "12", "--workers", "1")
    assert batched.exit_code == 0, batched.output
    assert "speaker-ecapa: extracted 12 (12 rows" in batched.output and "failed 0" in batched.output
    single = run(*common, "--cache", tmp_path / "b", "--batch-size", "1", "--workers", "0")
    assert single.exit_code == 0, single.output
    folder = Path("speech-samples") / "train-full" / "speaker-ecapa"
    a, b = table(tmp_path / "a" / folder), table(tmp_path / "b" / folder)
    assert sorted(a) == sorted(b) and len(a) == 12
    for key in a:
        assert a[key].shape == (6144,)
        assert np.linalg.norm(a[key] - b[key]) <= 1e-4 * np.linalg.norm(b[key])

    # the same clips through speechbrain's own one-clip encode_batch, pooled output taken off asp_bn
    from speechbrain.inference.speaker import EncoderClassifier

    save = tmp_path / "sb"
    save.mkdir()
    shutil.copyfile(REAL_MODEL / "label_encoder.ckpt", save / "label_encoder.txt")
    sb = EncoderClassifier.from_hparams(source=str(REAL_MODEL), savedir=str(save),
                                        overrides={"pretrained_path": str(REAL_MODEL)})
    pooled = {}
    sb.mods.embedding_model.asp_bn.register_forward_hook(lambda m, i, o: pooled.__setitem__("x", o))
    for (key, frame), vec in a.items():
        wav, _ = sf.read(SPEECH / f"{key}.wav", dtype="float32")
        sb.encode_batch(torch.from_numpy(wav)[None])
        ref = pooled["x"].squeeze().numpy()
        assert np.linalg.norm(vec - ref) <= 1e-4 * np.linalg.norm(ref), key

    keys = sorted(a)
    unit = {k: a[k] / np.linalg.norm(a[k]) for k in keys}
    same, diff = [], []
    for k1, k2 in itertools.combinations(keys, 2):
        (same if k1[0][:4] == k2[0][:4] else diff).append(float(unit[k1] @ unit[k2]))
    assert len(same) == 30 and len(diff) == 36
    assert min(same) > max(diff), (min(same), max(diff))

    valid = run("cache", "validate", tmp_path / "a" / folder, "--manifest", speech_manifest)
    assert valid.exit_code == 0, valid.output


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A small demo dataset and the two fast demo checkpoints (audio encoders)."""
    from fva.synth.demo import generate_demo
    from fva.synth.checkpoints import write_demo_speaker_ecapa
    from fva.extract.encoders.voice_age_gender import init_voice_age_gender, save_voice_age_gender

    base = tmp_path_factory.mktemp("demo")
    generate_demo(base / "data", seed=3, train_identities=4, test_identities=2)
    weights = {
        "speaker-ecapa": write_demo_speaker_ecapa(base / "ckpt" / "speaker-ecapa", seed=0),
        "voice-age-gender-ecapa": save_voice_age_gender(base / "ckpt" / "vag",
                                                        init_voice_age_gender((32, 32, 32, 32, 96), 16, 8, seed=1),
                                                        channels=(32, 32, 32, 32, 96), hidden=16, attention=8),
    }
    return base / "data", weights


def extract_args(root: Path, weights: dict[str, Path], cache: Path, *extra) -> list[str]:
    args = ["extract", "--dataset", "mavceleb-v3", "--root", str(root), "--cache", str(cache),
            "--encoders", ",".join(weights), "--no-progress", *extra]
    for name, path in weights.items():
        args += ["--weights", f"{name}={path}"]
    return args


def test_kill_at_any_point_then_resume_equals_uninterrupted(tmp_path, demo):
    root, weights = demo
    ref = run(*extract_args(root, weights, tmp_path / "ref", "--workers", "0"))
    assert ref.exit_code == 0, ref.output
    cache = tmp_path / "killed"
    args = extract_args(root, weights, cache, "--commit-rows", "8", "--batch-size", "4", "--workers", "1")
    cmd = [sys.executable, "-m", "fva.cli", *args]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    rng = np.random.default_rng(0)
    kills = 0
    for attempt in range(3):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        # wait until it has committed something (a part file or a finished shard), then kill at a random moment
        while time.time() < deadline and proc.poll() is None and not list(cache.rglob("shard-*.h5")):
            time.sleep(0.05)
        time.sleep(float(rng.uniform(0.0, 1.5)))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2, "extraction finished before it could be killed; make the run longer"
    final = run(*extract_args(root, weights, cache, "--workers", "1"))
    assert final.exit_code == 0, final.output
    for name in weights:
        folder = Path("mavceleb-v3") / "train-full" / name
        done, expected = table(cache / folder), table(tmp_path / "ref" / folder)
        assert sorted(done) == sorted(expected)
        for key in expected:  # float16 storage: equal within its precision
            np.testing.assert_allclose(done[key], expected[key], rtol=2e-3, atol=1e-3)
        leftovers = [p.name for p in (cache / folder).iterdir() if ".part-" in p.name or ".tmp" in p.name]
        assert leftovers == []
        manifest = cache / "mavceleb-v3" / "train-full" / "manifest.jsonl"
        assert run("cache", "validate", cache / folder, "--manifest", manifest).exit_code == 0


def test_a_cache_extracted_from_python_is_readable_by_stage_two(tmp_path, demo):
    """run_extraction keeps the manifest beside the caches itself: stage 2 needs no CLI in between."""
    from fva.extract.encoders.base import get_encoder_class
    from fva.extract.runner import run_extraction
    from fva.heads.features import FeatureTable
    from fva.layout import features_folder, manifest_path, manifest_records

    root, weights = demo
    manifest, _ = build_manifest("mavceleb-v3", root)
    encoder = get_encoder_class("speaker-ecapa")(str(weights["speaker-ecapa"]), device="cpu")
    summary = run_extraction(manifest, encoder, tmp_path / "cache", workers=0, progress=False)
    folder = features_folder(tmp_path / "cache", "mavceleb-v3", "train")
    assert manifest_records(folder) == {r.key: r for r in manifest.records}
    table = FeatureTable(folder, ["speaker-ecapa"])
    try:
        assert len(table) == summary.rows > 0
        assert table.tables[0].attrs["manifest"] == str(manifest_path(folder))
    finally:
        table.close()


def test_verify_runs_the_extraction_path_and_gives_the_distance_fva_score_gives(tmp_path, demo):
    """One pair through `fva verify` (encoders run on the media) and through `fva score` (rows read from the
    test caches that `fva extract` wrote, float16): the same distance."""
    from fva.data.mavceleb import media_key
    from fva.data.trials import read_trials
    from fva.extract.encoders.vit_age_gender import demo_config, save_vit_age_gender
    from fva.api import verify_pair
    from fva.heads.scoring import score_trial_list
    from fva.synth.testing import tiny_head_config

    root, weights = demo
    weights = {"speaker-ecapa": weights["speaker-ecapa"],
               "vit-age-gender": save_vit_age_gender(tmp_path / "vit", demo_config(), seed=3)}
    cache = tmp_path / "cache"
    for subset in ("train", "test"):
        r = run(*extract_args(root, weights, cache, "--subset", subset, "--workers", "0"))
        assert r.exit_code == 0, r.output
    config = tiny_head_config(tmp_path / "c.yaml")
    exp = tmp_path / "exp"
    r = run("train-head", "--fold", "0", "--config", config, "--cache", cache, "--exp", exp)
    assert r.exit_code == 0, r.output
    trials = sorted(root.glob("*_test.txt"))[0]
    trial = read_trials(trials)[0]
    on_disk = {r.key: root / r.path for r in build_manifest("mavceleb-v3", root, subset="test")[0].records}
    face, voice = on_disk[media_key(trial.face)], on_disk[media_key(trial.voice)]
    scored = score_trial_list(exp, trials, cache)[trial.key]
    verified = verify_pair(exp, face, voice)
    assert verified["folds"] == 1
    assert abs(verified["distance"] - scored) < 1e-6
    out = run("verify", "--exp", exp, face, voice, "--device", "cpu")
    assert out.exit_code == 0 and f"distance {scored:.4f}" in out.output, out.output


def test_bad_media_recorded_and_skipped(tmp_path, demo):
    root, weights = demo
    data = tmp_path / "data"
    shutil.copytree(root, data)
    voices = sorted((data / "voices").rglob("*.wav"))
    voices[0].write_bytes(b"")  # zero-byte
    raw = voices[1].read_bytes()
    voices[1].write_bytes(raw[: len(raw) // 2])  # truncated
    sf.write(voices[2], np.zeros(200, dtype=np.float32), 16000, subtype="PCM_16")  # shorter than the receptive field
    man, _ = build_manifest("mavceleb-v3", data)
    voices[3].unlink()  # vanished after the manifest was built
    manifest = tmp_path / "m.jsonl"
    man.write(manifest)
    def args(cache: Path) -> list[str]:
        return ["extract", "--manifest", str(manifest), "--cache", str(cache), "--encoders", "speaker-ecapa",
                "--weights", f"speaker-ecapa={weights['speaker-ecapa']}", "--no-progress", "--workers", "1"]

    result = run(*args(tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    assert "failed 4" in result.output
    folder = tmp_path / "cache" / "mavceleb-v3" / "train-full" / "speaker-ecapa"
    with open_cache(folder) as cache:
        reasons = dict(cache.failures)
        assert len(cache) == len(man.by_modality("voice")) - 4
    key = {v: man.records[[r.path for r in man.records].index(str(v.relative_to(data)))].key for v in voices[:4]}
    assert reasons[key[voices[0]]] == "empty file"
    assert reasons[key[voices[1]]].startswith("truncated audio")
    assert reasons[key[voices[2]]].startswith("too short")
    assert reasons[key[voices[3]]] == "file not found"
    # validate says what is missing and why; exit 1
    check = CliRunner().invoke(cli, ["cache", "validate", str(folder), "--manifest", str(manifest)])
    assert check.exit_code == 1 and "empty file" in check.output

    strict = CliRunner().invoke(cli, args(tmp_path / "strict") + ["--strict"])
    assert strict.exit_code == 2
    lines = [line for line in strict.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "empty file" in lines[0] and "--strict" in lines[0], strict.output


def test_face_failures_text_jpg_and_frameless_mp4(tmp_path):
    """A .jpg that is text and an mp4 without video frames are failures with reasons; good images go on."""
    from PIL import Image

    from fva.extract.encoders.vit_age_gender import save_vit_age_gender, tiny_config

    data = tmp_path / "data"
    (data / "faces").mkdir(parents=True)
    Image.new("RGB", (40, 40), (200, 120, 90)).save(data / "faces" / "good.jpg")
    (data / "faces" / "text.jpg").write_text("not an image")
    import av

    with av.open(str(data / "faces" / "audio_only.mp4"), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
        frame.sample_rate = 16000
        for packet in itertools.chain(stream.encode(frame), stream.encode(None)):
            container.mux(packet)
    records = [MediaRecord(key=f"faces/{n}", identity="x", language=None, modality="face", path=f"faces/{n}.{e}")
               for n, e in (("good", "jpg"), ("text", "jpg"), ("audio_only", "mp4"))]
    manifest = tmp_path / "faces.jsonl"
    Manifest("faces-demo", str(data), "train", "full", records).write(manifest)
    vit = save_vit_age_gender(tmp_path / "vit", tiny_config(), seed=0)
    result = run("extract", "--manifest", manifest, "--cache", tmp_path / "cache", "--encoders", "vit-age-gender",
                 "--weights", f"vit-age-gender={vit}", "--no-progress", "--workers", "0")
    assert result.exit_code == 0 and "extracted 1 " in result.output and "failed 2" in result.output
    with open_cache(tmp_path / "cache" / "faces-demo" / "train-full" / "vit-age-gender") as cache:
        reasons = dict(cache.failures)
        assert list(cache.keys) == ["faces/good"] and set(cache.extras) == {"age", "p_female"}
    assert reasons["faces/text"].startswith("not an image") and reasons["faces/audio_only"] == "no video frames"


def test_media_that_carries_no_identity_is_a_failed_item(tmp_path, demo):
    """Clips too short or silent (DC offset removed) and faces too small decode, but are recorded failures with
    their reasons; quiet real speech goes on; ``--strict`` stops at the first with that reason."""
    from PIL import Image

    from fva.extract.encoders.vit_age_gender import save_vit_age_gender, tiny_config

    root, weights = demo
    data = tmp_path / "data"
    data.mkdir()
    speech, _ = sf.read(sorted(root.rglob("*.wav"))[0], dtype="float64")
    quiet = speech - speech.mean()
    quiet *= 10 ** (-50 / 20) / np.sqrt(np.mean(quiet ** 2))  # real speech at -50 dBFS
    clips = {"short": np.zeros(800), "silent": np.zeros(48000), "offset": np.full(48000, 0.3), "quiet": quiet,
             "good": speech}
    for name, x in clips.items():
        sf.write(data / f"{name}.wav", x.astype(np.float32), 16000, subtype="PCM_16")
    rng = np.random.default_rng(0)
    for name, (h, w) in {"tiny": (10, 10), "strip": (12, 200), "face": (40, 40)}.items():
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(data / f"{name}.png")
    records = [MediaRecord(key=name, identity="x", language="English", modality="voice", path=f"{name}.wav")
               for name in clips]
    records += [MediaRecord(key=name, identity="x", language="English", modality="face", path=f"{name}.png")
                for name in ("tiny", "strip", "face")]
    manifest = tmp_path / "m.jsonl"
    Manifest("floors", str(data), "train", "full", records).write(manifest)
    vit = save_vit_age_gender(tmp_path / "vit", tiny_config(), seed=0)

    def args(cache: Path) -> list[str]:
        return ["extract", "--manifest", str(manifest), "--cache", str(cache), "--encoders",
                "speaker-ecapa,vit-age-gender", "--weights", f"speaker-ecapa={weights['speaker-ecapa']}",
                "--weights", f"vit-age-gender={vit}", "--no-progress", "--workers", "0"]

    result = run(*args(tmp_path / "cache"))
    assert result.exit_code == 0, result.output
    reasons = {}
    for name, kept in (("speaker-ecapa", ["good", "quiet"]), ("vit-age-gender", ["face"])):
        with open_cache(tmp_path / "cache" / "floors" / "train-full" / name) as cache:
            assert sorted(cache.keys) == kept
            reasons.update(cache.failures)
    assert reasons == {
        "short": "too short: 0.05 s (800 samples at 16 kHz), the encoder needs at least 0.50 s (8000 samples)",
        "silent": "silent: RMS -inf dBFS, below the -60 dBFS floor",
        "offset": "silent: RMS -inf dBFS, below the -60 dBFS floor",
        "tiny": "too small: 10 x 10 pixels, faces need at least 16 on each side",
        "strip": "too small: 200 x 12 pixels, faces need at least 16 on each side"}

    strict = CliRunner().invoke(cli, args(tmp_path / "strict") + ["--strict"])
    lines = [line for line in strict.output.splitlines() if line.strip()]
    assert strict.exit_code == 2 and len(lines) == 1, strict.output
    assert "short.wav: too short: 0.05 s" in lines[0] and "--strict" in lines[0]


def test_two_shards_write_disjoint_files_whose_union_is_the_whole(tmp_path, demo):
    root, weights = demo
    one = {"speaker-ecapa": weights["speaker-ecapa"]}
    for index in (0, 1):
        r = run(*extract_args(root, one, tmp_path / "sharded", "--num-shards", "2", "--shard-index", str(index),
                              "--workers", "0"))
        assert r.exit_code == 0, r.output
    assert run(*extract_args(root, one, tmp_path / "whole", "--workers", "0")).exit_code == 0
    folder = Path("mavceleb-v3") / "train-full" / "speaker-ecapa"
    names = sorted(p.name for p in (tmp_path / "sharded" / folder).glob("*.h5"))
    assert names == ["shard-00000-of-00002.h5", "shard-00001-of-00002.h5"]
    sharded, whole = table(tmp_path / "sharded" / folder), table(tmp_path / "whole" / folder)
    assert sorted(sharded) == sorted(whole)
    import h5py

    with h5py.File(tmp_path / "sharded" / folder / names[0]) as f0, h5py.File(tmp_path / "sharded" / folder / names[1]) as f1:
        k0 = {k.decode() if isinstance(k, bytes) else k for k in f0["keys"][:]}
        k1 = {k.decode() if isinstance(k, bytes) else k for k in f1["keys"][:]}
    assert k0 and k1 and not k0 & k1


def test_shard_from_torchrun_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("RANK", "5")
    assert shard_from_env(None, None) == (8, 5)
    assert shard_from_env(2, 1) == (2, 1)  # explicit options win
    monkeypatch.delenv("WORLD_SIZE")
    assert shard_from_env(None, None) == (1, 0)


def test_bad_shard_index_and_unknown_encoder_are_user_errors(tmp_path, demo):
    root, weights = demo
    r = CliRunner().invoke(cli, extract_args(root, weights, tmp_path / "c", "--num-shards", "2", "--shard-index", "2"))
    assert r.exit_code == 2 and "--shard-index 2 is outside 0..1" in r.output
    r = CliRunner().invoke(cli, ["extract", "--dataset", "mavceleb-v3", "--root", str(root), "--encoders", "wav2face"])
    assert r.exit_code == 2 and "unknown encoder 'wav2face'" in r.output


def test_full_size_voice_age_gender_has_1536_dims(tmp_path):
    from fva.extract.encoders.voice_age_gender import (VoiceAgeGenderEcapa, init_voice_age_gender,
                                                       save_voice_age_gender)

    folder = save_voice_age_gender(tmp_path / "vag", init_voice_age_gender(seed=0))
    encoder = VoiceAgeGenderEcapa(folder, savedir=tmp_path / "save")
    clips = [np.random.default_rng(i).standard_normal(n).astype(np.float32) * 0.1 for i, n in enumerate((8000, 20000))]
    out = encoder.encode(encoder.collate([encoder.preprocess(c) for c in clips]))
    assert encoder.dim == 1536 and out.embeddings.shape == (2, 1536)
    assert set(out.extras) == {"age", "p_female"} and bool(((out.extras["p_female"] >= 0) & (out.extras["p_female"] <= 1)).all())
    singles = torch.cat([encoder.encode(encoder.collate([c])).embeddings for c in clips])
    assert torch.allclose(out.embeddings, singles, rtol=1e-4, atol=1e-5)
