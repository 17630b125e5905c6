"""A small synthetic dataset shaped exactly like MAV-Celeb V3 (English/German), for demos and tests.

Each identity has hidden traits (gender, age and three continuous latents) that shape both its synthetic
voice (pitch, formants, tilt, breathiness, jitter, speaking rate) and its drawn face (jaw, width, skin,
hair length and greying, wrinkles, eye spacing), so that face-voice association is learnable from frozen
encoder features, also across languages, without being trivial: the trait-to-feature mappings differ per
modality, every clip and frame has its own noise, and German shifts every voice in one fixed way.

Output is a pure function of the seed and the sizes: every identity, video and file draws from its own
keyed random stream, wavs go through :mod:`wave` and jpgs through Pillow at a fixed quality, so two runs
with the same arguments on the same software stack are byte-identical.
"""

from __future__ import annotations

import math
import os
import shutil
import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy.signal import lfilter, sosfilt
from scipy.special import ndtr

from fva.data.trials import Trial, labels_path, write_labels, write_trials
from fva.errors import FvaError

SAMPLE_RATE = 16_000
IMAGE_SIZE = 96
JPEG_QUALITY = 90
LANGUAGES = ("English", "German")
_SS = 2  # faces are drawn at twice the size and downsampled, for smooth edges
_VIDEO_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
KEY_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"

# Stream tags for keyed random generators: rng(seed, tag, ...) never depends on iteration order.
(_T_IDENTITY, _T_VIDEOS, _T_TRAIN_VOICE, _T_TRAIN_FACE, _T_PAIRS, _T_TRIALS, _T_TEST_VOICE,
 _T_TEST_FACE) = range(8)

# Reference (adult male) vowel formants F1-F3 in Hz; each language speaks its own vowel inventory.
_VOWELS = {
    "English": ((270, 2290, 3010), (390, 1990, 2550), (530, 1840, 2480), (660, 1720, 2410),
                (730, 1090, 2440), (640, 1190, 2390), (300, 870, 2240), (440, 1020, 2240)),
    "German": ((280, 2250, 2900), (280, 1750, 2150), (390, 2100, 2700), (380, 1500, 2200),
               (700, 1300, 2500), (400, 800, 2400), (300, 750, 2300), (550, 1800, 2500)),
    "Bengali": ((290, 2300, 2950), (400, 2050, 2600), (560, 1850, 2500), (720, 1250, 2450),
                (560, 950, 2400), (330, 800, 2300)),  # the v4 demo's (fva.synth.demo_v4)
}


@dataclass(frozen=True)
class _Language:
    """A fixed shift that a language applies to every speaker."""

    f0: float  # pitch factor
    formants: float  # formant factor
    rate: float  # speaking-rate factor
    declination: float  # phrase-level pitch fall, fraction of f0 over the clip
    accent_peak: float  # where in a syllable the pitch accent peaks (0 start .. 1 end)
    accent: float  # accent height, fraction of f0
    fricatives: float  # chance that a syllable starts with a fricative
    fricative_hz: tuple[float, float]  # fricative noise centre range


_LANG = {
    "English": _Language(f0=1.0, formants=1.0, rate=1.0, declination=0.10, accent_peak=0.55, accent=0.10,
                         fricatives=0.30, fricative_hz=(4500.0, 6500.0)),
    "German": _Language(f0=0.91, formants=0.97, rate=0.85, declination=0.20, accent_peak=0.15, accent=0.13,
                        fricatives=0.45, fricative_hz=(2500.0, 4000.0)),
    "Bengali": _Language(f0=1.06, formants=1.02, rate=1.12, declination=0.06, accent_peak=0.85, accent=0.16,
                         fricatives=0.20, fricative_hz=(3000.0, 5000.0)),
}

_SKIN = np.array([(247, 219, 197), (231, 189, 158), (201, 150, 110), (150, 103, 70), (98, 66, 45)], float)
_HAIR = np.array([(35, 25, 20), (70, 45, 25), (120, 80, 45), (190, 150, 90), (150, 60, 30)], float)
_GREY = np.array([205, 205, 210], float)
_EYES = np.array([(60, 40, 25), (95, 70, 40), (70, 110, 150), (80, 120, 80)], float)


