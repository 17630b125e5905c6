"""Language splits: ``full`` keeps every record; ``<language>-unheard`` removes one language from training."""

from __future__ import annotations

from dataclasses import dataclass

from fva.data.languages import canonical_language
from fva.data.records import MediaRecord
from fva.errors import FvaError


@dataclass(frozen=True)
class Split:
    """A parsed split name; ``unheard`` is the canonical language removed, or None for ``full``.

    >>> Split.parse("german-unheard").unheard, Split.parse("full").unheard
    ('German', None)
    """

    name: str
    unheard: str | None

    @classmethod
    def parse(cls, name: str) -> "Split":
        text = name.strip().lower()
        if text == "full":
            return cls("full", None)
        if text.endswith("-unheard") and len(text) > len("-unheard"):
            language = canonical_language(text[: -len("-unheard")])
            return cls(f"{language.lower()}-unheard", language)
        raise FvaError(f"unknown split {name!r}; use 'full' or '<language>-unheard' (e.g. german-unheard)")


def apply_split(records: list[MediaRecord], split: Split, dataset: str) -> tuple[list[MediaRecord], int]:
    """Records kept by ``split`` and how many had no language (dropped from an unheard split, since
    they could be in the unheard language).

    An unheard split of a language the records do not contain is an error: it is almost always a typo or
    the wrong dataset.
    """
    if split.unheard is None:
        return list(records), 0
    present = sorted({r.language for r in records if r.language})
    if split.unheard not in present:
        raise FvaError(
            f"split {split.name}: {dataset} has no {split.unheard} records (languages here: "
            f"{', '.join(present) or 'none'}); pick one of those languages"
        )
    kept = [r for r in records if r.language is not None and r.language != split.unheard]
    unlabelled = sum(r.language is None for r in records)
    return kept, unlabelled
