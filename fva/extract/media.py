"""Decode audio, images and face-track videos into numpy arrays for stage-1 extraction.

Every decoding failure raises :class:`MediaError` whose ``str`` is a short reason ("empty file",
"truncated image", ...), so a data-loader worker can record the failure next to the file and move on.
``MediaError`` is not an :class:`fva.errors.FvaError`: a bad clip is data, not something the user mistyped.

Audio goes through soundfile (libsndfile) where it can and PyAV (bundled FFmpeg) otherwise; images
through Pillow; videos through PyAV. torch/torchaudio are imported only when a clip needs resampling.

Media that decodes but cannot carry an identity is refused as well, by :func:`audio_problem` and
:func:`image_problem` (one owner of the floors below, applied by extraction's decoding and so by ``fva extract``,
``fva verify``, ``fva serve`` and the Python API): a voice clip shorter than :data:`MIN_SECONDS` (or than the
encoder's receptive field), a silent one (RMS under :data:`SILENCE_DBFS`), a face image under
:data:`MIN_FACE_SIDE` pixels on a side.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image, UnidentifiedImageError

from fva.environment import require_torchaudio

__all__ = [
    "MIN_FACE_SIDE",
    "MIN_SECONDS",
    "MediaError",
    "SAMPLE_RATE",
    "SILENCE_DBFS",
    "VIDEO_EXTS",
    "audio_duration_hint",
    "audio_problem",
    "image_problem",
    "load_audio",
    "load_face",
    "load_image",
    "min_audio_samples",
    "rms_dbfs",
    "video_frames",
]

#: The rate every voice encoder reads (Hz): :func:`load_audio` resamples to it.
SAMPLE_RATE = 16000
#: Voice shorter than this (seconds) is refused, whatever the encoder's receptive field: half a second is one or
#: two syllables, where a speaker embedding is dominated by what is said rather than by who says it (speaker
#: verification errors grow steeply below about two seconds of speech). An encoder may raise it
#: (:attr:`fva.extract.encoders.base.Encoder.min_seconds`), and the larger of it and the encoder's ``min_samples``
#: applies (:func:`min_audio_samples`).
MIN_SECONDS = 0.5
#: A clip whose RMS, after removing its DC offset, is below this (dB relative to full scale 1.0 of float audio)
#: is silent: digital silence reads -inf, a muted 16-bit input's dither about -100 dBFS, while speech recorded
#: even at a low gain sits around -40 to -25 dBFS, so the floor keeps 10 to 20 dB under the quietest usable
#: speech. It is an energy floor, not a voice activity detector: room noise without speech passes it.
SILENCE_DBFS = -60.0
#: Face images (and face-track frames) with a side shorter than this (pixels) are refused. Deliberately low: at
#: 16 pixels a face is at the edge of what people and face recognisers can still identify (eyes a pixel or two
#: across), while real face crops (dataset crops 100 to 250 pixels, detector crops from video 40 and up) and the
#: demo's 96-pixel faces are far above it; it refuses thumbnails and icons, not small faces.
MIN_FACE_SIDE = 16

#: Extensions sent straight to PyAV (libsndfile cannot read them).
AV_AUDIO_EXTS = frozenset({".m4a", ".aac", ".mp4", ".webm", ".mkv", ".mov", ".avi", ".wma", ".3gp"})
#: Extensions :func:`load_face` treats as face-track videos.
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mkv", ".webm", ".mov"})
#: libsndfile formats whose header frame count is exact (compressed streams only estimate it).
_EXACT_LENGTH_FORMATS = frozenset({"WAV", "WAVEX", "RF64", "W64", "AIFF", "AU", "CAF", "FLAC"})
_BLOCK_FRAMES = 1 << 14


class MediaError(Exception):
    """A media file that cannot be decoded; ``str(err)`` is the short reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    def __str__(self) -> str:
        return self.reason

    def __reduce__(self):
        return (type(self), (self.reason,))


# --------------------------------------------------------------------------------------------- helpers

