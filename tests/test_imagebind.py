"""ImageBind's towers (imagebind-face, imagebind-voice), the zero-shot system over them and the age-gap term.

The towers are checked against an independent forward pass written here from torch's own modules in ImageBind's
sequence-first layout (``nn.MultiheadAttention`` with ``add_bias_kv``, ``nn.LayerNorm``, ``nn.Conv3d`` on the
repeated frame), on a small random checkpoint in the published file's key layout (``save_imagebind``); their
preprocessing against transformers' CLIP image processor and torchaudio's Kaldi fbank, with the clip sampler and
the crop offsets by hand. (One-off, outside CI: on random weights, fva's towers and preprocessing equal the public
ImageBind code's to the bit; the closing note of issue 23 has the script's outline.) The fetch is patched at
torch.hub's ``download_url_to_file``. The systems run on a joint space written into the synthetic cache.
"""

from __future__ import annotations

import json
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from conftest import assert_user_error
from fva.errors import FvaError
from fva.evaluate.eer import compute_eer
from fva.extract import weights as W
from fva.extract.cache import open_cache
from fva.extract.encoders.base import get_encoder_class
from fva.extract.encoders.imagebind import (AUDIO_MEAN, AUDIO_STD, CLIP_MEAN, CLIP_STD, ImageBindAudio,
                                            ImageBindImage, ImageBindSize, SelfAttention, centre_crop_offsets,
                                            clip_bounds, save_imagebind)
from fva.heads.compare import system_config
from fva.heads.config import load_config
from fva.heads.trainer import train_head
from fva.layout import features_folder
from fva.synth.testing import DATASET, run_cli, write_feature_cache

SIZE = ImageBindSize(vision_dim=32, vision_blocks=2, audio_dim=24, audio_blocks=2, out_dim=16)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return save_imagebind(tmp_path_factory.mktemp("ib") / W.IMAGEBIND_FILE, SIZE, seed=3)


@pytest.fixture(scope="module")
def towers(checkpoint):
    return get_encoder_class("imagebind-face")(checkpoint), get_encoder_class("imagebind-voice")(checkpoint)


def images(sizes=((224, 224), (300, 180), (97, 131), (225, 227), (40, 500)), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def clips(lengths=(16000, 4000, 58000, 401, 130000), seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n) + 0.02).astype(np.float32) for n in lengths]


def encode(encoder, items) -> np.ndarray:
    return encoder.encode(encoder.collate([encoder.preprocess(x) for x in items])).embeddings.numpy()


# ------------------------------------------------------------------------------------- the reference forward
def reference_tower(state: dict, modality: str, x: torch.Tensor) -> torch.Tensor:
    """ImageBind's forward for one tower, sequence first as its trunk runs, from torch's own modules."""
    pre, trunk, head = (f"modality_preprocessors.{modality}.", f"modality_trunks.{modality}.",
                        f"modality_heads.{modality}.")
    dim = state[pre + "cls_token"].shape[-1]
    heads = 16 if modality == "vision" else 12
    if modality == "vision":
        tokens = torch.nn.functional.conv3d(x[:, :, None].expand(-1, -1, 2, -1, -1),
                                            state[pre + "rgbt_stem.proj.1.weight"], stride=(2, 14, 14))
        tokens = tokens.flatten(2).transpose(1, 2)
    else:
        tokens = torch.nn.functional.conv2d(x, state[pre + "rgbt_stem.proj.weight"], stride=10)
        tokens = torch.nn.functional.layer_norm(tokens.flatten(2).transpose(1, 2), (dim,),
                                                state[pre + "rgbt_stem.norm_layer.weight"],
                                                state[pre + "rgbt_stem.norm_layer.bias"])
    tokens = torch.cat([state[pre + "cls_token"].expand(len(tokens), -1, -1), tokens], 1)
    tokens = tokens + state[pre + "pos_embedding_helper.pos_embed"]
    if modality == "vision":
        tokens = torch.nn.functional.layer_norm(tokens, (dim,), state[trunk + "pre_transformer_layer.0.weight"],
                                                state[trunk + "pre_transformer_layer.0.bias"], eps=1e-6)
    h = tokens.transpose(0, 1)  # l b d
    n_blocks = len({k.split(".")[3] for k in state if k.startswith(trunk + "blocks.")})
    for i in range(n_blocks):
        b = f"{trunk}blocks.{i}."
        attn = nn.MultiheadAttention(dim, heads, bias=True, add_bias_kv=modality == "audio").eval()
        attn.load_state_dict({k[len(b + "attn."):]: v for k, v in state.items() if k.startswith(b + "attn.")})

        def ln(t, name):
            return torch.nn.functional.layer_norm(t, (dim,), state[b + name + ".weight"], state[b + name + ".bias"],
                                                  eps=1e-6)

        y = ln(h, "norm_1")
        h = h + attn(y, y, y, need_weights=False)[0]
        y = torch.nn.functional.linear(ln(h, "norm_2"), state[b + "mlp.fc1.weight"], state[b + "mlp.fc1.bias"])
        h = h + torch.nn.functional.linear(torch.nn.functional.gelu(y), state[b + "mlp.fc2.weight"],
                                           state[b + "mlp.fc2.bias"])
    out = torch.nn.functional.layer_norm(h.transpose(0, 1), (dim,), state[head + "0.weight"], state[head + "0.bias"],
                                         eps=1e-6)[:, 0] @ state[head + "2.weight"].T
    out = torch.nn.functional.normalize(out, dim=-1)
    if modality == "audio":
        out = out * state["modality_postprocessors.audio.1.log_logit_scale"].exp().clamp(max=100)
    return out


