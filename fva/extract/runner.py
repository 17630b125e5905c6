"""Extraction: encoders of one modality over a manifest's records, each record decoded once in background
workers and fed to every encoder's own preprocessing, batched on the device, written to one resumable shard
per encoder in the cache.

Workers split the manifest deterministically (record ``i`` goes to shard ``i % num_shards``), so the same
command scales from one GPU to a job array; under torchrun ``RANK``/``WORLD_SIZE`` pick the shard and
``LOCAL_RANK`` the GPU (:func:`default_device`). A record already committed to an encoder's shard (rows or a
recorded failure) is skipped for that encoder, so a killed run resumes where it stopped. Bad media become
recorded failures (``--strict`` stops at the first instead), as does media that decodes but cannot carry an
identity: too short, silent or too small (the floors of :mod:`fva.extract.media`).
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fva.data.records import Manifest, MediaRecord
from fva.errors import FvaError
from fva.extract import COMMIT_ROWS
from fva.extract.cache import ShardWriter
from fva.extract.cache.memory import RowSink
from fva.extract.encoders.base import Encoder
from fva.extract.media import (MIN_FACE_SIDE, MIN_SECONDS, MediaError, audio_problem, image_problem, load_audio,
                               load_face, min_audio_samples)
from fva.layout import encoder_folder, write_manifest

WINDOW_BATCHES = 8  # decoded records gathered before sorting clips by length into batches
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # --precision -> autocast dtype
MAX_WORKERS = 8  # default decoding processes per extraction process, at most


@dataclass
class ExtractSummary:
    encoder: str
    folder: Path
    extracted: int = 0  # records written in this run
    rows: int = 0  # rows written in this run (a face track gives several)
    skipped: int = 0  # records already in the shard from an earlier run
    failed: int = 0
    seconds: float = 0.0  # wall time of the pass (shared by the encoders of one modality run together)

    def line(self) -> str:
        rate = self.extracted / self.seconds if self.seconds > 0 else 0.0
        return (f"{self.encoder}: extracted {self.extracted} ({self.rows} rows, {rate:.1f} items/s), "
                f"skipped as already done {self.skipped}, failed {self.failed} -> {self.folder}")


def shard_from_env(num_shards: int | None, shard_index: int | None) -> tuple[int, int]:
    """``(num_shards, shard_index)`` from the options, else from torchrun's WORLD_SIZE/RANK, else (1, 0)."""
    if num_shards is None and shard_index is None and "WORLD_SIZE" in os.environ:
        num_shards, shard_index = int(os.environ["WORLD_SIZE"]), int(os.environ.get("RANK", 0))
    num_shards = 1 if num_shards is None else num_shards
    shard_index = 0 if shard_index is None else shard_index
    if num_shards < 1 or not 0 <= shard_index < num_shards:
        raise FvaError(f"--shard-index {shard_index} is outside 0..{num_shards - 1} (--num-shards {num_shards})")
    return num_shards, shard_index


def shard_records(records: Sequence[MediaRecord], num_shards: int, shard_index: int) -> Sequence[MediaRecord]:
    """This worker's records: every ``num_shards``-th one, starting at ``shard_index`` (a view of a
    :class:`~fva.data.records.RecordTable`)."""
    return records[shard_index::num_shards]


def default_device(requested: str | None = None) -> str:
    """The torch device of this process: ``requested`` when given; else ``cuda:LOCAL_RANK`` under torchrun
    (each rank on its own GPU), ``cuda`` without LOCAL_RANK, ``cpu`` without CUDA."""
    if requested:
        return requested
    if not torch.cuda.is_available():
        return "cpu"
    local = os.environ.get("LOCAL_RANK")
    return f"cuda:{int(local)}" if local is not None else "cuda"


