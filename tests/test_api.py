"""The Python API (:class:`fva.api.FaceVoiceVerifier`) and the demo page (`fva serve`) on a small real
experiment: demo media and demo encoder checkpoints through `fva extract` and `fva train-head`
(:func:`fva.synth.testing.tiny_experiment`).
The API's distances are `fva score`'s for the same pairs, its feature rows `fva extract`'s."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_user_error
from fva.data.datasets import build_manifest
from fva.data.mavceleb import media_key
from fva.data.trials import read_trials
from fva.errors import FvaError
from fva.synth.testing import run_cli

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module", autouse=True)
def models_home(tmp_path_factory):
    """speechbrain's links to the demo checkpoints go under the test's temporary folder, not the home's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FVA_MODELS", str(tmp_path_factory.getbasetemp() / "fva-models"))
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, models_home):
    from fva.synth.testing import tiny_experiment

    return tiny_experiment(tmp_path_factory.mktemp("api"), folds=2)


@pytest.fixture(scope="module")
def verifier(tiny):
    from fva.api import FaceVoiceVerifier

    return FaceVoiceVerifier.from_experiment(tiny.exp)


@pytest.fixture(scope="module")
def pairs(tiny):
    """Test trials of both languages (with a face and a voice that recur) and their media files."""
    on_disk = {r.key: tiny.data / r.path for r in build_manifest("mavceleb-v3", tiny.data, subset="test")[0].records}
    trials = [t for lang in ("English", "German") for t in read_trials(tiny.data / f"{lang}_test.txt")[:5]]
    return trials, [on_disk[media_key(t.face)] for t in trials], [on_disk[media_key(t.voice)] for t in trials]


def calibrated(verifier) -> bool:
    return all("calibration" in payload for payload in verifier.folds.payloads)


def test_distances_are_fva_scores_and_verify_pair_wraps_the_api(tiny, verifier, pairs):
    from fva.api import verify_pair
    from fva.heads.scoring import score_trial_list

    trials, faces, voices = pairs
    scored = {**score_trial_list(tiny.exp, tiny.data / "English_test.txt", tiny.cache),
              **score_trial_list(tiny.exp, tiny.data / "German_test.txt", tiny.cache)}
    results = verifier.verify_batch(faces, voices)
    np.testing.assert_allclose([r.distance for r in results], [scored[t.key] for t in trials], rtol=0, atol=1e-6)
    assert len({round(r.distance, 6) for r in results}) > 1  # a real spread, not one constant
    threshold = np.mean([json.loads((tiny.exp / f"fold{f}" / "metrics.json").read_text())["threshold"]
                         for f in range(2)])
    for r in results:
        assert r.folds == 2 and r.threshold == pytest.approx(threshold)
        assert r.same_person == (r.distance <= r.threshold)
        assert (r.llr is None and r.p_same is None) == (not calibrated(verifier))  # trained with calibration or not
    pair, alone = verify_pair(tiny.exp, faces[0], voices[0]), asdict(results[0])
    assert pair.keys() == alone.keys()
    for key, value in alone.items():  # a batch of one: float32 noise in the distance (and what maps it)
        exact = value is None or isinstance(value, (bool, int))
        assert pair[key] == (value if exact else pytest.approx(value, abs=1e-6))
    out = run_cli("verify", "--exp", tiny.exp, faces[0], voices[0], "--device", "cpu")
    assert out.exit_code == 0 and f"distance {scored[trials[0].key]:.4f}" in out.output, out.output


def test_encoders_are_built_once_per_verifier(tiny, pairs, monkeypatch):
    from fva.api import FaceVoiceVerifier
    from fva.extract.encoders.base import get_encoder_class

    built = Counter()
    for name in tiny.weights:
        cls = get_encoder_class(name)
        original = cls.__init__

        def counting(self, *args, _original=original, _name=name, **kwargs):
            built[_name] += 1
            _original(self, *args, **kwargs)

        monkeypatch.setattr(cls, "__init__", counting)
    _, faces, voices = pairs
    v = FaceVoiceVerifier.from_experiment(tiny.exp)
    v.verify(faces[0], voices[0])
    v.verify(faces[1], voices[1])
    v.verify_batch(faces, voices)
    v.embed_face(faces[0])
    v.embed_voice(voices[0])
    assert built == {name: 1 for name in tiny.weights}