def test_attention_is_torchs_multihead_attention():
    """fva's batch-first attention equals torch's nn.MultiheadAttention (sequence first) with the same weights,
    with and without learnt key / value biases."""
    torch.manual_seed(0)
    x = torch.randn(3, 11, 24)
    for bias_kv in (False, True):
        ref = nn.MultiheadAttention(24, 12, bias=True, add_bias_kv=bias_kv).eval()
        with torch.no_grad():
            for p in ref.parameters():
                p.normal_(std=0.3)
        mine = SelfAttention(24, 12, bias_kv)
        mine.load_state_dict(ref.state_dict())
        with torch.no_grad():
            want = ref(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), need_weights=False)[0].transpose(0, 1)
            torch.testing.assert_close(mine(x), want, rtol=1e-5, atol=1e-5)


def test_towers_equal_the_reference_forward(checkpoint, towers):
    face, voice = towers
    state = torch.load(checkpoint, weights_only=True)
    x = face.collate([face.preprocess(i) for i in images()])
    with torch.no_grad():
        torch.testing.assert_close(face.encode(x).embeddings, reference_tower(state, "vision", x), rtol=1e-4,
                                   atol=1e-5)
    items = [voice.preprocess(c) for c in clips()[:3]]
    with torch.no_grad():
        want = torch.stack([reference_tower(state, "audio", torch.from_numpy(it)).mean(0) for it in items])
    torch.testing.assert_close(voice.encode(voice.collate(items)).embeddings, want, rtol=1e-4, atol=1e-4)
    assert face.dim == voice.dim == SIZE.out_dim
    np.testing.assert_allclose(np.linalg.norm(encode(face, images()[:2]), axis=1), 1.0, rtol=1e-5)


def test_batched_equals_one_at_a_time(towers):
    for encoder, items in zip(towers, (images(), clips())):
        batched = encode(encoder, items)
        alone = np.concatenate([encode(encoder, [x]) for x in items])
        np.testing.assert_allclose(batched, alone, rtol=1e-5, atol=2e-5)


