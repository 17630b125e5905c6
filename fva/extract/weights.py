"""Published encoder weights: each source, where its copy lives here, its identity, and fetching it.

Every published source is fetched with its own library's download function, into that library's place:

* ``speaker-ecapa``, ``ecapa-embedding`` (the FLAG 2027 organisers' ``yangwang825/ecapa-tdnn-vox2``) and ``lid``
  (the VoxLingua107 language-ID model): speechbrain's ``from_hparams`` fetch
  (``huggingface_hub.hf_hub_download`` underneath) into fva's models home, ``$FVA_MODELS/<owner>_<name>``
  (default ``~/.cache/fva/models``; the files link into the Hugging Face cache);
* ``vggface`` and ``vggface-keras`` (one file, two preprocessings): deepface's ``download_weights_if_necessary``
  with deepface's own URLs, into
  ``$DEEPFACE_HOME/.deepface/weights/vgg_face_weights.pth``;
* ``vit-age-gender``, ``wavlm``, ``dinov2``, ``clip-image``: ``huggingface_hub.snapshot_download`` into the Hugging
  Face cache (``$HF_HUB_CACHE``); the three large later-entry encoders only their PyTorch files and settings
  (``HUB_PATTERNS``), and only when named (``fva weights fetch --encoders wavlm``), not by default;
* ``imagebind`` (both ImageBind towers, ``imagebind-face`` and ``imagebind-voice``, read one file): torch.hub's
  ``download_url_to_file`` from ImageBind's own URL, as the ImageBind code fetches it, into torch's hub folder
  (``torch.hub.get_dir()/checkpoints/imagebind_huge.pth``); only when named;
* ``voice-age-gender-ecapa`` is not published: fva trains it (``fva train-encoder age-gender``).

Offline (``HF_HUB_OFFLINE=1``, ``FVA_OFFLINE=1``, or ``fva --offline`` which sets both) only local copies load;
a missing one is one line naming the source and the command that fetches it. The weights identity of a copy is
computed here from its files, without loading the model, by the same function the encoder records in caches.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from fva.errors import FvaError

FVA_OFFLINE = "FVA_OFFLINE"
HF_HUB_OFFLINE = "HF_HUB_OFFLINE"
SPEAKER_HUB_ID = "speechbrain/spkrec-ecapa-voxceleb"
# the identity digest (files_digest of embedding_model.ckpt) of the published speaker model: features of it heard
# every VoxCeleb language, whatever folder the copy sits in
SPEAKER_PUBLIC_DIGEST = "322a1e26af41083c"
# the FLAG 2027 organisers' voice model: speechbrain ECAPA-TDNN (channels 512) trained on VoxCeleb2, whose 192-d
# embedding_model output is the baseline's voice feature (not speechbrain/spkrec-ecapa-voxceleb)
ORGANISER_VOICE_HUB_ID = "yangwang825/ecapa-tdnn-vox2"
LID_HUB_ID = "speechbrain/lang-id-voxlingua107-ecapa"
VIT_HUB_ID = "abhilash88/age-gender-prediction"
WAVLM_HUB_ID = "microsoft/wavlm-large"
DINOV2_HUB_ID = "facebook/dinov2-giant"
CLIP_HUB_ID = "openai/clip-vit-large-patch14"
FACE_AGE_HUB_ID = "nateraw/vit-age-classifier"
VOICE_AGE_HUB_ID = "audeering/wav2vec2-large-robust-24-ft-age-gender"
# ImageBind-huge: one file of every modality's weights, fetched as the ImageBind code fetches it (torch.hub's
# download_url_to_file), into torch's hub folder where torch.hub keeps downloaded checkpoints
IMAGEBIND_URL = "https://dl.fbaipublicfiles.com/imagebind/imagebind_huge.pth"
IMAGEBIND_FILE = "imagebind_huge.pth"
# what snapshot_download brings of the large repositories: configs, settings and PyTorch weights (no TF/Flax/ONNX)
HUB_PATTERNS = ("*.json", "*.txt", "*.safetensors", "pytorch_model*.bin")
VGGFACE_FILE = "vgg_face_weights.pth"
SAFETENSORS, BIN = "model.safetensors", "pytorch_model.bin"
TRAIN_AGE_GENDER = "fva train-encoder age-gender"
SPEECHBRAIN_ID_FILES = {"speaker-ecapa": ("embedding_model.ckpt",), "ecapa-embedding": ("embedding_model.ckpt",),
                        "lid": ("embedding_model.ckpt", "classifier.ckpt")}
AGE_GENDER_ID_FILES = ("embedding_model.ckpt", "age_head.ckpt", "gender_head.ckpt")


UNVERIFIED = "not verified here: read the source's model card"


@dataclass(frozen=True)
class Source:
    """Where a published model comes from: ``library`` ("speechbrain", "deepface", "huggingface_hub", "torch.hub",
    or "" when not published) and ``ref`` (its hub id, deepface file name or URL); ``by_default``: fetched by ``fva weights
    fetch`` without ``--encoders``; ``patterns``: the files of a hub snapshot to fetch (empty: all)."""

    name: str
    library: str
    ref: str
    by_default: bool = True
    patterns: tuple[str, ...] = ()
    licence: str = UNVERIFIED  # of the published weights, as their source states it

    @property
    def published(self) -> bool:
        return bool(self.library)

    @property
    def non_commercial(self) -> bool:
        """Its licence allows no commercial use (Creative Commons NC licences)."""
        return "-NC" in self.licence.upper()

    def describe(self) -> str:
        if not self.published:
            return f"not published (train it with '{TRAIN_AGE_GENDER}')"
        return f"{self.library} {self.ref}"


SOURCES: dict[str, Source] = {s.name: s for s in (
    Source("speaker-ecapa", "speechbrain", SPEAKER_HUB_ID, licence="Apache-2.0"),
    Source("voice-age-gender-ecapa", "", "", licence="yours: trained by fva on your CommonVoice copy"),
    Source("vggface", "deepface", VGGFACE_FILE),
    Source("vit-age-gender", "huggingface_hub", VIT_HUB_ID),
    # the FLAG 2027 organisers' features: fetched when named (the FLAG recipe's stage 0 names them)
    Source("ecapa-embedding", "speechbrain", ORGANISER_VOICE_HUB_ID, by_default=False, licence="Apache-2.0"),
    Source("vggface-keras", "deepface", VGGFACE_FILE, by_default=False),
    Source("lid", "speechbrain", LID_HUB_ID, licence="Apache-2.0"),
    Source("wavlm", "huggingface_hub", WAVLM_HUB_ID, by_default=False, patterns=HUB_PATTERNS, licence="MIT"),
    Source("dinov2", "huggingface_hub", DINOV2_HUB_ID, by_default=False, patterns=HUB_PATTERNS,
           licence="Apache-2.0"),
    # ImageBind's LICENSE file is CC BY-NC-SA 4.0 (its README says CC-BY-NC 4.0 for code and weights)
    Source("imagebind", "torch.hub", IMAGEBIND_URL, by_default=False, licence="CC-BY-NC-SA-4.0"),
    Source("clip-image", "huggingface_hub", CLIP_HUB_ID, by_default=False, patterns=HUB_PATTERNS, licence="MIT"),
    Source("face-age", "huggingface_hub", FACE_AGE_HUB_ID, by_default=False, patterns=HUB_PATTERNS),
    Source("voice-age", "huggingface_hub", VOICE_AGE_HUB_ID, by_default=False, patterns=HUB_PATTERNS,
           licence="CC-BY-NC-SA-4.0"),
)}


@dataclass(frozen=True)
class WeightsStatus:
    """One source as it stands here: its local copy (None: not present), that copy's weights identity, and
    where a fetch puts it (``location``)."""

    source: Source
    path: Path | None
    weights_id: str | None
    location: str = ""

    @property
    def present(self) -> bool:
        return self.path is not None

    def as_dict(self) -> dict:
        return {"name": self.source.name, "source": self.source.describe(), "licence": self.source.licence,
                "published": self.source.published,
                "present": self.present, "path": None if self.path is None else str(self.path),
                "location": self.location, "weights_id": self.weights_id}


def source_name(name: str) -> str:
    """The source of an encoder (a variant such as ``wavlm-layers`` shares its model's, by the catalogue) or
    ``lid``; an unknown name lists the known ones."""
    if name in SOURCES:
        return name
    from fva.extract.catalogue import BY_NAME

    if name in BY_NAME:
        return BY_NAME[name].source
    raise FvaError(f"{name!r}: no such encoder; choose from {', '.join(SOURCES)}")


def get_source(name: str) -> Source:
    """The published source of an encoder (or ``lid``); an unknown name lists the known ones."""
    return SOURCES[source_name(name)]


def source_of(ref: str) -> Source | None:
    """The published source whose hub id is ``ref`` (None for any other hub id or path)."""
    return next((s for s in SOURCES.values() if s.published and s.ref == ref), None)


def fetch_command(name: str) -> str:
    return f"fva weights fetch --encoders {name}"


# ----------------------------------------------------------------------------------------------------- offline
def _is_true(value: str | None) -> bool:
    return (value or "").strip().upper() in {"1", "ON", "YES", "TRUE"}  # huggingface_hub's reading


def is_offline() -> bool:
    """True under ``FVA_OFFLINE`` or ``HF_HUB_OFFLINE`` (also when huggingface_hub was told so in code)."""
    if _is_true(os.environ.get(FVA_OFFLINE)) or _is_true(os.environ.get(HF_HUB_OFFLINE)):
        return True
    constants = sys.modules.get("huggingface_hub.constants")
    return bool(getattr(constants, "HF_HUB_OFFLINE", False))


def go_offline() -> None:
    """Offline for this process and its children: ``HF_HUB_OFFLINE=1`` and ``FVA_OFFLINE=1``, and
    huggingface_hub's constant when it was already imported (it reads the variable at import)."""
    os.environ[HF_HUB_OFFLINE] = "1"
    os.environ[FVA_OFFLINE] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def offline_error(name: str, what: str, where: Path | str, pass_instead: str) -> FvaError:
    """The one line for a source that is not here while offline."""
    how = (f"run '{fetch_command(name)}' where the internet is reachable" if name in SOURCES
           else "fetch it where the internet is reachable (without --offline or HF_HUB_OFFLINE)")
    return FvaError(f"{name}: {what} is not in {where} and fva is offline; {how}, or pass {pass_instead}")


def _reason(err: BaseException) -> str:
    cause = err.__cause__ or err
    text = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {text[0][:200]}" if text else type(cause).__name__


def download_error(name: str, what: str, err: BaseException, pass_instead: str) -> FvaError:
    """The one line for a download that failed while online."""
    again = (f"run '{fetch_command(name)}' again" if name in SOURCES else "check the hub id")
    return FvaError(f"{name}: could not download {what} ({_reason(err)}); check the connection and {again}, "
                    f"or pass {pass_instead}")


# ---------------------------------------------------------------------------------------------------- identity
def files_digest(paths: Iterable[Path]) -> str:
    """First 16 hex digits of a SHA-256 over the files' names and bytes (a weights identity)."""
    h = hashlib.sha256()
    for p in sorted(Path(p) for p in paths):
        h.update(p.name.encode())
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()[:16]


def _label(weights: str) -> str:
    """A local folder is named by its base name (no machine-specific paths); a hub id by itself."""
    path = Path(weights).expanduser()
    return path.name if path.is_dir() else weights


def speechbrain_identity(weights: str, files: list[Path]) -> str:
    """``<hub id or folder name>@<digest>`` of a speechbrain model's checkpoint files."""
    if not files or not all(Path(f).is_file() for f in files):
        return _label(weights)
    return f"{_label(weights)}@{files_digest(files)}"


def deepface_identity(path: Path) -> str:
    return f"deepface-{path.name}@{files_digest([path])}"


def pretrained_weight_files(folder: Path, hub_id: str = VIT_HUB_ID) -> list[Path]:
    """A save_pretrained folder's weight files: model.safetensors, sharded safetensors, or pytorch_model.bin
    (``hub_id`` names the expected model in the error)."""
    if (folder / SAFETENSORS).is_file():
        return [folder / SAFETENSORS]
    for name in (SAFETENSORS + ".index.json", BIN + ".index.json"):
        index = folder / name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError, TypeError, AttributeError):
                raise FvaError(f"{index}: not a weights index (no weight_map)") from None
            missing = [s for s in shards if not (folder / s).is_file()]
            if missing:
                raise FvaError(f"{folder}: shard {missing[0]} named in {name} is missing")
            return [folder / s for s in shards]
    if (folder / BIN).is_file():
        return [folder / BIN]
    raise FvaError(f"{folder}: no {SAFETENSORS} or {BIN}; --weights must be a save_pretrained folder of "
                   f"{hub_id}")