def test_verify_batch_equals_verify_one_by_one(verifier, pairs):
    _, faces, voices = pairs
    faces, voices = faces + [faces[0]], voices + [voices[3]]  # a face again, with another voice
    batch = verifier.verify_batch(faces, voices)
    single = [verifier.verify(f, v) for f, v in zip(faces, voices)]
    np.testing.assert_allclose([b.distance for b in batch], [s.distance for s in single], rtol=0, atol=1e-6)
    assert [b.same_person for b in batch] == [s.same_person for s in single]
    assert verifier.verify_batch([], []) == []
    with pytest.raises(FvaError, match="2 faces and 1 voices"):
        verifier.verify_batch(faces[:2], voices[:1])


def test_embeddings_are_the_extracted_rows_through_each_fold_head(tiny, verifier, pairs):
    from fva.extract.cache import open_cache
    from fva.heads.trialset import embed_rows

    _, faces, voices = pairs
    for modality, path, encoder in (("voice", voices[0], "speaker-ecapa"), ("face", faces[0], "vit-age-gender")):
        emb = verifier.embed_voice(path) if modality == "voice" else verifier.embed_face(path)
        with open_cache(tiny.cache / "mavceleb-v3" / "test-full" / encoder) as table:
            key = media_key(str(path.relative_to(tiny.data)))
            row = int(table.rows_by_key()[key][0])
            cached, dim = table.rows(np.array([row]))[0], table.dim
            extras = {name: float(values[row]) for name, values in table.extras.items()}
        assert emb.modality == modality and emb.features.shape == (dim,) and emb.frames == 1
        assert emb.head.shape == (2, 8)  # two fold models, embedding_dim 8
        np.testing.assert_allclose(emb.features, cached, rtol=2e-3, atol=1e-3)  # float16 rounding flips aside
        assert np.mean(emb.features == cached) > 0.99  # the cache's own dtype rounding, replicated
        assert emb.extras == pytest.approx(extras, abs=1e-4)
        for f, model in enumerate(verifier.folds.models):
            np.testing.assert_allclose(emb.head[f], embed_rows(model, modality, emb.features[None])[0].numpy(),
                                       rtol=1e-6, atol=1e-6)


def test_nearest_identities_rank_the_training_prototypes(verifier, pairs):
    _, faces, voices = pairs
    identities, prototypes = verifier.prototypes("face")
    assert identities == ["id0001", "id0002", "id0003", "id0004"] and prototypes.shape == (2, 4, 8)
    emb = verifier.embed_face(faces[0])
    nearest = verifier.nearest_identities(emb, k=3)
    head = emb.head / np.linalg.norm(emb.head, axis=1, keepdims=True)
    expected = {i: float(np.mean([head[f] @ prototypes[f, n] for f in range(2)])) for n, i in enumerate(identities)}
    assert [i for i, _ in nearest] == sorted(expected, key=lambda i: -expected[i])[:3]
    assert [c for _, c in nearest] == pytest.approx([expected[i] for i, _ in nearest])


def test_other_weights_than_trained_on_are_one_line(tiny, pairs):
    from fva.api import FaceVoiceVerifier
    from fva.synth.checkpoints import write_demo_speaker_ecapa

    other = write_demo_speaker_ecapa(tiny.base / "other-ecapa", seed=5)
    with pytest.raises(FvaError) as err:
        FaceVoiceVerifier.from_experiment(tiny.exp, weights={"speaker-ecapa": str(other)})
    assert "are not the ones" in str(err.value) and "\n" not in str(err.value)
    _, faces, voices = pairs
    result = run_cli("verify", "--exp", tiny.exp, faces[0], voices[0], "--weights", f"speaker-ecapa={other}")
    assert_user_error(result, "speaker-ecapa: weights", "are not the ones", "pass the same weights")