# ---------------------------------------------------------------------------------------------- preprocessing
def test_image_preprocessing_is_clips_processor_and_torchvisions_crop():
    """Shortest edge 224 (bicubic), centre crop, CLIP mean / std: transformers' CLIP image processor (Pillow) gives
    the same pixels where its crop offset (floor) equals torchvision's (round half to even)."""
    from transformers import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(size={"shortest_edge": 224}, crop_size={"height": 224, "width": 224},
                                      image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    pre = ImageBindImage()
    for image in images(((224, 224), (300, 180), (97, 131), (480, 640), (226, 300))):
        want = processor(images=image, return_tensors="np")["pixel_values"][0]
        np.testing.assert_allclose(pre(image), want, rtol=0, atol=2e-6)
    # torchvision's CenterCrop rounds half to even: (225 - 224) / 2 -> 0, (227 - 224) / 2 -> 2
    assert centre_crop_offsets(225, 227) == (0, 2) and centre_crop_offsets(224, 298) == (0, 37)
    image = images(((224, 227),))[0]
    np.testing.assert_array_equal(pre(image)[0], ((image[:, 2:226, 0] / np.float32(255.0) - np.float32(CLIP_MEAN[0]))
                                                  / np.float32(CLIP_STD[0])).astype(np.float32))


def test_clip_sampler_by_hand():
    """pytorchvideo's ConstantClipsPerVideoSampler: clip k of n starts at k * max(D - 2, 0) / n; n = 3, or one per
    2 s past 6 s."""
    assert clip_bounds(16000) == [(0, 32000)] * 3  # shorter than a clip: three whole-file clips
    assert clip_bounds(16000 * 5) == [(0, 32000), (16000, 48000), (32000, 64000)]
    assert clip_bounds(16000 * 7) == [(0, 32000), (20000, 52000), (40000, 72000), (60000, 92000)]
    n = 58001
    d = Fraction(n / 16000)
    assert clip_bounds(n) == [(int(k * (d - 2) / 3 * 16000), int((k * (d - 2) / 3 + 2) * 16000)) for k in range(3)]
    assert len(clip_bounds(16000 * 60)) == 30


def test_audio_preprocessing_is_kaldi_fbank_per_clip():
    """Each clip: its mean taken off in place (later overlapping clips see it), torchaudio's Kaldi fbank, 204
    frames (padded or cut), ImageBind's mean and std."""
    from torchaudio.compliance import kaldi

    for audio in clips((9000, 32000, 58000, 130000), seed=5):
        got = ImageBindAudio()(audio)
        wave = torch.tensor(audio.astype(np.float64))
        expected = []
        for start, end in clip_bounds(len(audio)):
            wave[start:end] -= wave[start:end].mean()  # ImageBind's in-place subtraction on a view
            fb = kaldi.fbank(wave[start:end].float()[None], htk_compat=True, sample_frequency=16000,
                             use_energy=False, window_type="hanning", num_mel_bins=128, dither=0.0,
                             frame_length=25, frame_shift=10).T
            fb = torch.cat([fb, torch.zeros(128, max(0, 204 - fb.shape[1]))], 1)[:, :204]
            expected.append(((fb - AUDIO_MEAN) / AUDIO_STD)[None].numpy())
        assert got.shape == (len(expected), 1, 128, 204)
        np.testing.assert_allclose(got, np.stack(expected), rtol=1e-4, atol=2e-4)


# -------------------------------------------------------------------------------------------------- loading
def test_checkpoint_layout_and_bad_files(checkpoint, tmp_path):
    state = torch.load(checkpoint, weights_only=True)
    assert "modality_trunks.audio.blocks.0.attn.bias_k" in state
    assert "modality_preprocessors.vision.rgbt_stem.proj.1.weight" in state
    assert any(k.startswith("modality_preprocessors.text.") for k in state)  # other modalities: left unread
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / W.IMAGEBIND_FILE).write_bytes(checkpoint.read_bytes())
    face = get_encoder_class("imagebind-face")(folder)  # a folder holding imagebind_huge.pth
    assert face.weights_id == W.checkpoint_identity(checkpoint)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    cases = {"missing": {k: v for k, v in state.items() if "modality_heads.audio.2" not in k},
             "shape": {**state, "modality_trunks.vision.blocks.1.mlp.fc2.bias": torch.zeros(3)},
             "extra": {**state, "modality_trunks.vision.blocks.0.attn.bias_k": torch.zeros(1, 1, 32)}}
    for name, broken in cases.items():
        torch.save(broken, tmp_path / f"{name}.pth")
    for path, encoder, fragment in ((bad, "imagebind-face", "not a readable PyTorch checkpoint"),
                                    (tmp_path / "missing.pth", "imagebind-voice", "no modality_heads.audio.2.weight"),
                                    (tmp_path / "shape.pth", "imagebind-face", "blocks.1.mlp.fc2.bias is (3,)"),
                                    (tmp_path / "extra.pth", "imagebind-face", "unexpected trunk.blocks.0.attn.bias_k"),
                                    (tmp_path / "none.pth", "imagebind-face", "no such file")):
        with pytest.raises(FvaError) as err:
            get_encoder_class(encoder)(path)
        assert "\n" not in str(err.value) and fragment in str(err.value), str(err.value)


