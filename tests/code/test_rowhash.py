"""Content hashes: XXH64 of each value's canonical form, so a row's id depends on its values alone."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

from tasks import rowhash


def test_text_hashes_are_the_xxh64_of_the_specification() -> None:
    texts = ["", "abc", "Nobody inspects the spammish repetition"]
    assert rowhash.hash_text(pa.array(texts)).tolist() == [0xEF46DB3751D8E999, 0x44BC2CF5AD770999, 0xFBCEA83C8A378BF1]
    sliced = pa.array(["x", *texts]).slice(1)  # an Arrow slice starts mid-buffer
    assert rowhash.hash_text(sliced).tolist() == rowhash.hash_text(pa.array(texts)).tolist()


def test_a_value_hashes_the_same_however_it_is_stored() -> None:
    ints = pa.table({"n": pa.array([7, 8], pa.int32()), "t": ["a", "b"]})
    floats_reordered = pa.table({"t": pa.array(["a", "b"], pa.large_string()), "n": [7.0, 8.0]})
    assert rowhash.hash_rows(ints).tolist() == rowhash.hash_rows(floats_reordered).tolist()
    day = pa.table({"d": pa.array([dt.date(2024, 1, 2)])})
    midnight = pa.table({"d": pa.array([dt.datetime(2024, 1, 2)], pa.timestamp("s"))})
    assert rowhash.hash_rows(day).tolist() == rowhash.hash_rows(midnight).tolist()


def test_different_values_and_missing_columns() -> None:
    number, text = pa.table({"n": [7]}), pa.table({"n": ["7"]})
    assert rowhash.hash_rows(number)[0] != rowhash.hash_rows(text)[0]  # a text "7" is not the number 7
    swapped = pa.table({"a": ["x"], "b": ["y"]}), pa.table({"a": ["y"], "b": ["x"]})
    assert rowhash.hash_rows(swapped[0])[0] != rowhash.hash_rows(swapped[1])[0]  # values stay with their column
    with_gap = pa.table({"t": ["a", "b"], "extra": pa.array([None, None], pa.string())})
    without = pa.table({"t": ["a", "b"]})
    assert rowhash.hash_rows(with_gap).tolist() == rowhash.hash_rows(without).tolist()
    floats = pa.table({"n": [np.nan, 1.5]})
    assert rowhash.hash_rows(floats)[0] == 0 and rowhash.hash_rows(floats)[1] != 0


def test_hex_ids_are_sixteen_digits() -> None:
    hashes = np.array([0, 0xEF46DB3751D8E999], dtype=np.uint64)
    assert rowhash.format_hex(hashes).to_pylist() == ["0000000000000000", "ef46db3751d8e999"]
