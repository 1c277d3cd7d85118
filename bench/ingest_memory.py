"""Benchmark: peak memory of the streaming ingest on a multi-GB CSV (goal: peak RSS <= 2 GB for 5 GB).

Generates a CSV of `--gb` GB under a temporary folder (review-like text, a group, a float score, an
int count, a label; ~1% of rows repeated so the duplicate-suffix path runs), ingests it with
`tasks.ingest.ingest_files`, and reports the peak RSS. Baseline, measured in the same run: the peak
RSS of `pandas.read_csv` on the first `--slice-mb` MB of the same file, scaled linearly to the whole
file (what reading it into one DataFrame, as ingest did before streaming, would need). Each
measurement runs in a fresh child process, so neither inherits the other's heap or the generator's.
The CSV and the snapshot are deleted at the end unless `--keep`.

Run from the repository root: .venv/bin/python -m bench.ingest_memory [--gb 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

GOAL_PEAK_GB = 2.0
CHUNK_ROWS = 500_000
_WORDS = (
    "the a film movie story plot actor actress director scene script score camera light dark funny sad "
    "slow fast bold quiet loud clever dull warm cold brilliant tired fresh rotten charming awkward tense "
    "gentle brutal honest hollow vivid flat sharp soft strange familiar rich thin deep shallow long short"
).split()


def _rss_now_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def _peak_rss_kb() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # kB on Linux


def generate_csv(path: Path, target_bytes: int, seed: int = 0) -> tuple[int, float]:
    """Write review-like rows until the file holds `target_bytes`; returns (rows, seconds)."""
    rng = np.random.default_rng(seed)
    vocab = np.array(_WORDS)
    sentences = pa.array(
        [" ".join(rng.choice(vocab, size=int(rng.integers(8, 24)))) for _ in range(50_000)], pa.string()
    )
    movies = pa.array([f"movie {i:05d}" for i in range(5_000)], pa.string())
    labels = pa.array(["fresh", "rotten"], pa.string())
    started, rows = time.perf_counter(), 0
    with path.open("wb") as sink:
        header = True
        while sink.tell() < target_bytes:
            n = CHUNK_ROWS
            take = rng.integers(0, len(sentences), n)
            table = pa.table(
                {
                    "text": sentences.take(pa.array(take)),
                    "movie_name": movies.take(pa.array(rng.integers(0, len(movies), n))),
                    "score": pa.array(np.round(rng.random(n) * 10, 2)),
                    "votes": pa.array(rng.integers(0, 100_000, n)),
                    "category": labels.take(pa.array(rng.integers(0, 2, n))),
                }
            )
            repeats = table.take(pa.array(rng.integers(0, n, n // 100)))  # ~1% exact repeats
            table = pa.concat_tables([table, repeats])
            pa_csv.write_csv(table, sink, write_options=pa_csv.WriteOptions(include_header=header))
            header = False
            rows += table.num_rows
    return rows, time.perf_counter() - started


def write_slice(source: Path, target: Path, slice_bytes: int) -> int:
    """The first `slice_bytes` of a CSV, cut at a line end."""
    with source.open("rb") as src, target.open("wb") as dst:
        dst.write(src.read(slice_bytes))
        dst.write(src.readline())
        return dst.tell()


def _measure(kind: str, csv_path: Path, snapshot_root: Path) -> dict[str, float]:
    """Runs in a child: one measurement, reported as JSON on stdout."""
    import pandas as pd

    from tasks.ingest import SourceConfig, ingest_files

    before_kb = _rss_now_kb()
    started = time.perf_counter()
    if kind == "ingest":
        config = SourceConfig(path=str(csv_path))
        snapshot = ingest_files([csv_path], snapshot_root=snapshot_root, config=config)
        rows = snapshot.rows
    else:
        rows = len(pd.read_csv(csv_path))
    return {
        "seconds": time.perf_counter() - started,
        "rows": rows,
        "rss_before_gb": before_kb / 2**20,
        "peak_rss_gb": _peak_rss_kb() / 2**20,
    }


def _run_child(kind: str, csv_path: Path, snapshot_root: Path) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.ingest_memory", "--child", kind, str(csv_path), str(snapshot_root)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise SystemExit(f"the {kind} measurement failed:\n{out.stderr[-3000:]}")
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gb", type=float, default=5.0, help="size of the generated CSV")
    parser.add_argument("--slice-mb", type=float, default=500.0, help="baseline: read_csv on this much")
    parser.add_argument("--dir", default=None, help="where to write the CSV (default: a temp dir under /tmp)")
    parser.add_argument("--keep", action="store_true", help="keep the CSV and the snapshot")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "CSV", "ROOT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, csv_path, root = args.child
        print(json.dumps(_measure(kind, Path(csv_path), Path(root))))
        return

    target = int(args.gb * 1e9)
    work = Path(tempfile.mkdtemp(prefix="sluice-ingest-bench-", dir=args.dir))
    free = shutil.disk_usage(work).free
    if free < 1.8 * target:  # the CSV, its ~0.5x snapshot, and the baseline slice
        shutil.rmtree(work)
        raise SystemExit(f"{free / 1e9:.1f} GB free under {work.parent}; need ~{1.8 * target / 1e9:.1f} GB")
    try:
        csv_path = work / "reviews.csv"
        rows, gen_s = generate_csv(csv_path, target)
        size = csv_path.stat().st_size
        print(f"generated {csv_path} ({size / 1e9:.2f} GB, {rows:,} rows) in {gen_s:.0f} s", flush=True)

        ingest = _run_child("ingest", csv_path, work / "snapshots")
        snapshot_bytes = sum(p.stat().st_size for p in (work / "snapshots").rglob("*") if p.is_file())
        slice_path = work / "slice.csv"
        slice_bytes = write_slice(csv_path, slice_path, int(args.slice_mb * 1e6))
        baseline = _run_child("baseline", slice_path, work / "unused")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    scale = size / slice_bytes
    baseline_gb = baseline["rss_before_gb"] + (baseline["peak_rss_gb"] - baseline["rss_before_gb"]) * scale
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}")
    print(
        f"streaming ingest: {ingest['rows']:,} rows in {ingest['seconds']:.0f} s "
        f"({size / 1e6 / ingest['seconds']:.0f} MB/s), snapshot {snapshot_bytes / 1e9:.2f} GB; "
        f"peak RSS {ingest['peak_rss_gb']:.2f} GB (after imports {ingest['rss_before_gb']:.2f} GB)"
    )
    print(
        f"baseline pandas.read_csv on {slice_bytes / 1e6:.0f} MB: peak RSS {baseline['peak_rss_gb']:.2f} GB "
        f"in {baseline['seconds']:.1f} s; scaled x{scale:.1f} to the whole file: {baseline_gb:.1f} GB"
    )
    ratio = baseline_gb / ingest["peak_rss_gb"]
    verdict = "meets" if ingest["peak_rss_gb"] <= GOAL_PEAK_GB else "MISSES"
    goal = f"{verdict} the {GOAL_PEAK_GB:.0f} GB goal"
    print(f"ratio: a whole-file read needs {ratio:.1f}x the streaming peak; {goal}")


if __name__ == "__main__":
    main()
