"""The columnar manifest records (RecordTable) against the plain list of MediaRecord they replace."""

from __future__ import annotations

import json
import pickle
import random
from pathlib import Path

import pytest

from fva.data.records import Manifest, MediaRecord, RecordTable, StringColumn
from fva.errors import FvaError
from fva.extract.runner import shard_records

WORDS = ["id0001", "Ürdü", "日本語", "naïve", "e\u0301", "😀", "a b", "x", "Voices", "00042"]


def random_records(n: int, seed: int = 0) -> list[MediaRecord]:
    """Records of every shape a manifest holds: optional fields absent or set, paths that are the key plus a
    suffix, a renamed head, a dropped prefix, no extension, or nothing like the key; unicode throughout."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        key = "/".join(rng.choice(WORDS) for _ in range(rng.randint(1, 4))) + f"/{i:05d}"
        shape = rng.randrange(6)
        path = {0: key + ".wav", 1: "V" + key[1:] + ".m4a", 2: key.split("/", 1)[-1] + ".mp4", 3: key,
                4: f"elsewhere/{rng.choice(WORDS)}/{i}.flac", 5: f"{key}.tar.gz"}[shape]
        maybe = lambda: rng.choice([None, *WORDS])  # noqa: E731
        out.append(MediaRecord(key=key, identity=maybe(), language=maybe(), modality=rng.choice(["voice", "face"]),
                               path=path, video=maybe(), frame=rng.choice([None, 0, 25, -1, 2 ** 40]),
                               age=rng.choice([None, "twenties", "teens"]), gender=rng.choice([None, "female"])))
    return out


def voxceleb2_records(n: int) -> list[MediaRecord]:
    out = []
    for i in range(n):
        utt = f"id{i // 400:05d}/vid{i // 8:07d}x/{i % 8:05d}"
        modality, folder, suffix = ("voice", "aac", ".m4a") if i % 2 else ("face", "mp4", ".mp4")
        out.append(MediaRecord(key=f"dev/{folder}/{utt}", identity=f"id{i // 400:05d}", language="English",
                               modality=modality, path=f"dev/{folder}/{utt}{suffix}", video=f"vid{i // 8:07d}x"))
    return out


def test_table_roundtrips_every_field_of_every_record():
    records = random_records(3000)
    table = RecordTable.from_records(records)
    assert len(table) == len(records)
    assert list(table) == records  # chunked iteration
    assert [table[i] for i in range(len(table))] == records  # one at a time, as a decoding worker does
    assert table[-1] == records[-1]
    assert list(table.json_lines()) == [r.to_json() for r in records]
    assert {table.key(i) for i in range(len(table))} == {r.key for r in records}
    assert table.values("identity") == {r.identity for r in records if r.identity is not None}


@pytest.mark.parametrize("view", [slice(None, None, 3), slice(2999, 10, -7), slice(100, 200), slice(5, 5)])
def test_views_are_the_list_slices(view: slice):
    records = random_records(3000, seed=1)
    table = RecordTable.from_records(records)
    assert list(table[view]) == records[view]
    assert list(table[view][::2]) == records[view][::2]
    for modality in ("voice", "face"):
        assert list(table[view].where_modality(modality)) == [r for r in records[view] if r.modality == modality]


def test_manifest_file_reads_as_the_old_reader_and_writes_back_byte_identical(tmp_path: Path):
    records = random_records(2000, seed=2)
    man = Manifest("voxceleb2", "/data/vox", "dev", "full", records, lists=None)
    man.write(tmp_path / "m.jsonl")
    back = Manifest.read(tmp_path / "m.jsonl")
    assert isinstance(back.table, RecordTable)
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    old = [MediaRecord.from_json(line) for line in lines[1:]]  # the reader before the table, line by line
    assert list(back.table) == old == records
    back.write(tmp_path / "again.jsonl")  # written from the table, without building the records
    assert (tmp_path / "again.jsonl").read_bytes() == (tmp_path / "m.jsonl").read_bytes()
    assert back.header() == man.header() and back == man
    assert back.identities() == man.identities() and back.languages() == man.languages()
    assert back.by_modality("face") == man.by_modality("face")
    assert back.summary() == man.summary()
    assert back.records == records and back.records is back.records  # materialised once; then the list owns them


def test_old_manifest_without_lists_or_version_reads(tmp_path: Path):
    path = tmp_path / "old.jsonl"
    rec = {"key": "voices/a/0", "identity": "a", "language": "English", "modality": "voice", "path": "voices/a/0.wav"}
    path.write_text(json.dumps({"manifest": {"dataset": "mavceleb-v1", "root": "/r", "subset": "train",
                                             "split": "full"}}) + "\n" + json.dumps(rec) + "\n\n")
    man = Manifest.read(path)
    assert man.version == "unknown" and man.lists is None and man.records == [MediaRecord(**rec)]


@pytest.mark.parametrize("limit", [None, 0, 1, 7, 1000])
@pytest.mark.parametrize("num_shards,shard_index", [(1, 0), (3, 0), (3, 2), (8, 5)])
def test_shard_selection_is_the_old_list_slicing(limit, num_shards: int, shard_index: int):
    records = random_records(500, seed=3)
    table = RecordTable.from_records(records)
    for modality in ("voice", "face"):
        old = [r for r in records if r.modality == modality]
        old = old if limit is None else old[:limit]
        new = table.where_modality(modality)
        new = new if limit is None else new[:limit]
        mine = shard_records(new, num_shards, shard_index)
        assert list(mine) == old[shard_index::num_shards]
        done = {r.key for r in old[shard_index::num_shards][::2]}  # resume: half already in the shard
        assert list(mine.without_keys(done)) == [r for r in old[shard_index::num_shards] if r.key not in done]
        assert mine.without_keys(set()) is mine
        assert list(mine.without_keys({r.key for r in mine})) == []


def test_pickled_view_carries_only_its_rows():
    records = random_records(1000, seed=4)
    view = RecordTable.from_records(records).where_modality("voice")[3::4]
    back = pickle.loads(pickle.dumps(view))
    assert list(back) == list(view) and len(back.columns) == len(view) < 1000 // 4


def test_string_column_take():
    strings = ["", "a", "日本語", "😀x", "", "naïve"]
    col = StringColumn.from_strings(strings)
    assert col.tolist() == strings and [col[i] for i in range(len(col))] == strings
    import numpy as np
    rows = np.array([5, 0, 2, 2, 4], dtype=np.int64)
    assert col.take(rows).tolist() == [strings[i] for i in rows]


def test_duplicate_keys_refused_when_writing_a_table(tmp_path: Path):
    records = random_records(50, seed=5)
    records.append(records[7])
    man = Manifest("d", "/r", "s", "full", RecordTable.from_records(records))
    with pytest.raises(FvaError, match=r"duplicate media key"):
        man.write(tmp_path / "m.jsonl")
    assert not (tmp_path / "m.jsonl").exists()


@pytest.mark.parametrize("bad,reason", [
    ({"shape": 1}, "unknown record fields"), ({"modality": "smell"}, "modality must be one of"),
    ({"key": None}, "missing field 'key'"), ({"identity": 7}, "identity must be a string"),
    ({"frame": True}, "frame must be an integer"), ({"frame": "3"}, "frame must be an integer"),
])
def test_bad_record_line_is_named(tmp_path: Path, bad: dict, reason: str):
    rec = {"key": "voices/a/0", "modality": "voice", "path": "voices/a/0.wav", **bad}
    rec = {k: v for k, v in rec.items() if v is not None}
    path = tmp_path / "m.jsonl"
    good = json.dumps({"key": "voices/b/0", "modality": "voice", "path": "voices/b/0.wav"})
    path.write_text(json.dumps({"manifest": {"dataset": "d", "root": "/r", "subset": "s", "split": "full"}})
                    + "\n" + good + "\n" + json.dumps(rec) + "\n")
    with pytest.raises(FvaError, match=rf"m\.jsonl:3: bad manifest record \({reason}"):
        Manifest.read(path)


def test_voxceleb2_table_is_small():
    records = voxceleb2_records(20000)
    table = RecordTable.from_records(records)
    assert list(table) == records
    assert table.nbytes / len(table) < 60  # keys dominate; paths are the key plus a suffix code
