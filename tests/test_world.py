"""The synthetic world (fva.synth.world, ``fva demo-world``): real VoxCeleb2 / CommonVoice / MAV-Celeb V3 layouts,
media that decode through fva's own decoders, manifests of every part, byte determinism, safe writing."""

from __future__ import annotations

import hashlib
import math
import re
from collections import Counter
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import assert_user_error
from fva.synth import demo, world
from fva.data.commonvoice import AGES
from fva.data.datasets import build_manifest
from fva.data.voxceleb2 import FACE_FRAME_STEP, read_language_labels
from fva.synth.world import write_world
from fva.errors import FvaError
from fva.extract.media import load_audio, load_face, video_frames
from fva.synth.testing import run_cli

SEED = 0
VOX_IDS = [f"id{n:05d}" for n in range(world.VOX_FIRST, world.VOX_FIRST + 8)]
UTTERANCE_RE = re.compile(r"(id\d{5})/([A-Za-z0-9_-]{11})/(\d{5})")
LOCALES = ("en", "de", "da", "nl", "es", "fr", "it")
LOCALE_LANGUAGE = {"en": "English", "de": "German", "da": "Danish", "nl": "Dutch", "es": "Spanish",
                   "fr": "French", "it": "Italian"}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    root = tmp_path_factory.mktemp("world") / "world"
    return root, write_world(root, seed=SEED)


def tree_hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def vox_utterances(root: Path, folder: str, suffix: str) -> dict[str, Path]:
    base = root / "voxceleb2" / "dev" / folder
    return {p.relative_to(base).with_suffix("").as_posix(): p for p in sorted(base.rglob(f"*{suffix}"))}


def regenerated(utterance: str) -> np.ndarray:
    """The int16 samples the generator draws for a VoxCeleb2 utterance key of the seed-0 world."""
    identity, vid, number = UTTERANCE_RE.fullmatch(utterance).groups()
    n = int(identity[2:])
    videos = demo.identity_videos(SEED, n, 0, 2)
    v = [video.vid for video in videos].index(vid)
    lang = "German" if (n + v) % 2 else "English"
    return world.utterance(demo.make_identity(SEED, n), videos[v], SEED, n, v, int(number) - 1, language=lang)


# ------------------------------------------------------------------------------------------------ layout

def test_layout_summary_and_size(made):
    root, summary = made
    assert sorted(p.name for p in root.iterdir()) == [
        "README.txt", "commonvoice", "face_voice_association_splits", "mavceleb_v3", "models", "voxceleb2",
        "voxceleb2_languages.tsv"]
    assert not list(root.parent.glob(".world.partial-*"))
    voices = vox_utterances(root, "aac", ".m4a")
    faces = vox_utterances(root, "mp4", ".mp4")
    assert len(voices) == 32 and list(voices) == list(faces)  # one face track per utterance, same name
    assert all(UTTERANCE_RE.fullmatch(k) for k in voices)
    per_identity = Counter(k.split("/")[0] for k in voices)
    assert per_identity == {i: 4 for i in VOX_IDS}
    assert {k.split("/")[2] for k in voices} == {"00001", "00002"}
    assert len({tuple(k.split("/")[:2]) for k in voices}) == 16  # 2 videos per identity
    # every identity speaks English in one video and German in the other; the truth file says which
    truth = read_language_labels(root / "voxceleb2_languages.tsv")
    assert len(truth) == 16 and Counter(truth.values()) == {"English": 8, "German": 8}
    for ident in VOX_IDS:
        assert sorted(v for k, v in truth.items() if k.startswith(ident + "/")) == ["English", "German"]
    for locale in LOCALES:
        clips = sorted((root / "commonvoice" / locale / "clips").iterdir())
        assert len(clips) == 6 and all(c.suffix == ".mp3" for c in clips)
    splits = root / "face_voice_association_splits" / "v3"
    assert sorted(p.name for p in splits.iterdir()) == ["English_test.txt", "English_train.txt",
                                                        "German_test.txt", "German_train.txt"]
    for p in splits.iterdir():
        assert p.read_bytes() == (root / "mavceleb_v3" / p.name).read_bytes()
    # the summary says what is on disk
    hashes = tree_hashes(root)
    assert summary.root == root and summary.seed == SEED
    assert summary.files == len(hashes) == 306  # + the LID stand-in: hyperparams, embedding model, classifier, labels
    assert summary.bytes == sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert summary.bytes < 20e6
    assert summary.voxceleb2_identities == 8
    assert summary.voxceleb2_utterances == {"English": 16, "German": 16}
    assert summary.commonvoice_clips == {loc: 6 for loc in LOCALES}
    assert summary.mavceleb == root / "mavceleb_v3" and summary.mavceleb_summary.root == summary.mavceleb
    assert summary.mavceleb_summary.train_identities == 14 and summary.mavceleb_summary.test_identities == 4
    assert summary.splits == splits and summary.language_labels == root / "voxceleb2_languages.tsv"
    assert summary.seconds < 60
    lines = summary.lines()
    assert len(lines) == 4 and "306 files" in lines[0] and "16 English, 16 German" in lines[1]
    readme = (root / "README.txt").read_text()
    assert "no real people" in readme and "seed 0" in readme and "face_voice_association_splits/v3" in readme