def test_media_that_cannot_be_decoded_is_one_line_naming_the_file(tiny, verifier, pairs):
    from fva.api import MediaUnreadable

    _, faces, voices = pairs
    text = tiny.base / "notes.jpg"
    text.write_text("not an image")
    with pytest.raises(MediaUnreadable, match=re.escape(str(text.resolve()))):
        verifier.verify(text, voices[0])
    result = run_cli("verify", "--exp", tiny.exp, faces[0], tiny.base / "missing.wav")
    assert_user_error(result, "missing.wav")


def no_identity_media(folder: Path) -> dict[str, Path]:
    """A 0.05 s and a 3 s silent wav and a 10 x 10 face image: they decode, but carry no identity."""
    import soundfile as sf
    from PIL import Image

    paths = {"short": folder / "short.wav", "silent": folder / "silent.wav", "small": folder / "small.jpg"}
    sf.write(paths["short"], np.zeros(800, np.int16), 16000, subtype="PCM_16")
    sf.write(paths["silent"], np.zeros(48000, np.int16), 16000, subtype="PCM_16")
    Image.new("RGB", (10, 10), (180, 140, 120)).save(paths["small"])
    return paths


NO_IDENTITY = {"short": "too short: 0.05 s (800 samples at 16 kHz), the encoder needs at least 0.50 s (8000 samples)",
               "silent": "silent: RMS -inf dBFS, below the -60 dBFS floor",
               "small": "too small: 10 x 10 pixels, faces need at least 16 on each side"}


def test_media_that_carries_no_identity_is_refused_with_its_reason(tiny, verifier, pairs, tmp_path):
    """Too short, silent and too small media get no verdict: MediaUnreadable from the API, one line and exit 2
    from ``fva verify``, naming the file and the reason."""
    from fva.api import MediaUnreadable

    _, faces, voices = pairs
    media = no_identity_media(tmp_path)
    for name in ("short", "silent", "small"):
        face, voice = (media[name], voices[0]) if name == "small" else (faces[0], media[name])
        with pytest.raises(MediaUnreadable) as info:
            verifier.verify(face, voice)
        assert str(info.value) == f"{media[name].resolve()}: {NO_IDENTITY[name]}"
        assert_user_error(run_cli("verify", "--exp", tiny.exp, face, voice), str(media[name].resolve()),
                          NO_IDENTITY[name])
    with pytest.raises(MediaUnreadable, match="silent: "):
        verifier.embed_voice(media["silent"])


def test_a_calibration_in_the_checkpoints_gives_llr_and_p_same(tiny, verifier, pairs, tmp_path):
    """Each fold's calibration maps its own distances; the LLR is their mean over folds, P(same) its logistic."""
    import torch

    from fva.evaluate import calibration

    from fva.api import FaceVoiceVerifier
    from fva.heads.experiment import write_payload

    exp = tmp_path / "calibrated"
    shutil.copytree(tiny.exp, exp)
    rng = np.random.default_rng(0)
    fits = []
    for f in range(2):
        path = exp / f"fold{f}" / "checkpoint.pt"
        fits.append(calibration.Calibration.fit([1] * 20 + [0] * 20, np.r_[rng.normal(1.2, .1, 20),
                                                                           rng.normal(1.5, .1, 20)]))
        write_payload(path, {**torch.load(path, weights_only=True), "calibration": fits[-1].to_dict()})
    _, faces, voices = pairs
    result = FaceVoiceVerifier.from_experiment(exp).verify(faces[0], voices[0])
    voice, face = verifier.embed_voice(voices[0]), verifier.embed_face(faces[0])
    fold_distances = [float(model.pair_distances(torch.from_numpy(voice.head[f:f + 1]),
                                                 torch.from_numpy(face.head[f:f + 1]))[0])
                      for f, model in enumerate(verifier.folds.models)]
    expected = np.mean([float(fit.llr(d)) for fit, d in zip(fits, fold_distances)])
    assert result.llr == pytest.approx(expected, abs=1e-5)
    assert result.p_same == pytest.approx(1 / (1 + np.exp(-result.llr)))
    assert result.distance == pytest.approx(np.mean(fold_distances), abs=1e-6)
    out = run_cli("verify", "--exp", exp, faces[0], voices[0])
    assert out.exit_code == 0 and f"P(same) {result.p_same:.3f}" in out.output, out.output
    from fva.serve import result_block

    emb = FaceVoiceVerifier.from_experiment(exp).verify_and_embed(faces[0], voices[0])
    assert f'id="p-same">{result.p_same:.3f}<' in result_block(verifier, *emb, previews={})