def default_workers() -> int:
    """Decoding processes per extraction process: the CPUs this process may use less one (for the process
    itself), shared by torchrun's ranks on the node (LOCAL_WORLD_SIZE), at most MAX_WORKERS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    per_node = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", 1)))
    return max(0, min(MAX_WORKERS, (cpus - 1) // per_node))


def check_precision(precision: str, device: str | torch.device) -> None:
    """Refuse a precision the device cannot run (one line): fp16 autocast is for CUDA only, bf16 needs a GPU
    that has it."""
    if precision not in PRECISIONS:
        raise FvaError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    device = torch.device(device)
    if precision == "fp16" and device.type != "cuda":
        raise FvaError(f"--precision fp16 needs a CUDA device (this run is on {device}); on the CPU use bf16 "
                       "or fp32")
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise FvaError(f"--precision bf16: {torch.cuda.get_device_name(device)} has no bfloat16; use fp16 or fp32")
    if precision != "fp32" and device.type not in ("cuda", "cpu"):
        raise FvaError(f"--precision {precision} is for cuda or cpu devices, not {device}; use fp32")


def _autocast(device: torch.device, precision: str):
    """torch.autocast at ``precision`` on ``device`` (nothing for fp32)."""
    dtype = PRECISIONS[precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def _to_device(batch: Any, device: torch.device) -> Any:
    """Floating tensors of a collated batch onto a CUDA device through pinned memory, non-blocking (lengths
    and other integer tensors stay on the CPU, where the encoders read them); unchanged on the CPU."""
    if device.type != "cuda":
        return batch
    if isinstance(batch, torch.Tensor):
        return batch.pin_memory().to(device, non_blocking=True) if batch.is_floating_point() else batch
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to_device(x, device) for x in batch)
    return batch


class DecodedRecords(Dataset):
    """Map-style dataset: record ``i`` -> ``(i, [(frame, model input), ...], failure reason or None)``; voice
    shorter than ``min_samples`` (16 kHz samples) or silent, and faces under ``MIN_FACE_SIDE`` pixels, are failures.

    Runs in data-loader workers: decoding and the encoder's preprocessing happen off the main process. Given a
    :class:`~fva.data.records.RecordTable`, a worker builds only the records it decodes, from arrays it shares
    with the main process unchanged (no Python object per record to refcount, so no page is copied).
    """

    def __init__(self, records: Sequence[MediaRecord], root: Path, preprocess: Callable, min_samples: int) -> None:
        self.many = DecodedForEncoders(records, root, [preprocess], [min_samples])

    def __len__(self) -> int:
        return len(self.many)

    def __getitem__(self, i: int):
        i, outcomes = self.many[i]
        _, items, reason = outcomes[0]
        return i, items, reason


class DecodedForEncoders(Dataset):
    """Map-style dataset over the records ``records[index[i]]``: item ``i`` decoded once -> ``(i, [(encoder,
    items, reason), ...])`` for the encoders ``wanted[i]`` marks, ``items`` being ``[(frame, that encoder's model
    input), ...]`` and ``reason`` the failure (None when it decoded). Media that decodes but cannot carry an
    identity is a failure too: audio shorter than the encoder's ``min_samples`` (16 kHz samples, the larger of its
    receptive field and its minimum duration: :func:`~fva.extract.media.min_audio_samples`) or silent
    (:func:`~fva.extract.media.audio_problem`), a face image or frame with a side under the encoder's ``min_sides``
    pixels (:func:`~fva.extract.media.image_problem`). Runs in data-loader workers, preprocessing included; it
    holds only numpy arrays beside ``records``, so forked workers copy no per-record objects."""

    def __init__(self, records: Sequence[MediaRecord], root: Path, preprocesses: Sequence[Callable],
                 min_samples: Sequence[int], index: np.ndarray | None = None,
                 wanted: np.ndarray | None = None, min_sides: Sequence[int] | None = None) -> None:
        self.records, self.root = records, root
        self.preprocesses, self.min_samples = list(preprocesses), list(min_samples)
        self.min_sides = [MIN_FACE_SIDE] * len(self.preprocesses) if min_sides is None else list(min_sides)
        self.index = np.arange(len(records)) if index is None else index  # positions in records
        self.wanted = np.ones((len(self.index), len(self.preprocesses)), bool) if wanted is None else wanted

    def __len__(self) -> int:
        return len(self.index)

    def record(self, i: int) -> MediaRecord:
        return self.records[int(self.index[i])]

    def __getitem__(self, i: int):
        record = self.record(i)
        wanted = np.flatnonzero(self.wanted[i]).tolist()
        try:
            decoded = (load_audio(self.root / record.path) if record.modality == "voice"
                       else load_face(self.root / record.path, record.frame))
        except MediaError as err:
            return i, [(e, [], str(err)) for e in wanted]
        out = []
        for e in wanted:
            if record.modality == "voice":
                problem = audio_problem(decoded, self.min_samples[e])
                if problem is not None:
                    out.append((e, [], problem))
                    continue
                out.append((e, [(-1, self.preprocesses[e](decoded))], None))
            else:
                problem = next((p for _, img in decoded if (p := image_problem(img, self.min_sides[e]))), None)
                if problem is not None:
                    out.append((e, [], problem))
                    continue
                try:
                    out.append((e, [(frame, self.preprocesses[e](img)) for frame, img in decoded], None))
                except MediaError as err:
                    out.append((e, [], str(err)))
        return i, out


def record_keys(records: Sequence[MediaRecord]) -> Iterator[str]:
    """The keys of a record sequence in order: a :class:`~fva.data.records.RecordTable` gives them without building
    its records."""
    return records.keys() if hasattr(records, "keys") else (r.key for r in records)


def _first(batch):  # DataLoader with batch_size=None passes items through; keep it picklable
    return batch


def extract_records(encoder: Encoder, records: Sequence[MediaRecord], root: Path, writer: RowSink, *,
                    batch_size: int = 64, workers: int = 2, strict: bool = False, progress: bool = True,
                    precision: str = "fp32") -> tuple[int, int, int]:
    """Encode ``records`` into ``writer``; returns (records extracted, rows written, records failed)."""
    return extract_records_many([encoder], records, root, [writer], batch_size=batch_size, workers=workers,
                                strict=strict, progress=progress, precision=precision)[0]


def extract_records_many(encoders: Sequence[Encoder], records: Sequence[MediaRecord], root: Path,
                         writers: Sequence[RowSink], pending: Sequence[set[str]] | None = None, *,
                         batch_size: int = 64, workers: int = 2, strict: bool = False, progress: bool = True,
                         precision: str = "fp32") -> list[tuple[int, int, int]]:
    """Encode ``records`` (each encoder only the keys of its ``pending`` set; None: all) into each encoder's
    writer, decoding every record once for all of them; per encoder (records extracted, rows written, records
    failed). An encoder sees its records in the order of ``records``, so its batches are those of a run alone."""
    from tqdm import tqdm

    if len({e.modality for e in encoders}) > 1:
        raise ValueError(f"encoders of one modality at a time, got {[e.name for e in encoders]}")
    for encoder in encoders:
        check_precision(precision, encoder.device)
    index = wanted = None
    if pending is not None:
        mask = np.zeros((len(records), len(encoders)), bool)
        for j, key in enumerate(record_keys(records)):
            mask[j] = [key in keys for keys in pending]
        index = np.flatnonzero(mask.any(axis=1))
        wanted = mask[index]
    min_samples = [min_audio_samples(getattr(e, "min_samples", 0), getattr(e, "min_seconds", MIN_SECONDS))
                   for e in encoders]
    min_sides = [getattr(e, "min_face_side", MIN_FACE_SIDE) for e in encoders]
    dataset = DecodedForEncoders(records, root, [e.preprocess for e in encoders], min_samples, index, wanted,
                                 min_sides)
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_first,
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    counts = [[0, 0, 0] for _ in encoders]  # extracted, rows, failed
    windows: list[list[tuple[str, list]]] = [[] for _ in encoders]  # per encoder: (key, items) to encode
    desc = ",".join(e.name for e in encoders)
    bar = tqdm(total=len(dataset), desc=desc, unit="item", disable=not progress, dynamic_ncols=True)

    def flush(e: int) -> None:
        n, r = _encode_window(encoders[e], windows[e], writers[e], batch_size, precision)
        counts[e][0] += n
        counts[e][1] += r
        windows[e] = []

    try:
        for i, outcomes in loader:
            record = dataset.record(i)
            for e, items, reason in outcomes:
                if reason is not None:
                    if strict:
                        raise FvaError(f"{root / record.path}: {reason} (--strict stops at the first failed "
                                       "file; drop --strict to record failures and go on)")
                    writers[e].add_failure(record.key, reason)
                    counts[e][2] += 1
                    continue
                windows[e].append((record.key, items))
                if sum(len(it) for _, it in windows[e]) >= batch_size * WINDOW_BATCHES:
                    flush(e)
            bar.update(1)
        for e in range(len(encoders)):
            if windows[e]:
                flush(e)
    finally:
        bar.close()
    return [tuple(c) for c in counts]


def _encode_window(encoder: Encoder, window: list[tuple[str, list]], writer: RowSink, batch_size: int,
                   precision: str = "fp32") -> tuple[int, int]:
    """Encode every item of a window of decoded records (clips sorted by length, so batches pad little),
    then add each record's rows whole."""
    flat = [(w, j, x) for w, (_, items) in enumerate(window) for j, (_, x) in enumerate(items)]
    if encoder.modality == "voice":
        flat.sort(key=lambda t: len(t[2]))
    outputs: dict[tuple[int, int], tuple[np.ndarray, dict[str, float]]] = {}
    for start in range(0, len(flat), batch_size):
        chunk = flat[start:start + batch_size]
        batch = _to_device(encoder.collate([x for _, _, x in chunk]), encoder.device)
        with _autocast(encoder.device, precision):
            encoded = encoder.encode(batch)
        emb = encoded.embeddings.float().numpy()
        extras = {k: v.float().numpy() for k, v in encoded.extras.items()}
        for n, (w, j, _) in enumerate(chunk):
            outputs[w, j] = emb[n], {k: v[n] for k, v in extras.items()}
    rows = 0
    for w, (key, items) in enumerate(window):
        frames = np.array([frame for frame, _ in items], dtype=np.int32)
        emb = np.stack([outputs[w, j][0] for j in range(len(items))])
        extras = {k: np.array([outputs[w, j][1][k] for j in range(len(items))], dtype=np.float32)
                  for k in encoder.extras}
        writer.add(key, frames, emb, extras)
        rows += len(items)
    return len(window), rows


