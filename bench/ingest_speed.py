"""Benchmark: ingest throughput against pyarrow at disk speed (goal: >= 0.6x the baseline).

Generates a review CSV of `--mb` MB (real Rotten Tomatoes snippets recombined into unique texts with
quotes, commas, line breaks and non-ASCII characters; a movie, a critic, a float score with gaps, an int
vote count, a date, a timestamp and a label; ~1 % exact repeats and a few malformed lines), then times,
interleaved in the same process and after a warm-up on the same file:

    baseline  sha256 of the file (hashlib.file_digest), then pyarrow's streaming CSV reader
              (`open_csv`, values with line breaks allowed, bad lines skipped) with each batch written
              by a `ParquetWriter`: what a bare "CSV in, Parquet out, hash recorded" costs;
    sluice    `tasks.ingest.ingest_files` into a fresh snapshot folder (hash, parse, content ids,
              repeated-row suffixes, provenance, quarantine, manifest).

It prints the median seconds of `--repeats` rounds and the ratio baseline / sluice (1.0: as fast as
the baseline). `--profile` runs sluice once more under cProfile and prints the top functions.
The CSV and outputs are deleted at the end unless `--keep`.

Run from the repository root: .venv/bin/python -m bench.ingest_speed [--mb 300] [--repeats 3] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import os
import platform
import pstats
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

CHUNK_ROWS = 200_000
GOAL_RATIO = 0.6
_DECORATIONS = [
    "",
    "",
    "",
    " Truly “great”.",
    ' He said "wow", then left.',
    " Naïve, but charming — and café-smart.",
    " 🍿🍿",
    "\nSecond paragraph: it drags, then soars.",
    " (Spoiler: the dog lives.)",
    ' "Meh," said the critic; "meh."',
    " Überraschend gut; señor approves.",
    " 10/10, would watch again…",
]


def _pool(seed: int) -> tuple[pa.Array, pa.Array, pa.Array]:
    """Texts, movie names and critics to draw from: real snippets, split in halves to recombine."""
    from tasks.demo_data import rotten_tomatoes_frame

    frame = rotten_tomatoes_frame()
    texts = [str(t) for t in frame["text"].dropna()]
    halves = [t[: len(t) // 2] for t in texts], [t[len(t) // 2 :] for t in texts]
    rng = np.random.default_rng(seed)
    movies = [f"{m} ({1950 + i % 70})" for i, m in enumerate(rng.permutation(frame["movie_name"].unique()))]
    movies += [f"Film noir nº {i}" for i in range(5_000)]
    critics = [f"{first} {last}" for first in ("Ana", "Zoë", "Jürgen", "Li", "Sam", "Chidi") for last in "ABCDEFGH"]
    return pa.array(halves[0] + halves[1]), pa.array(movies), pa.array(critics)


def generate_reviews_csv(path: Path, target_bytes: int, seed: int = 0) -> int:
    """Write review rows until the file holds `target_bytes`; returns the number of data lines."""
    rng = np.random.default_rng(seed)
    halves, movies, critics = _pool(seed)
    decorations = pa.array(_DECORATIONS)
    labels = pa.array(["fresh", "rotten", "plot"])
    day0 = np.datetime64("2015-01-01")
    rows = 0
    with path.open("wb") as sink:
        header = True
        while sink.tell() < target_bytes:
            n = CHUNK_ROWS

            def pick(values: pa.Array, size: int = n) -> pa.Array:
                return values.take(pa.array(rng.integers(0, len(values), size)))

            text = pc.binary_join_element_wise(pick(halves), pick(halves), pick(decorations), "")
            score = np.round(rng.random(n) * 10, 1)
            days = rng.integers(0, 3_650, n)
            table = pa.table(
                {
                    "text": text,
                    "movie_name": pick(movies),
                    "critic": pick(critics),
                    "score": pa.array(score, mask=rng.random(n) < 0.02),
                    "votes": pa.array(rng.integers(0, 100_000, n)),
                    "published": pa.array(day0 + days),
                    "fetched_at": pa.array(
                        (day0 + days).astype("datetime64[s]") + rng.integers(0, 86_400, n).astype("timedelta64[s]")
                    ),
                    "category": labels.take(pa.array(rng.choice(3, n, p=[0.55, 0.4, 0.05]))),
                }
            )
            repeats = table.take(pa.array(rng.integers(0, n, n // 100)))  # ~1 % exact repeats
            table = pa.concat_tables([table, repeats])
            pa_csv.write_csv(table, sink, write_options=pa_csv.WriteOptions(include_header=header))
            header = False
            sink.write(b"a line with no delimiters at all\nx,y,z,too,many,fields,for,this,header,row\n")
            rows += table.num_rows + 2
    return rows


def run_baseline(csv_path: Path, out_path: Path) -> int:
    """sha256 of the file, then pyarrow's streaming CSV read with every batch written to Parquet."""
    with csv_path.open("rb") as handle:
        hashlib.file_digest(handle, "sha256").hexdigest()
    parse = pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=lambda row: "skip")
    reader = pa_csv.open_csv(csv_path, read_options=pa_csv.ReadOptions(block_size=1 << 22), parse_options=parse)
    rows = 0
    with pq.ParquetWriter(out_path, reader.schema) as writer:
        for batch in reader:
            writer.write_batch(batch)
            rows += batch.num_rows
    return rows


