"""Extraction: one encoder over a manifest's records, decoded in background workers, batched on the device,
written to a resumable shard of the cache.

Workers split the manifest deterministically (record ``i`` goes to shard ``i % num_shards``), so the same
command scales from one GPU to a job array; under torchrun ``RANK``/``WORLD_SIZE`` pick the shard. A
record already committed to the shard (rows or a recorded failure) is skipped, so a killed run resumes
where it stopped. Bad media become recorded failures (``--strict`` stops at the first instead).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from fva.data.records import Manifest, MediaRecord
from fva.errors import FvaError
from fva.extract import COMMIT_ROWS
from fva.extract.cache import ShardWriter
from fva.extract.encoders.base import Encoder
from fva.extract.media import MediaError, load_audio, load_face
from fva.layout import encoder_folder, write_manifest

WINDOW_BATCHES = 8  # decoded records gathered before sorting clips by length into batches


@dataclass
class ExtractSummary:
    encoder: str
    folder: Path
    extracted: int = 0  # records written in this run
    rows: int = 0  # rows written in this run (a face track gives several)
    skipped: int = 0  # records already in the shard from an earlier run
    failed: int = 0
    seconds: float = 0.0

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


class DecodedRecords(Dataset):
    """Map-style dataset: record ``i`` -> ``(i, [(frame, model input), ...], failure reason or None)``.

    Runs in data-loader workers: decoding and the encoder's preprocessing happen off the main process. Given a
    :class:`~fva.data.records.RecordTable`, a worker builds only the records it decodes, from arrays it shares
    with the main process unchanged (no Python object per record to refcount, so no page is copied).
    """

    def __init__(self, records: Sequence[MediaRecord], root: Path, preprocess: Callable, min_samples: int) -> None:
        self.records, self.root, self.preprocess, self.min_samples = records, root, preprocess, min_samples

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int):
        record = self.records[i]
        path = self.root / record.path
        try:
            if record.modality == "voice":
                audio = load_audio(path)
                if len(audio) < self.min_samples:
                    raise MediaError(f"too short: {len(audio)} samples at 16 kHz, the encoder needs at least "
                                     f"{self.min_samples}")
                items = [(-1, self.preprocess(audio))]
            else:
                items = [(frame, self.preprocess(img)) for frame, img in load_face(path, record.frame)]
        except MediaError as err:
            return i, [], str(err)
        return i, items, None


def _first(batch):  # DataLoader with batch_size=None passes items through; keep it picklable
    return batch


def extract_records(encoder: Encoder, records: Sequence[MediaRecord], root: Path, writer: ShardWriter, *,
                    batch_size: int = 64, workers: int = 2, strict: bool = False,
                    progress: bool = True) -> tuple[int, int, int]:
    """Encode ``records`` into ``writer``; returns (records extracted, rows written, records failed)."""
    from tqdm import tqdm

    dataset = DecodedRecords(records, root, encoder.preprocess, getattr(encoder, "min_samples", 0))
    loader = DataLoader(dataset, batch_size=None, shuffle=False, num_workers=workers, collate_fn=_first,
                        prefetch_factor=4 if workers else None, persistent_workers=False)
    extracted = rows = failed = 0
    bar = tqdm(total=len(records), desc=encoder.name, unit="item", disable=not progress, dynamic_ncols=True)
    window: list[tuple[int, list]] = []
    try:
        for i, items, reason in loader:
            if reason is not None:
                record = records[i]
                if strict:
                    raise FvaError(f"{root / record.path}: {reason} (--strict stops at the first failed file; "
                                   "drop --strict to record failures and go on)")
                writer.add_failure(record.key, reason)
                failed += 1
                bar.update(1)
                continue
            window.append((i, items))
            if sum(len(it) for _, it in window) >= batch_size * WINDOW_BATCHES:
                n, r = _encode_window(encoder, records, window, writer, batch_size)
                extracted, rows = extracted + n, rows + r
                bar.update(n)
                window = []
        if window:
            n, r = _encode_window(encoder, records, window, writer, batch_size)
            extracted, rows = extracted + n, rows + r
            bar.update(n)
    finally:
        bar.close()
    return extracted, rows, failed


def _encode_window(encoder: Encoder, records: Sequence[MediaRecord], window: list[tuple[int, list]],
                   writer: ShardWriter, batch_size: int) -> tuple[int, int]:
    """Encode every item of a window of decoded records (clips sorted by length, so batches pad little),
    then add each record's rows whole."""
    flat = [(w, j, x) for w, (_, items) in enumerate(window) for j, (_, x) in enumerate(items)]
    if encoder.modality == "voice":
        flat.sort(key=lambda t: len(t[2]))
    outputs: dict[tuple[int, int], tuple[np.ndarray, dict[str, float]]] = {}
    for start in range(0, len(flat), batch_size):
        chunk = flat[start:start + batch_size]
        encoded = encoder.encode(encoder.collate([x for _, _, x in chunk]))
        emb = encoded.embeddings.numpy()
        extras = {k: v.numpy() for k, v in encoded.extras.items()}
        for n, (w, j, _) in enumerate(chunk):
            outputs[w, j] = emb[n], {k: v[n] for k, v in extras.items()}
    rows = 0
    for w, (i, items) in enumerate(window):
        frames = np.array([frame for frame, _ in items], dtype=np.int32)
        emb = np.stack([outputs[w, j][0] for j in range(len(items))])
        extras = {k: np.array([outputs[w, j][1][k] for j in range(len(items))], dtype=np.float32)
                  for k in encoder.extras}
        writer.add(records[i].key, frames, emb, extras)
        rows += len(items)
    return len(window), rows