def pretrained_identity(weights: str, folder: Path) -> str:
    """The identity of a save_pretrained folder (every Hugging Face source's): ``<hub id or folder name>@<digest>``
    over its weight files, config.json and preprocessor_config.json."""
    extra = [p for p in (folder / "config.json", folder / "preprocessor_config.json") if p.is_file()]
    return f"{_label(weights)}@{files_digest(pretrained_weight_files(folder) + extra)}"


vit_identity = pretrained_identity  # the ViT's name for it


@functools.lru_cache(maxsize=4)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    return files_digest([Path(path)])


def checkpoint_identity(path: Path) -> str:
    """A single-file checkpoint's ``<file name>@<digest of its bytes>`` (hashed once per process while the file is
    unchanged: ImageBind-huge's file is 4.5 GB and both of its encoders read it)."""
    st = Path(path).stat()
    return f"{Path(path).name}@{_file_digest(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)}"


def age_gender_identity(folder: Path) -> str:
    return f"{folder.name}@{files_digest([folder / n for n in AGE_GENDER_ID_FILES])}"


# ----------------------------------------------------------------------------------------------- local copies
def models_home() -> Path:
    """Where fetched or linked speechbrain model folders live (``$FVA_MODELS``, default ``~/.cache/fva/models``)."""
    return Path(os.environ.get("FVA_MODELS", Path.home() / ".cache" / "fva" / "models"))


