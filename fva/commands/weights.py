"""The published encoder weights: list and fetch."""

from __future__ import annotations

import json

import click


@click.group(short_help="List and fetch the published encoder weights.")
def weights() -> None:
    """Published encoder weights: list them, fetch them for offline use."""


def _weights_line(st) -> str:
    where = str(st.path) if st.present else f"not present ({st.location})" if st.location else "not present"
    if not st.source.published:
        where = "not present"
    line = f"{st.source.name:24s} {st.source.describe()}: {where}" + (f", {st.weights_id}" if st.weights_id else "")
    return f"{line}; licence {st.source.licence}"


@weights.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def weights_list(as_json: bool) -> None:
    """Each encoder's (and the LID model's) source, local copy or 'not present', weights identity and licence.

    \b
    Example:
      fva weights list --json
    """
    from fva.extract.weights import list_weights

    statuses = list_weights()
    if as_json:
        click.echo(json.dumps([st.as_dict() for st in statuses], indent=1))
        return
    for st in statuses:
        click.echo(_weights_line(st))


@weights.command("fetch")
@click.option("--encoders", default=None,
              help="Comma-separated sources to fetch (encoder names, or lid); default: those of the default "
                   "system (the FAME 2026 encoders and the LID model).")
@click.option("--lid/--no-lid", "lid", default=None,
              help="Also fetch the VoxLingua107 LID model (default: yes without --encoders, no with it).")
def weights_fetch(encoders: str | None, lid: bool | None) -> None:
    """Fetch the published weights with each library's own download, so that later runs work offline.

    speechbrain models go to $FVA_MODELS, deepface's VGG-Face to $DEEPFACE_HOME/.deepface/weights, the
    transformers models to the Hugging Face cache, ImageBind to torch's hub folder. Prints one line per source:
    where it is now, its weights identity and its licence; a non-commercial licence gets a note of its own.

    \b
    Example:
      fva weights fetch
      fva weights fetch --encoders vggface,vit-age-gender
      fva --offline extract --manifest work/train.jsonl --cache cache
    """
    from fva.extract.weights import fetch, get_source, published_names

    names = published_names(include_lid=False) if encoders is None else \
        [n.strip() for n in encoders.split(",") if n.strip()]
    for name in names:
        get_source(name)  # unknown names first, before any download
    if lid if lid is not None else encoders is None:
        names.append("lid")
    elif lid is False:
        names = [n for n in names if n != "lid"]
    for name in dict.fromkeys(names):
        click.echo(_weights_line(fetch(name)))


COMMANDS = [weights]