def test_trained_folds_carry_a_calibration(verifier):
    assert calibrated(verifier)  # fitted on each fold's dev trials at training time (fva.evaluate.calibration)


def test_threshold_rules_are_the_experiments_calibration_thresholds(tiny, verifier, pairs):
    """--threshold far:RATE / prior:P decide at the experiment calibration's thresholds (its dev trials of all
    folds); eer stays the folds' mean dev-EER threshold."""
    from fva.api import FaceVoiceVerifier
    from fva.evaluate.calibration import experiment_calibration, experiment_dev_trials

    _, faces, voices = pairs
    cal = experiment_calibration(tiny.exp)
    labels, distances = experiment_dev_trials(tiny.exp)
    for rule, kind, value in (("far:0.1", "far", 0.1), ("prior:0.2", "prior", 0.2)):
        v = FaceVoiceVerifier.from_experiment(tiny.exp, threshold=rule)
        assert v.threshold == pytest.approx(cal.threshold_for(kind, value))
        result = v.verify(faces[0], voices[0])
        assert result.same_person == (result.distance <= v.threshold)
    far = FaceVoiceVerifier.from_experiment(tiny.exp, threshold="far:0.1").threshold
    assert np.mean(distances[labels == 0] <= far) <= 0.1  # at most 10 % of the dev different-person trials accepted
    assert verifier.threshold == pytest.approx(np.mean([p["threshold"] for p in verifier.folds.payloads]))
    out = run_cli("verify", "--exp", tiny.exp, faces[0], voices[0], "--threshold", "far:0.1")
    assert out.exit_code == 0 and f"threshold {far:.4f} at a dev false-accept rate of 0.1" in out.output, out.output
    bad = run_cli("verify", "--exp", tiny.exp, faces[0], voices[0], "--threshold", "far")
    assert bad.exit_code == 2 and "use eer, far:<false-accept rate>" in bad.output


def test_readme_python_api_example_runs(tiny, monkeypatch):
    """The README's "Python API" code block, run as written from a folder in the README's layout."""
    text = README.read_text()
    section = text.split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(tiny.base)
    scope: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), scope)
    from fva.api import Verification

    assert isinstance(scope["result"], Verification) and scope["result"].folds == 2
    assert all(isinstance(r, Verification) for r in scope["results"])


# ------------------------------------------------------------------------------------------------- the page


