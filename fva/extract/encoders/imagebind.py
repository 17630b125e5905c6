"""imagebind-face, imagebind-voice: ImageBind-huge's vision and audio towers, into its shared 1024-d space.

ImageBind (Girdhar et al., CVPR 2023; ``facebookresearch/ImageBind``, code and weights CC-BY-NC-SA 4.0) embeds
images and audio in one space, so the cosine between a face's and a voice's embeddings is a face-voice score
with no training at all (FLAG 2027's best documented system, ``nguyennhan2006/FourFusion_FLAG2027``: its zero-shot
score alone cut gender-track English EER from 27.5 % to 23.2 %; see the ``imagebind-zeroshot`` config).

The two towers are rebuilt here from plain torch modules (no remote code, no ``imagebind`` package) and loaded
from the published checkpoint ``imagebind_huge.pth``: a bare ``state_dict`` of the whole ``ImageBindModel``
(every modality), read with ``torch.load(weights_only=True, mmap=True)``, so each tower reads only its own
tensors. Its key layout (each tower's keys are those under ``<part>.<modality>.``)::

    modality_preprocessors.vision.cls_token                        (1, 1, 1280)
    modality_preprocessors.vision.rgbt_stem.proj.1.weight          (1280, 3, 2, 14, 14)  Conv3d, no bias
    modality_preprocessors.vision.pos_embedding_helper.pos_embed   (1, 257, 1280)        learnt
    modality_trunks.vision.pre_transformer_layer.0.{weight,bias}   LayerNorm eps 1e-6 (vision only)
    modality_trunks.vision.blocks.N.attn.{in_proj_weight,in_proj_bias,out_proj.weight,out_proj.bias}
                                                                   torch's nn.MultiheadAttention layout
    modality_trunks.vision.blocks.N.{norm_1,norm_2}.*              LayerNorm eps 1e-6
    modality_trunks.vision.blocks.N.mlp.{fc1,fc2}.*                Linear, GELU between, ratio 4
    modality_heads.vision.0.{weight,bias}                          LayerNorm eps 1e-6
    modality_heads.vision.2.weight                                 (1024, 1280) Linear, no bias
    modality_preprocessors.audio.rgbt_stem.proj.weight             (768, 1, 16, 16) Conv2d stride 10, no bias
    modality_preprocessors.audio.rgbt_stem.norm_layer.*            LayerNorm (eps 1e-5) after the patches
    modality_preprocessors.audio.{cls_token, pos_embedding_helper.pos_embed (1, 229, 768)}
    modality_trunks.audio.blocks.N.attn.{bias_k,bias_v}            (1, 1, 768): add_bias_kv=True
    modality_heads.audio.{0,2}.*                                   as the vision head, 768 -> 1024
    modality_postprocessors.audio.1.log_logit_scale                log 20 (fixed logit scale)

Forward, per tower (as ``ImageBindModel.forward``): patches -> prepend the CLS token -> add the position
embedding -> (vision: LayerNorm) -> pre-norm transformer blocks (x + attn(norm_1 x); x + mlp(norm_2 x); the audio
tower's attention appends learnt bias_k / bias_v to keys and values) -> head LayerNorm -> CLS token -> Linear ->
L2 normalise (audio: times exp(log_logit_scale) = 20, clipped at 100). The vision stem repeats an image into two
frames (``PadIm2Video`` "repeat", 2) for its 2 x 14 x 14 Conv3d. An audio file's clips are embedded one by one and
their embeddings averaged (not re-normalised), as ImageBind averages a video's clips. Huge: vision ViT-H/14
(1280 wide, 32 blocks, 16 heads), audio ViT-B (768 wide, 12 blocks, 12 heads), 1024-d output. Widths, depths and
the output width are read off the checkpoint's shapes; the head counts are the published ones (16 vision, 12
audio), so a smaller checkpoint in this layout (fva's tests and demo) needs widths divisible by them.

Preprocessing, as ImageBind's ``imagebind/data.py``:

* images: RGB, shortest edge bicubic-resized to 224 (Pillow, torchvision's ``Resize(224)``: the long edge
  ``int(224 * long / short)``), centre crop 224 (torchvision's offsets ``int(round((size - 224) / 2))``), to
  [0, 1], normalised with CLIP's mean and std;
* audio: 16 kHz mono; 2-second clips spread evenly over the file (pytorchvideo's ``ConstantClipsPerVideoSampler``:
  clip k of n starts at k max(duration - 2, 0) / n, in exact fractions; samples ``int(start * 16000) :
  int(end * 16000)``, so the file's last max(duration - 2, 0) / n seconds stay unread, as in ImageBind). ImageBind
  takes n = 3; fva takes n = max(3, ceil(duration / 2)), so that a long file is sampled throughout, not in three
  places (identical to ImageBind's for files up to 6 s). Each clip: its mean subtracted in place (ImageBind subtracts it from a view
  of the waveform, so a later overlapping clip sees the earlier clips' subtraction: reproduced), then
  torchaudio's Kaldi fbank (htk_compat, hanning window, 128 mel bins, no energy, dither 0, 25 ms / 10 ms),
  transposed, zero-padded or cut to 204 frames, normalised with mean -4.268 and std 9.138.

Weights: ``--weights FILE`` (a local ``imagebind_huge.pth``); without it, the published file in torch's hub
folder (``torch.hub.get_dir()/checkpoints/imagebind_huge.pth``), fetched by torch.hub's own
``download_url_to_file`` from ImageBind's URL when missing and online (``fva weights fetch --encoders imagebind``;
``fva.extract.weights``). ``save_imagebind`` writes a seeded random checkpoint in this layout (tests, demo).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from fva.errors import FvaError
from fva.extract.encoders.base import Encoded, Encoder, register
from fva.extract.media import SAMPLE_RATE
from fva.extract.weights import IMAGEBIND_FILE, checkpoint_identity, torch_hub_file

# --------------------------------------------------------------------------------------- the published constants
IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
VIDEO_FRAMES = 2  # an image is repeated into two frames for the 2 x 14 x 14 Conv3d stem
CLIP_SECONDS = 2
MIN_CLIPS = 3  # ImageBind's clips_per_video
MEL_BINS = 128
TARGET_FRAMES = 204
FRAME_LENGTH_MS, FRAME_SHIFT_MS = 25, 10
AUDIO_MEAN, AUDIO_STD = -4.268, 9.138
AUDIO_KERNEL, AUDIO_STRIDE = 16, 10
HEADS = {"vision": 16, "audio": 12}  # imagebind_huge: vision 1280 / 16, audio 768 / 12
LOGIT_SCALE_MAX = 100.0
FRAME_SAMPLES = FRAME_LENGTH_MS * SAMPLE_RATE // 1000  # one 25 ms fbank frame: the shortest clip with a feature
LN_EPS = 1e-6  # the trunks' and heads' LayerNorms (the audio stem's LayerNorm keeps torch's 1e-5)
PARTS = ("modality_preprocessors", "modality_trunks", "modality_heads", "modality_postprocessors")


# ------------------------------------------------------------------------------------------------- preprocessing
def centre_crop_offsets(height: int, width: int, size: int = IMAGE_SIZE) -> tuple[int, int]:
    """torchvision's ``CenterCrop`` offsets (top, left): ``int(round((dim - size) / 2))``, Python's rounding
    (half to even).

    >>> centre_crop_offsets(224, 301), centre_crop_offsets(224, 299)
    ((0, 38), (0, 38))
    """
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def resized_size(height: int, width: int, size: int = IMAGE_SIZE) -> tuple[int, int]:
    """torchvision's ``Resize(size)`` output (height, width): the short edge to ``size``, the long edge
    ``int(size * long / short)``."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


