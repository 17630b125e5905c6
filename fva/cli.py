"""The ``fva`` command line: thin commands that parse, call the library and print.

User errors (:class:`fva.errors.FvaError`, unreadable files) become one ``Error:`` line and exit status 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import click

from fva import __version__
from fva.commands import GROUPS
from fva.errors import FvaError
from fva.train.cli import COMMANDS as TRAIN_COMMANDS, EXAMPLES as TRAIN_EXAMPLES

EXAMPLES = """\b
Examples:
  fva demo-data --out data/demo
  fva demo-world --out data/world
  fva manifest --dataset mavceleb-v3 --root data/demo --out work/demo/train.jsonl
  fva folds --manifest work/demo/train.jsonl --out work/demo/folds
  fva demo-checkpoints --out data/demo-checkpoints
  fva extract --manifest work/demo/train.jsonl --cache work/demo/cache --encoders speaker-ecapa \\
      --weights speaker-ecapa=data/demo-checkpoints/speaker-ecapa
  fva cache info work/demo/cache/mavceleb-v3/train-full/speaker-ecapa
  fva train-head --fold all --cache work/demo/cache --split english-unheard --exp work/demo/exp/noen
  fva score --exp work/demo/exp/noen --trials data/demo/German_test.txt --out scores.txt
  fva verify --exp work/demo/exp/noen face.jpg voice.wav
  fva serve --exp work/demo/exp/noen --port 8000
  fva weights fetch --encoders speaker-ecapa,vggface
  fva submission make --plan work/demo/plan.yaml --out submission.zip --ground-truth data/demo
  fva evaluate --scores scores.txt --labels data/demo/German_test_labels.txt --plot det.png
  fva recipe table work/fame2026/exp/pretrain-full work/fame2026/exp/finetune-full
""" + TRAIN_EXAMPLES


class UserError(click.ClickException):
    """A user error shown as one line, exit status 2."""

    exit_code = 2


class FvaGroup(click.Group):
    """Click group that turns library user errors into :class:`UserError`."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FvaError as err:
            raise UserError(str(err)) from None
        except OSError as err:  # unreadable, unwritable or vanished files the user named
            raise UserError(f"{err.filename or ''}: {err.strerror or err}".lstrip(": ")) from None


@click.group(cls=FvaGroup, epilog=EXAMPLES, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fva")
@click.option("--offline", is_flag=True, help="Load only local copies of model weights, never download "
              "(sets HF_HUB_OFFLINE=1 and FVA_OFFLINE=1, inherited by child processes).")
def cli(offline: bool) -> None:
    """fva: face-voice association for the FAME challenge.

    Stage 1 extracts frozen-encoder features once into HDF5 caches; stage 2 trains light projection heads
    on them per fold, scores trials and writes challenge submissions.
    """
    if offline:
        from fva.extract.weights import go_offline

        go_offline()


for _group in GROUPS:  # fva/commands/<group>.py
    for _command in _group.COMMANDS:
        cli.add_command(_command)
for _command in TRAIN_COMMANDS:  # fva lid, fva train-encoder (fva/train/cli.py)
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="fva")


if __name__ == "__main__":
    main()
