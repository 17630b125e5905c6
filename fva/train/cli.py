"""``fva lid`` and ``fva train-encoder {speaker,age-gender}``: thin commands over :mod:`fva.train`.

Registered on the ``fva`` group in ``fva/cli.py``; user errors become one ``Error:`` line there.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

_DATA_OPTIONS = [
    click.option("--dataset", default=None, help="Dataset name, as for 'fva manifest'."),
    click.option("--root", type=click.Path(path_type=Path), default=None, help="The dataset's folder."),
    click.option("--subset", default=None, help="Dataset subset (default: its first)."),
    click.option("--split", default="full", show_default=True, help="full, or <language>-unheard."),
    click.option("--language-labels", type=click.Path(path_type=Path), default=None,
                 help="VoxCeleb2 language labels from 'fva lid' (unheard splits need them)."),
    click.option("--languages", default=None, help="Keep only these languages, comma-separated (names or codes)."),
    click.option("--manifest", "manifest_path", type=click.Path(path_type=Path), default=None,
                 help="A manifest from 'fva manifest' instead of --dataset/--root."),
    click.option("--strict", is_flag=True,
                 help="Stop at the first unusable dataset row (CommonVoice) instead of skipping it."),
]


def _train_options(defaults):
    """Options every trainer takes (defaults from the trainer's TrainOptions)."""
    d = defaults
    return [
        click.option("--out", type=click.Path(path_type=Path), required=True,
                     help="Output folder: the model (for 'fva extract --weights'), checkpoints/, logs. "
                          "Run again to resume."),
        click.option("--epochs", type=int, default=d.epochs, show_default=True),
        click.option("--steps", type=int, default=None, help="Optimiser steps in all (overrides --epochs)."),
        click.option("--batch-size", type=int, default=d.batch_size, show_default=True,
                     help="Clips per step and process."),
        click.option("--lr", type=float, default=d.lr, show_default=True, help="Peak learning rate (Adam)."),
        click.option("--schedule", type=click.Choice(["cyclic", "exponential"]), default=d.schedule,
                     show_default=True, help="cyclic (speechbrain's VoxCeleb recipe) or exponential decay."),
        click.option("--base-lr", type=float, default=d.base_lr, show_default=True, help="cyclic: lowest rate."),
        click.option("--step-size", type=int, default=d.step_size, show_default=True,
                     help="cyclic: steps per half cycle."),
        click.option("--decay", type=float, default=d.decay, show_default=True,
                     help="exponential: final rate = lr x decay."),
        click.option("--crop-seconds", type=float, default=d.crop_seconds, show_default=True,
                     help="Random crop length of each training clip."),
        click.option("--workers", type=int, default=d.workers, show_default=True, help="Data-loading processes."),
        click.option("--seed", type=int, default=d.seed, show_default=True),
        click.option("--device", default=None, help="torch device (default: cuda:LOCAL_RANK when available, else cpu)."),
        click.option("--ckpt-minutes", type=float, default=d.ckpt_minutes, show_default=True,
                     help="Intra-epoch checkpoint interval (0: end of epoch only)."),
        click.option("--progress/--no-progress", default=True, show_default=True),
    ]


def _apply(options):
    def decorate(fn):
        for option in reversed(options):
            fn = option(fn)
        return fn
    return decorate


def _split_options(kwargs: dict) -> tuple[dict, dict]:
    """(data options, training options) out of a command's keyword arguments."""
    from fva.train.common import TrainOptions

    data = {k: kwargs.pop(k) for k in ("dataset", "root", "subset", "split", "language_labels", "languages",
                                       "manifest_path", "strict")}
    fields = TrainOptions.__dataclass_fields__
    train = {k: kwargs.pop(k) for k in list(kwargs) if k in fields}
    train["out"] = str(train["out"])
    return data, train


def _manifest(data: dict):
    from fva.data.datasets import load_manifest

    languages = data["languages"].split(",") if data["languages"] else None
    manifest, notes = load_manifest(data["manifest_path"], data["dataset"], data["root"], data["subset"],
                                    data["split"], data["language_labels"], languages, strict=data["strict"])
    for note in notes:
        click.echo(f"note: {note}", err=True)
    return manifest


def _defaults(name: str):
    from fva.train.common import TrainOptions

    return TrainOptions(out="", **({"batch_size": 32} if name == "speaker" else {"batch_size": 64, "epochs": 20,
                                                                                   "schedule": "exponential"}))


def _print_metrics(out: Path, metrics: dict) -> None:
    click.echo(json.dumps(metrics))
    click.echo(f"model: {out}")


@click.group("train-encoder", short_help="Train the speaker or voice age-gender ECAPA.")
def train_encoder() -> None:
    """Train an encoder for the unheard conditions with speechbrain (torchrun for several processes).

    The output folder is the model 'fva extract --weights' loads; rerunning the same command resumes
    from the last checkpoint.
    """


@train_encoder.command("speaker", short_help="Speaker ECAPA-TDNN (AAM-softmax) without a language.")
@_apply(_DATA_OPTIONS)
@_apply(_train_options(_defaults("speaker")))
@click.option("--channels", type=int, default=1024, show_default=True, help="ECAPA width C (blocks C,C,C,C,3C).")
@click.option("--noise", type=click.Path(path_type=Path), default=None, help="Folder of noise clips to add.")
@click.option("--reverb", type=click.Path(path_type=Path), default=None, help="Folder of room impulse responses.")
@click.option("--trials", type=click.Path(path_type=Path), default=None,
              help="VoxCeleb1-O style trial list ('label enrol test'): EER after every epoch.")
@click.option("--trials-root", type=click.Path(path_type=Path), default=None,
              help="Folder the trial paths are relative to (default: the list's folder).")
def speaker_cmd(channels: int, noise: Path | None, reverb: Path | None, trials: Path | None,
                trials_root: Path | None, **kwargs) -> None:
    """Train a speaker ECAPA-TDNN on a split's voices (e.g. VoxCeleb2 without German).

    \b
    Examples:
      fva train-encoder speaker --dataset voxceleb2 --root /data/vox2 --split german-unheard \\
          --language-labels vox2_lang.tsv --out models/ecapa-nogerman --noise musan/noise --reverb rirs
      torchrun --nproc-per-node 4 -m fva.cli train-encoder speaker --dataset voxceleb2 --root /data/vox2 \\
          --split german-unheard --language-labels vox2_lang.tsv --out models/ecapa-nogerman
    """
    from fva.train.common import TrainOptions
    from fva.train.speaker import SpeakerOptions, train_speaker

    data, train = _split_options(kwargs)
    opts = TrainOptions(**train)
    spk = SpeakerOptions(channels=channels, noise=_str(noise), reverb=_str(reverb), trials=_str(trials),
                         trials_root=_str(trials_root))
    metrics = train_speaker(_manifest(data), data["root"], opts, spk)
    _print_metrics(Path(opts.out), metrics)


@train_encoder.command("age-gender", short_help="Voice age-gender ECAPA (channels / 4) with two heads.")
@_apply(_DATA_OPTIONS)
@_apply(_train_options(_defaults("age-gender")))
@click.option("--channels", type=int, default=256, show_default=True,
              help="ECAPA width C (blocks C,C,C,C,3C); 256 = the speaker model's 1024 / 4.")
@click.option("--head-hidden", type=int, default=1536, show_default=True, help="Hidden units of each head.")
@click.option("--valid-fraction", type=float, default=0.1, show_default=True,
              help="Share of speakers held out (speaker-disjoint) for gender accuracy and age MAE.")
@click.option("--age-weight", type=float, default=1.0, show_default=True,
              help="Weight of the age loss (L1 in decades) beside the gender cross-entropy.")
def age_gender_cmd(channels: int, head_hidden: int, valid_fraction: float, age_weight: float, **kwargs) -> None:
    """Train the voice age-gender ECAPA on CommonVoice: age regression in years, gender male/female.

    \b
    Examples:
      fva train-encoder age-gender --dataset commonvoice --root /data/cv-corpus-17.0 \\
          --languages en,de,da,nl,es,fr,it --split english-unheard --out models/vag-noenglish
    """
    from fva.train.age_gender import AgeGenderOptions, train_age_gender
    from fva.train.common import TrainOptions

    data, train = _split_options(kwargs)
    opts = TrainOptions(**train)
    ag = AgeGenderOptions(channels=channels, head_hidden=head_hidden, valid_fraction=valid_fraction,
                          age_weight=age_weight)
    metrics = train_age_gender(_manifest(data), data["root"], opts, ag)
    _print_metrics(Path(opts.out), metrics)


@click.command("lid", short_help="VoxCeleb2 language labels, voted per video.")
@click.option("--dataset", default="voxceleb2", show_default=True, help="Dataset name (voxceleb2).")
@click.option("--root", type=click.Path(path_type=Path), required=True, help="The dataset's folder.")
@click.option("--subset", default="dev", show_default=True, help="dev or test.")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Per-video label TSV to write (the --language-labels file); clip labels go beside it.")
@click.option("--weights", default=None, help="Model folder or hub id (default speechbrain/lang-id-voxlingua107-ecapa).")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="A video gets the vote's language when its confidence (winner's confidence sum / clips) "
                   "reaches this; else no language.")