# ------------------------------------------------------------------------------------------------ media

def test_voxceleb2_voices_are_16k_mono_aac_of_the_generated_speech(made):
    root, _ = made
    for key, path in vox_utterances(root, "aac", ".m4a").items():
        with av.open(str(path)) as fh:
            stream = fh.streams.audio[0]
            assert (stream.codec_context.name, stream.rate, stream.channels) == ("aac", 16000, 1)
            assert not fh.streams.video
        y = load_audio(path)
        x = regenerated(key).astype(np.float32) / 32768
        assert 1.5 * 16000 <= len(x) <= 2.5 * 16000
        assert 0 <= len(y) - len(x) < 1024  # AAC pads the last frame
        # the decoded clip is the generated one (in its video's language), sample-aligned
        assert np.corrcoef(x, y[:len(x)])[0, 1] > 0.98, key


def test_voxceleb2_face_tracks_are_25fps_with_a_face_every_25_frames(made):
    root, summary = made
    voices = vox_utterances(root, "aac", ".m4a")
    sampled = 0
    for key, path in vox_utterances(root, "mp4", ".mp4").items():
        with av.open(str(path)) as fh:
            stream = fh.streams.video[0]
            assert (stream.codec_context.name, stream.average_rate, stream.width, stream.height) == (
                "mpeg4", 25, 96, 96)
            assert not fh.streams.audio
        n = len(regenerated(key))
        frames = max(26, math.ceil(n / 16000 * 25))  # as long as its utterance
        assert [i for i, _ in video_frames(path, step=1)] == list(range(frames))
        faces = load_face(path)
        assert [i for i, _ in faces] == list(range(0, frames, FACE_FRAME_STEP))
        assert len(faces) in (2, 3) and all(img.shape == (96, 96, 3) and img.dtype == np.uint8 for _, img in faces)
        # the sampled frames are the identity's drawn faces, through MPEG-4
        identity, vid, number = UTTERANCE_RE.fullmatch(key).groups()
        ident_n = int(identity[2:])
        v = [video.vid for video in demo.identity_videos(SEED, ident_n, 0, 2)].index(vid)
        drawn = world.face_track(demo.make_identity(SEED, ident_n), demo.identity_videos(SEED, ident_n, 0, 2)[v], n,
                                 demo.seeded_rng(SEED, world._T_FACE_TRACK, ident_n, v, int(number) - 1))
        for i, img in faces:
            assert np.abs(img.astype(float) - drawn[i]).mean() < 8, (key, i)
        assert load_face(path, frame=25)[0][0] == 25
        sampled += len(faces)
        assert path.stat().st_size < 40_000 and voices[key].stat().st_size < 20_000
    assert sampled == summary.voxceleb2_face_frames
    assert 64 <= sampled <= 96


def test_faces_and_voices_carry_their_identity(made):
    """Same identity -> consistent face across its videos and utterances: a track's mean face is nearer (in
    pixels) to one of its identity's other tracks than to any other identity's, for most tracks. (Voices are
    the identity's generated ones: the decode tests match them to the generator sample by sample.)"""
    root, _ = made
    by_identity: dict[str, list[np.ndarray]] = {}
    for key, path in vox_utterances(root, "mp4", ".mp4").items():
        by_identity.setdefault(key.split("/")[0], []).append(np.mean([f for _, f in load_face(path)], axis=0))
    hits = 0
    for ident, tracks in by_identity.items():
        for t in tracks:
            own = min(np.abs(t - o).mean() for o in tracks if o is not t)
            other = min(np.abs(t - o).mean() for i, ts in by_identity.items() if i != ident for o in ts)
            hits += own < other
    assert hits >= 0.75 * 32


