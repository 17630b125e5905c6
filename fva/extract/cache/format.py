"""The on-disk format of a feature cache: its constants, file names, attribute codec, small h5 helpers, and the
one checker of a shard file and of a cache folder that both the reader and the validator use.

Every file (a committed part or a final shard) has the same layout::

    keys            (N,)      variable-length UTF-8 manifest keys
    frames          (N,)      int32 frame index of a video-frame face, -1 otherwise
    embeddings      (N, dim)  float16 (or float32), contiguous, uncompressed
    extras/<name>   (N,)      float32 per-row scalars (e.g. age, p_female)
    failed/keys     (M,)      media that could not be encoded ...
    failed/reasons  (M,)      ... and why

plus attributes that make it self-describing (encoder, weights_id, dim, dtype, fva_version, ...). A final
shard is ``shard-00003-of-00008.h5``, a committed part of it ``shard-00003-of-00008.part-000012.h5``, and
while the parts are merged, the shard being filled is ``shard-00003-of-00008.merging.h5``.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from fva import __version__
from fva.atomic import TEMP_SUFFIX
from fva.data.records import MediaRecord
from fva.errors import FvaError

CACHE_FORMAT = 1  # bump on any layout change; readers refuse other formats

DTYPES = ("float16", "float32")
MERGING_SUFFIX = ".merging.h5"  # <stem> + this: a final shard being filled from its parts (never read)
NO_FRAME = -1  # the frame of a row that is not a video frame (voices, images without a frame number)

# Attributes the writer sets itself; callers may not pass them in ``attrs``.
WRITER_ATTRS = ("dim", "dtype", "extras", "fva_version", "cache_format", "shard_index", "num_shards", "rows",
                "failed", "created", "json_attrs")
# Per-file attributes: they legitimately differ between the shards of one cache.
PER_FILE_ATTRS = ("shard_index", "rows", "failed", "created")
# Attributes that must agree between the shards of one cache (and between a writer and the files it resumes).
MUST_AGREE = ("cache_format", "encoder", "modality", "dim", "dtype", "extras", "weights_id")
# Further attributes a resuming writer must agree on with the files already there, when both state them.
RESUME_MUST_AGREE = MUST_AGREE + ("dataset", "subset", "split", "weight_set", "precision")
# Attributes compared across shards by validate_cache (reported, not fatal).
VALIDATE_AGREE = MUST_AGREE + ("weights", "dataset", "subset", "split", "weight_set", "num_shards")

_SHARD_RE = re.compile(r"^shard-(\d{5})-of-(\d{5})\.h5$")
_READ_BYTES = 16 << 20  # bytes per raw read when converting to float32


def shard_name(shard_index: int, num_shards: int) -> str:
    """File name of one shard.

    >>> shard_name(3, 8)
    'shard-00003-of-00008.h5'
    """
    if not (0 <= shard_index < num_shards <= 99999):
        raise ValueError(f"bad shard {shard_index} of {num_shards}")
    return f"shard-{shard_index:05d}-of-{num_shards:05d}.h5"


def is_temp_of(name: str, stem: str) -> bool:
    """Whether the file ``name`` is an unfinished temporary file of the shard ``stem`` (its final file or one
    of its parts): fva.atomic's ``.<name>.<pid>.tmp``, or the ``<name>.tmp-<pid>`` of earlier fva versions.

    >>> stem = "shard-00000-of-00002"
    >>> [is_temp_of(name, stem) for name in (".shard-00000-of-00002.part-000003.h5.4242.tmp",
    ...                                      ".shard-00000-of-00002.h5.7.tmp",
    ...                                      "shard-00000-of-00002.part-000003.h5.tmp-99999",
    ...                                      "shard-00000-of-00002.h5.tmp-1")]
    [True, True, True, True]
    >>> [is_temp_of(name, stem) for name in (".shard-00001-of-00002.h5.7.tmp", "shard-00001-of-00002.h5.tmp-1",
    ...                                      "shard-00000-of-00002.part-000003.h5", "shard-00000-of-00002.h5")]
    [False, False, False, False]
    """
    if name.startswith(f".{stem}.") and name.endswith(TEMP_SUFFIX):
        return True
    return name.startswith(f"{stem}.") and ".tmp" in name[len(stem):]


def row_frame(record: MediaRecord) -> int | None:
    """The ``frame`` a record's single row must carry, or None for a face track (several rows, one per
    sampled frame, each with its own frame index).

    >>> row_frame(MediaRecord(key="v", identity=None, language=None, modality="voice", path="v.wav"))
    -1
    >>> row_frame(MediaRecord(key="f", identity=None, language=None, modality="face", path="f.jpg", frame=75))
    75
    >>> row_frame(MediaRecord(key="t", identity=None, language=None, modality="face", path="t.mp4")) is None
    True
    """
    # media's check of the torch stack at import is for decoding; reading a cache must not depend on it
    from fva.extract.media import VIDEO_EXTS

    if record.frame is not None:
        return int(record.frame)
    if record.modality == "face" and Path(record.path).suffix.lower() in VIDEO_EXTS:
        return None
    return NO_FRAME


# ----------------------------------------------------------------------------------------------- file helpers


def _open(path: Path, mode: str = "r") -> h5py.File:
    # h5py's default locking: HDF5 itself ignores locks where the filesystem has none (NFS), and mixing
    # locking flags on one file within a process makes HDF5 refuse the second open.
    return h5py.File(path, mode)


def _unreadable(path: Path, err: Exception) -> str:
    return f"{path}: unreadable ({err}); delete it and rerun fva extract"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _encode_attrs(attrs: dict) -> dict:
    """Caller attrs -> HDF5-storable values: dicts/lists/tuples become JSON strings (named in json_attrs);
    None values are dropped."""
    out: dict[str, Any] = {}
    json_names = []
    for name, value in attrs.items():
        if value is None:
            continue
        if isinstance(value, Path):
            value = str(value)
        if isinstance(value, (dict, list, tuple)):
            out[name] = json.dumps(value, sort_keys=True, default=str)
            json_names.append(name)
        elif isinstance(value, (str, bool, int, float, np.integer, np.floating)):
            out[name] = value
        else:
            raise TypeError(f"attr {name!r}: cannot store a {type(value).__name__} (use str, number or dict)")
    out["json_attrs"] = json.dumps(sorted(json_names))
    return out


def _decode_attrs(raw: Mapping[str, Any]) -> dict:
    """Stored attrs (a file's, or what _encode_attrs made) -> Python values, JSON attrs parsed."""
    attrs: dict[str, Any] = {}
    for name, value in raw.items():
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.generic):
            value = value.item()
        elif isinstance(value, np.ndarray):
            value = value.tolist()
        attrs[name] = value
    try:
        json_names = json.loads(attrs.pop("json_attrs", "[]"))
    except (TypeError, ValueError):
        json_names = []
    for name in json_names:
        if isinstance(attrs.get(name), str):
            try:
                attrs[name] = json.loads(attrs[name])
            except ValueError:
                pass
    if isinstance(attrs.get("extras"), list):
        attrs["extras"] = tuple(attrs["extras"])
    return attrs


