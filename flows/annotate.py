"""Annotation in Label Studio: sync items out, annotations in, agreement, consensus, the review queue.

`annotation_sync` is its own flow (a scheduled deployment polls it); the pipeline runs the same
stage through `annotate_items` when `labels.source` is `annotation`. While coverage is short it
stops cleanly and reports progress; training starts only once the agreement gate passes.

Gold items (`annotation.gold`) are mixed into the stream; an annotator who fails them is left out of
consensus, taken out of the stream, and the items they labelled are reopened for someone else.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.client.schemas.objects import FlowRun
from prefect.deployments import run_deployment

from flows import steps
from sluice import fingerprint, tracking
from sluice.annotators import AdminSession, AnnotatorError, remove_annotator
from sluice.config import PipelineConfig, load_config
from sluice.home import Home
from sluice.labelstudio import ImportResult, LabelStudioClient
from sluice.labelstudio_server import URL_ENV_VAR, ensure_server, is_home_server
from tasks.agreement import AgreementReport, agreement_report, annotator_agreement, plot_kappa_heatmap
from tasks.annotations import (
    AnnotationConfig,
    SyncedAnnotations,
    compute_coverage,
    load_export,
    load_gold,
    parse_with_gold,
    plan_stream,
    reopen_overlaps,
)
from tasks.consensus import (
    AgreementGateError,
    ConsensusResult,
    GateDecision,
    check_agreement_gate,
    consensus_labels,
    crowdlab_consensus,
)
from tasks.label_config import LabelConfig, build_review_config, load_label_config
from tasks.label_quality import measure_labelling, plan_next_round
from tasks.modalities import all_role_columns, get_modality
from tasks.simulate import build_annotation_payloads, simulate_annotations, simulate_extra
from tasks.telemetry import annotator_telemetry, plot_annotator_telemetry, telemetry_markdown, with_crowdlab_quality

# Every annotator is served every gold item: a per-task overlap far above any team's size.
GOLD_OVERLAP = 1000


@dataclass
class AnnotationOutcome:
    status: str
    """"ready" (the gate passed, consensus labels written) or "waiting" (coverage not reached yet)."""
    project_id: int
    review_project_id: int
    export_path: Path
    export_sha256: str
    counts: dict[str, int]
    coverage: float
    folder: Path
    report: AgreementReport | None = None
    decision: GateDecision | None = None
    consensus: ConsensusResult | None = None
    heatmap: Path | None = None
    noisiest: str | None = None
    telemetry: pd.DataFrame | None = None
    telemetry_plot: Path | None = None
    excluded: dict[str, str] = field(default_factory=dict)
    gold_items: int = 0
    figures: dict[str, Any] = field(default_factory=dict)
    """tasks.label_quality.measure_labelling: shares trained on and reviewed, annotations per item, labels right."""

    def consensus_frame(self) -> pd.DataFrame:
        if self.consensus is None:
            return pd.DataFrame({"item_id": [], "label": []})
        return self.consensus.labels

    def summary(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "project_id": self.project_id,
            "review_project_id": self.review_project_id,
            "export_sha256": self.export_sha256,
            "coverage": round(self.coverage, 4),
            "counts": self.counts,
            "alpha": None if self.report is None else round(self.report.alpha, 4),
            "consensus_labels": None if self.consensus is None else self.consensus.n_consensus,
            "adjudicated": None if self.consensus is None else self.consensus.n_adjudicated,
            "review_queue": None if self.consensus is None else self.consensus.n_queued,
            "noisiest_annotator": self.noisiest,
            "low_agreement_annotators": [] if self.decision is None else self.decision.low_agreement_annotators,
            "gold_items": self.gold_items,
            "excluded_annotators": dict(self.excluded),
            "consensus_method": None if self.consensus is None else self.consensus.method,
            "figures": dict(self.figures),
        }


def _annotation_config(config: PipelineConfig) -> AnnotationConfig:
    if config.annotation is None:
        raise ValueError(
            f"labels.source is 'annotation' but {config.path} has no `annotation:` section; add one "
            "(label_config, project_identifier, overlap, …)."
        )
    return config.annotation


def _shown_column(config: PipelineConfig) -> str:
    """The column annotators see: the one the modality (train.task) shows in its Label Studio object tag."""
    return get_modality(config.train.task).annotation_column(all_role_columns(config.columns))


def _client(config: PipelineConfig, home: Home, url: str) -> LabelStudioClient:
    token = config.labelstudio.resolve_token(home)
    return LabelStudioClient.connect(url, token)


def _folder(home: Home, annotation: AnnotationConfig) -> Path:
    path = home.labels / annotation.project_identifier
    path.mkdir(parents=True, exist_ok=True)
    return path


@task(name="labelstudio-server", retries=2, retry_delay_seconds=[5, 15], retry_condition_fn=steps.retry_on_io)
def open_labelstudio(config: PipelineConfig, home: Home) -> str:
    """The Label Studio URL: `$SLUICE_LABEL_STUDIO_URL`, else the project's own loopback server (started if needed)."""
    return os.environ.get(URL_ENV_VAR) or ensure_server(config.labelstudio, home).url


