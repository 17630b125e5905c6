"""A tiny synthetic world in the real dataset layouts, for recipes that run end to end offline in CI.

:func:`write_world` writes, under one folder, VoxCeleb2 dev (AAC ``.m4a`` voices and MPEG-4 ``.mp4`` face
tracks), CommonVoice (per-locale ``validated.tsv`` and ``.mp3`` clips) and MAV-Celeb V3 (the demo dataset,
:func:`fva.synth.demo.generate_demo`, with a copy of its lists in the release's separate splits folder). Every
voice and face comes from the demo dataset's generators, so one identity's voice and face share its hidden
traits and heads have something to learn. Identity numbers are disjoint across the three datasets.

This module also owns the VoxCeleb2 and CommonVoice layout writers (:func:`write_voxceleb2`,
:func:`write_commonvoice`); :mod:`fva.synth.world` keeps its wav-only wrappers for the trainers' tests.
Output is a pure function of the seed and the sizes; FFmpeg's encoders run single-threaded, so the same
stack writes the same bytes.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

import av
import numpy as np

from fva.data.commonvoice import AGES
from fva.errors import FvaError
from fva.synth import demo

SAMPLE_RATE = demo.SAMPLE_RATE
VIDEO_FPS = 25
FACE_STEP = 25  # fva.data.voxceleb2.FACE_FRAME_STEP: extraction samples every 25th frame of a face track
AUDIO_BIT_RATE = 32_000
VIDEO_QSCALE = 4  # MPEG-4 quantiser: 1 best .. 31 worst
SPLITS_DIR = "face_voice_association_splits/v3"  # where the FAME baseline keeps the V3 train/test lists
LANGUAGE_TRUTH = "voxceleb2_languages.tsv"
LID_MODEL = "models/lid"  # a language-ID stand-in fitted to the world's clips (fva lid --weights)

CV_COLUMNS = ("client_id", "path", "sentence_id", "sentence", "sentence_domain", "up_votes", "down_votes", "age",
              "gender", "accents", "variant", "locale", "segment")
CV_LOCALES = ("en", "de", "da", "nl", "es", "fr", "it")
# the demo generator speaks two styles; the Germanic locales take the German one
CV_STYLES = {"en": "English", "de": "German", "da": "German", "nl": "German", "es": "English", "fr": "English",
             "it": "English"}
CV_GENDERS = ("male_masculine", "female_feminine")  # the vocabulary of CommonVoice releases 17 and later
VOX_FIRST = 500  # VoxCeleb2 identity numbers; MAV-Celeb uses 1.., CommonVoice 1000.. (see write_commonvoice)
_T_VOICE, _T_FACE_TRACK = 7919, 7920  # keyed random streams, apart from the demo dataset's tags


@dataclass(frozen=True)
class WorldSummary:
    """What :func:`write_world` wrote: where each dataset lies, its sizes, and the world's size and time."""

    root: Path
    seed: int
    voxceleb2: Path
    commonvoice: Path
    mavceleb: Path
    splits: Path
    language_labels: Path  # VoxCeleb2's true language per video, in the 'fva lid' TSV format
    lid_model: Path  # a language-ID stand-in (VoxLingua107 ECAPA format) whose output layer knows these languages
    voxceleb2_identities: int
    voxceleb2_utterances: dict[str, int]  # per (hidden) language
    voxceleb2_face_frames: int  # sampled faces over all face tracks (every 25th frame)
    commonvoice_clips: dict[str, int]  # per locale
    mavceleb_summary: demo.DemoSummary
    files: int
    bytes: int
    seconds: float

    def lines(self) -> list[str]:
        """A short human summary, one line per item."""
        vox = ", ".join(f"{n} {lang}" for lang, n in sorted(self.voxceleb2_utterances.items()))
        cv = ", ".join(f"{loc} {n}" for loc, n in self.commonvoice_clips.items())
        mav = self.mavceleb_summary
        return [
            f"wrote a synthetic world (no real people) to {self.root} (seed {self.seed}) in {self.seconds:.1f} s: "
            f"{self.files} files, {self.bytes / 1e6:.1f} MB",
            f"voxceleb2: {self.voxceleb2_identities} identities, utterances {vox} (m4a + mp4 face tracks, "
            f"{self.voxceleb2_face_frames} sampled faces); true languages in {self.language_labels.name}",
            f"commonvoice: clips per locale {cv} (mp3, validated.tsv with age and gender)",
            f"mavceleb_v3: {mav.train_identities} train and {mav.test_identities} test identities, "
            + ", ".join(f"{lang} {mav.train_voices[lang]} voices / {mav.test_trials[lang]} trials"
                        for lang in demo.LANGUAGES)
            + f"; lists also in {SPLITS_DIR}/",
        ]


