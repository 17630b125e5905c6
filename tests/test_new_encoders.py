"""The encoders of FAME 2026's later entries: wavlm, dinov2, clip-image (and their pooling variants).

Each test folder is written by transformers' own ``save_pretrained`` (model and feature extractor / image
processor) from a tiny random config, and loaded through fva's loading code, offline; the references are
transformers' models run directly.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from fva.errors import FvaError
from fva.extract import weights as W
from fva.extract.encoders.base import get_encoder_class

LENGTHS = (16000, 4000, 9137, 401, 12000)  # samples at 16 kHz: the padded batch has clips of every length
SIZES = [(50, 40), (224, 224), (300, 180), (97, 131), (16, 250)]


def clips(lengths=LENGTHS, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for n in lengths]


def images(sizes=SIZES, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def encode(encoder, items) -> np.ndarray:
    return encoder.encode(encoder.collate([encoder.preprocess(x) for x in items])).embeddings.numpy()


def one_at_a_time(encoder, items) -> np.ndarray:
    return np.concatenate([encode(encoder, [x]) for x in items])


def assert_one_line_error(err: pytest.ExceptionInfo, *fragments: str) -> None:
    text = str(err.value)
    assert "\n" not in text, text
    for fragment in fragments:
        assert fragment in text, text


# ------------------------------------------------------------------------------------------------------ WavLM
def wavlm_config(norm: str = "layer"):
    from transformers import WavLMConfig

    return WavLMConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       conv_dim=(16,) * 7, feat_extract_norm=norm, do_stable_layer_norm=norm == "layer",
                       num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, num_buckets=32,
                       max_bucket_distance=80)


def save_wavlm(folder: Path, norm: str = "layer", seed: int = 0) -> Path:
    """WavLMModel.save_pretrained + Wav2Vec2FeatureExtractor.save_pretrained, as microsoft/wavlm-large ships
    (its extractor: do_normalize, return_attention_mask for the layer-normalised model)."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMModel

    torch.manual_seed(seed)
    WavLMModel(wavlm_config(norm)).save_pretrained(folder)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=norm == "layer").save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def wavlm_folder(tmp_path_factory) -> Path:
    return save_wavlm(tmp_path_factory.mktemp("wavlm") / "wavlm-tiny")


@pytest.fixture(scope="module")
def wavlm(wavlm_folder):
    return get_encoder_class("wavlm")(str(wavlm_folder))


