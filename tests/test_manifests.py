"""Dataset adapters, manifests and language splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import make_mavceleb, touch
from fva.data.datasets import build_manifest
from fva.data.mavceleb import media_key
from fva.data.records import Manifest, MediaRecord
from fva.data.splits import Split
from fva.errors import FvaError


def test_manifest_roundtrip_keeps_types(tmp_path: Path, mav_root: Path):
    man, _ = build_manifest("mavceleb-v3", mav_root)
    man.write(tmp_path / "m.jsonl")
    back = Manifest.read(tmp_path / "m.jsonl")
    assert back.records == man.records
    assert (back.dataset, back.subset, back.split) == ("mavceleb-v3", "train", "full")
    assert all(isinstance(r, MediaRecord) for r in back.records)
    first = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[0])
    assert first["manifest"]["records"] == len(man.records)


def test_test_manifest_without_identities_roundtrips(tmp_path: Path, mav_root: Path):
    man, _ = build_manifest("mavceleb-v3", mav_root, subset="test")
    assert all(r.identity is None for r in man.records)
    man.write(tmp_path / "t.jsonl")
    assert Manifest.read(tmp_path / "t.jsonl").records == man.records
    r = MediaRecord(key="faces/x", identity=None, language=None, modality="face", path="faces/x.jpg")
    assert MediaRecord.from_json(r.to_json()) == r


def test_manifest_read_names_bad_line(tmp_path: Path, mav_root: Path):
    man, _ = build_manifest("mavceleb-v3", mav_root)
    path = tmp_path / "m.jsonl"
    man.write(path)
    lines = path.read_text().splitlines()
    lines[3] = lines[3].replace('"modality": "voice"', '"modality": "smell"')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FvaError, match=r"m\.jsonl:4: bad manifest record"):
        Manifest.read(path)


def test_mavceleb_train_records(mav_root: Path):
    man, _ = build_manifest("mavceleb-v3", mav_root)
    voices, faces = man.by_modality("voice"), man.by_modality("face")
    assert len(voices) == len(faces) == 3 * 2 * 4
    v = next(r for r in voices if r.path == "voices/id0002/German/vidGe1/00001.wav")
    assert (v.key, v.identity, v.language, v.video, v.frame) == (
        "voices/id0002/German/vidGe1/00001", "id0002", "German", "vidGe1", None)
    f = next(r for r in faces if r.path == "faces/id0001/English/vidEn0/000000032.jpg")
    assert (f.frame, f.language, f.modality) == (32, "English", "face")
    assert man.identities() == ["id0001", "id0002", "id0003"]


def test_mavceleb_v1_seven_digit_frames(tmp_path: Path):
    root = make_mavceleb(tmp_path / "v1", languages=("English", "Urdu"), frame_digits=7, test_on_disk="voices",
                         lists_prefix="")
    man, _ = build_manifest("mavceleb-v1", root)
    assert {r.frame for r in man.by_modality("face")} == {7, 32}
    assert {Path(r.path).stem for r in man.by_modality("face")} == {"0000007", "0000032"}
    # V1-style test lists say voices/English/00000.wav relative to <Lang>_test/
    test, _ = build_manifest("mavceleb-v1", root, subset="test")
    keys = {r.key for r in test.records}
    assert "voices/Urdu/00003" in keys and "faces/English/00000" in keys
    assert all((root / r.path).is_file() for r in test.records)


def test_v3_test_lists_resolve_singular_spelling(mav_root: Path):
    man, _ = build_manifest("mavceleb-v3", mav_root, subset="test")
    by_key = {r.key: r for r in man.records}
    r = by_key["English_test/voices/English/00002"]
    assert r.path == "English_test/voice/English/00002.wav" and r.modality == "voice"
    assert by_key["German_test/faces/German/00001"].path == "German_test/face/German/00001.jpg"
    assert len(man.records) == 2 * 4 * 2 and all(r.identity is None for r in man.records)
    # the key is a pure function of the listed path: stage 2 needs no media to map trials to features
    assert media_key("English_test/voices/English/00002.wav") == r.key


@pytest.mark.parametrize("split,kept", [("full", {"English", "German"}), ("english-unheard", {"German"}),
                                        ("de-unheard", {"English"}), ("German-Unheard", {"English"})])
def test_language_splits_mavceleb(mav_root: Path, split: str, kept: set):
    man, _ = build_manifest("mavceleb-v3", mav_root, split=split)
    assert set(man.languages()) == kept
    assert len(man.records) == 24 * len(kept)


def test_split_errors(mav_root: Path):
    with pytest.raises(FvaError, match="unknown split 'half'"):
        build_manifest("mavceleb-v3", mav_root, split="half")
    with pytest.raises(FvaError, match="has no Urdu records"):
        build_manifest("mavceleb-v3", mav_root, split="urdu-unheard")
    with pytest.raises(FvaError, match="applies to training data"):
        build_manifest("mavceleb-v3", mav_root, subset="test", split="german-unheard")
    assert Split.parse("hi-unheard").unheard == "Hindi"


def test_dataset_errors(tmp_path: Path, mav_root: Path):
    with pytest.raises(FvaError, match="unknown dataset 'mavceleb-v9'; choose one of"):
        build_manifest("mavceleb-v9", mav_root)
    with pytest.raises(FvaError, match=r"dataset root .*nowhere not found; pass --root"):
        build_manifest("mavceleb-v3", tmp_path / "nowhere")
    with pytest.raises(FvaError, match="unknown subset 'dev' of mavceleb-v3"):
        build_manifest("mavceleb-v3", mav_root, subset="dev")


def test_train_list_with_wrong_field_count(mav_root: Path):
    path = mav_root / "German_train.txt"
    lines = path.read_text().splitlines()
    lines[2] += " extra"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(FvaError, match=r"German_train\.txt:3: expected 2 fields"):
        build_manifest("mavceleb-v3", mav_root)


def test_list_naming_missing_media(mav_root: Path):
    with (mav_root / "English_train.txt").open("a") as fh:
        fh.write("id0001/English/gone/00009.wav id0001/English/vidEn0/000000007.jpg\n")
    with pytest.raises(FvaError, match=r"English_train\.txt:13: voices/id0001/English/gone/00009\.wav does not exist"):
        build_manifest("mavceleb-v3", mav_root)
    (mav_root / "German_test" / "face" / "German" / "00002.jpg").unlink()
    with pytest.raises(FvaError, match=r"German_test\.txt:3: German_test/faces/German/00002\.jpg not found"):
        build_manifest("mavceleb-v3", mav_root, subset="test")


def test_test_list_with_wrong_field_count(mav_root: Path):
    with (mav_root / "English_test.txt").open("a") as fh:
        fh.write("onlykey English_test/voices/English/00000.wav\n")
    with pytest.raises(FvaError, match=r"English_test\.txt:5: expected 3 fields"):
        build_manifest("mavceleb-v3", mav_root, subset="test")


def test_stray_file_at_wrong_depth(mav_root: Path):
    touch(mav_root / "voices" / "id0001" / "loose.wav")
    with pytest.raises(FvaError, match="loose.wav: unexpected location"):
        build_manifest("mavceleb-v3", mav_root)


def test_voxceleb2_records_and_language_labels(tmp_path: Path, vox_root: Path):
    man, _ = build_manifest("voxceleb2", vox_root)
    assert len(man.by_modality("voice")) == len(man.by_modality("face")) == 8
    r = next(r for r in man.records if r.path == "dev/mp4/id00015/ZZZyyy00001/00002.mp4")
    assert (r.key, r.identity, r.video, r.frame, r.language) == (
        "dev/mp4/id00015/ZZZyyy00001/00002", "id00015", "ZZZyyy00001", None, None)

    with pytest.raises(FvaError, match="no language in its layout; split german-unheard needs --language-labels"):
        build_manifest("voxceleb2", vox_root, split="german-unheard")

    labels = tmp_path / "lang.tsv"
    labels.write_text("key\tlanguage\tconfidence\n"
                      "id00012/21Uxsk56VDQ\tde: German\t0.91\n"          # a video-level vote
                      "id00012/ZZZyyy00001/00001\ten\t0.80\n"             # utterance-level labels
                      "id00012/ZZZyyy00001/00002\ten\t0.75\n"
                      "id00015/21Uxsk56VDQ/00001\tEnglish\t0.99\n")
    man, notes = build_manifest("voxceleb2", vox_root, split="german-unheard", language_labels=labels)
    # German video dropped; 3 unlabelled id00015 utterances x 2 modalities left out and reported
    assert sorted({r.language for r in man.records}) == ["English"]
    assert len(man.records) == 6 and "6 records without a language label" in notes[0]
    assert all(r.identity != "id00012" or r.video != "21Uxsk56VDQ" for r in man.records)


def test_voxceleb2_bad_label_file(tmp_path: Path, vox_root: Path):
    labels = tmp_path / "lang.tsv"
    labels.write_text("id00012/21Uxsk56VDQ\tGerman\n")
    with pytest.raises(FvaError, match=r"lang\.tsv:1: expected 3 tab-separated fields"):
        build_manifest("voxceleb2", vox_root, split="german-unheard", language_labels=labels)


def test_commonvoice_labels_both_vocabularies(cv_root: Path):
    man, _ = build_manifest("commonvoice", cv_root)
    got = {(r.language, r.identity, r.age, r.gender) for r in man.records}
    assert got == {
        ("German", "c1", "twenties", "male"), ("German", "c2", "forties", "female"),
        ("German", "c3", None, None), ("German", "c4", "sixties", "other"),
        ("English", "e1", "thirties", "male"), ("English", "e2", "teens", "female"),
        ("English", "e3", "nineties", "other"), ("English", "e4", None, None),
    }
    assert len(man.records) == 9  # records without usable labels are kept
    r = next(r for r in man.records if r.identity == "c2")
    assert r.path == "de/clips/common_voice_de_2.mp3" and r.key == "de/clips/common_voice_de_2"
    man, _ = build_manifest("commonvoice", cv_root, split="english-unheard")
    assert man.languages() == ["German"]
    man, _ = build_manifest("commonvoice", cv_root, languages=["en"])
    assert man.languages() == ["English"]


def test_commonvoice_missing_clip_and_bad_row(cv_root: Path):
    (cv_root / "en" / "clips" / "common_voice_en_1.mp3").unlink()
    with pytest.raises(FvaError, match=r"en/validated\.tsv:3: clip .*common_voice_en_1\.mp3 does not exist"):
        build_manifest("commonvoice", cv_root)
    tsv = cv_root / "de" / "validated.tsv"
    tsv.write_text(tsv.read_text() + "c9\tbroken\n")
    with pytest.raises(FvaError, match=r"de/validated\.tsv:7: 2 fields where the header has 13"):
        build_manifest("commonvoice", cv_root)