@task(name="label-config")
def check_label_config(config: PipelineConfig) -> LabelConfig:
    annotation = _annotation_config(config)
    return load_label_config(config.resolve_path(annotation.label_config), config.labels.classes)


@task(name="champion-suggestions", retries=2, retry_delay_seconds=[2, 10], retry_condition_fn=steps.retry_on_io)
def champion_suggestions(config: PipelineConfig, tracking_uri: str, items: pd.DataFrame) -> pd.DataFrame | None:
    """Pre-annotations from the registry's `champion`, when there is one: item_id, label, score, model_version."""
    tracking.configure_tracking(tracking_uri)
    try:
        scored = tracking.champion_proba(config.registry.model_name, items, config.labels.classes)
    except tracking.TrackingError:
        return None
    if scored is None:
        return None
    version, proba = scored
    classes = config.labels.classes
    return pd.DataFrame(
        {
            "item_id": items["item_id"].astype(str).to_numpy(),
            "label": [classes[i] for i in proba.argmax(axis=1)],
            "score": proba.max(axis=1).round(4),
            "model_version": f"{config.registry.model_name}-v{version}",
        }
    )


@task(name="gold-items")
def check_gold(config: PipelineConfig) -> pd.DataFrame | None:
    """The gold items with their known labels (annotation.gold), checked; None when there are none."""
    annotation = _annotation_config(config)
    if annotation.gold is None:
        return None
    return load_gold(
        config.resolve_path(annotation.gold), text_col=_shown_column(config), classes=config.labels.classes
    )


def _simulated_payloads(
    config: PipelineConfig,
    client: LabelStudioClient,
    label_config: LabelConfig,
    items: pd.DataFrame,
    gold: pd.DataFrame,
) -> dict[Any, list[dict[str, Any]]]:
    """Demo annotators' labels, imported inline in bulk: items from the held-back column, gold from its file."""
    annotation = _annotation_config(config)
    simulator = annotation.simulator
    reference = config.labels.column
    if not reference or reference not in items.columns:
        raise ValueError(
            "annotation.simulate needs the reference labels: set labels.column to the held-back label column."
        )
    frames = [
        simulate_annotations(
            items[["item_id", reference]].rename(columns={reference: "label"}),
            simulator.annotators,
            config.labels.classes,
            overlap=annotation.start_overlap,
            seed=simulator.seed,
            mean_lead_time_s=simulator.mean_lead_time_s,
        )
    ]
    if not gold.empty:  # every annotator answers every gold item, as the stream serves them
        frames.append(
            simulate_annotations(
                gold[["item_id", "label"]],
                simulator.annotators,
                config.labels.classes,
                overlap=len(simulator.annotators),
                seed=simulator.seed + 1,
                mean_lead_time_s=simulator.mean_lead_time_s,
            )
        )
    return build_annotation_payloads(
        pd.concat(frames, ignore_index=True),
        client.ensure_users(list(simulator.annotators)),
        from_name=label_config.control_name,
        to_name=label_config.to_name,
        result_type=label_config.result_type,
    )


