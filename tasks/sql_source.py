"""Database tables as sources: rows read through SQLAlchemy in batches into a chain of snapshots.

`source.sql: {url, table | query, watermark}`. Each run reads only the rows whose watermark lies past
the chain's last one, up to the highest watermark at the start of the run, into a new snapshot (an
*increment*) that names the one before it. An increment's manifest records the query, the watermark
range, its row count and the previous snapshot; `parts` lists the chain from the first increment to
this one, so loading the newest snapshot loads every row ingested so far. With `source.id_column`, a
row that comes again in a later increment (a watermark on `updated_at`) replaces its older version,
which is quarantined as superseded. Without a watermark every run reads the whole table.

Values that do not fit their column's type (text in an INTEGER column of SQLite, a PostgreSQL
timestamp past year 9999) quarantine their row with a reason, as malformed lines of files do.

Credentials never sit in the config: the URL names them, `${VAR}` for an environment variable, or
`password_env` / `password_secret` (a Prefect Secret block, looked up by the caller's `lookup_secret`).
The URL with its password is built at connect time and never logged, stored or shown.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tasks.columns import ITEM_ID, RESERVED_PREFIX, SOURCE_FILE, SOURCE_ROW, reserved_columns
from tasks.db_urls import check_no_password, driver_url, expand_url, redact_url, with_password
from tasks.quarantine import check_conservation, concat_quarantine, quarantine_rows, write_quarantine

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from tasks.ingest import Snapshot

SQL_FORMAT = 1  # bump when the layout of SQL snapshots changes: old ids must not be reused
_SOURCE_ALIAS = "sluice_source"


class SqlSourceError(ValueError):
    """Bad database source settings or an unusable table; the message names the field and the fix."""


class SqlSourceUnreachableError(RuntimeError):
    """The source database did not answer (refused, timed out, dropped the connection): a retry may help."""


# --- configuration ------------------------------------------------------------------------------------------


class SqlSourceConfig(BaseModel):
    """A table or query of a database, read through SQLAlchemy (`source.sql`)."""

    model_config = ConfigDict(extra="forbid")

    url: str
    """SQLAlchemy URL, e.g. `postgresql://reader:${WAREHOUSE_PASSWORD}@db:5432/shop` or `sqlite:///shop.db`."""
    table: str | None = None
    """A table (or view), optionally `schema.table`."""
    query: str | None = None
    """A SELECT; the watermark filter is applied around it."""
    watermark: str | None = None
    """A column that grows with every new or changed row (an id, `updated_at`). None: read everything each run."""
    password_env: str | None = None
    """An environment variable holding the password (instead of `${VAR}` in the URL)."""
    password_secret: str | None = None
    """A Prefect Secret block holding the password."""
    batch_rows: int = Field(10_000, ge=1)
    """Rows fetched per batch from a server-side cursor: memory grows with it, the snapshot does not."""

    @field_validator("url")
    @classmethod
    def _url_names_its_password(cls, value: str) -> str:
        check_no_password(value, where="source.sql.url")
        return value

    @model_validator(mode="after")
    def _one_relation(self) -> SqlSourceConfig:
        if (self.table is None) == (self.query is None):
            raise ValueError("set exactly one of source.sql.table and source.sql.query")
        if self.password_env and self.password_secret:
            raise ValueError("set at most one of source.sql.password_env and source.sql.password_secret")
        return self

    def describe(self) -> str:
        what = f"table {self.table}" if self.table else "source.sql.query"
        return f"{what} at {redact_url(self.url)}"


SecretLookup = Callable[[str], "str | None"]


def connection_url(config: SqlSourceConfig, lookup_secret: SecretLookup | None = None) -> str:
    """The URL to connect with: `${VAR}`s expanded, the password set, the installed PostgreSQL driver chosen.

    Raises:
        SqlSourceError: a variable or the secret is not set.
    """
    url = expand_url(config.url, where="source.sql.url")
    password: str | None = None
    if config.password_env:
        password = os.environ.get(config.password_env) or None
        if password is None:
            raise SqlSourceError(
                f"source.sql.password_env names {config.password_env}, which is not set; export it for sluice "
                "and the Prefect worker."
            )
    elif config.password_secret:
        password = lookup_secret(config.password_secret) if lookup_secret else None
        if password is None:
            raise SqlSourceError(
                f"source.sql.password_secret names the Prefect Secret block {config.password_secret!r}, which "
                f"does not exist or is empty; create it with `sluice secret set {config.password_secret}`."
            )
    if password is not None:
        url = with_password(url, password)
    return driver_url(url, "psycopg")


# --- reading ------------------------------------------------------------------------------------------------


class Unreadable:
    """A value the database driver could not turn into a Python object (kept as its text)."""

    def __init__(self, text: str, error: str) -> None:
        self.text, self.error = text, error

    def __repr__(self) -> str:
        return f"Unreadable({self.text!r})"


def _tolerate_unreadable_values(engine: Engine) -> None:
    """PostgreSQL dates and timestamps outside Python's range (year 20225, `infinity`) arrive as `Unreadable`.

    psycopg raises on them mid-fetch, which would fail the whole batch; its loaders are swapped for ones
    that hand the text over, so only the row holding the value is quarantined.
    """
    if engine.dialect.driver != "psycopg":
        return
    from psycopg import DataError
    from psycopg.types.datetime import DateLoader, TimestampLoader, TimestamptzLoader
    from sqlalchemy import event

    def _tolerant(base: type[Any]) -> type[Any]:
        class _Loader(base):
            def load(self, data: Any) -> Any:
                try:
                    return super().load(data)
                except (DataError, ValueError, OverflowError) as exc:
                    return Unreadable(bytes(data).decode(errors="replace"), str(exc))

        return _Loader

    loaders = {"date": _tolerant(DateLoader), "timestamp": _tolerant(TimestampLoader)}
    loaders["timestamptz"] = _tolerant(TimestamptzLoader)

    @event.listens_for(engine, "connect")
    def _register(dbapi_connection: Any, _record: Any) -> None:
        for name, loader in loaders.items():
            dbapi_connection.adapters.register_loader(name, loader)


def create_source_engine(config: SqlSourceConfig, lookup_secret: SecretLookup | None = None) -> Engine:
    """A SQLAlchemy engine for the source (nothing connects until it is used)."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    url = connection_url(config, lookup_secret)
    try:
        engine = create_engine(url, pool_pre_ping=True)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise SqlSourceError(
            f"source.sql.url {redact_url(config.url)} is not a URL SQLAlchemy can use ({type(exc).__name__}: "
            f"{exc}); write it as dialect://user:${{PASSWORD_VAR}}@host:port/database."
        ) from None
    _tolerate_unreadable_values(engine)
    return engine