def _check_file(path: Path) -> None:
    """Raise MediaError for a missing, non-regular, unreadable or zero-byte file."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise MediaError("file not found") from None
    except OSError as err:
        raise MediaError(f"cannot read: {err.strerror or err}") from None
    if not path.is_file():
        raise MediaError("not a file")
    if not os.access(path, os.R_OK):
        raise MediaError("cannot read: permission denied")
    if st.st_size == 0:
        raise MediaError("empty file")


def _ffmpeg_reason(err: Exception) -> str:
    """FFmpeg's message without errno and file name."""
    msg = getattr(err, "strerror", None) or str(err)
    return f"cannot decode: {msg}"


def _sndfile_reason(err: Exception) -> str:
    msg = str(getattr(err, "error_string", "") or err).strip()
    if msg.startswith("Error : "):
        msg = msg[len("Error : "):]
    return f"cannot decode: {msg.rstrip('.')}"


def _riff_data_extent(path: Path) -> tuple[int, int, int] | None:
    """(data offset, data size in bytes, block align) from a RIFF/RIFX/RF64 wav header.

    None when the file is not such a wav, the header cannot be parsed, or the data size is a streaming
    placeholder (0 or 0xFFFFFFFF): then there is nothing to check.
    """
    with path.open("rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX", b"RF64"):
            return None
        endian = ">" if head[:4] == b"RIFX" else "<"
        ds64_data_size = None
        block_align = 0
        while True:
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            cid, size = chunk[:4], struct.unpack(endian + "I", chunk[4:])[0]
            if cid == b"ds64":
                body = fh.read(min(size, 28))
                if len(body) >= 16:
                    ds64_data_size = struct.unpack("<Q", body[8:16])[0]
                fh.seek(size - len(body) + (size & 1), os.SEEK_CUR)
            elif cid == b"fmt ":
                body = fh.read(min(size, 16))
                if len(body) >= 14:
                    block_align = struct.unpack(endian + "H", body[12:14])[0]
                fh.seek(size - len(body) + (size & 1), os.SEEK_CUR)
            elif cid == b"data":
                if size == 0xFFFFFFFF and ds64_data_size is not None:
                    size = ds64_data_size
                if size in (0, 0xFFFFFFFF):
                    return None
                return fh.tell(), size, block_align
            else:
                fh.seek(size + (size & 1), os.SEEK_CUR)


def _check_wav_complete(path: Path) -> None:
    """Raise MediaError when a wav header promises more data than the file holds.

    libsndfile clamps the frame count to the bytes present and returns the short signal silently, so
    the data-chunk size is compared with the file size here.
    """
    try:
        extent = _riff_data_extent(path)
    except (OSError, struct.error):
        return
    if extent is None:
        return
    offset, size, align = extent
    present = max(path.stat().st_size - offset, 0)
    if present >= size:
        return
    if align > 0:
        raise MediaError(f"truncated audio (header says {size // align} frames, {present // align} present)")
    raise MediaError(f"truncated audio (header says {size} bytes, {present} present)")


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    """(frames x channels float32, rate) through libsndfile. Raises sf.LibsndfileError when it cannot open."""
    with sf.SoundFile(str(path)) as f:
        rate, expected, fmt = f.samplerate, f.frames, f.format
        blocks, got = [], 0
        while True:
            try:
                block = f.read(_BLOCK_FRAMES, dtype="float32", always_2d=True)
            except (sf.LibsndfileError, RuntimeError) as err:
                reason = _sndfile_reason(err)
                if expected > 0:
                    reason += f" (after {got} of {expected} frames)"
                raise MediaError(reason) from None
            if len(block) == 0:
                break
            blocks.append(block)
            got += len(block)
            if len(block) < _BLOCK_FRAMES:
                break
    if fmt in _EXACT_LENGTH_FORMATS and 0 < got < expected:
        raise MediaError(f"truncated audio (header says {expected} frames, {got} decoded)")
    data = np.concatenate(blocks) if blocks else np.zeros((0, 1), np.float32)
    return data, rate