@dataclass(frozen=True)
class ImageBindImage:
    """RGB uint8 H x W x 3 -> float32 3 x 224 x 224, as ImageBind's vision transform."""

    def __call__(self, rgb: np.ndarray) -> np.ndarray:
        from PIL import Image

        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 H x W x 3 image, got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        image = Image.fromarray(np.ascontiguousarray(rgb))
        rh, rw = resized_size(h, w)
        if (rh, rw) != (h, w):
            image = image.resize((rw, rh), Image.Resampling.BICUBIC)
        top, left = centre_crop_offsets(rh, rw)
        x = np.asarray(image, dtype=np.float32)[top:top + IMAGE_SIZE, left:left + IMAGE_SIZE] / 255.0
        x = (x - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1), dtype=np.float32)


def clip_count(samples: int) -> int:
    """Clips of a file: ImageBind's 3, more for a file over 6 s (one per 2 s)."""
    return max(MIN_CLIPS, math.ceil(samples / (CLIP_SECONDS * SAMPLE_RATE)))


def clip_bounds(samples: int, clips: int | None = None) -> list[tuple[int, int]]:
    """Sample ranges of a file's clips: pytorchvideo's ``ConstantClipsPerVideoSampler`` (exact fractions) on
    ``samples / 16000`` seconds, cut as ImageBind cuts them.

    >>> clip_bounds(16000 * 5)
    [(0, 32000), (16000, 48000), (32000, 64000)]
    """
    clips = clip_count(samples) if clips is None else clips
    duration = Fraction(samples / SAMPLE_RATE)  # ImageBind: waveform.size(1) / sample_rate, a float
    step = Fraction(max(duration - CLIP_SECONDS, 0)) / clips
    return [(int(step * k * SAMPLE_RATE), int((step * k + CLIP_SECONDS) * SAMPLE_RATE)) for k in range(clips)]


