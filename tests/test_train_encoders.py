"""Encoder training through the CLI on generated data (CPU, tiny widths): losses fall, checkpoints load in
`fva extract` with the right dimension, runs resume, torchrun with two gloo processes writes one checkpoint;
`fva lid` labels clips, resumes and votes per video."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from conftest import assert_user_error
from fva.cli import cli
from fva.extract.cache import cache_info, open_cache
from fva.synth.world import write_commonvoice, write_voxceleb2

TINY = ["--channels", "16", "--batch-size", "8", "--workers", "0", "--no-progress"]


@pytest.fixture(autouse=True)
def models_home(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("FVA_MODELS", str(tmp_path_factory.getbasetemp() / "fva-models"))


def run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def vox(tmp_path_factory) -> tuple[Path, Path]:
    """4 speakers x 2 videos x 3 clips, and video labels: id00002 German, the others English or French."""
    base = tmp_path_factory.mktemp("vox")
    root = base / "vox2"
    write_voxceleb2(root, identities=4, videos=2, clips=3, seed=0)
    lines = ["key\tlanguage\tconfidence"]
    for ident in sorted((root / "dev" / "aac").iterdir()):
        language = {"id00002": "German", "id00003": "French"}.get(ident.name, "English")
        lines += [f"{ident.name}/{video.name}\t{language}\t0.9" for video in sorted(ident.iterdir())]
    labels = base / "labels.tsv"
    labels.write_text("\n".join(lines) + "\n")
    return root, labels


def step_losses(out: Path) -> list[float]:
    return [e["loss"] for e in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "step" in e
            and "loss" in e]


def extracted(args: list, cache: Path, folder: str) -> tuple[int, np.ndarray]:
    """Run fva extract; the cache's dimension (from its attributes) and its rows."""
    result = run("extract", *args, "--cache", cache, "--no-progress", "--workers", "0", "--dtype", "float32")
    assert result.exit_code == 0, result.output
    with open_cache(cache / folder) as table:
        return cache_info(cache / folder)["dim"], table.load()


def official_eer(labels, distances) -> float:
    """The organisers' EER, written out here: sklearn's ROC of -distance, brentq on the interpolated curve (%)."""
    from scipy.interpolate import interp1d
    from scipy.optimize import brentq
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, -np.asarray(distances))
    return 100 * brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)


def reference_trials_eer(folder: Path, trials: Path, root: Path) -> float:
    """The trial EER of an exported speaker model, from speechbrain's own EncoderClassifier on each clip alone
    (1 - cosine of the 192-d embeddings)."""
    import torch
    from speechbrain.inference.speaker import EncoderClassifier

    model = EncoderClassifier.from_hparams(source=str(folder), savedir=str(folder.parent / "sb-reference"),
                                           overrides={"pretrained_path": str(folder)})
    labels, distances = [], []
    for line in trials.read_text().splitlines():
        label, a, b = line.split()
        emb = [torch.nn.functional.normalize(model.encode_batch(
            torch.from_numpy(sf.read(root / "dev" / "aac" / rel, dtype="float32")[0])[None]).flatten(), dim=0)
            for rel in (a, b)]
        labels.append(int(label))
        distances.append(1.0 - float(emb[0] @ emb[1]))
    return official_eer(labels, distances)


def test_speaker_trainer_learns_exports_the_public_format_and_resumes(tmp_path, vox):
    root, labels = vox
    clips = sorted((root / "dev" / "aac").rglob("*.wav"))
    trials = tmp_path / "trials.txt"  # VoxCeleb1-O style: same speaker 1, different 0
    rel = [c.relative_to(root / "dev" / "aac").as_posix() for c in clips]
    trials.write_text("".join(f"{int(a[:7] == b[:7])} {a} {b}\n" for a, b in zip(rel, rel[1:] + rel[:1])))
    out = tmp_path / "spk"
    common = ["train-encoder", "speaker", "--dataset", "voxceleb2", "--root", root, "--split", "german-unheard",
              "--language-labels", labels, "--out", out, *TINY, "--step-size", "6",
              "--trials", trials, "--trials-root", root / "dev" / "aac"]
    result = run(*common, "--steps", "9")
    assert result.exit_code == 0, result.output
    losses = step_losses(out)
    assert len(losses) == 9 and np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3]), losses
    config = json.loads((out / "train_config.json").read_text())
    assert config["model"]["identities"] == ["id00000", "id00001", "id00003"]  # German speaker left out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 9 and metrics["trials_eer"] == pytest.approx(reference_trials_eer(out, trials, root),
                                                                           abs=1e-3)
    assert len(list((out / "checkpoints").iterdir())) == 1

    # the folder is a speechbrain speaker model: fva extract loads it like spkrec-ecapa-voxceleb
    dim, emb = extracted(["--dataset", "voxceleb2", "--root", root, "--encoders", "speaker-ecapa",
                             "--weights", f"speaker-ecapa={out}"], tmp_path / "cache",
                            "voxceleb2/dev-full/speaker-ecapa")
    assert dim == 6 * 16 and emb.shape == (24, 96) and np.isfinite(emb).all()

    # resume: the same command with more steps continues at step 10 from the checkpoint
    result = run(*common, "--steps", "11")
    assert result.exit_code == 0, result.output
    steps = [e["step"] for e in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()) if "loss" in e]
    assert steps == list(range(1, 12))
    assert json.loads((out / "metrics.json").read_text())["steps"] == 11

    # another width in the same folder is refused, and nothing there is touched
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert_user_error(run(*[("32" if a == "16" else a) for a in common], "--steps", "12"), str(out), "channels")
    assert before == {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}