def test_commonvoice_mp3_clips_and_labels(made):
    root, _ = made
    for li, locale in enumerate(LOCALES):
        folder = root / "commonvoice" / locale
        lines = (folder / "validated.tsv").read_text().splitlines()
        assert lines[0].split("\t") == list(world.CV_COLUMNS)
        rows = [dict(zip(world.CV_COLUMNS, line.split("\t"))) for line in lines[1:]]
        assert len(rows) == 6 and {r["locale"] for r in rows} == {locale}
        for row in rows:
            number = int(row["client_id"].removeprefix("client"))
            assert 1000 * (li + 1) <= number < 1000 * (li + 1) + 3
            ident = demo.make_identity(SEED, number)
            assert row["gender"] == ("female_feminine" if ident.female else "male_masculine")
            assert AGES.index(row["age"]) == int(ident.age // 10) - 1  # 20-29 twenties, ...
            path = folder / "clips" / row["path"]
            with av.open(str(path)) as fh:
                stream = fh.streams.audio[0]
                assert stream.codec_context.name.startswith("mp3") and (stream.rate, stream.channels) == (16000, 1)
            y = load_audio(path)  # soundfile's mp3 path
            u = int(row["sentence_id"].removeprefix("s"))
            video = demo.identity_videos(SEED, number, 0, 1)[0]
            x = world.utterance(ident, video, SEED, number, u, language=world.CV_STYLES[locale]) / 32768
            assert abs(len(y) - len(x)) <= 1152
            n = min(len(x), len(y))
            assert np.corrcoef(x[:n], y[:n])[0, 1] > 0.98, path


# ------------------------------------------------------------------------------------------------ manifests

def test_voxceleb2_manifest_voice_and_face_per_utterance(made):
    root, _ = made
    manifest, notes = build_manifest("voxceleb2", root / "voxceleb2", subset="dev")
    assert notes == []
    by_modality = Counter(r.modality for r in manifest.records)
    assert by_modality == {"voice": 32, "face": 32}
    voice_keys = {r.key.removeprefix("dev/aac/") for r in manifest.records if r.modality == "voice"}
    face_keys = {r.key.removeprefix("dev/mp4/") for r in manifest.records if r.modality == "face"}
    assert voice_keys == face_keys and len(voice_keys) == 32
    assert {r.identity for r in manifest.records} == set(VOX_IDS)
    assert all(r.language is None and r.frame is None and r.video for r in manifest.records)
    # with the true language labels, the German-unheard split keeps each identity's English video
    labelled, _ = build_manifest("voxceleb2", root / "voxceleb2", subset="dev",
                                 language_labels=root / "voxceleb2_languages.tsv")
    assert Counter((r.modality, r.language) for r in labelled.records) == {
        ("voice", "English"): 16, ("voice", "German"): 16, ("face", "English"): 16, ("face", "German"): 16}
    unheard, _ = build_manifest("voxceleb2", root / "voxceleb2", subset="dev", split="german-unheard",
                                language_labels=root / "voxceleb2_languages.tsv")
    assert {r.language for r in unheard.records} == {"English"} and len(unheard.records) == 32
    assert {r.identity for r in unheard.records} == set(VOX_IDS)


def test_commonvoice_manifest_every_locale_with_age_and_gender(made):
    root, _ = made
    manifest, _ = build_manifest("commonvoice", root / "commonvoice")
    assert Counter(r.language for r in manifest.records) == {lang: 6 for lang in LOCALE_LANGUAGE.values()}
    assert len({r.identity for r in manifest.records}) == 21
    assert all(r.modality == "voice" and r.age in AGES and r.gender in ("male", "female")
               for r in manifest.records)
    for r in manifest.records:
        ident = demo.make_identity(SEED, int(r.identity.removeprefix("client")))
        assert r.gender == ("female" if ident.female else "male")
    assert len({r.gender for r in manifest.records}) == 2 and len({r.age for r in manifest.records}) >= 3
    no_german, _ = build_manifest("commonvoice", root / "commonvoice", split="german-unheard")
    assert len(no_german.records) == 36 and "German" not in {r.language for r in no_german.records}


def test_mavceleb_v3_manifests_train_and_test(made):
    root, _ = made
    train, _ = build_manifest("mavceleb-v3", root / "mavceleb_v3", subset="train")
    assert Counter((r.modality, r.language) for r in train.records) == {
        ("voice", "English"): 28, ("voice", "German"): 28, ("face", "English"): 28, ("face", "German"): 28}
    ids = {r.identity for r in train.records}
    assert ids == {f"id{n:04d}" for n in range(1, 15)}  # enough for 7 identity-disjoint folds of 2
    test, _ = build_manifest("mavceleb-v3", root / "mavceleb_v3", subset="test")
    assert Counter((r.modality, r.language) for r in test.records) == {
        ("voice", "English"): 16, ("voice", "German"): 16, ("face", "English"): 16, ("face", "German"): 16}
    # the three datasets' people are distinct
    vox, _ = build_manifest("voxceleb2", root / "voxceleb2")
    assert not {int(i[2:]) for i in ids} & {int(r.identity[2:]) for r in vox.records}


# ------------------------------------------------------------------------------------------------ CLI, determinism

def test_cli_writes_the_same_bytes_and_refuses_a_non_empty_folder(made, tmp_path):
    root, _ = made
    out = tmp_path / "cli-world"
    result = run_cli("demo-world", "--out", out, "--seed", SEED)
    assert result.exit_code == 0, result.output
    assert f"to {out} (seed 0)" in result.output and "306 files" in result.output
    assert len(result.output.strip().splitlines()) == 4
    assert tree_hashes(out) == tree_hashes(root)  # same seed, byte-identical world
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    assert_user_error(run_cli("demo-world", "--out", tmp_path / "busy"), "not an empty folder")
    assert [p.name for p in (tmp_path / "busy").iterdir()] == ["keep.txt"]
    assert not list(tmp_path.glob(".*partial*"))


def test_other_seed_other_world_and_bad_sizes(made, tmp_path):
    root, _ = made
    small = dict(vox_identities=2, vox_videos=2, vox_clips=1, cv_locales=("en",), cv_speakers=1, cv_clips=1,
                 mav_train=2, mav_test=2, mav_videos=1, mav_clips=1, mav_frames=1, mav_trials=2)
    s1 = write_world(tmp_path / "s1", seed=1, **small)
    # vox 4 m4a + 4 mp4, truth, README; cv tsv + clip; mav 4 wav + 4 jpg train, 6 lists, 2 x 4 test trials of
    # wav + jpg, README; 4 split lists
    assert s1.files == 8 + 2 + 2 + (8 + 6 + 16 + 1) + 4 + 4
    assert s1.voxceleb2_utterances == {"English": 2, "German": 2}
    assert not set(vox_utterances(tmp_path / "s1", "aac", ".m4a")) & set(vox_utterances(root, "aac", ".m4a"))
    for bad, fragment in ((dict(seed=-1), "negative"), (dict(vox_identities=0), "at least 1"),
                          (dict(vox_identities=501), "at most 500"), (dict(cv_locales=("en", "en")), "distinct"),
                          (dict(mav_trials=3), "even"), (dict(mav_train=490, mav_test=10), "at most 499")):
        with pytest.raises(FvaError, match=fragment):
            write_world(tmp_path / "bad", **{**small, **bad})
        assert not (tmp_path / "bad").exists()
    assert not list(tmp_path.glob(".*partial*"))


def test_the_lid_stand_in_labels_the_worlds_videos_with_their_true_language(made, tmp_path):
    """fit_output_layer: the world's language-ID stand-in (random but for its fitted output layer) gives every
    VoxCeleb2 video its true language through `fva lid`'s own code, where a random model labels all alike."""
    from fva.train.lid import run_lid

    root, summary = made
    out = tmp_path / "lang.tsv"
    run_lid("voxceleb2", summary.voxceleb2, "dev", out, weights=str(summary.lid_model), workers=0, progress=False)
    found = read_language_labels(out)
    assert found == read_language_labels(summary.language_labels)
