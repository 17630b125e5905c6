"""Dataset adapters, manifests and language splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from click.testing import CliRunner

from conftest import CV_HEADER, assert_user_error, make_mavceleb, touch
from fva.cli import cli
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


def test_commonvoice_missing_clip_and_bad_row_under_strict(cv_root: Path):
    (cv_root / "en" / "clips" / "common_voice_en_1.mp3").unlink()
    with pytest.raises(FvaError, match=r"en/validated\.tsv:3: clip .*common_voice_en_1\.mp3 does not exist"):
        build_manifest("commonvoice", cv_root, strict=True)
    tsv = cv_root / "de" / "validated.tsv"
    tsv.write_text(tsv.read_text() + "c9\tbroken\n")
    with pytest.raises(FvaError, match=r"de/validated\.tsv:7: 2 fields where the header has 13"):
        build_manifest("commonvoice", cv_root, strict=True)



# --- real layouts: MAV-Celeb lists apart from the media -----------------------------------------------------

def _move_lists(root: Path, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for path in sorted(root.glob("*_t*.txt")):
        path.rename(dest / path.name)
    return dest


def _cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_mavceleb_lists_option_reads_a_separate_folder(tmp_path: Path, mav_root: Path):
    in_root = {s: build_manifest("mavceleb-v3", mav_root, subset=s)[0] for s in ("train", "test")}
    assert in_root["test"].lists == str(mav_root.resolve())
    splits = _move_lists(mav_root, tmp_path / "face_voice_association_splits" / "v3")
    assert sorted(p.name for p in splits.iterdir()) == ["English_test.txt", "English_train.txt",
                                                        "German_test.txt", "German_train.txt"]
    for subset in ("train", "test"):
        man, notes = build_manifest("mavceleb-v3", mav_root, subset=subset, lists=splits)
        assert man.records == in_root[subset].records and notes == []
        assert man.lists == str(splits.resolve()) and man.root == str(mav_root.resolve())
    assert {r.key for r in man.records} >= {"English_test/voices/English/00003", "German_test/faces/German/00000"}
    man.write(tmp_path / "t.jsonl")
    head = json.loads((tmp_path / "t.jsonl").read_text().splitlines()[0])["manifest"]
    assert head["lists"] == str(splits.resolve())
    assert Manifest.read(tmp_path / "t.jsonl").lists == str(splits.resolve())
    # the train lists in --lists are checked like those in the root
    with (splits / "German_train.txt").open("a") as fh:
        fh.write("id0001/German/gone/00009.wav id0001/German/vidGe0/000000007.jpg\n")
    with pytest.raises(FvaError, match=r"v3/German_train\.txt:13: voices/id0001/German/gone/00009\.wav does not"):
        build_manifest("mavceleb-v3", mav_root, lists=splits)


def test_old_manifest_header_without_lists_reads(tmp_path: Path, mav_root: Path):
    man, _ = build_manifest("mavceleb-v3", mav_root, subset="test")
    man.write(tmp_path / "t.jsonl")
    lines = (tmp_path / "t.jsonl").read_text().splitlines()
    head = json.loads(lines[0])
    del head["manifest"]["lists"]
    (tmp_path / "t.jsonl").write_text("\n".join([json.dumps(head), *lines[1:]]) + "\n")
    back = Manifest.read(tmp_path / "t.jsonl")
    assert back.lists is None and back.records == man.records
    assert "lists" not in back.header()


def test_mavceleb_lists_found_in_the_splits_folder_under_the_root(mav_root: Path):
    splits = _move_lists(mav_root, mav_root / "face_voice_association_splits" / "v3")
    man, notes = build_manifest("mavceleb-v3", mav_root, subset="test")
    assert notes == [f"mavceleb-v3: read the test lists from {splits} (none in {mav_root}); "
                     "--lists DIR names another folder"]
    assert man.lists == str(splits.resolve()) and len(man.records) == 16
    man, notes = build_manifest("mavceleb-v3", mav_root)
    assert "read the train lists from" in notes[0] and len(man.records) == 48
    # lists in the root win over the splits folder
    (splits / "English_test.txt").rename(mav_root / "English_test.txt")
    man, notes = build_manifest("mavceleb-v3", mav_root, subset="test")
    assert notes == [] and man.lists == str(mav_root.resolve()) and man.languages() == ["English"]


def test_mavceleb_lists_errors(tmp_path: Path, mav_root: Path, vox_root: Path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FvaError) as err:
        build_manifest("mavceleb-v3", mav_root, subset="test", lists=empty)
    assert str(err.value) == (f"no test list of mavceleb-v3 in {empty}; expected English_test.txt or "
                              "German_test.txt there (as in face_voice_association_splits/v3/)")
    with pytest.raises(FvaError, match=r"no train list of mavceleb-v1 in .*empty; expected English_train\.txt or "
                                       r"Urdu_train\.txt"):
        build_manifest("mavceleb-v1", mav_root, lists=empty)
    with pytest.raises(FvaError, match=r"--lists .*nowhere not found; pass the folder holding English_test\.txt"):
        build_manifest("mavceleb-v3", mav_root, subset="test", lists=tmp_path / "nowhere")
    with pytest.raises(FvaError, match="--lists names MAV-Celeb's list folder; voxceleb2 has no list files"):
        build_manifest("voxceleb2", vox_root, lists=empty)
    _move_lists(mav_root, tmp_path / "elsewhere")
    with pytest.raises(FvaError) as err:
        build_manifest("mavceleb-v3", mav_root, subset="test")
    assert str(err.value) == (f"no test list of mavceleb-v3 in {mav_root} or "
                              f"{mav_root}/face_voice_association_splits/v3; expected English_test.txt or "
                              "German_test.txt; pass --lists DIR, the folder holding them")
    # train media need no list: without one the manifest is built from the media alone, as before
    man, notes = build_manifest("mavceleb-v3", mav_root)
    assert len(man.records) == 48 and man.lists is None and notes == []


def test_cli_manifest_lists(tmp_path: Path, mav_root: Path):
    splits = _move_lists(mav_root, tmp_path / "splits" / "v3")
    out = tmp_path / "test.jsonl"
    result = _cli("manifest", "--dataset", "mavceleb-v3", "--root", mav_root, "--subset", "test",
                  "--lists", splits, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert summary["lists"] == str(splits.resolve()) and summary["records"] == 16 and summary["notes"] == []
    assert len(Manifest.read(out).records) == 16
    assert_user_error(_cli("manifest", "--dataset", "mavceleb-v3", "--root", mav_root, "--subset", "test",
                           "--out", out), "no test list of mavceleb-v3", "--lists DIR")
    assert_user_error(_cli("manifest", "--dataset", "mavceleb-v3", "--root", mav_root, "--lists", tmp_path,
                           "--out", out), "no train list", "English_train.txt or German_train.txt")


# --- real layouts: VoxCeleb2 test zips unpack to aac/ and mp4/ directly ---------------------------------------

def _vox_clips(base: Path) -> None:
    """What vox2_test_aac.zip and vox2_test_mp4.zip hold: aac/ and mp4/ with two clips of one video."""
    for u in (1, 2):
        touch(base / "aac" / "id00017" / "01dfn2spqyE" / f"{u:05d}.m4a")
        touch(base / "mp4" / "id00017" / "01dfn2spqyE" / f"{u:05d}.mp4")


def test_voxceleb2_test_zip_layout_gives_the_nested_layouts_keys(tmp_path: Path):
    nested, flat = tmp_path / "nested", tmp_path / "flat"
    _vox_clips(nested / "test")
    _vox_clips(flat)
    a, notes_a = build_manifest("voxceleb2", nested, subset="test")
    b, notes_b = build_manifest("voxceleb2", flat, subset="test")
    assert notes_a == [] and notes_b == [f"voxceleb2: read subset test from {flat}/aac and {flat}/mp4 (no "
                                         f"{flat}/test/); keys say test/aac/..., test/mp4/... as in the test/ layout"]
    assert [r.key for r in a.records] == [r.key for r in b.records] == [
        "test/aac/id00017/01dfn2spqyE/00001", "test/aac/id00017/01dfn2spqyE/00002",
        "test/mp4/id00017/01dfn2spqyE/00001", "test/mp4/id00017/01dfn2spqyE/00002"]
    assert [r.path for r in a.records] == ["test/" + r.path for r in b.records]  # paths: relative to each root
    assert all((flat / r.path).is_file() for r in b.records)
    assert [(r.identity, r.video, r.modality) for r in a.records] == [(r.identity, r.video, r.modality)
                                                                      for r in b.records]


def test_voxceleb2_dev_and_test_unpacked_side_by_side(tmp_path: Path, vox_root: Path):
    _vox_clips(vox_root)  # vox2_test_*.zip unpacked next to dev/ (from vox2_dev_*)
    dev, notes = build_manifest("voxceleb2", vox_root, subset="dev")
    assert notes == [] and len(dev.records) == 16 and all(r.key.startswith("dev/") for r in dev.records)
    test, notes = build_manifest("voxceleb2", vox_root, subset="test")
    assert len(notes) == 1 and {r.key for r in test.records} == {
        f"test/{m}/id00017/01dfn2spqyE/0000{u}" for m in ("aac", "mp4") for u in (1, 2)}
    assert not {r.key for r in dev.records} & {r.key for r in test.records}
    # the default subset (dev) never silently reads a flat test folder as dev
    _vox_clips(tmp_path / "only_test")
    with pytest.raises(FvaError) as err:
        build_manifest("voxceleb2", tmp_path / "only_test")
    assert str(err.value) == (f"{tmp_path / 'only_test'} holds aac/ or mp4/ itself (an unpacked vox2_test_*.zip?) "
                              "and no dev/; say which subset it is with --subset test (or --subset dev)")
    (tmp_path / "bare").mkdir()
    with pytest.raises(FvaError, match=r"bare: neither test/aac/, test/mp4/ nor aac/, mp4/ found; pass --root"):
        build_manifest("voxceleb2", tmp_path / "bare", subset="test")


def test_cli_manifest_voxceleb2_test_zip_layout(tmp_path: Path):
    _vox_clips(tmp_path / "vox2_test")
    out = tmp_path / "test.jsonl"
    result = _cli("manifest", "--dataset", "voxceleb2", "--root", tmp_path / "vox2_test", "--subset", "test",
                  "--out", out)
    assert result.exit_code == 0, result.output
    assert "  note: voxceleb2: read subset test from" in result.output
    assert [r.key for r in Manifest.read(out).by_modality("face")] == [
        "test/mp4/id00017/01dfn2spqyE/00001", "test/mp4/id00017/01dfn2spqyE/00002"]
    assert_user_error(_cli("manifest", "--dataset", "voxceleb2", "--root", tmp_path / "vox2_test",
                           "--out", tmp_path / "dev.jsonl"), "--subset test")


# --- real data: CommonVoice rows that cannot be used are skipped and counted ------------------------------------

def _damage_commonvoice(cv_root: Path) -> None:
    (cv_root / "en" / "clips" / "common_voice_en_1.mp3").unlink()        # en/validated.tsv:3
    tsv = cv_root / "de" / "validated.tsv"
    fields = CV_HEADER.count("\t")
    tsv.write_text(tsv.read_text() + "c9\tbroken\n"                    # de:7, malformed
                   + "c8" + "\t" * fields + "\n"                      # de:8, no path
                   + "\tcommon_voice_de_0.mp3" + "\t" * (fields - 1) + "\n")  # de:9, no client_id


def test_commonvoice_skips_unusable_rows_and_counts_them(cv_root: Path):
    _damage_commonvoice(cv_root)
    en = cv_root / "en" / "validated.tsv"
    en.write_text(en.read_text() + en.read_text().splitlines(keepends=True)[1])  # en:6, common_voice_en_0 again
    man, notes = build_manifest("commonvoice", cv_root)
    assert notes == ["commonvoice: skipped 5 rows of 13 (1 clip missing, 1 duplicate clip, 1 malformed row, "
                     "1 no client_id, 1 no clip path; first: de/validated.tsv:7)"]
    assert len(man.records) == 9 - 1
    assert "en/clips/common_voice_en_1" not in {r.key for r in man.records}
    assert sorted(r.identity for r in man.records) == ["c1", "c1", "c2", "c3", "c4", "e1", "e3", "e4"]
    assert next(r for r in man.records if r.identity == "e4").age is None  # unusable labels: kept, unlabelled
    with pytest.raises(FvaError) as err:
        build_manifest("commonvoice", cv_root, strict=True)
    assert str(err.value) == (f"{cv_root}/de/validated.tsv:7: 2 fields where the header has 13; the file is damaged, "
                              "re-extract it (without --strict such rows are skipped and counted)")


def test_commonvoice_reasons_counted_in_order_and_no_usable_row(cv_root: Path):
    for name in ("common_voice_en_0.mp3", "common_voice_en_2.mp3", "common_voice_de_4.mp3"):
        (cv_root / name[13:15] / "clips" / name).unlink()
    man, notes = build_manifest("commonvoice", cv_root)
    assert notes == ["commonvoice: skipped 3 rows of 9 (3 clip missing; first: de/validated.tsv:6)"]
    assert len(man.records) == 6
    man, notes = build_manifest("commonvoice", cv_root / "de")  # a locale folder as the root
    assert notes == ["commonvoice: skipped 1 row of 5 (1 clip missing; first: validated.tsv:6)"]
    for clip in (cv_root / "de" / "clips").iterdir():
        clip.unlink()
    with pytest.raises(FvaError, match=r"no usable row in the validated\.tsv files under .*de \(skipped 5 rows "
                                       r"of 5 \(5 clip missing; first: validated\.tsv:2\)\); check --root"):
        build_manifest("commonvoice", cv_root / "de")


def test_cli_commonvoice_skip_note_and_strict(tmp_path: Path, cv_root: Path):
    _damage_commonvoice(cv_root)
    out = tmp_path / "cv.jsonl"
    result = _cli("manifest", "--dataset", "commonvoice", "--root", cv_root, "--out", out)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == ("  note: commonvoice: skipped 4 rows of 12 (1 clip missing, "
                                              "1 malformed row, 1 no client_id, 1 no clip path; "
                                              "first: de/validated.tsv:7)")
    assert len(Manifest.read(out).records) == 8
    before = out.read_bytes()
    strict = _cli("manifest", "--dataset", "commonvoice", "--root", cv_root, "--strict", "--out", out)
    assert_user_error(strict, "de/validated.tsv:7:", "2 fields where the header has 13", "--strict")
    assert out.read_bytes() == before
    # fva extract and fva train-encoder age-gender pass their --strict to the manifest they build
    assert_user_error(_cli("extract", "--dataset", "commonvoice", "--root", cv_root, "--encoders", "speaker-ecapa",
                           "--cache", tmp_path / "cache", "--strict"), "de/validated.tsv:7:", "--strict")
    assert_user_error(_cli("train-encoder", "age-gender", "--dataset", "commonvoice", "--root", cv_root,
                           "--out", tmp_path / "vag", "--strict"), "de/validated.tsv:7:", "--strict")
    assert not (tmp_path / "cache").exists() and not (tmp_path / "vag").exists()
