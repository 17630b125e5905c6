"""``fva serve``: a local demo page over :class:`fva.api.FaceVoiceVerifier`, standard library only.

``GET /`` shows a form (a face image or mp4 face track, a voice clip uploaded or recorded in the browser with
MediaRecorder); ``POST /verify`` (multipart/form-data, fields ``face`` and ``voice``) answers the same page with
the decision, the calibrated P(same) where the experiment has a calibration, the distance against the
threshold and each medium's nearest training identities. Refusals are pages with one readable line: 400 (a
missing or malformed upload), 413 (a file over the size limit), 422 (media the encoders cannot decode); an
unexpected failure is logged and answered 500 without its traceback.
"""

from __future__ import annotations

import base64
import html
import logging
import re
import tempfile
import threading
from email.parser import BytesParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fva.api import Embedding, FaceVoiceVerifier, MediaUnreadable, Verification, describe_threshold
from fva.errors import FvaError

log = logging.getLogger(__name__)

MB = 1_000_000
FORM_OVERHEAD = 64 * 1024  # multipart boundaries and headers around the two files
DRAIN_LIMIT = 256 * MB  # a refused body up to this size is read and dropped so the client sees the answer


class Refusal(Exception):
    """An upload refused with an HTTP status and one line for the page."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str, str, bytes]]:
    """Field name -> (file name, content type, bytes) of a multipart/form-data body (text fields have file
    name "")."""
    if not content_type.lower().startswith("multipart/form-data") or "boundary=" not in content_type:
        raise Refusal(HTTPStatus.BAD_REQUEST, "send the form as multipart/form-data (the page's Verify button)")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body)
    if not message.is_multipart():
        raise Refusal(HTTPStatus.BAD_REQUEST, "the upload is not a valid multipart form")
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name:
            fields[name] = (part.get_filename() or "", part.get_content_type(), part.get_payload(decode=True) or b"")
    return fields


def _suffix(filename: str, content_type: str, default: str) -> str:
    """A safe extension for the temporary copy: the upload's own (the decoders choose by it), else one from its
    content type (a browser recording is audio/webm or audio/ogg), else ``default``."""
    suffix = Path(filename).suffix.lower()
    if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix):
        return suffix
    sub = content_type.split("/")[-1].split(";")[0]
    return f".{sub}" if re.fullmatch(r"[a-z0-9]{1,5}", sub) and sub != "octet-stream" else default


# ------------------------------------------------------------------------------------------------------ page

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } .sub { color: #666; margin-top: 0; }
form { display: grid; grid-template-columns: 1fr 1fr; gap: 1rem; background: #f5f5f7; padding: 1rem;
       border-radius: .5rem; }
fieldset { border: 1px solid #ccc; border-radius: .4rem; } button { font-size: 1rem; padding: .4rem 1rem; }
.submit { grid-column: 1 / 3; } .error { background: #fde8e8; color: #8a1414; padding: .8rem;
          border-radius: .4rem; margin: 1rem 0; }
.verdict { font-size: 1.8rem; font-weight: bold; margin: 1rem 0 .3rem; }
.same { color: #11752c; } .different { color: #a12020; } .none { color: #555; }
.media { display: flex; gap: 1.5rem; align-items: center; margin: 1rem 0; } .media img { max-height: 9rem; }
table { border-collapse: collapse; margin: .5rem 0; } td, th { padding: .2rem .8rem; border-bottom: 1px solid #ddd;
        text-align: left; } .cols { display: flex; gap: 3rem; }
"""

