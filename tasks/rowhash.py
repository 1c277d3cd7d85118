"""Content hashes of Arrow columns and rows, vectorised: XXH64 of each value's canonical bytes.

A row's hash (the base of its content id, and the key of exact-duplicate checks) depends on its own
values only: not on the other rows of its batch or file, not on how a column happens to be stored, not
on the order of columns. So each value is hashed in a canonical form:

- text and bytes: XXH64 of the bytes;
- numbers: as int64 when integral (7, 7.0 and an int32 7 agree: an integer column that gains a gap
  becomes float), else the float64 bits; NaN is missing;
- dates, times, timestamps and durations: int64 nanoseconds (a date equals its midnight timestamp);
- booleans: 0 or 1 under their own tag;
- anything else (lists, structs, maps, decimals): the value's JSON text.

A missing value contributes nothing, so a column that one file lacks (or leaves empty) does not change the
other files' ids. Each value hash is mixed with its column name's hash and the row hash is their sum, so
columns may come in any order.

XXH64 is hand-written (numba) because no installed library hashes the values of an Arrow string array
without making a Python object per value; `bench/RESULTS.md` has the measurements.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

_P2 = 0xC2B2AE3D27D4EB4F
_P3 = 0x165667B19E3779F9
_TAG_TEXT = 0x7465787400000001
_TAG_INT = 0x696E740000000002
_TAG_FLOAT = 0x666C6F6174000003
_TAG_TIME = 0x74696D6500000004
_TAG_BOOL = 0x626F6F6C00000005
_NS = {"s": 1_000_000_000, "ms": 1_000_000, "us": 1_000, "ns": 1}


def hash_bytes(data: np.ndarray, offsets: np.ndarray, seed: int = 0) -> np.ndarray:
    """XXH64 of each span `data[offsets[i]:offsets[i + 1]]` (uint8 data, int64 offsets)."""
    from tasks.xxh64 import hash_spans  # numba: a slow import, only when something is hashed

    if offsets.size <= 1:
        return np.zeros(0, dtype=np.uint64)
    data = np.ascontiguousarray(data, dtype=np.uint8).view()
    data.flags.writeable = False  # one compiled signature: Arrow buffers are read-only
    return hash_spans(data, np.ascontiguousarray(offsets, dtype=np.int64), np.uint64(seed))


def mix64(values: np.ndarray) -> np.ndarray:
    """XXH64's final avalanche over uint64 values: every input bit moves about half the output bits."""
    h = values.astype(np.uint64, copy=True)
    h ^= h >> np.uint64(33)
    h *= np.uint64(_P2)
    h ^= h >> np.uint64(29)
    h *= np.uint64(_P3)
    h ^= h >> np.uint64(32)
    return h


def _string_hashes(array: pa.Array, seed: int) -> np.ndarray:
    if pa.types.is_string_view(array.type) or pa.types.is_binary_view(array.type):
        array = array.cast(pa.large_binary())
    wide = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    n = len(array)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    buffers = array.buffers()
    offsets = np.frombuffer(buffers[1], dtype=np.int64 if wide else np.int32)[array.offset : array.offset + n + 1]
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(1, np.uint8)
    return hash_bytes(data, offsets.astype(np.int64), seed)


def _valid(array: pa.Array) -> np.ndarray:
    if array.null_count == 0:
        return np.ones(len(array), dtype=bool)
    return np.asarray(array.is_valid().to_numpy(zero_copy_only=False), dtype=bool)


def _json_text(value: object) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str, sort_keys=True)