def reference_age_gender(folder: Path, root: Path, speakers: list[str], savedir: Path) -> tuple[float, float]:
    """Gender accuracy and age MAE (years, CommonVoice decades at their centres) of an exported voice
    age-gender model on the clips of ``speakers``, each clip alone."""
    from fva.data.commonvoice import AGE_YEARS
    from fva.data.datasets import build_manifest
    from fva.extract.encoders.voice_age_gender import VoiceAgeGenderEcapa

    enc = VoiceAgeGenderEcapa(folder, savedir=savedir)
    records = [r for r in build_manifest("commonvoice", root)[0].records if r.identity in speakers]
    right, errors = [], []
    for r in records:
        out = enc.encode(enc.collate([sf.read(root / r.path, dtype="float32")[0]])).extras
        if r.gender in ("male", "female"):
            right.append((float(out["p_female"][0]) > 0.5) == (r.gender == "female"))
        if r.age is not None:
            errors.append(abs(float(out["age"][0]) - AGE_YEARS[r.age]))
    return float(np.mean(right)), float(np.mean(errors))


def test_age_gender_trainer_learns_and_writes_the_extraction_format(tmp_path):
    root = tmp_path / "cv"
    write_commonvoice(root, locales=("en", "de"), speakers=5, clips=3, seed=0)
    out = tmp_path / "vag"
    result = run("train-encoder", "age-gender", "--dataset", "commonvoice", "--root", root, "--split",
                 "german-unheard", "--out", out, *TINY, "--head-hidden", "32", "--steps", "10", "--lr", "0.005",
                 "--valid-fraction", "0.2")
    assert result.exit_code == 0, result.output
    losses = step_losses(out)
    assert len(losses) == 10 and np.mean(losses[-3:]) < np.mean(losses[:3]), losses
    info = json.loads((out / "fva_model.json").read_text())
    assert info["kind"] == "voice-age-gender-ecapa" and info["languages"] == ["English"]
    assert info["age"] == "regression-years" and info["channels"] == [16, 16, 16, 16, 48]
    metrics = info["metrics"]
    config = json.loads((out / "train_config.json").read_text())
    assert len(config["valid_speakers"]) == 1 and config["records"] == {"train": 12, "valid": 3}
    # the validation figures again, from the exported model on each held-out clip alone (training validated
    # on one padded batch, which moves the predictions a little: the age within a year)
    accuracy, mae = reference_age_gender(out, root, config["valid_speakers"], tmp_path / "sb-valid")
    assert metrics["gender_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert metrics["age_mae_years"] == pytest.approx(mae, abs=1.0)

    dim, emb = extracted(["--dataset", "commonvoice", "--root", root, "--encoders", "voice-age-gender-ecapa",
                             "--weights", f"voice-age-gender-ecapa={out}"], tmp_path / "cache",
                            "commonvoice/validated-full/voice-age-gender-ecapa")
    assert dim == 2 * 48 and emb.shape == (30, 96)
    # the exported heads are the trained ones: the age head gives years near the training ages
    from fva.extract.encoders.voice_age_gender import VoiceAgeGenderEcapa
    enc = VoiceAgeGenderEcapa(out, savedir=tmp_path / "sb")
    wav, _ = sf.read(next((root / "en" / "clips").iterdir()), dtype="float32")
    ages = enc.encode(enc.collate([wav])).extras["age"]
    assert 10 < float(ages[0]) < 90


def test_parameter_counts_of_the_default_sizes():
    from fva.extract.encoders.voice_age_gender import init_voice_age_gender
    from fva.train.speaker import ecapa_sizes

    channels, attention = ecapa_sizes(256)
    modules = init_voice_age_gender(tuple(channels), 1536, attention)
    total = sum(p.numel() for m in modules.values() for p in m.parameters())
    assert channels == [256, 256, 256, 256, 768] and 6.4e6 < total < 6.6e6  # "about 6.5 M parameters"


def test_lid_labels_clips_resumes_and_votes_per_video(tmp_path, vox):
    from fva.train.lid import LidModel, read_clip_labels, write_lid_model

    root, _ = vox
    model = write_lid_model(tmp_path / "lid", seed=0)
    out = tmp_path / "lang.tsv"
    common = ["lid", "--dataset", "voxceleb2", "--root", root, "--out", out, "--weights", model,
              "--no-progress", "--workers", "0", "--threshold", "0.5"]
    first = run(*common, "--limit", "10")  # an interrupted run: 10 clips done
    assert first.exit_code == 0 and "labelled 10 clips" in first.output, first.output
    second = run(*common)
    assert "labelled 14 clips, skipped as already done 10" in second.output, second.output
    lines = (tmp_path / "lang.clips.tsv").read_text().splitlines()
    assert lines[0] == "key\tlanguage\tconfidence" and len(lines) == 25
    clips = read_clip_labels(tmp_path / "lang.clips.tsv")
    assert len(clips) == 24 and {c[0] for c in clips.values()} <= {"German", "English", "French"}

    # batched labels equal speechbrain's own one-clip-at-a-time classify_batch
    import torch
    speechbrain_model = LidModel(str(model), "cpu").model
    for key, (language, confidence) in clips.items():
        wav, _ = sf.read(root / "dev" / "aac" / f"{key}.wav", dtype="float32")
        _, score, _, text = speechbrain_model.classify_batch(torch.from_numpy(wav)[None])
        assert text[0].endswith(language) and abs(float(score.exp()) - confidence) < 1e-3, key

    # the vote against a naive reference: winner by confidence sum, confidence = sum / clips of the video
    expected = {}
    for video in {k.rsplit("/", 1)[0] for k in clips}:
        mine = [v for k, v in clips.items() if k.startswith(video + "/")]
        sums = {lang: sum(c for l2, c in mine if l2 == lang) for lang, _ in mine}
        lang = max(sums, key=sums.get)
        if sums[lang] / len(mine) >= 0.5:
            expected[video] = (lang, round(sums[lang] / len(mine), 4))
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    assert {r[0]: (r[1], float(r[2])) for r in rows} == expected and 0 < len(expected) < 8

    # the vote file is what the unheard splits read
    man = tmp_path / "m.jsonl"
    language = sorted({v[0] for v in expected.values()})[0]
    result = run("manifest", "--dataset", "voxceleb2", "--root", root, "--split", f"{language}-unheard",
                 "--language-labels", out, "--out", man, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    kept = sum(3 for v in expected.values() if v[0] != language)
    assert summary["records"] == kept and "left out" in " ".join(summary["notes"])


def test_bad_input_is_one_error_line(tmp_path, vox, cv_root):
    root, labels = vox
    assert_user_error(run("train-encoder", "speaker", "--dataset", "voxceleb2", "--root", tmp_path / "nope",
                          "--out", tmp_path / "o", *TINY), "nope", "not found")
    assert_user_error(run("train-encoder", "speaker", "--dataset", "voxceleb2", "--root", root, "--split",
                          "urdu-unheard", "--language-labels", labels, "--out", tmp_path / "o", *TINY), "Urdu")
    assert_user_error(run("train-encoder", "age-gender", "--dataset", "commonvoice", "--root", cv_root,
                          "--languages", "fr", "--out", tmp_path / "o", *TINY), "French")
    assert_user_error(run("lid", "--dataset", "commonvoice", "--root", cv_root, "--out", tmp_path / "l.tsv"),
                      "voxceleb2")
    assert_user_error(run("train-encoder", "speaker", "--dataset", "voxceleb2", "--root", root, "--out",
                          tmp_path / "o", *TINY, "--noise", tmp_path / "no-noise"), "no-noise", "noise")
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").glob("*.ckpt"))


def test_torchrun_two_cpu_processes_train_and_write_one_checkpoint(tmp_path, vox):
    root, _ = vox
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
           "-m", "fva.cli", "train-encoder", "speaker", "--dataset", "voxceleb2", "--root", str(root),
           "--out", str(out), "--steps", "3", "--device", "cpu", "--schedule", "exponential", *TINY]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list((out / "checkpoints").iterdir())) == 1
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log if "loss" in e] == [1, 2, 3]  # logged once, by rank 0
    # 24 clips over 2 processes of 8-clip batches: 2 steps per epoch, so 2 epochs for 3 steps
    assert json.loads((out / "metrics.json").read_text())["epoch"] == 2
    assert (out / "embedding_model.ckpt").is_file() and (out / "hyperparams.yaml").is_file()


def test_augmentation_csv_lists_every_mono_clip_and_refuses_stereo(tmp_path):
    import csv

    from fva.errors import FvaError
    from fva.train.speaker import audio_csv

    folder = tmp_path / "noise"
    (folder / "sub").mkdir(parents=True)
    sf.write(folder / "a.wav", np.zeros(16000, dtype=np.float32), 16000)
    sf.write(folder / "sub" / "b.flac", np.zeros(8000, dtype=np.float32), 16000)
    out = audio_csv(folder, tmp_path / "work" / "noise.csv", "noise")
    with out.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [(Path(r["wav"]).name, r["duration"], r["wav_format"]) for r in rows] == \
        [("a.wav", "1.000", "wav"), ("b.flac", "0.500", "flac")]
    assert sorted(p.name for p in out.parent.iterdir()) == ["noise.csv"]  # no temporary file left
    sf.write(folder / "c.wav", np.zeros((800, 2), dtype=np.float32), 16000)
    with pytest.raises(FvaError, match="2 channels"):
        audio_csv(folder, tmp_path / "work" / "noise.csv", "noise")