def reference_wavlm(folder: Path, audio: np.ndarray, layers: bool = False, weights=None) -> np.ndarray:
    """transformers alone on one clip: its feature extractor, its model, the mean over every frame."""
    from transformers import Wav2Vec2FeatureExtractor, WavLMModel

    fe = Wav2Vec2FeatureExtractor.from_pretrained(folder)
    model = WavLMModel.from_pretrained(folder).eval()
    inputs = fe(audio, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        out = model(inputs["input_values"], output_hidden_states=True)
    if not layers:
        return out.last_hidden_state[0].mean(0).numpy()
    states = torch.stack(out.hidden_states)[:, 0]  # (L + 1, T, D)
    w = torch.full((len(states),), 1 / len(states)) if weights is None else torch.tensor(weights)
    return (w[:, None, None] * states).sum(0).mean(0).numpy()


def test_wavlm_is_transformers_mean_pooled_last_layer(wavlm, wavlm_folder):
    assert wavlm.dim == 32 and wavlm.modality == "voice" and wavlm.batched
    assert wavlm.min_samples == 400  # WavLM's convolution stack: 25 ms at 16 kHz for one frame
    audio = clips()[0]
    np.testing.assert_allclose(encode(wavlm, [audio])[0], reference_wavlm(wavlm_folder, audio), rtol=1e-4,
                               atol=1e-5)
    assert wavlm.config()["pooling"] == "last" and wavlm.config()["do_normalize"] is True


def test_wavlm_padded_batch_equals_one_at_a_time(wavlm):
    """Zero padding + attention mask, and a mean over each clip's own frames: the batch is the single clips."""
    items = clips()
    batched, single = encode(wavlm, items), one_at_a_time(wavlm, items)
    np.testing.assert_allclose(batched, single, rtol=1e-4, atol=1e-5)
    # without the mask (or with padding frames in the mean) the short clips would change
    values, lengths = wavlm.collate([wavlm.preprocess(x) for x in items])
    with torch.no_grad():
        unmasked = wavlm.model(values).last_hidden_state.mean(1).numpy()
    assert np.abs(unmasked[1] - single[1]).max() > 1e-3


def test_wavlm_layers_equal_and_given_weights(wavlm_folder):
    layers = get_encoder_class("wavlm-layers")(str(wavlm_folder))
    items = clips()[:3]
    got = encode(layers, items)
    for x, row in zip(items, got):
        np.testing.assert_allclose(row, reference_wavlm(wavlm_folder, x, layers=True), rtol=1e-4, atol=1e-5)
    assert layers.config()["layer_weights"] == pytest.approx([1 / 3] * 3)
    given = (0.2, -0.3, 1.5)  # used as given (no normalisation)
    weighted = get_encoder_class("wavlm-layers")(str(wavlm_folder), layer_weights=given)
    for x, row in zip(items, encode(weighted, items)):
        np.testing.assert_allclose(row, reference_wavlm(wavlm_folder, x, layers=True, weights=given), rtol=1e-4,
                                   atol=1e-5)
    np.testing.assert_allclose(encode(weighted, items), one_at_a_time(weighted, items), rtol=1e-4, atol=1e-5)
    with pytest.raises(FvaError, match="2 layer weights given, the model has 3 hidden states"):
        get_encoder_class("wavlm-layers")(str(wavlm_folder), layer_weights=(0.5, 0.5))
    from fva.extract.encoders.wavlm import register_layer_weights

    cls = register_layer_weights("wavlm-test-top", given)
    assert get_encoder_class("wavlm-test-top") is cls and cls(str(wavlm_folder)).layer_weights == given


def test_wavlm_group_norm_model_runs_clips_alone(tmp_path):
    """A group-normalised model (WavLM-Base) normalises over time, padding included: one clip at a time."""
    folder = save_wavlm(tmp_path / "base", norm="group")
    enc = get_encoder_class("wavlm")(str(folder))
    assert not enc.batched
    items = clips()[:3]
    np.testing.assert_allclose(encode(enc, items), one_at_a_time(enc, items), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(encode(enc, items[1:2])[0], reference_wavlm(folder, items[1]), rtol=1e-4, atol=1e-5)


def test_wavlm_legacy_weight_norm_bin(wavlm_folder, wavlm, tmp_path):
    """pytorch_model.bin with the published (weight_g / weight_v) weight-norm names loads the same weights."""
    from safetensors.torch import load_file

    state = load_file(str(wavlm_folder / W.SAFETENSORS))
    renames = {"parametrizations.weight.original0": "weight_g", "parametrizations.weight.original1": "weight_v"}
    legacy = {}
    for k, v in state.items():
        for new, old in renames.items():
            k = k.replace(new, old)
        legacy[k] = v
    assert any(k.endswith("weight_g") for k in legacy)
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (folder / name).write_bytes((wavlm_folder / name).read_bytes())
    torch.save(legacy, folder / W.BIN)
    enc = get_encoder_class("wavlm")(str(folder))
    items = clips()[:2]
    np.testing.assert_allclose(encode(enc, items), encode(wavlm, items), rtol=1e-5, atol=1e-6)


def test_wavlm_short_clip_and_sampling_rate(wavlm, wavlm_folder, tmp_path):
    with pytest.raises(ValueError, match="shorter than the 400"):
        encode(wavlm, [np.zeros(399, np.float32)])
    folder = tmp_path / "w8k"
    folder.mkdir()
    for p in wavlm_folder.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    pre = json.loads((folder / "preprocessor_config.json").read_text())
    (folder / "preprocessor_config.json").write_text(json.dumps({**pre, "sampling_rate": 8000}))
    with pytest.raises(FvaError, match="sampling_rate 8000; fva decodes audio at 16000 Hz"):
        get_encoder_class("wavlm")(str(folder))


# ----------------------------------------------------------------------------------------------------- DINOv2
def save_dinov2(folder: Path, seed: int = 0) -> Path:
    """Dinov2Model.save_pretrained + BitImageProcessor settings as facebook/dinov2-* ship them (shortest edge
    then center crop, bicubic, ImageNet mean and std), scaled down."""
    from transformers import BitImageProcessorPil, Dinov2Config, Dinov2Model

    torch.manual_seed(seed)
    Dinov2Model(Dinov2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2, image_size=28,
                             patch_size=14)).save_pretrained(folder)
    BitImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28}, resample=3,
                         image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def dinov2_folder(tmp_path_factory) -> Path:
    return save_dinov2(tmp_path_factory.mktemp("dinov2") / "dinov2-tiny")