def write_world(out: Path, seed: int = 0, *, vox_identities: int = 8, vox_videos: int = 2, vox_clips: int = 2,
                cv_locales: tuple[str, ...] = CV_LOCALES, cv_speakers: int = 3, cv_clips: int = 2,
                mav_train: int = 14, mav_test: int = 4, mav_videos: int = 2, mav_clips: int = 1,
                mav_frames: int = 1, mav_trials: int = 4) -> WorldSummary:
    """Write the world to ``out`` (new or empty); it appears only once complete.

    ``out/voxceleb2/dev/{aac,mp4}/idNNNNN/<video>/NNNNN.{m4a,mp4}``: ``vox_identities`` x ``vox_videos`` x
    ``vox_clips`` utterances, half the videos German; ``out/commonvoice/<locale>/``: ``cv_speakers`` x
    ``cv_clips`` per locale; ``out/mavceleb_v3/``: the demo dataset with ``mav_train`` + ``mav_test``
    identities (``mav_videos`` x ``mav_clips`` voices and ``mav_videos`` x ``mav_frames`` faces per train
    identity and language, ``mav_trials`` trials per test identity and language); ``out/{SPLITS_DIR}/``: its
    train and test lists, as the release ships them beside the media.
    """
    start = time.perf_counter()
    out = Path(out)
    _check_sizes(seed, vox_identities, vox_videos, vox_clips, tuple(cv_locales), cv_speakers, cv_clips)
    demo.check_sizes(seed, mav_train, mav_test, mav_videos, mav_clips, mav_frames, mav_trials)
    if mav_train + mav_test >= VOX_FIRST:
        raise FvaError(f"{mav_train + mav_test} MAV-Celeb identities would reach the VoxCeleb2 ones "
                       f"(numbered from {VOX_FIRST}); use at most {VOX_FIRST - 1} in all")
    tmp = demo.start_tree(out)
    try:
        vox = write_voxceleb2(tmp / "voxceleb2", identities=vox_identities, videos=vox_videos, clips=vox_clips,
                              seed=seed, first=VOX_FIRST, audio="m4a", faces=True, german=True)
        rows = "".join(f"{key}\t{lang}\t1.0\n" for key, lang in sorted(vox.languages.items()))
        (tmp / LANGUAGE_TRUTH).write_text("key\tlanguage\tconfidence\n" + rows)
        cv = write_commonvoice(tmp / "commonvoice", locales=tuple(cv_locales), speakers=cv_speakers,
                               clips=cv_clips, seed=seed, audio="mp3", other=False, styles=CV_STYLES,
                               genders=CV_GENDERS)
        mav = demo.generate_demo(tmp / "mavceleb_v3", seed=seed, train_identities=mav_train,
                                 test_identities=mav_test, videos=mav_videos, utterances=mav_clips,
                                 frames=mav_frames, trials_per_identity=mav_trials)
        splits = tmp / SPLITS_DIR
        splits.mkdir(parents=True)
        for lang in demo.LANGUAGES:
            for part in ("train", "test"):
                shutil.copyfile(tmp / "mavceleb_v3" / f"{lang}_{part}.txt", splits / f"{lang}_{part}.txt")
        _write_lid(tmp / LID_MODEL, tmp / "voxceleb2", vox.languages, seed)
        _write_readme(tmp, seed, vox, cv, mav)
        files = [p for p in tmp.rglob("*") if p.is_file()]
        size = sum(p.stat().st_size for p in files)
        demo.publish_tree(tmp, out, "the world was")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return WorldSummary(
        root=out, seed=seed, voxceleb2=out / "voxceleb2", commonvoice=out / "commonvoice",
        mavceleb=out / "mavceleb_v3", splits=out / SPLITS_DIR, language_labels=out / LANGUAGE_TRUTH,
        lid_model=out / LID_MODEL,
        voxceleb2_identities=vox_identities, voxceleb2_utterances=vox.utterances,
        voxceleb2_face_frames=vox.face_frames, commonvoice_clips=cv,
        mavceleb_summary=replace(mav, root=out / "mavceleb_v3"), files=len(files), bytes=size,
        seconds=time.perf_counter() - start,
    )


