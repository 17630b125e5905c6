"""Stage 2 commands: train heads per fold, compare systems, import the official FOP, score a trial list."""

from __future__ import annotations

from pathlib import Path

import click

from fva.commands.common import (heads_cache_option, pairwise_option, pairwise_overrides, parse_folds,
                                 trained_exp_option)


@click.command("train-head", short_help="Train projection heads per fold.")
@click.option("--fold", "fold", default="all", show_default=True, help="A fold number (from 0) or 'all'.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="YAML config (unknown keys are an error), or a shipped config's name (demo, fop, ...); "
                   "defaults: the FAME 2026 winning system.")
@heads_cache_option
@click.option("--exp", type=click.Path(path_type=Path), required=True, help="Experiment folder to write.")
@click.option("--split", default=None, help="Training languages: full or <language>-unheard (overrides the config).")
@click.option("--weight-set", default=None,
              help="Features of this weight set (overrides the config; default: the split's own, else full).")
@click.option("--dataset", default=None, help="MAV-Celeb cache folder name (overrides the config).")
@click.option("--folds", "folds_path", type=click.Path(path_type=Path), default=None,
              help="folds.json from 'fva folds' (overrides the config; default: made from the seed).")
@click.option("--init", type=click.Path(path_type=Path), default=None, help="Start from a trained experiment's head.")
@click.option("--epochs", type=click.IntRange(min=0), default=None,
              help="Overrides train.epochs; 0: no fine-tuning, each fold keeps the pretrained (or --init) heads.")
@click.option("--pretrain-dataset", default=None,
              help="Pretrain on this dataset's cache of the same weight set first, e.g. voxceleb2 (overrides the config).")
@click.option("--seed", type=int, default=None, help="Overrides the config's seed.")
@click.option("--select-on", type=click.Choice(["any", "same-gender"]), default=None,
              help="Dev impostors model selection reads (overrides train.select_on; same-gender: FLAG's gender track).")
@click.option("--seeds", "seeds_text", default=None, metavar="0,1,2",
              help="Train one experiment per seed into EXP/seed<k>/ and report the dev EERs' mean and spread "
                   "(EXP/seeds.json); one seed: as --seed.")
@pairwise_option
@click.option("--resume", is_flag=True, help="Continue an interrupted experiment.")
@click.option("--force", is_flag=True, help="Overwrite an existing experiment folder.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Folds trained at once (this process and N-1 spawned ones), each with a share of the CPU threads.")
def train_head_cmd(fold: str, config_path: Path | None, cache_root: Path, exp: Path, split: str | None,
                   weight_set: str | None, dataset: str | None, folds_path: Path | None, init: Path | None,
                   epochs: int | None, pretrain_dataset: str | None, seed: int | None, select_on: str | None,
                   seeds_text: str | None, pairwise: bool, resume: bool, force: bool, workers: int) -> None:
    """Train projection heads per identity-disjoint fold on cached features, selecting on dev EER.

    Prints each fold's dev EER, heard and unheard separately, and their mean; where the training identities
    have genders (MAV-Celeb v4), also the heard dev EER with same-gender impostors (FLAG's gender track).

    \b
    Example:
      fva train-head --fold all --cache work/demo/cache --dataset mavceleb-v3 --split english-unheard \\
          --exp work/demo/exp/noen
    """
    from fva.heads.config import load_config
    from fva.heads.trainer import train_head

    overrides: dict = {"data": {}}
    if split:
        overrides["data"]["split"] = split
    if weight_set:
        overrides["data"]["weight_set"] = weight_set
    if epochs is not None or select_on is not None:
        overrides["train"] = {k: v for k, v in (("epochs", epochs), ("select_on", select_on)) if v is not None}
    if pretrain_dataset is not None:
        overrides["data"]["pretrain_dataset"] = pretrain_dataset
    if dataset:
        overrides["data"]["dataset"] = dataset
    if folds_path:
        overrides["data"]["folds"] = str(folds_path)
    if seed is not None:
        overrides["seed"] = seed
    overrides.update(pairwise_overrides(pairwise))
    cfg = load_config(config_path, overrides)
    if seeds_text is not None:
        from fva.heads.compare import parse_seeds, train_seeds

        if seed is not None:
            raise click.UsageError("give --seed or --seeds, not both")
        seeds = parse_seeds(seeds_text)
        if len(seeds) > 1:
            summary = train_seeds(cfg, cache_root, exp, seeds, parse_folds(fold), init=init, resume=resume,
                                  force=force, workers=workers, log=click.echo)
            for kind in ("heard", "unheard"):
                if summary[f"mean_{kind}"]:
                    click.echo(f"mean dev EER {kind} over seeds {seeds_text}: " + ", ".join(
                        f"{k} {v['mean']:.2f}% ± {v['std']:.2f} ({v['min']:.2f}–{v['max']:.2f})"
                        for k, v in summary[f"mean_{kind}"].items()))
            click.echo(f"{exp}/seeds.json")
            return
        overrides["seed"] = seeds[0]
        cfg = load_config(config_path, overrides)
    metrics = train_head(cfg, cache_root, exp, parse_folds(fold), init=init, resume=resume, force=force,
                         workers=workers, log=click.echo)
    for kind in ("heard", "unheard"):
        means = metrics[f"mean_{kind}"]
        if means:
            click.echo(f"mean dev EER {kind}: " + ", ".join(f"{k} {v:.2f}%" for k, v in means.items()))
    from fva.experiment import heard_eers

    same = heard_eers(metrics, "same-gender")
    if same:
        click.echo("mean dev EER heard, same-gender impostors: " + ", ".join(f"{k} {v:.2f}%" for k, v in same.items()))
    from fva.experiment import METRICS_FILE

    click.echo(f"{exp}/{METRICS_FILE}")


