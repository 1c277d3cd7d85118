"""Ingest: raw CSV, Parquet or JSONL files into an immutable, content-hashed Parquet snapshot.

The snapshot id is a hash of the source files' bytes and the reader options, so
ingesting unchanged files again finds the existing snapshot and writes nothing.
Malformed lines never crash a run: they are quarantined with their text, and so are rows
whose id (`source.id_column`, or a column named `item_id`) is empty or repeats an earlier
row's id. A column whose values mix types (numbers in one file, text in another; integers
and strings in one JSONL column) is stored as text. Source columns may not use sluice's
reserved prefix (`tasks.columns`).

CSV and Parquet files are streamed: read in batches and appended to the snapshot with a
`ParquetWriter`, so memory stays at a few batches plus 8 bytes per distinct row (the
seen-set of row hashes, `OccurrenceCounter`) whatever the file size. JSONL files are
read whole. `ingest_files` parses CSV files once (see "one read" below).
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
import os
import queue
import re
import shutil
import threading
from collections.abc import Callable, Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, model_validator

from tasks import rowhash
from tasks.columns import (
    ADDED,
    ITEM_ID,
    PROVENANCE,
    RESERVED_PREFIX,
    SOURCE_FILE,
    SOURCE_ROW,
    reserved_columns,
    source_columns,
)
from tasks.quarantine import (
    check_conservation,
    concat_quarantine,
    empty_quarantine,
    quarantine_rows,
    write_quarantine,
)
from tasks.sql_source import SqlSourceConfig, load_chain, load_chain_ids, load_chain_quarantine

SNAPSHOT_FORMAT = 3  # bump when the snapshot layout or the ids change: old ids must not be reused
# 3: content ids hash each value's canonical form (`tasks.rowhash`), no longer its pandas text
_FORMATS = {
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
CSV_BLOCK_BYTES = 1 << 22
"""CSV bytes parsed per batch (4 MiB; Arrow parses several ahead on its threads: ~70 MB in flight)."""
PARQUET_BATCH_ROWS = 1 << 16


class SourceConfig(BaseModel):
    """Where raw data comes from."""

    model_config = ConfigDict(extra="forbid")

    path: str = ""
    """A file, a folder or a glob; relative paths are taken from the directory sluice runs in."""
    sql: SqlSourceConfig | None = None
    """A database table or query instead of files (`tasks/sql_source.py`)."""
    format: Literal["auto", "csv", "parquet", "jsonl"] = "auto"
    encoding: str = "utf-8"
    delimiter: str = ","
    id_column: str | None = None
    """A column of unique ids. Without one, ids are derived from each row's content."""

    @model_validator(mode="after")
    def _files_or_database(self) -> SourceConfig:
        if bool(self.path) == (self.sql is not None):
            raise ValueError("set exactly one of source.path (files) and source.sql (a database table or query)")
        return self


class IngestError(ValueError):
    """Bad input to ingest: the message names the file and the fix."""


@dataclass(frozen=True)
class SourceFile:
    path: str
    sha256: str
    bytes: int
    format: str


@dataclass
class Snapshot:
    """An immutable snapshot: `data.parquet`, `quarantine.parquet` and `manifest.json` in one folder."""

    snapshot_id: str
    directory: Path
    manifest: dict[str, object] = field(default_factory=dict)
    reused: bool = False

    @property
    def data_path(self) -> Path:
        return self.directory / "data.parquet"

    @property
    def quarantine_path(self) -> Path:
        return self.directory / "quarantine.parquet"

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])  # type: ignore[call-overload]

    @property
    def quarantined(self) -> int:
        return int(self.manifest["quarantined"])  # type: ignore[call-overload]

    def load(self) -> pd.DataFrame:
        if "parts" in self.manifest:  # a database snapshot: every increment of its chain
            return load_chain(self.directory.parent, self.manifest)
        return pd.read_parquet(self.data_path)

    def load_item_ids(self) -> pd.Series:
        """The item id of every row `load()` returns, read without the rest of the data."""
        if "parts" in self.manifest:
            return load_chain_ids(self.directory.parent, self.manifest)
        return pd.read_parquet(self.data_path, columns=[ITEM_ID])[ITEM_ID]

    def load_quarantine(self) -> pd.DataFrame:
        if "parts" in self.manifest:
            return load_chain_quarantine(self.directory.parent, self.manifest)
        return pd.read_parquet(self.quarantine_path)

    def source_names(self) -> str:
        files: list[dict[str, object]] = self.manifest["files"]  # type: ignore[assignment]
        return ", ".join(Path(str(f["path"])).name for f in files)

    def summary_markdown(self) -> str:
        lines = [
            f"### Snapshot `{self.snapshot_id}`{' (reused: unchanged sources)' if self.reused else ''}",
            "",
            f"- rows kept: **{self.rows}**, quarantined (malformed lines, empty or repeated ids): "
            f"**{self.quarantined}**",
            f"- folder: `{self.directory}`",
        ]
        text: dict[str, str] = self.manifest.get("text_columns") or {}  # type: ignore[assignment]
        lines += [f"- column `{c}` stored as text: {why}" for c, why in text.items()]
        lines += ["", "| source file | sha256 | rows read | quarantined |", "|---|---|---|---|"]
        for f in self.manifest["files"]:  # type: ignore[attr-defined]
            lines.append(f"| `{f['path']}` | `{f['sha256'][:12]}…` | {f['rows']} | {f['quarantined']} |")
        return "\n".join(lines)


def resolve_sources(pattern: str, *, base_dir: Path | None = None) -> list[Path]:
    """Files named by a path, a folder or a glob, sorted.

    Raises:
        IngestError: nothing matches.
    """
    base = base_dir or Path.cwd()
    expanded = os.path.expanduser(pattern)
    full = expanded if os.path.isabs(expanded) else str(base / expanded)
    if os.path.isdir(full):
        paths = sorted(p for p in Path(full).iterdir() if p.suffix.lower() in _FORMATS and p.is_file())
    elif glob.has_magic(full):
        paths = sorted(Path(p) for p in glob.glob(full, recursive=True) if os.path.isfile(p))
    else:
        paths = [Path(full)] if os.path.isfile(full) else []
    if not paths:
        raise IngestError(
            f"no input file matches {pattern!r} (looked in {full}); check source.path in the pipeline config "
            "or create the file (for the demo data run `sluice demo`)."
        )
    return paths


def _detect_format(path: Path, declared: str) -> str:
    if declared != "auto":
        return declared
    suffixes = [s.lower() for s in path.suffixes]
    for suffix in reversed(suffixes):
        if suffix in _FORMATS:
            return _FORMATS[suffix]
    raise IngestError(
        f"cannot tell the format of {path} from its extension; rename it to .csv, .parquet or .jsonl, "
        "or set source.format in the pipeline config."
    )


def _complete_utf8(chunk: bytes) -> int:
    """Length of `chunk` without a UTF-8 sequence cut off at its end (the next chunk holds the rest)."""
    end = len(chunk)
    start = end - 1
    while start >= max(0, end - 3) and chunk[start] & 0xC0 == 0x80:  # continuation bytes
        start -= 1
    if start < 0:
        return end
    lead = chunk[start]
    width = 2 if lead >> 5 == 0b110 else 3 if lead >> 4 == 0b1110 else 4 if lead >> 3 == 0b11110 else 1
    return start if end - start < width else end


def _valid_utf8(chunk: bytes) -> bool:
    """Whether `chunk` is UTF-8, checked by Arrow (SIMD, no str objects: several GB/s)."""
    offsets = pa.py_buffer(np.array([0, len(chunk)], dtype=np.int32).tobytes())
    try:
        pa.Array.from_buffers(pa.binary(), 1, [None, offsets, pa.py_buffer(chunk)]).cast(pa.string())
    except pa.ArrowInvalid:
        return False
    return True


def _decode_error(path: Path, encoding: str, chunk_bytes: int) -> IngestError | None:
    """The first undecodable byte of a file, found with Python's decoder (precise, slower)."""
    decoder = codecs.getincrementaldecoder(encoding)()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                return _undecodable(path, encoding, chunk[exc.start], size + exc.start)
            size += len(chunk)
    pending = decoder.getstate()[0]  # bytes of a character the file ends inside
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return _undecodable(path, encoding, pending[0], size - len(pending))
    return None


def _undecodable(path: Path, encoding: str, byte: int, offset: int) -> IngestError:
    return IngestError(
        f"{path} is not valid {encoding}: byte 0x{byte:02x} at offset {offset} cannot be decoded. Re-save the "
        "file as UTF-8 (e.g. `iconv -f latin1 -t utf-8`), or set source.encoding in the pipeline config to the "
        "file's real encoding (e.g. latin-1)."
    )