# Column kinds: the Arrow type of the snapshot column and how one database value becomes it.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "str": pa.string(),
    "datetime": pa.timestamp("us"),
    "datetime_tz": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
    "time": pa.time64("us"),
    "timedelta": pa.duration("us"),
    "bytes": pa.binary(),
    "json": pa.string(),
}
_KIND_OF_PYTHON_TYPE: list[tuple[type, str]] = [
    (bool, "bool"),
    (int, "int"),
    (float, "float"),
    (Decimal, "float"),
    (datetime, "datetime"),
    (date, "date"),
    (time, "time"),
    (timedelta, "timedelta"),
    (bytes, "bytes"),
    (dict, "json"),
    (list, "json"),
    (str, "str"),
]


@dataclass(frozen=True)
class SourceColumn:
    name: str
    kind: str
    sql_type: str


def _kind_of(python_type: type) -> str | None:
    for base, kind in _KIND_OF_PYTHON_TYPE:
        if issubclass(python_type, base):
            return kind
    return None


def _declared_kinds(connection: Connection, config: SqlSourceConfig) -> dict[str, tuple[str, str]]:
    """Column -> (kind, SQL type) from the table's declared types; empty for a query or undeclared types."""
    from sqlalchemy import inspect

    if config.table is None:
        return {}
    schema, _, name = config.table.rpartition(".")
    columns = inspect(connection).get_columns(name, schema=schema or None)
    kinds: dict[str, tuple[str, str]] = {}
    for column in columns:
        sql_type = column["type"]
        try:
            kind = _kind_of(sql_type.python_type)
        except NotImplementedError:  # e.g. SQLite columns declared without a type
            continue
        if kind is not None:
            timezone = getattr(sql_type, "timezone", False)
            kinds[str(column["name"])] = ("datetime_tz" if kind == "datetime" and timezone else kind, str(sql_type))
    return kinds


