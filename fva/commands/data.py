"""Dataset commands: demo data and world, manifests, identity folds."""

from __future__ import annotations

import json
from pathlib import Path

import click

from fva.errors import FvaError


@click.command("demo-data", short_help="Write the synthetic demo dataset (V3 or v4 layout).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to create (must be empty).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, byte-identical dataset.")
@click.option("--variant", type=click.Choice(["v3", "v4"]), default="v3", show_default=True,
              help="v3: MAV-Celeb V3 (English/German, FAME 2026); v4: MAV-Celeb v4 (FLAG 2027: English train "
                   "with genders, English/Bangla tests per track).")
@click.option("--train-identities", type=int, default=None, help="Default: 72 (v3), 40 (v4).")
@click.option("--test-identities", type=int, default=16, show_default=True)
def demo_data(out: Path, seed: int, variant: str, train_identities: int | None, test_identities: int) -> None:
    """Write a small synthetic MAV-Celeb-shaped dataset: V3 (English/German) or v4 (FLAG 2027).

    Each identity's hidden traits shape both its generated voice and its drawn face, so faces and voices
    are associable, also across languages, but not trivially.

    \b
    Examples:
      fva demo-data --out data/demo --seed 0
      fva demo-data --variant v4 --out data/demo-v4
    """
    if variant == "v4":
        from fva.synth.demo_v4 import generate_demo_v4

        summary = generate_demo_v4(out, seed=seed, train_identities=train_identities or 40,
                                   test_identities=test_identities)
    else:
        from fva.synth.demo import generate_demo

        summary = generate_demo(out, seed=seed, train_identities=train_identities or 72,
                                test_identities=test_identities)
    for line in summary.lines():
        click.echo(line)


@click.command("demo-world", short_help="Write a tiny synthetic world in the real dataset layouts.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder to create (must be empty).")
@click.option("--seed", type=int, default=0, show_default=True, help="Same seed, byte-identical world.")
def demo_world(out: Path, seed: int) -> None:
    """Write VoxCeleb2 (m4a voices, mp4 face tracks), CommonVoice (mp3, 7 locales) and MAV-Celeb V3 (with its
    splits folder), all synthetic and small, for running a recipe end to end offline in seconds.

    \b
    Example:
      fva demo-world --out data/world --seed 0
    """
    from fva.synth.world import write_world

    summary = write_world(out, seed=seed)
    for line in summary.lines():
        click.echo(line)


@click.command(short_help="Build a dataset manifest (JSONL records).")
@click.option("--dataset", required=True,
              help="mavceleb-v1, mavceleb-v2, mavceleb-v3, mavceleb-v4 (FLAG 2027), voxceleb2 or commonvoice.")
@click.option("--root", type=click.Path(path_type=Path), required=True, help="The dataset's folder.")
@click.option("--subset", default=None, help="train/test (MAV-Celeb), dev/test (VoxCeleb2), "
              "validated/train/dev/test (CommonVoice); default: the first.")
@click.option("--split", default="full", show_default=True, help="full, or <language>-unheard.")
@click.option("--language-labels", type=click.Path(path_type=Path), default=None,
              help="TSV key/language/confidence (VoxCeleb2 unheard splits need one; 'fva lid' writes it).")
@click.option("--languages", default=None, help="Keep only these languages, comma-separated (names or codes).")
@click.option("--lists", type=click.Path(path_type=Path), default=None, metavar="DIR",
              help="MAV-Celeb: folder of the <Lang>_train.txt/<Lang>_test.txt lists (default: the root, else "
                   "ROOT/face_voice_association_splits/<v1|v2|v3>/).")
@click.option("--strict", is_flag=True, help="Stop at the first unusable row (CommonVoice) instead of skipping it.")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Manifest to write (JSONL).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def manifest(dataset: str, root: Path, subset: str | None, split: str, language_labels: Path | None,
             languages: str | None, lists: Path | None, strict: bool, out: Path, as_json: bool) -> None:
    """Build a dataset manifest (JSONL records of every voice clip and face) for one subset and split.

    \b
    Examples:
      fva manifest --dataset mavceleb-v3 --root data/demo --split english-unheard --out train.jsonl
      fva manifest --dataset mavceleb-v3 --root /data/mavceleb_v3 --subset test \\
          --lists /data/face_voice_association_splits/v3 --out test.jsonl
    """
    from fva.data.datasets import build_manifest

    built, notes = build_manifest(dataset, root, subset=subset, split=split, language_labels=language_labels,
                                  languages=languages.split(",") if languages else None, lists=lists,
                                  strict=strict)
    built.write(out)
    summary = built.summary()
    if as_json:
        click.echo(json.dumps({**summary, "notes": notes, "path": str(out)}, indent=1))
        return
    click.echo(f"{out}: {summary['records']} records, {summary['identities']} identities "
               f"({dataset} {summary['subset']}, split {summary['split']})")
    for modality, per_lang in summary["counts"].items():
        click.echo(f"  {modality:5s} " + ", ".join(f"{lang} {n}" for lang, n in sorted(per_lang.items())))
    for note in notes:
        click.echo(f"  note: {note}")


@click.command(short_help="Identity-disjoint folds and their dev trials.")
@click.option("--manifest", "manifest_path", type=click.Path(path_type=Path), required=True,
              help="Train manifest (from 'fva manifest').")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for folds.json and fold*/.")
@click.option("--k", type=int, default=7, show_default=True, help="Number of folds.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--max-trials", type=int, default=2000, show_default=True, help="Dev trials per fold and language.")
@click.option("--negatives", type=click.Choice(["any", "same-gender"]), default="any", show_default=True,
              help="Dev-trial impostors: any held-out identity, or one of the voice's gender (FLAG 2027's "
                   "gender-controlled track; needs genders in the manifest).")
def folds(manifest_path: Path, out: Path, k: int, seed: int, max_trials: int, negatives: str) -> None:
    """Cut train identities into k identity-disjoint folds and write each fold's dev trials per language.

    Writes OUT/folds.json and OUT/fold<f>/<Lang>_dev.txt with <Lang>_dev_labels.txt beside it
    (folds are numbered from 0).

    \b
    Example:
      fva folds --manifest work/demo/train.jsonl --out work/demo/folds --k 7 --seed 0
    """
    from fva.data.folds import make_folds, write_fold_trials
    from fva.data.records import Manifest
    from fva.layout import FOLDS_FILE

    man = Manifest.read(manifest_path)
    if man.subset == "test":
        raise FvaError(f"{manifest_path}: is a test manifest; folds are cut from training identities")
    made = make_folds(man.identities(), k=k, seed=seed, dataset=man.dataset)
    out.mkdir(parents=True, exist_ok=True)
    made.save(out / FOLDS_FILE)
    counts = write_fold_trials(man.records, made, out, max_trials=max_trials, negatives=negatives)
    click.echo(f"{out}/folds.json: {made.k} folds over {sum(map(len, made.folds))} identities (seed {seed}, "
               f"negatives {negatives})")
    for f, per_lang in counts.items():
        click.echo(f"  fold{f}: {len(made.folds[f])} held-out identities, dev trials "
                   + ", ".join(f"{lang} {n}" for lang, n in per_lang.items()))


COMMANDS = [demo_data, demo_world, manifest, folds]
