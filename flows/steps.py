"""Prefect tasks: thin wrappers around the pure stage functions in `tasks/`.

Each task makes one call into `tasks/` (or the MLflow module) and leaves a
summary artifact for the Prefect UI. No stage logic lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import get_client, get_run_logger, runtime, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from flows import relabel
from sluice import errors, fingerprint, tracking
from sluice.checkpoints import checkpoint_folder, claim_checkpoints
from sluice.config import ColumnsConfig, DemoConfig, PipelineConfig, RegisterConfig, TuningConfig, sections_hash
from sluice.home import Home
from sluice.labelstudio_settings import LabelStudioSettings
from sluice.secrets import resolve_secret
from tasks import clean as clean_stage
from tasks import data_quality, demo_data, generation_run, sql_source
from tasks import ingest as ingest_stage
from tasks import labels as labels_stage
from tasks import partition as split_stage
from tasks import report as report_stage
from tasks import train as train_stage
from tasks import tune as tune_stage
from tasks import validate as validate_stage
from tasks.clean import CleanConfig
from tasks.columns import FOLD, ITEM_ID, LABEL
from tasks.evaluate import evaluate_predictions
from tasks.generation import GenerationConfig
from tasks.ingest import SourceConfig
from tasks.label_quality import Inputs, audit_test_metrics, flag_label_issues, oof_from_training
from tasks.labels import LabelsConfig
from tasks.leakage import LeakageReport
from tasks.modalities import all_role_columns, get_modality, modality_names
from tasks.promotion import Comparison, OnnxParity, select_compared_items
from tasks.quarantine import concat_quarantine, update_quarantine
from tasks.split import SplitConfig


# --- caching: keys are content hashes of a task's inputs (data, its config section, the code) ---------------
def suite_path(config: PipelineConfig, which: str) -> Path | None:
    """The expectation suite file `expectations.<which>` names, resolved against the project root; None for none."""
    name = getattr(config.expectations, which)
    return config.resolve_path(name) if name else None


def _keyed(stage: str, *parts: object) -> str | None:
    return None if any(p is None for p in parts) else fingerprint.combine(stage, *parts, fingerprint.code_version())


def _key_validate_raw(_: object, p: dict[str, Any]) -> str | None:
    suite: Path | None = p["suite"]
    return _keyed(
        "validate-raw",
        p["snapshot"].snapshot_id,
        fingerprint.file_hash(suite),
        sections_hash(columns=p["columns"], labels=p["labels"]),
        str(suite) if suite else "-",
        p["home"].root,
    )


def _key_clean(_: object, p: dict[str, Any]) -> str | None:
    # The modality's item check (unreadable files) reads the role columns of train.task.
    return _keyed(
        "clean",
        fingerprint.frame_hash(p["data"]),
        sections_hash(clean=p["settings"], columns=p["columns"]),
        p["modality"],
    )


def _key_validate_clean(_: object, p: dict[str, Any]) -> str | None:
    suite = fingerprint.file_hash(p["suite"])
    return _keyed("validate-clean", fingerprint.frame_hash(p["data"]), suite, p["home"].root)


def holdout_file(config: PipelineConfig) -> Path | None:
    """The holdout file `split.holdout` names, resolved against the project root; None for none (or a fraction)."""
    return config.resolve_path(config.split.holdout) if isinstance(config.split.holdout, str) else None


def split_inputs(settings: SplitConfig, columns: ColumnsConfig, holdout: Path | None, data: pd.DataFrame) -> str | None:
    """The split's own inputs (data, settings, a holdout file), without the assignment it carries forward."""
    return _keyed(
        "split-inputs",
        fingerprint.frame_hash(data),
        sections_hash(split=settings, columns=columns),
        fingerprint.file_hash(holdout) if holdout else "-",
    )


def _key_split(_: object, p: dict[str, Any]) -> str | None:
    home: Home = p["home"]
    inputs = split_inputs(p["settings"], p["columns"], p["holdout"], p["data"])
    current, parent, made_from = split_stage.current_assignment_digest(home.splits, p["dataset"])
    # An assignment computed from these very inputs started from its parent: the same split again.
    base = parent if made_from is not None and made_from == inputs else current
    return _keyed("split", inputs, base or "-", home.root)