def reference_dinov2(folder: Path, rgb: np.ndarray) -> torch.Tensor:
    from transformers import BitImageProcessorPil, Dinov2Model

    pixels = BitImageProcessorPil.from_pretrained(folder)(images=rgb, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        return Dinov2Model.from_pretrained(folder).eval()(pixel_values=pixels).last_hidden_state[0]


def test_dinov2_poolings_are_transformers_outputs(dinov2_folder):
    items = images()
    refs = [reference_dinov2(dinov2_folder, x) for x in items]
    for name, pool in (("dinov2", lambda h: h[0]), ("dinov2-patch-mean", lambda h: h[1:].mean(0)),
                       ("dinov2-mean", lambda h: h.mean(0))):
        enc = get_encoder_class(name)(str(dinov2_folder))
        assert enc.dim == 32 and enc.modality == "face"
        got = encode(enc, items)
        np.testing.assert_allclose(got, np.stack([pool(h).numpy() for h in refs]), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(got, one_at_a_time(enc, items), rtol=1e-4, atol=1e-5)
    assert get_encoder_class("dinov2")(str(dinov2_folder)).config()["image_size"] == [28, 28]


# ------------------------------------------------------------------------------------------------------- CLIP
def save_clip(folder: Path, seed: int = 0) -> Path:
    """A whole CLIPModel.save_pretrained (text tower included, as openai/clip-vit-large-patch14 ships) +
    CLIPImageProcessor settings."""
    from transformers import CLIPConfig, CLIPImageProcessorPil, CLIPModel

    torch.manual_seed(seed)
    config = CLIPConfig(text_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, vocab_size=100, bos_token_id=0, eos_token_id=1),
                        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                           intermediate_size=64, image_size=32, patch_size=16), projection_dim=24)
    CLIPModel(config).save_pretrained(folder)
    CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    return save_clip(tmp_path_factory.mktemp("clip") / "clip-tiny")