def run_sluice(csv_path: Path, snapshot_root: Path) -> int:
    """`tasks.ingest.ingest_files` into a fresh snapshot folder."""
    from tasks.ingest import SourceConfig, ingest_files

    shutil.rmtree(snapshot_root, ignore_errors=True)
    snapshot = ingest_files([csv_path], snapshot_root=snapshot_root, config=SourceConfig(path=str(csv_path)))
    return snapshot.rows


def _timed(run: object, *args: Path) -> float:
    started = time.perf_counter()
    run(*args)  # type: ignore[operator]
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=300.0, help="size of the generated CSV")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (the median is reported)")
    parser.add_argument("--profile", action="store_true", help="print sluice's cProfile top functions")
    parser.add_argument("--dir", default=None, help="where to write the CSV (default: a temp dir under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the CSV and the outputs")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="sluice-ingest-speed-", dir=args.dir))
    try:
        csv_path = work / "reviews.csv"
        started = time.perf_counter()
        lines = generate_reviews_csv(csv_path, int(args.mb * 1e6))
        size = csv_path.stat().st_size
        print(f"generated {size / 1e6:.0f} MB, {lines:,} data lines in {time.perf_counter() - started:.0f} s")
        print(
            f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        base_rows = run_baseline(csv_path, work / "baseline.parquet")  # warm-up: page cache, imports
        sluice_rows = run_sluice(csv_path, work / "snapshots")
        print(f"rows: baseline {base_rows:,}, sluice {sluice_rows:,} (+ quarantined malformed lines)")
        baseline, sluice = [], []
        for _ in range(args.repeats):
            baseline.append(_timed(run_baseline, csv_path, work / "baseline.parquet"))
            sluice.append(_timed(run_sluice, csv_path, work / "snapshots"))
        b, s = statistics.median(baseline), statistics.median(sluice)
        print(
            f"baseline (sha256 + pyarrow stream + Parquet write): {b:.2f} s ({size / 1e6 / b:.0f} MB/s) "
            f"rounds {', '.join(f'{t:.2f}' for t in baseline)}"
        )
        print(
            f"sluice ingest_files: {s:.2f} s ({size / 1e6 / s:.0f} MB/s) rounds {', '.join(f'{t:.2f}' for t in sluice)}"
        )
        verdict = "meets" if b / s >= GOAL_RATIO else "MISSES"
        print(f"ratio baseline/sluice: {b / s:.2f} ({verdict} the {GOAL_RATIO} goal)")
        if args.profile:
            profile = cProfile.Profile()
            profile.runcall(run_sluice, csv_path, work / "snapshots")
            pstats.Stats(profile).sort_stats("tottime").print_stats(15)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