def multipart(fields: dict[str, tuple[str, str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    body = b""
    for name, (filename, content_type, data) in fields.items():
        body += (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; filename=\"{filename}\"\r\n"
                 f"Content-Type: {content_type}\r\n\r\n").encode() + data + b"\r\n"
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(url: str, fields: dict) -> tuple[int, str]:
    body, content_type = multipart(fields)
    request = urllib.request.Request(url + "verify", data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.fixture(scope="module")
def server(verifier):
    from fva.serve import make_server

    httpd = make_server(verifier, "127.0.0.1", 0, max_mb=1)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/"
    httpd.shutdown()
    httpd.server_close()


def error_text(page: str) -> str:
    return re.search(r'<div class="error" id="error">(.*?)</div>', page, re.S).group(1)


def test_page_verifies_an_uploaded_pair(server, verifier, pairs):
    _, faces, voices = pairs
    with urllib.request.urlopen(server, timeout=30) as response:
        form = response.read().decode()
    assert response.status == 200 and 'name="face"' in form and 'name="voice"' in form and "MediaRecorder" in form
    status, page = post(server, {"face": (faces[0].name, "image/jpeg", faces[0].read_bytes()),
                                 "voice": (voices[0].name, "audio/wav", voices[0].read_bytes())})
    expected = verifier.verify(faces[0], voices[0])
    assert status == 200, page
    decision = re.search(r'id="decision">(.*?)</div>', page).group(1)
    assert decision == ("Same person" if expected.same_person else "Different people")
    assert f'id="distance">{expected.distance:.4f}<' in page and f"threshold {expected.threshold:.4f}" in page
    if calibrated(verifier):
        assert f'id="p-same">{expected.p_same:.3f}<' in page
    else:
        assert "no calibration in this experiment" in page
    for modality in ("face", "voice"):
        table = re.search(rf'<table id="nearest-{modality}">(.*?)</table>', page, re.S).group(1)
        shown = re.findall(r"<tr><td>(id\d+)</td><td>([-0-9.]+)</td></tr>", table)
        emb = verifier.embed_face(faces[0]) if modality == "face" else verifier.embed_voice(voices[0])
        assert [(i, f"{c:.3f}") for i, c in verifier.nearest_identities(emb, 3)] == shown


def opus_recording(wav: Path, container: str) -> bytes:
    """What a browser's MediaRecorder uploads: the clip as Opus at 48 kHz in a WebM or Ogg container."""
    import av

    from fva.extract.media import load_audio

    samples = load_audio(wav)
    buf = io.BytesIO()
    with av.open(buf, "w", format=container) as out:
        stream = out.add_stream("libopus", rate=48000)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray((samples[None, :] * 32767).astype(np.int16), format="s16", layout="mono")
        frame.sample_rate = 16000
        for resampled in av.AudioResampler(format="s16", layout="mono", rate=48000).resample(frame):
            for packet in stream.encode(resampled):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)
    return buf.getvalue()


@pytest.mark.parametrize("container, content_type", [("webm", "audio/webm;codecs=opus"),
                                                     ("ogg", "audio/ogg;codecs=opus")])
def test_page_verifies_a_recorded_voice(server, verifier, pairs, tmp_path, container, content_type):
    """The page's recorder uploads Opus in WebM (Chrome, Firefox) or Ogg: decoded through the extraction path,
    the verdict is the API's on the same recording."""
    _, faces, voices = pairs
    recording = opus_recording(voices[1], container)
    saved = tmp_path / f"recording.{container}"
    saved.write_bytes(recording)
    expected = verifier.verify(faces[1], saved)
    status, page = post(server, {"face": (faces[1].name, "image/jpeg", faces[1].read_bytes()),
                                 "voice": (f"recording.{container}", content_type, recording)})
    assert status == 200, page
    assert f'id="distance">{expected.distance:.4f}<' in page
    wav = verifier.verify(faces[1], voices[1])
    assert abs(expected.distance - wav.distance) < 0.25 * abs(wav.distance) + 1e-6  # lossy, but the same clip


def test_page_refuses_large_and_undecodable_files_with_a_message(server, pairs):
    _, faces, voices = pairs
    face = (faces[0].name, "image/jpeg", faces[0].read_bytes())
    status, page = post(server, {"face": face, "voice": ("big.wav", "audio/wav", os.urandom(1_500_000))})
    assert status == 413 and "voice file big.wav is 1.5 MB: the limit is 1 MB" in error_text(page)
    status, page = post(server, {"face": face, "voice": ("huge.wav", "audio/wav", os.urandom(3_000_000))})
    assert status == 413 and "each file may be at most 1 MB" in error_text(page)
    status, page = post(server, {"face": ("face.jpg", "image/jpeg", b"not an image at all"),
                                 "voice": (voices[0].name, "audio/wav", voices[0].read_bytes())})
    assert status == 422 and error_text(page).startswith("cannot use it: face file face.jpg: "), page
    status, page = post(server, {"face": face, "voice": ("clip.wav", "audio/wav", voices[0].read_bytes()[:30])})
    assert status == 422 and "voice file clip.wav" in error_text(page)
    status, page = post(server, {"face": face})
    assert status == 400 and "no voice file: choose a voice clip" in error_text(page)
    for text in (page,):
        assert "Traceback" not in text and "fva-serve-" not in text


def test_page_refuses_media_that_carries_no_identity_with_its_reason(server, pairs, tmp_path):
    _, faces, voices = pairs
    media = no_identity_media(tmp_path)
    face = (faces[0].name, "image/jpeg", faces[0].read_bytes())
    voice = (voices[0].name, "audio/wav", voices[0].read_bytes())
    for name in ("short", "silent", "small"):
        upload = (f"my-{name}{media[name].suffix}", "image/jpeg" if name == "small" else "audio/wav",
                  media[name].read_bytes())
        fields = {"face": upload, "voice": voice} if name == "small" else {"face": face, "voice": upload}
        status, page = post(server, fields)
        which = "face" if name == "small" else "voice"
        assert status == 422, page
        assert error_text(page) == f"cannot use it: {which} file my-{name}{media[name].suffix}: {NO_IDENTITY[name]}"
        assert 'id="result"' not in page and "fva-serve-" not in page


def test_serve_command_help_and_a_missing_experiment(tmp_path):
    out = run_cli("serve", "--help")
    assert out.exit_code == 0 and "Example" in out.output and "127.0.0.1" in out.output
    assert_user_error(run_cli("serve", "--exp", tmp_path / "nothing"), "not an fva experiment")


# ---------------------------------------------------------------------------------------------- the browser


class WebDriver:
    """The W3C WebDriver protocol over urllib: enough to drive chromedriver without a client library."""

    def __init__(self, url: str, capabilities: dict) -> None:
        self.url = url
        self.session = self.call("POST", "/session", {"capabilities": {"alwaysMatch": capabilities}})["sessionId"]

    def call(self, method: str, path: str, body: dict | None = None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())["value"]

    def s(self, method: str, path: str, body: dict | None = None):
        return self.call(method, f"/session/{self.session}{path}", body)

    def find(self, css: str) -> str:
        found = self.s("POST", "/element", {"using": "css selector", "value": css})
        return next(iter(found.values()))

    def find_soon(self, css: str, seconds: float = 60) -> str:
        deadline = time.time() + seconds
        while True:
            try:
                return self.find(css)
            except urllib.error.HTTPError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)

    def quit(self) -> None:
        self.s("DELETE", "")


def browser_and_driver() -> tuple[str, str]:
    names = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
    browser = next((found for name in names if (found := shutil.which(name))), None)
    driver = shutil.which("chromedriver")
    if not browser or not driver:
        pytest.skip("no headless browser: needs chromium (or google-chrome) and chromedriver on PATH, e.g. "
                    "apt-get install chromium chromium-driver")
    return browser, driver


@pytest.mark.browser
def test_a_headless_browser_uploads_the_demo_media_and_reads_the_verdict(server, verifier, pairs, tmp_path):
    browser, driver = browser_and_driver()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/status", timeout=5).read()
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.2)
        web = WebDriver(f"http://127.0.0.1:{port}", {"browserName": "chrome", "goog:chromeOptions": {
            "binary": browser, "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                                        "--disable-dev-shm-usage", "--window-size=1100,1000"]}})
        try:
            _, faces, voices = pairs
            web.s("POST", "/url", {"url": server})
            for css, path in (("#face", faces[0]), ("#voice", voices[0])):
                web.s("POST", f"/element/{web.find(css)}/value", {"text": str(path)})
            web.s("POST", f"/element/{web.find('#verify')}/click", {})
            decision = web.find_soon("#decision")
            shown = web.s("GET", f"/element/{decision}/text")
            distance = web.s("GET", f"/element/{web.find('#distance')}/text")
            nearest = web.s("GET", f"/element/{web.find('#nearest-voice')}/text")
            png = web.s("GET", "/screenshot")
        finally:
            web.quit()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    expected = verifier.verify(faces[0], voices[0])
    assert shown == ("Same person" if expected.same_person else "Different people")
    assert distance == f"{expected.distance:.4f}" and "id000" in nearest
    import base64

    shot = Path(os.environ.get("FVA_SCREENSHOT", tmp_path / "fva-serve.png"))
    shot.write_bytes(base64.b64decode(png))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