@click.command(short_help="Train several head systems on the same folds; one table.")
@click.option("--systems", required=True,
              help="Comma-separated system names (shipped fva/configs/systems/<name>.yaml) or YAML paths.")
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Base config every system's YAML is laid over (dataset, features, folds, training budget): "
                   "a YAML path or a shipped config's name (demo).")
@heads_cache_option
@click.option("--fold", "fold", default="all", show_default=True, help="'all', a fold number or a list (0,1,2).")
@click.option("--split", default=None, help="Training languages: full or <language>-unheard (overrides the configs).")
@click.option("--dataset", default=None, help="MAV-Celeb cache folder name, e.g. mavceleb-v4 (overrides the configs).")
@click.option("--out", type=click.Path(path_type=Path), default=Path("work/compare"), show_default=True,
              help="Folder for the experiments (one per system), compare.json and compare.md.")
@click.option("--force", is_flag=True, help="Overwrite existing experiment folders.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Folds trained at once per system (this process and N-1 spawned ones).")
@click.option("--seeds", "seeds_text", default=None, metavar="0,1,2",
              help="Train every system once per seed into OUT/seed<k>/<system>/; the table shows mean ± std "
                   "(min–max) over seeds. One seed: as the configs' seed replaced.")
@click.option("--bootstrap", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Resamples of the pooled dev EER's interval over identities (0: none).")
@pairwise_option
def compare(systems: str, config_path: Path | None, cache_root: Path, fold: str, split: str | None,
            dataset: str | None, out: Path, force: bool, workers: int, seeds_text: str | None, bootstrap: int,
            pairwise: bool) -> None:
    """Train the named head systems over the same folds and print dev EER heard, unheard, their mean and the
    training seconds of each, as a markdown table (also written with JSON to OUT).

    \b
    Example:
      fva compare --systems fame2026,xm-align,fop --config demo --cache work/demo/cache \\
          --split english-unheard --out work/demo/compare
    """
    from fva.heads.compare import compare_systems, markdown_table, parse_seeds

    data = {key: value for key, value in (("split", split), ("dataset", dataset)) if value}
    overrides = {**({"data": data} if data else {}), **pairwise_overrides(pairwise)} or None
    seeds = parse_seeds(seeds_text) if seeds_text is not None else None
    rows = compare_systems([n.strip() for n in systems.split(",") if n.strip()], cache_root, out,
                           base=config_path, folds=parse_folds(fold), overrides=overrides, force=force,
                           workers=workers, log=click.echo, seeds=seeds, bootstrap=bootstrap)
    click.echo(markdown_table(rows))
    click.echo(f"{out}/compare.json")


@click.command("import-fop", short_help="An official FOP baseline checkpoint as an fva experiment.")
@click.argument("checkpoint", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Experiment folder to write.")
@click.option("--voice-encoders", required=True,
              help="Cache name(s) of the voice features the checkpoint takes, comma-separated (the published "
                   "checkpoints take 512-d utterance embeddings).")
@click.option("--face-encoders", default="vggface", show_default=True, help="Cache name(s) of the face features.")
@click.option("--cache", "cache_root", type=click.Path(path_type=Path), default=None,
              help="Cache root whose features the experiment scores (needed with several encoders per modality).")
@click.option("--dataset", default="mavceleb-v3", show_default=True, help="Dataset folder under --cache.")
@click.option("--force", is_flag=True, help="Overwrite an existing experiment folder.")
def import_fop_cmd(checkpoint: Path, out: Path, voice_encoders: str, face_encoders: str, cache_root: Path | None,
                   dataset: str, force: bool) -> None:
    """Turn an official FAME baseline (FOP) checkpoint, a torch file holding {'epoch', 'state_dict'}, into an
    fva experiment that 'fva score' and submission plans use, giving the official code's scores (Euclidean
    distance between tanh(face) and tanh(voice) embeddings).

    \b
    Example:
      fva import-fop v3_models/English/checkpoint.pth.tar --out work/exp/fop-official \\
          --voice-encoders utterance-512 --cache work/cache
    """
    from fva.heads.fop_import import import_fop

    def names(text: str) -> list[str]:
        return [n.strip() for n in text.split(",") if n.strip()]

    exp = import_fop(checkpoint, out, cache=cache_root, dataset=dataset, voice_encoders=names(voice_encoders),
                     face_encoders=names(face_encoders), force=force)
    click.echo(f"{exp}: fop experiment (fold0/checkpoint.pt)")


@click.command(short_help="Score a trial list with an experiment.")
@trained_exp_option
@click.option("--trials", type=click.Path(path_type=Path), required=True, help="FAME trial list.")
@click.option("--cache", "cache_root", type=click.Path(path_type=Path), default=None,
              help="Cache root with the trial media's features (default: the experiment's).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Score file to write.")
@pairwise_option
def score(exp: Path, trials: Path, cache_root: Path | None, out: Path, pairwise: bool) -> None:
    """Score a FAME trial list with an experiment: the system's distance (fame2026: 1 - cosine), post-processed
    as its config says, averaged over its fold models.

    \b
    Example:
      fva score --exp work/demo/exp/full --trials data/demo/English_test.txt --out scores.txt
    """
    from fva.heads.scoring import score_trial_list

    from fva.heads.postprocess import PAIRWISE

    result = score_trial_list(exp, trials, cache_root, max_level=PAIRWISE if pairwise else 3)
    from fva.evaluate.scores import write_scores

    write_scores(out, result)
    click.echo(f"{out}: {len(result)} trials scored")


COMMANDS = [train_head_cmd, compare, import_fop_cmd, score]
