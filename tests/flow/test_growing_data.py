"""Growing data through the registry: three snapshots of the Rotten Tomatoes reviews, one version each.

No item an earlier version trained or validated on may sit in a later version's test split or
holdout; every item keeps its split; the ratios hold over each whole snapshot; the champion is
compared on the frozen holdout, which no version trains on.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from sluice.home import Home

pytestmark = pytest.mark.usefixtures("prefect_server")

SLICES = (900, 1300, 1700)  # the first 156 rows are plot summaries, quarantined by the clean suite
SETTINGS = {
    "train__epochs": 2,
    "train__patience": 1,
    "split__holdout": 0.1,
    "registry__model_name": "rt-growing",
    "registry__promotion": {"floors": {"accuracy": 0.3}, "min_compared_items": 20},
}


def _manifest(client: mlflow.MlflowClient, run_id: str, into: Path) -> pd.Series:
    path = client.download_artifacts(run_id, "split/manifest.parquet", str(into))
    frame = pd.read_parquet(path)
    return pd.Series(frame["split"].to_numpy(), index=frame["item_id"].to_numpy())


def test_three_growing_snapshots_keep_every_items_split(
    make_config: Callable[..., Path], home: Home, mlflow_store: str, tmp_path: Path
) -> None:
    from flows.pipeline import pipeline

    client = mlflow.MlflowClient(tracking_uri=mlflow_store)
    results = [
        pipeline(config_path=str(make_config(demo__rows=rows, **SETTINGS)), home=str(home.root)) for rows in SLICES
    ]
    versions = [client.get_model_version("rt-growing", r["model_version"]) for r in results]
    manifests = [_manifest(client, v.run_id, tmp_path / f"v{v.version}") for v in versions]
    assert len({r["model_version"] for r in results}) == 3 and len(manifests[2]) > len(manifests[0])

    for earlier, later in ((0, 1), (0, 2), (1, 2)):
        before, after = manifests[earlier], manifests[later]
        seen = set(before[before.isin(["train", "val"])].index)
        assert not seen & set(after[after.isin(["test", "holdout"])].index)
        common = before.index.intersection(after.index)
        assert len(common) == len(before) and (after[common] == before[common]).all()  # nobody moved

    for manifest in manifests:
        shares = manifest[manifest != "holdout"].value_counts(normalize=True)
        assert shares["train"] == pytest.approx(0.8, abs=0.05)
        assert shares["val"] == pytest.approx(0.1, abs=0.05) and shares["test"] == pytest.approx(0.1, abs=0.05)

    holdout = set(manifests[0][manifests[0] == "holdout"].index)
    assert holdout and all(set(m[m == "holdout"].index) == holdout for m in manifests)  # frozen
    for result, version in zip(results[1:], versions[1:], strict=True):
        gate = version.tags["sluice.gate.champion"]
        assert f"on {len(holdout)} holdout items neither version trained or validated on" in gate, gate
        assert version.tags["sluice.split_assignment_parent"] != "none"
        assert "kept their split" in result["split_assignment"]
        assert "## Against the champion" in version.description
    assert versions[0].tags["sluice.holdout"].startswith(f"{len(holdout)} items (fraction 0.1")
    # the carried-forward assignment sits beside the manifest on every version
    names = {a.path for a in client.list_artifacts(versions[2].run_id, "split")}
    assert names == {"split/manifest.parquet", "split/assignment.parquet", "split/assignment.json"}
