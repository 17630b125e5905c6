"""vggface and vggface-keras: deepface's VGG-Face (PyTorch backend), the 4096-d fc7, two preprocessings.

``vggface-keras`` is the FLAG 2027 organisers' face feature (their Keras VGG-Face script, on the same network):
the image through Pillow (RGB, ``resize((224, 224))``: bicubic, Pillow's default, no aspect kept, no face
detection), RGB -> BGR, float32 minus the VGG-Face channel means (B 93.5940, G 104.7624, R 129.1863), and
the ReLU'd fc7 as it is: **not** normalised (non-negative, mostly zeros). Pick it to start from the FLAG
baseline or to compare with the organisers' feature files; pick ``vggface`` for what ``DeepFace.represent``
gives (the FAME 2026 winner's input). ``vggface`` is described below.

What is stored is exactly what ``DeepFace.represent(img, model_name="VGG-Face", detector_backend="skip",
enforce_detection=False, align=False)`` returns for the same image: the ReLU'd fc7 activations of
deepface's ``VggFaceBaseModel.embed``, divided by their L2 norm (+ 1e-10, deepface's ``l2_normalize``),
i.e. an **L2-normalised fc7** (unit length, non-negative). Here it is computed on whole batches.

Preprocessing is deepface's own code path for ``represent`` with ``detector_backend="skip"``, run through
deepface's own functions so that the two cannot drift apart:

* the decoded RGB image is put in BGR order (deepface works on BGR; ``represent`` flips BGR -> RGB -> BGR);
* ``deepface.modules.preprocessing.resize_image`` to 224 x 224: scale by ``min(224/h, 224/w)`` with
  ``cv2.resize`` (bilinear) on the uint8 image, keeping the aspect ratio, then centre it on a black
  (zero) 224 x 224 canvas;
* float32, divided by 255 -- deepface does this only when the padded image's maximum is above 1, so an
  all-but-black image (max <= 1) is left unscaled, as in deepface;
* ``normalize_input(..., "base")``: no mean subtraction (represent's default normalisation);
* channels last -> channels first (deepface's ``to_tensor`` permutes (n, 224, 224, 3) to (n, 3, 224, 224)).

Weights: deepface's ``vgg_face_weights.pth`` (a state dict of ``VggFaceBaseModel``, 2622-way fc8 included),
loaded with deepface's own ``load_model_weights`` (``torch.load(..., weights_only=True)``, strict
``load_state_dict``). ``--weights`` may be omitted / ``deepface`` (deepface's location,
``$DEEPFACE_HOME/.deepface/weights/vgg_face_weights.pth``, ``DEEPFACE_HOME`` defaulting to the home
folder; when the file is missing, deepface's own download fetches it there, unless fva is offline:
``fva.extract.weights``), a ``.pth`` file, a folder holding ``vgg_face_weights.pth``, or a deepface home
folder (holding ``.deepface/weights/vgg_face_weights.pth``); these three are never downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fva.errors import FvaError
from fva.extract.encoders.base import Encoded, Encoder, register
from fva.extract.weights import VGGFACE_FILE, deepface_file, deepface_identity
from fva.extract.weights import use_pytorch_backend  # noqa: F401  (re-exported)

WEIGHTS_FILE = VGGFACE_FILE
INPUT_SIZE = (224, 224)  # deepface VggFaceClient.input_shape
L2_EPSILON = 1e-10  # deepface.modules.verification.l2_normalize
# the VGG-Face training images' channel means in BGR order (Parkhi et al. 2015), as the Keras preprocessing
# subtracts them
VGGFACE_MEANS_BGR = (93.5940, 104.7624, 129.1863)


def resolve_weights(weights: str | Path | None, name: str = "vggface") -> Path:
    """The ``vgg_face_weights.pth`` file that ``--weights`` names; omitted or ``deepface``: deepface's own
    copy, downloaded by deepface when missing and online. FvaError when there is none (``name``: the encoder
    the message names)."""
    if weights is None or str(weights) == "deepface":
        return deepface_file(name)
    path = Path(weights).expanduser()
    if path.is_dir():
        for candidate in (path / WEIGHTS_FILE, path / ".deepface" / "weights" / WEIGHTS_FILE):
            if candidate.is_file():
                return candidate
        raise FvaError(f"{path}: no {WEIGHTS_FILE} in this folder (nor in .deepface/weights/ under it); "
                       f"pass --weights the .pth file or a folder holding {WEIGHTS_FILE}")
    if not path.is_file():
        raise FvaError(f"{path}: no such file; pass --weights deepface's {WEIGHTS_FILE} (or a folder holding "
                       "it), or omit --weights to use $DEEPFACE_HOME/.deepface/weights/")
    return path


def load_vggface(path: Path) -> torch.nn.Module:
    """deepface's ``VggFaceBaseModel`` with the weights at ``path``, through deepface's own loader."""
    use_pytorch_backend()
    from deepface.models.facial_recognition.pytorch.TorchFacialRecognition import load_model_weights
    from deepface.models.facial_recognition.pytorch.VGGFace import base_model

    try:
        # torch.load(weight_file, map_location="cpu", weights_only=True) + strict load_state_dict
        model = load_model_weights(model=base_model(), weight_file=str(path))
    except (ValueError, RuntimeError, TypeError, AttributeError, KeyError, OSError) as err:
        cause = err.__cause__ if isinstance(err, ValueError) and err.__cause__ is not None else err
        detail = str(cause).strip().splitlines()[0][:160] if str(cause).strip() else ""
        raise FvaError(f"{path}: not a deepface VGG-Face state dict ({type(cause).__name__}: {detail}); "
                       f"replace it with deepface's {WEIGHTS_FILE}") from None
    return model.eval()


@dataclass(frozen=True)
class VggFacePreprocess:
    """RGB uint8 H x W x 3 -> float32 3 x 224 x 224 (BGR), exactly as deepface's ``represent`` (skip)."""

    height: int = INPUT_SIZE[0]
    width: int = INPUT_SIZE[1]

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from deepface.modules.preprocessing import normalize_input, resize_image

        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB H x W x 3 image, got shape {rgb.shape}")
        bgr = rgb[:, :, ::-1]
        img = resize_image(img=bgr, target_size=(self.height, self.width))  # (1, H, W, 3) float32
        img = normalize_input(img=img, normalization="base")
        return np.ascontiguousarray(img[0].transpose(2, 0, 1), dtype=np.float32)


