"""vit-age-gender: the ViT-Base age/gender model ``abhilash88/age-gender-prediction``; output the 768-d CLS
token of the last hidden state, plus its heads' age (years) and P(female) per image.

The published model (Hugging Face ``abhilash88/age-gender-prediction``, Apache-2.0; UTKFace, 94.3 % gender
accuracy, 4.5 years age MAE per its model card) is ``AgeGenderViTModel`` in the repository's ``model.py``,
loaded there with ``trust_remote_code``. It is rebuilt here from plain modules, never with remote code:

* ``vit``: ``transformers.ViTModel(config, add_pooling_layer=False)`` from ``google/vit-base-patch16-224``
  (hidden 768, 12 layers, 12 heads, 224 x 224, patch 16);
* the CLS token ``last_hidden_state[:, 0]`` (no pooler, no final tanh) feeds two heads, each an
  ``nn.Sequential``: ``age_head`` = Linear(768, 256), ReLU, Dropout(0.1), Linear(256, 64), ReLU,
  Dropout(0.1), Linear(64, 1) -- age in years, a plain regression (no scaling); ``gender_head`` = the same
  layers then Sigmoid -- P(female) (the published ``forward`` returns ``logits = [age, p_female]`` and its
  users read ``>= 0.5`` as Female). Parameters: ``age_head.{0,3,6}.*``, ``gender_head.{0,3,6}.*``.

Note: the repository's helper ``predict_age_gender`` applies ``torch.sigmoid`` once more to the already
sigmoided head output; that double sigmoid is not reproduced -- ``p_female`` is the head's own output.

On-disk format (a ``save_pretrained`` folder)::

    config.json               ViTConfig (model_type "vit", architectures ["AgeGenderViTModel"]); the
                              published file carries only those two keys, i.e. ViTConfig's defaults, which
                              are ViT-Base/16 at 224. No custom keys.
    model.safetensors         (or pytorch_model.bin, loaded with weights_only=True) with the published,
                              transformers-4 key names: vit.embeddings.*, vit.encoder.layer.N.attention.
                              attention.{query,key,value}.*, ...attention.output.dense.*, ...intermediate.
                              dense.*, ...output.dense.*, ...layernorm_{before,after}.*, vit.layernorm.*,
                              vit.pooler.dense.* (unused), age_head.*, gender_head.*
    preprocessor_config.json  ViTImageProcessor: resize to 224 x 224 (resample 2 = bilinear), rescale 1/255,
                              normalise with the ImageNet mean [0.485, 0.456, 0.406] and std
                              [0.229, 0.224, 0.225] (its ``do_center_crop: true`` is not a ViTImageProcessor
                              option and has no effect)

transformers 5 renamed ViT's parameters (``vit.layers.N.attention.q_proj``, ``mlp.fc1``, ...); the loader
maps the published names onto them (names already in the new layout are accepted too) and then loads with
``strict=True``. The checkpoint's ``vit.pooler.dense.*`` (and a ``classifier.*``, which the repository's
later ``model.py`` declares "for pipeline compatibility") are not used by the published forward and are
dropped by name; any other missing, unexpected or mis-shaped key is an error that names it.

Sources for this layout: the repository's model card and ``model.py`` as mirrored in public GitHub projects
(e.g. a copy headed "extracted from https://huggingface.co/abhilash88/age-gender-prediction/blob/main/
model.py"), a local download of the model folder committed to GitHub (config.json, preprocessor_config.json,
training_logs.json) whose loader notes the checkpoint's ``vit.pooler.dense`` weights, and third-party ports
(ONNX / ExecuTorch) that use the same 224 x 224 ImageNet normalisation and read ``logits[:, 0]`` as years and
``logits[:, 1] >= 0.5`` as Female. The weight file itself was not inspected (no network here): if a real
download does not load, the error lists the keys expected and found.

``save_vit_age_gender(folder, config, seed=0)`` writes a seeded, randomly initialised model in this format
(for demos and tests); ``demo_config()`` and ``tiny_config()`` are small configs for it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from fva.errors import FvaError
from fva.extract.encoders.base import Encoded, Encoder, register
from fva.extract.weights import BIN, SAFETENSORS, VIT_HUB_ID, hub_snapshot, vit_identity
from fva.extract.weights import pretrained_weight_files as weight_files

HUB_ID = VIT_HUB_ID
ARCHITECTURE = "AgeGenderViTModel"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESAMPLE_BILINEAR = 2  # PIL.Image.Resampling.BILINEAR, as in the published preprocessor_config.json
HEAD_WIDTHS = (256, 64)
# in the published file, not used by the published forward (CLS token -> heads)
IGNORED_PREFIXES = ("vit.pooler.", "classifier.")

# transformers-5 ViT parameter names <- the published transformers-4 names (within vit.layers.N / layer.N)
_LAYER_RENAMES = (
    ("attention.q_proj.", "attention.attention.query."),
    ("attention.k_proj.", "attention.attention.key."),
    ("attention.v_proj.", "attention.attention.value."),
    ("attention.o_proj.", "attention.output.dense."),
    ("mlp.fc1.", "intermediate.dense."),
    ("mlp.fc2.", "output.dense."),
    ("layernorm_before.", "layernorm_before."),
    ("layernorm_after.", "layernorm_after."),
)
_LAYER_KEY = re.compile(r"^vit\.layers\.(\d+)\.(.+)$")


def published_key(name: str) -> str:
    """The published (transformers-4) checkpoint name of one of this module's parameters."""
    match = _LAYER_KEY.match(name)
    if not match:
        return name  # embeddings, final layernorm and the heads kept their names
    layer, rest = match.groups()
    for new, old in _LAYER_RENAMES:
        if rest.startswith(new):
            return f"vit.encoder.layer.{layer}.{old}{rest[len(new):]}"
    raise ValueError(f"no published name known for ViT parameter {name!r}")