def _infer_columns(
    names: Sequence[str], rows: Sequence[Sequence[Any]], declared: Mapping[str, tuple[str, str]]
) -> list[SourceColumn]:
    """Declared kinds where the table has them, else the kind of the first value in the first batch."""
    columns = []
    for index, name in enumerate(names):
        if name in declared:
            kind, sql_type = declared[name]
        else:
            sample = next((row[index] for row in rows if row[index] is not None), None)
            found = _kind_of(type(sample)) if sample is not None and not isinstance(sample, Unreadable) else None
            kind, sql_type = found or "str", "(from the values)"
        if kind == "datetime":
            sample = next((row[index] for row in rows if isinstance(row[index], datetime)), None)
            kind = "datetime_tz" if sample is not None and sample.tzinfo is not None else kind
        columns.append(SourceColumn(name, kind, sql_type))
    return columns


def _coerce(value: Any, kind: str) -> Any:
    """One database value as the Python value of its column's kind.

    Raises:
        ValueError: it does not fit (the message is the quarantine reason's tail).
    """
    if isinstance(value, Unreadable):
        raise ValueError(f"the database driver cannot read {value.text!r} ({value.error})")
    if kind == "int" and isinstance(value, int | Decimal | float) and not isinstance(value, bool):
        if float(value).is_integer():
            return int(value)
    elif kind == "float" and isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        return float(value)
    elif kind == "bool" and (isinstance(value, bool) or value in (0, 1)):
        return bool(value)
    elif kind in ("str", "json"):
        if isinstance(value, dict | list):
            return json.dumps(value, sort_keys=True, default=str)
        return value.decode() if isinstance(value, bytes) else str(value)
    elif kind in ("datetime", "datetime_tz") and isinstance(value, datetime | str):
        parsed = datetime.fromisoformat(value) if isinstance(value, str) else value
        if kind == "datetime_tz":
            return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        if parsed.tzinfo is None:
            return parsed
    elif kind == "date" and isinstance(value, date | str) and not isinstance(value, datetime):
        return date.fromisoformat(value) if isinstance(value, str) else value
    elif kind == "time" and isinstance(value, time | str):
        return time.fromisoformat(value) if isinstance(value, str) else value
    elif kind == "timedelta" and isinstance(value, timedelta):
        return value
    elif kind == "bytes" and isinstance(value, bytes | memoryview):
        return bytes(value)
    raise ValueError(f"{value!r} is not a {kind} value")


def _column_array(values: list[Any], column: SourceColumn) -> tuple[pa.Array, dict[int, str]]:
    """One column of a batch as Arrow, and the reason for each row whose value does not fit."""
    arrow_type = _ARROW_TYPES[column.kind]
    if column.kind not in ("json", "str", "datetime_tz", "float"):
        try:  # the common case: the driver already returned the right Python types
            return pa.array(values, type=arrow_type), {}
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            pass
    bad: dict[int, str] = {}
    coerced: list[Any] = []
    for index, value in enumerate(values):
        if value is None:
            coerced.append(None)
            continue
        try:
            coerced.append(_coerce(value, column.kind))
        except (ValueError, TypeError, OverflowError) as exc:
            bad[index] = f'column "{column.name}" ({column.sql_type}): {exc}'
            coerced.append(None)
    try:
        return pa.array(coerced, type=arrow_type), bad
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        # Out of Arrow's range after coercion (e.g. a huge integer): find which values.
        kept: list[Any] = []
        for index, value in enumerate(coerced):
            try:
                pa.array([value], type=arrow_type)
                kept.append(value)
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError) as exc:
                bad[index] = f'column "{column.name}" ({column.sql_type}): {value!r} does not fit {arrow_type} ({exc})'
                kept.append(None)
        return pa.array(kept, type=arrow_type), bad


def _raw_rows_frame(names: Sequence[str], rows: Sequence[Sequence[Any]]) -> pd.DataFrame:
    return pd.DataFrame(
        [[repr(v) if isinstance(v, Unreadable) else v for v in row] for row in rows], columns=list(names), dtype=object
    )


@dataclass
class Batch:
    """One fetched batch: the rows that fit their columns (Arrow), and the ones that do not."""

    table: pa.Table
    kept: np.ndarray
    """Positions in the batch of the rows in `table`."""
    rejected: pd.DataFrame
    reasons: list[str]


def convert_batch(rows: Sequence[Sequence[Any]], columns: Sequence[SourceColumn]) -> Batch:
    """Database rows as a typed Arrow table; a row with any value that does not fit its column is rejected."""
    arrays: list[pa.Array] = []
    bad_rows: dict[int, list[str]] = {}
    for position, column in enumerate(columns):
        array, bad = _column_array([row[position] for row in rows], column)
        arrays.append(array)
        for index, reason in bad.items():
            bad_rows.setdefault(index, []).append(reason)
    table = pa.Table.from_arrays(arrays, names=[c.name for c in columns])
    names = [c.name for c in columns]
    if not bad_rows:
        return Batch(table, np.arange(len(rows)), _raw_rows_frame(names, []), [])
    mask = np.ones(len(rows), dtype=bool)
    mask[list(bad_rows)] = False
    rejected = _raw_rows_frame(names, [rows[i] for i in sorted(bad_rows)])
    reasons = [f"unconvertible value: {'; '.join(bad_rows[i])}" for i in sorted(bad_rows)]
    return Batch(table.filter(pa.array(mask)), np.flatnonzero(mask), rejected, reasons)


