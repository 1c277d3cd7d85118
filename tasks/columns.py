"""The names of the columns sluice adds to a user's rows, each defined once.

`item_id` is sluice's id column: a source column named `item_id` is the id. Every other
column sluice adds (ingest provenance, the label the model trains on, the split and fold)
starts with `RESERVED_PREFIX`, which ingest refuses in source columns, so a user's own
`label`, `split` or `source_file` column keeps its name and its values through every stage.
"""

from __future__ import annotations

from collections.abc import Iterable

ITEM_ID = "item_id"
"""The row's id: the source's id column (`source.id_column`, or a column named `item_id`), else a content hash."""
RESERVED_PREFIX = "sluice_"
"""Every column sluice adds, except `item_id`, starts with this; a source column may not."""
SOURCE_FILE = f"{RESERVED_PREFIX}source_file"
"""Ingest provenance: the name of the file the row came from."""
SOURCE_ROW = f"{RESERVED_PREFIX}source_row"
"""Ingest provenance: the row's 0-based position among its file's data rows (the header is not a row)."""
LABEL = f"{RESERVED_PREFIX}label"
"""The training label, one of `labels.classes` (the labels stage)."""
SPLIT = f"{RESERVED_PREFIX}split"
"""train, val or test (temporal splits may add gap), set by the split stage."""
FOLD = f"{RESERVED_PREFIX}fold"
"""Cross-validation fold of a train row (0..k-1), -1 outside train; only when `split.folds` is set."""
SPLITS: tuple[str, str, str] = ("train", "val", "test")
"""The values of the split column, in the order the splits are made and reported."""

PROVENANCE = (SOURCE_FILE, SOURCE_ROW)
ADDED = (ITEM_ID, *PROVENANCE, LABEL, SPLIT, FOLD)
"""Every column sluice adds to a user's rows."""


def source_columns(columns: Iterable[object]) -> list[str]:
    """The user's own columns among `columns`: every column but those sluice added."""
    return [str(c) for c in columns if c not in ADDED]


def reserved_columns(columns: Iterable[object]) -> list[str]:
    """Source columns whose names use sluice's reserved prefix."""
    return [str(c) for c in columns if str(c).startswith(RESERVED_PREFIX)]