RECORDER = """
<script>
(() => {
  const button = document.getElementById('record'), input = document.getElementById('voice');
  const status = document.getElementById('record-status');
  if (!window.MediaRecorder || !navigator.mediaDevices) { button.disabled = true;
    status.textContent = 'recording is not available in this browser; upload a clip'; return; }
  let recorder = null;
  button.addEventListener('click', async () => {
    if (recorder && recorder.state === 'recording') { recorder.stop(); return; }
    try {
      const stream = await navigator.mediaDevices.getUserMedia({audio: true});
      const chunks = [];
      recorder = new MediaRecorder(stream);
      recorder.ondataavailable = e => chunks.push(e.data);
      recorder.onstop = () => {
        stream.getTracks().forEach(t => t.stop());
        const type = recorder.mimeType || 'audio/webm';
        const ext = type.includes('ogg') ? 'ogg' : type.includes('mp4') ? 'm4a' : 'webm';
        const file = new File(chunks, 'recording.' + ext, {type});
        const files = new DataTransfer(); files.items.add(file); input.files = files.files;
        button.textContent = 'Record again'; status.textContent = 'recorded ' + Math.round(file.size / 1024) + ' kB';
      };
      recorder.start(); button.textContent = 'Stop'; status.textContent = 'recording...';
    } catch (err) { status.textContent = 'no microphone: ' + err.message; }
  });
})();
</script>
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def page(verifier: FaceVoiceVerifier, max_mb: float, body: str = "") -> str:
    """The whole page: the form, then ``body`` (a result or an error)."""
    system = verifier.folds.models[0].name if len(verifier.folds) else "?"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fva: same person?</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head>
<body>
<h1>Face and voice: the same person?</h1>
<p class="sub">experiment <code>{_e(verifier.exp)}</code>: {_e(system)} heads, {len(verifier.folds)} fold model(s);
files up to {max_mb:g} MB</p>
<form method="post" action="/verify" enctype="multipart/form-data">
 <fieldset><legend>Face</legend>
  <input type="file" id="face" name="face" accept="image/*,video/mp4" required>
  <p class="sub">a face image (jpg, png) or an mp4 face track</p></fieldset>
 <fieldset><legend>Voice</legend>
  <input type="file" id="voice" name="voice" accept="audio/*,video/mp4,.m4a,.wav,.flac,.webm" required>
  <p><button type="button" id="record">Record</button> <span id="record-status" class="sub"></span></p>
 </fieldset>
 <div class="submit"><button type="submit" id="verify">Verify</button></div>
</form>
{body}
{RECORDER}
</body></html>
"""


def error_block(message: str) -> str:
    return f'<div class="error" id="error">{_e(message)}</div>'


def result_block(verifier: FaceVoiceVerifier, result: Verification, face: Embedding, voice: Embedding,
                 previews: dict[str, str]) -> str:
    """The verdict, the numbers behind it and each medium's nearest training identities."""
    if result.same_person is None:
        verdict, css = "No decision (the experiment holds no threshold)", "none"
    else:
        verdict, css = ("Same person", "same") if result.same_person else ("Different people", "different")
    if result.p_same is None:
        calibrated = "<li>P(same person): no calibration in this experiment</li>"
    else:
        calibrated = (f'<li>P(same person): <b id="p-same">{result.p_same:.3f}</b> '
                      f"(calibrated log-likelihood ratio {result.llr:.2f})</li>")
    threshold = "none" if result.threshold is None else f"{result.threshold:.4f}"
    tables = []
    for title, emb in (("Face", face), ("Voice", voice)):
        rows = "".join(f"<tr><td>{_e(identity)}</td><td>{cosine:.3f}</td></tr>"
                       for identity, cosine in verifier.nearest_identities(emb, 3))
        tables.append(f'<div><h3>{title}: nearest training identities</h3><table id="nearest-{emb.modality}">'
                      f"<tr><th>identity</th><th>cosine</th></tr>{rows}</table></div>")
    media = "".join(previews.values())
    return f"""<section id="result">
<div class="verdict {css}" id="decision">{_e(verdict)}</div>
<ul>{calibrated}
<li>distance <b id="distance">{result.distance:.4f}</b>, threshold {threshold} ({_e(describe_threshold(verifier.threshold_rule))};
lower = same person), mean over {result.folds} fold model(s)</li></ul>
<div class="media">{media}</div>
<div class="cols">{''.join(tables)}</div>
</section>"""


# --------------------------------------------------------------------------------------------------- server


