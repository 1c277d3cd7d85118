"""The registration record and reports of a finished run, built as data from the stages' outcomes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from sluice.config import parse_config
from tasks import report
from tasks.columns import ITEM_ID, LABEL, SPLIT
from tasks.labels import LabelOutcome
from tasks.leakage import leakage_report
from tasks.partition import SplitOutcome
from tasks.promotion import Comparison, OnnxParity, decide_promotion
from tasks.quarantine import empty_quarantine
from tasks.registration import RunOutcome, build_registration, copy_split_files, write_reports
from tasks.report import account_rows
from tasks.split import HOLDOUT, SplitConfig
from tasks.train import TrainConfig, train_model


def _run(tmp_path: Path, *, approval: str = "auto", onnx_gap: float = 1e-5) -> RunOutcome:
    rng = np.random.default_rng(0)
    n = 66
    data = pd.DataFrame({ITEM_ID: [f"i{k}" for k in range(n)], "f0": rng.normal(size=n), "f1": rng.normal(size=n)})
    data[LABEL] = np.where(data["f0"] > 0, "pos", "neg")
    data[SPLIT] = ["train"] * 40 + ["val"] * 10 + ["test"] * 10 + [HOLDOUT] * 6
    config = parse_config(
        {
            "name": "toy",
            "source": {"path": "toy.csv"},
            "columns": {"features": ["f0", "f1"]},
            "labels": {"source": "column", "column": "y", "classes": ["neg", "pos"]},
            "registry": {"model_name": "toy-model", "promotion": {"approval": approval}},
        },
        base_dir=tmp_path,
    )
    manifest = tmp_path / "splits" / "m.parquet"
    manifest.parent.mkdir(parents=True)
    data[[ITEM_ID, SPLIT]].to_parquet(manifest)
    assignment = tmp_path / "splits" / "feedc0de.parquet"
    data[[ITEM_ID, SPLIT]].to_parquet(assignment)
    split = SplitOutcome(data, empty_quarantine(), pd.DataFrame(), manifest, "abc123", SplitConfig(), dataset="toy")
    frames = split.frames()
    train_config = TrainConfig(task="tabular", hidden=[8], epochs=1, batch_size=16, progress=False)
    trained = train_model(
        frames["train"],
        frames["val"],
        label_col=LABEL,
        classes=["neg", "pos"],
        config=train_config,
        feature_cols=["f0", "f1"],
    )
    leakage = leakage_report(data, data[SPLIT], label_col=LABEL)
    tested = report.TestReport(
        metrics={"accuracy": 0.9, "f1_macro": 0.88},
        confusion=pd.DataFrame(),
        mistakes=pd.DataFrame(),
        intervals={"accuracy": (0.8, 0.95)},
        plots=[],
        rows=10,
    )
    compared = Comparison(
        "3", HOLDOUT, tuple(f"i{k}" for k in range(30)), tested.metrics, {"accuracy": 0.8, "f1_macro": 0.7}
    )
    onnx = OnnxParity(gap=onnx_gap, tolerance=1e-3)
    decision = decide_promotion(config.registry.promotion, metrics=tested.metrics, compared=compared, onnx=onnx)
    account = account_rows(
        data[ITEM_ID],
        quarantine=empty_quarantine(),
        awaiting=pd.Series([], dtype=str),
        trainable={k: f[ITEM_ID] for k, f in frames.items()},
        holdout=split.holdout_rows()[ITEM_ID],
    )
    labelled = LabelOutcome(data, empty_quarantine(), data.head(0), "column", n)
    return RunOutcome(
        config=config,
        snapshot_id="snap0123456789",
        snapshot_path=tmp_path / "data.parquet",
        run_dir=tmp_path / "run",
        account=account,
        quarantine_path=tmp_path / "q.parquet",
        suites=[],
        labelled=labelled,
        annotated=None,
        split=split,
        assignment_path=assignment,
        frames=frames,
        leakage=leakage,
        train_config=train_config,
        trained=trained,
        tested=tested,
        onnx=onnx,
        decision=decision,
        input_key="key1",
        code_version="code1",
        audit={"rows": 4, "accuracy": 1.0},
        audit_min_quality=0.8,
        registration_key="reg1",
    )


def test_the_record_carries_lineage_metrics_and_the_servable_model(tmp_path: Path) -> None:
    run = _run(tmp_path)
    registration = build_registration(run)
    record = registration.record
    tags = record["tags"]
    assert tags["sluice.snapshot_id"] == "snap0123456789" and tags["sluice.split_manifest_hash"] == "abc123"
    assert tags["sluice.split_assignment"] == "feedc0de" and tags["sluice.holdout"].startswith("6 items")
    assert tags["sluice.input_key"] == "key1" and record["version_tags"]["sluice.code_version"] == "code1"
    assert record["metrics"]["test_accuracy"] == 0.9 and record["metrics"]["best_epoch"] == 1.0
    assert record["metrics"]["onnx_max_abs_logit_diff"] == 1e-5
    assert not any(k.startswith("agreement_") for k in record["metrics"])  # labels came from a column
    assert record["params"]["registry.model_name"] == "toy-model" and record["params"]["train.epochs"] == "1"
    assert set(record["datasets"]) == {"train", "val", "test", "holdout"}
    assert SPLIT not in record["datasets"]["train"][0].columns and len(record["datasets"]["holdout"][0]) == 6
    assert list(record["input_example"].columns) == ["f0", "f1"] and len(record["input_example"]) == 3
    assert record["promote"] is True and record["description"] == registration.model_card
    assert record["decision_tags"]["sluice.promotion"] == "champion" and record["registration_key"] == "reg1"
    assert run.split_dir in record["artifacts"] and run.quarantine_path in record["artifacts"]
    assert run.run_dir / "onnx" in record["artifacts"]
    assert "toy-model" in registration.model_card and "v3" in registration.model_card


def test_a_version_awaiting_approval_or_failing_onnx_parity_is_registered_without_them(tmp_path: Path) -> None:
    waiting = build_registration(_run(tmp_path / "a", approval="manual")).record
    assert waiting["promote"] is False and waiting["decision_tags"]["sluice.promotion"] == "awaiting review"
    off = build_registration(_run(tmp_path / "b", onnx_gap=0.5)).record
    assert tmp_path / "b" / "run" / "onnx" not in off["artifacts"]
    assert off["tags"]["sluice.split_assignment"] == "feedc0de"


def test_write_reports_and_split_files_put_every_file_in_its_folder(tmp_path: Path) -> None:
    run = _run(tmp_path)
    registration = build_registration(run)
    folder = write_reports(registration, run.reports_dir)
    assert sorted(p.name for p in folder.iterdir()) == sorted(registration.reports)
    assert (folder / "model_card.md").read_text() == registration.model_card
    assert "leak" in (folder / "leakage_report.md").read_text().lower()
    compared = pd.read_csv(folder / "compared_items.csv")
    assert compared["item_id"].tolist() == [f"i{k}" for k in range(30)] and set(compared["basis"]) == {HOLDOUT}
    split_dir = copy_split_files(run)
    assert sorted(p.name for p in split_dir.iterdir()) == ["assignment.parquet", "manifest.parquet"]
    assert pd.read_parquet(split_dir / "manifest.parquet").equals(pd.read_parquet(run.split.manifest_path))
