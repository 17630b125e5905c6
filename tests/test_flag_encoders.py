"""The FLAG 2027 organisers' two features, each against the library that defines it, run directly.

* ``ecapa-embedding``: speechbrain's ``EncoderClassifier.encode_batch(wav, normalize=False)``, one clip at a
  time, on the real public ECAPA (``shared/models``) with real speech, and on a small checkpoint written in
  the organisers' model's own layout (``yangwang825/ecapa-tdnn-vox2``); batched extraction equals both.
* ``vggface-keras``: the organisers' Keras preprocessing done by hand on the image file (Pillow RGB, resize to
  224 x 224, BGR, minus the VGG-Face means) and the VGG-Face network run by hand (torch.nn.functional over the
  weights file's tensors); it differs from ``vggface`` (DeepFace.represent's feature) on the same weights.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from PIL import Image

os.environ.setdefault("DEEPFACE_BACKEND_ENGINE", "pytorch")

from fva.data.records import Manifest, MediaRecord  # noqa: E402
from fva.extract.cache import open_cache  # noqa: E402
from fva.synth.checkpoints import write_demo_vggface, write_organiser_ecapa  # noqa: E402
from fva.synth.testing import run_cli  # noqa: E402
from conftest import assert_user_error  # noqa: E402
from test_extract import REAL_MODEL, SPEECH, need_shared  # noqa: E402

VGGFACE_MEANS = np.array([93.5940, 104.7624, 129.1863], np.float32)  # B, G, R: the organisers' constants


@pytest.fixture(autouse=True)
def homes(tmp_path, monkeypatch):
    monkeypatch.setenv("FVA_MODELS", str(tmp_path / "fva-models"))


def table(folder: Path) -> dict[str, np.ndarray]:
    with open_cache(folder) as cache:
        emb = cache.load()
        return {k: emb[i] for i, k in enumerate(cache.keys)}


def manifest(root: Path, modality: str, paths: list[str], out: Path) -> Path:
    records = [MediaRecord(key=Path(p).stem, identity=Path(p).stem.split("_")[0], language="English",
                           modality=modality, path=p) for p in paths]
    Manifest("flag-check", str(root), "train", "full", records).write(out)
    return out


def extract(man: Path, cache: Path, encoder: str, weights: Path, *extra) -> dict[str, np.ndarray]:
    result = run_cli("extract", "--manifest", man, "--cache", cache, "--encoders", encoder, "--dtype", "float32",
                     "--weights", f"{encoder}={weights}", "--no-progress", *extra)
    assert result.exit_code == 0, result.output
    return table(cache / "flag-check" / "train-full" / encoder)


def speechbrain_embeddings(folder: Path, wavs: list[Path], save: Path) -> dict[str, np.ndarray]:
    """speechbrain's EncoderClassifier, loaded from the folder as speechbrain loads it, one clip at a time."""
    import shutil

    from speechbrain.inference.speaker import EncoderClassifier

    save.mkdir(parents=True, exist_ok=True)
    if (folder / "label_encoder.ckpt").is_file():  # the public folder keeps its label encoder under this name
        shutil.copyfile(folder / "label_encoder.ckpt", save / "label_encoder.txt")
    sb = EncoderClassifier.from_hparams(source=str(folder), savedir=str(save),
                                        overrides={"pretrained_path": str(folder)})
    out = {}
    for wav in wavs:
        x, rate = sf.read(wav, dtype="float32")
        assert rate == 16000 and x.ndim == 1
        out[wav.stem] = sb.encode_batch(torch.from_numpy(x)[None], normalize=False).squeeze().numpy()
    return out


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------------------------------------- ecapa-embedding
def test_ecapa_embedding_of_the_real_model_is_speechbrains_encode_batch(tmp_path):
    """Real speech, the real public ECAPA: batched extraction (length-mixed batches, a decoding worker) equals
    one clip at a time, and both equal speechbrain's encode_batch of the clip alone (192-d, not normalised)."""
    need_shared()
    wavs = sorted(SPEECH.glob("*.wav"))
    man = manifest(SPEECH, "voice", [w.name for w in wavs], tmp_path / "speech.jsonl")
    batched = extract(man, tmp_path / "a", "ecapa-embedding", REAL_MODEL, "--batch-size", "12", "--workers", "1")
    single = extract(man, tmp_path / "b", "ecapa-embedding", REAL_MODEL, "--batch-size", "1", "--workers", "0")
    reference = speechbrain_embeddings(REAL_MODEL, wavs, tmp_path / "sb")
    assert sorted(batched) == sorted(single) == sorted(reference) and len(reference) == 12
    for key, ref in reference.items():
        assert batched[key].shape == (192,)
        assert rel(batched[key], ref) <= 1e-5 and rel(single[key], ref) <= 1e-5, key
    norms = [np.linalg.norm(v) for v in batched.values()]
    assert max(abs(n - 1) for n in norms) > 0.5  # not L2-normalised