def _write_lid(folder: Path, vox_root: Path, languages: dict[str, str], seed: int) -> None:
    """A language-ID stand-in for stage 1 of a recipe: a small model in the VoxLingua107 ECAPA's format whose
    output layer is fitted to the world's own VoxCeleb2 clips (a real LID model knows English and German; a
    random one labels every clip alike)."""
    from fva.train.lid import fit_output_layer, write_lid_model

    write_lid_model(folder, languages=("de: German", "en: English"), seed=seed)
    clips = [(path, languages[f"{path.parent.parent.name}/{path.parent.name}"])
             for path in sorted((vox_root / "dev" / "aac").glob("*/*/*.m4a"))]
    fit_output_layer(folder, clips)


def _check_sizes(seed: int, identities: int, videos: int, clips: int, locales: tuple[str, ...], speakers: int,
                 cv_clips: int) -> None:
    if seed < 0:
        raise FvaError(f"seed {seed} is negative; pass a seed >= 0")
    if min(identities, videos, clips, speakers, cv_clips) < 1:
        raise FvaError("every VoxCeleb2 and CommonVoice size (identities, videos, clips, speakers) must be at "
                       "least 1")
    if VOX_FIRST + identities > 1000:
        raise FvaError(f"at most {1000 - VOX_FIRST} VoxCeleb2 identities (numbers from {VOX_FIRST} stay below "
                       f"CommonVoice's, from 1000); got {identities}")
    if speakers > 999:
        raise FvaError(f"at most 999 CommonVoice speakers per locale; got {speakers}")
    if not locales or len(set(locales)) != len(locales) or not all(
            loc and loc.replace("-", "").isalnum() for loc in locales):
        raise FvaError(f"CommonVoice locales {', '.join(locales) or '(none)'}: give distinct locale codes "
                       "such as en, de")


# ---------------------------------------------------------------- media writers


def write_audio(path: Path, samples: np.ndarray) -> None:
    """16 kHz mono int16 ``samples`` as wav (:mod:`wave`), m4a (AAC) or mp3 (LAME), chosen by the suffix."""
    suffix = path.suffix.lower()
    if suffix == ".wav":
        demo.write_wav(path, samples)
        return
    codec, container = {".m4a": ("aac", "ipod"), ".mp3": ("libmp3lame", "mp3")}[suffix]
    path.parent.mkdir(parents=True, exist_ok=True)
    x = samples.astype(np.float32)[None, :] / 32768  # exact: int16 values are floats
    with av.open(str(path), "w", format=container) as fh:
        stream = fh.add_stream(codec, rate=SAMPLE_RATE, layout="mono")
        stream.bit_rate = AUDIO_BIT_RATE
        stream.codec_context.thread_count = 1
        for start in range(0, x.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, start:start + 1024]), format="fltp",
                                               layout="mono")
            frame.sample_rate = SAMPLE_RATE
            frame.pts = start
            for packet in stream.encode(frame):
                fh.mux(packet)
        for packet in stream.encode(None):
            fh.mux(packet)