def _str_dataset(group: h5py.Group, name: str, values) -> None:
    group.create_dataset(name, data=np.asarray(values, dtype=object).reshape(-1), dtype=h5py.string_dtype())


def _read_strs(ds: h5py.Dataset) -> np.ndarray:
    if ds.shape[0] == 0:
        return np.empty(0, dtype=object)
    return ds.asstr()[()].astype(object, copy=False)


def _failures(f: h5py.File) -> tuple[np.ndarray, np.ndarray]:
    if "failed" not in f:
        return np.empty(0, dtype=object), np.empty(0, dtype=object)
    return _read_strs(f["failed/keys"]), _read_strs(f["failed/reasons"])


def _read_f32(ds: h5py.Dataset, start: int, stop: int, out: np.ndarray | None = None) -> np.ndarray:
    """Rows [start, stop) of an embeddings dataset as float32, converting in bounded slices (no full-size
    float16 temporary)."""
    n, dim = stop - start, ds.shape[1]
    if out is None:
        out = np.empty((n, dim), dtype=np.float32)
    if n == 0:
        return out
    if ds.dtype == np.float32:
        ds.read_direct(out, np.s_[start:stop], np.s_[0:n])
        return out
    step = max(1, _READ_BYTES // max(1, dim * ds.dtype.itemsize))
    for a in range(start, stop, step):
        b = min(stop, a + step)
        out[a - start:b - start] = ds[a:b]
    return out


# ------------------------------------------------------------------------------------------------- checking


def _scan(folder: Path) -> list[tuple[int, int, Path]]:
    """(shard_index, num_shards, path) of every final shard file in ``folder``, sorted."""
    found = []
    for p in folder.iterdir():
        m = _SHARD_RE.match(p.name)
        if m and p.is_file():
            found.append((int(m.group(2)), int(m.group(1)), p))
    return [(i, n, p) for n, i, p in sorted(found)]


def _missing(shards: list[tuple[int, int, Path]]) -> list[str]:
    present = {(i, n) for i, n, _ in shards}
    return [shard_name(i, n) for n in sorted({n for _, n, _ in shards}) for i in range(n) if (i, n) not in present]


def _unfinished_note(folder: Path) -> str:
    parts = [p for p in folder.glob("shard-*.part-*.h5")]
    return f" ({len(parts)} part files of an unfinished run are there)" if parts else ""


def check_folder(folder: Path) -> tuple[list[tuple[int, int, Path]], list[str]]:
    """The final shards of a cache folder, ``(shard_index, num_shards, path)`` sorted, and what is wrong with
    the folder as a whole, in order (a reader stops at the first; no shards come with a problem).

    >>> import tempfile
    >>> check_folder(Path(tempfile.mkdtemp()))[1][0].endswith(": no complete cache shard; run fva extract")
    True
    """
    if not folder.is_dir():
        return [], [f"{folder}: cache folder not found; run fva extract or check the path"]
    shards = _scan(folder)
    if not shards:
        return [], [f"{folder}: no complete cache shard{_unfinished_note(folder)}; run fva extract"]
    counts = sorted({n for _, n, _ in shards})
    if len(counts) > 1:
        return shards, [f"{folder}: holds shards of runs with {' and '.join(map(str, counts))} shards; keep one "
                        "set (delete the others) or extract into an empty folder"]
    return shards, []


def _file_attrs(path: Path, f: h5py.File) -> dict:
    attrs = _decode_attrs(f.attrs)
    if "cache_format" not in attrs or "keys" not in f or "embeddings" not in f:
        raise FvaError(f"{path}: not an fva feature cache; remove it from the folder or point at a cache "
                       "written by 'fva extract'")
    if attrs["cache_format"] != CACHE_FORMAT:
        raise FvaError(f"{path}: cache format {attrs['cache_format']}, but this fva ({__version__}) reads "
                       f"format {CACHE_FORMAT}; re-run fva extract into a new folder")
    return attrs


def _shape_problem(path: Path, f: h5py.File, attrs: dict) -> str | None:
    n = f["keys"].shape[0]
    emb = f["embeddings"]
    sizes = {"frames": f["frames"].shape[0] if "frames" in f else None, "embeddings": emb.shape[0]}
    for e in attrs.get("extras", ()):
        sizes[f"extras/{e}"] = f["extras"][e].shape[0] if f"extras/{e}" in f else None
    bad = [f"{k} has {v}" for k, v in sizes.items() if v != n]
    if emb.ndim != 2 or emb.shape[1] != attrs.get("dim"):
        bad.append(f"embeddings are {emb.shape[1:]} wide but dim={attrs.get('dim')}")
    if str(emb.dtype) != attrs.get("dtype"):
        bad.append(f"embeddings are {emb.dtype} but dtype={attrs.get('dtype')}")
    if attrs.get("rows") != n:
        bad.append(f"rows attr {attrs.get('rows')}")
    if "failed" in f and f["failed/keys"].shape != f["failed/reasons"].shape:
        bad.append("failed keys and reasons differ in length")
    if bad:
        return f"{path}: damaged shard ({n} keys but {'; '.join(bad)}); delete it and rerun fva extract"
    return None


def check_shard(path: Path, f: h5py.File) -> tuple[dict, str | None]:
    """An open shard file's attributes and what is wrong with it (not an fva cache, another cache format, or
    inconsistent shapes), None when nothing is."""
    try:
        attrs = _file_attrs(path, f)
    except FvaError as err:
        return {}, str(err)
    return attrs, _shape_problem(path, f, attrs)


def disagreement(first: tuple[Path, dict], other: tuple[Path, dict], name: str) -> str | None:
    """How two shards ``(path, attrs)`` of one cache disagree on the attribute ``name``, None if they agree."""
    (path0, attrs0), (path1, attrs1) = first, other
    if attrs0.get(name) == attrs1.get(name):
        return None
    return f"shards disagree on {name}: {path0.name} has {attrs0.get(name)!r}, {path1.name} has {attrs1.get(name)!r}"