def _head(hidden: int, sigmoid: bool) -> nn.Sequential:
    a, b = HEAD_WIDTHS
    layers: list[nn.Module] = [nn.Linear(hidden, a), nn.ReLU(), nn.Dropout(0.1), nn.Linear(a, b), nn.ReLU(),
                               nn.Dropout(0.1), nn.Linear(b, 1)]
    if sigmoid:
        layers.append(nn.Sigmoid())
    return nn.Sequential(*layers)


class AgeGenderViT(nn.Module):
    """The published ``AgeGenderViTModel``: ViT without pooler; CLS token -> age head, gender head."""

    def __init__(self, config) -> None:
        super().__init__()
        from transformers import ViTModel

        self.config = config
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.age_head = _head(config.hidden_size, sigmoid=False)
        self.gender_head = _head(config.hidden_size, sigmoid=True)

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cls = self.vit(pixel_values=pixel_values).last_hidden_state[:, 0]
        return cls, self.age_head(cls)[:, 0], self.gender_head(cls)[:, 0]


# ----------------------------------------------------------------------------------------------- preprocessing
@dataclass(frozen=True)
class ViTPreprocess:
    """RGB uint8 H x W x 3 -> float32 3 x H' x W', as transformers' (PIL) ViTImageProcessor: PIL resize to
    (height, width) with ``resample``, x * rescale_factor (in float64, then float32), (x - mean) / std."""

    height: int = 224
    width: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resample: int = RESAMPLE_BILINEAR
    rescale_factor: float = 1 / 255
    do_rescale: bool = True
    do_normalize: bool = True

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from PIL import Image

        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 H x W x 3 image, got {rgb.dtype} {rgb.shape}")
        img = Image.fromarray(np.ascontiguousarray(rgb))
        img = np.asarray(img.resize((self.width, self.height), resample=Image.Resampling(self.resample)))
        x = img.astype(np.float64) * self.rescale_factor if self.do_rescale else img
        x = x.astype(np.float32)
        if self.do_normalize:
            x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def preprocess_from_folder(folder: Path, config) -> ViTPreprocess:
    """The folder's preprocessor_config.json (the published ViTImageProcessor settings when absent)."""
    path = folder / "preprocessor_config.json"
    size = {"height": config.image_size, "width": config.image_size}
    if not path.is_file():
        return ViTPreprocess(size["height"], size["width"])
    try:
        pp = json.loads(path.read_text())
        size = pp.get("size") or size
        pre = ViTPreprocess(
            height=int(size["height"]), width=int(size["width"]),
            mean=tuple(float(v) for v in pp.get("image_mean", IMAGENET_MEAN)),
            std=tuple(float(v) for v in pp.get("image_std", IMAGENET_STD)),
            resample=int(pp.get("resample", RESAMPLE_BILINEAR)),
            rescale_factor=float(pp.get("rescale_factor", 1 / 255)),
            do_rescale=bool(pp.get("do_rescale", True)), do_normalize=bool(pp.get("do_normalize", True)))
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise FvaError(f"{path}: unreadable ViTImageProcessor settings ({type(err).__name__}: {err}); "
                       "expected size {height, width}, image_mean, image_std, resample, rescale_factor") from None
    if len(pre.mean) != 3 or len(pre.std) != 3:
        raise FvaError(f"{path}: image_mean and image_std must have 3 values (RGB)")
    if (pre.height, pre.width) != (config.image_size, config.image_size):
        raise FvaError(f"{path}: size {pre.height}x{pre.width} differs from config.json image_size "
                       f"{config.image_size}; the model takes {config.image_size}x{config.image_size} images")
    return pre