def speechbrain_savedir(weights: str) -> Path:
    """The models-home folder speechbrain collects ``weights`` (a hub id or a folder) into."""
    return models_home() / re.sub(r"[^A-Za-z0-9_.-]+", "_", weights.strip("/"))[-80:]


def deepface_weights_dir() -> Path:
    """deepface's own weights folder, ``$DEEPFACE_HOME/.deepface/weights`` (home folder by default)."""
    from deepface.commons.folder_utils import get_deepface_home

    return Path(get_deepface_home()) / ".deepface" / "weights"


def torch_hub_checkpoints() -> Path:
    """torch.hub's folder of downloaded checkpoints, ``torch.hub.get_dir()/checkpoints`` (``$TORCH_HOME/hub``)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def torch_hub_path(source: Source) -> Path:
    """Where a torch.hub source's file lives: its URL's file name in :func:`torch_hub_checkpoints`."""
    return torch_hub_checkpoints() / Path(source.ref).name


def hf_cache() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_snapshot(repo_id: str) -> Path | None:
    """The repository's complete snapshot in the Hugging Face cache, or None (never downloads)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except (OSError, ValueError):
        return None


def status(name: str) -> WeightsStatus:
    """The source's local copy and its weights identity, from the files alone (no model is loaded)."""
    name = source_name(name)
    source = get_source(name)
    if source.library == "speechbrain":
        folder = speechbrain_savedir(source.ref)
        files = [folder / f for f in SPEECHBRAIN_ID_FILES[name]]
        if (folder / "hyperparams.yaml").is_file() and all(f.is_file() for f in files):
            return WeightsStatus(source, folder, speechbrain_identity(source.ref, files), str(folder))
        return WeightsStatus(source, None, None, str(folder))
    if source.library == "deepface":  # one file for both VGG-Face encoders
        use_pytorch_backend()
        path = deepface_weights_dir() / VGGFACE_FILE
        return WeightsStatus(source, path if path.is_file() else None,
                             deepface_identity(path) if path.is_file() else None, str(path))
    if source.library == "huggingface_hub":
        folder = cached_snapshot(source.ref)
        if folder is not None:
            try:
                return WeightsStatus(source, folder, pretrained_identity(source.ref, folder), str(folder))
            except FvaError:  # an incomplete folder: not a usable copy
                pass
        return WeightsStatus(source, None, None, str(hf_cache()))
    if source.library == "torch.hub":
        path = torch_hub_path(source)
        if path.is_file():
            return WeightsStatus(source, path, checkpoint_identity(path), str(path))
        return WeightsStatus(source, None, None, str(path))
    return WeightsStatus(source, None, None, "")