def make_server(verifier: FaceVoiceVerifier, host: str = "127.0.0.1", port: int = 8000,
                max_mb: float = 20.0) -> ThreadingHTTPServer:
    """An HTTP server (not yet serving: call ``serve_forever``) for ``verifier``; ``port`` 0 takes a free
    one (``server.server_port``). The identities' prototypes are computed here, before the first request."""
    for modality in ("face", "voice"):
        verifier.prototypes(modality)
    limit = int(max_mb * MB)
    lock = threading.Lock()  # one verification at a time: the encoders are shared

    class Handler(BaseHTTPRequestHandler):
        server_version = "fva"

        def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
            log.info("%s %s", self.address_string(), format % args)

        def send_page(self, status: HTTPStatus, body: str = "") -> None:
            data = page(verifier, max_mb, body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            if self.path.split("?")[0] in ("/", "/verify"):
                self.send_page(HTTPStatus.OK)
            else:
                self.send_page(HTTPStatus.NOT_FOUND, error_block(f"{self.path}: no such page"))

        def do_POST(self) -> None:  # noqa: N802
            if self.path.split("?")[0] != "/verify":
                self.send_page(HTTPStatus.NOT_FOUND, error_block(f"{self.path}: no such page"))
                return
            try:
                self.send_page(HTTPStatus.OK, self.verify_upload())
            except Refusal as err:
                self.send_page(err.status, error_block(str(err)))
            except Exception:  # a bug: logged with its traceback, answered without it
                log.exception("fva serve: verification failed")
                self.send_page(HTTPStatus.INTERNAL_SERVER_ERROR,
                               error_block("internal error while verifying; the server's log has the details"))

        def read_body(self) -> bytes:
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                raise Refusal(HTTPStatus.LENGTH_REQUIRED, "the upload has no Content-Length") from None
            if length > 2 * limit + FORM_OVERHEAD:
                remaining = length if length <= DRAIN_LIMIT else 0  # read and drop it: the client then reads
                while remaining > 0:                                 # the answer instead of a reset connection
                    chunk = self.rfile.read(min(1 << 20, remaining))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                self.close_connection = length > DRAIN_LIMIT
                raise Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                              f"the upload is {length / MB:.1f} MB: each file may be at most {max_mb:g} MB")
            return self.rfile.read(length)

        def verify_upload(self) -> str:
            fields = parse_multipart(self.headers.get("Content-Type", ""), self.read_body())
            uploads = {}
            for name, what in (("face", "a face image"), ("voice", "a voice clip")):
                filename, content_type, data = fields.get(name, ("", "", b""))
                if not data:
                    raise Refusal(HTTPStatus.BAD_REQUEST, f"no {name} file: choose {what}")
                if len(data) > limit:
                    raise Refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                                  f"{name} file {filename or '(unnamed)'} is {len(data) / MB:.1f} MB: the limit is "
                                  f"{max_mb:g} MB")
                uploads[name] = (filename or name, content_type, data)
            with tempfile.TemporaryDirectory(prefix="fva-serve-") as scratch:
                paths = {}
                for name, (filename, content_type, data) in uploads.items():
                    paths[name] = Path(scratch) / (name + _suffix(filename, content_type,
                                                                  ".jpg" if name == "face" else ".wav"))
                    paths[name].write_bytes(data)
                try:
                    with lock:
                        result, face, voice = verifier.verify_and_embed(paths["face"], paths["voice"])
                except MediaUnreadable as err:
                    message = str(err)
                    for name, path in paths.items():  # name the upload, not the temporary copy
                        for shown in (str(path.resolve()), str(path)):
                            message = message.replace(shown, f"{name} file {uploads[name][0]}")
                    raise Refusal(HTTPStatus.UNPROCESSABLE_ENTITY, f"cannot use it: {message}") from None
                except FvaError as err:
                    raise Refusal(HTTPStatus.UNPROCESSABLE_ENTITY, str(err)) from None
            return result_block(verifier, result, face, voice, previews(uploads))

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def previews(uploads: dict[str, tuple[str, str, bytes]]) -> dict[str, str]:
    """Inline previews of the uploads (an image, an audio player) as data URLs."""
    out = {}
    filename, content_type, data = uploads["face"]
    if content_type.startswith("image/"):
        out["face"] = (f'<img alt="face {_e(filename)}" src="data:{_e(content_type)};base64,'
                       f'{base64.b64encode(data).decode()}">')
    filename, content_type, data = uploads["voice"]
    if content_type.startswith("audio/"):
        out["voice"] = (f'<audio controls src="data:{_e(content_type)};base64,{base64.b64encode(data).decode()}">'
                        f"</audio>")
    return out