@task(
    name="sync-out", retries=2, retry_delay_seconds=[5, 15], timeout_seconds=1800, retry_condition_fn=steps.retry_on_io
)
def sync_out(
    config: PipelineConfig,
    home: Home,
    url: str,
    label_config: LabelConfig,
    items: pd.DataFrame,
    suggestions: pd.DataFrame | None,
    gold: pd.DataFrame | None,
) -> tuple[int, int, ImportResult]:
    """Create or reuse the project and its review project; import new items with gold mixed in at gold_rate."""
    annotation = _annotation_config(config)
    client = _client(config, home, url)
    # The start overlap, never changed afterwards: changing it resets every task's own overlap.
    project_id = client.ensure_project(
        annotation.project_identifier, annotation.project_title, label_config.xml, annotation.start_overlap
    )
    review_id = client.ensure_project(
        f"{annotation.project_identifier}-review",
        f"{annotation.project_title} (review)",
        build_review_config(label_config),
        1,
        description="Items the annotators disagreed on: pick the final label.",
    )
    text_col = _shown_column(config)
    stream, gold_now = plan_stream(
        items, client.list_tasks(project_id), gold, rate=annotation.gold_rate, text_col=text_col
    )
    fresh = items[items["item_id"].astype(str).isin(set(stream["item_id"].astype(str)))]
    simulate = annotation.simulate and not stream.empty
    payloads = _simulated_payloads(config, client, label_config, fresh, gold_now) if simulate else None
    result = client.import_items(
        project_id,
        stream,
        text_col,
        batch_size=annotation.batch_size,
        predictions=suggestions,
        annotations=payloads,
        data_key=label_config.data_key,
        task_data=get_modality(config.train.task).task_data,
    )
    if gold is not None:
        # Set again on every sync: changing the project's overlap resets every task's own.
        gold_ids = set(gold["item_id"].astype(str))
        tasks = client.list_tasks(project_id).items()
        client.reopen_tasks({t: GOLD_OVERLAP for i, (t, n) in tasks if i in gold_ids and n != GOLD_OVERLAP})
    return project_id, review_id, result


@task(
    name="sync-in", retries=2, retry_delay_seconds=[5, 15], timeout_seconds=1800, retry_condition_fn=steps.retry_on_io
)
def sync_in(
    config: PipelineConfig, home: Home, url: str, project_id: int, review_id: int
) -> tuple[Path, str, list[dict[str, Any]], dict[int, str], pd.DataFrame]:
    """A snapshot export kept under the home with its hash, the user names, and the reviewers' decisions."""
    annotation = _annotation_config(config)
    client = _client(config, home, url)
    path, digest = client.export_snapshot(project_id, _folder(home, annotation) / "exports")
    adjudicated = client.fetch_adjudications(review_id) if client.progress(review_id).annotations else None
    export = load_export(path, expected_sha256=digest)
    return path, digest, export, client.user_names(), adjudicated if adjudicated is not None else pd.DataFrame()


@task(name="parse-annotations")
def parse_annotations(
    config: PipelineConfig, export: list[dict[str, Any]], user_names: dict[int, str], gold: pd.DataFrame | None
) -> SyncedAnnotations:
    """The export's annotations of the user's items and of gold items; annotators who fail gold are excluded."""
    synced = parse_with_gold(
        export,
        classes=config.labels.classes,
        overlap=_annotation_config(config).overlap,
        gold=gold,
        consensus=config.consensus,
        user_names=user_names,
    )
    if synced.excluded:
        create_markdown_artifact(
            key=steps.artifact_key(config.name, "excluded-annotators"),
            markdown="### Annotators left out of consensus\n\n"
            + "\n".join(f"- {name}: {why}" for name, why in synced.excluded.items()),
            description="Annotators under consensus.min_gold_accuracy: excluded and taken out of the stream",
        )
    return synced


@task(name="exclude-annotators", retries=2, retry_delay_seconds=[5, 15])
def exclude_annotators(
    config: PipelineConfig,
    home: Home,
    url: str,
    project_id: int,
    export: list[dict[str, Any]],
    synced: SyncedAnnotations,
) -> list[str]:
    """Take excluded annotators out of the stream and reopen their items for others; returns who was removed now."""
    client = _client(config, home, url)
    session = AdminSession(client, config.labelstudio, home, local=is_home_server(home, url))
    removed = []
    for name in synced.excluded:
        try:
            remove_annotator(session, name, count=False)
            removed.append(name)
        except AnnotatorError:  # out of the stream already (an earlier sync removed them)
            pass
    current = {tid: overlap for tid, overlap in client.list_tasks(project_id).values()}
    wanted = reopen_overlaps(
        export, synced.excluded, overlap=_annotation_config(config).overlap, skip_items=synced.gold_item_ids()
    )
    client.reopen_tasks({tid: n for tid, n in wanted.items() if current.get(tid) != n})
    return removed