def list_weights() -> list[WeightsStatus]:
    return [status(name) for name in SOURCES]


# ---------------------------------------------------------------------------------------------------- fetching
def use_pytorch_backend() -> None:
    """deepface picks its backend engine from this variable (once, on first use); VGG-Face here is the
    PyTorch implementation, which deepface has only from 0.0.101 on (checked first: one clear line)."""
    from fva.environment import require_deepface_pytorch

    require_deepface_pytorch()
    os.environ.setdefault("DEEPFACE_BACKEND_ENGINE", "pytorch")


def deepface_file(name: str = "vggface") -> Path:
    """deepface's ``vgg_face_weights.pth``, downloaded by deepface (its own URLs) when missing and online;
    ``name``, the encoder asking (``vggface`` or ``vggface-keras``), is the one the messages name."""
    use_pytorch_backend()
    folder = deepface_weights_dir()
    path = folder / VGGFACE_FILE
    if path.is_file():
        return path
    if is_offline():
        raise offline_error(name, f"deepface's {VGGFACE_FILE}", folder, "--weights FILE")
    from deepface.commons import folder_utils, weight_utils
    from deepface.commons.logger import Logger
    from deepface.models.facial_recognition.pytorch.VGGFace import WEIGHTS_URL

    logger = Logger()  # deepface's one logger prints to stdout; fva reports the outcome (gdown's bar stays)
    level, logger.log_level = logger.log_level, max(logger.log_level, logging.ERROR)
    try:
        folder_utils.initialize_folder()
        got = Path(weight_utils.download_weights_if_necessary(file_name=VGGFACE_FILE, source_url=WEIGHTS_URL))
    except Exception as err:  # noqa: BLE001  (any failed download is one line)
        raise download_error(name, f"deepface's {VGGFACE_FILE} to {path}", err, "--weights FILE") from None
    finally:
        logger.log_level = level
    if not got.is_file():
        raise FvaError(f"{name}: deepface reported {got} but left no file there; run "
                       f"'{fetch_command(name)}' again, or pass --weights FILE")
    return got


