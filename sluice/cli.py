"""The `sluice` command line."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sluice import cli_annotators, cli_init, cli_ops
from sluice.errors import EXIT_CODES, EXIT_INTERRUPTED, Kind, describe_failure
from sluice.home import Home
from sluice.runlog import CommandLog, open_command_log

if TYPE_CHECKING:
    from prefect.states import State

    from sluice.config import PipelineConfig

DEMO_CONFIG = "configs/rotten_tomatoes.yaml"
RUN_COMMANDS = ("run", "demo")
EXIT_BAD_INPUT = EXIT_CODES[Kind.INPUT]
EXIT_GATE = EXIT_CODES[Kind.GATE]  # a gate (expectations, leakage, agreement) stopped the run
EXIT_SERVICE = EXIT_CODES[Kind.SERVICE]  # Label Studio, MLflow or the Prefect server stopped answering


def _prepare_environment(home: Home, *, prefect: str) -> None:
    """Point every service at the home before Prefect or MLflow is imported (they read settings at import)."""
    for key, value in home.service_env().items():
        os.environ.setdefault(key, value)
    home.root.mkdir(parents=True, exist_ok=True)
    if prefect == "server" and not os.environ.get("PREFECT_API_URL"):
        from sluice.services import ensure_prefect_server, read_service

        if read_service(home, "prefect") is None:
            print("sluice: starting the local Prefect server (first time ~20 s)…", flush=True)
        server = ensure_prefect_server(home)
        os.environ["PREFECT_API_URL"] = f"{server.url}/api"


def _check_files(config: PipelineConfig) -> None:
    """The files a config names must exist: a wrong path fails in a second, before any server starts."""
    from sluice.config import ConfigError

    named: dict[str, str | Path | None] = {
        "expectations.raw_suite": config.expectations.raw_suite,
        "expectations.clean_suite": config.expectations.clean_suite,
    }
    if config.annotation is not None and config.labels.source == "annotation":
        named["annotation.label_config"] = config.annotation.label_config
    for key, value in named.items():
        if value and not config.resolve_path(value).is_file():
            raise ConfigError(
                f"{key} in {config.path} names {config.resolve_path(value)}, which does not exist; fix the path "
                f"(a relative path starts at {config.base_dir})"
            )


def _labelling_lines(figures: dict[str, Any]) -> list[str]:
    """The labelling figures: trained on, reviewed, annotations per item, and (demo only) labels right."""
    if not figures.get("items_labelled"):
        return []

    def pct(value: Any) -> str:
        return "-" if value is None else f"{value:.1%}"

    right = figures.get("trained_labels_right")
    return [
        f"  labelling   {figures['items_labelled']} items labelled: {pct(figures.get('trained_share'))} trained on, "
        f"{pct(figures.get('review_share'))} sent to review, {figures.get('annotations_per_item')} annotations/item",
        "              trained-on labels right: "
        + (
            "unknown (no reference labels)"
            if right is None
            else f"{pct(right)} (against the simulator's held-back labels)"
        ),
    ]


def format_summary(result: dict[str, Any], *, prefect_url: str | None, log: str | None = None) -> str:
    """What the terminal says when a run ends: rows, expectations, splits, metrics, model, where to look."""
    rows = result["rows"]
    quarantined = ", ".join(f"{step} {n}" for step, n in rows["quarantined"].items()) or "none"
    lines = [
        "",
        f"sluice: pipeline finished — {Path(result['config']).name}, snapshot {result['snapshot_id']}",
        f"  rows        {rows['rows_in']} in → {rows['trainable']} kept for training, "
        f"{rows['awaiting']} awaiting labels, {rows['quarantined_total']} quarantined ({quarantined})",
        f"              quarantine: {result['quarantine_path']}",
    ]
    if rows.get("gap"):
        lines.append(
            f"              gap: {rows['gap']} rows between the temporal splits, not trained on: {result['gap_path']}"
        )
    for suite in result["expectations"]:
        total = len(suite["passed"]) + len(suite["failed"])
        verdict = "passed" if suite["success"] else "FAILED"
        lines.append(f"  expectations {suite['suite']}: {verdict}, {len(suite['passed'])}/{total} expectations passed")
        lines += [f"                ✓ {name}" for name in suite["passed"]]
        lines += [f"                ✗ {name}" for name in suite["failed"]]
    annotation = result.get("annotation")
    if annotation:
        lines.append(
            f"  annotation  Label Studio project {annotation['project_id']}: coverage {annotation['coverage']:.0%}, "
            f"{annotation['counts'].get('kept', 0)} annotations kept"
        )
        if annotation.get("alpha") is not None:
            lines.append(
                f"              Krippendorff's alpha {annotation['alpha']:.3f}; noisiest annotator: "
                f"{annotation['noisiest_annotator']}; {annotation['consensus_labels']} consensus labels, "
                f"{annotation['adjudicated']} adjudicated, {annotation['review_queue']} in the review queue "
                f"(project {annotation['review_project_id']})"
            )
        for name, why in (annotation.get("excluded_annotators") or {}).items():
            lines.append(f"              excluded: {name}: {why}")
        lines += _labelling_lines(annotation.get("figures") or {})
    if result.get("status") == "waiting":
        lines.append(
            "  waiting     annotation coverage is not reached yet: nothing was trained. Annotate in Label "
            "Studio (`sluice labelstudio start`) and run again."
        )
        return "\n".join(lines)
    sizes = ", ".join(f"{k} {v}" for k, v in result["split_sizes"].items())
    lines.append(f"  split       {sizes} (manifest {result['split_manifest_hash'][:12]})")
    tuning = result.get("tuning") or {}
    if tuning.get("trials"):
        lines.append(
            f"  tuning      {tuning['method']} search, {tuning['trials']} trials (nested MLflow runs); "
            f"chosen {tuning['chosen']}"
        )
    cv = result.get("cross_validation")
    if cv:
        shown = {k: v for k, v in cv.items() if k in ("accuracy", "f1_macro", "roc_auc")}
        lines.append("  cross-val   " + ", ".join(f"{k} {m:.3f} ± {sd:.3f}" for k, (m, sd) in shown.items()))
    if result.get("resumed_from_epoch") is not None:
        lines.append(
            f"  train       resumed after epoch {result['resumed_from_epoch']}: "
            "an earlier run of the same inputs stopped there"
        )
    metrics = ", ".join(f"{k} {v:.3f}" for k, v in result["test_metrics"].items())
    lines.append(f"  test        {metrics}")
    interval = (result.get("test_intervals") or {}).get("accuracy")
    if interval:
        lines.append(f"              accuracy 95% bootstrap interval [{interval[0]:.3f}, {interval[1]:.3f}]")
    audit = result.get("label_audit") or {}
    if audit.get("rows"):
        lines.append(
            f"              on the {audit['rows']} test items with high consensus quality: "
            + ", ".join(f"{k} {v:.3f}" for k, v in audit.items() if k != "rows")
        )
    if result.get("existing"):
        lines.append(
            f"  model       {result['model_name']} version {result['model_version']} already exists for these exact "
            f"inputs (snapshot, labels, config, code): nothing was retrained"
        )
    else:
        lines.append(
            f"  model       {result['model_name']} version {result['model_version']} "
            f"(run {result['run_id'][:12]}, device {result['device']})"
        )
    aliases = ", ".join(result.get("aliases") or []) or "none"
    lines.append(f"  promotion   {result.get('promotion', '')} [aliases: {aliases}]")
    lines.append("  look")
    if prefect_url:
        lines.append(f"    Prefect UI   {prefect_url}/runs/flow-run/{result['flow_run_id']}")
    else:
        lines.append("    Prefect UI   `sluice ui`")
    lines.append(
        f"    MLflow UI    `sluice ui`, then the model {result['model_name']} under Models "
        f"(tracking store {result['tracking_uri']})"
    )
    docs = next((s["data_docs"] for s in result["expectations"] if s.get("data_docs")), None)
    if docs:
        lines.append(f"    Data Docs    {docs}")
    lines.append(f"    run folder   {result['run_dir']}")
    if log:
        lines.append(f"    full log     {log}")
    lines.append("  the local Prefect server (and Label Studio) keep running for the UIs; `sluice stop` stops them")
    return "\n".join(lines)


def _fail(exc: BaseException, log: CommandLog, *, prefect_url: str | None = None, hints: tuple[str, ...] = ()) -> int:
    """End a command on `exc`: one message on the terminal, the traceback in the log file, the exit code."""
    failure = describe_failure(exc)
    failure.hints.extend(hints)
    text = failure.render(log=log.display_path(), prefect_url=prefect_url)
    log.record_failure(exc, text)
    print(f"\n{text}", file=sys.stderr)
    return failure.exit_code


def _prefect_ui() -> str | None:
    api = os.environ.get("PREFECT_API_URL", "")
    return api.removesuffix("/api") if api else None


def _register_later(home: Home, config: PipelineConfig, flow_run_id: str) -> tuple[str, ...]:
    """The `sluice register` command for a run whose model was kept locally because MLflow was down."""
    run_dir = home.runs / config.name / flow_run_id
    if not (run_dir / "pending" / "pending_registration.json").is_file():
        return ()
    return (f"the trained model and its reports are kept: `sluice register {run_dir}` logs them once MLflow answers",)


def _run(config_path: str, home: Home, *, prefect: str, log: CommandLog) -> int:
    from sluice.config import load_config

    config = load_config(config_path)  # a broken config fails in a second, before any server starts
    _check_files(config)
    _prepare_environment(home, prefect=prefect)
    from flows.pipeline import pipeline

    log.route_prefect()
    state: State[dict[str, Any]] = pipeline(config_path=config_path, home=str(home.root), return_state=True)
    flow_run_id = str(state.state_details.flow_run_id)
    ui = _prefect_ui()
    if not state.is_completed():
        error = state.result(raise_on_failure=False)
        if not isinstance(error, BaseException):
            error = RuntimeError(f"the flow run ended in state {state.name}: {state.message}")
        return _fail(
            error,
            log,
            prefect_url=f"{ui}/runs/flow-run/{flow_run_id}" if ui else None,
            hints=_register_later(home, config, flow_run_id),
        )
    result = state.result()
    print(format_summary(result, prefect_url=ui, log=log.display_path()))
    return 0


def _stop(home: Home) -> int:
    from sluice.labelstudio_server import stop_server
    from sluice.services import stop_service

    for name in ("worker", "prefect", "mlflow"):
        if stop_service(home, name):
            print(f"sluice: stopped {name}")
    if stop_server(home):
        print("sluice: stopped labelstudio")
    return 0


def _review(args: argparse.Namespace, home: Home) -> int:
    from datetime import UTC, datetime

    from sluice import tracking

    tracking.configure_tracking(tracking.resolve_tracking_uri(args.tracking_uri, home.mlflow_tracking_uri))
    reviewer = args.reviewer or os.environ.get("USER") or "unknown"
    try:
        aliases = tracking.review_version(
            args.model,
            args.version,
            action=args.command,
            reviewer=reviewer,
            reason=args.reason,
            at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
    except tracking.TrackingUnreachableError:
        raise  # a service that went away, not bad input: main() says so
    except tracking.TrackingError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    verb = "promoted" if args.command == "promote" else "rejected"
    print(
        f"sluice: {args.model} version {args.version} {verb} by {reviewer}; aliases now: {', '.join(aliases) or 'none'}"
    )
    return 0


def _labelstudio(action: str, home: Home) -> int:
    from sluice.labelstudio_server import LabelStudioServerError, LabelStudioSettings, ensure_server, stop_server

    settings = LabelStudioSettings()
    if action == "stop":
        print("sluice: Label Studio stopped" if stop_server(home) else "sluice: Label Studio was not running")
        return 0
    if action == "credentials":
        return cli_annotators.print_credentials(home)
    if action == "status":
        state = home.labelstudio / "server.json"
        print(f"sluice: {state.read_text() if state.is_file() else 'Label Studio is not running'}")
        return 0
    print("sluice: starting Label Studio (first start ~90 s: database migrations)…", flush=True)
    try:
        server = ensure_server(settings, home)
    except LabelStudioServerError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"sluice: Label Studio at {server.url}; {cli_annotators.SIGN_IN_HINT}")
    return 0


def _register_pending(run_dir: Path, home: Home) -> int:
    from sluice import tracking

    folder = run_dir / "pending"
    try:
        record, uri = tracking.read_pending(folder)
        tracking.configure_tracking(os.environ.get("MLFLOW_TRACKING_URI") or uri)
        version = tracking.log_training_run(**record)
    except tracking.TrackingUnreachableError:
        raise  # a service that went away, not bad input: main() says so
    except tracking.TrackingError as exc:
        print(f"sluice: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    (folder / "pending_registration.json").rename(folder / "registered.json")
    print(f"sluice: registered {version.model_name} version {version.version} (aliases: {', '.join(version.aliases)})")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sluice", description="Raw data to a reviewed, registered model.")
    parser.add_argument("--home", help="project home (default: $SLUICE_HOME or ./.sluice)")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline for one dataset config")
    run.add_argument("--config", required=True, help="a pipeline config, e.g. configs/rotten_tomatoes.yaml")
    run.add_argument(
        "--prefect",
        choices=["server", "ephemeral"],
        default="server",
        help="server: start/reuse a local Prefect server under the home (default); ephemeral: a throwaway one",
    )

    demo = sub.add_parser("demo", help=f"run the pipeline on the bundled demo data ({DEMO_CONFIG})")
    demo.add_argument("--config", default=DEMO_CONFIG)
    demo.add_argument("--prefect", choices=["server", "ephemeral"], default="server")

    sub.add_parser("stop", help="stop the background services this home started")

    for action, helptext in (
        ("promote", "a reviewer moves `champion` to this version"),
        ("reject", "a reviewer takes this version's aliases away"),
    ):
        review = sub.add_parser(action, help=helptext)
        review.add_argument("model", help="registered model name")
        review.add_argument("version", help="model version number")
        review.add_argument("--reason", required=True, help="why, in plain words (stored as a version tag)")
        review.add_argument("--reviewer", default=None, help="who decided (default: $USER)")
        review.add_argument("--tracking-uri", default=None, help="default: $MLFLOW_TRACKING_URI or the home's store")

    labelstudio = sub.add_parser("labelstudio", help="the local Label Studio server (headless, on 127.0.0.1)")
    labelstudio.add_argument("action", choices=["start", "stop", "status", "credentials"])

    register = sub.add_parser("register", help="log a run kept locally because MLflow was unreachable")
    register.add_argument("run_dir", help="the run folder printed by the failed run (holds pending/)")
    cli_ops.add_commands(sub)
    cli_annotators.add_commands(sub)
    cli_init.add_commands(sub)
    return parser


def _dispatch(args: argparse.Namespace, home: Home, log: CommandLog) -> int:
    home.check_databases()  # before any service starts on a database URL that cannot work
    if args.command in RUN_COMMANDS:
        return _run(args.config, home, prefect=args.prefect, log=log)
    if args.command == "stop":
        return _stop(home)
    if args.command in ("promote", "reject"):
        return _review(args, home)
    if args.command == "labelstudio":
        return _labelstudio(args.action, home)
    if args.command == "register":
        return _register_pending(Path(args.run_dir), home)
    handled = cli_ops.handle(args, home)
    if handled is None:
        handled = cli_annotators.handle(args, home)
    if handled is None:
        handled = cli_init.handle(args, home)
    if handled is not None:
        return handled
    raise AssertionError(f"unhandled command {args.command}")


def main(argv: list[str] | None = None) -> int:
    """Run one `sluice` command; its exit code (the README lists them)."""
    args = build_parser().parse_args(argv)
    home = Home.resolve(args.home)
    is_run = args.command in RUN_COMMANDS
    label = Path(args.config).stem if is_run else ""
    with open_command_log(home, args.command, label=label, always=is_run) as log:
        try:
            return _dispatch(args, home, log)
        except KeyboardInterrupt:
            print("\nsluice: interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except Exception as exc:  # every failure ends as one message and an exit code; the traceback is logged
            return _fail(exc, log, prefect_url=None)


if __name__ == "__main__":
    sys.exit(main())