def run_extraction(manifest: Manifest, encoder: Encoder, cache_root: Path, *, root: Path | None = None,
                   num_shards: int = 1, shard_index: int = 0, batch_size: int = 64, workers: int = 2,
                   limit: int | None = None, dtype: str = "float16", strict: bool = False,
                   progress: bool = True, commit_rows: int = COMMIT_ROWS,
                   weight_set: str | None = None) -> ExtractSummary:
    """Extract one encoder's features for this worker's shard of ``manifest`` into the folder of ``weight_set``
    (default: the manifest's split; :mod:`fva.layout`); resumable. The manifest is kept beside the caches
    (:func:`fva.layout.write_manifest`): stage 2 reads identities and languages from it."""
    start = time.perf_counter()
    root = Path(root or manifest.root)
    if not root.is_dir():
        raise FvaError(f"dataset root {root} not found; pass --root the folder the manifest's paths are under")
    records = manifest.table.where_modality(encoder.modality)
    if limit is not None:
        records = records[:limit]
    mine = shard_records(records, num_shards, shard_index)
    weight_set = weight_set or manifest.split
    folder = encoder_folder(cache_root, manifest, encoder.name, weight_set)
    kept = write_manifest(cache_root, manifest, weight_set)
    attrs = {"encoder": encoder.name, "modality": encoder.modality, "weights": encoder.weights,
             "weights_id": encoder.weights_id, "dataset": manifest.dataset, "subset": manifest.subset,
             "split": manifest.split, "weight_set": weight_set, "manifest": str(kept), "config": encoder.config()}
    writer = ShardWriter(folder, shard_index, num_shards, dim=encoder.dim, dtype=dtype, extras=encoder.extras,
                         attrs=attrs, part_rows=commit_rows)
    summary = ExtractSummary(encoder.name, folder)
    if writer.is_complete():
        summary.skipped = len(mine)
    else:
        done = writer.done_keys()
        pending = mine.without_keys(done)
        summary.skipped = len(mine) - len(pending)
        try:
            summary.extracted, summary.rows, summary.failed = extract_records(
                encoder, pending, root, writer, batch_size=batch_size, workers=workers, strict=strict,
                progress=progress)
        except BaseException:
            writer.commit()  # keep every record encoded so far: a rerun resumes after them
            raise
        writer.finalize()
    summary.seconds = time.perf_counter() - start
    return summary


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def iter_encoders(names: list[str], weights: dict[str, str], device: str) -> Iterator[Encoder]:
    """Build each named encoder in turn (one model in memory at a time)."""
    from fva.extract.encoders.base import get_encoder_class

    for name in names:
        cls = get_encoder_class(name)
        yield cls(weights.get(name), device=device)
