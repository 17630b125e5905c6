"""Every problem of a cache in one call (:func:`validate_cache`, ``fva cache validate``), optionally against
its manifest."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fva.data.records import Manifest
from fva.extract.cache.format import (VALIDATE_AGREE, _failures, _missing, _open, _read_f32, _read_strs,
                                      _unreadable, check_folder, check_shard, disagreement, row_frame)


def _examples(items: list[str], k: int = 3) -> str:
    shown = ", ".join(items[:k])
    return shown + (", ..." if len(items) > k else "")


def validate_cache(folder: Path, manifest: Manifest | None = None) -> list[str]:
    """Every problem of a cache, one line each; [] when it is valid.

    Checks each shard file (an fva cache of this format, consistent shapes), that the shards agree on their
    attributes and none is missing, that no row has NaN/inf, that no (key, frame) row repeats and no key is
    both rows and a failure; with a manifest, that every manifest key of the cache's modality has rows
    (missing and failed ones listed), no cache key is outside the manifest, and every record that is not a
    face track has exactly one row with its frame (see :func:`row_frame`).
    """
    folder = Path(folder)
    shards, problems = check_folder(folder)
    if not shards:
        return problems
    missing = _missing(shards)
    if missing:
        problems.append(f"{len(missing)} shard(s) missing or unfinished: {_examples(missing)}; rerun fva extract "
                        "to complete them")

    good: list[tuple[Path, dict]] = []
    keys_all, frames_all, src_all = [], [], []
    fail_keys: dict[str, str] = {}
    fail_dups: list[str] = []
    nonfinite = 0
    first_bad: str | None = None
    for _, _, path in shards:
        try:
            with _open(path) as f:
                attrs, problem = check_shard(path, f)
                if problem:
                    problems.append(problem)
                    continue
                keys = _read_strs(f["keys"])
                keys_all.append(keys)
                frames_all.append(f["frames"][()].astype(np.int32))
                src_all.append(np.full(keys.shape[0], len(good), dtype=np.int32))
                for k, r in zip(*(x.tolist() for x in _failures(f))):
                    if k in fail_keys:
                        fail_dups.append(k)
                    fail_keys[k] = r
                ds = f["embeddings"]
                step = max(1, (64 << 20) // max(1, 4 * ds.shape[1]))
                for a in range(0, ds.shape[0], step):
                    block = _read_f32(ds, a, min(ds.shape[0], a + step))
                    bad = ~np.isfinite(block).all(axis=1)
                    if bad.any():
                        if first_bad is None:
                            i = a + int(np.flatnonzero(bad)[0])
                            first_bad = f"{keys[i]} frame {int(f['frames'][i])} in {path.name}"
                        nonfinite += int(bad.sum())
                good.append((path, attrs))
        except (OSError, KeyError) as err:
            problems.append(_unreadable(path, err))

    if good:
        for name in VALIDATE_AGREE:
            for other in good[1:]:
                problem = disagreement(good[0], other, name)
                if problem:
                    problems.append(problem)
                    break
    if nonfinite:
        problems.append(f"{nonfinite} row(s) with NaN/inf embeddings, first: {first_bad}; re-extract them")

    keys = np.concatenate(keys_all) if keys_all else np.empty(0, object)
    frames = np.concatenate(frames_all) if frames_all else np.empty(0, np.int32)
    if keys.size:
        uniq, code = np.unique(keys, return_inverse=True)
        pair = code.astype(np.int64) << 32 | (frames.astype(np.int64) & 0xFFFFFFFF)
        pu, pinv, pc = np.unique(pair, return_inverse=True, return_counts=True)
        dup = pc[pinv] > 1
        if dup.any():
            i = int(np.flatnonzero(dup)[0])
            extra_rows = int((pc[pc > 1] - 1).sum())
            problems.append(f"{extra_rows} duplicate (key, frame) row(s), first: {keys[i]} frame {int(frames[i])}; "
                            "delete the cache and re-extract")
        key_set = set(uniq.tolist())
    else:
        key_set = set()
    if fail_dups:
        problems.append(f"{len(fail_dups)} key(s) recorded as failed twice, e.g. {_examples(fail_dups)}")
    both = sorted(key_set & set(fail_keys))
    if both:
        problems.append(f"{len(both)} key(s) have rows and are also recorded as failed, e.g. {_examples(both)}")

    if manifest is not None and good:
        problems.extend(_check_manifest(manifest, good[0][1], keys, frames, key_set, fail_keys))
    return problems


def _check_manifest(manifest: Manifest, attrs: dict, keys: np.ndarray, frames: np.ndarray, key_set: set[str],
                    fail_keys: dict[str, str]) -> list[str]:
    problems = []
    for name in ("dataset", "split"):
        ours, theirs = attrs.get(name), getattr(manifest, name)
        if ours is not None and theirs and ours != theirs:
            problems.append(f"cache is for {name} {ours!r} but the manifest is for {theirs!r}; pass the manifest "
                            "the cache was extracted from")
    modality = attrs.get("modality")
    records = manifest.by_modality(modality) if modality else manifest.records
    wanted = {r.key: r for r in records}
    missing = [k for k in wanted if k not in key_set and k not in fail_keys]
    failed = [k for k in wanted if k not in key_set and k in fail_keys]
    if missing:
        problems.append(f"{len(missing)} manifest {modality or ''} key(s) missing from the cache: "
                        f"{_examples(missing)}; rerun fva extract".replace("  ", " "))
    if failed:
        shown = "; ".join(f"{k}: {fail_keys[k]}" for k in failed[:3]) + ("; ..." if len(failed) > 3 else "")
        problems.append(f"{len(failed)} manifest key(s) failed extraction (recorded failures): {shown}")
    all_manifest = {r.key for r in manifest.records}
    extra = sorted((key_set | set(fail_keys)) - set(wanted))
    if extra:
        other = [k for k in extra if k in all_manifest]
        what = (f"{len(extra)} cache key(s) not among the manifest's {modality or ''} records"
                + (f" ({len(other)} of another modality)" if other else ""))
        problems.append(f"{what.replace('  ', ' ')}: {_examples(extra)}; was the cache built from another "
                        "manifest?")
    if keys.size:
        counts: dict[str, int] = {}
        first_frame: dict[str, int] = {}
        for k, fr in zip(keys.tolist(), frames.tolist()):
            counts[k] = counts.get(k, 0) + 1
            first_frame.setdefault(k, fr)
        not_once, wrong_frame = [], []
        for k, r in wanted.items():
            expected = row_frame(r)
            if expected is None or k not in counts:
                continue
            if counts[k] != 1:
                not_once.append(f"{k} ({counts[k]} rows)")
            elif first_frame[k] != expected:
                wrong_frame.append(f"{k} (frame {first_frame[k]}, expected {expected})")
        if not_once:
            problems.append(f"{len(not_once)} single-item record(s) (not face tracks) with more than one row: "
                            f"{_examples(not_once)}")
        if wrong_frame:
            problems.append(f"{len(wrong_frame)} row(s) with the wrong frame: {_examples(wrong_frame)}")
    return problems