@dataclass(frozen=True)
class DemoSummary:
    """What :func:`generate_demo` wrote: sizes per language and the time it took."""

    root: Path
    seed: int
    train_identities: int
    test_identities: int
    train_voices: dict[str, int]
    train_faces: dict[str, int]
    test_trials: dict[str, int]
    seconds: float

    def lines(self) -> list[str]:
        """A short human summary, one line per item."""
        out = [f"wrote synthetic MAV-Celeb V3 demo data to {self.root} (seed {self.seed}) "
               f"in {self.seconds:.1f} s",
               f"identities: {self.train_identities} train, {self.test_identities} test (disjoint)"]
        for lang in LANGUAGES:
            out.append(f"{lang}: {self.train_voices[lang]} train voices, {self.train_faces[lang]} train "
                       f"faces, {self.test_trials[lang]} test trials (half same person)")
        return out


@dataclass(frozen=True)
class Identity:
    """An identity's hidden traits and the voice and face parameters derived from them."""

    name: str
    female: bool
    age: float
    latent: tuple[float, float, float]
    # voice
    f0: float
    vtl: float  # formant scale (shorter vocal tract, higher formants)
    rate: float  # syllables per second
    tilt_hz: float  # extra source low-pass: lower is a steeper spectral tilt
    breath: float  # aspiration noise level
    jitter: float
    vibrato: float
    vibrato_hz: float
    bandwidth: float
    intonation: float  # pitch-accent range factor
    pauses: float  # probability of a pause after a syllable
    # face
    half_width: float
    half_height: float
    jaw: float  # superellipse exponent of the lower face: larger is squarer
    skin: tuple[float, float, float]
    hair: tuple[float, float, float]
    hair_length: float  # 0 short .. 1 shoulder length
    wrinkles: int
    eye_gap: float
    eye_colour: tuple[float, float, float]
    brow: float
    stubble: float
    mouth: float


def generate_demo(out: Path, *, seed: int = 0, train_identities: int = 72, test_identities: int = 16,
                  videos: int = 2, utterances: int = 2, frames: int = 2,
                  trials_per_identity: int = 12) -> DemoSummary:
    """Write a synthetic MAV-Celeb V3 dataset to ``out`` (new or empty) and return what was written.

    Train identities ``id0001..`` each get, per language, ``videos`` videos with ``utterances`` voice clips
    and ``frames`` face frames; test identities follow them and get ``trials_per_identity`` trials per
    language as the voice side, half of them same-person. The folder appears only once complete.
    """
    start = time.perf_counter()
    out = Path(out)
    check_sizes(seed, train_identities, test_identities, videos, utterances, frames, trials_per_identity)
    tmp = start_tree(out)
    try:
        ids = [make_identity(seed, i) for i in range(1, train_identities + test_identities + 1)]
        train, test = ids[:train_identities], ids[train_identities:]
        train_voices, train_faces = _write_train(tmp, seed, train, videos, utterances, frames)
        test_trials = {lang: _write_test(tmp, seed, lang, test, videos, trials_per_identity)
                       for lang in LANGUAGES}
        _write_readme(tmp, seed, train, test, train_voices, train_faces, test_trials)
        publish_tree(tmp, out, "the demo data were")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return DemoSummary(root=out, seed=seed, train_identities=train_identities,
                       test_identities=test_identities, train_voices=train_voices, train_faces=train_faces,
                       test_trials=test_trials, seconds=time.perf_counter() - start)


def check_sizes(seed: int, train: int, test: int, videos: int, utterances: int, frames: int,
                 trials: int) -> None:
    if seed < 0:
        raise FvaError(f"seed {seed} is negative; pass a seed >= 0")
    if train < 1 or test < 2:
        raise FvaError(f"need at least 1 train and 2 test identities (got {train} and {test})")
    if train + test > 9999:
        raise FvaError(f"{train + test} identities do not fit idNNNN names; use at most 9999 in all")
    if min(videos, utterances, frames) < 1:
        raise FvaError("videos, utterances and frames per identity and language must each be at least 1")
    if trials < 2 or trials % 2:
        raise FvaError(f"trials per identity must be even and at least 2 (got {trials}): half are "
                       "same-person")


def publish_tree(tmp: Path, out: Path, what: str) -> None:
    """Rename the finished temporary sibling ``tmp`` to ``out`` (new, or an empty folder checked before)."""
    try:
        if out.exists():
            out.rmdir()  # empty, checked above; rename cannot replace a folder on every platform
        os.rename(tmp, out)
    except OSError as err:  # someone wrote into ``out`` meanwhile
        raise FvaError(f"{out} changed while {what} written ({err.strerror}); pass an empty or new folder as "
                       "--out, or remove it") from None