def clip_melspec(waveform: torch.Tensor) -> torch.Tensor:
    """One clip (1, samples), its mean already subtracted -> (1, 128, 204): Kaldi fbank, padded or cut."""
    from torchaudio.compliance import kaldi

    fbank = kaldi.fbank(waveform, htk_compat=True, sample_frequency=SAMPLE_RATE, use_energy=False,
                        window_type="hanning", num_mel_bins=MEL_BINS, dither=0.0, frame_length=FRAME_LENGTH_MS,
                        frame_shift=FRAME_SHIFT_MS).transpose(0, 1)
    short = TARGET_FRAMES - fbank.shape[1]
    fbank = F.pad(fbank, (0, short)) if short > 0 else fbank[:, :TARGET_FRAMES]
    return fbank.unsqueeze(0)


@dataclass(frozen=True)
class ImageBindAudio:
    """16 kHz mono float32 audio -> float32 (clips, 1, 128, 204), as ImageBind's audio transform."""

    def __call__(self, audio: np.ndarray) -> np.ndarray:
        waveform = torch.tensor(np.asarray(audio, np.float32)).reshape(1, -1)  # a copy: clips edit it in place
        if waveform.shape[1] < FRAME_SAMPLES:
            raise ValueError(f"a clip of {waveform.shape[1]} samples has no 25 ms fbank frame")
        out = []
        for start, end in clip_bounds(waveform.shape[1]):
            clip = waveform[:, start:end]  # a view, as in ImageBind: the subtraction below reaches the waveform
            clip -= clip.mean()
            out.append((clip_melspec(clip) - AUDIO_MEAN) / AUDIO_STD)
        return torch.stack(out).numpy()


# ------------------------------------------------------------------------------------------------------ modules
class SelfAttention(nn.Module):
    """Multi-head self-attention with torch's ``nn.MultiheadAttention`` parameters (``in_proj_weight``,
    ``in_proj_bias``, ``out_proj``; ``bias_k`` / ``bias_v`` appended to the keys and values when
    ``add_bias_kv``), batch first."""

    def __init__(self, dim: int, heads: int, add_bias_kv: bool) -> None:
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        self.bias_k = nn.Parameter(torch.zeros(1, 1, dim)) if add_bias_kv else None
        self.bias_v = nn.Parameter(torch.zeros(1, 1, dim)) if add_bias_kv else None
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        if self.bias_k is not None:
            k = torch.cat([k, self.bias_k.expand(b, 1, d)], dim=1)
            v = torch.cat([v, self.bias_v.expand(b, 1, d)], dim=1)

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.reshape(b, t.shape[1], self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(q), split(k), split(v))
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """ImageBind's ``BlockWithMasking`` without a mask, in eval mode (drop path off)."""

    def __init__(self, dim: int, heads: int, hidden: int, add_bias_kv: bool) -> None:
        super().__init__()
        self.attn = SelfAttention(dim, heads, add_bias_kv)
        self.norm_1, self.norm_2 = nn.LayerNorm(dim, eps=LN_EPS), nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_1(x))
        return x + self.mlp(self.norm_2(x))


class RepeatFrames(nn.Module):
    """B x C x H x W -> B x C x 2 x H x W, the frame repeated (``PadIm2Video`` "repeat")."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unsqueeze(2).repeat(1, 1, VIDEO_FRAMES, 1, 1)


@dataclass(frozen=True)
class TowerShape:
    """One tower's sizes, read off a checkpoint."""

    modality: str  # "vision" or "audio"
    dim: int
    blocks: int
    hidden: int
    out_dim: int
    tokens: int  # CLS + patches
    kernel: tuple[int, ...]