def test_fetch_is_torch_hubs_download_into_its_hub_folder(checkpoint, monkeypatch, tmp_path, capsys):
    """Without --weights the encoder asks torch.hub's download_url_to_file for ImageBind's URL, into
    torch.hub.get_dir()/checkpoints; the fetch says the licence is non-commercial, once; offline it is one line."""
    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("FVA_OFFLINE", "0")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls = []

    def download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst))
        Path(dst).write_bytes(checkpoint.read_bytes())

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    monkeypatch.setattr(W, "_NOTED", set())
    target = tmp_path / "torch" / "hub" / "checkpoints" / W.IMAGEBIND_FILE
    assert not W.status("imagebind-voice").present and W.status("imagebind").location == str(target)
    result = run_cli("weights", "fetch", "--encoders", "imagebind-face")
    assert result.exit_code == 0, result.output
    assert calls == [(W.IMAGEBIND_URL, str(target))]
    assert "non-commercial use only" in result.output and "CC-BY-NC-SA-4.0" in result.output
    assert result.output.count("non-commercial") == 1
    voice = get_encoder_class("imagebind-voice")()  # the copy in torch's hub folder; no second download
    assert calls == [(W.IMAGEBIND_URL, str(target))] and voice.weights_id == W.checkpoint_identity(target)
    listed = run_cli("weights", "list")
    assert "imagebind" in listed.output and "licence CC-BY-NC-SA-4.0" in listed.output
    target.unlink()
    monkeypatch.setenv("FVA_OFFLINE", "1")
    with pytest.raises(FvaError) as err:
        get_encoder_class("imagebind-face")()
    assert "\n" not in str(err.value) and "fva weights fetch --encoders imagebind" in str(err.value)
    assert len(calls) == 1