_NOTED: set[str] = set()


def licence_notice(name: str) -> str | None:
    """The one line fetching a non-commercial source prints (None for any other source)."""
    source = get_source(name)
    if not source.non_commercial:
        return None
    return (f"note: {source.name} weights are licensed {source.licence}: non-commercial use only "
            f"({source.describe()})")


def note_licence(name: str) -> None:
    """Print :func:`licence_notice` on stderr, once per source and process."""
    line = licence_notice(name)
    if line and name not in _NOTED:
        _NOTED.add(name)
        print(line, file=sys.stderr)


def torch_hub_file(name: str = "imagebind") -> Path:
    """A torch.hub source's file (``imagebind_huge.pth``) in torch's hub folder, downloaded there by torch.hub's
    own ``download_url_to_file`` when missing and online (as the ImageBind code fetches it); offline: one line."""
    import torch.hub

    source = get_source(name)
    path = torch_hub_path(source)
    folder = path.parent
    if path.is_file():
        return path
    if is_offline():
        raise offline_error(source.name, path.name, folder, "--weights FILE")
    note_licence(source.name)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(source.ref, str(path), progress=sys.stderr.isatty())
    except Exception as err:  # noqa: BLE001  (any failed download is one line)
        raise download_error(source.name, f"{source.ref} to {path}", err, "--weights FILE") from None
    if not path.is_file():
        raise FvaError(f"{source.name}: torch.hub reported no error but left no file at {path}; run "
                       f"'{fetch_command(source.name)}' again, or pass --weights FILE")
    return path


