"""Benchmark: sync 10,000 tasks with predictions into a real Label Studio (goal <= 30 s).

Baseline, measured in the same run against the same server: one import call per task (its
prediction inline), the way a naive loop does it, timed on 200 tasks and extrapolated.
sluice: `LabelStudioClient.import_items` in batches of 500, after reading which items the
project already holds; then a rerun, which must import nothing.

    .venv/bin/python bench/labelstudio_sync.py                 # a throwaway server (first init ~80 s)
    .venv/bin/python bench/labelstudio_sync.py --home .sluice  # reuse/start the home's server

(with the project installed, `pip install -e .`; else prefix PYTHONPATH=.)
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pandas as pd

from sluice.home import Home
from sluice.labelstudio import LabelStudioClient
from sluice.labelstudio_server import LabelStudioSettings, RunningServer, ensure_server, start_server
from tasks.label_config import load_label_config

REPO = Path(__file__).resolve().parent.parent
CLASSES = ["fresh", "rotten"]
GOAL_S = 30.0


def _items(n: int, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(seed)
    words = np.array("the film plot actor scene dull lovely script score long short brave".split())
    texts = [" ".join(rng.choice(words, size=30)) for _ in range(n)]  # ~180 characters, a review snippet
    items = pd.DataFrame({"item_id": [f"bench-{i:06d}" for i in range(n)], "text": texts})
    predictions = pd.DataFrame(
        {"item_id": items["item_id"], "label": rng.choice(CLASSES, size=n), "score": rng.uniform(0.5, 1.0, size=n)}
    )
    return items, predictions


def _baseline(client: LabelStudioClient, project_id: int, items: pd.DataFrame, predictions: pd.DataFrame) -> float:
    """Seconds for one import call per task (prediction inline)."""
    started = time.perf_counter()
    client.import_items(project_id, items, "text", batch_size=1, predictions=predictions, model_version="bench")
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--baseline-tasks", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--home", type=Path, default=None, help="project home whose server to reuse or start")
    parser.add_argument("--template", type=Path, default=None, help="pre-initialised data dir to copy")
    args = parser.parse_args()

    config = load_label_config(REPO / "label_config" / "text_classification.xml", CLASSES)
    settings = LabelStudioSettings()
    owned: RunningServer | None = None
    if args.home is None:
        home = Home(Path(tempfile.mkdtemp(prefix="sluice-bench-ls-")))
        started = time.perf_counter()
        owned = server = start_server(settings, home, template=args.template)
        print(f"started a throwaway Label Studio in {time.perf_counter() - started:.0f} s at {server.url}")
    else:
        server = ensure_server(settings, Home.resolve(args.home))
    try:
        with LabelStudioClient.connect(server.url, server.token) as client:
            run = uuid.uuid4().hex[:6]
            base_items, base_preds = _items(args.baseline_tasks, seed=1)
            base_project = client.ensure_project(f"bench-baseline-{run}", f"bench baseline {run}", config.xml, 3)
            baseline_s = _baseline(client, base_project, base_items, base_preds)
            per_task = baseline_s / args.baseline_tasks
            extrapolated = per_task * args.tasks

            items, predictions = _items(args.tasks)
            project = client.ensure_project(f"bench-sync-{run}", f"bench sync {run}", config.xml, 3)
            started = time.perf_counter()
            result = client.import_items(
                project, items, "text", batch_size=args.batch_size, predictions=predictions, model_version="bench"
            )
            sync_s = time.perf_counter() - started
            started = time.perf_counter()
            rerun = client.import_items(
                project, items, "text", batch_size=args.batch_size, predictions=predictions, model_version="bench"
            )
            rerun_s = time.perf_counter() - started
            progress = client.progress(project)
    finally:
        if owned is not None:
            owned.stop()
            shutil.rmtree(home.root, ignore_errors=True)

    assert result.imported == args.tasks and result.predictions == args.tasks, result
    assert rerun.imported == 0 and progress.tasks == args.tasks, (rerun, progress)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    print(f"baseline: {args.baseline_tasks} tasks, one call each: {baseline_s:.1f} s ({per_task * 1000:.0f} ms/task)")
    print(f"baseline extrapolated to {args.tasks:,} tasks: {extrapolated:.0f} s")
    print(f"sluice import_items: {args.tasks:,} tasks + predictions, batches of {args.batch_size}: {sync_s:.1f} s")
    print(f"rerun (nothing new, {rerun.already_present:,} already present): {rerun_s:.1f} s")
    verdict = "meets" if sync_s <= GOAL_S else "MISSES"
    print(
        f"labelstudio_sync: {extrapolated / sync_s:.0f}x faster than one call per task "
        f"({extrapolated:.0f} s -> {sync_s:.1f} s); {verdict} the {GOAL_S:.0f} s goal"
    )


if __name__ == "__main__":
    main()