# ------------------------------------------------------------------------------------------------------ loading
def resolve_folder(weights: str) -> Path:
    """A local model folder, or a hub id fetched by ``snapshot_download`` into the Hugging Face cache (only
    the cached copy when offline)."""
    path = Path(weights).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise FvaError(f"{path}: not a folder; pass --weights a save_pretrained folder (config.json and "
                       f"{SAFETENSORS} or {BIN}) or a hub id")
    if not re.fullmatch(r"[\w-]+/[\w.-]+", weights):  # hub ids are owner/name
        raise FvaError(f"{weights}: no such folder; pass --weights a save_pretrained folder (config.json and "
                       f"{SAFETENSORS} or {BIN}) or a hub id such as {HUB_ID}")
    return hub_snapshot(weights, ViTAgeGender.name if weights == HUB_ID else weights)


def read_config(folder: Path):
    from transformers import ViTConfig

    path = folder / "config.json"
    if not path.is_file():
        raise FvaError(f"{folder}: no config.json; --weights must be a save_pretrained folder of "
                       f"{HUB_ID} (config.json and {SAFETENSORS} or {BIN})")
    try:
        raw = json.loads(path.read_text())
    except ValueError as err:
        raise FvaError(f"{path}: not valid JSON ({err})") from None
    if not isinstance(raw, dict) or raw.get("model_type", "vit") != "vit":
        got = raw.get("model_type") if isinstance(raw, dict) else type(raw).__name__
        raise FvaError(f"{path}: model_type {got!r}, expected 'vit' (a ViT config as in {HUB_ID})")
    try:
        return ViTConfig.from_dict(raw)
    except (ValueError, TypeError) as err:
        raise FvaError(f"{path}: not a ViT config ({type(err).__name__}: {err})") from None