def hub_snapshot(repo_id: str, name: str = "vit-age-gender", patterns: tuple[str, ...] = ()) -> Path:
    """``snapshot_download(repo_id)`` into the Hugging Face cache (only the files matching ``patterns``, or a
    published source's own ``patterns``; empty: all); offline: the cached copy only."""
    from huggingface_hub import snapshot_download

    offline = is_offline()
    known = source_of(repo_id)
    if known is not None and not offline:
        note_licence(known.name)
    patterns = patterns or (known.patterns if known is not None else ())
    patterns = list(patterns) if patterns else None
    try:
        return Path(snapshot_download(repo_id, local_files_only=offline, allow_patterns=patterns))
    except Exception as err:  # noqa: BLE001  (any failed look-up or download is one line)
        if offline:
            raise offline_error(name, repo_id, f"the Hugging Face cache ({hf_cache()})", "--weights DIR") from None
        raise download_error(name, repo_id, err, "--weights DIR") from None


def speechbrain_fetch_config(allow_network: bool | None = None):
    """speechbrain's fetch settings: no network when offline."""
    from speechbrain.utils.fetching import FetchConfig

    return FetchConfig(allow_network=not is_offline() if allow_network is None else allow_network)


def speechbrain_error(source: str, savedir: Path, err: BaseException) -> FvaError:
    """The one line for a speechbrain hub model that could not be fetched (offline or online)."""
    known = source_of(source)
    name = known.name if known else source
    if is_offline():
        return offline_error(name, f"speechbrain's {source}", savedir, "--weights DIR")
    if known:
        return download_error(name, f"speechbrain's {source}", err, "--weights DIR")
    return FvaError(f"{source}: could not fetch this speechbrain model ({_reason(err)}); check the hub id and "
                    "the connection, or pass --weights DIR")


def speechbrain_fetch(hub_id: str) -> Path:
    """speechbrain's own fetch (``from_hparams(download_only=True)``) of a hub model into the models home."""
    from speechbrain.inference.interfaces import Pretrained

    savedir = speechbrain_savedir(hub_id)
    try:
        Pretrained.from_hparams(source=hub_id, savedir=str(savedir), download_only=True,
                                fetch_config=speechbrain_fetch_config())
    except Exception as err:  # noqa: BLE001  (any failed download is one line)
        raise speechbrain_error(hub_id, savedir, err) from None
    return savedir


def fetch(name: str) -> WeightsStatus:
    """Fetch one source with its library's download function (a speechbrain or deepface copy already here is
    kept; the Hugging Face snapshot is brought up to date when online). An unpublished source is returned as
    not present."""
    name = source_name(name)
    source = get_source(name)
    if source.library == "speechbrain" and not status(name).present:
        speechbrain_fetch(source.ref)
    elif source.library == "deepface":
        deepface_file(name)
    elif source.library == "huggingface_hub":
        hub_snapshot(source.ref, name)
    elif source.library == "torch.hub":
        torch_hub_file(name)
    note_licence(name)
    got = status(name)
    if source.published and not got.present:
        raise FvaError(f"{name}: {source.describe()} was fetched but its files are still incomplete here; "
                       f"remove its local copy and run '{fetch_command(name)}' again")
    return got


def published_names(include_lid: bool = True, every: bool = False) -> list[str]:
    """The published sources ``fva weights fetch`` gets without ``--encoders`` (``every``: all published)."""
    return [n for n, s in SOURCES.items() if s.published and (every or s.by_default) and (include_lid or n != "lid")]
