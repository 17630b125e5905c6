"""The ``fva`` commands, one module per group (lhotse's ``bin/modes`` layout): each command parses, calls the
library and prints; :mod:`fva.cli` gathers them on the ``fva`` group, which turns user errors into one line."""

from fva.commands import data, evaluate, extract, heads, recipe, serve, weights

GROUPS = (data, extract, weights, heads, serve, evaluate, recipe)