def test_clip_image_is_get_image_features_and_pooled(clip_folder, tmp_path):
    from transformers import CLIPImageProcessorPil, CLIPModel

    items = images()
    pixels = CLIPImageProcessorPil.from_pretrained(clip_folder)(images=items, return_tensors="pt")["pixel_values"]
    full = CLIPModel.from_pretrained(clip_folder).eval()
    with torch.no_grad():
        features = full.get_image_features(pixel_values=pixels)
        features = getattr(features, "pooler_output", features)  # a tensor, or an output object (transformers 5)
        pooled = full.vision_model(pixel_values=pixels).pooler_output
    projected = get_encoder_class("clip-image")(str(clip_folder))
    assert projected.dim == 24
    np.testing.assert_allclose(encode(projected, items), features.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(encode(projected, items), one_at_a_time(projected, items), rtol=1e-4, atol=1e-5)
    plain = get_encoder_class("clip-image-pooled")(str(clip_folder))
    assert plain.dim == 32
    np.testing.assert_allclose(encode(plain, items), pooled.numpy(), rtol=1e-4, atol=1e-5)
    # the image tower saved alone loads the same
    from transformers import CLIPVisionModelWithProjection

    tower = projected.model
    tower.save_pretrained(tmp_path / "tower")
    settings = "preprocessor_config.json"
    (tmp_path / "tower" / settings).write_bytes((clip_folder / settings).read_bytes())
    assert isinstance(tower, CLIPVisionModelWithProjection)
    np.testing.assert_allclose(encode(get_encoder_class("clip-image")(str(tmp_path / "tower")), items),
                               features.numpy(), rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------- shared behaviour
def test_preprocessors_pickle(wavlm, dinov2_folder, clip_folder):
    """They run in data-loader worker processes."""
    for enc in (wavlm, get_encoder_class("dinov2")(str(dinov2_folder)),
                get_encoder_class("clip-image")(str(clip_folder))):
        item = clips()[1] if enc.modality == "voice" else images()[0]
        np.testing.assert_array_equal(pickle.loads(pickle.dumps(enc.preprocess))(item), enc.preprocess(item))


def copy_folder(src: Path, dst: Path, skip=()) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        if p.name not in skip:
            (dst / p.name).write_bytes(p.read_bytes())
    return dst


def test_bad_folders_are_one_line(wavlm_folder, dinov2_folder, clip_folder, tmp_path):
    from safetensors.torch import load_file, save_file

    cases = [
        ("wavlm", tmp_path / "nowhere", ("no such folder", "--weights wavlm=DIR", W.WAVLM_HUB_ID)),
        ("dinov2", copy_folder(dinov2_folder, tmp_path / "noconfig", {"config.json"}), ("no config.json",)),
        ("dinov2", str(wavlm_folder), ("model_type 'wavlm', expected 'dinov2'",)),
        ("clip-image", str(dinov2_folder), ("model_type 'dinov2', expected 'clip' or 'clip_vision_model'",)),
        ("wavlm", copy_folder(wavlm_folder, tmp_path / "nopre", {"preprocessor_config.json"}),
         ("no preprocessor_config.json",)),
        ("wavlm", copy_folder(wavlm_folder, tmp_path / "noweights", {W.SAFETENSORS}),
         ("no model.safetensors or pytorch_model.bin", W.WAVLM_HUB_ID)),
    ]
    garbage = copy_folder(dinov2_folder, tmp_path / "garbage")
    (garbage / W.SAFETENSORS).write_bytes(b"not a safetensors file")
    cases.append(("dinov2", garbage, ("Dinov2Model could not load it", "download it again")))
    missing = copy_folder(dinov2_folder, tmp_path / "missing")
    state = load_file(str(missing / W.SAFETENSORS))
    dropped = next(k for k in state if "layer.1." in k)
    save_file({k: v for k, v in state.items() if k != dropped}, str(missing / W.SAFETENSORS), metadata={"format": "pt"})
    cases.append(("dinov2", missing, ("checkpoint does not match Dinov2Model: missing", "layer.1.", "unexpected none")))
    shaped = copy_folder(clip_folder, tmp_path / "shaped")
    cfg = json.loads((shaped / "config.json").read_text())
    (shaped / "config.json").write_text(json.dumps({**cfg, "projection_dim": 20}))
    cases.append(("clip-image", shaped, ("weights of other shapes than config.json describes", "visual_projection")))
    badjson = copy_folder(wavlm_folder, tmp_path / "badjson")
    (badjson / "config.json").write_text("{")
    cases.append(("wavlm", badjson, ("not valid JSON",)))
    afile = tmp_path / "a-file.bin"
    afile.write_bytes(b"x")
    cases.append(("clip-image", afile, ("not a folder", "--weights clip-image=DIR")))
    for name, folder, fragments in cases:
        with pytest.raises(FvaError) as err:
            get_encoder_class(name)(str(folder))
        assert_one_line_error(err, *fragments)


def test_sources_identities_and_fetch_patterns(dinov2_folder, monkeypatch):
    """The three are published Hugging Face sources, fetched only when named, with their PyTorch files only;
    the identity 'fva weights list' computes is the one the encoder records (one function)."""
    import huggingface_hub

    for name, hub in (("wavlm", "microsoft/wavlm-large"), ("dinov2", "facebook/dinov2-giant"),
                      ("clip-image", "openai/clip-vit-large-patch14")):
        source = W.get_source(name)
        assert (source.library, source.ref, source.by_default) == ("huggingface_hub", hub, False)
        assert get_encoder_class(name).default_weights == hub
    assert "dinov2" not in W.published_names() and "dinov2" in W.published_names(every=True)
    assert W.published_names(include_lid=False) == ["speaker-ecapa", "vggface", "vit-age-gender"]

    calls = []

    def snapshot_download(repo_id, local_files_only=False, allow_patterns=None, **kw):
        calls.append((repo_id, local_files_only, allow_patterns))
        return str(dinov2_folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("FVA_OFFLINE", "0")
    got = W.fetch("dinov2")
    assert calls[0] == (W.DINOV2_HUB_ID, False, list(W.HUB_PATTERNS))
    assert got.present and got.weights_id == W.pretrained_identity(W.DINOV2_HUB_ID, dinov2_folder)
    enc = get_encoder_class("dinov2")()  # the default source, through the same snapshot
    assert enc.weights_id == got.weights_id and enc.weights_id.startswith("facebook/dinov2-giant@")
    local = get_encoder_class("dinov2-patch-mean")(str(dinov2_folder))
    assert local.weights_id == W.pretrained_identity(str(dinov2_folder), dinov2_folder) == enc.weights_id.replace(
        W.DINOV2_HUB_ID, "dinov2-tiny")


# ------------------------------------------------------------------ the 4th entry's system over these encoders
def copy_encoder_cache(folder: Path, source: str, target: str) -> None:
    """``folder/source`` copied as the cache of encoder ``target`` (its shards say so)."""
    import shutil

    import h5py

    shutil.copytree(folder / source, folder / target)
    for path in sorted((folder / target).glob("shard-*.h5")):
        with h5py.File(path, "r+") as fh:
            fh.attrs["encoder"] = target
            fh.attrs["weights_id"] = f"{target}@synthetic"


def test_gated_fusion_opl_config_sets_only_its_system():
    import yaml

    from fva.heads.config import system_configs

    raw = yaml.safe_load(system_configs()["gated-fusion-opl"].read_text())
    assert set(raw) == {"features", "model", "train"}  # no seed, data or score settings: the base config's stay
    assert raw["features"] == {"voice_encoders": ["wavlm"], "face_encoders": ["dinov2-mean"]}
    assert set(raw["train"]) == {"lr", "weight_decay", "batch_size"}
    assert raw["model"]["system"] == "fop" and raw["model"]["params"]["adapter_hidden"] == 512
    for name in raw["features"]["voice_encoders"] + raw["features"]["face_encoders"]:
        get_encoder_class(name)  # registered encoders


def test_gated_fusion_opl_trains_and_scores_through_compare(synth, tmp_path):
    """``fva compare --systems gated-fusion-opl`` on the synthetic cache: the config's features (wavlm,
    dinov2-mean: here copies of the synthetic speaker and face caches) feed FOP with MLP adapters."""
    import yaml

    from fva.evaluate.scores import read_scores
    from fva.heads.experiment import load_checkpoint, read_experiment
    from fva.heads.systems.fop import FOP
    from fva.synth.testing import run_cli

    for subset in ("train", "test"):
        folder = synth.train.parent / synth.train.name.replace("train", subset)
        copy_encoder_cache(folder, "speaker-ecapa", "wavlm")
        copy_encoder_cache(folder, "vggface", "dinov2-mean")
    base = yaml.safe_load(synth.config.read_text())
    base["train"].update(epochs=3, patience=3)
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(base))
    torch.set_num_threads(1)
    try:
        result = run_cli("compare", "--systems", "gated-fusion-opl", "--config", tmp_path / "base.yaml", "--cache",
                         synth.root, "--fold", "0", "--out", tmp_path / "out")
    finally:
        torch.set_num_threads(THREADS)
    assert result.exit_code == 0, result.output
    exp = tmp_path / "out" / "gated-fusion-opl"
    cfg, _ = read_experiment(exp)
    assert cfg.features.voice_encoders == ["wavlm"] and cfg.features.face_encoders == ["dinov2-mean"]
    assert cfg.data.num_folds == base["data"]["num_folds"] and cfg.train.batch_size == 512  # base + system
    model, _ = load_checkpoint(exp / "fold0" / "checkpoint.pt")
    assert isinstance(model, FOP) and len(model.voice_branch.fc1) == 7 and set(model.fusion_layer.linears) == {
        "face", "voice"}
    scores = read_scores(exp / "fold0" / "dev_scores_English.txt")
    assert scores and all(np.isfinite(list(scores.values())))
    rows = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert rows[0]["system"] == "gated-fusion-opl" and 0 <= rows[0]["heard"] <= 100


THREADS = torch.get_num_threads()


def test_offline_without_a_copy_names_the_source(monkeypatch, tmp_path):
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FVA_OFFLINE", "0")
    for name, source in (("dinov2-patch-mean", "dinov2"), ("wavlm-layers", "wavlm"), ("clip-image", "clip-image")):
        with pytest.raises(FvaError) as err:
            get_encoder_class(name)()
        assert_one_line_error(err, f"{source}: {W.get_source(source).ref} is not in the Hugging Face cache",
                              f"'fva weights fetch --encoders {source}'", "--weights DIR")


def test_fop_adapter_options_forward_by_hand():
    """The gated-fusion-opl options of FOP, by hand: LayerNorm, MLP adapter, L2-normalise, Linear, tanh; the
    gate reads the normalised branch outputs; defaults keep FOP's (official) module names."""
    import torch.nn.functional as F

    from fva.heads.config import ModelConfig
    from fva.heads.systems.fop import FOP

    params = dict(dim=8, gate_dim=4, adapter_hidden=16, activation="gelu", input_layer_norm=True,
                  modality_linear=True, gate_dropout=0.3)
    torch.manual_seed(0)
    model = FOP(10, 12, 5, ModelConfig(system="fop", params=params)).eval()
    v, f = torch.randn(6, 10), torch.randn(6, 12)
    with torch.no_grad():
        def branch(b, x):
            h = F.layer_norm(x, x.shape[1:], b.layer_norm.weight, b.layer_norm.bias)
            lin1, bn1, _, _, lin2, bn2, _ = b.fc1
            h = F.gelu(bn1(lin1(h)))
            return F.normalize(F.gelu(bn2(lin2(h))), dim=1)

        bv, bf = branch(model.voice_branch, v), branch(model.face_branch, f)
        ev, ef = model.embed("voice", v), model.embed("face", f)
        lin = model.fusion_layer.linears
        torch.testing.assert_close(ev, lin["voice"](bv))
        torch.testing.assert_close(ef, lin["face"](bf))
        gate = torch.sigmoid(model.fusion_layer.attention(torch.cat([bf, bv], 1)))
        fused, _ = model(v, f)
        expected = gate * torch.tanh(lin["face"](bf)) + (1 - gate) * torch.tanh(lin["voice"](bv))
        torch.testing.assert_close(fused, expected)
        torch.testing.assert_close(model.pair_distances(ev, ef), (torch.tanh(ef) - torch.tanh(ev)).norm(dim=1))
    plain = FOP(10, 12, 5, ModelConfig(system="fop")).state_dict()
    assert not any(k.startswith("fusion_layer.linears") or ".layer_norm." in k for k in plain)
    assert "fusion_layer.attention.1.weight" in plain  # the official gate layout


# ------------------------------------------------------------------------------------------- through fva extract
SPEECH = Path(__file__).resolve().parents[2] / "shared" / "samples" / "speech"


def test_fva_extract_with_the_new_encoders(wavlm_folder, wavlm, dinov2_folder, tmp_path):
    """``fva extract`` (data-loader workers, length-sorted batches, the cache) writes what the encoders give
    one clip or image at a time, with their weights identity."""
    from PIL import Image

    from fva.data.records import Manifest, MediaRecord
    from fva.extract.cache import open_cache
    from fva.synth.testing import run_cli

    media = tmp_path / "media"
    media.mkdir()
    rng = np.random.default_rng(3)
    records = []
    wavs = sorted(SPEECH.glob("*.wav"))[:4]
    if not wavs:  # no shared speech here: short synthetic clips, written as wav
        import soundfile as sf

        for i, n in enumerate((8000, 20000, 12345)):
            sf.write(media / f"v{i}.wav", (0.1 * rng.standard_normal(n)).astype(np.float32), 16000)
        wavs = sorted(media.glob("v*.wav"))
    for p in wavs:
        if p.parent != media:
            (media / p.name).write_bytes(p.read_bytes())
        records.append(MediaRecord(key=p.stem, identity="id1", language="English", modality="voice", path=p.name))
    for i, (h, w) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(media / f"f{i}.png")
        records.append(MediaRecord(key=f"f{i}", identity="id1", language="English", modality="face", path=f"f{i}.png"))
    manifest = tmp_path / "m.jsonl"
    Manifest("toy", str(media), "train", "full", records).write(manifest)
    result = run_cli("extract", "--manifest", manifest, "--cache", tmp_path / "cache", "--encoders", "wavlm,dinov2",
                     "--weights", f"wavlm={wavlm_folder}", "--weights", f"dinov2={dinov2_folder}", "--dtype", "float32",
                     "--batch-size", "3", "--workers", "1", "--no-progress")
    assert result.exit_code == 0, result.output
    from fva.extract.media import load_audio, load_image

    dinov2 = get_encoder_class("dinov2")(str(dinov2_folder))
    for enc, items in ((wavlm, [r for r in records if r.modality == "voice"]),
                       (dinov2, [r for r in records if r.modality == "face"])):
        with open_cache(tmp_path / "cache" / "toy" / "train-full" / enc.name) as cache:
            emb = cache.load()
            got = dict(zip(cache.keys, emb))
            assert cache.attrs["weights_id"] == enc.weights_id and cache.attrs["dim"] == enc.dim
        for r in items:
            x = load_audio(media / r.path) if enc.modality == "voice" else load_image(media / r.path)
            np.testing.assert_allclose(got[r.key], encode(enc, [x])[0], rtol=1e-4, atol=1e-5)


def test_extra_checkpoint_keys_alone_are_accepted(dinov2_folder, tmp_path):
    """A checkpoint with every weight of the model and more (e.g. a training head) loads the model's weights."""
    from safetensors.torch import load_file, save_file

    folder = copy_folder(dinov2_folder, tmp_path / "extra")
    state = load_file(str(folder / W.SAFETENSORS))
    save_file({**state, "head.weight": torch.zeros(2, 2)}, str(folder / W.SAFETENSORS), metadata={"format": "pt"})
    items = images()[:2]
    np.testing.assert_allclose(encode(get_encoder_class("dinov2")(str(folder)), items),
                               encode(get_encoder_class("dinov2")(str(dinov2_folder)), items), rtol=1e-6, atol=1e-6)


def test_weights_list_shows_the_new_sources(monkeypatch, tmp_path):
    from huggingface_hub import constants

    from fva.synth.testing import run_cli

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("FVA_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path / "deepface"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # restored after the test: --offline sets them in this process
    monkeypatch.setenv("FVA_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    result = run_cli("--offline", "weights", "list", "--json")
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    for name, hub in (("wavlm", W.WAVLM_HUB_ID), ("dinov2", W.DINOV2_HUB_ID), ("clip-image", W.CLIP_HUB_ID)):
        assert rows[name]["source"] == f"huggingface_hub {hub}" and rows[name]["published"]
        assert not rows[name]["present"] and rows[name]["weights_id"] is None
