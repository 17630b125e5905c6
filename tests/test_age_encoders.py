"""The age estimators: face-age (nateraw/vit-age-classifier) and voice-age (audEERING's wav2vec 2.0 age-gender).

Each test folder is a tiny random model written in the published on-disk format by the modules' own writers
(``save_face_age`` / ``save_voice_age``, as the demo checkpoints) and loaded through fva's loading code, offline;
the references are transformers' models run directly and the heads computed by hand in numpy.
"""

from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from fva.errors import FvaError
from fva.extract import weights as W
from fva.extract.encoders.base import get_encoder_class

SR = 16000
CENTRES = np.array([1, 6, 15, 25, 35, 45, 55, 65, 75], np.float64)
LENGTHS = (16000, 401, 35 * SR, 21 * SR + 77, 9137)  # one window, the shortest, three windows, two, one
SIZES = [(50, 40), (224, 224), (300, 180), (97, 131), (16, 250)]


def clips(lengths=LENGTHS, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n) + 0.01).astype(np.float32) for n in lengths]


def images(sizes=SIZES, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def run(encoder, items):
    return encoder.encode(encoder.collate([encoder.preprocess(x) for x in items]))


def one_at_a_time(encoder, items) -> np.ndarray:
    return np.concatenate([run(encoder, [x]).embeddings.numpy() for x in items])


def assert_one_line_error(err: pytest.ExceptionInfo, *fragments: str) -> None:
    text = str(err.value)
    assert "\n" not in text, text
    for fragment in fragments:
        assert fragment in text, text


def copy_folder(src: Path, dst: Path, skip=()) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name not in skip:
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


@pytest.fixture(scope="module")
def face_folder(tmp_path_factory) -> Path:
    from fva.extract.encoders.face_age import save_face_age

    return save_face_age(tmp_path_factory.mktemp("face-age") / "model", seed=3)


@pytest.fixture(scope="module")
def voice_folder(tmp_path_factory) -> Path:
    from fva.extract.encoders.voice_age import save_voice_age

    return save_voice_age(tmp_path_factory.mktemp("voice-age") / "model", seed=4)


@pytest.fixture(scope="module")
def voice(voice_folder):
    return get_encoder_class("voice-age")(weights=voice_folder)


# ------------------------------------------------------------------------------------------------------- face
def test_face_age_is_expected_age_of_transformers_logits(face_folder):
    """Rows = softmax(ViTForImageClassification logits) . bin centres, by hand; a batch gives one-at-a-time."""
    from transformers import ViTForImageClassification, ViTImageProcessorPil

    enc = get_encoder_class("face-age")(weights=face_folder)
    assert enc.dim == 1 and enc.extras == ("age",)
    items = images()
    out = run(enc, items)
    assert out.embeddings.shape == (len(items), 1) and out.embeddings.dtype == torch.float32
    np.testing.assert_array_equal(out.extras["age"].numpy(), out.embeddings[:, 0].numpy())
    np.testing.assert_allclose(one_at_a_time(enc, items), out.embeddings.numpy(), rtol=1e-5, atol=1e-4)

    model = ViTForImageClassification.from_pretrained(face_folder).eval()
    processor = ViTImageProcessorPil.from_pretrained(face_folder)
    assert processor.size["height"] == processor.size["width"] == model.config.image_size
    with torch.no_grad():
        pixels = processor(images=items, return_tensors="pt")["pixel_values"]
        logits = model(pixel_values=pixels).logits.double().numpy()
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    np.testing.assert_allclose(out.embeddings[:, 0].numpy(), p @ CENTRES, rtol=1e-5, atol=1e-4)
    cfg = enc.config()
    assert cfg["bin_centres"] == list(CENTRES) and cfg["image_mean"] == [0.5] * 3 and cfg["image_std"] == [0.5] * 3


def test_face_age_published_preprocessor_file(face_folder):
    """The published preprocessor_config.json's keys only (old ViTFeatureExtractor style, size an int)."""
    raw = json.loads((face_folder / "preprocessor_config.json").read_text())
    assert raw == {"do_normalize": True, "do_resize": True, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
                   "size": 32}
    config = json.loads((face_folder / "config.json").read_text())
    assert config["architectures"] == ["ViTForImageClassification"] and config["model_type"] == "vit"
    assert [config["id2label"][str(i)] for i in range(9)][-1] == "more than 70"


# ------------------------------------------------------------------------------------------------------ voice
@pytest.mark.parametrize("seconds, starts", [
    (35, [0, 10, 15]), (20, [0]), (5, [0]), (30, [0, 10]), (45, [0, 10, 20, 25]), (20.5, [0, 0.5]),
    (40, [0, 10, 20])])
def test_window_rule(seconds, starts):
    """20 s windows every 10 s, the last ending at the clip's end; a clip of at most 20 s is one window."""
    from fva.extract.encoders.voice_age import window_starts

    assert window_starts(int(seconds * SR)) == [int(s * SR) for s in starts]


def test_voice_windows_preprocess_and_pickle(voice):
    pre = pickle.loads(pickle.dumps(voice.preprocess))
    long, short = clips((35 * SR, 9137))
    x = pre(long)
    assert x.shape == (3, 20 * SR) and x.dtype == np.float32
    for row, start in zip(x, (0, 10 * SR, 15 * SR)):  # each window normalised on its own (do_normalize)
        window = long[start:start + 20 * SR].astype(np.float64)
        np.testing.assert_allclose(row, (window - window.mean()) / np.sqrt(window.var() + 1e-7), rtol=1e-4, atol=1e-4)
    assert pre(short).shape == (1, 9137)


def reference_voice(folder: Path, audio: np.ndarray) -> np.ndarray:
    """[age years, p_female, p_male, p_child] by hand: windows [0,20), [10,30), [15,35) s ... as the rule says,
    each through transformers' feature extractor and Wav2Vec2Model, the mean of its last hidden state, the card's
    heads in numpy (tanh(dense) -> out_proj; softmax for gender), averaged over windows."""
    from safetensors.numpy import load_file
    from transformers import Wav2Vec2FeatureExtractor, Wav2Vec2Model

    model = Wav2Vec2Model.from_pretrained(folder).eval()
    extractor = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    state = {k: v.astype(np.float64) for k, v in load_file(str(folder / W.SAFETENSORS)).items()}

    def head(name: str, x: np.ndarray) -> np.ndarray:
        h = np.tanh(x @ state[f"{name}.dense.weight"].T + state[f"{name}.dense.bias"])
        return h @ state[f"{name}.out_proj.weight"].T + state[f"{name}.out_proj.bias"]

    n, win, hop = len(audio), 20 * SR, 10 * SR
    starts = [0] if n <= win else list(range(0, n - win, hop)) + [n - win]
    rows = []
    for s in starts:
        values = extractor(audio[s:s + win], sampling_rate=SR, return_tensors="pt")["input_values"]
        with torch.no_grad():
            pooled = model(values).last_hidden_state.mean(1).double().numpy()
        g = head("gender", pooled)
        g = np.exp(g - g.max(1, keepdims=True))
        rows.append(np.concatenate([head("age", pooled)[:, 0] * 100, (g / g.sum(1, keepdims=True))[0]]))
    return np.mean(rows, axis=0)


def test_voice_age_is_the_cards_heads_by_hand(voice, voice_folder):
    items = clips((35 * SR, 9137))
    out = run(voice, items)
    assert out.embeddings.shape == (2, 4) and voice.dim == 4 and voice.extras == ("age", "p_female")
    for row, audio in zip(out.embeddings.numpy(), items):
        np.testing.assert_allclose(row, reference_voice(voice_folder, audio), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out.embeddings[:, 1:].sum(1).numpy(), 1.0, atol=1e-5)
    np.testing.assert_array_equal(out.extras["age"].numpy(), out.embeddings[:, 0].numpy())
    np.testing.assert_array_equal(out.extras["p_female"].numpy(), out.embeddings[:, 1].numpy())


def test_voice_age_batch_equals_one_at_a_time(voice):
    """Clips of every length (one > 20 s: three windows; one of 21 s: two) in one padded batch, and in several
    forward passes (more windows than one pass takes), give each clip's one-at-a-time row."""
    import fva.extract.encoders.voice_age as V

    items = clips()
    assert voice.batched and voice.min_samples == 400
    batched = run(voice, items).embeddings.numpy()
    alone = one_at_a_time(voice, items)
    np.testing.assert_allclose(batched, alone, rtol=1e-4, atol=1e-4)
    old, V.MAX_WINDOWS = V.MAX_WINDOWS, 2
    try:
        np.testing.assert_allclose(run(voice, items).embeddings.numpy(), alone, rtol=1e-4, atol=1e-4)
    finally:
        V.MAX_WINDOWS = old
    with pytest.raises(ValueError, match="shorter than the 400"):
        run(voice, [np.zeros(399, np.float32)])


def test_voice_age_legacy_and_new_weight_names_bin(voice, voice_folder, tmp_path):
    """pytorch_model.bin with transformers' newer weight-norm names (parametrizations) loads the same weights."""
    from safetensors.torch import load_file

    state = load_file(str(voice_folder / W.SAFETENSORS))
    assert any(k.endswith("pos_conv_embed.conv.weight_g") for k in state)  # the published (legacy) names
    renamed = {k.replace("weight_g", "parametrizations.weight.original0").replace(
        "weight_v", "parametrizations.weight.original1"): v for k, v in state.items()}
    folder = copy_folder(voice_folder, tmp_path / "bin", skip=(W.SAFETENSORS,))
    torch.save(renamed, folder / W.BIN)
    enc = get_encoder_class("voice-age")(weights=folder)
    items = clips((16000, 9137))
    np.testing.assert_allclose(run(enc, items).embeddings.numpy(), run(voice, items).embeddings.numpy(),
                               rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------------------------------------- demo checkpoints
def test_demo_checkpoints_small_real_format_and_loaded(tmp_path):
    from safetensors import safe_open

    from fva.synth.checkpoints import write_demo_checkpoints

    got = write_demo_checkpoints(tmp_path, names=("face-age", "voice-age"))
    assert set(got) == {"face-age", "voice-age"}
    for name, folder in got.items():
        files = sorted(p.name for p in folder.iterdir())
        assert files == ["config.json", "model.safetensors", "preprocessor_config.json"], files
        assert sum(p.stat().st_size for p in folder.iterdir()) < 2_000_000
    with safe_open(str(got["voice-age"] / W.SAFETENSORS), "pt") as fh:
        keys = set(fh.keys())
    assert {"age.dense.weight", "age.dense.bias", "age.out_proj.weight", "age.out_proj.bias", "gender.dense.weight",
            "gender.out_proj.weight", "wav2vec2.encoder.pos_conv_embed.conv.weight_g",
            "wav2vec2.feature_extractor.conv_layers.0.conv.weight"} <= keys
    assert all(k.startswith(("wav2vec2.", "age.", "gender.")) for k in keys)
    with safe_open(str(got["face-age"] / W.SAFETENSORS), "pt") as fh:  # transformers-4 (published) ViT names
        assert "vit.encoder.layer.0.attention.attention.query.weight" in set(fh.keys())
    config = json.loads((got["voice-age"] / "config.json").read_text())
    assert config["architectures"] == ["AgeGenderModel"] and config["model_type"] == "wav2vec2"
    assert config["feat_extract_norm"] == "layer" and config["do_stable_layer_norm"] is True
    pre = json.loads((got["voice-age"] / "preprocessor_config.json").read_text())
    assert pre["feature_extractor_type"] == "Wav2Vec2FeatureExtractor" and pre["do_normalize"] is True
    for name, folder in got.items():
        start = time.perf_counter()
        enc = get_encoder_class(name)(weights=folder)
        assert time.perf_counter() - start < 1.0
        assert enc.weights_id == W.pretrained_identity(str(folder), folder)


# ----------------------------------------------------------------------------------------------------- errors
def test_bad_folders_are_one_line(face_folder, voice_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    cases = [("voice-age", tmp_path / "nowhere", ("no such folder", "--weights voice-age=DIR")),
             ("face-age", tmp_path / "nowhere", ("no such folder", "--weights face-age=DIR"))]
    afile = tmp_path / "a-file.bin"
    afile.write_bytes(b"x")
    cases.append(("voice-age", afile, ("not a folder",)))
    cases.append(("voice-age", copy_folder(voice_folder, tmp_path / "noconf", skip=("config.json",)),
                  ("no config.json", W.VOICE_AGE_HUB_ID)))
    cases.append(("voice-age", face_folder, ("model_type 'vit', expected 'wav2vec2'",)))
    cases.append(("face-age", voice_folder, ("model_type 'wav2vec2', expected 'vit'",)))
    cases.append(("voice-age", copy_folder(voice_folder, tmp_path / "nopre", skip=("preprocessor_config.json",)),
                  ("no preprocessor_config.json",)))
    cases.append(("voice-age", copy_folder(voice_folder, tmp_path / "noweights", skip=(W.SAFETENSORS,)),
                  ("no model.safetensors or pytorch_model.bin",)))
    state = load_file(str(voice_folder / W.SAFETENSORS))
    nohead = copy_folder(voice_folder, tmp_path / "nohead", skip=(W.SAFETENSORS,))
    save_file({k: v for k, v in state.items() if not k.startswith("gender.")}, str(nohead / W.SAFETENSORS))
    cases.append(("voice-age", nohead, ("does not match AgeGenderModel", "missing gender.dense.bias")))
    shaped = copy_folder(voice_folder, tmp_path / "shaped", skip=(W.SAFETENSORS,))
    save_file({**state, "gender.out_proj.weight": torch.zeros(2, state["gender.out_proj.weight"].shape[1]),
               "gender.out_proj.bias": torch.zeros(2)}, str(shaped / W.SAFETENSORS))
    cases.append(("voice-age", shaped, ("gender.out_proj", "has shape (2,")))
    nobone = copy_folder(voice_folder, tmp_path / "nobone", skip=(W.SAFETENSORS,))
    save_file({k: v for k, v in state.items() if ".layers.1." not in k}, str(nobone / W.SAFETENSORS))
    cases.append(("voice-age", nobone, ("checkpoint does not match Wav2Vec2Model", "missing encoder.layers.1.")))
    labels = copy_folder(face_folder, tmp_path / "labels")
    raw = json.loads((labels / "config.json").read_text())
    raw["id2label"] = {str(i): f"class{i}" for i in range(9)}
    raw["label2id"] = {f"class{i}": i for i in range(9)}
    (labels / "config.json").write_text(json.dumps(raw))
    cases.append(("face-age", labels, ("is not the 9 age bins", W.FACE_AGE_HUB_ID)))
    for name, folder, fragments in cases:
        with pytest.raises(FvaError) as err:
            get_encoder_class(name)(weights=str(folder))
        assert_one_line_error(err, *fragments)


# ---------------------------------------------------------------------------------------------------- weights
@pytest.mark.parametrize("name, hub", [("voice-age", W.VOICE_AGE_HUB_ID), ("face-age", W.FACE_AGE_HUB_ID)])
def test_weights_fetch_is_a_snapshot_of_the_hub_id(name, hub, voice_folder, face_folder, monkeypatch):
    """'fva weights fetch --encoders voice-age' is huggingface_hub's snapshot_download of the hub id with the
    PyTorch files and settings only; the encoders' sources are fetched only when named."""
    import huggingface_hub

    from fva.synth.testing import run_cli

    source = W.get_source(name)
    assert (source.library, source.ref, source.by_default, source.patterns) == (
        "huggingface_hub", hub, False, W.HUB_PATTERNS)
    assert source.licence == ("CC-BY-NC-SA-4.0" if name == "voice-age" else W.UNVERIFIED)
    assert name not in W.published_names() and name in W.published_names(every=True)
    assert get_encoder_class(name).default_weights == hub
    folder = voice_folder if name == "voice-age" else face_folder
    calls = []

    def snapshot_download(repo_id, local_files_only=False, allow_patterns=None, **kw):
        calls.append((repo_id, local_files_only, allow_patterns))
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("FVA_OFFLINE", "0")
    result = run_cli("weights", "fetch", "--encoders", name)
    assert result.exit_code == 0, result.output
    assert calls[0] == (hub, False, list(W.HUB_PATTERNS))
    assert all(c[0] == hub for c in calls)
    enc = get_encoder_class(name)()  # the default source, through the same snapshot
    assert enc.weights_id == W.pretrained_identity(hub, folder) and enc.weights_id.startswith(hub + "@")