class Stem(nn.Module):
    """``rgbt_stem``: the patch projection (``proj``) and, for audio, a LayerNorm (``norm_layer``)."""

    def __init__(self, shape: TowerShape) -> None:
        super().__init__()
        if shape.modality == "vision":
            self.proj = nn.Sequential(RepeatFrames(), nn.Conv3d(3, shape.dim, shape.kernel, stride=shape.kernel,
                                                                bias=False))
            self.norm_layer = None
        else:
            self.proj = nn.Conv2d(1, shape.dim, AUDIO_KERNEL, stride=AUDIO_STRIDE, bias=False)
            self.norm_layer = nn.LayerNorm(shape.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.proj(x).flatten(2).transpose(1, 2)
        return self.norm_layer(x) if self.norm_layer is not None else x


class PosEmbed(nn.Module):
    def __init__(self, tokens: int, dim: int) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens, dim))


class Preprocessor(nn.Module):
    def __init__(self, shape: TowerShape) -> None:
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, shape.dim))
        self.rgbt_stem = Stem(shape)
        self.pos_embedding_helper = PosEmbed(shape.tokens, shape.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.rgbt_stem(x)
        tokens = torch.cat([self.cls_token.expand(len(tokens), -1, -1), tokens], dim=1)
        pos = self.pos_embedding_helper.pos_embed
        if tokens.shape[1] != pos.shape[1]:
            raise ValueError(f"{tokens.shape[1]} tokens but {pos.shape[1]} position embeddings")
        return tokens + pos


class Trunk(nn.Module):
    def __init__(self, shape: TowerShape) -> None:
        super().__init__()
        vision = shape.modality == "vision"
        self.pre_transformer_layer = nn.Sequential(nn.LayerNorm(shape.dim, eps=LN_EPS)) if vision else None
        self.blocks = nn.Sequential(*[Block(shape.dim, HEADS[shape.modality], shape.hidden, not vision)
                                      for _ in range(shape.blocks)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pre_transformer_layer is not None:
            x = self.pre_transformer_layer(x)
        return self.blocks(x)


class LogitScale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("log_logit_scale", torch.tensor(0.0))


class Tower(nn.Module):
    """One modality of ``ImageBindModel``: preprocessor, trunk, head, post-processing; its state-dict keys are
    the checkpoint's with ``modality_<part>s.<modality>.`` shortened to ``<part>.`` (:func:`tower_state`)."""

    def __init__(self, shape: TowerShape) -> None:
        super().__init__()
        self.shape = shape
        self.preprocessor = Preprocessor(shape)
        self.trunk = Trunk(shape)
        self.head = nn.Sequential(nn.LayerNorm(shape.dim, eps=LN_EPS), nn.Identity(),
                                  nn.Linear(shape.dim, shape.out_dim, bias=False))
        # audio: Sequential(Normalize, LearnableLogitScaling) -> the scaling's buffer is key "1.log_logit_scale"
        self.postprocessor = nn.ModuleDict({"1": LogitScale()}) if shape.modality == "audio" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.trunk(self.preprocessor(x))
        out = F.normalize(self.head[2](self.head[0](tokens)[:, 0]), dim=-1)
        if self.postprocessor is not None:
            scale = self.postprocessor["1"].log_logit_scale.exp().clamp(max=LOGIT_SCALE_MAX)
            out = out * scale
        return out


PART_NAMES = {"modality_preprocessors": "preprocessor", "modality_trunks": "trunk", "modality_heads": "head",
              "modality_postprocessors": "postprocessor"}


def tower_state(state: dict, modality: str) -> dict:
    """The checkpoint's tensors of one tower, under :class:`Tower`'s names."""
    out = {}
    for part, short in PART_NAMES.items():
        prefix = f"{part}.{modality}."
        out.update({f"{short}.{k[len(prefix):]}": v for k, v in state.items() if k.startswith(prefix)})
    return out


def input_tokens(modality: str, kernel: tuple[int, ...]) -> int:
    """Tokens ImageBind's input makes in a tower: the CLS token and the patches of a 224 x 224 image (the vision
    stem's ``kernel``) or of a 128 x 204 filterbank (16 x 16 patches, stride 10).

    >>> input_tokens("vision", (2, 14, 14)), input_tokens("audio", (16, 16))
    (257, 229)
    """
    if modality == "vision":
        return 1 + int(np.prod([IMAGE_SIZE // k for k in kernel[1:]]))
    return 1 + ((MEL_BINS - AUDIO_KERNEL) // AUDIO_STRIDE + 1) * ((TARGET_FRAMES - AUDIO_KERNEL) // AUDIO_STRIDE + 1)


def read_shape(state: dict, modality: str, path: Path) -> TowerShape:
    """A tower's sizes from the checkpoint's shapes; a checkpoint without the tower, or of another layout, is one
    line."""
    pre, trunk, head = (f"modality_preprocessors.{modality}.", f"modality_trunks.{modality}.",
                        f"modality_heads.{modality}.")
    proj = pre + ("rgbt_stem.proj.1.weight" if modality == "vision" else "rgbt_stem.proj.weight")
    needed = [pre + "cls_token", proj, pre + "pos_embedding_helper.pos_embed", trunk + "blocks.0.mlp.fc1.weight",
              head + "2.weight"]
    missing = [k for k in needed if k not in state]
    if missing:
        raise FvaError(f"{path}: not an ImageBind checkpoint with a {modality} tower (no {missing[0]}); "
                       f"pass --weights with imagebind_huge.pth")
    dim = int(state[pre + "cls_token"].shape[-1])
    blocks = len({k[len(trunk + "blocks."):].split(".")[0] for k in state if k.startswith(trunk + "blocks.")})
    if dim % HEADS[modality]:
        raise FvaError(f"{path}: the {modality} tower is {dim} wide, not divisible by ImageBind's "
                       f"{HEADS[modality]} heads")
    kernel = tuple(int(k) for k in state[proj].shape[2:])
    tokens = int(state[pre + "pos_embedding_helper.pos_embed"].shape[1])
    if tokens != input_tokens(modality, kernel):
        raise FvaError(f"{path}: {tokens} {modality} position embeddings, ImageBind's input makes "
                       f"{input_tokens(modality, kernel)} tokens")
    return TowerShape(modality, dim, blocks, int(state[trunk + "blocks.0.mlp.fc1.weight"].shape[0]),
                      int(state[head + "2.weight"].shape[0]), tokens, kernel)


def load_tower(path: Path, modality: str) -> Tower:
    """The ``modality`` tower of an ImageBind checkpoint, strictly: every weight from the file, with its shape."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # noqa: BLE001  (an unreadable file is the user's to replace)
        text = str(err).strip().splitlines()
        raise FvaError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: "
                       f"{text[0][:160] if text else ''}); download it again") from None
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise FvaError(f"{path}: holds a {type(state).__name__}, not ImageBind's state_dict")
    shape = read_shape(state, modality, path)
    tower = Tower(shape)
    mine = tower_state(state, modality)
    expected = tower.state_dict()
    missing = sorted(set(expected) - set(mine))
    unexpected = sorted(set(mine) - set(expected))
    odd = [k for k in expected if k in mine and tuple(mine[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or odd:
        what = (f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}" if unexpected
                else f"{odd[0]} is {tuple(mine[odd[0]].shape)}, expected {tuple(expected[odd[0]].shape)}")
        raise FvaError(f"{path}: its {modality} tower does not match ImageBind's layout ({what})")
    tower.load_state_dict({k: v.float() for k, v in mine.items()}, strict=True)
    return tower.eval()


def resolve_checkpoint(weights: str | None, name: str) -> Path:
    """``--weights FILE`` (a local checkpoint), or the published file in torch's hub folder (fetched when missing
    and online)."""
    if weights is None:
        return torch_hub_file(name)
    path = Path(weights).expanduser()
    if path.is_dir() and (path / IMAGEBIND_FILE).is_file():
        path = path / IMAGEBIND_FILE
    if not path.is_file():
        raise FvaError(f"{weights}: no such file; pass --weights {name}=FILE with ImageBind's {IMAGEBIND_FILE} "
                       f"(or a folder holding it)")
    return path


class ImageBindEncoder(Encoder):
    """One ImageBind tower as an fva encoder (``tower``: "vision" or "audio")."""

    tower: ClassVar[str] = ""
    default_weights = IMAGEBIND_FILE

    def __init__(self, weights: str | Path | None = None, device: str | torch.device = "cpu") -> None:
        super().__init__(weights, device)
        self.path = resolve_checkpoint(None if weights is None else str(weights), self.name)
        self.model = load_tower(self.path, self.tower).to(self.device)
        self._dim = self.model.shape.out_dim
        self._weights_id = checkpoint_identity(self.path)

    def config(self) -> dict:
        s = self.model.shape
        return {"tower": s.modality, "width": s.dim, "blocks": s.blocks, "heads": HEADS[s.modality],
                "output": "ImageBind's embedding (head + post-processing)", **self.input_config()}

    def input_config(self) -> dict:
        return {}


@register
class ImageBindFace(ImageBindEncoder):
    name = "imagebind-face"
    modality = "face"
    tower = "vision"

    @property
    def preprocess(self) -> Callable[[np.ndarray], np.ndarray]:
        return ImageBindImage()

    def collate(self, items: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(items).astype(np.float32, copy=False))

    def encode(self, batch: torch.Tensor) -> Encoded:
        self.model.eval()
        with torch.inference_mode():
            emb = self.model(batch.to(self.device, torch.float32))
        return Encoded(emb.float().cpu(), {})

    def input_config(self) -> dict:
        return {"image_size": IMAGE_SIZE, "resize": "shortest edge, bicubic", "crop": "centre",
                "image_mean": list(CLIP_MEAN), "image_std": list(CLIP_STD)}


@register
class ImageBindVoice(ImageBindEncoder):
    name = "imagebind-voice"
    modality = "voice"
    tower = "audio"
    min_samples = FRAME_SAMPLES

    @property
    def preprocess(self) -> Callable[[np.ndarray], np.ndarray]:
        return ImageBindAudio()

    def collate(self, items: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Every item's clips stacked, and each item's clip count."""
        counts = torch.tensor([len(x) for x in items], dtype=torch.long)
        return torch.from_numpy(np.concatenate(items).astype(np.float32, copy=False)), counts

    def encode(self, batch: tuple[torch.Tensor, torch.Tensor]) -> Encoded:
        clips, counts = batch
        self.model.eval()
        with torch.inference_mode():
            emb = self.model(clips.to(self.device, torch.float32)).float().cpu()
        owner = torch.repeat_interleave(torch.arange(len(counts)), counts)
        sums = torch.zeros(len(counts), emb.shape[1]).index_add_(0, owner, emb)
        return Encoded(sums / counts[:, None].float(), {})

    def input_config(self) -> dict:
        return {"sampling_rate": SAMPLE_RATE, "clip_seconds": CLIP_SECONDS, "min_clips": MIN_CLIPS,
                "mel_bins": MEL_BINS, "frames": TARGET_FRAMES, "mean": AUDIO_MEAN, "std": AUDIO_STD}


# -------------------------------------------------------------------------------------------- small checkpoints
@dataclass(frozen=True)
class ImageBindSize:
    """Widths and depths of a checkpoint in ImageBind's layout (huge: 1280 / 32, 768 / 12, 1024)."""

    vision_dim: int = 64
    vision_blocks: int = 2
    audio_dim: int = 48
    audio_blocks: int = 2
    out_dim: int = 32
    vision_kernel: tuple[int, int, int] = (2, 14, 14)


def save_imagebind(path: str | Path, size: ImageBindSize = ImageBindSize(), seed: int = 0) -> Path:
    """A seeded random checkpoint in ``imagebind_huge.pth``'s layout (both towers, plus a few keys of the other
    modalities, which the towers leave unread), saved with ``torch.save``."""
    from fva.atomic import atomic_path

    torch.manual_seed(seed)
    state = {}
    for modality, dim, blocks in (("vision", size.vision_dim, size.vision_blocks),
                                  ("audio", size.audio_dim, size.audio_blocks)):
        tokens = input_tokens(modality, size.vision_kernel)
        tower = Tower(TowerShape(modality, dim, blocks, 4 * dim, size.out_dim, tokens, size.vision_kernel))
        with torch.no_grad():
            for name, p in tower.named_parameters():
                if name.endswith(("cls_token", "pos_embed", "bias_k", "bias_v")):
                    p.normal_(std=dim ** -0.5)
                elif "norm" in name or name.startswith("head.0") or "pre_transformer_layer" in name:
                    p.normal_(mean=1.0 if name.endswith("weight") else 0.0, std=0.1)
                elif p.dim() > 1:
                    nn.init.xavier_uniform_(p.view(p.shape[0], -1))
                else:
                    p.normal_(std=0.02)
            if tower.postprocessor is not None:
                tower.postprocessor["1"].log_logit_scale.fill_(math.log(20.0))
        for key, value in tower.state_dict().items():
            short, rest = key.split(".", 1)
            part = next(p for p, s in PART_NAMES.items() if s == short)
            state[f"{part}.{modality}.{rest}"] = value.clone()
    state["modality_postprocessors.text.1.log_logit_scale"] = torch.tensor(math.log(1 / 0.07))
    state["modality_preprocessors.text.token_embedding.weight"] = torch.randn(16, size.out_dim)
    state["modality_heads.depth.2.weight"] = torch.randn(size.out_dim, 8)
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path
