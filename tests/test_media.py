"""fva.extract.media: decoding audio, images and face videos, and short failure reasons for bad files."""

from __future__ import annotations

import pickle
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf
import torch
import torchaudio.functional as taf
from PIL import Image

from fva.errors import FvaError
from fva.extract.media import (
    MIN_FACE_SIDE,
    MIN_SECONDS,
    SAMPLE_RATE,
    SILENCE_DBFS,
    MediaError,
    audio_duration_hint,
    audio_problem,
    image_problem,
    load_audio,
    load_face,
    load_image,
    min_audio_samples,
    rms_dbfs,
    video_frames,
)

SPEECH = sorted(Path("/work/shared/samples/speech").glob("*.wav"))
N_VIDEO_FRAMES = 60


# ----------------------------------------------------------------------------------------------- writers

def sine(rate: int, seconds: float, freq: float, channels: int = 1) -> np.ndarray:
    """channels x samples float32 sine (channel k scaled by 1/(k+1) so a bad downmix shows)."""
    t = np.arange(int(round(rate * seconds))) / rate
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([x / (k + 1) for k in range(channels)]).astype(np.float32)


def write_av_audio(path: Path, codec: str, rate: int, seconds: float, freq: float, channels: int = 1) -> Path:
    layout = "mono" if channels == 1 else "stereo"
    x = sine(rate, seconds, freq, channels)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate, layout=layout)
        for start in range(0, x.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(x[:, start:start + 1024]),
                                               format="fltp", layout=layout)
            frame.sample_rate = rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def gray_level(i: int) -> int:
    return 10 + 4 * i  # 10 .. 246, distinct per frame


def write_video(path: Path, n_frames: int = N_VIDEO_FRAMES, size: int = 64) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(n_frames):
            img = np.full((size, size, 3), gray_level(i), np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


def dominant_freq(x: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / rate)[np.argmax(spectrum)])


def noise_jpg(path: Path, size: int = 96) -> Path:
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (size, size + 8, 3), dtype=np.uint8)).save(path, quality=90)
    return path


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return write_video(tmp_path_factory.mktemp("video") / "face.mp4")


def reason(call, *args, **kwargs) -> str:
    with pytest.raises(MediaError) as info:
        call(*args, **kwargs)
    assert type(info.value) is MediaError and not isinstance(info.value, FvaError)
    return str(info.value)


# ----------------------------------------------------------------------------------------------- audio