@task(name="annotator-telemetry")
def report_annotators(config: PipelineConfig, folder: Path, synced: SyncedAnnotations) -> tuple[pd.DataFrame, Path]:
    """Per annotator: items done, median seconds per item, gold accuracy, kappa, quality; a table and a plot."""
    table = annotator_telemetry(
        synced.all_annotations(),
        annotator_agreement(synced.everyone.annotations[["item_id", "annotator", "label"]]),
        synced.gold_scores,
        excluded=synced.excluded,
    )
    plot = plot_annotator_telemetry(table, folder / "annotator_telemetry.png")
    table.to_csv(folder / "annotator_telemetry.csv", index=False)
    create_table_artifact(
        key=steps.artifact_key(config.name, "annotator-telemetry"),
        table=steps.records(table.round(4).astype(str)),
        description="Per annotator: items done, median seconds per item, gold accuracy, kappa, quality score",
    )
    return table, plot


@task(name="agreement")
def measure_agreement(
    config: PipelineConfig, folder: Path, synced: SyncedAnnotations, telemetry: pd.DataFrame
) -> tuple[AgreementReport, Path]:
    report = agreement_report(synced.items.annotations[["item_id", "annotator", "label"]])
    heatmap = plot_kappa_heatmap(report.pairwise, folder / "kappa_heatmap.png")
    markdown = report.to_markdown() + "\n" + telemetry_markdown(telemetry)
    (folder / "agreement.md").write_text(markdown)
    report.per_annotator.to_csv(folder / "agreement_per_annotator.csv", index=False)
    create_markdown_artifact(
        key=steps.artifact_key(config.name, "agreement"),
        markdown=markdown + f"\n\nKappa heatmap: `{heatmap}`",
        description="Inter-annotator agreement (Krippendorff's alpha, Fleiss' and Cohen's kappa) and gold accuracy",
    )
    create_table_artifact(
        key=steps.artifact_key(config.name, "agreement-per-annotator"),
        table=steps.records(report.per_annotator.round(4).astype(str)),
        description="Agreement of each annotator with the leave-one-out consensus",
    )
    return report, heatmap


@task(name="consensus")
def build_consensus(
    config: PipelineConfig, synced: SyncedAnnotations, adjudicated: pd.DataFrame, items: pd.DataFrame
) -> ConsensusResult:
    """Consensus labels (CROWDLAB or majority) and the review queue; a reviewer's label wins."""
    annotations = synced.items.annotations[["item_id", "annotator", "label"]]
    known = set(annotations["item_id"].astype(str))
    usable = adjudicated[adjudicated["item_id"].astype(str).isin(known)] if not adjudicated.empty else None
    if config.consensus.method == "majority":
        return consensus_labels(annotations, config.consensus, adjudicated=usable)
    result = crowdlab_consensus(
        annotations,
        config.consensus,
        items,
        config.labels.classes,
        steps.quality_inputs(config.columns, config.train.task),
        usable,
    )
    if result.quality is not None:
        create_table_artifact(
            key=steps.artifact_key(config.name, "consensus-quality"),
            table=steps.records(result.quality.sort_values("quality").head(50).round(4).astype(str)),
            description="CROWDLAB: the 50 lowest-quality items (consensus label, quality, model suggestion)",
        )
    return result


@task(
    name="review-queue",
    retries=2,
    retry_delay_seconds=[5, 15],
    timeout_seconds=1800,
    retry_condition_fn=steps.retry_on_io,
)
def send_to_review(
    config: PipelineConfig,
    home: Home,
    url: str,
    review_id: int,
    synced: SyncedAnnotations,
    result: ConsensusResult,
    items: pd.DataFrame,
) -> int:
    """Put the review queue into the review project with the annotators' votes and the model's suggestion."""
    if result.queue.empty:
        return 0
    annotations = synced.items.annotations[["item_id", "annotator", "label"]]
    text_col = _shown_column(config)
    votes = annotations.groupby("item_id")[["annotator", "label"]].apply(
        lambda g: dict(zip(g["annotator"], g["label"], strict=True))
    )
    keep = [c for c in ("item_id", "suggestion", "suggestion_score") if c in result.queue.columns]
    queue = result.queue[keep].merge(items[["item_id", text_col]], on="item_id", how="left")
    queue["votes"] = queue["item_id"].map(votes)
    return _client(config, home, url).create_review_tasks(review_id, queue, text_col=text_col).imported


