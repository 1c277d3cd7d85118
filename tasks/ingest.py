"""Ingest: raw CSV, Parquet or JSONL files into an immutable, content-hashed Parquet snapshot.

The snapshot id is a hash of the source files' bytes and the reader options, so
ingesting unchanged files again finds the existing snapshot and writes nothing.
Malformed lines never crash a run: they are quarantined with their text.

CSV and Parquet files are streamed: read in batches and appended to the snapshot with a
`ParquetWriter`, so memory stays at a few batches plus 8 bytes per distinct row (the
seen-set of row hashes, `OccurrenceCounter`) whatever the file size. JSONL files are
read whole.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from tasks.columns import ITEM_ID, PROVENANCE, SOURCE_FILE, SOURCE_ROW
from tasks.quarantine import check_conservation, concat_quarantine, quarantine_rows, write_quarantine

SNAPSHOT_FORMAT = 1  # bump when the snapshot layout changes: old ids must not be reused
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

    path: str
    """A file, a folder or a glob; relative paths are taken from the directory sluice runs in."""
    format: Literal["auto", "csv", "parquet", "jsonl"] = "auto"
    encoding: str = "utf-8"
    delimiter: str = ","
    id_column: str | None = None
    """A column of unique ids. Without one, ids are derived from each row's content."""


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
        return pd.read_parquet(self.data_path)

    def load_quarantine(self) -> pd.DataFrame:
        return pd.read_parquet(self.quarantine_path)

    def source_names(self) -> str:
        files: list[dict[str, object]] = self.manifest["files"]  # type: ignore[assignment]
        return ", ".join(Path(str(f["path"])).name for f in files)

    def summary_markdown(self) -> str:
        lines = [
            f"### Snapshot `{self.snapshot_id}`{' (reused: unchanged sources)' if self.reused else ''}",
            "",
            f"- rows kept: **{self.rows}**, malformed lines quarantined: **{self.quarantined}**",
            f"- folder: `{self.directory}`",
            "",
            "| source file | sha256 | rows | malformed |",
            "|---|---|---|---|",
        ]
        for f in self.manifest["files"]:  # type: ignore[attr-defined]
            lines.append(f"| `{f['path']}` | `{f['sha256'][:12]}…` | {f['rows']} | {f['malformed']} |")
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


def hash_file(path: Path, *, encoding: str | None = "utf-8", chunk_bytes: int = 1 << 20) -> SourceFile:
    """sha256 of a file's bytes, checking in the same pass that text files decode.

    Raises:
        IngestError: the file is empty or is not valid in `encoding`.
    """
    digest = hashlib.sha256()
    size = 0
    decoder = codecs.getincrementaldecoder(encoding)() if encoding else None
    with path.open("rb") as handle:
        while chunk := handle.read(chunk_bytes):
            digest.update(chunk)
            if decoder is not None:
                try:
                    decoder.decode(chunk)
                except UnicodeDecodeError as exc:
                    raise IngestError(
                        f"{path} is not valid {encoding}: byte 0x{chunk[exc.start]:02x} at offset "
                        f"{size + exc.start} cannot be decoded. Re-save the file as UTF-8 "
                        f"(e.g. `iconv -f latin1 -t utf-8`), or set source.encoding in the pipeline config "
                        "to the file's real encoding (e.g. latin-1)."
                    ) from None
            size += len(chunk)
    if size == 0:
        raise IngestError(f"{path} is empty (0 bytes); remove it from source.path or fill it with data.")
    return SourceFile(path=str(path), sha256=digest.hexdigest(), bytes=size, format="")


