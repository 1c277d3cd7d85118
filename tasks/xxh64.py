"""XXH64 (the xxHash specification) of many byte spans at once, compiled with numba.

Imported only when something is hashed: numba itself takes about a second to import, and each
function compiles once and is then cached beside this file (`__pycache__`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

P1 = np.uint64(0x9E3779B185EBCA87)
P2 = np.uint64(0xC2B2AE3D27D4EB4F)
P3 = np.uint64(0x165667B19E3779F9)
P4 = np.uint64(0x85EBCA77C2B2AE63)
P5 = np.uint64(0x27D4EB2F165667C5)


@njit(inline="always", cache=True)
def _rotl(x: Any, r: int) -> Any:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@njit(inline="always", cache=True)
def _read(d: Any, p: int, width: int) -> Any:
    # little-endian, byte by byte: the spans start at any offset, and LLVM merges the loads
    value = np.uint64(0)
    for i in range(width):
        value |= np.uint64(d[p + i]) << np.uint64(8 * i)
    return value


@njit(inline="always", cache=True)
def _lane(acc: Any, value: Any) -> Any:
    return _rotl(acc + value * P2, 31) * P1


@njit(inline="always", cache=True)
def _merge(acc: Any, value: Any) -> Any:
    return (acc ^ _lane(np.uint64(0), value)) * P1 + P4


@njit(inline="always", cache=True)
def _xxh64(d: Any, start: int, end: int, seed: Any) -> Any:
    p = start
    if end - start >= 32:
        v1, v2, v3, v4 = seed + P1 + P2, seed + P2, seed, seed - P1
        while p <= end - 32:
            v1 = _lane(v1, _read(d, p, 8))
            v2 = _lane(v2, _read(d, p + 8, 8))
            v3 = _lane(v3, _read(d, p + 16, 8))
            v4 = _lane(v4, _read(d, p + 24, 8))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _merge(_merge(_merge(_merge(h, v1), v2), v3), v4)
    else:
        h = seed + P5
    h += np.uint64(end - start)
    while p + 8 <= end:
        h = _rotl(h ^ _lane(np.uint64(0), _read(d, p, 8)), 27) * P1 + P4
        p += 8
    if p + 4 <= end:
        h = _rotl(h ^ (_read(d, p, 4) * P1), 23) * P2 + P3
        p += 4
    while p < end:
        h = _rotl(h ^ (np.uint64(d[p]) * P5), 11) * P1
        p += 1
    h ^= h >> np.uint64(33)
    h *= P2
    h ^= h >> np.uint64(29)
    h *= P3
    return h ^ (h >> np.uint64(32))


@njit(nogil=True, cache=True)
def hash_spans(data: Any, offsets: Any, seed: Any) -> Any:
    """XXH64 of `data[offsets[i]:offsets[i + 1]]` for each i (uint8 data, int64 offsets, uint64 seed)."""
    n = offsets.size - 1
    out = np.empty(n, np.uint64)
    for i in range(n):
        out[i] = _xxh64(data, offsets[i], offsets[i + 1], seed)
    return out