def hash_file(path: Path, *, encoding: str | None = "utf-8", chunk_bytes: int = 1 << 22) -> SourceFile:
    """sha256 of a file's bytes, checking in the same pass that text files decode.

    Raises:
        IngestError: the file is empty, binary, or not valid in `encoding`.
    """
    digest = hashlib.sha256()
    size = 0
    utf8 = encoding is not None and codecs.lookup(encoding).name == "utf-8"
    decoder = codecs.getincrementaldecoder(encoding)() if encoding and not utf8 else None
    # A NUL byte never occurs in ASCII-compatible text (latin-1 would decode it happily); UTF-16/32 are full of them.
    nul_is_binary = encoding is not None and not codecs.lookup(encoding).name.startswith(("utf-16", "utf-32"))
    carried = b""  # UTF-8: the start of a character the chunk boundary cut
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
            if nul_is_binary and (nul := chunk.find(b"\0")) >= 0:
                raise IngestError(
                    f"{path} is a binary file, not text (a NUL byte at offset {size + nul}); point "
                    "source.path at CSV, JSONL or Parquet files (a Parquet file needs the .parquet extension "
                    "or source.format: parquet), or set source.encoding if it is UTF-16 text."
                )
            if utf8:
                text = carried + chunk
                complete = _complete_utf8(text)
                if not _valid_utf8(text[:complete]):
                    raise _decode_error(path, "utf-8", chunk_bytes) or _undecodable(path, "utf-8", 0, size)
                carried = text[complete:]
            elif decoder is not None:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    raise _undecodable(path, str(encoding), chunk[exc.start], size + exc.start) from None
            size += len(chunk)
    if carried and (error := _decode_error(path, "utf-8", chunk_bytes)) is not None:
        raise error
    if size == 0:
        raise IngestError(f"{path} is empty (0 bytes); remove it from source.path or fill it with data.")
    return SourceFile(path=str(path), sha256=digest.hexdigest(), bytes=size, format="")