def start_tree(out: Path) -> Path:
    """The temporary sibling a generated tree is written into; ``out`` must be new or an empty folder (it is
    replaced by :func:`publish_tree` only once the tree is complete)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FvaError(f"{out} already exists and is not an empty folder; pass an empty or new folder "
                       "as --out, or remove it")
    out.parent.mkdir(parents=True, exist_ok=True)
    return _make_temp_sibling(out)


def _make_temp_sibling(out: Path) -> Path:
    """An empty folder next to ``out``, so the final rename stays on one file system."""
    for n in range(1000):
        tmp = out.parent / f".{out.name}.partial-{os.getpid()}-{n}"
        try:
            tmp.mkdir()
            return tmp
        except FileExistsError:
            continue
    raise FvaError(f"cannot create a temporary folder next to {out}; remove stale "
                   f".{out.name}.partial-* folders")


def seeded_rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


# ---------------------------------------------------------------- identities


def make_identity(seed: int, number: int) -> Identity:
    """Draw identity ``number``'s traits and map them, differently per modality, to voice and face."""
    r = seeded_rng(seed, _T_IDENTITY, number)
    female = bool(r.random() < 0.5)
    age = float(r.uniform(20, 70))
    z1, z2, z3 = (float(v) for v in r.standard_normal(3))
    sex = 1.0 if female else 0.0
    # voice: pitch from gender, age (women lower, men slightly higher with age) and z1
    f0 = (208.0 if female else 118.0) * (1 - 0.004 * (age - 45) if female else 1 + 0.002 * (age - 45))
    f0 *= math.exp(0.3 * z1 + 0.03 * r.standard_normal())
    vtl = (1.16 if female else 1.0) * math.exp(0.12 * z2 + 0.015 * r.standard_normal())
    rate = 4.6 * math.exp(0.35 * z3 - 0.02 * (age - 45) + 0.04 * r.standard_normal())
    tilt_hz = 3600.0 * math.exp(-0.03 * (age - 45)) * (0.8 if female else 1.0)
    breath = 0.03 + 0.0025 * (age - 20) + 0.04 * sex + 0.01 * abs(r.standard_normal())
    jitter = 0.005 + 0.0006 * (age - 20)
    vibrato = 0.006 * math.exp(0.8 * z2 + 0.2 * r.standard_normal())
    vibrato_hz = float(r.uniform(4.5, 6.5))
    bandwidth = math.exp(0.25 * z3 + 0.08 * r.standard_normal()) * (1 + 0.006 * (age - 20))
    # dynamics (what survives the encoders' per-utterance mean normalisation): intonation range from z1,
    # pauses from age
    intonation = math.exp(0.6 * z1 + 0.1 * r.standard_normal())
    pauses = min(0.6, max(0.02, 0.04 + 0.009 * (age - 20)))
    # face: jaw and width from gender and z2, eye spacing from z1, skin from z3, hair from gender and age
    half_width = 24.0 * (0.92 if female else 1.0) * (1 - 0.05 * z2 + 0.02 * r.standard_normal())
    half_height = 31.0 * (0.97 if female else 1.0) * (1 + 0.03 * z2 + 0.02 * r.standard_normal())
    jaw = (2.0 if female else 3.0) + 0.25 * math.tanh(-z2) + 0.1 * r.standard_normal()
    skin = _palette(_SKIN, float(ndtr(z3 + 0.2 * r.standard_normal())))
    grey = min(1.0, max(0.0, (age - 36) / 28 + 0.08 * r.standard_normal())) ** 1.3
    hair = (1 - grey) * _palette(_HAIR, float(r.random())) + grey * _GREY
    if np.abs(hair - skin).sum() < 90:  # keep hair visibly apart from skin
        hair = hair * 0.6 if hair.sum() > 300 else np.minimum(hair * 1.25 + 40, 255)
    hair_length = min(1.0, max(0.0, (0.75 if female else 0.08) + 0.15 * r.standard_normal()))
    wrinkles = max(0, int(round((age - 32) / 7 + 0.7 * r.standard_normal())))
    eye_gap = 10.5 * (1 + 0.1 * z1 + 0.02 * r.standard_normal())
    eye_colour = _palette(_EYES, float(r.random()))
    brow = (1.3 if female else 2.3) * float(np.exp(0.15 * r.standard_normal()))
    stubble = 0.0 if female or r.random() < 0.6 else float(r.uniform(0.3, 1.0))
    mouth = 7.0 * (1 + 0.1 * r.standard_normal())
    return Identity(
        name=f"id{number:04d}", female=female, age=age, latent=(z1, z2, z3),
        f0=f0, vtl=vtl, rate=rate, tilt_hz=tilt_hz, breath=breath, jitter=jitter, vibrato=vibrato,
        vibrato_hz=vibrato_hz, bandwidth=bandwidth, intonation=intonation, pauses=pauses, half_width=half_width, half_height=half_height, jaw=jaw,
        skin=tuple(skin), hair=tuple(hair), hair_length=hair_length, wrinkles=wrinkles, eye_gap=eye_gap,
        eye_colour=tuple(eye_colour), brow=brow, stubble=stubble, mouth=mouth,
    )