def test_fva_extract_with_the_imagebind_encoders(towers, checkpoint, tmp_path):
    """``fva extract --encoders imagebind-face`` / ``imagebind-voice`` (workers, batches, the cache) writes what
    the towers give one file at a time."""
    import soundfile as sf
    from PIL import Image

    from fva.data.records import Manifest, MediaRecord
    from fva.extract.media import load_audio, load_image

    media = tmp_path / "media"
    media.mkdir()
    records = []
    for i, audio in enumerate(clips((24000, 16000 * 7, 12345), seed=2)):
        sf.write(media / f"v{i}.wav", audio, 16000)
        records.append(MediaRecord(key=f"v{i}", identity="id1", language="English", modality="voice",
                                   path=f"v{i}.wav"))
    for i, image in enumerate(images(((224, 224), (300, 180), (97, 131)), seed=4)):
        Image.fromarray(image).save(media / f"f{i}.png")
        records.append(MediaRecord(key=f"f{i}", identity="id1", language="English", modality="face",
                                   path=f"f{i}.png"))
    manifest = tmp_path / "m.jsonl"
    Manifest("toy", str(media), "train", "full", records).write(manifest)
    result = run_cli("extract", "--manifest", manifest, "--cache", tmp_path / "cache", "--encoders",
                     "imagebind-face,imagebind-voice", "--weights", f"imagebind-face={checkpoint}", "--weights",
                     f"imagebind-voice={checkpoint}", "--dtype", "float32", "--batch-size", "2", "--workers", "1",
                     "--no-progress")
    assert result.exit_code == 0, result.output
    for encoder in towers:
        with open_cache(tmp_path / "cache" / "toy" / "train-full" / encoder.name) as cache:
            got = dict(zip(cache.keys, cache.load()))
            assert cache.attrs["weights_id"] == encoder.weights_id and cache.attrs["dim"] == SIZE.out_dim
        for r in records:
            if r.modality == encoder.modality:
                x = load_audio(media / r.path) if r.modality == "voice" else load_image(media / r.path)
                np.testing.assert_allclose(got[r.key], encode(encoder, [x])[0], rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------- systems
def joint_space(synth) -> dict[str, dict[str, np.ndarray]]:
    """Into synth's cache: ``imagebind-voice`` / ``imagebind-face`` rows in one space (each modality's stored
    features mapped back onto the generator's latent identity space, plus an offset per modality that centring
    must remove) and ``voice-age`` / ``face-age`` rows whose age follows the latent identity. Returns
    encoder -> key -> rows (frames in stored order)."""
    voice_map, face_map = synth.maps
    out: dict[str, dict[str, np.ndarray]] = {}
    for subset in ("train", "test"):
        folder = features_folder(synth.root, DATASET, subset)
        with open_cache(folder / "speaker-ecapa") as written:  # the subset's manifest, as extraction records it
            manifest = written.attrs["manifest"]
        for modality, names, mapping, offset in (("voice", ("speaker-ecapa", "voice-age-gender-ecapa"), voice_map, 3.0),
                                                 ("face", ("vggface", "vit-age-gender"), face_map, -2.0)):
            keys = [k for k in synth.stored[names[0]] if (k.startswith(("voices/", "faces/")) == (subset == "train"))]
            rows = {k: np.concatenate([synth.stored[n][k][1].astype(np.float64) for n in names], axis=1)
                    for k in keys}
            frames = {k: synth.stored[names[0]][k][0] for k in keys}
            pinv = np.linalg.pinv(mapping)
            joint = {k: rows[k] @ pinv + offset for k in keys}
            age_columns = 4 if modality == "voice" else 1
            ages = {k: np.concatenate([40 + 10 * joint[k][:, :1] - 10 * offset,
                                       np.full((len(joint[k]), age_columns - 1), 0.5)], axis=1) for k in keys}
            for name, values in ((f"imagebind-{modality}", joint), (f"{modality}-age", ages)):
                # the age estimators' extras, as they store them: age (and voice-age's p_female) of each row
                extras = () if name.startswith("imagebind") else ("age", "p_female") if modality == "voice" else ("age",)
                write_feature_cache(folder, name, modality, values[keys[0]].shape[1],
                                    [((k, frames[k], values[k].astype(np.float16),
                                       {e: values[k][:, i] for i, e in enumerate(extras)}) for k in keys)],
                                    extras=extras, weights_id=f"{name}@synthetic", dataset=DATASET, subset=subset,
                                    split="full", manifest=manifest, config={"synthetic": True})
                out.setdefault(name, {}).update(values)
    return out


@pytest.fixture(scope="module")
def joint(synth):
    return joint_space(synth)


def test_zeroshot_is_one_minus_cosine_after_train_centring(synth, joint, tmp_path):
    from fva.experiment import CHECKPOINT_FILE
    from fva.heads.experiment import load_checkpoint
    from fva.heads.scoring import score_trial_list
    from fva.heads.trialset import TrainStats

    exp = tmp_path / "zs"
    train_head(system_config("imagebind-zeroshot", synth.config), synth.root, exp, [0], log=lambda line: None)
    info = json.loads((exp / "experiment.json").read_text())
    assert info["score_level"] == 0 and info["features"]["voice"]["encoders"] == ["imagebind-voice"]
    metrics = json.loads((exp / "fold0" / "metrics.json").read_text())
    assert metrics["setting"] == {"fitted": "nothing"}
    # by hand: each modality centred on the fold's training mean (from the checkpoint's statistics) of float16 rows
    stats = TrainStats.from_payload(load_checkpoint(exp / "fold0" / CHECKPOINT_FILE)[1])
    scores = score_trial_list(exp, synth.test_list)

    def vec(name, key):
        rows = joint[name][key].astype(np.float16).astype(np.float32)
        return rows.mean(0)

    for t in synth.trials[:40]:
        v = vec("imagebind-voice", t.voice.rsplit(".", 1)[0]) - stats.voice_mean.numpy()
        f = vec("imagebind-face", t.face.rsplit(".", 1)[0]) - stats.face_mean.numpy()
        cos = float(v @ f / np.linalg.norm(v) / np.linalg.norm(f))
        assert scores[t.key] == pytest.approx(1 - cos, abs=2e-4)  # distances
    from test_few_identities import truth_labels

    labels = truth_labels(synth)
    eer = compute_eer(labels, np.array([scores[t.key] for t in synth.trials]))  # distances, EER in %
    assert eer < 20, eer  # the joint space carries identity with no training


def test_zeroshot_levels_and_refusals(synth, joint, tmp_path):
    assert load_config("imagebind-zeroshot").score.level == 0
    assert load_config("imagebind-zeroshot-file").score.level == 1
    result = run_cli("train-head", "--config", "imagebind-zeroshot-file", "--cache", synth.root, "--exp",
                     tmp_path / "x", "--folds", "0", "--pairwise")
    assert_user_error(result, "level 1")
    assert not (tmp_path / "x").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"base": "imagebind-zeroshot",
                                   "features": {"voice_encoders": ["imagebind-voice", "speaker-ecapa"]}}))
    with pytest.raises(FvaError, match="one encoder per modality"):
        load_config(bad)
    bad.write_text(yaml.safe_dump({"base": "age-gap", "features": {"face_encoders": ["vit-age-gender"]}}))
    with pytest.raises(FvaError, match="face age estimator"):
        load_config(bad)