def run_extraction_many(manifest: Manifest, encoders: Sequence[Encoder], cache_root: Path, *,
                        root: Path | None = None, num_shards: int = 1, shard_index: int = 0, batch_size: int = 64,
                        workers: int = 2, limit: int | None = None, dtype: str = "float16", strict: bool = False,
                        progress: bool = True, commit_rows: int = COMMIT_ROWS, weight_set: str | None = None,
                        precision: str = "fp32") -> list[ExtractSummary]:
    """Extract several encoders of one modality for this worker's shard of ``manifest`` in one pass (each
    medium decoded once, every encoder in memory together) into the folders of ``weight_set`` (default: the
    manifest's split; :mod:`fva.layout`); resumable per encoder. The manifest is kept beside the caches
    (:func:`fva.layout.write_manifest`): stage 2 reads identities and languages from it."""
    start = time.perf_counter()
    if not encoders:
        return []
    modalities = {e.modality for e in encoders}
    if len(modalities) > 1:
        raise FvaError(f"{', '.join(e.name for e in encoders)}: run the encoders of one modality together")
    for encoder in encoders:
        check_precision(precision, encoder.device)
    device = encoders[0].device
    if device.type == "cuda" and device.index is not None:
        torch.cuda.set_device(device)  # pinned buffers and CUDA contexts on this rank's GPU, not on GPU 0
    root = Path(root or manifest.root)
    if not root.is_dir():
        raise FvaError(f"dataset root {root} not found; pass --root the folder the manifest's paths are under")
    records = manifest.table.where_modality(next(iter(modalities)))  # a view: no record objects
    if limit is not None:
        records = records[:limit]
    mine = shard_records(records, num_shards, shard_index)
    weight_set = weight_set or manifest.split
    kept = write_manifest(cache_root, manifest, weight_set)
    summaries: list[ExtractSummary] = []
    writers: list[ShardWriter] = []
    pending: list[set[str]] = []
    for encoder in encoders:
        folder = encoder_folder(cache_root, manifest, encoder.name, weight_set)
        attrs = {"encoder": encoder.name, "modality": encoder.modality, "weights": encoder.weights,
                 "weights_id": encoder.weights_id, "dataset": manifest.dataset, "subset": manifest.subset,
                 "split": manifest.split, "weight_set": weight_set, "manifest": str(kept),
                 "config": encoder.config(), "precision": precision}
        writer = ShardWriter(folder, shard_index, num_shards, dim=encoder.dim, dtype=dtype, extras=encoder.extras,
                             attrs=attrs, part_rows=commit_rows)
        summary = ExtractSummary(encoder.name, folder)
        todo: set[str] = set()
        if writer.is_complete():
            summary.skipped = len(mine)
        else:
            done = writer.done_keys()
            todo = {key for key in record_keys(mine) if key not in done}
            summary.skipped = len(mine) - len(todo)
        summaries.append(summary)
        writers.append(writer)
        pending.append(todo)
    active = [e for e, w in enumerate(writers) if not w.is_complete()]
    if active:
        try:
            counts = extract_records_many([encoders[e] for e in active], mine, root, [writers[e] for e in active],
                                          [pending[e] for e in active], batch_size=batch_size, workers=workers,
                                          strict=strict, progress=progress, precision=precision)
        except BaseException:
            for e in active:
                writers[e].commit()  # keep every record encoded so far: a rerun resumes after them
            raise
        for e, (extracted, rows, failed) in zip(active, counts):
            summaries[e].extracted, summaries[e].rows, summaries[e].failed = extracted, rows, failed
        for e in active:
            writers[e].finalize()
    seconds = time.perf_counter() - start
    for summary in summaries:
        summary.seconds = seconds
    return summaries


def run_extraction(manifest: Manifest, encoder: Encoder, cache_root: Path, **options: Any) -> ExtractSummary:
    """Extract one encoder's features (:func:`run_extraction_many` with one encoder; the same options)."""
    return run_extraction_many(manifest, [encoder], cache_root, **options)[0]


def iter_encoders(names: list[str], weights: dict[str, str], device: str) -> Iterator[Encoder]:
    """Build each named encoder in turn (``list(...)`` of it holds them all in memory together)."""
    from fva.extract.encoders.base import get_encoder_class

    for name in names:
        cls = get_encoder_class(name)
        yield cls(weights.get(name), device=device)


def encoders_by_modality(names: list[str]) -> list[list[str]]:
    """The names grouped by modality (in the order the modalities first appear), each group in the given
    order: the groups :func:`run_extraction_many` runs together."""
    from fva.extract.encoders.base import get_encoder_class

    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(get_encoder_class(name).modality, []).append(name)
    return list(groups.values())