def test_wav_16k_mono_int16_round_trips_exactly(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.integers(-32768, 32767, 16000, dtype=np.int16)
    sf.write(tmp_path / "a.wav", data, 16000, subtype="PCM_16")
    out = load_audio(tmp_path / "a.wav")
    assert out.dtype == np.float32 and out.ndim == 1
    np.testing.assert_array_equal(out, data.astype(np.float32) / 32768)
    # str paths work too
    np.testing.assert_array_equal(load_audio(str(tmp_path / "a.wav")), out)


def test_wav_float_round_trips_exactly(tmp_path):
    data = np.random.default_rng(2).uniform(-0.9, 0.9, 8000).astype(np.float32)
    sf.write(tmp_path / "f.wav", data, 16000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(tmp_path / "f.wav"), data)


def test_wav_44k_stereo_becomes_16k_mono(tmp_path):
    x = sine(44100, 1.5, 440.0, channels=2)
    x[1] += np.random.default_rng(3).uniform(-0.1, 0.1, x.shape[1]).astype(np.float32)
    sf.write(tmp_path / "s.wav", x.T, 44100, subtype="FLOAT")
    out = load_audio(tmp_path / "s.wav")
    assert out.dtype == np.float32 and out.ndim == 1
    assert abs(len(out) - x.shape[1] * 16000 / 44100) <= 1
    ref = taf.resample(torch.from_numpy(x.mean(axis=0)), 44100, 16000).numpy()
    assert len(ref) == len(out)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    # not just one channel: the averaged signal differs from either channel
    only_left = taf.resample(torch.from_numpy(x[0]), 44100, 16000).numpy()
    assert np.abs(out - only_left).max() > 0.05


def test_wav_other_target_rate(tmp_path):
    sf.write(tmp_path / "a.wav", sine(16000, 1.0, 300.0)[0], 16000, subtype="FLOAT")
    out = load_audio(tmp_path / "a.wav", sample_rate=8000)
    assert len(out) == 8000
    assert dominant_freq(out, 8000) == pytest.approx(300.0, rel=0.02)


def test_flac_round_trips(tmp_path):
    data = np.random.default_rng(4).integers(-20000, 20000, 12345, dtype=np.int16)
    sf.write(tmp_path / "a.flac", data, 16000, subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(tmp_path / "a.flac"), data.astype(np.float32) / 32768)


@pytest.mark.parametrize("name,codec,rate,channels", [
    ("tone.mp3", "mp3", 16000, 1),      # soundfile (libsndfile/mpg123) path
    ("tone.m4a", "aac", 22050, 2),      # PyAV path, downmix and resample
    ("tone.mp4", "aac", 16000, 1),      # audio-only mp4 through PyAV
])
def test_compressed_audio_duration_and_pitch(tmp_path, name, codec, rate, channels):
    seconds, freq = 3.0, 440.0
    path = write_av_audio(tmp_path / name, codec, rate, seconds, freq, channels)
    out = load_audio(path)
    assert out.dtype == np.float32 and out.ndim == 1
    assert len(out) / 16000 == pytest.approx(seconds, rel=0.03)
    assert dominant_freq(out, 16000) == pytest.approx(freq, rel=0.02)
    assert 0.1 < np.abs(out).max() < 1.0
    assert audio_duration_hint(path) == pytest.approx(seconds, rel=0.03)


@pytest.mark.skipif(not SPEECH, reason="no shared speech samples")
def test_real_speech_clips_match_soundfile():
    for path in SPEECH:
        out = load_audio(path)
        ref, rate = sf.read(path, dtype="float32")
        assert rate == 16000 and ref.ndim == 1
        assert out.dtype == np.float32 and out.ndim == 1
        np.testing.assert_array_equal(out, ref)
        assert audio_duration_hint(path) == pytest.approx(len(ref) / 16000)


def test_duration_hint(tmp_path):
    sf.write(tmp_path / "a.wav", np.zeros(24000, np.int16), 16000)
    assert audio_duration_hint(tmp_path / "a.wav") == pytest.approx(1.5)
    assert audio_duration_hint(str(tmp_path / "a.wav")) == pytest.approx(1.5)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "text.m4a").write_text("not audio at all\n" * 10)
    (tmp_path / "text.wav").write_text("not audio at all\n" * 10)
    (tmp_path / "dir.wav").mkdir()
    for bad in ("missing.wav", "empty.wav", "text.m4a", "text.wav", "dir.wav"):
        assert audio_duration_hint(tmp_path / bad) is None


# ----------------------------------------------------------------------------------------------- bad audio

def test_missing_and_empty_audio(tmp_path):
    assert reason(load_audio, tmp_path / "nope.wav") == "file not found"
    (tmp_path / "empty.wav").write_bytes(b"")
    assert reason(load_audio, tmp_path / "empty.wav") == "empty file"
    (tmp_path / "empty.m4a").write_bytes(b"")
    assert reason(load_audio, tmp_path / "empty.m4a") == "empty file"