# --- watermarks ---------------------------------------------------------------------------------------------


def _tag(value: Any) -> dict[str, Any]:
    """A watermark value as JSON that `_untag` turns back into the same Python type."""
    if isinstance(value, datetime):
        return {"type": "datetime", "value": value.isoformat()}
    if isinstance(value, date):
        return {"type": "date", "value": value.isoformat()}
    if isinstance(value, Decimal):
        return {"type": "decimal", "value": str(value)}
    if isinstance(value, bool | int | float | str):
        return {"type": type(value).__name__, "value": value}
    raise SqlSourceError(
        f"the watermark's values are {type(value).__name__}, which cannot be compared across runs; choose a "
        "number, text, date or timestamp column as source.sql.watermark."
    )


def _untag(tagged: Mapping[str, Any]) -> Any:
    kind, value = tagged["type"], tagged["value"]
    if kind == "datetime":
        return datetime.fromisoformat(value)
    if kind == "date":
        return date.fromisoformat(value)
    if kind == "decimal":
        return Decimal(value)
    return value


@dataclass(frozen=True)
class ReadPlan:
    """The statements of one run: what is read and the watermark range (low exclusive, high inclusive)."""

    relation: str
    watermark: str | None
    order_by: str
    low: Any = None
    high: Any = None

    def select(self) -> str:
        conditions = []
        if self.watermark is not None:
            conditions.append(f"{self.watermark} <= :high")
            if self.low is not None:
                conditions.append(f"{self.watermark} > :low")
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        return f"SELECT * FROM {self.relation}{where}{self.order_by}"

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in (("low", self.low), ("high", self.high)) if v is not None}


def _relation(connection: Connection, config: SqlSourceConfig) -> str:
    preparer = connection.dialect.identifier_preparer
    if config.query is not None:
        query = config.query.strip().rstrip(";")
        return f"({query}) AS {_SOURCE_ALIAS}"
    assert config.table is not None
    return ".".join(preparer.quote(part) for part in config.table.split("."))


def source_names(connection: Connection, config: SqlSourceConfig, relation: str) -> list[str]:
    """The source's column names (a probe that reads no rows); its table must exist, no name may be reserved.

    Raises:
        SqlSourceError: the table is missing, or a column uses sluice's reserved prefix.
    """
    from sqlalchemy import inspect, text

    if config.table is not None:
        schema, _, name = config.table.rpartition(".")
        inspector = inspect(connection)
        if not inspector.has_table(name, schema=schema or None):
            available = ", ".join(sorted(inspector.get_table_names(schema=schema or None))) or "none"
            raise SqlSourceError(
                f"source.sql.table {config.table!r} does not exist at {redact_url(config.url)}; tables there: "
                f"{available}. Fix source.sql.table."
            )
    names = [str(n) for n in connection.execute(text(f"SELECT * FROM {relation} WHERE 1 = 0")).keys()]
    reserved = reserved_columns(names)
    if reserved:
        raise SqlSourceError(
            f"{config.describe()} has columns named with sluice's reserved prefix {RESERVED_PREFIX!r}: "
            f"{', '.join(reserved)}; rename them in source.sql.query (`SELECT {reserved[0]} AS …`)."
        )
    return names


def _check_columns(config: SqlSourceConfig, names: Sequence[str], id_column: str | None) -> None:
    for field, column in (("source.sql.watermark", config.watermark), ("source.id_column", id_column)):
        if column and column not in names:
            raise SqlSourceError(
                f'column "{column}" ({field}) is missing from {config.describe()}; available columns: '
                f"{', '.join(names)}."
            )


