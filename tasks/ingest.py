"""Ingest: raw CSV, Parquet or JSONL files into an immutable, content-hashed Parquet snapshot.

The snapshot id is a hash of the source files' bytes and the reader options, so
ingesting unchanged files again finds the existing snapshot and writes nothing.
Malformed lines never crash a run: they are quarantined with their text.
"""

from __future__ import annotations

import codecs
import glob
import hashlib
import json
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict

from tasks.quarantine import check_conservation, concat_quarantine, quarantine_rows, write_quarantine

SNAPSHOT_FORMAT = 1  # bump when the snapshot layout changes: old ids must not be reused
PROVENANCE_COLUMNS = ["source_file", "source_row"]
_FORMATS = {".csv": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


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


def _read_csv(path: Path, config: SourceConfig) -> tuple[pd.DataFrame, list[str]]:
    malformed: list[str] = []

    def _on_bad_row(row: pa_csv.InvalidRow) -> str:
        malformed.append(
            f"expected {row.expected_columns} fields, found {row.actual_columns}: {row.text[:500]}"
        )
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
        raise IngestError(f"{path} cannot be read as CSV ({exc}); check source.delimiter and source.encoding.") from exc
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
                malformed.append(f"line {number} is a JSON {type(value).__name__}, not an object: {line[:500].rstrip()}")
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
        raise IngestError(f"{path} is not a readable Parquet file ({exc}); check the file or source.format.") from exc


def derive_item_ids(df: pd.DataFrame, *, id_column: str | None, where: str) -> pd.Series:
    """Stable item ids: the id column when given, else a hash of each row's content.

    Content ids survive reordering and appended files, which keeps Label Studio
    tasks and split manifests stable. Repeated rows get `-1`, `-2`, … suffixes.
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
            raise IngestError(
                f'column "{id_column}" is not unique in {where} ({dup.size} repeated ids, e.g. {dup.iloc[0]!r}); '
                "fix the ids or remove source.id_column to derive ids from content."
            )
        return ids.rename("item_id")
    content = df.drop(columns=[c for c in PROVENANCE_COLUMNS if c in df.columns])
    hashed = pd.util.hash_pandas_object(content.astype(str), index=False)
    base = hashed.map(lambda h: f"{int(h):016x}")
    occurrence = base.groupby(base).cumcount()
    ids = base.where(occurrence == 0, base + "-" + occurrence.astype(str))
    return ids.rename("item_id").reset_index(drop=True).set_axis(df.index)


def ingest_files(paths: list[Path], *, snapshot_root: Path, config: SourceConfig) -> Snapshot:
    """Read source files into a content-hashed snapshot folder, or reuse the existing one.

    Raises:
        IngestError: a missing, empty, undecodable or unreadable file; the message says what to fix.
    """
    files: list[SourceFile] = []
    for path in paths:
        if not path.is_file():
            raise IngestError(f"input file {path} does not exist; check source.path in the pipeline config.")
        fmt = _detect_format(path, config.format)
        hashed = hash_file(path, encoding=config.encoding if fmt != "parquet" else None)
        files.append(SourceFile(path=hashed.path, sha256=hashed.sha256, bytes=hashed.bytes, format=fmt))

    snapshot_id = snapshot_id_for(files, config)
    directory = snapshot_root / snapshot_id
    manifest_path = directory / "manifest.json"
    if manifest_path.is_file():
        return Snapshot(snapshot_id, directory, json.loads(manifest_path.read_text()), reused=True)

    frames: list[pd.DataFrame] = []
    quarantines: list[pd.DataFrame] = []
    file_entries: list[dict[str, object]] = []
    for source in files:
        path = Path(source.path)
        frame, malformed = read_source(path, source.format, config)
        if frame.empty and not malformed:
            raise IngestError(f"{path} has no data rows (only a header?); fill it or remove it from source.path.")
        frame.insert(len(frame.columns), "source_file", path.name)
        frame.insert(len(frame.columns), "source_row", range(len(frame)))
        frames.append(frame)
        bad = pd.DataFrame({"source_file": [path.name] * len(malformed), "line": malformed})
        quarantines.append(quarantine_rows(bad, step="ingest", reason=[f"malformed line: {m}" for m in malformed]))
        file_entries.append(
            {
                "path": str(path),
                "sha256": source.sha256,
                "bytes": source.bytes,
                "format": source.format,
                "rows": len(frame),
                "malformed": len(malformed),
                "schema": {str(c): str(t) for c, t in frame.dtypes.items() if c not in PROVENANCE_COLUMNS},
            }
        )

    data = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)
    data.insert(0, "item_id", derive_item_ids(data, id_column=config.id_column, where=f"snapshot {snapshot_id}"))
    quarantine = concat_quarantine(quarantines)
    rows_in = sum(int(e["rows"]) + int(e["malformed"]) for e in file_entries)  # type: ignore[call-overload]
    check_conservation(rows_in, len(data), len(quarantine), stage="ingest")

    manifest: dict[str, object] = {
        "snapshot_id": snapshot_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "rows": len(data),
        "quarantined": len(quarantine),
        "columns": [str(c) for c in data.columns],
        "files": file_entries,
        "reader": config.model_dump(exclude={"path"}),
    }
    # Write into a temporary folder and rename: a crash never leaves a half snapshot behind.
    staging = snapshot_root / f".{snapshot_id}.tmp-{os.getpid()}"
    staging.mkdir(parents=True, exist_ok=True)
    data.to_parquet(staging / "data.parquet", index=False)
    write_quarantine(quarantine, staging / "quarantine.parquet")
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    try:
        staging.rename(directory)
    except OSError:  # another run wrote the same snapshot first: same content, keep theirs
        for child in staging.iterdir():
            child.unlink()
        staging.rmdir()
        return Snapshot(snapshot_id, directory, json.loads(manifest_path.read_text()), reused=True)
    return Snapshot(snapshot_id, directory, manifest)


def check_columns(df: pd.DataFrame, required: dict[str, str | None], *, where: str) -> None:
    """Raise when a configured column (text, label, group, …) is absent.

    Args:
        required: role -> column name (None entries are skipped), e.g. {"text": "review"}.
    """
    available = [str(c) for c in df.columns if c not in PROVENANCE_COLUMNS and c != "item_id"]
    for role, column in required.items():
        if column and column not in df.columns:
            raise IngestError(
                f'column "{column}" (columns.{role}) is missing from {where}; available columns: '
                f"{', '.join(available)}. Fix columns.{role} in the pipeline config or the source file."
            )