def test_age_gap_is_the_absolute_age_difference_and_fuses(synth, joint, tmp_path):
    from fva.heads.scoring import score_trial_list

    exp = tmp_path / "age"
    train_head(system_config("age-gap", synth.config), synth.root, exp, [0], log=lambda line: None)
    scores = score_trial_list(exp, synth.test_list)
    for t in synth.trials[:40]:
        va = joint["voice-age"][t.voice.rsplit(".", 1)[0]].astype(np.float16).astype(np.float32)[:, 0].mean()
        fa = joint["face-age"][t.face.rsplit(".", 1)[0]].astype(np.float16).astype(np.float32)[:, 0].mean()
        assert scores[t.key] == pytest.approx(abs(float(va) - float(fa)), abs=1e-3)  # a distance
    heard = json.loads((exp / "fold0" / "metrics.json").read_text())["heard"]
    assert all(0 <= v < 50 for v in heard.values()), heard  # ages follow identity in this world
    # a fusion entry: the zero-shot score and the age gap, logistic weights fitted on their shared dev trials
    from fva.heads.plan import dev_fusion_trials, score_entry

    zs = tmp_path / "zs"
    train_head(system_config("imagebind-zeroshot", synth.config), synth.root, zs, [0], log=lambda line: None)
    z, y = dev_fusion_trials([str(zs), str(exp)])
    assert z.shape == (len(y), 2)
    fused = score_entry("English", {"fuse": [str(zs), str(exp)], "weights": "logistic"}, synth.test_list, None)
    assert set(fused) == {t.key for t in synth.trials} and all(math.isfinite(v) for v in fused.values())


def test_polarisation_reads_the_age_estimators_predictions(synth, joint):
    """Listed among a config's features, the age estimators' extras are what score.polarise reads: age from the
    last listed encoder that predicts it (voice-age after the age-gender ECAPA), p_female likewise."""
    from fva.data.trials import read_trials
    from fva.heads.trialset import TrialSet, open_features
    from fva.data.mavceleb import media_key

    cfg = load_config(synth.config, {"features": {
        "voice_encoders": ["speaker-ecapa", "voice-age-gender-ecapa", "voice-age"],
        "face_encoders": ["vggface", "vit-age-gender", "face-age"]}})
    feats = open_features(cfg, features_folder(synth.root, DATASET, "test"))
    trials = read_trials(synth.test_list)[:30]
    ts = TrialSet.build(trials, feats, "test trials")
    voices = sorted({media_key(t.voice) for t in trials})
    faces = sorted({media_key(t.face) for t in trials})
    assert set(ts.voice_extras) == {"age", "p_female"} and set(ts.face_extras) == {"age", "p_female"}
    np.testing.assert_allclose(ts.voice_extras["age"], [joint["voice-age"][k][:, 0].mean() for k in voices], rtol=1e-6)
    np.testing.assert_allclose(ts.voice_extras["p_female"], 0.5)
    np.testing.assert_allclose(ts.face_extras["age"], [joint["face-age"][k][:, 0].mean() for k in faces], rtol=1e-6)
    assert not np.allclose(ts.face_extras["p_female"], 0.5)  # the face's P(female) is still the ViT's (random)


def test_fva_compare_shows_the_zero_shot_systems_with_their_levels(synth, joint, tmp_path):
    result = run_cli("compare", "--systems", "imagebind-zeroshot,imagebind-zeroshot-file,age-gap", "--config",
                     synth.config, "--cache", synth.root, "--fold", "0", "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    rows = {r["system"]: r for r in json.loads((tmp_path / "out" / "compare.json").read_text())}
    assert {s: r["level"] for s, r in rows.items()} == {"imagebind-zeroshot": 0, "imagebind-zeroshot-file": 1,
                                                        "age-gap": 0}
    assert rows["imagebind-zeroshot"]["heard"] < 20  # the joint space carries identity with no training
    refused = run_cli("compare", "--systems", "imagebind-zeroshot,imagebind-zeroshot-file", "--config", synth.config,
                      "--cache", synth.root, "--fold", "0", "--pairwise", "--out", tmp_path / "refused")
    assert_user_error(refused, "imagebind-zeroshot-file")