def snapshot_id_for(files: list[SourceFile], config: SourceConfig) -> str:
    """Content hash of the sources and the reader options that shape the snapshot."""
    payload = {
        "format_version": SNAPSHOT_FORMAT,
        "files": sorted((Path(f.path).name, f.sha256) for f in files),
        "reader": config.model_dump(exclude={"path", "sql"}),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _describe_bad_row(row: pa_csv.InvalidRow) -> str:
    return f"expected {row.expected_columns} fields, found {row.actual_columns}: {row.text[:500]}"


def _unreadable_csv(path: Path, exc: Exception) -> IngestError:
    return IngestError(f"{path} cannot be read as CSV ({exc}); check source.delimiter and source.encoding.")


def _unreadable_parquet(path: Path, exc: Exception) -> IngestError:
    return IngestError(f"{path} is not a readable Parquet file ({exc}); check the file or source.format.")


def _read_csv(path: Path, config: SourceConfig) -> tuple[pd.DataFrame, list[str]]:
    malformed: list[str] = []

    def _on_bad_row(row: pa_csv.InvalidRow) -> str:
        malformed.append(_describe_bad_row(row))
        return "skip"

    read = pa_csv.ReadOptions(encoding=config.encoding, block_size=1 << 24)
    parse = pa_csv.ParseOptions(
        delimiter="\t" if path.suffix.lower() == ".tsv" else config.delimiter,
        newlines_in_values=True,
        invalid_row_handler=_on_bad_row,
    )
    convert = pa_csv.ConvertOptions(strings_can_be_null=True)
    try:
        table = pa_csv.read_csv(path, read_options=read, parse_options=parse, convert_options=convert)
    except pa.ArrowInvalid as exc:
        raise _unreadable_csv(path, exc) from exc
    return table.to_pandas(), malformed


def _read_jsonl(path: Path, config: SourceConfig) -> tuple[pd.DataFrame, list[str], list[str]]:
    """The file's records, the text of each malformed line, and the columns stored as text (mixed types)."""
    records: list[dict[str, object]] = []
    malformed: list[str] = []
    with path.open(encoding=config.encoding) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                malformed.append(f"line {number} is not JSON ({exc.msg}): {line[:500].rstrip()}")
                continue
            if not isinstance(value, dict):
                malformed.append(
                    f"line {number} is a JSON {type(value).__name__}, not an object: {line[:500].rstrip()}"
                )
                continue
            records.append(value)
    frame, mixed = _conform_mixed_json(pd.DataFrame.from_records(records))
    return frame, malformed, mixed


def _json_text(value: object) -> str | None:
    """A value as text: strings as they are, anything else as JSON writes it; a missing value stays missing."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _as_text(values: pd.Series) -> pd.Series:
    return pd.Series([_json_text(v) for v in values], index=values.index, dtype="str", name=values.name)


def _conform_mixed_json(frame: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """JSON columns whose values fit no one Arrow type (integers and strings, objects and numbers) as text."""
    mixed = []
    for name in frame.columns:
        if frame[name].dtype != object:
            continue
        try:
            pa.array(frame[name], from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            mixed.append(str(name))
    for name in mixed:
        frame[name] = _as_text(frame[name])
    return frame, mixed


def read_source(path: Path, fmt: str, config: SourceConfig) -> tuple[pd.DataFrame, list[str]]:
    """One source file as a DataFrame, plus the text of each malformed line."""
    if fmt == "csv":
        return _read_csv(path, config)
    if fmt == "jsonl":
        frame, malformed, _ = _read_jsonl(path, config)
        return frame, malformed
    try:
        return pq.read_table(path).to_pandas(), []
    except pa.ArrowInvalid as exc:
        raise _unreadable_parquet(path, exc) from exc


def _content_hashes(table: pa.Table) -> np.ndarray:
    """64-bit hash of each row's content (provenance and id columns excluded): the base of a content id.

    Each value is hashed in a canonical form (`tasks.rowhash`), so a row's hash does not depend on the
    other rows of its batch, on how pandas or Arrow store a column, or on the order of the columns.
    """
    names = [c for c in table.column_names if c not in PROVENANCE and c != ITEM_ID]
    return rowhash.hash_rows(table, names)


def _format_ids(hashes: np.ndarray, occurrence: np.ndarray) -> pa.Array:
    """`<16 hex digits>` per hash, `-k` appended for the k-th repeat (vectorised: ~40 M ids a run)."""
    ids = rowhash.format_hex(hashes)
    repeated = np.flatnonzero(occurrence)
    if repeated.size:
        suffixed = [f"{base}-{occurrence[i]}" for base, i in zip(ids.take(repeated).to_pylist(), repeated, strict=True)]
        mask = np.zeros(len(ids), dtype=bool)
        mask[repeated] = True
        ids = pc.replace_with_mask(ids, pa.array(mask), pa.array(suffixed, type=pa.string()))
    return ids


def derive_item_ids(df: pd.DataFrame, *, id_column: str | None, where: str) -> pd.Series:
    """Stable item ids: the id column as text when given, else a hash of each row's content.

    Content ids survive reordering and appended files, which keeps Label Studio
    tasks and split manifests stable. Repeated rows get `-1`, `-2`, … suffixes.
    `ingest_files` computes the same ids batch by batch (see `OccurrenceCounter`), and
    quarantines rows whose id column is empty or repeats an earlier id.
    """
    if id_column:
        if id_column not in df.columns:
            raise IngestError(
                f'column "{id_column}" (source.id_column) is missing from {where}; '
                f"available columns: {', '.join(map(str, df.columns))}."
            )
        return values_as_text(df[id_column]).rename(ITEM_ID)
    hashes = _content_hashes(pa.Table.from_pandas(df, preserve_index=False))
    base = pd.Series(hashes).groupby(hashes).cumcount().to_numpy()
    return pd.Series(_format_ids(hashes, base).to_pandas(), index=df.index, dtype="str", name=ITEM_ID)


def values_as_text(values: pd.Series) -> pd.Series:
    """A column of ids or labels as text; blank values are missing.

    An integer column with a gap reads as float, so integral floats lose their ".0": 7 is "7", not "7.0".
    """
    text = values.astype("str")
    if pd.api.types.is_float_dtype(values):
        integral = values.notna() & (values % 1 == 0) & (values.abs() < 2**53)
        text = text.where(~integral, values[integral].astype("int64").astype("str"))
    return text.where(values.notna() & text.str.strip().ne(""))


class OccurrenceCounter:
    """How often each 64-bit hash was seen before, for a stream of batches, in bounded memory.

    Content ids give the k-th repeat of a row the suffix `-k`, which needs every earlier
    row's hash. Python sets cost ~100 bytes a row; this keeps the distinct hashes in
    sorted numpy runs (8 bytes a row), log-structured: a batch's new hashes become a
    run, and runs of similar size are merged (a linear merge: timsort sees two sorted
    runs), capped at `run_cap` entries so a merge never needs more than 2 x 8 x run_cap
    bytes. Lookups binary-search every run. Only hashes seen more than once go into a
    dict with their count. 50 M distinct rows cost ~400 MB.
    """

    def __init__(self, run_cap: int = 1 << 22) -> None:
        self._runs: list[np.ndarray] = []
        self._repeats: dict[int, int] = {}
        self._run_cap = run_cap

    @property
    def distinct(self) -> int:
        return sum(run.size for run in self._runs)

    def occurrences(self, hashes: np.ndarray) -> np.ndarray:
        """For each hash (in order), how many times it occurred before it; then count them all."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        if hashes.size == 0:
            return np.zeros(0, dtype=np.int64)
        unique, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
        seen = np.zeros(unique.size, dtype=bool)
        for run in self._runs:
            position = np.minimum(np.searchsorted(run, unique), run.size - 1)
            seen |= run[position] == unique
        prior = np.zeros(unique.size, dtype=np.int64)
        for i in np.flatnonzero(seen):
            prior[i] = self._repeats.get(int(unique[i]), 1)
        occurrence = prior[inverse]
        within = counts[inverse] > 1  # most hashes occur once in a batch: rank only the others (a sort)
        if within.any():
            occurrence[within] += _rank_within(inverse[within])
        for i in np.flatnonzero(seen | (counts > 1)):
            self._repeats[int(unique[i])] = int(prior[i] + counts[i])
        self._add_run(unique[~seen])
        return occurrence

    def _add_run(self, run: np.ndarray) -> None:
        if run.size == 0:
            return
        self._runs.append(run)
        while (
            len(self._runs) >= 2
            and self._runs[-2].size <= 2 * self._runs[-1].size
            and self._runs[-2].size + self._runs[-1].size <= self._run_cap
        ):
            newer = self._runs.pop()
            merged = np.concatenate([self._runs.pop(), newer])
            merged.sort(kind="stable")
            self._runs.append(merged)


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """0, 1, 2, … for the successive members of each group, in input order."""
    order = np.argsort(groups, kind="stable")
    ordered = groups[order]
    starts = np.ones(ordered.size, dtype=bool)
    starts[1:] = ordered[1:] != ordered[:-1]
    index = np.arange(ordered.size)
    rank_sorted = index - np.maximum.accumulate(np.where(starts, index, 0))
    rank = np.empty_like(rank_sorted)
    rank[order] = rank_sorted
    return rank


# --- streaming ---------------------------------------------------------------------------------------------
# The two-read path (`scan_source` + `write_snapshot`: the flow's per-file tasks, Parquet and JSONL files, and
# CSV inputs that "one read" below hands back) reads every file twice, a batch at a time:
#   1. scan: learn the Arrow types the WHOLE file needs (a column of integers in the first block may
#      hold "1.5" millions of lines later), count rows, collect malformed lines, and keep a few probe
#      rows (`_ProbeRows`) that carry the whole file's pandas dtypes and timestamp precisions;
#   2. write: read again with those types fixed, give each batch the snapshot's columns and dtypes,
#      hash its rows into item ids and append it to data.parquet.
# pandas decides the snapshot's dtypes and column order by concatenating the probes, so ids and dtypes
# are exactly what one DataFrame of every file (`read_source` + `derive_item_ids`) gives.


@dataclass
class SourceScan:
    """What the first read of one file learned: rows, malformed lines, probe rows and (CSV) the column types.

    Small (a few rows), so a scan can travel back from a Dask worker.
    """

    source: SourceFile
    rows: int
    malformed: list[str]
    probe: pd.DataFrame
    """A few real rows that carry the whole file's pandas dtypes and timestamp precisions."""
    schema: pa.Schema | None = None
    """CSV: the Arrow types the second read uses."""
    mixed: list[str] = field(default_factory=list)
    """JSONL: columns whose values mix types within the file, read as text."""
    block_bytes: int = 0
    """CSV: the smallest batch size that holds the file's largest row (0: any)."""


class _ProbeRows:
    """Real rows of a file that stand in for all of it when pandas picks dtypes and formats values.

    For each column: the first row with a value, the first row without one (an int column with a
    null anywhere becomes float64 in pandas), and for timestamps and durations the first row of each
    precision the file has (pandas formats a whole datetime column at its finest precision, so the
    text a timestamp hashes as depends on the other rows: "10:00:00" becomes "10:00:00.000000000"
    when any row has nanoseconds). Every probe row is a real row, so the probe adds no precision
    the file lacks.
    """

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self.rows = 0
        self._picked: list[pa.RecordBatch] = []
        self._found: set[tuple[str, str]] = set()

    def add(self, batch: pa.RecordBatch) -> None:
        wanted: set[int] = set()
        for name, column in zip(batch.schema.names, batch.columns, strict=True):
            done = {kind for column_name, kind in self._found if column_name == name}
            for kind, index in _probe_indices(column, skip=done).items():
                if (name, kind) not in self._found:
                    self._found.add((name, kind))
                    wanted.add(index)
        self._picked.extend(batch.slice(i, 1) for i in sorted(wanted))
        self.rows += batch.num_rows

    def probe(self) -> pa.Table:
        return pa.Table.from_batches(self._picked, schema=self.schema)


def _probe_indices(column: pa.Array, *, skip: Collection[str] = ()) -> dict[str, int]:
    """Row index of the first value, the first null and the first of each timestamp precision.

    Kinds in `skip` (found in an earlier batch) are not looked for: the precision checks cost a pass each.
    """
    found: dict[str, int] = {}
    if "value" not in skip and column.null_count < len(column):
        found["value"] = int(pc.index(column.is_valid(), True).as_py())
    if "null" not in skip and column.null_count:
        found["null"] = int(pc.index(column.is_null(), True).as_py())
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_duration(kind):
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[kind.unit]
        # pandas' format flags: not at midnight / whole days, then sub-second, sub-ms, sub-us parts
        divisors = (86_400 * per_second, per_second, per_second // 1_000, per_second // 1_000_000)
        wanted = [d for d in divisors if d > 1 and f"precision-{d}" not in skip]
        ticks = column.cast(pa.int64()).fill_null(0).to_numpy() if wanted else np.zeros(0, np.int64)
        for divisor in wanted:
            hits = np.flatnonzero(ticks % divisor)
            if hits.size:
                found[f"precision-{divisor}"] = int(hits[0])
    return found


def _pandas_probe_indices(frame: pd.DataFrame) -> list[int]:
    """`_ProbeRows` for JSONL (JSON has no timestamps): first value and first null of each column."""
    wanted: set[int] = set()
    for position in range(frame.shape[1]):
        present = frame.iloc[:, position].notna().to_numpy()
        if present.any():
            wanted.add(int(present.argmax()))
        if not present.all():
            wanted.add(int((~present).argmax()))
    return sorted(wanted)


def _to_pandas(table: pa.Table) -> pd.DataFrame:
    frame = table.to_pandas().reset_index(drop=True)
    for name, dtype in frame.dtypes.items():
        # A dictionary-encoded Parquet column arrives as plain values: each batch has its own
        # dictionary, and categories from one batch would turn another batch's values into NaN.
        if isinstance(dtype, pd.CategoricalDtype):
            frame[name] = frame[name].astype(object).infer_objects()
    return frame


def _csv_options(
    path: Path,
    config: SourceConfig,
    *,
    block_bytes: int,
    column_types: dict[str, pa.DataType],
    malformed: list[str] | None,
) -> dict[str, object]:
    def _on_bad_row(row: pa_csv.InvalidRow) -> str:
        if malformed is not None:
            malformed.append(_describe_bad_row(row))
        return "skip"

    return {
        "read_options": pa_csv.ReadOptions(encoding=config.encoding, block_size=block_bytes),
        "parse_options": pa_csv.ParseOptions(
            delimiter="\t" if path.suffix.lower() == ".tsv" else config.delimiter,
            newlines_in_values=True,
            invalid_row_handler=_on_bad_row,
        ),
        "convert_options": pa_csv.ConvertOptions(strings_can_be_null=True, column_types=column_types),
    }


def _wider_type(current: pa.DataType) -> pa.DataType:
    """The type Arrow's CSV inference tries after `current` fails on a value (its order, measured):
    null, int64, bool, double, date32, time32, timestamp[s], timestamp[ns], string."""
    if pa.types.is_null(current):
        return pa.int64()
    if pa.types.is_integer(current):
        return pa.bool_()
    if pa.types.is_boolean(current):
        return pa.float64()
    if pa.types.is_floating(current):
        return pa.date32()
    if pa.types.is_date(current):
        return pa.time32("s")
    if pa.types.is_time(current):
        return pa.timestamp("s")
    if pa.types.is_timestamp(current) and current.unit == "s":
        return pa.timestamp("ns", tz=current.tz)
    return pa.string()


_FAILED_COLUMN = re.compile(r"In CSV column #(\d+): .*conversion error")


def _scan_csv(path: Path, source: SourceFile, config: SourceConfig, block_bytes: int) -> SourceScan:
    """Stream a CSV once for its types, rows, malformed lines and probe.

    Arrow's streaming reader fixes each column's type from the first block and fails on a later
    value that does not fit; the whole-file reader widens the type instead. Here a failure widens
    that one column (the next type in Arrow's own order) and the scan starts again, so the final
    types are the ones a whole-file read infers. Restarts happen only when a later block surprises.
    """
    forced: dict[str, pa.DataType] = {}
    names: list[str] = []
    inferred: dict[str, pa.DataType] = {}
    # Ends: each failure moves one column one step along a finite chain that ends at string, which
    # never fails (a failure on a string column is not a type problem and raises), or doubles the
    # batch size, which ends once a batch holds the largest row.
    while True:
        bad: list[str] = []
        options = _csv_options(path, config, block_bytes=block_bytes, column_types=forced, malformed=bad)
        try:
            reader = pa_csv.open_csv(path, **options)
            names, inferred = reader.schema.names, {f.name: f.type for f in reader.schema}
            stats = _ProbeRows(reader.schema)
            for batch in reader:
                stats.add(batch)
        except pa.ArrowInvalid as exc:
            if "straddling object" in str(exc):  # one row (a huge cell) spans several batches: read bigger ones
                block_bytes *= 2
                continue
            failed = _FAILED_COLUMN.search(str(exc))
            index = int(failed.group(1)) if failed else -1
            if not 0 <= index < len(names) or pa.types.is_string(forced.get(names[index], pa.null())):
                raise _unreadable_csv(path, exc) from exc
            name = names[index]
            forced[name] = _wider_type(forced.get(name, inferred[name]))
            continue
        return SourceScan(
            source=source,
            rows=stats.rows,
            malformed=bad,
            probe=_to_pandas(stats.probe()),
            schema=stats.schema,
            block_bytes=block_bytes,
        )


def _scan_parquet(path: Path, source: SourceFile) -> SourceScan:
    try:
        parquet = pq.ParquetFile(path)
        stats = _ProbeRows(parquet.schema_arrow)
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            stats.add(batch)
    except pa.ArrowInvalid as exc:
        raise _unreadable_parquet(path, exc) from exc
    return SourceScan(source=source, rows=stats.rows, malformed=[], probe=_to_pandas(stats.probe()))


def scan_source(source: SourceFile, config: SourceConfig, block_bytes: int = CSV_BLOCK_BYTES) -> SourceScan:
    """First read of one file: column types, rows, malformed lines and probe rows; holds no data.

    Raises:
        IngestError: the file is unreadable or has no data rows.
    """
    path = Path(source.path)
    if source.format == "csv":
        scan = _scan_csv(path, source, config, block_bytes)
    elif source.format == "parquet":
        scan = _scan_parquet(path, source)
    else:
        frame, malformed, mixed = _read_jsonl(path, config)
        probe = frame.iloc[_pandas_probe_indices(frame)]
        scan = SourceScan(source=source, rows=len(frame), malformed=malformed, probe=probe, mixed=mixed)
    _check_has_rows(scan)
    return scan


def _check_has_rows(scan: SourceScan) -> None:
    if scan.rows == 0 and not scan.malformed:
        raise IngestError(
            f"{scan.source.path} has no data rows (only a header?); fill it or remove it from source.path."
        )


def _iter_frames(
    scan: SourceScan, config: SourceConfig, block_bytes: int, text: Collection[str] = ()
) -> Iterator[pd.DataFrame]:
    """The file's rows again, batch by batch, with the types the scan settled on and `text` columns as text."""
    path = Path(scan.source.path)
    if scan.source.format == "csv":
        assert scan.schema is not None
        # A column stored as text is read as text: the values exactly as the file writes them.
        types = {f.name: pa.string() if f.name in text else f.type for f in scan.schema}
        block = max(block_bytes, scan.block_bytes)
        options = _csv_options(path, config, block_bytes=block, column_types=types, malformed=None)
        for batch in pa_csv.open_csv(path, **options):
            yield _to_pandas(pa.Table.from_batches([batch]))
    elif scan.source.format == "parquet":
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            table = pa.Table.from_batches([batch], schema=parquet.schema_arrow)
            for name in set(text) & set(table.column_names):
                index = table.column_names.index(name)
                table = table.set_column(index, name, _arrow_text(table.column(index)))
            yield _to_pandas(table)
    else:
        frame = _read_jsonl(path, config)[0]
        for name in set(text) & set(map(str, frame.columns)):
            if not pd.api.types.is_string_dtype(frame[name]):
                frame[name] = _as_text(frame[name])
        yield frame


def _arrow_text(column: pa.ChunkedArray) -> pa.ChunkedArray:
    """An Arrow column as text: Arrow's own cast where it has one, else each value as JSON."""
    try:
        return column.cast(pa.string())
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid):  # lists and structs have no cast to string
        return pa.chunked_array([pa.array([_json_text(v) for v in column.to_pylist()], type=pa.string())])


def _value_kind(values: pd.Series) -> str | None:
    """The kind of a probe column's values (number, text, bool, …), None when it holds only missing values."""
    dtype = values.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        zone = getattr(dtype, "tz", None)
        return f"timestamp ({zone})" if zone else "timestamp"
    if pd.api.types.is_timedelta64_dtype(dtype):
        return "duration"
    present = values.dropna()
    if present.empty:
        return None
    first = present.iloc[0]
    kinds = {str: "text", bool: "bool", int: "number", float: "number", dict: "object", list: "list"}
    return kinds.get(type(first), type(first).__name__)


def _text_columns(scans: list[SourceScan]) -> dict[str, str]:
    """Columns to store as text, each with why: their values mix types within a file or between files.

    Without this, pandas would make an object column of numbers and strings that Parquet cannot store
    (or silently turn `true` into 1 beside integers).
    """
    why: dict[str, str] = {}
    for scan in scans:
        for name in scan.mixed:
            why.setdefault(name, f"values of several types in {Path(scan.source.path).name}")
    kinds: dict[str, dict[str, str]] = {}
    for scan in scans:
        for name in scan.probe.columns:
            kind = _value_kind(scan.probe[name])
            if kind is not None:
                kinds.setdefault(str(name), {}).setdefault(kind, Path(scan.source.path).name)
    for name, seen in kinds.items():
        if len(seen) > 1:
            why.setdefault(name, ", ".join(f"{kind} in {file}" for kind, file in seen.items()))
    return why


def _with_provenance(frame: pd.DataFrame, name: str, start: int) -> pd.DataFrame:
    frame = frame.copy(deep=False)
    frame.insert(len(frame.columns), SOURCE_FILE, name)
    frame.insert(len(frame.columns), SOURCE_ROW, np.arange(start, start + len(frame), dtype=np.int64))
    return frame


def _snapshot_layout(scans: list[SourceScan], text: Collection[str] = ()) -> pd.DataFrame:
    """The probes concatenated as `pd.concat` would concatenate the whole files: dtypes and column order."""
    probes = []
    for scan in scans:
        probe = scan.probe.copy(deep=False)
        for name in set(text) & set(map(str, probe.columns)):
            probe[name] = _as_text(probe[name])
        probes.append(_with_provenance(probe, Path(scan.source.path).name, 0))
    return pd.concat(probes, ignore_index=True) if len(probes) > 1 else probes[0].reset_index(drop=True)


def _conform(frame: pd.DataFrame, layout: pd.DataFrame) -> pd.DataFrame:
    """A batch with the snapshot's columns (missing ones as NaN, as concat fills them) and dtypes."""
    if list(frame.columns) != list(layout.columns):
        frame = frame.reindex(columns=layout.columns)
    for name, dtype in layout.dtypes.items():
        if frame[name].dtype != dtype:
            frame[name] = frame[name].astype(dtype)
    return frame


def _arrow_schema(layout: pd.DataFrame, where: str) -> pa.Schema:
    # The id goes first, as text; a source column named item_id is the id, so it moves there.
    with_id = layout.drop(columns=[ITEM_ID], errors="ignore")
    with_id.insert(0, ITEM_ID, pd.Series(["0" * 16] * len(layout), dtype="str"))
    try:
        return pa.Schema.from_pandas(with_id, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise IngestError(
            f"{where} cannot be stored as Parquet ({exc}); make the files agree on each column's type."
        ) from exc


def _id_column(scans: list[SourceScan], config: SourceConfig) -> str | None:
    """The column that holds the ids (None: content ids), after checking the source's column names.

    Raises:
        IngestError: a column uses the reserved prefix, `item_id` clashes with `source.id_column`,
            or a file lacks the id column.
    """
    for scan in scans:
        if reserved := reserved_columns(scan.probe.columns):
            names = ", ".join(f'"{c}"' for c in reserved)
            raise IngestError(
                f"{scan.source.path} has column {names}, but names starting with {RESERVED_PREFIX!r} are "
                f"reserved for the columns sluice adds ({', '.join(ADDED[1:])}); rename it in the file "
                f'(e.g. "{reserved[0].removeprefix(RESERVED_PREFIX)}").'
            )
    with_item_id = [s.source.path for s in scans if ITEM_ID in s.probe.columns]
    if config.id_column and config.id_column != ITEM_ID and with_item_id:
        raise IngestError(
            f'{", ".join(with_item_id)} has a column "{ITEM_ID}", which is sluice\'s id column, but '
            f'source.id_column is "{config.id_column}". Either remove source.id_column (or set it to '
            f"{ITEM_ID}) to use the {ITEM_ID} column as the id, or rename the {ITEM_ID} column in the file "
            f'to keep "{config.id_column}" as the id.'
        )
    column = config.id_column or (ITEM_ID if with_item_id else None)
    for scan in scans:
        if column and scan.rows and column not in scan.probe.columns:
            setting = "source.id_column" if config.id_column else f"sluice's id column, found in {with_item_id[0]}"
            raise IngestError(
                f'column "{column}" ({setting}) is missing from {scan.source.path}; available columns: '
                f"{', '.join(map(str, scan.probe.columns))}. Give every file the id column, or "
                + ("remove source.id_column" if config.id_column else f"rename {ITEM_ID} in the files")
                + " to derive ids from content."
            )
    return column


class _IdFilter:
    """Rows whose id is empty or repeats an earlier row's id leave the stream for quarantine.

    Repeats are found with an `OccurrenceCounter` (bounded memory); the first row of each repeated id is
    looked up in the written snapshot afterwards, so each quarantined copy can name it.
    """

    def __init__(self, column: str, *, configured: bool) -> None:
        self.column = column
        self._setting = "source.id_column" if configured else "sluice's id column"
        self._fix = "remove source.id_column" if configured else f"rename the {ITEM_ID} column"
        self._counter = OccurrenceCounter()
        self._missing: list[pd.DataFrame] = []
        self._repeated: list[pd.DataFrame] = []

    def _classify(self, ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
        """Which ids are missing, and which repeat an earlier one (counting them as seen)."""
        missing = ids.isna().to_numpy()
        occurrence = np.zeros(len(ids), dtype=np.int64)
        occurrence[~missing] = self._counter.occurrences(
            pd.util.hash_pandas_object(ids[~missing], index=False).to_numpy()
        )
        return missing, occurrence > 0

    def keep(self, frame: pd.DataFrame) -> pd.DataFrame:
        """The batch with its ids first (as text), less the rows with no id or an id seen before."""
        ids = values_as_text(frame[self.column])
        missing, repeated = self._classify(ids)
        frame = frame.drop(columns=[ITEM_ID], errors="ignore")
        frame.insert(0, ITEM_ID, ids)
        if missing.any():
            self._missing.append(frame[missing])
        if repeated.any():
            self._repeated.append(frame[repeated])
        return frame[~missing & ~repeated]

    def keep_batch(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """`keep` for an Arrow batch: only the id column and the rows left out go through pandas."""
        ids = values_as_text(batch.column(self.column).to_pandas())
        missing, repeated = self._classify(ids)
        others = [i for i, name in enumerate(batch.schema.names) if name != ITEM_ID]
        batch = pa.RecordBatch.from_arrays(
            [pa.array(ids, type=pa.large_string(), from_pandas=True), *(batch.column(i) for i in others)],
            names=[ITEM_ID, *(batch.schema.names[i] for i in others)],
        )
        if missing.any():
            self._missing.append(batch.filter(pa.array(missing)).to_pandas())
        if repeated.any():
            self._repeated.append(batch.filter(pa.array(repeated)).to_pandas())
        return batch.filter(pa.array(~missing & ~repeated))

    def conform_rejected(self, layout: pd.DataFrame) -> None:
        """The rows `keep_batch` left out, in the snapshot's columns and dtypes, as `keep` gets them."""
        body = layout.drop(columns=[ITEM_ID], errors="ignore")

        def conform(frame: pd.DataFrame) -> pd.DataFrame:
            conformed = _conform(frame.drop(columns=[ITEM_ID]), body)
            conformed.insert(0, ITEM_ID, frame[ITEM_ID])
            return conformed

        self._missing = [conform(frame) for frame in self._missing]
        self._repeated = [conform(frame) for frame in self._repeated]

    def quarantine(self, data_path: Path) -> pd.DataFrame:
        """The rows left out, each with a reason that names the column, the first row with its id, and the fix."""
        if not self._missing and not self._repeated:
            return empty_quarantine()
        missing = pd.concat(self._missing, ignore_index=True) if self._missing else pd.DataFrame()
        repeated = pd.concat(self._repeated, ignore_index=True) if self._repeated else pd.DataFrame({ITEM_ID: []})
        first = _first_rows(data_path, set(repeated[ITEM_ID]))
        where = f'column "{self.column}" ({self._setting})'
        return concat_quarantine(
            [
                quarantine_rows(
                    missing,
                    step="ingest",
                    reason=f"no id: {where} is empty in this row; give every row an id, or {self._fix} to derive ids "
                    "from content",
                ),
                quarantine_rows(
                    repeated,
                    step="ingest",
                    reason=[
                        f'repeated id "{i}" in {where}: first seen in {first.get(i, "an earlier row")}, which is '
                        f"kept; give each row its own id, or {self._fix} to derive ids from content"
                        for i in repeated[ITEM_ID]
                    ],
                ),
            ]
        )

    def rejected_per_file(self) -> dict[str, int]:
        """Rows left out, per source file name."""
        counts: dict[str, int] = {}
        for frame in [*self._missing, *self._repeated]:
            for name, n in frame[SOURCE_FILE].value_counts().items():
                counts[str(name)] = counts.get(str(name), 0) + int(n)
        return counts


def _first_rows(data_path: Path, ids: set[str]) -> dict[str, str]:
    """Where each of `ids` sits in a written snapshot (file and row), read a few columns and a batch at a time."""
    if not ids:
        return {}
    wanted = pa.array(sorted(ids), type=pa.string())
    found: dict[str, str] = {}
    for batch in pq.ParquetFile(data_path).iter_batches(columns=[ITEM_ID, *PROVENANCE]):
        hits = batch.filter(pc.is_in(batch.column(0), value_set=wanted))
        for item, file, row in zip(*(hits.column(i).to_pylist() for i in range(3)), strict=True):
            found[item] = f"{file} data row {row + 1} ({SOURCE_ROW} {row})"
    return found


@dataclass
class _Written:
    columns: list[str]
    rows: int
    quarantine: pd.DataFrame
    text_columns: dict[str, str]
    rejected_per_file: dict[str, int]


def _dictionary_columns(schema: pa.Schema) -> list[str]:
    # ids and row numbers never repeat: a dictionary for them is built, found useless and dropped, per batch
    return [name for name in schema.names if name not in (ITEM_ID, SOURCE_ROW)]


def _write_snapshot_data(
    scans: list[SourceScan], target: Path, config: SourceConfig, *, where: str, block_bytes: int
) -> _Written:
    """Stream every file into `target` with item ids; rows with an empty or repeated id go to quarantine.

    Raises:
        IngestError: a reserved or missing column name, a file that changed between the two reads.
    """
    id_column = _id_column(scans, config)
    text = _text_columns(scans)
    layout = _snapshot_layout(scans, text)
    schema = _arrow_schema(layout, where)
    counter = OccurrenceCounter()
    ids = _IdFilter(id_column, configured=bool(config.id_column)) if id_column else None
    content_schema = schema.remove(0)  # without the id column, which content ids are added to
    kept = 0
    with pq.ParquetWriter(target, schema, use_dictionary=_dictionary_columns(schema)) as writer:
        for scan in scans:
            name, start = Path(scan.source.path).name, 0
            for batch in _iter_frames(scan, config, block_bytes, text):
                frame = _conform(_with_provenance(batch, name, start), layout)
                start += len(frame)
                if ids is not None:
                    frame = ids.keep(frame)
                kept += len(frame)
                try:
                    if ids is not None:
                        table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
                    else:
                        table = pa.Table.from_pandas(frame, schema=content_schema, preserve_index=False)
                        hashes = _content_hashes(table)
                        item_ids = _format_ids(hashes, counter.occurrences(hashes)).cast(schema.field(0).type)
                        table = table.add_column(0, schema.field(0), item_ids)
                    writer.write_table(table)
                except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                    raise IngestError(
                        f"{scan.source.path} cannot be stored as Parquet ({exc}); make its values of each "
                        "column one type."
                    ) from exc
            if start != scan.rows:
                raise IngestError(
                    f"{scan.source.path} changed while it was ingested ({scan.rows} rows, then {start}); "
                    "ingest again once it is fully written."
                )
    return _Written(
        columns=[ITEM_ID, *(str(c) for c in layout.columns if c != ITEM_ID)],
        rows=kept,
        quarantine=ids.quarantine(target) if ids is not None else empty_quarantine(),
        text_columns=text,
        rejected_per_file=ids.rejected_per_file() if ids is not None else {},
    )


# --- one read ----------------------------------------------------------------------------------------------
# `ingest_files` parses CSV files once: each batch gets its ids and is appended to a Parquet part as it is
# parsed, while `_ProbeRows` gathers the whole file's dtypes as the scan does. Content ids hash each value's
# canonical form (`tasks.rowhash`), so they do not depend on the type a column is finally stored as; when
# the parts' types are not the snapshot's (an int column with a late gap is float64 in pandas, files with
# different columns), the parts are cast into the snapshot's types a row group at a time: a Parquet read
# and write, far cheaper than parsing the CSV again. A later block that needs a wider type restarts the
# reader (`_CsvStream`): the rows before it are parsed again, not hashed or written again. What would change
# ids already given out takes the two-read path above (`scan_source` + `write_snapshot`): a column that turns
# to text or bool after values of another kind, a widened id column, and files that disagree on a column's
# kind (stored as their text).


class _NeedsTwoReads(Exception):
    """The input needs the two-read path; the one-read ingest stops and leaves nothing behind."""


def _arrow_conform(table: pa.Table | pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """A batch in the snapshot's columns and types, as `_conform` then `Table.from_pandas` would give it."""
    columns = []
    for target in schema:
        if target.name not in table.schema.names:
            columns.append(pa.nulls(table.num_rows, target.type))  # what concat fills a missing column with
            continue
        column = table.column(target.name)
        if pa.types.is_floating(column.type) and pc.any(pc.is_nan(column)).as_py():
            column = pc.if_else(pc.is_nan(column), pa.scalar(None, column.type), column)  # pandas: NaN is missing
        # Unsafe: int64 -> float64 rounds past 2**53 as pandas' astype does, instead of raising
        columns.append(column if column.type == target.type else column.cast(target.type, safe=False))
    return pa.Table.from_arrays(columns, schema=schema)


class _PartWriter:
    """Batches appended to Parquet parts in a folder, on a thread; a part holds batches of one source type layout.

    Conforming and Parquet encoding release the GIL, so they run beside the next batch's parse and
    hashing. The queue holds at most `depth` batches (4 MiB of CSV each), which bounds the memory.
    """

    def __init__(self, folder: Path, *, depth: int = 4) -> None:
        self.parts: list[tuple[Path, pa.Schema]] = []
        self.rows = 0
        self.layout: pa.Schema | None = None
        """The CSV reader's types of the batches in the current part."""
        self._folder = folder
        self._sources: list[str] = []  # the file each part starts with, for messages
        self._queue: queue.Queue[tuple[int, pa.RecordBatch] | None] = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._drain, name="sluice-parquet-parts", daemon=True)
        self._thread.start()

    def start_part(self, schema: pa.Schema, *, layout: pa.Schema, source: str) -> None:
        self.layout = layout
        self._sources.append(source)
        self.parts.append((self._folder / f".part-{len(self.parts)}.parquet", schema))

    def append(self, batch: pa.RecordBatch) -> None:
        assert self.parts, "start_part before append"
        self.rows += batch.num_rows
        self._put((len(self.parts) - 1, batch))

    def close(self) -> list[tuple[Path, pa.Schema]]:
        """The parts, once all are written.

        Raises:
            IngestError: a batch's values cannot be stored in its part's types.
        """
        if self._thread.is_alive():
            self._put(None)
            self._thread.join()
        if isinstance(self._error, pa.ArrowInvalid | pa.ArrowTypeError):
            raise IngestError(
                f"{self._sources[-1]} cannot be stored as Parquet ({self._error}); make the values of each column "
                "one type."
            ) from self._error
        if self._error is not None:
            raise self._error
        return self.parts

    def _put(self, item: tuple[int, pa.RecordBatch] | None) -> None:
        while True:
            if self._error is not None and item is not None:
                self.close()  # raises the writer's error
            try:
                self._queue.put(item, timeout=1.0)
                return
            except queue.Full:
                continue

    def _drain(self) -> None:
        writer: pq.ParquetWriter | None = None
        current = -1
        while (item := self._queue.get()) is not None:
            if self._error is not None:
                continue  # keep taking batches so that the parsing thread never waits on a dead writer
            index, batch = item
            try:
                path, schema = self.parts[index]
                if writer is None or index != current:
                    if writer is not None:
                        writer.close()
                    writer = pq.ParquetWriter(path, schema, use_dictionary=_dictionary_columns(schema))
                    current = index
                writer.write_table(_arrow_conform(batch, schema))
            except BaseException as exc:
                self._error = exc
        if writer is not None:
            try:
                writer.close()
            except BaseException as exc:
                self._error = self._error or exc


def _csv_header(path: Path, config: SourceConfig, block_bytes: int) -> list[str]:
    """A CSV file's column names, from its first block (at least 64 KiB, more while the first row is longer)."""
    block = min(1 << 16, block_bytes)
    while True:
        options = _csv_options(path, config, block_bytes=block, column_types={}, malformed=None)
        try:
            return list(pa_csv.open_csv(path, **options).schema.names)
        except pa.ArrowInvalid as exc:
            if "straddling object" in str(exc):
                block *= 2
                continue
            raise _NeedsTwoReads from exc  # not CSV: the two-read path words the message


def _planned_id_column(files: list[SourceFile], config: SourceConfig, block_bytes: int) -> str | None:
    """The id column `_id_column` will settle on, read from the headers before any data.

    Raises:
        _NeedsTwoReads: a name `_id_column` rejects; the two-read path raises its message.
    """
    headers = [_csv_header(Path(f.path), config, block_bytes) for f in files]
    with_item_id = any(ITEM_ID in names for names in headers)
    column = config.id_column or (ITEM_ID if with_item_id else None)
    clash = bool(config.id_column) and config.id_column != ITEM_ID and with_item_id
    lacking = column is not None and any(column not in names for names in headers)
    if clash or lacking or any(reserved_columns(names) for names in headers):
        raise _NeedsTwoReads
    return column


def _part_schema(source: SourceFile, batch: pa.RecordBatch, where: str) -> pa.Schema:
    """The snapshot schema the batch alone would give: a part's guess, right unless later rows say otherwise."""
    probe = _ProbeRows(batch.schema)
    probe.add(batch)
    single = SourceScan(source=source, rows=batch.num_rows, malformed=[], probe=_to_pandas(probe.probe()))
    return _arrow_schema(_snapshot_layout([single]), where)


def _with_arrow_provenance(batch: pa.RecordBatch, name: str, start: int) -> pa.RecordBatch:
    n = batch.num_rows
    files = pa.nulls(n, pa.large_string()).fill_null(name)
    rows = pa.array(np.arange(start, start + n, dtype=np.int64))
    return pa.RecordBatch.from_arrays([*batch.columns, files, rows], names=[*batch.schema.names, *PROVENANCE])


class _BatchIds:
    """Item ids for a stream of Arrow batches: the id column's text, or content hashes with repeat suffixes."""

    def __init__(self, column: str | None, *, configured: bool) -> None:
        self.filter = _IdFilter(column, configured=configured) if column else None
        self._counter = OccurrenceCounter()

    def add(self, batch: pa.RecordBatch) -> pa.RecordBatch:
        """The batch with its ids first, less the rows the id filter quarantines."""
        if self.filter is not None:
            return self.filter.keep_batch(batch)
        hashes = _content_hashes(batch)
        item_ids = _format_ids(hashes, self._counter.occurrences(hashes)).cast(pa.large_string())
        return pa.RecordBatch.from_arrays([item_ids, *batch.columns], names=[ITEM_ID, *batch.schema.names])


def _keeps_hashes(hashed: pa.DataType, wider: pa.DataType) -> bool:
    """Whether values hashed as `hashed` hash the same read as `wider` (`tasks.rowhash`'s canonical forms)."""
    if hashed == wider:
        return True
    if pa.types.is_integer(hashed):
        return pa.types.is_float64(wider)  # integral floats hash as int64 (values past 2**53 are checked)
    if pa.types.is_date32(hashed):
        return pa.types.is_timestamp(wider) and wider.tz is None  # a date hashes as its midnight
    if pa.types.is_timestamp(hashed):
        return pa.types.is_timestamp(wider) and wider.tz == hashed.tz  # both in nanoseconds
    return False


class _CsvStream:
    """One CSV file parsed once into the parts, with its ids; the scan's rows, malformed lines and probe.

    Arrow's streaming reader fixes the types from the first block, so a later value that does not fit
    stops it (`_scan_csv` explains the order of types tried). Then the reader starts again with that
    column one type wider and skips the rows already written; their part is cast when the parts are
    assembled, and their ids stand as long as the wider type hashes their values the same (int to
    float, date to timestamp, seconds to nanoseconds, or a column that held no values). Otherwise,
    and for a widened id column, the file needs the two-read path. A row longer than a batch restarts
    the reader with batches twice as big, skipping the same way.
    """

    def __init__(self, source: SourceFile, config: SourceConfig, block_bytes: int, *, id_column: str | None) -> None:
        self.source, self.path = source, Path(source.path)
        self._config, self._block_bytes, self._id_column = config, block_bytes, id_column
        self._forced: dict[str, pa.DataType] = {}
        self._hashed: dict[str, set[pa.DataType]] = {}  # column -> the types its written values were hashed as
        self._written = 0  # rows of this file already handed to the parts

    def run(self, *, ids: _BatchIds, parts: _PartWriter, where: str, stop: Callable[[], bool]) -> SourceScan:
        """Raises: _NeedsTwoReads, _Reused (`stop()` said so), IngestError (an unreadable file)."""
        bad: list[str] = []
        names: list[str] = []
        inferred: dict[str, pa.DataType] = {}
        # Ends as `_scan_csv` does: each restart widens one column one step, or doubles the batch size.
        while True:
            bad.clear()
            options = _csv_options(
                self.path, self._config, block_bytes=self._block_bytes, column_types=self._forced, malformed=bad
            )
            try:
                reader = pa_csv.open_csv(self.path, **options)
                names, inferred = reader.schema.names, {f.name: f.type for f in reader.schema}
                stats = _ProbeRows(reader.schema)
                self._pass(reader, stats, ids=ids, parts=parts, where=where, stop=stop)
            except pa.ArrowInvalid as exc:
                if "straddling object" in str(exc):  # one row spans several batches: read bigger ones
                    self._block_bytes *= 2
                    continue
                failed = _FAILED_COLUMN.search(str(exc))
                index = int(failed.group(1)) if failed else -1
                if not 0 <= index < len(names) or pa.types.is_string(self._forced.get(names[index], pa.null())):
                    raise _unreadable_csv(self.path, exc) from exc
                self._widen(names[index], self._forced.get(names[index], inferred[names[index]]))
                continue
            scan = SourceScan(
                source=self.source,
                rows=stats.rows,
                malformed=list(bad),
                probe=_to_pandas(stats.probe()),
                schema=stats.schema,
                block_bytes=self._block_bytes,
            )
            _check_has_rows(scan)
            return scan

    def _widen(self, name: str, current: pa.DataType) -> None:
        hashed = self._hashed.get(name, set())
        wider = _wider_type(current)
        if hashed and pa.types.is_integer(current):
            wider = pa.float64()  # bool parses no value int64 fails on but "true"/"false", which float64 fails on too
        elif hashed and pa.types.is_date(current):
            wider = pa.timestamp("s")  # time32 fails on the dates already read
        if name == self._id_column or not all(_keeps_hashes(h, wider) for h in hashed):
            raise _NeedsTwoReads
        self._forced[name] = wider

    def _pass(
        self,
        reader: pa_csv.CSVStreamingReader,
        stats: _ProbeRows,
        *,
        ids: _BatchIds,
        parts: _PartWriter,
        where: str,
        stop: Callable[[], bool],
    ) -> None:
        start = 0
        for batch in reader:
            if stop():
                raise _Reused
            stats.add(batch)
            skip = min(max(self._written - start, 0), batch.num_rows)
            if skip:
                self._check_rehashed(batch.slice(0, skip))
            start += batch.num_rows
            if skip == batch.num_rows:
                continue
            fresh = batch.slice(skip) if skip else batch
            if parts.layout is None or not parts.layout.equals(reader.schema):  # the previous file's types?
                parts.start_part(_part_schema(self.source, fresh, where), layout=reader.schema, source=self.source.path)
            parts.append(ids.add(_with_arrow_provenance(fresh, self.path.name, start - fresh.num_rows)))
            self._written = start
            for name, column in zip(fresh.schema.names, fresh.columns, strict=True):
                if column.null_count < len(column):
                    self._hashed.setdefault(name, set()).add(column.type)

    def _check_rehashed(self, rows: pa.RecordBatch) -> None:
        """Rows written before a restart: an integer past 2**53 hashes otherwise as a float."""
        for name, types in self._hashed.items():
            column = rows.column(name)
            if pa.types.is_floating(column.type) and any(pa.types.is_integer(t) for t in types):
                largest = pc.max(pc.abs(column)).as_py()
                if largest is not None and largest > 2**53:
                    raise _NeedsTwoReads


def _assemble_parts(parts: list[tuple[Path, pa.Schema]], target: Path, schema: pa.Schema) -> None:
    """The parts as one file in the snapshot's schema: renamed if they have it, else cast a row group at a time."""
    if len(parts) == 1 and parts[0][1].equals(schema, check_metadata=True):
        parts[0][0].rename(target)
        return
    with pq.ParquetWriter(target, schema, use_dictionary=_dictionary_columns(schema)) as writer:
        for path, _ in parts:
            part = pq.ParquetFile(path)
            for group in range(part.num_row_groups):
                writer.write_table(_arrow_conform(part.read_row_group(group), schema))
            path.unlink()


def _write_csv_once(
    files: list[SourceFile],
    target: Path,
    config: SourceConfig,
    *,
    where: str,
    block_bytes: int,
    stop: Callable[[], bool] = lambda: False,
) -> tuple[list[SourceScan], _Written]:
    """Parse every CSV file once into `target` with item ids; rows with an empty or repeated id go to quarantine.

    Raises:
        _NeedsTwoReads: see the section's comment.
        _Reused: `stop()` said so between two batches.
        IngestError: an unreadable file, or values Parquet cannot store.
    """
    column = _planned_id_column(files, config, block_bytes)
    ids = _BatchIds(column, configured=bool(config.id_column))
    parts = _PartWriter(target.parent)
    try:
        scans = [
            _CsvStream(f, config, block_bytes, id_column=column).run(ids=ids, parts=parts, where=where, stop=stop)
            for f in files
        ]
    finally:
        parts.close()
    if _text_columns(scans):
        raise _NeedsTwoReads
    _id_column(scans, config)
    layout = _snapshot_layout(scans)
    if ids.filter is not None:
        ids.filter.conform_rejected(layout)
    try:
        _assemble_parts(parts.parts, target, _arrow_schema(layout, where))
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise IngestError(
            f"{where} cannot be stored as Parquet ({exc}); make the values of each column one type."
        ) from exc
    return scans, _Written(
        columns=[ITEM_ID, *(str(c) for c in layout.columns if c != ITEM_ID)],
        rows=parts.rows,
        quarantine=ids.filter.quarantine(target) if ids.filter is not None else empty_quarantine(),
        text_columns={},
        rejected_per_file=ids.filter.rejected_per_file() if ids.filter is not None else {},
    )


def describe_source(path: Path, config: SourceConfig) -> SourceFile:
    """A source file's format, size and sha256 (checking that a text file decodes).

    Raises:
        IngestError: the file is missing, empty, undecodable or of an unknown format.
    """
    if not path.is_file():
        raise IngestError(f"input file {path} does not exist; check source.path in the pipeline config.")
    fmt = _detect_format(path, config.format)
    hashed = hash_file(path, encoding=config.encoding if fmt != "parquet" else None)
    return SourceFile(path=hashed.path, sha256=hashed.sha256, bytes=hashed.bytes, format=fmt)


def find_snapshot(files: list[SourceFile], *, snapshot_root: Path, config: SourceConfig) -> Snapshot | None:
    """The snapshot of exactly these files and reader options, when one was written before."""
    snapshot_id = snapshot_id_for(files, config)
    manifest_path = snapshot_root / snapshot_id / "manifest.json"
    if not manifest_path.is_file():
        return None
    return Snapshot(snapshot_id, manifest_path.parent, json.loads(manifest_path.read_text()), reused=True)


def _file_entry(scan: SourceScan, rejected: int) -> dict[str, object]:
    """A source file's manifest entry: where it came from, its hash, rows read and rows quarantined."""
    return {
        "path": scan.source.path,
        "sha256": scan.source.sha256,
        "bytes": scan.source.bytes,
        "format": scan.source.format,
        "rows": scan.rows,
        "malformed": len(scan.malformed),
        "quarantined": len(scan.malformed) + rejected,
        "schema": {str(c): str(t) for c, t in scan.probe.dtypes.items()},
    }


def write_snapshot(
    scans: list[SourceScan], *, snapshot_root: Path, config: SourceConfig, block_bytes: int = CSV_BLOCK_BYTES
) -> Snapshot:
    """Second read of every scanned file, in order, streamed into a new snapshot folder (or the existing one).

    Raises:
        IngestError: a reserved or missing column name, or a file changed since its scan.
    """
    files = [scan.source for scan in scans]
    existing = find_snapshot(files, snapshot_root=snapshot_root, config=config)
    if existing is not None:
        return existing

    def write(target: Path, where: str) -> tuple[list[SourceScan], _Written]:
        return scans, _write_snapshot_data(scans, target, config, where=where, block_bytes=block_bytes)

    return _stage_snapshot(files, snapshot_root=snapshot_root, config=config, write=write)


def _malformed_quarantine(scans: list[SourceScan]) -> list[pd.DataFrame]:
    return [
        quarantine_rows(
            pd.DataFrame({SOURCE_FILE: [Path(s.source.path).name] * len(s.malformed), "line": s.malformed}),
            step="ingest",
            reason=[f"malformed line: {m}" for m in s.malformed],
        )
        for s in scans
    ]


def _stage_snapshot(
    files: list[SourceFile],
    *,
    snapshot_root: Path,
    config: SourceConfig,
    write: Callable[[Path, str], tuple[list[SourceScan], _Written]],
) -> Snapshot:
    """A new snapshot folder: `write(data path, where)` writes the data, then quarantine and manifest follow."""
    snapshot_id = snapshot_id_for(files, config)
    staging = _staging_folder(snapshot_root, snapshot_id)
    try:
        scans, written = write(staging / "data.parquet", f"snapshot {snapshot_id}")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _seal_snapshot(staging, snapshot_id, scans, written, snapshot_root=snapshot_root, config=config)


def _staging_folder(snapshot_root: Path, name: str) -> Path:
    # Write into a temporary folder and rename: a crash never leaves a half snapshot behind.
    staging = snapshot_root / f".{name}.tmp-{os.getpid()}-{threading.get_ident():x}"
    staging.mkdir(parents=True, exist_ok=True)
    return staging


def _seal_snapshot(
    staging: Path,
    snapshot_id: str,
    scans: list[SourceScan],
    written: _Written,
    *,
    snapshot_root: Path,
    config: SourceConfig,
) -> Snapshot:
    """Quarantine and manifest beside the written data, then the staging folder renamed into place."""
    directory = snapshot_root / snapshot_id
    try:
        quarantine = concat_quarantine([*_malformed_quarantine(scans), written.quarantine])
        rows_in = sum(s.rows + len(s.malformed) for s in scans)
        check_conservation(rows_in, written.rows, len(quarantine), stage="ingest")
        write_quarantine(quarantine, staging / "quarantine.parquet")
        manifest: dict[str, object] = {
            "snapshot_id": snapshot_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "rows": written.rows,
            "quarantined": len(quarantine),
            "columns": written.columns,
            "text_columns": written.text_columns,
            "files": [_file_entry(s, written.rejected_per_file.get(Path(s.source.path).name, 0)) for s in scans],
            "reader": config.model_dump(exclude={"path", "sql"}),
        }
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        staging.rename(directory)
    except OSError:  # another run wrote the same snapshot first: same content, keep theirs
        shutil.rmtree(staging, ignore_errors=True)
        manifest = json.loads((directory / "manifest.json").read_text())
        return Snapshot(snapshot_id, directory, manifest, reused=True)
    return Snapshot(snapshot_id, directory, manifest)


class _Reused(Exception):
    """The sources' hashes name a snapshot that exists: the parse stops."""


def _csv_files(paths: list[Path], config: SourceConfig) -> bool:
    """Whether every path is an existing CSV file (anything else: `describe_source` words the problem)."""
    try:
        return all(path.is_file() and _detect_format(path, config.format) == "csv" for path in paths)
    except IngestError:
        return False


def _ingest_csv(
    paths: list[Path], *, snapshot_root: Path, config: SourceConfig, block_bytes: int
) -> Snapshot | list[SourceFile]:
    """CSV files parsed once while a thread hashes them (sha256 and Arrow's UTF-8 check release the GIL).

    The parse stops once the hashes name an existing snapshot, so unchanged files cost their hash and the
    few batches parsed meanwhile; a file the hash rejects (empty, binary, undecodable) is reported as such,
    whatever the parse made of it.

    Returns:
        The snapshot, or the described files when the input needs the two-read path.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sluice-sha256") as pool:
        hashing = pool.submit(lambda: [describe_source(path, config) for path in paths])
        found: list[Snapshot | None] = []

        def reused() -> bool:  # polled between batches; raises the hash's error as soon as there is one
            if not found and hashing.done():
                found.append(find_snapshot(hashing.result(), snapshot_root=snapshot_root, config=config))
            return bool(found) and found[0] is not None

        pending = [SourceFile(path=str(path), sha256="", bytes=0, format="csv") for path in paths]
        staging = _staging_folder(snapshot_root, "ingest")
        where = f"the snapshot of {', '.join(path.name for path in paths)}"
        try:
            try:
                scans, written = _write_csv_once(
                    pending, staging / "data.parquet", config, where=where, block_bytes=block_bytes, stop=reused
                )
            finally:
                files = hashing.result()  # the hash's error comes first: it names what is wrong with the file
            if reused():
                raise _Reused
        except (_Reused, _NeedsTwoReads):
            shutil.rmtree(staging, ignore_errors=True)
            return found[0] if found and found[0] is not None else files
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    scans = [replace(scan, source=file) for scan, file in zip(scans, files, strict=True)]
    snapshot_id = snapshot_id_for(files, config)
    return _seal_snapshot(staging, snapshot_id, scans, written, snapshot_root=snapshot_root, config=config)


def ingest_files(
    paths: list[Path], *, snapshot_root: Path, config: SourceConfig, block_bytes: int = CSV_BLOCK_BYTES
) -> Snapshot:
    """Stream source files into a content-hashed snapshot folder, or reuse the existing one.

    Unchanged files are hashed, and CSV files parsed only while the hash runs beside the parse: it stops
    once the hashes name the existing snapshot. `flows/ingest.py` runs the two-read steps with one task
    per file (`describe_source`, `scan_source`) so a Dask cluster can share them out.

    Args:
        block_bytes: CSV bytes per batch; memory grows with it, the snapshot does not change.

    Raises:
        IngestError: a missing, empty, undecodable or unreadable file; the message says what to fix.
    """
    if _csv_files(paths, config):
        outcome = _ingest_csv(paths, snapshot_root=snapshot_root, config=config, block_bytes=block_bytes)
        if isinstance(outcome, Snapshot):
            return outcome
        files = outcome  # a surprise the two-read path handles (see "one read" above); nothing was kept
    else:
        files = [describe_source(path, config) for path in paths]
        existing = find_snapshot(files, snapshot_root=snapshot_root, config=config)
        if existing is not None:
            return existing
    scans = [scan_source(source, config, block_bytes=block_bytes) for source in files]
    return write_snapshot(scans, snapshot_root=snapshot_root, config=config, block_bytes=block_bytes)


def check_columns(df: pd.DataFrame, required: dict[str, str | None], *, where: str) -> None:
    """Raise when a configured column (text, label, group, …) is absent.

    Args:
        required: role -> column name (None entries are skipped), e.g. {"text": "review"}.
    """
    available = source_columns(df.columns)
    for role, column in required.items():
        if column and column not in df.columns:
            raise IngestError(
                f'column "{column}" (columns.{role}) is missing from {where}; available columns: '
                f"{', '.join(available)}. Fix columns.{role} in the pipeline config or the source file."
            )