def _plan(
    connection: Connection, config: SqlSourceConfig, relation: str, *, id_column: str | None, low: Any
) -> tuple[ReadPlan, int]:
    """What to read this run, and how many rows lack a watermark (never ingested: reported)."""
    from sqlalchemy import text

    quote_ = connection.dialect.identifier_preparer.quote
    keys = [k for k in (config.watermark, id_column) if k]
    order_by = f" ORDER BY {', '.join(quote_(k) for k in keys)}" if keys else ""
    if config.watermark is None:
        return ReadPlan(relation, None, order_by), 0
    watermark = quote_(config.watermark)
    since = f" WHERE {watermark} > :low" if low is not None else ""
    high = connection.execute(text(f"SELECT MAX({watermark}) FROM {relation}{since}"), _low(low)).scalar()
    if isinstance(high, Unreadable):
        raise SqlSourceError(
            f"the watermark column {config.watermark!r} holds {high.text!r}, which cannot be read ({high.error}); "
            "fix the value in the database or choose another source.sql.watermark."
        )
    missing = connection.execute(text(f"SELECT COUNT(*) FROM {relation} WHERE {watermark} IS NULL")).scalar()
    return ReadPlan(relation, watermark, order_by, low=low, high=high), int(missing or 0)


def _low(low: Any) -> dict[str, Any]:
    return {} if low is None else {"low": low}


@contextmanager
def _database_errors(config: SqlSourceConfig) -> Iterator[None]:
    """Database errors as one message naming the source and the setting to fix (the password never appears)."""
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except DBAPIError as exc:
        if _unreachable(exc, config):
            raise SqlSourceUnreachableError(
                f"{config.describe()} did not answer: {_first_line(exc)}. Check that the database is running and "
                "reachable from here, then run again."
            ) from None
        raise SqlSourceError(
            f"cannot read {config.describe()}: {_first_line(exc)}. Check source.sql (table or query, watermark), "
            "that the database is reachable, and its user and password (environment or Secret block)."
        ) from None


def _unreachable(exc: Exception, config: SqlSourceConfig) -> bool:
    """A lost or refused connection to a database server, as opposed to a query or a login it refused."""
    from sqlalchemy.exc import OperationalError

    if not isinstance(exc, OperationalError) or config.url.startswith("sqlite"):
        return False
    # SQLite's OperationalError also means "no such table"; a server names a refused login or query with a
    # SQLSTATE, while libpq's connection failures carry none (or class 08, connection exception).
    sqlstate = getattr(getattr(exc, "orig", None), "sqlstate", None)
    return (sqlstate is None or sqlstate.startswith("08")) and "authentication" not in str(exc)


def _first_line(exc: Exception) -> str:
    original = getattr(exc, "orig", None) or exc
    return str(original).strip().splitlines()[0][:300] if str(original).strip() else type(original).__name__


def stream_rows(
    connection: Connection, plan: ReadPlan, *, batch_rows: int
) -> tuple[list[str], Iterator[Sequence[Sequence[Any]]]]:
    """Column names and the rows of `plan`, `batch_rows` at a time, from a server-side cursor."""
    from sqlalchemy import text

    streaming = connection.execution_options(stream_results=True, yield_per=batch_rows)
    result = streaming.execute(text(plan.select()), plan.params())
    names = [str(k) for k in result.keys()]
    return names, (list(part) for part in result.partitions(batch_rows))


# --- snapshots ----------------------------------------------------------------------------------------------


