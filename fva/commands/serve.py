"""The Python API from the command line: verify one pair, serve the local demo page."""

from __future__ import annotations

from pathlib import Path

import click

from fva.commands.common import parse_weights, trained_exp_option, verifier_options


@click.command(short_help="Same person? One face and one voice.")
@trained_exp_option
@click.argument("face", type=click.Path(path_type=Path))
@click.argument("voice", type=click.Path(path_type=Path))
@verifier_options
def verify(exp: Path, face: Path, voice: Path, weights: tuple[str, ...], device: str | None, threshold: str) -> None:
    """Say whether a face image (or mp4 face track) and a voice clip are the same person.

    Runs the experiment's encoders and heads on the pair; the decision uses the distance threshold
    where the experiment's dev EER was measured, or the rule --threshold names.

    \b
    Example:
      fva verify --exp work/demo/exp/full data/demo/faces/id0001/English/.../000000007.jpg voice.wav
    """
    from fva.api import FaceVoiceVerifier
    from fva.extract.runner import default_device

    verifier = FaceVoiceVerifier.from_experiment(exp, device or default_device(), parse_weights(weights),
                                                 threshold=threshold)
    click.echo(_verdict_line(verifier.verify(face, voice), exp, threshold))


def _verdict_line(result, exp: Path, rule: str = "eer") -> str:
    from fva.api import describe_threshold

    if result.threshold is None:
        return (f"distance {result.distance:.4f} ({result.folds} fold model(s)); {exp} holds no dev EER threshold "
                "(imported, not trained here), so no decision")
    verdict = "same person" if result.same_person else "different people"
    calibrated = "" if result.p_same is None else f", P(same) {result.p_same:.3f} (LLR {result.llr:.2f})"
    return (f"distance {result.distance:.4f} (threshold {result.threshold:.4f} {describe_threshold(rule)}, "
            f"{result.folds} fold model(s)): {verdict}{calibrated}")


@click.command(short_help="A local demo page: upload a face and a voice.")
@trained_exp_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (local only by default).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free port.")
@click.option("--max-mb", type=click.FloatRange(min=0, min_open=True), default=20.0, show_default=True,
              help="Largest upload accepted per file, in MB (larger ones get HTTP 413).")
@verifier_options
def serve(exp: Path, host: str, port: int, max_mb: float, weights: tuple[str, ...], device: str | None,
          threshold: str) -> None:
    """Serve a demo page: upload (or record) a face image and a voice clip, see the decision, the calibrated
    probability where the experiment has one, the distance against the threshold and each medium's nearest
    training identities. The experiment is loaded once, at start-up.

    \b
    Example:
      fva serve --exp work/demo/exp/english-unheard --port 8000
    """
    from fva.api import FaceVoiceVerifier
    from fva.extract.runner import default_device
    from fva.serve import make_server

    verifier = FaceVoiceVerifier.from_experiment(exp, device or default_device(), parse_weights(weights),
                                                 threshold=threshold)
    server = make_server(verifier, host, port, max_mb)
    click.echo(f"serving {exp} on http://{host}:{server.server_port}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


COMMANDS = [verify, serve]