@task(name="activelab", retries=2, retry_delay_seconds=[5, 15], retry_condition_fn=steps.retry_on_io)
def ask_for_more(
    config: PipelineConfig,
    home: Home,
    url: str,
    project_id: int,
    label_config: LabelConfig,
    synced: SyncedAnnotations,
    items: pd.DataFrame,
) -> int:
    """ActiveLab: raise the overlap of the items worth one more annotation; the demo annotators answer them."""
    annotation = _annotation_config(config)
    client = _client(config, home, url)
    tasks = client.list_tasks(project_id)
    annotations = synced.items.annotations[["item_id", "annotator", "label"]]
    wanted = plan_next_round(
        annotations,
        items,
        {item: overlap for item, (_, overlap) in tasks.items()},
        config.labels.classes,
        steps.quality_inputs(config.columns, config.train.task),
        start_overlap=annotation.start_overlap,
        max_annotations=annotation.overlap,
        extra_share=annotation.extra_share,
        seed=annotation.simulator.seed,
    )
    client.reopen_tasks({tasks[item][0]: n for item, n in wanted.items() if item in tasks})
    if annotation.simulate and wanted:
        reference = items[items["item_id"].astype(str).isin(set(wanted))]
        more = simulate_extra(
            reference[["item_id", str(config.labels.column)]].rename(columns={str(config.labels.column): "label"}),
            synced.everyone.annotations,
            annotation.simulator.annotators,
            config.labels.classes,
            seed=annotation.simulator.seed + len(annotations),
            mean_lead_time_s=annotation.simulator.mean_lead_time_s,
        )
        payloads = build_annotation_payloads(
            more,
            client.ensure_users(list(annotation.simulator.annotators)),
            from_name=label_config.control_name,
            to_name=label_config.to_name,
            result_type=label_config.result_type,
        )
        client.add_annotations({tasks[str(item)][0]: p for item, p in payloads.items()})
    create_markdown_artifact(
        key=steps.artifact_key(config.name, "activelab"),
        markdown=f"### ActiveLab\n\n{len(wanted)} items asked for one more annotator (up to annotation.overlap="
        f"{annotation.overlap}); the labelling stream serves them next.",
        description="Items whose next annotation is worth more than a first label elsewhere",
    )
    return len(wanted)


def annotate_items(config: PipelineConfig, home: Home, items: pd.DataFrame, *, tracking_uri: str) -> AnnotationOutcome:
    """The annotation stage on clean items; raises AgreementGateError when agreement is too low."""
    logger = get_run_logger()
    annotation = _annotation_config(config)
    folder = _folder(home, annotation)

    # --- Label Studio, the labelling config and the gold items ---------------------------------------
    url = open_labelstudio(config, home)
    label_config = check_label_config(config)
    gold = check_gold(config)

    # --- sync out: new items with gold mixed in, champion suggestions (and demo annotators) ----------------
    suggestions = champion_suggestions(config, tracking_uri, items)
    project_id, review_id, imported = sync_out(config, home, url, label_config, items, suggestions, gold)
    create_link_artifact(
        key=steps.artifact_key(config.name, "labelstudio-project"),
        link=f"{url}/projects/{project_id}",
        link_text=f"Label Studio project {project_id} ({annotation.project_title})",
        description=f"Annotate here; disputed items go to review project {review_id}",
    )
    logger.info(
        "Label Studio project %s: %d new tasks, %d present", project_id, imported.imported, imported.already_present
    )

    # --- sync in: snapshot export, parsed; gold scores the annotators ------------------------------------
    export_path, digest, export, user_names, adjudicated = sync_in(config, home, url, project_id, review_id)
    synced = parse_annotations(config, export, user_names, gold)
    if synced.excluded:
        exclude_annotators(config, home, url, project_id, export, synced)
    coverage = compute_coverage(
        synced.items.annotations, items["item_id"].astype(str).tolist(), annotation.start_overlap
    )
    if coverage >= annotation.min_coverage and annotation.start_overlap < annotation.overlap:
        asked = ask_for_more(config, home, url, project_id, label_config, synced, items)
        if asked and annotation.simulate:  # the demo annotators answered: read their labels back
            export_path, digest, export, user_names, adjudicated = sync_in(config, home, url, project_id, review_id)
            synced = parse_annotations(config, export, user_names, gold)
    outcome = AnnotationOutcome(
        status="waiting",
        project_id=project_id,
        review_project_id=review_id,
        export_path=export_path,
        export_sha256=digest,
        counts=synced.items.summary(),
        coverage=coverage,
        folder=folder,
        excluded=synced.excluded,
        gold_items=0 if gold is None else len(gold),
    )
    outcome.telemetry, outcome.telemetry_plot = report_annotators(config, folder, synced)
    if coverage < annotation.min_coverage:
        create_markdown_artifact(
            key=steps.artifact_key(config.name, "annotation-progress"),
            markdown=f"### Annotation in progress\n\n{coverage:.1%} of {len(items)} items have "
            f"{annotation.start_overlap} annotations; the gate needs {annotation.min_coverage:.0%}. Annotate in "
            f"Label Studio: {url}/projects/{project_id}\n\nCounts: {json.dumps(synced.items.summary())}",
            description="Coverage not reached: the flow stopped cleanly and will look again on its next run",
        )
        return outcome

    # --- agreement, consensus, review queue, gate ------------------------------------------------------
    outcome.consensus = build_consensus(config, synced, adjudicated, items)
    send_to_review(config, home, url, review_id, synced, outcome.consensus, items)
    outcome.telemetry = with_crowdlab_quality(outcome.telemetry, outcome.consensus.annotators)
    outcome.telemetry.to_csv(folder / "annotator_telemetry.csv", index=False)
    if outcome.consensus.quality is not None:
        outcome.consensus.quality.to_parquet(folder / "consensus_quality.parquet", index=False)
    outcome.report, outcome.heatmap = measure_agreement(config, folder, synced, outcome.telemetry)
    outcome.noisiest = (
        str(outcome.report.per_annotator.iloc[0]["annotator"]) if len(outcome.report.per_annotator) else None
    )
    outcome.consensus.labels.to_parquet(folder / "consensus.parquet", index=False)
    outcome.consensus.queue.to_parquet(folder / "review_queue.parquet", index=False)
    reference = (
        items.set_index(items["item_id"].astype(str))[config.labels.column]
        if annotation.simulate and config.labels.column in items.columns
        else None
    )
    outcome.figures = measure_labelling(
        outcome.consensus.labels, outcome.consensus.queue, synced.items.annotations, reference
    )
    outcome.decision = check_agreement_gate(outcome.report, config.consensus)
    (folder / "agreement.json").write_text(json.dumps(outcome.summary(), indent=2, default=str))
    if not outcome.decision.passed:
        raise AgreementGateError(outcome.decision, outcome.report.to_markdown())
    outcome.status = "ready"
    return outcome


