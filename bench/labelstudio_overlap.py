"""Benchmark: an ActiveLab round's per-task requests against a real Label Studio.

ActiveLab raises the overlap of the items where one more annotation pays (one PATCH per task: Label
Studio 1.23 has no bulk endpoint for a task's own overlap), and the demo annotators then add their
answers (one POST per annotation). Baseline, in the same run against the same server: the SDK's own
calls, one at a time (`client.tasks.update(id, overlap=..., is_labeled=False)` and
`client.annotations.create(id, ...)`). sluice: `LabelStudioClient.reopen_tasks` and `add_annotations`
(`?review=true` on the PATCH, four requests in flight; the server's database is in WAL mode for both).
Baseline and sluice alternate for `--rounds` rounds on fresh tasks after a warm-up; the medians are compared.

    .venv/bin/python -m bench.labelstudio_overlap                  # a throwaway server (first init ~80 s)
    .venv/bin/python -m bench.labelstudio_overlap --tasks 400 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from sluice.home import Home
from sluice.labelstudio import LabelStudioClient
from sluice.labelstudio_server import LabelStudioSettings, start_server
from tasks.label_config import LabelConfig, load_label_config

REPO = Path(__file__).resolve().parent.parent
CLASSES = ["fresh", "rotten"]


def _fresh_tasks(client: LabelStudioClient, config: LabelConfig, n: int, tag: str) -> list[int]:
    """A new project of n tasks (overlap 2); their task ids."""
    project = client.ensure_project(f"bench-overlap-{tag}", f"bench overlap {tag}", config.xml, 2)
    items = pd.DataFrame(
        {"item_id": [f"{tag}-{i:05d}" for i in range(n)], "text": [f"snippet {i} of {tag}" for i in range(n)]}
    )
    client.import_items(project, items, "text")
    return sorted(task_id for task_id, _ in client.list_tasks(project).values())


def _timed(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def _one_round(client: LabelStudioClient, config: LabelConfig, user_id: int, n: int) -> dict[str, float]:
    """Requests per second of each way, on fresh tasks."""
    result = config.build_result("fresh")
    sdk = client._sdk  # the SDK's best per-task calls are the baseline
    payload = {"result": result, "completed_by": user_id, "lead_time": 1.0, "ground_truth": False}
    base_tasks = _fresh_tasks(client, config, n, f"base-{uuid.uuid4().hex[:6]}")
    ours_tasks = _fresh_tasks(client, config, n, f"ours-{uuid.uuid4().hex[:6]}")
    seconds = {
        "patch baseline": _timed(lambda: [sdk.tasks.update(str(t), overlap=3, is_labeled=False) for t in base_tasks]),
        "patch sluice": _timed(lambda: client.reopen_tasks({t: 3 for t in ours_tasks})),
        "post baseline": _timed(lambda: [sdk.annotations.create(t, **payload) for t in base_tasks]),
        "post sluice": _timed(lambda: client.add_annotations({t: [payload] for t in ours_tasks})),
    }
    return {k: n / s for k, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=400, help="tasks per way and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    config = load_label_config(REPO / "label_config" / "text_classification.xml", CLASSES)
    home = Home(Path(tempfile.mkdtemp(prefix="sluice-bench-overlap-")))
    server = start_server(LabelStudioSettings(), home)
    try:
        with LabelStudioClient.connect(server.url, server.token) as client:
            user_id = client.ensure_users(["bench-annotator"])["bench-annotator"]
            _one_round(client, config, user_id, 20)  # warm-up: the server's first requests are slower
            rounds = [_one_round(client, config, user_id, args.tasks) for _ in range(args.rounds)]
    finally:
        server.stop()
        shutil.rmtree(home.root, ignore_errors=True)

    median = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    load = os.getloadavg()[0]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load {load:.1f}, Python {platform.python_version()}")
    print(f"{args.rounds} rounds of {args.tasks} tasks per way; medians of requests per second:")
    for kind in ("patch", "post"):
        base, ours = median[f"{kind} baseline"], median[f"{kind} sluice"]
        print(
            f"  {kind.upper():5s} baseline (SDK, one at a time) {base:6.1f}/s   "
            f"sluice {ours:6.1f}/s   ratio {ours / base:.2f}"
        )


if __name__ == "__main__":
    main()