def test_truncated_wav(tmp_path):
    sf.write(tmp_path / "full.wav", np.zeros(48000, np.int16), 16000, subtype="PCM_16")
    raw = (tmp_path / "full.wav").read_bytes()
    assert len(raw) == 44 + 96000
    (tmp_path / "cut.wav").write_bytes(raw[:len(raw) // 2])
    # libsndfile itself would hand back the shorter signal without complaint
    assert len(sf.read(tmp_path / "cut.wav")[0]) < 48000
    assert reason(load_audio, tmp_path / "cut.wav") == "truncated audio (header says 48000 frames, 23989 present)"
    # stereo: frames, not bytes or samples
    sf.write(tmp_path / "st.wav", np.zeros((1000, 2), np.int16), 16000, subtype="PCM_16")
    raw = (tmp_path / "st.wav").read_bytes()
    (tmp_path / "st_cut.wav").write_bytes(raw[:44 + 400 * 4])
    assert reason(load_audio, tmp_path / "st_cut.wav") == "truncated audio (header says 1000 frames, 400 present)"


def test_wav_with_trailing_chunk_is_not_truncated(tmp_path):
    data = np.arange(-500, 501, dtype=np.int16)  # odd sample count: a pad byte would follow an odd chunk
    sf.write(tmp_path / "a.wav", data, 16000, subtype="PCM_16")
    raw = (tmp_path / "a.wav").read_bytes()
    (tmp_path / "b.wav").write_bytes(raw + b"LIST\x04\x00\x00\x00INFO")
    np.testing.assert_array_equal(load_audio(tmp_path / "b.wav"), data.astype(np.float32) / 32768)


def test_truncated_flac(tmp_path):
    data = np.random.default_rng(5).integers(-20000, 20000, 48000, dtype=np.int16)
    sf.write(tmp_path / "full.flac", data, 16000, subtype="PCM_16")
    raw = (tmp_path / "full.flac").read_bytes()
    (tmp_path / "cut.flac").write_bytes(raw[:len(raw) // 2])
    # libsndfile stops with a decoder error part-way; the reason says how far it got
    assert re.fullmatch(r"cannot decode: .+ \(after \d+ of 48000 frames\)", reason(load_audio, tmp_path / "cut.flac"))


def test_text_as_audio(tmp_path):
    (tmp_path / "text.wav").write_text("this is not a wav file\n" * 20)
    assert reason(load_audio, tmp_path / "text.wav").startswith("cannot decode: ")
    (tmp_path / "text.m4a").write_text("this is not an m4a file\n" * 20)
    assert reason(load_audio, tmp_path / "text.m4a").startswith("cannot decode: ")


def test_video_only_file_has_no_audio(video):
    assert reason(load_audio, video) == "no audio stream"


def test_zero_sample_wav(tmp_path):
    sf.write(tmp_path / "z.wav", np.zeros(0, np.int16), 16000, subtype="PCM_16")
    assert reason(load_audio, tmp_path / "z.wav") == "no audio samples"


def test_media_error_pickles():
    err = MediaError("truncated audio (header says 48000 frames, 12000 present)")
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is MediaError and str(back) == str(err) and back.reason == err.reason
    assert back.args == err.args
    assert not isinstance(err, FvaError)


# ----------------------------------------------------------------------------------------------- images

def test_jpg_matches_pillow(tmp_path):
    path = noise_jpg(tmp_path / "a.jpg")
    out = load_image(path)
    assert out.dtype == np.uint8 and out.shape == (96, 104, 3)
    np.testing.assert_array_equal(out, np.asarray(Image.open(path).convert("RGB")))


def test_png_rgba_and_gray_jpg_become_rgb(tmp_path):
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., 0], rgba[..., 1], rgba[..., 2], rgba[..., 3] = 200, 100, 50, 128
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = load_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (20, 30, 3)
    assert (out == [200, 100, 50]).all()

    gray = np.tile(np.arange(0, 250, 10, dtype=np.uint8), (16, 1))
    Image.fromarray(gray, "L").save(tmp_path / "g.jpg", quality=95)
    out = load_image(tmp_path / "g.jpg")
    assert out.dtype == np.uint8 and out.shape == (16, 25, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert np.abs(out[..., 0].astype(int) - gray).max() <= 8

    Image.fromarray(np.full((8, 9, 4), 60, np.uint8), "CMYK").save(tmp_path / "c.jpg")
    assert load_image(tmp_path / "c.jpg").shape == (8, 9, 3)


def test_bad_images(tmp_path):
    (tmp_path / "text.jpg").write_text("definitely not a jpeg\n")
    assert reason(load_image, tmp_path / "text.jpg") == "not an image (cannot identify image file)"
    raw = noise_jpg(tmp_path / "full.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(raw[:len(raw) // 2])
    assert reason(load_image, tmp_path / "cut.jpg") == "truncated image"
    assert not getattr(__import__("PIL.ImageFile").ImageFile, "LOAD_TRUNCATED_IMAGES")
    assert reason(load_image, tmp_path / "missing.jpg") == "file not found"
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert reason(load_image, tmp_path / "empty.jpg") == "empty file"


# ----------------------------------------------------------------------------------------------- video

def test_video_frames_every_25th(video):
    frames = video_frames(video)
    assert [i for i, _ in frames] == [0, 25, 50]
    for i, img in frames:
        assert img.dtype == np.uint8 and img.shape == (64, 64, 3)
        assert abs(float(img.mean()) - gray_level(i)) < 3, (i, img.mean())
    assert [i for i, _ in video_frames(str(video), step=20)] == [0, 20, 40]
    assert len(video_frames(video, step=1)) == N_VIDEO_FRAMES


def test_load_face_dispatch(tmp_path, video):
    jpg = noise_jpg(tmp_path / "f.jpg")
    [(idx, img)] = load_face(jpg)
    assert idx == -1 and img.shape == (96, 104, 3)
    [(idx, _)] = load_face(jpg, frame=0)
    assert idx == 0
    assert [i for i, _ in load_face(video)] == [0, 25, 50]
    assert [i for i, _ in load_face(video, step=30)] == [0, 30]
    [(idx, img)] = load_face(video, frame=33)
    assert idx == 33 and abs(float(img.mean()) - gray_level(33)) < 3
    assert reason(load_face, video, frame=100) == f"video has {N_VIDEO_FRAMES} frames, frame 100 requested"


def test_bad_videos(tmp_path):
    write_av_audio(tmp_path / "audio_only.mp4", "aac", 16000, 0.5, 440.0)
    assert reason(video_frames, tmp_path / "audio_only.mp4") == "no video frames"
    # a video stream with no frames in it (mp4/mov drop an empty track; avi keeps it)
    with av.open(str(tmp_path / "zero.avi"), "w") as container:
        stream = container.add_stream("mpeg4", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
    with av.open(str(tmp_path / "zero.avi")) as container:
        assert len(container.streams.video) == 1
    assert reason(video_frames, tmp_path / "zero.avi") == "no video frames"
    assert reason(load_face, tmp_path / "zero.avi") == "no video frames"
    # an mp4 video track whose packets are garbage: decoding fails, reported with FFmpeg's message
    with av.open(str(tmp_path / "junk.mp4"), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        container.start_encoding()
        for i in range(3):
            packet = av.Packet(bytes(50))
            packet.stream, packet.pts, packet.dts, packet.time_base = stream, i, i, Fraction(1, 25)
            container.mux(packet)
    assert reason(video_frames, tmp_path / "junk.mp4").startswith("cannot decode: ")
    (tmp_path / "empty.mp4").write_bytes(b"")
    assert reason(video_frames, tmp_path / "empty.mp4") == "empty file"
    assert reason(load_face, tmp_path / "empty.mp4") == "empty file"
    assert reason(video_frames, tmp_path / "missing.mp4") == "file not found"
    (tmp_path / "text.mp4").write_text("not a video\n" * 10)
    assert reason(video_frames, tmp_path / "text.mp4").startswith("cannot decode: ")
    with pytest.raises(ValueError):
        video_frames(tmp_path / "audio_only.mp4", step=0)


# ------------------------------------------------------------------------------- media that carries no identity

def at_dbfs(x: np.ndarray, dbfs: float) -> np.ndarray:
    """``x`` (its DC offset removed) scaled to an RMS of ``dbfs``, in float64."""
    x = np.asarray(x, np.float64) - np.mean(x)
    return x * (10 ** (dbfs / 20) / np.sqrt(np.mean(x ** 2)))


def test_floors_are_the_documented_ones():
    from fva.extract.encoders.base import Encoder

    assert (MIN_SECONDS, SILENCE_DBFS, MIN_FACE_SIDE, SAMPLE_RATE) == (0.5, -60.0, 16, 16000)
    assert Encoder.min_seconds == MIN_SECONDS and Encoder.min_face_side == MIN_FACE_SIDE and Encoder.min_samples == 0


def test_minimum_duration_is_the_larger_of_receptive_field_and_seconds():
    assert min_audio_samples() == 8000
    assert min_audio_samples(400) == 8000  # WavLM's receptive field is far below half a second
    assert min_audio_samples(12001) == 12001  # a receptive field above it wins
    assert min_audio_samples(0, 1.0) == 16000 and min_audio_samples(0, 1 / 3) == 5334  # an encoder may raise it
    assert min_audio_samples(0, 0.25, rate=8000) == 2000


def test_too_short_boundary_and_reason():
    rng = np.random.default_rng(0)
    clip = at_dbfs(rng.standard_normal(8000), -30).astype(np.float32)
    assert audio_problem(clip, 8000) is None  # exactly the minimum: enough
    assert audio_problem(clip[:7999], 8000) == ("too short: 0.50 s (7999 samples at 16 kHz), the encoder needs at "
                                                "least 0.50 s (8000 samples)")
    assert audio_problem(np.zeros(800, np.float32), min_audio_samples()) == (
        "too short: 0.05 s (800 samples at 16 kHz), the encoder needs at least 0.50 s (8000 samples)")
    assert audio_problem(clip[:0], 8000).startswith("too short: 0.00 s (0 samples")


def test_silence_floor_boundary_and_reason():
    rng = np.random.default_rng(1)
    noise = rng.standard_normal(3 * SAMPLE_RATE)
    above, below = at_dbfs(noise, SILENCE_DBFS + 0.01), at_dbfs(noise, SILENCE_DBFS - 0.01)
    assert abs(rms_dbfs(above) - (SILENCE_DBFS + 0.01)) < 1e-9
    assert audio_problem(above, 8000) is None
    assert audio_problem(below, 8000) == "silent: RMS -60.0 dBFS, below the -60 dBFS floor"
    assert audio_problem(at_dbfs(noise, -75.3), 8000) == "silent: RMS -75.3 dBFS, below the -60 dBFS floor"
    assert audio_problem(np.zeros(3 * SAMPLE_RATE, np.float32), 8000) == \
        "silent: RMS -inf dBFS, below the -60 dBFS floor"
    assert rms_dbfs(np.zeros(0)) == float("-inf")
    assert rms_dbfs(np.full(100, 1.0)) == float("-inf") and abs(rms_dbfs(np.tile([1.0, -1.0], 50))) < 1e-12


def test_dc_offset_is_removed_before_the_silence_floor():
    rng = np.random.default_rng(2)
    dc = np.full(SAMPLE_RATE, 0.5, np.float32)  # a constant: no signal at all, however loud its offset
    assert audio_problem(dc, 8000) == "silent: RMS -inf dBFS, below the -60 dBFS floor"
    hum = (0.25 + at_dbfs(rng.standard_normal(SAMPLE_RATE), -70)).astype(np.float32)  # -12 dBFS of offset
    assert audio_problem(hum, 8000).startswith("silent: RMS -70.")
    quiet = (-0.25 + at_dbfs(rng.standard_normal(SAMPLE_RATE), -50)).astype(np.float32)
    assert audio_problem(quiet, 8000) is None and abs(rms_dbfs(quiet) + 50) < 0.01


def test_digitally_silent_wav_decodes_and_is_silent(tmp_path):
    sf.write(tmp_path / "s.wav", np.zeros(3 * SAMPLE_RATE, np.int16), SAMPLE_RATE, subtype="PCM_16")
    assert audio_problem(load_audio(tmp_path / "s.wav"), min_audio_samples()).startswith("silent: RMS -inf dBFS")
    sf.write(tmp_path / "c.wav", np.full(SAMPLE_RATE, 1000, np.int16), SAMPLE_RATE, subtype="PCM_16")
    assert audio_problem(load_audio(tmp_path / "c.wav"), min_audio_samples()).startswith("silent: ")


@pytest.mark.skipif(not SPEECH, reason="no shared speech samples")
def test_real_speech_is_accepted_also_very_quiet(tmp_path):
    for path in SPEECH:
        x = load_audio(path)
        assert audio_problem(x, min_audio_samples()) is None, path
    x = load_audio(SPEECH[0])
    sf.write(tmp_path / "quiet.wav", at_dbfs(x, -50), SAMPLE_RATE, subtype="PCM_16")  # 16 bits keep -50 dBFS speech
    quiet = load_audio(tmp_path / "quiet.wav")
    assert abs(rms_dbfs(quiet) + 50) < 0.1 and audio_problem(quiet, min_audio_samples()) is None
    assert audio_problem(at_dbfs(x, -65), min_audio_samples()).startswith("silent: RMS -65.0 dBFS")


def test_image_size_floor_boundary_and_reason():
    assert image_problem(np.zeros((MIN_FACE_SIDE, MIN_FACE_SIDE, 3), np.uint8)) is None
    assert image_problem(np.zeros((16, 250, 3), np.uint8)) is None  # a thin strip still has 16 on each side
    assert image_problem(np.zeros((10, 10, 3), np.uint8)) == "too small: 10 x 10 pixels, faces need at least 16 on " \
                                                             "each side"
    assert image_problem(np.zeros((30, 15, 3), np.uint8)) == "too small: 15 x 30 pixels, faces need at least 16 on " \
                                                             "each side"  # width x height
    assert image_problem(np.zeros((100, 15, 3), np.uint8), min_side=16).startswith("too small: 15 x 100 pixels")
    assert image_problem(np.zeros((30, 20, 3), np.uint8), min_side=32) == \
        "too small: 20 x 30 pixels, faces need at least 32 on each side"  # an encoder may raise it