def retry_on_io(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry I/O failures; bad input and gates fail at once (a retry would repeat them)."""
    error = state.result(raise_on_failure=False)
    return not isinstance(error, BaseException) or errors.is_retryable(error)


CACHED: dict[str, Any] = {"persist_result": True}
"""Results of cached tasks persist under the home (PREFECT_LOCAL_STORAGE_PATH); unchanged inputs skip the work."""


def quarantine_file(home: Home, snapshot_id: str) -> Path:
    """The quarantine of the runs on one snapshot: every removed row with its step and reason."""
    return home.root / "quarantine" / f"{snapshot_id}.parquet"


def gap_file(home: Home, snapshot_id: str) -> Path:
    """The rows a temporal split left between its splits, for one snapshot."""
    return home.root / "gap" / f"{snapshot_id}.parquet"


def persist_quarantine(
    home: Home,
    snapshot: ingest_stage.Snapshot,
    suites: list[validate_stage.ValidationOutcome],
    cleaned: pd.DataFrame,
) -> Path:
    """The quarantine of a flow that runs only the first stages, merged into the snapshot's quarantine file."""
    fresh = concat_quarantine([snapshot.load_quarantine(), *(o.quarantine for o in suites), cleaned])
    # A modality's unusable items are quarantined in the clean task under the modality's name.
    ran = {"ingest", *clean_stage.STEPS, *modality_names(), *(o.step for o in suites)}
    return update_quarantine(fresh, quarantine_file(home, snapshot.snapshot_id), steps=ran)


@dataclass(frozen=True)
class TrainingData:
    """What the training steps read besides their own config section: the dataset's name (artifact keys),
    its classes, and the modality's role columns (`tasks.modalities.all_role_columns`)."""

    name: str
    classes: list[str]
    columns: dict[str, Any]


def training_data(config: PipelineConfig) -> TrainingData:
    """The `TrainingData` of a pipeline config."""
    return TrainingData(name=config.name, classes=list(config.labels.classes), columns=all_role_columns(config.columns))


def quality_inputs(columns: ColumnsConfig, modality: str) -> Inputs:
    """What the quick label-quality model reads: the text column where the modality reads text, else the features."""
    reads_text = any(role.keyword == "text_col" for role in get_modality(modality).roles)
    text = columns.text if reads_text else None
    return Inputs(text_col=text, feature_cols=tuple(columns.features), group_col=columns.group)


@dataclass(frozen=True)
class LabelSettings:
    """What the labels step reads: the labels section, and for label issues (`labels.label_issues`) the quick
    model's settings (columns, train), the modality, and the Label Studio server of the relabel project."""

    dataset: str
    labels: LabelsConfig
    columns: ColumnsConfig
    train: train_stage.TrainConfig
    labelstudio: LabelStudioSettings

    @classmethod
    def of(cls, config: PipelineConfig) -> LabelSettings:
        return cls(config.name, config.labels, config.columns, config.train, config.labelstudio)


def artifact_key(*parts: str) -> str:
    raw = "-".join(parts).lower()
    return "".join(ch if ch.isalnum() else "-" for ch in raw).strip("-")[:100]


def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """A DataFrame as the row dicts a Prefect table artifact takes."""
    return [{str(k): v for k, v in row.items()} for row in frame.to_dict(orient="records")]


def publish(key: str, markdown: str, description: str) -> None:
    """A markdown artifact in the Prefect UI (keys: lowercase letters, digits, dashes)."""
    create_markdown_artifact(key=artifact_key(key), markdown=markdown, description=description)


def name_run(dataset: str, snapshot_id: str) -> None:
    """Rename the running flow run after what it works on: the dataset and the snapshot."""
    flow_run_id = runtime.flow_run.id
    if not flow_run_id:
        return
    with get_client(sync_client=True) as client:
        client.update_flow_run(flow_run_id, name=f"{dataset}-{snapshot_id[:8]}-{runtime.flow_run.name}")


def report_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Flow failure hook: a failure artifact saying what stopped the run, readable without the logs."""
    message = str(getattr(state, "message", "") or "")
    try:
        error = state.result(raise_on_failure=False)
        message = f"{type(error).__name__}: {error}" if isinstance(error, BaseException) else message
    except Exception:  # the state carries no readable result: keep its message
        pass
    create_markdown_artifact(
        key=artifact_key(flow.name, "failure"),
        markdown=f"### {flow.name} failed: {flow_run.name}\n\n```\n{message[:5000]}\n```\n\n"
        "Gates (expectations, leakage, agreement) say what to fix in the message above; "
        "bad input names the file or setting.",
        description=f"Why flow run {flow_run.name} failed",
    )


def link_mlflow_run(dataset: str, tracking_uri: str, version: tracking.RegisteredVersion) -> None:
    """Link artifacts from the Prefect run to the MLflow run and the registered version."""
    base = tracking_uri.rstrip("/") if tracking_uri.startswith("http") else "http://127.0.0.1:5000"
    create_link_artifact(
        key=artifact_key(dataset, "mlflow-run"),
        link=f"{base}/#/experiments/{version.experiment_id}/runs/{version.run_id}",
        link_text=f"MLflow run {version.run_id[:12]} (open the MLflow UI with `sluice ui`)",
        description="The MLflow run of this training",
    )
    create_link_artifact(
        key=artifact_key(dataset, "mlflow-model"),
        link=f"{base}/#/models/{version.model_name}/versions/{version.version}",
        link_text=f"{version.model_name} version {version.version}",
        description="The registered model version and its model card",
    )


@task(name="demo-data")
def prepare_demo_data(demo: DemoConfig, source: SourceConfig, home: Home) -> Path:
    """Bundled real data written under the home as a plain file, which ingest then reads like any other."""
    target = Path(source.path.format(home=home.root))
    return demo_data.write_demo_data(demo.dataset, target, rows=demo.rows)


def _read_source(source: SourceConfig, base_dir: Path, home: Home) -> ingest_stage.Snapshot:
    """Files into a snapshot, or a database table's new rows into the next snapshot of its chain."""
    if source.sql is not None:
        return sql_source.ingest_sql(
            source.sql, snapshot_root=home.snapshots, id_column=source.id_column, lookup_secret=resolve_secret
        )
    paths = ingest_stage.resolve_sources(source.path.format(home=home.root), base_dir=base_dir)
    return ingest_stage.ingest_files(paths, snapshot_root=home.snapshots, config=source)


@task(name="ingest", retries=1, retry_delay_seconds=2, retry_condition_fn=retry_on_io)
def ingest(source: SourceConfig, base_dir: Path, dataset: str, home: Home) -> ingest_stage.Snapshot:
    """The source into a snapshot; relative file paths are read from `base_dir` (the project root)."""
    snapshot = _read_source(source, base_dir, home)
    publish(f"{dataset}-ingest", snapshot.summary_markdown(), "Snapshot written by the ingest stage")
    return snapshot


@task(name="validate-raw", cache_key_fn=_key_validate_raw, **CACHED)
def validate_raw(
    columns: ColumnsConfig,
    labels: LabelsConfig,
    suite: Path | None,
    dataset: str,
    home: Home,
    snapshot: ingest_stage.Snapshot,
) -> tuple[pd.DataFrame, validate_stage.ValidationOutcome | None]:
    """The configured columns are there, and the raw suite (`suite_path(config, "raw_suite")`) when one is set."""
    data = snapshot.load()
    ingest_stage.check_columns(
        data,
        {
            "text": columns.text,
            "group": columns.group,
            "time": columns.time,
            "label": labels.column if labels.source == "column" else None,
        },
        where=f"snapshot {snapshot.snapshot_id} ({snapshot.source_names()})",
    )
    if suite is None:
        return data, None
    kept, outcome = validate_stage.validate_frame(
        data, suite, gx_root=home.gx, asset=f"{dataset}-raw", where=f"snapshot {snapshot.snapshot_id}"
    )
    publish(f"{dataset}-expectations-raw", outcome.summary_markdown(), "Raw-data expectation suite")
    return kept, outcome


@task(name="clean", cache_key_fn=_key_clean, **CACHED)
def clean(
    settings: CleanConfig, columns: ColumnsConfig, modality: str, dataset: str, data: pd.DataFrame
) -> clean_stage.CleanResult:
    """The clean section's rules, then the modality's (train.task's) check of unusable items."""
    result = clean_stage.clean_frame(data, settings)
    kind = get_modality(modality)
    reasons = kind.unusable_items(result.data, all_role_columns(columns))
    result = clean_stage.quarantine_unusable(result, reasons, step=kind.name)
    publish(f"{dataset}-clean", result.summary_markdown(), "Rows kept and quarantined by the clean stage")
    return result


@task(name="validate-clean", cache_key_fn=_key_validate_clean, **CACHED)
def validate_clean(
    suite: Path | None, dataset: str, home: Home, data: pd.DataFrame, snapshot_id: str
) -> tuple[pd.DataFrame, validate_stage.ValidationOutcome | None]:
    """The clean suite (`suite_path(config, "clean_suite")`) as a gate; no suite, no gate."""
    if suite is None:
        return data, None
    kept, outcome = validate_stage.validate_frame(
        data, suite, gx_root=home.gx, asset=f"{dataset}-clean", where=f"the clean data of snapshot {snapshot_id}"
    )
    publish(f"{dataset}-expectations-clean", outcome.summary_markdown(), "Clean-data expectation gate")
    return kept, outcome


def validated_items(
    config: PipelineConfig, home: Home, snapshot: ingest_stage.Snapshot
) -> tuple[pd.DataFrame, clean_stage.CleanResult, list[validate_stage.ValidationOutcome]]:
    """The raw suite, clean, the clean suite, each given its sections: the items, the clean result, the suites run."""
    raw, raw_outcome = validate_raw(
        config.columns, config.labels, suite_path(config, "raw_suite"), config.name, home, snapshot
    )
    cleaned = clean(config.clean, config.columns, config.train.task, config.name, raw)
    items, clean_outcome = validate_clean(
        suite_path(config, "clean_suite"), config.name, home, cleaned.data, snapshot.snapshot_id
    )
    return items, cleaned, [o for o in (raw_outcome, clean_outcome) if o is not None]


@task(name="labels")
def resolve_labels(
    settings: LabelSettings, data: pd.DataFrame, consensus: pd.DataFrame | None, home: Home
) -> labels_stage.LabelOutcome:
    labels = settings.labels
    if labels.source == "none":
        outcome = labels_stage.labels_absent(data)
    elif labels.source == "column":
        outcome = labels_stage.labels_from_column(data, labels)
        if labels.label_issues == "relabel":
            outcome = relabel_label_issues(settings, home, outcome)
        elif labels.label_issues != "off" and len(outcome.data):
            outcome = find_label_issues(settings, outcome)
    else:
        outcome = labels_stage.labels_from_annotation(
            data, consensus if consensus is not None else pd.DataFrame({ITEM_ID: [], "label": []}), labels
        )
    publish(f"{settings.dataset}-labels", outcome.summary_markdown(), "Labels entering training")
    return outcome


def relabel_label_issues(
    settings: LabelSettings, home: Home, outcome: labels_stage.LabelOutcome
) -> labels_stage.LabelOutcome:
    """Answers from the relabel project replace given labels; rows flagged now and unanswered go there and wait."""
    classes = settings.labels.classes
    client, project_id = relabel.open_relabel_project(settings.dataset, classes, settings.labelstudio, home)
    with client:
        answered = labels_stage.apply_relabels(outcome, relabel.fetch_relabels(client, project_id), classes)
        result = find_label_issues(settings, answered) if len(answered.data) else answered
        sent = relabel.send_for_relabel(settings.columns, client, project_id, result)
    get_run_logger().info(
        "relabel project %s: %d rows relabelled, %d sent now", project_id, len(answered.relabelled), sent
    )
    return result


def find_label_issues(settings: LabelSettings, outcome: labels_stage.LabelOutcome) -> labels_stage.LabelOutcome:
    """cleanlab's label issues on out-of-fold probabilities of the pipeline's own model; report, exclude or relabel."""
    classes, mode = settings.labels.classes, settings.labels.label_issues
    inputs = quality_inputs(settings.columns, settings.train.task)
    proba = oof_from_training(outcome.data, config=settings.train, label_col=LABEL, classes=classes, inputs=inputs)
    codes = pd.Index(classes).get_indexer(pd.Index(outcome.data[LABEL].astype(str)))
    flagged, confidence = flag_label_issues(codes, proba)
    suggested = [classes[i] for i in proba.argmax(axis=1)]
    result = labels_stage.apply_label_issues(
        outcome, flagged, confidence, suggested, mode, suggested_score=proba.max(axis=1)
    )
    if len(result.issues):
        create_table_artifact(
            key=artifact_key(settings.dataset, "label-issues"),
            table=records(result.issues.head(100).astype(str)),
            description=f"Likely label errors (cleanlab find_label_issues), lowest self-confidence first; "
            f"labels.label_issues: {mode}",
        )
    return result


@task(name="data-quality")
def report_data_quality(
    settings: data_quality.DataQualityConfig,
    inputs: Inputs,
    classes: list[str],
    seed: int,
    dataset: str,
    data: pd.DataFrame,
    reports: Path,
) -> data_quality.DataQualityReport:
    """cleanlab Datalab on the labelled rows: a Prefect artifact, and files in the run's reports (MLflow artifacts)."""
    report = data_quality.find_data_issues(data, classes, inputs, settings, seed=seed)
    (reports / "data_quality.md").write_text(report.to_markdown())
    if len(report.issues):
        report.issues.to_csv(reports / "data_quality_issues.csv", index=False)
    publish(f"{dataset}-data-quality", report.to_markdown(), "Data quality (cleanlab Datalab): top rows per issue")
    return report


@task(name="split", cache_key_fn=_key_split, **CACHED)
def split(
    settings: SplitConfig,
    columns: ColumnsConfig,
    holdout: Path | None,
    dataset: str,
    home: Home,
    data: pd.DataFrame,
) -> tuple[split_stage.SplitOutcome, LeakageReport]:
    """Train/val/test (and the holdout), carrying the dataset's assignment forward; the leakage report gates it.

    `columns` (the column roles) is part of the cache key, as `split_inputs` hashes it; `holdout` is
    `holdout_file(config)`."""
    outcome = split_stage.split_frame(
        data,
        settings,
        manifest_root=home.splits,
        dataset=dataset,
        holdout_ids=split_stage.read_holdout_ids(holdout) if holdout else None,
    )
    report = split_stage.check_leakage(outcome)
    publish(
        f"{dataset}-split",
        outcome.summary_markdown() + "\n\n" + report.to_markdown(),
        "Split and leakage",
    )
    for check in report.warnings:
        get_run_logger().warning("leakage report, %s: %s", check.name, check.summary)
    split_stage.raise_on_leakage(report)
    return outcome, report


@task(name="carry-split-assignment")
def carry_assignment(dataset: str, outcome: split_stage.SplitOutcome, inputs: str | None) -> Path:
    """Record the split as the dataset's current assignment, so the next run keeps every item's split."""
    assignment = split_stage.commit_assignment(outcome, made_from=inputs)
    publish(f"{dataset}-split-assignment", outcome.describe_assignment(), "The split assignment carried forward")
    return assignment.path


@task(name="tune")
def tune(
    tuning: TuningConfig, base: train_stage.TrainConfig, data: TrainingData, frames: dict[str, pd.DataFrame]
) -> tuple[train_stage.TrainConfig, list[dict[str, Any]]]:
    """The best training configuration on the validation split, and every trial (params, metrics)."""
    trials: list[dict[str, Any]] = []
    common: dict[str, Any] = {
        "base": base,
        "label_col": LABEL,
        "classes": data.classes,
        **data.columns,
        "on_trial": lambda params, metrics: trials.append({"params": params, "metrics": metrics}),
    }
    if tuning.method == "grid":
        result = tune_stage.grid_search(frames["train"], frames["val"], grid=tuning.grid, **common)
    else:
        result = tune_stage.optuna_search(
            frames["train"],
            frames["val"],
            search_space=tuning.search_space,
            n_trials=tuning.n_trials,
            seed=base.seed,
            **common,
        )
    create_table_artifact(
        key=artifact_key(data.name, "tuning-trials"),
        table=records(result.trials.astype(str)),
        description=f"{tuning.method} search: best {result.best_params} ({result.monitor} {result.best_metric:.4f})",
    )
    return result.best_config, trials


@task(name="cross-validate")
def cross_validate(
    train_config: train_stage.TrainConfig, data: TrainingData, rows: pd.DataFrame
) -> tune_stage.CVResult:
    """k-fold cross-validation over the train rows' group-aware folds: mean and spread of each metric."""
    pool = rows[rows[FOLD] >= 0]
    result = tune_stage.cross_validate(
        pool,
        pool[FOLD],
        config=train_config,
        label_col=LABEL,
        classes=data.classes,
        **data.columns,
    )
    create_table_artifact(
        key=artifact_key(data.name, "cross-validation"),
        table=records(result.fold_metrics.round(4).astype(str)),
        description="Per-fold metrics; "
        + ", ".join(
            f"{k} {result.mean[k]:.3f} ± {result.std[k]:.3f}" for k in ("accuracy", "f1_macro") if k in result.mean
        ),
    )
    return result


def mark_crashed(flow_run_id: str, resumed_by: str) -> bool:
    """Mark a flow run whose process is gone as crashed (Prefect never heard it end); True when it was open."""
    from uuid import UUID

    from prefect.exceptions import ObjectNotFound
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        try:
            run = client.read_flow_run(UUID(flow_run_id))
        except (ObjectNotFound, ValueError):
            return False
        if run.state is None or run.state.is_final():
            return False
        why = f"its process stopped without a word; flow run {resumed_by} resumed its training from the checkpoint"
        client.set_flow_run_state(run.id, Crashed(message=why), force=True)
        return True


@task(name="train")
def train(
    train_config: train_stage.TrainConfig,
    data: TrainingData,
    frames: dict[str, pd.DataFrame],
    run_dir: Path,
    checkpoints: Path,
) -> train_stage.TrainResult:
    """Train, checkpointing under `checkpoints` (the folder of the inputs' key): a rerun of them resumes there."""
    this_run = str(runtime.flow_run.id or "local")
    claim = claim_checkpoints(checkpoint_folder(checkpoints, train_config), flow_run=this_run)
    if claim.previous_run and claim.previous_run != "local" and mark_crashed(claim.previous_run, this_run):
        get_run_logger().warning("flow run %s stopped while training these inputs: marked crashed", claim.previous_run)
    result = train_stage.train_model(
        frames["train"],
        frames["val"],
        label_col=LABEL,
        classes=data.classes,
        config=train_config,
        **data.columns,
        checkpoint_dir=claim.directory,
    )
    if result.resumed_from_epoch is not None:
        get_run_logger().warning(
            "resumed after epoch %d from the checkpoint in %s (an earlier run of the same inputs stopped there)",
            result.resumed_from_epoch,
            claim.directory,
        )
    history = pd.DataFrame(result.history)
    create_table_artifact(
        key=artifact_key(data.name, "training-history"),
        table=records(history.round(4)),
        description=f"Per-epoch metrics (best epoch {result.best_epoch}, device {result.device})",
    )
    return result


@task(name="test")
def test(
    data: TrainingData, result: train_stage.TrainResult, frame: pd.DataFrame, run_dir: Path
) -> report_stage.TestReport:
    report = report_stage.score_test_split(
        result.predictor,
        frame,
        label_col=LABEL,
        classes=data.classes,
        history=result.history,
        out_dir=run_dir / "reports",
    )
    publish(f"{data.name}-test", report.summary_markdown(), "Test metrics on the held-out split")
    if not report.mistakes.empty:
        create_table_artifact(
            key=artifact_key(data.name, "confident-mistakes"),
            table=records(report.mistakes.astype(str)),
            description="Most confident mistakes on the test split: candidates for label review",
        )
    return report


AUDIT_MIN_QUALITY = 0.8  # CROWDLAB consensus quality above which a test label is taken as settled


@task(name="test-label-audit")
def audit_test(
    data: TrainingData, result: train_stage.TrainResult, frame: pd.DataFrame, quality: pd.DataFrame
) -> dict[str, float | int]:
    """Test metrics on the test items whose consensus quality is high, beside those on all test items."""
    proba = result.predictor.predict_proba(frame)
    audit = audit_test_metrics(
        frame, proba, quality, label_col=LABEL, classes=data.classes, min_quality=AUDIT_MIN_QUALITY
    )
    publish(
        f"{data.name}-test-label-audit",
        f"### Test-set label audit\n\nOn the {audit.get('rows', 0)} of {len(frame)} test items whose consensus "
        f"quality is at least {AUDIT_MIN_QUALITY}: "
        + ", ".join(f"{k} {v:.4f}" for k, v in audit.items() if k != "rows"),
        "Test metrics on the test items with settled labels",
    )
    return audit


@task(name="onnx-export")
def export_onnx(
    registry: RegisterConfig, result: train_stage.TrainResult, sample: pd.DataFrame, path: Path
) -> OnnxParity:
    """The network as ONNX beside the pyfunc model, and its parity with PyTorch (the gate and the tags read it)."""
    parity = report_stage.export_onnx_checked(
        result.predictor, sample, path, tolerance=registry.promotion.onnx_tolerance
    )
    if not parity.passed:
        get_run_logger().warning("%s", parity.describe())
    return parity


@task(name="find-existing-version")
def find_existing(registry: RegisterConfig, tracking_uri: str, key: str) -> tracking.RegisteredVersion | None:
    tracking.configure_tracking(tracking_uri)
    try:
        return tracking.find_version_by_tag(registry.model_name, "sluice.input_key", key)
    except tracking.TrackingError as exc:  # train anyway: the model is kept locally and registered later
        get_run_logger().warning("cannot check for an existing version: %s", exc)
        return None


@task(name="find-champion")
def find_champion(
    registry: RegisterConfig, tracking_uri: str, home: Home, run_dir: Path
) -> tuple[tracking.RegisteredVersion, pd.DataFrame] | str | None:
    """The champion and the split manifest it was trained with; None without one; a reason when it cannot be used."""
    tracking.configure_tracking(tracking_uri)
    try:
        champion = tracking.version_for_alias(registry.model_name, "champion")
    except tracking.TrackingError as exc:
        return f"the champion lookup failed: {exc}"
    if champion is None:
        return None
    manifest = tracking.version_split_manifest(champion, local_root=home.splits, into=run_dir / "champion")
    if manifest is None:
        return (
            f"champion v{champion.version} records no split manifest, so the items it trained on are unknown "
            "and no fair comparison exists"
        )
    return champion, manifest


@task(name="compare-with-champion")
def compare_with_champion(
    registry: RegisterConfig,
    data: TrainingData,
    tracking_uri: str,
    champion: tuple[tracking.RegisteredVersion, pd.DataFrame],
    outcome: split_stage.SplitOutcome,
    result: train_stage.TrainResult,
) -> Comparison | str:
    """This version and the champion scored on the items neither trained or validated on; a reason when it fails."""
    tracking.configure_tracking(tracking_uri)
    version, manifest = champion
    basis, frame = select_compared_items(outcome.data, manifest)
    classes, y_true = data.classes, frame[LABEL].astype(str).tolist()
    scores: dict[str, dict[str, float]] = {"challenger": {}, "champion": {}}
    if len(frame):
        try:
            theirs = tracking.predict_proba(registry.model_name, version.version, frame, classes)
        except tracking.TrackingError as exc:
            return str(exc)
        for who, proba in (("challenger", result.predictor.predict_proba(frame)), ("champion", theirs)):
            scores[who] = {k: float(v) for k, v in evaluate_predictions(y_true, proba, classes).items()}
    compared = Comparison(
        champion_version=version.version,
        basis=basis,
        item_ids=tuple(frame[ITEM_ID].astype(str)),
        challenger=scores["challenger"],
        champion=scores["champion"],
    )
    publish(
        f"{data.name}-champion-comparison",
        f"### Compared with champion v{version.version}\n\n{compared.describe()}",
        "The champion and this version on the same unseen items",
    )
    return compared


@task(name="fine-tune-generator")
def train_generator(
    settings: GenerationConfig, dataset: str, frames: dict[str, pd.DataFrame], model_dir: Path
) -> generation_run.GenerationResult:
    """Fine-tune the language model, test perplexity once, and its samples (train.task: generation)."""
    result = generation_run.train_generator(settings, frames, model_dir)
    publish(
        f"{dataset}-generation",
        f"### Test perplexity {result.test_perplexity:.2f}\n\n{result.samples_markdown()}",
        "The fine-tuned generator: test perplexity and samples",
    )
    return result


@task(name="register", retries=2, retry_delay_seconds=[2, 10], timeout_seconds=900, retry_condition_fn=retry_on_io)
def register(dataset: str, tracking_uri: str, record: dict[str, Any]) -> tracking.RegisteredVersion:
    tracking.configure_tracking(tracking_uri)
    version = tracking.log_training_run(**record)
    publish(
        f"{dataset}-register",
        f"### Registered `{version.model_name}` version {version.version}\n\n"
        f"- run: `{version.run_id}`\n- tracking: `{version.tracking_uri}`\n"
        f"- aliases: {', '.join(version.aliases) or 'none'}\n\n{record['description']}",
        "MLflow model registry: the version and its model card",
    )
    return version