@register
class VggFace(Encoder):
    name = "vggface"
    modality = "face"
    default_weights = "deepface"
    extras = ()
    l2_normalise = True  # DeepFace.represent's unit-length fc7; the organisers' variant keeps it as it is

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(weights, device)
        self.path = resolve_weights(self.weights, self.name)
        self.model = load_vggface(self.path).to(self.device)
        self._dim = int(self.model.fc7.out_channels)
        self._weights_id = deepface_identity(self.path)

    @property
    def preprocess(self) -> Callable[[np.ndarray], np.ndarray]:
        return VggFacePreprocess()

    def collate(self, items: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(items).astype(np.float32, copy=False))

    def encode(self, batch: torch.Tensor) -> Encoded:
        self.model.eval()
        with torch.inference_mode():
            emb = self.model.embed(batch.to(self.device, torch.float32))
            if self.l2_normalise:
                emb = emb / (torch.linalg.vector_norm(emb, dim=1, keepdim=True) + L2_EPSILON)
        return Encoded(emb.float().cpu(), {})

    def config(self) -> dict:
        return {"output": "l2-normalised fc7 (DeepFace.represent)", "input": "BGR 224x224 padded, /255"}


@dataclass(frozen=True)
class KerasVggFacePreprocess:
    """RGB uint8 H x W x 3 -> float32 3 x 224 x 224 (BGR minus the VGG-Face means), as the FLAG 2027
    organisers' Keras script: Pillow's ``resize`` to 224 x 224 (bicubic, Pillow's default since 7.0)."""

    height: int = INPUT_SIZE[0]
    width: int = INPUT_SIZE[1]

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from PIL import Image

        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected an RGB H x W x 3 image, got shape {rgb.shape}")
        img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
        img = img.resize((self.width, self.height), Image.Resampling.BICUBIC)
        bgr = np.asarray(img, dtype=np.float32)[:, :, ::-1] - np.asarray(VGGFACE_MEANS_BGR, dtype=np.float32)
        return np.ascontiguousarray(bgr.transpose(2, 0, 1))


@register
class VggFaceKeras(VggFace):
    """The FLAG 2027 organisers' face feature: fc7 after its ReLU, not normalised, Keras-style input."""

    name = "vggface-keras"
    l2_normalise = False

    @property
    def preprocess(self) -> Callable[[np.ndarray], np.ndarray]:
        return KerasVggFacePreprocess()

    def config(self) -> dict:
        return {"output": "fc7 after ReLU, not normalised (FLAG 2027 organisers)",
                "input": "PIL bicubic 224x224, BGR minus VGG-Face means"}
