"""The names of the columns sluice adds to a user's rows, each defined once.

`item_id` is sluice's id column. Every other column sluice adds to the rows (ingest
provenance, the label the model trains on, the split and fold) is named here, so no
stage spells a column name of its own.
"""

from __future__ import annotations

ITEM_ID = "item_id"
"""The row's id: the source's id column (`source.id_column`, or a column named `item_id`), else a content hash."""
SOURCE_FILE = "source_file"
"""Ingest provenance: the name of the file the row came from."""
SOURCE_ROW = "source_row"
"""Ingest provenance: the row's 0-based position among its file's data rows."""
LABEL = "label"
"""The training label, one of `labels.classes` (the labels stage)."""
SPLIT = "split"
"""train, val or test (temporal splits may add gap), set by the split stage."""
FOLD = "fold"
"""Cross-validation fold of a train row (0..k-1), -1 outside train; only when `split.folds` is set."""

PROVENANCE = (SOURCE_FILE, SOURCE_ROW)
ADDED = (ITEM_ID, *PROVENANCE, LABEL, SPLIT, FOLD)
"""Every column sluice adds to a user's rows."""