def _palette(colours: np.ndarray, t: float) -> np.ndarray:
    """Piecewise-linear colour at ``t`` in [0, 1] along a palette."""
    x = min(max(t, 0.0), 1.0) * (len(colours) - 1)
    i = min(int(x), len(colours) - 2)
    return colours[i] + (x - i) * (colours[i + 1] - colours[i])


@dataclass(frozen=True)
class Video:
    """Per-video recording conditions shared by its clips and frames."""

    vid: str
    channel_hz: float  # microphone high-pass corner
    noise_colour: float  # one-pole low-pass coefficient of the background noise
    background: tuple[float, float, float]
    clothes: tuple[float, float, float]
    light: float  # left-right lighting slope


def identity_videos(seed: int, identity: int, lang: int, count: int) -> list[Video]:
    r = seeded_rng(seed, _T_VIDEOS, identity, lang)
    out: list[Video] = []
    seen: set[str] = set()
    while len(out) < count:
        vid = "".join(r.choice(list(_VIDEO_ALPHABET[:62]), 1)) + "".join(r.choice(list(_VIDEO_ALPHABET), 10))
        if vid in seen:
            continue
        seen.add(vid)
        out.append(Video(
            vid=vid, channel_hz=float(r.uniform(60, 400)), noise_colour=float(r.uniform(0.0, 0.95)),
            # muted: a nuisance that varies per video without dominating the frame, as in real face crops
            background=tuple(float(v) for v in 128 + 0.35 * (r.uniform(40, 215, 3) - 128)),
            clothes=tuple(float(v) for v in 128 + 0.5 * (r.uniform(20, 230, 3) - 128)), light=float(r.uniform(-0.18, 0.18)),
        ))
    return out


# ---------------------------------------------------------------- voices


def _resonator(freq: float, bw: float) -> list[float]:
    """Second-order section of a formant resonator with unit gain at DC, for :func:`sosfilt`."""
    c = -math.exp(-2 * math.pi * bw / SAMPLE_RATE)
    b = 2 * math.exp(-math.pi * bw / SAMPLE_RATE) * math.cos(2 * math.pi * freq / SAMPLE_RATE)
    return [1 - b - c, 0.0, 0.0, 1.0, -b, -c]


def _one_pole(x: np.ndarray, a: float) -> np.ndarray:
    return lfilter([1 - a], [1, -a], x)


def _white(r: np.random.Generator, n: int) -> np.ndarray:
    """Unit-variance white noise; uniform, which is several times faster to draw than Gaussian."""
    return (r.random(n) - 0.5) * math.sqrt(12.0)