@task(name="trigger-training")
def trigger_training(deployment: str, config_path: str, home: str | None, folder: Path, labels_hash: str) -> str | None:
    """Start the training deployment when the gate passed on labels it has not trained on yet."""
    marker = folder / "last_training_trigger.json"
    if marker.is_file() and json.loads(marker.read_text()).get("labels_hash") == labels_hash:
        return None
    flow_run = run_deployment(deployment, parameters={"config_path": config_path, "home": home}, timeout=0)
    assert isinstance(flow_run, FlowRun)  # called from sync code, run_deployment returns the run itself
    marker.write_text(json.dumps({"labels_hash": labels_hash, "flow_run_id": str(flow_run.id)}))
    return str(flow_run.id)


@flow(name="sluice-annotation-sync", log_prints=False, on_failure=[steps.report_failure])
def annotation_sync(
    config_path: str = "configs/rotten_tomatoes.yaml", home: str | None = None, retrain_deployment: str | None = None
) -> dict[str, Any]:
    """Sync one dataset's clean items with Label Studio and report agreement and consensus.

    Args:
        retrain_deployment: e.g. "sluice-pipeline/rotten-tomatoes-training": run it when the agreement gate
            passes on new consensus labels (event-driven retraining).
    """
    config = load_config(config_path)
    where = Home.resolve(home)

    # --- the items: clean, validated rows of the current snapshot ---------------------------------------
    if config.demo is not None:
        steps.prepare_demo_data(config.demo, config.source, where)
    snapshot = steps.ingest(config.source, config.base_dir, config.name, where)
    items, cleaned, suites = steps.validated_items(config, where, snapshot)
    quarantine_path = steps.persist_quarantine(where, snapshot, suites, cleaned.quarantine)

    # --- annotation ----------------------------------------------------------------------------------
    tracking_uri = tracking.resolve_tracking_uri(config.registry.tracking_uri, where.mlflow_tracking_uri)
    outcome = annotate_items(config, where, items, tracking_uri=tracking_uri)

    # --- event-driven retraining: the gate passed on labels not trained on yet ----------------------------
    training_run = None
    if retrain_deployment and outcome.status == "ready":
        labels_hash = fingerprint.frame_hash(outcome.consensus_frame()[["item_id", "label"]]) or ""
        training_run = trigger_training(retrain_deployment, config_path, home, outcome.folder, labels_hash)
    return {
        "snapshot_id": snapshot.snapshot_id,
        "folder": str(outcome.folder),
        "training_flow_run": training_run,
        "quarantine_path": str(quarantine_path),
    } | outcome.summary()