def _read_pyav(path: Path) -> tuple[np.ndarray, int]:
    """(frames x channels float32, rate) of the first audio stream through PyAV."""
    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise MediaError(_ffmpeg_reason(err)) from None
    with container:
        if not container.streams.audio:
            raise MediaError("no audio stream")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")  # keep layout and rate, planar float32
        chunks: list[np.ndarray] = []
        rate = 0
        try:
            for frame in container.decode(stream):
                rate = rate or frame.sample_rate
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
        except av.FFmpegError as err:
            raise MediaError(_ffmpeg_reason(err)) from None
    if not chunks:
        return np.zeros((0, 1), np.float32), rate or stream.rate or 0
    data = np.concatenate(chunks, axis=1).T  # channels x frames -> frames x channels
    return np.ascontiguousarray(data, dtype=np.float32), rate


def _resample(x: np.ndarray, orig: int, new: int) -> np.ndarray:
    import torch
    require_torchaudio()  # one clear line instead of a ctypes traceback from a torchaudio of another torch
    import torchaudio.functional as taf

    y = taf.resample(torch.from_numpy(np.ascontiguousarray(x)), int(orig), int(new))
    return y.numpy().astype(np.float32, copy=False)


# --------------------------------------------------------------------------------------------- public API

def load_audio(path: str | Path, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode an audio file to 1-D float32 mono at ``sample_rate`` (channels averaged).

    wav/flac/ogg/mp3 go through soundfile, anything it cannot open (m4a, aac, mp4, webm, ...) through
    PyAV. Raises :class:`MediaError` for missing, empty, truncated or undecodable files.
    """
    path = Path(path)
    _check_file(path)
    _check_wav_complete(path)
    data = rate = None
    if path.suffix.lower() not in AV_AUDIO_EXTS:
        try:
            data, rate = _read_soundfile(path)
        except sf.LibsndfileError:  # cannot open: not a libsndfile format, let FFmpeg try
            data = None
    if data is None:
        data, rate = _read_pyav(path)
    if data.size == 0:
        raise MediaError("no audio samples")
    if not rate or rate <= 0:
        raise MediaError("unknown sample rate")
    mono = data.mean(axis=1, dtype=np.float32) if data.shape[1] > 1 else data[:, 0]
    if rate != sample_rate:
        mono = _resample(mono, rate, sample_rate)
    return np.ascontiguousarray(mono, dtype=np.float32)


def load_image(path: str | Path) -> np.ndarray:
    """Fully decode an image to uint8 RGB (H x W x 3); grayscale/RGBA/CMYK/palette are converted."""
    path = Path(path)
    _check_file(path)
    try:
        with Image.open(path) as im:
            im.load()  # full decode: a truncated file fails here
            rgb = im if im.mode == "RGB" else im.convert("RGB")
            arr = np.array(rgb, dtype=np.uint8)
    except UnidentifiedImageError:
        raise MediaError("not an image (cannot identify image file)") from None
    except Image.DecompressionBombError as err:
        raise MediaError(f"cannot decode: {err}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        msg = str(err)
        if "truncated" in msg or isinstance(err, EOFError):
            raise MediaError("truncated image") from None
        raise MediaError(f"cannot decode: {msg}") from None
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
        raise MediaError(f"cannot decode: unexpected image shape {arr.shape}")
    return arr


def video_frames(path: str | Path, step: int = 25) -> list[tuple[int, np.ndarray]]:
    """Decode a video; return (frame_index, RGB uint8 H x W x 3) for frames 0, step, 2*step, ...

    The index counts every decoded frame of the first video stream; skipped frames are decoded (the
    codec needs them) but never converted.
    """
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    return _decode_video(Path(path), lambda i: i % step == 0, stop_after=None)


def _decode_video(path: Path, keep, stop_after: int | None) -> list[tuple[int, np.ndarray]]:
    _check_file(path)
    try:
        container = av.open(str(path))
    except av.FFmpegError as err:
        raise MediaError(_ffmpeg_reason(err)) from None
    out: list[tuple[int, np.ndarray]] = []
    decoded = 0
    with container:
        if not container.streams.video:
            raise MediaError("no video frames")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        try:
            for index, frame in enumerate(container.decode(stream)):
                decoded = index + 1
                if keep(index):
                    out.append((index, frame.to_ndarray(format="rgb24")))
                if stop_after is not None and index >= stop_after:
                    break
        except av.FFmpegError as err:
            raise MediaError(_ffmpeg_reason(err)) from None
    if decoded == 0:
        raise MediaError("no video frames")
    if stop_after is not None and not out:
        raise MediaError(f"video has {decoded} frames, frame {stop_after} requested")
    return out


def load_face(path: str | Path, frame: int | None = None, step: int = 25) -> list[tuple[int, np.ndarray]]:
    """Face image(s) as a list of (frame_index, RGB uint8 image).

    An image gives ``[(frame, img)]`` (``-1`` when ``frame`` is None). A video (.mp4/.avi/.mkv/.webm/.mov)
    gives :func:`video_frames` (every ``step``-th frame), or only frame ``frame`` when it is given.
    """
    path = Path(path)
    if path.suffix.lower() in VIDEO_EXTS:
        if frame is None:
            return video_frames(path, step)
        if frame < 0:
            raise ValueError(f"frame must be >= 0, got {frame}")
        return _decode_video(path, lambda i: i == frame, stop_after=frame)
    return [(frame if frame is not None else -1, load_image(path))]


def min_audio_samples(min_samples: int = 0, min_seconds: float = MIN_SECONDS, rate: int = SAMPLE_RATE) -> int:
    """The fewest samples (at ``rate``) an encoder takes: the larger of its receptive field ``min_samples`` and
    ``min_seconds`` (:data:`MIN_SECONDS` unless the encoder raises it)."""
    return max(int(min_samples), math.ceil(min_seconds * rate - 1e-9))


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS of ``samples`` after removing their mean (the DC offset), in dB relative to full scale 1.0; -inf for a
    constant signal."""
    x = np.asarray(samples, dtype=np.float64)
    if x.size == 0:
        return -math.inf
    power = float(np.mean(np.square(x - x.mean())))
    return 10.0 * math.log10(power) if power > 0 else -math.inf


def audio_problem(samples: np.ndarray, min_samples: int, rate: int = SAMPLE_RATE) -> str | None:
    """Why decoded mono audio cannot carry a speaker's identity, as one line, or None when it can: shorter than
    ``min_samples`` (from :func:`min_audio_samples`), or silent (RMS below :data:`SILENCE_DBFS`)."""
    n = len(samples)
    if n < min_samples:
        return (f"too short: {n / rate:.2f} s ({n} samples at {rate / 1000:g} kHz), the encoder needs at least "
                f"{min_samples / rate:.2f} s ({min_samples} samples)")
    level = rms_dbfs(samples)
    if level < SILENCE_DBFS:
        return f"silent: RMS {level:.1f} dBFS, below the {SILENCE_DBFS:g} dBFS floor"
    return None


def image_problem(image: np.ndarray, min_side: int = MIN_FACE_SIDE) -> str | None:
    """Why a decoded image (H x W x C) cannot carry a face's identity, as one line, or None when it can: a side
    shorter than ``min_side`` pixels (:data:`MIN_FACE_SIDE` unless the encoder raises it)."""
    height, width = image.shape[:2]
    if min(height, width) < min_side:
        return f"too small: {width} x {height} pixels, faces need at least {min_side} on each side"
    return None


def audio_duration_hint(path: str | Path) -> float | None:
    """Duration in seconds read from the header (no decoding), or None when unknown. Never raises."""
    path = Path(path)
    try:
        if not path.is_file() or path.stat().st_size == 0:
            return None
    except OSError:
        return None
    if path.suffix.lower() not in AV_AUDIO_EXTS:
        try:
            info = sf.info(str(path))
            if info.frames > 0 and info.samplerate > 0:
                return info.frames / info.samplerate
        except Exception:
            pass
    try:
        with av.open(str(path)) as container:
            if container.duration and container.duration > 0:
                return container.duration / av.time_base
            for stream in container.streams.audio:
                if stream.duration and stream.time_base:
                    return float(stream.duration * stream.time_base)
    except Exception:
        return None
    return None