def read_state_dict(files: list[Path]) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path in files:
        try:
            if path.name.endswith(".safetensors"):
                from safetensors.torch import load_file

                part = load_file(str(path), device="cpu")
            else:
                part = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001  (any unreadable file is the user's to replace)
            raise FvaError(f"{path}: unreadable weights file ({type(err).__name__}: "
                           f"{str(err).strip()[:160]}); download it again") from None
        if not isinstance(part, dict) or not all(isinstance(v, torch.Tensor) for v in part.values()):
            raise FvaError(f"{path}: not a state dict of tensors")
        state.update(part)
    return state


def _names(keys, limit: int = 6) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def match_state_dict(model: AgeGenderViT, state: dict[str, torch.Tensor], where: Path) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors under this module's names (published or transformers-5 names accepted);
    FvaError naming the keys when anything is missing, unexpected or mis-shaped."""
    own = model.state_dict()
    matched: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []
    for name, param in own.items():
        old = published_key(name)
        key = old if old in state else name if name in state else None
        if key is None:
            missing.append(old)
            continue
        if tuple(state[key].shape) != tuple(param.shape):
            raise FvaError(f"{where}: {key} has shape {tuple(state[key].shape)}, expected {tuple(param.shape)} "
                           "for the model config.json describes")
        matched[name] = state[key]
        used.add(key)
    unexpected = [k for k in state if k not in used and not k.startswith(IGNORED_PREFIXES)]
    if missing or unexpected:
        found = [k for k in state if k not in used]
        raise FvaError(f"{where}: checkpoint does not match {ARCHITECTURE}: missing {_names(missing) or 'none'}; "
                       f"unexpected {_names(unexpected) or 'none'} (found {len(state)} keys, e.g. "
                       f"{_names(found or list(state), 3)})")
    return matched


def load_vit_age_gender(folder: Path) -> AgeGenderViT:
    config = read_config(folder)
    files = weight_files(folder)
    state = read_state_dict(files)
    model = AgeGenderViT(config)
    model.load_state_dict(match_state_dict(model, state, files[0] if len(files) == 1 else folder), strict=True)
    return model.eval()


# ------------------------------------------------------------------------------------------------------- saving
def demo_config():
    """A small ViT config for demo checkpoints (64 x 64 input, 16 x 16 patches, hidden 64, 2 layers)."""
    from transformers import ViTConfig

    return ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
                     image_size=64, patch_size=16)


def tiny_config(image_size: int = 32):
    """The smallest useful ViT config, for tests (hidden 32, 2 layers, 2 heads, 16 x 16 patches)."""
    from transformers import ViTConfig

    return ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                     image_size=image_size, patch_size=16)


def save_vit_age_gender(folder: str | Path, config, seed: int = 0) -> Path:
    """Write a seeded, randomly initialised ``AgeGenderViTModel`` for ``config`` (a ``ViTConfig``) in the
    published on-disk format: config.json, model.safetensors with the published key names (the unused
    ViT pooler included, as published) and preprocessor_config.json. Returns the folder (a ``--weights``)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AgeGenderViT(config)
        pooler = nn.Linear(config.hidden_size, config.hidden_size)
    state = {published_key(k): v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    state["vit.pooler.dense.weight"] = pooler.weight.detach().clone()
    state["vit.pooler.dense.bias"] = pooler.bias.detach().clone()
    save_file(state, str(folder / SAFETENSORS), metadata={"format": "pt"})

    cfg = config.to_diff_dict()  # like save_pretrained: only what differs from ViTConfig's defaults
    cfg.update(architectures=[ARCHITECTURE], model_type="vit")
    (folder / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str) + "\n")
    pre = {"do_center_crop": True, "do_normalize": True, "do_rescale": True, "do_resize": True,
           "image_mean": list(IMAGENET_MEAN), "image_processor_type": "ViTImageProcessor",
           "image_std": list(IMAGENET_STD), "resample": RESAMPLE_BILINEAR, "rescale_factor": 1 / 255,
           "size": {"height": config.image_size, "width": config.image_size}}
    (folder / "preprocessor_config.json").write_text(json.dumps(pre, indent=2) + "\n")
    return folder


# ------------------------------------------------------------------------------------------------------ encoder
@register
class ViTAgeGender(Encoder):
    name = "vit-age-gender"
    modality = "face"
    default_weights = HUB_ID
    extras = ("age", "p_female")

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(weights, device)
        self.folder = resolve_folder(self.weights)
        self.model = load_vit_age_gender(self.folder).to(self.device)
        self._preprocess = preprocess_from_folder(self.folder, self.model.config)
        self._dim = int(self.model.config.hidden_size)
        self._weights_id = vit_identity(self.weights, self.folder)

    @property
    def preprocess(self) -> Callable[[np.ndarray], np.ndarray]:
        return self._preprocess

    def collate(self, items: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(items).astype(np.float32, copy=False))

    def encode(self, batch: torch.Tensor) -> Encoded:
        self.model.eval()
        with torch.inference_mode():
            cls, age, p_female = self.model(batch.to(self.device, torch.float32))
        return Encoded(cls.float().cpu(), {"age": age.float().cpu(), "p_female": p_female.float().cpu()})

    def config(self) -> dict:
        p = self._preprocess
        return {"output": "CLS token of the last hidden state", "image_size": [p.height, p.width],
                "image_mean": list(p.mean), "image_std": list(p.std)}