def _number_hashes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of float64 values (integral ones as int64) and which of them are present (NaN is missing)."""
    present = ~np.isnan(values)
    integral = present & (np.floor(values) == values) & (np.abs(values) < 2.0**63)
    as_int = np.where(integral, values, 0).astype(np.int64).view(np.uint64) ^ np.uint64(_TAG_INT)
    as_float = np.where(values == 0, 0.0, values).view(np.uint64) ^ np.uint64(_TAG_FLOAT)
    return mix64(np.where(integral, as_int, as_float)), present


def value_hashes(array: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A hash per value in canonical form (see the module doc) and a mask of the values present."""
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    kind = array.type
    if pa.types.is_dictionary(kind):
        hashes, present = value_hashes(array.dictionary)
        indices = array.indices.fill_null(0).to_numpy(zero_copy_only=False)
        return hashes[indices], present[indices] & _valid(array)
    if pa.types.is_null(kind):
        return np.zeros(len(array), dtype=np.uint64), np.zeros(len(array), dtype=bool)
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind):
        return _string_hashes(array, _TAG_TEXT), _valid(array)
    if pa.types.is_large_binary(kind) or pa.types.is_string_view(kind) or pa.types.is_binary_view(kind):
        return _string_hashes(array, _TAG_TEXT), _valid(array)
    if pa.types.is_fixed_size_binary(kind):
        return _string_hashes(array.cast(pa.binary()), _TAG_TEXT), _valid(array)
    if pa.types.is_boolean(kind):
        bits = array.fill_null(False).to_numpy(zero_copy_only=False).astype(np.uint64)
        return mix64(bits ^ np.uint64(_TAG_BOOL)), _valid(array)
    if pa.types.is_integer(kind):
        ints = array.fill_null(0).to_numpy(zero_copy_only=False)
        if pa.types.is_uint64(kind):
            big = ints >= np.uint64(2**63)  # beyond int64: hashed as the float they equal
            if big.any():
                return _number_hashes(pc.cast(array, pa.float64()).fill_null(np.nan).to_numpy())
        ints = ints.astype(np.int64).view(np.uint64)
        return mix64(ints ^ np.uint64(_TAG_INT)), _valid(array)
    if pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        floats = pc.cast(array, pa.float64()).fill_null(np.nan).to_numpy(zero_copy_only=False)
        return _number_hashes(floats)
    if pa.types.is_temporal(kind) and not pa.types.is_interval(kind):
        return _time_hashes(array), _valid(array)
    texts = pa.array([_json_text(v) for v in array.to_pylist()], type=pa.string())
    return _string_hashes(texts, _TAG_TEXT), _valid(array)


def _time_hashes(array: pa.Array) -> np.ndarray:
    """Dates, times, timestamps and durations as int64 nanoseconds (wrapping, like the hash)."""
    kind = array.type
    if pa.types.is_date32(kind):
        scale = 86_400 * 10**9
    elif pa.types.is_date64(kind):
        scale = 10**6
    else:
        scale = _NS[kind.unit]
    ticks = array.view(pa.int32() if kind.bit_width == 32 else pa.int64())
    raw = ticks.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64).view(np.uint64)
    return mix64(raw * np.uint64(scale) ^ np.uint64(_TAG_TIME))


def name_hash(name: str) -> int:
    """The hash a column's values are keyed by."""
    encoded = np.frombuffer(name.encode(), dtype=np.uint8) if name else np.zeros(1, np.uint8)
    return int(hash_bytes(encoded, np.array([0, len(name.encode())], dtype=np.int64), _TAG_TEXT)[0])


def hash_rows(table: pa.Table | pa.RecordBatch, columns: Sequence[str] | None = None) -> np.ndarray:
    """One uint64 per row over `columns` (default: all): the sum of each present value's name-keyed hash."""
    names = list(table.column_names if columns is None else columns)
    total = np.zeros(table.num_rows, dtype=np.uint64)
    for name in names:
        hashes, present = value_hashes(table.column(name))
        keyed = mix64(hashes ^ np.uint64(name_hash(name)))
        total += np.where(present, keyed, np.uint64(0))
    return total


def hash_text(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """One uint64 per value of a text column (ids): XXH64 of its bytes; missing values hash as empty text."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks() if values.num_chunks != 1 else values.chunk(0)
    return _string_hashes(values.cast(pa.string()) if not pa.types.is_large_string(values.type) else values, 0)


def format_hex(hashes: np.ndarray) -> pa.Array:
    """Each uint64 as 16 lower-case hex digits, as an Arrow string array (no Python object per value)."""
    n = hashes.size
    digits = hashes.astype(">u8").tobytes().hex().encode("ascii")
    offsets = (np.arange(n + 1, dtype=np.int32) * 16).tobytes()
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(digits)])