def source_key(config: SqlSourceConfig, id_column: str | None) -> str:
    """Which chain a source belongs to: its URL (as written, without secrets), relation, watermark and ids."""
    payload = {
        "format": SQL_FORMAT,
        "url": redact_url(config.url),
        "table": config.table,
        "query": config.query,
        "watermark": config.watermark,
        "id_column": id_column,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _chains(snapshot_root: Path) -> Path:
    return snapshot_root / "sql-chains"


def read_head(snapshot_root: Path, key: str) -> dict[str, Any] | None:
    """The manifest of a chain's newest snapshot, or None before its first run."""
    pointer = _chains(snapshot_root) / f"{key}.json"
    if not pointer.is_file():
        return None
    head = json.loads(pointer.read_text())["head"]
    manifest_path = snapshot_root / head / "manifest.json"
    return json.loads(manifest_path.read_text()) if manifest_path.is_file() else None


@contextmanager
def _chain_lock(snapshot_root: Path, key: str) -> Iterator[None]:
    """One run at a time extends a chain: two would both append to the same head."""
    folder = _chains(snapshot_root)
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / f"{key}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _row_hashes(table: pa.Table, content: Sequence[str]) -> np.ndarray:
    """64-bit hash of each row's values as text, independent of how rows were batched."""
    texts: dict[str, pa.Array] = {}
    for name in content:
        column = table.column(name)
        if pa.types.is_binary(column.type):
            column = pa.array([None if v is None else v.hex() for v in column.to_pylist()], pa.string())
        texts[name] = column.cast(pa.string()).fill_null("\x00")
    frame = pa.table(texts).to_pandas() if texts else pd.DataFrame(index=range(table.num_rows))
    return pd.util.hash_pandas_object(frame, index=False).to_numpy(dtype=np.uint64)


def _earlier_ids(snapshot_root: Path, parts: Sequence[str]) -> pa.Array:
    tables = [pq.read_table(snapshot_root / p / "data.parquet", columns=[ITEM_ID]) for p in parts]
    return pa.chunked_array([t.column(ITEM_ID) for t in tables], type=pa.string()).combine_chunks()


def _seed_counter(counter: Any, earlier: pa.Array) -> None:
    """Continue content-id numbering over the chain: the k-th copy of a row anywhere in it gets `-k`."""
    if len(earlier) == 0:
        return
    bases = pc.utf8_slice_codeunits(earlier, 0, 16).to_pylist()
    counter.occurrences(np.array([int(b, 16) for b in bases], dtype=np.uint64))


@dataclass
class _Written:
    rows: int
    fetched: int
    rejected: list[pd.DataFrame]
    reasons: list[str]
    columns: list[SourceColumn]
    hashes: list[np.ndarray]
    new_ids: list[pa.Array]


def _write_rows(
    rows: Iterator[Sequence[Sequence[Any]]],
    names: list[str],
    declared: Mapping[str, tuple[str, str]],
    target: Path,
    *,
    label: str,
    id_column: str | None,
    earlier: pa.Array,
) -> _Written:
    """Convert and append each batch to `target` with item ids; rejected rows are kept for the quarantine."""
    from tasks import ingest  # tasks.ingest imports this module (SourceConfig.sql): import at call time

    counter = ingest.OccurrenceCounter()
    if id_column is None:
        _seed_counter(counter, earlier)
    out = _Written(0, 0, [], [], [], [], [])
    writer: pq.ParquetWriter | None = None
    try:
        for batch_rows in rows:
            if not out.columns:
                out.columns = _infer_columns(names, batch_rows, declared)
            batch = convert_batch(batch_rows, out.columns)
            out.rejected.append(batch.rejected)
            out.reasons += batch.reasons
            table = batch.table.append_column(SOURCE_FILE, pa.array([label] * batch.table.num_rows, pa.string()))
            table = table.append_column(SOURCE_ROW, pa.array(out.fetched + batch.kept, pa.int64()))
            out.fetched += len(batch_rows)
            hashes = _row_hashes(table, names)
            if id_column:
                ids = table.column(id_column).cast(pa.string())
            else:
                ids = pa.array(ingest._format_ids(hashes, counter.occurrences(hashes)), pa.string())
            if ITEM_ID in table.column_names:  # the source's own item_id column is the id
                table = table.drop_columns([ITEM_ID])
            table = table.add_column(0, ITEM_ID, ids)
            writer = writer or pq.ParquetWriter(target, table.schema)
            writer.write_table(table)
            out.rows += table.num_rows
            out.hashes.append(hashes)
            out.new_ids.append(ids.combine_chunks() if isinstance(ids, pa.ChunkedArray) else ids)
    finally:
        if writer is not None:
            writer.close()
    return out


def _check_unique_ids(ids: pa.Array, id_column: str, label: str) -> None:
    counts = pc.value_counts(ids)
    repeated = [v["values"] for v in counts.to_pylist() if v["counts"] > 1]
    if repeated:
        raise SqlSourceError(
            f'column "{id_column}" is not unique in {label} ({len(repeated)} repeated ids, e.g. {repeated[0]!r}); '
            "fix the ids or remove source.id_column to derive ids from content."
        )


@dataclass
class _Run:
    """One run's inputs: the source, its chain so far and this run's read plan."""

    config: SqlSourceConfig
    id_column: str | None
    head: dict[str, Any] | None
    plan: ReadPlan
    without_watermark: int


def _snapshot_id(run: _Run, columns: Sequence[SourceColumn], hashes: np.ndarray) -> str:
    digest = hashlib.sha256()
    header = {
        "format": SQL_FORMAT,
        "previous": run.head["snapshot_id"] if run.head else None,
        "columns": [(c.name, c.kind) for c in columns],
        "watermark": [run.config.watermark, _tag_or_none(run.plan.low), _tag_or_none(run.plan.high)],
        "id_column": run.id_column,
    }
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    digest.update(np.sort(hashes).tobytes())  # sorted: rows tied on the watermark may come in any order
    return digest.hexdigest()[:16]


def _tag_or_none(value: Any) -> dict[str, Any] | None:
    return None if value is None else _tag(value)


def _manifest(run: _Run, snapshot_id: str, written: _Written, quarantined: int, superseded: int) -> dict[str, Any]:
    previous = run.head
    parts = [*(previous["parts"] if previous else []), snapshot_id]
    chain_rows = (previous["rows"] if previous else 0) + written.rows - superseded
    chain_quarantined = (previous["quarantined"] if previous else 0) + quarantined + superseded
    part_entry = {
        "path": f"sql:{run.config.table or 'query'}@{snapshot_id[:8]}",
        "sha256": snapshot_id,
        "rows": written.rows,
        "malformed": quarantined,
        "quarantined": quarantined + superseded,
    }
    return {
        "snapshot_id": snapshot_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "kind": "sql",
        "source": {
            "url": redact_url(run.config.url),
            "table": run.config.table,
            "query": run.config.query,
            "watermark": run.config.watermark,
            "id_column": run.id_column,
            "key": source_key(run.config, run.id_column),
        },
        "query": run.plan.select(),
        "watermark": {
            "column": run.config.watermark,
            "low": _tag_or_none(run.plan.low),
            "high": _tag_or_none(run.plan.high),
            "rows_without_watermark": run.without_watermark,
        },
        "increment": {"rows": written.rows, "quarantined": quarantined, "superseded": superseded},
        "previous": previous["snapshot_id"] if previous else None,
        "parts": parts,
        "rows": chain_rows,
        "quarantined": chain_quarantined,
        "columns": [ITEM_ID, *(c.name for c in written.columns if c.name != ITEM_ID), SOURCE_FILE, SOURCE_ROW],
        "column_types": {c.name: f"{c.kind} ({c.sql_type})" for c in written.columns},
        "files": [*(previous["files"] if previous else []), part_entry],
        "reader": {"id_column": run.id_column, "batch_rows": run.config.batch_rows},
    }


def _write_increment(connection: Connection, run: _Run, snapshot_root: Path) -> tuple[str, dict[str, Any], bool]:
    """Read the plan's rows into a staging folder and move it into place; (id, manifest, reused)."""
    label = f"{run.config.table or 'query'}"
    staging = snapshot_root / f".sql-{os.getpid()}-{id(run):x}.tmp"
    staging.mkdir(parents=True, exist_ok=True)
    try:
        declared = _declared_kinds(connection, run.config)
        earlier_parts = run.head["parts"] if run.head else []
        earlier = _earlier_ids(snapshot_root, earlier_parts) if earlier_parts else pa.array([], pa.string())
        names, rows = stream_rows(connection, run.plan, batch_rows=run.config.batch_rows)
        written = _write_rows(
            rows, names, declared, staging / "data.parquet", label=label, id_column=run.id_column, earlier=earlier
        )
        if written.fetched == 0:
            raise _no_rows(run.config)
        new_ids = pa.concat_arrays(written.new_ids) if written.new_ids else pa.array([], pa.string())
        superseded = 0
        if run.id_column:
            _check_unique_ids(new_ids, run.id_column, label)
            superseded = int(pc.sum(pc.is_in(new_ids, value_set=earlier)).as_py() or 0)
        rejected = pd.concat(written.rejected, ignore_index=True) if written.rejected else pd.DataFrame()
        quarantine = quarantine_rows(rejected, step="ingest", reason=written.reasons)
        check_conservation(written.fetched, written.rows, len(quarantine), stage="ingest")
        hashes = np.concatenate(written.hashes) if written.hashes else np.zeros(0, dtype=np.uint64)
        snapshot_id = _snapshot_id(run, written.columns, hashes)
        write_quarantine(quarantine, staging / "quarantine.parquet")
        manifest = _manifest(run, snapshot_id, written, len(quarantine), superseded)
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    directory = snapshot_root / snapshot_id
    try:
        staging.rename(directory)
    except OSError:  # the same increment was written before (a run that stopped before moving the head)
        shutil.rmtree(staging, ignore_errors=True)
        return snapshot_id, json.loads((directory / "manifest.json").read_text()), True
    return snapshot_id, manifest, False


def _no_rows(config: SqlSourceConfig) -> SqlSourceError:
    return SqlSourceError(f"{config.describe()} returned no rows; nothing to ingest. Fill the table or fix source.sql.")


def _move_head(snapshot_root: Path, key: str, snapshot_id: str) -> None:
    pointer = _chains(snapshot_root) / f"{key}.json"
    staging = pointer.with_suffix(f".{os.getpid()}.tmp")
    staging.write_text(json.dumps({"head": snapshot_id}))
    staging.replace(pointer)


def ingest_sql(
    config: SqlSourceConfig,
    *,
    snapshot_root: Path,
    id_column: str | None = None,
    lookup_secret: SecretLookup | None = None,
) -> Snapshot:
    """Rows past the chain's watermark as a new snapshot listing every part of the chain; the head when none.

    Raises:
        SqlSourceError: the database cannot be reached or refuses the query, a column is missing, ids
            repeat, or the very first run finds no rows; the message names the setting to fix.
    """
    from tasks.ingest import Snapshot  # tasks.ingest imports this module (SourceConfig.sql)

    key = source_key(config, id_column)
    engine = create_source_engine(config, lookup_secret)
    try:
        with _chain_lock(snapshot_root, key), _database_errors(config), engine.connect() as connection:
            if engine.dialect.name == "postgresql":  # the range and the rows from one consistent view
                connection = connection.execution_options(isolation_level="REPEATABLE READ")
            head = read_head(snapshot_root, key)
            low = _untag(head["watermark"]["high"]) if head and head["watermark"]["high"] else None
            relation = _relation(connection, config)
            names = source_names(connection, config, relation)
            id_column = id_column or (ITEM_ID if ITEM_ID in names else None)  # a column item_id is the id
            _check_columns(config, names, id_column)
            plan, without = _plan(connection, config, relation, id_column=id_column, low=low)
            if config.watermark is not None and plan.high is None:  # nothing past the watermark
                if head is None:
                    raise _no_rows(config)
                return Snapshot(head["snapshot_id"], snapshot_root / head["snapshot_id"], head, reused=True)
            run = _Run(config, id_column, head if config.watermark else None, plan, without)
            snapshot_id, manifest, reused = _write_increment(connection, run, snapshot_root)
            _move_head(snapshot_root, key, snapshot_id)
    finally:
        engine.dispose()
    return Snapshot(snapshot_id, snapshot_root / snapshot_id, manifest, reused=reused)


# --- loading a chain ----------------------------------------------------------------------------------------


def _chain_frames(snapshot_root: Path, manifest: Mapping[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every part's rows, each item at its newest version; and the older versions it replaced."""
    parts = list(manifest["parts"])
    tables = [pq.read_table(snapshot_root / p / "data.parquet") for p in parts]
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise SqlSourceError(
            f"the snapshots of {manifest['source']['table'] or 'source.sql.query'} disagree on a column's type "
            f"({exc}); the table changed between runs: start a new chain (change source.sql) after such a change."
        ) from None
    data = table.to_pandas()
    part_of = np.repeat(np.arange(len(parts)), [t.num_rows for t in tables])
    older = data[ITEM_ID].duplicated(keep="last").to_numpy()
    if not older.any():
        return data, data.iloc[:0]
    newest = pd.Series(part_of, index=data[ITEM_ID]).groupby(level=0).max()
    replaced = data[older].copy()
    replaced["_by"] = [parts[int(newest[i])] for i in replaced[ITEM_ID]]
    return data[~older].reset_index(drop=True), replaced


def load_chain(snapshot_root: Path, manifest: Mapping[str, Any]) -> pd.DataFrame:
    """All rows of a chain of SQL snapshots (newest version of each item)."""
    return _chain_frames(snapshot_root, manifest)[0]


def load_chain_ids(snapshot_root: Path, manifest: Mapping[str, Any]) -> pd.Series:
    """The item ids `load_chain` returns, in its order, read from the id column alone."""
    ids = pd.concat(
        [pd.read_parquet(snapshot_root / p / "data.parquet", columns=[ITEM_ID])[ITEM_ID] for p in manifest["parts"]],
        ignore_index=True,
    )
    return ids[~ids.duplicated(keep="last")].reset_index(drop=True)


def load_chain_quarantine(snapshot_root: Path, manifest: Mapping[str, Any]) -> pd.DataFrame:
    """Every part's quarantined rows, plus the older versions of items a later part replaced."""
    quarantines = [pd.read_parquet(snapshot_root / p / "quarantine.parquet") for p in manifest["parts"]]
    replaced = _chain_frames(snapshot_root, manifest)[1]
    if not replaced.empty:
        reasons = [f"superseded: a newer version of this row arrived in snapshot {by}" for by in replaced["_by"]]
        quarantines.append(quarantine_rows(replaced.drop(columns="_by"), step="ingest", reason=reasons))
    return concat_quarantine(quarantines)