def render_voice(ident: Identity, lang: str, video: Video, r: np.random.Generator) -> np.ndarray:
    """One int16 clip of syllable-like voiced speech by ``ident`` in ``lang``, recorded in ``video``."""
    L = _LANG[lang]
    n = int(r.uniform(1.5, 2.5) * SAMPLE_RATE)
    dur = n / SAMPLE_RATE
    # syllable schedule: onsets, nuclei lengths and pauses
    mean_syl = 1.0 / (ident.rate * L.rate)
    syllables: list[tuple[int, int]] = []
    pos = r.uniform(0.08, 0.2)
    while True:
        length = mean_syl * r.uniform(0.7, 1.3)
        if pos + length > dur - 0.06:
            break
        syllables.append((int(pos * SAMPLE_RATE), int((pos + length) * SAMPLE_RATE)))
        pos += length + (r.uniform(0.12, 0.25) if r.random() < ident.pauses else r.uniform(0.0, 0.03))
    # pitch at a 500 Hz control rate: speaker f0, language factor, per-clip offset, declination, accents,
    # vibrato and jitter, then interpolated to audio rate
    step = SAMPLE_RATE // 500
    tc = np.arange(0, n + step, step) / SAMPLE_RATE
    f0c = ident.f0 * L.f0 * math.exp(0.025 * r.standard_normal()) * (1 + L.declination * (0.5 - tc / dur))
    accent = np.zeros(len(tc))
    for s, e in syllables:
        i, j = s // step, max(s // step + 1, e // step)
        u = (np.arange(j - i) / (j - i) - L.accent_peak) / 0.35
        accent[i:j] = L.accent * ident.intonation * r.uniform(0.5, 1.2) * np.exp(-u * u)
    wobble = _one_pole(r.random(len(tc)) - 0.5, math.exp(-2 * math.pi * 40 / 500))
    wobble *= ident.jitter / (wobble.std() + 1e-12)
    f0c *= (1 + accent) * (1 + ident.vibrato * np.sin(2 * math.pi * ident.vibrato_hz * tc)) * (1 + wobble)
    f0 = np.interp(np.arange(n), np.arange(len(tc)) * step, f0c)
    # glottal source: band-shaped pulse train at fractional positions, tilt, aspiration noise
    phase = np.cumsum(f0 / SAMPLE_RATE)
    cycles = np.floor(phase)
    idx = np.flatnonzero(np.diff(cycles)) + 1
    frac = (phase[idx] - cycles[idx]) / (f0[idx] / SAMPLE_RATE)
    where = np.clip(idx - frac, 0, n - 2)
    lo = np.floor(where).astype(int)
    w = where - lo
    amp = 1 + 0.06 * r.standard_normal(len(idx))
    pulses = np.zeros(n)
    np.add.at(pulses, lo, amp * (1 - w))
    np.add.at(pulses, lo + 1, amp * w)
    glottal = math.exp(-2 * math.pi * 180 / SAMPLE_RATE)
    source = lfilter([1.0], [1, -2 * glottal, glottal * glottal], pulses)
    source = np.diff(source, prepend=0.0)
    source = _one_pole(source, math.exp(-2 * math.pi * ident.tilt_hz / SAMPLE_RATE))
    source /= source.std() + 1e-12
    aspiration = np.diff(_white(r, n), prepend=0.0) * (0.6 + 0.4 * np.cos(2 * math.pi * phase))
    source = source + ident.breath * 2.5 * aspiration
    # syllables: raised-cosine envelope, the syllable's vowel through a formant cascade, maybe a fricative
    speech = np.zeros(n)
    vowels = _VOWELS[lang]
    scale = ident.vtl * L.formants
    tail = int(0.03 * SAMPLE_RATE)
    for s, e in syllables:
        v = vowels[int(r.integers(len(vowels)))]
        end = min(n, e + tail)
        m = e - s
        env = np.ones(m)
        a, d = max(1, int(0.2 * m)), max(1, int(0.35 * m))
        env[:a] = 0.5 - 0.5 * np.cos(np.pi * np.arange(a) / a)
        env[-d:] = 0.5 + 0.5 * np.cos(np.pi * np.arange(d) / d)
        seg = np.zeros(end - s)
        seg[:m] = source[s:e] * env * r.uniform(0.6, 1.0)
        formants = [f * scale * r.uniform(0.95, 1.05) for f in v] + [3500 * scale, 4500 * scale]
        widths = [60, 90, 150, 250, 300]
        sos = [_resonator(f, b * ident.bandwidth) for f, b in zip(formants, widths)
               if f + b < SAMPLE_RATE / 2 - 300]
        seg = sosfilt(sos, seg)
        speech[s:end] += seg
        if r.random() < L.fricatives:
            k = int(r.uniform(0.04, 0.08) * SAMPLE_RATE)
            fs = max(0, s - k // 2)
            hiss = sosfilt([_resonator(r.uniform(*L.fricative_hz), 1500.0)], _white(r, k))
            hiss *= np.hanning(k) * 0.25 * r.uniform(0.5, 1.0)
            speech[fs:fs + k] += hiss[: n - fs]
    # recording: microphone high-pass, level, background noise at a random SNR
    speech = speech - _one_pole(speech, math.exp(-2 * math.pi * video.channel_hz / SAMPLE_RATE))
    speech *= 0.05 / (speech.std() + 1e-12) * 10 ** (r.uniform(-3, 3) / 20)
    noise = _one_pole(_white(r, n), video.noise_colour)
    snr = r.uniform(15, 30)
    noise *= speech.std() / (noise.std() + 1e-12) * 10 ** (-snr / 20)
    return np.clip(np.round((speech + noise) * 32767), -32768, 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as fh:
        fh.setnchannels(1)
        fh.setsampwidth(2)
        fh.setframerate(SAMPLE_RATE)
        fh.writeframes(samples.astype("<i2").tobytes())


# ---------------------------------------------------------------- faces


FACE_ZOOM = 1.35  # the face fills the frame, like a detector's crop


def render_face(ident: Identity, video: Video, r: np.random.Generator) -> Image.Image:
    """One 96x96 RGB frame of ``ident``'s drawn face in ``video``, with per-frame pose and light jitter."""
    S = IMAGE_SIZE * _SS
    s = _SS * FACE_ZOOM * r.uniform(0.94, 1.06)  # tight crop as face tracks are, with scale jitter
    cx = S / 2 + _SS * r.uniform(-4, 4)
    cy = S / 2 + _SS * r.uniform(-5, 3)
    a, b = ident.half_width * s, ident.half_height * s

    def col(rgb, k: float = 1.0) -> tuple[int, int, int]:
        return tuple(int(min(255, max(0, round(c * k)))) for c in rgb)

    img = Image.new("RGB", (S, S), col(video.background))
    d = ImageDraw.Draw(img)
    skin, hair = ident.skin, ident.hair
    # shoulders and neck
    d.ellipse([cx - 2.4 * a, cy + 1.25 * b, cx + 2.4 * a, cy + 3.2 * b], fill=col(video.clothes))
    d.rectangle([cx - 0.45 * a, cy + 0.6 * b, cx + 0.45 * a, cy + 1.45 * b], fill=col(skin, 0.9))
    # long hair falls behind the head
    if ident.hair_length > 0.3:
        bottom = cy + b * (1.6 * ident.hair_length - 0.1)
        side = a * (1.1 + 0.3 * ident.hair_length)
        d.ellipse([cx - side, cy - 1.12 * b, cx + side, cy + 0.5 * b], fill=col(hair, 0.9))
        d.rounded_rectangle([cx - side, cy - 0.3 * b, cx + side, bottom], radius=int(0.4 * a),
                            fill=col(hair, 0.9))
    # ears, head (superellipse: rounder top, jaw exponent below), hair cap
    for side in (-1, 1):
        d.ellipse([cx + side * a - 0.16 * a, cy - 0.15 * b, cx + side * a + 0.16 * a, cy + 0.22 * b],
                  fill=col(skin, 0.93))
    pts = []
    for k in range(96):
        th = 2 * math.pi * k / 96
        c, sn = math.cos(th), math.sin(th)
        e = 2.0 / (ident.jaw if sn > 0 else 2.3)
        pts.append((cx + a * math.copysign(abs(c) ** e, c), cy + b * math.copysign(abs(sn) ** e, sn)))
    d.polygon(pts, fill=col(skin))
    cap = 1.0 + 0.08 * min(1.0, ident.hair_length + 0.3)
    d.chord([cx - cap * a, cy - 1.08 * b, cx + cap * a, cy + 0.75 * b], 180 + 20, 360 - 20, fill=col(hair))
    # wrinkles on the forehead and at the eyes' corners
    line = col(skin, 0.72)
    ey = cy - 0.1 * b
    for i in range(min(ident.wrinkles, 3)):
        y = cy - b * (0.42 - 0.045 * i)
        d.arc([cx - 0.55 * a, y - 0.06 * b, cx + 0.55 * a, y + 0.06 * b], 200, 340, fill=line, width=_SS)
    for side in (-1, 1):
        ex = cx + side * ident.eye_gap * s
        for i in range(min(max(ident.wrinkles - 2, 0), 3)):
            x0 = ex + side * 6.5 * s
            d.line([x0, ey + (i - 1) * 1.6 * s, x0 + side * 3 * s, ey + (i - 1) * 2.6 * s], fill=line,
                   width=_SS)
    # eyes (with the odd blink), brows, nose, mouth
    blink = 0.25 if r.random() < 0.1 else r.uniform(0.85, 1.1)
    gaze = r.uniform(-1.0, 1.0) * s
    for side in (-1, 1):
        ex = cx + side * ident.eye_gap * s
        d.ellipse([ex - 4.5 * s, ey - 2.4 * s * blink, ex + 4.5 * s, ey + 2.4 * s * blink],
                  fill=(240, 240, 235))
        if blink > 0.5:
            d.ellipse([ex + gaze - 2.1 * s, ey - 2.1 * s, ex + gaze + 2.1 * s, ey + 2.1 * s],
                      fill=col(ident.eye_colour))
            d.ellipse([ex + gaze - 0.9 * s, ey - 0.9 * s, ex + gaze + 0.9 * s, ey + 0.9 * s],
                      fill=(15, 10, 10))
        by = ey - 5.2 * s - r.uniform(0, 0.8) * s
        d.line([ex - 5 * s, by + side * 0.3 * s, ex + 5 * s, by - side * 0.3 * s], fill=col(hair, 0.55),
               width=max(1, int(round(ident.brow * s))))
    d.line([cx, ey + 2 * s, cx - 2.2 * s, cy + 0.3 * b, cx + 1.2 * s, cy + 0.33 * b], fill=col(skin, 0.78),
           width=_SS)
    my = cy + 0.55 * b
    mw = ident.mouth * s
    lips = col(np.array(skin) * np.array([0.85, 0.55, 0.55]) if ident.female else np.array(skin) * 0.75)
    opened = r.uniform(0.3, 2.2) * s
    d.ellipse([cx - mw, my - opened, cx + mw, my + opened], fill=lips)
    if opened > 1.2 * s:
        d.ellipse([cx - 0.7 * mw, my - 0.5 * opened, cx + 0.7 * mw, my + 0.5 * opened], fill=(60, 25, 25))
    if ident.stubble > 0:  # stubble dots over the lower face
        count = int(160 * ident.stubble)
        xs = cx + r.uniform(-0.85, 0.85, count) * a
        ys = cy + r.uniform(0.3, 0.95, count) * b
        for x, y in zip(xs, ys):
            if ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 < 0.85:
                d.point([(x, y), (x + 1, y)], fill=col(hair, 0.5))
    # rotate a little, downsample, then lighting, brightness and sensor noise
    img = img.rotate(float(r.uniform(-6, 6)), resample=Image.Resampling.BILINEAR, center=(cx, cy),
                     fillcolor=col(video.background))
    img = img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.LANCZOS)
    x = np.asarray(img, dtype=np.float64)
    ramp = 1 + video.light * (np.arange(IMAGE_SIZE) - IMAGE_SIZE / 2) / (IMAGE_SIZE / 2)
    x = x * ramp[None, :, None] * r.uniform(0.85, 1.15) + r.uniform(-8, 8)
    x += r.normal(0, r.uniform(2, 6), x.shape)
    return Image.fromarray(np.clip(np.round(x), 0, 255).astype(np.uint8), "RGB")


def write_jpg(path: Path, img: Image.Image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, format="JPEG", quality=JPEG_QUALITY, optimize=False, progressive=False, subsampling=2)


# ---------------------------------------------------------------- train and test


def _write_train(root: Path, seed: int, ids: list[Identity], videos: int, utterances: int,
                 frames: int) -> tuple[dict[str, int], dict[str, int]]:
    """Train media under voices/ and faces/ plus ``<Lang>_train.txt``; returns counts per language."""
    n_voices = {lang: 0 for lang in LANGUAGES}
    n_faces = {lang: 0 for lang in LANGUAGES}
    for li, lang in enumerate(LANGUAGES):
        lines: list[str] = []
        for ident in ids:
            number = int(ident.name[2:])
            voices: list[str] = []
            faces: list[str] = []
            for vi, video in enumerate(identity_videos(seed, number, li, videos)):
                rel = f"{ident.name}/{lang}/{video.vid}"
                for u in range(utterances):
                    r = seeded_rng(seed, _T_TRAIN_VOICE, number, li, vi, u)
                    write_wav(root / "voices" / rel / f"{u:05d}.wav", render_voice(ident, lang, video, r))
                    voices.append(f"{rel}/{u:05d}.wav")
                r = seeded_rng(seed, _T_TRAIN_FACE, number, li, vi)
                numbers = np.sort(r.choice(30_000, size=frames, replace=False))
                for fi, frame in enumerate(numbers):
                    img = render_face(ident, video, seeded_rng(seed, _T_TRAIN_FACE, number, li, vi, fi + 1))
                    write_jpg(root / "faces" / rel / f"{int(frame):09d}.jpg", img)
                    faces.append(f"{rel}/{int(frame):09d}.jpg")
            pick = seeded_rng(seed, _T_PAIRS, number, li).integers(len(faces), size=len(voices))
            lines.extend(f"{v} {faces[int(k)]}\n" for v, k in zip(voices, pick))
            n_voices[lang] += len(voices)
            n_faces[lang] += len(faces)
        (root / f"{lang}_train.txt").write_text("".join(lines))
    return n_voices, n_faces


def _write_test(root: Path, seed: int, lang: str, ids: list[Identity], videos: int,
                per_identity: int) -> int:
    """One language's test media, list and labels: each test identity is the voice side of
    ``per_identity`` trials, half same-person; each identity is also the face side equally often."""
    li = LANGUAGES.index(lang)
    r = seeded_rng(seed, _T_TRIALS, li)
    n = len(ids)
    half = per_identity // 2
    pairs: list[tuple[int, int]] = []
    for i in range(n):
        shift = int(r.integers(n - 1))
        pairs.extend((i, i) for _ in range(half))
        # face identity i + 1 + k (mod n), k cycling over the others: every identity is a face equally often
        pairs.extend((i, (i + 1 + (shift + j) % (n - 1)) % n) for j in range(half))
    order = r.permutation(len(pairs))
    keys: list[str] = []
    seen: set[str] = set()
    while len(keys) < len(pairs):
        key = "".join(r.choice(list(KEY_ALPHABET), 8))
        if key not in seen:
            seen.add(key)
            keys.append(key)
    trials: list[Trial] = []
    labels: dict[str, int] = {}
    contexts = {i: identity_videos(seed, int(ident.name[2:]), li, videos) for i, ident in enumerate(ids)}
    for k, p in enumerate(order):
        vi, fi = pairs[int(p)]
        rv = seeded_rng(seed, _T_TEST_VOICE, li, k)
        rf = seeded_rng(seed, _T_TEST_FACE, li, k)
        voice_video = contexts[vi][int(rv.integers(videos))]
        face_video = contexts[fi][int(rf.integers(videos))]
        write_wav(root / f"{lang}_test" / "voice" / lang / f"{k:05d}.wav",
                   render_voice(ids[vi], lang, voice_video, rv))
        write_jpg(root / f"{lang}_test" / "face" / lang / f"{k:05d}.jpg", render_face(ids[fi], face_video, rf))
        # the lists say voices/ and faces/ while the files sit in voice/ and face/, as in the V3 release
        trials.append(Trial(keys[k], f"{lang}_test/voices/{lang}/{k:05d}.wav",
                            f"{lang}_test/faces/{lang}/{k:05d}.jpg"))
        labels[keys[k]] = int(vi == fi)
    write_trials(root / f"{lang}_test.txt", trials)
    write_labels(labels_path(root / f"{lang}_test.txt"), labels)
    return len(trials)


def _write_readme(root: Path, seed: int, train: list[Identity], test: list[Identity],
                  voices: dict[str, int], faces: dict[str, int], trials: dict[str, int]) -> None:
    counts = "; ".join(f"{lang}: {voices[lang]} train voice clips, {faces[lang]} train face frames, "
                       f"{trials[lang]} test trials" for lang in LANGUAGES)
    text = (
        f"Synthetic face-voice demo data in the MAV-Celeb V3 (English/German) layout, written by fva "
        f"demo-data with seed {seed}. It holds no real people: each identity has hidden traits (gender, "
        f"age and three latent values) that shape both a synthesised voice (16 kHz mono wav: pitch, "
        f"formants, tilt, breathiness, speaking rate) and a drawn 96x96 face (jpg: jaw, width, skin, hair, "
        f"wrinkles, eye spacing), so voices and faces of one identity can be associated, also across "
        f"languages; German shifts every voice in one fixed way. Identities {train[0].name}-{train[-1].name} "
        f"are train, {test[0].name}-{test[-1].name} are test (disjoint). {counts}. Test media sit under "
        f"<Lang>_test/voice/ and <Lang>_test/face/ while the lists say voices/ and faces/, as in the real "
        f"V3 release; <Lang>_test_labels.txt holds the ground truth (1 = same person). The same seed and "
        f"sizes give the same bytes.\n"
    )
    (root / "README.txt").write_text(text)
