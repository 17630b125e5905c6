"""The two face encoders: vggface (deepface VGG-Face) and vit-age-gender (abhilash88/age-gender-prediction).

The full-size models are built once per session (random weights in each source's real on-disk format).
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("DEEPFACE_BACKEND_ENGINE", "pytorch")

from fva.errors import FvaError  # noqa: E402
from fva.extract.encoders import vggface, vit_age_gender  # noqa: E402

SIZES = [(50, 40), (224, 224), (300, 180), (97, 131), (16, 250)]  # (h, w): squares, wide, tall, up/down


def images(sizes=SIZES, seed=0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ------------------------------------------------------------------------------------------------------ vggface
@pytest.fixture(scope="session")
def deepface_home(tmp_path_factory) -> Path:
    """$DEEPFACE_HOME with .deepface/weights/vgg_face_weights.pth: deepface's own full VGG-Face, random
    weights (He-normal so that the fc7 output depends on the image, not on the biases)."""
    from deepface.models.facial_recognition.pytorch.VGGFace import base_model

    home = tmp_path_factory.mktemp("deepface_home")
    path = home / ".deepface" / "weights" / "vgg_face_weights.pth"
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    model = base_model()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                torch.nn.init.normal_(module.bias, std=0.01)
    torch.save(model.state_dict(), path)
    return home


@pytest.fixture(scope="session")
def vgg(deepface_home):
    """The encoder loaded with weights=None from deepface's location (DEEPFACE_HOME)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPFACE_HOME", str(deepface_home))
        return vggface.VggFace(weights=None)


@pytest.fixture()
def deepface_represent(deepface_home, monkeypatch):
    """DeepFace.represent on the same weights file (deepface's model cache cleared around the test)."""
    monkeypatch.setenv("DEEPFACE_HOME", str(deepface_home))
    from deepface import DeepFace
    from deepface.modules import modeling

    def clear():
        getattr(modeling, "cached_models", {}).get("facial_recognition", {}).pop("VGG-Face", None)

    def represent(bgr: np.ndarray) -> np.ndarray:
        out = DeepFace.represent(bgr, model_name="VGG-Face", detector_backend="skip", enforce_detection=False,
                                 align=False)
        return np.asarray(out[0]["embedding"], np.float64)

    clear()
    yield represent
    clear()


def test_vggface_loads_from_deepface_home(vgg, deepface_home):
    assert vgg.name == "vggface" and vgg.modality == "face" and vgg.extras == ()
    assert vgg.dim == 4096
    assert vgg.path == deepface_home / ".deepface" / "weights" / "vgg_face_weights.pth"
    assert vgg.weights_id.startswith("deepface-vgg_face_weights.pth@")
    assert not vgg.model.training


def test_vggface_batch_equals_deepface_represent(vgg, deepface_represent):
    imgs = images()
    out = vgg.encode(vgg.collate([vgg.preprocess(img) for img in imgs]))
    assert out.embeddings.shape == (5, 4096) and out.embeddings.dtype == torch.float32
    assert out.extras == {}
    emb = out.embeddings.numpy()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)  # represent is L2-normalised
    for img, mine in zip(imgs, emb):
        theirs = deepface_represent(np.ascontiguousarray(img[:, :, ::-1]))  # deepface takes BGR arrays
        assert rel(mine, theirs) < 1e-4
    # the comparison can see preprocessing errors: the images' embeddings differ, and so does a
    # channel-order mistake (deepface given the RGB array)
    assert max(float(emb[i] @ emb[j]) for i in range(5) for j in range(i + 1, 5)) < 0.999
    assert rel(emb[0], deepface_represent(imgs[0])) > 1e-3


def test_vggface_batched_equals_one_at_a_time(vgg):
    imgs = images(seed=1)
    batch = vgg.encode(vgg.collate([vgg.preprocess(img) for img in imgs])).embeddings
    for i, img in enumerate(imgs):
        single = vgg.encode(vgg.collate([vgg.preprocess(img)])).embeddings
        torch.testing.assert_close(batch[i:i + 1], single, rtol=1e-5, atol=1e-6)