def test_ecapa_embedding_of_the_organisers_layout(tmp_path):
    """A checkpoint in yangwang825/ecapa-tdnn-vox2's own layout (Fbank with deltas off, ECAPA with groups, a
    classifier, no embedding normalisation, config.json) loads through the same code; synthetic clips of
    mixed lengths batched equal speechbrain's encode_batch of each clip alone, and the cache records the
    folder's weights identity."""
    folder = write_organiser_ecapa(tmp_path / "ecapa-tdnn-vox2")
    assert sorted(p.name for p in folder.iterdir()) == ["classifier.ckpt", "config.json", "embedding_model.ckpt",
                                                       "hyperparams.yaml", "label_encoder.txt"]
    rng = np.random.default_rng(7)
    media = tmp_path / "media"
    media.mkdir()
    wavs = []
    for i, seconds in enumerate((0.5, 3.2, 1.7, 0.9, 2.4)):
        t = np.arange(int(seconds * 16000)) / 16000
        x = 0.3 * np.sin(2 * np.pi * (120 + 40 * i) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(media / f"s{i}_clip.wav", x.astype(np.float32), 16000, subtype="FLOAT")
        wavs.append(media / f"s{i}_clip.wav")
    man = manifest(media, "voice", [w.name for w in wavs], tmp_path / "m.jsonl")
    batched = extract(man, tmp_path / "c", "ecapa-embedding", folder, "--batch-size", "5", "--workers", "0")
    reference = speechbrain_embeddings(folder, wavs, tmp_path / "sb")
    for key, ref in reference.items():
        assert rel(batched[key], ref) <= 1e-5, key
    with open_cache(tmp_path / "c" / "flag-check" / "train-full" / "ecapa-embedding") as cache:
        from fva.extract.weights import files_digest

        assert cache.attrs["weights_id"] == f"ecapa-tdnn-vox2@{files_digest([folder / 'embedding_model.ckpt'])}"
        assert cache.dim == 192


def test_ecapa_embedding_refuses_a_model_that_is_not_an_ecapa(tmp_path):
    """An x-vector speechbrain folder: one line naming what the embedding model is, exit 2, no cache."""
    from speechbrain.lobes.models.Xvector import Xvector

    folder = tmp_path / "xvector"
    folder.mkdir()
    (folder / "hyperparams.yaml").write_text(
        "n_mels: 24\npretrained_path: .\n"
        "compute_features: !new:speechbrain.lobes.features.Fbank\n    n_mels: !ref <n_mels>\n"
        "mean_var_norm: !new:speechbrain.processing.features.InputNormalization\n    norm_type: sentence\n"
        "    std_norm: False\n"
        "embedding_model: !new:speechbrain.lobes.models.Xvector.Xvector\n    in_channels: !ref <n_mels>\n"
        "    tdnn_channels: [8, 8, 8, 8, 16]\n    lin_neurons: 12\n"
        "modules:\n    compute_features: !ref <compute_features>\n    mean_var_norm: !ref <mean_var_norm>\n"
        "    embedding_model: !ref <embedding_model>\n"
        "pretrainer: !new:speechbrain.utils.parameter_transfer.Pretrainer\n    loadables:\n"
        "        embedding_model: !ref <embedding_model>\n    paths:\n"
        "        embedding_model: !ref <pretrained_path>/embedding_model.ckpt\n")
    torch.save(Xvector(in_channels=24, tdnn_channels=[8, 8, 8, 8, 16], lin_neurons=12).state_dict(),
               folder / "embedding_model.ckpt")
    media = tmp_path / "media"
    media.mkdir()
    sf.write(media / "a_1.wav", np.zeros(16000, np.float32), 16000)
    man = manifest(media, "voice", ["a_1.wav"], tmp_path / "m.jsonl")
    result = run_cli("extract", "--manifest", man, "--cache", tmp_path / "c", "--encoders", "ecapa-embedding",
                     "--weights", f"ecapa-embedding={folder}")
    assert_user_error(result, "embedding_model is Xvector, not speechbrain's ECAPA_TDNN")
    assert not (tmp_path / "c" / "flag-check" / "train-full" / "ecapa-embedding").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli("extract", "--manifest", man, "--cache", tmp_path / "c", "--encoders", "ecapa-embedding",
                     "--weights", f"ecapa-embedding={empty}")
    assert_user_error(result, "no hyperparams.yaml")


# ------------------------------------------------------------------------------------------------ vggface-keras
def vgg_by_hand(state: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """VGG-Face (Parkhi et al. 2015) up to fc7 after its ReLU, written out over the weight tensors: 13 3x3
    convolutions with ReLU in five blocks, each block ending in 2x2 max pooling, then fc6 (7x7) and fc7 (1x1)
    as convolutions with ReLU; dropout is the identity at inference."""
    blocks = [["conv1_1", "conv1_2"], ["conv2_1", "conv2_2"], ["conv3_1", "conv3_2", "conv3_3"],
              ["conv4_1", "conv4_2", "conv4_3"], ["conv5_1", "conv5_2", "conv5_3"]]
    for block in blocks:
        for name in block:
            x = F.relu(F.conv2d(x, state[f"{name}.weight"], state[f"{name}.bias"], padding=1))
        x = F.max_pool2d(x, 2, 2)
    x = F.relu(F.conv2d(x, state["fc6.weight"], state["fc6.bias"]))
    x = F.relu(F.conv2d(x, state["fc7.weight"], state["fc7.bias"]))
    return x.flatten(1)


def organisers_input(path: Path) -> np.ndarray:
    """The organisers' load_img, written out: Pillow RGB, resize((224, 224)), float32, BGR, minus the means."""
    arr = np.asarray(Image.open(path).convert("RGB").resize((224, 224)), dtype=np.float32)
    return (arr[..., ::-1] - VGGFACE_MEANS).transpose(2, 0, 1).copy()


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """Four face images (jpg and png, square, wide, tall, grey) and deepface's full VGG-Face in its real file."""
    base = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(3)
    paths = []
    for i, (h, w) in enumerate([(224, 224), (180, 300), (251, 97), (64, 64)]):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img = np.clip(img.astype(int) // 2 + np.linspace(0, 120, w, dtype=int)[None, :, None], 0, 255).astype(np.uint8)
        name = f"f{i}_img.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(img if i != 3 else img[..., 0], None if i != 3 else "L").save(base / name)
        paths.append(name)
    weights = write_demo_vggface(base / "deepface", seed=5)
    return base, paths, weights


def test_vggface_keras_is_the_organisers_feature_by_hand(faces, tmp_path):
    """Extraction (batched) equals one image at a time and the network run by hand on the organisers' input;
    the stored rows are fc7 after ReLU (non-negative, not unit length) and differ from vggface's."""
    base, paths, weights = faces
    man = manifest(base, "face", paths, tmp_path / "faces.jsonl")
    batched = extract(man, tmp_path / "a", "vggface-keras", weights, "--batch-size", "4", "--workers", "1")
    single = extract(man, tmp_path / "b", "vggface-keras", weights, "--batch-size", "1", "--workers", "0")
    deepface_rows = extract(man, tmp_path / "c", "vggface", weights, "--batch-size", "4", "--workers", "0")
    state = torch.load(weights, map_location="cpu", weights_only=True)
    x = torch.from_numpy(np.stack([organisers_input(base / p) for p in paths]))
    with torch.no_grad():
        by_hand = vgg_by_hand(state, x).numpy()
    for i, p in enumerate(paths):
        key = Path(p).stem
        assert batched[key].shape == (4096,)
        assert rel(batched[key], by_hand[i]) <= 1e-5 and rel(single[key], by_hand[i]) <= 1e-5, key
        assert batched[key].min() >= 0 and (batched[key] == 0).any()
        assert abs(np.linalg.norm(batched[key]) - 1) > 0.5  # not normalised
        assert abs(np.linalg.norm(deepface_rows[key]) - 1) < 1e-3  # vggface is L2-normalised...
        cos = batched[key] @ deepface_rows[key] / np.linalg.norm(batched[key])
        assert cos < 0.999, (key, cos)  # ...and another feature: another input to the same network
    with open_cache(tmp_path / "a" / "flag-check" / "train-full" / "vggface-keras") as a, \
            open_cache(tmp_path / "c" / "flag-check" / "train-full" / "vggface") as c:
        assert a.attrs["weights_id"] == c.attrs["weights_id"]  # the same weights file


def test_vggface_keras_preprocess_matches_pillow_on_decoded_images(faces):
    """The preprocessing on fva's decoded RGB array equals the organisers' on the file, for every image."""
    from fva.extract.encoders.vggface import KerasVggFacePreprocess
    from fva.extract.media import load_image

    base, paths, _ = faces
    for p in paths:
        np.testing.assert_array_equal(KerasVggFacePreprocess()(load_image(base / p)), organisers_input(base / p))