@click.option("--batch-size", type=int, default=16, show_default=True)
@click.option("--workers", type=int, default=2, show_default=True, help="Background decoding processes.")
@click.option("--device", default=None, help="torch device (default: cuda when available, else cpu).")
@click.option("--limit", type=int, default=None, help="Label at most N more clips in this run (a quick look).")
@click.option("--progress/--no-progress", default=True, show_default=True)
def lid_cmd(dataset: str, root: Path, subset: str, out: Path, weights: str | None, threshold: float,
            batch_size: int, workers: int, device: str | None, limit: int | None, progress: bool) -> None:
    """Label every clip's language with the VoxLingua107 ECAPA, then vote per video.

    Writes OUT.clips.tsv (key, language, confidence per clip; appended as it goes, so a rerun resumes) and
    OUT (one line per video whose vote reaches --threshold), which 'fva manifest --language-labels' reads.

    \b
    Example:
      fva lid --dataset voxceleb2 --root /data/vox2 --out vox2_lang.tsv --weights models/lang-id-voxlingua107-ecapa
    """
    from fva.extract.runner import default_device
    from fva.train.lid import run_lid

    summary = run_lid(dataset, root, subset, out, weights=weights, threshold=threshold, batch_size=batch_size,
                      workers=workers, device=device or default_device(), limit=limit, progress=progress)
    click.echo(summary.line())


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


COMMANDS = (train_encoder, lid_cmd)
EXAMPLES = """\
  fva lid --dataset voxceleb2 --root data/vox2 --out work/vox2_lang.tsv --weights models/lang-id
  fva train-encoder speaker --dataset voxceleb2 --root data/vox2 --split german-unheard \\
      --language-labels work/vox2_lang.tsv --out models/ecapa-nogerman
  fva train-encoder age-gender --dataset commonvoice --root data/cv --split english-unheard --out models/vag
"""