def write_video(path: Path, frames: list[np.ndarray]) -> None:
    """RGB uint8 frames (even sizes) as a video-only 25 fps MPEG-4 Part 2 mp4 (FFmpeg's own encoder).

    Not H.264: x264 here wrote different bytes for the same frames about once in 200 runs, and FFmpeg's
    pixel-format conversion added more; this encoder, fed yuv420p converted by :func:`rgb_to_yuv420p`,
    repeated its bytes in every run measured (400 of 400)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    height, width = frames[0].shape[:2]
    with av.open(str(path), "w", format="mp4") as fh:
        stream = fh.add_stream("mpeg4", rate=VIDEO_FPS)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
        stream.codec_context.qscale = VIDEO_QSCALE
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb_to_yuv420p(img), format="yuv420p")):
                fh.mux(packet)
        for packet in stream.encode(None):
            fh.mux(packet)


def rgb_to_yuv420p(rgb: np.ndarray) -> np.ndarray:
    """An H x W x 3 RGB image as packed planar yuv420p (Y, then U, then V; (H * 3 / 2) x W), BT.601 limited
    range, chroma averaged over 2 x 2 blocks."""
    h, w = rgb.shape[:2]
    x = rgb.astype(np.float64)
    y = 16 + (65.481 * x[..., 0] + 128.553 * x[..., 1] + 24.966 * x[..., 2]) / 255
    m = x.reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3))
    u = 128 + (-37.797 * m[..., 0] - 74.203 * m[..., 1] + 112.0 * m[..., 2]) / 255
    v = 128 + (112.0 * m[..., 0] - 93.786 * m[..., 1] - 18.214 * m[..., 2]) / 255
    planes = np.concatenate([y.ravel(), u.ravel(), v.ravel()])
    return np.clip(np.round(planes), 0, 255).astype(np.uint8).reshape(h * 3 // 2, w)


def face_track(ident: demo.Identity, video: demo.Video, samples: int, r: np.random.Generator) -> list[np.ndarray]:
    """Frames of a face track as long as an utterance of ``samples`` audio samples (at least 26 frames, so
    every-25th-frame sampling finds two faces); a new drawing every 25 frames, held in between."""
    count = max(FACE_STEP + 1, math.ceil(samples / SAMPLE_RATE * VIDEO_FPS))
    drawn = [np.asarray(demo.render_face(ident, video, r)) for _ in range(0, count, FACE_STEP)]
    return [drawn[k // FACE_STEP] for k in range(count)]


# ---------------------------------------------------------------- VoxCeleb2 and CommonVoice layouts


@dataclass(frozen=True)
class VoxCeleb2Written:
    """What :func:`write_voxceleb2` wrote."""

    languages: dict[str, str]  # ``idNNNNN/<video>`` -> the language its voices were generated in
    utterances: dict[str, int]  # per language
    face_frames: int  # faces that every-25th-frame sampling finds over all face tracks (0 without tracks)


def utterance(ident: demo.Identity, video: demo.Video, seed: int, *key: int, segments: int = 1,
              language: str = "English") -> np.ndarray:
    """``segments`` generated clips (1.5-2.5 s each) of one identity, back to back."""
    r = demo.seeded_rng(seed, _T_VOICE, *key)
    return np.concatenate([demo.render_voice(ident, language, video, r) for _ in range(segments)])


def write_voxceleb2(root: Path, *, identities: int = 4, videos: int = 2, clips: int = 3, seed: int = 0,
                    segments: int = 1, first: int = 0, audio: str = "wav", faces: bool = False,
                    german: bool = False) -> VoxCeleb2Written:
    """``root/dev/aac/idNNNNN/<video>/NNNNN.<audio>`` for identities ``first..`` and, with ``faces``, a face
    track ``root/dev/mp4/.../NNNNN.mp4`` per utterance. With ``german``, video ``v`` of identity ``i`` speaks
    German when ``i + v`` is odd (each identity speaks both languages when it has two videos or more)."""
    languages: dict[str, str] = {}
    utterances: dict[str, int] = {}
    face_frames = 0
    for i in range(first, first + identities):
        ident = demo.make_identity(seed, i)
        for v, video in enumerate(demo.identity_videos(seed, i, 0, videos)):
            lang = "German" if german and (i + v) % 2 else "English"
            languages[f"id{i:05d}/{video.vid}"] = lang
            utterances[lang] = utterances.get(lang, 0) + clips
            for u in range(clips):
                rel = Path(f"id{i:05d}", video.vid, f"{u + 1:05d}")
                samples = utterance(ident, video, seed, i, v, u, segments=segments, language=lang)
                write_audio(root / "dev" / "aac" / rel.with_suffix(f".{audio}"), samples)
                if faces:
                    frames = face_track(ident, video, len(samples), demo.seeded_rng(seed, _T_FACE_TRACK, i, v, u))
                    write_video(root / "dev" / "mp4" / rel.with_suffix(".mp4"), frames)
                    face_frames += len(range(0, len(frames), FACE_STEP))
    return VoxCeleb2Written(languages=languages, utterances=utterances, face_frames=face_frames)


def write_commonvoice(root: Path, *, locales: tuple[str, ...] = ("en", "de"), speakers: int = 4, clips: int = 3,
                      seed: int = 0, segments: int = 1, audio: str = "wav", other: bool = True,
                      styles: dict[str, str] | None = None,
                      genders: tuple[str, str] = ("male", "female")) -> dict[str, int]:
    """``root/<locale>/validated.tsv`` and ``clips/`` with ``speakers`` speakers (numbers ``1000 * (locale
    index + 1) + s``) per locale; returns the clips per locale. Ages are the identities' decades and genders
    ``genders`` (male, female word), except, with ``other``, the last speaker of each locale, who says 'other'.
    ``styles`` maps a locale to the generator's voice style (English or German; English when absent)."""
    counts: dict[str, int] = {}
    for li, locale in enumerate(locales):
        style = (styles or {}).get(locale, "English")
        rows = ["\t".join(CV_COLUMNS)]
        for s in range(speakers):
            number = 1000 * (li + 1) + s
            ident = demo.make_identity(seed, number)
            video = demo.identity_videos(seed, number, 0, 1)[0]
            decade = AGES[min(len(AGES) - 1, max(1, int(ident.age // 10) - 1))]
            gender = "other" if other and s == speakers - 1 else genders[int(ident.female)]
            for u in range(clips):
                name = f"common_voice_{locale}_{number}_{u}.{audio}"
                write_audio(root / locale / "clips" / name,
                            utterance(ident, video, seed, number, u, segments=segments, language=style))
                rows.append("\t".join((f"client{number}", name, f"s{u}", "Ein Satz.", "", "2", "0", decade,
                                       gender, "", "", locale, "")))
        (root / locale / "validated.tsv").write_text("\n".join(rows) + "\n")
        counts[locale] = speakers * clips
    return counts


def _write_readme(root: Path, seed: int, vox: VoxCeleb2Written, cv: dict[str, int], mav: demo.DemoSummary) -> None:
    vox_counts = ", ".join(f"{n} {lang}" for lang, n in sorted(vox.utterances.items()))
    text = (
        f"A tiny synthetic world in the real dataset layouts, written by fva demo-world with seed {seed}, for "
        f"recipes that run end to end offline. It holds no real people: every identity has hidden traits "
        f"(gender, age, three latents) that shape both its generated voice and its drawn face (fva.synth.demo), "
        f"so faces and voices of one identity can be associated. Identity numbers are disjoint across the "
        f"datasets.\n\n"
        f"voxceleb2/dev/aac/idNNNNN/<video>/NNNNN.m4a: 16 kHz mono AAC voices ({vox_counts} utterances); "
        f"voxceleb2/dev/mp4/idNNNNN/<video>/NNNNN.mp4: one video-only 25 fps MPEG-4 face track per utterance, as "
        f"long as it, a new drawing every 25 frames. Videos speak English or German; VoxCeleb2 has no language "
        f"in its layout, so the truth is in {LANGUAGE_TRUTH} (key language confidence, as 'fva lid' writes "
        f"it), for checking a language-ID model, not for the recipe to read.\n\n"
        f"commonvoice/<locale>/validated.tsv and clips/*.mp3 (16 kHz mono MP3) for "
        f"{', '.join(f'{loc} ({n} clips)' for loc, n in cv.items())}; age as a decade and gender in the "
        f"vocabulary of CommonVoice 17 and later; the Germanic locales (de, da, nl) speak the German style.\n\n"
        f"mavceleb_v3/: MAV-Celeb V3 (English/German) as fva demo-data writes it, {mav.train_identities} train "
        f"and {mav.test_identities} test identities, with <Lang>_test_labels.txt ground truth; "
        f"{SPLITS_DIR}/ holds a copy of its <Lang>_train.txt and <Lang>_test.txt lists, where the release ships "
        f"them.\n\n{LID_MODEL}/: a small language-ID model in the format of speechbrain's VoxLingua107 ECAPA "
        f"(fva lid --weights), random but for its output layer, fitted to these VoxCeleb2 clips' languages: a "
        f"stand-in for the published model, which knows English and German.\n\n"
        f"The same seed and sizes give the same bytes on the same software stack.\n"
    )
    (root / "README.txt").write_text(text)