def test_vggface_weights_file_and_folder(vgg, deepface_home):
    path = deepface_home / ".deepface" / "weights" / "vgg_face_weights.pth"
    by_file = vggface.VggFace(weights=str(path))
    assert by_file.path == path and by_file.weights_id == vgg.weights_id
    x = vgg.collate([vgg.preprocess(img) for img in images(SIZES[:2])])
    torch.testing.assert_close(by_file.encode(x).embeddings, vgg.encode(x).embeddings)
    assert vggface.resolve_weights(path.parent) == path  # a folder holding the file
    assert vggface.resolve_weights(deepface_home) == path  # a deepface home


def test_vggface_missing_weights_names_expected_path(tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPFACE_HOME", str(tmp_path))
    monkeypatch.setenv("FVA_OFFLINE", "1")  # online, deepface would download it (tests/test_weights.py)
    expected = tmp_path / ".deepface" / "weights" / "vgg_face_weights.pth"
    for weights in (None, "deepface"):
        with pytest.raises(FvaError, match="vgg_face_weights.pth") as err:
            vggface.VggFace(weights=weights)
        assert str(expected.parent) in str(err.value) and "--weights" in str(err.value)
    with pytest.raises(FvaError, match="no such file"):
        vggface.VggFace(weights=str(tmp_path / "nope.pth"))
    with pytest.raises(FvaError, match="no vgg_face_weights.pth in this folder"):
        vggface.VggFace(weights=str(tmp_path))
    assert not expected.exists()  # nothing was downloaded


def test_vggface_garbage_weights(tmp_path):
    garbage = tmp_path / "vgg_face_weights.pth"
    garbage.write_bytes(b"not a torch file" * 100)
    with pytest.raises(FvaError, match="not a deepface VGG-Face state dict") as err:
        vggface.VggFace(weights=str(garbage))
    assert str(garbage) in str(err.value)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv1_1.weight": torch.zeros(1)}, wrong)  # loads, but is not VGG-Face's state dict
    with pytest.raises(FvaError, match="not a deepface VGG-Face state dict"):
        vggface.VggFace(weights=str(wrong))


def test_vggface_preprocess_is_deepfaces():
    pre = vggface.VggFacePreprocess()
    img = images([(100, 50)])[0]
    x = pre(img)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    assert np.all(x[:, :, :56] == 0) and np.all(x[:, :, -56:] == 0)  # 50 -> 112 wide, padded to 224
    assert 0 <= x.min() and x.max() <= 1
    dark = np.ones((30, 30, 3), np.uint8)  # deepface scales by 1/255 only when max > 1
    assert pre(dark).max() == 1.0


# ----------------------------------------------------------------------------------------------- vit-age-gender
@pytest.fixture(scope="session")
def vit_folder(tmp_path_factory) -> Path:
    return vit_age_gender.save_vit_age_gender(tmp_path_factory.mktemp("vit") / "tiny",
                                              vit_age_gender.tiny_config(64), seed=3)


@pytest.fixture(scope="session")
def vit(vit_folder):
    return vit_age_gender.ViTAgeGender(weights=str(vit_folder))


def test_vit_saved_format_is_the_published_one(vit_folder):
    from safetensors.torch import load_file

    config = json.loads((vit_folder / "config.json").read_text())
    assert config["architectures"] == ["AgeGenderViTModel"] and config["model_type"] == "vit"
    keys = set(load_file(str(vit_folder / "model.safetensors")))
    for key in ("vit.embeddings.cls_token", "vit.encoder.layer.1.attention.attention.query.weight",
                "vit.encoder.layer.0.attention.output.dense.bias", "vit.encoder.layer.0.intermediate.dense.weight",
                "vit.encoder.layer.0.output.dense.weight", "vit.encoder.layer.0.layernorm_before.weight",
                "vit.layernorm.bias", "vit.pooler.dense.weight", "age_head.6.weight", "gender_head.6.bias"):
        assert key in keys
    pre = json.loads((vit_folder / "preprocessor_config.json").read_text())
    assert pre["image_mean"] == [0.485, 0.456, 0.406] and pre["size"] == {"height": 64, "width": 64}


def test_vit_encode_batched_equals_single(vit):
    assert vit.name == "vit-age-gender" and vit.modality == "face" and vit.extras == ("age", "p_female")
    assert vit.dim == 32 and vit.default_weights == "abhilash88/age-gender-prediction"
    imgs = images()
    out = vit.encode(vit.collate([vit.preprocess(img) for img in imgs]))
    assert out.embeddings.shape == (5, 32) and out.embeddings.dtype == torch.float32
    assert set(out.extras) == {"age", "p_female"}
    for name in ("age", "p_female"):
        assert out.extras[name].shape == (5,) and out.extras[name].dtype == torch.float32
    assert torch.all((out.extras["p_female"] >= 0) & (out.extras["p_female"] <= 1))
    assert torch.all(torch.isfinite(out.extras["age"]))
    assert out.embeddings.std(dim=0).min() > 0  # the images give different tokens
    for i, img in enumerate(imgs):
        single = vit.encode(vit.collate([vit.preprocess(img)]))
        torch.testing.assert_close(out.embeddings[i:i + 1], single.embeddings, rtol=1e-5, atol=1e-5)
        for name in ("age", "p_female"):
            torch.testing.assert_close(out.extras[name][i:i + 1], single.extras[name], rtol=1e-5, atol=1e-5)


def test_vit_matches_transformers(vit, vit_folder):
    """CLS = transformers' own ViTModel (its loader maps the published key names) on the same input, the
    input = transformers' ViTImageProcessor with the folder's preprocessor_config.json, and the extras =
    the heads on that token."""
    from transformers import ViTModel
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    imgs = images(seed=2)
    x = vit.collate([vit.preprocess(img) for img in imgs])
    processor = ViTImageProcessorPil.from_pretrained(str(vit_folder), do_center_crop=False)
    np.testing.assert_allclose(x.numpy(), processor(images=imgs, return_tensors="np")["pixel_values"],
                               rtol=0, atol=1e-6)
    reference = ViTModel.from_pretrained(str(vit_folder), add_pooling_layer=False).eval()
    with torch.no_grad():
        cls = reference(pixel_values=x).last_hidden_state[:, 0]
        age = vit.model.age_head(cls)[:, 0]
        p_female = torch.sigmoid(vit.model.gender_head[:-1](cls))[:, 0]
    out = vit.encode(x)
    torch.testing.assert_close(out.embeddings, cls, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.extras["age"], age, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out.extras["p_female"], p_female, rtol=1e-5, atol=1e-5)


def test_vit_full_size_published_config(tmp_path_factory):
    """The published config.json holds only architectures and model_type: ViTConfig's defaults, ViT-Base."""
    from transformers import ViTConfig

    folder = vit_age_gender.save_vit_age_gender(tmp_path_factory.mktemp("vit") / "base", ViTConfig(), seed=0)
    (folder / "config.json").write_text(json.dumps({"architectures": ["AgeGenderViTModel"], "model_type": "vit"}))
    encoder = vit_age_gender.ViTAgeGender(weights=str(folder))
    assert encoder.dim == 768
    assert (encoder.preprocess.height, encoder.preprocess.width) == (224, 224)
    out = encoder.encode(encoder.collate([encoder.preprocess(img) for img in images(SIZES[:2])]))
    assert out.embeddings.shape == (2, 768) and out.extras["age"].shape == (2,)


def copy_folder(src: Path, dst: Path, state_edit=None) -> Path:
    from safetensors.torch import load_file, save_file

    dst.mkdir(parents=True)
    for name in ("config.json", "preprocessor_config.json"):
        (dst / name).write_bytes((src / name).read_bytes())
    state = load_file(str(src / "model.safetensors"))
    if state_edit:
        state_edit(state)
    save_file(state, str(dst / "model.safetensors"))
    return dst


def test_vit_missing_or_renamed_key(vit_folder, tmp_path):
    key = "vit.encoder.layer.1.attention.attention.key.weight"
    gone = copy_folder(vit_folder, tmp_path / "gone", lambda s: s.pop(key))
    with pytest.raises(FvaError, match="missing") as err:
        vit_age_gender.ViTAgeGender(weights=str(gone))
    assert key in str(err.value)

    def rename(s):
        s["age_head.9.weight"] = s.pop("age_head.6.weight")

    renamed = copy_folder(vit_folder, tmp_path / "renamed", rename)
    with pytest.raises(FvaError) as err:
        vit_age_gender.ViTAgeGender(weights=str(renamed))
    assert "age_head.6.weight" in str(err.value) and "age_head.9.weight" in str(err.value)

    def reshape(s):
        s["gender_head.0.weight"] = s["gender_head.0.weight"][:, :8].contiguous()

    with pytest.raises(FvaError, match="gender_head.0.weight has shape"):
        vit_age_gender.ViTAgeGender(weights=str(copy_folder(vit_folder, tmp_path / "shape", reshape)))

    # the unused pooler / classifier may be present or not
    def drop_pooler_add_classifier(s):
        s.pop("vit.pooler.dense.weight"), s.pop("vit.pooler.dense.bias")
        s["classifier.weight"], s["classifier.bias"] = torch.zeros(2, 32), torch.zeros(2)

    ok = copy_folder(vit_folder, tmp_path / "ok", drop_pooler_add_classifier)
    assert vit_age_gender.ViTAgeGender(weights=str(ok)).dim == 32


def test_vit_bad_folders(vit_folder, tmp_path):
    with pytest.raises(FvaError, match="no config.json"):
        vit_age_gender.ViTAgeGender(weights=str(tmp_path))
    (tmp_path / "config.json").write_text((vit_folder / "config.json").read_text())
    with pytest.raises(FvaError, match="no model.safetensors or pytorch_model.bin"):
        vit_age_gender.ViTAgeGender(weights=str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"garbage" * 10)
    with pytest.raises(FvaError, match="unreadable weights file"):
        vit_age_gender.ViTAgeGender(weights=str(tmp_path))


def test_vit_pytorch_bin(vit_folder, vit, tmp_path):
    from safetensors.torch import load_file

    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("config.json", "preprocessor_config.json"):
        (folder / name).write_bytes((vit_folder / name).read_bytes())
    torch.save(load_file(str(vit_folder / "model.safetensors")), folder / "pytorch_model.bin")
    other = vit_age_gender.ViTAgeGender(weights=str(folder))
    x = vit.collate([vit.preprocess(img) for img in images(SIZES[:2])])
    torch.testing.assert_close(other.encode(x).embeddings, vit.encode(x).embeddings)


def test_vit_hub_id_not_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(FvaError, match="--weights DIR") as err:
        vit_age_gender.ViTAgeGender()  # the default: abhilash88/age-gender-prediction
    assert "abhilash88/age-gender-prediction" in str(err.value)
    with pytest.raises(FvaError, match="no such folder"):
        vit_age_gender.ViTAgeGender(weights=str(tmp_path / "missing" / "dir"))


# ------------------------------------------------------------------------------------------------------ pickling
def test_preprocessors_pickle(vit):
    imgs = images(SIZES[:3], seed=4)
    for pre in (vggface.VggFacePreprocess(), vit.preprocess):
        again = pickle.loads(pickle.dumps(pre))
        assert again == pre
        for img in imgs:
            np.testing.assert_array_equal(again(img), pre(img))