def snapshot_id_for(files: list[SourceFile], config: SourceConfig) -> str:
    """Content hash of the sources and the reader options that shape the snapshot."""
    payload = {
        "format_version": SNAPSHOT_FORMAT,
        "files": sorted((Path(f.path).name, f.sha256) for f in files),
        "reader": config.model_dump(exclude={"path"}),
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


def _read_jsonl(path: Path, config: SourceConfig) -> tuple[pd.DataFrame, list[str]]:
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
    return pd.DataFrame.from_records(records), malformed


def read_source(path: Path, fmt: str, config: SourceConfig) -> tuple[pd.DataFrame, list[str]]:
    """One source file as a DataFrame, plus the text of each malformed line."""
    if fmt == "csv":
        return _read_csv(path, config)
    if fmt == "jsonl":
        return _read_jsonl(path, config)
    try:
        return pq.read_table(path).to_pandas(), []
    except pa.ArrowInvalid as exc:
        raise _unreadable_parquet(path, exc) from exc


def _content_hashes(frame: pd.DataFrame, context: pd.DataFrame | None = None) -> np.ndarray:
    """64-bit hash of each row's content (provenance columns excluded): the base of a content id.

    Args:
        context: rows formatted with `frame` but not hashed: pandas turns a datetime column into
            text at the finest precision of the whole column, so a batch is formatted beside probe
            rows that carry the precisions of the whole snapshot.
    """
    rows = len(frame)
    if context is not None:
        frame = pd.concat([frame, context], ignore_index=True)
    content = frame.drop(columns=[c for c in PROVENANCE if c in frame.columns])
    return pd.util.hash_pandas_object(content.astype(str), index=False).to_numpy(dtype=np.uint64)[:rows]


def _format_ids(hashes: np.ndarray, occurrence: np.ndarray) -> pd.Series:
    """`<16 hex digits>` per hash, `-k` appended for the k-th repeat (vectorised: ~40 M ids a run)."""
    hexed = np.frombuffer(hashes.astype(">u8").tobytes().hex().encode("ascii"), dtype="S16")
    ids = pd.Series(pa.array(hexed, type=pa.binary(16)).cast(pa.string()).to_pandas(), dtype="str")
    repeated = np.flatnonzero(occurrence)
    if repeated.size:
        ids.iloc[repeated] = [f"{ids.iloc[i]}-{occurrence[i]}" for i in repeated]
    return ids


def derive_item_ids(df: pd.DataFrame, *, id_column: str | None, where: str) -> pd.Series:
    """Stable item ids: the id column when given, else a hash of each row's content.

    Content ids survive reordering and appended files, which keeps Label Studio
    tasks and split manifests stable. Repeated rows get `-1`, `-2`, … suffixes.
    `ingest_files` computes the same ids batch by batch (see `OccurrenceCounter`).
    """
    if id_column:
        if id_column not in df.columns:
            raise IngestError(
                f'column "{id_column}" (source.id_column) is missing from {where}; '
                f"available columns: {', '.join(map(str, df.columns))}."
            )
        ids = df[id_column].astype(str)
        dup = ids[ids.duplicated()]
        if not dup.empty:
            raise _not_unique(id_column, where, dup.size, str(dup.iloc[0]))
        return ids.rename(ITEM_ID)
    hashes = _content_hashes(df)
    base = pd.Series(hashes).groupby(hashes).cumcount().to_numpy()
    return _format_ids(hashes, base).set_axis(df.index).rename(ITEM_ID)


def _not_unique(id_column: str, where: str, repeats: int, example: str) -> IngestError:
    return IngestError(
        f'column "{id_column}" is not unique in {where} ({repeats} repeated ids, e.g. {example!r}); '
        "fix the ids or remove source.id_column to derive ids from content."
    )


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
        occurrence = prior[inverse] + _rank_within(inverse)
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
# Every file is read twice, a batch at a time:
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
            for kind, index in _probe_indices(column).items():
                if (name, kind) not in self._found:
                    self._found.add((name, kind))
                    wanted.add(index)
        self._picked.extend(batch.slice(i, 1) for i in sorted(wanted))
        self.rows += batch.num_rows

    def probe(self) -> pa.Table:
        return pa.Table.from_batches(self._picked, schema=self.schema)


def _probe_indices(column: pa.Array) -> dict[str, int]:
    """Row index of the first value, the first null and the first of each timestamp precision."""
    found: dict[str, int] = {}
    if column.null_count < len(column):
        found["value"] = int(pc.index(column.is_valid(), True).as_py())
    if column.null_count:
        found["null"] = int(pc.index(column.is_null(), True).as_py())
    kind = column.type
    if pa.types.is_timestamp(kind) or pa.types.is_duration(kind):
        per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[kind.unit]
        ticks = column.cast(pa.int64()).fill_null(0).to_numpy()
        # pandas' format flags: not at midnight / whole days, then sub-second, sub-ms, sub-us parts
        for divisor in (86_400 * per_second, per_second, per_second // 1_000, per_second // 1_000_000):
            if divisor > 1:
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
    # never fails (a failure on a string column is not a type problem and raises).
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
        frame, malformed = _read_jsonl(path, config)
        probe = frame.iloc[_pandas_probe_indices(frame)]
        scan = SourceScan(source=source, rows=len(frame), malformed=malformed, probe=probe)
    if scan.rows == 0 and not scan.malformed:
        raise IngestError(f"{path} has no data rows (only a header?); fill it or remove it from source.path.")
    return scan


def _iter_frames(scan: SourceScan, config: SourceConfig, block_bytes: int) -> Iterator[pd.DataFrame]:
    """The file's rows again, batch by batch, with the types the scan settled on."""
    path = Path(scan.source.path)
    if scan.source.format == "csv":
        assert scan.schema is not None
        types = {f.name: f.type for f in scan.schema}
        options = _csv_options(path, config, block_bytes=block_bytes, column_types=types, malformed=None)
        for batch in pa_csv.open_csv(path, **options):
            yield _to_pandas(pa.Table.from_batches([batch]))
    elif scan.source.format == "parquet":
        parquet = pq.ParquetFile(path)
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
            yield _to_pandas(pa.Table.from_batches([batch], schema=parquet.schema_arrow))
    else:
        yield _read_jsonl(path, config)[0]


def _with_provenance(frame: pd.DataFrame, name: str, start: int) -> pd.DataFrame:
    frame = frame.copy(deep=False)
    frame.insert(len(frame.columns), SOURCE_FILE, name)
    frame.insert(len(frame.columns), SOURCE_ROW, np.arange(start, start + len(frame), dtype=np.int64))
    return frame


def _snapshot_layout(scans: list[SourceScan]) -> pd.DataFrame:
    """The probes concatenated as `pd.concat` would concatenate the whole files: dtypes and column order."""
    probes = [_with_provenance(s.probe, Path(s.source.path).name, 0) for s in scans]
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
    with_id = layout.copy(deep=False)
    with_id.insert(0, ITEM_ID, pd.Series(["0" * 16] * len(layout), dtype="str"))
    try:
        return pa.Schema.from_pandas(with_id, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise IngestError(
            f"{where} cannot be stored as Parquet ({exc}); a column probably holds numbers in one file and "
            "text in another: make the files agree on each column's type."
        ) from exc


def _write_snapshot_data(
    scans: list[SourceScan], target: Path, config: SourceConfig, *, where: str, block_bytes: int
) -> list[str]:
    """Stream every file into `target` with item ids; returns the snapshot's columns.

    Raises:
        IngestError: id column missing or not unique, a file changed between the two reads.
    """
    layout = _snapshot_layout(scans)
    if config.id_column and config.id_column not in layout.columns:
        raise IngestError(
            f'column "{config.id_column}" (source.id_column) is missing from {where}; '
            f"available columns: {', '.join(map(str, layout.columns))}."
        )
    schema = _arrow_schema(layout, where)
    temporal = any(
        pd.api.types.is_datetime64_any_dtype(t) or pd.api.types.is_timedelta64_dtype(t) for t in layout.dtypes
    )
    context = layout if temporal else None
    counter = OccurrenceCounter()
    repeated, example = 0, ""
    with pq.ParquetWriter(target, schema) as writer:
        for scan in scans:
            name, start = Path(scan.source.path).name, 0
            for batch in _iter_frames(scan, config, block_bytes):
                frame = _conform(_with_provenance(batch, name, start), layout)
                start += len(frame)
                if config.id_column:
                    ids = frame[config.id_column].astype(str)
                    occurrence = counter.occurrences(pd.util.hash_pandas_object(ids, index=False).to_numpy())
                    if repeated == 0 and (occurrence > 0).any():
                        example = str(ids.iloc[int(np.argmax(occurrence > 0))])
                    repeated += int((occurrence > 0).sum())
                    item_ids = ids
                else:
                    hashes = _content_hashes(frame, context)
                    item_ids = _format_ids(hashes, counter.occurrences(hashes))
                frame.insert(0, ITEM_ID, item_ids.set_axis(frame.index))
                writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
            if start != scan.rows:
                raise IngestError(
                    f"{scan.source.path} changed while it was ingested ({scan.rows} rows, then {start}); "
                    "ingest again once it is fully written."
                )
    if repeated:
        raise _not_unique(str(config.id_column), where, repeated, example)
    return [ITEM_ID, *map(str, layout.columns)]


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


def write_snapshot(
    scans: list[SourceScan], *, snapshot_root: Path, config: SourceConfig, block_bytes: int = CSV_BLOCK_BYTES
) -> Snapshot:
    """Second read of every scanned file, in order, streamed into a new snapshot folder (or the existing one).

    Raises:
        IngestError: an id column is missing or repeated, or a file changed since its scan.
    """
    files = [scan.source for scan in scans]
    existing = find_snapshot(files, snapshot_root=snapshot_root, config=config)
    if existing is not None:
        return existing
    snapshot_id = snapshot_id_for(files, config)
    quarantines = [
        quarantine_rows(
            pd.DataFrame({SOURCE_FILE: [Path(s.source.path).name] * len(s.malformed), "line": s.malformed}),
            step="ingest",
            reason=[f"malformed line: {m}" for m in s.malformed],
        )
        for s in scans
    ]
    file_entries: list[dict[str, object]] = [
        {
            "path": s.source.path,
            "sha256": s.source.sha256,
            "bytes": s.source.bytes,
            "format": s.source.format,
            "rows": s.rows,
            "malformed": len(s.malformed),
            "schema": {str(c): str(t) for c, t in s.probe.dtypes.items() if c not in PROVENANCE},
        }
        for s in scans
    ]
    quarantine = concat_quarantine(quarantines)
    rows = sum(s.rows for s in scans)
    check_conservation(sum(s.rows + len(s.malformed) for s in scans), rows, len(quarantine), stage="ingest")

    # Write into a temporary folder and rename: a crash never leaves a half snapshot behind.
    directory = snapshot_root / snapshot_id
    staging = snapshot_root / f".{snapshot_id}.tmp-{os.getpid()}-{id(scans):x}"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        columns = _write_snapshot_data(
            scans, staging / "data.parquet", config, where=f"snapshot {snapshot_id}", block_bytes=block_bytes
        )
        write_quarantine(quarantine, staging / "quarantine.parquet")
        manifest: dict[str, object] = {
            "snapshot_id": snapshot_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "rows": rows,
            "quarantined": len(quarantine),
            "columns": columns,
            "files": file_entries,
            "reader": config.model_dump(exclude={"path"}),
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


def ingest_files(
    paths: list[Path], *, snapshot_root: Path, config: SourceConfig, block_bytes: int = CSV_BLOCK_BYTES
) -> Snapshot:
    """Stream source files into a content-hashed snapshot folder, or reuse the existing one.

    Unchanged files are only hashed, never parsed. `flows/ingest.py` runs the same steps with one
    task per file (`describe_source`, `scan_source`) so a Dask cluster can share them out.

    Args:
        block_bytes: CSV bytes per batch; memory grows with it, the snapshot does not change.

    Raises:
        IngestError: a missing, empty, undecodable or unreadable file; the message says what to fix.
    """
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
    available = [str(c) for c in df.columns if c not in PROVENANCE and c != ITEM_ID]
    for role, column in required.items():
        if column and column not in df.columns:
            raise IngestError(
                f'column "{column}" (columns.{role}) is missing from {where}; available columns: '
                f"{', '.join(available)}. Fix columns.{role} in the pipeline config or the source file."
            )
